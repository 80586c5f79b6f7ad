//! The store: the only module that knows the storage engine and its tables.
//!
//! - writing: one writer thread fed by a bounded channel ([`Store`], [`StoreHandle`]); the proxy
//!   never waits for the disk;
//! - reading: the typed query API ([`Reader`]) that reports, the classification, the gate, the
//!   admin API and the command line use; SQLite implements it today;
//! - the schema and its version (`schema.rs`), and retention ([`prune_file`]).
//!
//! Tables (SQLite): `exchanges` (one row per exchange), `diff_fields` (per exchange, field
//! pattern and kind: the number of differences), `diffs` (the differences themselves, up to
//! [`MAX_DIFF_ROWS`] per exchange), `bodies` + `blobs` (kept bodies, each text stored once),
//! `field_presence` (per route, field pattern and hour: compared exchanges where the field was
//! present), `noise_samples` + `noise_fields` (noise learned from second legacy calls).

mod conn;
mod error;
mod health;
mod ids;
mod keep;
mod location;
mod migrate;
mod outbox;
mod pg;
mod pg_conn;
mod pg_reader;
mod prune;
mod query;
mod rediffs;
mod replay_sets;
mod rollout;
mod rollup;
mod schema;
mod sqlite;
mod triage;
mod writer;

use std::path::Path;
use std::time::SystemTime;

pub use health::{AccountHealth, HealthChange, NEEDS_REAUTH};
pub use ids::{IdCoverage, IdStore};
pub use keep::Rows;
pub use location::{Location, PgUrl};
pub use migrate::{latest as latest_schema_version, Migration, MIGRATIONS};
pub use outbox::{enqueue as enqueue_event, Delivery, Outbox, OutboxCounts, Subscriptions};
pub use query::{
    CohortCount, DayRow, DiffRow, ExampleValues, ExchangeDetail, ExchangeQuery, ExchangeRow,
    FieldAccountRow, FieldRow, Filter, GroupBy, KeptExchange, KeptPair, KeptSide, NoiseField,
    NoiseOnly, OutcomeCount, Reader, Side, Spend, VersionRow,
};
pub use rediffs::{record_rediffs, RediffRow};
pub use replay_sets::save_replay_set;
pub use rollout::{Change as RolloutChange, Event as RolloutEvent, RolloutStore};
pub use rollup::{
    bucket as latency_bucket, bucket_value as latency_bucket_value, Histogram, Rebuild,
};
pub use schema::{open, SCHEMA_VERSION};
pub use triage::record_triage;
pub use writer::{Store, StoreHandle, StoreStats, WriterOptions, MAX_DIFF_ROWS};

pub use error::StoreError;

/// Why a PostgreSQL URL is refused outside `migrate` (the fleet store is being built: its
/// schema and migrations are in; its writer and readers are not yet).
pub const POSTGRES_NOT_A_FILE: &str = "a PostgreSQL URL is not a file: set it as [store] url, \
     or give it to --db";

/// Refuses a PostgreSQL URL given where a SQLite file is expected (it would otherwise become a
/// file named after the URL).
pub fn sqlite_only(path: &Path) -> Result<(), StoreError> {
    match Location::parse(&path.to_string_lossy()) {
        Location::Postgres(url) => Err(StoreError::NotServed {
            url: url.to_string(),
        }),
        Location::Sqlite(_) => Ok(()),
    }
}

/// What `shadowdiff migrate` did to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The versions applied now, oldest first (empty: the store was current).
    pub applied: Vec<i64>,
    /// The store's version now.
    pub version: i64,
    /// What became of the hourly roll-ups: current, built again from the rows (they did not
    /// cover rows another program wrote), or not rebuilt (they count exchanges without a row).
    pub rollups: Rebuild,
}

/// Applies the pending migrations to the store at `location` (creating a SQLite file when
/// missing). Safe to run from several processes at once: one migrates, the others wait and
/// find nothing left to do.
pub fn migrate(location: &Location) -> Result<Migrated, StoreError> {
    match location {
        Location::Sqlite(path) => {
            let (conn, applied) = schema::open_migrated(path)?;
            let rollups = rollup::sqlite_rebuild(&conn)?;
            Ok(Migrated {
                applied,
                version: SCHEMA_VERSION,
                rollups,
            })
        }
        Location::Postgres(url) => {
            let err = |source| StoreError::postgres(url.to_string(), source);
            let mut client = pg_conn::connect(url)?;
            let applied = migrate::apply_postgres(&mut client).map_err(err)?;
            let version = migrate::postgres_versions(&mut client)
                .map_err(err)?
                .last()
                .copied()
                .unwrap_or(0);
            let rollups = rollup::pg_rebuild(&mut client).map_err(err)?;
            Ok(Migrated {
                applied,
                version,
                rollups,
            })
        }
    }
}

/// The route column of the aggregate tables (`field_presence`, `noise_samples`,
/// `noise_fields`), whose primary keys cannot hold SQL `NULL`: `''` for unmatched requests.
/// (`exchanges.route` holds `NULL` for them.)
fn aggregate_key(route: Option<&str>) -> &str {
    route.unwrap_or("")
}

/// Opens a store for reading and writing (creating it with its schema when missing), for the
/// commands that read it.
/// A `postgres://` URL given as the path opens that database (migrated first, as a file is).
pub fn open_reader(path: &Path) -> Result<Box<dyn Reader>, StoreError> {
    open_reader_at(&Location::parse(&path.to_string_lossy()))
}

/// [`open_reader`] for a location (a PostgreSQL URL keeps its `[store] ca_file`).
pub fn open_reader_at(location: &Location) -> Result<Box<dyn Reader>, StoreError> {
    match location {
        Location::Postgres(url) => {
            let mut client = pg::connect(url)?;
            migrate::apply_postgres(&mut client)
                .map_err(|source| StoreError::postgres(url.to_string(), source))?;
            Ok(Box::new(pg_reader::PgReader::new(url.clone(), client)))
        }
        Location::Sqlite(path) => Ok(Box::new(open(path)?)),
    }
}

/// [`open_read_only`] for a location: a PostgreSQL store is connected to (not migrated: the
/// writer did that).
pub fn open_read_only_at(
    location: &Location,
    busy: std::time::Duration,
) -> Result<Box<dyn Reader + Send>, StoreError> {
    match location {
        Location::Sqlite(path) => open_read_only(path, busy),
        Location::Postgres(url) => Ok(Box::new(pg_reader::PgReader::new(
            url.clone(),
            pg::connect(url)?,
        ))),
    }
}

/// Opens an existing store read-only, for the admin API (a reader never takes the writer's
/// lock); `busy` bounds how long a query waits on a checkpoint.
pub fn open_read_only(
    path: &Path,
    busy: std::time::Duration,
) -> Result<Box<dyn Reader + Send>, StoreError> {
    sqlite_only(path)?;
    let err = |source| StoreError::sqlite(path.display().to_string(), source);
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    let _ = conn.busy_timeout(busy);
    Ok(Box::new(conn))
}

/// [`prune_file`] for a location: a PostgreSQL store drops its day partitions before the
/// cutoff (one instance of a fleet at a time: the others find the lock taken and delete 0).
pub fn prune_at(location: &Location, cutoff: SystemTime) -> Result<usize, StoreError> {
    match location {
        Location::Sqlite(path) => prune_file(path, cutoff),
        Location::Postgres(url) => {
            let err = |error| StoreError::postgres(url.to_string(), error);
            let mut client = pg::connect(url)?;
            migrate::apply_postgres(&mut client).map_err(err)?;
            pg::prune(&mut client, cutoff).map_err(err)
        }
    }
}

/// Deletes the exchanges of the store at `path` that started before `cutoff`, with their
/// differences and bodies; returns how many.
pub fn prune_file(path: &Path, cutoff: SystemTime) -> Result<usize, StoreError> {
    let conn = open(path)?;
    prune::prune(&conn, cutoff)
        .map_err(|source| StoreError::sqlite(path.display().to_string(), source))
}
