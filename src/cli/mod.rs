//! The command line: the clap types, and one thin function per command (in the files beside
//! this one) that calls into the library:
//! `serve`, `demo`, `check`, `map`, `diff`, `rediff`, `suggest`, `report`, `gate`, `rollout`, `prune` (and the hidden
//! `mapping-worker`, the process the proxy runs mappings in).
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
use crate::shadow::compare::Maps;
use crate::store;

/// Prints a line on stdout. A reader that went away (`shadowdiff check | head -1`) ends the
/// command quietly with success, as Unix tools do, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*), true) };
}

/// [`outln`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*), false) };
}

/// Prints a line on stderr; a stderr that went away is ignored (the command goes on).
macro_rules! errln {
    () => { $crate::cli::write_err(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::write_err(format_args!($($arg)*), true) };
}

/// [`errln`] without the newline (progress bars).
macro_rules! err {
    ($($arg:tt)*) => { $crate::cli::write_err(format_args!($($arg)*), false) };
}

/// The stdout side of [`outln`]: a broken pipe exits 0; another write error (a full disk behind
/// a redirect) is said on stderr and exits 3.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "error: writing to stdout: {e}");
        std::process::exit(3);
    }
}

/// The stderr side of [`errln`] and [`err`].
pub(crate) fn write_err(args: std::fmt::Arguments<'_>, newline: bool) {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    write_err_always(args, newline);
}

/// `--quiet`: [`errln`] prints nothing (errors go through [`write_err_always`]).
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes on stderr whatever `--quiet` says (the final error line).
pub(crate) fn write_err_always(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| {
        if newline {
            err.write_all(b"\n")
        } else {
            Ok(())
        }
    });
}

mod check;
mod man;
mod mapping_loop;
mod offline;
mod replay_cmd;
mod rollout_cmd;
mod serve;
mod store_cmds;
mod triage_cmd;

use check::check;
use offline::{diff_exchange, diff_files, map_cmd};
use serve::{demo, demo_upstreams, serve};
use store_cmds::{gate_cmd, migrate, prune, report_cmd};

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
    /// Nothing on stderr but errors (no progress, notes, warnings or info logs), whatever
    /// RUST_LOG says; stdout and the exit code are the same.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
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
        /// SQLite file, or a postgres:// URL (overrides [store] path / url).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Admin listen address (overrides [admin] listen; "" disables it).
        #[arg(long)]
        admin: Option<String>,
        /// A header set on every candidate request, "NAME: VALUE" (its credential; added to
        /// [candidate] headers, repeatable). From the environment, keeps the secret out of `ps`.
        #[arg(
            long = "candidate-header",
            value_name = "NAME: VALUE",
            env = "SHADOWDIFF_CANDIDATE_HEADER"
        )]
        candidate_header: Vec<String>,
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
        /// After the tour, keep the proxy, its admin listener (the dashboard) and the fake vendors
        /// up on the demo's store until SIGINT/SIGTERM; the dashboard's address is printed.
        #[arg(long, conflicts_with_all = ["upstreams_only", "config_only"])]
        serve: bool,
        /// Only serve the two fake vendors, until SIGINT/SIGTERM: for proxies started apart
        /// (a local fleet, deploy/compose.yaml).
        #[arg(long, conflicts_with_all = ["requests", "config_only"])]
        upstreams_only: bool,
        /// With --upstreams-only: the fake legacy API's listen address.
        #[arg(long, default_value = "127.0.0.1:9001", requires = "upstreams_only")]
        legacy_listen: String,
        /// With --upstreams-only: the fake candidate API's listen address.
        #[arg(long, default_value = "127.0.0.1:9002", requires = "upstreams_only")]
        candidate_listen: String,
        /// Only write the demo's config, accounts file and mappings to OUT/demo/ (for fake
        /// vendors at --legacy-url and --candidate-url), then exit.
        #[arg(long, conflicts_with = "requests")]
        config_only: bool,
        /// With --config-only: the fake legacy API's base URL.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9001",
            requires = "config_only"
        )]
        legacy_url: String,
        /// With --config-only: the fake candidate API's base URL.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9002",
            requires = "config_only"
        )]
        candidate_url: String,
    },
    /// Validate the config, compile every rule and mapping, print the resolved routes.
    Check {
        /// Legacy base URL (overrides [legacy] base_url), as `serve --legacy` gives it.
        #[arg(long)]
        legacy: Option<String>,
        /// Candidate base URL (overrides [candidate] base_url), as `serve --candidate` gives it.
        #[arg(long)]
        candidate: Option<String>,
    },
    /// Apply a route's candidate mapping chain to a file and print the result.
    Map {
        /// The candidate's JSON document, as it came (the chain is applied to it).
        input: PathBuf,
        /// The route whose mapping chain to apply.
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
        /// Legacy's JSON document.
        #[arg(required_unless_present = "exchange")]
        legacy: Option<PathBuf>,
        /// The candidate's JSON document (as the mapping would give it: no mapping is applied
        /// without --route).
        #[arg(required_unless_present = "exchange")]
        candidate: Option<PathBuf>,
        /// Instead of two files: every difference of this recorded exchange, recomputed from its
        /// kept bodies with its route's rules (the store keeps the first few per field pattern).
        #[arg(long, conflicts_with_all = ["legacy", "candidate", "route", "account", "since"])]
        exchange: Option<i64>,
        /// Use this route's rules (default: the global [diff] rules).
        #[arg(long)]
        route: Option<String>,
        /// text: one line per difference; json: the differences as objects; patch: an RFC 6902
        /// JSON Patch from legacy to candidate.
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
    /// Parity report over a time window.
    Report {
        /// Window length ending now (or at --to), e.g. 24h [default: 24h].
        #[arg(long, value_parser = config::parse_duration, conflicts_with = "from")]
        since: Option<std::time::Duration>,
        /// Window start (RFC 3339, a date = midnight UTC, or now); the window ends at --to, else now.
        #[arg(long, value_parser = parse_time)]
        from: Option<SystemTime>,
        /// Window end, exclusive (RFC 3339, a date, or now) [default: now].
        #[arg(long, value_parser = parse_time)]
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
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Check the thresholds of [gate.PHASE]: exit 0 pass, 1 fail.
    Gate {
        /// The [gate.PHASE] table to check.
        #[arg(long)]
        phase: String,
        /// Window ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Delete exchanges older than the retention.
    Prune {
        /// Age limit (default: [store] retention), e.g. 30d.
        #[arg(long, value_parser = config::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// SQLite file, or a postgres:// URL (overrides [store] path / url).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Mark a difference pattern (accepted with a reason and a ticket, vendor_bug,
    /// fix_in_progress), clear a mark, or list the marks and their audit trail. Reports and the
    /// dashboard show the marks; a gate with `accepted = "exclude"` counts exchanges that differ
    /// only at accepted patterns as matching until the mark expires.
    Triage {
        #[command(subcommand)]
        action: TriageAction,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
    },
    /// The rollout phase: status, set (a rollback: `rollout set rollback`), promote on the gate.
    /// Works on the store; every running instance follows it within [rollout] follow.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
    },
    /// Judge recorded traffic again with the current (or a proposed) mapping chain and diff
    /// rules: the parity per route and field it would have had, next to what was recorded, and
    /// the exchanges that changed verdict. Nothing live is called; the store is only written
    /// with --record. Exit 0, or 1 when an exchange that matched does not any more.
    Rediff {
        /// Window ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// A folder of proposed mappings: DIR/<route>.jsonata (or .jq) replaces that route's
        /// base mapping; environment and account overrides stay on top. Without it, the
        /// mappings the config names, as they are on disk now.
        #[arg(long)]
        mappings: Option<PathBuf>,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// Keep the result in the store as a new mapping version (table rediffs; reports list it).
        #[arg(long)]
        record: bool,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Send the kept exchanges' requests again to a candidate (today's, or a build at
    /// --candidate URL), translated as live ones are and under the same budgets; compare each
    /// answer with the recorded legacy document under today's mappings and rules, and print
    /// the parity per route next to what was recorded, with the exchanges that changed
    /// verdict. Legacy is never called; writes are never sent. Exit 0, or 1 when an exchange
    /// that matched does not any more.
    Replay {
        /// Window ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration, conflicts_with = "set")]
        since: Option<std::time::Duration>,
        /// Only this route.
        #[arg(long, conflicts_with = "set")]
        route: Option<String>,
        /// The candidate's base URL (a staging build) [default: [candidate] base_url].
        #[arg(long)]
        candidate: Option<String>,
        /// Which exchanges: all (up to --limit), or per-pattern (per route, one exchange per
        /// recorded difference pattern and one that matched).
        #[arg(long, value_enum, default_value_t = PickArg::All, conflicts_with = "set")]
        pick: PickArg,
        /// Exchanges replayed at most.
        #[arg(long, default_value_t = 1000, conflicts_with = "set")]
        limit: usize,
        /// Keep the chosen exchanges as a named set in the store (a regression suite).
        #[arg(long)]
        save: Option<String>,
        /// Replay a saved set instead of a window.
        #[arg(long)]
        set: Option<String>,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// Keep the result in the store (table rediffs, source "replay to URL"; reports list it).
        #[arg(long)]
        record: bool,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Propose a mapping change for each systematic difference of a route, from its kept
    /// exchanges (renamed or moved fields, case, numbers as strings, value translations, fields
    /// the candidate never has); each change is checked by re-diffing with it.
    Suggest {
        /// The route whose mapping to change.
        #[arg(long)]
        route: String,
        /// Window ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// Write the route's mapping with every checked change to DIR/<route>.jsonata (or .jq),
        /// ready for `rediff --mappings DIR`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Kept exchanges read at most (the oldest of the window first).
        #[arg(long, default_value_t = 2000)]
        limit: usize,
        /// SQLite file, or a postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Webhook endpoints ([[webhooks]]).
    Webhook {
        #[command(subcommand)]
        action: WebhookAction,
    },
    /// Print a shell completion script (e.g. `shadowdiff completions bash > /etc/bash_completion.d/shadowdiff`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions
    /// (`shadowdiff man > /usr/local/share/man/man1/shadowdiff.1`).
    Man,
    /// Print the config file's JSON Schema, generated from the config types (editors validate
    /// and complete configs with it; `config/shadowdiff.schema.json` is this output).
    Schema,
    /// Ask a running instance's admin listener whether it is up: GET the URL, exit 0 on a 2xx,
    /// 1 on another status, 3 when nothing answers within 2 s (a container HEALTHCHECK: the
    /// image has no shell or curl).
    Probe {
        /// The URL to GET (plain http).
        #[arg(default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
    /// Bring a store's schema up to this version (serve does it on start). Several processes
    /// may run it at once: one migrates, the others find nothing left to do.
    Migrate {
        /// SQLite file or postgres:// URL (overrides [store] path).
        #[arg(long)]
        db: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Send one signed `webhook.test` event to the endpoint now and print its answer: exit 0 on
    /// a 2xx, 1 otherwise.
    Test {
        /// The endpoint's `name` in [[webhooks]].
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// The phase in force (the store's latest change, else the config's) and the changes.
    Status {
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
    },
    /// Put a phase in force now (recorded with who and why).
    Set {
        /// A phase of [rollout] (built in: shadow, canary, ramp, ga, rollback).
        phase: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        /// Who, for the record [default: $USER].
        #[arg(long)]
        actor: Option<String>,
    },
    /// Move to the next phase of [rollout] order when the gate of the phase in force passes
    /// over the window: exit 0 promoted, 1 refused (the failing criteria are printed).
    Promote {
        /// Window of the gate, ending now [default: 24h].
        #[arg(long, value_parser = config::parse_duration)]
        since: Option<std::time::Duration>,
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// Who, for the record [default: $USER].
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriageAction {
    /// Mark a pattern (a mark on the same route, field and kind is replaced; both stay in the
    /// audit trail).
    Mark(TriageMark),
    /// Remove a pattern's mark (recorded in the audit trail).
    Clear {
        /// The route (`(unmatched)` for requests that matched none).
        #[arg(long)]
        route: String,
        /// The field pattern, as reports print it (`/individuals/*/status`).
        #[arg(long)]
        field: String,
        /// The kind the mark was for [default: the mark for every kind].
        #[arg(long)]
        kind: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        /// Who, for the record [default: $USER].
        #[arg(long)]
        by: Option<String>,
    },
    /// The marks (expired ones said so) and the audit trail's latest lines.
    List {
        /// text for people, json for programs.
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
        /// Audit trail lines shown.
        #[arg(long, default_value_t = 20)]
        log: usize,
    },
}

/// `triage mark`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TriageMark {
    /// The route (`(unmatched)` for requests that matched none).
    #[arg(long)]
    pub route: String,
    /// The field pattern, as reports print it (`/individuals/*/status`).
    #[arg(long)]
    pub field: String,
    /// One kind (changed, missing, extra, type_changed, unpaired_id) [default: every kind].
    #[arg(long)]
    pub kind: Option<String>,
    /// accepted (needs --reason), vendor_bug or fix_in_progress.
    #[arg(long)]
    pub status: String,
    /// Why (needed for accepted).
    #[arg(long)]
    pub reason: Option<String>,
    /// The ticket that tracks it.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Until when: a duration from now (30d) or a time (2027-01-31, RFC 3339) [default: until
    /// cleared].
    #[arg(long)]
    pub expires: Option<String>,
    /// Who, for the record [default: $USER].
    #[arg(long)]
    pub by: Option<String>,
}

/// `replay --pick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PickArg {
    All,
    PerPattern,
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

/// Parses `--from`/`--to`: RFC 3339 (`2026-11-28T06:00:00Z`), a date (midnight UTC) or `now`.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    if s == "now" {
        return Ok(SystemTime::now());
    }
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
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
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
            candidate_header,
        } => {
            let ov = Overrides {
                listen,
                legacy,
                candidate,
                db,
                admin: None,
                candidate_headers: candidate_header,
            };
            serve(&config, explicit, &ov, admin)
        }
        Command::Check { legacy, candidate } => check(
            &config,
            &crate::config::Overrides {
                legacy,
                candidate,
                ..Default::default()
            },
        ),
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
        Command::Demo {
            upstreams_only: true,
            legacy_listen,
            candidate_listen,
            ..
        } => demo_upstreams(&legacy_listen, &candidate_listen),
        Command::Demo {
            config_only: true,
            out,
            legacy_url,
            candidate_url,
            ..
        } => crate::demo::write_workspace(&out, &legacy_url, &candidate_url).map(|path| {
            outln!("{}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Demo {
            requests,
            out,
            serve,
            ..
        } => demo(requests, &out, serve),
        Command::Diff {
            exchange: Some(id),
            format,
            db,
            ..
        } => diff_exchange(&config, explicit, id, format, db),
        Command::Diff {
            legacy: Some(legacy),
            candidate: Some(candidate),
            route,
            account,
            format,
            since,
            db,
            exchange: None,
        } => diff_files(
            &config,
            explicit,
            (&legacy, &candidate),
            (route.as_deref(), account.as_deref()),
            format,
            (window(since, None, None), db),
        ),
        Command::Diff { .. } => Err(UsageError(
            "diff needs two files (LEGACY CANDIDATE) or --exchange ID".into(),
        )
        .into()),
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
            if window.0 > window.1 {
                Err(UsageError(format!(
                    "report: the window starts ({}) after it ends ({}): --from must be before --to",
                    rfc3339(window.0),
                    rfc3339(window.1)
                ))
                .into())
            } else {
                report_cmd(&config, explicit, &filter, format, out, db)
            }
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
        Command::Rediff {
            since,
            route,
            mappings,
            format,
            record,
            db,
        } => mapping_loop::rediff_cmd(
            &config,
            explicit,
            mapping_loop::RediffArgs {
                since,
                route,
                mappings,
                format,
                record,
                db,
            },
        ),
        Command::Replay {
            since,
            route,
            candidate,
            pick,
            limit,
            save,
            set,
            format,
            record,
            db,
        } => replay_cmd::replay_cmd(
            &config,
            explicit,
            replay_cmd::ReplayArgs {
                since,
                route,
                candidate,
                pick: match pick {
                    PickArg::All => crate::replay::Pick::All,
                    PickArg::PerPattern => crate::replay::Pick::PerPattern,
                },
                limit,
                save,
                set,
                format,
                record,
                db,
            },
        ),
        Command::Suggest {
            route,
            since,
            format,
            out,
            limit,
            db,
        } => mapping_loop::suggest_cmd(
            &config,
            explicit,
            mapping_loop::SuggestArgs {
                route,
                since,
                format,
                out,
                limit,
                db,
            },
        ),
        Command::Webhook {
            action: WebhookAction::Test { name },
        } => store_cmds::webhook_test(&config, explicit, &name),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "shadowdiff", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { url } => probe(&url),
        Command::Schema => {
            out!("{}", crate::config::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => man::page()
            .map(|page| {
                out!("{page}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Command::Prune { older_than, db } => prune(&config, explicit, older_than, db),
        Command::Migrate { db } => migrate(&config, explicit, db.as_deref()),
        Command::Triage { action, db } => match action {
            TriageAction::Mark(what) => triage_cmd::mark(&config, explicit, db, what),
            TriageAction::Clear {
                route,
                field,
                kind,
                reason,
                by,
            } => triage_cmd::clear(&config, explicit, db, (route, field, kind, reason, by)),
            TriageAction::List { format, log } => {
                triage_cmd::list(&config, explicit, db, (format, log))
            }
        },
        Command::Rollout { action, db } => match action {
            RolloutAction::Status { format } => rollout_cmd::status(&config, explicit, db, format),
            RolloutAction::Set {
                phase,
                reason,
                actor,
            } => rollout_cmd::set(&config, explicit, db, &phase, (reason, actor)),
            RolloutAction::Promote {
                since,
                format,
                actor,
            } => rollout_cmd::promote(&config, explicit, db, since, format, actor),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote config lines and URLs: never with their passwords.
            let shown = crate::mask::text(&format!("{e:#}"));
            write_err_always(format_args!("error: {shown}"), true);
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

/// The config for a command that calls neither vendor ([`Config::load_reading`]: an unset
/// vendor credential is no error), or the defaults when there is no file.
fn config_or_defaults(path: &Path, explicit: bool) -> anyhow::Result<Config> {
    if explicit || path.exists() {
        Ok(Config::load_reading(path)?)
    } else {
        Ok(Config::defaults())
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    // A file that cannot be read is bad input (exit 2), as one that is not JSON.
    let bytes =
        std::fs::read(path).map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
    diff::parse_json(&bytes)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())).into())
}

/// The report window: `--from`/`--to`, or the `--since` (default 24 h) before now.
fn window(
    since: Option<std::time::Duration>,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> (SystemTime, SystemTime) {
    // `SystemTime` can hold times before 1970, which the store's time format cannot write.
    let to = to.unwrap_or_else(SystemTime::now);
    let from = from.unwrap_or_else(|| {
        to.checked_sub(since.unwrap_or(DEFAULT_WINDOW))
            .filter(|t| *t >= SystemTime::UNIX_EPOCH)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    (from, to)
}

/// `shadowdiff probe URL`: one GET within 2 s.
fn probe(url: &str) -> anyhow::Result<ExitCode> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| UsageError(format!("probe: {url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(UsageError(format!(
            "probe: {url:?}: only http:// (probe the plain admin listener)"
        ))
        .into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let got = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let res = client.get(uri).await?;
            let status = res.status();
            // A probe reads at most 64 KiB of the answer (it prints the first 512 bytes).
            let body = http_body_util::Limited::new(res.into_body(), 64 << 10)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        })
        .await
    });
    match got {
        Ok(Ok((status, body))) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            outln!("{} {}", status.as_u16(), text.trim());
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("probe {}: {e:#}", crate::mask::url(url))),
        Err(_) => Err(anyhow::anyhow!(
            "probe {}: no answer within 2s",
            crate::mask::url(url)
        )),
    }
}

/// The default report and gate window.
const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Opens an existing store for reading.
/// The store a command reads: `--db` when given, else the config's (`[store] url` before
/// `path`). A PostgreSQL URL travels as a path and is parsed back by the store.
/// The store a command reads: `--db` (a path or a URL) or the config's; a PostgreSQL URL takes
/// `[store] ca_file` along either way.
fn store_location(db: Option<PathBuf>, cfg: &Config) -> store::Location {
    match db.map(|d| store::Location::parse(&d.to_string_lossy())) {
        Some(store::Location::Postgres(url)) => {
            store::Location::Postgres(url.with_ca_file(cfg.store.ca_file.clone()))
        }
        Some(file) => file,
        None => cfg.store.location(),
    }
}

fn open_existing(location: &store::Location) -> anyhow::Result<Box<dyn store::Reader>> {
    require_store(location)?;
    Ok(store::open_reader_at(location)?)
}

/// A command that reads or trims a store refuses a store file that does not exist (exit 2)
/// rather than create an empty one.
fn require_store(location: &store::Location) -> anyhow::Result<()> {
    match location {
        store::Location::Sqlite(path) if !path.exists() => Err(UsageError(format!(
            "no store at {} (see [store] path or --db)",
            path.display()
        ))
        .into()),
        _ => Ok(()),
    }
}
