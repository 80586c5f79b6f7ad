//! Parity reports: one aggregation, read through the store's query API, rendered
//! as JSON, Markdown or a self-contained HTML page.
//!
//! Definitions: `compared` counts exchanges whose two responses were both received and compared
//! (outcomes `match` and `diff`), `matched` those with no difference left (`match`),
//! `noise_only` those whose differences are all at fields learned as noise
//! ([`crate::classify`]), and `parity = (matched + noise_only) / compared` (1.0 when nothing was
//! compared; the gate treats too few samples as a failure of its own).

pub mod hint;
pub mod render;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::classify::{self, Class, NoiseField, RouteClasses};
use crate::record::{rfc3339, Outcome, RouteKey};
use crate::store::{GroupBy, Reader, Side, StoreError};

pub use crate::record::UNMATCHED;
pub use crate::store::Filter;
/// Field patterns listed per route at most (the most frequent first).
const MAX_FIELDS: usize = 50;

/// A report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
}

/// What follows a window widened to whole hours in text and HTML (nothing after one that was
/// not).
/// What a report says when [`Report::filtered_from_kept_rows`].
pub const FROM_KEPT_ROWS: &str = "under this filter, field statistics and their classes, latency, \
     trend, mapping versions, cohort and quota spend come from the kept rows, a sample ([store] \
     exchanges); the counts and parity are exact";

pub fn widened_note(w: &Window) -> &'static str {
    if w.widened {
        " (widened to whole hours: exchanges there were counted without a row, [store] exchanges)"
    } else {
        ""
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub from: String,
    pub to: String,
    /// The window asked for was widened to whole hours at an edge whose partial hour has
    /// exchanges counted without a row (`[store] exchanges`): `from`/`to` are the hours'.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub widened: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub exchanges: u64,
    pub compared: u64,
    pub matched: u64,
    /// `diff` exchanges whose every difference is at a field learned as noise.
    pub noise_only: u64,
    pub parity: f64,
    pub outcomes: BTreeMap<String, u64>,
    /// `diff` exchanges whose every difference is at a pattern triaged `accepted` (not expired)
    /// or noise, one at least accepted ([`crate::triage`]): not in `parity`; a gate with
    /// `accepted = "exclude"` counts them as matching.
    #[serde(skip_serializing_if = "is_zero")]
    pub accepted_only: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A triage mark as a report shows it: with whether it has expired at the report's end.
#[derive(Debug, Clone, Serialize)]
pub struct TriageMark {
    #[serde(flatten)]
    pub mark: crate::triage::Mark,
    pub expired: bool,
}

impl Default for Counts {
    /// Nothing counted: parity 1.0 (README: "1.0 when nothing was compared"; the human
    /// renderings say "nothing compared" instead of a percentage).
    fn default() -> Self {
        Self {
            exchanges: 0,
            compared: 0,
            matched: 0,
            noise_only: 0,
            parity: 1.0,
            outcomes: BTreeMap::new(),
            accepted_only: 0,
        }
    }
}

impl Counts {
    /// The parity as people read it: a percentage, or "nothing compared".
    pub fn parity_text(&self) -> String {
        if self.compared == 0 {
            NOTHING_COMPARED.to_owned()
        } else {
            render::pct(self.parity)
        }
    }

    fn add(&mut self, outcome: &str, n: u64) {
        self.exchanges += n;
        if Outcome::is_compared_name(outcome) {
            self.compared += n;
        }
        if outcome == Outcome::Match.as_str() {
            self.matched += n;
        }
        *self.outcomes.entry(outcome.to_owned()).or_default() += n;
        self.parity = parity(self.matched + self.noise_only, self.compared);
    }

    fn add_noise_only(&mut self, n: u64) {
        self.noise_only += n;
        self.parity = parity(self.matched + self.noise_only, self.compared);
    }

    /// The parity with the exchanges that differ only at accepted patterns counted as matching
    /// (a gate's `accepted = "exclude"`).
    pub fn parity_excluding_accepted(&self) -> f64 {
        parity(
            self.matched + self.noise_only + self.accepted_only,
            self.compared,
        )
    }

    /// Exchanges for which the candidate was called (everything but `skipped`).
    pub fn mirrored(&self) -> u64 {
        self.exchanges - self.outcomes.get(Outcome::SKIPPED).copied().unwrap_or(0)
    }

    /// Exchanges with this outcome (all skip reasons together for `Skipped`).
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.as_str()).copied().unwrap_or(0)
    }
}

/// The counts of the exchanges that matched a configured route: what a gate judges overall
/// (an unmatched request has no counterpart the migration promised; its exchanges never count
/// in a gate's parity).
pub fn routed_totals(report: &Report) -> Counts {
    let mut c = Counts::default();
    for r in report.routes.iter().filter(|r| r.route != UNMATCHED) {
        for (outcome, n) in &r.counts.outcomes {
            c.add(outcome, *n);
        }
        c.add_noise_only(r.counts.noise_only);
        c.accepted_only += r.counts.accepted_only;
    }
    c
}

/// What the human renderings show for the parity of a scope where nothing was compared.
pub const NOTHING_COMPARED: &str = "nothing compared";

fn parity(matched: u64, compared: u64) -> f64 {
    if compared == 0 {
        1.0
    } else {
        matched as f64 / compared as f64
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub legacy_p50: f64,
    pub legacy_p99: f64,
    pub candidate_p50: f64,
    pub candidate_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub legacy: Value,
    pub candidate: Value,
    pub exchange_id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldStat {
    pub field: String,
    pub kind: String,
    /// Difference rows (an array field can differ several times in one exchange).
    pub count: u64,
    /// Exchanges with this difference.
    pub exchanges: u64,
    /// `exchanges` / the route's compared exchanges.
    pub rate: f64,
    /// Over the window: `systematic`, `sporadic` or `noise` ([`crate::classify`]); by field
    /// pattern, all kinds together.
    pub class: Class,
    /// Compared exchanges where the field was present (the classification's denominator).
    pub present: u64,
    pub example: Example,
    /// What most likely closes a systematic difference ([`hint`]), read off the example.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likely_fix: Option<String>,
    /// The pattern's triage mark, if any ([`crate::triage::mark_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triage: Option<TriageMark>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: String,
    pub compared: u64,
    pub matched: u64,
    pub parity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub route: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub latency_ms: Latency,
    pub fields: Vec<FieldStat>,
    /// Fields learned as noise on this route (second legacy calls, `[diff.noise]`).
    pub noise: Vec<NoiseField>,
    /// The mapping versions seen in the window, oldest first: `report --mapping-version V`
    /// gives the parity since a mapping change.
    pub mapping_versions: Vec<VersionStat>,
    pub trend: Vec<Day>,
    /// The width of the trend's buckets (`5m`, `1h`, `1d`): sized to the window.
    pub trend_bucket: String,
    /// Every field pattern compared, with its presence and parity, and those never exercised
    /// (`None` without details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<crate::coverage::RouteCoverage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStat {
    pub version: String,
    pub first_seen: String,
    pub last_seen: String,
    pub compared: u64,
    pub matched: u64,
    /// Without noise exclusion (see the route's parity for that).
    pub parity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub account: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The account's differing fields (route, field pattern, kind), most exchanges first (the
    /// first [`ACCOUNT_FIELDS`]; none without details).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<AccountField>,
}

/// Differing fields listed per account at most.
pub const ACCOUNT_FIELDS: usize = 10;

/// Each account's differing fields are counted over the window's latest this many exchanges at
/// most (the whole window when it has fewer): the per-account breakdown joins every difference row
/// to its exchange, 9 s over 1M exchanges; bounded, it costs a fraction of a second
/// (BENCHMARKS.md §3). [`Report::account_fields_over`] says when it applied.
pub const ACCOUNT_FIELDS_OVER: usize = 50_000;

/// One differing field of one account.
#[derive(Debug, Clone, Serialize)]
pub struct AccountField {
    pub route: String,
    pub field: String,
    pub kind: String,
    pub exchanges: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// One checked criterion of a gate.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub criterion: String,
    /// `all`, or `route:NAME` for a per-route override.
    pub scope: String,
    pub threshold: f64,
    /// `None` when it could not be measured (no samples).
    pub measured: Option<f64>,
    /// The Wilson interval of a share (parity, error rate) at the gate's confidence: the bound
    /// the decision rests on is its lower end for a minimum, its upper end for a maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A gate's verdict (the `gate` module evaluates it; a report carries the config's).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub phase: String,
    pub pass: bool,
    pub window: Window,
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The criteria that failed.
    pub fn failing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.pass)
    }

    /// The names of the criteria that failed.
    pub fn failing_names(&self) -> Vec<&str> {
        self.failing().map(|c| c.criterion.as_str()).collect()
    }
}

/// The whole report: totals, per route (with fields, noise, mapping versions, trend), per
/// account, and the accounts that need re-auth (docs/reports.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub window: Window,
    pub totals: Counts,
    pub routes: Vec<RouteReport>,
    pub accounts: Vec<AccountReport>,
    /// Accounts in the `needs_reauth` state now (candidate 401/403 `[accounts] reauth_after`
    /// times in a row while legacy succeeded, no candidate success since).
    pub needs_reauth: Vec<String>,
    /// Accounts with any candidate 401/403 in the window.
    pub auth_errors: Vec<String>,
    /// Every account's health (those that ever had a candidate auth error).
    pub account_health: Vec<crate::store::AccountHealth>,
    /// The id crosswalk's coverage per account and kind (`[ids]`; not windowed: the pairs held
    /// now, the ids still without a partner, the conflicts met).
    pub ids: Vec<crate::store::IdCoverage>,
    /// The candidate's quota spent by shadow traffic in the window, and what was held back to
    /// spare it (legacy's second calls are counted by a metric, not in the store).
    pub shadow_spend: crate::store::Spend,
    /// The rollout in the window: the candidate cohort's requests (served by the candidate or
    /// fallen back to legacy, by reason) and the changes of phase.
    pub rollout: RolloutSection,
    /// Mapping versions judged on recorded traffic (`rediff --record`) in the window: not live
    /// traffic, listed apart from the routes' own versions.
    pub rediffs: Vec<crate::store::RediffRow>,
    /// Under an account or mapping-version filter, over a window where some exchanges kept no
    /// row (`[store] exchanges`): the field statistics and their classes, latency, trend,
    /// mapping versions, cohort and quota spend are read from the kept rows (a sample); the
    /// outcome counts and parity are exact (noise-only and accepted-only too under an account
    /// filter).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub filtered_from_kept_rows: bool,
    /// The exchanges each account's `fields` were counted over: the window's latest ones when it
    /// has more than [`ACCOUNT_FIELDS_OVER`] (`None`: the whole window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_fields_over: Option<u64>,
    /// The verdicts of the config's gates over the window (`report` with a config that has
    /// `[gate.PHASE]` tables), in the rollout's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Verdict>,
    /// Every triage mark (not windowed: the marks as they are now), expired ones included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub triage: Vec<TriageMark>,
}

/// The rollout part of a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RolloutSection {
    /// Requests of the candidate cohort (served by the candidate, or fallen back).
    pub cohort_requests: u64,
    /// Of them, served by the candidate.
    pub served_by_candidate: u64,
    /// Of them, answered by legacy after all, per reason.
    pub fallbacks: BTreeMap<String, u64>,
    /// Of them, compared (both answers in), by the served rules: exact at every field but
    /// the rules declared `serve_safe`.
    pub served_compared: u64,
    /// Of the compared, `match`: strict served parity.
    pub served_matched: u64,
    /// Changes of phase in the window, oldest first (the last 100).
    pub events: Vec<crate::store::RolloutEvent>,
}

/// What to compute besides the counts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-route differing fields, field coverage and daily trend (the gate needs none).
    pub details: bool,
    /// Classification thresholds (`[diff] systematic_rate`, `[diff.noise] min_count`).
    pub classes: classify::Settings,
    /// Per route, the field patterns of its reference document (`[[routes]] reference`).
    pub references: std::sync::Arc<BTreeMap<String, Vec<String>>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            details: true,
            classes: classify::Settings::default(),
            references: std::sync::Arc::default(),
        }
    }
}

/// The reference documents' field patterns of a config's routes, for [`Options::references`].
pub fn references(cfg: &crate::config::Config) -> std::sync::Arc<BTreeMap<String, Vec<String>>> {
    std::sync::Arc::new(
        cfg.routes
            .iter()
            .filter(|r| !r.reference.is_empty())
            .map(|r| (r.name.clone(), r.reference.clone()))
            .collect(),
    )
}

/// Builds the report with the default options.
pub fn build(store: &dyn Reader, f: &Filter) -> Result<Report, ReportError> {
    build_with(store, f, &Options::default())
}

/// Builds the report, computing what `opts` asks for.
pub fn build_with(store: &dyn Reader, f: &Filter, opts: &Options) -> Result<Report, ReportError> {
    let exact = store.exact_window(f)?;
    let widened = exact.from != f.from || exact.to != f.to;
    let f = &exact;
    let every_row_kept = store.every_row_kept(f)?;
    let filtered_from_kept_rows =
        (f.account.is_some() || f.mapping_version.is_some()) && !every_row_kept;
    let mut totals = Counts::default();
    let mut routes: BTreeMap<RouteKey, Counts> = BTreeMap::new();
    for c in store.outcome_counts(GroupBy::Route, f)? {
        totals.add(&c.outcome, c.n);
        routes
            .entry(RouteKey::from_route(c.key.as_deref()))
            .or_default()
            .add(&c.outcome, c.n);
    }
    let noise_only = store.noise_only(f, opts.classes.noise_min_count)?;
    for x in &noise_only {
        totals.add_noise_only(x.n);
        if let Some(c) = routes.get_mut(&x.route) {
            c.add_noise_only(x.n);
        }
    }
    // Triage marks as they are at the window's end (now, for a window ending now).
    let at = rfc3339(f.to.min(std::time::SystemTime::now()));
    let marks: Vec<TriageMark> = store
        .triage_marks()?
        .into_iter()
        .map(|mark| TriageMark {
            expired: !mark.holds_at(&at),
            mark,
        })
        .collect();
    let accepted_only = if marks.iter().any(|m| m.mark.excludes_at(&at)) {
        store.accepted_only(
            f,
            opts.classes.noise_min_count,
            f.to.min(std::time::SystemTime::now()),
        )?
    } else {
        Vec::new()
    };
    for x in &accepted_only {
        totals.accepted_only += x.n;
        if let Some(c) = routes.get_mut(&x.route) {
            c.accepted_only += x.n;
        }
    }

    let mut route_reports = Vec::with_capacity(routes.len());
    for (key, counts) in routes {
        let rf = Filter {
            route: Some(key.clone()),
            ..f.clone()
        };
        let latency = latency(store, &rf, counts.exchanges)?;
        let coverage = if opts.details {
            let reference = key
                .name()
                .and_then(|n| opts.references.get(n))
                .map_or(&[][..], Vec::as_slice);
            Some(crate::coverage::route_coverage(
                store,
                f,
                &key,
                counts.compared,
                reference,
            )?)
        } else {
            None
        };
        // Buckets under an hour are counted from rows: over a sample of rows, hours (from the
        // roll-ups) instead.
        let bucket = if every_row_kept {
            trend_bucket(f)
        } else {
            trend_bucket(f).max(3_600)
        };
        let (fields, noise, mapping_versions, trend) = if opts.details {
            let classes = RouteClasses::load(
                store,
                &key,
                (f.from, f.to),
                counts.compared,
                f.account.is_none() && f.mapping_version.is_none(),
                opts.classes,
            )?;
            (
                fields(store, &rf, counts.compared, &classes, &marks)?,
                classes.noise,
                versions(store, &rf)?,
                trend(store, &rf, bucket)?,
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new(), Vec::new())
        };
        route_reports.push(RouteReport {
            route: key.label().to_owned(),
            counts,
            latency_ms: latency,
            fields,
            noise,
            mapping_versions,
            trend,
            trend_bucket: humantime::format_duration(std::time::Duration::from_secs(bucket))
                .to_string(),
            coverage,
        });
    }
    route_reports.sort_by(|a, b| {
        b.counts
            .exchanges
            .cmp(&a.counts.exchanges)
            .then(a.route.cmp(&b.route))
    });

    let mut accounts: BTreeMap<String, Counts> = BTreeMap::new();
    for c in store.outcome_counts(GroupBy::Account, f)? {
        if let Some(a) = c.key {
            accounts.entry(a).or_default().add(&c.outcome, c.n);
        }
    }
    for x in noise_only {
        if let Some(c) = x.account.and_then(|a| accounts.get_mut(&a)) {
            c.add_noise_only(x.n);
        }
    }
    for x in accepted_only {
        if let Some(c) = x.account.and_then(|a| accounts.get_mut(&a)) {
            c.accepted_only += x.n;
        }
    }
    let auth_errors = accounts
        .iter()
        .filter(|(_, c)| c.outcome(Outcome::CandidateAuthError) > 0)
        .map(|(a, _)| a.clone())
        .collect();
    let account_health = store.account_health()?;
    let needs_reauth = account_health
        .iter()
        .filter(|h| h.state == crate::store::NEEDS_REAUTH)
        .map(|h| h.account.clone())
        .collect();
    let mut accounts: Vec<AccountReport> = accounts
        .into_iter()
        .map(|(account, counts)| AccountReport {
            account,
            counts,
            fields: Vec::new(),
        })
        .collect();
    let account_fields_over =
        (totals.exchanges > ACCOUNT_FIELDS_OVER as u64).then_some(ACCOUNT_FIELDS_OVER as u64);
    if opts.details && !accounts.is_empty() {
        account_fields(store, f, &mut accounts)?;
    }
    accounts.sort_by(|a, b| {
        a.counts
            .parity
            .total_cmp(&b.counts.parity)
            .then(a.account.cmp(&b.account))
    });

    let mut rollout = RolloutSection {
        events: store.rollout_events(f.from, f.to, 100)?,
        ..RolloutSection::default()
    };
    for c in store.cohort_counts(f)? {
        rollout.cohort_requests += c.n;
        if c.served_by == crate::record::ServedBy::Candidate.as_str() {
            rollout.served_by_candidate += c.n;
        }
        if let Some(reason) = c.fallback {
            *rollout.fallbacks.entry(reason).or_default() += c.n;
        }
        if crate::record::Outcome::is_compared_name(&c.outcome) {
            rollout.served_compared += c.n;
            if c.outcome == crate::record::Outcome::Match.as_str() {
                rollout.served_matched += c.n;
            }
        }
    }

    Ok(Report {
        window: Window {
            from: rfc3339(f.from),
            to: rfc3339(f.to),
            widened,
        },
        totals,
        routes: route_reports,
        accounts,
        needs_reauth,
        auth_errors,
        account_health,
        ids: store.id_coverage()?,
        shadow_spend: store.shadow_spend(f)?,
        rollout,
        rediffs: store.rediffs(f.from, f.to)?,
        account_fields_over,
        filtered_from_kept_rows,
        gates: Vec::new(),
        triage: marks,
    })
}

/// The trend's bucket for the window (seconds): about 12 to 48 points for windows up to three
/// days, days beyond.
pub fn trend_bucket(f: &Filter) -> u64 {
    let secs = f.to.duration_since(f.from).map_or(86_400, |d| d.as_secs());
    match secs {
        0..=3_600 => 300,
        3_601..=21_600 => 900,
        21_601..=259_200 => 3_600,
        _ => 86_400,
    }
}

/// Fills each account's differing fields (the most frequent first, [`ACCOUNT_FIELDS`] at most).
fn account_fields(
    store: &dyn Reader,
    f: &Filter,
    accounts: &mut [AccountReport],
) -> Result<(), ReportError> {
    let index: std::collections::HashMap<String, usize> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.account.clone(), i))
        .collect();
    // Rows come most exchanges first.
    for row in store.field_accounts(f, None, ACCOUNT_FIELDS_OVER)? {
        let Some(&i) = row.account.as_ref().and_then(|a| index.get(a)) else {
            continue;
        };
        let list = &mut accounts[i].fields;
        if list.len() < ACCOUNT_FIELDS {
            list.push(AccountField {
                route: RouteKey::from_route(row.route.as_deref())
                    .label()
                    .to_owned(),
                field: row.field,
                kind: row.kind,
                exchanges: row.exchanges,
                first_seen: row.first_seen,
                last_seen: row.last_seen,
            });
        }
    }
    Ok(())
}

/// Latency percentiles are exact over up to this many exchanges per scope. Beyond, they come
/// from the hourly roll-ups' histograms (within 2.3 % of the exact value: `store::Histogram`),
/// or, where those cannot answer (an account or a mapping version named), from an evenly spread,
/// deterministic sample (every k-th exchange by id) of about this size, so that a report never
/// sorts millions of values.
const LATENCY_SAMPLE: u64 = 20_000;

/// Legacy and candidate latency percentiles of the filtered exchanges; `exchanges` is their
/// number (it chooses between exact values, the histograms and a sample).
pub fn latency(store: &dyn Reader, f: &Filter, exchanges: u64) -> Result<Latency, ReportError> {
    // Over a sample of rows (`[store] exchanges`), percentiles from the rows would follow the
    // sample (the first exchanges of each kind, rare kinds over-represented): the histograms.
    if exchanges > LATENCY_SAMPLE || !store.every_row_kept(f)? {
        if let (Some(l), Some(c)) = (
            store.latency_histogram(f, Side::Legacy)?,
            store.latency_histogram(f, Side::Candidate)?,
        ) {
            return Ok(Latency {
                legacy_p50: l.percentile(0.50),
                legacy_p99: l.percentile(0.99),
                candidate_p50: c.percentile(0.50),
                candidate_p99: c.percentile(0.99),
            });
        }
    }
    let step = exchanges.div_ceil(LATENCY_SAMPLE).max(1);
    let l = store.latencies(f, Side::Legacy, step)?;
    let c = store.latencies(f, Side::Candidate, step)?;
    Ok(Latency {
        legacy_p50: nearest_rank(&l, 0.50),
        legacy_p99: nearest_rank(&l, 0.99),
        candidate_p50: nearest_rank(&c, 0.50),
        candidate_p99: nearest_rank(&c, 0.99),
    })
}

/// The nearest-rank percentile of sorted values (0 for none).
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The differing field patterns of one route, from `diff_fields` (one row per exchange, field
/// and kind), read in the order of its `(route, field, kind, started_at)` index.
fn fields(
    store: &dyn Reader,
    f: &Filter,
    compared: u64,
    classes: &RouteClasses,
    marks: &[TriageMark],
) -> Result<Vec<FieldStat>, ReportError> {
    let route = f.route.as_ref().and_then(RouteKey::name).unwrap_or("");
    let held: Vec<crate::triage::Mark> = marks.iter().map(|m| m.mark.clone()).collect();
    let mut rows = store.fields(f)?;
    // A field pattern is classified over all its kinds.
    let mut differing: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for r in &rows {
        *differing.entry(r.field.as_str()).or_default() += r.exchanges;
    }
    let verdicts: std::collections::HashMap<String, classify::Verdict> = differing
        .into_iter()
        .map(|(field, n)| (field.to_owned(), classes.classify(field, n)))
        .collect();
    rows.sort_by(|a, b| {
        b.exchanges
            .cmp(&a.exchanges)
            .then(b.count.cmp(&a.count))
            .then(a.field.cmp(&b.field))
            .then(a.kind.cmp(&b.kind))
    });
    rows.truncate(MAX_FIELDS);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        // The example's row may be past the per-exchange cap of stored rows: then no values.
        let (l, c) = store
            .example(row.example_id, &row.field, &row.kind)?
            .unwrap_or_default();
        let json = |s: Option<String>| {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)
        };
        let v = &verdicts[&row.field];
        let (legacy, candidate) = (json(l), json(c));
        let likely_fix = (v.class == Class::Systematic)
            .then(|| hint::likely_fix(&row.kind, &legacy, &candidate, row.exchanges, v.present))
            .flatten();
        let triage = crate::triage::mark_of(&held, route, &row.field, &row.kind)
            .and_then(|m| marks.iter().find(|t| t.mark.pattern == m.pattern).cloned());
        out.push(FieldStat {
            triage,
            rate: if compared == 0 {
                0.0
            } else {
                row.exchanges as f64 / compared as f64
            },
            class: v.class,
            present: v.present,
            field: row.field,
            kind: row.kind,
            count: row.count,
            exchanges: row.exchanges,
            example: Example {
                legacy,
                candidate,
                exchange_id: row.example_id,
            },
            likely_fix,
        });
    }
    Ok(out)
}

fn versions(store: &dyn Reader, f: &Filter) -> Result<Vec<VersionStat>, ReportError> {
    Ok(store
        .mapping_versions(f)?
        .into_iter()
        .map(|v| VersionStat {
            parity: parity(v.matched, v.compared),
            version: v.version,
            first_seen: v.first_seen,
            last_seen: v.last_seen,
            compared: v.compared,
            matched: v.matched,
        })
        .collect())
}

fn trend(store: &dyn Reader, f: &Filter, bucket: u64) -> Result<Vec<Day>, ReportError> {
    Ok(store
        .trend(f, bucket)?
        .into_iter()
        .map(|d| Day {
            parity: parity(d.matched, d.compared),
            day: d.day,
            compared: d.compared,
            matched: d.matched,
        })
        .collect())
}
