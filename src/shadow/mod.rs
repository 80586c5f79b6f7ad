//! The shadow side: which requests are mirrored, the candidate call, and the comparison, all off
//! the caller's path.
//!
//! For each request the proxy asks [`Shadow::decide`]. A mirrored request gets its candidate call
//! spawned at once (in parallel with legacy, holding a slot of `max_in_flight`), and a comparison
//! task that waits for the legacy copy (from the tee) and the candidate's answer, then compares
//! and hands the record to the store. Nothing here can delay, fail or change the caller's response.

pub mod capture;
pub mod compare;
pub mod memo;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
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

/// Longest pause after a candidate 429; a larger Retry-After is capped to this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Pause after a 429 that says nothing about when to come back.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
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
    /// The configuration the decision was made with (`route` indexes its routes).
    pub cfg: Arc<Config>,
    permit: OwnedSemaphorePermit,
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
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
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
    /// For second legacy calls (`[diff.noise]`).
    legacy_client: HttpClient<Full<Bytes>>,
    store: StoreHandle,
    in_flight: Arc<Semaphore>,
    bucket: Option<Mutex<Bucket>>,
    /// Milliseconds since `epoch` until which mirroring pauses (candidate 429).
    paused_until: AtomicU64,
    epoch: Instant,
    pub tracker: Arc<Tracker>,
    /// The background runtime the shadow tasks run on.
    rt: tokio::runtime::Handle,
    memo: memo::Memo<compare::Compared>,
    /// Bytes of response bodies held for comparisons (`[shadow] max_bytes_in_flight`).
    pub budget: MemoryBudget,
}

impl Shadow {
    pub fn new(
        cfg: Arc<Config>,
        client: HttpClient<Full<Bytes>>,
        legacy_client: HttpClient<Full<Bytes>>,
        store: StoreHandle,
        rt: tokio::runtime::Handle,
        mapper: Arc<Runner>,
    ) -> Self {
        let bucket = (cfg.shadow.max_rps > 0.0).then(|| {
            Mutex::new(Bucket {
                rate: cfg.shadow.max_rps,
                tokens: cfg.shadow.max_rps.max(1.0),
                last: Instant::now(),
            })
        });
        let budget = MemoryBudget::new(cfg.shadow.max_bytes_in_flight);
        Self {
            in_flight: Arc::new(Semaphore::new(cfg.shadow.max_in_flight)),
            cfg: RwLock::new(cfg),
            mapper,
            client,
            legacy_client,
            store,
            bucket,
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            tracker: Arc::default(),
            rt,
            memo: memo::Memo::default(),
            budget,
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
        *self
            .cfg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
        self.memo.clear();
    }

    /// Counts an exchange in the metrics and hands it to the store.
    pub fn record(&self, r: crate::record::Record) {
        crate::telemetry::exchange(&r);
        self.store.record(r);
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
        let cfg_arc = self.config();
        let cfg = &*cfg_arc;
        let path = parts.uri.path();
        let route_idx = cfg.routes.iter().position(|r| {
            r.method.as_ref().is_none_or(|m| m == parts.method) && r.path.matches(path).is_some()
        });
        let route = route_idx.map(|i| &cfg.routes[i]);
        let query = match (&cfg.accounts, parts.uri.query()) {
            (_, Some(q))
                if cfg.accounts.is_some() || route.is_some_and(|r| r.candidate.query.is_some()) =>
            {
                translate::parse_query(q)
            }
            _ => Vec::new(),
        };
        let account = cfg
            .accounts
            .as_ref()
            .and_then(|a| a.lookup(&parts.headers, &query));
        let meta = Meta {
            started_at: SystemTime::now(),
            request_id,
            route: route.map(|r| r.name.clone()),
            method: parts.method.to_string(),
            path: path.to_owned(),
            account: account.map(|a| a.name.clone()),
        };
        let eligible = match route {
            Some(r) => r.mirrors(&parts.method),
            None => cfg.shadow.unmatched == Unmatched::Mirror && config::is_safe(&parts.method),
        };
        if !eligible || !sampled(cfg.shadow.sample_rate) {
            return (meta, Decision::Off);
        }
        if escapes {
            return (meta, skip(SkipReason::UnsafePath));
        }
        if self.paused() {
            return (meta, skip(SkipReason::RateLimited));
        }
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
        let forward_query = &cfg.candidate.forward_query;
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
                })
            }
            Some(r) => {
                let ctx = Context {
                    captures: r.path.matches(path).unwrap_or_default(),
                    query,
                    account,
                };
                r.candidate
                    .build(&parts.method, path, parts.uri.query(), forward_query, &ctx)
            }
        };
        match target {
            Ok(target) => (
                meta,
                Decision::Mirror(Plan {
                    target,
                    route: route_idx,
                    cfg: cfg_arc.clone(),
                    permit,
                }),
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

    /// For a sampled share (`[diff.noise] secondary_sample_rate`) of mirrored GET/HEAD requests:
    /// the same request again for legacy, sent from the comparison task once legacy has answered
    /// the caller. Its answer is compared with the first one to learn which fields are noise.
    /// `cfg` is the configuration the request was decided with. Off (the default) it costs one
    /// comparison on the request path.
    fn secondary(cfg: &Config, parts: &http::request::Parts) -> Option<Request<Full<Bytes>>> {
        let rate = cfg.diff.noise.secondary_sample_rate;
        if rate <= 0.0 || !config::is_safe(&parts.method) || !sampled(rate) {
            return None;
        }
        let base = cfg.legacy.base_url.as_ref()?;
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = upstream::join(base, pq).ok()?;
        let mut headers = parts.headers.clone();
        upstream::strip_hop_by_hop(&mut headers);
        if let Some(a) = base
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, a);
        }
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Some(req)
    }

    /// Sends a second legacy call; `None` when it fails, times out or is too large.
    async fn legacy_again(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Option<(StatusCode, HeaderMap, Bytes, Held)> {
        let cfg = self.config();
        let max_body = cfg.shadow.max_body;
        let call = async {
            let res = self.legacy_client.request(req).await.ok()?;
            let (parts, body) = res.into_parts();
            let hint = body_hint(&parts.headers);
            match read_limited(body, max_body, hint, &self.budget)
                .await
                .ok()?
            {
                (CandidateBody::Complete(b), held) => Some((parts.status, parts.headers, b, held)),
                _ => None,
            }
        };
        crate::telemetry::secondary_call();
        tokio::time::timeout(cfg.legacy.timeout, call)
            .await
            .ok()
            .flatten()
    }

    fn paused(&self) -> bool {
        let until = self.paused_until.load(Ordering::Relaxed);
        until != 0 && (self.epoch.elapsed().as_millis() as u64) < until
    }

    fn pause_for(&self, d: Duration) {
        let until = (self.epoch.elapsed() + d.min(MAX_BACKOFF)).as_millis() as u64;
        self.paused_until.fetch_max(until, Ordering::Relaxed);
        tracing::warn!(
            pause_ms = d.min(MAX_BACKOFF).as_millis() as u64,
            "candidate answered 429: mirroring paused"
        );
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
        let secondary = Self::secondary(&cfg, parts);
        Mirror {
            shadow: self.clone(),
            candidate: self.spawn_candidate(plan, &parts.headers, body),
            route,
            secondary,
            cfg,
        }
    }

    /// Builds the candidate request and sends it on a task of its own. The caller's headers are
    /// not copied, except those in `forward_headers` (and `content-type` when there is a body).
    fn spawn_candidate(
        self: &Arc<Self>,
        plan: Plan,
        caller: &HeaderMap,
        body: Bytes,
    ) -> tokio::task::JoinHandle<Candidate> {
        let cfg = &plan.cfg.candidate;
        let mut headers = HeaderMap::new();
        for h in &cfg.forward_headers {
            for v in caller.get_all(h) {
                headers.append(h.clone(), v.clone());
            }
        }
        if !body.is_empty() {
            if let Some(ct) = caller.get(http::header::CONTENT_TYPE) {
                headers.insert(http::header::CONTENT_TYPE, ct.clone());
            }
        }
        for (k, v) in &cfg.headers {
            headers.insert(k.clone(), v.clone());
        }
        let base = cfg.base_url.clone().expect("checked at start-up");
        if let Some(host) = base
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, host);
        }
        let req = upstream::join(&base, &plan.target.path_and_query).and_then(|uri| {
            let mut req = Request::builder()
                .method(plan.target.method.clone())
                .uri(uri)
                .body(Full::new(body))?;
            *req.headers_mut() = headers;
            Ok(req)
        });
        let this = self.clone();
        let guard = self.tracker.track();
        let cfg_arc = plan.cfg.clone();
        self.rt.spawn(
            async move {
                let _guard = guard;
                let _permit = plan.permit;
                let t0 = Instant::now();
                let ms = || t0.elapsed().as_secs_f64() * 1000.0;
                let req = match req {
                    Ok(r) => r,
                    Err(e) => {
                        return Candidate::Failed {
                            ms: 0.0,
                            reason: format!("invalid candidate request: {e}"),
                        }
                    }
                };
                let timeout = cfg_arc.candidate.timeout;
                let limit = cfg_arc.shadow.max_body;
                let call = async {
                    let res = this
                        .client
                        .request(req)
                        .await
                        .map_err(|e| upstream::error_chain(&e))?;
                    let (parts, body) = res.into_parts();
                    let hint = body_hint(&parts.headers);
                    if parts.status == StatusCode::TOO_MANY_REQUESTS
                        && cfg_arc.shadow.backoff_on_429
                    {
                        this.pause_for(retry_after(&parts.headers).unwrap_or(DEFAULT_BACKOFF));
                    }
                    let body = read_limited(body, limit, hint, &this.budget)
                        .await
                        .map_err(|e| format!("candidate body: {e}"))?;
                    Ok::<_, String>((parts, body))
                };
                match tokio::time::timeout(timeout, call).await {
                    Err(_) => Candidate::Timeout { ms: ms() },
                    Ok(Err(reason)) => Candidate::Failed { ms: ms(), reason },
                    Ok(Ok((parts, (body, held)))) => Candidate::Response {
                        status: parts.status,
                        headers: parts.headers,
                        ms: ms(),
                        body,
                        held,
                    },
                }
            }
            .in_current_span(),
        )
    }

    /// Waits for both sides, compares, and records. Runs on its own task.
    fn spawn_compare(
        self: &Arc<Self>,
        meta: Meta,
        route: Option<usize>,
        legacy: LegacyPending,
        candidate: tokio::task::JoinHandle<Candidate>,
        secondary: Option<Request<Full<Bytes>>>,
        cfg: Arc<Config>,
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
                        body,
                    } => {
                        let (body, held) = body.await.unwrap_or_default();
                        let legacy = Legacy::Response {
                            status,
                            headers,
                            ms,
                            body,
                        };
                        (legacy, held)
                    }
                };
                let candidate = match candidate.await {
                    Ok(c) => c,
                    Err(e) if e.is_panic() => {
                        let msg = panic_message(&*e.into_panic());
                        tracing::error!(panic = %msg, "candidate call panicked: recorded as internal_error");
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
                let run = move || {
                    let cfg = &*cfg;
                    let rules = route.map_or(&cfg.diff.rules, |i| &cfg.routes[i].rules);
                    if let Some(second) = second {
                        shadow.learn_noise(&meta, &mut legacy, second, rules, cfg);
                    }
                    let (cand, leg) = route.map_or((None, None), |i| {
                        let m = &cfg.routes[i].mappings;
                        (
                            m.candidate_for(meta.account.as_deref()).map(|c| &**c),
                            m.legacy.as_deref(),
                        )
                    });
                    let maps = compare::Maps {
                        candidate: cand,
                        legacy: leg,
                        runner: Some(&shadow.mapper),
                        timeout: cfg.mappings.timeout,
                    };
                    compare::compare(
                        meta,
                        legacy,
                        candidate,
                        rules,
                        cfg,
                        Some((&shadow.memo, route)),
                        maps,
                    )
                };
                // A panic in the comparison (a bug reached by hostile bytes) must not lose the
                // exchange silently: it is caught and recorded as `internal_error`.
                let record = if big {
                    match tokio::task::spawn_blocking(move || caught(meta_copy, run)).await {
                        Ok(r) => r,
                        Err(e) => {
                            // Cancelled: the runtime is shutting down.
                            tracing::warn!(error = %e, "comparison cancelled");
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
                this.record(record);
            }
            .in_current_span(),
        );
    }
}

impl Shadow {
    /// Compares legacy's two answers and hands the differing fields to the store.
    fn learn_noise(
        &self,
        meta: &Meta,
        legacy: &mut Legacy,
        (status, headers, body, _held): (StatusCode, HeaderMap, Bytes, Held),
        rules: &diff::Rules,
        cfg: &Config,
    ) {
        let Legacy::Response {
            status: l_status,
            headers: l_headers,
            body: Captured::Complete(chunks),
            ..
        } = legacy
        else {
            return;
        };
        if l_status.as_u16() >= 300 {
            return;
        }
        let first = capture::join(std::mem::take(chunks));
        chunks.push(first.clone());
        let a = compare::Side {
            status: *l_status,
            headers: l_headers,
            body: first,
        };
        let b = compare::Side {
            status,
            headers: &headers,
            body,
        };
        if let Some(fields) = compare::noise_sample(&a, &b, rules, cfg) {
            tracing::debug!(fields = fields.len(), "noise sample");
            self.store.noise(crate::record::NoiseSample {
                route: RouteKey::from_route(meta.route.as_deref()),
                at: meta.started_at,
                fields,
            });
        }
    }
}

/// A mirrored exchange in flight: the candidate call started, legacy's answer awaited.
pub struct Mirror {
    shadow: Arc<Shadow>,
    candidate: tokio::task::JoinHandle<Candidate>,
    route: Option<usize>,
    /// The second legacy call for noise learning, when this exchange was sampled for one.
    secondary: Option<Request<Full<Bytes>>>,
    /// The configuration the exchange was decided with.
    cfg: Arc<Config>,
}

impl Mirror {
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
            self.candidate,
            secondary,
            self.cfg,
        );
    }
}

/// Legacy's answer as the proxy hands it over: the head at once, the body copy when the tee ends.
pub enum LegacyPending {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        ms: f64,
        body: oneshot::Receiver<(Captured, Held)>,
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

/// The body length announced by `content-length`, if any.
fn body_hint(h: &HeaderMap) -> Option<usize> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a body up to `limit` bytes, every byte taken from `budget` first. With a
/// `content-length` (`hint`) the buffer is allocated once at its size, not grown by doubling.
async fn read_limited(
    mut body: hyper::body::Incoming,
    limit: usize,
    hint: Option<usize>,
    budget: &MemoryBudget,
) -> Result<(CandidateBody, Held), hyper::Error> {
    let mut held = budget.hold();
    if let Some(n) = hint {
        if n > limit {
            return Ok((CandidateBody::TooLarge, Held::default()));
        }
        if !held.grow(n) {
            return Ok((CandidateBody::OverBudget, Held::default()));
        }
    }
    let mut buf = BytesMut::with_capacity(hint.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            if buf.len() + d.len() > limit {
                return Ok((CandidateBody::TooLarge, Held::default()));
            }
            let beyond = (buf.len() + d.len()).saturating_sub(held.bytes());
            if beyond > 0 && !held.grow(beyond) {
                return Ok((CandidateBody::OverBudget, Held::default()));
            }
            buf.extend_from_slice(d);
        }
    }
    if !held.complete(buf.len()) {
        return Ok((CandidateBody::OverBudget, Held::default()));
    }
    Ok((CandidateBody::Complete(buf.freeze()), held))
}

/// Runs a comparison; a panic becomes an `internal_error` record (with the panic's message)
/// instead of a lost exchange.
fn caught(meta: Meta, run: impl FnOnce() -> crate::record::Record) -> crate::record::Record {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic_message(&*panic);
            tracing::error!(panic = %msg, "comparison panicked: recorded as internal_error");
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

/// How long a 429 asks us to wait: `Retry-After` (seconds or an HTTP date), `RateLimit-Reset`
/// (seconds), or the `t` parameter of the structured `RateLimit` header.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = get("retry-after") {
        if let Ok(s) = v.parse::<u64>() {
            return Some(Duration::from_secs(s));
        }
        if let Ok(t) = humantime::parse_rfc3339_weak(v).or_else(|_| httpdate(v)) {
            return Some(t.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    if let Some(s) = get("ratelimit-reset")
        .or_else(|| get("x-ratelimit-reset"))
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Some APIs send an epoch timestamp here; anything that large is one.
        if s > 1_000_000_000 {
            // A hostile value can lie past what SystemTime holds: then it is "as long as
            // possible" (the pause is capped where it is used), never an overflow.
            return Some(
                SystemTime::UNIX_EPOCH
                    .checked_add(Duration::from_secs(s))
                    .map_or(Duration::MAX, |at| {
                        at.duration_since(SystemTime::now()).unwrap_or_default()
                    }),
            );
        }
        return Some(Duration::from_secs(s));
    }
    if let Some(v) = get("ratelimit") {
        for item in v.split([';', ',']) {
            if let Some(t) = item
                .trim()
                .strip_prefix("t=")
                .and_then(|t| t.parse::<u64>().ok())
            {
                return Some(Duration::from_secs(t));
            }
        }
    }
    None
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(v: &str) -> Result<SystemTime, ()> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts[..] else {
        return Err(());
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == mon)
    .ok_or(())?
        + 1;
    let s = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&s).map_err(|_| ())
}

fn sampled(rate: f64) -> bool {
    rate >= 1.0
        || (rate > 0.0 && ((crate::record::random_u64() >> 11) as f64 / (1u64 << 53) as f64) < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert("ratelimit", "\"default\";r=0;t=5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        // An epoch past what SystemTime holds panicked here (found by tests/parsers_unicode.rs).
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", "18446744073709551615".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::MAX));
    }

    #[test]
    fn a_panicking_comparison_is_recorded_as_internal_error() {
        let meta = Meta {
            started_at: SystemTime::now(),
            request_id: "r".into(),
            route: Some("x".into()),
            method: "GET".into(),
            path: "/x".into(),
            account: None,
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
