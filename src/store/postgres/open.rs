//! Opening a PostgreSQL store: connected (see `connect.rs`), migrated or checked, and the
//! one-shot commands that open it (`migrate`, `prune`).

use postgres::Client;

use super::{connect, migrate, partitions, rollup};
use crate::store::location::PgUrl;
use crate::store::migrate::latest;
use crate::store::rollup::Rebuild;
use crate::store::StoreError;

/// Connects to the store and applies its pending migrations.
pub(in crate::store) fn open(url: &PgUrl) -> Result<Client, StoreError> {
    let mut client = connect::connect(url)?;
    migrate::apply(&mut client).map_err(|e| StoreError::postgres(url.to_string(), e))?;
    Ok(client)
}

/// Connects without migrating (a reader: the writer migrated).
pub(in crate::store) fn connect(url: &PgUrl) -> Result<Client, StoreError> {
    connect::connect(url)
}

/// `shadowdiff migrate`: the versions applied now, the version reached, and what became of
/// the roll-ups.
pub(in crate::store) fn migrate(url: &PgUrl) -> Result<(Vec<i64>, i64, Rebuild), StoreError> {
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
pub(in crate::store) fn prune(
    url: &PgUrl,
    cutoff: std::time::SystemTime,
) -> Result<usize, StoreError> {
    let err = |error| StoreError::postgres(url.to_string(), error);
    let mut client = open(url)?;
    partitions::prune(&mut client, cutoff).map_err(err)
}

/// The schema's newest step was applied (or, with `migrate`, is applied now).
pub(in crate::store) fn prepare(
    client: &mut Client,
    url: &PgUrl,
    migrate: bool,
) -> Result<(), StoreError> {
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
