//! The webhook outbox: every event is a row per subscribed endpoint, written in the transaction
//! that made it happen (a change of account health with its exchanges, a change of phase with
//! its `rollout_events` row, a failed gate run), so a restart loses nothing; the deliverer
//! (the `webhook` module) takes the oldest due row of each endpoint, one at a time, and marks it
//! delivered, due again later, or dead.
//!
//! Table `webhook_outbox(id, endpoint, event, body, created_at, attempts, next_at, state,
//! last_error, delivered_at)`; `state` is `pending`, `delivered` or `dead`.

use std::time::{Duration, SystemTime};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::location::Location;
use super::StoreError;
use crate::record::rfc3339;

/// The endpoints subscribed to events: (endpoint name, event names).
pub type Subscriptions = Vec<(String, Vec<String>)>;

/// One delivery as the outbox holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: String,
    pub event: String,
    /// The JSON body sent (as text: it is what is signed).
    pub body: String,
    pub created_at: String,
    pub attempts: u32,
    pub state: String,
    pub last_error: Option<String>,
}

/// Per endpoint: deliveries pending, delivered and dead.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OutboxCounts {
    pub endpoint: String,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// The body of an event: `{"id", "event", "at", "data"}` (`id` names the event, the same for
/// every endpoint and every attempt: a receiver drops what it has seen).
pub(super) fn body(event_id: &str, event: &str, at: &str, data: &serde_json::Value) -> String {
    serde_json::json!({"id": event_id, "event": event, "at": at, "data": data}).to_string()
}

/// The columns a [`Delivery`] is read from, in order (`created_at` as text).
const SQLITE_DELIVERY: &str = "id, endpoint, event, body, created_at, attempts, state, last_error";
const PG_DELIVERY: &str = "id, endpoint, event, body,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), attempts, state, last_error";

fn sqlite_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
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

fn pg_delivery(r: &postgres::Row) -> Delivery {
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

/// Adds an event for every endpoint subscribed to it (SQLite, inside the caller's transaction).
pub(super) fn sqlite_enqueue(
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

/// [`sqlite_enqueue`] for PostgreSQL.
pub(super) fn pg_enqueue(
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

fn event_id() -> String {
    format!("evt_{:016x}", crate::record::random_u64())
}

/// Adds an event on its own (a command's, e.g. a failed gate run).
pub fn enqueue(
    location: &Location,
    subs: &Subscriptions,
    event: &str,
    data: &serde_json::Value,
) -> Result<(), StoreError> {
    match location {
        Location::Sqlite(path) => {
            let conn = super::open(path)?;
            sqlite_enqueue(&conn, subs, event, data)
                .map_err(|error| StoreError::sqlite(path.display().to_string(), error))
        }
        Location::Postgres(url) => {
            let mut c = super::pg::connect(url)?;
            super::migrate::apply_postgres(&mut c)
                .and_then(|_| pg_enqueue(&mut c, subs, event, data))
                .map_err(|error| StoreError::postgres(url.to_string(), error))
        }
    }
}

/// The deliverer's connection to the outbox.
pub struct Outbox {
    location: Location,
    sqlite: Option<rusqlite::Connection>,
    pg: Option<postgres::Client>,
}

impl Outbox {
    pub fn new(location: &Location) -> Self {
        Self {
            location: location.clone(),
            sqlite: None,
            pg: None,
        }
    }

    fn err_sqlite(&self, error: rusqlite::Error) -> StoreError {
        StoreError::sqlite(self.location.to_string(), error)
    }

    fn err_pg(&self, error: postgres::Error) -> StoreError {
        StoreError::postgres(self.location.to_string(), error)
    }

    /// Claims the oldest pending delivery of `endpoint` when it is due: it is leased for
    /// `lease` (no other instance of a fleet takes it meanwhile), and the endpoint's later
    /// deliveries wait for it (one in flight per endpoint, in order).
    pub fn claim(
        &mut self,
        endpoint: &str,
        lease: Duration,
    ) -> Result<Option<Delivery>, StoreError> {
        let now = SystemTime::now();
        let (now_s, until) = (rfc3339(now), rfc3339(now + lease));
        match &self.location {
            Location::Sqlite(p) => {
                if self.sqlite.is_none() {
                    self.sqlite = Some(super::open(p)?);
                }
                let c = self.sqlite.as_ref().expect("opened");
                c.prepare_cached(&format!(
                    "UPDATE webhook_outbox SET next_at = ?3
                     WHERE id = (SELECT min(id) FROM webhook_outbox WHERE endpoint = ?1 AND state = 'pending')
                       AND next_at <= ?2
                     RETURNING {SQLITE_DELIVERY}"
                ))
                .and_then(|mut q| {
                    q.query_row(params![endpoint, now_s, until], sqlite_delivery)
                        .optional()
                })
                .map_err(|e| self.err_sqlite(e))
            }
            Location::Postgres(url) => {
                if self.pg.is_none() {
                    self.pg = Some(super::pg::connect(url)?);
                }
                let c = self.pg.as_mut().expect("connected");
                let rows = c.query(
                    &format!(
                        "UPDATE webhook_outbox SET next_at = $2::text::timestamptz
                         WHERE id = (SELECT min(id) FROM webhook_outbox WHERE endpoint = $1 AND state = 'pending')
                           AND next_at <= now()
                         RETURNING {PG_DELIVERY}"
                    ),
                    &[&endpoint, &until],
                );
                let rows = match rows {
                    Ok(r) => r,
                    Err(e) => {
                        self.pg = None;
                        return Err(self.err_pg(e));
                    }
                };
                Ok(rows.first().map(pg_delivery))
            }
        }
    }

    /// Records an attempt: delivered, due again after `retry_in`, or dead (`retry_in` `None`).
    pub fn attempted(
        &mut self,
        id: i64,
        outcome: &Result<(), String>,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let (state, error, next) = match (outcome, retry_in) {
            (Ok(()), _) => ("delivered", None, now),
            (Err(e), Some(d)) => ("pending", Some(e.clone()), now + d),
            (Err(e), None) => ("dead", Some(e.clone()), now),
        };
        let delivered = (state == "delivered").then(|| rfc3339(now));
        match &self.location {
            Location::Sqlite(_) => {
                let c = self.sqlite.as_ref().expect("read before");
                c.prepare_cached(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, state = ?2, last_error = ?3,
                       next_at = ?4, delivered_at = ?5 WHERE id = ?1",
                )
                .and_then(|mut q| q.execute(params![id, state, error, rfc3339(next), delivered]))
                .map(|_| ())
                .map_err(|e| self.err_sqlite(e))
            }
            Location::Postgres(_) => {
                let c = self.pg.as_mut().expect("read before");
                let r = c.execute(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, state = $2, last_error = $3,
                       next_at = $4::text::timestamptz, delivered_at = $5::text::timestamptz WHERE id = $1",
                    &[&id, &state, &error, &rfc3339(next), &delivered],
                );
                r.map(|_| ()).map_err(|e| {
                    self.pg = None;
                    self.err_pg(e)
                })
            }
        }
    }
}

/// Per endpoint counts, and the last `limit` dead deliveries (SQLite).
pub(super) fn sqlite_status(
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
            "SELECT {SQLITE_DELIVERY} FROM webhook_outbox WHERE state = 'dead' ORDER BY id DESC LIMIT ?1"
        ))?
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], sqlite_delivery)?
        .collect::<Result<_, _>>()?;
    Ok((counts, dead))
}

/// [`sqlite_status`] for PostgreSQL.
pub(super) fn pg_status(
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
                "SELECT {PG_DELIVERY} FROM webhook_outbox WHERE state = 'dead' ORDER BY id DESC LIMIT $1"
            ),
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        )?
        .iter()
        .map(pg_delivery)
        .collect();
    Ok((counts, dead))
}
