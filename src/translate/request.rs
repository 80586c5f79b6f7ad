//! Request mappings: the candidate's request built from the caller's, by a JSONata or jq
//! expression over a document of the request (its JSON body, path captures, query and account
//! columns), for vendor pairs whose requests differ in more than the request line — a batch read
//! sent as a POST body on one side and as one read per id on the other.
//!
//! The mapping's input:
//!
//! ```json
//! {"method": "POST", "path": "/employer/individual", "body": {"requests": [...]},
//!  "captures": {"id": "7"}, "query": {"limit": "10"}, "account": {"name": "acme", ...}}
//! ```
//!
//! Its output is an object with at most two members:
//! - `body`: the candidate request's JSON body (sent as `application/json`); without it the
//!   candidate request has no body.
//! - `each`: an array (the **fan-out**; a single object is one element, as JSONata gives a
//!   one-element sequence): one candidate call per element, at most the route's
//!   `max_each`; each element is an object whose members the route's path and query templates
//!   name as `{each.NAME}`. The answers are assembled, in order, into one document, the
//!   candidate's answer before the response mapping:
//!   `[{"each": {...}, "status": 200, "body": {...}}, ...]`.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Account, Context, Each};
use crate::mapping::Chain;

/// Fan-out calls per request when `max_each` is not set.
pub const DEFAULT_MAX_EACH: usize = 50;
/// The largest `max_each` a route may set.
pub const MAX_EACH_LIMIT: usize = 1_000;

/// A route's request mapping.
#[derive(Debug, Clone)]
pub struct RequestMapping {
    pub chain: Arc<Chain>,
    /// The most fan-out calls one request may ask for; beyond it the exchange is skipped
    /// (`fan_out`), never truncated.
    pub max_each: usize,
}

/// What the request mapping built.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub body: Option<Value>,
    pub each: Option<Vec<Value>>,
}

/// The text of an element's member for a template: a string as it is, a number as written, a
/// boolean as `true`/`false`. An object, array, null or a missing member has none.
pub fn member_text<'v>(item: &'v Value, name: &str) -> Option<Cow<'v, str>> {
    match item.get(name)? {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => {
            let text = n.to_string();
            // A float at or past 2^53 is an integer id a JSONata mapping rounded (it computes in
            // doubles): no value, rather than another resource's id.
            let rounded = text.contains(['.', 'e', 'E'])
                && text
                    .parse::<f64>()
                    .is_ok_and(|f| f.abs() >= 9_007_199_254_740_992.0);
            (!rounded).then_some(Cow::Owned(text))
        }
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Reads the mapping's output.
pub fn built(out: Value) -> Result<Built, String> {
    let Value::Object(mut m) = out else {
        return Err(format!(
            "the request mapping must return an object with \"body\" and/or \"each\", not {}",
            kind(&out)
        ));
    };
    if let Some(k) = m.keys().find(|k| *k != "body" && *k != "each") {
        return Err(format!(
            "the request mapping returned a member {k:?}: only \"body\" and \"each\" are read"
        ));
    }
    let body = m.remove("body").filter(|b| !b.is_null());
    let each = match m.remove("each") {
        None | Some(Value::Null) => None,
        // JSONata gives a one-element sequence as the element itself: one call.
        Some(one @ Value::Object(_)) => Some(vec![one]),
        Some(Value::Array(items)) => {
            if let Some((i, v)) = items.iter().enumerate().find(|(_, v)| !v.is_object()) {
                return Err(format!(
                    "\"each\"[{i}] is {}: every element is an object whose members {{each.NAME}} names",
                    kind(v)
                ));
            }
            Some(items)
        }
        Some(other) => {
            return Err(format!(
                "\"each\" must be an array (one candidate call per element), not {}",
                kind(&other)
            ))
        }
    };
    Ok(Built { body, each })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The request as the candidate task keeps it until the request mapping has run: what the
/// templates and the mapping's input need, owned.
#[derive(Debug, Clone)]
pub struct Pending {
    pub method: http::Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub captures: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub account: Option<Account>,
    /// The caller's `content-encoding`: the body is decoded before the mapping reads it.
    pub content_encoding: Option<String>,
}

impl Pending {
    pub fn new(
        method: &http::Method,
        path: &str,
        raw_query: Option<&str>,
        ctx: &Context<'_>,
    ) -> Self {
        Self {
            content_encoding: None,
            method: method.clone(),
            path: path.to_owned(),
            raw_query: raw_query.map(str::to_owned),
            captures: ctx
                .captures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            query: ctx.query.clone(),
            account: ctx.account.cloned(),
        }
    }

    /// The templates' context for one element (or none).
    pub fn context<'a>(&'a self, each: Each<'a>) -> Context<'a> {
        Context {
            captures: self
                .captures
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            query: self.query.clone(),
            account: self.account.as_ref(),
            each,
            ids: None,
        }
    }

    /// The request mapping's input, with the request's JSON body (`null` when it has none).
    /// Captures are given decoded; a query parameter given twice keeps its first value, as in
    /// templates.
    pub fn input(&self, body: Value) -> Value {
        let mut captures = Map::new();
        for (k, v) in &self.captures {
            let decoded = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            captures.insert(k.clone(), Value::String(decoded.into_owned()));
        }
        let mut query = Map::new();
        for (k, v) in &self.query {
            query
                .entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
        let account = self.account.as_ref().map_or(Value::Null, Account::to_json);
        let mut doc = Map::new();
        doc.insert("method".into(), Value::String(self.method.to_string()));
        doc.insert("path".into(), Value::String(self.path.clone()));
        doc.insert("body".into(), body);
        doc.insert("captures".into(), Value::Object(captures));
        doc.insert("query".into(), Value::Object(query));
        doc.insert("account".into(), account);
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_output_is_read_strictly() {
        assert_eq!(
            built(json!({"each": [{"id": "a"}], "body": null})).unwrap(),
            Built {
                body: None,
                each: Some(vec![json!({"id": "a"})])
            }
        );
        assert_eq!(
            built(json!({"body": {"ids": [1]}})).unwrap().body,
            Some(json!({"ids": [1]}))
        );
        // A one-element sequence as JSONata gives it: the element itself.
        assert_eq!(
            built(json!({"each": {"id": "a"}})).unwrap().each,
            Some(vec![json!({"id": "a"})])
        );
        for (bad, says) in [
            (json!([1]), "must return an object"),
            (json!({"each": 7}), "must be an array"),
            (json!({"each": ["a"]}), "\"each\"[0] is a string"),
            (json!({"path": "/x"}), "member \"path\""),
        ] {
            let e = built(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn members_become_template_text() {
        // Numbers as written (exact numbers: arbitrary precision).
        let item: Value =
            serde_json::from_str(r#"{"s": "a/b", "n": 12.50, "b": true, "o": {}, "z": null}"#)
                .unwrap();
        assert_eq!(member_text(&item, "s").unwrap(), "a/b");
        assert_eq!(member_text(&item, "n").unwrap(), "12.50");
        assert_eq!(member_text(&item, "b").unwrap(), "true");
        let big: Value =
            serde_json::from_str(r#"{"f": 9007199254740992.0, "i": 9007199254740993}"#).unwrap();
        assert_eq!(member_text(&big, "f"), None, "rounded by a JSONata mapping");
        assert_eq!(member_text(&big, "i").unwrap(), "9007199254740993");
        for k in ["o", "z", "missing"] {
            assert_eq!(member_text(&item, k), None);
        }
    }
}
