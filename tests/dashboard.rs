//! The dashboard as a workbench, after real traffic through the proxy: sign-in (a form and an
//! `HttpOnly` cookie, no token in pages or addresses), the pages route → field → exchange with
//! addresses of their own, the filters, the accounts view, the gates, the noise toggle; then the
//! same walk in headless Chromium (driven over the DevTools protocol by
//! `tests/js/dashboard-walk.js`), whose screenshots are kept in `target/screenshots/`.

mod support;

use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::*;

const TOKEN: &str = "s3cret-admin-token";

fn config(csv: &std::path::Path) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[accounts]
key = "header:authorization"
file = "{}"
[store]
path = "store/shadowdiff.db"
# Every differing exchange's bodies: the walk opens whichever example is newest.
body_sample = 1.0
[gate.shadow]
min_parity = 0.99
[gate.canary]
min_compared = 1
[[routes]]
name = "people"
method = "GET"
path = "/people"
[routes.candidate]
path = "/unified/people"
query = {{ account = "{{account.candidate_id}}" }}
[[routes]]
name = "company"
method = "GET"
path = "/company"
"#,
        csv.display()
    )
}

async fn fetch(
    admin: std::net::SocketAddr,
    path: &str,
    auth: &[(&str, String)],
    html: bool,
) -> Got {
    let mut b = Request::get(format!("http://{admin}{path}"));
    for (k, v) in auth {
        b = b.header(*k, v);
    }
    if html {
        b = b.header("accept", "text/html");
    }
    send(b.body(Full::default()).unwrap()).await
}

fn text(g: &Got) -> String {
    String::from_utf8_lossy(&g.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_a_workbench() {
    // Legacy and candidate differ systematically at /individuals/*/type (case) and /name
    // (never returned); for globex also at /status (its data drifted).
    let legacy = Upstream::json(json!({"individuals": [
        {"id": 1, "status": "active", "type": "full_time", "name": "Ada"}
    ]}))
    .await;
    let candidate = Upstream::start(|seen| {
        let status = if seen.uri.contains("c-globex") {
            "on_leave"
        } else {
            "active"
        };
        Reply::json(json!({"individuals": [{"id": 1, "status": status, "type": "FULL_TIME"}]}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let csv = accounts_csv(dir.path(), &["acme", "globex"]);
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), &config(&csv)).await;
    let admin = sd.admin.unwrap();
    for account in ["acme", "globex", "acme", "globex", "acme", "globex"] {
        let req = Request::get(sd.url("/people"))
            .header("authorization", format!("Bearer {account}-token"))
            .body(Full::default())
            .unwrap();
        assert_eq!(send(req).await.status, 200);
    }
    sd.quiesce().await;

    // Sign-in: a page without a session goes to the form; a program gets 401.
    let page = fetch(admin, "/route/people?since=1h", &[], true).await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.headers["location"],
        "/login?next=%2Froute%2Fpeople%3Fsince%3D1h"
    );
    assert_eq!(fetch(admin, "/api/summary", &[], false).await.status, 401);
    let login = |token: &str| {
        Request::post(format!("http://{admin}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(format!(
                "token={token}&next=%2Froute%2Fpeople"
            ))))
            .unwrap()
    };
    let wrong = send(login("nope")).await;
    assert_eq!(wrong.status, 401);
    assert!(text(&wrong).contains("login-error"));
    assert!(wrong.headers.get("set-cookie").is_none());
    let ok = send(login(TOKEN)).await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.headers["location"], "/route/people");
    let set = ok.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains(TOKEN),
        "{set}"
    );
    let cookie = vec![("cookie", set.split(';').next().unwrap().to_owned())];
    // The cookie reads; a change still needs the bearer header.
    assert_eq!(
        fetch(admin, "/api/summary", &cookie, false).await.status,
        200
    );
    let post = Request::post(format!("http://{admin}/api/rollout"))
        .header("cookie", &cookie[0].1)
        .body(Full::new(bytes::Bytes::from(r#"{"phase":"rollback"}"#)))
        .unwrap();
    assert_eq!(send(post).await.status, 403);
    // An old ?token= link is exchanged for the cookie and an address without the token.
    let old = fetch(
        admin,
        &format!("/accounts?since=1h&token={TOKEN}"),
        &[],
        true,
    )
    .await;
    assert_eq!(old.status, 303);
    assert_eq!(old.headers["location"], "/accounts?since=1h");
    assert!(old.headers.contains_key("set-cookie"));
    // /logout clears it; a forged or expired cookie is refused.
    let out = fetch(admin, "/logout", &cookie, true).await;
    assert!(out.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let forged = vec![("cookie", "shadowdiff_session=v1.9999999999.00".to_owned())];
    assert_eq!(
        fetch(admin, "/api/summary", &forged, false).await.status,
        401
    );

    // The overview: gates per phase, routes linking to their pages, no token anywhere.
    let overview = text(&fetch(admin, "/?since=1h", &cookie, true).await);
    assert!(!overview.contains(TOKEN), "the token leaked into the page");
    assert!(overview.contains("id=\"gates\""));
    assert!(
        overview.contains("<td>shadow</td><td class=\"bad\">fails</td>"),
        "{overview}"
    );
    assert!(
        overview.contains("<td>canary</td><td class=\"ok\">passes</td>"),
        "{overview}"
    );
    assert!(overview.contains("href=\"/route/people?since=1h\""));

    // Route page: fields with class and likely fix, each linking to its field page.
    let route = text(&fetch(admin, "/route/people?since=1h", &cookie, true).await);
    assert!(route.contains("/individuals/*/type"));
    assert!(route.contains("only the case differs"), "{route}");
    assert!(route.contains("the candidate never returns this field"));
    assert!(route.contains(
        "href=\"/route/people/field?field=%2Findividuals%2F%2A%2Ftype&amp;since=1h&amp;route=people\""
    ));
    // Class filter: only sporadic fields (globex's status) are listed.
    let sporadic = text(
        &fetch(
            admin,
            "/route/people?since=1h&class=sporadic",
            &cookie,
            true,
        )
        .await,
    );
    assert!(
        sporadic.contains("/individuals/*/status") && !sporadic.contains(">/individuals/*/type<")
    );

    // Field page: which accounts, examples linking to exchanges.
    let field = text(
        &fetch(
            admin,
            "/route/people/field?field=%2Findividuals%2F%2A%2Fstatus&since=1h",
            &cookie,
            true,
        )
        .await,
    );
    assert!(
        field.contains(">globex</a>") && !field.contains(">acme</a>"),
        "{field}"
    );
    let ex = field
        .split("href=\"/exchange/")
        .nth(1)
        .and_then(|s| s.split('?').next())
        .and_then(|id| id.parse::<i64>().ok())
        .expect("an example exchange");

    // Exchange page: the differing value marked in place in both documents, the facts.
    let exchange = text(
        &fetch(
            admin,
            &format!("/exchange/{ex}?field=%2Findividuals%2F%2A%2Fstatus"),
            &cookie,
            true,
        )
        .await,
    );
    assert!(exchange.contains("<mark class=\"hit focus\" title=\"/individuals/0/status\">"));
    assert!(exchange.contains("globex") && exchange.contains("mapping version"));
    assert!(!exchange.contains(TOKEN));

    // Account filter on the overview: only globex's exchanges listed.
    let globex = text(&fetch(admin, "/?since=1h&account=globex", &cookie, true).await);
    assert!(
        globex.contains("· globex ·") && !globex.contains("· acme ·"),
        "{globex}"
    );
    // Accounts view.
    let accounts = text(&fetch(admin, "/accounts?since=1h", &cookie, true).await);
    assert!(accounts.contains(">acme</a>") && accounts.contains(">globex</a>"));
    assert!(accounts.contains("needs re-auth: <b id=\"reauth\" class=\"ok\">none</b>"));
    // Hostile parameters: a clear 400, no panic.
    for bad in [
        "/?since=forever",
        "/?since=99999999999999999999d",
        "/suggest?route=nope",
        "/route/%FF",
        "/route/people/field",
        "/exchange/x",
    ] {
        let g = fetch(admin, bad, &cookie, true).await;
        assert_eq!(g.status, 400, "{bad}");
        assert!(text(&g).contains("error"), "{bad}");
    }

    // The same walk in a browser.
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{admin}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/dashboard-walk.js"),
            )
            .args([&base, TOKEN, &shots.display().to_string()])
            .output()
            .expect("node is needed for the browser walk (bash scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let walk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &walk["steps"];
    assert_eq!(s["unsigned"]["at"], "/login?next=%2F", "{walk}");
    assert_eq!(s["unsigned"]["form"], true);
    assert_eq!(s["wrong"]["error"], true);
    assert_eq!(s["signed"]["at"], "/", "{walk}");
    assert_eq!(s["signed"]["cookieVisibleToScript"], "", "{walk}");
    assert_eq!(s["signed"]["tokenInPage"], false);
    assert!(
        s["route"]["at"]
            .as_str()
            .unwrap()
            .starts_with("/route/people?"),
        "{walk}"
    );
    assert!(s["route"]["fields"].as_u64().unwrap() >= 3, "{walk}");
    assert!(
        s["field"]["at"]
            .as_str()
            .unwrap()
            .starts_with("/route/people/field?field="),
        "{walk}"
    );
    assert!(s["field"]["examples"].as_u64().unwrap() >= 1, "{walk}");
    assert!(
        s["exchange"]["at"]
            .as_str()
            .unwrap()
            .starts_with("/exchange/"),
        "{walk}"
    );
    assert!(
        !s["exchange"]["marked"].as_array().unwrap().is_empty(),
        "{walk}"
    );
    assert_eq!(s["exchange"]["sides"], 2);
    assert_eq!(s["back"]["at"], s["field"]["at"], "{walk}");
    assert!(
        s["filtered"]["at"]
            .as_str()
            .unwrap()
            .contains("account=globex"),
        "{walk}"
    );
    assert_eq!(s["filtered"]["selected"], "globex");
    assert_eq!(s["filteredReloaded"]["selected"], "globex");
    assert!(
        !s["filtered"]["latest"].as_array().unwrap().is_empty(),
        "{walk}"
    );
    for summary in s["filtered"]["latest"].as_array().unwrap() {
        assert!(summary.as_str().unwrap().contains("globex"), "{walk}");
    }
    assert_eq!(s["refresh"]["openAfterRefresh"], true, "{walk}");
    assert_eq!(s["refresh"]["openAfterReload"], true, "{walk}");
    assert!(
        s["refresh"]["updated"]
            .as_str()
            .unwrap()
            .starts_with("updated"),
        "{walk}"
    );
    assert!(s["noScript"]["rows"].as_u64().unwrap() >= 3, "{walk}");
    for png in walk["shots"].as_array().unwrap() {
        let len = std::fs::metadata(png.as_str().unwrap()).map_or(0, |m| m.len());
        assert!(len > 10_000, "{png}: {len} bytes");
    }
    sd.stop().await;
}

/// The lines of the `<pre class="doc SIDE">` of a page's DOM, tags removed.
fn doc_lines(dom: &str, side: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<pre class=\"doc {side}\">"))
        .unwrap_or_else(|| panic!("no {side} document in {dom}"));
    let body = &dom[start..];
    let body = &body[body.find('>').unwrap() + 1..body.find("</pre>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for ch in body.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.lines().map(str::to_owned).collect()
}

/// #32 item 4, each point in headless Chromium against the real binary: an unknown route's page
/// is a 404 that says so (a quiet route's is not); the exchange page says why it shows fewer
/// differences than it counts, marks the differences at fields learned as noise, aligns the two
/// documents line by line, links the previous and next example, and shows who served the
/// answer, in which phase, and why it fell back; a bad parameter is a page with the way back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_and_route_pages_tell_the_truth() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use support::process::*;
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    // Legacy's `request_id` changes from one call to the next (noise); the candidate lacks
    // `middle`, and spells every tag in upper case (six differences of one field and kind).
    let legacy = Upstream::start(move |_| {
        Reply::json(json!({
            "id": 1,
            "first": "Ada",
            "middle": "Augusta",
            "zip": "N1",
            "tags": ["a", "b", "c", "d", "e", "f"],
            "request_id": format!("l-{}", n.fetch_add(1, Ordering::Relaxed)),
        }))
    })
    .await;
    let candidate = Upstream::json(json!({
        "id": 1,
        "first": "Ada",
        "zip": "N1",
        "tags": ["A", "B", "C", "D", "E", "F"],
        "request_id": "c-1",
    }))
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.store = "examples_per_field = 2\nbody_sample = 1.0\n".into();
    cfg.rest = "[diff.noise]\nsecondary_sample_rate = 1.0\nmin_count = 1\n\
                [rollout]\nphase = \"canary\"\nfollow = \"100ms\"\n\
                [[routes]]\nname = \"p\"\npath = \"/p\"\nunknown_account = \"candidate\"\n\
                [[routes]]\nname = \"quiet\"\npath = \"/quiet\"\n"
        .into();
    let p = start(cfg, None).await;
    for _ in 0..4 {
        assert_eq!(get(&p.url("/p")).await.status, 200);
    }
    let rows = tokio::task::block_in_place(|| p.wait_rows(4));
    assert_eq!(rows.len(), 4);
    let ids: Vec<i64> = query(
        &p.db(),
        "SELECT id FROM exchanges WHERE route = 'p' ORDER BY id",
    )
    .iter()
    .map(|r| r[0].as_i64().unwrap())
    .collect();
    // The noise is learned from legacy's second answers (polled: learned after the record).
    let learned = poll(std::time::Duration::from_secs(20), || {
        let n = query(
            &p.db(),
            "SELECT count(*) FROM noise_fields WHERE route = 'p' AND field = '/request_id'",
        );
        (n[0][0].as_i64() > Some(0)).then_some(())
    });
    assert!(learned.is_some(), "no noise learned");
    let admin = p.admin_url("");
    let browse = |path: String, name: &'static str| {
        let url = format!("{admin}{path}");
        tokio::task::spawn_blocking(move || chromium(&url, name, "1400,1200", 500).0)
    };

    // An unknown route is a 404 page; a configured route without traffic is not.
    let unknown = get(&p.admin_url("/route/nope?since=1h")).await;
    assert_eq!(unknown.status, 404);
    let quiet = get(&p.admin_url("/route/quiet?since=1h")).await;
    assert_eq!(quiet.status, 200);
    assert!(quiet.text().contains("No exchange of this route"));
    let dom = browse("/route/nope?since=1h".into(), "route-unknown")
        .await
        .unwrap();
    assert!(
        dom.contains("id=\"error\"") && dom.contains("no route named \"nope\""),
        "{dom}"
    );
    assert!(dom.contains("back to the overview"), "{dom}");

    // A bad parameter: a page with the way back, not raw JSON.
    assert_eq!(
        get(&p.admin_url("/route/p?since=1h&outcome=junk"))
            .await
            .status,
        400
    );
    let bad = get(&p.admin_url("/route/p?since=soon")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().starts_with("<!doctype html>"), "{}", bad.text());
    let dom = browse("/route/p?since=soon".into(), "bad-parameter")
        .await
        .unwrap();
    assert!(
        dom.contains("id=\"error\"") && dom.contains("href=\"/\""),
        "{dom}"
    );

    // The newest exchange, from the field's page.
    let newest = *ids.last().unwrap();
    let dom = browse(
        format!("/exchange/{newest}?field=%2Ftags%2F*&since=1h"),
        "exchange-truth",
    )
    .await
    .unwrap();
    // Who answered, in which phase, and why legacy did.
    assert!(dom.contains("id=\"served-by\">legacy<"), "{dom}");
    assert!(dom.contains("id=\"phase\">canary<"), "{dom}");
    assert!(dom.contains("id=\"fallback\">unverified<"), "{dom}");
    // 8 differences (6 tags, middle, request_id), 4 kept: the page says why.
    let diff_count = query(
        &p.db(),
        &format!("SELECT diff_count FROM exchanges WHERE id = {newest}"),
    )[0][0]
        .as_i64()
        .unwrap();
    assert_eq!(diff_count, 8);
    assert!(
        dom.contains("id=\"differences-note\"") && dom.contains("4 of the 8 differences"),
        "{dom}"
    );
    // The noise difference is marked as noise, the others are not.
    let row = |pointer: &str| {
        let at = dom
            .find(&format!("<code>{pointer}</code>"))
            .unwrap_or_else(|| panic!("no row {pointer}"));
        let tr = dom[..at].rfind("<tr").unwrap();
        let end = at + dom[at..].find("</tr>").unwrap();
        dom[tr..end].to_owned()
    };
    assert!(
        row("/request_id").contains("noise"),
        "{}",
        row("/request_id")
    );
    assert!(!row("/middle").contains("noise"), "{}", row("/middle"));
    // The two documents line up: `zip` on the same line of both, though the candidate lacks
    // `middle` before it.
    let (l, c) = (doc_lines(&dom, "legacy"), doc_lines(&dom, "candidate"));
    assert_eq!(l.len(), c.len(), "{l:?}\n{c:?}");
    let at = |lines: &[String], key: &str| lines.iter().position(|x| x.contains(key));
    assert_eq!(at(&l, "\"zip\""), at(&c, "\"zip\""), "{l:?}\n{c:?}");
    assert!(at(&c, "\"middle\"").is_none());
    // The previous (older) example of the same field; none newer.
    let older = ids[ids.len() - 2];
    assert!(
        dom.contains(&format!(
            "href=\"/exchange/{older}?field=%2Ftags%2F%2A&amp;"
        )),
        "{dom}"
    );
    assert!(dom.contains("example 1 of 4"), "{dom}");
    assert!(dom.contains("newer →: none"), "{dom}");
}
