//! Content-Encoding decoding of the body copies kept for comparison.
//!
//! Only the copies are decoded: the caller gets the legacy bytes exactly as they came. Decoding is
//! bounded by a size limit so that a small compressed body cannot expand without end.

use std::io::Read;

use bytes::Bytes;

/// A body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("{encoding} body is corrupt: {message}")]
    Corrupt { encoding: String, message: String },
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// The memory the decoded bytes would take was refused ([`decode_within`]).
    #[error("decoded body: more memory than the budget has left")]
    OverBudget,
}

/// Bytes a decoder reads out at a time, and asks for first.
const STEP: usize = 64 << 10;

/// Decodes `body` by the comma-separated `content_encoding` (applied in order, so decoded in reverse).
/// A body without an encoding is passed through (no copy); any body over `limit` is refused.
pub fn decode(
    content_encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    decode_within(content_encoding, body, limit, &mut |_| true)
}

/// [`decode`], the memory the decoded bytes grow into asked of `room` before it is taken (each
/// larger buffer, with the old one while the bytes move, less what was asked for already):
/// [`DecodeError::OverBudget`] when it says no.
pub fn decode_within(
    content_encoding: Option<&str>,
    body: Bytes,
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Bytes, DecodeError> {
    let Some(ce) = content_encoding else {
        if body.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok(body);
    };
    let mut body = body;
    for enc in ce.rsplit(',').map(|e| e.trim().to_ascii_lowercase()) {
        body = match enc.as_str() {
            "" | "identity" => body,
            "gzip" | "x-gzip" => read_decoded(
                flate2::read::MultiGzDecoder::new(&body[..]),
                &enc,
                limit,
                room,
            )?,
            // "deflate" is zlib-wrapped by the RFC, but some servers send raw deflate.
            "deflate" => {
                match read_decoded(flate2::read::ZlibDecoder::new(&body[..]), &enc, limit, room) {
                    Err(DecodeError::Corrupt { .. }) => read_decoded(
                        flate2::read::DeflateDecoder::new(&body[..]),
                        &enc,
                        limit,
                        room,
                    )?,
                    other => other?,
                }
            }
            "br" => read_decoded(
                brotli_decompressor::Decompressor::new(&body[..], 8192),
                &enc,
                limit,
                room,
            )?,
            "zstd" => {
                let dec =
                    zstd::stream::read::Decoder::new(&body[..]).map_err(|e| corrupt(&enc, &e))?;
                read_decoded(dec, &enc, limit, room)?
            }
            other => return Err(DecodeError::Unsupported(other.to_owned())),
        };
    }
    Ok(body)
}

fn corrupt(enc: &str, e: &dyn std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        encoding: enc.to_owned(),
        message: e.to_string(),
    }
}

fn read_decoded(
    r: impl Read,
    enc: &str,
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Bytes, DecodeError> {
    let mut r = r.take(limit as u64 + 1);
    let mut out: Vec<u8> = Vec::new();
    // The most held at once so far: a new buffer and the old one while the bytes move.
    let mut peak = 0;
    loop {
        if out.capacity() - out.len() < STEP {
            let cap = out.capacity();
            let want = (out.len() + STEP).max(2 * cap);
            if want + cap > peak {
                if !room(want + cap - peak) {
                    return Err(DecodeError::OverBudget);
                }
                peak = want + cap;
            }
            out.reserve_exact(want - out.len());
        }
        let n = (&mut r)
            .take(STEP as u64)
            .read_to_end(&mut out)
            .map_err(|e| corrupt(enc, &e))?;
        if out.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if n == 0 {
            return Ok(Bytes::from(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dec(
        ce: Option<&str>,
        body: impl Into<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        decode(ce, Bytes::from(body.into()), limit).map(|b| b.to_vec())
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn identity_and_gzip() {
        assert_eq!(dec(None, b"x".to_vec(), 10).unwrap(), b"x");
        assert_eq!(
            dec(None, b"xyz".to_vec(), 2),
            Err(DecodeError::TooLarge { limit: 2 })
        );
        assert_eq!(
            dec(Some("gzip"), gzip(b"{\"a\":1}"), 100).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(
            dec(Some("gzip, identity"), gzip(b"hi"), 100).unwrap(),
            b"hi"
        );
    }

    #[test]
    fn deflate_br_zstd() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            dec(Some("deflate"), z.finish().unwrap(), 100).unwrap(),
            b"zlib"
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(b"raw").unwrap();
        assert_eq!(
            dec(Some("deflate"), raw.finish().unwrap(), 100).unwrap(),
            b"raw"
        );
        let z = zstd::encode_all(&b"zstd body"[..], 3).unwrap();
        assert_eq!(dec(Some("zstd"), z, 100).unwrap(), b"zstd body");
    }

    #[test]
    fn brotli_known_stream() {
        // "hello" compressed by brotli -q 11 (an uncompressed meta-block).
        let br = [0x0b, 0x02, 0x80, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x03];
        assert_eq!(dec(Some("br"), br.to_vec(), 100).unwrap(), b"hello");
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let big = gzip(&vec![b'a'; 1 << 20]);
        assert_eq!(
            dec(Some("gzip"), big, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
        assert!(matches!(
            dec(Some("gzip"), b"not gzip".to_vec(), 100),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            dec(Some("compress"), vec![], 100),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn decoded_bytes_are_asked_for_before_they_are_held() {
        let text = vec![b'1'; 4 << 20];
        let body = gzip(&text);
        // Unbounded: the same bytes, and what was asked covers the buffer they are in.
        let mut asked = 0;
        let out = decode_within(Some("gzip"), Bytes::from(body.clone()), 8 << 20, &mut |n| {
            asked += n;
            true
        })
        .unwrap();
        assert_eq!(out, text);
        assert!(asked >= text.len(), "{asked}");
        // Refused past 1 MiB: stopped there, before the rest is decoded.
        let mut given = 0;
        let refused = decode_within(Some("gzip"), Bytes::from(body), 8 << 20, &mut |n| {
            if given + n > 1 << 20 {
                return false;
            }
            given += n;
            true
        });
        assert_eq!(refused, Err(DecodeError::OverBudget));
        assert!(given <= 1 << 20);
        // A body without an encoding asks for nothing (it is not copied).
        let plain = decode_within(None, Bytes::from(text.clone()), 8 << 20, &mut |_| false);
        assert_eq!(plain.unwrap().len(), text.len());
    }
}
