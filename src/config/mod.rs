//! Configuration: the TOML file (docs/configuration.md) turned into plain, validated structs.
//!
//! Parsing happens once, at start-up. Every string goes through `${VAR}` / `${VAR:-default}`
//! expansion; durations, sizes, globs, templates and header names are checked while the file is
//! read, so an error names the file, the line and the key. Unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use serde::Deserialize;

use crate::background::Priority;
use crate::diff::{Glob, GlobSet, Rules};
use crate::translate::{Accounts, CandidateTemplate, PathPattern};

mod lint;
mod raw;
mod resolve;
mod show;
mod values;

pub use lint::placeholder_warnings;
pub use values::*;
/// The default of every key that has one (docs/configuration.md lists them with the keys).
pub mod defaults {
    use std::time::Duration;

    pub const PROXY_LISTEN: &str = "127.0.0.1:8080";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// `[legacy] timeout` and `[candidate] timeout`.
    pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
    pub const LEGACY_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const FORWARD_HEADERS: &[&str] = &["accept", "accept-language", "user-agent"];
    pub const SAMPLE_RATE: f64 = 1.0;
    pub const MAX_IN_FLIGHT: usize = 512;
    /// 0: no limit.
    pub const MAX_RPS: f64 = 0.0;
    pub const MAX_BODY: usize = 10 << 20;
    pub const SHADOW_THREADS: usize = 1;
    pub const COMPARED_HEADERS: &[&str] = &["content-type"];
    pub const STORE_PATH: &str = "shadowdiff.db";
    pub const RETENTION: Duration = Duration::from_secs(30 * 86400);
    pub const BODIES: super::Bodies = super::Bodies::OnDiff;
    pub const REDACT_HEADERS: &[&str] = &["authorization", "cookie", "set-cookie", "x-api-key"];
    pub const STORE_QUEUE: usize = 10_000;
    pub const MAX_VALUE_LEN: usize = 1024;
    pub const EXAMPLES_PER_FIELD: usize = 3;
    pub const EXCHANGES: crate::store::Rows = crate::store::Rows::Sampled;
    pub const ROWS_PER_HOUR: u64 = 100;
    pub const BODY_EXAMPLES: usize = 3;
    pub const BODY_SAMPLE: f64 = 0.001;
    pub const MATCH_SAMPLE: f64 = 0.02;
    pub const REAUTH_AFTER: u64 = 3;
    pub const BODY_BUDGET: usize = 64 << 20;
    pub const MAPPINGS_DIR: &str = "mappings";
    pub const MAPPING_TIMEOUT: Duration = Duration::from_secs(1);
    pub const MAPPING_WORKERS: usize = 2;
    /// `[[routes]] serve_deadline`.
    pub const SERVE_DEADLINE: Duration = Duration::from_secs(5);

    /// `[shadow] max_bytes_in_flight`: 256 MiB, and at least room for one comparison of
    /// `max_body`.
    pub fn max_bytes_in_flight(max_body: usize) -> usize {
        (256usize << 20).max(max_body.saturating_mul(crate::budget::COMPARE_COST))
    }
}

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/shadowdiff.toml";

/// A configuration that cannot be used. The message names the file, key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// (The error is not a `source`: its text is shown once, in this message.)
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// What a candidate 429 pauses (`[shadow] rate_limit_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// The request's account only (every account when none is known).
    #[default]
    Account,
    /// Every account: the vendor's limit is one for the whole integration.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    Mirror,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bodies {
    Never,
    OnDiff,
    /// `on_diff`, and a share of the matching exchanges too (`[store] match_sample`): the
    /// traffic `rediff` checks a fix against, to see that it breaks nothing that matched.
    Sampled,
    Always,
}

impl Bodies {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnDiff => "on_diff",
            Self::Sampled => "sampled",
            Self::Always => "always",
        }
    }
}

/// Caller query parameters the candidate gets by default (routes without a `query` template,
/// unmatched requests): pagination, sorting and filtering, the parameters that make the two
/// answers comparable. Credentials (`api_key`, `token`, `signature`, ...) are never on it.
pub const DEFAULT_FORWARD_QUERY: &[&str] = &[
    "page",
    "page_size",
    "per_page",
    "limit",
    "offset",
    "cursor",
    "after",
    "before",
    "sort",
    "order",
    "fields",
    "include",
    "expand",
    "filter",
    "q",
    "since",
    "until",
    "updated_since",
    "start_date",
    "end_date",
];

/// The config file's JSON Schema, generated from the types serde reads it into (so it cannot
/// drift from what `check` accepts): `shadowdiff schema`, committed as
/// `config/shadowdiff.schema.json` and named by the example configs' `#:schema` line.
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(raw::RawConfig);
    schema.insert("title".into(), "shadowdiff configuration".into());
    schema.insert(
        "description".into(),
        "shadowdiff's TOML config (docs/configuration.md). Every key is optional; `shadowdiff check` prints the resolved values.".into(),
    );
    let mut v = schema.to_value();
    no_null(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// TOML has no null: an optional key is one that may be left out, not one that may be null.
/// Removes the `null` alternative schemars gives an `Option`.
fn no_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(m) = v {
        if m.get("default").is_some_and(Value::is_null) {
            m.remove("default");
        }
        if let Some(Value::Array(types)) = m.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let t = types.remove(0);
                m.insert("type".into(), t);
            }
        }
        if let Some(Value::Array(any)) = m.get_mut("anyOf") {
            any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
            if any.len() == 1 {
                let only = any.remove(0);
                m.remove("anyOf");
                if let Value::Object(o) = only {
                    m.extend(o);
                }
            }
        }
        m.values_mut().for_each(no_null);
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(no_null);
    }
}

/// Criteria to leave a rollout phase (`[gate.NAME]`); evaluated by the `gate` command.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    pub min_compared: Option<u64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_parity: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_candidate_error_rate: Option<f64>,
    pub max_auth_error_accounts: Option<u64>,
    #[schemars(range(min = 0.0))]
    pub max_latency_ratio: Option<f64>,
    /// Every field pattern compared in the window was present in at least this many compared
    /// exchanges (field coverage): a rarely used field cannot slip through a canary.
    pub min_field_samples: Option<u64>,
    /// Every (account, kind) of the id crosswalk has at least this share of its ids paired
    /// (`[ids]`): a rollout does not start while most ids could not be translated.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_paired_ids: Option<f64>,
    /// Of the Wilson intervals `min_parity` and `max_candidate_error_rate` are judged on
    /// (default 0.95: parity passes when the interval's lower bound reaches the threshold, an
    /// error rate when its upper bound stays under it); `0` judges the measured ratio itself.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// How `min_parity` counts the exchanges whose every difference is at a pattern triaged
    /// `accepted` and not expired (`shadowdiff triage`): `count` them as differing (the
    /// default), or `exclude` them (counted as matching until the mark expires). The verdict
    /// says which, and how many.
    pub accepted: Option<Accepted>,
    pub routes: BTreeMap<String, GateConfig>,
}

/// [`GateConfig::accepted`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accepted {
    #[default]
    Count,
    Exclude,
}

impl GateConfig {
    /// The default confidence of the gate's intervals.
    pub const CONFIDENCE: f64 = 0.95;
}

/// The events an endpoint may subscribe to.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "account.needs_reauth",
    "account.recovered",
    "rollout.changed",
    "gate.failed",
    "webhook.test",
];

/// One `[[webhooks]]` entry (delivered by the `webhook` module).
#[derive(Clone)]
pub struct Webhook {
    pub name: String,
    pub url: http::Uri,
    pub events: Vec<String>,
    pub secret: String,
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles it.
    pub retry_base: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------------------ resolved

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub legacy: UpstreamConfig,
    pub candidate: UpstreamConfig,
    pub accounts: Option<Accounts>,
    pub shadow: ShadowConfig,
    pub diff: DiffConfig,
    pub store: StoreConfig,
    pub routes: Vec<Route>,
    pub gates: BTreeMap<String, GateConfig>,
    pub mappings: crate::mapping::MappingsConfig,
    pub rollout: crate::rollout::RolloutConfig,
    /// `[accounts] reauth_after`: candidate 401/403 in a row (legacy succeeding) that put an
    /// account in `needs_reauth`.
    pub reauth_after: u64,
    /// `[[webhooks]]`: where events are delivered.
    pub webhooks: Vec<Webhook>,
    /// `[ids.KIND]`: the id crosswalk's kinds.
    pub ids: Vec<crate::ids::KindSpec>,
    /// What is valid but likely a mistake (a credential left at a `${VAR:-default}`
    /// placeholder): `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: String,
    /// How long in-flight exchanges may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Caller connections open at once at most; past it the listener stops accepting (the
    /// kernel's backlog holds the rest) until one closes.
    pub max_connections: usize,
    /// Whether the config set `max_connections` (a default lowered to fit the open-files limit
    /// is said at info level, a value the operator chose at warn).
    pub max_connections_set: bool,
    /// Longest wait for a complete request head, from the moment the connection (or, on a
    /// kept-alive HTTP/1.1 connection, the previous response) is done.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// `tls_cert` and `tls_key`: the listener serves TLS.
    pub tls: Option<TlsFiles>,
}

/// A listener's certificate chain and key (PEM files, read again on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What marks the warning of a listener serving plaintext beyond loopback.
const PLAINTEXT: &str = "serves plaintext beyond loopback";

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` disables the admin listener (`listen = ""`).
    pub listen: Option<String>,
    pub token: Option<String>,
    /// Whether `/metrics` needs the token too (`[admin] metrics_token = false`: a scraper
    /// without the secret may read it; it reveals counts, never bodies).
    pub metrics_token: bool,
    /// `[admin] hosts`: other `host:port` names it answers to (lower case).
    pub hosts: Vec<String>,
    /// `tls_cert` and `tls_key`: the admin listener serves TLS.
    pub tls: Option<TlsFiles>,
}

impl AdminConfig {
    /// Why this admin listener may not start: a non-loopback address without a token (anyone
    /// who reaches it could change the rollout). `key` names where the address came from.
    pub fn exposure(&self, key: &str) -> Option<String> {
        let listen = self.listen.as_deref()?;
        if self.token.is_some() || is_loopback(listen) {
            return None;
        }
        Some(format!(
            "{key}: {listen:?} is reachable from other hosts and [admin] token is not set: anyone \
             reaching it could change the rollout phase; set [admin] token (e.g. \
             \"${{SHADOWDIFF_ADMIN_TOKEN}}\"), or listen on 127.0.0.1"
        ))
    }
}

/// The TOML table a byte offset of `text` is in (`candidate.headers`, `webhooks`; `""` before
/// the first header).
fn table_at(text: &str, at: usize) -> String {
    text[..at]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .unwrap_or_default()
}

/// Whether a listen address (`ip:port`, `localhost:port`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost")),
    }
}

#[derive(Clone)]
pub struct UpstreamConfig {
    /// Scheme, authority and path prefix (without a trailing `/`).
    pub base_url: Option<Uri>,
    pub timeout: Duration,
    /// Longest pause between two pieces of the response body (legacy only; the candidate's
    /// `timeout` covers its whole answer).
    pub body_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Set on every request to this upstream (candidate only).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Set on every request too, from a template (`{account.COLUMN}`, `{query.NAME}`, a route's
    /// `{capture}`) rendered per request (candidate only): a per-account credential such as
    /// Merge's `X-Account-Token`.
    pub header_templates: Vec<(HeaderName, crate::translate::Template)>,
    /// Caller headers copied to this upstream (candidate only).
    pub forward_headers: Vec<HeaderName>,
    /// Caller query parameters copied to this upstream on routes without a `query` template
    /// (candidate only); others are not.
    pub forward_query: Vec<String>,
}

impl fmt::Debug for UpstreamConfig {
    // Header values are credentials: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("forward_headers", &self.forward_headers)
            .field("forward_query", &self.forward_query)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ShadowConfig {
    pub sample_rate: f64,
    pub max_in_flight: usize,
    /// Candidate calls per second; 0 = unlimited.
    pub max_rps: f64,
    pub max_body: usize,
    /// Bytes of response bodies held for comparisons at once at most (legacy copies and
    /// candidate bodies); an exchange that would go past it is `skipped` (`memory`).
    pub max_bytes_in_flight: usize,
    pub unmatched: Unmatched,
    pub backoff_on_429: bool,
    /// What a candidate 429 pauses: the account's shadow calls, or everyone's.
    pub rate_limit_scope: RateLimitScope,
    /// The share of an account's remaining quota (as the vendor's `RateLimit` headers state it)
    /// shadow calls never spend: `0` spends all of it.
    pub reserve: f64,
    /// Threads of the shadow runtime (candidate calls and comparisons).
    pub threads: usize,
    /// CPU priority of the shadow threads and the store writer.
    pub priority: Priority,
    /// `[shadow.breaker]`.
    pub breaker: crate::breaker::Settings,
}

#[derive(Debug, Clone)]
pub struct DiffConfig {
    pub rules: Rules,
    /// The global rules for answers served by the candidate ([`Rules::served`]).
    pub served_rules: Rules,
    /// What the global rules add to `mapping_version` (`None` when there are none).
    pub rules_version: Option<String>,
    /// Response headers compared besides the status code.
    pub headers: Vec<HeaderName>,
    /// A field pattern that differs in at least this share of the compared exchanges where it
    /// is present is `systematic` (a mapping gap); below, `sporadic` (data drift).
    pub systematic_rate: f64,
    pub noise: NoiseConfig,
}

/// `[diff.noise]`: noise learned from a second legacy call on a sample of mirrored safe requests.
#[derive(Debug, Clone, Copy)]
pub struct NoiseConfig {
    /// Share of mirrored GET/HEAD requests that legacy answers twice (0 = off). Spends legacy
    /// quota.
    pub secondary_sample_rate: f64,
    /// Times a field must have differed between two legacy answers to count as noise.
    pub min_count: u64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            secondary_sample_rate: 0.0,
            min_count: 2,
        }
    }
}

impl StoreConfig {
    /// Where the store is: the PostgreSQL URL when one is set, else the file.
    pub fn location(&self) -> crate::store::Location {
        match &self.url {
            Some(u) => {
                crate::store::Location::Postgres(u.clone().with_ca_file(self.ca_file.clone()))
            }
            None => crate::store::Location::Sqlite(self.path.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite file (unused when `url` is set).
    pub path: PathBuf,
    /// A PostgreSQL store (`[store] url`, or a `postgres://` `--db`): the fleet's.
    pub url: Option<crate::store::PgUrl>,
    /// The CA (PEM) that PostgreSQL's certificate must lead to (`sslmode` decides whether it is
    /// checked; see `store/postgres/connect.rs`).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: `serve` applies the migrations at start (default), or, when a deploy step
    /// runs `shadowdiff migrate`, only checks that they were applied.
    pub migrate: bool,
    pub retention: Duration,
    pub bodies: Bodies,
    pub redact_headers: Vec<HeaderName>,
    pub redact_fields: GlobSet,
    /// Exchanges waiting for the writer; beyond, they are dropped (and counted).
    pub queue: usize,
    /// Longest stored value text (diff values, body sizes are bounded by `max_body`).
    pub max_value_len: usize,
    /// Differences stored per exchange, field pattern and kind (the first ones found); the
    /// counts of all of them are kept.
    pub examples_per_field: usize,
    /// Which exchanges keep a row (the hourly roll-ups count every one): `all`, `differing`
    /// (neither `match` nor `skipped`), or `sampled` (per hour, the first [`rows_per_hour`]
    /// of each route and outcome, skip reason or difference pattern, then the 2^k-th).
    ///
    /// [`rows_per_hour`]: StoreConfig::rows_per_hour
    pub exchanges: crate::store::Rows,
    /// `exchanges = "sampled"`: rows kept per hour and kind before they thin out.
    pub rows_per_hour: u64,
    /// Kept bodies: the first exchanges per hour, route, field pattern and kind of difference
    /// (`0`: none by example).
    pub body_examples: usize,
    /// Kept bodies: the share of the other eligible exchanges kept at random.
    pub body_sample: f64,
    /// Kept bodies, `bodies = "sampled"`: the share of matching exchanges kept at random.
    pub match_sample: f64,
    /// Kept bodies: bytes per hour at most (decoded size of both bodies as received).
    pub body_budget: usize,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// `None` matches every method.
    pub method: Option<Method>,
    pub path: PathPattern,
    /// `None`: mirrored when the method is GET or HEAD, or the route is a read.
    pub mirror: Option<bool>,
    /// `read = true`: a read whose method is not GET (a POST batch read), mirrored and compared
    /// like a GET, never treated as a write.
    pub read: bool,
    /// Whether rollout phases may serve this route from the candidate (`None`: GET yes,
    /// other methods no).
    pub serve: Option<bool>,
    /// A served request falls back to legacy when the candidate has not answered by then.
    pub serve_deadline: Duration,
    /// A served route's requests of no known account.
    pub unknown_account: crate::rollout::UnknownAccount,
    /// The field patterns of the route's reference document (`reference`): what field coverage
    /// expects every window to exercise.
    pub reference: Vec<String>,
    pub candidate: CandidateTemplate,
    /// Global rules plus the route's own.
    pub rules: Rules,
    /// The rules an answer served by the candidate is judged by: exact, but for the rules
    /// declared `serve_safe` ([`Rules::served`]).
    pub served_rules: Rules,
    /// What the route's rules (`rules`, `served_rules` and the compared headers) add to
    /// `mapping_version`, so that a change of the rules alone starts a new version: `None`
    /// when they are a config's without any rule (the versions recorded before stay).
    pub rules_version: Option<String>,
    /// The ignore and normalize rules not declared `serve_safe` ([`Rules::unverified`]): in a
    /// phase without `verify`, the route's answers fall back to legacy while there are any.
    pub unverified: Vec<String>,
    /// Response mappings (compiled), with their override chains.
    pub mappings: crate::mapping::RouteMappings,
    /// `[routes.ids]`: where its documents hold ids of the `[ids]` kinds.
    pub ids: crate::ids::RouteIds,
    /// `[routes.paging]`: legacy's offset pages answered from the candidate's cursors.
    pub paging: Option<crate::paging::Spec>,
}

impl Route {
    /// Whether a request with this method is mirrored.
    pub fn mirrors(&self, method: &Method) -> bool {
        self.mirror.unwrap_or_else(|| self.read || is_safe(method))
    }

    /// Whether a rollout phase may serve a request with this method from the candidate: the
    /// route mirrors it, and serves it (GET by default; writes only with `serve = true`).
    /// HEAD is never served (a mapped body has no HEAD form), nor a route with a request mapping
    /// unless it says `serve = true` (its answer is assembled from calls the caller never made:
    /// the config then requires a response mapping and `[routes.ids]`).
    pub fn serves(&self, method: &Method) -> bool {
        method != Method::HEAD
            && (self.candidate.request.is_none() || self.serve == Some(true))
            && self.mirrors(method)
            && self.serve.unwrap_or(method == Method::GET)
    }
}

impl Config {
    /// An accounts file whose columns go into `[candidate] headers` holds the candidate's
    /// credentials (Merge's account tokens): readable by other users of the machine, it warns.
    /// `[ids]` without `[accounts]`: one crosswalk for every caller.
    pub(crate) fn ids_warnings(&self) -> Vec<String> {
        if self.ids.is_empty() || self.accounts.is_some() {
            return Vec::new();
        }
        vec!["[ids] without [accounts]: every caller shares one id crosswalk (pairs learned from one caller's traffic translate every other's ids); set [accounts] when callers are different customers".into()]
    }

    pub(crate) fn accounts_file_warnings(&self) -> Vec<String> {
        let Some(accounts) = &self.accounts else {
            return Vec::new();
        };
        let in_headers: Vec<String> = self
            .candidate
            .header_templates
            .iter()
            .flat_map(|(_, t)| t.vars())
            .filter_map(|v| match v {
                crate::translate::Var::Account(c) if c != "name" => {
                    Some(format!("{{account.{c}}}"))
                }
                _ => None,
            })
            .collect();
        if in_headers.is_empty() {
            return Vec::new();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(&accounts.file) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return vec![format!(
                        "[accounts] file: {} holds the candidate's credentials ({} in [candidate] headers) and is readable by other users (mode {mode:o}): chmod 600 it",
                        accounts.file.display(),
                        in_headers.join(", ")
                    )];
                }
            }
        }
        Vec::new()
    }

    /// What serving the candidate will do that the operator may not expect: routes whose
    /// comparison ignores or normalizes fields a served caller receives (their answers fall
    /// back in phases without `verify`), and phases where some served requests call no legacy
    /// (the accounts file is then the only authority on who may read what).
    /// A listener on a non-loopback address without TLS: callers' bearer tokens and the
    /// vendors' personal data would cross the network in plaintext.
    pub(crate) fn plaintext_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.proxy.tls.is_none() && !is_loopback(&self.proxy.listen) {
            out.push(format!(
                "[proxy] listen: {:?} {PLAINTEXT}: callers' credentials and the vendors' answers cross the network unencrypted; set [proxy] tls_cert and tls_key, or put a TLS-terminating proxy in front on the same host",
                self.proxy.listen
            ));
        }
        if let Some(t) = &self.admin.token {
            if t.trim().chars().count() < 16 {
                out.push(format!(
                    "[admin] token: {} characters; use 16 or more, random (the bearer header is never rate-limited: a short token could be guessed)",
                    t.trim().chars().count()
                ));
            }
        }
        if let Some(a) = self.admin.listen.as_deref() {
            if self.admin.tls.is_none() && !is_loopback(a) {
                out.push(format!(
                    "[admin] listen: {a:?} {PLAINTEXT}: the admin token and the dashboard's data cross the network unencrypted; set [admin] tls_cert and tls_key"
                ));
            }
        }
        out
    }

    fn serving_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let serving_phases: Vec<&str> = self
            .rollout
            .phases
            .iter()
            .filter(|(n, d)| {
                d.percent > 0.0
                    && n.as_str() != crate::rollout::ROLLBACK
                    && n.as_str() != crate::rollout::SHADOW
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let unverified_phases: Vec<&str> = serving_phases
            .iter()
            .copied()
            .filter(|n| !self.rollout.phases[*n].verify)
            .collect();
        for r in &self.routes {
            let serves = r.serves(&Method::GET) || r.serve == Some(true);
            if r.unverified.is_empty() || !serves {
                continue;
            }
            out.push(format!(
                "route {:?} is served by the candidate but its comparison does not check what callers receive at {}: in phases without verify ({}) its answers fall back to legacy (unverified_rules); list a pattern in serve_safe if callers may receive either value",
                r.name,
                r.unverified.join(", "),
                if unverified_phases.is_empty() { "none".to_owned() } else { unverified_phases.join(", ") }
            ));
        }
        for n in &serving_phases {
            let d = &self.rollout.phases[*n];
            if d.legacy_sample < 1.0 {
                out.push(format!(
                    "[rollout.phases.{n}] legacy_sample = {}: requests served without a legacy call are never checked by legacy; the accounts file is then the only authority on who may read what, and a candidate answer is served unverified",
                    d.legacy_sample
                ));
            }
        }
        out
    }
}

/// GET and HEAD: mirrored by default.
pub fn is_safe(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub legacy: Option<String>,
    pub candidate: Option<String>,
    pub db: Option<PathBuf>,
    /// `""` disables the admin listener.
    pub admin: Option<String>,
    /// `--candidate-header "NAME: VALUE"`: added to `[candidate] headers`.
    pub candidate_headers: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            error: source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// [`load`](Self::load) for a command that calls neither vendor nor the admin listener
    /// (`report`, `gate`, `rollout`, `rediff`, `suggest`, `prune`, ...): a `${VAR}` without a
    /// default that is not set is no error when every place it appears is in a table such a
    /// command never reads (`[legacy]`, `[candidate]`, their headers, `[admin]`, `[[webhooks]]`):
    /// a nightly report job needs no vendor credential. Anywhere else, the error stands.
    pub fn load_reading(path: &Path) -> Result<Self, ConfigError> {
        let strict = match Self::load(path) {
            Ok(cfg) => return Ok(cfg),
            Err(e) => e,
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Err(strict);
        };
        let (parsed, unset) = values::deferring(|| Self::parse(&text, Some(path)));
        let unread = |table: &str| {
            matches!(
                table,
                "legacy"
                    | "legacy.headers"
                    | "candidate"
                    | "candidate.headers"
                    | "admin"
                    | "webhooks"
            )
        };
        let all_unread = unset.iter().all(|name| {
            let needle = format!("${{{name}}}");
            text.match_indices(&needle)
                .all(|(at, _)| unread(&table_at(&text, at)))
        });
        match parsed {
            Ok(mut cfg) if all_unread => {
                cfg.warnings
                    .retain(|w| !unset.iter().any(|n| w.contains(n.as_str())));
                Ok(cfg)
            }
            _ => Err(strict),
        }
    }

    /// The configuration with every default, for `serve --legacy URL --candidate URL`.
    pub fn defaults() -> Self {
        Self::parse("", None).expect("the defaults are valid")
    }

    /// For `serve`: with both upstreams on the command line and no explicit `--config`, the
    /// built-in defaults (every command runs without a config file); otherwise the file. Then the
    /// command-line overrides.
    pub fn load_or_defaults(
        path: &Path,
        explicit: bool,
        ov: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut cfg = if !explicit && ov.legacy.is_some() && ov.candidate.is_some() {
            Self::defaults()
        } else {
            Self::load(path)?
        };
        cfg.apply(ov)?;
        Ok(cfg)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, ov: &Overrides) -> Result<(), ConfigError> {
        let bad = |flag: &str, message: String| ConfigError::Invalid {
            path: flag.to_owned(),
            message,
        };
        if let Some(l) = &ov.listen {
            self.proxy.listen.clone_from(l);
        }
        if let Some(u) = &ov.legacy {
            self.legacy.base_url = Some(parse_base_url(u).map_err(|m| bad("--legacy", m))?);
        }
        if let Some(u) = &ov.candidate {
            self.candidate.base_url = Some(parse_base_url(u).map_err(|m| bad("--candidate", m))?);
        }
        if let Some(db) = &ov.db {
            match crate::store::Location::parse(&db.to_string_lossy()) {
                crate::store::Location::Postgres(url) => self.store.url = Some(url),
                crate::store::Location::Sqlite(_) => {
                    self.store.path.clone_from(db);
                    self.store.url = None;
                }
            }
        }
        if let Some(a) = &ov.admin {
            self.admin.listen = (!a.is_empty()).then(|| a.clone());
            if let Some(m) = self.admin.exposure("the address") {
                return Err(bad("--admin", m));
            }
        }
        for h in &ov.candidate_headers {
            let flag = "--candidate-header";
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| bad(flag, "\"NAME: VALUE\" is needed (a colon between)".into()))?;
            let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| bad(flag, format!("invalid header name {:?}", name.trim())))?;
            let value = value.trim();
            if value.contains('{') {
                let t = crate::translate::Template::parse(value)
                    .map_err(|e| bad(flag, e.to_string()))?;
                self.candidate.headers.retain(|(k, _)| *k != name);
                self.candidate.header_templates.retain(|(k, _)| *k != name);
                self.candidate.header_templates.push((name, t));
            } else {
                let v = HeaderValue::from_str(value)
                    .map_err(|_| bad(flag, format!("{name}: invalid header value")))?;
                self.candidate.headers.retain(|(k, _)| *k != name);
                self.candidate.header_templates.retain(|(k, _)| *k != name);
                self.candidate.headers.push((name, v));
            }
        }
        if ov.listen.is_some() || ov.admin.is_some() {
            self.warnings.retain(|w| !w.contains(PLAINTEXT));
            let plaintext = self.plaintext_warnings();
            self.warnings.extend(plaintext);
        }
        Ok(())
    }

    /// Both upstream URLs, or an error saying which is missing.
    pub fn upstreams(&self) -> Result<(&Uri, &Uri), ConfigError> {
        let missing = |key: &str| ConfigError::Invalid {
            path: self
                .source
                .as_ref()
                .map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string()),
            message: format!(
                "{key}: required (or pass --{})",
                key.trim_start_matches('[').split(']').next().unwrap_or("")
            ),
        };
        Ok((
            self.legacy
                .base_url
                .as_ref()
                .ok_or_else(|| missing("[legacy] base_url"))?,
            self.candidate
                .base_url
                .as_ref()
                .ok_or_else(|| missing("[candidate] base_url"))?,
        ))
    }

    /// The rules for a route (or the global ones for `None`).
    pub fn rules_for(&self, route: Option<&str>) -> Option<&Rules> {
        match route {
            None => Some(&self.diff.rules),
            Some(n) => self.routes.iter().find(|r| r.name == n).map(|r| &r.rules),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Some(Path::new("t.toml")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_accounts_key_never_goes_to_the_candidate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "key_sha256,name\n").unwrap();
        let text = |fq: &str| {
            format!("[accounts]\nkey = \"query:page\"\nfile = \"a.csv\"\n[candidate]\n{fq}")
        };
        let cfg = dir.path().join("t.toml");
        let e = Config::parse(&text("forward_query = [\"page\"]\n"), Some(&cfg)).unwrap_err();
        assert!(e.to_string().contains("accounts key"), "{e}");
        // Left out of the default list.
        let c = Config::parse(&text(""), Some(&cfg)).unwrap();
        assert!(!c.candidate.forward_query.iter().any(|q| q == "page"));
        assert!(c.candidate.forward_query.iter().any(|q| q == "cursor"));
    }

    #[test]
    fn the_rules_version_is_the_rules_not_their_spelling() {
        let v = |diff: &str| {
            Config::parse(&format!("[diff]\n{diff}"), None)
                .unwrap()
                .diff
                .rules_version
        };
        assert_eq!(v(""), None, "no rule, no version");
        assert_eq!(
            v("headers = [\"Content-Type\"]\n"),
            None,
            "the default written out"
        );
        assert_eq!(
            v("ignore = [\"/a\", \"/b\"]\n"),
            v("ignore = [\"/b\", \"/a\"]\n"),
            "the order of ignore patterns means nothing"
        );
        assert_ne!(v("ignore = [\"/a\"]\n"), v("ignore = [\"/b\"]\n"));
        assert_ne!(v("headers = [\"etag\"]\n"), None);
    }

    #[test]
    fn defaults() {
        let c = Config::defaults();
        assert_eq!(c.proxy.listen, "127.0.0.1:8080");
        assert_eq!(c.shadow.max_body, 10 << 20);
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));
        assert_eq!(c.candidate.forward_headers.len(), 3);
        assert!(c.candidate.forward_query.iter().any(|q| q == "page"));
        assert!(!c
            .candidate
            .forward_query
            .iter()
            .any(|q| q.contains("key") || q.contains("token")));
        assert!(c.legacy.base_url.is_none());
    }

    #[test]
    fn env_expansion() {
        let env = |n: &str| (n == "SET").then(|| "v".to_owned());
        assert_eq!(expand_env("a${SET}b", env).unwrap(), "avb");
        assert_eq!(expand_env("${UNSET:-d}", env).unwrap(), "d");
        assert_eq!(expand_env("${SET:-d}", env).unwrap(), "v");
        assert_eq!(expand_env("$$x", env).unwrap(), "$x");
        assert!(expand_env("${UNSET}", env).unwrap_err().contains("UNSET"));
        assert!(expand_env("${SET", env).is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // humantime both ways: what `check` prints reads back.
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(5400),
            Duration::from_secs(86_400 * 30),
        ] {
            let shown = humantime::format_duration(d).to_string();
            assert_eq!(parse_duration(&shown).unwrap(), d, "{shown}");
        }
        assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10XB").is_err());
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = err("[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
        assert!(e.contains("t.toml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = err("[legacy]\nbase_url = \"http://x\"\ntimeout = \"30 parsecs\"\n");
        assert!(e.contains("line 3") && e.contains("duration"), "{e}");
        let e = err("[legacy]\nbase_url = \"ftp://x\"\n");
        assert!(e.contains("line 2") && e.contains("http"), "{e}");
        let e = err("[diff]\nignore = [\"updated_at\"]\n");
        assert!(e.contains("line 2") && e.contains("glob"), "{e}");
        let e = err("[shadow]\nsample_rate = 2.0\n");
        assert!(e.contains("sample_rate"), "{e}");
        let e = err("[legacy]\nbase_url = \"${SHADOWDIFF_TEST_SURELY_UNSET}\"\n");
        assert!(
            e.contains("line 2") && e.contains("SHADOWDIFF_TEST_SURELY_UNSET"),
            "{e}"
        );
    }

    #[test]
    fn noise_and_classification_settings() {
        let c = Config::defaults();
        assert_eq!(c.diff.systematic_rate, 0.9);
        assert_eq!(c.diff.noise.secondary_sample_rate, 0.0);
        assert_eq!(c.diff.noise.min_count, 2);
        let c = Config::parse(
            "[diff]\nsystematic_rate = 0.8\n[diff.noise]\nsecondary_sample_rate = 0.05\nmin_count = 3\n",
            None,
        )
        .unwrap();
        assert_eq!(c.diff.systematic_rate, 0.8);
        assert_eq!(c.diff.noise.secondary_sample_rate, 0.05);
        assert_eq!(c.diff.noise.min_count, 3);
        let e = err("[diff.noise]\nsecondary_sample_rate = 1.5\n");
        assert!(e.contains("secondary_sample_rate"), "{e}");
        let e = err("[diff.noise]\nmin_count = 0\n");
        assert!(e.contains("min_count"), "{e}");
        let e = err("[diff.noise]\nsample = 0.1\n");
        assert!(e.contains("line 2") && e.contains("sample"), "{e}");
        let e =
            err("[[routes]]\nname = \"r\"\npath = \"/a\"\n[routes.diff]\nsystematic_rate = 0.5\n");
        assert!(e.contains("[diff] only"), "{e}");
    }

    #[test]
    fn routes_are_checked() {
        let ok = "[[routes]]\nname = \"ind\"\npath = \"/individual/{id}\"\n[routes.candidate]\npath = \"/employees/{id}\"\nquery = { q = \"{query.q}\" }\n[routes.diff]\nignore = [\"/x\"]\n";
        let c = Config::parse(ok, None).unwrap();
        assert_eq!(c.routes[0].name, "ind");
        assert!(c.routes[0].mirrors(&Method::GET));
        assert!(!c.routes[0].mirrors(&Method::POST));
        let e = err(
            "\n[[routes]]\nname = \"r\"\npath = \"/a\"\n[routes.candidate]\npath = \"/b/{id}\"\n",
        );
        assert!(e.contains("line 3") && e.contains("{id}"), "{e}");
        let e = err("[[routes]]\nname = \"r\"\npath = \"/a\"\n[routes.candidate]\npath = \"/b/{account.cid}\"\n");
        assert!(e.contains("[accounts]"), "{e}");
        let e = err(
            "[[routes]]\nname = \"r\"\npath = \"/a\"\n[[routes]]\nname = \"r\"\npath = \"/b\"\n",
        );
        assert!(e.contains("line 5") && e.contains("same name"), "{e}");
    }

    #[test]
    fn normalize_rules_are_read_and_checked() {
        let c = Config::parse(
            "[diff]\nnormalize = [{ fields = [\"**/status\"], with = [\"lowercase\", \"trim\"] }]\n",
            None,
        )
        .unwrap();
        assert_eq!(c.diff.rules.normalize.len(), 1);
        assert_eq!(c.diff.rules.normalize[0].1.len(), 2);
        let e = err("[diff]\nnormalize = [{ fields = [\"**/status\"], with = [\"uppercase\"] }]\n");
        assert!(e.contains("line 2") && e.contains("uppercase"), "{e}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = Config::parse(
            "[store]\npath = \"data/x.db\"\n",
            Some(Path::new("/etc/sd/shadowdiff.toml")),
        )
        .unwrap();
        assert_eq!(c.store.path, Path::new("/etc/sd/data/x.db"));
    }
}
