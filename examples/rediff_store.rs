//! Writes a store of recorded exchanges with kept bodies for the mapping-loop benchmarks
//! (BENCHMARKS.md §13), through the store's own writer:
//!
//!     cargo run --release --example rediff_store -- DB EXCHANGES
//!
//! Every exchange is route `employee`, recorded with the mapping of `bench/rediff/employee.jsonata`
//! (version `bench0broken`): the legacy employee, the candidate's document as it came
//! (`candidate_raw`) and as that mapping shaped it (`candidate`), ~0.5 KB each and different for
//! every exchange (no blob is shared), with the differences the mapping leaves (recorded from
//! the two documents by the diff engine). All within the last hour.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use shadowdiff::record::{BodyText, Meta, Outcome, Record, StoredBody};
use shadowdiff::store::{Location, Store, WriterOptions};

const TYPES: [(&str, &str); 3] = [
    ("FT", "full_time"),
    ("PT", "part_time"),
    ("CT", "contractor"),
];

fn legacy(i: u64) -> Value {
    json!({
        "id": format!("emp-{i:06}"),
        "first_name": format!("First{i}"),
        "last_name": format!("Last{i}"),
        "title": format!("Engineer {}", i % 7),
        "employment_status": if i.is_multiple_of(5) { "inactive" } else { "active" },
        "employment_type": TYPES[(i % 3) as usize].1,
        "salary": 90_000 + i,
        "location": {"city": format!("City {}", i % 40)},
        "manager_id": format!("emp-{:06}", i / 10),
    })
}

fn raw(i: u64) -> Value {
    json!({
        "id": format!("u-{}", 7_000_000 + i),
        "remote_id": format!("emp-{i:06}"),
        "given_name": format!("First{i}"),
        "family_name": format!("Last{i}"),
        "job": {"title": format!("Engineer {}", i % 7)},
        "status": if i.is_multiple_of(5) { "INACTIVE" } else { "ACTIVE" },
        "employment_type": TYPES[(i % 3) as usize].0,
        "compensation": {"amount": format!("{}", 90_000 + i), "currency": "EUR"},
        "work_location": {"city": format!("City {}", i % 40)},
        "manager": {"remote_id": format!("emp-{:06}", i / 10)},
    })
}

/// What `bench/rediff/employee.jsonata` makes of [`raw`].
fn mapped(i: u64) -> Value {
    let r = raw(i);
    json!({
        "id": r["remote_id"],
        "last_name": r["family_name"],
        "employment_status": r["status"],
        "employment_type": r["employment_type"],
        "salary": r["compensation"]["amount"],
        "location": {"city": r["work_location"]["city"]},
    })
}

fn body(side: &'static str, v: &Value) -> StoredBody {
    StoredBody {
        side,
        status: Some(200),
        headers: json!({"content-type": "application/json"}),
        body: Some(BodyText::new(v.to_string())),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: rediff_store DB EXCHANGES")?;
    let exchanges: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let location = Location::parse(&db);
    let store = Store::open_at(
        &location,
        WriterOptions {
            queue: 100_000,
            priority: shadowdiff::background::Priority::Normal,
            retention: Duration::from_secs(86400 * 30),
            max_value_len: 1024,
            examples_per_field: 3,
            exchanges: shadowdiff::store::Rows::All,
            rows_per_hour: 100,
            migrate: true,
            reauth_after: 3,
            id_max_pairs: Vec::new(),
            webhooks: Vec::new(),
        },
    )?;
    let handle = store.handle();
    let rules = shadowdiff::diff::Rules::default();
    let now = SystemTime::now();
    let started = Instant::now();
    for i in 0..exchanges {
        let (l, c, r) = (legacy(i), mapped(i), raw(i));
        let diffs = shadowdiff::diff::diff(&l, &c, &rules);
        let mut p = shadowdiff::diff::Patterns::default();
        p.add(&l, 1000);
        p.add(&c, 1000);
        handle.record(Record {
            meta: Meta {
                started_at: now - Duration::from_millis(3_000_000 - 3_000_000 * i / exchanges),
                request_id: format!("rediff-{i}"),
                route: Some("employee".into()),
                method: "GET".into(),
                path: format!("/employees/emp-{i:06}"),
                account: Some(format!("account-{:02}", i % 50)),
                serving: Default::default(),
            },
            legacy_status: Some(200),
            candidate_status: Some(200),
            legacy_ms: Some(10.0),
            candidate_ms: Some(20.0),
            outcome: if diffs.is_empty() {
                Outcome::Match
            } else {
                Outcome::Diff
            },
            reason: None,
            diff_count: diffs.len(),
            diffs: Arc::new(diffs),
            present: Arc::new(p.list),
            bodies: vec![
                body("legacy", &l),
                body("candidate", &c),
                body("candidate_raw", &r),
            ],
            mapping_version: Some("bench0broken".into()),
            field_counts: None,
            ids: None,
        });
        if i % 20_000 == 19_999 {
            handle.flush_blocking();
        }
    }
    handle.flush_blocking();
    let stats = store.close();
    println!(
        "{location}: {} exchanges with kept bodies written ({} dropped) in {:.1} s",
        stats.written(),
        stats.dropped(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
