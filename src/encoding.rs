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
}

/// Decodes `body` by the comma-separated `content_encoding` (applied in order, so decoded in reverse).
/// A body without an encoding is passed through (no copy); any body over `limit` is refused.
pub fn decode(
    content_encoding: Option<&str>,
    body: Bytes,
    limit: usize,
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
            "gzip" | "x-gzip" => {
                read_decoded(flate2::read::MultiGzDecoder::new(&body[..]), &enc, limit)?
            }
            // "deflate" is zlib-wrapped by the RFC, but some servers send raw deflate.
            "deflate" => read_decoded(flate2::read::ZlibDecoder::new(&body[..]), &enc, limit)
                .or_else(|_| {
                    read_decoded(flate2::read::DeflateDecoder::new(&body[..]), &enc, limit)
                })?,
            "br" => read_decoded(
                brotli_decompressor::Decompressor::new(&body[..], 8192),
                &enc,
                limit,
            )?,
            "zstd" => {
                let dec =
                    zstd::stream::read::Decoder::new(&body[..]).map_err(|e| corrupt(&enc, &e))?;
                read_decoded(dec, &enc, limit)?
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

fn read_decoded(r: impl Read, enc: &str, limit: usize) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let n = r
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(enc, &e))?;
    if n > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
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
}
