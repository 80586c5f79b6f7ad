//! PostgreSQL, the fleet's store: every query and statement this engine runs, behind the
//! store's engine-neutral seams (the writer's `Sink`, the `Reader`, each concept's connection
//! trait). Chosen once, in `store/open.rs`.
//!
//! - `open.rs`: a store connected and migrated (or checked), and the commands that open one;
//! - `connect.rs`: the URL, the environment, TLS and the password file, into a client;
//! - `text.rs`: timestamps and text parameters as this engine writes and reads them;
//! - `migrate.rs`: the schema's steps; `sink.rs`: the writer's batches (`COPY`, partitions);
//! - `reader.rs`: the reports' queries; `rollup.rs`: the hourly roll-ups;
//! - one file per concept for its rows (`health`, `ids`, `outbox`, `rollout`, `rediffs`,
//!   `replay_sets`, `triage`), and `conn.rs`, their connection of its own.

pub(super) mod conn;
mod connect;
mod health;
mod ids;
mod migrate;
pub(super) mod open;
mod outbox;
mod partitions;
pub(super) mod reader;
mod rediffs;
mod replay_sets;
mod rollout;
mod rollup;
pub(super) mod sink;
mod text;
mod triage;
