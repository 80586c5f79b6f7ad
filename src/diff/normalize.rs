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

use std::time::SystemTime;

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
    /// The rule's name in the config (`with = [...]`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lowercase => "lowercase",
            Self::Trim => "trim",
            Self::NumberFromString => "number_from_string",
            Self::Datetime => "datetime",
            Self::EmptyAsNull => "empty_as_null",
            Self::Sort => "sort",
        }
    }

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

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (outside the years
/// -9999..=9999, which no parsed value reaches, the number itself).
pub fn format_millis(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => format!(
            "{}.{:03}Z",
            t.strftime("%Y-%m-%dT%H:%M:%S"),
            ms.rem_euclid(1000)
        ),
        Err(_) => ms.to_string(),
    }
}

/// Parses a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 / ISO 8601 date-time with jiff:
/// with an offset (`Z`, `+02:00`, `+0200`) it is that instant; without one it is UTC. A date
/// that does not exist (`2026-02-31`), an offset past ±23:59 or trailing text is `None`; a leap
/// second (`:60`) reads as `:59`, as jiff reads it.
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    // jiff also reads forms this rule does not promise (`[zone]` annotations, basic format
    // `20260101`): the text must start as a calendar date does.
    let b = s.as_bytes();
    let dated = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && !s.contains('[');
    if !dated {
        return None;
    }
    let time = s.get(10..).unwrap_or("");
    // jiff reads offsets up to ±25:59 (as Temporal does); RFC 3339's stop at ±23:59.
    if let Some(i) = time.rfind(['+', '-']).filter(|&i| i > 0) {
        let hours = time.get(i + 1..i + 3).and_then(|h| h.parse::<u8>().ok());
        if hours.is_none_or(|h| h > 23) {
            return None;
        }
    }
    // RFC 3339 allows any number of fraction digits, jiff nine: the rest cannot matter.
    let trimmed;
    let s = match time.find('.') {
        Some(dot) => {
            let digits = time[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits > 9 {
                let at = 10 + dot + 1;
                trimmed = format!("{}{}", &s[..at + 9], &s[at + digits..]);
                trimmed.as_str()
            } else {
                s
            }
        }
        None => s,
    };
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(SystemTime::from(t));
    }
    // Without an offset: UTC. (A civil parse would accept and drop an offset jiff refused as
    // an instant: only text without one gets here.)
    if time.contains(['Z', 'z', '+']) || time.get(1..).is_some_and(|t| t.contains('-')) {
        return None;
    }
    let dt = s
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| {
            s.parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .ok()?;
    let t = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(SystemTime::from(t))
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
