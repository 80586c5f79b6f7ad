//! The candidate's answer as the caller gets it, for a request a rollout phase serves from the
//! candidate: its status, its rate-limit headers, and its body decoded and mapped into the
//! legacy schema by the route's candidate chain (the chain the comparison applies). Anything
//! that makes it unfit to serve is a [`Fallback`]: the caller gets legacy's answer instead,
//! never a candidate failure or a mixed body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use super::body::ResBody;
use crate::mapping::{runner::Runner, Chain};
use crate::record::Fallback;
use crate::shadow::compare::{Candidate, CandidateBody, NotCalled};

/// The candidate's response headers passed on to the caller: its rate limits (the caller
/// paces itself by them).
pub const PASSED_HEADERS: [&str; 6] = [
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
];

/// What is needed to map a served body.
pub struct Mapper {
    pub chain: Option<Arc<Chain>>,
    pub runner: Arc<Runner>,
    pub timeout: Duration,
    pub max_body: usize,
    /// A route with `[routes.ids]`: the candidate's ids are turned back into legacy's.
    pub ids: Option<crate::shadow::ServedIds>,
    /// The answer was assembled from a fan-out (`[{"each", "status", "body"}]`): served only
    /// when every call succeeded.
    pub fan_out: bool,
    /// A paged route: legacy's paging fields stamped with what was walked.
    pub paging: Option<crate::paging::Spec>,
}

/// A served answer: the response, the mapped document when a chain made one (the comparison
/// reuses it), and the body's bytes as the caller gets them (what verification compares).
pub struct Served {
    pub response: Response<ResBody>,
    pub mapped: Option<Value>,
    pub body: Bytes,
    pub status: StatusCode,
}

/// The response to serve from the candidate's answer, or why it cannot be served. `legacy` is
/// the status of legacy's head for the same request: the candidate's must be the same.
pub async fn respond(
    c: &Candidate,
    m: Mapper,
    legacy: Option<StatusCode>,
) -> Result<Served, Fallback> {
    let (status, headers, body) = check(c, legacy)?;
    let (bytes, mapped) = body_of(headers, body, m).await?;
    Ok(Served {
        response: response(status, headers, bytes.clone()),
        mapped,
        body: bytes,
        status,
    })
}

/// The candidate's answer as it is, for a request served without a legacy call (nothing to
/// fall back to): the mapped body when it can be served, else the candidate's own status and
/// body, or a 502 of the proxy's own when there is no usable answer at all. With the response,
/// what made the answer unfit to serve (the guard counts it as the candidate's failure).
pub async fn respond_alone(c: &Candidate, m: Mapper) -> (Response<ResBody>, Option<Fallback>) {
    let (status, headers, body) = match c {
        Candidate::Response {
            status,
            headers,
            body: CandidateBody::Complete(b),
            ..
        } => (*status, headers, b.clone()),
        Candidate::Timeout { .. } => {
            let res = super::json_response(
                StatusCode::GATEWAY_TIMEOUT,
                "candidate_timeout",
                "the candidate did not answer in time (served without a legacy call)",
            );
            return (res, Some(Fallback::Timeout));
        }
        _ => {
            let res = super::json_response(
                StatusCode::BAD_GATEWAY,
                "candidate_failed",
                "the candidate gave no usable answer (served without a legacy call)",
            );
            return (
                res,
                Some(check(c, None).err().unwrap_or(Fallback::ConnectionError)),
            );
        }
    };
    if let Err(f) = check(c, None) {
        // An error status of its own (4xx, 5xx), as it sent it (decoded headers kept: the body
        // is as received); anything else it cannot be trusted with (a redirect, a 204, a 1xx)
        // becomes a 502 of ours.
        if !(status.is_client_error() || status.is_server_error()) {
            let res = super::json_response(
                StatusCode::BAD_GATEWAY,
                "candidate_unservable",
                &format!(
                    "the candidate answered {} and there is no legacy call to fall back to",
                    status.as_u16()
                ),
            );
            return (res, Some(f));
        }
        let mut res = response(status, headers, body);
        if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
            res.headers_mut()
                .insert(header::CONTENT_ENCODING, ce.clone());
        }
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return (res, Some(f));
    }
    match body_of(headers, body, m).await {
        Ok((b, _)) => (response(status, headers, b), None),
        Err(f) => (
            super::json_response(
                StatusCode::BAD_GATEWAY,
                "candidate_unservable",
                &format!(
                    "the candidate's answer cannot be served ({}) and there is no legacy call to fall back to",
                    f.as_str()
                ),
            ),
            Some(f),
        ),
    }
}

/// Whether a status may be served from the candidate: a success that carries a body (not 204,
/// 205 or a partial 206).
fn servable(status: StatusCode) -> bool {
    status.is_success()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::RESET_CONTENT
        && status != StatusCode::PARTIAL_CONTENT
}

/// The candidate's status, headers and body when its answer may be served (and, with
/// `legacy`, carries legacy's status).
fn check(
    c: &Candidate,
    legacy: Option<StatusCode>,
) -> Result<(StatusCode, &HeaderMap, Bytes), Fallback> {
    let (status, headers, body) = match c {
        Candidate::Timeout { .. } => return Err(Fallback::Timeout),
        Candidate::Failed { .. } | Candidate::Cancelled { .. } => {
            return Err(Fallback::ConnectionError)
        }
        Candidate::NotCalled { why, .. } => {
            return Err(match why {
                NotCalled::Mapping(_) => Fallback::MappingError,
                NotCalled::Skip(reason, _) => Fallback::NotCalled(*reason),
            })
        }
        Candidate::Response {
            status,
            headers,
            body,
            ..
        } => (*status, headers, body),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Fallback::RateLimited);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(Fallback::AuthError);
    }
    if status.is_server_error() {
        return Err(Fallback::ServerError);
    }
    if !servable(status) || legacy.is_some_and(|l| l != status) {
        return Err(Fallback::Status);
    }
    match body {
        CandidateBody::Complete(b) => Ok((status, headers, b.clone())),
        CandidateBody::TooLarge => Err(Fallback::TooLarge),
        CandidateBody::OverBudget => Err(Fallback::Memory),
    }
}

/// Decodes, parses and maps the body. It must be a JSON document: an empty or blank body is
/// never served. The mapped document comes back too.
async fn body_of(
    headers: &HeaderMap,
    body: Bytes,
    m: Mapper,
) -> Result<(Bytes, Option<Value>), Fallback> {
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let decoded = crate::encoding::decode(ce, body, m.max_body).map_err(|e| match e {
        crate::encoding::DecodeError::TooLarge { .. } => Fallback::TooLarge,
        _ => Fallback::NotJson,
    })?;
    if decoded.iter().all(u8::is_ascii_whitespace) {
        return Err(Fallback::EmptyBody);
    }
    let doc = crate::diff::parse_json(&decoded).map_err(|_| Fallback::NotJson)?;
    if m.fan_out && !every_call_succeeded(&doc) {
        return Err(Fallback::BatchElement);
    }
    let walked = m
        .paging
        .as_ref()
        .and_then(|spec| Some((spec.clone(), crate::paging::stamp_of(&doc)?)));
    let Some(chain) = m.chain else {
        // No mapping: the candidate's JSON as it sent it, parsed by the comparison's own
        // parser (a cheaper syntax check let a lone surrogate escape through, which the
        // comparison then refused: served, yet `not_json`).
        // Served as that document, serialised again: the bytes are exactly what the comparison
        // (and, with `verify`, verification) judged, with no duplicate member a reader could
        // resolve another way.
        if walked.is_some() {
            // Never without a mapping (the config refuses it): the walk's stamp is ours.
            return Err(Fallback::MappingError);
        }
        return served_ids(doc, m.ids.as_ref(), Fallback::NotJson, usize::MAX)
            .map(|(bytes, pre)| (bytes, m.ids.is_some().then_some(pre)));
    };
    let mut mapped = tokio::task::spawn_blocking(move || m.runner.run(&chain, &doc, m.timeout))
        .await
        .map_err(|_| Fallback::MappingError)?
        .map_err(|_| Fallback::MappingError)?;
    if let Some((spec, st)) = &walked {
        crate::paging::stamp(spec, &mut mapped, *st);
    }
    served_ids(mapped, m.ids.as_ref(), Fallback::MappingError, m.max_body)
        .map(|(bytes, pre)| (bytes, Some(pre)))
}

/// The bytes to serve (the candidate's ids turned into legacy's) and the document the
/// comparison takes as the candidate's: still with the candidate's ids, so that it learns and
/// meets conflicts as for any exchange, then turns them the same way.
fn served_ids(
    doc: Value,
    ids: Option<&crate::shadow::ServedIds>,
    unserializable: Fallback,
    max: usize,
) -> Result<(Bytes, Value), Fallback> {
    let bytes = match ids {
        None => serde_json::to_vec(&doc),
        Some(ids) => {
            let mut out = doc.clone();
            ids.apply(&mut out).map_err(|_| Fallback::UnpairedId)?;
            serde_json::to_vec(&out)
        }
    }
    .map_err(|_| unserializable)?;
    if bytes.len() > max {
        return Err(Fallback::TooLarge);
    }
    Ok((Bytes::from(bytes), doc))
}

/// Whether every element of a fan-out's assembled answer has a 2xx status.
fn every_call_succeeded(doc: &Value) -> bool {
    doc.as_array().is_some_and(|a| {
        a.iter().all(|e| {
            e.get("status")
                .and_then(Value::as_u64)
                .is_some_and(|s| (200..300).contains(&s))
        })
    })
}

fn response(status: StatusCode, from: &HeaderMap, body: Bytes) -> Response<ResBody> {
    let empty = body.is_empty();
    let mut res = Response::new(ResBody::full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    if !empty {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for name in PASSED_HEADERS {
        for v in from.get_all(name) {
            h.append(name, v.clone());
        }
    }
    res
}
