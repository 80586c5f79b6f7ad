//! The per-exchange tables are partitioned by day (UTC): the days, and retention, which drops
//! whole partitions before a cutoff.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::Client;

use crate::record::rfc3339;

/// The tables partitioned by day.
pub(super) const PARTITIONED: [&str; 4] = ["exchanges", "diff_fields", "diffs", "bodies"];

/// The advisory lock key of retention ("sdprune!"): one instance of a fleet prunes at a time.
pub(super) const PG_PRUNE_LOCK: i64 = 0x7364_7072_756e_6521;

/// Deletes what started before `cutoff`: the day partitions wholly before it are dropped (no
/// row-by-row delete, no bloat), the rest of the cutoff's day is deleted; then field presence
/// before its hour and body texts no kept body points at. Only one instance prunes at a time:
/// the others find the lock taken and return 0. Returns the exchanges removed.
pub(super) fn prune(client: &mut Client, cutoff: SystemTime) -> Result<usize, postgres::Error> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PG_PRUNE_LOCK])?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let done = (|| {
        let at = rfc3339(cutoff);
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM exchanges WHERE started_at < $1::text::timestamptz",
                &[&at],
            )?
            .get(0);
        let first_kept = day_of(cutoff);
        let days: Vec<String> = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'exchanges'",
                &[],
            )?
            .iter()
            .filter_map(|r| {
                r.get::<_, String>(0)
                    .strip_prefix("exchanges_")
                    .map(str::to_owned)
            })
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let mut tx = client.transaction()?;
        for d in days {
            // `20261130` against the cutoff's day: partitions wholly before it go.
            if d < day_text(first_kept).replace('-', "") {
                let drops: Vec<String> = PARTITIONED
                    .iter()
                    .map(|t| format!("DROP TABLE IF EXISTS {t}_{d};"))
                    .collect();
                tx.batch_execute(&drops.concat())?;
            }
        }
        for t in PARTITIONED {
            tx.execute(
                &format!("DELETE FROM {t} WHERE started_at < $1::text::timestamptz"),
                &[&at],
            )?;
        }
        tx.execute(
            "DELETE FROM field_presence WHERE hour < date_trunc('hour', $1::text::timestamptz)",
            &[&at],
        )?;
        super::rollup::prune(&mut tx, &at)?;
        tx.execute(
            "DELETE FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM bodies x WHERE x.blob_hash = b.hash)",
            &[],
        )?;
        tx.commit()?;
        Ok(usize::try_from(n).unwrap_or(0))
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_PRUNE_LOCK]);
    let n = done?;
    unlocked?;
    Ok(n)
}

/// Days since 1970-01-01 (UTC).
pub(super) fn day_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

/// `2026-11-30` for a day number.
pub(super) fn day_text(day: u64) -> String {
    let mut s = rfc3339(UNIX_EPOCH + Duration::from_secs(day * 86_400));
    s.truncate(10);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_text(0), "1970-01-01");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(day_text(day_of(t)), rfc3339(t)[..10]);
        assert!(day_text(day_of(t) + 1) > day_text(day_of(t)));
    }
}
