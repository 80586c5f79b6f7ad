//! The recorded rediffs on SQLite (the model: `store/rediffs.rs`).

use rusqlite::{params, Connection};

use std::time::SystemTime;

use crate::record::rfc3339;
use crate::store::rediffs::{RediffConn, RediffRow, COLUMNS};
use crate::store::StoreError;

/// The rows recorded in `[from, to)`, oldest first.
pub(in crate::store) fn rediffs(
    c: &Connection,
    from: SystemTime,
    to: SystemTime,
) -> rusqlite::Result<Vec<RediffRow>> {
    c.prepare_cached(&format!(
        "SELECT at, window_from, window_to, {COLUMNS} FROM rediffs
         WHERE at >= ?1 AND at < ?2 ORDER BY id LIMIT 1000"
    ))?
    .query_map(params![rfc3339(from), rfc3339(to)], |r| {
        Ok(RediffRow {
            at: r.get(0)?,
            window_from: r.get(1)?,
            window_to: r.get(2)?,
            route: r.get(3)?,
            mapping_version: r.get(4)?,
            exchanges: r.get::<_, i64>(5)?.max(0) as u64,
            recorded_matched: r.get::<_, i64>(6)?.max(0) as u64,
            matched: r.get::<_, i64>(7)?.max(0) as u64,
            fixed: r.get::<_, i64>(8)?.max(0) as u64,
            broken: r.get::<_, i64>(9)?.max(0) as u64,
            source: r.get(10)?,
            detail: serde_json::from_str(&r.get::<_, String>(11)?).unwrap_or_default(),
        })
    })?
    .collect()
}

impl RediffConn for super::conn::Own {
    fn record(&mut self, rows: &[RediffRow]) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            for r in rows {
                tx.execute(
                    "INSERT INTO rediffs(at, route, mapping_version, window_from, window_to,
                        exchanges, recorded_matched, matched, fixed, broken, source, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        r.at,
                        r.route,
                        r.mapping_version,
                        r.window_from,
                        r.window_to,
                        r.exchanges as i64,
                        r.recorded_matched as i64,
                        r.matched as i64,
                        r.fixed as i64,
                        r.broken as i64,
                        r.source,
                        r.detail.to_string()
                    ],
                )?;
            }
            Ok(())
        })
    }
}
