//! `GET /api/rollout` (the phase in force, the phases, the guard's view, the latest changes)
//! and `POST /api/rollout` (set a phase, or promote on the gate's verdict), for the admin
//! listener.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Controller, PromoteError};
use crate::rollout::{judge, Change};
use crate::shadow::Shadow;

/// What the admin listener needs of the rollout.
#[derive(Clone)]
pub struct RolloutHandle {
    pub controller: Controller,
    pub shadow: Arc<Shadow>,
}

impl std::fmt::Debug for RolloutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutHandle").finish_non_exhaustive()
    }
}

/// The body of `POST /api/rollout`: `{"phase": "rollback", "reason": "..."}` or
/// `{"promote": true, "since": "24h"}`; `actor` names who asks (recorded as `api:ACTOR`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub promote: bool,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
}

/// The rollout's state as `GET /api/rollout` shows it (`events`: the latest changes, read
/// from the store by the caller).
pub fn status(h: &RolloutHandle, events: &[crate::rollout::Event]) -> Value {
    let cfg = h.shadow.config();
    let r = &cfg.rollout;
    let active = h.shadow.rollout.active();
    let def = r.phases.get(&*active.phase);
    let guard = judge(&h.shadow.rollout.window.tally(r.guard.window), &r.guard);
    json!({
        "phase": &*active.phase,
        "since": crate::record::rfc3339(active.since),
        "by": active.by,
        "event_id": active.seq,
        "percent": def.map(|d| d.percent),
        "legacy_sample": def.map(|d| d.legacy_sample),
        "verify": def.map(|d| d.verify),
        "next": r.next(&active.phase).ok(),
        "order": r.order,
        "phases": r.phases.iter().map(|(k, d)| (k.clone(), json!({"percent": d.percent, "legacy_sample": d.legacy_sample, "verify": d.verify}))).collect::<serde_json::Map<_, _>>(),
        "cohort_accounts": cfg.accounts.as_ref().map(|a| r.cohort_size(&active.phase, a.names())),
        "accounts": cfg.accounts.as_ref().map(crate::translate::Accounts::len),
        "guard": {
            "auto_rollback": r.guard.auto_rollback,
            "auto_promote": r.guard.auto_promote,
            "confidence": r.guard.confidence,
            "checks": h.shadow.rollout.checks.load(std::sync::atomic::Ordering::Relaxed),
            "report": guard,
        },
        "events": events,
    })
}

/// Carries out a `POST /api/rollout`; the status and body of the answer.
pub async fn post(h: &RolloutHandle, body: &[u8]) -> (StatusCode, Value) {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("body: {e} (expected {{\"phase\": NAME}} or {{\"promote\": true}})")}),
            )
        }
    };
    let actor = match req.actor.as_deref().map(clean) {
        Some(a) if !a.is_empty() => format!("api:{a}"),
        _ => "api".to_owned(),
    };
    let reason = req.reason.as_deref().map(clean_reason);
    match (req.phase, req.promote) {
        (Some(_), true) | (None, false) => (
            StatusCode::BAD_REQUEST,
            json!({"error": "give either \"phase\" or \"promote\": true"}),
        ),
        (Some(phase), false) => {
            let change = Change {
                to: phase,
                actor,
                reason,
                evidence: None,
            };
            match h.controller.set(change).await {
                Ok(applied) => (StatusCode::OK, json!(applied)),
                Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e})),
            }
        }
        (None, true) => {
            let since = match req.since.as_deref().map(crate::config::parse_duration) {
                None => Duration::from_secs(86_400),
                Some(Ok(d)) => d,
                Some(Err(e)) => return (StatusCode::BAD_REQUEST, json!({"error": e})),
            };
            match h.controller.promote(actor, since).await {
                Ok(applied) => (StatusCode::OK, json!(applied)),
                Err(PromoteError::Refused(v)) => (
                    StatusCode::CONFLICT,
                    json!({"error": "the gate did not pass: not promoted", "verdict": v}),
                ),
                Err(PromoteError::Invalid(e)) => (StatusCode::BAD_REQUEST, json!({"error": e})),
                Err(PromoteError::Store(e)) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e}))
                }
            }
        }
    }
}

/// An actor name as recorded: printable, at most 64 characters.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A reason as recorded: no control characters, at most 500 characters.
fn clean_reason(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}
