//! Opening a SQLite store with the store's settings (WAL, private file mode, the migrations
//! applied), for writing, reading, or read-only, and the one-shot commands that open one
//! (`migrate`, `prune`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::{health, migrate, prune, rollup};
use crate::store::location::Location;
use crate::store::migrate::SCHEMA_VERSION;
use crate::store::query::Reader;
use crate::store::rollup::Rebuild;
use crate::store::writer::Sink;
use crate::store::StoreError;

/// Opens the database with the store's settings and schema (migrations applied).
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let (conn, _) = open_migrated(path)?;
    Ok(conn)
}

/// [`open`], with the migrations it applied now.
fn open_migrated(path: &Path) -> Result<(Connection, Vec<i64>), StoreError> {
    refuse_urls(path)?;
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
    conn.set_prepared_statement_cache_capacity(ROWS_PER_INSERT + 16);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Pruned rows hold personal data: their bytes are zeroed, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    let applied = migrate::apply(&conn)?;
    if !applied.is_empty() {
        tracing::info!(store = %path.display(), ?applied, "store schema migrated");
    }
    Ok((conn, applied))
}

/// Opens the store for writing and proves that it can be written: a store that only accepts
/// reads (a read-only file or folder, a full disk) is refused here, at start-up, instead of
/// losing every exchange later.
fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
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
    pub(in crate::store) fn sqlite(path: impl std::fmt::Display, error: rusqlite::Error) -> Self {
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

/// `shadowdiff migrate`: the versions applied now, and what became of the roll-ups.
pub(in crate::store) fn migrate(path: &Path) -> Result<(Vec<i64>, Rebuild), StoreError> {
    let (conn, applied) = open_migrated(path)?;
    let rollups = rollup::rebuild(&conn)
        .map_err(|source| StoreError::sqlite(path.display().to_string(), source))?;
    Ok((applied, rollups))
}

/// The writer's sink: the store opened for writing (proved writable), the accounts' health
/// gauges set from what it holds.
pub(in crate::store) fn sink(path: &Path) -> Result<Box<dyn Sink>, StoreError> {
    let conn = open_for_writing(path)?;
    // The accounts' health as the store holds it, from the start (not only after a change);
    // a store without any is what the gauges registered at zero already say (and setting them
    // again would overwrite another store's counts in a process running several, as tests do).
    if let Ok((ok, needs)) = health::counts(&conn) {
        if ok + needs > 0 {
            crate::telemetry::account_states(ok, needs);
        }
    }
    Ok(Box::new(conn))
}

/// A reader that may also write (the commands'): opened, and migrated, as [`open`].
pub(in crate::store) fn reader(path: &Path) -> Result<Box<dyn Reader>, StoreError> {
    Ok(Box::new(open(path)?))
}

/// Opens an existing store read-only, for the admin API (a reader never takes the writer's
/// lock); `busy` bounds how long a query waits on a checkpoint.
pub(in crate::store) fn read_only(
    path: &Path,
    busy: Duration,
) -> Result<Box<dyn Reader + Send>, StoreError> {
    refuse_urls(path)?;
    let err = |source| StoreError::sqlite(path.display().to_string(), source);
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    let _ = conn.busy_timeout(busy);
    Ok(Box::new(conn))
}

/// Deletes the exchanges of the store at `path` that started before `cutoff`, with their
/// differences and bodies; returns how many.
pub(in crate::store) fn prune(path: &Path, cutoff: SystemTime) -> Result<usize, StoreError> {
    let conn = open(path)?;
    prune::prune(&conn, cutoff)
        .map_err(|source| StoreError::sqlite(path.display().to_string(), source))
}

/// Diff rows per INSERT statement: one statement per row costs more than the row itself.
pub(super) const ROWS_PER_INSERT: usize = 16;

/// A URL given where a SQLite file is expected is refused (it would otherwise become a file,
/// and folders, named after it): a PostgreSQL one is said to belong in `[store] url`.
fn refuse_urls(path: &Path) -> Result<(), StoreError> {
    if let Some(url) = Location::url_in(path) {
        return Err(StoreError::NotServed {
            url: url.to_string(),
        });
    }
    if crate::store::location::is_url(path) {
        return Err(StoreError::NotAStore {
            path: path.display().to_string(),
        });
    }
    Ok(())
}
