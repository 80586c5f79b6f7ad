//! The rollout's rows: `rollout_events`, one per change of phase (when, from, to, who, why,
//! the evidence), appended by the instance or command that made the change and read by every
//! instance to follow the phase; and the learned noise fields the guard discounts.
//!
//! [`RolloutStore`] holds one connection of its own (a PostgreSQL one is opened when first
//! needed and again after a failure). It blocks: use it off the async runtime's threads.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

use super::location::Location;
use super::StoreError;
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

const EVENT_COLUMNS: &str = "id, at, from_phase, to_phase, actor, reason, evidence";

/// The rollout's connection to the store.
pub struct RolloutStore {
    conn: super::conn::OwnConn,
    /// Endpoints subscribed to `rollout.changed` get each change in the same transaction.
    webhooks: super::Subscriptions,
}

impl RolloutStore {
    /// A store at `location`; nothing is opened until the first query.
    pub fn new(location: &Location) -> Self {
        Self {
            conn: super::conn::OwnConn::new(location, "rollout-store-close"),
            webhooks: Vec::new(),
        }
    }

    /// Queues each change appended for the endpoints subscribed to `rollout.changed`.
    #[must_use]
    pub fn with_webhooks(mut self, subs: super::Subscriptions) -> Self {
        self.webhooks = subs;
        self
    }

    fn with<T>(
        &mut self,
        sqlite: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
        pg: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.conn.with(sqlite, pg)
    }

    /// The latest change of phase, if any.
    pub fn latest(&mut self) -> Result<Option<Event>, StoreError> {
        self.with(
            |c| {
                c.query_row(
                    &format!("SELECT {EVENT_COLUMNS} FROM rollout_events ORDER BY id DESC LIMIT 1"),
                    [],
                    sqlite_event,
                )
                .optional()
            },
            |c| {
                Ok(c.query_opt(&pg_select("ORDER BY id DESC LIMIT 1"), &[])?
                    .map(|r| pg_event(&r)))
            },
        )
    }

    /// Appends a change of phase from `from`; returns it as stored.
    pub fn append(&mut self, from: Option<&str>, change: &Change) -> Result<Event, StoreError> {
        let at = SystemTime::now();
        let evidence = change.evidence.as_ref().map(ToString::to_string);
        let subs = std::mem::take(&mut self.webhooks);
        let data = serde_json::json!({
            "from": from, "to": change.to, "actor": change.actor, "reason": change.reason,
            "at": rfc3339(at),
        });
        let id = self.with(
            |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "INSERT INTO rollout_events(at, from_phase, to_phase, actor, reason, evidence)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        rfc3339(at),
                        from,
                        change.to,
                        change.actor,
                        change.reason,
                        evidence
                    ],
                )?;
                let id = tx.last_insert_rowid();
                super::outbox::sqlite_enqueue(&tx, &subs, "rollout.changed", &data)?;
                tx.commit()?;
                Ok(id)
            },
            |c| {
                let mut tx = c.transaction()?;
                let id = tx
                    .query_one(
                        "INSERT INTO rollout_events(at, from_phase, to_phase, actor, reason, evidence)
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        &[
                            &at,
                            &from,
                            &change.to,
                            &change.actor,
                            &change.reason,
                            &evidence,
                        ],
                    )?
                    .get(0);
                super::outbox::pg_enqueue(&mut tx, &subs, "rollout.changed", &data)?;
                tx.commit()?;
                Ok(id)
            },
        );
        self.webhooks = subs;
        let id = id?;
        Ok(Event {
            id,
            at: rfc3339(at),
            from: from.map(str::to_owned),
            to: change.to.clone(),
            actor: change.actor.clone(),
            reason: change.reason.clone(),
            evidence: change.evidence.clone(),
        })
    }

    /// The changes since `from`, oldest first (at most `limit`, the newest ones).
    pub fn events(&mut self, from: SystemTime, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.with(
            |c| sqlite_events(c, from, SystemTime::now(), limit),
            |c| pg_events(c, from, SystemTime::now(), limit),
        )
    }

    /// The fields learned as noise per route (differed at least `min_count` times).
    pub fn noise(
        &mut self,
        min_count: u64,
    ) -> Result<HashMap<String, HashSet<String>>, StoreError> {
        let rows: Vec<(String, String)> = self.with(
            |c| {
                c.prepare_cached("SELECT route, field FROM noise_fields WHERE differed >= ?1")?
                    .query_map([min_count as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            },
            |c| {
                Ok(c.query(
                    "SELECT route, field FROM noise_fields WHERE differed >= $1",
                    &[&(min_count as i64)],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
            },
        )?;
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for (route, field) in rows {
            out.entry(route).or_default().insert(field);
        }
        Ok(out)
    }
}

fn sqlite_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
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
pub(super) fn sqlite_events(
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
        .query_map(
            params![rfc3339(from), rfc3339(to), limit as i64],
            sqlite_event,
        )?
        .collect::<Result<_, _>>()?;
    v.reverse();
    Ok(v)
}

fn pg_select(tail: &str) -> String {
    format!(
        "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
         from_phase, to_phase, actor, reason, evidence FROM rollout_events {tail}"
    )
}

fn pg_event(r: &postgres::Row) -> Event {
    Event {
        id: r.get(0),
        at: r.get(1),
        from: r.get(2),
        to: r.get(3),
        actor: r.get(4),
        reason: r.get(5),
        evidence: r
            .get::<_, Option<String>>(6)
            .and_then(|e| serde_json::from_str(&e).ok()),
    }
}

/// [`sqlite_events`] for PostgreSQL.
pub(super) fn pg_events(
    c: &mut postgres::Client,
    from: SystemTime,
    to: SystemTime,
    limit: usize,
) -> Result<Vec<Event>, postgres::Error> {
    let mut v: Vec<Event> = c
        .query(
            &pg_select("WHERE at >= $1 AND at < $2 ORDER BY id DESC LIMIT $3"),
            &[&from, &to, &(limit as i64)],
        )?
        .iter()
        .map(pg_event)
        .collect();
    v.reverse();
    Ok(v)
}
