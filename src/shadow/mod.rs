//! The shadow side: which requests are mirrored, the candidate call, and the comparison, all off
//! the caller's path.
//!
//! For each request the proxy asks [`Shadow::decide`]. A mirrored request gets its candidate call
//! spawned at once (in parallel with legacy, holding a slot of `max_in_flight`), and a comparison
//! task that waits for the legacy copy (from the tee) and the candidate's answer, then compares
//! and hands the record to the store. Nothing here can delay, fail or change the caller's response.

mod candidate;
pub mod capture;
pub mod compare;
mod fanout;
pub mod memo;
mod noise;
pub mod sample;
mod walk;

pub use candidate::retry_after;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::budget::{Held, MemoryBudget};
use crate::config::{self, Config, Unmatched};
use crate::diff;
use crate::mapping::runner::Runner;
use crate::record::{RouteKey, SkipReason};
use crate::store::StoreHandle;
use crate::translate::{self, CandidateTarget, Context};
use crate::upstream::{self, HttpClient};
use capture::Captured;
use compare::{Candidate, CandidateBody, Legacy, Meta};

/// Bodies at least this large are compared on the blocking pool, not on a runtime worker.
const BLOCKING_COMPARE_BYTES: usize = 256 << 10;

/// What to do with one request.
pub enum Decision {
    /// Not eligible (a write without opt-in, an unmatched request with `unmatched = "skip"`,
    /// or sampled out): forwarded to legacy only, not recorded.
    Off,
    /// Eligible but not mirrored; recorded as `skipped` with this reason (and this text).
    Skip(SkipReason, String),
    /// Mirrored to the candidate.
    Mirror(Plan),
}

fn skip(reason: SkipReason) -> Decision {
    Decision::Skip(reason, reason.as_str().to_owned())
}

/// A mirrored request: where it goes and the in-flight slot it holds.
pub struct Plan {
    pub target: CandidateTarget,
    pub route: Option<usize>,
    /// Served by the candidate (a rollout phase's cohort): how.
    pub serve: Option<Serve>,
    /// The configuration the decision was made with (`route` indexes its routes).
    pub cfg: Arc<Config>,
    /// A slot of `[shadow] max_in_flight` (shadow calls) or `[rollout] max_in_flight` (served).
    permit: Option<OwnedSemaphorePermit>,
    /// The request's account (its quota, its 429 pause).
    pub account: Option<String>,
    /// The exchange's request id: what the candidate call's warnings name it by.
    pub request_id: Arc<str>,
    /// A route with a request mapping: the request as the mapping and the templates need it
    /// (the candidate request is built once the body is in, [`fanout`]).
    pub request: Option<Box<translate::request::Pending>>,
    /// A route with `[routes.paging]`: legacy's window, walked on the candidate's cursors.
    pub page: Option<crate::paging::Want>,
}

/// How a request of the candidate cohort is served.
#[derive(Debug, Clone, Copy)]
pub struct Serve {
    /// Legacy is called too: the fallback, and the comparison.
    pub call_legacy: bool,
    /// The candidate's answer is served only when it equals legacy's (strict comparison).
    pub verify: bool,
    /// The candidate's answer is awaited this long at most before legacy's is served.
    pub deadline: std::time::Duration,
}

/// Counts tasks that must finish before shutdown completes.
#[derive(Debug, Default)]
pub struct Tracker {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by a tracked task.
pub struct TrackGuard(Arc<Tracker>);

impl Tracker {
    pub fn track(self: &Arc<Self>) -> TrackGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }

    /// Waits until no tracked task is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Token bucket for `max_rps` (burst: one second's worth).
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        self.take_n(1)
    }

    /// Takes `n` calls' worth when one is there: a fan-out larger than the burst goes out and
    /// leaves the bucket in debt (the calls after it wait until it is paid back), so that it
    /// is neither refused for ever nor free.
    fn take_n(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The shared state of the shadow side.
pub struct Shadow {
    /// Swapped by a reload; each exchange keeps the one it started with.
    cfg: RwLock<Arc<Config>>,
    /// Mapping worker processes.
    pub mapper: Arc<Runner>,
    client: HttpClient<Full<Bytes>>,
    /// The candidate's client for served requests: used from the caller's runtime, so its
    /// connections run there at normal priority, not on the shadow runtime's low-priority
    /// threads (a starved shadow thread must not hold a caller's answer).
    serve_client: HttpClient<Full<Bytes>>,
    /// For second legacy calls (`[diff.noise]`).
    legacy_client: HttpClient<Full<Bytes>>,
    store: StoreHandle,
    in_flight: Arc<Semaphore>,
    /// Candidate calls of served requests at once (`[rollout] max_in_flight`, by default the
    /// proxy's connection cap): their own budget, so that shadow work never crowds out a served
    /// request and a hanging candidate cannot hold more connections than this.
    served_in_flight: Arc<Semaphore>,
    bucket: Option<Mutex<Bucket>>,
    /// The vendors' quotas as their responses state them, and the pauses after a 429.
    pub quotas: crate::quota::Tracker,
    pub tracker: Arc<Tracker>,
    /// The background runtime the shadow tasks run on.
    rt: tokio::runtime::Handle,
    memo: memo::Memo<compare::Compared>,
    /// Which exchanges keep their bodies (`[store] body_*`).
    bodies: sample::BodySampler,
    /// Bytes of response bodies held for comparisons (`[shadow] max_bytes_in_flight`).
    pub budget: MemoryBudget,
    /// The rollout phase in force and the guard's window.
    pub rollout: Arc<crate::rollout::Rollout>,
    /// `[store] examples_per_field` and `max_value_len` (read at start-up, as the writer does):
    /// what a record is cut to before it waits in the store's queue.
    record_limits: (usize, usize),
    /// The shadow leg's breakers per (vendor, account) (`[shadow.breaker]`).
    pub breakers: crate::breaker::Breakers,
    /// The id crosswalk (`[ids]`): learned by the comparisons, read by requests and served
    /// answers.
    pub ids: Arc<crate::ids::Crosswalk>,
    /// The candidate's cursors learned per (account, query), for paged routes.
    pub cursors: crate::paging::Cursors,
}

impl Shadow {
    pub fn new(
        cfg: Arc<Config>,
        (client, serve_client): (HttpClient<Full<Bytes>>, HttpClient<Full<Bytes>>),
        legacy_client: HttpClient<Full<Bytes>>,
        store: StoreHandle,
        rt: tokio::runtime::Handle,
        mapper: Arc<Runner>,
        served_budget: usize,
    ) -> Self {
        let bucket = (cfg.shadow.max_rps > 0.0).then(|| {
            Mutex::new(Bucket {
                rate: cfg.shadow.max_rps,
                tokens: cfg.shadow.max_rps.max(1.0),
                last: Instant::now(),
            })
        });
        let budget = MemoryBudget::new(cfg.shadow.max_bytes_in_flight);
        let cfg_store = (cfg.store.examples_per_field, cfg.store.max_value_len);
        let breaker = cfg.shadow.breaker;
        let rollout = Arc::new(crate::rollout::Rollout::new(&cfg.rollout));
        rollout.publish(&cfg.rollout, None, cfg.accounts.as_ref());
        Self {
            rollout,
            in_flight: Arc::new(Semaphore::new(cfg.shadow.max_in_flight)),
            served_in_flight: Arc::new(Semaphore::new(served_budget.max(1))),
            cfg: RwLock::new(cfg),
            mapper,
            client,
            serve_client,
            legacy_client,
            store,
            bucket,
            quotas: crate::quota::Tracker::default(),
            tracker: Arc::default(),
            rt,
            memo: memo::Memo::default(),
            bodies: sample::BodySampler::default(),
            budget,
            record_limits: (cfg_store.0, cfg_store.1),
            breakers: crate::breaker::Breakers::new(breaker),
            ids: Arc::default(),
            cursors: crate::paging::Cursors::default(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.cfg
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a reloaded configuration in place: exchanges that start from now on use it.
    /// Settings read at start-up (listeners, upstreams, store, budgets) keep their values; the
    /// caller checks that they did not change.
    pub fn set_config(&self, cfg: Arc<Config>) {
        self.breakers.set(cfg.shadow.breaker);
        *self
            .cfg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
        self.memo.clear();
    }

    /// Takes `n` more calls from `[shadow] max_rps` (a fan-out's calls after its first).
    fn take_rps(&self, n: usize) -> bool {
        self.bucket.as_ref().is_none_or(|b| {
            b.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take_n(n)
        })
    }

    /// Counts an exchange in the metrics and hands it to the store: cut to what the store keeps
    /// ([`Record::bound`](crate::record::Record::bound)), its bytes charged to the memory budget
    /// until it is written. When the budget cannot hold them, the store gets the exchange's row
    /// and counts without its details ([`strip`](crate::record::Record::strip)), counted as
    /// `shadowdiff_shadow_dropped_total{reason="details_over_budget"}`.
    pub fn record(&self, mut r: crate::record::Record) {
        crate::telemetry::exchange(&r);
        self.rollout.window.add(&r);
        r.bound(self.record_limits.0, self.record_limits.1);
        let mut held = self.budget.hold();
        if !held.grow(r.approx_bytes()) {
            r.strip();
            crate::telemetry::dropped(crate::telemetry::DETAILS_OVER_BUDGET);
            // A stripped record is a row and a count: queued even when the budget is spent.
            let _ = held.grow(r.approx_bytes());
        }
        self.store.record_holding(r, held);
    }

    /// Decides whether a request is mirrored, and builds its metadata. The path is already
    /// normalised (dot-segments removed); `escapes` says it tried to climb above its root, and
    /// such a request is not mirrored (`skipped`, reason `unsafe_path`).
    pub fn decide(
        &self,
        parts: &http::request::Parts,
        request_id: String,
        escapes: bool,
    ) -> (Meta, Decision) {
        self.decide_for(parts, request_id, escapes, Origin::Caller)
    }

    /// [`Shadow::decide`] for a caller or for a replayed exchange ([`Origin`]).
    fn decide_for(
        &self,
        parts: &http::request::Parts,
        request_id: String,
        escapes: bool,
        origin: Origin<'_>,
    ) -> (Meta, Decision) {
        let cfg_arc = self.config();
        let cfg = &*cfg_arc;
        let path = parts.uri.path();
        let route_idx = cfg.routes.iter().position(|r| {
            r.method.as_ref().is_none_or(|m| m == parts.method) && r.path.matches(path).is_some()
        });
        let route = route_idx.map(|i| &cfg.routes[i]);
        let query = match (&cfg.accounts, parts.uri.query()) {
            (_, Some(q))
                if cfg.accounts.is_some()
                    || !cfg.candidate.header_templates.is_empty()
                    || route.is_some_and(|r| r.candidate.query.is_some()) =>
            {
                translate::parse_query(q)
            }
            _ => Vec::new(),
        };
        let account = match origin {
            Origin::Caller => cfg
                .accounts
                .as_ref()
                .and_then(|a| a.lookup(&parts.headers, &query)),
            Origin::Replay { account } => cfg
                .accounts
                .as_ref()
                .zip(account)
                .and_then(|(a, name)| a.named(name)),
        };
        let replay = matches!(origin, Origin::Replay { .. });
        let mut rollout = self.rollout.plan(
            &cfg.rollout,
            route
                .filter(|r| r.serves(&parts.method))
                .map(|r| crate::rollout::RouteServing {
                    deadline: r.serve_deadline,
                    unknown_account: r.unknown_account,
                }),
            account.map(|a| a.name.as_str()),
        );
        // A replay is shadow traffic whatever the phase: nobody waits for its answer.
        if replay {
            rollout.cohort = false;
        }
        let mut meta = Meta {
            started_at: SystemTime::now(),
            request_id,
            route: route.map(|r| r.name.clone()),
            method: parts.method.to_string(),
            path: path.to_owned(),
            account: account.map(|a| a.name.clone()),
            serving: crate::record::Serving {
                phase: Some(rollout.phase.clone()),
                cohort: rollout.cohort,
                ..Default::default()
            },
        };
        let mut serve = rollout.cohort.then_some(Serve {
            call_legacy: rollout.call_legacy,
            verify: rollout.verify && rollout.call_legacy,
            deadline: rollout.deadline,
        });
        // Without verification, nothing vouches for the fields the route's comparison ignores
        // or normalizes (rules not declared `serve_safe`): legacy answers, and the candidate is
        // called as shadow traffic for the (strict) comparison.
        if serve.is_some_and(|s| !s.verify) && route.is_some_and(|r| !r.unverified.is_empty()) {
            serve = None;
            meta.serving.fallback = Some(crate::record::Fallback::UnverifiedRules);
        }
        let eligible = match route {
            // A write is never replayed, whatever the route's `mirror` says.
            Some(r) if replay => r.read || config::is_safe(&parts.method),
            Some(r) => r.mirrors(&parts.method),
            None => cfg.shadow.unmatched == Unmatched::Mirror && config::is_safe(&parts.method),
        };
        // The served cohort is never sampled out: its answer is the candidate's (or, fallen
        // back, its fallback is counted); a replay was chosen already.
        if !eligible || (!rollout.cohort && !replay && !sampled(cfg.shadow.sample_rate)) {
            return (meta, Decision::Off);
        }
        if escapes {
            return (meta, skip(SkipReason::UnsafePath));
        }
        let account_name = meta.account.as_deref();
        if self
            .quotas
            .paused(crate::quota::Vendor::Candidate, account_name)
        {
            return (meta, skip(SkipReason::RateLimited));
        }
        // Shadow calls leave the last share of an account's quota to the caller's own traffic
        // (a served request is the caller's own).
        if serve.is_none()
            && self.quotas.below_reserve(
                crate::quota::Vendor::Candidate,
                account_name,
                cfg.shadow.reserve,
            )
        {
            return (meta, skip(SkipReason::QuotaReserve));
        }
        // `max_rps` and `max_in_flight` bound shadow traffic; a served request is the caller's
        // own (its answer is the candidate's), so shadow work never crowds it out: it has a
        // budget of its own.
        let permit = if serve.is_some() {
            let Ok(permit) = self.served_in_flight.clone().try_acquire_owned() else {
                return (meta, skip(SkipReason::Overload));
            };
            Some(permit)
        } else {
            if let Some(b) = &self.bucket {
                if !b
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    return (meta, skip(SkipReason::MaxRps));
                }
            }
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                return (meta, skip(SkipReason::Overload));
            };
            Some(permit)
        };
        let forward_query = &cfg.candidate.forward_query;
        let mapped_request = route.is_some_and(|r| r.candidate.request.is_some());
        let account_name = meta.account.clone().unwrap_or_default();
        let lookup = |kind: &str, legacy: &str| self.ids.to_candidate(&account_name, kind, legacy);
        let ctx = Context {
            ids: Some(translate::IdLookup(&lookup)),
            captures: route.and_then(|r| r.path.matches(path)).unwrap_or_default(),
            query,
            account,
            // A request mapping runs once the body is in: the templates are tried now for the
            // values the request has (its account, captures), `{each.NAME}` rendered empty.
            each: if mapped_request {
                translate::Each::Trial
            } else {
                translate::Each::None
            },
        };
        let target = match route {
            None => {
                let mut path_and_query = path.to_owned();
                translate::push_allowed_query(
                    &mut path_and_query,
                    parts.uri.query(),
                    forward_query,
                );
                Ok(CandidateTarget {
                    method: parts.method.clone(),
                    path_and_query,
                    headers: Vec::new(),
                })
            }
            Some(r) => {
                r.candidate
                    .build(&parts.method, path, parts.uri.query(), forward_query, &ctx)
            }
        };
        // `[candidate] headers` templates (a per-account token): as a path placeholder, a value
        // missing is a skip, the account's as `unknown_account`.
        let target = match target {
            Ok(mut t) => match translate::render_headers(&cfg.candidate.header_templates, &ctx) {
                Ok(h) => {
                    t.headers = h;
                    Ok(t)
                }
                Err(translate::HeaderMiss::Var(v)) => Err(v),
                Err(translate::HeaderMiss::Invalid(name)) => {
                    return (
                        meta,
                        Decision::Skip(
                            SkipReason::Template,
                            format!("template: [candidate] headers.{name}: the value built for this request is not a valid header value"),
                        ),
                    );
                }
            },
            Err(v) => Err(v),
        };
        // The breaker last: a half-open breaker's probe is only taken by a call that goes out.
        // Served requests are the caller's own: never held back by it (they fall back).
        if target.is_ok()
            && serve.is_none()
            && self
                .breakers
                .admit(crate::quota::Vendor::Candidate, meta.account.as_deref())
                == crate::breaker::Admit::Skip
        {
            return (
                meta,
                Decision::Skip(
                    SkipReason::Breaker,
                    "breaker: the candidate answered a burst of errors for this account ([shadow.breaker]); calls resume after a probe succeeds".into(),
                ),
            );
        }
        // A request mapping is given the account: without it, it would build a request for
        // nobody (as a template needing `{account.COLUMN}` would).
        if mapped_request && cfg.accounts.is_some() && account.is_none() && target.is_ok() {
            return (
                meta,
                Decision::Skip(
                    SkipReason::UnknownAccount,
                    "unknown_account: the request's account is not in the accounts file (the route's request mapping is given the account)".into(),
                ),
            );
        }
        // A paged route: legacy's offset and limit, read now (a value that is not a number is
        // legacy's to refuse: nothing to walk).
        let page = match route.and_then(|r| r.paging.as_ref()) {
            None => None,
            Some(spec) => match crate::paging::Want::from_query(spec, &ctx.query) {
                Some(w) => Some(w),
                None => {
                    return (
                        meta,
                        Decision::Skip(
                            SkipReason::Paging,
                            format!(
                                "paging: {} or {} is not a whole number",
                                spec.offset, spec.limit
                            ),
                        ),
                    )
                }
            },
        };
        match target {
            Ok(target) => {
                let account = meta.account.clone();
                let request_id = Arc::from(meta.request_id.as_str());
                let request = mapped_request.then(|| {
                    let mut p = translate::request::Pending::new(
                        &parts.method,
                        path,
                        parts.uri.query(),
                        &ctx,
                    );
                    p.content_encoding = parts
                        .headers
                        .get(http::header::CONTENT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    Box::new(p)
                });
                (
                    meta,
                    Decision::Mirror(Plan {
                        page,
                        target,
                        route: route_idx,
                        serve,
                        cfg: cfg_arc.clone(),
                        permit,
                        account,
                        request_id,
                        request,
                    }),
                )
            }
            Err(crate::translate::Var::Id(inner, kind)) => (
                meta,
                Decision::Skip(
                    SkipReason::UnpairedId,
                    format!("unpaired_id: the legacy id in {inner} has no {kind} partner in the id crosswalk yet: the candidate is never called with an id it does not know"),
                ),
            ),
            Err(var @ crate::translate::Var::Account(_)) => (
                meta,
                Decision::Skip(
                    SkipReason::UnknownAccount,
                    format!("unknown_account: the request's account is not in the accounts file ({var} has no value)"),
                ),
            ),
            Err(var) => (
                meta,
                Decision::Skip(
                    SkipReason::Template,
                    format!("template: {var} has no value"),
                ),
            ),
        }
    }

    /// Starts a mirrored exchange: the candidate call goes out now, on a task of its own; the
    /// comparison starts when the returned [`Mirror`] is given legacy's answer.
    pub fn start(
        self: &Arc<Self>,
        plan: Plan,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Mirror {
        let route = plan.route;
        let cfg = plan.cfg.clone();
        // A second legacy call spends legacy's quota: never its reserved share, never while
        // legacy asked to wait.
        let legacy_spare = !self.quotas.below_reserve(
            crate::quota::Vendor::Legacy,
            plan.account.as_deref(),
            cfg.shadow.reserve,
        ) && !self
            .quotas
            .paused(crate::quota::Vendor::Legacy, plan.account.as_deref());
        let secondary = Self::secondary(&cfg, parts).filter(|_| legacy_spare);
        // A write is never replayed: its request is not kept.
        let read = config::is_safe(&parts.method) || route.is_some_and(|i| cfg.routes[i].read);
        let request = read.then(|| KeptRequest::of(parts, &body));
        Mirror {
            shadow: self.clone(),
            started: Instant::now(),
            candidate: CandidateSlot::Pending(self.spawn_candidate(plan, &parts.headers, body)),
            premapped: None,
            route,
            secondary,
            cfg,
            request,
        }
    }

    /// Calls the candidate for a recorded exchange (`shadowdiff replay`): the request as the
    /// caller sent it (`method`, `target`, `body`), translated as a live one is, for the
    /// account named; under the same budgets (`max_rps`, `max_in_flight`, the account's quota
    /// and breaker). `Err`: not sent, and why (a skip reason's name, or `not_mirrored` for a
    /// write or a route that is not mirrored).
    pub async fn replay(
        self: &Arc<Self>,
        method: http::Method,
        target: &str,
        body: Bytes,
        (account, route): (Option<&str>, Option<&str>),
    ) -> Result<Candidate, (&'static str, String)> {
        // As the proxy takes a caller's: the path only (origin form), dot-segments removed, a
        // path that climbs above its root never sent.
        let bad = |why: String| ("bad_request", why);
        if !target.starts_with('/') || target.starts_with("//") {
            return Err(bad(format!("{target:?}: not a path")));
        }
        let uri: http::Uri = target
            .parse()
            .map_err(|e| bad(format!("{target:?}: {e}")))?;
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(bad(format!("{target:?}: not a path")));
        }
        let normal = translate::normalize_path(uri.path());
        if normal.escapes {
            return Err((
                SkipReason::UnsafePath.as_str(),
                format!("{target:?} climbs above its root"),
            ));
        }
        let uri: http::Uri = match uri.query() {
            Some(q) => format!("{}?{q}", normal.path),
            None => normal.path.clone(),
        }
        .parse()
        .map_err(|e| bad(format!("{target:?}: {e}")))?;
        let mut req = Request::builder().method(method).uri(uri);
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let (parts, ()) = req
            .body(())
            .map_err(|e| ("bad_request", e.to_string()))?
            .into_parts();
        let (meta, decision) =
            self.decide_for(&parts, "replay".into(), false, Origin::Replay { account });
        match decision {
            // Judged by the recorded route's rules: a request that routes elsewhere now (the
            // config changed, or the store was edited) is not that exchange any more.
            Decision::Mirror(_) if meta.route.as_deref() != route => Err((
                "route_changed",
                format!(
                    "{target:?} is routed to {:?} now, recorded as {route:?}",
                    meta.route
                ),
            )),
            Decision::Mirror(plan) => self
                .spawn_candidate(plan, &parts.headers, body)
                .await
                .map_err(|e| ("internal_error", e.to_string())),
            Decision::Skip(reason, why) => Err((reason.as_str(), why)),
            Decision::Off => Err((
                "not_mirrored",
                "a write, or a route that is not mirrored: never replayed".into(),
            )),
        }
    }

    /// Waits for both sides, compares, and records. Runs on its own task.
    #[allow(clippy::too_many_arguments)]
    fn spawn_compare(
        self: &Arc<Self>,
        meta: Meta,
        route: Option<usize>,
        legacy: LegacyPending,
        (candidate, premapped): (CandidateSlot, Option<Arc<serde_json::Value>>),
        secondary: Option<Request<Full<Bytes>>>,
        cfg: Arc<Config>,
        request: Option<KeptRequest>,
    ) {
        let this = self.clone();
        let guard = self.tracker.track();
        self.rt.spawn(
            async move {
                let _guard = guard;
                // Only when legacy answered: the second call starts as close to the first as
                // possible, so that real changes in between stay rare.
                let secondary = match (&legacy, secondary) {
                    (LegacyPending::Response { .. }, Some(req)) => {
                        let t = this.clone();
                        Some(tokio::spawn(async move { t.legacy_again(req).await }))
                    }
                    _ => None,
                };
                // The bytes held for this exchange go back to the budget when the task ends,
                // after the record is handed to the store.
                let (legacy, _held_legacy) = match legacy {
                    LegacyPending::Failed { ms, reason } => {
                        (Legacy::Failed { ms, reason }, Held::default())
                    }
                    LegacyPending::Response {
                        status,
                        headers,
                        ms,
                        at,
                        body,
                    } => {
                        this.quotas.observe(
                            crate::quota::Vendor::Legacy,
                            meta.account.as_deref(),
                            &headers,
                        );
                        // The caller's own call hit legacy's limit: no second calls for the
                        // account until legacy says.
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            this.quotas.pause(
                                crate::quota::Vendor::Legacy,
                                meta.account.as_deref(),
                                retry_after(&headers).unwrap_or(std::time::Duration::from_secs(1)),
                            );
                        }
                        let (body, held, end) = body.await.unwrap_or_else(|_| {
                            (Captured::default(), Held::default(), Instant::now())
                        });
                        // Compared with the candidate's time to its whole answer: legacy's to
                        // its last byte (its head's time plus the body's).
                        let ms = ms + end.saturating_duration_since(at).as_secs_f64() * 1000.0;
                        let legacy = Legacy::Response {
                            status,
                            headers,
                            ms,
                            body,
                        };
                        (legacy, held)
                    }
                };
                let joined = match candidate {
                    CandidateSlot::Ready(c) => Ok(c),
                    CandidateSlot::Pending(h) => h.await,
                };
                let candidate = match joined {
                    Ok(c) => c,
                    Err(e) if e.is_panic() => {
                        let msg = panic_message(&*e.into_panic());
                        tracing::error!(
                            panic = %msg,
                            request_id = meta.request_id.as_str(),
                            route = meta.route.as_deref(),
                            account = meta.account.as_deref(),
                            "candidate call panicked: recorded as internal_error"
                        );
                        crate::telemetry::panic_caught("candidate");
                        this.record(compare::internal_error(
                            meta,
                            format!("candidate call panicked: {msg}"),
                        ));
                        return;
                    }
                    Err(e) => Candidate::Failed {
                        ms: 0.0,
                        reason: format!("candidate task failed: {e}"),
                    },
                };
                let mut legacy = legacy;
                let second = match secondary {
                    Some(h) => h.await.ok().flatten(),
                    None => None,
                };
                let mapped = route.is_some_and(|i| !cfg.routes[i].mappings.is_empty());
                let big = mapped || body_len(&legacy) >= BLOCKING_COMPARE_BYTES;
                let shadow = this.clone();
                let meta_copy = meta.clone();
                let cfg_kept = cfg.clone();
                let run = move || {
                    let cfg = &*cfg;
                    let rules = route.map_or(&cfg.diff.rules, |i| &cfg.routes[i].rules);
                    if let Some(second) = second {
                        shadow.learn_noise(&meta, &mut legacy, second, rules, cfg);
                    }
                    // The candidate cohort's exchanges are judged as a caller receives (or would
                    // receive) the candidate's answer: against legacy's own document (no legacy
                    // mapping), by the served rules. Strict served parity, for the guard and
                    // the gate.
                    let served = meta.serving.cohort;
                    let rules = match (route, served) {
                        (Some(i), true) => &cfg.routes[i].served_rules,
                        (None, true) => &cfg.diff.served_rules,
                        _ => rules,
                    };
                    let (cand, leg) = route.map_or((None, None), |i| {
                        let m = &cfg.routes[i].mappings;
                        (
                            m.candidate_for(meta.account.as_deref()).map(|c| &**c),
                            m.legacy.as_deref().filter(|_| !served),
                        )
                    });
                    let account = meta.account.clone().unwrap_or_default();
                    let maps = compare::Maps {
                        candidate: cand,
                        legacy: leg,
                        runner: Some(&shadow.mapper),
                        timeout: cfg.mappings.timeout,
                        premapped: premapped.as_deref(),
                        request: route
                            .and_then(|i| cfg.routes[i].candidate.request.as_ref())
                            .map(|r| &*r.chain),
                        paging: route.and_then(|i| cfg.routes[i].paging.as_ref()),
                        rules: route
                            .map_or(&cfg.diff.rules_version, |i| &cfg.routes[i].rules_version)
                            .as_deref(),
                        ids: route
                            .map(|i| &cfg.routes[i].ids)
                            .filter(|r| !r.is_empty())
                            .map(|r| compare::Ids {
                                crosswalk: &shadow.ids,
                                account: &account,
                                route: r,
                                kinds: &cfg.ids,
                            }),
                    };
                    compare::compare(
                        meta,
                        legacy,
                        candidate,
                        rules,
                        cfg,
                        Some(compare::Shared {
                            memo: &shadow.memo,
                            sampler: &shadow.bodies,
                            route,
                            strict: served,
                        }),
                        maps,
                    )
                };
                // A panic in the comparison (a bug reached by hostile bytes) must not lose the
                // exchange silently: it is caught and recorded as `internal_error`.
                let record = if big {
                    let request_id = meta_copy.request_id.clone();
                    match tokio::task::spawn_blocking(move || caught(meta_copy, run)).await {
                        Ok(r) => r,
                        Err(e) => {
                            // Cancelled: the runtime is shutting down.
                            tracing::warn!(error = %e, request_id = request_id.as_str(), "comparison cancelled");
                            return;
                        }
                    }
                } else {
                    caught(meta_copy, run)
                };
                tracing::debug!(
                    outcome = record.outcome.as_str(),
                    diff_count = record.diff_count,
                    "compared"
                );
                let mut record = record;
                // An exchange that keeps its documents keeps its request too: what a replay
                // sends again.
                if !record.bodies.is_empty() {
                    if let Some(kept) = request.and_then(|r| r.stored(&cfg_kept)) {
                        record.bodies.push(kept);
                    }
                }
                this.record(record);
            }
            .in_current_span(),
        );
    }
}

/// The candidate's answer: still coming, or already read (a served request waited for it).
pub enum CandidateSlot {
    Pending(tokio::task::JoinHandle<Candidate>),
    Ready(Candidate),
}

/// The id crosswalk of one served request.
pub struct ServedIds {
    pub crosswalk: Arc<crate::ids::Crosswalk>,
    pub account: String,
    pub cfg: Arc<Config>,
    pub route: usize,
}

impl ServedIds {
    /// The document with legacy's ids; `Err` with the pointer of the first id that has no
    /// legacy partner.
    pub fn apply(&self, doc: &mut serde_json::Value) -> Result<(), String> {
        let r = &self.cfg.routes[self.route];
        self.crosswalk
            .serve(&self.account, &r.ids, &self.cfg.ids, doc)
            .map(|_| ())
    }
}

/// A mirrored exchange in flight: the candidate call started, legacy's answer awaited.
pub struct Mirror {
    shadow: Arc<Shadow>,
    /// When the candidate call started.
    started: Instant,
    candidate: CandidateSlot,
    /// The candidate's document as mapped for the caller (a served request).
    premapped: Option<Arc<serde_json::Value>>,
    route: Option<usize>,
    /// The second legacy call for noise learning, when this exchange was sampled for one.
    secondary: Option<Request<Full<Bytes>>>,
    /// The configuration the exchange was decided with.
    cfg: Arc<Config>,
    /// The caller's request as a replay would send it again.
    request: Option<KeptRequest>,
}

/// Who a request is decided for.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// A caller: its headers say its account; the rollout may serve it; sampled.
    Caller,
    /// A recorded exchange sent again (`shadowdiff replay`): its account by name; never served,
    /// never sampled out, never a write.
    Replay { account: Option<&'a str> },
}

/// The caller's request as an exchange keeps it (side `request`): the method, the path with its
/// query (the values of secret-looking parameters masked) and a JSON body, redacted as the
/// responses are. Never the caller's headers (its credentials).
#[derive(Debug, Clone)]
pub struct KeptRequest {
    method: http::Method,
    /// Cheap to hold (shared bytes): the masked text is built only for an exchange that keeps
    /// its documents, off the caller's path.
    uri: http::Uri,
    body: Bytes,
}

/// Replaces the values of members whose names say they are credentials (`password`,
/// `api_key`, `token`, ... as [`crate::mask`] decides) by the redaction mark: a request body is
/// the caller's, and may carry them even where `[store] redact_fields` names nothing.
fn redact_secret_members(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if crate::mask::secret_name(k) {
                    *x = serde_json::Value::String(crate::redact::REDACTED.into());
                } else {
                    redact_secret_members(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_secret_members),
        _ => {}
    }
}

impl KeptRequest {
    fn of(parts: &http::request::Parts, body: &Bytes) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            body: body.clone(),
        }
    }

    /// The stored side: `None` for a body that is not JSON (the exchange cannot be replayed).
    fn stored(self, cfg: &Config) -> Option<crate::record::StoredBody> {
        let body = if self.body.is_empty() {
            None
        } else {
            let mut doc = crate::diff::parse_json(&self.body).ok()?;
            crate::redact::redact_document(&mut doc, &cfg.store.redact_fields);
            redact_secret_members(&mut doc);
            Some(crate::record::BodyText::new(doc.to_string()))
        };
        let target = match self.uri.query() {
            Some(q) => {
                let masked = crate::mask::url(&format!("x://h{}?{q}", self.uri.path()));
                masked.strip_prefix("x://h")?.to_owned()
            }
            None => self.uri.path().to_owned(),
        };
        Some(crate::record::StoredBody {
            side: "request",
            status: None,
            headers: serde_json::json!({"method": self.method.as_str(), "target": target}),
            body,
        })
    }
}

impl Mirror {
    /// Waits for the candidate's answer (a served request; the caller bounds the wait, and
    /// may drop this future: the call goes on until [`Mirror::cancel`]).
    pub async fn wait_candidate(&mut self) {
        if let CandidateSlot::Pending(h) = &mut self.candidate {
            let c = h.await.unwrap_or_else(|e| {
                let reason = if e.is_panic() {
                    crate::telemetry::panic_caught("candidate");
                    format!(
                        "candidate call panicked: {}",
                        panic_message(&*e.into_panic())
                    )
                } else {
                    format!("candidate task failed: {e}")
                };
                Candidate::Failed { ms: 0.0, reason }
            });
            self.candidate = CandidateSlot::Ready(c);
        }
    }

    /// The candidate's answer, once [`Mirror::wait_candidate`] has it.
    pub fn ready(&self) -> Option<&Candidate> {
        match &self.candidate {
            CandidateSlot::Ready(c) => Some(c),
            CandidateSlot::Pending(_) => None,
        }
    }

    /// Cancels a candidate call still running (its connection is closed, its slot given back):
    /// the caller's answer was decided without it, for `why`. Recorded as cancelled.
    pub fn cancel(&mut self, why: &'static str) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.abort_with(Candidate::Cancelled { ms, why });
    }

    /// [`Mirror::cancel`] at the serve deadline `limit`: recorded as a timeout at that limit.
    pub fn cancel_at_deadline(&mut self, limit: std::time::Duration) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.abort_with(Candidate::Timeout { ms, limit });
    }

    fn abort_with(&mut self, c: Candidate) {
        if let CandidateSlot::Pending(h) = &self.candidate {
            h.abort();
            self.candidate = CandidateSlot::Ready(c);
        }
    }

    /// The mapping chain that reshapes this exchange's candidate answer (for `account`).
    pub fn candidate_chain(&self, account: Option<&str>) -> Option<Arc<crate::mapping::Chain>> {
        let r = &self.cfg.routes[self.route?];
        r.mappings.candidate_for(account).cloned()
    }

    /// What a served answer of this exchange needs from the id crosswalk (a route with
    /// `[routes.ids]`), for the request's account.
    pub fn served_ids(&self, account: Option<&str>) -> Option<ServedIds> {
        let route = self.route?;
        (!self.cfg.routes[route].ids.is_empty()).then(|| ServedIds {
            crosswalk: self.shadow.ids.clone(),
            account: account.unwrap_or_default().to_owned(),
            cfg: self.cfg.clone(),
            route,
        })
    }

    /// The route's `[routes.paging]`, when it is paged.
    pub fn paging(&self) -> Option<crate::paging::Spec> {
        self.route.and_then(|i| self.cfg.routes[i].paging.clone())
    }

    /// Whether the candidate's answer is a fan-out's assembly (a route with a request mapping).
    pub fn fans_out(&self) -> bool {
        self.route
            .is_some_and(|i| self.cfg.routes[i].candidate.request.is_some())
    }

    /// The candidate's document as it was mapped to be served: the comparison uses it instead
    /// of mapping the body again.
    pub fn set_premapped(&mut self, doc: serde_json::Value) {
        self.premapped = Some(Arc::new(doc));
    }

    /// Where mappings run, and their time budget.
    pub fn mapper(&self) -> (Arc<Runner>, std::time::Duration) {
        (self.shadow.mapper.clone(), self.cfg.mappings.timeout)
    }

    /// The configuration the exchange was decided with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// [`Mirror::config`], shared (for work on another thread).
    pub fn shared_config(&self) -> Arc<Config> {
        self.cfg.clone()
    }

    /// An empty holding in the comparisons' memory budget (a served answer's verification
    /// takes its documents' memory from it).
    pub fn hold(&self) -> Held {
        self.shadow.budget.hold()
    }

    /// The exchange's route (its index in the config).
    pub fn route(&self) -> Option<usize> {
        self.route
    }

    /// A served request whose caller went away before its answer was decided: recorded with
    /// what was known (legacy's status and time when its head had come), nothing compared.
    pub fn abandoned(self, meta: Meta, legacy: Option<(u16, f64)>) {
        let mut r = compare::unmirrored(
            meta,
            crate::record::Outcome::Skipped(SkipReason::CallerAborted),
            legacy.map(|l| l.0),
            legacy.map(|l| l.1),
            "the caller went away before its answer was decided".into(),
        );
        if let CandidateSlot::Ready(c) = &self.candidate {
            r.candidate_ms = Some(c.ms());
            if let Candidate::Response { status, .. } = c {
                r.candidate_status = Some(status.as_u16());
            }
        }
        self.shadow.record(r);
    }

    /// A request served by the candidate without a legacy call: recorded, nothing compared.
    /// `failure` is what made its answer unfit to serve (the caller got it anyway: there was
    /// nothing to fall back to), recorded as the candidate's failure for the guard to count.
    pub fn served_alone(self, meta: Meta, failure: Option<crate::record::Fallback>) {
        use crate::record::{Fallback, Outcome};
        let (outcome, reason) = match failure {
            None => (
                Outcome::Skipped(SkipReason::LegacySample),
                "served by the candidate without a legacy call (legacy_sample)".to_owned(),
            ),
            Some(f) => {
                let o = match f {
                    Fallback::Timeout | Fallback::Deadline => Outcome::CandidateTimeout,
                    Fallback::RateLimited => Outcome::CandidateRateLimited,
                    Fallback::AuthError => Outcome::CandidateAuthError,
                    Fallback::NotJson | Fallback::EmptyBody => Outcome::NotJson,
                    Fallback::MappingError => Outcome::MappingError,
                    Fallback::TooLarge => Outcome::TooLarge,
                    _ => Outcome::CandidateError,
                };
                (
                    o,
                    format!(
                        "served by the candidate without a legacy call (legacy_sample), unfit to serve: {}",
                        f.as_str()
                    ),
                )
            }
        };
        let mut r = compare::unmirrored(meta, outcome, None, None, reason);
        if let CandidateSlot::Ready(c) = &self.candidate {
            r.candidate_ms = Some(c.ms());
            if let Candidate::Response { status, .. } = c {
                r.candidate_status = Some(status.as_u16());
            }
        }
        self.shadow.record(r);
    }

    /// Hands over legacy's answer: the comparison runs (and is recorded) on its own task.
    pub fn finish(self, meta: Meta, legacy: LegacyPending) {
        let secondary = match legacy {
            LegacyPending::Response { .. } => self.secondary,
            LegacyPending::Failed { .. } => None,
        };
        self.shadow.spawn_compare(
            meta,
            self.route,
            legacy,
            (self.candidate, self.premapped),
            secondary,
            self.cfg,
            self.request,
        );
    }
}

/// Legacy's answer as the proxy hands it over: the head at once, the body copy when the tee ends.
pub enum LegacyPending {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        /// Time to legacy's response head (ms).
        ms: f64,
        /// When the head was handed over: with the tee's end, legacy's time to its last byte.
        at: Instant,
        body: oneshot::Receiver<(Captured, Held, Instant)>,
    },
    Failed {
        ms: f64,
        reason: String,
    },
}

fn body_len(l: &Legacy) -> usize {
    match l {
        Legacy::Response {
            body: Captured::Complete(chunks),
            ..
        } => chunks.iter().map(Bytes::len).sum(),
        _ => 0,
    }
}

/// Runs a comparison; a panic becomes an `internal_error` record (with the panic's message)
/// instead of a lost exchange.
fn caught(meta: Meta, run: impl FnOnce() -> crate::record::Record) -> crate::record::Record {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic_message(&*panic);
            tracing::error!(
                panic = %msg,
                request_id = meta.request_id.as_str(),
                route = meta.route.as_deref(),
                account = meta.account.as_deref(),
                "comparison panicked: recorded as internal_error"
            );
            crate::telemetry::panic_caught("compare");
            compare::internal_error(meta, format!("comparison panicked: {msg}"))
        }
    }
}

/// The text of a caught panic's payload, with the values it quotes taken out (a slicing panic
/// quotes the string it sliced: a vendor's value). The store cuts it to `max_value_len`.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let text = p
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload");
    crate::redact::scrub_message(text)
}

fn sampled(rate: f64) -> bool {
    rate >= 1.0
        || (rate > 0.0 && ((crate::record::random_u64() >> 11) as f64 / (1u64 << 53) as f64) < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_comparison_is_recorded_as_internal_error() {
        let meta = Meta {
            started_at: SystemTime::now(),
            request_id: "r".into(),
            route: Some("x".into()),
            method: "GET".into(),
            path: "/x".into(),
            account: None,
            serving: Default::default(),
        };
        let r = caught(meta.clone(), || {
            let s = "12:0é";
            let _ = &s[..5]; // the bug the hardening probe found, as it was
            unreachable!()
        });
        assert_eq!(r.outcome, crate::record::Outcome::InternalError);
        let reason = r.reason.unwrap();
        assert!(reason.starts_with("comparison panicked: "), "{reason}");
        assert!(reason.contains("char boundary"), "{reason}");
        assert!(
            !reason.contains("12:0"),
            "the sliced value is not kept: {reason}"
        );
        assert_eq!(r.meta.request_id, "r");
        let ok = caught(meta, || {
            compare::internal_error(
                Meta {
                    request_id: "ok".into(),
                    ..r.meta.clone()
                },
                String::new(),
            )
        });
        assert_eq!(ok.meta.request_id, "ok");
    }

    #[test]
    fn sampling_extremes() {
        assert!((0..100).all(|_| sampled(1.0)));
        assert!((0..100).all(|_| !sampled(0.0)));
        let n = (0..10_000).filter(|_| sampled(0.5)).count();
        assert!((4000..6000).contains(&n), "{n}");
    }
}
