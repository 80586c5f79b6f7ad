//! `replay`: recorded requests sent again to a candidate, judged against what was recorded.

use super::mapping_loop::{print_summary, record_summary, skipped_text};
use super::*;
use crate::rediff::{Proposed, Rediff};
use crate::replay::Pick;

/// Kept exchanges read, chosen, sent and judged at a time (the memory a replay holds).
const PAGE: usize = 256;

pub(super) struct ReplayArgs {
    pub since: Option<std::time::Duration>,
    pub route: Option<String>,
    pub candidate: Option<String>,
    pub pick: Pick,
    pub limit: usize,
    pub save: Option<String>,
    pub set: Option<String>,
    pub format: GateFormat,
    pub record: bool,
    pub db: Option<PathBuf>,
}

pub(super) fn replay_cmd(config: &Path, explicit: bool, a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = config_or_defaults(config, explicit)?;
    if let Some(r) = &a.route {
        if r != crate::record::UNMATCHED && !cfg.routes.iter().any(|x| &x.name == r) {
            return Err(UsageError(format!("no route named {r:?} in {}", config.display())).into());
        }
    }
    if a.save.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(UsageError("--save: a set needs a name".into()).into());
    }
    if let Some(url) = &a.candidate {
        let uri: http::Uri = url
            .parse()
            .ok()
            .filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some_and(|a| !a.as_str().contains('@'))
                    && u.query().is_none()
            })
            .ok_or_else(|| {
                UsageError(format!(
                    "--candidate {}: an http:// or https:// base URL, without user info or query (credentials go in [candidate] headers)",
                    crate::mask::url(url)
                ))
            })?;
        cfg.candidate.base_url = Some(uri);
    }
    if cfg.candidate.base_url.is_none() {
        return Err(UsageError(
            "no candidate to replay to: set [candidate] base_url or pass --candidate URL".into(),
        )
        .into());
    }
    let location = super::store_location(a.db, &cfg);
    let store = open_existing(&location)?;
    // The exchanges: a saved set, or the window's kept ones.
    let (from, to, route) = match &a.set {
        Some(name) => {
            let set = store.replay_set(name)?;
            let (Some(first), Some(last)) = (
                set.iter().map(|(_, at)| at.as_str()).min(),
                set.iter().map(|(_, at)| at.as_str()).max(),
            ) else {
                return Err(
                    UsageError(format!("no replay set named {name:?} in the store")).into(),
                );
            };
            let t = |s: &str| parse_time(s).map_err(UsageError);
            (
                t(first)? - std::time::Duration::from_secs(1),
                t(last)? + std::time::Duration::from_secs(1),
                None,
            )
        }
        None => {
            let (from, to) = window(a.since, None, None);
            (from, to, a.route.as_deref().map(RouteKey::parse))
        }
    };
    let filter = store::Filter {
        from,
        to,
        route,
        account: None,
        mapping_version: None,
    };
    let set_ids: Option<std::collections::HashSet<i64>> = match &a.set {
        Some(name) => Some(
            store
                .replay_set(name)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        ),
        None => None,
    };
    let runner = crate::mapping::runner::Runner::for_this_binary(cfg.mappings.workers)?;
    let mut rediff = Rediff::new(&cfg, &runner, Proposed::default());
    let exe = std::env::current_exe().context("finding this binary (the mapping workers)")?;
    let target = cfg
        .candidate
        .base_url
        .as_ref()
        .map(|u| crate::mask::url(&u.to_string()))
        .unwrap_or_default();
    let shared = std::sync::Arc::new(cfg.clone());
    let (shadow, writer, runtime) = crate::server::replay_shadow(&shared, exe, &location)?;
    // The crosswalk as the store holds it: a request's legacy ids become the candidate's.
    for pair in store.id_pairs(usize::MAX)? {
        let max = cfg
            .ids
            .iter()
            .find(|k| k.name == pair.kind)
            .map_or(crate::ids::DEFAULT_MAX_PAIRS, |k| k.max_pairs);
        shadow.ids.adopt(&pair, max);
    }
    // Page by page: read, choose, send, judge; only the verdicts are kept.
    let mut picker = match &set_ids {
        Some(ids) => crate::replay::Picker::new(Pick::All, ids.len(), cfg.shadow.max_body),
        None => crate::replay::Picker::new(a.pick, a.limit, cfg.shadow.max_body),
    };
    let mut chosen: Vec<(i64, String)> = Vec::new();
    let mut found = 0;
    let mut after = 0;
    let mut replayer = crate::replay::Replayer::new(&shadow, &runtime);
    loop {
        let mut page = store.kept_pairs(&filter, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        if let Some(ids) = &set_ids {
            page.retain(|p| ids.contains(&p.id));
        }
        let page = picker.take(page);
        found += page.len();
        chosen.extend(page.iter().map(|p| (p.id, p.started_at.clone())));
        rediff.learn_noise(&*store, &page)?;
        replayer.replay(&rediff, page);
        if picker.full() {
            break;
        }
    }
    if let Some(ids) = &set_ids {
        replayer.skip("pruned", ids.len().saturating_sub(found));
    }
    let replayed = replayer.finish();
    if let Some(name) = &a.save {
        store::save_replay_set(&location, name, &chosen)?;
    }
    drop(shadow);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    writer.close();
    let summary = &replayed.summary;
    let source = format!("replay to {target}");
    if a.record && summary.exchanges > 0 {
        record_summary(&location, summary, &source, (from, to))?;
    }
    let broken: u64 = summary.routes.iter().map(|r| r.broken_count).sum();
    let secs = replayed.elapsed.as_secs_f64();
    match a.format {
        GateFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "window": {"from": rfc3339(from), "to": rfc3339(to)},
                "set": a.set,
                "saved": a.save,
                "candidate": target,
                "sent": replayed.sent,
                "seconds": secs,
                "per_second": if secs > 0.0 { replayed.sent as f64 / secs } else { 0.0 },
                "recorded": a.record && summary.exchanges > 0,
                "summary": summary,
            }))?
        ),
        GateFormat::Text => {
            let skipped: u64 = summary.skipped.values().sum();
            outln!(
                "replay to {target} of {}: {} request{} sent in {secs:.2} s, {} exchange{} judged{}",
                match &a.set {
                    Some(n) => format!("the set {n:?}"),
                    None => format!(
                        "the last {}",
                        humantime::format_duration(a.since.unwrap_or(DEFAULT_WINDOW))
                    ),
                },
                replayed.sent,
                if replayed.sent == 1 { "" } else { "s" },
                summary.exchanges,
                if summary.exchanges == 1 { "" } else { "s" },
                skipped_text(summary, skipped)
            );
            if let Some(n) = &a.save {
                outln!("saved as the set {n:?} (replay it with --set {n})");
            }
            print_summary(summary, a.record);
        }
    }
    Ok(if broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
