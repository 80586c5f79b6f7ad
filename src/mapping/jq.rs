//! jq mappings through jaq (jaq-core, jaq-std, jaq-json): a mature jq dialect with exact
//! numbers. jaq has no limits of its own, so inputs are depth-bounded before they get here and
//! evaluations run on the mapping workers under a time budget ([`super::runner`]).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

use super::{position, Lang, Limits, Mapping, MappingError};

/// A compiled jq filter.
pub struct Jq {
    source: String,
    filter: jaq_core::Filter<data::JustLut<Val>>,
}

impl Jq {
    /// Parses and compiles `source`; errors say where (line and column).
    pub fn compile(source: &str) -> Result<Self, MappingError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let at = |s: &str| {
            let off = (s.as_ptr() as usize).saturating_sub(source.as_ptr() as usize);
            let (line, col) = position(source, off.min(source.len()));
            format!("line {line}, column {col}")
        };
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errs| {
                let mut msgs = Vec::new();
                for (_, e) in errs {
                    match e {
                        jaq_core::load::Error::Io(v) => {
                            msgs.extend(v.into_iter().map(|(s, m)| format!("{m} at {}", at(s))));
                        }
                        jaq_core::load::Error::Lex(v) => msgs.extend(
                            v.into_iter()
                                .map(|(exp, s)| format!("expected {} at {}", exp.as_str(), at(s))),
                        ),
                        jaq_core::load::Error::Parse(v) => msgs.extend(
                            v.into_iter()
                                .map(|(exp, s)| format!("expected {} at {}", exp.as_str(), at(s))),
                        ),
                    }
                }
                MappingError::Compile(format!("jq: {}", msgs.join("; ")))
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let msgs: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(s, undef)| format!("undefined {} {s:?} at {}", undef.as_str(), at(s)))
                    .collect();
                MappingError::Compile(format!("jq: {}", msgs.join("; ")))
            })?;
        Ok(Self {
            source: source.to_owned(),
            filter,
        })
    }
}

impl Mapping for Jq {
    fn lang(&self) -> Lang {
        Lang::Jq
    }

    fn source(&self) -> &str {
        &self.source
    }

    /// Exactly one output: none is "returned nothing", a second one is an error (a jq filter
    /// is a stream; a mapping must produce one document). Outputs are read lazily, so an
    /// endless generator stops at the second output.
    fn apply(&self, input: &Value, limits: &Limits) -> Result<Value, MappingError> {
        let text = input.to_string();
        let val = jaq_json::read::parse_single(text.as_bytes())
            .map_err(|e| MappingError::Eval(format!("jq input: {e}")))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = self.filter.id.run((ctx, val)).map(jaq_core::unwrap_valr);
        let first = match out.next() {
            None => return Err(MappingError::Nothing),
            Some(Err(e)) => return Err(MappingError::Eval(format!("jq: {e}"))),
            Some(Ok(v)) => v,
        };
        if limits.expired() {
            return Err(MappingError::Timeout(limits.timeout));
        }
        match out.next() {
            None => {}
            Some(Err(e)) => return Err(MappingError::Eval(format!("jq: {e}"))),
            Some(Ok(_)) => {
                return Err(MappingError::Eval(
                    "jq: the filter produced more than one output; wrap it in [...] to \
                     collect them"
                        .into(),
                ))
            }
        }
        let text = first.to_string();
        crate::diff::parse_json(text.as_bytes())
            .map_err(|e| MappingError::Output(format!("jq output is not JSON: {e}")))
    }
}
