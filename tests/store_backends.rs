//! The store on both backends, one matrix: every test here runs against a SQLite file and a
//! PostgreSQL database (a private server started by `support::pg`; without its binaries these
//! tests fail, they never skip).

mod support;

use std::process::Command;

/// A fresh store of each backend: (name, what `--db` takes, the temp dir keeping a file alive).
fn backends() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store/shadowdiff.db").display().to_string();
    vec![
        ("sqlite", file, Some(dir)),
        ("postgres", support::pg::database(), None),
    ]
}

fn shadowdiff(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The versions recorded in the store's `schema_version`, and whether its tables exist.
fn versions_and_tables(db: &str) -> (Vec<i64>, Vec<String>) {
    let tables = [
        "exchanges",
        "diff_fields",
        "diffs",
        "bodies",
        "blobs",
        "field_presence",
        "noise_samples",
        "noise_fields",
    ];
    if db.starts_with("postgres://") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        let v = c
            .query("SELECT version FROM schema_version ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let present = tables
            .iter()
            .filter(|t| {
                c.query_one("SELECT to_regclass($1) IS NOT NULL", &[t])
                    .unwrap()
                    .get::<_, bool>(0)
            })
            .map(|t| (*t).to_owned())
            .collect();
        (v, present)
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        let v = c
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let present = tables
            .iter()
            .filter(|t| {
                c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [t],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    == 1
            })
            .map(|t| (*t).to_owned())
            .collect();
        (v, present)
    }
}

#[test]
fn migrate_creates_the_schema_once_on_both_backends() {
    let latest = shadowdiff::store::latest_schema_version();
    for (name, db, _keep) in backends() {
        let (code, out, err) = shadowdiff(&["migrate", "--db", &db]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            out.contains(&format!("schema version {latest} (applied 1")),
            "{name}: {out}"
        );
        let (code, out, err) = shadowdiff(&["migrate", "--db", &db]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("up to date"), "{name}: {out}");
        let (versions, tables) = versions_and_tables(&db);
        assert_eq!(versions, (1..=latest).collect::<Vec<_>>(), "{name}");
        assert_eq!(tables.len(), 8, "{name}: {tables:?}");
    }
}

#[test]
fn instances_migrating_at_once_apply_each_step_exactly_once() {
    for (name, db, _keep) in backends() {
        let spawned: Vec<_> = (0..4)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
                    .args(["migrate", "--db", &db])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut applied = 0;
        for child in spawned {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            applied += usize::from(stdout.contains("applied"));
        }
        let (versions, _) = versions_and_tables(&db);
        assert_eq!(
            versions,
            (1..=shadowdiff::store::latest_schema_version()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            applied, 1,
            "{name}: one process migrates, the others find it done"
        );
    }
}

#[test]
fn a_postgres_password_never_reaches_an_error_message() {
    // Nothing listens on port 1 of loopback: the connection fails and says where it went.
    let (code, out, err) = shadowdiff(&[
        "migrate",
        "--db",
        "postgres://app:hunter2-secret@127.0.0.1:1/shadow?password=other-secret",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("postgres://app:***@127.0.0.1:1/shadow?password=***"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !err.contains("other-secret"),
        "{err}"
    );
}

#[test]
fn a_postgres_url_is_connected_to_and_never_becomes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://app:hunter2@127.0.0.1:1/shadow";
    // Readers connect (nothing listens on port 1 of loopback) and say where, masked, once.
    for args in [
        vec!["report", "--db", url],
        vec!["diff", "--exchange", "1", "--db", url],
        vec!["prune", "--db", url],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("postgres://app:***@127.0.0.1:1/shadow"),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("Connection refused").count(),
            1,
            "one cause, once: {err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    std::fs::write(
        dir.path().join("sd.toml"),
        format!("[store]\npath = \"{url}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["--config", "sd.toml", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[store] path: postgres://app:***@") && err.contains("[store] url"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing but the config was created"
    );
}

mod writes {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use serde_json::json;
    use shadowdiff::diff::{Difference, Kind};
    use shadowdiff::record::{BodyText, Meta, NoiseSample, Outcome, Record, StoredBody};
    use shadowdiff::store::{Location, Store, WriterOptions};

    pub(super) fn opts() -> WriterOptions {
        WriterOptions {
            queue: 10_000,
            priority: shadowdiff::background::Priority::Normal,
            retention: Duration::from_secs(30 * 86_400),
            max_value_len: 1024,
            examples_per_field: 3,
            exchanges: shadowdiff::store::Rows::All,
            rows_per_hour: 100,
            migrate: true,
            reauth_after: 3,
            id_max_pairs: Vec::new(),
            webhooks: Vec::new(),
        }
    }

    /// An exchange with 5 differences at one field pattern, hostile text in its keys and path,
    /// and (for `i == 0`) both bodies kept.
    pub(super) fn record(i: usize, at: SystemTime) -> Record {
        let diffs: Vec<Difference> = (0..5)
            .map(|k| Difference {
                pointer: format!("/people/{k}/na\tme\\\n\u{0}é"),
                field: "/people/*/na\tme\\\n\u{0}é".into(),
                kind: Kind::Changed,
                legacy: Some(json!("A\tb")),
                candidate: Some(json!(k)),
                candidate_pointer: None,
            })
            .collect();
        let body = |s: &str| StoredBody {
            side: if s == "A" { "legacy" } else { "candidate" },
            status: Some(200),
            headers: json!({"content-type": "application/json"}),
            body: Some(BodyText::new(json!({"people": [{"name": s}]}).to_string())),
        };
        Record {
            meta: Meta {
                started_at: at,
                request_id: format!("r{i}"),
                route: Some("people".into()),
                method: "GET".into(),
                path: "/people/ü\ttab".into(),
                account: Some("acme".into()),
                serving: Default::default(),
            },
            legacy_status: Some(200),
            candidate_status: Some(200),
            legacy_ms: Some(1.25),
            candidate_ms: Some(2.5),
            outcome: Outcome::Diff,
            reason: None,
            diff_count: 5,
            diffs: Arc::new(diffs),
            present: Arc::new(vec!["/people".into(), "/people/*/name".into()]),
            bodies: if i == 0 {
                vec![body("A"), body("B")]
            } else {
                vec![]
            },
            mapping_version: None,
            field_counts: None,
            ids: None,
        }
    }

    fn counts(db: &str) -> Vec<i64> {
        let queries = [
            "SELECT count(*) FROM exchanges",
            "SELECT count(DISTINCT id) FROM exchanges",
            "SELECT coalesce(sum(n), 0) FROM diff_fields",
            "SELECT count(*) FROM diffs",
            "SELECT count(*) FROM bodies",
            "SELECT count(*) FROM blobs",
            "SELECT coalesce(sum(n), 0) FROM field_presence WHERE field = '/people/*/name'",
            "SELECT coalesce(sum(samples), 0) FROM noise_samples",
            "SELECT coalesce(sum(differed), 0) FROM noise_fields",
            "SELECT count(*) FROM diffs WHERE pointer LIKE '/people/0/na%'",
        ];
        if db.starts_with("postgres://") {
            let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
            queries
                .iter()
                .map(|q| {
                    let row = c.query_one(*q, &[]).unwrap();
                    row.try_get::<_, i64>(0)
                        .unwrap_or_else(|_| row.get::<_, rust_decimal_free::Num>(0).0)
                })
                .collect()
        } else {
            let c = rusqlite::Connection::open(db).unwrap();
            queries
                .iter()
                .map(|q| c.query_row(q, [], |r| r.get(0)).unwrap())
                .collect()
        }
    }

    fn first_pointer(db: &str) -> String {
        let q = "SELECT pointer FROM diffs WHERE pointer LIKE '/people/0/%' LIMIT 1";
        if db.starts_with("postgres://") {
            let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
            c.query_one(q, &[]).unwrap().get(0)
        } else {
            let c = rusqlite::Connection::open(db).unwrap();
            c.query_row(q, [], |r| r.get(0)).unwrap()
        }
    }

    /// `sum(bigint)` is `numeric` in PostgreSQL: read from its binary form.
    mod rust_decimal_free {
        pub struct Num(pub i64);
        impl<'a> postgres::types::FromSql<'a> for Num {
            fn from_sql(
                _: &postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                // numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits.
                let u = |i: usize| i64::from(u16::from_be_bytes([raw[i], raw[i + 1]]));
                let (ndigits, weight) = (u(0) as usize, u(2));
                let mut v = 0i64;
                for d in 0..ndigits {
                    v = v * 10_000 + u(8 + 2 * d);
                }
                for _ in (ndigits as i64)..=weight {
                    v *= 10_000;
                }
                Ok(Num(v))
            }
            fn accepts(ty: &postgres::types::Type) -> bool {
                *ty == postgres::types::Type::NUMERIC
            }
        }
    }

    #[test]
    fn three_writers_on_one_store_sum_every_counter_exactly() {
        let day = Duration::from_secs(86_400);
        for (name, db, _keep) in super::backends() {
            let location = Location::parse(&db);
            let now = SystemTime::now();
            let writers: Vec<_> = (0..3)
                .map(|w| {
                    let location = location.clone();
                    std::thread::spawn(move || {
                        let store = Store::open_at(&location, opts()).unwrap();
                        let h = store.handle();
                        for i in 0..200 {
                            // Three days: partitions on demand, from several writers at once.
                            let at = now - day * ((i % 3) as u32);
                            h.record(record(if w == 0 { i } else { i + 1 }, at));
                            if i % 50 == 0 {
                                h.noise(NoiseSample {
                                    route: "people".into(),
                                    at,
                                    fields: vec!["/x".into(), "/y".into()],
                                });
                            }
                        }
                        h.flush_blocking();
                        let stats = store.close();
                        (stats.written(), stats.dropped(), stats.lost())
                    })
                })
                .collect();
            for w in writers {
                assert_eq!(w.join().unwrap(), (200, 0, 0), "{name}");
            }
            assert_eq!(
                counts(&db),
                vec![600, 600, 3000, 1800, 2, 2, 600, 12, 24, 600],
                "{name}: exchanges, distinct ids, differences counted, example rows (3 of 5 each), \
                 bodies, body texts (once), presence of one pattern (once per exchange), \
                 noise samples, noise fields, the hostile pointers stored"
            );
            // Tab, backslash and newline come back as they were; NUL, which PostgreSQL's text
            // cannot hold, as U+FFFD.
            let p = first_pointer(&db);
            assert!(
                p == "/people/0/na\tme\\\n\u{0}é" || p == "/people/0/na\tme\\\n\u{FFFD}é",
                "{name}: {p:?}"
            );
        }
    }
}

/// PostgreSQL stopped while exchanges keep coming: the writer holds its batch and retries, the
/// bounded queue fills, what does not fit is dropped and counted; started again, writing resumes
/// and every exchange is either in the store or counted as dropped.
#[test]
fn a_postgres_outage_loses_nothing_it_does_not_count() {
    use shadowdiff::store::{Location, Store};
    let mut server = support::pg::Private::start();
    let db = server.database();
    let mut opts = writes::opts();
    opts.queue = 100;
    let store = Store::open_at(&Location::parse(&db), opts).unwrap();
    let h = store.handle();
    let now = std::time::SystemTime::now();
    for i in 0..50 {
        h.record(writes::record(i + 1, now));
    }
    h.flush_blocking();
    assert_eq!(h.stats().written(), 50, "{:?}", h.stats().failure());
    server.stop();
    // A few exchanges: the writer takes them, cannot reach the store, holds them and retries.
    for i in 0..10 {
        h.record(writes::record(i + 1, now));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.stats().failure().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the outage was never reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Meanwhile the queue (100) fills and the rest is dropped, counted one by one.
    for i in 0..400 {
        h.record(writes::record(i + 1, now));
    }
    assert_eq!(h.stats().dropped(), 300);
    server.resume();
    h.flush_blocking();
    let stats = store.close();
    assert_eq!(
        (stats.written(), stats.dropped(), stats.lost()),
        (160, 300, 0),
        "50 before, 10 held through the outage, 100 queued; 300 dropped"
    );
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM exchanges", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n as u64,
        stats.written(),
        "the store holds exactly what was counted as written"
    );
    assert!(stats.failure().is_none(), "writes succeed again");
}

/// The same exchanges written into a SQLite file and into PostgreSQL read back as the same
/// report, gate verdict and recomputed exchange (the report's window aside: it is "now").
#[test]
fn the_same_exchanges_give_the_same_report_and_gate_on_both_backends() {
    use shadowdiff::store::{Location, Store};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        "[gate.canary]\nmin_compared = 10\nmin_parity = 0.5\n[[routes]]\nname = \"people\"\npath = \"/people/{x}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"people":[{"na\tme\\\n\ufffd\u00e9":"A\tb"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"people":[{"na\tme\\\n\ufffd\u00e9":"B"}]}"#,
    )
    .unwrap();
    let now = std::time::SystemTime::now();
    let mut outputs = Vec::new();
    for (name, db, _keep) in backends() {
        let store = Store::open_at(&Location::parse(&db), writes::opts()).unwrap();
        let h = store.handle();
        for i in 0..120 {
            let mut r = writes::record(i, now - std::time::Duration::from_secs(60 * i as u64));
            // NUL is the one text PostgreSQL stores otherwise (as U+FFFD): left out here.
            let clean: Vec<_> = r
                .diffs
                .iter()
                .cloned()
                .map(|mut d| {
                    d.pointer = d.pointer.replace('\0', "\u{FFFD}");
                    d.field = d.field.replace('\0', "\u{FFFD}");
                    d
                })
                .collect();
            // Names that sort apart under a locale's collation and bytewise: the report must come
            // out the same on both engines whatever the database's locale (the test database
            // uses ICU en-US).
            let mut clean = clean;
            for (k, name) in ["Zeta", "_x", "alpha", "Émile", "beta"].iter().enumerate() {
                if (i + k) % 3 != 0 {
                    clean.push(shadowdiff::diff::Difference {
                        pointer: format!("/people/0/{name}"),
                        field: format!("/people/*/{name}"),
                        kind: shadowdiff::diff::Kind::Missing,
                        legacy: Some(serde_json::json!(name)),
                        candidate: None,
                        candidate_pointer: None,
                    });
                }
            }
            r.diff_count = clean.len();
            r.diffs = std::sync::Arc::new(clean);
            r.meta.account = Some(["Acme", "acme", "Ábc", "_acme"][i % 4].into());
            if i % 4 == 0 {
                r.outcome = shadowdiff::record::Outcome::Match;
                r.diffs = Default::default();
                r.diff_count = 0;
            }
            if i % 10 == 0 {
                r.meta.account = Some("globex".into());
                r.mapping_version = Some("v2".into());
            }
            if i % 10 == 5 {
                // Kept bodies of unmapped exchanges: what rediff judges again.
                r.bodies = writes::record(0, now).bodies;
            }
            h.record(r);
        }
        h.flush_blocking();
        assert_eq!(store.close().written(), 120, "{name}");
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, report, err) = run(&[
            "--config", "sd.toml", "report", "--db", &db, "--since", "7d", "--format", "json",
        ]);
        assert_eq!(code, Some(0), "{name}: {err}");
        let mut report: serde_json::Value = serde_json::from_str(&report).unwrap();
        // The gates' verdicts come with a config that has [gate] tables (sd.toml has).
        assert_eq!(report["gates"][0]["phase"], "canary", "{report}");
        for k in ["window", "generated_at", "gates"] {
            report.as_object_mut().unwrap().remove(k);
        }
        if db.starts_with("postgres://") {
            // The same store named by the config's `[store] url` instead of `--db`.
            std::fs::write(
                dir.path().join("url.toml"),
                format!("[store]\nurl = \"{db}\"\n"),
            )
            .unwrap();
            let (code, by_config, err) = run(&[
                "--config", "url.toml", "report", "--since", "7d", "--format", "json",
            ]);
            assert_eq!(code, Some(0), "{err}");
            let mut by_config: serde_json::Value = serde_json::from_str(&by_config).unwrap();
            by_config.as_object_mut().unwrap().remove("window");
            assert_eq!(
                by_config, report,
                "[store] url reads the same store as --db"
            );
        }
        let (gcode, gate, err) = run(&[
            "--config", "sd.toml", "gate", "--phase", "canary", "--db", &db, "--format", "json",
        ]);
        assert!(gcode == Some(0) || gcode == Some(1), "{name}: {err}");
        let mut gate: serde_json::Value = serde_json::from_str(&gate).unwrap();
        gate.as_object_mut().unwrap().remove("window");
        let (xcode, exchange, err) =
            run(&["diff", "--exchange", "1", "--db", &db, "--format", "json"]);
        assert_eq!(xcode, Some(1), "{name}: {err}");
        let (dcode, classes, err) = run(&[
            "--config", "sd.toml", "diff", "a.json", "b.json", "--route", "people", "--db", &db,
            "--format", "json", "--since", "7d",
        ]);
        assert_eq!(dcode, Some(1), "{name}: {err}");
        assert!(classes.contains("\"class\""), "{name}: {classes}");
        let mut classes: serde_json::Value = serde_json::from_str(&classes).unwrap();
        let window = classes["classification"].as_object_mut().unwrap();
        window.remove("from");
        window.remove("to");
        // rediff --record: the same verdicts and the same recorded row on both.
        let (rcode, rediff, err) = run(&[
            "--config", "sd.toml", "rediff", "--db", &db, "--since", "7d", "--format", "json",
            "--record",
        ]);
        assert_eq!(rcode, Some(0), "{name}: {err}");
        let rediff: serde_json::Value = serde_json::from_str(&rediff).unwrap();
        assert_eq!(
            rediff["summary"]["exchanges"],
            serde_json::json!(12),
            "{name}: {rediff}"
        );
        assert_eq!(
            rediff["summary"]["skipped"],
            serde_json::json!({"no_unmapped_body": 1})
        );
        let (_, after, err) = run(&[
            "--config", "sd.toml", "report", "--db", &db, "--since", "7d", "--format", "json",
        ]);
        let after: serde_json::Value =
            serde_json::from_str(&after).unwrap_or_else(|_| panic!("{err}"));
        let mut rows = after["rediffs"].clone();
        for r in rows.as_array_mut().unwrap() {
            for k in ["at", "window_from", "window_to"] {
                r.as_object_mut().unwrap().remove(k);
            }
        }
        assert_eq!(rows.as_array().unwrap().len(), 1, "{name}: {after}");
        let summary = rediff["summary"].clone();
        // A day's window: the trend in hours, with the same bucket labels on both engines.
        let (_, day, err) = run(&[
            "--config", "sd.toml", "report", "--db", &db, "--since", "24h", "--format", "json",
        ]);
        let day: serde_json::Value = serde_json::from_str(&day).unwrap_or_else(|_| panic!("{err}"));
        let hourly: Vec<serde_json::Value> = day["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r["route"], r["trend_bucket"], r["trend"]]))
            .collect();
        assert!(
            hourly
                .iter()
                .all(|h| h[1] == "1h"
                    && h[2][0]["day"].as_str().is_some_and(|d| d.ends_with(":00Z"))),
            "{name}: {hourly:?}"
        );
        outputs.push((
            name,
            report,
            gcode,
            gate,
            (exchange, classes, summary, rows, hourly),
        ));
    }
    let (a, b) = (&outputs[0], &outputs[1]);
    assert_eq!(a.1, b.1, "report: {} vs {}", a.0, b.0);
    assert_eq!((a.2, &a.3), (b.2, &b.3), "gate");
    assert_eq!(
        a.4, b.4,
        "diff --exchange, diff --route classes, rediff, rediffs"
    );
}

/// `serve` on PostgreSQL: exchanges land in the database, the dashboard's API reads them back,
/// and while the database is stopped the callers see nothing, `/readyz` says `degraded` (still
/// 200: the fleet stays in the load balancer), and writing resumes when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_records_and_rides_out_an_outage() {
    use serde_json::json;
    use support::{get, Shadowdiff, Upstream};
    let blocking =
        |f: Box<dyn FnOnce() -> serde_json::Value + Send>| std::thread::spawn(f).join().unwrap();
    let (server, db) = std::thread::spawn(|| {
        let s = support::pg::Private::start();
        let db = s.database();
        (s, db)
    })
    .join()
    .unwrap();
    let server = std::sync::Arc::new(std::sync::Mutex::new(server));
    let count = {
        let db = db.clone();
        move || {
            let db = db.clone();
            blocking(Box::new(move || {
                let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
                let n: i64 = c
                    .query_one("SELECT count(*) FROM exchanges", &[])
                    .unwrap()
                    .get(0);
                json!(n)
            }))
        }
    };
    let legacy = Upstream::json(json!({"people": [{"id": 1, "name": "A"}]})).await;
    let candidate = Upstream::json(json!({"people": [{"id": 1, "name": "B"}]})).await;
    let sd = Shadowdiff::start(
        &legacy.url(),
        &candidate.url(),
        &format!("[store]\nurl = \"{db}\"\n"),
    )
    .await;
    let admin = |path: &str| format!("http://{}{path}", sd.admin.unwrap());
    for i in 0..20 {
        assert_eq!(get(&sd.url(&format!("/people?page={i}"))).await.status, 200);
    }
    sd.quiesce().await;
    assert_eq!(count(), json!(20));
    let summary = get(&admin("/api/summary?since=1h")).await;
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    assert_eq!(
        summary.json()["totals"]["exchanges"],
        20,
        "{}",
        summary.json()
    );
    assert_eq!(get(&admin("/readyz")).await.json()["status"], "ready");
    // The admin API keeps its connections: ten more requests open at most one more session.
    let sessions = {
        let db = db.clone();
        move || {
            let db = db.clone();
            blocking(Box::new(move || {
                let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
                let n: i64 = c
                    .query_one(
                        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                json!(n)
            }))
        }
    };
    let before = sessions().as_i64().unwrap();
    for _ in 0..10 {
        assert_eq!(get(&admin("/api/summary?since=1h")).await.status, 200);
    }
    let after = sessions().as_i64().unwrap();
    // `sessions` counts the two probes' own connections too.
    assert!(
        after - before <= 2,
        "{before} -> {after} sessions for 10 requests"
    );

    // The database stops: callers are answered as before, the store says degraded.
    let s = server.clone();
    std::thread::spawn(move || s.lock().unwrap().stop())
        .join()
        .unwrap();
    for i in 0..20 {
        let got = get(&sd.url(&format!("/people?page=x{i}"))).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["people"][0]["name"], "A");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let r = get(&admin("/readyz")).await;
        if r.json()["status"] == "degraded" || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        ready.status, 200,
        "degraded keeps the instance in the load balancer"
    );
    assert_eq!(ready.json()["status"], "degraded", "{}", ready.json());
    let error = ready.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("postgres://postgres@127.0.0.1"), "{error}");

    // Back: the held exchanges are written, readiness returns.
    let s = server.clone();
    std::thread::spawn(move || s.lock().unwrap().resume())
        .join()
        .unwrap();
    sd.quiesce().await;
    // The kept admin connection died with the server: the next request opens a new one.
    let summary = get(&admin("/api/summary?since=1h")).await;
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    assert_eq!(summary.json()["totals"]["exchanges"], 40);
    let (summary, _dir) = sd.stop().await;
    assert_eq!(count(), json!(40), "nothing lost: {summary:?}");
}

/// Retention on both backends: the same exchanges, the same cutoff, the same survivors; on
/// PostgreSQL the days wholly before the cutoff are dropped as partitions.
#[test]
fn prune_removes_the_same_exchanges_on_both_backends_and_drops_old_days() {
    use shadowdiff::store::{Location, Store};
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let ages = [0, 1, 3, 40];
    let mut results = Vec::new();
    for (name, db, _keep) in backends() {
        let store = Store::open_at(&Location::parse(&db), writes::opts()).unwrap();
        let h = store.handle();
        for (i, age) in ages.iter().enumerate() {
            for k in 0..5 {
                // Body texts kept with the oldest day's first exchange only.
                let n = if *age == 40 && k == 0 {
                    0
                } else {
                    i * 10 + k + 1
                };
                h.record(writes::record(
                    n,
                    now - day * *age - std::time::Duration::from_secs(60),
                ));
            }
        }
        h.flush_blocking();
        assert_eq!(store.close().written(), 20, "{name}");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(["prune", "--db", &db, "--older-than", "2d"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("deleted 10 exchanges"), "{name}: {stdout}");
        let counts: Vec<i64> = {
            let q = [
                "SELECT count(*) FROM exchanges",
                "SELECT count(*) FROM diffs",
                "SELECT count(*) FROM diff_fields",
                "SELECT count(*) FROM bodies",
                "SELECT count(*) FROM blobs",
            ];
            if db.starts_with("postgres://") {
                let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
                let parts: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'exchanges'",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                assert_eq!(parts, 2, "today's and yesterday's partitions are left");
                q.iter()
                    .map(|q| c.query_one(*q, &[]).unwrap().get(0))
                    .collect()
            } else {
                let c = rusqlite::Connection::open(&db).unwrap();
                q.iter()
                    .map(|q| c.query_row(q, [], |r| r.get(0)).unwrap())
                    .collect()
            }
        };
        results.push((name, counts));
    }
    assert_eq!(results[0].1, vec![10, 30, 10, 0, 0], "{}", results[0].0);
    assert_eq!(results[0].1, results[1].1, "both backends keep the same");
}

/// A fleet: three `serve` processes on one PostgreSQL database, traffic spread over them, one
/// SIGKILLed mid-load and started again. Afterwards the report counts every exchange the
/// candidate saw, except at most what the killed one had not yet written (its queue and batch);
/// the shared counters agree with the exchanges; the gate reads the same from every process's
/// point of view (it reads the one database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_on_one_database_survives_a_sigkill() {
    use serde_json::json;
    use std::io::BufRead;
    use std::sync::atomic::{AtomicU64, Ordering};
    use support::{get, Reply, Upstream};
    let db = std::thread::spawn(support::pg::database).join().unwrap();
    // Legacy's `seq` differs between any two answers: every second legacy call (noise
    // sampling, on for every request here) finds it noisy.
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let legacy = Upstream::start(move |_| {
        let n = c.fetch_add(1, Ordering::Relaxed);
        Reply::json(json!({"people": [{"id": 1, "name": "A"}], "seq": n}))
    })
    .await;
    let candidate = Upstream::json(json!({"people": [{"id": 1, "name": "B"}], "seq": 0})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[legacy]\nbase_url = \"{}\"\n[candidate]\nbase_url = \"{}\"\n\
             [diff.noise]\nsecondary_sample_rate = 1.0\n\
             [gate.shadow]\nmin_compared = 10\nmin_parity = 0.5\n",
            legacy.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let start = |db: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(["serve", "--config"])
            .arg(&config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--db",
                db,
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let (url, admin) = loop {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("serve printed its address within 30 s");
            if let Some(rest) = l.split("proxy on http://").nth(1) {
                let (proxy, admin) = rest.split_once(", admin on http://").unwrap();
                break (
                    format!("http://{}", proxy.trim()),
                    format!("http://{}", admin.trim()),
                );
            }
        };
        (child, url, admin)
    };
    let mut fleet: Vec<_> = (0..3).map(|_| start(&db)).collect();
    let mut sent_to_killed_before = 0;
    for i in 0..300 {
        if i == 150 {
            // SIGKILL: no drain, no flush.
            let (mut killed, _, _) = fleet.remove(1);
            killed.kill().unwrap();
            killed.wait().unwrap();
            fleet.insert(1, start(&db));
        }
        let k = i % 3;
        if k == 1 && i < 150 {
            sent_to_killed_before += 1;
        }
        let got = get(&format!("{}/people?n={i}", fleet[k].1)).await;
        assert_eq!(got.status, 200);
    }
    // The dashboard's API of every instance shows the fleet: once the writes settle, the three
    // summaries agree (on everything but when they were made).
    let totals = |admin: String| async move {
        let s = get(&format!("{admin}/api/summary?since=1h")).await;
        assert_eq!(s.status, 200);
        (s.json()["totals"].clone(), s.json()["routes"].clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let mut seen = Vec::new();
        for (_, _, admin) in &fleet {
            seen.push(totals(admin.clone()).await);
        }
        let settled =
            seen.windows(2).all(|w| w[0] == w[1]) && seen[0] == totals(fleet[0].2.clone()).await;
        if settled || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    for (mut child, _, _) in fleet {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let mirrored = candidate.count() as u64;
    let second_legacy_calls = calls.load(Ordering::Relaxed) - 300;
    let report = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["report", "--db", &db, "--since", "1h", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let recorded = report["totals"]["exchanges"].as_u64().unwrap();
    let lost = mirrored - recorded.min(mirrored);
    assert!(recorded <= 300 && mirrored <= 300, "{report}");
    assert!(
        lost <= sent_to_killed_before,
        "lost {lost}: at most what the killed instance had taken ({sent_to_killed_before})"
    );
    assert!(recorded >= 300 - sent_to_killed_before, "{report}");
    // The shared counters agree with the rows, summed over the instances: presence of `/people`
    // once per compared exchange; one noise sample per second legacy call written, each finding
    // `/seq` noisy (a lost one only in the killed instance's unwritten tail).
    let compared = report["totals"]["compared"].as_u64().unwrap();
    let (presence, samples, noisy): (i64, i64, i64) = std::thread::spawn({
        let db = db.clone();
        move || {
            let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
            let one = |c: &mut postgres::Client, sql: &str| -> i64 {
                c.query_one(sql, &[]).unwrap().get(0)
            };
            (
                one(
                    &mut c,
                    "SELECT coalesce(sum(n), 0)::bigint FROM field_presence WHERE field = '/people'",
                ),
                one(&mut c, "SELECT coalesce(sum(samples), 0)::bigint FROM noise_samples"),
                one(
                    &mut c,
                    "SELECT coalesce(sum(differed), 0)::bigint FROM noise_fields WHERE field = '/seq'",
                ),
            )
        }
    })
    .join()
    .unwrap();
    assert_eq!(
        presence as u64, compared,
        "presence summed over instances = compared exchanges"
    );
    assert_eq!(samples, noisy, "every sample found /seq noisy");
    assert!(
        samples as u64 <= second_legacy_calls
            && samples as u64 + sent_to_killed_before >= second_legacy_calls,
        "noise samples {samples}, second legacy calls {second_legacy_calls}"
    );
    // The gate, run from each host (its own working directory and copy of the config), says
    // the same.
    let verdicts: Vec<(Option<i32>, String)> = (0..3)
        .map(|i| {
            let host = dir.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&host).unwrap();
            std::fs::copy(&config, host.join("shadowdiff.toml")).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
                .args([
                    "gate",
                    "--config",
                    "shadowdiff.toml",
                    "--db",
                    &db,
                    "--phase",
                    "shadow",
                    "--since",
                    "1h",
                    "--format",
                    "json",
                ])
                .current_dir(&host)
                .output()
                .unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
            if let Some(o) = v.as_object_mut() {
                o.remove("window");
            }
            (out.status.code(), v.to_string())
        })
        .collect();
    assert!(verdicts.windows(2).all(|w| w[0] == w[1]), "{verdicts:?}");
    eprintln!(
        "fleet: 300 sent, {mirrored} mirrored, {recorded} recorded, {lost} lost with the SIGKILL; \
         {samples} noise samples of {second_legacy_calls} second legacy calls; gate {:?}",
        verdicts[0].0
    );
}

/// TLS to PostgreSQL with rustls, as managed databases require: a server that refuses
/// unencrypted TCP and wants a password. `sslmode` decides what is checked (libpq's modes), the
/// CA comes from the URL's `sslrootcert` or `[store] ca_file`, the password from `PGPASSFILE`
/// or `PGPASSWORD`; no error message ever carries the password.
#[test]
fn postgres_over_tls_checks_what_sslmode_says_and_reads_libpq_passwords() {
    use std::os::unix::fs::PermissionsExt as _;
    let password = "tls-s3cret-pw";
    // The server's certificate names "localhost" only; another one nobody signed ours with.
    let ours = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let server = support::pg::Private::start_tls(
        &ours.cert.pem(),
        &ours.signing_key.serialize_pem(),
        password,
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, ours.cert.pem()).unwrap();
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("*:{}:*:postgres:{password}\n", server.port),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = postgres::Client::connect(&server.admin(), postgres::NoTls).unwrap();
    c.batch_execute("CREATE DATABASE tls").unwrap();

    let migrate = |host: &str, query: &str, env: &[(&str, &std::path::Path)]| {
        let url = format!("postgres://postgres@{host}:{}/tls?{query}", server.port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowdiff"));
        cmd.args(["migrate", "--db", &url])
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains(password), "{err}");
        (out.status.code(), err)
    };
    let ca_q = format!("sslrootcert={}", ca.display());
    let wrong_q = format!("sslrootcert={}", wrong_ca.display());
    let passfile: &[(&str, &std::path::Path)] = &[("PGPASSFILE", &pgpass)];
    // verify-full: the chain and the name.
    let (code, err) = migrate(
        "localhost",
        &format!("sslmode=verify-full&{ca_q}"),
        passfile,
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = migrate(
        "localhost",
        &format!("sslmode=verify-full&{wrong_q}"),
        passfile,
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("certificate"), "{err}");
    let (code, err) = migrate(
        "127.0.0.1",
        &format!("sslmode=verify-full&{ca_q}"),
        passfile,
    );
    assert_ne!(code, Some(0), "the certificate does not name 127.0.0.1");
    assert!(err.contains("certificate"), "{err}");
    // verify-ca: the chain only.
    let (code, err) = migrate("127.0.0.1", &format!("sslmode=verify-ca&{ca_q}"), passfile);
    assert_eq!(code, Some(0), "{err}");
    let (code, _) = migrate(
        "127.0.0.1",
        &format!("sslmode=verify-ca&{wrong_q}"),
        passfile,
    );
    assert_ne!(code, Some(0));
    // require: encrypted, nothing checked without a CA (as libpq).
    let (code, err) = migrate("127.0.0.1", "sslmode=require", passfile);
    assert_eq!(code, Some(0), "{err}");
    // disable: the server refuses unencrypted connections.
    let (code, err) = migrate("127.0.0.1", "sslmode=disable", passfile);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("no encryption") || err.contains("pg_hba"),
        "{err}"
    );
    // No password anywhere: the server says so.
    let (code, err) = migrate("localhost", &format!("sslmode=verify-full&{ca_q}"), &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("password"), "{err}");

    // serve with [store] url + ca_file and PGPASSWORD: its connection is encrypted.
    let cfg = dir.path().join("sd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n\
             [legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
             [store]\nurl = \"postgres://postgres@localhost:{}/tls?sslmode=verify-full\"\nca_file = \"ca.pem\"\n",
            server.port
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("PGPASSWORD", password)
        .env_remove("PGPASSFILE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let encrypted = loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'shadowdiff' AND s.ssl",
                &[],
            )
            .unwrap()
            .get(0);
        if n > 0 || std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(encrypted > 0, "no encrypted connection from serve: {err}");
    assert!(!err.contains(password), "{err}");
    // The readers take [store] ca_file along too, with the URL from the config or from --db.
    for extra in [
        vec![],
        vec![
            "--db".to_owned(),
            format!(
                "postgres://postgres@localhost:{}/tls?sslmode=verify-full",
                server.port
            ),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(["report", "--config"])
            .arg(&cfg)
            .args(["--since", "1h", "--format", "json"])
            .args(&extra)
            .env("PGPASSWORD", password)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "report {extra:?}: {err}");
    }
}

/// A fleet member restarted while PostgreSQL is down still serves (its callers never depend on
/// the store): `/readyz` says degraded from the start, and once the database is back the writer
/// applies the schema and writes what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_postgres_down_and_catches_up_when_it_is_back() {
    use serde_json::json;
    use support::{get, Shadowdiff, Upstream};
    let (server, db) = std::thread::spawn(|| {
        let mut s = support::pg::Private::start();
        let db = s.database();
        s.stop();
        (s, db)
    })
    .join()
    .unwrap();
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 2})).await;
    let sd = Shadowdiff::start(
        &legacy.url(),
        &candidate.url(),
        &format!("[store]\nurl = \"{db}\"\n"),
    )
    .await;
    let ready = get(&format!("http://{}/readyz", sd.admin.unwrap())).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "degraded", "{}", ready.json());
    for i in 0..5 {
        let got = get(&sd.url(&format!("/x?i={i}"))).await;
        assert_eq!((got.status, got.json()), (200, json!({"a": 1})));
    }
    let server = std::thread::spawn(move || {
        let mut s = server;
        s.resume();
        s
    })
    .join()
    .unwrap();
    sd.quiesce().await;
    let (summary, _dir) = sd.stop().await;
    let n = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
        c.query_one("SELECT count(*) FROM exchanges", &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    })
    .join()
    .unwrap();
    assert_eq!(n, 5, "{summary:?}");
    assert_eq!((summary.written, summary.lost, summary.dropped), (5, 0, 0));
    drop(server);
}

/// The hourly roll-ups answer every report query as the rows do, on both engines: the report
/// from roll-ups (whole hours) plus rows (the window's partial hours) equals the report from
/// rows alone, under each filter; the migration that adds them builds them for a store that had
/// rows before; latency percentiles from their histograms are within the stated 2.3 %.
#[test]
fn roll_ups_answer_every_report_query_as_the_rows_do_on_both_backends() {
    use shadowdiff::record::{Fallback, Outcome, ServedBy, SkipReason};
    use shadowdiff::store::{Filter, Location, Side, Store};
    let now = std::time::SystemTime::now();
    let min = std::time::Duration::from_secs(60);
    for (name, db, _keep) in backends() {
        let location = Location::parse(&db);
        let store = Store::open_at(&location, writes::opts()).unwrap();
        let h = store.handle();
        // 400 exchanges, one every 97 s: 10.8 hours, so whole hours and two partial ones.
        for i in 0..400usize {
            let mut r = writes::record(i, now - min * 97 * (i as u32) / 60);
            r.meta.route = [Some("people"), Some("teams"), None][i % 3].map(Into::into);
            r.meta.account =
                [Some("acme"), Some("globex"), None, Some("Ábc")][i % 4].map(Into::into);
            r.legacy_ms = Some(1.0 + (i * 7 % 300) as f64);
            r.candidate_ms = (i % 9 != 0).then(|| 2.0 + (i * 13 % 500) as f64);
            if i % 5 == 0 {
                r.mapping_version = Some(["v1", "v2"][i % 2].into());
            }
            if i % 7 == 0 {
                // The field as PostgreSQL stores the others (NUL as U+FFFD), in the same batches:
                // one key of a roll-up there, two on SQLite.
                let d: Vec<_> = r
                    .diffs
                    .iter()
                    .cloned()
                    .map(|mut d| {
                        d.field = d.field.replace('\0', "\u{FFFD}");
                        d
                    })
                    .collect();
                r.diffs = std::sync::Arc::new(d);
            }
            match i % 6 {
                0 => {
                    r.outcome = Outcome::Match;
                    r.diffs = Default::default();
                    r.diff_count = 0;
                }
                1 => {
                    r.outcome = Outcome::Skipped(SkipReason::QuotaReserve);
                    r.reason = Some("quota_reserve".into());
                    r.diffs = Default::default();
                    r.diff_count = 0;
                    r.candidate_ms = None;
                }
                2 => {
                    r.meta.serving.served_by = ServedBy::Candidate;
                    r.meta.serving.phase = Some("canary".into());
                }
                3 => {
                    r.meta.serving.fallback = Some(Fallback::Timeout);
                    r.outcome = Outcome::CandidateTimeout;
                }
                _ => {}
            }
            h.record(r);
        }
        // Noise learned at the records' field (both spellings of it): noise-only counts are then
        // not empty, from the rows and from the signatures alike.
        for route in [Some("people"), Some("teams"), None] {
            for _ in 0..3 {
                h.noise(shadowdiff::record::NoiseSample {
                    route: shadowdiff::record::RouteKey::from_route(route),
                    at: now - min * 600,
                    fields: vec![
                        "/people/*/na\tme\\\n\u{0}é".into(),
                        "/people/*/na\tme\\\n\u{FFFD}é".into(),
                    ],
                });
            }
        }
        h.flush_blocking();
        assert_eq!(store.close().written(), 400, "{name}");

        let reader = shadowdiff::store::open_reader_at(&location).unwrap();
        let window = Filter::since(std::time::Duration::from_secs(86_400));
        let mut filters = vec![window.clone()];
        for route in ["people", "teams"] {
            filters.push(Filter {
                route: Some(shadowdiff::record::RouteKey::from_route(Some(route))),
                ..window.clone()
            });
        }
        filters.push(Filter {
            route: Some(shadowdiff::record::RouteKey::from_route(None)),
            ..window.clone()
        });
        filters.push(Filter {
            account: Some("globex".into()),
            ..window.clone()
        });
        filters.push(Filter {
            mapping_version: Some("v2".into()),
            ..window.clone()
        });
        // Windows of whole hours, and of less than one.
        let hour = std::time::Duration::from_secs(3600);
        let t0 = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(
                now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600 * 3600,
            );
        filters.push(Filter {
            from: t0 - hour * 5,
            to: t0 - hour,
            ..window.clone()
        });
        filters.push(Filter {
            from: t0 - hour * 3 + min * 10,
            to: t0 - hour * 3 + min * 50,
            ..window.clone()
        });
        let answers = |reader: &dyn shadowdiff::store::Reader| -> Vec<String> {
            filters
                .iter()
                .map(|f| {
                    let report = shadowdiff::report::build(reader, f).unwrap();
                    let mut v = serde_json::to_value(&report).unwrap();
                    v.as_object_mut().unwrap().remove("generated_at");
                    v.to_string()
                })
                .collect()
        };
        let rolled = answers(&*reader);
        let noise_only = shadowdiff::report::build(&*reader, &window)
            .unwrap()
            .totals
            .noise_only;
        assert!(noise_only > 0, "{name}: no noise-only exchange to compare");
        // The histograms against the exact values of the whole window.
        for side in [Side::Legacy, Side::Candidate] {
            let hist = reader.latency_histogram(&window, side).unwrap().unwrap();
            let exact = reader.latencies(&window, side, 1).unwrap();
            for p in [0.5, 0.99] {
                let rank = ((p * exact.len() as f64).ceil() as usize).clamp(1, exact.len());
                let (want, got) = (exact[rank - 1], hist.percentile(p));
                assert!(
                    ((got - want) / want).abs() <= 0.023,
                    "{name}: p{p} {want} ms, histogram {got} ms"
                );
            }
            let named = Filter {
                account: Some("acme".into()),
                ..window.clone()
            };
            assert!(reader.latency_histogram(&named, side).unwrap().is_none());
        }
        drop(reader);

        // Whether the reader answers from roll-ups (a histogram for the window) or from rows.
        let rolled_up = |reader: &dyn shadowdiff::store::Reader| {
            reader
                .latency_histogram(&window, Side::Legacy)
                .unwrap()
                .is_some()
        };
        let reread = |expect_rolled: bool, what: &str| {
            let reader = shadowdiff::store::open_reader_at(&location).unwrap();
            assert_eq!(rolled_up(&*reader), expect_rolled, "{name}: {what}");
            answers(&*reader)
        };

        // Roll-ups marked stale: the same answers from the rows alone.
        execute(&db, "UPDATE rollup_state SET covered = 0");
        let rows = reread(false, "stale roll-ups are not read");
        for (i, (a, b)) in rolled.iter().zip(&rows).enumerate() {
            assert_eq!(a, b, "{name}: filter {i}: roll-ups and rows differ");
        }
        let migrate = || {
            let (code, out, err) = shadowdiff(&["migrate", "--db", &db]);
            assert_eq!(code, 0, "{name}: {err}");
            out
        };
        assert!(migrate().contains("roll-ups rebuilt"), "{name}");
        assert_eq!(
            reread(true, "rebuilt by migrate"),
            rows,
            "{name}: rebuilt roll-ups"
        );
        assert!(
            !migrate().contains("roll-ups rebuilt"),
            "{name}: nothing to rebuild"
        );

        // A row another program wrote, then a batch of the writer: the writer's batch must not
        // mark the other row as rolled up; `migrate` rebuilds, and the answers include it.
        execute(
            &db,
            if db.starts_with("postgres://") {
                "INSERT INTO exchanges(id, started_at, route, outcome, legacy_ms)
                 VALUES (nextval('exchange_ids'), now() - interval '90 minutes', 'people', 'match', 5)"
            } else {
                "INSERT INTO exchanges(started_at, route, outcome, legacy_ms)
                 VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 minutes'), 'people', 'match', 5)"
            },
        );
        let store = Store::open_at(&location, writes::opts()).unwrap();
        store.handle().record(writes::record(400, now - min * 2));
        store.handle().flush_blocking();
        assert_eq!(store.close().written(), 1, "{name}");
        let rows = reread(false, "a row the writer did not write stays uncovered");
        assert_ne!(rows, rolled, "{name}: the two new exchanges are counted");
        assert!(migrate().contains("roll-ups rebuilt"), "{name}");
        assert_eq!(
            reread(true, "rebuilt"),
            rows,
            "{name}: rebuilt with the other row"
        );

        // A store from before the roll-ups: the migration builds them from its rows.
        execute(
            &db,
            "DROP TABLE rollup_outcomes; DROP TABLE rollup_accounts; DROP TABLE rollup_fields;
             DROP TABLE rollup_latency; DROP TABLE rollup_state; DROP TABLE rollup_signatures;
             DROP TABLE rollup_unkept; DELETE FROM schema_version WHERE version >= 9",
        );
        if !db.starts_with("postgres://") {
            execute(&db, "PRAGMA user_version = 8");
        }
        assert_eq!(
            reread(true, "built by the migration"),
            rows,
            "{name}: roll-ups built by the migration"
        );
    }
}

/// `[store] exchanges = "sampled"`: the same exchanges written to a store keeping every row and
/// to one keeping a few per hour and kind answer every count alike (outcomes, fields, cohort,
/// spend, versions, noise-only and accepted-only), over whole hours and over windows that widen
/// to them; the sampled store keeps the first exchanges of each kind (each difference pattern
/// among them) and a few more, never one row per exchange.
#[test]
fn sampled_rows_keep_examples_and_every_count_on_both_backends() {
    use shadowdiff::diff::{Difference, Kind};
    use shadowdiff::record::{NoiseSample, Outcome, RouteKey, SkipReason};
    use shadowdiff::store::{Filter, GroupBy, Location, Reader, Rows, Store};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let t0 = UNIX_EPOCH
        + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap().as_secs() / 3600 * 3600);
    let diff = |field: &str| Difference {
        pointer: field.into(),
        field: field.into(),
        kind: Kind::Changed,
        legacy: Some(serde_json::json!(1)),
        candidate: Some(serde_json::json!(2)),
        candidate_pointer: None,
    };
    // 600 exchanges over the three hours before this one: matches, shed requests, timeouts,
    // differences at `/ts` (to be learned as noise), at `/ts` and `/b` (`/b` to be accepted),
    // and at `/c` (neither).
    let records = || {
        (0..600usize).map(move |i| {
            let at = t0 - hour * 3 + Duration::from_millis(i as u64 * 17_990);
            let mut r = writes::record(i + 1, at);
            r.meta.route = Some(["people", "teams"][i % 2].into());
            r.meta.account = Some(["acme", "globex", "initech"][i % 3].into());
            r.legacy_ms = Some(1.0 + (i * 7 % 300) as f64);
            r.mapping_version = Some(["v1", "v2"][i / 300].into());
            let diffs: Vec<Difference> = match i % 7 {
                0 | 1 => vec![],
                2 => vec![diff("/ts")],
                3 => vec![diff("/ts"), diff("/b")],
                4 => vec![diff("/c")],
                5 => {
                    r.outcome = Outcome::Skipped(SkipReason::Overload);
                    r.reason = Some("overload".into());
                    r.candidate_ms = None;
                    vec![]
                }
                _ => {
                    r.outcome = Outcome::CandidateTimeout;
                    vec![]
                }
            };
            if matches!(i % 7, 0..=4) {
                r.outcome = if diffs.is_empty() {
                    Outcome::Match
                } else {
                    Outcome::Diff
                };
            }
            r.diff_count = diffs.len();
            r.diffs = std::sync::Arc::new(diffs);
            r
        })
    };
    for (name, _, _keep) in backends() {
        let stores: Vec<(Rows, String, Option<tempfile::TempDir>)> = [Rows::All, Rows::Sampled]
            .into_iter()
            .map(|rows| {
                let (_, db, keep) = backends().into_iter().find(|(n, _, _)| *n == name).unwrap();
                (rows, db, keep)
            })
            .collect();
        let mut readers: Vec<Box<dyn Reader>> = Vec::new();
        for (rows, db, _) in &stores {
            let location = Location::parse(db);
            let store = Store::open_at(
                &location,
                shadowdiff::store::WriterOptions {
                    exchanges: *rows,
                    rows_per_hour: 3,
                    ..writes::opts()
                },
            )
            .unwrap();
            let h = store.handle();
            for r in records() {
                h.record(r);
            }
            for k in 0..3 {
                for route in ["people", "teams"] {
                    h.noise(NoiseSample {
                        route: RouteKey::from_route(Some(route)),
                        at: t0 - hour * 3 + Duration::from_secs(k),
                        fields: vec!["/ts".into()],
                    });
                }
            }
            h.flush_blocking();
            assert_eq!(store.close().written(), 600, "{name}");
            let mark = shadowdiff::triage::Mark::new(
                shadowdiff::triage::Pattern::new("people", "/b", None).unwrap(),
                shadowdiff::triage::Status::Accepted,
                "the candidate adds it",
                None,
                "test",
                shadowdiff::record::rfc3339(now),
                None,
            )
            .unwrap();
            shadowdiff::store::record_triage(&location, &shadowdiff::triage::Change::Mark(mark))
                .unwrap();
            readers.push(shadowdiff::store::open_reader_at(&location).unwrap());
        }
        let (all, sampled) = (&*readers[0], &*readers[1]);

        // Rows: every exchange in one store; in the other, per hour and kind the first 3 and the
        // 4th, 8th, 16th, ... (each hour has ~100 exchanges of a route: at most 3 + 5 per kind).
        let rows = |db: &str| -> i64 {
            if db.starts_with("postgres://") {
                let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
                c.query_one("SELECT count(*) FROM exchanges", &[])
                    .unwrap()
                    .get(0)
            } else {
                rusqlite::Connection::open(db)
                    .unwrap()
                    .query_row("SELECT count(*) FROM exchanges", [], |r| r.get(0))
                    .unwrap()
            }
        };
        assert_eq!(rows(&stores[0].1), 600, "{name}");
        let kept = rows(&stores[1].1);
        // 3 hours x 2 routes x kinds (match, overload, timeout, /ts, /b, /c) x 8, with the
        // one exchange whose bodies were kept.
        assert!(kept <= 3 * 2 * 6 * 8 + 1, "{name}: {kept} rows kept");
        assert!(kept >= 3 * 2 * 6 * 3, "{name}: {kept} rows kept");
        // Every difference pattern has examples.
        let f = Filter::since(Duration::from_secs(86_400));
        let fields = |r: &dyn Reader| -> Vec<(String, String, u64, u64)> {
            r.fields(&f)
                .unwrap()
                .into_iter()
                .map(|x| (x.field, x.kind, x.count, x.exchanges))
                .collect()
        };
        assert_eq!(fields(all), fields(sampled), "{name}");
        for x in sampled.fields(&f).unwrap() {
            assert!(
                sampled
                    .example(x.example_id, &x.field, &x.kind)
                    .unwrap()
                    .is_some(),
                "{name}: {} has no example",
                x.field
            );
        }

        // The same answers over whole hours, a window widened at both edges, and one within an
        // hour; the report says when it widened.
        let window = |from: SystemTime, to: SystemTime| Filter {
            from,
            to,
            ..f.clone()
        };
        let cases = [
            (window(t0 - hour * 3, t0), window(t0 - hour * 3, t0)),
            (
                window(t0 - hour * 3 + hour / 4, t0 - hour + hour / 2),
                window(t0 - hour * 3, t0),
            ),
            (
                window(t0 - hour * 2 + hour / 6, t0 - hour * 2 + hour / 2),
                window(t0 - hour * 2, t0 - hour),
            ),
            // Across an hour's start, without a whole hour: both edges widen.
            (
                window(t0 - hour * 2 - hour / 6, t0 - hour * 2 + hour / 6),
                window(t0 - hour * 3, t0 - hour),
            ),
            // The same where the first hour has no exchange (nothing to widen there): only the
            // end widens.
            (
                window(t0 - hour * 3 - hour / 6, t0 - hour * 3 + hour / 6),
                window(t0 - hour * 3 - hour / 6, t0 - hour * 2),
            ),
        ];
        for (i, (asked, covered)) in cases.iter().enumerate() {
            let w = sampled.exact_window(asked).unwrap();
            assert_eq!(
                (w.from, w.to),
                (covered.from, covered.to),
                "{name}: case {i}"
            );
            let report = shadowdiff::report::build(sampled, asked).unwrap();
            assert_eq!(report.window.widened, i > 0, "{name}: case {i}");
            // The trend counts every compared exchange too (buckets of an hour at least).
            for rt in &report.routes {
                let trend: u64 = rt.trend.iter().map(|d| d.compared).sum();
                assert_eq!(trend, rt.counts.compared, "{name}: case {i}: {}", rt.route);
            }
            let answers = |r: &dyn Reader, f: &Filter| -> String {
                let mut out = Vec::new();
                for by in [GroupBy::Route, GroupBy::Account] {
                    let mut c: Vec<_> = r
                        .outcome_counts(by, f)
                        .unwrap()
                        .into_iter()
                        .map(|c| (c.key, c.outcome, c.n))
                        .collect();
                    c.sort();
                    out.push(format!("{c:?}"));
                }
                let mut noise: Vec<_> = r
                    .noise_only(f, 2)
                    .unwrap()
                    .into_iter()
                    .map(|x| (x.route, x.account, x.n))
                    .collect();
                noise.sort();
                let mut accepted: Vec<_> = r
                    .accepted_only(f, 2, now)
                    .unwrap()
                    .into_iter()
                    .map(|x| (x.route, x.account, x.n))
                    .collect();
                accepted.sort();
                let mut cohort: Vec<_> = r
                    .cohort_counts(f)
                    .unwrap()
                    .into_iter()
                    .map(|c| format!("{c:?}"))
                    .collect();
                cohort.sort();
                let versions: Vec<_> = r
                    .mapping_versions(f)
                    .unwrap()
                    .into_iter()
                    .map(|v| (v.version, v.compared, v.matched))
                    .collect();
                format!(
                    "{out:?}\n{noise:?}\n{accepted:?}\n{cohort:?}\n{:?}\n{versions:?}",
                    r.shadow_spend(f).unwrap()
                )
            };
            let want = answers(all, covered);
            assert!(want.contains("acme"), "{name}: case {i}: {want}");
            assert_eq!(answers(sampled, asked), want, "{name}: case {i}");
            // Latency percentiles: from the histograms over the sampled rows (within their 2.3 %
            // of the exact ones), never from the sample, whose rare kinds are over-represented.
            let n = 600;
            let exact = shadowdiff::report::latency(all, covered, n).unwrap();
            let got = shadowdiff::report::latency(sampled, asked, n).unwrap();
            for (e, g) in [
                (exact.legacy_p50, got.legacy_p50),
                (exact.legacy_p99, got.legacy_p99),
            ] {
                assert!((g - e).abs() / e <= 0.023, "{name}: case {i}: {e} vs {g}");
            }
            // Noise-only and accepted-only are not empty: the comparison above means something.
            let noise = all.noise_only(covered, 2).unwrap();
            let accepted = all.accepted_only(covered, 2, now).unwrap();
            assert!(
                !noise.is_empty() && !accepted.is_empty(),
                "{name}: case {i}"
            );
            assert!(
                accepted
                    .iter()
                    .all(|x| x.route == RouteKey::from_route(Some("people"))),
                "{name}: case {i}"
            );
        }
        // Under an account filter the sections read from rows say they come from a sample.
        let acme = Filter {
            account: Some("acme".into()),
            ..window(t0 - hour * 3, t0)
        };
        for (r, sampled_rows) in [(all, false), (sampled, true)] {
            let report = shadowdiff::report::build(r, &acme).unwrap();
            assert_eq!(report.filtered_from_kept_rows, sampled_rows, "{name}");
            let text = shadowdiff::report::render::markdown(&report);
            assert_eq!(
                text.contains("come from the kept rows"),
                sampled_rows,
                "{name}"
            );
        }
        // A window with no partial hour of unkept exchanges is not widened (this hour has none).
        let recent = window(t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let w = sampled.exact_window(&recent).unwrap();
        assert_eq!((w.from, w.to), (recent.from, recent.to), "{name}");
        drop(readers);

        // A row another program wrote: the sampled store's roll-ups cannot be rebuilt from its
        // rows (they count exchanges without one), and `migrate` says so instead of losing them.
        // It starts when the last kept one did: inside the window below, and in a day whose
        // partition exists (`now()` fails in the first hour of a UTC day: the exchanges are in
        // the three hours before this one, yesterday's partition).
        let db = &stores[1].1;
        execute(
            db,
            if db.starts_with("postgres://") {
                "INSERT INTO exchanges(id, started_at, route, outcome, legacy_ms)
                 SELECT nextval('exchange_ids'), max(started_at), 'people', 'match', 5
                 FROM exchanges"
            } else {
                "INSERT INTO exchanges(started_at, route, outcome, legacy_ms)
                 SELECT max(started_at), 'people', 'match', 5 FROM exchanges"
            },
        );
        let (code, out, err) = shadowdiff(&["migrate", "--db", db]);
        assert_eq!(code, 1, "{name}: {out} {err}");
        assert!(out.contains("cannot be rebuilt"), "{name}: {out}");
        // Reports still count from the roll-ups (every exchange the writer took), not from the
        // kept rows as if they were everything; only the other program's row is left out.
        let reader = shadowdiff::store::open_reader_at(&Location::parse(db)).unwrap();
        let counts = reader.outcome_counts(GroupBy::Route, &window(t0 - hour * 3, t0));
        assert_eq!(
            counts.unwrap().iter().map(|c| c.n).sum::<u64>(),
            600,
            "{name}: the roll-ups are read"
        );
    }
}

/// A writer that falls behind (a queue of one) drops rows, not counts: what did not fit in the
/// queue is added to the roll-ups with the next batch, so the report counts every exchange
/// (outcomes, fields, noise-only signatures) on both engines.
#[test]
fn a_full_queue_drops_rows_not_counts_on_both_backends() {
    use shadowdiff::record::{Outcome, SkipReason};
    use shadowdiff::store::{Filter, GroupBy, Location, Store, WriterOptions};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let t0 = UNIX_EPOCH + Duration::from_secs(secs / 3600 * 3600);
    for (name, db, _keep) in backends() {
        let location = Location::parse(&db);
        let store = Store::open_at(
            &location,
            WriterOptions {
                queue: 1,
                ..writes::opts()
            },
        )
        .unwrap();
        let h = store.handle();
        const N: usize = 3000;
        for i in 0..N {
            let mut r = writes::record(
                i + 1,
                t0 - Duration::from_secs(7200) + Duration::from_secs(i as u64),
            );
            if i % 3 == 0 {
                r.outcome = Outcome::Skipped(SkipReason::Overload);
                r.reason = Some("overload".into());
                r.diffs = Default::default();
                r.diff_count = 0;
            }
            h.record(r);
        }
        h.flush_blocking();
        let stats = store.close();
        assert!(stats.dropped() > 0, "{name}: the queue of one never filled");
        assert_eq!(stats.counted(), stats.dropped(), "{name}");
        assert_eq!(stats.written() + stats.dropped(), N as u64, "{name}");
        let reader = shadowdiff::store::open_reader_at(&location).unwrap();
        let f = Filter {
            from: t0 - Duration::from_secs(7200),
            to: t0,
            route: None,
            account: None,
            mapping_version: None,
        };
        let mut by_outcome = std::collections::BTreeMap::new();
        for c in reader.outcome_counts(GroupBy::Route, &f).unwrap() {
            *by_outcome.entry(c.outcome).or_insert(0u64) += c.n;
        }
        assert_eq!(
            by_outcome.get("skipped"),
            Some(&1000),
            "{name}: {by_outcome:?}"
        );
        assert_eq!(
            by_outcome.get("diff"),
            Some(&2000),
            "{name}: {by_outcome:?}"
        );
        let fields = reader.fields(&f).unwrap();
        assert_eq!(fields.len(), 1, "{name}");
        assert_eq!(
            (fields[0].count, fields[0].exchanges),
            (10_000, 2000),
            "{name}"
        );
    }
}

/// Runs statements on either engine's store.
fn execute(db: &str, sql: &str) {
    if db.starts_with("postgres://") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        c.batch_execute(sql).unwrap();
    } else {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
}

/// A rollout event keeps the time it happened, not its millisecond text: a window starting a
/// microsecond after that text (within the same millisecond) still holds the event, on both
/// engines alike. (Three events: one whose own sub-millisecond part is under a microsecond is
/// rare, three are not a test that flakes.)
#[test]
fn a_rollout_event_keeps_its_time_within_the_millisecond_on_both_backends() {
    use shadowdiff::store::{Location, RolloutChange, RolloutStore};
    for (name, db, _dir) in backends() {
        let location = Location::parse(&db);
        let mut store = RolloutStore::new(&location);
        let mut found = 0;
        for to in ["canary", "ramp", "ga"] {
            let e = store
                .append(
                    None,
                    &RolloutChange {
                        to: to.into(),
                        actor: "test".into(),
                        reason: None,
                        evidence: None,
                    },
                )
                .unwrap();
            let text = e.at.trim_end_matches('Z').to_owned() + "001Z";
            let from = humantime::parse_rfc3339(&text).unwrap();
            let reader = shadowdiff::store::open_reader_at(&location).unwrap();
            let events = reader
                .rollout_events(from, from + std::time::Duration::from_secs(60), 10)
                .unwrap();
            found += events.iter().filter(|x| x.id == e.id).count();
        }
        assert!(
            found > 0,
            "{name}: every event fell before its own millisecond's text"
        );
    }
}
