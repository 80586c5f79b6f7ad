//! The dashboard's pages, rendered on the server (readable without JavaScript; a little script
//! refreshes the live part and keeps what the reader expanded):
//!
//! | page | what |
//! |---|---|
//! | `/` | overview: parity, the rollout phase, each gate's verdict, routes, latest exchanges |
//! | `/route/{name}` | a route: parity over time, outcomes, latency legacy vs candidate, mapping versions, its differing fields with class, rate, presence and likely fix |
//! | `/route/{name}/field?field=F` | a field: its kinds, examples (exchange by exchange), which accounts, first and last seen |
//! | `/exchange/{id}` | an exchange: both kept documents aligned line by line with the differing values marked in place (noise apart), headers, outcome, timings, mapping version, who served it (phase, fallback), the previous and next example, the candidate's raw document |
//! | `/accounts` | every account: health (who needs re-auth), parity, outcomes, differing fields |
//!
//! Every page takes the same filters (`since`, `route`, `account`, `outcome`, `class`,
//! `version`, `noise=hide`; [`View`]) and carries them in its links. An error is a page too
//! ([`error_page`]): the message and the way back.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::view::{enc, View, CLASSES, OUTCOMES, WINDOWS};
use super::{with_store, AdminError, AdminState, MAX_SHOWN_DIFFS};
use crate::record::RouteKey;
use crate::report::render::{esc, outcomes_line, parity_cls, parity_text, pct, trend_svg};
use crate::report::{self, Report, RouteReport};
use crate::store::{ExchangeQuery, KeptSide, Reader};

/// Exchanges listed on the overview and a field's page.
const LISTED: usize = 20;

/// A page in the dashboard's style: `body` inside the page, the refresh script when `live`.
pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · shadowdiff</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\"></head>\
         <body><main>{body}</main><script src=\"/assets/dashboard.js\"></script></body></html>",
        esc(title)
    )
}

/// `/assets/dashboard.css` and `/assets/dashboard.js`: the pages' style and script as files of
/// the listener, so the Content-Security-Policy allows no inline script; public (the sign-in
/// page uses them) and cached for an hour.
pub(super) fn asset(path: &str) -> Option<http::Response<http_body_util::Full<bytes::Bytes>>> {
    let (body, kind) = match path {
        "/assets/dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "/assets/dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
        body.as_bytes(),
    )));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=3600"),
    );
    Some(res)
}

/// The navigation bar and the filter form (a `GET` to the page itself).
fn header(state: &AdminState, title: &str, path: &str, v: &View, r: &Report) -> String {
    let mut o = format!(
        "<nav><a href=\"/?{q}\">overview</a> · <a href=\"/accounts?{q}\">accounts</a>{}</nav><h1>{title}</h1>",
        if state.token.is_some() {
            " · <a href=\"/logout\">sign out</a>"
        } else {
            ""
        },
        q = v.query()
    );
    let select = |name: &str, current: Option<&str>, options: &[String], all: &str| {
        let mut s = format!(
            "<label>{name} <select name=\"{name}\" data-submit><option value=\"\">{all}</option>"
        );
        let mut seen = false;
        for opt in options {
            let sel = current == Some(opt.as_str());
            seen |= sel;
            let _ = write!(
                s,
                "<option{}>{}</option>",
                if sel { " selected" } else { "" },
                esc(opt)
            );
        }
        if let (Some(c), false) = (current, seen) {
            let _ = write!(s, "<option selected>{}</option>", esc(c));
        }
        s.push_str("</select></label> ");
        s
    };
    let windows: Vec<String> = WINDOWS.iter().map(|w| (*w).to_owned()).collect();
    let routes: Vec<String> = r.routes.iter().map(|r| r.route.clone()).collect();
    let accounts: Vec<String> = r.accounts.iter().map(|a| a.account.clone()).collect();
    let outcomes: Vec<String> = OUTCOMES.iter().map(|w| (*w).to_owned()).collect();
    let classes: Vec<String> = CLASSES.iter().map(|w| (*w).to_owned()).collect();
    let mut versions: Vec<String> = r
        .routes
        .iter()
        .flat_map(|r| r.mapping_versions.iter().map(|v| v.version.clone()))
        .collect();
    versions.sort();
    versions.dedup();
    let since = select("since", Some(&v.since), &windows, "1h").replacen(
        "<option value=\"\">1h</option>",
        "",
        1,
    );
    let _ = write!(
        o,
        "<form method=\"get\" action=\"{}\" class=\"filters\" id=\"filters\">{since}{}{}{}{}{}<label><input type=\"checkbox\" name=\"noise\" value=\"hide\"{} data-submit> hide noise</label> <button type=\"submit\">apply</button> <a href=\"{}\">clear</a></form>",
        esc(path),
        select("route", v.route.as_deref(), &routes, "all routes"),
        select("account", v.account.as_deref(), &accounts, "all accounts"),
        select("outcome", v.outcome.as_deref(), &outcomes, "any outcome"),
        select("class", v.class.as_deref(), &classes, "any class"),
        select("version", v.version.as_deref(), &versions, "any mapping version"),
        if v.hide_noise { " checked" } else { "" },
        esc(path),
    );
    o
}

/// The report of a view (details included).
fn report_of(state: &AdminState, store: &dyn Reader, v: &View) -> Result<Report, AdminError> {
    let f = v.filter().map_err(AdminError::BadParameter)?;
    let opts = report::Options {
        details: true,
        classes: state.classes,
        references: state.references.clone(),
    };
    Ok(report::build_with(store, &f, &opts)?)
}

fn route_href(route: &str, v: &View) -> String {
    format!("/route/{}?{}", enc(route), v.query())
}

fn field_href(route: &str, field: &str, v: &View) -> String {
    format!(
        "/route/{}/field?field={}&{}",
        enc(route),
        enc(field),
        v.query()
    )
}

fn exchange_href(id: i64, field: Option<&str>, v: &View) -> String {
    format!(
        "/exchange/{id}?{}{}",
        field.map_or_else(String::new, |f| format!("field={}&", enc(f))),
        v.query()
    )
}

/// `/`: the overview.
pub(super) fn overview(state: &AdminState, v: &View) -> Result<String, AdminError> {
    with_store(state, |store| {
        let r = report_of(state, store, v)?;
        let f = v.filter().map_err(AdminError::BadParameter)?;
        let gates = match &state.rollout {
            Some(h) => crate::gate::verdicts(store, &h.shadow.config(), &f, &r)?,
            None => Vec::new(),
        };
        let latest = store.exchanges(
            &f,
            &ExchangeQuery {
                outcome: Some(v.outcome.clone().unwrap_or_else(|| "diff".into())),
                limit: LISTED,
                ..ExchangeQuery::default()
            },
        )?;
        let mut details = Vec::new();
        for e in latest.iter().take(10) {
            if let Some(d) = store.exchange(e.id, MAX_SHOWN_DIFFS)? {
                details.push(d);
            }
        }
        let mut o = header(
            state,
            &format!(
                "shadowdiff <span class=\"muted\">live · last {}</span>",
                esc(&v.since)
            ),
            "/",
            v,
            &r,
        );
        o.push_str("<div id=\"live\">");
        let t = &r.totals;
        let phase = state.rollout.as_ref().map_or_else(String::new, |h| {
            let active = h.shadow.rollout.active();
            let cfg = h.shadow.config();
            let percent = cfg.rollout.phases.get(&*active.phase).map(|d| d.percent);
            format!(
                "<div class=\"card\">rollout phase<b id=\"phase\">{}</b>{}</div>",
                esc(&active.phase),
                percent.map_or_else(String::new, |x| format!(
                    "<span class=\"muted\">{x}% of accounts on the candidate</span>"
                ))
            )
        });
        let _ = write!(
            o,
            "<div class=\"cards\"><div class=\"card\">parity<b id=\"parity\" class=\"{}\">{}</b></div><div class=\"card\">compared<b>{}</b></div><div class=\"card\">exchanges<b>{}</b></div>{phase}</div>",
            parity_cls(t),
            t.parity_text(),
            t.compared,
            t.exchanges
        );
        if r.window.widened {
            let _ = write!(
                o,
                "<p class=\"muted\" id=\"widened\">{} → {}{}</p>",
                esc(&r.window.from),
                esc(&r.window.to),
                esc(report::widened_note(&r.window))
            );
        }
        if !r.needs_reauth.is_empty() {
            let _ = write!(
                o,
                "<p><b class=\"bad\">Needs re-auth</b> (candidate 401/403 in a row while legacy succeeded): {} · <a href=\"/accounts?{}\">accounts</a></p>",
                esc(&r.needs_reauth.join(", ")),
                v.query()
            );
        }
        if !r.ids.is_empty() {
            // The crosswalk per account and kind: the least paired first.
            let mut ids: Vec<&crate::store::IdCoverage> = r.ids.iter().collect();
            ids.sort_by(|a, b| a.paired_rate.total_cmp(&b.paired_rate));
            o.push_str("<h2>Ids</h2><table id=\"ids\"><tr><th>account</th><th>kind</th><th class=\"num\">ids paired</th><th class=\"num\">pairs</th><th class=\"num\">unpaired (legacy / candidate)</th><th class=\"num\">conflicts</th></tr>");
            for c in ids.iter().take(20) {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td class=\"num {}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td><td class=\"num\">{}</td></tr>",
                    esc(&c.account),
                    esc(&c.kind),
                    if c.paired_rate >= 0.99 { "good" } else { "bad" },
                    esc(&crate::report::render::pct(c.paired_rate)),
                    c.paired,
                    c.unpaired_legacy,
                    c.unpaired_candidate,
                    c.conflicts
                );
            }
            o.push_str("</table>");
            if ids.len() > 20 {
                let _ = write!(
                    o,
                    "<p class=\"muted\">{} more in <a href=\"/api/ids\">/api/ids</a></p>",
                    ids.len() - 20
                );
            }
        }
        if !gates.is_empty() {
            o.push_str("<h2>Gates</h2><table id=\"gates\"><tr><th>phase</th><th>verdict over the window</th><th>failing criteria</th></tr>");
            for g in &gates {
                let failing: Vec<String> = g
                    .failing()
                    .map(|c| {
                        format!(
                            "{} ({}): {} vs {}",
                            esc(&c.criterion),
                            esc(&c.scope),
                            c.measured
                                .map_or_else(|| "not measured".into(), |m| format!("{m:.4}")),
                            c.threshold
                        )
                    })
                    .collect();
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                    esc(&g.phase),
                    if g.pass { "ok" } else { "bad" },
                    if g.pass { "passes" } else { "fails" },
                    if failing.is_empty() {
                        "–".into()
                    } else {
                        failing.join("<br>")
                    }
                );
            }
            o.push_str("</table>");
        }
        crate::report::render::rollout_html(&mut o, &r.rollout);
        o.push_str("<h2>Routes</h2><table id=\"routes\"><tr><th>route</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th>outcomes</th><th>top differing fields</th></tr>");
        for rt in &r.routes {
            let fields: Vec<String> = rt
                .fields
                .iter()
                .filter(|f| v.shows_class(f.class.as_str()))
                .take(3)
                .map(|f| {
                    format!(
                        "<a href=\"{}\"><code>{}</code></a> {} ({})",
                        esc(&field_href(&rt.route, &f.field, v)),
                        esc(&f.field),
                        esc(&f.kind),
                        f.exchanges
                    )
                })
                .collect();
            let _ = write!(
                o,
                "<tr class=\"route\"><td><a href=\"{}\">{}</a></td><td class=\"num {}\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&route_href(&rt.route, v)),
                esc(&rt.route),
                parity_cls(&rt.counts),
                parity_text(&rt.counts),
                rt.counts.compared,
                esc(&outcomes_line(&rt.counts)),
                fields.join("<br>")
            );
        }
        if r.routes.is_empty() {
            o.push_str(
                "<tr><td colspan=\"5\" class=\"muted\">No exchange in the window.</td></tr>",
            );
        }
        o.push_str("</table>");
        let _ = write!(
            o,
            "<h2>Latest exchanges <span class=\"muted\">{}</span></h2>",
            esc(v.outcome.as_deref().unwrap_or("diff"))
        );
        if details.is_empty() {
            o.push_str("<p class=\"muted\">None in the window.</p>");
        }
        for d in &details {
            let e = &d.exchange;
            let _ = write!(
                o,
                "<details data-key=\"x{id}\"><summary>#{id} {} {} · {} · {} · {} · {} differences</summary><p><a href=\"{}\">open exchange #{id}</a></p>",
                esc(e.method.as_deref().unwrap_or("")),
                esc(e.path.as_deref().unwrap_or("")),
                esc(RouteKey::from_route(e.route.as_deref()).label()),
                esc(e.account.as_deref().unwrap_or("no account")),
                esc(&e.outcome),
                e.diff_count,
                esc(&exchange_href(e.id, None, v)),
                id = e.id,
            );
            diff_table(&mut o, &d.differences, None, &HashSet::new());
            o.push_str("</details>");
        }
        o.push_str("</div><p class=\"muted\" id=\"updated\">rendered by the server</p>");
        Ok(page("shadowdiff", &o))
    })
}

/// A table of stored differences (the rows at `field` marked; those at a field learned as
/// noise, `noise`, marked as such: legacy itself answers it differently from one call to the
/// next).
fn diff_table(
    o: &mut String,
    diffs: &[crate::store::DiffRow],
    field: Option<&str>,
    noise: &HashSet<&str>,
) {
    o.push_str("<table id=\"differences\"><tr><th>pointer</th><th>kind</th><th class=\"legacy\">legacy</th><th class=\"candidate\">candidate</th></tr>");
    for d in diffs {
        let show = |v: &Option<Value>| match v {
            None => "(absent)".to_owned(),
            Some(v) => esc(&v.to_string()),
        };
        let is_noise = noise.contains(d.field.as_str());
        let class = match (field.is_some_and(|f| d.field == f), is_noise) {
            (true, true) => " class=\"hit noise\"",
            (true, false) => " class=\"hit\"",
            (false, true) => " class=\"noise\"",
            (false, false) => "",
        };
        let _ = write!(
            o,
            "<tr{class}><td><code>{}</code></td><td>{}{}</td><td><code class=\"legacy\">{}</code></td><td><code class=\"candidate\">{}</code></td></tr>",
            esc(&d.pointer),
            esc(&d.kind),
            if is_noise {
                " <span class=\"tag-noise\" title=\"learned as noise: legacy answers this field differently from one call to the next\">noise</span>"
            } else {
                ""
            },
            show(&d.legacy),
            show(&d.candidate)
        );
    }
    o.push_str("</table>");
}

/// A field's triage: its marks (by kind) and their audit trail, with how to change them.
fn triage_section(
    o: &mut String,
    store: &dyn Reader,
    r: &Report,
    route: &str,
    field: &str,
) -> Result<(), AdminError> {
    let stored = if route == crate::record::UNMATCHED {
        ""
    } else {
        route
    };
    let marks: Vec<_> = r
        .triage
        .iter()
        .filter(|t| t.mark.pattern.route == stored && t.mark.pattern.field == field)
        .collect();
    let trail: Vec<_> = store
        .triage_log(500)?
        .into_iter()
        .filter(|e| e.pattern.route == stored && e.pattern.field == field)
        .take(20)
        .collect();
    o.push_str("<h2>Triage</h2>");
    if marks.is_empty() {
        o.push_str("<p class=\"muted\" id=\"triage\">Not triaged.</p>");
    } else {
        o.push_str("<table id=\"triage\"><tr><th>kind</th><th>mark</th></tr>");
        for t in &marks {
            let _ = write!(
                o,
                "<tr class=\"triage-{}\"><td>{}</td><td>{}</td></tr>",
                t.mark.status.as_str(),
                esc(if t.mark.pattern.kind.is_empty() {
                    "every kind"
                } else {
                    &t.mark.pattern.kind
                }),
                esc(&crate::report::render::triage_text(t))
            );
        }
        o.push_str("</table>");
    }
    if !trail.is_empty() {
        o.push_str("<details data-key=\"triage-log\"><summary>audit trail</summary><table id=\"triage-log\"><tr><th>when</th><th>what</th><th>kind</th><th>status</th><th>who</th><th>reason</th><th>ticket</th><th>until</th></tr>");
        for e in &trail {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.at),
                esc(&e.action),
                esc(if e.pattern.kind.is_empty() { "every kind" } else { &e.pattern.kind }),
                esc(e.status.as_deref().unwrap_or("–")),
                esc(&e.by),
                esc(e.reason.as_deref().unwrap_or("–")),
                esc(e.ticket.as_deref().unwrap_or("–")),
                esc(e.expires.as_deref().unwrap_or("–")),
            );
        }
        o.push_str("</table></details>");
    }
    let _ = write!(
        o,
        "<p class=\"muted\">Mark it with <code>shadowdiff triage mark --route {} --field {} --status accepted --reason … --ticket … --expires 30d</code> (or <code>POST /api/triage</code>).</p>",
        esc(&shell_quoted(route)),
        esc(&shell_quoted(field))
    );
    Ok(())
}

/// `s` as one word for a POSIX shell (single-quoted): a field from an address pasted into a
/// terminal runs nothing.
fn shell_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A page saying what went wrong (a bad parameter, an unknown route or exchange), with the way
/// back: the overview, and `path` with its default filters.
pub(super) fn error_page(status: http::StatusCode, path: &str, message: &str) -> String {
    page(
        &status.as_u16().to_string(),
        &format!(
            "<nav><a href=\"/\">overview</a></nav><h1>{} <span class=\"muted\">{}</span></h1>\
             <p class=\"bad\" id=\"error\">{}</p>\
             <p><a href=\"/\">back to the overview</a> · <a href=\"{}\">this page with its default filters</a></p>",
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(message),
            esc(path)
        ),
    )
}

/// Whether the store ever recorded an exchange of `route` (a route no longer configured still
/// has its pages while its exchanges are kept).
fn ever_recorded(store: &dyn Reader, route: &str) -> Result<bool, AdminError> {
    let f = crate::store::Filter {
        from: std::time::UNIX_EPOCH,
        to: std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        route: Some(RouteKey::parse(route)),
        account: None,
        mapping_version: None,
    };
    let q = ExchangeQuery {
        limit: 1,
        ..ExchangeQuery::default()
    };
    Ok(!store.exchanges(&f, &q)?.is_empty())
}

/// A route page's name that is no route: not configured, not "unmatched", never recorded.
fn unknown_route(state: &AdminState, store: &dyn Reader, route: &str) -> Result<(), AdminError> {
    if route == crate::record::UNMATCHED
        || state.routes.iter().any(|r| r == route)
        || ever_recorded(store, route)?
    {
        return Ok(());
    }
    Err(AdminError::NotFound(format!(
        "no route named {route:?}: the config has none, and the store never recorded one"
    )))
}

/// `/route/{name}`.
pub(super) fn route_page(state: &AdminState, v: &View, route: &str) -> Result<String, AdminError> {
    let v = &v.with_route(Some(route));
    with_store(state, |store| {
        let r = report_of(state, store, v)?;
        let mut o = header(
            state,
            &format!(
                "route {} <span class=\"muted\">last {}</span>",
                esc(route),
                esc(&v.since)
            ),
            &format!("/route/{}", enc(route)),
            v,
            &r,
        );
        let Some(rt) = r.routes.iter().find(|x| x.route == route) else {
            unknown_route(state, store, route)?;
            o.push_str("<p class=\"muted\">No exchange of this route in the window (with these filters).</p>");
            return Ok(page(route, &o));
        };
        o.push_str("<div id=\"live\">");
        route_body(&mut o, rt, v);
        o.push_str("</div>");
        Ok(page(&format!("route {route}"), &o))
    })
}

fn route_body(o: &mut String, rt: &RouteReport, v: &View) {
    let c = &rt.counts;
    let l = &rt.latency_ms;
    let _ = write!(
        o,
        "<div class=\"cards\"><div class=\"card\">parity<b id=\"parity\" class=\"{}\">{}</b></div><div class=\"card\">compared<b>{}</b></div><div class=\"card\">exchanges<b>{}</b></div></div><p>{}</p>",
        parity_cls(c),
        c.parity_text(),
        c.compared,
        c.exchanges,
        esc(&outcomes_line(c))
    );
    let max = l.legacy_p99.max(l.candidate_p99).max(1.0);
    let bar = |x: f64, class: &str| {
        format!(
            "<svg class=\"bar\" width=\"{w:.0}\" height=\"10\" aria-hidden=\"true\"><rect class=\"{class}\" width=\"{w:.0}\" height=\"10\"/></svg> {x:.1} ms",
            w = 200.0 * x / max
        )
    };
    let _ = write!(
        o,
        "<h2>Latency</h2><table class=\"latency\"><tr><th></th><th>p50</th><th>p99</th></tr><tr><td class=\"legacy\">legacy</td><td>{}</td><td>{}</td></tr><tr><td class=\"candidate\">candidate</td><td>{}</td><td>{}</td></tr></table>",
        bar(l.legacy_p50, "legacy"),
        bar(l.legacy_p99, "legacy"),
        bar(l.candidate_p50, "candidate"),
        bar(l.candidate_p99, "candidate")
    );
    if rt.trend.len() > 1 {
        let _ = write!(
            o,
            "<h2>Parity per {}</h2>{}",
            esc(&rt.trend_bucket),
            trend_svg(&rt.trend)
        );
    }
    if !rt.mapping_versions.is_empty() {
        o.push_str("<h2>Mapping versions</h2><table><tr><th>version</th><th>first seen</th><th>last seen</th><th class=\"num\">compared</th><th class=\"num\">parity</th></tr>");
        for m in &rt.mapping_versions {
            let _ = write!(
                o,
                "<tr><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&route_href(&rt.route, &v.with_version(Some(&m.version)))),
                esc(&m.version),
                esc(&m.first_seen),
                esc(&m.last_seen),
                m.compared,
                pct(m.parity)
            );
        }
        o.push_str("</table>");
    }
    let shown: Vec<_> = rt
        .fields
        .iter()
        .filter(|f| v.shows_class(f.class.as_str()))
        .collect();
    let _ = write!(
        o,
        "<h2>Differing fields <span class=\"muted\">{} of {} shown · <a href=\"{}\">{} noise</a> · <a href=\"/suggest?route={}&since={}\">suggested mapping fixes</a></span></h2>",
        shown.len(),
        rt.fields.len(),
        esc(&route_href(&rt.route, &v.with_noise_hidden(!v.hide_noise))),
        if v.hide_noise { "show" } else { "hide" },
        enc(&rt.route),
        enc(&v.since)
    );
    o.push_str("<table id=\"fields\"><tr><th>field</th><th>kind</th><th>class</th><th class=\"num\">exchanges</th><th class=\"num\">rate</th><th class=\"num\">present in</th><th>example <span class=\"legacy\">legacy</span> → <span class=\"candidate\">candidate</span></th></tr>");
    for f in shown {
        let _ = write!(
            o,
            "<tr class=\"class-{c}\"><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td><td class=\"class-{c}\">{c}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code class=\"legacy\">{}</code> → <code class=\"candidate\">{}</code> <a href=\"{}\">#{}</a>{}</td></tr>",
            esc(&field_href(&rt.route, &f.field, v)),
            esc(&f.field),
            esc(&f.kind),
            f.exchanges,
            pct(f.rate),
            f.present,
            esc(&short(&f.example.legacy, f.kind == "extra")),
            esc(&short(&f.example.candidate, f.kind == "missing")),
            esc(&exchange_href(f.example.exchange_id, Some(&f.field), v)),
            f.example.exchange_id,
            f.likely_fix.as_ref().map_or_else(String::new, |x| format!("<div class=\"fix\">likely fix: {}</div>", esc(x)))
                + &f.triage.as_ref().map_or_else(String::new, |t| format!(
                    "<div class=\"triage triage-{}\">triage: {}</div>",
                    t.mark.status.as_str(),
                    esc(&crate::report::render::triage_text(t))
                )),
            c = f.class.as_str(),
        );
    }
    o.push_str("</table>");
    if !rt.noise.is_empty() && !v.hide_noise {
        o.push_str("<details data-key=\"noise\"><summary>fields learned as noise (legacy differs from itself there)</summary><table><tr><th>field</th><th class=\"num\">differed</th><th class=\"num\">legacy pairs</th><th>last seen</th></tr>");
        for n in &rt.noise {
            let _ = write!(
                o,
                "<tr class=\"class-noise\"><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&n.field),
                n.differed,
                n.samples,
                esc(&n.last_at)
            );
        }
        o.push_str("</table></details>");
    }
    if let Some(cov) = &rt.coverage {
        if !cov.unexercised.is_empty() {
            let list: Vec<String> = cov
                .unexercised
                .iter()
                .map(|u| format!("<code>{}</code>", esc(&u.field)))
                .collect();
            let _ = write!(
                o,
                "<p><b>Never exercised in the window</b>: {}</p>",
                list.join(", ")
            );
        }
    }
}

fn short(v: &Value, absent: bool) -> String {
    if absent {
        return "(absent)".into();
    }
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// `/route/{name}/field?field=F`.
pub(super) fn field_page(
    state: &AdminState,
    v: &View,
    route: &str,
    field: &str,
) -> Result<String, AdminError> {
    let v = &v.with_route(Some(route));
    with_store(state, |store| {
        let r = report_of(state, store, v)?;
        if !r.routes.iter().any(|x| x.route == route) {
            unknown_route(state, store, route)?;
        }
        let f = v.filter().map_err(AdminError::BadParameter)?;
        let mut o = header(
            state,
            &format!(
                "<code>{}</code> <span class=\"muted\">on <a href=\"{}\">{}</a> · last {}</span>",
                esc(field),
                esc(&route_href(route, v)),
                esc(route),
                esc(&v.since)
            ),
            &format!("/route/{}/field", enc(route)),
            v,
            &r,
        );
        o.push_str("<div id=\"live\">");
        let stats: Vec<_> = r
            .routes
            .iter()
            .filter(|x| x.route == route)
            .flat_map(|x| x.fields.iter().filter(|s| s.field == field))
            .collect();
        o.push_str("<table id=\"kinds\"><tr><th>kind</th><th>class</th><th class=\"num\">exchanges</th><th class=\"num\">rate</th><th class=\"num\">present in</th><th>likely fix</th></tr>");
        for s in &stats {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"class-{c}\">{c}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&s.kind),
                s.exchanges,
                pct(s.rate),
                s.present,
                esc(s.likely_fix.as_deref().unwrap_or("–")),
                c = s.class.as_str()
            );
        }
        if stats.is_empty() {
            o.push_str("<tr><td colspan=\"6\" class=\"muted\">This field did not differ in the window (with these filters).</td></tr>");
        }
        o.push_str("</table>");
        triage_section(&mut o, store, &r, route, field)?;
        let accounts = store.field_accounts(&f, Some(field), report::ACCOUNT_FIELDS_OVER)?;
        o.push_str("<h2>Accounts</h2><table id=\"accounts\"><tr><th>account</th><th>kind</th><th class=\"num\">exchanges</th><th>first seen</th><th>last seen</th></tr>");
        for a in &accounts {
            let name = a.account.as_deref().unwrap_or("(no account)");
            let _ = write!(
                o,
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&field_href(route, field, &v.with_account(a.account.as_deref()))),
                esc(name),
                esc(&a.kind),
                a.exchanges,
                esc(&a.first_seen),
                esc(&a.last_seen)
            );
        }
        o.push_str("</table>");
        let rows = store.exchanges(
            &f,
            &ExchangeQuery {
                outcome: v.outcome.clone(),
                field: Some(field.to_owned()),
                limit: LISTED,
            },
        )?;
        o.push_str("<h2>Examples <span class=\"muted\">newest first</span></h2><table id=\"examples\"><tr><th>exchange</th><th>account</th><th>at</th><th>pointer</th><th class=\"legacy\">legacy</th><th class=\"candidate\">candidate</th></tr>");
        for e in &rows {
            let Some(d) = store.exchange(e.id, MAX_SHOWN_DIFFS)? else {
                continue;
            };
            for x in d.differences.iter().filter(|x| x.field == field).take(3) {
                let _ = write!(
                    o,
                    "<tr><td><a href=\"{}\">#{}</a></td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code class=\"legacy\">{}</code></td><td><code class=\"candidate\">{}</code></td></tr>",
                    esc(&exchange_href(e.id, Some(field), v)),
                    e.id,
                    esc(e.account.as_deref().unwrap_or("")),
                    esc(&e.started_at),
                    esc(&x.pointer),
                    esc(&x.legacy.as_ref().map_or_else(|| "(absent)".into(), |v| short(v, false))),
                    esc(&x.candidate.as_ref().map_or_else(|| "(absent)".into(), |v| short(v, false)))
                );
            }
        }
        o.push_str("</table></div>");
        Ok(page(&format!("{field} on {route}"), &o))
    })
}

/// `/exchange/{id}`.
pub(super) fn exchange_page(
    state: &AdminState,
    v: &View,
    id: i64,
    field: Option<&str>,
) -> Result<Option<String>, AdminError> {
    let Some(found) = with_store(state, |store| {
        let Some(detail) = store.exchange(id, MAX_SHOWN_DIFFS)? else {
            return Ok(None);
        };
        let route = RouteKey::from_route(detail.exchange.route.as_deref());
        let kept = store.kept_exchange(id)?;
        let noise: HashSet<String> = store
            .learned_noise(&route, state.classes.noise_min_count)?
            .into_iter()
            .map(|n| n.field)
            .collect();
        let around = neighbours(store, v, &detail.exchange, field)?;
        Ok(Some((detail, kept, noise, around)))
    })?
    else {
        return Ok(None);
    };
    let (detail, kept, noise, around) = found;
    let noise: HashSet<&str> = noise.iter().map(String::as_str).collect();
    let e = &detail.exchange;
    let route = RouteKey::from_route(e.route.as_deref());
    let mut o = format!(
        "<nav><a href=\"/?{q}\">overview</a> · <a href=\"{}\">route {}</a>{} · <a href=\"/suggest?route={}&since={}\">suggested mapping fixes</a></nav>\
         <h1>exchange #{id} <span class=\"muted\">{} {}</span></h1>",
        esc(&route_href(route.label(), v)),
        esc(route.label()),
        field.map_or_else(String::new, |f| format!(
            " · <a href=\"{}\">field <code>{}</code></a>",
            esc(&field_href(route.label(), f, v)),
            esc(f)
        )),
        enc(route.label()),
        enc(&v.since),
        esc(e.method.as_deref().unwrap_or("")),
        esc(e.path.as_deref().unwrap_or("")),
        q = v.query(),
    );
    o.push_str(&around.nav(field, v));
    let ms = |x: Option<f64>| x.map_or_else(|| "–".into(), |x| format!("{x:.1} ms"));
    let status = |x: Option<i64>| x.map_or_else(|| "–".into(), |x| x.to_string());
    let text = |x: Option<&str>| esc(x.unwrap_or("–"));
    let _ = write!(
        o,
        "<table class=\"facts\" id=\"facts\"><tr><th>outcome</th><td>{}</td><th>started</th><td>{}</td><th>account</th><td>{}</td></tr>\
         <tr><th class=\"legacy\">legacy</th><td>{} · {}</td><th class=\"candidate\">candidate</th><td>{} · {}</td><th>mapping version</th><td><code>{}</code></td></tr>\
         <tr><th>served by</th><td id=\"served-by\">{}</td><th>phase</th><td id=\"phase\">{}</td><th>fallback</th><td id=\"fallback\">{}</td></tr>\
         <tr><th>request id</th><td colspan=\"3\"><code>{}</code></td><th>reason</th><td>{}</td></tr></table>",
        esc(&e.outcome),
        esc(&e.started_at),
        text(e.account.as_deref()),
        status(e.legacy_status),
        ms(detail.legacy_ms),
        status(e.candidate_status),
        ms(detail.candidate_ms),
        text(e.mapping_version.as_deref()),
        text(detail.served_by.as_deref()),
        text(detail.phase.as_deref()),
        text(detail.fallback.as_deref()),
        text(detail.request_id.as_deref()),
        text(e.reason.as_deref()),
    );
    let mut diffs = detail.differences.clone();
    diffs.sort_by_key(|d| field.is_none_or(|f| d.field != f));
    let _ = write!(
        o,
        "<h2>Differences <span class=\"muted\">{}</span></h2>",
        e.diff_count
    );
    let shown = diffs.len() as i64;
    if shown < e.diff_count {
        let _ = write!(
            o,
            "<p class=\"muted\" id=\"differences-note\">{shown} of the {} differences are shown: the store keeps at most <code>[store] examples_per_field</code> of an exchange's differences per field and kind (and 1,000 in all), and this page shows {MAX_SHOWN_DIFFS} at most; the others are counted, in the route's fields, not kept.</p>",
            e.diff_count
        );
    }
    if diffs.iter().any(|d| noise.contains(d.field.as_str())) {
        o.push_str("<p class=\"muted\">Differences marked <span class=\"tag-noise\">noise</span> are at fields learned as noise on this route: legacy answers them differently from one call to the next, and the reports leave them out of the parity.</p>");
    }
    diff_table(&mut o, &diffs, field, &noise);
    let marks = Marks {
        hits: detail
            .differences
            .iter()
            .map(|d| d.pointer.as_str())
            .collect(),
        focus: detail
            .differences
            .iter()
            .filter(|d| field.is_some_and(|f| d.field == f))
            .map(|d| d.pointer.as_str())
            .collect(),
        noise: detail
            .differences
            .iter()
            .filter(|d| noise.contains(d.field.as_str()))
            .map(|d| d.pointer.as_str())
            .collect(),
    };
    let big = |k: Option<&KeptSide>| {
        k.and_then(|k| k.body.as_ref())
            .is_some_and(|b| b.len() > MAX_SHOWN_BYTES)
    };
    match &kept {
        Some(k) if big(k.legacy.as_ref()) || big(k.candidate.as_ref()) => {
            let _ = write!(
                o,
                "<p class=\"muted\" id=\"documents-too-large\">The kept documents are too large to show here (more than {} KiB): <a href=\"/api/exchanges/{id}/bodies\">/api/exchanges/{id}/bodies</a> gives them whole.</p>",
                MAX_SHOWN_BYTES >> 10
            );
        }
        Some(k) if k.legacy.is_some() || k.candidate.is_some() => {
            let (l, c) = aligned(
                parsed(k.legacy.as_ref()).as_ref(),
                parsed(k.candidate.as_ref()).as_ref(),
                &marks,
            );
            let _ = write!(
                o,
                "<h2>Documents <span class=\"muted\">redacted; as compared; aligned field by field (a member one side lacks leaves a blank line on the other); differing values marked</span></h2><div class=\"sides\"><div><h3 class=\"legacy\">legacy</h3>{l}</div><div><h3 class=\"candidate\">candidate (mapped)</h3>{c}</div></div>",
            );
            let _ = write!(
                o,
                "<details data-key=\"headers\"><summary>headers</summary><div class=\"sides\"><div><pre>{}</pre></div><div><pre>{}</pre></div></div></details>",
                esc(&headers(k.legacy.as_ref())),
                esc(&headers(k.candidate.as_ref()))
            );
            if k.candidate_raw.is_some() {
                let raw = parsed(k.candidate_raw.as_ref());
                let _ = write!(
                    o,
                    "<details data-key=\"raw\"><summary>the candidate's document as it came (before the mapping)</summary>{}</details>",
                    alone(raw.as_ref(), &Marks::default(), "candidate")
                );
            }
        }
        _ => o.push_str("<p class=\"muted\">The bodies of this exchange were not kept (see <code>[store] bodies</code>): only its stored differences are shown.</p>"),
    }
    Ok(Some(page(&format!("exchange #{id}"), &o)))
}

/// Examples listed around an exchange, for the previous/next links.
const NEIGHBOURS: usize = 500;

/// The exchange's neighbours among the window's examples: those that differ at `field` on its
/// route (from a field's page), else those of its route with its outcome; newest first, the
/// latest [`NEIGHBOURS`] at most.
struct Around {
    /// The newer and the older example.
    newer: Option<i64>,
    older: Option<i64>,
    /// The exchange's place among them (1 = newest) and how many there are; `None` when it is
    /// not among them (outside the window, or older than the latest ones listed).
    place: Option<(usize, usize)>,
}

fn neighbours(
    store: &dyn Reader,
    v: &View,
    e: &crate::store::ExchangeRow,
    field: Option<&str>,
) -> Result<Around, AdminError> {
    let mut f = v.filter().map_err(AdminError::BadParameter)?;
    f.route = Some(RouteKey::from_route(e.route.as_deref()));
    let q = ExchangeQuery {
        outcome: field.is_none().then(|| e.outcome.clone()),
        field: field.map(str::to_owned),
        limit: NEIGHBOURS,
    };
    let ids: Vec<i64> = store.exchanges(&f, &q)?.iter().map(|x| x.id).collect();
    Ok(match ids.iter().position(|&x| x == e.id) {
        Some(i) => Around {
            newer: i.checked_sub(1).map(|j| ids[j]),
            older: ids.get(i + 1).copied(),
            place: Some((i + 1, ids.len())),
        },
        None => Around {
            newer: None,
            older: None,
            place: None,
        },
    })
}

impl Around {
    fn nav(&self, field: Option<&str>, v: &View) -> String {
        let Some((place, of)) = self.place else {
            return String::new();
        };
        let what = match field {
            Some(f) => format!("differing at <code>{}</code>", esc(f)),
            None => "of this route and outcome".to_owned(),
        };
        let link = |id: Option<i64>, rel: &str, text: &str| match id {
            Some(id) => format!(
                "<a rel=\"{rel}\" id=\"{rel}\" href=\"{}\">{text} #{id}</a>",
                esc(&exchange_href(id, field, v))
            ),
            None => format!("<span class=\"muted\">{text}: none</span>"),
        };
        format!(
            "<nav id=\"examples\">{} · example {place} of {of} {what} in the last {} · {}</nav>",
            link(self.older, "prev", "← older"),
            esc(&v.since),
            link(self.newer, "next", "newer →"),
        )
    }
}

fn headers(k: Option<&KeptSide>) -> String {
    k.and_then(|k| k.headers.as_deref())
        .and_then(|h| serde_json::from_str::<Value>(h).ok())
        .and_then(|h| serde_json::to_string_pretty(&h).ok())
        .unwrap_or_else(|| "(not kept)".into())
}

/// A kept side's document (`None`: not kept, or no JSON).
fn parsed(k: Option<&KeptSide>) -> Option<Value> {
    k.and_then(|k| k.body.as_deref())
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
}

/// Where the values of the differences are, by JSON pointer: `focus` (the field the reader
/// came from) marked more strongly, `noise` (fields learned as noise) more faintly.
#[derive(Default)]
struct Marks<'a> {
    hits: HashSet<&'a str>,
    focus: HashSet<&'a str>,
    noise: HashSet<&'a str>,
}

impl Marks<'_> {
    /// The tags around the value at `ptr` (empty when it is not marked).
    fn tags(&self, ptr: &str) -> (String, &'static str) {
        let class = if self.focus.contains(ptr) {
            "hit focus"
        } else if self.noise.contains(ptr) {
            "hit noise"
        } else if self.hits.contains(ptr) {
            "hit"
        } else {
            return (String::new(), "");
        };
        (
            format!("<mark class=\"{class}\" title=\"{}\">", esc(ptr)),
            "</mark>",
        )
    }
}

/// Values nested deeper are shown as `…` (a hostile document cannot make the page recurse).
const MAX_DEPTH: usize = 64;

/// A kept document larger than this is not rendered on the page (linked instead): the page's
/// size and the memory to build it stay bounded.
const MAX_SHOWN_BYTES: usize = 1 << 20;

/// Lines of a document shown at most; the rest is cut, and the cut said.
const MAX_LINES: usize = 20_000;

/// The line that says a document was cut.
fn cut_note(lines: &mut Vec<String>) {
    if lines.len() >= MAX_LINES {
        lines.truncate(MAX_LINES);
        lines.push(format!("… (cut at {MAX_LINES} lines)"));
    }
}

/// A blank line standing for a member or element the other side has.
const GAP: &str = "<span class=\"gap\"> </span>";

/// One document pretty-printed, the marked values marked.
fn alone(v: Option<&Value>, marks: &Marks, side: &str) -> String {
    let Some(v) = v else {
        return "<pre>(not kept)</pre>".into();
    };
    let mut lines = Vec::new();
    one(&mut lines, v, &mut String::new(), 0, "", false, marks);
    cut_note(&mut lines);
    format!("<pre class=\"doc {side}\">{}</pre>", lines.join("\n"))
}

/// Both documents pretty-printed line for line: objects member by member (legacy's order, then
/// the members only the candidate has), arrays element by element; where one side lacks a
/// member, an element, or holds a value of another shape, the shorter side is padded with
/// blank lines, so the same field sits on the same line of both.
fn aligned(l: Option<&Value>, c: Option<&Value>, marks: &Marks) -> (String, String) {
    match (l, c) {
        (Some(lv), Some(cv)) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let key = Key {
                prefix: "",
                comma: (false, false),
            };
            both(
                &mut a,
                &mut b,
                Some(lv),
                Some(cv),
                &mut String::new(),
                0,
                key,
                marks,
            );
            cut_note(&mut a);
            cut_note(&mut b);
            (
                format!("<pre class=\"doc legacy\">{}</pre>", a.join("\n")),
                format!("<pre class=\"doc candidate\">{}</pre>", b.join("\n")),
            )
        }
        _ => (alone(l, marks, "legacy"), alone(c, marks, "candidate")),
    }
}

/// What precedes a value on its line and whether a comma follows it, on each side.
#[derive(Clone, Copy)]
struct Key<'a> {
    prefix: &'a str,
    comma: (bool, bool),
}

#[allow(clippy::too_many_arguments)]
fn both(
    a: &mut Vec<String>,
    b: &mut Vec<String>,
    l: Option<&Value>,
    c: Option<&Value>,
    ptr: &mut String,
    depth: usize,
    key: Key,
    marks: &Marks,
) {
    if a.len() >= MAX_LINES || b.len() >= MAX_LINES {
        return;
    }
    let pad = "  ".repeat(depth);
    let (open, close) = marks.tags(ptr);
    let tail = |comma: bool| if comma { "," } else { "" };
    match (l, c) {
        (Some(Value::Object(x)), Some(Value::Object(y)))
            if depth < MAX_DEPTH && !x.is_empty() && !y.is_empty() =>
        {
            a.push(format!("{pad}{}{open}{{", key.prefix));
            b.push(format!("{pad}{}{open}{{", key.prefix));
            let names: Vec<&String> = x
                .keys()
                .chain(y.keys().filter(|k| !x.contains_key(*k)))
                .collect();
            let (mut seen_x, mut seen_y) = (0, 0);
            for name in names {
                let (lx, cy) = (x.get(name), y.get(name));
                seen_x += usize::from(lx.is_some());
                seen_y += usize::from(cy.is_some());
                let prefix = format!("{}: ", esc(&Value::String(name.clone()).to_string()));
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&name.replace('~', "~0").replace('/', "~1"));
                let k = Key {
                    prefix: &prefix,
                    comma: (seen_x < x.len(), seen_y < y.len()),
                };
                both(a, b, lx, cy, ptr, depth + 1, k, marks);
                ptr.truncate(len);
            }
            a.push(format!("{pad}}}{close}{}", tail(key.comma.0)));
            b.push(format!("{pad}}}{close}{}", tail(key.comma.1)));
        }
        (Some(Value::Array(x)), Some(Value::Array(y)))
            if depth < MAX_DEPTH && !x.is_empty() && !y.is_empty() =>
        {
            a.push(format!("{pad}{}{open}[", key.prefix));
            b.push(format!("{pad}{}{open}[", key.prefix));
            for i in 0..x.len().max(y.len()) {
                let len = ptr.len();
                let _ = write!(ptr, "/{i}");
                let k = Key {
                    prefix: "",
                    comma: (i + 1 < x.len(), i + 1 < y.len()),
                };
                both(a, b, x.get(i), y.get(i), ptr, depth + 1, k, marks);
                ptr.truncate(len);
            }
            a.push(format!("{pad}]{close}{}", tail(key.comma.0)));
            b.push(format!("{pad}]{close}{}", tail(key.comma.1)));
        }
        _ => {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            if let Some(v) = l {
                one(&mut x, v, ptr, depth, key.prefix, key.comma.0, marks);
            }
            if let Some(v) = c {
                one(&mut y, v, ptr, depth, key.prefix, key.comma.1, marks);
            }
            let n = x.len().max(y.len());
            x.resize_with(n, || GAP.to_owned());
            y.resize_with(n, || GAP.to_owned());
            a.append(&mut x);
            b.append(&mut y);
        }
    }
}

/// One value's lines (`prefix`: its member name, if any).
fn one(
    out: &mut Vec<String>,
    v: &Value,
    ptr: &mut String,
    depth: usize,
    prefix: &str,
    comma: bool,
    marks: &Marks,
) {
    if out.len() >= MAX_LINES {
        return;
    }
    let pad = "  ".repeat(depth);
    let (open, close) = marks.tags(ptr);
    let tail = if comma { "," } else { "" };
    match v {
        _ if depth >= MAX_DEPTH => out.push(format!("{pad}{prefix}{open}…{close}{tail}")),
        Value::Array(x) if !x.is_empty() => {
            out.push(format!("{pad}{prefix}{open}["));
            for (i, e) in x.iter().enumerate() {
                let len = ptr.len();
                let _ = write!(ptr, "/{i}");
                one(out, e, ptr, depth + 1, "", i + 1 < x.len(), marks);
                ptr.truncate(len);
            }
            out.push(format!("{pad}]{close}{tail}"));
        }
        Value::Object(m) if !m.is_empty() => {
            out.push(format!("{pad}{prefix}{open}{{"));
            for (i, (k, e)) in m.iter().enumerate() {
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&k.replace('~', "~0").replace('/', "~1"));
                let name = format!("{}: ", esc(&Value::String(k.clone()).to_string()));
                one(out, e, ptr, depth + 1, &name, i + 1 < m.len(), marks);
                ptr.truncate(len);
            }
            out.push(format!("{pad}}}{close}{tail}"));
        }
        other => out.push(format!(
            "{pad}{prefix}{open}{}{close}{tail}",
            esc(&other.to_string())
        )),
    }
}

/// `/accounts`.
pub(super) fn accounts_page(state: &AdminState, v: &View) -> Result<String, AdminError> {
    with_store(state, |store| {
        let r = report_of(state, store, v)?;
        let mut o = header(
            state,
            &format!(
                "accounts <span class=\"muted\">last {}</span>",
                esc(&v.since)
            ),
            "/accounts",
            v,
            &r,
        );
        o.push_str("<div id=\"live\">");
        let health: std::collections::HashMap<&str, &crate::store::AccountHealth> = r
            .account_health
            .iter()
            .map(|h| (h.account.as_str(), h))
            .collect();
        let _ = write!(
            o,
            "<p>{} accounts · needs re-auth: <b id=\"reauth\" class=\"{}\">{}</b></p>",
            r.accounts.len(),
            if r.needs_reauth.is_empty() {
                "ok"
            } else {
                "bad"
            },
            if r.needs_reauth.is_empty() {
                "none".to_owned()
            } else {
                esc(&r.needs_reauth.join(", "))
            }
        );
        o.push_str("<table id=\"account-table\"><tr><th>account</th><th>health</th><th class=\"num\">parity</th><th class=\"num\">compared</th><th>outcomes</th><th>differing fields (exchanges)</th></tr>");
        let mut names: Vec<&str> = r.accounts.iter().map(|a| a.account.as_str()).collect();
        for h in &r.account_health {
            if !names.contains(&h.account.as_str()) {
                names.push(&h.account);
            }
        }
        for name in names {
            let a = r.accounts.iter().find(|a| a.account == name);
            let h = health.get(name);
            let state_cell = h.map_or_else(
                || "ok".to_owned(),
                |h| {
                    format!(
                        "<span class=\"{}\">{}</span> <span class=\"muted\">since {}{}</span>",
                        if h.state == crate::store::NEEDS_REAUTH {
                            "bad"
                        } else {
                            "ok"
                        },
                        esc(&h.state),
                        esc(&h.since),
                        h.last_error
                            .as_ref()
                            .map_or_else(String::new, |e| format!(" · {}", esc(e)))
                    )
                },
            );
            let fields: Vec<String> = a.map_or_else(Vec::new, |a| {
                a.fields
                    .iter()
                    .map(|f| {
                        format!(
                            "<a href=\"{}\">{} <code>{}</code></a> {} ({})",
                            esc(&field_href(&f.route, &f.field, &v.with_account(Some(name)))),
                            esc(&f.route),
                            esc(&f.field),
                            esc(&f.kind),
                            f.exchanges
                        )
                    })
                    .collect()
            });
            let _ = write!(
                o,
                "<tr><td><a href=\"/?{}\">{}</a></td><td>{state_cell}</td><td class=\"num {}\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                v.with_account(Some(name)).query(),
                esc(name),
                a.map_or("muted", |a| parity_cls(&a.counts)),
                a.map_or_else(|| "–".into(), |a| parity_text(&a.counts)),
                a.map_or(0, |a| a.counts.compared),
                a.map_or_else(String::new, |a| esc(&outcomes_line(&a.counts))),
                fields.join("<br>")
            );
        }
        o.push_str("</table></div>");
        Ok(page("accounts", &o))
    })
}

/// Neutral colours: legacy blue, candidate purple (neither is "wrong" or "right"); parity
/// keeps green/amber/red for how far it is from the goal.
const CSS: &str = "body{font:14px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;margin:0}\
main{max-width:1200px;margin:0 auto;padding:24px}h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de}\
nav{font-size:13px}h1 code{font-size:19px}.muted{color:#57606a;font-weight:normal;font-size:14px}.cards{display:flex;gap:12px;flex-wrap:wrap}\
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:140px;background:#f6f8fa}.card b{display:block;font-size:22px}\
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #d0d7de;vertical-align:top}\
th{background:#f6f8fa}.num{text-align:right;font-variant-numeric:tabular-nums}code,pre{font:12px ui-monospace,Menlo,Consolas,monospace}\
details{margin:6px 0;border:1px solid #d0d7de;border-radius:6px;padding:4px 10px}summary{cursor:pointer}\
.filters{display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center;padding:8px;background:#f6f8fa;border:1px solid #d0d7de;border-radius:8px}\
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}\
.legacy{color:#0550ae}.candidate{color:#8250df}.bar{display:inline-block;vertical-align:middle}.bar rect.legacy{fill:#0550ae}.bar rect.candidate{fill:#8250df}\
.class-systematic td.class-systematic,td.class-systematic{font-weight:600}.class-noise{color:#57606a}\
tr.hit{background:#fff8c5}mark.hit{background:#ddf4ff;color:inherit;border-radius:3px}mark.focus{background:#fff8c5;outline:1px solid #d4a72c}\
tr.noise td{color:#57606a}mark.noise{background:#eaeef2}.tag-noise{font-size:11px;border:1px solid #d0d7de;border-radius:8px;padding:0 6px;color:#57606a}\
.gap{display:inline-block;width:100%;background:#eaeef2}.triage{font-size:12px;color:#57606a}.triage-accepted{color:#1a7f37}.triage-vendor_bug{color:#cf222e}.triage-fix_in_progress{color:#9a6700}#examples{margin:4px 0 8px}#error{font-size:16px}\
.sides{display:flex;gap:12px}.sides>div{flex:1;min-width:0}pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;overflow:auto;max-height:640px}\
.fix{font-size:12px;color:#57606a}.login{margin:16px 0}.facts th{width:1%;white-space:nowrap}";

/// Keeps what the reader expanded (per page, for the tab's life: `sessionStorage`) and swaps
/// in the server's fresh `#live` every 5 s. No token: the session cookie goes with the fetch.
const JS: &str = r#"
const key = 'open:' + location.pathname + location.search;
const load = () => new Set(JSON.parse(sessionStorage.getItem(key) || '[]'));
function apply(root) {
  const open = load();
  for (const d of root.querySelectorAll('details[data-key]')) if (open.has(d.dataset.key)) d.open = true;
}
document.addEventListener('toggle', (ev) => {
  const d = ev.target;
  if (!(d instanceof HTMLDetailsElement) || !d.dataset.key) return;
  const open = load();
  if (d.open) open.add(d.dataset.key); else open.delete(d.dataset.key);
  sessionStorage.setItem(key, JSON.stringify([...open]));
}, true);
apply(document);
// Filters submit on change (no inline handlers: the policy forbids them). Listened to while
// capturing: a change event that does not bubble (dispatched by a script) is seen too.
document.addEventListener('change', (ev) => {
  const t = ev.target;
  if (t instanceof HTMLElement && 'submit' in t.dataset && t.form) t.form.submit();
}, true);
async function refresh() {
  const live = document.getElementById('live');
  if (!live) return;
  const note = document.getElementById('updated');
  try {
    const res = await fetch(location.href, {credentials: 'same-origin'});
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const fresh = new DOMParser().parseFromString(await res.text(), 'text/html').getElementById('live');
    if (!fresh) throw new Error('no page in the answer');
    apply(fresh);
    live.replaceChildren(...fresh.childNodes);
    if (note) note.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    if (note) note.textContent = 'refresh failed: ' + err;
  }
}
window.shadowdiffRefresh = refresh;
if (document.getElementById('live')) setInterval(refresh, 5000);
"#;

/// `/suggest?route=R`: each systematic difference with its evidence and the checked change.
pub(super) fn suggest_page(s: &crate::rediff::suggest::Suggestions, v: &View) -> String {
    use crate::rediff::suggest::Fix;
    let mut o = format!(
        "<h1>suggested mapping fixes <span class=\"muted\">{} · last {} · {} kept exchanges read</span></h1><nav><a href=\"/?{q}\">overview</a> · <a href=\"{}\">route {}</a></nav>",
        esc(&s.route),
        esc(&v.since),
        s.exchanges,
        esc(&route_href(&s.route, v)),
        esc(&s.route),
        q = v.query()
    );
    if s.suggestions.is_empty() {
        o.push_str("<p class=\"muted\">No systematic difference among the kept exchanges.</p>");
    }
    for g in &s.suggestions {
        let _ = std::fmt::Write::write_fmt(
            &mut o,
            format_args!(
                "<h2 id=\"{}\"><code>{}</code> {} <span class=\"muted\">in {} of {} kept exchanges</span></h2><ul>",
                esc(&g.field),
                esc(&g.field),
                esc(&g.kind),
                g.differing,
                g.present
            ),
        );
        for e in &g.examples {
            let _ = std::fmt::Write::write_fmt(
                &mut o,
                format_args!(
                    "<li><a href=\"{}\">exchange #{}</a> at <code>{}</code>: legacy <code class=\"legacy\">{}</code>, candidate <code class=\"candidate\">{}</code></li>",
                    esc(&exchange_href(e.exchange, Some(&g.field), v)),
                    e.exchange,
                    esc(&e.pointer),
                    esc(&e.legacy.as_ref().map_or_else(|| "(absent)".into(), Value::to_string)),
                    esc(&e.candidate.as_ref().map_or_else(|| "(absent)".into(), Value::to_string))
                ),
            );
        }
        o.push_str("</ul>");
        let what = match &g.fix {
            Fix::Path { found_at, expr } => format!("read it where the candidate has it: <code>{}</code> (found at <code>{}</code>)", esc(expr), esc(found_at)),
            Fix::Lowercase => "the candidate's value in lower case".into(),
            Fix::Uppercase => "the candidate's value in upper case".into(),
            Fix::Number => "a number the candidate sends as a string".into(),
            Fix::String => "a string the candidate sends as a number".into(),
            Fix::Date => "a date the candidate sends with a time: its first ten characters".into(),
            Fix::Lookup { pairs } => format!("a translation of {} values", pairs.len()),
            Fix::NotInCandidate => "the candidate never returns it: no mapping can fill it (a gap to report to the vendor)".into(),
            Fix::None { why } => esc(why),
        };
        let _ = std::fmt::Write::write_fmt(&mut o, format_args!("<p><b>{what}</b></p>"));
        if let (Some(c), Some(k)) = (&g.change, &g.checked) {
            let _ = std::fmt::Write::write_fmt(
                &mut o,
                format_args!(
                    "<pre class=\"diff\">{}</pre><p class=\"muted\">checked by rediff over {} exchanges: the field differs in {} → {}; route parity {} → {}</p>",
                    esc(&c.diff),
                    k.exchanges,
                    k.field_before,
                    k.field_after,
                    pct(k.parity_before),
                    pct(k.parity_after)
                ),
            );
        }
    }
    page(&format!("suggest {}", s.route), &o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_document_is_cut_and_says_so() {
        let big = Value::Array((0..50_000).map(Value::from).collect());
        let small = serde_json::json!([1]);
        let (l, c) = aligned(Some(&big), Some(&small), &Marks::default());
        assert_eq!(l.lines().count(), MAX_LINES + 1);
        assert!(l.contains("(cut at 20000 lines)"));
        assert_eq!(
            c.lines().count(),
            MAX_LINES + 1,
            "the other side is padded as far"
        );
        let alone = alone(Some(&big), &Marks::default(), "legacy");
        assert_eq!(alone.lines().count(), MAX_LINES + 1);
    }

    #[test]
    fn a_field_is_one_word_for_a_shell() {
        assert_eq!(shell_quoted("/a/*"), "'/a/*'");
        assert_eq!(shell_quoted("x'; rm -rf ~; '"), r"'x'\''; rm -rf ~; '\'''");
    }
}
