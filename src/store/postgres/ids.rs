//! The id crosswalk on PostgreSQL (the model: `store/ids.rs`).

use std::collections::BTreeMap;

use crate::record::{Pair, Record};
use crate::store::ids::{observed, IdConn, IdCoverage, COVERAGE_SQL, PAIRS_SQL};
use crate::store::StoreError;

/// [`sqlite_save`] for PostgreSQL: `ON CONFLICT DO NOTHING` on both unique keys, so that two
/// instances learning contradicting pairs at once store one and record the other as a conflict.
pub(in crate::store) fn save(
    tx: &mut postgres::Transaction<'_>,
    batch: &[Box<Record>],
    max: &dyn Fn(&str) -> usize,
) -> Result<(), postgres::Error> {
    let mut touched = BTreeMap::new();
    for seen in observed(batch) {
        for p in &seen.pairs {
            let n = tx.execute(
                "INSERT INTO id_pairs(account, kind, legacy_id, candidate_id, numbers)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &p.account,
                    &p.kind,
                    &p.legacy,
                    &p.candidate,
                    &i32::from(p.numbers),
                ],
            )?;
            if n == 0 {
                let held = tx
                    .query_opt(
                        "SELECT legacy_id, candidate_id FROM id_pairs
                         WHERE account = $1 AND kind = $2 AND (legacy_id = $3 OR candidate_id = $4)
                         AND NOT (legacy_id = $3 AND candidate_id = $4) LIMIT 1",
                        &[&p.account, &p.kind, &p.legacy, &p.candidate],
                    )?
                    .map(|r| Pair {
                        account: p.account.clone(),
                        kind: p.kind.clone(),
                        legacy: r.get(0),
                        candidate: r.get(1),
                        numbers: 0,
                    });
                if let Some(held) = held {
                    conflict(tx, p, &held)?;
                }
                continue;
            }
            crate::telemetry::id_pairs(&p.kind, 1);
            tx.execute(
                "DELETE FROM id_unpaired WHERE account = $1 AND kind = $2
                 AND ((side = 'legacy' AND id = $3) OR (side = 'candidate' AND id = $4))",
                &[&p.account, &p.kind, &p.legacy, &p.candidate],
            )?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for (p, held) in &seen.conflicts {
            conflict(tx, p, held)?;
            touched.insert((p.account.clone(), p.kind.clone()), ());
        }
        for u in &seen.unpaired {
            let column = if u.side == "legacy" {
                "legacy_id"
            } else {
                "candidate_id"
            };
            tx.execute(
                &format!(
                    "INSERT INTO id_unpaired(account, kind, side, id, seen)
                     SELECT $1, $2, $3, $4, 1
                     WHERE NOT EXISTS (SELECT 1 FROM id_pairs WHERE account = $1 AND kind = $2 AND {column} = $4)
                     ON CONFLICT (account, kind, side, id) DO UPDATE
                       SET seen = id_unpaired.seen + 1, last_seen = now()"
                ),
                &[&u.account, &u.kind, &u.side, &u.id],
            )?;
            touched.insert((u.account.clone(), u.kind.clone()), ());
        }
    }
    for (account, kind) in touched.keys() {
        let keep = i64::try_from(max(kind)).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM id_pairs WHERE account = $1 AND kind = $2 AND seq <= (
               SELECT seq FROM id_pairs WHERE account = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            &[account, kind, &keep],
        )?;
        tx.execute(
            "DELETE FROM id_unpaired WHERE (account, kind, side, id) IN (
               SELECT account, kind, side, id FROM id_unpaired WHERE account = $1 AND kind = $2
               ORDER BY last_seen DESC OFFSET $3)",
            &[account, kind, &keep],
        )?;
        tx.execute(
            "DELETE FROM id_conflicts WHERE account = $1 AND kind = $2 AND seq <= (
               SELECT seq FROM id_conflicts WHERE account = $1 AND kind = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            &[account, kind, &keep],
        )?;
    }
    Ok(())
}

fn conflict(
    tx: &mut postgres::Transaction<'_>,
    p: &Pair,
    held: &Pair,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO id_conflicts(account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account, kind, legacy_id, candidate_id, held_legacy_id, held_candidate_id)
         DO UPDATE SET seen = id_conflicts.seen + 1, at = now()",
        &[
            &p.account,
            &p.kind,
            &p.legacy,
            &p.candidate,
            &held.legacy,
            &held.candidate,
        ],
    )?;
    crate::telemetry::id_conflict();
    Ok(())
}

pub(in crate::store) fn coverage(
    c: &mut postgres::Client,
) -> Result<Vec<IdCoverage>, postgres::Error> {
    let sql = COVERAGE_SQL.replace(
        "SELECT account, kind, sum(paired), sum(unpaired_legacy), sum(unpaired_candidate), sum(conflicts)",
        "SELECT account, kind, sum(paired)::bigint, sum(unpaired_legacy)::bigint, sum(unpaired_candidate)::bigint, sum(conflicts)::bigint",
    );
    Ok(c.query(&sql, &[])?
        .iter()
        .map(|r| {
            let n = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
            IdCoverage {
                account: r.get(0),
                kind: r.get(1),
                paired: n(2),
                unpaired_legacy: n(3),
                unpaired_candidate: n(4),
                conflicts: n(5),
                paired_rate: 0.0,
            }
            .rated()
        })
        .collect())
}

fn pairs(
    c: &mut postgres::Client,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, Pair)>, postgres::Error> {
    Ok(c.query(PAIRS_SQL, &[&seq, &limit])?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Pair {
                    account: r.get(1),
                    kind: r.get(2),
                    legacy: r.get(3),
                    candidate: r.get(4),
                    numbers: u8::try_from(r.get::<_, i32>(5)).unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Every pair (oldest first, at most `limit`): PostgreSQL.
pub(in crate::store) fn all(
    c: &mut postgres::Client,
    limit: usize,
) -> Result<Vec<Pair>, postgres::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(pairs(c, 0, limit)?.into_iter().map(|(_, p)| p).collect())
}

impl IdConn for super::conn::Own {
    fn pairs_since(&mut self, seq: i64, limit: i64) -> Result<Vec<(i64, Pair)>, StoreError> {
        self.with(|c| pairs(c, seq, limit))
    }

    fn coverage(&mut self) -> Result<Vec<IdCoverage>, StoreError> {
        self.with(coverage)
    }
}
