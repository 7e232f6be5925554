//! `numeric_attribute`: sampled if a resource or span attribute named `key` holds an integer in
//! [`min_value`, `max_value`]. As in the reference, 0 for either bound means unset (no bound on that side), and
//! a non-integer value reads as 0.

use super::{invert_match, Vote};
use crate::config::node::Mapping;
use crate::error::Result;
use crate::otlp::decode::AttrValue;

#[derive(Debug, Clone)]
pub struct NumericAttribute {
    pub key: String,
    pub key_index: usize,
    pub min: i64,
    pub max: i64,
    pub invert_match: bool,
}

impl NumericAttribute {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.required_string("key")?;
        let min_value = m.int("min_value", 0)?;
        let max_value = m.int("max_value", 0)?;
        let invert_match = invert_match(&mut m)?;
        m.finish()?;
        Ok(NumericAttribute {
            key,
            key_index: 0,
            min: if min_value == 0 { i64::MIN } else { min_value },
            max: if max_value == 0 { i64::MAX } else { max_value },
            invert_match,
        })
    }

    #[inline]
    pub fn value_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        let v = attrs[self.key_index];
        v.is_present() && (self.min..=self.max).contains(&v.int_or_zero())
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, self.invert_match)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> NumericAttribute {
        NumericAttribute::parse(Node::new(&v, "p").mapping().unwrap()).unwrap()
    }

    macro_rules! numeric_cases {
        ($($name:ident: $cfg:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(policy($cfg).value_matches(&[$value]), $hit);
            }
        )*};
    }

    numeric_cases! {
        inside_range: json!({"key": "k", "min_value": 400, "max_value": 599}), AttrValue::Int(500) => true;
        bounds_are_inclusive: json!({"key": "k", "min_value": 400, "max_value": 599}), AttrValue::Int(599) => true;
        outside_range: json!({"key": "k", "min_value": 400, "max_value": 599}), AttrValue::Int(200) => false;
        zero_min_means_unbounded_below: json!({"key": "k", "max_value": 10}), AttrValue::Int(-1_000_000) => true;
        zero_max_means_unbounded_above: json!({"key": "k", "min_value": 10}), AttrValue::Int(i64::MAX) => true;
        string_reads_as_zero: json!({"key": "k", "min_value": -5, "max_value": 5}), AttrValue::Str("7") => true;
        double_reads_as_zero: json!({"key": "k", "min_value": 1, "max_value": 5}), AttrValue::Double(3.0) => false;
        absent_never_matches: json!({"key": "k", "min_value": -5, "max_value": 5}), AttrValue::Absent => false;
    }

    #[test]
    fn invert_match_negates() {
        let p = policy(json!({"key": "k", "min_value": 1, "invert_match": true}));
        assert_eq!(p.evaluate(true), Vote::NotSampled);
        assert_eq!(p.evaluate(false), Vote::Sampled);
    }
}
