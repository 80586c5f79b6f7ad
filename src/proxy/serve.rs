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
use crate::shadow::compare::{Candidate, CandidateBody};

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
}

/// The response to serve from the candidate's answer (with the mapped document, when a chain
/// made one: the comparison reuses it), or why it cannot be served.
pub async fn respond(
    c: &Candidate,
    m: Mapper,
) -> Result<(Response<ResBody>, Option<Value>), Fallback> {
    let (status, headers, body) = check(c)?;
    let (bytes, mapped) = body_of(status, headers, body, m).await?;
    Ok((response(status, headers, bytes), mapped))
}

/// The candidate's answer as it is, for a request served without a legacy call (nothing to
/// fall back to): the mapped body when it can be served, else the candidate's own status and
/// body, or a 502 of the proxy's own when there is no answer at all.
pub async fn respond_alone(c: &Candidate, m: Mapper) -> Response<ResBody> {
    let (status, headers, body) = match c {
        Candidate::Response {
            status,
            headers,
            body: CandidateBody::Complete(b),
            ..
        } => (*status, headers, b.clone()),
        Candidate::Timeout { .. } => {
            return super::json_response(
                StatusCode::GATEWAY_TIMEOUT,
                "candidate_timeout",
                "the candidate did not answer in time (served without a legacy call)",
            )
        }
        _ => {
            return super::json_response(
                StatusCode::BAD_GATEWAY,
                "candidate_failed",
                "the candidate gave no usable answer (served without a legacy call)",
            )
        }
    };
    if check(c).is_err() {
        // Its own error, as it sent it (decoded headers kept: the body is as received).
        let mut res = response(status, headers, body);
        if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
            res.headers_mut()
                .insert(header::CONTENT_ENCODING, ce.clone());
        }
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return res;
    }
    match body_of(status, headers, body, m).await {
        Ok((b, _)) => response(status, headers, b),
        Err(f) => super::json_response(
            StatusCode::BAD_GATEWAY,
            "candidate_unservable",
            &format!(
                "the candidate's answer cannot be served ({}) and there is no legacy call to fall back to",
                f.as_str()
            ),
        ),
    }
}

/// The candidate's status, headers and body when its answer may be served.
fn check(c: &Candidate) -> Result<(StatusCode, &HeaderMap, Bytes), Fallback> {
    let (status, headers, body) = match c {
        Candidate::Timeout { .. } => return Err(Fallback::Timeout),
        Candidate::Failed { .. } => return Err(Fallback::ConnectionError),
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
    match body {
        CandidateBody::Complete(b) => Ok((status, headers, b.clone())),
        CandidateBody::TooLarge => Err(Fallback::TooLarge),
        CandidateBody::OverBudget => Err(Fallback::Memory),
    }
}

/// Decodes, parses and maps the body. An empty body (a 204, say) is served empty; any other
/// must be JSON. The mapped document comes back too.
async fn body_of(
    status: StatusCode,
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
        return if status == StatusCode::NO_CONTENT || m.chain.is_none() {
            Ok((Bytes::new(), None))
        } else {
            Err(Fallback::NotJson)
        };
    }
    let Some(chain) = m.chain else {
        // No mapping: the candidate's JSON as it sent it, checked as the comparison would
        // parse it, without building a document (the comparison parses it anyway).
        return match crate::diff::check_json(&decoded) {
            Ok(()) => Ok((decoded, None)),
            Err(_) => Err(Fallback::NotJson),
        };
    };
    let doc = crate::diff::parse_json(&decoded).map_err(|_| Fallback::NotJson)?;
    let mapped = tokio::task::spawn_blocking(move || m.runner.run(&chain, &doc, m.timeout))
        .await
        .map_err(|_| Fallback::MappingError)?
        .map_err(|_| Fallback::MappingError)?;
    let bytes = serde_json::to_vec(&mapped).map_err(|_| Fallback::MappingError)?;
    Ok((Bytes::from(bytes), Some(mapped)))
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
