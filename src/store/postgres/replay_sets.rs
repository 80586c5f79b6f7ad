//! The replay sets on PostgreSQL (the model: `store/replay_sets.rs`).

use crate::store::replay_sets::ReplaySetConn;
use crate::store::StoreError;

/// [`sqlite_set`] for PostgreSQL.
pub(in crate::store) fn set(
    c: &mut postgres::Client,
    name: &str,
) -> Result<Vec<(i64, String)>, postgres::Error> {
    Ok(c.query(
        "SELECT exchange_id, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
         FROM replay_sets WHERE name = $1 ORDER BY exchange_id",
        &[&name],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

impl ReplaySetConn for super::conn::Own {
    fn save(&mut self, name: &str, members: &[(i64, String)], now: &str) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            tx.execute("DELETE FROM replay_sets WHERE name = $1", &[&name])?;
            for (id, at) in members {
                tx.execute(
                    "INSERT INTO replay_sets(name, exchange_id, started_at, saved_at)
                     VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz)",
                    &[&name, id, at, &now],
                )?;
            }
            Ok(())
        })
    }
}
