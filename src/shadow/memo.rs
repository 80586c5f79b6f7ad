//! Memoized comparisons. APIs answer the same bytes again and again (a directory page polled
//! every minute, a record that did not change), and comparing a pair of responses costs two
//! parses and a walk. The same route, statuses, compared headers and body bytes always give
//! the same result, so a small table keyed by a 128-bit hash of all of them reuses it.
//!
//! Bounded both ways: a result is not cached when its pair's bodies and what the result holds
//! (differences, present patterns, kept texts) come to more than [`MAX_PAIR_BYTES`], and the
//! table is emptied when it holds [`MAX_ENTRIES`] results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Results kept at most. Not configurable yet: with [`MAX_PAIR_BYTES`] it bounds the memory
/// held by cached results to about 64 MiB.
const MAX_ENTRIES: usize = 256;
/// Larger pairs (bodies and result) are rarely repeated and would hold too much memory.
const MAX_PAIR_BYTES: usize = 256 << 10;

/// The table of recent results, by a 128-bit key of everything that produced them.
#[derive(Debug)]
pub struct Memo<V> {
    map: Mutex<HashMap<u128, Arc<V>>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
        }
    }
}

impl<V> Memo<V> {
    pub fn get(&self, key: u128) -> Option<Arc<V>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    /// Forgets every result (the config was reloaded).
    pub fn clear(&self) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Keeps a result, unless it and the pair it came from hold too much (`bytes`).
    pub fn insert(&self, key: u128, bytes: usize, v: Arc<V>) {
        if bytes > MAX_PAIR_BYTES {
            return;
        }
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, v);
    }
}
