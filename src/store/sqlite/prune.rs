//! Retention: deleting expired exchanges with everything that belongs to them.

use std::time::SystemTime;

use rusqlite::Connection;

use crate::record::rfc3339;

/// Deletes exchanges that started before `cutoff`, with their diffs and bodies, in batches.
pub(super) fn prune(conn: &Connection, cutoff: SystemTime) -> rusqlite::Result<usize> {
    let cutoff = rfc3339(cutoff);
    let mut total = 0;
    loop {
        let tx = conn.unchecked_transaction()?;
        let ids: Vec<i64> = {
            let mut q =
                tx.prepare_cached("SELECT id FROM exchanges WHERE started_at < ?1 LIMIT 5000")?;
            let rows = q
                .query_map([&cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows
        };
        if ids.is_empty() {
            // The last step runs in the transaction opened above, and must be committed like
            // the others: dropped, it would roll back and keep every orphaned body.
            tx.execute(
                "DELETE FROM field_presence WHERE hour < substr(?1, 1, 13)",
                [&cutoff],
            )?;
            super::rollup::prune(&tx, &cutoff)?;
            tx.execute(
                "DELETE FROM blobs WHERE NOT EXISTS (SELECT 1 FROM bodies WHERE bodies.blob_id = blobs.id)",
                [],
            )?;
            tx.commit()?;
            if total > 0 {
                // Old page images in the WAL may still hold what was deleted: checkpoint and
                // truncate it (best effort: a long reader can keep it for now).
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
            return Ok(total);
        }
        for id in &ids {
            tx.execute("DELETE FROM diffs WHERE exchange_id = ?1", [id])?;
            tx.execute("DELETE FROM diff_fields WHERE exchange_id = ?1", [id])?;
            tx.execute("DELETE FROM bodies WHERE exchange_id = ?1", [id])?;
            tx.execute("DELETE FROM exchanges WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        total += ids.len();
    }
}
