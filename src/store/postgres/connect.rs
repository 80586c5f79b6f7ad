//! Connecting to PostgreSQL the way libpq users expect: the URL first; the standard `PG*`
//! environment variables and the password file (`PGPASSFILE`, `~/.pgpass`) for what the URL
//! leaves out; TLS chosen by `sslmode` (libpq's six modes), with rustls.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `allow`, `prefer` (default) | when the server offers it | against the CA file when one is given, else not |
//! | `require` | yes | against the CA file when one is given, else not |
//! | `verify-ca` | yes | chain against the CA file (required); name not checked |
//! | `verify-full` | yes | chain against the CA file (or the public web roots) and the host name |
//!
//! The CA file is, in this order: the URL's `sslrootcert`, `[store] ca_file`, `PGSSLROOTCERT`.
//! Unlike upstreams' `ca_file` (added to the public roots), it is the only trust anchor: with
//! `verify-ca`, which skips the host name, public roots would accept any publicly signed
//! certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::store::location::PgUrl;
use crate::store::StoreError;

/// Seconds a connection attempt may take when neither the URL nor `PGCONNECT_TIMEOUT` says: a
/// server that black-holes packets must not hold the writer for the kernel's minutes.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects (the URL's password never appears in an error).
pub(super) fn connect(url: &PgUrl) -> Result<Client, StoreError> {
    let spec = Spec::resolve(url, &|name| std::env::var(name).ok()).map_err(|message| {
        StoreError::PostgresSetup {
            url: url.to_string(),
            message,
        }
    })?;
    let connected = match spec.tls {
        None => spec.config.connect(NoTls),
        Some(tls) => spec
            .config
            .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
    };
    connected.map_err(|error| StoreError::postgres(url.to_string(), error))
}

/// Whether an error says the database could not be reached, for now: no connection (refused,
/// timed out, name not resolved, lost), or the server's own "not now" (SQLSTATE class 08
/// connection exception, 53 insufficient resources such as too many connections, 57P01-57P03
/// shutting down or starting up). A refused login, a TLS failure or a failed statement is not.
pub(crate) fn unreachable(error: &postgres::Error) -> bool {
    if let Some(code) = error.code() {
        let code = code.code();
        return code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    }
    if error.is_closed() {
        return true;
    }
    // TLS failures come as an I/O error wrapping rustls' own.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return false;
        }
        cause = e.source();
    }
    true
}

/// What to connect to and how.
struct Spec {
    config: Config,
    /// `None`: plain TCP (`sslmode=disable`).
    tls: Option<rustls::ClientConfig>,
}

impl Spec {
    /// Resolves the URL with `env` (the process environment, or a test's) for what it lacks.
    fn resolve(url: &PgUrl, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        // The scheme in the case the client library reads (`POSTGRES://` is the same URL).
        let secret = url.secret();
        let (scheme, after) = secret.split_once("://").unwrap_or((secret, ""));
        let lowered = format!("{}://{after}", scheme.to_ascii_lowercase());
        let (mut rest, sslmode, rootcert) = split_ssl_params(&lowered)?;
        // The client's parser gives a host without a port 5432: PGPORT goes in first.
        if let Some(p) = var("PGPORT") {
            if p.parse::<u16>().is_err() {
                return Err(format!("PGPORT: {p:?} is not a port number"));
            }
            rest = with_default_port(&rest, &p);
        }
        let mut config: Config = rest
            .parse()
            .map_err(|e| format!("invalid URL: {}", crate::upstream::error_chain(&e)))?;
        if config.get_hosts().is_empty() {
            match var("PGHOST") {
                Some(h) if h.starts_with('/') => config.host_path(h),
                Some(h) => config.host(&h),
                None => config.host("localhost"),
            };
        }
        if config.get_ports().is_empty() {
            if let Some(p) = var("PGPORT").and_then(|p| p.parse().ok()) {
                config.port(p);
            }
        }
        if config.get_user().is_none() {
            match var("PGUSER")
                .or_else(|| var("USER"))
                .or_else(|| var("LOGNAME"))
            {
                Some(u) => config.user(&u),
                None => return Err("no user: give one in the URL or in PGUSER".into()),
            };
        }
        if config.get_dbname().is_none() {
            if let Some(d) = var("PGDATABASE") {
                config.dbname(&d);
            }
        }
        if config.get_application_name().is_none() {
            config.application_name(&var("PGAPPNAME").unwrap_or_else(|| "shadowdiff".into()));
        }
        if config.get_connect_timeout().is_none() {
            let timeout = match var("PGCONNECT_TIMEOUT") {
                Some(s) => s
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        format!("PGCONNECT_TIMEOUT: {s:?} is not a positive number of seconds")
                    })?,
                None => DEFAULT_CONNECT_TIMEOUT,
            };
            config.connect_timeout(timeout);
        }
        if config.get_password().is_none() {
            let password = var("PGPASSWORD").or_else(|| {
                let file = var("PGPASSFILE")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
                password_from_file(&file, &config)
            });
            if let Some(p) = password {
                config.password(p);
            }
        }
        let sslmode = sslmode
            .or_else(|| var("PGSSLMODE"))
            .unwrap_or_else(|| "prefer".into());
        let rootcert = rootcert
            .map(PathBuf::from)
            .or_else(|| url.ca_file().map(Path::to_path_buf))
            .or_else(|| var("PGSSLROOTCERT").map(PathBuf::from));
        let tls = tls_for(&sslmode, rootcert.as_deref(), &mut config)?;
        Ok(Self { config, tls })
    }
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (the client library knows only
/// three modes and no CA file): the URL left, and their values, percent-decoded.
fn split_ssl_params(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| format!("{key}: not UTF-8 once percent-decoded"))
        };
        match key {
            "sslmode" => mode = Some(decoded()?),
            "sslrootcert" => root = Some(decoded()?),
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

/// The URL with `port` after each of its hosts when none of them has one (a URL without a
/// host is left alone: the port is set apart).
fn with_default_port(url: &str, port: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let has_port = |h: &str| match h.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => h.contains(':'),
    };
    if hosts.is_empty() || hosts.split(',').any(has_port) {
        return url.to_owned();
    }
    let hosts: Vec<String> = hosts.split(',').map(|h| format!("{h}:{port}")).collect();
    format!("{scheme}://{userinfo}{}{tail}", hosts.join(","))
}

/// Sets the client's TLS mode for `sslmode` and builds the rustls configuration (`None`: no TLS).
fn tls_for(
    sslmode: &str,
    rootcert: Option<&Path>,
    config: &mut Config,
) -> Result<Option<rustls::ClientConfig>, String> {
    let check = match sslmode {
        "disable" => {
            config.ssl_mode(SslMode::Disable);
            return Ok(None);
        }
        "allow" | "prefer" => {
            config.ssl_mode(SslMode::Prefer);
            Check::ChainIfGiven
        }
        "require" => {
            config.ssl_mode(SslMode::Require);
            Check::ChainIfGiven
        }
        "verify-ca" => {
            config.ssl_mode(SslMode::Require);
            Check::Chain
        }
        "verify-full" => {
            config.ssl_mode(SslMode::Require);
            Check::Full
        }
        other => {
            return Err(format!(
                "sslmode: {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match rootcert {
        Some(path) => Some(Arc::new(load_roots(path)?)),
        None if check == Check::Chain => {
            return Err(
                "sslmode=verify-ca needs a CA file: sslrootcert in the URL, [store] ca_file \
                 or PGSSLROOTCERT"
                    .into(),
            )
        }
        None if check == Check::Full => Some(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })),
        None => None,
    };
    let chain = match roots {
        None => None,
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?,
        ),
    };
    let verifier = Arc::new(CertCheck {
        chain,
        names: check == Check::Full,
        provider: provider.clone(),
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(tls))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The chain against the CA file when one is given; nothing otherwise (libpq's `require`).
    ChainIfGiven,
    /// The chain, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let err = |m: String| format!("CA file {}: {m}", path.display());
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(roots)
}

/// What is checked of the server's certificate. Without a `chain` (libpq's `require` without a
/// CA file) nothing is: the connection is encrypted and the handshake's signatures checked, but
/// the certificate is not (README says so). With one, the chain must lead to it; the name in the
/// certificate is checked only when `names` is set (`verify-full`; webpki checks the chain before
/// the name, so a name error means the chain was good).
#[derive(Debug)]
struct CertCheck {
    chain: Option<Arc<WebPkiServerVerifier>>,
    names: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The password for this connection from a libpq password file (`host:port:database:user:
/// password` lines, `*` matching anything, `\:` and `\\` escaped). As libpq, a file that others
/// can read is ignored (with a warning), and the first matching line wins.
fn password_from_file(path: &Path, config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file ignored: it is readable by group or others (chmod 0600 it)"
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    pgpass_lookup(&text, [&host, &port, db, user])
}

/// The first line of a password file whose four fields match `wanted` (host, port, database,
/// user); its fifth field, unescaped.
fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = pgpass_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            // The password is the rest of the line: a fifth `:` unescaped stays in it.
            matches.then(|| fields[4..].join(":"))
        })
}

/// Splits a password file line at unescaped `:`, unescaping `\:` and `\\`.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

impl StoreError {
    /// A PostgreSQL error of the store at `url` (shown with its password masked).
    // By value: it is what `map_err` hands over.
    #[allow(clippy::needless_pass_by_value)]
    pub(super) fn postgres(url: impl std::fmt::Display, error: postgres::Error) -> Self {
        Self::Engine {
            store: url.to_string(),
            message: crate::upstream::error_chain(&error),
            unreachable: unreachable(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;
    use std::collections::HashMap;

    fn url(s: &str) -> PgUrl {
        match Location::parse(s) {
            Location::Postgres(u) => u,
            Location::Sqlite(_) => panic!("not a URL: {s}"),
        }
    }

    fn resolve(u: &str, env: &[(&str, &str)]) -> Result<Spec, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Spec::resolve(&url(u), &|k| env.get(k).cloned())
    }

    #[test]
    fn the_scheme_is_read_in_any_case() {
        let s = resolve("POSTGRES://app@db.example:6543/shadow", &[]).unwrap();
        assert_eq!(s.config.get_dbname(), Some("shadow"));
        assert_eq!(s.config.get_user(), Some("app"));
    }

    #[test]
    fn the_url_wins_and_the_environment_fills_what_it_leaves_out() {
        let s = resolve(
            "postgres://app@db.example:6543/shadow?application_name=x",
            &[
                ("PGHOST", "other"),
                ("PGPORT", "1"),
                ("PGUSER", "someone"),
                ("PGDATABASE", "elsewhere"),
                ("PGPASSWORD", "from-env"),
            ],
        )
        .unwrap();
        let c = &s.config;
        assert_eq!(
            c.get_hosts(),
            &[postgres::config::Host::Tcp("db.example".into())]
        );
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_dbname(), Some("shadow"));
        assert_eq!(c.get_password(), Some(&b"from-env"[..]));
        assert_eq!(c.get_application_name(), Some("x"));
        assert_eq!(c.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        // prefer by default: TLS offered, falls back to plain.
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        assert!(s.tls.is_some());

        let s = resolve(
            "postgres://",
            &[
                ("PGHOST", "pg.internal"),
                ("PGPORT", "5433"),
                ("PGUSER", "svc"),
                ("PGDATABASE", "fleet"),
                ("PGSSLMODE", "disable"),
                ("PGCONNECT_TIMEOUT", "3"),
                ("PGAPPNAME", "sd-1"),
            ],
        )
        .unwrap();
        let c = &s.config;
        assert_eq!(
            c.get_hosts(),
            &[postgres::config::Host::Tcp("pg.internal".into())]
        );
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(
            (c.get_user(), c.get_dbname(), c.get_application_name()),
            (Some("svc"), Some("fleet"), Some("sd-1"))
        );
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert!(s.tls.is_none());
        assert!(c.get_password().is_none());
    }

    #[test]
    fn bad_settings_are_named_and_never_show_the_password() {
        for (u, env, says) in [
            ("postgres://u:pw@h/d?sslmode=maybe", vec![], "sslmode"),
            (
                "postgres://u:pw@h/d?sslmode=verify-ca",
                vec![],
                "needs a CA file",
            ),
            ("postgres://u:pw@h/d", vec![("PGPORT", "http")], "PGPORT"),
            (
                "postgres://u:pw@h/d",
                vec![("PGCONNECT_TIMEOUT", "-1")],
                "PGCONNECT_TIMEOUT",
            ),
            (
                "postgres://u:pw@h/d?sslrootcert=/nonexistent/ca.pem",
                vec![],
                "/nonexistent/ca.pem",
            ),
            ("postgres://u:pw@h/d?nonsense=1", vec![], "invalid URL"),
            ("postgres://h/d", vec![], "no user"),
        ] {
            let e = resolve(u, &env)
                .err()
                .unwrap_or_else(|| panic!("{u} accepted"));
            assert!(e.contains(says), "{u}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn pgport_applies_to_hosts_given_without_a_port() {
        for (url, want) in [
            ("postgres://u@h/d", "postgres://u@h:7/d"),
            ("postgres://u:p@h1,h2?x=1", "postgres://u:p@h1:7,h2:7?x=1"),
            ("postgres://u@h:5/d", "postgres://u@h:5/d"),
            ("postgres://u@[::1]/d", "postgres://u@[::1]:7/d"),
            ("postgres://u@[::1]:5/d", "postgres://u@[::1]:5/d"),
            ("postgres:///d", "postgres:///d"),
        ] {
            assert_eq!(with_default_port(url, "7"), want, "{url}");
        }
        let s = resolve("postgres://u@h/d", &[("PGPORT", "6000")]).unwrap();
        assert_eq!(s.config.get_ports(), &[6000]);
        let s = resolve("postgres://u@h:5433/d", &[("PGPORT", "6000")]).unwrap();
        assert_eq!(s.config.get_ports(), &[5433]);
    }

    #[test]
    fn ssl_params_are_taken_out_and_decoded() {
        let (rest, mode, root) = split_ssl_params(
            "postgres://u@h/d?sslmode=verify-full&connect_timeout=2&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/d?connect_timeout=2");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(
            split_ssl_params("postgres://u@h/d?sslmode=disable").unwrap(),
            (
                "postgres://u@h/d".to_owned(),
                Some("disable".to_owned()),
                None
            )
        );
    }

    #[test]
    fn password_file_lines_match_by_field_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:*:app:nope\n\
                    db.example:5432:shadow:app:first\n\
                    *:*:*:app:fallback\n\
                    h\\:x:*:*:u\\\\:p\\:w:tail\n";
        let get = |h, p, d, u| pgpass_lookup(text, [h, p, d, u]);
        assert_eq!(
            get("db.example", "5432", "shadow", "app").as_deref(),
            Some("first")
        );
        assert_eq!(
            get("db.example", "5433", "shadow", "app").as_deref(),
            Some("fallback")
        );
        assert_eq!(get("h:x", "1", "d", "u\\").as_deref(), Some("p:w:tail"));
        assert_eq!(get("db.example", "5432", "shadow", "bob"), None);
    }

    #[test]
    fn a_password_file_readable_by_others_is_ignored() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        let config: Config = "postgres://app@h/d".parse().unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(password_from_file(&file, &config), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            password_from_file(&file, &config).as_deref(),
            Some("secret")
        );
    }

    proptest::proptest! {
        /// Any text, as a password file or as a URL: an answer or an error, never a panic, and
        /// the password of the URL never in the error.
        #[test]
        fn hostile_input_never_panics(text in "\\PC*", tail in "\\PC*") {
            let _ = pgpass_lookup(&text, ["h", "5432", "d", "u"]);
            let _ = pgpass_fields(&text);
            let _ = with_default_port(&text, "1");
            let u = format!("postgres://u:SECRETPW@h/d?{tail}");
            if let Err(e) = resolve(&u, &[]) {
                proptest::prop_assert!(!e.contains("SECRETPW"), "{}", e);
            }
        }
    }
}
