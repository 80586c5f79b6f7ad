//! Request translation for real vendor pairs (issue #27), against the real `shadowdiff` binary
//! with fake vendors on 127.0.0.1: what a Finch → Merge migration needs of the candidate's
//! request.

mod support;

use serde_json::{json, Value};
use support::process::*;
use support::*;

/// The accounts file of `support::accounts_csv` as text (for `Conf::files`).
fn accounts_text(names: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::read_to_string(accounts_csv(dir.path(), names)).unwrap()
}

/// Merge identifies the linked account by an `X-Account-Token` header: `[candidate] headers`
/// values expand `{account.COLUMN}` (and `{query.NAME}`) per request; an unknown account is
/// skipped as `unknown_account`, never sent the template's text. Old binary: the candidate
/// received the literal `{account.candidate_id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_headers_carry_the_accounts_own_token() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.files = vec![("accounts.csv", accounts_text(&["acme", "globex"]))];
    cfg.candidate_extra = "[candidate.headers]\n\"x-account-token\" = \"{account.candidate_id}\"\n\
                           authorization = \"Bearer merge-key\"\n"
        .into();
    cfg.rest = "[accounts]\nkey = \"header:authorization\"\nfile = \"accounts.csv\"\n".into();
    let p = start(cfg, None).await;
    for (who, n) in [("acme", 2), ("globex", 1), ("nobody", 1)] {
        for _ in 0..n {
            let got = get_with_header(
                &p.url("/x"),
                "authorization",
                &format!("Bearer {who}-token"),
            )
            .await;
            assert_eq!(got.status, 200);
        }
    }
    let rows = tokio::task::block_in_place(|| p.wait_rows(4));
    let mut tokens: Vec<Option<String>> = candidate
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get("x-account-token")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    tokens.sort();
    assert_eq!(
        tokens,
        vec![
            Some("c-acme".to_owned()),
            Some("c-acme".to_owned()),
            Some("c-globex".to_owned())
        ]
    );
    assert!(candidate
        .seen()
        .iter()
        .all(|s| s.headers["authorization"] == "Bearer merge-key"));
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r[1].as_str()).collect();
    assert!(
        reasons.len() == 1 && reasons[0].starts_with("unknown_account"),
        "{rows:?}"
    );
}

/// `check` resolves every `{account.X}` against the accounts file's header and every capture
/// against the route's path, and names every miss at once with the names there are. Old
/// binary: `{account.candidateid}` passed, and every request was then skipped as an unknown
/// account.
#[test]
fn check_names_every_unknown_column_and_capture_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.csv"), accounts_text(&["acme"])).unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
         [candidate.headers]\n\"x-account-token\" = \"{account.token}\"\n\
         [accounts]\nkey = \"header:authorization\"\nfile = \"accounts.csv\"\n\
         [[routes]]\nname = \"ind\"\npath = \"/employer/individual/{id}\"\n\
         [routes.candidate]\npath = \"/api/hris/v1/employees/{individual_id}\"\n\
         query = { account = \"{account.candidateid}\" }\n",
    )
    .unwrap();
    let out = check_in(dir.path());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for needle in [
        "no capture {individual_id} (its captures: {id})",
        "no column \"candidateid\" (its columns: name, candidate_id)",
        "[candidate] headers.x-account-token",
        "no column \"token\"",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

/// The no-config quick start authenticates to the candidate: `--candidate-header "NAME: VALUE"`
/// (repeatable), or `SHADOWDIFF_CANDIDATE_HEADER` (the secret stays out of `ps`). Old binary:
/// no such flag, and the candidate got no credential (every exchange `candidate_auth_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_sends_the_candidates_credential() {
    use std::io::BufRead;
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--db",
            "q.db",
        ])
        .args(["--legacy", &legacy.url(), "--candidate", &candidate.url()])
        .args(["--candidate-header", "authorization: Bearer merge-key"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // The address from the first lines; the rest drained (a closed pipe would end the process).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.split("proxy on http://").nth(1) {
                let _ = tx.send(a.split(',').next().unwrap_or("").to_owned());
            }
        }
    });
    let addr =
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("serve started");
    let got = get(&format!("http://{addr}/x")).await;
    assert_eq!(got.status, 200);
    let seen = poll(std::time::Duration::from_secs(10), || {
        candidate.seen().first().cloned()
    })
    .expect("the candidate was called");
    assert_eq!(seen.headers["authorization"], "Bearer merge-key");
    let _ = child.kill();
    let _ = child.wait();
    // From the environment, and a malformed one is a usage error naming the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args([
            "serve",
            "--legacy",
            "http://127.0.0.1:9",
            "--candidate",
            "http://127.0.0.1:9",
        ])
        .env("SHADOWDIFF_CANDIDATE_HEADER", "no colon here")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--candidate-header") && !text.contains("no colon here"),
        "{text}"
    );
}

/// With routes that translate paths (a vendor migration), a request no route knows is not sent
/// to the candidate by default (no quota spent on 404s, no 404-vs-404 "differences"); the
/// routed one is. `unmatched = "mirror"` keeps the old behaviour for a same-API upgrade. Old
/// binary: the unmatched path went to the candidate as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_stay_with_legacy_in_a_vendor_migration() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = "[[routes]]\nname = \"dir\"\npath = \"/employer/directory\"\n\
                [routes.candidate]\npath = \"/api/hris/v1/employees\"\n"
        .into();
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/employer/company")).await.status, 200);
    assert_eq!(get(&p.url("/employer/directory")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][2], json!("/employer/directory"));
    let paths: Vec<String> = candidate.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, vec!["/api/hris/v1/employees".to_owned()]);
    let metrics = get(&p.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            "shadowdiff_requests_total{route=\"(unmatched)\",outcome=\"not_mirrored\"}"
        ),
        1.0
    );
}

/// Read-only commands never need the vendors' credentials: with `${UNIFIED_API_KEY}` unset,
/// `gate`, `report` and `rollout status` run (a nightly report job is given no production
/// secret); `check` and `serve`, which would send it, still refuse; an unset variable in a key
/// a read-only command does read (`[store] path`) is still an error. Old binary: `gate` exited 2
/// ("environment variable UNIFIED_API_KEY is not set").
#[test]
fn read_only_commands_need_no_vendor_credential() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
               headers = { authorization = \"Bearer ${UNIFIED_API_KEY}\" }\n\
               [store]\npath = \"store/r.db\"\n[gate.shadow]\nmin_compared = 1\n";
    std::fs::write(dir.path().join("a.toml"), cfg).unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        cfg.replace("store/r.db", "${STORE_FILE}"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("UNIFIED_API_KEY")
            .env_remove("STORE_FILE")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&["migrate", "--config", "a.toml"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["gate", "--config", "a.toml", "--phase", "shadow"]);
    assert_eq!(
        code,
        Some(1),
        "judged (too few samples), not refused: {out}"
    );
    for args in [
        &["report", "--config", "a.toml"][..],
        &["rollout", "status", "--config", "a.toml"][..],
    ] {
        let (code, out) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {out}");
    }
    for args in [
        &["check", "--config", "a.toml"][..],
        &["report", "--config", "b.toml"][..],
    ] {
        let (code, out) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains("is not set"), "{out}");
    }
}

/// `shadowdiff check --config a.toml` in `dir`.
fn check_in(dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["check", "--config", "a.toml"])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// A POST through the proxy with a JSON body.
async fn post_json(url: &str, body: &str) -> Got {
    send(
        hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

/// Finch's batch reads (`POST /employer/individual` with `{"requests":[{"individual_id"}]}`)
/// are reads: with `read = true` they are mirrored and compared, the request mapping fans one
/// batch out to one candidate read per id (`GET /employees/{each.individual_id}`, no body), and
/// the answers, assembled in order, go through the response mapping into Finch's shape. A batch
/// over `max_each` is skipped (`fan_out`), a body that is not JSON `request_body`; a `read`
/// route without a request mapping mirrors the POST as it is. Old binary: `read` is an unknown
/// key, and a POST was mirrored only as a write, as it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_fan_out_to_one_candidate_read_per_id() {
    let legacy = Upstream::start(|s| {
        let req: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
        if s.uri.starts_with("/employer/pay-statement") {
            return Reply::json(json!({"responses": []}));
        }
        let responses: Vec<_> = req["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let id = r["individual_id"].as_str().unwrap_or("");
                json!({"individual_id": id, "code": 200,
                       "body": {"id": id, "first_name": id.to_uppercase()}})
            })
            .collect();
        Reply::json(json!({ "responses": responses }))
    })
    .await;
    let candidate = Upstream::start(|s| {
        if s.uri.starts_with("/pay") {
            return Reply::json(json!({"responses": []}));
        }
        let id = s.uri.rsplit('/').next().unwrap_or("").to_owned();
        // A planted gap: "b" has another first name on the candidate.
        let first = if id == "b" {
            "Bee".to_owned()
        } else {
            id.to_uppercase()
        };
        Reply::json(json!({"id": id, "first_name": first}))
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = r#"
[[routes]]
name = "individuals"
method = "POST"
path = "/employer/individual"
read = true
[routes.candidate]
method = "GET"
path = "/employees/{each.individual_id}"
request_expr = '{"each": body.requests}'
max_each = 3
mapping_expr = '{"responses": [$.{"individual_id": each.individual_id, "code": status, "body": body}]}'

[[routes]]
name = "pay-statements"
method = "POST"
path = "/employer/pay-statement"
read = true
[routes.candidate]
path = "/pay"
"#
    .into();
    let p = start(cfg, None).await;
    let batch = |ids: &[&str]| {
        let reqs: Vec<_> = ids.iter().map(|i| json!({"individual_id": i})).collect();
        json!({ "requests": reqs }).to_string()
    };
    let got = post_json(&p.url("/employer/individual"), &batch(&["a", "b", "c"])).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["responses"][1]["body"]["first_name"], "B");
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], "diff", "{rows:?}");
    let diffs = query(&p.db(), "SELECT pointer, legacy, candidate FROM diffs");
    assert_eq!(
        diffs,
        vec![vec![
            json!("/responses/1/body/first_name"),
            json!("\"B\""),
            json!("\"Bee\"")
        ]],
        "only the planted gap differs"
    );
    let mut seen: Vec<(String, String, usize)> = candidate
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.uri.clone(), s.body.len()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["/employees/a", "/employees/b", "/employees/c"]
            .map(|u| ("GET".to_owned(), u.to_owned(), 0))
            .to_vec()
    );
    assert!(candidate
        .seen()
        .iter()
        .all(|s| !s.headers.contains_key("content-type")));

    // A batch of one: JSONata gives the one request as an object, still one call.
    let got = post_json(&p.url("/employer/individual"), &batch(&["c"])).await;
    assert_eq!(got.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(2));
    assert_eq!(rows[1][0], "match", "{rows:?}");
    assert_eq!(candidate.count(), 4);
    // Over max_each: skipped, the candidate not called; legacy answers as ever.
    let got = post_json(
        &p.url("/employer/individual"),
        &batch(&["a", "b", "c", "d"]),
    )
    .await;
    assert_eq!(got.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(3));
    assert_eq!(rows[2][0], "skipped");
    assert!(
        rows[2][1].as_str().unwrap().starts_with("fan_out"),
        "{rows:?}"
    );
    // Not JSON: skipped as request_body.
    let got = post_json(&p.url("/employer/individual"), "requests=a").await;
    assert_eq!(got.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(4));
    assert!(
        rows[3][1].as_str().unwrap().starts_with("request_body"),
        "{rows:?}"
    );
    // An id that would name another resource in the candidate's path ("..": the parent, "":
    // the list): no call at all, the exchange skipped as a template miss.
    for (n, ids) in [(5, ["a", ".."]), (6, ["", "b"])] {
        let got = post_json(&p.url("/employer/individual"), &batch(&ids)).await;
        assert_eq!(got.status, 200);
        let rows = tokio::task::block_in_place(|| p.wait_rows(n));
        assert!(
            rows[n - 1][1]
                .as_str()
                .unwrap()
                .starts_with("template: {each.individual_id} has no value in \"each\"["),
            "{rows:?}"
        );
    }
    assert_eq!(candidate.count(), 4);

    // A read route without a request mapping: the POST as it is, body and content type.
    let got = post_json(
        &p.url("/employer/pay-statement"),
        r#"{"requests":[{"payment_id":"p1"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(7));
    assert_eq!(rows[6][0], "match", "{rows:?}");
    let pay = candidate
        .seen()
        .into_iter()
        .find(|s| s.uri == "/pay")
        .unwrap();
    assert_eq!(pay.method, "POST");
    assert_eq!(&pay.body[..], br#"{"requests":[{"payment_id":"p1"}]}"#);
    assert_eq!(pay.headers["content-type"], "application/json");
}

/// The body form of a request mapping: a POST read translated into another vendor's POST read,
/// its JSON body built from the caller's body, a path capture and the account's columns (the
/// account's id on the candidate); a request of an account not in the accounts file is skipped
/// as `unknown_account` (a mapping is given the account), never sent a body built for nobody.
/// Old binary: `request_expr` is an unknown key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_mapping_builds_the_candidates_body_from_the_account_and_captures() {
    let legacy = Upstream::json(json!({"hits": 1})).await;
    let candidate = Upstream::json(json!({"hits": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.files = vec![("accounts.csv", accounts_text(&["acme"]))];
    cfg.rest = r#"
[accounts]
key = "header:authorization"
file = "accounts.csv"

[[routes]]
name = "search"
method = "POST"
path = "/v1/teams/{team}/search"
read = true
[routes.candidate]
path = "/v2/search"
request_lang = "jq"
request_expr = '{body: {company: .account.candidate_id, team: .captures.team, names: [.body.q[] | ascii_upcase]}}'
"#
    .into();
    let p = start(cfg, None).await;
    for who in ["acme", "nobody"] {
        let got = send(
            hyper::Request::post(p.url("/v1/teams/t%201/search"))
                .header("authorization", format!("Bearer {who}-token"))
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    r#"{"q": ["ada", "grace"]}"#,
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let rows = tokio::task::block_in_place(|| p.wait_rows(2));
    let mut outcomes: Vec<String> = rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["match", "skipped"], "{rows:?}");
    assert!(rows.iter().any(|r| r[1]
        .as_str()
        .is_some_and(|t| t.starts_with("unknown_account"))));
    let seen = candidate.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/v2/search")
    );
    assert_eq!(seen[0].headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body,
        json!({"company": "c-acme", "team": "t 1", "names": ["ADA", "GRACE"]})
    );
}

/// What a read route or a request mapping cannot be, refused by `check` with the key: a read
/// on every method or on a write method, a read sent to a write endpoint, `{each.NAME}` without
/// a request mapping (or in `[candidate] headers`), `max_each` out of range or without a
/// mapping, a request mapping that does not compile, and serving a route whose answer is
/// assembled from calls the caller never made.
#[test]
fn check_refuses_what_a_read_route_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let head = "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n";
    for (route, says) in [
        ("path = \"/b\"\nread = true\n", "read = true needs the route's method"),
        ("method = \"DELETE\"\npath = \"/b\"\nread = true\n", "read = true on a DELETE route"),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\n[routes.candidate]\nmethod = \"PATCH\"\n",
            "a read is never sent to a write endpoint",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\n[routes.candidate]\npath = \"/e/{each.id}\"\n",
            "the route needs a request mapping returning \"each\"",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\n[routes.candidate]\nrequest_expr = '{\"each\": body.ids}'\nmax_each = 5000\n",
            "max_each: 5000 is not between 1 and 1000",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\n[routes.candidate]\nmax_each = 5\n",
            "max_each: only with a request mapping",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\n[routes.candidate]\nrequest_expr = '{\"each\": '\n",
            "request mapping:",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nmirror = true\n[routes.candidate]\nrequest_expr = '{\"each\": body.ids}'\n",
            "a request mapping needs a read route",
        ),
        (
            "method = \"POST\"\npath = \"/b\"\nread = true\nserve = true\n[routes.candidate]\nrequest_expr = '{\"each\": body.ids}'\n",
            "serve = true on a route with a request mapping needs a response mapping and [routes.ids]",
        ),
    ] {
        std::fs::write(
            dir.path().join("a.toml"),
            format!("{head}[[routes]]\nname = \"b\"\n{route}"),
        )
        .unwrap();
        let out = check_in(dir.path());
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{route}: {text}");
        assert!(text.contains(says) && text.contains("route \"b\""), "{says:?} not in:\n{text}");
    }
    std::fs::write(
        dir.path().join("a.toml"),
        format!("{head}[candidate.headers]\nx-id = \"{{each.id}}\"\n"),
    )
    .unwrap();
    let out = check_in(dir.path());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("[candidate] headers apply to every request"),
        "{text}"
    );
}

/// An accounts file whose columns go into `[candidate] headers` holds the candidate's
/// credentials: readable by other users, `check` warns (with the columns and `chmod 600`); at
/// mode 0600 it does not.
#[cfg(unix)]
#[test]
fn an_accounts_file_holding_candidate_tokens_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts.csv");
    std::fs::write(&file, accounts_text(&["acme"])).unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
         [candidate.headers]\n\"x-account-token\" = \"{account.candidate_id}\"\n\
         [accounts]\nkey = \"header:authorization\"\nfile = \"accounts.csv\"\n",
    )
    .unwrap();
    let check = || {
        let out = check_in(dir.path());
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = check();
    assert!(
        err.contains("{account.candidate_id} in [candidate] headers")
            && err.contains("mode 644")
            && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!check().contains("chmod 600"));
}

/// From the outside probe: a fan-out element's answer that is not JSON (an error page quoting
/// the account's token) is stored as a size-and-hash marker, never its text; a fan-out call's
/// failure reason names no URL (its query may hold a credential); an empty batch is not
/// compared; a capture `..;` (a dot-segment to servlet containers) is never put in the
/// candidate's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_secrets_stay_out_of_the_store_and_empty_batches_are_not_compared() {
    let legacy = Upstream::json(json!({"responses": []})).await;
    let candidate = Upstream::start(|s| {
        if s.uri.contains("/html/") {
            Reply::bytes(
                404,
                "<html>error: your token SECRET-TOKEN-123 is bad</html>",
            )
        } else {
            Reply::json(json!({"ok": true}))
        }
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = r#"
[[routes]]
name = "batch"
method = "POST"
path = "/batch"
read = true
[routes.candidate]
method = "GET"
path = "/html/{each.id}"
request_expr = '{"each": body.ids.{"id": $}}'

[[routes]]
name = "one"
method = "GET"
path = "/one/{id}"
[routes.candidate]
path = "/c/{id}/tail"
"#
    .into();
    let p = start(cfg, None).await;
    assert_eq!(
        post_json(&p.url("/batch"), r#"{"ids": ["a", "b"]}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        post_json(&p.url("/batch"), r#"{"ids": []}"#).await.status,
        200
    );
    assert_eq!(get(&p.url("/one/..;x")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(3));
    let text = String::from_utf8_lossy(&db_bytes(&p.db())).into_owned();
    assert!(
        !text.contains("SECRET-TOKEN-123"),
        "the token is in the store"
    );
    let reasons: Vec<String> = rows
        .iter()
        .map(|r| r[1].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("fan_out: the request mapping returned no element")),
        "{rows:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("template: {id} has no value")),
        "{rows:?}"
    );
    assert!(
        candidate.seen().iter().all(|s| !s.uri.starts_with("/c/")),
        "no ..; path sent"
    );
}

/// Legacy ids in the body a request mapping builds (`[routes.ids] request`) go to the candidate
/// as its own ids, learned from a list both sides answered; a body with an id not yet paired is
/// never sent (`unpaired_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ids_in_a_mapped_body_reach_the_candidate_as_its_own() {
    let legacy = Upstream::start(|s| {
        if s.uri.starts_with("/people") {
            Reply::json(
                json!({"people": [{"id": "L1", "name": "Ada"}, {"id": "L2", "name": "Grace"}]}),
            )
        } else {
            Reply::json(json!({"found": 2}))
        }
    })
    .await;
    let candidate = Upstream::start(|s| {
        if s.uri.starts_with("/c/people") {
            Reply::json(
                json!({"people": [{"id": "c-2", "name": "Grace"}, {"id": "c-1", "name": "Ada"}]}),
            )
        } else {
            Reply::json(json!({"found": 2}))
        }
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = r#"
[ids.person]
match = [["/name"]]

[[routes]]
name = "people"
path = "/people"
[routes.candidate]
path = "/c/people"
[routes.ids]
records = { "/people/*" = "person" }

[[routes]]
name = "lookup"
method = "POST"
path = "/lookup"
read = true
[routes.candidate]
path = "/c/lookup"
request_expr = '{"body": {"ids": body.ids, "n": $count(body.ids)}}'
[routes.ids]
request = { "/ids/*" = "person" }
"#
    .into();
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/people")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(
        rows[0][0], "match",
        "paired by name, ids translated: {rows:?}"
    );
    for ids in [r#"["L2", "L1"]"#, r#"["L1", "L9"]"#] {
        let got = post_json(&p.url("/lookup"), &format!(r#"{{"ids": {ids}}}"#)).await;
        assert_eq!(got.status, 200);
    }
    let rows = tokio::task::block_in_place(|| p.wait_rows(3));
    let lookups: Vec<&Vec<Value>> = rows.iter().skip(1).collect();
    assert!(
        lookups.iter().any(|r| r[0] == "skipped"
            && r[1]
                .as_str()
                .unwrap()
                .starts_with("unpaired_id: the legacy id at /ids/1")),
        "{rows:?}"
    );
    let sent: Vec<Value> = candidate
        .seen()
        .iter()
        .filter(|s| s.uri == "/c/lookup")
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    assert_eq!(
        sent,
        vec![json!({"ids": ["c-2", "c-1"], "n": 2})],
        "one call, Merge's ids"
    );
}

/// A served answer's comparison learns like any other: a candidate that swaps two people's ids
/// after they were paired is met as a conflict (recorded, the pairs held stay), also in a phase
/// that serves without verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_exchanges_meet_conflicts_too() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let legacy = Upstream::json(
        json!({"people": [{"id": "L1", "name": "Ada"}, {"id": "L2", "name": "Grace"}]}),
    )
    .await;
    let swapped = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = swapped.clone();
    let candidate = Upstream::start(move |_| {
        let (a, g) = if s2.load(Ordering::SeqCst) {
            ("c-2", "c-1")
        } else {
            ("c-1", "c-2")
        };
        Reply::json(json!({"people": [{"id": a, "name": "Ada"}, {"id": g, "name": "Grace"}]}))
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = r#"
[rollout]
phase = "ga"

[ids.person]
match = [["/name"]]

[[routes]]
name = "people"
path = "/people"
unknown_account = "candidate"
[routes.candidate]
path = "/c/people"
[routes.ids]
records = { "/people/*" = "person" }
"#
    .into();
    let p = start(cfg, None).await;
    // Nothing paired yet: legacy's answer; its comparison pairs them.
    assert_eq!(get(&p.url("/people")).await.json()["people"][0]["id"], "L1");
    tokio::task::block_in_place(|| p.wait_rows(1));
    // Served from the candidate, with legacy's ids.
    let served = get(&p.url("/people")).await.json();
    assert_eq!(served["people"][0]["id"], "L1");
    tokio::task::block_in_place(|| p.wait_rows(2));
    swapped.store(true, Ordering::SeqCst);
    get(&p.url("/people")).await;
    tokio::task::block_in_place(|| p.wait_rows(3));
    let conflicts = query(
        &p.db(),
        "SELECT legacy_id, candidate_id, held_candidate_id FROM id_conflicts ORDER BY legacy_id",
    );
    assert_eq!(
        conflicts,
        vec![
            vec![json!("L1"), json!("c-2"), json!("c-1")],
            vec![json!("L2"), json!("c-1"), json!("c-2")]
        ],
        "{}",
        p.log()
    );
    let served_by = query(&p.db(), "SELECT served_by FROM exchanges ORDER BY id");
    assert_eq!(served_by[2], vec![json!("candidate")], "{served_by:?}");
}
