//! `shadowdiff demo`: a self-contained tour on loopback. It starts a fake legacy HRIS API and a
//! fake unified API with known differences, runs the real proxy in front of them with a config
//! parsed like any other, sends traffic through it, and writes the parity report and the gate
//! verdict from the real store.
//!
//! The candidate answers in its own (unified) schema; response mappings written beside the
//! config (`mappings/*.jsonata`, `*.jq`) reshape it into the legacy schema before the diff.
//!
//! The differences it plants, and what each shows:
//! - the unified API has no department, so the mapped document lacks `department` (a field the
//!   mapping cannot fill: systematic `missing`);
//! - the individual mapping copies `employment_type` as it is: `FULL_TIME` instead of
//!   `full_time` (an enum mapped without `$lowercase`);
//! - the account "initech" has revoked candidate credentials (401: `candidate_auth_error`,
//!   listed under "needs re-auth");
//! - its company endpoint answers after 150 ms (candidate latency, never the caller's);
//! - one employee's title drifts on some requests (sporadic data drift);
//! - `ssn` and `dob` are redacted before anything is stored (the kept bodies included).
//!
//! And the rollout, in three waves of traffic: in `shadow`, the gate refuses the promotion to
//! `canary` (the planted gaps); a canary drill then serves the pinned account `acme` from the
//! candidate (a canary of 0 % serves its pins only); the guard sees the served cohort's parity
//! below its limit with confidence and rolls back on its own (or, on too small a sample, the
//! demo rolls back by hand, as the runbook's drill does); the last wave is all legacy again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::report;
use crate::server::Server;
use crate::translate::key_sha256_hex;

/// The demo's accounts: (name, legacy token, candidate account id).
const ACCOUNTS: [(&str, &str, &str); 3] = [
    ("acme", "Bearer legacy-acme-token", "ia_acme_01"),
    ("globex", "Bearer legacy-globex-token", "ia_globex_02"),
    ("initech", "Bearer legacy-initech-token", "ia_initech_03"),
];
/// The candidate id whose credentials are revoked.
const REVOKED: &str = "ia_initech_03";

const PEOPLE: [(&str, &str, &str, &str); 5] = [
    ("emp-001", "Ada", "Lovelace", "Engineering"),
    ("emp-002", "Grace", "Hopper", "Engineering"),
    ("emp-003", "Katherine", "Johnson", "Research"),
    ("emp-004", "Alan", "Turing", "Research"),
    ("emp-005", "Edsger", "Dijkstra", "Operations"),
];

/// What the demo produced.
#[derive(Debug)]
pub struct Outcome {
    pub html: PathBuf,
    pub json: PathBuf,
    pub db: PathBuf,
    pub report: report::Report,
    pub gate: crate::gate::Verdict,
    /// What the rollout did, one line per step.
    pub story: Vec<String>,
    /// The demo's config (`OUT/demo/shadowdiff.toml`).
    pub config: PathBuf,
    /// The window the demo's traffic is in.
    pub window: (SystemTime, SystemTime),
}

/// An individual as legacy (Finch-style) returns it.
fn individual(i: usize) -> Value {
    let (id, first, last, dept) = PEOPLE[i];
    json!({
        "id": id,
        "first_name": first,
        "last_name": last,
        "title": "Engineer",
        "emails": [{"data": format!("{}@example.com", first.to_lowercase()), "type": "work"}],
        "employment": {"type": "employee", "subtype": "full_time"},
        "department": {"name": dept},
        "ssn": format!("123-45-678{i}"),
        "dob": "1990-01-0".to_owned() + &(i + 1).to_string(),
    })
}

/// The same person as the unified API returns it: its own ids and member names, no department.
fn employee(i: usize, drift: bool) -> Value {
    let (id, first, last, _) = PEOPLE[i];
    json!({
        "id": format!("u-{}", 9000 + i),
        "remote_id": id,
        "first_name": first,
        "last_name": last,
        "job_title": if drift { "Senior Engineer" } else { "Engineer" },
        "work_email": format!("{}@example.com", first.to_lowercase()),
        "employment_type": "FULL_TIME",
        "employment_status": "ACTIVE",
        "ssn": format!("123-45-678{i}"),
        "date_of_birth": "1990-01-0".to_owned() + &(i + 1).to_string(),
    })
}

fn directory() -> Value {
    let people: Vec<Value> = (0..PEOPLE.len())
        .map(|i| {
            let (id, first, last, dept) = PEOPLE[i];
            json!({"id": id, "first_name": first, "last_name": last, "department": {"name": dept}, "is_active": true})
        })
        .collect();
    json!({"individuals": people, "paging": {"count": PEOPLE.len(), "offset": 0}})
}

fn employees() -> Value {
    let results: Vec<Value> = (0..PEOPLE.len()).map(|i| employee(i, false)).collect();
    json!({"next": null, "results": results})
}

fn company(account: &str) -> Value {
    json!({"id": format!("co-{account}"), "legal_name": format!("{} Inc.", account), "ein": "12-3456789",
           "locations": [{"city": "Springfield", "country": "US"}]})
}

fn unified_company(account: &str) -> Value {
    json!({"id": format!("c-{account}"), "remote_id": format!("co-{account}"),
           "legal_name": format!("{} Inc.", account), "eins": ["12-3456789"],
           "locations": [{"city": "Springfield", "country": "US", "zip_code": null}]})
}

/// The demo's response mappings (unified schema → legacy schema), written beside its config.
const MAPPINGS: [(&str, &str); 3] = [
    (
        "directory.jsonata",
        r#"/* Unified employees page -> legacy directory. The unified API has no department. */
{
  "individuals": [results.{
    "id": remote_id,
    "first_name": first_name,
    "last_name": last_name,
    "is_active": employment_status = "ACTIVE"
  }],
  "paging": {"count": $count(results), "offset": 0}
}
"#,
    ),
    (
        "individual.jsonata",
        r#"/* Unified employee -> legacy individual. employment_type is copied as it is
   (FULL_TIME); legacy spells it full_time: $lowercase() would fix it. */
{
  "id": remote_id,
  "first_name": first_name,
  "last_name": last_name,
  "title": job_title,
  "emails": [{"data": work_email, "type": "work"}],
  "employment": {"type": "employee", "subtype": employment_type},
  "ssn": ssn,
  "dob": date_of_birth
}
"#,
    ),
    (
        "company.jq",
        "# Unified company -> legacy company.
{id: .remote_id, legal_name, ein: .eins[0], locations: [.locations[] | {city, country}]}
",
    ),
];

fn respond(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// The legacy vendor: Finch-style paths, the caller's bearer token names the account.
fn legacy(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some((account, _, _)) = ACCOUNTS.iter().find(|(_, token, _)| *token == auth) else {
        return respond(StatusCode::UNAUTHORIZED, &json!({"error": "unknown token"}));
    };
    let path = req.uri().path();
    if path == "/employer/directory" {
        return respond(StatusCode::OK, &directory());
    }
    if path == "/employer/company" {
        return respond(StatusCode::OK, &company(account));
    }
    if let Some(id) = path.strip_prefix("/employer/individual/") {
        if let Some(i) = PEOPLE.iter().position(|p| p.0 == id) {
            return respond(StatusCode::OK, &individual(i));
        }
    }
    respond(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
}

/// The candidate platform: unified-API paths, its own key, the account as a query parameter.
async fn candidate(req: Request<Incoming>, counter: Arc<AtomicU64>) -> Response<Full<Bytes>> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some("Bearer demo-candidate-key")
    {
        return respond(StatusCode::UNAUTHORIZED, &json!({"error": "bad api key"}));
    }
    let q = req.uri().query().unwrap_or("");
    let account = crate::translate::parse_query(q)
        .into_iter()
        .find(|(k, _)| k == "integrated_account_id")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if account == REVOKED {
        return respond(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "connection revoked, re-authenticate"}),
        );
    }
    let Some((name, _, _)) = ACCOUNTS.iter().find(|a| a.2 == account) else {
        return respond(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown integrated account"}),
        );
    };
    let path = req.uri().path().to_owned();
    if path == "/unified/hris/employees" {
        return respond(StatusCode::OK, &employees());
    }
    if path == "/unified/hris/company" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        return respond(StatusCode::OK, &unified_company(name));
    }
    if let Some(id) = path.strip_prefix("/unified/hris/employees/") {
        if let Some(i) = PEOPLE.iter().position(|p| p.0 == id) {
            // Data drift: one person's title changes on a few requests.
            return respond(StatusCode::OK, &employee(i, i == 1 && n.is_multiple_of(7)));
        }
    }
    respond(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
}

async fn serve_fake<F, Fut>(listen: &str, handler: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's configuration, parsed like a user's file; `legacy` and `candidate` are base URLs.
fn config_text(legacy: &str, candidate: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
# Needed where the admin listener is reachable from other hosts (the compose fleet sets it).
token = "${{SHADOWDIFF_ADMIN_TOKEN:-}}"
[legacy]
base_url = "{legacy}"
timeout = "5s"
[candidate]
base_url = "{candidate}"
timeout = "5s"
headers = {{ authorization = "Bearer demo-candidate-key" }}
[accounts]
key = "header:authorization"
file = "accounts.csv"
[diff]
headers = ["content-type"]
[store]
path = "demo.db"
# Every differing exchange and a quarter of the matching ones keep their (redacted) bodies:
# what `suggest` learns from and `rediff` checks a fix against.
bodies = "sampled"
body_sample = 1.0
match_sample = 0.25
redact_fields = ["**/ssn", "**/dob"]

[[routes]]
name = "directory"
method = "GET"
path = "/employer/directory"
[routes.candidate]
path = "/unified/hris/employees"
query = {{ integrated_account_id = "{{account.candidate_id}}" }}
mapping = "mappings/directory.jsonata"
[routes.diff]
ignore = ["/paging"]

[[routes]]
name = "individual"
method = "GET"
path = "/employer/individual/{{id}}"
[routes.candidate]
path = "/unified/hris/employees/{{id}}"
query = {{ integrated_account_id = "{{account.candidate_id}}" }}
mapping = "mappings/individual.jsonata"

[[routes]]
name = "company"
method = "GET"
path = "/employer/company"
[routes.candidate]
path = "/unified/hris/company"
query = {{ integrated_account_id = "{{account.candidate_id}}" }}
mapping = "mappings/company.jq"

[rollout]
phase = "shadow"
pin_candidate = ["acme"]
[rollout.phases.canary]
percent = 0            # the drill serves the pinned account only
[rollout.guard]
auto_rollback = true
min_sample = 20
min_parity = 0.9
every = "100ms"

[gate.shadow]
min_compared = 50
min_parity = 0.98
max_candidate_error_rate = 0.02
max_auth_error_accounts = 0
max_latency_ratio = 50.0
"#
    )
}

/// Writes the demo's config, accounts file and mappings to `out_dir/demo/` for upstreams at
/// `legacy` and `candidate` (base URLs), and removes a previous demo store; the config's path.
pub fn write_workspace(out_dir: &Path, legacy: &str, candidate: &str) -> anyhow::Result<PathBuf> {
    // They go into the config's text: only plain http(s) URLs, nothing that could end a string.
    for (flag, url) in [("--legacy-url", legacy), ("--candidate-url", candidate)] {
        let plain = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .is_some()
            && !url.contains(['"', '\\']);
        if !plain {
            anyhow::bail!("{flag}: {url:?} is not an http(s) URL");
        }
    }
    let work = out_dir.join("demo");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    for stale in ["demo.db", "demo.db-wal", "demo.db-shm"] {
        let _ = std::fs::remove_file(work.join(stale));
    }
    let mut csv = String::from("key_sha256,name,candidate_id\n");
    for (name, token, cid) in ACCOUNTS {
        csv.push_str(&format!(
            "{},{name},{cid}\n",
            key_sha256_hex(token.as_bytes())
        ));
    }
    std::fs::write(work.join("accounts.csv"), csv)?;
    std::fs::create_dir_all(work.join("mappings"))?;
    for (file, text) in MAPPINGS {
        std::fs::write(work.join("mappings").join(file), text)?;
    }
    let cfg_path = work.join("shadowdiff.toml");
    std::fs::write(&cfg_path, config_text(legacy, candidate))?;
    Ok(cfg_path)
}

/// Serves the two fake vendors (`demo --upstreams-only`) until `shutdown` resolves: for a
/// local fleet, the proxies configured by [`write_workspace`] in front of them.
pub async fn upstreams(
    legacy_listen: &str,
    candidate_listen: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let legacy_addr = serve_fake(legacy_listen, |req: Request<Incoming>| async move {
        legacy(&req)
    })
    .await?;
    let counter = Arc::new(AtomicU64::new(0));
    let candidate_addr =
        serve_fake(candidate_listen, move |req| candidate(req, counter.clone())).await?;
    eprintln!(
        "shadowdiff demo: fake legacy API on http://{legacy_addr}, fake candidate API on \
         http://{candidate_addr}"
    );
    eprintln!("  accounts (send as the authorization header):");
    for (name, token, _) in ACCOUNTS {
        eprintln!("    {name}: {token}");
    }
    shutdown.await;
    Ok(())
}

/// Runs the tour: `requests` requests through the proxy; files go to `out_dir`.
pub async fn run(
    requests: usize,
    out_dir: &Path,
    progress: impl Fn(usize, usize),
) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let legacy_addr = serve_fake("127.0.0.1:0", |req: Request<Incoming>| async move {
        legacy(&req)
    })
    .await?;
    let counter = Arc::new(AtomicU64::new(0));
    let candidate_addr =
        serve_fake("127.0.0.1:0", move |req| candidate(req, counter.clone())).await?;
    let cfg_path = write_workspace(
        out_dir,
        &format!("http://{legacy_addr}"),
        &format!("http://{candidate_addr}"),
    )?;
    let cfg = Config::load(&cfg_path)?;
    let gate_cfg = cfg.gates.get("shadow").cloned().unwrap_or_default();
    let db = cfg.store.path.clone();
    let admin_token = cfg.admin.token.clone();

    let started = SystemTime::now();
    let server = Server::bind(cfg).await?;
    let addr = server.proxy_addr();
    let admin = server.admin_addr().context("the demo's admin listener")?;
    let handle = server.handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(AtomicU64::new(0));
    let wave = Wave {
        client: &client,
        addr,
        sent: &sent,
        total: requests,
        progress: &progress,
    };
    let mut story = Vec::new();
    // Wave 1, shadow: the candidate is only compared.
    let first = requests / 2;
    wave.send(0, first).await?;
    handle.quiesce().await;
    {
        let cfg = Config::load(&cfg_path)?;
        let store = crate::store::open_reader(&db)?;
        let window = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default()
            + Duration::from_secs(1);
        story.push(
            match crate::rollout_control::decide_promotion(&*store, &cfg, "shadow", window) {
                Ok((next, _)) => format!("rollout promote: shadow → {next} (the gate passed)"),
                Err(crate::rollout_control::PromoteError::Refused(v)) => {
                    let failing = v.failing_names();
                    format!(
                        "rollout promote: refused, the gate of shadow fails ({})",
                        failing.join(", ")
                    )
                }
                Err(e) => format!("rollout promote: {e}"),
            },
        );
    }
    // Wave 2: a canary drill that serves the pinned account from the candidate.
    let set = admin_call(
        &client,
        (admin, admin_token.as_deref()),
        Some(json!({"phase": "canary", "actor": "demo", "reason": "drill: serve the pinned account acme"})),
    )
    .await?;
    story.push(format!(
        "rollout set canary (change #{}): the candidate now answers acme, mapped into the legacy schema",
        set["event"]["id"]
    ));
    let second = requests / 3;
    wave.send(first, second).await?;
    handle.quiesce().await;
    let mut state = admin_call(&client, (admin, admin_token.as_deref()), None).await?;
    for _ in 0..40 {
        if state["phase"] == "rollback" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = admin_call(&client, (admin, admin_token.as_deref()), None).await?;
    }
    if state["phase"] == "rollback" {
        let reason = state["events"]
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e["reason"].as_str())
            .unwrap_or("")
            .to_owned();
        story.push(format!("guard: {reason}"));
    } else {
        let report = &state["guard"]["report"];
        admin_call(
            &client,
            (admin, admin_token.as_deref()),
            Some(json!({"phase": "rollback", "actor": "demo", "reason": "rollback drill"})),
        )
        .await?;
        story.push(format!(
            "guard: no automatic action on {} served requests (min_sample {}); rolled back by hand (the drill)",
            report["tally"]["requests"], report["min_sample"]
        ));
    }
    // Wave 3: everything on legacy again.
    wave.send(first + second, requests - first - second).await?;
    handle.quiesce().await;
    let _ = stop_tx.send(());
    running.await?;

    let store = crate::store::open_reader(&db)?;
    let filter = report::Filter {
        from: started - Duration::from_secs(1),
        to: SystemTime::now() + Duration::from_secs(1),
        route: None,
        account: None,
        mapping_version: None,
    };
    let rep = report::build(&*store, &filter)?;
    let gate = crate::gate::evaluate(&*store, "shadow", &gate_cfg, &filter)?;
    let html = out_dir.join("demo.html");
    let json = out_dir.join("demo.json");
    std::fs::write(&html, report::render::html(&rep))?;
    std::fs::write(&json, report::render::json(&rep))?;
    let r = &rep.rollout;
    story.push(format!(
        "served: {} of acme's requests by the candidate, {} by legacy after a fallback; every request after the rollback by legacy",
        r.served_by_candidate,
        r.fallbacks.values().sum::<u64>()
    ));
    Ok(Outcome {
        html,
        json,
        db,
        report: rep,
        gate,
        story,
        config: cfg_path,
        window: (filter.from, filter.to),
    })
}

/// The mapping loop on the demo's store: `suggest` for each mapped route, the checked changes
/// written to `OUT/demo/proposed/`, then `rediff` with them. One line per finding. Blocks (the
/// mappings run in worker processes): call it off the async runtime.
pub fn mapping_loop(o: &Outcome) -> anyhow::Result<Vec<String>> {
    use crate::rediff::suggest::{self, Fix};
    let cfg = Config::load(&o.config)?;
    let store = crate::store::open_reader(&o.db)?;
    let runner = crate::mapping::runner::Runner::for_this_binary(2)?;
    let proposed = o
        .config
        .parent()
        .map_or_else(|| PathBuf::from("proposed"), |d| d.join("proposed"));
    let _ = std::fs::remove_dir_all(&proposed);
    let mut lines = Vec::new();
    let mut proposal = crate::rediff::Proposed::default();
    for route in cfg.routes.iter().filter(|r| r.mappings.candidate.is_some()) {
        let f = crate::store::Filter {
            from: o.window.0,
            to: o.window.1,
            route: Some(crate::record::RouteKey::named(&route.name)),
            account: None,
            mapping_version: None,
        };
        let mut pairs = Vec::new();
        let mut after = 0;
        loop {
            let page = store.kept_pairs(&f, after, 256)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            pairs.extend(page);
        }
        let s = suggest::suggest(&cfg, &runner, &*store, route, &pairs)?;
        for g in &s.suggestions {
            let what = match (&g.fix, &g.checked) {
                (Fix::NotInCandidate, _) => {
                    "the candidate never returns it: no mapping can fill it, a gap to report to the vendor".to_owned()
                }
                (Fix::None { why }, _) => why.clone(),
                (fix, Some(k)) => format!(
                    "{} (checked: differs in {} -> {} of {} kept exchanges)",
                    match fix {
                        Fix::Path { expr, .. } => format!("read {expr}"),
                        Fix::Lowercase => "lower case it".into(),
                        Fix::Uppercase => "upper case it".into(),
                        Fix::Number => "read it as a number".into(),
                        Fix::String => "read it as a string".into(),
                        Fix::Lookup { pairs } => format!("translate {} values", pairs.len()),
                        _ => String::new(),
                    },
                    k.field_before,
                    k.field_after,
                    k.exchanges
                ),
                (_, None) => "no checked change".into(),
            };
            lines.push(format!(
                "suggest {} {} {}: {what}",
                route.name, g.field, g.kind
            ));
            if let Some(c) = &g.change {
                for l in c.diff.lines().filter(|l| {
                    (l.starts_with('+') || l.starts_with('-'))
                        && !l.starts_with("+++")
                        && !l.starts_with("---")
                }) {
                    lines.push(format!("  {l}"));
                }
            }
        }
        if let Some(c) = &s.combined {
            std::fs::create_dir_all(&proposed)?;
            let lang = crate::mapping::Lang::parse(c.lang).unwrap_or(crate::mapping::Lang::Jsonata);
            let file = proposed.join(format!("{}.{}", route.name, lang.ext()));
            std::fs::write(&file, &c.source)?;
            proposal.base.insert(
                route.name.clone(),
                crate::mapping::base_level(lang, &c.source, &file.display().to_string())?,
            );
        }
    }
    if proposal.base.is_empty() {
        lines.push("rediff: no checked change to re-diff with".into());
        return Ok(lines);
    }
    let f = crate::store::Filter {
        from: o.window.0,
        to: o.window.1,
        route: None,
        account: None,
        mapping_version: None,
    };
    let summary = crate::rediff::Rediff::new(&cfg, &runner, proposal).run(&*store, &f)?;
    for r in &summary.routes {
        let fixed: Vec<String> = r
            .fields
            .iter()
            .filter(|x| x.recorded > 0 && x.now == 0)
            .map(|x| format!("{} fixed in {}", x.field, x.recorded))
            .collect();
        let left: Vec<&str> = r
            .fields
            .iter()
            .filter(|x| x.now > 0)
            .map(|x| x.field.as_str())
            .collect();
        lines.push(format!(
            "rediff {} with {}: parity {:.1}% -> {:.1}% over {} kept exchanges{}{}",
            r.route,
            proposed.display(),
            r.recorded_parity * 100.0,
            r.parity * 100.0,
            r.exchanges,
            if fixed.is_empty() {
                String::new()
            } else {
                format!("; {}", fixed.join(", "))
            },
            if left.is_empty() {
                String::new()
            } else {
                format!("; still differing: {}", left.join(", "))
            }
        ));
    }
    Ok(lines)
}

/// Sends the demo's traffic through the proxy, counting towards one progress bar.
struct Wave<'a, P: Fn(usize, usize)> {
    client: &'a hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    addr: SocketAddr,
    sent: &'a Arc<AtomicU64>,
    total: usize,
    progress: &'a P,
}

impl<P: Fn(usize, usize)> Wave<'_, P> {
    /// Requests `from..from + n` of the demo's sequence (accounts and routes in turn).
    async fn send(&self, from: usize, n: usize) -> anyhow::Result<()> {
        let workers = 8.min(n.max(1));
        let end = from + n;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (client, sent, addr) = (self.client.clone(), self.sent.clone(), self.addr);
            tasks.push(tokio::spawn(async move {
                let mut i = from + w;
                while i < end {
                    let (_, token, _) = ACCOUNTS[i % ACCOUNTS.len()];
                    let path = match i % 5 {
                        0 | 1 => "/employer/directory".to_owned(),
                        2 | 3 => {
                            format!("/employer/individual/{}", PEOPLE[(i / 5) % PEOPLE.len()].0)
                        }
                        _ => "/employer/company".to_owned(),
                    };
                    let req = Request::get(format!("http://{addr}{path}"))
                        .header("authorization", token)
                        .body(Full::default())
                        .expect("valid request");
                    if let Ok(res) = client.request(req).await {
                        let _ = res.into_body().collect().await;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += workers;
                }
            }));
        }
        let mut last = 0;
        while tasks.iter().any(|t| !t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.sent.load(Ordering::Relaxed) as usize;
            if now != last {
                (self.progress)(now, self.total);
                last = now;
            }
        }
        for t in tasks {
            t.await?;
        }
        (self.progress)(self.sent.load(Ordering::Relaxed) as usize, self.total);
        Ok(())
    }
}

/// `GET /api/rollout`, or `POST` it with `body`; the JSON answer.
async fn admin_call(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    (admin, token): (SocketAddr, Option<&str>),
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("http://{admin}/api/rollout");
    let mut req = match body {
        Some(b) => Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => Request::get(url).body(Full::default()),
    }?;
    if let Some(t) = token {
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {t}"))?,
        );
    }
    let res = client.request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    if !status.is_success() {
        anyhow::bail!("/api/rollout answered {status}: {v}");
    }
    Ok(v)
}
