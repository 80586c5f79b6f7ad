//! What the proxy's tee hands the comparison of legacy's body.

use bytes::{Bytes, BytesMut};

/// What the tee saw of the legacy body.
#[derive(Debug, Default)]
pub enum Captured {
    /// The whole body (still content-encoded), as the frames came; see [`join`].
    Complete(Vec<Bytes>),
    /// The body went past the limit; only its length so far is known.
    TooLarge { seen: usize },
    /// Legacy failed mid-body.
    Error(String),
    /// The memory budget of the comparisons (`[shadow] max_bytes_in_flight`) could not hold it.
    OverBudget,
    /// The caller went away before the body ended.
    #[default]
    Aborted,
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
