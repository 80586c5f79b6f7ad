//! The candidate side of a route with a request mapping ([`crate::translate::request`]): the
//! mapping run on the caller's request (in a mapping worker), then one candidate call with the
//! body it built, or one call per element it fanned out to, whose answers are assembled into one
//! document in order.
//!
//! Every fan-out call is a shadow call like any other: its answer head feeds the account's quota
//! and breaker, a 429 pauses the account; a pause or an open breaker met half-way stops the
//! fan-out and the exchange is skipped (never compared on part of the batch). The extra calls
//! are taken from `[shadow] max_rps` too.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use super::candidate::{Answer, Target, Whose};
use super::compare::{CandidateBody, NotCalled};
use super::{Plan, Shadow};
use crate::budget::Held;
use crate::record::SkipReason;
use crate::translate::request::{self, Pending};
use crate::translate::{Each, IdLookup, Var};
use crate::upstream::HttpClient;

/// Fan-out calls in flight at once for one request.
const AT_ONCE: usize = 4;

/// The route a request-mapped plan was made for, and its request mapping.
fn mapped_route(plan: &Plan) -> (&crate::config::Route, &request::RequestMapping) {
    let route = &plan.cfg.routes[plan.route.expect("a request mapping belongs to a route")];
    let rm = route
        .candidate
        .request
        .as_ref()
        .expect("planned with a request mapping");
    (route, rm)
}

/// Runs the route's request mapping and the call(s) it asks for.
pub(super) async fn mapped(
    this: &Arc<Shadow>,
    client: &HttpClient<Full<Bytes>>,
    plan: &Plan,
    pending: Pending,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Answer, String> {
    let cfg = &plan.cfg;
    let (_, rm) = mapped_route(plan);
    let not_called = |why| Ok(Answer::NotCalled(why));

    let body = match crate::encoding::decode(
        pending.content_encoding.as_deref(),
        body,
        cfg.shadow.max_body,
    ) {
        Ok(b) => b,
        Err(e) => {
            return not_called(NotCalled::Skip(
                SkipReason::RequestBody,
                format!("request_body: the request body cannot be decoded ({e})"),
            ))
        }
    };
    let doc = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match crate::diff::parse_json(&body) {
            Ok(v) => v,
            Err(e) => {
                return not_called(NotCalled::Skip(
                    SkipReason::RequestBody,
                    format!("request_body: the request body is not JSON ({e}): the request mapping reads JSON"),
                ))
            }
        }
    };
    let input = pending.input(doc);
    let (runner, chain, limit) = (this.mapper.clone(), rm.chain.clone(), cfg.mappings.timeout);
    let out = tokio::task::spawn_blocking(move || runner.run(&chain, &input, limit))
        .await
        .map_err(|e| format!("request mapping: {e}"))?;
    let built = match out.map_err(|e| e.to_string()).and_then(request::built) {
        Ok(b) => b,
        Err(e) => return not_called(NotCalled::Mapping(e)),
    };

    // `[candidate] timeout` is the candidate's: it starts once the mapping has run (a slow
    // mapping is the mapping's `[mappings] timeout`, never a candidate timeout).
    let limit = cfg.candidate.timeout;
    match tokio::time::timeout(limit, send(this, client, plan, &pending, headers, built)).await {
        Ok(answer) => answer,
        Err(_) => Ok(Answer::TimedOut),
    }
}

/// The candidate call(s) a request mapping asked for.
async fn send(
    this: &Arc<Shadow>,
    client: &HttpClient<Full<Bytes>>,
    plan: &Plan,
    pending: &Pending,
    mut headers: HeaderMap,
    built: request::Built,
) -> Result<Answer, String> {
    let cfg = &plan.cfg;
    let (route, rm) = mapped_route(plan);
    let not_called = |why| Ok(Answer::NotCalled(why));
    // Legacy ids in the body the request mapping built (`[routes.ids] request`): the
    // candidate's partners, or no call at all.
    let mut built = built;
    if let Some(b) = built.body.as_mut() {
        let account = plan.account.as_deref().unwrap_or_default();
        if let Err(at) = this.ids.to_candidate_ids(account, &route.ids.request, b) {
            return not_called(NotCalled::Skip(
                SkipReason::UnpairedId,
                format!("unpaired_id: the legacy id at {at} of the candidate's request body has no partner in the id crosswalk yet: the candidate is never called with an id it does not know"),
            ));
        }
    }
    let body = match &built.body {
        Some(v) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?)
        }
        None => {
            headers.remove(http::header::CONTENT_TYPE);
            Bytes::new()
        }
    };
    let base = cfg.candidate.base_url.clone().expect("checked at start-up");
    let account_name = plan.account.clone().unwrap_or_default();
    let lookup = |kind: &str, legacy: &str| this.ids.to_candidate(&account_name, kind, legacy);
    let build = |each| {
        let mut ctx = pending.context(each);
        ctx.ids = Some(IdLookup(&lookup));
        route.candidate.build(
            &pending.method,
            &pending.path,
            pending.raw_query.as_deref(),
            &cfg.candidate.forward_query,
            &ctx,
        )
    };

    // A route whose templates name `{each.NAME}` fans out: no `each` (JSONata gives nothing for
    // an empty sequence) is an empty batch.
    let fans_out = route
        .candidate
        .path
        .iter()
        .chain(route.candidate.query.iter().flatten().map(|(_, t)| t))
        .flat_map(|t| t.vars())
        .any(|v| matches!(v, Var::Each(_)));
    let built = match built.each {
        None if fans_out => request::Built {
            each: Some(Vec::new()),
            ..built
        },
        _ => built,
    };
    let Some(items) = built.each else {
        let target = match build(Each::None) {
            Ok(t) => t,
            Err(v) => return not_called(missing(&v, None)),
        };
        let t = Target {
            base: &base,
            method: target.method,
            path_and_query: &target.path_and_query,
            headers,
            body,
        };
        return Ok(this.call(client, t, plan.whose(), cfg).await?.into());
    };

    if items.len() > rm.max_each {
        return not_called(NotCalled::Skip(
            SkipReason::FanOut,
            format!(
                "fan_out: the request asks for {} candidate calls, over the route's max_each ({})",
                items.len(),
                rm.max_each
            ),
        ));
    }
    if items.is_empty() {
        return not_called(NotCalled::Skip(
            SkipReason::FanOut,
            "fan_out: the request mapping returned no element to call: nothing compared".into(),
        ));
    }
    let mut targets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match build(Each::Item(item)) {
            Ok(t) => targets.push(t),
            Err(v) => return not_called(missing(&v, Some(i))),
        }
    }
    let shadow_call = plan.serve.is_none();
    // The first call was taken from `max_rps` when the request was mirrored; the others now.
    if shadow_call && items.len() > 1 && !this.take_rps(items.len() - 1) {
        return not_called(NotCalled::Skip(SkipReason::MaxRps, "max_rps".into()));
    }

    let account = plan.account.clone();
    let (request_id, route) = (plan.request_id.clone(), plan.route);
    let mut slots: Vec<Option<Result<_, String>>> = (0..targets.len()).map(|_| None).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut stopped = None;
    let mut next = targets.into_iter().enumerate();
    loop {
        while running.len() < AT_ONCE {
            let Some((i, target)) = next.next() else {
                break;
            };
            // A shadow fan-out stops where a single call would not have started.
            if shadow_call {
                let acct = account.as_deref();
                if this.quotas.paused(crate::quota::Vendor::Candidate, acct) {
                    stopped = Some(SkipReason::RateLimited);
                } else if this.breakers.admit(crate::quota::Vendor::Candidate, acct)
                    == crate::breaker::Admit::Skip
                {
                    stopped = Some(SkipReason::Breaker);
                }
                if stopped.is_some() {
                    break;
                }
            }
            let (this, client, cfg, base, headers, body, account) = (
                this.clone(),
                client.clone(),
                cfg.clone(),
                base.clone(),
                headers.clone(),
                body.clone(),
                account.clone(),
            );
            let request_id = request_id.clone();
            running.spawn(async move {
                let t = Target {
                    base: &base,
                    method: target.method,
                    path_and_query: &target.path_and_query,
                    headers,
                    body,
                };
                let whose = Whose {
                    account: account.as_deref(),
                    request_id: &request_id,
                    route: route.map(|i| cfg.routes[i].name.as_str()),
                };
                let r = this.call(&client, t, whose, &cfg).await;
                // Never the URL: its query may hold an account's credential.
                (
                    i,
                    r.map_err(|e| format!("fan-out call {} of the batch: {e}", i + 1)),
                )
            });
        }
        if stopped.is_some() && running.is_empty() {
            break;
        }
        match running.join_next().await {
            Some(Ok((i, r))) => slots[i] = Some(r),
            Some(Err(e)) => return Err(format!("fan-out call: {e}")),
            None => break,
        }
    }
    if let Some(reason) = stopped {
        return not_called(NotCalled::Skip(
            reason,
            format!(
                "{}: stopped after {} of {} fan-out calls",
                reason.as_str(),
                slots.iter().filter(|s| s.is_some()).count(),
                slots.len()
            ),
        ));
    }
    let mut answers = Vec::with_capacity(slots.len());
    for s in slots {
        answers.push(s.expect("every call joined")?);
    }
    Ok(assemble(this, &items, answers, cfg.shadow.max_body))
}

/// The skip for a template value an element (or the request) lacks.
fn missing(v: &Var, element: Option<usize>) -> NotCalled {
    let at = element.map_or(String::new(), |i| format!(" in \"each\"[{i}]"));
    match v {
        Var::Id(inner, kind) => NotCalled::Skip(
            SkipReason::UnpairedId,
            format!("unpaired_id: the legacy id in {inner}{at} has no {kind} partner in the id crosswalk yet: the candidate is never called with an id it does not know"),
        ),
        Var::Account(_) => NotCalled::Skip(
            SkipReason::UnknownAccount,
            format!("unknown_account: the request's account is not in the accounts file ({v} has no value)"),
        ),
        _ => NotCalled::Skip(
            SkipReason::Template,
            format!("template: {v} has no value{at}"),
        ),
    }
}

/// One fan-out answer.
type Part = (http::response::Parts, (CandidateBody, Held));

/// The answers in order, as one document: `[{"each": …, "status": …, "body": …}]`, each body
/// decoded and parsed (a body that is not JSON is its text; an empty one `null`). Its status:
/// 429 when any call was refused for its rate, else the first 5xx, else the first 401/403,
/// else 200 (a 404 for one id is an answer of the batch, as the legacy batch reads give it).
fn assemble(shadow: &Shadow, items: &[Value], answers: Vec<Part>, max_body: usize) -> Answer {
    let mut docs = Vec::with_capacity(answers.len());
    let mut statuses = Vec::with_capacity(answers.len());
    let mut head = None;
    for (item, (parts, (body, _held))) in items.iter().zip(answers) {
        let bytes = match body {
            CandidateBody::Complete(b) => b,
            too_large_or_over => return whole(parts, too_large_or_over),
        };
        let ce = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let decoded = match crate::encoding::decode(ce, bytes, max_body) {
            Ok(d) => d,
            Err(crate::encoding::DecodeError::TooLarge { .. }) => {
                return whole(parts, CandidateBody::TooLarge)
            }
            // Undecodable: as a body that is not JSON (a marker, never its bytes).
            Err(e) => Bytes::from(format!("undecodable body: {e}")),
        };
        // A body that is not JSON is never stored (it can quote a credential): a marker of its
        // size and hash stands for it, as for a single call's.
        let doc = if decoded.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            crate::diff::parse_json(&decoded).unwrap_or_else(|_| {
                Value::String(format!(
                    "non-JSON body: {} bytes, xxh3 {:016x}",
                    decoded.len(),
                    xxhash_rust::xxh3::xxh3_64(&decoded)
                ))
            })
        };
        statuses.push(parts.status);
        docs.push(serde_json::json!({
            "each": item,
            "status": parts.status.as_u16(),
            "body": doc,
        }));
        head.get_or_insert(parts);
    }
    let status = if statuses.contains(&StatusCode::TOO_MANY_REQUESTS) {
        StatusCode::TOO_MANY_REQUESTS
    } else if let Some(s) = statuses.iter().find(|s| s.is_server_error()) {
        *s
    } else if let Some(s) = statuses
        .iter()
        .find(|s| **s == StatusCode::UNAUTHORIZED || **s == StatusCode::FORBIDDEN)
    {
        *s
    } else {
        StatusCode::OK
    };
    let mut parts = head.unwrap_or_else(|| http::Response::new(()).into_parts().0);
    parts.status = status;
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(h);
    }
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = Bytes::from(serde_json::to_vec(&Value::Array(docs)).unwrap_or_default());
    if bytes.len() > max_body {
        return whole(parts, CandidateBody::TooLarge);
    }
    let mut held = shadow.budget.hold();
    if !held.grow(bytes.len()) {
        return whole(parts, CandidateBody::OverBudget);
    }
    Answer::Response(parts, (CandidateBody::Complete(bytes), held))
}

fn whole(parts: http::response::Parts, body: CandidateBody) -> Answer {
    Answer::Response(parts, (body, Held::default()))
}
