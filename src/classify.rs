//! What kind of difference a field pattern shows over a window, computed from the store:
//!
//! - `noise`: legacy itself answers differently there ([`learned`] from second legacy calls,
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

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::config::DiffConfig;
use crate::store;

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

/// A field learned as noise on a route.
#[derive(Debug, Clone, Serialize)]
pub struct NoiseField {
    pub field: String,
    /// Pairs of legacy answers that differed at this field.
    pub differed: u64,
    /// Pairs of legacy answers compared on the route.
    pub samples: u64,
    pub last_at: String,
}

/// The store's name of a route: `""` for requests that matched none.
fn key(route: Option<&str>) -> &str {
    match route {
        None | Some(crate::report::UNMATCHED) => "",
        Some(r) => r,
    }
}

/// The fields learned as noise on a route (differed at least `min_count` times), most frequent
/// first.
pub fn learned(
    conn: &Connection,
    route: Option<&str>,
    min_count: u64,
) -> rusqlite::Result<Vec<NoiseField>> {
    let mut q = conn.prepare_cached(
        "SELECT f.field, f.differed, s.samples, f.last_at FROM noise_fields f
         JOIN noise_samples s ON s.route = f.route
         WHERE f.route = ?1 AND f.differed >= ?2 ORDER BY f.differed DESC, f.field",
    )?;
    let rows = q.query_map(params![key(route), min_count as i64], |r| {
        Ok(NoiseField {
            field: r.get(0)?,
            differed: r.get::<_, i64>(1)? as u64,
            samples: r.get::<_, i64>(2)? as u64,
            last_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Compared exchanges per field pattern where the field was present, over the hours that
/// overlap the window.
pub fn presence(
    conn: &Connection,
    route: Option<&str>,
    from: SystemTime,
    to: SystemTime,
) -> rusqlite::Result<HashMap<String, u64>> {
    let hour = |t| store::rfc3339(t)[..13].to_owned();
    let mut q = conn.prepare_cached(
        "SELECT field, sum(n) FROM field_presence WHERE route = ?1 AND hour >= ?2 AND hour <= ?3
         GROUP BY field",
    )?;
    let rows = q.query_map(params![key(route), hour(from), hour(to)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    rows.collect()
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
        conn: &Connection,
        route: Option<&str>,
        (from, to): (SystemTime, SystemTime),
        compared: u64,
        with_presence: bool,
        s: Settings,
    ) -> rusqlite::Result<Self> {
        Ok(Self {
            noise: learned(conn, route, s.noise_min_count)?,
            presence: if with_presence {
                presence(conn, route, from, to)?
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

/// `(route, account, exchanges)`: a count of noise-only exchanges.
pub type NoiseOnly = (Option<String>, Option<String>, u64);

/// Exchanges with outcome `diff` in the window whose every difference is at a field learned as
/// noise on their route, per (route, account): they count as matched in parity.
pub fn noise_only(
    conn: &Connection,
    cond: &str,
    params: &[String],
    min_count: u64,
) -> rusqlite::Result<Vec<NoiseOnly>> {
    let any: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM noise_fields WHERE differed >= ?1)",
        [min_count as i64],
        |r| r.get(0),
    )?;
    if !any {
        return Ok(Vec::new());
    }
    let n = params.len() + 1;
    let sql = format!(
        "SELECT e.route, e.account, count(*) FROM exchanges e
         WHERE {cond} AND e.outcome = 'diff' AND NOT EXISTS (
             SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id AND x.field NOT IN (
                 SELECT f.field FROM noise_fields f
                 WHERE f.route = coalesce(e.route, '') AND f.differed >= ?{n}))
         GROUP BY e.route, e.account"
    );
    let mut p: Vec<rusqlite::types::Value> = params.iter().cloned().map(Into::into).collect();
    p.push((min_count as i64).into());
    let mut q = conn.prepare(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(p), |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect()
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
        conn: &Connection,
        route: &str,
        (from, to): (SystemTime, SystemTime),
        s: Settings,
    ) -> rusqlite::Result<Self> {
        let (from_s, to_s) = (store::rfc3339(from), store::rfc3339(to));
        let compared: i64 = conn.query_row(
            "SELECT count(*) FROM exchanges WHERE route = ?1 AND outcome IN ('match', 'diff')
             AND started_at >= ?2 AND started_at < ?3",
            params![route, from_s, to_s],
            |r| r.get(0),
        )?;
        let mut q = conn.prepare(
            "SELECT field, count(*) FROM diff_fields WHERE route = ?1 AND started_at >= ?2
             AND started_at < ?3 GROUP BY field",
        )?;
        let differing = q
            .query_map(params![route, from_s, to_s], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let compared = compared as u64;
        Ok(Self {
            classes: RouteClasses::load(conn, Some(route), (from, to), compared, true, s)?,
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

    #[test]
    fn thresholds_presence_and_noise() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(&dir.path().join("c.db")).unwrap();
        let now = SystemTime::now();
        let hour = &store::rfc3339(now)[..13];
        conn.execute_batch(&format!(
            "INSERT INTO field_presence VALUES ('r', '/a', '{hour}', 10), ('r', '/opt', '{hour}', 4);
             INSERT INTO noise_samples VALUES ('r', 5, 'x');
             INSERT INTO noise_fields VALUES ('r', '/ts', 5, 'x', 'x'), ('r', '/once', 1, 'x', 'x');"
        ))
        .unwrap();
        let window = (now - Duration::from_secs(60), now + Duration::from_secs(60));
        let s = Settings::default();
        let c = RouteClasses::load(&conn, Some("r"), window, 20, true, s).unwrap();
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
        let c = RouteClasses::load(&conn, Some("r"), window, 20, true, strict).unwrap();
        assert_eq!(c.classify("/a", 5).class, Class::Systematic);
        assert_eq!(c.classify("/once", 1).class, Class::Noise);
    }
}
