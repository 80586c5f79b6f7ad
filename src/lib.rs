//! shadowdiff: a parallel-run shadow proxy and JSON diff for API vendor migrations.
//!
//! Map of the modules, in the order a request meets them:
//!
//! - [`config`]: the TOML file (or command-line defaults) turned into plain, validated structs.
//! - [`proxy`]: the caller-facing listener; forwards to legacy and streams its answer back.
//! - [`translate`]: route matching, candidate request templates, the account crosswalk.
//! - [`shadow`]: off the hot path: sampling, budgets, the candidate call, the comparison.
//! - [`budget`]: the bytes of response bodies held for comparisons, bounded.
//! - [`encoding`]: Content-Encoding decoding of the copies kept for comparison.
//! - [`diff`]: pure field diff of two JSON documents under the route's rules.
//! - [`redact`]: removes secrets and configured fields before anything is stored.
//! - [`store`]: the SQLite writer thread and retention.
//! - [`background`]: the lower CPU priority of the shadow threads and the store writer.
//! - [`upstream`]: the pooled HTTP/1.1 + HTTP/2 client (rustls) for both vendors.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, the dashboard and its JSON API.
//! - [`telemetry`]: Prometheus metrics with bounded labels.
//! - [`classify`]: systematic / sporadic / noise per field pattern, from the store.
//! - [`report`]: parity reports from the store (JSON, Markdown, HTML).
//! - [`gate`]: rollout thresholds checked against the store; the exit code decides.
//! - [`demo`]: the self-contained tour behind `shadowdiff demo`.
//! - [`server`]: wires the pieces together and owns the shutdown sequence.

pub mod admin;
pub mod background;
pub mod budget;
pub mod classify;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diff;
pub mod encoding;
pub mod gate;
pub mod mapping;
pub mod proxy;
pub mod record;
pub mod redact;
pub mod reload;
pub mod report;
pub mod server;
pub mod shadow;
pub mod store;
pub mod telemetry;
pub mod translate;
pub mod upstream;
