//! The rollout's events on SQLite (the model: `store/rollout.rs`).

use rusqlite::{params, Connection, OptionalExtension};

use std::time::SystemTime;

use crate::record::rfc3339;
use crate::store::rollout::{Event, RolloutConn, EVENT_COLUMNS};
use crate::store::{StoreError, Subscriptions};

fn event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        at: r.get(1)?,
        from: r.get(2)?,
        to: r.get(3)?,
        actor: r.get(4)?,
        reason: r.get(5)?,
        evidence: r
            .get::<_, Option<String>>(6)?
            .and_then(|e| serde_json::from_str(&e).ok()),
    })
}

/// The changes in `[from, to)`, oldest first (the newest `limit`).
pub(in crate::store) fn events(
    c: &Connection,
    from: SystemTime,
    to: SystemTime,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    let mut v: Vec<Event> = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM rollout_events WHERE at >= ?1 AND at < ?2
             ORDER BY id DESC LIMIT ?3"
        ))?
        .query_map(params![rfc3339(from), rfc3339(to), limit as i64], event)?
        .collect::<Result<_, _>>()?;
    v.reverse();
    Ok(v)
}

impl RolloutConn for super::conn::Own {
    fn latest(&mut self) -> Result<Option<Event>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM rollout_events ORDER BY id DESC LIMIT 1"),
                [],
                event,
            )
            .optional()
        })
    }

    fn append(
        &mut self,
        _at: SystemTime,
        e: &Event,
        subs: &Subscriptions,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let evidence = e.evidence.as_ref().map(ToString::to_string);
        self.in_transaction(|tx| {
            tx.execute(
                "INSERT INTO rollout_events(at, from_phase, to_phase, actor, reason, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.at, e.from, e.to, e.actor, e.reason, evidence],
            )?;
            let id = tx.last_insert_rowid();
            super::outbox::enqueue(tx, subs, "rollout.changed", data)?;
            Ok(id)
        })
    }

    fn events(
        &mut self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.with(|c| events(c, from, to, limit))
    }

    fn noise_fields(&mut self, min_count: u64) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT route, field FROM noise_fields WHERE differed >= ?1")?
                .query_map([min_count as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }
}
