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

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::location::Location;
use super::StoreError;
use crate::record::{rfc3339, Pair, Record};

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
    fn rated(mut self) -> Self {
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
fn observed(batch: &[Box<Record>]) -> Vec<&crate::record::IdsSeen> {
    batch.iter().filter_map(|r| r.ids.as_deref()).collect()
}

/// Saves the batch's pairs, unpaired ids and conflicts (SQLite, inside the batch's
/// transaction); returns the conflicts found against stored pairs (another instance's).
pub(super) fn sqlite_save(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Box<Record>],
    max: &dyn Fn(&str) -> usize,
) -> rusqlite::Result<()> {
    let now = rfc3339(std::time::SystemTime::now());
    let mut touched = BTreeMap::new();
    for seen in observed(batch) {
        for p in &seen.pairs {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO id_pairs(account, kind, legacy_id, candidate_id, numbers, learned_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![p.account, p.kind, p.legacy, p.candidate, i64::from(p.numbers), now])?;
            if n == 0 {
                if let Some(held) = sqlite_held(tx, p)? {
                    sqlite_conflict(tx, p, &held, &now)?;
                }
                continue;
            }
            crate::telemetry::id_pairs(&p.kind, 1);
            for (side, id) in [("legacy", &p.legacy), ("candidate", &p.candidate)] {
                tx.prepare_cached(
                    "DELETE FROM id_unpaired WHERE account = ?1 AND kind = ?2 AND side = ?3 AND id = ?4",
                )?
                .execute(params![p.account, p.kind, side, id])?;
            }
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for (p, held) in &seen.conflicts {
            sqlite_conflict(tx, p, held, &now)?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for u in &seen.unpaired {
            let column = if u.side == "legacy" {
                "legacy_id"
            } else {
                "candidate_id"
            };
            tx.prepare_cached(&format!(
                "INSERT INTO id_unpaired(account, kind, side, id, seen, last_seen)
                 SELECT ?1, ?2, ?3, ?4, 1, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM id_pairs WHERE account = ?1 AND kind = ?2 AND {column} = ?4)
                 ON CONFLICT(account, kind, side, id) DO UPDATE SET seen = seen + 1, last_seen = excluded.last_seen"
            ))?
            .execute(params![u.account, u.kind, u.side, u.id, now])?;
            touched.insert((u.account.clone(), u.kind.clone()), ());
        }
    }
    for (account, kind) in touched.keys() {
        let keep = i64::try_from(max(kind)).unwrap_or(i64::MAX);
        tx.prepare_cached(
            "DELETE FROM id_pairs WHERE account = ?1 AND kind = ?2 AND seq <= (
               SELECT seq FROM id_pairs WHERE account = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
        tx.prepare_cached(
            "DELETE FROM id_unpaired WHERE rowid IN (
               SELECT rowid FROM id_unpaired WHERE account = ?1 AND kind = ?2
               ORDER BY last_seen DESC LIMIT -1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
        tx.prepare_cached(
            "DELETE FROM id_conflicts WHERE account = ?1 AND kind = ?2 AND seq <= (
               SELECT seq FROM id_conflicts WHERE account = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
    }
    Ok(())
}

/// The stored pair `p` contradicts, if any.
fn sqlite_held(tx: &rusqlite::Transaction<'_>, p: &Pair) -> rusqlite::Result<Option<Pair>> {
    tx.prepare_cached(
        "SELECT legacy_id, candidate_id FROM id_pairs
         WHERE account = ?1 AND kind = ?2 AND (legacy_id = ?3 OR candidate_id = ?4)
         AND NOT (legacy_id = ?3 AND candidate_id = ?4) LIMIT 1",
    )?
    .query_row(params![p.account, p.kind, p.legacy, p.candidate], |r| {
        Ok(Pair {
            account: p.account.clone(),
            kind: p.kind.clone(),
            legacy: r.get(0)?,
            candidate: r.get(1)?,
            numbers: 0,
        })
    })
    .optional()
}

fn sqlite_conflict(
    tx: &rusqlite::Transaction<'_>,
    p: &Pair,
    held: &Pair,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO id_conflicts(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         DO UPDATE SET seen = seen + 1, at = excluded.at",
    )?
    .execute(params![
        p.account,
        p.kind,
        p.legacy,
        p.candidate,
        held.legacy,
        held.candidate,
        now
    ])?;
    crate::telemetry::id_conflict();
    Ok(())
}

/// [`sqlite_save`] for PostgreSQL: `ON CONFLICT DO NOTHING` on both unique keys, so that two
/// instances learning contradicting pairs at once store one and record the other as a conflict.
pub(super) fn pg_save(
    tx: &mut postgres::Transaction<'_>,
    batch: &[Box<Record>],
    max: &dyn Fn(&str) -> usize,
) -> Result<(), postgres::Error> {
    let mut touched = BTreeMap::new();
    for seen in observed(batch) {
        for p in &seen.pairs {
            let n = tx.execute(
                "INSERT INTO id_pairs(account, kind, legacy_id, candidate_id, numbers)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &p.account,
                    &p.kind,
                    &p.legacy,
                    &p.candidate,
                    &i32::from(p.numbers),
                ],
            )?;
            if n == 0 {
                let held = tx
                    .query_opt(
                        "SELECT legacy_id, candidate_id FROM id_pairs
                         WHERE account = $1 AND kind = $2 AND (legacy_id = $3 OR candidate_id = $4)
                         AND NOT (legacy_id = $3 AND candidate_id = $4) LIMIT 1",
                        &[&p.account, &p.kind, &p.legacy, &p.candidate],
                    )?
                    .map(|r| Pair {
                        account: p.account.clone(),
                        kind: p.kind.clone(),
                        legacy: r.get(0),
                        candidate: r.get(1),
                        numbers: 0,
                    });
                if let Some(held) = held {
                    pg_conflict(tx, p, &held)?;
                }
                continue;
            }
            crate::telemetry::id_pairs(&p.kind, 1);
            tx.execute(
                "DELETE FROM id_unpaired WHERE account = $1 AND kind = $2
                 AND ((side = 'legacy' AND id = $3) OR (side = 'candidate' AND id = $4))",
                &[&p.account, &p.kind, &p.legacy, &p.candidate],
            )?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for (p, held) in &seen.conflicts {
            pg_conflict(tx, p, held)?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for u in &seen.unpaired {
            let column = if u.side == "legacy" {
                "legacy_id"
            } else {
                "candidate_id"
            };
            tx.execute(
                &format!(
                    "INSERT INTO id_unpaired(account, kind, side, id, seen)
                     SELECT $1, $2, $3, $4, 1
                     WHERE NOT EXISTS (SELECT 1 FROM id_pairs WHERE account = $1 AND kind = $2 AND {column} = $4)
                     ON CONFLICT (account, kind, side, id) DO UPDATE
                       SET seen = id_unpaired.seen + 1, last_seen = now()"
                ),
                &[&u.account, &u.kind, &u.side, &u.id],
            )?;
            touched.insert((u.account.clone(), u.kind.clone()), ());
        }
    }
    for (account, kind) in touched.keys() {
        let keep = i64::try_from(max(kind)).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM id_pairs WHERE account = $1 AND kind = $2 AND seq <= (
               SELECT seq FROM id_pairs WHERE account = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            &[account, kind, &keep],
        )?;
        tx.execute(
            "DELETE FROM id_unpaired WHERE (account, kind, side, id) IN (
               SELECT account, kind, side, id FROM id_unpaired WHERE account = $1 AND kind = $2
               ORDER BY last_seen DESC OFFSET $3)",
            &[account, kind, &keep],
        )?;
        tx.execute(
            "DELETE FROM id_conflicts WHERE account = $1 AND kind = $2 AND seq <= (
               SELECT seq FROM id_conflicts WHERE account = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            &[account, kind, &keep],
        )?;
    }
    Ok(())
}

fn pg_conflict(
    tx: &mut postgres::Transaction<'_>,
    p: &Pair,
    held: &Pair,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO id_conflicts(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         DO UPDATE SET seen = id_conflicts.seen + 1, at = now()",
        &[
            &p.account,
            &p.kind,
            &p.legacy,
            &p.candidate,
            &held.legacy,
            &held.candidate,
        ],
    )?;
    crate::telemetry::id_conflict();
    Ok(())
}

const COVERAGE_SQL: &str = "
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

pub(super) fn sqlite_coverage(c: &rusqlite::Connection) -> rusqlite::Result<Vec<IdCoverage>> {
    let mut stmt = c.prepare(COVERAGE_SQL)?;
    let rows = stmt.query_map([], |r| {
        let n = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(IdCoverage {
            account: r.get(0)?,
            kind: r.get(1)?,
            paired: n(2)?,
            unpaired_legacy: n(3)?,
            unpaired_candidate: n(4)?,
            conflicts: n(5)?,
            paired_rate: 0.0,
        }
        .rated())
    })?;
    rows.collect()
}

pub(super) fn pg_coverage(c: &mut postgres::Client) -> Result<Vec<IdCoverage>, postgres::Error> {
    let sql = COVERAGE_SQL.replace(
        "SELECT account, kind, sum(paired), sum(unpaired_legacy), sum(unpaired_candidate), sum(conflicts)",
        "SELECT account, kind, sum(paired)::bigint, sum(unpaired_legacy)::bigint, sum(unpaired_candidate)::bigint, sum(conflicts)::bigint",
    );
    Ok(c.query(&sql, &[])?
        .iter()
        .map(|r| {
            let n = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
            IdCoverage {
                account: r.get(0),
                kind: r.get(1),
                paired: n(2),
                unpaired_legacy: n(3),
                unpaired_candidate: n(4),
                conflicts: n(5),
                paired_rate: 0.0,
            }
            .rated()
        })
        .collect())
}

const PAIRS_SQL: &str =
    "SELECT seq, account, kind, legacy_id, candidate_id, numbers FROM id_pairs WHERE seq > $1 ORDER BY seq LIMIT $2";

fn sqlite_pairs(
    c: &rusqlite::Connection,
    seq: i64,
    limit: i64,
) -> rusqlite::Result<Vec<(i64, Pair)>> {
    let mut stmt = c.prepare_cached(&PAIRS_SQL.replace('$', "?"))?;
    let rows = stmt.query_map(params![seq, limit], |r| {
        Ok((
            r.get(0)?,
            Pair {
                account: r.get(1)?,
                kind: r.get(2)?,
                legacy: r.get(3)?,
                candidate: r.get(4)?,
                numbers: u8::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
            },
        ))
    })?;
    rows.collect()
}

fn pg_pairs(
    c: &mut postgres::Client,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, Pair)>, postgres::Error> {
    Ok(c.query(PAIRS_SQL, &[&seq, &limit])?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Pair {
                    account: r.get(1),
                    kind: r.get(2),
                    legacy: r.get(3),
                    candidate: r.get(4),
                    numbers: u8::try_from(r.get::<_, i32>(5)).unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Every pair (oldest first, at most `limit`): SQLite.
pub(super) fn sqlite_all(c: &rusqlite::Connection, limit: usize) -> rusqlite::Result<Vec<Pair>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(sqlite_pairs(c, 0, limit)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Every pair (oldest first, at most `limit`): PostgreSQL.
pub(super) fn pg_all(c: &mut postgres::Client, limit: usize) -> Result<Vec<Pair>, postgres::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(pg_pairs(c, 0, limit)?.into_iter().map(|(_, p)| p).collect())
}

/// The crosswalk's own connection: every instance reads the pairs its fleet learned.
pub struct IdStore {
    conn: super::conn::OwnConn,
}

impl IdStore {
    pub fn new(location: &Location) -> Self {
        Self {
            conn: super::conn::OwnConn::new(location, "id-store-close"),
        }
    }

    /// Pairs stored after `seq` (oldest first, at most `limit`), each with its `seq`.
    pub fn since(&mut self, seq: i64, limit: usize) -> Result<Vec<(i64, Pair)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .with(|c| sqlite_pairs(c, seq, limit), |c| pg_pairs(c, seq, limit))
    }

    /// Coverage per (account, kind).
    pub fn coverage(&mut self) -> Result<Vec<IdCoverage>, StoreError> {
        self.conn.with(|c| sqlite_coverage(c), pg_coverage)
    }
}
