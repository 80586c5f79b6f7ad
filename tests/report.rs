//! Reports and the gate over a store with known exchanges.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

const NOW: &str = "2025-11-28T12:00:00.000Z";

fn t(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

/// A store: route "directory" (7 match, 2 diff, 1 candidate_error), route "individual"
/// (2 match, 1 candidate_auth_error for account beta, 1 skipped), one unrouted match (15 in the
/// window), and one old exchange outside every window used here.
fn fixture(dir: &Path) -> PathBuf {
    let db = dir.join("r.db");
    let conn = shadowdiff::store::open(&db).unwrap();
    let mut id = 0;
    let mut ex = |at: &str,
                  route: Option<&str>,
                  account: Option<&str>,
                  outcome: &str,
                  l: f64,
                  c: Option<f64>| {
        id += 1;
        conn.execute(
            "INSERT INTO exchanges(id, started_at, route, method, path, account, legacy_status, candidate_status,
             legacy_ms, candidate_ms, outcome, diff_count) VALUES (?1, ?2, ?3, 'GET', '/p', ?4, 200, 200, ?5, ?6, ?7, 0)",
            rusqlite::params![id, at, route, account, l, c, outcome],
        )
        .unwrap();
        id
    };
    for i in 0..7 {
        ex(
            "2025-11-28T10:00:00.000Z",
            Some("directory"),
            Some("acme"),
            "match",
            10.0 + i as f64,
            Some(20.0 + i as f64),
        );
    }
    let a = ex(
        "2025-11-27T10:00:00.000Z",
        Some("directory"),
        Some("acme"),
        "diff",
        30.0,
        Some(60.0),
    );
    let b = ex(
        "2025-11-28T11:00:00.000Z",
        Some("directory"),
        Some("acme"),
        "diff",
        40.0,
        Some(80.0),
    );
    ex(
        "2025-11-28T11:00:00.000Z",
        Some("directory"),
        Some("acme"),
        "candidate_error",
        5.0,
        Some(1.0),
    );
    ex(
        "2025-11-28T11:00:00.000Z",
        Some("individual"),
        Some("acme"),
        "match",
        2.0,
        Some(3.0),
    );
    ex(
        "2025-11-28T11:00:00.000Z",
        Some("individual"),
        None,
        "match",
        2.0,
        Some(3.0),
    );
    ex(
        "2025-11-28T11:00:00.000Z",
        Some("individual"),
        Some("beta"),
        "candidate_auth_error",
        2.0,
        Some(1.0),
    );
    ex(
        "2025-11-28T11:00:00.000Z",
        Some("individual"),
        Some("beta"),
        "skipped",
        2.0,
        None,
    );
    // Beta's credentials: the state the writer keeps after 401s in a row.
    conn.execute(
        "INSERT INTO account_health(account, state, since, consecutive, last_error, updated_at)
         VALUES ('beta', 'needs_reauth', '2025-11-28T11:00:00.000Z', 3, 'candidate answered 401', '2025-11-28T11:00:00.000Z')",
        [],
    )
    .unwrap();
    ex(
        "2025-11-28T11:30:00.000Z",
        None,
        None,
        "match",
        1.0,
        Some(1.0),
    );
    ex(
        "2025-10-01T00:00:00.000Z",
        Some("directory"),
        Some("acme"),
        "diff",
        1.0,
        Some(1.0),
    );
    let d = |e: i64, seq: i64, ptr: &str, field: &str, kind: &str, l: &str, c: Option<&str>| {
        conn.execute(
            "INSERT INTO diffs(exchange_id, seq, pointer, field, kind, legacy, candidate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![e, seq, ptr, field, kind, l, c],
        )
        .unwrap();
        // What the store's writer keeps beside the rows: counts per (exchange, field, kind).
        conn.execute(
            "INSERT INTO diff_fields(exchange_id, started_at, route, field, kind, n)
             SELECT id, started_at, route, ?2, ?3, 1 FROM exchanges WHERE id = ?1
             ON CONFLICT(exchange_id, field, kind) DO UPDATE SET n = n + 1",
            rusqlite::params![e, field, kind],
        )
        .unwrap();
    };
    d(
        a,
        0,
        "/individuals/0/status",
        "/individuals/*/status",
        "changed",
        "\"active\"",
        Some("\"on_leave\""),
    );
    d(
        a,
        1,
        "/individuals/3/status",
        "/individuals/*/status",
        "changed",
        "\"active\"",
        Some("\"on_leave\""),
    );
    d(
        b,
        0,
        "/individuals/1/name",
        "/individuals/*/name",
        "missing",
        "\"Ann\"",
        None,
    );
    d(
        b,
        1,
        "/individuals/1/status",
        "/individuals/*/status",
        "changed",
        "\"active\"",
        Some("\"terminated\""),
    );
    db
}

fn filter() -> shadowdiff::report::Filter {
    shadowdiff::report::Filter {
        from: t(NOW) - Duration::from_secs(7 * 86400),
        to: t(NOW),
        route: None,
        account: None,
        mapping_version: None,
    }
}

fn report_json(db: &Path) -> Value {
    let conn = shadowdiff::store::open(db).unwrap();
    let r = shadowdiff::report::build(&conn, &filter()).unwrap();
    serde_json::from_str(&shadowdiff::report::render::json(&r)).unwrap()
}

#[test]
fn every_number_of_the_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let r = report_json(&fixture(dir.path()));
    assert_eq!(
        r["window"],
        json!({"from": "2025-11-21T12:00:00.000Z", "to": NOW})
    );
    let t = &r["totals"];
    assert_eq!(t["exchanges"], 15);
    assert_eq!(t["compared"], 12);
    assert_eq!(t["matched"], 10);
    assert!((t["parity"].as_f64().unwrap() - 10.0 / 12.0).abs() < 1e-12);
    assert_eq!(
        t["outcomes"],
        json!({"match": 10, "diff": 2, "candidate_error": 1, "candidate_auth_error": 1, "skipped": 1})
    );

    let routes = r["routes"].as_array().unwrap();
    let names: Vec<&str> = routes
        .iter()
        .map(|x| x["route"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["directory", "individual", "(unmatched)"]);
    let dir_r = &routes[0];
    assert_eq!(
        (
            dir_r["exchanges"].as_u64(),
            dir_r["compared"].as_u64(),
            dir_r["matched"].as_u64()
        ),
        (Some(10), Some(9), Some(7))
    );
    assert!((dir_r["parity"].as_f64().unwrap() - 7.0 / 9.0).abs() < 1e-12);
    // Nearest-rank percentiles: legacy 5,10..16,30,40 → p50 = 13th... (10 values: rank 5 → 13), p99 → 40.
    assert_eq!(
        dir_r["latency_ms"],
        json!({"legacy_p50": 13.0, "legacy_p99": 40.0, "candidate_p50": 23.0, "candidate_p99": 80.0})
    );
    let fields = dir_r["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[0]["field"], "/individuals/*/status");
    assert_eq!(fields[0]["kind"], "changed");
    assert_eq!(fields[0]["count"], 3);
    assert_eq!(fields[0]["exchanges"], 2);
    assert!((fields[0]["rate"].as_f64().unwrap() - 2.0 / 9.0).abs() < 1e-12);
    assert_eq!(fields[0]["example"]["legacy"], "active");
    assert_eq!(fields[0]["example"]["candidate"], "on_leave");
    assert_eq!(fields[1]["field"], "/individuals/*/name");
    assert_eq!(fields[1]["kind"], "missing");
    assert_eq!(
        (fields[1]["count"].as_u64(), fields[1]["exchanges"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(fields[1]["example"]["candidate"], Value::Null);
    assert_eq!(
        dir_r["trend"],
        json!([
            {"day": "2025-11-27", "compared": 1, "matched": 0, "parity": 0.0},
            {"day": "2025-11-28", "compared": 8, "matched": 7, "parity": 0.875}
        ])
    );

    let ind = &routes[1];
    assert_eq!(
        ind["outcomes"],
        json!({"match": 2, "candidate_auth_error": 1, "skipped": 1})
    );
    assert_eq!(ind["parity"], 1.0);

    assert_eq!(r["needs_reauth"], json!(["beta"]));
    let accounts = r["accounts"].as_array().unwrap();
    let acme = accounts.iter().find(|a| a["account"] == "acme").unwrap();
    assert_eq!(
        (acme["exchanges"].as_u64(), acme["compared"].as_u64()),
        (Some(11), Some(10))
    );
    let beta = accounts.iter().find(|a| a["account"] == "beta").unwrap();
    assert_eq!(
        beta["outcomes"],
        json!({"candidate_auth_error": 1, "skipped": 1})
    );
}

#[test]
fn filters_by_route_and_account() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let conn = shadowdiff::store::open(&db).unwrap();
    let f = shadowdiff::report::Filter {
        route: Some("individual".into()),
        ..filter()
    };
    let r = shadowdiff::report::build(&conn, &f).unwrap();
    assert_eq!(r.totals.exchanges, 4);
    assert_eq!(r.routes.len(), 1);
    let f = shadowdiff::report::Filter {
        account: Some("beta".into()),
        mapping_version: None,
        ..filter()
    };
    let r = shadowdiff::report::build(&conn, &f).unwrap();
    assert_eq!(r.totals.exchanges, 2);
    assert_eq!(r.totals.compared, 0);
}

#[test]
fn markdown_and_html_show_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let conn = shadowdiff::store::open(&db).unwrap();
    let r = shadowdiff::report::build(&conn, &filter()).unwrap();
    let md = shadowdiff::report::render::markdown(&r);
    let html = shadowdiff::report::render::html(&r);
    for figure in [
        "83.33%",
        "77.78%",
        "/individuals/*/status",
        "22.22%",
        "beta",
    ] {
        assert!(md.contains(figure), "markdown lacks {figure}:\n{md}");
        assert!(html.contains(figure), "html lacks {figure}");
    }
    assert!(
        md.lines().count() < 40,
        "markdown too long for a chat message"
    );
    assert!(
        !html.contains("<script"),
        "the HTML report needs no JavaScript"
    );
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external resource"
    );
    assert!(html.contains("<svg"), "daily trend missing");
}

fn gate_config(dir: &Path, db: &Path) -> PathBuf {
    let cfg = dir.join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[store]
path = "{}"
[gate.shadow]
# The measured ratios themselves ([gate.bounded] below judges the same data on intervals).
confidence = 0
min_compared = 10
min_parity = 0.8
max_candidate_error_rate = 0.1
max_auth_error_accounts = 1
max_latency_ratio = 3.0
[gate.canary]
min_compared = 10
min_parity = 0.9
max_auth_error_accounts = 0
[gate.canary.routes.individual]
min_compared = 5
[gate.empty]
[gate.bounded]
min_compared = 10
min_parity = 0.8
max_candidate_error_rate = 0.1
[[routes]]
name = "individual"
path = "/employer/individual/{{id}}"
"#,
            db.display()
        ),
    )
    .unwrap();
    cfg
}

fn gate(cfg: &Path, phase: &str) -> (i32, Value) {
    let conn_cfg = shadowdiff::config::Config::load(cfg).unwrap();
    let g = conn_cfg.gates.get(phase).unwrap();
    let conn = shadowdiff::store::open(&conn_cfg.store.path).unwrap();
    let v = shadowdiff::gate::evaluate(&conn, phase, g, &filter()).unwrap();
    (
        if v.pass { 0 } else { 1 },
        serde_json::to_value(&v).unwrap(),
    )
}

fn check<'a>(v: &'a Value, criterion: &str, scope: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == criterion && c["scope"] == scope)
        .unwrap_or_else(|| panic!("no {criterion} for {scope} in {v}"))
}

#[test]
fn gate_criteria_pass_and_fail_with_their_measured_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let cfg = gate_config(dir.path(), &db);

    let (code, v) = gate(&cfg, "shadow");
    assert_eq!(code, 0, "{v:#}");
    // Overall is the routed exchanges: the unmatched one (a match) never counts in a gate.
    assert_eq!(check(&v, "min_compared", "all")["measured"], 11.0);
    assert!(
        (check(&v, "min_parity", "all")["measured"].as_f64().unwrap() - 9.0 / 11.0).abs() < 1e-12
    );
    // 1 candidate_error over 13 mirrored (14 routed minus 1 skipped).
    assert!(
        (check(&v, "max_candidate_error_rate", "all")["measured"]
            .as_f64()
            .unwrap()
            - 1.0 / 13.0)
            .abs()
            < 1e-12
    );
    assert_eq!(check(&v, "max_auth_error_accounts", "all")["measured"], 1.0);
    // Overall p99: legacy 40 ms, candidate 80 ms.
    assert_eq!(check(&v, "max_latency_ratio", "all")["measured"], 2.0);

    let (code, v) = gate(&cfg, "canary");
    assert_eq!(code, 1);
    assert_eq!(check(&v, "min_parity", "all")["pass"], false);
    assert_eq!(check(&v, "max_auth_error_accounts", "all")["pass"], false);
    assert!(check(&v, "max_auth_error_accounts", "all")["note"]
        .as_str()
        .unwrap()
        .contains("beta"));
    // The per-route override: 2 compared on "individual", 5 needed.
    let few = check(&v, "min_compared", "route:individual");
    assert_eq!(
        (few["measured"].as_f64(), few["pass"].as_bool()),
        (Some(2.0), Some(false))
    );

    let (code, v) = gate(&cfg, "empty");
    assert_eq!(code, 1, "a gate without criteria must not pass: {v}");

    // By default a share is judged on its Wilson interval at 95 %: 9/11 = 0.82 measured
    // passes 0.8, but its interval (0.52, 0.95) does not rule out less; 1/13 errors passes
    // 0.1 measured, and its upper bound (0.33) does not.
    let (code, v) = gate(&cfg, "bounded");
    assert_eq!(code, 1, "{v:#}");
    let p = check(&v, "min_parity", "all");
    assert_eq!(p["pass"], false);
    let (lo, hi) = (
        p["interval"][0].as_f64().unwrap(),
        p["interval"][1].as_f64().unwrap(),
    );
    assert!(
        (lo - 0.5230).abs() < 1e-3 && (hi - 0.9486).abs() < 1e-3,
        "{p}"
    );
    assert!(
        p["note"].as_str().unwrap().contains("95% confidence"),
        "{p}"
    );
    let e = check(&v, "max_candidate_error_rate", "all");
    assert_eq!(e["pass"], false);
    assert!(e["interval"][1].as_f64().unwrap() > 0.3, "{e}");
}

#[test]
fn too_few_samples_is_a_failure_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    drop(shadowdiff::store::open(&db).unwrap());
    let cfg = gate_config(dir.path(), &db);
    let (code, v) = gate(&cfg, "shadow");
    assert_eq!(code, 1);
    let p = check(&v, "min_parity", "all");
    assert_eq!(p["pass"], false);
    assert_eq!(p["measured"], Value::Null);
    assert!(
        p["note"].as_str().unwrap().contains("too few samples"),
        "{p}"
    );
}

#[test]
fn report_and_gate_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let cfg = gate_config(dir.path(), &db);
    let bin = env!("CARGO_BIN_EXE_shadowdiff");
    let run = |args: &[&str]| {
        let o = Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let c = cfg.to_str().unwrap();
    let window = ["--from", "2025-11-21T12:00:00Z", "--to", NOW];
    let (code, out, err) = run(&[
        &["report", "--config", c, "--format", "json"][..],
        &window[..],
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["compared"], 12);
    let (code, _, err) = run(&[
        &["report", "--config", c, "--out", "reports/x/parity.html"][..],
        &window[..],
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(dir.path().join("reports/x/parity.html")).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    // What the dashboard shows that a static page can: the config's gates and their verdicts,
    // the examples' exchange ids, each account's differing fields, the likely fix.
    assert!(html.contains("<h2>Gate</h2>"), "{html}");
    assert!(
        html.contains("<tr><td>shadow</td><td class=\"ok\"><b>may be promoted</b></td>")
            && html.contains("<tr><td>canary</td><td class=\"bad\"><b>refused</b></td><td>min_parity (all): 0.8182 vs 0.9"),
        "{html}"
    );
    assert!(html.contains("<div class=\"muted\">exchange #"), "{html}");
    assert!(
        html.contains("directory <code>/individuals/*/status</code> changed (2)"),
        "{html}"
    );
    assert_eq!(
        v["accounts"][0]["fields"][0]["field"], "/individuals/*/status",
        "{v}"
    );
    assert!(v.get("gates").is_some(), "{v}");
    // A window under a day: the trend's buckets are sized to it (15 minutes for 6 hours).
    let (code, out, err) = run(&[
        "report",
        "--config",
        c,
        "--format",
        "json",
        "--from",
        "2025-11-28T06:00:00Z",
        "--to",
        "2025-11-28T12:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let short: Value = serde_json::from_str(&out).unwrap();
    let dir_route = short["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "directory")
        .unwrap();
    assert_eq!(dir_route["trend_bucket"], "15m", "{short}");
    let days: Vec<&str> = dir_route["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2025-11-28T10:00Z", "2025-11-28T11:00Z"], "{short}");
    // The gate's default window (the last 24 h) holds nothing from this fixture: too few samples.
    let (code, out, _) = run(&["gate", "--config", c, "--phase", "shadow"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("too few samples"),
        "{out}"
    );
    let (code, _, err) = run(&["gate", "--config", c, "--phase", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("nope") && err.contains("shadow"), "{err}");
    let (code, _, err) = run(&["report", "--config", c, "--db", "missing.db"]);
    assert_eq!(code, 2, "{err}");
    // A format the output file's name contradicts is refused, and nothing is written.
    let (code, _, err) = run(&[
        &[
            "report",
            "--config",
            c,
            "--out",
            "reports/y.html",
            "--format",
            "json",
        ][..],
        &window[..],
    ]
    .concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--format json") && err.contains("html file"),
        "{err}"
    );
    assert!(!dir.path().join("reports/y.html").exists());
    // A window with nothing compared says so: no 0 % or 100 % in the human formats; JSON keeps
    // SPEC's number (1.0, README "Reports").
    let empty = [
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-02T00:00:00Z",
    ];
    let (code, md, err) = run(&[&["report", "--config", c][..], &empty[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        md.starts_with("## shadowdiff parity: nothing compared (0 exchanges in the window)"),
        "{md}"
    );
    assert!(!md.contains('%'), "{md}");
    let (code, _, err) = run(&[
        &["report", "--config", c, "--out", "reports/empty.html"][..],
        &empty[..],
    ]
    .concat());
    assert_eq!(code, 0);
    assert!(err.contains("nothing compared"), "{err}");
    let html = std::fs::read_to_string(dir.path().join("reports/empty.html")).unwrap();
    assert!(html.contains("<title>shadowdiff parity nothing compared</title>"));
    assert!(!html.contains("100.00%") && !html.contains(">0.00%"));
    let (_, json, _) = run(&[
        &["report", "--config", c, "--format", "json"][..],
        &empty[..],
    ]
    .concat());
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["totals"]["parity"], 1.0);
    assert_eq!(v["totals"]["compared"], 0);
}

/// The HTML report in a real browser: it loads, renders the figures, and a screenshot is kept
/// under target/ for people to look at. CI installs Debian's chromium (see scripts/test.sh).
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let conn = shadowdiff::store::open(&db).unwrap();
    let r = shadowdiff::report::build(&conn, &filter()).unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, shadowdiff::report::render::html(&r)).unwrap();
    let url = format!("file://{}", page.display());
    let (dom, png) = support::chromium(&url, "report", "1200,1800", 1000);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot missing or blank ({size} bytes)");
    assert!(
        dom.contains("83.33%") && dom.contains("/individuals/*/status"),
        "rendered DOM lacks the figures"
    );
}

/// Each account's differing fields over the window's latest N exchanges when it has more: the
/// cut is by exchange id (ids grow with time), so the newest differences are the ones counted.
#[test]
fn account_fields_can_be_counted_over_the_latest_exchanges() {
    use shadowdiff::store::Reader as _;
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let conn = shadowdiff::store::open(&db).unwrap();
    let count = |latest: usize, field: &str| -> u64 {
        conn.field_accounts(&filter(), None, latest)
            .unwrap()
            .iter()
            .filter(|r| r.field == field && r.account.as_deref() == Some("acme"))
            .map(|r| r.exchanges)
            .sum()
    };
    // The whole window: both differing exchanges (ids 8 and 9) differ at status.
    assert_eq!(count(0, "/individuals/*/status"), 2);
    assert_eq!(count(1000, "/individuals/*/status"), 2);
    // The latest 8 of the window's 15 exchanges start at id 8: both; the latest 7 only id 9.
    assert_eq!(count(8, "/individuals/*/status"), 2);
    assert_eq!(count(7, "/individuals/*/status"), 1);
    assert_eq!(count(7, "/individuals/*/name"), 1);
    // The latest 6 hold no difference.
    assert!(conn.field_accounts(&filter(), None, 6).unwrap().is_empty());
}
