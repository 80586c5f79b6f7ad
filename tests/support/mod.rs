//! Test support: fake upstreams on 127.0.0.1:0 that record what they receive, an in-process
//! shadowdiff on a temporary SQLite file, and a small HTTP client.

#![allow(dead_code)]

pub mod pg;
pub mod process;
pub mod vendors;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use shadowdiff::config::Config;
use shadowdiff::server::{Handle, Server, Summary};

/// A request as a fake upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a fake upstream answers.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    #[allow(clippy::needless_pass_by_value)] // called with `json!(..)` literals
    pub fn json(v: serde_json::Value) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(v.to_string()),
            delay: Duration::ZERO,
        }
    }
    pub fn bytes(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A fake HTTP/1.1 upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(handler, true).await
    }

    /// An upstream that keeps no log of the requests it saw (for long runs: the log grows
    /// with every request). `seen()` is then empty.
    #[allow(dead_code)]
    pub async fn start_unlogged(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(handler, false).await
    }

    async fn start_with(
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
        log: bool,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen) = (handler.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, seen) = (handler.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let rec = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let reply = handler(&rec);
                            if log {
                                seen.lock().unwrap().push(rec);
                            }
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut res = Response::new(Full::new(reply.body));
                            *res.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                res.headers_mut().append(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// Answers every request with the same JSON.
    pub async fn json(v: serde_json::Value) -> Self {
        Self::start(move |_| Reply::json(v.clone())).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An upstream that breaks the protocol: it reads the request, then either resets the connection
/// or answers bytes that are not HTTP.
pub async fn broken_upstream(garbage: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if garbage {
                    let _ = stream
                        .write_all(b"SURPRISE \x00\x01 this is not http\r\n\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                } else {
                    // SO_LINGER 0 makes close() send a RST.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
            });
        }
    });
    addr
}

/// A running in-process shadowdiff.
pub struct Shadowdiff {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub handle: Handle,
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Summary>>,
    pub dir: tempfile::TempDir,
}

impl Shadowdiff {
    /// Starts shadowdiff with `toml` (listeners on port 0 and the store in a temp dir are added
    /// unless the text sets them).
    pub async fn start(legacy: &str, candidate: &str, toml: &str) -> Self {
        Self::start_with_files(legacy, candidate, toml, None).await
    }

    /// Like [`start`](Self::start), with the files of `files` (a folder: mappings, accounts)
    /// copied beside the config first.
    pub async fn start_with_files(
        legacy: &str,
        candidate: &str,
        toml: &str,
        files: Option<&Path>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(src) = files {
            copy_tree(src, dir.path());
        }
        let mut text = String::new();
        if !toml.contains("[proxy]") {
            text.push_str("[proxy]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n");
        }
        if !toml.contains("[admin]") {
            text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
        }
        if !toml.contains("[legacy]") {
            text.push_str(&format!(
                "[legacy]\nbase_url = \"{legacy}\"\ntimeout = \"5s\"\n"
            ));
        }
        if !toml.contains("[candidate]") {
            text.push_str(&format!(
                "[candidate]\nbase_url = \"{candidate}\"\ntimeout = \"5s\"\n"
            ));
        }
        if !toml.contains("[store]") {
            text.push_str("[store]\npath = \"store/shadowdiff.db\"\n");
        }
        text.push_str(toml);
        let text = text
            .replace("{legacy}", legacy)
            .replace("{candidate}", candidate);
        let cfg_path = dir.path().join("shadowdiff.toml");
        std::fs::write(&cfg_path, &text).unwrap();
        let cfg = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let db = cfg.store.path.clone();
        let server = Server::bind_with(
            cfg,
            shadowdiff::server::Options {
                mapping_worker: Some(env!("CARGO_BIN_EXE_shadowdiff").into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (addr, admin, handle) = (server.proxy_addr(), server.admin_addr(), server.handle());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let join = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin,
            handle,
            db,
            stop: Some(tx),
            join: Some(join),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until every exchange so far is compared and written.
    pub async fn quiesce(&self) {
        self.handle.quiesce().await;
    }

    /// Shuts down (drain and flush); returns the run summary and the temp dir, still there.
    pub async fn stop(mut self) -> (Summary, tempfile::TempDir) {
        let _ = self.stop.take().unwrap().send(());
        let summary = self.join.take().unwrap().await.unwrap();
        (summary, self.dir)
    }

    /// Rows of a query against the store, each column as JSON.
    pub fn rows(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        query(&self.db, sql)
    }

    /// The `exchanges` rows as (outcome, reason).
    pub fn outcomes(&self) -> Vec<(String, Option<String>)> {
        self.rows("SELECT outcome, reason FROM exchanges ORDER BY id")
            .into_iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

/// Copies a folder's files and subfolders into another.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

pub fn query(db: &Path, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        (0..n)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                    rusqlite::types::ValueRef::Integer(v) => v.into(),
                    rusqlite::types::ValueRef::Real(v) => serde_json::json!(v),
                    rusqlite::types::ValueRef::Text(t) => {
                        String::from_utf8_lossy(t).into_owned().into()
                    }
                    rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned().into()
                    }
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every byte of the store's files (the database, its WAL and shared memory).
pub fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(b) = std::fs::read(p) {
            all.extend(b);
        }
    }
    all
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(req: Request<Full<Bytes>>) -> Got {
    let res = client().request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A GET with one header.
pub async fn get_with_header(url: &str, name: &str, value: &str) -> Got {
    send(
        Request::get(url)
            .header(name, value)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// The sum of a metric's samples whose line starts with `name` (labels included or not), in
/// Prometheus' exposition text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn get(url: &str) -> Got {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// Loads `url` in headless Chromium (Debian's; `scripts/test.sh` installs it): writes a screenshot to
/// `target/screenshots/NAME.png` (any older one removed first) and returns the page's DOM after
/// `virtual_ms` of virtual time, so that timers such as a refresh have run.
pub fn chromium(url: &str, name: &str, window: &str, virtual_ms: u32) -> (String, PathBuf) {
    use std::process::Command;
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is needed for this test: bash scripts/test.sh installs it");
    let profile = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    let budget = format!("--virtual-time-budget={virtual_ms}");
    let run = |extra: &[&str]| {
        let out = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &budget,
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        &format!("--window-size={window}"),
        &format!("--screenshot={}", png.display()),
    ]);
    let dom = run(&["--dump-dom"]);
    (dom, png)
}

/// An accounts file in `dir` for `names`: each by its bearer token `Bearer NAME-token`, with
/// candidate id `c-NAME`.
pub fn accounts_csv(dir: &Path, names: &[&str]) -> PathBuf {
    let csv = dir.join("accounts.csv");
    let mut text = String::from("key_sha256,name,candidate_id\n");
    for name in names {
        let key = shadowdiff::translate::key_sha256_hex(format!("Bearer {name}-token").as_bytes());
        text.push_str(&format!("{key},{name},c-{name}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    csv
}
