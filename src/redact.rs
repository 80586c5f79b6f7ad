//! Redaction: secrets and configured fields are replaced before anything is stored or reported.
//!
//! `redact_fields` globs select JSON fields (a selected node is replaced whole, whatever is
//! beneath it); `redact_headers` select response headers. The replacement is the JSON string
//! `"[redacted]"`.

use std::collections::HashSet;

use serde_json::Value;

use crate::diff::{GlobSet, Seg};

pub const REDACTED: &str = "[redacted]";

/// Redacts a JSON value that sits at `pointer` in its document.
pub fn redact_at(pointer: &str, value: &mut Value, fields: &GlobSet) {
    if fields.is_empty() {
        return;
    }
    let tokens = parse_pointer(pointer);
    let mut path: Vec<Seg<'_>> = tokens.iter().map(|t| Seg::Key(t)).collect();
    if fields.matches_prefix(&path) {
        *value = Value::String(REDACTED.to_owned());
        return;
    }
    walk(value, fields, &mut path);
}

/// Redacts a whole document.
pub fn redact_document(value: &mut Value, fields: &GlobSet) {
    redact_at("", value, fields);
}

/// [`redact_document`], returning the texts of the scalar values it replaced (strings, and
/// numbers as written), for [`redact_values`].
pub fn redact_collecting(value: &mut Value, fields: &GlobSet) -> HashSet<String> {
    let mut taken = HashSet::new();
    if fields.is_empty() {
        return taken;
    }
    if fields.matches_prefix(&[]) {
        collect(value, &mut taken);
        *value = Value::String(REDACTED.to_owned());
        return taken;
    }
    walk_into(value, fields, &mut Vec::new(), &mut Some(&mut taken));
    taken
}

/// Shortest value text [`redact_values`] replaces: shorter ones (`"US"`, `1`) are too common to
/// be anybody's personal data, and replacing them would change unrelated fields.
pub const MIN_VALUE_LEN: usize = 4;

/// Replaces every scalar of `doc` whose text is one of `values` (at least [`MIN_VALUE_LEN`]
/// characters): the candidate's document as it came names its fields its own way
/// (`date_of_birth` for legacy's `dob`), so the values redacted in the mapped document are
/// looked for wherever they are in the unmapped one. A mapping may also have formatted the
/// value (`512346100` → `512-34-6100`), or the vendor may quote it in a longer text
/// (`"SSN: 512-34-6100."`), write it as a float (`512346100.0`), in fullwidth digits, or
/// without a leading zero: a scalar whose letters and digits ([`squash`]) contain those of a
/// redacted value of [`MIN_SQUASHED_LEN`] or more goes too (over-redacting is the safe side).
pub fn redact_values(doc: &mut Value, values: &HashSet<String>) {
    if values.is_empty() {
        return;
    }
    let mut squashed: Vec<String> = values
        .iter()
        .map(|v| squash(v))
        .filter(|v| v.chars().count() >= MIN_SQUASHED_LEN)
        .collect();
    // Without its leading zeros too: a number drops them.
    let unpadded: Vec<String> = squashed
        .iter()
        .map(|v| v.trim_start_matches('0').to_owned())
        .filter(|v| v.chars().count() >= MIN_SQUASHED_LEN)
        .collect();
    squashed.extend(unpadded);
    squashed.sort();
    squashed.dedup();
    replace_values(doc, values, &squashed);
}

/// Shortest redacted value (letters and digits) looked for inside other values: shorter ones
/// (a year, a zip code) occur in unrelated text too often.
pub const MIN_SQUASHED_LEN: usize = 6;

/// A value's letters and digits, lower-cased, fullwidth digits and letters read as ASCII:
/// what survives a reformatting (separators, spaces, case). A number written as a float
/// with nothing after the point (`512346100.0`, `5.123461e8`) is read as the integer.
pub fn squash(s: &str) -> String {
    let integral = s
        .parse::<f64>()
        .ok()
        .filter(|f| {
            f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 && s.contains(['.', 'e', 'E'])
        })
        .map(|f| format!("{}", f as i64));
    integral
        .as_deref()
        .unwrap_or(s)
        .chars()
        .map(|c| match c {
            // Fullwidth forms (U+FF10-FF19, FF21-FF3A, FF41-FF5A) as their ASCII letters.
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            c => c,
        })
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn replace_values(doc: &mut Value, values: &HashSet<String>, squashed: &[String]) {
    let hit = |t: &str| {
        if t.chars().count() < MIN_VALUE_LEN {
            return false;
        }
        if values.contains(t) {
            return true;
        }
        let s = squash(t);
        squashed.iter().any(|v| s.contains(v.as_str()))
    };
    match doc {
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| replace_values(v, values, squashed)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_values(v, values, squashed)),
        Value::String(s) if hit(s) => *doc = Value::String(REDACTED.to_owned()),
        Value::Number(n) if hit(&n.to_string()) => *doc = Value::String(REDACTED.to_owned()),
        _ => {}
    }
}

fn collect(value: &Value, out: &mut HashSet<String>) {
    match value {
        Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        _ => {}
    }
}

fn walk<'a>(value: &'a mut Value, fields: &GlobSet, path: &mut Vec<Seg<'a>>) {
    walk_into(value, fields, path, &mut None);
}

fn walk_into<'a>(
    value: &'a mut Value,
    fields: &GlobSet,
    path: &mut Vec<Seg<'a>>,
    taken: &mut Option<&mut HashSet<String>>,
) {
    let replace = |v: &mut Value, taken: &mut Option<&mut HashSet<String>>| {
        if let Some(t) = taken.as_deref_mut() {
            collect(v, t);
        }
        *v = Value::String(REDACTED.to_owned());
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(k));
                if fields.matches(path) {
                    replace(v, taken);
                } else {
                    walk_into(v, fields, path, taken);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                if fields.matches(path) {
                    replace(v, taken);
                } else {
                    walk_into(v, fields, path, taken);
                }
                path.pop();
            }
        }
        _ => {}
    }
}

/// Splits an RFC 6901 pointer into its unescaped tokens. Pseudo-fields (`@status`,
/// `@header/NAME`) split on `/` as well.
pub fn parse_pointer(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    let body = pointer.strip_prefix('/').unwrap_or(pointer);
    body.split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Whether a header's value must be redacted.
pub fn is_redacted_header(name: &str, redact: &[http::HeaderName]) -> bool {
    redact.iter().any(|h| h.as_str().eq_ignore_ascii_case(name))
}

/// An error message from a mapping engine with the values it quotes taken out: JSONata and jq
/// quote the document's values (`cannot index "123-45-6789" with "b"`), which field redaction
/// cannot reach; so do Rust's panic messages (`` of `12:0é` ``). Quoted text (`"…"`, `'…'`,
/// `` `…` ``) becomes `"…"` and runs of three or more digits `#`; the words and error codes
/// (`D3030`) stay.
pub fn scrub_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars().peekable();
    let mut prev_alnum = false;
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // Up to the matching quote (or the end), backslash escapes included.
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
            prev_alnum = false;
        } else if c.is_ascii_digit() && !prev_alnum {
            let mut run = String::from(c);
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                run.push(d);
                chars.next();
            }
            out.push_str(if run.len() >= 3 { "#" } else { &run });
            prev_alnum = true;
        } else {
            out.push(c);
            prev_alnum = c.is_alphanumeric();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_redacted_in_a_mapped_document_are_found_in_the_document_it_came_from() {
        let fields = GlobSet::new(&["**/ssn", "/dob"]).unwrap();
        let mut mapped = serde_json::json!({
            "ssn": "123-45-6789", "dob": "1990-01-02", "name": "Ada",
            "kids": [{"ssn": 987654321}]
        });
        let taken = redact_collecting(&mut mapped, &fields);
        assert_eq!(mapped["ssn"], REDACTED);
        assert_eq!(mapped["kids"][0]["ssn"], REDACTED);
        assert_eq!(mapped["name"], "Ada");
        let mut raw = serde_json::json!({
            "national_id": "123-45-6789", "date_of_birth": "1990-01-02", "given_name": "Ada",
            "children": [{"tax_id": 987654321}], "count": 1
        });
        redact_values(&mut raw, &taken);
        assert_eq!(
            raw,
            serde_json::json!({
                "national_id": REDACTED, "date_of_birth": REDACTED, "given_name": "Ada",
                "children": [{"tax_id": REDACTED}], "count": 1
            })
        );
        // Short values are too common to be anybody's: left alone.
        let mut short = serde_json::json!({"ssn": "US", "n": 12});
        let taken = redact_collecting(&mut short, &fields);
        let mut other = serde_json::json!({"country": "US", "n": 12});
        redact_values(&mut other, &taken);
        assert_eq!(other["country"], "US");
        // Formatted by the mapping: the raw value has other separators, or none, or another case.
        let mut mapped = serde_json::json!({"ssn": "512-34-6100", "phone": "+1 (555) 010-9999"});
        let taken = redact_collecting(&mut mapped, &set(&["**/ssn", "**/phone"]));
        let mut raw = serde_json::json!({
            "tax_id": "512346100", "n": 512346100, "p": "15550109999", "other": "512-34-6101",
            "f": 512346100.0, "note": "SSN: 512-34-6100.", "fw": "５１２３４６１００", "year": 2024
        });
        redact_values(&mut raw, &taken);
        assert_eq!(
            raw,
            serde_json::json!({
                "tax_id": REDACTED, "n": REDACTED, "p": REDACTED, "other": "512-34-6101",
                "f": REDACTED, "note": REDACTED, "fw": REDACTED, "year": 2024
            })
        );
        // A leading zero a number drops.
        let mut mapped = serde_json::json!({"ssn": "012-34-5678"});
        let taken = redact_collecting(&mut mapped, &set(&["**/ssn"]));
        let mut raw = serde_json::json!({"tax_id": 12345678, "s": "012345678"});
        redact_values(&mut raw, &taken);
        assert_eq!(raw, serde_json::json!({"tax_id": REDACTED, "s": REDACTED}));
    }

    #[test]
    fn engine_messages_lose_the_values_they_quote() {
        assert_eq!(
            scrub_message(r#"jq: cannot index "SSN-123-45-6789" with "b""#),
            r#"jq: cannot index "…" with "…""#
        );
        assert_eq!(
            scrub_message("jsonata: D3030: Cannot convert 'Ann \\'A\\' Smith' to number"),
            "jsonata: D3030: Cannot convert '…' to number"
        );
        assert_eq!(
            scrub_message("cannot use 123456789 (number) as key at 12"),
            "cannot use # (number) as key at 12"
        );
        assert_eq!(scrub_message("unterminated \"é"), "unterminated \"…\"");
        assert_eq!(
            scrub_message(
                "byte index 5 is not a char boundary; it is inside 'é' (bytes 4..6) of `12:0é`"
            ),
            "byte index 5 is not a char boundary; it is inside '…' (bytes 4..6) of `…`"
        );
    }
    use serde_json::json;

    fn set(g: &[&str]) -> GlobSet {
        GlobSet::new(g).unwrap()
    }

    #[test]
    fn documents() {
        let mut v = json!({"people": [{"ssn": "123", "name": "a", "dob": {"y": 1}}], "ssn": 1});
        redact_document(&mut v, &set(&["**/ssn", "/people/*/dob"]));
        assert_eq!(
            v,
            json!({"people": [{"ssn": "[redacted]", "name": "a", "dob": "[redacted]"}], "ssn": "[redacted]"})
        );
    }

    #[test]
    fn values_at_a_pointer() {
        let mut v = json!({"ssn": "1", "x": 2});
        redact_at("/people/3", &mut v, &set(&["**/ssn"]));
        assert_eq!(v, json!({"ssn": "[redacted]", "x": 2}));
        let mut s = json!("123-45");
        redact_at("/people/3/ssn", &mut s, &set(&["**/ssn"]));
        assert_eq!(s, json!("[redacted]"));
        let mut deep = json!("x");
        redact_at("/secret/a/b", &mut deep, &set(&["/secret"]));
        assert_eq!(deep, json!("[redacted]"));
    }

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer("/a~1b/0/c~0"), vec!["a/b", "0", "c~"]);
        assert!(parse_pointer("").is_empty());
        assert_eq!(parse_pointer("@header/etag"), vec!["@header", "etag"]);
    }
}
