//! The candidate side of a paged route (`[routes.paging]`): legacy's offset window walked on the
//! candidate's cursors ([`crate::paging::window`]), one candidate call per page, and the pages
//! assembled into one candidate page holding exactly legacy's items.
//!
//! Each page is a candidate call like any other (quota, breaker, a 429's pause); a shadow walk
//! takes its pages after the first from `[shadow] max_rps`, and stops where a single call would
//! not have started. A page that is not a success ends the walk: its answer is the exchange's
//! (the comparison and the served path judge it as they would a single call's).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;

use super::candidate::{Answer, Target};
use super::compare::{CandidateBody, NotCalled};
use super::{Plan, Shadow};
use crate::budget::Held;
use crate::paging::{self, Page, Stop};
use crate::record::SkipReason;
use crate::upstream::HttpClient;

/// Why a page ended the walk.
enum Fail {
    /// Not a success, or a body that could not be read whole: the exchange's answer.
    Answer(http::response::Parts, (CandidateBody, Held)),
    /// The call failed.
    Call(String),
    /// A page that is not a list, or a limit met: not compared.
    Skip(SkipReason, String),
}

/// The candidate's path and query for one page: the route's rendered target without the
/// cursor and page size parameters, then those.
fn page_target(path_and_query: &str, spec: &paging::Spec, cursor: Option<&str>) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut out = path.to_owned();
    let mut sep = '?';
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let name = part.split('=').next().unwrap_or("");
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        // The candidate's own paging parameters are the walk's; legacy's never reach it.
        if [&spec.cursor, &spec.page_size, &spec.offset, &spec.limit]
            .iter()
            .any(|p| name == p.as_str())
        {
            continue;
        }
        out.push(sep);
        out.push_str(part);
        sep = '&';
    }
    let enc = crate::translate::encode_component;
    out.push(sep);
    out.push_str(&format!("{}={}", enc(&spec.page_size), spec.max_page_size));
    if let Some(c) = cursor {
        out.push_str(&format!("&{}={}", enc(&spec.cursor), enc(c)));
    }
    out
}

/// Walks legacy's window on the candidate's cursors.
pub(super) async fn walked(
    this: &Arc<Shadow>,
    client: &HttpClient<Full<Bytes>>,
    plan: &Plan,
    headers: HeaderMap,
) -> Result<Answer, String> {
    let cfg = plan.cfg.clone();
    let route = &cfg.routes[plan.route.expect("a paged plan belongs to a route")];
    let spec = route.paging.clone().expect("planned with paging");
    let want = plan.page.expect("planned with a window");
    let base = cfg.candidate.base_url.clone().expect("checked at start-up");
    let first = page_target(&plan.target.path_and_query, &spec, None);
    // Per account and query (the page's request without its cursor).
    let key = format!(
        "{}\u{1f}{}\u{1f}{first}",
        plan.account.as_deref().unwrap_or(""),
        route.name
    );
    let shadow_call = plan.serve.is_none();
    let mut calls = 0usize;
    let mut kept_bytes = 0usize;
    let max_body = cfg.shadow.max_body;
    let mut held = this.budget.hold();
    let result = {
        let calls = &mut calls;
        let kept = &mut kept_bytes;
        let held = &mut held;
        let (spec_ref, cfg_ref) = (&spec, &cfg);
        paging::window(
            &spec,
            &this.cursors,
            &key,
            want,
            move |cursor| {
                *calls += 1;
                let n = *calls;
                let pq = page_target(&plan.target.path_and_query, spec_ref, cursor.as_deref());
                let headers = headers.clone();
                let account = plan.account.clone();
                let method = plan.target.method.clone();
                let base = base.clone();
                let this = this.clone();
                let cfg = cfg_ref.clone();
                let spec = spec_ref.clone();
                let client = client.clone();
                async move {
                    if shadow_call && n > 1 {
                        let acct = account.as_deref();
                        if !this.take_rps(1) {
                            return Err(Fail::Skip(SkipReason::MaxRps, "max_rps".into()));
                        }
                        if this.quotas.paused(crate::quota::Vendor::Candidate, acct) {
                            return Err(Fail::Skip(
                                SkipReason::RateLimited,
                                format!("rate_limited: the walk stopped after {} pages", n - 1),
                            ));
                        }
                        if this.breakers.admit(crate::quota::Vendor::Candidate, acct)
                            == crate::breaker::Admit::Skip
                        {
                            return Err(Fail::Skip(
                                SkipReason::Breaker,
                                format!("breaker: the walk stopped after {} pages", n - 1),
                            ));
                        }
                    }
                    let t = Target {
                        base: &base,
                        method,
                        path_and_query: &pq,
                        headers,
                        body: Bytes::new(),
                    };
                    let (parts, (body, held)) = this
                        .call(&client, t, plan.whose(), &cfg)
                        .await
                        .map_err(|e| Fail::Call(format!("page {n} of the walk: {e}")))?;
                    let bytes = match (&body, parts.status.is_success()) {
                        (CandidateBody::Complete(b), true) => b.clone(),
                        _ => return Err(Fail::Answer(parts, (body, held))),
                    };
                    let ce = parts
                        .headers
                        .get(http::header::CONTENT_ENCODING)
                        .and_then(|v| v.to_str().ok());
                    let decoded =
                        crate::encoding::decode(ce, bytes, cfg.shadow.max_body).map_err(|e| {
                            Fail::Skip(SkipReason::Paging, format!("paging: page {n}: {e}"))
                        })?;
                    let doc = crate::diff::parse_json(&decoded).map_err(|e| {
                        Fail::Skip(
                            SkipReason::Paging,
                            format!("paging: page {n} is not JSON: {e}"),
                        )
                    })?;
                    let size = decoded.len();
                    let mut page = Page::parse(doc, &spec).map_err(|e| {
                        Fail::Skip(SkipReason::Paging, format!("paging: page {n}: {e}"))
                    })?;
                    page.bytes = size;
                    Ok(page)
                }
            },
            |bytes| {
                // The window's items are held in memory until assembled: the pages they came from
                // count against `max_body` and the comparisons' memory budget.
                *kept += bytes;
                *kept <= max_body && held.grow(bytes)
            },
        )
        .await
    };
    let walked = match result {
        Ok(w) => w,
        Err(Stop::TooLong) => {
            return Ok(Answer::NotCalled(NotCalled::Skip(
                SkipReason::Paging,
                format!(
                    "paging: the list is longer than max_pages ({}) pages of {}: not walked",
                    spec.max_pages, spec.max_page_size
                ),
            )))
        }
        Err(Stop::TooLarge) => {
            return Ok(Answer::NotCalled(NotCalled::Skip(
                SkipReason::Paging,
                format!(
                    "paging: the window's pages hold more than max_body ({max_body} bytes) or the memory budget allows: not walked"
                ),
            )))
        }
        Err(Stop::Failed(Fail::Answer(parts, body))) => return Ok(Answer::Response(parts, body)),
        Err(Stop::Failed(Fail::Call(e))) => return Err(e),
        Err(Stop::Failed(Fail::Skip(r, text))) => {
            return Ok(Answer::NotCalled(NotCalled::Skip(r, text)))
        }
    };
    let doc = paging::assemble(&spec, walked, want);
    let bytes = Bytes::from(serde_json::to_vec(&doc).map_err(|e| e.to_string())?);
    // The assembled page is held instead of the pages it came from.
    drop(held);
    let mut held = this.budget.hold();
    let body = if bytes.len() > cfg.shadow.max_body {
        CandidateBody::TooLarge
    } else if !held.grow(bytes.len()) || !held.complete(bytes.len()) {
        CandidateBody::OverBudget
    } else {
        CandidateBody::Complete(bytes)
    };
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(Answer::Response(parts, (body, held)))
}
