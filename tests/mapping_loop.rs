//! The mapping loop on recorded traffic, through the real binary: traffic recorded by the proxy
//! with a broken mapping (realistic HRIS documents, one gap of each kind), then `rediff` with a
//! fixed mapping, `rediff --record`, and `suggest`, each suggestion checked by rediff.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::*;

const PEOPLE: usize = 12;
const TYPES: [(&str, &str); 3] = [
    ("FT", "full_time"),
    ("PT", "part_time"),
    ("CT", "contractor"),
];
const DEPARTMENTS: [&str; 3] = ["Engineering", "Finance", "Research"];
const CITIES: [&str; 3] = ["London", "Lisbon", "Oslo"];

/// An employee as the legacy HRIS API answers.
fn legacy_employee(i: usize) -> Value {
    let mut v = json!({
        "id": format!("emp-{i:03}"),
        "first_name": format!("First{i}"),
        "last_name": format!("Last{i}"),
        "title": format!("Engineer {}", i % 4),
        "employment_status": if i.is_multiple_of(5) { "inactive" } else { "active" },
        "employment_type": TYPES[i % 3].1,
        "salary": 90_000 + i * 1_000,
        "location": {"city": CITIES[i % 3]},
        "department": DEPARTMENTS[i % 3],
        "manager_id": format!("emp-{:03}", 100 + i),
        "ssn": format!("123-45-{:04}", 6000 + i),
        "start_date": format!("2015-{:02}-{:02}", 1 + i % 12, 1 + i),
        "work_email": format!("first{i}@acme.example"),
    });
    if i.is_multiple_of(6) {
        v["terminated_at"] = json!(format!("2026-0{}-01", 1 + i / 6));
    }
    v
}

/// The same employee as the unified API answers: other names, other places, other spellings,
/// and no department.
fn candidate_employee(i: usize) -> Value {
    let mut v = json!({
        "id": format!("u-{}", 7000 + i),
        "remote_id": format!("emp-{i:03}"),
        "given_name": format!("First{i}"),
        "family_name": format!("Last{i}"),
        "job": {"title": format!("Engineer {}", i % 4)},
        "status": if i.is_multiple_of(5) { "INACTIVE" } else { "ACTIVE" },
        "employment_type": TYPES[i % 3].0,
        "compensation": {"amount": format!("{}", 90_000 + i * 1_000), "currency": "EUR"},
        "work_location": {"city": CITIES[i % 3]},
        "manager": {"remote_id": format!("emp-{:03}", 100 + i)},
        "national_id": format!("123-45-{:04}", 6000 + i),
        "start_date": format!("2015-{:02}-{:02}T00:00:00Z", 1 + i % 12, 1 + i),
        "emails": [
            {"type": "work", "value": format!("first{i}@acme.example")},
            {"type": "personal", "value": format!("first{i}@mail.example")}
        ],
    });
    if i.is_multiple_of(6) {
        v["terminated_at"] = json!(format!("2026-0{}-01", 1 + i / 6));
    }
    v
}

/// The mapping as first written: every gap planted.
const BROKEN: &str = r#"/* unified employee -> legacy employee */
{
  "id": remote_id,
  "first_name": first_name,
  "last_name": family_name,
  "title": title,
  "employment_status": status,
  "employment_type": employment_type,
  "salary": compensation.amount,
  "location": {"city": work_location.city},
  "ssn": national_id,
  "terminated_at": terminated_at,
  "start_date": start_date,
  "work_email": work_email
}
"#;

/// The directory's jq mapping: `name` is `full_name` in the unified API.
const DIRECTORY_JQ: &str = "{individuals: [.results[] | {id: .remote_id, name: .name}]}\n";

fn legacy_directory() -> Value {
    let people: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("emp-{i:03}"), "name": format!("First{i} Last{i}")}))
        .collect();
    json!({ "individuals": people })
}

fn candidate_directory() -> Value {
    let people: Vec<Value> = (0..4)
        .map(|i| json!({"remote_id": format!("emp-{i:03}"), "full_name": format!("First{i} Last{i}")}))
        .collect();
    json!({ "results": people })
}

fn config() -> String {
    r#"
[store]
path = "store/shadowdiff.db"
bodies = "always"
body_examples = 1000
body_sample = 1.0
redact_fields = ["**/ssn"]

[gate.canary]
min_field_samples = 3

[[routes]]
name = "employee"
method = "GET"
path = "/employees/{id}"
reference = "refs/employee.json"
[routes.candidate]
path = "/unified/employees/{id}"
mapping = "mappings/employee.jsonata"

[[routes]]
name = "company"
method = "GET"
path = "/company"
[routes.candidate]
path = "/unified/company"

[[routes]]
name = "directory"
method = "GET"
path = "/directory"
[routes.candidate]
path = "/unified/directory"
mapping = "mappings/directory.jq"
"#
    .to_owned()
}

/// Runs the binary in `cwd` with the config there: `run(d, "rediff --since 1h")`.
fn run(cwd: &Path, args: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["--config", "shadowdiff.toml"])
        .args(args.split_whitespace())
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The route's (field, kind) → (recorded, now) of a rediff's JSON.
fn fields(rediff: &Value, route: &str) -> std::collections::BTreeMap<(String, String), (u64, u64)> {
    let r = rediff["summary"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {rediff}"));
    r["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                (
                    f["field"].as_str().unwrap().to_owned(),
                    f["kind"].as_str().unwrap().to_owned(),
                ),
                (f["recorded"].as_u64().unwrap(), f["now"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The proxy, after recording traffic with the broken mappings, and the two vendors it talks
/// to (stop it to get the working folder: config, mappings, store).
async fn recorded() -> (Shadowdiff, Upstream, Upstream) {
    let legacy = Upstream::start(|s| {
        if s.uri == "/directory" {
            return Reply::json(legacy_directory());
        }
        if s.uri == "/company" {
            return Reply::json(json!({"id": "co-1", "name": "Acme"}));
        }
        let i: usize = s.uri.trim_start_matches("/employees/emp-").parse().unwrap();
        Reply::json(legacy_employee(i))
    })
    .await;
    let candidate = Upstream::start(|s| {
        if s.uri == "/unified/directory" {
            return Reply::json(candidate_directory());
        }
        if s.uri == "/unified/company" {
            return Reply::json(json!({"id": "co-1", "name": "Acme"}));
        }
        let i: usize = s
            .uri
            .trim_start_matches("/unified/employees/emp-")
            .parse()
            .unwrap();
        Reply::json(candidate_employee(i))
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("mappings")).unwrap();
    std::fs::create_dir_all(files.path().join("refs")).unwrap();
    std::fs::write(files.path().join("mappings/employee.jsonata"), BROKEN).unwrap();
    std::fs::write(files.path().join("mappings/directory.jq"), DIRECTORY_JQ).unwrap();
    // The reference: a legacy employee with every field the API documents.
    let mut reference = legacy_employee(0);
    reference["emergency_contact"] = json!({"name": "Someone"});
    std::fs::write(
        files.path().join("refs/employee.json"),
        reference.to_string(),
    )
    .unwrap();
    let sd = Shadowdiff::start_with_files(
        &legacy.url(),
        &candidate.url(),
        &config(),
        Some(files.path()),
    )
    .await;
    for i in 0..PEOPLE {
        let got = get(&sd.url(&format!("/employees/emp-{i:03}"))).await;
        assert_eq!(got.status, 200);
    }
    for _ in 0..3 {
        get(&sd.url("/directory")).await;
        get(&sd.url("/company")).await;
    }
    sd.quiesce().await;
    (sd, legacy, candidate)
}

/// [`recorded`], stopped: the working folder.
async fn record() -> tempfile::TempDir {
    let (sd, _legacy, _candidate) = recorded().await;
    let (_, dir) = sd.stop().await;
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediff_judges_recorded_traffic_with_a_fixed_mapping() {
    let dir = record().await;
    let d = dir.path();
    let db = d.join("store/shadowdiff.db");
    let bytes = db_bytes(&db);
    // The documents as they came are kept, redacted: the candidate's `national_id` holds the
    // value redacted at legacy's `ssn`, under another name.
    let raw = query(
        &db,
        "SELECT count(*) FROM bodies WHERE side = 'candidate_raw'",
    );
    assert_eq!(raw[0][0], json!(PEOPLE + 3), "one per mapped exchange");
    for i in 0..PEOPLE {
        assert!(
            !contains(&bytes, format!("123-45-{:04}", 6000 + i).as_bytes()),
            "a redacted value is in the store"
        );
    }

    // The mappings as recorded: every verdict as it was.
    let (code, out, err) = run(d, "rediff --since 1h --format json");
    assert_eq!(code, 0, "{err}");
    let same = json_of(&out);
    assert_eq!(same["summary"]["exchanges"], json!(PEOPLE + 6));
    for ((field, kind), (recorded, now)) in fields(&same, "employee") {
        assert_eq!(recorded, now, "{field} {kind}: {out}");
    }
    assert!(
        fields(&same, "employee").contains_key(&("/employment_status".into(), "changed".into()))
    );

    // One fix in a proposed folder: that field is fixed, nothing else changed.
    let fixed = d.join("proposed");
    std::fs::create_dir_all(&fixed).unwrap();
    std::fs::write(
        fixed.join("employee.jsonata"),
        BROKEN.replace(
            "\"employment_status\": status",
            "\"employment_status\": $lowercase(status)",
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        d,
        "rediff --since 1h --route employee --mappings proposed --format json",
    );
    assert_eq!(code, 0, "{err}");
    let one = json_of(&out);
    let f = fields(&one, "employee");
    assert_eq!(
        f[&("/employment_status".to_owned(), "changed".to_owned())],
        (PEOPLE as u64, 0)
    );
    for ((field, kind), (recorded, now)) in &f {
        if field != "/employment_status" {
            assert_eq!(recorded, now, "{field} {kind} changed: {out}");
        }
    }
    let route = &one["summary"]["routes"][0];
    assert_eq!(route["broken_count"], json!(0));
    assert_eq!(route["changed_count"], json!(PEOPLE));
    assert_ne!(route["versions"], route["recorded_versions"]);
    // Nothing was written without --record.
    assert_eq!(query(&db, "SELECT count(*) FROM rediffs")[0][0], json!(0));

    // A mapping that breaks what matched (the company route had none, and matched): exit 1,
    // the exchanges named with the difference they would have.
    std::fs::write(fixed.join("company.jq"), "{id: .id}\n").unwrap();
    let (code, out, _) = run(d, "rediff --since 1h --route company --mappings proposed");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("parity 100.0% -> 0.0% over 3 exchanges: 0 fixed, 3 broken"),
        "{out}"
    );
    assert!(
        out.contains("broken: exchange") && out.contains("/name missing"),
        "{out}"
    );
    std::fs::remove_file(fixed.join("company.jq")).unwrap();

    // --record keeps it as a new mapping version.
    let (code, out, err) = run(
        d,
        "rediff --since 1h --route employee --mappings proposed --record",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("recorded in the store"), "{out}");
    let rows = query(
        &db,
        "SELECT route, mapping_version, exchanges, fixed, broken, source FROM rediffs",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], json!("employee"));
    assert_eq!(rows[0][1], route["versions"][0]);
    assert_eq!(rows[0][2], json!(PEOPLE));
    assert!(rows[0][5].as_str().unwrap().contains("proposed"));
    // The report lists it beside the live versions.
    let (code, out, err) = run(d, "report --since 1h --format json");
    assert_eq!(code, 0, "{err}");
    let report = json_of(&out);
    assert_eq!(report["rediffs"][0]["mapping_version"], rows[0][1], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_finds_each_kind_of_gap_and_checks_it() {
    let dir = record().await;
    let d = dir.path();
    let (code, out, err) = run(
        d,
        "suggest --route employee --since 1h --format json --out proposed",
    );
    assert_eq!(code, 0, "{err}");
    let s = json_of(&out);
    let by_field = |f: &str| -> Value {
        s["suggestions"]["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["field"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("no suggestion for {f}: {out}"))
    };
    // Each gap, the fix of its kind, checked by rediff (the field fixed in every exchange).
    let expect = [
        ("/first_name", "path", Some("given_name")),
        ("/title", "path", Some("job.title")),
        ("/manager_id", "path", Some("manager.remote_id")),
        ("/employment_status", "lowercase", None),
        ("/employment_type", "lookup", None),
        ("/salary", "number", None),
        // A date sent with a time: read the date, never a table of the recorded dates.
        ("/start_date", "date", None),
        // A value inside an array of the candidate's (the work email is its first).
        ("/work_email", "path", Some("emails[0].value")),
    ];
    for (field, fix, expr) in expect {
        let g = by_field(field);
        assert_eq!(g["fix"], json!(fix), "{field}: {g}");
        if let Some(e) = expr {
            assert_eq!(g["expr"], json!(e), "{field}: {g}");
        }
        assert_eq!(g["checked"]["field_before"], json!(PEOPLE), "{field}: {g}");
        assert_eq!(g["checked"]["field_after"], json!(0), "{field}: {g}");
        assert!(g["change"]["diff"].as_str().unwrap().contains("+"), "{g}");
    }
    assert_eq!(
        by_field("/employment_type")["pairs"],
        json!({"CT": "contractor", "FT": "full_time", "PT": "part_time"})
    );
    // No mapping can fill what the candidate never sends.
    let dept = by_field("/department");
    assert_eq!(dept["fix"], json!("not_in_candidate"), "{dept}");
    assert!(dept.get("change").is_none());

    // The written mapping, every checked change at once, through rediff: only the department
    // is left.
    let (code, out, err) = run(
        d,
        "rediff --since 1h --route employee --mappings proposed --format json",
    );
    assert_eq!(code, 0, "{err}");
    let after = json_of(&out);
    let left: Vec<_> = fields(&after, "employee")
        .into_iter()
        .filter(|(_, (_, now))| *now > 0)
        .map(|((f, k), _)| format!("{f} {k}"))
        .collect();
    assert_eq!(left, vec!["/department missing"], "{out}");

    // jq: the directory's renamed member, read relative to the array element.
    let (code, out, err) = run(d, "suggest --route directory --since 1h --format json");
    assert_eq!(code, 0, "{err}");
    let s = json_of(&out);
    let g = &s["suggestions"]["suggestions"][0];
    assert_eq!(g["field"], json!("/individuals/*/name"), "{out}");
    assert_eq!(g["expr"], json!(".full_name"), "{out}");
    assert_eq!(g["checked"]["field_after"], json!(0), "{out}");
    assert_eq!(g["checked"]["parity_after"], json!(1.0), "{out}");
    assert!(
        g["change"]["diff"]
            .as_str()
            .unwrap()
            .contains("name: .full_name"),
        "{out}"
    );

    // Text output for people.
    let (code, out, _) = run(d, "suggest --route employee --since 1h");
    assert_eq!(code, 0);
    assert!(out.contains("$lowercase(status)"), "{out}");
    assert!(out.contains("no mapping can fill it"), "{out}");
    // A route that does not exist is bad usage.
    let (code, _, err) = run(d, "suggest --route nope");
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_coverage_and_min_field_samples() {
    let (sd, _legacy, _candidate) = recorded().await;
    // The admin API's coverage, while the proxy runs.
    let got = get(&format!(
        "http://{}/api/coverage?since=1h&route=employee",
        sd.admin.unwrap()
    ))
    .await;
    assert_eq!(got.status, 200);
    let api = got.json();
    let admin = format!("http://{}", sd.admin.unwrap());
    // The dashboard links the route to its page, which links each differing field to an
    // example exchange and the route to its suggestions.
    let dash = get(&format!("{admin}/?since=1h")).await;
    let overview = String::from_utf8_lossy(&dash.body).into_owned();
    assert!(
        overview.contains("href=\"/route/employee?since=1h\""),
        "{overview}"
    );
    let route = get(&format!("{admin}/route/employee?since=1h")).await;
    let page = String::from_utf8_lossy(&route.body).into_owned();
    let link = page
        .split("href=\"/exchange/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no example link: {page}"))
        .replace("&amp;", "&");
    assert!(page.contains("/suggest?route=employee"), "{page}");
    let example = get(&format!("{admin}/exchange/{link}")).await;
    assert_eq!(example.status, 200);
    let ex = String::from_utf8_lossy(&example.body).into_owned();
    assert!(
        ex.contains("candidate (mapped)") && ex.contains("as it came"),
        "{ex}"
    );
    let id: i64 = link.split('?').next().unwrap().parse().unwrap();
    let bodies = get(&format!("{admin}/api/exchanges/{id}/bodies"))
        .await
        .json();
    let raw = &bodies["candidate_raw"]["body"];
    assert!(raw["given_name"].is_string(), "{bodies}");
    assert_eq!(raw["national_id"], json!("[redacted]"), "{bodies}");
    let sugg = get(&format!("{admin}/api/suggest?route=employee&since=1h")).await;
    assert_eq!(sugg.status, 200);
    let sugg = sugg.json();
    assert!(
        sugg["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["field"] == "/employment_status" && g["fix"] == "lowercase"),
        "{sugg}"
    );
    let html = get(&format!("{admin}/suggest?route=employee&since=1h")).await;
    let html = String::from_utf8_lossy(&html.body).into_owned();
    assert!(html.contains("$lowercase(status)"), "{html}");
    assert!(html.contains("no mapping can fill it"), "{html}");
    let (_, dir) = sd.stop().await;
    let d = dir.path();
    let routes = api["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{api}");
    let cov = &routes[0];
    assert_eq!(cov["route"], json!("employee"));
    assert_eq!(cov["compared"], json!(PEOPLE));
    let field = |f: &str| {
        cov["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["field"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("no {f}: {cov}"))
    };
    // Every employee has an id; two of twelve were terminated (the fixture's i % 6 == 0).
    assert_eq!(field("/id")["compared"], json!(PEOPLE));
    assert_eq!(field("/id")["differing"], json!(0));
    assert_eq!(field("/terminated_at")["compared"], json!(2));
    assert_eq!(field("/terminated_at")["parity"], json!(1.0));
    assert_eq!(field("/department")["compared"], json!(PEOPLE));
    assert_eq!(field("/department")["parity"], json!(0.0));
    // The least compared first.
    assert_eq!(cov["fields"][0]["field"], json!("/terminated_at"));
    // The reference's fields that no exchange had.
    assert_eq!(
        cov["unexercised"],
        json!([
            {"field": "/emergency_contact", "known_from": "reference"},
            {"field": "/emergency_contact/name", "known_from": "reference"}
        ])
    );

    // The report has the same, and says it in Markdown.
    let (code, out, err) = run(d, "report --since 1h --format json");
    assert_eq!(code, 0, "{err}");
    let report = json_of(&out);
    let employee = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "employee")
        .unwrap();
    assert_eq!(employee["coverage"], *cov);
    let (_, md, _) = run(d, "report --since 1h");
    assert!(
        md.contains("never exercised in the window**: `/emergency_contact` (reference)"),
        "{md}"
    );

    // The gate: every field compared 3 times at least; /terminated_at was twice.
    let (code, out, _) = run(d, "gate --phase canary --since 1h --format json");
    assert_eq!(code, 1, "{out}");
    let v = json_of(&out);
    let check = &v["checks"][0];
    assert_eq!(check["criterion"], json!("min_field_samples"));
    assert_eq!(check["measured"], json!(2.0));
    assert!(
        check["note"]
            .as_str()
            .unwrap()
            .contains("employee /terminated_at (2)"),
        "{check}"
    );
    std::fs::write(
        d.join("shadowdiff.toml"),
        std::fs::read_to_string(d.join("shadowdiff.toml"))
            .unwrap()
            .replace("min_field_samples = 3", "min_field_samples = 2"),
    )
    .unwrap();
    let (code, out, _) = run(d, "gate --phase canary --since 1h");
    assert_eq!(code, 0, "{out}");
}

/// #32 item 5: a change of the diff rules alone starts a new `mapping_version`, on a mapped
/// route and on an unmapped one (`rules-…`), so the parity since a rules fix can be isolated;
/// `check` prints the version the exchanges record; `rediff` still judges the unmapped
/// route's exchanges (their stored documents are the ones that came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_the_rules_alone_starts_a_new_version() {
    let legacy = Upstream::start(|s| {
        Reply::json(match s.uri.as_str() {
            "/m" => json!({"id": 1, "name": "Ann", "updated": "2026-01-01"}),
            _ => json!({"x": 1, "updated": "2026-01-01"}),
        })
    })
    .await;
    let candidate = Upstream::start(|s| {
        Reply::json(match s.uri.as_str() {
            "/m" => json!({"id": 1, "full_name": "Ann", "updated": "2026-02-02"}),
            _ => json!({"x": 1, "updated": "2026-02-02"}),
        })
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("m.jsonata"),
        r#"{"id": id, "name": full_name, "updated": updated}"#,
    )
    .unwrap();
    let store = files.path().join("sd.db");
    let routes = format!(
        "[store]\npath = \"{}\"\n[[routes]]\nname = \"m\"\npath = \"/m\"\n[routes.candidate]\nmapping = \"m.jsonata\"\n[[routes]]\nname = \"u\"\npath = \"/u\"\n",
        store.display()
    );
    let fixed = format!("[diff]\nignore = [\"/updated\"]\n{routes}");
    let mut versions = Vec::new();
    for toml in [&routes, &fixed] {
        let sd =
            Shadowdiff::start_with_files(&legacy.url(), &candidate.url(), toml, Some(files.path()))
                .await;
        for _ in 0..3 {
            assert_eq!(get(&sd.url("/m")).await.status, 200);
            assert_eq!(get(&sd.url("/u")).await.status, 200);
        }
        sd.quiesce().await;
        let (_, dir) = sd.stop().await;
        // What `check` says the exchanges record, with this config.
        let (code, out, err) = run(dir.path(), "check");
        assert_eq!(code, 0, "{err}");
        let said: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# mapping_version recorded: "))
            .map(str::to_owned)
            .collect();
        versions.push((said, dir));
    }
    let rows = query(
        &store,
        "SELECT route, outcome, mapping_version FROM exchanges ORDER BY id",
    );
    assert_eq!(rows.len(), 12, "{rows:?}");
    let of = |route: &str, run: std::ops::Range<usize>| -> Vec<Value> {
        let mut v: Vec<Value> = rows[run]
            .iter()
            .filter(|r| r[0] == json!(route))
            .map(|r| r[2].clone())
            .collect();
        v.dedup();
        v
    };
    // One version per route and run; the rules alone changed both.
    let (m0, m1) = (of("m", 0..6), of("m", 6..12));
    let (u0, u1) = (of("u", 0..6), of("u", 6..12));
    assert_eq!(
        (m0.len(), m1.len(), u0.len(), u1.len()),
        (1, 1, 1, 1),
        "{rows:?}"
    );
    assert_ne!(
        m0, m1,
        "the mapped route's version did not change: {rows:?}"
    );
    assert_eq!(u0, vec![Value::Null], "no rule, no mapping: no version");
    let u1 = u1[0].as_str().expect("the rules' version").to_owned();
    assert!(u1.starts_with("rules-"), "{u1}");
    // `check` printed what was recorded: the mapped route's version, then (second config)
    // both routes'.
    assert_eq!(versions[0].0, vec![m0[0].as_str().unwrap().to_owned()]);
    assert_eq!(
        versions[1].0,
        vec![m1[0].as_str().unwrap().to_owned(), u1.clone()]
    );
    // The parity since the rules fix: only the second run's exchanges, all matching.
    let d = versions[1].1.path();
    for (route, version) in [("m", m1[0].as_str().unwrap()), ("u", u1.as_str())] {
        let (code, out, err) = run(
            d,
            &format!("report --since 1h --format json --mapping-version {version}"),
        );
        assert_eq!(code, 0, "{err}");
        let report = json_of(&out);
        let rt = report["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("no route {route}: {out}"))
            .clone();
        assert_eq!(rt["compared"], json!(3), "{route}: {rt}");
        assert_eq!(rt["parity"], json!(1.0), "{route}: {rt}");
    }
    // Rediff with today's rules judges the exchanges that kept their bodies (the first run's
    // differing six), the unmapped route's as well: all fixed, under today's versions.
    let (code, out, err) = run(d, "rediff --since 1h --format json");
    assert_eq!(code, 0, "{err}");
    let rediff = json_of(&out);
    assert_eq!(rediff["summary"]["exchanges"], json!(6), "{out}");
    for (route, now) in [("m", &m1[0]), ("u", &json!(u1))] {
        let r = rediff["summary"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("no route {route}: {out}"));
        assert_eq!(r["fixed_count"], json!(3), "{route}: {out}");
        assert_eq!(r["versions"], json!([now]), "{route}: {out}");
    }
    assert!(
        rediff["summary"]["skipped"]
            .as_object()
            .is_none_or(|s| s.is_empty()),
        "{out}"
    );
}

/// A compared header whose values the store redacts (`set-cookie`) reads `[redacted]` on both
/// sides when judged again: its recorded difference is not re-judged, and never "fixed" (an
/// unchanged config's rediff called every such exchange fixed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_difference_at_a_redacted_header_is_never_fixed() {
    let legacy =
        Upstream::start(|_| Reply::json(json!({"a": 1})).header("set-cookie", "s=L")).await;
    let candidate =
        Upstream::start(|_| Reply::json(json!({"a": 1})).header("set-cookie", "s=C")).await;
    let toml = r#"
[diff]
headers = ["content-type", "set-cookie"]

[store]
path = "store/shadowdiff.db"
bodies = "always"
exchanges = "all"
"#;
    let sd = Shadowdiff::start(&legacy.url(), &candidate.url(), toml).await;
    for i in 0..3 {
        get(&sd.url(&format!("/p/{i}"))).await;
    }
    sd.quiesce().await;
    let (_, dir) = sd.stop().await;
    let d = dir.path();
    std::fs::write(d.join("shadowdiff.toml"), toml).unwrap();
    let (code, out, err) = run(d, "rediff --since 1h --format json");
    assert_eq!(code, 0, "{out}{err}");
    let rediff = json_of(&out);
    let route = &rediff["summary"]["routes"][0];
    assert_eq!(route["fixed_count"], 0, "{rediff}");
    assert_eq!(route["not_rejudged"], 3, "{rediff}");
}
