//! The webhook outbox: every event is a row per subscribed endpoint, written in the transaction
//! that made it happen (a change of account health with its exchanges, a change of phase with
//! its `rollout_events` row, a failed gate run), so a restart loses nothing; the deliverer
//! (the `webhook` module) takes the oldest due row of each endpoint, one at a time, and marks it
//! delivered, due again later, or dead.
//!
//! Table `webhook_outbox(id, endpoint, event, body, created_at, attempts, next_at, state,
//! last_error, delivered_at)`; `state` is `pending`, `delivered` or `dead`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::StoreError;

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

pub(super) fn event_id() -> String {
    format!("evt_{:016x}", crate::record::random_u64())
}

/// What the outbox reads and writes of its store, per engine (`sqlite/outbox.rs`,
/// `postgres/outbox.rs`).
pub(super) trait OutboxConn: Send {
    /// Adds an event for every endpoint subscribed to it, on its own.
    fn enqueue(
        &mut self,
        subs: &Subscriptions,
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Leases the oldest pending delivery of `endpoint` until `until` when it is due at `now`.
    fn claim(
        &mut self,
        endpoint: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<Option<Delivery>, StoreError>;
    /// Records an attempt at delivery `id`.
    fn attempted(&mut self, id: i64, attempt: &Attempt) -> Result<(), StoreError>;
}

/// An attempt at a delivery, as the outbox records it.
pub(super) struct Attempt {
    /// `delivered`, `pending` (due again at `next`) or `dead`.
    pub state: &'static str,
    pub error: Option<String>,
    pub next: SystemTime,
    pub delivered: Option<SystemTime>,
}

/// The deliverer's connection to the outbox (opened by [`Outbox::new`], in `open.rs`).
pub struct Outbox {
    pub(super) conn: Box<dyn OutboxConn>,
}

impl Outbox {
    /// Claims the oldest pending delivery of `endpoint` when it is due: it is leased for
    /// `lease` (no other instance of a fleet takes it meanwhile), and the endpoint's later
    /// deliveries wait for it (one in flight per endpoint, in order).
    pub fn claim(
        &mut self,
        endpoint: &str,
        lease: Duration,
    ) -> Result<Option<Delivery>, StoreError> {
        let now = SystemTime::now();
        self.conn.claim(endpoint, now, now + lease)
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
        let delivered = (state == "delivered").then_some(now);
        self.conn.attempted(
            id,
            &Attempt {
                state,
                error,
                next,
                delivered,
            },
        )
    }
}
