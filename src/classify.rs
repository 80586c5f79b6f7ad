//! What kind of difference a field pattern shows over a window, computed from the store:
//!
//! - `noise`: legacy itself answers differently there (learned from second legacy calls,
//!   `[diff.noise]`); excluded from parity (an exchange whose differences are all noise counts
//!   as matched);
//! - `systematic`: differs in at least `systematic_rate` (default 0.9) of the compared exchanges
//!   where the field is present — the candidate is wrong the same way every time, a mapping gap;
//! - `sporadic`: differs less often — data drift (one vendor synced later than the other).
//!
//! "Present" comes from `field_presence` (compared exchanges where either body had the field,
//! counted per hour): a window's presence is that of the hours it overlaps, capped at the
//! window's compared exchanges. Status and header fields (`@status`, `@header/…`) are present in
//! every compared exchange, and so is a field the store has no presence for (exchanges recorded
//! before presence was kept, or a report narrowed to one account).

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::DiffConfig;
use crate::record::{Outcome, RouteKey};
use crate::store::{Filter, GroupBy, Reader, StoreError};

pub use crate::store::NoiseField;

/// A field pattern's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Systematic,
    Sporadic,
    Noise,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systematic => "systematic",
            Self::Sporadic => "sporadic",
            Self::Noise => "noise",
        }
    }
}

/// The thresholds (`[diff] systematic_rate`, `[diff.noise] min_count`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub systematic_rate: f64,
    pub noise_min_count: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            systematic_rate: 0.9,
            noise_min_count: 2,
        }
    }
}

impl From<&DiffConfig> for Settings {
    fn from(d: &DiffConfig) -> Self {
        Self {
            systematic_rate: d.systematic_rate,
            noise_min_count: d.noise.min_count,
        }
    }
}

/// How one field pattern is classified, with the figures behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub class: Class,
    /// Compared exchanges where the field was present (the denominator).
    pub present: u64,
    /// `differing / present`.
    pub rate: f64,
}

/// What is known about a route in a window, to classify its fields.
#[derive(Debug, Default)]
pub struct RouteClasses {
    pub noise: Vec<NoiseField>,
    presence: HashMap<String, u64>,
    compared: u64,
    systematic_rate: f64,
}

impl RouteClasses {
    /// Reads a route's learned noise and field presence. `account`-narrowed windows pass
    /// `with_presence = false` (presence is not kept per account).
    pub fn load(
        store: &dyn Reader,
        route: &RouteKey,
        (from, to): (SystemTime, SystemTime),
        compared: u64,
        with_presence: bool,
        s: Settings,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            noise: store.learned_noise(route, s.noise_min_count)?,
            presence: if with_presence {
                store.presence(route, from, to)?
            } else {
                HashMap::new()
            },
            compared,
            systematic_rate: s.systematic_rate,
        })
    }

    pub fn is_noise(&self, field: &str) -> bool {
        self.noise.iter().any(|n| n.field == field)
    }

    /// Classifies a field pattern that differed in `differing` compared exchanges.
    pub fn classify(&self, field: &str, differing: u64) -> Verdict {
        let present = if field.starts_with('@') {
            self.compared
        } else {
            self.presence
                .get(field)
                .map_or(self.compared, |&p| p.min(self.compared))
        }
        .max(differing);
        let rate = if present == 0 {
            0.0
        } else {
            differing as f64 / present as f64
        };
        let class = if self.is_noise(field) {
            Class::Noise
        } else if rate >= self.systematic_rate {
            Class::Systematic
        } else {
            Class::Sporadic
        };
        Verdict {
            class,
            present,
            rate,
        }
    }
}

/// The classes of a route's fields over a window, for `diff --format json`: fields the store
/// saw differ are classified as in reports; learned noise is `noise`; anything else is `new`.
pub struct Lookup {
    classes: RouteClasses,
    differing: HashMap<String, u64>,
    pub compared: u64,
}

impl Lookup {
    pub fn load(
        store: &dyn Reader,
        route: &str,
        (from, to): (SystemTime, SystemTime),
        s: Settings,
    ) -> Result<Self, StoreError> {
        let key = RouteKey::named(route);
        let f = Filter {
            from,
            to,
            route: Some(key.clone()),
            account: None,
            mapping_version: None,
        };
        let compared = store
            .outcome_counts(GroupBy::Route, &f)?
            .iter()
            .filter(|c| Outcome::is_compared_name(&c.outcome))
            .map(|c| c.n)
            .sum();
        let mut differing: HashMap<String, u64> = HashMap::new();
        for row in store.fields(&f)? {
            *differing.entry(row.field).or_default() += row.exchanges;
        }
        Ok(Self {
            classes: RouteClasses::load(store, &key, (from, to), compared, true, s)?,
            differing,
            compared,
        })
    }

    /// `systematic`, `sporadic`, `noise`, or `new` (never seen differing in the window).
    pub fn class(&self, field: &str) -> &'static str {
        match self.differing.get(field) {
            Some(&n) => self.classes.classify(field, n).class.as_str(),
            None if self.classes.is_noise(field) => Class::Noise.as_str(),
            None => "new",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::record::{Meta, NoiseSample, Record};
    use crate::store::{Store, WriterOptions};
    use std::sync::Arc;

    /// A store written by the writer: `/a` present in 10 compared exchanges of route `r`,
    /// `/opt` in 4 of them; 5 pairs of legacy answers, all differing at `/ts`, one at `/once`.
    fn fixture(path: &std::path::Path, now: SystemTime) {
        let store = Store::open(
            path,
            WriterOptions {
                queue: 64,
                priority: crate::background::Priority::Normal,
                retention: Duration::from_secs(3600),
                max_value_len: 64,
                examples_per_field: 3,
                exchanges: crate::store::Rows::All,
                rows_per_hour: 100,
                migrate: true,
                reauth_after: 3,
                id_max_pairs: Vec::new(),
                webhooks: Vec::new(),
            },
        )
        .unwrap();
        let h = store.handle();
        for i in 0..10 {
            let present: Vec<String> = if i < 4 {
                vec!["/a".into(), "/opt".into()]
            } else {
                vec!["/a".into()]
            };
            h.record(Record {
                meta: Meta {
                    started_at: now,
                    request_id: format!("r{i}"),
                    route: Some("r".into()),
                    method: "GET".into(),
                    path: "/r".into(),
                    account: None,
                    serving: Default::default(),
                },
                legacy_status: Some(200),
                candidate_status: Some(200),
                legacy_ms: Some(1.0),
                candidate_ms: Some(1.0),
                outcome: Outcome::Match,
                reason: None,
                diff_count: 0,
                diffs: Arc::default(),
                present: Arc::new(present),
                bodies: vec![],
                mapping_version: None,
                field_counts: None,
                ids: None,
            });
        }
        for i in 0..5 {
            let mut fields = vec!["/ts".to_owned()];
            if i == 0 {
                fields.push("/once".into());
            }
            h.noise(NoiseSample {
                route: RouteKey::named("r"),
                at: now,
                fields,
            });
        }
        h.flush_blocking();
        drop(h);
        store.close();
    }

    #[test]
    fn thresholds_presence_and_noise() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        fixture(&dir.path().join("c.db"), now);
        let conn = crate::store::open_reader(&dir.path().join("c.db")).unwrap();
        let conn = &*conn;
        let window = (now - Duration::from_secs(60), now + Duration::from_secs(60));
        let s = Settings::default();
        let c = RouteClasses::load(conn, &RouteKey::named("r"), window, 20, true, s).unwrap();
        // 9 of the 10 exchanges where /a is present: systematic (0.9 is the threshold).
        let v = c.classify("/a", 9);
        assert_eq!((v.class, v.present), (Class::Systematic, 10));
        assert_eq!(c.classify("/a", 8).class, Class::Sporadic);
        // An optional field differing every time it is present is systematic, although it
        // differs in only 4 of the 20 compared exchanges.
        assert_eq!(c.classify("/opt", 4).class, Class::Systematic);
        // Without presence data the compared exchanges are the denominator.
        assert_eq!(c.classify("/unknown", 4).present, 20);
        assert_eq!(c.classify("@status", 20).class, Class::Systematic);
        // Learned noise: at least min_count differences between two legacy answers.
        assert_eq!(c.classify("/ts", 20).class, Class::Noise);
        assert_eq!(c.classify("/once", 20).class, Class::Systematic);
        assert_eq!(c.noise.len(), 1);
        assert_eq!((c.noise[0].differed, c.noise[0].samples), (5, 5));
        let strict = Settings {
            systematic_rate: 0.5,
            noise_min_count: 1,
        };
        let c = RouteClasses::load(conn, &RouteKey::named("r"), window, 20, true, strict).unwrap();
        assert_eq!(c.classify("/a", 5).class, Class::Systematic);
        assert_eq!(c.classify("/once", 1).class, Class::Noise);
    }
}
