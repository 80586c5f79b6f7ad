//! `rediffs`: what `shadowdiff rediff --record` keeps of a run, one row per route: the mapping
//! version it ran over recorded traffic, the window, and the parity it reached next to the
//! recorded one. Reports list them beside the live mapping versions.

use serde::Serialize;

use super::StoreError;

/// One route of one recorded rediff.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RediffRow {
    /// When the rediff ran (RFC 3339).
    pub at: String,
    pub route: String,
    /// The version of the mappings it ran (several, comma-separated, with account overrides).
    pub mapping_version: Option<String>,
    pub window_from: String,
    pub window_to: String,
    pub exchanges: u64,
    pub recorded_matched: u64,
    pub matched: u64,
    pub fixed: u64,
    pub broken: u64,
    /// Where the mappings came from (the config file, a `--mappings` folder).
    pub source: String,
    /// The per-field figures and the ids of the exchanges that changed verdict (JSON).
    pub detail: serde_json::Value,
}

pub(super) const COLUMNS: &str =
    "route, mapping_version, exchanges, recorded_matched, matched, fixed, \
     broken, source, detail";

/// What `rediff --record` writes, per engine (`sqlite/rediffs.rs`, `postgres/rediffs.rs`).
pub(super) trait RediffConn: Send {
    /// Appends rows (one transaction).
    fn record(&mut self, rows: &[RediffRow]) -> Result<(), StoreError>;
}
