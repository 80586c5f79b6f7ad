//! What a comparison keeps of the differences it finds: a list, within a [`Bound`], and counts.
//!
//! A difference holds its pointer, its field pattern and both values: a few hundred bytes. Two
//! things would make the list of a body many times the body's size, so both are bounded:
//! - **long paths**: a path is the text of every member name above a node, so a body of one long
//!   name above many differing members makes a pointer and a pattern of that name per member.
//!   Differences are listed while the text of their paths (past [`FREE_PATH_TEXT`] each) fits in
//!   [`Bound::room`]; past it, they are only counted ([`Found::unlisted`]).
//! - **many differences**: a page whose every value differs (a wrong mapping over a long list)
//!   holds one listed difference per value. Past [`Bound::listed`] differences, those of ordinary
//!   paths (up to [`COUNTED_PATH`] bytes) are counted per (field pattern, kind)
//!   ([`Found::counted`]), which is all the store keeps of them besides a few examples: the
//!   patterns of the listed ones are counted whole, and the first difference of each pattern
//!   first met past them is still listed (its example; [`COUNTED_ROWS`] such patterns at most).
//!   Those of longer paths are listed while the room holds them (charged
//!   [`PAST_LISTED_COST`] more each), then counted in [`Found::unlisted`].
//!
//! - **what the store keeps**: it keeps a few examples of each (field pattern, kind) per exchange
//!   (`[store] examples_per_field`) and counts the rest. With [`Bound::examples`], a difference
//!   of an ordinary path among the first [`Bound::listed`] is listed only while its (field
//!   pattern, kind) has fewer listed; past them it is counted under the pattern. The list then
//!   holds what the store's examples are (the first of each pattern, in the order found) and the
//!   counts are the same: a page of 50 records differing in two members lists 6, not 100
//!   differences, each a pointer, a pattern and values built for nothing.
//!
//! Every difference is in one of the three: `diffs`, `counted` or `unlisted`.

use std::collections::HashMap;

use super::glob::{self, Seg};
use super::{Difference, Kind};

/// How much of what a comparison finds it lists (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Bytes of path text past [`FREE_PATH_TEXT`] per difference that listed differences take
    /// at most; past it, differences are counted in [`Found::unlisted`].
    pub room: usize,
    /// Differences listed before those of ordinary paths are only counted per (field pattern,
    /// kind) ([`Found::counted`]).
    pub listed: usize,
    /// Differences of ordinary paths listed per (field pattern, kind) among the first
    /// [`Bound::listed`]; the others are counted under it. `usize::MAX`: all listed.
    pub examples: usize,
}

impl Bound {
    /// Everything listed.
    pub const NONE: Self = Self {
        room: usize::MAX,
        listed: usize::MAX,
        examples: usize::MAX,
    };

    /// This bound, listing `n` differences per (field pattern, kind) (at least one).
    pub const fn with_examples(self, n: usize) -> Self {
        Self {
            examples: if n == 0 { 1 } else { n },
            ..self
        }
    }
}

/// What a comparison found: the differences it lists, those it counted per (field pattern,
/// kind) past [`Bound::listed`], and those it only counted (past [`Bound::room`], or past
/// [`COUNTED_ROWS`] patterns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub diffs: Vec<Difference>,
    pub counted: Vec<Counted>,
    pub unlisted: usize,
}

impl Found {
    /// Every difference found.
    pub fn total(&self) -> usize {
        total(&self.diffs, &self.counted, self.unlisted)
    }
}

/// Every difference of a comparison: listed, counted per pattern, or only counted.
pub fn total(diffs: &[Difference], counted: &[Counted], unlisted: usize) -> usize {
    diffs.len() + counted.iter().map(|c| c.n).sum::<usize>() + unlisted
}

/// Differences of one (field pattern, kind) counted and not listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counted {
    pub field: String,
    pub kind: Kind,
    pub n: usize,
}

/// Path text a listed difference holds without being charged for it: a pointer and a pattern
/// of 256 bytes each (the deepest paths of real APIs are under 100).
pub const FREE_PATH_TEXT: usize = 512;

/// Bytes a listed difference is charged for, about: its path texts (pointer, field pattern and
/// candidate pointer) as [`glob::text_len`] counts them, before escapes (a name of `~` and `/`
/// is written twice as long: charging it exactly would read every name above each difference,
/// those not listed too), past the first [`FREE_PATH_TEXT`]. Only path texts can grow past the
/// documents' size: a difference's values are parts of the documents, each node in one
/// difference at most, and there is at most one difference per node. A difference already
/// holds a few hundred bytes of record and values, so paths of ordinary length are not charged.
pub(super) fn listed_cost(path_text: usize, candidate_text: usize) -> usize {
    (2 * path_text + candidate_text).saturating_sub(FREE_PATH_TEXT)
}

/// (Field pattern, kind) pairs first met past [`Bound::listed`] that are counted per comparison
/// at most (the store keeps 1,000 rows of them per exchange); differences of others are
/// [`Found::unlisted`]. The patterns of the listed differences are always counted.
pub const COUNTED_ROWS: usize = 1000;

/// The longest path (as [`glob::text_len`] counts it) whose differences past [`Bound::listed`]
/// are counted under their pattern: half a [`FREE_PATH_TEXT`] (a listed difference's pointer
/// and pattern are then free: ordinary paths), so that building a pattern costs at most that
/// much per difference (twice with escapes) and the patterns held at most [`COUNTED_ROWS`]
/// times it. Longer ones are listed while the room holds them with [`PAST_LISTED_COST`] more
/// each, then counted in [`Found::unlisted`] from their length alone.
pub(super) const COUNTED_PATH: usize = FREE_PATH_TEXT / 2;

/// What a difference of a long path listed past [`Bound::listed`] is charged besides its path
/// text (its record and values): those listed so are at most the room over this many.
pub(super) const PAST_LISTED_COST: usize = 512;

/// The counts of differences past [`Bound::listed`], per (field pattern, kind), with what lets
/// a fast path of the walk take back what it counted.
#[derive(Default)]
pub(super) struct Tally {
    rows: Vec<Row>,
    /// Row per pattern, per kind ([`NO_ROW`]: none yet).
    at: HashMap<String, [u32; KINDS]>,
    /// Whether the listed differences' patterns are rows ([`Tally::seed`]).
    seeded: bool,
    /// Rows of patterns first met past the listed ones (at most [`COUNTED_ROWS`]).
    fresh: usize,
    /// The pattern of the difference being counted (built here, allocated once).
    pattern: String,
    /// Changes made while a mark is held, so that [`Tally::undo`] can take them back.
    log: Vec<Change>,
    marks: usize,
}

pub(super) const KINDS: usize = 5;
const NO_ROW: u32 = u32::MAX;

struct Row {
    field: String,
    kind: Kind,
    n: usize,
    /// Differences of the row listed (its examples; one counted when it did not fit counts
    /// as met).
    listed: usize,
    /// A row of a listed difference's pattern ([`Tally::seed`]).
    seeded: bool,
}

#[derive(Clone, Copy)]
enum Change {
    Created(u32),
    Counted(u32),
    Listed(u32),
    Seeded,
}

/// What [`Tally::count`] decided for a difference.
pub(super) enum Verdict {
    /// Counted under its row.
    Counted,
    /// The first of its row: to be listed as its example (then [`Tally::example`]).
    Example(u32),
    /// No row for it (every row taken).
    Unlisted,
}

pub(super) fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Missing => 0,
        Kind::Extra => 1,
        Kind::Changed => 2,
        Kind::TypeChanged => 3,
        Kind::UnpairedId => 4,
    }
}

impl Tally {
    /// Makes a row, its example met, of each pattern of the `listed` differences (once, when
    /// the first difference past them is counted): each pattern listed before is counted
    /// whole, past [`COUNTED_ROWS`] too, and gets no second example.
    fn seed(&mut self, listed: &[Difference]) {
        self.seeded = true;
        self.note(Change::Seeded);
        for d in listed {
            // Only patterns of paths counted under them (longer ones are never looked up).
            if d.field.len() <= 2 * COUNTED_PATH {
                if let Some(row) = self.row(&d.field, d.kind, true) {
                    // Rows met among the listed ones (with `examples`) have theirs already.
                    if self.rows[row as usize].listed == 0 {
                        self.rows[row as usize].listed = 1;
                        self.note(Change::Listed(row));
                    }
                }
            }
        }
    }

    /// The row of (`field`, `kind`), created when there is none (`None`: a fresh one that
    /// would be past [`COUNTED_ROWS`]).
    fn row(&mut self, field: &str, kind: Kind, seeded: bool) -> Option<u32> {
        let k = kind_index(kind);
        let found = self.at.get(field).map(|rows| rows[k]);
        if let Some(row) = found.filter(|&r| r != NO_ROW) {
            return Some(row);
        }
        if !seeded && self.fresh >= COUNTED_ROWS {
            return None;
        }
        let row = self.rows.len() as u32;
        match found {
            Some(_) => self.at.get_mut(field).expect("found")[k] = row,
            None => {
                let mut rows = [NO_ROW; KINDS];
                rows[k] = row;
                self.at.insert(field.to_owned(), rows);
            }
        }
        self.rows.push(Row {
            field: field.to_owned(),
            kind,
            n: 0,
            listed: 0,
            seeded,
        });
        self.fresh += usize::from(!seeded);
        self.note(Change::Created(row));
        Some(row)
    }

    /// The row of a difference of `kind` at `path` (whose [`glob::text_len`] is at most
    /// [`COUNTED_PATH`]) found past the `listed` ones, which seed the rows first; `None` when
    /// every row is taken. Counted with [`Tally::count_past`] (`examples` 1).
    pub(super) fn past_row(
        &mut self,
        kind: Kind,
        path: &[Seg<'_>],
        listed: &[Difference],
    ) -> Option<u32> {
        self.seed_once(listed);
        self.row_at(kind, path, false)
    }

    /// Seeds the rows from the `listed` differences, once (see [`Tally::seed`]): before a
    /// difference past them is counted under a row found earlier.
    pub(super) fn seed_once(&mut self, listed: &[Difference]) {
        if !self.seeded {
            self.seed(listed);
        }
    }

    /// The row of a difference of `kind` at `path` (whose [`glob::text_len`] is at most
    /// [`COUNTED_PATH`]) among the `listed` first: these have as many rows as differences at
    /// most, none refused.
    pub(super) fn early_row(&mut self, kind: Kind, path: &[Seg<'_>]) -> u32 {
        self.row_at(kind, path, true)
            .expect("a seeded row is always made")
    }

    /// The row of the pattern of `path` (built in one reused buffer) and `kind`.
    fn row_at(&mut self, kind: Kind, path: &[Seg<'_>], seeded: bool) -> Option<u32> {
        let mut pattern = std::mem::take(&mut self.pattern);
        pattern.clear();
        glob::push_field_pattern(&mut pattern, path);
        let row = self.row(&pattern, kind, seeded);
        self.pattern = pattern;
        row
    }

    /// Counts a difference under `row` once it lists `examples`; else it is to be listed.
    pub(super) fn count_past(&mut self, row: u32, examples: usize) -> Verdict {
        let r = &mut self.rows[row as usize];
        if r.listed < examples {
            return Verdict::Example(row);
        }
        r.n += 1;
        self.note(Change::Counted(row));
        Verdict::Counted
    }

    /// The example of `row` was met: `listed`, or counted under the row when it did not fit in
    /// the room (it is not offered again).
    pub(super) fn example(&mut self, row: u32, listed: bool) {
        let r = &mut self.rows[row as usize];
        r.listed += 1;
        self.note(Change::Listed(row));
        if !listed {
            self.rows[row as usize].n += 1;
            self.note(Change::Counted(row));
        }
    }

    fn note(&mut self, change: Change) {
        if self.marks > 0 {
            self.log.push(change);
        }
    }

    /// Starts what [`Tally::undo`] can take back; returns where to take it back to.
    pub(super) fn mark(&mut self) -> usize {
        self.marks += 1;
        self.log.len()
    }

    /// Keeps what was done since the mark.
    pub(super) fn keep(&mut self) {
        self.marks -= 1;
        if self.marks == 0 {
            self.log.clear();
        }
    }

    /// Takes back what was done since the mark at `to`.
    pub(super) fn undo(&mut self, to: usize) {
        while self.log.len() > to {
            match self.log.pop().expect("longer than to") {
                Change::Counted(row) => self.rows[row as usize].n -= 1,
                Change::Listed(row) => self.rows[row as usize].listed -= 1,
                Change::Seeded => self.seeded = false,
                // Rows are created in order: a row taken back is the last one.
                Change::Created(row) => {
                    let r = self.rows.pop().expect("created");
                    debug_assert_eq!(row as usize, self.rows.len());
                    self.fresh -= usize::from(!r.seeded);
                    let rows = self.at.get_mut(r.field.as_str()).expect("indexed");
                    rows[kind_index(r.kind)] = NO_ROW;
                    if rows.iter().all(|&x| x == NO_ROW) {
                        self.at.remove(r.field.as_str());
                    }
                }
            }
        }
        self.keep();
    }

    /// The rows that counted something.
    pub(super) fn finish(self) -> Vec<Counted> {
        self.rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(|r| Counted {
                field: r.field,
                kind: r.kind,
                n: r.n,
            })
            .collect()
    }
}
