//! The real binary: exit codes, messages, and SIGTERM handling across processes.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
}

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = bin().args(args).current_dir(cwd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_resolved_routes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sd.toml");
    std::fs::write(
        &cfg,
        r#"
[legacy]
base_url = "https://api.legacy.example/v1"
[candidate]
base_url = "https://api.candidate.example"
headers = { authorization = "Bearer ${SD_TEST_KEY:-dev-key}" }
[[routes]]
name = "directory"
method = "GET"
path = "/employer/directory"
[routes.candidate]
path = "/unified/hris/employees"
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("directory") && out.contains("/unified/hris/employees"),
        "{out}"
    );
    assert!(out.contains("https://api.legacy.example/v1"), "{out}");
    assert!(
        !out.contains("dev-key"),
        "check printed a credential: {out}"
    );
}

#[test]
fn check_prints_the_config_in_its_own_syntax_which_reads_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = "config/examples/finch-to-unified/shadowdiff.toml";
    let (code, first, err) = run(&["check", "--config", cfg], root);
    assert_eq!(code, 0, "{err}");
    // Durations as written, sizes in binary units, the gates, secrets never.
    assert!(first.contains("drain_timeout = \"30s\""), "{first}");
    assert!(first.contains("max_body = \"10MiB\""), "{first}");
    assert!(
        first.contains("[gate.\"shadow\"]\nmin_compared = 100"),
        "{first}"
    );
    assert!(
        first.contains("# authorization: set (not shown)"),
        "{first}"
    );
    // The printed text is a config: checked again (from elsewhere: paths are absolute), it
    // resolves to the same (the secret it could not show aside).
    let again = dir.path().join("resolved.toml");
    std::fs::write(&again, &first).unwrap();
    let (code, second, err) = run(&["check", "--config", again.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && *l != "[candidate.headers]")
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(body(&first), body(&second));
}

#[test]
fn check_reports_every_problem_at_once_and_warns_of_placeholder_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sd.toml");
    std::fs::write(
        &cfg,
        r#"[legacy]
base_url = "http://127.0.0.1:9"
[shadow]
sample_rate = 2.0
[store]
body_sample = -1.0
[gate.canary]
min_parity = 1.5
[gate.canary.routes.nope]
min_parity = 0.9
[[routes]]
name = "people"
path = "/people"
"#,
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 2, "{err}");
    for needle in [
        "4 problems",
        "[shadow] sample_rate: 2 is not between 0 and 1",
        "[store] body_sample: -1 must be between 0 and 1",
        "[gate.canary] min_parity",
        "nope",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // One line per problem, the cause said once.
    assert_eq!(err.matches("sample_rate").count(), 1, "{err}");

    // Invalid globs: every one, with its line, though the typed parse stops at the first.
    std::fs::write(
        &cfg,
        "[diff]\nignore = [\"/ok\", \"bad\"]\nunordered = [\"also/bad\"]\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 2: [diff] ignore") && err.contains("line 3: [diff] unordered"),
        "{err}"
    );

    // A credential left at its placeholder default: valid, with a warning naming key and line.
    std::fs::write(
        &cfg,
        "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n[admin]\ntoken = \"${SD_SURELY_UNSET_TOKEN:-changeme}\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("line 6: [admin] token: ${SD_SURELY_UNSET_TOKEN} is not set"),
        "{err}"
    );
    assert!(!out.contains("changeme"), "the token was printed: {out}");
    // --quiet: the same output, nothing on stderr but errors.
    let (code, quiet_out, err) = run(
        &["--quiet", "check", "--config", cfg.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(quiet_out, out);
    let (code, _, err) = run(&["-q", "check", "--config", "missing.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn invalid_config_exits_2_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[legacy]\nbase_url = \"http://x\"\n\n[shadow]\nmax_body = \"ten megs\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("line 5") && err.contains("max_body"),
        "{err}"
    );

    std::fs::write(&cfg, "[legacy]\nbase_url = \"http://x\"\ntimeout_ms = 5\n").unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("line 3") && err.contains("timeout_ms"),
        "{err}"
    );

    let (code, _, err) = run(&["check", "--config", "missing.toml"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

/// A deployment that gives the base URLs on `serve`'s command line can check its file as it will
/// run: `check` takes the same `--legacy` and `--candidate` (before, it had neither, while its
/// error said "or pass --legacy").
#[test]
fn check_takes_the_base_urls_serve_takes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("no-urls.toml");
    std::fs::write(&cfg, "[shadow]\nsample_rate = 0.5\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let (code, _, err) = run(&["check", "--config", cfg], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("[legacy] base_url: required (or pass --legacy)"),
        "{err}"
    );
    let check = |legacy: &str, candidate: &str| {
        let args = ["check", "--config", cfg, "--legacy", legacy];
        run(
            &[&args[..], &["--candidate", candidate]].concat(),
            dir.path(),
        )
    };
    let (code, out, err) = check("http://127.0.0.1:9001", "http://127.0.0.1:9002/v2");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("http://127.0.0.1:9002/v2"), "{out}");
    assert!(out.contains("sample_rate = 0.5"), "{out}");
    // A bad URL is named by its flag.
    let (code, _, err) = check("ftp://x", "http://y");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--legacy"), "{err}");
}

#[test]
fn diff_exit_codes_and_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, v: serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let a = p(
        "a.json",
        json!({"a": [1, 2], "n": 10, "big": 9007199254740993u64}),
    );
    let b = p(
        "b.json",
        json!({"a": [0, 1, 2], "n": 10.0, "big": 9007199254740993u64}),
    );
    let c = p(
        "c.json",
        json!({"a": [1, 2], "n": 10, "big": 9007199254740993u64}),
    );
    let (code, out, _) = run(&["diff", &a, &c], dir.path());
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&["diff", &a, &b, "--format", "json"], dir.path());
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"equal": false, "differences": [{"pointer": "/a/0", "field": "/a/*", "kind": "extra", "candidate": 0}]})
    );
    let (code, out, _) = run(&["diff", &a, &b], dir.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("extra") && out.contains("/a/0") && out.contains("1 difference"),
        "{out}"
    );
    // A long member name above many differing members: what fits the proxy's room is listed,
    // the rest counted (and the exit code says they differ).
    let long = |v: u8| {
        let members: serde_json::Map<String, serde_json::Value> =
            (0..1000).map(|i| (format!("m{i}"), json!(v))).collect();
        json!({ "n".repeat(10_000): members })
    };
    let (long1, long2) = (p("long1.json", long(1)), p("long2.json", long(2)));
    let (code, out, _) = run(&["diff", &long1, &long2, "--format", "json"], dir.path());
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = v["differences"].as_array().unwrap().len() as u64;
    let unlisted = v["unlisted"].as_u64().unwrap_or(0);
    assert!(
        listed > 0 && unlisted > 0,
        "{listed} listed, {unlisted} not"
    );
    assert_eq!((listed + unlisted, &v["equal"]), (1000, &json!(false)));
    let (code, out, _) = run(&["diff", &long1, &long2], dir.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("1000 differences") && out.contains(&format!("({unlisted} of them past")),
        "{}",
        &out[out.len().saturating_sub(300)..]
    );
    // A long list whose every value differs: the first 10,000 listed, the rest counted under
    // their pattern (the tail's, first met past them, with its example listed), every one in
    // the count.
    let list = |v: u8| json!({"days": vec![v; 12_000], "tail": v});
    let (list1, list2) = (p("list1.json", list(1)), p("list2.json", list(2)));
    let (code, out, _) = run(&["diff", &list1, &list2, "--format", "json"], dir.path());
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["differences"].as_array().unwrap().len(), 10_001);
    assert_eq!(
        v["counted"],
        json!([{"field": "/days/*", "kind": "changed", "n": 2_000}])
    );
    assert_eq!(v.get("unlisted"), None);
    let (code, out, _) = run(&["diff", &list1, &list2], dir.path());
    assert_eq!(code, 1);
    let tail = &out[out.len().saturating_sub(300)..];
    assert!(
        tail.contains("changed      /days/*  (2000 more: counted, not listed)")
            && tail.contains("12001 differences"),
        "{tail}"
    );
    // An RFC 6902 patch from legacy to candidate: the one insertion, and 10 -> 10.0 kept exact.
    let (code, out, _) = run(&["diff", &a, &b, "--format", "patch"], dir.path());
    assert_eq!(code, 1);
    let ops: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        ops,
        json!([
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "replace", "path": "/n", "value": 10.0}
        ])
    );
    let (code, out, _) = run(&["diff", &a, &c, "--format", "patch"], dir.path());
    assert_eq!((code, out.trim()), (0, "[]"));
    // With a normalize rule, the patch goes between the normalised documents.
    std::fs::write(
        dir.path().join("n.toml"),
        "[diff]\nnormalize = [{ fields = [\"/s\"], with = [\"lowercase\"] }]\n",
    )
    .unwrap();
    let up = p("up.json", json!({"s": "ACTIVE", "t": 1}));
    let low = p("low.json", json!({"s": "active", "t": 2}));
    let (code, out, _) = run(
        &["diff", "--config", "n.toml", &up, &low, "--format", "patch"],
        dir.path(),
    );
    assert_eq!(code, 1);
    let ops: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ops, json!([{"op": "replace", "path": "/t", "value": 2}]));
    // Unknown route, and a file that is not JSON: usage errors.
    let (code, _, err) = run(&["diff", &a, &b, "--route", "nope"], dir.path());
    assert_eq!(code, 2, "{err}");
    std::fs::write(dir.path().join("x.json"), "{not json").unwrap();
    let (code, _, err) = run(&["diff", &a, "x.json"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("x.json"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = run(&["frobnicate"], dir.path());
    assert_eq!(code, 2);
    let (code, _, err) = run(
        &["serve", "--legacy", "ftp://x", "--candidate", "http://y"],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    // A file `diff` cannot read is bad input, as one that is not JSON (README: 2 bad input).
    std::fs::write(dir.path().join("a.json"), "{}").unwrap();
    let (code, _, err) = run(&["diff", "a.json", "missing.json"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn prune_deletes_old_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let conn = shadowdiff::store::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO exchanges(started_at, outcome) VALUES ('2000-01-01T00:00:00.000Z', 'match');
         INSERT INTO diffs(exchange_id, seq, pointer, field, kind) VALUES (last_insert_rowid(), 0, '/a', '/a', 'changed');
         INSERT INTO exchanges(started_at, outcome) VALUES ('2999-01-01T00:00:00.000Z', 'match');",
    )
    .unwrap();
    drop(conn);
    let (code, out, err) = run(
        &["prune", "--older-than", "30d", "--db", db.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 1 exchange"), "{out}");
    let left = query(
        &db,
        "SELECT (SELECT count(*) FROM exchanges), (SELECT count(*) FROM diffs)",
    );
    assert_eq!(left, vec![vec![json!(1), json!(0)]]);
    // A store that does not exist is refused (exit 2), not created empty.
    let missing = dir.path().join("nowhere/missing.db");
    let (code, _, err) = run(&["prune", "--db", missing.to_str().unwrap()], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no store at"), "{err}");
    assert!(!missing.exists() && !dir.path().join("nowhere").exists());
}

/// Starts `shadowdiff serve` and returns the child and its proxy address (read from stderr).
fn spawn_serve(
    args: &[&str],
    cwd: &Path,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    let mut child = bin()
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("proxy on http://").nth(1) {
            addr = Some(rest.split(',').next().unwrap().trim().to_owned());
            break;
        }
    }
    let addr = addr.expect("serve printed its address");
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    (child, addr, rest)
}

fn wait_exit(child: &mut std::process::Child) -> i32 {
    // Bounded poll for the exit.
    for _ in 0..1000 {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("shadowdiff did not exit within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_exchanges_and_flushes_the_store() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    // The candidate answers after the signal: the exchanges are still in flight when it arrives.
    let candidate =
        Upstream::start(|_| Reply::json(json!({"a": 1})).delay(Duration::from_millis(700))).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[legacy]\nbase_url = \"{}\"\n[candidate]\nbase_url = \"{}\"\n[store]\npath = \"data/sd.db\"\n",
            legacy.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let cwd = dir.path().to_path_buf();
    let (mut child, addr, stderr) =
        tokio::task::spawn_blocking(move || spawn_serve(&["serve", "--config", "sd.toml"], &cwd))
            .await
            .unwrap();
    for i in 0..3 {
        let got = get(&format!("http://{addr}/item/{i}")).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(legacy.count(), 3);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    let log = stderr.join().unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("3 exchanges written"), "{log}");
    // Logs to something that is not a terminal carry no colour codes.
    assert!(log.contains("INFO") && !log.contains('\u{1b}'), "{log:?}");
    let rows = query(
        &dir.path().join("data/sd.db"),
        "SELECT outcome FROM exchanges",
    );
    assert_eq!(rows, vec![vec![json!("match")]; 3]);
}

/// `serve` from flags alone (no config file) and `flags` (the log's format and level), in
/// front of `legacy` and `candidate`: one request sent through it, then SIGINT. The answer, the
/// log's JSON lines (if any), its whole text, and the directory it ran in (its store is `x.db`
/// there).
async fn one_request_logged(
    flags: &'static [&'static str],
    legacy: String,
    candidate: String,
    req: http::request::Builder,
) -> (Got, Vec<serde_json::Value>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let (mut child, addr, stderr) = tokio::task::spawn_blocking(move || {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(flags);
        args.extend(["--admin", "127.0.0.1:0", "--legacy", &legacy]);
        args.extend(["--candidate", &candidate, "--db", "x.db"]);
        spawn_serve(&args, &cwd)
    })
    .await
    .unwrap();
    let uri = req.uri_ref().unwrap().to_string();
    let req = req
        .uri(format!("http://{addr}{uri}"))
        .body(http_body_util::Full::default())
        .unwrap();
    let got = send(req).await;
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    let log = stderr.join().unwrap();
    assert_eq!(code, 0, "{log}");
    let lines = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (got, lines, log, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_without_a_config_file() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 2})).await;
    let req = http::Request::get("/a?api_key=QUERY-SECRET")
        .header("authorization", "Bearer LOG-SECRET-TOKEN");
    let (got, lines, log, dir) = one_request_logged(
        &["--log-format", "json", "-vv"],
        legacy.url(),
        candidate.url(),
        req,
    )
    .await;
    assert_eq!(got.json(), json!({"a": 1}));
    // JSON lines at the most verbose level, with the exchange span's request id and route...
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["name"] == "exchange" && l["span"]["request_id"].is_string()),
        "{log}"
    );
    // ...and no credential in any of them.
    assert!(
        !log.contains("LOG-SECRET-TOKEN") && !log.contains("QUERY-SECRET"),
        "{log}"
    );
    let rows = query(
        &dir.path().join("x.db"),
        "SELECT outcome, diff_count FROM exchanges",
    );
    assert_eq!(rows, vec![vec![json!("diff"), json!(1)]]);
}

/// At the default level the exchange span is not built (it cost ~8 % of the caller's path), so a
/// warning about one exchange names the exchange itself: its request id, route and account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_about_an_exchange_names_it_at_the_default_level() {
    let candidate = Upstream::json(json!({"a": 1})).await;
    let req = http::Request::get("/workers/7").header("x-request-id", "rid-warn-1");
    let (got, lines, log, _dir) = one_request_logged(
        &["--log-format", "json"],
        closed_port(),
        candidate.url(),
        req,
    )
    .await;
    assert_eq!(got.status, 502);
    let warned = warning(&lines, "legacy failed", &log);
    assert_eq!(warned["fields"]["request_id"], "rid-warn-1", "{log}");
    assert_eq!(warned["fields"]["method"], "GET", "{log}");
    assert_eq!(warned["fields"]["path"], "/workers/7", "{log}");
    // No line carries the span: it was never built.
    assert!(lines.iter().all(|l| l.get("span").is_none()), "{log}");

    // The candidate's 429 pauses mirroring: the warning says for which exchange.
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::start(|_| {
        Reply::json(json!({}))
            .status(429)
            .header("retry-after", "2")
    })
    .await;
    let req = http::Request::get("/workers/8").header("x-request-id", "rid-429");
    let (got, lines, log, _dir) = one_request_logged(
        &["--log-format", "json"],
        legacy.url(),
        candidate.url(),
        req,
    )
    .await;
    assert_eq!(got.status, 200);
    let warned = warning(&lines, "candidate answered 429: mirroring paused", &log);
    assert_eq!(warned["fields"]["request_id"], "rid-429", "{log}");
}

/// The request id is the caller's: in a pretty log it is quoted text, so an id that looks like
/// more fields cannot forge them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_cannot_forge_fields_in_a_pretty_log() {
    let candidate = Upstream::json(json!({"a": 1})).await;
    let req = http::Request::get("/workers/7")
        .header("x-request-id", r#"inj1 route="payroll" account="victim""#);
    let (got, _, log, _dir) = one_request_logged(
        &["--log-format", "pretty"],
        closed_port(),
        candidate.url(),
        req,
    )
    .await;
    assert_eq!(got.status, 502);
    assert!(
        log.contains(r#"request_id="inj1 route=\"payroll\" account=\"victim\"""#),
        "{log}"
    );
    assert!(!log.contains(r#" route="payroll""#), "{log}");
}

/// A port nothing listens on (free a moment ago): a legacy that refuses connections.
fn closed_port() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}

/// The WARN line whose message is `message`.
fn warning<'a>(lines: &'a [serde_json::Value], message: &str, log: &str) -> &'a serde_json::Value {
    let found = lines
        .iter()
        .find(|l| l["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no '{message}' line: {log}"));
    assert_eq!(found["level"], "WARN", "{log}");
    found
}

/// `-q` asks for nothing on stderr but errors: RUST_LOG in the environment (which overrides
/// `-v`) does not undo it.
#[test]
fn quiet_wins_over_rust_log() {
    let dir = tempfile::tempdir().unwrap();
    // (A store of its own each time: a migrated one would have nothing left to log.)
    let migrate = |quiet: bool, db: &str| {
        let mut cmd = bin();
        cmd.args(["migrate", "--db", db]).current_dir(dir.path());
        if quiet {
            cmd.arg("-q");
        }
        let out = cmd.env("RUST_LOG", "shadowdiff=debug").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Without -q, RUST_LOG is followed: the migration is logged at info.
    assert!(migrate(false, "x.db").contains("INFO"));
    let err = migrate(true, "y.db");
    assert!(!err.contains("INFO") && !err.contains("DEBUG"), "{err}");
}

#[test]
fn the_example_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for example in [
        "config/examples/version-upgrade.toml",
        "config/examples/vendor-migration.toml",
        "config/examples/finch-to-unified/shadowdiff.toml",
        "config/examples/finch-to-merge/shadowdiff.toml",
    ] {
        let (code, _, err) = run(&["check", "--config", example], root);
        assert_eq!(code, 0, "{example}: {err}");
    }
    let (code, out, err) = run(&["check", "--config", "config/shadowdiff.toml"], root);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("directory") && out.contains("individual"),
        "{out}"
    );
}

#[test]
fn the_demo_runs_end_to_end_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["demo", "--requests", "60", "--out", "out"], dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/demo.json")).unwrap())
            .unwrap();
    assert_eq!(json["totals"]["exchanges"], 60);
    let html = std::fs::read_to_string(dir.path().join("out/demo.html")).unwrap();
    assert!(
        html.contains("/individuals/*/department"),
        "the planted missing field is reported"
    );
    assert!(
        html.contains("/employment/subtype"),
        "the wrong enum is reported"
    );
    assert_eq!(json["needs_reauth"], json!(["initech"]));
    assert!(out.contains("gate shadow: FAIL"), "{out}");
    // The tour's next command (the one the demo prints) gives the demo's verdict, from any folder
    // (old: `report --db` applied ./config/shadowdiff.toml's gates when run from the repository).
    let hint = out
        .lines()
        .find_map(|l| l.split("(try: shadowdiff ").nth(1))
        .unwrap_or_else(|| panic!("{out}"))
        .trim_end_matches(')')
        .to_owned();
    let argv: Vec<&str> = hint.split_whitespace().collect();
    let (_, md, err) = run(&argv, dir.path());
    assert!(
        md.contains("- gate `shadow`: refused"),
        "{hint}: {md}\n{err}"
    );
    // A window by its start alone, or ending `now` (old binary: --from needed --to, and `now`
    // was refused).
    for args in [
        &["--from", "2000-01-01"][..],
        &["--to", "now"],
        &["--since", "1h", "--to", "now"],
    ] {
        let mut argv = vec!["report", "--db", "out/demo/demo.db", "--format", "json"];
        argv.extend_from_slice(args);
        let (code, text, err) = run(&argv, dir.path());
        assert_eq!(code, 0, "{args:?}: {err}");
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["totals"]["exchanges"], 60, "{args:?}: {}", r["window"]);
    }
    // A window that ends before it starts is a usage error, not an empty report.
    let (code, text, err) = run(
        &[
            "report",
            "--db",
            "out/demo/demo.db",
            "--from",
            "2026-01-02",
            "--to",
            "2026-01-01",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{text}");
    assert!(err.contains("--from must be before --to"), "{err}");
    // The rollout: a promotion refused, a canary drill, a rollback (by the guard, or by hand on
    // 60 requests: too few for the guard's minimum sample).
    assert!(
        out.contains(
            "rollout promote: refused, the gate of shadow fails (min_compared, min_parity"
        ),
        "{out}"
    );
    assert!(out.contains("rollout set canary (change #1)"), "{out}");
    assert!(out.contains("rolled back by hand"), "{out}");
    let events: Vec<&str> = json["rollout"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["canary", "rollback"]);
    assert!(json["rollout"]["served_by_candidate"].as_u64().unwrap() > 0);
    // The mapping loop ends the tour: the enum gap's fix found and checked, the field no mapping
    // can fill said so, the fix written and re-diffed.
    assert!(
        out.contains(
            "suggest individual /employment/subtype changed: lower case it (checked: differs in"
        ),
        "{out}"
    );
    assert!(out.contains("$lowercase(employment_type)"), "{out}");
    assert!(
        out.contains("suggest individual /department missing: the candidate never returns it"),
        "{out}"
    );
    assert!(dir
        .path()
        .join("out/demo/proposed/individual.jsonata")
        .is_file());
    let rediff = out
        .lines()
        .find(|l| l.contains("rediff individual with"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        rediff.contains("/employment/subtype fixed in")
            && rediff.contains("still differing: /department"),
        "{rediff}"
    );
    // Redacted before storage.
    let bytes = db_bytes(&dir.path().join("out/demo/demo.db"));
    assert!(!contains(&bytes, b"123-45-678"), "an ssn reached the store");
}

#[test]
fn map_applies_the_chain_or_says_where_the_mapping_fails() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = "config/examples/finch-to-unified/shadowdiff.toml";
    let sample = "config/examples/finch-to-unified/samples/employees.json";
    // check shows each route's chain, with the account overrides.
    let (code, out, err) = run(&["check", "--config", cfg], root);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# mappings applied: base"), "{out}");
    assert!(out.contains("environment production"), "{out}");
    assert!(out.contains("for account acme"), "{out}");
    // map: the base and production levels for everyone, Acme's on top for Acme.
    let (code, out, err) = run(
        &["map", "--config", cfg, "--route", "directory", sample],
        root,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["individuals"][0]["department"]["name"], "Engineering");
    assert_eq!(v["individuals"][0]["middle_name"], serde_json::Value::Null);
    assert_eq!(v["individuals"][1]["manager"]["id"], "fin-001");
    let (code, out, _) = run(
        &[
            "map",
            "--config",
            cfg,
            "--route",
            "directory",
            "--account",
            "acme",
            sample,
        ],
        root,
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["individuals"][0]["department"]["name"], "ENGINEERING");

    // A mapping that does not compile: the config is invalid, naming file and position.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.jq"), ".a |\n  {b: }\n").unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        "[[routes]]\nname = \"r\"\npath = \"/r\"\n[routes.candidate]\nmapping = \"bad.jq\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", "sd.toml"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.jq") && err.contains("line 2"), "{err}");
    // A mapping that fails on this input: exit 1 and the error.
    std::fs::write(dir.path().join("bad.jq"), "error(\"no \\(.a)\")\n").unwrap();
    std::fs::write(dir.path().join("in.json"), r#"{"a": "way"}"#).unwrap();
    let (code, _, err) = run(
        &["map", "--config", "sd.toml", "--route", "r", "in.json"],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no way"), "{err}");
}

/// SIGHUP reloads the config and its mappings; a broken mapping is refused with a log line and
/// the running one stays.
#[test]
fn sighup_reloads_mappings_and_refuses_broken_ones() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let legacy = rt.block_on(Upstream::json(json!({"name": "ANN"})));
    let candidate = rt.block_on(Upstream::json(json!({"full_name": "ann"})));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.jsonata"), r#"{"name": full_name}"#).unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[legacy]\nbase_url = \"{}\"\n[candidate]\nbase_url = \"{}\"\n[store]\npath = \"sd.db\"\n[[routes]]\nname = \"p\"\npath = \"/p\"\n[routes.candidate]\nmapping = \"m.jsonata\"\n",
            legacy.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["serve", "--config", "sd.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every stderr line, as it comes.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Ok(l) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if l.contains(needle) {
                return l;
            }
        }
        panic!("no log line with {needle:?} within 20 s");
    };
    let first = wait_for("proxy on http://");
    let addr = first.split("proxy on http://").nth(1).unwrap();
    let url = format!("http://{}/p", addr.split(',').next().unwrap().trim());
    let hup = || {
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    assert_eq!(rt.block_on(get(&url)).status, 200);
    // Broken: refused, with the file in the message.
    std::fs::write(dir.path().join("m.jsonata"), "{\"name\": (full_name}").unwrap();
    hup();
    let refused = wait_for("reload refused");
    assert!(refused.contains("m.jsonata"), "{refused}");
    assert_eq!(rt.block_on(get(&url)).status, 200);
    // Fixed (and different): reloaded.
    std::fs::write(
        dir.path().join("m.jsonata"),
        r#"{"name": $uppercase(full_name)}"#,
    )
    .unwrap();
    hup();
    wait_for("config reloaded");
    assert_eq!(rt.block_on(get(&url)).status, 200);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wait_exit(&mut child), 0);
    let rows = query(
        &dir.path().join("sd.db"),
        "SELECT outcome, mapping_version FROM exchanges ORDER BY id",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The first mapping (name "ann" vs "ANN") differs; the refused reload kept it; the new
    // one (upper case) matches, under another version. (Exchanges are recorded when their
    // comparison ends, so ids need not follow the order of the requests.)
    let diffs: Vec<_> = rows.iter().filter(|r| r[0] == json!("diff")).collect();
    let matches: Vec<_> = rows.iter().filter(|r| r[0] == json!("match")).collect();
    assert_eq!((diffs.len(), matches.len()), (2, 1), "{rows:?}");
    assert_eq!(
        diffs[0], diffs[1],
        "the refused reload kept the first mapping"
    );
    assert_ne!(
        matches[0][1], diffs[0][1],
        "the new mapping has another version"
    );
}

#[test]
fn offline_diff_applies_the_route_mappings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.json");
    std::fs::write(
        &legacy,
        json!({"individuals": [
            {"id": "fin-001", "first_name": "Ada", "middle_name": null, "last_name": "Lovelace",
             "manager": null, "department": {"name": "Engineering"}, "is_active": true},
            {"id": "fin-002", "first_name": "Grace", "middle_name": "Brewster", "last_name": "Hopper",
             "manager": {"id": "fin-001"}, "department": {"name": "Engineering"}, "is_active": false}],
          "paging": {"count": 2, "offset": 0}})
        .to_string(),
    )
    .unwrap();
    let cfg = "config/examples/finch-to-unified/shadowdiff.toml";
    let sample = "config/examples/finch-to-unified/samples/employees.json";
    let l = legacy.to_str().unwrap();
    // Mapped by the route's chain, the unified page equals the legacy directory...
    let (code, out, err) = run(
        &[
            "diff",
            "--config",
            cfg,
            "--route",
            "directory",
            l,
            sample,
            "--db",
            "/nonexistent.db",
        ],
        root,
    );
    assert_eq!(code, 0, "{out}{err}");
    // ...and with Acme's override the departments differ (upper case).
    let (code, out, _) = run(
        &[
            "diff",
            "--config",
            cfg,
            "--route",
            "directory",
            "--account",
            "acme",
            l,
            sample,
        ],
        root,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/individuals/0/department/name"), "{out}");
}

/// The store keeps the first few differences per field pattern; `diff --exchange` recomputes all
/// of them from the kept bodies (with the status and compared headers), and says when there are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_exchange_recomputes_every_difference_from_kept_bodies() {
    let people = |status: &str| json!({"people": (0..10).map(|i| json!({"id": i, "status": status})).collect::<Vec<_>>()});
    let legacy = Upstream::json(people("active")).await;
    let candidate = Upstream::json(people("ACTIVE")).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    get(&sd.url("/people")).await;
    sd.quiesce().await;
    // Stored: the first 3 of the 10 (one field pattern, one kind); counted: all 10.
    assert_eq!(
        sd.rows("SELECT (SELECT count(*) FROM diffs), (SELECT diff_count FROM exchanges)"),
        vec![vec![json!(3), json!(10)]]
    );
    let db = sd.db.to_str().unwrap().to_owned();
    let dir = sd.dir.path().to_owned();
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            &["diff", "--exchange", "1", "--db", &db, "--format", "json"],
            &dir,
        )
    });
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recorded_diff_count"], 10);
    let d = v["differences"].as_array().unwrap();
    assert_eq!(d.len(), 10, "{out}");
    assert_eq!(d[9]["pointer"], "/people/9/status");
    assert_eq!(d[9]["candidate"], "ACTIVE");
    let (code, out, _) =
        tokio::task::block_in_place(|| run(&["diff", "--exchange", "1", "--db", &db], &dir));
    assert_eq!(code, 1);
    assert!(out.ends_with("10 differences\n"), "{out}");
    // An exchange that does not exist, and the two forms together: usage errors.
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["diff", "--exchange", "99", "--db", &db], &dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no exchange 99"), "{err}");
    let (code, _, _) =
        tokio::task::block_in_place(|| run(&["diff", "a.json", "b.json", "--exchange", "1"], &dir));
    assert_eq!(code, 2);
    // Kept bodies that can no longer be compared (edited into JSON too deep to parse) are an
    // error that says so, never "0 differences".
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE blobs SET body = ?1 WHERE id = (SELECT blob_id FROM bodies WHERE side = 'candidate')",
            ["[".repeat(500) + &"]".repeat(500)],
        )
        .unwrap();
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&["diff", "--exchange", "1", "--db", &db], &dir));
    assert_eq!(code, 3, "{out}");
    assert!(err.contains("cannot be compared (not_json"), "{err}");
    // A window reaching past 1970 starts there (it panicked on the subtraction, exit 101).
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            &[
                "report",
                "--db",
                &db,
                "--since",
                "99999999999d",
                "--format",
                "json",
            ],
            &dir,
        )
    });
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["totals"]["exchanges"], 1);
    let (code, _, err) = tokio::task::block_in_place(|| {
        run(
            &["prune", "--db", &db, "--older-than", "99999999999d"],
            &dir,
        )
    });
    assert_eq!(code, 0, "{err}");
    sd.stop().await;
}

/// A store as the first wave wrote it: no `mapping_version` column, every difference of an
/// exchange stored (10 rows for one field pattern, not the first 3), both bodies of every
/// differing exchange kept. This version reads it (report, diff --exchange) and writes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_the_bounded_rows_is_read_and_extended() {
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("store")).unwrap();
    let old = files.path().join("store/shadowdiff.db");
    let at = shadowdiff::record::rfc3339(std::time::SystemTime::now() - Duration::from_secs(3600));
    let hour = &at[..13];
    let people = |status: &str| {
        json!({"people": (0..10).map(|i| json!({"id": i, "status": status})).collect::<Vec<_>>()})
            .to_string()
    };
    {
        let c = rusqlite::Connection::open(&old).unwrap();
        c.execute_batch(
            "CREATE TABLE exchanges(id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, route TEXT,
               method TEXT, path TEXT, account TEXT, legacy_status INTEGER, candidate_status INTEGER,
               legacy_ms REAL, candidate_ms REAL, outcome TEXT NOT NULL,
               diff_count INTEGER NOT NULL DEFAULT 0, reason TEXT, request_id TEXT);
             CREATE TABLE diff_fields(exchange_id INTEGER NOT NULL, started_at TEXT NOT NULL,
               route TEXT, field TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
               PRIMARY KEY(exchange_id, field, kind)) WITHOUT ROWID;
             CREATE TABLE diffs(exchange_id INTEGER NOT NULL, seq INTEGER NOT NULL,
               pointer TEXT NOT NULL, field TEXT NOT NULL, kind TEXT NOT NULL, legacy TEXT,
               candidate TEXT, PRIMARY KEY(exchange_id, seq)) WITHOUT ROWID;
             CREATE TABLE bodies(exchange_id INTEGER NOT NULL, side TEXT NOT NULL, status INTEGER,
               headers TEXT, blob_id INTEGER, PRIMARY KEY(exchange_id, side));
             CREATE TABLE blobs(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, body TEXT NOT NULL);
             CREATE TABLE field_presence(route TEXT NOT NULL, field TEXT NOT NULL, hour TEXT NOT NULL,
               n INTEGER NOT NULL, PRIMARY KEY(route, field, hour)) WITHOUT ROWID;",
        )
        .unwrap();
        c.execute(
            "INSERT INTO exchanges(id, started_at, route, method, path, legacy_status,
               candidate_status, legacy_ms, candidate_ms, outcome, diff_count, request_id)
             VALUES (1, ?1, NULL, 'GET', '/people', 200, 200, 1.0, 1.0, 'diff', 10, 'r1')",
            [&at],
        )
        .unwrap();
        for i in 0..10 {
            c.execute(
                "INSERT INTO diffs VALUES (1, ?1, ?2, '/people/*/status', 'changed', '\"active\"', '\"ACTIVE\"')",
                rusqlite::params![i, format!("/people/{i}/status")],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO diff_fields VALUES (1, ?1, NULL, '/people/*/status', 'changed', 10)",
            [&at],
        )
        .unwrap();
        for (id, side, body) in [
            (1, "legacy", people("active")),
            (2, "candidate", people("ACTIVE")),
        ] {
            c.execute(
                "INSERT INTO blobs VALUES (?1, ?2, ?3)",
                rusqlite::params![id, vec![id as u8; 16], body],
            )
            .unwrap();
            c.execute(
                "INSERT INTO bodies VALUES (1, ?1, 200, '{\"content-type\":\"application/json\"}', ?2)",
                rusqlite::params![side, id],
            )
            .unwrap();
        }
        for f in ["/people", "/people/*", "/people/*/id", "/people/*/status"] {
            c.execute(
                "INSERT INTO field_presence VALUES ('', ?1, ?2, 1)",
                [f, hour],
            )
            .unwrap();
        }
    }
    let db = old.to_str().unwrap().to_owned();
    let dir = files.path().to_owned();
    // Read as it is: the report counts the old rows, diff --exchange recomputes from the bodies.
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            &["report", "--db", &db, "--since", "24h", "--format", "json"],
            &dir,
        )
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/people/*/status"), "{out}");
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&["diff", "--exchange", "1", "--db", &db], &dir));
    assert_eq!(code, 1, "{err}");
    assert!(out.ends_with("10 differences\n"), "{out}");
    // Served on: the column is added, new exchanges go in beside the old ones.
    let legacy = Upstream::json(json!({"people": [{"id": 1, "status": "active"}]})).await;
    let candidate = Upstream::json(json!({"people": [{"id": 1, "status": "ACTIVE"}]})).await;
    let sd =
        Shadowdiff::start_with_files(&legacy.url(), &candidate.url(), "", Some(files.path())).await;
    get(&sd.url("/people")).await;
    sd.quiesce().await;
    assert_eq!(
        sd.rows("SELECT id, diff_count, mapping_version FROM exchanges ORDER BY id"),
        vec![
            vec![json!(1), json!(10), json!(null)],
            vec![json!(2), json!(1), json!(null)]
        ]
    );
    assert_eq!(
        sd.rows("SELECT exchange_id, count(*) FROM diffs GROUP BY 1 ORDER BY 1"),
        vec![vec![json!(1), json!(10)], vec![json!(2), json!(1)]],
        "the old rows are kept as they were"
    );
    let new_db = sd.db.to_str().unwrap().to_owned();
    let (_, _keep) = sd.stop().await;
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(
            &[
                "report", "--db", &new_db, "--since", "24h", "--format", "json",
            ],
            &dir,
        )
    });
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.to_string().contains("/people/*/status"), "{out}");
}

/// A reader that goes away (`shadowdiff check | head -1`) ends the command quietly with success:
/// no panic, no "Broken pipe" error.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for args in [
        &["check", "--config", "config/shadowdiff.toml"][..],
        &["demo", "--config-only", "--out"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = bin();
        cmd.args(args);
        if args[0] == "demo" {
            cmd.arg(dir.path());
        }
        let mut child = cmd
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the command has written a line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
    }
}

/// One error line, each cause once: `{:#}` of an error whose message already holds its cause
/// used to print it twice ("Address already in use (os error 98): Address already in use …").
#[test]
fn errors_name_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(
        &[
            "serve",
            "--listen",
            &addr,
            "--admin",
            "",
            "--legacy",
            "http://127.0.0.1:9",
            "--candidate",
            "http://127.0.0.1:9",
            "--db",
            "x.db",
        ],
        dir.path(),
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.matches("already in use").count(), 1, "{err}");
    // A store that is a folder, and a config file that cannot be read.
    std::fs::create_dir(dir.path().join("folder.db")).unwrap();
    let (code, _, err) = run(&["report", "--db", "folder.db"], dir.path());
    assert_ne!(code, 0);
    assert_eq!(
        err.matches("unable to open database file").count(),
        1,
        "{err}"
    );
    let (code, _, err) = run(&["check", "--config", "missing.toml"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// Gate thresholds are checked with the rest of the config: a share outside 0..1, a latency ratio
/// that is not positive, an override for a route that does not exist (it would gate nothing).
#[test]
fn gate_thresholds_and_route_overrides_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
                [[routes]]\nname = \"people\"\npath = \"/people\"\n";
    for (gate, says) in [
        (
            "[gate.shadow]\nmin_parity = 1.5\n",
            "[gate.shadow] min_parity: 1.5",
        ),
        (
            "[gate.canary]\nmax_candidate_error_rate = -0.1\n",
            "[gate.canary] max_candidate_error_rate",
        ),
        ("[gate.ga]\nmax_latency_ratio = 0.0\n", "max_latency_ratio"),
        (
            "[gate.shadow.routes.peeple]\nmin_parity = 0.9\n",
            "no route named \"peeple\" (routes: people)",
        ),
        (
            "[gate.shadow.routes.people]\nmin_parity = 2.0\n",
            "[gate.shadow] routes.people min_parity: 2",
        ),
    ] {
        std::fs::write(dir.path().join("sd.toml"), format!("{base}{gate}")).unwrap();
        let (code, _, err) = run(&["check", "--config", "sd.toml"], dir.path());
        assert_eq!(code, 2, "{gate}: {err}");
        assert!(err.contains(says), "{gate}: {err}");
    }
    std::fs::write(
        dir.path().join("sd.toml"),
        format!("{base}[gate.shadow]\nmin_parity = 0.99\n[gate.shadow.routes.people]\nmin_parity = 1.0\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", "sd.toml"], dir.path());
    assert_eq!(code, 0, "{err}");
}

/// `demo --config-only` writes its URLs into a config file: anything but a plain http(s) URL
/// is refused, nothing is written.
#[test]
fn demo_config_only_refuses_what_is_not_a_url() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["http://x\"\n[evil]", "ftp://x", "not a url", "http://x\\y"] {
        let (code, _, err) = run(
            &["demo", "--config-only", "--out", "o", "--legacy-url", bad],
            dir.path(),
        );
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("--legacy-url"), "{err}");
        assert!(!dir.path().join("o/demo/shadowdiff.toml").exists());
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell], dir.path());
        assert_eq!(code, 0, "{err}");
        // Every command is completed, the newest included.
        for cmd in ["serve", "rediff", "suggest", "webhook", "rollout"] {
            assert!(out.contains(cmd), "{shell}: no {cmd}");
        }
    }
    let (code, _, err) = run(&["completions", "tcsh"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, man, err) = run(&["man"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        man.starts_with(".ie") || man.contains(".TH shadowdiff 1"),
        "{man}"
    );
    assert!(man.contains("rediff") && man.contains("suggest"), "{man}");
    // One page: no reference to per-command pages that do not exist; the exit status said.
    assert!(!man.contains("(1)"), "{man}");
    assert!(!man.contains("shadowdiff\\-serve"), "{man}");
    assert!(
        man.contains(".SH \"EXIT STATUS\"") && man.contains("shadowdiff rollout promote"),
        "{man}"
    );
    // A closed pipe ends it quietly (`man | head -1`, `check | head -1`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for args in [
        &["man"][..],
        &[
            "check",
            "--config",
            "config/examples/finch-to-unified/shadowdiff.toml",
        ][..],
        &["schema"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(args)
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn demo_serve_keeps_the_dashboard_up_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["demo", "--serve", "--requests", "20", "--out", "out"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("dashboard: ")
                .map(|r| r.split_whitespace().next().unwrap().to_owned())
        })
        .expect("the dashboard's address");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let page = rt.block_on(get(&url));
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        html.contains("shadowdiff") && html.contains("individual"),
        "{html}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wait_exit(&mut child), 0);
    let _ = rest.join();
}

/// Checks a JSON value against the parts of a JSON Schema the generated one uses (`$ref`,
/// `type`, `properties`, `additionalProperties`, `items`, `anyOf`, `oneOf`, `enum`, `const`):
/// enough to catch a misspelt key or a value of the wrong type in an example config.
fn validate(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    v: &serde_json::Value,
    at: &str,
    errs: &mut Vec<String>,
) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return validate(root, &root["$defs"][name], v, at, errs);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let ok = alts.iter().any(|alt| {
                let mut e = Vec::new();
                validate(root, alt, v, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{at}: matches none of {key}"));
            }
            return;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errs.push(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    let type_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(t) => errs.push(format!("{at}: {v} is not a {t}")),
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(type_ok) => {
            errs.push(format!("{at}: {v} is none of {ts:?}"));
        }
        _ => {}
    }
    if let Value::Object(m) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, x) in m {
            let here = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(root, s, x, &here, errs),
                (None, Some(Value::Bool(false))) => {
                    errs.push(format!("{here}: not a key of the config"));
                }
                (None, Some(s @ Value::Object(_))) => validate(root, s, x, &here, errs),
                _ => {}
            }
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if x < min {
                errs.push(format!("{at}: {x} is under its minimum {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if x > max {
                errs.push(format!("{at}: {x} is over its maximum {max}"));
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            validate(root, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

#[test]
fn the_committed_json_schema_is_the_generated_one_and_the_examples_follow_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, generated, err) = run(&["schema"], root);
    assert_eq!(code, 0, "{err}");
    let committed = std::fs::read_to_string(root.join("config/shadowdiff.schema.json")).unwrap();
    assert!(
        generated == committed,
        "config/shadowdiff.schema.json is stale: shadowdiff schema > config/shadowdiff.schema.json"
    );
    let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
    for example in [
        "config/shadowdiff.toml",
        "config/examples/vendor-migration.toml",
        "config/examples/version-upgrade.toml",
        "config/examples/finch-to-unified/shadowdiff.toml",
        "config/examples/finch-to-merge/shadowdiff.toml",
    ] {
        let path = root.join(example);
        let text = std::fs::read_to_string(&path).unwrap();
        // The editors' directive (Taplo, Even Better TOML) names the schema from the file's folder.
        let named = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("#:schema "))
            .unwrap_or_else(|| panic!("{example}: no #:schema line first"));
        let target = path.parent().unwrap().join(named.trim());
        assert_eq!(
            std::fs::canonicalize(&target).unwrap(),
            std::fs::canonicalize(root.join("config/shadowdiff.schema.json")).unwrap(),
            "{example}"
        );
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let json = serde_json::to_value(&doc).unwrap();
        let mut errs = Vec::new();
        validate(&schema, &schema, &json, "", &mut errs);
        assert!(errs.is_empty(), "{example}: {errs:#?}");
    }
    // And the checker catches what an editor would flag.
    let bad: serde_json::Value =
        serde_json::json!({"shadow": {"sample_rat": 1.0, "max_rps": "fast"}});
    let mut errs = Vec::new();
    validate(&schema, &schema, &bad, "", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
    // A share given as a percentage (old schema: no ranges, `min_parity = 95` passed it).
    let bad: serde_json::Value = serde_json::json!({"gate": {"shadow": {"min_parity": 95}},
        "rollout": {"phases": {"canary": {"percent": 120}}}});
    let mut errs = Vec::new();
    validate(&schema, &schema, &bad, "", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("over its maximum"), "{errs:?}");
}

/// Every argument of every command says what it is for, and no help text, man page or user
/// document points at a document outside this repository.
#[test]
fn every_argument_has_help_and_nothing_points_outside_the_repository() {
    use clap::CommandFactory as _;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id != "help" && id != "version" && a.get_help().is_none() && !a.is_hide_set() {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && !sub.is_hide_set() {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&shadowdiff::cli::Cli::command(), "shadowdiff", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {missing:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, man, _) = run(&["man"], root);
    let (_, help, _) = run(&["--help"], root);
    let mut texts = vec![("man page".to_owned(), man), ("--help".to_owned(), help)];
    for doc in [
        "README.md",
        "reports/README.md",
        "config/shadowdiff.toml",
        "config/examples/vendor-migration.toml",
        "config/examples/version-upgrade.toml",
        "config/examples/finch-to-unified/shadowdiff.toml",
    ] {
        texts.push((
            doc.to_owned(),
            std::fs::read_to_string(root.join(doc)).unwrap(),
        ));
    }
    for (name, text) in texts {
        for outside in [
            format!("..{}", "/shared").as_str(),
            "SPEC §",
            "SPEC.md",
            "DEPENDENCIES.md",
        ] {
            assert!(!text.contains(outside), "{name} refers to {outside}");
        }
    }
}
