//! Triage: a person's verdict on a difference pattern (a route, a field pattern, a kind or
//! every kind), kept in the store beside the traffic: `accepted` (the difference is
//! intended: it needs a reason, usually a ticket, and should expire), `vendor_bug` (the
//! candidate is wrong, reported to its vendor) or `fix_in_progress` (a mapping change is
//! coming). Who and when go with every mark; every mark and clear is appended to an audit
//! trail that is never rewritten.
//!
//! Reports and the dashboard show the marks beside the fields; a gate counts the exchanges
//! whose every difference is at an `accepted` pattern (or noise) as matching only when its
//! `accepted = "exclude"` says so, and only while the mark has not expired.
//!
//! This module is the model and its rules, with no storage: `store::triage` keeps the rows.

use serde::Serialize;

/// The longest text a mark keeps in any of its fields (a hostile or careless caller cannot
/// fill the store through it).
pub const MAX_TEXT: usize = 1024;

/// What a person says about a difference pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Intended: the gate may exclude it (`accepted = "exclude"`) until the mark expires.
    Accepted,
    /// The candidate is wrong; reported to its vendor.
    VendorBug,
    /// A mapping change is coming.
    FixInProgress,
}

impl Status {
    pub const ALL: [Self; 3] = [Self::Accepted, Self::VendorBug, Self::FixInProgress];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::VendorBug => "vendor_bug",
            Self::FixInProgress => "fix_in_progress",
        }
    }

    pub fn parse(s: &str) -> Result<Self, TriageError> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                TriageError(format!(
                    "status {s:?}: one of accepted, vendor_bug, fix_in_progress"
                ))
            })
    }
}

/// The difference pattern a mark is about. `kind` empty: every kind at the field. `route`
/// empty: the requests that matched no route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Pattern {
    pub route: String,
    pub field: String,
    pub kind: String,
}

impl Pattern {
    /// Whether a difference of `kind` at `field` on `route` is of this pattern.
    pub fn covers(&self, route: &str, field: &str, kind: &str) -> bool {
        self.route == route && self.field == field && (self.kind.is_empty() || self.kind == kind)
    }
}

/// A mark in force (or expired: `expires` passed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    #[serde(flatten)]
    pub pattern: Pattern,
    pub status: Status,
    pub reason: String,
    pub ticket: Option<String>,
    /// Who marked it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Until when it holds (RFC 3339); `None`: until cleared.
    pub expires: Option<String>,
}

impl Mark {
    /// Whether the mark holds at `now` (RFC 3339, as [`crate::record::rfc3339`] writes it).
    pub fn holds_at(&self, now: &str) -> bool {
        self.expires.as_deref().is_none_or(|e| e > now)
    }

    /// Whether a gate configured to exclude accepted patterns excludes this one at `now`.
    pub fn excludes_at(&self, now: &str) -> bool {
        self.status == Status::Accepted && self.holds_at(now)
    }
}

/// A change of the marks: what the store applies and appends to the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Mark(Mark),
    /// The pattern's mark removed.
    Clear {
        pattern: Pattern,
        by: String,
        at: String,
        reason: Option<String>,
    },
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub at: String,
    /// `mark` or `clear`.
    pub action: String,
    #[serde(flatten)]
    pub pattern: Pattern,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    pub by: String,
    pub expires: Option<String>,
}

/// A mark that cannot be made, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TriageError(pub String);

/// The kinds of difference a mark may name (empty: all).
pub const KINDS: &[&str] = &["changed", "missing", "extra", "type_changed", "unpaired_id"];

/// Checks one text field: present when `required`, at most [`MAX_TEXT`] bytes, no control
/// characters (it is shown in terminals and pages).
fn text(name: &str, v: &str, required: bool) -> Result<(), TriageError> {
    if required && v.trim().is_empty() {
        return Err(TriageError(format!("{name} is needed")));
    }
    if v.len() > MAX_TEXT {
        return Err(TriageError(format!(
            "{name}: {} bytes, {MAX_TEXT} at most",
            v.len()
        )));
    }
    // Control characters, and the invisible ones that reorder or hide text in a terminal or a
    // page (bidirectional overrides, zero-width characters).
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if v.chars().any(hidden) {
        return Err(TriageError(format!(
            "{name}: no control or invisible formatting characters"
        )));
    }
    Ok(())
}

impl Pattern {
    /// The pattern as a person names it: the route (`(unmatched)` for the requests that matched
    /// none), a field pattern as reports print it, a kind or none.
    pub fn new(route: &str, field: &str, kind: Option<&str>) -> Result<Self, TriageError> {
        text("route", route, true)?;
        text("field", field, false)?;
        if !(field.is_empty() || field.starts_with('/') || field.starts_with('@')) {
            return Err(TriageError(format!(
                "field {field:?}: a field pattern as reports print it (\"/individuals/*/status\", \"@status\")"
            )));
        }
        let kind = kind.unwrap_or("");
        if !(kind.is_empty() || KINDS.contains(&kind)) {
            return Err(TriageError(format!(
                "kind {kind:?}: one of {}",
                KINDS.join(", ")
            )));
        }
        Ok(Self {
            route: if route == crate::record::UNMATCHED {
                String::new()
            } else {
                route.to_owned()
            },
            field: field.to_owned(),
            kind: kind.to_owned(),
        })
    }

    /// The route as reports name it.
    pub fn route_label(&self) -> &str {
        if self.route.is_empty() {
            crate::record::UNMATCHED
        } else {
            &self.route
        }
    }
}

impl Mark {
    /// A mark made at `at` (RFC 3339), checked: `accepted` needs a reason; `expires`, when
    /// given, is after `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pattern: Pattern,
        status: Status,
        reason: &str,
        ticket: Option<&str>,
        by: &str,
        at: String,
        expires: Option<String>,
    ) -> Result<Self, TriageError> {
        text("reason", reason, status == Status::Accepted)?;
        text("by", by, true)?;
        if let Some(t) = ticket {
            text("ticket", t, false)?;
        }
        if let Some(e) = &expires {
            if e.as_str() <= at.as_str() {
                return Err(TriageError(format!("expires {e}: not after now ({at})")));
            }
        }
        Ok(Self {
            pattern,
            status,
            reason: reason.trim().to_owned(),
            ticket: ticket
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            by: by.trim().to_owned(),
            at,
            expires,
        })
    }
}

/// An expiry as a person gives it: a duration from `now` (`30d`, `12h`) or a time (a date =
/// midnight UTC, RFC 3339).
pub fn parse_expiry(s: &str, now: std::time::SystemTime) -> Result<String, TriageError> {
    let s = s.trim();
    let too_far = || TriageError(format!("expires {s:?}: at most {MAX_YEARS} years from now"));
    let limit = now + std::time::Duration::from_secs(MAX_YEARS * 365 * 86_400);
    if let Ok(d) = humantime::parse_duration(s) {
        let at = now
            .checked_add(d)
            .filter(|t| *t <= limit)
            .ok_or_else(too_far)?;
        return Ok(crate::record::rfc3339(at));
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    let at = humantime::parse_rfc3339_weak(&full).map_err(|_| {
        TriageError(format!(
            "expires {s:?}: a duration from now (30d) or a UTC time (2027-01-31, 2027-01-31T12:00:00Z)"
        ))
    })?;
    if at > limit {
        return Err(too_far());
    }
    Ok(crate::record::rfc3339(at))
}

/// How far an expiry may be.
pub const MAX_YEARS: u64 = 100;

/// A change as the API takes it (`POST /api/triage`): `{"action": "mark" | "clear", "route",
/// "field", "kind", "status", "reason", "ticket", "expires", "by"}`; `by` is needed (a
/// program says who it acts for).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub action: String,
    pub route: String,
    pub field: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    pub by: String,
}

impl Request {
    /// The change it asks for, checked, made at `now`.
    pub fn change(&self, now: std::time::SystemTime) -> Result<Change, TriageError> {
        let pattern = Pattern::new(&self.route, &self.field, self.kind.as_deref())?;
        let at = crate::record::rfc3339(now);
        match self.action.as_str() {
            "mark" => {
                let status = Status::parse(self.status.as_deref().unwrap_or(""))?;
                let expires = self
                    .expires
                    .as_deref()
                    .map(|e| parse_expiry(e, now))
                    .transpose()?;
                Ok(Change::Mark(Mark::new(
                    pattern,
                    status,
                    self.reason.as_deref().unwrap_or(""),
                    self.ticket.as_deref(),
                    &self.by,
                    at,
                    expires,
                )?))
            }
            "clear" => Change::clear(pattern, &self.by, at, self.reason.as_deref()),
            other => Err(TriageError(format!(
                "action {other:?}: \"mark\" or \"clear\""
            ))),
        }
    }
}

impl Change {
    /// A clear, checked.
    pub fn clear(
        pattern: Pattern,
        by: &str,
        at: String,
        reason: Option<&str>,
    ) -> Result<Self, TriageError> {
        text("by", by, true)?;
        if let Some(r) = reason {
            text("reason", r, false)?;
        }
        Ok(Self::Clear {
            pattern,
            by: by.trim().to_owned(),
            at,
            reason: reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        })
    }

    pub fn pattern(&self) -> &Pattern {
        match self {
            Self::Mark(m) => &m.pattern,
            Self::Clear { pattern, .. } => pattern,
        }
    }
}

/// The mark of a difference of `kind` at `field` on `route`, if one covers it: a mark for the
/// kind wins over one for every kind.
pub fn mark_of<'a>(marks: &'a [Mark], route: &str, field: &str, kind: &str) -> Option<&'a Mark> {
    marks
        .iter()
        .filter(|m| m.pattern.covers(route, field, kind))
        .max_by_key(|m| !m.pattern.kind.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(kind: Option<&str>) -> Pattern {
        Pattern::new("people", "/individuals/*/status", kind).unwrap()
    }

    #[test]
    fn marks_are_checked() {
        let at = "2026-12-05T10:00:00.000Z".to_owned();
        let mark = |status, reason: &str, expires: Option<&str>| {
            Mark::new(
                pattern(None),
                status,
                reason,
                Some("JIRA-1"),
                "ana",
                at.clone(),
                expires.map(str::to_owned),
            )
        };
        assert!(
            mark(Status::Accepted, "", None).is_err(),
            "accepted needs a reason"
        );
        assert!(mark(Status::VendorBug, "", None).is_ok());
        assert!(mark(
            Status::Accepted,
            "case only",
            Some("2026-12-05T09:00:00.000Z")
        )
        .is_err());
        assert!(mark(Status::Accepted, "bell\u{7}", None).is_err());
        assert!(mark(Status::Accepted, "abc\u{202E}txt.exe", None).is_err());
        let now = std::time::SystemTime::now();
        assert!(
            parse_expiry("2922000d", now).is_err(),
            "past year 9999: refused, no panic"
        );
        assert!(parse_expiry("18446744073709551615s", now).is_err());
        assert!(parse_expiry("30d", now).is_ok());
        assert!(Pattern::new("people", "@status", None).is_ok());
        assert!(mark(Status::Accepted, &"x".repeat(MAX_TEXT + 1), None).is_err());
        assert!(
            Pattern::new("people", "status", None).is_err(),
            "not a pattern"
        );
        assert!(Pattern::new("people", "/x", Some("nope")).is_err());
        assert_eq!(
            Pattern::new("(unmatched)", "/x", None).unwrap().route,
            "",
            "unmatched is stored as the empty route"
        );
        let m = mark(
            Status::Accepted,
            "case only",
            Some("2026-12-06T10:00:00.000Z"),
        )
        .unwrap();
        assert!(m.excludes_at("2026-12-05T12:00:00.000Z"));
        assert!(!m.excludes_at("2026-12-06T10:00:00.000Z"), "expired");
        let bug = mark(Status::VendorBug, "", None).unwrap();
        assert!(
            !bug.excludes_at("2026-12-05T12:00:00.000Z"),
            "only accepted excludes"
        );
    }

    #[test]
    fn a_mark_for_the_kind_wins() {
        let at = "2026-12-05T10:00:00.000Z".to_owned();
        let any = Mark::new(
            pattern(None),
            Status::VendorBug,
            "",
            None,
            "a",
            at.clone(),
            None,
        )
        .unwrap();
        let changed = Mark::new(
            pattern(Some("changed")),
            Status::Accepted,
            "case",
            None,
            "b",
            at,
            None,
        )
        .unwrap();
        let marks = vec![any, changed];
        let f = "/individuals/*/status";
        assert_eq!(
            mark_of(&marks, "people", f, "changed").unwrap().status,
            Status::Accepted
        );
        assert_eq!(
            mark_of(&marks, "people", f, "missing").unwrap().status,
            Status::VendorBug
        );
        assert!(mark_of(&marks, "other", f, "changed").is_none());
    }
}
