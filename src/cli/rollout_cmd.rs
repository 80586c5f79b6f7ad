//! `rollout status | set PHASE | promote`: the rollout phase in the store, which every running
//! instance follows within `[rollout] follow`.

use super::*;
use crate::rollout::{Change, Event};
use crate::rollout_control::{decide_promotion, PromoteError};

/// The phase in force per the store (its latest change), else the config's.
fn current(
    cfg: &Config,
    store: &mut store::RolloutStore,
) -> anyhow::Result<(String, Option<Event>)> {
    let latest = store.latest()?;
    let phase = latest
        .as_ref()
        .map_or_else(|| cfg.rollout.phase.clone(), |e| e.to.clone());
    Ok((phase, latest))
}

fn actor(given: Option<String>) -> String {
    match given {
        Some(a) if !a.trim().is_empty() => format!("cli:{}", a.trim()),
        _ => match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
            Ok(u) if !u.is_empty() => format!("cli:{u}"),
            _ => "cli".to_owned(),
        },
    }
}

/// The store the command works on: it must exist (a file is not created here).
fn open(
    cfg: &Config,
    db: Option<PathBuf>,
) -> anyhow::Result<(store::Location, store::RolloutStore)> {
    let location = super::store_location(db, cfg);
    super::require_store(&location)?;
    let rs = store::RolloutStore::new(&location)
        .with_webhooks(crate::webhook::subscriptions(&cfg.webhooks));
    Ok((location, rs))
}

pub(super) fn status(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    format: GateFormat,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let (_, mut rs) = open(&cfg, db)?;
    let (phase, latest) = current(&cfg, &mut rs)?;
    let events = rs.events(
        crate::record::ago(std::time::Duration::from_secs(365 * 86_400)),
        20,
    )?;
    let def = cfg.rollout.phases.get(&phase);
    let cohort = cfg
        .accounts
        .as_ref()
        .map(|a| (cfg.rollout.cohort_size(&phase, a.names()), a.len()));
    match format {
        GateFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "phase": phase,
                "set_by": latest.as_ref().map(|e| &e.actor),
                "since": latest.as_ref().map(|e| &e.at),
                "percent": def.map(|d| d.percent),
                "legacy_sample": def.map(|d| d.legacy_sample),
                "next": cfg.rollout.next(&phase).ok(),
                "cohort_accounts": cohort.map(|c| c.0),
                "events": events,
            }))?
        ),
        GateFormat::Text => {
            match &latest {
                Some(e) => outln!("phase {phase} (set {} by {})", e.at, e.actor),
                None => outln!("phase {phase} (the config's: no change recorded yet)"),
            }
            if let Some(d) = def {
                outln!(
                    "  serves {}% of accounts from the candidate{}",
                    d.percent,
                    if d.legacy_sample < 1.0 {
                        format!(", legacy called for {}% of them", d.legacy_sample * 100.0)
                    } else {
                        String::new()
                    }
                );
            } else {
                outln!("  (not a phase of this config: instances stay in the phase they had)");
            }
            if let Some((n, of)) = cohort {
                outln!("  cohort: {n} of {of} accounts");
            }
            if let Ok(next) = cfg.rollout.next(&phase) {
                if phase == crate::rollout::ROLLBACK && !cfg.gates.contains_key(&phase) {
                    outln!("  next: resume by hand (rollout set {next} --reason \"...\"), then promote on the gates");
                } else {
                    outln!("  next: {next} (rollout promote, on the gate of {phase})");
                }
            }
            if !events.is_empty() {
                outln!("changes:");
            }
            for e in &events {
                outln!(
                    "  #{} {} {} → {} by {}{}",
                    e.id,
                    e.at,
                    e.from.as_deref().unwrap_or("-"),
                    e.to,
                    e.actor,
                    e.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    phase: &str,
    (reason, who): (Option<String>, Option<String>),
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    cfg.rollout.check_phase(phase).map_err(UsageError)?;
    let (location, mut rs) = open(&cfg, db)?;
    let (from, _) = current(&cfg, &mut rs)?;
    let ev = rs.append(
        Some(&from),
        &Change {
            to: phase.to_owned(),
            actor: actor(who),
            reason,
            evidence: None,
        },
    )?;
    outln!(
        "{location}: {from} → {phase} (change #{}, by {}); running instances follow within {}",
        ev.id,
        ev.actor,
        humantime::format_duration(cfg.rollout.follow)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn promote(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    since: Option<std::time::Duration>,
    format: GateFormat,
    who: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let (location, mut rs) = open(&cfg, db)?;
    let (from, _) = current(&cfg, &mut rs)?;
    let reader = store::open_reader_at(&location)?;
    let since = since.unwrap_or(DEFAULT_WINDOW);
    match decide_promotion(&*reader, &cfg, &from, since) {
        Ok((next, verdict)) => {
            let ev = rs.append(
                Some(&from),
                &Change {
                    to: next.clone(),
                    actor: actor(who),
                    reason: Some(format!("promoted: the gate of {from} passed")),
                    evidence: serde_json::to_value(&verdict).ok(),
                },
            )?;
            match format {
                GateFormat::Text => {
                    out!("{}", gate::text(&verdict));
                    outln!(
                        "promoted {from} → {next} (change #{}, by {}); running instances follow within {}",
                        ev.id,
                        ev.actor,
                        humantime::format_duration(cfg.rollout.follow)
                    );
                }
                GateFormat::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"promoted": true, "from": from, "to": next, "event": ev, "verdict": verdict})
                    )?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PromoteError::Refused(verdict)) => {
            match format {
                GateFormat::Text => {
                    out!("{}", gate::text(&verdict));
                    let failing: Vec<String> = verdict
                        .failing()
                        .map(|c| format!("{} ({})", c.criterion, c.scope))
                        .collect();
                    outln!(
                        "not promoted: the gate of {from} did not pass ({})",
                        failing.join(", ")
                    );
                }
                GateFormat::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"promoted": false, "from": from, "verdict": verdict})
                    )?
                ),
            }
            Ok(ExitCode::from(1))
        }
        Err(PromoteError::Invalid(m)) => Err(UsageError(m).into()),
        Err(PromoteError::Store(m)) => Err(anyhow::anyhow!(m)),
    }
}
