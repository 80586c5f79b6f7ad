//! The SQLite store (SPEC §4): one writer thread fed by a bounded channel.
//!
//! The proxy never waits for the disk: `StoreHandle::record` is a `try_send`, and a full queue
//! counts the exchange as dropped. The writer batches whatever is queued (up to
//! [`BATCH`] exchanges) into one transaction, and prunes expired exchanges periodically.
//! The database runs in WAL mode with `synchronous=NORMAL`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::diff::Difference;

/// Exchanges written per transaction at most. Not configurable: it bounds how long one commit
/// holds the write lock against readers such as `report`.
const BATCH: usize = 1000;
/// How long the writer waits for more records after the first of a batch: one commit per
/// window instead of one per record. Records reach the database within about this delay.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// How often the writer prunes expired exchanges while serving.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Diff rows stored per exchange at most; `diff_count` keeps the real count.
pub const MAX_DIFF_ROWS: usize = 1000;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS exchanges(
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    route TEXT,
    method TEXT,
    path TEXT,
    account TEXT,
    legacy_status INTEGER,
    candidate_status INTEGER,
    legacy_ms REAL,
    candidate_ms REAL,
    outcome TEXT NOT NULL,
    diff_count INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    request_id TEXT,
    mapping_version TEXT
);
-- Windows (prune, overall latency), per-route windows (trend, latency), and counts per
-- (route, outcome) and (account, outcome) without sorting.
CREATE INDEX IF NOT EXISTS exchanges_started_at ON exchanges(started_at);
CREATE INDEX IF NOT EXISTS exchanges_route_started_at ON exchanges(route, started_at);
CREATE INDEX IF NOT EXISTS exchanges_route_outcome ON exchanges(route, outcome, started_at);
CREATE INDEX IF NOT EXISTS exchanges_account_outcome ON exchanges(account, outcome, started_at);
-- One row per (exchange, field pattern, kind) with the number of differences: what reports
-- aggregate, read in index order per route without touching the diffs themselves.
CREATE TABLE IF NOT EXISTS diff_fields(
    exchange_id INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    route TEXT,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(exchange_id, field, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS diff_fields_route ON diff_fields(route, field, kind, started_at, n);
-- Clustered by exchange: one b-tree insert per row, and an exchange's rows are adjacent.
CREATE TABLE IF NOT EXISTS diffs(
    exchange_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    pointer TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    legacy TEXT,
    candidate TEXT,
    PRIMARY KEY(exchange_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bodies(
    exchange_id INTEGER NOT NULL,
    side TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    blob_id INTEGER,
    PRIMARY KEY(exchange_id, side)
);
CREATE INDEX IF NOT EXISTS bodies_blob_id ON bodies(blob_id);
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    body TEXT NOT NULL
);
-- Per route, field pattern and hour (`2026-11-29T13`): compared exchanges where the field was
-- present in either body. The denominator of the classification (systematic / sporadic).
CREATE TABLE IF NOT EXISTS field_presence(
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    hour TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(route, field, hour)
) WITHOUT ROWID;
-- Noise learned from second legacy calls ([diff.noise]): per route, how many pairs of legacy
-- answers were compared, and per field pattern how many of them differed there.
CREATE TABLE IF NOT EXISTS noise_samples(
    route TEXT PRIMARY KEY,
    samples INTEGER NOT NULL,
    last_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS noise_fields(
    route TEXT NOT NULL,
    field TEXT NOT NULL,
    differed INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY(route, field)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS exchange_bodies AS
    SELECT b.exchange_id, b.side, b.status, b.headers, blobs.body
    FROM bodies b LEFT JOIN blobs ON blobs.id = b.blob_id;
";

/// How an exchange ended (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Diff,
    CandidateError,
    CandidateTimeout,
    CandidateAuthError,
    CandidateRateLimited,
    LegacyError,
    NotJson,
    TooLarge,
    MappingError,
    /// A bug: shadow work panicked; the message is in `reason`.
    InternalError,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Diff => "diff",
            Self::CandidateError => "candidate_error",
            Self::CandidateTimeout => "candidate_timeout",
            Self::CandidateAuthError => "candidate_auth_error",
            Self::CandidateRateLimited => "candidate_rate_limited",
            Self::LegacyError => "legacy_error",
            Self::NotJson => "not_json",
            Self::TooLarge => "too_large",
            Self::MappingError => "mapping_error",
            Self::InternalError => "internal_error",
            Self::Skipped => "skipped",
        }
    }
}

/// One side's response as stored (already redacted).
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub side: &'static str,
    pub status: Option<u16>,
    pub headers: Value,
    /// The redacted JSON text and its hash; `None` for a body that is not JSON (not kept).
    pub body: Option<BodyText>,
}

/// A body's text with its content hash: the same text is stored once (table `blobs`).
#[derive(Debug, Clone)]
pub struct BodyText {
    pub text: Arc<str>,
    pub hash: u128,
}

impl BodyText {
    pub fn new(text: String) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        Self {
            text: text.into(),
            hash,
        }
    }
}

/// Who an exchange is, known before either side answers.
#[derive(Debug, Clone)]
pub struct Meta {
    pub started_at: SystemTime,
    pub request_id: String,
    pub route: Option<String>,
    pub method: String,
    /// Path without the query string (queries can carry credentials).
    pub path: String,
    pub account: Option<String>,
}

/// One exchange, ready to be written (already redacted).
#[derive(Debug, Clone)]
pub struct Record {
    pub meta: Meta,
    pub legacy_status: Option<u16>,
    pub candidate_status: Option<u16>,
    pub legacy_ms: Option<f64>,
    pub candidate_ms: Option<f64>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub diff_count: usize,
    /// Shared with the comparison memo: identical pairs reuse one list.
    pub diffs: Arc<Vec<Difference>>,
    /// Field patterns present in either body of a compared exchange (table `field_presence`).
    pub present: Arc<Vec<String>>,
    pub bodies: Vec<StoredBody>,
    /// The version of the mappings applied (`None` without mappings).
    pub mapping_version: Option<String>,
}

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store {path}: the file cannot be written (read-only file, folder or file system)")]
    ReadOnly { path: String },
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The fields that differed between two legacy answers to one request.
#[derive(Debug, Clone)]
pub struct NoiseSample {
    /// `""` for requests that matched no route.
    pub route: String,
    pub at: SystemTime,
    pub fields: Vec<String>,
}

enum Msg {
    Record(Box<Record>),
    Noise(NoiseSample),
    Flush(SyncSender<()>),
    /// Write what came before, then stop (other handles may still exist).
    Stop,
}

/// Counters of the writer, shared with the proxy.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    /// Records sent and not yet taken by the writer.
    pub queued: AtomicU64,
    /// Why the last write failed, until a write succeeds again: `/readyz` says so.
    last_error: Mutex<Option<String>>,
}

impl StoreStats {
    /// `Some(reason)` while the store cannot be written.
    pub fn failure(&self) -> Option<String> {
        self.last_error().clone()
    }

    /// Sets (or, with `None`, clears) the failure; returns the one it replaces.
    fn set_failure(&self, e: Option<String>) -> Option<String> {
        std::mem::replace(&mut *self.last_error(), e)
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producer side of the store: cheap to clone, never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    tx: SyncSender<Msg>,
    stats: Arc<StoreStats>,
}

impl StoreHandle {
    /// Queues an exchange; when the queue is full it is dropped and counted.
    pub fn record(&self, r: Record) {
        match self.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::dropped("store_queue_full");
                tracing::debug!("store queue full: exchange dropped");
            }
        }
    }

    /// Queues a noise sample; dropped (and counted) when the queue is full.
    pub fn noise(&self, n: NoiseSample) {
        if self.tx.try_send(Msg::Noise(n)).is_err() {
            crate::telemetry::dropped("store_queue_full");
        }
    }

    /// Waits until everything queued before this call is committed. Blocks the calling thread.
    pub fn flush_blocking(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Like [`flush_blocking`](Self::flush_blocking), from async code.
    pub async fn flush(&self) {
        let h = self.clone();
        let _ = tokio::task::spawn_blocking(move || h.flush_blocking()).await;
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }
}

/// The writer thread and its handle.
pub struct Store {
    handle: StoreHandle,
    thread: JoinHandle<()>,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub queue: usize,
    pub priority: crate::background::Priority,
    pub retention: Duration,
    pub max_value_len: usize,
}

impl Store {
    /// Opens (creating it and its folder if needed) the database and starts the writer.
    pub fn open(path: &Path, opts: WriterOptions) -> Result<Self, StoreError> {
        let conn = open_for_writing(path)?;
        let (tx, rx) = mpsc::sync_channel(opts.queue);
        let stats = Arc::new(StoreStats::default());
        let st = stats.clone();
        let p = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                crate::background::lower_current_thread(opts.priority);
                writer(conn, &rx, &st, &opts, &p);
            })
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            handle: StoreHandle { tx, stats },
            thread,
        })
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Writes everything queued and stops the writer. Blocks the calling thread. Records sent
    /// through remaining handles afterwards are counted as dropped.
    pub fn close(self) -> Arc<StoreStats> {
        let stats = self.handle.stats.clone();
        let _ = self.handle.tx.send(Msg::Stop);
        drop(self.handle);
        let _ = self.thread.join();
        stats
    }
}

/// Opens the database with the store's settings and schema.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: parent.display().to_string(),
            source,
        })?;
    }
    create_private(path).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    // One INSERT per diff-chunk size (1..=ROWS_PER_INSERT) plus a few others stay prepared.
    conn.set_prepared_statement_cache_capacity(ROWS_PER_INSERT + 16);
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    // Pruned rows hold personal data: their bytes are zeroed, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(err)?;
    migrate(&conn).map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

/// Opens the store for writing and proves that it can be written: a store that only accepts
/// reads (a read-only file or folder, a full disk) is refused here, at start-up, instead of
/// losing every exchange later.
pub fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    let conn = open(path)?;
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
        return Err(StoreError::ReadOnly {
            path: path.display().to_string(),
        });
    }
    // A real write (the schema version in the file's header), committed.
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    Ok(conn)
}

/// The version of this schema, kept in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// Creates the database file, when it does not exist yet, readable and writable by its owner
/// only (0600): SQLite gives its `-wal` and `-shm` files the same permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Brings a store written by an older version up to the current schema (columns added since).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exchanges')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(());
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('exchanges')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !columns.iter().any(|c| c == "mapping_version") {
        conn.execute_batch("ALTER TABLE exchanges ADD COLUMN mapping_version TEXT")?;
    }
    Ok(())
}

fn writer(
    mut conn: Connection,
    rx: &mpsc::Receiver<Msg>,
    stats: &StoreStats,
    opts: &WriterOptions,
    path: &str,
) {
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    let mut batch: Vec<Box<Record>> = Vec::with_capacity(BATCH);
    let mut noise: Vec<NoiseSample> = Vec::new();
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    loop {
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match prune(&conn, SystemTime::now() - opts.retention) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned expired exchanges"),
                Err(e) => tracing::warn!(error = %e, "prune failed"),
            }
        }
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Gather a batch: up to BATCH records, or what arrives within BATCH_WINDOW of the first;
        // a flush or stop request ends the wait at once.
        let window_end = Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        let mut stop = false;
        while let Some(m) = next {
            match m {
                Msg::Record(r) => batch.push(r),
                Msg::Noise(n) => noise.push(n),
                Msg::Flush(done) => flushes.push(done),
                Msg::Stop => stop = true,
            }
            if stop || !flushes.is_empty() || batch.len() >= BATCH {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => rx
                    .recv_timeout(window_end.saturating_duration_since(Instant::now()))
                    .ok(),
            };
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let depth = stats
                .queued
                .fetch_sub(n, Ordering::Relaxed)
                .saturating_sub(n);
            crate::telemetry::queue_depth(depth);
            let t0 = Instant::now();
            let res = write_batch(&mut conn, &batch, opts.max_value_len);
            crate::telemetry::store_write(t0.elapsed().as_secs_f64());
            match res {
                Ok(()) => {
                    stats.written.fetch_add(n, Ordering::Relaxed);
                    if stats.set_failure(None).is_some() {
                        tracing::info!(path, "store writes succeed again");
                    }
                }
                Err(e) => {
                    let lost = stats.failed.fetch_add(n, Ordering::Relaxed) + n;
                    crate::telemetry::store_lost(n);
                    tracing::error!(error = %e, path, lost_in_batch = n, lost_total = lost, "store write failed: exchanges lost");
                    stats.set_failure(Some(e.to_string()));
                }
            };
            batch.clear();
        }
        if !noise.is_empty() {
            if let Err(e) = write_noise(&mut conn, &noise) {
                tracing::error!(error = %e, path, "store write failed (noise samples)");
                crate::telemetry::dropped("store_write_failed");
            }
            noise.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if stop {
            break;
        }
    }
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

fn write_batch(
    conn: &mut Connection,
    batch: &[Box<Record>],
    max_len: usize,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut ex = tx.prepare_cached(
            "INSERT INTO exchanges(started_at, route, method, path, account, legacy_status, candidate_status,
             legacy_ms, candidate_ms, outcome, diff_count, reason, request_id, mapping_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut bd = tx.prepare_cached(
            "INSERT OR REPLACE INTO bodies(exchange_id, side, status, headers, blob_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut df_sum = tx.prepare_cached(
            "INSERT INTO diff_fields(exchange_id, started_at, route, field, kind, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut blob_find = tx.prepare_cached("SELECT id FROM blobs WHERE hash = ?1")?;
        let mut presence: std::collections::HashMap<(&str, &str, &str), i64> =
            std::collections::HashMap::new();
        let mut hours: Vec<String> = Vec::with_capacity(batch.len());
        let mut blob_add = tx.prepare_cached("INSERT INTO blobs(hash, body) VALUES (?1, ?2)")?;
        for r in batch {
            let m = &r.meta;
            let started_at = rfc3339(m.started_at);
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
            ])?;
            let id = tx.last_insert_rowid();
            hours.push(started_at[..started_at.len().min(13)].to_owned());
            let mut per_field: std::collections::BTreeMap<(&str, &str), i64> =
                std::collections::BTreeMap::new();
            for d in r.diffs.iter() {
                *per_field
                    .entry((d.field.as_str(), d.kind.as_str()))
                    .or_default() += 1;
            }
            for ((field, kind), n) in per_field {
                df_sum.execute(params![id, &started_at, m.route, field, kind, n])?;
            }
            let rows = &r.diffs[..r.diffs.len().min(MAX_DIFF_ROWS)];
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
        for (r, hour) in batch.iter().zip(&hours) {
            let route = r.meta.route.as_deref().unwrap_or("");
            for f in r.present.iter() {
                *presence
                    .entry((route, f.as_str(), hour.as_str()))
                    .or_default() += 1;
            }
        }
        let mut pr = tx.prepare_cached(
            "INSERT INTO field_presence(route, field, hour, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(route, field, hour) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((route, field, hour), n) in presence {
            pr.execute(params![route, field, hour, n])?;
        }
    }
    tx.commit()
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
            s.execute(params![n.route, at])?;
            for field in &n.fields {
                f.execute(params![n.route, field, at])?;
            }
        }
    }
    tx.commit()
}

/// Diff rows per INSERT statement: one statement per row costs more than the row itself.
const ROWS_PER_INSERT: usize = 16;

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

/// A JSON value as stored: its text, or, when longer than `max`, a JSON string holding the first
/// `max` bytes of the text followed by `…[truncated]` (so the column always holds valid JSON).
pub fn value_text(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.len() <= max {
        return text;
    }
    Value::String(format!("{}…[truncated]", cut(&text, max))).to_string()
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Formats a time as RFC 3339 UTC with milliseconds (sortable as text).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Deletes exchanges that started before `cutoff`, with their diffs and bodies, in batches.
pub fn prune(conn: &Connection, cutoff: SystemTime) -> rusqlite::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Kind;
    use serde_json::json;

    fn record(at: SystemTime) -> Record {
        Record {
            meta: Meta {
                started_at: at,
                request_id: "r1".into(),
                route: Some("directory".into()),
                method: "GET".into(),
                path: "/d".into(),
                account: None,
            },
            legacy_status: Some(200),
            candidate_status: Some(200),
            legacy_ms: Some(1.5),
            candidate_ms: Some(2.5),
            outcome: Outcome::Diff,
            reason: None,
            diff_count: 1,
            diffs: Arc::new(vec![Difference {
                pointer: "/a".into(),
                field: "/a".into(),
                kind: Kind::Changed,
                legacy: Some(json!("x".repeat(100))),
                candidate: Some(json!(2)),
                candidate_pointer: None,
            }]),
            present: Arc::default(),
            bodies: vec![],
            mapping_version: None,
        }
    }

    #[test]
    fn writes_flushes_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.db");
        let store = Store::open(
            &path,
            WriterOptions {
                queue: 16,
                priority: crate::background::Priority::Normal,
                retention: Duration::from_secs(3600),
                max_value_len: 32,
            },
        )
        .unwrap();
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
        assert!(serde_json::from_str::<Value>(&legacy).is_ok());
        assert_eq!(
            prune(&conn, SystemTime::now() - Duration::from_secs(3600)).unwrap(),
            1
        );
        let n: i64 = conn
            .query_row("SELECT count(*) FROM diffs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(h);
        let stats = store.close();
        assert_eq!(stats.written.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn many_differences_are_stored_in_order_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let store = Store::open(
            &path,
            WriterOptions {
                queue: 4,
                priority: crate::background::Priority::Normal,
                retention: Duration::from_secs(3600),
                max_value_len: 64,
            },
        )
        .unwrap();
        let mut r = record(SystemTime::now());
        let one = r.diffs[0].clone();
        r.diffs = Arc::new(
            (0..MAX_DIFF_ROWS + 37)
                .map(|i| Difference {
                    pointer: format!("/a/{i}"),
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
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let h = StoreHandle {
            tx,
            stats: Arc::default(),
        };
        h.record(record(SystemTime::now()));
        h.record(record(SystemTime::now()));
        assert_eq!(h.stats().dropped.load(Ordering::Relaxed), 1);
    }
}
