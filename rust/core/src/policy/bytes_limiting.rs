//! `bytes_limiting`: a token bucket of `bytes_per_second` holding at most `burst_capacity` (default 2 × the
//! rate); a trace takes its size in bytes, measured as the reference measures it (its received batches as
//! OTLP protobuf, see `ViewExtra::otlp_bytes`).

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use super::rate_limiting::{parse_bucket, TokenBucket};
use crate::config::node::Mapping;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct BytesLimiting {
    bucket: TokenBucket,
}

impl BytesLimiting {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let bucket = parse_bucket(&mut m, "bytes_per_second")?;
        m.finish()?;
        Ok(BytesLimiting { bucket })
    }

    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> Vote {
        super::vote(self.bucket.allow(now, t.extra().otlp_bytes), false)
    }
}

impl PolicyType for BytesLimiting {
    const TYPE: &'static str = "bytes_limiting";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        BytesLimiting::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let vote = self.evaluate(t, now);
        // It keeps a trace for the tokens left, not for the trace's randomness.
        Ok(match vote {
            Vote::Sampled => (vote, Inclusion::Unknown),
            _ => certain(vote),
        })
    }

    fn measures_size(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_trace_size_in_tokens() {
        let mut p = BytesLimiting {
            bucket: TokenBucket::new(1000, 2000),
        };
        let t = TraceView {
            extra: Some(Box::new(super::super::ViewExtra {
                otlp_bytes: 1500,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&t, 0), Vote::Sampled);
        assert_eq!(p.evaluate(&t, 0), Vote::NotSampled);
        assert_eq!(p.evaluate(&t, 1_000_000_000), Vote::Sampled);
    }
}
