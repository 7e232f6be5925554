//! `span_count`: sampled if the number of spans received for the trace is within [`min_spans`, `max_spans`]
//! (both inclusive; `max_spans` 0 means no maximum).

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct SpanCount {
    pub min_spans: i64,
    pub max_spans: i64,
}

impl SpanCount {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let min_path = m.key_path("min_spans");
        let min_spans = m.int_at_least_or("min_spans", 0, 0, "then samples every trace")?;
        let max_path = m.key_path("max_spans");
        let max_spans = m.int_at_least_or("max_spans", 0, 0, "then samples no trace")?;
        m.finish()?;
        // The reference holds both in 32-bit integers, where larger values wrap around.
        for (path, v) in [(&min_path, min_spans), (&max_path, max_spans)] {
            if v > i64::from(i32::MAX) {
                return Err(Error::config(
                    path.as_str(),
                    format!(
                        "must be at most {}, got {v} (the reference reads it into a 32-bit integer, where it wraps \
                         to {})",
                        i32::MAX,
                        v as i32
                    ),
                ));
            }
        }
        if max_spans != 0 && max_spans < min_spans {
            return Err(Error::config(
                max_path,
                format!(
                    "must be at least min_spans ({min_spans}), got {max_spans} (the reference accepts it and then \
                     samples no trace)"
                ),
            ));
        }
        Ok(SpanCount {
            min_spans,
            max_spans,
        })
    }

    pub fn evaluate(&self, t: &TraceView) -> Vote {
        let n = i64::from(t.span_count);
        super::vote(
            n >= self.min_spans && (self.max_spans == 0 || n <= self.max_spans),
            false,
        )
    }
}

impl PolicyType for SpanCount {
    const TYPE: &'static str = "span_count";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        SpanCount::parse(m)
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
    use crate::config::node::Node;

    /// Scenario: a count beyond 32 bits, which the reference wraps. Guarantees: refused, naming the wrapped value.
    #[test]
    fn counts_beyond_32_bits_are_refused_with_the_wrapped_value() {
        let v = serde_json::json!({"min_spans": 3_000_000_000u64});
        let e = SpanCount::parse(Node::new(&v, "p.span_count").mapping().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.span_count.min_spans: must be at most 2147483647, got 3000000000 (the reference reads it into a \
             32-bit integer, where it wraps to -1294967296)"
        );
    }

    macro_rules! count_cases {
        ($($name:ident: ($min:expr, $max:expr), $n:expr => $vote:expr;)*) => {$(
            #[test]
            fn $name() {
                let t = TraceView { span_count: $n, ..Default::default() };
                assert_eq!(SpanCount { min_spans: $min, max_spans: $max }.evaluate(&t), $vote);
            }
        )*};
    }

    count_cases! {
        at_minimum: (3, 0), 3 => Vote::Sampled;
        below_minimum: (3, 0), 2 => Vote::NotSampled;
        at_maximum: (3, 10), 10 => Vote::Sampled;
        above_maximum: (3, 10), 11 => Vote::NotSampled;
        no_maximum_when_zero: (1, 0), 1_000_000 => Vote::Sampled;
    }
}
