//! The store: the only module that knows the storage engine and its tables.
//!
//! Engine-neutral, at the top: the writer thread fed by a bounded channel (`writer.rs`: [`Store`],
//! [`StoreHandle`]; the proxy never waits for the disk), which exchanges keep a row (`keep.rs`),
//! the hourly roll-ups' arithmetic (`rollup.rs`), each concept's model and the trait its rows
//! are reached through (`health.rs`, `ids.rs`, `outbox.rs`, `rollout.rs`, `rediffs.rs`,
//! `replay_sets.rs`, `triage.rs`), the query API (`query.rs`: [`Reader`]), the schema's list of
//! migrations (`migrate.rs`), SQL both engines run (`sql.rs`), the error ([`StoreError`]) and
//! where a store is ([`Location`]).
//!
//! One folder per engine (`sqlite/`, `postgres/`): each implements those seams with its own
//! SQL, migrations, connections and errors, and neither names the other. The engine is chosen
//! once, in `open.rs` (the only match on a [`Location`]). `tests/layout.rs` keeps this true.
//!
//! Tables (SQLite): `exchanges` (one row per exchange), `diff_fields` (per exchange, field
//! pattern and kind: the number of differences), `diffs` (the differences themselves, up to
//! [`MAX_DIFF_ROWS`] per exchange), `bodies` + `blobs` (kept bodies, each text stored once),
//! `field_presence` (per route, field pattern and hour: compared exchanges where the field was
//! present), `noise_samples` + `noise_fields` (noise learned from second legacy calls).

mod error;
mod health;
mod ids;
mod keep;
mod location;
mod migrate;
mod open;
mod outbox;
mod postgres;
mod query;
mod rediffs;
mod replay_sets;
mod rollout;
mod rollup;
mod sql;
mod sqlite;
mod triage;
mod writer;

pub use health::{AccountHealth, HealthChange, NEEDS_REAUTH};
pub use ids::{IdCoverage, IdStore};
pub use keep::Rows;
pub use location::{Location, PgUrl};
pub use migrate::{latest as latest_schema_version, Migration, MIGRATIONS, SCHEMA_VERSION};
pub use open::{
    enqueue as enqueue_event, migrate, open_read_only_at, open_reader, open_reader_at, prune_at,
    prune_file, record_rediffs, record_triage, save_replay_set,
};
pub use outbox::{Delivery, Outbox, OutboxCounts, Subscriptions};
pub use query::{
    CohortCount, DayRow, DiffRow, ExampleValues, ExchangeDetail, ExchangeQuery, ExchangeRow,
    FieldAccountRow, FieldRow, Filter, GroupBy, KeptExchange, KeptPair, KeptSide, NoiseField,
    NoiseOnly, OutcomeCount, Reader, Side, Spend, VersionRow,
};
pub use rediffs::RediffRow;
pub use rollout::{Change as RolloutChange, Event as RolloutEvent, RolloutStore};
pub use rollup::{
    bucket as latency_bucket, bucket_value as latency_bucket_value, Histogram, Rebuild,
};
pub use sqlite::open::open;
#[cfg(test)]
pub(crate) use writer::test_record;
pub use writer::{Store, StoreHandle, StoreStats, WriterOptions, MAX_DIFF_ROWS};

pub use error::StoreError;

/// What `shadowdiff migrate` did to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The versions applied now, oldest first (empty: the store was current).
    pub applied: Vec<i64>,
    /// The store's version now.
    pub version: i64,
    /// What became of the hourly roll-ups: current, built again from the rows (they did not
    /// cover rows another program wrote), or not rebuilt (they count exchanges without a row).
    pub rollups: Rebuild,
}
