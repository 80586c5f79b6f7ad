//! The documents the comparison walks, behind one read-only view ([`Node`]).
//!
//! Two kinds of tree implement it:
//! - serde_json's [`Value`]: what the mapping engines and the normalize rules take and give;
//! - [`Fast`]: what the proxy parses a body into when nothing rewrites it. The comparison's own
//!   scanner (`scan.rs`) builds it in one pass over the body, in the caller's arena ([`Bump`]):
//!   one allocation per arena chunk rather than one per value, members as slices in document
//!   order, strings and numbers borrowed from the body's text (a string with an escape written
//!   out once).
//!
//! [`parse`] gives the second kind exactly when [`super::parse_json`] would accept the body, and
//! a document that reads the same through the view: the same members in the same order, the
//! same numbers' texts, the same strings. Where the scanner is not sure (an error, nesting at
//! [`super::MAX_DEPTH`], a repeated member, which serde_json resolves to the last value at the
//! first position, half a surrogate pair) the body takes serde_json's path instead, so every
//! verdict and every document is serde_json's.
//!
//! No CPU feature detection: the scanner finds a string's end from the text's string index
//! (`index.rs`), built with SSE2, which every x86-64 processor has, and a byte at a time on
//! other targets, so the binary runs on any x86-64 (and any other target).

use bumpalo::Bump;
use serde_json::Value;

use super::scan::Stop;
use super::JsonError;

/// An arena for one comparison's documents, taken from this thread's spare one and given back,
/// emptied, when dropped: a comparison after the first allocates nothing new for its trees (a
/// fresh arena per exchange had the allocator fault in and zero new pages for every one, ~5 % of
/// the proxy's CPU under load). An arena that grew past [`KEEP_ARENA_BYTES`] (a large body) is
/// freed instead of kept.
pub struct Arena(Option<Bump>);

/// The largest arena a thread keeps between comparisons.
pub const KEEP_ARENA_BYTES: usize = 1 << 20;

thread_local! {
    static SPARE: std::cell::Cell<Option<Bump>> = const { std::cell::Cell::new(None) };
}

impl Arena {
    /// This thread's spare arena (empty), or a new one.
    pub fn take() -> Self {
        Self(Some(SPARE.with(std::cell::Cell::take).unwrap_or_default()))
    }
}

impl std::ops::Deref for Arena {
    type Target = Bump;

    fn deref(&self) -> &Bump {
        self.0.as_ref().expect("an arena until dropped")
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(mut b) = self.0.take() {
            if b.allocated_bytes() <= KEEP_ARENA_BYTES {
                b.reset();
                SPARE.with(|s| s.set(Some(b)));
            }
        }
    }
}

/// A JSON node as the comparison reads it.
pub trait Node: Sized {
    /// The object type whose members are `(&str, &Self)`.
    type Object: Members<Node = Self> + ?Sized;

    /// What this node is.
    fn view(&self) -> View<'_, Self>;

    /// This node (and everything below it) as a serde_json value: what a [`super::Difference`]
    /// carries.
    fn to_value(&self) -> Value;

    fn is_null(&self) -> bool {
        matches!(self.view(), View::Null)
    }

    /// Whether every field pattern below this node is among those below an earlier node at
    /// the same place (the same member of the record before): a walk listing the patterns
    /// in first-seen order has nothing to add from it. `false` when not known.
    fn patterns_seen_before(&self) -> bool {
        false
    }
}

/// An object's members, in document order, each name once.
pub trait Members {
    type Node: Node;
    /// Whether [`Members::get`] is a hash lookup (else a scan).
    const INDEXED: bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn iter(&self) -> impl Iterator<Item = (&str, &Self::Node)>;
    fn get(&self, key: &str) -> Option<&Self::Node>;
    fn first(&self) -> Option<(&str, &Self::Node)> {
        self.iter().next()
    }
    /// The `i`th member.
    fn nth(&self, i: usize) -> Option<(&str, &Self::Node)> {
        self.iter().nth(i)
    }
}

/// One node's kind and contents.
pub enum View<'a, N: Node> {
    Null,
    Bool(bool),
    /// A number, as its source text.
    Number(&'a str),
    String(&'a str),
    Array(&'a [N]),
    Object(&'a N::Object),
}

impl Node for Value {
    type Object = serde_json::Map<String, Value>;

    #[inline]
    fn view(&self) -> View<'_, Self> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n.as_str()),
            Value::String(s) => View::String(s),
            Value::Array(a) => View::Array(a),
            Value::Object(o) => View::Object(o),
        }
    }

    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl Members for serde_json::Map<String, Value> {
    type Node = Value;
    const INDEXED: bool = true;

    fn len(&self) -> usize {
        serde_json::Map::len(self)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        serde_json::Map::iter(self).map(|(k, v)| (k.as_str(), v))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        serde_json::Map::get(self, key)
    }
}

/// A node of the compact tree, everything in one arena.
///
/// The tag is a whole word so that a node is moved as aligned words: with a byte tag the
/// compiler copies the payload from an odd offset, which the processor cannot forward from the
/// stores that wrote it (measured: half the time of building the tree).
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Fast<'b> {
    Null,
    Bool(bool),
    /// Its source text.
    Number(&'b str),
    String(&'b str),
    Array(&'b [Fast<'b>]),
    /// Its members in document order.
    Object(&'b [(&'b str, Fast<'b>)]),
    /// An array or object (not empty) the scan found shaped like the one at the same place in
    /// the element before (see [`Node::patterns_seen_before`]): an object naming the earlier
    /// one's first members, in order; an array whose earlier one had an element; and
    /// everything below them alike.
    ArrayLike(&'b [Fast<'b>]),
    ObjectLike(&'b [(&'b str, Fast<'b>)]),
}

impl<'b> Node for Fast<'b> {
    type Object = [(&'b str, Fast<'b>)];

    #[inline]
    fn view(&self) -> View<'_, Self> {
        match *self {
            Fast::Null => View::Null,
            Fast::Bool(b) => View::Bool(b),
            Fast::Number(n) => View::Number(n),
            Fast::String(s) => View::String(s),
            Fast::Array(a) | Fast::ArrayLike(a) => View::Array(a),
            Fast::Object(o) | Fast::ObjectLike(o) => View::Object(o),
        }
    }

    #[inline]
    fn patterns_seen_before(&self) -> bool {
        matches!(self, Fast::ArrayLike(_) | Fast::ObjectLike(_))
    }

    fn to_value(&self) -> Value {
        match *self {
            Fast::Null => Value::Null,
            Fast::Bool(b) => Value::Bool(b),
            // serde_json's own reading of the text: the number it would have parsed.
            Fast::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Fast::String(s) => Value::String(s.to_owned()),
            Fast::Array(a) | Fast::ArrayLike(a) => {
                Value::Array(a.iter().map(Node::to_value).collect())
            }
            Fast::Object(o) | Fast::ObjectLike(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'b> Members for [(&'b str, Fast<'b>)] {
    type Node = Fast<'b>;
    const INDEXED: bool = false;

    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Fast<'b>)> {
        <[_]>::iter(self).map(|(k, v)| (*k, v))
    }

    /// A scan: callers looking up many members of a large object index it first.
    fn get(&self, key: &str) -> Option<&Fast<'b>> {
        <[_]>::iter(self)
            .find(|(k, _)| super::same_text(k, key))
            .map(|(_, v)| v)
    }

    fn first(&self) -> Option<(&str, &Fast<'b>)> {
        <[_]>::first(self).map(|(k, v)| (*k, v))
    }

    fn nth(&self, i: usize) -> Option<(&str, &Fast<'b>)> {
        <[_]>::get(self, i).map(|(k, v)| (*k, v))
    }
}

/// A body parsed for the comparison: the compact tree when it reads exactly as serde_json's
/// would, else serde_json's value.
pub enum Doc<'b> {
    Fast(Fast<'b>),
    Tree(Value),
}

impl Doc<'_> {
    /// The serde_json value, when it is one.
    pub fn tree(&self) -> Option<&Value> {
        match self {
            Self::Tree(v) => Some(v),
            Self::Fast(_) => None,
        }
    }

    /// The document as a serde_json value (converted when it is the compact tree).
    pub fn into_value(self) -> Value {
        match self {
            Self::Fast(v) => v.to_value(),
            Self::Tree(v) => v,
        }
    }
}

/// The memory a parse may hold for its document, asked for as the document grows (before each
/// step that holds more), so that a document too large for it is never built.
pub trait Room {
    /// Gives `bytes` more; `false` (and nothing given) when it cannot.
    fn take(&mut self, bytes: usize) -> bool;
}

/// A room that gives whatever is asked (offline commands, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unbounded;

impl Room for Unbounded {
    fn take(&mut self, _: usize) -> bool {
        true
    }
}

/// What serde_json's document of `text` may hold, at most: every string, number and name an
/// allocation of its own (twice the text, for the allocator's rounding), and per `,` `:` `[` `{`
/// a 32-byte value with its share of a list or map that doubles as it grows (measured: `[1,1,…]`
/// 91 ×, a page of records 9 ×; this gives 98 × and ~15 ×). Counted from the text, not from what a
/// scan built of it, so no prefix (whitespace, one long string) can make it small.
pub fn tree_bytes(text: &[u8]) -> usize {
    let structural = text
        .iter()
        .filter(|b| matches!(b, b',' | b':' | b'[' | b'{'))
        .count();
    text.len()
        .saturating_mul(2)
        .saturating_add(structural.saturating_mul(192))
}

/// Parses a body as [`super::parse_json`] does (same acceptance, same errors, same document),
/// into the compact tree in `arena` whenever that reads the same ([`super::scan`]): its strings
/// and numbers borrowed from `bytes`.
pub fn parse<'b>(bytes: &'b [u8], arena: &'b Bump) -> Result<Doc<'b>, JsonError> {
    parse_within(bytes, arena, &mut Unbounded)
}

/// [`super::parse_json`], its document ([`tree_bytes`]) asked of `room` before it is built.
pub fn parse_json_within(bytes: &[u8], room: &mut dyn Room) -> Result<Value, JsonError> {
    if !room.take(tree_bytes(bytes)) {
        return Err(JsonError::OverBudget);
    }
    super::parse_json(bytes)
}

/// [`parse`], holding only what `room` gives: [`JsonError::OverBudget`] when the document would
/// need more. The compact tree asks for its bytes as it is built. serde_json's (where the
/// scanner doubts) is asked for at once, before it is built ([`tree_bytes`]): of the whole text
/// when serde_json reads it all (a repeated member name, its own name for a number), else of the
/// text up to where the scan stopped (an error, where serde_json stops too).
pub fn parse_within<'b>(
    bytes: &'b [u8],
    arena: &'b Bump,
    room: &mut dyn Room,
) -> Result<Doc<'b>, JsonError> {
    // serde_json reads invalid UTF-8 up to its first bad byte (its document that far is built).
    let (text, whole_text) = match std::str::from_utf8(bytes) {
        Ok(text) => (text, true),
        Err(e) => (
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
            false,
        ),
    };
    let scanned = super::scan::scan(text, arena, room);
    let whole = match scanned.tree {
        Ok(tree) if whole_text => return Ok(Doc::Fast(tree)),
        Err(Stop::Refused) => return Err(JsonError::OverBudget),
        Ok(_) => false,
        Err(Stop::Doubt { whole }) => whole,
    };
    let read = if whole {
        bytes.len()
    } else {
        bytes.len().min(scanned.read + 64)
    };
    if !room.take(tree_bytes(&bytes[..read])) {
        return Err(JsonError::OverBudget);
    }
    // An error, a repeated member, nesting at serde_json's limit, half a surrogate pair
    // (rare): serde_json decides, and builds the document.
    super::parse_json(bytes).map(Doc::Tree)
}

/// Objects up to this many members are checked for a repeated name pair by pair; larger ones
/// with a set.
const PAIRWISE: usize = 16;

/// The most [`repeats_a_name`] holds for an object of `members` members: a set of their names
/// past [`PAIRWISE`] (up to twice 8/7 buckets per name, each a name and a control byte).
pub(super) fn name_set_bytes(members: usize) -> usize {
    if members <= PAIRWISE {
        return 0;
    }
    members * 40
}

/// Whether an object names a member twice. Each name marks a bit of a 1,024-bit set by a hash
/// of its length and three of its bytes: names that mark distinct bits are distinct (most
/// objects end there, in one pass); a bit marked twice is settled exactly, pair by pair or
/// with a set.
pub(super) fn repeats_a_name(members: &[(&str, Fast<'_>)]) -> bool {
    if members.len() < 2 {
        return false;
    }
    if members.len() <= PAIRWISE {
        let mut bits = [0u64; 16];
        let clash = members.iter().any(|(k, _)| {
            let h = quick_hash(k);
            let (word, bit) = ((h >> 6) as usize & 15, 1u64 << (h & 63));
            let seen = bits[word] & bit != 0;
            bits[word] |= bit;
            seen
        });
        if !clash {
            return false;
        }
        let mut seen = [""; PAIRWISE];
        for (i, (k, _)) in members.iter().enumerate() {
            if seen[..i].contains(k) {
                return true;
            }
            seen[i] = k;
        }
        false
    } else {
        // Randomly keyed (the names are the sender's to choose).
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        !members.iter().all(|(k, _)| seen.insert(*k))
    }
}

/// Ten bits from a member name's length and its first, middle and last bytes.
#[inline]
fn quick_hash(k: &str) -> u64 {
    let b = k.as_bytes();
    let at = |i: usize| b.get(i).map_or(0, |&c| u64::from(c));
    let x =
        (b.len() as u64) | at(0) << 16 | at(b.len() / 2) << 24 | at(b.len().wrapping_sub(1)) << 32;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54
}
