//! Checks of the config text that report every finding at once, with its line: the glob
//! patterns (which the typed parse would stop at, one at a time), and credentials left at a
//! `${VAR:-default}` placeholder because the variable is not set (a warning: the default may be
//! meant, but a token of `changeme` in production rarely is).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The glob-valued keys, read leniently with their places in the text.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Doc {
    diff: Diff,
    store: Store,
    routes: Vec<Route>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Diff {
    ignore: Vec<Spanned<String>>,
    unordered: Vec<Spanned<String>>,
    normalize: Vec<Normalize>,
    array_keys: BTreeMap<String, toml::Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Normalize {
    fields: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Store {
    redact_fields: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Route {
    diff: Diff,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].lines().count().max(1)
}

/// Every invalid glob of the text, as `line N: KEY: reason` (none when the text is not TOML
/// or its shape is not the config's: the typed parse reports that).
pub(super) fn glob_problems(text: &str) -> Vec<String> {
    let Ok(doc) = toml::from_str::<Doc>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut check = |table: &str, key: &str, globs: &[Spanned<String>]| {
        for g in globs {
            if let Err(e) = crate::diff::Glob::new(g.get_ref()) {
                out.push(format!(
                    "line {}: {table} {key}: {e}",
                    line_of(text, g.span().start)
                ));
            }
        }
    };
    let mut diff = |table: &str, d: &Diff| {
        check(table, "ignore", &d.ignore);
        check(table, "unordered", &d.unordered);
        for n in &d.normalize {
            check(table, "normalize.fields", &n.fields);
        }
        // Array-key patterns are keys: no place of their own, the table's is given by resolve.
        let _ = &d.array_keys;
    };
    diff("[diff]", &doc.diff);
    for r in &doc.routes {
        diff("[routes.diff]", &r.diff);
    }
    check("[store]", "redact_fields", &doc.store.redact_fields);
    out
}

/// Whether a key holds a credential: a token, secret, password or API key, an
/// `Authorization` header.
fn credential_key(table: &str, key: &str) -> bool {
    let k = key.trim_matches('"').to_ascii_lowercase();
    let in_headers = table.ends_with(".headers");
    k == "token"
        || k == "secret"
        || k.contains("password")
        || k.ends_with("_token")
        || k.ends_with("_secret")
        || (in_headers && (k.contains("auth") || k.contains("key") || k.contains("token")))
}

/// Credentials the text leaves at a `${VAR:-default}` default because `VAR` is not set (or is
/// empty), as `line N: [table] key: ...` warnings; also a database URL whose password is such a
/// default.
pub fn placeholder_warnings(text: &str, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let inner = &after[..end];
            if let Some((name, default)) = inner.split_once(":-") {
                let unset = env(name).is_none_or(|v| v.is_empty());
                let in_userinfo =
                    key == "url" && value[..value.find('@').unwrap_or(0)].contains(inner);
                if unset && (credential_key(&table, key) || in_userinfo) {
                    out.push(format!(
                        "line {}: [{table}] {key}: ${{{name}}} is not set, so the credential is the placeholder default {default:?}",
                        i + 1
                    ));
                }
            }
            rest = &after[end + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_glob_with_its_line() {
        let text = "[diff]\nignore = [\"/ok\", \"a\"]\nunordered = [\"x/y\"]\n[store]\nredact_fields = [\"/ssn\", \"no/slash\"]\n";
        let p = glob_problems(text);
        assert!(p.iter().all(|m| m.starts_with("line ")), "{p:?}");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("line 2: [diff] ignore:"), "{p:?}");
        assert!(glob_problems("not toml = [").is_empty());
        // Arbitrary text: no panic.
        for t in [
            "[diff]\nignore = 3",
            "\u{0}",
            "[[routes]]\ndiff = 1",
            "ignore = [\"é\"]",
        ] {
            let _ = glob_problems(t);
        }
    }

    #[test]
    fn credentials_left_at_a_placeholder() {
        let env = |n: &str| (n == "SET").then(|| "v".to_owned());
        let text = "[admin]\ntoken = \"${ADMIN_TOKEN:-changeme}\"\n[candidate.headers]\nAuthorization = \"Bearer ${KEY:-x}\"\nX-Trace = \"${TRACE:-on}\"\n[store]\nurl = \"postgres://u:${PW:-pw}@db/x\"\n[[webhooks]]\nsecret = \"${SET:-default-secret-value}\"\n";
        let w = placeholder_warnings(text, env);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("line 2: [admin] token: ${ADMIN_TOKEN} is not set"));
        assert!(w[1].contains("Authorization"));
        assert!(w[2].contains("[store] url"));
        for t in [
            "x = \"${\"",
            "token = \"${:-}\"",
            "é = ${é:-ß}",
            "[",
            "=\u{0}",
        ] {
            let _ = placeholder_warnings(t, env);
        }
    }
}
