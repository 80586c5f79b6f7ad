//! Wires the pieces together: binds the listeners, runs the accept loops, and owns the shutdown
//! sequence (stop accepting → drain connections → wait for shadow work → flush the store).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::shadow::{Shadow, Tracker};
use crate::store::{Store, StoreHandle, WriterOptions};
use crate::upstream;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// (The causes are not `source`s: each text is shown once, in its message.)
    #[error("listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("starting the shadow runtime: {0}")]
    Runtime(std::io::Error),
    #[error("mappings: {0}")]
    Mapping(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{side}: {error}")]
    Client {
        side: &'static str,
        error: upstream::ClientError,
    },
}

/// A bound, not yet running server.
pub struct Server {
    proxy_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
    admin: Arc<AdminState>,
    store: Store,
    /// Where candidate calls and comparisons run (see [`crate::background`]).
    runtime: BackgroundRuntime,
    drain_timeout: Duration,
    reloader: Arc<Reloader>,
    limits: ConnLimits,
    /// `[[webhooks]]` and the store their outbox is in (read at start-up).
    webhooks: (crate::store::Location, Vec<crate::webhook::Endpoint>),
    /// The listeners' certificates (proxy, admin), when they serve TLS.
    tls: (
        Option<Arc<crate::tls::Certs>>,
        Option<Arc<crate::tls::Certs>>,
    ),
    /// Reads the fleet's id pairs into the crosswalk (with `[ids]`); stops when dropped.
    _ids: Option<crate::ids::follow::Follower>,
}

/// Bounds on the callers' connections of one listener.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    max: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// Connections the admin listener serves at once: its own budget, so that callers holding
/// every proxy connection never take `/healthz` and `/metrics` down with them.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// The admin listener's wait for a request head: probes send theirs at once, and a socket that
/// sends nothing must not hold one of its few slots for the proxy's (longer) timeout.
const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors kept for everything but callers' connections: the store, mapping workers,
/// listeners, the admin listener's connections, logs.
const RESERVED_FDS: u64 = 256;

/// The proxy's connection cap: `[proxy] max_connections`, lowered when the process may not
/// open enough files for it. The soft limit on open files is raised to the hard limit first.
/// Each caller connection may hold a legacy connection and, when its request is served by the
/// candidate, a candidate connection too; shadow calls hold up to `max_in_flight` more. With
/// `[rollout] max_in_flight` set (`served`), served calls hold that many at most instead of
/// one per caller connection.
/// The default cap lowered to fit is said at info level (every start at a common limit such as
/// 20,000 would warn otherwise); a configured one at warn.
fn connection_cap(
    (configured, set): (usize, bool),
    max_in_flight: usize,
    served: Option<usize>,
) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit: [proxy] max_connections is not checked against it");
            return configured;
        }
    };
    let (fixed, per_connection) = match served {
        Some(n) => (n as u64, 2),
        None => (0, 3),
    };
    let room = soft.saturating_sub(RESERVED_FDS + max_in_flight as u64 + fixed) / per_connection;
    let cap = configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1);
    if cap < configured && set {
        tracing::warn!(
            open_files_limit = soft,
            max_connections = configured,
            using = cap,
            "the open-files limit is too low for [proxy] max_connections: using a lower cap (raise LimitNOFILE / ulimit -n)"
        );
    } else if cap < configured {
        tracing::info!(
            open_files_limit = soft,
            using = cap,
            "connection cap fitted to the open-files limit (set [proxy] max_connections, or raise LimitNOFILE / ulimit -n, for more)"
        );
    }
    cap
}

/// The `Host` names the admin listener answers to: its bound address, the loopback names of
/// its port when it listens on loopback (or every address), and `[admin] hosts`.
fn admin_hosts(addr: Option<SocketAddr>, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = extra.to_vec();
    if let Some(a) = addr {
        hosts.push(a.to_string());
        if a.ip().is_loopback() || a.ip().is_unspecified() {
            let p = a.port();
            hosts.extend([
                format!("127.0.0.1:{p}"),
                format!("localhost:{p}"),
                format!("[::1]:{p}"),
            ]);
        }
    }
    hosts
}

/// An upstream client for one side, its error naming the side.
fn client<B>(
    side: &'static str,
    ca: Option<&std::path::Path>,
) -> Result<upstream::HttpClient<B>, StartError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    upstream::client(ca).map_err(|source| StartError::Client {
        side,
        error: source,
    })
}

/// The store writer's settings of a config.
fn writer_options(cfg: &Config) -> WriterOptions {
    WriterOptions {
        queue: cfg.store.queue,
        priority: cfg.shadow.priority,
        retention: cfg.store.retention,
        max_value_len: cfg.store.max_value_len,
        examples_per_field: cfg.store.examples_per_field,
        exchanges: cfg.store.exchanges,
        rows_per_hour: cfg.store.rows_per_hour,
        migrate: cfg.store.migrate,
        reauth_after: cfg.reauth_after,
        id_max_pairs: cfg
            .ids
            .iter()
            .map(|k| (k.name.clone(), k.max_pairs))
            .collect(),
        webhooks: cfg
            .webhooks
            .iter()
            .map(|w| (w.name.clone(), w.events.clone()))
            .collect(),
    }
}

/// A shadow that only calls the candidate, for `shadowdiff replay`: its client, its budgets
/// (`max_rps`, `max_in_flight`, the quotas and breakers), the mapping workers of `worker_exe`;
/// the store at `location` (the one replayed from) is opened for its handle and never written
/// (a replay is not traffic; the config's own store is not opened at all). The
/// runtime returned runs the calls; drop it off the async threads.
pub fn replay_shadow(
    cfg: &Arc<Config>,
    worker_exe: std::path::PathBuf,
    location: &crate::store::Location,
) -> Result<(Arc<Shadow>, Store, tokio::runtime::Runtime), StartError> {
    let store = Store::open_at(location, writer_options(cfg))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.shadow.threads)
        .thread_name("replay")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let entered = runtime.enter();
    let mapper = crate::mapping::runner::Runner::new(worker_exe, cfg.mappings.workers);
    let shadow = Arc::new(Shadow::new(
        cfg.clone(),
        (
            client("candidate", cfg.candidate.ca_file.as_deref())?,
            client("candidate", cfg.candidate.ca_file.as_deref())?,
        ),
        client("legacy", cfg.legacy.ca_file.as_deref())?,
        store.handle(),
        runtime.handle().clone(),
        mapper,
        1,
    ));
    drop(entered);
    Ok((shadow, store, runtime))
}

/// What tests (and the demo) need from a running server.
#[derive(Clone)]
pub struct Handle {
    tracker: Arc<Tracker>,
    store: StoreHandle,
}

impl Handle {
    /// Waits until every started exchange is compared and written.
    pub async fn quiesce(&self) {
        self.tracker.wait_idle().await;
        self.store.flush().await;
    }
}

/// How the run ended.
#[derive(Debug)]
pub struct Summary {
    pub written: u64,
    /// Not stored: the queue was full.
    pub dropped: u64,
    /// Of `dropped`, those counted in the hourly roll-ups all the same (without a row).
    pub counted: u64,
    /// Not stored: the store failed to write them.
    pub lost: u64,
    /// Exchanges still running when the drain timeout expired.
    pub abandoned: usize,
}

/// Start-up settings that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The binary the mapping workers run (`shadowdiff mapping-worker`); this process's own
    /// executable by default. Tests pass the built `shadowdiff` binary.
    pub mapping_worker: Option<std::path::PathBuf>,
    /// Command-line overrides, applied again on every reload.
    pub overrides: crate::config::Overrides,
}

impl Server {
    /// Binds the listeners, opens the store and builds the clients.
    pub async fn bind(cfg: Config) -> Result<Self, StartError> {
        Self::bind_with(cfg, Options::default()).await
    }

    /// [`bind`](Self::bind) with start-up options.
    pub async fn bind_with(cfg: Config, opts: Options) -> Result<Self, StartError> {
        cfg.upstreams()?;
        // The upstream histogram's buckets reach the longest wait configured for an upstream.
        let longest = cfg
            .routes
            .iter()
            .map(|r| r.serve_deadline)
            .chain([cfg.legacy.timeout, cfg.candidate.timeout])
            .max()
            .unwrap_or_default();
        crate::telemetry::install_with(longest);
        crate::telemetry::register_routes(cfg.routes.iter().map(|r| r.name.as_str()));
        crate::telemetry::register_phases(cfg.rollout.phases.keys().map(String::as_str));
        let cfg = Arc::new(cfg);
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr,
                    error: source,
                })
        };
        let certs = |t: &Option<crate::config::TlsFiles>| {
            t.as_ref()
                .map(|f| crate::tls::Certs::load(&f.cert, &f.key))
                .transpose()
        };
        let tls = (certs(&cfg.proxy.tls)?, certs(&cfg.admin.tls)?);
        let proxy_listener = bind(cfg.proxy.listen.clone()).await?;
        let admin_listener = match &cfg.admin.listen {
            Some(a) => Some(bind(a.clone()).await?),
            None => None,
        };
        let (location, writer_opts) = (cfg.store.location(), writer_options(&cfg));
        // Opening connects and migrates (PostgreSQL's client blocks): off the async threads.
        let store = tokio::task::spawn_blocking(move || Store::open_at(&location, writer_opts))
            .await
            .map_err(|e| StartError::Runtime(std::io::Error::other(e)))??;
        let legacy_client = client("legacy", cfg.legacy.ca_file.as_deref())?;
        let candidate_client = client("candidate", cfg.candidate.ca_file.as_deref())?;
        let priority = cfg.shadow.priority;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.shadow.threads)
            .thread_name("shadow")
            .enable_all()
            .on_thread_start(move || crate::background::lower_current_thread(priority))
            .build()
            .map_err(StartError::Runtime)?;
        // Second legacy calls (noise learning) go out from the shadow runtime, on a pool of
        // their own: a pooled connection's task runs on the runtime that opened it, and the
        // caller's runtime must not carry shadow work.
        let legacy_again = client("legacy", cfg.legacy.ca_file.as_deref())?;
        let worker_exe = match opts.mapping_worker {
            Some(exe) => exe,
            None => std::env::current_exe()
                .map_err(|e| StartError::Mapping(format!("finding this binary: {e}")))?,
        };
        let mapper = crate::mapping::runner::Runner::new(worker_exe.clone(), cfg.mappings.workers);
        // The admin API's suggestions re-diff recorded traffic: one worker process of their own
        // (started on first use), so they never queue in front of a served request's mapping.
        let admin_mapper = crate::mapping::runner::Runner::new(worker_exe, 1);
        if cfg.routes.iter().any(|r| !r.mappings.is_empty()) {
            mapper.warm();
        }
        let serve_client = client("candidate", cfg.candidate.ca_file.as_deref())?;
        let limits = ConnLimits {
            max: connection_cap(
                (cfg.proxy.max_connections, cfg.proxy.max_connections_set),
                cfg.shadow.max_in_flight,
                cfg.rollout.max_in_flight,
            ),
            header_read_timeout: cfg.proxy.header_read_timeout,
            idle_timeout: cfg.proxy.idle_timeout,
        };
        // Served candidate calls: `[rollout] max_in_flight`, or one per caller connection.
        let served_budget = cfg.rollout.max_in_flight.unwrap_or(limits.max);
        let shadow = Arc::new(Shadow::new(
            cfg.clone(),
            (candidate_client, serve_client),
            legacy_again,
            store.handle(),
            runtime.handle().clone(),
            mapper,
            served_budget,
        ));
        // The rollout's control thread reads the stored phase before the first request.
        let control = {
            let (shadow, location) = (shadow.clone(), cfg.store.location());
            tokio::task::spawn_blocking(move || {
                crate::rollout_control::Controller::start(shadow, &location)
            })
            .await
            .map_err(|e| StartError::Runtime(std::io::Error::other(e)))?
            .map_err(StartError::Runtime)?
        };
        // The id crosswalk: every stored pair in memory before the first request.
        let ids = if cfg.ids.is_empty() {
            None
        } else {
            let (crosswalk, location) = (shadow.ids.clone(), cfg.store.location());
            let max: Vec<(String, usize)> = cfg
                .ids
                .iter()
                .map(|k| (k.name.clone(), k.max_pairs))
                .collect();
            Some(
                tokio::task::spawn_blocking(move || {
                    crate::ids::follow::start(crosswalk, &location, max)
                })
                .await
                .map_err(|e| StartError::Runtime(std::io::Error::other(e)))?
                .map_err(StartError::Runtime)?,
            )
        };
        let reloader = Arc::new(Reloader::new(
            shadow.clone(),
            opts.overrides,
            Some(control.clone()),
        ));
        let rollout = crate::rollout_control::api::RolloutHandle {
            controller: control,
            shadow: shadow.clone(),
        };
        let proxy = Arc::new(Proxy::new(shadow, legacy_client));
        let admin = Arc::new(AdminState {
            ready: false.into(),
            token: cfg.admin.token.clone(),
            metrics_token: cfg.admin.metrics_token,
            db: cfg.store.location(),
            readers: crate::admin::Readers::default(),
            classes: (&cfg.diff).into(),
            references: crate::report::references(&cfg),
            mapper: Some(admin_mapper),
            reloader: Some(reloader.clone()),
            store: Some(store.handle().stats().clone()),
            rollout: Some(rollout),
            hosts: admin_hosts(
                admin_listener.as_ref().and_then(|l| l.local_addr().ok()),
                &cfg.admin.hosts,
            ),
            logins: crate::admin::session::Attempts::default(),
            secure: tls.1.is_some(),
            routes: Arc::new(cfg.routes.iter().map(|r| r.name.clone()).collect()),
        });
        Ok(Self {
            proxy_listener,
            admin_listener,
            proxy,
            admin,
            store,
            runtime: BackgroundRuntime(Some(runtime)),
            drain_timeout: cfg.proxy.drain_timeout,
            reloader,
            limits,
            webhooks: (cfg.store.location(), cfg.webhooks.clone()),
            tls,
            _ids: ids,
        })
    }

    /// Whether the proxy and the admin listener serve TLS.
    pub fn tls(&self) -> (bool, bool) {
        (self.tls.0.is_some(), self.tls.1.is_some())
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_listener.local_addr().expect("bound")
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound"))
    }

    pub fn handle(&self) -> Handle {
        Handle {
            tracker: self.proxy.shadow.tracker.clone(),
            store: self.store.handle(),
        }
    }

    /// Serves until `shutdown` resolves, then drains (bounded by the drain timeout) and flushes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Summary {
        let addr = self.proxy_addr();
        // The SIGHUP handler is installed before the first connection is accepted: a signal
        // sent once the proxy answers must reload, never fall to the default action (exit).
        let hup = crate::reload::hangups();
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let proxy = self.proxy.clone();
        let limits = self.limits;
        tracing::info!(
            max_connections = limits.max,
            header_read_timeout = ?limits.header_read_timeout,
            idle_timeout = ?limits.idle_timeout,
            "connection limits"
        );
        let proxy_loop = tokio::spawn(accept_loop(
            "proxy",
            self.proxy_listener,
            self.tls.0.as_ref().map(crate::tls::Certs::acceptor),
            Some(Requests {
                slots: Arc::new(tokio::sync::Semaphore::new(limits.max)),
                refuse: || {
                    let mut res = crate::proxy::json_response(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "too many requests in flight (the connection cap bounds HTTP/2 streams too); retry",
                    );
                    res.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    );
                    res
                },
            }),
            limits,
            stop_rx.clone(),
            graceful.clone(),
            move |peer| {
                let proxy = proxy.clone();
                service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                })
            },
        ));
        let admin_loop = self.admin_listener.map(|l| {
            let admin = self.admin.clone();
            tokio::spawn(accept_loop(
                "admin",
                l,
                self.tls.1.as_ref().map(crate::tls::Certs::acceptor),
                None,
                ConnLimits {
                    max: ADMIN_MAX_CONNECTIONS,
                    header_read_timeout: limits.header_read_timeout.min(ADMIN_HEADER_READ_TIMEOUT),
                    ..limits
                },
                stop_rx.clone(),
                graceful.clone(),
                move |_| admin::service(admin.clone()),
            ))
        });
        // Webhook deliveries, on the background runtime: a slow endpoint never holds a caller.
        let deliverer = self.runtime.0.as_ref().map(|rt| {
            let (location, endpoints) = std::mem::take(&mut self.webhooks);
            let mut stop = stop_rx.clone();
            rt.spawn(crate::webhook::run(location, endpoints, async move {
                let _ = stop.changed().await;
            }))
        });
        self.admin.ready.store(true, Ordering::Release);
        tracing::info!(%addr, "serving");
        let certs = [self.tls.0.clone(), self.tls.1.clone()]
            .into_iter()
            .flatten()
            .collect();
        let hup = tokio::spawn(crate::reload::on_sighup(hup, self.reloader.clone(), certs));

        shutdown.await;
        hup.abort();
        let deadline = Instant::now() + self.drain_timeout;
        tracing::info!(drain_timeout = ?self.drain_timeout, "shutting down: no new connections");
        self.admin.ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
        let _ = proxy_loop.await;
        if let Some(a) = admin_loop {
            let _ = a.await;
        }
        let graceful = Arc::try_unwrap(graceful).unwrap_or_default();
        if tokio::time::timeout_at(deadline.into(), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout: closing the remaining connections");
        }
        let tracker = self.proxy.shadow.tracker.clone();
        if tokio::time::timeout_at(deadline.into(), tracker.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.count(),
                "drain timeout: abandoning shadow exchanges"
            );
        }
        let abandoned = tracker.count();
        if let Some(d) = deliverer {
            let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
        }
        drop(self.proxy);
        if let Some(rt) = self.runtime.take() {
            let _ =
                tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(1)))
                    .await;
        }
        let stats = tokio::task::spawn_blocking(move || self.store.close())
            .await
            .expect("store close does not panic");
        let summary = Summary {
            written: stats.written(),
            dropped: stats.dropped(),
            counted: stats.counted(),
            lost: stats.lost(),
            abandoned,
        };
        if summary.lost > 0 {
            tracing::error!(
                lost = summary.lost,
                "the store could not write every exchange"
            );
        }
        tracing::info!(
            written = summary.written,
            dropped = summary.dropped,
            counted = summary.counted,
            failed = summary.lost,
            abandoned,
            "stopped"
        );
        summary
    }
}

/// The shadow runtime. Dropping a runtime blocks, which async code may not do: a server dropped
/// without `run` (or a test that panics) shuts it down in the background instead.
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn take(&mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What the idle check knows of one connection: requests in flight, requests seen, and when the
/// last one finished (milliseconds since the connection was accepted).
#[derive(Default)]
struct ConnState {
    busy: AtomicUsize,
    /// Of the requests in flight, those whose body is still arriving.
    receiving: AtomicUsize,
    requests: AtomicUsize,
    last_done_ms: AtomicU64,
}

/// Held by a request until its response body is done (or dropped).
struct Busy {
    state: Arc<ConnState>,
    accepted: Instant,
}

impl Busy {
    fn new(state: &Arc<ConnState>, accepted: Instant) -> Self {
        state.busy.fetch_add(1, Ordering::AcqRel);
        state.requests.fetch_add(1, Ordering::AcqRel);
        Self {
            state: state.clone(),
            accepted,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.state.last_done_ms.fetch_max(ms, Ordering::AcqRel);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnState {
    /// No request in flight, or only requests whose body is still arriving (a slow body holds
    /// nothing upstream worth keeping at the cap).
    fn evictable(&self) -> bool {
        self.busy.load(Ordering::Acquire) <= self.receiving.load(Ordering::Acquire)
    }

    /// Since when (after its acceptance) the connection has had no request in flight.
    fn idle_since(&self) -> Duration {
        Duration::from_millis(self.last_done_ms.load(Ordering::Acquire))
    }

    /// When the connection becomes idle past its limits, as things stand; `None` while a
    /// request is in flight.
    fn deadline(&self, accepted: Instant, limits: &ConnLimits) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            // Nothing complete yet: covers the protocol detection of the auto builder, which
            // waits for the first bytes before hyper's own header timer starts.
            return Some(accepted + limits.header_read_timeout);
        }
        let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(accepted + done + limits.idle_timeout)
    }
}

/// The open connections of one listener, so that at the cap the one idle the longest (no
/// request in flight: a kept-alive connection between requests, or a socket that never sent
/// one) is closed to make room, as Envoy's overload manager shortens idle timeouts under
/// pressure: idle sockets can never keep a real caller waiting.
#[derive(Default)]
struct Conns {
    next: AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Conn>>,
}

#[derive(Clone)]
struct Conn {
    accepted: Instant,
    state: Arc<ConnState>,
    close: Arc<tokio::sync::Notify>,
}

impl Conns {
    fn add(&self, conn: Conn) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.put(id, conn);
        id
    }

    fn put(&self, id: u64, conn: Conn) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, conn);
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Asks the connection idle the longest to close (it closes unless a request arrived in
    /// the meantime); `false` when every connection has a request in flight.
    fn evict_idlest(&self) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idlest = open
            .iter()
            .filter(|(_, c)| c.state.evictable())
            .min_by_key(|(_, c)| c.accepted + c.state.idle_since())
            .map(|(id, _)| *id);
        match idlest.and_then(|id| open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked<B> {
    inner: B,
    _busy: Busy,
    /// Its slot among the listener's requests in flight ([`Requests`]).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The requests a listener has in flight at once, across its connections, and the answer past
/// them. The connection cap bounds the file descriptors of HTTP/1.1 callers (one request per
/// connection at a time); an HTTP/2 caller multiplexes many streams on one connection, each
/// holding a legacy connection (and maybe a candidate one): this bounds those too, at the same
/// number, with an immediate `503` and `Retry-After: 1` past it.
struct Requests<B> {
    slots: Arc<tokio::sync::Semaphore>,
    refuse: fn() -> http::Response<B>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<F, S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    requests: Option<Requests<B>>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let conns = Arc::new(Conns::default());
    // Connections open = slots taken.
    let max = limits.max;
    let open = move |slots: &tokio::sync::Semaphore| max - slots.available_permits();
    let mut last_warned = None;
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // A slot for it. At the cap, the connection idle the longest is closed to make room
        // (again every 50 ms while every one is busy); meanwhile the listener accepts nothing
        // more and the kernel's backlog holds the rest.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                crate::telemetry::connection_limit_reached(name);
                // At most one line a minute: at the cap this happens on every accept.
                if last_warned.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max,
                        "connection cap reached: closing idle connections first, then waiting for one to close"
                    );
                }
                let got = loop {
                    if conns.evict_idlest() {
                        crate::telemetry::connection_evicted(name);
                    }
                    tokio::select! {
                        p = slots.clone().acquire_owned() => break p.ok(),
                        _ = stop.changed() => break None,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                };
                match got {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let accepted = Instant::now();
        let state = Arc::new(ConnState::default());
        let svc = make_service(peer);
        let st = state.clone();
        let limit = requests.as_ref().map(|r| (r.slots.clone(), r.refuse));
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let busy = Busy::new(&st, accepted);
            if !http_body::Body::is_end_stream(req.body()) {
                st.receiving.fetch_add(1, Ordering::AcqRel);
                let state = st.clone();
                req.extensions_mut()
                    .insert(crate::proxy::body::BodyPending::new(move || {
                        state.receiving.fetch_sub(1, Ordering::AcqRel);
                    }));
            }
            // `None`: over the limit; `Some(slot)`: served.
            let slot = match &limit {
                Some((slots, _)) => slots.clone().try_acquire_owned().ok().map(Some),
                None => Some(None),
            };
            let call = slot.is_some().then(|| svc.call(req));
            let refuse = limit.as_ref().map(|l| l.1);
            async move {
                let res = match (call, refuse) {
                    (Some(fut), _) => fut.await?,
                    (None, Some(refuse)) => {
                        crate::telemetry::requests_refused(name);
                        refuse()
                    }
                    (None, None) => unreachable!("refused only where a limit is set"),
                };
                Ok::<_, Infallible>(res.map(|inner| Tracked {
                    inner,
                    _busy: busy,
                    _slot: slot.flatten(),
                }))
            }
        });
        let stream = crate::tls::Stream::new(stream, tls.as_ref());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let fut = graceful.watch(conn);
        crate::telemetry::connections(name, open(&slots));
        let slots = slots.clone();
        let entry = Conn {
            accepted,
            state: state.clone(),
            close: Arc::new(tokio::sync::Notify::new()),
        };
        let close = entry.close.clone();
        let id = conns.add(entry.clone());
        let conns = conns.clone();
        tokio::spawn(async move {
            let mut fut = Box::pin(fut);
            loop {
                let wake = state
                    .deadline(accepted, &limits)
                    .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
                tokio::select! {
                    res = &mut fut => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(wake.into()) => {
                        if state.deadline(accepted, &limits).is_some_and(|d| d <= Instant::now()) {
                            tracing::debug!(%peer, "closing an idle connection");
                            break;
                        }
                    }
                    () = close.notified() => {
                        if state.evictable() {
                            tracing::debug!(%peer, "closing an idle connection to make room at the cap");
                            break;
                        }
                        // A request arrived meanwhile: it stays, and may be chosen again.
                        conns.put(id, entry.clone());
                    }
                }
            }
            conns.remove(id);
            // The connection (its requests, their slots among the requests in flight) goes
            // before its slot among the connections: a caller accepted in its place must find
            // a request slot free (it got a 503 under load, one time in fifteen).
            drop(fut);
            drop(permit);
            crate::telemetry::connections(name, open(&slots));
        });
    }
}

/// Resolves on SIGINT or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal sent as soon as the server says it is up is never lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int) => {}
            () = wait(term) => {}
        }
        tracing::info!("signal received");
    }
}
