//! Fakes of two real HRIS APIs, written from their public references (no code copied): Finch
//! (the API reference at developer.tryfinch.com and the types of its Python SDK, `finch-api`
//! 2.9.1) and Merge's HRIS API (docs.merge.dev/hris and the models of its open-source SDKs).
//! Each keeps its own ids, paging and auth placement, as the real ones do:
//!
//! - **Finch**: `Authorization: Bearer <access token>` (one token per connected company);
//!   `GET /employer/company`; `GET /employer/directory?limit&offset` (offset paging, `paging.count`
//!   is the total); batch reads `POST /employer/individual` and `POST /employer/employment` with
//!   `{"requests":[{"individual_id"}]}`, answered `{"responses":[{"individual_id","code","body"}]}`
//!   (an unknown id is `code` 404 with a batch error body). Ids are Finch's UUIDs.
//! - **Merge HRIS** (under `/api/hris/v1`): `Authorization: Bearer <API key>` plus the linked
//!   account's `X-Account-Token`; `GET /employees?cursor&page_size&expand` (cursor paging:
//!   `{"next","previous","results"}`, opaque cursors), `GET /employees/{id}`, `GET /employments`,
//!   `GET /companies`; `expand=team,employments,manager` inlines those objects. Enums upper case
//!   (`FULL_TIME`, `ACTIVE`, `YEAR`), dates as date-times. Ids are Merge's UUIDs, unrelated to
//!   Finch's; `remote_id` is the HR system's own id.
//!
//! Both answer from one company of seven people ([`people`]); the Merge side carries three
//! planted gaps ([`PLANTED`]).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{Reply, Seen, Upstream};

/// The Finch access token of the fake company (what the app sends as its bearer token).
pub const FINCH_TOKEN: &str = "finch-acme-access-token-5f2c";
/// Merge's API key (the organisation's) and the company's linked-account token.
pub const MERGE_KEY: &str = "merge-prod-api-key-91d0";
pub const MERGE_ACCOUNT_TOKEN: &str = "merge-acme-account-token-77ab";

/// The differences the Merge fake was given on purpose (what the comparison must find): one
/// person's last name, one person's active flag, and the company's EIN without its dash.
pub const PLANTED: [&str; 3] = [
    "person 2's last name: Okafor on Finch, Okafor-Reyes on Merge",
    "person 4 is active on Finch, INACTIVE on Merge",
    "the company's EIN: 12-3456789 on Finch, 123456789 on Merge",
];

/// One employee as the HR system holds it, with each vendor's id for them.
pub struct Person {
    pub finch_id: String,
    pub merge_id: String,
    /// The HR system's own id (Merge's `remote_id`, Finch's employment `source_id`).
    pub remote_id: String,
    pub first: &'static str,
    pub middle: Option<&'static str>,
    pub last: &'static str,
    pub work_email: String,
    pub personal_email: String,
    pub phone: &'static str,
    pub dob: &'static str,
    pub gender: &'static str,
    pub title: &'static str,
    pub team: &'static str,
    pub manager: Option<usize>,
    pub start: &'static str,
    pub active: bool,
    /// Yearly salary in dollars.
    pub salary: u64,
}

/// first, middle, last, date of birth, gender, title, team, manager, start date, salary.
type Row = (
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<usize>,
    &'static str,
    u64,
);

/// The seven people of the company.
pub fn people() -> Vec<Person> {
    let rows: [Row; 7] = [
        (
            "Amara",
            None,
            "Lindqvist",
            "1981-04-12",
            "female",
            "Chief Executive Officer",
            "Leadership",
            None,
            "2016-02-01",
            310_000,
        ),
        (
            "Bastien",
            Some("Jules"),
            "Moreau",
            "1987-09-30",
            "male",
            "VP Engineering",
            "Engineering",
            Some(0),
            "2017-06-12",
            245_000,
        ),
        (
            "Chidinma",
            None,
            "Okafor",
            "1992-01-05",
            "female",
            "Software Engineer",
            "Engineering",
            Some(1),
            "2019-03-04",
            165_000,
        ),
        (
            "Dmitri",
            Some("A."),
            "Volkov",
            "1990-11-22",
            "male",
            "Site Reliability Engineer",
            "Engineering",
            Some(1),
            "2020-08-17",
            172_000,
        ),
        (
            "Esperanza",
            None,
            "Ruiz",
            "1985-07-19",
            "female",
            "Head of People",
            "People",
            Some(0),
            "2018-01-08",
            190_000,
        ),
        (
            "Farid",
            None,
            "Haddad",
            "1995-03-03",
            "male",
            "Recruiter",
            "People",
            Some(4),
            "2022-05-23",
            98_000,
        ),
        (
            "Grace",
            Some("Min"),
            "Park",
            "1993-12-14",
            "other",
            "Product Designer",
            "Design",
            Some(0),
            "2021-10-04",
            150_000,
        ),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, r)| Person {
            // Finch: UUID v4; Merge: UUIDs of its own; the HR system: numeric employee ids.
            finch_id: format!(
                "{:08x}-5e1d-4c8b-9f3a-{:012x}",
                0x1a2b_0000 + i * 7919,
                0xf17c_0000 + i * 104_729
            ),
            merge_id: format!(
                "{:08x}-0d3e-47a1-b6c2-{:012x}",
                0x9c40_0000 + i * 6007,
                0x3e6a_0000 + i * 86_243
            ),
            remote_id: format!("{}", 10_400 + i * 17),
            first: r.0,
            middle: r.1,
            last: r.2,
            work_email: format!("{}@acme.example", r.0.to_lowercase()),
            personal_email: format!("{}.{}@mail.example", r.0.to_lowercase(), r.2.to_lowercase()),
            phone: [
                "+15555550100",
                "+15555550101",
                "+15555550102",
                "+15555550103",
                "+15555550104",
                "+15555550105",
                "+15555550106",
            ][i],
            dob: r.3,
            gender: r.4,
            title: r.5,
            team: r.6,
            manager: r.7,
            start: r.8,
            active: true,
            salary: r.9,
        })
        .collect()
}

const COMPANY_NAME: &str = "Acme Robotics, Inc.";
pub const FINCH_COMPANY_ID: &str = "514aa2b7-898f-4ce7-bc05-c2fe993713e8";
pub const MERGE_COMPANY_ID: &str = "0f8f3c37-6f1e-4c9a-9e3d-22b1d2c6a7c1";
const TEAMS: [(&str, &str); 4] = [
    ("Leadership", "7c1e2b0a-3a51-4f57-9d0b-0e2f1a6b9c01"),
    ("Engineering", "7c1e2b0a-3a51-4f57-9d0b-0e2f1a6b9c02"),
    ("People", "7c1e2b0a-3a51-4f57-9d0b-0e2f1a6b9c03"),
    ("Design", "7c1e2b0a-3a51-4f57-9d0b-0e2f1a6b9c04"),
];

fn query_of(uri: &str) -> HashMap<String, String> {
    uri.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                    (k.to_owned(), v.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn path_of(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

fn header<'a>(s: &'a Seen, name: &str) -> Option<&'a str> {
    s.headers.get(name).and_then(|v| v.to_str().ok())
}

// ------------------------------------------------------------------------------------ Finch

fn finch_error(code: u16, name: &str, message: &str) -> Reply {
    Reply::json(json!({"code": code, "finch_code": null, "message": message, "name": name}))
        .status(code)
}

fn finch_directory_entry(ps: &[Person], p: &Person) -> Value {
    json!({
        "id": p.finch_id,
        "first_name": p.first,
        "middle_name": p.middle,
        "last_name": p.last,
        "manager": p.manager.map(|m| json!({"id": ps[m].finch_id})),
        "department": {"name": p.team},
        "is_active": p.active,
    })
}

fn finch_individual(p: &Person) -> Value {
    json!({
        "id": p.finch_id,
        "first_name": p.first,
        "middle_name": p.middle,
        "last_name": p.last,
        "preferred_name": null,
        "emails": [{"data": p.work_email, "type": "work"}, {"data": p.personal_email, "type": "personal"}],
        "phone_numbers": [{"data": p.phone, "type": "personal"}],
        "gender": p.gender,
        "ethnicity": null,
        "dob": p.dob,
        "residence": null,
        "ssn": null,
        "encrypted_ssn": null,
    })
}

fn finch_employment(ps: &[Person], p: &Person) -> Value {
    json!({
        "id": p.finch_id,
        "first_name": p.first,
        "middle_name": p.middle,
        "last_name": p.last,
        "title": p.title,
        "manager": p.manager.map(|m| json!({"id": ps[m].finch_id})),
        "department": {"name": p.team},
        "employment": {"type": "employee", "subtype": "full_time"},
        "start_date": p.start,
        "end_date": null,
        "latest_rehire_date": null,
        "is_active": p.active,
        "employment_status": if p.active { "active" } else { "terminated" },
        "class_code": null,
        "location": null,
        "income": {"unit": "yearly", "amount": p.salary * 100, "currency": "usd", "effective_date": p.start},
        "income_history": [],
        "custom_fields": [],
        "source_id": p.remote_id,
        "work_id": null,
    })
}

/// A batch read's answer: one response per request, in order; an unknown id is a 404 of its
/// own inside a 200.
fn finch_batch(s: &Seen, body: impl Fn(&Person) -> Value) -> Reply {
    let Ok(req) = serde_json::from_slice::<Value>(&s.body) else {
        return finch_error(400, "invalid_request_error", "the body is not JSON");
    };
    let Some(requests) = req["requests"].as_array() else {
        return finch_error(400, "invalid_request_error", "requests is required");
    };
    let ps = people();
    let responses: Vec<Value> = requests
        .iter()
        .map(|r| {
            let id = r["individual_id"].as_str().unwrap_or("");
            match ps.iter().find(|p| p.finch_id == id) {
                Some(p) => json!({"individual_id": id, "code": 200, "body": body(p)}),
                None => json!({"individual_id": id, "code": 404, "body": {
                    "code": 404, "finch_code": "individual_not_found",
                    "message": "the individual was not found", "name": "not_found_error"}}),
            }
        })
        .collect();
    Reply::json(json!({ "responses": responses }))
}

/// The Finch fake (the legacy vendor).
pub async fn finch() -> Upstream {
    Upstream::start(|s| {
        if header(s, "authorization") != Some(&format!("Bearer {FINCH_TOKEN}")) {
            return finch_error(401, "authentication_error", "invalid access token");
        }
        let ps = people();
        match (s.method.as_str(), path_of(&s.uri)) {
            ("GET", "/employer/company") => Reply::json(json!({
                "id": FINCH_COMPANY_ID,
                "legal_name": COMPANY_NAME,
                "entity": {"type": "corporation", "subtype": "c_corporation"},
                "ein": "12-3456789",
                "primary_email": "amara@acme.example",
                "primary_phone_number": "+15555550100",
                "departments": TEAMS.iter().map(|(n, _)| json!({"name": n, "parent": null})).collect::<Vec<_>>(),
                "locations": [{"line1": "1 Market St", "line2": null, "city": "San Francisco", "state": "CA", "postal_code": "94105", "country": "US", "name": "HQ", "source_id": null}],
                "accounts": [],
            })),
            ("GET", "/employer/directory") => {
                let q = query_of(&s.uri);
                let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
                let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
                let page: Vec<Value> = ps
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|p| finch_directory_entry(&ps, p))
                    .collect();
                Reply::json(json!({"paging": {"count": ps.len(), "offset": offset}, "individuals": page}))
            }
            ("POST", "/employer/individual") => finch_batch(s, finch_individual),
            ("POST", "/employer/employment") => finch_batch(s, |p| finch_employment(&ps, p)),
            _ => finch_error(404, "not_found_error", "no such route"),
        }
    })
    .await
}

// ------------------------------------------------------------------------------------ Merge

/// The Merge side of a person, with the planted gaps.
fn merge_person(i: usize, p: &Person) -> (String, bool) {
    match i {
        2 => (format!("{}-Reyes", p.last), p.active),
        4 => (p.last.to_owned(), false),
        _ => (p.last.to_owned(), p.active),
    }
}

fn merge_employment(p: &Person) -> Value {
    json!({
        "id": format!("e{}", &p.merge_id[1..]),
        "remote_id": format!("{}-1", p.remote_id),
        "employee": p.merge_id,
        "job_title": p.title,
        "pay_rate": p.salary as f64,
        "pay_period": "YEAR",
        "pay_frequency": "SEMIMONTHLY",
        "pay_currency": "USD",
        "pay_group": null,
        "flsa_status": "EXEMPT",
        "effective_date": format!("{}T00:00:00Z", p.start),
        "employment_type": "FULL_TIME",
        "remote_was_deleted": false,
        "created_at": "2024-05-01T09:00:00Z",
        "modified_at": "2024-05-01T09:00:00Z",
        "field_mappings": null,
        "remote_data": null,
    })
}

fn merge_employee(ps: &[Person], i: usize, expand: &[&str]) -> Value {
    let p = &ps[i];
    let (last, active) = merge_person(i, p);
    let team_id = TEAMS
        .iter()
        .find(|(n, _)| *n == p.team)
        .map(|(_, id)| *id)
        .unwrap_or("");
    let team = if expand.contains(&"team") {
        json!({"id": team_id, "remote_id": null, "name": p.team, "parent_team": null, "remote_was_deleted": false})
    } else {
        json!(team_id)
    };
    let employments = if expand.contains(&"employments") {
        json!([merge_employment(p)])
    } else {
        json!([format!("e{}", &p.merge_id[1..])])
    };
    let manager = match p.manager {
        None => Value::Null,
        Some(m) if expand.contains(&"manager") => {
            json!({"id": ps[m].merge_id, "first_name": ps[m].first, "last_name": merge_person(m, &ps[m]).0})
        }
        Some(m) => json!(ps[m].merge_id),
    };
    json!({
        "id": p.merge_id,
        "remote_id": p.remote_id,
        "employee_number": p.remote_id,
        "company": MERGE_COMPANY_ID,
        "first_name": p.first,
        "last_name": last,
        "preferred_name": null,
        "display_full_name": format!("{} {}", p.first, last),
        "username": null,
        "groups": [],
        "work_email": p.work_email,
        "personal_email": p.personal_email,
        "mobile_phone_number": p.phone,
        "employments": employments,
        "home_location": null,
        "work_location": null,
        "manager": manager,
        "team": team,
        "pay_group": null,
        "ssn": null,
        "gender": p.gender.to_uppercase(),
        "ethnicity": null,
        "marital_status": null,
        "date_of_birth": format!("{}T00:00:00Z", p.dob),
        "hire_date": format!("{}T00:00:00Z", p.start),
        "start_date": format!("{}T00:00:00Z", p.start),
        "remote_created_at": format!("{}T00:00:00Z", p.start),
        "employment_status": if active { "ACTIVE" } else { "INACTIVE" },
        "termination_date": null,
        "avatar": null,
        "custom_fields": null,
        "remote_was_deleted": false,
        "created_at": "2024-05-01T09:00:00Z",
        "modified_at": "2024-05-01T09:00:00Z",
        "field_mappings": null,
        "remote_data": null,
    })
}

/// An opaque cursor (Merge's are base64 text the client passes back as it is).
fn cursor(at: usize) -> String {
    format!("cD0yMDI0LTA1LTAx{at:04}")
}

fn merge_page(items: &[Value], q: &HashMap<String, String>) -> Reply {
    let size: usize = q
        .get("page_size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 100);
    let start: usize = match q.get("cursor") {
        None => 0,
        Some(c) => match c
            .strip_prefix("cD0yMDI0LTA1LTAx")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => n,
            None => return Reply::json(json!({"detail": "Invalid cursor."})).status(400),
        },
    };
    let page: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len()).then(|| cursor(start + size));
    let previous = (start > 0).then(|| cursor(start.saturating_sub(size)));
    Reply::json(json!({"next": next, "previous": previous, "results": page}))
}

/// Someone hired in the HR system whom only Merge has synced yet (for [`merge_with_newcomer`]).
pub fn newcomer() -> Person {
    Person {
        finch_id: "not-in-finch".into(),
        merge_id: "9c4f0000-0d3e-47a1-b6c2-00003e6effff".into(),
        remote_id: "10999".into(),
        first: "Hiro",
        middle: None,
        last: "Tanaka",
        work_email: "hiro@acme.example".into(),
        personal_email: "hiro.tanaka@mail.example".into(),
        phone: "+15555550199",
        dob: "1996-06-06",
        gender: "male",
        title: "Data Engineer",
        team: "Engineering",
        manager: Some(1),
        start: "2024-11-25",
        active: true,
        salary: 160_000,
    }
}

/// The Merge HRIS fake (the candidate vendor).
pub async fn merge() -> Upstream {
    merge_of(false).await
}

/// The Merge fake with one more employee than Finch has ([`newcomer`], listed last).
pub async fn merge_with_newcomer() -> Upstream {
    merge_of(true).await
}

async fn merge_of(newcomer_too: bool) -> Upstream {
    Upstream::start(move |s| {
        if header(s, "authorization") != Some(&format!("Bearer {MERGE_KEY}")) {
            return Reply::json(json!({"detail": "Invalid API key."})).status(401);
        }
        if header(s, "x-account-token") != Some(MERGE_ACCOUNT_TOKEN) {
            return Reply::json(json!({"detail": "Invalid account token."})).status(401);
        }
        if s.method != "GET" {
            return Reply::json(json!({"detail": "Method not allowed."})).status(405);
        }
        let q = query_of(&s.uri);
        let expand: Vec<&str> = q
            .get("expand")
            .map_or(Vec::new(), |e| e.split(',').collect());
        let mut ps = people();
        if newcomer_too {
            ps.push(newcomer());
        }
        let path = path_of(&s.uri);
        let Some(rest) = path.strip_prefix("/api/hris/v1/") else {
            return Reply::json(json!({"detail": "Not found."})).status(404);
        };
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["employees"] => {
                let items: Vec<Value> = (0..ps.len())
                    .map(|i| merge_employee(&ps, i, &expand))
                    .collect();
                merge_page(&items, &q)
            }
            ["employees", id] => match ps.iter().position(|p| p.merge_id == *id) {
                Some(i) => Reply::json(merge_employee(&ps, i, &expand)),
                None => Reply::json(json!({"detail": "Not found."})).status(404),
            },
            ["employments"] => {
                let items: Vec<Value> = ps.iter().map(merge_employment).collect();
                merge_page(&items, &q)
            }
            ["companies"] => merge_page(
                &[json!({
                    "id": MERGE_COMPANY_ID,
                    "remote_id": "acme-1",
                    "legal_name": COMPANY_NAME,
                    "display_name": "Acme Robotics",
                    "eins": ["123456789"],
                    "remote_was_deleted": false,
                    "created_at": "2024-05-01T09:00:00Z",
                    "modified_at": "2024-05-01T09:00:00Z",
                    "field_mappings": null,
                    "remote_data": null,
                })],
                &q,
            ),
            _ => Reply::json(json!({"detail": "Not found."})).status(404),
        }
    })
    .await
}

/// Runs `script` with the official Finch Python SDK (`finch-api`, installed into target/py by
/// scripts/test.sh) and these arguments; returns its stdout as JSON.
pub fn finch_sdk(script: &str, args: &[&str]) -> Value {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", &py)
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "the Finch SDK failed (bash scripts/test.sh installs it into target/py):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
