//! The rollout's rows: `rollout_events`, one per change of phase (when, from, to, who, why,
//! the evidence), appended by the instance or command that made the change and read by every
//! instance to follow the phase; and the learned noise fields the guard discounts.
//!
//! [`RolloutStore`] holds one connection of its own (a PostgreSQL one is opened when first
//! needed and again after a failure). It blocks: use it off the async runtime's threads.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::StoreError;
use super::Subscriptions;
use crate::record::rfc3339;
use serde::Serialize;

/// The rollout's rows are written by this module only.
/// One change of phase, as stored in `rollout_events`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
    /// The evidence the decision rested on (a gate verdict, the guard's criteria), JSON.
    pub evidence: Option<serde_json::Value>,
}

/// A change to record: `from` is filled in by whoever applies it.
#[derive(Debug, Clone)]
pub struct Change {
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
    pub evidence: Option<serde_json::Value>,
}

pub(super) const EVENT_COLUMNS: &str = "id, at, from_phase, to_phase, actor, reason, evidence";

/// What the rollout reads and writes of its store, per engine (`sqlite/rollout.rs`,
/// `postgres/rollout.rs`).
pub(super) trait RolloutConn: Send {
    /// The latest change of phase, if any.
    fn latest(&mut self) -> Result<Option<Event>, StoreError>;
    /// Appends `event`, which happened `at` (its `id` is the store's to give: returned) and,
    /// in the same transaction, queues `data` as `rollout.changed` for the endpoints of `subs`.
    fn append(
        &mut self,
        at: SystemTime,
        event: &Event,
        subs: &Subscriptions,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError>;
    /// The changes in `[from, to)`, oldest first (the newest `limit`).
    fn events(
        &mut self,
        from: SystemTime,
        to: SystemTime,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// (route, field) of the fields learned as noise (differed at least `min_count` times).
    fn noise_fields(&mut self, min_count: u64) -> Result<Vec<(String, String)>, StoreError>;
}

/// The rollout's connection to the store (opened by [`RolloutStore::new`], in `open.rs`).
pub struct RolloutStore {
    pub(super) conn: Box<dyn RolloutConn>,
    /// Endpoints subscribed to `rollout.changed` get each change in the same transaction.
    pub(super) webhooks: Subscriptions,
}

impl RolloutStore {
    /// Queues each change appended for the endpoints subscribed to `rollout.changed`.
    #[must_use]
    pub fn with_webhooks(mut self, subs: Subscriptions) -> Self {
        self.webhooks = subs;
        self
    }

    /// The latest change of phase, if any.
    pub fn latest(&mut self) -> Result<Option<Event>, StoreError> {
        self.conn.latest()
    }

    /// Appends a change of phase from `from`; returns it as stored.
    pub fn append(&mut self, from: Option<&str>, change: &Change) -> Result<Event, StoreError> {
        let now = SystemTime::now();
        let at = rfc3339(now);
        let data = serde_json::json!({
            "from": from, "to": change.to, "actor": change.actor, "reason": change.reason,
            "at": at,
        });
        let mut event = Event {
            id: 0,
            at,
            from: from.map(str::to_owned),
            to: change.to.clone(),
            actor: change.actor.clone(),
            reason: change.reason.clone(),
            evidence: change.evidence.clone(),
        };
        event.id = self.conn.append(now, &event, &self.webhooks, &data)?;
        Ok(event)
    }

    /// The changes since `from`, oldest first (at most `limit`, the newest ones).
    pub fn events(&mut self, from: SystemTime, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.conn.events(from, SystemTime::now(), limit)
    }

    /// The fields learned as noise per route (differed at least `min_count` times).
    pub fn noise(
        &mut self,
        min_count: u64,
    ) -> Result<HashMap<String, HashSet<String>>, StoreError> {
        let rows = self.conn.noise_fields(min_count)?;
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for (route, field) in rows {
            out.entry(route).or_default().insert(field);
        }
        Ok(out)
    }
}
