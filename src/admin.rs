//! The admin listener:
//!
//! | route | what |
//! |---|---|
//! | `/healthz` | the process is up (never needs the token) |
//! | `/readyz` | accepting traffic and the store writer is running (503 while shutting down) |
//! | `/metrics` | Prometheus exposition ([`crate::telemetry`]) |
//! | `/` | the live dashboard: server-rendered, refreshed by a little JavaScript from the API below |
//! | `/api/summary?since=1h` | the SPEC §5 report over the window |
//! | `/api/exchanges?outcome=diff&limit=20` | the latest exchanges |
//! | `/api/exchanges/{id}` | one exchange with its differences |
//!
//! When `[admin] token` is set, every route but `/healthz` needs `Authorization: Bearer <token>`
//! (or, for a browser opening the dashboard, `?token=<token>`, which the page passes on).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::report;
use crate::report::render::{esc, pct};

/// State the admin routes read.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Set once the listeners are bound, cleared when shutdown starts.
    pub ready: AtomicBool,
    pub token: Option<String>,
    /// The store, opened read-only per API call.
    pub db: PathBuf,
    /// Classification settings of the summary (`[diff]`).
    pub classes: crate::classify::Settings,
    /// `POST /api/reload`; `None` where nothing can be reloaded.
    pub reloader: Option<Arc<crate::server::Reloader>>,
    /// The store writer's counters: `/readyz` fails while its writes fail.
    pub store: Option<Arc<crate::store::StoreStats>>,
}

/// Serves one admin request.
pub async fn handle<B>(state: Arc<AdminState>, req: Request<B>) -> Response<Full<Bytes>> {
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
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        let by_header = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
        let by_query =
            param("token").is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !by_header && !by_query {
            return json_static(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        }
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
                    &json!({"reloaded": false, "error": e}),
                ),
            },
        },
        "/metrics" => {
            let mut res = Response::new(Full::new(Bytes::from(crate::telemetry::render())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        "/readyz" if state.ready.load(Ordering::Acquire) => {
            match state.store.as_ref().and_then(|s| s.failure()) {
                None => json_static(StatusCode::OK, r#"{"status":"ready"}"#),
                Some(e) => json_value_status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "store_failing", "error": e}),
                ),
            }
        }
        "/readyz" => json_static(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not_ready"}"#),
        "/" => {
            let since = param("since").unwrap_or_else(|| "1h".into());
            let token = param("token");
            blocking(move || dashboard(&state, &since, token.as_deref()).map(html)).await
        }
        "/api/summary" => {
            let since = param("since").unwrap_or_else(|| "1h".into());
            blocking(move || {
                summary(&state, &since)
                    .map(|r| json_value(&serde_json::to_value(r).unwrap_or_default()))
            })
            .await
        }
        "/api/exchanges" => {
            let outcome = param("outcome");
            let limit = param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(20usize)
                .min(500);
            blocking(move || latest(&state, outcome.as_deref(), limit).map(|v| json_value(&v)))
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

/// Runs a store query on the blocking pool; an error becomes a 500 with its message.
async fn blocking(
    f: impl FnOnce() -> Result<Response<Full<Bytes>>, String> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => json_value_status(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
        Err(e) => json_value_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

fn open(state: &AdminState) -> Result<rusqlite::Connection, String> {
    let conn = rusqlite::Connection::open_with_flags(
        &state.db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening the store: {e}"))?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(2));
    Ok(conn)
}

fn summary(state: &AdminState, since: &str) -> Result<report::Report, String> {
    let d = crate::config::parse_duration(since)?;
    let now = SystemTime::now();
    let f = report::Filter {
        from: now - d,
        to: now,
        route: None,
        account: None,
        mapping_version: None,
    };
    let opts = report::Options {
        details: true,
        classes: state.classes,
    };
    report::build_with(&open(state)?, &f, opts).map_err(|e| e.to_string())
}

fn latest(state: &AdminState, outcome: Option<&str>, limit: usize) -> Result<Value, String> {
    let conn = open(state)?;
    let cond = if outcome.is_some() {
        "WHERE outcome = ?1"
    } else {
        "WHERE ?1 IS NULL"
    };
    let mut q = conn
        .prepare(&format!(
            "SELECT id, started_at, route, method, path, account, legacy_status, candidate_status, outcome,
             diff_count, reason FROM exchanges {cond} ORDER BY id DESC LIMIT {limit}"
        ))
        .map_err(|e| e.to_string())?;
    let rows = q
        .query_map([outcome], |r| {
            Ok(json!({
                "id": r.get::<_, i64>(0)?, "started_at": r.get::<_, String>(1)?, "route": r.get::<_, Option<String>>(2)?,
                "method": r.get::<_, Option<String>>(3)?, "path": r.get::<_, Option<String>>(4)?,
                "account": r.get::<_, Option<String>>(5)?, "legacy_status": r.get::<_, Option<i64>>(6)?,
                "candidate_status": r.get::<_, Option<i64>>(7)?, "outcome": r.get::<_, String>(8)?,
                "diff_count": r.get::<_, i64>(9)?, "reason": r.get::<_, Option<String>>(10)?,
            }))
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Value::Array(rows))
}

/// Differences shown per exchange at most.
const MAX_SHOWN_DIFFS: usize = 200;

fn exchange_value(conn: &rusqlite::Connection, id: i64) -> Result<Option<Value>, String> {
    let row = conn
        .query_row(
            "SELECT id, started_at, route, method, path, account, legacy_status, candidate_status, legacy_ms,
             candidate_ms, outcome, diff_count, reason, request_id FROM exchanges WHERE id = ?1",
            [id],
            |r| {
                Ok(json!({
                    "id": r.get::<_, i64>(0)?, "started_at": r.get::<_, String>(1)?, "route": r.get::<_, Option<String>>(2)?,
                    "method": r.get::<_, Option<String>>(3)?, "path": r.get::<_, Option<String>>(4)?,
                    "account": r.get::<_, Option<String>>(5)?, "legacy_status": r.get::<_, Option<i64>>(6)?,
                    "candidate_status": r.get::<_, Option<i64>>(7)?, "legacy_ms": r.get::<_, Option<f64>>(8)?,
                    "candidate_ms": r.get::<_, Option<f64>>(9)?, "outcome": r.get::<_, String>(10)?,
                    "diff_count": r.get::<_, i64>(11)?, "reason": r.get::<_, Option<String>>(12)?,
                    "request_id": r.get::<_, Option<String>>(13)?,
                }))
            },
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e.to_string()),
        })?;
    let Some(mut row) = row else { return Ok(None) };
    let mut q = conn
        .prepare_cached(&format!(
            "SELECT pointer, field, kind, legacy, candidate FROM diffs WHERE exchange_id = ?1 ORDER BY seq LIMIT {MAX_SHOWN_DIFFS}"
        ))
        .map_err(|e| e.to_string())?;
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Value>(&s).ok());
    let diffs = q
        .query_map([id], |r| {
            Ok(json!({
                "pointer": r.get::<_, String>(0)?, "field": r.get::<_, String>(1)?, "kind": r.get::<_, String>(2)?,
                "legacy": parse(r.get(3)?), "candidate": parse(r.get(4)?),
            }))
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    row["differences"] = Value::Array(diffs);
    Ok(Some(row))
}

fn exchange(state: &AdminState, id: i64) -> Result<Response<Full<Bytes>>, String> {
    match exchange_value(&open(state)?, id)? {
        Some(v) => Ok(json_value(&v)),
        None => Ok(json_static(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such exchange"}"#,
        )),
    }
}

/// The dashboard page: the same numbers as `/api/summary`, rendered on the server; the script
/// re-renders them from the API every few seconds.
fn dashboard(state: &AdminState, since: &str, token: Option<&str>) -> Result<String, String> {
    let r = summary(state, since)?;
    let latest = latest(state, Some("diff"), 10)?;
    let conn = open(state)?;
    let mut details = Vec::new();
    for e in latest.as_array().into_iter().flatten() {
        if let Some(id) = e["id"].as_i64() {
            if let Some(v) = exchange_value(&conn, id)? {
                details.push(v);
            }
        }
    }
    let data = json!({"summary": r, "latest": details});
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

/// Renders the dashboard body from `{"summary": Report, "latest": [exchange with differences]}`.
/// The script does the same from the API (see `DASH_JS`).
fn render_dashboard(d: &Value) -> String {
    let s = &d["summary"];
    let t = &s["totals"];
    let mut o = format!(
        "<div class=\"cards\"><div class=\"card\">parity<b id=\"parity\">{}</b></div><div class=\"card\">compared<b>{}</b></div><div class=\"card\">exchanges<b>{}</b></div></div>",
        pct(t["parity"].as_f64().unwrap_or(1.0)),
        t["compared"],
        t["exchanges"]
    );
    o.push_str("<h2>Routes</h2><table><tr><th>route</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th>outcomes</th><th>top differing fields</th></tr>");
    for r in s["routes"].as_array().into_iter().flatten() {
        let outcomes: Vec<String> = r["outcomes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let fields: Vec<String> = r["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .take(3)
            .map(|f| {
                format!(
                    "<code>{}</code> {} ({})",
                    esc(f["field"].as_str().unwrap_or("")),
                    esc(f["kind"].as_str().unwrap_or("")),
                    f["exchanges"]
                )
            })
            .collect();
        o.push_str(&format!(
            "<tr class=\"route\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(r["route"].as_str().unwrap_or("")),
            pct(r["parity"].as_f64().unwrap_or(1.0)),
            r["compared"],
            esc(&outcomes.join(", ")),
            fields.join("<br>")
        ));
    }
    o.push_str("</table><h2>Latest differing exchanges</h2>");
    let latest = d["latest"].as_array().map_or(&[][..], Vec::as_slice);
    if latest.is_empty() {
        o.push_str("<p class=\"muted\">None in the window.</p>");
    }
    for (i, e) in latest.iter().enumerate() {
        o.push_str(&format!(
            "<details{}><summary>#{} {} {} · {} · {} · {} differences</summary><table><tr><th>pointer</th><th>kind</th><th>legacy</th><th>candidate</th></tr>",
            if i == 0 { " open" } else { "" },
            e["id"],
            esc(e["method"].as_str().unwrap_or("")),
            esc(e["path"].as_str().unwrap_or("")),
            esc(e["route"].as_str().unwrap_or("(unmatched)")),
            esc(e["started_at"].as_str().unwrap_or("")),
            e["diff_count"]
        ));
        for f in e["differences"].as_array().into_iter().flatten() {
            let show = |v: &Value| {
                if v.is_null() {
                    "(absent)".to_owned()
                } else {
                    esc(&v.to_string())
                }
            };
            o.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(f["pointer"].as_str().unwrap_or("")),
                esc(f["kind"].as_str().unwrap_or("")),
                show(&f["legacy"]),
                show(&f["candidate"])
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

/// Re-renders the page from the JSON API every 5 s (the same layout as `render_dashboard`).
const DASH_JS: &str = r#"
const q = (p) => p + (p.includes('?') ? '&' : '?') + (TOKEN ? 'token=' + encodeURIComponent(TOKEN) : '');
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const pct = (x) => (x * 100).toFixed(2) + '%';
const show = (v) => v === null || v === undefined ? '(absent)' : esc(JSON.stringify(v));
async function refresh() {
  try {
    const s = await (await fetch(q('/api/summary?since=' + encodeURIComponent(SINCE)))).json();
    const list = await (await fetch(q('/api/exchanges?outcome=diff&limit=10'))).json();
    const latest = await Promise.all(list.map(e => fetch(q('/api/exchanges/' + e.id)).then(r => r.json())));
    const t = s.totals;
    let o = `<div class="cards"><div class="card">parity<b id="parity">${pct(t.parity)}</b></div><div class="card">compared<b>${t.compared}</b></div><div class="card">exchanges<b>${t.exchanges}</b></div></div>`;
    o += '<h2>Routes</h2><table><tr><th>route</th><th class="num">parity</th><th class="num">compared</th><th>outcomes</th><th>top differing fields</th></tr>';
    for (const r of s.routes) {
      const outcomes = Object.entries(r.outcomes).map(([k, v]) => `${k} ${v}`).join(', ');
      const fields = r.fields.slice(0, 3).map(f => `<code>${esc(f.field)}</code> ${esc(f.kind)} (${f.exchanges})`).join('<br>');
      o += `<tr class="route"><td>${esc(r.route)}</td><td class="num">${pct(r.parity)}</td><td class="num">${r.compared}</td><td>${esc(outcomes)}</td><td>${fields}</td></tr>`;
    }
    o += '</table><h2>Latest differing exchanges</h2>';
    if (!latest.length) o += '<p class="muted">None in the window.</p>';
    for (const [i, e] of latest.entries()) {
      o += `<details${i === 0 ? ' open' : ''}><summary>#${e.id} ${esc(e.method)} ${esc(e.path)} · ${esc(e.route ?? '(unmatched)')} · ${esc(e.started_at)} · ${e.diff_count} differences</summary><table><tr><th>pointer</th><th>kind</th><th>legacy</th><th>candidate</th></tr>`;
      for (const f of e.differences) o += `<tr><td><code>${esc(f.pointer)}</code></td><td>${esc(f.kind)}</td><td><code>${show(f.legacy)}</code></td><td><code>${show(f.candidate)}</code></td></tr>`;
      o += '</table></details>';
    }
    document.getElementById('dash').innerHTML = o;
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
        handle(state.clone(), b.body(()).unwrap()).await.status()
    }

    #[tokio::test]
    async fn routes_and_token() {
        let s = Arc::new(AdminState {
            ready: AtomicBool::new(true),
            token: Some("t0k".into()),
            db: PathBuf::from("/nonexistent/x.db"),
            classes: crate::classify::Settings::default(),
            reloader: None,
            store: None,
        });
        assert_eq!(get(&s, "/healthz", None).await, StatusCode::OK);
        assert_eq!(get(&s, "/readyz", None).await, StatusCode::UNAUTHORIZED);
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
