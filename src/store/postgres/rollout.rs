//! The rollout's events on PostgreSQL (the model: `store/rollout.rs`).

use std::time::SystemTime;

use crate::store::rollout::{Event, RolloutConn};
use crate::store::{StoreError, Subscriptions};

fn select(tail: &str) -> String {
    format!(
        "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
         from_phase, to_phase, actor, reason, evidence FROM rollout_events {tail}"
    )
}

fn event(r: &postgres::Row) -> Event {
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
pub(in crate::store) fn events(
    c: &mut postgres::Client,
    from: SystemTime,
    to: SystemTime,
    limit: usize,
) -> Result<Vec<Event>, postgres::Error> {
    let mut v: Vec<Event> = c
        .query(
            &select("WHERE at >= $1 AND at < $2 ORDER BY id DESC LIMIT $3"),
            &[&from, &to, &(limit as i64)],
        )?
        .iter()
        .map(event)
        .collect();
    v.reverse();
    Ok(v)
}

impl RolloutConn for super::conn::Own {
    fn latest(&mut self) -> Result<Option<Event>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(&select("ORDER BY id DESC LIMIT 1"), &[])?
                .map(|r| event(&r)))
        })
    }

    /// The full time, not its millisecond text: a window's edge compares with what happened.
    fn append(
        &mut self,
        at: SystemTime,
        e: &Event,
        subs: &Subscriptions,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let evidence = e.evidence.as_ref().map(ToString::to_string);
        self.in_transaction(|tx| {
            let id = tx
                .query_one(
                    "INSERT INTO rollout_events(at, from_phase, to_phase, actor, reason, evidence)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[&at, &e.from, &e.to, &e.actor, &e.reason, &evidence],
                )?
                .get(0);
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
            Ok(c.query(
                "SELECT route, field FROM noise_fields WHERE differed >= $1",
                &[&(min_count as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }
}
