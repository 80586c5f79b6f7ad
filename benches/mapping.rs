//! Mapping cost: a 10,000-record unified employees page mapped back to the legacy directory
//! schema, by the same mapping in JSONata and in jq.
//!
//! `engine/*` is the evaluation alone (compiled mapping, parsed input, in this process);
//! `worker/*` is what an exchange pays: the round trip to a mapping worker process (serialise,
//! pipe, parse, evaluate, serialise, parse back). `parse_input` is serde_json parsing the page,
//! for scale. Run: `cargo bench --bench mapping` (build the binary first: `cargo build --release`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use shadowdiff::mapping::runner::Runner;
use shadowdiff::mapping::{compile, Chain, Lang, Level, Limits};

const JSONATA: &str = r#"{
  "individuals": [results.{
    "id": remote_id,
    "first_name": first_name,
    "last_name": last_name,
    "manager": manager ? {"id": manager} : null,
    "department": {"name": team},
    "is_active": employment_status = "ACTIVE"
  }],
  "paging": {"count": $count(results), "offset": 0}
}"#;

const JQ: &str = r#"{
  individuals: [.results[] | {
    id: .remote_id,
    first_name,
    last_name,
    manager: (if .manager then {id: .manager} else null end),
    department: {name: .team},
    is_active: (.employment_status == "ACTIVE")
  }],
  paging: {count: (.results | length), offset: 0}
}"#;

fn page(n: usize) -> Value {
    let results: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("u-{i}"), "remote_id": format!("fin-{i:05}"),
                "first_name": format!("First{i}"), "last_name": format!("Last{i}"),
                "manager": if i % 10 == 0 { Value::Null } else { json!(format!("fin-{:05}", i / 10)) },
                "team": format!("Team {}", i % 12),
                "employment_status": if i % 17 == 0 { "INACTIVE" } else { "ACTIVE" },
            })
        })
        .collect();
    json!({"next": null, "results": results})
}

fn bench(c: &mut Criterion) {
    let input = page(10_000);
    let text = input.to_string();
    eprintln!("input: {} records, {} bytes", 10_000, text.len());
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/shadowdiff");
    let runner = exe.is_file().then(|| Runner::new(exe, 1));
    let mut g = c.benchmark_group("map_10k");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("parse_input", |b| {
        b.iter(|| serde_json::from_str::<Value>(black_box(&text)).unwrap());
    });
    for (name, lang, src) in [("jsonata", Lang::Jsonata, JSONATA), ("jq", Lang::Jq, JQ)] {
        let m = compile(lang, src).unwrap();
        let limits = Limits::new(Duration::from_secs(60));
        let out = m.apply(&input, &limits).unwrap();
        assert_eq!(out["individuals"].as_array().unwrap().len(), 10_000);
        g.bench_function(format!("engine/{name}"), |b| {
            b.iter(|| m.apply(black_box(&input), &limits).unwrap());
        });
        if let Some(r) = &runner {
            let chain = Chain::new(vec![Level {
                name: "base".into(),
                origin: name.into(),
                mapping: m.clone(),
            }]);
            g.bench_function(format!("worker/{name}"), |b| {
                b.iter(|| {
                    r.run(&chain, black_box(&input), Duration::from_secs(60))
                        .unwrap()
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
