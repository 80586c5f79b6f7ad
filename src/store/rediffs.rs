//! `rediffs`: what `shadowdiff rediff --record` keeps of a run, one row per route: the mapping
//! version it ran over recorded traffic, the window, and the parity it reached next to the
//! recorded one. Reports list them beside the live mapping versions.

use std::time::SystemTime;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::location::Location;
use super::StoreError;
use crate::record::rfc3339;

/// One route of one recorded rediff.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RediffRow {
    /// When the rediff ran (RFC 3339).
    pub at: String,
    pub route: String,
    /// The version of the mappings it ran (several, comma-separated, with account overrides).
    pub mapping_version: Option<String>,
    pub window_from: String,
    pub window_to: String,
    pub exchanges: u64,
    pub recorded_matched: u64,
    pub matched: u64,
    pub fixed: u64,
    pub broken: u64,
    /// Where the mappings came from (the config file, a `--mappings` folder).
    pub source: String,
    /// The per-field figures and the ids of the exchanges that changed verdict (JSON).
    pub detail: serde_json::Value,
}

/// Appends rows (one transaction).
pub fn record_rediffs(location: &Location, rows: &[RediffRow]) -> Result<(), StoreError> {
    super::conn::in_transaction(
        location,
        "rediffs",
        |tx| {
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
        },
        |tx| {
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
        },
    )
}

const COLUMNS: &str = "route, mapping_version, exchanges, recorded_matched, matched, fixed, \
     broken, source, detail";

/// The rows recorded in `[from, to)`, oldest first.
pub(super) fn sqlite_rediffs(
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

/// [`sqlite_rediffs`] for PostgreSQL.
pub(super) fn pg_rediffs(
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
