//! A connection of its own to the store, for the few readers and writers outside the writer
//! thread (the rollout's events, the id crosswalk's refresh): opened (and migrated) when first
//! needed, and again after a failure. It blocks: use it off the async runtime's threads.

use rusqlite::Connection;

use super::location::{Location, PgUrl};
use super::StoreError;

pub(super) struct OwnConn {
    inner: Inner,
    /// The name of the thread a PostgreSQL client is dropped on.
    closer: &'static str,
}

enum Inner {
    Sqlite(std::path::PathBuf, Option<Connection>),
    Postgres(PgUrl, Option<Box<postgres::Client>>),
}

/// A PostgreSQL client closes by blocking on a runtime of its own: never on a thread of an
/// async runtime.
fn close(c: Box<postgres::Client>, closer: &'static str) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name(closer.into())
            .spawn(move || drop(c));
    } else {
        drop(c);
    }
}

impl Drop for OwnConn {
    fn drop(&mut self) {
        if let Inner::Postgres(_, client) = &mut self.inner {
            if let Some(c) = client.take() {
                close(c, self.closer);
            }
        }
    }
}

impl OwnConn {
    pub(super) fn new(location: &Location, closer: &'static str) -> Self {
        Self {
            inner: match location {
                Location::Sqlite(p) => Inner::Sqlite(p.clone(), None),
                Location::Postgres(u) => Inner::Postgres(u.clone(), None),
            },
            closer,
        }
    }

    /// Runs `sqlite` or `pg` on the connection (opened, and migrated, when needed); a failed
    /// connection is dropped so the next call opens a new one.
    pub(super) fn with<T>(
        &mut self,
        sqlite: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
        pg: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        match &mut self.inner {
            Inner::Sqlite(path, conn) => {
                if conn.is_none() {
                    let c = super::schema::open(path)?;
                    let _ = c.busy_timeout(std::time::Duration::from_secs(5));
                    *conn = Some(c);
                }
                let c = conn.as_mut().expect("opened above");
                sqlite(c).map_err(|error| {
                    *conn = None;
                    StoreError::sqlite(path.display().to_string(), error)
                })
            }
            Inner::Postgres(url, client) => {
                if client.is_none() {
                    let mut c = super::pg_conn::connect(url)?;
                    super::migrate::apply_postgres(&mut c)
                        .map_err(|error| StoreError::postgres(url.to_string(), error))?;
                    *client = Some(Box::new(c));
                }
                let c = client.as_mut().expect("connected above");
                pg(c).map_err(|error| {
                    if let Some(c) = client.take() {
                        close(c, self.closer);
                    }
                    StoreError::postgres(url.to_string(), error)
                })
            }
        }
    }
}

/// Runs one transaction on a connection of its own (opened and migrated as [`OwnConn`] does; a
/// PostgreSQL one closed off the async threads): the one-shot writes of commands and of the admin
/// API (rediffs, triage marks, replay sets).
pub(super) fn in_transaction<T>(
    location: &Location,
    closer: &'static str,
    sqlite: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    pg: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
) -> Result<T, StoreError> {
    OwnConn::new(location, closer).with(
        |c| {
            let tx = c.transaction()?;
            let v = sqlite(&tx)?;
            tx.commit()?;
            Ok(v)
        },
        |c| {
            let mut tx = c.transaction()?;
            let v = pg(&mut tx)?;
            tx.commit()?;
            Ok(v)
        },
    )
}
