//! The replay sets on SQLite (the model: `store/replay_sets.rs`).

use rusqlite::params;

use crate::store::replay_sets::ReplaySetConn;
use crate::store::StoreError;

/// A set's exchanges: (id, started_at), oldest first.
pub(in crate::store) fn set(
    c: &rusqlite::Connection,
    name: &str,
) -> rusqlite::Result<Vec<(i64, String)>> {
    c.prepare_cached(
        "SELECT exchange_id, started_at FROM replay_sets WHERE name = ?1 ORDER BY exchange_id",
    )?
    .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

impl ReplaySetConn for super::conn::Own {
    fn save(&mut self, name: &str, members: &[(i64, String)], now: &str) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            tx.execute("DELETE FROM replay_sets WHERE name = ?1", [name])?;
            for (id, at) in members {
                tx.execute(
                    "INSERT INTO replay_sets(name, exchange_id, started_at, saved_at) VALUES (?1, ?2, ?3, ?4)",
                    params![name, id, at, now],
                )?;
            }
            Ok(())
        })
    }
}
