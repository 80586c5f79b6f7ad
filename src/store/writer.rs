//! The writer: one thread fed by a bounded channel.
//!
//! The proxy never waits for the disk: `StoreHandle::record` is a `try_send`, and a full queue
//! counts the exchange as dropped. The writer batches whatever is queued (up to
//! [`BATCH`] exchanges) into one transaction, and prunes expired exchanges periodically.
//! The database runs in WAL mode with `synchronous=NORMAL`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StoreError;
pub use crate::record::MAX_DIFF_ROWS;
use crate::record::{rfc3339, NoiseSample, Record};

/// Exchanges written per transaction at most. Not configurable: it bounds how long one commit
/// holds the write lock against readers such as `report`.
const BATCH: usize = 1000;
/// How long the writer waits for more records after the first of a batch: one commit (and one
/// wake-up of the writer) per window instead of one per record. Records reach the database
/// within about this delay; a flush or stop that comes in the window waits for its end.
const BATCH_WINDOW: Duration = Duration::from_millis(25);
/// How often the writer prunes expired exchanges while serving.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

enum Msg {
    /// A record, and its bytes in the memory budget (given back once it is written).
    Record(Box<Record>, crate::budget::Held),
    Noise(NoiseSample),
    Flush(SyncSender<()>),
    /// Write what came before, then stop (other handles may still exist).
    Stop,
}

/// Counters of the writer, shared with the proxy.
#[derive(Debug, Default)]
pub struct StoreStats {
    written: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    /// Records sent and not yet taken by the writer.
    queued: AtomicU64,
    /// Why the last write failed, until a write succeeds again: `/readyz` says so.
    last_error: Mutex<Option<String>>,
    /// Set by [`Store::close`]: a store that cannot be reached is no longer retried.
    closing: std::sync::atomic::AtomicBool,
    /// The current failure is a store that cannot be reached (a fleet's database down), not a
    /// store that refuses writes.
    unreachable: std::sync::atomic::AtomicBool,
    /// When (seconds since the epoch) a full queue was last logged: at most once per
    /// [`DROP_LOG_EVERY`], with the count so far.
    drop_logged_at: AtomicU64,
    /// What the exchanges the full queue dropped add to the roll-ups, until the writer adds it
    /// with its next batch: a dropped exchange loses its row, not its count.
    /// With what they may hold, in bytes (an estimate from above).
    tally: Mutex<(super::rollup::Deltas, usize)>,
    /// Dropped exchanges counted in the roll-ups all the same.
    counted: AtomicU64,
}

/// The bytes the dropped exchanges' roll-ups may hold while the writer is behind (estimated per
/// exchange from above: a hostile candidate's long field patterns weigh what they cost); past
/// it a dropped exchange is not counted either, so memory stays bounded however long it lags.
const TALLY_BYTES: usize = 64 << 20;

/// How often a full queue is logged (every drop is counted in `/metrics`).
const DROP_LOG_EVERY: u64 = 10;

impl StoreStats {
    /// Exchanges committed.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Exchanges not stored because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Of [`dropped`](Self::dropped), those counted in the roll-ups all the same (no row).
    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }

    /// Exchanges lost because the store failed to write them.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// `Some(reason)` while the store cannot be written.
    pub fn failure(&self) -> Option<String> {
        self.last_error().clone()
    }

    /// Whether the current failure is a store that cannot be reached (then `/readyz` reports
    /// the store as degraded but keeps the instance in the load balancer: every instance of a
    /// fleet shares that database, and taking them all out would cut the callers off).
    pub fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed) && self.last_error().is_some()
    }

    /// Sets (or, with `None`, clears) the failure; returns the one it replaces.
    fn set_failure(&self, e: Option<String>) -> Option<String> {
        if e.is_none() {
            self.unreachable.store(false, Ordering::Relaxed);
        }
        std::mem::replace(&mut *self.last_error(), e)
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producer side of the store: cheap to clone, never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    tx: SyncSender<Msg>,
    stats: Arc<StoreStats>,
}

impl StoreHandle {
    /// Queues an exchange; when the queue is full it is dropped and counted.
    pub fn record(&self, r: Record) {
        self.record_holding(r, crate::budget::Held::default());
    }

    /// [`record`](Self::record), keeping `held` (the record's bytes in the memory budget) until
    /// the record is written or dropped.
    pub fn record_holding(&self, r: Record, held: crate::budget::Held) {
        match self.tx.try_send(Msg::Record(Box::new(r), held)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if let TrySendError::Full(Msg::Record(r, _)) = e {
                    self.tally(&r);
                }
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::telemetry::dropped("store_queue_full");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let last = self.stats.drop_logged_at.load(Ordering::Relaxed);
                if now >= last + DROP_LOG_EVERY
                    && self
                        .stats
                        .drop_logged_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        dropped,
                        "store queue full: exchanges are being dropped (the writer is behind or the store unreachable)"
                    );
                }
            }
        }
    }

    /// Adds a record the full queue dropped to the roll-ups kept aside, within
    /// [`TALLY_BYTES`]. This may run on a caller's task: the lock is held for one record's
    /// few map entries (or the writer's swap of the whole tally), never for I/O.
    fn tally(&self, r: &Record) {
        let mut tally = self
            .stats
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // What the record can add: fixed keys, and each pattern in a field key and a signature.
        let cost = 512
            + r.counts()
                .iter()
                .map(|c| 2 * c.field.len() + 64)
                .sum::<usize>();
        if tally.1 + cost > TALLY_BYTES {
            return;
        }
        tally.1 += cost;
        tally.0.add_record(r, 0, &rfc3339(r.meta.started_at));
        self.stats.counted.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a noise sample; dropped (and counted) when the queue is full.
    pub fn noise(&self, n: NoiseSample) {
        if self.tx.try_send(Msg::Noise(n)).is_err() {
            crate::telemetry::dropped("store_queue_full");
        }
    }

    /// Waits until everything queued before this call is committed. Blocks the calling thread.
    pub fn flush_blocking(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Like [`flush_blocking`](Self::flush_blocking), from async code.
    pub async fn flush(&self) {
        let h = self.clone();
        let _ = tokio::task::spawn_blocking(move || h.flush_blocking()).await;
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }
}

/// The writer thread and its handle.
pub struct Store {
    handle: StoreHandle,
    thread: JoinHandle<()>,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub queue: usize,
    pub priority: crate::background::Priority,
    pub retention: Duration,
    pub max_value_len: usize,
    /// Differences stored per exchange, field pattern and kind.
    pub examples_per_field: usize,
    /// Which exchanges keep a row (`[store] exchanges`; the roll-ups count every one).
    pub exchanges: super::Rows,
    /// `[store] rows_per_hour`: rows kept per hour and kind before they thin out (`sampled`).
    pub rows_per_hour: u64,
    /// PostgreSQL: apply the migrations at start (`[store] migrate`), or only check them.
    pub migrate: bool,
    /// Candidate 401/403 in a row (legacy succeeding) that put an account in `needs_reauth`
    /// (`[accounts] reauth_after`).
    pub reauth_after: u64,
    /// The webhook endpoints and the events each wants (`[[webhooks]]`): an account's change of
    /// health is queued for them in the same transaction.
    pub webhooks: super::Subscriptions,
    /// `[ids.KIND] max_pairs` per kind: pairs (and unpaired ids) kept per account and kind.
    pub id_max_pairs: Vec<(String, usize)>,
}

impl WriterOptions {
    /// Pairs kept per account of a kind.
    pub(super) fn max_pairs(&self, kind: &str) -> usize {
        self.id_max_pairs
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(usize::MAX, |(_, n)| *n)
    }
}

impl Store {
    /// The store could not be reached when the writer started (`error`): `/readyz` says so
    /// until a write succeeds.
    pub(super) fn started_unreachable(&self, error: String) {
        let stats = &self.handle.stats;
        stats.unreachable.store(true, Ordering::Relaxed);
        stats.set_failure(Some(error));
    }

    /// Starts the writer thread on `sink`; `shown` names the store in logs (a path, or a URL
    /// with its password masked).
    pub(super) fn start(
        sink: Box<dyn Sink>,
        shown: String,
        opts: WriterOptions,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::sync_channel(opts.queue);
        let stats = Arc::new(StoreStats::default());
        let st = stats.clone();
        let p = shown.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                crate::background::lower_current_thread(opts.priority);
                writer(sink, &rx, &st, &opts, &p);
            })
            .map_err(|source| StoreError::Io {
                path: shown,
                error: source,
            })?;
        Ok(Self {
            handle: StoreHandle { tx, stats },
            thread,
        })
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Writes everything queued and stops the writer. Blocks the calling thread. Records sent
    /// through remaining handles afterwards are counted as dropped.
    pub fn close(self) -> Arc<StoreStats> {
        let stats = self.handle.stats.clone();
        // A store that is down is not waited for: what is queued is counted as lost.
        stats.closing.store(true, Ordering::Relaxed);
        let _ = self.handle.tx.send(Msg::Stop);
        drop(self.handle);
        let _ = self.thread.join();
        stats
    }
}

/// A write that failed.
#[derive(Debug)]
pub(super) struct WriteError {
    pub message: String,
    /// The store could not be reached (a connection refused or lost): the same write is tried
    /// again after a pause, while the queue holds what arrives meanwhile.
    pub unreachable: bool,
}

/// What the writer thread writes to: one engine's connection.
pub(super) trait Sink: Send {
    /// Writes a batch of exchanges in one transaction: every one into the roll-ups, and a row
    /// for those `kept` says (one flag per exchange); `extra` (the dropped exchanges' counts)
    /// into the roll-ups too.
    fn write_batch(
        &mut self,
        batch: &[Box<Record>],
        kept: &[bool],
        extra: &super::rollup::Deltas,
        opts: &WriterOptions,
    ) -> Result<(), WriteError>;
    /// Adds noise samples to their counters.
    fn write_noise(&mut self, samples: &[NoiseSample]) -> Result<(), WriteError>;
    /// Deletes what is older than `cutoff`; returns the exchanges deleted.
    fn prune(&mut self, cutoff: std::time::SystemTime) -> Result<usize, WriteError>;
    /// The writer stops.
    fn close(&mut self) {}
}

/// The longest pause between two attempts at a store that cannot be reached.
const RETRY_MAX: Duration = Duration::from_secs(5);

fn writer(
    mut sink: Box<dyn Sink>,
    rx: &mpsc::Receiver<Msg>,
    stats: &StoreStats,
    opts: &WriterOptions,
    path: &str,
) {
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    let mut keeper = super::keep::Keeper::new(opts.exchanges, opts.rows_per_hour);
    let mut kept: Vec<bool> = Vec::with_capacity(BATCH);
    let mut batch: Vec<Box<Record>> = Vec::with_capacity(BATCH);
    let mut holds: Vec<crate::budget::Held> = Vec::new();
    let mut noise: Vec<NoiseSample> = Vec::new();
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    loop {
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match sink.prune(crate::record::ago(opts.retention)) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned expired exchanges"),
                Err(e) => tracing::warn!(error = %e.message, "prune failed"),
            }
        }
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Gather a batch: up to BATCH records, or what arrives within BATCH_WINDOW of the first;
        // a flush or stop request ends the batch.
        let window_end = Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        let mut stop = false;
        while let Some(m) = next {
            match m {
                Msg::Record(r, held) => {
                    batch.push(r);
                    holds.push(held);
                }
                Msg::Noise(n) => noise.push(n),
                Msg::Flush(done) => flushes.push(done),
                Msg::Stop => stop = true,
            }
            if stop || !flushes.is_empty() || batch.len() >= BATCH {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::TryRecvError::Disconnected) => None,
                // Nothing queued: the rest of the window is slept out once and what came in
                // meanwhile taken then. Waiting on the channel instead would wake this thread
                // (and make each sender's `try_send` a wake-up call) once per record.
                Err(mpsc::TryRecvError::Empty) => {
                    let left = window_end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        std::thread::sleep(left);
                        rx.try_recv().ok()
                    }
                }
            };
        }
        // What the full queue dropped meanwhile goes into the roll-ups with this batch.
        let (extra, _) = std::mem::take(
            &mut *stats
                .tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !batch.is_empty() || extra.keys() > 0 {
            let n = batch.len() as u64;
            let depth = stats
                .queued
                .fetch_sub(n, Ordering::Relaxed)
                .saturating_sub(n);
            crate::telemetry::queue_depth(depth);
            kept.clear();
            kept.extend(
                batch
                    .iter()
                    .map(|r| keeper.keep(r, &crate::record::hour(r.meta.started_at))),
            );
            let t0 = Instant::now();
            let res = write_retrying(&mut *sink, &batch, &kept, &extra, opts, stats, path);
            crate::telemetry::store_write(t0.elapsed().as_secs_f64());
            match res {
                Ok(()) => {
                    stats.written.fetch_add(n, Ordering::Relaxed);
                    if stats.set_failure(None).is_some() {
                        tracing::info!(path, "store writes succeed again");
                    }
                }
                Err(e) => {
                    let lost = stats.lost.fetch_add(n, Ordering::Relaxed) + n;
                    crate::telemetry::store_lost(n);
                    tracing::error!(error = %e.message, path, lost_in_batch = n, lost_total = lost, "store write failed: exchanges lost");
                    stats.set_failure(Some(e.message));
                }
            };
            batch.clear();
            holds.clear();
        }
        if !noise.is_empty() {
            if let Err(e) = sink.write_noise(&noise) {
                tracing::error!(error = %e.message, path, "store write failed (noise samples)");
                crate::telemetry::dropped("store_write_failed");
            }
            noise.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if stop {
            break;
        }
    }
    sink.close();
}

/// Writes a batch; a store that cannot be reached is tried again, with a pause growing to
/// [`RETRY_MAX`] (with jitter, so a fleet does not reconnect in step), until it can be or the
/// store is closing. Meanwhile the queue fills, and what does not fit is dropped and counted.
fn write_retrying(
    sink: &mut dyn Sink,
    batch: &[Box<Record>],
    kept: &[bool],
    extra: &super::rollup::Deltas,
    opts: &WriterOptions,
    stats: &StoreStats,
    path: &str,
) -> Result<(), WriteError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match sink.write_batch(batch, kept, extra, opts) {
            Err(e) if e.unreachable && !stats.closing.load(Ordering::Relaxed) => {
                stats.unreachable.store(true, Ordering::Relaxed);
                if stats.set_failure(Some(e.message.clone())).is_none() {
                    tracing::error!(error = %e.message, path, "store unreachable: holding the batch, retrying");
                }
                let jitter = crate::record::random_u64() % (pause.as_millis() as u64 / 2 + 1);
                std::thread::sleep(pause + Duration::from_millis(jitter));
                pause = (pause * 2).min(RETRY_MAX);
            }
            done => return done,
        }
    }
}

/// The webhook event of a change of health.
pub(super) fn health_event(c: &super::HealthChange) -> &'static str {
    if c.to == super::NEEDS_REAUTH {
        "account.needs_reauth"
    } else {
        "account.recovered"
    }
}

/// Its data.
pub(super) fn health_data(c: &super::HealthChange) -> serde_json::Value {
    serde_json::json!({
        "account": c.account,
        "from": c.from,
        "to": c.to,
        "since": c.at,
        "last_error": c.last_error,
    })
}

/// After a committed batch: the changes of account health, logged and counted.
pub(super) fn health_changed(changes: &[super::HealthChange]) {
    for c in changes {
        tracing::warn!(
            account = %c.account,
            from = %c.from,
            to = %c.to,
            last_error = c.last_error.as_deref().unwrap_or(""),
            "account health changed"
        );
        crate::telemetry::account_health_change(&c.to);
    }
}

/// An exchange for the store's tests: a `diff` of one changed field, its legacy value long.
#[cfg(test)]
pub(crate) fn test_record(at: std::time::SystemTime) -> Record {
    Record {
        meta: crate::record::Meta {
            started_at: at,
            request_id: "r1".into(),
            route: Some("directory".into()),
            method: "GET".into(),
            path: "/d".into(),
            account: None,
            serving: Default::default(),
        },
        legacy_status: Some(200),
        candidate_status: Some(200),
        legacy_ms: Some(1.5),
        candidate_ms: Some(2.5),
        outcome: crate::record::Outcome::Diff,
        reason: None,
        diff_count: 1,
        diffs: std::sync::Arc::new(vec![crate::diff::Difference {
            pointer: "/a".into(),
            field: "/a".into(),
            kind: crate::diff::Kind::Changed,
            legacy: Some(serde_json::json!("x".repeat(100))),
            candidate: Some(serde_json::json!(2)),
            candidate_pointer: None,
        }]),
        present: std::sync::Arc::default(),
        bodies: vec![],
        mapping_version: None,
        field_counts: None,
        ids: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let h = StoreHandle {
            tx,
            stats: Arc::default(),
        };
        h.record(test_record(SystemTime::now()));
        h.record(test_record(SystemTime::now()));
        assert_eq!(h.stats().dropped(), 1);
    }
}
