//! `report`, `gate` and `prune`: the commands that read or trim the store.

use super::*;

pub(super) fn prune(
    config: &Path,
    explicit: bool,
    older_than: Option<std::time::Duration>,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = super::store_location(db, &cfg);
    super::require_store(&location)?;
    let age = older_than.unwrap_or(cfg.store.retention);
    let n = store::prune_at(&location, crate::record::ago(age))
        .with_context(|| format!("pruning {location}"))?;
    outln!(
        "{location}: deleted {n} exchange{} older than {}",
        if n == 1 { "" } else { "s" },
        humantime::format_duration(age)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn migrate(config: &Path, explicit: bool, db: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let location = super::store_location(db.map(PathBuf::from), &cfg);
    let done = store::migrate(&location)?;
    match done.applied.as_slice() {
        [] => outln!("{location}: schema version {}, up to date", done.version),
        applied => outln!(
            "{location}: schema version {} (applied {})",
            done.version,
            applied
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    match done.rollups {
        store::Rebuild::Current => {}
        store::Rebuild::Rebuilt => outln!(
            "{location}: hourly roll-ups rebuilt from the rows (some rows were not rolled up)"
        ),
        store::Rebuild::Refused => {
            outln!(
                "{location}: some rows (written by another program) are not in the hourly \
                 roll-ups, which cannot be rebuilt from the rows: they also count exchanges that \
                 kept no row ([store] exchanges). Reports count from the roll-ups, without those \
                 rows"
            );
            // The schema is current, but the reports are not what they should be: a deploy
            // step must not pass over it.
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn report_cmd(
    config: &Path,
    explicit: bool,
    filter: &report::Filter,
    format: Option<ReportFormat>,
    out: Option<PathBuf>,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let store = open_existing(&super::store_location(db, &cfg))?;
    let opts = report::Options {
        details: true,
        classes: (&cfg.diff).into(),
        references: report::references(&cfg),
    };
    let mut r = report::build_with(&*store, filter, &opts)?;
    r.gates = gate::verdicts(&*store, &cfg, filter, &r)?;
    let by_extension = match out
        .as_ref()
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html" | "htm") => Some(ReportFormat::Html),
        Some("json") => Some(ReportFormat::Json),
        Some("md" | "markdown") => Some(ReportFormat::Md),
        _ => None,
    };
    // `--out parity.html --format json` writes something the file's name lies about: refused.
    if let (Some(asked), Some(named), Some(p)) = (format, by_extension, out.as_ref()) {
        if asked != named {
            return Err(UsageError(format!(
                "--format {} but --out {} names a {} file: drop one or make them agree",
                format_name(asked),
                p.display(),
                format_name(named)
            ))
            .into());
        }
    }
    let format = format.or(by_extension).unwrap_or(ReportFormat::Md);
    let text = match format {
        ReportFormat::Json => report::render::json(&r),
        ReportFormat::Md => report::render::markdown(&r),
        ReportFormat::Html => report::render::html(&r),
    };
    match out {
        Some(p) => {
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            if r.totals.compared == 0 {
                errln!(
                    "{}: {} ({} exchanges in the window)",
                    p.display(),
                    report::NOTHING_COMPARED,
                    r.totals.exchanges
                );
            } else {
                errln!(
                    "{}: parity {:.2}% over {} compared exchanges",
                    p.display(),
                    r.totals.parity * 100.0,
                    r.totals.compared
                );
            }
        }
        None => out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn format_name(f: ReportFormat) -> &'static str {
    match f {
        ReportFormat::Json => "json",
        ReportFormat::Md => "md",
        ReportFormat::Html => "html",
    }
}

pub(super) fn gate_cmd(
    config: &Path,
    explicit: bool,
    phase: &str,
    (from, to): (SystemTime, SystemTime),
    format: GateFormat,
    db: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = config_or_defaults(config, explicit)?;
    let Some(gate) = cfg.gates.get(phase) else {
        let known: Vec<&str> = cfg.gates.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "unknown phase {phase:?}: {} has no [gate.{phase}] (configured: {})",
            config.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let location = super::store_location(db, &cfg);
    let store = open_existing(&location)?;
    let filter = report::Filter {
        from,
        to,
        route: None,
        account: None,
        mapping_version: None,
    };
    let v = gate::evaluate_with(&*store, phase, gate, &filter, (&cfg.diff).into())?;
    match format {
        GateFormat::Text => out!("{}", gate::text(&v)),
        GateFormat::Json => outln!("{}", serde_json::to_string_pretty(&v)?),
    }
    // A failed gate run is an event for the endpoints that want it (`gate.failed`): queued in
    // the store, delivered by the running instances.
    if !v.pass && !cfg.webhooks.is_empty() {
        let failing: Vec<&gate::Check> = v.failing().collect();
        let data = json!({"phase": v.phase, "window": v.window, "failing": failing});
        if let Err(e) = store::enqueue_event(
            &location,
            &crate::webhook::subscriptions(&cfg.webhooks),
            "gate.failed",
            &data,
        ) {
            errln!("warning: the gate.failed event could not be queued: {e}");
        }
    }
    Ok(if v.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `webhook test NAME`: one signed `webhook.test` delivery to the endpoint, now, outside the
/// outbox; prints what it answered.
pub(super) fn webhook_test(config: &Path, explicit: bool, name: &str) -> anyhow::Result<ExitCode> {
    // It signs with the webhook's secret: every variable must be set.
    let cfg = if explicit || config.exists() {
        Config::load(config)?
    } else {
        Config::defaults()
    };
    let Some(e) = cfg.webhooks.iter().find(|w| w.name == name) else {
        let known: Vec<&str> = cfg.webhooks.iter().map(|w| w.name.as_str()).collect();
        return Err(UsageError(format!(
            "no [[webhooks]] named {name:?} (configured: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let at = rfc3339(SystemTime::now());
    let d = store::Delivery {
        id: 0,
        endpoint: e.name.clone(),
        event: "webhook.test".into(),
        body: json!({"id": "evt_test", "event": "webhook.test", "at": at, "data": {"endpoint": e.name}})
            .to_string(),
        created_at: at,
        attempts: 0,
        state: "pending".into(),
        last_error: None,
    };
    let result = rt.block_on(async {
        let client = crate::upstream::client(None)?;
        Ok::<_, anyhow::Error>(crate::webhook::send(&client, e, &d).await)
    })?;
    let shown = crate::mask::url(&e.url.to_string());
    match result {
        Ok(status) => {
            outln!("{name}: {shown} answered {status}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            outln!("{name}: {shown}: {}", crate::mask::text(&err));
            Ok(ExitCode::from(1))
        }
    }
}
