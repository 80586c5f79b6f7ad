//! Parity reports (SPEC §5): one aggregation, computed in SQL over the store's indexes, rendered
//! as JSON, Markdown or a self-contained HTML page.
//!
//! Definitions: `compared` counts exchanges whose two responses were both received and compared
//! (outcomes `match` and `diff`), `matched` those with no difference left (`match`),
//! `noise_only` those whose differences are all at fields learned as noise
//! ([`crate::classify`]), and `parity = (matched + noise_only) / compared` (1.0 when nothing was
//! compared; the gate treats too few samples as a failure of its own).

pub mod render;

use std::collections::BTreeMap;
use std::time::SystemTime;

use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use crate::classify::{self, Class, NoiseField, RouteClasses};
use crate::store;

/// The route name reports use for requests that matched no route.
pub const UNMATCHED: &str = "(unmatched)";
/// Field patterns listed per route at most (the most frequent first).
const MAX_FIELDS: usize = 50;

/// A report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct Filter {
    pub from: SystemTime,
    pub to: SystemTime,
    pub route: Option<String>,
    pub account: Option<String>,
    /// Only exchanges compared with this mapping version (`exchanges.mapping_version`).
    pub mapping_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub exchanges: u64,
    pub compared: u64,
    pub matched: u64,
    /// `diff` exchanges whose every difference is at a field learned as noise.
    pub noise_only: u64,
    pub parity: f64,
    pub outcomes: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, outcome: &str, n: u64) {
        self.exchanges += n;
        if outcome == "match" || outcome == "diff" {
            self.compared += n;
        }
        if outcome == "match" {
            self.matched += n;
        }
        *self.outcomes.entry(outcome.to_owned()).or_default() += n;
        self.parity = parity(self.matched + self.noise_only, self.compared);
    }

    fn add_noise_only(&mut self, n: u64) {
        self.noise_only += n;
        self.parity = parity(self.matched + self.noise_only, self.compared);
    }

    /// Exchanges for which the candidate was called (everything but `skipped`).
    pub fn mirrored(&self) -> u64 {
        self.exchanges - self.outcome("skipped")
    }

    pub fn outcome(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }
}

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
}

/// The whole report (SPEC §5 plus `needs_reauth` and per-route `trend`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub window: Window,
    pub totals: Counts,
    pub routes: Vec<RouteReport>,
    pub accounts: Vec<AccountReport>,
    /// Accounts whose candidate calls failed with 401/403 in the window.
    pub needs_reauth: Vec<String>,
}

/// The WHERE clause and its parameters for a filter (on `exchanges` aliased `e`).
fn where_clause(f: &Filter) -> (String, Vec<String>) {
    let mut sql = String::from("e.started_at >= ?1 AND e.started_at < ?2");
    let mut params = vec![store::rfc3339(f.from), store::rfc3339(f.to)];
    if let Some(r) = &f.route {
        if r == UNMATCHED {
            sql.push_str(" AND e.route IS NULL");
        } else {
            params.push(r.clone());
            sql.push_str(&format!(" AND e.route = ?{}", params.len()));
        }
    }
    if let Some(a) = &f.account {
        params.push(a.clone());
        sql.push_str(&format!(" AND e.account = ?{}", params.len()));
    }
    if let Some(v) = &f.mapping_version {
        params.push(v.clone());
        sql.push_str(&format!(" AND e.mapping_version = ?{}", params.len()));
    }
    (sql, params)
}

/// What to compute besides the counts.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Per-route differing fields and daily trend (the gate needs neither).
    pub details: bool,
    /// Classification thresholds (`[diff] systematic_rate`, `[diff.noise] min_count`).
    pub classes: classify::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            details: true,
            classes: classify::Settings::default(),
        }
    }
}

/// Builds the report with the default options.
pub fn build(conn: &Connection, f: &Filter) -> Result<Report, ReportError> {
    build_with(conn, f, Options::default())
}

/// Counts of exchanges per (`column`, outcome) in the window: the distinct pairs come from the
/// `(column, outcome, started_at)` index, then each pair is counted over a range of that index,
/// so nothing is sorted however large the window.
fn counts_by(
    conn: &Connection,
    column: &str,
    f: &Filter,
) -> Result<Vec<(Option<String>, String, u64)>, ReportError> {
    let pairs: Vec<(Option<String>, String)> = conn
        .prepare(&format!("SELECT DISTINCT {column}, outcome FROM exchanges"))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let (cond, params) = where_clause(f);
    let sql = format!(
        "SELECT count(*) FROM exchanges e WHERE e.{column} IS ?{} AND e.outcome = ?{} AND {cond}",
        params.len() + 1,
        params.len() + 2
    );
    let mut q = conn.prepare(&sql)?;
    let mut out = Vec::new();
    for (key, outcome) in pairs {
        let mut p: Vec<rusqlite::types::Value> = params.iter().cloned().map(Into::into).collect();
        p.push(key.clone().map_or(rusqlite::types::Value::Null, Into::into));
        p.push(outcome.clone().into());
        let n: i64 = q.query_row(params_from_iter(p), |r| r.get(0))?;
        if n > 0 {
            out.push((key, outcome, n as u64));
        }
    }
    Ok(out)
}

/// Builds the report, computing what `opts` asks for.
pub fn build_with(conn: &Connection, f: &Filter, opts: Options) -> Result<Report, ReportError> {
    let mut totals = Counts::default();
    let mut routes: BTreeMap<String, Counts> = BTreeMap::new();
    for (route, outcome, n) in counts_by(conn, "route", f)? {
        totals.add(&outcome, n);
        routes
            .entry(route.unwrap_or_else(|| UNMATCHED.to_owned()))
            .or_default()
            .add(&outcome, n);
    }
    let (cond, params) = where_clause(f);
    let noise_only = classify::noise_only(conn, &cond, &params, opts.classes.noise_min_count)?;
    for (route, _, n) in &noise_only {
        totals.add_noise_only(*n);
        if let Some(c) = routes.get_mut(route.as_deref().unwrap_or(UNMATCHED)) {
            c.add_noise_only(*n);
        }
    }

    let mut route_reports = Vec::with_capacity(routes.len());
    for (route, counts) in routes {
        let rf = Filter {
            route: Some(route.clone()),
            ..f.clone()
        };
        let latency = latency(conn, &rf, counts.exchanges)?;
        let (fields, noise, mapping_versions, trend) = if opts.details {
            let (rcond, rparams) = where_clause(&rf);
            let classes = RouteClasses::load(
                conn,
                Some(&route),
                (f.from, f.to),
                counts.compared,
                f.account.is_none() && f.mapping_version.is_none(),
                opts.classes,
            )?;
            (
                fields(conn, &rf, counts.compared, &classes)?,
                classes.noise,
                versions(conn, &rcond, &rparams)?,
                trend(conn, &rcond, &rparams)?,
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new(), Vec::new())
        };
        route_reports.push(RouteReport {
            route,
            counts,
            latency_ms: latency,
            fields,
            noise,
            mapping_versions,
            trend,
        });
    }
    route_reports.sort_by(|a, b| {
        b.counts
            .exchanges
            .cmp(&a.counts.exchanges)
            .then(a.route.cmp(&b.route))
    });

    let mut accounts: BTreeMap<String, Counts> = BTreeMap::new();
    for (account, outcome, n) in counts_by(conn, "account", f)? {
        if let Some(a) = account {
            accounts.entry(a).or_default().add(&outcome, n);
        }
    }
    for (_, account, n) in noise_only {
        if let Some(c) = account.and_then(|a| accounts.get_mut(&a)) {
            c.add_noise_only(n);
        }
    }
    let needs_reauth = accounts
        .iter()
        .filter(|(_, c)| c.outcome("candidate_auth_error") > 0)
        .map(|(a, _)| a.clone())
        .collect();
    let mut accounts: Vec<AccountReport> = accounts
        .into_iter()
        .map(|(account, counts)| AccountReport { account, counts })
        .collect();
    accounts.sort_by(|a, b| {
        a.counts
            .parity
            .total_cmp(&b.counts.parity)
            .then(a.account.cmp(&b.account))
    });

    Ok(Report {
        window: Window {
            from: store::rfc3339(f.from),
            to: store::rfc3339(f.to),
        },
        totals,
        routes: route_reports,
        accounts,
        needs_reauth,
    })
}

/// Latency percentiles are exact over up to this many exchanges per scope; beyond, they are
/// computed over an evenly spread, deterministic sample (every k-th exchange by id) of about
/// this size, so that a report never sorts millions of values.
const LATENCY_SAMPLE: u64 = 20_000;

/// Legacy and candidate latency percentiles of the filtered exchanges; `exchanges` is their
/// number (it sets the sampling step).
pub fn latency(conn: &Connection, f: &Filter, exchanges: u64) -> Result<Latency, ReportError> {
    let (cond, params) = where_clause(f);
    let step = exchanges.div_ceil(LATENCY_SAMPLE).max(1);
    let sample = |column: &str| -> Result<Vec<f64>, ReportError> {
        let sampled = if step > 1 {
            format!(" AND e.id % {step} = 0")
        } else {
            String::new()
        };
        let mut q = conn.prepare(&format!(
            "SELECT e.{column} FROM exchanges e WHERE {cond} AND e.{column} IS NOT NULL{sampled} ORDER BY e.{column}"
        ))?;
        let v = q
            .query_map(params_from_iter(&params), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(v)
    };
    let (l, c) = (sample("legacy_ms")?, sample("candidate_ms")?);
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
    conn: &Connection,
    f: &Filter,
    compared: u64,
    classes: &RouteClasses,
) -> Result<Vec<FieldStat>, ReportError> {
    let mut params = vec![store::rfc3339(f.from), store::rfc3339(f.to)];
    let mut cond = String::from("x.started_at >= ?1 AND x.started_at < ?2");
    match f.route.as_deref() {
        None => {}
        Some(UNMATCHED) => cond.push_str(" AND x.route IS NULL"),
        Some(r) => {
            params.push(r.to_owned());
            cond.push_str(&format!(" AND x.route = ?{}", params.len()));
        }
    }
    let mut join = String::new();
    if f.account.is_some() || f.mapping_version.is_some() {
        join.push_str(" JOIN exchanges e ON e.id = x.exchange_id");
        if let Some(a) = &f.account {
            params.push(a.clone());
            join.push_str(&format!(" AND e.account = ?{}", params.len()));
        }
        if let Some(v) = &f.mapping_version {
            params.push(v.clone());
            join.push_str(&format!(" AND e.mapping_version = ?{}", params.len()));
        }
    }
    let mut q = conn.prepare(&format!(
        "SELECT x.field, x.kind, sum(x.n), count(*), min(x.exchange_id) FROM diff_fields x{join}
         WHERE {cond} GROUP BY x.field, x.kind"
    ))?;
    let mut rows: Vec<(String, String, i64, i64, i64)> = q
        .query_map(params_from_iter(&params), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    // A field pattern is classified over all its kinds.
    let mut differing: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for r in &rows {
        *differing.entry(r.0.as_str()).or_default() += r.3 as u64;
    }
    let verdicts: std::collections::HashMap<String, classify::Verdict> = differing
        .into_iter()
        .map(|(field, n)| (field.to_owned(), classes.classify(field, n)))
        .collect();
    rows.sort_by(|a, b| {
        b.3.cmp(&a.3)
            .then(b.2.cmp(&a.2))
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    rows.truncate(MAX_FIELDS);
    let mut ex = conn.prepare_cached(
        "SELECT legacy, candidate FROM diffs WHERE exchange_id = ?1 AND field = ?2 AND kind = ?3 ORDER BY seq LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (field, kind, count, exchanges, example_id) in rows {
        // The example's row may be past the per-exchange cap of stored rows: then no values.
        let (l, c): (Option<String>, Option<String>) = ex
            .query_row(rusqlite::params![example_id, field, kind], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .unwrap_or_default();
        let json = |s: Option<String>| {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)
        };
        let v = &verdicts[&field];
        out.push(FieldStat {
            rate: if compared == 0 {
                0.0
            } else {
                exchanges as f64 / compared as f64
            },
            class: v.class,
            present: v.present,
            field,
            kind,
            count: count as u64,
            exchanges: exchanges as u64,
            example: Example {
                legacy: json(l),
                candidate: json(c),
                exchange_id: example_id,
            },
        });
    }
    Ok(out)
}

fn versions(
    conn: &Connection,
    cond: &str,
    params: &[String],
) -> Result<Vec<VersionStat>, ReportError> {
    let mut q = conn.prepare(&format!(
        "SELECT e.mapping_version, min(e.started_at), max(e.started_at),
                sum(e.outcome IN ('match', 'diff')), sum(e.outcome = 'match')
         FROM exchanges e WHERE {cond} AND e.mapping_version IS NOT NULL
         GROUP BY e.mapping_version ORDER BY min(e.started_at)"
    ))?;
    let rows = q
        .query_map(params_from_iter(params), |r| {
            let (compared, matched): (i64, i64) = (r.get(3)?, r.get(4)?);
            Ok(VersionStat {
                version: r.get(0)?,
                first_seen: r.get(1)?,
                last_seen: r.get(2)?,
                compared: compared as u64,
                matched: matched as u64,
                parity: parity(matched as u64, compared as u64),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn trend(conn: &Connection, cond: &str, params: &[String]) -> Result<Vec<Day>, ReportError> {
    let mut q = conn.prepare(&format!(
        "SELECT substr(e.started_at, 1, 10) AS day, sum(e.outcome IN ('match', 'diff')), sum(e.outcome = 'match')
         FROM exchanges e WHERE {cond} GROUP BY day ORDER BY day"
    ))?;
    let days = q
        .query_map(params_from_iter(params), |r| {
            let (compared, matched): (i64, i64) = (r.get(1)?, r.get(2)?);
            Ok(Day {
                day: r.get(0)?,
                compared: compared as u64,
                matched: matched as u64,
                parity: parity(matched as u64, compared as u64),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(days)
}
