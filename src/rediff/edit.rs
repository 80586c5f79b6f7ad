//! Editing a mapping's source text where one output field is built: what `suggest` proposes is
//! a change to the file the team maintains, in its own language, not a new layer on top.
//!
//! A small scanner reads the object constructors of a JSONata or jq mapping: string literals,
//! comments, brackets, and the keys of each `{…}` with the span of their value expression. A
//! key's place in the output is the chain of keys of the constructors around it (arrays and
//! paths in between do not count), which is matched against a field pattern's member names.
//! The scanner never fails: an unbalanced or odd source only yields fewer keys.

use crate::mapping::Lang;

/// One key of an object constructor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The member names from the outermost constructor down to this key.
    pub path: Vec<String>,
    /// Byte span of the key itself (for a jq shorthand such as `{id}`, the whole entry).
    pub key: (usize, usize),
    /// Byte span of its value expression (empty for a jq shorthand).
    pub value: (usize, usize),
    /// A jq shorthand entry (`{id}` for `{id: .id}`).
    pub shorthand: bool,
}

/// An object constructor: where its body starts, and the member names around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub path: Vec<String>,
    /// Byte offset just after its `{`.
    pub open: usize,
}

/// Everything the scanner found.
#[derive(Debug, Default)]
pub struct Scan {
    pub keys: Vec<Key>,
    pub objects: Vec<Object>,
}

#[derive(Debug)]
struct Frame {
    /// `{`, `[` or `(`.
    open: char,
    /// The member names of the constructors around, including the key this frame is in.
    path: Vec<String>,
    /// Inside an object: the key being read (name, key span, value start).
    current: Option<(String, (usize, usize), usize)>,
    /// Inside an object: where the next key may start (after `{` or a top-level `,`).
    expect_key: bool,
}

/// Scans a mapping's source.
pub fn scan(lang: Lang, src: &str) -> Scan {
    let mut out = Scan::default();
    let bytes = src.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    // The path of the innermost frame (the keys of the constructors around a position).
    let path_here = |stack: &[Frame]| -> Vec<String> {
        match stack.last() {
            None => Vec::new(),
            Some(f) => {
                let mut p = f.path.clone();
                if let Some((k, _, _)) = &f.current {
                    p.push(k.clone());
                }
                p
            }
        }
    };
    while i < bytes.len() {
        let c = bytes[i];
        // Comments.
        if lang == Lang::Jsonata && c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i = src[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            continue;
        }
        if lang == Lang::Jq && c == b'#' {
            i = src[i..].find('\n').map_or(bytes.len(), |e| i + e + 1);
            continue;
        }
        // A string literal: maybe a key.
        if c == b'"' || (lang == Lang::Jsonata && (c == b'\'' || c == b'`')) {
            let end = string_end(bytes, i);
            let is_key = stack
                .last()
                .is_some_and(|f| f.open == '{' && f.expect_key && f.current.is_none());
            if is_key {
                let after = skip_ws(bytes, end);
                if bytes.get(after) == Some(&b':') {
                    let name = unquote(&src[i..end]);
                    let f = stack.last_mut().expect("checked");
                    f.current = Some((name, (i, end), after + 1));
                    f.expect_key = false;
                    i = after + 1;
                    continue;
                }
            }
            if let Some(f) = stack.last_mut() {
                f.expect_key = false;
            }
            i = end;
            continue;
        }
        // A jq key or shorthand: an identifier (or `$var`) where a key is expected.
        if lang == Lang::Jq
            && (c.is_ascii_alphabetic() || c == b'_' || c == b'$')
            && stack
                .last()
                .is_some_and(|f| f.open == '{' && f.expect_key && f.current.is_none())
        {
            let start = i;
            let mut end = i + 1;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let name = src[start..end].trim_start_matches('$').to_owned();
            let after = skip_ws(bytes, end);
            let f = stack.last_mut().expect("checked");
            match bytes.get(after) {
                Some(b':') => {
                    f.current = Some((name, (start, end), after + 1));
                    f.expect_key = false;
                    i = after + 1;
                }
                Some(b',' | b'}') => {
                    let mut path = f.path.clone();
                    path.push(name);
                    out.keys.push(Key {
                        path,
                        key: (start, end),
                        value: (end, end),
                        shorthand: true,
                    });
                    f.expect_key = false;
                    i = after;
                }
                _ => {
                    f.expect_key = false;
                    i = end;
                }
            }
            continue;
        }
        match c {
            b'{' | b'[' | b'(' => {
                let path = path_here(&stack);
                if c == b'{' {
                    out.objects.push(Object {
                        path: path.clone(),
                        open: i + 1,
                    });
                }
                if let Some(f) = stack.last_mut() {
                    f.expect_key = false;
                }
                stack.push(Frame {
                    open: c as char,
                    path,
                    current: None,
                    expect_key: c == b'{',
                });
            }
            b'}' | b']' | b')' => {
                if let Some(f) = stack.pop() {
                    finish(&mut out, f, i, bytes);
                }
            }
            b',' => {
                if let Some(f) = stack.last_mut() {
                    if f.open == '{' {
                        if let Some(cur) = f.current.take() {
                            push_key(&mut out, &f.path, cur, i, bytes);
                        }
                        f.expect_key = true;
                    }
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                if let Some(f) = stack.last_mut() {
                    f.expect_key = false;
                }
            }
        }
        i += 1;
    }
    // An unclosed source: the keys read so far end at the end of the text.
    while let Some(f) = stack.pop() {
        finish(&mut out, f, bytes.len(), bytes);
    }
    out.keys.sort_by_key(|k| k.key.0);
    out
}

fn finish(out: &mut Scan, mut f: Frame, end: usize, bytes: &[u8]) {
    if let Some(cur) = f.current.take() {
        push_key(out, &f.path, cur, end, bytes);
    }
}

fn push_key(
    out: &mut Scan,
    path: &[String],
    (name, key, start): (String, (usize, usize), usize),
    end: usize,
    bytes: &[u8],
) {
    let mut p = path.to_vec();
    p.push(name);
    let start = skip_ws(bytes, start).min(end);
    let mut stop = end;
    while stop > start && bytes[stop - 1].is_ascii_whitespace() {
        stop -= 1;
    }
    out.keys.push(Key {
        path: p,
        key,
        value: (start, stop),
        shorthand: false,
    });
}

/// The byte after the string literal starting at `i` (its quote), or the end of the text.
fn string_end(bytes: &[u8], i: usize) -> usize {
    let q = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if q != b'`' => j += 2,
            b if b == q => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// A quoted key's name (JSON escapes read when the literal is JSON; else the text inside).
fn unquote(lit: &str) -> String {
    if lit.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(lit) {
            return s;
        }
    }
    let inner = lit.get(1..lit.len().saturating_sub(1)).unwrap_or("");
    inner.to_owned()
}

/// The member names of a field pattern (`/employees/*/name` → `employees`, `name`): what the
/// constructors' keys are matched against.
pub fn member_names(field: &str) -> Vec<String> {
    crate::redact::parse_pointer(field)
        .into_iter()
        .filter(|t| t != "*")
        .collect()
}

/// The one key that builds `field` (`None` when none or several do).
pub fn key_for<'s>(scan: &'s Scan, field: &str) -> Option<&'s Key> {
    let names = member_names(field);
    let mut found = scan.keys.iter().filter(|k| k.path == names);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The one object constructor whose members sit at `field`'s parent (`None` when none or
/// several).
pub fn object_for<'s>(scan: &'s Scan, field: &str) -> Option<&'s Object> {
    let mut names = member_names(field);
    names.pop()?;
    let mut found = scan.objects.iter().filter(|o| o.path == names);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// `src` with `field`'s value expression replaced by `make(current expression)`; `None` when the
/// mapping has no single place for it.
pub fn replace_value(
    lang: Lang,
    src: &str,
    field: &str,
    make: impl Fn(&str) -> String,
) -> Option<String> {
    let s = scan(lang, src);
    let k = key_for(&s, field)?;
    if k.shorthand {
        // jq `{id}` is `{id: .id}`.
        let name = &src[k.key.0..k.key.1];
        let current = format!(".{}", name.trim_start_matches('$'));
        return Some(format!(
            "{}{name}: {}{}",
            &src[..k.key.0],
            make(&current),
            &src[k.key.1..]
        ));
    }
    let current = &src[k.value.0..k.value.1];
    if current.is_empty() {
        return None;
    }
    Some(format!(
        "{}{}{}",
        &src[..k.value.0],
        make(current),
        &src[k.value.1..]
    ))
}

/// `src` with a member `name: expr` added to the constructor of `field`'s parent; `None` when
/// the mapping has no single such constructor.
pub fn insert_member(lang: Lang, src: &str, field: &str, expr: &str) -> Option<String> {
    let s = scan(lang, src);
    let o = object_for(&s, field)?;
    let name = member_names(field).pop()?;
    let key = match lang {
        Lang::Jsonata => serde_json::Value::String(name).to_string(),
        Lang::Jq if is_ident(&name) => name,
        Lang::Jq => serde_json::Value::String(name).to_string(),
    };
    let rest = &src[o.open..];
    let empty = rest.trim_start().starts_with('}');
    // Indented as the constructor's first member, when it is on a line of its own.
    let indent = rest
        .strip_prefix('\n')
        .map(|r| r.chars().take_while(|c| *c == ' ').collect::<String>())
        .filter(|i| !i.is_empty());
    let member = match (&indent, empty) {
        (Some(i), false) => format!("\n{i}{key}: {expr},"),
        (None, false) => format!("{key}: {expr}, "),
        (_, true) => format!("{key}: {expr}"),
    };
    Some(format!("{}{member}{}", &src[..o.open], rest))
}

/// An array position among the names (`[0]`), as `suggest` writes one.
fn array_index(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// A path expression in the mapping's language for member names read from the context
/// (`department.name`, `.department.name`; odd names quoted).
pub fn path_expr(lang: Lang, names: &[String]) -> String {
    match lang {
        Lang::Jsonata => {
            let mut out = String::new();
            for n in names {
                if array_index(n) {
                    out.push_str(n);
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                if is_ident(n) {
                    out.push_str(n);
                } else {
                    out.push_str(&format!("`{}`", n.replace('`', "")));
                }
            }
            out
        }
        Lang::Jq => {
            let mut out = String::new();
            for n in names {
                if array_index(n) {
                    if out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(n);
                } else if is_ident(n) {
                    out.push('.');
                    out.push_str(n);
                } else {
                    if out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&format!("[{}]", serde_json::Value::String(n.clone())));
                }
            }
            if out.is_empty() {
                out.push('.');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDIVIDUAL: &str = r#"/* a comment with "subtype": x */
{
  "id": remote_id,
  "title": job_title,
  "employment": {"type": "employee", "subtype": employment_type},
  "emails": [{"data": work_email, "type": "work"}]
}
"#;

    #[test]
    fn jsonata_keys_have_their_place_in_the_output() {
        let s = scan(Lang::Jsonata, INDIVIDUAL);
        let k = key_for(&s, "/employment/subtype").unwrap();
        assert_eq!(&INDIVIDUAL[k.value.0..k.value.1], "employment_type");
        let k = key_for(&s, "/emails/*/type").unwrap();
        assert_eq!(&INDIVIDUAL[k.value.0..k.value.1], "\"work\"");
        // `type` appears twice, at two places: each is found at its own.
        let k = key_for(&s, "/employment/type").unwrap();
        assert_eq!(&INDIVIDUAL[k.value.0..k.value.1], "\"employee\"");
        assert!(key_for(&s, "/subtype").is_none());
    }

    #[test]
    fn replacing_and_inserting() {
        let out = replace_value(Lang::Jsonata, INDIVIDUAL, "/employment/subtype", |e| {
            format!("$lowercase({e})")
        })
        .unwrap();
        assert!(
            out.contains(r#""subtype": $lowercase(employment_type)}"#),
            "{out}"
        );
        let out =
            insert_member(Lang::Jsonata, INDIVIDUAL, "/department", "department.name").unwrap();
        assert!(
            out.contains("{\n  \"department\": department.name,\n  \"id\""),
            "{out}"
        );
        let dir = "{\"individuals\": [results.{\"id\": remote_id}]}";
        let out = insert_member(Lang::Jsonata, dir, "/individuals/*/title", "job_title").unwrap();
        assert_eq!(
            out,
            "{\"individuals\": [results.{\"title\": job_title, \"id\": remote_id}]}"
        );
        crate::mapping::compile(Lang::Jsonata, &out).unwrap();
    }

    #[test]
    fn jq_keys_shorthands_and_comments() {
        let src = "# {ein: x}\n{id: .remote_id, legal_name, ein: .eins[0], locations: [.locations[] | {city, country}]}";
        let s = scan(Lang::Jq, src);
        let k = key_for(&s, "/ein").unwrap();
        assert_eq!(&src[k.value.0..k.value.1], ".eins[0]");
        let out = replace_value(Lang::Jq, src, "/legal_name", |e| {
            format!("({e} | ascii_upcase)")
        })
        .unwrap();
        assert!(
            out.contains("legal_name: (.legal_name | ascii_upcase),"),
            "{out}"
        );
        crate::mapping::compile(Lang::Jq, &out).unwrap();
        let out = insert_member(Lang::Jq, src, "/locations/*/zip", ".zip_code").unwrap();
        assert!(out.contains("{zip: .zip_code, city, country}"), "{out}");
        crate::mapping::compile(Lang::Jq, &out).unwrap();
    }

    #[test]
    fn paths_in_each_language() {
        let n = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(path_expr(Lang::Jsonata, &n(&["a", "b c"])), "a.`b c`");
        assert_eq!(path_expr(Lang::Jq, &n(&["a", "b c"])), ".a[\"b c\"]");
        assert_eq!(path_expr(Lang::Jq, &n(&["b c"])), ".[\"b c\"]");
        assert_eq!(
            path_expr(Lang::Jsonata, &n(&["emails", "[0]", "value"])),
            "emails[0].value"
        );
        assert_eq!(
            path_expr(Lang::Jq, &n(&["emails", "[0]", "value"])),
            ".emails[0].value"
        );
    }
}
