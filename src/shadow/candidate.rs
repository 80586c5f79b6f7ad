//! The candidate call: the request built from the plan, sent on a task of its own, its body
//! read within `max_body` and the memory budget; a 429 pauses mirroring for as long as it asks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use tracing::Instrument;

use super::*;

/// Longest pause after a candidate 429; a larger Retry-After is capped to this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Pause after a 429 that says nothing about when to come back.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

impl Shadow {
    /// Pauses mirroring after a candidate 429 for `d` (capped): for the request's account, or
    /// for every account when none is known or `[shadow] rate_limit_scope = "global"`.
    fn pause_for(&self, whose: Whose<'_>, d: Duration, scope: crate::config::RateLimitScope) {
        let d = d.min(MAX_BACKOFF);
        let paused = whose
            .account
            .filter(|_| scope == crate::config::RateLimitScope::Account);
        self.quotas
            .pause(crate::quota::Vendor::Candidate, paused, d);
        tracing::warn!(
            pause_ms = d.as_millis() as u64,
            scope = if paused.is_some() {
                "account"
            } else {
                "global"
            },
            request_id = whose.request_id,
            route = whose.route,
            account = whose.account,
            "candidate answered 429: mirroring paused"
        );
    }

    /// Builds the candidate request and sends it on a task of its own. The caller's headers are
    /// not copied, except those in `forward_headers` (and `content-type` when there is a body).
    /// A route with a request mapping builds its request(s) on that task, once the mapping has
    /// run ([`super::fanout`]).
    pub(super) fn spawn_candidate(
        self: &Arc<Self>,
        mut plan: Plan,
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
        if !body.is_empty() && plan.request.is_none() {
            // The body goes as the caller sent it: with its type and its encoding.
            for h in [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING] {
                if let Some(v) = caller.get(&h) {
                    headers.insert(h, v.clone());
                }
            }
        }
        for (k, v) in cfg.headers.iter().chain(&plan.target.headers) {
            headers.insert(k.clone(), v.clone());
        }
        let base = cfg.base_url.clone().expect("checked at start-up");
        // The authority without any user info (`user:pw@host` must never go out as a Host).
        if let Some(host) = base.authority().and_then(|a| {
            let hostport = a.as_str().rsplit('@').next().unwrap_or_default();
            HeaderValue::from_str(hostport).ok()
        }) {
            headers.insert(http::header::HOST, host);
        }
        let this = self.clone();
        let guard = self.tracker.track();
        let cfg_arc = plan.cfg.clone();
        // A served request's candidate call is on the caller's path: it runs on the caller's
        // runtime (normal priority) with a client of its own; a shadow call on the shadow runtime.
        let served = plan.serve.is_some();
        let (rt, client) = if served {
            (
                tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.rt.clone()),
                self.serve_client.clone(),
            )
        } else {
            (self.rt.clone(), self.client.clone())
        };
        let permit = plan.permit.take();
        rt.spawn(
            async move {
                let _guard = guard;
                let _permit = permit;
                let t0 = Instant::now();
                let ms = || t0.elapsed().as_secs_f64() * 1000.0;
                let timeout = cfg_arc.candidate.timeout;
                let mapped = plan.request.is_some();
                let call = async {
                    match plan.request.take() {
                        Some(pending) => {
                            super::fanout::mapped(&this, &client, &plan, *pending, headers, body)
                                .await
                        }
                        None if plan.page.is_some() => {
                            super::walk::walked(&this, &client, &plan, headers).await
                        }
                        None => {
                            let target = Target {
                                base: &base,
                                method: plan.target.method.clone(),
                                path_and_query: &plan.target.path_and_query,
                                headers,
                                body,
                            };
                            Ok(this
                                .call(&client, target, plan.whose(), &cfg_arc)
                                .await?
                                .into())
                        }
                    }
                };
                // A request-mapped route's mapping is not the candidate's time: it times its
                // calls itself.
                let outcome = if mapped {
                    Ok(call.await)
                } else {
                    tokio::time::timeout(timeout, call).await
                };
                match outcome {
                    Err(_) | Ok(Ok(Answer::TimedOut)) => Candidate::Timeout {
                        ms: ms(),
                        limit: timeout,
                    },
                    Ok(Err(reason)) => Candidate::Failed { ms: ms(), reason },
                    Ok(Ok(Answer::NotCalled(why))) => Candidate::NotCalled { ms: ms(), why },
                    Ok(Ok(Answer::Response(parts, (body, held)))) => Candidate::Response {
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

    /// One call to the candidate: its answer head observed (quotas, the breaker, a 429's pause)
    /// and its body read within `max_body` and the memory budget.
    pub(super) async fn call(
        &self,
        client: &HttpClient<Full<Bytes>>,
        t: Target<'_>,
        whose: Whose<'_>,
        cfg: &Config,
    ) -> Result<(http::response::Parts, (CandidateBody, Held)), String> {
        let account = whose.account;
        let uri = upstream::join(t.base, t.path_and_query)
            .map_err(|e| format!("invalid candidate request: {e}"))?;
        let mut req = Request::builder()
            .method(t.method)
            .uri(uri)
            .body(Full::new(t.body))
            .map_err(|e| format!("invalid candidate request: {e}"))?;
        *req.headers_mut() = t.headers;
        let res = client
            .request(req)
            .await
            .map_err(|e| upstream::error_chain(&e))?;
        let (parts, body) = res.into_parts();
        let hint = body_hint(&parts.headers);
        self.quotas
            .observe(crate::quota::Vendor::Candidate, account, &parts.headers);
        self.breakers.result(
            crate::quota::Vendor::Candidate,
            account,
            parts.status.as_u16(),
        );
        if parts.status == StatusCode::TOO_MANY_REQUESTS && cfg.shadow.backoff_on_429 {
            self.pause_for(
                whose,
                retry_after(&parts.headers).unwrap_or(DEFAULT_BACKOFF),
                cfg.shadow.rate_limit_scope,
            );
        }
        let body = read_candidate_body(body, cfg.shadow.max_body, hint, &self.budget)
            .await
            .map_err(|e| format!("candidate body: {e}"))?;
        Ok((parts, body))
    }
}

/// Whose request a candidate call serves: its account (its quota, its breaker, a 429's pause)
/// and, for the log, the exchange's request id and route.
#[derive(Clone, Copy)]
pub(super) struct Whose<'a> {
    pub account: Option<&'a str>,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
}

impl Plan {
    pub(super) fn whose(&self) -> Whose<'_> {
        Whose {
            account: self.account.as_deref(),
            request_id: &self.request_id,
            route: self.route.map(|i| self.cfg.routes[i].name.as_str()),
        }
    }
}

/// One candidate request, built.
pub(super) struct Target<'a> {
    pub base: &'a http::Uri,
    pub method: http::Method,
    pub path_and_query: &'a str,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the candidate side ends with, before its time is taken.
pub(super) enum Answer {
    Response(http::response::Parts, (CandidateBody, Held)),
    NotCalled(super::compare::NotCalled),
    /// The call(s) ran past `[candidate] timeout` (a request-mapped route times its calls
    /// itself, after the mapping).
    TimedOut,
}

impl From<(http::response::Parts, (CandidateBody, Held))> for Answer {
    fn from((p, b): (http::response::Parts, (CandidateBody, Held))) -> Self {
        Self::Response(p, b)
    }
}

/// The body length announced by `content-length`, if any.
pub(super) fn body_hint(h: &HeaderMap) -> Option<usize> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a body up to `limit` bytes, every byte taken from `budget` first. With a
/// `content-length` (`hint`) the buffer is allocated once at its size, not grown by doubling.
pub(super) async fn read_candidate_body(
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

/// How long a 429 asks us to wait: `Retry-After` (seconds or an HTTP date), `RateLimit-Reset`
/// (seconds), or the `t` parameter of the structured `RateLimit` header.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = get("retry-after") {
        if let Ok(s) = v.parse::<u64>() {
            return Some(Duration::from_secs(s));
        }
        // An HTTP date (RFC 9110: IMF-fixdate, or the obsolete RFC 850 and asctime forms), or
        // an RFC 3339 time some vendors send instead.
        let when = httpdate::parse_http_date(v)
            .ok()
            .or_else(|| humantime::parse_rfc3339_weak(v).ok());
        if let Some(t) = when {
            return Some(t.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    if let Some(s) = get("ratelimit-reset")
        .or_else(|| get("x-ratelimit-reset"))
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(crate::quota::reset_of(s));
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
}
