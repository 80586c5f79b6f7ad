//! From the file as read (`raw.rs`) to the resolved configuration: defaults filled in, paths
//! made relative to the config file, cross-key rules checked, every error naming its key.

use super::raw::*;
use super::*;

impl Config {
    /// Parses config text; `path` is used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.clone(),
            message,
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                // The typed parse stops at the first error; the globs are checked all at once.
                let first = e.to_string().trim_end().to_owned();
                let mut all = super::lint::glob_problems(text);
                if all.len() > 1 {
                    all.insert(0, format!("{} problems:", all.len()));
                    return Err(invalid(all.join("\n  ")));
                }
                return Err(invalid(first));
            }
        };
        // Checks that do not stop the resolution: every one is reported at once.
        let problems = std::cell::RefCell::new(Vec::<String>::new());
        let note = |m: String| problems.borrow_mut().push(m);
        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let rel = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let line_of = |offset: usize| text[..offset.min(text.len())].lines().count().max(1);
        let tls_files = |table: &str, cert: Option<Str>, key: Option<Str>| match (cert, key) {
            (Some(c), Some(k)) => Some(super::TlsFiles {
                cert: rel(&c.0),
                key: rel(&k.0),
            }),
            (None, None) => None,
            _ => {
                note(format!(
                    "{table} tls_cert and tls_key: set both, or neither"
                ));
                None
            }
        };

        let reauth_after = raw
            .accounts
            .as_ref()
            .and_then(|a| a.reauth_after)
            .unwrap_or(defaults::REAUTH_AFTER);
        if reauth_after == 0 {
            note("[accounts] reauth_after: must be at least 1".into());
        }
        let accounts = match raw.accounts {
            None => None,
            Some(a) => Some(
                Accounts::load(a.key.0, &rel(&a.file.0))
                    .map_err(|e| invalid(format!("[accounts] file: {e}")))?,
            ),
        };

        if let Err(m) = check_array_keys(&raw.diff) {
            note(format!("[diff] array_keys: {m}"));
        }
        let id_kinds = id_kinds(&raw.ids).unwrap_or_else(|m| {
            note(m);
            Vec::new()
        });
        let global_rules = rules_of(&raw.diff);
        let global_safe = glob_set(raw.diff.serve_safe.clone());
        if let Some(g) = raw
            .diff
            .serve_safe
            .iter()
            .find(|g| !global_rules.has_pattern(g.0.as_str()))
        {
            note(format!(
                "[diff] serve_safe: {:?} is not the field pattern of an ignore, normalize, unordered or array_keys rule of [diff]",
                g.0.as_str()
            ));
        }
        let global_served_rules = global_rules.served(&global_safe);
        // The compared headers as a set: the default list written out is the default.
        let headers_text = {
            let mut given: Vec<String> = match &raw.diff.headers {
                Some(v) => v.iter().map(|h| h.0.as_str().to_owned()).collect(),
                None => defaults::COMPARED_HEADERS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
            };
            given.sort();
            given.dedup();
            let mut default: Vec<String> = defaults::COMPARED_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect();
            default.sort();
            if given == default {
                "None".to_owned()
            } else {
                given.join(",")
            }
        };
        let global_rules_version =
            rules_version(&global_rules, &global_served_rules, &headers_text);
        let max_body = raw.shadow.max_body.map_or(defaults::MAX_BODY, |s| s.0);
        let shadow = ShadowConfig {
            sample_rate: raw.shadow.sample_rate.unwrap_or(defaults::SAMPLE_RATE),
            max_in_flight: raw.shadow.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT),
            max_rps: raw.shadow.max_rps.unwrap_or(defaults::MAX_RPS),
            max_body,
            // By default room for at least one comparison of max_body.
            max_bytes_in_flight: raw
                .shadow
                .max_bytes_in_flight
                .map_or_else(|| defaults::max_bytes_in_flight(max_body), |s| s.0),
            // A vendor migration (routes translate paths): a path no route knows has no
            // counterpart on the candidate; mirroring it would spend the candidate's quota on
            // 404s and record their "differences". The same API upgraded mirrors by default.
            unmatched: raw.shadow.unmatched.unwrap_or(
                if raw
                    .routes
                    .iter()
                    .any(|r| r.candidate.as_ref().is_some_and(|c| c.path.is_some()))
                {
                    Unmatched::Skip
                } else {
                    Unmatched::Mirror
                },
            ),
            backoff_on_429: raw.shadow.backoff_on_429.unwrap_or(true),
            rate_limit_scope: raw.shadow.rate_limit_scope.unwrap_or_default(),
            reserve: raw.shadow.reserve.unwrap_or(0.0),
            threads: raw.shadow.threads.unwrap_or(defaults::SHADOW_THREADS),
            priority: raw.shadow.priority.unwrap_or_default(),
            breaker: {
                let b = raw.shadow.breaker.clone().unwrap_or_default();
                let d = crate::breaker::Settings::default();
                crate::breaker::Settings {
                    burst: b.burst.unwrap_or(d.burst),
                    window: b.window.map_or(d.window, |w| w.0),
                    open_for: b.open_for.map_or(d.open_for, |w| w.0),
                }
            },
        };
        if shadow.breaker.burst > 0
            && (shadow.breaker.window.is_zero() || shadow.breaker.open_for.is_zero())
        {
            note("[shadow.breaker] window and open_for: must be longer than 0 (burst = 0 disables the breaker)".into());
        }
        if !(0.0..1.0).contains(&shadow.reserve) {
            note(format!(
                "[shadow] reserve: {} must be at least 0 and under 1",
                shadow.reserve
            ));
        }
        if shadow.threads == 0 {
            note("[shadow] threads: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&shadow.sample_rate) {
            note(format!(
                "[shadow] sample_rate: {} is not between 0 and 1",
                shadow.sample_rate
            ));
        }
        if shadow.max_rps < 0.0 || !shadow.max_rps.is_finite() {
            note("[shadow] max_rps: must be 0 (unlimited) or positive".into());
        }
        let one = shadow.max_body.saturating_mul(crate::budget::COMPARE_COST);
        if shadow.max_bytes_in_flight < one {
            note(format!(
                "[shadow] max_bytes_in_flight: {} is below {} x max_body ({one}): a body of max_body could never be compared",
                shadow.max_bytes_in_flight,
                crate::budget::COMPARE_COST
            ));
        }
        if shadow.max_in_flight == 0 {
            note("[shadow] max_in_flight: must be at least 1".into());
        }
        if let Some(t) = raw
            .diff
            .number_tolerance
            .filter(|t| *t < 0.0 || !t.is_finite())
        {
            note(format!(
                "[diff] number_tolerance: {t} must be zero or positive"
            ));
        }

        let share = |key: &str, v: Option<f64>, default: f64| match v {
            None => default,
            Some(x) if (0.0..=1.0).contains(&x) => x,
            Some(x) => {
                note(format!("{key}: {x} must be between 0 and 1"));
                default
            }
        };
        let systematic_rate = share("[diff] systematic_rate", raw.diff.systematic_rate, 0.9);
        let raw_noise = raw.diff.noise.clone().unwrap_or_default();
        let noise = NoiseConfig {
            secondary_sample_rate: share(
                "[diff.noise] secondary_sample_rate",
                raw_noise.secondary_sample_rate,
                0.0,
            ),
            min_count: match raw_noise.min_count {
                Some(0) => {
                    note("[diff.noise] min_count: must be at least 1".into());
                    1
                }
                Some(n) => n,
                None => NoiseConfig::default().min_count,
            },
        };

        if let Some(p) = raw.store.path.as_ref() {
            if let crate::store::Location::Postgres(url) = crate::store::Location::parse(&p.0) {
                note(format!(
                    "[store] path: {url} is a PostgreSQL URL: set it as [store] url"
                ));
            }
        }
        let store_url = match raw.store.url.as_ref() {
            None => None,
            Some(u) => match crate::store::Location::parse(&u.0) {
                crate::store::Location::Postgres(url) => Some(url),
                crate::store::Location::Sqlite(_) => {
                    note(
                        "[store] url: must start with postgres:// or postgresql:// (a file is [store] path)"
                            .into(),
                    );
                    None
                }
            },
        };
        let mappings_cfg = crate::mapping::MappingsConfig {
            dir: rel(raw
                .mappings
                .dir
                .as_ref()
                .map_or(defaults::MAPPINGS_DIR, |d| d.0.as_str())),
            environment: raw.mappings.environment.as_ref().map(|e| e.0.clone()),
            timeout: raw
                .mappings
                .timeout
                .as_ref()
                .map_or(defaults::MAPPING_TIMEOUT, |d| d.0),
            workers: raw.mappings.workers.unwrap_or(defaults::MAPPING_WORKERS),
        };
        if mappings_cfg.workers == 0 {
            note("[mappings] workers: must be at least 1".into());
        }
        // `mapping`/`mapping_expr`/`mapping_lang` (a response mapping) or
        // `request_mapping`/`request_expr`/`request_lang` (a request mapping).
        let source = |table: &str,
                      (k_file, k_expr, k_lang): (&str, &str, &str),
                      file: &Option<Str>,
                      expr: &Option<Str>,
                      lang: &Option<Str>|
         -> Result<Option<crate::mapping::Source>, String> {
            use crate::mapping::{Lang, Source};
            match (file, expr) {
                (Some(_), Some(_)) => {
                    Err(format!("[{table}] {k_file} and {k_expr}: set one of them"))
                }
                (Some(f), None) => {
                    if lang.is_some() {
                        return Err(format!(
                            "[{table}] {k_lang}: the language of a mapping file comes from its extension"
                        ));
                    }
                    let p = rel(&f.0);
                    Lang::of_path(&p).ok_or_else(|| {
                        format!("[{table}] {k_file}: {:?} must end in .jsonata or .jq", f.0)
                    })?;
                    Ok(Some(Source::File(p)))
                }
                (None, Some(e)) => {
                    let l = match lang {
                        None => Lang::Jsonata,
                        Some(l) => Lang::parse(&l.0).ok_or_else(|| {
                            format!("[{table}] {k_lang}: {:?} is not jsonata or jq", l.0)
                        })?,
                    };
                    Ok(Some(Source::Expr(l, e.0.clone())))
                }
                (None, None) if lang.is_some() => {
                    Err(format!("[{table}] {k_lang}: only with {k_expr}"))
                }
                (None, None) => Ok(None),
            }
        };

        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for r in raw.routes {
            let line = line_of(r.name.span().start);
            let name = r.name.into_inner().0;
            let at = |m: String| format!("line {line}: route {name:?}: {m}");
            let route = (|| -> Result<Route, String> {
                if name.is_empty() {
                    return Err(at("name must not be empty".into()));
                }
                if routes.iter().any(|x| x.name == name) {
                    return Err(at("another route has the same name".into()));
                }
                let c = r.candidate.unwrap_or_default();
                let l = r.legacy.unwrap_or_default();
                let sources = crate::mapping::Sources {
                    base: source(
                        "routes.candidate",
                        RESPONSE_KEYS,
                        &c.mapping,
                        &c.mapping_expr,
                        &c.mapping_lang,
                    )
                    .map_err(at)?,
                    legacy: source(
                        "routes.legacy",
                        RESPONSE_KEYS,
                        &l.mapping,
                        &l.mapping_expr,
                        &l.mapping_lang,
                    )
                    .map_err(at)?,
                };
                let mappings = crate::mapping::load_route(&name, &sources, &mappings_cfg)
                    .map_err(|m| at(format!("mapping: {m}")))?;
                let request = match source(
                    "routes.candidate",
                    ("request_mapping", "request_expr", "request_lang"),
                    &c.request_mapping,
                    &c.request_expr,
                    &c.request_lang,
                )
                .map_err(at)?
                {
                    Some(src) => Some(crate::translate::request::RequestMapping {
                        chain: crate::mapping::load_request(&src)
                            .map_err(|m| at(format!("request mapping: {m}")))?,
                        max_each: match c.max_each {
                            None => crate::translate::request::DEFAULT_MAX_EACH,
                            Some(n @ 1..=crate::translate::request::MAX_EACH_LIMIT) => n,
                            Some(n) => {
                                return Err(at(format!(
                                    "[routes.candidate] max_each: {n} is not between 1 and {}",
                                    crate::translate::request::MAX_EACH_LIMIT
                                )))
                            }
                        },
                    }),
                    None if c.max_each.is_some() => {
                        return Err(at(
                            "[routes.candidate] max_each: only with a request mapping (request_mapping or request_expr)"
                                .into(),
                        ))
                    }
                    None => None,
                };
                let candidate = CandidateTemplate {
                    method: c.method.map(|m| m.0),
                    path: c.path.map(|p| p.0),
                    query: c
                        .query
                        .map(|q| q.into_iter().map(|(k, v)| (k, v.0)).collect()),
                    request,
                };
                check_vars(
                    candidate
                        .path
                        .iter()
                        .chain(candidate.query.iter().flatten().map(|(_, t)| t)),
                    Some(&r.path.0),
                    accounts.as_ref(),
                    candidate.request.is_some(),
                )
                .map_err(at)?;
                if candidate.request.is_some()
                    && r.serve == Some(true)
                    && (r
                        .ids
                        .as_ref()
                        .is_none_or(|i| i.records.is_empty() && i.refs.is_empty())
                        || mappings.is_empty())
                {
                    return Err(at(
                        "serve = true on a route with a request mapping needs a response mapping and [routes.ids]: its answer is assembled from calls the caller never made, with the candidate's ids, which must be turned back into legacy's".into(),
                    ));
                }
                let read = r.read.unwrap_or(false);
                // A request mapping is for reads: on a mirrored write it could turn one caller
                // write into N candidate writes.
                if candidate.request.is_some()
                    && !read
                    && !r
                        .method
                        .as_ref()
                        .is_some_and(|m| m.0 == http::Method::GET || m.0 == http::Method::HEAD)
                {
                    return Err(at(
                        "a request mapping needs a read route: method = \"GET\", or read = true with its method (a mapped write could become many candidate writes)".into(),
                    ));
                }
                if read {
                    match &r.method {
                        None => {
                            return Err(at(
                                "read = true needs the route's method (e.g. method = \"POST\"): other methods on the path stay writes"
                                    .into(),
                            ))
                        }
                        Some(m)
                            if [http::Method::PUT, http::Method::PATCH, http::Method::DELETE]
                                .contains(&m.0) =>
                        {
                            return Err(at(format!(
                                "read = true on a {} route: only a method that reads (POST for a batch read) may be declared a read",
                                m.0
                            )))
                        }
                        Some(_) => {}
                    }
                    if r.mirror == Some(false) {
                        return Err(at("read = true with mirror = false: a read route is mirrored (drop one of them)".into()));
                    }
                    if let Some(m) = candidate.method.as_ref().filter(|m| {
                        [http::Method::PUT, http::Method::PATCH, http::Method::DELETE].contains(m)
                    }) {
                        return Err(at(format!(
                            "[routes.candidate] method: {m} on a read route: a read is never sent to a write endpoint"
                        )));
                    }
                }
                check_array_keys(&r.diff)
                    .map_err(|m| at(format!("[routes.diff] array_keys: {m}")))?;
                let mut rules = global_rules.clone();
                rules.extend(&rules_of(&r.diff));
                rules.auto_keys = r.diff.auto_keys.unwrap_or(global_rules.auto_keys);
                let mut safe = glob_set(raw.diff.serve_safe.clone());
                safe.extend(&glob_set(r.diff.serve_safe.clone()));
                if let Some(g) = r
                    .diff
                    .serve_safe
                    .iter()
                    .find(|g| !rules.has_pattern(g.0.as_str()))
                {
                    return Err(at(format!(
                        "[routes.diff] serve_safe: {:?} is not the field pattern of an ignore, normalize, unordered or array_keys rule of this route or of [diff]",
                        g.0.as_str()
                    )));
                }
                let served_rules = rules.served(&safe);
                let unverified = rules.unverified(&safe);
                if r.diff.headers.is_some() {
                    return Err(at(
                        "[routes.diff] headers: response headers to compare are set in [diff] only"
                            .into(),
                    ));
                }
                if r.diff.noise.is_some() || r.diff.systematic_rate.is_some() {
                    return Err(at(
                        "[routes.diff] noise and systematic_rate are set in [diff] only".into(),
                    ));
                }
                if r.serve == Some(true) && r.mirror == Some(false) {
                    return Err(at(
                    "serve = true needs the route mirrored (mirror = false here): the served answer is the candidate's".into(),
                ));
                }
                if let Some((var, kind)) = candidate
                    .path
                    .iter()
                    .chain(candidate.query.iter().flatten().map(|(_, t)| t))
                    .flat_map(|t| t.vars())
                    .find_map(|v| match v {
                        crate::translate::Var::Id(_, k) if !raw.ids.contains_key(k) => {
                            Some((v.to_string(), k.clone()))
                        }
                        _ => None,
                    })
                {
                    return Err(at(format!(
                        "[routes.candidate] {var}: kind {kind:?} is not declared in [ids] (an [ids.{kind}] table says how its ids are paired)"
                    )));
                }
                let paging = match &r.paging {
                    None => None,
                    Some(p) => {
                        let spec =
                            paging_spec(p).map_err(|m| at(format!("[routes.paging] {m}")))?;
                        if candidate.request.is_some() {
                            return Err(at("[routes.paging] on a route with a request mapping: a paged list is one candidate request per page, built from the route's templates".into()));
                        }
                        if mappings.candidate.is_none() && mappings.accounts.is_empty() {
                            return Err(at("[routes.paging] needs a response mapping ([routes.candidate] mapping): the walked candidate page is reshaped into legacy's envelope".into()));
                        }
                        Some(spec)
                    }
                };
                let ids = match &r.ids {
                    None => crate::ids::RouteIds::default(),
                    Some(i) => route_ids(i, &raw.ids)
                        .map_err(|m| at(format!("[routes.ids] {m}")))?
                        .compile(&id_kinds),
                };
                if !ids.request.is_empty() && candidate.request.is_none() {
                    return Err(at("[routes.ids] request: ids in the candidate's request body need a request mapping (the body it builds)".into()));
                }
                let reference = match &r.reference {
                    None => Vec::new(),
                    Some(f) => {
                        let p = rel(&f.0);
                        let bytes = std::fs::read(&p)
                            .map_err(|e| at(format!("reference: {}: {e}", p.display())))?;
                        let doc = crate::diff::parse_json(&bytes).map_err(|e| {
                            at(format!("reference: {}: not JSON: {e}", p.display()))
                        })?;
                        crate::coverage::reference_patterns(&doc)
                    }
                };
                Ok(Route {
                    name: name.clone(),
                    reference,
                    method: r.method.map(|m| m.0),
                    path: r.path.0,
                    mirror: r.mirror,
                    read,
                    serve: r.serve,
                    serve_deadline: r.serve_deadline.map_or(defaults::SERVE_DEADLINE, |d| d.0),
                    unknown_account: r.unknown_account.unwrap_or_default(),
                    candidate,
                    rules_version: rules_version(&rules, &served_rules, &headers_text),
                    rules,
                    served_rules,
                    unverified,
                    mappings,
                    ids,
                    paging,
                })
            })();
            match route {
                Ok(route) => routes.push(route),
                Err(m) => note(m),
            }
        }

        for (key, d) in [
            (
                "[proxy] header_read_timeout",
                &raw.proxy.header_read_timeout,
            ),
            ("[proxy] idle_timeout", &raw.proxy.idle_timeout),
            ("[legacy] body_timeout", &raw.legacy.body_timeout),
        ] {
            if d.as_ref().is_some_and(|d| d.0.is_zero()) {
                note(format!("{key}: must be longer than 0s"));
            }
        }
        let explicit_query = raw.candidate.forward_query.is_some();
        let mut forward_query: Vec<String> = match raw.candidate.forward_query {
            Some(v) => v.into_iter().map(|q| q.0).collect(),
            None => DEFAULT_FORWARD_QUERY
                .iter()
                .map(|&q| q.to_owned())
                .collect(),
        };
        if let Some(Accounts {
            source: crate::translate::KeySource::Query(key),
            ..
        }) = &accounts
        {
            if explicit_query && forward_query.contains(key) {
                note(format!(
                    "[candidate] forward_query: {key:?} is the accounts key (a legacy credential): it never goes to the candidate"
                ));
            }
            forward_query.retain(|q| q != key);
        }
        let admin_listen = raw
            .admin
            .listen
            .map_or_else(|| defaults::ADMIN_LISTEN.to_owned(), |s| s.0);
        let mut candidate_headers = Vec::new();
        let mut candidate_header_templates = Vec::new();
        for (k, v) in raw.candidate.headers {
            let Ok(name) = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) else {
                note(format!("[candidate] headers: invalid header name {k:?}"));
                continue;
            };
            if v.0.contains('{') {
                match crate::translate::Template::parse(&v.0) {
                    Ok(t) => {
                        if let Err(m) =
                            check_vars(std::iter::once(&t), None, accounts.as_ref(), false)
                        {
                            note(format!("[candidate] headers.{k}: {m}"));
                        }
                        candidate_header_templates.push((name, t));
                    }
                    Err(e) => note(format!("[candidate] headers.{k}: {e}")),
                }
                continue;
            }
            let Ok(value) = HeaderValue::from_str(&v.0) else {
                note(format!("[candidate] headers.{k}: invalid header value"));
                continue;
            };
            candidate_headers.push((name, value));
        }
        let names = |v: Option<Vec<HeaderNameStr>>, default: &[&'static str]| -> Vec<HeaderName> {
            match v {
                Some(v) => v.into_iter().map(|h| h.0).collect(),
                None => default
                    .iter()
                    .copied()
                    .map(HeaderName::from_static)
                    .collect(),
            }
        };

        for (phase, gate) in &raw.gate {
            let mut found = Vec::new();
            check_gate(&format!("[gate.{phase}]"), gate, &routes, &mut found);
            for m in found {
                note(m);
            }
        }
        let body_sample = share(
            "[store] body_sample",
            raw.store.body_sample,
            defaults::BODY_SAMPLE,
        );
        let match_sample = share(
            "[store] match_sample",
            raw.store.match_sample,
            defaults::MATCH_SAMPLE,
        );
        let proxy_tls = tls_files(
            "[proxy]",
            raw.proxy.tls_cert.clone(),
            raw.proxy.tls_key.clone(),
        );
        let admin = {
            let a = AdminConfig {
                listen: (!admin_listen.is_empty()).then_some(admin_listen),
                token: raw.admin.token.map(|t| t.0).filter(|t| !t.is_empty()),
                metrics_token: raw.admin.metrics_token.unwrap_or(true),
                hosts: raw
                    .admin
                    .hosts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| h.0.to_ascii_lowercase())
                    .collect(),
                tls: tls_files("[admin]", raw.admin.tls_cert, raw.admin.tls_key),
            };
            let line = text
                .find("[admin]")
                .and_then(|at| text[at..].find("listen").map(|l| at + l))
                .map_or_else(String::new, |o| format!("line {}: ", line_of(o + 1)));
            if let Some(m) = a.exposure(&format!("{line}[admin] listen")) {
                note(m);
            }
            a
        };
        let rollout = rollout(raw.rollout, &line_of);
        let webhooks = webhooks(raw.webhooks);
        let mut problems = problems.into_inner();
        problems.extend(rollout.as_ref().err().cloned());
        problems.extend(webhooks.as_ref().err().cloned());
        match problems.len() {
            0 => {}
            1 => return Err(invalid(problems.remove(0))),
            n => {
                problems.insert(0, format!("{n} problems:"));
                return Err(invalid(problems.join("\n  ")));
            }
        }
        let (Ok(rollout), Ok(webhooks)) = (rollout, webhooks) else {
            unreachable!("their errors were returned above");
        };
        let mut cfg = Self {
            warnings: super::lint::placeholder_warnings(text, |name| std::env::var(name).ok()),
            source: path.map(Path::to_path_buf),
            proxy: ProxyConfig {
                listen: raw
                    .proxy
                    .listen
                    .map_or_else(|| defaults::PROXY_LISTEN.to_owned(), |s| s.0),
                drain_timeout: raw
                    .proxy
                    .drain_timeout
                    .map_or(defaults::DRAIN_TIMEOUT, |d| d.0),
                max_connections: raw
                    .proxy
                    .max_connections
                    .unwrap_or(defaults::MAX_CONNECTIONS)
                    .max(1),
                max_connections_set: raw.proxy.max_connections.is_some(),
                header_read_timeout: raw
                    .proxy
                    .header_read_timeout
                    .map_or(defaults::HEADER_READ_TIMEOUT, |d| d.0),
                idle_timeout: raw
                    .proxy
                    .idle_timeout
                    .map_or(defaults::IDLE_TIMEOUT, |d| d.0),
                tls: proxy_tls,
            },
            admin,
            legacy: UpstreamConfig {
                base_url: raw.legacy.base_url.map(|u| u.0),
                timeout: raw
                    .legacy
                    .timeout
                    .map_or(defaults::UPSTREAM_TIMEOUT, |d| d.0),
                body_timeout: raw
                    .legacy
                    .body_timeout
                    .map_or(defaults::LEGACY_BODY_TIMEOUT, |d| d.0),
                ca_file: raw.legacy.ca_file.map(|f| rel(&f.0)),
                headers: Vec::new(),
                header_templates: Vec::new(),
                forward_headers: Vec::new(),
                forward_query: Vec::new(),
            },
            candidate: UpstreamConfig {
                base_url: raw.candidate.base_url.map(|u| u.0),
                timeout: raw
                    .candidate
                    .timeout
                    .map_or(defaults::UPSTREAM_TIMEOUT, |d| d.0),
                ca_file: raw.candidate.ca_file.map(|f| rel(&f.0)),
                headers: candidate_headers,
                header_templates: candidate_header_templates,
                forward_headers: names(raw.candidate.forward_headers, defaults::FORWARD_HEADERS),
                body_timeout: Duration::ZERO,
                forward_query,
            },
            accounts,
            shadow,
            diff: DiffConfig {
                rules: global_rules,
                served_rules: global_served_rules,
                rules_version: global_rules_version,
                headers: names(raw.diff.headers, defaults::COMPARED_HEADERS),
                systematic_rate,
                noise,
            },
            store: StoreConfig {
                path: rel(raw
                    .store
                    .path
                    .as_ref()
                    .map_or(defaults::STORE_PATH, |p| p.0.as_str())),
                url: store_url,
                ca_file: raw.store.ca_file.map(|f| rel(&f.0)),
                migrate: raw.store.migrate.unwrap_or(true),
                retention: raw.store.retention.map_or(defaults::RETENTION, |d| d.0),
                bodies: raw.store.bodies.unwrap_or(defaults::BODIES),
                redact_headers: names(raw.store.redact_headers, defaults::REDACT_HEADERS),
                redact_fields: match raw.store.redact_fields {
                    Some(v) => glob_set(v),
                    None => GlobSet::default(),
                },
                queue: raw.store.queue.unwrap_or(defaults::STORE_QUEUE).max(1),
                max_value_len: raw
                    .store
                    .max_value_len
                    .map_or(defaults::MAX_VALUE_LEN, |s| s.0)
                    .max(16),
                examples_per_field: raw
                    .store
                    .examples_per_field
                    .unwrap_or(defaults::EXAMPLES_PER_FIELD)
                    .max(1),
                exchanges: raw.store.exchanges.unwrap_or(defaults::EXCHANGES),
                rows_per_hour: raw.store.rows_per_hour.unwrap_or(defaults::ROWS_PER_HOUR),
                body_examples: raw.store.body_examples.unwrap_or(defaults::BODY_EXAMPLES),
                body_sample,
                match_sample,
                body_budget: raw.store.body_budget.map_or(defaults::BODY_BUDGET, |s| s.0),
            },
            gates: raw.gate,
            rollout,
            reauth_after,
            webhooks,
            routes,
            ids: id_kinds,
            mappings: mappings_cfg,
        };
        let serving = cfg.serving_warnings();
        cfg.warnings.extend(serving);
        let plaintext = cfg.plaintext_warnings();
        cfg.warnings.extend(plaintext);
        let secrets = cfg.accounts_file_warnings();
        cfg.warnings.extend(secrets);
        let ids = cfg.ids_warnings();
        cfg.warnings.extend(ids);
        Ok(cfg)
    }
}

/// `[routes.paging]` with its defaults, each value checked.
fn paging_spec(p: &RawPaging) -> Result<crate::paging::Spec, String> {
    let name = |v: &Option<Str>, d: &str| v.as_ref().map_or_else(|| d.to_owned(), |s| s.0.clone());
    let pointer = |key: &str, v: &Option<Str>, d: Option<&str>| -> Result<Option<String>, String> {
        match v.as_ref().map(|s| s.0.as_str()).or(d) {
            None => Ok(None),
            Some(p) if p.starts_with('/') => Ok(Some(p.to_owned())),
            Some(p) => Err(format!(
                "{key}: {p:?} must be a JSON pointer (start with '/')"
            )),
        }
    };
    let names = [
        ("offset", name(&p.offset, "offset")),
        ("limit", name(&p.limit, "limit")),
        ("cursor", name(&p.cursor, "cursor")),
        ("page_size", name(&p.page_size, "page_size")),
    ];
    for (i, (key, v)) in names.iter().enumerate() {
        if v.is_empty() {
            return Err(format!("{key}: a query parameter's name cannot be empty"));
        }
        if let Some((other, _)) = names[..i].iter().find(|(_, w)| w == v) {
            return Err(format!(
                "{key}: {v:?} is also {other}: legacy's offset and limit and the candidate's cursor and page size are four parameters"
            ));
        }
    }
    if p.cursor_ttl.as_ref().is_some_and(|d| d.0.is_zero()) {
        return Err("cursor_ttl: must be longer than 0s".into());
    }
    let max_page_size = p.max_page_size.unwrap_or(100);
    let max_pages = p.max_pages.unwrap_or(50);
    if !(1..=10_000).contains(&max_page_size) {
        return Err(format!(
            "max_page_size: {max_page_size} is not between 1 and 10000"
        ));
    }
    if !(1..=1_000).contains(&max_pages) {
        return Err(format!("max_pages: {max_pages} is not between 1 and 1000"));
    }
    Ok(crate::paging::Spec {
        offset: name(&p.offset, "offset"),
        limit: name(&p.limit, "limit"),
        count_field: pointer("count_field", &p.count_field, None)?,
        offset_field: pointer("offset_field", &p.offset_field, None)?,
        cursor: name(&p.cursor, "cursor"),
        page_size: name(&p.page_size, "page_size"),
        max_page_size,
        next_field: pointer("next_field", &p.next_field, Some("/next"))?.unwrap_or_default(),
        results_field: pointer("results_field", &p.results_field, Some("/results"))?
            .unwrap_or_default(),
        max_pages,
        cursor_ttl: p
            .cursor_ttl
            .as_ref()
            .map_or(std::time::Duration::from_secs(60), |d| d.0),
    })
}

/// `[ids.KIND]`, each checked: a name, pointers, at least one natural key.
fn id_kinds(raw: &BTreeMap<String, RawIdKind>) -> Result<Vec<crate::ids::KindSpec>, String> {
    let pointer = |kind: &str, key: &str, p: &str| {
        if p.starts_with('/') {
            Ok(p.to_owned())
        } else {
            Err(format!(
                "[ids.{kind}] {key}: {p:?} must be a JSON pointer inside the record (start with '/')"
            ))
        }
    };
    let mut out = Vec::new();
    for (name, k) in raw {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "[ids.{name}]: a kind's name is letters, digits, '_' and '-'"
            ));
        }
        let id = match &k.id {
            Some(s) => pointer(name, "id", &s.0)?,
            None => "/id".to_owned(),
        };
        if k.keys.is_empty() || k.keys.iter().any(Vec::is_empty) {
            return Err(format!(
                "[ids.{name}] match: at least one natural key, each a non-empty list of pointers (e.g. match = [[\"/first_name\", \"/last_name\"]])"
            ));
        }
        let keys = k
            .keys
            .iter()
            .map(|key| key.iter().map(|p| pointer(name, "match", &p.0)).collect())
            .collect::<Result<Vec<Vec<String>>, String>>()?;
        let max_pairs = k.max_pairs.unwrap_or(crate::ids::DEFAULT_MAX_PAIRS);
        if max_pairs == 0 {
            return Err(format!("[ids.{name}] max_pairs: must be at least 1"));
        }
        out.push(crate::ids::KindSpec {
            name: name.clone(),
            id,
            keys,
            max_pairs,
        });
    }
    Ok(out)
}

/// `[routes.ids]`: every pattern a field glob without `**`, every kind declared in `[ids]`.
fn route_ids(
    raw: &RawRouteIds,
    kinds: &BTreeMap<String, RawIdKind>,
) -> Result<crate::ids::RouteIds, String> {
    let one = |key: &str, (pattern, kind): (&String, &Str)| {
        if !kinds.contains_key(&kind.0) {
            let known: Vec<&str> = kinds.keys().map(String::as_str).collect();
            return Err(format!(
                "{key}: kind {:?} is not declared in [ids] (declared: {known:?})",
                kind.0
            ));
        }
        if !(pattern.is_empty() || pattern.starts_with('/')) || pattern.contains("**") {
            return Err(format!(
                "{key}: {pattern:?} must be a pointer from the root (\"\" for the whole document), '*' for any index (no '**')"
            ));
        }
        let g = crate::diff::Glob::new(pattern).map_err(|e| format!("{key}: {e}"))?;
        Ok((g, kind.0.clone()))
    };
    Ok(crate::ids::RouteIds::new(
        raw.records
            .iter()
            .map(|e| one("records", e))
            .collect::<Result<_, _>>()?,
        raw.refs
            .iter()
            .map(|e| one("refs", e))
            .collect::<Result<_, _>>()?,
    )
    .with_request(
        raw.request
            .iter()
            .map(|e| one("request", e))
            .collect::<Result<_, _>>()?,
    ))
}

/// `[rollout]`: the built-in phases with the user's changes and additions, the promotion order,
/// pins and the guard, each value checked.
fn rollout(
    raw: RawRollout,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<crate::rollout::RolloutConfig, String> {
    use crate::rollout::{PhaseDef, RolloutConfig, ROLLBACK};
    let mut cfg = RolloutConfig::default();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    for (name, def) in raw.phases {
        let line = line_of(def.span().start);
        let def = def.into_inner();
        let at = |m: String| format!("line {line}: [rollout.phases.{name}] {m}");
        if !name_ok(&name) {
            return Err(at(
                "phase names are lowercase letters, digits, '-' and '_'".into()
            ));
        }
        let builtin = cfg.phases.get(&name).cloned();
        let percent = def
            .percent
            .or(builtin.as_ref().map(|b| b.percent))
            .ok_or_else(|| at("percent: required for a phase of your own".into()))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(at(format!("percent: {percent} is not between 0 and 100")));
        }
        if name == ROLLBACK && percent != 0.0 {
            return Err(at("percent: rollback serves no one (0)".into()));
        }
        let legacy_sample = def.legacy_sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&legacy_sample) {
            return Err(at(format!(
                "legacy_sample: {legacy_sample} is not between 0 and 1"
            )));
        }
        let verify = def
            .verify
            .unwrap_or(builtin.as_ref().is_some_and(|b| b.verify));
        if verify && legacy_sample < 1.0 {
            return Err(at(format!(
                "verify: each served answer is checked against legacy's, so legacy_sample must be 1 (it is {legacy_sample}); set verify = false to serve without that check"
            )));
        }
        cfg.phases.insert(
            name,
            PhaseDef {
                percent,
                legacy_sample,
                verify,
            },
        );
    }
    if let Some(order) = raw.order {
        let line = line_of(order.span().start);
        let order: Vec<String> = order.into_inner().into_iter().map(|s| s.0).collect();
        for p in &order {
            if p == ROLLBACK {
                return Err(format!(
                    "line {line}: [rollout] order: rollback is not a step of the order (promote from it goes to the first phase)"
                ));
            }
            if !cfg.phases.contains_key(p) {
                return Err(format!(
                    "line {line}: [rollout] order: no phase named {p:?} (define it in [rollout.phases.{p}])"
                ));
            }
        }
        if order.is_empty() {
            return Err(format!("line {line}: [rollout] order: empty"));
        }
        cfg.order = order;
    }
    if let Some(p) = raw.phase {
        let line = line_of(p.span().start);
        let p = p.into_inner().0;
        if !cfg.phases.contains_key(&p) {
            let known: Vec<&str> = cfg.phases.keys().map(String::as_str).collect();
            return Err(format!(
                "line {line}: [rollout] phase: no phase named {p:?} (phases: {})",
                known.join(", ")
            ));
        }
        cfg.phase = p;
    }
    if let Some(s) = raw.salt {
        cfg.salt = s.0;
    }
    cfg.pin_candidate = raw.pin_candidate.into_iter().map(|s| s.0).collect();
    cfg.pin_legacy = raw.pin_legacy.into_iter().map(|s| s.0).collect();
    if let Some(both) = cfg.pin_candidate.intersection(&cfg.pin_legacy).next() {
        return Err(format!(
            "[rollout] pin_candidate and pin_legacy both name {both:?}"
        ));
    }
    if let Some(n) = raw.max_in_flight {
        if n == 0 {
            return Err("[rollout] max_in_flight: must be at least 1".into());
        }
        cfg.max_in_flight = Some(n);
    }
    if let Some(d) = raw.follow {
        if d.0.is_zero() {
            return Err("[rollout] follow: must be above 0".into());
        }
        cfg.follow = d.0;
    }
    let g = raw.guard;
    let share = |key: &str, v: Option<f64>| -> Result<Option<f64>, String> {
        match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(format!("[rollout.guard] {key}: {x} is not between 0 and 1"))
            }
            v => Ok(v),
        }
    };
    let guard = &mut cfg.guard;
    guard.auto_rollback = g.auto_rollback.unwrap_or(guard.auto_rollback);
    guard.auto_promote = g.auto_promote.unwrap_or(guard.auto_promote);
    if let Some(d) = g.window {
        guard.window = d.0;
    }
    guard.min_sample = g.min_sample.unwrap_or(guard.min_sample);
    if guard.min_sample == 0 {
        return Err("[rollout.guard] min_sample: must be at least 1".into());
    }
    guard.min_parity = share("min_parity", g.min_parity)?.or(guard.min_parity);
    guard.max_fallback_rate =
        share("max_fallback_rate", g.max_fallback_rate)?.or(guard.max_fallback_rate);
    guard.max_candidate_error_rate = share("max_candidate_error_rate", g.max_candidate_error_rate)?
        .or(guard.max_candidate_error_rate);
    if let Some(c) = g.confidence {
        if !(0.5..1.0).contains(&c) {
            return Err(format!(
                "[rollout.guard] confidence: {c} is not in [0.5, 1)"
            ));
        }
        guard.confidence = c;
    }
    for (key, v, slot) in [
        ("hold", g.hold, &mut guard.hold),
        (
            "promote_window",
            g.promote_window,
            &mut guard.promote_window,
        ),
        ("every", g.every, &mut guard.every),
    ] {
        if let Some(d) = v {
            if d.0.is_zero() {
                return Err(format!("[rollout.guard] {key}: must be above 0"));
            }
            *slot = d.0;
        }
    }
    if guard.window.is_zero() {
        return Err("[rollout.guard] window: must be above 0".into());
    }
    Ok(cfg)
}

/// A gate's thresholds: shares between 0 and 1, a positive latency ratio, route overrides that
/// name configured routes (a misspelt route would otherwise gate nothing, silently).
/// A gate's problems, all of them: thresholds out of range, route overrides naming no route.
fn check_gate(table: &str, gate: &super::GateConfig, routes: &[Route], out: &mut Vec<String>) {
    if let Some(c) = gate.confidence {
        if c != 0.0 && !(0.5..1.0).contains(&c) {
            out.push(format!(
                "{table} confidence: {c} is not 0 (judge the measured ratio) or in [0.5, 1)"
            ));
        }
    }
    for (key, v) in [
        ("min_parity", gate.min_parity),
        ("max_candidate_error_rate", gate.max_candidate_error_rate),
    ] {
        if let Some(x) = v.filter(|x| !(0.0..=1.0).contains(x)) {
            out.push(format!("{table} {key}: {x} must be between 0 and 1"));
        }
    }
    if let Some(x) = gate
        .max_latency_ratio
        .filter(|x| !(*x > 0.0 && x.is_finite()))
    {
        out.push(format!(
            "{table} max_latency_ratio: {x} must be a positive number"
        ));
    }
    for (name, over) in &gate.routes {
        if !routes.iter().any(|r| &r.name == name) {
            let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
            out.push(format!(
                "{table} routes.{name}: no route named {name:?} (routes: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
        check_gate(&format!("{table} routes.{name}"), over, routes, out);
    }
}

fn glob_set(v: Vec<GlobStr>) -> GlobSet {
    let mut set = GlobSet::default();
    for g in v {
        set.push(g.0);
    }
    set
}

/// What a set of rules adds to `mapping_version`: a hash of their canonical text, or `None`
/// for the rules of a config without any (versions recorded before this existed stay valid).
fn rules_version(rules: &Rules, served: &Rules, headers: &str) -> Option<String> {
    let text = |r: &Rules, s: &Rules, h: &str| {
        format!("{} served:{} headers:{h}", r.describe(), s.describe())
    };
    let mine = text(rules, served, headers);
    let empty = rules_of(&RawDiff::default());
    let none = text(&empty, &empty.served(&GlobSet::default()), "None");
    (mine != none)
        .then(|| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(mine.as_bytes()))[..12].to_owned())
}

fn rules_of(d: &RawDiff) -> Rules {
    Rules {
        ignore: glob_set(d.ignore.clone()),
        array_keys: d
            .array_keys
            .iter()
            .filter_map(|(k, v)| Glob::new(k).ok().map(|g| (g, v.0.clone())))
            .collect(),
        unordered: glob_set(d.unordered.clone()),
        number_tolerance: d.number_tolerance.unwrap_or(0.0),
        null_equals_missing: d.null_equals_missing.unwrap_or(false),
        auto_keys: d.auto_keys.unwrap_or(true),
        normalize: d
            .normalize
            .iter()
            .map(|n| {
                (
                    glob_set(n.fields.clone()),
                    n.with.iter().map(|w| w.0).collect(),
                )
            })
            .collect(),
    }
}

fn check_array_keys(d: &RawDiff) -> Result<(), String> {
    for (k, v) in &d.array_keys {
        Glob::new(k).map_err(|e| e.to_string())?;
        if v.0.is_empty() {
            return Err(format!("{k:?}: the key member must not be empty"));
        }
    }
    Ok(())
}

/// Template placeholders must have a source: a capture of the route's path, or a column of the
/// accounts file. Every miss is reported at once, with the names there are.
fn check_vars<'a>(
    templates: impl Iterator<Item = &'a crate::translate::Template>,
    path: Option<&PathPattern>,
    accounts: Option<&Accounts>,
    fans_out: bool,
) -> Result<(), String> {
    let mut misses = Vec::new();
    for t in templates {
        for v in t.vars() {
            match (v, path, accounts) {
                (crate::translate::Var::Capture(n), Some(p), _) if !p.captures().any(|c| c == n) => {
                    let known: Vec<String> = p.captures().map(|c| format!("{{{c}}}")).collect();
                    misses.push(format!(
                        "{v} in {:?}: the route's path {:?} has no capture {{{n}}} (its captures: {})",
                        t.as_str(),
                        p.as_str(),
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ));
                }
                (crate::translate::Var::Capture(n), None, _) => misses.push(format!(
                    "{v} in {:?}: {{{n}}} is a route's path capture; [candidate] headers apply to every request (use {{query.NAME}} or {{account.COLUMN}})",
                    t.as_str()
                )),
                (crate::translate::Var::Each(_), None, _) => misses.push(format!(
                    "{v} in {:?}: {{each.NAME}} names a fan-out element, which only a route's request mapping makes; [candidate] headers apply to every request",
                    t.as_str()
                )),
                (crate::translate::Var::Each(_), Some(_), _) if !fans_out => misses.push(format!(
                    "{v} in {:?}: {{each.NAME}} names a fan-out element: the route needs a request mapping returning \"each\" ([routes.candidate] request_expr or request_mapping)",
                    t.as_str()
                )),
                (crate::translate::Var::Account(_), _, None) => misses.push(format!(
                    "{v} in {:?}: needs an [accounts] section",
                    t.as_str()
                )),
                (crate::translate::Var::Account(c), _, Some(a)) if !a.columns.iter().any(|k| k == c) => {
                    misses.push(format!(
                        "{v} in {:?}: the accounts file {} has no column {c:?} (its columns: {})",
                        t.as_str(),
                        a.file.display(),
                        a.columns.join(", ")
                    ));
                }
                _ => {}
            }
        }
    }
    if misses.is_empty() {
        Ok(())
    } else {
        Err(misses.join("; "))
    }
}

/// The keys of a response mapping's source.
const RESPONSE_KEYS: (&str, &str, &str) = ("mapping", "mapping_expr", "mapping_lang");

/// `[[webhooks]]`: names unique, URLs http(s), events known, a secret of 16 bytes or more.
fn webhooks(raw: Vec<RawWebhook>) -> Result<Vec<super::Webhook>, String> {
    let mut out: Vec<super::Webhook> = Vec::new();
    for w in raw {
        let name = w.name.0;
        let at = |m: String| format!("[[webhooks]] {name}: {m}");
        if name.is_empty() || out.iter().any(|e| e.name == name) {
            return Err(format!(
                "[[webhooks]] name: {name:?} is empty or used twice"
            ));
        }
        let url: http::Uri = w.url.0.parse().map_err(|e| at(format!("url: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(at("url: an http(s) URL is needed".into()));
        }
        let mut events = Vec::new();
        for e in w.events {
            if !super::WEBHOOK_EVENTS.contains(&e.0.as_str()) {
                return Err(at(format!(
                    "events: unknown event {:?} (known: {})",
                    e.0,
                    super::WEBHOOK_EVENTS.join(", ")
                )));
            }
            events.push(e.0);
        }
        if events.is_empty() {
            return Err(at("events: name at least one".into()));
        }
        if w.secret.0.len() < 16 {
            return Err(at(
                "secret: at least 16 bytes (use ${VAR} to keep it out of the file)".into(),
            ));
        }
        out.push(super::Webhook {
            name,
            url,
            events,
            secret: w.secret.0,
            max_attempts: w.max_attempts.unwrap_or(8).max(1),
            retry_base: w.retry_base.map_or(Duration::from_secs(1), |d| d.0),
            timeout: w.timeout.map_or(Duration::from_secs(10), |d| d.0),
        });
    }
    Ok(out)
}
