//! PostgreSQL, the fleet's store: every query and statement this engine runs, behind the
//! store's engine-neutral seams (the writer's `Sink`, the `Reader`, each concept's connection
//! trait). Chosen once, in `store/open.rs`.
//!
//! - `connect.rs`: the URL, the environment, TLS and the password file, into a client;
//! - `migrate.rs`: the schema's steps; `sink.rs`: the writer's batches (`COPY`, partitions);
//! - `reader.rs`: the reports' queries; `rollup.rs`: the hourly roll-ups;
//! - one file per concept for its rows (`health`, `ids`, `outbox`, `rollout`, `rediffs`,
//!   `replay_sets`, `triage`), and `conn.rs`, their connection of its own.

mod conn;
mod connect;
mod health;
mod ids;
mod migrate;
mod outbox;
mod reader;
mod rediffs;
mod replay_sets;
mod rollout;
mod rollup;
mod sink;
mod triage;

use postgres::Client;

use super::location::PgUrl;
use super::migrate::latest;
use super::rollup::Rebuild;
use super::StoreError;

pub(super) use conn::Own;
pub(super) use reader::PgReader;
pub(super) use sink::PgSink;

/// A timestamp column as the RFC 3339 text the store's rows carry (milliseconds, UTC).
fn ts(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// A client closes by blocking on a runtime of its own: never on a thread of an async runtime
/// (it is dropped on a thread named `closer` there).
fn close(c: Box<Client>, closer: &'static str) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name(closer.into())
            .spawn(move || drop(c));
    } else {
        drop(c);
    }
}

/// Connects to the store and applies its pending migrations.
pub(super) fn open(url: &PgUrl) -> Result<Client, StoreError> {
    let mut client = connect::connect(url)?;
    migrate::apply(&mut client).map_err(|e| StoreError::postgres(url.to_string(), e))?;
    Ok(client)
}

/// Connects without migrating (a reader: the writer migrated).
pub(super) fn connect(url: &PgUrl) -> Result<Client, StoreError> {
    connect::connect(url)
}

/// `shadowdiff migrate`: the versions applied now, the version reached, and what became of
/// the roll-ups.
pub(super) fn migrate(url: &PgUrl) -> Result<(Vec<i64>, i64, Rebuild), StoreError> {
    let err = |source| StoreError::postgres(url.to_string(), source);
    let mut client = connect::connect(url)?;
    let applied = migrate::apply(&mut client).map_err(err)?;
    let version = migrate::versions(&mut client)
        .map_err(err)?
        .last()
        .copied()
        .unwrap_or(0);
    let rollups = rollup::rebuild(&mut client).map_err(err)?;
    Ok((applied, version, rollups))
}

/// Drops the day partitions before `cutoff` (one instance of a fleet at a time: the others
/// find the lock taken and delete 0).
pub(super) fn prune(url: &PgUrl, cutoff: std::time::SystemTime) -> Result<usize, StoreError> {
    let err = |error| StoreError::postgres(url.to_string(), error);
    let mut client = open(url)?;
    sink::prune(&mut client, cutoff).map_err(err)
}

/// The schema's newest step was applied (or, with `migrate`, is applied now).
pub(super) fn prepare(client: &mut Client, url: &PgUrl, migrate: bool) -> Result<(), StoreError> {
    let err = |error| StoreError::postgres(url.to_string(), error);
    if migrate {
        migrate::apply(client).map_err(err)?;
        return Ok(());
    }
    let have = migrate::versions(client)
        .map_err(err)?
        .last()
        .copied()
        .unwrap_or(0);
    if have < latest() {
        return Err(StoreError::PostgresSetup {
            url: url.to_string(),
            message: format!(
                "the schema is at version {have} and this build needs {}: run `shadowdiff \
                 migrate` (or set [store] migrate = true)",
                latest()
            ),
        });
    }
    Ok(())
}
