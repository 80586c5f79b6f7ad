//! Memoized comparisons. APIs answer the same bytes again and again (a directory page polled
//! every minute, a record that did not change), and comparing a pair of responses costs two
//! parses and a walk. The same route, statuses, compared headers and body bytes always give
//! the same result, so a small table keyed by a 128-bit hash of all of them reuses it.
//!
//! Bounded both ways: pairs larger than [`MAX_PAIR_BYTES`] are not cached, and the table is
//! emptied when it holds [`MAX_ENTRIES`] results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

use super::compare::{header_value, Compared, Side};
use crate::config::Config;

/// Results kept at most. Not configurable yet: with [`MAX_PAIR_BYTES`] it bounds the memory
/// held by cached body texts to about 64 MiB.
const MAX_ENTRIES: usize = 256;
/// Larger pairs are rarely repeated and would hold too much memory.
const MAX_PAIR_BYTES: usize = 256 << 10;

/// The table of recent comparison results.
#[derive(Debug, Default)]
pub struct Memo {
    map: Mutex<HashMap<u128, Arc<Compared>>>,
}

impl Memo {
    pub fn get(&self, key: u128) -> Option<Arc<Compared>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    /// Keeps a result, unless the pair was too large.
    /// Forgets every result (the config was reloaded).
    pub fn clear(&self) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub fn insert(&self, key: u128, pair_bytes: usize, v: Arc<Compared>) {
        if pair_bytes > MAX_PAIR_BYTES {
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

/// The key of a pair of responses for a route: everything the comparison reads.
/// `mapping` is the version of the mappings applied (they depend on the account).
pub fn key(
    route: Option<usize>,
    mapping: Option<&str>,
    legacy: &Side<'_>,
    candidate: &Side<'_>,
    cfg: &Config,
) -> u128 {
    let mut h = Xxh3::new();
    h.update(&route.map_or(u64::MAX, |r| r as u64).to_le_bytes());
    let m = mapping.unwrap_or("");
    h.update(&(m.len() as u64).to_le_bytes());
    h.update(m.as_bytes());
    for side in [legacy, candidate] {
        h.update(&side.status.as_u16().to_le_bytes());
        let ce = side.headers.get(http::header::CONTENT_ENCODING);
        for value in std::iter::once(ce.map(|v| v.as_bytes().to_vec())).chain(
            cfg.diff
                .headers
                .iter()
                .map(|n| header_value(side.headers, n).map(|v| v.to_string().into_bytes())),
        ) {
            // Length-prefixed, so that adjacent fields cannot run into each other.
            let v = value.unwrap_or_default();
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(&v);
        }
        h.update(&(side.body.len() as u64).to_le_bytes());
        h.update(&side.body);
    }
    h.digest128()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::proxy::body::Captured;
    use crate::shadow::compare::{compare, Candidate, CandidateBody, Legacy, Meta};

    fn exchange(
        cfg: &Config,
        memo: &Memo,
        candidate_body: &'static str,
        date: &str,
    ) -> crate::record::Record {
        let meta = Meta {
            started_at: SystemTime::now(),
            request_id: "r".into(),
            route: None,
            method: "GET".into(),
            path: "/".into(),
            account: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert("date", date.parse().unwrap());
        let legacy = Legacy::Response {
            status: StatusCode::OK,
            headers: headers.clone(),
            ms: 1.0,
            body: Captured::Complete(vec![
                Bytes::from_static(b"{\"a\":1,"),
                Bytes::from_static(b"\"b\":2}"),
            ]),
        };
        let candidate = Candidate::Response {
            status: StatusCode::OK,
            headers,
            ms: 1.0,
            body: CandidateBody::Complete(Bytes::from_static(candidate_body.as_bytes())),
            held: crate::budget::Held::default(),
        };
        compare(
            meta,
            legacy,
            candidate,
            &cfg.diff.rules,
            cfg,
            Some((memo, None)),
            super::super::compare::Maps::default(),
        )
    }

    #[test]
    fn the_same_pair_reuses_the_result_and_another_pair_does_not() {
        let cfg = Config::parse("[store]\nbodies = \"always\"\n", None).unwrap();
        let memo = Memo::default();
        let first = exchange(
            &cfg,
            &memo,
            r#"{"a":1,"b":3}"#,
            "Mon, 01 Jan 2029 00:00:00 GMT",
        );
        let second = exchange(
            &cfg,
            &memo,
            r#"{"a":1,"b":3}"#,
            "Tue, 02 Jan 2029 00:00:00 GMT",
        );
        assert_eq!(first.diff_count, 1);
        assert!(
            Arc::ptr_eq(&first.diffs, &second.diffs),
            "the second comparison was not reused"
        );
        // Headers stored are each response's own, bodies the shared text.
        assert_eq!(
            second.bodies[0].headers["date"],
            "Tue, 02 Jan 2029 00:00:00 GMT"
        );
        assert_eq!(
            second.bodies[1].body.as_ref().map(|b| &*b.text),
            Some(r#"{"a":1,"b":3}"#)
        );
        let other = exchange(
            &cfg,
            &memo,
            r#"{"a":1,"b":2}"#,
            "Mon, 01 Jan 2029 00:00:00 GMT",
        );
        assert_eq!(other.diff_count, 0);
        assert_eq!(other.outcome, crate::record::Outcome::Match);
    }
}
