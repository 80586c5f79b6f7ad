//! Where a store is: a SQLite file, or a PostgreSQL database given by URL. The URL's password
//! never reaches a log or an error message: [`Location`]'s `Display` masks it.

use std::fmt;
use std::path::PathBuf;

/// A store's location, as given by `--db` or `[store] path`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

/// A `postgres://` or `postgresql://` URL, kept whole for connecting, shown masked.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
    masked: String,
    /// `[store] ca_file`: the CA the server's certificate must lead to.
    ca_file: Option<PathBuf>,
}

impl Location {
    /// The PostgreSQL URL a path given for a SQLite file really is (it would otherwise become a
    /// file named after the URL).
    pub(super) fn url_in(path: &std::path::Path) -> Option<PgUrl> {
        match Self::parse(&path.to_string_lossy()) {
            Self::Postgres(url) => Some(url),
            Self::Sqlite(_) => None,
        }
    }
}

/// Whether a path given for a SQLite file is a URL of some scheme (`scheme://…`, the scheme a
/// letter then letters, digits, `+`, `-` or `.`).
pub(super) fn is_url(path: &std::path::Path) -> bool {
    let text = path.to_string_lossy();
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

impl PgUrl {
    /// The URL as given, password included: only for connecting.
    pub fn secret(&self) -> &str {
        &self.url
    }

    /// The same URL with `[store] ca_file` (the URL's own `sslrootcert` wins over it).
    #[must_use]
    pub fn with_ca_file(self, ca_file: Option<PathBuf>) -> Self {
        Self { ca_file, ..self }
    }

    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.masked)
    }
}

impl Default for Location {
    /// No store chosen yet: an empty path.
    fn default() -> Self {
        Self::Sqlite(PathBuf::new())
    }
}

impl Location {
    /// A URL with the `postgres` or `postgresql` scheme is PostgreSQL; anything else is a path.
    pub fn parse(s: &str) -> Self {
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Self::Postgres(PgUrl {
                url: s.to_owned(),
                masked: mask(s),
                ca_file: None,
            })
        } else {
            Self::Sqlite(PathBuf::from(s))
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(u) => u.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

fn mask(url: &str) -> String {
    crate::mask::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_urls_are_told_from_paths_and_the_scheme_is_any_case() {
        for url in [
            "mysql://x@127.0.0.1/db",
            "sqlite://foo.db",
            "s3+https://b/k",
            "file:///x",
        ] {
            assert!(is_url(std::path::Path::new(url)), "{url}");
        }
        for path in [
            "store.db",
            "./a://b.db",
            "/srv/x.db",
            "1ab://c",
            "://x",
            "data:x.db",
        ] {
            assert!(!is_url(std::path::Path::new(path)), "{path}");
        }
    }

    #[test]
    fn postgres_urls_are_recognised_and_shown_without_their_password() {
        let cases = [
            (
                "postgres://app:s3cr%40t@db.example:5432/shadow?sslmode=require",
                "postgres://app:***@db.example:5432/shadow?sslmode=require",
            ),
            (
                "postgresql://app@db/shadow?password=hunter2&sslmode=verify-full",
                "postgresql://app@db/shadow?password=***&sslmode=verify-full",
            ),
            ("POSTGRES://u:p@h", "POSTGRES://u:***@h"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://a:b:c@h:1/d", "postgres://a:***@h:1/d"),
        ];
        for (url, shown) in cases {
            let loc = Location::parse(url);
            assert!(matches!(loc, Location::Postgres(_)), "{url}");
            assert_eq!(loc.to_string(), shown);
            assert!(
                !format!("{loc:?}").contains("s3cr") && !format!("{loc:?}").contains("hunter2")
            );
            if let Location::Postgres(u) = &loc {
                assert_eq!(u.secret(), url);
            }
        }
        assert_eq!(
            Location::parse("store/shadowdiff.db"),
            Location::Sqlite("store/shadowdiff.db".into())
        );
        assert_eq!(
            Location::parse("postgres.db"),
            Location::Sqlite("postgres.db".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn masking_never_panics_and_never_shows_the_password(
            user in "[a-zé]{1,8}",
            pass in "\\PC{1,12}",
            rest in "\\PC{0,20}",
        ) {
            let pass = pass.replace(['@', '/', '?', ':', '*'], "x");
            let url = format!("postgres://{user}:{pass}@host/{rest}");
            let shown = Location::parse(&url).to_string();
            proptest::prop_assert!(shown.starts_with(&format!("postgres://{user}:***@host/")), "{}", shown);
            let _ = Location::parse(&rest).to_string();
        }
    }
}
