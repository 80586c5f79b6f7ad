//! Translation of a caller's request into the candidate's: route matching, request templates and
//! the account crosswalk.
//!
//! A route's `path` is a template of literal segments and `{name}` captures. The candidate request
//! is built from templates that may name those captures, the caller's query parameters
//! (`{query.NAME}`) and the columns of the caller's account (`{account.COLUMN}`); a route with
//! a request mapping ([`request`]) also the members of each element it fans out to
//! (`{each.NAME}`).

pub mod request;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Characters left as they are in a path segment or a query component.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A template could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{' in {0:?}")]
    Unclosed(String),
    #[error("empty placeholder '{{}}' in {0:?}")]
    Empty(String),
    #[error(
        "unknown placeholder {{{1}}} in {0:?}: use {{NAME}}, {{query.NAME}}, {{account.COLUMN}} or {{each.NAME}}, optionally followed by |KIND (an [ids] kind)"
    )]
    Unknown(String, String),
    #[error("path template {0:?} must start with '/'")]
    NotAbsolute(String),
    #[error("a capture must be a whole path segment in {0:?}")]
    PartialCapture(String),
}

/// Where a placeholder takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Capture(String),
    Query(String),
    Account(String),
    /// A member of the element a fan-out call is made for (`{each.NAME}`).
    Each(String),
    /// A legacy id (another placeholder's value) turned into the candidate's partner by the id
    /// crosswalk (`{each.individual_id|individual}`: the kind after the `|`).
    Id(Box<Var>, String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capture(n) => write!(f, "{{{n}}}"),
            Self::Query(n) => write!(f, "{{query.{n}}}"),
            Self::Account(n) => write!(f, "{{account.{n}}}"),
            Self::Each(n) => write!(f, "{{each.{n}}}"),
            Self::Id(v, kind) => {
                let inner = v.to_string();
                write!(f, "{{{}|{kind}}}", &inner[1..inner.len() - 1])
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A string with `{...}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Lit(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(s.to_owned()))?;
            let name = &rest[open + 1..open + close];
            let (name, kind) = match name.split_once('|') {
                Some((n, k)) => {
                    let k = k.trim();
                    if k.is_empty()
                        || !k
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(TemplateError::Unknown(s.to_owned(), name.to_owned()));
                    }
                    (n.trim(), Some(k))
                }
                None => (name, None),
            };
            let var = if name.is_empty() {
                return Err(TemplateError::Empty(s.to_owned()));
            } else if let Some(q) = name.strip_prefix("query.") {
                Var::Query(q.to_owned())
            } else if let Some(a) = name.strip_prefix("account.") {
                Var::Account(a.to_owned())
            } else if let Some(e) = name.strip_prefix("each.").filter(|e| !e.is_empty()) {
                Var::Each(e.to_owned())
            } else if name.contains('.') || name.contains('{') {
                return Err(TemplateError::Unknown(s.to_owned(), name.to_owned()));
            } else {
                Var::Capture(name.to_owned())
            };
            let var = match kind {
                Some(k) => Var::Id(Box::new(var), k.to_owned()),
                None => var,
            };
            pieces.push(Piece::Var(var));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_owned()));
        }
        Ok(Self {
            source: s.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders the template uses.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Lit(_) => None,
        })
    }

    /// Renders the template. Values from the query and the account are passed through `encode`;
    /// captures are inserted as they appeared in the caller's path (still percent-encoded).
    /// Fails with the first placeholder that has no value.
    pub fn render(&self, ctx: &Context<'_>, encode: fn(&str) -> String) -> Result<String, Var> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => {
                    let value = ctx.get(v).ok_or_else(|| match v {
                        // The legacy id itself missing is that placeholder's miss.
                        Var::Id(inner, _) if ctx.get(inner).is_none() => (**inner).clone(),
                        _ => v.clone(),
                    })?;
                    match v {
                        Var::Capture(_) => out.push_str(&value),
                        _ => out.push_str(&encode(&value)),
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Template {
    /// Renders a path template: as [`render`](Self::render) with values percent-encoded, but a
    /// value from the query, the account or a fan-out element that is empty, `.` or `..` has
    /// none: inserted, it would name another resource (`/employees/` is the list, `/a/..` the
    /// parent), and no server must be asked for that in the caller's name.
    pub fn render_path(&self, ctx: &Context<'_>) -> Result<String, Var> {
        for v in self.vars() {
            // A capture is inserted as the caller wrote it: one whose segment is a dot-segment
            // before a `;` parameter (`..;`, which servlet containers read as `..`) has none.
            if let Var::Capture(_) = v {
                if ctx.get(v).is_some_and(|x| {
                    let decoded = percent_decode_str(&x).decode_utf8_lossy().into_owned();
                    matches!(decoded.split(';').next(), Some("" | "." | ".."))
                }) {
                    return Err(v.clone());
                }
                continue;
            }
            let trial = matches!(ctx.each, Each::Trial)
                && match v {
                    Var::Each(_) => true,
                    Var::Id(inner, _) => matches!(**inner, Var::Each(_)),
                    _ => false,
                };
            if !matches!(v, Var::Capture(_))
                && !trial
                && ctx
                    .get(v)
                    .is_some_and(|x| matches!(x.as_ref(), "" | "." | ".."))
            {
                return Err(v.clone());
            }
        }
        self.render(ctx, encode_component)
    }
}

/// Percent-encodes a value for a path segment or a query component.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

fn identity(s: &str) -> String {
    s.to_owned()
}

/// What templates can refer to for one request.
#[derive(Debug, Default)]
pub struct Context<'a> {
    pub captures: Vec<(&'a str, &'a str)>,
    pub query: Vec<(String, String)>,
    pub account: Option<&'a Account>,
    pub each: Each<'a>,
    /// The id crosswalk of the request's account (`{NAME|KIND}`): no partner without it.
    pub ids: Option<IdLookup<'a>>,
}

/// The candidate's partner of a legacy id: `(kind, legacy id)` → candidate id.
#[derive(Clone, Copy)]
pub struct IdLookup<'a>(pub &'a (dyn Fn(&str, &str) -> Option<String> + Sync));

impl fmt::Debug for IdLookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdLookup")
    }
}

/// The fan-out element a template is rendered for.
#[derive(Debug, Default, Clone, Copy)]
pub enum Each<'a> {
    /// Not a fan-out call: `{each.NAME}` has no value.
    #[default]
    None,
    /// A trial render before the request mapping ran (the request is checked for the values
    /// it has now): `{each.NAME}` renders empty.
    Trial,
    /// The element (an object whose members are the values).
    Item(&'a serde_json::Value),
}

impl Context<'_> {
    fn get(&self, v: &Var) -> Option<Cow<'_, str>> {
        match v {
            Var::Capture(n) => self
                .captures
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| Cow::Borrowed(*v)),
            Var::Query(n) => self
                .query
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
            Var::Account(c) => self.account.and_then(|a| a.get(c)).map(Cow::Borrowed),
            Var::Each(n) => match self.each {
                Each::None => None,
                Each::Trial => Some(Cow::Borrowed("")),
                Each::Item(item) => request::member_text(item, n),
            },
            Var::Id(inner, kind) => {
                if matches!((&**inner, self.each), (Var::Each(_), Each::Trial)) {
                    return Some(Cow::Borrowed(""));
                }
                let legacy = self.get(inner)?;
                // A capture is still percent-encoded: the crosswalk holds ids as they are.
                let legacy = match &**inner {
                    Var::Capture(_) => percent_decode_str(&legacy).decode_utf8_lossy().into_owned(),
                    _ => legacy.into_owned(),
                };
                (self.ids?.0)(kind, &legacy).map(Cow::Owned)
            }
        }
    }
}

/// Parses a query string into decoded pairs (`+` is a space, as in HTML forms).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

// ------------------------------------------------------------------------------------ paths

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSeg {
    Lit(String),
    Capture(String),
}

/// A route's path: literal segments and `{name}` captures, e.g. `/employer/individual/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segs: Vec<PathSeg>,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| TemplateError::NotAbsolute(s.to_owned()))?;
        let segs = rest
            .split('/')
            .map(|seg| {
                if let Some(name) = seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    if name.is_empty() || name.contains(['{', '}', '.']) {
                        return Err(TemplateError::Unknown(s.to_owned(), name.to_owned()));
                    }
                    Ok(PathSeg::Capture(name.to_owned()))
                } else if seg.contains(['{', '}']) {
                    Err(TemplateError::PartialCapture(s.to_owned()))
                } else {
                    Ok(PathSeg::Lit(seg.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: s.to_owned(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            PathSeg::Capture(n) => Some(n.as_str()),
            PathSeg::Lit(_) => None,
        })
    }

    /// Matches a request path (without its query); returns the captures.
    pub fn matches<'p>(&'p self, path: &'p str) -> Option<Vec<(&'p str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut caps = Vec::new();
        let mut parts = rest.split('/');
        for seg in &self.segs {
            let part = parts.next()?;
            match seg {
                PathSeg::Lit(l) if l == part => {}
                PathSeg::Lit(_) => return None,
                PathSeg::Capture(_) if part.is_empty() => return None,
                PathSeg::Capture(n) => caps.push((n.as_str(), part)),
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

// ------------------------------------------------------------------------------------ routes

/// How a route builds its candidate request.
#[derive(Debug, Clone)]
pub struct CandidateTemplate {
    pub method: Option<http::Method>,
    pub path: Option<Template>,
    /// `None`: the caller's query string is passed through as it is.
    pub query: Option<Vec<(String, Template)>>,
    /// The request mapping (`request_mapping` or `request_expr`): the candidate's body, or one
    /// call per element it returns.
    pub request: Option<request::RequestMapping>,
}

/// The candidate request line, once translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateTarget {
    pub method: http::Method,
    /// Path and query, e.g. `/unified/hris/employees?integrated_account_id=42`.
    pub path_and_query: String,
    /// `[candidate] headers` rendered from templates for this request.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Why a header template could not be rendered for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMiss {
    /// A placeholder without a value.
    Var(Var),
    /// The rendered text is not a valid header value (a line break from the caller's query).
    Invalid(http::HeaderName),
}

/// Renders `[candidate] headers` templates: values inserted as they are (no percent-encoding),
/// and the result must be a valid header value.
pub fn render_headers(
    templates: &[(http::HeaderName, Template)],
    ctx: &Context<'_>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, HeaderMiss> {
    templates
        .iter()
        .map(|(name, t)| {
            let text = t.render(ctx, identity).map_err(HeaderMiss::Var)?;
            http::HeaderValue::from_str(&text)
                .map(|v| (name.clone(), v))
                .map_err(|_| HeaderMiss::Invalid(name.clone()))
        })
        .collect()
}

impl CandidateTemplate {
    /// Builds the candidate's method, path and query for a request that matched the route.
    /// A path placeholder without a value is an error; a query parameter without one is left
    /// out, unless the value is the account's (`{account.COLUMN}`): a request of an account not
    /// in the accounts file is an error wherever the template needs it.
    /// Without a `query` template only the parameters named in `forward_query` are passed on
    /// (as the caller spelled them): a credential in the caller's query never reaches the
    /// candidate by accident.
    pub fn build(
        &self,
        method: &http::Method,
        path: &str,
        raw_query: Option<&str>,
        forward_query: &[String],
        ctx: &Context<'_>,
    ) -> Result<CandidateTarget, Var> {
        let mut out = match &self.path {
            Some(t) => t.render_path(ctx)?,
            None => path.to_owned(),
        };
        match &self.query {
            None => push_allowed_query(&mut out, raw_query, forward_query),
            Some(params) => {
                let mut first = true;
                for (name, t) in params {
                    let value = match t.render(ctx, identity) {
                        Ok(v) => v,
                        Err(v @ Var::Account(_)) => return Err(v),
                        Err(_) => continue,
                    };
                    out.push(if first { '?' } else { '&' });
                    first = false;
                    out.push_str(&encode_component(name));
                    out.push('=');
                    out.push_str(&encode_component(&value));
                }
            }
        }
        Ok(CandidateTarget {
            method: self.method.clone().unwrap_or_else(|| method.clone()),
            path_and_query: out,
            headers: Vec::new(),
        })
    }
}

/// Appends to `out` the parameters of `raw_query` whose (decoded) name is in `allowed`, in the
/// caller's order and spelling.
pub fn push_allowed_query(out: &mut String, raw_query: Option<&str>, allowed: &[String]) {
    let Some(q) = raw_query.filter(|q| !q.is_empty() && !allowed.is_empty()) else {
        return;
    };
    let mut first = true;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let name = decode(pair.split_once('=').map_or(pair, |(k, _)| k));
        if allowed.contains(&name) {
            out.push(if first { '?' } else { '&' });
            first = false;
            out.push_str(pair);
        }
    }
}

// ------------------------------------------------------------------------------------ paths

/// A request path after RFC 3986 dot-segment removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Always starts with `/`; `.` and `..` segments (also spelled `%2e`) removed.
    pub path: String,
    /// The path tried to climb above its root (more `..` than segments before them), or a
    /// segment hides a `..` behind an encoded `/` or `\`: such a path is not mirrored.
    pub escapes: bool,
}

/// Removes dot-segments from an absolute path (RFC 3986 §5.2.4), treating percent-encoded dots
/// as dots (§6.2.2.2). A `..` at the root is dropped (as the RFC says) and reported in
/// `escapes`.
pub fn normalize_path(path: &str) -> NormalPath {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').collect();
    let last = segs.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let mut escapes = false;
    for (i, seg) in segs.iter().enumerate() {
        match dots(seg) {
            Some(1) => {
                if i == last {
                    out.push("");
                }
            }
            Some(2) => {
                if out.pop().is_none() {
                    escapes = true;
                }
                if i == last {
                    out.push("");
                }
            }
            _ => {
                if seg.contains('%') || seg.contains('\\') {
                    let decoded = percent_decode_str(seg).decode_utf8_lossy();
                    if decoded.split(['/', '\\']).any(|p| p == "..") {
                        escapes = true;
                    }
                }
                out.push(seg);
            }
        }
    }
    let mut p = String::with_capacity(path.len() + 1);
    p.push('/');
    p.push_str(&out.join("/"));
    NormalPath { path: p, escapes }
}

/// `Some(n)` when a segment is `n` dots (each `.` or `%2e`), 1 or 2.
fn dots(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%' && b.len() >= i + 3 && b[i + 1] == b'2' && b[i + 2] | 0x20 == b'e' {
            i += 3;
        } else {
            return None;
        }
        n += 1;
        if n > 2 {
            return None;
        }
    }
    (n > 0).then_some(n)
}

// ------------------------------------------------------------------------------------ accounts

/// Where the account key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(http::HeaderName),
    Query(String),
}

impl std::fmt::Display for KeySource {
    /// As the config writes it: `header:NAME` or `query:NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Query(q) => write!(f, "query:{q}"),
        }
    }
}

impl KeySource {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(h) = s.strip_prefix("header:") {
            http::HeaderName::from_bytes(h.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("invalid header name {h:?}"))
        } else if let Some(q) = s.strip_prefix("query:") {
            if q.is_empty() {
                return Err("empty query parameter name".into());
            }
            Ok(Self::Query(q.to_owned()))
        } else {
            Err(format!("{s:?} must be \"header:NAME\" or \"query:NAME\""))
        }
    }

    /// The key's whole value as the caller sent it.
    pub fn extract<'a>(
        &self,
        headers: &'a http::HeaderMap,
        query: &'a [(String, String)],
    ) -> Option<&'a [u8]> {
        match self {
            Self::Header(h) => headers.get(h).map(|v| v.as_bytes()),
            Self::Query(q) => query
                .iter()
                .find(|(k, _)| k == q)
                .map(|(_, v)| v.as_bytes()),
        }
    }
}

/// One customer account from the accounts CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    columns: HashMap<String, String>,
}

impl Account {
    pub fn get(&self, column: &str) -> Option<&str> {
        if column == "name" {
            return Some(&self.name);
        }
        self.columns.get(column).map(String::as_str)
    }

    /// `{"name": …, COLUMN: value, …}`: the account as a request mapping sees it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut cols: Vec<_> = self.columns.iter().collect();
        cols.sort();
        for (k, v) in cols {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        m.insert("name".into(), serde_json::Value::String(self.name.clone()));
        serde_json::Value::Object(m)
    }
}

/// The accounts file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{path}: missing column {column:?} (the header needs key_sha256 and name)")]
    MissingColumn { path: String, column: &'static str },
    #[error("{path}: line {line}: key_sha256 must be 64 hex digits")]
    BadKey { path: String, line: u64 },
    #[error("{path}: line {line}: the same key_sha256 as line {first} (one key, one account)")]
    DuplicateKey { path: String, line: u64, first: u64 },
}

/// The crosswalk from a caller's key (by its sha256) to the account.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub source: KeySource,
    /// The CSV file it was read from.
    pub file: std::path::PathBuf,
    /// The columns `{account.COLUMN}` may name: `name` and every column but `key_sha256`.
    pub columns: Vec<String>,
    by_hash: HashMap<[u8; 32], Account>,
}

impl Accounts {
    pub fn load(source: KeySource, path: &Path) -> Result<Self, AccountsError> {
        let p = path.display().to_string();
        let csv_err = |source| AccountsError::Csv {
            path: p.clone(),
            source,
        };
        let mut rd = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(csv_err)?;
        let headers = rd.headers().map_err(csv_err)?.clone();
        let col = |name: &'static str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or(AccountsError::MissingColumn {
                    path: p.clone(),
                    column: name,
                })
        };
        let (ki, ni) = (col("key_sha256")?, col("name")?);
        let mut by_hash = HashMap::new();
        let mut lines: HashMap<[u8; 32], u64> = HashMap::new();
        for rec in rd.records() {
            let rec = rec.map_err(csv_err)?;
            let line = rec.position().map_or(0, |p| p.line());
            let key = decode_hex32(rec.get(ki).unwrap_or("")).ok_or(AccountsError::BadKey {
                path: p.clone(),
                line,
            })?;
            let columns = headers
                .iter()
                .zip(rec.iter())
                .enumerate()
                .filter(|(i, _)| *i != ki && *i != ni)
                .map(|(_, (h, v))| (h.to_owned(), v.to_owned()))
                .collect();
            let name = rec.get(ni).unwrap_or("").to_owned();
            if let Some(first) = lines.insert(key, line) {
                return Err(AccountsError::DuplicateKey {
                    path: p.clone(),
                    line,
                    first,
                });
            }
            by_hash.insert(key, Account { name, columns });
        }
        Ok(Self {
            source,
            file: path.to_path_buf(),
            columns: headers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != ki)
                .map(|(_, h)| h.to_owned())
                .collect(),
            by_hash,
        })
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// The accounts' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_hash.values().map(|a| a.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The account of this name (a replayed exchange names its account).
    pub fn named(&self, name: &str) -> Option<&Account> {
        self.by_hash.values().find(|a| a.name == name)
    }

    /// The account of a request, if its key is known.
    pub fn lookup(
        &self,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> Option<&Account> {
        let key = self.source.extract(headers, query)?;
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.by_hash.get(&digest)
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The hex sha256 of a key, as the accounts CSV wants it.
pub fn key_sha256_hex(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/employer/individual/{id}").unwrap();
        assert_eq!(
            p.matches("/employer/individual/42"),
            Some(vec![("id", "42")])
        );
        assert_eq!(p.matches("/employer/individual/"), None);
        assert_eq!(p.matches("/employer/individual/42/x"), None);
        assert_eq!(p.matches("/employer/other/42"), None);
        assert!(PathPattern::parse("employer").is_err());
        assert!(PathPattern::parse("/a/x{id}").is_err());
        assert_eq!(PathPattern::parse("/").unwrap().matches("/"), Some(vec![]));
    }

    #[test]
    fn templates() {
        assert!(Template::parse("/a/{id").is_err());
        assert!(Template::parse("/a/{}").is_err());
        assert!(Template::parse("/a/{x.y}").is_err());
        let t = Template::parse("/u/{id}/{query.q}/{account.cid}").unwrap();
        let acct = Account {
            name: "acme".into(),
            columns: [("cid".to_owned(), "c 1".to_owned())].into(),
        };
        let ctx = Context {
            captures: vec![("id", "7")],
            query: vec![("q".into(), "a/b".into())],
            account: Some(&acct),
            each: Each::None,
            ids: None,
        };
        assert_eq!(
            t.render(&ctx, encode_component).unwrap(),
            "/u/7/a%2Fb/c%201"
        );
        let none = Context::default();
        assert_eq!(
            t.render(&none, encode_component),
            Err(Var::Capture("id".into()))
        );
    }

    #[test]
    fn an_id_placeholder_renders_the_candidates_partner_or_names_itself() {
        let t = Template::parse("/employees/{id|individual}?m={query.m | individual}").unwrap();
        let lookup = |kind: &str, legacy: &str| {
            (kind == "individual" && legacy == "f 1").then(|| "m/1".to_owned())
        };
        let ctx = |id: &'static str, ids: bool| Context {
            captures: vec![("id", id)],
            query: vec![("m".into(), "f 1".into())],
            ids: ids.then_some(IdLookup(&lookup)),
            ..Context::default()
        };
        // The capture is decoded before the lookup; the partner is encoded in the path.
        assert_eq!(
            t.render_path(&ctx("f%201", true)).unwrap(),
            "/employees/m%2F1?m=m%2F1"
        );
        let unpaired = Var::Id(Box::new(Var::Capture("id".into())), "individual".into());
        assert_eq!(t.render_path(&ctx("f2", true)), Err(unpaired.clone()));
        assert_eq!(unpaired.to_string(), "{id|individual}");
        // Without a crosswalk, nothing is paired.
        assert_eq!(t.render_path(&ctx("f%201", false)), Err(unpaired));
        assert!(Template::parse("/e/{id|}").is_err());
        assert!(Template::parse("/e/{id|a b}").is_err());
    }

    #[test]
    fn candidate_query_leaves_out_absent_parameters() {
        let ct = CandidateTemplate {
            method: None,
            path: Some(Template::parse("/unified/employees").unwrap()),
            query: Some(vec![
                ("page".into(), Template::parse("{query.page}").unwrap()),
                ("cursor".into(), Template::parse("{query.cursor}").unwrap()),
                ("limit".into(), Template::parse("50").unwrap()),
            ]),
            request: None,
        };
        let ctx = Context {
            query: parse_query("page=2&other=x"),
            ..Context::default()
        };
        let t = ct
            .build(
                &http::Method::GET,
                "/directory",
                Some("page=2&other=x"),
                &[],
                &ctx,
            )
            .unwrap();
        assert_eq!(t.path_and_query, "/unified/employees?page=2&limit=50");
        let pass = CandidateTemplate {
            method: None,
            path: None,
            query: None,
            request: None,
        };
        let t = pass
            .build(&http::Method::GET, "/d", Some("a=1"), &[], &ctx)
            .unwrap();
        assert_eq!(
            t.path_and_query, "/d",
            "nothing passes without forward_query"
        );
        let allow = ["a".to_owned(), "c d".to_owned()];
        let t = pass
            .build(
                &http::Method::GET,
                "/d",
                Some("a=1&api_key=s3cret&c+d=%2F&a=2"),
                &allow,
                &ctx,
            )
            .unwrap();
        assert_eq!(t.path_and_query, "/d?a=1&c+d=%2F&a=2");
    }

    #[test]
    fn dot_segments() {
        let n = |p: &str| {
            let r = normalize_path(p);
            (r.path, r.escapes)
        };
        assert_eq!(n("/a/b/c"), ("/a/b/c".into(), false));
        assert_eq!(n("/"), ("/".into(), false));
        assert_eq!(n("/a/./b/../c"), ("/a/c".into(), false));
        assert_eq!(n("/a/b/.."), ("/a/".into(), false));
        assert_eq!(n("/a/b/."), ("/a/b/".into(), false));
        assert_eq!(n("/../admin/users"), ("/admin/users".into(), true));
        assert_eq!(n("/a/../../admin"), ("/admin".into(), true));
        assert_eq!(n("/a/%2e%2E/%2e/b"), ("/b".into(), false));
        assert_eq!(n("/%2e%2e/admin"), ("/admin".into(), true));
        assert_eq!(n("/a/..%2Fadmin"), ("/a/..%2Fadmin".into(), true));
        assert_eq!(n("/a/..%5cadmin"), ("/a/..%5cadmin".into(), true));
        assert_eq!(n("/a/...b/..c"), ("/a/...b/..c".into(), false));
        assert_eq!(n("/a//b"), ("/a//b".into(), false));
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&b=x+y&c=%2F&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "/".into()),
                ("d".into(), "".into())
            ]
        );
    }

    #[test]
    fn key_sources() {
        assert!(KeySource::parse("header:authorization").is_ok());
        assert!(KeySource::parse("query:api_key").is_ok());
        assert!(KeySource::parse("cookie:x").is_err());
        assert_eq!(key_sha256_hex(b"abc").len(), 64);
        assert_eq!(decode_hex32(&key_sha256_hex(b"abc")).unwrap()[0], 0xba);
    }
}
