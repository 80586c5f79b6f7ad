//! Parity reports (SPEC §5): one aggregation, computed in SQL over the store's indexes, rendered
//! as JSON, Markdown or a self-contained HTML page.
//!
//! Definitions: `compared` counts exchanges whose two responses were both received and compared
//! (outcomes `match` and `diff`), `matched` those with no difference left (`match`), and
//! `parity = matched / compared` (1.0 when nothing was compared; the gate treats too few samples
//! as a failure of its own).

pub mod render;

use std::collections::BTreeMap;
use std::time::SystemTime;

use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

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
        self.parity = parity(self.matched, self.compared);
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
    pub trend: Vec<Day>,
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
    (sql, params)
}

/// Builds the report.
pub fn build(conn: &Connection, f: &Filter) -> Result<Report, ReportError> {
    let (cond, params) = where_clause(f);
    let mut totals = Counts::default();
    let mut routes: BTreeMap<String, Counts> = BTreeMap::new();
    {
        let mut q = conn.prepare(&format!(
            "SELECT e.route, e.outcome, count(*) FROM exchanges e WHERE {cond} GROUP BY e.route, e.outcome"
        ))?;
        let mut rows = q.query(params_from_iter(&params))?;
        while let Some(row) = rows.next()? {
            let route: Option<String> = row.get(0)?;
            let outcome: String = row.get(1)?;
            let n: i64 = row.get(2)?;
            totals.add(&outcome, n as u64);
            routes
                .entry(route.unwrap_or_else(|| UNMATCHED.to_owned()))
                .or_default()
                .add(&outcome, n as u64);
        }
    }

    let mut route_reports = Vec::with_capacity(routes.len());
    for (route, counts) in routes {
        let rf = Filter {
            route: Some(route.clone()),
            ..f.clone()
        };
        let latency = latency(conn, &rf)?;
        let (rcond, rparams) = where_clause(&rf);
        let fields = fields(conn, &rcond, &rparams, counts.compared)?;
        let trend = trend(conn, &rcond, &rparams)?;
        route_reports.push(RouteReport {
            route,
            counts,
            latency_ms: latency,
            fields,
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
    {
        let mut q = conn.prepare(&format!(
            "SELECT e.account, e.outcome, count(*) FROM exchanges e
             WHERE {cond} AND e.account IS NOT NULL GROUP BY e.account, e.outcome"
        ))?;
        let mut rows = q.query(params_from_iter(&params))?;
        while let Some(row) = rows.next()? {
            let account: String = row.get(0)?;
            let outcome: String = row.get(1)?;
            let n: i64 = row.get(2)?;
            accounts.entry(account).or_default().add(&outcome, n as u64);
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

/// Legacy and candidate latency percentiles of the filtered exchanges.
pub fn latency(conn: &Connection, f: &Filter) -> Result<Latency, ReportError> {
    let (cond, params) = where_clause(f);
    Ok(Latency {
        legacy_p50: percentile(conn, &cond, &params, "legacy_ms", 0.50)?,
        legacy_p99: percentile(conn, &cond, &params, "legacy_ms", 0.99)?,
        candidate_p50: percentile(conn, &cond, &params, "candidate_ms", 0.50)?,
        candidate_p99: percentile(conn, &cond, &params, "candidate_ms", 0.99)?,
    })
}

/// The nearest-rank percentile of a latency column over the filtered exchanges that have it.
fn percentile(
    conn: &Connection,
    cond: &str,
    params: &[String],
    column: &str,
    p: f64,
) -> Result<f64, ReportError> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM exchanges e WHERE {cond} AND e.{column} IS NOT NULL"),
        params_from_iter(params),
        |r| r.get(0),
    )?;
    if n == 0 {
        return Ok(0.0);
    }
    let rank = ((p * n as f64).ceil() as i64).clamp(1, n) - 1;
    let v: Option<f64> = conn
        .query_row(
            &format!(
                "SELECT e.{column} FROM exchanges e WHERE {cond} AND e.{column} IS NOT NULL
                 ORDER BY e.{column} LIMIT 1 OFFSET {rank}"
            ),
            params_from_iter(params),
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0.0))
}

fn fields(
    conn: &Connection,
    cond: &str,
    params: &[String],
    compared: u64,
) -> Result<Vec<FieldStat>, ReportError> {
    // Inner: one row per (exchange, field, kind), streamed in exchange order (diffs are
    // clustered by exchange); outer: totals per (field, kind).
    let mut q = conn.prepare(&format!(
        "SELECT field, kind, sum(n), count(*), min(exchange_id) FROM (
             SELECT d.exchange_id, d.field, d.kind, count(*) AS n
             FROM exchanges e JOIN diffs d ON d.exchange_id = e.id
             WHERE {cond} AND e.outcome = 'diff'
             GROUP BY d.exchange_id, d.field, d.kind)
         GROUP BY field, kind ORDER BY count(*) DESC, sum(n) DESC, field LIMIT {MAX_FIELDS}"
    ))?;
    let rows: Vec<(String, String, i64, i64, i64)> = q
        .query_map(params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut ex = conn.prepare_cached(
        "SELECT legacy, candidate FROM diffs WHERE exchange_id = ?1 AND field = ?2 AND kind = ?3 ORDER BY seq LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (field, kind, count, exchanges, example_id) in rows {
        let (l, c): (Option<String>, Option<String>) = ex
            .query_row(rusqlite::params![example_id, field, kind], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let json = |s: Option<String>| {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)
        };
        out.push(FieldStat {
            rate: if compared == 0 {
                0.0
            } else {
                exchanges as f64 / compared as f64
            },
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
