//! The diff core against `json_patch::diff` on the same documents.
//!
//! Run: `cargo bench --bench diff` (medians in target/criterion/*/new/estimates.json).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use shadowdiff::diff::{diff, Rules};

/// The binary's allocator (src/main.rs), so that the figures are the proxy's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An HRIS directory page like the benchmark upstream's: `n` employees with nested objects and
/// arrays. The candidate variant renames one member, changes 5 % of the statuses and reverses
/// the key order of `location` (equal JSON).
fn directory(n: usize, candidate: bool) -> Value {
    let people: Vec<Value> = (0..n)
        .map(|i| {
            let status = if candidate && i % 20 == 7 { "on_leave" } else { "active" };
            let mut e = json!({
                "id": format!("emp-{i:05}"),
                "first_name": format!("First{i}"),
                "last_name": format!("Last{i}"),
                "email": format!("person{i}@example.com"),
                "employment": {"type": "full_time", "status": status, "start_date": "2019-04-01", "title": "Engineer"},
                "department": {"id": i % 12, "name": format!("Dept {}", i % 12)},
                "location": {"city": "Berlin", "country": "DE", "postal_code": "10115", "line1": "Street 1"},
                "compensation": {"amount": 50000 + i * 10, "currency": "EUR", "period": "year"},
                "phones": [{"type": "work", "number": format!("+49 30 {i:07}")}, {"type": "mobile", "number": null}],
                "groups": ["all", format!("team-{}", i % 7)],
            });
            if candidate {
                e["manager_employee_id"] = json!(format!("emp-{:05}", i / 10));
            } else {
                e["manager_id"] = json!(format!("emp-{:05}", i / 10));
            }
            e
        })
        .collect();
    json!({"individuals": people, "paging": {"count": n, "offset": 0}})
}

/// A deep document: 100 nested levels (an org chart down a reporting line), each level with a
/// few members, a small array of objects and the next level. The candidate changes one value
/// at the bottom and one array element half-way.
fn deep(candidate: bool) -> Value {
    let mut v = json!({"id": "leaf", "title": if candidate { "Intern" } else { "Apprentice" }});
    for level in (0..100).rev() {
        let peers: Vec<Value> = (0..3)
            .map(|k| {
                let name = if candidate && level == 50 && k == 1 {
                    "Changed".to_owned()
                } else {
                    format!("Peer {level}.{k}")
                };
                json!({"id": format!("p{level}-{k}"), "name": name, "since": "2020-01-01"})
            })
            .collect();
        v = json!({
            "id": format!("m{level}"),
            "level": level,
            "name": format!("Manager {level}"),
            "location": {"city": "Berlin", "country": "DE"},
            "peers": peers,
            "reports": v,
        });
    }
    v
}

fn bench(c: &mut Criterion) {
    // The defaults users get: arrays of objects with a unique `id` are matched by it.
    let rules = shadowdiff::config::Config::defaults().diff.rules;
    // The same without automatic keys: arrays aligned by structural hashes.
    let aligned = Rules {
        auto_keys: false,
        ..rules.clone()
    };
    let cases = [
        ("directory_50", directory(50, false), directory(50, true)),
        (
            "directory_1000",
            directory(1000, false),
            directory(1000, true),
        ),
        ("insert_at_head_2000", directory(2000, false), {
            let mut v = directory(2000, false);
            v["individuals"]
                .as_array_mut()
                .unwrap()
                .insert(0, json!({"id": "new"}));
            v
        }),
        // A full export: ~5 MB of JSON per side.
        ("export_5mb", directory(8000, false), directory(8000, true)),
        ("deep_100", deep(false), deep(true)),
    ];
    for (name, l, r) in &cases {
        let text_l = l.to_string();
        let text_r = r.to_string();
        eprintln!(
            "{name}: {} + {} bytes, {} differences",
            text_l.len(),
            text_r.len(),
            diff(l, r, &rules).len()
        );
        let mut g = c.benchmark_group(*name);
        g.sample_size(20);
        g.measurement_time(std::time::Duration::from_secs(3));
        g.bench_function("shadowdiff", |b| {
            b.iter(|| diff(black_box(l), black_box(r), &rules));
        });
        g.bench_function("shadowdiff_aligned", |b| {
            b.iter(|| diff(black_box(l), black_box(r), &aligned));
        });
        g.bench_function("json_patch", |b| {
            b.iter(|| json_patch::diff(black_box(l), black_box(r)));
        });
        g.bench_function("parse_both", |b| {
            b.iter(|| {
                let a: Value = serde_json::from_str(black_box(&text_l)).unwrap();
                let b2: Value = serde_json::from_str(black_box(&text_r)).unwrap();
                (a, b2)
            });
        });
        g.bench_function("parse_and_shadowdiff", |b| {
            b.iter(|| {
                let a: Value = serde_json::from_str(black_box(&text_l)).unwrap();
                let b2: Value = serde_json::from_str(black_box(&text_r)).unwrap();
                diff(&a, &b2, &rules).len()
            });
        });
        // Field presence counting (classification's denominator), both documents.
        g.bench_function("field_patterns", |b| {
            b.iter(|| {
                let mut p = shadowdiff::diff::Patterns::default();
                p.add(black_box(l), 1000);
                p.add(black_box(r), 1000);
                p.list.len()
            });
        });
        g.bench_function("parse_and_json_patch", |b| {
            b.iter(|| {
                let a: Value = serde_json::from_str(black_box(&text_l)).unwrap();
                let b2: Value = serde_json::from_str(black_box(&text_r)).unwrap();
                json_patch::diff(&a, &b2).len()
            });
        });
        g.finish();
    }
}

/// The benchmark harness's page (bench/harness: `bench-upstream --dump legacy|candidate 3`, 24 KB
/// each): what the proxy compares per exchange, parsed the way it parses bodies (the arena
/// document, `diff::doc::parse`) against serde_json's `Value` (the path before it), and the
/// whole comparison of two responses (decode, parse, diff, field patterns, redaction).
fn harness(c: &mut Criterion) {
    use shadowdiff::diff::{diff_docs, doc, Patterns};
    let l = include_bytes!("data/harness-legacy.json");
    let r = include_bytes!("data/harness-candidate.json");
    let mut cfg = shadowdiff::config::Config::defaults();
    // What every exchange costs: the few kept per hour serialise their documents on top.
    cfg.store.bodies = shadowdiff::config::Bodies::Never;
    let rules = cfg.diff.rules.clone();
    let parse_value = |b: &[u8]| shadowdiff::diff::parse_json(b).unwrap();
    let arena = bumpalo::Bump::new();
    // The bound the proxy gives the comparison of these two pages: it lists the store's
    // examples of each field pattern and counts the rest.
    let room = shadowdiff::shadow::compare::LISTING.with_examples(cfg.store.examples_per_field);
    let found = diff_docs(
        &doc::parse(l, &arena).unwrap(),
        &doc::parse(r, &arena).unwrap(),
        &rules,
        room,
    );
    eprintln!(
        "harness_page: {} + {} bytes, {} differences, {} listed",
        l.len(),
        r.len(),
        found.total(),
        found.diffs.len()
    );
    let mut g = c.benchmark_group("harness_page");
    g.sample_size(50);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.bench_function("parse_both_value", |b| {
        b.iter(|| (parse_value(black_box(l)), parse_value(black_box(r))));
    });
    // Each iteration parses into its thread's spare arena, emptied, as each comparison does.
    g.bench_function("parse_both_doc", |b| {
        b.iter(|| {
            let arena = doc::Arena::take();
            let n = doc::parse(black_box(l), &arena).is_ok()
                && doc::parse(black_box(r), &arena).is_ok();
            (n, arena.allocated_bytes())
        });
    });
    g.bench_function("parse_and_diff_value", |b| {
        b.iter(|| {
            diff(
                &parse_value(black_box(l)),
                &parse_value(black_box(r)),
                &rules,
            )
            .len()
        });
    });
    g.bench_function("parse_and_diff_doc", |b| {
        b.iter(|| {
            let arena = doc::Arena::take();
            let (a, z) = (
                doc::parse(black_box(l), &arena).unwrap(),
                doc::parse(black_box(r), &arena).unwrap(),
            );
            diff_docs(&a, &z, &rules, room).diffs.len()
        });
    });
    g.bench_function("parse_diff_patterns_doc", |b| {
        b.iter(|| {
            let arena = doc::Arena::take();
            let (a, z) = (
                doc::parse(black_box(l), &arena).unwrap(),
                doc::parse(black_box(r), &arena).unwrap(),
            );
            let mut p = Patterns::default();
            p.add_doc(&a, 1000);
            p.add_doc(&z, 1000);
            (diff_docs(&a, &z, &rules, room).diffs.len(), p.list.len())
        });
    });
    let headers = http::HeaderMap::new();
    let side = |body: &'static [u8]| shadowdiff::shadow::compare::Side {
        status: http::StatusCode::OK,
        headers: &headers,
        body: bytes::Bytes::from_static(body),
    };
    g.bench_function("compare_bodies", |b| {
        b.iter(|| {
            shadowdiff::shadow::compare::compare_bodies(&side(l), &side(r), &rules, &cfg)
                .diffs
                .len()
        });
    });
    // The same, each comparison after other work has filled the core's caches (in the proxy the
    // caller's thread, both upstreams and the kernel run on the core between two comparisons):
    // the untimed setup writes 2 MiB elsewhere, twice this core's L2, less than the L3, so the
    // pages, the arena and the index are read from L3 as in the proxy (BENCHMARKS.md §20.17).
    let mut elsewhere = vec![0u8; 2 << 20];
    let mut round = 0u8;
    g.bench_function("compare_bodies_cold", |b| {
        b.iter_batched(
            || {
                round = round.wrapping_add(1);
                elsewhere.fill(round);
                black_box(&elsewhere);
            },
            |()| {
                shadowdiff::shadow::compare::compare_bodies(&side(l), &side(r), &rules, &cfg)
                    .diffs
                    .len()
            },
            criterion::BatchSize::PerIteration,
        );
    });
    // Distinct pages, as the harness's `RANDOM_PAGES=1` sends them: each comparison a pair the
    // processor has not just seen (the two pages above, compared again and again, train its
    // branch predictors on one document). The pairs are read from a directory of
    // `NAME.legacy.json` and `NAME.candidate.json` when SHADOWDIFF_BENCH_PAGES names one (a
    // recipe that dumps the harness upstream's pages is in BENCHMARKS.md §20.17).
    if let Some(dir) = std::env::var_os("SHADOWDIFF_BENCH_PAGES") {
        let mut pairs = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("SHADOWDIFF_BENCH_PAGES is a directory") {
            let path = entry.expect("a directory entry").path();
            let name = path.to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".legacy.json") {
                let l = std::fs::read(&path).expect("a legacy page");
                let c =
                    std::fs::read(format!("{stem}.candidate.json")).expect("its candidate page");
                pairs.push((bytes::Bytes::from(l), bytes::Bytes::from(c)));
            }
        }
        assert!(!pairs.is_empty(), "no NAME.legacy.json in {dir:?}");
        eprintln!(
            "harness_page/compare_bodies_distinct: {} pairs",
            pairs.len()
        );
        let owned = |body: &bytes::Bytes| shadowdiff::shadow::compare::Side {
            status: http::StatusCode::OK,
            headers: &headers,
            body: body.clone(),
        };
        let mut next = 0;
        g.bench_function("compare_bodies_distinct", |b| {
            b.iter(|| {
                let (l, c) = &pairs[next % pairs.len()];
                next += 1;
                shadowdiff::shadow::compare::compare_bodies(&owned(l), &owned(c), &rules, &cfg)
                    .diffs
                    .len()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench, harness);
criterion_main!(benches);
