//! The real `shadowdiff serve` binary as a child process (its stderr collected, optionally
//! under an open-files limit), the config it is started with, and bounded polls.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::query;

/// `shadowdiff serve` as a child process, with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Proc {
    /// Writes the config beside a fresh store and starts the binary; `ulimit_nofile` runs it
    /// under that open-files limit.
    pub fn start(cfg: &Conf, ulimit_nofile: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in &cfg.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("sd.toml"), cfg.text()).unwrap();
        Self::start_in(dir, "sd.toml", &cfg.env, ulimit_nofile)
    }

    /// Starts the binary on a config already in `dir` (`config` relative to it), with these
    /// environment variables. The store is expected at `store/sd.db` in `dir` ([`Self::db`]).
    pub fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
        ulimit_nofile: Option<u32>,
    ) -> Self {
        let bin = env!("CARGO_BIN_EXE_shadowdiff");
        let mut cmd = match ulimit_nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--config", config])
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addrs = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("proxy on ").nth(1) {
                // `http://ADDR, admin on http://ADDR` (https when the listener serves TLS).
                let addr = |s: &str| s.trim().split("://").nth(1).unwrap().parse().unwrap();
                let mut it = rest.split(", admin on ");
                let p = addr(it.next().unwrap());
                let a = addr(it.next().unwrap());
                addrs = Some((p, a));
                break;
            }
        }
        let Some((proxy, admin)) = addrs else {
            let _ = child.wait();
            panic!("serve did not start:\n{}", log.lock().unwrap());
        };
        let l = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                l.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self {
            child,
            proxy,
            admin,
            log,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("store/sd.db")
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, then the exit code (bounded wait).
    pub fn stop(&mut self) -> i32 {
        self.signal("-TERM");
        wait_exit(&mut self.child, Duration::from_secs(20))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Polls until `n` exchanges are stored (bounded).
    pub fn wait_rows(&self, n: usize) -> Vec<Vec<serde_json::Value>> {
        self.wait_rows_within(n, Duration::from_secs(20))
    }

    /// Polls until `n` exchanges are counted in the hourly roll-ups (bounded): the default
    /// `[store] exchanges = "sampled"` keeps a row for some only.
    pub fn wait_counted(&self, n: u64) -> u64 {
        poll(Duration::from_secs(20), || {
            let have = query(
                &self.db(),
                "SELECT coalesce(sum(n), 0) FROM rollup_outcomes",
            )[0][0]
                .as_u64()?;
            (have >= n).then_some(have)
        })
        .unwrap_or_else(|| panic!("{n} exchanges were not counted\n{}", self.log()))
    }

    pub fn wait_rows_within(&self, n: usize, limit: Duration) -> Vec<Vec<serde_json::Value>> {
        poll(limit, || {
            let rows = query(
                &self.db(),
                "SELECT outcome, reason, path FROM exchanges ORDER BY id",
            );
            (rows.len() >= n).then_some(rows)
        })
        .unwrap_or_else(|| {
            panic!(
                "{n} exchanges were not stored; have {:?}\n{}",
                query(&self.db(), "SELECT outcome, reason FROM exchanges"),
                self.log()
            )
        })
    }

    /// `/proc/PID/status` field in KiB (VmHWM, VmRSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    poll(limit, || {
        child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
    })
    .unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the process did not exit within {limit:?}");
    })
}

/// Calls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async [`poll`].
pub async fn poll_async<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the binary off the async runtime (it waits for the listening line).
pub async fn start(cfg: Conf, ulimit_nofile: Option<u32>) -> Proc {
    tokio::task::spawn_blocking(move || Proc::start(&cfg, ulimit_nofile))
        .await
        .unwrap()
}

/// A config: listeners on port 0, a store in the temp dir, both upstreams, and extra keys per
/// table.
#[derive(Default)]
pub struct Conf {
    pub legacy: String,
    pub candidate: String,
    /// `[candidate] timeout`; 5 s unless set.
    pub candidate_timeout: String,
    /// `[legacy] timeout`; 5 s unless set.
    pub legacy_timeout: String,
    pub proxy: String,
    pub admin: String,
    pub legacy_extra: String,
    pub candidate_extra: String,
    pub store: String,
    pub rest: String,
    pub files: Vec<(&'static str, String)>,
    /// Environment variables of the binary's process.
    pub env: Vec<(&'static str, &'static str)>,
}

impl Conf {
    pub fn new(legacy: &str, candidate: &str) -> Self {
        Self {
            legacy: legacy.to_owned(),
            candidate: candidate.to_owned(),
            candidate_timeout: "5s".into(),
            legacy_timeout: "5s".into(),
            ..Self::default()
        }
    }

    pub fn text(&self) -> String {
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n{}\
             [admin]\nlisten = \"127.0.0.1:0\"\n{}\
             [legacy]\nbase_url = \"{}\"\ntimeout = \"{}\"\n{}\
             [candidate]\nbase_url = \"{}\"\ntimeout = \"{}\"\n{}\
             [store]\npath = \"store/sd.db\"\n{}{}",
            self.proxy,
            self.admin,
            self.legacy,
            self.legacy_timeout,
            self.legacy_extra,
            self.candidate,
            self.candidate_timeout,
            self.candidate_extra,
            self.store,
            self.rest
        )
    }
}
