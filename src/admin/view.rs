//! What a dashboard page shows: the window and the filters, read from the page's query string
//! and written back into every link, so that a page has a URL of its own (shareable, the back
//! button works, a reload keeps it).

use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::record::RouteKey;

/// Windows offered by the filter form (any duration `since` parses is accepted).
pub const WINDOWS: [&str; 6] = ["15m", "1h", "6h", "24h", "7d", "30d"];

/// Outcomes offered by the filter form.
pub const OUTCOMES: &[&str] = crate::record::Outcome::NAMES;

/// Classes of a differing field.
pub const CLASSES: [&str; 3] = ["systematic", "sporadic", "noise"];

/// The window and filters of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub since: String,
    pub route: Option<String>,
    pub account: Option<String>,
    pub outcome: Option<String>,
    pub class: Option<String>,
    pub version: Option<String>,
    /// Fields learned as noise shown (the default) or hidden.
    pub hide_noise: bool,
}

impl Default for View {
    fn default() -> Self {
        Self {
            since: "1h".into(),
            route: None,
            account: None,
            outcome: None,
            class: None,
            version: None,
            hide_noise: false,
        }
    }
}

impl View {
    /// Reads the filters from a query string's pairs; empty values are no filter.
    pub fn from_query(q: &[(String, String)], default_since: &str) -> Self {
        let get = |name: &str| {
            q.iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        Self {
            since: get("since").unwrap_or_else(|| default_since.to_owned()),
            route: get("route"),
            account: get("account"),
            outcome: get("outcome"),
            class: get("class"),
            version: get("version"),
            hide_noise: get("noise").as_deref() == Some("hide"),
        }
    }

    /// The store filter of the window ending now.
    pub fn filter(&self) -> Result<crate::store::Filter, String> {
        let d = crate::config::parse_duration(&self.since)?;
        if let Some(o) = self.outcome.as_deref().filter(|o| !OUTCOMES.contains(o)) {
            return Err(format!("outcome {o:?}: one of {}", OUTCOMES.join(", ")));
        }
        if let Some(c) = self.class.as_deref().filter(|c| !CLASSES.contains(c)) {
            return Err(format!("class {c:?}: one of {}", CLASSES.join(", ")));
        }
        Ok(crate::store::Filter {
            from: crate::record::ago(d),
            to: SystemTime::now(),
            route: self.route.as_deref().map(RouteKey::parse),
            account: self.account.clone(),
            mapping_version: self.version.clone(),
        })
    }

    /// The query string carrying this view (without the leading `?`).
    pub fn query(&self) -> String {
        let mut pairs = vec![("since", Some(self.since.as_str()))];
        pairs.push(("route", self.route.as_deref()));
        pairs.push(("account", self.account.as_deref()));
        pairs.push(("outcome", self.outcome.as_deref()));
        pairs.push(("class", self.class.as_deref()));
        pairs.push(("version", self.version.as_deref()));
        pairs.push(("noise", self.hide_noise.then_some("hide")));
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// This view with another route (`None`: all).
    pub fn with_route(&self, route: Option<&str>) -> Self {
        Self {
            route: route.map(str::to_owned),
            ..self.clone()
        }
    }

    /// This view with another account.
    pub fn with_account(&self, account: Option<&str>) -> Self {
        Self {
            account: account.map(str::to_owned),
            ..self.clone()
        }
    }

    /// This view with another mapping version.
    pub fn with_version(&self, version: Option<&str>) -> Self {
        Self {
            version: version.map(str::to_owned),
            ..self.clone()
        }
    }

    /// This view with the noise shown or hidden.
    pub fn with_noise_hidden(&self, hide: bool) -> Self {
        Self {
            hide_noise: hide,
            ..self.clone()
        }
    }

    /// Whether a field of `class` is shown.
    pub fn shows_class(&self, class: &str) -> bool {
        !(self.hide_noise && class == "noise") && self.class.as_deref().is_none_or(|c| c == class)
    }
}

/// Percent-encodes a path segment or a query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Decodes a percent-encoded path segment (`None` when it is not UTF-8).
pub fn dec(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_survives_its_own_query() {
        let v = View {
            since: "6h".into(),
            route: Some("hris employees/é&=".into()),
            account: Some("acme".into()),
            outcome: Some("diff".into()),
            class: Some("systematic".into()),
            version: Some("v1 2".into()),
            hide_noise: true,
        };
        let q = crate::translate::parse_query(&v.query());
        assert_eq!(View::from_query(&q, "1h"), v);
        assert_eq!(View::from_query(&[], "24h").since, "24h");
        assert!(!v.shows_class("noise"));
        assert!(!v.shows_class("sporadic"));
        assert!(v.with_noise_hidden(false).shows_class("systematic"));
        assert_eq!(dec("%2Fa%20b").as_deref(), Some("/a b"));
        assert_eq!(dec("%FF"), None);
    }
}
