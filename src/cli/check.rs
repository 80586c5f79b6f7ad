//! `check`: validate the config and print what it resolves to.

use super::*;

pub(super) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
    let (legacy, candidate) = cfg.upstreams()?;
    outln!("{}: ok", path.display());
    outln!(
        "proxy      {}  (drain {})",
        cfg.proxy.listen,
        humantime::format_duration(cfg.proxy.drain_timeout)
    );
    outln!(
        "admin      {}",
        cfg.admin.listen.as_deref().unwrap_or("(disabled)")
    );
    outln!(
        "legacy     {legacy}  timeout {}",
        humantime::format_duration(cfg.legacy.timeout)
    );
    let set: Vec<&str> = cfg
        .candidate
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let fwd: Vec<&str> = cfg
        .candidate
        .forward_headers
        .iter()
        .map(http::HeaderName::as_str)
        .collect();
    outln!(
        "candidate  {candidate}  timeout {}  sets [{}]  forwards [{}]",
        humantime::format_duration(cfg.candidate.timeout),
        set.join(", "),
        fwd.join(", ")
    );
    if let Some(a) = &cfg.accounts {
        outln!("accounts   {:?}  ({} accounts)", a.source, a.len());
    }
    let s = &cfg.shadow;
    outln!(
        "shadow     sample_rate {}  max_in_flight {}  max_rps {}  max_body {} B  unmatched {:?}  backoff_on_429 {}  threads {}  priority {:?}",
        s.sample_rate, s.max_in_flight, s.max_rps, s.max_body, s.unmatched, s.backoff_on_429, s.threads, s.priority
    );
    outln!(
        "store      {}  retention {}  bodies {:?}",
        cfg.store.location(),
        humantime::format_duration(cfg.store.retention),
        cfg.store.bodies
    );
    outln!("routes ({}):", cfg.routes.len());
    for r in &cfg.routes {
        let method = r.method.as_ref().map_or("*", http::Method::as_str);
        let mirror = match r.mirror {
            Some(true) => "mirror",
            Some(false) => "no mirror",
            None => "mirror GET/HEAD",
        };
        let cm = r
            .candidate
            .method
            .as_ref()
            .map_or("(same method)", http::Method::as_str);
        let cp = r
            .candidate
            .path
            .as_ref()
            .map_or("(same path)", |t| t.as_str());
        let q = match &r.candidate.query {
            None => "(caller's query)".to_owned(),
            Some(q) => q
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str()))
                .collect::<Vec<_>>()
                .join("&"),
        };
        outln!(
            "  {:<16} {method} {}  [{mirror}]  -> {cm} {cp} ? {q}",
            r.name,
            r.path.as_str()
        );
        print_rules("    ", &r.rules);
        print_mappings("    ", &r.mappings);
        let serves: Vec<&str> = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .filter(|m| {
                http::Method::from_bytes(m.as_bytes())
                    .is_ok_and(|m| r.method.as_ref().is_none_or(|rm| *rm == m) && r.serves(&m))
            })
            .collect();
        if !serves.is_empty() {
            outln!(
                "    served by rollout phases: {} (deadline {}, unknown accounts: {:?})",
                serves.join(", "),
                humantime::format_duration(r.serve_deadline),
                r.unknown_account
            );
        }
    }
    let ro = &cfg.rollout;
    let phases: Vec<String> = ro
        .phases
        .iter()
        .map(|(n, d)| {
            if d.legacy_sample < 1.0 {
                format!("{n} {}% (legacy_sample {})", d.percent, d.legacy_sample)
            } else {
                format!("{n} {}%", d.percent)
            }
        })
        .collect();
    outln!(
        "rollout: starts in {} (the store's latest change wins); order {}; phases {}",
        ro.phase,
        ro.order.join(" → "),
        phases.join(", ")
    );
    if ro.guard.auto_rollback || ro.guard.auto_promote {
        outln!(
            "  guard: auto_rollback {}, auto_promote {}, window {}, min_sample {}",
            ro.guard.auto_rollback,
            ro.guard.auto_promote,
            humantime::format_duration(ro.guard.window),
            ro.guard.min_sample
        );
    }
    outln!(
        "unmatched requests: {:?}; global rules:",
        cfg.shadow.unmatched
    );
    print_rules("    ", &cfg.diff.rules);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_mappings(indent: &str, m: &crate::mapping::RouteMappings) {
    if let Some(c) = &m.candidate {
        outln!("{indent}candidate mapping: {}", c.describe());
    }
    for (account, c) in &m.accounts {
        outln!("{indent}  for account {account}: {}", c.describe());
    }
    if let Some(c) = &m.legacy {
        outln!("{indent}legacy mapping: {}", c.describe());
    }
}

pub(super) fn print_rules(indent: &str, r: &diff::Rules) {
    let globs = |s: &diff::GlobSet| {
        s.iter()
            .map(diff::Glob::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys: Vec<String> = r
        .array_keys
        .iter()
        .map(|(g, k)| format!("{}={k}", g.as_str()))
        .collect();
    outln!(
        "{indent}ignore [{}]  array_keys [{}]  unordered [{}]  number_tolerance {}  null_equals_missing {}  auto_keys {}",
        globs(&r.ignore),
        keys.join(", "),
        globs(&r.unordered),
        r.number_tolerance,
        r.null_equals_missing,
        r.auto_keys
    );
}
