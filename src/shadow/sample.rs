//! Which exchanges keep their bodies. Bodies are most of a store's bytes (two ~24 KB documents
//! against ~1 KB of rows), and with a systematic mapping gap every exchange differs, so keeping the
//! bodies of every differing exchange grows the store with traffic. What a reader needs is a few
//! examples of each kind of difference and a random share to re-check a fix against, so among
//! the exchanges `[store] bodies` makes eligible, the bodies of one are kept when:
//!
//! 1. it shows a (route, field pattern, kind of difference) not yet shown by
//!    `[store] body_examples` kept exchanges this hour (an exchange without differences counts
//!    under its outcome), or
//! 2. it is drawn by `[store] body_sample`;
//!
//! and in both cases only while this hour's kept bytes stay under `[store] body_budget` (the
//! decoded size of both bodies as received, counted before anything is serialised). The counters
//! are per process and start again each hour (UTC), so a day keeps at most 24 budgets per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Bodies, StoreConfig};
use crate::diff::Difference;
use crate::record::Outcome;

/// Distinct (route, field pattern, kind) counted per hour at most: past it, new patterns are
/// kept only by the random share (a document with generated keys cannot grow the table).
const MAX_KEYS: usize = 10_000;

/// Why a body pair was kept or not (`shadowdiff_bodies_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An example of a difference not yet shown enough this hour.
    Example,
    /// Drawn by `body_sample`.
    Sample,
    /// Eligible but neither an example nor drawn.
    NotSampled,
    /// This hour's `body_budget` is spent.
    OverBudget,
    /// `[store] bodies` does not keep this outcome.
    NotEligible,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Example => "example",
            Self::Sample => "sample",
            Self::NotSampled => "not_sampled",
            Self::OverBudget => "over_budget",
            Self::NotEligible => "not_eligible",
        }
    }

    pub fn keeps(self) -> bool {
        matches!(self, Self::Example | Self::Sample)
    }
}

/// The per-hour counters behind the decision.
#[derive(Debug, Default)]
pub struct BodySampler {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    hour: u64,
    /// Kept exchanges per hash of (route, field pattern, kind).
    shown: HashMap<u64, usize>,
    bytes: usize,
}

/// What one exchange offers the sampler.
pub struct Offer<'a> {
    /// The route's index (`None`: unmatched).
    pub route: Option<usize>,
    pub outcome: Outcome,
    pub diffs: &'a [Difference],
    /// Decoded size of both bodies as received.
    pub bytes: usize,
}

impl BodySampler {
    /// Decides for one exchange now, and counts it when kept.
    pub fn decide(&self, cfg: &StoreConfig, offer: &Offer<'_>) -> Decision {
        let share = if cfg.bodies == Bodies::Sampled && offer.outcome == Outcome::Match {
            cfg.match_sample
        } else {
            cfg.body_sample
        };
        self.decide_at(cfg, offer, now_hour(), super::sampled(share))
    }

    /// [`Self::decide`] at a given hour, with the random draw made.
    fn decide_at(&self, cfg: &StoreConfig, offer: &Offer<'_>, hour: u64, drawn: bool) -> Decision {
        let eligible = match cfg.bodies {
            Bodies::Never => false,
            Bodies::OnDiff => offer.outcome != Outcome::Match,
            Bodies::Sampled | Bodies::Always => true,
        };
        if !eligible {
            return Decision::NotEligible;
        }
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.hour != hour {
            st.hour = hour;
            st.shown.clear();
            st.bytes = 0;
        }
        if st.bytes.saturating_add(offer.bytes) > cfg.body_budget {
            return Decision::OverBudget;
        }
        let keys = keys(offer);
        let room = MAX_KEYS.saturating_sub(st.shown.len());
        let mut new = 0;
        let example = keys.iter().any(|k| match st.shown.get(k) {
            Some(&n) => n < cfg.body_examples,
            None => {
                new += 1;
                cfg.body_examples > 0 && new <= room
            }
        });
        let decision = if example {
            Decision::Example
        } else if drawn {
            Decision::Sample
        } else {
            return Decision::NotSampled;
        };
        st.bytes += offer.bytes;
        for k in keys {
            if let Some(n) = st.shown.get_mut(&k) {
                *n += 1;
            } else if st.shown.len() < MAX_KEYS {
                st.shown.insert(k, 1);
            }
        }
        decision
    }
}

/// The distinct (route, field pattern, kind) of an exchange, hashed; its outcome when it has no
/// differences.
fn keys(offer: &Offer<'_>) -> Vec<u64> {
    let route = offer.route.map_or(u64::MAX, |r| r as u64).to_le_bytes();
    let key = |field: &str, kind: &str| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&route);
        h.update(field.as_bytes());
        h.update(&[0]);
        h.update(kind.as_bytes());
        h.digest()
    };
    let mut keys: Vec<u64> = if offer.diffs.is_empty() {
        vec![key("@outcome", offer.outcome.as_str())]
    } else {
        offer
            .diffs
            .iter()
            .map(|d| key(&d.field, d.kind.as_str()))
            .collect()
    };
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn now_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_is_registered_at_zero() {
        for d in [
            Decision::Example,
            Decision::Sample,
            Decision::NotSampled,
            Decision::OverBudget,
            Decision::NotEligible,
        ] {
            // The match is exhaustive: a new decision fails to compile here first.
            match d {
                Decision::Example
                | Decision::Sample
                | Decision::NotSampled
                | Decision::OverBudget
                | Decision::NotEligible => {}
            }
            assert!(crate::telemetry::BODY_DECISIONS.contains(&d.as_str()));
        }
    }
    use crate::diff::Kind;

    fn cfg(examples: usize, sample: f64, budget: usize) -> StoreConfig {
        let mut c = crate::config::Config::defaults().store;
        c.body_examples = examples;
        c.body_sample = sample;
        c.body_budget = budget;
        c
    }

    fn d(field: &str, kind: Kind) -> Difference {
        Difference {
            pointer: format!("/{field}"),
            field: field.into(),
            kind,
            legacy: None,
            candidate: None,
            candidate_pointer: None,
        }
    }

    fn offer<'a>(route: Option<usize>, diffs: &'a [Difference], bytes: usize) -> Offer<'a> {
        Offer {
            route,
            outcome: if diffs.is_empty() {
                Outcome::Match
            } else {
                Outcome::Diff
            },
            diffs,
            bytes,
        }
    }

    #[test]
    fn the_first_examples_of_each_pattern_per_hour_are_kept_then_only_drawn_ones() {
        let s = BodySampler::default();
        let c = cfg(2, 0.0, usize::MAX);
        let a = [d("name", Kind::Changed)];
        let ab = [d("name", Kind::Changed), d("email", Kind::Missing)];
        let decide = |diffs: &[Difference], route, hour, drawn| {
            s.decide_at(&c, &offer(route, diffs, 10), hour, drawn)
        };
        assert_eq!(decide(&a, Some(0), 1, false), Decision::Example);
        assert_eq!(decide(&a, Some(0), 1, false), Decision::Example);
        assert_eq!(decide(&a, Some(0), 1, false), Decision::NotSampled);
        // A new pattern in the same exchange makes it an example (and counts `name` a third time).
        assert_eq!(decide(&ab, Some(0), 1, false), Decision::Example);
        assert_eq!(decide(&ab, Some(0), 1, false), Decision::Example);
        assert_eq!(decide(&ab, Some(0), 1, false), Decision::NotSampled);
        // The same kind of difference per route.
        assert_eq!(decide(&a, Some(1), 1, false), Decision::Example);
        assert_eq!(
            decide(&[d("name", Kind::TypeChanged)], Some(0), 1, false),
            Decision::Example
        );
        // The random share.
        assert_eq!(decide(&a, Some(0), 1, true), Decision::Sample);
        // A new hour starts again.
        assert_eq!(decide(&a, Some(0), 2, false), Decision::Example);
    }

    #[test]
    fn the_budget_bounds_the_bytes_kept_per_hour() {
        let s = BodySampler::default();
        let c = cfg(1_000, 1.0, 100);
        let a = [d("x", Kind::Changed)];
        let mut kept = 0;
        for _ in 0..50 {
            let dec = s.decide_at(&c, &offer(None, &a, 30), 7, true);
            if dec.keeps() {
                kept += 30;
            } else {
                assert_eq!(dec, Decision::OverBudget);
            }
        }
        assert_eq!(kept, 90, "three of 30 bytes fit in 100");
        assert_eq!(
            s.decide_at(&c, &offer(None, &a, 30), 8, false),
            Decision::Example,
            "the next hour has a budget of its own"
        );
    }

    #[test]
    fn the_bodies_setting_decides_what_is_eligible() {
        let s = BodySampler::default();
        let mut c = cfg(5, 1.0, usize::MAX);
        let none: [Difference; 0] = [];
        let a = [d("x", Kind::Changed)];
        assert_eq!(
            s.decide_at(&c, &offer(None, &none, 1), 1, true),
            Decision::NotEligible
        );
        assert!(s.decide_at(&c, &offer(None, &a, 1), 1, true).keeps());
        c.bodies = Bodies::Always;
        assert_eq!(
            s.decide_at(&c, &offer(None, &none, 1), 1, false),
            Decision::Example
        );
        c.bodies = Bodies::Never;
        assert_eq!(
            s.decide_at(&c, &offer(None, &a, 1), 1, true),
            Decision::NotEligible
        );
    }

    #[test]
    fn sampled_keeps_differing_exchanges_as_on_diff_and_a_share_of_matching_ones() {
        let s = BodySampler::default();
        let mut c = cfg(0, 0.0, usize::MAX);
        c.bodies = Bodies::Sampled;
        c.match_sample = 1.0;
        let none: [Difference; 0] = [];
        let a = [d("x", Kind::Changed)];
        assert_eq!(s.decide(&c, &offer(None, &none, 1)), Decision::Sample);
        assert_eq!(s.decide(&c, &offer(None, &a, 1)), Decision::NotSampled);
        c.match_sample = 0.0;
        c.body_sample = 1.0;
        assert_eq!(s.decide(&c, &offer(None, &none, 1)), Decision::NotSampled);
        assert_eq!(s.decide(&c, &offer(None, &a, 1)), Decision::Sample);
        // `on_diff` never keeps a matching exchange, whatever match_sample says.
        c.bodies = Bodies::OnDiff;
        c.match_sample = 1.0;
        assert_eq!(s.decide(&c, &offer(None, &none, 1)), Decision::NotEligible);
    }

    #[test]
    fn generated_field_names_cannot_grow_the_counters_past_their_bound() {
        let s = BodySampler::default();
        let c = cfg(1, 0.0, usize::MAX);
        for i in 0..(MAX_KEYS + 500) {
            let a = [d(&format!("k{i}"), Kind::Extra)];
            s.decide_at(&c, &offer(None, &a, 1), 1, false);
        }
        let st = s.state.lock().unwrap();
        assert_eq!(st.shown.len(), MAX_KEYS);
        drop(st);
        let a = [d("another", Kind::Extra)];
        assert_eq!(
            s.decide_at(&c, &offer(None, &a, 1), 1, false),
            Decision::NotSampled,
            "past the bound a new pattern is no longer an example"
        );
    }
}
