//! Account health, kept by the store writer in the same transaction as the exchanges that
//! change it, so that every writer of a fleet counts on the same rows: an account goes
//! `ok` → `needs_reauth` after `reauth_after` consecutive candidate 401/403 while legacy
//! succeeded (outcome `candidate_auth_error`), and back to `ok` after a candidate success (a 2xx
//! or 3xx). Other outcomes (timeouts, 5xx, skips) change nothing. Rows exist only for accounts
//! that had an auth error once.
//!
//! Table `account_health(account, state, since, consecutive, last_error, updated_at)`.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::record::{rfc3339, Outcome, Record};

/// An account's state.
pub(super) const OK: &str = "ok";
pub const NEEDS_REAUTH: &str = "needs_reauth";

/// One account's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountHealth {
    pub account: String,
    /// `ok` or `needs_reauth`.
    pub state: String,
    /// When it entered the state (RFC 3339).
    pub since: String,
    /// Candidate 401/403 in a row (while legacy succeeded).
    pub consecutive: u64,
    pub last_error: Option<String>,
}

/// A change of state, as the writer made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub account: String,
    pub from: String,
    pub to: String,
    pub at: String,
    pub last_error: Option<String>,
}

/// What one exchange says about its account's credentials.
enum Signal {
    AuthError(Option<String>),
    Success,
}

fn signal(r: &Record) -> Option<(&str, Signal)> {
    let account = r.meta.account.as_deref()?;
    if r.outcome == Outcome::CandidateAuthError {
        return Some((account, Signal::AuthError(r.reason.clone())));
    }
    r.candidate_status
        .filter(|s| (200..400).contains(s))
        .map(|_| (account, Signal::Success))
}

/// The batch's signals per account, in order.
fn signals(batch: &[Box<Record>]) -> BTreeMap<&str, Vec<(String, Signal)>> {
    let mut out: BTreeMap<&str, Vec<(String, Signal)>> = BTreeMap::new();
    for r in batch {
        if let Some((account, s)) = signal(r) {
            out.entry(account)
                .or_default()
                .push((rfc3339(r.meta.started_at), s));
        }
    }
    out
}

/// Moves a row to `to` at `at`, recording the change.
fn enter(r: &mut AccountHealth, to: &str, at: String, changes: &mut Vec<HealthChange>) {
    changes.push(HealthChange {
        account: r.account.clone(),
        from: std::mem::replace(&mut r.state, to.to_owned()),
        to: to.to_owned(),
        at: at.clone(),
        last_error: r.last_error.clone(),
    });
    r.since = at;
}

/// Applies an account's signals to its row (`None`: no row yet); the row to write (`None`:
/// nothing to write) and the changes of state.
fn apply(
    account: &str,
    mut row: Option<AccountHealth>,
    signals: Vec<(String, Signal)>,
    reauth_after: u64,
) -> (Option<AccountHealth>, Vec<HealthChange>) {
    let mut changes = Vec::new();
    let mut dirty = false;
    for (at, s) in signals {
        match s {
            Signal::AuthError(reason) => {
                let r = row.get_or_insert_with(|| AccountHealth {
                    account: account.to_owned(),
                    state: OK.to_owned(),
                    since: at.clone(),
                    consecutive: 0,
                    last_error: None,
                });
                r.consecutive += 1;
                r.last_error = reason;
                dirty = true;
                if r.state == OK && r.consecutive >= reauth_after.max(1) {
                    enter(r, NEEDS_REAUTH, at, &mut changes);
                }
            }
            Signal::Success => {
                let Some(r) = row.as_mut() else { continue };
                if r.consecutive > 0 || r.state != OK {
                    r.consecutive = 0;
                    dirty = true;
                }
                if r.state == NEEDS_REAUTH {
                    enter(r, OK, at, &mut changes);
                }
            }
        }
    }
    (row.filter(|_| dirty), changes)
}

/// Updates the health of the batch's accounts (SQLite, inside the batch's transaction).
pub(super) fn sqlite_update(
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
            .query_row([account], sqlite_row)
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

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountHealth> {
    Ok(AccountHealth {
        account: r.get(0)?,
        state: r.get(1)?,
        since: r.get(2)?,
        consecutive: r.get::<_, i64>(3)?.max(0) as u64,
        last_error: r.get(4)?,
    })
}

/// [`sqlite_update`] for PostgreSQL: each account's row is locked while it is read and written
/// (instances of a fleet update the same counts), accounts in one order (no deadlock).
pub(super) fn pg_update(
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
            .map(|r| AccountHealth {
                account: r.get(0),
                state: r.get(1),
                since: r.get(2),
                consecutive: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                last_error: r.get(4),
            });
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

fn ts(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// (ok, needs_reauth) accounts.
pub(super) fn sqlite_counts(c: &rusqlite::Connection) -> rusqlite::Result<(u64, u64)> {
    c.query_row(
        "SELECT coalesce(sum(state = 'ok'), 0), coalesce(sum(state = 'needs_reauth'), 0) FROM account_health",
        [],
        |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64)),
    )
}

/// [`sqlite_counts`] for PostgreSQL.
pub(super) fn pg_counts(c: &mut postgres::Client) -> Result<(u64, u64), postgres::Error> {
    let r = c.query_one(
        "SELECT count(*) FILTER (WHERE state = 'ok'), count(*) FILTER (WHERE state = 'needs_reauth')
         FROM account_health",
        &[],
    )?;
    let n = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    Ok((n(0), n(1)))
}

/// Every account's row, accounts needing re-auth first.
pub(super) fn sqlite_all(c: &rusqlite::Connection) -> rusqlite::Result<Vec<AccountHealth>> {
    c.prepare_cached(
        "SELECT account, state, since, consecutive, last_error FROM account_health
         ORDER BY state = 'ok', account LIMIT 10000",
    )?
    .query_map([], sqlite_row)?
    .collect()
}

/// [`sqlite_all`] for PostgreSQL.
pub(super) fn pg_all(c: &mut postgres::Client) -> Result<Vec<AccountHealth>, postgres::Error> {
    Ok(c.query(
        &format!(
            "SELECT account, state, {}, consecutive, last_error FROM account_health
             ORDER BY state = 'ok', account LIMIT 10000",
            ts("since")
        ),
        &[],
    )?
    .iter()
    .map(|r| AccountHealth {
        account: r.get(0),
        state: r.get(1),
        since: r.get(2),
        consecutive: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        last_error: r.get(4),
    })
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(signals: &[bool], n: u64) -> (Option<AccountHealth>, Vec<(String, String)>) {
        let mut row = None;
        let mut all = Vec::new();
        for (i, auth_error) in signals.iter().enumerate() {
            let s = if *auth_error {
                Signal::AuthError(Some("candidate answered 401".into()))
            } else {
                Signal::Success
            };
            let (r, c) = apply("acme", row.clone(), vec![(format!("t{i}"), s)], n);
            if r.is_some() {
                row = r;
            }
            all.extend(c.into_iter().map(|c| (c.to, c.at)));
        }
        (row, all)
    }

    #[test]
    fn three_in_a_row_then_one_success() {
        let (row, changes) = run(&[true, true, true, true, false], 3);
        assert_eq!(
            changes,
            [
                ("needs_reauth".to_owned(), "t2".to_owned()),
                ("ok".to_owned(), "t4".to_owned())
            ]
        );
        let row = row.unwrap();
        assert_eq!((row.state.as_str(), row.consecutive), ("ok", 0));
    }

    #[test]
    fn flapping_never_reaches_the_count_and_successes_alone_write_nothing() {
        let (row, changes) = run(&[true, true, false, true, true, false, true], 3);
        assert!(changes.is_empty());
        assert_eq!(row.unwrap().consecutive, 1);
        let (row, changes) = run(&[false, false], 3);
        assert!(row.is_none() && changes.is_empty());
        // Flapping once needed: each change is one event.
        let (_, changes) = run(&[true, true, true, false, true, true, true, false], 3);
        assert_eq!(changes.len(), 4);
    }
}
