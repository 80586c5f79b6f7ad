//! Turns one exchange's two responses into a stored record: the outcome, the field differences
//! (status, compared headers and body), redaction and the bodies to keep.
//!
//! Outcome precedence (first that applies):
//! 1. legacy failed (no response, 5xx, 429, broken body) → `legacy_error`; caller left → `skipped`
//! 2. candidate timed out → `candidate_timeout`; connection or body failure → `candidate_error`
//! 3. candidate 429 → `candidate_rate_limited`
//! 4. candidate 401/403 while legacy succeeded → `candidate_auth_error`
//! 5. candidate 5xx → `candidate_error`
//! 6. a response body over `max_body` → `too_large`
//! 7. a body that cannot be decoded, or JSON on one side only → `not_json`
//! 8. otherwise compared: no difference left → `match`, else `diff`. Two bodies that are both not
//!    JSON are compared as bytes after decoding: a difference is reported at the root pointer `""`.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::config::{Bodies, Config};
use crate::diff::{self, Difference, Kind, Rules, Seg};
use crate::encoding;
use crate::proxy::body::Captured;
use crate::redact;
use crate::store::{Outcome, Record, StoredBody};

/// Who the exchange is, known before either side answers.
#[derive(Debug, Clone)]
pub struct Meta {
    pub started_at: SystemTime,
    pub request_id: String,
    pub route: Option<String>,
    pub method: String,
    /// Path without the query string (queries can carry credentials).
    pub path: String,
    pub account: Option<String>,
}

/// What legacy answered.
#[derive(Debug)]
pub enum Legacy {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        ms: f64,
        body: Captured,
    },
    Failed {
        ms: f64,
        reason: String,
    },
}

/// A body read from the candidate.
#[derive(Debug)]
pub enum CandidateBody {
    Complete(Bytes),
    TooLarge,
}

/// What the candidate answered.
#[derive(Debug)]
pub enum Candidate {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        ms: f64,
        body: CandidateBody,
    },
    Timeout {
        ms: f64,
    },
    Failed {
        ms: f64,
        reason: String,
    },
}

impl Candidate {
    fn ms(&self) -> f64 {
        match self {
            Self::Response { ms, .. } | Self::Timeout { ms } | Self::Failed { ms, .. } => *ms,
        }
    }
}

/// A record for an exchange that was eligible but not mirrored (`skipped`, or `too_large` for a
/// request body over `max_body`).
pub fn unmirrored(
    meta: Meta,
    outcome: Outcome,
    legacy_status: Option<u16>,
    legacy_ms: Option<f64>,
    reason: String,
) -> Record {
    let mut r = base(meta, outcome);
    r.legacy_status = legacy_status;
    r.legacy_ms = legacy_ms;
    r.reason = Some(reason);
    r
}

fn base(meta: Meta, outcome: Outcome) -> Record {
    Record {
        started_at: meta.started_at,
        request_id: meta.request_id,
        route: meta.route,
        method: meta.method,
        path: meta.path,
        account: meta.account,
        legacy_status: None,
        candidate_status: None,
        legacy_ms: None,
        candidate_ms: None,
        outcome,
        reason: None,
        diff_count: 0,
        diffs: Vec::new(),
        bodies: Vec::new(),
    }
}

/// Compares the two sides and builds the (redacted) record.
pub fn compare(
    meta: Meta,
    legacy: Legacy,
    candidate: Candidate,
    rules: &Rules,
    cfg: &Config,
) -> Record {
    let mut r = base(meta, Outcome::Match);
    r.candidate_ms = Some(candidate.ms());
    if let Candidate::Response { status, .. } = &candidate {
        r.candidate_status = Some(status.as_u16());
    }
    let (l_status, l_headers, l_body) = match legacy {
        Legacy::Failed { ms, reason } => {
            r.legacy_ms = Some(ms);
            return outcome(r, Outcome::LegacyError, reason);
        }
        Legacy::Response {
            status,
            headers,
            ms,
            body,
        } => {
            r.legacy_ms = Some(ms);
            r.legacy_status = Some(status.as_u16());
            (status, headers, body)
        }
    };
    if l_status.is_server_error() || l_status == StatusCode::TOO_MANY_REQUESTS {
        return outcome(
            r,
            Outcome::LegacyError,
            format!("legacy answered {}", l_status.as_u16()),
        );
    }
    let l_bytes = match l_body {
        Captured::Complete(chunks) => Some(crate::proxy::body::join(chunks)),
        Captured::TooLarge { .. } => None,
        Captured::Error(e) => {
            return outcome(r, Outcome::LegacyError, format!("legacy body failed: {e}"))
        }
        Captured::Aborted => return outcome(r, Outcome::Skipped, "caller_aborted".into()),
    };
    let (c_status, c_headers, c_body) = match candidate {
        Candidate::Timeout { .. } => {
            let t = cfg.candidate.timeout;
            return outcome(
                r,
                Outcome::CandidateTimeout,
                format!("no complete answer within {t:?}"),
            );
        }
        Candidate::Failed { reason, .. } => return outcome(r, Outcome::CandidateError, reason),
        Candidate::Response {
            status,
            headers,
            body,
            ..
        } => (status, headers, body),
    };
    if c_status == StatusCode::TOO_MANY_REQUESTS {
        return outcome(
            r,
            Outcome::CandidateRateLimited,
            "candidate answered 429".into(),
        );
    }
    if (c_status == StatusCode::UNAUTHORIZED || c_status == StatusCode::FORBIDDEN)
        && l_status.as_u16() < 400
    {
        return outcome(
            r,
            Outcome::CandidateAuthError,
            format!("candidate answered {}", c_status.as_u16()),
        );
    }
    if c_status.is_server_error() {
        return outcome(
            r,
            Outcome::CandidateError,
            format!("candidate answered {}", c_status.as_u16()),
        );
    }
    let max = cfg.shadow.max_body;
    let (l_bytes, c_bytes) = match (l_bytes, c_body) {
        (None, _) => {
            return outcome(
                r,
                Outcome::TooLarge,
                format!("legacy body over {max} bytes"),
            )
        }
        (_, CandidateBody::TooLarge) => {
            return outcome(
                r,
                Outcome::TooLarge,
                format!("candidate body over {max} bytes"),
            )
        }
        (Some(l), CandidateBody::Complete(c)) => (l, c),
    };
    let decode = |h: &HeaderMap, b: Bytes, side: &str| {
        let ce = h
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        encoding::decode(ce, b.to_vec(), max).map_err(|e| (side.to_owned(), e))
    };
    let decoded = decode(&l_headers, l_bytes, "legacy")
        .and_then(|l| Ok((l, decode(&c_headers, c_bytes, "candidate")?)));
    let (l_raw, c_raw) = match decoded {
        Ok(v) => v,
        Err((side, encoding::DecodeError::TooLarge { .. })) => {
            return outcome(
                r,
                Outcome::TooLarge,
                format!("{side} body over {max} bytes once decoded"),
            )
        }
        Err((side, e)) => return outcome(r, Outcome::NotJson, format!("{side} body: {e}")),
    };

    let mut diffs = Vec::new();
    if let Some(d) = diff::diff_meta(
        &[Seg::Key("@status")],
        Some(Value::from(l_status.as_u16())),
        Some(Value::from(c_status.as_u16())),
        rules,
    ) {
        diffs.push(d);
    }
    for h in &cfg.diff.headers {
        let field = [Seg::Key("@header"), Seg::Key(h.as_str())];
        if let Some(d) = diff::diff_meta(
            &field,
            header_value(&l_headers, h),
            header_value(&c_headers, h),
            rules,
        ) {
            diffs.push(d);
        }
    }

    let (l_json, c_json) = (parse_body(&l_raw), parse_body(&c_raw));
    match (&l_json, &c_json) {
        (Some(l), Some(c)) => diffs.extend(diff::diff(l, c, rules)),
        (None, None) => {
            if l_raw != c_raw && !rules.is_ignored(&[]) {
                diffs.push(Difference {
                    pointer: String::new(),
                    field: String::new(),
                    kind: Kind::Changed,
                    legacy: Some(Value::String(summary(&l_raw))),
                    candidate: Some(Value::String(summary(&c_raw))),
                    candidate_pointer: None,
                });
            }
        }
        (Some(_), None) => {
            r.outcome = Outcome::NotJson;
            r.reason = Some("candidate body is not JSON".into());
        }
        (None, Some(_)) => {
            r.outcome = Outcome::NotJson;
            r.reason = Some("legacy body is not JSON".into());
        }
    }
    if r.outcome == Outcome::Match && !diffs.is_empty() {
        r.outcome = Outcome::Diff;
    }
    r.diff_count = diffs.len();
    for d in &mut diffs {
        redact_difference(d, cfg);
    }
    r.diffs = diffs;

    let keep = match cfg.store.bodies {
        Bodies::Never => false,
        Bodies::OnDiff => r.outcome != Outcome::Match,
        Bodies::Always => true,
    };
    if keep {
        r.bodies
            .push(stored("legacy", l_status, &l_headers, l_json, cfg));
        r.bodies
            .push(stored("candidate", c_status, &c_headers, c_json, cfg));
    }
    r
}

fn outcome(mut r: Record, o: Outcome, reason: String) -> Record {
    r.outcome = o;
    r.reason = Some(reason);
    r
}

/// A body parsed as JSON, or `None`. Empty bodies are not JSON.
fn parse_body(b: &[u8]) -> Option<Value> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    diff::parse_json(b).ok()
}

/// A short description of a non-JSON body for the root difference.
fn summary(b: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&b[..b.len().min(SHOWN)]);
    if b.len() > SHOWN {
        format!("{text}… ({} bytes)", b.len())
    } else {
        text.into_owned()
    }
}

/// A header's value as compared: its values joined by ", ", or `None` when absent.
fn header_value(h: &HeaderMap, name: &http::HeaderName) -> Option<Value> {
    let vals: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!vals.is_empty()).then(|| Value::String(vals.join(", ")))
}

fn redact_difference(d: &mut Difference, cfg: &Config) {
    if let Some(name) = d.pointer.strip_prefix("@header/") {
        if redact::is_redacted_header(name, &cfg.store.redact_headers) {
            for v in [&mut d.legacy, &mut d.candidate].into_iter().flatten() {
                *v = Value::String(redact::REDACTED.into());
            }
        }
        return;
    }
    if let Some(v) = d.legacy.as_mut() {
        redact::redact_at(&d.pointer, v, &cfg.store.redact_fields);
    }
    if let Some(v) = d.candidate.as_mut() {
        let at = d.candidate_pointer.as_deref().unwrap_or(&d.pointer);
        redact::redact_at(at, v, &cfg.store.redact_fields);
    }
}

/// A side's response as stored: redacted headers, and the body when it is JSON (a body that is
/// not JSON is not kept: field redaction cannot apply to it).
fn stored(
    side: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Value>,
    cfg: &Config,
) -> StoredBody {
    let mut hs = Map::new();
    for name in headers.keys() {
        let value = if redact::is_redacted_header(name.as_str(), &cfg.store.redact_headers) {
            Value::String(redact::REDACTED.into())
        } else {
            header_value(headers, name).unwrap_or(Value::Null)
        };
        hs.insert(name.as_str().to_owned(), value);
    }
    let body = body.map_or(Value::Null, |mut b| {
        redact::redact_document(&mut b, &cfg.store.redact_fields);
        b
    });
    StoredBody {
        side,
        status: Some(status.as_u16()),
        headers: Value::Object(hs),
        body,
    }
}
