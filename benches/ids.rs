//! The id crosswalk's costs: a lookup on the caller's path (a `{NAME|KIND}` placeholder, a
//! served answer's ids) and the comparison's extra work (learning the pairs of two documents and
//! turning the candidate's ids into legacy's), on distinct pages as real traffic has them.
//!
//! Run: `cargo bench --bench ids` (medians in target/criterion/*/new/estimates.json).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use shadowdiff::diff::{diff, Glob};
use shadowdiff::ids::{Crosswalk, KindSpec, Pair, RouteIds};

const PAGES: usize = 64;
const PER_PAGE: usize = 50;

fn kinds() -> Vec<KindSpec> {
    vec![KindSpec {
        name: "individual".into(),
        id: "/id".into(),
        keys: vec![vec!["/first_name".into(), "/last_name".into()]],
        max_pairs: 1_000_000,
    }]
}

fn route() -> RouteIds {
    RouteIds::new(
        vec![(Glob::new("/individuals/*").unwrap(), "individual".into())],
        vec![(
            Glob::new("/individuals/*/manager/id").unwrap(),
            "individual".into(),
        )],
    )
    .compile(&kinds())
}

/// Page `p` of a directory as each vendor gives it (legacy's schema; the candidate's ids its
/// own): 50 people, each with a manager.
fn page(p: usize, candidate: bool) -> Value {
    let id = |i: usize| {
        if candidate {
            format!("m-{i:07x}-0d3e-47a1")
        } else {
            format!("f-{i:07x}-5e1d-4c8b")
        }
    };
    let people: Vec<Value> = (0..PER_PAGE)
        .map(|k| {
            let i = p * PER_PAGE + k;
            json!({
                "id": id(i),
                "first_name": format!("First{i}"),
                "last_name": format!("Last{i}"),
                "manager": {"id": id(i / 10)},
                "department": {"name": format!("Dept {}", i % 12)},
                "is_active": i % 17 != 3,
            })
        })
        .collect();
    json!({"individuals": people, "paging": {"count": PAGES * PER_PAGE, "offset": p * PER_PAGE}})
}

fn bench(c: &mut Criterion) {
    let rules = shadowdiff::config::Config::defaults().diff.rules;
    let (kinds, route) = (kinds(), route());
    let pages: Vec<(Value, Value)> = (0..PAGES)
        .map(|p| (page(p, false), page(p, true)))
        .collect();

    // Lookups: 100,000 pairs of one account among 1,000 accounts of 100 pairs.
    let cw = Crosswalk::new();
    for a in 0..1000 {
        for i in 0..100 {
            cw.learn(
                &Pair {
                    account: format!("acct-{a}"),
                    kind: "individual".into(),
                    legacy: format!("f-{i}"),
                    candidate: format!("m-{i}"),
                    numbers: 0,
                },
                1_000_000,
            );
        }
    }
    for i in 0..100_000 {
        cw.learn(
            &Pair {
                account: "big".into(),
                kind: "individual".into(),
                legacy: format!("f-{i:07x}"),
                candidate: format!("m-{i:07x}"),
                numbers: 0,
            },
            1_000_000,
        );
    }
    let keys: Vec<String> = (0..4096)
        .map(|i| format!("f-{:07x}", i * 24 % 100_000))
        .collect();
    let mut g = c.benchmark_group("crosswalk_lookup");
    g.bench_function("to_candidate_hit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            cw.to_candidate("big", "individual", black_box(&keys[i]))
        });
    });
    g.bench_function("to_candidate_miss", |b| {
        b.iter(|| cw.to_candidate("acct-7", "individual", black_box("f-nope")));
    });
    g.finish();

    // The comparison of a 50-person page: the diff alone, and learn + translate + diff, each
    // iteration on the next of 64 distinct pages (the pairs known after the first round).
    let walk = Crosswalk::new();
    for (l, c) in &pages {
        let mut c = c.clone();
        walk.apply("acme", &route, &kinds, (l, true), &mut c);
    }
    let mut g = c.benchmark_group("crosswalk_compare_page_50");
    g.sample_size(30);
    g.bench_function("diff_only", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % PAGES;
            let (l, c) = &pages[i];
            diff(black_box(l), black_box(c), &rules).len()
        });
    });
    g.bench_function("crosswalk_and_diff", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % PAGES;
            let (l, c) = &pages[i];
            let mut c = c.clone();
            let a = walk.apply("acme", &route, &kinds, (black_box(l), true), &mut c);
            (a.observed.pairs.len(), diff(l, &c, &rules).len())
        });
    });
    // The caller's path of a served page: the candidate's ids turned back into legacy's.
    g.bench_function("serve_page", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % PAGES;
            let mut c = pages[i].1.clone();
            walk.serve("acme", &route, &kinds, black_box(&mut c))
                .unwrap()
        });
    });
    g.bench_function("clone_only", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % PAGES;
            black_box(pages[i].1.clone())
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
