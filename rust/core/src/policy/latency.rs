//! `latency`: sampled if the trace's duration, max(end) − min(start) over all its spans, is above
//! `threshold_ms` (exclusive), and at most `upper_threshold_ms` when that is set. Durations compare in whole
//! milliseconds, truncated, as the reference's `Duration.Milliseconds()` does. The minimum and maximum are
//! folded over every span at ingest, so the decision is on the whole trace, never on partial data.

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Latency {
    pub threshold_ms: i64,
    /// 0 means no upper bound.
    pub upper_threshold_ms: i64,
}

impl Latency {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let threshold_ms = m.int_at_least_or("threshold_ms", 0, 0, "then samples every trace")?;
        let upper_path = m.key_path("upper_threshold_ms");
        let upper_threshold_ms = m.int_at_least("upper_threshold_ms", 0, 0)?;
        m.finish()?;
        if upper_threshold_ms != 0 && upper_threshold_ms <= threshold_ms {
            return Err(Error::config(
                upper_path,
                format!(
                    "must be greater than threshold_ms ({threshold_ms}), got {upper_threshold_ms} (the reference \
                     accepts it and then samples no trace)"
                ),
            ));
        }
        Ok(Latency {
            threshold_ms,
            upper_threshold_ms,
        })
    }

    /// The trace's duration in whole milliseconds (truncated toward zero).
    pub fn duration_ms(t: &TraceView) -> i64 {
        let ns = i128::from(t.max_end_unix_nano) - i128::from(t.min_start_unix_nano);
        let ns = ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        (ns / 1_000_000) as i64
    }

    pub fn evaluate(&self, t: &TraceView) -> Vote {
        let d = Self::duration_ms(t);
        let hit =
            d > self.threshold_ms && (self.upper_threshold_ms == 0 || d <= self.upper_threshold_ms);
        super::vote(hit, false)
    }
}

impl PolicyType for Latency {
    const TYPE: &'static str = "latency";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        Latency::parse(m)
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

    fn trace(start: u64, end: u64) -> TraceView {
        TraceView {
            min_start_unix_nano: start,
            max_end_unix_nano: end,
            span_count: 2,
            ..Default::default()
        }
    }
    const MS: u64 = 1_000_000;

    macro_rules! latency_cases {
        ($($name:ident: ($lo:expr, $hi:expr), $dur_ns:expr => $vote:expr;)*) => {$(
            #[test]
            fn $name() {
                let p = Latency { threshold_ms: $lo, upper_threshold_ms: $hi };
                let t0 = 1_700_000_000_000_000_000u64;
                assert_eq!(p.evaluate(&trace(t0, t0 + $dur_ns)), $vote);
            }
        )*};
    }

    latency_cases! {
        above_threshold_is_sampled: (1000, 0), 1001 * MS => Vote::Sampled;
        exactly_threshold_is_not: (1000, 0), 1000 * MS => Vote::NotSampled;
        sub_millisecond_excess_truncates: (1000, 0), 1000 * MS + 999_999 => Vote::NotSampled;
        below_threshold_is_not: (1000, 0), 999 * MS => Vote::NotSampled;
        within_upper_bound: (100, 200), 200 * MS => Vote::Sampled;
        above_upper_bound: (100, 200), 201 * MS => Vote::NotSampled;
        zero_threshold_samples_any_positive: (0, 0), MS => Vote::Sampled;
    }

    #[test]
    fn end_before_start_is_a_negative_duration() {
        let p = Latency {
            threshold_ms: 0,
            upper_threshold_ms: 0,
        };
        assert_eq!(p.evaluate(&trace(10 * MS, 5 * MS)), Vote::NotSampled);
    }
}
