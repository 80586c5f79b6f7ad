//! Re-diffing recorded traffic: the kept documents of compared exchanges run through the
//! current (or a proposed) mapping chain and diff rules, and judged against what was recorded.
//! Nothing live is called. `shadowdiff rediff` prints it; `suggest` checks every fix it proposes
//! with it.
//!
//! What can be judged again, and how:
//! - only exchanges whose bodies were kept (`[store] bodies`), and, for an exchange a mapping
//!   reshaped, only when its documents were kept as they came (`candidate_raw`, `legacy_raw`:
//!   kept since this version; older ones are counted as `no_unmapped_body`);
//! - an exchange's verdict is its set of differing (field pattern, kind), leaving out fields
//!   learned as noise (as reports do) and fields whose values were redacted before they were
//!   kept (body fields, and compared headers the store redacts): a redacted value equals any
//!   other, so those differences are counted as not re-judged on both sides, never as fixed;
//! - recorded and re-diffed verdicts are compared on the same exchanges: `fixed` (differed,
//!   matches now), `broken` (matched, differs now or cannot be compared), `changed` (differs
//!   both times, at other fields).

pub mod edit;
pub mod suggest;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Route};
use crate::diff::Seg;
use crate::mapping::runner::Runner;
use crate::mapping::{Chain, Level};
use crate::record::{Outcome, RouteKey, UNMATCHED};
use crate::redact::REDACTED;
use crate::shadow::compare::{recompute_mapped, Maps};
use crate::store::{Filter, KeptPair, Reader, StoreError};

/// Exchanges read from the store per page.
const PAGE: usize = 256;
/// Exchange ids listed per route and list (fixed, broken, changed) at most.
pub const MAX_LISTED: usize = 50;

/// A (field pattern, kind) difference.
pub type FieldKind = (String, String);

/// The mapping chains a rediff runs instead of the configured ones, per route: the level named
/// `base` is replaced (or added first), environment and account levels stay on top.
#[derive(Debug, Clone, Default)]
pub struct Proposed {
    pub base: HashMap<String, Level>,
}

impl Proposed {
    /// The candidate chain of a route for an account under the proposal.
    fn chain(&self, route: &Route, account: Option<&str>) -> Option<Arc<Chain>> {
        let configured = route.mappings.candidate_for(account);
        let Some(level) = self.base.get(&route.name) else {
            return configured.cloned();
        };
        let mut levels: Vec<Level> = configured.map(|c| c.levels.clone()).unwrap_or_default();
        match levels.iter().position(|l| l.name == "base") {
            Some(i) => levels[i] = level.clone(),
            None => levels.insert(0, level.clone()),
        }
        Some(Arc::new(Chain::new(levels)))
    }
}

/// One exchange judged again.
#[derive(Debug, Clone)]
pub struct Judged {
    pub id: i64,
    pub route: Option<String>,
    pub recorded_version: Option<String>,
    pub version: Option<String>,
    pub recorded: BTreeSet<FieldKind>,
    /// The differences now, or why the kept documents cannot be compared now (an outcome
    /// and its reason: a mapping error, a document that is not JSON).
    pub now: Result<BTreeSet<FieldKind>, String>,
    /// Differences left out on either side because a value there was redacted.
    pub not_rejudged: u64,
}

impl Judged {
    pub fn recorded_match(&self) -> bool {
        self.recorded.is_empty()
    }

    pub fn now_match(&self) -> bool {
        self.now.as_ref().is_ok_and(BTreeSet::is_empty)
    }
}

/// How often a (field pattern, kind) differed, recorded and now, over the re-diffed exchanges.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub kind: String,
    pub recorded: u64,
    pub now: u64,
}

/// An exchange that matched and does not now.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub id: i64,
    /// The differences now, or why it cannot be compared.
    pub why: String,
}

/// One route's rediff.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RouteSummary {
    pub route: String,
    /// The mapping versions the exchanges were recorded with.
    pub recorded_versions: Vec<String>,
    /// The versions the rediff ran (one per account override in use).
    pub versions: Vec<String>,
    pub exchanges: u64,
    pub recorded_matched: u64,
    pub matched: u64,
    pub recorded_parity: f64,
    pub parity: f64,
    pub fixed_count: u64,
    pub broken_count: u64,
    pub changed_count: u64,
    /// The first [`MAX_LISTED`] ids of each list.
    pub fixed: Vec<i64>,
    pub broken: Vec<Broken>,
    pub changed: Vec<i64>,
    /// Every (field, kind) that differed recorded or now, the largest change first.
    pub fields: Vec<FieldChange>,
    /// Exchanges that cannot be compared now, per outcome.
    pub errors: BTreeMap<String, u64>,
    pub not_rejudged: u64,
}

/// A rediff over a window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub exchanges: u64,
    pub routes: Vec<RouteSummary>,
    /// Kept exchanges that could not be re-diffed, per reason.
    pub skipped: BTreeMap<String, u64>,
}

impl Summary {
    /// The route's summary (by name, or [`UNMATCHED`]).
    pub fn route(&self, name: &str) -> Option<&RouteSummary> {
        self.routes.iter().find(|r| r.route == name)
    }
}

/// Re-diffs exchanges under a configuration.
pub struct Rediff<'a> {
    pub cfg: &'a Config,
    pub runner: &'a Runner,
    pub proposed: Proposed,
    /// Learned noise fields per route (left out of both verdicts, as reports do).
    noise: HashMap<Option<String>, HashSet<String>>,
    /// The store's id crosswalk (`[ids]`), read once: kept exchanges are judged with the pairs
    /// known now.
    ids: Option<crate::ids::Crosswalk>,
    pub workers: usize,
}

impl<'a> Rediff<'a> {
    pub fn new(cfg: &'a Config, runner: &'a Runner, proposed: Proposed) -> Self {
        Self {
            cfg,
            runner,
            proposed,
            noise: HashMap::new(),
            ids: None,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }

    /// Reads the learned noise of the routes of `pairs` not read yet (and, once, the id
    /// crosswalk's pairs).
    pub fn learn_noise(
        &mut self,
        reader: &dyn Reader,
        pairs: &[KeptPair],
    ) -> Result<(), StoreError> {
        if self.ids.is_none() && !self.cfg.ids.is_empty() {
            let cw = crate::ids::Crosswalk::new();
            for pair in reader.id_pairs(usize::MAX)? {
                let max = self
                    .cfg
                    .ids
                    .iter()
                    .find(|k| k.name == pair.kind)
                    .map_or(crate::ids::DEFAULT_MAX_PAIRS, |k| k.max_pairs);
                cw.adopt(&pair, max);
            }
            self.ids = Some(cw);
        }
        for p in pairs {
            if self.noise.contains_key(&p.route) {
                continue;
            }
            let fields = reader
                .learned_noise(
                    &RouteKey::from_route(p.route.as_deref()),
                    self.cfg.diff.noise.min_count,
                )?
                .into_iter()
                .map(|n| n.field)
                .collect();
            self.noise.insert(p.route.clone(), fields);
        }
        Ok(())
    }

    /// Re-diffs the window's kept exchanges, page by page.
    pub fn run(&mut self, reader: &dyn Reader, filter: &Filter) -> Result<Summary, StoreError> {
        let mut acc = Accumulator::default();
        let mut after = 0;
        loop {
            let page = reader.kept_pairs(filter, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            self.learn_noise(reader, &page)?;
            for j in self.judge_all(&page) {
                acc.add(j);
            }
        }
        Ok(acc.finish())
    }

    /// Re-diffs pairs already read (`suggest` runs many proposals over the same pairs).
    pub fn run_pairs(
        &mut self,
        reader: &dyn Reader,
        pairs: &[KeptPair],
    ) -> Result<Summary, StoreError> {
        self.learn_noise(reader, pairs)?;
        let mut acc = Accumulator::default();
        for j in self.judge_all(pairs) {
            acc.add(j);
        }
        Ok(acc.finish())
    }

    /// Judges pairs on `workers` threads (mappings run in worker processes; each thread waits
    /// on one at a time).
    pub fn judge_all(&self, pairs: &[KeptPair]) -> Vec<Result<Judged, &'static str>> {
        let chunk = pairs.len().div_ceil(self.workers.max(1)).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().map(|p| self.judge(p)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }

    /// Judges one kept exchange again; the error is why it cannot be (a skip reason).
    pub fn judge(&self, p: &KeptPair) -> Result<Judged, &'static str> {
        let route = match &p.route {
            None => None,
            Some(name) => Some(
                self.cfg
                    .routes
                    .iter()
                    .find(|r| &r.name == name)
                    .ok_or("route_not_in_config")?,
            ),
        };
        let rules = route.map_or(&self.cfg.diff.rules, |r| &r.rules);
        let (l_raw, c_raw) = (p.side("legacy_raw"), p.side("candidate_raw"));
        if crate::mapping::mapped(p.mapping_version.as_deref())
            && l_raw.is_none()
            && c_raw.is_none()
        {
            return Err("no_unmapped_body");
        }
        let legacy = l_raw.or_else(|| p.side("legacy")).ok_or("body_missing")?;
        let candidate = c_raw
            .or_else(|| p.side("candidate"))
            .ok_or("body_missing")?;
        let chain = route.and_then(|r| self.proposed.chain(r, p.account.as_deref()));
        let account = p.account.clone().unwrap_or_default();
        let maps = Maps {
            ids: match (&self.ids, route) {
                (Some(cw), Some(r)) if !r.ids.is_empty() => Some(crate::shadow::compare::Ids {
                    crosswalk: cw,
                    account: &account,
                    route: &r.ids,
                    kinds: &self.cfg.ids,
                }),
                _ => None,
            },
            paging: route.and_then(|r| r.paging.as_ref()),
            candidate: chain.as_deref(),
            legacy: route.and_then(|r| r.mappings.legacy.as_deref()),
            request: route
                .and_then(|r| r.candidate.request.as_ref())
                .map(|r| &*r.chain),
            rules: route
                .map_or(&self.cfg.diff.rules_version, |r| &r.rules_version)
                .as_deref(),
            runner: Some(self.runner),
            timeout: self.cfg.mappings.timeout,
            premapped: None,
        };
        let version = maps.version();
        let compared = recompute_mapped(legacy, candidate, rules, self.cfg, maps);
        let noise = self.noise.get(&p.route);
        let mut redacted = Vec::new();
        // Only a kept text that holds the placeholder at all is parsed again for it.
        let texts = p
            .sides
            .iter()
            .filter(|(n, _)| n != "request")
            .filter_map(|(_, s)| s.body.as_deref());
        for text in texts.filter(|t| t.contains(REDACTED)) {
            if let Ok(doc) = crate::diff::parse_json(text.as_bytes()) {
                redacted_patterns(&doc, &mut Vec::new(), &mut redacted);
            }
        }
        let mut not_rejudged = 0;
        let redact_headers = &self.cfg.store.redact_headers;
        let mut keep = |field: &str, redacted_value: bool| {
            if noise.is_some_and(|n| n.contains(field)) {
                return false;
            }
            if redacted_value
                || redacted.iter().any(|r| under(field, r))
                || redacted_header(field, redact_headers)
            {
                not_rejudged += 1;
                return false;
            }
            true
        };
        let recorded: BTreeSet<FieldKind> = p
            .fields
            .iter()
            .filter(|(f, _, _)| keep(f, false))
            .map(|(f, k, _)| (f.clone(), k.clone()))
            .collect();
        let now = match compared.outcome {
            Outcome::Match | Outcome::Diff => Ok(fields_now(
                &compared,
                self.cfg.store.max_value_len,
                &mut keep,
            )),
            o => Err(match &compared.reason {
                Some(r) => format!("{}: {r}", o.as_str()),
                None => o.as_str().to_owned(),
            }),
        };
        Ok(Judged {
            id: p.id,
            route: p.route.clone(),
            recorded_version: p.mapping_version.clone(),
            version,
            recorded,
            now,
            not_rejudged,
        })
    }
}

impl Rediff<'_> {
    /// An exchange whose candidate could not answer now (`shadowdiff replay`): its recorded
    /// differences (as [`Rediff::judge`] counts them), and `why` as the verdict now.
    pub fn judge_failed(&self, p: &KeptPair, why: String) -> Judged {
        let noise = self.noise.get(&p.route);
        let mut redacted = Vec::new();
        for text in p
            .sides
            .iter()
            .filter(|(n, _)| n != "request")
            .filter_map(|(_, s)| s.body.as_deref())
        {
            if text.contains(REDACTED) {
                if let Ok(doc) = crate::diff::parse_json(text.as_bytes()) {
                    redacted_patterns(&doc, &mut Vec::new(), &mut redacted);
                }
            }
        }
        let recorded = p
            .fields
            .iter()
            .filter(|(f, _, _)| {
                !noise.is_some_and(|n| n.contains(f))
                    && !redacted.iter().any(|r| under(f, r))
                    && !redacted_header(f, &self.cfg.store.redact_headers)
            })
            .map(|(f, k, _)| (f.clone(), k.clone()))
            .collect();
        Judged {
            id: p.id,
            route: p.route.clone(),
            recorded_version: p.mapping_version.clone(),
            version: None,
            recorded,
            now: Err(why),
            not_rejudged: 0,
        }
    }
}

/// Adds judged exchanges (or why one could not be) up per route.
pub fn summarize(judged: impl IntoIterator<Item = Result<Judged, &'static str>>) -> Summary {
    let mut acc = Accumulator::default();
    for j in judged {
        acc.add(j);
    }
    acc.finish()
}

fn is_redacted(v: &Option<Value>) -> bool {
    matches!(v, Some(Value::String(s)) if s == REDACTED)
}

/// Whether field pattern `field` is `pattern` or beneath it.
fn under(field: &str, pattern: &str) -> bool {
    field
        .strip_prefix(pattern)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The field patterns of a document's redacted values.
fn redacted_patterns<'a>(v: &'a Value, path: &mut Vec<Seg<'a>>, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s == REDACTED => {
            let p = crate::diff::glob::field_pattern(path);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Value::Object(o) => {
            for (k, c) in o {
                path.push(Seg::Key(k));
                redacted_patterns(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                redacted_patterns(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Whether `field` is a compared header whose values the store keeps redacted (`@header/NAME`,
/// `[store] redact_headers`): both sides read `[redacted]` when judged again, so its difference
/// cannot be judged again, as a redacted value in a body cannot.
fn redacted_header(field: &str, redact: &[http::HeaderName]) -> bool {
    field
        .strip_prefix("@header/")
        .is_some_and(|name| crate::redact::is_redacted_header(name, redact))
}

/// Adds judged exchanges up per route.
#[derive(Default)]
struct Accumulator {
    routes: BTreeMap<String, RouteAcc>,
    skipped: BTreeMap<String, u64>,
    exchanges: u64,
}

#[derive(Default)]
struct RouteAcc {
    s: RouteSummary,
    recorded_versions: BTreeSet<String>,
    versions: BTreeSet<String>,
    fields: BTreeMap<FieldKind, (u64, u64)>,
}

impl Accumulator {
    fn add(&mut self, j: Result<Judged, &'static str>) {
        let j = match j {
            Ok(j) => j,
            Err(reason) => {
                *self.skipped.entry(reason.to_owned()).or_default() += 1;
                return;
            }
        };
        self.exchanges += 1;
        let name = j.route.clone().unwrap_or_else(|| UNMATCHED.to_owned());
        let r = self.routes.entry(name.clone()).or_default();
        r.s.route = name;
        r.s.exchanges += 1;
        r.s.not_rejudged += j.not_rejudged;
        r.recorded_versions.extend(j.recorded_version.clone());
        r.versions.extend(j.version.clone());
        // An exchange that cannot be compared now counts in `errors`, not in the field table
        // (its recorded differences did not go away).
        if let Ok(now) = &j.now {
            for fk in &j.recorded {
                r.fields.entry(fk.clone()).or_default().0 += 1;
            }
            for fk in now {
                r.fields.entry(fk.clone()).or_default().1 += 1;
            }
        }
        if let Err(e) = &j.now {
            let outcome = e.split(':').next().unwrap_or(e).to_owned();
            *r.s.errors.entry(outcome).or_default() += 1;
        }
        let (was, is) = (j.recorded_match(), j.now_match());
        r.s.recorded_matched += u64::from(was);
        r.s.matched += u64::from(is);
        let list = |v: &mut Vec<i64>, id| {
            if v.len() < MAX_LISTED {
                v.push(id);
            }
        };
        match (was, is) {
            (false, true) => {
                r.s.fixed_count += 1;
                list(&mut r.s.fixed, j.id);
            }
            (true, false) => {
                r.s.broken_count += 1;
                if r.s.broken.len() < MAX_LISTED {
                    let why = match &j.now {
                        Ok(now) => now
                            .iter()
                            .map(|(f, k)| format!("{f} {k}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        Err(e) => e.clone(),
                    };
                    r.s.broken.push(Broken { id: j.id, why });
                }
            }
            (false, false) if j.now.as_ref().ok() != Some(&j.recorded) => {
                r.s.changed_count += 1;
                list(&mut r.s.changed, j.id);
            }
            _ => {}
        }
    }

    fn finish(self) -> Summary {
        let routes = self
            .routes
            .into_values()
            .map(|mut r| {
                let n = r.s.exchanges.max(1) as f64;
                r.s.recorded_parity = r.s.recorded_matched as f64 / n;
                r.s.parity = r.s.matched as f64 / n;
                r.s.recorded_versions = r.recorded_versions.into_iter().collect();
                r.s.versions = r.versions.into_iter().collect();
                let mut fields: Vec<FieldChange> = r
                    .fields
                    .into_iter()
                    .map(|((field, kind), (recorded, now))| FieldChange {
                        field,
                        kind,
                        recorded,
                        now,
                    })
                    .collect();
                fields.sort_by(|a, b| {
                    b.recorded
                        .abs_diff(b.now)
                        .cmp(&a.recorded.abs_diff(a.now))
                        .then_with(|| b.recorded.max(b.now).cmp(&a.recorded.max(a.now)))
                        .then_with(|| a.field.cmp(&b.field))
                });
                r.s.fields = fields;
                r.s
            })
            .collect();
        Summary {
            exchanges: self.exchanges,
            routes,
            skipped: self.skipped,
        }
    }
}

/// The (field pattern, kind) pairs of a comparison as the store records them (its
/// [`crate::record::field_counts`] rows: 1,000 at most, the `(other fields)` row counting the
/// rest and those only counted; patterns cut to `max_value_len` bytes), those `keep` keeps:
/// given the field and whether a value of it was redacted, called for each listed difference (a
/// row is kept when one of its differences is), and for a row without one by its field alone.
fn fields_now(
    compared: &crate::shadow::compare::Compared,
    max_value_len: usize,
    keep: &mut impl FnMut(&str, bool) -> bool,
) -> BTreeSet<FieldKind> {
    let mut judged: std::collections::HashMap<(&str, &'static str), bool> =
        std::collections::HashMap::new();
    for d in compared.diffs.iter() {
        let kept = keep(
            &d.field,
            is_redacted(&d.legacy) || is_redacted(&d.candidate),
        );
        *judged
            .entry((d.field.as_str(), d.kind.as_str()))
            .or_default() |= kept;
    }
    let rows = crate::record::field_counts(&compared.diffs, &compared.counted, compared.unlisted);
    let kept = rows
        .into_iter()
        .filter(|r| match judged.get(&(r.field.as_str(), r.kind)) {
            Some(&kept) => kept,
            None => keep(&r.field, false),
        })
        .collect();
    crate::record::cut_counts(kept, max_value_len)
        .into_iter()
        .map(|r| (r.field, r.kind.to_owned()))
        .collect()
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    /// An exchange that cannot be compared now (a replayed candidate that failed) counts in
    /// `errors`; its recorded differences are not shown as gone from the field table.
    #[test]
    fn an_exchange_failing_now_does_not_fix_its_fields() {
        let j = Judged {
            id: 1,
            route: Some("p".into()),
            recorded_version: None,
            version: None,
            recorded: [("/status".to_owned(), "changed".to_owned())].into(),
            now: Err("candidate_error: refused".into()),
            not_rejudged: 0,
        };
        let s = summarize([Ok(j)]);
        let r = s.route("p").unwrap();
        assert!(r.fields.is_empty(), "{:?}", r.fields);
        assert_eq!(r.errors.get("candidate_error"), Some(&1));
        assert_eq!(r.changed_count, 1);
    }

    /// What rediff sees now of a comparison that counted differences without listing them:
    /// the patterns counted past the listed bound, and the `(other fields)` row for those only
    /// counted, as the store recorded them.
    #[test]
    fn fields_counted_and_not_listed_are_seen_now() {
        let cfg = crate::config::Config::defaults();
        let headers = http::HeaderMap::new();
        let side = |v: serde_json::Value| crate::shadow::compare::Side {
            status: http::StatusCode::OK,
            headers: &headers,
            body: bytes::Bytes::from(v.to_string()),
        };
        let long = "n".repeat(100_000);
        let page = |v: u8| {
            let members: serde_json::Map<String, serde_json::Value> =
                (0..100).map(|i| (format!("m{i}"), v.into())).collect();
            serde_json::json!({"days": vec![v; 12_000], &long: members})
        };
        let c = crate::shadow::compare::compare_bodies(
            &side(page(1)),
            &side(page(2)),
            &cfg.diff.rules,
            &cfg,
        );
        assert!(!c.counted.is_empty() && c.unlisted > 0, "{:?}", c.counted);
        let now = fields_now(&c, usize::MAX, &mut |_, _| true);
        assert!(now.contains(&("/days/*".to_owned(), "changed".to_owned())));
        assert!(now.contains(&(
            crate::record::OVERFLOW_FIELD.to_owned(),
            crate::record::OVERFLOW_KIND.to_owned()
        )));
        // What `keep` drops is not seen.
        assert!(fields_now(&c, usize::MAX, &mut |_, _| false).is_empty());
        // More patterns than the store keeps rows: its 999 and the overflow row, as recorded
        // (an unchanged config's rediff found exchanges "changed", or "fixed" when they were
        // noise).
        let wide = |v: u8| {
            let members: serde_json::Map<String, serde_json::Value> =
                (0..1500).map(|i| (format!("m{i:04}"), v.into())).collect();
            serde_json::Value::Object(members)
        };
        let c = crate::shadow::compare::compare_bodies(
            &side(wide(1)),
            &side(wide(2)),
            &cfg.diff.rules,
            &cfg,
        );
        let now = fields_now(&c, usize::MAX, &mut |_, _| true);
        assert_eq!(now.len(), crate::record::MAX_FIELD_ROWS);
        assert!(now.contains(&(
            crate::record::OVERFLOW_FIELD.to_owned(),
            crate::record::OVERFLOW_KIND.to_owned()
        )));
        let noise = fields_now(&c, usize::MAX, &mut |f, _| !f.starts_with("/m"));
        assert_eq!(noise.len(), 1, "{noise:?}");
        // Patterns longer than `max_value_len` as the store keeps them: cut, those cut alike
        // one row (an unchanged config's rediff found such exchanges "changed").
        let cut = fields_now(&c, 3, &mut |_, _| true);
        assert!(
            cut.contains(&("/m0…[cut]".to_owned(), "changed".to_owned())),
            "{cut:?}"
        );
        assert_eq!(cut.len(), 2, "{cut:?}");
    }
}
