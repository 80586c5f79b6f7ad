//! Conformance of the JSONata engine over the official JSONata test suite
//! (`tests/data/jsonata-suite`, MIT), through the same path as the proxy: every case is
//! evaluated in a mapping worker process (the built binary), so no case can take the test down.
//!
//! Prints the pass share overall and for the groups mappings use, and writes them to
//! `target/jsonata-suite.json`. Run: `cargo test --release --test jsonata_suite -- --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use shadowdiff::mapping::runner::{Extra, Runner};
use shadowdiff::mapping::{self, Chain, Lang, Level, MappingError};

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jsonata-suite")
}

/// The groups mappings rely on, as the issue names them.
const FAMILIES: [(&str, &[&str]); 7] = [
    (
        "paths",
        &[
            "fields",
            "simple-array-selectors",
            "multiple-array-selectors",
            "wildcards",
            "descendent-operator",
            "flattening",
            "context",
            "parent-operator",
            "quoted-selectors",
            "missing-paths",
        ],
    ),
    (
        "predicates",
        &[
            "predicates",
            "boolean-expresssions",
            "comparison-operators",
            "inclusion-operator",
        ],
    ),
    (
        "object constructors",
        &["object-constructor", "array-constructor"],
    ),
    (
        "conditionals",
        &["conditionals", "coalescing-operator", "default-operator"],
    ),
    (
        "string functions",
        &[
            "function-substring",
            "function-substringBefore",
            "function-substringAfter",
            "function-uppercase",
            "function-lowercase",
            "function-trim",
            "function-pad",
            "function-contains",
            "function-split",
            "function-join",
            "function-replace",
            "function-length",
            "function-string",
            "string-concat",
        ],
    ),
    (
        "date functions",
        &["function-fromMillis", "function-tomillis"],
    ),
    (
        "$map/$filter/$lookup/$merge",
        &["hof-map", "hof-filter", "function-lookup", "function-merge"],
    ),
];

#[derive(Default, Clone, Copy)]
struct Tally {
    cases: u32,
    passed: u32,
    crashed: u32,
}

/// A JSONata literal for a bound value (`$name := <literal>`): JSON is valid JSONata.
fn bind(expr: &str, bindings: &serde_json::Map<String, Value>) -> String {
    if bindings.is_empty() {
        return expr.to_owned();
    }
    let mut out = String::from("(");
    for (k, v) in bindings {
        out.push_str(&format!("${k} := {v}; "));
    }
    out.push_str(expr);
    out.push(')');
    out
}

fn equal(want: &Value, got: &Value) -> bool {
    let rules = shadowdiff::diff::Rules {
        auto_keys: false,
        ..Default::default()
    };
    shadowdiff::diff::diff(want, got, &rules).is_empty()
}

#[test]
fn jsonata_suite_conformance() {
    let root = suite();
    assert!(
        root.join("groups").is_dir(),
        "the JSONata suite is expected at {}",
        root.display()
    );
    let runner = Runner::new(env!("CARGO_BIN_EXE_shadowdiff").into(), 2);
    let mut datasets: BTreeMap<String, Value> = BTreeMap::new();
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    // Error cases whose error carries the expected JSONata code (stricter than "an error").
    let (mut error_cases, mut codes_matched) = (0u32, 0u32);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("groups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let group = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            // A few case files hold lone UTF-16 surrogates (\uD800), which serde_json refuses
            // (and which no HTTP JSON body can carry): counted apart.
            let v: Value = match serde_json::from_slice(&std::fs::read(&file).unwrap()) {
                Ok(v) => v,
                Err(e) => {
                    unreadable.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let cases = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            for (i, case) in cases.iter().enumerate() {
                let t = groups.entry(group.clone()).or_default();
                t.cases += 1;
                let name = format!(
                    "{group}/{}[{i}]",
                    file.file_stem().unwrap().to_string_lossy()
                );
                // The expression inline, or in a file beside the case (`expr-file`).
                let expr = match case["expr-file"].as_str() {
                    Some(f) => std::fs::read_to_string(dir.join(f)).unwrap(),
                    None => case["expr"].as_str().unwrap_or_default().to_owned(),
                };
                let expr = expr.as_str();
                let empty = serde_json::Map::new();
                let expr = bind(expr, case["bindings"].as_object().unwrap_or(&empty));
                let (input, undefined) = if let Some(d) = case.get("data") {
                    (d.clone(), false)
                } else {
                    match case["dataset"].as_str() {
                        None => (Value::Null, true),
                        Some(ds) => {
                            let d = datasets.entry(ds.to_owned()).or_insert_with(|| {
                                let p = root.join("datasets").join(format!("{ds}.json"));
                                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
                            });
                            (d.clone(), false)
                        }
                    }
                };
                let timeout = Duration::from_millis(case["timelimit"].as_u64().unwrap_or(5_000));
                let extra = Extra {
                    max_stack: case["depth"].as_u64().map(|d| d as usize),
                    undefined_input: undefined,
                };
                let got = match mapping::compile(Lang::Jsonata, &expr) {
                    Err(e) => Err(e),
                    Ok(m) => {
                        let chain = Chain::new(vec![Level {
                            name: "suite".into(),
                            origin: name.clone(),
                            mapping: Arc::clone(&m),
                        }]);
                        runner.run_with(&chain, &input, timeout, extra)
                    }
                };
                let code = case["code"].as_str().or(case["error"]["code"].as_str());
                if let Some(code) = code {
                    error_cases += 1;
                    if matches!(&got, Err(e) if e.to_string().contains(code)) {
                        codes_matched += 1;
                    }
                }
                if matches!(got, Err(MappingError::Crash(_))) {
                    t.crashed += 1;
                }
                let pass = if case.get("code").is_some() || case.get("error").is_some() {
                    got.is_err()
                } else if case["undefinedResult"] == json!(true) {
                    matches!(&got, Err(MappingError::Nothing))
                        || matches!(&got, Err(MappingError::Eval(m)) if m.contains("returned nothing"))
                } else if let Some(want) = case.get("result") {
                    matches!(&got, Ok(v) if equal(want, v))
                } else {
                    false
                };
                if pass {
                    t.passed += 1;
                } else if failures.len() < 400 {
                    failures.push(format!("{name}: {expr:?} -> {got:?}"));
                }
            }
        }
    }
    let total = groups.values().fold(Tally::default(), |a, t| Tally {
        cases: a.cases + t.cases,
        passed: a.passed + t.passed,
        crashed: a.crashed + t.crashed,
    });
    let share = |t: &Tally| f64::from(t.passed) / f64::from(t.cases.max(1));
    let mut families = Vec::new();
    println!(
        "JSONata suite: {}/{} cases pass ({:.1}%), {} crashed workers",
        total.passed,
        total.cases,
        share(&total) * 100.0,
        total.crashed
    );
    println!("  error cases with the expected error code: {codes_matched}/{error_cases}");
    for (family, names) in FAMILIES {
        let t = names
            .iter()
            .filter_map(|n| groups.get(*n))
            .fold(Tally::default(), |a, t| Tally {
                cases: a.cases + t.cases,
                passed: a.passed + t.passed,
                crashed: a.crashed + t.crashed,
            });
        println!(
            "  {family:<30} {:>4}/{:<4} {:.1}%",
            t.passed,
            t.cases,
            share(&t) * 100.0
        );
        families
            .push(json!({"family": family, "groups": names, "cases": t.cases, "passed": t.passed}));
    }
    println!(
        "  {} case files not readable as JSON by serde_json (lone surrogates): {:?}",
        unreadable.len(),
        unreadable
    );
    for f in failures.iter().take(40) {
        println!("  FAIL {f}");
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/jsonata-suite.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "cases": total.cases, "passed": total.passed, "crashed": total.crashed,
            "unreadable_files": unreadable,
            "error_cases": error_cases, "error_codes_matched": codes_matched,
            "families": families,
            "groups": groups.iter().map(|(g, t)| json!({"group": g, "cases": t.cases, "passed": t.passed})).collect::<Vec<_>>(),
            "failures": failures,
        }))
        .unwrap(),
    );
    // The suite has 1,600+ cases; a sweep that ran far fewer went wrong somewhere.
    assert!(total.cases > 1500, "{} cases", total.cases);
    assert_eq!(total.crashed, 0, "no case may crash a worker");
    assert!(
        share(&total) >= 0.97,
        "pass share {:.3} below 0.97",
        share(&total)
    );
}
