//! The PostgreSQL implementation of the query API: the same questions as `sqlite/reader.rs`, with the
//! same answers (timestamps formatted as the SQLite store keeps them: RFC 3339 UTC with
//! milliseconds), so reports and the gate read a fleet's store as they read a file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use postgres::types::ToSql;
use postgres::Client;

use super::text::ts;
use serde_json::Value;

use crate::record::{hour, Outcome, RouteKey};
use crate::store::location::PgUrl;
use crate::store::query::{
    CohortCount, DayRow, DiffRow, ExampleValues, ExchangeDetail, ExchangeQuery, ExchangeRow,
    FieldAccountRow, FieldRow, Filter, GroupBy, KeptExchange, KeptPair, KeptSide, NoiseField,
    NoiseOnly, OutcomeCount, Reader, Side, VersionRow,
};
use crate::store::rollup::{self, unkey};
use crate::store::sql::{
    cohort_sql, compared_sql, matched_sql, push_account_version, push_conditions, push_differed_at,
    spend_sql,
};
use crate::store::{sql::aggregate_key, StoreError};

type Param = Box<dyn ToSql + Sync>;
type Params = Vec<Param>;

/// A connection answering the store's queries.
pub(in crate::store) struct PgReader {
    url: PgUrl,
    client: Mutex<Client>,
}

impl PgReader {
    pub(in crate::store) fn new(url: PgUrl, client: Client) -> Self {
        Self {
            url,
            client: Mutex::new(client),
        }
    }

    fn err(&self, source: postgres::Error) -> StoreError {
        StoreError::postgres(self.url.to_string(), source)
    }

    /// Runs `f` on the reader's connection.
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut c = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c).map_err(|e| self.err(e))
    }

    fn query(&self, sql: &str, params: &Params) -> Result<Vec<postgres::Row>, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .query(sql, &refs)
            .map_err(|e| self.err(e))
    }
}

/// PostgreSQL's placeholders and parameters for the shared condition builder.
const PG: (char, fn(String) -> Param) = ('$', boxed);

fn boxed(v: String) -> Param {
    Box::new(v)
}

fn where_clause(f: &Filter) -> (String, Params) {
    let mut sql = String::from("e.started_at >= $1 AND e.started_at < $2");
    let mut params: Params = vec![Box::new(f.from), Box::new(f.to)];
    push_conditions(&mut sql, &mut params, PG, "e", f.route.as_ref(), &[]);
    push_account_version(&mut sql, &mut params, PG, "e", f);
    (sql, params)
}

/// The columns of an [`ExchangeRow`] (of the table aliased `alias`, or unaliased for ""), in
/// the order [`exchange_row`] reads them.
fn exchange_columns(alias: &str) -> String {
    let p = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    format!(
        "{p}id, {}, {p}route, {p}method, {p}path, {p}account, {p}legacy_status, {p}candidate_status, \
         {p}outcome, {p}diff_count, {p}reason, {p}mapping_version",
        ts(&format!("{p}started_at"))
    )
}

fn exchange_row(r: &postgres::Row) -> ExchangeRow {
    ExchangeRow {
        id: r.get(0),
        started_at: r.get(1),
        route: r.get(2),
        method: r.get(3),
        path: r.get(4),
        account: r.get(5),
        legacy_status: r.get::<_, Option<i32>>(6).map(i64::from),
        candidate_status: r.get::<_, Option<i32>>(7).map(i64::from),
        outcome: r.get(8),
        diff_count: i64::from(r.get::<_, i32>(9)),
        reason: r.get(10),
        mapping_version: r.get(11),
    }
}

fn count(r: &postgres::Row, i: usize) -> u64 {
    r.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64
}

impl Reader for PgReader {
    fn cohort_counts(&self, f: &Filter) -> Result<Vec<CohortCount>, StoreError> {
        rollup::cohort_counts(self, f)
    }

    fn shadow_spend(&self, f: &Filter) -> Result<crate::store::Spend, StoreError> {
        rollup::shadow_spend(self, f)
    }

    fn webhook_status(
        &self,
        limit: usize,
    ) -> Result<(Vec<crate::store::OutboxCounts>, Vec<crate::store::Delivery>), StoreError> {
        self.with_client(|c| super::outbox::status(c, limit))
    }

    fn account_health(&self) -> Result<Vec<crate::store::AccountHealth>, StoreError> {
        self.with_client(super::health::all)
    }

    fn id_coverage(&self) -> Result<Vec<crate::store::IdCoverage>, StoreError> {
        self.with_client(super::ids::coverage)
    }

    fn id_pairs(&self, limit: usize) -> Result<Vec<crate::record::Pair>, StoreError> {
        self.with_client(|c| super::ids::all(c, limit))
    }

    fn rediffs(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<crate::store::RediffRow>, StoreError> {
        self.with_client(|c| super::rediffs::rediffs(c, from, to))
    }

    fn replay_set(&self, name: &str) -> Result<Vec<(i64, String)>, StoreError> {
        self.with_client(|c| super::replay_sets::set(c, name))
    }

    fn triage_marks(&self) -> Result<Vec<crate::triage::Mark>, StoreError> {
        self.with_client(super::triage::marks)
    }

    fn triage_log(&self, limit: usize) -> Result<Vec<crate::triage::LogEntry>, StoreError> {
        self.with_client(|c| super::triage::log(c, limit))
    }

    fn rollout_events(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<crate::store::RolloutEvent>, StoreError> {
        self.with_client(|c| super::rollout::events(c, from, to, limit))
    }

    fn outcome_counts(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError> {
        rollup::outcome_counts(self, by, f)
    }

    fn accepted_only(
        &self,
        f: &Filter,
        min_count: u64,
        now: SystemTime,
    ) -> Result<Vec<NoiseOnly>, StoreError> {
        rollup::accepted_only(self, f, min_count, now)
    }

    fn exact_window(&self, f: &Filter) -> Result<Filter, StoreError> {
        rollup::window(self, f)
    }

    fn every_row_kept(&self, f: &Filter) -> Result<bool, StoreError> {
        rollup::every_row_kept(self, f)
    }

    fn noise_only(&self, f: &Filter, min_count: u64) -> Result<Vec<NoiseOnly>, StoreError> {
        rollup::noise_only(self, f, min_count)
    }

    fn latencies(&self, f: &Filter, side: Side, step: u64) -> Result<Vec<f64>, StoreError> {
        rollup::Engine::rows_latencies(self, f, side, step)
    }

    fn latency_histogram(
        &self,
        f: &Filter,
        side: Side,
    ) -> Result<Option<crate::store::Histogram>, StoreError> {
        rollup::latency_histogram(self, f, side)
    }

    fn fields(&self, f: &Filter) -> Result<Vec<FieldRow>, StoreError> {
        rollup::fields(self, f)
    }

    fn example(
        &self,
        exchange_id: i64,
        field: &str,
        kind: &str,
    ) -> Result<Option<ExampleValues>, StoreError> {
        let rows = self.query(
            "SELECT legacy, candidate FROM diffs WHERE exchange_id = $1 AND field = $2 AND kind = $3 ORDER BY seq LIMIT 1",
            &vec![
                Box::new(exchange_id),
                Box::new(field.to_owned()),
                Box::new(kind.to_owned()),
            ],
        )?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    fn mapping_versions(&self, f: &Filter) -> Result<Vec<VersionRow>, StoreError> {
        rollup::mapping_versions(self, f)
    }

    fn trend(&self, f: &Filter, bucket_secs: u64) -> Result<Vec<DayRow>, StoreError> {
        rollup::trend(self, f, bucket_secs)
    }

    fn exchanges(&self, f: &Filter, q: &ExchangeQuery) -> Result<Vec<ExchangeRow>, StoreError> {
        let (mut cond, mut params) = where_clause(f);
        push_conditions(
            &mut cond,
            &mut params,
            PG,
            "e",
            None,
            &[("outcome", q.outcome.as_ref())],
        );
        if let Some(field) = &q.field {
            push_differed_at(&mut cond, &mut params, PG, f, field);
        }
        let rows = self.query(
            &format!(
                "SELECT {} FROM exchanges e WHERE {cond} ORDER BY e.id DESC LIMIT {}",
                exchange_columns("e"),
                q.limit
            ),
            &params,
        )?;
        Ok(rows.iter().map(exchange_row).collect())
    }

    fn field_accounts(
        &self,
        f: &Filter,
        field: Option<&str>,
        latest: usize,
    ) -> Result<Vec<FieldAccountRow>, StoreError> {
        let mut params: Params = vec![Box::new(f.from), Box::new(f.to)];
        let mut cond = String::from("x.started_at >= $1 AND x.started_at < $2");
        if latest > 0 {
            // The lowest id and the earliest start of the window's latest `latest` exchanges,
            // read backwards off the id index. The start bounds the difference rows by their
            // primary key's leading column, on both sides of the join (the planner does not
            // carry it across): the id alone made PostgreSQL read the window's every row (960 ms
            // at 1 M), and the start looked up by id afterwards cost 250 ms at 10 M.
            let rows = self.query(
                "SELECT min(id), min(started_at) FROM (
                     SELECT id, started_at FROM exchanges WHERE started_at >= $1 AND started_at < $2
                     ORDER BY id DESC LIMIT $3) t",
                &vec![Box::new(f.from), Box::new(f.to), Box::new(latest as i64)],
            )?;
            let bounds = rows.first().and_then(|r| {
                Some((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<SystemTime>>(1)?,
                ))
            });
            if let Some((cutoff, first)) = bounds {
                params.push(Box::new(cutoff));
                params.push(Box::new(first));
                let n = params.len();
                cond.push_str(&format!(
                    " AND x.exchange_id >= ${id} AND e.id >= ${id} AND x.started_at >= ${n} AND e.started_at >= ${n}",
                    id = n - 1
                ));
            }
        }
        push_conditions(&mut cond, &mut params, PG, "x", f.route.as_ref(), &[]);
        push_account_version(&mut cond, &mut params, PG, "e", f);
        if let Some(field) = field {
            params.push(Box::new(field.to_owned()));
            cond.push_str(&format!(" AND x.field = ${}", params.len()));
        }
        let rows = self.query(
            &format!(
                "SELECT e.account, x.route, x.field, x.kind, count(*), {}, {}
                 FROM diff_fields x
                 JOIN exchanges e ON e.id = x.exchange_id AND e.started_at = x.started_at
                 WHERE {cond} GROUP BY e.account, x.route, x.field, x.kind
                 ORDER BY count(*) DESC, e.account NULLS FIRST, x.route NULLS FIRST, x.field, x.kind",
                ts("min(x.started_at)"),
                ts("max(x.started_at)")
            ),
            &params,
        )?;
        Ok(rows
            .iter()
            .map(|r| FieldAccountRow {
                account: r.get(0),
                route: r.get(1),
                field: r.get(2),
                kind: r.get(3),
                exchanges: count(r, 4),
                first_seen: r.get(5),
                last_seen: r.get(6),
            })
            .collect())
    }

    fn learned_noise(
        &self,
        route: &RouteKey,
        min_count: u64,
    ) -> Result<Vec<NoiseField>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT f.field, f.differed, s.samples, {} FROM noise_fields f
                 JOIN noise_samples s ON s.route = f.route
                 WHERE f.route = $1 AND f.differed >= $2 ORDER BY f.differed DESC, f.field",
                ts("f.last_at")
            ),
            &vec![
                Box::new(aggregate_key(route.name()).to_owned()),
                Box::new(min_count as i64),
            ],
        )?;
        Ok(rows
            .iter()
            .map(|r| NoiseField {
                field: r.get(0),
                differed: count(r, 1),
                samples: count(r, 2),
                last_at: r.get(3),
            })
            .collect())
    }

    fn presence(
        &self,
        route: &RouteKey,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let rows = self.query(
            "SELECT field, sum(n)::bigint FROM field_presence
             WHERE route = $1 AND hour >= ($2 || ':00:00Z')::timestamptz AND hour <= ($3 || ':00:00Z')::timestamptz
             GROUP BY field",
            &vec![
                Box::new(aggregate_key(route.name()).to_owned()),
                Box::new(hour(from)),
                Box::new(hour(to)),
            ],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), count(r, 1))).collect())
    }

    fn latest(&self, outcome: Option<&str>, limit: usize) -> Result<Vec<ExchangeRow>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT {} FROM exchanges WHERE ($1::text IS NULL OR outcome = $1)
                 ORDER BY id DESC LIMIT {limit}",
                exchange_columns("")
            ),
            &vec![Box::new(outcome.map(str::to_owned))],
        )?;
        Ok(rows.iter().map(exchange_row).collect())
    }

    fn kept_pairs(
        &self,
        f: &Filter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<KeptPair>, StoreError> {
        let (cond, mut params) = where_clause(f);
        params.push(Box::new(after_id));
        let sql = format!(
            "SELECT e.id, {}, e.route, e.account, e.outcome, e.mapping_version
             FROM exchanges e
             WHERE {cond} AND e.id > ${} AND {}
               AND EXISTS (SELECT 1 FROM bodies b WHERE b.exchange_id = e.id)
             ORDER BY e.id LIMIT {limit}",
            ts("e.started_at"),
            params.len(),
            compared_sql("e.outcome"),
        );
        let mut out: Vec<KeptPair> = self
            .query(&sql, &params)?
            .iter()
            .map(|r| KeptPair {
                id: r.get(0),
                started_at: r.get(1),
                route: r.get(2),
                account: r.get(3),
                outcome: r.get(4),
                mapping_version: r.get(5),
                sides: Vec::new(),
                fields: Vec::new(),
            })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = out.iter().map(|p| p.id).collect();
        let at: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for r in self.query(
            "SELECT exchange_id, side, status, headers, body FROM exchange_bodies
             WHERE exchange_id = ANY($1) ORDER BY exchange_id, side",
            &vec![Box::new(ids.clone())],
        )? {
            if let Some(&i) = at.get(&r.get::<_, i64>(0)) {
                out[i].sides.push((
                    r.get(1),
                    KeptSide {
                        status: r
                            .get::<_, Option<i32>>(2)
                            .and_then(|s| u16::try_from(s).ok()),
                        headers: r.get(3),
                        body: r.get(4),
                    },
                ));
            }
        }
        for r in self.query(
            "SELECT exchange_id, field, kind, n FROM diff_fields
             WHERE exchange_id = ANY($1) AND started_at >= $2 AND started_at < $3
             ORDER BY exchange_id, field, kind",
            &vec![Box::new(ids), Box::new(f.from), Box::new(f.to)],
        )? {
            if let Some(&i) = at.get(&r.get::<_, i64>(0)) {
                out[i].fields.push((
                    r.get(1),
                    r.get(2),
                    u64::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                ));
            }
        }
        Ok(out)
    }

    fn kept_exchange(&self, id: i64) -> Result<Option<KeptExchange>, StoreError> {
        let head = self.query(
            "SELECT route, diff_count FROM exchanges WHERE id = $1",
            &vec![Box::new(id)],
        )?;
        let Some(h) = head.first() else {
            return Ok(None);
        };
        let mut out = KeptExchange {
            route: h.get(0),
            diff_count: u64::try_from(h.get::<_, i32>(1)).unwrap_or(0),
            legacy: None,
            candidate: None,
            legacy_raw: None,
            candidate_raw: None,
        };
        for r in self.query(
            "SELECT side, status, headers, body FROM exchange_bodies WHERE exchange_id = $1",
            &vec![Box::new(id)],
        )? {
            let kept = KeptSide {
                status: r
                    .get::<_, Option<i32>>(1)
                    .and_then(|s| u16::try_from(s).ok()),
                headers: r.get(2),
                body: r.get(3),
            };
            match r.get::<_, String>(0).as_str() {
                "legacy" => out.legacy = Some(kept),
                "candidate" => out.candidate = Some(kept),
                "legacy_raw" => out.legacy_raw = Some(kept),
                "candidate_raw" => out.candidate_raw = Some(kept),
                _ => {}
            }
        }
        Ok(Some(out))
    }

    fn exchange(&self, id: i64, max_diffs: usize) -> Result<Option<ExchangeDetail>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT {}, legacy_ms, candidate_ms, request_id, served_by, phase, fallback FROM exchanges WHERE id = $1",
                exchange_columns("")
            ),
            &vec![Box::new(id)],
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let mut row = ExchangeDetail {
            exchange: exchange_row(r),
            legacy_ms: r.get(12),
            candidate_ms: r.get(13),
            request_id: r.get(14),
            served_by: r.get(15),
            phase: r.get(16),
            fallback: r.get(17),
            differences: Vec::new(),
        };
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
        row.differences = self
            .query(
                "SELECT pointer, field, kind, legacy, candidate FROM diffs WHERE exchange_id = $1 ORDER BY seq LIMIT $2",
                &vec![Box::new(id), Box::new(max_diffs as i64)],
            )?
            .iter()
            .map(|r| DiffRow {
                pointer: r.get(0),
                field: r.get(1),
                kind: r.get(2),
                legacy: parse(r.get(3)),
                candidate: parse(r.get(4)),
            })
            .collect();
        Ok(Some(row))
    }
}

/// A (route, account, count) row of [`Reader::noise_only`] and [`Reader::accepted_only`].
fn noise_only_row(r: &postgres::Row) -> NoiseOnly {
    NoiseOnly {
        route: RouteKey::from_route(r.get::<_, Option<String>>(0).as_deref()),
        account: r.get(1),
        n: count(r, 2),
    }
}

/// PostgreSQL's spelling of the roll-up queries.
const ROLLED: rollup::Dialect<Param> = rollup::Dialect {
    mark: '$',
    text: boxed,
    hour: |t| Box::new(t),
    ts,
};

impl PgReader {
    /// Runs a roll-up query.
    fn rolled(
        &self,
        (sql, params): rollup::Query<Param>,
    ) -> Result<Vec<postgres::Row>, StoreError> {
        self.query(&sql, &params)
    }
}

impl rollup::Engine for PgReader {
    fn rolled_up(&self) -> Result<bool, StoreError> {
        let rows = self.query(rollup::READ_ROLLUPS_SQL, &Vec::new())?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }

    fn unkept(&self, from: SystemTime, to: SystemTime) -> Result<bool, StoreError> {
        let rows = self.query(
            &rollup::unkept_sql('$'),
            &vec![Box::new(from), Box::new(to)],
        )?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }

    fn rows_accepted_only(
        &self,
        f: &Filter,
        min_count: u64,
        now: SystemTime,
    ) -> Result<Vec<NoiseOnly>, StoreError> {
        let (cond, mut params) = where_clause(f);
        params.push(Box::new(min_count as i64));
        let n = params.len();
        params.push(Box::new(now));
        let accepted = crate::store::triage::accepted_row(&format!("${}", params.len()));
        let noise = format!(
            "SELECT f.field FROM noise_fields f WHERE f.route = coalesce(e.route, '') AND f.differed >= ${n}"
        );
        let rows = self.query(
            &format!(
                "SELECT e.route, e.account, count(*) FROM exchanges e
                 WHERE {cond} AND e.outcome = '{diff}'
                   AND EXISTS (SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id
                       AND x.started_at = e.started_at AND {accepted} AND x.field NOT IN ({noise}))
                   AND NOT EXISTS (SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id
                       AND x.started_at = e.started_at AND x.field NOT IN ({noise}) AND NOT {accepted})
                 GROUP BY e.route, e.account",
                diff = Outcome::Diff.as_str()
            ),
            &params,
        )?;
        Ok(rows.iter().map(noise_only_row).collect())
    }

    fn rows_noise_only(&self, f: &Filter, min_count: u64) -> Result<Vec<NoiseOnly>, StoreError> {
        // Nothing learned as noise: nothing to scan (in the query, the same test did not keep
        // PostgreSQL from reading every `diff` exchange of the window: 540 ms at 1 M).
        let any = self.query(
            "SELECT EXISTS(SELECT 1 FROM noise_fields WHERE differed >= $1)",
            &vec![Box::new(min_count as i64)],
        )?;
        if !any.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(Vec::new());
        }
        let (cond, mut params) = where_clause(f);
        params.push(Box::new(min_count as i64));
        let n = params.len();
        let rows = self.query(
            &format!(
                "SELECT e.route, e.account, count(*) FROM exchanges e
                 WHERE {cond} AND e.outcome = '{diff}' AND EXISTS (
                     SELECT 1 FROM noise_fields f WHERE f.differed >= ${n}) AND NOT EXISTS (
                     SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id
                       AND x.started_at = e.started_at AND x.field NOT IN (
                         SELECT f.field FROM noise_fields f
                         WHERE f.route = coalesce(e.route, '') AND f.differed >= ${n}))
                 GROUP BY e.route, e.account",
                diff = Outcome::Diff.as_str()
            ),
            &params,
        )?;
        Ok(rows.iter().map(noise_only_row).collect())
    }

    fn rolled_signatures(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let rows = self.rolled(rollup::signatures_sql(&ROLLED, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), count(r, 3)))
            .collect())
    }

    fn noise_fields(&self, min_count: u64) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.query(
            &rollup::noise_fields_sql('$'),
            &vec![Box::new(min_count as i64)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn marks(&self) -> Result<Vec<crate::triage::Mark>, StoreError> {
        Reader::triage_marks(self)
    }

    fn rolled_outcomes(
        &self,
        by: GroupBy,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<OutcomeCount>, StoreError> {
        let rows = self.rolled(rollup::outcomes_sql(&ROLLED, by, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| OutcomeCount {
                key: unkey(r.get(0)),
                outcome: r.get(1),
                n: count(r, 2),
            })
            .collect())
    }

    fn rolled_fields(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<FieldRow>, StoreError> {
        let rows = self.rolled(rollup::fields_sql(&ROLLED, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| FieldRow {
                field: r.get(0),
                kind: r.get(1),
                count: count(r, 2),
                exchanges: count(r, 3),
                example_id: r.get(4),
            })
            .collect())
    }

    fn rolled_versions(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<VersionRow>, StoreError> {
        let rows = self.rolled(rollup::versions_sql(&ROLLED, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| VersionRow {
                version: r.get(0),
                first_seen: r.get(1),
                last_seen: r.get(2),
                compared: count(r, 3),
                matched: count(r, 4),
            })
            .collect())
    }

    fn rolled_trend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
        bucket_secs: u64,
    ) -> Result<Vec<DayRow>, StoreError> {
        let rows = self.rolled(rollup::trend_sql(&ROLLED, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| DayRow {
                day: rollup::bucket_label(r.get(0), bucket_secs),
                compared: count(r, 1),
                matched: count(r, 2),
            })
            .collect())
    }

    fn rolled_cohort(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<CohortCount>, StoreError> {
        let rows = self.rolled(rollup::cohort_sql(&ROLLED, f, hours))?;
        Ok(rows
            .iter()
            .map(|r| CohortCount {
                served_by: r.get(0),
                fallback: unkey(r.get(1)),
                outcome: r.get(2),
                n: count(r, 3),
            })
            .collect())
    }

    fn rolled_spend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<crate::store::Spend, StoreError> {
        let rows = self.rolled(rollup::spend_sql(&ROLLED, f, hours))?;
        Ok(rollup::spend_of(
            rows.iter().map(|r| (r.get(0), count(r, 1) as i64)),
        ))
    }

    fn rolled_latency(
        &self,
        f: &Filter,
        side: Side,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let rows = self.rolled(rollup::latency_sql(&ROLLED, f, side, hours))?;
        Ok(rows.iter().map(|r| (r.get(0), count(r, 1))).collect())
    }

    fn rows_outcomes(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError> {
        let column = match by {
            GroupBy::Route => "route",
            GroupBy::Account => "account",
        };
        let (cond, params) = where_clause(f);
        let rows = self.query(
            &format!(
                "SELECT e.{column}, e.outcome, count(*) FROM exchanges e WHERE {cond}
                 GROUP BY e.{column}, e.outcome ORDER BY e.{column} NULLS FIRST, e.outcome"
            ),
            &params,
        )?;
        Ok(rows
            .iter()
            .map(|r| OutcomeCount {
                key: r.get(0),
                outcome: r.get(1),
                n: count(r, 2),
            })
            .collect())
    }

    fn rows_fields(&self, f: &Filter) -> Result<Vec<FieldRow>, StoreError> {
        let mut params: Params = vec![Box::new(f.from), Box::new(f.to)];
        let mut cond = String::from("x.started_at >= $1 AND x.started_at < $2");
        push_conditions(&mut cond, &mut params, PG, "x", f.route.as_ref(), &[]);
        let mut join = String::new();
        if f.account.is_some() || f.mapping_version.is_some() {
            join.push_str(
                " JOIN exchanges e ON e.id = x.exchange_id AND e.started_at = x.started_at",
            );
            push_account_version(&mut join, &mut params, PG, "e", f);
        }
        let rows = self.query(
            &format!(
                "SELECT x.field, x.kind, sum(x.n)::bigint, count(*), min(x.exchange_id) FROM diff_fields x{join}
                 WHERE {cond} GROUP BY x.field, x.kind ORDER BY x.field, x.kind"
            ),
            &params,
        )?;
        Ok(rows
            .iter()
            .map(|r| FieldRow {
                field: r.get(0),
                kind: r.get(1),
                count: count(r, 2),
                exchanges: count(r, 3),
                example_id: r.get(4),
            })
            .collect())
    }

    fn rows_versions(&self, f: &Filter) -> Result<Vec<VersionRow>, StoreError> {
        let (cond, params) = where_clause(f);
        let rows = self.query(
            &format!(
                "SELECT e.mapping_version, {}, {}, count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {})
                 FROM exchanges e WHERE {cond} AND e.mapping_version IS NOT NULL
                 GROUP BY e.mapping_version ORDER BY min(e.started_at)",
                ts("min(e.started_at)"),
                ts("max(e.started_at)"),
                compared_sql("e.outcome"),
                matched_sql("e.outcome")
            ),
            &params,
        )?;
        Ok(rows
            .iter()
            .map(|r| VersionRow {
                version: r.get(0),
                first_seen: r.get(1),
                last_seen: r.get(2),
                compared: count(r, 3),
                matched: count(r, 4),
            })
            .collect())
    }

    fn rows_trend(&self, f: &Filter, bucket_secs: u64) -> Result<Vec<DayRow>, StoreError> {
        let (cond, params) = where_clause(f);
        // Grouped by a date or a bucket's epoch (cheap per row), formatted once per bucket.
        let (group, label) = if bucket_secs >= 86_400 {
            (
                "(e.started_at AT TIME ZONE 'UTC')::date".to_owned(),
                "to_char(d.day, 'YYYY-MM-DD')".to_owned(),
            )
        } else {
            let w = bucket_secs.max(1);
            (
                format!("floor(extract(epoch FROM e.started_at) / {w})::bigint * {w}"),
                "to_char(to_timestamp(d.day) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')"
                    .to_owned(),
            )
        };
        let rows = self.query(
            &format!(
                "SELECT {label}, d.compared, d.matched FROM (
                     SELECT {group} AS day,
                            count(*) FILTER (WHERE {}) AS compared,
                            count(*) FILTER (WHERE {}) AS matched
                     FROM exchanges e WHERE {cond} GROUP BY 1) d
                 ORDER BY d.day",
                compared_sql("e.outcome"),
                matched_sql("e.outcome")
            ),
            &params,
        )?;
        Ok(rows
            .iter()
            .map(|r| DayRow {
                day: r.get(0),
                compared: count(r, 1),
                matched: count(r, 2),
            })
            .collect())
    }

    fn rows_cohort(&self, f: &Filter) -> Result<Vec<CohortCount>, StoreError> {
        let (cond, params) = where_clause(f);
        let rows = self.query(&cohort_sql(&cond), &params)?;
        Ok(rows
            .iter()
            .map(|r| CohortCount {
                served_by: r.get::<_, Option<String>>(0).unwrap_or_default(),
                fallback: r.get(1),
                outcome: r.get(2),
                n: count(r, 3),
            })
            .collect())
    }

    fn rows_spend(&self, f: &Filter) -> Result<crate::store::Spend, StoreError> {
        let (cond, params) = where_clause(f);
        let rows = self.query(&spend_sql(&cond), &params)?;
        Ok(rollup::spend_of(rows.iter().filter_map(|r| {
            let kind: Option<String> = r.get(0);
            kind.map(|k| (k, r.get(1)))
        })))
    }

    fn rows_latencies(&self, f: &Filter, side: Side, step: u64) -> Result<Vec<f64>, StoreError> {
        let column = match side {
            Side::Legacy => "legacy_ms",
            Side::Candidate => "candidate_ms",
        };
        let (cond, params) = where_clause(f);
        let sampled = if step > 1 {
            format!(" AND e.id % {step} = 0")
        } else {
            String::new()
        };
        let rows = self.query(
            &format!(
                "SELECT e.{column} FROM exchanges e WHERE {cond} AND e.{column} IS NOT NULL{sampled} ORDER BY e.{column}"
            ),
            &params,
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
