//! Webhooks with a real receiver on 127.0.0.1: signed, retried with backoff after failures,
//! exactly one accepted delivery per event, in order; a restart delivers what was left; an
//! endpoint that never accepts dead-letters; `webhook test`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "s3cret-s3cret-s3cret";

/// A receiver that checks every signature, fails the first `fail_first` requests (503) and
/// while `refuse` is set, and keeps the events it accepted.
struct Receiver {
    up: Upstream,
    accepted: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let refuse = Arc::new(AtomicBool::new(false));
    let (a, n, r) = (accepted.clone(), requests.clone(), refuse.clone());
    let up = Upstream::start_unlogged(move |s| {
        let sig = s.headers["shadowdiff-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        let t: u64 = sig
            .strip_prefix("t=")
            .and_then(|x| x.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        let body = std::str::from_utf8(&s.body).unwrap();
        assert_eq!(
            sig,
            shadowdiff::webhook::signature(SECRET, t, body),
            "a bad signature"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(t) < 300, "outside the replay window");
        let i = n.fetch_add(1, Ordering::SeqCst);
        if i < fail_first || r.load(Ordering::SeqCst) {
            return Reply::bytes(503, "busy");
        }
        a.lock()
            .unwrap()
            .push(serde_json::from_str::<Value>(body).unwrap());
        Reply::bytes(200, "ok")
    })
    .await;
    Receiver {
        up,
        accepted,
        requests,
        refuse,
    }
}

fn accounts(dir: &std::path::Path) -> std::path::PathBuf {
    accounts_csv(dir, &["acme", "globex"])
}

fn config(dir: &std::path::Path, hooks: &str) -> String {
    format!(
        r#"
[store]
path = "{}"
[accounts]
key = "header:authorization"
file = "{}"
reauth_after = 2

[[routes]]
name = "people"
method = "GET"
path = "/people"
[routes.candidate]
path = "/unified/people"
query = {{ account = "{{account.candidate_id}}" }}
{hooks}
"#,
        dir.join("store.db").display(),
        accounts(dir).display()
    )
}

fn hook(name: &str, url: &str, events: &str, max_attempts: u32) -> String {
    format!(
        "\n[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [{events}]\nsecret = \"{SECRET}\"\nretry_base = \"20ms\"\nmax_attempts = {max_attempts}\ntimeout = \"2s\"\n"
    )
}

fn req(sd: &Shadowdiff, account: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(sd.url("/people"))
        .header("authorization", format!("Bearer {account}-token"))
        .body(Full::default())
        .unwrap()
}

/// Polls (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// A candidate whose answers to acme are 401 while `revoked`.
async fn candidate(revoked: Arc<AtomicBool>) -> Upstream {
    Upstream::start(move |s| {
        if s.uri.ends_with("c-acme") && revoked.load(Ordering::SeqCst) {
            Reply::json(json!({"error": "invalid token"})).status(401)
        } else {
            Reply::json(json!({"people": []}))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_and_accepted_once_in_order() {
    let rx = receiver(2).await;
    let legacy = Upstream::json(json!({"people": []})).await;
    let revoked = Arc::new(AtomicBool::new(true));
    let cand = candidate(revoked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let events = "\"account.needs_reauth\", \"account.recovered\", \"rollout.changed\"";
    let toml = config(dir.path(), &hook("ops", &rx.up.url(), events, 20));
    let sd = Shadowdiff::start(&legacy.url(), &cand.url(), &toml).await;
    // Two 401s in a row: needs_reauth. The credentials come back: recovered.
    for _ in 0..2 {
        send(req(&sd, "acme")).await;
        sd.quiesce().await;
    }
    revoked.store(false, Ordering::SeqCst);
    send(req(&sd, "acme")).await;
    send(req(&sd, "globex")).await;
    sd.quiesce().await;
    // A change of phase.
    let admin = format!("http://{}", sd.admin.unwrap());
    let res = send(
        Request::post(format!("{admin}/api/rollout"))
            .body(Full::new(bytes::Bytes::from(
                r#"{"phase": "canary", "reason": "test"}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    until("three events accepted", || {
        rx.accepted.lock().unwrap().len() >= 3
    })
    .await;
    let accepted = rx.accepted.lock().unwrap().clone();
    let kinds: Vec<&str> = accepted
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "account.needs_reauth",
            "account.recovered",
            "rollout.changed"
        ],
        "in order"
    );
    assert_eq!(accepted[0]["data"]["account"], "acme");
    assert_eq!(accepted[0]["data"]["to"], "needs_reauth");
    assert!(accepted[0]["data"]["last_error"]
        .as_str()
        .unwrap()
        .contains("401"));
    assert_eq!(accepted[1]["data"]["to"], "ok");
    assert_eq!(accepted[2]["data"]["to"], "canary");
    // Every event once: the two failed attempts were tried again, nothing twice.
    let mut ids: Vec<&str> = accepted.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(rx.requests.load(Ordering::SeqCst), 5);
    let status = get(&format!("{admin}/api/webhooks")).await.json();
    assert_eq!(
        status["endpoints"],
        json!([{"endpoint": "ops", "pending": 0, "delivered": 3, "dead": 0}])
    );
    sd.stop().await;
    // `webhook test` from the command line, against the same receiver.
    let cfg = dir.path().join("sd.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(["webhook", "test", "ops", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("answered 200"));
    assert_eq!(
        rx.accepted.lock().unwrap().last().unwrap()["event"],
        "webhook.test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_what_was_left_and_a_dead_endpoint_dead_letters() {
    let rx = receiver(0).await;
    rx.refuse.store(true, Ordering::SeqCst);
    let never = receiver(usize::MAX).await;
    let legacy = Upstream::json(json!({"people": []})).await;
    let revoked = Arc::new(AtomicBool::new(true));
    let cand = candidate(revoked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(
        dir.path(),
        &(hook("ops", &rx.up.url(), "\"account.needs_reauth\"", 1000)
            + &hook("broken", &never.up.url(), "\"account.needs_reauth\"", 2)),
    );
    let sd = Shadowdiff::start(&legacy.url(), &cand.url(), &toml).await;
    for _ in 0..2 {
        send(req(&sd, "acme")).await;
        sd.quiesce().await;
    }
    let admin = format!("http://{}", sd.admin.unwrap());
    // The broken endpoint's delivery dies after its two attempts; ops keeps being refused.
    for _ in 0..500 {
        let s = get(&format!("{admin}/api/webhooks")).await.json();
        if s["dead"].as_array().is_some_and(|d| !d.is_empty())
            && rx.requests.load(Ordering::SeqCst) > 0
        {
            let dead = &s["dead"][0];
            assert_eq!(dead["endpoint"], "broken");
            assert_eq!(dead["event"], "account.needs_reauth");
            assert_eq!(dead["attempts"], 2);
            assert!(dead["last_error"].as_str().unwrap().contains("503"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(never.requests.load(Ordering::SeqCst), 2);
    sd.stop().await;
    assert!(rx.accepted.lock().unwrap().is_empty());
    // The endpoint is back, and so is the proxy: what was left is delivered, once.
    rx.refuse.store(false, Ordering::SeqCst);
    let sd = Shadowdiff::start(&legacy.url(), &cand.url(), &toml).await;
    until("delivered after the restart", || {
        !rx.accepted.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = rx.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["event"], "account.needs_reauth");
    assert_eq!(
        never.requests.load(Ordering::SeqCst),
        2,
        "a dead delivery is not tried again"
    );
    sd.stop().await;
}
