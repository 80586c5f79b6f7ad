//! Renders a [`Report`] for people: Markdown short enough for a chat message or a PR comment,
//! and one self-contained HTML page (inline CSS and SVG, no script, no external resource).
//! Both show the numbers of the one aggregation; nothing is computed here but formatting.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Counts, Day, FieldStat, Report, RouteReport};

/// Fields listed per route in Markdown.
const MD_FIELDS: usize = 5;
/// A value shown inline when its JSON text is at most this long; longer ones as a unified diff.
const INLINE_VALUE: usize = 60;

pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("a report serialises")
}

/// A ratio as a percentage with two decimals.
pub fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

pub fn outcomes_line(c: &Counts) -> String {
    c.outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > INLINE_VALUE {
        let cut: String = s.chars().take(INLINE_VALUE).collect();
        format!("{cut}…")
    } else {
        s
    }
}

pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let t = &r.totals;
    if t.compared == 0 {
        let _ = writeln!(
            o,
            "## shadowdiff parity: {} ({} exchanges in the window)",
            crate::report::NOTHING_COMPARED,
            t.exchanges
        );
    } else {
        let _ = writeln!(
            o,
            "## shadowdiff parity: {} ({} / {} compared{})",
            t.parity_text(),
            t.matched + t.noise_only,
            t.compared,
            noise_note(t)
        );
    }
    let _ = writeln!(
        o,
        "\n{} → {}{} · {} exchanges · {}\n",
        r.window.from,
        r.window.to,
        super::widened_note(&r.window),
        t.exchanges,
        outcomes_line(t)
    );
    if r.filtered_from_kept_rows {
        let _ = writeln!(o, "Note: {}.\n", super::FROM_KEPT_ROWS);
    }
    for v in &r.gates {
        let failing = v.failing_names();
        let _ = writeln!(
            o,
            "- gate {}: {}{}",
            md_code(&v.phase),
            if v.pass { "may be promoted" } else { "refused" },
            if failing.is_empty() {
                String::new()
            } else {
                format!(" ({})", md_text(&failing.join(", ")))
            }
        );
    }
    if !r.gates.is_empty() {
        o.push('\n');
    }
    if !r.routes.is_empty() {
        o.push_str("| route | parity | compared | exchanges | legacy p50/p99 ms | candidate p50/p99 ms |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|\n");
        for rt in &r.routes {
            let l = &rt.latency_ms;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} |",
                md_text(&rt.route),
                parity_text(&rt.counts),
                rt.counts.compared,
                rt.counts.exchanges,
                l.legacy_p50,
                l.legacy_p99,
                l.candidate_p50,
                l.candidate_p99
            );
        }
    }
    for rt in r.routes.iter().filter(|rt| !rt.fields.is_empty()) {
        let _ = writeln!(o, "\n**{}**: top differing fields", md_text(&rt.route));
        for f in rt.fields.iter().take(MD_FIELDS) {
            let _ = writeln!(
                o,
                "- {} {} in {} exchanges ({}, {}), e.g. {} → {}",
                md_code(&f.field),
                f.kind,
                f.exchanges,
                pct(f.rate),
                f.class.as_str(),
                if f.kind == "extra" {
                    "(absent)".to_owned()
                } else {
                    md_code(&short(&f.example.legacy))
                },
                if f.kind == "missing" {
                    "(absent)".to_owned()
                } else {
                    md_code(&short(&f.example.candidate))
                }
            );
            if let Some(t) = &f.triage {
                let _ = writeln!(o, "  - triage: {}", md_text(&triage_text(t)));
            }
            if let Some(fix) = &f.likely_fix {
                let _ = writeln!(
                    o,
                    "  - likely fix: {} (checked proposals: {})",
                    md_text(fix),
                    md_code(&format!("shadowdiff suggest --route {}", rt.route))
                );
            }
        }
        if rt.fields.len() > MD_FIELDS {
            let _ = writeln!(o, "- … {} more", rt.fields.len() - MD_FIELDS);
        }
    }
    for rt in r.routes.iter().filter(|rt| rt.mapping_versions.len() > 1) {
        let list: Vec<String> = rt
            .mapping_versions
            .iter()
            .map(|v| {
                format!(
                    "{} from {} ({} over {} compared)",
                    md_code(&v.version),
                    md_text(&v.first_seen),
                    pct(v.parity),
                    v.compared
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "\n**{}**: mapping versions: {}",
            md_text(&rt.route),
            list.join(" → ")
        );
    }
    for rt in &r.routes {
        let Some(c) = rt
            .coverage
            .as_ref()
            .filter(|c| !c.fields.is_empty() || !c.unexercised.is_empty())
        else {
            continue;
        };
        let fewest: Vec<String> = c
            .fields
            .iter()
            .take(3)
            .map(|f| format!("{} ({})", md_code(&f.field), f.compared))
            .collect();
        let _ = write!(
            o,
            "\n**{}**: field coverage: {} field patterns compared, the fewest times: {}",
            md_text(&rt.route),
            c.fields.len(),
            if fewest.is_empty() {
                "none".to_owned()
            } else {
                fewest.join(", ")
            }
        );
        if c.unexercised.is_empty() {
            let _ = writeln!(o);
        } else {
            let list: Vec<String> = c
                .unexercised
                .iter()
                .take(MD_FIELDS)
                .map(|u| format!("{} ({})", md_code(&u.field), md_text(u.known_from)))
                .collect();
            let _ = writeln!(
                o,
                "; **never exercised in the window**: {}{}",
                list.join(", "),
                if c.unexercised.len() > MD_FIELDS {
                    ", …"
                } else {
                    ""
                }
            );
        }
    }
    for rt in r.routes.iter().filter(|rt| !rt.noise.is_empty()) {
        let list: Vec<String> = rt
            .noise
            .iter()
            .map(|n| format!("{} ({}/{})", md_code(&n.field), n.differed, n.samples))
            .collect();
        let _ = writeln!(
            o,
            "\n**{}**: noise learned from second legacy calls (differed / pairs): {}",
            md_text(&rt.route),
            list.join(", ")
        );
    }
    if !r.needs_reauth.is_empty() {
        let _ = writeln!(
            o,
            "\n**Needs re-auth** (candidate 401/403 in a row while legacy succeeded): {}",
            md_text(&reauth_list(r))
        );
    }
    let _ = writeln!(
        o,
        "\n**Candidate quota spent by shadow traffic**: {}",
        md_text(&spend_text(&r.shadow_spend))
    );
    ids_markdown(&mut o, &r.ids);
    rollout_markdown(&mut o, &r.rollout);
    rediffs_markdown(&mut o, &r.rediffs);
    triage_markdown(&mut o, &r.triage);
    o
}

/// A triage mark in one line: `accepted: the reason [TICKET] by ana on …, until … (expired)`.
pub fn triage_text(t: &crate::report::TriageMark) -> String {
    let m = &t.mark;
    let mut s = m.status.as_str().to_owned();
    if !m.reason.is_empty() {
        s.push_str(": ");
        s.push_str(&m.reason);
    }
    if let Some(ticket) = &m.ticket {
        let _ = write!(s, " [{ticket}]");
    }
    let _ = write!(s, " by {} on {}", m.by, m.at);
    if let Some(e) = &m.expires {
        let _ = write!(s, ", until {e}");
    }
    if t.expired {
        s.push_str(" (expired)");
    }
    s
}

/// What a mark is about: `route /field kind` (`every kind` when it names none).
pub fn triage_pattern(p: &crate::triage::Pattern) -> String {
    format!(
        "{} {} {}",
        p.route_label(),
        if p.field.is_empty() {
            "(document)"
        } else {
            &p.field
        },
        if p.kind.is_empty() {
            "every kind"
        } else {
            &p.kind
        }
    )
}

/// Every triage mark (nothing without marks).
fn triage_markdown(o: &mut String, marks: &[crate::report::TriageMark]) {
    if marks.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n**Triage** ({} marks)", marks.len());
    for t in marks {
        let _ = writeln!(
            o,
            "- {}: {}",
            md_code(&triage_pattern(&t.mark.pattern)),
            md_text(&triage_text(t))
        );
    }
}

/// [`triage_markdown`] in HTML.
fn triage_html(o: &mut String, marks: &[crate::report::TriageMark]) {
    if marks.is_empty() {
        return;
    }
    o.push_str("<h2>Triage</h2><table id=\"triage\"><tr><th>pattern</th><th>mark</th></tr>");
    for t in marks {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td class=\"triage-{}\">{}</td></tr>",
            esc(&triage_pattern(&t.mark.pattern)),
            t.mark.status.as_str(),
            esc(&triage_text(t))
        );
    }
    o.push_str("</table>");
}

/// The id crosswalk's coverage (nothing without `[ids]` pairs or ids seen).
fn ids_markdown(o: &mut String, ids: &[crate::store::IdCoverage]) {
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Ids (the crosswalk between the vendors' ids)\n\n| account | kind | paired | unpaired (legacy / candidate) | conflicts | ids paired |\n|---|---|---|---|---|---|"
    );
    for c in ids {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} / {} | {} | {} |",
            md_text(&c.account),
            md_text(&c.kind),
            c.paired,
            c.unpaired_legacy,
            c.unpaired_candidate,
            c.conflicts,
            pct(c.paired_rate)
        );
    }
}

/// The id crosswalk's coverage as an HTML table.
fn ids_html(o: &mut String, ids: &[crate::store::IdCoverage]) {
    if ids.is_empty() {
        return;
    }
    o.push_str("<h2>Ids</h2><p class=\"muted\">The crosswalk between the vendors' ids: pairs held, ids compared without a partner, observations that contradicted a pair.</p><table><tr><th>account</th><th>kind</th><th class=\"num\">paired</th><th class=\"num\">unpaired legacy</th><th class=\"num\">unpaired candidate</th><th class=\"num\">conflicts</th><th class=\"num\">ids paired</th></tr>");
    for c in ids {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&c.account),
            esc(&c.kind),
            c.paired,
            c.unpaired_legacy,
            c.unpaired_candidate,
            c.conflicts,
            esc(&pct(c.paired_rate))
        );
    }
    o.push_str("</table>");
}

/// `N calls (held back: M quota_reserve, K rate_limited)`.
fn spend_text(s: &crate::store::Spend) -> String {
    let mut t = format!("{} calls", s.candidate_calls);
    if !s.held_back.is_empty() {
        let held: Vec<String> = s
            .held_back
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        t.push_str(&format!(" (held back: {})", held.join(", ")));
    }
    t
}

/// The accounts needing re-auth, each with since when.
fn reauth_list(r: &Report) -> String {
    r.account_health
        .iter()
        .filter(|h| h.state == crate::store::NEEDS_REAUTH)
        .map(|h| format!("{} (since {})", h.account, h.since))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mapping versions judged on recorded traffic (nothing when none was recorded).
fn rediffs_markdown(o: &mut String, rows: &[crate::store::RediffRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Rediffs (recorded traffic judged again, not live)\n\n| when | route | mapping version | exchanges | parity recorded → rediff | fixed | broken | from |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} → {} | {} | {} | {} |",
            md_text(&r.at),
            md_text(&r.route),
            md_text(r.mapping_version.as_deref().unwrap_or("none")),
            r.exchanges,
            pct_of(r.recorded_matched, r.exchanges),
            pct_of(r.matched, r.exchanges),
            r.fixed,
            r.broken,
            md_text(&r.source)
        );
    }
}

fn pct_of(n: u64, of: u64) -> String {
    format!("{:.1}%", n as f64 * 100.0 / of.max(1) as f64)
}

/// [`rediffs_markdown`] in HTML.
fn rediffs_html(o: &mut String, rows: &[crate::store::RediffRow]) {
    if rows.is_empty() {
        return;
    }
    o.push_str("<h2>Rediffs</h2><p>Recorded traffic judged again with another mapping version (<code>rediff --record</code>): not live traffic.</p><table><tr><th>when</th><th>route</th><th>mapping version</th><th>exchanges</th><th>parity recorded → rediff</th><th>fixed</th><th>broken</th><th>from</th></tr>");
    for r in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.at),
            esc(&r.route),
            esc(r.mapping_version.as_deref().unwrap_or("none")),
            r.exchanges,
            pct_of(r.recorded_matched, r.exchanges),
            pct_of(r.matched, r.exchanges),
            r.fixed,
            r.broken,
            esc(&r.source)
        );
    }
    o.push_str("</table>");
}

/// The rollout section (nothing when no phase served anyone and nothing changed).
fn rollout_markdown(o: &mut String, r: &crate::report::RolloutSection) {
    if r.cohort_requests == 0 && r.events.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Rollout\n");
    if r.cohort_requests > 0 {
        let _ = writeln!(
            o,
            "Candidate cohort: {} requests, {} served by the candidate, {} by legacy after a fallback{}{}\n",
            r.cohort_requests,
            r.served_by_candidate,
            r.fallbacks.values().sum::<u64>(),
            md_text(&fallback_list(r)),
            served_parity(r)
        );
    }
    if !r.events.is_empty() {
        let _ = writeln!(o, "| when | from | to | by | why |\n|---|---|---|---|---|");
        for e in &r.events {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                md_text(&e.at),
                md_text(e.from.as_deref().unwrap_or("-")),
                md_text(&e.to),
                md_text(&e.actor),
                md_text(e.reason.as_deref().unwrap_or(""))
            );
        }
    }
}

/// "; strict served parity 97.50% (195 of 200 compared)", when any cohort exchange was compared.
fn served_parity(r: &crate::report::RolloutSection) -> String {
    if r.served_compared == 0 {
        return String::new();
    }
    format!(
        "; strict served parity {:.2}% ({} of {} compared)",
        r.served_matched as f64 * 100.0 / r.served_compared as f64,
        r.served_matched,
        r.served_compared
    )
}

fn fallback_list(r: &crate::report::RolloutSection) -> String {
    if r.fallbacks.is_empty() {
        return String::new();
    }
    let list: Vec<String> = r
        .fallbacks
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(" ({})", list.join(", "))
}

/// Text from the data (a vendor's field name, a caller's account, a reason typed by somebody)
/// as literal Markdown text: the characters that can open inline markup (`\\`, backtick, `*`,
/// `_`, `[`, `]`, `<`, `>`, `&`, `|`, `~`) backslash-escaped (CommonMark lets any ASCII
/// punctuation be, and GFM tables read `\|` as a pipe inside the cell), line breaks folded into
/// spaces. The data never starts a line (a template's text comes first), so line-start
/// constructs (headings, lists, quotes) cannot begin in it either. No emphasis, link, code span,
/// entity or raw HTML can start in it, and the rest (`cli:alice`, `a-b`) reads as it is.
pub(crate) fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text from the data as a code span that holds whatever it contains: fenced by one backtick
/// more than its longest run of backticks, padded when it starts or ends with one, line
/// breaks folded. Outside tables only (a pipe in a table cell splits it even in code: use
/// [`md_text`] there).
pub(crate) fn md_code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.trim().is_empty() {
        return md_text(&s);
    }
    let (mut run, mut longest) = (0, 0);
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') || (s.starts_with(' ') && s.ends_with(' '))
    {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// The rollout section in HTML (the report's and the dashboard's).
pub fn rollout_html(o: &mut String, r: &crate::report::RolloutSection) {
    if r.cohort_requests == 0 && r.events.is_empty() {
        return;
    }
    o.push_str("<h2>Rollout</h2>");
    if r.cohort_requests > 0 {
        let _ = write!(
            o,
            "<p>Candidate cohort: {} requests, {} served by the candidate, {} by legacy after a fallback{}{}</p>",
            r.cohort_requests,
            r.served_by_candidate,
            r.fallbacks.values().sum::<u64>(),
            esc(&fallback_list(r)),
            esc(&served_parity(r))
        );
    }
    if !r.events.is_empty() {
        o.push_str("<table><tr><th>when</th><th>from</th><th>to</th><th>by</th><th>why</th></tr>");
        for e in &r.events {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.at),
                esc(e.from.as_deref().unwrap_or("-")),
                esc(&e.to),
                esc(&e.actor),
                esc(e.reason.as_deref().unwrap_or(""))
            );
        }
        o.push_str("</table>");
    }
}

/// ", 12 of them noise only" when some compared exchanges differed only at noise fields.
fn noise_note(c: &Counts) -> String {
    if c.noise_only == 0 {
        String::new()
    } else {
        format!("; {} of them differ only in noise", c.noise_only)
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; --legacy: #0550ae; --candidate: #8250df; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 0; background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
.muted { color: var(--muted); }
.class-systematic { color: var(--bad); font-weight: 600; }
.class-sporadic { color: var(--warn); }
.class-noise { color: var(--muted); }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; background: var(--bg); }
.card b { display: block; font-size: 22px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--bg); padding: 8px; border-radius: 6px; overflow-x: auto; margin: 4px 0; max-height: 260px; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
.pill { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 12px; background: var(--bg); border: 1px solid var(--line); }
.del { color: var(--legacy); } .add { color: var(--candidate); }
.fix { color: #1f2328; font-size: 13px; }
"#;

/// Parity as shown to people: "–" when nothing was compared (the JSON keeps 1.0).
/// A table cell's parity: a dash where nothing was compared.
pub fn parity_text(c: &Counts) -> String {
    if c.compared == 0 {
        "–".to_owned()
    } else {
        pct(c.parity)
    }
}

pub fn parity_cls(c: &Counts) -> &'static str {
    if c.compared == 0 {
        "muted"
    } else {
        parity_class(c.parity)
    }
}

fn parity_class(p: f64) -> &'static str {
    if p >= 0.99 {
        "ok"
    } else if p >= 0.95 {
        "warn"
    } else {
        "bad"
    }
}

pub fn html(r: &Report) -> String {
    let t = &r.totals;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>shadowdiff parity {}</title><style>{CSS}</style></head><body><main>",
        esc(&t.parity_text())
    );
    let _ = write!(
        o,
        "<h1>shadowdiff parity report</h1><div class=\"muted\">{} → {}{}</div>",
        esc(&r.window.from),
        esc(&r.window.to),
        super::widened_note(&r.window)
    );
    if r.filtered_from_kept_rows {
        let _ = write!(
            o,
            "<p class=\"muted\">Note: {}.</p>",
            esc(super::FROM_KEPT_ROWS)
        );
    }
    let _ = write!(
        o,
        "<div class=\"cards\"><div class=\"card\">parity<b class=\"{}\">{}</b></div><div class=\"card\">compared<b>{}</b></div><div class=\"card\">matched<b>{}</b></div><div class=\"card\">exchanges<b>{}</b></div></div>",
        parity_cls(t),
        t.parity_text(),
        t.compared,
        t.matched,
        t.exchanges
    );
    gates_html(&mut o, &r.gates);
    o.push_str("<h2>Outcomes</h2><p>");
    for (k, v) in &t.outcomes {
        let _ = write!(o, "<span class=\"pill\">{} <b>{v}</b></span> ", esc(k));
    }
    o.push_str("</p><h2>Routes</h2>");
    o.push_str("<table><tr><th>route</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th class=\"num\">exchanges</th><th class=\"num\">legacy p50 / p99 ms</th><th class=\"num\">candidate p50 / p99 ms</th><th>outcomes</th></tr>");
    for rt in &r.routes {
        let l = &rt.latency_ms;
        let _ = write!(
            o,
            "<tr><td><a href=\"#route-{id}\">{name}</a></td><td class=\"num {cls}\">{p}</td><td class=\"num\">{c}</td><td class=\"num\">{e}</td><td class=\"num\">{:.1} / {:.1}</td><td class=\"num\">{:.1} / {:.1}</td><td>{out}</td></tr>",
            l.legacy_p50,
            l.legacy_p99,
            l.candidate_p50,
            l.candidate_p99,
            id = esc(&anchor(&rt.route)),
            name = esc(&rt.route),
            cls = parity_cls(&rt.counts),
            p = parity_text(&rt.counts),
            c = rt.counts.compared,
            e = rt.counts.exchanges,
            out = esc(&outcomes_line(&rt.counts)),
        );
    }
    o.push_str("</table>");
    for rt in &r.routes {
        route_section(&mut o, rt);
    }
    rollout_html(&mut o, &r.rollout);
    rediffs_html(&mut o, &r.rediffs);
    triage_html(&mut o, &r.triage);
    ids_html(&mut o, &r.ids);
    o.push_str("<h2>Accounts</h2>");
    let _ = write!(
        o,
        "<p>Candidate quota spent by shadow traffic: {}</p>",
        esc(&spend_text(&r.shadow_spend))
    );
    if !r.needs_reauth.is_empty() {
        let _ = write!(
            o,
            "<p><b class=\"bad\">Needs re-auth</b> (candidate 401/403 in a row while legacy succeeded): {}</p>",
            esc(&reauth_list(r))
        );
    }
    if r.accounts.is_empty() {
        o.push_str("<p class=\"muted\">No exchange was attributed to an account (see <code>[accounts]</code>).</p>");
    } else {
        if let Some(n) = r.account_fields_over {
            let _ = write!(
                o,
                "<p class=\"muted\">Each account's differing fields are counted over the window's latest {n} exchanges.</p>"
            );
        }
        o.push_str("<table><tr><th>account</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th class=\"num\">exchanges</th><th>outcomes</th><th>differing fields (exchanges)</th></tr>");
        for a in &r.accounts {
            let fields: Vec<String> = a
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{} <code>{}</code> {} ({})",
                        esc(&f.route),
                        esc(&f.field),
                        esc(&f.kind),
                        f.exchanges
                    )
                })
                .collect();
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"num {}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.account),
                parity_cls(&a.counts),
                parity_text(&a.counts),
                a.counts.compared,
                a.counts.exchanges,
                esc(&outcomes_line(&a.counts)),
                fields.join("<br>")
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<p class=\"muted\">Generated by shadowdiff. Parity = (matched + differing only in noise) / compared exchanges; rate = exchanges with the difference / compared exchanges of the route; class: systematic = differs in at least the systematic rate of the exchanges where the field is present (a mapping gap), sporadic = less often (data drift), noise = legacy itself differs there.</p></main></body></html>\n");
    o
}

/// The verdicts of the config's gates (a report run with a config that has them).
fn gates_html(o: &mut String, gates: &[crate::report::Verdict]) {
    if gates.is_empty() {
        return;
    }
    o.push_str(
        "<h2>Gate</h2><table><tr><th>phase</th><th>verdict</th><th>failing criteria</th></tr>",
    );
    for v in gates {
        let failing: Vec<String> = v
            .failing()
            .map(|c| {
                format!(
                    "{} ({}): {} vs {}{}",
                    esc(&c.criterion),
                    esc(&c.scope),
                    c.measured
                        .map_or_else(|| "not measured".to_owned(), |m| format!("{m:.4}")),
                    c.threshold,
                    c.note
                        .as_ref()
                        .map_or_else(String::new, |n| format!(" · {}", esc(n)))
                )
            })
            .collect();
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\"><b>{}</b></td><td>{}</td></tr>",
            esc(&v.phase),
            if v.pass { "ok" } else { "bad" },
            if v.pass { "may be promoted" } else { "refused" },
            if failing.is_empty() {
                "–".to_owned()
            } else {
                failing.join("<br>")
            }
        );
    }
    o.push_str("</table>");
}

fn anchor(route: &str) -> String {
    route
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Field patterns listed in a route's HTML coverage table at most (the least compared first).
const HTML_COVERAGE: usize = 50;

/// A route's field coverage: the least compared fields and those never exercised.
fn coverage_html(o: &mut String, c: &crate::coverage::RouteCoverage) {
    if c.fields.is_empty() && c.unexercised.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<h3>Field coverage</h3><p class=\"muted\">{} field patterns compared; the least compared first</p><table><tr><th>field</th><th class=\"num\">compared in</th><th class=\"num\">differing</th><th class=\"num\">parity</th></tr>",
        c.fields.len()
    );
    for f in c.fields.iter().take(HTML_COVERAGE) {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&f.field),
            f.compared,
            f.differing,
            pct(f.parity)
        );
    }
    o.push_str("</table>");
    if !c.unexercised.is_empty() {
        o.push_str("<p><b>Never exercised in the window</b>: ");
        let list: Vec<String> = c
            .unexercised
            .iter()
            .map(|u| format!("<code>{}</code> ({})", esc(&u.field), u.known_from))
            .collect();
        o.push_str(&list.join(", "));
        o.push_str("</p>");
    }
}

fn route_section(o: &mut String, rt: &RouteReport) {
    let _ = write!(
        o,
        "<h2 id=\"route-{}\">{}</h2><div class=\"muted\">parity <b class=\"{}\">{}</b> · {} compared · {} exchanges</div>",
        esc(&anchor(&rt.route)),
        esc(&rt.route),
        parity_cls(&rt.counts),
        parity_text(&rt.counts),
        rt.counts.compared,
        rt.counts.exchanges
    );
    if !rt.mapping_versions.is_empty() {
        o.push_str("<h3>Mapping versions</h3><table><tr><th>version</th><th>first seen</th><th>last seen</th><th class=\"num\">compared</th><th class=\"num\">parity</th></tr>");
        for v in &rt.mapping_versions {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&v.version),
                esc(&v.first_seen),
                esc(&v.last_seen),
                v.compared,
                pct(v.parity)
            );
        }
        o.push_str("</table>");
    }
    if let Some(c) = &rt.coverage {
        coverage_html(o, c);
    }
    if rt.trend.len() > 1 {
        let _ = write!(o, "<h3>Parity per {}</h3>", esc(&rt.trend_bucket));
        o.push_str(&trend_svg(&rt.trend));
    }
    if rt.fields.is_empty() {
        o.push_str("<p class=\"muted\">No differing field.</p>");
        return;
    }
    o.push_str("<h3>Differing fields</h3><table><tr><th>field</th><th>kind</th><th>class</th><th class=\"num\">exchanges</th><th class=\"num\">rate</th><th class=\"num\">present in</th><th class=\"num\">rows</th><th>example (legacy → candidate)</th></tr>");
    for f in &rt.fields {
        let mut fix = f.likely_fix.as_ref().map_or_else(String::new, |fix| {
            format!(
                "<div class=\"fix\"><b>likely fix</b>: {} · checked proposals: <code>shadowdiff suggest --route {}</code></div>",
                esc(fix),
                esc(&rt.route)
            )
        });
        if let Some(t) = &f.triage {
            let _ = write!(
                fix,
                "<div class=\"triage\"><b>triage</b>: {}</div>",
                esc(&triage_text(t))
            );
        }
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"class-{c}\">{c}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}<div class=\"muted\">exchange #{}</div>{fix}</td></tr>",
            esc(&f.field),
            esc(&f.kind),
            f.exchanges,
            pct(f.rate),
            f.present,
            f.count,
            example(f),
            f.example.exchange_id,
            c = f.class.as_str(),
        );
    }
    o.push_str("</table>");
    if !rt.noise.is_empty() {
        o.push_str("<h3>Noise learned from second legacy calls</h3><table><tr><th>field</th><th class=\"num\">differed</th><th class=\"num\">legacy pairs</th><th>last seen</th></tr>");
        for n in &rt.noise {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&n.field),
                n.differed,
                n.samples,
                esc(&n.last_at)
            );
        }
        o.push_str("</table>");
    }
}

/// Small values side by side; larger ones as a unified diff of their pretty-printed JSON.
fn example(f: &FieldStat) -> String {
    let (l, c) = (&f.example.legacy, &f.example.candidate);
    let side = |v: &Value, absent: bool| {
        if absent {
            "(absent)".to_owned()
        } else {
            v.to_string()
        }
    };
    let (ls, cs) = (side(l, f.kind == "extra"), side(c, f.kind == "missing"));
    if ls.len() <= INLINE_VALUE && cs.len() <= INLINE_VALUE {
        return format!(
            "<code class=\"del\">{}</code> → <code class=\"add\">{}</code>",
            esc(&ls),
            esc(&cs)
        );
    }
    let pretty = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
        }
    };
    let (lp, cp) = (pretty(l), pretty(c));
    let diff = similar::TextDiff::from_lines(&lp, &cp);
    let mut out = String::from("<pre>");
    for change in diff.iter_all_changes() {
        let (class, sign) = match change.tag() {
            similar::ChangeTag::Delete => ("del", '-'),
            similar::ChangeTag::Insert => ("add", '+'),
            similar::ChangeTag::Equal => ("", ' '),
        };
        let _ = write!(
            out,
            "<span class=\"{class}\">{sign}{}</span>",
            esc(&change.to_string())
        );
    }
    out.push_str("</pre>");
    out
}

/// A line chart of daily parity (0–100 %), inline SVG.
pub fn trend_svg(days: &[Day]) -> String {
    let (w, h, pad) = (640.0, 160.0, 28.0);
    let n = days.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |p: f64| pad / 2.0 + (h - pad * 1.5) * (1.0 - p);
    let mut points = String::new();
    for (i, d) in days.iter().enumerate() {
        let _ = write!(points, "{:.1},{:.1} ", x(i), y(d.parity));
    }
    let mut s = format!(
        "<svg role=\"img\" aria-label=\"daily parity\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\" font-family=\"sans-serif\">"
    );
    for p in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/><text x=\"2\" y=\"{:.1}\" fill=\"#57606a\">{}%</text>",
            w - pad,
            y(p) + 3.0,
            (p * 100.0) as u32,
            y = y(p)
        );
    }
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{}\"/>",
        points.trim()
    );
    for (i, d) in days.iter().enumerate() {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#0969da\"><title>{} {} ({} compared)</title></circle>",
            x(i),
            y(d.parity),
            esc(&d.day),
            pct(d.parity),
            d.compared
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            "<text x=\"{pad}\" y=\"{h}\" fill=\"#57606a\">{}</text><text x=\"{}\" y=\"{h}\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            esc(&first.day),
            w - pad,
            esc(&last.day)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    fn events(md: &str) -> Vec<Event<'_>> {
        Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).collect()
    }

    fn no_html(md: &str) -> Result<(), String> {
        match events(md)
            .iter()
            .find(|e| matches!(e, Event::Html(_) | Event::InlineHtml(_)))
        {
            Some(e) => Err(format!("raw HTML {e:?} in {md:?}")),
            None => Ok(()),
        }
    }

    fn texts(md: &str) -> String {
        events(md)
            .into_iter()
            .filter_map(|e| match e {
                Event::Text(t) | Event::Code(t) => Some(t.into_string()),
                Event::SoftBreak => Some(" ".into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_reported_injection_is_inert() {
        let field = "/x`<img src=x onerror=alert(1)>`";
        let md = format!("- {} changed\n", md_code(field));
        no_html(&md).unwrap();
        assert_eq!(texts(&md), format!("{field} changed"));
        let cell = format!("| a | b |\n|---|---|\n| {} | 1 |\n", md_text("<b>x</b>|y"));
        no_html(&cell).unwrap();
        assert!(texts(&cell).contains("<b>x</b>|y"));
    }

    proptest::proptest! {
        /// Whatever the string, it comes out as literal text: no raw HTML, no markup, the
        /// table keeps its two cells.
        #[test]
        fn data_in_markdown_stays_literal(s in "\\PC{0,40}|[`<>|&\\\\*_\\[\\]()!# a-z\\n-]{0,40}") {
            let folded = s.replace(['\n', '\r'], " ");
            let para = format!("**route**: {} and {}\n", md_text(&s), md_code(&s));
            no_html(&para).map_err(proptest::test_runner::TestCaseError::fail)?;
            let cell = format!("| a | b |\n|---|---|\n| {} | z |\n", md_text(&s));
            no_html(&cell).map_err(proptest::test_runner::TestCaseError::fail)?;
            let cells = events(&cell)
                .iter()
                .filter(|e| matches!(e, Event::Start(Tag::TableCell)))
                .count();
            proptest::prop_assert_eq!(cells, 4, "{:?}", cell);
            let item = format!("- a {} x\n", md_text(&s));
            let (got, want) = (texts(&item), format!("a {folded} x"));
            proptest::prop_assert_eq!(got.trim(), want.trim(), "{:?}", item);
            let code = format!("- {} x\n", md_code(&s));
            no_html(&code).map_err(proptest::test_runner::TestCaseError::fail)?;
            let ends = events(&code).iter().filter(|e| matches!(e, Event::End(TagEnd::Item))).count();
            proptest::prop_assert_eq!(ends, 1, "{:?}", code);
        }
    }
}
