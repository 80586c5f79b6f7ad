//! The rollout's control thread, one per `serve` (and `/api/rollout`, in `api.rs`): it owns the
//! store connection of the rollout and is the only writer of phase changes in the process.
//!
//! - changes (`POST /api/rollout`, a reload that changes `[rollout] phase`): put in force by the
//!   caller at once ([`Controller::set`]), then written to `rollout_events` by this thread; a
//!   store that cannot be written leaves the change in force here and says so;
//! - every `[rollout] follow`: the latest stored change is read, and put in force when it is
//!   newer than the one in force (another instance, or `shadowdiff rollout set`, made it);
//! - every `[rollout.guard] every`: the guard judges the served cohort and rolls back when a
//!   limit is crossed with confidence (`auto_rollback`), and promotes when the phase's gate has
//!   held for `hold` (`auto_promote`).
//!
//! Everything here blocks (SQLite, PostgreSQL's synchronous client): it runs on a thread of its
//! own, never on the async runtime. After a failed store read the reads back off (1 s doubling
//! to 30 s) so that a database that does not answer holds the guard up as little as it can (one
//! connection attempt, bounded by `PGCONNECT_TIMEOUT`, at a time).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;

pub mod api;

use crate::config::Config;
use crate::gate::Verdict;
use crate::rollout::{judge, Change, Event, ROLLBACK};
use crate::shadow::Shadow;
use crate::store::{Location, RolloutStore};

/// A change put in force.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub from: String,
    pub to: String,
    /// As stored; `None` when the store could not be written (`error` says why): the change
    /// is in force in this instance only.
    pub event: Option<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The gate of the phase did not pass: the verdict says which criteria failed.
    #[error("the gate of {} did not pass", .0.phase)]
    Refused(Box<Verdict>),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

/// The phase after `phase`, and the verdict of `[gate.PHASE]` over the last `since` that
/// allows moving to it. The one decision behind `rollout promote`, `POST /api/rollout` and the
/// automatic promotion.
pub fn decide_promotion(
    reader: &dyn crate::store::Reader,
    cfg: &Config,
    phase: &str,
    since: Duration,
) -> Result<(String, Verdict), PromoteError> {
    let next = cfg
        .rollout
        .next(phase)
        .map_err(PromoteError::Invalid)?
        .to_owned();
    let gate = cfg.gates.get(phase).ok_or_else(|| {
        PromoteError::Invalid(if phase == crate::rollout::ROLLBACK {
            format!(
                "the rollout is rolled back: the phase to resume is chosen by hand (shadowdiff rollout set {next} --reason \"...\"), and promotion goes on from there"
            )
        } else {
            format!("no [gate.{phase}] in the config: nothing to decide the promotion on")
        })
    })?;
    let filter = crate::report::Filter::since(since);
    let verdict = crate::gate::evaluate_with(reader, phase, gate, &filter, (&cfg.diff).into())
        .map_err(|e| PromoteError::Store(e.to_string()))?;
    if verdict.pass {
        Ok((next, verdict))
    } else {
        Err(PromoteError::Refused(Box::new(verdict)))
    }
}

enum Command {
    /// A change already in force: to be written to the store.
    Record {
        from: String,
        change: Change,
        reply: tokio::sync::oneshot::Sender<Result<Event, String>>,
    },
    Promote {
        actor: String,
        since: Duration,
        reply: tokio::sync::oneshot::Sender<Result<Applied, PromoteError>>,
    },
}

/// The handle of the control thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Controller {
    tx: mpsc::Sender<Command>,
    shadow: Arc<Shadow>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

/// How long `set` waits for its change to be written before it answers without the record
/// (the change is in force already; the control thread goes on trying to write it).
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Backoff of the store reads after a failure (a database that does not answer must not hold
/// the guard up): doubling from 1 s to this.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(30);

/// How often the learned noise fields are read again.
const NOISE_EVERY: Duration = Duration::from_secs(30);

impl Controller {
    /// Starts the control thread. The phase stored last is read (and put in force) before this
    /// returns, so the first request already follows it; a store that cannot be read then
    /// leaves the config's phase in force until it can.
    pub fn start(shadow: Arc<Shadow>, location: &Location) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut state = State {
            store: RolloutStore::new(location)
                .with_webhooks(crate::webhook::subscriptions(&shadow.config().webhooks)),
            shadow: shadow.clone(),
            passing_since: None,
            last_gate: None,
            store_warned: false,
            store_retry: None,
            backoff: Duration::from_secs(1),
        };
        std::thread::Builder::new()
            .name("rollout".into())
            .spawn(move || {
                state.follow();
                let _ = ready_tx.send(());
                state.run(&rx);
            })?;
        // Bounded: a PostgreSQL that does not answer holds the connect timeout at most.
        let _ = ready_rx.recv_timeout(Duration::from_secs(15));
        Ok(Self { tx, shadow })
    }

    /// Puts a phase in force at once (the next request follows it), then records it: the
    /// answer says whether the store has it.
    pub async fn set(&self, change: Change) -> Result<Applied, String> {
        let cfg = self.shadow.config();
        cfg.rollout.check_phase(&change.to)?;
        let rollout = &self.shadow.rollout;
        let old = rollout.set(&change.to, rollout.active().seq, &change.actor);
        rollout.publish(&cfg.rollout, Some(&old), cfg.accounts.as_ref());
        let (reply, rx) = tokio::sync::oneshot::channel();
        let mut applied = Applied {
            from: old.to_string(),
            to: change.to.clone(),
            event: None,
            error: None,
        };
        let sent = self.tx.send(Command::Record {
            from: old.to_string(),
            change,
            reply,
        });
        applied.error = match sent {
            Err(_) => Some("the rollout control thread has stopped: not recorded".into()),
            Ok(()) => match tokio::time::timeout(RECORD_WAIT, rx).await {
                Ok(Ok(Ok(ev))) => {
                    applied.event = Some(ev);
                    None
                }
                Ok(Ok(Err(e))) => Some(e),
                Ok(Err(_)) => Some("the rollout control thread has stopped: not recorded".into()),
                Err(_) => Some(format!(
                    "in force here; not recorded within {RECORD_WAIT:?} (the store is slow or down): other instances do not follow it yet"
                )),
            },
        };
        Ok(applied)
    }

    /// Promotes to the next phase when the gate of the phase in force passes over `since`.
    pub async fn promote(&self, actor: String, since: Duration) -> Result<Applied, PromoteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let stopped = || PromoteError::Store("the rollout control thread has stopped".into());
        self.tx
            .send(Command::Promote {
                actor,
                since,
                reply,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

struct State {
    store: RolloutStore,
    shadow: Arc<Shadow>,
    /// Automatic promotion: since when the gate has passed without a break.
    passing_since: Option<Instant>,
    last_gate: Option<Instant>,
    store_warned: bool,
    /// After a failed store read: not before then.
    store_retry: Option<Instant>,
    backoff: Duration,
}

impl State {
    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        let mut last_follow = Instant::now();
        let mut last_guard = Instant::now();
        let mut last_noise: Option<Instant> = None;
        loop {
            let cfg = self.shadow.config();
            let follow = cfg.rollout.follow;
            let every = cfg.rollout.guard.every;
            let next = (last_follow + follow).min(last_guard + every);
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(Command::Record {
                    from,
                    change,
                    reply,
                }) => {
                    let _ = reply.send(self.record(&from, &change));
                }
                Ok(Command::Promote {
                    actor,
                    since,
                    reply,
                }) => {
                    let _ = reply.send(self.promote(&cfg, actor, since));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if last_follow.elapsed() >= follow {
                self.follow();
                last_follow = Instant::now();
            }
            if self.store_retry.is_none() && last_noise.is_none_or(|t| t.elapsed() >= NOISE_EVERY) {
                if let Ok(n) = self.store.noise(cfg.diff.noise.min_count) {
                    self.shadow.rollout.window.set_noise(n);
                }
                last_noise = Some(Instant::now());
            }
            if last_guard.elapsed() >= every {
                self.guard(&cfg);
                last_guard = Instant::now();
            }
        }
    }

    /// Puts the latest stored change in force when it is newer than the one in force.
    fn follow(&mut self) {
        if self.store_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let cfg = self.shadow.config();
        let latest = self.store.latest();
        if latest.is_ok() {
            self.store_retry = None;
            self.backoff = Duration::from_secs(1);
        }
        match latest {
            Ok(Some(ev)) => {
                self.store_warned = false;
                let rollout = &self.shadow.rollout;
                if ev.id <= rollout.active().seq {
                    return;
                }
                if !cfg.rollout.has(&ev.to) {
                    tracing::error!(phase = %ev.to, id = ev.id, "the store's rollout phase is not in this config: staying in the phase in force");
                    // Not again for this event.
                    let a = rollout.active();
                    rollout.set(&a.phase, ev.id, &a.by);
                    return;
                }
                let old = rollout.set(&ev.to, ev.id, &ev.actor);
                if *old != *ev.to {
                    tracing::warn!(from = %old, to = %ev.to, by = %ev.actor, "following the store's rollout phase");
                }
                rollout.publish(&cfg.rollout, Some(&old), cfg.accounts.as_ref());
            }
            Ok(None) => {
                self.store_warned = false;
            }
            Err(e) => {
                if !self.store_warned {
                    tracing::warn!(error = %e, "rollout: the store cannot be read; the phase in force stays");
                    self.store_warned = true;
                }
                self.store_retry = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_STORE_BACKOFF);
            }
        }
    }

    /// Writes a change already in force; stamps the phase in force with its id when it is
    /// still that change's.
    fn record(&mut self, from: &str, change: &Change) -> Result<Event, String> {
        match self.store.append(Some(from), change) {
            Ok(ev) => {
                let rollout = &self.shadow.rollout;
                let active = rollout.active();
                if *active.phase == *change.to && active.seq < ev.id {
                    rollout.set(&change.to, ev.id, &change.actor);
                }
                Ok(ev)
            }
            Err(e) => {
                tracing::error!(error = %e, to = %change.to, "rollout change in force here, but not stored: other instances do not follow it");
                Err(e.to_string())
            }
        }
    }

    /// Puts a change in force, then records it.
    fn apply(&mut self, cfg: &Config, change: Change) -> Result<Applied, String> {
        cfg.rollout.check_phase(&change.to)?;
        let rollout = &self.shadow.rollout;
        // In force first: a rollback must not wait for the store.
        let old = rollout.set(&change.to, rollout.active().seq, &change.actor);
        rollout.publish(&cfg.rollout, Some(&old), cfg.accounts.as_ref());
        let recorded = self.record(&old, &change);
        Ok(Applied {
            from: old.to_string(),
            to: change.to,
            event: recorded.as_ref().ok().cloned(),
            error: recorded.err(),
        })
    }

    fn promote(
        &mut self,
        cfg: &Config,
        actor: String,
        since: Duration,
    ) -> Result<Applied, PromoteError> {
        let phase = self.shadow.rollout.active().phase.clone();
        let reader = crate::store::open_read_only_at(&cfg.store.location(), Duration::from_secs(5))
            .map_err(|e| PromoteError::Store(e.to_string()))?;
        let (next, verdict) = decide_promotion(&*reader, cfg, &phase, since)?;
        drop(reader);
        self.apply(
            cfg,
            Change {
                to: next,
                actor,
                reason: Some(format!("promoted: the gate of {phase} passed")),
                evidence: serde_json::to_value(&verdict).ok(),
            },
        )
        .map_err(PromoteError::Invalid)
    }

    /// The guard: automatic rollback, automatic promotion.
    fn guard(&mut self, cfg: &Config) {
        let g = &cfg.rollout.guard;
        let rollout = self.shadow.rollout.clone();
        let active = rollout.active();
        rollout
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if &*active.phase == ROLLBACK {
            self.passing_since = None;
            return;
        }
        let report = judge(&rollout.window.tally(g.window), g);
        if g.auto_rollback && report.breached() {
            // Another instance may have rolled back already: follow it rather than write twice.
            self.follow();
            if &*rollout.active().phase == ROLLBACK {
                return;
            }
            let reason = report.reason();
            tracing::error!(%reason, "rollout guard: rolling back");
            let _ = self.apply(
                cfg,
                Change {
                    to: ROLLBACK.into(),
                    actor: "guard".into(),
                    reason: Some(format!("automatic rollback: {reason}")),
                    evidence: Some(json!({ "guard": report })),
                },
            );
            self.passing_since = None;
            return;
        }
        if !g.auto_promote {
            return;
        }
        // The gate reads the store (a report over `promote_window`): about ten times per `hold`,
        // at most every 5 minutes, at least every `every`.
        let gate_every = (g.hold / 10).clamp(g.every, Duration::from_secs(300).max(g.every));
        if self.last_gate.is_some_and(|t| t.elapsed() < gate_every) {
            return;
        }
        self.last_gate = Some(Instant::now());
        let Ok(reader) =
            crate::store::open_read_only_at(&cfg.store.location(), Duration::from_secs(5))
        else {
            return;
        };
        let decided = decide_promotion(&*reader, cfg, &active.phase, g.promote_window);
        drop(reader);
        match decided {
            Ok((next, verdict)) => {
                let since = *self.passing_since.get_or_insert_with(Instant::now);
                let phase_age = SystemTime::now()
                    .duration_since(active.since)
                    .unwrap_or_default();
                if since.elapsed() >= g.hold && phase_age >= g.hold && !report.breached() {
                    tracing::warn!(from = %active.phase, to = %next, "rollout guard: promoting");
                    let _ = self.apply(
                        cfg,
                        Change {
                            to: next,
                            actor: "guard".into(),
                            reason: Some(format!(
                                "automatic promotion: the gate of {} held for {}",
                                active.phase,
                                humantime::format_duration(g.hold)
                            )),
                            evidence: serde_json::to_value(&verdict).ok(),
                        },
                    );
                    self.passing_since = None;
                }
            }
            Err(_) => self.passing_since = None,
        }
    }
}
