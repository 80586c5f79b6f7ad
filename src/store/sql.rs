//! SQL both engines run: the conditions of a filter (with the engine's parameter mark), the
//! outcome sums, and the key of the aggregate tables. Each engine's own SQL is in its folder.

use super::query::Filter;
use crate::record::{Outcome, RouteKey};

/// `outcome IN ('match', 'diff')` and `outcome = 'match'`, from the one spelling of outcomes
/// (standard SQL: PostgreSQL's reader uses them too).
pub(super) fn compared_sql(column: &str) -> String {
    let [m, d] = Outcome::COMPARED.map(Outcome::as_str);
    format!("{column} IN ('{m}', '{d}')")
}

pub(super) fn matched_sql(column: &str) -> String {
    format!("{column} = '{}'", Outcome::Match.as_str())
}

/// The candidate cohort's requests per (served by, fallback, outcome) under `cond` (standard
/// SQL, both engines; the condition matches the partial index `exchanges_cohort`).
pub(super) fn cohort_sql(cond: &str) -> String {
    format!(
        "SELECT e.served_by, e.fallback, e.outcome, count(*) FROM exchanges e
         WHERE (e.served_by = 'candidate' OR e.fallback IS NOT NULL) AND {cond}
         GROUP BY e.served_by, e.fallback, e.outcome ORDER BY 4 DESC, 1, 2, 3"
    )
}

/// Appends ` AND {alias}.{column} = ?n` (with its parameter) for each value given; a route
/// key of the unmatched requests is `IS NULL`. `mark` is the engine's numbered placeholder (`?`
/// here, `$` for PostgreSQL) and `param` makes the engine's parameter of a value.
pub(super) fn push_conditions<P>(
    sql: &mut String,
    params: &mut Vec<P>,
    (mark, param): (char, fn(String) -> P),
    alias: &str,
    route: Option<&RouteKey>,
    equal: &[(&str, Option<&String>)],
) {
    if let Some(r) = route {
        match r.name() {
            None => sql.push_str(&format!(" AND {alias}.route IS NULL")),
            Some(name) => {
                params.push(param(name.to_owned()));
                sql.push_str(&format!(" AND {alias}.route = {mark}{}", params.len()));
            }
        }
    }
    for (column, value) in equal {
        if let Some(v) = value {
            params.push(param((*v).clone()));
            sql.push_str(&format!(" AND {alias}.{column} = {mark}{}", params.len()));
        }
    }
}

/// The filter's account and mapping version, on the exchanges table aliased `alias`.
pub(super) fn push_account_version<P>(
    sql: &mut String,
    params: &mut Vec<P>,
    dialect: (char, fn(String) -> P),
    alias: &str,
    f: &Filter,
) {
    push_conditions(
        sql,
        params,
        dialect,
        alias,
        None,
        &[
            ("account", f.account.as_ref()),
            ("mapping_version", f.mapping_version.as_ref()),
        ],
    );
}

/// Only exchanges that differed at `field` in the window (on the filter's route), through the
/// per-field rows' index (route, field, kind, started_at); the window's bounds are parameters 1
/// and 2.
pub(super) fn push_differed_at<P>(
    sql: &mut String,
    params: &mut Vec<P>,
    dialect: (char, fn(String) -> P),
    f: &Filter,
    field: &str,
) {
    let mark = dialect.0;
    let mut sub = format!("x.started_at >= {mark}1 AND x.started_at < {mark}2");
    push_conditions(&mut sub, params, dialect, "x", f.route.as_ref(), &[]);
    params.push((dialect.1)(field.to_owned()));
    sub.push_str(&format!(" AND x.field = {mark}{}", params.len()));
    sql.push_str(&format!(
        " AND e.id IN (SELECT x.exchange_id FROM diff_fields x WHERE {sub})"
    ));
}

/// The reasons of a skip that held a request back to leave a quota alone (SQL list).
pub(super) const HELD_BACK: &str = "'quota_reserve', 'rate_limited'";

/// Candidate calls made by shadow traffic (a candidate time recorded, not served to the caller)
/// and exchanges held back for a quota, under `cond` (standard SQL, both engines).
pub(super) fn spend_sql(cond: &str) -> String {
    format!(
        "SELECT 'candidate_calls', count(*) FROM exchanges e
         WHERE {cond} AND e.candidate_ms IS NOT NULL AND (e.served_by IS NULL OR e.served_by <> 'candidate')
         UNION ALL
         SELECT e.reason, count(*) FROM exchanges e
         WHERE {cond} AND e.outcome = 'skipped' AND e.reason IN ({HELD_BACK})
         GROUP BY e.reason"
    )
}

/// The route column of the aggregate tables (`field_presence`, `noise_samples`,
/// `noise_fields`), whose primary keys cannot hold SQL `NULL`: `''` for unmatched requests.
/// (`exchanges.route` holds `NULL` for them.)
pub(super) fn aggregate_key(route: Option<&str>) -> &str {
    route.unwrap_or("")
}
