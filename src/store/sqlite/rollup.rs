//! The hourly roll-ups on SQLite: saved with each batch, built from the rows by a migration,
//! rebuilt, pruned (the model: `store/rollup.rs`).

use crate::record::Outcome;

use crate::store::rollup::*;

/// Adds a batch's deltas to the SQLite roll-ups (in the writer's transaction).
pub(in crate::store) fn save(conn: &rusqlite::Connection, d: &Deltas) -> rusqlite::Result<()> {
    use rusqlite::params;
    let mut q = conn.prepare_cached(
        "INSERT INTO rollup_outcomes(hour, route, outcome, mapping_version, served_by, fallback,
             skip_reason, n, shadow_calls, first_at, last_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(route, hour, outcome, mapping_version, served_by, fallback, skip_reason)
         DO UPDATE SET n = n + excluded.n, shadow_calls = shadow_calls + excluded.shadow_calls,
             first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)",
    )?;
    for ((hour, route, outcome, version, served_by, fallback, skip), a) in &d.outcomes {
        q.execute(params![
            hour,
            route,
            outcome,
            version,
            served_by,
            fallback,
            skip,
            a.n,
            a.shadow_calls,
            a.first_at,
            a.last_at
        ])?;
    }
    let mut q = conn.prepare_cached(
        "INSERT INTO rollup_accounts(hour, route, account, outcome, mapping_version, n)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(hour, route, account, outcome, mapping_version) DO UPDATE SET n = n + excluded.n",
    )?;
    for ((hour, route, account, outcome, version), n) in &d.accounts {
        q.execute(params![hour, route, account, outcome, version, n])?;
    }
    let mut q = conn.prepare_cached(
        "INSERT INTO rollup_fields(hour, route, field, kind, diffs, exchanges, first_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(route, hour, field, kind) DO UPDATE SET diffs = diffs + excluded.diffs,
             exchanges = exchanges + excluded.exchanges, first_id = min(first_id, excluded.first_id)",
    )?;
    for ((hour, route, field, kind), (diffs, exchanges, first)) in &d.fields {
        q.execute(params![hour, route, field, kind, diffs, exchanges, first])?;
    }
    let mut q = conn.prepare_cached(
        "INSERT INTO rollup_latency(hour, route, side, bucket, n) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(route, side, hour, bucket) DO UPDATE SET n = n + excluded.n",
    )?;
    for ((hour, route, side, b), n) in &d.latency {
        q.execute(params![hour, route, side, b, n])?;
    }
    // (Prepared only when needed: migration 9's fill runs before their tables exist.)
    if !d.signatures.is_empty() {
        let mut q = conn.prepare_cached(
            "INSERT INTO rollup_signatures(hour, route, account, hash, signature, n)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(route, hour, account, hash) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((hour, route, account, sig), n) in &d.signatures {
            q.execute(params![hour, route, account, signature_hash(sig), sig, n])?;
        }
    }
    if !d.unkept.is_empty() {
        let mut q = conn.prepare_cached(
            "INSERT INTO rollup_unkept(hour, n) VALUES (?1, ?2)
             ON CONFLICT(hour) DO UPDATE SET n = n + excluded.n",
        )?;
        for (hour, n) in &d.unkept {
            q.execute(params![hour, n])?;
        }
    }
    match d.before {
        Some(before) => conn
            .prepare_cached(
                "UPDATE rollup_state SET covered = max(covered, ?1) WHERE id = 1 AND covered >= ?2",
            )?
            .execute([d.covered, before])?,
        None => conn
            .prepare_cached(
                "INSERT INTO rollup_state(id, covered) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET covered = excluded.covered",
            )?
            .execute([d.covered])?,
    };
    Ok(())
}

/// Builds the roll-ups of the rows a SQLite store already holds (the migration that adds them).
pub(in crate::store) fn fill(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut d = Deltas::default();
    {
        let mut q = conn.prepare(
            "SELECT id, started_at, route, account, outcome, mapping_version, served_by, fallback,
                    reason, legacy_ms, candidate_ms FROM exchanges",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let text = |i: usize| r.get::<_, Option<String>>(i);
            let (at, route, account, outcome) = (text(1)?, text(2)?, text(3)?, text(4)?);
            let (version, served_by, fallback, reason) = (text(5)?, text(6)?, text(7)?, text(8)?);
            d.add(&Facts {
                id: r.get(0)?,
                started_at: at.as_deref().unwrap_or(""),
                route: route.as_deref(),
                account: account.as_deref(),
                outcome: outcome.as_deref().unwrap_or(""),
                mapping_version: version.as_deref(),
                served_by: served_by.as_deref(),
                fallback: fallback.as_deref(),
                reason: reason.as_deref(),
                legacy_ms: r.get(9)?,
                candidate_ms: r.get(10)?,
            });
        }
        let mut q =
            conn.prepare("SELECT exchange_id, started_at, route, field, kind, n FROM diff_fields")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let (at, route): (String, Option<String>) = (r.get(1)?, r.get(2)?);
            let (field, kind): (String, String) = (r.get(3)?, r.get(4)?);
            d.add_field(r.get(0)?, &at, route.as_deref(), &field, &kind, r.get(5)?);
        }
    }
    save(conn, &d)
}

/// Builds the signatures of the `diff` exchanges a SQLite store holds (the migration that adds
/// them; a rebuild after [`fill`]). The coverage is left as it is.
pub(in crate::store) fn fill_signatures(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut d = Deltas {
        before: Some(i64::MAX),
        ..Deltas::default()
    };
    {
        let mut q = conn.prepare(&format!(
            "SELECT x.exchange_id, e.started_at, e.route, e.account, x.field, x.kind
             FROM diff_fields x JOIN exchanges e ON e.id = x.exchange_id
             WHERE e.outcome = '{}' ORDER BY x.exchange_id",
            Outcome::Diff.as_str()
        ))?;
        let mut rows = q.query([])?;
        let mut one = Signed::default();
        while let Some(r) = rows.next()? {
            one.row(
                &mut d,
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                (r.get(4)?, r.get(5)?),
            );
        }
        one.flush(&mut d);
    }
    save(conn, &d)
}

/// The roll-ups built again from the rows, when they do not cover them all (rows another
/// program wrote); `shadowdiff migrate` calls it. Returns whether it rebuilt.
pub(in crate::store) fn rebuild(conn: &rusqlite::Connection) -> rusqlite::Result<Rebuild> {
    let tx = conn.unchecked_transaction()?;
    if tx.query_row(ROLLED_UP_SQL, [], |r| r.get(0))? {
        return Ok(Rebuild::Current);
    }
    if tx.query_row(ANY_UNKEPT_SQL, [], |r| r.get(0))? {
        return Ok(Rebuild::Refused);
    }
    for t in TABLES {
        tx.execute(&format!("DELETE FROM {t}"), [])?;
    }
    fill(&tx)?;
    fill_signatures(&tx)?;
    tx.commit()?;
    Ok(Rebuild::Rebuilt)
}

/// Deletes the roll-ups of the hours before the one `cutoff` falls in (that hour keeps its
/// counts whole: the rows pruned in it stay counted there).
pub(in crate::store) fn prune(conn: &rusqlite::Connection, cutoff: &str) -> rusqlite::Result<()> {
    for t in TABLES {
        conn.execute(
            &format!("DELETE FROM {t} WHERE hour < substr(?1, 1, 13)"),
            [cutoff],
        )?;
    }
    Ok(())
}
