//! `rediff` and `suggest`: the mapping loop on recorded traffic.

use super::*;
use crate::rediff::{Proposed, Rediff, RouteSummary, Summary};

/// What `rediff` reads and where its proposal comes from.
pub(super) struct RediffArgs {
    pub since: Option<std::time::Duration>,
    pub route: Option<String>,
    pub mappings: Option<PathBuf>,
    pub format: GateFormat,
    pub record: bool,
    pub db: Option<PathBuf>,
}

/// The proposal of `--mappings DIR`: each route's `DIR/<route>.jsonata|jq` as its base level.
fn proposed(cfg: &Config, dir: Option<&Path>) -> anyhow::Result<Proposed> {
    let mut p = Proposed::default();
    let Some(dir) = dir else { return Ok(p) };
    if !dir.is_dir() {
        return Err(UsageError(format!("--mappings {}: not a folder", dir.display())).into());
    }
    for r in &cfg.routes {
        if let Some(level) = crate::mapping::proposed_base(dir, &r.name).map_err(UsageError)? {
            p.base.insert(r.name.clone(), level);
        }
    }
    if p.base.is_empty() {
        return Err(UsageError(format!(
            "--mappings {}: no <route>.jsonata or <route>.jq for any route of the config",
            dir.display()
        ))
        .into());
    }
    Ok(p)
}

/// Keeps a rediff's (or a replay's) result in the store: one `rediffs` row per route.
pub(super) fn record_summary(
    location: &store::Location,
    summary: &Summary,
    source: &str,
    (from, to): (SystemTime, SystemTime),
) -> anyhow::Result<()> {
    let at = rfc3339(SystemTime::now());
    let rows: Vec<store::RediffRow> = summary
        .routes
        .iter()
        .map(|r| store::RediffRow {
            at: at.clone(),
            route: r.route.clone(),
            mapping_version: (!r.versions.is_empty()).then(|| r.versions.join(",")),
            window_from: rfc3339(from),
            window_to: rfc3339(to),
            exchanges: r.exchanges,
            recorded_matched: r.recorded_matched,
            matched: r.matched,
            fixed: r.fixed_count,
            broken: r.broken_count,
            source: source.to_owned(),
            detail: json!({
                "fields": r.fields,
                "fixed": r.fixed,
                "broken": r.broken,
                "changed": r.changed,
            }),
        })
        .collect();
    store::record_rediffs(location, &rows)
        .with_context(|| format!("recording the result in {location}"))
}

pub(super) fn rediff_cmd(config: &Path, explicit: bool, a: RediffArgs) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    if let Some(r) = &a.route {
        if r != crate::record::UNMATCHED && !cfg.routes.iter().any(|x| &x.name == r) {
            return Err(UsageError(format!("no route named {r:?} in {}", config.display())).into());
        }
    }
    let location = super::store_location(a.db, &cfg);
    let store = open_existing(&location)?;
    let (from, to) = window(a.since, None, None);
    let filter = store::Filter {
        from,
        to,
        route: a.route.as_deref().map(RouteKey::parse),
        account: None,
        mapping_version: None,
    };
    let proposal = proposed(&cfg, a.mappings.as_deref())?;
    let runner = crate::mapping::runner::Runner::for_this_binary(cfg.mappings.workers)?;
    let started = std::time::Instant::now();
    let summary = Rediff::new(&cfg, &runner, proposal).run(&*store, &filter)?;
    let took = started.elapsed();
    let source = match &a.mappings {
        Some(d) => format!("mappings {}", d.display()),
        None => format!("config {}", config.display()),
    };
    if a.record && summary.exchanges > 0 {
        record_summary(&location, &summary, &source, (from, to))?;
    }
    let broken: u64 = summary.routes.iter().map(|r| r.broken_count).sum();
    match a.format {
        GateFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "window": {"from": rfc3339(from), "to": rfc3339(to)},
                "source": source,
                "recorded": a.record && summary.exchanges > 0,
                "seconds": took.as_secs_f64(),
                "summary": summary,
            }))?
        ),
        GateFormat::Text => {
            let skipped: u64 = summary.skipped.values().sum();
            outln!(
                "rediff of the last {} with the mappings and rules of {source}: {} kept exchange{} judged again in {:.2} s{}",
                humantime::format_duration(a.since.unwrap_or(DEFAULT_WINDOW)),
                summary.exchanges,
                if summary.exchanges == 1 { "" } else { "s" },
                took.as_secs_f64(),
                skipped_text(&summary, skipped)
            );
            if summary.exchanges == 0 {
                outln!("nothing to re-diff: no compared exchange kept its bodies in the window (see [store] bodies)");
            } else {
                print_summary(&summary, a.record);
            }
        }
    }
    Ok(if broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// `, N skipped (reason n, ...)`, or nothing.
pub(super) fn skipped_text(s: &Summary, skipped: u64) -> String {
    if skipped == 0 {
        return String::new();
    }
    format!(
        ", {skipped} skipped ({})",
        s.skipped
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Every route of a rediff's (or a replay's) result.
pub(super) fn print_summary(s: &Summary, record: bool) {
    for r in &s.routes {
        print_route(r);
    }
    if record {
        outln!("recorded in the store (rediffs)");
    }
}

fn print_route(r: &RouteSummary) {
    outln!("");
    outln!(
        "route {}: mapping {} -> {}",
        r.route,
        if r.recorded_versions.is_empty() {
            "none".to_owned()
        } else {
            r.recorded_versions.join(",")
        },
        if r.versions.is_empty() {
            "none".to_owned()
        } else {
            r.versions.join(",")
        }
    );
    outln!(
        "  parity {} -> {} over {} exchanges: {} fixed, {} broken, {} changed",
        pct(r.recorded_parity),
        pct(r.parity),
        r.exchanges,
        r.fixed_count,
        r.broken_count,
        r.changed_count
    );
    if !r.errors.is_empty() {
        outln!(
            "  cannot be compared now: {}",
            r.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if r.not_rejudged > 0 {
        outln!(
            "  {} difference{} at redacted values not re-judged",
            r.not_rejudged,
            if r.not_rejudged == 1 { "" } else { "s" }
        );
    }
    if !r.fields.is_empty() {
        let w = r
            .fields
            .iter()
            .map(|f| f.field.len())
            .max()
            .unwrap_or(5)
            .max(5);
        outln!(
            "  {:<w$}  {:<8}  {:>8}  {:>8}",
            "field",
            "kind",
            "recorded",
            "now"
        );
        for f in &r.fields {
            let mark = match f.recorded.cmp(&f.now) {
                std::cmp::Ordering::Greater if f.now == 0 => "  fixed",
                std::cmp::Ordering::Less if f.recorded == 0 => "  new",
                _ => "",
            };
            outln!(
                "  {:<w$}  {:<8}  {:>8}  {:>8}{mark}",
                f.field,
                f.kind,
                f.recorded,
                f.now
            );
        }
    }
    let ids = |v: &[i64], n: u64| {
        let mut s = v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        if n > v.len() as u64 {
            s.push_str(&format!(", … ({n} in all)"));
        }
        s
    };
    if r.fixed_count > 0 {
        outln!("  fixed: {}", ids(&r.fixed, r.fixed_count));
    }
    if r.changed_count > 0 {
        outln!("  changed: {}", ids(&r.changed, r.changed_count));
    }
    for b in &r.broken {
        outln!("  broken: exchange {}: {}", b.id, b.why);
    }
    if r.broken_count > r.broken.len() as u64 {
        outln!("  broken: … ({} in all)", r.broken_count);
    }
}

/// What `suggest` reads.
pub(super) struct SuggestArgs {
    pub route: String,
    pub since: Option<std::time::Duration>,
    pub format: GateFormat,
    pub out: Option<PathBuf>,
    pub limit: usize,
    pub db: Option<PathBuf>,
}

pub(super) fn suggest_cmd(
    config: &Path,
    explicit: bool,
    a: SuggestArgs,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let route = cfg
        .routes
        .iter()
        .find(|r| r.name == a.route)
        .ok_or_else(|| {
            UsageError(format!(
                "no route named {:?} in {}",
                a.route,
                config.display()
            ))
        })?;
    let store = open_existing(&super::store_location(a.db, &cfg))?;
    let (from, to) = window(a.since, None, None);
    let filter = store::Filter {
        from,
        to,
        route: Some(RouteKey::named(&route.name)),
        account: None,
        mapping_version: None,
    };
    let mut pairs = Vec::new();
    let mut after = 0;
    while pairs.len() < a.limit {
        let page = store.kept_pairs(&filter, after, 256.min(a.limit - pairs.len()))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        pairs.extend(page);
    }
    let runner = crate::mapping::runner::Runner::for_this_binary(cfg.mappings.workers)?;
    let started = std::time::Instant::now();
    let s = crate::rediff::suggest::suggest(&cfg, &runner, &*store, route, &pairs).map_err(
        |e| match e {
            crate::rediff::suggest::SuggestError::NoMapping(_) => {
                anyhow::Error::from(UsageError(e.to_string()))
            }
            e => e.into(),
        },
    )?;
    let took = started.elapsed();
    let written = match (&a.out, &s.combined) {
        (Some(dir), Some(c)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let ext = crate::mapping::Lang::parse(c.lang).map_or("jsonata", |l| l.ext());
            let path = dir.join(format!("{}.{ext}", route.name));
            std::fs::write(&path, &c.source)
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        _ => None,
    };
    match a.format {
        GateFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "seconds": took.as_secs_f64(),
                "written": written,
                "suggestions": s,
            }))?
        ),
        GateFormat::Text => print_suggestions(&s, took, written.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

fn value(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), serde_json::Value::to_string)
}

fn print_suggestions(
    s: &crate::rediff::suggest::Suggestions,
    took: std::time::Duration,
    written: Option<&Path>,
) {
    use crate::rediff::suggest::Fix;
    outln!(
        "route {}: {} kept exchange{} read, {} systematic difference{} ({:.2} s)",
        s.route,
        s.exchanges,
        if s.exchanges == 1 { "" } else { "s" },
        s.suggestions.len(),
        if s.suggestions.len() == 1 { "" } else { "s" },
        took.as_secs_f64()
    );
    if s.unreadable > 0 {
        outln!(
            "{} kept exchange{} could not be used (a kept text that is not JSON, a mapping that fails on it, or no document as it came)",
            s.unreadable,
            if s.unreadable == 1 { "" } else { "s" }
        );
    }
    if s.exchanges == 0 {
        outln!("nothing to learn from: no compared exchange of the route kept its bodies (see [store] bodies)");
    }
    for g in &s.suggestions {
        outln!("");
        outln!(
            "{} {}: in {} of {} kept exchanges with the field",
            g.field,
            g.kind,
            g.differing,
            g.present
        );
        for e in &g.examples {
            outln!(
                "  exchange {} at {}: legacy {}, candidate {}",
                e.exchange,
                e.pointer,
                value(e.legacy.as_ref()),
                value(e.candidate.as_ref())
            );
        }
        let what = match &g.fix {
            Fix::Path { found_at, expr } => format!(
                "the value is in the candidate's document at {found_at}: read it with {expr}"
            ),
            Fix::Lowercase => "the candidate's value in lower case".to_owned(),
            Fix::Uppercase => "the candidate's value in upper case".to_owned(),
            Fix::Number => "a number the candidate sends as a string".to_owned(),
            Fix::String => "a string the candidate sends as a number".to_owned(),
            Fix::Date => "a date the candidate sends with a time: its first ten characters".to_owned(),
            Fix::Lookup { pairs } => format!(
                "a translation of {} value{}: {}",
                pairs.len(),
                if pairs.len() == 1 { "" } else { "s" },
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k:?} -> {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Fix::NotInCandidate => "the candidate never returns it (in no form, in none of the kept documents): no mapping can fill it; a gap to report to the vendor".to_owned(),
            Fix::None { why } => why.clone(),
        };
        outln!("  => {what}");
        if let (Some(c), Some(k)) = (&g.change, &g.checked) {
            for line in c.diff.lines() {
                outln!("  {line}");
            }
            outln!(
                "  checked by rediff over {} exchanges: the field differs in {} -> {}; route parity {:.1}% -> {:.1}%; nothing else differs more",
                k.exchanges,
                k.field_before,
                k.field_after,
                k.parity_before * 100.0,
                k.parity_after * 100.0
            );
        }
    }
    if let (Some(c), Some((b, a))) = (&s.combined, s.combined_parity) {
        outln!("");
        outln!(
            "with every checked change ({}): route parity {:.1}% -> {:.1}% over the kept exchanges",
            c.origin,
            b * 100.0,
            a * 100.0
        );
        if let Some(p) = written {
            outln!(
                "written to {} (try: shadowdiff rediff --mappings {})",
                p.display(),
                p.parent()
                    .map_or_else(|| ".".into(), |d| d.display().to_string())
            );
        }
    }
}
