//! `drop`: if every sub-policy (`drop_sub_policy`) samples, the trace is dropped, whatever any other policy
//! says (a veto). Evaluation stops at the first sub-policy that does not sample.

use super::inclusion::Inclusion;
use super::{Policy, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Drop {
    pub subs: Vec<Policy>,
}

impl Drop {
    pub fn parse(mut m: Mapping<'_>, path: &str) -> Result<Self> {
        let subs = Policy::parse_list(
            m.value("drop_sub_policy"),
            &format!("{path}.drop_sub_policy"),
        )?;
        m.finish()?;
        Ok(Drop { subs })
    }

    /// The vote; it never keeps a trace (inclusion `Never`).
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        for sub in &mut self.subs {
            if sub.evaluate(t, now)?.0 != Vote::Sampled {
                return Ok((Vote::NotSampled, Inclusion::Never));
            }
        }
        Ok((Vote::Dropped, Inclusion::Never))
    }
}

impl PolicyType for Drop {
    const TYPE: &'static str = "drop";

    fn from_block(m: Mapping<'_>, path: &str) -> Result<Self> {
        Drop::parse(m, path)
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
        &self.subs
    }

    fn children_mut(&mut self) -> &mut [Policy] {
        &mut self.subs
    }

    fn vetoes(&self) -> bool {
        true
    }
}
