//! Turns one exchange's two responses into a stored record: the outcome, the field differences
//! (status, compared headers and body), redaction and the bodies to keep.
//!
//! Outcome precedence (first that applies):
//! 1. legacy failed (no response, 5xx, 429, broken body) → `legacy_error`; caller left → `skipped`
//! 2. candidate timed out → `candidate_timeout`; connection or body failure → `candidate_error`
//! 3. candidate 429 → `candidate_rate_limited`
//! 4. candidate 401/403 while legacy succeeded → `candidate_auth_error`
//! 5. candidate 5xx → `candidate_error`
//! 6. a response body over `max_body` → `too_large`
//! 7. a body that cannot be decoded, or JSON on one side only → `not_json`
//! 8. a mapping that fails (error, nothing returned, time budget, crash) → `mapping_error`
//! 9. otherwise compared: no difference left → `match`, else `diff`. Two bodies that are both not
//!    JSON are compared as bytes after decoding: a difference is reported at the root pointer `""`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::capture::{self, Captured};
use crate::config::{Bodies, Config};
use crate::diff::doc::{Doc, Room, Unbounded};
use crate::diff::{self, Difference, Kind, Rules, Seg};
use crate::encoding;
use crate::mapping::{runner::Runner, Chain};
use crate::record::{BodyText, Outcome, Record, SkipReason, StoredBody};
use crate::redact;

use super::memo::{Glance, Memo};
use super::sample::{BodySampler, Offer};

pub use crate::record::Meta;

/// What legacy answered.
#[derive(Debug)]
pub enum Legacy {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        ms: f64,
        body: Captured,
    },
    Failed {
        ms: f64,
        reason: String,
    },
}

/// A body read from the candidate.
#[derive(Debug)]
pub enum CandidateBody {
    Complete(Bytes),
    TooLarge,
    /// The memory budget of the comparisons could not hold it.
    OverBudget,
}

/// What the candidate answered.
#[derive(Debug)]
pub enum Candidate {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        ms: f64,
        body: CandidateBody,
        /// The body's bytes in the memory budget, given back when the exchange is recorded.
        held: crate::budget::Held,
    },
    /// No complete answer within `limit`: `[candidate] timeout`, or a served request's
    /// `serve_deadline` (the call was then cancelled).
    Timeout {
        ms: f64,
        limit: std::time::Duration,
    },
    Failed {
        ms: f64,
        reason: String,
    },
    /// A served request's call, cancelled once the caller's answer was decided without it.
    Cancelled {
        ms: f64,
        why: &'static str,
    },
    /// The request mapping ran and the candidate was not called (or not for every element).
    NotCalled {
        ms: f64,
        why: NotCalled,
    },
}

/// Why a route with a request mapping did not call the candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum NotCalled {
    /// The request mapping failed (or returned what cannot be a request): `mapping_error`.
    Mapping(String),
    /// A skip found once the body was mapped (a fan-out over `max_each`, a template value an
    /// element lacks, a 429 pause or an open breaker met during the fan-out): with its text.
    Skip(SkipReason, String),
}

impl Candidate {
    /// Time to its answer (or failure), in milliseconds.
    pub fn ms(&self) -> f64 {
        match self {
            Self::Response { ms, .. }
            | Self::Timeout { ms, .. }
            | Self::Failed { ms, .. }
            | Self::Cancelled { ms, .. }
            | Self::NotCalled { ms, .. } => *ms,
        }
    }
}

/// The mappings that apply to one exchange, and where they run.
#[derive(Clone, Copy, Default)]
pub struct Maps<'m> {
    pub candidate: Option<&'m Chain>,
    pub legacy: Option<&'m Chain>,
    pub runner: Option<&'m Runner>,
    pub timeout: std::time::Duration,
    /// The candidate's document already decoded, parsed and mapped by `candidate` (a request
    /// served from the candidate did it for the caller): compared as it is, not mapped again.
    pub premapped: Option<&'m Value>,
    /// The route's request mapping (it built the candidate's request): only its version, in
    /// `mapping_version`.
    pub request: Option<&'m Chain>,
    /// The id crosswalk, for a route whose documents hold ids (`[routes.ids]`).
    pub ids: Option<Ids<'m>>,
    /// A paged route (`[routes.paging]`): legacy's paging fields stamped after the mapping.
    pub paging: Option<&'m crate::paging::Spec>,
    /// What the diff rules add to the version (`RouteConfig::rules_version`).
    pub rules: Option<&'m str>,
}

/// What the comparison of a route with ids needs: the crosswalk and where the ids sit.
#[derive(Clone, Copy)]
pub struct Ids<'m> {
    pub crosswalk: &'m crate::ids::Crosswalk,
    /// The exchange's account (`""` without `[accounts]`).
    pub account: &'m str,
    pub route: &'m crate::ids::RouteIds,
    pub kinds: &'m [crate::ids::KindSpec],
}

impl Maps<'_> {
    pub fn is_empty(&self) -> bool {
        self.candidate.is_none() && self.legacy.is_none()
    }

    /// The `mapping_version` recorded ([`crate::mapping::recorded_version`]).
    pub fn version(&self) -> Option<String> {
        crate::mapping::recorded_version(self.candidate, self.legacy, self.request, self.rules)
    }

    /// Applies each side's chain to its document (a side without a document or a chain is left
    /// as it is): the mapping step of the proxy's comparison and of the offline `diff`.
    pub fn apply_both(
        &self,
        legacy: Option<Value>,
        candidate: Option<Value>,
    ) -> Result<(Option<Value>, Option<Value>), SideMappingError> {
        let side =
            |doc: Option<Value>, chain: Option<&Chain>, side: &'static str| match (doc, chain) {
                (Some(d), Some(ch)) => self
                    .apply(ch, &d)
                    .map(Some)
                    .map_err(|error| SideMappingError { side, error }),
                (d, _) => Ok(d),
            };
        Ok((
            side(legacy, self.legacy, "legacy")?,
            side(candidate, self.candidate, "candidate")?,
        ))
    }

    /// Mappings only run in worker processes: without a runner there is nowhere safe to run one.
    fn apply(&self, chain: &Chain, doc: &Value) -> Result<Value, crate::mapping::MappingError> {
        match self.runner {
            Some(r) => r.run(chain, doc, self.timeout),
            None => Err(crate::mapping::MappingError::Unavailable(
                "no mapping runner".into(),
            )),
        }
    }
}

/// A record for an exchange that was not compared after all, for this reason.
fn skipped(r: Record, why: SkipReason) -> Record {
    outcome(r, Outcome::Skipped(why), why.as_str().to_owned())
}

/// A mapping that failed, and on which side (`legacy` or `candidate`).
#[derive(Debug, thiserror::Error)]
#[error("{side} mapping: {error}")]
pub struct SideMappingError {
    pub side: &'static str,
    pub error: crate::mapping::MappingError,
}

/// A record for an exchange that was eligible but not mirrored (`skipped`, or `too_large` for a
/// request body over `max_body`).
pub fn unmirrored(
    meta: Meta,
    outcome: Outcome,
    legacy_status: Option<u16>,
    legacy_ms: Option<f64>,
    reason: String,
) -> Record {
    let mut r = base(meta, outcome);
    r.legacy_status = legacy_status;
    r.legacy_ms = legacy_ms;
    r.reason = Some(reason);
    r
}

/// A record for an exchange whose comparison failed on a bug (a caught panic).
pub fn internal_error(meta: Meta, reason: String) -> Record {
    let mut r = base(meta, Outcome::InternalError);
    r.reason = Some(reason);
    r
}

fn base(meta: Meta, outcome: Outcome) -> Record {
    Record {
        meta,
        legacy_status: None,
        candidate_status: None,
        legacy_ms: None,
        candidate_ms: None,
        outcome,
        reason: None,
        diff_count: 0,
        diffs: Arc::default(),
        present: Arc::default(),
        bodies: Vec::new(),
        mapping_version: None,
        field_counts: None,
        ids: None,
    }
}

/// What the proxy's comparisons share across exchanges.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// Results of pairs already seen.
    pub memo: &'a Memo<Compared>,
    /// Which exchanges keep their bodies.
    pub sampler: &'a BodySampler,
    /// The exchange's route (its index in the config).
    pub route: Option<usize>,
    /// Compared by the served rules (an answer the candidate served): a result of its own.
    pub strict: bool,
}

/// Compares the two sides and builds the (redacted) record.
/// With `shared`, the comparison of a pair of complete responses already seen (same route,
/// statuses, compared headers and body bytes) is reused instead of computed again, and the
/// bodies are kept when the sampler admits them; without it, every eligible body is kept.
pub fn compare(
    meta: Meta,
    legacy: Legacy,
    candidate: Candidate,
    rules: &Rules,
    cfg: &Config,
    shared: Option<Shared<'_>>,
    maps: Maps<'_>,
) -> Record {
    let mut r = base(meta, Outcome::Match);
    r.mapping_version = maps.version();
    r.candidate_ms = Some(candidate.ms());
    if let Candidate::Response { status, .. } = &candidate {
        r.candidate_status = Some(status.as_u16());
    }
    let (l_status, l_headers, l_body) = match legacy {
        Legacy::Failed { ms, reason } => {
            r.legacy_ms = Some(ms);
            return outcome(r, Outcome::LegacyError, reason);
        }
        Legacy::Response {
            status,
            headers,
            ms,
            body,
        } => {
            r.legacy_ms = Some(ms);
            r.legacy_status = Some(status.as_u16());
            (status, headers, body)
        }
    };
    if l_status.is_server_error() || l_status == StatusCode::TOO_MANY_REQUESTS {
        return outcome(
            r,
            Outcome::LegacyError,
            format!("legacy answered {}", l_status.as_u16()),
        );
    }
    let l_bytes = match l_body {
        Captured::Complete(chunks) => Some(capture::join(chunks)),
        Captured::TooLarge { .. } => None,
        Captured::Error(e) => {
            return outcome(r, Outcome::LegacyError, format!("legacy body failed: {e}"))
        }
        Captured::Aborted => return skipped(r, SkipReason::CallerAborted),
        Captured::OverBudget => return skipped(r, SkipReason::Memory),
    };
    let (c_status, c_headers, c_body, mut held) = match candidate {
        Candidate::Timeout { limit, .. } => {
            let why = if limit == cfg.candidate.timeout {
                String::new()
            } else {
                " (the serve deadline: the call was cancelled and the caller got legacy's answer)"
                    .to_owned()
            };
            return outcome(
                r,
                Outcome::CandidateTimeout,
                format!("no complete answer within {limit:?}{why}"),
            );
        }
        Candidate::Cancelled { why, .. } => {
            let mut r = skipped(r, SkipReason::Cancelled);
            r.reason = Some(format!("cancelled: {why}"));
            return r;
        }
        Candidate::Failed { reason, .. } => return outcome(r, Outcome::CandidateError, reason),
        Candidate::NotCalled { why, .. } => {
            r.candidate_ms = None;
            return match why {
                NotCalled::Mapping(e) => outcome(r, Outcome::MappingError, e),
                NotCalled::Skip(reason, text) => outcome(r, Outcome::Skipped(reason), text),
            };
        }
        Candidate::Response {
            status,
            headers,
            body,
            held,
            ..
        } => (status, headers, body, held),
    };
    if c_status == StatusCode::TOO_MANY_REQUESTS {
        return outcome(
            r,
            Outcome::CandidateRateLimited,
            "candidate answered 429".into(),
        );
    }
    if (c_status == StatusCode::UNAUTHORIZED || c_status == StatusCode::FORBIDDEN)
        && l_status.as_u16() < 400
    {
        return outcome(
            r,
            Outcome::CandidateAuthError,
            format!("candidate answered {}", c_status.as_u16()),
        );
    }
    if c_status.is_server_error() {
        return outcome(
            r,
            Outcome::CandidateError,
            format!("candidate answered {}", c_status.as_u16()),
        );
    }
    let max = cfg.shadow.max_body;
    let (l_bytes, c_bytes) = match (l_bytes, c_body) {
        (None, _) => {
            return outcome(
                r,
                Outcome::TooLarge,
                format!("legacy body over {max} bytes"),
            )
        }
        (_, CandidateBody::OverBudget) => return skipped(r, SkipReason::Memory),
        (_, CandidateBody::TooLarge) => {
            return outcome(
                r,
                Outcome::TooLarge,
                format!("candidate body over {max} bytes"),
            )
        }
        (Some(l), CandidateBody::Complete(c)) => (l, c),
    };
    let legacy = Side {
        status: l_status,
        headers: &l_headers,
        body: l_bytes,
    };
    let candidate = Side {
        status: c_status,
        headers: &c_headers,
        body: c_bytes,
    };
    // The documents' memory: what the bodies' charge set aside for them, then more from the
    // budget, through the candidate's holding (given back when the exchange is recorded).
    let mut room = Charge {
        free: (legacy.body.len() + candidate.body.len()).saturating_mul(crate::budget::TREE_SHARE),
        held: &mut held,
    };
    // The result, and whether this exchange keeps its bodies (decided by the sampler: a memo
    // hit shares the result of an earlier exchange, not its decision).
    let (compared, keep) = match shared {
        Some(sh) => {
            // With ids, the result depends on the account's pairs as they are now.
            let tag = match maps.ids {
                Some(i) => Some(format!(
                    "{}\u{1f}ids:{}:{}",
                    r.mapping_version.as_deref().unwrap_or(""),
                    i.account,
                    i.crosswalk.generation()
                )),
                None => r.mapping_version.clone(),
            };
            let glance = memo_glance(
                sh.route,
                sh.strict,
                tag.as_deref(),
                &legacy,
                &candidate,
                cfg,
            );
            let mut fresh = |keep| {
                let size = legacy.body.len() + candidate.body.len();
                let fresh = Arc::new(compare_sides(
                    &legacy, &candidate, rules, cfg, keep, maps, &mut room,
                ));
                // A mapping that timed out or crashed may pass next time, and a comparison the
                // budget could not hold may fit next time: not kept. The memo charges the
                // bodies and what their comparison holds.
                if fresh.outcome != Outcome::MappingError
                    && fresh.outcome != Outcome::Skipped(SkipReason::Memory)
                {
                    sh.memo
                        .insert(&glance, size + fresh.approx_bytes(), fresh.clone());
                }
                fresh
            };
            match sh.memo.get(&glance) {
                None => (fresh(Keep::Sampled(sh.sampler, sh.route)), true),
                Some(hit) => {
                    let decision = sh.sampler.decide(
                        &cfg.store,
                        &Offer {
                            route: sh.route,
                            outcome: hit.outcome,
                            diffs: &hit.diffs,
                            bytes: hit.size,
                        },
                    );
                    crate::telemetry::bodies(decision.as_str());
                    match (decision.keeps(), hit.bodies.is_some()) {
                        // Admitted now, but not kept when first compared: compared again
                        // to serialise them (rare: admissions are few per hour).
                        (true, false) => (fresh(Keep::Eligible), true),
                        (keep, _) => (hit, keep),
                    }
                }
            }
        }
        None => (
            Arc::new(compare_sides(
                &legacy,
                &candidate,
                rules,
                cfg,
                Keep::Eligible,
                maps,
                &mut room,
            )),
            true,
        ),
    };
    compared.fill(&mut r);
    if let (true, Some(k)) = (keep, &compared.bodies) {
        r.bodies
            .push(stored("legacy", &legacy, k.legacy.clone(), cfg));
        r.bodies
            .push(stored("candidate", &candidate, k.candidate.clone(), cfg));
        if let Some(raw) = &k.legacy_raw {
            r.bodies
                .push(stored("legacy_raw", &legacy, Some(raw.clone()), cfg));
        }
        if let Some(raw) = &k.candidate_raw {
            r.bodies
                .push(stored("candidate_raw", &candidate, Some(raw.clone()), cfg));
        }
    }
    r
}

/// One side's complete response.
pub struct Side<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    /// As received (still content-encoded).
    pub body: Bytes,
}

/// The result of comparing two complete responses: everything about it that depends only on
/// their statuses, compared headers and bodies, so it can be reused for the same pair.
#[derive(Debug)]
pub struct Compared {
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// Redacted.
    pub diffs: Arc<Vec<Difference>>,
    /// The (redacted) JSON texts of the bodies, when they are to be kept.
    pub bodies: Option<KeptTexts>,
    /// The field patterns present in either body (JSON bodies only), for classification.
    pub present: Arc<Vec<String>>,
    /// The decoded size of both bodies (what the body budget counts).
    pub size: usize,
    /// What the id crosswalk learned and met (a route with ids).
    pub ids: Option<Arc<crate::record::IdsSeen>>,
    /// Differences counted per (field pattern, kind), not listed: past the examples of their
    /// pattern a recorded comparison lists (`[store] examples_per_field`), or past
    /// [`LISTING`]'s first 10,000.
    pub counted: Vec<diff::Counted>,
    /// Differences found past the room for listing them ([`LISTING`]) or with no row in
    /// `counted`: counted, not listed.
    pub unlisted: usize,
}

impl Compared {
    /// Every difference found: listed, counted per pattern, or only counted.
    pub fn diff_count(&self) -> usize {
        diff::listing::total(&self.diffs, &self.counted, self.unlisted)
    }

    /// Gives the exchange's record the result (all but the bodies).
    fn fill(&self, r: &mut Record) {
        r.outcome = self.outcome;
        r.reason.clone_from(&self.reason);
        r.diff_count = self.diff_count();
        r.diffs = self.diffs.clone();
        // Counted per pattern: the record's counts are theirs and the listed ones'.
        if !self.counted.is_empty() {
            r.field_counts = Some(crate::record::field_counts(
                &self.diffs,
                &self.counted,
                self.unlisted,
            ));
        }
        r.present = self.present.clone();
        r.ids.clone_from(&self.ids);
    }
}

impl Compared {
    /// Bytes the result holds, about: its differences' texts and values, its present patterns
    /// and its kept texts. Paths are texts of member names, so a body of a few kilobytes with a
    /// long name above many members makes a result of many megabytes: what the memo charges.
    pub fn approx_bytes(&self) -> usize {
        let diffs = crate::record::diffs_bytes(&self.diffs);
        let present: usize = self.present.iter().map(|p| 24 + p.len()).sum();
        let texts: usize = self.bodies.as_ref().map_or(0, |b| {
            [&b.legacy, &b.candidate, &b.legacy_raw, &b.candidate_raw]
                .into_iter()
                .flatten()
                .map(|t| t.text.len())
                .sum()
        });
        let counted: usize = self.counted.iter().map(|c| 48 + c.field.len()).sum();
        diffs + counted + present + texts
    }
}

/// The redacted JSON texts kept of one exchange (`None`: a body that is not JSON).
#[derive(Debug, Clone, Default)]
pub struct KeptTexts {
    /// As compared (after the legacy mapping, if any).
    pub legacy: Option<BodyText>,
    /// As compared (after the candidate mapping, if any).
    pub candidate: Option<BodyText>,
    /// Legacy's document before its mapping (only when a legacy mapping applied).
    pub legacy_raw: Option<BodyText>,
    /// The candidate's document as it came, decoded, before its mapping (only when a candidate
    /// mapping applied): what `rediff` and `suggest` run a new mapping over.
    pub candidate_raw: Option<BodyText>,
}

/// What a comparison keeps for the store.
#[derive(Clone, Copy)]
enum Keep<'a> {
    /// Nothing (noise learning, recomputing a recorded exchange): no body texts, no field
    /// presence.
    Nothing,
    /// Only the outcome (a served answer's verification): as [`Keep::Nothing`], with one
    /// difference listed per (field pattern, kind).
    Verdict,
    /// Field presence, and the bodies `[store] bodies` makes eligible.
    Eligible,
    /// Field presence, and the bodies the sampler admits (for the route).
    Sampled(&'a BodySampler, Option<usize>),
}

/// Field patterns counted as present per exchange at most.
const MAX_PRESENT: usize = 1000;

/// What a comparison lists of the differences it finds ([`diff::listing`]):
/// - 4 MiB of path text (pointers and field patterns) past [`diff::FREE_PATH_TEXT`] per
///   difference. Paths of ordinary names are never charged; past the room, differences are
///   counted (the exchange's `diff_count` and its `(other fields)` row), not listed: a hostile
///   body of one long member name above many members cannot make paths many times its size. A
///   fixed room, not one per byte of body: the same documents list the same differences whether
///   their bodies came indented or as re-serialised by the store (rediff, `diff --exchange`).
/// - 10,000 differences; past them, those of ordinary paths are counted per (field pattern,
///   kind), which is what the store keeps (with an example of each pattern, still listed): a
///   10 MB page whose every value differs does not hold a few hundred bytes per value.
///
/// A recorded comparison lists fewer: [`diff::Bound::with_examples`] the store's examples per
/// pattern (`[store] examples_per_field`); a served answer's verification one per pattern. A
/// comparison whose differences the id crosswalk reads one by one lists them all.
pub const LISTING: diff::Bound = diff::Bound {
    room: 4 << 20,
    listed: 10_000,
    examples: usize::MAX,
};

/// Lists of present patterns a thread remembers (see [`shared_presence`]).
const RECENT_PRESENCE: usize = 4;
/// The longest list a thread remembers, in bytes of its patterns (a page's is a few hundred:
/// patterns are texts of member names, and a hostile vendor's names can be megabytes long).
const RECENT_PRESENCE_BYTES: usize = 64 << 10;

/// A list of present patterns a thread built, by its patterns' hashes.
type Recent = (Vec<u64>, Arc<Vec<String>>);

thread_local! {
    /// The last lists of present patterns this thread built, newest last.
    static RECENT: std::cell::RefCell<Vec<Recent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The list of present patterns whose hashes are `hashes` ([`diff::Patterns::hashes_only`]):
/// one of the lists this thread built last when it has the same hashes (the pages of a route
/// mostly name the same fields in the same order), else `build`'s, remembered. The store's
/// writer counts a shared list once per route and hour, then spreads the count (see
/// `store::rollup::presence`), and nothing of it is built or freed per exchange. (Two lists
/// with the same 64-bit hashes, in order, are taken for the same: the walk already takes a
/// pattern's hash for the pattern.)
fn shared_presence(hashes: &[u64], build: impl FnOnce() -> Vec<String>) -> Arc<Vec<String>> {
    if hashes.is_empty() {
        return Arc::default();
    }
    RECENT.with_borrow_mut(|recent| {
        if let Some(i) = recent.iter().position(|(h, _)| h == hashes) {
            let hit = recent.remove(i);
            let list = hit.1.clone();
            recent.push(hit);
            return list;
        }
        let list = Arc::new(build());
        if list.iter().map(String::len).sum::<usize>() > RECENT_PRESENCE_BYTES {
            return list;
        }
        if recent.len() == RECENT_PRESENCE {
            recent.remove(0);
        }
        recent.push((hashes.to_vec(), list.clone()));
        list
    })
}

/// The field patterns that differ between two answers of legacy to the same request (noise
/// learning): `None` when the pair cannot tell (another status, a body that is not JSON).
pub fn noise_sample(
    first: &Side<'_>,
    second: &Side<'_>,
    rules: &Rules,
    cfg: &Config,
) -> Option<Vec<String>> {
    if first.status != second.status {
        return None;
    }
    let c = compare_sides(
        first,
        second,
        rules,
        cfg,
        Keep::Nothing,
        Maps::default(),
        &mut Unbounded,
    );
    match c.outcome {
        Outcome::Match | Outcome::Diff => {
            let listed = c.diffs.iter().map(|d| d.field.clone());
            let mut fields: Vec<String> = listed
                .chain(c.counted.iter().map(|d| d.field.clone()))
                .collect();
            fields.sort_unstable();
            fields.dedup();
            Some(fields)
        }
        _ => None,
    }
}

/// Decodes, parses, diffs and redacts two complete responses.
pub fn compare_bodies(
    legacy: &Side<'_>,
    candidate: &Side<'_>,
    rules: &Rules,
    cfg: &Config,
) -> Compared {
    compare_sides(
        legacy,
        candidate,
        rules,
        cfg,
        Keep::Eligible,
        Maps::default(),
        &mut Unbounded,
    )
}

/// Only the outcome of comparing two complete responses (a served answer's verification, on the
/// caller's path): neither field presence nor kept texts are built. The documents' memory, and
/// decoded bytes past the received ones, are taken from `held`'s budget as they grow (nothing
/// set aside: the served answer is not charged up front); when it cannot give them the outcome
/// is `skipped` (`memory`), which no served answer passes.
pub fn verdict(
    legacy: &Side<'_>,
    candidate: &Side<'_>,
    rules: &Rules,
    cfg: &Config,
    held: &mut crate::budget::Held,
) -> Outcome {
    compare_sides(
        legacy,
        candidate,
        rules,
        cfg,
        Keep::Verdict,
        Maps::default(),
        &mut Charge { free: 0, held },
    )
    .outcome
}

/// Every difference of a recorded exchange, recomputed from what was kept of it (`diff
/// --exchange`): the bodies as kept (decoded, mapped and redacted) and the headers as kept
/// (redacted). Differences inside redacted values cannot be seen again. The outcome says when the
/// kept bodies cannot be compared (e.g. a body edited into something that is not JSON).
pub fn recompute(
    legacy: &crate::store::KeptSide,
    candidate: &crate::store::KeptSide,
    rules: &Rules,
    cfg: &Config,
) -> Compared {
    recompute_mapped(legacy, candidate, rules, cfg, Maps::default())
}

/// [`recompute`] with mappings applied to the kept documents first (`rediff`: the kept
/// documents as they came, through a new chain). Nothing is kept (no texts, no presence).
pub fn recompute_mapped(
    legacy: &crate::store::KeptSide,
    candidate: &crate::store::KeptSide,
    rules: &Rules,
    cfg: &Config,
    maps: Maps<'_>,
) -> Compared {
    let parts = |k: &crate::store::KeptSide| {
        let status = k
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let mut headers = HeaderMap::new();
        let kept: Map<String, Value> = k
            .headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        for (name, v) in kept {
            // The kept body is decoded already.
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            if name == http::header::CONTENT_ENCODING {
                continue;
            }
            let values = match v {
                Value::Array(a) => a,
                v => vec![v],
            };
            for v in values {
                if let Some(v) = v.as_str().and_then(|s| http::HeaderValue::from_str(s).ok()) {
                    headers.append(name.clone(), v);
                }
            }
        }
        let body = Bytes::from(k.body.clone().unwrap_or_default());
        (status, headers, body)
    };
    let (ls, lh, lb) = parts(legacy);
    let (cs, ch, cb) = parts(candidate);
    compare_sides(
        &Side {
            status: ls,
            headers: &lh,
            body: lb,
        },
        &Side {
            status: cs,
            headers: &ch,
            body: cb,
        },
        rules,
        cfg,
        Keep::Nothing,
        maps,
        &mut Unbounded,
    )
}

/// [`compare_bodies`], keeping what `keep` says. Bodies are serialised (after redaction) only
/// once they are to be kept. The documents hold what `room` gives them (else the exchange is
/// `skipped`, reason `memory`).
fn compare_sides(
    legacy: &Side<'_>,
    candidate: &Side<'_>,
    rules: &Rules,
    cfg: &Config,
    keep: Keep<'_>,
    maps: Maps<'_>,
    room: &mut dyn Room,
) -> Compared {
    let max = cfg.shadow.max_body;
    let record = !matches!(keep, Keep::Nothing | Keep::Verdict);
    let done = |outcome, reason: String| Compared {
        outcome,
        reason: Some(reason),
        diffs: Arc::default(),
        bodies: None,
        present: Arc::default(),
        size: 0,
        ids: None,
        counted: Vec::new(),
        unlisted: 0,
    };
    // A decoded body's bytes up to the received ones' are in the charge already (it counts
    // them 8 times); past them they are asked of the room.
    let mut decode = |s: &Side<'_>, side: &'static str| {
        let ce = s
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let mut ask = crate::budget::past(s.body.len(), |n| room.take(n));
        encoding::decode_within(ce, s.body.clone(), max, &mut ask).map_err(|e| (side, e))
    };
    let decoded = decode(legacy, "legacy").and_then(|l| Ok((l, decode(candidate, "candidate")?)));
    let (l_raw, c_raw) = match decoded {
        Ok(v) => v,
        Err((side, encoding::DecodeError::TooLarge { .. })) => {
            return done(
                Outcome::TooLarge,
                format!("{side} body over {max} bytes once decoded"),
            )
        }
        Err((side, encoding::DecodeError::OverBudget)) => {
            return done(
                Outcome::Skipped(SkipReason::Memory),
                over_budget(side, "decoded bytes"),
            )
        }
        Err((side, e)) => return done(Outcome::NotJson, format!("{side} body: {e}")),
    };

    let mut diffs = Vec::new();
    if let Some(d) = diff::diff_meta(
        &[Seg::Key("@status")],
        Some(Value::from(legacy.status.as_u16())),
        Some(Value::from(candidate.status.as_u16())),
        rules,
    ) {
        diffs.push(d);
    }
    for h in &cfg.diff.headers {
        let field = [Seg::Key("@header"), Seg::Key(h.as_str())];
        let (l, c) = (
            header_value(legacy.headers, h),
            header_value(candidate.headers, h),
        );
        // Compared by meaning (`content-type` by media type); a difference shows the values
        // as sent.
        let canonical = |v: &Option<Value>| {
            v.as_ref()
                .and_then(Value::as_str)
                .map(|s| diff::headers::canonical(h.as_str(), s))
        };
        if l.is_some() && c.is_some() && canonical(&l) == canonical(&c) {
            continue;
        }
        if let Some(d) = diff::diff_meta(&field, l, c, rules) {
            diffs.push(d);
        }
    }

    let mut outcome = Outcome::Match;
    let mut reason = None;
    let mut present = Arc::default();
    let mut unlisted = 0;
    let mut counted = Vec::new();
    let mapped = (
        maps.legacy.is_some(),
        maps.candidate.is_some() || maps.premapped.is_some(),
    );
    // A side that a mapping, a normalize rule, the id crosswalk or paging rewrites is parsed
    // into a serde_json value (what they take); any other into the scanner's arena document.
    let normalize = !rules.normalize.is_empty();
    let tree = (
        maps.legacy.is_some() || maps.ids.is_some() || normalize,
        maps.candidate.is_some() || maps.ids.is_some() || maps.paging.is_some() || normalize,
    );
    // The compact trees of both documents live here, for the comparison's length (their
    // strings in the parser's documents, kept beside them).
    let arena = diff::doc::Arena::take();
    let l = parse_body(&l_raw, tree.0, &arena, room);
    if let Some((outcome, reason)) = l.unusable("legacy") {
        return done(outcome, reason);
    }
    let (c_json, maps) = match maps.premapped {
        // Served from the candidate: its document was mapped for the caller already.
        Some(pre) => (
            Some(Doc::Tree(pre.clone())),
            Maps {
                candidate: None,
                premapped: None,
                ..maps
            },
        ),
        None => {
            let c = parse_body(&c_raw, tree.1, &arena, room);
            if let Some((outcome, reason)) = c.unusable("candidate") {
                return done(outcome, reason);
            }
            (c.json(), maps)
        }
    };
    let l_json = l.json();
    // A walked page carries its offset and total: legacy's paging fields, after the mapping.
    let walked = maps.paging.and_then(|spec| {
        Some((
            spec,
            crate::paging::stamp_of(c_json.as_ref().and_then(Doc::tree)?)?,
        ))
    });
    // Mappings reshape the parsed documents before anything is compared.
    let (l_json, mut c_json) = match map_sides(l_json, c_json, &maps) {
        Ok(v) => v,
        Err(e) => return done(Outcome::MappingError, e),
    };
    if let (Some((spec, st)), Some(Doc::Tree(c))) = (walked, c_json.as_mut()) {
        crate::paging::stamp(spec, c, st);
    }
    // The id crosswalk: pairs learned, then the candidate's ids turned into legacy's (a served
    // document comes with the candidate's ids too: the caller got them turned the same way).
    let applied = match (maps.ids, &l_json, &mut c_json) {
        (Some(ids), Some(Doc::Tree(l)), Some(Doc::Tree(c))) => {
            // A paged route teaches pairs only from the whole list on both sides.
            let whole = maps.paging.is_none_or(|spec| {
                let n = |d: &serde_json::Value| {
                    ids.route
                        .records
                        .first()
                        .map_or(0, |(g, _)| crate::ids::matches(d, g).len())
                };
                crate::paging::whole(spec, l, n(l)) && crate::paging::whole(spec, c, n(c))
            });
            Some(
                ids.crosswalk
                    .apply(ids.account, ids.route, ids.kinds, (l, whole), c),
            )
        }
        _ => None,
    };
    match (&l_json, &c_json) {
        (Some(l), Some(c)) => {
            // A recorded exchange lists what the store keeps of each pattern (its examples);
            // the crosswalk below reads every difference's pointer, so it gets them all.
            let bound = match (&keep, &applied) {
                (Keep::Eligible | Keep::Sampled(..), None) => {
                    LISTING.with_examples(cfg.store.examples_per_field)
                }
                (Keep::Verdict, None) => LISTING.with_examples(1),
                _ => LISTING,
            };
            let found = diff::diff_docs(l, c, rules, bound);
            (unlisted, counted) = (found.unlisted, found.counted);
            let mut found = found.diffs;
            if let Some(a) = &applied {
                for d in &mut found {
                    if a.explains(&d.pointer, d.candidate_pointer.as_deref(), d.kind.as_str()) {
                        d.kind = Kind::UnpairedId;
                    }
                }
            }
            diffs.extend(found);
            if record {
                // Their hashes first: a list this thread built before is not built again.
                let mut seen = diff::Patterns::hashes_only();
                seen.add_doc(l, MAX_PRESENT);
                seen.add_doc(c, MAX_PRESENT);
                present = shared_presence(&seen.hashes, || {
                    let mut p = diff::Patterns::default();
                    p.add_doc(l, MAX_PRESENT);
                    p.add_doc(c, MAX_PRESENT);
                    p.list
                });
            }
        }
        (None, None) => {
            if l_raw != c_raw && !rules.is_ignored(&[]) {
                diffs.push(Difference {
                    pointer: String::new(),
                    field: String::new(),
                    kind: Kind::Changed,
                    legacy: Some(Value::String(summary(&l_raw))),
                    candidate: Some(Value::String(summary(&c_raw))),
                    candidate_pointer: None,
                });
            }
        }
        (Some(_), None) => {
            outcome = Outcome::NotJson;
            reason = Some("candidate body is not JSON".into());
        }
        (None, Some(_)) => {
            outcome = Outcome::NotJson;
            reason = Some("legacy body is not JSON".into());
        }
    }
    if outcome == Outcome::Match && (!diffs.is_empty() || !counted.is_empty() || unlisted > 0) {
        outcome = Outcome::Diff;
    }
    for d in &mut diffs {
        redact_difference(d, cfg);
    }
    let size = l_raw.len() + c_raw.len();
    let keep = match keep {
        Keep::Nothing | Keep::Verdict => false,
        Keep::Eligible => match cfg.store.bodies {
            Bodies::Never => false,
            Bodies::OnDiff => outcome != Outcome::Match,
            Bodies::Sampled | Bodies::Always => true,
        },
        Keep::Sampled(sampler, route) => {
            let decision = sampler.decide(
                &cfg.store,
                &Offer {
                    route,
                    outcome,
                    diffs: &diffs,
                    bytes: size,
                },
            );
            crate::telemetry::bodies(decision.as_str());
            decision.keeps()
        }
    };
    Compared {
        outcome,
        reason,
        diffs: Arc::new(diffs),
        bodies: keep.then(|| kept_texts(l_json, c_json, (&l_raw, &c_raw), mapped, cfg)),
        present,
        size,
        ids: applied.map(|a| Arc::new(a.observed)),
        counted,
        unlisted,
    }
}

/// The texts kept of an exchange: both documents as compared, and, for a side a mapping
/// reshaped, its document as it came (parsed again from the decoded bytes: only kept exchanges
/// pay for it). Every text is redacted by `[store] redact_fields`; a document as it came also
/// loses every value redacted in its mapped form, wherever it sits (its fields have the other
/// vendor's names).
fn kept_texts(
    legacy: Option<Doc<'_>>,
    candidate: Option<Doc<'_>>,
    raw: (&[u8], &[u8]),
    mapped: (bool, bool),
    cfg: &Config,
) -> KeptTexts {
    let fields = &cfg.store.redact_fields;
    // The values redacted by glob on either side are looked for in both sides' documents, as
    // compared (a copy under another name) and as they came (another name, another format).
    let mut taken = std::collections::HashSet::new();
    let mut docs = [legacy.map(Doc::into_value), candidate.map(Doc::into_value)];
    for d in docs.iter_mut().flatten() {
        taken.extend(redact::redact_collecting(d, fields));
    }
    let side = |doc: Option<Value>, raw: &[u8], mapped: bool| {
        let text = doc.map(|mut b| {
            redact::redact_values(&mut b, &taken);
            BodyText::new(b.to_string())
        });
        let raw = mapped
            .then(|| diff::parse_json(raw).ok())
            .flatten()
            .map(|mut b| {
                redact::redact_document(&mut b, fields);
                redact::redact_values(&mut b, &taken);
                BodyText::new(b.to_string())
            });
        (text, raw)
    };
    let [legacy, candidate] = docs;
    let (legacy, legacy_raw) = side(legacy, raw.0, mapped.0);
    let (candidate, candidate_raw) = side(candidate, raw.1, mapped.1);
    KeptTexts {
        legacy,
        candidate,
        legacy_raw,
        candidate_raw,
    }
}

/// Applies the legacy and candidate mappings to JSON bodies; the error names the side. A side
/// without a mapping keeps its document as parsed.
fn map_sides<'b>(
    l: Option<Doc<'b>>,
    c: Option<Doc<'b>>,
    maps: &Maps<'_>,
) -> Result<(Option<Doc<'b>>, Option<Doc<'b>>), String> {
    let split = |d: Option<Doc<'b>>, chain: Option<&Chain>| match chain {
        Some(_) => (d.map(Doc::into_value), None),
        None => (None, d),
    };
    let ((l_map, l_kept), (c_map, c_kept)) = (split(l, maps.legacy), split(c, maps.candidate));
    // The engine's message may quote the document's values: scrubbed before it is stored as
    // the exchange's reason.
    let (l_map, c_map) = maps.apply_both(l_map, c_map).map_err(|e| {
        format!(
            "{}: {}",
            e.side,
            redact::scrub_message(&e.error.to_string())
        )
    })?;
    Ok((
        l_kept.or(l_map.map(Doc::Tree)),
        c_kept.or(c_map.map(Doc::Tree)),
    ))
}

fn outcome(mut r: Record, o: Outcome, reason: String) -> Record {
    r.outcome = o;
    r.reason = Some(reason);
    r
}

/// A body as parsed for the comparison.
enum Parsed<'b> {
    Json(Doc<'b>),
    /// Not JSON (or empty): compared as bytes when the other side is not JSON either.
    NotJson,
    /// JSON nested deeper than the parser's limit: refused, never recursed into.
    TooDeep,
    /// Its document would not fit in the comparison's memory: not built.
    OverBudget,
}

impl<'b> Parsed<'b> {
    /// What the comparison ends with when this body (of `side`) cannot be compared at all.
    fn unusable(&self, side: &str) -> Option<(Outcome, String)> {
        match self {
            Self::TooDeep => Some((Outcome::NotJson, too_deep(side))),
            Self::OverBudget => Some((
                Outcome::Skipped(SkipReason::Memory),
                over_budget(side, "document"),
            )),
            Self::Json(_) | Self::NotJson => None,
        }
    }

    fn json(self) -> Option<Doc<'b>> {
        match self {
            Self::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses a body: into a serde_json value with `tree`, else into whichever document reads the
/// same ([`diff::doc::parse_within`], within `room`).
fn parse_body<'b>(
    b: &'b [u8],
    tree: bool,
    arena: &'b bumpalo::Bump,
    room: &mut dyn Room,
) -> Parsed<'b> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Parsed::NotJson;
    }
    let parsed = if tree {
        diff::doc::parse_json_within(b, room).map(Doc::Tree)
    } else {
        diff::doc::parse_within(b, arena, room)
    };
    match parsed {
        Ok(v) => Parsed::Json(v),
        Err(diff::JsonError::TooDeep(_)) => Parsed::TooDeep,
        Err(diff::JsonError::Invalid(_)) => Parsed::NotJson,
        Err(diff::JsonError::OverBudget) => Parsed::OverBudget,
    }
}

fn over_budget(side: &str, what: &str) -> String {
    format!(
        "{side} body: its {what} would need more memory than [shadow] max_bytes_in_flight has left"
    )
}

/// The candidate's holding in the comparisons' memory budget, as the room of the comparison's
/// documents: first what the bodies' charge set aside for them ([`crate::budget::TREE_SHARE`]),
/// then more from the budget, given back with the holding when the exchange is recorded.
struct Charge<'h> {
    free: usize,
    held: &'h mut crate::budget::Held,
}

impl Room for Charge<'_> {
    fn take(&mut self, bytes: usize) -> bool {
        if let Some(left) = self.free.checked_sub(bytes) {
            self.free = left;
            return true;
        }
        let granted = self.held.grow(bytes - self.free);
        if granted {
            self.free = 0;
        }
        granted
    }
}

fn too_deep(side: &str) -> String {
    format!(
        "{side} body: JSON nested deeper than {} levels",
        diff::MAX_DEPTH
    )
}

/// What is stored of a body that is not JSON: its length and a hash, never its content.
/// Field redaction cannot apply to free text (an HTML error page can quote a token, a CSV can
/// hold a whole directory), so none of it leaves the process.
fn summary(b: &[u8]) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(b);
    format!("non-JSON body: {} bytes, xxh3 {h:016x}", b.len())
}

/// A header's value as compared: its values joined by ", ", or `None` when absent.
pub fn header_value(h: &HeaderMap, name: &http::HeaderName) -> Option<Value> {
    let vals: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!vals.is_empty()).then(|| Value::String(vals.join(", ")))
}

/// [`header_value`]'s text, appended to `out` without building it; `false` when absent.
fn header_text(h: &HeaderMap, name: &http::HeaderName, out: &mut Vec<u8>) -> bool {
    let mut values = 0;
    for v in h.get_all(name).iter().filter(|v| v.to_str().is_ok()) {
        if values > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes());
        values += 1;
    }
    values > 0
}

fn redact_difference(d: &mut Difference, cfg: &Config) {
    if let Some(name) = d.pointer.strip_prefix("@header/") {
        if redact::is_redacted_header(name, &cfg.store.redact_headers) {
            for v in [&mut d.legacy, &mut d.candidate].into_iter().flatten() {
                *v = Value::String(redact::REDACTED.into());
            }
        }
        return;
    }
    if let Some(v) = d.legacy.as_mut() {
        redact::redact_at(&d.pointer, v, &cfg.store.redact_fields);
    }
    if let Some(v) = d.candidate.as_mut() {
        let at = d.candidate_pointer.as_deref().unwrap_or(&d.pointer);
        redact::redact_at(at, v, &cfg.store.redact_fields);
    }
}

/// A side's response as stored: its redacted headers (from this response) and body text.
fn stored(side: &'static str, s: &Side<'_>, body: Option<BodyText>, cfg: &Config) -> StoredBody {
    StoredBody {
        side,
        status: Some(s.status.as_u16()),
        headers: kept_headers(s.headers, cfg),
        body,
    }
}

/// Response headers as the store keeps them: each name's value (an array when repeated), those
/// `[store] redact_headers` names redacted.
pub fn kept_headers(headers: &HeaderMap, cfg: &Config) -> Value {
    let mut hs = Map::new();
    for name in headers.keys() {
        let value = if redact::is_redacted_header(name.as_str(), &cfg.store.redact_headers) {
            Value::String(redact::REDACTED.into())
        } else {
            header_value(headers, name).unwrap_or(Value::Null)
        };
        hs.insert(name.as_str().to_owned(), value);
    }
    Value::Object(hs)
}

/// What a pair of responses for a route is found by in the memo: everything the comparison
/// reads (the bodies by their glance, then byte for byte: see [`Memo`]).
/// `mapping` is the version of the mappings applied (they depend on the account).
pub(super) fn memo_glance<'s>(
    route: Option<usize>,
    strict: bool,
    mapping: Option<&str>,
    legacy: &'s Side<'_>,
    candidate: &'s Side<'_>,
    cfg: &Config,
) -> Glance<'s> {
    // Each field length-prefixed, so that adjacent fields cannot run into each other.
    let mut head = Vec::with_capacity(64);
    let mut field = |v: &[u8]| {
        head.extend_from_slice(&(v.len() as u64).to_le_bytes());
        head.extend_from_slice(v);
    };
    field(&route.map_or(u64::MAX, |r| r as u64).to_le_bytes());
    field(&[u8::from(strict)]);
    field(mapping.unwrap_or("").as_bytes());
    let mut text = Vec::new();
    for side in [legacy, candidate] {
        field(&side.status.as_u16().to_le_bytes());
        let ce = side.headers.get(http::header::CONTENT_ENCODING);
        field(ce.map_or(&[][..], |v| v.as_bytes()));
        for n in &cfg.diff.headers {
            // As [`header_value`] reads it (its values joined by ", "), without building it;
            // absent (0xff: never in a header's text) and empty differ, as they compare.
            text.clear();
            let present = header_text(side.headers, n, &mut text);
            field(if present { &text } else { &[0xff] });
        }
    }
    Glance::new(head, &legacy.body, &candidate.body)
}

/// A hostile vendor's page: one member name of `name_len` bytes above `members` members, each
/// worth `v` (two pages of different `v` differ at every member).
#[cfg(test)]
fn long_name_page(name_len: usize, members: usize, v: u8) -> String {
    let members: Vec<String> = (0..members).map(|i| format!("\"m{i}\":{v}")).collect();
    format!("{{\"{}\":{{{}}}}}", "n".repeat(name_len), members.join(","))
}

#[cfg(test)]
mod memo_tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::shadow::memo::Memo;

    fn exchange(
        cfg: &Config,
        memo: &Memo<Compared>,
        candidate_body: &'static str,
        date: &str,
    ) -> crate::record::Record {
        exchange_of(cfg, memo, [b"{\"a\":1,", b"\"b\":2}"], candidate_body, date)
    }

    fn exchange_of(
        cfg: &Config,
        memo: &Memo<Compared>,
        legacy_body: [&'static [u8]; 2],
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
            serving: Default::default(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("date", date.parse().unwrap());
        let legacy = Legacy::Response {
            status: StatusCode::OK,
            headers: headers.clone(),
            ms: 1.0,
            body: Captured::Complete(legacy_body.map(Bytes::from_static).to_vec()),
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
            Some(Shared {
                memo,
                sampler: &BodySampler::default(),
                route: None,
                strict: false,
            }),
            Maps::default(),
        )
    }

    /// A pair of 40 KB whose result holds ~4 MB (a long member name above 50 differing
    /// members: each difference's pointer and pattern repeat the name) is not kept: the memo
    /// charges the result too. Before, only the bodies counted, and a hostile vendor's distinct
    /// pairs held ~340 MB each until the table was emptied.
    #[test]
    fn a_result_that_holds_too_much_is_not_kept() {
        // No bodies kept: a hit is reused as it is.
        let cfg = Config::parse("[store]\nbodies = \"never\"\n", None).unwrap();
        let memo = Memo::default();
        let page = |v| super::long_name_page(20_000, 50, v).leak();
        let (l, c): (&'static str, &'static str) = (page(1), page(2));
        let seen = || {
            exchange_of(
                &cfg,
                &memo,
                [l.as_bytes(), b""],
                c,
                "Mon, 01 Jan 2029 00:00:00 GMT",
            )
        };
        // Seen once (only its glance is remembered), then kept if ever (second), then reused.
        seen();
        let (first, second) = (seen(), seen());
        assert_eq!(first.diff_count, 50);
        assert!(
            !Arc::ptr_eq(&first.diffs, &second.diffs),
            "a 4 MB result was kept"
        );
    }

    /// The memo tells pairs apart by a compared header's text as the comparison reads it.
    #[test]
    fn a_headers_text_for_the_memo_is_the_compared_value() {
        let name = http::header::CONTENT_TYPE;
        let cases: [&[&[u8]]; 6] = [
            &[],
            &[b""],
            &[b"", b"b"],
            &[b"b"],
            &[b"a", b"b"],
            &[b"a", b"\xff", b"b"],
        ];
        for values in cases {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(&name, http::HeaderValue::from_bytes(v).unwrap());
            }
            let mut text = Vec::new();
            let present = header_text(&h, &name, &mut text);
            let want = header_value(&h, &name);
            assert_eq!(present, want.is_some(), "{values:?}");
            if let Some(Value::String(want)) = want {
                assert_eq!(text, want.as_bytes(), "{values:?}");
            }
        }
    }

    /// A pair is kept on its second sighting (the first only remembers its glance: distinct
    /// pages are not copied) and reused from its third.
    #[test]
    fn the_same_pair_reuses_the_result_and_another_pair_does_not() {
        let cfg = Config::parse("[store]\nbodies = \"always\"\n", None).unwrap();
        let memo = Memo::default();
        let seen = |date| exchange(&cfg, &memo, r#"{"a":1,"b":3}"#, date);
        let once = seen("Mon, 01 Jan 2029 00:00:00 GMT");
        let first = seen("Mon, 01 Jan 2029 00:00:00 GMT");
        assert!(
            !Arc::ptr_eq(&once.diffs, &first.diffs),
            "a pair seen once was kept"
        );
        let second = seen("Tue, 02 Jan 2029 00:00:00 GMT");
        assert_eq!(first.diff_count, 1);
        assert!(
            Arc::ptr_eq(&first.diffs, &second.diffs),
            "the third comparison was not reused"
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

#[cfg(test)]
mod presence_tests {
    use super::*;

    fn present(legacy: &'static str, candidate: &'static str) -> Arc<Vec<String>> {
        let cfg = Config::defaults();
        let headers = HeaderMap::new();
        let side = |body: &'static str| Side {
            status: StatusCode::OK,
            headers: &headers,
            body: Bytes::from_static(body.as_bytes()),
        };
        compare_bodies(&side(legacy), &side(candidate), &cfg.diff.rules, &cfg).present
    }

    #[test]
    fn pages_naming_the_same_fields_share_one_list_of_them() {
        let first = present(r#"{"a":1,"b":[{"c":2}]}"#, r#"{"a":1,"b":[{"c":3}]}"#);
        let second = present(r#"{"a":5,"b":[{"c":6}]}"#, r#"{"a":7,"b":[]}"#);
        assert_eq!(*first, ["/a", "/b", "/b/*", "/b/*/c"]);
        assert!(Arc::ptr_eq(&first, &second), "{first:?} / {second:?}");
        // Other fields, or the same in another order: a list of their own.
        let other = present(r#"{"b":[{"c":2}],"a":1}"#, r#"{"b":[],"a":1}"#);
        assert_eq!(*other, ["/b", "/b/*", "/b/*/c", "/a"]);
        assert!(!Arc::ptr_eq(&first, &other));
        // A thread remembers a few lists: the oldest is forgotten first, and an equal list
        // built after that is a new one with the same patterns.
        for name in ["d", "e", "f", "g"] {
            let body = format!(r#"{{"{name}":1}}"#).leak();
            assert_eq!(*present(body, body), [format!("/{name}")]);
        }
        let again = present(r#"{"a":1,"b":[{"c":2}]}"#, r#"{"a":1,"b":[{"c":2}]}"#);
        assert_eq!(again, first);
        assert!(!Arc::ptr_eq(&first, &again));
        // Nothing present: nothing remembered.
        assert!(present("1", "2").is_empty());
        // A list longer than a thread keeps is its own every time.
        let long = format!(r#"{{"{}":{{"a":1,"b":2}}}}"#, "n".repeat(30_000)).leak();
        let (a, b) = (present(long, long), present(long, long));
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert!(!Arc::ptr_eq(&a, &b), "a list of 90 KB was remembered");
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;

    /// A hostile vendor's pair: one 100,000-byte member name above 1,000 differing members
    /// (110 KB each). Every difference's pointer and pattern repeat the name: listed whole,
    /// ~200 MB from 220 KB of bodies. The comparison lists what its room holds and counts the
    /// rest; the record counts them in its `(other fields)` row.
    #[test]
    fn a_long_name_above_many_members_makes_a_bounded_result() {
        let page = |v| long_name_page(100_000, 1000, v);
        let got = compared(page(1), page(2));
        assert_eq!(got.outcome, Outcome::Diff);
        assert_eq!(got.diffs.len() + got.unlisted, 1000);
        let room = LISTING.room + diff::FREE_PATH_TEXT * got.diffs.len();
        let paths: usize = got
            .diffs
            .iter()
            .map(|d| d.pointer.len() + d.field.len())
            .sum();
        assert!(paths <= room, "{paths} bytes of paths, room {room}");
        assert!(got.unlisted > 900, "{} unlisted", got.unlisted);
        let present: usize = got.present.iter().map(String::len).sum();
        assert!(present <= diff::PATTERN_BYTES, "{present} bytes present");
        // The record: every difference counted, those not listed in the overflow row.
        let mut r = crate::store::test_record(std::time::UNIX_EPOCH);
        got.fill(&mut r);
        r.bound(3, 1024);
        let counts = r.counts();
        assert_eq!(counts.iter().map(|c| c.n).sum::<i64>(), 1000);
        let over = counts
            .iter()
            .find(|c| c.field == crate::record::OVERFLOW_FIELD);
        assert_eq!(over.map(|c| c.n), Some(got.unlisted as i64));
    }

    /// A recorded comparison lists what the store keeps of each (field pattern, kind): its
    /// first `[store] examples_per_field` differences; it counts the others under the pattern.
    /// The store gets the same rows as from the whole list (the benchmark harness's page: 103
    /// differences of 3 patterns).
    #[test]
    fn a_recorded_comparison_lists_what_the_store_keeps() {
        let headers = HeaderMap::new();
        let side = |body: &'static [u8]| Side {
            status: StatusCode::OK,
            headers: &headers,
            body: Bytes::from_static(body),
        };
        let (l, c) = (
            side(include_bytes!("../../benches/data/harness-legacy.json")),
            side(include_bytes!("../../benches/data/harness-candidate.json")),
        );
        for examples in [1, 3, 200] {
            let cfg = Config::parse(&format!("[store]\nexamples_per_field = {examples}\n"), None)
                .unwrap();
            let rules = &cfg.diff.rules;
            let some = compare_bodies(&l, &c, rules, &cfg);
            let every = compare_sides(
                &l,
                &c,
                rules,
                &cfg,
                Keep::Nothing,
                Maps::default(),
                &mut Unbounded,
            );
            assert_eq!(every.diffs.len(), 103);
            // 50 `manager_id` missing, 50 `manager_employee_id` extra, 3 `status` changed.
            let listed = 2 * examples.min(50) + examples.min(3);
            assert_eq!(some.diffs.len(), listed);
            assert_eq!(some.diff_count(), 103);
            let record = |c: &Compared| {
                let mut r = crate::store::test_record(std::time::UNIX_EPOCH);
                c.fill(&mut r);
                r.bound(examples, 1024);
                (r.counts().into_owned(), r.diffs)
            };
            assert_eq!(record(&some), record(&every), "{examples} per field");
        }
    }

    fn compared(legacy: String, candidate: String) -> Compared {
        let cfg = Config::defaults();
        let headers = HeaderMap::new();
        let side = |text: String| Side {
            status: StatusCode::OK,
            headers: &headers,
            body: Bytes::from(text),
        };
        compare_bodies(&side(legacy), &side(candidate), &cfg.diff.rules, &cfg)
    }

    /// Ordinary names, every value differing: none past the overflow row, however many (an
    /// outside review found 130,387 of 200,000 differences of one array in `(other fields)`
    /// when the room was a multiple of the bodies' bytes and charged every path). Past the
    /// store's examples they are counted under their pattern, not listed: the 10 MB page of a
    /// wrong mapping does not hold a few hundred bytes per value.
    #[test]
    fn a_page_of_ordinary_names_is_counted_whole_and_listed_in_part() {
        let page = |v: u8, tail: u8| {
            let items: Vec<String> = (0..50_000).map(|_| v.to_string()).collect();
            format!(
                r#"{{"organization_account":{{"usage_statistics":{{"daily_request_counts":[{}]}}}},"tail":{tail}}}"#,
                items.join(",")
            )
        };
        let got = compared(page(1, 1), page(2, 2));
        assert_eq!(got.outcome, Outcome::Diff);
        assert_eq!(got.diff_count(), 50_001);
        assert_eq!(got.unlisted, 0);
        // What the store keeps of each pattern (`examples_per_field`, 3): the array's first
        // three, the tail's one.
        let pointers: Vec<&str> = got.diffs.iter().map(|d| d.pointer.as_str()).collect();
        let pattern = "/organization_account/usage_statistics/daily_request_counts/*";
        let at = |i: usize| format!("{}/{i}", pattern.trim_end_matches("/*"));
        assert_eq!(pointers, [&at(0), &at(1), &at(2), "/tail"]);
        assert_eq!(
            got.counted
                .iter()
                .map(|c| (c.field.as_str(), c.n))
                .collect::<Vec<_>>(),
            [(pattern, 50_000 - 3)]
        );
        // The record counts every difference under its pattern, none in the overflow row.
        let mut r = crate::store::test_record(std::time::UNIX_EPOCH);
        got.fill(&mut r);
        r.bound(3, 1024);
        let counts: Vec<(String, i64)> =
            r.counts().iter().map(|c| (c.field.clone(), c.n)).collect();
        assert_eq!(
            counts,
            [(pattern.to_owned(), 50_000), ("/tail".to_owned(), 1)]
        );
        assert_eq!(r.diff_count, 50_001);
        assert_eq!(
            r.diffs.len(),
            4,
            "three examples of the array, one of the tail"
        );
    }

    /// The same documents list the same differences, whatever their whitespace: the store
    /// keeps bodies re-serialised, and rediff and `diff --exchange` compare those (the review
    /// found a pretty-printed pair recorded with 1,000 listed and recomputed with 401 unlisted).
    #[test]
    fn the_room_does_not_depend_on_whitespace() {
        let page = |v: u8, pretty: bool| {
            let text = long_name_page(3_000, 1000, v);
            let body: Value = serde_json::from_str(&text).unwrap();
            if pretty {
                let mut out = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(&[b' '; 40]);
                let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                serde::Serialize::serialize(&body, &mut ser).unwrap();
                String::from_utf8(out).unwrap()
            } else {
                text
            }
        };
        let compact = compared(page(1, false), page(2, false));
        let pretty = compared(page(1, true), page(2, true));
        assert!(compact.unlisted > 0 && !compact.diffs.is_empty());
        assert_eq!(
            (pretty.diffs.len(), pretty.unlisted),
            (compact.diffs.len(), compact.unlisted)
        );
    }
}
