//! The id crosswalk: each vendor issues its own ids (Finch's `individual_id` is not Merge's
//! employee `id`), so the pairs (account, kind, legacy id ↔ candidate id) are learned from paired
//! traffic and then used everywhere an id crosses from one vendor to the other:
//!
//! - **learned** ([`learn`]): in a compared exchange, the records of a kind on both sides (after
//!   the candidate's mapping, so both in legacy's schema) are paired by the kind's natural key
//!   (`match`: e.g. first + last name), where that key is unique on both sides;
//! - **in the comparison** ([`Crosswalk::to_legacy_ids`]): the candidate's ids at the route's id
//!   fields are replaced by their legacy partners before the diff, so a paired id is equal, and
//!   an id without a partner is a difference of its own kind, `unpaired_id`;
//! - **in requests**: a `{NAME|KIND}` placeholder renders the candidate's partner of a legacy id
//!   (`translate`); an id without one is never sent (`skipped`, `unpaired_id`);
//! - **in served answers**: the candidate's ids are turned back into legacy's; one without a
//!   partner makes the answer fall back to legacy's.
//!
//! A pair, once made, is never replaced: an observation that contradicts it (the legacy id seen
//! with another candidate id, or the other way round) is a **conflict**, counted and kept for
//! the operator, and the first pair stays. Each (account, kind) holds at most `max_pairs` pairs;
//! past it the oldest learned pair is forgotten first (it is learned again when seen again). The
//! store keeps ids only ([`store::ids`](crate::store)): never the natural key's values.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use serde_json::Value;

use crate::diff::{Glob, Seg};

/// Per (account, kind) pairs kept in memory by default.
pub const DEFAULT_MAX_PAIRS: usize = 100_000;

/// `[ids.KIND]`: an entity kind whose ids differ between the vendors.
#[derive(Debug, Clone, PartialEq)]
pub struct KindSpec {
    pub name: String,
    /// Where a record's id sits inside the record (a pointer; `/id` by default).
    pub id: String,
    /// The natural keys that pair two records, tried in order: each a list of pointers inside
    /// the record (legacy's schema), whose values together must be unique on both sides.
    pub keys: Vec<Vec<String>>,
    /// Pairs kept per account.
    pub max_pairs: usize,
}

/// `[routes.ids]`: where a route's documents (legacy's schema) hold ids of a kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteIds {
    /// Record patterns (`/individuals/*`) and their kind: each match is one record, its id at the
    /// kind's `id`, its natural key inside it.
    pub records: Vec<(Glob, String)>,
    /// Other fields holding an id of a kind (`/individuals/*/manager/id`).
    pub refs: Vec<(Glob, String)>,
    /// Fields of the candidate's request body (built by the request mapping) holding legacy
    /// ids, sent as the candidate's partners (`/ids/*`).
    pub request: Vec<(Glob, String)>,
    /// Every id field ([`RouteIds::id_fields`]), compiled once ([`RouteIds::compile`]).
    fields: Vec<(Glob, String)>,
}

impl RouteIds {
    pub fn new(records: Vec<(Glob, String)>, refs: Vec<(Glob, String)>) -> Self {
        Self {
            records,
            refs,
            request: Vec::new(),
            fields: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.refs.is_empty()
    }

    /// With the fields of the candidate's request body that hold legacy ids.
    #[must_use]
    pub fn with_request(mut self, request: Vec<(Glob, String)>) -> Self {
        self.request = request;
        self
    }

    /// The route's ids with their id fields compiled for `kinds`.
    #[must_use]
    pub fn compile(mut self, kinds: &[KindSpec]) -> Self {
        self.fields = self.id_fields(kinds);
        self
    }

    /// The id fields: compiled, or computed now.
    fn fields(&self, kinds: &[KindSpec]) -> std::borrow::Cow<'_, [(Glob, String)]> {
        if self.fields.is_empty() {
            std::borrow::Cow::Owned(self.id_fields(kinds))
        } else {
            std::borrow::Cow::Borrowed(&self.fields)
        }
    }

    /// Every id field: the records' id fields (pattern + the kind's `id`) and the references.
    pub fn id_fields(&self, kinds: &[KindSpec]) -> Vec<(Glob, String)> {
        let mut out = Vec::new();
        for (g, kind) in &self.records {
            if let Some(k) = kinds.iter().find(|k| &k.name == kind) {
                if let Ok(field) = Glob::new(&format!("{}{}", g.as_str(), k.id)) {
                    out.push((field, kind.clone()));
                }
            }
        }
        out.extend(self.refs.iter().cloned());
        out
    }
}

pub mod follow;

pub use crate::record::{IdsSeen as Observed, Pair, Unpaired};

/// What learning one pair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// A pair not known before.
    New,
    /// Known already.
    Known,
    /// Contradicts a pair already made (which stays): the partner already held.
    Conflict { held: Pair },
}

#[derive(Default)]
struct Table {
    /// Legacy id → the candidate's, and whether the candidate's is a JSON number.
    to_candidate: HashMap<String, (String, bool)>,
    /// Candidate id → legacy's, and whether legacy's is a JSON number.
    to_legacy: HashMap<String, (String, bool)>,
    /// Legacy ids in the order they were learned (eviction: oldest first).
    order: VecDeque<String>,
}

/// The pairs in memory, per (account, kind). Shared by the proxy (lookups on the caller's path:
/// a read lock and two hash lookups) and the comparisons (learning).
#[derive(Default)]
pub struct Crosswalk {
    /// Account → kind → its pairs (looked up by borrowed names, without allocating).
    tables: RwLock<HashMap<String, HashMap<String, Table>>>,
    /// Incremented by every new pair: comparisons memoised before it are stale.
    generation: AtomicU64,
    conflicts: AtomicU64,
}

impl std::fmt::Debug for Crosswalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crosswalk")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Crosswalk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes with every new pair.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Conflicts met since start.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Adds a pair unless it contradicts one already made; at `max` pairs for the (account,
    /// kind), the oldest is forgotten first.
    pub fn learn(&self, pair: &Pair, max: usize) -> Learned {
        // Known pairs (most observations once warm) under the read lock.
        if self
            .to_candidate(&pair.account, &pair.kind, &pair.legacy)
            .is_some_and(|c| c == pair.candidate)
        {
            return Learned::Known;
        }
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = table_of(&mut tables, pair);
        let held_c = t.to_candidate.get(&pair.legacy);
        let held_l = t.to_legacy.get(&pair.candidate);
        match (held_c, held_l) {
            (Some((c, _)), Some((l, _))) if c == &pair.candidate && l == &pair.legacy => {
                return Learned::Known
            }
            (Some((c, _)), _) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Learned::Conflict {
                    held: Pair {
                        candidate: c.clone(),
                        ..pair.clone()
                    },
                };
            }
            (None, Some((l, _))) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Learned::Conflict {
                    held: Pair {
                        legacy: l.clone(),
                        ..pair.clone()
                    },
                };
            }
            (None, None) => {}
        }
        while t.to_candidate.len() >= max.max(1) {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            if let Some((c, _)) = t.to_candidate.remove(&old) {
                t.to_legacy.remove(&c);
            }
        }
        t.to_candidate.insert(
            pair.legacy.clone(),
            (
                pair.candidate.clone(),
                pair.numbers & Pair::CANDIDATE_NUMBER != 0,
            ),
        );
        t.to_legacy.insert(
            pair.candidate.clone(),
            (pair.legacy.clone(), pair.numbers & Pair::LEGACY_NUMBER != 0),
        );
        t.order.push_back(pair.legacy.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        Learned::New
    }

    /// Takes a pair as the store holds it (the fleet's authority): any pair in memory that
    /// contradicts it is dropped for it. Returns whether memory changed.
    pub fn adopt(&self, pair: &Pair, max: usize) -> bool {
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = table_of(&mut tables, pair);
        if t.to_candidate
            .get(&pair.legacy)
            .is_some_and(|(c, _)| c == &pair.candidate)
        {
            return false;
        }
        if let Some((c, _)) = t.to_candidate.remove(&pair.legacy) {
            t.to_legacy.remove(&c);
        }
        if let Some((l, _)) = t.to_legacy.remove(&pair.candidate) {
            t.to_candidate.remove(&l);
        }
        drop(tables);
        self.learn(pair, max);
        true
    }

    /// The candidate's id paired with a legacy id.
    pub fn to_candidate(&self, account: &str, kind: &str, legacy: &str) -> Option<String> {
        self.lookup(account, kind, |t| t.to_candidate.get(legacy))
            .map(|(id, _)| id)
    }

    /// The legacy id paired with a candidate's id.
    pub fn to_legacy(&self, account: &str, kind: &str, candidate: &str) -> Option<String> {
        self.lookup(account, kind, |t| t.to_legacy.get(candidate))
            .map(|(id, _)| id)
    }

    /// The candidate's id paired with a legacy id, as the JSON value the candidate writes.
    fn candidate_value(&self, account: &str, kind: &str, legacy: &str) -> Option<Value> {
        self.lookup(account, kind, |t| t.to_candidate.get(legacy))
            .map(id_value)
    }

    /// The legacy id paired with a candidate's id, as the JSON value legacy writes.
    fn legacy_value(&self, account: &str, kind: &str, candidate: &str) -> Option<Value> {
        self.lookup(account, kind, |t| t.to_legacy.get(candidate))
            .map(id_value)
    }

    fn lookup(
        &self,
        account: &str,
        kind: &str,
        f: impl FnOnce(&Table) -> Option<&(String, bool)>,
    ) -> Option<(String, bool)> {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tables
            .get(account)
            .and_then(|kinds| kinds.get(kind))
            .and_then(|t| f(t).cloned())
    }

    /// Pairs held per (account, kind).
    pub fn counts(&self) -> Vec<(String, String, usize)> {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = tables
            .iter()
            .flat_map(|(a, kinds)| {
                kinds
                    .iter()
                    .map(move |(k, t)| (a.clone(), k.clone(), t.to_candidate.len()))
            })
            .collect();
        out.sort();
        out
    }

    /// Learns the pairs of one compared exchange from its two documents (legacy's schema) and
    /// replaces the candidate's ids at the route's id fields by their legacy partners. Returns
    /// what was learned and met, and the pointers (candidate's document, then legacy's) of ids
    /// left without a partner.
    ///
    /// Pairs are learned only when `whole` (both documents hold every record of the list: a
    /// natural key unique on one page of each side can still name two people when the pages
    /// hold different records).
    pub fn apply(
        &self,
        account: &str,
        route: &RouteIds,
        kinds: &[KindSpec],
        (legacy, whole): (&Value, bool),
        candidate: &mut Value,
    ) -> Applied {
        let mut obs = Observed::default();
        let found = if whole {
            learn(route, kinds, legacy, candidate)
        } else {
            Vec::new()
        };
        for p in found {
            let max = kinds
                .iter()
                .find(|k| k.name == p.kind)
                .map_or(DEFAULT_MAX_PAIRS, |k| k.max_pairs);
            let pair = Pair {
                account: account.to_owned(),
                kind: p.kind,
                legacy: p.legacy,
                candidate: p.candidate,
                numbers: p.numbers,
            };
            match self.learn(&pair, max) {
                Learned::New => obs.pairs.push(pair),
                Learned::Known => {}
                Learned::Conflict { held } => obs.conflicts.push((pair, held)),
            }
        }
        let fields = route.fields(kinds);
        let mut out = Applied::default();
        for (glob, kind) in fields.iter() {
            each_mut(candidate, glob, &mut |ptr, v| {
                let Some(id) = id_text(v) else { return };
                match self.legacy_value(account, kind, &id) {
                    Some(l) => *v = l,
                    None => {
                        out.candidate_unpaired.push(ptr);
                        obs.unpaired.push(Unpaired {
                            account: account.to_owned(),
                            kind: kind.clone(),
                            side: "candidate",
                            id,
                        });
                    }
                }
            });
            for (ptr, v) in matches(legacy, glob) {
                let Some(id) = id_text(v) else { continue };
                if self.to_candidate(account, kind, &id).is_none() {
                    out.legacy_unpaired.push(ptr);
                    obs.unpaired.push(Unpaired {
                        account: account.to_owned(),
                        kind: kind.clone(),
                        side: "legacy",
                        id,
                    });
                }
            }
        }
        out.observed = obs;
        out
    }

    /// A request body: the legacy ids at `fields` replaced by the candidate's partners. `Err`
    /// with the pointer of the first id that has none (the request must not be sent).
    pub fn to_candidate_ids(
        &self,
        account: &str,
        fields: &[(Glob, String)],
        doc: &mut Value,
    ) -> Result<usize, String> {
        replace_ids(fields, doc, |kind, id| {
            self.candidate_value(account, kind, id)
        })
    }

    /// A served document: the candidate's ids at the route's id fields replaced by legacy's.
    /// `Err` with the first id that has no legacy partner (nothing of it may reach the caller).
    pub fn serve(
        &self,
        account: &str,
        route: &RouteIds,
        kinds: &[KindSpec],
        doc: &mut Value,
    ) -> Result<usize, String> {
        replace_ids(&route.fields(kinds), doc, |kind, id| {
            self.legacy_value(account, kind, id)
        })
    }
}

/// Replaces every id at `fields` by `partner(kind, id)` (nulls left as they are); `Err` with the
/// pointer of the first id without one, or that is not an id (the document is then unusable).
fn replace_ids(
    fields: &[(Glob, String)],
    doc: &mut Value,
    partner: impl Fn(&str, &str) -> Option<Value>,
) -> Result<usize, String> {
    let mut n = 0;
    let mut failed = None;
    for (glob, kind) in fields {
        each_mut(doc, glob, &mut |ptr, v| {
            if v.is_null() || failed.is_some() {
                return;
            }
            match id_text(v).and_then(|id| partner(kind, &id)) {
                Some(p) => {
                    *v = p;
                    n += 1;
                }
                None => failed = Some(ptr),
            }
        });
    }
    failed.map_or(Ok(n), Err)
}

/// The (account, kind) table a pair belongs to, made when missing.
fn table_of<'t>(
    tables: &'t mut HashMap<String, HashMap<String, Table>>,
    pair: &Pair,
) -> &'t mut Table {
    tables
        .entry(pair.account.clone())
        .or_default()
        .entry(pair.kind.clone())
        .or_default()
}

/// What [`Crosswalk::apply`] did to one exchange.
#[derive(Debug, Default)]
pub struct Applied {
    pub observed: Observed,
    /// Pointers into the candidate's document of ids without a legacy partner.
    pub candidate_unpaired: Vec<String>,
    /// Pointers into legacy's document of ids without a candidate partner.
    pub legacy_unpaired: Vec<String>,
}

impl Applied {
    /// Whether a difference at `pointer` (legacy's coordinates) or `candidate_pointer` is about
    /// an unpaired id: the id itself, or a record holding one.
    pub fn explains(&self, pointer: &str, candidate_pointer: Option<&str>, kind: &str) -> bool {
        let under = |ids: &[String], at: &str| {
            ids.iter().any(|p| {
                p == at
                    || (p.starts_with(at) && p.as_bytes().get(at.len()) == Some(&b'/'))
                    || at.is_empty()
            })
        };
        let cand = candidate_pointer.unwrap_or(pointer);
        match kind {
            "missing" => under(&self.legacy_unpaired, pointer),
            "extra" => under(&self.candidate_unpaired, cand),
            _ => {
                self.candidate_unpaired.iter().any(|p| p == cand)
                    || self.legacy_unpaired.iter().any(|p| p == pointer)
            }
        }
    }
}

/// An id's text: a string as it is, an integer in decimal; anything else is not an id.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An id as its vendor writes it: a number when it was one (and still reads as one).
fn id_value((id, number): (String, bool)) -> Value {
    if number {
        if let Ok(n) = id.parse::<u64>() {
            return Value::from(n);
        }
        if let Ok(n) = id.parse::<i64>() {
            return Value::from(n);
        }
    }
    Value::String(id)
}

/// A pair found in one exchange (account not yet attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: String,
    pub legacy: String,
    pub candidate: String,
    /// [`Pair::numbers`].
    pub numbers: u8,
}

/// The pairs two documents of one exchange show: per record pattern, the records of each side
/// keyed by the kind's natural keys in order; a key pairs two records when its value is present
/// and unique on both sides, and neither record is paired yet.
pub fn learn(
    route: &RouteIds,
    kinds: &[KindSpec],
    legacy: &Value,
    candidate: &Value,
) -> Vec<Found> {
    let mut out = Vec::new();
    for (glob, kind) in &route.records {
        let Some(spec) = kinds.iter().find(|k| &k.name == kind) else {
            continue;
        };
        let (l, c) = (
            records(legacy, glob, &spec.id),
            records(candidate, glob, &spec.id),
        );
        let mut l_done = vec![false; l.len()];
        let mut c_done = vec![false; c.len()];
        for key in &spec.keys {
            let keyed = |recs: &[(String, &Value)], done: &[bool]| {
                let mut m: HashMap<String, Option<usize>> = HashMap::new();
                for (i, (_, rec)) in recs.iter().enumerate() {
                    let Some(k) = natural_key(rec, key) else {
                        continue;
                    };
                    // Unique among every record of the side, paired or not.
                    m.entry(k)
                        .and_modify(|e| *e = None)
                        .or_insert((!done[i]).then_some(i));
                }
                m
            };
            let lk = keyed(&l, &l_done);
            let ck = keyed(&c, &c_done);
            let mut hits: Vec<(usize, usize)> = lk
                .iter()
                .filter_map(|(k, li)| Some(((*li)?, ck.get(k).copied().flatten()?)))
                .collect();
            hits.sort_unstable();
            for (li, ci) in hits {
                if l_done[li] || c_done[ci] {
                    continue;
                }
                l_done[li] = true;
                c_done[ci] = true;
                let number = |rec: &Value| rec.pointer(&spec.id).is_some_and(Value::is_number);
                out.push(Found {
                    kind: kind.clone(),
                    legacy: l[li].0.clone(),
                    candidate: c[ci].0.clone(),
                    numbers: u8::from(number(l[li].1)) * Pair::LEGACY_NUMBER
                        + u8::from(number(c[ci].1)) * Pair::CANDIDATE_NUMBER,
                });
            }
        }
    }
    out
}

/// The records at `glob` that carry an id at `id`, with it.
fn records<'v>(doc: &'v Value, glob: &Glob, id: &str) -> Vec<(String, &'v Value)> {
    matches(doc, glob)
        .into_iter()
        .filter_map(|(_, rec)| Some((rec.pointer(id).and_then(id_text)?, rec)))
        .collect()
}

/// A record's natural key under `fields`: their values' canonical texts, or `None` when one is
/// missing, null or empty. Strings compare without case and surrounding spaces.
fn natural_key(rec: &Value, fields: &[String]) -> Option<String> {
    let mut out = String::new();
    for f in fields {
        let v = rec.pointer(f)?;
        let text = match v {
            Value::Null => return None,
            Value::String(s) => {
                let t = s.trim().to_lowercase();
                if t.is_empty() {
                    return None;
                }
                serde_json::to_string(&t).ok()?
            }
            other => crate::diff::canonical(other),
        };
        out.push_str(&text);
        out.push('\u{1f}');
    }
    Some(out)
}

/// The values of `doc` at the concrete pointers `glob` matches (`*` one member or index, `**`
/// not used for ids), with the pointers.
pub fn matches<'v>(doc: &'v Value, glob: &Glob) -> Vec<(String, &'v Value)> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk(doc, glob, &mut path, &mut |p, v| out.push((p, v)));
    out
}

fn walk<'v>(
    v: &'v Value,
    glob: &Glob,
    path: &mut Vec<Seg<'v>>,
    f: &mut dyn FnMut(String, &'v Value),
) {
    if glob.matches(path) {
        f(crate::diff::glob::pointer(path), v);
        return;
    }
    if !glob.may_match_below(path) || path.len() > 32 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(Seg::Key(k));
                walk(child, glob, path, f);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk(child, glob, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Calls `f` with each value of `doc` at a pointer `glob` matches, mutable, and its pointer
/// (the pointers found by [`matches`], each then resolved: id fields never nest).
pub fn each_mut(doc: &mut Value, glob: &Glob, f: &mut dyn FnMut(String, &mut Value)) {
    let pointers: Vec<String> = matches(doc, glob).into_iter().map(|(p, _)| p).collect();
    for p in pointers {
        if let Some(v) = doc.pointer_mut(&p) {
            f(p, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn kinds() -> Vec<KindSpec> {
        vec![KindSpec {
            name: "individual".into(),
            id: "/id".into(),
            keys: vec![
                vec!["/first_name".into(), "/last_name".into()],
                vec!["/email".into()],
            ],
            max_pairs: 1000,
        }]
    }

    fn route() -> RouteIds {
        RouteIds::new(
            vec![(Glob::new("/people/*").unwrap(), "individual".into())],
            vec![(
                Glob::new("/people/*/manager/id").unwrap(),
                "individual".into(),
            )],
        )
    }

    fn pair(l: &str, c: &str) -> Pair {
        Pair {
            account: "a".into(),
            kind: "individual".into(),
            legacy: l.into(),
            candidate: c.into(),
            numbers: 0,
        }
    }

    #[test]
    fn records_pair_by_the_first_unique_natural_key_and_ids_turn_into_legacys() {
        let legacy = json!({"people": [
            {"id": "f1", "first_name": "Ann", "last_name": "Lee", "manager": null},
            {"id": "f2", "first_name": "Bo", "last_name": "Chen", "manager": {"id": "f1"}},
            // Two people of one name: that key pairs neither; the email does.
            {"id": "f3", "first_name": "Cy", "last_name": "Ng", "email": "c1@x"},
            {"id": "f4", "first_name": "Cy", "last_name": "Ng", "email": "c2@x"},
            // Only on legacy's side.
            {"id": "f5", "first_name": "Di", "last_name": "Ro"}
        ]});
        let mut candidate = json!({"people": [
            {"id": "m2", "first_name": "BO", "last_name": " Chen", "manager": {"id": "m1"}},
            {"id": "m1", "first_name": "Ann", "last_name": "Lee", "manager": null},
            {"id": "m4", "first_name": "Cy", "last_name": "Ng", "email": "c2@x"},
            {"id": "m3", "first_name": "Cy", "last_name": "Ng", "email": "c1@x"},
            {"id": "m9", "first_name": "Ed", "last_name": "Po"}
        ]});
        let cw = Crosswalk::new();
        let a = cw.apply("a", &route(), &kinds(), (&legacy, true), &mut candidate);
        let mut learned: Vec<(String, String)> = a
            .observed
            .pairs
            .iter()
            .map(|p| (p.legacy.clone(), p.candidate.clone()))
            .collect();
        learned.sort();
        assert_eq!(
            learned,
            [("f1", "m1"), ("f2", "m2"), ("f3", "m3"), ("f4", "m4")]
                .map(|(l, c)| (l.to_owned(), c.to_owned()))
        );
        assert_eq!(candidate["people"][0]["id"], "f2");
        assert_eq!(candidate["people"][0]["manager"]["id"], "f1");
        assert_eq!(
            candidate["people"][4]["id"], "m9",
            "unpaired: left as it is"
        );
        assert_eq!(a.candidate_unpaired, vec!["/people/4/id".to_owned()]);
        assert_eq!(a.legacy_unpaired, vec!["/people/4/id".to_owned()]);
        assert!(a.explains("/people/4", None, "missing"));
        assert!(a.explains("/people/4/id", Some("/people/4/id"), "changed"));
        assert!(!a.explains("/people/3/first_name", None, "changed"));
        // Served: every id turned back, or the first one that cannot be.
        let mut served = json!({"people": [{"id": "m1", "manager": {"id": "m2"}}]});
        assert_eq!(cw.serve("a", &route(), &kinds(), &mut served), Ok(2));
        assert_eq!(
            served,
            json!({"people": [{"id": "f1", "manager": {"id": "f2"}}]})
        );
        let mut served = json!({"people": [{"id": "m1"}, {"id": "m9"}]});
        assert_eq!(
            cw.serve("a", &route(), &kinds(), &mut served),
            Err("/people/1/id".to_owned())
        );
        // Another account knows none of it.
        assert_eq!(cw.to_candidate("b", "individual", "f1"), None);
        assert_eq!(
            cw.to_candidate("a", "individual", "f1").as_deref(),
            Some("m1")
        );
    }

    /// Numeric ids stay numbers: legacy's in the comparison and in served answers, the
    /// candidate's in its requests; and a page that is not the whole list teaches nothing.
    #[test]
    fn ids_keep_their_vendors_json_type_and_partial_pages_teach_nothing() {
        let legacy = json!({"people": [
            {"id": 1001, "first_name": "Ann", "last_name": "Lee", "manager": {"id": 1002}},
            {"id": 1002, "first_name": "Bo", "last_name": "Chen", "manager": null}
        ]});
        let candidate = json!({"people": [
            {"id": "m-1", "first_name": "Ann", "last_name": "Lee", "manager": {"id": "m-2"}},
            {"id": "m-2", "first_name": "Bo", "last_name": "Chen", "manager": null}
        ]});
        let cw = Crosswalk::new();
        let a = cw.apply(
            "a",
            &route(),
            &kinds(),
            (&legacy, false),
            &mut candidate.clone(),
        );
        assert!(
            a.observed.pairs.is_empty(),
            "a partial page teaches nothing"
        );
        let mut c = candidate.clone();
        cw.apply("a", &route(), &kinds(), (&legacy, true), &mut c);
        assert_eq!(c, legacy, "legacy's numbers, not their text");
        let mut served = candidate;
        assert_eq!(cw.serve("a", &route(), &kinds(), &mut served), Ok(3));
        assert_eq!(served, legacy);
        let mut body = json!({"ids": [1002, 1001]});
        let fields = vec![(Glob::new("/ids/*").unwrap(), "individual".to_owned())];
        assert_eq!(cw.to_candidate_ids("a", &fields, &mut body), Ok(2));
        assert_eq!(body, json!({"ids": ["m-2", "m-1"]}));
    }

    #[test]
    fn a_contradicting_pair_is_a_conflict_and_the_first_stays() {
        let cw = Crosswalk::new();
        assert_eq!(cw.learn(&pair("f1", "m1"), 10), Learned::New);
        assert_eq!(cw.learn(&pair("f1", "m1"), 10), Learned::Known);
        assert_eq!(
            cw.learn(&pair("f1", "m2"), 10),
            Learned::Conflict {
                held: pair("f1", "m1")
            }
        );
        assert_eq!(
            cw.learn(&pair("f2", "m1"), 10),
            Learned::Conflict {
                held: pair("f1", "m1")
            }
        );
        assert_eq!(cw.conflicts(), 2);
        // The store's pair wins over memory's.
        assert!(cw.adopt(&pair("f1", "m2"), 10));
        assert_eq!(
            cw.to_candidate("a", "individual", "f1").as_deref(),
            Some("m2")
        );
        assert_eq!(cw.to_legacy("a", "individual", "m1"), None);
    }

    #[test]
    fn past_max_pairs_the_oldest_is_forgotten() {
        let cw = Crosswalk::new();
        for i in 0..5 {
            cw.learn(&pair(&format!("f{i}"), &format!("m{i}")), 3);
        }
        assert_eq!(cw.counts(), vec![("a".into(), "individual".into(), 3)]);
        assert_eq!(cw.to_candidate("a", "individual", "f1"), None);
        assert_eq!(cw.to_legacy("a", "individual", "m4").as_deref(), Some("f4"));
    }

    proptest! {
        /// Whatever the order of observations: each is new, known or a conflict naming the pair
        /// held; a pair once made stays (under max_pairs) and is never replaced; the pairs are
        /// one-to-one; conflicts are counted one per contradicting observation.
        #[test]
        fn conflicts_never_lose_a_pairing_silently(
            ops in proptest::collection::vec((0u8..6, 0u8..6), 0..60)
        ) {
            let cw = Crosswalk::new();
            let mut made: Vec<(String, String)> = Vec::new();
            let mut conflicts = 0;
            for (l, c) in ops {
                let p = pair(&format!("f{l}"), &format!("m{c}"));
                match cw.learn(&p, 1000) {
                    Learned::New => {
                        prop_assert!(made.iter().all(|(ml, mc)| ml != &p.legacy && mc != &p.candidate));
                        made.push((p.legacy.clone(), p.candidate.clone()));
                    }
                    Learned::Known => {
                        prop_assert!(made.contains(&(p.legacy.clone(), p.candidate.clone())));
                    }
                    Learned::Conflict { held } => {
                        conflicts += 1;
                        prop_assert!(made.contains(&(held.legacy.clone(), held.candidate.clone())));
                        prop_assert!(held.legacy == p.legacy || held.candidate == p.candidate);
                    }
                }
            }
            for (l, c) in &made {
                prop_assert_eq!(cw.to_candidate("a", "individual", l), Some(c.clone()));
                prop_assert_eq!(cw.to_legacy("a", "individual", c), Some(l.clone()));
            }
            prop_assert_eq!(cw.conflicts(), conflicts);
            prop_assert_eq!(cw.counts().first().map_or(0, |c| c.2), made.len());
        }
    }
}
