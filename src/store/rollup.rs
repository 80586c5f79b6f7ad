//! Roll-ups: hourly aggregates of the exchange rows, kept by the writer in the transaction that
//! writes the rows, so that a report's counts, field statistics, trend and latency percentiles
//! cost the same over a day and over a month, over a thousand exchanges and ten million.
//!
//! Engine-neutral: the pure step from exchanges to [`Deltas`] (the writer's, and the migration's
//! that builds the roll-ups of an existing store), the latency histogram, and the reads that
//! answer a window from whole hours of roll-ups plus the rows of its two partial hours
//! ([`Split`]). An engine implements [`Engine`]: its row queries (the answers are exact over any
//! window) and the same queries over whole hours of roll-ups.
//!
//! The tables (both engines, one hour a row; `''` stands for SQL `NULL` in a key):
//! - `rollup_outcomes` per (route, outcome, mapping version, served by, fallback, reason of a
//!   skip): exchanges, shadow candidate calls, first and last start (counts, the trend, mapping
//!   versions, the cohort and the quota spend);
//! - `rollup_accounts` per (route, account, outcome, mapping version): exchanges (per-account
//!   counts, and counts under an account filter);
//! - `rollup_fields` per (route, field pattern, kind): differences, exchanges, the first
//!   exchange's id;
//! - `rollup_latency` per (route, side, bucket): exchanges ([`bucket`]);
//! - `rollup_signatures` per (route, account, signature): `diff` exchanges, where the signature
//!   is the exchange's set of differing (field pattern, kind) pairs (noise-only and
//!   accepted-only counts, whichever patterns are learned as noise or accepted later);
//! - `rollup_unkept` per hour: exchanges counted here but not kept as rows (`[store]
//!   exchanges`); a window's partial hour that has any is answered from its whole hour's
//!   roll-ups instead of its rows ([`window`]), so the counts stay exact over a window that
//!   widens to whole hours at that edge;
//! - `rollup_state`: the highest exchange id the roll-ups cover. Rows past it (written by
//!   something other than this writer) make every read take the rows instead: exact, slower.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::query::{
    CohortCount, DayRow, FieldRow, Filter, GroupBy, NoiseOnly, OutcomeCount, Side, Spend,
    VersionRow,
};
use super::StoreError;
use crate::record::{Outcome, Record, RouteKey};

/// Latency buckets per doubling: a bucket spans 2^(1/16) (4.4 %), and the value a percentile
/// reports is the bucket's geometric middle (to four digits), within 2.3 % of every latency in it.
const PER_DOUBLING: f64 = 16.0;

/// Latencies are bucketed within [1 µs, ~11.6 days]; beyond, the end buckets hold them.
const MIN_MS: f64 = 0.001;
const MAX_MS: f64 = 1.0e9;

/// The histogram bucket of a latency in ms.
pub fn bucket(ms: f64) -> i64 {
    let ms = if ms.is_nan() {
        MIN_MS
    } else {
        ms.clamp(MIN_MS, MAX_MS)
    };
    (ms.log2() * PER_DOUBLING).floor() as i64
}

/// The latency a bucket stands for: its geometric middle, to four significant digits.
pub fn bucket_value(b: i64) -> f64 {
    let v = 2f64.powf((b as f64 + 0.5) / PER_DOUBLING);
    let scale = 10f64.powi(3 - v.log10().floor() as i32);
    (v * scale).round() / scale
}

/// A latency histogram: exchanges per [`bucket`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(pub BTreeMap<i64, u64>);

impl Histogram {
    pub(super) fn add(&mut self, bucket: i64, n: u64) {
        *self.0.entry(bucket).or_default() += n;
    }

    /// The nearest-rank percentile (0 for an empty histogram), as its bucket's value.
    pub fn percentile(&self, p: f64) -> f64 {
        let total: u64 = self.0.values().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in &self.0 {
            seen += n;
            if seen >= rank {
                return bucket_value(*b);
            }
        }
        0.0
    }
}

/// One exchange as the roll-ups see it: what the writer has of a record, and what the
/// migration reads back of a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// The row's id; `0`: the exchange keeps no row (`[store] exchanges`).
    pub id: i64,
    /// RFC 3339 with milliseconds (`2026-11-29T13:05:00.000Z`), as the rows hold it.
    pub started_at: &'a str,
    pub route: Option<&'a str>,
    pub account: Option<&'a str>,
    pub outcome: &'a str,
    pub mapping_version: Option<&'a str>,
    pub served_by: Option<&'a str>,
    pub fallback: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub legacy_ms: Option<f64>,
    pub candidate_ms: Option<f64>,
}

impl<'a> Facts<'a> {
    /// A record's facts; `started_at` is its start as the rows hold it.
    pub(super) fn of(r: &'a Record, id: i64, started_at: &'a str) -> Self {
        let m = &r.meta;
        Self {
            id,
            started_at,
            route: m.route.as_deref(),
            account: m.account.as_deref(),
            outcome: r.outcome.as_str(),
            mapping_version: r.mapping_version.as_deref(),
            served_by: Some(m.serving.served_by.as_str()),
            fallback: m.serving.fallback.map(|f| f.as_str()),
            reason: r.reason.as_deref(),
            legacy_ms: r.legacy_ms,
            candidate_ms: r.candidate_ms,
        }
    }
}

/// The key of `rollup_outcomes`: hour, route, outcome, mapping version, served by, fallback,
/// reason of a skip.
pub(super) type OutcomeKey = (String, String, String, String, String, String, String);

/// The key of `rollup_fields`: hour, route, field pattern, kind.
pub(super) type FieldKey = (String, String, String, String);

/// What a key of `rollup_outcomes` adds: exchanges, shadow candidate calls, first and last start.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OutcomeAgg {
    pub n: i64,
    pub shadow_calls: i64,
    pub first_at: String,
    pub last_at: String,
}

/// The first exchange id of a (field pattern, kind) whose exchanges in the hour kept no row.
const NO_ROW: i64 = i64::MAX;

/// The longest signature kept: an exchange differing at more patterns than fit is counted under
/// [`MANY`], which is never noise-only nor accepted-only (a stricter parity, never a laxer one).
const MAX_SIGNATURE: usize = 16 * 1024;
/// The signature of an exchange whose patterns do not fit in [`MAX_SIGNATURE`].
pub(super) const MANY: &str = "*";

/// An exchange's signature: its (field pattern, kind) pairs, sorted, as a JSON array of pairs.
pub(super) fn signature<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> String {
    let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let text = serde_json::to_string(&v).unwrap_or_else(|_| MANY.to_owned());
    if text.len() > MAX_SIGNATURE {
        MANY.to_owned()
    } else {
        text
    }
}

/// A signature's key in its table.
pub(super) fn signature_hash(s: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as i64
}

/// A signature's pairs (`None`: [`MANY`], or not a signature).
pub(super) fn signature_pairs(s: &str) -> Option<Vec<(String, String)>> {
    serde_json::from_str(s).ok()
}

/// The longest reason of a skip kept as a key (reasons of skips are short words).
const REASON_KEY: usize = 64;

/// What a batch of exchanges adds to the roll-ups, in key order (an upsert in one order on
/// every instance of a fleet cannot deadlock).
#[derive(Debug)]
pub(super) struct Deltas {
    /// The engine's form of a text (PostgreSQL's has no NUL): applied to every key, so two
    /// keys that the engine would store alike are one key here.
    pub(super) clean: fn(&str) -> std::borrow::Cow<'_, str>,
    pub outcomes: BTreeMap<OutcomeKey, OutcomeAgg>,
    /// (hour, route, account, outcome, mapping version) → exchanges.
    pub accounts: BTreeMap<(String, String, String, String, String), i64>,
    /// (hour, route, field, kind) → (differences, exchanges, first exchange id).
    pub fields: BTreeMap<FieldKey, (i64, i64, i64)>,
    /// (hour, route, side, bucket) → exchanges.
    pub latency: BTreeMap<(String, String, &'static str, i64), i64>,
    /// (hour, route, account, signature) → `diff` exchanges.
    pub signatures: BTreeMap<(String, String, String, String), i64>,
    /// hour → exchanges without a row.
    pub unkept: BTreeMap<String, i64>,
    /// The highest exchange id added.
    pub covered: i64,
    /// The highest exchange id before the batch (the writer's): the roll-ups' coverage moves
    /// up to [`Deltas::covered`] only if it reached this, so rows another program wrote in
    /// between stay uncovered (read as rows) instead of being counted as rolled up. `None`:
    /// the deltas are the whole store's (a fill), and the coverage is set to theirs.
    pub before: Option<i64>,
}

/// The hour of a start as the rows hold it (`2026-11-29T13`).
fn hour_of(started_at: &str) -> String {
    started_at.get(..13).unwrap_or(started_at).to_owned()
}

impl Default for Deltas {
    fn default() -> Self {
        fn same(s: &str) -> std::borrow::Cow<'_, str> {
            std::borrow::Cow::Borrowed(s)
        }
        Self::new(same)
    }
}

impl Deltas {
    /// Empty deltas whose keys are texts as `clean` makes them.
    pub(super) fn new(clean: fn(&str) -> std::borrow::Cow<'_, str>) -> Self {
        Self {
            clean,
            outcomes: BTreeMap::new(),
            accounts: BTreeMap::new(),
            fields: BTreeMap::new(),
            latency: BTreeMap::new(),
            signatures: BTreeMap::new(),
            unkept: BTreeMap::new(),
            covered: 0,
            before: None,
        }
    }

    fn key(&self, v: Option<&str>) -> String {
        (self.clean)(v.unwrap_or("")).into_owned()
    }

    /// Adds one exchange.
    pub(super) fn add(&mut self, x: &Facts<'_>) {
        let hour = hour_of(x.started_at);
        let route = self.key(x.route);
        let version = self.key(x.mapping_version);
        let skip = if x.outcome == Outcome::SKIPPED {
            x.reason.map_or("", |r| crate::record::cut(r, REASON_KEY))
        } else {
            ""
        };
        let shadow_call = x.candidate_ms.is_some()
            && x.served_by != Some(crate::record::ServedBy::Candidate.as_str());
        let k = (
            hour.clone(),
            route.clone(),
            self.key(Some(x.outcome)),
            version.clone(),
            self.key(x.served_by),
            self.key(x.fallback),
            self.key(Some(skip)),
        );
        match self.outcomes.get_mut(&k) {
            Some(a) => {
                a.n += 1;
                a.shadow_calls += i64::from(shadow_call);
                if x.started_at < a.first_at.as_str() {
                    x.started_at.clone_into(&mut a.first_at);
                }
                if x.started_at > a.last_at.as_str() {
                    x.started_at.clone_into(&mut a.last_at);
                }
            }
            None => {
                self.outcomes.insert(
                    k,
                    OutcomeAgg {
                        n: 1,
                        shadow_calls: i64::from(shadow_call),
                        first_at: x.started_at.to_owned(),
                        last_at: x.started_at.to_owned(),
                    },
                );
            }
        }
        *self
            .accounts
            .entry((
                hour.clone(),
                route.clone(),
                self.key(x.account),
                self.key(Some(x.outcome)),
                version,
            ))
            .or_default() += 1;
        for (side, ms) in [("legacy", x.legacy_ms), ("candidate", x.candidate_ms)] {
            if let Some(ms) = ms {
                *self
                    .latency
                    .entry((hour.clone(), route.clone(), side, bucket(ms)))
                    .or_default() += 1;
            }
        }
        if x.id == 0 {
            *self.unkept.entry(hour).or_default() += 1;
        }
        self.covered = self.covered.max(x.id);
    }

    /// Adds a record: its facts, its differences per (field pattern, kind) and (a `diff`) its
    /// signature. `id` 0: it keeps no row.
    pub(super) fn add_record(&mut self, r: &Record, id: i64, started_at: &str) {
        let m = &r.meta;
        let counts = r.counts();
        if r.outcome == Outcome::Diff {
            self.add_signature(
                started_at,
                m.route.as_deref(),
                m.account.as_deref(),
                counts.iter().map(|c| (c.field.as_str(), c.kind)),
            );
        }
        self.add(&Facts::of(r, id, started_at));
        for c in counts.iter() {
            self.add_field(id, started_at, m.route.as_deref(), &c.field, c.kind, c.n);
        }
    }

    /// Adds deltas kept apart (exchanges counted without a row when the writer's queue was
    /// full), their keys made this engine's.
    pub(super) fn merge(&mut self, o: &Deltas) {
        let k = |s: &String| (self.clean)(s).into_owned();
        for ((h, route, outcome, v, by, fb, skip), a) in &o.outcomes {
            let key = (h.clone(), k(route), k(outcome), k(v), k(by), k(fb), k(skip));
            match self.outcomes.get_mut(&key) {
                Some(x) => {
                    x.n += a.n;
                    x.shadow_calls += a.shadow_calls;
                    if a.first_at < x.first_at {
                        x.first_at.clone_from(&a.first_at);
                    }
                    if a.last_at > x.last_at {
                        x.last_at.clone_from(&a.last_at);
                    }
                }
                None => {
                    self.outcomes.insert(key, a.clone());
                }
            }
        }
        for ((h, route, account, outcome, v), n) in &o.accounts {
            let key = (h.clone(), k(route), k(account), k(outcome), k(v));
            *self.accounts.entry(key).or_default() += n;
        }
        for ((h, route, field, kind), (diffs, exchanges, first)) in &o.fields {
            let e = self
                .fields
                .entry((h.clone(), k(route), k(field), k(kind)))
                .or_insert((0, 0, NO_ROW));
            e.0 += diffs;
            e.1 += exchanges;
            e.2 = e.2.min(*first);
        }
        for ((h, route, side, b), n) in &o.latency {
            *self
                .latency
                .entry((h.clone(), k(route), side, *b))
                .or_default() += n;
        }
        for ((h, route, account, sig), n) in &o.signatures {
            // The pairs made this engine's, then signed again (a NUL is escaped in the text).
            let sig = match signature_pairs(sig) {
                Some(pairs) => {
                    let pairs: Vec<(String, String)> =
                        pairs.iter().map(|(f, kind)| (k(f), k(kind))).collect();
                    signature(pairs.iter().map(|(f, kind)| (f.as_str(), kind.as_str())))
                }
                None => sig.clone(),
            };
            let key = (h.clone(), k(route), k(account), sig);
            *self.signatures.entry(key).or_default() += n;
        }
        for (h, n) in &o.unkept {
            *self.unkept.entry(h.clone()).or_default() += n;
        }
    }

    /// The keys held: what bounds the memory of deltas kept apart.
    pub(super) fn keys(&self) -> usize {
        self.outcomes.len()
            + self.accounts.len()
            + self.fields.len()
            + self.latency.len()
            + self.signatures.len()
            + self.unkept.len()
    }

    /// Adds a `diff` exchange's signature: its differing (field pattern, kind) pairs, each once.
    pub(super) fn add_signature<'p>(
        &mut self,
        started_at: &str,
        route: Option<&str>,
        account: Option<&str>,
        pairs: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) {
        let clean = self.clean;
        let pairs: Vec<_> = pairs
            .into_iter()
            .map(|(f, k)| (clean(f), clean(k)))
            .collect();
        let key = (
            hour_of(started_at),
            self.key(route),
            self.key(account),
            signature(pairs.iter().map(|(f, k)| (f.as_ref(), k.as_ref()))),
        );
        *self.signatures.entry(key).or_default() += 1;
    }

    /// Adds one exchange's differences at a (field pattern, kind): `n` of them (`id` 0: the
    /// exchange keeps no row).
    pub(super) fn add_field(
        &mut self,
        id: i64,
        started_at: &str,
        route: Option<&str>,
        field: &str,
        kind: &str,
        n: i64,
    ) {
        let e = self
            .fields
            .entry((
                hour_of(started_at),
                self.key(route),
                self.key(Some(field)),
                self.key(Some(kind)),
            ))
            .or_insert((0, 0, NO_ROW));
        e.0 += n;
        e.1 += 1;
        if id != 0 {
            e.2 = e.2.min(id);
        }
    }
}

/// A window cut at whole hours: the rows of `head` and `tail` (either may be empty) and the
/// roll-ups of `hours`.
#[derive(Debug, Clone)]
pub(super) struct Split {
    pub head: Option<Filter>,
    /// Whole hours, `[from, to)`.
    pub hours: (SystemTime, SystemTime),
    pub tail: Option<Filter>,
}

const HOUR: Duration = Duration::from_secs(3600);

fn floor_hour(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(s - s % 3600)
}

impl Split {
    /// The window cut at the hours: its whole hours (`hours`, maybe none), the part before
    /// them (`head`, in the hour the window starts in) and the part after (`tail`, in the hour
    /// it ends in). A window within one hour is all `head`.
    pub(super) fn of(f: &Filter) -> Self {
        let start = floor_hour(f.from);
        let from = if start == f.from { start } else { start + HOUR };
        let to = floor_hour(f.to);
        if from > to {
            return Self {
                head: Some(f.clone()),
                hours: (start, start),
                tail: None,
            };
        }
        let part = |a: SystemTime, b: SystemTime| {
            (a < b).then(|| Filter {
                from: a,
                to: b,
                ..f.clone()
            })
        };
        Self {
            head: part(f.from, from),
            hours: (from, to),
            tail: part(to, f.to),
        }
    }

    /// The window widened to whole hours at each edge whose partial hour has exchanges without
    /// a row (their counts are only in the hour's roll-ups).
    fn widened<E: Engine + ?Sized>(mut self, e: &E) -> Result<Self, StoreError> {
        if let Some(h) = &self.head {
            let hour = floor_hour(h.from);
            if e.unkept(hour, hour + HOUR)? {
                self.head = None;
                self.hours.0 = hour;
                if self.hours.1 < hour + HOUR {
                    // A window within one hour: that hour whole.
                    self.hours.1 = hour + HOUR;
                    self.tail = None;
                }
            }
        }
        if let Some(t) = &self.tail {
            let hour = floor_hour(t.from);
            if e.unkept(hour, hour + HOUR)? {
                self.tail = None;
                self.hours.1 = hour + HOUR;
            }
        }
        Ok(self)
    }

    fn edges(&self) -> impl Iterator<Item = &Filter> {
        self.head.iter().chain(self.tail.iter())
    }

    /// The roll-ups' rows of the whole hours, then the rows' of the partial ones.
    fn gather<T>(
        &self,
        rolled: impl FnOnce((SystemTime, SystemTime)) -> Result<Vec<T>, StoreError>,
        mut rows: impl FnMut(&Filter) -> Result<Vec<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = rolled(self.hours)?;
        for edge in self.edges() {
            out.extend(rows(edge)?);
        }
        Ok(out)
    }
}

/// What an engine answers, from its rows (any window) and from its roll-ups (whole hours; the
/// filter's own window is ignored there).
pub(super) trait Engine {
    /// Whether reads take the roll-ups ([`READ_ROLLUPS_SQL`]).
    fn rolled_up(&self) -> Result<bool, StoreError>;

    /// Whether the hours from the one `from` falls in to the one before `to` have exchanges
    /// counted in their roll-ups without a row.
    fn unkept(&self, from: SystemTime, to: SystemTime) -> Result<bool, StoreError>;

    /// The noise-only and accepted-only queries over rows (any window).
    fn rows_noise_only(&self, f: &Filter, min_count: u64) -> Result<Vec<NoiseOnly>, StoreError>;
    fn rows_accepted_only(
        &self,
        f: &Filter,
        min_count: u64,
        now: SystemTime,
    ) -> Result<Vec<NoiseOnly>, StoreError>;
    /// (route key, account key, signature, `diff` exchanges) over whole hours.
    fn rolled_signatures(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(String, String, String, u64)>, StoreError>;
    /// (route key, field) learned as noise: differed in `min_count` pairs of legacy answers.
    fn noise_fields(&self, min_count: u64) -> Result<Vec<(String, String)>, StoreError>;
    /// Every triage mark.
    fn marks(&self) -> Result<Vec<crate::triage::Mark>, StoreError>;

    fn rows_outcomes(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError>;
    fn rolled_outcomes(
        &self,
        by: GroupBy,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<OutcomeCount>, StoreError>;

    fn rows_fields(&self, f: &Filter) -> Result<Vec<FieldRow>, StoreError>;
    fn rolled_fields(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<FieldRow>, StoreError>;

    fn rows_versions(&self, f: &Filter) -> Result<Vec<VersionRow>, StoreError>;
    fn rolled_versions(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<VersionRow>, StoreError>;

    fn rows_trend(&self, f: &Filter, bucket_secs: u64) -> Result<Vec<DayRow>, StoreError>;
    /// Buckets of an hour or of a UTC day only.
    fn rolled_trend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
        bucket_secs: u64,
    ) -> Result<Vec<DayRow>, StoreError>;

    fn rows_cohort(&self, f: &Filter) -> Result<Vec<CohortCount>, StoreError>;
    fn rolled_cohort(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<CohortCount>, StoreError>;

    fn rows_spend(&self, f: &Filter) -> Result<Spend, StoreError>;
    fn rolled_spend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Spend, StoreError>;

    fn rows_latencies(&self, f: &Filter, side: Side, step: u64) -> Result<Vec<f64>, StoreError>;
    /// (bucket, exchanges) of one side over the filter's route.
    fn rolled_latency(
        &self,
        f: &Filter,
        side: Side,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(i64, u64)>, StoreError>;
}

/// The split of a window when the roll-ups can answer it: they cover every row, the window has
/// whole hours (or widens to one: [`Split::widened`]), and (`by_route_only`) the filter names
/// no account or mapping version.
fn split<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    by_route_only: bool,
) -> Result<Option<Split>, StoreError> {
    if by_route_only && (f.account.is_some() || f.mapping_version.is_some()) {
        return Ok(None);
    }
    if f.from >= f.to || !e.rolled_up()? {
        return Ok(None);
    }
    // A window with no whole hour that widens to none either is read from its rows (every
    // exchange of its hours kept one).
    let s = Split::of(f).widened(e)?;
    Ok((s.hours.0 < s.hours.1).then_some(s))
}

/// The window a report over `f` covers: `f`, widened to whole hours at an edge whose partial
/// hour has exchanges without a row (every count is then exact over the widened window).
pub(super) fn window<E: Engine + ?Sized>(e: &E, f: &Filter) -> Result<Filter, StoreError> {
    let Some(s) = split(e, f, false)? else {
        return Ok(f.clone());
    };
    Ok(Filter {
        from: s.head.as_ref().map_or(s.hours.0, |h| h.from),
        to: s.tail.as_ref().map_or(s.hours.1, |t| t.to),
        ..f.clone()
    })
}

/// Whether every exchange of the window's hours kept its row (so the rows of the window are all
/// of its exchanges: a latency percentile over them is exact).
pub(super) fn every_row_kept<E: Engine + ?Sized>(e: &E, f: &Filter) -> Result<bool, StoreError> {
    Ok(f.from >= f.to || !e.unkept(floor_hour(f.from), f.to)?)
}

/// Noise-only exchanges per (route, account): the rows of the partial hours, the signatures of
/// the whole ones judged against the noise learned now.
pub(super) fn noise_only<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    min_count: u64,
) -> Result<Vec<NoiseOnly>, StoreError> {
    let Some(s) = split_signatures(e, f)? else {
        return e.rows_noise_only(f, min_count);
    };
    let noise = noise_set(e, min_count)?;
    if noise.is_empty() {
        return Ok(Vec::new());
    }
    let judge = |route: &str, pairs: &[(String, String)]| {
        pairs
            .iter()
            .all(|(field, _)| noise.contains(&(route.to_owned(), field.clone())))
    };
    by_signature(e, f, &s, judge, |x| e.rows_noise_only(x, min_count))
}

/// Accepted-only exchanges per (route, account), as [`noise_only`] does.
pub(super) fn accepted_only<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    min_count: u64,
    now: SystemTime,
) -> Result<Vec<NoiseOnly>, StoreError> {
    let Some(s) = split_signatures(e, f)? else {
        return e.rows_accepted_only(f, min_count, now);
    };
    let at = crate::record::rfc3339(now);
    let marks: Vec<crate::triage::Mark> = e.marks()?;
    let noise = noise_set(e, min_count)?;
    // As the rows' query: a mark of the pair's own kind decides; else one for every kind.
    let accepted = |route: &str, field: &str, kind: &str| {
        let own = marks.iter().find(|m| {
            m.pattern.route == route && m.pattern.field == field && m.pattern.kind == kind
        });
        let every = || {
            marks.iter().find(|m| {
                m.pattern.route == route && m.pattern.field == field && m.pattern.kind.is_empty()
            })
        };
        own.or_else(every).is_some_and(|m| m.excludes_at(&at))
    };
    let judge = |route: &str, pairs: &[(String, String)]| {
        let not_noise = pairs
            .iter()
            .filter(|(field, _)| !noise.contains(&(route.to_owned(), field.clone())));
        let mut any = false;
        for (field, kind) in not_noise {
            if !accepted(route, field, kind) {
                return false;
            }
            any = true;
        }
        any
    };
    by_signature(e, f, &s, judge, |x| e.rows_accepted_only(x, min_count, now))
}

/// The split for the signature counts: none under a mapping version (signatures are per route
/// and account).
fn split_signatures<E: Engine + ?Sized>(e: &E, f: &Filter) -> Result<Option<Split>, StoreError> {
    if f.mapping_version.is_some() {
        return Ok(None);
    }
    split(e, f, false)
}

fn noise_set<E: Engine + ?Sized>(
    e: &E,
    min_count: u64,
) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
    Ok(e.noise_fields(min_count)?.into_iter().collect())
}

/// Sums the whole hours' signatures that `judge` (route key, pairs) keeps and the partial
/// hours' `rows`, per (route, account).
fn by_signature<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    s: &Split,
    judge: impl Fn(&str, &[(String, String)]) -> bool,
    rows: impl FnMut(&Filter) -> Result<Vec<NoiseOnly>, StoreError>,
) -> Result<Vec<NoiseOnly>, StoreError> {
    let rolled = |h| {
        let mut out = Vec::new();
        for (route, account, sig, n) in e.rolled_signatures(f, h)? {
            let Some(pairs) = signature_pairs(&sig) else {
                continue;
            };
            if judge(&route, &pairs) {
                out.push(NoiseOnly {
                    route: RouteKey::from_route(unkey(route).as_deref()),
                    account: unkey(account),
                    n,
                });
            }
        }
        Ok(out)
    };
    let mut sum: BTreeMap<(RouteKey, Option<String>), u64> = BTreeMap::new();
    for x in s.gather(rolled, rows)? {
        *sum.entry((x.route, x.account)).or_default() += x.n;
    }
    Ok(sum
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((route, account), n)| NoiseOnly { route, account, n })
        .collect())
}

/// Exchanges per (`by`, outcome), ordered by key (`None` first) and outcome.
pub(super) fn outcome_counts<E: Engine + ?Sized>(
    e: &E,
    by: GroupBy,
    f: &Filter,
) -> Result<Vec<OutcomeCount>, StoreError> {
    let Some(s) = split(e, f, false)? else {
        return e.rows_outcomes(by, f);
    };
    let mut sum: BTreeMap<(Option<String>, String), u64> = BTreeMap::new();
    let rows = s.gather(|h| e.rolled_outcomes(by, f, h), |x| e.rows_outcomes(by, x))?;
    for c in rows {
        *sum.entry((c.key, c.outcome)).or_default() += c.n;
    }
    Ok(sum
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((key, outcome), n)| OutcomeCount { key, outcome, n })
        .collect())
}

/// The differing (field pattern, kind) pairs, ordered by field and kind.
pub(super) fn fields<E: Engine + ?Sized>(e: &E, f: &Filter) -> Result<Vec<FieldRow>, StoreError> {
    let Some(s) = split(e, f, true)? else {
        return e.rows_fields(f);
    };
    let mut sum: BTreeMap<(String, String), FieldRow> = BTreeMap::new();
    let rows = s.gather(|h| e.rolled_fields(f, h), |x| e.rows_fields(x))?;
    for r in rows {
        match sum.get_mut(&(r.field.clone(), r.kind.clone())) {
            Some(a) => {
                a.count += r.count;
                a.exchanges += r.exchanges;
                a.example_id = a.example_id.min(r.example_id);
            }
            None => {
                sum.insert((r.field.clone(), r.kind.clone()), r);
            }
        }
    }
    Ok(sum.into_values().collect())
}

/// The mapping versions, oldest first.
pub(super) fn mapping_versions<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
) -> Result<Vec<VersionRow>, StoreError> {
    let Some(s) = split(e, f, true)? else {
        return e.rows_versions(f);
    };
    let mut sum: HashMap<String, VersionRow> = HashMap::new();
    let rows = s.gather(|h| e.rolled_versions(f, h), |x| e.rows_versions(x))?;
    for r in rows {
        match sum.get_mut(&r.version) {
            Some(a) => {
                a.compared += r.compared;
                a.matched += r.matched;
                if r.first_seen < a.first_seen {
                    a.first_seen = r.first_seen;
                }
                if r.last_seen > a.last_seen {
                    a.last_seen = r.last_seen;
                }
            }
            None => {
                sum.insert(r.version.clone(), r);
            }
        }
    }
    let mut out: Vec<VersionRow> = sum.into_values().collect();
    out.sort_by(|a, b| {
        a.first_seen
            .cmp(&b.first_seen)
            .then(a.version.cmp(&b.version))
    });
    Ok(out)
}

/// Compared and matched exchanges per bucket, in order. Buckets shorter than an hour come from
/// the rows (the report picks them for windows of at most six hours).
pub(super) fn trend<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    bucket_secs: u64,
) -> Result<Vec<DayRow>, StoreError> {
    let fits = bucket_secs == 3_600 || bucket_secs >= 86_400;
    let s = if fits { split(e, f, true)? } else { None };
    let Some(s) = s else {
        return e.rows_trend(f, bucket_secs);
    };
    let mut sum: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let rows = s.gather(
        |h| e.rolled_trend(f, h, bucket_secs),
        |x| e.rows_trend(x, bucket_secs),
    )?;
    for r in rows {
        let a = sum.entry(r.day).or_default();
        a.0 += r.compared;
        a.1 += r.matched;
    }
    Ok(sum
        .into_iter()
        .map(|(day, (compared, matched))| DayRow {
            day,
            compared,
            matched,
        })
        .collect())
}

/// The candidate cohort's requests per (served by, fallback, outcome), most first.
pub(super) fn cohort_counts<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
) -> Result<Vec<CohortCount>, StoreError> {
    let Some(s) = split(e, f, true)? else {
        return e.rows_cohort(f);
    };
    let mut sum: BTreeMap<(String, Option<String>, String), u64> = BTreeMap::new();
    let rows = s.gather(|h| e.rolled_cohort(f, h), |x| e.rows_cohort(x))?;
    for c in rows {
        *sum.entry((c.served_by, c.fallback, c.outcome)).or_default() += c.n;
    }
    let mut out: Vec<CohortCount> = sum
        .into_iter()
        .map(|((served_by, fallback, outcome), n)| CohortCount {
            served_by,
            fallback,
            outcome,
            n,
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.n));
    Ok(out)
}

/// What shadow traffic spent and held back.
pub(super) fn shadow_spend<E: Engine + ?Sized>(e: &E, f: &Filter) -> Result<Spend, StoreError> {
    let Some(s) = split(e, f, true)? else {
        return e.rows_spend(f);
    };
    let mut out = e.rolled_spend(f, s.hours)?;
    for edge in s.edges() {
        let part = e.rows_spend(edge)?;
        out.candidate_calls += part.candidate_calls;
        for (k, n) in part.held_back {
            *out.held_back.entry(k).or_default() += n;
        }
    }
    out.held_back.retain(|_, n| *n > 0);
    Ok(out)
}

/// One side's latency histogram over the window, when the roll-ups can answer it (`None`: read
/// the rows).
pub(super) fn latency_histogram<E: Engine + ?Sized>(
    e: &E,
    f: &Filter,
    side: Side,
) -> Result<Option<Histogram>, StoreError> {
    let Some(s) = split(e, f, true)? else {
        return Ok(None);
    };
    let mut h = Histogram::default();
    for (b, n) in e.rolled_latency(f, side, s.hours)? {
        h.add(b, n);
    }
    for edge in s.edges() {
        for ms in e.rows_latencies(edge, side, 1)? {
            h.add(bucket(ms), 1);
        }
    }
    Ok(Some(h))
}

/// A side's name in `rollup_latency`.
pub(super) fn side_name(side: Side) -> &'static str {
    match side {
        Side::Legacy => "legacy",
        Side::Candidate => "candidate",
    }
}

/// An engine's spelling of the roll-up queries: its numbered placeholder (`?` or `$`), its
/// parameter for a text and for an hour's start, and a timestamp column as the rows' text
/// (`2026-11-29T13:05:00.000Z`, a prefix of it for SQLite's hour keys).
pub(super) struct Dialect<P> {
    pub mark: char,
    pub text: fn(String) -> P,
    pub hour: fn(SystemTime) -> P,
    pub ts: fn(&str) -> String,
}

/// A roll-up query's SQL (standard SQL: every number a `BIGINT`, both engines) and parameters.
pub(super) type Query<P> = (String, Vec<P>);

/// The conditions of whole hours `[from, to)` of a roll-up table aliased `r`, the filter's route
/// (`''` for unmatched requests) and, with `names`, its mapping version (and account, with
/// `accounts`).
fn rolled_where<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
    names: bool,
    accounts: bool,
) -> Query<P> {
    let m = d.mark;
    let mut sql = format!("r.hour >= {m}1 AND r.hour < {m}2");
    let mut params = vec![(d.hour)(hours.0), (d.hour)(hours.1)];
    let mut equal = |sql: &mut String, column: &str, value: String| {
        params.push((d.text)(value));
        sql.push_str(&format!(" AND r.{column} = {m}{}", params.len()));
    };
    if let Some(route) = &f.route {
        equal(&mut sql, "route", route_key(route));
    }
    if let (true, Some(v)) = (names, &f.mapping_version) {
        equal(&mut sql, "mapping_version", v.clone());
    }
    if let (true, true, Some(a)) = (names, accounts, &f.account) {
        equal(&mut sql, "account", a.clone());
    }
    (sql, params)
}

/// `CAST(sum(CASE WHEN <outcome is compared/matched> THEN r.n ELSE 0 END) AS BIGINT)`.
fn sum_where(outcomes: &[Outcome]) -> String {
    let names: Vec<String> = outcomes
        .iter()
        .map(|o| format!("'{}'", o.as_str()))
        .collect();
    format!(
        "CAST(sum(CASE WHEN r.outcome IN ({}) THEN r.n ELSE 0 END) AS BIGINT)",
        names.join(", ")
    )
}

/// (key, outcome, exchanges) per (`by`, outcome): per route without an account from the small
/// table, otherwise from the one with accounts.
pub(super) fn outcomes_sql<P>(
    d: &Dialect<P>,
    by: GroupBy,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (table, accounts) = match (by, &f.account) {
        (GroupBy::Route, None) => ("rollup_outcomes", false),
        _ => ("rollup_accounts", true),
    };
    let column = match by {
        GroupBy::Route => "route",
        GroupBy::Account => "account",
    };
    let (cond, params) = rolled_where(d, f, hours, true, accounts);
    (
        format!(
            "SELECT r.{column}, r.outcome, CAST(sum(r.n) AS BIGINT) FROM {table} r WHERE {cond}
             GROUP BY r.{column}, r.outcome"
        ),
        params,
    )
}

/// (route, account, signature, `diff` exchanges).
pub(super) fn signatures_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, true, true);
    (
        format!(
            "SELECT r.route, r.account, min(r.signature), CAST(sum(r.n) AS BIGINT)
             FROM rollup_signatures r WHERE {cond} GROUP BY r.route, r.account, r.hash"
        ),
        params,
    )
}

/// Whether hours `[{mark}1, {mark}2)` have exchanges without a row.
pub(super) fn unkept_sql(mark: char) -> String {
    format!(
        "SELECT EXISTS(SELECT 1 FROM rollup_unkept WHERE hour >= {mark}1 AND hour < {mark}2 AND n > 0)"
    )
}

/// Whether a store's roll-ups count exchanges that kept no row: then they cannot be built
/// again from the rows.
pub(super) const ANY_UNKEPT_SQL: &str = "SELECT EXISTS(SELECT 1 FROM rollup_unkept WHERE n > 0)";

/// (route, field) learned as noise.
pub(super) fn noise_fields_sql(mark: char) -> String {
    format!("SELECT route, field FROM noise_fields WHERE differed >= {mark}1")
}

/// (field, kind, differences, exchanges, first exchange id).
pub(super) fn fields_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, false, false);
    (
        format!(
            "SELECT r.field, r.kind, CAST(sum(r.diffs) AS BIGINT), CAST(sum(r.exchanges) AS BIGINT),
                    CAST(min(r.first_id) AS BIGINT)
             FROM rollup_fields r WHERE {cond} GROUP BY r.field, r.kind"
        ),
        params,
    )
}

/// (version, first start, last start, compared, matched).
pub(super) fn versions_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, false, false);
    (
        format!(
            "SELECT r.mapping_version, {}, {}, {}, {}
             FROM rollup_outcomes r WHERE {cond} AND r.mapping_version <> ''
             GROUP BY r.mapping_version",
            (d.ts)("min(r.first_at)"),
            (d.ts)("max(r.last_at)"),
            sum_where(&Outcome::COMPARED),
            sum_where(&[Outcome::Match]),
        ),
        params,
    )
}

/// (hour as the rows' text, compared, matched); [`bucket_label`] makes the trend's label.
pub(super) fn trend_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, false, false);
    (
        format!(
            "SELECT {}, {}, {} FROM rollup_outcomes r WHERE {cond} GROUP BY r.hour",
            (d.ts)("r.hour"),
            sum_where(&Outcome::COMPARED),
            sum_where(&[Outcome::Match]),
        ),
        params,
    )
}

/// The label of a trend bucket of an hour or a UTC day, from a roll-up's hour as text
/// (`2026-11-29T13…`): the rows' labels (`2026-11-29`, `2026-11-29T13:00Z`).
pub(super) fn bucket_label(hour: &str, bucket_secs: u64) -> String {
    let hour = hour.get(..13).unwrap_or(hour);
    if bucket_secs >= 86_400 {
        hour.get(..10).unwrap_or(hour).to_owned()
    } else {
        format!("{hour}:00Z")
    }
}

/// (served by, fallback, outcome, requests) of the candidate cohort.
pub(super) fn cohort_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, false, false);
    (
        format!(
            "SELECT r.served_by, r.fallback, r.outcome, CAST(sum(r.n) AS BIGINT) FROM rollup_outcomes r
             WHERE {cond} AND (r.served_by = '{}' OR r.fallback <> '')
             GROUP BY r.served_by, r.fallback, r.outcome",
            crate::record::ServedBy::Candidate.as_str()
        ),
        params,
    )
}

/// ('candidate_calls', shadow calls), then (reason, exchanges) per reason that held a request
/// back for a quota.
pub(super) fn spend_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, params) = rolled_where(d, f, hours, false, false);
    (
        format!(
            "SELECT 'candidate_calls', CAST(coalesce(sum(r.shadow_calls), 0) AS BIGINT)
             FROM rollup_outcomes r WHERE {cond}
             UNION ALL
             SELECT r.skip_reason, CAST(sum(r.n) AS BIGINT) FROM rollup_outcomes r
             WHERE {cond} AND r.outcome = '{}' AND r.skip_reason IN ({})
             GROUP BY r.skip_reason",
            Outcome::SKIPPED,
            super::sql::HELD_BACK
        ),
        params,
    )
}

/// (bucket, exchanges) of one side.
pub(super) fn latency_sql<P>(
    d: &Dialect<P>,
    f: &Filter,
    side: Side,
    hours: (SystemTime, SystemTime),
) -> Query<P> {
    let (cond, mut params) = rolled_where(d, f, hours, false, false);
    params.push((d.text)(side_name(side).to_owned()));
    (
        format!(
            "SELECT CAST(r.bucket AS BIGINT), CAST(sum(r.n) AS BIGINT) FROM rollup_latency r
             WHERE {cond} AND r.side = {}{} GROUP BY r.bucket",
            d.mark,
            params.len()
        ),
        params,
    )
}

/// What the rows of [`spend_sql`] say.
pub(super) fn spend_of(rows: impl IntoIterator<Item = (String, i64)>) -> Spend {
    let mut out = Spend::default();
    for (kind, n) in rows {
        let n = n.max(0) as u64;
        if kind == "candidate_calls" {
            out.candidate_calls = n;
        } else if n > 0 {
            out.held_back.insert(kind, n);
        }
    }
    out
}

/// The route key of a roll-up table aliased `alias` (`''` for unmatched requests).
pub(super) fn route_key(route: &RouteKey) -> String {
    route.name().unwrap_or("").to_owned()
}

/// `''` back to `None`.
pub(super) fn unkey(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The fill's signatures: the `diff_fields` rows of one exchange at a time (read in exchange
/// order), added as one signature when the next exchange starts.
#[derive(Default)]
pub(super) struct Signed {
    id: Option<i64>,
    started_at: String,
    route: Option<String>,
    account: Option<String>,
    pairs: Vec<(String, String)>,
}

impl Signed {
    pub(super) fn row(
        &mut self,
        d: &mut Deltas,
        id: i64,
        started_at: String,
        route: Option<String>,
        account: Option<String>,
        pair: (String, String),
    ) {
        if self.id != Some(id) {
            self.flush(d);
            *self = Self {
                id: Some(id),
                started_at,
                route,
                account,
                pairs: Vec::new(),
            };
        }
        self.pairs.push(pair);
    }

    pub(super) fn flush(&mut self, d: &mut Deltas) {
        if self.id.take().is_some() {
            let pairs = self.pairs.iter().map(|(f, k)| (f.as_str(), k.as_str()));
            d.add_signature(
                &self.started_at,
                self.route.as_deref(),
                self.account.as_deref(),
                pairs,
            );
        }
    }
}

/// The highest exchange id a store holds (0: none): what a batch's deltas are `before`.
pub(super) const MAX_ID_SQL: &str = "SELECT coalesce(max(id), 0) FROM exchanges";

/// Whether a store's roll-ups cover every exchange row (standard SQL, both engines).
pub(super) const ROLLED_UP_SQL: &str =
    "SELECT coalesce((SELECT covered FROM rollup_state WHERE id = 1), 0)
            >= coalesce((SELECT max(id) FROM exchanges), 0)";

/// Whether reads take the roll-ups: when they cover every row, and also when they count
/// exchanges that kept no row (then the rows are a sample, and rows another program wrote,
/// left out of the roll-ups, cost less than reading the sample as if it were everything).
pub(super) const READ_ROLLUPS_SQL: &str =
    "SELECT coalesce((SELECT covered FROM rollup_state WHERE id = 1), 0)
            >= coalesce((SELECT max(id) FROM exchanges), 0)
         OR EXISTS(SELECT 1 FROM rollup_unkept WHERE n > 0)";

/// What `shadowdiff migrate` did to the roll-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// They covered every row: nothing to do.
    Current,
    /// They did not (rows another program wrote) and were built again from the rows.
    Rebuilt,
    /// They did not, and could not be built again: they count exchanges that kept no row
    /// (`[store] exchanges`), which a rebuild from the rows would lose. Reports still read the
    /// roll-ups, without the rows another program wrote.
    Refused,
}

/// The roll-up tables with an hour.
pub(super) const TABLES: [&str; 6] = [
    "rollup_outcomes",
    "rollup_accounts",
    "rollup_fields",
    "rollup_latency",
    "rollup_signatures",
    "rollup_unkept",
];

/// A batch's field-presence counts: (route's key, pattern, hour) to the exchanges where the
/// pattern was present, `hours[i]` being `batch[i]`'s hour as the engine writes it. Records
/// whose comparison came from the memo share one list of patterns: each list is counted once
/// per route and hour, then spread, instead of one map entry per pattern per exchange.
pub(super) fn presence<'a>(
    batch: &'a [Box<Record>],
    hours: &'a [String],
) -> HashMap<(&'a str, &'a str, &'a str), i64, xxhash_rust::xxh3::Xxh3Builder> {
    type Lists<'a> = HashMap<
        (&'a str, *const Vec<String>, &'a str),
        (&'a [String], i64),
        xxhash_rust::xxh3::Xxh3Builder,
    >;
    let mut lists = Lists::default();
    for (r, hour) in batch.iter().zip(hours) {
        let route = super::sql::aggregate_key(r.meta.route.as_deref());
        lists
            .entry((route, std::sync::Arc::as_ptr(&r.present), hour.as_str()))
            .or_insert((r.present.as_slice(), 0))
            .1 += 1;
    }
    let mut out = HashMap::default();
    for ((route, _, hour), (list, n)) in lists {
        for f in list {
            *out.entry((route, f.as_str(), hour)).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_counts_a_shared_list_once_per_exchange_that_holds_it() {
        let at = std::time::SystemTime::UNIX_EPOCH;
        let shared = std::sync::Arc::new(vec!["/a".to_owned(), "/b".to_owned()]);
        let record = |present: &std::sync::Arc<Vec<String>>, route: Option<&str>| {
            let mut r = crate::store::writer::test_record(at);
            r.meta.route = route.map(str::to_owned);
            r.present = present.clone();
            Box::new(r)
        };
        let own = std::sync::Arc::new(vec!["/b".to_owned(), "/c".to_owned()]);
        let batch = vec![
            record(&shared, Some("d")),
            record(&shared, Some("d")),
            record(&shared, Some("d")),
            record(&own, Some("d")),
            record(&shared, Some("e")),
            record(&shared, Some("d")),
        ];
        let hours: Vec<String> = ["h1", "h1", "h1", "h1", "h1", "h2"]
            .map(str::to_owned)
            .to_vec();
        let mut got: Vec<_> = presence(&batch, &hours).into_iter().collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [
                (("d", "/a", "h1"), 3),
                (("d", "/a", "h2"), 1),
                (("d", "/b", "h1"), 4),
                (("d", "/b", "h2"), 1),
                (("d", "/c", "h1"), 1),
                (("e", "/a", "h1"), 1),
                (("e", "/b", "h1"), 1),
            ]
        );
    }

    #[test]
    fn a_bucket_holds_latencies_within_its_stated_error() {
        for ms in [0.0011, 0.5, 1.0, 3.7, 42.0, 199.9, 1234.5, 86_400_000.0] {
            let v = bucket_value(bucket(ms));
            assert!(((v - ms) / ms).abs() <= 0.023, "{ms} ms reported as {v} ms");
        }
        assert_eq!(bucket(-5.0), bucket(0.0));
        assert_eq!(bucket(f64::NAN), bucket(0.0));
        assert_eq!(bucket(f64::INFINITY), bucket(MAX_MS));
    }

    #[test]
    fn percentiles_are_the_nearest_rank_of_the_buckets() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.add(bucket(f64::from(ms)), 1);
        }
        let p50 = h.percentile(0.5);
        let p99 = h.percentile(0.99);
        assert!((p50 - 50.0).abs() / 50.0 <= 0.023, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 <= 0.023, "{p99}");
        assert_eq!(Histogram::default().percentile(0.5), 0.0);
    }

    #[test]
    fn a_window_is_cut_at_whole_hours() {
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let f = |a: &str, b: &str| Filter {
            from: at(a),
            to: at(b),
            route: None,
            account: None,
            mapping_version: None,
        };
        let s = Split::of(&f("2026-11-29T10:15:00Z", "2026-11-29T13:30:00Z"));
        assert_eq!(
            s.hours,
            (at("2026-11-29T11:00:00Z"), at("2026-11-29T13:00:00Z"))
        );
        assert_eq!(s.head.unwrap().to, at("2026-11-29T11:00:00Z"));
        assert_eq!(s.tail.unwrap().from, at("2026-11-29T13:00:00Z"));
        let s = Split::of(&f("2026-11-29T10:00:00Z", "2026-11-29T12:00:00Z"));
        assert!(s.head.is_none() && s.tail.is_none());
        // Across one hour's start without a whole hour: a head and a tail, no hours.
        let s = Split::of(&f("2026-11-29T10:15:00Z", "2026-11-29T11:30:00Z"));
        assert_eq!(s.hours.0, s.hours.1);
        assert_eq!(s.head.unwrap().to, at("2026-11-29T11:00:00Z"));
        assert_eq!(s.tail.unwrap().from, at("2026-11-29T11:00:00Z"));
        // Within one hour: all head.
        let s = Split::of(&f("2026-11-29T10:15:00Z", "2026-11-29T10:30:00Z"));
        assert!(s.tail.is_none() && s.hours.0 == s.hours.1);
        assert_eq!(s.head.unwrap().from, at("2026-11-29T10:15:00Z"));
    }
}
