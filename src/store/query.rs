//! The store's query API: what reports, the classification, the gate, the admin API and the
//! command line read, as typed rows. [`Reader`] is the seam between them and a storage engine;
//! each engine implements it in its folder (`sqlite/reader.rs`, `postgres/reader.rs`). The rows are raw: aggregation beyond SQL's
//! (parity, classes, percentiles) belongs to the callers, so a second engine implements these
//! queries once and every report follows.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use crate::record::RouteKey;

/// The exchanges a query reads.
#[derive(Debug, Clone)]
pub struct Filter {
    pub from: SystemTime,
    /// Exclusive.
    pub to: SystemTime,
    pub route: Option<RouteKey>,
    pub account: Option<String>,
    /// Only exchanges compared with this mapping version.
    pub mapping_version: Option<String>,
}

impl Filter {
    /// Every exchange of the last `d`.
    pub fn since(d: std::time::Duration) -> Self {
        Self {
            from: crate::record::ago(d),
            to: SystemTime::now() + std::time::Duration::from_secs(1),
            route: None,
            account: None,
            mapping_version: None,
        }
    }
}

/// What [`Reader::outcome_counts`] groups by besides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Route,
    Account,
}

/// Exchanges with one outcome for one route or account (`key`: `None` for unmatched requests or
/// exchanges without an account).
#[derive(Debug, Clone)]
pub struct OutcomeCount {
    pub key: Option<String>,
    /// An [`Outcome`](crate::record::Outcome) name.
    pub outcome: String,
    pub n: u64,
}

/// Noise-only exchanges (outcome `diff`, every difference at a learned noise field) of one
/// (route, account).
#[derive(Debug, Clone)]
pub struct NoiseOnly {
    pub route: RouteKey,
    pub account: Option<String>,
    pub n: u64,
}

/// Which side's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Legacy,
    Candidate,
}

/// One differing (field pattern, kind) over the filtered exchanges.
#[derive(Debug, Clone)]
pub struct FieldRow {
    pub field: String,
    pub kind: String,
    /// Difference rows (an array field can differ several times in one exchange).
    pub count: u64,
    /// Exchanges with this difference.
    pub exchanges: u64,
    /// The first such exchange.
    pub example_id: i64,
}

/// One mapping version seen in the window.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: String,
    pub first_seen: String,
    pub last_seen: String,
    pub compared: u64,
    pub matched: u64,
}

/// Compared and matched exchanges of one UTC day (`2026-11-29`).
#[derive(Debug, Clone)]
pub struct DayRow {
    pub day: String,
    pub compared: u64,
    pub matched: u64,
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

/// An exchange as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRow {
    pub id: i64,
    pub started_at: String,
    pub route: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub account: Option<String>,
    pub legacy_status: Option<i64>,
    pub candidate_status: Option<i64>,
    pub outcome: String,
    pub diff_count: i64,
    pub reason: Option<String>,
    /// The response mappings' version the exchange was compared with.
    pub mapping_version: Option<String>,
}

/// Which of the window's exchanges [`Reader::exchanges`] lists, newest first.
#[derive(Debug, Clone, Default)]
pub struct ExchangeQuery {
    /// One outcome (`diff`, `match`, ...).
    pub outcome: Option<String>,
    /// Only exchanges that differed at this field pattern (on the filter's route).
    pub field: Option<String>,
    pub limit: usize,
}

/// Per account, route, field pattern and kind: the exchanges that differed there in the
/// window, first and last seen.
#[derive(Debug, Clone, Serialize)]
pub struct FieldAccountRow {
    pub account: Option<String>,
    pub route: Option<String>,
    pub field: String,
    pub kind: String,
    pub exchanges: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// One exchange with its timings and stored differences.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeDetail {
    #[serde(flatten)]
    pub exchange: ExchangeRow,
    pub legacy_ms: Option<f64>,
    pub candidate_ms: Option<f64>,
    pub request_id: Option<String>,
    /// Who answered the caller (`legacy`, `candidate`), the rollout phase then, and why a
    /// request of the candidate's cohort was answered by legacy.
    pub served_by: Option<String>,
    pub phase: Option<String>,
    pub fallback: Option<String>,
    pub differences: Vec<DiffRow>,
}

/// One stored difference; the values are JSON (`None`: absent on that side, or unreadable).
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub pointer: String,
    pub field: String,
    pub kind: String,
    pub legacy: Option<Value>,
    pub candidate: Option<Value>,
}

/// One side of an exchange as kept (`[store] bodies`): status, headers (redacted, a JSON object)
/// and the body text (mapped and redacted; `None` when it was not JSON).
#[derive(Debug, Clone)]
pub struct KeptSide {
    pub status: Option<u16>,
    pub headers: Option<String>,
    pub body: Option<String>,
}

/// An exchange with what was kept of its two responses.
#[derive(Debug, Clone)]
pub struct KeptExchange {
    pub route: Option<String>,
    pub diff_count: u64,
    pub legacy: Option<KeptSide>,
    pub candidate: Option<KeptSide>,
    /// The documents as they came, for a side a mapping reshaped.
    pub legacy_raw: Option<KeptSide>,
    pub candidate_raw: Option<KeptSide>,
}

/// A compared exchange whose bodies were kept, as `rediff` reads it.
#[derive(Debug, Clone)]
pub struct KeptPair {
    pub id: i64,
    pub started_at: String,
    pub route: Option<String>,
    pub account: Option<String>,
    /// `match` or `diff`.
    pub outcome: String,
    pub mapping_version: Option<String>,
    /// The kept sides by name (`legacy`, `candidate`, `legacy_raw`, `candidate_raw`).
    pub sides: Vec<(String, KeptSide)>,
    /// The recorded differences: (field pattern, kind, how many).
    pub fields: Vec<(String, String, u64)>,
}

impl KeptPair {
    /// One kept side.
    pub fn side(&self, name: &str) -> Option<&KeptSide> {
        self.sides.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// What shadow traffic spent of the vendors' quotas in a window, and what it held back.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Spend {
    /// Candidate calls made for comparison only (not served to a caller).
    pub candidate_calls: u64,
    /// Exchanges not mirrored to leave a quota alone: `quota_reserve`, `rate_limited`.
    pub held_back: std::collections::BTreeMap<String, u64>,
}

/// Requests of the candidate cohort with one (served by, fallback reason, outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortCount {
    /// `candidate` or `legacy` (a fallback).
    pub served_by: String,
    pub fallback: Option<String>,
    /// The outcome (a cohort's exchanges are compared by the served rules: strict).
    pub outcome: String,
    pub n: u64,
}

/// A stored difference's legacy and candidate values, as stored JSON text.
pub type ExampleValues = (Option<String>, Option<String>);

/// The read side of a store.
pub trait Reader {
    /// Exchanges per (`by`, outcome) in the window, zero counts left out.
    fn outcome_counts(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError>;

    /// Noise-only exchanges per (route, account) in the window: outcome `diff` with every
    /// difference at a field that differed at least `min_count` times between two legacy answers.
    fn noise_only(&self, f: &Filter, min_count: u64) -> Result<Vec<NoiseOnly>, StoreError>;

    /// One side's latencies (ms) of the filtered exchanges, sorted; with `step > 1` only those
    /// whose id is a multiple of `step` (an even, deterministic sample).
    fn latencies(&self, f: &Filter, side: Side, step: u64) -> Result<Vec<f64>, StoreError>;

    /// One side's latency histogram (per [`super::latency_bucket`]) of the filtered exchanges,
    /// from the hourly roll-ups; `None` when they cannot answer the filter (an account or a
    /// mapping version named, a window without a whole hour, rows the roll-ups do not cover).
    fn latency_histogram(
        &self,
        f: &Filter,
        side: Side,
    ) -> Result<Option<super::Histogram>, StoreError>;

    /// The differing (field pattern, kind) pairs of the filtered exchanges.
    fn fields(&self, f: &Filter) -> Result<Vec<FieldRow>, StoreError>;

    /// The first stored difference of an exchange at a field and kind, as stored JSON text
    /// (`None` when past the stored rows).
    fn example(
        &self,
        exchange_id: i64,
        field: &str,
        kind: &str,
    ) -> Result<Option<ExampleValues>, StoreError>;

    /// The mapping versions of the filtered exchanges, oldest first.
    fn mapping_versions(&self, f: &Filter) -> Result<Vec<VersionRow>, StoreError>;

    /// Compared and matched exchanges per bucket of `bucket_secs` (UTC days for 86,400:
    /// `2026-11-29`; otherwise the bucket's start, `2026-11-29T13:15Z`), in order.
    fn trend(&self, f: &Filter, bucket_secs: u64) -> Result<Vec<DayRow>, StoreError>;

    /// The filtered exchanges, newest first (see [`ExchangeQuery`]).
    fn exchanges(&self, f: &Filter, q: &ExchangeQuery) -> Result<Vec<ExchangeRow>, StoreError>;

    /// Differing exchanges per (account, route, field pattern, kind) in the window; one field
    /// pattern's only with `field`; over the window's latest `latest` exchanges only when it has
    /// more (`0`: all; a join per difference row costs ~9 s over 1M exchanges and 3.3M rows).
    fn field_accounts(
        &self,
        f: &Filter,
        field: Option<&str>,
        latest: usize,
    ) -> Result<Vec<FieldAccountRow>, StoreError>;

    /// Fields learned as noise on a route (differed at least `min_count` times), most frequent
    /// first.
    fn learned_noise(
        &self,
        route: &RouteKey,
        min_count: u64,
    ) -> Result<Vec<NoiseField>, StoreError>;

    /// Compared exchanges per field pattern where the field was present, over the hours that
    /// overlap `[from, to]`.
    fn presence(
        &self,
        route: &RouteKey,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<HashMap<String, u64>, StoreError>;

    /// The latest exchanges, newest first, optionally with one outcome.
    fn latest(&self, outcome: Option<&str>, limit: usize) -> Result<Vec<ExchangeRow>, StoreError>;

    /// An exchange's route, difference count and kept responses (`None`: no such exchange).
    fn kept_exchange(&self, id: i64) -> Result<Option<KeptExchange>, StoreError>;

    /// The compared exchanges of the window that kept bodies, in id order after `after_id`,
    /// `limit` at most, with their kept sides and recorded differences (`rediff` pages through
    /// a window with it).
    fn kept_pairs(
        &self,
        f: &Filter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<KeptPair>, StoreError>;

    /// One exchange with up to `max_diffs` of its stored differences, in order.
    fn exchange(&self, id: i64, max_diffs: usize) -> Result<Option<ExchangeDetail>, StoreError>;

    /// The candidate cohort's requests in the window (served by the candidate, or fallen back
    /// to legacy) per (served by, fallback reason).
    fn cohort_counts(&self, f: &Filter) -> Result<Vec<CohortCount>, StoreError>;

    /// What shadow traffic spent of the candidate's quota in the window, and held back.
    fn shadow_spend(&self, f: &Filter) -> Result<Spend, StoreError>;

    /// The webhook outbox: per endpoint counts, and the last `limit` dead deliveries.
    fn webhook_status(
        &self,
        limit: usize,
    ) -> Result<(Vec<super::OutboxCounts>, Vec<super::Delivery>), StoreError>;

    /// Every account's health (accounts that had a candidate auth error), those needing
    /// re-auth first.
    fn account_health(&self) -> Result<Vec<super::AccountHealth>, StoreError>;

    /// The id crosswalk's coverage per (account, kind): pairs, ids still unpaired, conflicts.
    fn id_coverage(&self) -> Result<Vec<super::IdCoverage>, StoreError>;

    /// The id crosswalk's pairs, oldest first (at most `limit`).
    fn id_pairs(&self, limit: usize) -> Result<Vec<crate::record::Pair>, StoreError>;

    /// The rediffs recorded (`rediff --record`) in `[from, to)`, oldest first.
    fn rediffs(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<super::RediffRow>, StoreError>;

    /// A saved replay set's exchanges: (id, started_at), oldest first (empty: no such set).
    fn replay_set(&self, name: &str) -> Result<Vec<(i64, String)>, StoreError>;

    /// The triage marks, by route, field and kind (expired ones included).
    fn triage_marks(&self) -> Result<Vec<crate::triage::Mark>, StoreError>;

    /// The triage audit trail, newest first (`limit` lines).
    fn triage_log(&self, limit: usize) -> Result<Vec<crate::triage::LogEntry>, StoreError>;

    /// Per route and account, the `diff` exchanges whose every difference is at a pattern
    /// accepted (and not expired at `now`) or at a field learned as noise, with at least one
    /// accepted that is not noise (so none is also in [`Reader::noise_only`]).
    fn accepted_only(
        &self,
        f: &Filter,
        min_count: u64,
        now: SystemTime,
    ) -> Result<Vec<NoiseOnly>, StoreError>;

    /// The window a report over `f` covers: `f` itself, or `f` widened to whole hours at an
    /// edge whose partial hour has exchanges counted without a row (`[store] exchanges`), so
    /// that every count over it is exact.
    fn exact_window(&self, f: &Filter) -> Result<Filter, StoreError>;

    /// Whether every exchange of the window's hours kept its row (`[store] exchanges`).
    fn every_row_kept(&self, f: &Filter) -> Result<bool, StoreError>;

    /// The changes of rollout phase in `[from, to)`, oldest first (the newest `limit`).
    fn rollout_events(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<super::RolloutEvent>, StoreError>;
}
