//! `serve` and `demo`: the commands that run the proxy.

use super::*;

pub(super) fn serve(
    path: &Path,
    explicit: bool,
    ov: &Overrides,
    admin: Option<String>,
) -> anyhow::Result<ExitCode> {
    let ov = Overrides {
        admin,
        ..ov.clone()
    };
    let cfg = Config::load_or_defaults(path, explicit, &ov)?;
    for w in &cfg.warnings {
        tracing::warn!(config = %path.display(), "{w}");
    }
    // A config that parses but lacks what `serve` needs is a config error too (exit 2).
    cfg.upstreams()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = rt.block_on(async {
        let server = Server::bind_with(
            cfg,
            crate::server::Options {
                mapping_worker: None,
                overrides: ov,
            },
        )
        .await?;
        let shutdown = server::shutdown_signal();
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let (proxy_tls, admin_tls) = server.tls();
        errln!(
            "shadowdiff: proxy on {}://{}{}",
            scheme(proxy_tls),
            server.proxy_addr(),
            server
                .admin_addr()
                .map(|a| format!(", admin on {}://{a}", scheme(admin_tls)))
                .unwrap_or_default()
        );
        let summary = server.run(shutdown).await;
        errln!(
            "shadowdiff: stopped ({} exchanges written, {} dropped (queue full; {} of them counted without a row), {} lost (store write failed), {} abandoned)",
            summary.written, summary.dropped, summary.counted, summary.lost, summary.abandoned
        );
        Ok::<_, anyhow::Error>(summary.lost)
    })?;
    if failed > 0 {
        // Exchanges were lost to store errors: say so to the supervisor too.
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn demo_upstreams(legacy: &str, candidate: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let shutdown = server::shutdown_signal();
        crate::demo::upstreams(legacy, candidate, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn demo(requests: usize, out: &Path, keep_serving: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    errln!("shadowdiff demo: fake legacy HRIS API + fake unified API on 127.0.0.1, proxy in front, {requests} requests");
    let o = rt.block_on(crate::demo::run(requests, out, |sent, total| {
        use std::io::Write as _;
        let width = 30;
        let done = (sent * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        err!(
            "\r  [{}{}] {sent}/{total}",
            "#".repeat(done),
            " ".repeat(width - done)
        );
        let _ = std::io::stderr().flush();
    }))?;
    errln!();
    outln!("{}", report::render::markdown(&o.report));
    outln!("{}", gate::text(&o.gate));
    outln!("rollout:");
    for line in &o.story {
        outln!("  {line}");
    }
    outln!("mapping loop (shadowdiff suggest, then rediff with its checked changes):");
    for line in crate::demo::mapping_loop(&o)? {
        outln!("  {line}");
    }
    outln!("report: {}  (JSON: {})", o.html.display(), o.json.display());
    // The demo's own config names the store and its gates: the verdict above (a config in the
    // current folder would apply other gates).
    outln!(
        "store:  {}  (try: shadowdiff report --config {} --since 1h)",
        o.db.display(),
        o.config.display()
    );
    outln!(
        "verdict: the gate {} — {}",
        if o.gate.pass {
            "passes"
        } else {
            "refuses to promote"
        },
        if o.gate.pass {
            "the candidate answers like legacy"
        } else {
            "see the differing fields and the accounts that need re-auth above"
        }
    );
    if keep_serving {
        // The fake vendors still run on this runtime: the proxy comes back on the same store.
        rt.block_on(async {
            let cfg = Config::load(&o.config)?;
            let server = Server::bind(cfg).await?;
            outln!(
                "dashboard: http://{}/  (proxy: http://{}; Ctrl-C stops)",
                server.admin_addr().context("the demo's admin listener")?,
                server.proxy_addr()
            );
            server.run(server::shutdown_signal()).await;
            Ok::<_, anyhow::Error>(())
        })?;
    }
    Ok(ExitCode::SUCCESS)
}
