//! The config file as serde reads it: every key optional, unknown keys refused. `resolve.rs`
//! turns it into the structs of `mod.rs`, with the defaults.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::values::*;
use super::{Bodies, GateConfig, Unmatched};
use crate::background::Priority;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) proxy: RawProxy,
    pub(super) admin: RawAdmin,
    pub(super) legacy: RawLegacy,
    pub(super) candidate: RawCandidate,
    pub(super) accounts: Option<RawAccounts>,
    pub(super) shadow: RawShadow,
    pub(super) diff: RawDiff,
    pub(super) store: RawStore,
    pub(super) routes: Vec<RawRoute>,
    pub(super) rollout: RawRollout,
    pub(super) gate: BTreeMap<String, GateConfig>,
    pub(super) mappings: RawMappings,
    pub(super) webhooks: Vec<RawWebhook>,
    /// `[ids.KIND]`: entity kinds whose ids differ between the vendors (the id crosswalk).
    pub(super) ids: BTreeMap<String, RawIdKind>,
}

/// `[ids.KIND]`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdKind {
    /// Where a record's id sits inside the record (a JSON pointer; `/id` by default).
    pub(super) id: Option<Str>,
    /// Natural keys that pair two records whose ids differ, tried in order: each a list of
    /// pointers inside the record (legacy's schema), e.g. `[["/first_name", "/last_name"]]`.
    #[serde(rename = "match")]
    pub(super) keys: Vec<Vec<Str>>,
    /// Pairs kept per account (oldest learned forgotten first); 100000 by default.
    pub(super) max_pairs: Option<usize>,
}

/// `[routes.ids]`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRouteIds {
    /// Record patterns (`/individuals/*`) → kind: each match is one record of the kind.
    pub(super) records: BTreeMap<String, Str>,
    /// Other fields holding an id of a kind (`/individuals/*/manager/id`) → kind.
    pub(super) refs: BTreeMap<String, Str>,
    /// Fields of the candidate's request body (built by the request mapping) holding legacy ids
    /// of a kind (`/ids/*`) → kind: sent as the candidate's partners.
    pub(super) request: BTreeMap<String, Str>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) name: Str,
    pub(super) url: Str,
    pub(super) events: Vec<Str>,
    pub(super) secret: Str,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_base: Option<Dur>,
    pub(super) timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMappings {
    pub(super) dir: Option<Str>,
    pub(super) environment: Option<Str>,
    pub(super) timeout: Option<Dur>,
    pub(super) workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawProxy {
    pub(super) listen: Option<Str>,
    pub(super) drain_timeout: Option<Dur>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_read_timeout: Option<Dur>,
    pub(super) idle_timeout: Option<Dur>,
    /// PEM certificate chain (leaf first) served by the listener; with `tls_key`.
    pub(super) tls_cert: Option<Str>,
    /// PEM private key of `tls_cert`.
    pub(super) tls_key: Option<Str>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Str>,
    pub(super) token: Option<Str>,
    pub(super) metrics_token: Option<bool>,
    /// Other names (`host:port`) the admin listener is reached by, besides its address and
    /// the loopback names of its port (a tokenless listener answers only to these).
    pub(super) hosts: Option<Vec<Str>>,
    /// PEM certificate chain (leaf first) served by the admin listener; with `tls_key`.
    pub(super) tls_cert: Option<Str>,
    /// PEM private key of `tls_cert`.
    pub(super) tls_key: Option<Str>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLegacy {
    pub(super) base_url: Option<BaseUrl>,
    pub(super) timeout: Option<Dur>,
    pub(super) body_timeout: Option<Dur>,
    pub(super) ca_file: Option<Str>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCandidate {
    pub(super) base_url: Option<BaseUrl>,
    pub(super) timeout: Option<Dur>,
    pub(super) ca_file: Option<Str>,
    pub(super) headers: BTreeMap<String, Str>,
    pub(super) forward_headers: Option<Vec<HeaderNameStr>>,
    pub(super) forward_query: Option<Vec<Str>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccounts {
    pub(super) key: KeySourceStr,
    pub(super) file: Str,
    pub(super) reauth_after: Option<u64>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawShadow {
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) sample_rate: Option<f64>,
    pub(super) max_in_flight: Option<usize>,
    #[schemars(range(min = 0.0))]
    pub(super) max_rps: Option<f64>,
    pub(super) max_body: Option<Size>,
    pub(super) max_bytes_in_flight: Option<Size>,
    pub(super) unmatched: Option<Unmatched>,
    pub(super) backoff_on_429: Option<bool>,
    pub(super) rate_limit_scope: Option<super::RateLimitScope>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) reserve: Option<f64>,
    pub(super) threads: Option<usize>,
    pub(super) priority: Option<Priority>,
    pub(super) breaker: Option<RawBreaker>,
}

/// `[shadow.breaker]`: the shadow leg's error-burst breaker per (vendor, account).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBreaker {
    /// Failures (status 400 or more but 429) within `window` that open it; 0 disables it.
    pub(super) burst: Option<u32>,
    pub(super) window: Option<Dur>,
    /// How long shadow calls are skipped before one probe goes out.
    pub(super) open_for: Option<Dur>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiff {
    pub(super) ignore: Vec<GlobStr>,
    pub(super) array_keys: BTreeMap<String, Str>,
    pub(super) unordered: Vec<GlobStr>,
    #[schemars(range(min = 0.0))]
    pub(super) number_tolerance: Option<f64>,
    pub(super) null_equals_missing: Option<bool>,
    pub(super) auto_keys: Option<bool>,
    pub(super) normalize: Vec<RawNormalize>,
    /// Field patterns of ignore/normalize/unordered/array-key rules that also apply to the
    /// comparison of an answer served by the candidate (the caller may receive either value).
    pub(super) serve_safe: Vec<GlobStr>,
    pub(super) headers: Option<Vec<HeaderNameStr>>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) systematic_rate: Option<f64>,
    pub(super) noise: Option<RawNoise>,
}

/// `[diff.noise]`: learning noise from a second legacy call.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNoise {
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) secondary_sample_rate: Option<f64>,
    pub(super) min_count: Option<u64>,
}

/// One `normalize = [{ fields = [...], with = [...] }]` entry.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNormalize {
    pub(super) fields: Vec<GlobStr>,
    pub(super) with: Vec<NormStr>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub(super) path: Option<Str>,
    pub(super) url: Option<Str>,
    pub(super) ca_file: Option<Str>,
    pub(super) migrate: Option<bool>,
    pub(super) retention: Option<Dur>,
    pub(super) bodies: Option<Bodies>,
    pub(super) redact_headers: Option<Vec<HeaderNameStr>>,
    pub(super) redact_fields: Option<Vec<GlobStr>>,
    pub(super) queue: Option<usize>,
    pub(super) max_value_len: Option<Size>,
    pub(super) examples_per_field: Option<usize>,
    pub(super) exchanges: Option<crate::store::Rows>,
    pub(super) rows_per_hour: Option<u64>,
    pub(super) body_examples: Option<usize>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) body_sample: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) match_sample: Option<f64>,
    pub(super) body_budget: Option<Size>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[schemars(with = "Str")]
    pub(super) name: toml::Spanned<Str>,
    pub(super) method: Option<MethodStr>,
    pub(super) path: PathStr,
    pub(super) mirror: Option<bool>,
    /// A read whose method is not GET (a POST batch read): mirrored and compared like a GET,
    /// never treated as a write.
    pub(super) read: Option<bool>,
    pub(super) serve: Option<bool>,
    pub(super) serve_deadline: Option<Dur>,
    pub(super) unknown_account: Option<crate::rollout::UnknownAccount>,
    pub(super) reference: Option<Str>,
    pub(super) candidate: Option<RawRouteCandidate>,
    pub(super) legacy: Option<RawRouteLegacy>,
    #[serde(default)]
    pub(super) diff: RawDiff,
    /// Where the route's documents hold ids of the `[ids]` kinds.
    pub(super) ids: Option<RawRouteIds>,
    /// Legacy's offset paging answered from the candidate's cursors.
    pub(super) paging: Option<RawPaging>,
}

/// `[routes.paging]`: legacy pages by offset and limit, the candidate by cursor.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPaging {
    /// Legacy's offset query parameter (`offset`).
    pub(super) offset: Option<Str>,
    /// Legacy's page size query parameter (`limit`); without it, to the end of the list.
    pub(super) limit: Option<Str>,
    /// Where legacy's envelope holds the list's total (`/paging/count`): set to the total walked.
    pub(super) count_field: Option<Str>,
    /// Where legacy's envelope holds the page's offset (`/paging/offset`).
    pub(super) offset_field: Option<Str>,
    /// The candidate's cursor query parameter (`cursor`).
    pub(super) cursor: Option<Str>,
    /// The candidate's page size query parameter (`page_size`).
    pub(super) page_size: Option<Str>,
    /// The page size asked of the candidate (100).
    pub(super) max_page_size: Option<usize>,
    /// Where the candidate's page holds its next cursor (`/next`).
    pub(super) next_field: Option<Str>,
    /// Where the candidate's page holds its items (`/results`).
    pub(super) results_field: Option<Str>,
    /// Candidate pages walked for one request at most (50).
    pub(super) max_pages: Option<usize>,
    /// How long a learned cursor and a walked total are used (`60s`).
    pub(super) cursor_ttl: Option<Dur>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRouteLegacy {
    pub(super) mapping: Option<Str>,
    pub(super) mapping_expr: Option<Str>,
    pub(super) mapping_lang: Option<Str>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRouteCandidate {
    pub(super) method: Option<MethodStr>,
    pub(super) path: Option<TemplateStr>,
    pub(super) query: Option<BTreeMap<String, TemplateStr>>,
    pub(super) mapping: Option<Str>,
    pub(super) mapping_expr: Option<Str>,
    pub(super) mapping_lang: Option<Str>,
    /// A request mapping file (`.jsonata` or `.jq`): builds the candidate's request body, or
    /// one candidate call per element (`each`).
    pub(super) request_mapping: Option<Str>,
    /// A request mapping inline (`request_lang`: jsonata by default).
    pub(super) request_expr: Option<Str>,
    pub(super) request_lang: Option<Str>,
    /// The most candidate calls one request may fan out to (default 50, at most 1000).
    pub(super) max_each: Option<usize>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRollout {
    #[schemars(with = "Option<Str>")]
    pub(super) phase: Option<toml::Spanned<Str>>,
    pub(super) salt: Option<Str>,
    #[schemars(with = "Option<Vec<Str>>")]
    pub(super) order: Option<toml::Spanned<Vec<Str>>>,
    pub(super) pin_candidate: Vec<Str>,
    pub(super) pin_legacy: Vec<Str>,
    pub(super) follow: Option<Dur>,
    /// Served candidate calls at once (default: the proxy's connection cap); beyond it a cohort
    /// request is answered by legacy (`not_called_overload`).
    pub(super) max_in_flight: Option<usize>,
    #[schemars(with = "BTreeMap<String, RawPhase>")]
    pub(super) phases: BTreeMap<String, toml::Spanned<RawPhase>>,
    pub(super) guard: RawGuard,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPhase {
    #[schemars(range(min = 0.0, max = 100.0))]
    pub(super) percent: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) legacy_sample: Option<f64>,
    /// Serve a candidate answer only when it equals legacy's answer to the same request at every
    /// field (the strict comparison); default: true for `canary`, false otherwise.
    pub(super) verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGuard {
    pub(super) auto_rollback: Option<bool>,
    pub(super) auto_promote: Option<bool>,
    pub(super) window: Option<Dur>,
    pub(super) min_sample: Option<u64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) min_parity: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) max_fallback_rate: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) max_candidate_error_rate: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) confidence: Option<f64>,
    pub(super) hold: Option<Dur>,
    pub(super) promote_window: Option<Dur>,
    pub(super) every: Option<Dur>,
}
