//! `always_sample`: every trace is sampled.

use super::{TraceView, Vote};
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
