//! Fuzzing the diff core and the comparison path with proptest: random documents under random
//! rules, random and mutated bytes under random content encodings, and deep nesting. Nothing may
//! panic, and the invariants below must hold.
//!
//! Bounded for CI: `SHADOWDIFF_FUZZ_CASES` cases per property (default 256). For a longer run:
//! `SHADOWDIFF_FUZZ_CASES=50000 cargo test --release --test fuzz_diff`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};

use shadowdiff::config::Config;
use shadowdiff::diff::{self, normalize::Norm, Glob, GlobSet, Kind, Rules};
use shadowdiff::record::Outcome;
use shadowdiff::shadow::compare::{compare_bodies, Side};

fn cases() -> u32 {
    std::env::var("SHADOWDIFF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|n| json!(n)),
        (-3.0f64..3.0).prop_map(|f| json!((f * 4.0).round() / 4.0)),
        "[a-c ]{0,3}".prop_map(Value::String),
        Just(json!("2026-01-01T08:00:00Z")),
        Just(json!("2026-01-01T09:00:00+01:00")),
        Just(json!("12")),
        Just(json!("")),
    ];
    leaf.prop_recursive(5, 60, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("key".to_owned()),
                    "[a-d~/*]{1,2}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const GLOBS: [&str; 8] = ["/a", "**/b", "/*/c", "**", "/id", "**/id", "/a/*", "/~1/*"];
const NORMS: [Norm; 6] = [
    Norm::Lowercase,
    Norm::Trim,
    Norm::NumberFromString,
    Norm::Datetime,
    Norm::EmptyAsNull,
    Norm::Sort,
];

fn arb_rules() -> impl Strategy<Value = Rules> {
    let glob = prop::sample::select(&GLOBS[..]);
    (
        prop::collection::vec(glob.clone(), 0..2),
        prop::collection::vec((glob.clone(), prop_oneof![Just("id"), Just("key")]), 0..2),
        prop::collection::vec(glob.clone(), 0..2),
        prop_oneof![Just(0.0), Just(0.5)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(
            (
                glob,
                prop::collection::vec(prop::sample::select(&NORMS[..]), 1..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(ignore, keys, unordered, tol, nem, auto, norms)| Rules {
            ignore: GlobSet::new(&ignore).unwrap(),
            array_keys: keys
                .into_iter()
                .map(|(g, k)| (Glob::new(g).unwrap(), k.to_owned()))
                .collect(),
            unordered: GlobSet::new(&unordered).unwrap(),
            number_tolerance: tol,
            null_equals_missing: nem,
            auto_keys: auto,
            normalize: norms
                .into_iter()
                .map(|(g, n)| (GlobSet::new(&[g]).unwrap(), n))
                .collect(),
        })
}

/// Random edits of a document's text: bytes replaced, inserted or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        arb_json(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4),
    )
        .prop_map(|(doc, edits)| {
            let mut b = doc.to_string().into_bytes();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    b.push(byte);
                    continue;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => b.truncate(i),
                }
            }
            b
        })
}

fn encoding() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(
        &[
            None,
            Some("gzip"),
            Some("br"),
            Some("deflate"),
            Some("zstd"),
            Some("identity"),
            Some("gzip, br"),
            Some("x-unknown"),
        ][..],
    )
}

fn headers(ce: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(ce) = ce {
        h.insert("content-encoding", HeaderValue::from_str(ce).unwrap());
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any rules, any documents: no panic; a document equals itself; what is reported resolves.
    #[test]
    fn diff_under_random_rules(a in arb_json(), b in arb_json(), rules in arb_rules()) {
        prop_assert!(diff::diff(&a, &a, &rules).is_empty());
        let d = diff::diff(&a, &b, &rules);
        if rules.normalize.is_empty() {
            for x in &d {
                match x.kind {
                    Kind::Extra => prop_assert_eq!(b.pointer(&x.pointer), x.candidate.as_ref()),
                    _ => prop_assert_eq!(a.pointer(&x.pointer), x.legacy.as_ref()),
                }
            }
        }
        // Field patterns are the pointers with indices starred: same number of segments.
        for x in &d {
            prop_assert_eq!(x.field.matches('/').count(), x.pointer.matches('/').count());
        }
    }

    /// The patch between any two documents turns one into the other exactly.
    #[test]
    fn patch_round_trips(a in arb_json(), b in arb_json()) {
        let ops = diff::patch::patch(&a, &b);
        let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        let mut x = a;
        json_patch::patch(&mut x, &p).unwrap();
        prop_assert_eq!(x, b);
    }

    /// Random and mutated bytes under random content encodings through the whole comparison:
    /// decoding, parsing, diffing, redaction. An outcome, never a panic.
    #[test]
    fn comparison_of_arbitrary_bytes(
        l in prop_oneof![mutated(), prop::collection::vec(any::<u8>(), 0..64)],
        c in prop_oneof![mutated(), prop::collection::vec(any::<u8>(), 0..64)],
        le in encoding(),
        ce in encoding(),
        rules in arb_rules(),
    ) {
        let cfg = Config::defaults();
        let (lh, ch) = (headers(le), headers(ce));
        let side = |h, b: Vec<u8>| Side { status: StatusCode::OK, headers: h, body: Bytes::from(b) };
        let out = compare_bodies(&side(&lh, l), &side(&ch, c), &rules, &cfg);
        prop_assert!(matches!(
            out.outcome,
            Outcome::Match | Outcome::Diff | Outcome::NotJson | Outcome::TooLarge
        ), "{:?}", out.outcome);
    }

    /// Deep nesting: up to the parser's limit it is compared, beyond it is refused.
    #[test]
    fn deep_documents(depth in 1usize..400, open in prop_oneof![Just("["), Just("{\"a\":")]) {
        let close = if open == "[" { "]" } else { "}" };
        let text = open.repeat(depth) + "1" + &close.repeat(depth);
        match diff::parse_json(text.as_bytes()) {
            Ok(v) => {
                prop_assert!(depth <= diff::MAX_DEPTH);
                prop_assert!(diff::diff(&v, &v, &Rules::default()).is_empty());
                let other = diff::parse_json((open.repeat(depth) + "2" + &close.repeat(depth)).as_bytes()).unwrap();
                prop_assert_eq!(diff::diff(&v, &other, &Rules::default()).len(), 1);
            }
            Err(_) => prop_assert!(depth > diff::MAX_DEPTH - 1),
        }
    }
}
