//! The id crosswalk on SQLite (the model: `store/ids.rs`).

use rusqlite::{params, OptionalExtension};

use std::collections::BTreeMap;

use crate::record::{rfc3339, Pair, Record};
use crate::store::ids::{observed, IdConn, IdCoverage, COVERAGE_SQL, PAIRS_SQL};
use crate::store::StoreError;

/// Saves the batch's pairs, unpaired ids and conflicts (SQLite, inside the batch's
/// transaction); returns the conflicts found against stored pairs (another instance's).
pub(in crate::store) fn save(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Box<Record>],
    max: &dyn Fn(&str) -> usize,
) -> rusqlite::Result<()> {
    let now = rfc3339(std::time::SystemTime::now());
    let mut touched = BTreeMap::new();
    for seen in observed(batch) {
        for p in &seen.pairs {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO id_pairs(account, kind, legacy_id, candidate_id, numbers, learned_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![p.account, p.kind, p.legacy, p.candidate, i64::from(p.numbers), now])?;
            if n == 0 {
                if let Some(held) = held(tx, p)? {
                    conflict(tx, p, &held, &now)?;
                }
                continue;
            }
            crate::telemetry::id_pairs(&p.kind, 1);
            for (side, id) in [("legacy", &p.legacy), ("candidate", &p.candidate)] {
                tx.prepare_cached(
                    "DELETE FROM id_unpaired WHERE account = ?1 AND kind = ?2 AND side = ?3 AND id = ?4",
                )?
                .execute(params![p.account, p.kind, side, id])?;
            }
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for (p, held) in &seen.conflicts {
            conflict(tx, p, held, &now)?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for u in &seen.unpaired {
            let column = if u.side == "legacy" {
                "legacy_id"
            } else {
                "candidate_id"
            };
            tx.prepare_cached(&format!(
                "INSERT INTO id_unpaired(account, kind, side, id, seen, last_seen)
                 SELECT ?1, ?2, ?3, ?4, 1, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM id_pairs WHERE account = ?1 AND kind = ?2 AND {column} = ?4)
                 ON CONFLICT(account, kind, side, id) DO UPDATE SET seen = seen + 1, last_seen = excluded.last_seen"
            ))?
            .execute(params![u.account, u.kind, u.side, u.id, now])?;
            touched.insert((u.account.clone(), u.kind.clone()), ());
        }
    }
    for (account, kind) in touched.keys() {
        let keep = i64::try_from(max(kind)).unwrap_or(i64::MAX);
        tx.prepare_cached(
            "DELETE FROM id_pairs WHERE account = ?1 AND kind = ?2 AND seq <= (
               SELECT seq FROM id_pairs WHERE account = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
        tx.prepare_cached(
            "DELETE FROM id_unpaired WHERE rowid IN (
               SELECT rowid FROM id_unpaired WHERE account = ?1 AND kind = ?2
               ORDER BY last_seen DESC LIMIT -1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
        tx.prepare_cached(
            "DELETE FROM id_conflicts WHERE account = ?1 AND kind = ?2 AND seq <= (
               SELECT seq FROM id_conflicts WHERE account = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![account, kind, keep])?;
    }
    Ok(())
}

/// The stored pair `p` contradicts, if any.
fn held(tx: &rusqlite::Transaction<'_>, p: &Pair) -> rusqlite::Result<Option<Pair>> {
    tx.prepare_cached(
        "SELECT legacy_id, candidate_id FROM id_pairs
         WHERE account = ?1 AND kind = ?2 AND (legacy_id = ?3 OR candidate_id = ?4)
         AND NOT (legacy_id = ?3 AND candidate_id = ?4) LIMIT 1",
    )?
    .query_row(params![p.account, p.kind, p.legacy, p.candidate], |r| {
        Ok(Pair {
            account: p.account.clone(),
            kind: p.kind.clone(),
            legacy: r.get(0)?,
            candidate: r.get(1)?,
            numbers: 0,
        })
    })
    .optional()
}

fn conflict(
    tx: &rusqlite::Transaction<'_>,
    p: &Pair,
    held: &Pair,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO id_conflicts(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         DO UPDATE SET seen = seen + 1, at = excluded.at",
    )?
    .execute(params![
        p.account,
        p.kind,
        p.legacy,
        p.candidate,
        held.legacy,
        held.candidate,
        now
    ])?;
    crate::telemetry::id_conflict();
    Ok(())
}

pub(in crate::store) fn coverage(c: &rusqlite::Connection) -> rusqlite::Result<Vec<IdCoverage>> {
    let mut stmt = c.prepare(COVERAGE_SQL)?;
    let rows = stmt.query_map([], |r| {
        let n = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(IdCoverage {
            account: r.get(0)?,
            kind: r.get(1)?,
            paired: n(2)?,
            unpaired_legacy: n(3)?,
            unpaired_candidate: n(4)?,
            conflicts: n(5)?,
            paired_rate: 0.0,
        }
        .rated())
    })?;
    rows.collect()
}

fn pairs(c: &rusqlite::Connection, seq: i64, limit: i64) -> rusqlite::Result<Vec<(i64, Pair)>> {
    let mut stmt = c.prepare_cached(&PAIRS_SQL.replace('$', "?"))?;
    let rows = stmt.query_map(params![seq, limit], |r| {
        Ok((
            r.get(0)?,
            Pair {
                account: r.get(1)?,
                kind: r.get(2)?,
                legacy: r.get(3)?,
                candidate: r.get(4)?,
                numbers: u8::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
            },
        ))
    })?;
    rows.collect()
}

/// Every pair (oldest first, at most `limit`): SQLite.
pub(in crate::store) fn all(c: &rusqlite::Connection, limit: usize) -> rusqlite::Result<Vec<Pair>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(pairs(c, 0, limit)?.into_iter().map(|(_, p)| p).collect())
}

impl IdConn for super::conn::Own {
    fn pairs_since(&mut self, seq: i64, limit: i64) -> Result<Vec<(i64, Pair)>, StoreError> {
        self.with(|c| pairs(c, seq, limit))
    }

    fn coverage(&mut self) -> Result<Vec<IdCoverage>, StoreError> {
        self.with(|c| coverage(c))
    }
}
