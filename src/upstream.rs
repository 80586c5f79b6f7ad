//! The pooled HTTP client used for both vendors: HTTP/1.1 and HTTP/2 (by ALPN) over rustls with
//! webpki roots plus an optional extra CA file, or plain HTTP/1.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The client type for a request body `B`.
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds a client; `ca_file` (PEM) adds trusted roots to webpki's.
pub fn client<B>(ca_file: Option<&Path>) -> Result<HttpClient<B>, ClientError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let err = |message: String| ClientError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| err(e.to_string()))?;
            roots.add(cert).map_err(|e| err(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(err("no PEM certificate found".into()));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(https))
}

/// Joins an upstream base URL (with its path prefix) and a request's path and query.
pub fn join(base: &Uri, path_and_query: &str) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let pq = if path_and_query.starts_with('/') {
        format!("{prefix}{path_and_query}")
    } else {
        format!("{prefix}/{path_and_query}")
    };
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority().map_or("", |a| a.as_str()))
        .path_and_query(pq)
        .build()
}

/// The one way a request to an upstream is built: `base`'s path prefix joined with the
/// caller's path and query, `Host` set to the upstream's. `headers` must already be without
/// hop-by-hop headers ([`strip_hop_by_hop`]): the proxy strips them before it adds
/// `x-forwarded-*`, and stripping again here would scan every caller's headers twice.
pub fn request<B>(
    base: &Uri,
    method: http::Method,
    path_and_query: &str,
    mut headers: HeaderMap,
    body: B,
) -> Result<http::Request<B>, http::Error> {
    let uri = join(base, path_and_query)?;
    if let Some(a) = base
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(http::header::HOST, a);
    }
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1), plus
/// those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (HTTP/1.1 keeps connections alive without `Connection`): one
    // pass over their names says so, where removing each would look up eight.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in listed {
        headers.remove(h);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The hop-by-hop fields (RFC 9110 7.6.1, and the old `Keep-Alive`, `Proxy-Connection`), built
/// once: removing one by its text parses the name on every call.
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The error and its causes on one line ("connection reset by peer" hides two levels deep).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_keep_the_prefix() {
        let b: Uri = "https://api.example/v2/".parse().unwrap();
        assert_eq!(
            join(&b, "/employees?page=1").unwrap().to_string(),
            "https://api.example/v2/employees?page=1"
        );
        let b: Uri = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(join(&b, "/x").unwrap().to_string(), "http://127.0.0.1:9/x");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    /// Each hop-by-hop field goes when it is the only one (the pass that finds none must know
    /// them all), and a message without any is left as it is.
    #[test]
    fn each_hop_by_hop_header_alone_goes() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
            h.insert("accept", "*/*".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert("accept", "*/*".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
