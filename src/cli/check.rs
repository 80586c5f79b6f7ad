//! `check`: validate the config (every problem at once) and print what it resolves to, in the
//! config's own syntax.

use super::*;

/// `ov`: the base URLs a deployment passes to `serve` on its command line instead of in the
/// file, so that the file can be checked as it will run.
pub(super) fn check(path: &Path, ov: &crate::config::Overrides) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(path)?;
    cfg.apply(ov)?;
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
