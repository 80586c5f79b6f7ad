//! The id crosswalk's rows (the `ids` module), written by the writer in the same transaction as the
//! exchanges that taught them, read back by every instance of a fleet ([`IdStore`]):
//!
//! - `id_pairs(seq, account, kind, legacy_id, candidate_id, learned_at)`: one pair per legacy id
//!   and one per candidate id (both unique per account and kind). A pair that contradicts a
//!   stored one is not written over it: it goes to `id_conflicts`, with the pair held;
//! - `id_unpaired(account, kind, side, id, seen, last_seen)`: ids compared without a partner,
//!   removed when a pair for them is learned;
//! - `id_conflicts`: one row per distinct contradiction (the observation and the pair held), with
//!   how often it was seen.
//!
//! Ids only: never a natural key's values. Per (account, kind) at most the kind's `max_pairs`
//! pairs, and as many unpaired ids and conflicts, are kept: past it the oldest are deleted.

use serde::Serialize;

use super::StoreError;
use crate::record::{Pair, Record};

/// The crosswalk's coverage of one (account, kind).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IdCoverage {
    pub account: String,
    pub kind: String,
    /// Pairs held.
    pub paired: u64,
    /// Distinct legacy ids compared without a candidate partner (still unpaired).
    pub unpaired_legacy: u64,
    /// Distinct candidate ids compared without a legacy partner (still unpaired).
    pub unpaired_candidate: u64,
    /// Observations that contradicted a pair held.
    pub conflicts: u64,
    /// [`IdCoverage::rate`]: paired ids over every id seen.
    pub paired_rate: f64,
}

impl IdCoverage {
    pub(super) fn rated(mut self) -> Self {
        self.paired_rate = self.rate();
        self
    }

    /// Paired ids over every id seen (a pair counts one per side): 1 when nothing was seen.
    pub fn rate(&self) -> f64 {
        let all = 2 * self.paired + self.unpaired_legacy + self.unpaired_candidate;
        if all == 0 {
            1.0
        } else {
            (2 * self.paired) as f64 / all as f64
        }
    }
}

/// What the batch's records observed, in order, and the (account, kind) they touched.
pub(super) fn observed(batch: &[Box<Record>]) -> Vec<&crate::record::IdsSeen> {
    batch.iter().filter_map(|r| r.ids.as_deref()).collect()
}

pub(super) const COVERAGE_SQL: &str = "
SELECT account, kind, sum(paired), sum(unpaired_legacy), sum(unpaired_candidate), sum(conflicts) FROM (
  SELECT account, kind, count(*) AS paired, 0 AS unpaired_legacy, 0 AS unpaired_candidate, 0 AS conflicts
    FROM id_pairs GROUP BY account, kind
  UNION ALL
  SELECT account, kind, 0, sum(CASE WHEN side = 'legacy' THEN 1 ELSE 0 END),
         sum(CASE WHEN side = 'candidate' THEN 1 ELSE 0 END), 0
    FROM id_unpaired GROUP BY account, kind
  UNION ALL
  SELECT account, kind, 0, 0, 0, count(*) FROM id_conflicts GROUP BY account, kind
) AS parts GROUP BY account, kind ORDER BY account, kind";

pub(super) const PAIRS_SQL: &str =
    "SELECT seq, account, kind, legacy_id, candidate_id, numbers FROM id_pairs WHERE seq > $1 ORDER BY seq LIMIT $2";

/// What the crosswalk reads of its store, per engine (`sqlite/ids.rs`, `postgres/ids.rs`).
pub(super) trait IdConn: Send {
    /// Pairs stored after `seq` (oldest first, at most `limit`), each with its `seq`.
    fn pairs_since(&mut self, seq: i64, limit: i64) -> Result<Vec<(i64, Pair)>, StoreError>;
    /// Coverage per (account, kind).
    fn coverage(&mut self) -> Result<Vec<IdCoverage>, StoreError>;
}

/// The crosswalk's own connection: every instance reads the pairs its fleet learned (opened
/// by [`IdStore::new`], in `open.rs`).
pub struct IdStore {
    pub(super) conn: Box<dyn IdConn>,
}

impl IdStore {
    /// Pairs stored after `seq` (oldest first, at most `limit`), each with its `seq`.
    pub fn since(&mut self, seq: i64, limit: usize) -> Result<Vec<(i64, Pair)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn.pairs_since(seq, limit)
    }

    /// Coverage per (account, kind).
    pub fn coverage(&mut self) -> Result<Vec<IdCoverage>, StoreError> {
        self.conn.coverage()
    }
}
