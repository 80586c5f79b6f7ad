//! The `Reader` conformance test: one fixture written to a SQLite file and to a PostgreSQL
//! database through the store's own writer and write functions, then every method of the
//! `Reader` trait called on both with the same arguments: the answers must be identical, in the
//! same order (a caller may rely on an engine's order only if both give it).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use shadowdiff::diff::{Difference, Kind};
use shadowdiff::record::{
    BodyText, Fallback, IdsSeen, Meta, NoiseSample, Outcome, Pair, Record, RouteKey, ServedBy,
    SkipReason, StoredBody, Unpaired,
};
use shadowdiff::store::{
    ExchangeQuery, Filter, GroupBy, Location, Reader, RediffRow, RolloutChange, RolloutStore, Rows,
    Side, Store, WriterOptions,
};

fn opts() -> WriterOptions {
    WriterOptions {
        queue: 10_000,
        priority: shadowdiff::background::Priority::Normal,
        retention: Duration::from_secs(30 * 86_400),
        max_value_len: 1024,
        examples_per_field: 3,
        exchanges: Rows::All,
        rows_per_hour: 100,
        migrate: true,
        reauth_after: 3,
        id_max_pairs: Vec::new(),
        webhooks: vec![(
            "https://hooks.example/a".into(),
            vec!["account.needs_reauth".into()],
        )],
    }
}

fn diff(field: &str, kind: Kind, k: usize) -> Difference {
    Difference {
        pointer: field.replace('*', &k.to_string()),
        field: field.into(),
        kind,
        legacy: Some(json!(k)),
        candidate: (kind != Kind::Missing).then(|| json!(format!("c{k}"))),
        candidate_pointer: None,
    }
}

/// Exchange `i` of the fixture, started at `at`: routes, accounts, outcomes, mapping versions,
/// who served, kept bodies and ids all vary with `i`.
fn record(i: usize, at: SystemTime) -> Record {
    let route = [Some("people"), Some("teams"), None][i % 3];
    let account = [Some("acme"), Some("globex"), None, Some("Ábc")][i % 4];
    let mut r = Record {
        meta: Meta {
            started_at: at,
            request_id: format!("r{i:03}"),
            route: route.map(Into::into),
            method: "GET".into(),
            path: format!("/{}/{i}", route.unwrap_or("x")),
            account: account.map(Into::into),
            serving: Default::default(),
        },
        legacy_status: Some(200),
        candidate_status: Some(200),
        legacy_ms: Some(1.0 + (i * 7 % 300) as f64),
        candidate_ms: Some(2.0 + (i * 13 % 500) as f64),
        outcome: Outcome::Match,
        reason: None,
        diff_count: 0,
        diffs: Arc::default(),
        present: Arc::new(vec!["/a".into(), "/list/*/b".into()]),
        bodies: vec![],
        mapping_version: (!i.is_multiple_of(5)).then(|| ["v1", "v2"][i % 2].into()),
        field_counts: None,
        ids: None,
    };
    let diffs: Vec<Difference> = match i % 8 {
        0 | 1 => vec![],
        2 => vec![diff("/a", Kind::Changed, i)],
        3 => (0..5)
            .map(|k| diff("/list/*/b", Kind::Missing, k))
            .collect(),
        4 => vec![diff("/a", Kind::Changed, i), diff("/c", Kind::Extra, i)],
        5 => {
            r.outcome = Outcome::Skipped(SkipReason::Overload);
            r.reason = Some("overload".into());
            r.candidate_ms = None;
            r.candidate_status = None;
            vec![]
        }
        6 => {
            r.outcome = Outcome::CandidateTimeout;
            r.meta.serving.fallback = Some(Fallback::Timeout);
            r.meta.serving.phase = Some("canary".into());
            vec![]
        }
        _ => {
            r.outcome = Outcome::CandidateAuthError;
            r.candidate_status = Some(401);
            vec![]
        }
    };
    if i % 8 <= 4 {
        r.outcome = if diffs.is_empty() {
            Outcome::Match
        } else {
            Outcome::Diff
        };
    }
    if i % 11 == 2 {
        r.meta.serving.served_by = ServedBy::Candidate;
        r.meta.serving.phase = Some("canary".into());
    }
    r.diff_count = diffs.len();
    r.diffs = Arc::new(diffs);
    if i % 10 == 2 {
        let body = |side: &'static str, v: serde_json::Value| StoredBody {
            side,
            status: Some(200),
            headers: json!({"content-type": "application/json"}),
            body: Some(BodyText::new(v.to_string())),
        };
        r.bodies = vec![
            body("legacy", json!({"a": i})),
            body("candidate", json!({"a": format!("c{i}")})),
        ];
    }
    if i.is_multiple_of(6) {
        let acct = account.unwrap_or("none").to_owned();
        r.ids = Some(Arc::new(IdsSeen {
            pairs: vec![Pair {
                account: acct.clone(),
                kind: "person".into(),
                legacy: format!("L{i}"),
                candidate: format!("C{i}"),
                numbers: 0,
            }],
            conflicts: vec![],
            unpaired: vec![Unpaired {
                account: acct,
                kind: "person".into(),
                side: "legacy",
                id: format!("U{i}"),
            }],
        }));
    }
    r
}

/// Replaces the times at or after `since` (written at the wall clock: outbox rows, rollout
/// events) with a placeholder; the fixture's own times are hours before it.
fn mask_now(text: &str, since: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("202") {
        out.push_str(&rest[..i]);
        let cand = &rest[i..];
        let end = cand
            .find(|c: char| !(c.is_ascii_digit() || "-:.TZ".contains(c)))
            .unwrap_or(cand.len());
        let t = &cand[..end];
        if t.len() >= 20 && t.as_bytes()[10] == b'T' && t >= since {
            out.push_str("<now>");
        } else {
            out.push_str(t);
        }
        rest = &cand[end..];
    }
    out.push_str(rest);
    out
}

fn fixture(location: &Location, base: SystemTime) {
    let store = Store::open_at(location, opts()).unwrap();
    let h = store.handle();
    // 160 exchanges, one every 97 s from `base`: 4.3 hours.
    for i in 0..160usize {
        h.record(record(i, base + Duration::from_secs(97 * i as u64)));
    }
    for k in 0..4u64 {
        for route in [Some("people"), Some("teams")] {
            h.noise(NoiseSample {
                route: RouteKey::from_route(route),
                at: base + Duration::from_secs(k),
                fields: vec!["/a".into()],
            });
        }
    }
    h.flush_blocking();
    assert_eq!(store.close().written(), 160);
    let at = |s: u64| shadowdiff::record::rfc3339(base + Duration::from_secs(s));
    let mark = shadowdiff::triage::Mark::new(
        shadowdiff::triage::Pattern::new("people", "/c", None).unwrap(),
        shadowdiff::triage::Status::Accepted,
        "the candidate adds it",
        Some("T-1"),
        "test",
        at(10),
        None,
    )
    .unwrap();
    shadowdiff::store::record_triage(location, &shadowdiff::triage::Change::Mark(mark)).unwrap();
    shadowdiff::store::save_replay_set(location, "set", &[(3, at(291)), (5, at(485))]).unwrap();
    shadowdiff::store::record_rediffs(
        location,
        &[RediffRow {
            at: at(20),
            route: "people".into(),
            mapping_version: Some("v2".into()),
            window_from: at(0),
            window_to: at(3600),
            exchanges: 10,
            recorded_matched: 4,
            matched: 6,
            fixed: 2,
            broken: 0,
            source: "mappings/".into(),
            detail: json!({"fields": {"/a": 2}}),
        }],
    )
    .unwrap();
    shadowdiff::store::enqueue_event(
        location,
        &opts().webhooks,
        "account.needs_reauth",
        &json!({"account": "acme"}),
    )
    .unwrap();
    RolloutStore::new(location)
        .append(
            None,
            &RolloutChange {
                to: "canary".into(),
                actor: "test".into(),
                reason: Some("start".into()),
                evidence: Some(json!({"gate": "pass"})),
            },
        )
        .unwrap();
}

/// Every method of the trait, each answer as text.
fn answers(r: &dyn Reader, base: SystemTime, now: SystemTime) -> Vec<(String, String)> {
    let hour = Duration::from_secs(3600);
    let all = Filter {
        from: base - hour,
        to: now,
        route: None,
        account: None,
        mapping_version: None,
    };
    let filters = [
        all.clone(),
        Filter {
            route: Some(RouteKey::from_route(Some("people"))),
            ..all.clone()
        },
        Filter {
            route: Some(RouteKey::from_route(None)),
            ..all.clone()
        },
        Filter {
            account: Some("acme".into()),
            ..all.clone()
        },
        Filter {
            mapping_version: Some("v2".into()),
            ..all.clone()
        },
        Filter {
            from: base + hour + Duration::from_secs(600),
            to: base + hour * 3 + Duration::from_secs(1200),
            ..all.clone()
        },
    ];
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, v: String| out.push((name, v));
    for (i, f) in filters.iter().enumerate() {
        for by in [GroupBy::Route, GroupBy::Account] {
            put(
                format!("outcome_counts {by:?} {i}"),
                format!("{:?}", r.outcome_counts(by, f)),
            );
        }
        put(
            format!("noise_only {i}"),
            format!("{:?}", r.noise_only(f, 2)),
        );
        put(
            format!("accepted_only {i}"),
            format!("{:?}", r.accepted_only(f, 2, now)),
        );
        for side in [Side::Legacy, Side::Candidate] {
            put(
                format!("latencies {side:?} {i}"),
                format!("{:?}", r.latencies(f, side, 1)),
            );
            put(
                format!("latencies/3 {side:?} {i}"),
                format!("{:?}", r.latencies(f, side, 3)),
            );
            put(
                format!("latency_histogram {side:?} {i}"),
                format!("{:?}", r.latency_histogram(f, side)),
            );
        }
        put(format!("fields {i}"), format!("{:?}", r.fields(f)));
        put(
            format!("mapping_versions {i}"),
            format!("{:?}", r.mapping_versions(f)),
        );
        for bucket in [3600, 86_400, 600] {
            put(
                format!("trend {bucket} {i}"),
                format!("{:?}", r.trend(f, bucket)),
            );
        }
        for q in [
            ExchangeQuery {
                outcome: None,
                field: None,
                limit: 1000,
            },
            ExchangeQuery {
                outcome: Some("diff".into()),
                field: Some("/a".into()),
                limit: 7,
            },
        ] {
            put(
                format!("exchanges {q:?} {i}"),
                format!("{:?}", r.exchanges(f, &q)),
            );
        }
        for field in [None, Some("/a")] {
            put(
                format!("field_accounts {field:?} {i}"),
                format!("{:?}", r.field_accounts(f, field, 50)),
            );
        }
        put(
            format!("kept_pairs {i}"),
            format!("{:?}", r.kept_pairs(f, 0, 100)),
        );
        put(
            format!("cohort_counts {i}"),
            format!("{:?}", r.cohort_counts(f)),
        );
        put(
            format!("shadow_spend {i}"),
            format!("{:?}", r.shadow_spend(f)),
        );
        put(
            format!("exact_window {i}"),
            format!("{:?}", r.exact_window(f)),
        );
        put(
            format!("every_row_kept {i}"),
            format!("{:?}", r.every_row_kept(f)),
        );
    }
    for route in [Some("people"), Some("teams"), None] {
        let key = RouteKey::from_route(route);
        put(
            format!("learned_noise {route:?}"),
            format!("{:?}", r.learned_noise(&key, 2)),
        );
        let presence: Option<BTreeMap<String, u64>> = r
            .presence(&key, all.from, all.to)
            .ok()
            .map(|m| m.into_iter().collect());
        put(format!("presence {route:?}"), format!("{presence:?}"));
    }
    for id in [1, 3, 11, 160, 161] {
        put(
            format!("example {id}"),
            format!("{:?}", r.example(id, "/a", "changed")),
        );
        put(
            format!("kept_exchange {id}"),
            format!("{:?}", r.kept_exchange(id)),
        );
        put(format!("exchange {id}"), format!("{:?}", r.exchange(id, 3)));
    }
    for outcome in [None, Some("diff"), Some("skipped")] {
        put(
            format!("latest {outcome:?}"),
            format!("{:?}", r.latest(outcome, 9)),
        );
    }
    put(
        "webhook_status".into(),
        format!("{:?}", r.webhook_status(10)),
    );
    put("account_health".into(), format!("{:?}", r.account_health()));
    put("id_coverage".into(), format!("{:?}", r.id_coverage()));
    put("id_pairs".into(), format!("{:?}", r.id_pairs(100)));
    put(
        "rediffs".into(),
        format!("{:?}", r.rediffs(all.from, all.to)),
    );
    put("replay_set".into(), format!("{:?}", r.replay_set("set")));
    put("triage_marks".into(), format!("{:?}", r.triage_marks()));
    put("triage_log".into(), format!("{:?}", r.triage_log(10)));
    put(
        "rollout_events".into(),
        format!(
            "{:?}",
            r.rollout_events(all.from, now + Duration::from_secs(60), 10)
        ),
    );
    out
}

#[test]
fn every_reader_method_answers_alike_on_both_engines() {
    let started = shadowdiff::record::rfc3339(SystemTime::now());
    let now = SystemTime::now();
    let hour = 3600;
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    // Six hours before this one: whole hours of roll-ups and partial ones read as rows.
    let base = UNIX_EPOCH + Duration::from_secs(secs / hour * hour - 6 * hour + 125);
    let dir = tempfile::tempdir().unwrap();
    let locations = [
        Location::parse(&dir.path().join("c.db").display().to_string()),
        Location::parse(&support::pg::database()),
    ];
    let mut got: Vec<Vec<(String, String)>> = Vec::new();
    for location in &locations {
        fixture(location, base);
        let reader = shadowdiff::store::open_reader_at(location).unwrap();
        got.push(answers(&*reader, base, now));
    }
    let (sqlite, postgres) = (&got[0], &got[1]);
    assert_eq!(sqlite.len(), postgres.len());
    let mut differ = Vec::new();
    for ((name, a), (_, b)) in sqlite.iter().zip(postgres) {
        assert!(!a.starts_with("Err"), "sqlite {name}: {a}");
        assert!(!b.starts_with("Err"), "postgres {name}: {b}");
        let (a, b) = (mask_now(a, &started), mask_now(b, &started));
        if a != b {
            differ.push(format!("{name}:\n  sqlite:   {a}\n  postgres: {b}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} answers differ:\n{}",
        differ.len(),
        sqlite.len(),
        differ.join("\n")
    );
    // The fixture is not empty where it matters (an answer of nothing on both proves little).
    let text = |name: &str| {
        sqlite
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    for name in [
        "noise_only 0",
        "accepted_only 0",
        "fields 0",
        "kept_pairs 0",
        "account_health",
        "id_coverage",
        "webhook_status",
        "rediffs",
        "rollout_events",
    ] {
        assert!(text(name).len() > 12, "{name}: {}", text(name));
    }
}
