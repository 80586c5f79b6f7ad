//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! Labels are bounded: route names come from the config (`(unmatched)` otherwise), outcomes and
//! reasons from fixed sets; never raw paths, accounts or field names.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `shadowdiff_requests_total` | counter | `route`, `outcome` (the exchange outcomes of `record::Outcome`, or `not_mirrored`) |
//! | `shadowdiff_upstream_duration_seconds` | histogram | `upstream` (`legacy`, `candidate`), `route` |
//! | `shadowdiff_shadow_dropped_total` | counter | `reason` (`overload`, `rate_limited`, `max_rps`, `template`, `too_large`, `caller_aborted`, `unsafe_path`, `memory`, `store_queue_full`, `store_write_failed` for noise samples) |
//! | `shadowdiff_store_queue_depth` | gauge | |
//! | `shadowdiff_store_write_duration_seconds` | histogram | |
//! | `shadowdiff_mapping_errors_total` | counter | `route` |
//! | `shadowdiff_store_lost_total` | counter | |
//! | `shadowdiff_bodies_total` | counter | `decision` (`example`, `sample`, `not_sampled`, `over_budget`, `not_eligible`) |
//! | `shadowdiff_internal_errors_total` | counter | `stage` |
//! | `shadowdiff_connections` | gauge | `listener` (`proxy`, `admin`) |
//! | `shadowdiff_connection_limit_reached_total` | counter | `listener` |
//! | `shadowdiff_served_total` | counter | `served_by` (`legacy`, `candidate`, `none`: the caller left first), `phase` (the configured phases) |
//! | `shadowdiff_caller_aborted_total` | counter | `route`: requests whose caller went away before its answer was decided (each recorded, `served_by = none`) |
//! | `shadowdiff_fallbacks_total` | counter | `reason` (`record::Fallback`) |
//! | `shadowdiff_rollout_phase` | gauge | `phase`: 1 for the phase in force, 0 for the one it replaced |
//! | `shadowdiff_rollout_by_guard` | gauge | 1 when the guard put the phase in force (automatic rollback or promotion), 0 when a person or the config did |
//! | `shadowdiff_rollout_cohort_percent` | gauge | share of accounts the phase in force serves from the candidate |
//! | `shadowdiff_rollout_cohort_accounts` | gauge | accounts of the accounts file the phase in force serves from the candidate |
//! | `shadowdiff_build_info` | gauge | `version` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`, `process_start_time_seconds`, ... | | the process ([`metrics_process`], as Prometheus' Go client names them) |
//!
//! Every counter is registered at zero for each value of its labels known at start (routes and
//! phases from the config, outcomes and reasons from their fixed sets), so a dashboard's
//! `rate()` and an alert's ratio have a series before the first event. The upstream histogram's
//! buckets reach the longest configured upstream timeout.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::record::{Outcome, Record, RouteKey};

/// Histogram buckets (seconds): sub-millisecond loopback to slow vendors.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process metrics' collector (read on each scrape).
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// [`BUCKETS`], then doubling, up to `max` seconds (the last bucket is `max` itself): a
/// candidate that answers at its timeout lands in a bucket, not only in `+Inf`.
pub fn buckets_to(max: f64) -> Vec<f64> {
    let mut b = BUCKETS.to_vec();
    let mut last = BUCKETS[BUCKETS.len() - 1];
    while last < max && b.len() < 40 {
        last = (last * 2.0).min(max);
        b.push(last);
    }
    b
}

/// Installs the process-wide recorder with the upstream buckets reaching 10 s.
pub fn install() -> Option<&'static PrometheusHandle> {
    install_with(std::time::Duration::from_secs(10))
}

/// Installs the process-wide recorder (once: later calls reuse it, whatever their timeout),
/// the upstream histogram's buckets reaching `upstream_timeout`. `None` when another recorder
/// was installed first.
pub fn install_with(upstream_timeout: std::time::Duration) -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            use metrics_exporter_prometheus::Matcher;
            let builder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("shadowdiff_upstream_duration_seconds".into()),
                    &buckets_to(upstream_timeout.as_secs_f64()),
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            let process = PROCESS.get_or_init(metrics_process::Collector::default);
            process.describe();
            process.collect();
            metrics::gauge!("shadowdiff_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            register_fixed();
            // Histograms keep every sample until upkeep drains them into their buckets. Without
            // a scrape nothing else does: the soak run grew by ~0.1 MiB/s at 4,400 req/s.
            let h = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    h.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms grow until /metrics is scraped");
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "shadowdiff_id_conflicts_total",
        "Observations that contradicted a pair of the id crosswalk (the pair held stays)"
    );
    metrics::describe_counter!(
        "shadowdiff_id_pairs_total",
        "Pairs the id crosswalk learned, by kind"
    );
    metrics::describe_counter!(
        "shadowdiff_requests_total",
        "Caller requests by route and outcome"
    );
    metrics::describe_histogram!(
        "shadowdiff_upstream_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the upstream's answer (legacy: response head; candidate: whole body)"
    );
    metrics::describe_counter!(
        "shadowdiff_shadow_dropped_total",
        "Exchanges not mirrored or not stored, by reason"
    );
    metrics::describe_gauge!(
        "shadowdiff_store_queue_depth",
        "Exchanges waiting for the store writer"
    );
    metrics::describe_histogram!(
        "shadowdiff_store_write_duration_seconds",
        metrics::Unit::Seconds,
        "Time to write one batch to SQLite"
    );
    metrics::describe_counter!(
        "shadowdiff_legacy_secondary_calls_total",
        "Second legacy calls made to learn noise ([diff.noise]); they spend legacy quota"
    );
    metrics::describe_counter!(
        "shadowdiff_store_lost_total",
        "Exchanges lost because the store could not write them"
    );
    metrics::describe_counter!(
        "shadowdiff_bodies_total",
        "Compared exchanges by whether their bodies were kept ([store] body_examples, body_sample, body_budget)"
    );
    metrics::describe_counter!(
        "shadowdiff_internal_errors_total",
        "Panics caught in shadow work, by stage (each exchange is recorded as internal_error)"
    );
    metrics::describe_gauge!(
        "shadowdiff_connections",
        "Caller connections open, by listener"
    );
    metrics::describe_counter!(
        "shadowdiff_connection_limit_reached_total",
        "Times a listener stopped accepting because its connection cap was reached"
    );
    metrics::describe_counter!(
        "shadowdiff_served_total",
        "Recorded requests by the vendor that answered the caller and the rollout phase"
    );
    metrics::describe_counter!(
        "shadowdiff_caller_aborted_total",
        "Requests whose caller went away before its answer was decided (recorded with served_by = none)"
    );
    metrics::describe_counter!(
        "shadowdiff_fallbacks_total",
        "Requests of the candidate cohort answered by legacy, by reason"
    );
    metrics::describe_gauge!(
        "shadowdiff_build_info",
        "Always 1; the version label says which shadowdiff this is"
    );
    metrics::describe_counter!(
        "shadowdiff_webhook_deliveries_total",
        "Webhook delivery attempts by outcome (delivered, failed and retried, dead)"
    );
    metrics::describe_gauge!(
        "shadowdiff_accounts",
        "Accounts with a health row by state, as the store held them after the last change (needs_reauth: candidate 401/403 in a row)"
    );
    metrics::describe_counter!(
        "shadowdiff_account_health_changes_total",
        "Changes of account health this instance wrote, by the state entered"
    );
    metrics::describe_gauge!(
        "shadowdiff_quota_remaining_ratio",
        "Remaining share of the vendor's rate-limit quota, as the latest response stated it"
    );
    metrics::describe_gauge!(
        "shadowdiff_rollout_phase",
        "1 for the rollout phase in force"
    );
    metrics::describe_gauge!(
        "shadowdiff_rollout_by_guard",
        "1 when the guard put the phase in force, 0 when a person or the config did"
    );
    metrics::describe_gauge!(
        "shadowdiff_rollout_cohort_percent",
        "Share of accounts the phase in force serves from the candidate"
    );
    metrics::describe_gauge!(
        "shadowdiff_rollout_cohort_accounts",
        "Accounts of the accounts file the phase in force serves from the candidate"
    );
    metrics::describe_counter!(
        "shadowdiff_mapping_errors_total",
        "Exchanges whose mapping failed, by route"
    );
}

/// The exposition text, for `/metrics`.
pub fn render() -> String {
    match install() {
        Some(h) => {
            if let Some(p) = PROCESS.get() {
                p.collect();
            }
            h.run_upkeep();
            h.render()
        }
        None => String::from("# metrics recorder unavailable\n"),
    }
}

/// The `route` label of an exchange.
pub fn route_label(route: Option<&str>) -> String {
    RouteKey::from_route(route).label().to_owned()
}

/// Counts a request that was forwarded to legacy only.
pub fn not_mirrored(route: Option<&str>) {
    metrics::counter!("shadowdiff_requests_total", "route" => route_label(route), "outcome" => "not_mirrored").increment(1);
}

/// Legacy's latency for one request.
pub fn legacy_latency(route: Option<&str>, ms: f64) {
    metrics::histogram!("shadowdiff_upstream_duration_seconds", "upstream" => "legacy", "route" => route_label(route))
        .record(ms / 1000.0);
}

/// Counts an exchange on its way to the store (outcome, candidate latency, skip reasons).
pub fn exchange(r: &Record) {
    let route = route_label(r.meta.route.as_deref());
    metrics::counter!("shadowdiff_requests_total", "route" => route.clone(), "outcome" => r.outcome.as_str())
        .increment(1);
    if let Some(ms) = r
        .candidate_ms
        .filter(|_| r.candidate_status.is_some() || r.outcome == Outcome::CandidateTimeout)
    {
        metrics::histogram!("shadowdiff_upstream_duration_seconds", "upstream" => "candidate", "route" => route.clone())
            .record(ms / 1000.0);
    }
    let serving = &r.meta.serving;
    if let Some(phase) = &serving.phase {
        metrics::counter!("shadowdiff_served_total", "served_by" => serving.served_by.as_str(), "phase" => phase.to_string())
            .increment(1);
    }
    if let Some(f) = serving.fallback {
        metrics::counter!("shadowdiff_fallbacks_total", "reason" => f.as_str()).increment(1);
    }
    if serving.served_by == crate::record::ServedBy::Nobody {
        metrics::counter!("shadowdiff_caller_aborted_total", "route" => route.clone()).increment(1);
    }
    match r.outcome {
        Outcome::Skipped(why) => dropped(why.as_str()),
        Outcome::TooLarge if r.candidate_ms.is_none() => dropped(Outcome::TooLarge.as_str()),
        Outcome::MappingError => {
            metrics::counter!("shadowdiff_mapping_errors_total", "route" => route).increment(1);
        }
        _ => {}
    }
}

/// Whether a compared exchange's bodies were kept (`[store] body_*`).
pub fn bodies(decision: &'static str) {
    metrics::counter!("shadowdiff_bodies_total", "decision" => decision).increment(1);
}

/// The `reason` of an exchange stored without its details (differences, bodies) because the
/// memory budget could not hold them while it waited for the store.
pub const DETAILS_OVER_BUDGET: &str = "details_over_budget";

/// A shadow-leg breaker opened (`opened`) or closed (the breaker module).
pub fn breaker(vendor: &'static str, opened: bool) {
    metrics::counter!("shadowdiff_breaker_transitions_total", "vendor" => vendor, "to" => if opened { "open" } else { "closed" })
        .increment(1);
}

/// An observation contradicted a stored pair of the id crosswalk.
pub fn id_conflict() {
    metrics::counter!("shadowdiff_id_conflicts_total").increment(1);
}

/// The id crosswalk learned `n` pairs of a kind (kinds come from the config only).
pub fn id_pairs(kind: &str, n: u64) {
    metrics::counter!("shadowdiff_id_pairs_total", "kind" => kind.to_owned()).increment(n);
}

/// Counts one dropped exchange.
pub fn dropped(reason: &'static str) {
    metrics::counter!("shadowdiff_shadow_dropped_total", "reason" => reason).increment(1);
}

/// One second legacy call for noise learning (`[diff.noise]`): legacy quota spent.
pub fn secondary_call() {
    metrics::counter!("shadowdiff_legacy_secondary_calls_total").increment(1);
}

/// The remaining share of a vendor's quota a response stated (the latest, of any account:
/// per-account values would make a label per account).
pub fn quota_share(vendor: &'static str, share: f64) {
    metrics::gauge!("shadowdiff_quota_remaining_ratio", "vendor" => vendor).set(share);
}

/// A webhook delivery attempt: `delivered`, `failed` (tried again later) or `dead`.
pub fn webhook(outcome: &'static str) {
    metrics::counter!("shadowdiff_webhook_deliveries_total", "outcome" => outcome).increment(1);
}

/// An account's health changed: counted by the state it entered (never by account).
pub fn account_health_change(to: &str) {
    let to = if to == "needs_reauth" {
        "needs_reauth"
    } else {
        "ok"
    };
    metrics::counter!("shadowdiff_account_health_changes_total", "to" => to).increment(1);
}

/// Accounts per health state, as the store holds them.
pub fn account_states(ok: u64, needs_reauth: u64) {
    metrics::gauge!("shadowdiff_accounts", "state" => "ok").set(ok as f64);
    metrics::gauge!("shadowdiff_accounts", "state" => "needs_reauth").set(needs_reauth as f64);
}

/// The store writer's queue depth.
pub fn queue_depth(n: u64) {
    metrics::gauge!("shadowdiff_store_queue_depth").set(n as f64);
}

/// One batch written.
/// Exchanges lost because the store could not write them.
pub fn store_lost(n: u64) {
    metrics::counter!("shadowdiff_store_lost_total").increment(n);
}

/// A panic caught in shadow work (the exchange is recorded as `internal_error`).
pub fn panic_caught(stage: &'static str) {
    metrics::counter!("shadowdiff_internal_errors_total", "stage" => stage).increment(1);
}

/// Caller connections open on a listener, and refusals at its cap.
pub fn connections(listener: &'static str, open: usize) {
    metrics::gauge!("shadowdiff_connections", "listener" => listener).set(open as f64);
}

/// A connection waited for a free slot (`[proxy] max_connections` reached).
pub fn connection_limit_reached(listener: &'static str) {
    metrics::counter!("shadowdiff_connection_limit_reached_total", "listener" => listener)
        .increment(1);
}

/// A request refused with 503: the listener had as many requests in flight as its cap
/// (HTTP/2 streams past it).
pub fn requests_refused(listener: &'static str) {
    metrics::counter!("shadowdiff_requests_refused_total", "listener" => listener).increment(1);
}

/// A connection with no request in flight was closed to make room at the cap.
pub fn connection_evicted(listener: &'static str) {
    metrics::counter!("shadowdiff_connections_evicted_total", "listener" => listener).increment(1);
}

pub fn store_write(seconds: f64) {
    metrics::histogram!("shadowdiff_store_write_duration_seconds").record(seconds);
}

/// Whether the guard put the phase in force (a rollback or promotion on evidence) rather than a
/// person or the config (a drill, a deliberate change).
pub fn rollout_by_guard(guard: bool) {
    metrics::gauge!("shadowdiff_rollout_by_guard").set(if guard { 1.0 } else { 0.0 });
}

/// The rollout phase in force changed (`old` is `None` at start-up).
pub fn rollout_phase(old: Option<&str>, new: &str, percent: f64, accounts: Option<usize>) {
    if let Some(old) = old.filter(|o| *o != new) {
        metrics::gauge!("shadowdiff_rollout_phase", "phase" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("shadowdiff_rollout_phase", "phase" => new.to_owned()).set(1.0);
    metrics::gauge!("shadowdiff_rollout_cohort_percent").set(percent);
    if let Some(n) = accounts {
        metrics::gauge!("shadowdiff_rollout_cohort_accounts").set(n as f64);
    }
}

/// The `decision` label of `shadowdiff_bodies_total` (`shadow::sample::Decision`).
pub const BODY_DECISIONS: &[&str] = &[
    "example",
    "sample",
    "not_sampled",
    "over_budget",
    "not_eligible",
];

/// The series whose labels come from fixed sets, at zero.
fn register_fixed() {
    use crate::record::{Fallback, SkipReason};
    for reason in SkipReason::ALL.iter().map(|r| r.as_str()).chain([
        "too_large",
        "store_queue_full",
        "store_write_failed",
        DETAILS_OVER_BUDGET,
    ]) {
        metrics::counter!("shadowdiff_shadow_dropped_total", "reason" => reason).absolute(0);
    }
    for reason in Fallback::NAMES {
        metrics::counter!("shadowdiff_fallbacks_total", "reason" => *reason).absolute(0);
    }
    for d in BODY_DECISIONS {
        metrics::counter!("shadowdiff_bodies_total", "decision" => *d).absolute(0);
    }
    for stage in ["candidate", "compare"] {
        metrics::counter!("shadowdiff_internal_errors_total", "stage" => stage).absolute(0);
    }
    for listener in ["proxy", "admin"] {
        metrics::counter!("shadowdiff_connection_limit_reached_total", "listener" => listener)
            .absolute(0);
        metrics::gauge!("shadowdiff_connections", "listener" => listener).set(0.0);
    }
    for outcome in ["delivered", "failed", "dead"] {
        metrics::counter!("shadowdiff_webhook_deliveries_total", "outcome" => outcome).absolute(0);
    }
    for to in ["ok", "needs_reauth"] {
        metrics::counter!("shadowdiff_account_health_changes_total", "to" => to).absolute(0);
    }
    metrics::counter!("shadowdiff_store_lost_total").absolute(0);
    metrics::counter!("shadowdiff_legacy_secondary_calls_total").absolute(0);
    metrics::gauge!("shadowdiff_store_queue_depth").set(0.0);
    account_states(0, 0);
    let _ = metrics::histogram!("shadowdiff_store_write_duration_seconds");
}

/// Registers the per-route and per-phase series at zero, so dashboards see them before the
/// first event (again after a reload that adds routes).
pub fn register_routes<'a>(routes: impl Iterator<Item = &'a str>) {
    let outcomes = Outcome::NAMES.iter().copied().chain(["not_mirrored"]);
    let outcomes: Vec<&'static str> = outcomes.collect();
    let mut labels: Vec<String> = routes.map(str::to_owned).collect();
    labels.push(crate::record::UNMATCHED.to_owned());
    for r in labels {
        metrics::counter!("shadowdiff_mapping_errors_total", "route" => r.clone()).absolute(0);
        metrics::counter!("shadowdiff_caller_aborted_total", "route" => r.clone()).absolute(0);
        for o in &outcomes {
            metrics::counter!("shadowdiff_requests_total", "route" => r.clone(), "outcome" => *o)
                .absolute(0);
        }
        for upstream in ["legacy", "candidate"] {
            let _ = metrics::histogram!("shadowdiff_upstream_duration_seconds", "upstream" => upstream, "route" => r.clone());
        }
    }
}

/// Registers the rollout's per-phase series at zero.
pub fn register_phases<'a>(phases: impl Iterator<Item = &'a str>) {
    for phase in phases {
        for by in ["legacy", "candidate", "none"] {
            metrics::counter!("shadowdiff_served_total", "served_by" => by, "phase" => phase.to_owned())
                .absolute(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_reach_the_timeout() {
        assert_eq!(buckets_to(5.0), BUCKETS.to_vec());
        let b = buckets_to(30.0);
        assert_eq!(&b[b.len() - 2..], &[20.0, 30.0]);
        let b = buckets_to(300.0);
        assert_eq!(b.last(), Some(&300.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert!(buckets_to(f64::INFINITY).len() <= 40);
    }
}
