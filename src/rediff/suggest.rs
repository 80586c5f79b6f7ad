//! `suggest`: from a route's kept exchanges, a change to its mapping for each systematic
//! difference, checked by re-diffing with it before it is shown.
//!
//! For each (field pattern, kind) that differs in at least `[diff] systematic_rate` of the kept
//! exchanges where legacy has the field, with the legacy values, the mapped candidate values
//! and the candidate's documents as they came:
//! 1. a consistent value translation of what the mapping produces: lower or upper case, a number
//!    sent as a string (or the reverse), a small set of value pairs (a lookup object);
//! 2. the legacy value found elsewhere in the candidate's document, at one path for every
//!    example (same array positions): the field was renamed or moved; the mapping reads it
//!    there (relative to the array element the constructor builds);
//! 3. a field legacy has and no candidate document holds anywhere (in any form): no mapping
//!    can fill it; a gap to report to the vendor.
//!
//! A proposal is an edit of the route's base mapping file ([`super::edit`]), compiled, then
//! re-diffed over the same exchanges: it is shown only when the field differs less and nothing
//! else differs more, with the parity before and after.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::edit;
use super::{Proposed, Rediff};
use crate::config::{Config, Route};
use crate::diff::{self, Difference, Kind, Seg};
use crate::mapping::runner::Runner;
use crate::mapping::{Lang, Level};
use crate::shadow::compare::Maps;
use crate::store::{KeptPair, Reader};

/// Most distinct value pairs a lookup object is proposed for.
const MAX_LOOKUP: usize = 20;
/// Examples shown per suggestion.
const EXAMPLES: usize = 3;

/// What was found for one systematic difference.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "fix", rename_all = "snake_case")]
pub enum Fix {
    /// The mapping reads the value from another path of the candidate's document.
    Path {
        /// Where the value is in the candidate's document (a field pattern).
        found_at: String,
        expr: String,
    },
    Lowercase,
    Uppercase,
    /// A number the candidate sends as a string.
    Number,
    /// A string the candidate sends as a number.
    String,
    /// A date the candidate sends with a time (`2015-01-10T00:00:00Z` for `2015-01-10`): its
    /// first ten characters.
    Date,
    /// A small translation table, candidate value → legacy value.
    Lookup {
        pairs: BTreeMap<String, Value>,
    },
    /// No candidate document holds the legacy value: no mapping can fill the field.
    NotInCandidate,
    /// Nothing found that the rediff confirms.
    None {
        why: String,
    },
}

/// One example of the difference.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub exchange: i64,
    pub pointer: String,
    /// Absent on that side: left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Value>,
}

/// The rediff of a proposal, next to the current mapping's.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub exchanges: u64,
    /// Exchanges differing at the field, now and with the change.
    pub field_before: u64,
    pub field_after: u64,
    pub parity_before: f64,
    pub parity_after: f64,
}

/// A proposed edit of the route's mapping file.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The file (or `mapping_expr`) of the route's base mapping.
    pub origin: String,
    pub lang: &'static str,
    /// A unified diff of the source.
    pub diff: String,
    #[serde(skip)]
    pub source: String,
}

/// One systematic difference and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub field: String,
    pub kind: String,
    /// Kept exchanges differing there, of those where legacy has the field.
    pub differing: u64,
    pub present: u64,
    #[serde(flatten)]
    pub fix: Fix,
    pub examples: Vec<Example>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<Checked>,
}

/// Every suggestion for a route, and the rediff with all the changes at once.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestions {
    pub route: String,
    pub exchanges: u64,
    /// Kept exchanges read that could not be used: a kept text that is not JSON, a mapping that
    /// fails on it, or no document as it came.
    pub unreadable: u64,
    pub suggestions: Vec<Suggestion>,
    /// All verified changes applied together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined: Option<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_parity: Option<(f64, f64)>,
}

/// Why no suggestion could be made at all.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("route {0}: no candidate mapping to change (add one with [routes.candidate] mapping)")]
    NoMapping(String),
}

/// One kept exchange as the suggestions read it.
struct Doc {
    id: i64,
    raw: Value,
    diffs: Vec<Difference>,
    /// The field patterns legacy's document has.
    present: HashSet<String>,
}

/// Suggestions for `route` from `pairs` (its kept exchanges).
pub fn suggest(
    cfg: &Config,
    runner: &Runner,
    reader: &dyn Reader,
    route: &Route,
    pairs: &[KeptPair],
) -> Result<Suggestions, SuggestError> {
    let base = route
        .mappings
        .candidate
        .as_ref()
        .and_then(|c| c.levels.iter().find(|l| l.name == "base"))
        .ok_or_else(|| SuggestError::NoMapping(route.name.clone()))?;
    let lang = base.mapping.lang();
    let source = base.mapping.source().to_owned();
    let mut rd = Rediff::new(cfg, runner, Proposed::default());
    let before = rd.run_pairs(reader, pairs)?;
    let noise = rd
        .noise
        .get(&Some(route.name.clone()))
        .cloned()
        .unwrap_or_default();
    let docs = docs(cfg, runner, route, pairs, &noise);
    let before_route = before.route(&route.name).cloned().unwrap_or_default();
    let count = |s: &super::Summary, field: &str, kind: &str| {
        s.route(&route.name).map_or(0, |r| {
            r.fields
                .iter()
                .find(|f| f.field == field && f.kind == kind)
                .map_or(0, |f| f.now)
        })
    };

    // Systematic (field, kind): differing in `systematic_rate` of the documents that have it.
    let mut groups: BTreeMap<(String, Kind), Vec<(usize, &Difference)>> = BTreeMap::new();
    for (i, d) in docs.iter().enumerate() {
        let mut seen = HashSet::new();
        for diff in &d.diffs {
            if diff.field.starts_with('@') || diff.kind == Kind::Extra {
                continue;
            }
            if seen.insert((diff.field.clone(), diff.kind)) {
                groups
                    .entry((diff.field.clone(), diff.kind))
                    .or_default()
                    .push((i, diff));
            }
        }
    }
    let mut out = Vec::new();
    let mut verified: Vec<EditFn> = Vec::new();
    for ((field, kind), examples) in &groups {
        let present = docs
            .iter()
            .filter(|d| d.present.contains(field))
            .count()
            .max(1) as u64;
        let differing = examples.len() as u64;
        if (differing as f64) < cfg.diff.systematic_rate * present as f64 {
            continue;
        }
        let shown = examples
            .iter()
            .take(EXAMPLES)
            .map(|(i, d)| Example {
                exchange: docs[*i].id,
                pointer: d.pointer.clone(),
                legacy: d.legacy.clone(),
                candidate: d.candidate.clone(),
            })
            .collect();
        let mut s = Suggestion {
            field: field.clone(),
            kind: kind.as_str().to_owned(),
            differing,
            present,
            fix: Fix::None {
                why: "no change found that the rediff confirms".into(),
            },
            examples: shown,
            change: None,
            checked: None,
        };
        let field_before = count(&before, field, kind.as_str());
        for (fix, edit_fn) in candidates(lang, field, *kind, examples, &docs) {
            let Some(patched) = edit_fn(&source) else {
                continue;
            };
            let Ok(level) = crate::mapping::base_level(lang, &patched, &base.origin) else {
                continue;
            };
            let Ok(after) = rerun(cfg, runner, reader, route, level, pairs) else {
                continue;
            };
            let field_after = count(&after, field, kind.as_str());
            if field_after >= field_before || !no_worse(&before, &after, &route.name) {
                continue;
            }
            let after_route = after.route(&route.name).cloned().unwrap_or_default();
            s.fix = fix;
            s.checked = Some(Checked {
                exchanges: after_route.exchanges,
                field_before,
                field_after,
                parity_before: before_route.parity,
                parity_after: after_route.parity,
            });
            s.change = Some(change(&base.origin, lang, &source, patched));
            verified.push(edit_fn);
            break;
        }
        if s.change.is_none() && *kind == Kind::Missing && never_in_candidate(examples, &docs) {
            s.fix = Fix::NotInCandidate;
        }
        out.push(s);
    }
    // Every verified change at once (each edit made again on the text the others changed).
    let mut combined = None;
    let mut combined_parity = None;
    if verified.len() > 1 {
        let mut text = source.clone();
        for f in &verified {
            if let Some(t) = f(&text) {
                text = t;
            }
        }
        if let Ok(level) = crate::mapping::base_level(lang, &text, &base.origin) {
            if let Ok(after) = rerun(cfg, runner, reader, route, level, pairs) {
                let p = after.route(&route.name).map_or(0.0, |r| r.parity);
                combined_parity = Some((before_route.parity, p));
                combined = Some(change(&base.origin, lang, &source, text));
            }
        }
    } else if let Some(s) = out.iter().find(|s| s.checked.is_some()) {
        combined_parity = s
            .checked
            .as_ref()
            .map(|c| (c.parity_before, c.parity_after));
        combined = s.change.clone();
    }
    Ok(Suggestions {
        route: route.name.clone(),
        exchanges: docs.len() as u64,
        unreadable: (pairs.len() - docs.len()) as u64,
        suggestions: out,
        combined,
        combined_parity,
    })
}

fn rerun(
    cfg: &Config,
    runner: &Runner,
    reader: &dyn Reader,
    route: &Route,
    level: Level,
    pairs: &[KeptPair],
) -> Result<super::Summary, crate::store::StoreError> {
    let mut p = Proposed::default();
    p.base.insert(route.name.clone(), level);
    Rediff::new(cfg, runner, p).run_pairs(reader, pairs)
}

/// No (field, kind) differs in more exchanges than before, and no more fail to compare.
fn no_worse(before: &super::Summary, after: &super::Summary, route: &str) -> bool {
    let (Some(b), Some(a)) = (before.route(route), after.route(route)) else {
        return false;
    };
    let errors = |r: &super::RouteSummary| r.errors.values().sum::<u64>();
    errors(a) <= errors(b)
        && a.fields.iter().all(|f| {
            let was = b
                .fields
                .iter()
                .find(|x| x.field == f.field && x.kind == f.kind)
                .map_or(0, |x| x.now);
            f.now <= was
        })
}

fn change(origin: &str, lang: Lang, before: &str, after: String) -> Change {
    let diff = similar::TextDiff::from_lines(before, &after)
        .unified_diff()
        .context_radius(2)
        .header(origin, &format!("{origin} (proposed)"))
        .to_string();
    Change {
        origin: origin.to_owned(),
        lang: lang.as_str(),
        diff,
        source: after,
    }
}

/// The kept exchanges' documents and their differences under the current mappings.
fn docs(
    cfg: &Config,
    runner: &Runner,
    route: &Route,
    pairs: &[KeptPair],
    noise: &HashSet<String>,
) -> Vec<Doc> {
    let parse = |p: &KeptPair, names: [&str; 2]| {
        let side = p.side(names[0]).or_else(|| p.side(names[1]))?;
        diff::parse_json(side.body.as_deref()?.as_bytes()).ok()
    };
    pairs
        .iter()
        .filter(|p| {
            p.side("candidate_raw").is_some()
                || p.side("legacy_raw").is_some()
                || !crate::mapping::mapped(p.mapping_version.as_deref())
        })
        .filter_map(|p| {
            let legacy = parse(p, ["legacy_raw", "legacy"])?;
            let raw = parse(p, ["candidate_raw", "candidate"])?;
            let maps = Maps {
                ids: None,
                paging: None,
                candidate: route
                    .mappings
                    .candidate_for(p.account.as_deref())
                    .map(|c| &**c),
                legacy: route.mappings.legacy.as_deref(),
                runner: Some(runner),
                timeout: cfg.mappings.timeout,
                premapped: None,
                request: None,
                rules: None,
            };
            let (l, c) = maps.apply_both(Some(legacy), Some(raw.clone())).ok()?;
            let (l, c) = (l?, c?);
            // Listed within the proxy's room: the kept texts are a vendor's, long names and all.
            let bound = crate::shadow::compare::LISTING;
            let diffs = diff::diff_within(&l, &c, &route.rules, bound)
                .diffs
                .into_iter()
                .filter(|d| !noise.contains(&d.field) && !redacted(d))
                .collect();
            let mut pats = diff::Patterns::default();
            pats.add(&l, 10_000);
            Some(Doc {
                id: p.id,
                raw,
                diffs,
                present: pats.list.into_iter().collect(),
            })
        })
        .collect()
}

fn redacted(d: &Difference) -> bool {
    let r = |v: &Option<Value>| matches!(v, Some(Value::String(s)) if s == crate::redact::REDACTED);
    r(&d.legacy) || r(&d.candidate)
}

type EditFn = Box<dyn Fn(&str) -> Option<String>>;

/// The fixes worth trying for one difference, most specific first, each with the edit that
/// makes it.
fn candidates(
    lang: Lang,
    field: &str,
    kind: Kind,
    examples: &[(usize, &Difference)],
    docs: &[Doc],
) -> Vec<(Fix, EditFn)> {
    let mut out: Vec<(Fix, EditFn)> = Vec::new();
    let pairs: Vec<(&Value, &Value)> = examples
        .iter()
        .filter_map(|(_, d)| Some((d.legacy.as_ref()?, d.candidate.as_ref()?)))
        .collect();
    let wrap = |f: &'static str, jq: &'static str| -> EditFn {
        let field = field.to_owned();
        Box::new(move |src: &str| {
            edit::replace_value(lang, src, &field, |e| match lang {
                Lang::Jsonata => format!("${f}({e})"),
                Lang::Jq => format!("({e} | {jq})"),
            })
        })
    };
    if matches!(kind, Kind::Changed | Kind::TypeChanged) && !pairs.is_empty() {
        let strings = |f: fn(&str) -> String| {
            pairs.iter().all(|(l, c)| match (l, c) {
                (Value::String(l), Value::String(c)) => f(c) == *l,
                _ => false,
            })
        };
        if strings(str::to_lowercase) {
            out.push((Fix::Lowercase, wrap("lowercase", "ascii_downcase")));
        } else if strings(str::to_uppercase) {
            out.push((Fix::Uppercase, wrap("uppercase", "ascii_upcase")));
        }
        let numbers = pairs.iter().all(|(l, c)| match (l, c) {
            (Value::Number(l), Value::String(c)) => {
                c.trim().parse::<f64>().ok() == l.as_f64() && l.as_f64().is_some()
            }
            _ => false,
        });
        if numbers {
            out.push((Fix::Number, wrap("number", "tonumber")));
        }
        let strings_of_numbers = pairs.iter().all(|(l, c)| match (l, c) {
            (Value::String(l), Value::Number(c)) => c.to_string() == *l,
            _ => false,
        });
        if strings_of_numbers {
            out.push((Fix::String, wrap("string", "tostring")));
        }
        let dates = pairs.iter().all(|(l, c)| match (l, c) {
            (Value::String(l), Value::String(c)) => diff::is_date_with_time(l, c),
            _ => false,
        });
        if dates {
            let field = field.to_owned();
            out.push((
                Fix::Date,
                Box::new(move |src: &str| {
                    edit::replace_value(lang, src, &field, |e| match lang {
                        Lang::Jsonata => format!("$substring({e}, 0, 10)"),
                        Lang::Jq => format!("({e} | .[0:10])"),
                    })
                }),
            ));
        }
        if let Some(table) = lookup(&pairs) {
            let field = field.to_owned();
            let obj = Value::Object(table.clone().into_iter().collect()).to_string();
            out.push((
                Fix::Lookup { pairs: table },
                Box::new(move |src: &str| {
                    edit::replace_value(lang, src, &field, |e| match lang {
                        Lang::Jsonata => format!("$lookup({obj}, {e})"),
                        Lang::Jq => format!("({obj}[{e}])"),
                    })
                }),
            ));
        }
    }
    for (found_at, names, root) in found_paths(field, examples, docs) {
        let expr = match (lang, root) {
            (Lang::Jsonata, true) => format!("$$.{}", edit::path_expr(lang, &names)),
            (Lang::Jq, true) => continue,
            (_, false) => edit::path_expr(lang, &names),
        };
        let field = field.to_owned();
        let e2 = expr.clone();
        out.push((
            Fix::Path {
                found_at,
                expr: expr.clone(),
            },
            Box::new(move |src: &str| {
                edit::replace_value(lang, src, &field, |_| e2.clone())
                    .or_else(|| edit::insert_member(lang, src, &field, &e2))
            }),
        ));
    }
    out
}

/// A translation table when the pairs are a function of a few string values that is not the
/// identity, each value seen at least twice on average: a table of values each seen once is
/// the recorded traffic memorised (it passes the rediff and fails on the next record).
fn lookup(pairs: &[(&Value, &Value)]) -> Option<BTreeMap<String, Value>> {
    let mut t: BTreeMap<String, Value> = BTreeMap::new();
    for (l, c) in pairs {
        let Value::String(c) = c else { return None };
        if l.is_object() || l.is_array() {
            return None;
        }
        match t.get(c) {
            Some(v) if v != *l => return None,
            Some(_) => {}
            None => {
                t.insert(c.clone(), (*l).clone());
            }
        }
    }
    (!t.is_empty() && t.len() <= MAX_LOOKUP && pairs.len() >= 2 * t.len()).then_some(t)
}

/// The array positions of a pointer whose field pattern has `*` there.
fn indices(pointer: &str, field: &str) -> Vec<String> {
    let p = crate::redact::parse_pointer(pointer);
    let f = crate::redact::parse_pointer(field);
    p.into_iter()
        .zip(f)
        .filter(|(_, f)| f == "*")
        .map(|(p, _)| p)
        .collect()
}

/// Where the legacy values of the examples are in the candidate's documents: field patterns of
/// the raw documents holding the value at the same array positions, for at least 90% of the
/// examples with a telling value (not null, a boolean, or a string under 2 characters), best
/// first. Each comes with the member names to read relative to the constructor's array element,
/// and whether they start at the document's root instead.
fn found_paths(
    field: &str,
    examples: &[(usize, &Difference)],
    docs: &[Doc],
) -> Vec<(String, Vec<String>, bool)> {
    let depth = crate::redact::parse_pointer(field)
        .iter()
        .filter(|t| *t == "*")
        .count();
    let mut score: BTreeMap<String, usize> = BTreeMap::new();
    let mut reads: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    let mut telling = 0;
    for (i, d) in examples {
        let Some(v) = d.legacy.as_ref().filter(|v| is_telling(v)) else {
            continue;
        };
        telling += 1;
        let want: Vec<usize> = indices(&d.pointer, field)
            .iter()
            .map(|w| w.parse().unwrap_or(usize::MAX))
            .collect();
        let mut hits = HashSet::new();
        find(&docs[*i].raw, v, &mut Vec::new(), &mut |path: &[Seg<
            '_,
        >]| {
            if let Some((pattern, read)) = candidate_read(path, depth, &want) {
                reads.entry(pattern.clone()).or_insert(read);
                hits.insert(pattern);
            }
        });
        for h in hits {
            *score.entry(h).or_default() += 1;
        }
    }
    if telling == 0 {
        return Vec::new();
    }
    let mut found: Vec<(String, usize)> = score
        .into_iter()
        .filter(|(_, n)| *n * 10 >= telling * 9)
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.len().cmp(&b.0.len())));
    found
        .into_iter()
        .filter_map(|(pattern, _)| {
            let (names, root) = reads.remove(&pattern)?;
            Some((pattern, names, root))
        })
        .take(4)
        .collect()
}

/// Where a candidate path holding the legacy value is read from, if it lines up with the
/// legacy field's array positions (`want`, the first `depth` indices): its pattern (those
/// positions `*`, any deeper array position kept: `emails/0/value`, the same in every example)
/// and the names to read — after the element the constructor maps over (an index as `[N]`), or
/// from the document's root when the path crosses no array at all.
fn candidate_read(
    path: &[Seg<'_>],
    depth: usize,
    want: &[usize],
) -> Option<(String, (Vec<String>, bool))> {
    let idx: Vec<usize> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Index(i) => Some(*i),
            Seg::Key(_) => None,
        })
        .collect();
    let relative = idx.len() >= depth && idx[..depth] == *want;
    if !relative && !idx.is_empty() {
        return None;
    }
    let mut pattern = String::new();
    let mut names = Vec::new();
    let mut n = 0;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                diff::glob::push_token(&mut pattern, k);
                if n >= depth || !relative {
                    names.push((*k).to_owned());
                }
            }
            Seg::Index(i) => {
                if n < depth {
                    pattern.push_str("/*");
                } else {
                    pattern.push_str(&format!("/{i}"));
                    names.push(format!("[{i}]"));
                }
                n += 1;
            }
        }
    }
    (!names.is_empty() && !names[0].starts_with('[')).then_some((pattern, (names, !relative)))
}

fn is_telling(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) => false,
        Value::String(s) => s.chars().count() >= 2 && s != crate::redact::REDACTED,
        _ => true,
    }
}

/// Calls `hit` with the path of every node of `doc` equal to `want`.
fn find<'a>(
    doc: &'a Value,
    want: &Value,
    path: &mut Vec<Seg<'a>>,
    hit: &mut dyn FnMut(&[Seg<'_>]),
) {
    if doc == want {
        hit(path);
    }
    match doc {
        Value::Object(o) => {
            for (k, v) in o {
                path.push(Seg::Key(k));
                find(v, want, path, hit);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                find(v, want, path, hit);
                path.pop();
            }
        }
        _ => {}
    }
}

/// No candidate document holds any telling legacy value of the examples, as it is or in
/// another case or type (a number as a string), anywhere.
fn never_in_candidate(examples: &[(usize, &Difference)], docs: &[Doc]) -> bool {
    let mut telling = 0;
    for (i, d) in examples {
        let Some(v) = d.legacy.as_ref().filter(|v| is_telling(v)) else {
            continue;
        };
        telling += 1;
        let leaves = leaves(v);
        if leaves.is_empty() {
            continue;
        }
        let mut all = HashSet::new();
        collect_texts(&docs[*i].raw, &mut all);
        if leaves.iter().any(|l| all.contains(l)) {
            return false;
        }
    }
    telling > 0
}

/// The scalar texts of a value, lower-cased (objects: their telling leaves).
fn leaves(v: &Value) -> Vec<String> {
    let mut out = HashSet::new();
    collect_texts(v, &mut out);
    out.into_iter().filter(|t| t.chars().count() >= 2).collect()
}

fn collect_texts(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.to_lowercase());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Object(o) => o.values().for_each(|c| collect_texts(c, out)),
        Value::Array(a) => a.iter().for_each(|c| collect_texts(c, out)),
        _ => {}
    }
}
