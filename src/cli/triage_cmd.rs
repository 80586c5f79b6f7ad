//! `triage mark | clear | list`: people's verdicts on difference patterns, kept in the store
//! (every instance and report reads them there), with an audit trail.

use super::*;
use crate::triage::{Change, Mark, Pattern, Status};

/// Who, for the record: `--by`, else `$USER`.
fn who(given: Option<String>) -> String {
    match given {
        Some(a) if !a.trim().is_empty() => a.trim().to_owned(),
        _ => match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
            Ok(u) if !u.is_empty() => format!("cli:{u}"),
            _ => "cli".to_owned(),
        },
    }
}

/// A mark names a route of the config (or the unmatched requests): a misspelt one would mark
/// nothing, silently.
fn known_route(cfg: &Config, route: &str) -> anyhow::Result<()> {
    if route == crate::record::UNMATCHED || cfg.routes.iter().any(|r| r.name == route) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--route {route:?}: no route of that name in the config"
    ))
    .into())
}

pub(super) fn mark(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    what: TriageMark,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = store_location(db, &cfg);
    require_store(&location)?;
    let now = SystemTime::now();
    let status = Status::parse(&what.status).map_err(|e| UsageError(format!("--{e}")))?;
    known_route(&cfg, &what.route)?;
    let pattern = Pattern::new(&what.route, &what.field, what.kind.as_deref())
        .map_err(|e| UsageError(e.to_string()))?;
    let expires = what
        .expires
        .as_deref()
        .map(|e| crate::triage::parse_expiry(e, now))
        .transpose()
        .map_err(|e| UsageError(format!("--{e}")))?;
    let mark = Mark::new(
        pattern,
        status,
        what.reason.as_deref().unwrap_or(""),
        what.ticket.as_deref(),
        &who(what.by),
        crate::record::rfc3339(now),
        expires,
    )
    .map_err(|e| UsageError(e.to_string()))?;
    store::record_triage(&location, &Change::Mark(mark.clone()))?;
    outln!(
        "marked {} {} {}: {}{}",
        mark.pattern.route_label(),
        if mark.pattern.field.is_empty() {
            "(the document)"
        } else {
            &mark.pattern.field
        },
        if mark.pattern.kind.is_empty() {
            "(every kind)"
        } else {
            &mark.pattern.kind
        },
        mark.status.as_str(),
        mark.expires
            .as_ref()
            .map(|e| format!(" until {e}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn clear(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    (route, field, kind, reason, by): (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = store_location(db, &cfg);
    require_store(&location)?;
    let pattern =
        Pattern::new(&route, &field, kind.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    let change = Change::clear(
        pattern,
        &who(by),
        crate::record::rfc3339(SystemTime::now()),
        reason.as_deref(),
    )
    .map_err(|e| UsageError(e.to_string()))?;
    if !store::record_triage(&location, &change)? {
        return Err(UsageError(format!(
            "no mark on {} {field}{} to clear",
            change.pattern().route_label(),
            kind.map(|k| format!(" {k}")).unwrap_or_default()
        ))
        .into());
    }
    outln!("cleared {} {}", change.pattern().route_label(), field);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn list(
    config: &Path,
    explicit: bool,
    db: Option<PathBuf>,
    (format, log): (GateFormat, usize),
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = store_location(db, &cfg);
    let store = open_existing(&location)?;
    let marks = store.triage_marks()?;
    let trail = store.triage_log(log)?;
    let now = crate::record::rfc3339(SystemTime::now());
    match format {
        GateFormat::Json => {
            let marks: Vec<_> = marks
                .into_iter()
                .map(|m| crate::report::TriageMark {
                    expired: !m.holds_at(&now),
                    mark: m,
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"marks": marks, "log": trail}))?
            );
        }
        GateFormat::Text => {
            if marks.is_empty() {
                outln!("no triage mark");
            }
            for m in &marks {
                outln!(
                    "{} {} {} {}{}: {}{} (by {} at {}{})",
                    m.status.as_str(),
                    m.pattern.route_label(),
                    m.pattern.field,
                    if m.pattern.kind.is_empty() {
                        "every kind"
                    } else {
                        &m.pattern.kind
                    },
                    if m.holds_at(&now) { "" } else { " [expired]" },
                    m.reason,
                    m.ticket
                        .as_ref()
                        .map(|t| format!(" [{t}]"))
                        .unwrap_or_default(),
                    m.by,
                    m.at,
                    m.expires
                        .as_ref()
                        .map(|e| format!(", until {e}"))
                        .unwrap_or_default()
                );
            }
            if log > 0 && !trail.is_empty() {
                outln!("audit trail (newest first):");
                for e in &trail {
                    outln!(
                        "  {} {} {} {} {} {} by {}{}",
                        e.at,
                        e.action,
                        e.pattern.route_label(),
                        e.pattern.field,
                        if e.pattern.kind.is_empty() {
                            "*"
                        } else {
                            &e.pattern.kind
                        },
                        e.status.as_deref().unwrap_or(""),
                        e.by,
                        e.reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
