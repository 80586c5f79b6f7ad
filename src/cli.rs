//! The command line: `serve`, `check`, `diff` and `prune` (SPEC §2).
//!
//! Exit codes: 0 success or positive verdict, 1 negative verdict (differences found), 2 bad
//! usage or invalid config, 3 any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::classify;
use crate::config::{self, Config, ConfigError, Overrides};
use crate::diff;
use crate::gate;
use crate::record::{rfc3339, RouteKey};
use crate::report;
use crate::server::{self, Server};
use crate::store;

#[derive(Debug, Parser)]
#[command(
    name = "shadowdiff",
    version,
    about = "Parallel-run shadow proxy and JSON diff for API migrations"
)]
pub struct Cli {
    /// Config file [default: config/shadowdiff.toml].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and the admin listener until SIGINT/SIGTERM.
    Serve {
        /// Proxy listen address (overrides [proxy] listen).
        #[arg(long)]
        listen: Option<String>,
        /// Legacy base URL (overrides [legacy] base_url).
        #[arg(long)]
        legacy: Option<String>,
        /// Candidate base URL (overrides [candidate] base_url).
        #[arg(long)]
        candidate: Option<String>,
        /// SQLite file (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Admin listen address (overrides [admin] listen; "" disables it).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Self-contained tour: fake legacy and candidate APIs on loopback, the proxy, traffic, a
    /// parity report and the gate verdict. Needs no config file.
    Demo {
        /// Requests to send through the proxy.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Where reports/demo.html, demo.json and the demo's store go.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
    },
    /// Validate the config, compile every rule and mapping, print the resolved routes.
    Check,
    /// Apply a route's candidate mapping chain to a file and print the result.
    Map {
        input: PathBuf,
        #[arg(long)]
        route: String,
        /// Apply this account's override too.
        #[arg(long)]
        account: Option<String>,
        /// The route's legacy mapping instead of the candidate chain.
        #[arg(long)]
        legacy: bool,
    },
    /// A mapping worker process (started by the proxy; reads requests on stdin).
    #[command(hide = true)]
    MappingWorker,
    /// Compare two JSON files with the same engine and rules as the proxy.
    Diff {
        legacy: PathBuf,
        candidate: PathBuf,
        /// Use this route's rules (default: the global [diff] rules).
        #[arg(long)]
        route: Option<String>,
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
        /// With --route: apply this account's mapping override.
        #[arg(long)]
        account: Option<String>,
        /// With --route: classify each difference from the store over this window
        /// (systematic, sporadic, noise, or new) [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        /// SQLite file to classify from (overrides [store] path; skipped when absent).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Parity report over a time window (SPEC §5).
    Report {
        /// Window ending now, e.g. 24h [default: 24h].
        #[arg(long, value_parser = config::parse_duration, conflicts_with_all = ["from", "to"])]
        since: Option<std::time::Duration>,
        /// Window start (RFC 3339, or a date = midnight UTC); needs --to.
        #[arg(long, value_parser = parse_time, requires = "to")]
        from: Option<SystemTime>,
        /// Window end (exclusive); needs --from.
        #[arg(long, value_parser = parse_time, requires = "from")]
        to: Option<SystemTime>,
        /// Only this route ("(unmatched)" for requests that matched none).
        #[arg(long)]
        route: Option<String>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Only exchanges compared with this mapping version (see `check`), e.g. the parity
        /// since the last mapping change.
        #[arg(long)]
        mapping_version: Option<String>,
        /// Output format [default: by --out's extension, else md].
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write to this file (parent folders are created) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// SQLite file (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Check the thresholds of [gate.PHASE]: exit 0 pass, 1 fail.
    Gate {
        #[arg(long)]
        phase: String,
        /// Window ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// SQLite file (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Delete exchanges older than the retention.
    Prune {
        /// Age limit (default: [store] retention), e.g. 30d.
        #[arg(long, value_parser = config::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// SQLite file (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, with the exchange span's fields (request id, route, account).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Json,
    Md,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GateFormat {
    Text,
    Json,
}

/// Parses `--from`/`--to`: RFC 3339 (`2026-11-28T06:00:00Z`) or a date (midnight UTC).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("invalid time {s:?}: {e} (use e.g. 2026-11-28T06:00:00Z)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    /// An RFC 6902 JSON Patch from the (normalised) legacy to the (normalised) candidate document.
    Patch,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let explicit = cli.config.is_some();
    let config = cli
        .config
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let result = match cli.command {
        Command::Serve {
            listen,
            legacy,
            candidate,
            db,
            admin,
        } => {
            let ov = Overrides {
                listen,
                legacy,
                candidate,
                db,
                admin: None,
            };
            serve(&config, explicit, &ov, admin)
        }
        Command::Check => check(&config),
        Command::Map {
            input,
            route,
            account,
            legacy,
        } => map_cmd(
            &config,
            explicit,
            &input,
            &route,
            account.as_deref(),
            legacy,
        ),
        Command::MappingWorker => {
            return ExitCode::from(crate::mapping::runner::worker_main() as u8)
        }
        Command::Demo { requests, out } => demo(requests, &out),
        Command::Diff {
            legacy,
            candidate,
            route,
            account,
            format,
            since,
            db,
        } => diff_files(
            &config,
            explicit,
            (&legacy, &candidate),
            (route.as_deref(), account.as_deref()),
            format,
            (window(since, None, None), db),
        ),
        Command::Report {
            since,
            from,
            to,
            route,
            account,
            mapping_version,
            format,
            out,
            db,
        } => {
            let window = window(since, from, to);
            let filter = report::Filter {
                from: window.0,
                to: window.1,
                route: route.as_deref().map(RouteKey::parse),
                account,
                mapping_version,
            };
            report_cmd(&config, explicit, filter, format, out, db)
        }
        Command::Gate {
            phase,
            since,
            format,
            db,
        } => gate_cmd(
            &config,
            explicit,
            &phase,
            window(since, None, None),
            format,
            db,
        ),
        Command::Prune { older_than, db } => prune(&config, explicit, older_than, db),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain()
                .any(|c| c.is::<ConfigError>() || c.is::<UsageError>())
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

/// Bad command-line input (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

fn serve(
    path: &Path,
    explicit: bool,
    ov: &Overrides,
    admin: Option<String>,
) -> anyhow::Result<ExitCode> {
    let ov = Overrides {
        admin,
        ..ov.clone()
    };
    let cfg = Config::load_or_defaults(path, explicit, &ov)?;
    // A config that parses but lacks what `serve` needs is a config error too (exit 2).
    cfg.upstreams()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = rt.block_on(async {
        let server = Server::bind_with(
            cfg,
            crate::server::Options {
                mapping_worker: None,
                overrides: ov,
            },
        )
        .await?;
        eprintln!(
            "shadowdiff: proxy on http://{}{}",
            server.proxy_addr(),
            server
                .admin_addr()
                .map(|a| format!(", admin on http://{a}"))
                .unwrap_or_default()
        );
        let summary = server.run(server::shutdown_signal()).await;
        eprintln!(
            "shadowdiff: stopped ({} exchanges written, {} dropped (queue full), {} lost (store write failed), {} abandoned)",
            summary.written, summary.dropped, summary.failed, summary.abandoned
        );
        Ok::<_, anyhow::Error>(summary.failed)
    })?;
    if failed > 0 {
        // Exchanges were lost to store errors: say so to the supervisor too.
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(requests: usize, out: &Path) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    eprintln!("shadowdiff demo: fake legacy HRIS API + fake unified API on 127.0.0.1, proxy in front, {requests} requests");
    let o = rt.block_on(crate::demo::run(requests, out, |sent, total| {
        use std::io::Write as _;
        let width = 30;
        let done = (sent * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        eprint!(
            "\r  [{}{}] {sent}/{total}",
            "#".repeat(done),
            " ".repeat(width - done)
        );
        let _ = std::io::stderr().flush();
    }))?;
    eprintln!();
    println!("{}", report::render::markdown(&o.report));
    println!("{}", gate::text(&o.gate));
    println!("report: {}  (JSON: {})", o.html.display(), o.json.display());
    println!(
        "store:  {}  (try: shadowdiff report --db {} --since 1h)",
        o.db.display(),
        o.db.display()
    );
    println!(
        "verdict: the gate {} — {}",
        if o.gate.pass {
            "passes"
        } else {
            "refuses to promote"
        },
        if o.gate.pass {
            "the candidate answers like legacy"
        } else {
            "see the differing fields and the accounts that need re-auth above"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
    let (legacy, candidate) = cfg.upstreams()?;
    println!("{}: ok", path.display());
    println!(
        "proxy      {}  (drain {})",
        cfg.proxy.listen,
        humantime::format_duration(cfg.proxy.drain_timeout)
    );
    println!(
        "admin      {}",
        cfg.admin.listen.as_deref().unwrap_or("(disabled)")
    );
    println!(
        "legacy     {legacy}  timeout {}",
        humantime::format_duration(cfg.legacy.timeout)
    );
    let set: Vec<&str> = cfg
        .candidate
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let fwd: Vec<&str> = cfg
        .candidate
        .forward_headers
        .iter()
        .map(http::HeaderName::as_str)
        .collect();
    println!(
        "candidate  {candidate}  timeout {}  sets [{}]  forwards [{}]",
        humantime::format_duration(cfg.candidate.timeout),
        set.join(", "),
        fwd.join(", ")
    );
    if let Some(a) = &cfg.accounts {
        println!("accounts   {:?}  ({} accounts)", a.source, a.len());
    }
    let s = &cfg.shadow;
    println!(
        "shadow     sample_rate {}  max_in_flight {}  max_rps {}  max_body {} B  unmatched {:?}  backoff_on_429 {}  threads {}  priority {:?}",
        s.sample_rate, s.max_in_flight, s.max_rps, s.max_body, s.unmatched, s.backoff_on_429, s.threads, s.priority
    );
    println!(
        "store      {}  retention {}  bodies {:?}",
        cfg.store.path.display(),
        humantime::format_duration(cfg.store.retention),
        cfg.store.bodies
    );
    println!("routes ({}):", cfg.routes.len());
    for r in &cfg.routes {
        let method = r.method.as_ref().map_or("*", http::Method::as_str);
        let mirror = match r.mirror {
            Some(true) => "mirror",
            Some(false) => "no mirror",
            None => "mirror GET/HEAD",
        };
        let cm = r
            .candidate
            .method
            .as_ref()
            .map_or("(same method)", http::Method::as_str);
        let cp = r
            .candidate
            .path
            .as_ref()
            .map_or("(same path)", |t| t.as_str());
        let q = match &r.candidate.query {
            None => "(caller's query)".to_owned(),
            Some(q) => q
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str()))
                .collect::<Vec<_>>()
                .join("&"),
        };
        println!(
            "  {:<16} {method} {}  [{mirror}]  -> {cm} {cp} ? {q}",
            r.name,
            r.path.as_str()
        );
        print_rules("    ", &r.rules);
        print_mappings("    ", &r.mappings);
    }
    println!(
        "unmatched requests: {:?}; global rules:",
        cfg.shadow.unmatched
    );
    print_rules("    ", &cfg.diff.rules);
    Ok(ExitCode::SUCCESS)
}

fn print_mappings(indent: &str, m: &crate::mapping::RouteMappings) {
    if let Some(c) = &m.candidate {
        println!("{indent}candidate mapping: {}", c.describe());
    }
    for (account, c) in &m.accounts {
        println!("{indent}  for account {account}: {}", c.describe());
    }
    if let Some(c) = &m.legacy {
        println!("{indent}legacy mapping: {}", c.describe());
    }
}

fn print_rules(indent: &str, r: &diff::Rules) {
    let globs = |s: &diff::GlobSet| {
        s.iter()
            .map(diff::Glob::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys: Vec<String> = r
        .array_keys
        .iter()
        .map(|(g, k)| format!("{}={k}", g.as_str()))
        .collect();
    println!(
        "{indent}ignore [{}]  array_keys [{}]  unordered [{}]  number_tolerance {}  null_equals_missing {}  auto_keys {}",
        globs(&r.ignore),
        keys.join(", "),
        globs(&r.unordered),
        r.number_tolerance,
        r.null_equals_missing,
        r.auto_keys
    );
}

fn config_or_defaults(path: &Path, explicit: bool) -> anyhow::Result<Config> {
    if explicit || path.exists() {
        Ok(Config::load(path)?)
    } else {
        Ok(Config::defaults())
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    diff::parse_json(&bytes)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())).into())
}

fn diff_files(
    config: &Path,
    explicit: bool,
    (legacy, candidate): (&Path, &Path),
    (route, account): (Option<&str>, Option<&str>),
    format: DiffFormat,
    (window, db): ((SystemTime, SystemTime), Option<PathBuf>),
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let rules = cfg.rules_for(route).ok_or_else(|| {
        UsageError(format!(
            "no route named {:?} in {}",
            route.unwrap_or(""),
            config.display()
        ))
    })?;
    let (mut l, mut c) = (read_json(legacy)?, read_json(candidate)?);
    // The route's mappings, as the proxy applies them.
    if let Some(r) = route.and_then(|name| cfg.routes.iter().find(|r| r.name == name)) {
        let runner = crate::mapping::runner::Runner::for_this_binary(1)?;
        let run = |chain: &crate::mapping::Chain, doc: &serde_json::Value, side: &str| {
            runner
                .run(chain, doc, cfg.mappings.timeout)
                .map_err(|e| UsageError(format!("{side} mapping: {e}")))
        };
        if let Some(chain) = &r.mappings.legacy {
            l = run(chain, &l, "legacy")?;
        }
        if let Some(chain) = r.mappings.candidate_for(account) {
            c = run(chain, &c, "candidate")?;
        }
    }
    if format == DiffFormat::Patch {
        // The patch turns the normalised legacy document into the normalised candidate one.
        let (mut l, mut c) = (l, c);
        diff::normalize::apply(&mut l, &rules.normalize);
        diff::normalize::apply(&mut c, &rules.normalize);
        let ops = diff::patch::patch(&l, &c);
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(ops.clone()))?
        );
        return Ok(if ops.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let diffs = diff::diff(&l, &c, rules);
    match format {
        DiffFormat::Json => {
            let mut out = json!({ "equal": diffs.is_empty(), "differences": diffs });
            // With a route and a store: each difference's class over the window.
            let db = db.unwrap_or_else(|| cfg.store.path.clone());
            if let (Some(route), true) = (route, db.exists()) {
                let store = store::open_reader(&db)?;
                let lookup = classify::Lookup::load(&*store, route, window, (&cfg.diff).into())
                    .with_context(|| format!("reading {}", db.display()))?;
                for (d, v) in diffs.iter().zip(
                    out["differences"]
                        .as_array_mut()
                        .expect("an array")
                        .iter_mut(),
                ) {
                    v["class"] = json!(lookup.class(&d.field));
                }
                out["classification"] = json!({
                    "route": route,
                    "from": rfc3339(window.0),
                    "to": rfc3339(window.1),
                    "compared": lookup.compared,
                });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        DiffFormat::Patch => unreachable!("handled above"),
        DiffFormat::Text => {
            for d in &diffs {
                let show = |v: &Option<serde_json::Value>| {
                    v.as_ref()
                        .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
                };
                let ptr = if d.pointer.is_empty() {
                    "(root)"
                } else {
                    &d.pointer
                };
                println!(
                    "{:<12} {ptr}  {} -> {}",
                    d.kind.as_str(),
                    show(&d.legacy),
                    show(&d.candidate)
                );
            }
            println!(
                "{} difference{}",
                diffs.len(),
                if diffs.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(if diffs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn map_cmd(
    config: &Path,
    explicit: bool,
    input: &Path,
    route: &str,
    account: Option<&str>,
    legacy: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let r =
        cfg.routes.iter().find(|r| r.name == route).ok_or_else(|| {
            UsageError(format!("no route named {route:?} in {}", config.display()))
        })?;
    let chain = if legacy {
        r.mappings.legacy.as_ref()
    } else {
        r.mappings.candidate_for(account)
    };
    let Some(chain) = chain else {
        return Err(UsageError(format!(
            "route {route:?} has no {} mapping",
            if legacy { "legacy" } else { "candidate" }
        ))
        .into());
    };
    let doc = read_json(input)?;
    eprintln!("{route}: {}", chain.describe());
    let runner = crate::mapping::runner::Runner::for_this_binary(1)?;
    match runner.run(chain, &doc, cfg.mappings.timeout) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn prune(
    config: &Path,
    explicit: bool,
    older_than: Option<std::time::Duration>,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let path = db.unwrap_or(cfg.store.path);
    let age = older_than.unwrap_or(cfg.store.retention);
    let n = store::prune_file(&path, SystemTime::now() - age)
        .with_context(|| format!("pruning {}", path.display()))?;
    println!(
        "{}: deleted {n} exchange{} older than {age:?}",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// The report window: `--from`/`--to`, or the `--since` (default 24 h) before now.
fn window(
    since: Option<std::time::Duration>,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> (SystemTime, SystemTime) {
    match (from, to) {
        (Some(f), Some(t)) => (f, t),
        _ => {
            let now = SystemTime::now();
            (now - since.unwrap_or(DEFAULT_WINDOW), now)
        }
    }
}

/// The default report and gate window.
const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Opens an existing store for reading.
fn open_existing(path: &Path) -> anyhow::Result<Box<dyn store::Reader>> {
    if !path.exists() {
        return Err(UsageError(format!(
            "no store at {} (see [store] path or --db)",
            path.display()
        ))
        .into());
    }
    Ok(store::open_reader(path)?)
}

fn report_cmd(
    config: &Path,
    explicit: bool,
    filter: report::Filter,
    format: Option<ReportFormat>,
    out: Option<PathBuf>,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let store = open_existing(&db.unwrap_or(cfg.store.path.clone()))?;
    let opts = report::Options {
        details: true,
        classes: (&cfg.diff).into(),
    };
    let r = report::build_with(&*store, &filter, opts)?;
    let format = format.unwrap_or_else(|| {
        match out
            .as_ref()
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
        {
            Some("html" | "htm") => ReportFormat::Html,
            Some("json") => ReportFormat::Json,
            _ => ReportFormat::Md,
        }
    });
    let text = match format {
        ReportFormat::Json => report::render::json(&r),
        ReportFormat::Md => report::render::markdown(&r),
        ReportFormat::Html => report::render::html(&r),
    };
    match out {
        Some(p) => {
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "{}: parity {:.2}% over {} compared exchanges",
                p.display(),
                r.totals.parity * 100.0,
                r.totals.compared
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn gate_cmd(
    config: &Path,
    explicit: bool,
    phase: &str,
    (from, to): (SystemTime, SystemTime),
    format: GateFormat,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let Some(gate) = cfg.gates.get(phase) else {
        let known: Vec<&str> = cfg.gates.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "unknown phase {phase:?}: {} has no [gate.{phase}] (configured: {})",
            config.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let store = open_existing(&db.unwrap_or(cfg.store.path.clone()))?;
    let filter = report::Filter {
        from,
        to,
        route: None,
        account: None,
        mapping_version: None,
    };
    let v = gate::evaluate_with(&*store, phase, gate, &filter, (&cfg.diff).into())?;
    match format {
        GateFormat::Text => print!("{}", gate::text(&v)),
        GateFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(if v.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
