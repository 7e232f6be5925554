//! `trace_flags`: sampled if any span carries the W3C sampled flag (bit 0 of its flags).

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct TraceFlags;

impl TraceFlags {
    pub fn parse(m: Mapping<'_>) -> Result<Self> {
        m.finish()?;
        Ok(TraceFlags)
    }
    pub fn evaluate(&self, t: &TraceView) -> Vote {
        super::vote(t.sampled_flag, false)
    }
}

impl PolicyType for TraceFlags {
    const TYPE: &'static str = "trace_flags";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        TraceFlags::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_sampled_flag() {
        let on = TraceView {
            sampled_flag: true,
            ..Default::default()
        };
        assert_eq!(TraceFlags.evaluate(&on), Vote::Sampled);
        assert_eq!(TraceFlags.evaluate(&TraceView::default()), Vote::NotSampled);
    }
}
