//! Equivalence rules (`normalize`): values of selected fields are rewritten on both sides before
//! the comparison, so that spellings which mean the same thing compare equal.
//!
//! | rule | effect |
//! |---|---|
//! | `lowercase` | strings lower-cased (`"ACTIVE"` ≈ `"active"`) |
//! | `trim` | leading and trailing whitespace removed from strings |
//! | `number_from_string` | a string holding a JSON number becomes that number (`"12"` ≈ `12`) |
//! | `datetime` | an RFC 3339 date-time (any offset, `T` or space) or a date becomes the UTC instant, to the millisecond |
//! | `empty_as_null` | `""` becomes `null` |
//! | `sort` | an array's elements sorted (by their JSON text, members in key order): the array compares as a set |
//!
//! Rules apply in the order written; a rule on a field applies to that node (and `sort` to the array
//! itself, once its elements are normalised, before they are compared). With `sort`, pointers into that array name positions
//! after sorting.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::glob::{GlobSet, Seg};

/// One rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Lowercase,
    Trim,
    NumberFromString,
    Datetime,
    EmptyAsNull,
    Sort,
}

impl Norm {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "lowercase" => Self::Lowercase,
            "trim" => Self::Trim,
            "number_from_string" => Self::NumberFromString,
            "datetime" => Self::Datetime,
            "empty_as_null" => Self::EmptyAsNull,
            "sort" => Self::Sort,
            other => {
                return Err(format!(
                    "unknown normalize rule {other:?} (lowercase, trim, number_from_string, datetime, empty_as_null, sort)"
                ))
            }
        })
    }
}

/// Rewrites `v` (a whole document) in place by the rules whose globs select each node.
pub fn apply(v: &mut Value, rules: &[(GlobSet, Vec<Norm>)]) {
    if rules.is_empty() {
        return;
    }
    let mut path = Vec::new();
    walk(v, rules, &mut path);
}

fn walk(v: &mut Value, rules: &[(GlobSet, Vec<Norm>)], path: &mut Vec<String>) {
    let segs: Vec<Seg<'_>> = path.iter().map(|s| Seg::Key(s)).collect();
    let mut sort = false;
    for (globs, norms) in rules {
        if globs.matches(&segs) {
            for n in norms {
                if *n == Norm::Sort {
                    sort = true;
                } else {
                    rewrite(v, *n);
                }
            }
        }
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                path.push(k.clone());
                walk(child, rules, path);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                walk(child, rules, path);
                path.pop();
            }
        }
        _ => {}
    }
    // After the elements are normalised: otherwise the order would depend on spellings that
    // the other rules make equal (`["B", "a"]` and `["b", "A"]` under `lowercase`).
    if sort {
        rewrite(v, Norm::Sort);
    }
}

fn rewrite(v: &mut Value, n: Norm) {
    match (n, &mut *v) {
        (Norm::Lowercase, Value::String(s)) => *s = s.to_lowercase(),
        (Norm::Trim, Value::String(s)) => *s = s.trim().to_owned(),
        (Norm::NumberFromString, Value::String(s)) => {
            if let Ok(num) = serde_json::from_str::<serde_json::Number>(s.trim()) {
                *v = Value::Number(num);
            }
        }
        (Norm::Datetime, Value::String(s)) => {
            if let Some(ms) = parse_datetime_ms(s) {
                *s = format_millis(ms);
            }
        }
        (Norm::EmptyAsNull, Value::String(s)) if s.is_empty() => *v = Value::Null,
        (Norm::Sort, Value::Array(items)) => items.sort_by_cached_key(super::canonical),
        _ => {}
    }
}

/// Milliseconds since 1970-01-01T00:00:00Z (negative before) of a date or date-time.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let t = parse_datetime(s)?;
    Some(match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z")
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parses `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|±HH:MM|±HHMM]` (no offset = UTC).
/// Anything else, including a date that does not exist (`2026-02-31`), is `None`.
///
/// The input is hostile (a vendor's value): it is read byte by byte and never sliced, so no
/// input can panic.
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let mut c = Cursor(s.trim().as_bytes());
    let y = c.digits(4)?;
    c.byte(b'-')?;
    let mo = c.digits(2)?;
    c.byte(b'-')?;
    let d = c.digits(2)?;
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86400;
    let mut nanos = 0u32;
    if !c.0.is_empty() {
        if !matches!(c.next()?, b'T' | b't' | b' ') {
            return None;
        }
        let h = c.digits(2)?;
        c.byte(b':')?;
        let mi = c.digits(2)?;
        let mut sec = 0;
        if c.peek() == Some(b':') {
            c.next();
            sec = c.digits(2)?;
            if c.peek() == Some(b'.') {
                c.next();
                let mut n = 0usize;
                while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                    c.next();
                    if n < 9 {
                        nanos = nanos * 10 + u32::from(b - b'0');
                    }
                    n += 1;
                }
                if n == 0 {
                    return None;
                }
                nanos *= 10u32.pow(9 - n.min(9) as u32);
            }
        }
        // 60: a leap second, as RFC 3339 allows.
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + sec;
        match c.next() {
            None | Some(b'Z' | b'z') => {}
            Some(sign @ (b'+' | b'-')) => {
                let oh = c.digits(2)?;
                if c.peek() == Some(b':') {
                    c.next();
                }
                let om = c.digits(2)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                secs -= if sign == b'+' { off } else { -off };
            }
            Some(_) => return None,
        }
        if !c.0.is_empty() {
            return None;
        }
    }
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nanos)
    };
    Some(t)
}

/// Reads ASCII structure from bytes without ever slicing a `str`.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let b = self.next().filter(u8::is_ascii_digit)?;
            v = v * 10 + i64::from(b - b'0');
        }
        Some(v)
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value, glob: &str, n: &[Norm]) -> Value {
        let mut v = v;
        apply(&mut v, &[(GlobSet::new(&[glob]).unwrap(), n.to_vec())]);
        v
    }

    #[test]
    fn each_rule() {
        assert_eq!(
            norm(json!({"s": "ACTIVE"}), "/s", &[Norm::Lowercase]),
            json!({"s": "active"})
        );
        assert_eq!(
            norm(json!({"s": "  a b "}), "/s", &[Norm::Trim]),
            json!({"s": "a b"})
        );
        assert_eq!(
            norm(json!({"n": "12"}), "/n", &[Norm::NumberFromString]),
            json!({"n": 12})
        );
        assert_eq!(
            norm(json!({"n": "12x"}), "/n", &[Norm::NumberFromString]),
            json!({"n": "12x"})
        );
        assert_eq!(
            norm(json!({"e": ""}), "/e", &[Norm::EmptyAsNull]),
            json!({"e": null})
        );
        assert_eq!(
            norm(json!({"t": ["b", "a", "c"]}), "/t", &[Norm::Sort]),
            json!({"t": ["a", "b", "c"]})
        );
        // Sorted after the elements are normalised, so both spellings sort alike.
        let both = |v: Value| {
            let mut v = v;
            apply(
                &mut v,
                &[
                    (GlobSet::new(&["/t"]).unwrap(), vec![Norm::Sort]),
                    (GlobSet::new(&["/t/*"]).unwrap(), vec![Norm::Lowercase]),
                ],
            );
            v
        };
        assert_eq!(
            both(json!({"t": ["B", "a"]})),
            both(json!({"t": ["b", "A"]}))
        );
        assert_eq!(
            norm(json!([{"s": "X"}, {"s": "Y"}]), "/*/s", &[Norm::Lowercase]),
            json!([{"s": "x"}, {"s": "y"}])
        );
        // Unselected fields stay as they are.
        assert_eq!(
            norm(json!({"s": "A", "o": "B"}), "/s", &[Norm::Lowercase]),
            json!({"s": "a", "o": "B"})
        );
    }

    #[test]
    fn datetimes_compare_as_instants() {
        let same = [
            "2026-11-28T10:00:00Z",
            "2026-11-28T11:00:00+01:00",
            "2026-11-28 05:00:00-05:00",
            "2026-11-28T10:00:00.000Z",
            "2026-11-28T10:00Z",
            "2026-11-28T12:00:00+0200",
        ];
        let canon: Vec<Value> = same
            .iter()
            .map(|s| norm(json!({"t": s}), "/t", &[Norm::Datetime]))
            .collect();
        assert!(
            canon
                .iter()
                .all(|c| c == &json!({"t": "2026-11-28T10:00:00.000Z"})),
            "{canon:?}"
        );
        assert_eq!(
            norm(json!({"t": "2026-11-28"}), "/t", &[Norm::Datetime]),
            json!({"t": "2026-11-28T00:00:00.000Z"})
        );
        assert_eq!(
            norm(json!({"t": "yesterday"}), "/t", &[Norm::Datetime]),
            json!({"t": "yesterday"})
        );
        assert_eq!(
            norm(
                json!({"t": "1969-12-31T23:59:59Z"}),
                "/t",
                &[Norm::Datetime]
            ),
            json!({"t": "1969-12-31T23:59:59.000Z"})
        );
        assert!(parse_datetime("2026-13-01").is_none());
        // Dates that do not exist are not moved to the next month.
        assert!(parse_datetime("2026-02-31").is_none());
        assert!(parse_datetime("2026-02-29").is_none());
        assert!(parse_datetime("2028-02-29").is_some());
        assert!(parse_datetime("2100-02-29").is_none());
        assert!(parse_datetime("2000-02-29").is_some());
        assert!(parse_datetime("2026-04-31").is_none());
        // Bytes past the end of a multi-byte character never panic.
        assert!(parse_datetime("2026-01-01T12:0é").is_none());
        assert!(parse_datetime("2026-01-01T12:00:0é").is_none());
        assert!(parse_datetime("2026-01-01T12:00:00+0é:00").is_none());
        assert!(parse_datetime("2026-01-01T12:00:00.é").is_none());
        assert!(parse_datetime("é026-01-01").is_none());
        assert!(parse_datetime("2026-01-01T12:00:00+25:00").is_none());
        assert!(parse_datetime("2026-01-01T12:00:00Zjunk").is_none());
        assert_eq!(
            parse_datetime_ms("2026-01-01T12:00:00.1234567891Z"),
            parse_datetime_ms("2026-01-01T12:00:00.123Z")
        );
    }

    #[test]
    fn rule_names() {
        assert_eq!(Norm::parse("datetime"), Ok(Norm::Datetime));
        assert!(Norm::parse("uppercase").unwrap_err().contains("lowercase"));
    }
}
