//! The memory budget of the comparisons (`[shadow] max_bytes_in_flight`): every response body
//! kept for a comparison (legacy's copy from the tee, the candidate's body) takes its bytes from
//! one budget as they arrive, and once complete [`COMPARE_COST`] times its size in all: what its
//! comparison will hold (the copy, the decoded bytes, the parsed document, the differences).
//! It is given back when the exchange is recorded. A parsed document that needs more than its
//! share ([`TREE_SHARE`]) takes the rest through the candidate's holding as it is built
//! (`diff::doc::parse_within`). Taking never waits: an exchange that does not fit is not compared
//! (`skipped`, reason `memory`), and the caller's response is never held back for it.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Memory a comparison is assumed to hold per byte of body (the copy, its decoded bytes, the
/// parsed document, the differences): an estimate for pages that differ in a few fields. Pairs with a difference
/// per element cost more (a 9.9 MB page against an empty list peaked at ~220 MiB alone, BENCHMARKS.md §8,
/// before a comparison listed 10,000 differences at most). Dense pages of small members parse into
/// 10-30 × their bytes: their documents take what they need past [`TREE_SHARE`] as they grow.
pub const COMPARE_COST: usize = 8;

/// Of [`COMPARE_COST`], the bytes per byte of body set aside for the parsed documents (a page of
/// records asks for ~3 ×). A comparison whose documents need more takes it from the budget as
/// they are built, or is not compared.
pub const TREE_SHARE: usize = 5;

/// Asks `take` for bytes past the first `free` ones asked for (those are charged already, as
/// the bytes a body arrived in: what its decoded bytes take up to that size).
pub fn past(mut free: usize, mut take: impl FnMut(usize) -> bool) -> impl FnMut(usize) -> bool {
    move |n| match free.checked_sub(n) {
        Some(left) => {
            free = left;
            true
        }
        None => {
            let more = n - free;
            free = 0;
            take(more)
        }
    }
}

/// The shared budget, in bytes.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// An empty holding, to grow as a body arrives.
    pub fn hold(&self) -> Held {
        Held {
            sem: Some(self.sem.clone()),
            bytes: 0,
        }
    }

    /// Bytes not taken right now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug, Default)]
pub struct Held {
    sem: Option<Arc<Semaphore>>,
    bytes: usize,
}

impl Held {
    /// Takes `n` more bytes; `false` (and nothing taken) when the budget cannot spare them.
    /// Without a budget, always `true`.
    #[must_use]
    pub fn grow(&mut self, n: usize) -> bool {
        let Some(sem) = &self.sem else {
            return true;
        };
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        match sem.try_acquire_many(n32) {
            Ok(p) => {
                p.forget();
                self.bytes += n;
                true
            }
            Err(_) => false,
        }
    }

    /// The body is complete: takes the rest of its comparison's cost ([`COMPARE_COST`] times
    /// `len` in all, the bytes already taken included).
    #[must_use]
    pub fn complete(&mut self, len: usize) -> bool {
        let total = len.saturating_mul(COMPARE_COST);
        self.grow(total.saturating_sub(self.bytes))
    }

    /// Gives everything back now.
    pub fn release(&mut self) {
        if let Some(sem) = &self.sem {
            if self.bytes > 0 {
                sem.add_permits(self.bytes);
            }
        }
        self.bytes = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_and_gives_back() {
        let b = MemoryBudget::new(100);
        let mut h = b.hold();
        assert!(h.grow(60));
        assert!(!b.hold().grow(41));
        let mut other = b.hold();
        assert!(other.grow(40));
        assert_eq!(b.available(), 0);
        drop(h);
        assert_eq!(b.available(), 60);
        other.release();
        assert_eq!(b.available(), 100);
        let mut free = Held::default();
        assert!(free.grow(usize::MAX));
        let mut body = b.hold();
        assert!(body.grow(10));
        assert!(body.complete(10));
        assert_eq!(b.available(), 100 - 10 * COMPARE_COST);
        assert!(!body.complete(100));
        assert_eq!(body.bytes(), 10 * COMPARE_COST);
    }

    #[test]
    fn past_gives_what_is_charged_already_and_asks_for_the_rest() {
        let mut taken = Vec::new();
        let mut ask = past(10, |n| {
            taken.push(n);
            n <= 5
        });
        assert!(ask(4));
        assert!(ask(6));
        assert!(ask(5));
        assert!(!ask(7));
        drop(ask);
        assert_eq!(taken, [5, 7]);
    }
}
