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

// ------------------------------------------------- the parse floor: two paths, one answer
//
// The proxy parses a body that nothing rewrites into the compact arena document
// (`diff::doc::parse`), anything else into serde_json's `Value`. Both must give the same
// acceptance, the same differences and the same field patterns, under any rules.

/// A JSON text's tree, rendered by hand: numbers as odd spellings, strings with escapes and
/// unicode, objects that may name a member twice.
#[derive(Debug, Clone)]
enum J {
    Lit(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn arb_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..3).prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{18,40}",
        "-?(0|[1-9][0-9]{0,3})\\.[0-9]{1,5}0{0,3}",
        "-?[1-9](\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
        prop::sample::select(
            &[
                "1e400",
                "-1e400",
                "1e-400",
                "-0",
                "0.0e5",
                "1E+2",
                "100",
                "1.0",
                "10",
                "1e1",
                "9007199254740993",
                "9007199254740992",
                "0.1",
                "0.10",
                "-0.0",
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn arb_j() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        prop::sample::select(&["null", "true", "false"][..]).prop_map(|s| J::Lit(s.to_owned())),
        arb_number().prop_map(J::Lit),
        "[a-c é😀\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}]{0,4}".prop_map(J::Str),
        prop::sample::select(&["", "a", "A", " a ", "12", "2026-01-01T08:00:00Z"][..])
            .prop_map(|s| J::Str(s.to_owned())),
    ];
    leaf.prop_recursive(6, 80, 8, |inner| {
        let key = prop_oneof![
            prop::sample::select(&["id", "key", "a", "b", "c", "é", "a\"b", "~/"][..])
                .prop_map(str::to_owned),
            "[a-d]{1,2}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(J::Arr),
            prop::collection::vec((key, inner), 0..7).prop_map(J::Obj),
        ]
    })
}

/// A string literal: plain (serde_json's escaping) or with every non-ASCII character and `/`
/// escaped as `\uXXXX` (surrogate pairs beyond the BMP).
fn quote(s: &str, escaped: bool) -> String {
    if !escaped {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut buf = [0u16; 2];
                for u in ch.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn render(j: &J, style: u8, out: &mut String) {
    let escaped = style & 1 == 1;
    // Whitespace at every place JSON allows it (before and after each token), or none.
    let gap = if style & 2 == 2 { " \n\t\r" } else { "" };
    match j {
        J::Lit(s) => out.push_str(s),
        J::Str(s) => out.push_str(&quote(s, escaped)),
        J::Arr(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(gap);
                    out.push(',');
                }
                out.push_str(gap);
                render(e, style, out);
            }
            out.push_str(gap);
            out.push(']');
        }
        J::Obj(o) => {
            out.push('{');
            for (i, (k, e)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(gap);
                    out.push(',');
                }
                out.push_str(gap);
                out.push_str(&quote(k, escaped));
                out.push_str(gap);
                out.push(':');
                out.push_str(gap);
                render(e, style, out);
            }
            out.push_str(gap);
            out.push('}');
        }
    }
}

/// A variant of `j`: leaves changed, members dropped or swapped, elements inserted or removed,
/// decided by `seed` (a document compared with an edited copy of itself, as vendors differ).
fn edit(j: &J, seed: &mut u64) -> J {
    let mut roll = |n: u64| {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed % n
    };
    match (j, roll(10)) {
        (_, 0) => J::Lit(["1", "1.0", "null", "\"x\""][roll(4) as usize].to_owned()),
        (J::Arr(a), r) => {
            let mut a: Vec<J> = a.iter().map(|e| edit(e, seed)).collect();
            match r {
                1 if !a.is_empty() => {
                    a.remove(0);
                }
                2 => a.insert(0, J::Obj(vec![("id".into(), J::Lit("7".into()))])),
                3 => a.reverse(),
                _ => {}
            }
            J::Arr(a)
        }
        (J::Obj(o), r) => {
            let mut o: Vec<(String, J)> =
                o.iter().map(|(k, e)| (k.clone(), edit(e, seed))).collect();
            match r {
                1 if !o.is_empty() => {
                    o.pop();
                }
                2 if o.len() > 1 => o.swap(0, 1),
                3 => o.push(("n".into(), J::Lit("null".into()))),
                _ => {}
            }
            J::Obj(o)
        }
        (j, _) => j.clone(),
    }
}

fn text(j: &J, style: u8) -> String {
    let mut s = String::new();
    render(j, style, &mut s);
    s
}

/// A page of records: edited copies of one record, each written in a style of its own (names
/// escaped in some, plain in others), so that most records name what the record before named,
/// and some do not, or spell it otherwise (what the scan expects from the record before).
fn arb_records() -> impl Strategy<Value = String> {
    (arb_j(), prop::collection::vec((any::<u64>(), 0u8..4), 1..8)).prop_map(|(record, edits)| {
        let mut page = String::from("[");
        for (i, (seed, style)) in edits.into_iter().enumerate() {
            if i > 0 {
                page.push(',');
            }
            // Half of them the record as it is.
            let r = if seed % 2 == 0 {
                record.clone()
            } else {
                edit(&record, &mut (seed | 1))
            };
            render(&r, style, &mut page);
        }
        page.push(']');
        page
    })
}

/// Both paths over two texts: the serde_json documents' differences and patterns, and what the
/// parsed documents (of whichever kind) give, alone and mixed with the other kind.
fn both_paths(l: &str, c: &str, rules: &Rules) -> Result<(), TestCaseError> {
    use diff::doc::{self, Doc};
    let arena = bumpalo::Bump::new();
    let (lv, cv) = (
        diff::parse_json(l.as_bytes()),
        diff::parse_json(c.as_bytes()),
    );
    let (ld, cd) = (
        doc::parse(l.as_bytes(), &arena),
        doc::parse(c.as_bytes(), &arena),
    );
    prop_assert_eq!(lv.is_ok(), ld.is_ok());
    prop_assert_eq!(cv.is_ok(), cd.is_ok());
    let (Ok(lv), Ok(cv), Ok(ld), Ok(cd)) = (lv, cv, ld, cd) else {
        return Ok(());
    };
    let old = diff::diff(&lv, &cv, rules);
    let all = diff::Bound::NONE;
    prop_assert_eq!(&diff::diff_docs(&ld, &cd, rules, all).diffs, &old);
    prop_assert_eq!(
        &diff::diff_docs(&ld, &Doc::Tree(cv.clone()), rules, all).diffs,
        &old
    );
    prop_assert_eq!(
        &diff::diff_docs(&Doc::Tree(lv.clone()), &cd, rules, all).diffs,
        &old
    );
    // With less room, or fewer to list, some are listed (in the order found) and every other
    // one is counted: under its pattern (past `listed`, a path of ordinary length), or alone.
    let per_pattern = |diffs: &[diff::Difference], counted: &[diff::Counted]| {
        let mut out = std::collections::BTreeMap::<(String, diff::Kind), usize>::new();
        for d in diffs {
            *out.entry((d.field.clone(), d.kind)).or_default() += 1;
        }
        for c in counted {
            *out.entry((c.field.clone(), c.kind)).or_default() += c.n;
        }
        out
    };
    let every = per_pattern(&old, &[]);
    for room in [0, 150, 600, 4096, usize::MAX] {
        for listed in [0, 1, 3, usize::MAX] {
            let bound = diff::Bound {
                room,
                listed,
                examples: usize::MAX,
            };
            let found = diff::diff_docs(&ld, &cd, rules, bound);
            // Listing only what the store keeps of each pattern (its first examples) changes
            // nothing the store is given: the same differences in all, counted under the same
            // patterns, the same first examples of each, in the order found.
            for examples in [1, 2] {
                let fewer = diff::diff_docs(&ld, &cd, rules, bound.with_examples(examples));
                prop_assert_eq!(fewer.total(), found.total());
                prop_assert_eq!(fewer.unlisted, found.unlisted);
                prop_assert_eq!(
                    per_pattern(&fewer.diffs, &fewer.counted),
                    per_pattern(&found.diffs, &found.counted)
                );
                prop_assert_eq!(
                    firsts(&fewer.diffs, examples),
                    firsts(&found.diffs, examples)
                );
                // No more than those, but on paths too long to build a pattern for each.
                let listed = per_pattern(&fewer.diffs, &[]);
                for ((field, kind), n) in &listed {
                    prop_assert!(
                        *n <= examples || field.len() > 256,
                        "{n} listed of {field} {kind:?}"
                    );
                }
                let mut rest = found.diffs.iter();
                for d in &fewer.diffs {
                    prop_assert!(rest.any(|o| o == d), "{d:?} not listed in order");
                }
            }
            prop_assert_eq!(found.total(), old.len());
            let mut rest = old.iter();
            for d in &found.diffs {
                prop_assert!(
                    rest.any(|o| o == d),
                    "{d:?} listed out of order or not found"
                );
            }
            let got = per_pattern(&found.diffs, &found.counted);
            for (key, n) in &got {
                prop_assert!(
                    every.get(key).is_some_and(|m| n <= m),
                    "{key:?} counted {n}"
                );
            }
            if room == usize::MAX && old.iter().all(|d| d.pointer.len() < 200) {
                // Nothing is only counted, and every pattern keeps an example.
                prop_assert_eq!(found.unlisted, 0);
                prop_assert_eq!(&got, &every);
                for key in every.keys() {
                    prop_assert!(found
                        .diffs
                        .iter()
                        .any(|d| (&d.field, &d.kind) == (&key.0, &key.1)));
                }
            }
        }
    }
    let (mut p_old, mut p_new) = (diff::Patterns::default(), diff::Patterns::default());
    p_old.add(&lv, 1000);
    p_old.add(&cv, 1000);
    p_new.add_doc(&ld, 1000);
    p_new.add_doc(&cd, 1000);
    prop_assert_eq!(p_old.list, p_new.list);
    prop_assert_eq!(ld.into_value(), lv);
    prop_assert_eq!(cd.into_value(), cv);
    Ok(())
}

/// The first `n` differences of each (field pattern, kind), in order: what the store keeps.
fn firsts(diffs: &[diff::Difference], n: usize) -> Vec<&diff::Difference> {
    let mut seen = std::collections::HashMap::<(&str, diff::Kind), usize>::new();
    diffs
        .iter()
        .filter(|d| {
            let k = seen.entry((d.field.as_str(), d.kind)).or_default();
            *k += 1;
            *k <= n
        })
        .collect()
}

/// Whether an object in `j` names a member twice (serde_json keeps the last value, at the
/// first one's place: the arena document keeps both, so such a body takes serde_json's path).
fn repeats_a_member(j: &J) -> bool {
    match j {
        J::Obj(o) => {
            let mut names: Vec<&String> = o.iter().map(|(k, _)| k).collect();
            names.sort();
            names.windows(2).any(|w| w[0] == w[1]) || o.iter().any(|(_, e)| repeats_a_member(e))
        }
        J::Arr(a) => a.iter().any(repeats_a_member),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any two documents (one often an edited copy of the other), any rules (every normalize
    /// rule among them): the same differences and field patterns from both paths.
    #[test]
    fn both_parse_paths_give_the_same_comparison(
        l in arb_j(),
        other in arb_j(),
        seed in any::<u64>(),
        styles in (0u8..4, 0u8..4),
        edited in any::<bool>(),
        rules in arb_rules(),
    ) {
        let c = if edited { edit(&l, &mut (seed | 1)) } else { other };
        let (lt, ct) = (text(&l, styles.0), text(&c, styles.1));
        both_paths(&lt, &ct, &rules)?;
        // The arena document is what a body without a repeated member becomes.
        if !repeats_a_member(&l) {
            let arena = bumpalo::Bump::new();
            prop_assert!(matches!(diff::doc::parse(lt.as_bytes(), &arena), Ok(diff::doc::Doc::Fast(_))), "{}", lt);
        }
    }

    /// Pages of records alike: the same comparison from both paths.
    #[test]
    fn pages_of_records_alike_give_the_same_comparison(
        l in arb_records(),
        c in arb_records(),
        rules in arb_rules(),
    ) {
        both_paths(&l, &c, &rules)?;
        both_paths(&l, &l, &rules)?;
    }

    /// Bytes that are mostly JSON: accepted by one path exactly when by the other, refused for
    /// the same reason, read as the same document.
    #[test]
    fn both_parse_paths_accept_the_same_bytes(
        b in prop_oneof![
            mutated(),
            prop::collection::vec(any::<u8>(), 0..64),
            // A byte inserted, or one taken out (a backslash of an escaped quote in a name
            // the next record expects, say).
            (arb_records(), prop::collection::vec((any::<prop::sample::Index>(), any::<Option<u8>>()), 0..3))
                .prop_map(|(page, edits)| {
                    let mut b = page.into_bytes();
                    for (at, byte) in edits {
                        match byte {
                            Some(byte) => b.insert(at.index(b.len() + 1), byte),
                            None if !b.is_empty() => {
                                b.remove(at.index(b.len()));
                            }
                            None => {}
                        }
                    }
                    b
                }),
            (arb_j(), 0u8..4, prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3))
                .prop_map(|(j, style, edits)| {
                    let mut b = text(&j, style).into_bytes();
                    for (at, byte) in edits {
                        let i = at.index(b.len() + 1);
                        b.insert(i, byte);
                    }
                    b
                }),
        ],
    ) {
        let arena = bumpalo::Bump::new();
        let (old, new) = (diff::parse_json(&b), diff::doc::parse(&b, &arena));
        match (old, new) {
            (Ok(v), Ok(d)) => prop_assert_eq!(d.into_value(), v),
            (Err(diff::JsonError::TooDeep(_)), Err(diff::JsonError::TooDeep(_)))
            | (Err(diff::JsonError::Invalid(_)), Err(diff::JsonError::Invalid(_))) => {}
            (o, n) => prop_assert!(false, "{:?} vs {:?} for {:?}", o.map(|_| ()), n.map(|_| ()), String::from_utf8_lossy(&b)),
        }
    }

    /// Nesting around serde_json's limit: the same verdict from both paths.
    #[test]
    fn both_parse_paths_refuse_the_same_depth(
        depth in 120usize..300,
        open in prop_oneof![Just("["), Just("{\"a\":"), Just("[{\"a\":1},")],
        inner in prop_oneof![Just("1"), Just("[]"), Just("{}")],
    ) {
        let close = match open { "[" | "[{\"a\":1}," => "]", _ => "}" };
        let text = open.repeat(depth) + inner + &close.repeat(depth);
        let arena = bumpalo::Bump::new();
        let (old, new) = (diff::parse_json(text.as_bytes()), diff::doc::parse(text.as_bytes(), &arena));
        prop_assert_eq!(old.is_ok(), new.is_ok(), "depth {}", depth);
        prop_assert_eq!(
            matches!(old, Err(diff::JsonError::TooDeep(_))),
            matches!(new, Err(diff::JsonError::TooDeep(_)))
        );
    }
}
