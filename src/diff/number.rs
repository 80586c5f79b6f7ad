//! Exact comparison of JSON numbers by value.
//!
//! serde_json is built with `arbitrary_precision`, so a parsed number keeps its source text. Two
//! numbers are equal when they denote the same decimal value: `10`, `10.0`, `1e1` and `1.0E+1` are
//! one value, and `9007199254740993` differs from `9007199254740992` (which a float would merge).

use std::hash::{Hash, Hasher};

/// A decimal in canonical form: `(-1)^neg * digits * 10^exp`, `digits` without leading or trailing
/// zeros. Zero is `digits == ""` with `neg == false`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Decimal<'a> {
    neg: bool,
    digits: DigitStr<'a>,
    exp: i64,
}

/// The significant digits, which may be split around the decimal point in the source text.
#[derive(Debug)]
struct DigitStr<'a> {
    int: &'a str,
    frac: &'a str,
}

impl DigitStr<'_> {
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.int.bytes().chain(self.frac.bytes())
    }
    fn len(&self) -> usize {
        self.int.len() + self.frac.len()
    }
}

impl PartialEq for DigitStr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.bytes().eq(other.bytes())
    }
}
impl Eq for DigitStr<'_> {}
impl Hash for DigitStr<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for b in self.bytes() {
            state.write_u8(b);
        }
    }
}

/// Parses the text of a JSON number. Returns `None` for text that is not one.
pub fn parse(text: &str) -> Option<Decimal<'_>> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp_text) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut exp: i64 = match exp_text {
        Some(e) => {
            let e = e.strip_prefix('+').unwrap_or(e);
            // Exponents beyond i64 are not meaningful JSON in practice; saturate.
            e.parse::<i64>().unwrap_or(if e.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            })
        }
        None => 0,
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    exp = exp.saturating_sub(frac.len() as i64);
    // Strip leading zeros (they can span the decimal point: 0.00012).
    let mut int = int.trim_start_matches('0');
    let mut frac = frac;
    if int.is_empty() {
        frac = frac.trim_start_matches('0');
    }
    // Strip trailing zeros, moving them into the exponent.
    let frac_trimmed = frac.trim_end_matches('0');
    exp = exp.saturating_add((frac.len() - frac_trimmed.len()) as i64);
    frac = frac_trimmed;
    if frac.is_empty() {
        let int_trimmed = int.trim_end_matches('0');
        exp = exp.saturating_add((int.len() - int_trimmed.len()) as i64);
        int = int_trimmed;
    }
    if int.is_empty() && frac.is_empty() {
        return Some(Decimal {
            neg: false,
            digits: DigitStr { int: "", frac: "" },
            exp: 0,
        });
    }
    Some(Decimal {
        neg,
        digits: DigitStr { int, frac },
        exp,
    })
}

impl std::fmt::Display for Decimal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.neg { "-" } else { "" };
        write!(
            f,
            "{sign}{}{}e{}",
            self.digits.int, self.digits.frac, self.exp
        )
    }
}

/// Whether two JSON numbers (their source texts) are equal, exactly or within `tolerance`
/// (absolute, when positive).
pub fn equal(ta: &str, tb: &str, tolerance: f64) -> bool {
    if ta == tb {
        return true;
    }
    let exact = match (parse(ta), parse(tb)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    };
    if exact || tolerance <= 0.0 {
        return exact;
    }
    // serde_json's `as_f64` under `arbitrary_precision`: finite values only.
    let float = |t: &str| t.parse::<f64>().ok().filter(|f| f.is_finite());
    match (float(ta), float(tb)) {
        (Some(x), Some(y)) => (x - y).abs() <= tolerance,
        _ => false,
    }
}

/// Feeds the canonical form of a number (its source text) to `state`, so that equal numbers hash
/// alike.
pub fn hash<H: Hasher>(text: &str, state: &mut H) {
    match parse(text) {
        Some(d) => d.hash(state),
        None => text.hash(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> serde_json::Number {
        serde_json::from_str(s).unwrap()
    }

    fn eq(a: &str, b: &str) -> bool {
        equal(num(a).as_str(), num(b).as_str(), 0.0)
    }

    #[test]
    fn same_value_other_spelling() {
        assert!(eq("10", "10.0"));
        assert!(eq("10", "1e1"));
        assert!(eq("10", "1.0E+1"));
        assert!(eq("0.00120", "1.2e-3"));
        assert!(eq("0", "-0"));
        assert!(eq("0", "0.000e5"));
        assert!(eq("100", "100"));
        assert!(eq("-2.50", "-2.5"));
    }

    #[test]
    fn different_values() {
        assert!(!eq("10", "11"));
        assert!(!eq("10", "-10"));
        assert!(!eq("1", "10"));
        assert!(!eq("0.1", "0.01"));
        assert!(!eq("12", "1.2"));
    }

    #[test]
    fn beyond_two_to_the_53_is_exact() {
        assert!(!eq("9007199254740993", "9007199254740992"));
        assert!(eq("9007199254740993", "9007199254740993.0"));
        assert!(!eq(
            "123456789012345678901234567890",
            "123456789012345678901234567891"
        ));
        assert!(eq(
            "123456789012345678901234567890",
            "1.2345678901234567890123456789e29"
        ));
    }

    #[test]
    fn tolerance() {
        assert!(equal(num("1.0").as_str(), num("1.004").as_str(), 0.005));
        assert!(!equal(num("1.0").as_str(), num("1.006").as_str(), 0.005));
    }

    #[test]
    fn equal_numbers_hash_alike() {
        use std::collections::hash_map::DefaultHasher;
        let h = |s: &str| {
            let mut st = DefaultHasher::new();
            hash(num(s).as_str(), &mut st);
            st.finish()
        };
        assert_eq!(h("10"), h("1.0e1"));
        assert_ne!(h("10"), h("11"));
    }
}
