//! The rollout gate: the thresholds of `[gate.PHASE]` checked against the store. A pipeline
//! promotes a phase (shadow → canary → ramp → GA) only when every criterion passes.
//!
//! Too few samples is a failure that says so, never a pass: `min_parity` and the rates fail when
//! nothing was compared, and when `min_compared` is not met the other criteria say why they
//! cannot be trusted.

use crate::config::GateConfig;
use crate::record::{Outcome, RouteKey};
use crate::report::{self, Counts, Filter, Report, ReportError};
use crate::store::Reader;

pub use crate::report::{Check, Verdict};

/// Evaluates `[gate.PHASE]` (with its per-route overrides) over the window of `filter`, with
/// the default classification settings.
pub fn evaluate(
    store: &dyn Reader,
    phase: &str,
    gate: &GateConfig,
    filter: &Filter,
) -> Result<Verdict, ReportError> {
    evaluate_with(
        store,
        phase,
        gate,
        filter,
        crate::classify::Settings::default(),
    )
}

/// [`evaluate`] with the config's classification settings (noise excluded from parity needs
/// `[diff.noise] min_count`).
pub fn evaluate_with(
    store: &dyn Reader,
    phase: &str,
    gate: &GateConfig,
    filter: &Filter,
    classes: crate::classify::Settings,
) -> Result<Verdict, ReportError> {
    let opts = report::Options {
        details: false,
        classes,
        references: std::sync::Arc::default(),
    };
    let report = report::build_with(store, filter, &opts)?;
    evaluate_on(store, phase, gate, filter, &report)
}

/// [`evaluate`] on a report already built over `filter` (with or without details): the
/// criteria that need more than the report read the store.
pub fn evaluate_on(
    store: &dyn Reader,
    phase: &str,
    gate: &GateConfig,
    filter: &Filter,
    report: &Report,
) -> Result<Verdict, ReportError> {
    let mut checks = Vec::new();
    // Overall: the routed exchanges (unmatched requests never count in a gate's parity).
    let routed = report::routed_totals(report);
    let overall = Scope {
        name: "all".into(),
        counts: &routed,
        latency: report::latency(store, filter, report.totals.exchanges)?,
        accepted: accepted_patterns(report, None),
    };
    check_scope(&mut checks, gate, &overall);
    if let Some(min) = gate.min_parity {
        served_parity(&mut checks, gate, min, &report.rollout);
    }
    if let Some(max) = gate.max_auth_error_accounts {
        let n = report.needs_reauth.len() as f64;
        checks.push(Check {
            criterion: "max_auth_error_accounts".into(),
            scope: "all".into(),
            threshold: max as f64,
            measured: Some(n),
            interval: None,
            pass: n <= max as f64,
            note: (!report.needs_reauth.is_empty())
                .then(|| format!("needs re-auth: {}", report.needs_reauth.join(", "))),
        });
    }
    if let Some(min) = gate.min_paired_ids {
        checks.push(paired_ids(min, &report.ids));
    }
    if let Some(n) = gate.min_field_samples {
        let routes: Vec<(RouteKey, u64)> = report
            .routes
            .iter()
            .map(|r| (RouteKey::parse(&r.route), r.counts.compared))
            .collect();
        checks.push(field_samples(store, filter, "all", &routes, n)?);
    }
    let empty = Counts::default();
    for (route, rg) in &gate.routes {
        if let Some(n) = rg.min_field_samples {
            let compared = route_counts(report, route).map_or(0, |c| c.compared);
            let key = RouteKey::named(route.clone());
            checks.push(field_samples(
                store,
                filter,
                &format!("route:{route}"),
                &[(key, compared)],
                n,
            )?);
        }
        let counts = route_counts(report, route).unwrap_or(&empty);
        let rf = Filter {
            route: Some(RouteKey::named(route.clone())),
            ..filter.clone()
        };
        let scope = Scope {
            name: format!("route:{route}"),
            counts,
            latency: report::latency(store, &rf, counts.exchanges)?,
            accepted: accepted_patterns(report, Some(route)),
        };
        // A route's override inherits how accepted patterns count.
        let rg = GateConfig {
            accepted: rg.accepted.or(gate.accepted),
            ..rg.clone()
        };
        check_scope(&mut checks, &rg, &scope);
    }
    Ok(Verdict {
        phase: phase.to_owned(),
        // A gate without a criterion is more likely a mistake than a wish to promote blindly.
        pass: !checks.is_empty() && checks.iter().all(|c| c.pass),
        window: report.window.clone(),
        checks,
    })
}

/// `min_paired_ids`: the least paired (account, kind) of the crosswalk. Nothing seen fails (a
/// gate that asks for pairs has none to show).
fn paired_ids(min: f64, ids: &[crate::store::IdCoverage]) -> Check {
    let worst = ids
        .iter()
        .min_by(|a, b| a.paired_rate.total_cmp(&b.paired_rate));
    let measured = worst.map(|w| w.paired_rate);
    Check {
        criterion: "min_paired_ids".into(),
        scope: "all".into(),
        threshold: min,
        measured,
        interval: None,
        pass: measured.is_some_and(|m| m >= min),
        note: Some(match worst {
            None => "no id pair learned yet ([ids])".into(),
            Some(w) => format!(
                "least paired: account {:?}, kind {}: {} pairs, {} legacy and {} candidate ids unpaired, {} conflicts",
                w.account, w.kind, w.paired, w.unpaired_legacy, w.unpaired_candidate, w.conflicts
            ),
        }),
    }
}

/// The verdicts of a config's gates on a report over `filter`: the rollout's phases in order,
/// then any other `[gate.NAME]`.
pub fn verdicts(
    store: &dyn Reader,
    cfg: &crate::config::Config,
    filter: &Filter,
    report: &Report,
) -> Result<Vec<Verdict>, ReportError> {
    let mut names: Vec<&String> = cfg
        .rollout
        .order
        .iter()
        .filter(|p| cfg.gates.contains_key(*p))
        .collect();
    names.extend(cfg.gates.keys().filter(|k| !cfg.rollout.order.contains(k)));
    names
        .into_iter()
        .map(|name| evaluate_on(store, name, &cfg.gates[name], filter, report))
        .collect()
}

/// Fields shown by name in a failing `min_field_samples` note at most.
const FIELDS_NAMED: usize = 5;

/// `min_field_samples`: every field pattern the routes compared in the window was present in at
/// least `n` compared exchanges. Measured: the fewest of any field (none compared: not
/// measured, a failure).
fn field_samples(
    store: &dyn Reader,
    filter: &Filter,
    scope: &str,
    routes: &[(RouteKey, u64)],
    n: u64,
) -> Result<Check, ReportError> {
    let mut fewest: Option<u64> = None;
    let mut under = Vec::new();
    let mut total_under = 0;
    for (key, compared) in routes {
        let cov = crate::coverage::route_coverage(store, filter, key, *compared, &[])?;
        for f in &cov.fields {
            fewest = Some(fewest.map_or(f.compared, |m| m.min(f.compared)));
        }
        for f in cov.under(n) {
            total_under += 1;
            if under.len() < FIELDS_NAMED {
                under.push(format!("{} {} ({})", cov.route, f.field, f.compared));
            }
        }
    }
    let note = match (fewest, total_under) {
        (None, _) => Some("no field compared in the window".to_owned()),
        (_, 0) => None,
        (_, k) => Some(format!(
            "{k} field pattern{} compared fewer than {n} times: {}{}",
            if k == 1 { "" } else { "s" },
            under.join(", "),
            if k > under.len() { ", …" } else { "" }
        )),
    };
    Ok(Check {
        criterion: "min_field_samples".into(),
        scope: scope.to_owned(),
        threshold: n as f64,
        measured: fewest.map(|f| f as f64),
        interval: None,
        pass: fewest.is_some() && total_under == 0,
        note,
    })
}

fn route_counts<'a>(r: &'a Report, route: &str) -> Option<&'a Counts> {
    r.routes
        .iter()
        .find(|x| x.route == route)
        .map(|x| &x.counts)
}

struct Scope<'a> {
    name: String,
    counts: &'a Counts,
    latency: report::Latency,
    /// The accepted patterns (not expired) of the scope, as the verdict names them.
    accepted: Vec<String>,
}

/// The patterns triaged `accepted` and not expired, of `route` (every route: `None`), named
/// for a verdict: `route /field kind (until …, ticket)`.
fn accepted_patterns(report: &Report, route: Option<&str>) -> Vec<String> {
    report
        .triage
        .iter()
        .filter(|t| !t.expired && t.mark.status == crate::triage::Status::Accepted)
        .filter(|t| route.is_none_or(|r| t.mark.pattern.route == r))
        .map(|t| {
            let m = &t.mark;
            let mut s = format!("{} {}", m.pattern.route_label(), m.pattern.field);
            if !m.pattern.kind.is_empty() {
                s.push(' ');
                s.push_str(&m.pattern.kind);
            }
            let mut extra = Vec::new();
            if let Some(e) = &m.expires {
                extra.push(format!("until {e}"));
            }
            if let Some(t) = &m.ticket {
                extra.push(t.clone());
            }
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            s
        })
        .collect()
}

/// `min_parity` on the candidate cohort's own exchanges (scope `served`), when the window has
/// any compared: each was compared as the caller received it, exact at every field but the
/// rules declared `serve_safe`, so an ignore rule cannot make a served phase look better than
/// what its callers got. Judged on the Wilson interval's lower bound like the other shares.
fn served_parity(out: &mut Vec<Check>, g: &GateConfig, min: f64, r: &report::RolloutSection) {
    if r.served_compared == 0 {
        return;
    }
    let confidence = g.confidence.unwrap_or(GateConfig::CONFIDENCE);
    let (k, n) = (r.served_matched, r.served_compared);
    let measured = k as f64 / n as f64;
    let interval = (confidence > 0.0)
        .then(|| crate::rollout::wilson(k, n, confidence))
        .flatten();
    let judged = interval.map_or(measured, |(lo, _)| lo);
    out.push(Check {
        criterion: "min_parity".into(),
        scope: "served".into(),
        threshold: min,
        measured: Some(measured),
        interval,
        pass: judged >= min,
        note: Some(format!(
            "strict parity of the candidate cohort: {k} of {n} compared exchanges equal at every field"
        )),
    });
}

fn check_scope(out: &mut Vec<Check>, g: &GateConfig, s: &Scope<'_>) {
    let c = s.counts;
    let too_few = g.min_compared.filter(|m| c.compared < *m);
    let few_note = too_few.map(|m| format!("too few samples: {} compared, {m} needed", c.compared));
    let confidence = g.confidence.unwrap_or(GateConfig::CONFIDENCE);
    // (successes, trials) of a share, and whether it is a minimum: the interval, and the
    // bound the decision rests on.
    let share = |k: u64, n: u64, minimum: bool| {
        let interval = (confidence > 0.0)
            .then(|| crate::rollout::wilson(k, n, confidence))
            .flatten();
        let bound = interval.map(|(lo, hi)| if minimum { lo } else { hi });
        (interval, bound)
    };
    let mut push = |criterion: &str,
                    threshold: f64,
                    measured: Option<f64>,
                    (interval, bound): (Option<(f64, f64)>, Option<f64>),
                    ok: fn(f64, f64) -> bool,
                    none: &str| {
        let judged = bound.or(measured);
        let pass = judged.is_some_and(|m| ok(m, threshold)) && too_few.is_none();
        let bound_note = match (bound, measured) {
            (Some(b), Some(m)) if ok(m, threshold) && !ok(b, threshold) => Some(format!(
                "the measured value passes, but not with {:.0}% confidence (bound {})",
                confidence * 100.0,
                fmt_num(b)
            )),
            _ => None,
        };
        let note = match measured {
            None => Some(none.to_owned()),
            Some(_) if criterion != "min_compared" => few_note.clone().or(bound_note),
            Some(_) => None,
        };
        out.push(Check {
            criterion: criterion.into(),
            scope: s.name.clone(),
            threshold,
            measured,
            interval,
            pass,
            note,
        });
    };
    if let Some(m) = g.min_compared {
        push(
            "min_compared",
            m as f64,
            Some(c.compared as f64),
            (None, None),
            |m, t| m >= t,
            "",
        );
    }
    if let Some(p) = g.min_parity {
        let exclude = g.accepted == Some(crate::config::Accepted::Exclude);
        let (measured, matching) = if exclude {
            (
                c.parity_excluding_accepted(),
                c.matched + c.noise_only + c.accepted_only,
            )
        } else {
            (c.parity, c.matched + c.noise_only)
        };
        let measured = (c.compared > 0).then_some(measured);
        push(
            "min_parity",
            p,
            measured,
            share(matching, c.compared, true),
            |m, t| m >= t,
            "too few samples: nothing compared",
        );
    }
    if let Some(r) = g.max_candidate_error_rate {
        let mirrored = c.mirrored();
        let errors = c.outcome(Outcome::CandidateError) + c.outcome(Outcome::CandidateTimeout);
        let measured = (mirrored > 0).then(|| errors as f64 / mirrored as f64);
        push(
            "max_candidate_error_rate",
            r,
            measured,
            share(errors, mirrored, false),
            |m, t| m <= t,
            "too few samples: nothing mirrored",
        );
    }
    if let Some(r) = g.max_latency_ratio {
        let l = &s.latency;
        let measured =
            (l.legacy_p99 > 0.0 && l.candidate_p99 > 0.0).then(|| l.candidate_p99 / l.legacy_p99);
        push(
            "max_latency_ratio",
            r,
            measured,
            (None, None),
            |m, t| m <= t,
            "too few samples: no latency measured",
        );
    }
    // What the triage did to min_parity, said in its verdict.
    let exclude = g.accepted == Some(crate::config::Accepted::Exclude);
    if g.min_parity.is_some() && (c.accepted_only > 0 || (exclude && !s.accepted.is_empty())) {
        let said = if exclude {
            format!(
                "accepted = \"exclude\": {} exchanges differing only at accepted patterns counted as matching: {}",
                c.accepted_only,
                s.accepted.join("; ")
            )
        } else {
            format!(
                "{} exchanges differ only at accepted patterns ({}): counted as differing (accepted = \"count\"; \"exclude\" counts them as matching until the marks expire)",
                c.accepted_only,
                s.accepted.join("; ")
            )
        };
        if let Some(check) = out
            .iter_mut()
            .rev()
            .find(|x| x.criterion == "min_parity" && x.scope == s.name)
        {
            check.note = Some(match check.note.take() {
                Some(n) => format!("{n}; {said}"),
                None => said,
            });
        }
    }
}

/// The verdict for people: one line per criterion.
pub fn text(v: &Verdict) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "gate {}: {} ({} → {}{})",
        v.phase,
        if v.pass { "PASS" } else { "FAIL" },
        v.window.from,
        v.window.to,
        crate::report::widened_note(&v.window)
    );
    let _ = writeln!(
        o,
        "  {:<26} {:<20} {:>10} {:>10} {:>17}  result",
        "criterion", "scope", "threshold", "measured", "interval"
    );
    for c in &v.checks {
        let measured = c.measured.map_or_else(|| "-".to_owned(), fmt_num);
        let interval = c
            .interval
            .map_or_else(|| "-".to_owned(), |(lo, hi)| format!("{lo:.4}..{hi:.4}"));
        let _ = writeln!(
            o,
            "  {:<26} {:<20} {:>10} {:>10} {:>17}  {}{}",
            c.criterion,
            c.scope,
            fmt_num(c.threshold),
            measured,
            interval,
            if c.pass { "pass" } else { "FAIL" },
            c.note
                .as_ref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
    if v.checks.is_empty() {
        let _ = writeln!(
            o,
            "  (no criterion configured for this phase: refusing to pass)"
        );
    }
    o
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}
