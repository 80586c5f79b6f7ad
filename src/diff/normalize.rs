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
//! itself, before its elements are compared). With `sort`, pointers into that array name positions
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
    for (globs, norms) in rules {
        if globs.matches(&segs) {
            for n in norms {
                rewrite(v, *n);
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
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86400;
    let mut nanos = 0u32;
    let mut rest = &s[10..];
    if !rest.is_empty() {
        let sep = rest.as_bytes()[0];
        if sep != b'T' && sep != b't' && sep != b' ' {
            return None;
        }
        rest = &rest[1..];
        let rb = rest.as_bytes();
        if rb.len() < 5 || rb[2] != b':' {
            return None;
        }
        let h: i64 = rest[0..2].parse().ok()?;
        let mi: i64 = rest[3..5].parse().ok()?;
        let mut sec = 0i64;
        rest = &rest[5..];
        if rest.starts_with(':') {
            sec = rest.get(1..3)?.parse().ok()?;
            rest = &rest[3..];
            if let Some(frac) = rest.strip_prefix('.') {
                let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return None;
                }
                let f = &frac[..digits.min(9)];
                nanos = f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32);
                rest = &frac[digits..];
            }
        }
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + sec;
        match rest {
            "" | "Z" | "z" => {}
            off => {
                let sign = match off.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let o = off[1..].replace(':', "");
                if o.len() != 4 {
                    return None;
                }
                let (oh, om): (i64, i64) = (o[0..2].parse().ok()?, o[2..4].parse().ok()?);
                secs -= sign * (oh * 3600 + om * 60);
            }
        }
    }
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nanos)
    };
    Some(t)
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
    }

    #[test]
    fn rule_names() {
        assert_eq!(Norm::parse("datetime"), Ok(Norm::Datetime));
        assert!(Norm::parse("uppercase").unwrap_err().contains("lowercase"));
    }
}
