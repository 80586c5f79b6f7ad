//! Rollout phases served by the proxy (docs/rollout.md).
//!
//! - [`RolloutConfig`]: `[rollout]` resolved: the phases (built-in `shadow`, `canary`, `ramp`,
//!   `ga`, `rollback`, and any the user names) with the share of accounts each serves from the
//!   candidate, pins, the cohort salt, the promotion order and the guard.
//! - Cohorts ([`bucket`]): a stable hash of (salt, account) gives each account a bucket in
//!   `0..10000`; a phase of `p` % serves the accounts whose bucket is below `p × 100`. An account
//!   never changes side while the phase stays, and raising the share only adds accounts.
//! - [`Rollout`]: the phase in force in this process (changed by the API, the command line
//!   through the store, a reload, or the guard) and the guard's window of served-cohort
//!   outcomes. The `rollout_control` module runs the thread that follows the store and applies
//!   the guard, and answers `/api/rollout`.
//! - Decisions use Wilson score intervals ([`wilson`]) with a minimum sample, never a raw ratio.

mod guard;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use crate::store::{RolloutChange as Change, RolloutEvent as Event};
pub use guard::{judge, Criterion, GuardReport, Tally, Window};

/// The phases every config has, with their default share of accounts served by the candidate.
pub const BUILT_IN: [(&str, f64); 5] = [
    ("shadow", 0.0),
    ("canary", 5.0),
    ("ramp", 25.0),
    ("ga", 100.0),
    ("rollback", 0.0),
];

/// The phase that sends everything to legacy, pins included: where the guard and a rollback go.
pub const ROLLBACK: &str = "rollback";

/// The phase that serves no one (the candidate is only compared), pins included.
pub const SHADOW: &str = "shadow";

/// Buckets of the cohort hash: shares have a resolution of 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// A request of no known account, on a route that serves: which vendor answers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAccount {
    /// Always legacy (the default).
    #[default]
    Legacy,
    /// The candidate, in every phase that serves anyone (share above 0), but `rollback`.
    Candidate,
}

impl UnknownAccount {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Candidate => "candidate",
        }
    }
}

/// One phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseDef {
    /// Share of accounts served by the candidate, 0 to 100.
    pub percent: f64,
    /// Share of candidate-served requests that still call legacy (the fallback and the
    /// comparison): 1.0 by default. Below 1, the others are served without a legacy call.
    pub legacy_sample: f64,
    /// The candidate's answer is served only once compared strictly with legacy's answer to the
    /// same request and found equal (on by default for `canary`).
    pub verify: bool,
}

/// `[rollout.guard]`: the limits the served cohort is held to.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Roll back by itself when a limit is crossed (with confidence).
    pub auto_rollback: bool,
    /// Promote by itself when the phase's gate has held for `hold`.
    pub auto_promote: bool,
    /// The served-cohort outcomes the guard looks at: the last `window` of this phase.
    pub window: Duration,
    /// Fewer served requests than this in the window: no automatic action.
    pub min_sample: u64,
    pub min_parity: Option<f64>,
    pub max_fallback_rate: Option<f64>,
    pub max_candidate_error_rate: Option<f64>,
    /// Of the Wilson intervals (0.95: z = 1.96).
    pub confidence: f64,
    /// Automatic promotion: how long the gate must have held (and the phase lasted).
    pub hold: Duration,
    /// Automatic promotion: the window of the gate.
    pub promote_window: Duration,
    /// How often the guard looks.
    pub every: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            auto_rollback: false,
            auto_promote: false,
            window: Duration::from_secs(600),
            min_sample: 100,
            min_parity: None,
            max_fallback_rate: Some(0.05),
            max_candidate_error_rate: Some(0.05),
            confidence: 0.95,
            hold: Duration::from_secs(3600),
            promote_window: Duration::from_secs(86_400),
            every: Duration::from_secs(2),
        }
    }
}

/// `[rollout]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// The phase a store without rollout events starts in.
    pub phase: String,
    pub salt: String,
    /// The phases `promote` walks, in order (`rollback` is not one of them).
    pub order: Vec<String>,
    pub phases: BTreeMap<String, PhaseDef>,
    /// Accounts served by the candidate in every phase but `shadow` and `rollback` (which
    /// serve no one), whatever the phase's share: a canary of 0 % serves exactly its pins.
    pub pin_candidate: HashSet<String>,
    /// Accounts always served by legacy.
    pub pin_legacy: HashSet<String>,
    /// How often an instance reads the phase from the store.
    pub follow: Duration,
    /// Candidate calls for served requests at once (`None`: the proxy's connection cap): past
    /// it, a cohort request is answered by legacy (`not_called_overload`).
    pub max_in_flight: Option<usize>,
    pub guard: GuardConfig,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            phase: "shadow".into(),
            salt: "shadowdiff".into(),
            order: ["shadow", "canary", "ramp", "ga"]
                .map(str::to_owned)
                .to_vec(),
            phases: BUILT_IN
                .iter()
                .map(|(n, p)| {
                    (
                        (*n).to_owned(),
                        PhaseDef {
                            percent: *p,
                            legacy_sample: 1.0,
                            verify: *n == "canary",
                        },
                    )
                })
                .collect(),
            pin_candidate: HashSet::new(),
            pin_legacy: HashSet::new(),
            follow: Duration::from_millis(500),
            max_in_flight: None,
            guard: GuardConfig::default(),
        }
    }
}

impl RolloutConfig {
    /// The phase after `phase` in `order` (from `rollback`: the first).
    pub fn next(&self, phase: &str) -> Result<&str, String> {
        if phase == ROLLBACK {
            return self
                .order
                .first()
                .map(String::as_str)
                .ok_or_else(|| "[rollout] order is empty".to_owned());
        }
        let i = self
            .order
            .iter()
            .position(|p| p == phase)
            .ok_or_else(|| format!("phase {phase:?} is not in [rollout] order"))?;
        self.order
            .get(i + 1)
            .map(String::as_str)
            .ok_or_else(|| format!("{phase} is the last phase: nothing to promote to"))
    }

    /// Whether `name` is a phase of this config.
    pub fn has(&self, name: &str) -> bool {
        self.phases.contains_key(name)
    }

    /// `Ok` when `name` is a phase of this config; else why not, listing the phases.
    pub fn check_phase(&self, name: &str) -> Result<(), String> {
        if self.has(name) {
            return Ok(());
        }
        let known: Vec<&str> = self.phases.keys().map(String::as_str).collect();
        Err(format!(
            "no phase named {name:?} (phases: {})",
            known.join(", ")
        ))
    }

    /// The accounts of `names` that `phase` serves from the candidate (the cohort's size).
    pub fn cohort_size<'a>(&self, phase: &str, names: impl Iterator<Item = &'a str>) -> usize {
        names.filter(|a| self.account_served(phase, a)).count()
    }

    /// Whether `phase` serves this account from the candidate (on a route that serves).
    pub fn account_served(&self, phase: &str, account: &str) -> bool {
        let Some(def) = self.phases.get(phase) else {
            return false;
        };
        if phase == ROLLBACK || phase == SHADOW || self.pin_legacy.contains(account) {
            return false;
        }
        if self.pin_candidate.contains(account) {
            return true;
        }
        in_cohort(&self.salt, account, def.percent)
    }
}

/// An account's bucket in `0..BUCKETS`: xxh3-64 of the salt, a zero byte and the account name
/// (stable across versions and machines: xxh3 is a fixed algorithm).
pub fn bucket(salt: &str, account: &str) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(salt.as_bytes());
    h.update(&[0]);
    h.update(account.as_bytes());
    (h.digest() % u64::from(BUCKETS)) as u32
}

/// Whether an account is in the cohort of a phase serving `percent` % of accounts.
pub fn in_cohort(salt: &str, account: &str, percent: f64) -> bool {
    let limit = (percent * f64::from(BUCKETS) / 100.0).round();
    f64::from(bucket(salt, account)) < limit
}

/// The z score of a two-sided interval at `confidence` (0.95 → 1.96).
pub fn z_score(confidence: f64) -> f64 {
    inverse_normal(1.0 - (1.0 - confidence) / 2.0)
}

/// Wilson score interval of `k` successes in `n` trials (`None` for `n = 0`).
pub fn wilson(k: u64, n: u64, confidence: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = z_score(confidence);
    let n = n as f64;
    let p = k.min(n as u64) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9),
/// for `p` in (0, 1).
fn inverse_normal(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The phase in force in this process.
#[derive(Debug, Clone)]
pub struct Active {
    pub phase: Arc<str>,
    /// The store's id of the change that set it (0: the config's phase, nothing stored yet).
    pub seq: i64,
    pub since: SystemTime,
    /// Who set it (`config`, `api`, `cli`, `reload`, `guard`, ...).
    pub by: String,
}

/// What the rollout needs of a route that serves the request's method.
#[derive(Debug, Clone, Copy)]
pub struct RouteServing {
    pub deadline: Duration,
    pub unknown_account: UnknownAccount,
}

/// How the rollout treats one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub phase: Arc<str>,
    /// Served by the candidate (unless it falls back).
    pub cohort: bool,
    /// Legacy is called too (the fallback and the comparison).
    pub call_legacy: bool,
    /// The candidate's answer is served only when it equals legacy's (strict comparison).
    pub verify: bool,
    pub deadline: Duration,
}

/// The rollout's state in this process: the phase in force and the guard's window.
pub struct Rollout {
    active: RwLock<Arc<Active>>,
    pub window: Window,
    /// Times the guard has judged the window (it runs every `[rollout.guard] every`).
    pub checks: std::sync::atomic::AtomicU64,
}

impl Rollout {
    pub fn new(cfg: &RolloutConfig) -> Self {
        Self {
            active: RwLock::new(Arc::new(Active {
                phase: cfg.phase.as_str().into(),
                seq: 0,
                since: SystemTime::now(),
                by: "config".into(),
            })),
            window: Window::default(),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a phase in force from the next request on; the guard's window starts again when
    /// the phase changes. Returns the phase it replaced.
    pub fn set(&self, phase: &str, seq: i64, by: &str) -> Arc<str> {
        let mut a = self
            .active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = a.phase.clone();
        let changed = &*old != phase;
        *a = Arc::new(Active {
            phase: phase.into(),
            seq,
            since: if changed { SystemTime::now() } else { a.since },
            by: by.to_owned(),
        });
        drop(a);
        if changed {
            self.window.clear();
            tracing::warn!(from = &*old, to = phase, by, "rollout phase changed");
        }
        old
    }

    /// Sets the rollout gauges for the phase in force (after a change or a reload).
    pub fn publish(
        &self,
        cfg: &RolloutConfig,
        old: Option<&str>,
        accounts: Option<&crate::translate::Accounts>,
    ) {
        let active = self.active();
        let phase = active.phase.clone();
        let percent = cfg.phases.get(&*phase).map_or(0.0, |d| d.percent);
        let size = accounts.map(|a| cfg.cohort_size(&phase, a.names()));
        crate::telemetry::rollout_phase(old, &phase, percent, size);
        crate::telemetry::rollout_by_guard(active.by == "guard");
    }

    /// How the phase in force treats a request from `account` (`None`: unknown) on a route
    /// (`None`: unmatched, or a route that does not serve this method).
    pub fn plan(
        &self,
        cfg: &RolloutConfig,
        route: Option<RouteServing>,
        account: Option<&str>,
    ) -> Plan {
        let active = self.active();
        let phase = active.phase.clone();
        let legacy_only = |phase| Plan {
            phase,
            cohort: false,
            call_legacy: true,
            verify: false,
            deadline: Duration::ZERO,
        };
        let Some(route) = route else {
            return legacy_only(phase);
        };
        let Some(def) = cfg.phases.get(&*phase) else {
            return legacy_only(phase);
        };
        let cohort = match account {
            Some(a) => cfg.account_served(&phase, a),
            None => {
                route.unknown_account == UnknownAccount::Candidate
                    && def.percent > 0.0
                    && &*phase != ROLLBACK
            }
        };
        let call_legacy = !cohort
            || def.legacy_sample >= 1.0
            || (def.legacy_sample > 0.0
                && ((crate::record::random_u64() >> 11) as f64 / (1u64 << 53) as f64)
                    < def.legacy_sample);
        Plan {
            phase,
            cohort,
            call_legacy,
            verify: def.verify,
            deadline: route.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_scores() {
        assert!((z_score(0.95) - 1.959_964).abs() < 1e-5);
        assert!((z_score(0.99) - 2.575_829).abs() < 1e-5);
        assert!((z_score(0.999_999) - 4.891_638).abs() < 1e-4);
    }

    #[test]
    fn wilson_intervals() {
        assert_eq!(wilson(0, 0, 0.95), None);
        // 95/100: (0.888, 0.978), the textbook figures.
        let (lo, hi) = wilson(95, 100, 0.95).unwrap();
        assert!(
            (lo - 0.8882).abs() < 1e-3 && (hi - 0.9785).abs() < 1e-3,
            "{lo} {hi}"
        );
        // Everything or nothing still leaves room on one side.
        let (lo, hi) = wilson(10, 10, 0.95).unwrap();
        assert!(lo < 0.75 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = wilson(0, 10, 0.95).unwrap();
        assert!(lo == 0.0 && hi > 0.25, "{lo} {hi}");
    }

    /// Buckets as the first rollout version computed them: xxh3-64(salt, 0, account) mod 10,000.
    const PINNED_BUCKETS: [u32; 3] = [1234, 6, 178];

    #[test]
    fn cohorts_only_grow_with_the_share() {
        let accounts: Vec<String> = (0..2000).map(|i| format!("acct-{i}")).collect();
        let members = |p: f64| -> HashSet<&str> {
            accounts
                .iter()
                .map(String::as_str)
                .filter(|a| in_cohort("salt", a, p))
                .collect()
        };
        let five = members(5.0);
        let quarter = members(25.0);
        assert!(five.is_subset(&quarter));
        assert!((60..=140).contains(&five.len()), "{}", five.len());
        assert_eq!(members(0.0).len(), 0);
        assert_eq!(members(100.0).len(), accounts.len());
        // Another salt, another cohort.
        let other: HashSet<&str> = accounts
            .iter()
            .map(String::as_str)
            .filter(|a| in_cohort("pepper", a, 5.0))
            .collect();
        assert_ne!(five, other);
        // The hash is fixed: these values must never change (an upgrade would move accounts
        // between vendors mid-migration).
        assert_eq!(
            [
                bucket("shadowdiff", "acme"),
                bucket("test-salt", "acct-41"),
                bucket("", "é✓")
            ],
            PINNED_BUCKETS
        );
    }

    #[test]
    fn pins_and_rollback() {
        let mut cfg = RolloutConfig::default();
        cfg.pin_candidate.insert("dogfood".into());
        cfg.pin_legacy.insert("bigco".into());
        assert!(!cfg.account_served("shadow", "dogfood"));
        assert!(cfg.account_served("canary", "dogfood"));
        assert!(!cfg.account_served("rollback", "dogfood"));
        assert!(!cfg.account_served("ga", "bigco"));
        assert!(cfg.account_served("ga", "anyone"));
        assert_eq!(cfg.next("shadow").unwrap(), "canary");
        assert_eq!(cfg.next("rollback").unwrap(), "shadow");
        assert!(cfg.next("ga").unwrap_err().contains("last phase"));
    }
}
