//! `trace_flags`: sampled if any span carries the W3C sampled flag (bit 0 of its flags).

use super::{TraceView, Vote};
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
