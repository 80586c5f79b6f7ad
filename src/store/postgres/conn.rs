//! A connection of its own to a PostgreSQL store, for the few readers and writers outside the
//! writer thread (the rollout's events, the id crosswalk's refresh, the outbox's deliverer, the
//! one-shot writes of commands): connected (and migrated) when first needed, and again after a
//! failure. It blocks: use it off the async runtime's threads.

use postgres::Client;

use crate::store::location::PgUrl;
use crate::store::StoreError;

pub(in crate::store) struct Own {
    url: PgUrl,
    client: Option<Box<Client>>,
    /// The name of the thread the client is dropped on.
    closer: &'static str,
}

impl Drop for Own {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            close(c, self.closer);
        }
    }
}

impl Own {
    /// Nothing is connected until the first query.
    pub(in crate::store) fn new(url: &PgUrl, closer: &'static str) -> Self {
        Self {
            url: url.clone(),
            client: None,
            closer,
        }
    }

    /// Runs `f` on the client (connected, and the store migrated, when needed); a failed
    /// client is closed so the next call connects again.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.client.is_none() {
            self.client = Some(Box::new(super::open::open(&self.url)?));
        }
        let c = self.client.as_mut().expect("connected above");
        f(c).map_err(|error| {
            if let Some(c) = self.client.take() {
                close(c, self.closer);
            }
            StoreError::postgres(self.url.to_string(), error)
        })
    }

    /// Runs `f` in one transaction.
    pub(super) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let v = f(&mut tx)?;
            tx.commit()?;
            Ok(v)
        })
    }
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
