//! Configuration: the TOML file (README "Configuration") turned into plain, validated structs.
//!
//! Parsing happens once, at start-up. Every string goes through `${VAR}` / `${VAR:-default}`
//! expansion; durations, sizes, globs, templates and header names are checked while the file is
//! read, so an error names the file, the line and the key. Unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::background::Priority;
use crate::diff::{Glob, GlobSet, Rules};
use crate::translate::{Accounts, CandidateTemplate, KeySource, PathPattern, Template};

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/shadowdiff.toml";

/// A configuration that cannot be used. The message names the file, key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

// ------------------------------------------------------------------------------ value types

/// Expands `${VAR}` and `${VAR:-default}` in `s`. `$$` is a literal `$`.
pub fn expand_env(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed '${{' in {s:?}"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("invalid variable name {name:?} in {s:?}"));
            }
            match (
                env(name).filter(|v| default.is_none() || !v.is_empty()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}})"
                    ))
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A string after environment expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Str(pub String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw, process_env)
            .map(Str)
            .map_err(de::Error::custom)
    }
}

/// Parses `250ms`, `30s`, `5m`, `24h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 250ms, 30s, 5m, 24h, 30d)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m, h or d)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

/// Parses `512KiB`, `10MiB`, `1GiB`, `100B`, `2KB`, `3MB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (e.g. 512KiB, 10MiB)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

macro_rules! parsed_string {
    ($(#[$m:meta])* $name:ident($ty:ty), $parse:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $name(pub $ty);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let Str(s) = Str::deserialize(d)?;
                let f: fn(&str) -> Result<$ty, String> = $parse;
                f(&s).map($name).map_err(de::Error::custom)
            }
        }
    };
}

parsed_string!(
    /// A duration such as `30s`.
    Dur(Duration),
    parse_duration
);
parsed_string!(
    /// A size such as `10MiB`.
    Size(usize),
    parse_size
);
parsed_string!(
    /// A field glob.
    GlobStr(Glob),
    |s| Glob::new(s).map_err(|e| e.to_string())
);
parsed_string!(
    /// A route path pattern.
    PathStr(PathPattern),
    |s| PathPattern::parse(s).map_err(|e| e.to_string())
);
parsed_string!(
    /// A template string.
    TemplateStr(Template),
    |s| Template::parse(s).map_err(|e| e.to_string())
);
parsed_string!(
    /// A header name (lower-cased).
    HeaderNameStr(HeaderName),
    |s| HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes()).map_err(|_| format!("invalid header name {s:?}"))
);
parsed_string!(
    /// An HTTP method.
    MethodStr(Method),
    |s| Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes()).map_err(|_| format!("invalid method {s:?}"))
);
parsed_string!(
    /// An upstream base URL.
    BaseUrl(Uri),
    parse_base_url
);
parsed_string!(
    /// A normalize rule name.
    NormStr(crate::diff::normalize::Norm),
    crate::diff::normalize::Norm::parse
);
parsed_string!(
    /// The account key source.
    KeySourceStr(KeySource),
    KeySource::parse
);

/// Parses an upstream base URL: http or https, a host, an optional path prefix, no query.
pub fn parse_base_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("URL {s:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL {s:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("URL {s:?} must not have a query"));
    }
    Ok(uri)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    Mirror,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bodies {
    Never,
    OnDiff,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Shadow,
    Canary,
    Ramp,
    Ga,
    Rollback,
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

// ------------------------------------------------------------------------------ file layout

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    proxy: RawProxy,
    admin: RawAdmin,
    legacy: RawLegacy,
    candidate: RawCandidate,
    accounts: Option<RawAccounts>,
    shadow: RawShadow,
    diff: RawDiff,
    store: RawStore,
    routes: Vec<RawRoute>,
    rollout: RawRollout,
    gate: BTreeMap<String, GateConfig>,
    mappings: RawMappings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMappings {
    dir: Option<Str>,
    environment: Option<Str>,
    timeout: Option<Dur>,
    workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProxy {
    listen: Option<Str>,
    drain_timeout: Option<Dur>,
    max_connections: Option<usize>,
    header_read_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: Option<Str>,
    token: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLegacy {
    base_url: Option<BaseUrl>,
    timeout: Option<Dur>,
    body_timeout: Option<Dur>,
    ca_file: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCandidate {
    base_url: Option<BaseUrl>,
    timeout: Option<Dur>,
    ca_file: Option<Str>,
    headers: BTreeMap<String, Str>,
    forward_headers: Option<Vec<HeaderNameStr>>,
    forward_query: Option<Vec<Str>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    key: KeySourceStr,
    file: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawShadow {
    sample_rate: Option<f64>,
    max_in_flight: Option<usize>,
    max_rps: Option<f64>,
    max_body: Option<Size>,
    max_bytes_in_flight: Option<Size>,
    unmatched: Option<Unmatched>,
    backoff_on_429: Option<bool>,
    threads: Option<usize>,
    priority: Option<Priority>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiff {
    ignore: Vec<GlobStr>,
    array_keys: BTreeMap<String, Str>,
    unordered: Vec<GlobStr>,
    number_tolerance: Option<f64>,
    null_equals_missing: Option<bool>,
    auto_keys: Option<bool>,
    normalize: Vec<RawNormalize>,
    headers: Option<Vec<HeaderNameStr>>,
    systematic_rate: Option<f64>,
    noise: Option<RawNoise>,
}

/// `[diff.noise]`: learning noise from a second legacy call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNoise {
    secondary_sample_rate: Option<f64>,
    min_count: Option<u64>,
}

/// One `normalize = [{ fields = [...], with = [...] }]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNormalize {
    fields: Vec<GlobStr>,
    with: Vec<NormStr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: Option<Str>,
    retention: Option<Dur>,
    bodies: Option<Bodies>,
    redact_headers: Option<Vec<HeaderNameStr>>,
    redact_fields: Option<Vec<GlobStr>>,
    queue: Option<usize>,
    max_value_len: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: toml::Spanned<Str>,
    method: Option<MethodStr>,
    path: PathStr,
    mirror: Option<bool>,
    candidate: Option<RawRouteCandidate>,
    legacy: Option<RawRouteLegacy>,
    #[serde(default)]
    diff: RawDiff,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRouteLegacy {
    mapping: Option<Str>,
    mapping_expr: Option<Str>,
    mapping_lang: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRouteCandidate {
    method: Option<MethodStr>,
    path: Option<TemplateStr>,
    query: Option<BTreeMap<String, TemplateStr>>,
    mapping: Option<Str>,
    mapping_expr: Option<Str>,
    mapping_lang: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRollout {
    /// Validated (a misspelt phase fails at load) but read by nothing yet: serving by phase
    /// comes with the rollout phases.
    #[allow(dead_code)]
    phase: Option<Phase>,
}

/// Criteria to leave a rollout phase (`[gate.NAME]`); evaluated by the `gate` command.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    pub min_compared: Option<u64>,
    pub min_parity: Option<f64>,
    pub max_candidate_error_rate: Option<f64>,
    pub max_auth_error_accounts: Option<u64>,
    pub max_latency_ratio: Option<f64>,
    pub routes: BTreeMap<String, GateConfig>,
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
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: String,
    /// How long in-flight exchanges may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Caller connections open at once at most; past it the listener stops accepting (the
    /// kernel's backlog holds the rest) until one closes.
    pub max_connections: usize,
    /// Longest wait for a complete request head, from the moment the connection (or, on a
    /// kept-alive HTTP/1.1 connection, the previous response) is done.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` disables the admin listener (`listen = ""`).
    pub listen: Option<String>,
    pub token: Option<String>,
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
    /// Threads of the shadow runtime (candidate calls and comparisons).
    pub threads: usize,
    /// CPU priority of the shadow threads and the store writer.
    pub priority: Priority,
}

#[derive(Debug, Clone)]
pub struct DiffConfig {
    pub rules: Rules,
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

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub retention: Duration,
    pub bodies: Bodies,
    pub redact_headers: Vec<HeaderName>,
    pub redact_fields: GlobSet,
    /// Exchanges waiting for the writer; beyond, they are dropped (and counted).
    pub queue: usize,
    /// Longest stored value text (diff values, body sizes are bounded by `max_body`).
    pub max_value_len: usize,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// `None` matches every method.
    pub method: Option<Method>,
    pub path: PathPattern,
    /// `None`: mirrored when the method is GET or HEAD.
    pub mirror: Option<bool>,
    pub candidate: CandidateTemplate,
    /// Global rules plus the route's own.
    pub rules: Rules,
    /// Response mappings (compiled), with their override chains.
    pub mappings: crate::mapping::RouteMappings,
}

impl Route {
    /// Whether a request with this method is mirrored.
    pub fn mirrors(&self, method: &Method) -> bool {
        self.mirror.unwrap_or_else(|| is_safe(method))
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
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, Some(path))
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
            self.store.path.clone_from(db);
        }
        if let Some(a) = &ov.admin {
            self.admin.listen = (!a.is_empty()).then(|| a.clone());
        }
        Ok(())
    }

    /// Parses config text; `path` is used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.clone(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let rel = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let line_of = |offset: usize| text[..offset.min(text.len())].lines().count().max(1);

        let accounts = match raw.accounts {
            None => None,
            Some(a) => Some(
                Accounts::load(a.key.0, &rel(&a.file.0))
                    .map_err(|e| invalid(format!("[accounts] file: {e}")))?,
            ),
        };

        check_array_keys(&raw.diff).map_err(|m| invalid(format!("[diff] array_keys: {m}")))?;
        let global_rules = rules_of(&raw.diff);
        let max_body = raw.shadow.max_body.map_or(10 << 20, |s| s.0);
        let shadow = ShadowConfig {
            sample_rate: raw.shadow.sample_rate.unwrap_or(1.0),
            max_in_flight: raw.shadow.max_in_flight.unwrap_or(512),
            max_rps: raw.shadow.max_rps.unwrap_or(0.0),
            max_body,
            // By default room for at least one comparison of max_body.
            max_bytes_in_flight: raw.shadow.max_bytes_in_flight.map_or_else(
                || (256usize << 20).max(max_body.saturating_mul(crate::budget::COMPARE_COST)),
                |s| s.0,
            ),
            unmatched: raw.shadow.unmatched.unwrap_or(Unmatched::Mirror),
            backoff_on_429: raw.shadow.backoff_on_429.unwrap_or(true),
            threads: raw.shadow.threads.unwrap_or(1),
            priority: raw.shadow.priority.unwrap_or_default(),
        };
        if shadow.threads == 0 {
            return Err(invalid("[shadow] threads: must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&shadow.sample_rate) {
            return Err(invalid(format!(
                "[shadow] sample_rate: {} is not between 0 and 1",
                shadow.sample_rate
            )));
        }
        if shadow.max_rps < 0.0 || !shadow.max_rps.is_finite() {
            return Err(invalid(
                "[shadow] max_rps: must be 0 (unlimited) or positive".into(),
            ));
        }
        let one = shadow.max_body.saturating_mul(crate::budget::COMPARE_COST);
        if shadow.max_bytes_in_flight < one {
            return Err(invalid(format!(
                "[shadow] max_bytes_in_flight: {} is below {} x max_body ({one}): a body of max_body could never be compared",
                shadow.max_bytes_in_flight,
                crate::budget::COMPARE_COST
            )));
        }
        if shadow.max_in_flight == 0 {
            return Err(invalid("[shadow] max_in_flight: must be at least 1".into()));
        }
        if let Some(t) = raw
            .diff
            .number_tolerance
            .filter(|t| *t < 0.0 || !t.is_finite())
        {
            return Err(invalid(format!(
                "[diff] number_tolerance: {t} must be zero or positive"
            )));
        }

        let share = |key: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
            Some(x) => Err(invalid(format!("{key}: {x} must be between 0 and 1"))),
        };
        let systematic_rate = share("[diff] systematic_rate", raw.diff.systematic_rate, 0.9)?;
        let raw_noise = raw.diff.noise.clone().unwrap_or_default();
        let noise = NoiseConfig {
            secondary_sample_rate: share(
                "[diff.noise] secondary_sample_rate",
                raw_noise.secondary_sample_rate,
                0.0,
            )?,
            min_count: match raw_noise.min_count {
                Some(0) => {
                    return Err(invalid("[diff.noise] min_count: must be at least 1".into()))
                }
                Some(n) => n,
                None => NoiseConfig::default().min_count,
            },
        };

        let mappings_cfg = crate::mapping::MappingsConfig {
            dir: rel(raw
                .mappings
                .dir
                .as_ref()
                .map_or("mappings", |d| d.0.as_str())),
            environment: raw.mappings.environment.as_ref().map(|e| e.0.clone()),
            timeout: raw
                .mappings
                .timeout
                .as_ref()
                .map_or(Duration::from_secs(1), |d| d.0),
            workers: raw.mappings.workers.unwrap_or(2),
        };
        if mappings_cfg.workers == 0 {
            return Err(invalid("[mappings] workers: must be at least 1".into()));
        }
        let source = |table: &str,
                      file: &Option<Str>,
                      expr: &Option<Str>,
                      lang: &Option<Str>|
         -> Result<Option<crate::mapping::Source>, String> {
            use crate::mapping::{Lang, Source};
            match (file, expr) {
                (Some(_), Some(_)) => Err(format!(
                    "[{table}] mapping and mapping_expr: set one of them"
                )),
                (Some(f), None) => {
                    if lang.is_some() {
                        return Err(format!(
                            "[{table}] mapping_lang: the language of a mapping file comes from its extension"
                        ));
                    }
                    let p = rel(&f.0);
                    Lang::of_path(&p).ok_or_else(|| {
                        format!("[{table}] mapping: {:?} must end in .jsonata or .jq", f.0)
                    })?;
                    Ok(Some(Source::File(p)))
                }
                (None, Some(e)) => {
                    let l = match lang {
                        None => Lang::Jsonata,
                        Some(l) => Lang::parse(&l.0).ok_or_else(|| {
                            format!("[{table}] mapping_lang: {:?} is not jsonata or jq", l.0)
                        })?,
                    };
                    Ok(Some(Source::Expr(l, e.0.clone())))
                }
                (None, None) if lang.is_some() => {
                    Err(format!("[{table}] mapping_lang: only with mapping_expr"))
                }
                (None, None) => Ok(None),
            }
        };

        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for r in raw.routes {
            let line = line_of(r.name.span().start);
            let name = r.name.into_inner().0;
            let at = |m: String| invalid(format!("line {line}: route {name:?}: {m}"));
            if name.is_empty() {
                return Err(at("name must not be empty".into()));
            }
            if routes.iter().any(|x| x.name == name) {
                return Err(at("another route has the same name".into()));
            }
            let c = r.candidate.unwrap_or_default();
            let l = r.legacy.unwrap_or_default();
            let sources = crate::mapping::Sources {
                base: source(
                    "routes.candidate",
                    &c.mapping,
                    &c.mapping_expr,
                    &c.mapping_lang,
                )
                .map_err(at)?,
                legacy: source(
                    "routes.legacy",
                    &l.mapping,
                    &l.mapping_expr,
                    &l.mapping_lang,
                )
                .map_err(at)?,
            };
            let mappings = crate::mapping::load_route(&name, &sources, &mappings_cfg)
                .map_err(|m| at(format!("mapping: {m}")))?;
            let candidate = CandidateTemplate {
                method: c.method.map(|m| m.0),
                path: c.path.map(|p| p.0),
                query: c
                    .query
                    .map(|q| q.into_iter().map(|(k, v)| (k, v.0)).collect()),
            };
            check_vars(&candidate, &r.path.0, accounts.is_some()).map_err(at)?;
            check_array_keys(&r.diff).map_err(|m| at(format!("[routes.diff] array_keys: {m}")))?;
            let mut rules = global_rules.clone();
            rules.extend(&rules_of(&r.diff));
            rules.auto_keys = r.diff.auto_keys.unwrap_or(global_rules.auto_keys);
            if r.diff.headers.is_some() {
                return Err(at(
                    "[routes.diff] headers: response headers to compare are set in [diff] only"
                        .into(),
                ));
            }
            if r.diff.noise.is_some() || r.diff.systematic_rate.is_some() {
                return Err(at(
                    "[routes.diff] noise and systematic_rate are set in [diff] only".into(),
                ));
            }
            routes.push(Route {
                name,
                method: r.method.map(|m| m.0),
                path: r.path.0,
                mirror: r.mirror,
                candidate,
                rules,
                mappings,
            });
        }

        for (key, d) in [
            (
                "[proxy] header_read_timeout",
                &raw.proxy.header_read_timeout,
            ),
            ("[proxy] idle_timeout", &raw.proxy.idle_timeout),
            ("[legacy] body_timeout", &raw.legacy.body_timeout),
        ] {
            if d.as_ref().is_some_and(|d| d.0.is_zero()) {
                return Err(invalid(format!("{key}: must be longer than 0s")));
            }
        }
        let explicit_query = raw.candidate.forward_query.is_some();
        let mut forward_query: Vec<String> = match raw.candidate.forward_query {
            Some(v) => v.into_iter().map(|q| q.0).collect(),
            None => DEFAULT_FORWARD_QUERY
                .iter()
                .map(|&q| q.to_owned())
                .collect(),
        };
        if let Some(Accounts {
            source: crate::translate::KeySource::Query(key),
            ..
        }) = &accounts
        {
            if explicit_query && forward_query.contains(key) {
                return Err(invalid(format!(
                    "[candidate] forward_query: {key:?} is the accounts key (a legacy credential): it never goes to the candidate"
                )));
            }
            forward_query.retain(|q| q != key);
        }
        let admin_listen = raw
            .admin
            .listen
            .map_or_else(|| "127.0.0.1:9090".to_owned(), |s| s.0);
        let mut candidate_headers = Vec::new();
        for (k, v) in raw.candidate.headers {
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid(format!("[candidate] headers: invalid header name {k:?}")))?;
            let value = HeaderValue::from_str(&v.0)
                .map_err(|_| invalid(format!("[candidate] headers.{k}: invalid header value")))?;
            candidate_headers.push((name, value));
        }
        let names = |v: Option<Vec<HeaderNameStr>>, default: &[&'static str]| -> Vec<HeaderName> {
            match v {
                Some(v) => v.into_iter().map(|h| h.0).collect(),
                None => default
                    .iter()
                    .copied()
                    .map(HeaderName::from_static)
                    .collect(),
            }
        };

        Ok(Self {
            source: path.map(Path::to_path_buf),
            proxy: ProxyConfig {
                listen: raw
                    .proxy
                    .listen
                    .map_or_else(|| "127.0.0.1:8080".to_owned(), |s| s.0),
                drain_timeout: raw
                    .proxy
                    .drain_timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                max_connections: raw.proxy.max_connections.unwrap_or(10_000).max(1),
                header_read_timeout: raw
                    .proxy
                    .header_read_timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                idle_timeout: raw
                    .proxy
                    .idle_timeout
                    .map_or(Duration::from_secs(120), |d| d.0),
            },
            admin: AdminConfig {
                listen: (!admin_listen.is_empty()).then_some(admin_listen),
                token: raw.admin.token.map(|t| t.0).filter(|t| !t.is_empty()),
            },
            legacy: UpstreamConfig {
                base_url: raw.legacy.base_url.map(|u| u.0),
                timeout: raw.legacy.timeout.map_or(Duration::from_secs(30), |d| d.0),
                body_timeout: raw
                    .legacy
                    .body_timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                ca_file: raw.legacy.ca_file.map(|f| rel(&f.0)),
                headers: Vec::new(),
                forward_headers: Vec::new(),
                forward_query: Vec::new(),
            },
            candidate: UpstreamConfig {
                base_url: raw.candidate.base_url.map(|u| u.0),
                timeout: raw
                    .candidate
                    .timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                ca_file: raw.candidate.ca_file.map(|f| rel(&f.0)),
                headers: candidate_headers,
                forward_headers: names(
                    raw.candidate.forward_headers,
                    &["accept", "accept-language", "user-agent"],
                ),
                body_timeout: Duration::ZERO,
                forward_query,
            },
            accounts,
            shadow,
            diff: DiffConfig {
                rules: global_rules,
                headers: names(raw.diff.headers, &["content-type"]),
                systematic_rate,
                noise,
            },
            store: StoreConfig {
                path: rel(raw
                    .store
                    .path
                    .as_ref()
                    .map_or("shadowdiff.db", |p| p.0.as_str())),
                retention: raw
                    .store
                    .retention
                    .map_or(Duration::from_secs(30 * 86400), |d| d.0),
                bodies: raw.store.bodies.unwrap_or(Bodies::OnDiff),
                redact_headers: names(
                    raw.store.redact_headers,
                    &["authorization", "cookie", "set-cookie", "x-api-key"],
                ),
                redact_fields: match raw.store.redact_fields {
                    Some(v) => glob_set(v),
                    None => GlobSet::default(),
                },
                queue: raw.store.queue.unwrap_or(10_000).max(1),
                max_value_len: raw.store.max_value_len.map_or(1024, |s| s.0).max(16),
            },
            routes,
            gates: raw.gate,
            mappings: mappings_cfg,
        })
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

fn glob_set(v: Vec<GlobStr>) -> GlobSet {
    let mut set = GlobSet::default();
    for g in v {
        set.push(g.0);
    }
    set
}

fn rules_of(d: &RawDiff) -> Rules {
    Rules {
        ignore: glob_set(d.ignore.clone()),
        array_keys: d
            .array_keys
            .iter()
            .filter_map(|(k, v)| Glob::new(k).ok().map(|g| (g, v.0.clone())))
            .collect(),
        unordered: glob_set(d.unordered.clone()),
        number_tolerance: d.number_tolerance.unwrap_or(0.0),
        null_equals_missing: d.null_equals_missing.unwrap_or(false),
        auto_keys: d.auto_keys.unwrap_or(true),
        normalize: d
            .normalize
            .iter()
            .map(|n| {
                (
                    glob_set(n.fields.clone()),
                    n.with.iter().map(|w| w.0).collect(),
                )
            })
            .collect(),
    }
}

fn check_array_keys(d: &RawDiff) -> Result<(), String> {
    for (k, v) in &d.array_keys {
        Glob::new(k).map_err(|e| e.to_string())?;
        if v.0.is_empty() {
            return Err(format!("{k:?}: the key member must not be empty"));
        }
    }
    Ok(())
}

/// Template placeholders must have a source: a capture of the route's path, or `[accounts]`.
fn check_vars(c: &CandidateTemplate, path: &PathPattern, has_accounts: bool) -> Result<(), String> {
    let templates = c
        .path
        .iter()
        .chain(c.query.iter().flatten().map(|(_, t)| t));
    for t in templates {
        for v in t.vars() {
            match v {
                crate::translate::Var::Capture(n) if !path.captures().any(|c| c == n) => {
                    return Err(format!(
                        "{} in {:?}: the route's path has no capture {{{n}}}",
                        v,
                        t.as_str()
                    ));
                }
                crate::translate::Var::Account(_) if !has_accounts => {
                    return Err(format!(
                        "{} in {:?}: needs an [accounts] section",
                        v,
                        t.as_str()
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
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
        assert!(parse_duration("1w").is_err());
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
