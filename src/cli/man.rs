//! The man page: clap's title, synopsis, description and options, then every command in this one
//! page (clap_mangen would list `shadowdiff-serve(1)` and other pages that do not exist), the exit
//! status and the environment.

use std::fmt::Write as _;

use clap::CommandFactory as _;

use super::Cli;

/// Text for roff: backslashes and hyphens escaped, a line starting with `.` or `'` guarded.
fn roff(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn commands(out: &mut String, cmd: &clap::Command, prefix: &str) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{prefix} {}", sub.get_name());
        if sub.has_subcommands() {
            commands(out, sub, &name);
            continue;
        }
        let usage = sub
            .clone()
            .bin_name(&name)
            .render_usage()
            .to_string()
            .trim_start_matches("Usage: ")
            .to_owned();
        let _ = writeln!(out, ".TP\n\\fB{}\\fR", roff(&usage));
        if let Some(about) = sub.get_about() {
            let _ = writeln!(out, "{}", roff(&about.to_string()));
        }
    }
}

const EXIT: [(&str, &str); 4] = [
    (
        "0",
        "success; a positive verdict (gate passed, no difference)",
    ),
    (
        "1",
        "a negative verdict: differences found, a gate or promotion refused",
    ),
    (
        "2",
        "bad usage or an invalid configuration (the key and line are named)",
    ),
    (
        "3",
        "any other failure (an unreachable store, an I/O error)",
    ),
];

const ENVIRONMENT: [(&str, &str); 4] = [
    (
        "SHADOWDIFF_CANDIDATE_HEADER",
        "a \"NAME: VALUE\" header sent to the candidate (as --candidate-header, out of ps)",
    ),
    ("NO_COLOR", "no colour in terminal output"),
    ("RUST_LOG", "log filter (overrides -v and -q)"),
    (
        "${VAR} in the config",
        "expanded from the environment; ${VAR:-default} gives a default",
    ),
];

/// The whole page.
pub(super) fn page() -> std::io::Result<String> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    out.push_str(".SH COMMANDS\n");
    commands(&mut out, &Cli::command(), "shadowdiff");
    out.push_str(".SH \"EXIT STATUS\"\n");
    for (code, what) in EXIT {
        let _ = writeln!(out, ".TP\n\\fB{code}\\fR\n{}", roff(what));
    }
    out.push_str(".SH ENVIRONMENT\n");
    for (name, what) in ENVIRONMENT {
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(what));
    }
    out.push_str(".SH \"SEE ALSO\"\nREADME.md and docs/ in the source repository; \\fBshadowdiff check\\fR prints the resolved configuration.\n");
    let mut tail = Vec::new();
    man.render_version_section(&mut tail)?;
    out.push_str(&String::from_utf8_lossy(&tail));
    Ok(out)
}
