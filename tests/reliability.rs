//! Reliability: what a hostile probe found (issue "Hardening"), each as a test against the real
//! `shadowdiff` binary with fake upstreams on 127.0.0.1, plus a soak run and a SIGKILL under load.
//!
//! Every wait here is a bounded poll on a condition; nothing sleeps to wait for something it
//! could check. Timings are never asserted: only what happened.
//!
//! `SHADOWDIFF_SOAK_SECS` sets the soak run's length (default 3 s; BENCHMARKS.md records a
//! 10-minute run: `SHADOWDIFF_SOAK_SECS=600 cargo test --release --test reliability soak -- --nocapture`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::process::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------------------- helpers

/// Writes `files` into a fresh folder and runs the binary there with `args` to its end.
fn run_in(files: &[(&str, &str)], args: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    (dir, out)
}

/// A GET with a time limit; `None` when it did not complete in time or failed.
async fn get_within(url: &str, limit: Duration) -> Option<Got> {
    let url = url.to_owned();
    let task = tokio::spawn(async move { get(&url).await });
    tokio::time::timeout(limit, task).await.ok()?.ok()
}

/// [`raw_exchange`] off the async runtime.
async fn raw(addr: SocketAddr, request: &'static [u8], limit: Duration) -> (Vec<u8>, bool) {
    tokio::task::spawn_blocking(move || raw_exchange(addr, request, limit))
        .await
        .unwrap()
}

/// Sends raw bytes and reads until the server closes (or `limit` passes): `(bytes, closed)`.
fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    read_until_closed(&mut s, limit)
}

fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
}

/// A legacy upstream that answers every request with `bytes`, then holds the connection open
/// without another byte (`hold`) or closes it.
async fn raw_upstream(bytes: &'static [u8], hold: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut got = Vec::new();
                while !contains(&got, b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(bytes).await;
                let _ = s.flush().await;
                if hold {
                    // Held until the peer goes away.
                    let _ = s.read(&mut buf).await;
                } else {
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

// ------------------------------------------------------- 1. retention keeps personal data

#[test]
fn prune_removes_the_bodies_and_presence_of_what_it_deletes() {
    use shadowdiff::record::*;
    use shadowdiff::store::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let store = Store::open(
        &db,
        WriterOptions {
            queue: 64,
            priority: shadowdiff::background::Priority::Normal,
            retention: Duration::from_secs(365 * 86400),
            max_value_len: 1024,
            examples_per_field: 3,
            exchanges: shadowdiff::store::Rows::All,
            rows_per_hour: 100,
            migrate: true,
            reauth_after: 3,
            id_max_pairs: Vec::new(),
            webhooks: Vec::new(),
        },
    )
    .unwrap();
    let h = store.handle();
    let old = SystemTime::now() - Duration::from_secs(3 * 86400);
    for i in 0..20 {
        let body = |side: &'static str| StoredBody {
            side,
            status: Some(200),
            headers: json!({}),
            body: Some(BodyText::new(
                json!({"ssn": format!("123-45-{i:04}"), "side": side}).to_string(),
            )),
        };
        h.record(Record {
            meta: Meta {
                started_at: old,
                request_id: format!("r{i}"),
                route: Some("r".into()),
                method: "GET".into(),
                path: "/p".into(),
                account: None,
                serving: Default::default(),
            },
            legacy_status: Some(200),
            candidate_status: Some(200),
            legacy_ms: Some(1.0),
            candidate_ms: Some(1.0),
            outcome: Outcome::Diff,
            reason: None,
            diff_count: 0,
            diffs: Arc::default(),
            present: Arc::new(vec!["/ssn".into()]),
            bodies: vec![body("legacy"), body("candidate")],
            mapping_version: None,
            field_counts: None,
            ids: None,
        });
    }
    drop(h);
    store.close();
    let count = |t: &str| query(&db, &format!("SELECT count(*) FROM {t}"))[0][0].clone();
    assert_eq!(count("blobs"), json!(40));
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["prune", "--older-than", "1d", "--db"])
        .arg(&db)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for t in [
        "exchanges",
        "diffs",
        "bodies",
        "blobs",
        "field_presence",
        "diff_fields",
    ] {
        assert_eq!(count(t), json!(0), "{t} still has rows after prune");
    }
    // Not even in free pages or the WAL: deleted content is zeroed (secure_delete) and the
    // WAL truncated after a prune.
    assert!(
        !contains(&db_bytes(&db), b"123-45-00"),
        "pruned values left in the file"
    );
}

// --------------------------------------------------- 2. a store that cannot be written

#[test]
fn serve_refuses_a_store_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ro.db");
    // A store that exists, in WAL mode, with its -wal and -shm files: opening it needs no write.
    let conn = shadowdiff::store::open(&db).unwrap();
    std::fs::write(
        dir.path().join("sd.toml"),
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n\
         [legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
         [store]\npath = \"ro.db\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Root writes to any file: run as nobody then, for whom the file is read-only.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_shadowdiff")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
    };
    let mut child = cmd
        .args(["serve", "--config", "sd.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(20));
    drop(conn);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cannot be written") || err.contains("readonly"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_to_write_makes_readyz_fail_and_counts_every_lost_exchange() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 2})).await;
    let cfg = Conf::new(&legacy.url(), &candidate.url());
    let mut p = start(cfg, None).await;
    assert_eq!(get(&p.url("/x")).await.status, 200);
    let db = p.db();
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows.len(), 1);
    assert_eq!(get(&p.admin_url("/readyz")).await.status, 200);

    // Another process takes the write lock and keeps it past the writer's busy timeout.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..3 {
        assert_eq!(get(&p.url("/x")).await.status, 200);
    }
    let url = p.admin_url("/readyz");
    let failing = poll_async(Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let g = get(&url).await;
            (g.status == 503).then_some(g)
        }
    })
    .await
    .expect("/readyz says the store is failing");
    assert_eq!(failing.json()["status"], "store_failing");
    // Readiness fails with the first lost write; the other two may still be waiting on the
    // lock: every one of them is counted once its write failed.
    let metrics_url = p.admin_url("/metrics");
    let m = poll_async(Duration::from_secs(30), || {
        let url = metrics_url.clone();
        async move {
            let m = String::from_utf8(get(&url).await.body.to_vec()).unwrap();
            (metric(&m, "shadowdiff_store_lost_total") >= 3.0).then_some(m)
        }
    })
    .await
    .expect("every lost exchange counted");
    assert_eq!(metric(&m, "shadowdiff_store_lost_total"), 3.0, "{m}");
    // The lock goes away: the next write succeeds and readiness comes back.
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(get(&p.url("/x")).await.status, 200);
    let back = poll_async(Duration::from_secs(30), || {
        let url = url.clone();
        async move { (get(&url).await.status == 200).then_some(()) }
    })
    .await;
    assert!(back.is_some(), "/readyz recovers");
    let code = tokio::task::block_in_place(|| p.stop());
    let log = p.log();
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("3 lost (store write failed)"), "{log}");
}

// ------------------------------------------------ 3. a panic on candidate-controlled input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_datetime_from_the_candidate_is_compared_not_lost() {
    let legacy = Upstream::json(json!({"t": "2026-01-01T12:00:00Z", "d": "2026-03-03"})).await;
    let candidate = Upstream::json(json!({"t": "2026-01-01T12:0é", "d": "2026-02-31"})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest =
        "[diff]\nnormalize = [{ fields = [\"/t\", \"/d\"], with = [\"datetime\"] }]\n".into();
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/x")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], json!("diff"), "{rows:?}");
    let fields = query(&p.db(), "SELECT pointer FROM diffs ORDER BY pointer");
    // `2026-02-31` is not March 3rd: both fields differ.
    assert_eq!(fields, vec![vec![json!("/d")], vec![json!("/t")]]);
}

#[test]
fn offline_diff_of_a_multibyte_datetime_exits_1_not_101() {
    let rules = "[diff]\nnormalize = [{ fields = [\"/t\"], with = [\"datetime\"] }]\n";
    for (l, c) in [
        (
            r#"{"t": "2026-01-01T12:00:00Z"}"#,
            r#"{"t": "2026-01-01T12:0é"}"#,
        ),
        (r#"{"t": "2026-03-03"}"#, r#"{"t": "2026-02-31"}"#),
    ] {
        let files = [("sd.toml", rules), ("l.json", l), ("c.json", c)];
        let (_dir, out) = run_in(&files, &["diff", "l.json", "c.json", "--config", "sd.toml"]);
        assert_eq!(out.status.code(), Some(1), "{l} {c}: {out:?}");
    }
}

// --------------------------------------------- 4. idle and slow connections (slowloris)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_silent_connections_are_closed() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.proxy = "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n".into();
    let p = start(cfg, None).await;
    let proxy = p.proxy;
    tokio::task::spawn_blocking(move || {
        let limit = Duration::from_secs(15);
        // Slowloris: a request head that never ends, a byte at a time.
        let mut slow: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(proxy).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ").unwrap();
                s
            })
            .collect();
        // Silent: connected, never a byte (the protocol is not even known).
        let mut silent: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(proxy).unwrap())
            .collect();
        // Kept alive after one complete request.
        let mut kept = TcpStream::connect(proxy).unwrap();
        kept.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // HTTP/2 (prior knowledge): the preface and SETTINGS, then nothing.
        let mut h2 = TcpStream::connect(proxy).unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        for s in slow.iter_mut().take(5) {
            let _ = s.write_all(b"a");
        }
        for (name, s) in slow
            .iter_mut()
            .map(|s| ("slow", s))
            .chain(silent.iter_mut().map(|s| ("silent", s)))
            .chain([("kept", &mut kept), ("h2", &mut h2)])
        {
            let (_, closed) = read_until_closed(s, limit);
            assert!(closed, "a {name} connection was not closed");
        }
    })
    .await
    .unwrap();
    // The service itself is fine.
    assert_eq!(get(&p.url("/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_file_limit_do_not_take_the_admin_listener_down() {
    const IDLE: usize = 1100;
    let _ = rlimit::increase_nofile_limit(8192);
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.proxy = "header_read_timeout = \"500ms\"\n".into();
    let p = start(cfg, Some(1024)).await;
    let proxy = p.proxy;
    let idle = tokio::task::spawn_blocking(move || {
        (0..IDLE)
            .filter_map(|_| TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).ok())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(idle.len() >= 1000, "{} connected", idle.len());
    let health = get_within(&p.admin_url("/healthz"), Duration::from_secs(10)).await;
    assert_eq!(health.map(|g| g.status), Some(200), "{}", p.log());
    // Idle callers are closed by the header timeout; the proxy then serves again.
    let got = get_within(&p.url("/served"), Duration::from_secs(60)).await;
    assert_eq!(got.map(|g| g.status), Some(200), "{}", p.log());
    let m = String::from_utf8(get(&p.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metric(&m, "shadowdiff_connection_limit_reached_total") >= 1.0,
        "{m}"
    );
    assert!(!p.log().contains("accept failed"), "{}", p.log());
    drop(idle);
}

// ---------------------------------------------------- 5. legacy stalls mid-body

/// A legacy that sends its head and 5 of 100 bytes, then nothing, behind a 1 s body timeout; the
/// candidate (kept alive by the caller) answers at once.
async fn stalling_legacy() -> (Conf, Upstream) {
    let legacy = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
        true,
    )
    .await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&format!("http://{legacy}"), &candidate.url());
    cfg.legacy_extra = "body_timeout = \"1s\"\n".into();
    (cfg, candidate)
}

/// The first "legacy body stalled" warning the proxy logs (waited for).
fn stall_warning(p: &Proc) -> String {
    tokio::task::block_in_place(|| {
        poll(Duration::from_secs(20), || {
            p.log()
                .lines()
                .find(|l| l.contains("legacy body stalled"))
                .map(str::to_owned)
        })
    })
    .unwrap_or_else(|| panic!("no stall warning: {}", p.log()))
}

/// A rollout in `phase` whose route `s` (`/s`) serves callers of no known account.
fn serving_s_in(phase: &str) -> String {
    format!("[rollout]\nphase = \"{phase}\"\n\n[[routes]]\nname = \"s\"\npath = \"/s\"\nunknown_account = \"candidate\"\n")
}

/// Sends `request` to the proxy and checks what the caller of a stalled body gets: legacy's head
/// and its bytes so far, then the connection closed.
async fn call_cut(p: &Proc, request: &'static [u8]) {
    let (bytes, closed) = raw(p.proxy, request, Duration::from_secs(20)).await;
    assert!(closed, "the caller is released");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("{\"a\":"),
        "legacy's bytes so far, unchanged: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_body_that_stalls_is_cut_after_the_body_timeout() {
    let (cfg, _candidate) = stalling_legacy().await;
    let p = start(cfg, None).await;
    call_cut(
        &p,
        b"GET /s HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-stall-1\r\n\r\n",
    )
    .await;
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], json!("legacy_error"));
    assert!(rows[0][1].as_str().unwrap().contains("stalled"), "{rows:?}");
    // The warning names the exchange (it is logged while the server streams the body, outside
    // the exchange: before, it named none).
    let line = stall_warning(&p);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(r#"request_id="rid-stall-1""#), "{line}");
}

/// A verified served exchange reads legacy's body before answering, then gives what it read and
/// the rest to the server: a stall is warned about once, and the caller gets legacy's head and
/// bytes so far before the connection closes, as on the plain path (before: a second warning,
/// and the error came back before the head was flushed: the caller got no bytes at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_a_verified_served_exchange_is_warned_about_once() {
    let (mut cfg, _candidate) = stalling_legacy().await;
    cfg.rest = serving_s_in("canary");
    let mut p = start(cfg, None).await;
    call_cut(
        &p,
        b"GET /s HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-stall-2\r\n\r\n",
    )
    .await;
    tokio::task::block_in_place(|| {
        p.wait_rows(1);
        assert_eq!(p.stop(), 0);
        // Everything the process wrote has been read once its last line is.
        poll(Duration::from_secs(20), || {
            p.log().contains("stopped").then_some(())
        })
        .unwrap_or_else(|| panic!("{}", p.log()));
    });
    let log = p.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("legacy body stalled"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains(r#"request_id="rid-stall-2""#), "{log}");
}

/// In `ga` the candidate answers the caller and legacy's body is read only for the comparison: a
/// stall there is warned about as such, not as closing the caller's response (which got the
/// candidate's whole answer; before, the warning said it was being closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_a_body_only_the_comparison_reads_says_so() {
    let (mut cfg, _candidate) = stalling_legacy().await;
    cfg.rest = serving_s_in("ga");
    let p = start(cfg, None).await;
    let (bytes, _) = raw(
        p.proxy,
        b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: rid-stall-3\r\n\r\n",
        Duration::from_secs(20),
    )
    .await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("{\"a\":1}"),
        "the candidate's answer: {text}"
    );
    let line = stall_warning(&p);
    assert!(line.contains(r#"request_id="rid-stall-3""#), "{line}");
    assert!(line.contains("no caller reads this body"), "{line}");
    assert!(!line.contains("closing the caller's response"), "{line}");
}

/// A caller's `X-Request-Id` is kept only as printable ASCII: a tab (which HTTP allows in a
/// header value) gets a generated id instead (before, it was kept and stored as sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_with_a_tab_is_replaced() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.store = "exchanges = \"all\"\n".into();
    let p = start(cfg, None).await;
    for request in [
        &b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: kept one\r\n\r\n"[..],
        b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: tab\there\r\n\r\n",
    ] {
        let (bytes, _) = raw(p.proxy, request, Duration::from_secs(20)).await;
        assert!(bytes.starts_with(b"HTTP/1.1 200"), "{bytes:?}");
    }
    tokio::task::block_in_place(|| p.wait_rows(2));
    let ids = query(
        &p.db(),
        "SELECT path, request_id FROM exchanges ORDER BY path",
    );
    assert_eq!(ids[0], vec![json!("/a"), json!("kept one")], "{ids:?}");
    let b = ids[1][1].as_str().unwrap();
    assert!(!b.contains('\t') && !b.is_empty(), "{ids:?}");
}

// ------------------------------------------------ 6. non-JSON bodies skip redaction

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_bodies_never_reach_the_store_or_the_api() {
    let legacy = Upstream::start(|_| {
        Reply::bytes(200, "name=Ann ssn=123-45-6789 token=s3cr3t-value\n")
            .header("content-type", "text/plain")
    })
    .await;
    let candidate = Upstream::start(|_| {
        Reply::bytes(200, "name=Ann ssn=987-65-4321 token=0th3r-s3cr3t\n")
            .header("content-type", "text/plain")
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.store = "bodies = \"always\"\n".into();
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/t")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], json!("diff"));
    let id = query(&p.db(), "SELECT id FROM exchanges")[0][0].clone();
    let api = get(&p.admin_url(&format!("/api/exchanges/{id}"))).await;
    assert_eq!(api.status, 200);
    let all = [db_bytes(&p.db()), api.body.to_vec()].concat();
    for secret in ["123-45-6789", "s3cr3t", "987-65-4321"] {
        assert!(!contains(&all, secret.as_bytes()), "{secret} was stored");
    }
    assert!(contains(&api.body, b"non-JSON body: 44 bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_error_does_not_store_the_value_it_quotes() {
    let legacy = Upstream::json(json!({"a": {"b": 1}})).await;
    let candidate = Upstream::json(json!({"a": "SSN 123-45-6789"})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.rest = "[[routes]]\nname = \"r\"\npath = \"/r\"\n[routes.candidate]\nmapping_expr = '{\"a\": {\"b\": .a.b}}'\nmapping_lang = \"jq\"\n".into();
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/r")).await.status, 200);
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], json!("mapping_error"), "{rows:?}");
    let reason = rows[0][1].as_str().unwrap();
    assert!(reason.contains("cannot index"), "{reason}");
    assert!(!contains(&db_bytes(&p.db()), b"123-45-6789"), "{reason}");
}

// ------------------------------------------- 7. what the candidate (and legacy) must not get

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_query_credentials_and_absolute_form_do_not_escape() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(
        &format!("{}/legacy-prefix", legacy.url()),
        &format!("{}/v2", candidate.url()),
    );
    cfg.rest = "[accounts]\nkey = \"query:api_key\"\nfile = \"accounts.csv\"\n\
                [[routes]]\nname = \"emp\"\npath = \"/v1/employees\"\n"
        .into();
    cfg.files.push((
        "accounts.csv",
        format!(
            "key_sha256,name\n{},acme\n",
            shadowdiff::translate::key_sha256_hex(b"LEGACYKEY")
        ),
    ));
    let p = start(cfg, None).await;
    for path in [
        "/../admin/users",
        "/v1/%2e%2e/%2E%2E/admin/users",
        "/v1/..%2F..%2Fadmin",
    ] {
        assert_eq!(get(&p.url(path)).await.status, 200, "{path}");
    }
    // Dot-segments that stay inside the tree are removed, then routed.
    assert_eq!(
        get(&p.url("/v1/x/../employees?api_key=LEGACYKEY&page=2"))
            .await
            .status,
        200
    );
    // Unmatched, with the credential in the query.
    assert_eq!(
        get(&p.url("/other?api_key=LEGACYKEY&x=1")).await.status,
        200
    );
    let rows = tokio::task::block_in_place(|| p.wait_rows(5));
    let reasons: Vec<_> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(
        reasons[..3],
        vec![(json!("skipped"), json!("unsafe_path")); 3][..],
        "{rows:?}"
    );
    let mut c: Vec<String> = candidate.seen().into_iter().map(|s| s.uri).collect();
    c.sort();
    // `page` is on the default forward_query list; `x` and the credential are not.
    assert_eq!(c, vec!["/v2/other", "/v2/v1/employees?page=2"], "{c:?}");
    let l: Vec<String> = legacy.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        l.iter().all(|u| u.starts_with("/legacy-prefix/")),
        "legacy stays under its prefix: {l:?}"
    );
    assert_eq!(l[0], "/legacy-prefix/admin/users");

    // Absolute form: refused, sent nowhere.
    let (bytes, _) = raw(p.proxy, b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n", Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("absolute_form"), "{text}");
    assert!(legacy.seen().iter().all(|s| !s.uri.contains("meta-data")));
}

// --------------------------------------------------- 8. memory under large candidate bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_bodies_are_bounded_by_the_memory_budget() {
    const CALLS: usize = 64;
    let big: bytes::Bytes = {
        let items: Vec<_> = (0..60_000)
            .map(|i| json!({"id": i, "name": format!("employee {i}"), "dept": "engineering", "pad": "x".repeat(100)}))
            .collect();
        serde_json::to_vec(&json!({"individuals": items}))
            .unwrap()
            .into()
    };
    assert!(big.len() > 9 << 20 && big.len() < 10 << 20, "{}", big.len());
    let legacy = Upstream::json(json!({"individuals": []})).await;
    let candidate = Upstream::start(move |_| {
        Reply::bytes(200, big.clone()).header("content-type", "application/json")
    })
    .await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    // Loading 64 bodies of 10 MB at once on a loaded 2-core machine can take a while.
    cfg.candidate_timeout = "120s".into();
    cfg.rest =
        "[shadow]\nmax_body = \"10MiB\"\nmax_bytes_in_flight = \"160MiB\"\nthreads = 2\n".into();
    let p = start(cfg, None).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let url = p.url(&format!("/big/{i}"));
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    // Diffing 10 MB documents takes a while in a debug build.
    let rows = tokio::task::block_in_place(|| p.wait_rows_within(CALLS, Duration::from_secs(180)));
    let peak_mib = p.status_kib("VmHWM") / 1024;
    let over_budget = rows.iter().filter(|r| r[1] == json!("memory")).count();
    let compared = rows.iter().filter(|r| r[0] == json!("diff")).count();
    assert!(compared >= 1, "{rows:?}");
    assert_eq!(compared + over_budget, CALLS, "{rows:?}");
    // Without a byte budget 64 such bodies peaked at 1.87 GB. The budget (160 MiB, two such
    // comparisons at a time) bounds what they hold.
    // Without a byte budget 64 such bodies peaked at 1.87 GB. With it (160 MiB: two such
    // comparisons at a time) the peak stays near two comparisons' worth: one alone, whose
    // 60,000 differences each hold a whole element, peaks at about 220 MiB.
    assert!(peak_mib < 600, "peak RSS {peak_mib} MiB");
    let after_mib = p.status_kib("VmRSS") / 1024;
    println!("64 x 9.9 MB candidate bodies: peak RSS {peak_mib} MiB, {after_mib} MiB after, {compared} compared, {over_budget} skipped (memory)");
}

/// Pages of small members parse into many times their bytes (`[1,1,…]`: a 24-byte node per two
/// bytes of text, and the scratch stack that collects them), more than the 8 × per body the
/// budget charges up front. The documents ask the budget for the rest as they are built, so a
/// comparison the budget cannot hold is not built (it was: both trees, ~30 × each body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_documents_take_what_they_build_from_the_memory_budget() {
    const CALLS: usize = 3;
    let dense: bytes::Bytes = format!("[{}]", vec!["1"; 1_500_000].join(",")).into();
    let len = dense.len();
    let serve = |d: bytes::Bytes| {
        move |_: &Seen| Reply::bytes(200, d.clone()).header("content-type", "application/json")
    };
    let legacy = Upstream::start(serve(dense.clone())).await;
    let candidate = Upstream::start(serve(dense.clone())).await;
    let mut peaks = Vec::new();
    for (budget, want) in [("64MiB", "memory"), ("1GiB", "match")] {
        let mut cfg = Conf::new(&legacy.url(), &candidate.url());
        cfg.candidate_timeout = "60s".into();
        // 8 × both bodies (24 MB) fit in 64 MiB: the trees (~2 × 30 × 3 MB) do not.
        cfg.store = "exchanges = \"all\"\n".into();
        cfg.rest = format!("[shadow]\nmax_body = \"4MiB\"\nmax_bytes_in_flight = \"{budget}\"\n");
        // Without the allocator's advice for transparent huge pages, the resident set counts
        // the pages the process touched, not 2 MiB around each (with it, the peaks below moved
        // by up to 70 MiB from run to run: docs/operations.md).
        cfg.env = vec![("MIMALLOC_ALLOW_THP", "0")];
        let p = start(cfg, None).await;
        let at_start = p.status_kib("VmHWM") / 1024;
        for i in 0..CALLS {
            let got = get(&p.url(&format!("/dense/{i}"))).await;
            assert_eq!((got.status, got.body.len()), (200, len));
            tokio::task::block_in_place(|| p.wait_rows_within(i + 1, Duration::from_secs(120)));
        }
        let rows =
            tokio::task::block_in_place(|| p.wait_rows_within(CALLS, Duration::from_secs(120)));
        for r in &rows {
            match want {
                "memory" => {
                    assert_eq!(r[0], json!("skipped"), "{budget}: {rows:?}");
                    let reason = r[1].as_str().unwrap_or_default();
                    assert!(reason.contains("max_bytes_in_flight"), "{reason}");
                }
                _ => assert_eq!(r[0], json!(want), "{budget}: {rows:?}"),
            }
        }
        peaks.push((at_start, p.status_kib("VmHWM") / 1024));
    }
    let grew = |(start, peak): (u64, u64)| peak.saturating_sub(start);
    println!(
        "{CALLS} dense pages of {len} bytes: peak RSS {:?} MiB (at start, after) within 64 MiB, \
         {:?} MiB within 1 GiB",
        peaks[0], peaks[1]
    );
    // Within 64 MiB the trees are never built whole: the resident set grows by well under what
    // they take when the budget holds them (in a debug build: 95-101 MiB against 192-212 MiB;
    // before the trees asked the budget, the 64 MiB budget let them be built).
    assert!(
        3 * grew(peaks[0]) < 2 * grew(peaks[1]),
        "peak RSS {peaks:?} MiB"
    );
}

// --------------------------------------------------------------------- 9. smaller ones

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_files_are_private() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 2})).await;
    let cfg = Conf::new(&legacy.url(), &candidate.url());
    let p = start(cfg, None).await;
    assert_eq!(get(&p.url("/x")).await.status, 200);
    tokio::task::block_in_place(|| p.wait_rows(1));
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", p.db().display()));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", f.display(), mode & 0o777);
    }
}

#[test]
fn a_missing_upstream_is_a_config_error_for_serve_too() {
    let files = [("sd.toml", "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n")];
    for cmd in ["serve", "check"] {
        let (_dir, out) = run_in(&files, &[cmd, "--config", "sd.toml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
    }
}

#[test]
fn duplicate_account_keys_are_refused_naming_both_lines() {
    let k = shadowdiff::translate::key_sha256_hex(b"k1");
    let csv = format!(
        "key_sha256,name\n{k},acme\n{},other\n{k},globex\n",
        "0".repeat(64)
    );
    let files = [
        ("accounts.csv", csv.as_str()),
        (
            "sd.toml",
            "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n\
             [accounts]\nkey = \"header:authorization\"\nfile = \"accounts.csv\"\n",
        ),
    ];
    let (_dir, out) = run_in(&files, &["check", "--config", "sd.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 4: the same key_sha256 as line 2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_legacy_body_is_a_broken_body_not_an_unreachable_legacy() {
    let legacy = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nZZ\r\nnot a chunk\r\n0\r\n\r\n",
        false,
    )
    .await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let cfg = Conf::new(&format!("http://{legacy}"), &candidate.url());
    let p = start(cfg, None).await;
    let (bytes, closed) = raw(
        p.proxy,
        b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(closed);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "legacy's head: {text}");
    let rows = tokio::task::block_in_place(|| p.wait_rows(1));
    assert_eq!(rows[0][0], json!("legacy_error"), "{rows:?}");
    let reason = rows[0][1].as_str().unwrap();
    assert!(reason.contains("legacy body failed"), "{reason}");
    assert!(!reason.contains("unreachable"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_answer_that_is_not_http_is_an_invalid_response_not_an_unreachable_legacy() {
    let legacy = raw_upstream(b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}", false).await;
    let garbage = broken_upstream(true).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    for l in [format!("http://{legacy}"), format!("http://{garbage}")] {
        let cfg = Conf::new(&l, &candidate.url());
        let p = start(cfg, None).await;
        let got = get(&p.url("/h")).await;
        assert_eq!(got.status, 502, "{l}");
        assert_eq!(got.json()["error"], "legacy_invalid_response", "{l}");
        let rows = tokio::task::block_in_place(|| p.wait_rows(1));
        assert_eq!(rows[0][0], json!("legacy_error"));
        assert!(
            rows[0][1].as_str().unwrap().contains("invalid response"),
            "{rows:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_checked_whatever_its_length() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.admin = "token = \"correct-horse\"\n".into();
    let p = start(cfg, None).await;
    let with = |t: &str| {
        let url = p.admin_url("/metrics");
        let t = t.to_owned();
        async move {
            send(
                http::Request::get(url)
                    .header("authorization", format!("Bearer {t}"))
                    .body(http_body_util::Full::default())
                    .unwrap(),
            )
            .await
            .status
        }
    };
    for wrong in [
        "",
        "c",
        "correct-hors",
        "correct-horsE",
        "correct-horse-battery",
    ] {
        assert_eq!(with(wrong).await, 401, "{wrong:?}");
    }
    assert_eq!(with("correct-horse").await, 200);
}

// ------------------------------------------------------------------ soak and SIGKILL

/// Drives `p` with `workers` closed-loop callers until `stop` is set; counts answers.
#[allow(clippy::needless_pass_by_value)] // each load thread owns its counters
fn load(
    p: &Proc,
    workers: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let base = p.url("");
            tokio::spawn(async move {
                let client = client();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let req = http::Request::get(format!(
                        "{base}/employer/directory?page={}",
                        (w as u64 * 7919 + i) % 4096
                    ))
                    .body(http_body_util::Full::default())
                    .unwrap();
                    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                        Ok(Ok(res)) if res.status() == 200 => {
                            use http_body_util::BodyExt;
                            if res.into_body().collect().await.is_ok() {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

/// Upstreams answering a distinct page per query (so the comparison memo does not help), with
/// a planted difference.
async fn paged_upstreams() -> (Upstream, Upstream) {
    let page = |s: &Seen, cand: bool| {
        let n: u64 = s
            .uri
            .split("page=")
            .nth(1)
            .and_then(|v| v.split('&').next()?.parse().ok())
            .unwrap_or(0);
        let people: Vec<_> = (0..20)
            .map(|i| json!({"id": n * 100 + i, "name": format!("Person {n}-{i}"), "dept": if cand && i == 3 { "Sales" } else { "sales" }}))
            .collect();
        Reply::json(json!({"page": n, "individuals": people}))
    };
    (
        Upstream::start_unlogged(move |s| page(s, false)).await,
        Upstream::start_unlogged(move |s| page(s, true)).await,
    )
}

fn store_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let secs: u64 = std::env::var("SHADOWDIFF_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let every = if secs >= 60 { 10 } else { 1 };
    let (legacy, candidate) = paged_upstreams().await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.candidate_extra = "forward_query = [\"page\"]\n".into();
    // Candidate connections are bounded by max_in_flight: a small one makes a leak stand out.
    cfg.rest = "[shadow]\nmax_in_flight = 32\n".into();
    let p = start(cfg, None).await;
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // Histogram samples are folded into buckets by a thread of their own, not only when
    // /metrics is scraped (unscraped, they grew RSS by ~0.1 MiB/s in the first soak).
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", p.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    assert!(threads.iter().any(|t| t == "metrics-upkeep"), "{threads:?}");
    let workers = load(&p, 4, stop.clone(), ok.clone(), failed.clone());
    let t0 = Instant::now();
    let mut samples = Vec::new();
    println!("soak: {secs} s, 4 closed-loop callers, distinct pages");
    println!("| t (s) | requests | RSS (MiB) | fds | store (MiB) |");
    println!("|---|---|---|---|---|");
    for k in 1..=secs.div_ceil(every) {
        let at = t0 + Duration::from_secs(k * every);
        tokio::time::sleep_until(at.into()).await;
        let (rss, fds, store) = (
            p.status_kib("VmRSS") / 1024,
            p.open_fds(),
            store_bytes(&p.db()),
        );
        println!(
            "| {} | {} | {rss} | {fds} | {:.1} |",
            k * every,
            ok.load(Ordering::Relaxed),
            store as f64 / (1 << 20) as f64
        );
        samples.push((rss, fds));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{}", p.log());
    assert!(ok.load(Ordering::Relaxed) > 0);
    // No descriptor leaks: 4 callers, their legacy connections, at most 32 candidate calls
    // (and their pooled connections), the store and the listeners.
    let max_fds = samples.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(max_fds <= 128, "fds {samples:?}");
    let served = ok.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| p.wait_counted(served));
    let rows = query(&p.db(), "SELECT outcome FROM exchanges");
    assert!(rows
        .iter()
        .all(|r| r[0] == json!("diff") || r[0] == json!("skipped")));
}

/// The exchanges a store counted (in its hourly roll-ups): with the default `[store] exchanges =
/// "sampled"` not every one keeps a row.
const COUNTED: &str = "SELECT coalesce(sum(n), 0) FROM rollup_outcomes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_leaves_an_intact_store_and_loses_at_most_what_was_queued() {
    const QUEUE: u64 = 100;
    const MAX_IN_FLIGHT: u64 = 64;
    const BATCH: u64 = 1000;
    let (legacy, candidate) = paged_upstreams().await;
    let mut cfg = Conf::new(&legacy.url(), &candidate.url());
    cfg.candidate_extra = "forward_query = [\"page\"]\n".into();
    cfg.store = format!("queue = {QUEUE}\n");
    cfg.rest = format!("[shadow]\nmax_in_flight = {MAX_IN_FLIGHT}\n");
    let mut p = start(cfg, None).await;
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers = load(&p, 8, stop.clone(), ok.clone(), failed.clone());
    // Under load for a while: until some exchanges are on disk and more keep coming.
    let db = p.db();
    let on_disk = poll_async(Duration::from_secs(30), || {
        let db = db.clone();
        let ok = ok.clone();
        async move {
            let n = query(&db, COUNTED)[0][0].as_u64()?;
            (n >= 200 && ok.load(Ordering::Relaxed) >= 400).then_some(n)
        }
    })
    .await;
    assert!(on_disk.is_some(), "{}", p.log());
    p.signal("-KILL");
    let answered = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let _ = wait_exit(&mut p.child, Duration::from_secs(10));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = conn.query_row(COUNTED, [], |r| r.get(0)).unwrap();
    let stored = stored as u64;
    // Whatever the callers got an answer for, less what was queued, in the writer's batch or
    // still being compared at the kill.
    let lost = answered.saturating_sub(stored);
    assert!(
        lost <= QUEUE + BATCH + MAX_IN_FLIGHT,
        "answered {answered}, stored {stored}"
    );
    assert!(stored > 0);
    println!(
        "SIGKILL under load: {answered} answered, {stored} stored, {lost} lost (bound {})",
        QUEUE + BATCH + MAX_IN_FLIGHT
    );
}

/// The default connection cap fitted to a common open-files limit (20,000: the default 10,000
/// connections need three files each) is said at info level, not as a warning at every start;
/// a cap the operator set and the limit cannot hold still warns. Old binary: every start at
/// `ulimit -n 20000` warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_connection_cap_fitted_to_the_file_limit_is_not_a_warning() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let warned = |proxy: &str| {
        let mut cfg = Conf::new(&legacy.url(), &candidate.url());
        cfg.proxy = proxy.to_owned();
        async move {
            let mut p = start(cfg, Some(20_000)).await;
            assert_eq!(get(&p.url("/x")).await.status, 200);
            p.stop();
            p.log().contains("open-files limit is too low")
        }
    };
    assert!(!warned("").await, "the default cap");
    assert!(
        warned("max_connections = 10000\n").await,
        "a configured cap"
    );
}

/// `shadowdiff probe` (the image's HEALTHCHECK: no shell or curl in it) answers for a running
/// instance: 0 on a 2xx, 1 on another status, 3 when nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_says_whether_the_admin_listener_is_up() {
    let legacy = Upstream::json(json!({"a": 1})).await;
    let candidate = Upstream::json(json!({"a": 1})).await;
    let p = start(Conf::new(&legacy.url(), &candidate.url()), None).await;
    let probe = |url: String| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .args(["probe", &url])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = probe(p.admin_url("/healthz"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("200 "), "{out}");
    assert_eq!(probe(p.admin_url("/nope")).0, Some(1));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(probe(format!("http://127.0.0.1:{port}/healthz")).0, Some(3));
}
