//! The SQLite implementation of the query API ([`Reader`] for a `rusqlite::Connection`).
//!
//! Counts per (route or account, outcome) take the distinct pairs from the
//! `(column, outcome, started_at)` indexes and count each over a range of that index, so
//! nothing is sorted however large the window; field aggregates read `diff_fields` in the
//! order of its `(route, field, kind, started_at)` index.

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::Value;

use crate::record::{hour, rfc3339, Outcome, RouteKey};
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

/// SQLite's placeholders and parameters for [`push_conditions`].
const SQLITE: (char, fn(String) -> Sql) = ('?', Sql::Text);

/// The conditions of a filter on `exchanges` aliased `e`, and their parameters.
fn where_clause(f: &Filter) -> (String, Vec<Sql>) {
    let mut sql = String::from("e.started_at >= ?1 AND e.started_at < ?2");
    let mut params: Vec<Sql> = vec![rfc3339(f.from).into(), rfc3339(f.to).into()];
    push_conditions(&mut sql, &mut params, SQLITE, "e", f.route.as_ref(), &[]);
    push_account_version(&mut sql, &mut params, SQLITE, "e", f);
    (sql, params)
}

/// The columns of an [`ExchangeRow`], in the order [`exchange_row`] reads them.
const EXCHANGE_COLUMNS: &str = "id, started_at, route, method, path, account, legacy_status, \
     candidate_status, outcome, diff_count, reason, mapping_version";

fn exchange_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExchangeRow> {
    Ok(ExchangeRow {
        id: r.get(0)?,
        started_at: r.get(1)?,
        route: r.get(2)?,
        method: r.get(3)?,
        path: r.get(4)?,
        account: r.get(5)?,
        legacy_status: r.get(6)?,
        candidate_status: r.get(7)?,
        outcome: r.get(8)?,
        diff_count: r.get(9)?,
        reason: r.get(10)?,
        mapping_version: r.get(11)?,
    })
}

impl Reader for Connection {
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
        Ok(super::outbox::status(self, limit)?)
    }

    fn account_health(&self) -> Result<Vec<crate::store::AccountHealth>, StoreError> {
        Ok(super::health::all(self)?)
    }

    fn id_coverage(&self) -> Result<Vec<crate::store::IdCoverage>, StoreError> {
        Ok(super::ids::coverage(self)?)
    }

    fn id_pairs(&self, limit: usize) -> Result<Vec<crate::record::Pair>, StoreError> {
        Ok(super::ids::all(self, limit)?)
    }

    fn rediffs(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<crate::store::RediffRow>, StoreError> {
        Ok(super::rediffs::rediffs(self, from, to)?)
    }

    fn rollout_events(
        &self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<crate::store::RolloutEvent>, StoreError> {
        Ok(super::rollout::events(self, from, to, limit)?)
    }

    fn replay_set(&self, name: &str) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(super::replay_sets::set(self, name)?)
    }

    fn triage_marks(&self) -> Result<Vec<crate::triage::Mark>, StoreError> {
        Ok(super::triage::marks(self)?)
    }

    fn triage_log(&self, limit: usize) -> Result<Vec<crate::triage::LogEntry>, StoreError> {
        Ok(super::triage::log(self, limit)?)
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

    fn outcome_counts(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError> {
        rollup::outcome_counts(self, by, f)
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
        let mut q = self.prepare_cached(
            "SELECT legacy, candidate FROM diffs WHERE exchange_id = ?1 AND field = ?2 AND kind = ?3 ORDER BY seq LIMIT 1",
        )?;
        Ok(q.query_row(params![exchange_id, field, kind], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
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
            SQLITE,
            "e",
            None,
            &[("outcome", q.outcome.as_ref())],
        );
        if let Some(field) = &q.field {
            push_differed_at(&mut cond, &mut params, SQLITE, f, field);
        }
        let cols = EXCHANGE_COLUMNS
            .split(", ")
            .map(|c| format!("e.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = self.prepare(&format!(
            "SELECT {cols} FROM exchanges e WHERE {cond} ORDER BY e.id DESC LIMIT {}",
            q.limit
        ))?;
        let rows = stmt
            .query_map(params_from_iter(params), exchange_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn field_accounts(
        &self,
        f: &Filter,
        field: Option<&str>,
        latest: usize,
    ) -> Result<Vec<FieldAccountRow>, StoreError> {
        let mut params: Vec<Sql> = vec![rfc3339(f.from).into(), rfc3339(f.to).into()];
        let mut cond = String::from("x.started_at >= ?1 AND x.started_at < ?2");
        if latest > 0 {
            // The id the window's latest `latest` exchanges start at, read backwards off the
            // table's own order (ids grow with time).
            let cutoff: Option<i64> = self
                .query_row(
                    "SELECT id FROM exchanges NOT INDEXED WHERE started_at >= ?1 AND started_at < ?2
                     ORDER BY id DESC LIMIT 1 OFFSET ?3",
                    params![rfc3339(f.from), rfc3339(f.to), latest as i64 - 1],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = cutoff {
                params.push(id.into());
                cond.push_str(&format!(" AND x.exchange_id >= ?{}", params.len()));
            }
        }
        push_conditions(&mut cond, &mut params, SQLITE, "x", f.route.as_ref(), &[]);
        push_account_version(&mut cond, &mut params, SQLITE, "e", f);
        if let Some(field) = field {
            params.push(field.to_owned().into());
            cond.push_str(&format!(" AND x.field = ?{}", params.len()));
        }
        let mut q = self.prepare(&format!(
            "SELECT e.account, x.route, x.field, x.kind, count(*), min(x.started_at), max(x.started_at)
             FROM diff_fields x JOIN exchanges e ON e.id = x.exchange_id
             WHERE {cond} GROUP BY e.account, x.route, x.field, x.kind
             ORDER BY count(*) DESC, e.account, x.route, x.field, x.kind"
        ))?;
        let rows = q
            .query_map(params_from_iter(params), |r| {
                Ok(FieldAccountRow {
                    account: r.get(0)?,
                    route: r.get(1)?,
                    field: r.get(2)?,
                    kind: r.get(3)?,
                    exchanges: r.get::<_, i64>(4)? as u64,
                    first_seen: r.get(5)?,
                    last_seen: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn learned_noise(
        &self,
        route: &RouteKey,
        min_count: u64,
    ) -> Result<Vec<NoiseField>, StoreError> {
        let mut q = self.prepare_cached(
            "SELECT f.field, f.differed, s.samples, f.last_at FROM noise_fields f
             JOIN noise_samples s ON s.route = f.route
             WHERE f.route = ?1 AND f.differed >= ?2 ORDER BY f.differed DESC, f.field",
        )?;
        let rows = q.query_map(
            params![aggregate_key(route.name()), min_count as i64],
            |r| {
                Ok(NoiseField {
                    field: r.get(0)?,
                    differed: r.get::<_, i64>(1)? as u64,
                    samples: r.get::<_, i64>(2)? as u64,
                    last_at: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn presence(
        &self,
        route: &RouteKey,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut q = self.prepare_cached(
            "SELECT field, sum(n) FROM field_presence WHERE route = ?1 AND hour >= ?2 AND hour <= ?3
             GROUP BY field",
        )?;
        let rows = q.query_map(
            params![aggregate_key(route.name()), hour(from), hour(to)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest(&self, outcome: Option<&str>, limit: usize) -> Result<Vec<ExchangeRow>, StoreError> {
        let cond = if outcome.is_some() {
            "WHERE outcome = ?1"
        } else {
            "WHERE ?1 IS NULL"
        };
        let mut q = self.prepare(&format!(
            "SELECT {EXCHANGE_COLUMNS} FROM exchanges {cond} ORDER BY id DESC LIMIT {limit}"
        ))?;
        let rows = q
            .query_map([outcome], exchange_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn kept_pairs(
        &self,
        f: &Filter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<KeptPair>, StoreError> {
        // In id order from where the window starts (ids grow with time): a page reads its
        // rows off the table's own order instead of sorting the window again for each page.
        let after_id = if after_id == 0 {
            let first: Option<i64> = self.query_row(
                "SELECT min(id) FROM exchanges WHERE started_at >= ?1",
                [rfc3339(f.from)],
                |r| r.get(0),
            )?;
            first.map_or(0, |id| id - 1)
        } else {
            after_id
        };
        let (cond, mut params) = where_clause(f);
        params.push(Sql::Integer(after_id));
        let sql = format!(
            "SELECT e.id, e.started_at, e.route, e.account, e.outcome, e.mapping_version
             FROM exchanges e NOT INDEXED
             WHERE {cond} AND e.id > ?{} AND {}
               AND EXISTS (SELECT 1 FROM bodies b WHERE b.exchange_id = e.id)
             ORDER BY e.id LIMIT {limit}",
            params.len(),
            compared_sql("e.outcome"),
        );
        let mut q = self.prepare_cached(&sql)?;
        let mut out: Vec<KeptPair> = q
            .query_map(params_from_iter(params), |r| {
                Ok(KeptPair {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    route: r.get(2)?,
                    account: r.get(3)?,
                    outcome: r.get(4)?,
                    mapping_version: r.get(5)?,
                    sides: Vec::new(),
                    fields: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let (Some(first), Some(last)) = (out.first().map(|p| p.id), out.last().map(|p| p.id))
        else {
            return Ok(out);
        };
        let at: HashMap<i64, usize> = out.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        let mut q = self.prepare_cached(
            "SELECT exchange_id, side, status, headers, body FROM exchange_bodies
             WHERE exchange_id BETWEEN ?1 AND ?2 ORDER BY exchange_id, side",
        )?;
        let mut rows = q.query([first, last])?;
        while let Some(r) = rows.next()? {
            if let Some(&i) = at.get(&r.get::<_, i64>(0)?) {
                out[i].sides.push((
                    r.get(1)?,
                    KeptSide {
                        status: r
                            .get::<_, Option<i64>>(2)?
                            .and_then(|s| u16::try_from(s).ok()),
                        headers: r.get(3)?,
                        body: r.get(4)?,
                    },
                ));
            }
        }
        let mut q = self.prepare_cached(
            "SELECT exchange_id, field, kind, n FROM diff_fields
             WHERE exchange_id BETWEEN ?1 AND ?2 ORDER BY exchange_id, field, kind",
        )?;
        let mut rows = q.query([first, last])?;
        while let Some(r) = rows.next()? {
            if let Some(&i) = at.get(&r.get::<_, i64>(0)?) {
                out[i]
                    .fields
                    .push((r.get(1)?, r.get(2)?, r.get::<_, i64>(3)?.max(0) as u64));
            }
        }
        Ok(out)
    }

    fn kept_exchange(&self, id: i64) -> Result<Option<KeptExchange>, StoreError> {
        let head: Option<(Option<String>, i64)> = self
            .query_row(
                "SELECT route, diff_count FROM exchanges WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((route, diff_count)) = head else {
            return Ok(None);
        };
        let mut out = KeptExchange {
            route,
            diff_count: diff_count as u64,
            legacy: None,
            candidate: None,
            legacy_raw: None,
            candidate_raw: None,
        };
        let mut q = self.prepare_cached(
            "SELECT side, status, headers, body FROM exchange_bodies WHERE exchange_id = ?1",
        )?;
        let rows = q.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                KeptSide {
                    status: r
                        .get::<_, Option<i64>>(1)?
                        .and_then(|s| u16::try_from(s).ok()),
                    headers: r.get(2)?,
                    body: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (side, kept) = row?;
            match side.as_str() {
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
        let row = self
            .query_row(
                &format!(
                    "SELECT {EXCHANGE_COLUMNS}, legacy_ms, candidate_ms, request_id, served_by, phase, fallback FROM exchanges WHERE id = ?1"
                ),
                [id],
                |r| {
                    Ok(ExchangeDetail {
                        exchange: exchange_row(r)?,
                        legacy_ms: r.get(12)?,
                        candidate_ms: r.get(13)?,
                        request_id: r.get(14)?,
                        served_by: r.get(15)?,
                        phase: r.get(16)?,
                        fallback: r.get(17)?,
                        differences: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut row) = row else { return Ok(None) };
        let mut q = self.prepare_cached(
            "SELECT pointer, field, kind, legacy, candidate FROM diffs WHERE exchange_id = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
        row.differences = q
            .query_map(params![id, max_diffs as i64], |r| {
                Ok(DiffRow {
                    pointer: r.get(0)?,
                    field: r.get(1)?,
                    kind: r.get(2)?,
                    legacy: parse(r.get(3)?),
                    candidate: parse(r.get(4)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(row))
    }
}

/// A (route, account, count) row of [`Reader::noise_only`] and [`Reader::accepted_only`].
fn noise_only_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NoiseOnly> {
    Ok(NoiseOnly {
        route: RouteKey::from_route(r.get::<_, Option<String>>(0)?.as_deref()),
        account: r.get(1)?,
        n: r.get::<_, i64>(2)? as u64,
    })
}

/// SQLite's spelling of the roll-up queries (hours are text keys: `2026-11-29T13`).
const ROLLED: rollup::Dialect<Sql> = rollup::Dialect {
    mark: '?',
    text: Sql::Text,
    hour: |t| Sql::Text(hour(t)),
    ts: str::to_owned,
};

/// Runs a query and maps its rows.
fn all<T>(
    conn: &Connection,
    (sql, params): rollup::Query<Sql>,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut q = conn.prepare(&sql)?;
    let rows = q
        .query_map(params_from_iter(params), map)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A window of at most an hour: the partial hours beside the roll-ups, read by the rows of that
/// window rather than by indexes that hold every hour.
fn short(f: &Filter) -> bool {
    f.to.duration_since(f.from)
        .is_ok_and(|d| d <= std::time::Duration::from_secs(3600))
}

/// A count column (`BIGINT`), never negative.
fn n(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

impl rollup::Engine for Connection {
    fn rolled_up(&self) -> Result<bool, StoreError> {
        Ok(self.query_row(rollup::READ_ROLLUPS_SQL, [], |r| r.get(0))?)
    }

    fn unkept(&self, from: SystemTime, to: SystemTime) -> Result<bool, StoreError> {
        // The hours that start before `to`: those before the first that starts at or after it.
        let d = to.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let at_or_after =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.div_ceil(3600) * 3600);
        let (from, to) = (hour(from), hour(at_or_after));
        Ok(self.query_row(&rollup::unkept_sql('?'), [from, to], |r| r.get(0))?)
    }

    fn rows_accepted_only(
        &self,
        f: &Filter,
        min_count: u64,
        now: SystemTime,
    ) -> Result<Vec<NoiseOnly>, StoreError> {
        let now = rfc3339(now);
        let any: bool = self.query_row(
            &format!(
                "SELECT EXISTS(SELECT 1 FROM triage WHERE status = '{}' AND (expires IS NULL OR expires > ?1))",
                crate::triage::Status::Accepted.as_str()
            ),
            [&now],
            |r| r.get(0),
        )?;
        if !any {
            return Ok(Vec::new());
        }
        let (cond, mut params) = where_clause(f);
        params.push((min_count as i64).into());
        let n = params.len();
        params.push(now.into());
        let accepted = crate::store::triage::accepted_row(&format!("?{}", params.len()));
        let sql = format!(
            "SELECT e.route, e.account, count(*) FROM exchanges e
             WHERE {cond} AND e.outcome = '{diff}'
               AND EXISTS (SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id AND {accepted}
                   AND x.field NOT IN ({noise}))
               AND NOT EXISTS (SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id
                   AND x.field NOT IN ({noise}) AND NOT {accepted})
             GROUP BY e.route, e.account",
            diff = Outcome::Diff.as_str(),
            noise = format_args!(
                "SELECT f.field FROM noise_fields f WHERE f.route = coalesce(e.route, '') AND f.differed >= ?{n}"
            ),
        );
        let mut q = self.prepare(&sql)?;
        let rows = q.query_map(params_from_iter(params), noise_only_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rows_noise_only(&self, f: &Filter, min_count: u64) -> Result<Vec<NoiseOnly>, StoreError> {
        let any: bool = self.query_row(
            "SELECT EXISTS(SELECT 1 FROM noise_fields WHERE differed >= ?1)",
            [min_count as i64],
            |r| r.get(0),
        )?;
        if !any {
            return Ok(Vec::new());
        }
        let (cond, mut params) = where_clause(f);
        params.push((min_count as i64).into());
        let n = params.len();
        let sql = format!(
            "SELECT e.route, e.account, count(*) FROM exchanges e
             WHERE {cond} AND e.outcome = '{diff}' AND NOT EXISTS (
                 SELECT 1 FROM diff_fields x WHERE x.exchange_id = e.id AND x.field NOT IN (
                     SELECT f.field FROM noise_fields f
                     WHERE f.route = coalesce(e.route, '') AND f.differed >= ?{n}))
             GROUP BY e.route, e.account",
            diff = Outcome::Diff.as_str()
        );
        let mut q = self.prepare(&sql)?;
        let rows = q.query_map(params_from_iter(params), noise_only_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rolled_signatures(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        all(self, rollup::signatures_sql(&ROLLED, f, hours), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, n(r, 3)?))
        })
    }

    fn noise_fields(&self, min_count: u64) -> Result<Vec<(String, String)>, StoreError> {
        let sql = rollup::noise_fields_sql('?');
        let mut q = self.prepare_cached(&sql)?;
        let rows = q
            .query_map([min_count as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
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
        all(self, rollup::outcomes_sql(&ROLLED, by, f, hours), |r| {
            Ok(OutcomeCount {
                key: unkey(r.get(0)?),
                outcome: r.get(1)?,
                n: n(r, 2)?,
            })
        })
    }

    fn rolled_fields(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<FieldRow>, StoreError> {
        all(self, rollup::fields_sql(&ROLLED, f, hours), |r| {
            Ok(FieldRow {
                field: r.get(0)?,
                kind: r.get(1)?,
                count: n(r, 2)?,
                exchanges: n(r, 3)?,
                example_id: r.get(4)?,
            })
        })
    }

    fn rolled_versions(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<VersionRow>, StoreError> {
        all(self, rollup::versions_sql(&ROLLED, f, hours), |r| {
            Ok(VersionRow {
                version: r.get(0)?,
                first_seen: r.get(1)?,
                last_seen: r.get(2)?,
                compared: n(r, 3)?,
                matched: n(r, 4)?,
            })
        })
    }

    fn rolled_trend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
        bucket_secs: u64,
    ) -> Result<Vec<DayRow>, StoreError> {
        all(self, rollup::trend_sql(&ROLLED, f, hours), |r| {
            Ok(DayRow {
                day: rollup::bucket_label(&r.get::<_, String>(0)?, bucket_secs),
                compared: n(r, 1)?,
                matched: n(r, 2)?,
            })
        })
    }

    fn rolled_cohort(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<CohortCount>, StoreError> {
        all(self, rollup::cohort_sql(&ROLLED, f, hours), |r| {
            Ok(CohortCount {
                served_by: r.get(0)?,
                fallback: unkey(r.get(1)?),
                outcome: r.get(2)?,
                n: n(r, 3)?,
            })
        })
    }

    fn rolled_spend(
        &self,
        f: &Filter,
        hours: (SystemTime, SystemTime),
    ) -> Result<crate::store::Spend, StoreError> {
        let rows = all(self, rollup::spend_sql(&ROLLED, f, hours), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rollup::spend_of(rows))
    }

    fn rolled_latency(
        &self,
        f: &Filter,
        side: Side,
        hours: (SystemTime, SystemTime),
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        all(self, rollup::latency_sql(&ROLLED, f, side, hours), |r| {
            Ok((r.get(0)?, n(r, 1)?))
        })
    }

    fn rows_outcomes(&self, by: GroupBy, f: &Filter) -> Result<Vec<OutcomeCount>, StoreError> {
        let column = match by {
            GroupBy::Route => "route",
            GroupBy::Account => "account",
        };
        if short(f) {
            // A window of at most an hour (the partial hours beside the roll-ups): its rows
            // grouped. The pairs below are read off the whole table's indexes (~80 ms at 1 M
            // exchanges), which only pays for a long window.
            let (cond, params) = where_clause(f);
            return all(
                self,
                (
                    format!(
                        "SELECT e.{column}, e.outcome, count(*) FROM exchanges e WHERE {cond}
                         GROUP BY e.{column}, e.outcome"
                    ),
                    params,
                ),
                |r| {
                    Ok(OutcomeCount {
                        key: r.get(0)?,
                        outcome: r.get(1)?,
                        n: n(r, 2)?,
                    })
                },
            );
        }
        let pairs: Vec<(Option<String>, String)> = self
            .prepare(&format!("SELECT DISTINCT {column}, outcome FROM exchanges"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let (cond, params) = where_clause(f);
        let sql = format!(
            "SELECT count(*) FROM exchanges e WHERE e.{column} IS ?{} AND e.outcome = ?{} AND {cond}",
            params.len() + 1,
            params.len() + 2
        );
        let mut q = self.prepare(&sql)?;
        let mut out = Vec::new();
        for (key, outcome) in pairs {
            let mut p = params.clone();
            p.push(key.clone().map_or(Sql::Null, Into::into));
            p.push(outcome.clone().into());
            let n: i64 = q.query_row(params_from_iter(p), |r| r.get(0))?;
            if n > 0 {
                out.push(OutcomeCount {
                    key,
                    outcome,
                    n: n as u64,
                });
            }
        }
        Ok(out)
    }

    fn rows_fields(&self, f: &Filter) -> Result<Vec<FieldRow>, StoreError> {
        let mut params: Vec<Sql> = vec![rfc3339(f.from).into(), rfc3339(f.to).into()];
        let mut cond = String::from("x.started_at >= ?1 AND x.started_at < ?2");
        if short(f) {
            // A window of at most an hour (the partial hours beside the roll-ups): read by
            // primary key, between the lowest and highest id of the window's exchanges, not by
            // the route's index, which holds every hour (`+x.route` keeps the planner off it):
            // 5 against 70 ms per route and hour at 1 M exchanges.
            cond.push_str(
                " AND x.exchange_id >= (SELECT min(id) FROM exchanges WHERE started_at >= ?1 AND started_at < ?2)
                  AND x.exchange_id <= (SELECT max(id) FROM exchanges WHERE started_at >= ?1 AND started_at < ?2)",
            );
            push_conditions(&mut cond, &mut params, SQLITE, "+x", f.route.as_ref(), &[]);
        } else {
            push_conditions(&mut cond, &mut params, SQLITE, "x", f.route.as_ref(), &[]);
        }
        // Account and mapping version are on the exchange: joined only when asked for.
        let mut join = String::new();
        if f.account.is_some() || f.mapping_version.is_some() {
            join.push_str(" JOIN exchanges e ON e.id = x.exchange_id");
            push_account_version(&mut join, &mut params, SQLITE, "e", f);
        }
        let mut q = self.prepare(&format!(
            "SELECT x.field, x.kind, sum(x.n), count(*), min(x.exchange_id) FROM diff_fields x{join}
             WHERE {cond} GROUP BY x.field, x.kind"
        ))?;
        let rows = q
            .query_map(params_from_iter(params), |r| {
                Ok(FieldRow {
                    field: r.get(0)?,
                    kind: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    exchanges: r.get::<_, i64>(3)? as u64,
                    example_id: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn rows_versions(&self, f: &Filter) -> Result<Vec<VersionRow>, StoreError> {
        let (cond, params) = where_clause(f);
        let mut q = self.prepare(&format!(
            "SELECT e.mapping_version, min(e.started_at), max(e.started_at), sum({}), sum({})
             FROM exchanges e WHERE {cond} AND e.mapping_version IS NOT NULL
             GROUP BY e.mapping_version ORDER BY min(e.started_at)",
            compared_sql("e.outcome"),
            matched_sql("e.outcome")
        ))?;
        let rows = q
            .query_map(params_from_iter(params), |r| {
                Ok(VersionRow {
                    version: r.get(0)?,
                    first_seen: r.get(1)?,
                    last_seen: r.get(2)?,
                    compared: r.get::<_, i64>(3)? as u64,
                    matched: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn rows_trend(&self, f: &Filter, bucket_secs: u64) -> Result<Vec<DayRow>, StoreError> {
        let (cond, params) = where_clause(f);
        // A day or an hour is a prefix of the text (cheap per row); a shorter bucket is computed.
        let bucket = if bucket_secs >= 86_400 {
            "substr(e.started_at, 1, 10)".to_owned()
        } else if bucket_secs == 3_600 {
            "substr(e.started_at, 1, 13) || ':00Z'".to_owned()
        } else {
            let w = bucket_secs.max(1);
            format!(
                "strftime('%Y-%m-%dT%H:%MZ', (CAST(strftime('%s', e.started_at) AS INTEGER) / {w}) * {w}, 'unixepoch')"
            )
        };
        let mut q = self.prepare(&format!(
            "SELECT {bucket} AS day, sum({}), sum({})
             FROM exchanges e WHERE {cond} GROUP BY day ORDER BY day",
            compared_sql("e.outcome"),
            matched_sql("e.outcome")
        ))?;
        let days = q
            .query_map(params_from_iter(params), |r| {
                Ok(DayRow {
                    day: r.get(0)?,
                    compared: r.get::<_, i64>(1)? as u64,
                    matched: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(days)
    }

    fn rows_cohort(&self, f: &Filter) -> Result<Vec<CohortCount>, StoreError> {
        let (cond, params) = where_clause(f);
        let mut q = self.prepare(&cohort_sql(&cond))?;
        let rows = q
            .query_map(params_from_iter(params), |r| {
                Ok(CohortCount {
                    served_by: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    fallback: r.get(1)?,
                    outcome: r.get(2)?,
                    n: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn rows_spend(&self, f: &Filter) -> Result<crate::store::Spend, StoreError> {
        let (cond, params) = where_clause(f);
        let rows = all(self, (spend_sql(&cond), params), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rollup::spend_of(rows))
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
        let mut q = self.prepare(&format!(
            "SELECT e.{column} FROM exchanges e WHERE {cond} AND e.{column} IS NOT NULL{sampled} ORDER BY e.{column}"
        ))?;
        let v = q
            .query_map(params_from_iter(params), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }
}
