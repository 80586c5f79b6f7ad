//! Every instance reads the pairs its fleet stored ([`crate::store::IdStore`]): all of them at
//! start (so a restart keeps what was learned), then the new ones every second, on a thread of
//! its own. A stored pair is the fleet's authority: it replaces a contradicting one in memory.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::Crosswalk;
use crate::store::{IdStore, Location};

/// How often the store is read for pairs other instances learned.
pub const EVERY: Duration = Duration::from_secs(1);

/// Pairs read per query.
const PAGE: usize = 10_000;

/// The follower thread; stops when dropped.
pub struct Follower {
    _stop: mpsc::Sender<()>,
}

/// Loads every stored pair into `crosswalk`, then follows the store on a thread. `max_pairs`
/// per kind (`[ids.KIND] max_pairs`).
pub fn start(
    crosswalk: Arc<Crosswalk>,
    location: &Location,
    max_pairs: Vec<(String, usize)>,
) -> std::io::Result<Follower> {
    let (stop, rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut store = IdStore::new(location);
    std::thread::Builder::new()
        .name("id-crosswalk".into())
        .spawn(move || {
            let max = |kind: &str| {
                max_pairs
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(super::DEFAULT_MAX_PAIRS, |(_, n)| *n)
            };
            let mut seq = 0;
            let mut warned = false;
            let mut ready = Some(ready_tx);
            loop {
                loop {
                    match store.since(seq, PAGE) {
                        Ok(rows) => {
                            warned = false;
                            let n = rows.len();
                            for (s, pair) in rows {
                                seq = s;
                                crosswalk.adopt(&pair, max(&pair.kind));
                            }
                            if n < PAGE {
                                break;
                            }
                        }
                        Err(e) => {
                            if !warned {
                                tracing::warn!(error = %e, "id crosswalk: cannot read the stored pairs (retrying)");
                                warned = true;
                            }
                            break;
                        }
                    }
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                match rx.recv_timeout(EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })?;
    // Bounded: a PostgreSQL that does not answer holds the connect timeout at most.
    let _ = ready_rx.recv_timeout(Duration::from_secs(15));
    Ok(Follower { _stop: stop })
}
