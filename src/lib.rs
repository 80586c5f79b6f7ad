//! shadowdiff: a parallel-run shadow proxy and JSON diff for API vendor migrations.
//!
//! Map of the modules, in the order a request meets them:
//!
//! - [`config`]: the TOML file (or command-line defaults) turned into plain, validated structs.
//! - [`server`]: binds the listeners, wires the pieces, owns the shutdown sequence;
//!   [`reload`] swaps in a new configuration (SIGHUP, `POST /api/reload`).
//! - [`tls`]: TLS on the listeners (certificate files read again on SIGHUP, ALPN h2/http1.1).
//! - [`proxy`]: the caller-facing listener; forwards to legacy and streams its answer back.
//! - [`translate`]: route matching, candidate request templates, the account crosswalk.
//! - [`ids`]: the id crosswalk (legacy id ↔ candidate id per account and kind), learned from
//!   paired traffic, used in comparisons, requests and served answers.
//! - [`paging`]: legacy offset/limit pages answered from a cursor-paged candidate.
//! - [`shadow`]: off the hot path: sampling, budgets, the candidate call, the comparison.
//! - [`upstream`]: the pooled HTTP/1.1 + HTTP/2 client (rustls) for both vendors.
//! - [`breaker`]: the shadow leg's error-burst breaker per (vendor, account).
//! - [`quota`]: vendors' rate limits as their responses state them; reserves and 429 pauses per account.
//! - [`budget`]: the bytes of response bodies held for comparisons, bounded.
//! - [`encoding`]: Content-Encoding decoding of the copies kept for comparison.
//! - [`mapping`]: response mappings (JSONata, jq) run in worker processes.
//! - [`diff`]: pure field diff of two JSON documents under the route's rules.
//! - [`redact`]: removes secrets and configured fields before anything is stored.
//! - [`mask`]: what of a URL may be printed (passwords and secret parameters masked), everywhere.
//! - [`record`]: what an exchange leaves behind (outcome, skip reason, record); a leaf.
//! - [`store`]: the only module that knows the storage engine: the writer thread, retention,
//!   and the typed query API ([`store::Reader`]) everything else reads through.
//! - [`background`]: the lower CPU priority of the shadow threads and the store writer.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, the dashboard and its JSON API.
//! - [`telemetry`]: Prometheus metrics with bounded labels.
//! - [`coverage`]: the field patterns each route's window compared, and those it never did.
//! - [`classify`]: systematic / sporadic / noise per field pattern, from the store.
//! - [`rediff`]: recorded exchanges judged again under a new mapping or rules; `suggest`.
//! - [`report`]: parity reports from the store (JSON, Markdown, HTML).
//! - [`gate`]: rollout thresholds checked against the store; the exit code decides.
//! - [`rollout`]: phases served by the proxy: sticky cohorts, the guard's judgement.
//! - [`rollout_control`]: the thread that follows the store's phase and applies the guard;
//!   `/api/rollout`.
//! - [`webhook`]: events delivered from the store's outbox, signed, retried, dead-lettered.
//! - [`demo`]: the self-contained tour behind `shadowdiff demo`.
//! - [`cli`]: the command line, one thin function per command.

#![warn(unreachable_pub)]

pub mod admin;
pub mod background;
pub mod breaker;
pub mod budget;
pub mod classify;
pub mod cli;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod diff;
pub mod encoding;
pub mod gate;
pub mod ids;
pub mod mapping;
pub mod mask;
pub mod paging;
pub mod proxy;
pub mod quota;
pub mod record;
pub mod redact;
pub mod rediff;
pub mod reload;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod rollout_control;
pub mod server;
pub mod shadow;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod triage;
pub mod upstream;
pub mod webhook;
