//! `not`: flips its sub-policy's (`not_sub_policy`) vote, sampled ↔ not sampled.

use super::inclusion::Inclusion;
use super::{Policy, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Not {
    pub sub: Box<Policy>,
}

impl Not {
    pub fn parse(mut m: Mapping<'_>, path: &str) -> Result<Self> {
        let sub_path = format!("{path}.not_sub_policy");
        let sub = match m.value("not_sub_policy") {
            None => {
                return Err(Error::config(
                    sub_path,
                    "is required: one policy, with a name and a type",
                ))
            }
            // One policy; a list of exactly one is accepted too.
            Some(Value::Array(items)) if items.len() == 1 => {
                Policy::parse(&items[0], &format!("{sub_path}[0]"))?
            }
            Some(Value::Array(_)) => {
                return Err(Error::config(sub_path, "expected one policy, not a list"))
            }
            Some(v) => Policy::parse(v, &sub_path)?,
        };
        m.finish()?;
        Ok(Not { sub: Box::new(sub) })
    }

    /// The flipped vote; the trace is kept when the sub-policy does not keep it.
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let (vote, inclusion) = self.sub.evaluate(t, now)?;
        let vote = match vote {
            Vote::Sampled => Vote::NotSampled,
            Vote::NotSampled => Vote::Sampled,
            Vote::Dropped => Vote::Dropped,
        };
        Ok((vote, inclusion.negate()))
    }
}

impl PolicyType for Not {
    const TYPE: &'static str = "not";

    fn from_block(m: Mapping<'_>, path: &str) -> Result<Self> {
        Not::parse(m, path)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        self.evaluate(t, now)
    }

    fn children(&self) -> &[Policy] {
        std::slice::from_ref(&*self.sub)
    }

    fn children_mut(&mut self) -> &mut [Policy] {
        std::slice::from_mut(&mut *self.sub)
    }
}
