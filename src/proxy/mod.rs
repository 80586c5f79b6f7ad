//! The caller-facing side: every request goes to legacy, and legacy's answer streams back
//! unchanged. Mirroring is decided by [`crate::shadow`]; this module only hands it the request
//! and, through the tee, a copy of legacy's body.
//!
//! The caller's latency is legacy's: the candidate call runs on its own task, and the comparison
//! starts once the tee has seen legacy's last byte. A recorded exchange's work runs on a task of
//! its own ([`Proxy::detached`]): a caller that leaves does not cancel it, and it is recorded.
//!
//! A request of the candidate cohort ([`Proxy::serve`]) gets the candidate's answer only once
//! legacy's head said success, the answer is a document fit to serve ([`serve`]) and, in a phase
//! with `verify`, equal to legacy's at every field; legacy's otherwise, with the reason.

pub mod body;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::record::{Fallback, Meta, Outcome, ServedBy, SkipReason};
use crate::shadow::{compare, Decision, LegacyPending, Mirror, Shadow};
use crate::translate;
use crate::upstream::{self, HttpClient};
use body::{Owner, ReqBody, ResBody};

/// The proxy's shared state.
pub struct Proxy {
    pub shadow: Arc<Shadow>,
    client: HttpClient<ReqBody>,
    base: Uri,
    timeout: Duration,
    body_timeout: Duration,
    max_body: usize,
}

/// Why legacy could not answer; becomes a 502 or 504 with a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("legacy did not answer within {0:?}")]
    Timeout(Duration),
    #[error("legacy unreachable: {0}")]
    Unreachable(String),
    #[error("legacy sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("invalid legacy request: {0}")]
    Request(String),
}

impl LegacyError {
    /// The one place legacy errors become responses.
    fn to_response(&self) -> Response<ResBody> {
        let (status, code) = match self {
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "legacy_timeout"),
            Self::Unreachable(_) => (StatusCode::BAD_GATEWAY, "legacy_unreachable"),
            Self::InvalidResponse(_) => (StatusCode::BAD_GATEWAY, "legacy_invalid_response"),
            Self::Request(_) => (StatusCode::BAD_GATEWAY, "legacy_request_invalid"),
        };
        json_response(status, code, &self.to_string())
    }
}

/// A small JSON error response of the proxy's own.
pub fn json_response(status: StatusCode, error: &str, detail: &str) -> Response<ResBody> {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let mut res = Response::new(ResBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl Proxy {
    pub fn new(shadow: Arc<Shadow>, client: HttpClient<ReqBody>) -> Self {
        let cfg = shadow.config();
        Self {
            base: cfg.legacy.base_url.clone().expect("checked at start-up"),
            timeout: cfg.legacy.timeout,
            body_timeout: cfg.legacy.body_timeout,
            max_body: cfg.shadow.max_body,
            client,
            shadow,
        }
    }

    /// Serves one caller request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResBody> {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            // Printable ASCII only (`to_str` also lets a tab through).
            .filter(|v| !v.is_empty() && v.len() <= 128 && !v.contains('\t'))
            .map_or_else(crate::record::request_id, str::to_owned);
        // A debug span: at the default level it is never built (formatting its fields and the
        // registry's slot were ~8 % of the caller's runtime, BENCHMARKS.md §20.17); the few
        // warnings about one exchange name its request id, route and account themselves.
        let span = tracing::debug_span!(
            "exchange",
            // As text, not `%`: the caller chose it, and a pretty log quotes and escapes text
            // (`X-Request-Id: a route="x"` must not read as two fields).
            request_id = request_id.as_str(),
            method = %req.method(),
            path = req.uri().path(),
            route = tracing::field::Empty,
            account = tracing::field::Empty,
        );
        self.exchange(req, peer, request_id).instrument(span).await
    }

    async fn exchange(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: String,
    ) -> Response<ResBody> {
        let t0 = Instant::now();
        let (mut parts, body) = req.into_parts();
        // shadowdiff is a reverse proxy: a request line naming another host (absolute form,
        // what a forward proxy gets) or a tunnel is refused, never forwarded.
        if parts.method == http::Method::CONNECT {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT: shadowdiff is not a forward proxy",
            );
        }
        if parts.version < Version::HTTP_2 && parts.uri.scheme().is_some() {
            return json_response(
                StatusCode::BAD_REQUEST,
                "absolute_form",
                "a request target with a scheme and host: shadowdiff is not a forward proxy; send the path only",
            );
        }
        // Dot-segments removed before routing and before either upstream URL is built (most
        // paths have no `.`, `%` or `\`: nothing to do).
        let mut escapes = false;
        if parts
            .uri
            .path()
            .bytes()
            .any(|b| matches!(b, b'.' | b'%' | b'\\'))
        {
            let normal = translate::normalize_path(parts.uri.path());
            escapes = normal.escapes;
            if normal.path != parts.uri.path() {
                match with_path(&parts.uri, &normal.path) {
                    Some(u) => parts.uri = u,
                    None => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            "invalid_path",
                            "the request path cannot be normalised",
                        )
                    }
                }
            }
        }
        let (mut meta, decision) = self.shadow.decide(&parts, request_id, escapes);
        let span = tracing::Span::current();
        if let Some(r) = &meta.route {
            span.record("route", r.as_str());
        }
        if let Some(a) = &meta.account {
            span.record("account", a.as_str());
        }

        // For a mirrored request, read its body first (up to max_body): both vendors get it.
        let mut mirror = None;
        let mut skip = None;
        let pending = parts.extensions.remove::<body::BodyPending>();
        let legacy_body = match decision {
            Decision::Off => {
                crate::telemetry::not_mirrored(meta.route.as_deref());
                let mut parts = parts;
                let res = self
                    .forward(&mut parts, ReqBody::streaming(body).pending(pending), peer)
                    .await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                return self.legacy_answer(res, ms, None, None, meta);
            }
            Decision::Skip(why, reason) => {
                if meta.serving.cohort {
                    meta.serving.fallback = Some(Fallback::NotCalled(why));
                }
                skip = Some((Outcome::Skipped(why), reason));
                ReqBody::streaming(body).pending(pending)
            }
            Decision::Mirror(plan) => {
                let (head, rest) = if body.is_end_stream() {
                    (Bytes::new(), None)
                } else {
                    match buffer(body, self.max_body).await {
                        Ok(v) => v,
                        Err(e) => {
                            return json_response(
                                StatusCode::BAD_REQUEST,
                                "request_body",
                                &format!("reading the request body: {e}"),
                            )
                        }
                    }
                };
                if rest.is_some() {
                    // Too large to mirror: legacy still gets all of it.
                    if meta.serving.cohort {
                        meta.serving.fallback = Some(Fallback::TooLarge);
                    }
                    skip = Some((
                        Outcome::TooLarge,
                        format!("request body over {} bytes", self.max_body),
                    ));
                } else if let Some(serve) = plan.serve {
                    let m = self.shadow.start(plan, &parts, head.clone());
                    return self
                        .detached(move |this, caller| {
                            this.serve(parts, head, m, meta, serve, peer, caller)
                        })
                        .await;
                } else {
                    mirror = Some(self.shadow.start(plan, &parts, head.clone()));
                }
                ReqBody::buffered(head, rest).pending(pending)
            }
        };
        // A recorded exchange: its work goes on when the caller leaves (the comparison still
        // runs when both answers are in, and the exchange is recorded, `served_by = none`).
        self.detached(move |this, caller| async move {
            let (mut parts, mut meta) = (parts, meta);
            let res = this.forward(&mut parts, legacy_body, peer).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if caller.is_closed() {
                meta.serving.served_by = ServedBy::Nobody;
            }
            caller
                .answer(this.legacy_answer(res, ms, mirror, skip, meta))
                .await;
        })
        .await
    }

    /// Runs an exchange's work on a task of its own and waits for the caller's response. When
    /// the caller goes away (hyper drops this future), the task goes on: it sees
    /// [`Caller::is_closed`], finishes what it must and records the exchange. Counted by the
    /// tracker, so that shutdown and quiesce wait for it.
    async fn detached<F, Fut>(self: &Arc<Self>, work: F) -> Response<ResBody>
    where
        F: FnOnce(Arc<Self>, Caller) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let guard = self.shadow.tracker.track();
        let fut = work(self.clone(), Caller(tx));
        tokio::spawn(
            async move {
                let _guard = guard;
                fut.await;
            }
            .in_current_span(),
        );
        rx.await.unwrap_or_else(|_| {
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the exchange's task ended without an answer",
            )
        })
    }

    /// A request of the candidate cohort. Legacy is called in parallel (the authority on who
    /// may read what, the fallback and the other side of the comparison) unless the phase
    /// skips it. The candidate's answer reaches the caller only when legacy's head says
    /// success, the candidate answered within the deadline with legacy's status and a JSON
    /// document, its mapping ran and, with `verify`, it equals legacy's document at every field
    /// (without `verify`, a route with unverified rules never gets here: `Shadow::decide` makes
    /// it a fallback, `unverified_rules`). Otherwise
    /// legacy's answer, with the reason recorded. A candidate call still running once the
    /// caller's answer is decided is cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        self: Arc<Self>,
        parts: http::request::Parts,
        head: Bytes,
        mut mirror: Mirror,
        mut meta: Meta,
        serve: crate::shadow::Serve,
        peer: SocketAddr,
        mut caller: Caller,
    ) {
        let t0 = Instant::now();
        let (runner, timeout) = mirror.mapper();
        let m = serve::Mapper {
            chain: mirror.candidate_chain(meta.account.as_deref()),
            runner,
            timeout,
            max_body: self.max_body,
            ids: mirror.served_ids(meta.account.as_deref()),
            fan_out: mirror.fans_out(),
            paging: mirror.paging(),
        };
        if !serve.call_legacy {
            // No legacy call: no fallback and no comparison (docs/rollout.md).
            tokio::select! {
                () = mirror.wait_candidate() => {}
                () = tokio::time::sleep(serve.deadline) => {
                    mirror.cancel_at_deadline(serve.deadline);
                }
                () = caller.closed() => {
                    mirror.cancel("the caller went away");
                    meta.serving.served_by = ServedBy::Nobody;
                    mirror.abandoned(meta, None);
                    return;
                }
            }
            let (res, failure) = match mirror.ready() {
                Some(c) => serve::respond_alone(c, m).await,
                None => (
                    json_response(
                        StatusCode::BAD_GATEWAY,
                        "candidate_failed",
                        "the candidate gave no answer",
                    ),
                    Some(Fallback::ConnectionError),
                ),
            };
            meta.serving.served_by = ServedBy::Candidate;
            mirror.served_alone(meta, failure);
            caller.answer(res).await;
            return;
        }
        // Legacy in parallel: its head decides whether the candidate's answer may be served.
        let mut legacy = tokio::spawn(self.clone().forward_owned(parts, head, peer));
        let deadline = tokio::time::sleep(serve.deadline);
        tokio::pin!(deadline);
        let mut legacy_res: Option<(Result<Response<Incoming>, LegacyError>, f64)> = None;
        let decided: Result<(), Fallback> = loop {
            let waiting = mirror.ready().is_none();
            if !waiting && legacy_res.is_some() {
                break Ok(());
            }
            tokio::select! {
                biased;
                () = caller.closed() => {
                    legacy.abort();
                    mirror.cancel("the caller went away");
                    meta.serving.served_by = ServedBy::Nobody;
                    let status = legacy_res
                        .as_ref()
                        .and_then(|(r, ms)| r.as_ref().ok().map(|r| (r.status().as_u16(), *ms)));
                    mirror.abandoned(meta, status);
                    return;
                }
                r = &mut legacy, if legacy_res.is_none() => {
                    let r = joined(r);
                    let verdict = match &r.0 {
                        Ok(res) if res.status().is_success() => None,
                        Ok(_) => Some(Fallback::LegacyStatus),
                        Err(_) => Some(Fallback::LegacyFailed),
                    };
                    legacy_res = Some(r);
                    if let Some(f) = verdict {
                        mirror.cancel("legacy's answer was decided first (not a success)");
                        break Err(f);
                    }
                }
                () = mirror.wait_candidate(), if waiting => {}
                () = &mut deadline, if waiting => {
                    mirror.cancel_at_deadline(serve.deadline);
                    break Err(Fallback::Deadline);
                }
            }
        };
        let served = match decided {
            Err(f) => Err(f),
            Ok(()) => {
                let legacy_status = legacy_res
                    .as_ref()
                    .and_then(|(r, _)| r.as_ref().ok().map(Response::status));
                // The deadline covers the mapping too.
                match mirror.ready() {
                    Some(c) => tokio::time::timeout_at(
                        deadline.deadline(),
                        serve::respond(c, m, legacy_status),
                    )
                    .await
                    .unwrap_or(Err(Fallback::Deadline)),
                    None => Err(Fallback::ConnectionError),
                }
            }
        };
        let (res, ms) = match legacy_res {
            Some(r) => r,
            None => joined(legacy.await),
        };
        crate::telemetry::legacy_latency(meta.route.as_deref(), ms);
        let served = match served {
            Ok(s) => s,
            Err(reason) => {
                tracing::debug!(reason = reason.as_str(), "served by legacy: fallback");
                meta.serving.fallback = Some(reason);
                if caller.is_closed() {
                    meta.serving.served_by = ServedBy::Nobody;
                }
                caller
                    .answer(self.legacy_answer(res, ms, Some(mirror), None, meta))
                    .await;
                return;
            }
        };
        let Ok(res) = res else {
            unreachable!("served only after legacy's head said success")
        };
        let (mut rparts, body) = res.into_parts();
        upstream::strip_hop_by_hop(&mut rparts.headers);
        let (mut tee, copy) = ResBody::tee(
            body,
            self.max_body,
            self.body_timeout,
            &self.shadow.budget,
            Owner::of(&meta),
        );
        let tee_at = Instant::now();
        if serve.verify {
            // Legacy's whole body, then the strict comparison, before anything is served.
            let (frames, complete) = read_frames(&mut tee, self.max_body).await;
            let verdict = if complete {
                self.verify(&rparts, &frames, &served, &mirror).await
            } else {
                Err(Fallback::Unverified)
            };
            if let Err(reason) = verdict {
                meta.serving.fallback = Some(reason);
                if caller.is_closed() {
                    meta.serving.served_by = ServedBy::Nobody;
                }
                let headers = rparts.headers.clone();
                mirror.finish(
                    meta,
                    LegacyPending::Response {
                        status: rparts.status,
                        headers,
                        ms,
                        at: tee_at,
                        body: copy,
                    },
                );
                let body = ResBody::prefixed(frames, tee);
                caller.answer(Response::from_parts(rparts, body)).await;
                return;
            }
        }
        meta.serving.served_by = if caller.is_closed() {
            ServedBy::Nobody
        } else {
            ServedBy::Candidate
        };
        if let Some(doc) = served.mapped {
            mirror.set_premapped(doc);
        }
        mirror.finish(
            meta,
            LegacyPending::Response {
                status: rparts.status,
                headers: rparts.headers,
                ms,
                at: tee_at,
                body: copy,
            },
        );
        tracing::debug!(
            ms = t0.elapsed().as_secs_f64() * 1000.0,
            "served by the candidate"
        );
        caller.answer(served.response).await;
        // Legacy's body, read to its end for the comparison; nobody else gets it.
        drain(&mut tee).await;
    }

    /// Verified serving: the candidate's answer as the caller would get it, compared with
    /// legacy's complete answer by the served rules; `Ok` only for `match`.
    async fn verify(
        &self,
        legacy: &http::response::Parts,
        frames: &[Bytes],
        served: &serve::Served,
        mirror: &Mirror,
    ) -> Result<(), Fallback> {
        let cfg = mirror.shared_config();
        let route = mirror.route();
        let ce = legacy
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = crate::shadow::capture::join(frames.to_vec());
        let candidate = served.body.clone();
        let (l_status, c_status) = (legacy.status, served.status);
        // Both sides with legacy's headers (the compared ones are then equal): the body and
        // the status are what verification is about.
        let mut headers = legacy.headers.clone();
        headers.remove(header::CONTENT_ENCODING);
        let max = self.max_body;
        // The documents' memory comes from the comparisons' budget, given back when verified;
        // what it cannot hold is not verified (legacy's answer is served).
        let mut held = mirror.hold();
        let run = move || {
            // Decoded bytes past the received ones are asked of the budget too.
            let decoded = {
                let mut ask = crate::budget::past(body.len(), |n| held.grow(n));
                match crate::encoding::decode_within(ce.as_deref(), body, max, &mut ask) {
                    Ok(d) => d,
                    Err(crate::encoding::DecodeError::OverBudget) => {
                        return Outcome::Skipped(SkipReason::Memory)
                    }
                    // Legacy's own body cannot be read: nothing vouches for the candidate's.
                    Err(_) => return Outcome::NotJson,
                }
            };
            let rules = route.map_or(&cfg.diff.served_rules, |i| &cfg.routes[i].served_rules);
            let side = |status, body| compare::Side {
                status,
                headers: &headers,
                body,
            };
            compare::verdict(
                &side(l_status, decoded),
                &side(c_status, candidate),
                rules,
                &cfg,
                &mut held,
            )
        };
        let outcome = if served.body.len() >= VERIFY_INLINE_BYTES {
            tokio::task::spawn_blocking(run).await.ok()
        } else {
            Some(run())
        };
        match outcome {
            Some(Outcome::Match) => Ok(()),
            // Not checked: the budget could not hold the comparison (shadow load, or a document,
            // either side's, too big for what it had left). Not `unverified`, the reason for an
            // answer found different.
            Some(Outcome::Skipped(SkipReason::Memory)) => Err(Fallback::Memory),
            _ => Err(Fallback::Unverified),
        }
    }

    /// Sends the request to legacy from a task of its own; returns its answer and the time to
    /// its head (ms).
    async fn forward_owned(
        self: Arc<Self>,
        mut parts: http::request::Parts,
        head: Bytes,
        peer: SocketAddr,
    ) -> (Result<Response<Incoming>, LegacyError>, f64) {
        let t0 = Instant::now();
        let res = self
            .forward(&mut parts, ReqBody::buffered(head, None), peer)
            .await;
        (res, t0.elapsed().as_secs_f64() * 1000.0)
    }

    /// Legacy's answer (or failure) to the caller: streamed through, a copy teed off for the
    /// comparison when the request was mirrored; a skipped exchange recorded.
    fn legacy_answer(
        &self,
        res: Result<Response<Incoming>, LegacyError>,
        ms: f64,
        mirror: Option<Mirror>,
        skip: Option<(Outcome, String)>,
        meta: Meta,
    ) -> Response<ResBody> {
        crate::telemetry::legacy_latency(meta.route.as_deref(), ms);
        match res {
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    request_id = meta.request_id.as_str(),
                    method = meta.method.as_str(),
                    path = meta.path.as_str(),
                    route = meta.route.as_deref(),
                    account = meta.account.as_deref(),
                    "legacy failed"
                );
                if let Some(mirror) = mirror {
                    let legacy = LegacyPending::Failed {
                        ms,
                        reason: e.to_string(),
                    };
                    mirror.finish(meta, legacy);
                } else if let Some((outcome, reason)) = skip {
                    // Still recorded: the skip, with legacy's failure.
                    let r = compare::unmirrored(
                        meta,
                        outcome,
                        None,
                        Some(ms),
                        format!("{reason}; legacy failed: {e}"),
                    );
                    self.shadow.record(r);
                }
                e.to_response()
            }
            Ok(res) => {
                let (mut rparts, body) = res.into_parts();
                upstream::strip_hop_by_hop(&mut rparts.headers);
                let status = rparts.status;
                let owner = Owner::of(&meta);
                let body = if let Some(mirror) = mirror {
                    let (tee, copy) = ResBody::tee(
                        body,
                        self.max_body,
                        self.body_timeout,
                        &self.shadow.budget,
                        owner,
                    );
                    let legacy = LegacyPending::Response {
                        status,
                        headers: rparts.headers.clone(),
                        ms,
                        at: Instant::now(),
                        body: copy,
                    };
                    mirror.finish(meta, legacy);
                    tee
                } else {
                    if let Some((outcome, reason)) = skip {
                        let r = compare::unmirrored(
                            meta,
                            outcome,
                            Some(status.as_u16()),
                            Some(ms),
                            reason,
                        );
                        self.shadow.record(r);
                    }
                    ResBody::plain(body, self.body_timeout, owner)
                };
                Response::from_parts(rparts, body)
            }
        }
    }

    /// Sends the request to legacy: its path prefix kept, Host set to legacy's, hop-by-hop
    /// headers dropped, `x-forwarded-*` added.
    async fn forward(
        &self,
        parts: &mut http::request::Parts,
        body: ReqBody,
        peer: SocketAddr,
    ) -> Result<Response<Incoming>, LegacyError> {
        let headers = &mut parts.headers;
        let original_host = headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        upstream::strip_hop_by_hop(headers);
        let ip = peer.ip().to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        if let (false, Some(h)) = (headers.contains_key("x-forwarded-host"), original_host) {
            headers.insert("x-forwarded-host", h);
        }
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let req = upstream::request(
            &self.base,
            parts.method.clone(),
            pq,
            std::mem::take(&mut parts.headers),
            body,
        )
        .map_err(|e| LegacyError::Request(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(LegacyError::Timeout(self.timeout)),
            Ok(Err(e)) if is_parse_error(&e) => {
                Err(LegacyError::InvalidResponse(upstream::error_chain(&e)))
            }
            Ok(Err(e)) => Err(LegacyError::Unreachable(upstream::error_chain(&e))),
            Ok(Ok(res)) => Ok(res),
        }
    }
}

/// Bodies at least this large are verified on the blocking pool, not on a runtime worker.
const VERIFY_INLINE_BYTES: usize = 256 << 10;

/// Where an exchange's task sends the caller's response; tells whether the caller is gone.
pub struct Caller(tokio::sync::oneshot::Sender<Response<ResBody>>);

impl Caller {
    /// The caller went away (its connection closed before its answer was decided).
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Resolves when the caller goes away.
    async fn closed(&mut self) {
        self.0.closed().await;
    }

    /// Hands the response over. To a caller gone by now, the body is read to its end here
    /// instead: the copy a tee takes of legacy's body still reaches the comparison.
    async fn answer(self, res: Response<ResBody>) {
        if let Err(res) = self.0.send(res) {
            drain(&mut res.into_body()).await;
        }
    }
}

/// Reads a response body that no caller reads to its end (or its first error), keeping
/// nothing: a tee in it hands its copy to the comparison.
async fn drain(body: &mut ResBody) {
    body.unheard();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

/// Legacy's answer from the task that fetched it (a task that failed: legacy unreachable).
fn joined(
    r: Result<(Result<Response<Incoming>, LegacyError>, f64), tokio::task::JoinError>,
) -> (Result<Response<Incoming>, LegacyError>, f64) {
    r.unwrap_or_else(|e| {
        (
            Err(LegacyError::Unreachable(format!("legacy task: {e}"))),
            0.0,
        )
    })
}

/// Reads a response body's frames until it ends (`true`), fails or passes `limit` bytes
/// (`false`: the rest is still in `body`).
async fn read_frames(body: &mut ResBody, limit: usize) -> (Vec<Bytes>, bool) {
    let mut frames = Vec::new();
    let mut seen = 0usize;
    while !body.is_end_stream() {
        match body.frame().await {
            None => break,
            Some(Err(_)) => return (frames, false),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    seen += d.len();
                    frames.push(d);
                    if seen > limit {
                        return (frames, false);
                    }
                }
            }
        }
    }
    (frames, true)
}

/// Legacy answered, but not in HTTP: a malformed status line, headers or framing.
fn is_parse_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = src {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status())
        {
            return true;
        }
        src = c.source();
    }
    false
}

/// `uri` with another path (its query, and for HTTP/2 its scheme and authority, kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Reads a request body up to `limit` bytes. Returns the bytes and, when the body is larger,
/// the rest of it still to be read.
async fn buffer(
    mut body: Incoming,
    limit: usize,
) -> Result<(Bytes, Option<Incoming>), hyper::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            buf.extend_from_slice(d);
            if buf.len() > limit {
                return Ok((buf.freeze(), Some(body)));
            }
        }
    }
    Ok((buf.freeze(), None))
}
