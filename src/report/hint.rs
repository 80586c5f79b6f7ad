//! The likely fix of a systematic difference, read off its example: a static report cannot
//! re-run mappings (`shadowdiff suggest` does, and checks its proposals by re-diffing recorded
//! traffic), but the shape of the values usually says what kind of change closes the gap.

use serde_json::Value;

/// What most likely closes a systematic difference of `kind` whose example is
/// (`legacy`, `candidate`), seen in `differing` of the `present` compared exchanges where the
/// field was present. `None` when the example says nothing certain.
pub fn likely_fix(
    kind: &str,
    legacy: &Value,
    candidate: &Value,
    differing: u64,
    present: u64,
) -> Option<String> {
    match (kind, legacy, candidate) {
        ("missing", _, _) if differing >= present && present > 0 => Some(
            "the candidate never returns this field where legacy has it: a gap to report to the vendor, or a mapping reading the wrong path".into(),
        ),
        ("missing", _, _) => Some(
            "the mapping leaves this field out in some answers: a mapping line (the candidate may name it differently)".into(),
        ),
        ("extra", _, _) => Some(
            "legacy never sends this field: drop it in the mapping, or ignore it ([diff] ignore)".into(),
        ),
        ("changed", Value::String(l), Value::String(c)) => string_fix(l, c),
        ("type_changed", Value::Number(n), Value::String(c)) => {
            number_matches(n, c).then(|| "a number the candidate sends as a string: $number(…) in the mapping (jq: tonumber)".into())
        }
        ("type_changed", Value::String(l), Value::Number(n)) => {
            number_matches(n, l).then(|| "a string the candidate sends as a number: $string(…) in the mapping (jq: tostring)".into())
        }
        ("type_changed", Value::Bool(b), Value::String(c)) if c.eq_ignore_ascii_case(&b.to_string()) => {
            Some("a boolean the candidate sends as a string: compare it to \"true\" in the mapping".into())
        }
        ("changed" | "type_changed", _, _) => Some(
            "values differ every time: a mapping line (a lookup of the candidate's values, or another path)".into(),
        ),
        _ => None,
    }
}

fn string_fix(l: &str, c: &str) -> Option<String> {
    if l.to_lowercase() == c.to_lowercase() {
        let which = if l == l.to_lowercase() {
            "$lowercase(…) (jq: ascii_downcase)"
        } else if l == l.to_uppercase() {
            "$uppercase(…) (jq: ascii_upcase)"
        } else {
            "a case-insensitive normalize rule"
        };
        return Some(format!("only the case differs: {which} in the mapping"));
    }
    if l.trim() == c.trim() {
        return Some("only surrounding whitespace differs: $trim(…) in the mapping, or a trim normalize rule".into());
    }
    if crate::diff::is_date_with_time(l, c) {
        return Some("the same date with a time: $substring(…, 0, 10) in the mapping (jq: .[0:10]), or a datetime normalize rule".into());
    }
    if let (Ok(a), Ok(b)) = (l.parse::<jiff::Timestamp>(), c.parse::<jiff::Timestamp>()) {
        if a == b {
            return Some("the same instant written another way: a timestamp normalize rule".into());
        }
    }
    Some("values differ every time: a mapping line (a lookup of the candidate's values, or another path)".into())
}

fn number_matches(n: &serde_json::Number, s: &str) -> bool {
    s.trim().parse::<f64>().ok() == n.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_example() {
        let f = |k, l: Value, c: Value, d, p| likely_fix(k, &l, &c, d, p).unwrap_or_default();
        assert!(f("missing", json!("x"), Value::Null, 5, 5).contains("never returns"));
        assert!(f("missing", json!("x"), Value::Null, 3, 5).contains("leaves this field out"));
        assert!(f("changed", json!("full_time"), json!("FULL_TIME"), 5, 5).contains("$lowercase"));
        assert!(f(
            "changed",
            json!("2015-01-10"),
            json!("2015-01-10T00:00:00Z"),
            5,
            5
        )
        .contains("$substring"));
        assert!(f("changed", json!("A"), json!("a"), 5, 5).contains("$uppercase"));
        assert!(f("changed", json!("a "), json!("a"), 5, 5).contains("whitespace"));
        assert!(f(
            "changed",
            json!("2026-01-01T00:00:00Z"),
            json!("2026-01-01T01:00:00+01:00"),
            5,
            5
        )
        .contains("instant"));
        assert!(f("type_changed", json!(42), json!("42"), 5, 5).contains("$number"));
        assert!(f("type_changed", json!("42"), json!(42), 5, 5).contains("$string"));
        assert!(f("changed", json!("a"), json!("b"), 5, 5).contains("mapping line"));
        // Hostile values: no panic, something said or nothing.
        for s in ["İ", "ß", "\u{0}", "ﬃ", "1e999"] {
            let _ = likely_fix("changed", &json!(s), &json!(s.to_uppercase()), 1, 1);
            let _ = likely_fix("type_changed", &json!(1), &json!(s), 1, 1);
        }
    }
}
