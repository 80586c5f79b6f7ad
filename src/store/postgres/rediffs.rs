//! The recorded rediffs on PostgreSQL (the model: `store/rediffs.rs`).

use std::time::SystemTime;

use crate::store::rediffs::{RediffConn, RediffRow, COLUMNS};
use crate::store::StoreError;

/// [`sqlite_rediffs`] for PostgreSQL.
pub(in crate::store) fn rediffs(
    c: &mut postgres::Client,
    from: SystemTime,
    to: SystemTime,
) -> Result<Vec<RediffRow>, postgres::Error> {
    let ts = |col: &str| {
        format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
    let rows = c.query(
        &format!(
            "SELECT {}, {}, {}, {COLUMNS} FROM rediffs
             WHERE at >= $1 AND at < $2 ORDER BY id LIMIT 1000",
            ts("at"),
            ts("window_from"),
            ts("window_to")
        ),
        &[&from, &to],
    )?;
    let n = |r: &postgres::Row, i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| RediffRow {
            at: r.get(0),
            window_from: r.get(1),
            window_to: r.get(2),
            route: r.get(3),
            mapping_version: r.get(4),
            exchanges: n(r, 5),
            recorded_matched: n(r, 6),
            matched: n(r, 7),
            fixed: n(r, 8),
            broken: n(r, 9),
            source: r.get(10),
            detail: serde_json::from_str(&r.get::<_, String>(11)).unwrap_or_default(),
        })
        .collect())
}

impl RediffConn for super::conn::Own {
    fn record(&mut self, rows: &[RediffRow]) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for r in rows {
                tx.execute(
                    "INSERT INTO rediffs(at, route, mapping_version, window_from, window_to,
                        exchanges, recorded_matched, matched, fixed, broken, source, detail)
                     VALUES ($1::text::timestamptz, $2, $3, $4::text::timestamptz,
                        $5::text::timestamptz, $6, $7, $8, $9, $10, $11, $12)",
                    &[
                        &r.at,
                        &r.route,
                        &r.mapping_version,
                        &r.window_from,
                        &r.window_to,
                        &n(r.exchanges),
                        &n(r.recorded_matched),
                        &n(r.matched),
                        &n(r.fixed),
                        &n(r.broken),
                        &r.source,
                        &r.detail.to_string(),
                    ],
                )?;
            }
            Ok(())
        })
    }
}
