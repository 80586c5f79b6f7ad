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
    let n = percent_encoding::percent_decode_str(&n)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
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
        "jwt",
        "code",
        "assertion",
        "bearer",
        "sid",
        "ticket",
        "hmac",
        "pw",
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
    // The user info ends at the last `@` before the path: a password holding `?`, `#`, `:` or
    // `@` unencoded (a careless config) stays masked whole.
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (info, host) = authority.split_at(at);
            match info.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}{}", masked_query_in(host)),
                None => format!("{info}{}", masked_query_in(host)),
            }
        }
        None => masked_query_in(authority),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&authority);
    out.push_str(&masked_query_in(tail));
    out
}

/// `s` with the values of secret parameters after its first `?` (and its `#`) masked.
fn masked_query_in(s: &str) -> String {
    let (before, fragment) = match s.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (s, None),
    };
    let mut out = match before.split_once('?') {
        Some((path, query)) => format!("{path}?{}", query_masked(query)),
        None => before.to_owned(),
    };
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&query_masked(f));
    }
    out
}

fn query_masked(query: &str) -> String {
    // `&` and `;` both separate parameters (some servers take either).
    let mut out = String::with_capacity(query.len());
    for p in query.split_inclusive(['&', ';']) {
        let (p, sep) = match p.strip_suffix(['&', ';']) {
            Some(rest) => (rest, &p[rest.len()..]),
            None => (p, ""),
        };
        match p.split_once('=') {
            Some((k, _)) if secret_param(k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(p),
        }
        out.push_str(sep);
    }
    out
}

/// Whether a member or parameter name says its value is a credential (`password`, `api_key`,
/// `token`, ...): the same names [`url`] masks.
pub fn secret_name(name: &str) -> bool {
    secret_param(name)
}

/// Whether `c` may be part of a URL's scheme.
fn scheme_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
}

/// Whether `c` ends a URL written inside prose, an error message or a TOML snippet. Only what
/// cannot be in a URL a careless operator typed: a password may hold `)`, `]` or `'`, and a
/// host may be `[::1]`, so masking runs on to the next space or double quote (masking a little
/// more is the safe side).
fn url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`')
}

/// `user:password@host` without a scheme (`//u:p@h`, `http:/u:p@h`, a bare `u:p@h`): the
/// word's password masked.
fn bare_userinfo(word: &str) -> Option<String> {
    let at = word.rfind('@')?;
    let (info, host) = word.split_at(at);
    let start = info.rfind(['/', '=', '(', '\'', '[']).map_or(0, |i| i + 1);
    let (lead, info) = info.split_at(start);
    let (user, _) = info.split_once(':')?;
    Some(format!("{lead}{user}:{MASK}{host}"))
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
        out.push_str(&bare_words(&rest[..start]));
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(&bare_words(rest));
    out
}

/// [`bare_userinfo`] on every word of `s` holding an `@` after a `:`.
fn bare_words(s: &str) -> String {
    if !s.contains('@') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match bare_userinfo(word) {
            Some(m) => out.push_str(&m),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in s.chars() {
        if url_end(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
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
            (
                "http://[::1]:18002/c?token=T",
                "http://[::1]:18002/c?token=***",
            ),
            ("http://u:PW?@h/c", "http://u:***@h/c"),
            ("http://u:P#W@h:1/c", "http://u:***@h:1/c"),
            (
                "http://u:P)x'@h/c?tok%65n=T&jwt=J&code=C",
                "http://u:***@h/c?tok%65n=***&jwt=***&code=***",
            ),
        ];
        for (given, shown) in cases {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn session_ids_tickets_and_semicolon_separated_parameters_are_masked() {
        assert_eq!(
            url("/people/q1?sid=S1&pw=S2&ticket=S3&a=1;api_key=S4&hmac=S5;b=2"),
            "/people/q1?sid=***&pw=***&ticket=***&a=1;api_key=***&hmac=***;b=2"
        );
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
        for bare in [
            "base_url = \"http:/u:PW@h\"",
            "\"//u:PW@h\"",
            "u:PW@h",
            "(u:PW@h)",
        ] {
            assert!(!text(bare).contains("PW"), "{bare}: {}", text(bare));
        }
        assert!(!text("URL 'http://u:P)W@[::1]:1/x' is bad").contains("P)W"));
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
