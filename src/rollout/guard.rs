//! The guard: the served cohort's outcomes over a sliding window (per second, in memory, reset
//! when the phase changes), judged with Wilson intervals against `[rollout.guard]`.
//!
//! A limit is crossed only when the whole interval is on the wrong side of it (parity: the
//! upper bound below `min_parity`; a rate: the lower bound above its maximum), and never on
//! fewer than `min_sample` cohort requests: a handful of failures cannot roll back a phase,
//! and a handful of successes cannot promote one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{wilson, GuardConfig};
use crate::record::{Outcome, Record, ServedBy};

/// Counts of the served cohort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests of the cohort.
    pub requests: u64,
    /// Served by the candidate.
    pub served: u64,
    /// Answered by legacy after all.
    pub fallbacks: u64,
    /// Fallbacks because the candidate failed (error, timeout, deadline, status, body, mapping),
    /// and candidate failures served as they were (phases with `legacy_sample` below 1).
    pub candidate_failures: u64,
    /// Compared (both answers received and compared).
    pub compared: u64,
    /// Compared without a difference, or with differences at learned noise fields only.
    pub matched: u64,
}

impl Tally {
    fn add(&mut self, o: &Self) {
        self.requests += o.requests;
        self.served += o.served;
        self.fallbacks += o.fallbacks;
        self.candidate_failures += o.candidate_failures;
        self.compared += o.compared;
        self.matched += o.matched;
    }
}

/// Seconds kept at most (a window longer than this is cut to it).
const MAX_SECONDS: usize = 86_400;

/// The served cohort's outcomes, per second.
#[derive(Default)]
pub struct Window {
    seconds: Mutex<VecDeque<(u64, Tally)>>,
    epoch: std::sync::OnceLock<Instant>,
    /// Fields learned as noise, per route (refreshed from the store by the control thread).
    noise: RwLock<Arc<HashMap<String, HashSet<String>>>>,
}

impl Window {
    fn now(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_secs()
    }

    /// Counts a recorded exchange of the cohort (others are ignored).
    pub fn add(&self, r: &Record) {
        let s = &r.meta.serving;
        if !s.cohort {
            return;
        }
        let compared = r.outcome.is_compared();
        let matched = match r.outcome {
            Outcome::Match => true,
            Outcome::Diff => {
                let noise = self.noise();
                r.meta
                    .route
                    .as_ref()
                    .and_then(|route| noise.get(route))
                    .is_some_and(|fields| r.counts().iter().all(|c| fields.contains(&c.field)))
            }
            _ => false,
        };
        let t = Tally {
            requests: 1,
            served: u64::from(s.served_by == ServedBy::Candidate),
            fallbacks: u64::from(s.fallback.is_some()),
            // A fallback the candidate caused; or, served without a legacy call (nothing to
            // fall back to), a failure the caller received.
            candidate_failures: u64::from(
                s.fallback
                    .is_some_and(crate::record::Fallback::is_candidate_failure)
                    || (s.served_by == ServedBy::Candidate && r.outcome.is_candidate_failure()),
            ),
            compared: u64::from(compared),
            matched: u64::from(matched),
        };
        let now = self.now();
        let mut q = self
            .seconds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match q.back_mut() {
            Some((sec, tally)) if *sec == now => tally.add(&t),
            _ => {
                q.push_back((now, t));
                while q.len() > MAX_SECONDS {
                    q.pop_front();
                }
            }
        }
    }

    /// Forgets everything (a new phase starts from nothing).
    pub fn clear(&self) {
        self.seconds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// The counts of the last `window`.
    pub fn tally(&self, window: Duration) -> Tally {
        let now = self.now();
        let from = now.saturating_sub(window.as_secs().max(1) - 1);
        let mut q = self
            .seconds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while q
            .front()
            .is_some_and(|(s, _)| now - *s >= MAX_SECONDS as u64)
        {
            q.pop_front();
        }
        let mut t = Tally::default();
        for (_, x) in q.iter().filter(|(s, _)| *s >= from) {
            t.add(x);
        }
        t
    }

    fn noise(&self) -> Arc<HashMap<String, HashSet<String>>> {
        self.noise
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The learned noise fields per route, as the store has them.
    pub fn set_noise(&self, n: HashMap<String, HashSet<String>>) {
        *self
            .noise
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(n);
    }
}

/// One guard criterion, with its interval.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub criterion: &'static str,
    pub limit: f64,
    /// Successes (parity: matched; rates: the events counted) and the trials.
    pub k: u64,
    pub n: u64,
    pub measured: Option<f64>,
    /// The Wilson interval at the guard's confidence.
    pub interval: Option<(f64, f64)>,
    /// Crossed with confidence (the whole interval on the wrong side of the limit).
    pub crossed: bool,
}

/// What the guard saw.
#[derive(Debug, Clone, Serialize)]
pub struct GuardReport {
    pub window_seconds: u64,
    pub tally: Tally,
    pub min_sample: u64,
    /// `min_sample` reached: the criteria can decide.
    pub enough: bool,
    pub criteria: Vec<Criterion>,
}

impl GuardReport {
    /// A limit was crossed with confidence on enough requests: roll back.
    pub fn breached(&self) -> bool {
        self.enough && self.criteria.iter().any(|c| c.crossed)
    }

    /// The crossed criteria, for the rollback's reason.
    pub fn reason(&self) -> String {
        let crossed: Vec<String> = self
            .criteria
            .iter()
            .filter(|c| c.crossed)
            .map(|c| {
                let (lo, hi) = c.interval.unwrap_or((0.0, 0.0));
                format!(
                    "{} {}/{} = {:.4} (interval {:.4}..{:.4}, limit {})",
                    c.criterion,
                    c.k,
                    c.n,
                    c.measured.unwrap_or(0.0),
                    lo,
                    hi,
                    c.limit
                )
            })
            .collect();
        crossed.join("; ")
    }
}

/// Judges a tally against the guard's limits.
pub fn judge(t: &Tally, g: &GuardConfig) -> GuardReport {
    let mut criteria = Vec::new();
    let mut push = |criterion, limit: f64, k: u64, n: u64, upper_limit: bool| {
        let interval = wilson(k, n, g.confidence);
        let crossed = match interval {
            None => false,
            // A minimum (parity): crossed when even the upper bound is below it.
            Some((_, hi)) if !upper_limit => hi < limit,
            // A maximum (a rate): crossed when even the lower bound is above it.
            Some((lo, _)) => lo > limit,
        };
        criteria.push(Criterion {
            criterion,
            limit,
            k,
            n,
            measured: (n > 0).then(|| k as f64 / n as f64),
            interval,
            crossed,
        });
    };
    if let Some(min) = g.min_parity {
        push("min_parity", min, t.matched, t.compared, false);
    }
    if let Some(max) = g.max_fallback_rate {
        push("max_fallback_rate", max, t.fallbacks, t.requests, true);
    }
    if let Some(max) = g.max_candidate_error_rate {
        push(
            "max_candidate_error_rate",
            max,
            t.candidate_failures,
            t.requests,
            true,
        );
    }
    GuardReport {
        window_seconds: g.window.as_secs(),
        tally: *t,
        min_sample: g.min_sample,
        enough: t.requests >= g.min_sample,
        criteria,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> GuardConfig {
        GuardConfig {
            min_parity: Some(0.95),
            ..GuardConfig::default()
        }
    }

    #[test]
    fn a_small_sample_decides_nothing() {
        // Every one of 20 requests failed: still below min_sample (100).
        let t = Tally {
            requests: 20,
            fallbacks: 20,
            candidate_failures: 20,
            ..Tally::default()
        };
        let r = judge(&t, &guard());
        assert!(!r.enough);
        assert!(r.criteria.iter().any(|c| c.crossed));
        assert!(!r.breached());
    }

    #[test]
    fn limits_are_crossed_only_with_confidence() {
        // 7 % fallbacks of 200 against a 5 % limit: the interval (4.2 %, 11.4 %) holds 5 %.
        let t = Tally {
            requests: 200,
            served: 186,
            fallbacks: 14,
            candidate_failures: 14,
            compared: 200,
            matched: 200,
        };
        assert!(!judge(&t, &guard()).breached());
        // 20 % of 200: crossed.
        let t = Tally {
            fallbacks: 40,
            candidate_failures: 40,
            ..t
        };
        let r = judge(&t, &guard());
        assert!(r.breached());
        assert!(
            r.reason().contains("max_fallback_rate 40/200"),
            "{}",
            r.reason()
        );
        // Parity 180/200 = 90 % against 95 %: upper bound 93.4 % < 95 %: crossed.
        let t = Tally {
            requests: 200,
            compared: 200,
            matched: 180,
            ..Tally::default()
        };
        let r = judge(&t, &guard());
        assert!(r.breached(), "{r:?}");
        assert!(r.reason().starts_with("min_parity"), "{}", r.reason());
    }

    fn record(cohort: bool, outcome: Outcome, fallback: Option<crate::record::Fallback>) -> Record {
        Record {
            meta: crate::record::Meta {
                started_at: std::time::SystemTime::now(),
                request_id: "r".into(),
                route: Some("d".into()),
                method: "GET".into(),
                path: "/d".into(),
                account: None,
                serving: crate::record::Serving {
                    phase: Some("ga".into()),
                    cohort,
                    served_by: if fallback.is_some() {
                        ServedBy::Legacy
                    } else {
                        ServedBy::Candidate
                    },
                    fallback,
                },
            },
            legacy_status: None,
            candidate_status: None,
            legacy_ms: None,
            candidate_ms: None,
            outcome,
            reason: None,
            diff_count: 0,
            diffs: Arc::default(),
            present: Arc::default(),
            bodies: Vec::new(),
            mapping_version: None,
            field_counts: None,
            ids: None,
        }
    }

    #[test]
    fn the_window_counts_the_cohort_only_and_clears() {
        use crate::record::Fallback;
        let w = Window::default();
        w.add(&record(true, Outcome::Match, None));
        w.add(&record(
            true,
            Outcome::CandidateError,
            Some(Fallback::ServerError),
        ));
        w.add(&record(
            true,
            Outcome::Skipped(crate::record::SkipReason::Template),
            Some(Fallback::NotCalled(crate::record::SkipReason::Template)),
        ));
        w.add(&record(false, Outcome::Diff, None));
        let t = w.tally(Duration::from_secs(60));
        assert_eq!(
            t,
            Tally {
                requests: 3,
                served: 1,
                fallbacks: 2,
                candidate_failures: 1,
                compared: 1,
                matched: 1,
            }
        );
        w.clear();
        assert_eq!(w.tally(Duration::from_secs(60)), Tally::default());
    }

    /// A difference at a learned noise field is a match; one the comparison counted and did not
    /// list (past its room: its field unknown) is not, nor one counted under another pattern.
    #[test]
    fn differences_counted_and_not_listed_are_not_noise() {
        let w = Window::default();
        w.set_noise(HashMap::from([(
            "d".to_owned(),
            HashSet::from(["/updated_at".to_owned()]),
        )]));
        let noisy = |extra: usize, counted: Option<&str>| {
            let mut r = record(true, Outcome::Diff, None);
            let d = crate::diff::Difference {
                pointer: "/updated_at".into(),
                field: "/updated_at".into(),
                kind: crate::diff::Kind::Changed,
                legacy: None,
                candidate: None,
                candidate_pointer: None,
            };
            r.diffs = Arc::new(vec![d]);
            r.diff_count = 1 + extra;
            if let Some(field) = counted {
                let c = crate::diff::Counted {
                    field: field.into(),
                    kind: crate::diff::Kind::Changed,
                    n: extra,
                };
                r.field_counts = Some(crate::record::field_counts(&r.diffs, &[c], 0));
            }
            r
        };
        w.add(&noisy(0, None));
        w.add(&noisy(3, None));
        w.add(&noisy(3, Some("/updated_at")));
        w.add(&noisy(3, Some("/salary")));
        let t = w.tally(Duration::from_secs(60));
        assert_eq!((t.compared, t.matched), (4, 2), "{t:?}");
    }
}
