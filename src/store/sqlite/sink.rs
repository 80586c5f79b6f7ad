//! The writer's sink on SQLite: a batch of exchanges in one transaction (rows, roll-ups,
//! health, ids, noise), on the writer thread's own connection.

use rusqlite::{params, Connection, OptionalExtension};

use super::open::ROWS_PER_INSERT;

use crate::record::{cut, examples, hour, rfc3339, value_text, NoiseSample, Record};
use crate::store::writer::{Sink, WriteError, WriterOptions};

/// A SQLite error: the file is local, so it is never `unreachable`.
fn local(e: &rusqlite::Error) -> WriteError {
    WriteError {
        message: e.to_string(),
        unreachable: false,
    }
}

impl Sink for Connection {
    fn write_batch(
        &mut self,
        batch: &[Box<Record>],
        kept: &[bool],
        extra: &crate::store::rollup::Deltas,
        opts: &WriterOptions,
    ) -> Result<(), WriteError> {
        write_batch(self, batch, kept, extra, opts).map_err(|e| local(&e))
    }

    fn write_noise(&mut self, samples: &[NoiseSample]) -> Result<(), WriteError> {
        write_noise(self, samples).map_err(|e| local(&e))
    }

    fn prune(&mut self, cutoff: std::time::SystemTime) -> Result<usize, WriteError> {
        super::prune::prune(self, cutoff).map_err(|e| local(&e))
    }

    fn close(&mut self) {
        let _ = self.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &[Box<Record>],
    kept: &[bool],
    extra: &crate::store::rollup::Deltas,
    opts: &WriterOptions,
) -> rusqlite::Result<()> {
    let max_len = opts.max_value_len;
    // Immediate: the write lock first, so that reading the highest id (the roll-ups' `before`)
    // does not leave a read lock to upgrade while another process writes (SQLITE_BUSY at once).
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ex = tx.prepare_cached(
            "INSERT INTO exchanges(started_at, route, method, path, account, legacy_status, candidate_status,
             legacy_ms, candidate_ms, outcome, diff_count, reason, request_id, mapping_version,
             served_by, fallback, phase)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let mut bd = tx.prepare_cached(
            "INSERT OR REPLACE INTO bodies(exchange_id, side, status, headers, blob_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut df_sum = tx.prepare_cached(
            "INSERT INTO diff_fields(exchange_id, started_at, route, field, kind, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut blob_find = tx.prepare_cached("SELECT id FROM blobs WHERE hash = ?1")?;
        let mut hours: Vec<String> = Vec::with_capacity(batch.len());
        let mut blob_add = tx.prepare_cached("INSERT INTO blobs(hash, body) VALUES (?1, ?2)")?;
        let mut rolled = crate::store::rollup::Deltas {
            before: Some(tx.query_row(crate::store::rollup::MAX_ID_SQL, [], |r| r.get(0))?),
            ..Default::default()
        };
        for (r, &keep) in batch.iter().zip(kept) {
            let m = &r.meta;
            let started_at = rfc3339(m.started_at);
            hours.push(hour(m.started_at));
            if !keep {
                rolled.add_record(r, 0, &started_at);
                continue;
            }
            ex.execute(params![
                &started_at,
                m.route,
                m.method,
                m.path,
                m.account,
                r.legacy_status,
                r.candidate_status,
                r.legacy_ms,
                r.candidate_ms,
                r.outcome.as_str(),
                r.diff_count as i64,
                r.reason.as_deref().map(|s| cut(s, max_len)),
                m.request_id,
                r.mapping_version,
                m.serving.served_by.as_str(),
                m.serving.fallback.map(|f| f.as_str()),
                m.serving.phase.as_deref(),
            ])?;
            let id = tx.last_insert_rowid();
            rolled.add_record(r, id, &started_at);
            for c in r.counts().iter() {
                df_sum.execute(params![id, &started_at, m.route, c.field, c.kind, c.n])?;
            }
            let rows = examples(&r.diffs, opts.examples_per_field);
            for (c, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
                let mut st = tx.prepare_cached(&diff_insert_sql(chunk.len()))?;
                let mut p = 1;
                for (k, d) in chunk.iter().enumerate() {
                    st.raw_bind_parameter(p, id)?;
                    st.raw_bind_parameter(p + 1, (c * ROWS_PER_INSERT + k) as i64)?;
                    st.raw_bind_parameter(p + 2, &d.pointer)?;
                    st.raw_bind_parameter(p + 3, &d.field)?;
                    st.raw_bind_parameter(p + 4, d.kind.as_str())?;
                    st.raw_bind_parameter(
                        p + 5,
                        d.legacy.as_ref().map(|v| value_text(v, max_len)),
                    )?;
                    st.raw_bind_parameter(
                        p + 6,
                        d.candidate.as_ref().map(|v| value_text(v, max_len)),
                    )?;
                    p += 7;
                }
                st.raw_execute()?;
            }
            for b in &r.bodies {
                let blob_id: Option<i64> = match &b.body {
                    None => None,
                    Some(body) => {
                        let hash = body.hash.to_le_bytes();
                        match blob_find
                            .query_row([&hash[..]], |row| row.get(0))
                            .optional()?
                        {
                            Some(id) => Some(id),
                            None => {
                                blob_add.execute(params![&hash[..], &*body.text])?;
                                Some(tx.last_insert_rowid())
                            }
                        }
                    }
                };
                bd.execute(params![
                    id,
                    b.side,
                    b.status,
                    b.headers.to_string(),
                    blob_id
                ])?;
            }
        }
        let presence = crate::store::rollup::presence(batch, &hours);
        let mut pr = tx.prepare_cached(
            "INSERT INTO field_presence(route, field, hour, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(route, field, hour) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((route, field, hour), n) in presence {
            pr.execute(params![route, field, hour, n])?;
        }
        rolled.merge(extra);
        super::rollup::save(&tx, &rolled)?;
    }
    super::ids::save(&tx, batch, &|k| opts.max_pairs(k))?;
    let changes = super::health::update(&tx, batch, opts.reauth_after)?;
    for c in &changes {
        super::outbox::enqueue(
            &tx,
            &opts.webhooks,
            crate::store::writer::health_event(c),
            &crate::store::writer::health_data(c),
        )?;
    }
    tx.commit()?;
    if !changes.is_empty() {
        crate::store::writer::health_changed(&changes);
        if let Ok((ok, needs)) = super::health::counts(conn) {
            crate::telemetry::account_states(ok, needs);
        }
    }
    Ok(())
}

fn write_noise(conn: &mut Connection, samples: &[NoiseSample]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut s = tx.prepare_cached(
            "INSERT INTO noise_samples(route, samples, last_at) VALUES (?1, 1, ?2)
             ON CONFLICT(route) DO UPDATE SET samples = samples + 1, last_at = excluded.last_at",
        )?;
        let mut f = tx.prepare_cached(
            "INSERT INTO noise_fields(route, field, differed, first_at, last_at) VALUES (?1, ?2, 1, ?3, ?3)
             ON CONFLICT(route, field) DO UPDATE SET differed = differed + 1, last_at = excluded.last_at",
        )?;
        for n in samples {
            let at = rfc3339(n.at);
            let route = crate::store::sql::aggregate_key(n.route.name());
            s.execute(params![route, at])?;
            for field in &n.fields {
                f.execute(params![route, field, at])?;
            }
        }
    }
    tx.commit()
}

/// `INSERT INTO diffs ... VALUES (...), (...)` for `n` rows.
fn diff_insert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO diffs(exchange_id, seq, pointer, field, kind, legacy, candidate) VALUES ",
    );
    for i in 0..n {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?)"
        });
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Difference, Kind};
    use crate::store::open;
    use crate::store::writer::{test_record as record, Store, MAX_DIFF_ROWS};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use std::time::SystemTime;

    fn writer_at(
        path: &Path,
        queue: usize,
        max_value_len: usize,
        examples_per_field: usize,
    ) -> Store {
        Store::open(
            path,
            WriterOptions {
                queue,
                priority: crate::background::Priority::Normal,
                retention: Duration::from_secs(3600),
                max_value_len,
                examples_per_field,
                exchanges: crate::store::Rows::All,
                rows_per_hour: 100,
                migrate: true,
                reauth_after: 3,
                id_max_pairs: Vec::new(),
                webhooks: Vec::new(),
            },
        )
        .unwrap()
    }

    /// The crosswalk's rows: a pair stored once, a contradiction one row however often it is
    /// seen, the rows of an (account, kind) bounded by its `max_pairs`, and a learned pair's ids
    /// no longer counted unpaired.
    #[test]
    fn id_rows_are_deduplicated_and_bounded() {
        use crate::record::{IdsSeen, Pair, Unpaired};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let store = Store::open(
            &path,
            WriterOptions {
                queue: 64,
                priority: crate::background::Priority::Normal,
                retention: Duration::from_secs(3600),
                max_value_len: 64,
                examples_per_field: 3,
                exchanges: crate::store::Rows::All,
                rows_per_hour: 100,
                migrate: true,
                reauth_after: 3,
                id_max_pairs: vec![("p".into(), 3)],
                webhooks: Vec::new(),
            },
        )
        .unwrap();
        let pair = |l: &str, c: &str| Pair {
            account: "a".into(),
            kind: "p".into(),
            legacy: l.into(),
            candidate: c.into(),
            numbers: 0,
        };
        let h = store.handle();
        let with = |seen: IdsSeen| {
            let mut r = record(SystemTime::now());
            r.ids = Some(Arc::new(seen));
            r
        };
        h.record(with(IdsSeen {
            unpaired: vec![Unpaired {
                account: "a".into(),
                kind: "p".into(),
                side: "legacy",
                id: "L0".into(),
            }],
            ..IdsSeen::default()
        }));
        for i in 0..5 {
            h.record(with(IdsSeen {
                pairs: vec![pair(&format!("L{i}"), &format!("C{i}"))],
                ..IdsSeen::default()
            }));
        }
        for _ in 0..50 {
            h.record(with(IdsSeen {
                conflicts: vec![(pair("L4", "C9"), pair("L4", "C4"))],
                ..IdsSeen::default()
            }));
        }
        // Another instance's contradicting pair: refused by the unique keys, a conflict.
        h.record(with(IdsSeen {
            pairs: vec![pair("L3", "C7")],
            ..IdsSeen::default()
        }));
        h.flush_blocking();
        let conn = open(&path).unwrap();
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            q("SELECT count(*) FROM id_pairs"),
            3,
            "bounded at max_pairs"
        );
        assert_eq!(q("SELECT min(legacy_id = 'L2') FROM id_pairs WHERE seq = (SELECT min(seq) FROM id_pairs)"), 1);
        assert_eq!(
            q("SELECT count(*) FROM id_unpaired"),
            0,
            "L0 was paired since"
        );
        assert_eq!(q("SELECT count(*) FROM id_conflicts"), 2);
        assert_eq!(
            q("SELECT seen FROM id_conflicts WHERE candidate_id = 'C9'"),
            50
        );
        assert_eq!(
            q("SELECT count(*) FROM id_conflicts WHERE candidate_id = 'C7' AND held_candidate_id = 'C3'"),
            1
        );
        drop(h);
        store.close();
    }

    #[test]
    fn writes_flushes_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.db");
        let store = writer_at(&path, 16, 32, 3);
        let h = store.handle();
        h.record(record(SystemTime::now()));
        h.record(record(SystemTime::now() - Duration::from_secs(7200)));
        h.flush_blocking();
        let conn = open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM exchanges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let legacy: String = conn
            .query_row("SELECT legacy FROM diffs LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert!(legacy.ends_with("…[truncated]\""), "{legacy}");
        assert!(serde_json::from_str::<serde_json::Value>(&legacy).is_ok());
        assert_eq!(
            super::super::prune::prune(&conn, SystemTime::now() - Duration::from_secs(3600))
                .unwrap(),
            1
        );
        let n: i64 = conn
            .query_row("SELECT count(*) FROM diffs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(h);
        let stats = store.close();
        assert_eq!(stats.written(), 2);
    }

    #[test]
    fn many_differences_are_stored_in_order_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let store = writer_at(&path, 4, 64, 3);
        let mut r = record(SystemTime::now());
        let one = r.diffs[0].clone();
        // Distinct field patterns, one difference each: only the row cap applies.
        r.diffs = Arc::new(
            (0..MAX_DIFF_ROWS + 37)
                .map(|i| Difference {
                    pointer: format!("/a/{i}"),
                    field: format!("/a/{i}"),
                    ..one.clone()
                })
                .collect(),
        );
        r.diff_count = r.diffs.len();
        let h = store.handle();
        h.record(r);
        h.flush_blocking();
        let conn = open(&path).unwrap();
        let (n, first, last): (i64, String, String) = conn
            .query_row(
                "SELECT count(*), min(pointer), (SELECT pointer FROM diffs ORDER BY seq DESC LIMIT 1) FROM diffs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(n, MAX_DIFF_ROWS as i64);
        assert_eq!(first, "/a/0");
        assert_eq!(last, format!("/a/{}", MAX_DIFF_ROWS - 1));
        let count: i64 = conn
            .query_row("SELECT diff_count FROM exchanges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, (MAX_DIFF_ROWS + 37) as i64);
        drop(h);
        store.close();
    }

    #[test]
    fn the_first_examples_of_each_field_and_kind_are_stored_and_every_one_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let store = writer_at(&path, 4, 64, 2);
        let mut r = record(SystemTime::now());
        let one = r.diffs[0].clone();
        let d = |i: usize, field: &str, kind: Kind| Difference {
            pointer: format!("/people/{i}{}", &field["/people/*".len()..]),
            field: field.to_owned(),
            kind,
            ..one.clone()
        };
        // 100 renamed managers (removed + added), 3 changed statuses, one changed name.
        let mut diffs = Vec::new();
        for i in 0..100 {
            diffs.push(d(i, "/people/*/manager_id", Kind::Missing));
            diffs.push(d(i, "/people/*/manager", Kind::Extra));
        }
        for i in [3, 7, 9] {
            diffs.push(d(i, "/people/*/status", Kind::Changed));
        }
        diffs.push(d(5, "/people/*/name", Kind::Changed));
        r.diff_count = diffs.len();
        r.diffs = Arc::new(diffs);
        let h = store.handle();
        h.record(r);
        h.flush_blocking();
        let conn = open(&path).unwrap();
        let stored: Vec<(String, String)> = conn
            .prepare("SELECT pointer, kind FROM diffs ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let s = |p: &str, k: &str| (p.to_owned(), k.to_owned());
        assert_eq!(
            stored,
            vec![
                s("/people/0/manager_id", "missing"),
                s("/people/0/manager", "extra"),
                s("/people/1/manager_id", "missing"),
                s("/people/1/manager", "extra"),
                s("/people/3/status", "changed"),
                s("/people/7/status", "changed"),
                s("/people/5/name", "changed"),
            ]
        );
        let counts: Vec<(String, i64)> = conn
            .prepare("SELECT field, n FROM diff_fields ORDER BY field, kind")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            counts,
            vec![
                ("/people/*/manager".to_owned(), 100),
                ("/people/*/manager_id".to_owned(), 100),
                ("/people/*/name".to_owned(), 1),
                ("/people/*/status".to_owned(), 3),
            ]
        );
        let total: i64 = conn
            .query_row("SELECT diff_count FROM exchanges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, 204);
        drop(h);
        store.close();
    }
}
