//! Triage (#32): difference patterns marked by people — `accepted` with a reason, a ticket and
//! an expiry, `vendor_bug`, `fix_in_progress` — stored with who and when and an audit trail,
//! shown by reports, the API and the dashboard, and honoured by a gate as configured; on
//! SQLite and on PostgreSQL, where two operators marking at once leave one mark and two lines
//! of the trail. Everything through the real binary.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::process::*;
use support::*;

const TOKEN: &str = "t0k-triage";

/// Runs the binary in `dir` with its config: (exit code, stdout, stderr).
fn run(dir: &Path, config: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["--config", config])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The vendors: every answer differs at `/status` (case); every second one also lacks `/name`
/// on the candidate's side.
async fn vendors() -> (Upstream, Upstream) {
    let legacy = Upstream::json(json!({"id": 1, "name": "Ada", "status": "active"})).await;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let candidate = Upstream::start(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i.is_multiple_of(2) {
            Reply::json(json!({"id": 1, "name": "Ada", "status": "ACTIVE"}))
        } else {
            Reply::json(json!({"id": 1, "status": "ACTIVE"}))
        }
    })
    .await;
    (legacy, candidate)
}

const GATES: &str = "[gate.shadow]\nmin_parity = 0.4\nconfidence = 0\n\
                     [gate.canary]\nmin_parity = 0.4\nconfidence = 0\naccepted = \"exclude\"\n\
                     [[routes]]\nname = \"p\"\npath = \"/p\"\n";

/// The gate's verdict (exit code, the min_parity check) over the last hour.
fn gate(dir: &Path, config: &str, phase: &str, db: Option<&str>) -> (i32, Value) {
    let mut args = vec![
        "gate", "--phase", phase, "--since", "1h", "--format", "json",
    ];
    if let Some(db) = db {
        args.extend(["--db", db]);
    }
    let (code, out, err) = run(dir, config, &args);
    assert!(code == 0 || code == 1, "{err}");
    let v = json_of(&out);
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == "min_parity" && c["scope"] == "all")
        .unwrap_or_else(|| panic!("no min_parity in {v}"))
        .clone();
    (code, check)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_are_kept_shown_audited_and_honoured_by_the_gate() {
    let (legacy, candidate) = vendors().await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.admin = format!("token = \"{TOKEN}\"\n");
    cfg.store = "body_sample = 1.0\n".into();
    cfg.rest = GATES.into();
    let p = start(cfg, None).await;
    for _ in 0..10 {
        assert_eq!(get(&p.url("/p")).await.status, 200);
    }
    tokio::task::block_in_place(|| p.wait_rows(10));
    let dir = p.dir.path();
    let cli = |args: &[&str]| run(dir, "sd.toml", args);

    // Refused, with the reason: no reason for `accepted`, an expiry in the past, a field that
    // is no pattern, an unknown kind or status, a control character.
    for (bad, says) in [
        (
            vec!["--field", "/status", "--status", "accepted"],
            "reason is needed",
        ),
        (
            vec![
                "--field",
                "/status",
                "--status",
                "accepted",
                "--reason",
                "x",
                "--expires",
                "2020-01-01",
            ],
            "not after now",
        ),
        (
            vec!["--field", "status", "--status", "vendor_bug"],
            "field pattern",
        ),
        (
            vec![
                "--field",
                "/status",
                "--status",
                "vendor_bug",
                "--kind",
                "nope",
            ],
            "kind \"nope\"",
        ),
        (
            vec!["--field", "/status", "--status", "fine"],
            "status \"fine\"",
        ),
        (
            vec![
                "--field",
                "/status",
                "--status",
                "vendor_bug",
                "--reason",
                "a\u{1b}[2J",
            ],
            "no control",
        ),
    ] {
        let mut args = vec!["triage", "mark", "--route", "p"];
        args.extend(bad);
        let (code, _, err) = cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // Before any mark: 0 of 10 match; both gates fail.
    assert_eq!(gate(dir, "sd.toml", "canary", None).0, 1);

    let (code, out, err) = cli(&[
        "triage",
        "mark",
        "--route",
        "p",
        "--field",
        "/status",
        "--kind",
        "changed",
        "--status",
        "accepted",
        "--reason",
        "the vendor upper-cases statuses",
        "--ticket",
        "MIG-12",
        "--expires",
        "30d",
        "--by",
        "ana",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("marked p /status changed: accepted until"),
        "{out}"
    );
    let (code, _, err) = cli(&[
        "triage",
        "mark",
        "--route",
        "p",
        "--field",
        "/name",
        "--status",
        "vendor_bug",
        "--ticket",
        "MERGE-7",
        "--by",
        "bo",
    ]);
    assert_eq!(code, 0, "{err}");

    // The report: each field with its mark, every mark, and the exchanges that differ only at
    // accepted patterns (5: those where only /status differs), parity itself unchanged.
    let (code, out, err) = cli(&["report", "--since", "1h", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let report = json_of(&out);
    assert_eq!(report["totals"]["accepted_only"], 5, "{out}");
    assert_eq!(report["totals"]["parity"], 0.0, "{out}");
    let fields = report["routes"][0]["fields"].as_array().unwrap();
    let field = |f: &str| fields.iter().find(|x| x["field"] == f).unwrap().clone();
    assert_eq!(field("/status")["triage"]["status"], "accepted");
    assert_eq!(field("/status")["triage"]["ticket"], "MIG-12");
    assert_eq!(field("/status")["triage"]["by"], "ana");
    assert_eq!(field("/name")["triage"]["status"], "vendor_bug");
    assert_eq!(report["triage"].as_array().unwrap().len(), 2);
    let (_, md, _) = cli(&["report", "--since", "1h", "--format", "md"]);
    assert!(
        md.contains("triage: accepted: the vendor upper-cases statuses \\[MIG-12\\] by ana"),
        "{md}"
    );
    assert!(md.contains("**Triage** (2 marks)"), "{md}");

    // The gates: `count` fails and says how many it counted as differing; `exclude` passes at
    // 5 of 10 and names the pattern.
    let (code, check) = gate(dir, "sd.toml", "shadow", None);
    assert_eq!(code, 1, "{check}");
    let note = check["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("5 exchanges differ only at accepted patterns"),
        "{check}"
    );
    let (code, check) = gate(dir, "sd.toml", "canary", None);
    assert_eq!(code, 0, "{check}");
    assert_eq!(check["measured"], 0.5, "{check}");
    let note = check["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("accepted = \"exclude\"") && note.contains("p /status changed (until"),
        "{check}"
    );

    // The API: reads with the token; a change needs it; a bad change is a 400 that says why.
    let api = p.admin_url("/api/triage");
    let bearer = format!("Bearer {TOKEN}");
    let got = get_with_header(&api, "authorization", &bearer).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["marks"].as_array().unwrap().len(), 2);
    let post = |body: Value, auth: bool| {
        let mut b = Request::post(&api).header("content-type", "application/json");
        if auth {
            b = b.header("authorization", &bearer);
        }
        send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
    };
    let fix = json!({"action": "mark", "route": "p", "field": "/id", "status": "fix_in_progress",
                     "reason": "mapping PR 41", "by": "ci-bot"});
    assert_eq!(post(fix.clone(), false).await.status, 401);
    let bad = post(
        json!({"action": "mark", "route": "p", "field": "/id", "status": "accepted", "by": "x"}),
        true,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("reason is needed"), "{}", bad.text());
    let unknown = post(
        json!({"action": "mark", "route": "p", "field": "/id", "by": "x", "evil": 1}),
        true,
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(post(fix, true).await.status, 200);

    // Cleared (and re-marked with a short expiry): the audit trail keeps every change, newest
    // first, with who.
    let (code, _, err) = cli(&[
        "triage",
        "clear",
        "--route",
        "p",
        "--field",
        "/name",
        "--by",
        "bo",
        "--reason",
        "fixed by MERGE-7",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&[
        "triage",
        "mark",
        "--route",
        "p",
        "--field",
        "/status",
        "--kind",
        "changed",
        "--status",
        "accepted",
        "--reason",
        "until the vendor's fix ships",
        "--expires",
        "2s",
        "--by",
        "ana",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&["triage", "list", "--format", "json"]);
    let listed = json_of(&out);
    let marks = listed["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 2, "{out}");
    assert!(marks.iter().all(|m| m["field"] != "/name"), "{out}");
    let log = listed["log"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["field"].as_str().unwrap(),
                l["by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("mark", "/status", "ana"),
            ("clear", "/name", "bo"),
            ("mark", "/id", "ci-bot"),
            ("mark", "/name", "bo"),
            ("mark", "/status", "ana"),
        ],
        "{out}"
    );

    // The dashboard shows the marks: on the route's fields, and the field's page has the mark
    // and its trail.
    let admin = p.admin_url("");
    let (dom, _) = tokio::task::spawn_blocking(move || {
        chromium(
            &format!("{admin}/route/p/field?field=%2Fstatus&since=1h&token={TOKEN}"),
            "triage-field",
            "1300,1100",
            500,
        )
    })
    .await
    .unwrap();
    assert!(
        dom.contains("id=\"triage\"") && dom.contains("until the vendor"),
        "{dom}"
    );
    assert!(dom.contains("id=\"triage-log\""), "{dom}");
    assert!(
        dom.contains("the vendor upper-cases statuses"),
        "the trail keeps the first mark"
    );
    let admin = p.admin_url("");
    let (dom, _) = tokio::task::spawn_blocking(move || {
        chromium(
            &format!("{admin}/route/p?since=1h&token={TOKEN}"),
            "triage-route",
            "1300,1100",
            500,
        )
    })
    .await
    .unwrap();
    assert!(dom.contains("triage: accepted: until the vendor"), "{dom}");

    // The 2 s mark expires: the excluding gate fails again (polled), and the mark says so.
    let expired = poll(Duration::from_secs(20), || {
        (gate(dir, "sd.toml", "canary", None).0 == 1).then_some(())
    });
    assert!(
        expired.is_some(),
        "the expired mark still excluded its pattern"
    );
    let (_, out, _) = cli(&["triage", "list", "--format", "json"]);
    let listed = json_of(&out);
    let status = listed["marks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["field"] == "/status")
        .unwrap()
        .clone();
    assert_eq!(status["expired"], true, "{out}");

    // A mark for the kind wins over the mark for every kind, in the gate as in the report:
    // the expired `changed` mark still holds the every-kind `accepted` one back; a
    // `vendor_bug` for the kind too; cleared, the every-kind mark excludes.
    let (code, _, err) = cli(&[
        "triage",
        "mark",
        "--route",
        "p",
        "--field",
        "/status",
        "--status",
        "accepted",
        "--reason",
        "any kind",
        "--expires",
        "30d",
        "--by",
        "ana",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        gate(dir, "sd.toml", "canary", None).0,
        1,
        "the expired kind mark wins"
    );
    let (code, _, err) = cli(&[
        "triage",
        "mark",
        "--route",
        "p",
        "--field",
        "/status",
        "--kind",
        "changed",
        "--status",
        "vendor_bug",
        "--reason",
        "the candidate is wrong",
        "--by",
        "bo",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, check) = gate(dir, "sd.toml", "canary", None);
    assert_eq!(
        code, 1,
        "a vendor_bug for the kind counted as accepted: {check}"
    );
    let (_, out, _) = cli(&["report", "--since", "1h", "--format", "json"]);
    assert!(
        json_of(&out)["totals"].get("accepted_only").is_none(),
        "{out}"
    );
    let (code, _, err) = cli(&[
        "triage", "clear", "--route", "p", "--field", "/status", "--kind", "changed", "--by", "bo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(gate(dir, "sd.toml", "canary", None).0, 0);
}

/// On PostgreSQL: the same gate over a fleet's store, and two operators marking one pattern at
/// the same moment leave one mark and two lines of the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_on_postgresql_are_fleet_safe() {
    let (legacy, candidate) = vendors().await;
    let url = tokio::task::block_in_place(support::pg::database);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [legacy]\nbase_url = \"{}\"\n[candidate]\nbase_url = \"{}\"\n\
             [store]\nurl = \"{url}\"\n{GATES}",
            legacy.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let p = tokio::task::spawn_blocking(move || Proc::start_in(dir, "sd.toml", &[], None))
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(get(&p.url("/p")).await.status, 200);
    }
    let pg = |sql: &str| -> i64 {
        tokio::task::block_in_place(|| {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.query_one(sql, &[]).unwrap().get(0)
        })
    };
    let stored = poll(Duration::from_secs(20), || {
        (pg("SELECT count(*) FROM exchanges") == 10).then_some(())
    });
    assert!(stored.is_some());
    let dir = p.dir.path().to_owned();
    // Two operators at once.
    let mark = |by: &'static str| {
        let dir = dir.clone();
        std::thread::spawn(move || {
            run(
                &dir,
                "sd.toml",
                &[
                    "triage",
                    "mark",
                    "--route",
                    "p",
                    "--field",
                    "/status",
                    "--status",
                    "accepted",
                    "--reason",
                    "case only",
                    "--expires",
                    "30d",
                    "--by",
                    by,
                ],
            )
        })
    };
    let (a, b) = (mark("ana"), mark("bo"));
    for h in [a, b] {
        let (code, _, err) = h.join().unwrap();
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(pg("SELECT count(*) FROM triage"), 1);
    assert_eq!(pg("SELECT count(*) FROM triage_log"), 2);
    let (_, out, _) = run(&dir, "sd.toml", &["triage", "list", "--format", "json"]);
    let listed = json_of(&out);
    assert_eq!(listed["marks"][0]["status"], "accepted", "{out}");
    assert!(
        listed["marks"][0]["expires"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{out}"
    );
    // The gate over PostgreSQL: the accepted-only exchanges counted as matching.
    let (code, check) = gate(&dir, "sd.toml", "canary", None);
    assert_eq!(code, 0, "{check}");
    assert_eq!(check["measured"], 0.5, "{check}");
    let (code, _) = gate(&dir, "sd.toml", "shadow", None);
    assert_eq!(code, 1);
}
