//! SQLite, the embedded store: every query and statement this engine runs, behind the
//! store's engine-neutral seams (the writer's `Sink`, the `Reader`, each concept's connection
//! trait). Chosen once, in `store/open.rs`.
//!
//! - `open.rs`: opening a database with the store's settings (WAL, private file mode, the
//!   migrations applied), for writing, reading, or read-only;
//! - `migrate.rs`: the schema's steps; `sink.rs`: the writer's batches; `prune.rs`: retention;
//! - `reader.rs`: the reports' queries; `rollup.rs`: the hourly roll-ups;
//! - one file per concept for its rows (`health`, `ids`, `outbox`, `rollout`, `rediffs`,
//!   `replay_sets`, `triage`), and `conn.rs`, their connection of its own.

pub(super) mod conn;
mod health;
mod ids;
mod migrate;
pub(super) mod open;
mod outbox;
mod prune;
mod reader;
mod rediffs;
mod replay_sets;
mod rollout;
mod rollup;
mod sink;
mod triage;
