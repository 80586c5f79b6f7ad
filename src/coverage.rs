//! Field coverage: per route, every field pattern compared in a window, in how many compared
//! exchanges it was present and how often it differed; and the patterns known to exist that the
//! window never exercised (seen in earlier windows, or in the route's reference document,
//! `[[routes]] reference`). A canary that never saw a rarely used field has not tested it: the
//! gate's `min_field_samples` says so.
//!
//! "Present" is the store's `field_presence` (compared exchanges where either document, after
//! mapping, had the field; counted per hour, so a window's count is that of the hours it
//! overlaps, capped at the route's compared exchanges), as the classification reads it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::record::RouteKey;
use crate::store::{Filter, Reader, StoreError};

/// One field pattern compared in the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldCoverage {
    pub field: String,
    /// Compared exchanges where it was present.
    pub compared: u64,
    /// Of them, exchanges where it differed.
    pub differing: u64,
    pub parity: f64,
}

/// A field pattern known to exist that the window never exercised.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unexercised {
    pub field: String,
    /// `earlier` (present in compared exchanges before the window) or `reference` (in the
    /// route's reference document).
    pub known_from: &'static str,
}

/// One route's coverage.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct RouteCoverage {
    pub route: String,
    /// Compared exchanges of the route in the window.
    pub compared: u64,
    /// Fewest compared exchanges first.
    pub fields: Vec<FieldCoverage>,
    pub unexercised: Vec<Unexercised>,
}

impl RouteCoverage {
    /// The fields compared fewer than `n` times.
    pub fn under(&self, n: u64) -> impl Iterator<Item = &FieldCoverage> {
        self.fields.iter().filter(move |f| f.compared < n)
    }
}

/// The coverage of `route` over `f`'s window (`compared`: the route's compared exchanges there;
/// `reference`: the field patterns of its reference document).
pub fn route_coverage(
    store: &dyn Reader,
    f: &Filter,
    route: &RouteKey,
    compared: u64,
    reference: &[String],
) -> Result<RouteCoverage, StoreError> {
    let present = store.presence(route, f.from, f.to)?;
    let rf = Filter {
        route: Some(route.clone()),
        ..f.clone()
    };
    let mut differing: HashMap<String, u64> = HashMap::new();
    for row in store.fields(&rf)? {
        *differing.entry(row.field).or_default() += row.exchanges;
    }
    let mut fields: Vec<FieldCoverage> = present
        .iter()
        .map(|(field, n)| {
            let n = (*n).min(compared.max(1));
            let d = differing.get(field).copied().unwrap_or(0).min(n);
            FieldCoverage {
                field: field.clone(),
                compared: n,
                differing: d,
                parity: 1.0 - d as f64 / n.max(1) as f64,
            }
        })
        .collect();
    fields.sort_by(|a, b| a.compared.cmp(&b.compared).then(a.field.cmp(&b.field)));
    // Known before the window: the hours that end before it starts.
    let before = f
        .from
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(UNIX_EPOCH);
    let mut unexercised: BTreeMap<String, &'static str> = BTreeMap::new();
    if before > UNIX_EPOCH {
        for field in store.presence(route, UNIX_EPOCH, before)?.into_keys() {
            if !present.contains_key(&field) {
                unexercised.insert(field, "earlier");
            }
        }
    }
    for field in reference {
        if !present.contains_key(field) {
            unexercised.entry(field.clone()).or_insert("reference");
        }
    }
    Ok(RouteCoverage {
        route: route.label().to_owned(),
        compared,
        fields,
        unexercised: unexercised
            .into_iter()
            .map(|(field, known_from)| Unexercised { field, known_from })
            .collect(),
    })
}

/// The coverage of every route with compared exchanges in `f`'s window (only `f.route` when
/// set), and of the routes with a reference document that compared none.
pub fn all(
    store: &dyn Reader,
    f: &Filter,
    references: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<RouteCoverage>, StoreError> {
    let compared_outcomes = crate::record::Outcome::COMPARED.map(crate::record::Outcome::as_str);
    let mut compared: BTreeMap<RouteKey, u64> = BTreeMap::new();
    for c in store.outcome_counts(crate::store::GroupBy::Route, f)? {
        let n = if compared_outcomes.contains(&c.outcome.as_str()) {
            c.n
        } else {
            0
        };
        *compared
            .entry(RouteKey::from_route(c.key.as_deref()))
            .or_default() += n;
    }
    for name in references.keys() {
        compared.entry(RouteKey::named(name.clone())).or_default();
    }
    let mut out = Vec::new();
    for (key, n) in compared {
        if f.route.as_ref().is_some_and(|r| *r != key) {
            continue;
        }
        let reference = key
            .name()
            .and_then(|n| references.get(n))
            .map_or(&[][..], Vec::as_slice);
        out.push(route_coverage(store, f, &key, n, reference)?);
    }
    Ok(out)
}

/// The field patterns of a reference document (as the store counts presence).
pub fn reference_patterns(doc: &serde_json::Value) -> Vec<String> {
    let mut p = crate::diff::Patterns::default();
    p.add(doc, 10_000);
    p.list
}
