//! The triage marks and their audit trail on SQLite (the model: `store/triage.rs`).

use rusqlite::{params, Connection};

use crate::store::triage::{mark, TriageConn};
use crate::store::StoreError;
use crate::triage::{Change, LogEntry, Mark, Pattern};

fn apply(c: &Connection, change: &Change) -> rusqlite::Result<bool> {
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

/// The marks, ordered by route, field and kind.
pub(in crate::store) fn marks(c: &Connection) -> rusqlite::Result<Vec<Mark>> {
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

/// The audit trail, newest first (`limit` lines).
pub(in crate::store) fn log(c: &Connection, limit: usize) -> rusqlite::Result<Vec<LogEntry>> {
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

impl TriageConn for super::conn::Own {
    fn apply(&mut self, change: &Change) -> Result<bool, StoreError> {
        self.in_transaction(|tx| apply(tx, change))
    }
}
