//! The admin listener:
//!
//! | route | what |
//! |---|---|
//! | `/healthz` | the process is up (never needs the token) |
//! | `/readyz` | 200 while serving and the store's writes succeed; 200 `degraded` while a PostgreSQL store cannot be reached (the writer holds and retries; the instance stays in the load balancer); 503 `not_ready` while starting or shutting down, 503 `store_failing` while writes fail. Never needs the token (probes carry none); the store's error text only with it |
//! | `/metrics` | Prometheus exposition ([`crate::telemetry`]) |
//! | `/` | the live dashboard: rendered on the server; a little JavaScript fetches it again every 5 s |
//! | `/api/summary?since=1h` | the parity report (as `report --format json`) over the window |
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

/// What the dashboard shows: the summary over the window and the latest differing exchanges.
struct DashboardData {
    summary: report::Report,
    latest: Vec<ExchangeDetail>,
    /// The rollout phase in force here, with its share of accounts served by the candidate.
    phase: Option<(String, Option<f64>)>,
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
        })
    })
}

/// The dashboard page: rendered on the server; its script fetches the page again every few
/// seconds and swaps in the new `#dash` (one renderer, no second copy in JavaScript).
fn dashboard(state: &AdminState, since: &str, token: Option<&str>) -> Result<String, AdminError> {
    let body = render_dashboard(&dashboard_data(state, since)?);
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
    crate::report::render::rollout_html(&mut o, &d.summary.rollout);
    o.push_str("<h2>Routes</h2><table><tr><th>route</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th>outcomes</th><th>top differing fields</th></tr>");
    for r in &d.summary.routes {
        let outcomes: Vec<String> = r
            .counts
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let fields: Vec<String> = r
            .fields
            .iter()
            .take(3)
            .map(|f| {
                format!(
                    "<code>{}</code> {} ({})",
                    esc(&f.field),
                    esc(&f.kind),
                    f.exchanges
                )
            })
            .collect();
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
