//! The admin listener after real traffic: /metrics, the JSON API, the dashboard (in headless
//! Chromium too) and the token. One test: the metrics recorder is process-wide.

mod support;

use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::*;

async fn admin_get(admin: std::net::SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut b = Request::get(format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(b.body(Full::default()).unwrap()).await
}

/// The value of the exposition line for `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_dashboard_and_api_after_traffic() {
    let legacy = Upstream::json(json!({"individuals": [{"id": 1, "status": "active"}]})).await;
    let candidate = Upstream::json(json!({"individuals": [{"id": 1, "status": "on_leave"}]})).await;
    let toml = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n[[routes]]\nname = \"people\"\nmethod = \"GET\"\npath = \"/people\"\n";
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    let admin = sd.admin.unwrap();
    for _ in 0..3 {
        assert_eq!(get(&sd.url("/people")).await.status, 200);
    }
    let post = Request::post(sd.url("/people"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(post).await.status, 200);
    sd.quiesce().await;

    // The token guards everything but /healthz and /readyz (probes carry no token; readiness
    // shows the store's error text only with it).
    for p in ["/metrics", "/", "/api/summary", "/api/exchanges"] {
        assert_eq!(
            admin_get(admin, p, None).await.status,
            401,
            "{p} without the token"
        );
    }
    assert_eq!(admin_get(admin, "/healthz", None).await.status, 200);
    assert_eq!(admin_get(admin, "/readyz", None).await.status, 200);

    // Metrics: names, labels, counts.
    let m = admin_get(admin, "/metrics", Some("s3cret")).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(&text, "shadowdiff_build_info", &[version.as_str()]),
        Some(1.0),
        "{text}"
    );
    let req = "shadowdiff_requests_total";
    assert_eq!(
        sample(&text, req, &["route=\"people\"", "outcome=\"diff\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            req,
            &["route=\"(unmatched)\"", "outcome=\"not_mirrored\""]
        ),
        Some(1.0),
        "{text}"
    );
    let lat = "shadowdiff_upstream_duration_seconds_count";
    assert_eq!(
        sample(&text, lat, &["upstream=\"legacy\"", "route=\"people\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, lat, &["upstream=\"candidate\"", "route=\"people\""]),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(&text, "shadowdiff_store_write_duration_seconds_count", &[])
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "shadowdiff_store_queue_depth", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shadowdiff_mapping_errors_total",
            &["route=\"people\""]
        ),
        Some(0.0),
        "{text}"
    );
    // Every counter is there at zero before its first event; process metrics; the upstream
    // buckets reach the configured timeout (5 s here; `telemetry::buckets_to` past 10 s).
    for (name, labels) in [
        (
            "shadowdiff_requests_total",
            &["route=\"people\"", "outcome=\"candidate_timeout\""][..],
        ),
        ("shadowdiff_fallbacks_total", &["reason=\"deadline\""][..]),
        (
            "shadowdiff_shadow_dropped_total",
            &["reason=\"quota_reserve\""][..],
        ),
        (
            "shadowdiff_webhook_deliveries_total",
            &["outcome=\"dead\""][..],
        ),
        ("shadowdiff_store_lost_total", &[][..]),
        (
            "shadowdiff_served_total",
            &["served_by=\"candidate\"", "phase=\"canary\""][..],
        ),
    ] {
        assert_eq!(
            sample(&text, name, labels),
            Some(0.0),
            "{name} {labels:?}: {text}"
        );
    }
    assert!(
        sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "process_cpu_seconds_total", &[]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "process_open_fds", &[]).is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shadowdiff_upstream_duration_seconds_bucket",
            &["upstream=\"candidate\"", "route=\"people\"", "le=\"10\""]
        ),
        Some(3.0),
        "{text}"
    );
    // Bounded labels: no raw path, account or field name.
    assert!(
        !text.contains("/people") && !text.contains("individuals"),
        "{text}"
    );

    // The JSON API.
    let s = admin_get(admin, "/api/summary?since=1h", Some("s3cret"))
        .await
        .json();
    assert_eq!(s["totals"]["exchanges"], 3);
    assert_eq!(s["routes"][0]["route"], "people");
    assert_eq!(
        s["routes"][0]["fields"][0]["field"],
        "/individuals/*/status"
    );
    let list = admin_get(admin, "/api/exchanges?outcome=diff", Some("s3cret"))
        .await
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let id = list[0]["id"].as_i64().unwrap();
    let e = admin_get(admin, &format!("/api/exchanges/{id}"), Some("s3cret"))
        .await
        .json();
    assert_eq!(e["differences"][0]["pointer"], "/individuals/0/status");
    assert_eq!(e["differences"][0]["candidate"], "on_leave");
    assert_eq!(
        admin_get(admin, "/api/exchanges/999999", Some("s3cret"))
            .await
            .status,
        404
    );

    // Compressed for a client that asks (tower-http on the admin listener), and the same
    // document once decompressed.
    let plain = admin_get(admin, "/api/summary?since=1h", Some("s3cret")).await;
    let gz = send(
        Request::get(format!("http://{admin}/api/summary?since=1h"))
            .header("authorization", "Bearer s3cret")
            .header("accept-encoding", "gzip")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(gz.status, 200);
    assert_eq!(
        gz.headers.get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    assert!(gz.body.len() < plain.body.len(), "not compressed");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
        .unwrap();
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&text).unwrap(),
        serde_json::from_slice(&plain.body).unwrap(),
    );
    assert_eq!(a["totals"], b["totals"]);

    // The dashboard, server-rendered.
    let page = admin_get(admin, "/", Some("s3cret")).await;
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(
        html.contains("people") && html.contains("0.00%") && html.contains("/individuals/*/status")
    );

    // And in a browser: loads, shows the figures, and its script refreshes them from the API.
    let url = format!("http://{admin}/?token=s3cret");
    let (dom, png) =
        tokio::task::spawn_blocking(move || chromium(&url, "dashboard", "1200,1000", 6000))
            .await
            .unwrap();
    assert!(
        dom.contains("class=\"route\"") && dom.contains("people"),
        "route row missing"
    );
    assert!(dom.contains("0.00%"), "parity missing");
    assert!(
        dom.contains("/individuals/0/status") && dom.contains("on_leave"),
        "field difference missing"
    );
    assert!(
        dom.contains("updated "),
        "the script did not refresh from the API: {}",
        &dom[dom.len().saturating_sub(600)..]
    );
    assert!(std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0) > 10_000);
    sd.stop().await;
}
