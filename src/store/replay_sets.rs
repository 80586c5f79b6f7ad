//! `replay_sets`: named sets of recorded exchanges (`shadowdiff replay --save NAME`), replayed
//! as a regression suite (`--set NAME`). Saving a set replaces it whole, in one transaction.

use rusqlite::params;

use super::location::Location;
use super::StoreError;

/// Replaces the set `name` with these exchanges (id, started_at as RFC 3339).
pub fn save_replay_set(
    location: &Location,
    name: &str,
    members: &[(i64, String)],
) -> Result<(), StoreError> {
    let now = crate::record::rfc3339(std::time::SystemTime::now());
    super::conn::in_transaction(
        location,
        "replay sets",
        |tx| {
            tx.execute("DELETE FROM replay_sets WHERE name = ?1", [name])?;
            for (id, at) in members {
                tx.execute(
                    "INSERT INTO replay_sets(name, exchange_id, started_at, saved_at) VALUES (?1, ?2, ?3, ?4)",
                    params![name, id, at, now],
                )?;
            }
            Ok(())
        },
        |tx| {
            tx.execute("DELETE FROM replay_sets WHERE name = $1", &[&name])?;
            for (id, at) in members {
                tx.execute(
                    "INSERT INTO replay_sets(name, exchange_id, started_at, saved_at)
                     VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz)",
                    &[&name, id, at, &now],
                )?;
            }
            Ok(())
        },
    )
}

/// A set's exchanges: (id, started_at), oldest first.
pub(super) fn sqlite_set(
    c: &rusqlite::Connection,
    name: &str,
) -> rusqlite::Result<Vec<(i64, String)>> {
    c.prepare_cached(
        "SELECT exchange_id, started_at FROM replay_sets WHERE name = ?1 ORDER BY exchange_id",
    )?
    .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// [`sqlite_set`] for PostgreSQL.
pub(super) fn pg_set(
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
