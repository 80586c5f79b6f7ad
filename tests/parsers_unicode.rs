//! Property tests: every parser that reads bytes from a caller, an upstream or a file, fed
//! arbitrary Unicode (and near-valid inputs with one character swapped for a multi-byte one,
//! which is how a byte-slicing bug is found). Nothing may panic, and what is accepted must be
//! consistent.
//!
//! Bounded for CI: `SHADOWDIFF_FUZZ_CASES` cases per property (default 256).

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Value};

use shadowdiff::config;
use shadowdiff::diff::normalize::{self, Norm};
use shadowdiff::diff::{GlobSet, Seg};
use shadowdiff::shadow::retry_after;
use shadowdiff::translate::{
    self, normalize_path, parse_query, CandidateTemplate, Context, KeySource, PathPattern, Template,
};

fn cases() -> u32 {
    std::env::var("SHADOWDIFF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Valid date-times, then one character replaced or inserted by an arbitrary one (often
/// multi-byte): the inputs that sit right at a parser's slicing points.
fn near_datetime() -> impl Strategy<Value = String> {
    let valid = prop_oneof![
        Just("2026-01-01"),
        Just("2026-01-01T12:00"),
        Just("2026-01-01T12:00:00Z"),
        Just("2026-01-01T12:00:00.123456+01:00"),
        Just("2026-01-01 12:00:00-0530"),
        Just("2024-02-29T23:59:60z"),
    ];
    (valid, any::<usize>(), any::<char>(), any::<bool>()).prop_map(|(v, at, c, insert)| {
        let chars: Vec<char> = v.chars().collect();
        let i = at % (chars.len() + 1);
        let mut out: String = chars[..i.min(chars.len())].iter().collect();
        out.push(c);
        let skip = if insert { i } else { (i + 1).min(chars.len()) };
        out.extend(&chars[skip..]);
        out
    })
}

/// Mapping sources, then one character replaced or inserted by an arbitrary one.
fn near_mapping() -> impl Strategy<Value = String> {
    let valid = prop_oneof![
        Just(
            r#"{"a": x, "employment": {"subtype": t, "type": "e"}, /* c */ "b": [y.{"c": z}]}"#
                .to_owned()
        ),
        Just("# c\n{id: .remote_id, name, employment: {subtype: .t}, \"q\\\"x\": .y}".to_owned()),
        Just(r#"{"a\u00e9": 'x', `b`: $lookup({"A": "a"}, v)}"#.to_owned()),
    ];
    (
        valid,
        any::<char>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(v, c, at, insert)| {
            let chars: Vec<char> = v.chars().collect();
            let i = at.index(chars.len());
            let mut out: String = chars[..i].iter().collect();
            out.push(c);
            let rest = if insert { &chars[i..] } else { &chars[i + 1..] };
            out.extend(rest);
            out
        })
}

fn all_norms() -> Vec<Norm> {
    [
        "lowercase",
        "trim",
        "number_from_string",
        "datetime",
        "empty_as_null",
        "sort",
    ]
    .iter()
    .map(|n| Norm::parse(n).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn datetime_never_panics_and_round_trips(s in prop_oneof![any::<String>(), near_datetime()]) {
        if let Some(ms) = normalize::parse_datetime_ms(&s) {
            // What is accepted is a real instant: formatting and parsing it again is stable.
            let canon = normalize::format_millis(ms);
            prop_assert_eq!(normalize::parse_datetime_ms(&canon), Some(ms), "{} -> {}", s, canon);
        }
    }

    #[test]
    fn every_normaliser_takes_any_string(s in any::<String>(), t in any::<String>()) {
        let globs = GlobSet::new(&["/**"]).unwrap();
        let rules = vec![(globs, all_norms())];
        let mut doc = json!({"a": &s, "b": [&t, &s], "c": {"d": &t}});
        normalize::apply(&mut doc, &rules);
        // Idempotent: normalising twice changes nothing more.
        let once = doc.clone();
        normalize::apply(&mut doc, &rules);
        prop_assert_eq!(once, doc);
    }

    #[test]
    fn rule_names_and_globs_never_panic(s in any::<String>(), path in proptest::collection::vec(any::<String>(), 0..6)) {
        let _ = Norm::parse(&s);
        if let Ok(g) = GlobSet::new(&[s.as_str()]) {
            let segs: Vec<Seg<'_>> = path.iter().map(|p| Seg::Key(p)).collect();
            let _ = g.matches(&segs);
        }
    }

    #[test]
    fn templates_parse_and_render_anything(s in any::<String>(), v in any::<String>(), q in any::<String>()) {
        if let Ok(t) = Template::parse(&s) {
            let ctx = Context {
                captures: vec![("id", v.as_str())],
                query: parse_query(&q),
                account: None,
                each: translate::Each::None,
                ids: Some(translate::IdLookup(&|k: &str, l: &str| k.len().is_multiple_of(2).then(|| l.to_owned()))),
            };
            let _ = t.render(&ctx, translate::encode_component);
            let ct = CandidateTemplate { method: None, path: Some(t), query: None, request: None };
            let _ = ct.build(&http::Method::GET, "/x", Some(&q), &["a".to_owned()], &ctx);
        }
        if let Ok(p) = PathPattern::parse(&s) {
            let _ = p.matches(&v);
            let _ = p.matches(&format!("/{v}"));
        }
        let _ = KeySource::parse(&s);
        let _ = config::parse_duration(&s);
        let _ = config::parse_size(&s);
    }

    #[test]
    fn paths_normalise_to_something_without_dot_segments(s in any::<String>(), dots in proptest::collection::vec(prop_oneof![Just("."), Just(".."), Just("%2e%2E"), Just("a"), Just("")], 0..8)) {
        let mut p = String::from("/");
        p.push_str(&dots.join("/"));
        p.push_str(&s);
        let n = normalize_path(&p);
        prop_assert!(n.path.starts_with('/'));
        for seg in n.path.split('/') {
            prop_assert!(seg != "." && seg != "..", "{} -> {}", p, n.path);
        }
        // Normalising is idempotent.
        prop_assert_eq!(normalize_path(&n.path).path, n.path);
        let mut out = String::new();
        translate::push_allowed_query(&mut out, Some(&s), &["a".to_owned()]);
        let _ = parse_query(&s);
    }

    #[test]
    fn rate_limit_headers_never_panic(v in prop_oneof![any::<String>(), any::<u64>().prop_map(|n| n.to_string())], bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for name in ["retry-after", "ratelimit-reset", "x-ratelimit-reset", "ratelimit"] {
            for value in [HeaderValue::from_str(&v).ok(), HeaderValue::from_bytes(&bytes).ok()].into_iter().flatten() {
                let mut h = HeaderMap::new();
                h.insert(name, value);
                let _ = retry_after(&h);
            }
        }
        // Delay-seconds, however large, is read as it is (the pause is capped where it is used).
        if let (Ok(n), Ok(value)) = (v.parse::<u64>(), HeaderValue::from_str(&v)) {
            let mut h = HeaderMap::new();
            h.insert("retry-after", value);
            prop_assert_eq!(retry_after(&h), Some(std::time::Duration::from_secs(n)));
        }
    }

    #[test]
    fn mapping_sources_scan_and_edit_without_panics(
        s in prop_oneof![any::<String>(), near_mapping()],
        field in prop_oneof![any::<String>(), Just("/employment/subtype".to_owned()), Just("/a/*/b".to_owned())],
        expr in any::<String>(),
    ) {
        use shadowdiff::mapping::Lang;
        use shadowdiff::rediff::edit;
        for lang in [Lang::Jsonata, Lang::Jq] {
            let scan = edit::scan(lang, &s);
            for k in &scan.keys {
                // Every span is on character boundaries, in order.
                prop_assert!(k.key.0 <= k.key.1 && k.value.0 <= k.value.1);
                prop_assert!(s.get(k.key.0..k.key.1).is_some() && s.get(k.value.0..k.value.1).is_some());
            }
            if let Some(out) = edit::replace_value(lang, &s, &field, |e| format!("f({e})")) {
                prop_assert!(out.contains("f("));
            }
            if let Some(out) = edit::insert_member(lang, &s, &field, &expr) {
                prop_assert!(out.contains(expr.as_str()));
            }
            let _ = edit::path_expr(lang, &[field.clone(), expr.clone()]);
        }
    }

    #[test]
    fn header_values_compare_without_panics(s in any::<String>(), name in any::<String>()) {
        let a = shadowdiff::diff::headers::media_type(&s);
        // Case of the type and of the parameter names never matters.
        if s.is_ascii() && !s.contains('"') {
            let upper = shadowdiff::diff::headers::media_type(&s.to_ascii_uppercase());
            prop_assert_eq!(a.to_ascii_lowercase(), upper.to_ascii_lowercase());
        }
        let _ = shadowdiff::diff::headers::canonical(&name, &s);
        let _ = shadowdiff::diff::headers::canonical("content-type", &s);
    }

    #[test]
    fn config_text_never_panics(s in any::<String>()) {
        let _ = config::Config::parse(&s, None);
        let _ = config::Config::parse(&format!("[diff]\nignore = [{}]\n", Value::String(s.clone())), None);
        let _ = config::Config::parse(&format!("[proxy]\nheader_read_timeout = {}\n", Value::String(s)), None);
    }
}

#[test]
fn the_values_a_probe_found() {
    for s in [
        "2026-01-01T12:0é",
        "2026-01-01T12:00:0é",
        "2026-01-01T1é:00",
        "2026-0é-01",
        "2026-01-01Té2:00",
        "2026-01-01T12:00:00.é",
        "2026-01-01T12:00:00+é",
        "2026-01-01T12:00:00+01:é",
    ] {
        assert_eq!(normalize::parse_datetime(s), None, "{s}");
    }
    assert_eq!(normalize::parse_datetime("2026-02-31"), None);
    assert_eq!(normalize::parse_datetime("2026-02-31T00:00:00Z"), None);
}
