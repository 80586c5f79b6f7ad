//! `diff` and `map`: the comparison and the mappings, offline, on files.

use super::*;

pub(super) fn diff_files(
    config: &Path,
    explicit: bool,
    (legacy, candidate): (&Path, &Path),
    (route, account): (Option<&str>, Option<&str>),
    format: DiffFormat,
    (window, db): ((SystemTime, SystemTime), Option<PathBuf>),
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let rules = cfg.rules_for(route).ok_or_else(|| {
        UsageError(format!(
            "no route named {:?} in {}",
            route.unwrap_or(""),
            config.display()
        ))
    })?;
    let (mut l, mut c) = (read_json(legacy)?, read_json(candidate)?);
    // The route's mappings, as the proxy applies them.
    if let Some(r) = route.and_then(|name| cfg.routes.iter().find(|r| r.name == name)) {
        let runner = crate::mapping::runner::Runner::for_this_binary(1)?;
        let maps = Maps {
            ids: None,
            paging: None,
            candidate: r.mappings.candidate_for(account).map(|c| &**c),
            request: r.candidate.request.as_ref().map(|q| &*q.chain),
            legacy: r.mappings.legacy.as_deref(),
            runner: Some(&runner),
            timeout: cfg.mappings.timeout,
            premapped: None,
            rules: r.rules_version.as_deref(),
        };
        // Documents in, documents out: `None` never comes back for a side that had one.
        let (ml, mc) = maps
            .apply_both(Some(l), Some(c))
            .map_err(|e| UsageError(e.to_string()))?;
        (l, c) = (ml.unwrap_or_default(), mc.unwrap_or_default());
    }
    if format == DiffFormat::Patch {
        // The patch turns the normalised legacy document into the normalised candidate one.
        let (mut l, mut c) = (l, c);
        diff::normalize::apply(&mut l, &rules.normalize);
        diff::normalize::apply(&mut c, &rules.normalize);
        let ops = diff::patch::patch(&l, &c);
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(ops.clone()))?
        );
        return Ok(if ops.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    // Files are a vendor's answers: their differences are listed within the proxy's room.
    let found = diff::diff_within(&l, &c, rules, crate::shadow::compare::LISTING);
    let diffs = &found.diffs;
    match format {
        DiffFormat::Json => {
            let mut out = json!({
                "equal": found.total() == 0,
                "differences": diffs,
            });
            add_counted(&mut out, &found.counted, found.unlisted);
            // With a route and a store: each difference's class over the window.
            let location = super::store_location(db, &cfg);
            let exists = match &location {
                store::Location::Sqlite(p) => p.exists(),
                store::Location::Postgres(_) => true,
            };
            if let (Some(route), true) = (route, exists) {
                let store = store::open_reader_at(&location)?;
                let lookup = classify::Lookup::load(&*store, route, window, (&cfg.diff).into())
                    .with_context(|| format!("reading {location}"))?;
                for (d, v) in diffs.iter().zip(
                    out["differences"]
                        .as_array_mut()
                        .expect("an array")
                        .iter_mut(),
                ) {
                    v["class"] = json!(lookup.class(&d.field));
                }
                out["classification"] = json!({
                    "route": route,
                    "from": rfc3339(window.0),
                    "to": rfc3339(window.1),
                    "compared": lookup.compared,
                });
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        DiffFormat::Patch => unreachable!("handled above"),
        DiffFormat::Text => print_text(diffs, &found.counted, found.unlisted),
    }
    Ok(if found.total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn map_cmd(
    config: &Path,
    explicit: bool,
    input: &Path,
    route: &str,
    account: Option<&str>,
    legacy: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let r =
        cfg.routes.iter().find(|r| r.name == route).ok_or_else(|| {
            UsageError(format!("no route named {route:?} in {}", config.display()))
        })?;
    let chain = if legacy {
        r.mappings.legacy.as_ref()
    } else {
        r.mappings.candidate_for(account)
    };
    let Some(chain) = chain else {
        return Err(UsageError(format!(
            "route {route:?} has no {} mapping",
            if legacy { "legacy" } else { "candidate" }
        ))
        .into());
    };
    let doc = read_json(input)?;
    errln!("{route}: {}", chain.describe());
    let runner = crate::mapping::runner::Runner::for_this_binary(1)?;
    match runner.run(chain, &doc, cfg.mappings.timeout) {
        Ok(v) => {
            outln!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            super::write_err_always(format_args!("error: {e}"), true);
            Ok(ExitCode::from(1))
        }
    }
}

/// The differences a comparison counted without listing them, in a JSON answer: `counted` per
/// (field pattern, kind) and `unlisted`, each only when there are some (the shape of every
/// ordinary diff is unchanged).
fn add_counted(out: &mut serde_json::Value, counted: &[diff::Counted], unlisted: usize) {
    if !counted.is_empty() {
        out["counted"] = json!(counted);
    }
    if unlisted > 0 {
        out["unlisted"] = json!(unlisted);
    }
}

/// One line per difference, one per (field pattern, kind) counted and not listed, then the
/// count.
fn print_text(diffs: &[diff::Difference], counted: &[diff::Counted], unlisted: usize) {
    for d in diffs {
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
        };
        let ptr = if d.pointer.is_empty() {
            "(root)"
        } else {
            &d.pointer
        };
        outln!(
            "{:<12} {ptr}  {} -> {}",
            d.kind.as_str(),
            show(&d.legacy),
            show(&d.candidate)
        );
    }
    for c in counted {
        outln!(
            "{:<12} {}  ({} more: counted, not listed)",
            c.kind.as_str(),
            c.field,
            c.n
        );
    }
    let n = diff::listing::total(diffs, counted, unlisted);
    outln!("{n} difference{}", if n == 1 { "" } else { "s" });
    if unlisted > 0 {
        outln!("({unlisted} of them past the room for listing differences: counted, not listed)");
    }
}

/// `diff --exchange ID`: every difference of a recorded exchange, recomputed from its kept
/// responses with its route's rules (the store keeps the first few per field pattern).
pub(super) fn diff_exchange(
    config: &Path,
    explicit: bool,
    id: i64,
    format: DiffFormat,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = super::store_location(db, &cfg);
    let store = open_existing(&location)?;
    let Some(kept) = store.kept_exchange(id)? else {
        return Err(UsageError(format!("no exchange {id} in {location}")).into());
    };
    let (Some(legacy), Some(candidate)) = (&kept.legacy, &kept.candidate) else {
        return Err(UsageError(format!(
            "exchange {id} has no kept bodies (see [store] bodies): only its {} stored differences are known",
            kept.diff_count
        ))
        .into());
    };
    let rules = cfg
        .rules_for(kept.route.as_deref())
        .unwrap_or(&cfg.diff.rules);
    let compared = crate::shadow::compare::recompute(legacy, candidate, rules, &cfg);
    if !compared.outcome.is_compared() {
        // Not "no differences": the kept bodies could not be compared at all.
        anyhow::bail!(
            "exchange {id}: the kept bodies cannot be compared ({}: {})",
            compared.outcome.as_str(),
            compared.reason.as_deref().unwrap_or("")
        );
    }
    let (diffs, unlisted): (&[diff::Difference], usize) = (&compared.diffs, compared.unlisted);
    let total = compared.diff_count();
    match format {
        DiffFormat::Patch => {
            return Err(UsageError("--exchange gives text or json, not a patch".into()).into())
        }
        DiffFormat::Json => {
            let mut out = json!({
                "exchange": id,
                "route": kept.route,
                "recorded_diff_count": kept.diff_count,
                "equal": total == 0,
                "differences": diffs,
            });
            add_counted(&mut out, &compared.counted, unlisted);
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        DiffFormat::Text => print_text(diffs, &compared.counted, unlisted),
    }
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
