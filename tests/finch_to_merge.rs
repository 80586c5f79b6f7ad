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

/// The app's first steps through the SDK: the company and the whole directory.
const SDK_LIST: &str = r#"
import json, sys
import finch
c = finch.Finch(access_token=sys.argv[2], base_url=sys.argv[1], max_retries=0)
out = {"company": c.hris.company.retrieve().legal_name}
out["directory"] = [i.id for i in c.hris.directory.list()]
print(json.dumps(out))
"#;

/// Then: the individuals and employments of the people whose indices are given (batch reads by
/// Finch ids), and the directory again, N per page (the SDK pages on `paging.count` and
/// `offset`).
const SDK_READS: &str = r#"
import json, sys
import finch
c = finch.Finch(access_token=sys.argv[2], base_url=sys.argv[1], max_retries=0)
ids = json.loads(sys.argv[3])
per_page = int(sys.argv[4])
reqs = [{"individual_id": i} for i in ids]
out = {}
if reqs:
    out["individuals"] = [[r.individual_id, r.code, r.body.last_name] for r in c.hris.individuals.retrieve_many(requests=reqs)]
    out["employments"] = [[r.individual_id, r.code, r.body.title, r.body.manager.id if r.body.manager else None] for r in c.hris.employments.retrieve_many(requests=reqs)]
if per_page:
    out["paged"] = [i.id for i in c.hris.directory.list(limit=per_page)]
print(json.dumps(out))
"#;

fn sdk(script: &str, base: &str, args: &[&str]) -> Value {
    let mut all = vec![base, vendors::FINCH_TOKEN];
    all.extend_from_slice(args);
    vendors::finch_sdk(script, &all)
}

/// The example's folder in a temp dir, with an accounts file for the fake company; `extra` is
/// appended to the config (a phase, a store URL).
fn example_dir_with(extra: &str) -> tempfile::TempDir {
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
    if !extra.is_empty() {
        let path = dir.path().join("shadowdiff.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, format!("{extra}\n{text}")).unwrap();
    }
    dir
}

fn example_dir() -> tempfile::TempDir {
    example_dir_with("")
}

/// The example started on the fakes, in `dir`.
fn start_example(dir: tempfile::TempDir, legacy: &str, candidate: &str, db: &str) -> Proc {
    tokio::task::block_in_place(|| {
        Proc::start_in(
            dir,
            "shadowdiff.toml",
            &[
                ("LEGACY_URL", legacy),
                ("CANDIDATE_URL", candidate),
                ("MERGE_API_KEY", vendors::MERGE_KEY),
                ("SHADOWDIFF_LISTEN", "127.0.0.1:0"),
                ("SHADOWDIFF_ADMIN", "127.0.0.1:0"),
                ("SHADOWDIFF_DB", db),
            ],
            None,
        )
    })
}

/// Polls until `n` exchanges are stored: (id, route, outcome, reason, served_by, fallback).
fn stored(p: &Proc, n: usize) -> Vec<Vec<Value>> {
    tokio::task::block_in_place(|| {
        poll(std::time::Duration::from_secs(30), || {
            let r = query(
                &p.db(),
                "SELECT id, route, outcome, reason, served_by, fallback FROM exchanges ORDER BY id",
            );
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| panic!("{n} exchanges not stored:\n{}", p.log()))
    })
}

/// (route, field pattern, kind) of every stored difference, with the exchange's id.
fn differences(db: &Path) -> Vec<(String, String, String, i64)> {
    query(
        db,
        "SELECT e.route, d.field, d.kind, e.id FROM diffs d JOIN exchanges e ON e.id = d.exchange_id ORDER BY e.id",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap_or("").to_owned(),
            r[1].as_str().unwrap().to_owned(),
            r[2].as_str().unwrap().to_owned(),
            r[3].as_i64().unwrap(),
        )
    })
    .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Through the proxy in `shadow`, with the id crosswalk and paging across vendors: ids are
/// paired from the directory (≥ 99 %: all seven), batch reads reach Merge with Merge's ids, a
/// later page of Finch's offset paging is compared with the same window of Merge's list, and
/// the only differences left are the fakes' planted gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shadow_the_only_differences_are_the_planted_gaps() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let (l, c) = (finch.url(), merge.url());
    let p = start_example(example_dir(), &l, &c, "store/sd.db");
    let base = p.url("");
    let b = base.clone();
    let listed = tokio::task::spawn_blocking(move || sdk(SDK_LIST, &b, &[]))
        .await
        .unwrap();
    let ps = people();
    let finch_ids: Vec<&str> = ps.iter().map(|p| p.finch_id.as_str()).collect();
    assert_eq!(listed["company"], "Acme Robotics, Inc.");
    assert_eq!(listed["directory"], json!(finch_ids));
    // The directory compared (its pairs learned) before the app reads by id.
    stored(&p, 2);
    let ids = json!(finch_ids[..3]).to_string();
    let got = tokio::task::spawn_blocking(move || sdk(SDK_READS, &base, &[&ids, "4"]))
        .await
        .unwrap();

    // The app got Finch's answers, unchanged: its own ids, every page, every batch entry.
    assert_eq!(got["paged"], json!(finch_ids));
    assert_eq!(
        got["individuals"],
        json!((0..3)
            .map(|i| json!([ps[i].finch_id, 200, ps[i].last]))
            .collect::<Vec<_>>())
    );
    assert_eq!(
        got["employments"][2],
        json!([ps[2].finch_id, 200, ps[2].title, ps[1].finch_id])
    );

    // Six exchanges (company, directory, two batch reads, two pages), every one compared.
    let rows = stored(&p, 6);
    let mut routes: Vec<&str> = rows.iter().map(|r| r[1].as_str().unwrap()).collect();
    routes.sort_unstable();
    assert_eq!(
        routes,
        [
            "company",
            "directory",
            "directory",
            "directory",
            "employments",
            "individuals"
        ],
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(
            r[2],
            "diff",
            "compared, with a planted gap each: {rows:?}\n{}",
            p.log()
        );
    }

    // Merge saw its own credentials, its own ids, its own paging.
    let seen = merge.seen();
    assert!(seen.iter().all(|s| s.headers["authorization"]
        == format!("Bearer {}", vendors::MERGE_KEY)
        && s.headers["x-account-token"] == vendors::MERGE_ACCOUNT_TOKEN));
    let merge_ids: Vec<&str> = ps.iter().map(|p| p.merge_id.as_str()).collect();
    let mut by_id: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.uri.strip_prefix("/api/hris/v1/employees/"))
        .map(|u| u.split('?').next().unwrap())
        .collect();
    by_id.sort_unstable();
    let mut want = [&merge_ids[..3], &merge_ids[..3]].concat();
    want.sort_unstable();
    assert_eq!(
        by_id, want,
        "one read per batch id (4 at once), with Merge's ids"
    );
    let listing: Vec<&str> = seen
        .iter()
        .filter(|s| s.uri.starts_with("/api/hris/v1/employees?"))
        .map(|s| s.uri.as_str())
        .collect();
    assert!(
        listing
            .iter()
            .all(|u| u.contains("page_size=100") && !u.contains("offset") && !u.contains("limit")),
        "Merge is paged by cursor: {listing:?}"
    );

    // What differs: the planted gaps, nothing else (no id, no manager id, no paging field).
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (route, field, kind, _) in differences(&p.db()) {
        assert_eq!(kind, "changed", "{route} {field}");
        fields.entry(route).or_default().insert(field);
    }
    assert_eq!(fields["company"], set(&["/ein"]));
    assert_eq!(
        fields["directory"],
        set(&["/individuals/*/is_active", "/individuals/*/last_name"])
    );
    assert_eq!(fields["individuals"], set(&["/responses/*/body/last_name"]));
    assert_eq!(fields["employments"], set(&["/responses/*/body/last_name"]));

    // The crosswalk: each person's two ids, and the company's, paired; nothing unpaired.
    let pairs: BTreeSet<(String, String, String)> = query(
        &p.db(),
        "SELECT kind, legacy_id, candidate_id FROM id_pairs",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap().to_owned(),
            r[1].as_str().unwrap().to_owned(),
            r[2].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    let mut expected: BTreeSet<(String, String, String)> = ps
        .iter()
        .map(|p| ("individual".into(), p.finch_id.clone(), p.merge_id.clone()))
        .collect();
    expected.insert((
        "company".into(),
        vendors::FINCH_COMPANY_ID.into(),
        vendors::MERGE_COMPANY_ID.into(),
    ));
    assert_eq!(pairs, expected);
    assert_eq!(
        query(&p.db(), "SELECT count(*) FROM id_unpaired"),
        vec![vec![json!(0)]]
    );
    assert_eq!(
        query(&p.db(), "SELECT count(*) FROM id_conflicts"),
        vec![vec![json!(0)]]
    );
    // Said by /api/ids and the gate: every id paired.
    let api = get(&p.admin_url("/api/ids")).await.json();
    let rates: Vec<(Value, Value, Value)> = api["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].clone(),
                c["paired"].clone(),
                c["paired_rate"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rates,
        vec![
            (json!("company"), json!(1), json!(1.0)),
            (json!("individual"), json!(7), json!(1.0))
        ]
    );
    let check = paired_ids_check(&p);
    assert_eq!(
        (check["pass"].clone(), check["measured"].clone()),
        (json!(true), json!(1.0))
    );
    // And by the dashboard's overview, per account and kind.
    let page = get(&p.admin_url("/")).await.text();
    let table = page
        .split("<table id=\"ids\">")
        .nth(1)
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        table.contains("<td>acme</td><td>individual</td><td class=\"num good\">100"),
        "{table}"
    );
}

/// The gate's `min_paired_ids` check over the instance's store (the example's `[gate.shadow]`).
fn paired_ids_check(p: &Proc) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args([
            "gate",
            "--config",
            "shadowdiff.toml",
            "--phase",
            "shadow",
            "--format",
            "json",
        ])
        .env("MERGE_API_KEY", "unused")
        .env("SHADOWDIFF_DB", "store/sd.db")
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == "min_paired_ids")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"))
}

/// An employee only Merge has is a difference of its own kind (`unpaired_id`), and no one is
/// paired with them: the seven pairs are the right ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_on_one_side_only_is_unpaired_never_paired_wrongly() {
    let finch = vendors::finch().await;
    let merge = vendors::merge_with_newcomer().await;
    let p = start_example(example_dir(), &finch.url(), &merge.url(), "store/sd.db");
    let base = p.url("");
    tokio::task::spawn_blocking(move || sdk(SDK_LIST, &base, &[]))
        .await
        .unwrap();
    stored(&p, 2);
    let got: BTreeSet<(String, String, String)> = differences(&p.db())
        .into_iter()
        .filter(|d| d.0 == "directory")
        .map(|(_, f, k, _)| (f, k, String::new()))
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("/individuals/*/is_active", "changed"),
        ("/individuals/*/last_name", "changed"),
        // The newcomer, whom Finch does not list: an unpaired id, not a wrong value.
        ("/individuals/*", "unpaired_id"),
        // Finch's total against the total walked on Merge: the lists differ by one.
        ("/paging/count", "changed"),
    ]
    .iter()
    .map(|(f, k)| ((*f).to_owned(), (*k).to_owned(), String::new()))
    .collect();
    assert_eq!(got, want);
    let ps = people();
    let pairs = query(
        &p.db(),
        "SELECT legacy_id, candidate_id FROM id_pairs WHERE kind = 'individual' ORDER BY legacy_id",
    );
    let mut expected: Vec<Vec<Value>> = ps
        .iter()
        .map(|p| vec![json!(p.finch_id), json!(p.merge_id)])
        .collect();
    expected.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
    assert_eq!(pairs, expected);
    assert_eq!(
        query(&p.db(), "SELECT side, id FROM id_unpaired"),
        vec![vec![
            json!("candidate"),
            json!(vendors::newcomer().merge_id)
        ]]
    );
    // 14 of 15 ids paired: the gate holds the rollout.
    let check = paired_ids_check(&p);
    assert_eq!(check["pass"], json!(false), "{check}");
    assert!(
        (check["measured"].as_f64().unwrap() - 14.0 / 15.0).abs() < 1e-9,
        "{check}"
    );
}

/// In `canary`, for the pinned account: a paginating client (the Finch SDK, one per page) gets
/// exactly legacy's items and ids on every page, the pages Merge answers exactly are served from
/// Merge (with Finch's ids and Finch's paging), and batch reads by Finch ids are served from
/// Merge with Finch's ids. The pairs were learned in `shadow`, by an earlier process on the same
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_canary_a_paginating_client_gets_legacys_items_and_ids_served_from_merge() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let (l, c) = (finch.url(), merge.url());
    let mut learn = start_example(example_dir(), &l, &c, "store/sd.db");
    let base = learn.url("");
    tokio::task::spawn_blocking(move || sdk(SDK_LIST, &base, &[]))
        .await
        .unwrap();
    stored(&learn, 2);
    assert_eq!(tokio::task::block_in_place(|| learn.stop()), 0);
    let old = std::mem::replace(&mut learn.dir, tempfile::tempdir().unwrap());
    drop(learn);

    // The same store, now in canary with the company pinned to the candidate.
    let dir = example_dir_with(
        "[rollout]\nphase = \"canary\"\npin_candidate = [\"acme\"]\nfollow = \"100ms\"\n",
    );
    copy_tree(&old.path().join("store"), &dir.path().join("store"));
    let p = start_example(dir, &l, &c, "store/sd.db");
    let before = merge.count();
    let ps = people();
    let finch_ids: Vec<&str> = ps.iter().map(|p| p.finch_id.as_str()).collect();
    let reads = json!([finch_ids[0], finch_ids[5]]).to_string();
    let base = p.url("");
    let got = tokio::task::spawn_blocking(move || sdk(SDK_READS, &base, &[&reads, "1"]))
        .await
        .unwrap();
    assert_eq!(
        got["paged"],
        json!(finch_ids),
        "every page, in legacy's order"
    );
    assert_eq!(
        got["individuals"],
        json!([
            [ps[0].finch_id, 200, ps[0].last],
            [ps[5].finch_id, 200, ps[5].last]
        ])
    );
    assert_eq!(
        got["employments"],
        json!([
            [ps[0].finch_id, 200, ps[0].title, null],
            [ps[5].finch_id, 200, ps[5].title, ps[4].finch_id]
        ])
    );
    // After the two exchanges the learning process stored.
    let rows = stored(&p, 11);
    let served: Vec<(String, String, Value)> = rows[2..]
        .iter()
        .map(|r| {
            (
                r[1].as_str().unwrap().to_owned(),
                r[4].as_str().unwrap_or("").to_owned(),
                r[5].clone(),
            )
        })
        .collect();
    // Batch reads of people without a gap: served from Merge. Directory pages (one person
    // each): served from Merge where Merge's answer equals Finch's (people 0 and 5); the rest
    // fall back to Finch's answer (a middle name Merge lacks, the planted gaps), verified.
    let expect_page = |i: usize| {
        if [0, 5].contains(&i) {
            "candidate"
        } else {
            "legacy"
        }
    };
    let mut expected = vec![
        (
            "individuals".to_owned(),
            "candidate".to_owned(),
            Value::Null,
        ),
        (
            "employments".to_owned(),
            "candidate".to_owned(),
            Value::Null,
        ),
    ];
    for i in 0..7 {
        let by = expect_page(i);
        let fb = if by == "legacy" {
            json!("unverified")
        } else {
            Value::Null
        };
        expected.push(("directory".to_owned(), by.to_owned(), fb));
    }
    // (Stored in the order the comparisons finish.)
    let (mut served, mut expected) = (served, expected);
    served.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    expected.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(served, expected, "{}", p.log());
    assert!(merge.count() > before, "Merge was called");
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

/// A raw Finch call through an instance: (status, JSON body).
async fn finch_call(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {}", vendors::FINCH_TOKEN))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map_or_else(String::new, |b| b.to_string()),
        )))
        .unwrap();
    let got = send(req).await;
    (got.status, got.json())
}

/// A fleet on one PostgreSQL: each instance uses the pairs the other learned. A (in `canary`,
/// the company pinned) lists the whole directory and learns the people; B (in `shadow`) reads the
/// company and learns its pair. B's batch reads of Finch ids go to Merge with the Merge ids A
/// learned; A's served company answer is translated with the pair B learned (it then falls back
/// only because Merge's company lacks fields Finch's has: `unverified`, not `unpaired_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_its_pairs_through_postgresql() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let (l, c) = (finch.url(), merge.url());
    let url = tokio::task::block_in_place(support::pg::database);
    let fleet_dir = |extra: &str| {
        let dir = example_dir_with(extra);
        let path = dir.path().join("shadowdiff.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let old = "path = \"${SHADOWDIFF_DB:-data/finch-to-merge.db}\"";
        assert!(text.contains(old));
        std::fs::write(&path, text.replace(old, &format!("url = \"{url}\""))).unwrap();
        dir
    };
    let a = start_example(
        fleet_dir(
            "[rollout]\nphase = \"canary\"\npin_candidate = [\"acme\"]\nfollow = \"100ms\"\n",
        ),
        &l,
        &c,
        "unused",
    );
    let b = start_example(fleet_dir(""), &l, &c, "unused");
    let pg = |sql: &str| -> i64 {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.query_one(sql, &[]).unwrap().get(0)
    };
    let (ga, _) = finch_call(&a.url(""), "GET", "/employer/directory", None).await;
    let (gb, _) = finch_call(&b.url(""), "GET", "/employer/company", None).await;
    assert_eq!((ga, gb), (200, 200));
    tokio::task::block_in_place(|| {
        poll(std::time::Duration::from_secs(30), || {
            (pg("SELECT count(*) FROM id_pairs WHERE kind = 'individual'") == 7
                && pg("SELECT count(*) FROM id_pairs WHERE kind = 'company'") == 1)
                .then_some(())
        })
        .expect("A's seven pairs and B's company pair stored");
    });
    let ps = people();
    // A's pairs used by B: its follower reads the store every second, so a first read may be
    // skipped as `unpaired_id` (never sent with a Finch id): read again until sent.
    let reqs: Vec<Value> = (0..4)
        .map(|i| json!({"individual_id": ps[i].finch_id}))
        .collect();
    let want: BTreeSet<String> = (0..4)
        .map(|i| format!("/api/hris/v1/employees/{}", ps[i].merge_id))
        .collect();
    let mut sent = false;
    for _ in 0..50 {
        let before = tokio::task::block_in_place(|| {
            pg("SELECT count(*) FROM exchanges WHERE route = 'individuals'")
        });
        let (status, _) = finch_call(
            &b.url(""),
            "POST",
            "/employer/individual",
            Some(json!({ "requests": reqs })),
        )
        .await;
        assert_eq!(status, 200);
        let outcome = fleet_row(&url, "individuals", before);
        if outcome.0 == "skipped" {
            assert!(outcome.1.starts_with("unpaired_id"), "{outcome:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(
            outcome.0, "diff",
            "compared (a planted last name): {outcome:?}"
        );
        sent = true;
        break;
    }
    assert!(sent, "A's pairs were never used by B");
    let seen: BTreeSet<String> = merge
        .seen()
        .iter()
        .map(|s| s.uri.split('?').next().unwrap().to_owned())
        .filter(|u| want.contains(u))
        .collect();
    assert_eq!(seen, want, "Merge's ids, learned by A");
    assert!(
        !merge
            .seen()
            .iter()
            .any(|s| ps.iter().any(|p| s.uri.contains(&p.finch_id))),
        "a Finch id never reaches Merge"
    );
    // B's company pair used by A's served answer.
    let mut translated = false;
    for _ in 0..50 {
        let before = tokio::task::block_in_place(|| {
            pg("SELECT count(*) FROM exchanges WHERE route = 'company'")
        });
        let (status, body) = finch_call(&a.url(""), "GET", "/employer/company", None).await;
        assert_eq!(
            (status, body["id"].clone()),
            (200, json!(vendors::FINCH_COMPANY_ID))
        );
        let fallback = fleet_row(&url, "company", before).2;
        if fallback == "unpaired_id" {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(fallback, "unverified");
        translated = true;
        break;
    }
    assert!(translated, "B's company pair was never used by A");
}

/// The next exchange of `route` stored after the first `before`: (outcome, reason, fallback).
fn fleet_row(url: &str, route: &str, before: i64) -> (String, String, String) {
    tokio::task::block_in_place(|| {
        poll(std::time::Duration::from_secs(30), || {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client
                .query_opt(
                    "SELECT outcome, coalesce(reason, ''), coalesce(fallback, '') FROM exchanges WHERE route = $1 ORDER BY id OFFSET $2 LIMIT 1",
                    &[&route, &before],
                )
                .unwrap()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
        })
        .expect("the exchange stored")
    })
}

/// A page that is not the whole list teaches no pair: a key unique on one page of each side can
/// name two different people when the pages hold different records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_page_teaches_no_pair() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let p = start_example(example_dir(), &finch.url(), &merge.url(), "store/sd.db");
    let (status, _) = finch_call(
        &p.url(""),
        "GET",
        "/employer/directory?offset=0&limit=4",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let rows = stored(&p, 1);
    assert_eq!(rows[0][2], "diff");
    assert_eq!(
        query(&p.db(), "SELECT count(*) FROM id_pairs"),
        vec![vec![json!(0)]]
    );
    let kinds = query(
        &p.db(),
        "SELECT DISTINCT kind FROM diffs WHERE pointer LIKE '/individuals/%'",
    );
    assert!(kinds.contains(&vec![json!("unpaired_id")]), "{kinds:?}");
}

/// A batch read of Finch ids the crosswalk does not know yet is never sent to Merge (with
/// Finch's ids or anyone's): skipped, `unpaired_id`; the app still gets Finch's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_of_unpaired_ids_never_reaches_the_candidate() {
    let finch = vendors::finch().await;
    let merge = vendors::merge().await;
    let p = start_example(example_dir(), &finch.url(), &merge.url(), "store/sd.db");
    let ps = people();
    let (status, body) = finch_call(
        &p.url(""),
        "POST",
        "/employer/individual",
        Some(json!({"requests": [{"individual_id": ps[0].finch_id}]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["responses"][0]["body"]["id"], json!(ps[0].finch_id));
    let rows = stored(&p, 1);
    assert_eq!(rows[0][2], "skipped");
    assert!(
        rows[0][3]
            .as_str()
            .unwrap()
            .starts_with("unpaired_id: the legacy id in {each.individual_id}"),
        "{rows:?}"
    );
    assert_eq!(merge.count(), 0, "Merge never called");
}

/// In `canary`, a served page holding an id the crosswalk cannot turn back into Finch's (an
/// employee only Merge has) falls back to Finch's answer (`unpaired_id`): a Merge id never
/// reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_answer_with_an_untranslatable_id_falls_back() {
    let finch = vendors::finch().await;
    let merge = vendors::merge_with_newcomer().await;
    let dir = example_dir_with(
        "[rollout]\nphase = \"canary\"\npin_candidate = [\"acme\"]\nfollow = \"100ms\"\n",
    );
    let p = start_example(dir, &finch.url(), &merge.url(), "store/sd.db");
    // The first listing falls back (nothing paired yet) and its comparison learns Finch's seven.
    let (s1, first) = finch_call(&p.url(""), "GET", "/employer/directory", None).await;
    assert_eq!(s1, 200);
    stored(&p, 1);
    assert_eq!(
        query(
            &p.db(),
            "SELECT count(*) FROM id_pairs WHERE kind = 'individual'"
        ),
        vec![vec![json!(7)]]
    );
    // Served again: Merge's page holds the newcomer, whom no Finch id stands for.
    let (s2, all) = finch_call(&p.url(""), "GET", "/employer/directory", None).await;
    assert_eq!(s2, 200);
    let ps = people();
    let finch_ids: Vec<&str> = ps.iter().map(|p| p.finch_id.as_str()).collect();
    let ids = |v: &Value| -> Vec<String> {
        v["individuals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), finch_ids);
    assert_eq!(ids(&all), finch_ids, "Finch's answer");
    let rows = stored(&p, 2);
    assert_eq!(rows[1][4], "legacy", "{rows:?}");
    assert_eq!(rows[1][5], "unpaired_id", "{rows:?}");
}
