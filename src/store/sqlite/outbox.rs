//! The webhook outbox on SQLite (the model: `store/outbox.rs`).

use rusqlite::{params, OptionalExtension};

use std::time::SystemTime;

use crate::record::rfc3339;
use crate::store::outbox::{
    body, event_id, Attempt, Delivery, OutboxConn, OutboxCounts, Subscriptions,
};
use crate::store::StoreError;

/// The columns a [`Delivery`] is read from, in order (`created_at` as text).
const DELIVERY: &str = "id, endpoint, event, body, created_at, attempts, state, last_error";

fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        event: r.get(2)?,
        body: r.get(3)?,
        created_at: r.get(4)?,
        attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
        state: r.get(6)?,
        last_error: r.get(7)?,
    })
}

/// Adds an event for every endpoint subscribed to it (SQLite, inside the caller's transaction).
pub(in crate::store) fn enqueue(
    tx: &rusqlite::Connection,
    subs: &Subscriptions,
    event: &str,
    data: &serde_json::Value,
) -> rusqlite::Result<()> {
    let now = rfc3339(SystemTime::now());
    let id = event_id();
    for (endpoint, _) in subs.iter().filter(|(_, e)| e.iter().any(|x| x == event)) {
        tx.prepare_cached(
            "INSERT INTO webhook_outbox(endpoint, event, body, created_at, attempts, next_at, state)
             VALUES (?1, ?2, ?3, ?4, 0, ?4, 'pending')",
        )?
        .execute(params![endpoint, event, body(&id, event, &now, data), now])?;
    }
    Ok(())
}

/// Per endpoint counts, and the last `limit` dead deliveries (SQLite).
pub(in crate::store) fn status(
    c: &rusqlite::Connection,
    limit: usize,
) -> rusqlite::Result<(Vec<OutboxCounts>, Vec<Delivery>)> {
    let counts = c
        .prepare_cached(
            "SELECT endpoint, sum(state = 'pending'), sum(state = 'delivered'), sum(state = 'dead')
             FROM webhook_outbox GROUP BY endpoint ORDER BY endpoint",
        )?
        .query_map([], |r| {
            Ok(OutboxCounts {
                endpoint: r.get(0)?,
                pending: r.get::<_, i64>(1)?.max(0) as u64,
                delivered: r.get::<_, i64>(2)?.max(0) as u64,
                dead: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    let dead = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY} FROM webhook_outbox WHERE state = 'dead' ORDER BY id DESC LIMIT ?1"
        ))?
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], delivery)?
        .collect::<Result<_, _>>()?;
    Ok((counts, dead))
}

impl OutboxConn for super::conn::Own {
    fn enqueue(
        &mut self,
        subs: &Subscriptions,
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.with(|c| enqueue(c, subs, event, data))
    }

    fn claim(
        &mut self,
        endpoint: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<Option<Delivery>, StoreError> {
        let (now, until) = (rfc3339(now), rfc3339(until));
        self.with(|c| {
            c.prepare_cached(&format!(
                "UPDATE webhook_outbox SET next_at = ?3
                 WHERE id = (SELECT min(id) FROM webhook_outbox WHERE endpoint = ?1 AND state = 'pending')
                   AND next_at <= ?2
                 RETURNING {DELIVERY}"
            ))?
            .query_row(params![endpoint, now, until], delivery)
            .optional()
        })
    }

    fn attempted(&mut self, id: i64, a: &Attempt) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE webhook_outbox SET attempts = attempts + 1, state = ?2, last_error = ?3,
                   next_at = ?4, delivered_at = ?5 WHERE id = ?1",
            )?
            .execute(params![
                id,
                a.state,
                a.error,
                rfc3339(a.next),
                a.delivered.map(rfc3339)
            ])
            .map(|_| ())
        })
    }
}
