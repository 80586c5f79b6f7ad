//! Memoized comparisons. APIs answer the same bytes again and again (a directory page polled
//! every minute, a record that did not change), and comparing a pair of responses costs two
//! parses and a walk. The same route, statuses, compared headers and body bytes always give
//! the same result, so a small table reuses it.
//!
//! A pair is found by its [`Glance`]: everything the comparison reads apart from the bodies
//! (the route, statuses, compared headers: a few bytes, kept whole), the bodies' lengths, and
//! their first and last bytes. A result is kept with a copy of its pair's bodies, and found
//! only when they are equal byte for byte: two pairs are never mistaken for each other, however
//! alike their glances.
//!
//! A pair is kept when its glance was seen recently ([`SIGHTED`] glances are remembered), so
//! from its second sighting, found from its third. Distinct pages (most traffic) are then
//! neither read whole nor copied: hashing both bodies whole for a key cost 3.5 % of the shadow
//! thread on distinct pages, and copying them for every pair more.
//!
//! Bounded both ways: a result is not cached when its pair's bodies, its head and what the
//! result holds (differences, present patterns, kept texts) come to more than
//! [`MAX_PAIR_BYTES`], and the table is emptied when it holds [`MAX_ENTRIES`] results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Results kept at most. Not configurable yet: with [`MAX_PAIR_BYTES`] it bounds the memory
/// held by cached results (their pairs' bodies included) to about 64 MiB.
const MAX_ENTRIES: usize = 256;
/// Larger pairs (bodies and result) are rarely repeated and would hold too much memory.
const MAX_PAIR_BYTES: usize = 256 << 10;
/// Bytes of each end of a body read into its glance.
const GLANCED: usize = 128;
/// Glances remembered (each in the slot of its hash: a newer one takes an older one's place).
const SIGHTED: usize = 2 * MAX_ENTRIES;

/// What a pair is found by: its head (everything the comparison reads but the bodies, whole)
/// and its bodies, of which only the lengths and ends are hashed.
pub struct Glance<'a> {
    head: Vec<u8>,
    bodies: [&'a Bytes; 2],
    hash: u64,
}

impl<'a> Glance<'a> {
    /// `head` is what the comparison reads apart from the bodies, each field length-prefixed
    /// so that adjacent fields cannot run into each other.
    pub fn new(head: Vec<u8>, legacy: &'a Bytes, candidate: &'a Bytes) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&head);
        for body in [legacy, candidate] {
            h.update(&(body.len() as u64).to_le_bytes());
            let n = body.len();
            h.update(&body[..n.min(GLANCED)]);
            h.update(&body[n.saturating_sub(GLANCED).max(GLANCED.min(n))..]);
        }
        Self {
            head,
            bodies: [legacy, candidate],
            hash: h.digest(),
        }
    }
}

struct Entry<V> {
    head: Vec<u8>,
    /// Copies of the pair's bodies (not the received buffers, which may hold more).
    bodies: [Bytes; 2],
    result: Arc<V>,
}

/// The table of recent results, by the glance of the pair that produced them.
pub struct Memo<V> {
    map: Mutex<HashMap<u64, Entry<V>>>,
    /// Glances seen recently, by slot (0: none).
    sighted: Box<[AtomicU64]>,
}

impl<V> std::fmt::Debug for Memo<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").finish_non_exhaustive()
    }
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            sighted: (0..SIGHTED).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl<V> Memo<V> {
    /// The result of this very pair (same head, same bodies byte for byte), if kept.
    pub fn get(&self, glance: &Glance<'_>) -> Option<Arc<V>> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = map.get(&glance.hash)?;
        (e.head == glance.head
            && e.bodies[0] == glance.bodies[0]
            && e.bodies[1] == glance.bodies[1])
            .then(|| e.result.clone())
    }

    /// Forgets every result (the config was reloaded).
    pub fn clear(&self) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Keeps a result with a copy of its pair, when its glance was seen recently (else the
    /// glance is remembered) and they do not hold too much (`bytes`: the bodies and what the
    /// result holds; the head kept with them counts too: compared headers can be long). A pair
    /// of the same glance kept before is replaced.
    pub fn insert(&self, glance: &Glance<'_>, bytes: usize, v: Arc<V>) {
        if bytes.saturating_add(glance.head.len()) > MAX_PAIR_BYTES
            || !self.seen_before(glance.hash)
        {
            return;
        }
        let entry = Entry {
            head: glance.head.clone(),
            bodies: glance.bodies.map(|b| Bytes::copy_from_slice(b)),
            result: v,
        };
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(glance.hash, entry);
    }

    /// Whether `hash` was among the glances seen recently; remembers it. (Threads racing on a
    /// slot only make a pair wait for one more sighting.)
    fn seen_before(&self, hash: u64) -> bool {
        let mark = hash.max(1);
        let slot = &self.sighted[(hash % SIGHTED as u64) as usize];
        slot.swap(mark, Ordering::Relaxed) == mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glance<'a>(head: &[u8], l: &'a Bytes, c: &'a Bytes) -> Glance<'a> {
        Glance::new(head.to_vec(), l, c)
    }

    /// Offers a result twice: a pair is kept from its second sighting.
    fn seen_twice(memo: &Memo<usize>, g: &Glance<'_>, bytes: usize, v: usize) {
        memo.insert(g, bytes, Arc::new(v));
        memo.insert(g, bytes, Arc::new(v));
    }

    /// Pairs alike at both ends and of one length (same glance) differ in the middle: each is
    /// found only by itself. A key of the glance alone would have shared the first's result.
    #[test]
    fn pairs_of_one_glance_are_told_apart_by_their_bodies() {
        let memo = Memo::default();
        let body = |mid: u8| {
            let mut b = vec![b'x'; 4 * GLANCED];
            b[2 * GLANCED] = mid;
            Bytes::from(b)
        };
        let (l, c1, c2) = (body(b'a'), body(b'b'), body(b'c'));
        let (g1, g2) = (glance(b"h", &l, &c1), glance(b"h", &l, &c2));
        assert_eq!(g1.hash, g2.hash, "the test needs one glance");
        memo.insert(&g1, 10, Arc::new(1));
        assert_eq!(memo.get(&g1), None, "kept on its first sighting");
        memo.insert(&g1, 10, Arc::new(1));
        assert_eq!(memo.get(&g1).as_deref(), Some(&1));
        assert_eq!(memo.get(&g2), None);
        // Another head (a compared header, the route) is another pair.
        assert_eq!(memo.get(&glance(b"i", &l, &c1)), None);
        // The legacy and candidate bodies are not interchangeable.
        assert_eq!(memo.get(&glance(b"h", &c1, &l)), None);
    }

    /// The head (compared headers' text) is held with the entry and counts against the bound:
    /// long headers on small bodies cannot make the table hold more than it says.
    #[test]
    fn the_head_counts_against_the_bound() {
        let memo = Memo::default();
        let (a, b) = (Bytes::from_static(b"1"), Bytes::from_static(b"2"));
        let head = vec![b'h'; MAX_PAIR_BYTES - 99];
        let g = Glance::new(head, &a, &b);
        seen_twice(&memo, &g, 100, 1);
        assert_eq!(memo.get(&g), None, "the head was not counted");
        seen_twice(&memo, &g, 99, 1);
        assert_eq!(memo.get(&g).as_deref(), Some(&1));
    }

    #[test]
    fn short_bodies_and_empty_ones_are_glanced_whole() {
        let memo = Memo::default();
        let (a, b, e) = (
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{\"a\":2}"),
            Bytes::new(),
        );
        seen_twice(&memo, &glance(b"", &a, &e), 10, 1);
        assert_eq!(memo.get(&glance(b"", &a, &e)).as_deref(), Some(&1));
        assert_eq!(memo.get(&glance(b"", &b, &e)), None);
        assert_eq!(memo.get(&glance(b"", &e, &a)), None);
    }

    #[test]
    fn a_pair_too_large_is_not_kept_and_a_full_table_is_emptied() {
        let memo = Memo::default();
        let (a, b) = (Bytes::from_static(b"1"), Bytes::from_static(b"2"));
        seen_twice(&memo, &glance(b"big", &a, &b), MAX_PAIR_BYTES + 1, 0);
        assert_eq!(memo.get(&glance(b"big", &a, &b)), None);
        for i in 0..MAX_ENTRIES {
            seen_twice(&memo, &glance(&i.to_le_bytes(), &a, &b), 1, i);
        }
        assert_eq!(
            memo.get(&glance(&0usize.to_le_bytes(), &a, &b)).as_deref(),
            Some(&0)
        );
        seen_twice(&memo, &glance(b"one more", &a, &b), 1, 7);
        assert_eq!(memo.get(&glance(&0usize.to_le_bytes(), &a, &b)), None);
        assert_eq!(memo.get(&glance(b"one more", &a, &b)).as_deref(), Some(&7));
    }
}
