//! Body types of the proxy: the request body sent to legacy and the response body streamed back
//! to the caller, which keeps a bounded copy for the comparison (the tee).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

/// The request body forwarded to legacy: bytes already read (when the request is mirrored and
/// its body was buffered) followed by whatever the caller still sends.
pub struct ReqBody {
    head: Option<Bytes>,
    rest: Option<Incoming>,
}

impl ReqBody {
    pub fn streaming(rest: Incoming) -> Self {
        Self {
            head: None,
            rest: Some(rest),
        }
    }

    pub fn buffered(head: Bytes, rest: Option<Incoming>) -> Self {
        Self {
            head: (!head.is_empty()).then_some(head),
            rest,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        match self.rest.as_mut() {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(head),
            Some(r) => {
                let rh = r.size_hint();
                let mut s = SizeHint::new();
                s.set_lower(rh.lower() + head);
                if let Some(u) = rh.upper() {
                    s.set_upper(u + head);
                }
                s
            }
        }
    }
}

/// What the tee saw of the legacy body.
#[derive(Debug)]
pub enum Captured {
    /// The whole body (still content-encoded), as the frames came; see [`join`].
    Complete(Vec<Bytes>),
    /// The body went past the limit; only its length so far is known.
    TooLarge { seen: usize },
    /// Legacy failed mid-body.
    Error(String),
    /// The caller went away before the body ended.
    Aborted,
}

struct Capture {
    /// The frames seen so far: `Bytes` clones share the caller's buffers, so the copy costs no
    /// memcpy on the request path; they are joined when the body ends.
    chunks: Vec<Bytes>,
    limit: usize,
    seen: usize,
    tx: Option<oneshot::Sender<Captured>>,
}

impl Capture {
    fn finish(&mut self, c: impl FnOnce(&mut Self) -> Captured) {
        if let Some(tx) = self.tx.take() {
            let v = c(self);
            let _ = tx.send(v);
        }
    }
}

/// The response body for the caller: legacy's body passed through frame by frame (never
/// re-encoded), with an optional bounded copy for the comparison; or a small body of our own
/// (the 502/504 JSON errors).
pub struct ResBody {
    kind: ResKind,
}

enum ResKind {
    Tee {
        inner: Incoming,
        capture: Option<Capture>,
    },
    Full(Option<Bytes>),
}

impl ResBody {
    /// Passes `inner` through without keeping a copy.
    pub fn plain(inner: Incoming) -> Self {
        Self {
            kind: ResKind::Tee {
                inner,
                capture: None,
            },
        }
    }

    /// Passes `inner` through and sends a copy of up to `limit` bytes to the returned receiver
    /// once the body ends (or fails, or the caller goes away).
    pub fn tee(inner: Incoming, limit: usize) -> (Self, oneshot::Receiver<Captured>) {
        let (tx, rx) = oneshot::channel();
        let capture = Capture {
            chunks: Vec::new(),
            limit,
            seen: 0,
            tx: Some(tx),
        };
        let mut body = Self {
            kind: ResKind::Tee {
                inner,
                capture: Some(capture),
            },
        };
        // An empty body (HEAD, 204, content-length: 0) may never be polled.
        body.check_end();
        (body, rx)
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        Self {
            kind: ResKind::Full(Some(b.into())),
        }
    }

    fn check_end(&mut self) {
        if let ResKind::Tee {
            inner,
            capture: Some(c),
        } = &mut self.kind
        {
            // hyper stops polling once is_end_stream() is true, so the final `None` may never
            // come: finish the capture as soon as the inner body says it has ended.
            if inner.is_end_stream() {
                c.finish(complete);
            }
        }
    }
}

fn complete(c: &mut Capture) -> Captured {
    if c.seen > c.limit {
        return Captured::TooLarge { seen: c.seen };
    }
    Captured::Complete(std::mem::take(&mut c.chunks))
}

/// Joins captured frames into one buffer (off the request path).
pub fn join(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
            }
            buf.freeze()
        }
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match &mut this.kind {
            ResKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResKind::Tee { inner, capture } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                if let Some(c) = capture.as_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                c.seen += data.len();
                                if c.seen <= c.limit {
                                    c.chunks.push(data.clone());
                                } else if !c.chunks.is_empty() {
                                    c.chunks = Vec::new();
                                }
                            }
                        }
                        Poll::Ready(Some(Err(e))) => {
                            let msg = e.to_string();
                            c.finish(|_| Captured::Error(msg));
                        }
                        Poll::Ready(None) => c.finish(complete),
                        Poll::Pending => {}
                    }
                }
                this.check_end();
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResKind::Full(b) => b.is_none(),
            ResKind::Tee { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResKind::Tee { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ResBody {
    fn drop(&mut self) {
        if let ResKind::Tee {
            capture: Some(c), ..
        } = &mut self.kind
        {
            c.finish(|_| Captured::Aborted);
        }
    }
}
