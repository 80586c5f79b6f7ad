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
fn commands_that_do_not_serve_postgres_yet_refuse_its_url_instead_of_creating_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://app:hunter2@127.0.0.1:1/shadow";
    for args in [
        vec!["report", "--db", url],
        vec!["diff", "--exchange", "1", "--db", url],
        vec!["prune", "--db", url],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "",
            "--legacy",
            "http://127.0.0.1:1",
            "--candidate",
            "http://127.0.0.1:1",
            "--db",
            url,
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("postgres://app:***@127.0.0.1:1/shadow")
                && err.contains("shadowdiff migrate"),
            "{args:?}: {err}"
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
    assert!(err.contains("[store] path: postgres://app:***@"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing but the config was created"
    );
}
