//! The admin listener:
//!
//! | route | what |
//! |---|---|
//! | `/healthz` | the process is up (never needs the token) |
//! | `/readyz` | 200 while serving and the store's writes succeed; 200 `degraded` while a PostgreSQL store cannot be reached (the writer holds and retries; the instance stays in the load balancer); 503 `not_ready` while starting or shutting down, 503 `store_failing` while writes fail. Never needs the token (probes carry none); the store's error text only with it |
//! | `/metrics` | Prometheus exposition ([`crate::telemetry`]) |
//! | `/` | the live dashboard: rendered on the server; a little JavaScript fetches it again every 5 s |
//! | `/api/summary?since=1h` | the parity report (as `report --format json`) over the window |
//! | `/api/webhooks` | per `[[webhooks]]` endpoint the deliveries pending, delivered and dead, and the last 50 dead ones with their last error |
//! | `/api/accounts?since=24h` | every account: its health (`ok` / `needs_reauth`, since, last error) and its parity and outcomes over the window |
//! | `/api/coverage?since=24h&route=R` | field coverage per route: each field pattern compared, in how many exchanges, its parity; the patterns never exercised |
//! | `/api/exchanges?outcome=diff&limit=20` | the latest exchanges |
//! | `/api/exchanges/{id}` | one exchange with its differences |
//! | `GET /api/rollout` | the rollout phase in force, the phases, the guard's view, the latest changes |
//! | `POST /api/rollout` | `{"phase": NAME, "reason": ...}` puts a phase in force (a rollback: `{"phase": "rollback"}`); `{"promote": true, "since": "24h"}` promotes when the gate of the phase in force passes (409 with the verdict otherwise) |
//!
//! When `[admin] token` is set, every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`
//! (or, for a browser opening the dashboard, `?token=<token>`, which the page passes on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::record::{Outcome, RouteKey};
use crate::report;
use crate::report::render::{esc, pct};
use crate::store::{ExchangeDetail, Reader};

/// State the admin routes read.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Set once the listeners are bound, cleared when shutdown starts.
    pub ready: AtomicBool,
    pub token: Option<String>,
    /// The store, read by the API through connections kept in `readers`.
    pub db: crate::store::Location,
    /// Readers kept between requests: a PostgreSQL connection costs a handshake (TLS included).
    pub readers: Readers,
    /// Classification settings of the summary (`[diff]`).
    pub classes: crate::classify::Settings,
    /// The routes' reference documents' field patterns (field coverage).
    pub references: std::sync::Arc<std::collections::BTreeMap<String, Vec<String>>>,
    /// Mapping workers of the admin API's own (`/api/suggest`), apart from the proxy's.
    pub mapper: Option<Arc<crate::mapping::runner::Runner>>,
    /// `POST /api/reload`; `None` where nothing can be reloaded.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// The store writer's counters: `/readyz` fails while its writes fail.
    pub store: Option<Arc<crate::store::StoreStats>>,
    /// `/api/rollout`; `None` where no proxy runs.
    pub rollout: Option<crate::rollout_control::api::RolloutHandle>,
}

/// Longest `POST` body read.
const MAX_POST_BODY: usize = 64 << 10;

/// The body of an admin response as the listener sends it (compressed or not).
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one admin request may take (a report over a large window included) before it is
/// answered 503.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The admin listener's service: the routes below behind tower-http's layers: the
/// `Authorization` header marked sensitive (so no trace shows the token), a trace span per
/// request, gzip for clients that ask for it (the dashboard and the JSON API compress 5-10×),
/// and a time limit per request.
pub fn service(
    state: Arc<AdminState>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response<AdminBody>,
    Error = std::convert::Infallible,
    Future: Send,
> + Send
       + Sync
       + 'static {
    let svc = tower::ServiceBuilder::new()
        .map_response(boxed)
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
            ]),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .service_fn(move |req: Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
        });
    hyper_util::service::TowerToHyperService::new(svc)
}

fn boxed<B>(res: Response<B>) -> Response<AdminBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt as _;
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// `/readyz`, answered without the token (probes and load balancers carry no secret); the
/// store's error text only with it.
fn readiness(state: &AdminState, authorized: bool) -> Response<Full<Bytes>> {
    if !state.ready.load(Ordering::Acquire) {
        return json_static(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not_ready"}"#);
    }
    let unreachable = state.store.as_ref().is_some_and(|s| s.unreachable());
    let failure = state.store.as_ref().and_then(|s| s.failure());
    let (status, mut body) = match &failure {
        None => return json_static(StatusCode::OK, r#"{"status":"ready"}"#),
        Some(_) if unreachable => (
            StatusCode::OK,
            json!({"status": "degraded", "store": "unreachable"}),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "store_failing"}),
        ),
    };
    if authorized {
        body["error"] = json!(failure);
    }
    json_value_status(status, &body)
}

/// Serves one admin request.
pub async fn handle<B>(state: Arc<AdminState>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return json_static(StatusCode::OK, r#"{"status":"ok"}"#);
    }
    let query = crate::translate::parse_query(req.uri().query().unwrap_or(""));
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let authorized = state.token.as_ref().is_none_or(|token| {
        let expected = format!("Bearer {token}");
        let by_header = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
        by_header
            || param("token").is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    });
    if path == "/readyz" {
        return readiness(&state, authorized);
    }
    if !authorized {
        return json_static(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
    }
    let method = req.method().clone();
    match path.as_str() {
        "/api/reload" if method != http::Method::POST => json_static(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"POST /api/reload reloads the config"}"#,
        ),
        "/api/reload" => match &state.reloader {
            None => json_static(
                StatusCode::NOT_FOUND,
                r#"{"error":"nothing to reload here"}"#,
            ),
            Some(r) => match r.reload().await {
                Ok(summary) => json_value(&json!({"reloaded": true, "running": summary})),
                Err(e) => json_value_status(
                    StatusCode::BAD_REQUEST,
                    &json!({"reloaded": false, "error": e.to_string()}),
                ),
            },
        },
        "/api/rollout" => {
            let Some(h) = state.rollout.clone() else {
                return json_static(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"no rollout here (not a running proxy)"}"#,
                );
            };
            if method == http::Method::POST {
                use http_body_util::BodyExt as _;
                let body = match http_body_util::Limited::new(req.into_body(), MAX_POST_BODY)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return json_value_status(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": format!("reading the body: {e}")}),
                        )
                    }
                };
                let (status, v) = crate::rollout_control::api::post(&h, &body).await;
                return json_value_status(status, &v);
            }
            if method != http::Method::GET {
                return json_static(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"error":"GET or POST /api/rollout"}"#,
                );
            }
            let since = crate::record::ago(std::time::Duration::from_secs(90 * 86_400));
            blocking(move || {
                let events = with_store(&state, |store| {
                    Ok(store.rollout_events(
                        since,
                        SystemTime::now() + std::time::Duration::from_secs(1),
                        20,
                    )?)
                })
                .unwrap_or_default();
                Ok(json_value(&crate::rollout_control::api::status(
                    &h, &events,
                )))
            })
            .await
        }
        "/metrics" => {
            let mut res = Response::new(Full::new(Bytes::from(crate::telemetry::render())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        "/" => {
            let since = param("since").unwrap_or_else(|| "1h".into());
            let token = param("token");
            blocking(move || dashboard(&state, &since, token.as_deref()).map(html)).await
        }
        "/api/summary" => {
            let since = param("since").unwrap_or_else(|| "1h".into());
            blocking(move || {
                with_store(&state, |store| summary(&state, store, &since))
                    .map(|r| json_serialize(&r))
            })
            .await
        }
        "/api/webhooks" => {
            blocking(move || {
                let (endpoints, dead) = with_store(&state, |store| Ok(store.webhook_status(50)?))?;
                Ok(json_value(&json!({ "endpoints": endpoints, "dead": dead })))
            })
            .await
        }
        "/api/accounts" => {
            let since = param("since").unwrap_or_else(|| "24h".into());
            blocking(move || {
                let report = with_store(&state, |store| summary(&state, store, &since))?;
                let health: std::collections::HashMap<&str, &crate::store::AccountHealth> = report
                    .account_health
                    .iter()
                    .map(|h| (h.account.as_str(), h))
                    .collect();
                let mut accounts: Vec<Value> = report
                    .accounts
                    .iter()
                    .map(|a| {
                        json!({
                            "account": a.account,
                            "state": health.get(a.account.as_str()).map_or("ok", |h| h.state.as_str()),
                            "health": health.get(a.account.as_str()),
                            "parity": a.counts.parity,
                            "compared": a.counts.compared,
                            "exchanges": a.counts.exchanges,
                            "outcomes": a.counts.outcomes,
                        })
                    })
                    .collect();
                // Accounts with a health row but no exchange in the window.
                for h in &report.account_health {
                    if !report.accounts.iter().any(|a| a.account == h.account) {
                        accounts.push(json!({"account": h.account, "state": h.state, "health": h, "exchanges": 0}));
                    }
                }
                Ok(json_value(&json!({
                    "since": since,
                    "needs_reauth": report.needs_reauth,
                    "accounts": accounts,
                })))
            })
            .await
        }
        "/api/coverage" => {
            let since = param("since").unwrap_or_else(|| "24h".into());
            let route = param("route");
            blocking(move || {
                let d = crate::config::parse_duration(&since).map_err(AdminError::BadParameter)?;
                let f = report::Filter {
                    from: crate::record::ago(d),
                    to: SystemTime::now(),
                    route: route.as_deref().map(RouteKey::parse),
                    account: None,
                    mapping_version: None,
                };
                let cov = with_store(&state, |store| {
                    Ok(crate::coverage::all(store, &f, &state.references)?)
                })?;
                Ok(json_serialize(&json!({ "since": since, "routes": cov })))
            })
            .await
        }
        "/api/exchanges" => {
            let outcome = param("outcome");
            let limit = param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(20usize)
                .min(500);
            blocking(move || {
                let latest =
                    with_store(&state, |store| Ok(store.latest(outcome.as_deref(), limit)?))?;
                Ok(json_serialize(&latest))
            })
            .await
        }
        p if p.starts_with("/api/exchanges/") && p.ends_with("/bodies") => {
            let id = &p["/api/exchanges/".len()..p.len() - "/bodies".len()];
            let Ok(id) = id.parse::<i64>() else {
                return json_static(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"exchange ids are integers"}"#,
                );
            };
            blocking(move || bodies_json(&state, id)).await
        }
        p if p.starts_with("/exchange/") => {
            let Ok(id) = p["/exchange/".len()..].parse::<i64>() else {
                return json_static(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"exchange ids are integers"}"#,
                );
            };
            let (field, token) = (param("field"), param("token"));
            blocking(move || exchange_page(&state, id, field.as_deref(), token.as_deref())).await
        }
        "/api/suggest" | "/suggest" => {
            let Some(route) = param("route") else {
                return json_static(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"route=NAME is needed"}"#,
                );
            };
            let since = param("since").unwrap_or_else(|| "24h".into());
            let as_html = path == "/suggest";
            let token = param("token");
            blocking(move || {
                let s = suggestions(&state, &route, &since)?;
                Ok(if as_html {
                    html(suggest_page(&s, &since, token.as_deref()))
                } else {
                    json_serialize(&s)
                })
            })
            .await
        }
        p if p.starts_with("/api/exchanges/") => {
            let Ok(id) = p["/api/exchanges/".len()..].parse::<i64>() else {
                return json_static(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"exchange ids are integers"}"#,
                );
            };
            blocking(move || exchange(&state, id)).await
        }
        _ => json_static(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

/// Why an admin request failed (a 500 with this message, or 400 for a bad query parameter).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Report(#[from] report::ReportError),
    #[error("{0}")]
    BadParameter(String),
}

/// Runs a store query on the blocking pool; an error becomes a JSON error with its message.
async fn blocking(
    f: impl FnOnce() -> Result<Response<Full<Bytes>>, AdminError> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => json_value_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
        Err(e) => json_value_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

/// Readers kept for the next requests (at most [`KEPT_READERS`]).
#[derive(Default)]
pub struct Readers(std::sync::Mutex<Vec<Box<dyn Reader + Send>>>);

impl Drop for Readers {
    /// A PostgreSQL client closes its connection by blocking on a runtime of its own, which
    /// must not happen on a thread of ours (the admin state can be dropped on one): the kept
    /// readers are dropped on a thread of their own.
    fn drop(&mut self) {
        let kept = std::mem::take(
            self.0
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !kept.is_empty() {
            let _ = std::thread::Builder::new()
                .name("admin-readers-close".into())
                .spawn(move || drop(kept));
        }
    }
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

/// Readers kept between requests: as many as requests commonly run at once.
const KEPT_READERS: usize = 4;

/// Runs `f` with a reader: a kept one when there is one (tried again once on a fresh one when
/// the store fails: the server may have closed the kept connection), else a new one; kept
/// afterwards unless the store failed.
fn with_store<T>(
    state: &AdminState,
    f: impl Fn(&dyn Reader) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let readers = || {
        state
            .readers
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let store_failed = |out: &Result<T, AdminError>| {
        matches!(
            out,
            Err(AdminError::Store(_) | AdminError::Report(report::ReportError::Store(_)))
        )
    };
    let kept = readers().pop();
    let (reader, out) = match kept.map(|r| {
        let out = f(&*r);
        (r, out)
    }) {
        Some((r, out)) if !store_failed(&out) => (r, out),
        _ => {
            let fresh = open(state)?;
            let out = f(&*fresh);
            (fresh, out)
        }
    };
    if !store_failed(&out) {
        let mut kept = readers();
        if kept.len() < KEPT_READERS {
            kept.push(reader);
        }
    }
    out
}

fn open(state: &AdminState) -> Result<Box<dyn Reader + Send>, AdminError> {
    Ok(crate::store::open_read_only_at(
        &state.db,
        std::time::Duration::from_secs(2),
    )?)
}

fn summary(
    state: &AdminState,
    store: &dyn Reader,
    since: &str,
) -> Result<report::Report, AdminError> {
    let d = crate::config::parse_duration(since).map_err(AdminError::BadParameter)?;
    let now = SystemTime::now();
    let f = report::Filter {
        from: crate::record::ago(d),
        to: now,
        route: None,
        account: None,
        mapping_version: None,
    };
    let opts = report::Options {
        details: true,
        classes: state.classes,
        references: state.references.clone(),
    };
    Ok(report::build_with(store, &f, &opts)?)
}

/// Differences shown per exchange at most.
const MAX_SHOWN_DIFFS: usize = 200;

fn exchange(state: &AdminState, id: i64) -> Result<Response<Full<Bytes>>, AdminError> {
    match with_store(state, |store| Ok(store.exchange(id, MAX_SHOWN_DIFFS)?))? {
        Some(v) => Ok(json_serialize(&v)),
        None => Ok(json_static(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such exchange"}"#,
        )),
    }
}

/// Kept exchanges `suggest` reads from the admin API at most (the CLI's `--limit` goes further).
const SUGGEST_LIMIT: usize = 1000;

/// A kept side as the API shows it: status, headers and the body parsed back into JSON.
fn side_json(k: Option<&crate::store::KeptSide>) -> Value {
    k.map_or(Value::Null, |k| {
        json!({
            "status": k.status,
            "headers": k.headers.as_deref().and_then(|h| serde_json::from_str::<Value>(h).ok()),
            "body": k.body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()),
        })
    })
}

/// `/api/exchanges/{id}/bodies`: what was kept of an exchange's responses (redacted).
fn bodies_json(state: &AdminState, id: i64) -> Result<Response<Full<Bytes>>, AdminError> {
    match with_store(state, |store| Ok(store.kept_exchange(id)?))? {
        None => Ok(json_static(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such exchange"}"#,
        )),
        Some(k) => Ok(json_value(&json!({
            "id": id,
            "route": k.route,
            "kept": k.legacy.is_some() || k.candidate.is_some(),
            "legacy": side_json(k.legacy.as_ref()),
            "candidate": side_json(k.candidate.as_ref()),
            "legacy_raw": side_json(k.legacy_raw.as_ref()),
            "candidate_raw": side_json(k.candidate_raw.as_ref()),
        }))),
    }
}

/// `&token=…` for the links of a page opened with `?token=`.
fn token_param(token: Option<&str>) -> String {
    token.map_or_else(String::new, |t| {
        format!(
            "&token={}",
            percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
        )
    })
}

fn pretty(v: Option<&crate::store::KeptSide>) -> String {
    v.and_then(|k| k.body.as_deref())
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|b| serde_json::to_string_pretty(&b).ok())
        .unwrap_or_else(|| "(not kept)".to_owned())
}

/// `/exchange/{id}`: one exchange's differences (the field asked for first) and its kept
/// documents side by side, legacy and candidate as compared, the candidate's as it came below.
fn exchange_page(
    state: &AdminState,
    id: i64,
    field: Option<&str>,
    token: Option<&str>,
) -> Result<Response<Full<Bytes>>, AdminError> {
    let (detail, kept) = with_store(state, |store| {
        Ok((
            store.exchange(id, MAX_SHOWN_DIFFS)?,
            store.kept_exchange(id)?,
        ))
    })?;
    let Some(detail) = detail else {
        return Ok(json_static(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such exchange"}"#,
        ));
    };
    let e = &detail.exchange;
    let route = RouteKey::from_route(e.route.as_deref());
    let mut o = format!(
        "<h1>exchange #{id} <span class=\"muted\">{} {} · {} · {} · {}</span></h1>\
         <p><a href=\"/?x=1{tok}\">dashboard</a> · <a href=\"/suggest?route={r}{tok}\">suggested mapping fixes for {route}</a></p>",
        esc(e.method.as_deref().unwrap_or("")),
        esc(e.path.as_deref().unwrap_or("")),
        esc(route.label()),
        esc(&e.outcome),
        esc(&e.started_at),
        tok = token_param(token),
        r = percent_encoding::utf8_percent_encode(route.label(), percent_encoding::NON_ALPHANUMERIC),
        route = esc(route.label()),
    );
    o.push_str("<h2>Differences</h2><table><tr><th>pointer</th><th>kind</th><th>legacy</th><th>candidate</th></tr>");
    let mut diffs = detail.differences.clone();
    // The field the link was for first.
    diffs.sort_by_key(|d| field.is_none_or(|f| d.field != f));
    for d in &diffs {
        let show = |v: &Option<Value>| match v {
            None => "(absent)".to_owned(),
            Some(v) => esc(&v.to_string()),
        };
        let mark = if field.is_some_and(|f| d.field == f) {
            " class=\"hit\""
        } else {
            ""
        };
        o.push_str(&format!(
            "<tr{mark}><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&d.pointer),
            esc(&d.kind),
            show(&d.legacy),
            show(&d.candidate)
        ));
    }
    o.push_str("</table>");
    match &kept {
        Some(k) if k.legacy.is_some() || k.candidate.is_some() => {
            let _ = std::fmt::Write::write_fmt(
                &mut o,
                format_args!(
                    "<h2>Kept documents <span class=\"muted\">redacted; as compared</span></h2><div class=\"sides\"><div><h3>legacy</h3><pre>{}</pre></div><div><h3>candidate (mapped)</h3><pre>{}</pre></div></div>",
                    esc(&pretty(k.legacy.as_ref())),
                    esc(&pretty(k.candidate.as_ref()))
                ),
            );
            if k.candidate_raw.is_some() {
                let _ = std::fmt::Write::write_fmt(
                    &mut o,
                    format_args!(
                        "<details><summary>the candidate's document as it came (before the mapping)</summary><pre>{}</pre></details>",
                        esc(&pretty(k.candidate_raw.as_ref()))
                    ),
                );
            }
        }
        _ => o.push_str("<p class=\"muted\">The bodies of this exchange were not kept (see [store] bodies): only its stored differences are shown.</p>"),
    }
    Ok(html(page(&format!("exchange #{id}"), &o)))
}

/// The suggestions for a route from the running proxy's config and mapping workers.
fn suggestions(
    state: &AdminState,
    route: &str,
    since: &str,
) -> Result<crate::rediff::suggest::Suggestions, AdminError> {
    let d = crate::config::parse_duration(since).map_err(AdminError::BadParameter)?;
    let (Some(h), Some(mapper)) = (&state.rollout, &state.mapper) else {
        return Err(AdminError::BadParameter(
            "suggestions need a running proxy (its config and mapping workers)".into(),
        ));
    };
    let cfg = h.shadow.config();
    let r = cfg
        .routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| AdminError::BadParameter(format!("no route named {route:?}")))?;
    let f = crate::store::Filter {
        from: crate::record::ago(d),
        to: SystemTime::now(),
        route: Some(RouteKey::named(route)),
        account: None,
        mapping_version: None,
    };
    with_store(state, |store| {
        let mut pairs = Vec::new();
        let mut after = 0;
        while pairs.len() < SUGGEST_LIMIT {
            let page = store.kept_pairs(&f, after, 256)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            pairs.extend(page);
        }
        crate::rediff::suggest::suggest(&cfg, mapper, store, r, &pairs)
            .map_err(|e| AdminError::BadParameter(e.to_string()))
    })
}

/// `/suggest?route=R`: each systematic difference with its evidence and the checked change.
fn suggest_page(
    s: &crate::rediff::suggest::Suggestions,
    since: &str,
    token: Option<&str>,
) -> String {
    use crate::rediff::suggest::Fix;
    let mut o = format!(
        "<h1>suggested mapping fixes <span class=\"muted\">{} · last {} · {} kept exchanges read</span></h1><p><a href=\"/?x=1{}\">dashboard</a></p>",
        esc(&s.route),
        esc(since),
        s.exchanges,
        token_param(token)
    );
    if s.suggestions.is_empty() {
        o.push_str("<p class=\"muted\">No systematic difference among the kept exchanges.</p>");
    }
    for g in &s.suggestions {
        let _ = std::fmt::Write::write_fmt(
            &mut o,
            format_args!(
                "<h2 id=\"{}\"><code>{}</code> {} <span class=\"muted\">in {} of {} kept exchanges</span></h2><ul>",
                esc(&g.field),
                esc(&g.field),
                esc(&g.kind),
                g.differing,
                g.present
            ),
        );
        for e in &g.examples {
            let _ = std::fmt::Write::write_fmt(
                &mut o,
                format_args!(
                    "<li><a href=\"/exchange/{}?field={}{}\">exchange #{}</a> at <code>{}</code>: legacy <code>{}</code>, candidate <code>{}</code></li>",
                    e.exchange,
                    percent_encoding::utf8_percent_encode(&g.field, percent_encoding::NON_ALPHANUMERIC),
                    token_param(token),
                    e.exchange,
                    esc(&e.pointer),
                    esc(&e.legacy.as_ref().map_or_else(|| "(absent)".into(), Value::to_string)),
                    esc(&e.candidate.as_ref().map_or_else(|| "(absent)".into(), Value::to_string))
                ),
            );
        }
        o.push_str("</ul>");
        let what = match &g.fix {
            Fix::Path { found_at, expr } => format!("read it where the candidate has it: <code>{}</code> (found at <code>{}</code>)", esc(expr), esc(found_at)),
            Fix::Lowercase => "the candidate's value in lower case".into(),
            Fix::Uppercase => "the candidate's value in upper case".into(),
            Fix::Number => "a number the candidate sends as a string".into(),
            Fix::String => "a string the candidate sends as a number".into(),
            Fix::Lookup { pairs } => format!("a translation of {} values", pairs.len()),
            Fix::NotInCandidate => "the candidate never returns it: no mapping can fill it (a gap to report to the vendor)".into(),
            Fix::None { why } => esc(why),
        };
        let _ = std::fmt::Write::write_fmt(&mut o, format_args!("<p><b>{what}</b></p>"));
        if let (Some(c), Some(k)) = (&g.change, &g.checked) {
            let _ = std::fmt::Write::write_fmt(
                &mut o,
                format_args!(
                    "<pre class=\"diff\">{}</pre><p class=\"muted\">checked by rediff over {} exchanges: the field differs in {} → {}; route parity {} → {}</p>",
                    esc(&c.diff),
                    k.exchanges,
                    k.field_before,
                    k.field_after,
                    pct(k.parity_before),
                    pct(k.parity_after)
                ),
            );
        }
    }
    page(&format!("suggest {}", s.route), &o)
}

/// A standalone admin page in the dashboard's style.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · shadowdiff</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{DASH_CSS}\
         .sides{{display:flex;gap:12px}}.sides>div{{flex:1;min-width:0}}pre{{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;overflow:auto;font-size:12px}}tr.hit{{background:#fff8c5}}</style></head>\
         <body><main>{body}</main></body></html>",
        esc(title)
    )
}

/// What the dashboard shows: the summary over the window and the latest differing exchanges.
struct DashboardData {
    summary: report::Report,
    latest: Vec<ExchangeDetail>,
    /// The rollout phase in force here, with its share of accounts served by the candidate.
    phase: Option<(String, Option<f64>)>,
    /// The window, and the token the page was opened with (carried by its links).
    since: String,
    token: Option<String>,
}

fn dashboard_data(state: &AdminState, since: &str) -> Result<DashboardData, AdminError> {
    with_store(state, |store| {
        let summary = summary(state, store, since)?;
        let mut latest = Vec::new();
        for e in store.latest(Some(Outcome::Diff.as_str()), 10)? {
            if let Some(v) = store.exchange(e.id, MAX_SHOWN_DIFFS)? {
                latest.push(v);
            }
        }
        let phase = state.rollout.as_ref().map(|h| {
            let active = h.shadow.rollout.active();
            let cfg = h.shadow.config();
            let percent = cfg.rollout.phases.get(&*active.phase).map(|d| d.percent);
            (active.phase.to_string(), percent)
        });
        Ok(DashboardData {
            summary,
            latest,
            phase,
            since: since.to_owned(),
            token: None,
        })
    })
}

/// The dashboard page: rendered on the server; its script fetches the page again every few
/// seconds and swaps in the new `#dash` (one renderer, no second copy in JavaScript).
fn dashboard(state: &AdminState, since: &str, token: Option<&str>) -> Result<String, AdminError> {
    let mut data = dashboard_data(state, since)?;
    data.token = token.map(str::to_owned);
    let body = render_dashboard(&data);
    let token_js = serde_json::to_string(&token.unwrap_or("")).unwrap_or_default();
    let since_js = serde_json::to_string(since).unwrap_or_default();
    Ok(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>shadowdiff</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{DASH_CSS}</style></head>\
         <body><main><h1>shadowdiff <span class=\"muted\">live · last {}</span></h1><div id=\"dash\">{body}</div>\
         <p class=\"muted\" id=\"updated\">rendered by the server</p></main>\
         <script>const TOKEN={token_js}, SINCE={since_js};{DASH_JS}</script></body></html>",
        esc(since)
    ))
}

/// Renders the dashboard body.
fn render_dashboard(d: &DashboardData) -> String {
    let t = &d.summary.totals;
    let phase = d.phase.as_ref().map_or_else(String::new, |(p, percent)| {
        format!(
            "<div class=\"card\">rollout phase<b id=\"phase\">{}</b>{}</div>",
            esc(p),
            percent.map_or_else(String::new, |x| format!(
                "<span class=\"muted\">{x}% of accounts on the candidate</span>"
            ))
        )
    });
    let mut o = format!(
        "<div class=\"cards\"><div class=\"card\">parity<b id=\"parity\">{}</b></div><div class=\"card\">compared<b>{}</b></div><div class=\"card\">exchanges<b>{}</b></div>{phase}</div>",
        t.parity_text(),
        t.compared,
        t.exchanges
    );
    if !d.summary.needs_reauth.is_empty() {
        o.push_str(&format!(
            "<p><b class=\"bad\">Needs re-auth</b> (candidate 401/403 in a row while legacy succeeded): {}</p>",
            esc(&d.summary.needs_reauth.join(", "))
        ));
    }
    crate::report::render::rollout_html(&mut o, &d.summary.rollout);
    o.push_str("<h2>Routes</h2><table><tr><th>route</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th>outcomes</th><th>top differing fields</th></tr>");
    for r in &d.summary.routes {
        let outcomes: Vec<String> = r
            .counts
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut fields: Vec<String> = r
            .fields
            .iter()
            .take(3)
            .map(|f| {
                format!(
                    "<a href=\"/exchange/{}?field={}{}\"><code>{}</code></a> {} ({})",
                    f.example.exchange_id,
                    enc(&f.field),
                    token_param(d.token.as_deref()),
                    esc(&f.field),
                    esc(&f.kind),
                    f.exchanges
                )
            })
            .collect();
        if !r.fields.is_empty() && r.route != crate::record::UNMATCHED {
            fields.push(format!(
                "<a href=\"/suggest?route={}&since={}{}\">suggested fixes</a>",
                enc(&r.route),
                enc(&d.since),
                token_param(d.token.as_deref())
            ));
        }
        o.push_str(&format!(
            "<tr class=\"route\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.route),
            pct(r.counts.parity),
            r.counts.compared,
            esc(&outcomes.join(", ")),
            fields.join("<br>")
        ));
    }
    o.push_str("</table><h2>Latest differing exchanges</h2>");
    if d.latest.is_empty() {
        o.push_str("<p class=\"muted\">None in the window.</p>");
    }
    for (i, detail) in d.latest.iter().enumerate() {
        let e = &detail.exchange;
        o.push_str(&format!(
            "<details{}><summary>#{} {} {} · {} · {} · {} differences</summary><table><tr><th>pointer</th><th>kind</th><th>legacy</th><th>candidate</th></tr>",
            if i == 0 { " open" } else { "" },
            e.id,
            esc(e.method.as_deref().unwrap_or("")),
            esc(e.path.as_deref().unwrap_or("")),
            esc(RouteKey::from_route(e.route.as_deref()).label()),
            esc(&e.started_at),
            e.diff_count
        ));
        for f in &detail.differences {
            let show = |v: &Option<Value>| match v {
                None | Some(Value::Null) => "(absent)".to_owned(),
                Some(v) => esc(&v.to_string()),
            };
            o.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(&f.pointer),
                esc(&f.kind),
                show(&f.legacy),
                show(&f.candidate)
            ));
        }
        o.push_str("</table></details>");
    }
    o
}

const DASH_CSS: &str = "body{font:14px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;margin:0}\
main{max-width:1100px;margin:0 auto;padding:24px}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de}\
.muted{color:#57606a;font-weight:normal;font-size:14px}.cards{display:flex;gap:12px}.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:140px;background:#f6f8fa}\
.card b{display:block;font-size:22px}table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #d0d7de;vertical-align:top}\
th{background:#f6f8fa}.num{text-align:right}code{font:12px ui-monospace,Menlo,Consolas,monospace}details{margin:6px 0;border:1px solid #d0d7de;border-radius:6px;padding:4px 10px}summary{cursor:pointer}";

/// Fetches the page again every 5 s and swaps in the server's new `#dash`.
const DASH_JS: &str = r#"
const q = (p) => p + (p.includes('?') ? '&' : '?') + (TOKEN ? 'token=' + encodeURIComponent(TOKEN) : '');
async function refresh() {
  try {
    const res = await fetch(q('/?since=' + encodeURIComponent(SINCE)));
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const page = new DOMParser().parseFromString(await res.text(), 'text/html');
    const fresh = page.getElementById('dash');
    if (!fresh) throw new Error('no dashboard in the answer');
    // Keep what the reader opened or closed across the refresh.
    const open = new Set([...document.querySelectorAll('#dash details')].filter(d => d.open).map(d => d.querySelector('summary').textContent.split(' ')[0]));
    const seen = new Set([...document.querySelectorAll('#dash details')].map(d => d.querySelector('summary').textContent.split(' ')[0]));
    for (const d of fresh.querySelectorAll('details')) {
      const id = d.querySelector('summary').textContent.split(' ')[0];
      if (seen.has(id)) d.open = open.has(id);
    }
    document.getElementById('dash').innerHTML = fresh.innerHTML;
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById('updated').textContent = 'refresh failed: ' + err;
  }
}
setInterval(refresh, 5000);
"#;

fn html(body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

fn json_value(v: &Value) -> Response<Full<Bytes>> {
    json_value_status(StatusCode::OK, v)
}

fn json_serialize(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(v) {
        Ok(text) => {
            let mut res = Response::new(Full::new(Bytes::from(text)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => json_value_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

fn json_value_status(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn json_static(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Compares a presented secret with the expected one in time that depends on neither's content
/// nor length: both are hashed (SHA-256) and the digests compared without an early exit.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(state: &Arc<AdminState>, path: &str, auth: Option<&str>) -> StatusCode {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        handle(state.clone(), b.body(Full::new(Bytes::new())).unwrap())
            .await
            .status()
    }

    #[tokio::test]
    async fn routes_and_token() {
        let s = Arc::new(AdminState {
            ready: AtomicBool::new(true),
            token: Some("t0k".into()),
            db: crate::store::Location::Sqlite("/nonexistent/x.db".into()),
            readers: Readers::default(),
            classes: crate::classify::Settings::default(),
            references: std::sync::Arc::default(),
            mapper: None,
            reloader: None,
            store: None,
            rollout: None,
        });
        assert_eq!(get(&s, "/healthz", None).await, StatusCode::OK);
        // Probes carry no token: readiness answers without it.
        assert_eq!(get(&s, "/readyz", None).await, StatusCode::OK);
        assert_eq!(get(&s, "/metrics", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&s, "/", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(&s, "/api/summary", Some("Bearer nope")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(get(&s, "/readyz", Some("Bearer t0k")).await, StatusCode::OK);
        assert_eq!(get(&s, "/readyz?token=t0k", None).await, StatusCode::OK);
        s.ready.store(false, Ordering::Release);
        assert_eq!(
            get(&s, "/readyz", Some("Bearer t0k")).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get(&s, "/nope", Some("Bearer t0k")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&s, "/api/exchanges/x", Some("Bearer t0k")).await,
            StatusCode::BAD_REQUEST
        );
    }
}
