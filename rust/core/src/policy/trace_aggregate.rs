//! `trace_aggregate` (tailsample only): sampled if an aggregate of a numeric span attribute over the whole trace
//! lies within [`min_value`, `max_value`]: `sum`, `max`, `min` of its values, or `count` of the spans carrying
//! it. For example, an AI-agent trace whose summed `gen_ai.usage.input_tokens` reaches 50,000.
//!
//! The aggregate is folded at ingest into one number per trace (`TraceView::aggregates`), so deciding reads no
//! span. Integer and double values count; spans without the attribute, or with a value of another type, are
//! skipped. A trace with no value at all has sum and count 0 and no min or max (then `min`/`max` never match).
//! At least one bound is required; both are inclusive.

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::otlp::decode::{AttrKeys, AttrValue};
use crate::error::{Error, Result};

/// Aggregating policies per processor: each takes one number of `TraceView::aggregates`.
pub const MAX_AGGREGATES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Sum,
    Max,
    Min,
    Count,
}

#[derive(Debug, Clone)]
pub struct TraceAggregate {
    pub key: String,
    pub key_index: usize,
    pub function: Function,
    pub min_value: f64,
    pub max_value: f64,
    /// Its place in `TraceView::aggregates`, assigned with the configuration.
    pub slot: usize,
}

impl TraceAggregate {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.required_string("key")?;
        let function_path = m.key_path("function");
        let function = match m.string("function", "sum")?.as_str() {
            "sum" => Function::Sum,
            "max" => Function::Max,
            "min" => Function::Min,
            "count" => Function::Count,
            other => {
                return Err(Error::config(
                    function_path,
                    format!("unknown function {other:?}; supported: sum, max, min, count"),
                ))
            }
        };
        let has_min = m.has("min_value");
        let has_max = m.has("max_value");
        let min_value = m.float("min_value", f64::NEG_INFINITY)?;
        let max_path = m.key_path("max_value");
        let max_value = m.float("max_value", f64::INFINITY)?;
        let path = m.path().to_string();
        m.finish()?;
        if !has_min && !has_max {
            return Err(Error::config(
                path,
                "give min_value, max_value or both (the bounds the aggregate is compared with)",
            ));
        }
        if max_value < min_value {
            return Err(Error::config(
                max_path,
                format!("must be at least min_value ({min_value}), got {max_value}"),
            ));
        }
        Ok(TraceAggregate {
            key,
            key_index: 0,
            function,
            min_value,
            max_value,
            slot: 0,
        })
    }

    /// Folds one span's attributes into the trace's aggregate.
    #[inline]
    pub fn accumulate(&self, view: &mut TraceView, attrs: &[AttrValue<'_>]) {
        let value = match attrs[self.key_index] {
            AttrValue::Int(i) => i as f64,
            AttrValue::Double(d) if !d.is_nan() => d,
            _ => return,
        };
        let bit = 1u8 << self.slot;
        let e = view.extra_mut();
        let first = e.aggregates_present & bit == 0;
        e.aggregates_present |= bit;
        let acc = &mut e.aggregates[self.slot];
        *acc = match self.function {
            Function::Sum => *acc + value,
            Function::Count => *acc + 1.0,
            Function::Max if first => value,
            Function::Max => acc.max(value),
            Function::Min if first => value,
            Function::Min => acc.min(value),
        };
    }

    pub fn evaluate(&self, t: &TraceView) -> Vote {
        let e = t.extra();
        let present = e.aggregates_present & (1u8 << self.slot) != 0;
        let value = e.aggregates[self.slot];
        let hit = match self.function {
            Function::Min | Function::Max if !present => false,
            _ => (self.min_value..=self.max_value).contains(&value),
        };
        super::vote(hit, false)
    }
}

impl PolicyType for TraceAggregate {
    const TYPE: &'static str = "trace_aggregate";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        TraceAggregate::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(t)))
    }

    fn attribute_keys(&self) -> Vec<String> {
        vec![self.key.clone()]
    }

    fn bind(&mut self, keys: &AttrKeys) {
        self.key_index = keys.index_of_str(&self.key).expect("key registered")
    }

    fn aggregate_mut(&mut self) -> Option<&mut TraceAggregate> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> TraceAggregate {
        TraceAggregate::parse(Node::new(&v, "p").mapping().unwrap()).unwrap()
    }

    fn run(p: &TraceAggregate, values: &[AttrValue<'_>]) -> Vote {
        let mut view = TraceView::default();
        for v in values {
            p.accumulate(&mut view, &[*v]);
        }
        p.evaluate(&view)
    }

    #[test]
    fn sum_of_tokens_over_the_trace() {
        let p = policy(
            json!({"key": "gen_ai.usage.input_tokens", "function": "sum", "min_value": 50000}),
        );
        let big = [
            AttrValue::Int(30_000),
            AttrValue::Absent,
            AttrValue::Int(20_000),
        ];
        assert_eq!(run(&p, &big), Vote::Sampled); // 50,000: inclusive
        let small = [AttrValue::Int(30_000), AttrValue::Int(19_999)];
        assert_eq!(run(&p, &small), Vote::NotSampled);
        assert_eq!(run(&p, &[]), Vote::NotSampled);
        let doubles = [AttrValue::Double(49_999.5), AttrValue::Double(0.5)];
        assert_eq!(run(&p, &doubles), Vote::Sampled);
        let wrong_type = [AttrValue::Str("60000"), AttrValue::Bool(true)];
        assert_eq!(run(&p, &wrong_type), Vote::NotSampled);
    }

    #[test]
    fn max_min_and_count() {
        let max = policy(json!({"key": "k", "function": "max", "min_value": 10}));
        assert_eq!(
            run(&max, &[AttrValue::Int(3), AttrValue::Int(12)]),
            Vote::Sampled
        );
        assert_eq!(
            run(&max, &[AttrValue::Int(3), AttrValue::Int(9)]),
            Vote::NotSampled
        );
        let min = policy(json!({"key": "k", "function": "min", "max_value": -1}));
        assert_eq!(
            run(&min, &[AttrValue::Int(-5), AttrValue::Int(7)]),
            Vote::Sampled
        );
        assert_eq!(run(&min, &[]), Vote::NotSampled); // no value: no min
        let negative_max = policy(json!({"key": "k", "function": "max", "max_value": 0}));
        assert_eq!(run(&negative_max, &[AttrValue::Int(-3)]), Vote::Sampled); // first value, not 0.0
        let count =
            policy(json!({"key": "k", "function": "count", "min_value": 3, "max_value": 3}));
        let three = [
            AttrValue::Int(0),
            AttrValue::Double(1.0),
            AttrValue::Absent,
            AttrValue::Int(2),
        ];
        assert_eq!(run(&count, &three), Vote::Sampled);
        assert_eq!(run(&count, &three[..2]), Vote::NotSampled);
    }

    #[test]
    fn config_errors_name_the_key() {
        let parse =
            |v: serde_json::Value| TraceAggregate::parse(Node::new(&v, "p").mapping().unwrap());
        let e = parse(json!({"key": "k", "function": "avg", "min_value": 1})).unwrap_err();
        assert!(
            e.to_string().contains("p.function") && e.to_string().contains("avg"),
            "{e}"
        );
        let e = parse(json!({"key": "k"})).unwrap_err();
        assert!(e.to_string().contains("min_value, max_value"), "{e}");
        let e = parse(json!({"key": "k", "min_value": 5, "max_value": 1})).unwrap_err();
        assert!(e.to_string().contains("p.max_value"), "{e}");
        assert!(parse(json!({"function": "sum", "min_value": 1})).is_err());
        assert_eq!(
            policy(json!({"key": "k", "min_value": 1})).function,
            Function::Sum
        );
    }
}
