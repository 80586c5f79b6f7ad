//! Field globs: JSON Pointers whose segments may be `*` (exactly one segment) or `**` (any number of
//! segments, including none). They select fields for the diff rules (`ignore`, `array_keys`,
//! `unordered`) and for redaction.
//!
//! Besides body pointers (`/individuals/*/ssn`, `**/updated_at`) a glob may name the pseudo-fields of
//! the response head: `@status` and `@header/NAME`.

use std::fmt;

/// One step of a path through a JSON document: an object member or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// A literal segment; `index` is set when the literal is also a valid array index.
    Lit {
        text: String,
        index: Option<usize>,
    },
    Star,
    DoubleStar,
}

/// A compiled field glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    parts: Vec<Part>,
}

/// A field glob that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid field glob {glob:?}: {reason}")]
pub struct GlobError {
    pub glob: String,
    pub reason: &'static str,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl Glob {
    /// Compiles `pattern`. It must start with `/` (a pointer from the root), `**` (any depth) or `@`
    /// (a pseudo-field of the response head). `~0` and `~1` escape `~` and `/` as in RFC 6901.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        let err = |reason| GlobError {
            glob: pattern.to_owned(),
            reason,
        };
        let raw: Vec<&str> = if let Some(rest) = pattern.strip_prefix('/') {
            rest.split('/').collect()
        } else if pattern.starts_with("**") || pattern.starts_with('@') {
            pattern.split('/').collect()
        } else if pattern.is_empty() {
            Vec::new()
        } else {
            return Err(err("must start with '/', '**' or '@'"));
        };
        let mut parts = Vec::with_capacity(raw.len());
        for seg in raw {
            let part = match seg {
                "*" => Part::Star,
                "**" => Part::DoubleStar,
                s if s.contains('*') => return Err(err("'*' and '**' must be whole segments")),
                s => {
                    let text = unescape(s).ok_or_else(|| err("'~' must be followed by 0 or 1"))?;
                    let index = parse_index(&text);
                    Part::Lit { text, index }
                }
            };
            // `**/**` is the same as `**`; collapsing keeps matching linear in practice.
            if part == Part::DoubleStar && parts.last() == Some(&Part::DoubleStar) {
                continue;
            }
            parts.push(part);
        }
        Ok(Self {
            source: pattern.to_owned(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the glob matches exactly this path (not a prefix of it).
    pub fn matches(&self, path: &[Seg<'_>]) -> bool {
        match_parts(&self.parts, path)
    }

    /// Whether the glob can match this path or a path below it (a walk looking for the nodes
    /// it selects goes on down this path).
    pub fn may_match_below(&self, path: &[Seg<'_>]) -> bool {
        may_match_below(&self.parts, path)
    }

    /// Whether the glob matches this path or one of its ancestors (a glob that selects a node
    /// selects its whole subtree).
    pub fn matches_prefix(&self, path: &[Seg<'_>]) -> bool {
        (0..=path.len()).any(|n| self.matches(&path[..n]))
    }
}

/// Whether some path that starts with `path` can match `parts`.
fn may_match_below(parts: &[Part], path: &[Seg<'_>]) -> bool {
    match (parts.split_first(), path.split_first()) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((Part::DoubleStar, _)), _) => true,
        (Some((part, rest)), Some((seg, tail))) => part.accepts(seg) && may_match_below(rest, tail),
    }
}

impl Part {
    /// Whether this part matches one segment (`**` is handled by the callers).
    fn accepts(&self, seg: &Seg<'_>) -> bool {
        match (self, seg) {
            (Part::Star, _) => true,
            (Part::Lit { text, .. }, Seg::Key(k)) => text == k,
            (Part::Lit { index, .. }, Seg::Index(i)) => *index == Some(*i),
            (Part::DoubleStar, _) => unreachable!("handled by the callers"),
        }
    }
}

fn match_parts(parts: &[Part], path: &[Seg<'_>]) -> bool {
    match parts.split_first() {
        None => path.is_empty(),
        Some((Part::DoubleStar, rest)) => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((part, rest)) => match path.split_first() {
            None => false,
            Some((seg, tail)) => part.accepts(seg) && match_parts(rest, tail),
        },
    }
}

fn parse_index(s: &str) -> Option<usize> {
    if s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())) {
        s.parse().ok()
    } else {
        None
    }
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('~') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Appends one RFC 6901 reference token to `out`.
pub fn push_token(out: &mut String, token: &str) {
    out.push('/');
    if token.bytes().any(|b| b == b'~' || b == b'/') {
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(token);
    }
}

/// The JSON Pointer of `path`.
pub fn pointer(path: &[Seg<'_>]) -> String {
    let mut out = String::with_capacity(text_len(path));
    for seg in path {
        match seg {
            Seg::Key(k) => push_token(&mut out, k),
            Seg::Index(i) => {
                out.push('/');
                out.push_str(itoa::Buffer::new().format(*i));
            }
        }
    }
    out
}

/// About the length of `path`'s pointer (exact but for escapes and indices past 99,999): the
/// text is allocated once, not grown segment by segment.
pub fn text_len(path: &[Seg<'_>]) -> usize {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => 1 + k.len(),
            Seg::Index(_) => 6,
        })
        .sum()
}

/// The field pattern of `path`: its pointer with every array index replaced by `*`.
pub fn field_pattern(path: &[Seg<'_>]) -> String {
    let mut out = String::with_capacity(text_len(path));
    push_field_pattern(&mut out, path);
    out
}

/// Appends [`field_pattern`] of `path` to `out`.
pub fn push_field_pattern(out: &mut String, path: &[Seg<'_>]) {
    for seg in path {
        match seg {
            Seg::Key(k) => push_token(out, k),
            Seg::Index(_) => out.push_str("/*"),
        }
    }
}

/// [`pointer`] and [`field_pattern`] of `path` at once: each member's name is escaped once,
/// and each text allocated once (what a difference carries), `len` bytes to start with (the
/// path's [`text_len`], which the caller has weighed already).
pub fn pointer_and_field(path: &[Seg<'_>], len: usize) -> (String, String) {
    let (mut p, mut f) = (String::with_capacity(len), String::with_capacity(len));
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let from = p.len();
                push_token(&mut p, k);
                f.push_str(&p[from..]);
            }
            Seg::Index(i) => {
                p.push('/');
                p.push_str(itoa::Buffer::new().format(*i));
                f.push_str("/*");
            }
        }
    }
    (p, f)
}

/// A set of globs, matched as one.
#[derive(Debug, Clone, Default)]
pub struct GlobSet {
    globs: Vec<Glob>,
}

impl GlobSet {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, GlobError> {
        let globs = patterns
            .iter()
            .map(|p| Glob::new(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { globs })
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    pub fn push(&mut self, glob: Glob) {
        if !self.globs.contains(&glob) {
            self.globs.push(glob);
        }
    }

    pub fn extend(&mut self, other: &Self) {
        for g in &other.globs {
            if !self.globs.contains(g) {
                self.globs.push(g.clone());
            }
        }
    }

    pub fn matches(&self, path: &[Seg<'_>]) -> bool {
        self.globs.iter().any(|g| g.matches(path))
    }

    pub fn matches_prefix(&self, path: &[Seg<'_>]) -> bool {
        self.globs.iter().any(|g| g.matches_prefix(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Glob> {
        self.globs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Seg::{Index as I, Key as K};

    fn m(glob: &str, path: &[Seg<'_>]) -> bool {
        Glob::new(glob).unwrap().matches(path)
    }

    #[test]
    fn literal_star_and_double_star() {
        assert!(m("/a/b", &[K("a"), K("b")]));
        assert!(!m("/a/b", &[K("a")]));
        assert!(!m("/a", &[K("a"), K("b")]));
        assert!(m("/a/*/b", &[K("a"), I(3), K("b")]));
        assert!(m("/a/*/b", &[K("a"), K("x"), K("b")]));
        assert!(!m("/a/*/b", &[K("a"), K("b")]));
        assert!(m("**/updated_at", &[K("updated_at")]));
        assert!(m("**/updated_at", &[K("a"), I(0), K("updated_at")]));
        assert!(!m("**/updated_at", &[K("a"), K("updated_at"), K("x")]));
        assert!(m("/a/**", &[K("a")]));
        assert!(m("/a/**", &[K("a"), K("b"), I(2)]));
        assert!(m("/a/1", &[K("a"), I(1)]));
        assert!(m("/a/1", &[K("a"), K("1")]));
        assert!(!m("/a/01", &[K("a"), I(1)]));
        assert!(m("@status", &[K("@status")]));
        assert!(m("@header/etag", &[K("@header"), K("etag")]));
        assert!(m("", &[]));
    }

    #[test]
    fn escapes() {
        assert!(m("/a~1b/c~0d", &[K("a/b"), K("c~d")]));
        assert!(Glob::new("/a~2").is_err());
        assert!(Glob::new("updated_at").is_err());
        assert!(Glob::new("/a*").is_err());
    }

    #[test]
    fn prefix_matching_selects_subtrees() {
        let g = Glob::new("/meta").unwrap();
        assert!(g.matches_prefix(&[K("meta"), K("x"), I(0)]));
        assert!(!g.matches_prefix(&[K("other")]));
    }

    #[test]
    fn pointers_and_patterns() {
        let p = [K("a/b"), I(2), K("c~")];
        assert_eq!(pointer(&p), "/a~1b/2/c~0");
        assert_eq!(field_pattern(&p), "/a~1b/*/c~0");
        assert_eq!(pointer(&[]), "");
        // Both at once: the same texts.
        for path in [
            &p[..],
            &[],
            &[I(0)],
            &[K(""), K("~/é"), I(123_456_789), K("x")],
        ] {
            assert_eq!(
                pointer_and_field(path, text_len(path)),
                (pointer(path), field_pattern(path)),
                "{path:?}"
            );
        }
    }
}
