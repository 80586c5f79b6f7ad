//! Secrets in text shown to people: the one place that decides what of a URL may be printed.
//!
//! `check`, `webhook test`, the store's name in logs and every error the binary prints go through
//! here: a URL's user-info password and the values of its secret-looking query parameters
//! (`password`, `token`, `api_key`, `sig`, ...) become `***`. Works on `&str` at ASCII
//! delimiters only, so it never splits a character and never panics.

/// What a masked secret is shown as.
pub const MASK: &str = "***";

/// Whether a query parameter's name says its value is a credential.
fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "auth",
        "sig",
        "credential",
        "session",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// `url` with the password of its user info and the values of secret query parameters replaced
/// by [`MASK`]; the user name, host, path and other parameters stay (they say which endpoint).
pub fn url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    // (A `#` does not end the user info here: a password holding one, unencoded, stays masked.)
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match (scheme, authority.rfind('@')) {
        (Some(_), Some(at)) => {
            let (info, host) = authority.split_at(at);
            match info.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}{host}"),
                None => authority.to_owned(),
            }
        }
        _ => authority.to_owned(),
    };
    let (tail, fragment) = match tail.split_once('#') {
        Some((t, f)) => (t, Some(f)),
        None => (tail, None),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&authority);
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&query_masked(query));
        }
        None => out.push_str(tail),
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&query_masked(f));
    }
    out
}

fn query_masked(query: &str) -> String {
    query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if secret_param(k) => format!("{k}={MASK}"),
            _ => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether `c` may be part of a URL's scheme.
fn scheme_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
}

/// Whether `c` ends a URL written inside prose, an error message or a TOML snippet.
fn url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '|' | '\\' | ')' | ']')
}

/// `text` with every URL in it (anything `scheme://...` up to a space or a quote) passed through
/// [`url`]: for error messages and snippets that quote a config line.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let bytes = rest.as_bytes();
        let mut start = i;
        while start > 0 && scheme_char(bytes[start - 1]) {
            start -= 1;
        }
        let end = rest[i + 3..]
            .find(url_end)
            .map_or(rest.len(), |e| i + 3 + e);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_masked() {
        let cases = [
            (
                "postgres://app:s3cr%40t@db.example:5432/shadow?sslmode=require",
                "postgres://app:***@db.example:5432/shadow?sslmode=require",
            ),
            (
                "postgresql://app@db/shadow?password=hunter2&sslmode=verify-full",
                "postgresql://app@db/shadow?password=***&sslmode=verify-full",
            ),
            (
                "https://h:whpass@127.0.0.1:9/hook?token=QT&x=1#sig=abc",
                "https://h:***@127.0.0.1:9/hook?token=***&x=1#sig=***",
            ),
            (
                "https://api.example/v1?api_key=K&page=2",
                "https://api.example/v1?api_key=***&page=2",
            ),
            ("POSTGRES://u:p@h", "POSTGRES://u:***@h"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://a:b:c@h:1/d", "postgres://a:***@h:1/d"),
            ("https://user@h/x", "https://user@h/x"),
            ("/path/only?token=x", "/path/only?token=***"),
        ];
        for (given, shown) in cases {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn urls_inside_text_are_masked() {
        let t = "4 | base_url = \"https://user:hunter2@legacy.example/v1?api_key=S\"\n\
                 URL \"https://user:hunter2@legacy.example/v1\" must not have a query; \
                 see http://x:y@z.";
        let m = text(t);
        assert!(!m.contains("hunter2") && !m.contains("api_key=S") && !m.contains(":y@"));
        assert!(m.contains("https://user:***@legacy.example/v1?api_key=***\""));
        assert_eq!(text("no url here: a://"), "no url here: a://");
        assert_eq!(text("é://é:é@é"), "é://é:***@é");
    }

    proptest::proptest! {
        #[test]
        fn masking_never_panics_and_never_shows_the_password(
            user in "[a-zé]{1,8}",
            pass in "\\PC{1,12}",
            rest in "\\PC{0,20}",
            noise in "\\PC{0,20}",
        ) {
            let pass = pass.replace(['@', '/', '?', ':', '#', '*'], "x");
            let given = format!("postgres://{user}:{pass}@host/{rest}");
            let shown = url(&given);
            proptest::prop_assert!(shown.starts_with(&format!("postgres://{user}:***@host/")), "{}", shown);
            let word: String = pass.chars().filter(|c| !url_end(*c)).collect();
            let word = if word.is_empty() { "p".to_owned() } else { word };
            let in_text = text(&format!("{noise} https://{user}:{word}@h/ {noise}"));
            proptest::prop_assert!(in_text.contains(&format!("https://{user}:***@h/")), "{}", in_text);
            let _ = (url(&rest), text(&rest), text(&noise));
        }
    }
}
