//! A private PostgreSQL server for the tests: Debian's `postgresql` binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `SHADOWDIFF_PG_BIN`), a data directory in a temp dir,
//! listening on a loopback port; one server per test binary, a database per test.
//!
//! The server refuses to run as root: as root, it runs as the `postgres` user. It stops (and its
//! data directory goes) when the test process exits: a shell holds it and waits on a pipe whose
//! other end only this process holds. No server binaries: the tests that need one fail, loudly.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Server {
    port: u16,
    /// The shell that holds the server; its stdin closes when this process exits.
    _holder: Mutex<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHADOWDIFF_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (install Debian's \
             `postgresql` package, as scripts/test.sh does, or set SHADOWDIFF_PG_BIN)"
        )
    })
}

/// The `postgres` user's ids, when this process runs as root.
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").ok()?;
    use std::os::unix::fs::MetadataExt;
    if me.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn as_server_user(cmd: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        cmd.gid(gid).uid(uid);
    }
    cmd
}

/// Creates a cluster in `data` (as the server's user) and picks a free loopback port for it.
fn init_cluster(bin: &std::path::Path, ids: Option<(u32, u32)>, data: &std::path::Path) -> u16 {
    let out = as_server_user(&mut Command::new(bin.join("initdb")), ids)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new cluster in a temp dir (`prefix…/data`, owned by the server's user): the server
/// binaries' folder, that user's ids, the temp dir, and a free loopback port.
fn new_cluster(prefix: &str) -> (PathBuf, Option<(u32, u32)>, PathBuf, u16) {
    let bin = bin_dir();
    let ids = run_as();
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
    }
    let port = init_cluster(&bin, ids, &root.join("data"));
    (bin, ids, root, port)
}

fn start() -> Server {
    let (bin, ids, root, port) = new_cluster("shadowdiff-pg-");
    let data = root.join("data");
    let script = format!(
        "{postgres} -D {data} -p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
         >{root}/server.log 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf {root}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        root = root.display(),
    );
    let holder = as_server_user(&mut Command::new("sh"), ids)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        ) {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "PostgreSQL did not accept connections within 60 s: {e}; log: {}",
                    std::fs::read_to_string(root.join("server.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Server {
        port,
        _holder: Mutex::new(holder),
    }
}

/// A new, empty database on the test server: its URL.
pub fn database() -> String {
    let server = SERVER.get_or_init(start);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port
        ),
        postgres::NoTls,
    )
    .unwrap();
    admin
        // A locale that sorts unlike bytes (as managed databases default to): nothing the
        // store returns may depend on the database's collation.
        .batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
             LOCALE 'C.UTF-8'"
        ))
        .unwrap();
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

/// A server of a test's own, to stop and start again (an outage): removed when dropped.
pub struct Private {
    bin: PathBuf,
    ids: Option<(u32, u32)>,
    root: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// TLS on; TCP connections need TLS and a password; the tests' own go by the Unix socket.
    tls: bool,
}

impl Private {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that takes TCP connections only with TLS (`cert_pem`, `key_pem`) and the
    /// `postgres` user's `password`; its admin connection uses the Unix socket.
    pub fn start_tls(cert_pem: &str, key_pem: &str, password: &str) -> Self {
        let me = Self::start_with(Some((cert_pem, key_pem)));
        let mut c = postgres::Client::connect(&me.admin(), postgres::NoTls).unwrap();
        c.batch_execute(&format!("ALTER USER postgres PASSWORD '{password}'"))
            .unwrap();
        me
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let (bin, ids, root, port) = new_cluster("shadowdiff-pg-own-");
        let data = root.join("data");
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            let files = [
                ("server.crt", cert),
                ("server.key", key),
                (
                    "pg_hba.conf",
                    "local all all trust\n\
                     hostssl all all 127.0.0.1/32 scram-sha-256\n\
                     hostnossl all all 127.0.0.1/32 reject\n",
                ),
            ];
            for (name, text) in files {
                let path = data.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                if let Some((uid, gid)) = ids {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
                }
            }
        }
        let mut me = Self {
            bin,
            ids,
            root,
            port,
            child: None,
            tls: tls.is_some(),
        };
        me.resume();
        me
    }

    /// Starts the server (again) on the same data and port, and waits until it accepts.
    pub fn resume(&mut self) {
        let child = as_server_user(&mut Command::new(self.bin.join("postgres")), self.ids)
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.root)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while postgres::Client::connect(&self.admin(), postgres::NoTls).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not come back within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown: every client is disconnected) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// The tests' own connection: TCP, or the Unix socket when TCP needs TLS.
    pub fn admin(&self) -> String {
        if self.tls {
            format!(
                "host={} port={} user=postgres dbname=postgres",
                self.root.display(),
                self.port
            )
        } else {
            format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            )
        }
    }

    /// A new database on this server: its URL.
    pub fn database(&self) -> String {
        let mut c = postgres::Client::connect(&self.admin(), postgres::NoTls).unwrap();
        c.batch_execute("CREATE DATABASE own").unwrap();
        format!("postgres://postgres@127.0.0.1:{}/own", self.port)
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
