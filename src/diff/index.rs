//! The string index of a JSON text: where the bytes that end or interrupt a string are (a
//! quote, a backslash, a control byte), a bit per byte, found 64 bytes at a time before the
//! scanner reads a token (the quote half of simdjson's first stage, without its escape logic:
//! a backslash is itself a stop, and the scanner decodes from it).
//!
//! The scanner then finds a string's end with one bit search instead of reading the string a
//! word at a time as it goes. Each 64-byte block is classified with SSE2 on x86-64 (part of the
//! x86-64 baseline, so every x86-64 processor has it: no run-time check, no build flag) and a
//! byte at a time elsewhere; the two agree (a test checks them against each other).

/// The index of one text: a bit per byte, set on each quote, backslash and control byte
/// (below 0x20): the bytes that end or interrupt a string. Its buffer is reused from text to
/// text.
#[derive(Default)]
pub(super) struct Index {
    stops: Vec<u64>,
}

impl Index {
    /// Indexes `bytes`.
    pub(super) fn build(&mut self, bytes: &[u8]) {
        self.stops.clear();
        // Exact, so that what a thread keeps follows the longest body it kept (see `scan`).
        self.stops.reserve_exact(bytes.len().div_ceil(64));
        let mut chunks = bytes.chunks_exact(64);
        for block in chunks.by_ref() {
            self.stops.push(stops(block.try_into().expect("64 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The tail, padded with spaces (no stop).
            let mut block = [b' '; 64];
            block[..rest.len()].copy_from_slice(rest);
            self.stops.push(stops(&block));
        }
    }

    /// The first quote, backslash or control byte at `from` or after it.
    #[inline]
    pub(super) fn next_stop(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut bits = self.stops.get(w)? & (!0u64 << (from % 64));
        while bits == 0 {
            w += 1;
            bits = *self.stops.get(w)?;
        }
        Some(w * 64 + bits.trailing_zeros() as usize)
    }

    /// The words it holds (what it costs to keep).
    pub(super) fn capacity(&self) -> usize {
        self.stops.capacity()
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn stops(block: &[u8; 64]) -> u64 {
    use safe_arch::{
        bitor_m128i as or, cmp_eq_mask_i8_m128i as eq, m128i, max_u8_m128i,
        move_mask_i8_m128i as mask, set_splat_i8_m128i as splat,
    };
    let (quote, backslash, below_space) = (splat(b'"' as i8), splat(b'\\' as i8), splat(0x1f));
    let mut out = 0u64;
    for (i, part) in block.chunks_exact(16).enumerate() {
        let part: [u8; 16] = part.try_into().expect("16 bytes");
        let v = m128i::from(part);
        // Unsigned v <= 0x1f: a control byte.
        let control = eq(max_u8_m128i(v, below_space), below_space);
        let hits = or(or(eq(v, quote), eq(v, backslash)), control);
        out |= u64::from(mask(hits) as u16) << (16 * i);
    }
    out
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn stops(block: &[u8; 64]) -> u64 {
    portable(block)
}

/// The stops a byte at a time: the index on processors other than x86-64, and the reference
/// the SSE2 one is tested against.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn portable(block: &[u8; 64]) -> u64 {
    block
        .iter()
        .enumerate()
        .filter(|(_, &b)| matches!(b, b'"' | b'\\' | 0..=0x1f))
        .fold(0, |out, (i, _)| out | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stop from each position, by the index and by its definition.
    fn check(bytes: &[u8]) {
        let mut ix = Index::default();
        ix.build(bytes);
        for from in 0..=bytes.len() {
            let want = (from..bytes.len()).find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f));
            assert_eq!(ix.next_stop(from), want, "{bytes:?} from {from}");
        }
    }

    #[test]
    fn the_index_finds_each_next_stop() {
        let long = "x".repeat(70);
        for text in [
            String::new(),
            r#"{"a":[1,"b",{"c":null}],"d":"e\"f\\"}"#.to_owned(),
            format!(r#"["{long}\"{long}",{{"k":"[:,]"}}]"#),
            format!("[\"{}\\\\\",1]", "y".repeat(61)),
            format!("{}\"", "y".repeat(200)),
            "[\"a\tb\",\"\u{1}\"]\n".to_owned(),
            "\u{e9}\u{7f}abc".to_owned(),
        ] {
            check(text.as_bytes());
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_index_as_the_definition_says(
            // Bytes drawn mostly from JSON's own, and some that are not.
            bytes in proptest::collection::vec(
                proptest::sample::select(b"\"\\{}[]:, \n\tab01\x00\x1f\x20\x7f\x80\xc3\xa9\xff-.e".to_vec()),
                0..300,
            )
        ) {
            check(&bytes);
        }
    }

    #[test]
    fn each_block_is_classified_as_byte_by_byte() {
        let mut block = [0u8; 64];
        for round in 0..1024u32 {
            for (i, b) in block.iter_mut().enumerate() {
                *b = (round as usize * 64 + i * 7 + (round as usize >> 2) * i) as u8;
            }
            assert_eq!(stops(&block), portable(&block), "{block:?}");
        }
        for b in 0..=255u8 {
            assert_eq!(stops(&[b; 64]), portable(&[b; 64]), "{b}");
        }
    }
}
