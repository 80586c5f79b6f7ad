//! Response headers compared by meaning (`[diff] headers`).
//!
//! - `content-type`: by media type and parameters: type, subtype and parameter names are
//!   case-insensitive, a quoted parameter value equals the unquoted one, the `charset` value is
//!   case-insensitive, parameters compare in any order, and `charset=utf-8` on JSON
//!   (`application/json`, `*/*+json`) is the default RFC 8259 gives it, so
//!   `application/json` equals `application/json; charset=UTF-8`;
//! - every other header: its values as sent, several joined by `, ` (names are case-insensitive
//!   already), with the spaces around each value trimmed.

/// The value of header `name` as it is compared.
pub fn canonical(name: &str, value: &str) -> String {
    if name.eq_ignore_ascii_case("content-type") {
        media_type(value)
    } else {
        value.trim().to_owned()
    }
}

/// A `Content-Type` value in canonical form: `type/subtype; name=value` with the parameters
/// sorted by name, lower case where the value is case-insensitive, quotes removed, and the
/// default `charset=utf-8` of JSON left out. A value that does not parse is kept as it is,
/// trimmed.
pub fn media_type(value: &str) -> String {
    let mut parts = split_params(value);
    let essence = parts.remove(0).trim().to_ascii_lowercase();
    if !essence.contains('/') {
        return value.trim().to_owned();
    }
    let json = essence == "application/json" || essence.ends_with("+json");
    let mut params: Vec<(String, String)> = parts
        .iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let mut v = unquote(v.trim());
            if k == "charset" {
                v = v.to_ascii_lowercase();
            }
            (!k.is_empty()).then_some((k, v))
        })
        .filter(|(k, v)| !(json && k == "charset" && (v == "utf-8" || v == "utf8")))
        .collect();
    params.sort();
    params.dedup();
    let mut out = essence;
    for (k, v) in params {
        out.push_str("; ");
        out.push_str(&k);
        out.push('=');
        out.push_str(&v);
    }
    out
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// A quoted-string's content (backslash escapes removed); anything else as it is.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_and_without_its_default_charset_are_equal() {
        let same = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            " application/json ; CHARSET=utf8 ",
        ];
        for v in same {
            assert_eq!(media_type(v), "application/json", "{v}");
        }
        assert_eq!(
            media_type("application/vnd.api+json; charset=utf-8"),
            "application/vnd.api+json"
        );
        // Another charset is a difference; so is another type.
        assert_eq!(
            media_type("application/json; charset=ISO-8859-1"),
            "application/json; charset=iso-8859-1"
        );
        assert_ne!(media_type("text/json"), media_type("application/json"));
        // Text keeps its charset: utf-8 is not its default.
        assert_eq!(
            media_type("text/html; charset=UTF-8"),
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn parameters_in_any_order_and_quoting() {
        // A quoted `;` stays inside its value.
        assert_eq!(
            media_type("multipart/form-data; boundary=\"a;b\"; charset=UTF-8"),
            "multipart/form-data; boundary=a;b; charset=utf-8"
        );
        assert_eq!(
            media_type("text/plain; b=2; a=1"),
            media_type("text/plain; a=1; b=2")
        );
        // What does not parse stays as it is.
        assert_eq!(media_type("garbage"), "garbage");
        assert_eq!(canonical("x-request-kind", "  a, b "), "a, b");
    }
}
