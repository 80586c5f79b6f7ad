//! The shadow leg's error-burst breaker, per (vendor, account): some vendors block a client's
//! address outright after a burst of failing requests (Merge: more than 20 in 10 s), and a
//! candidate route that answers 401 or 404 to every shadow call would otherwise be called at the
//! full mirror rate, risking the address the caller's own traffic comes from.
//!
//! - **closed**: calls go out; `burst` failures (a status of 400 or more but 429, which the
//!   quota pause handles) within `window` open it;
//! - **open** for `open_for`: shadow calls are skipped (`skipped`, reason `breaker`);
//! - **half-open** after that: one call goes out as a probe (others skipped meanwhile); its
//!   success closes the breaker, its failure opens it again.
//!
//! A pure state machine ([`State`]) behind a lock per key; time is passed in.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::quota::Vendor;

/// `[shadow.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Failures within `window` that open the breaker; 0 disables it.
    pub burst: u32,
    pub window: Duration,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for Settings {
    /// Half of the strictest published threshold (Merge: 20 in 10 s), open for 30 s.
    fn default() -> Self {
        Self {
            burst: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
        }
    }
}

/// One key's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The failures within the window, oldest first (at most `burst`).
    Closed(VecDeque<Instant>),
    Open {
        until: Instant,
    },
    /// Since when a probe is out (`None`: one may go out). A probe with no answer within
    /// `open_for` (timed out, never sent) is given up: another may go.
    HalfOpen {
        probing: Option<Instant>,
    },
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// The half-open breaker's one probe.
    Probe,
    Skip,
}

/// A transition worth saying (logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

impl State {
    fn closed() -> Self {
        Self::Closed(VecDeque::new())
    }

    /// Whether a call may go out at `now`.
    pub fn admit(&mut self, s: &Settings, now: Instant) -> Admit {
        match self {
            Self::Closed(_) => Admit::Call,
            Self::Open { until } if now >= *until => {
                *self = Self::HalfOpen { probing: Some(now) };
                Admit::Probe
            }
            Self::Open { .. } => Admit::Skip,
            Self::HalfOpen {
                probing: Some(since),
            } if now.saturating_duration_since(*since) < s.open_for => Admit::Skip,
            Self::HalfOpen { probing } => {
                *probing = Some(now);
                Admit::Probe
            }
        }
    }

    /// A call's result at `now` (`failed`: a status of 400 or more but 429).
    pub fn result(&mut self, s: &Settings, failed: bool, now: Instant) -> Option<Change> {
        match self {
            Self::Closed(failures) => {
                if !failed {
                    return None;
                }
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= s.window)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                if failures.len() >= s.burst as usize {
                    *self = Self::Open {
                        until: now + s.open_for,
                    };
                    return Some(Change::Opened);
                }
                None
            }
            Self::HalfOpen { .. } if failed => {
                *self = Self::Open {
                    until: now + s.open_for,
                };
                Some(Change::Opened)
            }
            Self::HalfOpen { .. } => {
                *self = Self::closed();
                Some(Change::Closed)
            }
            // A call admitted before the breaker opened: already counted in.
            Self::Open { .. } => None,
        }
    }
}

/// Whether a vendor's answer counts as a failure.
pub fn is_failure(status: u16) -> bool {
    status >= 400 && status != 429
}

/// Every key's breaker.
#[derive(Debug, Default)]
pub struct Breakers {
    settings: Mutex<Settings>,
    states: Mutex<HashMap<(Vendor, Option<String>), State>>,
}

/// Keys kept at most; past it, closed breakers without failures are forgotten first.
const MAX_KEYS: usize = 100_000;

impl Breakers {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings: Mutex::new(settings),
            states: Mutex::default(),
        }
    }

    /// New settings (a reload); states are kept.
    pub fn set(&self, settings: Settings) {
        *self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    fn settings(&self) -> Settings {
        *self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a shadow call to `vendor` for `account` may go out now.
    pub fn admit(&self, vendor: Vendor, account: Option<&str>) -> Admit {
        let settings = self.settings();
        if settings.burst == 0 {
            return Admit::Call;
        }
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match states.get_mut(&(vendor, account.map(str::to_owned))) {
            Some(s) => s.admit(&settings, Instant::now()),
            None => Admit::Call,
        }
    }

    /// A call's answer (its status); `None` when it changed the breaker's state.
    pub fn result(&self, vendor: Vendor, account: Option<&str>, status: u16) -> Option<Change> {
        let s = self.settings();
        if s.burst == 0 {
            return None;
        }
        let failed = is_failure(status);
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (vendor, account.map(str::to_owned));
        if !failed && !states.contains_key(&key) {
            return None;
        }
        if states.len() >= MAX_KEYS && !states.contains_key(&key) {
            states.retain(|_, st| !matches!(st, State::Closed(f) if f.is_empty()));
        }
        let change =
            states
                .entry(key)
                .or_insert_with(State::closed)
                .result(&s, failed, Instant::now());
        if let Some(c) = change {
            crate::telemetry::breaker(vendor.as_str(), c == Change::Opened);
            match c {
                Change::Opened => tracing::warn!(
                    vendor = vendor.as_str(),
                    account,
                    burst = s.burst,
                    window = ?s.window,
                    open_for = ?s.open_for,
                    "breaker open: shadow calls skipped (the vendor answered a burst of errors)"
                ),
                Change::Closed => tracing::info!(
                    vendor = vendor.as_str(),
                    account,
                    "breaker closed: the probe succeeded"
                ),
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_opens_a_probe_closes_or_reopens() {
        let s = Settings {
            burst: 3,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
        };
        let t = Instant::now();
        let mut b = State::closed();
        // Spread out: never three within the window.
        for i in 0..6 {
            assert_eq!(b.result(&s, true, t + Duration::from_secs(6 * i)), None);
            assert_eq!(b.admit(&s, t + Duration::from_secs(6 * i)), Admit::Call);
        }
        // Successes do not count; 429 is not a failure.
        assert!(!is_failure(429) && is_failure(404) && is_failure(500) && !is_failure(204));
        let t = t + Duration::from_secs(100);
        assert_eq!(b.result(&s, true, t), None);
        assert_eq!(b.result(&s, false, t), None);
        assert_eq!(b.result(&s, true, t), None);
        assert_eq!(b.result(&s, true, t), Some(Change::Opened));
        assert_eq!(b.admit(&s, t + Duration::from_secs(29)), Admit::Skip);
        // Half-open: one probe; others wait for its answer.
        let later = t + Duration::from_secs(30);
        assert_eq!(b.admit(&s, later), Admit::Probe);
        assert_eq!(b.admit(&s, later), Admit::Skip);
        assert_eq!(b.result(&s, true, later), Some(Change::Opened));
        assert_eq!(b.admit(&s, later + Duration::from_secs(1)), Admit::Skip);
        let again = later + Duration::from_secs(30);
        assert_eq!(b.admit(&s, again), Admit::Probe);
        // A probe never answered is given up after `open_for`: another goes.
        assert_eq!(b.admit(&s, again + Duration::from_secs(29)), Admit::Skip);
        let lost = again + Duration::from_secs(30);
        assert_eq!(b.admit(&s, lost), Admit::Probe);
        assert_eq!(b.result(&s, false, lost), Some(Change::Closed));
        assert_eq!(b.admit(&s, lost), Admit::Call);
    }

    #[test]
    fn keys_are_per_vendor_and_account_and_zero_disables() {
        let b = Breakers::new(Settings {
            burst: 2,
            ..Settings::default()
        });
        for _ in 0..2 {
            b.result(Vendor::Candidate, Some("a"), 401);
        }
        assert_eq!(b.admit(Vendor::Candidate, Some("a")), Admit::Skip);
        assert_eq!(b.admit(Vendor::Candidate, Some("b")), Admit::Call);
        assert_eq!(b.admit(Vendor::Legacy, Some("a")), Admit::Call);
        b.set(Settings {
            burst: 0,
            ..Settings::default()
        });
        assert_eq!(b.admit(Vendor::Candidate, Some("a")), Admit::Call);
    }
}
