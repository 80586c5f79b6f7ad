//! TLS on the proxy and admin listeners (`[proxy] tls_cert` / `tls_key`, `[admin]` the same):
//! rustls with the ring provider, HTTP/2 or HTTP/1.1 by ALPN, the certificate and key read
//! from PEM files at start-up and again on SIGHUP (a renewed certificate is served to new
//! connections without a restart; a file that does not load keeps the previous pair).
//!
//! The handshake runs inside the connection's I/O ([`Stream`]), on its task: a client that
//! stalls it holds only its own connection, and the listener's header timeout closes it.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A listener's certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

/// The certificate chain and key of one listener, swapped in place by [`Certs::reload`].
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    /// Reads the pair (PEM: the chain, leaf first; a PKCS#8, PKCS#1 or SEC1 key).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let pair = read_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again; on failure the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The listener's acceptor: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let err = |p: &Path, message: String| TlsError {
        path: p.display().to_string(),
        message,
    };
    let pem = std::fs::read(cert).map_err(|e| err(cert, e.to_string()))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert, "no certificate in the file".into()));
    }
    let pem = std::fs::read(key).map_err(|e| err(key, e.to_string()))?;
    let der = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| err(key, format!("not a PEM key: {e}")))?
        .ok_or_else(|| err(key, "no private key in the file".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| err(key, format!("unsupported key: {e}")))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| err(key, format!("the key does not match the certificate: {e}")))?;
    Ok(pair)
}

/// A caller's connection: plain TCP, or TLS (handshaking until the first read or write needs
/// it done).
pub enum Stream {
    Plain(TcpStream),
    Handshake(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Failed,
}

impl Stream {
    pub fn new(tcp: TcpStream, tls: Option<&tokio_rustls::TlsAcceptor>) -> Self {
        match tls {
            Some(a) => Self::Handshake(Box::new(a.accept(tcp))),
            None => Self::Plain(tcp),
        }
    }

    /// Drives the handshake; then the stream to read or write.
    fn ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Pin<&mut (dyn Io + '_)>>> {
        loop {
            match self {
                Self::Handshake(a) => match Pin::new(&mut **a).poll(cx) {
                    Poll::Ready(Ok(s)) => *self = Self::Tls(Box::new(s)),
                    Poll::Ready(Err(e)) => {
                        *self = Self::Failed;
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Self::Plain(s) => return Poll::Ready(Ok(Pin::new(s as &mut dyn Io))),
                Self::Tls(s) => return Poll::Ready(Ok(Pin::new(&mut **s as &mut dyn Io))),
                Self::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "TLS handshake failed",
                    )))
                }
            }
        }
    }
}

/// What [`Stream`] reads and writes through.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

use std::future::Future as _;

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().ready(cx) {
            Poll::Ready(Ok(s)) => s.poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().ready(cx) {
            Poll::Ready(Ok(s)) => s.poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A response's head and body frames written with `writev` from where they are: without it
    /// hyper copies every body frame into its own buffer first (its "flatten" strategy), a copy
    /// of the whole body per response on the caller's path.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().ready(cx) {
            Poll::Ready(Ok(s)) => s.poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Both streams it can become write vectored (a socket; rustls's stream), and hyper asks
    /// once, before a TLS handshake is done.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().ready(cx) {
            Poll::Ready(Ok(s)) => s.poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            // Nothing was said yet: dropping the socket closes it.
            Self::Handshake(_) | Self::Failed => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper asks the stream once whether it takes vectored writes, and copies every body
    /// frame into one buffer when it does not: a plain connection says it does and writes the
    /// slices in order; a TLS one says so before its handshake (tests/tls.rs serves through it).
    #[tokio::test]
    async fn a_connection_takes_a_response_in_one_vectored_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let ((server, _), mut client) =
            tokio::join!(async { listener.accept().await.unwrap() }, async {
                client.await.unwrap()
            });
        let mut stream = Stream::new(server, None);
        assert!(stream.is_write_vectored());
        let parts: [&[u8]; 3] = [b"HTTP/1.1 200 OK\r\n\r\n", b"{\"a\":", b"1}"];
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let n = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write_vectored(cx, &slices));
        assert_eq!(n.await.unwrap(), total, "one writev, all three slices");
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, parts.concat());

        // A TLS connection is asked before its handshake.
        let certs = Certs {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            current: RwLock::new(Arc::new(test_pair())),
        };
        let acceptor = Arc::new(certs).acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(Stream::new(server, Some(&acceptor)).is_write_vectored());
    }

    fn test_pair() -> CertifiedKey {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let signing = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        CertifiedKey::new(vec![key.cert.der().clone()], signing)
    }
}
