//! `and`: sampled iff every sub-policy (`and_sub_policy`) samples. Evaluation stops at the first sub-policy
//! that does not; an error in a sub-policy is this policy's error.

use super::inclusion::Inclusion;
use super::{Policy, PolicyType, TraceView, Vote};
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

    /// The vote, and its inclusion: every sub-policy must keep the trace, so the conjunction of their
    /// inclusions. A sub-policy that was not evaluated (after one that did not sample) makes it unknown, unless
    /// one of those evaluated never keeps.
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let mut acc = Inclusion::Always;
        let n = self.subs.len();
        for (i, sub) in self.subs.iter_mut().enumerate() {
            let (vote, inclusion) = sub.evaluate(t, now)?;
            acc = acc.and(inclusion);
            if vote != Vote::Sampled {
                let skipped = i + 1 < n;
                if skipped && acc != Inclusion::Never {
                    acc = Inclusion::Unknown;
                }
                return Ok((Vote::NotSampled, acc));
            }
        }
        Ok((Vote::Sampled, acc))
    }
}

impl PolicyType for And {
    const TYPE: &'static str = "and";

    fn from_block(m: Mapping<'_>, path: &str) -> Result<Self> {
        And::parse(m, path)
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
}
