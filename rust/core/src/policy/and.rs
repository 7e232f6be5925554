//! `and`: sampled iff every sub-policy (`and_sub_policy`) samples. Evaluation stops at the first sub-policy
//! that does not; an error in a sub-policy is this policy's error.

use super::inclusion::Inclusion;
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
            sub.last_vote = None;
        }
        for sub in &mut self.subs {
            if sub.evaluate(t, now)? != Vote::Sampled {
                return Ok(Vote::NotSampled);
            }
        }
        Ok(Vote::Sampled)
    }

    /// Every sub-policy must keep the trace: the conjunction of their inclusions. A sub-policy that was not
    /// evaluated (after one that did not sample) makes it unknown, unless one of those evaluated never keeps.
    pub fn inclusion(&self) -> Inclusion {
        let mut acc = Inclusion::Always;
        let mut skipped = false;
        for sub in &self.subs {
            match sub.last_vote {
                Some(v) => acc = acc.and(sub.kind.inclusion(v)),
                None => skipped = true,
            }
        }
        if skipped && acc != Inclusion::Never {
            Inclusion::Unknown
        } else {
            acc
        }
    }
}
