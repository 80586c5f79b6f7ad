//! The resolved configuration written back in the config file's own syntax (`check`): every
//! default filled in, durations as humantime writes them (`30s`, `1h 30m`), sizes in KiB/MiB,
//! paths resolved. Secrets are never printed: a key holding one is a comment saying it is set.
//! The text parses again as a config.

use std::fmt::Write as _;
use std::time::Duration;

use super::Config;
use crate::diff::{Glob, GlobSet, Rules};

/// A TOML string (quoted and escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A path, absolute (the text may be read from another directory).
fn path(p: &std::path::Path) -> String {
    q(&std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string())
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = items.into_iter().map(q).collect();
    format!("[{}]", v.join(", "))
}

fn dur(d: Duration) -> String {
    q(&humantime::format_duration(d).to_string())
}

/// A size in the largest binary unit that divides it.
fn size(n: usize) -> String {
    let s = match n {
        0 => "0B".to_owned(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    };
    q(&s)
}

fn num(x: f64) -> String {
    toml::Value::Float(x).to_string()
}

fn globs(s: &GlobSet) -> String {
    list(s.iter().map(Glob::as_str))
}

/// The rules of `r` not already in `base` (a route's own, on top of the global ones).
/// Every field pattern of a rule set's ignore, unordered, array-key and normalize rules.
fn patterns(r: &Rules) -> Vec<&str> {
    let mut out: Vec<&str> = r.ignore.iter().map(Glob::as_str).collect();
    out.extend(r.unordered.iter().map(Glob::as_str));
    out.extend(r.array_keys.iter().map(|(g, _)| g.as_str()));
    for (set, _) in &r.normalize {
        out.extend(set.iter().map(Glob::as_str));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `serve_safe`: the patterns whose rules still apply to served answers (`served`), those of
/// `base` left out.
fn serve_safe(o: &mut String, served: &Rules, base: Option<&Rules>) {
    let inherited = base.map(patterns).unwrap_or_default();
    let own: Vec<&str> = patterns(served)
        .into_iter()
        .filter(|p| !inherited.contains(p))
        .collect();
    if base.is_none() || !own.is_empty() {
        let _ = writeln!(o, "serve_safe = {}", list(own));
    }
}

fn rules(o: &mut String, r: &Rules, base: Option<&Rules>) {
    let own = |set: &GlobSet, base: Option<&GlobSet>| -> Vec<String> {
        set.iter()
            .map(Glob::as_str)
            .filter(|g| base.is_none_or(|b| !b.iter().any(|x| x.as_str() == *g)))
            .map(str::to_owned)
            .collect()
    };
    let ignore = own(&r.ignore, base.map(|b| &b.ignore));
    let unordered = own(&r.unordered, base.map(|b| &b.unordered));
    if base.is_none() || !ignore.is_empty() {
        let _ = writeln!(o, "ignore = {}", list(ignore.iter().map(String::as_str)));
    }
    if base.is_none() || !unordered.is_empty() {
        let _ = writeln!(
            o,
            "unordered = {}",
            list(unordered.iter().map(String::as_str))
        );
    }
    if base.is_none_or(|b| b.number_tolerance != r.number_tolerance) {
        let _ = writeln!(o, "number_tolerance = {}", num(r.number_tolerance));
    }
    if base.is_none_or(|b| b.null_equals_missing != r.null_equals_missing) {
        let _ = writeln!(o, "null_equals_missing = {}", r.null_equals_missing);
    }
    if base.is_none_or(|b| b.auto_keys != r.auto_keys) {
        let _ = writeln!(o, "auto_keys = {}", r.auto_keys);
    }
    let keys: Vec<String> = r
        .array_keys
        .iter()
        .filter(|(g, k)| {
            base.is_none_or(|b| {
                !b.array_keys
                    .iter()
                    .any(|(bg, bk)| bg.as_str() == g.as_str() && bk == k)
            })
        })
        .map(|(g, k)| format!("{} = {}", q(g.as_str()), q(k)))
        .collect();
    if base.is_none() || !keys.is_empty() {
        let _ = writeln!(o, "array_keys = {{ {} }}", keys.join(", "));
    }
    let norms: Vec<String> = r
        .normalize
        .iter()
        .skip(base.map_or(0, |b| b.normalize.len()))
        .map(|(set, with)| {
            format!(
                "{{ fields = {}, with = {} }}",
                globs(set),
                list(with.iter().map(|n| n.as_str()))
            )
        })
        .collect();
    if base.is_none() || !norms.is_empty() {
        let _ = writeln!(o, "normalize = [{}]", norms.join(", "));
    }
}

impl Config {
    /// The resolved configuration as config text (see the module's documentation).
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        let p = &self.proxy;
        let _ = writeln!(
            o,
            "[proxy]\nlisten = {}\ndrain_timeout = {}\nmax_connections = {}\nheader_read_timeout = {}\nidle_timeout = {}\n",
            q(&p.listen),
            dur(p.drain_timeout),
            p.max_connections,
            dur(p.header_read_timeout),
            dur(p.idle_timeout)
        );
        let tls = |o: &mut String, t: &Option<super::TlsFiles>| match t {
            Some(f) => {
                let _ = writeln!(
                    o,
                    "tls_cert = {}\ntls_key = {}",
                    path(&f.cert),
                    path(&f.key)
                );
            }
            None => o.push_str("# tls: none (plaintext)\n"),
        };
        // (Before the blank line that ends the table.)
        o.pop();
        tls(&mut o, &p.tls);
        o.push('\n');
        let a = &self.admin;
        let _ = write!(
            o,
            "[admin]\nlisten = {}\n{}metrics_token = {}\nhosts = [{}]\n",
            q(a.listen.as_deref().unwrap_or("")),
            if a.token.is_some() {
                "# token: set (not shown)\n"
            } else {
                "# token: none (loopback only: any local page could reach it; changes need its own Host and Origin)\n"
            },
            a.metrics_token,
            a.hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ")
        );
        tls(&mut o, &a.tls);
        o.push('\n');
        for (name, u) in [("legacy", &self.legacy), ("candidate", &self.candidate)] {
            let _ = writeln!(o, "[{name}]");
            if let Some(b) = &u.base_url {
                let _ = writeln!(o, "base_url = {}", q(&crate::mask::url(&b.to_string())));
            }
            let _ = writeln!(o, "timeout = {}", dur(u.timeout));
            if name == "legacy" {
                let _ = writeln!(o, "body_timeout = {}", dur(u.body_timeout));
            }
            if let Some(ca) = &u.ca_file {
                let _ = writeln!(o, "ca_file = {}", path(ca));
            }
            if name == "candidate" {
                let _ = writeln!(
                    o,
                    "forward_headers = {}\nforward_query = {}",
                    list(u.forward_headers.iter().map(http::HeaderName::as_str)),
                    list(u.forward_query.iter().map(String::as_str))
                );
                if !u.headers.is_empty() || !u.header_templates.is_empty() {
                    o.push_str("[candidate.headers]\n");
                    for (k, _) in &u.headers {
                        let _ = writeln!(o, "# {k}: set (not shown)");
                    }
                    for (k, t) in &u.header_templates {
                        let vars: Vec<String> = t.vars().map(ToString::to_string).collect();
                        let _ = writeln!(
                            o,
                            "# {k}: per request, from {} (not shown)",
                            vars.join(", ")
                        );
                    }
                }
            }
            o.push('\n');
        }
        if let Some(acc) = &self.accounts {
            let _ = writeln!(
                o,
                "[accounts]\nkey = {}\nfile = {}\nreauth_after = {}\n# {} accounts\n",
                q(&acc.source.to_string()),
                path(&acc.file),
                self.reauth_after,
                acc.len()
            );
        }
        let s = &self.shadow;
        let _ = writeln!(
            o,
            "[shadow]\nsample_rate = {}\nmax_in_flight = {}\nmax_rps = {}\nmax_body = {}\nmax_bytes_in_flight = {}\nunmatched = {}\nbackoff_on_429 = {}\nrate_limit_scope = {}\nreserve = {}\nthreads = {}\npriority = {}\n",
            num(s.sample_rate),
            s.max_in_flight,
            num(s.max_rps),
            size(s.max_body),
            size(s.max_bytes_in_flight),
            q(match s.unmatched {
                super::Unmatched::Mirror => "mirror",
                super::Unmatched::Skip => "skip",
            }),
            s.backoff_on_429,
            q(match s.rate_limit_scope {
                super::RateLimitScope::Account => "account",
                super::RateLimitScope::Global => "global",
            }),
            num(s.reserve),
            s.threads,
            q(s.priority.as_str())
        );
        let _ = writeln!(
            o,
            "[shadow.breaker]\nburst = {}\nwindow = {}\nopen_for = {}\n",
            s.breaker.burst,
            dur(s.breaker.window),
            dur(s.breaker.open_for)
        );
        let d = &self.diff;
        o.push_str("[diff]\n");
        rules(&mut o, &d.rules, None);
        serve_safe(&mut o, &d.served_rules, None);
        let _ = writeln!(
            o,
            "headers = {}\nsystematic_rate = {}\n[diff.noise]\nsecondary_sample_rate = {}\nmin_count = {}\n",
            list(d.headers.iter().map(http::HeaderName::as_str)),
            num(d.systematic_rate),
            num(d.noise.secondary_sample_rate),
            d.noise.min_count
        );
        let st = &self.store;
        o.push_str("[store]\n");
        match &st.url {
            Some(u) => {
                let _ = writeln!(o, "url = {}", q(&u.to_string()));
            }
            None => {
                let _ = writeln!(o, "path = {}", path(&st.path));
            }
        }
        if let Some(ca) = &st.ca_file {
            let _ = writeln!(o, "ca_file = {}", path(ca));
        }
        let _ = writeln!(
            o,
            "migrate = {}\nretention = {}\nbodies = {}\nredact_headers = {}\nredact_fields = {}\nqueue = {}\nmax_value_len = {}\nexamples_per_field = {}\nexchanges = {}\nrows_per_hour = {}\nbody_examples = {}\nbody_sample = {}\nmatch_sample = {}\nbody_budget = {}\n",
            st.migrate,
            dur(st.retention),
            q(st.bodies.as_str()),
            list(st.redact_headers.iter().map(http::HeaderName::as_str)),
            globs(&st.redact_fields),
            st.queue,
            size(st.max_value_len),
            st.examples_per_field,
            q(st.exchanges.as_str()),
            st.rows_per_hour,
            st.body_examples,
            num(st.body_sample),
            num(st.match_sample),
            size(st.body_budget)
        );
        let m = &self.mappings;
        let _ = writeln!(
            o,
            "[mappings]\ndir = {}\n{}timeout = {}\nworkers = {}\n",
            path(&m.dir),
            m.environment
                .as_ref()
                .map_or_else(String::new, |e| format!("environment = {}\n", q(e))),
            dur(m.timeout),
            m.workers
        );
        self.rollout_toml(&mut o);
        for (phase, g) in &self.gates {
            let _ = writeln!(o, "[gate.{}]", q(phase));
            gate_toml(&mut o, g);
            for (route, rg) in &g.routes {
                let _ = writeln!(o, "[gate.{}.routes.{}]", q(phase), q(route));
                gate_toml(&mut o, rg);
            }
            o.push('\n');
        }
        for r in &self.routes {
            self.route_toml(&mut o, r);
        }
        for k in &self.ids {
            let keys: Vec<String> = k
                .keys
                .iter()
                .map(|key| list(key.iter().map(String::as_str)))
                .collect();
            let _ = writeln!(
                o,
                "[ids.{}]\nid = {}\nmatch = [{}]\nmax_pairs = {}\n",
                k.name,
                q(&k.id),
                keys.join(", "),
                k.max_pairs
            );
        }
        for w in &self.webhooks {
            let _ = writeln!(
                o,
                "[[webhooks]]\nname = {}\nurl = {}\nevents = {}\n# secret: set (not shown)\nmax_attempts = {}\nretry_base = {}\ntimeout = {}\n",
                q(&w.name),
                q(&crate::mask::url(&w.url.to_string())),
                list(w.events.iter().map(String::as_str)),
                w.max_attempts,
                dur(w.retry_base),
                dur(w.timeout)
            );
        }
        o
    }

    fn rollout_toml(&self, o: &mut String) {
        let r = &self.rollout;
        let mut pins: Vec<&str> = r.pin_candidate.iter().map(String::as_str).collect();
        pins.sort_unstable();
        let mut legacy: Vec<&str> = r.pin_legacy.iter().map(String::as_str).collect();
        legacy.sort_unstable();
        let _ = writeln!(
            o,
            "[rollout]\nphase = {}\n# salt: set (not shown)\norder = {}\npin_candidate = {}\npin_legacy = {}\nfollow = {}",
            q(&r.phase),
            list(r.order.iter().map(String::as_str)),
            list(pins),
            list(legacy),
            dur(r.follow)
        );
        match r.max_in_flight {
            Some(n) => {
                let _ = writeln!(o, "max_in_flight = {n}");
            }
            None => {
                let _ = writeln!(o, "# max_in_flight: the proxy's connection cap");
            }
        }
        for (name, p) in &r.phases {
            let _ = writeln!(
                o,
                "[rollout.phases.{}]\npercent = {}\nlegacy_sample = {}\nverify = {}",
                q(name),
                num(p.percent),
                num(p.legacy_sample),
                p.verify
            );
        }
        let g = &r.guard;
        let opt =
            |k: &str, v: Option<f64>| v.map_or_else(String::new, |v| format!("{k} = {}\n", num(v)));
        let _ = writeln!(
            o,
            "[rollout.guard]\nauto_rollback = {}\nauto_promote = {}\nwindow = {}\nmin_sample = {}\n{}{}{}confidence = {}\nhold = {}\npromote_window = {}\nevery = {}\n",
            g.auto_rollback,
            g.auto_promote,
            dur(g.window),
            g.min_sample,
            opt("min_parity", g.min_parity),
            opt("max_fallback_rate", g.max_fallback_rate),
            opt("max_candidate_error_rate", g.max_candidate_error_rate),
            num(g.confidence),
            dur(g.hold),
            dur(g.promote_window),
            dur(g.every)
        );
    }

    fn route_toml(&self, o: &mut String, r: &super::Route) {
        let _ = writeln!(o, "[[routes]]\nname = {}", q(&r.name));
        if let Some(m) = &r.method {
            let _ = writeln!(o, "method = {}", q(m.as_str()));
        }
        let _ = writeln!(o, "path = {}", q(r.path.as_str()));
        if let Some(m) = r.mirror {
            let _ = writeln!(o, "mirror = {m}");
        }
        if r.read {
            o.push_str("read = true\n");
        }
        if let Some(s) = r.serve {
            let _ = writeln!(o, "serve = {s}");
        }
        let _ = writeln!(
            o,
            "serve_deadline = {}\nunknown_account = {}",
            dur(r.serve_deadline),
            q(r.unknown_account.as_str())
        );
        let c = &r.candidate;
        let base = |chain: Option<&std::sync::Arc<crate::mapping::Chain>>| -> String {
            let Some(l) = chain.and_then(|c| c.levels.iter().find(|l| l.name == "base")) else {
                return String::new();
            };
            if l.origin == "mapping_expr" {
                format!(
                    "mapping_expr = {}\nmapping_lang = {}\n",
                    q(l.mapping.source()),
                    q(l.mapping.lang().as_str())
                )
            } else {
                format!("mapping = {}\n", path(std::path::Path::new(&l.origin)))
            }
        };
        o.push_str("[routes.candidate]\n");
        if let Some(m) = &c.method {
            let _ = writeln!(o, "method = {}", q(m.as_str()));
        }
        if let Some(p) = &c.path {
            let _ = writeln!(o, "path = {}", q(p.as_str()));
        }
        if let Some(query) = &c.query {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{} = {}", q(k), q(v.as_str())))
                .collect();
            let _ = writeln!(o, "query = {{ {} }}", pairs.join(", "));
        }
        if let Some(req) = &c.request {
            if let Some(l) = req.chain.levels.first() {
                if l.origin == "mapping_expr" || l.origin == "request_expr" {
                    let _ = writeln!(
                        o,
                        "request_expr = {}\nrequest_lang = {}",
                        q(l.mapping.source()),
                        q(l.mapping.lang().as_str())
                    );
                } else {
                    let _ = writeln!(
                        o,
                        "request_mapping = {}",
                        path(std::path::Path::new(&l.origin))
                    );
                }
            }
            let _ = writeln!(o, "max_each = {}", req.max_each);
        }
        o.push_str(&base(r.mappings.candidate.as_ref()));
        if let Some(chain) = &r.mappings.candidate {
            let _ = writeln!(o, "# mappings applied: {}", chain.describe());
        }
        for (account, chain) in &r.mappings.accounts {
            let _ = writeln!(o, "# for account {account}: {}", chain.describe());
        }
        // What its exchanges record (`report --mapping-version`): the mappings and the rules.
        let recorded = |candidate: Option<&crate::mapping::Chain>| {
            crate::mapping::recorded_version(
                candidate,
                r.mappings.legacy.as_deref(),
                c.request.as_ref().map(|q| &*q.chain),
                r.rules_version.as_deref(),
            )
        };
        if let Some(v) = recorded(r.mappings.candidate.as_deref()) {
            let _ = writeln!(o, "# mapping_version recorded: {v}");
        }
        for (account, chain) in &r.mappings.accounts {
            if let Some(v) = recorded(Some(chain)) {
                let _ = writeln!(o, "# mapping_version recorded for account {account}: {v}");
            }
        }
        let legacy = base(r.mappings.legacy.as_ref());
        if !legacy.is_empty() {
            let _ = writeln!(o, "[routes.legacy]\n{legacy}");
        }
        if !r.reference.is_empty() {
            let _ = writeln!(o, "# reference: {} field patterns", r.reference.len());
        }
        if !r.ids.is_empty() || !r.ids.request.is_empty() {
            o.push_str("[routes.ids]\n");
            for (key, list) in [
                ("records", &r.ids.records),
                ("refs", &r.ids.refs),
                ("request", &r.ids.request),
            ] {
                if !list.is_empty() {
                    let pairs: Vec<String> = list
                        .iter()
                        .map(|(g, k)| format!("{} = {}", q(g.as_str()), q(k)))
                        .collect();
                    let _ = writeln!(o, "{key} = {{ {} }}", pairs.join(", "));
                }
            }
        }
        let lists = r.ids.records.iter().any(|(g, _)| g.as_str().contains('*'))
            && r.method.as_ref().is_none_or(|m| m == http::Method::GET);
        if r.paging.is_none() && lists && r.serves(&http::Method::GET) {
            // `check` says, per served route, that its paging is not translated.
            o.push_str("# paging: not translated ([routes.paging]): the caller's paging parameters reach the candidate as forward_query passes them; a page the candidate answers differently is served only where verify finds it equal\n");
        }
        if let Some(p) = &r.paging {
            o.push_str("[routes.paging]\n");
            let _ = writeln!(
                o,
                "# legacy's ?{}=&{}= pages answered by walking the candidate's ?{}=&{}= cursors",
                p.offset, p.limit, p.cursor, p.page_size
            );
            for (k, v) in [
                ("offset", Some(&p.offset)),
                ("limit", Some(&p.limit)),
                ("count_field", p.count_field.as_ref()),
                ("offset_field", p.offset_field.as_ref()),
                ("cursor", Some(&p.cursor)),
                ("page_size", Some(&p.page_size)),
                ("next_field", Some(&p.next_field)),
                ("results_field", Some(&p.results_field)),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(o, "{k} = {}", q(v));
                }
            }
            let _ = writeln!(
                o,
                "max_page_size = {}\nmax_pages = {}\ncursor_ttl = {}",
                p.max_page_size,
                p.max_pages,
                dur(p.cursor_ttl)
            );
        }
        o.push_str("[routes.diff]\n");
        rules(o, &r.rules, Some(&self.diff.rules));
        serve_safe(o, &r.served_rules, Some(&self.diff.served_rules));
        o.push('\n');
    }
}

fn gate_toml(o: &mut String, g: &super::GateConfig) {
    let ints = [
        ("min_compared", g.min_compared),
        ("max_auth_error_accounts", g.max_auth_error_accounts),
        ("min_field_samples", g.min_field_samples),
    ];
    for (k, v) in ints {
        if let Some(v) = v {
            let _ = writeln!(o, "{k} = {v}");
        }
    }
    let floats = [
        ("min_paired_ids", g.min_paired_ids),
        ("min_parity", g.min_parity),
        ("max_candidate_error_rate", g.max_candidate_error_rate),
        ("max_latency_ratio", g.max_latency_ratio),
        ("confidence", g.confidence),
    ];
    for (k, v) in floats {
        if let Some(v) = v {
            let _ = writeln!(o, "{k} = {}", num(v));
        }
    }
    if let Some(a) = g.accepted {
        let _ = writeln!(
            o,
            "accepted = {}",
            q(match a {
                super::Accepted::Count => "count",
                super::Accepted::Exclude => "exclude",
            })
        );
    }
}
