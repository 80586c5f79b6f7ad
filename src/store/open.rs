//! Where the engine is chosen: the one place in the store that matches on a [`Location`]. Each
//! way in (the writer, a reader, a connection of its own for a concept, `migrate`, `prune`)
//! opens its engine's half here; everything after speaks to the engine-neutral seams (the
//! writer's `Sink`, [`Reader`], each concept's connection trait).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::ids::IdConn;
use super::location::Location;
use super::outbox::OutboxConn;
use super::query::Reader;
use super::rediffs::{RediffConn, RediffRow};
use super::replay_sets::ReplaySetConn;
use super::rollout::RolloutConn;
use super::triage::TriageConn;
use super::writer::{Store, WriterOptions};
use super::{IdStore, Migrated, Outbox, RolloutStore, StoreError, Subscriptions};

/// A connection of its own, whichever the engine: every concept's trait.
trait Own: IdConn + OutboxConn + RediffConn + ReplaySetConn + RolloutConn + TriageConn {}
impl<T: IdConn + OutboxConn + RediffConn + ReplaySetConn + RolloutConn + TriageConn> Own for T {}

/// A connection of its own to the store at `location`, opened (and migrated) on first use; a
/// PostgreSQL one is closed on a thread named `closer` when dropped on an async runtime.
fn own(location: &Location, closer: &'static str) -> Box<dyn Own> {
    match location {
        Location::Sqlite(path) => Box::new(super::sqlite::conn::Own::new(path)),
        Location::Postgres(url) => Box::new(super::postgres::conn::Own::new(url, closer)),
    }
}

/// Applies the pending migrations to the store at `location` (creating a SQLite file when
/// missing). Safe to run from several processes at once: one migrates, the others wait and
/// find nothing left to do.
pub fn migrate(location: &Location) -> Result<Migrated, StoreError> {
    let (applied, version, rollups) = match location {
        Location::Sqlite(path) => {
            let (applied, rollups) = super::sqlite::open::migrate(path)?;
            (applied, super::SCHEMA_VERSION, rollups)
        }
        Location::Postgres(url) => super::postgres::open::migrate(url)?,
    };
    Ok(Migrated {
        applied,
        version,
        rollups,
    })
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
        Location::Sqlite(path) => super::sqlite::open::reader(path),
        Location::Postgres(url) => Ok(Box::new(super::postgres::reader::PgReader::new(
            url.clone(),
            super::postgres::open::open(url)?,
        ))),
    }
}

/// A reader for the admin API: a SQLite file is opened read-only (a reader never takes the
/// writer's lock; `busy` bounds how long a query waits on a checkpoint); a PostgreSQL store is
/// connected to (not migrated: the writer did that).
pub fn open_read_only_at(
    location: &Location,
    busy: Duration,
) -> Result<Box<dyn Reader + Send>, StoreError> {
    match location {
        Location::Sqlite(path) => super::sqlite::open::read_only(path, busy),
        Location::Postgres(url) => Ok(Box::new(super::postgres::reader::PgReader::new(
            url.clone(),
            super::postgres::open::connect(url)?,
        ))),
    }
}

/// Deletes the exchanges that started before `cutoff`, with their differences and bodies;
/// returns how many. A PostgreSQL store drops its day partitions before the cutoff (one
/// instance of a fleet at a time: the others find the lock taken and delete 0).
pub fn prune_at(location: &Location, cutoff: SystemTime) -> Result<usize, StoreError> {
    match location {
        Location::Sqlite(path) => super::sqlite::open::prune(path, cutoff),
        Location::Postgres(url) => super::postgres::open::prune(url, cutoff),
    }
}

/// [`prune_at`] for a SQLite file.
pub fn prune_file(path: &Path, cutoff: SystemTime) -> Result<usize, StoreError> {
    super::sqlite::open::prune(path, cutoff)
}

impl Store {
    /// Opens (creating it and its folder if needed) the SQLite database and starts the writer.
    pub fn open(path: &Path, opts: WriterOptions) -> Result<Self, StoreError> {
        Self::start(
            super::sqlite::open::sink(path)?,
            path.display().to_string(),
            opts,
        )
    }

    /// Opens the store at `location` and starts the writer: a SQLite file as [`Store::open`]; a
    /// PostgreSQL database is connected to and migrated first (a fleet: several instances write
    /// to it; ids, partitions and counters are made for that).
    pub fn open_at(location: &Location, opts: WriterOptions) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open(path, opts),
            Location::Postgres(url) => {
                // A database that cannot be reached must not keep the proxy from serving: the
                // writer starts without it (`/readyz` degraded) and migrates on the first
                // connection that succeeds. Anything else (a refused login, bad TLS settings,
                // an old schema) is an error now.
                let (client, down) = match super::postgres::open::connect(url) {
                    Ok(mut c) => {
                        super::postgres::open::prepare(&mut c, url, opts.migrate)?;
                        (Some(c), None)
                    }
                    Err(e) if e.is_unreachable() => {
                        tracing::warn!(error = %e, "store unreachable at start: serving, the writer retries");
                        (None, Some(e.to_string()))
                    }
                    Err(e) => return Err(e),
                };
                let sink = super::postgres::sink::PgSink::new(url.clone(), client, opts.migrate);
                let store = Self::start(Box::new(sink), url.to_string(), opts)?;
                if let Some(e) = down {
                    store.started_unreachable(e);
                }
                Ok(store)
            }
        }
    }
}

impl IdStore {
    /// The crosswalk's store at `location`; nothing is opened until the first query.
    pub fn new(location: &Location) -> Self {
        Self {
            conn: own(location, "id-store-close"),
        }
    }
}

impl RolloutStore {
    /// A store at `location`; nothing is opened until the first query.
    pub fn new(location: &Location) -> Self {
        Self {
            conn: own(location, "rollout-store-close"),
            webhooks: Vec::new(),
        }
    }
}

impl Outbox {
    /// The deliverer's store at `location`; nothing is opened until the first query.
    pub fn new(location: &Location) -> Self {
        Self {
            conn: own(location, "outbox-close"),
        }
    }
}

/// Adds an event on its own (a command's, e.g. a failed gate run).
pub fn enqueue(
    location: &Location,
    subs: &Subscriptions,
    event: &str,
    data: &serde_json::Value,
) -> Result<(), StoreError> {
    own(location, "outbox-close").enqueue(subs, event, data)
}

/// Appends rows of a recorded rediff (one transaction).
pub fn record_rediffs(location: &Location, rows: &[RediffRow]) -> Result<(), StoreError> {
    own(location, "rediffs").record(rows)
}

/// Applies a triage change and appends it to the audit trail (one transaction). `false`: a
/// clear of a pattern that has no mark (nothing changed, nothing appended).
pub fn record_triage(
    location: &Location,
    change: &crate::triage::Change,
) -> Result<bool, StoreError> {
    TriageConn::apply(&mut *own(location, "triage"), change)
}

/// Replaces the replay set `name` with these exchanges (id, started_at as RFC 3339).
pub fn save_replay_set(
    location: &Location,
    name: &str,
    members: &[(i64, String)],
) -> Result<(), StoreError> {
    let now = crate::record::rfc3339(SystemTime::now());
    own(location, "replay sets").save(name, members, &now)
}
