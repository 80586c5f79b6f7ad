//! RFC 6902 JSON Patch from legacy to candidate (`shadowdiff diff --format patch`).
//!
//! The patch is exact: applied to the legacy document it gives the candidate document, byte for
//! byte in value (numbers keep their spelling), whatever the diff rules say. Arrays are aligned
//! as the diff aligns them (Myers over element hashes), so one element inserted at the head is
//! one `add`, not a cascade of `replace`. Operations on an array are emitted from its end to its
//! start, so every index refers to the document as the previous operations left it.

use serde_json::{json, Map, Value};
use similar::{Algorithm, DiffOp};
use xxhash_rust::xxh3::xxh3_64;

use super::glob::push_token;

/// The operations that turn `legacy` into `candidate`.
pub fn patch(legacy: &Value, candidate: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut path = String::new();
    walk(legacy, candidate, &mut path, &mut ops);
    ops
}

fn walk(l: &Value, c: &Value, path: &mut String, ops: &mut Vec<Value>) {
    if l == c {
        return;
    }
    match (l, c) {
        (Value::Object(lo), Value::Object(co)) => object(lo, co, path, ops),
        (Value::Array(la), Value::Array(ca)) => array(la, ca, path, ops),
        _ => ops.push(json!({"op": "replace", "path": path.as_str(), "value": c})),
    }
}

fn with_token<R>(path: &mut String, token: &str, f: impl FnOnce(&mut String) -> R) -> R {
    let len = path.len();
    push_token(path, token);
    let r = f(path);
    path.truncate(len);
    r
}

fn object(
    lo: &Map<String, Value>,
    co: &Map<String, Value>,
    path: &mut String,
    ops: &mut Vec<Value>,
) {
    for (k, lv) in lo {
        with_token(path, k, |p| match co.get(k) {
            Some(cv) => walk(lv, cv, p, ops),
            None => ops.push(json!({"op": "remove", "path": p.as_str()})),
        });
    }
    for (k, cv) in co {
        if !lo.contains_key(k) {
            with_token(path, k, |p| {
                ops.push(json!({"op": "add", "path": p.as_str(), "value": cv}));
            });
        }
    }
}

/// An exact hash of a value: its JSON text with object members in key order.
fn exact_hash(v: &Value) -> u64 {
    xxh3_64(super::canonical(v).as_bytes())
}

fn array(la: &[Value], ca: &[Value], path: &mut String, ops: &mut Vec<Value>) {
    let lh: Vec<u64> = la.iter().map(exact_hash).collect();
    let ch: Vec<u64> = ca.iter().map(exact_hash).collect();
    let at = |path: &mut String, i: usize, f: &mut dyn FnMut(&mut String)| {
        let len = path.len();
        path.push('/');
        path.push_str(&i.to_string());
        f(path);
        path.truncate(len);
    };
    for op in similar::capture_diff_slices(Algorithm::Myers, &lh, &ch)
        .into_iter()
        .rev()
    {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for i in (old_index..old_index + old_len).rev() {
                    at(path, i, &mut |p| {
                        ops.push(json!({"op": "remove", "path": p.as_str()}));
                    });
                }
            }
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => {
                for k in 0..new_len {
                    let v = &ca[new_index + k];
                    at(path, old_index + k, &mut |p| {
                        ops.push(json!({"op": "add", "path": p.as_str(), "value": v}));
                    });
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let paired = old_len.min(new_len);
                for i in (old_index + paired..old_index + old_len).rev() {
                    at(path, i, &mut |p| {
                        ops.push(json!({"op": "remove", "path": p.as_str()}));
                    });
                }
                for k in paired..new_len {
                    let v = &ca[new_index + k];
                    at(path, old_index + k, &mut |p| {
                        ops.push(json!({"op": "add", "path": p.as_str(), "value": v}));
                    });
                }
                for k in (0..paired).rev() {
                    let (lv, cv) = (&la[old_index + k], &ca[new_index + k]);
                    at(path, old_index + k, &mut |p| walk(lv, cv, p, ops));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(doc: &Value, ops: &[Value]) -> Value {
        let p: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut d = doc.clone();
        json_patch::patch(&mut d, &p).unwrap();
        d
    }

    #[test]
    fn round_trips_and_stays_small() {
        let l = json!({"a": [1, 2, 3], "b": {"c": "x"}, "gone": true});
        let c = json!({"a": [0, 1, 3, 4], "b": {"c": "y", "d": null}, "n": 1.50});
        let ops = patch(&l, &c);
        assert_eq!(apply(&l, &ops), c);
        let big: Vec<Value> = (0..50).map(|i| json!({"id": i})).collect();
        let mut with = big.clone();
        with.insert(0, json!({"id": -1}));
        let ops = patch(&json!(big), &json!(with));
        assert_eq!(
            ops,
            vec![json!({"op": "add", "path": "/0", "value": {"id": -1}})]
        );
        assert_eq!(
            patch(&json!(1), &json!("x")),
            vec![json!({"op": "replace", "path": "", "value": "x"})]
        );
        assert!(patch(&l, &l).is_empty());
    }

    #[test]
    fn numbers_keep_their_spelling() {
        let l: Value = serde_json::from_str(r#"{"n": 10}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"n": 10.0}"#).unwrap();
        assert_eq!(apply(&l, &patch(&l, &c)), c);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c~/]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn applying_the_patch_gives_the_candidate(a in arb_json(), b in arb_json()) {
            let ops = patch(&a, &b);
            prop_assert_eq!(apply(&a, &ops), b);
        }
    }
}
