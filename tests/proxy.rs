//! The proxy end to end: real fake upstreams on 127.0.0.1:0, the real server, a real SQLite file.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_bodies_are_a_match_and_the_caller_gets_legacy_bytes() {
    let body = json!({"individuals": [{"id": "a", "name": "Ann"}], "paging": {"count": 1}});
    let legacy = Upstream::json(body.clone()).await;
    let candidate = Upstream::json(body).await;
    let toml = "[candidate]\nbase_url = \"{candidate}\"\nforward_query = [\"page\"]\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let got = get(&sd.url("/employer/directory?page=1&api_key=legacy-secret")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["individuals"][0]["name"], "Ann");
    sd.quiesce().await;
    assert_eq!(sd.outcomes(), vec![("match".to_owned(), None)]);
    let row = &sd.rows(
        "SELECT route, method, path, legacy_status, candidate_status, diff_count FROM exchanges",
    )[0];
    assert_eq!(
        row[..],
        [
            json!(null),
            json!("GET"),
            json!("/employer/directory"),
            json!(200),
            json!(200),
            json!(0)
        ]
    );
    // Only the allowed parameter reaches the candidate; the legacy credential does not.
    assert_eq!(candidate.seen()[0].uri, "/employer/directory?page=1");
    assert_eq!(
        legacy.seen()[0].uri,
        "/employer/directory?page=1&api_key=legacy-secret"
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_legacy_body_arrives_byte_identical() {
    // Not JSON-pretty, with every byte value, so any re-encoding would show.
    let big: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: usize| (i * 7 % 251) as u8)
        .collect();
    let big = Bytes::from(big);
    let b = big.clone();
    let legacy = Upstream::start(move |_| {
        Reply::bytes(200, b.clone()).header("content-type", "application/octet-stream")
    })
    .await;
    let candidate = Upstream::start(|_| Reply::bytes(200, "small")).await;
    let sd = Shadowdiff::start(
        &legacy.url(),
        &candidate.url(),
        "[shadow]\nmax_body = \"1MiB\"\n",
    )
    .await;
    let got = get(&sd.url("/export")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), big.len());
    assert!(got.body == big, "body differs");
    sd.quiesce().await;
    // Over max_body: recorded as such, not compared.
    assert_eq!(sd.outcomes()[0].0, "too_large");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_candidate_does_not_slow_the_caller() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate =
        Upstream::start(|_| Reply::json(json!({"a": 1})).delay(Duration::from_secs(2))).await;
    let toml = "[candidate]\nbase_url = \"{candidate}\"\ntimeout = \"1s\"\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let t0 = Instant::now();
    let got = get(&sd.url("/slow")).await;
    let caller = t0.elapsed();
    assert_eq!(got.status, 200);
    assert!(
        caller < Duration::from_millis(500),
        "caller waited {caller:?}"
    );
    sd.quiesce().await;
    let o = sd.outcomes();
    assert_eq!(o[0].0, "candidate_timeout", "{o:?}");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_candidate_call_starts_before_legacy_answers() {
    // Legacy takes 600 ms, candidate 600 ms: run in parallel the exchange completes well before
    // the 1.2 s a sequential run would need, and the candidate saw the request while legacy was
    // still working.
    let legacy =
        Upstream::start(|_| Reply::json(json!({})).delay(Duration::from_millis(600))).await;
    let candidate =
        Upstream::start(|_| Reply::json(json!({})).delay(Duration::from_millis(600))).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    let client = client();
    let req = client.request(Request::get(sd.url("/p")).body(Full::default()).unwrap());
    let probe = async {
        // Poll (bounded) until the candidate has the request; legacy has not answered yet.
        for _ in 0..200 {
            if candidate.count() == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    };
    let (res, seen_early) = tokio::join!(req, probe);
    assert_eq!(res.unwrap().status(), 200);
    assert!(
        seen_early,
        "candidate did not receive the request while legacy was working"
    );
    sd.quiesce().await;
    assert_eq!(sd.outcomes()[0].0, "match");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_resets_or_sends_garbage_is_a_candidate_error() {
    let legacy = Upstream::json(json!({"ok": true})).await;
    for garbage in [false, true] {
        let cand = broken_upstream(garbage).await;
        let sd = Shadowdiff::start(&legacy.url(), &format!("http://{cand}"), "").await;
        let got = get(&sd.url("/x")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json(), json!({"ok": true}));
        sd.quiesce().await;
        let o = sd.outcomes();
        assert_eq!(o[0].0, "candidate_error", "garbage={garbage}: {o:?}");
        assert!(o[0].1.as_deref().is_some_and(|r| !r.is_empty()));
        sd.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_candidate_bodies_are_decoded_before_the_diff() {
    let legacy = Upstream::json(
        json!({"employees": [{"id": 1, "status": "active"}, {"id": 2, "status": "active"}]}),
    )
    .await;
    let cand_json =
        json!({"employees": [{"id": 1, "status": "active"}, {"id": 2, "status": "on_leave"}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(cand_json.to_string().as_bytes()).unwrap();
    let gz = Bytes::from(gz.finish().unwrap());
    let candidate = Upstream::start(move |_| {
        Reply::bytes(200, gz.clone())
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
    })
    .await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    get(&sd.url("/employees")).await;
    sd.quiesce().await;
    assert_eq!(sd.outcomes()[0].0, "diff");
    let diffs = sd.rows("SELECT pointer, field, kind, legacy, candidate FROM diffs");
    assert_eq!(
        diffs,
        vec![vec![
            json!("/employees/1/status"),
            json!("/employees/*/status"),
            json!("changed"),
            json!("\"active\""),
            json!("\"on_leave\"")
        ]]
    );
    // The per-field summary reports read.
    assert_eq!(
        sd.rows("SELECT route, field, kind, n FROM diff_fields"),
        vec![vec![
            json!(null),
            json!("/employees/*/status"),
            json!("changed"),
            json!(1)
        ]]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_mirrored_unless_a_route_opts_in() {
    let legacy = Upstream::json(json!({"created": true})).await;
    let candidate = Upstream::json(json!({"created": true})).await;
    let toml = r#"
[[routes]]
name = "create_note"
method = "POST"
path = "/notes"
mirror = true
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let post = |path: &str| {
        Request::post(sd.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"text\":\"hi\"}")))
            .unwrap()
    };
    let got = send(post("/employees")).await;
    assert_eq!(got.status, 200);
    sd.quiesce().await;
    assert_eq!(legacy.count(), 1);
    assert_eq!(
        legacy.seen()[0].body,
        Bytes::from_static(b"{\"text\":\"hi\"}")
    );
    assert_eq!(
        candidate.count(),
        0,
        "an unrouted POST reached the candidate"
    );
    assert!(sd.outcomes().is_empty());

    send(post("/notes")).await;
    sd.quiesce().await;
    assert_eq!(candidate.count(), 1);
    let seen = &candidate.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, Bytes::from_static(b"{\"text\":\"hi\"}"));
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        legacy.seen()[1].body,
        Bytes::from_static(b"{\"text\":\"hi\"}")
    );
    assert_eq!(sd.outcomes(), vec![("match".to_owned(), None)]);
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_token_never_reaches_the_candidate_nor_the_store() {
    let legacy = Upstream::start(|_| {
        Reply::json(json!({"a": 1}))
            .header("set-cookie", "session=LEGACY-COOKIE-VALUE")
            .header("x-trace", "t1")
    })
    .await;
    let candidate = Upstream::json(json!({"a": 2})).await;
    let toml = r#"
[candidate]
base_url = "{candidate}"
headers = { authorization = "Bearer CANDIDATE-KEY" }
forward_headers = ["accept"]
[store]
path = "store/shadowdiff.db"
bodies = "always"
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let req = Request::get(sd.url("/who?x=1"))
        .header("authorization", "Bearer LEGACY-SECRET-TOKEN")
        .header("cookie", "sid=LEGACY-SESSION")
        .header("accept", "application/json")
        .body(Full::default())
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 200);
    sd.quiesce().await;
    // Legacy gets the caller's credentials, the candidate only its own.
    assert_eq!(
        legacy.seen()[0].headers["authorization"],
        "Bearer LEGACY-SECRET-TOKEN"
    );
    let c = &candidate.seen()[0];
    assert_eq!(c.headers["authorization"], "Bearer CANDIDATE-KEY");
    assert_eq!(c.headers["accept"], "application/json");
    assert!(c.headers.get("cookie").is_none());
    for (k, v) in &c.headers {
        assert!(
            !v.as_bytes().windows(6).any(|w| w == b"LEGACY"),
            "{k} leaked to the candidate"
        );
    }
    let db = sd.db.clone();
    assert_eq!(sd.outcomes()[0].0, "diff");
    let (_, _dir) = sd.stop().await;
    let bytes = db_bytes(&db);
    assert!(!bytes.is_empty());
    for secret in [
        "LEGACY-SECRET-TOKEN",
        "LEGACY-SESSION",
        "LEGACY-COOKIE-VALUE",
        "CANDIDATE-KEY",
    ] {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{secret} is in the db file"
        );
    }
    // The stored headers are there, redacted.
    let h = query(&db, "SELECT headers FROM bodies WHERE side = 'legacy'");
    let h: serde_json::Value = serde_json::from_str(h[0][0].as_str().unwrap()).unwrap();
    assert_eq!(h["set-cookie"], "[redacted]");
    assert_eq!(h["x-trace"], "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_fields_are_absent_from_the_db_file() {
    let legacy = Upstream::json(
        json!({"people": [{"id": 1, "ssn": "111-22-3333", "dob": "1980-01-01", "name": "A"}]}),
    )
    .await;
    let candidate = Upstream::json(
        json!({"people": [{"id": 1, "ssn": "999-88-7777", "dob": "1981-02-02", "name": "B"}]}),
    )
    .await;
    let toml = r#"
[store]
path = "store/shadowdiff.db"
bodies = "always"
redact_fields = ["**/ssn", "**/dob"]
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    get(&sd.url("/people")).await;
    get(&sd.url("/people")).await;
    sd.quiesce().await;
    let diffs = sd.rows(
        "SELECT pointer, legacy, candidate FROM diffs WHERE exchange_id = 1 ORDER BY pointer",
    );
    assert_eq!(diffs.len(), 3, "{diffs:?}");
    // Bodies are kept redacted, and the same body text once.
    let bodies =
        sd.rows("SELECT side, body FROM exchange_bodies WHERE exchange_id = 1 ORDER BY side");
    let kept: serde_json::Value = serde_json::from_str(bodies[1][1].as_str().unwrap()).unwrap();
    assert_eq!(kept["people"][0]["ssn"], "[redacted]");
    assert_eq!(kept["people"][0]["name"], "A");
    // Two exchanges, each with its legacy and candidate documents and its request (a GET: no
    // body, no blob).
    assert_eq!(
        sd.rows("SELECT (SELECT count(*) FROM bodies), (SELECT count(*) FROM blobs)"),
        vec![vec![json!(6), json!(2)]]
    );
    assert_eq!(
        diffs[0],
        vec![
            json!("/people/0/dob"),
            json!("\"[redacted]\""),
            json!("\"[redacted]\"")
        ]
    );
    assert_eq!(
        diffs[1],
        vec![json!("/people/0/name"), json!("\"A\""), json!("\"B\"")]
    );
    let db = sd.db.clone();
    let (_, _dir) = sd.stop().await;
    let bytes = db_bytes(&db);
    assert!(contains(&bytes, b"[redacted]"));
    for secret in ["111-22-3333", "999-88-7777", "1980-01-01", "1981-02-02"] {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{secret} is in the db file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_429_pauses_mirroring() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::start(|_| {
        Reply::json(json!({"error": "slow down"}))
            .status(429)
            .header("retry-after", "60")
    })
    .await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    for _ in 0..3 {
        let got = get(&sd.url("/a")).await;
        assert_eq!(got.status, 200);
        sd.quiesce().await;
    }
    assert_eq!(
        candidate.count(),
        1,
        "the candidate was called during the backoff"
    );
    assert_eq!(
        sd.outcomes(),
        vec![
            (
                "candidate_rate_limited".to_owned(),
                Some("candidate answered 429".to_owned())
            ),
            ("skipped".to_owned(), Some("rate_limited".to_owned())),
            ("skipped".to_owned(), Some("rate_limited".to_owned())),
        ]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_429_is_passed_through_untouched() {
    let legacy = Upstream::start(|_| {
        Reply::json(json!({"error": "rate"}))
            .status(429)
            .header("retry-after", "5")
    })
    .await;
    let candidate = Upstream::json(json!({})).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    let got = get(&sd.url("/a")).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.headers["retry-after"], "5");
    assert_eq!(legacy.count(), 1, "a 429 must never be retried");
    sd.quiesce().await;
    assert_eq!(sd.outcomes()[0].0, "legacy_error");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_legacy_give_502_and_504_with_json() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let candidate = Upstream::json(json!({})).await;
    let sd = Shadowdiff::start(&format!("http://{dead}"), &candidate.url(), "").await;
    let got = get(&sd.url("/a")).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.json()["error"], "legacy_unreachable");
    assert!(got.json()["detail"].as_str().unwrap().contains("legacy"));
    sd.quiesce().await;
    assert_eq!(sd.outcomes()[0].0, "legacy_error");
    sd.stop().await;

    let slow = Upstream::start(|_| Reply::json(json!({})).delay(Duration::from_secs(3))).await;
    let toml = "[legacy]\nbase_url = \"{legacy}\"\ntimeout = \"300ms\"\n";
    let sd = Shadowdiff::start(&slow.url(), &candidate.url(), toml).await;
    let got = get(&sd.url("/a")).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["error"], "legacy_timeout");
    // And the proxy keeps serving.
    let got = get(&sd.url("/b")).await;
    assert_eq!(got.status, 504);
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_forwarded_as_a_proxy_should() {
    let legacy = Upstream::start(|_| {
        Reply::json(json!({}))
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
    })
    .await;
    let candidate = Upstream::json(json!({})).await;
    let base = format!("{}/v1/", legacy.url());
    let sd = Shadowdiff::start(&base, &candidate.url(), "").await;
    let req = Request::get(sd.url("/employees?q=a%20b"))
        .header("host", "app.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-custom", "kept")
        .body(Full::default())
        .unwrap();
    let got = send(req).await;
    let multi: Vec<_> = got.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(got.headers.get_all("set-cookie").iter().count(), 2);
    let seen = &legacy.seen()[0];
    assert_eq!(
        seen.uri, "/v1/employees?q=a%20b",
        "path prefix kept, query untouched"
    );
    assert_eq!(seen.headers["host"], legacy.addr.to_string());
    assert!(seen.headers.get("x-hop").is_none());
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_translate_paths_queries_and_accounts() {
    let legacy = Upstream::json(json!({"id": "7"})).await;
    let candidate = Upstream::json(json!({"id": "7"})).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("accounts.csv");
    let key = shadowdiff::translate::key_sha256_hex(b"Bearer acme-token");
    std::fs::write(
        &csv,
        format!("key_sha256,name,candidate_id\n{key},acme,cand-42\n"),
    )
    .unwrap();
    let toml = format!(
        r#"
[accounts]
key = "header:authorization"
file = "{}"

[[routes]]
name = "individual"
method = "GET"
path = "/employer/individual/{{id}}"
[routes.candidate]
path = "/unified/hris/employees/{{id}}"
query = {{ integrated_account_id = "{{account.candidate_id}}", expand = "{{query.expand}}" }}

[[routes]]
name = "company"
method = "GET"
path = "/employer/company"
"#,
        csv.display()
    );
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    let req = |auth: &str, q: &str| {
        Request::get(sd.url(&format!("/employer/individual/7{q}")))
            .header("authorization", auth)
            .body(Full::default())
            .unwrap()
    };
    send(req("Bearer acme-token", "?expand=manager")).await;
    // An account the accounts file does not know, on a route whose candidate request needs
    // its id: not mirrored (legacy's 401 against an answer to nobody would be noise).
    send(req("Bearer someone-else", "")).await;
    // A route that needs no account value mirrors it.
    send(
        Request::get(sd.url("/employer/company"))
            .header("authorization", "Bearer someone-else")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    sd.quiesce().await;
    let mut uris: Vec<String> = candidate.seen().iter().map(|s| s.uri.clone()).collect();
    uris.sort();
    assert_eq!(
        uris,
        [
            "/employer/company",
            // Parameters in name order.
            "/unified/hris/employees/7?expand=manager&integrated_account_id=cand-42",
        ]
    );
    let rows = sd.rows(
        "SELECT route, account, outcome, reason FROM exchanges ORDER BY account IS NULL, route",
    );
    assert_eq!(
        rows[0][..3],
        [json!("individual"), json!("acme"), json!("match")]
    );
    assert_eq!(
        rows[1][..3],
        [json!("company"), json!(null), json!("match")]
    );
    assert_eq!(
        rows[2][..3],
        [json!("individual"), json!(null), json!("skipped")]
    );
    let reason = rows[2][3].as_str().unwrap();
    assert!(reason.starts_with("unknown_account"), "{reason}");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_follow_the_unmatched_policy() {
    let legacy = Upstream::json(json!({})).await;
    let candidate = Upstream::json(json!({})).await;
    let toml = "[shadow]\nunmatched = \"skip\"\n[[routes]]\nname = \"d\"\npath = \"/d\"\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    get(&sd.url("/other")).await;
    get(&sd.url("/d")).await;
    sd.quiesce().await;
    assert_eq!(candidate.count(), 1);
    assert_eq!(candidate.seen()[0].uri, "/d");
    assert_eq!(
        sd.rows("SELECT route FROM exchanges"),
        vec![vec![json!("d")]]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_exchanges_are_skipped_as_overload() {
    let legacy = Upstream::json(json!({})).await;
    let candidate =
        Upstream::start(|_| Reply::json(json!({})).delay(Duration::from_millis(800))).await;
    let sd = Shadowdiff::start(
        &legacy.url(),
        &candidate.url(),
        "[shadow]\nmax_in_flight = 1\n",
    )
    .await;
    let first = sd.url("/1");
    let (a, b) = tokio::join!(get(&first), async {
        // Bounded poll until the first candidate call holds the only slot.
        for _ in 0..500 {
            if candidate.count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        get(&sd.url("/2")).await
    });
    assert_eq!((a.status, b.status), (200, 200));
    sd.quiesce().await;
    let mut o = sd.outcomes();
    o.sort();
    assert_eq!(
        o,
        vec![
            ("match".to_owned(), None),
            ("skipped".to_owned(), Some("overload".to_owned()))
        ]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rate_zero_mirrors_nothing() {
    let legacy = Upstream::json(json!({})).await;
    let candidate = Upstream::json(json!({})).await;
    let sd = Shadowdiff::start(
        &legacy.url(),
        &candidate.url(),
        "[shadow]\nsample_rate = 0.0\n",
    )
    .await;
    for _ in 0..5 {
        get(&sd.url("/a")).await;
    }
    sd.quiesce().await;
    assert_eq!((legacy.count(), candidate.count()), (5, 0));
    assert!(sd.outcomes().is_empty());
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_outcomes() {
    let legacy = Upstream::start(|s| {
        if s.uri.starts_with("/text") {
            Reply::bytes(200, "plain text")
        } else {
            Reply::json(json!({"a": 1}))
        }
    })
    .await;
    let candidate = Upstream::start(|s| match s.uri.as_str() {
        "/auth" => Reply::json(json!({"error": "revoked"})).status(401),
        "/forbidden" => Reply::json(json!({"error": "no"})).status(403),
        "/boom" => Reply::json(json!({"error": "boom"})).status(503),
        "/html" => Reply::bytes(200, "<html>oops</html>"),
        "/missing" => Reply::json(json!({"error": "nope"})).status(404),
        "/text" => Reply::bytes(200, "other text"),
        "/text-same" => Reply::bytes(200, "plain text"),
        _ => Reply::json(json!({"a": 1})),
    })
    .await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    for p in [
        "/auth",
        "/forbidden",
        "/boom",
        "/html",
        "/missing",
        "/text",
        "/text-same",
    ] {
        assert_eq!(get(&sd.url(p)).await.status, 200);
        sd.quiesce().await;
    }
    let o: Vec<String> = sd.outcomes().into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        o,
        [
            "candidate_auth_error",
            "candidate_auth_error",
            "candidate_error",
            "not_json",
            "diff",
            "diff",
            "match"
        ]
    );
    let missing = sd.rows("SELECT d.pointer, d.kind FROM diffs d JOIN exchanges e ON e.id = d.exchange_id WHERE e.path = '/missing' ORDER BY d.pointer");
    assert_eq!(missing[0], vec![json!("/a"), json!("missing")]);
    assert!(missing.contains(&vec![json!("@status"), json!("changed")]));
    let text = sd.rows("SELECT d.pointer, d.legacy, d.candidate FROM diffs d JOIN exchanges e ON e.id = d.exchange_id WHERE e.path = '/text'");
    // Text cannot be redacted field by field: only its length and hash are stored.
    assert_eq!(text.len(), 1);
    assert_eq!(text[0][0], json!(""));
    for v in &text[0][1..] {
        let v = v.as_str().unwrap();
        assert!(v.starts_with("\"non-JSON body: 10 bytes, xxh3 "), "{v}");
        assert!(!v.contains("text"), "{v}");
    }
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compared_headers_and_ignore_rules() {
    let legacy = Upstream::start(|_| {
        Reply::json(json!({"a": 1, "updated_at": "x", "paging": {"count": 1}}))
            .header("x-version", "1")
    })
    .await;
    let candidate = Upstream::start(|s| {
        // The same media type spelt another way on /d (no difference: JSON's charset is
        // utf-8 by default), another one on /other.
        let ct = if s.uri == "/d" {
            "Application/JSON; charset=\"UTF-8\""
        } else {
            "text/html; charset=utf-8"
        };
        Reply::bytes(
            200,
            json!({"a": 1, "updated_at": "y", "paging": {"count": 2}}).to_string(),
        )
        .header("x-version", "2")
        .header("content-type", ct)
    })
    .await;
    let toml = r#"
[diff]
ignore = ["**/updated_at"]
headers = ["content-type", "x-version"]
[[routes]]
name = "d"
path = "/d"
[routes.diff]
ignore = ["/paging/count"]
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    get(&sd.url("/d")).await;
    get(&sd.url("/other")).await;
    sd.quiesce().await;
    let d = sd.rows("SELECT e.path, d.pointer, d.kind FROM diffs d JOIN exchanges e ON e.id = d.exchange_id ORDER BY e.path, d.pointer");
    assert_eq!(
        d,
        vec![
            vec![json!("/d"), json!("@header/x-version"), json!("changed")],
            vec![json!("/other"), json!("/paging/count"), json!("changed")],
            vec![
                json!("/other"),
                json!("@header/content-type"),
                json!("changed")
            ],
            vec![
                json!("/other"),
                json!("@header/x-version"),
                json!("changed")
            ],
        ]
    );
    // The difference shows the values as sent.
    let v = sd.rows("SELECT legacy, candidate FROM diffs WHERE pointer = '@header/content-type'");
    assert_eq!(
        v,
        vec![vec![
            json!("\"application/json\""),
            json!("\"text/html; charset=utf-8\"")
        ]]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_callers_are_served() {
    let legacy = Upstream::json(json!({"h": 2})).await;
    let candidate = Upstream::json(json!({"h": 2})).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let res = client
        .request(Request::get(sd.url("/h2")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    sd.quiesce().await;
    assert_eq!(sd.outcomes()[0].0, "match");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_and_readiness() {
    let legacy = Upstream::json(json!({})).await;
    let candidate = Upstream::json(json!({})).await;
    let toml = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"adm1n\"\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let admin = sd.admin.unwrap();
    assert_eq!(get(&format!("http://{admin}/healthz")).await.status, 200);
    // Readiness needs no token (a probe carries none); the rest of the admin API does.
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);
    assert_eq!(get(&format!("http://{admin}/metrics")).await.status, 401);
    let req = Request::get(format!("http://{admin}/readyz"))
        .header("authorization", "Bearer adm1n")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.status, 200);
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rps_limits_candidate_calls() {
    let legacy = Upstream::json(json!({})).await;
    let candidate = Upstream::json(json!({})).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "[shadow]\nmax_rps = 1\n").await;
    // The bucket holds one call; the next ones within the same second are skipped.
    for _ in 0..3 {
        get(&sd.url("/a")).await;
    }
    sd.quiesce().await;
    assert_eq!(candidate.count(), 1);
    let mut o = sd.outcomes();
    o.sort();
    assert_eq!(o[0].0, "match");
    assert_eq!(o[1], ("skipped".to_owned(), Some("max_rps".to_owned())));
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_are_mirrored_and_compare_status_and_headers() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::start(|_| Reply::json(json!({"a": 1})).status(404)).await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    let got = send(Request::head(sd.url("/h")).body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200);
    assert!(got.body.is_empty());
    sd.quiesce().await;
    assert_eq!(candidate.seen()[0].method, "HEAD");
    assert_eq!(sd.outcomes()[0].0, "diff");
    assert_eq!(
        sd.rows("SELECT pointer FROM diffs"),
        vec![vec![json!("@status")]]
    );
    sd.stop().await;
}

/// `[diff.noise]`: legacy is called twice, the field that differs between its two answers is
/// learned as noise, shown as such and left out of parity; the other fields are classified as
/// systematic (every exchange) or sporadic (some), and `diff --format json` says so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_is_learned_from_a_second_legacy_call_and_fields_are_classified() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = std::sync::Arc::new(AtomicU64::new(1));
    let c = calls.clone();
    let legacy = Upstream::start(move |s| {
        let n = c.fetch_add(1, Ordering::Relaxed);
        if s.uri.starts_with("/b") {
            Reply::json(json!({"generated_at": n, "title": "x"}))
        } else {
            Reply::json(json!({"generated_at": n, "individuals": [{"id": "a", "dept": "x"}]}))
        }
    })
    .await;
    let candidate = Upstream::start(|s| {
        if s.uri.starts_with("/b") {
            Reply::json(json!({"generated_at": 0}))
        } else {
            let dept = if s.uri.contains("bad") { "y" } else { "x" };
            Reply::json(json!({"generated_at": 0, "individuals": [{"id": "a", "dept": dept}]}))
        }
    })
    .await;
    let toml = "[candidate]\nbase_url = \"{candidate}\"\nforward_query = [\"bad\"]\n\
                [diff.noise]\nsecondary_sample_rate = 1.0\nmin_count = 2\n\
                [[routes]]\nname = \"a\"\npath = \"/a\"\n\
                [[routes]]\nname = \"b\"\npath = \"/b\"\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    for q in ["", "", "?bad=1", "", "?bad=1", ""] {
        assert_eq!(get(&sd.url(&format!("/a{q}"))).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&sd.url("/b")).await.status, 200);
    }
    sd.quiesce().await;
    // Every mirrored GET reached legacy twice.
    assert_eq!(calls.load(Ordering::Relaxed), 1 + 18);
    assert_eq!(
        sd.rows("SELECT route, field, differed FROM noise_fields ORDER BY route"),
        vec![
            vec![json!("a"), json!("/generated_at"), json!(6)],
            vec![json!("b"), json!("/generated_at"), json!(3)],
        ]
    );
    assert_eq!(
        sd.rows("SELECT samples FROM noise_samples WHERE route = 'a'"),
        vec![vec![json!(6)]]
    );
    assert_eq!(
        sd.rows(
            "SELECT sum(n) FROM field_presence WHERE route = 'a' AND field = '/individuals/*/dept'"
        ),
        vec![vec![json!(6)]]
    );

    let conn = rusqlite::Connection::open(&sd.db).unwrap();
    let now = std::time::SystemTime::now();
    let f = shadowdiff::report::Filter {
        from: now - Duration::from_secs(3600),
        to: now + Duration::from_secs(1),
        route: None,
        account: None,
        mapping_version: None,
    };
    let r = shadowdiff::report::build(&conn, &f).unwrap();
    let a = r.routes.iter().find(|x| x.route == "a").unwrap();
    // 4 exchanges differ only at the noise field: they count as matched.
    assert_eq!((a.counts.compared, a.counts.matched), (6, 0));
    assert_eq!(a.counts.noise_only, 4);
    assert!(
        (a.counts.parity - 4.0 / 6.0).abs() < 1e-9,
        "{}",
        a.counts.parity
    );
    let class = |rt: &shadowdiff::report::RouteReport, field: &str| {
        let f = rt.fields.iter().find(|x| x.field == field).unwrap();
        (f.class.as_str(), f.present)
    };
    assert_eq!(class(a, "/generated_at"), ("noise", 6));
    assert_eq!(class(a, "/individuals/*/dept"), ("sporadic", 6));
    assert_eq!(a.noise[0].field, "/generated_at");
    assert_eq!((a.noise[0].differed, a.noise[0].samples), (6, 6));
    let b = r.routes.iter().find(|x| x.route == "b").unwrap();
    assert_eq!((b.counts.noise_only, b.counts.parity), (0, 0.0));
    assert_eq!(class(b, "/title"), ("systematic", 3));
    assert_eq!(r.totals.noise_only, 4);
    let md = shadowdiff::report::render::markdown(&r);
    assert!(md.contains("systematic"), "{md}");
    assert!(md.contains("noise learned"), "{md}");

    // The offline diff classifies from the same store.
    let dir = sd.dir.path().to_owned();
    std::fs::write(
        dir.join("l.json"),
        r#"{"generated_at": 1, "title": "x", "z": 1}"#,
    )
    .unwrap();
    std::fs::write(dir.join("c.json"), r#"{"generated_at": 2, "z": 2}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .current_dir(&dir)
        .args([
            "diff", "l.json", "c.json", "--route", "b", "--format", "json",
        ])
        .args(["--config", "shadowdiff.toml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let classes: Vec<(&str, &str)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["field"].as_str().unwrap(), d["class"].as_str().unwrap()))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("/generated_at", "noise"),
            ("/title", "systematic"),
            ("/z", "new")
        ]
    );
    assert_eq!(v["classification"]["compared"], 3);
    sd.stop().await;
}

/// Guards: a 10,000-deep JSON body is refused as `not_json` (never recursed into) and a 100 MB
/// candidate body as `too_large` (never buffered past `max_body`); the caller gets legacy's
/// bytes either way and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_huge_bodies_are_refused_not_crashed_on() {
    let deep = Bytes::from("[".repeat(10_000) + &"]".repeat(10_000));
    let huge = {
        let mut v = Vec::with_capacity(100 << 20);
        v.extend_from_slice(b"{\"x\":\"");
        v.resize((100 << 20) - 2, b'a');
        v.extend_from_slice(b"\"}");
        Bytes::from(v)
    };
    let d = deep.clone();
    let legacy = Upstream::start(move |s| {
        if s.uri.starts_with("/deep") {
            Reply::bytes(200, d.clone()).header("content-type", "application/json")
        } else {
            Reply::json(json!({"x": "a"}))
        }
    })
    .await;
    let d = deep.clone();
    let candidate = Upstream::start(move |s| {
        if s.uri.starts_with("/deep") {
            Reply::bytes(200, d.clone()).header("content-type", "application/json")
        } else {
            Reply::bytes(200, huge.clone()).header("content-type", "application/json")
        }
    })
    .await;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), "").await;
    let got = get(&sd.url("/deep")).await;
    assert_eq!((got.status, got.body.len()), (200, deep.len()));
    let got = get(&sd.url("/huge")).await;
    assert_eq!(got.json(), json!({"x": "a"}));
    sd.quiesce().await;
    // By path: the two comparisons run concurrently, so their ids may come in either order.
    let o = sd.rows("SELECT path, outcome, reason FROM exchanges ORDER BY path");
    assert_eq!(
        (o[0][0].as_str(), o[0][1].as_str()),
        (Some("/deep"), Some("not_json"))
    );
    assert!(
        o[0][2].as_str().unwrap().contains("deeper than 128"),
        "{o:?}"
    );
    assert_eq!(
        (o[1][0].as_str(), o[1][1].as_str()),
        (Some("/huge"), Some("too_large"))
    );
    assert!(
        o[1][2].as_str().unwrap().contains("candidate body over"),
        "{o:?}"
    );
    assert_eq!(get(&sd.url("/after")).await.status, 200);
    sd.stop().await;
}

/// A page per path: `{"id":"<path>","name":NAME}`, the same length on both sides.
fn page(name: &'static str) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |s: &Seen| Reply::json(json!({"id": s.uri, "name": name}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_kept_for_the_first_examples_of_each_difference_and_all_are_counted() {
    let legacy = Upstream::start(page("A")).await;
    let candidate = Upstream::start(page("B")).await;
    let toml = r#"
[store]
path = "store/shadowdiff.db"
body_examples = 2
body_sample = 0.0
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    // Distinct pages (compared afresh) and one page again and again (the memo answers).
    for i in 0..6 {
        get(&sd.url(&format!("/p/{i:03}"))).await;
    }
    for _ in 0..4 {
        get(&sd.url("/p/000")).await;
    }
    sd.quiesce().await;
    assert_eq!(
        sd.rows("SELECT count(*), sum(diff_count) FROM exchanges WHERE outcome = 'diff'"),
        vec![vec![json!(10), json!(10)]]
    );
    assert_eq!(
        sd.rows("SELECT field, kind, sum(n) FROM diff_fields GROUP BY field, kind"),
        vec![vec![json!("/name"), json!("changed"), json!(10)]],
        "every difference is counted, kept bodies or not"
    );
    assert_eq!(
        sd.rows("SELECT DISTINCT exchange_id FROM bodies ORDER BY exchange_id"),
        vec![vec![json!(1)], vec![json!(2)]],
        "the first two exchanges showing `name` changed keep their bodies, no other"
    );
    // Which pages they were depends on which comparisons ended first (each is recorded when it
    // ends): the kept text is one of the pages, as the candidate sent it.
    let kept =
        sd.rows("SELECT body FROM exchange_bodies WHERE exchange_id = 2 AND side = 'candidate'");
    let kept: serde_json::Value = serde_json::from_str(kept[0][0].as_str().unwrap()).unwrap();
    assert_eq!(kept["name"], "B");
    assert!(kept["id"].as_str().unwrap().starts_with("/p/00"), "{kept}");
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_bodies_stop_at_the_hourly_byte_budget() {
    let legacy = Upstream::start(page("A")).await;
    let candidate = Upstream::start(page("B")).await;
    // Each pair is 2 x 26 bytes: the budget holds three pairs, not four.
    let pair = 2 * json!({"id": "/p/000", "name": "A"}).to_string().len();
    assert_eq!(pair, 52);
    let toml = format!(
        r#"
[store]
path = "store/shadowdiff.db"
body_examples = 100
body_sample = 1.0
body_budget = "{}B"
"#,
        3 * pair + pair / 2
    );
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    for i in 0..8 {
        get(&sd.url(&format!("/p/{i:03}"))).await;
    }
    sd.quiesce().await;
    assert_eq!(
        sd.rows("SELECT count(*) FROM exchanges WHERE outcome = 'diff'"),
        vec![vec![json!(8)]]
    );
    assert_eq!(
        sd.rows("SELECT count(DISTINCT exchange_id), sum(length(body)) FROM exchange_bodies"),
        vec![vec![json!(3), json!(3 * pair)]]
    );
    sd.stop().await;
}

/// An upstream that sends its response head at once and its body `later`: a vendor whose
/// answer takes time to stream (HTTP/1.1, one response per connection).
async fn slow_body(body: &'static str, later: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.flush().await;
                tokio::time::sleep(later).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// Legacy's latency and the candidate's measure the same thing: the time to the whole answer.
/// Two identical vendors that send the head at once and the body 60 ms later are both at 60 ms
/// or more (legacy's stopped at its head: ~1 ms against the candidate's 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_candidate_latencies_both_run_to_the_last_byte() {
    let later = Duration::from_millis(60);
    let legacy = slow_body(r#"{"a": 1}"#, later).await;
    let candidate = slow_body(r#"{"a": 1}"#, later).await;
    let sd = Shadowdiff::start(&legacy, &candidate, "").await;
    for _ in 0..3 {
        assert_eq!(get(&sd.url("/x")).await.status, 200);
    }
    sd.quiesce().await;
    let rows = sd.rows("SELECT legacy_ms, candidate_ms, outcome FROM exchanges");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r[2], "match", "{rows:?}");
        let (l, c) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        assert!(l >= 60.0 && c >= 60.0, "legacy {l} ms, candidate {c} ms");
    }
}

/// A candidate base URL with user info (a careless config): the user info never goes out in the
/// candidate's `Host` header (it did: `host: u:pw@127.0.0.1:PORT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_info_of_a_base_url_never_goes_out_as_the_host() {
    let legacy = Upstream::json(json!({"ok": true})).await;
    let candidate = Upstream::json(json!({"ok": true})).await;
    let with_info = candidate.url().replace("http://", "http://u:pw@");
    let toml = format!("[candidate]\nbase_url = \"{with_info}\"\ntimeout = \"5s\"\n");
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    assert_eq!(get(&sd.url("/x")).await.status, 200);
    sd.quiesce().await;
    let seen = candidate.seen();
    assert_eq!(seen.len(), 1);
    let host = seen[0].headers["host"].to_str().unwrap();
    assert_eq!(host, candidate.url().trim_start_matches("http://"));
}
