//! The triage marks and their audit trail on PostgreSQL (the model: `store/triage.rs`).

use super::text::ts;
use crate::store::triage::{mark, TriageConn};
use crate::store::StoreError;
use crate::triage::{Change, LogEntry, Mark, Pattern};

fn apply(c: &mut postgres::Transaction<'_>, change: &Change) -> Result<bool, postgres::Error> {
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

/// [`sqlite_marks`] for PostgreSQL.
pub(in crate::store) fn marks(c: &mut postgres::Client) -> Result<Vec<Mark>, postgres::Error> {
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
pub(in crate::store) fn log(
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

impl TriageConn for super::conn::Own {
    fn apply(&mut self, change: &Change) -> Result<bool, StoreError> {
        self.in_transaction(|tx| apply(tx, change))
    }
}
