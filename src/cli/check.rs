//! `check`: validate the config (every problem at once) and print what it resolves to, in the
//! config's own syntax.

use super::*;

pub(super) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
    cfg.upstreams()?;
    for w in &cfg.warnings {
        errln!("warning: {}: {}", path.display(), crate::mask::text(w));
    }
    outln!(
        "# {}: ok. The configuration as resolved: every default filled in, paths resolved, secrets not shown.",
        path.display()
    );
    out!("{}", cfg.to_toml());
    Ok(ExitCode::SUCCESS)
}
