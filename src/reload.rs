//! Reloading the configuration into a running server (SIGHUP, `POST /api/reload`): load →
//! refuse changes to settings only read at start-up → swap.

use std::sync::Arc;

use crate::config::{Config, ConfigError, Overrides};
use crate::shadow::Shadow;

/// Why a reload changed nothing (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("running on built-in defaults: there is no config file to reload")]
    NoConfigFile,
    #[error("reload task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{} changed; these take effect on restart only (nothing was reloaded)", .0.join(", "))]
    StartupOnly(Vec<&'static str>),
}

/// Reloads the config file (with its accounts and mappings) into the running server: on
/// SIGHUP and `POST /api/reload`. A config that fails validation, or that changes a setting
/// only read at start-up, is refused and the running one stays.
pub struct Reloader {
    shadow: Arc<Shadow>,
    overrides: Overrides,
    /// A reload that changes `[rollout] phase` puts that phase in force through it.
    rollout: Option<crate::rollout_control::Controller>,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        shadow: Arc<Shadow>,
        overrides: Overrides,
        rollout: Option<crate::rollout_control::Controller>,
    ) -> Self {
        Self {
            shadow,
            overrides,
            rollout,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads; `Ok` says what is now running, `Err` why nothing changed.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let running = self.shadow.config();
        let Some(path) = running.source.clone() else {
            return Err(ReloadError::NoConfigFile);
        };
        let ov = self.overrides.clone();
        // Loading compiles every mapping: off the async runtime.
        let loaded = tokio::task::spawn_blocking(move || {
            let mut cfg = Config::load(&path)?;
            cfg.apply(&ov)?;
            Ok::<_, ConfigError>(cfg)
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
        let changed = startup_only_changes(&running, &loaded);
        if !changed.is_empty() {
            return Err(ReloadError::StartupOnly(changed));
        }
        crate::telemetry::register_routes(loaded.routes.iter().map(|r| r.name.as_str()));
        crate::telemetry::register_phases(loaded.rollout.phases.keys().map(String::as_str));
        let summary = describe(&loaded);
        let new_phase =
            (loaded.rollout.phase != running.rollout.phase).then(|| loaded.rollout.phase.clone());
        self.shadow.set_config(Arc::new(loaded));
        tracing::info!(%summary, "config reloaded");
        // A changed `[rollout] phase` is a change of phase like any other: in force and
        // recorded (the store's phase otherwise stays, whatever the file says).
        if let (Some(to), Some(c)) = (new_phase, &self.rollout) {
            let change = crate::rollout::Change {
                to,
                actor: "reload".into(),
                reason: Some("[rollout] phase changed in the config file".into()),
                evidence: None,
            };
            if let Err(e) = c.set(change).await {
                tracing::error!(error = %e, "reload: the new rollout phase was not put in force");
            }
        } else {
            let cfg = self.shadow.config();
            self.shadow
                .rollout
                .publish(&cfg.rollout, None, cfg.accounts.as_ref());
        }
        Ok(summary)
    }
}

/// What a reload put in place: routes and their mapping versions.
fn describe(cfg: &Config) -> String {
    let routes: Vec<String> = cfg
        .routes
        .iter()
        .map(|r| match &r.mappings.candidate {
            Some(c) => format!("{} (mapping {})", r.name, c.version),
            None => r.name.clone(),
        })
        .collect();
    format!("{} routes: {}", cfg.routes.len(), routes.join(", "))
}

/// Settings read once at start-up that differ between two configs.
fn startup_only_changes(a: &Config, b: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            out.push(name);
        }
    };
    check("[proxy] listen", a.proxy.listen == b.proxy.listen);
    // The writer counts health and queues events with these; the deliverer sends to these.
    check(
        "[[webhooks]] and [accounts] reauth_after",
        a.reauth_after == b.reauth_after
            && a.webhooks.len() == b.webhooks.len()
            && a.webhooks.iter().zip(&b.webhooks).all(|(x, y)| {
                x.name == y.name
                    && x.url == y.url
                    && x.events == y.events
                    && x.secret == y.secret
                    && x.max_attempts == y.max_attempts
                    && x.retry_base == y.retry_base
                    && x.timeout == y.timeout
            }),
    );
    check(
        "[proxy] drain_timeout",
        a.proxy.drain_timeout == b.proxy.drain_timeout,
    );
    check(
        "[admin]",
        a.admin.listen == b.admin.listen
            && a.admin.token == b.admin.token
            && a.admin.hosts == b.admin.hosts
            && a.admin.tls == b.admin.tls,
    );
    check(
        "[proxy] tls_cert and tls_key (the files themselves are read again on every SIGHUP)",
        a.proxy.tls == b.proxy.tls,
    );
    check(
        "[legacy]",
        a.legacy.base_url == b.legacy.base_url
            && a.legacy.ca_file == b.legacy.ca_file
            && a.legacy.timeout == b.legacy.timeout,
    );
    check(
        "[candidate] base_url/ca_file",
        a.candidate.base_url == b.candidate.base_url && a.candidate.ca_file == b.candidate.ca_file,
    );
    check(
        "[store] path/url/ca_file/migrate/queue/retention/max_value_len/examples_per_field",
        a.store.path == b.store.path
            && a.store.url == b.store.url
            && a.store.ca_file == b.store.ca_file
            && a.store.migrate == b.store.migrate
            && a.store.queue == b.store.queue
            && a.store.retention == b.store.retention
            && a.store.max_value_len == b.store.max_value_len
            && a.store.examples_per_field == b.store.examples_per_field,
    );
    check(
        "[shadow] threads/priority/max_in_flight/max_rps/max_body",
        a.shadow.threads == b.shadow.threads
            && a.shadow.priority == b.shadow.priority
            && a.shadow.max_in_flight == b.shadow.max_in_flight
            && a.shadow.max_rps == b.shadow.max_rps
            && a.shadow.max_body == b.shadow.max_body,
    );
    check(
        "[mappings] workers",
        a.mappings.workers == b.mappings.workers,
    );
    check(
        "[rollout] max_in_flight",
        a.rollout.max_in_flight == b.rollout.max_in_flight,
    );
    out
}

/// Installs the SIGHUP handler now (from then on a SIGHUP no longer ends the process); `None`
/// when the runtime cannot register it.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// Reloads the config on every SIGHUP that `hup` receives.
pub async fn on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    reloader: Arc<Reloader>,
    certs: Vec<Arc<crate::tls::Certs>>,
) {
    let Some(mut hup) = hup else {
        return;
    };
    while hup.recv().await.is_some() {
        // The listeners' certificates first: a renewal must not wait on a config that fails.
        for c in &certs {
            match c.reload() {
                Ok(()) => tracing::info!("TLS certificate and key read again"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed: the previous pair stays in use");
                }
            }
        }
        if let Err(e) = reloader.reload().await {
            tracing::error!(error = %e, "reload refused: the running config stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_and_the_reauth_count_are_start_up_settings() {
        let hook = |url: &str| {
            format!(
                "[[webhooks]]\nname = \"ops\"\nurl = \"{url}\"\nevents = [\"gate.failed\"]\nsecret = \"0123456789abcdef\"\n"
            )
        };
        let a = Config::parse(&hook("http://127.0.0.1:1/a"), None).unwrap();
        let b = Config::parse(&hook("http://127.0.0.1:1/b"), None).unwrap();
        assert!(startup_only_changes(&a, &a).is_empty());
        assert_eq!(
            startup_only_changes(&a, &b),
            ["[[webhooks]] and [accounts] reauth_after"]
        );
        // A secret too short is refused, naming the endpoint and the key.
        let e = Config::parse(
            "[[webhooks]]\nname = \"ops\"\nurl = \"http://x\"\nevents = [\"gate.failed\"]\nsecret = \"short\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[[webhooks]] ops: secret"), "{e}");
    }
}
