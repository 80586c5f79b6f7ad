//! Paging across vendors: legacy pages by offset and limit (Finch's `?offset=&limit=`, its
//! envelope's `paging.count` the total), the candidate by opaque cursor (Merge's `next`). A
//! legacy page is answered from the candidate by walking its cursors ([`window`]): from the
//! cursor known to start nearest before the offset (learned from earlier walks, cached per
//! account and query: [`Cursors`]), page after page, keeping the items at the legacy offsets
//! asked for, until the window is full and the total is known. The assembled candidate page
//! holds exactly legacy's window; after the mapping, legacy's paging fields are stamped with
//! what was walked ([`stamp`]): the offset served and the total.
//!
//! A list longer than `max_pages` candidate pages cannot be walked: the exchange is not
//! compared (`paging`), and a served request falls back to legacy.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// `[routes.paging]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Legacy's query parameters: the offset and the page size.
    pub offset: String,
    pub limit: String,
    /// Where legacy's envelope holds the total and the offset (pointers, stamped after the
    /// mapping).
    pub count_field: Option<String>,
    pub offset_field: Option<String>,
    /// The candidate's query parameters: the cursor and the page size.
    pub cursor: String,
    pub page_size: String,
    /// The page size asked of the candidate (its maximum: fewer calls).
    pub max_page_size: usize,
    /// Where the candidate's page holds its next cursor and its items.
    pub next_field: String,
    pub results_field: String,
    /// Candidate pages walked for one request at most.
    pub max_pages: usize,
    /// How long a learned cursor (and a walked total) is used.
    pub cursor_ttl: Duration,
}

/// The member of an assembled candidate page that carries the walk's offset and total to
/// [`stamp`] (after the mapping).
pub const STAMP: &str = "@shadowdiff_paging";

/// A legacy page request: items `offset..offset + limit` (`None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub offset: usize,
    pub limit: Option<usize>,
}

impl Want {
    /// From the caller's query: a value that is not a number is `None` (not paged here).
    pub fn from_query(spec: &Spec, query: &[(String, String)]) -> Option<Self> {
        // A parameter given twice: vendors read the first or the last; not walked.
        if [&spec.offset, &spec.limit]
            .iter()
            .any(|p| query.iter().filter(|(k, _)| k == *p).count() > 1)
        {
            return None;
        }
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let offset = match get(&spec.offset) {
            None => 0,
            Some(v) => v.parse().ok()?,
        };
        let limit = match get(&spec.limit) {
            None => None,
            Some(v) => Some(v.parse().ok()?),
        };
        Some(Self { offset, limit })
    }

    fn end(self) -> Option<usize> {
        self.limit.map(|l| self.offset.saturating_add(l))
    }
}

/// One candidate page.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<String>,
    pub doc: Value,
    /// The page's size as received (decoded): what keeping its items costs.
    pub bytes: usize,
}

impl Page {
    /// Reads a candidate page by the spec's fields; `Err` says what is wrong with it.
    pub fn parse(doc: Value, spec: &Spec) -> Result<Self, String> {
        let items = match doc.pointer(&spec.results_field) {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(format!(
                    "the candidate's page has no list at {}",
                    spec.results_field
                ))
            }
        };
        let next = match doc.pointer(&spec.next_field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(cursor_of(s, &spec.cursor)),
            Some(_) => {
                return Err(format!(
                    "the candidate's next cursor at {} is not a string",
                    spec.next_field
                ))
            }
        };
        Ok(Self {
            items,
            next,
            doc,
            bytes: 0,
        })
    }
}

/// A cursor as the candidate gave it: the value itself, or a URL whose query holds it.
fn cursor_of(next: &str, param: &str) -> String {
    if next.starts_with("http://") || next.starts_with("https://") || next.starts_with('/') {
        if let Some((_, q)) = next.split_once('?') {
            if let Some((_, v)) = crate::translate::parse_query(q)
                .into_iter()
                .find(|(k, _)| k == param)
            {
                return v;
            }
        }
    }
    next.to_owned()
}

/// Why a window could not be walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop<E> {
    /// The list is longer than `max_pages` pages.
    TooLong,
    /// The pages holding the window's items are more than `keep` allows.
    TooLarge,
    /// A page failed (the caller's error: a status, a body).
    Failed(E),
}

/// A walked window: legacy's items, the list's total, and the first page walked (its envelope).
#[derive(Debug, Clone)]
pub struct Walked {
    pub items: Vec<Value>,
    pub total: usize,
    pub envelope: Value,
    pub pages: usize,
}

struct Entry {
    at: Instant,
    /// Item index → the cursor whose page starts there.
    starts: BTreeMap<usize, String>,
    total: Option<usize>,
}

/// Cursors learned per (account, query), each for `ttl`; at most `max` queries and 16 MiB of
/// keys and cursors (the oldest forgotten first; a cursor over 2 KiB is used, never kept).
pub struct Cursors {
    entries: Mutex<Held>,
    max: usize,
}

/// The cache's entries and the bytes of their keys and cursors.
#[derive(Default)]
struct Held {
    map: HashMap<String, Entry>,
    bytes: usize,
}

impl Held {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(e.bytes(key));
        }
    }
}

/// The bytes of keys and cursors the cache holds at most; past it the oldest queries go.
const MAX_BYTES: usize = 16 << 20;
/// A cursor longer than this is used but not kept.
const MAX_CURSOR: usize = 2048;

impl Default for Cursors {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl Entry {
    fn bytes(&self, key: &str) -> usize {
        key.len() + self.starts.values().map(|c| c.len() + 16).sum::<usize>()
    }
}

impl Cursors {
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::default(),
            max: max.max(1),
        }
    }

    /// The bytes of keys and cursors held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The known cursor starting nearest at or before `offset`, and the total if known.
    fn nearest(
        &self,
        key: &str,
        offset: usize,
        ttl: Duration,
    ) -> (usize, Option<String>, Option<usize>) {
        let mut m = self.lock();
        match m.map.get(key) {
            Some(e) if e.at.elapsed() <= ttl => {
                let (at, c) = e
                    .starts
                    .range(..=offset)
                    .next_back()
                    .map_or((0, None), |(a, c)| (*a, Some(c.clone())));
                (at, c, e.total)
            }
            Some(_) => {
                m.remove(key);
                (0, None, None)
            }
            None => (0, None, None),
        }
    }

    fn learn(&self, key: &str, start: usize, cursor: Option<&str>, total: Option<usize>) {
        let cursor = cursor.filter(|c| c.len() <= MAX_CURSOR);
        if key.len() > MAX_CURSOR * 4 {
            return;
        }
        let mut m = self.lock();
        let adding = cursor.map_or(0, |c| c.len() + 16)
            + if m.map.contains_key(key) {
                0
            } else {
                key.len()
            };
        while (!m.map.contains_key(key) && m.map.len() >= self.max) || m.bytes + adding > MAX_BYTES
        {
            let Some(oldest) = m
                .map
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            m.remove(&oldest);
        }
        let m = &mut *m;
        if !m.map.contains_key(key) {
            m.bytes += key.len();
        }
        let e = m.map.entry(key.to_owned()).or_insert_with(|| Entry {
            at: Instant::now(),
            starts: BTreeMap::new(),
            total: None,
        });
        if let Some(c) = cursor {
            if let Some(old) = e.starts.insert(start, c.to_owned()) {
                m.bytes = m.bytes.saturating_sub(old.len() + 16);
            }
            m.bytes += c.len() + 16;
        }
        if total.is_some() {
            e.total = total;
            e.at = Instant::now();
        }
    }

    /// Queries held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Walks the candidate's cursors for legacy's window `want`: `fetch(cursor)` gets one page
/// (`None`: the first). Starts from the nearest cursor `cursors` knows for `key`; stops once the
/// window is full and the total is known (cached, or the end reached).
pub async fn window<E, F, Fut>(
    spec: &Spec,
    cursors: &Cursors,
    key: &str,
    want: Want,
    mut fetch: F,
    mut keep: impl FnMut(usize) -> bool,
) -> Result<Walked, Stop<E>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page, E>>,
{
    let (mut pos, mut cursor, known_total) = cursors.nearest(key, want.offset, spec.cursor_ttl);
    let mut items = Vec::new();
    let mut envelope = None;
    let mut pages = 0;
    loop {
        if pages >= spec.max_pages.max(1) {
            return Err(Stop::TooLong);
        }
        let page = fetch(cursor.clone()).await.map_err(Stop::Failed)?;
        pages += 1;
        let start = pos;
        let before = items.len();
        for item in &page.items {
            let in_window = pos >= want.offset && want.end().is_none_or(|end| pos < end);
            if in_window {
                items.push(item.clone());
            }
            pos += 1;
        }
        // Items kept: their page's bytes are charged (a walk holds at most what `keep` allows).
        if items.len() > before && !keep(page.bytes) {
            return Err(Stop::TooLarge);
        }
        // A page that moved nowhere but names a next cursor would loop: the list ends here.
        let next = page.next.clone().filter(|_| pos > start);
        cursors.learn(key, start, cursor.as_deref(), None);
        if envelope.is_none() {
            envelope = Some(page.doc);
        }
        match next {
            None => {
                cursors.learn(key, pos, None, Some(pos));
                return Ok(Walked {
                    items,
                    total: pos,
                    envelope: envelope.unwrap_or(Value::Null),
                    pages,
                });
            }
            Some(n) => {
                cursors.learn(key, pos, Some(&n), None);
                cursor = Some(n);
            }
        }
        if let (Some(end), Some(total)) = (want.end(), known_total) {
            if pos >= end && total >= pos {
                return Ok(Walked {
                    items,
                    total,
                    envelope: envelope.unwrap_or(Value::Null),
                    pages,
                });
            }
        }
    }
}

/// The candidate's page as the mapping reads it: the first page walked, its items replaced by
/// the window's, no next cursor, and the walk's offset and total under [`STAMP`].
pub fn assemble(spec: &Spec, walked: Walked, want: Want) -> Value {
    let mut doc = walked.envelope;
    if let Some(v) = doc.pointer_mut(&spec.results_field) {
        *v = Value::Array(walked.items);
    }
    if let Some(v) = doc.pointer_mut(&spec.next_field) {
        *v = Value::Null;
    }
    if let Value::Object(m) = &mut doc {
        let mut stamp = Map::new();
        stamp.insert("offset".into(), Value::from(want.offset));
        stamp.insert("count".into(), Value::from(walked.total));
        m.insert(STAMP.into(), Value::Object(stamp));
    }
    doc
}

/// The walk's offset and total, from an assembled candidate page.
pub fn stamp_of(raw: &Value) -> Option<(u64, u64)> {
    let s = raw.get(STAMP)?;
    Some((s.get("offset")?.as_u64()?, s.get("count")?.as_u64()?))
}

/// Legacy's paging fields in the mapped document, set to what was walked.
pub fn stamp(spec: &Spec, mapped: &mut Value, (offset, count): (u64, u64)) {
    for (field, v) in [(&spec.offset_field, offset), (&spec.count_field, count)] {
        if let Some(f) = field {
            set(mapped, f, Value::from(v));
        }
    }
}

/// Whether a page in legacy's envelope (after the mapping and the stamp) is the whole list: its
/// offset is 0 (or not given) and its `count_field` is the number of `records` it holds. Without
/// `count_field` nothing says so: `false`.
pub fn whole(spec: &Spec, doc: &Value, records: usize) -> bool {
    let offset = spec
        .offset_field
        .as_ref()
        .and_then(|f| doc.pointer(f))
        .map_or(Some(0), Value::as_u64);
    let count = spec
        .count_field
        .as_ref()
        .and_then(|f| doc.pointer(f))
        .and_then(Value::as_u64);
    offset == Some(0) && count == Some(records as u64)
}

/// Sets the value at a pointer, creating the objects on the way.
fn set(doc: &mut Value, pointer: &str, v: Value) {
    let mut at = doc;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = tokens.split_last() else {
        return;
    };
    for t in path {
        if !at.is_object() {
            return;
        }
        at = at
            .as_object_mut()
            .expect("checked")
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(m) = at {
        m.insert(last.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(max_pages: usize) -> Spec {
        Spec {
            offset: "offset".into(),
            limit: "limit".into(),
            count_field: Some("/paging/count".into()),
            offset_field: Some("/paging/offset".into()),
            cursor: "cursor".into(),
            page_size: "page_size".into(),
            max_page_size: 100,
            next_field: "/next".into(),
            results_field: "/results".into(),
            max_pages,
            cursor_ttl: Duration::from_secs(60),
        }
    }

    /// A cursor API over `n` items whose pages end where `cuts` say (not where asked), with
    /// opaque cursors.
    fn api(n: usize, cuts: &[usize]) -> impl Fn(Option<String>) -> Result<Page, String> + '_ {
        move |cursor| {
            let start = match cursor {
                None => 0,
                Some(c) => c
                    .strip_prefix("opaque-")
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or("bad cursor")?,
            };
            let size = cuts[start % cuts.len()].max(1);
            let end = (start + size).min(n);
            let items: Vec<Value> = (start..end).map(|i| json!({"i": i})).collect();
            let next = (end < n).then(|| format!("opaque-{end}"));
            let doc = json!({"next": next, "results": items});
            Page::parse(doc, &spec(1000))
        }
    }

    fn run(
        spec: &Spec,
        cursors: &Cursors,
        want: Want,
        fetch: &dyn Fn(Option<String>) -> Result<Page, String>,
        calls: &std::cell::Cell<usize>,
    ) -> Result<Walked, Stop<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(window(
            spec,
            cursors,
            "k",
            want,
            |c| {
                calls.set(calls.get() + 1);
                std::future::ready(fetch(c))
            },
            |_| true,
        ))
    }

    proptest! {
        /// For any list, page boundaries, and sequence of legacy offsets and limits (one cache
        /// across them, as a paginating client's requests share it), each window is exactly
        /// legacy's items in legacy's order, with the list's total.
        #[test]
        fn windows_are_legacys_items_for_any_page_boundaries(
            n in 0usize..60,
            cuts in proptest::collection::vec(1usize..9, 1..6),
            asks in proptest::collection::vec((0usize..70, proptest::option::of(0usize..25)), 1..8),
        ) {
            let fetch = api(n, &cuts);
            let cursors = Cursors::default();
            let s = spec(1000);
            for (offset, limit) in asks {
                let calls = std::cell::Cell::new(0);
                let w = run(&s, &cursors, Want { offset, limit }, &fetch, &calls).unwrap();
                let end = limit.map_or(n, |l| (offset + l).min(n));
                let expected: Vec<Value> = (offset.min(n)..end.max(offset.min(n))).map(|i| json!({"i": i})).collect();
                prop_assert_eq!(&w.items, &expected);
                prop_assert_eq!(w.total, n);
            }
        }
    }

    #[test]
    fn a_paginating_client_walks_once_then_seeks() {
        let fetch = api(20, &[3]);
        let cursors = Cursors::default();
        let s = spec(100);
        let calls = std::cell::Cell::new(0);
        // The first page walks to the end (the total): 7 pages of 3.
        let w = run(
            &s,
            &cursors,
            Want {
                offset: 0,
                limit: Some(4),
            },
            &fetch,
            &calls,
        )
        .unwrap();
        assert_eq!((w.items.len(), w.total, calls.get()), (4, 20, 7));
        // The next ones seek from the nearest cursor and stop when full.
        calls.set(0);
        let w = run(
            &s,
            &cursors,
            Want {
                offset: 16,
                limit: Some(4),
            },
            &fetch,
            &calls,
        )
        .unwrap();
        assert_eq!(
            w.items,
            (16..20).map(|i| json!({"i": i})).collect::<Vec<_>>()
        );
        assert_eq!(calls.get(), 2, "from the cursor at 15");
        // Pages holding the window's items beyond what `keep` allows: refused.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut kept = 0;
        let got = rt.block_on(window(
            &s,
            &Cursors::default(),
            "k",
            Want {
                offset: 0,
                limit: None,
            },
            |c| {
                std::future::ready(fetch(c).map(|mut p| {
                    p.bytes = 1000;
                    p
                }))
            },
            |b| {
                kept += b;
                kept <= 2500
            },
        ));
        assert_eq!(got.unwrap_err(), Stop::TooLarge);
        // A repeated offset or limit is not walked (vendors read the first or the last).
        let q = |s: &str| crate::translate::parse_query(s);
        assert_eq!(Want::from_query(&s, &q("offset=0&limit=2&offset=4")), None);
        assert_eq!(Want::from_query(&s, &q("limit=2&limit=3")), None);
        assert_eq!(
            Want::from_query(&s, &q("offset=4&limit=2")),
            Some(Want {
                offset: 4,
                limit: Some(2)
            })
        );
        // A list longer than max_pages pages is refused.
        let calls = std::cell::Cell::new(0);
        let short = spec(3);
        assert_eq!(
            run(
                &short,
                &Cursors::default(),
                Want {
                    offset: 0,
                    limit: Some(2)
                },
                &fetch,
                &calls
            )
            .unwrap_err(),
            Stop::TooLong
        );
    }

    #[test]
    fn assembled_pages_carry_the_window_and_the_stamp() {
        let s = spec(10);
        let walked = Walked {
            items: vec![json!(1), json!(2)],
            total: 9,
            envelope: json!({"next": "c", "previous": null, "results": [0]}),
            pages: 2,
        };
        let doc = assemble(
            &s,
            walked,
            Want {
                offset: 4,
                limit: Some(2),
            },
        );
        assert_eq!(doc["results"], json!([1, 2]));
        assert_eq!(doc["next"], Value::Null);
        assert_eq!(stamp_of(&doc), Some((4, 9)));
        let mut mapped = json!({"individuals": []});
        stamp(&s, &mut mapped, (4, 9));
        assert_eq!(mapped["paging"], json!({"count": 9, "offset": 4}));
        assert_eq!(
            cursor_of(
                "https://api.example/v1/x?page_size=5&cursor=ab%3D",
                "cursor"
            ),
            "ab="
        );
        // The cache keeps no cursor over 2 KiB, and holds 16 MiB at most.
        let c = Cursors::default();
        c.learn("k", 0, Some(&"x".repeat(4096)), None);
        assert_eq!(c.bytes(), 1);
        for i in 0..8_500 {
            c.learn(&format!("q{i}"), 10, Some(&"c".repeat(2000)), None);
        }
        assert!(c.bytes() <= 16 << 20, "{}", c.bytes());
        assert!(c.len() < 8_500);
    }
}
