//! The served path (issue "Serving the candidate: the caller's answer is never worse than
//! legacy's"): each finding of the probe as a test against the real `shadowdiff serve` binary,
//! with the vendors as small HTTP servers on 127.0.0.1.
//!
//! - a candidate that accepts connections and never answers, in `ga`, under a 1,024 open-files
//!   limit: every caller gets legacy's exact bytes and the open files stay bounded;
//! - a key legacy refuses never reads candidate data;
//! - empty, blank, redirect and no-content answers are never served, and the guard counts them;
//! - a paginating client (the official Finch Python SDK when installed, scripts/test.sh installs
//!   it) gets every item with legacy's ids, when the candidate pages by cursor and issues ids of
//!   its own;
//! - served parity is strict (an ignore rule does not turn a served answer into `match`) unless
//!   the rule is declared `serve_safe`;
//! - the guard sees candidate failures in a phase without legacy calls;
//! - a caller that leaves before its answer is recorded and counted;
//! - verified serving (`canary`): a candidate answering another account's data is never served.
//!
//! Every wait is a bounded poll; timings are never asserted.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::process::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[[routes]]` text for a route serving unknown accounts from the candidate.
fn route(name: &str, path: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nunknown_account = \"candidate\"\n{extra}\n")
}

fn phase(p: &str) -> String {
    format!("[rollout]\nphase = \"{p}\"\nfollow = \"100ms\"\n")
}

/// The stored exchanges, as maps of the named columns (by id).
fn exchanges(p: &Proc, cols: &str) -> Vec<HashMap<String, Value>> {
    let names: Vec<String> = cols.split(',').map(|c| c.trim().to_owned()).collect();
    query(
        &p.db(),
        &format!("SELECT {cols} FROM exchanges ORDER BY id"),
    )
    .into_iter()
    .map(|row| names.iter().cloned().zip(row).collect())
    .collect()
}

/// Polls until `n` exchanges are stored, then returns them.
fn wait_exchanges(p: &Proc, n: usize, cols: &str) -> Vec<HashMap<String, Value>> {
    p.wait_rows(n);
    exchanges(p, cols)
}

async fn metrics(p: &Proc) -> String {
    String::from_utf8(get(&p.admin_url("/metrics")).await.body.to_vec()).unwrap()
}

// ------------------------------------------------------- 1. a hanging candidate in ga

/// A candidate that accepts every connection, reads what it is sent and never answers; a
/// connection is held until the proxy closes it. Counts the connections it holds.
async fn silent_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let o = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let o = o.clone();
            o.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                o.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    (addr, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_candidate_in_ga_never_takes_legacy_down() {
    let _ = rlimit::increase_nofile_limit(8192);
    let legacy = Upstream::start_unlogged(|s| {
        Reply::json(json!({"from": "legacy", "uri": s.uri.clone(), "pad": "x".repeat(512)}))
    })
    .await;
    let (candidate, held) = silent_upstream().await;
    let mut cfg = Conf::new(&legacy.url(), &format!("http://{candidate}"));
    cfg.candidate_timeout = "30s".into();
    cfg.rest = format!(
        "{}{}",
        phase("ga"),
        route("d", "/d/{n}", "serve_deadline = \"200ms\"")
    );
    let p = start(cfg, Some(1024)).await;
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..48 {
        let (client, stop, ok, wrong) = (client.clone(), stop.clone(), ok.clone(), wrong.clone());
        let url = p.url(&format!("/d/{c}"));
        callers.spawn(async move {
            let expected =
                json!({"from": "legacy", "uri": format!("/d/{c}"), "pad": "x".repeat(512)})
                    .to_string();
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                let good = match tokio::time::timeout(Duration::from_secs(10), client.request(req))
                    .await
                {
                    Ok(Ok(res)) => {
                        let status = res.status();
                        let body = http_body_util::BodyExt::collect(res.into_body())
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        status == 200 && body == expected.as_bytes()
                    }
                    _ => false,
                };
                if good { &ok } else { &wrong }.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // 8 s of traffic; the open files sampled every 50 ms. On the code before the fix the
    // candidate connections piled up to the limit within ~4 s and legacy became unreachable.
    let t0 = Instant::now();
    let mut max_fds = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        max_fds = max_fds.max(p.open_fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while callers.join_next().await.is_some() {}
    let (ok, wrong) = (ok.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    let total = ok + wrong;
    assert!(
        total > 200,
        "too few answers to judge: {total}\n{}",
        p.log()
    );
    assert!(
        ok as f64 >= total as f64 * 0.999,
        "{wrong} of {total} callers did not get legacy's exact bytes; max open files {max_fds}\n{}",
        p.log()
    );
    // Bounded: each caller connection holds at most one legacy and one candidate connection
    // (48 callers), far below the limit the process runs under.
    assert!(max_fds < 600, "open files reached {max_fds} of 1,024");
    // Every served call was cancelled at the deadline: none is held once the callers stop.
    assert!(
        poll_async(Duration::from_secs(10), || async {
            (held.load(Ordering::Relaxed) == 0).then_some(())
        })
        .await
        .is_some(),
        "{} candidate connections still open",
        held.load(Ordering::Relaxed)
    );
    let rows = exchanges(&p, "fallback, outcome, served_by");
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["fallback"] == "deadline" && r["served_by"] == "legacy"),
        "{:?}",
        rows.iter().find(|r| r["fallback"] != "deadline")
    );
}

// ------------------------------------------------------- 2. legacy's verdict first

/// An accounts file of one key per name: `Bearer NAME-token`.
fn accounts_files(names: &[&str]) -> (String, Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(accounts_csv(dir.path(), names)).unwrap();
    (
        "[accounts]\nkey = \"header:authorization\"\nfile = \"accounts.csv\"\n".into(),
        vec![("accounts.csv", csv)],
    )
}

async fn get_with(url: &str, token: &str) -> Got {
    get_with_header(url, "authorization", &format!("Bearer {token}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_legacy_refuses_never_reads_candidate_data() {
    // Legacy refuses mallory's key (after a while: the candidate answers first), and fails
    // outright for broken's; the candidate answers everyone with data.
    let legacy = Upstream::start(|s| {
        let auth = s.headers.get("authorization").unwrap().to_str().unwrap();
        if auth.contains("mallory") {
            Reply::json(json!({"error": "invalid_token"}))
                .status(401)
                .delay(Duration::from_millis(300))
        } else if auth.contains("broken") {
            Reply::json(json!({"error": "down"})).status(503)
        } else {
            Reply::json(json!({"individuals": [{"id": "1"}]}))
        }
    })
    .await;
    let candidate = Upstream::start(|_| Reply::json(json!({"individuals": [{"id": "1"}]}))).await;
    let (accounts, files) = accounts_files(&["acme", "mallory", "broken"]);
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.files = files;
    cfg.rest = format!(
        "{accounts}{}[rollout.phases.ga]\nverify = false\n{}",
        phase("ga"),
        route("dir", "/employer/directory", "")
    );
    let p = start(cfg, None).await;
    let url = p.url("/employer/directory");
    let refused = get_with(&url, "mallory-token").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json(), json!({"error": "invalid_token"}));
    let failed = get_with(&url, "broken-token").await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.json(), json!({"error": "down"}));
    let fine = get_with(&url, "acme-token").await;
    assert_eq!(fine.status, 200);
    let rows = wait_exchanges(&p, 3, "account, served_by, fallback, legacy_status");
    let by: HashMap<&str, &HashMap<String, Value>> = rows
        .iter()
        .map(|r| (r["account"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by["mallory"]["served_by"], "legacy");
    assert_eq!(by["mallory"]["fallback"], "legacy_status");
    assert_eq!(by["mallory"]["legacy_status"], 401);
    assert_eq!(by["broken"]["fallback"], "legacy_status");
    assert_eq!(by["acme"]["served_by"], "candidate");
    assert_eq!(by["acme"]["fallback"], Value::Null);
}

// ------------------------------------------------------- 3. only a verified document

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blank_redirect_and_no_content_answers_are_never_served() {
    let legacy = Upstream::start(|s| Reply::json(json!({"legacy": s.uri.clone()}))).await;
    let candidate = Upstream::start(|s| match s.uri.as_str() {
        "/r/empty" => Reply::bytes(200, "").header("content-type", "application/json"),
        "/r/blank" => Reply::bytes(200, " \r\n\t ").header("content-type", "application/json"),
        "/r/redirect" => Reply::bytes(302, "").header("location", "https://elsewhere.example/x"),
        "/r/nocontent" => Reply::bytes(204, ""),
        "/r/created" => Reply::json(json!({"legacy": "/r/created"})).status(201),
        // A lone surrogate: syntactically JSON, refused by the comparison's parser.
        "/r/surrogate" => Reply::bytes(200, r#"{"legacy": "\ud800"}"#),
        _ => Reply::json(json!({"legacy": s.uri.clone()})),
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = format!(
        "{}[rollout.phases.ga]\nverify = false\n{}",
        phase("ga"),
        route("r", "/r/{x}", "")
    );
    let p = start(cfg, None).await;
    let cases = [
        "empty",
        "blank",
        "redirect",
        "nocontent",
        "created",
        "surrogate",
        "fine",
    ];
    for c in cases {
        let got = get(&p.url(&format!("/r/{c}"))).await;
        assert_eq!(got.status, 200, "{c}");
        assert_eq!(got.json(), json!({"legacy": format!("/r/{c}")}), "{c}");
        assert!(!got.headers.contains_key("location"), "{c}");
    }
    let rows = wait_exchanges(&p, cases.len(), "path, served_by, fallback");
    let fallback: HashMap<&str, (&str, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap(),
                (r["served_by"].as_str().unwrap(), r["fallback"].clone()),
            )
        })
        .collect();
    assert_eq!(fallback["/r/empty"], ("legacy", json!("empty_body")));
    assert_eq!(fallback["/r/blank"], ("legacy", json!("empty_body")));
    assert_eq!(fallback["/r/redirect"], ("legacy", json!("status")));
    assert_eq!(fallback["/r/nocontent"], ("legacy", json!("status")));
    // 201 where legacy said 200: not legacy's status.
    assert_eq!(fallback["/r/created"], ("legacy", json!("status")));
    assert_eq!(fallback["/r/surrogate"], ("legacy", json!("not_json")));
    assert_eq!(fallback["/r/fine"], ("candidate", Value::Null));
    // The guard counts every one of them.
    let st: Value = get(&p.admin_url("/api/rollout")).await.json();
    let tally = &st["guard"]["report"]["tally"];
    assert_eq!(tally["requests"], 7, "{st}");
    assert_eq!(tally["fallbacks"], 6, "{st}");
    assert_eq!(tally["candidate_failures"], 6, "{st}");
}

// ------------------------------------------------------- 4. a paginating client

/// Twelve employees as Finch's directory has them, with Finch's ids.
fn finch_people() -> Vec<Value> {
    (0..12)
        .map(|i| {
            json!({
                "id": format!("f1d2{i:04}-6c5a-4b3e-9d11-finch{i:02}"),
                "first_name": format!("First{i}"),
                "middle_name": null,
                "last_name": format!("Last{i}"),
                "manager": if i == 0 { Value::Null } else { json!({"id": "f1d20000-6c5a-4b3e-9d11-finch00"}) },
                "department": {"name": "Engineering"},
                "is_active": true
            })
        })
        .collect()
}

/// A Finch-like legacy: `GET /employer/directory?limit&offset`, bearer auth, offset paging
/// (`paging.count` is the total, as the SDK reads it).
async fn finch() -> Upstream {
    Upstream::start(|s| {
        if s.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer acme-token")
        {
            return Reply::json(json!({"code": 401, "name": "invalid_token"})).status(401);
        }
        let q = query_of(&s.uri);
        let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
        let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let people = finch_people();
        let page: Vec<Value> = people.iter().skip(offset).take(limit).cloned().collect();
        Reply::json(
            json!({"paging": {"count": people.len(), "offset": offset}, "individuals": page}),
        )
    })
    .await
}

/// A Merge-like candidate: `GET /api/hris/v1/employees?page_size&cursor`, its own ids,
/// `X-Account-Token`, cursor paging.
async fn merge() -> Upstream {
    Upstream::start(|s| {
        if s.headers.get("x-account-token").and_then(|v| v.to_str().ok()) != Some("merge-acme") {
            return Reply::json(json!({"detail": "invalid account token"})).status(401);
        }
        let q = query_of(&s.uri);
        let size: usize = q.get("page_size").and_then(|v| v.parse().ok()).unwrap_or(100);
        let start: usize = q.get("cursor").and_then(|v| v.parse().ok()).unwrap_or(0);
        let people: Vec<Value> = (0..12)
            .map(|i| {
                json!({
                    "id": format!("0958cbc6-6040-430a-848e-merge{i:03}"),
                    "remote_id": format!("f1d2{i:04}-6c5a-4b3e-9d11-finch{i:02}"),
                    "first_name": format!("First{i}"),
                    "last_name": format!("Last{i}"),
                    "manager": if i == 0 { Value::Null } else { json!("0958cbc6-6040-430a-848e-merge000") },
                    "employment_status": "ACTIVE"
                })
            })
            .collect();
        let page: Vec<Value> = people.iter().skip(start).take(size).cloned().collect();
        let next = (start + size < people.len()).then(|| (start + size).to_string());
        Reply::json(json!({"next": next, "previous": null, "results": page}))
    })
    .await
}

fn query_of(uri: &str) -> HashMap<String, String> {
    uri.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The directory route as a team would first write it: Merge's results reshaped into Finch's
/// schema (ids are Merge's, the page count is the page's length), with the comparison told to
/// ignore the ids and the paging envelope it cannot reproduce yet.
const DIRECTORY: &str = r#"
[[routes]]
name = "directory"
path = "/employer/directory"
unknown_account = "candidate"
[routes.candidate]
path = "/api/hris/v1/employees"
query = { page_size = "{query.limit}" }
mapping_lang = "jq"
mapping_expr = '{paging: {count: (.results | length), offset: 0}, individuals: [.results[] | {id, first_name, middle_name: null, last_name, manager: (if .manager then {id: .manager} else null end), department: {name: "Engineering"}, is_active: (.employment_status == "ACTIVE")}]}'
[routes.diff]
ignore = ["/paging", "/individuals/*/id", "/individuals/*/manager/id"]
"#;

/// Lists the directory through the proxy as the official Finch Python SDK does (auto-paging
/// on `paging.count` and `offset`), 5 per page; returns the ids it got.
fn finch_sdk_ids(base: &str) -> Vec<String> {
    let script = r#"
import json, sys
import finch
client = finch.Finch(access_token="acme-token", base_url=sys.argv[1], max_retries=0)
print(json.dumps([i.id for i in client.hris.directory.list(limit=5)]))
"#;
    serde_json::from_value(support::vendors::finch_sdk(script, &[base])).unwrap()
}

async fn directory_ids(phase_name: &str) -> (Vec<String>, Vec<HashMap<String, Value>>) {
    let legacy = finch().await;
    let candidate = merge().await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.candidate_extra = "headers = { \"x-account-token\" = \"merge-acme\" }\n".into();
    cfg.rest = format!("{}{DIRECTORY}", phase(phase_name));
    let p = start(cfg, None).await;
    let base = p.url("");
    let ids = tokio::task::spawn_blocking(move || finch_sdk_ids(&base))
        .await
        .unwrap();
    let rows = wait_exchanges(&p, 3, "served_by, fallback, outcome");
    (ids, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paginating_client_gets_every_item_with_legacy_ids_in_ga_and_canary() {
    let expected: Vec<String> = finch_people()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    // ga (no verify): the route's comparison ignores fields the caller receives: never served.
    let (ids, rows) = directory_ids("ga").await;
    assert_eq!(ids, expected);
    assert_eq!(rows.len(), 3, "three pages: {rows:?}");
    for r in &rows {
        assert_eq!(r["served_by"], "legacy");
        assert_eq!(r["fallback"], "unverified_rules");
        assert_eq!(
            r["outcome"], "diff",
            "strict: the ignore rules do not make it a match"
        );
    }
    // canary (verify): each candidate answer compared strictly first; none equals legacy's.
    let (ids, rows) = directory_ids("canary").await;
    assert_eq!(ids, expected);
    for r in &rows {
        assert_eq!(r["served_by"], "legacy");
        assert_eq!(r["fallback"], "unverified");
        assert_eq!(
            r["outcome"], "diff",
            "strict: the ignore rules do not make it a match"
        );
    }
}

// ------------------------------------------------------- 4b. strict served parity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_parity_is_strict_unless_a_rule_is_declared_serve_safe() {
    let legacy = Upstream::start(|_| {
        Reply::json(json!({"name": "Ada", "start_date": "2015-01-10", "request_id": "l-1"}))
    })
    .await;
    let candidate = Upstream::start(|_| {
        Reply::json(
            json!({"name": "Ada", "start_date": "2015-01-10T00:00:00Z", "request_id": "c-9"}),
        )
    })
    .await;
    let rules = "[routes.diff]\nignore = [\"/request_id\"]\nnormalize = [{ fields = [\"/start_date\"], with = [\"datetime\"] }]\n";
    // One request to a fresh proxy with `rest`: the request_id the caller got, and the row.
    let once = |rest: String| {
        let mut cfg = Conf::new(&legacy.url(), &candidate.url());
        cfg.rest = rest;
        async move {
            let p = start(cfg, None).await;
            let id = get(&p.url("/p")).await.json()["request_id"].clone();
            let row = wait_exchanges(&p, 1, "served_by, fallback, outcome").remove(0);
            (id, row, p)
        }
    };
    // Not declared safe: in ga the route falls back, and the cohort's comparison is strict:
    // a `diff`, although the route's rules make the pair a match (as in the shadow phase).
    let (id, row, _) = once(format!("{}{}", phase("ga"), route("p", "/p", rules))).await;
    assert_eq!(id, "l-1");
    assert_eq!(row["fallback"], "unverified_rules");
    assert_eq!(row["outcome"], "diff");
    let (_, row, _) = once(format!("{}{}", phase("shadow"), route("p", "/p", rules))).await;
    assert_eq!(
        row["outcome"], "match",
        "the shadow phase compares by the route's rules"
    );
    // Both declared safe: served, and the served comparison applies just those rules.
    let both = format!("{rules}serve_safe = [\"/request_id\", \"/start_date\"]\n");
    let (id, row, _) = once(format!("{}{}", phase("ga"), route("p", "/p", &both))).await;
    assert_eq!(id, "c-9");
    assert_eq!(row["served_by"], "candidate");
    assert_eq!(row["outcome"], "match");
    // Only the datetime rule declared safe: the route still has an unverified rule.
    let one = format!("{rules}serve_safe = [\"/start_date\"]\n");
    let (id, row, p) = once(format!(
        "{}[rollout.phases.ga]\nverify = true\n{}",
        phase("ga"),
        route("p", "/p", &one)
    ))
    .await;
    // ga with verify: compared strictly, request_id differs: legacy's answer.
    assert_eq!(id, "l-1");
    assert_eq!(row["fallback"], "unverified");
    // `check` names the unverified rule.
    let dir = p.dir.path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["check", "--config", "sd.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route \"p\"") && err.contains("ignore \"/request_id\""),
        "{err}"
    );
    assert!(!err.contains("normalize \"/start_date\""), "{err}");
}

// ------------------------------------------------------- 5. the guard without legacy calls

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_sees_candidate_failures_in_a_phase_without_legacy_calls() {
    let legacy = Upstream::start_unlogged(|_| Reply::json(json!({"ok": true}))).await;
    let candidate =
        Upstream::start_unlogged(|_| Reply::json(json!({"error": "boom"})).status(500)).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = format!(
        "{}[rollout.phases.ga]\nlegacy_sample = 0.0\n[rollout.guard]\nauto_rollback = true\nevery = \"50ms\"\nwindow = \"1m\"\nmin_sample = 30\n{}",
        phase("ga"),
        route("d", "/d", "")
    );
    let p = start(cfg, None).await;
    let mut rolled_back = false;
    for i in 0..300 {
        let got = get(&p.url("/d")).await;
        if got.json() == json!({"ok": true}) {
            // Once rolled back, legacy answers.
            rolled_back = true;
            break;
        }
        // No legacy call: the candidate's failure is the caller's (the price of
        // legacy_sample < 1), and it is counted.
        assert_eq!(got.status, 500, "{i}");
    }
    assert!(
        rolled_back,
        "{}",
        get(&p.admin_url("/api/rollout")).await.json()
    );
    let st: Value = get(&p.admin_url("/api/rollout")).await.json();
    assert_eq!(st["phase"], "rollback", "{st}");
    // The phase is in force at once, recorded just after: polled (a loaded machine lost that
    // race).
    let ev = tokio::task::block_in_place(|| {
        poll(std::time::Duration::from_secs(20), || {
            let ev = query(&p.db(), "SELECT actor, reason FROM rollout_events");
            (!ev.is_empty()).then_some(ev)
        })
        .expect("the rollback recorded")
    });
    assert_eq!(ev[0][0], "guard");
    assert!(
        ev[0][1]
            .as_str()
            .unwrap()
            .contains("max_candidate_error_rate"),
        "{ev:?}"
    );
    let rows = exchanges(&p, "outcome, served_by");
    assert!(rows
        .iter()
        .take(30)
        .all(|r| r["outcome"] == "candidate_error" && r["served_by"] == "candidate"));
}

// ------------------------------------------------------- 6. the early caller

/// Sends a GET on a raw connection and closes it after `wait` without reading the answer.
async fn leave_early(addr: std::net::SocketAddr, path: &str, wait: Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    // The caller gives up: nothing may come before the vendors answer (1.5 s).
    let got = tokio::time::timeout(wait, s.read(&mut buf)).await;
    assert!(got.is_err(), "an answer came before the vendors answered");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_before_any_answer_is_recorded_and_counted() {
    let slow = Duration::from_millis(1500);
    let legacy =
        Upstream::start(move |s| Reply::json(json!({"p": s.uri.clone()})).delay(slow)).await;
    let candidate =
        Upstream::start(move |s| Reply::json(json!({"p": s.uri.clone()})).delay(slow)).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    // Shadow phase for /s (legacy serves), ga for /g (the candidate serves).
    cfg.rest = format!(
        "{}[rollout.phases.ga]\nverify = false\n[[routes]]\nname = \"s\"\npath = \"/s/{{n}}\"\nserve = false\n{}",
        phase("ga"),
        route("g", "/g/{n}", "")
    );
    let p = start(cfg, None).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..5 {
        let addr = p.proxy;
        set.spawn(async move {
            leave_early(addr, &format!("/s/{i}"), Duration::from_millis(300)).await;
        });
        set.spawn(async move {
            leave_early(addr, &format!("/g/{i}"), Duration::from_millis(300)).await;
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let rows = wait_exchanges(&p, 10, "route, served_by, outcome, reason, legacy_status");
    for r in &rows {
        assert_eq!(r["served_by"], "none", "{r:?}");
        if r["route"] == "s" {
            // The comparison still ran once both answers were in.
            assert_eq!(r["outcome"], "match", "{r:?}");
            assert_eq!(r["legacy_status"], 200, "{r:?}");
        } else {
            // A served request's calls are cancelled when its caller leaves.
            assert_eq!(r["outcome"], "skipped", "{r:?}");
            assert_eq!(
                r["reason"],
                "the caller went away before its answer was decided"
            );
        }
    }
    let m = metrics(&p).await;
    assert_eq!(metric(&m, "shadowdiff_caller_aborted_total"), 10.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "shadowdiff_requests_total{route=\"s\",outcome=\"match\"}"
        ),
        5.0
    );
}

// ------------------------------------------------------- 7. verified serving

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_serving_never_serves_another_accounts_data_in_canary() {
    // Legacy answers each account its own directory; the candidate was given acme's account
    // token for everyone (a shared credential by mistake) and answers acme's directory to all.
    let legacy = Upstream::start(|s| {
        let auth = s.headers.get("authorization").unwrap().to_str().unwrap();
        let who = if auth.contains("acme") {
            "acme"
        } else {
            "globex"
        };
        Reply::json(
            json!({"individuals": [{"id": format!("{who}-1"), "name": format!("{who} person")}]}),
        )
    })
    .await;
    let candidate = Upstream::start(|_| {
        Reply::json(json!({"individuals": [{"id": "acme-1", "name": "acme person"}]}))
    })
    .await;
    let (accounts, files) = accounts_files(&["acme", "globex"]);
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.files = files;
    cfg.rest = format!(
        "{accounts}{}pin_candidate = [\"acme\", \"globex\"]\n{}",
        phase("canary"),
        route("dir", "/employer/directory", "")
    );
    let p = start(cfg, None).await;
    let url = p.url("/employer/directory");
    for _ in 0..20 {
        let g = get_with(&url, "globex-token").await;
        assert_eq!(g.json()["individuals"][0]["id"], "globex-1");
        let a = get_with(&url, "acme-token").await;
        assert_eq!(a.json()["individuals"][0]["id"], "acme-1");
    }
    let rows = wait_exchanges(&p, 40, "account, served_by, fallback, outcome");
    for r in &rows {
        if r["account"] == "globex" {
            assert_eq!(r["served_by"], "legacy", "{r:?}");
            assert_eq!(r["fallback"], "unverified", "{r:?}");
            assert_eq!(r["outcome"], "diff", "{r:?}");
        } else {
            // Equal to legacy's answer: served, verified.
            assert_eq!(r["served_by"], "candidate", "{r:?}");
            assert_eq!(r["outcome"], "match", "{r:?}");
        }
    }
}

/// Verification judges a document; the caller gets exactly that document's bytes (a duplicate
/// member, which readers resolve differently, never reaches the caller as sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_bytes_are_the_verified_document() {
    let legacy = Upstream::start(|_| Reply::json(json!({"role": "admin"}))).await;
    let candidate =
        Upstream::start(|_| Reply::bytes(200, r#"{"role":"user","role":"admin"}"#)).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = format!("{}{}", phase("canary"), route("r", "/r", ""));
    let p = start(cfg, None).await;
    let got = get(&p.url("/r")).await;
    assert_eq!(got.body, Bytes::from_static(br#"{"role":"admin"}"#));
}

/// `canary` (verified) on route `r` (`/r`), every exchange kept, within a comparisons' budget of
/// `budget` (`max_body` 4 MiB) and a candidate timeout of 120 s (big documents in a debug build);
/// `routes`: more of them.
fn canary_within(legacy: &Upstream, candidate: &Upstream, budget: &str, routes: &str) -> Conf {
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.candidate_timeout = "120s".into();
    cfg.store = "exchanges = \"all\"\n".into();
    cfg.rest = format!(
        "[shadow]\nmax_body = \"4MiB\"\nmax_bytes_in_flight = \"{budget}\"\n{}{}{routes}",
        phase("canary"),
        route("r", "/r", "")
    );
    cfg
}

/// Verifying a served answer builds both documents on the caller's path: their memory comes from
/// the comparisons' budget as they grow, and an answer the budget cannot verify is legacy's
/// (before, a dense page was verified whatever it took: ~30 × each body). The fallback says
/// `memory`, not `unverified`: nothing was learned about the candidate (before, it said
/// `unverified`, the reason for an answer that differs from legacy's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_to_verify_within_the_budget_is_legacys() {
    let ones = vec!["1"; 1_500_000].join(",");
    let legacy_body = bytes::Bytes::from(format!("[{ones}]"));
    // The same document, written another way.
    let candidate_body = bytes::Bytes::from(format!("[ {ones} ]"));
    let l = legacy_body.clone();
    let legacy = Upstream::start(move |_| {
        Reply::bytes(200, l.clone()).header("content-type", "application/json")
    })
    .await;
    let candidate = Upstream::start(move |_| {
        Reply::bytes(200, candidate_body.clone()).header("content-type", "application/json")
    })
    .await;
    for (budget, served_by) in [("32MiB", "legacy"), ("1GiB", "candidate")] {
        let p = start(canary_within(&legacy, &candidate, budget, ""), None).await;
        let got = get(&p.url("/r")).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body, legacy_body,
            "{budget}: the caller got legacy's document"
        );
        // Two 3 MB documents compared by a debug build: on a loaded machine (a CI run beside
        // other tests) this took more than wait_rows's 20 s once.
        tokio::task::block_in_place(|| p.wait_rows_within(1, Duration::from_secs(120)));
        let rows = exchanges(&p, "served_by, fallback");
        assert_eq!(rows[0]["served_by"], served_by, "{budget}: {rows:?}");
        if served_by == "legacy" {
            assert_eq!(rows[0]["fallback"], "memory", "{rows:?}");
        }
    }
}

/// Under shadow load: an exchange whose candidate has not answered yet holds its legacy copy's
/// share of the budget, and a served answer whose verification then cannot decode legacy's
/// compressed body within what is left is legacy's, with `memory` (before: `unverified`, the
/// reason for an answer that differs from legacy's). With room, the same answer is compared and
/// found different (`unverified`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_the_shadow_load_leaves_no_memory_for_is_legacys_for_memory() {
    use std::io::Write;
    // 3.9 MB, under max_body: its copy is charged 8 x, nearly the whole 32 MiB budget.
    let held = Bytes::from(format!("[{}]", vec!["1"; 1_950_000].join(",")));
    // 1.5 MB once decoded, a few KB as sent.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("[{}]", vec!["1"; 750_000].join(",")).as_bytes())
        .unwrap();
    let compressed = Bytes::from(gz.finish().unwrap());
    let (h, c) = (held.clone(), compressed.clone());
    let legacy = Upstream::start(move |r| {
        if r.uri.starts_with("/hold") {
            Reply::bytes(200, h.clone()).header("content-type", "application/json")
        } else {
            Reply::bytes(200, c.clone())
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
        }
    })
    .await;
    let candidate = Upstream::start(|r| {
        if r.uri.starts_with("/hold") {
            // Not within the test: the exchange holds its share meanwhile.
            Reply::json(json!([])).delay(Duration::from_secs(60))
        } else {
            Reply::json(json!([]))
        }
    })
    .await;
    for (budget, fallback) in [("32MiB", "memory"), ("1GiB", "unverified")] {
        let hold = "[[routes]]\nname = \"hold\"\npath = \"/hold\"\n";
        let p = start(canary_within(&legacy, &candidate, budget, hold), None).await;
        // Shadow only (the route serves nobody): answered whole, its copy then charged while the
        // candidate keeps the exchange open.
        let got = get(&p.url("/hold")).await;
        assert_eq!(got.body, held);
        let got = get(&p.url("/r")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, compressed, "{budget}: legacy's bytes as sent");
        let row = tokio::task::block_in_place(|| {
            poll(Duration::from_secs(120), || {
                exchanges(&p, "path, served_by, fallback")
                    .into_iter()
                    .find(|r| r["path"] == "/r")
            })
        })
        .unwrap_or_else(|| panic!("{budget}: no row for /r"));
        assert_eq!(row["served_by"], "legacy", "{budget}: {row:?}");
        assert_eq!(row["fallback"], fallback, "{budget}: {row:?}");
    }
}
