//! Body types of the proxy: the request body sent to legacy and the response body streamed back
//! to the caller, which keeps a bounded copy for the comparison (the tee).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::budget::{Held, MemoryBudget};
use crate::shadow::capture::Captured;

/// The request body forwarded to legacy: bytes already read (when the request is mirrored and
/// its body was buffered) followed by whatever the caller still sends.
pub struct ReqBody {
    head: Option<Bytes>,
    rest: Option<Incoming>,
    /// Let go once the caller's body has been read to its end ([`BodyPending`]).
    pending: Option<BodyPending>,
}

/// Marks a caller's request whose body is still arriving: the listener may close such a
/// connection, like an idle one, to make room at its cap (a slow body is not a request in
/// flight anywhere yet). The accept loop puts it in the request's extensions; whoever reads
/// the body drops it at the body's end (or with the body). Runs its callback once, on drop.
#[derive(Clone)]
pub struct BodyPending {
    _done: std::sync::Arc<PendingInner>,
}

struct PendingInner(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for PendingInner {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl BodyPending {
    pub fn new(done: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            _done: std::sync::Arc::new(PendingInner(Some(Box::new(done)))),
        }
    }
}

impl ReqBody {
    pub fn streaming(rest: Incoming) -> Self {
        Self {
            head: None,
            rest: Some(rest),
            pending: None,
        }
    }

    pub fn buffered(head: Bytes, rest: Option<Incoming>) -> Self {
        Self {
            head: (!head.is_empty()).then_some(head),
            rest,
            pending: None,
        }
    }

    /// Holds `pending` until the caller's body ends.
    pub fn pending(mut self, pending: Option<BodyPending>) -> Self {
        if self.rest.is_some() {
            self.pending = pending;
        }
        self
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
        let frame = match self.rest.as_mut() {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            self.pending = None;
        }
        frame
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

struct Capture {
    /// The frames seen so far: `Bytes` clones share the caller's buffers, so the copy costs no
    /// memcpy on the request path; they are joined when the body ends.
    chunks: Vec<Bytes>,
    limit: usize,
    seen: usize,
    /// The bytes of `chunks`, taken from the comparisons' memory budget.
    held: Held,
    over_budget: bool,
    tx: Option<oneshot::Sender<(Captured, Held, Instant)>>,
}

impl Capture {
    fn finish(&mut self, c: impl FnOnce(&mut Self) -> Captured) {
        if let Some(tx) = self.tx.take() {
            let v = c(self);
            let held = std::mem::take(&mut self.held);
            // When legacy's last byte came: the comparison's legacy latency (to the whole
            // answer, as the candidate's is).
            let _ = tx.send((v, held, Instant::now()));
        }
    }

    fn keep(&mut self, data: &Bytes) {
        self.seen += data.len();
        if self.over_budget || self.seen > self.limit {
            self.drop_copy();
        } else if self.held.grow(data.len()) {
            self.chunks.push(data.clone());
        } else {
            self.over_budget = true;
            self.drop_copy();
        }
    }

    fn drop_copy(&mut self) {
        if !self.chunks.is_empty() {
            self.chunks = Vec::new();
        }
        self.held.release();
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
        stall: Stall,
        /// Legacy's body failed: the error is given to the server one poll later, so that
        /// what came before it (the head, the last bytes) is flushed to the caller first.
        failed: Option<BodyError>,
    },
    Full(Option<Bytes>),
    /// Frames already read (to verify a served answer), then the rest of the body.
    Prefixed {
        prefix: std::collections::VecDeque<Bytes>,
        rest: Box<ResBody>,
    },
}

/// The error of a response body: legacy's own, or a stall past `[legacy] body_timeout`.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Legacy sent nothing of its body for the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("legacy body stalled: no data for {0:?}")]
pub struct Stalled(pub Duration);

/// Whose response a body is: what the warning names when legacy's body stalls (mostly logged
/// while the server streams the body, outside the exchange's own code and span).
#[derive(Debug)]
pub struct Owner {
    request_id: String,
    route: Option<String>,
    account: Option<String>,
    /// No caller reads the body (the candidate answered the caller, or the caller left): a
    /// stall then closes no caller's response ([`ResBody::unheard`]).
    unheard: bool,
}

impl Owner {
    /// The exchange of `meta`.
    pub fn of(meta: &crate::record::Meta) -> Box<Self> {
        Box::new(Self {
            request_id: meta.request_id.clone(),
            route: meta.route.clone(),
            account: meta.account.clone(),
            unheard: false,
        })
    }
}

/// The longest pause allowed between two frames of legacy's body. The timer costs nothing
/// until the body first makes the caller wait (most bodies arrive with their head) and is then
/// armed once: a frame only notes the time, and the deadline is moved when it comes.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    last: tokio::time::Instant,
    owner: Box<Owner>,
    /// It expired (and said so): the next poll fails, without a second warning, after what came
    /// before is flushed (a verified served exchange reads the body, then gives it to the server,
    /// whose first poll of it is that next one).
    fired: bool,
}

impl Stall {
    fn new(limit: Duration, owner: Box<Owner>) -> Self {
        Self {
            limit,
            timer: None,
            last: tokio::time::Instant::now(),
            owner,
            fired: false,
        }
    }

    fn progress(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// The body is pending: `true` once nothing came for the whole limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.limit;
            if deadline <= tokio::time::Instant::now() {
                return true;
            }
            // Frames came since the timer was armed: wait from the last one.
            timer.as_mut().reset(deadline);
        }
    }
}

impl ResBody {
    /// Marks a body that no caller reads (the candidate answered the caller, or the caller left;
    /// the comparison may still read it): a stall's warning then says so, not that it closes the
    /// caller's response.
    pub fn unheard(&mut self) {
        match &mut self.kind {
            ResKind::Tee { stall, .. } => stall.owner.unheard = true,
            ResKind::Prefixed { rest, .. } => rest.unheard(),
            ResKind::Full(_) => {}
        }
    }

    /// Passes `inner` through without keeping a copy; a pause longer than `stall` between two
    /// frames ends the body with an error.
    pub fn plain(inner: Incoming, stall: Duration, owner: Box<Owner>) -> Self {
        Self {
            kind: ResKind::Tee {
                inner,
                capture: None,
                stall: Stall::new(stall, owner),
                failed: None,
            },
        }
    }

    /// Passes `inner` through and sends a copy of up to `limit` bytes to the returned receiver
    /// once the body ends (or fails, or the caller goes away).
    /// The copy's bytes are taken from `budget`: a copy the budget cannot hold is dropped and
    /// reported as [`Captured::OverBudget`] (the caller's body is unaffected).
    pub fn tee(
        inner: Incoming,
        limit: usize,
        stall: Duration,
        budget: &MemoryBudget,
        owner: Box<Owner>,
    ) -> (Self, oneshot::Receiver<(Captured, Held, Instant)>) {
        let (tx, rx) = oneshot::channel();
        let capture = Capture {
            chunks: Vec::new(),
            limit,
            seen: 0,
            held: budget.hold(),
            over_budget: false,
            tx: Some(tx),
        };
        let mut body = Self {
            kind: ResKind::Tee {
                inner,
                capture: Some(capture),
                stall: Stall::new(stall, owner),
                failed: None,
            },
        };
        // An empty body (HEAD, 204, content-length: 0) may never be polled.
        body.check_end();
        (body, rx)
    }

    /// `prefix` (frames already read off `rest`), then what is left of `rest`.
    pub fn prefixed(prefix: Vec<Bytes>, rest: Self) -> Self {
        Self {
            kind: ResKind::Prefixed {
                prefix: prefix.into(),
                rest: Box::new(rest),
            },
        }
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
            ..
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
    if c.over_budget {
        return Captured::OverBudget;
    }
    if c.seen > c.limit {
        return Captured::TooLarge { seen: c.seen };
    }
    if !c.held.complete(c.seen) {
        c.drop_copy();
        return Captured::OverBudget;
    }
    Captured::Complete(std::mem::take(&mut c.chunks))
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match &mut this.kind {
            ResKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResKind::Prefixed { prefix, rest } => match prefix.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
            ResKind::Tee {
                inner,
                capture,
                stall,
                failed,
            } => {
                if let Some(e) = failed.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if stall.fired {
                    // As for a failure (below): what came before, the head included, is
                    // flushed first.
                    stall.fired = false;
                    *failed = Some(Box::new(Stalled(stall.limit)));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) => stall.progress(),
                    Poll::Pending if stall.expired(cx) => {
                        // Headers were sent long ago: the only way left to tell the caller
                        // is to end the body with an error (the connection is closed).
                        let err = Stalled(stall.limit);
                        stall.fired = true;
                        let o = &stall.owner;
                        tracing::warn!(
                            error = %err,
                            request_id = o.request_id.as_str(),
                            route = o.route.as_deref(),
                            account = o.account.as_deref(),
                            "legacy body stalled: {}",
                            if o.unheard {
                                "no caller reads this body"
                            } else {
                                "closing the caller's response"
                            }
                        );
                        if let Some(c) = capture.as_mut() {
                            let msg = err.to_string();
                            c.finish(|_| Captured::Error(msg));
                        }
                        *capture = None;
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    _ => {}
                }
                if let Some(c) = capture.as_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                c.keep(data);
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
                match polled {
                    // The server closes the connection on a body error, and may do so before
                    // it has flushed what it holds (the head and the bytes legacy sent before
                    // the error, received in the same read): the caller would get nothing. Held
                    // for one poll, the error comes after a flush.
                    Poll::Ready(Some(Err(e))) => {
                        if let ResKind::Tee { failed, .. } = &mut this.kind {
                            *failed = Some(Box::new(e));
                        }
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    other => other.map_err(|e| -> BodyError { Box::new(e) }),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResKind::Full(b) => b.is_none(),
            ResKind::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            ResKind::Tee { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResKind::Prefixed { prefix, rest } => {
                let n: u64 = prefix.iter().map(|b| b.len() as u64).sum();
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + n);
                if let Some(u) = r.upper() {
                    h.set_upper(u + n);
                }
                h
            }
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
