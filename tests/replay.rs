//! `shadowdiff replay` (#32) through the real binary: traffic recorded against a candidate with
//! a bug, the candidate fixed, then the recorded requests replayed: the fixed field goes to 0
//! and nothing else changes; a write is never replayed; a saved set runs as a regression suite
//! with an exit code; a candidate 429 pauses the replay as it pauses live traffic.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::process::*;
use support::*;

/// What the candidate does: 0 its bug (`status` upper-cased), 1 fixed, 2 fixed but its
/// company answer broken, 3 every answer a 429.
const BUGGY: usize = 0;
const FIXED: usize = 1;
const COMPANY_BROKEN: usize = 2;
const RATE_LIMITED: usize = 3;

fn run(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["--config", "sd.toml"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        format!("{stdout}{stderr}"),
    )
}

fn route<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["summary"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {out}"))
}

/// (field, kind) → (recorded, now) of a route.
fn fields(out: &Value, name: &str) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = route(out, name)["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                format!(
                    "{} {}",
                    f["field"].as_str().unwrap(),
                    f["kind"].as_str().unwrap()
                ),
                f["recorded"].as_u64().unwrap(),
                f["now"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_candidate_is_checked_on_recorded_traffic() {
    let legacy = Upstream::start(|s| {
        if s.uri == "/company" {
            return Reply::json(json!({"id": "co-1", "name": "Acme"}));
        }
        if s.method == "POST" {
            return Reply::json(json!({"created": true}));
        }
        let id: u64 = s
            .uri
            .trim_start_matches("/people/")
            .split('?')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Reply::json(json!({"id": id, "status": "active", "start_date": "2015-01-01"}))
    })
    .await;
    let mode = Arc::new(AtomicUsize::new(BUGGY));
    let m = mode.clone();
    let candidate = Upstream::start(move |s| {
        let mode = m.load(Ordering::SeqCst);
        if mode == RATE_LIMITED {
            return Reply::json(json!({"error": "slow down"}))
                .status(429)
                .header("retry-after", "60");
        }
        if s.uri == "/company" {
            let name = if mode == COMPANY_BROKEN {
                "ACME INC"
            } else {
                "Acme"
            };
            return Reply::json(json!({"id": "co-1", "name": name}));
        }
        if s.method == "POST" {
            return Reply::json(json!({"created": true}));
        }
        let id: u64 = s
            .uri
            .trim_start_matches("/people/")
            .split('?')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let status = if mode == BUGGY { "ACTIVE" } else { "active" };
        // The start date stays wrong: only the status is fixed.
        Reply::json(json!({"id": id, "status": status, "start_date": "2015-01-01T00:00:00Z"}))
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.store = "bodies = \"sampled\"\nbody_sample = 1.0\nmatch_sample = 1.0\n".into();
    cfg.rest = "[shadow]\nmax_in_flight = 1\n\
                [[routes]]\nname = \"people\"\nmethod = \"GET\"\npath = \"/people/{id}\"\n\
                [[routes]]\nname = \"company\"\nmethod = \"GET\"\npath = \"/company\"\n\
                [[routes]]\nname = \"create\"\nmethod = \"POST\"\npath = \"/people\"\nmirror = true\n"
        .into();
    let p = start(cfg, None).await;
    // One at a time (`max_in_flight = 1`): each exchange recorded before the next request.
    for i in 1..=6 {
        assert_eq!(
            get(&p.url(&format!("/people/{i}?expand=manager")))
                .await
                .status,
            200
        );
        tokio::task::block_in_place(|| p.wait_rows(i));
    }
    assert_eq!(get(&p.url("/company")).await.status, 200);
    tokio::task::block_in_place(|| p.wait_rows(7));
    for n in 8..=9 {
        let req = Request::post(p.url("/people"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(r#"{"name": "Ada"}"#)))
            .unwrap();
        assert_eq!(send(req).await.status, 200);
        tokio::task::block_in_place(|| p.wait_rows(n));
    }
    let dir = p.dir.path().to_owned();
    let kept = query(
        &p.db(),
        "SELECT count(*) FROM bodies WHERE side = 'request'",
    );
    assert_eq!(
        kept[0][0],
        7,
        "every read kept its request (a write never does): {:?}",
        query(&p.db(), "SELECT e.id, e.route, e.outcome, b.side FROM exchanges e LEFT JOIN bodies b ON b.exchange_id = e.id ORDER BY e.id")
    );

    // The candidate is fixed; the recorded requests go to it again.
    mode.store(FIXED, Ordering::SeqCst);
    let before = candidate.seen().len();
    let (code, out, text) =
        tokio::task::block_in_place(|| run(&dir, &["replay", "--since", "1h", "--format", "json"]));
    assert_eq!(code, 0, "{text}");
    let seen: Vec<_> = candidate.seen()[before..].to_vec();
    // Six reads and the company, as the proxy sends them (the query kept); never the writes.
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:?}");
    assert!(
        seen.iter().any(|s| s.uri == "/people/3?expand=manager"),
        "{seen:?}"
    );
    assert_eq!(out["sent"], 7, "{text}");
    assert_eq!(out["summary"]["skipped"]["no_request"], 2, "{text}");
    // The fixed field goes to 0; the start date is as it was.
    assert_eq!(
        fields(&out, "people"),
        vec![
            ("/start_date changed".to_owned(), 6, 6),
            ("/status changed".to_owned(), 6, 0),
        ],
        "{text}"
    );
    assert_eq!(route(&out, "people")["changed_count"], 6);
    assert_eq!(route(&out, "people")["broken_count"], 0);
    assert_eq!(route(&out, "company")["matched"], 1);

    // A suite: one exchange per difference pattern and one that matched, per route.
    let (code, out, text) = tokio::task::block_in_place(|| {
        run(
            &dir,
            &[
                "replay",
                "--since",
                "1h",
                "--pick",
                "per-pattern",
                "--save",
                "suite",
                "--format",
                "json",
            ],
        )
    });
    assert_eq!(code, 0, "{text}");
    assert_eq!(out["saved"], "suite");
    let members = query(
        &p.db(),
        "SELECT count(*) FROM replay_sets WHERE name = 'suite'",
    );
    // people: the first exchange has both patterns; company: its match (the writes kept no
    // request: never chosen).
    assert_eq!(members[0][0], 2, "{text}");
    // The suite from CI: passes while nothing that matched is broken, fails when one is, and
    // records its result beside the rediffs.
    let (code, _, text) = tokio::task::block_in_place(|| run(&dir, &["replay", "--set", "suite"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replay to http://127.0.0.1:"), "{text}");
    mode.store(COMPANY_BROKEN, Ordering::SeqCst);
    let (code, out, text) = tokio::task::block_in_place(|| {
        run(
            &dir,
            &["replay", "--set", "suite", "--record", "--format", "json"],
        )
    });
    assert_eq!(code, 1, "{text}");
    assert_eq!(route(&out, "company")["broken_count"], 1, "{text}");
    let (_, report, text) =
        tokio::task::block_in_place(|| run(&dir, &["report", "--since", "1h", "--format", "json"]));
    let rediffs = report["rediffs"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        rediffs.iter().any(|r| r["source"]
            .as_str()
            .unwrap()
            .starts_with("replay to http://127.0.0.1:")),
        "{text}"
    );
    assert!(
        tokio::task::block_in_place(|| { run(&dir, &["replay", "--set", "nope"]) })
            .2
            .contains("no replay set named \"nope\"")
    );

    // The candidate's quota: its 429 pauses the replay as it pauses live traffic (one call
    // at a time here: `max_in_flight = 1`); the rest is skipped, never sent.
    mode.store(RATE_LIMITED, Ordering::SeqCst);
    let before = candidate.seen().len();
    let (_, out, text) =
        tokio::task::block_in_place(|| run(&dir, &["replay", "--since", "1h", "--format", "json"]));
    assert_eq!(candidate.seen().len() - before, 1, "{text}");
    assert_eq!(out["sent"], 1, "{text}");
    // The 429 itself is no answer to judge either: 7 rate_limited, of which 1 was sent.
    assert_eq!(out["summary"]["skipped"]["rate_limited"], 7, "{text}");

    // A store edited by hand: a request aimed at another host, one climbing above its root and
    // a write on a read route are never sent; legacy is never called by a replay.
    mode.store(FIXED, Ordering::SeqCst);
    let legacy_calls = legacy.seen().len();
    let db = p.db();
    let set = |id: i64, head: &str| {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute(
            "UPDATE bodies SET headers = ?1 WHERE exchange_id = ?2 AND side = 'request'",
            rusqlite::params![head, id],
        )
        .unwrap();
    };
    let elsewhere = format!(
        r#"{{"method": "GET", "target": "{}/people/1"}}"#,
        legacy.url()
    );
    set(1, &elsewhere);
    set(
        2,
        r#"{"method": "GET", "target": "//127.0.0.1:1/people/2"}"#,
    );
    set(3, r#"{"method": "GET", "target": "/people/../../admin"}"#);
    set(4, r#"{"method": "DELETE", "target": "/people/4"}"#);
    // Routed elsewhere now: not the exchange that was recorded.
    set(5, r#"{"method": "GET", "target": "/company"}"#);
    let before = candidate.seen().len();
    let (_, out, text) =
        tokio::task::block_in_place(|| run(&dir, &["replay", "--since", "1h", "--format", "json"]));
    let skipped = &out["summary"]["skipped"];
    assert_eq!(skipped["bad_request"], 2, "{text}");
    assert_eq!(skipped["unsafe_path"], 1, "{text}");
    assert_eq!(skipped["not_mirrored"], 1, "{text}");
    assert_eq!(skipped["no_request"], 2, "{text}");
    assert_eq!(skipped["route_changed"], 1, "{text}");
    let seen: Vec<String> = candidate.seen()[before..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.starts_with("GET /people/") || s == "GET /company"),
        "{seen:?}"
    );
    assert_eq!(legacy.seen().len(), legacy_calls, "a replay called legacy");
}

/// A request whose query held a secret is kept masked (the secret never reaches the store) and
/// never replayed with the mask; on PostgreSQL, a saved set is kept and replayed as on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_and_sets_work_on_postgresql() {
    let legacy = Upstream::json(json!({"id": 1, "status": "active"})).await;
    let candidate = Upstream::json(json!({"id": 1, "status": "ACTIVE"})).await;
    let url = tokio::task::block_in_place(support::pg::database);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [legacy]\nbase_url = \"{}\"\n[candidate]\nbase_url = \"{}\"\n\
             [store]\nurl = \"{url}\"\nbodies = \"always\"\nbody_sample = 1.0\n\
             [[routes]]\nname = \"people\"\npath = \"/people/{{id}}\"\n\
             [[routes]]\nname = \"search\"\nmethod = \"POST\"\npath = \"/search\"\nread = true\n",
            legacy.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let p = tokio::task::spawn_blocking(move || Proc::start_in(dir, "sd.toml", &[], None))
        .await
        .unwrap();
    assert_eq!(
        get(&p.url("/people/1?api_key=s3cret-value&x=1"))
            .await
            .status,
        200
    );
    assert_eq!(get(&p.url("/people/2?x=1")).await.status, 200);
    // A read's body with a credential in it: kept redacted, never replayed.
    let req = Request::post(p.url("/search"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"q": "ada", "auth": {"password": "HUNTER2"}}"#,
        )))
        .unwrap();
    assert_eq!(send(req).await.status, 200);
    let pg = |sql: &str| -> Vec<String> {
        tokio::task::block_in_place(|| {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()
        })
    };
    let kept = poll(std::time::Duration::from_secs(20), || {
        let v = pg(
            "SELECT headers FROM bodies WHERE side = 'request' ORDER BY started_at, exchange_id",
        );
        (v.len() == 3).then_some(v)
    })
    .expect("the three requests kept");
    assert!(kept[0].contains("api_key=***&x=1"), "{kept:?}");
    let everything = pg(
        "SELECT string_agg(coalesce(headers, '') || coalesce(body, ''), ' ') FROM exchange_bodies",
    );
    assert!(!everything[0].contains("s3cret-value"), "{everything:?}");
    assert!(!everything[0].contains("HUNTER2"), "{everything:?}");
    let dir = p.dir.path().to_owned();
    let before = candidate.seen().len();
    let (code, out, text) = tokio::task::block_in_place(|| {
        run(
            &dir,
            &["replay", "--since", "1h", "--save", "s", "--format", "json"],
        )
    });
    assert_eq!(code, 0, "{text}");
    assert_eq!(out["summary"]["skipped"]["secret_in_query"], 1, "{text}");
    assert_eq!(out["summary"]["skipped"]["request_redacted"], 1, "{text}");
    assert_eq!(out["sent"], 1, "{text}");
    let seen = candidate.seen();
    assert_eq!(seen.len() - before, 1);
    // As a live request is sent: `x` is not in `[candidate] forward_query`.
    let live = candidate.seen()[..before]
        .iter()
        .find(|s| s.uri.starts_with("/people/2"))
        .unwrap()
        .uri
        .clone();
    assert_eq!(seen.last().unwrap().uri, live);
    // The set, kept and replayed on PostgreSQL.
    assert_eq!(
        pg("SELECT count(*)::text FROM replay_sets WHERE name = 's'"),
        vec!["3"]
    );
    let (code, out, text) =
        tokio::task::block_in_place(|| run(&dir, &["replay", "--set", "s", "--format", "json"]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(out["sent"], 1, "{text}");
    assert_eq!(route(&out, "people")["exchanges"], 1, "{text}");
}

/// `replay --db X` reads, and opens for its writer's handle, the store at X only: the config's
/// own store is neither created nor pruned (it was, before: opened by the replay's shadow).
#[test]
fn replay_from_another_store_leaves_the_configs_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n\
         [candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
         [store]\npath = \"own.db\"\n",
    )
    .unwrap();
    let (code, _, out) = run(dir.path(), &["migrate", "--db", "other.db"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, out) = run(
        dir.path(),
        &[
            "replay", "--db", "other.db", "--since", "1h", "--format", "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !dir.path().join("own.db").exists(),
        "the config's store was opened: {out}"
    );
}
