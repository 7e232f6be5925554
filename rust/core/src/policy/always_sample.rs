//! `always_sample`: every trace is sampled.

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct AlwaysSample;

impl AlwaysSample {
    pub fn parse(m: Mapping<'_>) -> Result<Self> {
        m.finish()?;
        Ok(AlwaysSample)
    }
    pub fn evaluate(&self, _t: &TraceView) -> Vote {
        Vote::Sampled
    }
}

impl PolicyType for AlwaysSample {
    const TYPE: &'static str = "always_sample";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        AlwaysSample::parse(m)
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

    /// Scenario: any trace, even one with a single unremarkable span. Guarantees: sampled.
    #[test]
    fn samples_everything() {
        let t = TraceView {
            span_count: 1,
            ..Default::default()
        };
        assert_eq!(AlwaysSample.evaluate(&t), Vote::Sampled);
    }
}
