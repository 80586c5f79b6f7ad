//! A connection of its own to a SQLite store, for the few readers and writers outside the
//! writer thread (the rollout's events, the id crosswalk's refresh, the outbox's deliverer, the
//! one-shot writes of commands): opened (and migrated) when first needed, and again after a
//! failure. It blocks: use it off the async runtime's threads.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::store::StoreError;

pub(in crate::store) struct Own {
    path: PathBuf,
    conn: Option<Connection>,
}

impl Own {
    /// Nothing is opened until the first query.
    pub(in crate::store) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            conn: None,
        }
    }

    /// Runs `f` on the connection (opened, and migrated, when needed); a failed connection is
    /// dropped so the next call opens a new one.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let c = super::open::open(&self.path)?;
            let _ = c.busy_timeout(std::time::Duration::from_secs(5));
            self.conn = Some(c);
        }
        let c = self.conn.as_mut().expect("opened above");
        f(c).map_err(|error| {
            self.conn = None;
            StoreError::sqlite(self.path.display().to_string(), error)
        })
    }

    /// Runs `f` in one transaction.
    pub(super) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })
    }
}
