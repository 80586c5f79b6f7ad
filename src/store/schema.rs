//! The SQLite schema, its version, and opening a database with the store's settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

pub(super) const SCHEMA: &str = r"
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

/// Opens the database with the store's settings and schema (migrations applied).
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let (conn, _) = open_migrated(path)?;
    Ok(conn)
}

/// [`open`], with the migrations it applied now.
pub(super) fn open_migrated(path: &Path) -> Result<(Connection, Vec<i64>), StoreError> {
    super::sqlite_only(path)?;
    let err = |source| StoreError::sqlite(path.display().to_string(), source);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: parent.display().to_string(),
            error: source,
        })?;
    }
    create_private(path).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        error: source,
    })?;
    // Processes opening a new store at once (a fleet's first start) can meet SQLite's lock
    // without its busy handler (switching a fresh file to WAL): such a start is tried again.
    // Only while that is quick: a lock held past the busy timeout is an error at once.
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match connect_and_migrate(path) {
            Err(e) if attempt < 20 && started.elapsed() < Duration::from_secs(1) && is_busy(&e) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10 * attempt));
            }
            done => return done.map_err(err),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn connect_and_migrate(path: &Path) -> rusqlite::Result<(Connection, Vec<i64>)> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // One INSERT per diff-chunk size (1..=ROWS_PER_INSERT) plus a few others stay prepared.
    conn.set_prepared_statement_cache_capacity(super::writer::ROWS_PER_INSERT + 16);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Pruned rows hold personal data: their bytes are zeroed, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    let applied = super::migrate::apply_sqlite(&conn)?;
    if !applied.is_empty() {
        tracing::info!(store = %path.display(), ?applied, "store schema migrated");
    }
    Ok((conn, applied))
}

/// Opens the store for writing and proves that it can be written: a store that only accepts
/// reads (a read-only file or folder, a full disk) is refused here, at start-up, instead of
/// losing every exchange later.
pub(super) fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    let conn = open(path)?;
    let err = |source| StoreError::sqlite(path.display().to_string(), source);
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

/// The version of this schema (the newest migration), also kept in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 =
    super::migrate::MIGRATIONS[super::migrate::MIGRATIONS.len() - 1].version;

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

impl StoreError {
    /// A SQLite error of the store at `path`.
    // By value: it is what `map_err` hands over.
    #[allow(clippy::needless_pass_by_value)]
    pub(super) fn sqlite(path: impl std::fmt::Display, error: rusqlite::Error) -> Self {
        Self::Engine {
            store: path.to_string(),
            message: error.to_string(),
            unreachable: false,
        }
    }
}

/// A failed SQLite query.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Query(error.to_string())
    }
}
