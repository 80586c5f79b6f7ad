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
//! | `/api/ids` | the id crosswalk per account and kind: pairs held, ids still unpaired per side, conflicts, the share of ids paired |
//! | `/api/coverage?since=24h&route=R` | field coverage per route: each field pattern compared, in how many exchanges, its parity; the patterns never exercised |
//! | `/api/exchanges?outcome=diff&limit=20` | the latest exchanges |
//! | `/api/exchanges/{id}` | one exchange with its differences |
//! | `GET /api/rollout` | the rollout phase in force, the phases, the guard's view, the latest changes |
//! | `POST /api/rollout` | `{"phase": NAME, "reason": ...}` puts a phase in force (a rollback: `{"phase": "rollback"}`); `{"promote": true, "since": "24h"}` promotes when the gate of the phase in force passes (409 with the verdict otherwise) |
//!
//! | `/login`, `/logout` | sign in with the token (a session cookie), sign out |
//! | `/assets/dashboard.css`, `/assets/dashboard.js` | the pages' style and script (public; no inline script) |
//!
//! When `[admin] token` is set, every route but `/healthz`, `/readyz` and the assets needs
//! `Authorization: Bearer <token>`, or for reading, the sign-in cookie (or a `?token=` link,
//! exchanged for it); a change needs the bearer header. Without a token the listener is on
//! loopback (the config refuses another address) and serves only requests whose `Host` names it
//! and whose `Origin`, when sent, is its own ([`AdminState::hosts`]). Every answer carries the
//! security headers of [`handle`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

mod pages;
pub mod session;
pub mod view;

use crate::record::RouteKey;
use crate::report;
use crate::store::Reader;
use session::Access;
use view::View;

/// State the admin routes read.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Set once the listeners are bound, cleared when shutdown starts.
    pub ready: AtomicBool,
    pub token: Option<String>,
    /// Whether `/metrics` needs the token (when one is set).
    pub metrics_token: bool,
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
    /// The names (`host:port`, lower case) this listener answers to: its bound address, the
    /// loopback names of its port, `[admin] hosts`. A request naming another `Host` (a DNS
    /// rebinding page), or a change whose `Origin` is another site, is refused. Empty: no
    /// check (tests that call [`handle`] directly).
    pub hosts: Vec<String>,
    /// Failed sign-ins, bounded ([`session::Attempts`]).
    pub logins: session::Attempts,
    /// The listener serves TLS: the session cookie is `Secure`.
    pub secure: bool,
    /// The configured routes' names: a route page for another name that the store never
    /// recorded is a 404, not a quiet route.
    pub routes: Arc<Vec<String>>,
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

/// Serves one admin request, with the security headers every answer carries.
pub async fn handle<B>(state: Arc<AdminState>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let asset = req.uri().path().starts_with("/assets/");
    let mut res = route(state, req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The pages' Content-Security-Policy: their script and style are files of this listener
/// (`/assets/`), never inline; nothing is loaded from elsewhere, no other site may frame them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a request names this listener: its `Host` (or HTTP/2 `:authority`) is one of
/// `state.hosts`, and a browser's `Origin`, when sent, is `http(s)://` one of them.
fn same_site<B>(state: &AdminState, req: &Request<B>) -> Result<(), &'static str> {
    if state.hosts.is_empty() {
        return Ok(());
    }
    let known = |h: &str| state.hosts.iter().any(|k| k.eq_ignore_ascii_case(h));
    let hosts = req.headers().get_all(header::HOST);
    if hosts.iter().count() > 1 {
        return Err(r#"{"error":"more than one Host header"}"#);
    }
    // Both the Host header and the request target's authority (absolute form, HTTP/2
    // `:authority`), when present, must name this listener.
    if req.uri().authority().is_some_and(|a| !known(a.as_str())) {
        return Err(r#"{"error":"this listener does not answer to that authority"}"#);
    }
    let host = hosts
        .iter()
        .next()
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    if !host.is_some_and(known) {
        return Err(
            r#"{"error":"this listener does not answer to that Host (add it to [admin] hosts)"}"#,
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let site = origin.to_str().ok().and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        });
        if !site.is_some_and(known) {
            return Err(r#"{"error":"a request from another site's page"}"#);
        }
    }
    Ok(())
}

/// Whether a browser's `Origin`, when sent, is the site the request is addressed to (its
/// `Host`): a same-origin check that needs no list of names.
fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    let site = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    matches!((site, host), (Some(s), Some(h)) if s.eq_ignore_ascii_case(h))
}

/// Routes one admin request.
async fn route<B>(state: Arc<AdminState>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return json_static(StatusCode::OK, r#"{"status":"ok"}"#);
    }
    if let Some(asset) = pages::asset(&path) {
        return asset;
    }
    let query = crate::translate::parse_query(req.uri().query().unwrap_or(""));
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let access = match &state.token {
        None => Access::Full,
        Some(token) => {
            // The scheme's name is case-insensitive (RFC 9110); the token is not.
            let presented = req.headers().get(header::AUTHORIZATION).and_then(|g| {
                let g = g.as_bytes();
                (g.len() > 7 && g[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &g[7..])
            });
            if presented.is_some_and(|t| session::secret_eq(t, token.as_bytes())) {
                Access::Full
            } else if session::cookie(req.headers())
                .is_some_and(|c| session::valid(token, c, SystemTime::now()))
            {
                Access::Session
            } else if param("token")
                .is_some_and(|t| session::secret_eq(t.as_bytes(), token.as_bytes()))
            {
                // An old-style link: exchanged for a session cookie, and the same address
                // without the token (it leaves the address bar and the history).
                if path != "/readyz" && !path.starts_with("/api/") && path != "/metrics" {
                    let rest: Vec<String> = query
                        .iter()
                        .filter(|(k, _)| k != "token")
                        .map(|(k, v)| format!("{}={}", view::enc(k), view::enc(v)))
                        .collect();
                    let to = if rest.is_empty() {
                        path.clone()
                    } else {
                        format!("{path}?{}", rest.join("&"))
                    };
                    let mut res = session::redirect(&to);
                    res.headers_mut()
                        .insert(header::SET_COOKIE, session::set_cookie(token, state.secure));
                    return res;
                }
                // Reads only: a token in an address leaks (logs, history, Referer).
                Access::Session
            } else {
                Access::None
            }
        }
    };
    if path == "/readyz" {
        // Probes carry no Host of ours necessarily: answered, but the store's error text only
        // to a request that could read the rest.
        let authorized =
            access == Access::Full && (state.token.is_some() || same_site(&state, &req).is_ok());
        return readiness(&state, authorized);
    }
    let method = req.method().clone();
    // Without a token the listener is on loopback (the config refuses another address), where
    // any local page could reach it: only requests naming it, from its own pages, are served.
    // With a token, a change needs the bearer header, which no other site's page can send.
    if state.token.is_none() {
        if let Err(why) = same_site(&state, &req) {
            return json_static(StatusCode::FORBIDDEN, why);
        }
    }
    match (path.as_str(), &state.token) {
        ("/login", Some(token)) if method == http::Method::POST => {
            // Only this listener's own form: another site's page posting wrong tokens would
            // otherwise use up the attempts and keep people signed out.
            if !same_origin(&req) {
                return json_static(
                    StatusCode::FORBIDDEN,
                    r#"{"error":"a sign-in from another site's page"}"#,
                );
            }
            if let Err(wait) = state.logins.admit(std::time::Instant::now()) {
                let mut res = json_static(
                    StatusCode::TOO_MANY_REQUESTS,
                    r#"{"error":"too many failed sign-ins: wait, or use Authorization: Bearer"}"#,
                );
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                );
                return res;
            }
            let form = read_body(req).await.unwrap_or_default();
            let form = crate::translate::parse_query(&String::from_utf8_lossy(&form));
            let field = |name: &str| {
                form.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let next = session::local(&field("next"));
            if session::secret_eq(field("token").as_bytes(), token.as_bytes()) {
                state.logins.succeeded();
                let mut res = session::redirect(&next);
                res.headers_mut()
                    .insert(header::SET_COOKIE, session::set_cookie(token, state.secure));
                return res;
            }
            let mut res = html(session::login_page(&next, true));
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            return res;
        }
        ("/login", _) => {
            return html(session::login_page(
                &param("next").unwrap_or_else(|| "/".into()),
                false,
            ))
        }
        ("/logout", _) => {
            let mut res = session::redirect("/login");
            res.headers_mut()
                .insert(header::SET_COOKIE, session::clear_cookie());
            return res;
        }
        _ => {}
    }
    let metrics_open = path == "/metrics" && !state.metrics_token;
    if access == Access::None && !metrics_open {
        // A person opening a page is sent to the sign-in form; a program gets a 401.
        let page = !path.starts_with("/api/") && path != "/metrics";
        let wants_html = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if page && wants_html && method == http::Method::GET {
            let here = req
                .uri()
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str);
            return session::redirect(&format!("/login?next={}", view::enc(here)));
        }
        return json_static(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
    }
    if access == Access::Session && method != http::Method::GET && method != http::Method::HEAD {
        return json_static(
            StatusCode::FORBIDDEN,
            r#"{"error":"a change needs Authorization: Bearer <token>; the sign-in cookie and ?token= only read"}"#,
        );
    }
    let view = View::from_query(&query, "1h");
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
        "/api/triage" => {
            if method == http::Method::POST {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(e) => {
                        return json_value_status(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": format!("reading the body: {e}")}),
                        )
                    }
                };
                let change = serde_json::from_slice::<crate::triage::Request>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.change(SystemTime::now()).map_err(|e| e.to_string()));
                let change = match change {
                    Ok(c) => c,
                    Err(e) => {
                        return json_value_status(StatusCode::BAD_REQUEST, &json!({"error": e}))
                    }
                };
                let route = change.pattern().route_label().to_owned();
                if route != crate::record::UNMATCHED
                    && !state.routes.is_empty()
                    && !state.routes.contains(&route)
                {
                    return json_value_status(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("route {route:?}: no route of that name in the config")}),
                    );
                }
                return blocking(move || {
                    Ok(if crate::store::record_triage(&state.db, &change)? {
                        json_value(&json!({"ok": true}))
                    } else {
                        json_value_status(
                            StatusCode::NOT_FOUND,
                            &json!({"error": "no mark on this pattern to clear"}),
                        )
                    })
                })
                .await;
            }
            if method != http::Method::GET {
                return json_static(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"error":"GET or POST /api/triage"}"#,
                );
            }
            blocking(move || {
                let (marks, log) = with_store(&state, |store| {
                    Ok((store.triage_marks()?, store.triage_log(100)?))
                })?;
                let now = crate::record::rfc3339(SystemTime::now());
                let marks: Vec<_> = marks
                    .into_iter()
                    .map(|m| report::TriageMark {
                        expired: !m.holds_at(&now),
                        mark: m,
                    })
                    .collect();
                Ok(json_value(&json!({"marks": marks, "log": log})))
            })
            .await
        }
        "/api/rollout" => {
            let Some(h) = state.rollout.clone() else {
                return json_static(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"no rollout here (not a running proxy)"}"#,
                );
            };
            if method == http::Method::POST {
                let body = match read_body(req).await {
                    Ok(b) => b,
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
        "/" => blocking_page("/".into(), move || pages::overview(&state, &view)).await,
        "/accounts" => {
            blocking_page("/accounts".into(), move || {
                pages::accounts_page(&state, &view)
            })
            .await
        }
        p if p.starts_with("/route/") => {
            let rest = &p["/route/".len()..];
            let (name, field_page) = match rest.strip_suffix("/field") {
                Some(name) => (name, true),
                None => (rest, false),
            };
            let here = path.clone();
            let Some(route) = view::dec(name).filter(|r| !r.is_empty()) else {
                return error_page(StatusCode::BAD_REQUEST, &here, "bad route name");
            };
            if field_page {
                let Some(field) = param("field") else {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        &format!("/route/{}", view::enc(&route)),
                        "field=PATTERN is needed",
                    );
                };
                blocking_page(here, move || {
                    pages::field_page(&state, &view, &route, &field)
                })
                .await
            } else {
                blocking_page(here, move || pages::route_page(&state, &view, &route)).await
            }
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
        "/api/ids" => {
            blocking(move || {
                let ids = with_store(&state, |store| Ok(store.id_coverage()?))?;
                Ok(json_value(&json!({ "ids": ids })))
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
                return error_page(StatusCode::BAD_REQUEST, p, "exchange ids are integers");
            };
            let field = param("field");
            blocking_page(p.to_owned(), move || {
                pages::exchange_page(&state, &view, id, field.as_deref())?.ok_or_else(|| {
                    AdminError::NotFound(format!(
                        "no exchange #{id} in the store (pruned, or never recorded)"
                    ))
                })
            })
            .await
        }
        "/api/suggest" | "/suggest" => {
            let as_html = path == "/suggest";
            let Some(route) = param("route") else {
                if as_html {
                    return error_page(StatusCode::BAD_REQUEST, "/", "route=NAME is needed");
                }
                return json_static(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"route=NAME is needed"}"#,
                );
            };
            let since = param("since").unwrap_or_else(|| "24h".into());
            let view = View {
                since: since.clone(),
                ..view
            };
            if as_html {
                return blocking_page("/suggest".into(), move || {
                    Ok(pages::suggest_page(
                        &suggestions(&state, &route, &since)?,
                        &view,
                    ))
                })
                .await;
            }
            blocking(move || Ok(json_serialize(&suggestions(&state, &route, &since)?))).await
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

/// Reads a request's body, [`MAX_POST_BODY`] at most.
async fn read_body<B>(req: Request<B>) -> Result<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt as _;
    Ok(http_body_util::Limited::new(req.into_body(), MAX_POST_BODY)
        .collect()
        .await?
        .to_bytes())
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
    /// What the address names does not exist (a route never configured nor recorded).
    #[error("{0}")]
    NotFound(String),
}

impl AdminError {
    /// What the caller asked for is wrong (a window that is no duration): 400; names nothing
    /// there is: 404; the store failing: 500.
    fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Store(_) | Self::Report(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Builds a page on the blocking pool; an error becomes a page saying it, with its status and
/// the way back (a person followed a link or typed an address: no raw JSON).
async fn blocking_page(
    path: String,
    f: impl FnOnce() -> Result<String, AdminError> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(page)) => html(page),
        Ok(Err(e)) => error_page(e.status(), &path, &e.to_string()),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &path, &e.to_string()),
    }
}

/// A page that says what went wrong, with links to the overview and to `path` with its
/// default filters.
fn error_page(status: StatusCode, path: &str, message: &str) -> Response<Full<Bytes>> {
    let mut res = html(pages::error_page(status, path, message));
    *res.status_mut() = status;
    res
}

/// Runs a store query on the blocking pool; an error becomes a JSON error with its message.
async fn blocking(
    f: impl FnOnce() -> Result<Response<Full<Bytes>>, AdminError> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => json_value_status(
            // What the caller asked for is wrong (a window that is no duration, a route that
            // does not exist): 400; the store failing: 500.
            e.status(),
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
pub(crate) fn with_store<T>(
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
pub(crate) const MAX_SHOWN_DIFFS: usize = 200;

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
            metrics_token: true,
            db: crate::store::Location::Sqlite("/nonexistent/x.db".into()),
            readers: Readers::default(),
            classes: crate::classify::Settings::default(),
            references: std::sync::Arc::default(),
            mapper: None,
            reloader: None,
            store: None,
            rollout: None,
            hosts: Vec::new(),
            logins: session::Attempts::default(),
            secure: false,
            routes: Arc::default(),
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
        // A page opened with ?token= is exchanged for a cookie and the address without it.
        assert_eq!(get(&s, "/?token=t0k", None).await, StatusCode::SEE_OTHER);
        assert_eq!(get(&s, "/login", None).await, StatusCode::OK);
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
        // `[admin] metrics_token = false`: a scraper reads /metrics without the token; the rest
        // still needs it.
        let open = Arc::new(AdminState {
            ready: AtomicBool::new(true),
            token: Some("t0k".into()),
            metrics_token: false,
            ..AdminState::default()
        });
        assert_eq!(get(&open, "/metrics", None).await, StatusCode::OK);
        assert_eq!(
            get(&open, "/api/summary", None).await,
            StatusCode::UNAUTHORIZED
        );
    }
}
