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
//!   paths are counted per (field pattern, kind) ([`Found::counted`]), which is all the store
//!   keeps of them besides a few examples: the first difference of each pattern met past the
//!   bound is still listed, so that every pattern has an example.
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
}

impl Bound {
    /// Everything listed.
    pub const NONE: Self = Self {
        room: usize::MAX,
        listed: usize::MAX,
    };
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
        self.diffs.len() + self.counted.iter().map(|c| c.n).sum::<usize>() + self.unlisted
    }
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

/// (Field pattern, kind) pairs counted per comparison at most (the store keeps 1,000 rows of
/// them per exchange); differences of others are [`Found::unlisted`].
pub const COUNTED_ROWS: usize = 1000;

/// The longest path (as [`glob::text_len`] counts it) whose differences past [`Bound::listed`]
/// are counted under their pattern: one [`FREE_PATH_TEXT`] (ordinary paths), so that building
/// a pattern costs at most that much per difference and the patterns held at most
/// [`COUNTED_ROWS`] times it. Longer ones are [`Found::unlisted`].
const COUNTED_PATH: usize = FREE_PATH_TEXT;

/// The counts of differences past [`Bound::listed`], per (field pattern, kind), with what lets
/// a fast path of the walk take back what it counted.
#[derive(Default)]
pub(super) struct Tally {
    rows: Vec<Row>,
    /// Row per pattern, per kind ([`NO_ROW`]: none yet).
    at: HashMap<String, [u32; KINDS]>,
    /// The pattern of the difference being counted (built here, allocated once).
    pattern: String,
    /// Changes made while a mark is held, so that [`Tally::undo`] can take them back.
    log: Vec<Change>,
    marks: usize,
}

const KINDS: usize = 5;
const NO_ROW: u32 = u32::MAX;

struct Row {
    field: String,
    kind: Kind,
    n: usize,
    /// Whether the row's example was met (listed, or counted when it did not fit).
    listed: bool,
}

#[derive(Clone, Copy)]
enum Change {
    Created(u32),
    Counted(u32),
    Listed(u32),
}

/// What [`Tally::count`] decided for a difference.
pub(super) enum Verdict {
    /// Counted under its row.
    Counted,
    /// The first of its row: to be listed as its example (then [`Tally::example`]).
    Example(u32),
    /// No row for it (a long path, or every row taken).
    Unlisted,
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Missing => 0,
        Kind::Extra => 1,
        Kind::Changed => 2,
        Kind::TypeChanged => 3,
        Kind::UnpairedId => 4,
    }
}

impl Tally {
    /// Counts a difference of `kind` at `path` (whose [`glob::text_len`] is `path_text`).
    pub(super) fn count(&mut self, kind: Kind, path: &[Seg<'_>], path_text: usize) -> Verdict {
        if path_text > COUNTED_PATH {
            return Verdict::Unlisted;
        }
        self.pattern.clear();
        glob::push_field_pattern(&mut self.pattern, path);
        let k = kind_index(kind);
        let row = match self.at.get(self.pattern.as_str()).map(|rows| rows[k]) {
            Some(row) if row != NO_ROW => row,
            _ if self.rows.len() >= COUNTED_ROWS => return Verdict::Unlisted,
            found => {
                let row = self.rows.len() as u32;
                match found {
                    Some(_) => self.at.get_mut(self.pattern.as_str()).expect("found")[k] = row,
                    None => {
                        let mut rows = [NO_ROW; KINDS];
                        rows[k] = row;
                        self.at.insert(self.pattern.clone(), rows);
                    }
                }
                self.rows.push(Row {
                    field: self.pattern.clone(),
                    kind,
                    n: 0,
                    listed: false,
                });
                self.note(Change::Created(row));
                row
            }
        };
        let r = &mut self.rows[row as usize];
        if !r.listed {
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
        r.listed = true;
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
                Change::Listed(row) => self.rows[row as usize].listed = false,
                // Rows are created in order: a row taken back is the last one.
                Change::Created(row) => {
                    let r = self.rows.pop().expect("created");
                    debug_assert_eq!(row as usize, self.rows.len());
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
