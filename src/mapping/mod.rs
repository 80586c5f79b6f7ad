//! Response mappings: the candidate's JSON reshaped into the legacy schema (and, optionally,
//! legacy's normalised too) before the diff, with declarative JSONata or jq.
//!
//! A route's candidate mapping is a chain of up to three levels, each applied to the previous
//! one's output: the **base** mapping (`[routes.candidate] mapping` or `mapping_expr`), the
//! **environment** override (`<dir>/environments/<env>/<route>.<ext>` with `[mappings]
//! environment`), and the **account** override (`<dir>/accounts/<account>/<route>.<ext>`, for
//! that account only). A missing level is skipped. Every chain has a short version hash
//! recorded with each exchange (`mapping_version`).
//!
//! Mappings are compiled when the config loads (so `check` and a reload fail on a broken one)
//! and evaluated in mapping worker processes ([`runner`]): a mapping that panics, overflows the
//! stack, loops or runs past its time budget costs one worker process and gives the exchange
//! the outcome `mapping_error`, never the proxy.

pub mod jq;
pub mod jsonata;
pub mod runner;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A mapping language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Jsonata,
    Jq,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonata => "jsonata",
            Self::Jq => "jq",
        }
    }

    pub fn ext(self) -> &'static str {
        self.as_str()
    }

    /// The language of a mapping file, by its extension (`.jsonata`, `.jq`).
    pub fn of_path(p: &Path) -> Option<Self> {
        match p.extension()?.to_str()? {
            "jsonata" => Some(Self::Jsonata),
            "jq" => Some(Self::Jq),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jsonata" => Some(Self::Jsonata),
            "jq" => Some(Self::Jq),
            _ => None,
        }
    }
}

/// Why a mapping gave no document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    /// The expression does not compile (with its position when the engine gives one).
    #[error("{0}")]
    Compile(String),
    /// The evaluation failed.
    #[error("{0}")]
    Eval(String),
    /// The result was undefined (JSONata) or an empty stream (jq).
    #[error("the mapping returned nothing")]
    Nothing,
    #[error("the mapping ran past its time budget of {0:?}")]
    Timeout(Duration),
    /// The engine panicked or its worker process died (stack overflow, abort).
    #[error("the mapping crashed its worker: {0}")]
    Crash(String),
    /// The result cannot be used as a document.
    #[error("{0}")]
    Output(String),
    /// No worker could be started.
    #[error("mapping workers unavailable: {0}")]
    Unavailable(String),
}

/// Budgets of one evaluation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    /// JSONata's evaluation stack depth (its `stack` option).
    pub max_stack: usize,
    /// Longest JSONata sequence (its `sequence` option).
    pub max_sequence: usize,
    /// Evaluate JSONata against no input at all (undefined), not against `null`: for the
    /// conformance suite, never for exchanges.
    pub undefined_input: bool,
    started: Instant,
}

impl Limits {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            max_stack: 2_000,
            max_sequence: 10_000_000,
            undefined_input: false,
            started: Instant::now(),
        }
    }

    pub fn expired(&self) -> bool {
        self.started.elapsed() > self.timeout
    }
}

/// One compiled mapping.
pub trait Mapping: Send + Sync {
    fn lang(&self) -> Lang;
    fn source(&self) -> &str;
    /// Evaluates the mapping on `input` (depth-bounded JSON). Runs in a mapping worker.
    fn apply(&self, input: &Value, limits: &Limits) -> Result<Value, MappingError>;
}

/// Compiles a mapping.
pub fn compile(lang: Lang, source: &str) -> Result<Arc<dyn Mapping>, MappingError> {
    Ok(match lang {
        Lang::Jsonata => Arc::new(jsonata::Jsonata::compile(source)?),
        Lang::Jq => Arc::new(jq::Jq::compile(source)?),
    })
}

/// 1-based line and column of a byte offset.
pub fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// One level of a chain.
#[derive(Clone)]
pub struct Level {
    /// `base`, `environment NAME`, `account NAME` or `legacy`.
    pub name: String,
    /// The file it came from, or `mapping_expr`.
    pub origin: String,
    pub mapping: Arc<dyn Mapping>,
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.name,
            self.origin,
            self.mapping.lang().as_str()
        )
    }
}

/// The levels applied to one side of one (route, account), and their version.
#[derive(Debug, Clone)]
pub struct Chain {
    pub levels: Vec<Level>,
    /// The first 12 hex digits of a hash over each level's language and source.
    pub version: String,
}

impl Chain {
    pub fn new(levels: Vec<Level>) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        for l in &levels {
            h.update(l.mapping.lang().as_str().as_bytes());
            h.update(&[0]);
            h.update(l.mapping.source().as_bytes());
            h.update(&[0]);
        }
        let version = format!("{:016x}", h.digest())[..12].to_owned();
        Self { levels, version }
    }

    /// Applies the levels in order, in this process (the worker's side of [`runner`]).
    pub fn apply(&self, input: &Value, limits: &Limits) -> Result<Value, MappingError> {
        let mut doc = std::borrow::Cow::Borrowed(input);
        for l in &self.levels {
            let out = l.mapping.apply(&doc, limits).map_err(|e| at_level(l, e))?;
            doc = std::borrow::Cow::Owned(out);
        }
        Ok(doc.into_owned())
    }

    /// `base mappings/x.jsonata → environment production … (version abc)`.
    pub fn describe(&self) -> String {
        let levels: Vec<String> = self
            .levels
            .iter()
            .map(|l| format!("{} {} ({})", l.name, l.origin, l.mapping.lang().as_str()))
            .collect();
        format!("{} [version {}]", levels.join(" → "), self.version)
    }
}

/// The prefix of a `mapping_version` that versions the diff rules of an exchange no mapping
/// applied to: its stored bodies are the documents as they came.
pub const RULES_ONLY: &str = "rules-";

/// The `mapping_version` an exchange records: what judged it. The candidate chain's version,
/// the legacy mapping's, or a hash of every part that applied (both response mappings, the
/// request mapping, the diff rules' version); `rules-` and the rules' version when only rules
/// applied; `None` when nothing did. A change of any part starts a new version.
pub fn recorded_version(
    candidate: Option<&Chain>,
    legacy: Option<&Chain>,
    request: Option<&Chain>,
    rules: Option<&str>,
) -> Option<String> {
    let hash =
        |s: String| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))[..12].to_owned();
    let mut version = match (candidate, legacy) {
        (None, None) => None,
        (Some(c), None) => Some(c.version.clone()),
        (None, Some(l)) => Some(l.version.clone()),
        (Some(c), Some(l)) => Some(hash(format!("{}+{}", c.version, l.version))),
    };
    if let Some(req) = request {
        version = Some(hash(format!(
            "{}+request:{}",
            version.unwrap_or_default(),
            req.version
        )));
    }
    match (rules, version) {
        (Some(rules), Some(v)) => Some(hash(format!("{v}+rules:{rules}"))),
        (Some(rules), None) => Some(format!("{RULES_ONLY}{rules}")),
        (None, v) => v,
    }
}

/// Whether an exchange recorded with this `mapping_version` went through a mapping (its stored
/// documents are mapped ones; the raw ones are kept beside them since the raw sides exist).
pub fn mapped(version: Option<&str>) -> bool {
    version.is_some_and(|v| !v.starts_with(RULES_ONLY))
}

/// Names the level in an error message.
pub fn at_level(l: &Level, e: MappingError) -> MappingError {
    let ctx = |m: String| format!("{} mapping {}: {m}", l.name, l.origin);
    match e {
        MappingError::Compile(m) => MappingError::Compile(ctx(m)),
        MappingError::Eval(m) => MappingError::Eval(ctx(m)),
        MappingError::Output(m) => MappingError::Output(ctx(m)),
        MappingError::Nothing => MappingError::Eval(ctx("returned nothing".into())),
        other => other,
    }
}

/// The mappings of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteMappings {
    /// Base and environment levels, for accounts without an override.
    pub candidate: Option<Arc<Chain>>,
    /// Per account: base, environment and the account's level.
    pub accounts: BTreeMap<String, Arc<Chain>>,
    pub legacy: Option<Arc<Chain>>,
}

impl RouteMappings {
    /// The candidate chain for an account.
    pub fn candidate_for(&self, account: Option<&str>) -> Option<&Arc<Chain>> {
        account
            .and_then(|a| self.accounts.get(a))
            .or(self.candidate.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.candidate.is_none() && self.accounts.is_empty() && self.legacy.is_none()
    }
}

/// Where a route's mapping levels come from (resolved paths), for [`load_route`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `[routes.candidate] mapping` (a file) or `mapping_expr` (+ language).
    pub base: Option<Source>,
    pub legacy: Option<Source>,
}

#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Expr(Lang, String),
}

/// `[mappings]`: the override folders and the evaluation budget.
#[derive(Debug, Clone)]
pub struct MappingsConfig {
    /// `mappings/` beside the config file by default.
    pub dir: PathBuf,
    pub environment: Option<String>,
    /// Per evaluation of a chain.
    pub timeout: Duration,
    /// Worker processes.
    pub workers: usize,
}

fn load_source(src: &Source, name: &str) -> Result<Level, String> {
    let (lang, text, origin) = match src {
        Source::File(p) => {
            let lang = Lang::of_path(p).ok_or_else(|| {
                format!("{}: a mapping file ends in .jsonata or .jq", p.display())
            })?;
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            (lang, text, p.display().to_string())
        }
        Source::Expr(lang, text) => (*lang, text.clone(), "mapping_expr".to_owned()),
    };
    let mapping = compile(lang, &text).map_err(|e| format!("{origin}: {e}"))?;
    Ok(Level {
        name: name.to_owned(),
        origin,
        mapping,
    })
}

/// Compiles a route's request mapping (one level, named `request`: no environment or account
/// override).
pub fn load_request(src: &Source) -> Result<Arc<Chain>, String> {
    let mut level = load_source(src, "request")?;
    if matches!(src, Source::Expr(..)) {
        level.origin = "request_expr".into();
    }
    Ok(Arc::new(Chain::new(vec![level])))
}

/// The override file of a route in a folder: `<dir>/<route>.jsonata` or `.jq` (both is an
/// error).
fn override_in(dir: &Path, route: &str) -> Result<Option<PathBuf>, String> {
    let found: Vec<PathBuf> = [Lang::Jsonata, Lang::Jq]
        .iter()
        .map(|l| dir.join(format!("{route}.{}", l.ext())))
        .filter(|p| p.is_file())
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => Err(format!(
            "{}: both {route}.jsonata and {route}.jq exist; keep one",
            dir.display()
        )),
    }
}

/// The route's file in a folder of proposed mappings (`rediff --mappings DIR`:
/// `DIR/<route>.jsonata` or `.jq`), compiled as a `base` level.
pub fn proposed_base(dir: &Path, route: &str) -> Result<Option<Level>, String> {
    override_in(dir, route)?
        .map(|p| load_source(&Source::File(p), "base"))
        .transpose()
}

/// A `base` level compiled from source text (`suggest`'s proposals).
pub fn base_level(lang: Lang, source: &str, origin: &str) -> Result<Level, MappingError> {
    Ok(Level {
        name: "base".to_owned(),
        origin: origin.to_owned(),
        mapping: compile(lang, source)?,
    })
}

/// Loads and compiles a route's chains.
pub fn load_route(
    route: &str,
    src: &Sources,
    cfg: &MappingsConfig,
) -> Result<RouteMappings, String> {
    let mut levels = Vec::new();
    if let Some(b) = &src.base {
        levels.push(load_source(b, "base")?);
    }
    if let Some(env) = &cfg.environment {
        let dir = cfg.dir.join("environments").join(env);
        if let Some(p) = override_in(&dir, route)? {
            levels.push(load_source(
                &Source::File(p),
                &format!("environment {env}"),
            )?);
        }
    }
    let mut out = RouteMappings {
        candidate: (!levels.is_empty()).then(|| Arc::new(Chain::new(levels.clone()))),
        ..RouteMappings::default()
    };
    let accounts = cfg.dir.join("accounts");
    if let Ok(entries) = std::fs::read_dir(&accounts) {
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        for account in names {
            if let Some(p) = override_in(&accounts.join(&account), route)? {
                let mut chain = levels.clone();
                chain.push(load_source(
                    &Source::File(p),
                    &format!("account {account}"),
                )?);
                out.accounts.insert(account, Arc::new(Chain::new(chain)));
            }
        }
    }
    if let Some(l) = &src.legacy {
        out.legacy = Some(Arc::new(Chain::new(vec![load_source(l, "legacy")?])));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[allow(clippy::needless_pass_by_value)] // the cases read better with owned documents
    fn run(lang: Lang, src: &str, input: Value) -> Result<Value, MappingError> {
        compile(lang, src)?.apply(&input, &Limits::new(Duration::from_secs(5)))
    }

    #[test]
    fn both_languages_reshape_a_document() {
        let input = json!({"data": [{"id": "1", "name": {"first": "Ann"}}]});
        let want = json!({"individuals": [{"id": "1", "first_name": "Ann"}]});
        let j = run(
            Lang::Jsonata,
            r#"{"individuals": [data.{"id": id, "first_name": name.first}]}"#,
            input.clone(),
        );
        assert_eq!(j.unwrap(), want);
        let q = run(
            Lang::Jq,
            r#"{individuals: [.data[] | {id, first_name: .name.first}]}"#,
            input,
        );
        assert_eq!(q.unwrap(), want);
    }

    #[test]
    fn the_jsonata_singleton_trap_and_its_idiom() {
        let one = json!({"data": [{"id": "1"}]});
        // A path over a one-element array gives the element, not an array...
        assert_eq!(
            run(Lang::Jsonata, r#"{"ids": data.id}"#, one.clone()).unwrap(),
            json!({"ids": "1"})
        );
        // ...unless the path is wrapped in [...].
        assert_eq!(
            run(Lang::Jsonata, r#"{"ids": [data.id]}"#, one).unwrap(),
            json!({"ids": ["1"]})
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = compile(Lang::Jq, ".a | {b: }").err().unwrap().to_string();
        assert!(e.contains("line 1, column"), "{e}");
        let e = compile(Lang::Jq, "nosuchfn(1)").err().unwrap().to_string();
        assert!(e.contains("undefined") && e.contains("nosuchfn"), "{e}");
        let e = compile(Lang::Jsonata, "{\n  \"a\": b +* c\n}")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert_eq!(
            run(Lang::Jsonata, "nothing.here", json!({})),
            Err(MappingError::Nothing)
        );
        assert_eq!(
            run(Lang::Jq, "empty", json!({})),
            Err(MappingError::Nothing)
        );
        let e = run(Lang::Jq, ".[]", json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("more than one output"), "{e}");
        let e = run(Lang::Jsonata, "$error('boom')", json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("boom"), "{e}");
    }

    #[test]
    fn numbers_come_out_as_json_numbers() {
        assert_eq!(
            run(Lang::Jsonata, "{\"a\": 2 * 3, \"b\": 1 / 4}", json!({})).unwrap(),
            json!({"a": 6, "b": 0.25})
        );
        let big: Value = serde_json::from_str(r#"{"n": 12345678901234567890123}"#).unwrap();
        assert_eq!(run(Lang::Jq, ".", big.clone()).unwrap(), big);
    }

    #[test]
    fn versions_depend_on_every_level() {
        let l = |src: &str| Level {
            name: "base".into(),
            origin: "x".into(),
            mapping: compile(Lang::Jq, src).unwrap(),
        };
        let a = Chain::new(vec![l(".")]);
        let b = Chain::new(vec![l("."), l(".a")]);
        assert_eq!(a.version.len(), 12);
        assert_ne!(a.version, b.version);
        assert_eq!(a.version, Chain::new(vec![l(".")]).version);
    }
}
