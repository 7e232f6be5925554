//! `and`: sampled iff every sub-policy (`and_sub_policy`) samples. Evaluation stops at the first sub-policy
//! that does not; an error in a sub-policy is this policy's error.

use super::{Policy, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct And {
    pub subs: Vec<Policy>,
}

impl And {
    pub fn parse(mut m: Mapping<'_>, path: &str) -> Result<Self> {
        let subs =
            Policy::parse_list(m.value("and_sub_policy"), &format!("{path}.and_sub_policy"))?;
        m.finish()?;
        Ok(And { subs })
    }

    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> std::result::Result<Vote, String> {
        for sub in &mut self.subs {
            if sub.evaluate(t, now)? != Vote::Sampled {
                return Ok(Vote::NotSampled);
            }
        }
        Ok(Vote::Sampled)
    }
}
