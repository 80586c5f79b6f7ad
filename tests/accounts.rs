//! Accounts, with real upstreams: health (`ok` → `needs_reauth` after candidate 401/403 in a
//! row, back on a success, flapping), and vendors' rate limits per account: a candidate 429
//! pauses that account's shadow calls only (all of them with `rate_limit_scope = "global"`), and
//! `[shadow] reserve` leaves the last share of an account's candidate quota to the caller's own
//! traffic, under load.

mod support;

use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::*;

fn accounts(dir: &std::path::Path) -> std::path::PathBuf {
    accounts_csv(dir, &["acme", "globex"])
}

fn config(csv: &std::path::Path, shadow: &str) -> String {
    format!(
        r#"
[shadow]
{shadow}
[accounts]
key = "header:authorization"
file = "{}"

[[routes]]
name = "people"
method = "GET"
path = "/people"
[routes.candidate]
path = "/unified/people"
query = {{ account = "{{account.candidate_id}}" }}
"#,
        csv.display()
    )
}

fn req(sd: &Shadowdiff, account: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(sd.url("/people"))
        .header("authorization", format!("Bearer {account}-token"))
        .body(Full::default())
        .unwrap()
}

/// Candidate calls seen per account id.
fn calls(up: &Upstream, account: &str) -> usize {
    up.seen()
        .iter()
        .filter(|s| s.uri.ends_with(&format!("account=c-{account}")))
        .count()
}

/// (account, outcome, reason) of every exchange, in order.
fn outcomes(sd: &Shadowdiff) -> Vec<(String, String, String)> {
    sd.rows("SELECT account, outcome, coalesce(reason, '') FROM exchanges ORDER BY id")
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_429_pauses_that_account_only() {
    for (scope, globex_mirrored) in [("", true), ("rate_limit_scope = \"global\"", false)] {
        let legacy = Upstream::json(json!({"people": []})).await;
        let candidate = Upstream::start(|s| {
            if s.uri.ends_with("c-acme") {
                Reply::json(json!({"error": "slow down"}))
                    .status(429)
                    .header("retry-after", "60")
            } else {
                Reply::json(json!({"people": []}))
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let toml = config(&accounts(dir.path()), scope);
        let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
        send(req(&sd, "acme")).await;
        sd.quiesce().await;
        for _ in 0..3 {
            assert_eq!(send(req(&sd, "acme")).await.status, 200);
            assert_eq!(send(req(&sd, "globex")).await.status, 200);
        }
        sd.quiesce().await;
        assert_eq!(
            calls(&candidate, "acme"),
            1,
            "acme was called during its pause"
        );
        assert_eq!(
            calls(&candidate, "globex"),
            if globex_mirrored { 3 } else { 0 },
            "{scope}"
        );
        let o = outcomes(&sd);
        assert_eq!(o[0].1, "candidate_rate_limited");
        for (account, outcome, reason) in &o[1..] {
            if account == "acme" || !globex_mirrored {
                assert_eq!(
                    (outcome.as_str(), reason.as_str()),
                    ("skipped", "rate_limited")
                );
            } else {
                assert_eq!(outcome, "match");
            }
        }
        sd.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_keeps_shadow_calls_off_the_last_share_of_a_quota_under_load() {
    let legacy = Upstream::json(json!({"people": []})).await;
    // acme has 10 of 100 left (under the 20 % reserve), globex 90.
    let candidate = Upstream::start(|s| {
        let left = if s.uri.ends_with("c-acme") { 10 } else { 90 };
        Reply::json(json!({"people": []}))
            .header("ratelimit-policy", "\"default\";q=100;w=60")
            .header("ratelimit", &format!("\"default\";r={left};t=60"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&accounts(dir.path()), "reserve = 0.2");
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    // The first call of each account states its quota.
    for a in ["acme", "globex"] {
        send(req(&sd, a)).await;
        sd.quiesce().await;
    }
    // Then 40 concurrent requests of each.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let r = req(&sd, if i % 2 == 0 { "acme" } else { "globex" });
        tasks.push(tokio::spawn(async move { send(r).await.status }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            200,
            "the caller always gets legacy's answer"
        );
    }
    sd.quiesce().await;
    assert_eq!(
        calls(&candidate, "acme"),
        1,
        "acme's reserve was spent by shadow calls"
    );
    assert_eq!(calls(&candidate, "globex"), 41);
    let skipped: Vec<_> = outcomes(&sd)
        .into_iter()
        .filter(|(_, o, _)| o == "skipped")
        .collect();
    assert_eq!(skipped.len(), 40);
    assert!(skipped
        .iter()
        .all(|(a, _, r)| a == "acme" && r == "quota_reserve"));
    // Legacy was called for every request: the caller's traffic is never held back.
    assert_eq!(legacy.count(), 82);
    // The report says what shadow traffic spent, and held back.
    let summary = get(&format!(
        "http://{}/api/summary?since=1h",
        sd.admin.unwrap()
    ))
    .await
    .json();
    assert_eq!(
        summary["shadow_spend"],
        json!({"candidate_calls": 42, "held_back": {"quota_reserve": 40}})
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_needs_reauth_after_401s_in_a_row_and_recovers_on_a_success() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let legacy = Upstream::json(json!({"people": []})).await;
    // acme's candidate credentials are revoked until `fixed`.
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let candidate = Upstream::start(move |s| {
        if s.uri.ends_with("c-acme") && !f.load(Ordering::SeqCst) {
            Reply::json(json!({"error": "invalid token"})).status(401)
        } else {
            Reply::json(json!({"people": []}))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml =
        config(&accounts(dir.path()), "").replace("[accounts]\n", "[accounts]\nreauth_after = 3\n");
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    let admin = format!("http://{}", sd.admin.unwrap());
    let state = |sd: &Shadowdiff| {
        sd.rows("SELECT state, consecutive FROM account_health WHERE account = 'acme'")
            .first()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
    };
    // Two 401s: counted, still ok; globex's successes write nothing.
    for _ in 0..2 {
        send(req(&sd, "acme")).await;
        send(req(&sd, "globex")).await;
        sd.quiesce().await;
    }
    assert_eq!(state(&sd), Some(("ok".to_owned(), 2)));
    assert!(sd
        .rows("SELECT 1 FROM account_health WHERE account = 'globex'")
        .is_empty());
    // The third: needs_reauth, in the API, the report and the metrics.
    send(req(&sd, "acme")).await;
    sd.quiesce().await;
    assert_eq!(state(&sd), Some(("needs_reauth".to_owned(), 3)));
    let api = get(&format!("{admin}/api/accounts?since=1h")).await.json();
    assert_eq!(api["needs_reauth"], json!(["acme"]), "{api}");
    let acme = api["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "acme")
        .unwrap();
    assert_eq!(acme["state"], json!("needs_reauth"));
    assert!(acme["health"]["last_error"]
        .as_str()
        .unwrap()
        .contains("401"));
    let metrics = String::from_utf8(get(&format!("{admin}/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("shadowdiff_accounts{state=\"needs_reauth\"} 1"),
        "{metrics}"
    );
    // The credentials are fixed: one success and it is ok again.
    fixed.store(true, Ordering::SeqCst);
    send(req(&sd, "acme")).await;
    sd.quiesce().await;
    assert_eq!(state(&sd), Some(("ok".to_owned(), 0)));
    // Flapping: 401, 401, success, 401, 401 never reaches three in a row.
    fixed.store(false, Ordering::SeqCst);
    for ok in [false, false, true, false, false] {
        fixed.store(ok, Ordering::SeqCst);
        send(req(&sd, "acme")).await;
        sd.quiesce().await;
    }
    assert_eq!(state(&sd), Some(("ok".to_owned(), 2)));
    sd.stop().await;
}
