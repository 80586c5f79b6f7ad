//! The text this engine reads and writes: timestamps as the RFC 3339 the store's rows carry,
//! and text parameters PostgreSQL can hold.

/// A timestamp column as the RFC 3339 text the store's rows carry (milliseconds, UTC).
pub(super) fn ts(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// A text parameter PostgreSQL can store: NUL replaced by U+FFFD.
pub(super) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}
