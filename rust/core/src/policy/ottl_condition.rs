//! `ottl_condition`: sampled if any `span` condition holds on any span, or any `spanevent` condition holds on
//! any span event (conditions are ORed, as the reference's condition sequences are). `error_mode`: with
//! `propagate`, a condition that fails to evaluate makes the policy fail (no vote, counted) unless another span
//! matched; with `ignore` or `silent` (and when absent, as in the reference) a failing condition counts as false.
//! Conditions are parsed at load time by `super::ottl`; anything it does not support is a ConfigError there.

use super::inclusion::Inclusion;
use super::{certain, Fold, PolicyType, SpanFacts, TraceView, Vote};
use super::ottl::{self, Condition, ContextKind, EventCtx, SpanCtx};
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use crate::otlp::decode::{for_each_event, AttrKeys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    Ignore,
    Silent,
    Propagate,
}

#[derive(Debug, Clone)]
pub struct OttlCondition {
    pub error_mode: ErrorMode,
    span: Vec<Condition>,
    spanevent: Vec<Condition>,
}

impl OttlCondition {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let mode_path = m.key_path("error_mode");
        let mode = m.string("error_mode", "")?;
        let span_path = m.key_path("span");
        let event_path = m.key_path("spanevent");
        let span_src = m.strings("span")?;
        let event_src = m.strings("spanevent")?;
        m.finish()?;
        let error_mode = match mode.as_str() {
            "" | "ignore" => ErrorMode::Ignore,
            "silent" => ErrorMode::Silent,
            "propagate" => ErrorMode::Propagate,
            other => {
                return Err(Error::config(
                    mode_path,
                    format!("unknown error mode {other:?}; supported: ignore, silent, propagate"),
                ))
            }
        };
        if span_src.is_empty() && event_src.is_empty() {
            return Err(Error::config(
                span_path,
                "expected at least one condition in span or spanevent",
            ));
        }
        let compile = |src: &[String], path: &str, kind: ContextKind| -> Result<Vec<Condition>> {
            src.iter()
                .enumerate()
                .map(|(i, e)| {
                    ottl::parse(e, kind)
                        .map_err(|err| Error::config(format!("{path}[{i}]"), err.to_string()))
                })
                .collect()
        };
        Ok(OttlCondition {
            error_mode,
            span: compile(&span_src, &span_path, ContextKind::Span)?,
            spanevent: compile(&event_src, &event_path, ContextKind::SpanEvent)?,
        })
    }

    /// Attribute keys the conditions read (span and event keys, resource keys): the scanner extracts them.
    pub fn attribute_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.span.iter().chain(&self.spanevent) {
            let (a, r) = c.attribute_keys();
            out.extend(a);
            out.extend(r);
        }
        out
    }

    pub fn bind(&mut self, keys: &AttrKeys) {
        for c in self.span.iter_mut().chain(self.spanevent.iter_mut()) {
            c.bind(keys);
        }
    }

    /// Folding: evaluates the conditions on one span (and its events).
    pub fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        let ctx = SpanCtx {
            span: s.span,
            attrs: s.attrs,
            resource_attrs: s.resource_attrs,
            scope_name: s.scope_name,
            scope_raw: s.scope_raw,
        };
        let mut failed = false;
        for c in &self.span {
            match c.eval_span(&ctx) {
                Ok(true) => return Fold::Match,
                Ok(false) => {}
                Err(_) => failed = true,
            }
        }
        if !self.spanevent.is_empty() {
            let mut hit = false;
            for_each_event(s.span.raw, s.keys, |name, attrs| {
                if hit {
                    return;
                }
                let ev = EventCtx {
                    name,
                    attrs,
                    span: &ctx,
                };
                for c in &self.spanevent {
                    match c.eval_event(&ev) {
                        Ok(true) => {
                            hit = true;
                            return;
                        }
                        Ok(false) => {}
                        Err(_) => failed = true,
                    }
                }
            });
            if hit {
                return Fold::Match;
            }
        }
        if failed && self.error_mode == ErrorMode::Propagate {
            Fold::Error
        } else {
            Fold::NoMatch
        }
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, false)
    }
}

impl PolicyType for OttlCondition {
    const TYPE: &'static str = "ottl_condition";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        OttlCondition::parse(m)
    }

    fn vote(
        &mut self,
        _t: &TraceView,
        matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(matched)))
    }

    fn attribute_keys(&self) -> Vec<String> {
        OttlCondition::attribute_keys(self)
    }

    fn bind(&mut self, keys: &AttrKeys) {
        OttlCondition::bind(self, keys)
    }

    fn folds(&self) -> bool {
        true
    }

    #[inline]
    fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        OttlCondition::span_fold(self, s)
    }
}
