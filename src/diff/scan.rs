//! The comparison's own JSON scanner: one pass over a body's text that builds the compact tree
//! ([`Fast`]) in the caller's arena, its strings and numbers borrowed from the text (a string
//! with an escape is written out once, into the arena).
//!
//! It is only ever *sure or silent*: it returns a tree exactly when serde_json (with
//! `arbitrary_precision`, as [`super::parse_json`] runs it) accepts the text and reads it as the
//! same document, and `None` for everything else: a syntax error, nesting at serde_json's limit,
//! an object naming a member twice, a `\u` escape of half a surrogate pair. The caller then asks
//! serde_json, which decides and gives the error. So the scanner needs no error messages, and
//! every verdict is serde_json's.
//!
//! The text is valid UTF-8 (the caller checks the whole body once), so a string's bytes between
//! its quotes are a `&str` as they are. The bytes that end or interrupt a string (`"`, `\`, and
//! the control characters serde_json refuses) are found from the text's string index
//! ([`super::index`], built first, 64 bytes at a time).
//!
//! The records of a page mostly name the same members in the same order: an object's names are
//! expected from the object at the same place in the element before (the previous record's),
//! compared with the text where they are instead of searched for, and an object named as that
//! one was needs no check for a repeated name ([`Scanner::object`]).

use bumpalo::Bump;

use super::doc::{Fast, Room};
use super::index::Index;
use super::MAX_DEPTH;

thread_local! {
    /// This thread's index, its buffer reused from body to body.
    static INDEX: std::cell::Cell<Index> = std::cell::Cell::new(Index::default());
}

/// The most words a thread's index keeps between bodies (8 bytes each, one per 64 bytes of
/// text: a 2 MiB body's).
const KEEP_WORDS: usize = 1 << 15;

/// What a scan gave: the tree or why not, and how far it got.
pub(super) struct Scanned<'b> {
    pub tree: Result<Fast<'b>, Stop>,
    /// Bytes of the text read.
    pub read: usize,
}

/// Why a scan gave no tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Not sure (see the module's documentation): serde_json's to say. Its document is the
    /// whole text's when `whole` (a repeated member name, serde_json's own name for a number),
    /// else it stops where the scan did, on an error of its own.
    Doubt { whole: bool },
    /// The tree would not fit in the memory its [`Room`] could give: stopped there.
    Refused,
}

/// Bytes of tree a scan asks its room for at a time, at least.
const ASK_BYTES: usize = 64 << 10;

/// What an arena's chunk size may be rounded up by.
const PAGE: usize = 4096;

/// An arena's smallest chunk (bumpalo's is smaller).
const MIN_CHUNK: usize = 1024;

/// Items and members the scratch stacks start with.
const SCRATCH: usize = 64;

/// Builds the tree of `text` in `arena` (see the module's documentation), within what `room`
/// gives: everything the scan holds (the string index, the scratch stacks, the tree) is asked
/// of it before it is held.
pub(super) fn scan<'b>(text: &'b str, arena: &'b Bump, room: &mut dyn Room) -> Scanned<'b> {
    // Text that cannot be JSON (an HTML page) is not indexed first.
    let first = text
        .bytes()
        .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    if let Some(at) = first.filter(|&at| !may_start_a_value(text.as_bytes()[at])) {
        return Scanned {
            tree: Err(Stop::Doubt { whole: false }),
            read: at,
        };
    }
    // The index (a bit per byte) and the scratch stacks' start.
    let start = text.len().div_ceil(64) * 8
        + SCRATCH * (size_of::<Fast<'b>>() + size_of::<(&'b str, Fast<'b>)>());
    if !room.take(start) {
        return Scanned {
            tree: Err(Stop::Refused),
            read: 0,
        };
    }
    INDEX.with(|cell| {
        let mut ix = cell.take();
        ix.build(text.as_bytes());
        let tree = scan_indexed(text, &ix, arena, room);
        if ix.capacity() <= KEEP_WORDS {
            cell.set(ix);
        }
        tree
    })
}

fn may_start_a_value(b: u8) -> bool {
    matches!(
        b,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    )
}

fn scan_indexed<'b>(
    text: &'b str,
    ix: &Index,
    arena: &'b Bump,
    room: &mut dyn Room,
) -> Scanned<'b> {
    let mut s = Scanner {
        ix,
        text,
        bytes: text.as_bytes(),
        at: 0,
        arena,
        items: Vec::with_capacity(SCRATCH),
        members: Vec::with_capacity(SCRATCH),
        unescaped: String::new(),
        root: Fast::Null,
        shapes: [&[]; SHAPES],
        spending: Spending {
            room,
            spent: 0,
            granted: 0,
            refused: false,
            seen: arena.allocated_bytes(),
            chunk: arena.allocated_bytes(),
        },
        items_peak: SCRATCH * size_of::<Fast<'b>>(),
        members_peak: SCRATCH * size_of::<(&'b str, Fast<'b>)>(),
        set_peak: 0,
        whole: false,
    };
    let done = s.value(1, Dest::Root, Fast::Null).is_some() && {
        s.skip_ws();
        s.at == s.bytes.len()
    };
    Scanned {
        tree: match (done, s.spending.refused) {
            (true, _) => Ok(s.root),
            (false, true) => Err(Stop::Refused),
            (false, false) => Err(Stop::Doubt { whole: s.whole }),
        },
        read: s.at,
    }
}

/// Where a value read goes: written there in place (a node built in one place and copied to
/// another is read back in pieces wider than the stores that wrote it, which the processor
/// cannot forward: measured as a third of the scan).
#[derive(Clone, Copy)]
enum Dest {
    Root,
    /// `items[i]`
    Item(usize),
    /// `members[i].1`
    Member(usize),
}

/// What a scan has asked its room for, asked before the scratch stacks grow and as the arena
/// fills.
struct Spending<'i> {
    room: &'i mut dyn Room,
    /// Bytes asked for: the scratch stacks' new buffers, the arena's new chunks, name sets.
    spent: usize,
    /// Bytes the room gave.
    granted: usize,
    /// The room refused: the scan stopped for that, not for a doubt.
    refused: bool,
    /// The arena's size when last looked at, and its last chunk's (at first its whole size:
    /// a reset arena keeps one chunk).
    seen: usize,
    chunk: usize,
}

impl Spending<'_> {
    /// Counts `n` more bytes held; `None` (and `refused`) when the room cannot give them.
    #[inline]
    fn spend(&mut self, n: usize) -> Option<()> {
        self.spent += n;
        if self.spent <= self.granted {
            return Some(());
        }
        self.ask()
    }

    #[cold]
    #[inline(never)]
    fn ask(&mut self) -> Option<()> {
        let want = (self.spent - self.granted).max(ASK_BYTES);
        if self.room.take(want) {
            self.granted += want;
            Some(())
        } else {
            self.refused = true;
            None
        }
    }

    /// A holding that comes and goes (a scratch stack's move, a set of names) is `now` bytes
    /// at this moment; what passes its largest moment so far (`peak`) is asked for.
    fn reach_peak(&mut self, peak: &mut usize, now: usize) -> Option<()> {
        if now > *peak {
            self.spend(now - *peak)?;
            *peak = now;
        }
        Some(())
    }

    /// Before `bytes` go into `arena`: when they may need a new chunk of it, the chunk is
    /// asked for first. Chunks the arena has already (a thread's spare one) are not.
    #[inline]
    fn arena(&mut self, arena: &Bump, bytes: usize) -> Option<()> {
        // (`+ 7`: a slice's alignment may take up to 7 bytes of the chunk.)
        if bytes + 7 <= arena.chunk_capacity() {
            return Some(());
        }
        self.new_chunk(arena, bytes + 7)
    }

    /// A new chunk is twice the arena's last one, or what it must hold (`bumpalo`'s rule),
    /// rounded up to a page at most. (Asked for again if it did not come: an allocation that
    /// fit after all.)
    #[cold]
    #[inline(never)]
    fn new_chunk(&mut self, arena: &Bump, bytes: usize) -> Option<()> {
        let total = arena.allocated_bytes();
        if total > self.seen {
            self.chunk = total - self.seen;
            self.seen = total;
        }
        self.spend((2 * self.chunk).max(bytes).max(MIN_CHUNK) + PAGE)
    }
}

/// Room for one more slot on a full scratch stack: it doubles, and its new buffer and the old
/// one, held at once while the slots move, are asked for first (each stack's `peak`; the two
/// stacks are counted as if they peaked together).
#[cold]
#[inline(never)]
fn grow<T>(stack: &mut Vec<T>, peak: &mut usize, spending: &mut Spending<'_>) -> Option<()> {
    let cap = stack.capacity();
    let want = (cap * 2).max(1);
    spending.reach_peak(peak, (want + cap) * size_of::<T>())?;
    stack.reserve_exact(want - stack.len());
    Some(())
}

struct Scanner<'b, 'i> {
    spending: Spending<'i>,
    /// The most each scratch stack has held at once, in bytes.
    items_peak: usize,
    members_peak: usize,
    /// The largest set of names a repeated-name check has built.
    set_peak: usize,
    /// The scan stopped on a document serde_json reads whole (see [`Stop::Doubt`]).
    whole: bool,
    /// The text's string index.
    ix: &'i Index,
    text: &'b str,
    bytes: &'b [u8],
    at: usize,
    arena: &'b Bump,
    /// The items of the arrays open, innermost last: a finished array's are copied into the
    /// arena as one slice and taken off (one buffer for the whole document).
    items: Vec<Fast<'b>>,
    /// The same for objects' members.
    members: Vec<(&'b str, Fast<'b>)>,
    /// Where a string with escapes is written before it goes into the arena.
    unescaped: String,
    root: Fast<'b>,
    /// Objects already found to name each member once, by their member count and first
    /// name's length: an object whose names are a remembered one's, in order, needs no check
    /// of its own (the records of a page mostly are).
    shapes: [&'b [(&'b str, Fast<'b>)]; SHAPES],
}

/// The member name by which serde_json's `arbitrary_precision` carries a number in an object.
const SERDE_NUMBER: &str = "$serde_json::private::Number";

/// How many shapes of objects are remembered.
const SHAPES: usize = 32;

impl<'b> Scanner<'b, '_> {
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Takes `b` when it is next, after any whitespace (looked for only when `b` is not at the
    /// cursor: a compact body has none).
    #[inline(always)]
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            return true;
        }
        self.skip_ws();
        let next = self.peek() == Some(b);
        self.at += usize::from(next);
        next
    }

    /// After a container's item: `,` (another follows: `false`) or `close` (the container
    /// ends: `true`); anything else is serde_json's to judge (`None`).
    #[inline]
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let b = self.peek()?;
        self.at += 1;
        match b {
            b',' => Some(false),
            _ if b == close => Some(true),
            _ => None,
        }
    }

    #[inline(always)]
    fn put(&mut self, dest: Dest, v: Fast<'b>) {
        match dest {
            Dest::Root => self.root = v,
            Dest::Item(i) => self.items[i] = v,
            Dest::Member(i) => self.members[i].1 = v,
        }
    }

    /// Reads the value at the cursor (after whitespace) into `dest`; `depth` is its nesting,
    /// the root's 1. `like` is the value the document had at the same place in the element
    /// before (the same member of the previous record), or `Null` (see [`Scanner::object`]).
    /// Says whether the value is alike `like` as [`Fast::ObjectLike`] says (a scalar always
    /// is: it has no field pattern below it).
    fn value(&mut self, depth: usize, dest: Dest, like: Fast<'b>) -> Option<bool> {
        self.skip_ws();
        let v = match self.peek()? {
            b'"' => {
                self.at += 1;
                Fast::String(self.string()?)
            }
            b'{' if depth < MAX_DEPTH => return self.object(depth, dest, like),
            b'[' if depth < MAX_DEPTH => return self.array(depth, dest, like),
            b't' => self.literal(b"true", Fast::Bool(true))?,
            b'f' => self.literal(b"false", Fast::Bool(false))?,
            b'n' => self.literal(b"null", Fast::Null)?,
            b'-' | b'0'..=b'9' => Fast::Number(self.number()?),
            // Anything else, or a container at serde_json's limit (it refuses even an empty
            // one there): serde_json's to say.
            _ => return None,
        };
        self.put(dest, v);
        Some(true)
    }

    fn literal(&mut self, word: &[u8], v: Fast<'b>) -> Option<Fast<'b>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            v
        })
    }

    /// A number as serde_json's grammar has it: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?, its text as written.
    fn number(&mut self) -> Option<&'b str> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        self.text.get(start..self.at)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// The string whose opening quote is just before the cursor; the cursor ends after its
    /// closing quote.
    #[inline(always)]
    fn string(&mut self) -> Option<&'b str> {
        let start = self.at;
        let stop = self.ix.next_stop(start)?;
        if self.bytes[stop] == b'"' {
            self.at = stop + 1;
            return self.text.get(start..stop);
        }
        self.escaped(start, stop)
    }

    /// Whether the string whose opening quote is just before the cursor is `name`, a name
    /// the scan read from this text as it is (no escape: see below); if so, the cursor goes
    /// past its closing quote.
    ///
    /// Only a name that lies in the text is expected: its bytes were a whole string there, so
    /// none of them ends or interrupts a string, and the same bytes followed by a quote are the
    /// same whole string here. (A name written with escapes lies in the arena: its bytes may
    /// hold a quote, and equal bytes here would be a shorter string and more text.)
    #[inline(always)]
    fn expected_name(&mut self, name: &str) -> bool {
        let end = self.at + name.len();
        let same = self.bytes.as_ptr_range().contains(&name.as_ptr())
            && self.bytes.get(end) == Some(&b'"')
            && super::same_bytes(&self.bytes[self.at..end], name.as_bytes());
        if same {
            self.at = end + 1;
        }
        same
    }

    /// A string with an escape: `start` is its first byte, `stop` its first special one (a
    /// backslash or a control character).
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut stop: usize) -> Option<&'b str> {
        let mut buf = std::mem::take(&mut self.unescaped);
        buf.clear();
        let mut from = start;
        let done = loop {
            buf.push_str(self.text.get(from..stop)?);
            match self.bytes[stop] {
                b'"' => {
                    self.at = stop + 1;
                    break true;
                }
                b'\\' => {}
                // A raw control character: serde_json refuses it.
                _ => break false,
            }
            let Some(esc) = self.bytes.get(stop + 1) else {
                break false;
            };
            from = stop + 2;
            match esc {
                b'"' => buf.push('"'),
                b'\\' => buf.push('\\'),
                b'/' => buf.push('/'),
                b'b' => buf.push('\u{8}'),
                b'f' => buf.push('\u{c}'),
                b'n' => buf.push('\n'),
                b'r' => buf.push('\r'),
                b't' => buf.push('\t'),
                b'u' => match self.unicode(stop + 2) {
                    Some((c, next)) => {
                        buf.push(c);
                        from = next;
                    }
                    None => break false,
                },
                _ => break false,
            }
            match self.ix.next_stop(from) {
                Some(s) => stop = s,
                None => break false,
            }
        };
        let out = done.then_some(()).and_then(|()| {
            self.spending.arena(self.arena, buf.len())?;
            Some(&*self.arena.alloc_str(&buf))
        });
        self.unescaped = buf;
        out
    }

    /// The character of the `\u` escape whose four hex digits start at `at` (a surrogate pair
    /// as two escapes), and where the text goes on; `None` for half a pair.
    fn unicode(&self, at: usize) -> Option<(char, usize)> {
        let first = self.hex4(at)?;
        match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(at + 4..at + 6)? != b"\\u" {
                    return None;
                }
                let low = self.hex4(at + 6)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                let c = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                Some((char::from_u32(c)?, at + 10))
            }
            0xDC00..=0xDFFF => None,
            c => Some((char::from_u32(c)?, at + 4)),
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |n, &d| Some(n * 16 + (d as char).to_digit(16)?))
    }

    /// An array. Its first element is like the first of `like` (the array at the same place
    /// before), each next one like the container before it. It is alike `like` when `like` has
    /// an element (its pattern `*` was seen) and every element is alike its own.
    fn array(&mut self, depth: usize, dest: Dest, like: Fast<'b>) -> Option<bool> {
        self.at += 1;
        let base = self.items.len();
        if self.eat(b']') {
            self.put(dest, Fast::Array(&[]));
            return Some(true);
        }
        let (mut like, mut alike) = match like {
            Fast::Array([first, ..]) | Fast::ArrayLike([first, ..]) => (*first, true),
            _ => (Fast::Null, false),
        };
        loop {
            if self.items.len() == self.items.capacity() {
                grow(&mut self.items, &mut self.items_peak, &mut self.spending)?;
            }
            // A string (most values) is read here; anything else by `value`, in place.
            if self.eat(b'"') {
                let v = Fast::String(self.string()?);
                self.items.push(v);
            } else {
                self.items.push(Fast::Null);
                let i = self.items.len() - 1;
                // (`eat` has passed any whitespace.) Only a container is read back as the next
                // one's `like`: a scalar's hint is never used.
                let container = matches!(self.peek(), Some(b'{' | b'['));
                alike &= self.value(depth + 1, Dest::Item(i), like)?;
                if container {
                    like = self.items[i];
                }
            }
            if self.next_or_close(b']')? {
                break;
            }
        }
        let bytes = (self.items.len() - base) * size_of::<Fast<'b>>();
        self.spending.arena(self.arena, bytes)?;
        let slice = self.arena.alloc_slice_copy(&self.items[base..]);
        self.items.truncate(base);
        self.put(
            dest,
            if alike {
                Fast::ArrayLike(slice)
            } else {
                Fast::Array(slice)
            },
        );
        Some(alike)
    }

    /// An object. When `like` is an object (the one at the same place in the element before:
    /// the previous record's), its names are expected, in order: a name read as expected is
    /// compared with the text where it is, and shared with it (not searched for in the index);
    /// its member's value is like `like`'s. An object whose names are all `like`'s, in order,
    /// names each member once (as `like` does) and needs no check of its own. One whose names
    /// are `like`'s first ones, with every value alike `like`'s, is alike `like`.
    fn object(&mut self, depth: usize, dest: Dest, like: Fast<'b>) -> Option<bool> {
        self.at += 1;
        let base = self.members.len();
        if self.eat(b'}') {
            self.put(dest, Fast::Object(&[]));
            return Some(true);
        }
        let like = match like {
            Fast::Object(members) | Fast::ObjectLike(members) => members,
            _ => &[],
        };
        // The members read so far are `like`'s first ones, and their values alike.
        let mut in_line = true;
        let mut alike = true;
        loop {
            if !self.eat(b'"') {
                return None;
            }
            let i = self.members.len() - base;
            in_line = in_line && i < like.len() && self.expected_name(like[i].0);
            let name = if in_line { like[i].0 } else { self.string()? };
            if !self.eat(b':') {
                return None;
            }
            if self.members.len() == self.members.capacity() {
                grow(
                    &mut self.members,
                    &mut self.members_peak,
                    &mut self.spending,
                )?;
            }
            if self.eat(b'"') {
                let v = Fast::String(self.string()?);
                self.members.push((name, v));
            } else {
                self.members.push((name, Fast::Null));
                let child = if in_line { like[i].1 } else { Fast::Null };
                alike &= self.value(depth + 1, Dest::Member(base + i), child)?;
            }
            if self.next_or_close(b'}')? {
                break;
            }
        }
        let bytes = (self.members.len() - base) * size_of::<(&'b str, Fast<'b>)>();
        self.spending.arena(self.arena, bytes)?;
        let slice = self.arena.alloc_slice_copy(&self.members[base..]);
        self.members.truncate(base);
        // (An object with fewer names than `like`, all of them its first, is still alike it:
        // its patterns are among `like`'s.)
        let alike = in_line && alike;
        let node = if alike {
            Fast::ObjectLike(slice)
        } else {
            Fast::Object(slice)
        };
        if in_line && slice.len() == like.len() {
            self.put(dest, node);
            return Some(alike);
        }
        // serde_json (`arbitrary_precision`) reads an object whose first member has this name
        // as a number, or refuses it: its path.
        if slice[0].0 == SERDE_NUMBER {
            self.whole = true;
            return None;
        }
        // serde_json keeps a repeated member's last value at its first place: its path.
        let shape = (slice.len() * 31 + slice[0].0.len()) % SHAPES;
        if !super::same_member_names::<Fast<'b>>(slice, self.shapes[shape]) {
            // A large object's names go into a set for the check, held for its length: the
            // largest such set is asked for.
            let set = super::doc::name_set_bytes(slice.len());
            self.spending.reach_peak(&mut self.set_peak, set)?;
            if super::doc::repeats_a_name(slice) {
                self.whole = true;
                return None;
            }
            self.shapes[shape] = slice;
        }
        self.put(dest, node);
        Some(alike)
    }
}

#[cfg(test)]
mod tests {
    use super::super::doc::{Node, Unbounded};
    use super::*;

    fn scanned(text: &str) -> Option<serde_json::Value> {
        let arena = Bump::new();
        scan(text, &arena, &mut Unbounded)
            .tree
            .ok()
            .map(|d| super::super::doc::Node::to_value(&d))
    }

    /// The words this thread's index holds now.
    fn kept() -> usize {
        INDEX.with(|cell| {
            let ix = cell.take();
            let n = ix.capacity();
            cell.set(ix);
            n
        })
    }

    #[test]
    fn a_thread_keeps_the_index_of_bodies_up_to_two_mib_only() {
        let body = |bytes: usize| format!("\"{}\"", "x".repeat(bytes - 2));
        let arena = Bump::new();
        // A longer body after a shorter one, both under the bound: kept, at the longer's size.
        assert!(scan(&body(1_500_000), &arena, &mut Unbounded).tree.is_ok());
        assert!(scan(&body(1_600_000), &arena, &mut Unbounded).tree.is_ok());
        assert_eq!(kept(), 1_600_000usize.div_ceil(64));
        // Past it: freed.
        assert!(scan(&body(3 << 20), &arena, &mut Unbounded).tree.is_ok());
        assert_eq!(kept(), 0);
        assert!(scan(&body(100), &arena, &mut Unbounded).tree.is_ok());
        assert_eq!(kept(), 2);
    }

    #[test]
    fn what_serde_json_accepts_reads_the_same() {
        for text in [
            r#"{"a":[1,-0,0.5,1e400,-12.5E+3,1E-2],"b":"x\"y\\z\/\b\f\n\r\t","c":null}"#,
            r#"  [ true , false , null , {} , [] , "" ]  "#,
            r#"{"é":"\u00e9\ud83d\ude00€","k":"a\u0000b"}"#,
            r#""only a string long enough for a word or two""#,
            // Strings across the index's 64-byte blocks, an escape at a block's edge.
            r#"["abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij\\","x\"y"]"#,
            r#"{"k":"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\n"}"#,
            "123456789012345678901234567890",
            // Whitespace at every place it may be, around strings read in the loops.
            " {\t\"a\" :\n\"x\" , \"b\"\r: [ \"y\" ,\t1 , { } , \"\" ] ,\"c\":{ \"d\" : \"z\" }\n} ",
        ] {
            let want: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(scanned(text), Some(want), "{text}");
        }
    }

    /// Records whose names the scan expects from the record before: read the same as
    /// serde_json reads them, whatever the next record does with them.
    #[test]
    fn names_expected_from_the_record_before_read_as_written() {
        for text in [
            // The same names, then one renamed, one longer, one shorter, one more, one fewer.
            r#"[{"id":1,"ab":{"c":[{"d":1}]}},{"id":2,"ab":{"c":[{"d":2},{"d":3}]}}]"#,
            r#"[{"id":1,"ab":2},{"id":1,"ax":2},{"id":1,"abc":2},{"id":1,"a":2}]"#,
            r#"[{"id":1,"ab":2},{"id":1,"ab":2,"x":3},{"id":1},{"ab":2,"id":1}]"#,
            // A name written with an escape, then the same name without one, and the reverse.
            r#"[{"a\u0062":1,"c":2},{"ab":1,"c":2},{"a\u0062":1,"c":2}]"#,
            // A name holding a quote or a backslash (escaped), then texts that hold those bytes.
            r#"[{"a\"b":1},{"a\"b":1},{"a\\b":1},{"a\\b":1}]"#,
            // Values of another kind where the record before had an object or an array.
            r#"[{"a":{"b":1},"c":[1]},{"a":[{"b":1}],"c":{"d":[]}},{"a":"x","c":null}]"#,
            // Whitespace around the expected names.
            "[{\"a\":1,\"b\":2},{ \"a\" :1 ,\n\"b\":2 }]",
            r#"[[{"a":1}],[{"a":1},{"a":2}],[]]"#,
            // A scalar between records: the record after it is expected from the one before.
            r#"[{"a":1,"b":2},3,"x",{"a":1,"b":2}]"#,
        ] {
            let want: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(scanned(text), Some(want), "{text}");
        }
        for text in [
            // A repeat in a record whose first names are the record before's.
            r#"[{"a":1,"b":2},{"a":1,"b":2,"a":3}]"#,
            r#"[{"a":1,"b":2},{"a":1,"a":2}]"#,
            r#"[{"x":{"a":1,"b":2}},{"x":{"a":1,"b":2,"b":3}}]"#,
            r#"[{"a":1},2,{"a":1,"a":2}]"#,
            // The bytes of an escaped name with a quote in it: a shorter name and more text.
            r#"[{"a\"b":1},{"a"b":1}]"#,
            r#"[{"a\"":1},{"a"":1}]"#,
            // An expected name at the very end of the text.
            r#"[{"ab":1},{"ab"#,
            r#"[{"ab":1},{"a"#,
        ] {
            assert_eq!(scanned(text), None, "{text:?}");
        }
    }

    /// Which elements of a page the scan marks as shaped like the one before (their field
    /// patterns all seen already): only those whose names are the earlier one's first ones, in
    /// order, with everything below alike too.
    #[test]
    fn records_shaped_like_the_one_before_are_marked() {
        let marks = |text: &str| -> Vec<bool> {
            let arena = Bump::new();
            let Ok(Fast::Array(a)) = scan(text, &arena, &mut Unbounded).tree else {
                panic!("{text}: not read as an array");
            };
            a.iter().map(Node::patterns_seen_before).collect()
        };
        let page = concat!(
            r#"[{"a":1,"b":{"c":[1]}},"#,
            // Other values, a longer array of scalars: alike.
            r#"{"a":"x","b":{"c":[2,3]}},"#,
            // Fewer names: alike. Then a name the one before did not have: not.
            r#"{"a":3},{"a":1,"b":{"c":[{"d":1}]}},"#,
            // Another first name; an array where there was none below; an empty one.
            r#"{"b":1},{"b":{"c":[]}},{"b":{"c":[{"d":2}]}},"#,
            // A scalar, then an object like the first element of the array before: alike.
            // Then an array whose like begins with a scalar: not.
            r#"{"b":{"c":[1,{"d":2}]}},{"b":{"c":[{"d":2},{"d":3,"e":4}]}}]"#,
        );
        assert_eq!(
            marks(page),
            [false, true, true, false, false, false, false, true, false]
        );
        // An object below a record's array element, alike the element before.
        assert_eq!(
            marks(r#"[{"p":[{"t":1}]},{"p":[{"t":2},{"t":3}]},{"p":[{"u":1}]}]"#),
            [false, true, false]
        );
        // Arrays as elements: their first element is like the first of the one before.
        assert_eq!(
            marks(r#"[[{"a":1}],[{"a":2},{"a":3}],[{"b":1}],[]]"#),
            [false, true, false, false]
        );
    }

    #[test]
    fn anything_doubtful_is_left_to_serde_json() {
        for text in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "[1,]",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "nul",
            "truth",
            "\"a",
            "\"a\tb\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\u12\"",
            "[1]]",
            "{\"a\":1,\"a\":2}",
            "NaN",
            "\u{feff}1",
            // A repeat in an object shaped like one seen before, and one nested deeper.
            r#"[{"a":1,"b":2},{"a":1,"a":2}]"#,
            r#"[{"ab":1},{"x":{"ab":1,"ab":1}}]"#,
            // serde_json's own name for a number in an object, however it is spelt.
            r#"{"$serde_json::private::Number":"1.5"}"#,
            r#"{"x":{"$serde_json::private::Numbe\u0072":"abc","b":2}}"#,
        ] {
            assert_eq!(scanned(text), None, "{text:?}");
        }
        let deep = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(scanned(&deep).is_some());
        let deeper = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(scanned(&deeper), None);
    }
}
