//! The store's error: engine-neutral (what an engine's error said, and whether the database
//! could not be reached), so that no caller of the store names an engine's types. Each engine
//! converts its own errors (`StoreError::sqlite`, `StoreError::postgres`).

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened, read or written: the engine's message (never a source:
    /// its text is shown once, in this message). `unreachable`: the database could not be
    /// reached (refused, timed out, name not resolved, the connection lost).
    #[error("store {store}: {message}")]
    Engine {
        store: String,
        message: String,
        unreachable: bool,
    },
    #[error("store {path}: the file cannot be written (read-only file, folder or file system)")]
    ReadOnly { path: String },
    #[error("store {path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A query failed.
    #[error("{0}")]
    Query(String),
    /// A PostgreSQL URL where this version only takes a SQLite file.
    #[error("store {url}: {}", POSTGRES_NOT_A_FILE)]
    NotServed { url: String },
    /// A URL of another kind where a store is expected (`mysql://…`, `sqlite://…`): it would
    /// otherwise become folders named after it.
    #[error("store {path}: a URL, not a file path; a store is a SQLite file or a postgres:// URL")]
    NotAStore { path: String },
    /// A PostgreSQL setting that cannot work (bad `sslmode`, unreadable CA file, ...).
    #[error("store {url}: {message}")]
    PostgresSetup { url: String, message: String },
}

impl StoreError {
    /// A database that could not be reached (refused, timed out, name not resolved, the
    /// connection lost): worth retrying. A refused login, a TLS failure or a failed statement
    /// is not.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Engine {
                unreachable: true,
                ..
            }
        )
    }
}

/// Why a PostgreSQL URL is refused where a SQLite file is expected.
const POSTGRES_NOT_A_FILE: &str = "a PostgreSQL URL is not a file: set it as [store] url, \
     or give it to --db";
