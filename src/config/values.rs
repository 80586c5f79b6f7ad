//! Value types of the config file: `${VAR}` expansion, durations, sizes, URLs, and the strings
//! that are checked while the file is read (globs, templates, header names, methods, ...).

use std::time::Duration;

use http::{HeaderName, Method, Uri};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::diff::Glob;
use crate::translate::{KeySource, PathPattern, Template};

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
    std::env::var(name).ok().or_else(|| {
        DEFERRED.with(|d| {
            d.borrow_mut().as_mut().map(|names| {
                names.push(name.to_owned());
                String::new()
            })
        })
    })
}

thread_local! {
    /// While [`deferring`]: the variables that were not set (expanded as empty).
    static DEFERRED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Whether a [`deferring`] parse has met an unset variable.
fn deferred_any() -> bool {
    DEFERRED.with(|d| d.borrow().as_ref().is_some_and(|n| !n.is_empty()))
}

/// Runs `f` (a config parse) with unset variables expanded as empty instead of refused, and
/// returns the names of those it met: for a command that reads none of the keys they are in.
pub(crate) fn deferring<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let out = f();
    let names = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    (out, names)
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

/// Parses a duration as humantime writes it: `250ms`, `30s`, `5m`, `24h`, `30d`, `1h 30m`
/// (what `check` prints reads back).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 250ms, 30s, 5m, 24h, 30d, 1h 30m)"))
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

/// A config string's JSON Schema: a string (with `${VAR}` expansion) described by `what`.
fn string_schema(what: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": format!("{what} (`${{VAR}}` and `${{VAR:-default}}` expand from the environment)")
    })
}

impl schemars::JsonSchema for Str {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Str".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema("A string")
    }
}

macro_rules! parsed_string {
    ($(#[doc = $doc:literal])* $name:ident($ty:ty), $parse:expr) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub $ty);
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                string_schema(concat!($($doc),*).trim())
            }
        }
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
    /// A duration: `250ms`, `30s`, `5m`, `24h`, `30d`, `1h 30m`.
    Dur(Duration),
    parse_duration
);
parsed_string!(
    /// A size: `512KiB`, `10MiB`, `1GiB`, `100B`, `3MB`.
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
    |s| parse_base_url(s).or_else(|e| {
        // For a command that calls no vendor, a base URL built from an unset variable stands
        // for nothing it will use ([`deferring`]).
        if deferred_any() {
            Ok(Uri::from_static("http://unset.invalid"))
        } else {
            Err(e)
        }
    })
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
    if s.contains('#') {
        return Err(format!("URL {s:?} must not have a fragment"));
    }
    // `http::Uri` reads `http://u:p#@h` as host `u`, port `p`: a port must be a number.
    let authority = uri.authority().map_or("", http::uri::Authority::as_str);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some((_, port)) = host_port
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(':') || h.starts_with('['))
    {
        if !port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("URL {s:?}: the port must be a number"));
        }
    }
    Ok(uri)
}
