//! Account health, kept by the store writer in the same transaction as the exchanges that
//! change it, so that every writer of a fleet counts on the same rows: an account goes
//! `ok` → `needs_reauth` after `reauth_after` consecutive candidate 401/403 while legacy
//! succeeded (outcome `candidate_auth_error`), and back to `ok` after a candidate success (a 2xx
//! or 3xx). Other outcomes (timeouts, 5xx, skips) change nothing. Rows exist only for accounts
//! that had an auth error once.
//!
//! Table `account_health(account, state, since, consecutive, last_error, updated_at)`.

use std::collections::BTreeMap;

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
pub(super) enum Signal {
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
pub(super) fn signals(batch: &[Box<Record>]) -> BTreeMap<&str, Vec<(String, Signal)>> {
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
pub(super) fn apply(
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
