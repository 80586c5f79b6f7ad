//! The field diff: `(legacy, candidate, rules) -> Vec<Difference>`.
//!
//! Pure and synchronous: no I/O, no async, no allocation beyond the result and the alignment of
//! arrays. The proxy calls it off the request path; `shadowdiff diff` calls it on files.
//!
//! How values compare:
//! - objects member by member; a member only in legacy is `missing`, only in candidate `extra`;
//! - numbers by decimal value (`10` = `10.0`, exact beyond 2^53), within `number_tolerance`;
//! - values of different JSON types are `type_changed`, other unequal scalars `changed`;
//! - arrays: by a key member (`array_keys`, or with `auto_keys` an `id`, `remote_id`, `uuid` or
//!   `key` unique in every element on both sides), as multisets (`unordered`), or else aligned
//!   as sequences (Myers over structural hashes), so that an inserted element is one `extra` and
//!   not a cascade of `changed`. Elements the alignment pairs up are compared recursively.
//!
//! Pointers name legacy coordinates, except for `extra`, which names candidate coordinates; when
//! the candidate's coordinates of a compared node differ (array realignment) the difference also
//! carries `candidate_pointer`.

pub mod doc;
pub mod glob;
pub mod headers;
mod index;
pub mod listing;
pub mod normalize;
pub mod number;
pub mod patch;
mod scan;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::Serialize;
use serde_json::Value;
use similar::{Algorithm, DiffOp};

use doc::{Members, Node, View};
pub use glob::{Glob, GlobError, GlobSet, Seg};
use listing::{listed_cost, Tally, Verdict};
pub use listing::{Bound, Counted, Found, FREE_PATH_TEXT};

/// Whether `c` is the date `l` (`YYYY-MM-DD`) followed by a time (`T…` or ` …`): a date one
/// vendor sends with a time (what `suggest` and the report's hints recognise).
pub fn is_date_with_time(l: &str, c: &str) -> bool {
    l.len() == 10
        && l.parse::<jiff::civil::Date>().is_ok()
        && c.strip_prefix(l)
            .is_some_and(|rest| rest.starts_with('T') || rest.starts_with(' '))
}

/// Whether two texts are the same, short ones (most names and values) compared in a word or
/// two of loads rather than by a call to `memcmp`, which dominated the walk's string compares.
#[inline(always)]
fn same_text(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_text`] of bytes.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    match n {
        // The first and the last eight (or four) bytes, overlapping in the middle.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => (0..n).all(|i| a[i] == b[i]),
        _ => a == b,
    }
}

/// What kind of difference a field shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// In legacy, not in candidate.
    Missing,
    /// In candidate only.
    Extra,
    /// Same JSON type, other value.
    Changed,
    /// Another JSON type.
    TypeChanged,
    /// An id (or a record holding one) whose partner on the other side the id crosswalk does
    /// not know (`[ids]`): a vendor id, not a wrong value.
    UnpairedId,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Extra => "extra",
            Self::Changed => "changed",
            Self::TypeChanged => "type_changed",
            Self::UnpairedId => "unpaired_id",
        }
    }
}

/// One difference between the two documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// RFC 6901 pointer (legacy coordinates; candidate coordinates for `extra`).
    pub pointer: String,
    /// The pointer with array indices replaced by `*`.
    pub field: String,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Value>,
    /// Where the candidate's value sits, when that differs from `pointer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_pointer: Option<String>,
}

/// The comparison rules of one route (global `[diff]` plus the route's own).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub ignore: GlobSet,
    /// Arrays matched by a member instead of by position: (array glob, member name).
    pub array_keys: Vec<(Glob, String)>,
    pub unordered: GlobSet,
    pub number_tolerance: f64,
    pub null_equals_missing: bool,
    /// Match arrays of objects by `id`, `remote_id`, `uuid` or `key` when every element has a
    /// unique scalar one on both sides ([`AUTO_KEYS`]).
    pub auto_keys: bool,
    /// Equivalence rules applied to both documents before the comparison ([`normalize`]).
    pub normalize: Vec<(GlobSet, Vec<normalize::Norm>)>,
}

impl Rules {
    /// Adds `other`'s rules to these (a route's rules add to the global ones). For scalar settings
    /// the stricter-to-looser choice is `other`'s when it is set.
    pub fn extend(&mut self, other: &Self) {
        self.ignore.extend(&other.ignore);
        self.unordered.extend(&other.unordered);
        for (g, k) in &other.array_keys {
            self.array_keys.retain(|(mine, _)| mine != g);
            self.array_keys.push((g.clone(), k.clone()));
        }
        if other.number_tolerance > 0.0 {
            self.number_tolerance = other.number_tolerance;
        }
        self.null_equals_missing |= other.null_equals_missing;
        self.normalize.extend(other.normalize.iter().cloned());
    }

    /// The rules a served answer is judged by (the document the caller received against
    /// legacy's): exact at every field. Only the ignore, normalize, unordered and array-key rules
    /// whose field pattern is listed in `safe` (`serve_safe`, the same text) still apply; number
    /// tolerance, null-equals-missing and automatic array keys never do.
    pub fn served(&self, safe: &GlobSet) -> Self {
        let blessed = |g: &Glob| safe.iter().any(|s| s.as_str() == g.as_str());
        let keep = |set: &GlobSet| {
            let mut out = GlobSet::default();
            for g in set.iter().filter(|g| blessed(g)) {
                out.push(g.clone());
            }
            out
        };
        Self {
            ignore: keep(&self.ignore),
            array_keys: self
                .array_keys
                .iter()
                .filter(|(g, _)| blessed(g))
                .cloned()
                .collect(),
            unordered: keep(&self.unordered),
            number_tolerance: 0.0,
            null_equals_missing: false,
            auto_keys: false,
            normalize: self
                .normalize
                .iter()
                .map(|(set, n)| (keep(set), n.clone()))
                .filter(|(set, _)| !set.is_empty())
                .collect(),
        }
    }

    /// The ignore and normalize rules not listed in `safe`: fields whose candidate value no
    /// comparison vouches for, each as `ignore "PATTERN"` or `normalize "PATTERN" (RULES)`.
    pub fn unverified(&self, safe: &GlobSet) -> Vec<String> {
        let blessed = |g: &Glob| safe.iter().any(|s| s.as_str() == g.as_str());
        let mut out: Vec<String> = self
            .ignore
            .iter()
            .filter(|g| !blessed(g))
            .map(|g| format!("ignore {:?}", g.as_str()))
            .collect();
        for (set, norms) in &self.normalize {
            let names: Vec<&str> = norms.iter().map(|n| n.as_str()).collect();
            for g in set.iter().filter(|g| !blessed(g)) {
                out.push(format!("normalize {:?} ({})", g.as_str(), names.join(", ")));
            }
        }
        out.dedup();
        out
    }

    /// The rules as one canonical line (ignore and unordered patterns sorted: their order means
    /// nothing; array keys and normalize rules as configured): what `mapping_version` hashes, so
    /// that a change of the rules alone starts a new version.
    pub fn describe(&self) -> String {
        let sorted = |set: &GlobSet| {
            let mut v: Vec<&str> = set.iter().map(Glob::as_str).collect();
            v.sort_unstable();
            format!("{v:?}")
        };
        let keys: Vec<(&str, &str)> = self
            .array_keys
            .iter()
            .map(|(g, k)| (g.as_str(), k.as_str()))
            .collect();
        let norms: Vec<(Vec<&str>, Vec<&str>)> = self
            .normalize
            .iter()
            .map(|(set, n)| {
                (
                    set.iter().map(Glob::as_str).collect(),
                    n.iter().map(|n| n.as_str()).collect(),
                )
            })
            .collect();
        format!(
            "ignore={} keys={keys:?} unordered={} tolerance={} null_equals_missing={} auto_keys={} normalize={norms:?}",
            sorted(&self.ignore),
            sorted(&self.unordered),
            self.number_tolerance,
            self.null_equals_missing,
            self.auto_keys,
        )
    }

    /// Whether `pattern` is the field pattern of one of these rules (ignore, normalize,
    /// unordered, array keys): what `serve_safe` may name.
    pub fn has_pattern(&self, pattern: &str) -> bool {
        self.ignore.iter().any(|g| g.as_str() == pattern)
            || self.unordered.iter().any(|g| g.as_str() == pattern)
            || self.array_keys.iter().any(|(g, _)| g.as_str() == pattern)
            || self
                .normalize
                .iter()
                .any(|(set, _)| set.iter().any(|g| g.as_str() == pattern))
    }

    /// Whether a difference at `path` is ignored (the path or one of its ancestors is selected).
    pub fn is_ignored(&self, path: &[Seg<'_>]) -> bool {
        !self.ignore.is_empty() && self.ignore.matches_prefix(path)
    }

    fn array_key(&self, path: &[Seg<'_>]) -> Option<&str> {
        self.array_keys
            .iter()
            .find(|(g, _)| g.matches(path))
            .map(|(_, k)| k.as_str())
    }
}

/// Compares two JSON documents. With `normalize` rules, both are rewritten first (on copies).
pub fn diff(legacy: &Value, candidate: &Value, rules: &Rules) -> Vec<Difference> {
    diff_within(legacy, candidate, rules, Bound::NONE).diffs
}

/// [`diff`], listing what `bound` allows (see [`diff_docs`]).
pub fn diff_within(legacy: &Value, candidate: &Value, rules: &Rules, bound: Bound) -> Found {
    if !rules.normalize.is_empty() {
        let (mut l, mut c) = (legacy.clone(), candidate.clone());
        normalize::apply(&mut l, &rules.normalize);
        normalize::apply(&mut c, &rules.normalize);
        return diff_exact(&l, &c, rules, bound);
    }
    diff_exact(legacy, candidate, rules, bound)
}

/// Compares two parsed documents of any kind ([`doc::Node`]). Normalize rules rewrite
/// serde_json values: with some, both documents are converted first (callers that parse bodies
/// parse them as serde_json values then).
pub fn diff_nodes<L: Node, C: Node>(legacy: &L, candidate: &C, rules: &Rules) -> Vec<Difference> {
    nodes_within(legacy, candidate, rules, Bound::NONE).diffs
}

fn nodes_within<L: Node, C: Node>(legacy: &L, candidate: &C, rules: &Rules, bound: Bound) -> Found {
    if !rules.normalize.is_empty() {
        return diff_within(&legacy.to_value(), &candidate.to_value(), rules, bound);
    }
    diff_exact(legacy, candidate, rules, bound)
}

/// [`diff_nodes`] of two parsed bodies, whatever kind each is, listing what `bound` allows and
/// counting the rest ([`listing`]). A path is the text of every member name above a node, so
/// without a bound a body of a long name above many differing members makes a list many times
/// its size (a 110 KB body, one 100,000-byte name above 1,000 members: ~200 MB of pointers and
/// patterns), and so does a long page whose every value differs (a few hundred bytes each).
pub fn diff_docs(
    legacy: &doc::Doc<'_>,
    candidate: &doc::Doc<'_>,
    rules: &Rules,
    bound: Bound,
) -> Found {
    use doc::Doc::{Fast, Tree};
    match (legacy, candidate) {
        (Fast(l), Fast(c)) => nodes_within(l, c, rules, bound),
        (Fast(l), Tree(c)) => nodes_within(l, c, rules, bound),
        (Tree(l), Fast(c)) => nodes_within(l, c, rules, bound),
        (Tree(l), Tree(c)) => diff_within(l, c, rules, bound),
    }
}

fn diff_exact<L: Node, C: Node>(legacy: &L, candidate: &C, rules: &Rules, bound: Bound) -> Found {
    let mut w = Walker {
        rules,
        lpath: Vec::new(),
        cpath: Vec::new(),
        out: Vec::new(),
        room: bound.room,
        listed: bound.listed,
        examples: bound.examples,
        early: 0,
        last_rows: no_rows(),
        unlisted: 0,
        tally: Tally::default(),
    };
    w.value(legacy, candidate);
    Found {
        diffs: w.out,
        counted: w.tally.finish(),
        unlisted: w.unlisted,
    }
}

/// Compares one pseudo-field of the response head (`@status`, `@header/NAME`), applying the
/// ignore rules to it. `None` is an absent value.
pub fn diff_meta(
    field: &[Seg<'_>],
    legacy: Option<Value>,
    candidate: Option<Value>,
    rules: &Rules,
) -> Option<Difference> {
    if legacy == candidate || rules.is_ignored(field) {
        return None;
    }
    let kind = match (&legacy, &candidate) {
        (Some(_), None) => Kind::Missing,
        (None, Some(_)) => Kind::Extra,
        _ => Kind::Changed,
    };
    let name = field
        .iter()
        .map(|s| match s {
            Seg::Key(k) => (*k).to_owned(),
            Seg::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/");
    Some(Difference {
        pointer: name.clone(),
        field: name,
        kind,
        legacy,
        candidate,
        candidate_pointer: None,
    })
}

/// Nodes an equality check may visit before a subtree is walked instead.
const FAST_EQ_NODES: u32 = 16;

/// Exact equality (same members, same elements in the same order, same number spelling) within
/// a budget of visited nodes: `None` when the budget ran out. Identical subtrees cannot differ
/// under any rule, so `Some(true)` means nothing to report.
fn equal_within<L: Node, C: Node>(a: &L, b: &C, budget: &mut u32) -> Option<bool> {
    *budget = budget.checked_sub(1)?;
    Some(match (a.view(), b.view()) {
        (View::Object(x), View::Object(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                if !same_text(kx, ky) || !equal_within(vx, vy, budget)? {
                    return Some(false);
                }
            }
            true
        }
        (View::Array(x), View::Array(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            for (vx, vy) in x.iter().zip(y) {
                if !equal_within(vx, vy, budget)? {
                    return Some(false);
                }
            }
            true
        }
        _ => same_scalar(a, b),
    })
}

struct Walker<'r, 'a> {
    rules: &'r Rules,
    lpath: Vec<Seg<'a>>,
    cpath: Vec<Seg<'a>>,
    out: Vec<Difference>,
    /// Bytes left for listing differences ([`listed_cost`]).
    room: usize,
    /// Differences listed before the rest are counted per pattern ([`Bound::listed`]).
    listed: usize,
    /// Differences of one (field pattern, kind) listed among those ([`Bound::examples`]).
    examples: usize,
    /// Differences found among the `listed` first: listed, or counted past their pattern's
    /// `examples`.
    early: usize,
    /// The path of the last difference of each kind counted among those, and its row in the
    /// tally (`u32::MAX`: none; see [`Walker::row`]).
    last_rows: [(Vec<Seg<'a>>, u32); listing::KINDS],
    /// Differences found once the room was full (or with no row in the tally).
    unlisted: usize,
    /// Differences past the `listed` first, per (field pattern, kind).
    tally: Tally,
}

/// Object tails with more members than this are indexed before members are looked up by name
/// (the compact tree's objects are lists: a lookup is a scan).
const SCAN_MEMBERS: usize = 32;

/// Finds the members of an object's tail (those after the members both sides have in the same
/// order, which no other member can match: names are unique) by name: through the object
/// itself when it is indexed (serde_json's maps), else through the tail as a list (a few
/// members, scanned) or as an index built once (a long tail, where scans would make the walk
/// quadratic).
enum Lookup<'a, N: Node + 'a> {
    Direct(&'a N::Object),
    /// The members from the `usize`th on, scanned where they are (nothing is allocated).
    Tail(&'a N::Object, usize),
    Index(HashMap<&'a str, &'a N>),
}

impl<'a, N: Node + 'a> Lookup<'a, N> {
    fn new(o: &'a N::Object, same: usize) -> Self {
        if <N::Object as Members>::INDEXED {
            return Self::Direct(o);
        }
        if o.len() - same <= SCAN_MEMBERS {
            return Self::Tail(o, same);
        }
        Self::Index(o.iter().skip(same).collect())
    }

    /// The member named `key`. (Members at the same position on both sides are paired by
    /// [`Walker::object`] before any lookup: a tail scanned here is at most [`SCAN_MEMBERS`]
    /// long, all of it within [`place_bit`]'s 64 positions.)
    fn get(&self, key: &str) -> Option<&'a N> {
        match self {
            Self::Direct(o) => o.get(key),
            Self::Tail(o, same) => o
                .iter()
                .skip(*same)
                .find(|(k, _)| same_text(k, key))
                .map(|(_, v)| v),
            Self::Index(i) => i.get(key).copied(),
        }
    }
}

impl<'a> Walker<'_, 'a> {
    fn value<L: Node + 'a, C: Node + 'a>(&mut self, l: &'a L, c: &'a C) {
        match (l.view(), c.view()) {
            (View::Object(lo), View::Object(co)) => self.object::<L, C>(lo, co),
            // Small arrays (a list of phones, of tags) are usually equal: a tight equality check
            // over at most FAST_EQ_NODES nodes is cheaper than keying, hashing and aligning
            // them. The budget keeps it from going quadratic on deep documents.
            (View::Array(la), View::Array(ca)) => {
                if equal_within(l, c, &mut FAST_EQ_NODES.clone()) != Some(true) {
                    self.array(la, ca);
                }
            }
            (View::Number(a), View::Number(b)) => {
                if !number::equal(a, b, self.rules.number_tolerance) {
                    self.emit(Kind::Changed, Some(l), Some(c));
                }
            }
            (View::String(a), View::String(b)) if same_text(a, b) => {}
            (View::Bool(a), View::Bool(b)) if a == b => {}
            (View::Null, View::Null) => {}
            (View::String(_), View::String(_)) | (View::Bool(_), View::Bool(_)) => {
                self.emit(Kind::Changed, Some(l), Some(c));
            }
            _ => self.emit(Kind::TypeChanged, Some(l), Some(c)),
        }
    }

    fn object<L: Node + 'a, C: Node + 'a>(&mut self, lo: &'a L::Object, co: &'a C::Object) {
        // Objects keep their members in document order (serde_json's `preserve_order`, which
        // the JSONata engine turns on; the arena document's slices). Members in the same order on both
        // sides (the usual case) are walked in one pass; from the first difference in order on,
        // legacy's remaining members are looked up in the candidate, then the candidate's own
        // are listed.
        let mut same = 0;
        for ((lk, lv), (ck, cv)) in lo.iter().zip(co.iter()) {
            if !same_text(lk, ck) {
                break;
            }
            self.member(lk, lv, cv);
            same += 1;
        }
        if same == lo.len() && same == co.len() {
            return;
        }
        let nem = self.rules.null_equals_missing;
        let (lfind, cfind) = (Lookup::<L>::new(lo, same), Lookup::<C>::new(co, same));
        // Tail positions whose names are the same on both sides (a member renamed in place
        // leaves the rest in line): the candidate's member there is known to be legacy's.
        let mut in_place = 0u64;
        for (i, (k, lv)) in lo.iter().enumerate().skip(same) {
            let found = match co.nth(i) {
                Some((ck, cv)) if same_text(ck, k) => {
                    in_place |= place_bit(i - same);
                    Some(cv)
                }
                _ => cfind.get(k),
            };
            match found {
                Some(cv) => self.member(k, lv, cv),
                None if nem && lv.is_null() => {}
                None => {
                    self.lpath.push(Seg::Key(k));
                    self.emit::<L, C>(Kind::Missing, Some(lv), None);
                    self.lpath.pop();
                }
            }
        }
        for (j, (k, cv)) in co.iter().enumerate().skip(same) {
            if in_place & place_bit(j - same) != 0 {
                continue;
            }
            if !(lfind.get(k).is_some() || nem && cv.is_null()) {
                self.cpath.push(Seg::Key(k));
                self.emit::<L, C>(Kind::Extra, None, Some(cv));
                self.cpath.pop();
            }
        }
    }

    fn member<L: Node + 'a, C: Node + 'a>(&mut self, k: &'a str, lv: &'a L, cv: &'a C) {
        if same_scalar(lv, cv) {
            return;
        }
        self.lpath.push(Seg::Key(k));
        self.cpath.push(Seg::Key(k));
        self.value(lv, cv);
        self.lpath.pop();
        self.cpath.pop();
    }

    fn array<L: Node + 'a, C: Node + 'a>(&mut self, la: &'a [L], ca: &'a [C]) {
        let unordered =
            !self.rules.unordered.is_empty() && self.rules.unordered.matches(&self.lpath);
        if let Some(key) = self.rules.array_key(&self.lpath) {
            if self.try_keyed(la, ca, key) {
                return;
            }
        } else if self.rules.auto_keys
            && !unordered
            && (la.len() + ca.len() > 1)
            && la.iter().all(is_object)
            && ca.iter().all(is_object)
        {
            // Every element an object with a unique scalar `id` (or remote_id, uuid, key) on
            // both sides: match by it.
            for key in AUTO_KEYS {
                if self.try_keyed(la, ca, key) {
                    return;
                }
            }
        }
        let lh: Vec<u64> = la.iter().map(|v| self.element_hash(v)).collect();
        let ch: Vec<u64> = ca.iter().map(|v| self.element_hash(v)).collect();
        if unordered {
            return self.unordered(la, ca, &lh, &ch);
        }
        if lh == ch {
            return;
        }
        for op in similar::capture_diff_slices(Algorithm::Myers, &lh, &ch) {
            match op {
                DiffOp::Equal { .. } => {}
                DiffOp::Delete {
                    old_index, old_len, ..
                } => (old_index..old_index + old_len).for_each(|i| self.missing_at::<L, C>(la, i)),
                DiffOp::Insert {
                    new_index, new_len, ..
                } => (new_index..new_index + new_len).for_each(|j| self.extra_at::<L, C>(ca, j)),
                DiffOp::Replace {
                    old_index,
                    old_len,
                    new_index,
                    new_len,
                } => {
                    let paired = old_len.min(new_len);
                    for k in 0..paired {
                        self.pair(la, old_index + k, ca, new_index + k);
                    }
                    (old_index + paired..old_index + old_len)
                        .for_each(|i| self.missing_at::<L, C>(la, i));
                    (new_index + paired..new_index + new_len)
                        .for_each(|j| self.extra_at::<L, C>(ca, j));
                }
            }
        }
    }

    /// Matches elements by a key member; `false` (nothing done) when an element lacks a scalar
    /// value for it or a key repeats on one side.
    fn try_keyed<L: Node + 'a, C: Node + 'a>(
        &mut self,
        la: &'a [L],
        ca: &'a [C],
        key: &str,
    ) -> bool {
        // The usual case first: the same keys in the same order. Each pair is compared as soon
        // as its keys are read, while the elements are in cache; at the first pair that does
        // not qualify, what it reported is taken back and the general path below runs.
        // (Repeated keys pair up by position, as the alignment would pair them.)
        if la.len() == ca.len() {
            let mark = (
                self.out.len(),
                self.early,
                self.room,
                self.unlisted,
                self.tally.mark(),
            );
            let mut same = true;
            for i in 0..la.len() {
                match (key_of(&la[i], key), key_of(&ca[i], key)) {
                    (Some(a), Some(b)) if a == b => self.pair(la, i, ca, i),
                    _ => {
                        same = false;
                        break;
                    }
                }
            }
            if same {
                self.tally.keep();
                return true;
            }
            self.out.truncate(mark.0);
            (self.early, self.room, self.unlisted) = (mark.1, mark.2, mark.3);
            // Rows made since the mark are taken back.
            self.last_rows = no_rows();
            self.tally.undo(mark.4);
        }
        let Some((lseq, cseq)) = key_seq(la, key).zip_lazy(|| key_seq(ca, key)) else {
            return false;
        };
        let Some((lk, ck)) = unique_index(&lseq).zip_lazy(|| unique_index(&cseq)) else {
            return false;
        };
        for (i, key) in lseq.iter().enumerate() {
            match ck.get(key) {
                Some(&j) => self.pair(la, i, ca, j),
                None => self.missing_at::<L, C>(la, i),
            }
        }
        for (j, key) in cseq.iter().enumerate() {
            if !lk.contains_key(key) {
                self.extra_at::<L, C>(ca, j);
            }
        }
        true
    }

    fn unordered<L: Node + 'a, C: Node + 'a>(
        &mut self,
        la: &'a [L],
        ca: &'a [C],
        lh: &[u64],
        ch: &[u64],
    ) {
        let mut pool: HashMap<u64, Vec<usize>> = HashMap::new();
        for (j, h) in ch.iter().enumerate().rev() {
            pool.entry(*h).or_default().push(j);
        }
        let mut used = vec![false; ca.len()];
        for (i, h) in lh.iter().enumerate() {
            match pool.get_mut(h).and_then(Vec::pop) {
                Some(j) => used[j] = true,
                None => self.missing_at::<L, C>(la, i),
            }
        }
        for (j, u) in used.iter().enumerate() {
            if !u {
                self.extra_at::<L, C>(ca, j);
            }
        }
    }

    fn pair<L: Node + 'a, C: Node + 'a>(&mut self, la: &'a [L], i: usize, ca: &'a [C], j: usize) {
        if same_scalar(&la[i], &ca[j]) {
            return;
        }
        self.lpath.push(Seg::Index(i));
        self.cpath.push(Seg::Index(j));
        self.value(&la[i], &ca[j]);
        self.lpath.pop();
        self.cpath.pop();
    }

    fn missing_at<L: Node + 'a, C: Node + 'a>(&mut self, la: &'a [L], i: usize) {
        self.lpath.push(Seg::Index(i));
        self.emit::<L, C>(Kind::Missing, Some(&la[i]), None);
        self.lpath.pop();
    }

    fn extra_at<L: Node + 'a, C: Node + 'a>(&mut self, ca: &'a [C], j: usize) {
        self.cpath.push(Seg::Index(j));
        self.emit::<L, C>(Kind::Extra, None, Some(&ca[j]));
        self.cpath.pop();
    }

    fn emit<L: Node + 'a, C: Node + 'a>(&mut self, kind: Kind, l: Option<&L>, c: Option<&C>) {
        let path = path_of(kind, &self.lpath, &self.cpath);
        if self.rules.is_ignored(path) {
            return;
        }
        let path_text = glob::text_len(path);
        let listed = if self.early < self.listed {
            if self.examples == usize::MAX || path_text > listing::COUNTED_PATH {
                self.list(kind, path_text, 0, l, c)
            } else {
                self.list_example(kind, path_text, l, c)
            }
        } else if path_text > listing::COUNTED_PATH {
            // Past the listed ones, a long path's difference is listed while the room holds it
            // and its record, then counted from its length alone (building its pattern for
            // each would read every name above it).
            self.list(kind, path_text, listing::PAST_LISTED_COST, l, c)
        } else {
            let verdict = match self.row(kind, false) {
                Some(row) => self.tally.count_past(row, 1),
                None => Verdict::Unlisted,
            };
            match verdict {
                Verdict::Counted => true,
                Verdict::Unlisted => false,
                Verdict::Example(row) => {
                    let listed = self.list(kind, path_text, 0, l, c);
                    self.tally.example(row, listed);
                    true
                }
            }
        };
        if !listed {
            self.unlisted += 1;
        }
    }

    /// Lists a difference at the current path of its kind (`path_text` long) when it fits in
    /// the room with `surcharge` bytes more; `false` when it does not.
    fn list<L: Node + 'a, C: Node + 'a>(
        &mut self,
        kind: Kind,
        path_text: usize,
        surcharge: usize,
        l: Option<&L>,
        c: Option<&C>,
    ) -> bool {
        match self.admit(kind, path_text, surcharge) {
            Some(moved) => {
                self.push(kind, path_text, moved, l, c);
                true
            }
            None => false,
        }
    }

    /// Among the `listed` first, a difference of an ordinary path: charged to the room as if
    /// listed (so that the same differences are among the first `listed` whether or not their
    /// pattern has its examples already), then listed while its (field pattern, kind) has fewer
    /// than `examples` listed, else counted under it; `false` when it does not fit.
    fn list_example<L: Node + 'a, C: Node + 'a>(
        &mut self,
        kind: Kind,
        path_text: usize,
        l: Option<&L>,
        c: Option<&C>,
    ) -> bool {
        let Some(moved) = self.admit(kind, path_text, 0) else {
            return false;
        };
        let row = self.row(kind, true).expect("an early row is always made");
        if let Verdict::Example(row) = self.tally.count_past(row, self.examples) {
            self.push(kind, path_text, moved, l, c);
            self.tally.example(row, true);
        }
        true
    }

    /// The tally's row of the difference of `kind` at the current path: among the `listed`
    /// first (`early`: always made), or past them (rows seeded first; `None`: every row
    /// taken). A page's differences repeat a few patterns (the same member of each record): a
    /// path of the same names as the last one of its kind, its indices aside, has the same
    /// pattern, so its row is known without building the pattern and looking it up. Rows are
    /// never renumbered (only taken back with the last rows themselves, which
    /// [`Walker::try_keyed`] forgets then).
    fn row(&mut self, kind: Kind, early: bool) -> Option<u32> {
        if !early {
            self.tally.seed_once(&self.out);
        }
        let path = path_of(kind, &self.lpath, &self.cpath);
        let (last, row) = &mut self.last_rows[listing::kind_index(kind)];
        if *row != u32::MAX && same_pattern(last, path) {
            return Some(*row);
        }
        let found = if early {
            self.tally.early_row(kind, path)
        } else {
            self.tally.past_row(kind, path, &self.out)?
        };
        *row = found;
        last.clear();
        last.extend_from_slice(path);
        Some(found)
    }

    /// Takes a difference's cost from the room (`None`: it does not fit); `Some(moved)`:
    /// whether its candidate pointer differs from its pointer (and was charged).
    fn admit(&mut self, kind: Kind, path_text: usize, surcharge: usize) -> Option<bool> {
        // Whether the difference fits is known from the lengths of its path's names first:
        // one that does not is counted without reading them (comparing the two paths reads
        // every name above it: a long name above many members made that quadratic).
        let moved = listed_cost(path_text, 0) + surcharge <= self.room
            && matches!(kind, Kind::Changed | Kind::TypeChanged)
            && self.cpath != self.lpath;
        let cost = surcharge
            + listed_cost(
                path_text,
                if moved {
                    glob::text_len(&self.cpath)
                } else {
                    0
                },
            );
        self.room = self.room.checked_sub(cost)?;
        if self.early < self.listed {
            self.early += 1;
        }
        Some(moved)
    }

    /// Lists the difference at the current path of its kind, admitted.
    fn push<L: Node + 'a, C: Node + 'a>(
        &mut self,
        kind: Kind,
        path_text: usize,
        moved: bool,
        l: Option<&L>,
        c: Option<&C>,
    ) {
        let path = path_of(kind, &self.lpath, &self.cpath);
        let (pointer, field) = glob::pointer_and_field(path, path_text);
        let candidate_pointer = moved.then(|| glob::pointer(&self.cpath));
        self.out.push(Difference {
            pointer,
            field,
            kind,
            legacy: l.map(Node::to_value),
            candidate: c.map(Node::to_value),
            candidate_pointer,
        });
    }

    /// A structural hash of an array element under the rules that can be applied without a
    /// counterpart: ignored members are left out, object member order does not matter, numbers
    /// hash by value, and (with `null_equals_missing`) null members are left out.
    fn element_hash<N: Node + 'a>(&mut self, v: &'a N) -> u64 {
        let mut path = std::mem::take(&mut self.lpath);
        path.push(Seg::Index(0));
        let h = hash_value(v, self.rules, &mut path);
        path.pop();
        self.lpath = path;
        h
    }
}

/// The bit of a tail position among the first 64 (none past them: those are looked up).
fn place_bit(at: usize) -> u64 {
    if at < 64 {
        1 << at
    } else {
        0
    }
}

/// The path a difference of `kind` is at: the candidate's for an extra member or element,
/// legacy's otherwise.
fn path_of<'p, 'a>(kind: Kind, lpath: &'p [Seg<'a>], cpath: &'p [Seg<'a>]) -> &'p [Seg<'a>] {
    if kind == Kind::Extra {
        cpath
    } else {
        lpath
    }
}

/// No last row of any kind (see [`Walker::row`]).
fn no_rows<'a>() -> [(Vec<Seg<'a>>, u32); listing::KINDS] {
    std::array::from_fn(|_| (Vec::new(), u32::MAX))
}

/// Whether two paths have the same field pattern: the same names, and indices at the same
/// places (any index is `*`).
fn same_pattern(a: &[Seg<'_>], b: &[Seg<'_>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Seg::Key(x), Seg::Key(y)) => same_text(x, y),
            (Seg::Index(_), Seg::Index(_)) => true,
            _ => false,
        })
}

/// Whether two values are the same scalar, written the same way: nothing to report under any
/// rule, so the walk need not descend to them (most members of a page's records); the leaves of
/// [`equal_within`].
#[inline(always)]
fn same_scalar<L: Node, C: Node>(l: &L, c: &C) -> bool {
    match (l.view(), c.view()) {
        (View::String(a), View::String(b)) => same_text(a, b),
        (View::Number(a), View::Number(b)) => same_text(a, b),
        (View::Bool(a), View::Bool(b)) => a == b,
        (View::Null, View::Null) => true,
        _ => false,
    }
}

fn is_object<N: Node>(v: &N) -> bool {
    matches!(v.view(), View::Object(_))
}

/// A structural hash, computed bottom up: arrays fold their elements in order, objects add up
/// their members' hashes (so member order does not count, without sorting anything).
fn hash_value<'a, N: Node>(v: &'a N, rules: &Rules, path: &mut Vec<Seg<'a>>) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    match v.view() {
        View::Null => 0x6e75_6c6c,
        View::Bool(true) => 0x7472_7565,
        View::Bool(false) => 0x6661_6c73,
        View::Number(n) => {
            let mut f = Fold(2);
            number::hash(n, &mut f);
            f.finish()
        }
        View::String(s) => xxh3_64_with_seed(s.as_bytes(), 3),
        View::Array(a) => {
            let mut acc = mix(4 ^ a.len() as u64);
            for (i, e) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                acc = mix(acc ^ hash_value(e, rules, path));
                path.pop();
            }
            acc
        }
        View::Object(o) => {
            let (mut acc, mut n) = (0u64, 0u64);
            for (k, e) in o.iter() {
                if rules.null_equals_missing && e.is_null() {
                    continue;
                }
                path.push(Seg::Key(k));
                if rules.ignore.is_empty() || !rules.ignore.matches(path) {
                    let member = xxh3_64(k.as_bytes()) ^ hash_value(e, rules, path).rotate_left(29);
                    acc = acc.wrapping_add(mix(member));
                    n += 1;
                }
                path.pop();
            }
            mix(acc ^ mix(5 ^ n))
        }
    }
}

/// A hasher folding each written word into a 64-bit state (for numbers' canonical form).
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0 ^ xxhash_rust::xxh3::xxh3_64(bytes));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }
}

/// An array element's key value. Strings are borrowed; numbers compare by value.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyValue<'a> {
    Str(&'a str),
    Num(String),
    Bool(bool),
}

/// The key values of an array's elements, in order; `None` when an element is not an object
/// with a scalar value for the key (the array then falls back to sequence alignment).
fn key_seq<'a, N: Node>(a: &'a [N], key: &str) -> Option<Vec<KeyValue<'a>>> {
    // Most arrays without the key fail on their first element: before allocating anything.
    if let Some(first) = a.first() {
        match first.view() {
            View::Object(o) => o.get(key)?,
            _ => return None,
        };
    }
    a.iter().map(|e| key_of(e, key)).collect()
}

/// An element's key value; `None` when it is not an object with a scalar value for the key.
fn key_of<'a, N: Node>(e: &'a N, key: &str) -> Option<KeyValue<'a>> {
    let View::Object(o) = e.view() else {
        return None;
    };
    // APIs mostly put the id first: looking at the first member spares a lookup.
    let v = match o.first() {
        Some((k, v)) if same_text(k, key) => v,
        _ => o.get(key)?,
    };
    Some(match v.view() {
        View::String(s) => KeyValue::Str(s),
        View::Number(text) => {
            KeyValue::Num(number::parse(text).map_or_else(|| text.to_owned(), |d| d.to_string()))
        }
        View::Bool(b) => KeyValue::Bool(b),
        _ => return None,
    })
}

type KeyMap<'k, 'a> = HashMap<&'k KeyValue<'a>, usize, xxhash_rust::xxh3::Xxh3Builder>;

/// Position by key; `None` when a key repeats (the array then falls back to alignment).
fn unique_index<'k, 'a>(seq: &'k [KeyValue<'a>]) -> Option<KeyMap<'k, 'a>> {
    let mut by_key =
        HashMap::with_capacity_and_hasher(seq.len(), xxhash_rust::xxh3::Xxh3Builder::new());
    for (i, k) in seq.iter().enumerate() {
        if by_key.insert(k, i).is_some() {
            return None;
        }
    }
    Some(by_key)
}

/// The field patterns present in documents: every member and element below the root
/// (containers included, array indices as `*`), each once, in first-seen order, at most `limit`.
/// Classification divides a field's differing exchanges by the exchanges where it is present.
///
/// Walked with a 64-bit hash of the pattern built segment by segment; a pattern's text is only
/// built the first time its hash is seen, so a page of a thousand alike records costs one string
/// per distinct pattern, not one per node.
#[derive(Debug, Default)]
pub struct Patterns {
    seen: std::collections::HashSet<u64, std::hash::BuildHasherDefault<PreHashed>>,
    /// The patterns, in first-seen order (none when only their hashes are listed).
    pub list: Vec<String>,
    /// Only the patterns' hashes are listed, in [`Patterns::hashes`]: no text is built.
    hashes_only: bool,
    /// The hashes of the patterns listed, in first-seen order, when [`Patterns::hashes_only`]
    /// made this list: one per pattern the same documents list as texts.
    pub hashes: Vec<u64>,
    /// Their texts' bytes, about ([`glob::text_len`]), at most [`PATTERN_BYTES`].
    bytes: usize,
}

/// Bytes of pattern text one [`Patterns`] lists at most: a pattern is the text of every member
/// name above a node, so a body of a long name above many members would make a list many times
/// its size. A page's patterns take a few hundred bytes; past this, no more are listed.
pub const PATTERN_BYTES: usize = 1 << 20;

impl Patterns {
    /// A list of the patterns' hashes only: the same documents give the same hashes, one per
    /// pattern, in the same order, under the same limits, and no text is built (a caller that
    /// keeps lists it built before looks them up by their hashes).
    pub fn hashes_only() -> Self {
        Self {
            hashes_only: true,
            ..Self::default()
        }
    }

    /// Adds the patterns of `doc`.
    pub fn add<N: Node>(&mut self, doc: &N, limit: usize) {
        let mut w = PatternWalk {
            patterns: self,
            path: Vec::new(),
            limit,
            shapes: [(0, None); SHAPE_SLOTS],
        };
        w.walk(doc, 0);
    }

    /// Adds the patterns of a parsed body, whatever kind it is.
    pub fn add_doc(&mut self, doc: &doc::Doc<'_>, limit: usize) {
        match doc {
            doc::Doc::Fast(v) => self.add(v, limit),
            doc::Doc::Tree(v) => self.add(v, limit),
        }
    }

    fn visit(&mut self, h: u64, path: &[Seg<'_>], limit: usize) {
        if self.listed() < limit && self.seen.insert(h) {
            let len = glob::text_len(path);
            if self.bytes + len <= PATTERN_BYTES {
                self.bytes += len;
                if self.hashes_only {
                    self.hashes.push(h);
                } else {
                    self.list.push(glob::field_pattern(path));
                }
            }
        }
    }

    /// The patterns listed, as texts or as hashes.
    fn listed(&self) -> usize {
        self.list.len() + self.hashes.len()
    }
}

/// Objects remembered by [`PatternWalk`], by their path's hash (a power of two).
const SHAPE_SLOTS: usize = 64;

/// One document's walk for [`Patterns::add`].
struct PatternWalk<'p, 'a, N: Node + 'a> {
    patterns: &'p mut Patterns,
    path: Vec<Seg<'a>>,
    limit: usize,
    /// The last object walked at a path, by the path's hash: an object at the same path with
    /// the same names in the same order (the records of a page, and every object inside them)
    /// has had each member's pattern visited already, so only the containers below it can add
    /// one.
    shapes: [(u64, Option<&'a N::Object>); SHAPE_SLOTS],
}

impl<'a, N: Node + 'a> PatternWalk<'_, 'a, N> {
    fn full(&self) -> bool {
        self.patterns.listed() >= self.limit || self.path.len() >= PRESENCE_DEPTH
    }

    fn walk(&mut self, v: &'a N, h: u64) {
        // A node whose patterns were all seen below an earlier one at the same path (the same
        // member of the record before) has none to add.
        if self.full() || v.patterns_seen_before() {
            return;
        }
        match v.view() {
            View::Object(o) => {
                let slot = &mut self.shapes[h as usize & (SHAPE_SLOTS - 1)];
                let seen = slot.0 == h && slot.1.is_some_and(|p| same_member_names::<N>(o, p));
                *slot = (h, Some(o));
                for (k, child) in o.iter() {
                    if seen && !is_container(child) {
                        continue;
                    }
                    let hc = mix(h ^ xxhash_rust::xxh3::xxh3_64(k.as_bytes()));
                    self.path.push(Seg::Key(k));
                    if !seen {
                        self.patterns.visit(hc, &self.path, self.limit);
                    }
                    self.walk(child, hc);
                    self.path.pop();
                }
            }
            View::Array(a) if !a.is_empty() => {
                let hc = mix(h ^ STAR);
                self.path.push(Seg::Index(0));
                self.patterns.visit(hc, &self.path, self.limit);
                for child in a {
                    self.walk(child, hc);
                }
                self.path.pop();
            }
            _ => {}
        }
    }
}

/// A non-empty object or array (a node whose walk can visit patterns).
fn is_container<N: Node>(v: &N) -> bool {
    match v.view() {
        View::Object(o) => !o.is_empty(),
        View::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Whether two objects name the same members in the same order. (The scan shares a record's
/// names with the record before where they are the same: those are the same text.)
fn same_member_names<N: Node>(a: &N::Object, b: &N::Object) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((x, _), (y, _))| std::ptr::eq(x, y) || same_text(x, y))
}

/// Fields deeper than this many segments are not counted as present (their pattern texts grow
/// with depth; classification then divides by the compared exchanges).
const PRESENCE_DEPTH: usize = 32;

/// The segment hash of `*` (any array element).
const STAR: u64 = 0x9e37_79b9_7f4a_7c15;

/// A 64-bit finaliser (splitmix64's): every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hasher for keys that are hashes already.
#[derive(Debug, Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// `Option::zip` with the second value computed only when the first is `Some`.
trait ZipLazy<A> {
    fn zip_lazy<B>(self, f: impl FnOnce() -> Option<B>) -> Option<(A, B)>;
}

impl<A> ZipLazy<A> for Option<A> {
    fn zip_lazy<B>(self, f: impl FnOnce() -> Option<B>) -> Option<(A, B)> {
        let a = self?;
        Some((a, f()?))
    }
}

/// A value's JSON text with object members in key order: equal values (whatever the order
/// their members came in) have the same canonical text.
pub fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(o) => {
                let mut members: Vec<(&String, &Value)> = o.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, e)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(e, out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(e, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Members tried, in order, as the key of an array without a configured one (`auto_keys`).
pub const AUTO_KEYS: [&str; 4] = ["id", "remote_id", "uuid", "key"];

/// Nesting depth serde_json's parser accepts (its recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Why a body is not a JSON document we compare.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Nested deeper than the parser's limit ([`MAX_DEPTH`]): refused, never recursed into.
    #[error("{0}")]
    TooDeep(serde_json::Error),
    #[error("{0}")]
    Invalid(serde_json::Error),
    /// Its document would need more memory than the parse was given
    /// ([`doc::parse_within`]): not parsed.
    #[error("its document would need more memory than the comparisons' budget holds")]
    OverBudget,
}

/// Parses a body as JSON with serde_json's nesting limit (128 levels): deeper documents are
/// refused, never recursed into.
pub fn parse_json(bytes: &[u8]) -> Result<Value, JsonError> {
    // One UTF-8 check of the whole body is cheaper than one per string (what `from_slice` does):
    // ~4 % of the proxy's CPU on 24 KB pages. Invalid UTF-8 takes `from_slice` for its error.
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    };
    parsed.map_err(|e| {
        if nesting_before(bytes, e.line(), e.column()) >= MAX_DEPTH {
            JsonError::TooDeep(e)
        } else {
            JsonError::Invalid(e)
        }
    })
}

/// Checks that `bytes` are a JSON document [`parse_json`] accepts (UTF-8, syntax, nesting within
/// [`MAX_DEPTH`]) without building it: serving an unmapped candidate body needs no more.
/// (serde_json's `IgnoredAny` alone checks neither the UTF-8 inside strings nor the nesting.)
pub fn check_json(bytes: &[u8]) -> Result<(), JsonError> {
    use serde::de::Error as _;
    if nesting_before(bytes, usize::MAX, usize::MAX) >= MAX_DEPTH {
        // Rare: the parser's own verdict at its depth limit.
        return parse_json(bytes).map(|_| ());
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| JsonError::Invalid(serde_json::Error::custom(e)))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(JsonError::Invalid)
}

/// The deepest nesting of arrays and objects (outside strings) in `bytes` up to the position
/// serde_json reported an error at (1-based line and byte column): where the parser stopped
/// on its depth limit, this is the limit.
fn nesting_before(bytes: &[u8], line: usize, column: usize) -> usize {
    let (mut l, mut c) = (1, 0);
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if b == b'\n' {
            l += 1;
            c = 0;
        } else {
            c += 1;
        }
        if l > line || (l == line && c > column) {
            break;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests;
