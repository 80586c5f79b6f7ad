//! The `shadowdiff` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The comparison allocates a node per JSON value and frees it soon after, from one thread per
/// runtime: glibc's malloc spent ~30 % of the proxy's CPU in that churn (BENCHMARKS.md §10),
/// mimalloc's thread-local free lists take a fraction of it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = shadowdiff::cli::Cli::parse();
    let quiet = matches!(cli.command, shadowdiff::cli::Command::Demo { .. });
    let default = match cli.verbose {
        _ if cli.quiet => "error",
        0 if quiet => "warn",
        0 => "warn,shadowdiff=info",
        1 => "info,shadowdiff=debug",
        _ => "info,shadowdiff=trace",
    };
    // RUST_LOG overrides -v, but not -q: "nothing on stderr but errors" is what was asked for
    // on this command line, whatever the environment says.
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) if !cli.quiet => f,
        _ => EnvFilter::new(default),
    };
    // Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org): a log
    // written to a file or a journal carries no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match cli.log_format {
        shadowdiff::cli::LogFormat::Pretty => fmt.init(),
        shadowdiff::cli::LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    shadowdiff::cli::run(cli)
}
