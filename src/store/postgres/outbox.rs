//! The webhook outbox on PostgreSQL (the model: `store/outbox.rs`).

use std::time::SystemTime;

use crate::record::rfc3339;
use crate::store::outbox::{
    body, event_id, Attempt, Delivery, OutboxConn, OutboxCounts, Subscriptions,
};
use crate::store::StoreError;

const DELIVERY: &str = "id, endpoint, event, body,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), attempts, state, last_error";

fn delivery(r: &postgres::Row) -> Delivery {
    Delivery {
        id: r.get(0),
        endpoint: r.get(1),
        event: r.get(2),
        body: r.get(3),
        created_at: r.get(4),
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        state: r.get(6),
        last_error: r.get(7),
    }
}

/// [`sqlite_enqueue`] for PostgreSQL.
pub(in crate::store) fn enqueue(
    tx: &mut impl postgres::GenericClient,
    subs: &Subscriptions,
    event: &str,
    data: &serde_json::Value,
) -> Result<(), postgres::Error> {
    let now = rfc3339(SystemTime::now());
    let id = event_id();
    for (endpoint, _) in subs.iter().filter(|(_, e)| e.iter().any(|x| x == event)) {
        tx.execute(
            "INSERT INTO webhook_outbox(endpoint, event, body, created_at, attempts, next_at, state)
             VALUES ($1, $2, $3, $4::text::timestamptz, 0, $4::text::timestamptz, 'pending')",
            &[endpoint, &event, &body(&id, event, &now, data), &now],
        )?;
    }
    Ok(())
}

/// [`sqlite_status`] for PostgreSQL.
pub(in crate::store) fn status(
    c: &mut postgres::Client,
    limit: usize,
) -> Result<(Vec<OutboxCounts>, Vec<Delivery>), postgres::Error> {
    let n = |r: &postgres::Row, i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    let counts = c
        .query(
            "SELECT endpoint, count(*) FILTER (WHERE state = 'pending'),
               count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'dead')
             FROM webhook_outbox GROUP BY endpoint ORDER BY endpoint",
            &[],
        )?
        .iter()
        .map(|r| OutboxCounts {
            endpoint: r.get(0),
            pending: n(r, 1),
            delivered: n(r, 2),
            dead: n(r, 3),
        })
        .collect();
    let dead = c
        .query(
            &format!(
                "SELECT {DELIVERY} FROM webhook_outbox WHERE state = 'dead' ORDER BY id DESC LIMIT $1"
            ),
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        )?
        .iter()
        .map(delivery)
        .collect();
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

    /// Due by the database's clock (`now()`): the instances of a fleet agree on it.
    fn claim(
        &mut self,
        endpoint: &str,
        _now: SystemTime,
        until: SystemTime,
    ) -> Result<Option<Delivery>, StoreError> {
        let until = rfc3339(until);
        self.with(|c| {
            Ok(c.query(
                &format!(
                    "UPDATE webhook_outbox SET next_at = $2::text::timestamptz
                     WHERE id = (SELECT min(id) FROM webhook_outbox WHERE endpoint = $1 AND state = 'pending')
                       AND next_at <= now()
                     RETURNING {DELIVERY}"
                ),
                &[&endpoint, &until],
            )?
            .first()
            .map(delivery))
        })
    }

    fn attempted(&mut self, id: i64, a: &Attempt) -> Result<(), StoreError> {
        let (next, delivered) = (rfc3339(a.next), a.delivered.map(rfc3339));
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, state = $2, last_error = $3,
                   next_at = $4::text::timestamptz, delivered_at = $5::text::timestamptz WHERE id = $1",
                &[&id, &a.state, &a.error, &next, &delivered],
            )
            .map(|_| ())
        })
    }
}
