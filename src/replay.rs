//! `shadowdiff replay`: recorded requests sent again to a candidate (today's, or a staging
//! build at `--candidate URL`), each answer compared with the legacy document recorded for it
//! under today's mappings and rules, and judged against the recorded verdict as `rediff` does
//! (fixed, broken, changed; each field recorded → now). A candidate team checks its fix in
//! minutes instead of waiting for a day of live traffic.
//!
//! - What is sent: the request each kept exchange kept (side `request`: method, path and query,
//!   a JSON body; never the caller's headers), translated as a live request is (routes, the
//!   account's credentials from the accounts file, ids through the crosswalk, paging), through
//!   the shadow's one candidate call: `max_rps`, `max_in_flight`, the account's quota reserve,
//!   a 429's pause and the breaker hold as they do for live traffic. Legacy is never called.
//! - What is never sent: a write (whatever the route's `mirror` says), a request whose query
//!   held a secret (masked when it was kept), or whose body held a redacted value; exchanges
//!   recorded before requests were kept. Each is counted in `skipped` with its reason.
//! - Saved sets: `--save NAME` keeps the chosen exchanges' ids as a named set in the store;
//!   `--set NAME` replays exactly those (a regression suite for CI: exit 1 when an exchange
//!   that matched does not any more).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::redact::REDACTED;
use crate::rediff::{Judged, Rediff, Summary};
use crate::shadow::compare::{Candidate, CandidateBody};
use crate::shadow::Shadow;
use crate::store::{KeptPair, KeptSide};

/// Which of the window's kept exchanges are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// All of them (up to the limit).
    All,
    /// Per route, the first exchange of each recorded (field pattern, kind) not covered yet,
    /// and one that matched: a small suite that exercises every difference pattern.
    PerPattern,
}

/// Longest a replayed call waits for a free `max_rps` token or `max_in_flight` slot before it
/// is counted as skipped.
const WAIT_FOR_BUDGET: Duration = Duration::from_secs(60);

/// Chooses the exchanges to replay, page by page (in id order): [`Pick`], `limit` at most.
pub struct Picker {
    how: Pick,
    max_body: usize,
    limit: usize,
    taken: usize,
    covered: HashSet<(Option<String>, String, String)>,
    matched: HashSet<Option<String>>,
}

impl Picker {
    /// `max_body`: `[shadow] max_body` (a request larger is never sent, so never chosen).
    pub fn new(how: Pick, limit: usize, max_body: usize) -> Self {
        Self {
            how,
            max_body,
            limit,
            taken: 0,
            covered: HashSet::new(),
            matched: HashSet::new(),
        }
    }

    /// Whether no more can be taken.
    pub fn full(&self) -> bool {
        self.taken >= self.limit
    }

    /// The chosen exchanges of the next page.
    pub fn take(&mut self, page: Vec<KeptPair>) -> Vec<KeptPair> {
        let mut out = Vec::new();
        for p in page {
            if self.full() {
                break;
            }
            let chosen = match self.how {
                Pick::All => true,
                // A suite is made of exchanges that can be sent again.
                Pick::PerPattern if resend(&p, self.max_body).is_err() => false,
                Pick::PerPattern if p.fields.is_empty() => self.matched.insert(p.route.clone()),
                Pick::PerPattern => {
                    let mut new = false;
                    for (f, k, _) in &p.fields {
                        new |= self.covered.insert((p.route.clone(), f.clone(), k.clone()));
                    }
                    new
                }
            };
            if chosen {
                self.taken += 1;
                out.push(p);
            }
        }
        out
    }
}

/// One exchange's request as kept, ready to send; `Err`: why it cannot be sent again.
struct Resend {
    method: http::Method,
    target: String,
    body: Bytes,
}

fn resend(p: &KeptPair, max_body: usize) -> Result<Resend, &'static str> {
    let side = p.side("request").ok_or("no_request")?;
    let head: serde_json::Value = side
        .headers
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .ok_or("no_request")?;
    let method = head["method"]
        .as_str()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .ok_or("no_request")?;
    let target = head["target"].as_str().ok_or("no_request")?.to_owned();
    if target.contains(crate::mask::MASK) {
        return Err("secret_in_query");
    }
    let body = side.body.clone().unwrap_or_default();
    if body.len() > max_body {
        return Err("too_large");
    }
    if !body.is_empty() && crate::diff::parse_json(body.as_bytes()).is_err() {
        return Err("request_body");
    }
    if body.contains(REDACTED) {
        return Err("request_redacted");
    }
    Ok(Resend {
        method,
        target,
        body: Bytes::from(body),
    })
}

/// The candidate's answer as a kept side (decoded; the headers `[store] redact_headers` names
/// redacted as the stored ones are), or why it is no answer to compare.
fn kept_answer(c: Candidate, cfg: &crate::config::Config) -> Result<KeptSide, String> {
    match c {
        Candidate::Response {
            status,
            headers,
            body,
            ..
        } => {
            let bytes = match body {
                CandidateBody::Complete(b) => b,
                CandidateBody::TooLarge => return Err("candidate_error: body too large".into()),
                CandidateBody::OverBudget => {
                    return Err("candidate_error: over the memory budget".into())
                }
            };
            let ce = headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok());
            let decoded = crate::encoding::decode(ce, bytes, cfg.shadow.max_body)
                .map_err(|e| format!("candidate_error: {e}"))?;
            let text = String::from_utf8(decoded.to_vec())
                .map_err(|_| "not_json: the candidate's body is not UTF-8".to_owned())?;
            // As the store keeps them (the content encoding is undone already).
            let mut headers = headers;
            headers.remove(http::header::CONTENT_ENCODING);
            let hs = crate::shadow::compare::kept_headers(&headers, cfg);
            Ok(KeptSide {
                status: Some(status.as_u16()),
                headers: Some(hs.to_string()),
                body: Some(text),
            })
        }
        Candidate::Timeout { limit, .. } => Err(format!(
            "candidate_timeout: no complete answer within {}",
            humantime::format_duration(limit)
        )),
        Candidate::Failed { reason, .. } => Err(format!("candidate_error: {reason}")),
        Candidate::Cancelled { why, .. } => Err(format!("candidate_error: cancelled ({why})")),
        Candidate::NotCalled { why, .. } => Err(format!("skipped: {why:?}")),
    }
}

/// What sending one exchange again gave.
enum Sent {
    /// Not sent: the skip reason.
    Skipped(&'static str),
    /// Sent: the answer, or why there is none to compare.
    Answer(Result<KeptSide, String>),
    /// Sent, and answered 429: the candidate's quota, nothing to judge (`rate_limited`).
    Limited,
}

/// Sends one exchange again; waits (bounded) while the shadow's own budgets are full.
async fn send(shadow: &Arc<Shadow>, p: &KeptPair) -> Sent {
    let r = match resend(p, shadow.config().shadow.max_body) {
        Ok(r) => r,
        Err(why) => return Sent::Skipped(why),
    };
    let deadline = Instant::now() + WAIT_FOR_BUDGET;
    loop {
        match shadow
            .replay(
                r.method.clone(),
                &r.target,
                r.body.clone(),
                (p.account.as_deref(), p.route.as_deref()),
            )
            .await
        {
            // The candidate's quota, not its answer: nothing to judge (the account is paused).
            Ok(Candidate::Response { status, .. })
                if status == http::StatusCode::TOO_MANY_REQUESTS =>
            {
                return Sent::Limited
            }
            Ok(c) => return Sent::Answer(kept_answer(c, &shadow.config())),
            // `max_rps` and `max_in_flight` pace a replay, as they pace live traffic.
            Err(("max_rps" | "overload", _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((reason, _)) => return Sent::Skipped(reason),
        }
    }
}

/// The outcome of a replay.
pub struct Replayed {
    pub summary: Summary,
    /// Requests sent to the candidate.
    pub sent: u64,
    /// Sending and judging.
    pub elapsed: Duration,
}

/// Replays batches of exchanges on a shadow's runtime and judges each answer with a rediff
/// (today's mappings and rules, the noise and crosswalk it learned); only the verdicts are
/// kept between batches, so memory stays bounded by a batch.
pub struct Replayer<'a> {
    shadow: &'a Arc<Shadow>,
    runtime: &'a tokio::runtime::Runtime,
    judged: Vec<Result<Judged, &'static str>>,
    sent: u64,
    started: Instant,
}

impl<'a> Replayer<'a> {
    pub fn new(shadow: &'a Arc<Shadow>, runtime: &'a tokio::runtime::Runtime) -> Self {
        Self {
            shadow,
            runtime,
            judged: Vec::new(),
            sent: 0,
            started: Instant::now(),
        }
    }

    /// Sends a batch (concurrently, paced by the shadow's budgets) and judges it with `rediff`
    /// (its noise learned for the batch's routes).
    pub fn replay(&mut self, rediff: &Rediff<'_>, pairs: Vec<KeptPair>) {
        let answers: Vec<Sent> = self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, p) in pairs.iter().enumerate() {
                let (shadow, p) = (self.shadow.clone(), p.clone());
                tasks.spawn(async move { (i, send(&shadow, &p).await) });
            }
            let mut out: Vec<Option<Sent>> = (0..pairs.len()).map(|_| None).collect();
            while let Some(done) = tasks.join_next().await {
                if let Ok((i, sent)) = done {
                    out[i] = Some(sent);
                }
            }
            out.into_iter()
                .map(|s| s.unwrap_or(Sent::Skipped("internal_error")))
                .collect()
        });
        let mut fresh = Vec::new();
        for (p, answer) in pairs.into_iter().zip(answers) {
            match answer {
                Sent::Skipped(why) => self.judged.push(Err(why)),
                Sent::Limited => {
                    self.sent += 1;
                    self.judged.push(Err("rate_limited"));
                }
                Sent::Answer(Err(why)) => {
                    self.sent += 1;
                    self.judged.push(Ok(rediff.judge_failed(&p, why)));
                }
                Sent::Answer(Ok(side)) => {
                    self.sent += 1;
                    let mut p = p;
                    p.sides
                        .retain(|(n, _)| !matches!(n.as_str(), "candidate" | "candidate_raw"));
                    p.sides.push(("candidate_raw".into(), side));
                    fresh.push(p);
                }
            }
        }
        self.judged.extend(rediff.judge_all(&fresh));
    }

    /// Counts exchanges that could not be replayed at all (a set's pruned members).
    pub fn skip(&mut self, why: &'static str, n: usize) {
        self.judged.extend((0..n).map(|_| Err(why)));
    }

    pub fn finish(self) -> Replayed {
        Replayed {
            summary: crate::rediff::summarize(self.judged),
            sent: self.sent,
            elapsed: self.started.elapsed(),
        }
    }
}
