//! JSONata mappings through jsonata-core (pinned with `=`: results changed between releases;
//! golden tests per mapping and the differential test against the reference implementation
//! guard upgrades). Expressions are parsed once at load; every evaluation gets the engine's own
//! time and depth limits, and runs on a mapping worker ([`super::runner`]).

use jsonata_core::ast::AstNode;
use jsonata_core::evaluator::{Context, Evaluator, EvaluatorOptions};
use jsonata_core::value::JValue;
use serde_json::{Map, Number, Value};

use super::{position, Lang, Limits, Mapping, MappingError};

/// A parsed JSONata expression.
pub struct Jsonata {
    source: String,
    ast: AstNode,
}

impl Jsonata {
    /// Parses `source`. jsonata-core reports no offsets, so the position of a syntax error is
    /// found as the shortest prefix of the expression that fails for another reason than ending
    /// early.
    pub fn compile(source: &str) -> Result<Self, MappingError> {
        match jsonata_core::parser::parse(source) {
            Ok(ast) => Ok(Self {
                source: source.to_owned(),
                ast,
            }),
            Err(e) => {
                let at = error_offset(source)
                    .map(|off| {
                        let (line, col) = position(source, off);
                        format!(" (near line {line}, column {col})")
                    })
                    .unwrap_or_default();
                Err(MappingError::Compile(format!("jsonata: {e}{at}")))
            }
        }
    }
}

/// The offset where a parse error starts: the end of the shortest prefix that fails other than
/// by ending early.
fn error_offset(source: &str) -> Option<usize> {
    let ends_early = |e: &jsonata_core::parser::ParserError| {
        let m = e.to_string();
        m.starts_with("S0207")
            || m.starts_with("S0101")
            || m.starts_with("S0105")
            || m.contains("Unclosed")
    };
    let mut ends = source
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .collect::<Vec<_>>();
    ends.push(source.len());
    for end in ends {
        if let Err(e) = jsonata_core::parser::parse(&source[..end]) {
            if !ends_early(&e) {
                let start = source[..end].char_indices().last().map_or(0, |(i, _)| i);
                return Some(start);
            }
        }
    }
    None
}

impl Mapping for Jsonata {
    fn lang(&self) -> Lang {
        Lang::Jsonata
    }

    fn source(&self) -> &str {
        &self.source
    }

    fn apply(&self, input: &Value, limits: &Limits) -> Result<Value, MappingError> {
        let data = if limits.undefined_input {
            JValue::Undefined
        } else {
            JValue::from(input.clone())
        };
        let options = EvaluatorOptions {
            timeout_ms: Some(limits.timeout.as_millis().max(1) as u64),
            cancel: None,
            max_stack_depth: Some(limits.max_stack),
            max_sequence_length: Some(limits.max_sequence),
        };
        let mut ev = Evaluator::with_options(Context::new(), options);
        match ev.evaluate(&self.ast, &data) {
            Ok(JValue::Undefined) => Err(MappingError::Nothing),
            Ok(v) => to_json(&v, 0),
            Err(e) if e.code() == Some("D1012") => Err(MappingError::Timeout(limits.timeout)),
            Err(e) => Err(MappingError::Eval(format!("jsonata: {}", e.message()))),
        }
    }
}

/// A JSONata result as JSON: integral numbers as integers (as the reference implementation
/// prints them), undefined members left out, functions refused.
fn to_json(v: &JValue, depth: usize) -> Result<Value, MappingError> {
    if depth > crate::diff::MAX_DEPTH {
        return Err(MappingError::Output(format!(
            "output nested deeper than {} levels",
            crate::diff::MAX_DEPTH
        )));
    }
    Ok(match v {
        JValue::Null | JValue::Undefined => Value::Null,
        JValue::Bool(b) => Value::Bool(*b),
        JValue::Number(n) => number(*n)?,
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Array(a) => Value::Array(
            a.iter()
                .filter(|x| !matches!(x, JValue::Undefined))
                .map(|x| to_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        JValue::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o.iter() {
                if !matches!(x, JValue::Undefined) {
                    m.insert(k.clone(), to_json(x, depth + 1)?);
                }
            }
            Value::Object(m)
        }
        _ => {
            return Err(MappingError::Output(
                "the result holds a function, which JSON cannot carry".into(),
            ))
        }
    })
}

fn number(n: f64) -> Result<Value, MappingError> {
    if !n.is_finite() {
        return Err(MappingError::Output(format!(
            "the result holds {n}, which JSON cannot carry"
        )));
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Ok(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| MappingError::Output(format!("unrepresentable number {n}")))
}
