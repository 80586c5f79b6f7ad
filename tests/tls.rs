//! https upstreams: rustls with an extra CA file, HTTP/2 negotiated by ALPN.

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::*;
use tokio::net::TcpListener;

/// An https upstream on 127.0.0.1 with a fresh self-signed certificate; answers JSON naming the
/// HTTP version it was spoken to with. Returns its URL and the certificate (PEM).
async fn tls_upstream(body: serde_json::Value) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let mut b = body.clone();
                    b["version"] = json!(format!("{:?}", req.version()));
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(b.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_with_an_extra_ca_file_speak_h2() {
    let (legacy, legacy_pem) = tls_upstream(json!({"side": "x"})).await;
    let (candidate, candidate_pem) = tls_upstream(json!({"side": "y"})).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("legacy.pem"), legacy_pem).unwrap();
    std::fs::write(dir.path().join("candidate.pem"), candidate_pem).unwrap();
    let toml = format!(
        "[legacy]\nbase_url = \"{legacy}\"\nca_file = \"{}\"\n[candidate]\nbase_url = \"{candidate}\"\nca_file = \"{}\"\n",
        dir.path().join("legacy.pem").display(),
        dir.path().join("candidate.pem").display()
    );
    let sd = Shadowdiff::start(&legacy, &candidate, &toml).await;
    let got = get(&sd.url("/v")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"side": "x", "version": "HTTP/2.0"}));
    sd.quiesce().await;
    let d = sd.rows("SELECT pointer, legacy, candidate FROM diffs");
    assert_eq!(
        d,
        vec![vec![json!("/side"), json!("\"x\""), json!("\"y\"")]]
    );
    sd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_legacy_certificate_is_a_502() {
    let (legacy, _) = tls_upstream(json!({})).await;
    let candidate = Upstream::json(json!({})).await;
    let sd = Shadowdiff::start(&legacy, &candidate.url(), "").await;
    let got = get(&sd.url("/v")).await;
    assert_eq!(got.status, 502);
    let detail = got.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("certificate") || detail.contains("UnknownIssuer"),
        "{detail}"
    );
    sd.stop().await;
}
