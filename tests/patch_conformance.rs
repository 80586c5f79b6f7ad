//! The public JSON Patch test suite (json-patch-tests, in tests/data): for every case with
//! an expected document, the patch shadowdiff computes from `doc` to `expected` must turn `doc` into
//! `expected` when applied by `json_patch`.

use std::path::Path;

use serde_json::Value;

#[test]
fn every_suite_case_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/json-patch-tests");
    let mut total = 0;
    let mut failed = Vec::new();
    for file in ["tests.json", "spec_tests.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the suite ships in tests/data)",
                dir.join(file).display()
            )
        });
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        for (i, case) in cases.iter().enumerate() {
            let (Some(doc), Some(expected)) = (case.get("doc"), case.get("expected")) else {
                continue;
            };
            if case.get("disabled").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            total += 1;
            let ops = shadowdiff::diff::patch::patch(doc, expected);
            let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
            let mut d = doc.clone();
            let ok = json_patch::patch(&mut d, &p).is_ok() && &d == expected;
            if !ok {
                failed.push(format!(
                    "{file}#{i}: {}",
                    case.get("comment").unwrap_or(&Value::Null)
                ));
            }
        }
    }
    println!(
        "json-patch-tests: {} of {total} cases round-trip",
        total - failed.len()
    );
    assert!(total >= 70, "the suite looks incomplete: {total} cases");
    assert!(failed.is_empty(), "{failed:#?}");
}
