//! `deploy/`: the container image recipe, the local fleet (docker compose) and the Kubernetes
//! manifests. No container engine or cluster runs here, so this checks what can be checked
//! without one: every YAML document parses; the fleet's commands and the ConfigMap's config are
//! accepted by this very binary; the manifests hold together (3 replicas, a disruption budget
//! selecting them, probes on the admin port the config listens on, no root).

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        .into_iter()
        .map(merge_keys)
        .collect()
}

/// Resolves YAML merge keys (`<<: *anchor`, which compose files use and the parser leaves as
/// a plain key): the merged mapping's entries, unless the mapping has its own.
fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut inherited = Vec::new();
            for (k, v) in h {
                if k.as_str() == Some("<<") {
                    if let Yaml::Hash(base) = merge_keys(v) {
                        inherited.extend(base);
                    }
                } else {
                    out.insert(k, merge_keys(v));
                }
            }
            for (k, v) in inherited {
                out.entry(k).or_insert(v);
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn shadowdiff(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_compose_fleet_runs_three_proxies_on_one_postgres_with_commands_this_binary_takes() {
    let doc = &load(&deploy().join("compose.yaml"))[0];
    let services = &doc["services"];
    for s in ["postgres", "upstreams", "fleet-config", "migrate"] {
        assert!(!services[s].is_badvalue(), "service {s} missing");
    }
    let url = doc["x-store-url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("postgres://"), "{url}");
    let mut host_ports = Vec::new();
    for p in ["proxy-1", "proxy-2", "proxy-3"] {
        let cmd = strs(&services[p]["command"]);
        assert_eq!(cmd[0], "serve", "{p}");
        let db = cmd.iter().position(|a| a == "--db").expect("--db");
        assert_eq!(cmd[db + 1], url, "{p} writes to the fleet's database");
        assert_eq!(
            services[p]["image"].as_str(),
            services["upstreams"]["image"].as_str()
        );
        host_ports.extend(strs(&services[p]["ports"]));
    }
    let mut unique = host_ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), host_ports.len(), "{host_ports:?}");

    // The config step, run as compose runs it (its volume a temp dir): `check` accepts the
    // config, which points at the upstreams service.
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().display().to_string();
    let args: Vec<String> = strs(&services["fleet-config"]["command"])
        .into_iter()
        .map(|a| a.replace("/fleet", &fleet))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = shadowdiff(&args, dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    let config = dir.path().join("demo/shadowdiff.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("http://upstreams:9001"), "{text}");
    let serve = strs(&services["proxy-1"]["command"]);
    assert_eq!(serve[2], "/fleet/demo/shadowdiff.toml");
    let (code, out) = shadowdiff(
        &["check", "--config", &config.display().to_string()],
        dir.path(),
        &[],
    );
    assert_eq!(code, 0, "{out}");

    // The upstreams' command and the migrate step's parse (`--help` stops after parsing all).
    for s in ["upstreams", "migrate"] {
        let mut args = strs(&services[s]["command"]);
        args.push("--help".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = shadowdiff(&args, dir.path(), &[]);
        assert_eq!(code, 0, "{s}: {out}");
    }
}

#[test]
fn the_kubernetes_manifests_hold_together() {
    let k8s = deploy().join("k8s");
    let kustomization = &load(&k8s.join("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for r in strs(&kustomization["resources"]) {
        docs.extend(load(&k8s.join(&r)));
    }
    let secret = &load(&k8s.join("secret.example.yaml"))[0];
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let deployment = kind("Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(3));
    let labels = &spec["template"]["metadata"]["labels"];
    let selects = |selector: &Yaml| {
        selector["matchLabels"]
            .as_hash()
            .unwrap()
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap()] == *v)
    };
    assert!(selects(&spec["selector"]));
    let pdb = kind("PodDisruptionBudget");
    assert!(
        selects(&pdb["spec"]["selector"]),
        "the budget covers the pods"
    );
    assert!(
        !pdb["spec"]["maxUnavailable"].is_badvalue() || !pdb["spec"]["minAvailable"].is_badvalue()
    );
    let service = kind("Service");
    assert!(
        service["spec"]["selector"]
            .as_hash()
            .unwrap()
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap()] == *v),
        "the service selects the pods"
    );

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let ports: Vec<(String, i64)> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let port_of = |name: &str| ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe}");
    }
    let secret_name = container["envFrom"][0]["secretRef"]["name"].as_str();
    assert_eq!(secret_name, secret["metadata"]["name"].as_str());

    // The ConfigMap's config: accepted by `check` with the Secret's variables set, listening
    // where the container's ports say, draining within the grace period.
    let config_map = kind("ConfigMap");
    let toml = config_map["data"]["shadowdiff.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shadowdiff.toml"), toml).unwrap();
    let env: Vec<(&str, &str)> = secret["stringData"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    let (code, out) = shadowdiff(&["check", "--config", "shadowdiff.toml"], dir.path(), &env);
    assert_eq!(code, 0, "{out}");
    let config: toml_table::Table = toml_table::parse(toml);
    assert_eq!(
        config
            .get("proxy.listen")
            .and_then(|l| l.rsplit(':').next().map(str::to_owned)),
        port_of("proxy").map(|p| p.to_string())
    );
    assert_eq!(
        config
            .get("admin.listen")
            .and_then(|l| l.rsplit(':').next().map(str::to_owned)),
        port_of("admin").map(|p| p.to_string())
    );
    // Scraped by annotation (no token can be given that way): /metrics must be open (old:
    // the default metrics_token answered Prometheus 401).
    let annotations = &spec["template"]["metadata"]["annotations"];
    if annotations["prometheus.io/scrape"].as_str() == Some("true") {
        assert_eq!(
            config.get("admin.metrics_token").as_deref(),
            Some("false"),
            "scraped by annotation, but /metrics needs the token"
        );
        assert_eq!(
            annotations["prometheus.io/port"]
                .as_str()
                .map(str::to_owned),
            port_of("admin").map(|p| p.to_string())
        );
    }
    let drain: u64 = config
        .get("proxy.drain_timeout")
        .and_then(|d| d.trim_end_matches('s').parse().ok())
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(
        grace > drain,
        "grace {grace}s must exceed the drain {drain}s"
    );
    // Where kubectl is installed, kustomize renders the whole set into the namespace.
    if let Ok(out) = Command::new("kubectl")
        .args(["kustomize", k8s.to_str().unwrap()])
        .output()
    {
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(rendered.contains("kind: CronJob") && rendered.contains("namespace: shadowdiff"));
    }
    // The nightly report as a CronJob: the Deployment's image, config, Secret and CA mounts, and
    // a command this binary takes with that config.
    let cron = kind("CronJob");
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let reporter = &job["containers"][0];
    assert_eq!(reporter["image"], container["image"]);
    assert_eq!(reporter["envFrom"], container["envFrom"]);
    let mounts = |c: &Yaml| -> Vec<String> {
        c["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect()
    };
    for m in ["/etc/shadowdiff", "/etc/shadowdiff-pg-ca"] {
        assert!(mounts(reporter).contains(&m.to_owned()), "{m}");
    }
    let args = strs(&reporter["args"]);
    assert_eq!(args[0], "report");
    let local: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("/etc/shadowdiff/shadowdiff.toml", "shadowdiff.toml")
                .replace("/reports/", "")
        })
        .collect();
    let mut help: Vec<&str> = local.iter().map(String::as_str).collect();
    help.push("--help");
    let (code, out) = shadowdiff(&help, dir.path(), &env);
    assert_eq!(code, 0, "{args:?}: {out}");
    let mounted: Vec<String> = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .collect();
    let ca = config.get("store.ca_file").unwrap();
    assert!(
        mounted.iter().any(|m| ca.starts_with(m.as_str())),
        "{ca} is not under a mount: {mounted:?}"
    );
    assert!(
        strs(&container["args"]).contains(&"/etc/shadowdiff/shadowdiff.toml".to_owned())
            && mounted.contains(&"/etc/shadowdiff".to_owned())
    );
}

#[test]
fn the_image_recipe_builds_in_stages_and_runs_unprivileged() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    // The builder's Rust is at least the crate's rust-version.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let builder = froms[0].split_whitespace().nth(1).unwrap();
    let version = builder
        .strip_prefix("rust:")
        .and_then(|v| v.split('-').next())
        .unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(parse(version) >= parse(msrv), "{version} < {msrv}");
    // And the crate's rust-version is at least what every package the lockfile builds here
    // needs (old: 1.85 while rusqlite 0.43 needs 1.89 and sfv 0.16 needs 1.95: the image did
    // not build).
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built: std::collections::BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let (needs, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| built.contains(id)))
        .filter_map(|p| Some((parse(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .unwrap();
    assert!(
        parse(msrv) >= needs,
        "rust-version {msrv} is older than {by} needs ({needs:?})"
    );
    // A HEALTHCHECK with a command of this binary, at the admin port the image exposes.
    let health = text
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|h| h.split("CMD").nth(1))
        .and_then(|c| c.lines().next())
        .expect("a HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(health.trim()).unwrap();
    assert_eq!(
        argv[..2],
        ["/usr/local/bin/shadowdiff", "probe"],
        "{argv:?}"
    );
    assert!(
        argv[2].ends_with(":9090/healthz") && text.contains("EXPOSE 8080 9090"),
        "{argv:?}"
    );
    let (code, out) = shadowdiff(
        &["probe", "--help"],
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // The last stage's user is not root.
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let user = lines[last_from..]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "{user}");
    // Every file the build copies exists.
    for l in &lines[..last_from] {
        if let Some(rest) = l.strip_prefix("COPY ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(),
                    "COPY {src}: not in the repository"
                );
            }
        }
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ENTRYPOINT") && l.contains("/usr/local/bin/shadowdiff")));
}

/// The few keys the manifests test reads from the ConfigMap's TOML (dotted `table.key`).
mod toml_table {
    pub struct Table(toml::Table);

    pub fn parse(text: &str) -> Table {
        Table(text.parse().unwrap())
    }

    impl Table {
        pub fn get(&self, dotted: &str) -> Option<String> {
            let (t, k) = dotted.split_once('.')?;
            let v = self.0.get(t)?.get(k)?;
            v.as_str()
                .map(str::to_owned)
                .or_else(|| Some(v.to_string()))
        }
    }
}

/// A running `serve` on loopback (defaults, both vendors unreachable) and its `/metrics` text.
fn exported_metrics() -> String {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args([
            "serve",
            "--legacy",
            "http://127.0.0.1:9",
            "--candidate",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&db)
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let admin = lines
        .by_ref()
        .take(200)
        .map_while(Result::ok)
        .find_map(|l| l.split("admin on http://").nth(1).map(str::to_owned))
        .expect("serve printed its admin address");
    let mut s = std::net::TcpStream::connect(admin.trim()).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        admin.trim()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    text
}

/// PromQL selectors of an expression: (metric, label names) for every `shadowdiff_*` or
/// `process_*` name, with the labels of its `{...}` matcher if it has one.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        if ident(b[i]) && (i == 0 || !ident(b[i - 1]) && b[i - 1] != b'$') {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("shadowdiff_") || name.starts_with("process_") {
                let mut labels = Vec::new();
                if b.get(i) == Some(&b'{') {
                    let end = expr[i..].find('}').map_or(b.len(), |e| i + e);
                    for m in expr[i + 1..end].split(',') {
                        let l: String = m
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !l.is_empty() {
                            labels.push(l);
                        }
                    }
                }
                out.push((name.to_owned(), labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => json_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_and_alert_rules_query_only_exported_metrics() {
    let text = exported_metrics();
    // Each exported series: name → label names.
    let mut exported: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap_or(line.len()));
        let labels = exported.entry(name.to_owned()).or_default();
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split('}').next()) {
            for pair in inner.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.to_owned());
                }
            }
        }
    }
    assert!(exported.contains_key("shadowdiff_requests_total"), "{text}");

    let mut exprs = Vec::new();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/shadowdiff.json")).unwrap(),
    )
    .unwrap();
    json_exprs(&dash, &mut exprs);
    let dash_count = exprs.len();
    let rules = &load(&deploy().join("prometheus/shadowdiff-alerts.yml"))[0];
    let mut alerts = Vec::new();
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            alerts.push(rule["alert"].as_str().unwrap().to_owned());
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(dash_count >= 10, "{dash_count} dashboard queries");
    for needed in [
        "ShadowdiffParityDrop",
        "ShadowdiffCandidateErrorRate",
        "ShadowdiffStoreDrops",
        "ShadowdiffAccountsNeedReauth",
    ] {
        assert!(
            alerts.iter().any(|a| a == needed),
            "{needed} missing: {alerts:?}"
        );
    }
    for e in &exprs {
        let sel = selectors(e);
        assert!(!sel.is_empty(), "a query without a shadowdiff metric: {e}");
        for (name, labels) in sel {
            let have = exported
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not exported (query: {e})"));
            for l in labels {
                assert!(have.contains(&l), "{name} has no label {l} (query: {e})");
            }
        }
    }
}

#[test]
fn the_serve_unit_is_hardened_and_runs_commands_this_binary_takes() {
    let path = deploy().join("shadowdiff.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let value = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "shadowdiff"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(key), vec![want.to_owned()], "{key}");
    }
    // The commands parse with this binary: `check` of a config whose store is in the state
    // directory (here a temp dir standing for it).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("shadowdiff.toml");
    std::fs::write(
        &cfg,
        format!(
            "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"http://127.0.0.1:9\"\n[store]\npath = \"{}/shadowdiff.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for exec in value("ExecStartPre").iter().chain(&value("ExecStart")) {
        let args: Vec<String> = exec
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("/etc/shadowdiff/shadowdiff.toml", cfg.to_str().unwrap()))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args.contains(&"serve") {
            // `serve --help` parses the same flags without starting.
            let mut help = args.clone();
            help.push("--help");
            let (code, out) = shadowdiff(&help, dir.path(), &[]);
            assert_eq!(code, 0, "{exec}: {out}");
        } else {
            let (code, out) = shadowdiff(&args, dir.path(), &[]);
            assert_eq!(code, 0, "{exec}: {out}");
        }
    }
    // Where systemd's own checker exists, the unit passes it (with this build as the binary).
    if let Ok(v) = Command::new("systemd-analyze").arg("--version").output() {
        if v.status.success() {
            let unit = dir.path().join("shadowdiff.service");
            let local = text
                .replace(
                    "/usr/local/bin/shadowdiff",
                    env!("CARGO_BIN_EXE_shadowdiff"),
                )
                .lines()
                .filter(|l| !l.starts_with("Documentation="))
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&unit, local).unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&unit)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.trim().is_empty(),
                "systemd-analyze verify: {err}"
            );
        }
    }
}

/// The nightly report's unit runs as the serve unit's user, in its state directory, with its
/// config: its command, run as written (a temp dir standing for the state directory, a config
/// whose candidate URL comes from a variable the report job does not have), writes both reports.
/// Old unit: no `--config`, another working directory ("no store at shadowdiff.db").
#[test]
fn the_report_unit_reads_the_serve_units_store_with_its_config() {
    let unit = |name: &str| std::fs::read_to_string(deploy().join(name)).unwrap();
    let value = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    let (serve, report) = (
        unit("shadowdiff.service"),
        unit("shadowdiff-report.service"),
    );
    for key in [
        "User",
        "DynamicUser",
        "StateDirectory",
        "WorkingDirectory",
        "EnvironmentFile",
    ] {
        assert_eq!(value(&report, key), value(&serve, key), "{key}");
        assert!(!value(&serve, key).is_empty(), "{key}");
    }
    let exec = value(&report, "ExecStart").pop().unwrap();
    assert!(
        exec.contains("--config /etc/shadowdiff/shadowdiff.toml"),
        "{exec}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("shadowdiff.toml");
    std::fs::write(
        &cfg,
        format!(
            "[legacy]\nbase_url = \"http://127.0.0.1:9\"\n[candidate]\nbase_url = \"${{SHADOWDIFF_TEST_UNSET_URL}}\"\nheaders = {{ authorization = \"Bearer ${{SHADOWDIFF_TEST_UNSET_KEY}}\" }}\n[store]\npath = \"{}/shadowdiff.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // The store the serve unit would have made.
    let (code, out) = shadowdiff(
        &[
            "migrate",
            "--db",
            dir.path().join("shadowdiff.db").to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let script = exec
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{exec}"))
        .replace("%%", "%")
        .replace(
            "/usr/local/bin/shadowdiff",
            env!("CARGO_BIN_EXE_shadowdiff"),
        )
        .replace("/etc/shadowdiff/shadowdiff.toml", cfg.to_str().unwrap());
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env_remove("SHADOWDIFF_TEST_UNSET_URL")
        .env_remove("SHADOWDIFF_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Vec<String> = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written.iter().all(|f| f.starts_with("parity-")));
}
