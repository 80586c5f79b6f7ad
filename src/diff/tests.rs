use super::*;
use proptest::prelude::*;
use serde_json::json;

fn rules() -> Rules {
    Rules::default()
}

fn kinds(d: &[Difference]) -> Vec<(&str, &str)> {
    d.iter()
        .map(|d| (d.pointer.as_str(), d.kind.as_str()))
        .collect()
}

#[test]
fn equal_documents_have_no_difference() {
    let a = json!({"a": [1, 2, {"b": null}], "c": "x", "d": true, "e": 1.5});
    assert!(diff(&a, &a.clone(), &rules()).is_empty());
}

#[test]
fn the_four_kinds() {
    let l = json!({"gone": 1, "same": 1, "num": 1, "s": "a", "t": "1"});
    let c = json!({"new": 2, "same": 1, "num": 2, "s": "b", "t": 1});
    let d = diff(&l, &c, &rules());
    assert_eq!(
        kinds(&d),
        // Legacy's members in document order, then the candidate's own.
        vec![
            ("/gone", "missing"),
            ("/num", "changed"),
            ("/s", "changed"),
            ("/t", "type_changed"),
            ("/new", "extra"),
        ]
    );
    assert_eq!(d[0].legacy, Some(json!(1)));
    assert_eq!(d[0].candidate, None);
    assert_eq!(d[4].candidate, Some(json!(2)));
}

#[test]
fn null_is_a_type() {
    let d = diff(&json!({"a": null}), &json!({"a": 0}), &rules());
    assert_eq!(kinds(&d), vec![("/a", "type_changed")]);
}

#[test]
fn numbers_compare_by_value() {
    let l: Value = serde_json::from_str(r#"{"a": 10, "b": 9007199254740993, "c": 1e2}"#).unwrap();
    let c: Value = serde_json::from_str(r#"{"a": 10.0, "b": 9007199254740992, "c": 100}"#).unwrap();
    assert_eq!(kinds(&diff(&l, &c, &rules())), vec![("/b", "changed")]);
}

#[test]
fn number_tolerance() {
    let r = Rules {
        number_tolerance: 0.01,
        ..rules()
    };
    assert!(diff(&json!({"a": 1.0}), &json!({"a": 1.005}), &r).is_empty());
    assert_eq!(diff(&json!({"a": 1.0}), &json!({"a": 1.02}), &r).len(), 1);
}

#[test]
fn ignore_globs_select_subtrees() {
    let r = Rules {
        ignore: GlobSet::new(&["**/updated_at", "/meta"]).unwrap(),
        ..rules()
    };
    let l = json!({"a": {"updated_at": 1, "x": 1}, "meta": {"n": 1}, "list": [{"updated_at": 1}]});
    let c = json!({"a": {"updated_at": 2, "x": 1}, "meta": {"n": 2, "m": 3}, "list": [{"updated_at": 2}]});
    assert!(diff(&l, &c, &r).is_empty());
    let c2 = json!({"a": {"updated_at": 2, "x": 2}, "meta": {}, "list": [{"updated_at": 2}]});
    assert_eq!(kinds(&diff(&l, &c2, &r)), vec![("/a/x", "changed")]);
}

#[test]
fn null_equals_missing() {
    let l = json!({"a": null, "b": 1});
    let c = json!({"b": 1, "c": null});
    assert_eq!(diff(&l, &c, &rules()).len(), 2);
    let r = Rules {
        null_equals_missing: true,
        ..rules()
    };
    assert!(diff(&l, &c, &r).is_empty());
}

#[test]
fn insertion_at_the_front_is_one_extra() {
    let l: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "name": format!("n{i}")}))
        .collect();
    let mut c = l.clone();
    c.insert(0, json!({"id": 99, "name": "new"}));
    let d = diff(&json!(l), &json!(c), &rules());
    assert_eq!(kinds(&d), vec![("/0", "extra")]);
}

#[test]
fn deletion_in_the_middle_is_one_missing() {
    let l = json!([1, 2, 3, 4, 5]);
    let c = json!([1, 2, 4, 5]);
    assert_eq!(kinds(&diff(&l, &c, &rules())), vec![("/2", "missing")]);
}

#[test]
fn changed_element_is_compared_field_by_field() {
    let l = json!([{"id": 1, "a": 1}, {"id": 2, "a": 2}]);
    let c = json!([{"id": 1, "a": 1}, {"id": 2, "a": 3}]);
    let d = diff(&l, &c, &rules());
    assert_eq!(kinds(&d), vec![("/1/a", "changed")]);
    assert_eq!(d[0].field, "/*/a");
}

#[test]
fn alignment_sees_through_ignored_members() {
    // Every element differs in an ignored member and one is inserted at the front: still one extra.
    let l: Vec<Value> = (0..10)
        .map(|i| json!({"n": i, "updated_at": "old"}))
        .collect();
    let mut c: Vec<Value> = (0..10)
        .map(|i| json!({"n": i, "updated_at": "new"}))
        .collect();
    c.insert(0, json!({"n": -1, "updated_at": "new"}));
    let r = Rules {
        ignore: GlobSet::new(&["**/updated_at"]).unwrap(),
        ..rules()
    };
    assert_eq!(
        kinds(&diff(&json!(l), &json!(c), &r)),
        vec![("/0", "extra")]
    );
}

#[test]
fn array_keys_match_by_member() {
    let r = Rules {
        array_keys: vec![(Glob::new("/individuals").unwrap(), "id".into())],
        ..rules()
    };
    let l = json!({"individuals": [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": 3}]});
    let c = json!({"individuals": [{"id": "c", "v": 3}, {"id": "b", "v": 5}, {"id": "d", "v": 4}]});
    let d = diff(&l, &c, &r);
    assert_eq!(
        kinds(&d),
        vec![
            ("/individuals/0", "missing"),
            ("/individuals/1/v", "changed"),
            ("/individuals/2", "extra")
        ]
    );
    assert_eq!(d[1].candidate_pointer, None);
    // Reordered but equal: nothing.
    let c2 =
        json!({"individuals": [{"id": "c", "v": 3}, {"id": "a", "v": 1}, {"id": "b", "v": 2}]});
    assert!(diff(&l, &c2, &r).is_empty());
    // A changed element at another index names the candidate's coordinates too.
    let c3 =
        json!({"individuals": [{"id": "c", "v": 3}, {"id": "a", "v": 9}, {"id": "b", "v": 2}]});
    let d3 = diff(&l, &c3, &r);
    assert_eq!(kinds(&d3), vec![("/individuals/0/v", "changed")]);
    assert_eq!(d3[0].candidate_pointer.as_deref(), Some("/individuals/1/v"));
}

#[test]
fn array_keys_fall_back_when_keys_are_not_unique() {
    let r = Rules {
        array_keys: vec![(Glob::new("/x").unwrap(), "id".into())],
        ..rules()
    };
    let l = json!({"x": [{"id": 1}, {"id": 1}]});
    let c = json!({"x": [{"id": 1}, {"id": 1}, {"id": 2}]});
    assert_eq!(kinds(&diff(&l, &c, &r)), vec![("/x/2", "extra")]);
}

#[test]
fn unordered_arrays_are_multisets() {
    let r = Rules {
        unordered: GlobSet::new(&["/tags"]).unwrap(),
        ..rules()
    };
    assert!(diff(
        &json!({"tags": ["a", "b", "b"]}),
        &json!({"tags": ["b", "a", "b"]}),
        &r
    )
    .is_empty());
    let d = diff(
        &json!({"tags": ["a", "b", "b"]}),
        &json!({"tags": ["b", "c", "a"]}),
        &r,
    );
    assert_eq!(
        kinds(&d),
        vec![("/tags/2", "missing"), ("/tags/1", "extra")]
    );
}

#[test]
fn object_member_order_does_not_matter_inside_arrays() {
    let l: Value = serde_json::from_str(r#"[{"a":1,"b":2}]"#).unwrap();
    let c: Value = serde_json::from_str(r#"[{"b":2,"a":1.0}]"#).unwrap();
    assert!(diff(&l, &c, &rules()).is_empty());
}

#[test]
fn route_rules_add_to_global_ones() {
    let mut g = Rules {
        ignore: GlobSet::new(&["/a"]).unwrap(),
        ..rules()
    };
    let route = Rules {
        ignore: GlobSet::new(&["/b"]).unwrap(),
        null_equals_missing: true,
        ..rules()
    };
    g.extend(&route);
    assert!(diff(
        &json!({"a": 1, "b": 1, "c": null}),
        &json!({"a": 2, "b": 2}),
        &g
    )
    .is_empty());
}

#[test]
fn meta_fields() {
    let r = rules();
    let d = diff_meta(
        &[Seg::Key("@status")],
        Some(json!(200)),
        Some(json!(404)),
        &r,
    )
    .unwrap();
    assert_eq!(
        (d.pointer.as_str(), d.field.as_str(), d.kind),
        ("@status", "@status", Kind::Changed)
    );
    let d = diff_meta(
        &[Seg::Key("@header"), Seg::Key("etag")],
        Some(json!("x")),
        None,
        &r,
    )
    .unwrap();
    assert_eq!(
        (d.pointer.as_str(), d.kind),
        ("@header/etag", Kind::Missing)
    );
    let ig = Rules {
        ignore: GlobSet::new(&["@header/etag"]).unwrap(),
        ..rules()
    };
    assert!(diff_meta(
        &[Seg::Key("@header"), Seg::Key("etag")],
        Some(json!("x")),
        None,
        &ig
    )
    .is_none());
}

#[test]
fn escaped_pointers() {
    let d = diff(
        &json!({"a/b": {"c~d": 1}}),
        &json!({"a/b": {"c~d": 2}}),
        &rules(),
    );
    assert_eq!(d[0].pointer, "/a~1b/c~0d");
}

#[test]
fn root_type_change() {
    let d = diff(&json!([1]), &json!({"a": 1}), &rules());
    assert_eq!(kinds(&d), vec![("", "type_changed")]);
}

#[test]
fn too_deep_documents_are_refused_by_the_parser() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(matches!(
        parse_json(deep.as_bytes()),
        Err(JsonError::TooDeep(_))
    ));
    // At the limit it parses; a syntax error deep inside is not "too deep".
    let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
    assert!(parse_json(ok.as_bytes()).is_ok());
    let broken = "[".repeat(40) + "nope" + &"]".repeat(40);
    assert!(matches!(
        parse_json(broken.as_bytes()),
        Err(JsonError::Invalid(_))
    ));
    assert!(matches!(
        parse_json(br#"{"a": "[[[[ not nesting"#),
        Err(JsonError::Invalid(_))
    ));
}

// ----------------------------------------------------------------------------- properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(|n| json!(n)),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-d~/]{1,2}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Resolves an RFC 6901 pointer.
fn resolve<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr)
}

proptest! {
    #[test]
    fn diff_of_a_document_with_itself_is_empty(a in arb_json()) {
        prop_assert!(diff(&a, &a, &rules()).is_empty());
    }

    #[test]
    fn reported_pointers_resolve_on_the_sides_their_kind_names(a in arb_json(), b in arb_json()) {
        for d in diff(&a, &b, &rules()) {
            match d.kind {
                Kind::Missing => {
                    prop_assert_eq!(resolve(&a, &d.pointer), d.legacy.as_ref());
                }
                Kind::Extra => {
                    prop_assert_eq!(resolve(&b, &d.pointer), d.candidate.as_ref());
                }
                Kind::Changed | Kind::TypeChanged | Kind::UnpairedId => {
                    prop_assert_eq!(resolve(&a, &d.pointer), d.legacy.as_ref());
                    let cp = d.candidate_pointer.as_deref().unwrap_or(&d.pointer);
                    prop_assert_eq!(resolve(&b, cp), d.candidate.as_ref());
                }
            }
        }
    }

    #[test]
    fn an_element_inserted_into_a_keyless_array_is_one_difference(
        items in prop::collection::vec(arb_json(), 0..12),
        extra in arb_json(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut with = items.clone();
        let i = at.index(items.len() + 1);
        with.insert(i, extra.clone());
        let with = Value::Array(with);
        let d = diff(&Value::Array(items), &with, &rules());
        prop_assert_eq!(d.len(), 1);
        prop_assert_eq!(d[0].kind, Kind::Extra);
        // The alignment may place an equal element at a neighbouring index; the value must be the one inserted.
        prop_assert_eq!(d[0].candidate.as_ref(), Some(&extra));
        prop_assert_eq!(resolve(&with, &d[0].pointer), Some(&extra));
    }

    #[test]
    fn diff_is_symmetric_in_count(a in arb_json(), b in arb_json()) {
        prop_assert_eq!(diff(&a, &b, &rules()).is_empty(), diff(&b, &a, &rules()).is_empty());
    }
}

#[test]
fn auto_keys_match_objects_by_id() {
    let auto = Rules {
        auto_keys: true,
        ..rules()
    };
    let l = json!([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]);
    let c = json!([{"id": 3, "v": "c"}, {"id": 1, "v": "a"}, {"id": 2, "v": "B"}]);
    let d = diff(&l, &c, &auto);
    assert_eq!(kinds(&d), vec![("/1/v", "changed")]);
    assert_eq!(d[0].candidate_pointer.as_deref(), Some("/2/v"));
    // Without auto keys the reordering is aligned: one element moved is a missing and an extra.
    let d = diff(&l, &c, &rules());
    assert!(d.len() >= 2, "{d:?}");
    // remote_id when there is no id; numbers compare by value.
    let l: Value =
        serde_json::from_str(r#"[{"remote_id": 1.0, "v": 1}, {"remote_id": 2, "v": 2}]"#).unwrap();
    let c: Value =
        serde_json::from_str(r#"[{"remote_id": 2, "v": 2}, {"remote_id": 1, "v": 1}]"#).unwrap();
    assert!(diff(&l, &c, &auto).is_empty());
    // A duplicate id: no key, back to alignment.
    let l = json!([{"id": 1, "v": 1}, {"id": 1, "v": 2}]);
    let c = json!([{"id": 1, "v": 1}, {"id": 1, "v": 2}, {"id": 5}]);
    assert_eq!(kinds(&diff(&l, &c, &auto)), vec![("/2", "extra")]);
}

#[test]
fn normalize_rules_make_equivalent_spellings_equal() {
    use super::normalize::Norm;
    let r = Rules {
        normalize: vec![
            (
                GlobSet::new(&["**/status"]).unwrap(),
                vec![Norm::Lowercase, Norm::Trim],
            ),
            (
                GlobSet::new(&["**/amount"]).unwrap(),
                vec![Norm::NumberFromString],
            ),
            (
                GlobSet::new(&["**/hired_at"]).unwrap(),
                vec![Norm::Datetime],
            ),
            (
                GlobSet::new(&["**/middle_name"]).unwrap(),
                vec![Norm::EmptyAsNull],
            ),
            (GlobSet::new(&["/tags"]).unwrap(), vec![Norm::Sort]),
        ],
        ..rules()
    };
    let l = json!({"status": "Active ", "amount": "12.50", "hired_at": "2026-01-01T09:00:00+01:00",
                   "middle_name": "", "tags": ["b", "a"], "other": "X"});
    let c = json!({"status": "active", "amount": 12.5, "hired_at": "2026-01-01T08:00:00Z",
                   "middle_name": null, "tags": ["a", "b"], "other": "x"});
    assert_eq!(kinds(&diff(&l, &c, &r)), vec![("/other", "changed")]);
    // Without the rules every one of them differs (the reordered tags twice).
    assert_eq!(diff(&l, &c, &rules()).len(), 7);
}

#[test]
fn field_patterns_lists_every_node_once_with_indices_as_stars() {
    let doc = json!({"a": [{"b": 1, "c/d": 2}, {"b": 3, "e": 4}], "e": {"f": null}, "g": []});
    let mut p = Patterns::default();
    p.add(&doc, 100);
    // First-seen order, each once; an empty array has no element pattern.
    assert_eq!(
        p.list,
        [
            "/a",
            "/a/*",
            "/a/*/b",
            "/a/*/c~1d",
            "/a/*/e",
            "/e",
            "/e/f",
            "/g"
        ]
    );
    // A second document adds only what is new.
    p.add(&json!({"e": {"f": 1, "h": 2}}), 100);
    assert_eq!(p.list.last().map(String::as_str), Some("/e/h"));
    assert_eq!(p.list.len(), 9);
    let mut few = Patterns::default();
    few.add(&doc, 2);
    assert_eq!(few.list.len(), 2);
}

/// The hashes-only list (what the proxy looks its remembered lists up by) lists one hash per
/// pattern the texts list, in the same order, under the same limits, and builds no text.
#[test]
fn hashes_only_list_one_hash_per_pattern_listed() {
    let both = |docs: &[Value], limit: usize| {
        let (mut texts, mut hashes) = (Patterns::default(), Patterns::hashes_only());
        for d in docs {
            texts.add(d, limit);
            hashes.add(d, limit);
        }
        assert!(hashes.list.is_empty() && texts.hashes.is_empty());
        assert_eq!(texts.list.len(), hashes.hashes.len(), "{docs:?}");
        hashes.hashes
    };
    let page = json!({"a": [{"b": 1, "c/d": 2}, {"b": 3, "e": 4}], "e": {"f": null}, "g": []});
    let first = both(std::slice::from_ref(&page), 100);
    assert_eq!(first.len(), 8);
    // The same fields give the same hashes; another order or another field, others.
    let again = json!({"a": [{"b": 9, "c/d": 8}, {"b": 7, "e": 6}], "e": {"f": 1}, "g": [1]});
    assert_eq!(both(&[again], 100)[..8], first[..]);
    let other = json!({"e": {"f": null}, "a": [{"b": 1, "c/d": 2}, {"b": 3, "e": 4}], "g": []});
    assert_ne!(both(&[other], 100), first);
    // The limit, and the cap on the patterns' text.
    assert_eq!(both(std::slice::from_ref(&page), 3), first[..3]);
    let long = |c: char| c.to_string().repeat(PATTERN_BYTES / 3);
    let mut big = serde_json::Map::new();
    for c in ['x', 'y', 'z', 'w'] {
        big.insert(long(c), json!(1));
    }
    let capped = both(&[Value::Object(big), page], 100);
    assert_eq!(capped.len(), 2 + 8);
}

#[test]
fn member_order_never_matters() {
    let l: Value =
        serde_json::from_str(r#"{"b": 1, "a": {"y": 1, "x": [{"q": 1, "p": 2}]}}"#).unwrap();
    let c: Value =
        serde_json::from_str(r#"{"a": {"x": [{"p": 2, "q": 1}], "y": 1}, "b": 1}"#).unwrap();
    assert!(diff(&l, &c, &rules()).is_empty());
    assert_eq!(canonical(&l), canonical(&c));
    let c: Value =
        serde_json::from_str(r#"{"a": {"x": [{"p": 3, "q": 1}], "y": 1}, "b": 1}"#).unwrap();
    assert_eq!(
        kinds(&diff(&l, &c, &rules())),
        vec![("/a/x/0/p", "changed")]
    );
}

#[test]
fn members_out_of_line_are_found_in_place_first_and_anywhere_after() {
    let l = r#"{"id":1,"manager_id":"m","city":"A","zip":"1","tags":[1]}"#;
    for (c, want) in [
        // Renamed in place: the members after it stay in line.
        (
            r#"{"id":1,"manager":"m","city":"B","zip":"1","tags":[1]}"#,
            vec![
                ("/manager_id", "missing"),
                ("/city", "changed"),
                ("/manager", "extra"),
            ],
        ),
        // Reordered: each found where it is.
        (
            r#"{"id":1,"zip":"1","city":"B","tags":[1],"manager":"m"}"#,
            vec![
                ("/manager_id", "missing"),
                ("/city", "changed"),
                ("/manager", "extra"),
            ],
        ),
        // One inserted: the rest one place on.
        (
            r#"{"id":1,"x":0,"manager_id":"m","city":"B","zip":"1","tags":[1]}"#,
            vec![("/city", "changed"), ("/x", "extra")],
        ),
        // Fewer members: positions past the candidate's last.
        (
            r#"{"id":1,"zip":"2"}"#,
            vec![
                ("/manager_id", "missing"),
                ("/city", "missing"),
                ("/zip", "changed"),
                ("/tags", "missing"),
            ],
        ),
        // A member of the other's name at the same position, after the first out of line.
        (
            r#"{"id":1,"city":"A","manager_id":"n","zip":"1","tags":[2]}"#,
            vec![("/manager_id", "changed"), ("/tags/0", "changed")],
        ),
    ] {
        let (lv, cv): (Value, Value) = (
            serde_json::from_str(l).unwrap(),
            serde_json::from_str(c).unwrap(),
        );
        assert_eq!(kinds(&diff(&lv, &cv, &rules())), want, "{c}");
        let arena = bumpalo::Bump::new();
        let (ld, cd) = (
            doc::parse(l.as_bytes(), &arena).unwrap(),
            doc::parse(c.as_bytes(), &arena).unwrap(),
        );
        assert!(matches!((&ld, &cd), (doc::Doc::Fast(_), doc::Doc::Fast(_))));
        let found = diff_docs(&ld, &cd, &rules(), Bound::NONE);
        assert_eq!(kinds(&found.diffs), want, "{c}");
    }
}

#[test]
fn keyed_pairing_takes_back_what_a_failed_same_order_pass_reported() {
    let auto = Rules {
        auto_keys: true,
        ..rules()
    };
    // Same order up to index 1, then reordered: the difference at /0/v is reported once.
    let l = json!([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]);
    let c = json!([{"id": 1, "v": "A"}, {"id": 3, "v": "c"}, {"id": 2, "v": "b"}]);
    assert_eq!(kinds(&diff(&l, &c, &auto)), vec![("/0/v", "changed")]);
    // A later element without the key: the whole array is aligned instead, and the first
    // element's difference is still reported once.
    let c = json!([{"id": 1, "v": "A"}, {"id": 2, "v": "b"}, {"v": "c"}]);
    let d = diff(&l, &c, &auto);
    assert_eq!(d.iter().filter(|x| x.pointer == "/0/v").count(), 1, "{d:?}");
}

#[test]
fn check_json_agrees_with_parse_json() {
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let cases: [&[u8]; 7] = [
        br#"{"a":"\u00e9 \u2713","b":[1,2]}"#,
        "{\"a\":\"é✓\"}".as_bytes(),
        b"{\"a\":\"\xff\xfe\"}",
        b"{\"a\":",
        deep.as_bytes(),
        b"[[[[[[[[[[1]]]]]]]]]]",
        b"  ",
    ];
    for c in cases {
        assert_eq!(
            crate::diff::check_json(c).is_ok(),
            crate::diff::parse_json(c).is_ok(),
            "{:?}",
            String::from_utf8_lossy(&c[..c.len().min(40)])
        );
    }
    let at_limit = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for n in [126, 127, 128, 129, 130] {
        let d = at_limit(n);
        assert_eq!(
            crate::diff::check_json(d.as_bytes()).is_ok(),
            crate::diff::parse_json(d.as_bytes()).is_ok(),
            "nesting {n}"
        );
    }
}

#[test]
fn same_text_agrees_with_equality_at_every_length_and_position() {
    // Every length through the word-sized paths and past them, a difference at each byte
    // (the overlapping loads must see the middle and both ends).
    for n in 0..40 {
        let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        assert!(same_text(&a, &a.clone()), "{n}");
        for at in 0..n {
            let mut b = a.clone().into_bytes();
            b[at] = b'Z';
            let b = String::from_utf8(b).unwrap();
            assert!(!same_text(&a, &b), "{n} at {at}");
        }
        assert!(!same_text(&a, &format!("{a}x")), "{n} longer");
    }
    // Multi-byte characters compare by their bytes.
    assert!(same_text("héllo wörld", "héllo wörld"));
    assert!(!same_text("héllo wörld", "hèllo wörld"));
}

#[test]
fn a_threads_arena_is_reused_emptied_and_a_large_one_is_freed() {
    let first = doc::Arena::take();
    first.alloc_slice_fill_copy(10_000, 7u8);
    // While the first is out, another comparison on the thread gets an arena of its own.
    let second = doc::Arena::take();
    assert_eq!(second.allocated_bytes(), 0);
    drop(second);
    drop(first);
    // The next one is the first, emptied, its memory kept.
    let again = doc::Arena::take();
    assert!(again.allocated_bytes() >= 10_000);
    let fresh = again.alloc(1u64);
    assert_eq!(*fresh, 1);
    // One that grew past the bound is freed, not kept.
    again.alloc_slice_fill_copy(doc::KEEP_ARENA_BYTES + 1, 0u8);
    drop(again);
    assert_eq!(doc::Arena::take().allocated_bytes(), 0);
}

/// The field patterns of `doc` by the plain definition: every member and element below the
/// root, in first-seen order, each once, at most `limit`, nothing deeper than PRESENCE_DEPTH.
fn patterns_by_definition(docs: &[&Value], limit: usize) -> Vec<String> {
    fn walk<'a>(v: &'a Value, path: &mut Vec<Seg<'a>>, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || path.len() >= PRESENCE_DEPTH {
            return;
        }
        let add = |path: &[Seg<'_>], out: &mut Vec<String>| {
            let p = glob::field_pattern(path);
            if out.len() < limit && !out.contains(&p) {
                out.push(p);
            }
        };
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    path.push(Seg::Key(k));
                    add(path, out);
                    walk(c, path, out, limit);
                    path.pop();
                }
            }
            Value::Array(a) if !a.is_empty() => {
                path.push(Seg::Index(0));
                add(path, out);
                for c in a {
                    walk(c, path, out, limit);
                }
                path.pop();
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for d in docs {
        walk(d, &mut Vec::new(), &mut out, limit);
    }
    out
}

/// Pages of records: arrays of objects that often name the same members (the case the
/// patterns' walk shortens), with nested containers that differ from record to record.
fn arb_page() -> impl Strategy<Value = Value> {
    let record = prop::collection::btree_map("[ab]", arb_json(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (prop::collection::vec(record, 0..6), arb_json())
        .prop_map(|(records, other)| json!({"results": records, "other": other}))
}

proptest! {
    #[test]
    fn field_patterns_are_those_of_the_definition(
        a in prop_oneof![arb_json(), arb_page()],
        b in prop_oneof![arb_json(), arb_page()],
        limit in prop_oneof![Just(1000usize), 1usize..8],
    ) {
        let mut p = Patterns::default();
        p.add(&a, limit);
        p.add(&b, limit);
        prop_assert_eq!(p.list, patterns_by_definition(&[&a, &b], limit));
        // The same through the compact tree.
        let arena = bumpalo::Bump::new();
        let (ta, tb) = (a.to_string(), b.to_string());
        let (da, db) = (
            doc::parse(ta.as_bytes(), &arena).unwrap(),
            doc::parse(tb.as_bytes(), &arena).unwrap(),
        );
        let mut q = Patterns::default();
        q.add_doc(&da, limit);
        q.add_doc(&db, limit);
        prop_assert_eq!(q.list, patterns_by_definition(&[&a, &b], limit));
    }
}

/// Two documents of one long member name above `n` members, each member differing.
fn long_name_pair(name_len: usize, n: usize) -> (String, String) {
    let page = |v: u8| {
        let members: Vec<String> = (0..n).map(|i| format!("\"m{i}\":{v}")).collect();
        format!("{{\"{}\":{{{}}}}}", "n".repeat(name_len), members.join(","))
    };
    (page(1), page(2))
}

/// A bound of `room` bytes and no limit on the number listed.
fn within(room: usize) -> Bound {
    Bound {
        room,
        listed: usize::MAX,
        ..Bound::NONE
    }
}

#[test]
fn differences_past_the_room_are_counted_not_listed() {
    let (l, c) = long_name_pair(10_000, 100);
    let arena = bumpalo::Bump::new();
    let (l, c) = (
        doc::parse(l.as_bytes(), &arena).unwrap(),
        doc::parse(c.as_bytes(), &arena).unwrap(),
    );
    let all = diff_docs(&l, &c, &rules(), Bound::NONE);
    assert_eq!((all.diffs.len(), all.unlisted), (100, 0));
    // Each difference takes ~20 KB: its pointer and its pattern repeat the name.
    let room = 100_000;
    let found = diff_docs(&l, &c, &rules(), within(room));
    let listed: usize = found
        .diffs
        .iter()
        .map(|d| d.pointer.len() + d.field.len())
        .sum();
    let free = FREE_PATH_TEXT * found.diffs.len();
    assert!(
        listed <= room + free,
        "{listed} bytes listed in a room of {room}"
    );
    assert!(!found.diffs.is_empty());
    assert_eq!(found.diffs.len() + found.unlisted, 100);
    assert_eq!(found.diffs, all.diffs[..found.diffs.len()]);
    // No room: every difference counted, none listed.
    let none = diff_docs(&l, &c, &rules(), within(0));
    assert_eq!((none.diffs.len(), none.unlisted), (0, 100));
}

#[test]
fn a_keyed_array_walked_again_counts_each_difference_once() {
    // The same keys in another order: the fast path compares the first pair, then gives up
    // and the keyed path walks the arrays again; what the first walk charged is taken back.
    let v = "v".repeat(300);
    let l = json!([{"id": 1, &v: 1}, {"id": 2, &v: 1}, {"id": 3, &v: 1}]);
    let c = json!([{"id": 1, &v: 2}, {"id": 3, &v: 2}, {"id": 2, &v: 2}]);
    let r = Rules {
        auto_keys: true,
        ..rules()
    };
    let all = diff(&l, &c, &r);
    assert_eq!(all.len(), 3);
    // The first is charged 2 x (6 + 301) - 512 = 102 bytes (a pointer and a pattern, an index
    // counted as 6), the others 409 (their candidate pointers too: they moved).
    let room = 600;
    let one = diff_docs(&doc::Doc::Tree(l), &doc::Doc::Tree(c), &r, within(room));
    // Room for two: both listed though the first walk had charged one before giving up.
    assert_eq!((one.diffs.len(), one.unlisted), (2, 1), "{one:?}");
    assert_eq!(one.diffs, all[..2]);
}

#[test]
fn patterns_stop_listing_at_their_bytes() {
    // 100 members whose patterns take 20 KB each: 2 MB of text from a 2 MB body, but a list
    // of 1 MiB at most.
    let body: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("{i:03}{}", "n".repeat(20_000)), json!(1)))
        .collect();
    let mut p = Patterns::default();
    p.add(&Value::Object(body), 1000);
    let bytes: usize = p.list.iter().map(String::len).sum();
    assert!(bytes <= PATTERN_BYTES, "{bytes}");
    assert!((40..100).contains(&p.list.len()), "{}", p.list.len());
    // A short pattern still fits after the long ones.
    p.add(&json!({"a": 1}), 1000);
    assert_eq!(p.list.last().map(String::as_str), Some("/a"));
}

/// The (field pattern, kind) counts of what a comparison found: listed and counted.
fn counts_of(found: &Found) -> std::collections::BTreeMap<(String, Kind), usize> {
    let mut out = std::collections::BTreeMap::new();
    for d in &found.diffs {
        *out.entry((d.field.clone(), d.kind)).or_default() += 1;
    }
    for c in &found.counted {
        *out.entry((c.field.clone(), c.kind)).or_default() += c.n;
    }
    out
}

#[test]
fn differences_past_the_listed_bound_are_counted_per_pattern_with_an_example_each() {
    // 1,000 records whose `a` differs, then one whose `b` differs, then a `tail` that differs.
    let mut l: Vec<Value> = (0..1000).map(|i| json!({"a": i})).collect();
    let mut c: Vec<Value> = (0..1000).map(|i| json!({"a": -i - 1})).collect();
    l.push(json!({"b": true}));
    c.push(json!({"b": false}));
    let (l, c) = (
        json!({"list": l, "tail": "x"}),
        json!({"list": c, "tail": 1}),
    );
    let all = diff_within(&l, &c, &rules(), Bound::NONE);
    assert_eq!(
        (all.diffs.len(), all.counted.len(), all.unlisted),
        (1002, 0, 0)
    );
    let bound = Bound {
        room: usize::MAX,
        listed: 10,
        ..Bound::NONE
    };
    let found = diff_within(&l, &c, &rules(), bound);
    // The first ten listed, then one example of each pattern first met past them.
    assert_eq!(found.diffs[..10], all.diffs[..10]);
    let examples: Vec<&str> = found.diffs[10..]
        .iter()
        .map(|d| d.pointer.as_str())
        .collect();
    assert_eq!(examples, ["/list/1000/b", "/tail"]);
    assert_eq!(
        found.counted,
        [Counted {
            field: "/list/*/a".into(),
            kind: Kind::Changed,
            n: 990,
        }]
    );
    assert_eq!(found.unlisted, 0);
    // Every count as the full list's.
    assert_eq!(counts_of(&found), counts_of(&all));
    assert_eq!(found.total(), 1002);
}

#[test]
fn a_pattern_lists_its_examples_and_counts_the_rest() {
    // A page of records differing in two members each (one renamed: missing and extra), and
    // a member with a long path: the store keeps `examples` of each (field pattern, kind).
    let long = "n".repeat(listing::COUNTED_PATH);
    let side = |v: i64, renamed: &str| {
        let list: Vec<Value> = (0..50)
            .map(|i| json!({"id": i, "status": v, renamed: i}))
            .collect();
        json!({"results": list, &long: [v, v, v, v]})
    };
    let (l, c) = (side(1, "manager_id"), side(2, "manager_employee_id"));
    let all = diff_within(&l, &c, &rules(), Bound::NONE);
    assert_eq!(all.diffs.len(), 154);
    for examples in [1, 3] {
        let found = diff_within(&l, &c, &rules(), Bound::NONE.with_examples(examples));
        // Three patterns of ordinary paths: `examples` each, in the order found. The long
        // path's four are listed (its pattern is not built for each).
        assert_eq!(found.diffs.len(), 3 * examples + 4, "{examples}");
        let mut seen = std::collections::HashMap::<(&str, Kind), usize>::new();
        let firsts: Vec<&Difference> = all
            .diffs
            .iter()
            .filter(|d| {
                let n = seen.entry((d.field.as_str(), d.kind)).or_default();
                *n += 1;
                *n <= examples || d.field.len() > listing::COUNTED_PATH
            })
            .collect();
        assert_eq!(found.diffs.iter().collect::<Vec<_>>(), firsts);
        assert_eq!(counts_of(&found), counts_of(&all));
        assert_eq!((found.total(), found.unlisted), (154, 0));
    }
    // With a listed bound too: those past it are counted as before, under the same rows.
    let bound = Bound {
        listed: 20,
        ..Bound::NONE.with_examples(2)
    };
    let found = diff_within(&l, &c, &rules(), bound);
    assert_eq!(found.diffs.len(), 6 + 4);
    assert_eq!(counts_of(&found), counts_of(&all));
}

#[test]
fn past_the_listed_bound_long_paths_are_listed_within_the_room() {
    // A path longer than COUNTED_PATH is not counted under its pattern: listed while the room
    // holds it and its record, then only counted.
    let long = "n".repeat(listing::COUNTED_PATH);
    let l = json!({"a": 1, "b": 1, &long: [1, 2, 3]});
    let c = json!({"a": 2, "b": 2, &long: [4, 5, 6]});
    let bound = |room| Bound {
        room,
        listed: 1,
        ..Bound::NONE
    };
    let found = diff_within(&l, &c, &rules(), bound(usize::MAX));
    assert_eq!((found.diffs.len(), found.unlisted), (5, 0), "{found:?}");
    assert!(found.counted.is_empty());
    // Each charged its record and its path past the free text: 512 + 2 x (257 + 6) - 512.
    let each = listing::PAST_LISTED_COST + 14;
    let found = diff_within(&l, &c, &rules(), bound(2 * each));
    assert_eq!((found.diffs.len(), found.unlisted), (4, 1), "{found:?}");
}

#[test]
fn past_the_listed_bound_new_patterns_past_the_rows_are_only_counted() {
    let n = listing::COUNTED_ROWS + 50;
    let l: serde_json::Map<String, Value> =
        (0..n).map(|i| (format!("k{i}"), json!([1, 1]))).collect();
    let c: serde_json::Map<String, Value> =
        (0..n).map(|i| (format!("k{i}"), json!([2, 2]))).collect();
    let found = diff_within(
        &Value::Object(l),
        &Value::Object(c),
        &rules(),
        Bound {
            room: usize::MAX,
            listed: 0,
            ..Bound::NONE
        },
    );
    // One example and one count per row.
    assert_eq!(found.diffs.len(), listing::COUNTED_ROWS);
    assert_eq!(found.counted.len(), listing::COUNTED_ROWS);
    assert_eq!(found.unlisted, 2 * 50);
    assert_eq!(found.total(), 2 * n);
}

#[test]
fn past_the_rows_a_listed_pattern_is_still_counted_under_it() {
    // A record whose `a` differs first, then records of a new member each (more than the rows),
    // then `a` again: its pattern was listed, so it is counted whole (the store's row of it
    // is not short of the differences past the rows).
    let record = |i: usize, name: &str, v: u8| json!({"id": i, name: v});
    let side = |v: u8| {
        let mut list = vec![record(0, "a", v)];
        list.extend((1..=listing::COUNTED_ROWS + 100).map(|i| record(i, &format!("k{i}"), v)));
        list.push(record(listing::COUNTED_ROWS + 101, "a", v));
        Value::Array(list)
    };
    let r = Rules {
        auto_keys: true,
        ..rules()
    };
    let bound = Bound {
        room: usize::MAX,
        listed: 1,
        ..Bound::NONE
    };
    let found = diff_within(&side(1), &side(2), &r, bound);
    assert_eq!(found.diffs[0].field, "/*/a");
    assert!(found.counted.iter().any(|c| c.field == "/*/a" && c.n == 1));
    assert_eq!(found.unlisted, 100);
    assert_eq!(found.total(), listing::COUNTED_ROWS + 102);
}

#[test]
fn a_keyed_array_walked_again_counts_each_pattern_once() {
    // Past the listed bound, the fast path of a keyed array counts under patterns, then gives up
    // (the keys are in another order) and the keyed path walks again: what the first walk
    // counted and listed is taken back, so each difference is counted once and each pattern
    // keeps its example.
    let l =
        json!([{"id": 1, "v": 1, "w": 1}, {"id": 2, "v": 1, "w": 1}, {"id": 3, "v": 1, "w": 1}]);
    let c =
        json!([{"id": 1, "v": 2, "w": 2}, {"id": 3, "v": 2, "w": 2}, {"id": 2, "v": 2, "w": 2}]);
    let r = Rules {
        auto_keys: true,
        ..rules()
    };
    let all = diff_within(&l, &c, &r, Bound::NONE);
    assert_eq!(all.diffs.len(), 6);
    for listed in 0..6 {
        let found = diff_within(
            &l,
            &c,
            &r,
            Bound {
                room: usize::MAX,
                listed,
                ..Bound::NONE
            },
        );
        assert_eq!(found.total(), 6, "listed {listed}: {found:?}");
        assert_eq!(found.unlisted, 0);
        assert_eq!(counts_of(&found), counts_of(&all), "listed {listed}");
        assert_eq!(found.diffs[..listed], all.diffs[..listed]);
        // Each pattern listed at least once.
        for d in &all.diffs {
            assert!(found
                .diffs
                .iter()
                .any(|f| f.field == d.field && f.kind == d.kind));
        }
    }
}

#[test]
fn a_keyed_array_walked_again_lists_each_patterns_examples_once() {
    // As above, listing examples per pattern: the rows the fast path made are taken back, and
    // so is what the walk remembers of the last row of each kind.
    for members in [&["v"][..], &["v", "w"]] {
        let side = |ids: [u8; 3], v: u8| {
            let list: Vec<Value> = ids
                .iter()
                .map(|&id| {
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), json!(id));
                    for m in members {
                        o.insert((*m).into(), json!(v));
                    }
                    Value::Object(o)
                })
                .collect();
            Value::Array(list)
        };
        let (l, c) = (side([1, 2, 3], 1), side([1, 3, 2], 2));
        let r = Rules {
            auto_keys: true,
            ..rules()
        };
        let all = diff_within(&l, &c, &r, Bound::NONE);
        assert_eq!(all.diffs.len(), 3 * members.len());
        for examples in 1..=3 {
            for listed in [0, 1, 2, usize::MAX] {
                let bound = Bound {
                    room: usize::MAX,
                    listed,
                    examples,
                };
                let found = diff_within(&l, &c, &r, bound);
                assert_eq!(counts_of(&found), counts_of(&all), "{bound:?}");
                assert_eq!((found.total(), found.unlisted), (all.diffs.len(), 0));
                for m in members {
                    let n = found.diffs.iter().filter(|d| d.field == format!("/*/{m}"));
                    assert!((1..=examples).contains(&n.count()), "{bound:?}");
                }
            }
        }
    }
}

/// A room that gives up to `limit` bytes, and remembers what it was asked for.
struct Given {
    given: usize,
    limit: usize,
}

impl doc::Room for Given {
    fn take(&mut self, bytes: usize) -> bool {
        if self.given + bytes > self.limit {
            return false;
        }
        self.given += bytes;
        true
    }
}

fn room(limit: usize) -> Given {
    Given { given: 0, limit }
}

/// Documents whose trees are many times their text: a long flat array, records of one member,
/// an object of many members, long escaped strings.
fn dense_documents() -> Vec<(&'static str, String)> {
    let flat = format!("[{}]", vec!["1"; 200_000].join(","));
    let records = format!("[{}]", vec![r#"{"a":1}"#; 60_000].join(","));
    let wide = format!(
        "{{{}}}",
        (0..40_000)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let escaped = format!("[{}]", vec![r#""\u00e9\n""#; 30_000].join(","));
    vec![
        ("flat", flat),
        ("records", records),
        ("wide", wide),
        ("escaped", escaped),
    ]
}

#[test]
fn a_parse_asks_for_its_documents_memory_before_it_holds_it() {
    for (name, text) in dense_documents() {
        // Unbounded: what the parse asks for covers the arena it built (and more: the
        // scratch stacks, the name sets).
        let arena = bumpalo::Bump::new();
        let mut all = room(usize::MAX);
        assert!(matches!(
            doc::parse_within(text.as_bytes(), &arena, &mut all),
            Ok(doc::Doc::Fast(_))
        ));
        assert!(
            all.given >= arena.allocated_bytes(),
            "{name}: asked {} for an arena of {}",
            all.given,
            arena.allocated_bytes()
        );
        // Given less than that: refused, and the arena never grew past what was given.
        for share in [2, 4] {
            let arena = bumpalo::Bump::new();
            let mut part = room(all.given / share);
            assert!(
                matches!(
                    doc::parse_within(text.as_bytes(), &arena, &mut part),
                    Err(JsonError::OverBudget)
                ),
                "{name}: 1/{share}"
            );
            assert!(
                arena.allocated_bytes() <= part.given,
                "{name}: an arena of {} on {} given",
                arena.allocated_bytes(),
                part.given
            );
        }
    }
}

#[test]
fn an_ordinary_page_asks_for_no_more_than_its_bodies_share() {
    let page = include_str!("../../benches/data/harness-legacy.json");
    let arena = doc::Arena::take();
    let mut first = room(usize::MAX);
    assert!(doc::parse_within(page.as_bytes(), &arena, &mut first).is_ok());
    drop(arena);
    // A thread's spare arena holds the next page's tree without asking for it.
    let arena = doc::Arena::take();
    let mut again = room(usize::MAX);
    assert!(doc::parse_within(page.as_bytes(), &arena, &mut again).is_ok());
    // (A thread's first page, in a new arena, may ask for a little more: its chunks.)
    assert!(
        again.given <= page.len() * crate::budget::TREE_SHARE,
        "{} then {} for {} bytes",
        first.given,
        again.given,
        page.len()
    );
    assert!(first.given <= 2 * page.len() * crate::budget::TREE_SHARE);
}

#[test]
fn serde_jsons_document_is_asked_for_before_it_is_built() {
    let records = |n: usize| vec![r#"{"a":1,"b":"x"}"#; n].join(",");
    // A repeated name at the end: serde_json builds the whole document, and the parse asks
    // for it first (more than the scan's own tree).
    let repeated = format!("[{},{{\"a\":1,\"a\":2}}]", records(20_000));
    let arena = bumpalo::Bump::new();
    let mut all = room(usize::MAX);
    let parsed = doc::parse_within(repeated.as_bytes(), &arena, &mut all);
    assert!(matches!(parsed, Ok(doc::Doc::Tree(_))));
    let arena = bumpalo::Bump::new();
    let mut scan_only = room(usize::MAX);
    let clean = format!("[{}]", records(20_001));
    assert!(doc::parse_within(clean.as_bytes(), &arena, &mut scan_only).is_ok());
    assert!(
        all.given > 3 * scan_only.given,
        "{} against {}",
        all.given,
        scan_only.given
    );
    let arena = bumpalo::Bump::new();
    assert!(matches!(
        doc::parse_within(repeated.as_bytes(), &arena, &mut room(all.given - 1)),
        Err(JsonError::OverBudget)
    ));
    // A prefix the scan builds nothing of (whitespace, one long string) does not make the
    // estimate small: serde_json still builds all that follows.
    let first = format!("{{\"a\":1,\"a\":2}},{}", records(20_000));
    for dodge in [
        format!("{}[{first}]", " ".repeat(1 << 20)),
        format!("[\"{}\",{first}]", "x".repeat(1 << 20)),
    ] {
        let arena = bumpalo::Bump::new();
        let mut r = room(usize::MAX);
        assert!(matches!(
            doc::parse_within(dodge.as_bytes(), &arena, &mut r),
            Ok(doc::Doc::Tree(_))
        ));
        let rest = doc::tree_bytes(first.as_bytes());
        assert!(r.given >= rest, "{} against {rest}", r.given);
    }
    // And serde_json's document where a rule needs it (a mapping, a normalize rule) is asked
    // for too.
    assert!(matches!(
        doc::parse_json_within(clean.as_bytes(), &mut room(clean.len())),
        Err(JsonError::OverBudget)
    ));
    // An error: serde_json stops where the scan did. A page cut short asks for what was read;
    // a body that is not JSON at all for next to nothing, and keeps its verdict.
    let cut = &clean[..clean.len() / 2];
    let arena = bumpalo::Bump::new();
    let mut r = room(usize::MAX);
    assert!(matches!(
        doc::parse_within(cut.as_bytes(), &arena, &mut r),
        Err(JsonError::Invalid(_))
    ));
    assert!(r.given < all.given, "{} against {}", r.given, all.given);
    let html = format!("<html>{}</html>", "x".repeat(1 << 20));
    let arena = bumpalo::Bump::new();
    let mut r = room(64 << 10);
    assert!(matches!(
        doc::parse_within(html.as_bytes(), &arena, &mut r),
        Err(JsonError::Invalid(_))
    ));
}
