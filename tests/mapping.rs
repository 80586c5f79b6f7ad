//! Response mappings end to end: real mapping files, fake vendors on 127.0.0.1:0, the real
//! server in-process with its mapping worker processes (the built `shadowdiff` binary).

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const EXAMPLE: &str = "config/examples/finch-to-unified";

fn token(account: &str) -> String {
    format!("Bearer finch-token-{account}")
}

async fn get_as(url: &str, account: &str) -> Got {
    send(
        Request::get(url)
            .header("authorization", token(account))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// The example config with its URLs, listeners and store pointed at this test.
fn example_toml(legacy: &str, candidate: &str) -> String {
    let text = std::fs::read_to_string(Path::new(EXAMPLE).join("shadowdiff.toml")).unwrap();
    text.replace("${SHADOWDIFF_LISTEN:-127.0.0.1:8080}", "127.0.0.1:0")
        .replace("${SHADOWDIFF_ADMIN:-127.0.0.1:9090}", "127.0.0.1:0")
        .replace("${LEGACY_URL:-https://api.tryfinch.example}", legacy)
        .replace("${CANDIDATE_URL:-https://api.unified.example}", candidate)
        .replace("${SHADOWDIFF_DB:-data/finch-to-unified.db}", "store/x.db")
}

/// shadowdiff running the example config, with its mapping files, against these vendors.
async fn start_example(legacy: &Upstream, candidate: &Upstream) -> Shadowdiff {
    let toml = example_toml(&legacy.url(), &candidate.url());
    Shadowdiff::start_with_files(
        &legacy.url(),
        &candidate.url(),
        &toml,
        Some(Path::new(EXAMPLE)),
    )
    .await
}

/// A Finch-style legacy API: Acme's connection reports departments in upper case (with
/// `upper_for_all`, every account's does).
async fn finch(upper_for_all: bool) -> Upstream {
    Upstream::start(move |s| {
        let acme = upper_for_all
            || s.headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes().ends_with(b"acme"));
        if s.uri.starts_with("/employer/company") {
            return Reply::json(json!({"id": "co-77", "legal_name": "Acme Corp", "ein": "12-3456789",
                "locations": [{"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}]}));
        }
        let dept = if acme { "ENGINEERING" } else { "Engineering" };
        Reply::json(json!({
            "individuals": [
                {"id": "fin-001", "first_name": "Ada", "middle_name": null, "last_name": "Lovelace",
                 "manager": null, "department": {"name": dept}, "is_active": true},
                {"id": "fin-002", "first_name": "Grace", "middle_name": "Brewster", "last_name": "Hopper",
                 "manager": {"id": "fin-001"}, "department": {"name": dept}, "is_active": false}
            ],
            "paging": {"count": 2, "offset": 0}
        }))
    })
    .await
}

/// The unified API: its own schema, the same people for every account.
async fn unified() -> Upstream {
    Upstream::start(|s| {
        if s.uri.starts_with("/hris/v1/companies") {
            return Reply::json(json!({"results": [{"id": "c-1", "remote_id": "co-77", "legal_name": "Acme Corp",
                "eins": ["12-3456789"],
                "locations": [{"street_1": "1 Main St", "city": "Springfield", "zip_code": "12345", "country": "US"}]}]}));
        }
        Reply::json(json!({"next": null, "results": [
            {"id": "u-1", "remote_id": "fin-001", "first_name": "Ada", "last_name": "Lovelace",
             "manager": null, "team": "Engineering", "employment_status": "ACTIVE"},
            {"id": "u-2", "remote_id": "fin-002", "first_name": "Grace", "middle_name": "Brewster",
             "last_name": "Hopper", "manager": "fin-001", "team": "Engineering", "employment_status": "INACTIVE"}
        ]}))
    })
    .await
}

/// The example of the README (`config/examples/finch-to-unified`), run as it is: base JSONata
/// mapping + production override for every account, Acme's override for Acme only, a jq mapping
/// for the company route. Every exchange matches once mapped, and each records its chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finch_to_unified_example_maps_every_route_and_account() {
    let (legacy, candidate) = (finch(false).await, unified().await);
    let sd = start_example(&legacy, &candidate).await;
    for account in ["acme", "globex"] {
        let got = get_as(&sd.url("/employer/directory?limit=50"), account).await;
        assert_eq!(got.status, 200);
        // The caller gets legacy's bytes, never the mapped candidate.
        assert_eq!(got.json()["individuals"][0]["id"], "fin-001");
    }
    assert_eq!(
        get_as(&sd.url("/employer/company"), "acme").await.status,
        200
    );
    sd.quiesce().await;
    let rows = sd
        .rows("SELECT route, account, outcome, reason, mapping_version FROM exchanges ORDER BY id");
    for r in &rows {
        assert_eq!(r[2], json!("match"), "{rows:?}");
    }
    let version = |i: usize| rows[i][4].as_str().unwrap().to_owned();
    // Acme's chain has one more level than Globex's: another version.
    assert_ne!(version(0), version(1));
    assert_eq!(version(0).len(), 12);
    assert_ne!(version(2), version(0));
    // The candidate request was translated (path, account id, page size).
    let seen: Vec<String> = candidate.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        seen.contains(&"/hris/v1/employees?account_id=ia_acme_01&page_size=50".to_owned()),
        "{seen:?}"
    );
    sd.stop().await;
}

/// Without Acme's override, Globex's upper-case departments would differ: the override applies
/// to its own account only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_override_is_seen_by_its_account_only() {
    let legacy = finch(true).await;
    let candidate = unified().await;
    let sd = start_example(&legacy, &candidate).await;
    for account in ["acme", "globex"] {
        get_as(&sd.url("/employer/directory"), account).await;
    }
    sd.quiesce().await;
    let diffs = sd.rows(
        "SELECT e.account, d.pointer, d.legacy, d.candidate FROM diffs d JOIN exchanges e ON e.id = d.exchange_id
         WHERE d.pointer = '/individuals/0/department/name' ORDER BY e.account",
    );
    assert!(
        diffs.iter().all(|r| r[0] == json!("globex")),
        "only Globex differs at the department: {diffs:?}"
    );
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0][2], json!("\"ENGINEERING\""));
    assert_eq!(diffs[0][3], json!("\"Engineering\""));
    sd.stop().await;
}

/// A mapping that loops, overflows the stack of its worker, returns nothing or builds a document
/// too deep to compare: outcome `mapping_error` with the reason, the caller unaffected, and the
/// next exchange mapped by a fresh worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_mappings_are_mapping_errors_and_never_stop_the_proxy() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let route = |name: &str, lang: &str, expr: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\n[routes.candidate]\nmapping_lang = \"{lang}\"\nmapping_expr = '''{expr}'''\n"
        )
    };
    let toml = [
        // A worker per route: this test is about failures, not about queueing for workers. The
        // budget leaves the overflowing worker time to fill its 256 MiB stack and crash even on a
        // busy 2-core machine (with 300 ms, a CI run once saw it reported as over budget instead).
        "[mappings]\ntimeout = \"2s\"\nworkers = 6\n".to_owned(),
        route("endless", "jq", "def f: f; f"),
        route("overflow", "jq", "def f: 1 + f; f"),
        route("nothing", "jsonata", "nothing.here"),
        route("deep", "jq", "reduce range(1000) as $i (.; [.])"),
        route("generator", "jq", "repeat(.)"),
        route("ok", "jsonata", "$"),
    ]
    .concat();
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &toml).await;
    for name in ["endless", "overflow", "nothing", "deep", "generator", "ok"] {
        let got = get(&sd.url(&format!("/{name}"))).await;
        assert_eq!((got.status, got.json()), (200, json!({"a": 1})), "{name}");
    }
    sd.quiesce().await;
    // In the order of the routes above (they finish in another order).
    let o: Vec<(String, Option<String>)> =
        ["endless", "overflow", "nothing", "deep", "generator", "ok"]
            .iter()
            .map(|name| {
                let r = &sd.rows(&format!(
                    "SELECT outcome, reason FROM exchanges WHERE route = '{name}'"
                ))[0];
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_str().map(str::to_owned),
                )
            })
            .collect();
    let reason = |i: usize| o[i].1.clone().unwrap_or_default();
    assert!(o[..5].iter().all(|(x, _)| x == "mapping_error"), "{o:?}");
    assert!(reason(0).contains("time budget"), "{o:?}");
    assert!(reason(1).contains("crashed"), "{o:?}");
    assert!(reason(2).contains("returned nothing"), "{o:?}");
    assert!(reason(3).contains("recursion limit"), "{o:?}");
    assert!(reason(4).contains("more than one output"), "{o:?}");
    assert_eq!(o[5].0, "match", "{o:?}");
    // The metric counts them per route.
    let metrics = get(&format!("http://{}/metrics", sd.admin.unwrap())).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("shadowdiff_mapping_errors_total{route=\"endless\"} 1")),
        "{text}"
    );
    sd.stop().await;
}

async fn reload(sd: &Shadowdiff) -> (u16, Value) {
    let got = send(
        Request::post(format!("http://{}/api/reload", sd.admin.unwrap()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    (got.status, got.json())
}

/// `POST /api/reload`: a broken mapping is refused with its file and position, and the running
/// mapping stays; a fixed one is put in place, and its version shows in the store and reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_mapping_keeps_the_running_one() {
    let legacy = Upstream::json(json!({"name": "ann"})).await;
    let candidate = Upstream::json(json!({"full_name": "ann"})).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    let mapping = dir.path().join("m/people.jsonata");
    std::fs::write(&mapping, r#"{"name": full_name}"#).unwrap();
    let toml = "[[routes]]\nname = \"people\"\npath = \"/people\"\n[routes.candidate]\nmapping = \"m/people.jsonata\"\n";
    let sd =
        Shadowdiff::start_with_files(&legacy.url(), &candidate.url(), toml, Some(dir.path())).await;
    let live = sd.dir.path().join("m/people.jsonata");
    get(&sd.url("/people")).await;
    sd.quiesce().await;

    std::fs::write(&live, "{\"name\": full_name +* 1}").unwrap();
    let (status, body) = reload(&sd).await;
    assert_eq!(status, 400, "{body}");
    let err = body["error"].as_str().unwrap();
    assert!(
        err.contains("people.jsonata") && err.contains("line 1"),
        "{err}"
    );
    get(&sd.url("/people")).await;
    sd.quiesce().await;

    std::fs::write(&live, r#"{"name": $uppercase(full_name)}"#).unwrap();
    let (status, body) = reload(&sd).await;
    assert_eq!(status, 200, "{body}");
    get(&sd.url("/people")).await;
    sd.quiesce().await;

    let rows = sd.rows("SELECT outcome, mapping_version FROM exchanges ORDER BY id");
    assert_eq!(rows[0][0], json!("match"));
    // The refused reload changed nothing: same outcome, same version.
    assert_eq!(rows[1], rows[0]);
    // The new mapping: another version, and its difference.
    assert_eq!(rows[2][0], json!("diff"));
    assert_ne!(rows[2][1], rows[0][1]);

    // Parity since the mapping change: only the exchange compared with the new version.
    let conn = rusqlite::Connection::open(&sd.db).unwrap();
    let now = std::time::SystemTime::now();
    let mut f = shadowdiff::report::Filter {
        from: now - Duration::from_secs(3600),
        to: now + Duration::from_secs(1),
        route: None,
        account: None,
        mapping_version: rows[2][1].as_str().map(str::to_owned),
    };
    let r = shadowdiff::report::build(&conn, &f).unwrap();
    assert_eq!((r.totals.compared, r.totals.matched), (1, 0));
    f.mapping_version = None;
    let r = shadowdiff::report::build(&conn, &f).unwrap();
    assert_eq!(r.totals.compared, 3);
    let versions: Vec<&str> = r.routes[0]
        .mapping_versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(
        versions,
        [rows[0][1].as_str().unwrap(), rows[2][1].as_str().unwrap()]
    );
    // A setting read at start-up cannot be reloaded: refused, and it says which.
    let cfg = sd.dir.path().join("shadowdiff.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("drain_timeout = \"5s\"", "drain_timeout = \"6s\""),
    )
    .unwrap();
    let (status, body) = reload(&sd).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("drain_timeout"),
        "{body}"
    );
    sd.stop().await;
}
