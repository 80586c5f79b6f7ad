//! The accounts' health on SQLite (the model: `store/health.rs`).

use rusqlite::{params, OptionalExtension};

use crate::record::{rfc3339, Record};
use crate::store::health::{apply, signals, AccountHealth, HealthChange};

/// Updates the health of the batch's accounts (SQLite, inside the batch's transaction).
pub(in crate::store) fn update(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Box<Record>],
    reauth_after: u64,
) -> rusqlite::Result<Vec<HealthChange>> {
    let mut changes = Vec::new();
    for (account, signals) in signals(batch) {
        let row = tx
            .prepare_cached(
                "SELECT account, state, since, consecutive, last_error FROM account_health WHERE account = ?1",
            )?
            .query_row([account], row)
            .optional()?;
        let (row, mut c) = apply(account, row, signals, reauth_after);
        if let Some(r) = row {
            tx.prepare_cached(
                "INSERT INTO account_health(account, state, since, consecutive, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(account) DO UPDATE SET state = excluded.state, since = excluded.since,
                   consecutive = excluded.consecutive, last_error = excluded.last_error,
                   updated_at = excluded.updated_at",
            )?
            .execute(params![
                r.account,
                r.state,
                r.since,
                r.consecutive as i64,
                r.last_error,
                rfc3339(std::time::SystemTime::now())
            ])?;
        }
        changes.append(&mut c);
    }
    Ok(changes)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountHealth> {
    Ok(AccountHealth {
        account: r.get(0)?,
        state: r.get(1)?,
        since: r.get(2)?,
        consecutive: r.get::<_, i64>(3)?.max(0) as u64,
        last_error: r.get(4)?,
    })
}

/// (ok, needs_reauth) accounts.
pub(in crate::store) fn counts(c: &rusqlite::Connection) -> rusqlite::Result<(u64, u64)> {
    c.query_row(
        "SELECT coalesce(sum(state = 'ok'), 0), coalesce(sum(state = 'needs_reauth'), 0) FROM account_health",
        [],
        |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64)),
    )
}

/// Every account's row, accounts needing re-auth first.
pub(in crate::store) fn all(c: &rusqlite::Connection) -> rusqlite::Result<Vec<AccountHealth>> {
    c.prepare_cached(
        "SELECT account, state, since, consecutive, last_error FROM account_health
         ORDER BY state = 'ok', account LIMIT 10000",
    )?
    .query_map([], row)?
    .collect()
}
