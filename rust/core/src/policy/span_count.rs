//! `span_count`: sampled if the number of spans received for the trace is within [`min_spans`, `max_spans`]
//! (both inclusive; `max_spans` 0 means no maximum).

use super::{TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct SpanCount {
    pub min_spans: i64,
    pub max_spans: i64,
}

impl SpanCount {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let min_spans = m.int_at_least_or("min_spans", 0, 0, "then samples every trace")?;
        let max_path = m.key_path("max_spans");
        let max_spans = m.int_at_least("max_spans", 0, 0)?;
        m.finish()?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
