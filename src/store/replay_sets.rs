//! `replay_sets`: named sets of recorded exchanges (`shadowdiff replay --save NAME`), replayed
//! as a regression suite (`--set NAME`). Saving a set replaces it whole, in one transaction.

use super::StoreError;

/// What `replay --save` writes, per engine (`sqlite/replay_sets.rs`, `postgres/replay_sets.rs`).
pub(super) trait ReplaySetConn: Send {
    /// Replaces the set `name` with `members` (id, started_at), saved at `now` (one transaction).
    fn save(&mut self, name: &str, members: &[(i64, String)], now: &str) -> Result<(), StoreError>;
}
