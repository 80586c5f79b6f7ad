//! The worked Finch → Merge example (`config/examples/finch-to-merge/`) run as a user would:
//! the real binary on that very config, fakes of both vendors written from their public
//! references (`support::vendors`: unrelated ids, offset against cursor paging, a bearer token
//! against an API key plus `X-Account-Token`), driven by the official Finch Python SDK
//! (`finch-api`, installed into target/py by scripts/test.sh).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};
use support::process::*;
use support::vendors::{self, people};
use support::*;

const EXAMPLE: &str = "config/examples/finch-to-merge";

/// What the app does through the SDK: the company, the whole directory (one page), the
/// individuals and employments of the first three people (batch reads), then the directory again
/// four per page (the SDK pages on `paging.count` and `offset`).
const SDK_SCRIPT: &str = r#"
import json, sys
import finch
c = finch.Finch(access_token=sys.argv[2], base_url=sys.argv[1], max_retries=0)
out = {"company": c.hris.company.retrieve().legal_name}
ids = [i.id for i in c.hris.directory.list()]
out["directory"] = ids
reqs = [{"individual_id": i} for i in ids[:3]]
out["individuals"] = [[r.individual_id, r.code, r.body.last_name] for r in c.hris.individuals.retrieve_many(requests=reqs)]
out["employments"] = [[r.individual_id, r.code, r.body.title] for r in c.hris.employments.retrieve_many(requests=reqs)]
out["paged"] = [i.id for i in c.hris.directory.list(limit=4)]
print(json.dumps(out))
"#;

fn finch_sdk(base: &str) -> Value {
    vendors::finch_sdk(SDK_SCRIPT, &[base, vendors::FINCH_TOKEN])
}

/// The example's folder in a temp dir, with an accounts file for the fake company.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE),
        dir.path(),
    );
    let key = shadowdiff::translate::key_sha256_hex(
        format!("Bearer {}", vendors::FINCH_TOKEN).as_bytes(),
    );
    std::fs::write(
        dir.path().join("accounts.csv"),
        format!(
            "key_sha256,name,merge_account_token\n{key},acme,{}\n",
            vendors::MERGE_ACCOUNT_TOKEN
        ),
    )
    .unwrap();
    dir
}

/// Every Finch route the example covers is compared through the SDK, batch reads included, and
/// what differs is only the fakes' planted gaps plus what vendor ids and paging explain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finch_to_merge_example_compares_every_route_the_sdk_calls() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let (l, c) = (finch.url(), merge.url());
    let p = tokio::task::block_in_place(|| {
        Proc::start_in(
            example_dir(),
            "shadowdiff.toml",
            &[
                ("LEGACY_URL", l.as_str()),
                ("CANDIDATE_URL", c.as_str()),
                ("MERGE_API_KEY", vendors::MERGE_KEY),
                ("SHADOWDIFF_LISTEN", "127.0.0.1:0"),
                ("SHADOWDIFF_ADMIN", "127.0.0.1:0"),
                ("SHADOWDIFF_DB", "store/sd.db"),
            ],
            None,
        )
    });
    let base = p.url("");
    let got = tokio::task::spawn_blocking(move || finch_sdk(&base))
        .await
        .unwrap();

    // The app got Finch's answers, unchanged: its own ids, every page, every batch entry.
    let ps = people();
    let finch_ids: Vec<&str> = ps.iter().map(|p| p.finch_id.as_str()).collect();
    assert_eq!(got["company"], "Acme Robotics, Inc.");
    assert_eq!(got["directory"], json!(finch_ids));
    assert_eq!(got["paged"], json!(finch_ids));
    assert_eq!(
        got["individuals"],
        json!((0..3)
            .map(|i| json!([ps[i].finch_id, 200, ps[i].last]))
            .collect::<Vec<_>>())
    );
    assert_eq!(
        got["employments"][2],
        json!([ps[2].finch_id, 200, ps[2].title])
    );

    // Seven exchanges (company, directory, two batch reads, two pages), every one compared.
    let rows = tokio::task::block_in_place(|| {
        poll(std::time::Duration::from_secs(30), || {
            let r = query(
                &p.db(),
                "SELECT id, route, outcome, reason, candidate_status FROM exchanges ORDER BY id",
            );
            (r.len() >= 6).then_some(r)
        })
        .unwrap_or_else(|| panic!("not stored:\n{}", p.log()))
    });
    let by_route: BTreeMap<String, Vec<&Vec<Value>>> =
        rows.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r[1].as_str().unwrap_or("").to_owned())
                .or_default()
                .push(r);
            m
        });
    let counts: BTreeMap<&str, usize> = by_route
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("company", 1),
            ("directory", 3),
            ("employments", 1),
            ("individuals", 1)
        ]),
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(
            r[2],
            "diff",
            "every route compared (no skip, no error): {rows:?}\n{}",
            p.log()
        );
    }

    // Merge saw its own credentials, never the caller's Finch token; one read per batch id.
    let seen = merge.seen();
    assert!(seen.iter().all(|s| s.headers["authorization"]
        == format!("Bearer {}", vendors::MERGE_KEY)
        && s.headers["x-account-token"] == vendors::MERGE_ACCOUNT_TOKEN));
    let by_id: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.uri.strip_prefix("/api/hris/v1/employees/"))
        .collect();
    assert_eq!(by_id.len(), 6, "three ids, two batch reads: {by_id:?}");
    assert!(
        by_id
            .iter()
            .all(|u| finch_ids.iter().any(|f| u.starts_with(f))),
        "Finch's ids, untranslated: {by_id:?}"
    );

    // What differs, per route and field pattern.
    let diffs = query(
        &p.db(),
        "SELECT e.route, d.field, e.id FROM diffs d JOIN exchanges e ON e.id = d.exchange_id",
    );
    // The second page of the paged listing (offset 4) is compared with Merge's first page: the
    // exchange whose paging.offset differs.
    let page2: BTreeSet<i64> = query(
        &p.db(),
        "SELECT exchange_id FROM diffs WHERE pointer = '/paging/offset'",
    )
    .iter()
    .map(|r| r[0].as_i64().unwrap())
    .collect();
    assert_eq!(page2.len(), 1, "one later page: {diffs:?}");
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &diffs {
        if page2.contains(&d[2].as_i64().unwrap()) {
            continue;
        }
        fields
            .entry(d[0].as_str().unwrap().to_owned())
            .or_default()
            .insert(d[1].as_str().unwrap().to_owned());
    }
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<String>>()
    };
    // Company: the planted EIN, and Merge's company id.
    assert_eq!(fields["company"], set(&["/ein", "/id"]));
    // Directory: the planted last name and active flag; ids and manager ids (vendor ids); the
    // first of the four-per-page listing's `paging.count` (Merge gives no total: paging).
    assert_eq!(
        fields["directory"],
        set(&[
            "/individuals/*/id",
            "/individuals/*/is_active",
            "/individuals/*/last_name",
            "/individuals/*/manager/id",
            "/paging/count",
        ])
    );
    // Batch reads: every Finch id is unknown to Merge (404) - vendor ids, nothing else.
    for route in ["individuals", "employments"] {
        assert!(
            fields[route]
                .iter()
                .all(|f| f == "/responses/*/code" || f.starts_with("/responses/*/body")),
            "{route}: {:?}",
            fields[route]
        );
        assert!(fields[route].contains("/responses/*/code"));
        let codes = query(
            &p.db(),
            &format!("SELECT d.candidate FROM diffs d JOIN exchanges e ON e.id = d.exchange_id WHERE e.route = '{route}' AND d.field = '/responses/*/code'"),
        );
        assert_eq!(codes, vec![vec![json!("404")]; 3], "{route}");
    }
}

/// The batch mappings are right once ids are paired: the fan-out's answers as they will be
/// assembled when the candidate is called with Merge's ids (each element still the legacy
/// request's), run through the example's mappings offline (`shadowdiff diff --route`), differ
/// from Finch's batch answers only at ids and the planted gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_batch_mappings_give_finchs_shape_from_merges_answers() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let dir = example_dir();
    let ps = people();
    for (route, finch_path, expand) in [
        ("individuals", "/employer/individual", ""),
        (
            "employments",
            "/employer/employment",
            "?expand=employments,team",
        ),
    ] {
        let reqs: Vec<Value> = ps
            .iter()
            .map(|p| json!({"individual_id": p.finch_id}))
            .collect();
        let legacy = send(
            hyper::Request::post(format!("{}{finch_path}", finch.url()))
                .header("authorization", format!("Bearer {}", vendors::FINCH_TOKEN))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    json!({"requests": reqs}).to_string(),
                )))
                .unwrap(),
        )
        .await
        .json();
        let mut assembled = Vec::new();
        for p in &ps {
            let got = send(
                hyper::Request::get(format!(
                    "{}/api/hris/v1/employees/{}{expand}",
                    merge.url(),
                    p.merge_id
                ))
                .header("authorization", format!("Bearer {}", vendors::MERGE_KEY))
                .header("x-account-token", vendors::MERGE_ACCOUNT_TOKEN)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
            )
            .await;
            assembled.push(json!({"each": {"individual_id": p.finch_id}, "status": got.status, "body": got.json()}));
        }
        std::fs::write(dir.path().join("legacy.json"), legacy.to_string()).unwrap();
        std::fs::write(
            dir.path().join("candidate.json"),
            Value::Array(assembled).to_string(),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args([
                "diff",
                "--config",
                "shadowdiff.toml",
                "--route",
                route,
                "--format",
                "json",
                "legacy.json",
                "candidate.json",
            ])
            .env("MERGE_API_KEY", "unused")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{route}: {e}\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let diffs = doc.get("differences").unwrap_or(&doc);
        let mut pointers: BTreeSet<String> = BTreeSet::new();
        for d in diffs.as_array().unwrap_or_else(|| panic!("{doc}")) {
            let ptr = d["pointer"]
                .as_str()
                .or(d["path"].as_str())
                .unwrap_or_default()
                .to_owned();
            // Person n's fields as a pattern with the index kept (which person differs matters).
            pointers.insert(ptr);
        }
        let mut expected: BTreeSet<String> = (0..ps.len())
            .map(|i| format!("/responses/{i}/body/id"))
            .collect();
        for (i, p) in ps.iter().enumerate() {
            if p.manager.is_some() && route == "employments" {
                expected.insert(format!("/responses/{i}/body/manager/id"));
            }
        }
        // The planted gaps: person 2's last name, person 4 inactive.
        expected.insert("/responses/2/body/last_name".into());
        if route == "employments" {
            expected.insert("/responses/4/body/is_active".into());
            expected.insert("/responses/4/body/employment_status".into());
        }
        assert_eq!(pointers, expected, "{route}: {doc}");
    }
}
