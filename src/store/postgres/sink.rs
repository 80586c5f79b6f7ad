//! PostgreSQL, the fleet's store: the writer's side ([`PgSink`]). Several instances write to one
//! database: ids come from one sequence in ranges (one round trip per batch), the per-exchange
//! tables go in with `COPY` into day partitions created on demand, kept body texts are
//! content-addressed (`ON CONFLICT DO NOTHING`), and every shared counter is an upsert that adds.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::SystemTime;

use postgres::Client;

use super::partitions::{day_of, day_text, PARTITIONED};

use crate::record::{rfc3339, NoiseSample, Record};
use crate::store::location::PgUrl;
use crate::store::sql::aggregate_key;
use crate::store::writer::{Sink, WriteError, WriterOptions};

/// The advisory lock key under which partitions are created ("sdpartit").
const PG_PARTITION_LOCK: i64 = 0x7364_7061_7274_6974;

use super::text::pg_text;

/// The writer's connection; reconnects when the server went away.
pub(in crate::store) struct PgSink {
    url: PgUrl,
    client: Option<Client>,
    /// Days (`2026-11-30`) whose partitions exist.
    days: HashSet<String>,
    /// Apply the migrations (`true`) or only check that they were applied.
    migrate: bool,
    /// The schema was migrated or checked on one connection (a start with the database down
    /// does it on the first connection that succeeds).
    prepared: bool,
}

impl PgSink {
    /// A writer's sink; `client` is `None` when the database could not be reached at start.
    pub(in crate::store) fn new(url: PgUrl, client: Option<Client>, migrate: bool) -> Self {
        Self {
            url,
            prepared: client.is_some(),
            client,
            days: HashSet::new(),
            migrate,
        }
    }

    /// The connection, reconnecting first when it was lost.
    fn client(&mut self) -> Result<&mut Client, WriteError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut c = super::open::connect(&self.url).map_err(|e| WriteError {
                unreachable: e.is_unreachable(),
                message: e.to_string(),
            })?;
            if !self.prepared {
                super::open::prepare(&mut c, &self.url, self.migrate).map_err(|e| WriteError {
                    unreachable: e.is_unreachable(),
                    message: e.to_string(),
                })?;
                self.prepared = true;
            }
            self.days.clear();
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Maps an error: a closed connection (or one that could not be made) is `unreachable`,
    /// and the connection is dropped so the next attempt makes a new one.
    fn fail(&mut self, e: &postgres::Error) -> WriteError {
        let unreachable =
            super::connect::unreachable(e) || self.client.as_ref().is_some_and(Client::is_closed);
        if unreachable {
            self.client = None;
        }
        WriteError {
            message: format!("store {}: {e}", self.url),
            unreachable,
        }
    }

    fn ensure_partitions(&mut self, batch: &[Box<Record>]) -> Result<(), postgres::Error> {
        let wanted: Vec<u64> = batch
            .iter()
            .map(|r| day_of(r.meta.started_at))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|d| !self.days.contains(&day_text(*d)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let client = self.client.as_mut().expect("connected");
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_PARTITION_LOCK])?;
        for d in &wanted {
            let (from, to) = (day_text(*d), day_text(d + 1));
            let suffix = from.replace('-', "");
            let mut sql = String::new();
            for t in PARTITIONED {
                let _ = writeln!(
                    sql,
                    "CREATE TABLE IF NOT EXISTS {t}_{suffix} PARTITION OF {t} FOR VALUES FROM ('{from}') TO ('{to}');"
                );
            }
            tx.batch_execute(&sql)?;
        }
        tx.commit()?;
        self.days.extend(wanted.into_iter().map(day_text));
        Ok(())
    }

    fn write(
        &mut self,
        batch: &[Box<Record>],
        kept: &[bool],
        extra: &crate::store::rollup::Deltas,
        opts: &WriterOptions,
    ) -> Result<(), postgres::Error> {
        self.ensure_partitions(batch)?;
        let client = self.client.as_mut().expect("connected");
        let mut tx = client.transaction()?;
        let ids: Vec<i64> = tx
            .query(
                "SELECT nextval('exchange_ids') FROM generate_series(1, $1::int)",
                &[&(kept.iter().filter(|k| **k).count() as i32)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let max = opts.max_value_len;
        let mut ex = Copy::default();
        let mut fields = Copy::default();
        let mut diffs = Copy::default();
        let mut rolled = crate::store::rollup::Deltas::new(pg_text);
        rolled.before = Some(tx.query_one(crate::store::rollup::MAX_ID_SQL, &[])?.get(0));
        let mut next_id = ids.iter();
        // Each kept exchange's id (0: no row), in the batch's order.
        let numbers: Vec<i64> = kept
            .iter()
            .map(|k| {
                if *k {
                    *next_id.next().expect("an id per kept exchange")
                } else {
                    0
                }
            })
            .collect();
        let hours: Vec<String> = batch
            .iter()
            .map(|r| format!("{}:00:00Z", crate::record::hour(r.meta.started_at)))
            .collect();
        let presence = crate::store::rollup::presence(batch, &hours);
        for (r, &number) in batch.iter().zip(&numbers) {
            let m = &r.meta;
            let at = rfc3339(m.started_at);
            rolled.add_record(r, number, &at);
            if number == 0 {
                continue;
            }
            let id = number.to_string();
            ex.row(&[
                Some(&id),
                Some(&at),
                m.route.as_deref(),
                Some(&m.method),
                Some(&m.path),
                m.account.as_deref(),
                r.legacy_status.map(|s| s.to_string()).as_deref(),
                r.candidate_status.map(|s| s.to_string()).as_deref(),
                r.legacy_ms.map(|v| v.to_string()).as_deref(),
                r.candidate_ms.map(|v| v.to_string()).as_deref(),
                Some(r.outcome.as_str()),
                Some(&r.diff_count.to_string()),
                r.reason.as_deref().map(|s| crate::record::cut(s, max)),
                Some(&m.request_id),
                r.mapping_version.as_deref(),
                Some(m.serving.served_by.as_str()),
                m.serving.fallback.map(|f| f.as_str()),
                m.serving.phase.as_deref(),
            ]);
            for c in r.counts().iter() {
                fields.row(&[
                    Some(&id),
                    Some(&at),
                    m.route.as_deref(),
                    Some(&c.field),
                    Some(c.kind),
                    Some(&c.n.to_string()),
                ]);
            }
            for (seq, d) in crate::record::examples(&r.diffs, opts.examples_per_field)
                .into_iter()
                .enumerate()
            {
                diffs.row(&[
                    Some(&id),
                    Some(&at),
                    Some(&seq.to_string()),
                    Some(&d.pointer),
                    Some(&d.field),
                    Some(d.kind.as_str()),
                    d.legacy
                        .as_ref()
                        .map(|v| crate::record::value_text(v, max))
                        .as_deref(),
                    d.candidate
                        .as_ref()
                        .map(|v| crate::record::value_text(v, max))
                        .as_deref(),
                ]);
            }
        }
        ex.send(
            &mut tx,
            "COPY exchanges(id, started_at, route, method, path, account, legacy_status, candidate_status,
             legacy_ms, candidate_ms, outcome, diff_count, reason, request_id, mapping_version,
             served_by, fallback, phase) FROM STDIN",
        )?;
        fields.send(
            &mut tx,
            "COPY diff_fields(exchange_id, started_at, route, field, kind, n) FROM STDIN",
        )?;
        diffs.send(
            &mut tx,
            "COPY diffs(exchange_id, started_at, seq, pointer, field, kind, legacy, candidate) FROM STDIN",
        )?;
        // Kept bodies are few (a sample): plain statements. (An exchange with kept bodies
        // always keeps its row.)
        for (r, id) in batch.iter().zip(&numbers).filter(|(_, n)| **n != 0) {
            for b in &r.bodies {
                let hash: Option<Vec<u8>> = b.body.as_ref().map(|t| t.hash.to_le_bytes().to_vec());
                if let (Some(body), Some(h)) = (&b.body, &hash) {
                    tx.execute(
                        "INSERT INTO blobs(hash, body, first_at) VALUES ($1, $2, $3::text::timestamptz)
                         ON CONFLICT (hash) DO NOTHING",
                        &[h, &&*body.text, &rfc3339(r.meta.started_at)],
                    )?;
                }
                tx.execute(
                    "INSERT INTO bodies(exchange_id, started_at, side, status, headers, blob_hash)
                     VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6)",
                    &[
                        id,
                        &rfc3339(r.meta.started_at),
                        &b.side,
                        &b.status.map(i32::from),
                        &b.headers.to_string(),
                        &hash,
                    ],
                )?;
            }
        }
        if !presence.is_empty() {
            let stmt = tx.prepare(
                "INSERT INTO field_presence(route, field, hour, n) VALUES ($1, $2, $3::text::timestamptz, $4)
                 ON CONFLICT (route, field, hour) DO UPDATE SET n = field_presence.n + excluded.n",
            )?;
            let mut rows: Vec<_> = presence.into_iter().collect();
            // One order for every instance: concurrent upserts of the same keys cannot deadlock.
            rows.sort_unstable();
            for ((route, field, hour), n) in rows {
                tx.execute(&stmt, &[&pg_text(route), &pg_text(field), &hour, &n])?;
            }
        }
        rolled.merge(extra);
        super::rollup::save(&mut tx, &rolled)?;
        super::ids::save(&mut tx, batch, &|k| opts.max_pairs(k))?;
        let changes = super::health::update(&mut tx, batch, opts.reauth_after)?;
        for c in &changes {
            super::outbox::enqueue(
                &mut tx,
                &opts.webhooks,
                crate::store::writer::health_event(c),
                &crate::store::writer::health_data(c),
            )?;
        }
        tx.commit()?;
        if !changes.is_empty() {
            crate::store::writer::health_changed(&changes);
            if let Ok((ok, needs)) = super::health::counts(client) {
                crate::telemetry::account_states(ok, needs);
            }
        }
        Ok(())
    }

    fn noise(&mut self, samples: &[NoiseSample]) -> Result<(), postgres::Error> {
        let client = self.client.as_mut().expect("connected");
        let mut tx = client.transaction()?;
        let s = tx.prepare(
            "INSERT INTO noise_samples(route, samples, last_at) VALUES ($1, 1, $2::text::timestamptz)
             ON CONFLICT (route) DO UPDATE SET samples = noise_samples.samples + 1,
               last_at = greatest(noise_samples.last_at, excluded.last_at)",
        )?;
        let f = tx.prepare(
            "INSERT INTO noise_fields(route, field, differed, first_at, last_at)
             VALUES ($1, $2, 1, $3::text::timestamptz, $3::text::timestamptz)
             ON CONFLICT (route, field) DO UPDATE SET differed = noise_fields.differed + 1,
               last_at = greatest(noise_fields.last_at, excluded.last_at)",
        )?;
        for n in samples {
            let at = rfc3339(n.at);
            let route = aggregate_key(n.route.name());
            let route = pg_text(route);
            tx.execute(&s, &[&route, &at])?;
            for field in &n.fields {
                tx.execute(&f, &[&route, &pg_text(field), &at])?;
            }
        }
        tx.commit()
    }
}

impl Sink for PgSink {
    fn write_batch(
        &mut self,
        batch: &[Box<Record>],
        kept: &[bool],
        extra: &crate::store::rollup::Deltas,
        opts: &WriterOptions,
    ) -> Result<(), WriteError> {
        self.client()?;
        self.write(batch, kept, extra, opts)
            .map_err(|e| self.fail(&e))
    }

    fn write_noise(&mut self, samples: &[NoiseSample]) -> Result<(), WriteError> {
        self.client()?;
        self.noise(samples).map_err(|e| self.fail(&e))
    }

    fn prune(&mut self, cutoff: SystemTime) -> Result<usize, WriteError> {
        self.client()?;
        let client = self.client.as_mut().expect("connected");
        super::partitions::prune(client, cutoff).map_err(|e| self.fail(&e))
    }
}

/// Rows of one `COPY … FROM STDIN` in PostgreSQL's text format.
#[derive(Default)]
struct Copy {
    buf: Vec<u8>,
}

impl Copy {
    fn row(&mut self, cols: &[Option<&str>]) {
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                self.buf.push(b'\t');
            }
            match c {
                None => self.buf.extend_from_slice(b"\\N"),
                Some(v) => escape_into(&mut self.buf, v),
            }
        }
        self.buf.push(b'\n');
    }

    fn send(self, tx: &mut postgres::Transaction<'_>, sql: &str) -> Result<(), postgres::Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut w = tx.copy_in(sql)?;
        // An I/O error here is the connection's: `finish` reports it as a postgres error.
        let _ = w.write_all(&self.buf);
        w.finish().map(|_| ())
    }
}

/// A value in COPY's text format: backslash, tab, newline and carriage return escaped, NUL
/// replaced (every other byte, multi-byte UTF-8 included, is taken as it is).
fn escape_into(out: &mut Vec<u8>, v: &str) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            // PostgreSQL's text cannot hold NUL: U+FFFD, as for any text it cannot store.
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_would_end_a_column_or_a_row() {
        let mut c = Copy::default();
        c.row(&[Some("a\tb\nc\\d\re"), None, Some("é\u{0}")]);
        assert_eq!(c.buf, "a\\tb\\nc\\\\d\\re\t\\N\té\u{FFFD}\n".as_bytes());
    }
}
