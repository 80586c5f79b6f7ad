//! The accounts' health on PostgreSQL (the model: `store/health.rs`).

use super::text::ts;
use crate::record::Record;
use crate::store::health::{apply, signals, AccountHealth, HealthChange};

/// [`sqlite_update`] for PostgreSQL: each account's row is locked while it is read and written
/// (instances of a fleet update the same counts), accounts in one order (no deadlock).
pub(in crate::store) fn update(
    tx: &mut postgres::Transaction<'_>,
    batch: &[Box<Record>],
    reauth_after: u64,
) -> Result<Vec<HealthChange>, postgres::Error> {
    let mut changes = Vec::new();
    for (account, signals) in signals(batch) {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT account, state, {}, consecutive, last_error FROM account_health
                     WHERE account = $1 FOR UPDATE",
                    ts("since")
                ),
                &[&account],
            )?
            .map(|r| row(&r));
        let (row, mut c) = apply(account, row, signals, reauth_after);
        if let Some(r) = row {
            tx.execute(
                "INSERT INTO account_health(account, state, since, consecutive, last_error, updated_at)
                 VALUES ($1, $2, $3::text::timestamptz, $4, $5, now())
                 ON CONFLICT (account) DO UPDATE SET state = excluded.state, since = excluded.since,
                   consecutive = excluded.consecutive, last_error = excluded.last_error,
                   updated_at = excluded.updated_at",
                &[
                    &r.account,
                    &r.state,
                    &r.since,
                    &i64::try_from(r.consecutive).unwrap_or(i64::MAX),
                    &r.last_error,
                ],
            )?;
        }
        changes.append(&mut c);
    }
    Ok(changes)
}

/// [`sqlite_counts`] for PostgreSQL.
pub(in crate::store) fn counts(c: &mut postgres::Client) -> Result<(u64, u64), postgres::Error> {
    let r = c.query_one(
        "SELECT count(*) FILTER (WHERE state = 'ok'), count(*) FILTER (WHERE state = 'needs_reauth')
         FROM account_health",
        &[],
    )?;
    let n = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    Ok((n(0), n(1)))
}

/// [`sqlite_all`] for PostgreSQL.
pub(in crate::store) fn all(
    c: &mut postgres::Client,
) -> Result<Vec<AccountHealth>, postgres::Error> {
    Ok(c.query(
        &format!(
            "SELECT account, state, {}, consecutive, last_error FROM account_health
             ORDER BY state = 'ok', account LIMIT 10000",
            ts("since")
        ),
        &[],
    )?
    .iter()
    .map(row)
    .collect())
}

/// An `account_health` row read as (account, state, since as text, consecutive, last_error).
fn row(r: &postgres::Row) -> AccountHealth {
    AccountHealth {
        account: r.get(0),
        state: r.get(1),
        since: r.get(2),
        consecutive: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        last_error: r.get(4),
    }
}
