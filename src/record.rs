//! What one exchange leaves behind, as every module sees it: its outcome, why it was skipped,
//! who it was ([`Meta`]), the record the store writes ([`Record`]), and the two encodings every
//! reader shares (a route key that says "unmatched" one way, and the time format). A leaf: it
//! imports nothing from the rest of the crate but the diff's [`Difference`].

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::diff::{Counted, Difference};

/// How an exchange ended. [`Outcome::as_str`] is the one spelling of each outcome: the store's
/// `outcome` column, the report's keys and the metrics' labels all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Match,
    Diff,
    CandidateError,
    CandidateTimeout,
    CandidateAuthError,
    CandidateRateLimited,
    LegacyError,
    NotJson,
    TooLarge,
    MappingError,
    /// A bug: shadow work panicked; the message is in `reason`.
    InternalError,
    /// Eligible for mirroring but not mirrored, for this reason.
    Skipped(SkipReason),
}

impl Outcome {
    /// The name of every `Skipped(_)`, whatever the reason.
    pub const SKIPPED: &'static str = "skipped";
    /// The outcomes of an exchange whose two answers were compared.
    pub const COMPARED: [Self; 2] = [Self::Match, Self::Diff];
    /// Every name [`Outcome::as_str`] gives.
    pub const NAMES: &'static [&'static str] = &[
        "match",
        "diff",
        "candidate_error",
        "candidate_timeout",
        "candidate_auth_error",
        "candidate_rate_limited",
        "legacy_error",
        "not_json",
        "too_large",
        "mapping_error",
        "internal_error",
        Self::SKIPPED,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Diff => "diff",
            Self::CandidateError => "candidate_error",
            Self::CandidateTimeout => "candidate_timeout",
            Self::CandidateAuthError => "candidate_auth_error",
            Self::CandidateRateLimited => "candidate_rate_limited",
            Self::LegacyError => "legacy_error",
            Self::NotJson => "not_json",
            Self::TooLarge => "too_large",
            Self::MappingError => "mapping_error",
            Self::InternalError => "internal_error",
            Self::Skipped(_) => Self::SKIPPED,
        }
    }

    /// The candidate itself failed (error, timeout, refusal, rate limit, a body that is not
    /// JSON, too large or that its mapping could not reshape).
    pub fn is_candidate_failure(self) -> bool {
        matches!(
            self,
            Self::CandidateError
                | Self::CandidateTimeout
                | Self::CandidateAuthError
                | Self::CandidateRateLimited
                | Self::NotJson
                | Self::TooLarge
                | Self::MappingError
        )
    }

    /// `match` or `diff`: both answers were received and compared.
    pub fn is_compared(self) -> bool {
        matches!(self, Self::Match | Self::Diff)
    }

    /// Whether a stored outcome name is `match` or `diff`: both answers were received and
    /// compared.
    pub fn is_compared_name(name: &str) -> bool {
        Self::COMPARED.iter().any(|o| o.as_str() == name)
    }
}

/// Why an eligible exchange was not mirrored (outcome `skipped`). [`SkipReason::as_str`] is
/// both the stored reason and the `reason` label of `shadowdiff_shadow_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `[shadow] max_in_flight` candidate calls were already running.
    Overload,
    /// Mirroring is paused after a candidate 429.
    RateLimited,
    /// `[shadow] max_rps` reached.
    MaxRps,
    /// The candidate request template names a value this request lacks.
    Template,
    /// The caller went away before legacy's answer was complete.
    CallerAborted,
    /// The path climbs above its root (`..`): never sent to the candidate.
    UnsafePath,
    /// `[shadow] max_bytes_in_flight` could not hold the bodies.
    Memory,
    /// Served by the candidate without a legacy call (`[rollout.phases.NAME] legacy_sample`):
    /// nothing to compare.
    LegacySample,
    /// The candidate request needs an account value (`{account.COLUMN}`) and the request's
    /// account is not in the accounts file: calling the candidate without it would only compare
    /// legacy's answer to the caller with an answer to nobody.
    UnknownAccount,
    /// The account's remaining candidate quota is under `[shadow] reserve`: left to the
    /// caller's own traffic.
    QuotaReserve,
    /// A served request's candidate call was cancelled once the caller's answer was decided
    /// without it (legacy refused, legacy failed, or the caller went away).
    Cancelled,
    /// The account's breaker is open: the candidate answered a burst of errors
    /// (`[shadow.breaker]`), and calling on could get the proxy's address blocked.
    Breaker,
    /// The request mapping asked for more candidate calls than the route's `max_each`: the
    /// exchange is skipped, never compared on a truncated batch.
    FanOut,
    /// The request's body could not be given to the request mapping (not JSON).
    RequestBody,
    /// A legacy id the request carries has no candidate partner in the id crosswalk yet
    /// (`{NAME|KIND}`): the candidate is never called with an id it does not know, or with
    /// the wrong one.
    UnpairedId,
    /// A paged route's list could not be walked on the candidate's cursors (longer than
    /// `max_pages` pages, a page that is not a list, an offset that is not a number).
    Paging,
}

impl SkipReason {
    /// Every reason.
    pub const ALL: [Self; 16] = [
        Self::Overload,
        Self::RateLimited,
        Self::MaxRps,
        Self::Template,
        Self::CallerAborted,
        Self::UnsafePath,
        Self::Memory,
        Self::LegacySample,
        Self::UnknownAccount,
        Self::QuotaReserve,
        Self::Cancelled,
        Self::Breaker,
        Self::FanOut,
        Self::RequestBody,
        Self::UnpairedId,
        Self::Paging,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::RateLimited => "rate_limited",
            Self::MaxRps => "max_rps",
            Self::Template => "template",
            Self::CallerAborted => "caller_aborted",
            Self::UnsafePath => "unsafe_path",
            Self::Memory => "memory",
            Self::LegacySample => "legacy_sample",
            Self::UnknownAccount => "unknown_account",
            Self::QuotaReserve => "quota_reserve",
            Self::Cancelled => "cancelled",
            Self::Breaker => "breaker",
            Self::FanOut => "fan_out",
            Self::RequestBody => "request_body",
            Self::UnpairedId => "unpaired_id",
            Self::Paging => "paging",
        }
    }
}

/// The name reports and metrics give the requests that matched no route.
pub const UNMATCHED: &str = "(unmatched)";

/// A route as reports, filters and the store's aggregates name it: a configured route or
/// "unmatched". The one encoding of "unmatched" in the code; the store maps it to its columns
/// (SQL `NULL` in `exchanges`, `''` in the aggregate tables) in one place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey(Option<String>);

impl RouteKey {
    pub fn named(name: impl Into<String>) -> Self {
        Self(Some(name.into()))
    }

    pub fn unmatched() -> Self {
        Self(None)
    }

    /// From a record's optional route.
    pub fn from_route(route: Option<&str>) -> Self {
        Self(route.map(str::to_owned))
    }

    /// From what a user typed (`--route`): [`UNMATCHED`] means the unmatched requests.
    pub fn parse(s: &str) -> Self {
        if s == UNMATCHED {
            Self(None)
        } else {
            Self(Some(s.to_owned()))
        }
    }

    /// The configured route's name; `None` for unmatched requests.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The name shown to people and in metric labels.
    pub fn label(&self) -> &str {
        self.0.as_deref().unwrap_or(UNMATCHED)
    }
}

impl From<&str> for RouteKey {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl From<String> for RouteKey {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

/// Who an exchange is, known before either side answers.
#[derive(Debug, Clone)]
pub struct Meta {
    pub started_at: SystemTime,
    pub request_id: String,
    pub route: Option<String>,
    pub method: String,
    /// Path without the query string (queries can carry credentials).
    pub path: String,
    pub account: Option<String>,
    /// What the rollout did with it.
    pub serving: Serving,
}

/// Which vendor's answer the caller got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ServedBy {
    #[default]
    Legacy,
    Candidate,
    /// Nobody: the caller went away before its answer was decided (`none`).
    Nobody,
}

impl ServedBy {
    /// The stored spelling (`exchanges.served_by`) and the metrics' label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Candidate => "candidate",
            Self::Nobody => "none",
        }
    }
}

/// Why a request of the candidate cohort was answered by legacy after all. [`Fallback::as_str`]
/// is the stored `exchanges.fallback` and the `reason` label of `shadowdiff_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// The candidate could not be reached, or its body broke off.
    ConnectionError,
    /// No complete answer within `[candidate] timeout`.
    Timeout,
    /// No answer within the route's `serve_deadline`.
    Deadline,
    /// The candidate answered 5xx.
    ServerError,
    /// The candidate answered 429.
    RateLimited,
    /// The candidate answered 401 or 403.
    AuthError,
    /// The candidate's body is not JSON (or not decodable).
    NotJson,
    /// The candidate mapping failed.
    MappingError,
    /// The candidate's body (or the request's) is over `[shadow] max_body`.
    TooLarge,
    /// `[shadow] max_bytes_in_flight` could not hold the candidate's body, or (a phase with
    /// `verify`) the documents of its verification: the answer was not checked (shadow load, or a
    /// document too big for what the budget had left).
    Memory,
    /// The candidate was not called (the skip reason: a 429 pause, a template value missing,
    /// an unsafe path, the served calls' budget full).
    NotCalled(SkipReason),
    /// Legacy's response head said something other than success (2xx): legacy is the authority
    /// on who may read what, so its answer is the caller's.
    LegacyStatus,
    /// Legacy gave no answer (unreachable, timeout): the caller gets the proxy's 502/504 for
    /// legacy, never an answer legacy did not vouch for.
    LegacyFailed,
    /// The candidate's status cannot be served: not a 2xx with a body (1xx, 204, 3xx, 4xx), or
    /// not legacy's status.
    Status,
    /// The candidate's body is empty or only whitespace.
    EmptyBody,
    /// A phase with `verify`: the candidate's answer, compared strictly with legacy's for the
    /// same request, was not `match`.
    Unverified,
    /// A phase without `verify`, on a route whose comparison ignores or normalizes fields the
    /// caller would receive (rules not declared `serve_safe`): nothing vouches for those fields.
    UnverifiedRules,
    /// The candidate's answer holds an id the id crosswalk cannot turn back into legacy's: a
    /// candidate id never reaches the caller.
    UnpairedId,
    /// A fan-out's answer where a call did not succeed (a 404 for one id): the batch is served
    /// whole from the candidate or not at all.
    BatchElement,
}

impl Fallback {
    /// Every name [`Fallback::as_str`] gives.
    pub const NAMES: &'static [&'static str] = &[
        "connection_error",
        "timeout",
        "deadline",
        "server_error",
        "rate_limited",
        "auth_error",
        "not_json",
        "mapping_error",
        "too_large",
        "memory",
        "not_called_paused",
        "not_called_template",
        "not_called_unsafe_path",
        "not_called_unknown_account",
        "not_called_overload",
        "not_called",
        "legacy_status",
        "legacy_failed",
        "status",
        "empty_body",
        "unverified",
        "unverified_rules",
        "not_called_unpaired_id",
        "not_called_paging",
        "unpaired_id",
        "batch_element",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionError => "connection_error",
            Self::Timeout => "timeout",
            Self::Deadline => "deadline",
            Self::ServerError => "server_error",
            Self::RateLimited => "rate_limited",
            Self::AuthError => "auth_error",
            Self::NotJson => "not_json",
            Self::MappingError => "mapping_error",
            Self::TooLarge => "too_large",
            Self::Memory => "memory",
            // A served request skips shadow's in-flight and rate limits: these are the
            // reasons it can go uncalled.
            Self::NotCalled(SkipReason::RateLimited) => "not_called_paused",
            Self::NotCalled(SkipReason::Template) => "not_called_template",
            Self::NotCalled(SkipReason::UnsafePath) => "not_called_unsafe_path",
            Self::NotCalled(SkipReason::UnknownAccount) => "not_called_unknown_account",
            Self::NotCalled(SkipReason::Overload) => "not_called_overload",
            Self::NotCalled(SkipReason::UnpairedId) => "not_called_unpaired_id",
            Self::NotCalled(SkipReason::Paging) => "not_called_paging",
            Self::NotCalled(_) => "not_called",
            Self::LegacyStatus => "legacy_status",
            Self::LegacyFailed => "legacy_failed",
            Self::Status => "status",
            Self::EmptyBody => "empty_body",
            Self::Unverified => "unverified",
            Self::UnverifiedRules => "unverified_rules",
            Self::UnpairedId => "unpaired_id",
            Self::BatchElement => "batch_element",
        }
    }

    /// Whether the candidate itself failed (counted by the rollout guard's candidate error
    /// rate); `false` when it was not called, when legacy decided, when our own budget or rules
    /// held it back, or when its answer was well-formed but not legacy's (`unverified`: that is
    /// parity's to count).
    pub fn is_candidate_failure(self) -> bool {
        !matches!(
            self,
            Self::NotCalled(_)
                | Self::Memory
                | Self::LegacyStatus
                | Self::LegacyFailed
                | Self::Unverified
                | Self::UnverifiedRules
                | Self::UnpairedId
        )
    }
}

/// What the rollout did with one exchange.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// The rollout phase at the time (`None` outside a rollout: `diff`, tests).
    pub phase: Option<Arc<str>>,
    /// In the phase's candidate cohort: served by the candidate unless it fell back.
    pub cohort: bool,
    pub served_by: ServedBy,
    pub fallback: Option<Fallback>,
}

/// One side's response as stored (already redacted).
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub side: &'static str,
    pub status: Option<u16>,
    pub headers: Value,
    /// The redacted JSON text and its hash; `None` for a body that is not JSON (not kept).
    pub body: Option<BodyText>,
}

/// A body's text with its content hash: the same text is stored once.
#[derive(Debug, Clone)]
pub struct BodyText {
    pub text: Arc<str>,
    pub hash: u128,
}

impl BodyText {
    pub fn new(text: String) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        Self {
            text: text.into(),
            hash,
        }
    }
}

/// One exchange, ready to be written (already redacted).
#[derive(Debug, Clone)]
pub struct Record {
    pub meta: Meta,
    pub legacy_status: Option<u16>,
    pub candidate_status: Option<u16>,
    pub legacy_ms: Option<f64>,
    pub candidate_ms: Option<f64>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub diff_count: usize,
    /// Shared with the comparison memo: identical pairs reuse one list.
    pub diffs: Arc<Vec<Difference>>,
    /// Field patterns present in either body of a compared exchange.
    pub present: Arc<Vec<String>>,
    pub bodies: Vec<StoredBody>,
    /// The version of the mappings applied (`None` without mappings).
    pub mapping_version: Option<String>,
    /// The differences per (field pattern, kind) as `diff_fields` stores them ([`field_counts`]),
    /// once [`Record::bound`] has cut `diffs` to what is stored, or when the comparison counted
    /// differences per pattern without listing them; `None`: computed from `diffs`.
    pub field_counts: Option<Vec<FieldCount>>,
    /// What the id crosswalk learned and met in this exchange (`None`: a route without ids).
    pub ids: Option<Arc<IdsSeen>>,
}

/// One pair of the id crosswalk (the `ids` module): the same entity's id at each vendor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pair {
    pub account: String,
    pub kind: String,
    pub legacy: String,
    pub candidate: String,
    /// Which ids are JSON numbers, not strings ([`Pair::LEGACY_NUMBER`],
    /// [`Pair::CANDIDATE_NUMBER`]): an id written back keeps its vendor's type.
    pub numbers: u8,
}

impl Pair {
    pub const LEGACY_NUMBER: u8 = 1;
    pub const CANDIDATE_NUMBER: u8 = 2;
}

/// An id seen without a partner (the store counts these for coverage).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unpaired {
    pub account: String,
    pub kind: String,
    /// `legacy` or `candidate`.
    pub side: &'static str,
    pub id: String,
}

/// What one compared exchange taught and met, for the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdsSeen {
    pub pairs: Vec<Pair>,
    pub conflicts: Vec<(Pair, Pair)>,
    pub unpaired: Vec<Unpaired>,
}

impl IdsSeen {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.conflicts.is_empty() && self.unpaired.is_empty()
    }
}

/// Differences of one field pattern and kind in an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCount {
    pub field: String,
    pub kind: &'static str,
    pub n: i64,
}

/// Diff rows stored per exchange at most; `diff_count` keeps the real count.
pub const MAX_DIFF_ROWS: usize = 1000;
/// `diff_fields` rows per exchange at most: past it, one row of field [`OVERFLOW_FIELD`] and
/// kind [`OVERFLOW_KIND`] counts the differences of every other field (a hostile vendor's
/// 20,000 distinct member names make 1,000 rows, not 20,000).
pub const MAX_FIELD_ROWS: usize = 1000;
/// The field of the row counting the differences past [`MAX_FIELD_ROWS`] (no pattern starts
/// with `(`: they are JSON pointers).
pub const OVERFLOW_FIELD: &str = "(other fields)";
/// The kind of that row.
pub const OVERFLOW_KIND: &str = "overflow";

/// The number of differences per (field pattern, kind), in pattern order, [`MAX_FIELD_ROWS`]
/// rows at most (the last one counting the rest, and the `unlisted` differences a comparison
/// counted without listing them): those listed in `diffs` and those `counted` per pattern.
pub fn field_counts(diffs: &[Difference], counted: &[Counted], unlisted: usize) -> Vec<FieldCount> {
    let mut per_field: std::collections::BTreeMap<(&str, &'static str), i64> =
        std::collections::BTreeMap::new();
    for d in diffs {
        *per_field
            .entry((d.field.as_str(), d.kind.as_str()))
            .or_default() += 1;
    }
    for c in counted {
        *per_field
            .entry((c.field.as_str(), c.kind.as_str()))
            .or_default() += c.n as i64;
    }
    let over = per_field.len() + usize::from(unlisted > 0) > MAX_FIELD_ROWS;
    let mut out: Vec<FieldCount> = Vec::with_capacity(per_field.len().min(MAX_FIELD_ROWS));
    let mut rest = unlisted as i64;
    for (i, ((field, kind), n)) in per_field.into_iter().enumerate() {
        if over && i >= MAX_FIELD_ROWS - 1 {
            rest += n;
        } else {
            out.push(FieldCount {
                field: field.to_owned(),
                kind,
                n,
            });
        }
    }
    if over || unlisted > 0 {
        out.push(FieldCount {
            field: OVERFLOW_FIELD.to_owned(),
            kind: OVERFLOW_KIND,
            n: rest,
        });
    }
    out
}

/// The differences stored for an exchange: the first `per_field` of each (field pattern, kind),
/// in the order they were found, at most [`MAX_DIFF_ROWS`]. Their counts are all in
/// `diff_fields`; what is not stored can be recomputed from kept bodies.
pub fn examples(diffs: &[Difference], per_field: usize) -> Vec<&Difference> {
    examples_cut(diffs, per_field, usize::MAX)
}

/// [`examples`] of the field patterns as stored, cut to `max` bytes ([`name_cut`]): patterns cut
/// alike are one field of the store, which keeps `per_field` examples of it.
fn examples_cut(diffs: &[Difference], per_field: usize, max: usize) -> Vec<&Difference> {
    let mut seen: std::collections::HashMap<(&str, bool, &str), usize> =
        std::collections::HashMap::new();
    diffs
        .iter()
        .filter(|d| {
            let key = (cut(&d.field, max), d.field.len() > max, d.kind.as_str());
            let n = seen.entry(key).or_default();
            *n += 1;
            *n <= per_field
        })
        .take(MAX_DIFF_ROWS)
        .collect()
}

/// A field pattern or pointer cut to `max` bytes, marked as cut (`…[cut]`): a vendor's member
/// name may be as long as its body, and it is stored in several tables.
fn name_cut(name: &str, max: usize) -> String {
    if name.len() <= max {
        name.to_owned()
    } else {
        format!("{}…[cut]", cut(name, max))
    }
}

/// Counts with their patterns cut to `max` bytes as the store keeps them (`max_value_len`),
/// those cut alike merged into the first (a pattern and kind is one row of an exchange's counts:
/// two long patterns that share a prefix would otherwise be two rows with one key, and the store
/// would refuse the exchange); as they are when none is longer.
pub fn cut_counts(counts: Vec<FieldCount>, max: usize) -> Vec<FieldCount> {
    if counts.iter().all(|c| c.field.len() <= max) {
        return counts;
    }
    let mut at: std::collections::HashMap<(String, &'static str), usize> =
        std::collections::HashMap::new();
    let mut out: Vec<FieldCount> = Vec::with_capacity(counts.len());
    for mut c in counts {
        if c.field.len() > max {
            c.field = name_cut(&c.field, max);
        }
        match at.entry((c.field.clone(), c.kind)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].n += c.n,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(c);
            }
        }
    }
    out
}

/// Bytes differences hold in memory, about: their texts and values.
pub(crate) fn diffs_bytes(diffs: &[Difference]) -> usize {
    diffs
        .iter()
        .map(|d| {
            96 + d.pointer.len()
                + d.field.len()
                + d.candidate_pointer.as_ref().map_or(0, String::len)
                + d.legacy.as_ref().map_or(0, value_bytes)
                + d.candidate.as_ref().map_or(0, value_bytes)
        })
        .sum()
}

/// Bytes a JSON value holds in memory, about.
fn value_bytes(v: &Value) -> usize {
    32 + match v {
        Value::String(s) => s.len(),
        Value::Number(n) => n.as_str().len(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + value_bytes(v)).sum(),
        _ => 0,
    }
}

impl Record {
    /// Cuts the record to what the store keeps of it, so that a record waiting in the store's
    /// queue holds no more than its rows: the counts per field ([`field_counts`]) taken first,
    /// then the differences cut to the stored examples, values longer than `max_value_len`
    /// bytes to a prefix (as they are stored). The comparison's own list (shared with the memo)
    /// is left as is when nothing needs cutting.
    pub fn bound(&mut self, per_field: usize, max_value_len: usize) {
        // Field patterns and pointers come from the vendors' member names: as long as a body.
        // Patterns cut alike are one pattern (it is present once per exchange).
        if self.present.iter().any(|p| p.len() > max_value_len) {
            let mut seen = std::collections::HashSet::new();
            self.present = Arc::new(
                self.present
                    .iter()
                    .map(|p| name_cut(p, max_value_len))
                    .filter(|p| seen.insert(p.clone()))
                    .collect(),
            );
        }
        if self.diffs.is_empty() {
            return;
        }
        let counts = match self.field_counts.take() {
            Some(counts) => counts,
            None => field_counts(&self.diffs, &[], self.unlisted()),
        };
        self.field_counts = Some(cut_counts(counts, max_value_len));
        let kept = examples_cut(&self.diffs, per_field, max_value_len);
        let long = |v: &Option<Value>| v.as_ref().is_some_and(|v| value_bytes(v) > max_value_len);
        let long_name = |d: &Difference| {
            d.field.len() > max_value_len
                || d.pointer.len() > max_value_len
                || d.candidate_pointer
                    .as_ref()
                    .is_some_and(|p| p.len() > max_value_len)
        };
        if kept.len() == self.diffs.len()
            && !kept
                .iter()
                .any(|d| long(&d.legacy) || long(&d.candidate) || long_name(d))
        {
            return;
        }
        let cut = |v: &Option<Value>| {
            v.as_ref().map(|v| {
                if value_bytes(v) > max_value_len {
                    serde_json::from_str(&value_text(v, max_value_len)).unwrap_or(Value::Null)
                } else {
                    v.clone()
                }
            })
        };
        let diffs: Vec<Difference> = kept
            .into_iter()
            .map(|d| Difference {
                pointer: name_cut(&d.pointer, max_value_len),
                field: name_cut(&d.field, max_value_len),
                candidate_pointer: d
                    .candidate_pointer
                    .as_ref()
                    .map(|p| name_cut(p, max_value_len)),
                legacy: cut(&d.legacy),
                candidate: cut(&d.candidate),
                kind: d.kind,
            })
            .collect();
        self.diffs = Arc::new(diffs);
    }

    /// Bytes the record holds in memory, about (what waits in the store's queue).
    pub fn approx_bytes(&self) -> usize {
        let diffs = diffs_bytes(&self.diffs);
        let counts: usize = self
            .field_counts
            .iter()
            .flatten()
            .map(|c| 48 + c.field.len())
            .sum();
        let present: usize = self.present.iter().map(|p| 24 + p.len()).sum();
        let bodies: usize = self
            .bodies
            .iter()
            .map(|b| 64 + b.body.as_ref().map_or(0, |t| t.text.len()))
            .sum();
        512 + self.meta.path.len()
            + self.reason.as_ref().map_or(0, String::len)
            + diffs
            + counts
            + present
            + bodies
    }

    /// What the store gets when the memory budget cannot hold the record's details: the
    /// exchange's row with its outcome and counts, one `diff_fields` row counting every
    /// difference, no example, no presence, no body.
    pub fn strip(&mut self) {
        self.field_counts = Some(if self.diff_count > 0 {
            vec![FieldCount {
                field: OVERFLOW_FIELD.to_owned(),
                kind: OVERFLOW_KIND,
                n: self.diff_count as i64,
            }]
        } else {
            Vec::new()
        });
        self.diffs = Arc::default();
        self.present = Arc::default();
        self.bodies.clear();
    }

    /// Differences counted and not listed (a comparison's room was full: `diff_count` counts
    /// them, `diffs` does not hold them).
    fn unlisted(&self) -> usize {
        self.diff_count.saturating_sub(self.diffs.len())
    }

    /// [`field_counts`] of the record: as bounded, or computed from `diffs`.
    pub fn counts(&self) -> std::borrow::Cow<'_, [FieldCount]> {
        match &self.field_counts {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(field_counts(&self.diffs, &[], self.unlisted())),
        }
    }
}

/// The fields that differed between two legacy answers to one request (noise learning).
#[derive(Debug, Clone)]
pub struct NoiseSample {
    pub route: RouteKey,
    pub at: SystemTime,
    pub fields: Vec<String>,
}

/// Formats a time as RFC 3339 UTC with milliseconds (sortable as text): the store's timestamps
/// and the report's window.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The time `d` before now; a `d` reaching past 1970 (a `--since 99999999999d`, a `?since=` from
/// the admin API, a `retention` of that size) gives the epoch instead of an overflow panic.
pub fn ago(d: std::time::Duration) -> SystemTime {
    // `SystemTime` can hold times before 1970, which the store's time format cannot write.
    SystemTime::now()
        .checked_sub(d)
        .filter(|t| *t >= std::time::UNIX_EPOCH)
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// The hour a time falls in, as the store's hourly aggregates key it (`2026-11-29T13`).
pub fn hour(t: SystemTime) -> String {
    let mut s = rfc3339(t);
    s.truncate(13);
    s
}

/// A new request id: 16 hex digits.
pub fn request_id() -> String {
    format!("{:016x}", random_u64())
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// A pseudo-random u64 (xorshift64*; for sampling and request ids, not for secrets).
pub fn random_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A JSON value as stored: its text, or, when longer than `max`, a JSON string holding the first
/// `max` bytes of the text followed by `…[truncated]` (so the column always holds valid JSON).
pub fn value_text(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.len() <= max {
        return text;
    }
    Value::String(format!("{}…[truncated]", cut(&text, max))).to_string()
}

pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields whose patterns are cut alike keep `per_field` examples in all: before, each long
    /// pattern kept its own before they were cut, and 50 example rows shared one stored field.
    #[test]
    fn patterns_cut_alike_keep_per_field_examples_in_all() {
        let long = "n".repeat(2_000);
        let mut r = crate::store::test_record(std::time::UNIX_EPOCH);
        r.diffs = Arc::new(
            (0..50)
                .map(|i| Difference {
                    pointer: format!("/{long}/m{i}"),
                    field: format!("/{long}/m{i}"),
                    kind: crate::diff::Kind::Changed,
                    legacy: None,
                    candidate: None,
                    candidate_pointer: None,
                })
                .collect(),
        );
        r.diff_count = 50;
        r.bound(3, 1024);
        assert_eq!(r.diffs.len(), 3);
        assert_eq!(r.counts().iter().map(|c| c.n).sum::<i64>(), 50);
        // Short patterns are unchanged: three of each.
        let short: Vec<Difference> = ["/a", "/a", "/a", "/a", "/b"]
            .iter()
            .map(|f| Difference {
                pointer: (*f).into(),
                field: (*f).into(),
                kind: crate::diff::Kind::Changed,
                legacy: None,
                candidate: None,
                candidate_pointer: None,
            })
            .collect();
        assert_eq!(examples(&short, 3).len(), 4);
    }

    #[test]
    fn differences_counted_and_not_listed_are_in_the_overflow_row() {
        let d = |f: &str| Difference {
            pointer: f.into(),
            field: f.into(),
            kind: crate::diff::Kind::Changed,
            legacy: None,
            candidate: None,
            candidate_pointer: None,
        };
        let mut r = crate::store::test_record(std::time::UNIX_EPOCH);
        r.diffs = Arc::new(vec![d("/a"), d("/a"), d("/b")]);
        r.diff_count = 10;
        let n = |r: &Record| -> Vec<(String, &str, i64)> {
            r.counts()
                .iter()
                .map(|c| (c.field.clone(), c.kind, c.n))
                .collect()
        };
        let want = vec![
            ("/a".to_owned(), "changed", 2),
            ("/b".to_owned(), "changed", 1),
            (OVERFLOW_FIELD.to_owned(), OVERFLOW_KIND, 7),
        ];
        assert_eq!(n(&r), want);
        r.bound(1, 1024);
        assert_eq!(n(&r), want);
        assert_eq!(r.diffs.len(), 2);
        // A full set of rows: the last one joins the overflow row, which stays the 1,000th.
        let many: Vec<Difference> = (0..MAX_FIELD_ROWS)
            .map(|i| d(&format!("/f{i:04}")))
            .collect();
        let counts = field_counts(&many, &[], 5);
        assert_eq!(counts.len(), MAX_FIELD_ROWS);
        assert_eq!(
            counts.last().map(|c| (c.field.as_str(), c.n)),
            Some((OVERFLOW_FIELD, 6))
        );
        assert_eq!(
            counts.iter().map(|c| c.n).sum::<i64>(),
            MAX_FIELD_ROWS as i64 + 5
        );
    }

    #[test]
    fn the_name_lists_hold_every_name() {
        for r in SkipReason::ALL {
            assert!(Outcome::NAMES.contains(&Outcome::Skipped(r).as_str()));
            assert!(Fallback::NAMES.contains(&Fallback::NotCalled(r).as_str()));
        }
        let distinct: std::collections::HashSet<&str> =
            SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(distinct.len(), SkipReason::ALL.len());
        for f in [
            Fallback::ConnectionError,
            Fallback::Timeout,
            Fallback::Deadline,
            Fallback::ServerError,
            Fallback::RateLimited,
            Fallback::AuthError,
            Fallback::NotJson,
            Fallback::MappingError,
            Fallback::TooLarge,
            Fallback::Memory,
            Fallback::LegacyStatus,
            Fallback::LegacyFailed,
            Fallback::Status,
            Fallback::EmptyBody,
            Fallback::Unverified,
            Fallback::UnverifiedRules,
        ] {
            assert!(Fallback::NAMES.contains(&f.as_str()), "{f:?}");
        }
    }

    #[test]
    fn outcome_names_are_the_one_spelling() {
        let all = [
            Outcome::Match,
            Outcome::Diff,
            Outcome::CandidateError,
            Outcome::CandidateTimeout,
            Outcome::CandidateAuthError,
            Outcome::CandidateRateLimited,
            Outcome::LegacyError,
            Outcome::NotJson,
            Outcome::TooLarge,
            Outcome::MappingError,
            Outcome::InternalError,
            Outcome::Skipped(SkipReason::Memory),
        ];
        let names: Vec<&str> = all.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, Outcome::NAMES);
        let compared: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| Outcome::is_compared_name(n))
            .collect();
        assert_eq!(compared, ["match", "diff"]);
    }

    #[test]
    fn one_encoding_of_unmatched() {
        assert_eq!(RouteKey::parse(UNMATCHED), RouteKey::unmatched());
        assert_eq!(RouteKey::from_route(None).label(), UNMATCHED);
        assert_eq!(RouteKey::parse("users").name(), Some("users"));
        assert_eq!(hour(std::time::UNIX_EPOCH), "1970-01-01T00");
        let huge = std::time::Duration::from_secs(u64::MAX / 2);
        assert_eq!(ago(huge), std::time::UNIX_EPOCH);
        let before_1970 = std::time::Duration::from_secs(99_999_999_999 * 86_400);
        assert_eq!(ago(before_1970), std::time::UNIX_EPOCH);
        assert_eq!(rfc3339(ago(before_1970)), "1970-01-01T00:00:00.000Z");
    }
}
