//! Which exchanges keep a row (`[store] exchanges`): the roll-ups count every exchange, so a row
//! is kept for what a person reads (examples, drill-down, replay), not for the counts. A pure
//! decision over the records in the writer's order, the same on both engines.
//!
//! - `all`: every exchange, as before roll-ups existed;
//! - `differing`: every exchange that is neither `match` nor `skipped`;
//! - `sampled` (the default): per hour, the first `rows_per_hour` exchanges of each kind, then
//!   the 2^k-th ones (so the hour's later traffic keeps a few, ever rarer). A kind is the route
//!   and outcome (and a skip's reason); a `diff` exchange is kept while any of its (field
//!   pattern, kind) is within its own first ones, so every difference pattern keeps examples.
//!
//! An exchange whose bodies were kept (the body sample) keeps its row (its bodies hang off it),
//! within a route's hourly cap under `sampled`: past it, a row and its bodies are not written.

use std::collections::HashMap;

use crate::record::{Outcome, Record};

/// What keeps a row (`[store] exchanges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rows {
    All,
    Differing,
    Sampled,
}

impl Rows {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Differing => "differing",
            Self::Sampled => "sampled",
        }
    }
}

/// The kinds counted in one hour at most; past it a new kind keeps its row (so a candidate
/// answering with ever new field names costs rows, never the writer's memory).
const MAX_KINDS: usize = 65_536;

/// A route keeps at most this many times `rows_per_hour` rows an hour, then only its 2^k-th
/// exchanges: a candidate answering with a new field name every time makes every exchange a
/// new pattern, which would otherwise keep every row.
const ROUTE_ROWS_PER_KIND: u64 = 50;

/// The writer's decision, with the counts of the hour it is in.
#[derive(Debug)]
pub(super) struct Keeper {
    rows: Rows,
    per_hour: u64,
    /// The hour counted (`2026-11-29T13`); a record of a later hour starts the counts again.
    hour: String,
    /// (route, outcome or field pattern, skip reason or difference kind) → exchanges this hour.
    seen: HashMap<(String, String, String), u64>,
    /// route → (exchanges, rows kept) this hour.
    routes: HashMap<String, (u64, u64)>,
}

impl Keeper {
    pub(super) fn new(rows: Rows, per_hour: u64) -> Self {
        Self {
            rows,
            per_hour,
            hour: String::new(),
            seen: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    /// Whether `r`, started in `hour`, keeps its row.
    pub(super) fn keep(&mut self, r: &Record, hour: &str) -> bool {
        let bodies = !r.bodies.is_empty();
        match self.rows {
            Rows::All => true,
            Rows::Differing => bodies || !matches!(r.outcome, Outcome::Match | Outcome::Skipped(_)),
            Rows::Sampled => {
                if hour > self.hour.as_str() {
                    hour.clone_into(&mut self.hour);
                    self.seen.clear();
                    self.routes.clear();
                }
                let route = r.meta.route.as_deref().unwrap_or("");
                let keep = if r.outcome == Outcome::Diff {
                    let mut keep = false;
                    for c in r.counts().iter() {
                        keep |= self.count(route, &c.field, c.kind);
                    }
                    // Counted on every pattern (not stopping at the first that keeps it), so
                    // each pattern's count is its exchanges'.
                    keep
                } else {
                    let reason = match r.outcome {
                        Outcome::Skipped(s) => s.as_str(),
                        _ => "",
                    };
                    self.count(route, r.outcome.as_str(), reason)
                };
                // Kept bodies keep their row, within the route's cap too (each new pattern has
                // bodies kept by example: they would otherwise make every exchange a row).
                let keep = keep || bodies;
                let cap = self.per_hour.saturating_mul(ROUTE_ROWS_PER_KIND);
                let t = match self.routes.get_mut(route) {
                    Some(t) => t,
                    None => self.routes.entry(route.to_owned()).or_default(),
                };
                t.0 += 1;
                let keep = keep && (t.1 < cap || t.0.is_power_of_two());
                t.1 += u64::from(keep);
                keep
            }
        }
    }

    /// Counts one more exchange of a kind; whether it is one of those kept.
    fn count(&mut self, route: &str, a: &str, b: &str) -> bool {
        let key = (route.to_owned(), a.to_owned(), b.to_owned());
        if self.seen.len() >= MAX_KINDS && !self.seen.contains_key(&key) {
            return true;
        }
        let n = self.seen.entry(key).or_default();
        *n += 1;
        *n <= self.per_hour || n.is_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Difference, Kind};
    use crate::record::{SkipReason, StoredBody};
    use std::sync::Arc;

    fn record(route: &str, outcome: Outcome, fields: &[&str]) -> Record {
        let mut r = crate::store::writer::test_record(std::time::UNIX_EPOCH);
        r.meta.route = Some(route.into());
        r.outcome = outcome;
        r.diff_count = fields.len();
        r.diffs = Arc::new(
            fields
                .iter()
                .map(|f| Difference {
                    pointer: (*f).into(),
                    field: (*f).into(),
                    kind: Kind::Changed,
                    legacy: None,
                    candidate: None,
                    candidate_pointer: None,
                })
                .collect(),
        );
        r
    }

    #[test]
    fn sampled_keeps_the_first_of_each_kind_then_powers_of_two() {
        let mut k = Keeper::new(Rows::Sampled, 3);
        let kept: Vec<u64> = (1..=40u64)
            .filter(|_| k.keep(&record("r", Outcome::Match, &[]), "2026-11-29T13"))
            .collect();
        // 40 matches: the 1st, 2nd, 3rd, then the 4th, 8th, 16th and 32nd.
        assert_eq!(kept.len(), 7);
        // Another route, another outcome, another skip reason: each its own first ones.
        assert!(k.keep(&record("s", Outcome::Match, &[]), "2026-11-29T13"));
        assert!(k.keep(&record("r", Outcome::CandidateError, &[]), "2026-11-29T13"));
        let shed = record("r", Outcome::Skipped(SkipReason::Overload), &[]);
        assert_eq!(
            (0..10).filter(|_| k.keep(&shed, "2026-11-29T13")).count(),
            3 + 1 + 1 // 1-3, 4, 8
        );
        // A new hour counts again.
        assert!(k.keep(&record("r", Outcome::Match, &[]), "2026-11-29T14"));
    }

    #[test]
    fn a_new_difference_pattern_keeps_its_exchange() {
        let mut k = Keeper::new(Rows::Sampled, 2);
        let h = "2026-11-29T13";
        assert!(k.keep(&record("r", Outcome::Diff, &["/a"]), h));
        assert!(k.keep(&record("r", Outcome::Diff, &["/a"]), h));
        assert!(!k.keep(&record("r", Outcome::Diff, &["/a"]), h));
        // `/b` is new: the exchange is kept, and `/a` was counted on it too (its 4th).
        assert!(k.keep(&record("r", Outcome::Diff, &["/a", "/b"]), h));
        assert!(!k.keep(&record("r", Outcome::Diff, &["/a"]), h));
        let mut with_body = record("r", Outcome::Diff, &["/a"]);
        with_body.bodies.push(StoredBody {
            side: "legacy",
            status: Some(200),
            headers: serde_json::json!({}),
            body: None,
        });
        assert!(k.keep(&with_body, h));
    }

    #[test]
    fn a_route_of_ever_new_patterns_keeps_a_bounded_number_of_rows() {
        let mut k = Keeper::new(Rows::Sampled, 2);
        let h = "2026-11-29T13";
        let fields: Vec<String> = (0..10_000).map(|i| format!("/f{i}")).collect();
        let kept = fields
            .iter()
            .filter(|f| k.keep(&record("r", Outcome::Diff, &[f.as_str()]), h))
            .count();
        // 2 x 50 rows, then the 2^k-th of the route's 10,000 exchanges past them (128 ... 8192).
        assert_eq!(kept, 100 + 7);
        // Another route is not held back by this one.
        assert!(k.keep(&record("s", Outcome::Diff, &["/new"]), h));
        // Past the cap, kept bodies do not keep a row either (each new pattern has bodies kept
        // by example).
        let mut with_body = record("r", Outcome::Diff, &["/again-new"]);
        with_body.bodies.push(StoredBody {
            side: "legacy",
            status: Some(200),
            headers: serde_json::json!({}),
            body: None,
        });
        assert!(!k.keep(&with_body, h));
    }

    #[test]
    fn all_and_differing() {
        let h = "2026-11-29T13";
        let mut all = Keeper::new(Rows::All, 0);
        let mut differing = Keeper::new(Rows::Differing, 0);
        for o in [
            Outcome::Match,
            Outcome::Skipped(SkipReason::Overload),
            Outcome::Diff,
            Outcome::CandidateTimeout,
        ] {
            assert!(all.keep(&record("r", o, &["/a"]), h));
            assert_eq!(
                differing.keep(&record("r", o, &["/a"]), h),
                !matches!(o, Outcome::Match | Outcome::Skipped(_))
            );
        }
    }
}
