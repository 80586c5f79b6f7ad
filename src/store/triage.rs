//! The triage rows (`crate::triage` is the model): `triage`, one mark per (route, field
//! pattern, kind), and `triage_log`, the audit trail, appended to in the same transaction as
//! every change. Fleet-safe: a mark is an upsert on its key, so two instances or operators
//! marking the same pattern at once leave one mark (the last) and two lines of the trail.

use rusqlite::{params, Connection};

use super::location::Location;
use super::StoreError;
use crate::triage::{Change, LogEntry, Mark, Pattern, Status};

/// Applies a change and appends it to the audit trail (one transaction). `false`: a clear of a
/// pattern that has no mark (nothing changed, nothing appended).
pub fn record_triage(location: &Location, change: &Change) -> Result<bool, StoreError> {
    super::conn::in_transaction(
        location,
        "triage",
        |tx| sqlite_apply(tx, change),
        |tx| pg_apply(tx, change),
    )
}

fn sqlite_apply(c: &Connection, change: &Change) -> rusqlite::Result<bool> {
    let p = change.pattern();
    match change {
        Change::Mark(m) => {
            c.execute(
                "INSERT INTO triage(route, field, kind, status, reason, ticket, marked_by, at, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(route, field, kind) DO UPDATE SET status = excluded.status,
                    reason = excluded.reason, ticket = excluded.ticket,
                    marked_by = excluded.marked_by, at = excluded.at, expires = excluded.expires",
                params![
                    p.route,
                    p.field,
                    p.kind,
                    m.status.as_str(),
                    m.reason,
                    m.ticket,
                    m.by,
                    m.at,
                    m.expires
                ],
            )?;
            c.execute(
                "INSERT INTO triage_log(at, action, route, field, kind, status, reason, ticket, marked_by, expires)
                 VALUES (?1, 'mark', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    m.at,
                    p.route,
                    p.field,
                    p.kind,
                    m.status.as_str(),
                    m.reason,
                    m.ticket,
                    m.by,
                    m.expires
                ],
            )?;
        }
        Change::Clear { by, at, reason, .. } => {
            let gone = c.execute(
                "DELETE FROM triage WHERE route = ?1 AND field = ?2 AND kind = ?3",
                params![p.route, p.field, p.kind],
            )?;
            if gone == 0 {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO triage_log(at, action, route, field, kind, reason, marked_by)
                 VALUES (?1, 'clear', ?2, ?3, ?4, ?5, ?6)",
                params![at, p.route, p.field, p.kind, reason, by],
            )?;
        }
    }
    Ok(true)
}

fn pg_apply(c: &mut postgres::Transaction<'_>, change: &Change) -> Result<bool, postgres::Error> {
    let p = change.pattern();
    match change {
        Change::Mark(m) => {
            c.execute(
                "INSERT INTO triage(route, field, kind, status, reason, ticket, marked_by, at, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, $9::text::timestamptz)
                 ON CONFLICT(route, field, kind) DO UPDATE SET status = excluded.status,
                    reason = excluded.reason, ticket = excluded.ticket,
                    marked_by = excluded.marked_by, at = excluded.at, expires = excluded.expires",
                &[
                    &p.route,
                    &p.field,
                    &p.kind,
                    &m.status.as_str(),
                    &m.reason,
                    &m.ticket,
                    &m.by,
                    &m.at,
                    &m.expires,
                ],
            )?;
            c.execute(
                "INSERT INTO triage_log(at, action, route, field, kind, status, reason, ticket, marked_by, expires)
                 VALUES ($1::text::timestamptz, 'mark', $2, $3, $4, $5, $6, $7, $8, $9::text::timestamptz)",
                &[
                    &m.at,
                    &p.route,
                    &p.field,
                    &p.kind,
                    &m.status.as_str(),
                    &m.reason,
                    &m.ticket,
                    &m.by,
                    &m.expires,
                ],
            )?;
        }
        Change::Clear { by, at, reason, .. } => {
            let gone = c.execute(
                "DELETE FROM triage WHERE route = $1 AND field = $2 AND kind = $3",
                &[&p.route, &p.field, &p.kind],
            )?;
            if gone == 0 {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO triage_log(at, action, route, field, kind, reason, marked_by)
                 VALUES ($1::text::timestamptz, 'clear', $2, $3, $4, $5, $6)",
                &[at, &p.route, &p.field, &p.kind, reason, by],
            )?;
        }
    }
    Ok(true)
}

/// The marks, ordered by route, field and kind.
pub(super) fn sqlite_marks(c: &Connection) -> rusqlite::Result<Vec<Mark>> {
    c.prepare_cached(
        "SELECT route, field, kind, status, reason, ticket, marked_by, at, expires FROM triage
         ORDER BY route, field, kind LIMIT 10000",
    )?
    .query_map([], |r| {
        Ok(mark(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            &r.get::<_, String>(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    })?
    .collect()
}

#[allow(clippy::too_many_arguments)]
fn mark(
    route: String,
    field: String,
    kind: String,
    status: &str,
    reason: String,
    ticket: Option<String>,
    by: String,
    at: String,
    expires: Option<String>,
) -> Mark {
    Mark {
        pattern: Pattern { route, field, kind },
        // A status this version does not know (written by a newer one) holds nothing back.
        status: Status::parse(status).unwrap_or(Status::FixInProgress),
        reason,
        ticket,
        by,
        at,
        expires,
    }
}

/// The audit trail, newest first (`limit` lines).
pub(super) fn sqlite_log(c: &Connection, limit: usize) -> rusqlite::Result<Vec<LogEntry>> {
    c.prepare_cached(
        "SELECT at, action, route, field, kind, status, reason, ticket, marked_by, expires
         FROM triage_log ORDER BY id DESC LIMIT ?1",
    )?
    .query_map([limit as i64], |r| {
        Ok(LogEntry {
            at: r.get(0)?,
            action: r.get(1)?,
            pattern: Pattern {
                route: r.get(2)?,
                field: r.get(3)?,
                kind: r.get(4)?,
            },
            status: r.get(5)?,
            reason: r.get(6)?,
            ticket: r.get(7)?,
            by: r.get(8)?,
            expires: r.get(9)?,
        })
    })?
    .collect()
}

fn ts(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// [`sqlite_marks`] for PostgreSQL.
pub(super) fn pg_marks(c: &mut postgres::Client) -> Result<Vec<Mark>, postgres::Error> {
    Ok(c.query(
        &format!(
            "SELECT route, field, kind, status, reason, ticket, marked_by, {}, {} FROM triage
             ORDER BY route, field, kind LIMIT 10000",
            ts("at"),
            ts("expires")
        ),
        &[],
    )?
    .iter()
    .map(|r| {
        mark(
            r.get(0),
            r.get(1),
            r.get(2),
            r.get::<_, &str>(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
        )
    })
    .collect())
}

/// [`sqlite_log`] for PostgreSQL.
pub(super) fn pg_log(
    c: &mut postgres::Client,
    limit: usize,
) -> Result<Vec<LogEntry>, postgres::Error> {
    Ok(c.query(
        &format!(
            "SELECT {}, action, route, field, kind, status, reason, ticket, marked_by, {}
             FROM triage_log ORDER BY id DESC LIMIT $1",
            ts("at"),
            ts("expires")
        ),
        &[&(limit as i64)],
    )?
    .iter()
    .map(|r| LogEntry {
        at: r.get(0),
        action: r.get(1),
        pattern: Pattern {
            route: r.get(2),
            field: r.get(3),
            kind: r.get(4),
        },
        status: r.get(5),
        reason: r.get(6),
        ticket: r.get(7),
        by: r.get(8),
        expires: r.get(9),
    })
    .collect())
}

/// The condition "this `diff_fields` row `x` of exchange `e` is at a pattern whose mark is
/// `accepted` and not expired at the parameter `now`" (SQL shared by both engines but for the
/// parameter's form). The mark is [`crate::triage::mark_of`]'s: the row's kind's own mark when
/// there is one (accepted or not, expired or not), else the mark for every kind.
pub(super) fn accepted_row(now: &str) -> String {
    let at = |kind: &str| {
        format!(
            "SELECT 1 FROM triage t WHERE t.route = coalesce(e.route, '') AND t.field = x.field
                AND t.kind = {kind}"
        )
    };
    let holds = format!(
        "AND t.status = '{}' AND (t.expires IS NULL OR t.expires > {now})",
        Status::Accepted.as_str()
    );
    format!(
        "(EXISTS ({own} {holds}) OR (NOT EXISTS ({own}) AND EXISTS ({every} {holds})))",
        own = at("x.kind"),
        every = at("''"),
    )
}
