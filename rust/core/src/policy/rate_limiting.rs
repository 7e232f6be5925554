//! `rate_limiting`: a token bucket of `spans_per_second` tokens a second holding at most `burst_capacity`
//! (default 2 × the rate); a trace passes if the bucket holds its span count, which it then takes. A trace
//! larger than the burst never passes. As in the reference (golang.org/x/time/rate), the bucket starts full,
//! refills continuously, and a refused trace takes nothing. Time is the engine's clock, so replays are exact.

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};

/// A token bucket as golang.org/x/time/rate's `Limiter.AllowN`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// Engine time (ns) of the last update; None before the first use.
    last: Option<i64>,
}

impl TokenBucket {
    pub fn new(rate_per_second: i64, burst: i64) -> Self {
        TokenBucket {
            rate: rate_per_second as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: None,
        }
    }

    /// Takes `n` tokens at `now` if the bucket holds them.
    pub fn allow(&mut self, now: i64, n: u64) -> bool {
        let last = self.last.unwrap_or(now);
        if now > last {
            let elapsed = (now - last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now.max(last));
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Reads `<rate_key>` and `burst_capacity` (0 or absent: twice the rate).
pub fn parse_bucket(m: &mut Mapping<'_>, rate_key: &'static str) -> Result<TokenBucket> {
    let path = m.key_path(rate_key);
    let rate = m.int_at_least_or(rate_key, 0, 0, "then samples no trace")?;
    // 0 or less: the default, as the reference reads it.
    let burst = m.int("burst_capacity", 0)?;
    if rate == 0 {
        return Err(Error::config(
            path,
            "must be a positive number (the reference accepts 0 and then samples no trace)",
        ));
    }
    Ok(TokenBucket::new(
        rate,
        if burst > 0 {
            burst
        } else {
            rate.saturating_mul(2)
        },
    ))
}

#[derive(Debug, Clone)]
pub struct RateLimiting {
    bucket: TokenBucket,
}

impl RateLimiting {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let bucket = parse_bucket(&mut m, "spans_per_second")?;
        m.finish()?;
        Ok(RateLimiting { bucket })
    }

    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> Vote {
        super::vote(self.bucket.allow(now, u64::from(t.span_count)), false)
    }
}

impl PolicyType for RateLimiting {
    const TYPE: &'static str = "rate_limiting";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        RateLimiting::parse(m)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// Scenario: 10 spans/s, burst 20, traces of 8 spans at t=0. Guarantees: two pass (16 of 20 tokens), the
    /// third is refused and takes nothing, half a second later 5 tokens more let one through.
    #[test]
    fn token_bucket_as_x_time_rate() {
        let mut p = RateLimiting {
            bucket: TokenBucket::new(10, 20),
        };
        let t = TraceView {
            span_count: 8,
            ..Default::default()
        };
        assert_eq!(p.evaluate(&t, 0), Vote::Sampled);
        assert_eq!(p.evaluate(&t, 0), Vote::Sampled);
        assert_eq!(p.evaluate(&t, 0), Vote::NotSampled);
        assert_eq!(
            p.evaluate(&t, S / 2),
            Vote::Sampled,
            "4 left + 5 refilled = 9 >= 8"
        );
        assert_eq!(p.evaluate(&t, S / 2), Vote::NotSampled);
    }

    #[test]
    fn a_trace_bigger_than_the_burst_never_passes() {
        let mut p = RateLimiting {
            bucket: TokenBucket::new(100, 10),
        };
        let t = TraceView {
            span_count: 11,
            ..Default::default()
        };
        assert_eq!(p.evaluate(&t, 100 * S), Vote::NotSampled);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut b = TokenBucket::new(1000, 50);
        assert!(b.allow(0, 50));
        assert!(!b.allow(3600 * S, 51));
        assert!(b.allow(3600 * S, 50));
    }
}
