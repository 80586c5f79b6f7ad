//! The documents the comparison walks, behind one read-only view ([`Node`]).
//!
//! Two kinds of tree implement it:
//! - serde_json's [`Value`]: what the mapping engines and the normalize rules take and give;
//! - [`Fast`]: what the proxy parses a body into when nothing rewrites it. sonic-rs parses the
//!   body (SIMD, no heap node per value), and a compact tree is built over its document at once
//!   in the caller's arena ([`Bump`]): one allocation per arena chunk rather than one per value,
//!   members as slices in document order, strings borrowed from sonic-rs's document, numbers as
//!   their source text. Walking it costs a fraction of walking sonic-rs's own document, whose
//!   every step decodes a tagged node.
//!
//! [`parse`] gives the second kind exactly when [`super::parse_json`] would accept the body, and
//! a document that reads the same through the view: the same members in the same order, the
//! same numbers' texts, the same strings. Where sonic-rs and serde_json could disagree (an error,
//! nesting deeper than [`super::MAX_DEPTH`], a repeated member, which serde_json resolves to the
//! last value at the first position) the body takes serde_json's path instead, so every verdict
//! and every document is serde_json's.
//!
//! SIMD: sonic-rs picks its instructions when it is compiled. The default build targets
//! baseline x86-64 (SSE2), so the binary runs on any x86-64; a build with
//! `RUSTFLAGS="-C target-cpu=native"` (or `-C target-feature=+avx2,+pclmulqdq`) uses AVX2 and
//! needs a CPU that has it.

use bumpalo::Bump;
use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait};

use super::{JsonError, MAX_DEPTH};

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
            Fast::Array(a) => View::Array(a),
            Fast::Object(o) => View::Object(o),
        }
    }

    fn to_value(&self) -> Value {
        match *self {
            Fast::Null => Value::Null,
            Fast::Bool(b) => Value::Bool(b),
            // serde_json's own reading of the text: the number it would have parsed.
            Fast::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Fast::String(s) => Value::String(s.to_owned()),
            Fast::Array(a) => Value::Array(a.iter().map(Node::to_value).collect()),
            Fast::Object(o) => Value::Object(
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
        <[_]>::iter(self).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn first(&self) -> Option<(&str, &Fast<'b>)> {
        <[_]>::first(self).map(|(k, v)| (*k, v))
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

/// Where sonic-rs's document is kept while the compact tree borrows its strings (one per
/// parsed body, beside the arena).
#[derive(Default)]
pub struct Source(Option<sonic_rs::Value>);

/// Parses a body as [`super::parse_json`] does (same acceptance, same errors, same document),
/// into the compact tree in `arena` whenever that reads the same. The tree's strings are
/// sonic-rs's, kept in `source`.
pub fn parse<'b>(
    bytes: &[u8],
    arena: &'b Bump,
    source: &'b mut Source,
) -> Result<Doc<'b>, JsonError> {
    // sonic-rs refuses nesting beyond 255 levels only once it is there, one call per level:
    // ~0.5 KiB each in a release build (a 254-deep body parses in 128 KiB), over 16 KiB in a
    // debug one. It runs with that much stack left, on a stack of its own when the thread's
    // is short (never on the proxy's threads in a release build: they have 2 MiB).
    let parsed = stacker::maybe_grow(SONIC_STACK, 2 * SONIC_STACK, || {
        sonic_rs::from_slice::<sonic_rs::Value>(bytes)
    });
    if let Ok(v) = parsed {
        let v: &'b sonic_rs::Value = source.0.insert(v);
        let mut build = Builder { arena, plain: true };
        let mut tree = Fast::Null;
        build.fill(v, 1, &mut tree);
        if build.plain {
            return Ok(Doc::Fast(tree));
        }
    }
    // An error, a repeated member or a nesting sonic-rs allows and serde_json does not (rare):
    // serde_json decides, and builds the document.
    super::parse_json(bytes).map(Doc::Tree)
}

/// The stack sonic-rs's deepest parse may need (twice what was measured).
const SONIC_STACK: usize = if cfg!(debug_assertions) {
    16 << 20
} else {
    256 << 10
};

/// Objects up to this many members are checked for a repeated name pair by pair; larger ones
/// with a set.
const PAIRWISE: usize = 16;

/// Builds the compact tree over sonic-rs's document, noting whether it reads as serde_json's
/// would: nesting within serde_json's limit, no object naming a member twice. (Past the first
/// such finding the rest is not copied: the caller parses again with serde_json.)
struct Builder<'b> {
    arena: &'b Bump,
    plain: bool,
}

impl<'b> Builder<'b> {
    /// Writes the tree of `v` into `out` (in place: a node returned by value is copied back
    /// through the stack in pieces the processor cannot forward, which measured as half the
    /// time of building the tree). `depth` is the node's, the root's 1.
    fn fill(&mut self, v: &'b sonic_rs::Value, depth: usize, out: &mut Fast<'b>) {
        if !self.plain {
            return;
        }
        *out = match v.get_type() {
            JsonType::Null => Fast::Null,
            JsonType::Boolean => Fast::Bool(v.is_true()),
            JsonType::Number => Fast::Number(match v.as_raw_number() {
                Some(raw) => self.arena.alloc_str(raw.as_str()),
                // Not parsed with raw numbers (never here): its shortest spelling.
                None => self
                    .arena
                    .alloc_str(&sonic_rs::to_string(v).unwrap_or_default()),
            }),
            JsonType::String => Fast::String(v.as_str().unwrap_or_default()),
            // serde_json refuses a container (even an empty one) at its limit's depth.
            _ if depth >= MAX_DEPTH => {
                self.plain = false;
                return;
            }
            JsonType::Array => {
                let items = v.as_array().map_or(&[][..], |a| a.as_slice());
                let slots = self.arena.alloc_slice_fill_copy(items.len(), Fast::Null);
                for (slot, e) in slots.iter_mut().zip(items) {
                    self.fill(e, depth + 1, slot);
                }
                Fast::Array(slots)
            }
            JsonType::Object => {
                let Some(o) = v.as_object() else {
                    return;
                };
                let slots = self.arena.alloc_slice_fill_copy(o.len(), ("", Fast::Null));
                for (slot, (k, e)) in slots.iter_mut().zip(o.iter()) {
                    slot.0 = k;
                    self.fill(e, depth + 1, &mut slot.1);
                }
                if repeats_a_name(slots) {
                    self.plain = false;
                }
                Fast::Object(slots)
            }
        };
    }
}

/// Whether an object names a member twice (by a fingerprint first: a name's length and first
/// bytes, which mostly differ between two names).
fn repeats_a_name(members: &[(&str, Fast<'_>)]) -> bool {
    if members.len() <= PAIRWISE {
        let mut seen = [("", 0u64); PAIRWISE];
        for (i, (k, _)) in members.iter().enumerate() {
            let print = fingerprint(k);
            if seen[..i].iter().any(|&(n, p)| p == print && n == *k) {
                return true;
            }
            seen[i] = (k, print);
        }
        false
    } else {
        // Randomly keyed (the names are the sender's to choose).
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        !members.iter().all(|(k, _)| seen.insert(*k))
    }
}

/// A member name's length and first bytes (read byte by byte: a copy into a buffer read back
/// as one word stalls the processor).
fn fingerprint(k: &str) -> u64 {
    let b = k.as_bytes();
    b.iter()
        .take(7)
        .fold(b.len() as u64, |h, &c| (h << 8) | u64::from(c))
}
