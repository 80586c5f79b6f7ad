//! Vendors' rate limits, as their responses state them, per (vendor, account): the latest
//! remaining quota, what the shadow traffic may still spend of it (`[shadow] reserve`), and the
//! pauses after a 429 (per account unless `[shadow] rate_limit_scope = "global"`).
//!
//! Read, first that applies:
//! 1. the IETF draft's Structured Fields (draft-ietf-httpapi-ratelimit-headers):
//!    `RateLimit: "default";r=50;t=30` (remaining `r`, seconds to reset `t`, per policy) with
//!    `RateLimit-Policy: "default";q=100;w=60` (quota `q` per window `w`); of several policies
//!    the one with the smallest remaining share counts;
//! 2. the draft's older separate fields `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`;
//! 3. the common `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (a reset over
//!    10^9 is an epoch timestamp, as several APIs send).
//!
//! `Retry-After` (seconds or an HTTP date) is read by the 429 pause (the shadow module's `retry_after`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName};

/// Which vendor a quota is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Legacy,
    Candidate,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Candidate => "candidate",
        }
    }
}

/// A quota as one response states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Requests the window allows (`None`: not stated).
    pub limit: Option<u64>,
    pub remaining: u64,
    /// Until the window resets (`None`: not stated).
    pub reset: Option<Duration>,
    /// The policy's name (Structured Fields only).
    pub policy: Option<String>,
}

impl Quota {
    /// `remaining / limit`, when the limit is known.
    pub fn share(&self) -> Option<f64> {
        self.limit
            .filter(|l| *l > 0)
            .map(|l| (self.remaining as f64 / l as f64).min(1.0))
    }
}

/// `RateLimit` and `RateLimit-Policy` (the current draft's Structured Fields).
static STRUCTURED: [HeaderName; 2] = [
    HeaderName::from_static("ratelimit"),
    HeaderName::from_static("ratelimit-policy"),
];
/// The older plain fields, `RateLimit-*` then `X-RateLimit-*`: remaining, limit, reset.
static PLAIN: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("ratelimit-reset"),
    ],
    [
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-reset"),
    ],
];

/// The quota a response's headers state, if any. (Read for every response: the names are
/// built once, not per call.)
pub fn parse(h: &HeaderMap) -> Option<Quota> {
    // Most responses state none: one pass over their names says so, where looking each
    // field up would hash eight names.
    let stated = h.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("ratelimit") || k.starts_with("x-ratelimit-")
    });
    if !stated {
        return None;
    }
    let get = |n: &HeaderName| {
        let v: Vec<&str> = h
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!v.is_empty()).then(|| v.join(", "))
    };
    let [ratelimit, policy] = &STRUCTURED;
    if let Some(q) = get(ratelimit).and_then(|v| structured(&v, get(policy).as_deref())) {
        return Some(q);
    }
    for [remaining, limit, reset] in &PLAIN {
        let number = |n: &HeaderName| get(n).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(remaining) = number(remaining) {
            return Some(Quota {
                limit: number(limit),
                remaining,
                reset: number(reset).map(reset_of),
                policy: None,
            });
        }
    }
    None
}

/// A reset field's seconds: a delay, or an epoch timestamp (anything over 10^9, as several APIs
/// send). A hostile value past what `SystemTime` holds is "as long as possible" (callers cap it),
/// never an overflow; an epoch in the past is now.
pub fn reset_of(s: u64) -> Duration {
    if s <= 1_000_000_000 {
        return Duration::from_secs(s);
    }
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(s))
        .map_or(Duration::MAX, |at| {
            at.duration_since(SystemTime::now()).unwrap_or_default()
        })
}

/// The current draft's `RateLimit` (a List of policies with `r` and `t`) with the quotas of
/// `RateLimit-Policy` (`q`); the most constrained policy.
fn structured(ratelimit: &str, policy: Option<&str>) -> Option<Quota> {
    let int = |params: &sfv::Parameters, k: &str| {
        params
            .get(k)
            .and_then(|v| v.as_integer())
            .and_then(|i| u64::try_from(i64::from(i)).ok())
    };
    let name = |item: &sfv::Item| match &item.bare_item {
        sfv::BareItem::String(s) => Some(s.as_str().to_owned()),
        sfv::BareItem::Token(t) => Some(t.as_str().to_owned()),
        _ => None,
    };
    let items = |text: &str| -> Vec<sfv::Item> {
        sfv::Parser::new(text)
            .parse::<sfv::List>()
            .map(|l| {
                l.into_iter()
                    .filter_map(|e| match e {
                        sfv::ListEntry::Item(i) => Some(i),
                        sfv::ListEntry::InnerList(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let quotas: HashMap<Option<String>, u64> = policy
        .map(items)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((name(p), int(&p.params, "q")?)))
        .collect();
    items(ratelimit)
        .iter()
        .filter_map(|i| {
            let policy = name(i);
            Some(Quota {
                limit: quotas.get(&policy).copied(),
                remaining: int(&i.params, "r")?,
                reset: int(&i.params, "t").map(Duration::from_secs),
                policy,
            })
        })
        .min_by(|a, b| {
            let key = |q: &Quota| q.share().unwrap_or(f64::INFINITY);
            key(a)
                .total_cmp(&key(b))
                .then(a.remaining.cmp(&b.remaining))
        })
}

/// (vendor, account) pairs tracked at most: past it, new pairs are not tracked until old ones
/// expire (a stream of made-up account names cannot grow the table).
const MAX_TRACKED: usize = 10_000;
/// A quota with no stated reset is trusted this long after it was seen.
const UNDATED: Duration = Duration::from_secs(60);
/// Longest pause after a 429 (a larger `Retry-After` is capped to it).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Seen {
    quota: Quota,
    /// Until when it holds: its reset, or [`UNDATED`] after it was seen.
    until: Instant,
}

/// The latest quota per (vendor, account) and the pauses after a 429. One table per vendor,
/// keyed by account (`""`: none known), so a lookup on the caller's path allocates nothing.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: [Mutex<HashMap<String, Seen>>; 2],
    paused: [Mutex<HashMap<String, Instant>>; 2],
}

fn slot(v: Vendor) -> usize {
    match v {
        Vendor::Legacy => 0,
        Vendor::Candidate => 1,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tracker {
    /// Keeps what a response of `vendor` for `account` says about its quota.
    pub fn observe(&self, vendor: Vendor, account: Option<&str>, headers: &HeaderMap) {
        let Some(quota) = parse(headers) else { return };
        if let Some(s) = quota.share() {
            crate::telemetry::quota_share(vendor.as_str(), s);
        }
        let now = Instant::now();
        let until = now + quota.reset.unwrap_or(UNDATED).min(MAX_PAUSE);
        let mut seen = lock(&self.seen[slot(vendor)]);
        let key = account.unwrap_or("");
        if seen.len() >= MAX_TRACKED && !seen.contains_key(key) {
            seen.retain(|_, s| s.until > now);
            if seen.len() >= MAX_TRACKED {
                return;
            }
        }
        seen.insert(key.to_owned(), Seen { quota, until });
    }

    /// Whether shadow traffic must leave the rest of this account's quota to the caller: its
    /// remaining share is under `reserve` (a quota without a stated limit cannot tell).
    pub fn below_reserve(&self, vendor: Vendor, account: Option<&str>, reserve: f64) -> bool {
        if reserve <= 0.0 {
            return false;
        }
        lock(&self.seen[slot(vendor)])
            .get(account.unwrap_or(""))
            .filter(|s| s.until > Instant::now())
            .and_then(|s| s.quota.share())
            .is_some_and(|s| s < reserve)
    }

    /// Pauses shadow calls to `vendor` for `account` (`None`: every account) for `d`.
    pub fn pause(&self, vendor: Vendor, account: Option<&str>, d: Duration) {
        let now = Instant::now();
        let until = now + d.min(MAX_PAUSE);
        let mut p = lock(&self.paused[slot(vendor)]);
        if p.len() >= MAX_TRACKED {
            p.retain(|_, u| *u > now);
        }
        let key = account.unwrap_or("");
        if p.len() < MAX_TRACKED || p.contains_key(key) {
            let e = p.entry(key.to_owned()).or_insert(until);
            *e = (*e).max(until);
        }
    }

    /// Whether shadow calls to `vendor` for `account` are paused (its own pause, or the global
    /// one).
    pub fn paused(&self, vendor: Vendor, account: Option<&str>) -> bool {
        let p = lock(&self.paused[slot(vendor)]);
        if p.is_empty() {
            return false;
        }
        let now = Instant::now();
        let on = |k: &str| p.get(k).is_some_and(|u| *u > now);
        on("") || account.is_some_and(on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_drafts_structured_fields() {
        // The draft's examples: one policy, then two with the most constrained counting.
        let q = parse(&headers(&[
            ("RateLimit-Policy", "\"default\";q=100;w=10"),
            ("RateLimit", "\"default\";r=50;t=30"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            Quota {
                limit: Some(100),
                remaining: 50,
                reset: Some(Duration::from_secs(30)),
                policy: Some("default".into())
            }
        );
        let q = parse(&headers(&[
            (
                "RateLimit-Policy",
                "\"burst\";q=100;w=60,\"daily\";q=1000;w=86400",
            ),
            ("RateLimit", "\"burst\";r=80;t=10, \"daily\";r=100;t=3600"),
        ]))
        .unwrap();
        assert_eq!(q.policy.as_deref(), Some("daily"));
        assert_eq!(q.share(), Some(0.1));
        // A partition key and a quota unit change nothing here; no policy: no share.
        let q = parse(&headers(&[(
            "RateLimit",
            "\"default\";r=0;t=10;pk=:QmVhcmVy:",
        )]))
        .unwrap();
        assert_eq!((q.remaining, q.limit, q.share()), (0, None, None));
        // Not a Structured Field: the older fields are read instead.
        let q = parse(&headers(&[
            ("RateLimit", "limit=100, remaining=5"),
            ("RateLimit-Limit", "100"),
            ("RateLimit-Remaining", "5"),
            ("RateLimit-Reset", "7"),
        ]))
        .unwrap();
        assert_eq!(
            (q.limit, q.remaining, q.reset),
            (Some(100), 5, Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn the_common_x_ratelimit_fields() {
        let q = parse(&headers(&[
            ("X-RateLimit-Limit", "5000"),
            ("X-RateLimit-Remaining", "4999"),
            ("X-RateLimit-Reset", "60"),
        ]))
        .unwrap();
        assert_eq!((q.limit, q.remaining), (Some(5000), 4999));
        // An epoch reset, in the past: now.
        let q = parse(&headers(&[
            ("X-RateLimit-Remaining", "1"),
            ("X-RateLimit-Reset", "1372700873"),
        ]))
        .unwrap();
        assert_eq!(q.reset, Some(Duration::ZERO));
        assert!(parse(&headers(&[("X-RateLimit-Remaining", "lots")])).is_none());
        assert!(parse(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_reserve_and_pauses_are_per_account() {
        let t = Tracker::default();
        let low = headers(&[
            ("X-RateLimit-Limit", "100"),
            ("X-RateLimit-Remaining", "10"),
        ]);
        let high = headers(&[
            ("X-RateLimit-Limit", "100"),
            ("X-RateLimit-Remaining", "90"),
        ]);
        t.observe(Vendor::Candidate, Some("acme"), &low);
        t.observe(Vendor::Candidate, Some("globex"), &high);
        assert!(t.below_reserve(Vendor::Candidate, Some("acme"), 0.2));
        assert!(!t.below_reserve(Vendor::Candidate, Some("globex"), 0.2));
        assert!(!t.below_reserve(Vendor::Legacy, Some("acme"), 0.2));
        assert!(!t.below_reserve(Vendor::Candidate, Some("acme"), 0.0));
        t.pause(Vendor::Candidate, Some("acme"), Duration::from_secs(60));
        assert!(t.paused(Vendor::Candidate, Some("acme")));
        assert!(!t.paused(Vendor::Candidate, Some("globex")));
        t.pause(Vendor::Candidate, None, Duration::from_secs(60));
        assert!(t.paused(Vendor::Candidate, Some("globex")));
        assert!(t.paused(Vendor::Candidate, None));
    }
}
