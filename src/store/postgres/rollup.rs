//! The hourly roll-ups on PostgreSQL: fleet-safe additive upserts with each batch, built from
//! the rows by a migration, rebuilt, pruned (the model: `store/rollup.rs`).

use std::collections::BTreeMap;

use crate::record::Outcome;

use crate::store::rollup::*;

/// Adds a batch's deltas to the PostgreSQL roll-ups (in the writer's transaction): one
/// statement per table, rows in key order, additive upserts (every instance of a fleet adds
/// to the same rows).
pub(in crate::store) fn save(
    tx: &mut postgres::Transaction<'_>,
    d: &Deltas,
) -> Result<(), postgres::Error> {
    fn col<T, K, V>(m: &BTreeMap<K, V>, f: impl Fn(&K, &V) -> T) -> Vec<T> {
        m.iter().map(|(k, v)| f(k, v)).collect()
    }
    let hour = |h: &String| format!("{h}:00:00Z");
    if !d.outcomes.is_empty() {
        let o = &d.outcomes;
        tx.execute(
            "INSERT INTO rollup_outcomes AS t (hour, route, outcome, mapping_version, served_by,
                 fallback, skip_reason, n, shadow_calls, first_at, last_at)
             SELECT u.hour::timestamptz, u.route, u.outcome, u.version, u.served_by, u.fallback,
                    u.skip, u.n, u.calls, u.first_at::timestamptz, u.last_at::timestamptz
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::int8[], $9::int8[], $10::text[], $11::text[])
                  AS u(hour, route, outcome, version, served_by, fallback, skip, n, calls, first_at, last_at)
             ON CONFLICT (route, hour, outcome, mapping_version, served_by, fallback, skip_reason)
             DO UPDATE SET n = t.n + excluded.n, shadow_calls = t.shadow_calls + excluded.shadow_calls,
                 first_at = least(t.first_at, excluded.first_at),
                 last_at = greatest(t.last_at, excluded.last_at)",
            &[
                &col(o, |k, _| hour(&k.0)),
                &col(o, |k, _| k.1.clone()),
                &col(o, |k, _| k.2.clone()),
                &col(o, |k, _| k.3.clone()),
                &col(o, |k, _| k.4.clone()),
                &col(o, |k, _| k.5.clone()),
                &col(o, |k, _| k.6.clone()),
                &col(o, |_, a| a.n),
                &col(o, |_, a| a.shadow_calls),
                &col(o, |_, a| a.first_at.clone()),
                &col(o, |_, a| a.last_at.clone()),
            ],
        )?;
    }
    if !d.accounts.is_empty() {
        let a = &d.accounts;
        tx.execute(
            "INSERT INTO rollup_accounts AS t (hour, route, account, outcome, mapping_version, n)
             SELECT u.hour::timestamptz, u.route, u.account, u.outcome, u.version, u.n
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                  AS u(hour, route, account, outcome, version, n)
             ON CONFLICT (hour, route, account, outcome, mapping_version)
             DO UPDATE SET n = t.n + excluded.n",
            &[
                &col(a, |k, _| hour(&k.0)),
                &col(a, |k, _| k.1.clone()),
                &col(a, |k, _| k.2.clone()),
                &col(a, |k, _| k.3.clone()),
                &col(a, |k, _| k.4.clone()),
                &col(a, |_, n| *n),
            ],
        )?;
    }
    if !d.fields.is_empty() {
        let f = &d.fields;
        tx.execute(
            "INSERT INTO rollup_fields AS t (hour, route, field, kind, diffs, exchanges, first_id)
             SELECT u.hour::timestamptz, u.route, u.field, u.kind, u.diffs, u.exchanges, u.first_id
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                         $7::int8[]) AS u(hour, route, field, kind, diffs, exchanges, first_id)
             ON CONFLICT (route, hour, field, kind)
             DO UPDATE SET diffs = t.diffs + excluded.diffs, exchanges = t.exchanges + excluded.exchanges,
                 first_id = least(t.first_id, excluded.first_id)",
            &[
                &col(f, |k, _| hour(&k.0)),
                &col(f, |k, _| k.1.clone()),
                &col(f, |k, _| k.2.clone()),
                &col(f, |k, _| k.3.clone()),
                &col(f, |_, v| v.0),
                &col(f, |_, v| v.1),
                &col(f, |_, v| v.2),
            ],
        )?;
    }
    if !d.latency.is_empty() {
        let l = &d.latency;
        tx.execute(
            "INSERT INTO rollup_latency AS t (hour, route, side, bucket, n)
             SELECT u.hour::timestamptz, u.route, u.side, u.bucket, u.n
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[])
                  AS u(hour, route, side, bucket, n)
             ON CONFLICT (route, side, hour, bucket) DO UPDATE SET n = t.n + excluded.n",
            &[
                &col(l, |k, _| hour(&k.0)),
                &col(l, |k, _| k.1.clone()),
                &col(l, |k, _| k.2.to_owned()),
                &col(l, |k, _| k.3 as i32),
                &col(l, |_, n| *n),
            ],
        )?;
    }
    if !d.signatures.is_empty() {
        let g = &d.signatures;
        tx.execute(
            "INSERT INTO rollup_signatures AS t (hour, route, account, hash, signature, n)
             SELECT u.hour::timestamptz, u.route, u.account, u.hash, u.signature, u.n
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[])
                  AS u(hour, route, account, hash, signature, n)
             ON CONFLICT (route, hour, account, hash) DO UPDATE SET n = t.n + excluded.n",
            &[
                &col(g, |k, _| hour(&k.0)),
                &col(g, |k, _| k.1.clone()),
                &col(g, |k, _| k.2.clone()),
                &col(g, |k, _| signature_hash(&k.3)),
                &col(g, |k, _| k.3.clone()),
                &col(g, |_, n| *n),
            ],
        )?;
    }
    if !d.unkept.is_empty() {
        let u = &d.unkept;
        tx.execute(
            "INSERT INTO rollup_unkept AS t (hour, n)
             SELECT u.hour::timestamptz, u.n FROM unnest($1::text[], $2::int8[]) AS u(hour, n)
             ON CONFLICT (hour) DO UPDATE SET n = t.n + excluded.n",
            &[&col(u, |k, _| hour(k)), &col(u, |_, n| *n)],
        )?;
    }
    match d.before {
        Some(before) => tx.execute(
            "UPDATE rollup_state SET covered = greatest(covered, $1) WHERE id = 1 AND covered >= $2",
            &[&d.covered, &before],
        )?,
        None => tx.execute(
            "INSERT INTO rollup_state AS t (id, covered) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET covered = excluded.covered",
            &[&d.covered],
        )?,
    };
    Ok(())
}

/// A PostgreSQL start as the rows' text (`2026-11-29T13:05:00.000Z`).
const TS: &str = r#"to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

/// Builds the roll-ups of the rows a PostgreSQL store already holds (the migration that adds
/// them), reading the rows through a cursor.
pub(in crate::store) fn fill(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    let mut d = Deltas::new(super::text::pg_text);
    let portal = tx.bind(
        &format!(
            "SELECT id, {TS}, route, account, outcome, mapping_version, served_by, fallback, reason,
                    legacy_ms, candidate_ms FROM exchanges"
        ),
        &[],
    )?;
    loop {
        let rows = tx.query_portal(&portal, 50_000)?;
        for r in &rows {
            let at: String = r.get(1);
            let text = |i: usize| r.get::<_, Option<String>>(i);
            let (route, account, version) = (text(2), text(3), text(5));
            let (served_by, fallback, reason) = (text(6), text(7), text(8));
            let outcome: String = r.get(4);
            d.add(&Facts {
                id: r.get(0),
                started_at: &at,
                route: route.as_deref(),
                account: account.as_deref(),
                outcome: &outcome,
                mapping_version: version.as_deref(),
                served_by: served_by.as_deref(),
                fallback: fallback.as_deref(),
                reason: reason.as_deref(),
                legacy_ms: r.get(9),
                candidate_ms: r.get(10),
            });
        }
        if rows.len() < 50_000 {
            break;
        }
    }
    let portal = tx.bind(
        &format!("SELECT exchange_id, {TS}, route, field, kind, n FROM diff_fields"),
        &[],
    )?;
    loop {
        let rows = tx.query_portal(&portal, 50_000)?;
        for r in &rows {
            let (at, route): (String, Option<String>) = (r.get(1), r.get(2));
            let (field, kind): (String, String) = (r.get(3), r.get(4));
            let n: i32 = r.get(5);
            d.add_field(r.get(0), &at, route.as_deref(), &field, &kind, i64::from(n));
        }
        if rows.len() < 50_000 {
            break;
        }
    }
    save(tx, &d)
}

/// The same on PostgreSQL.
pub(in crate::store) fn fill_signatures(
    tx: &mut postgres::Transaction<'_>,
) -> Result<(), postgres::Error> {
    let mut d = Deltas {
        before: Some(i64::MAX),
        ..Deltas::new(super::text::pg_text)
    };
    let portal = tx.bind(
        &format!(
            "SELECT x.exchange_id, {x_ts}, e.route, e.account, x.field, x.kind
             FROM diff_fields x JOIN exchanges e ON e.id = x.exchange_id AND e.started_at = x.started_at
             WHERE e.outcome = '{diff}' ORDER BY x.exchange_id",
            x_ts = TS.replace("started_at", "x.started_at"),
            diff = Outcome::Diff.as_str()
        ),
        &[],
    )?;
    let mut one = Signed::default();
    loop {
        let rows = tx.query_portal(&portal, 50_000)?;
        for r in &rows {
            one.row(
                &mut d,
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                (r.get(4), r.get(5)),
            );
        }
        if rows.len() < 50_000 {
            break;
        }
    }
    one.flush(&mut d);
    save(tx, &d)
}

/// The same on PostgreSQL. The tables are emptied first and the state set last, so that a
/// writer of the fleet adding at the same time either waits for the rebuild (its rows are then
/// read by the fill) or is waited for (its rows were not seen: its deltas add to the rebuilt
/// ones).
pub(in crate::store) fn rebuild(client: &mut postgres::Client) -> Result<Rebuild, postgres::Error> {
    let mut tx = client.transaction()?;
    if tx.query_one(ROLLED_UP_SQL, &[])?.get(0) {
        return Ok(Rebuild::Current);
    }
    if tx.query_one(ANY_UNKEPT_SQL, &[])?.get(0) {
        return Ok(Rebuild::Refused);
    }
    for t in TABLES {
        tx.execute(&format!("DELETE FROM {t}"), &[])?;
    }
    fill(&mut tx)?;
    fill_signatures(&mut tx)?;
    tx.commit()?;
    Ok(Rebuild::Rebuilt)
}

/// The same on PostgreSQL.
pub(in crate::store) fn prune(
    tx: &mut postgres::Transaction<'_>,
    cutoff: &str,
) -> Result<(), postgres::Error> {
    for t in TABLES {
        tx.execute(
            &format!("DELETE FROM {t} WHERE hour < date_trunc('hour', $1::text::timestamptz)"),
            &[&cutoff],
        )?;
    }
    Ok(())
}
