//! `numeric_attribute`: sampled if a resource or span attribute named `key` holds an integer in
//! [`min_value`, `max_value`]. As in the reference, 0 for either bound means unset (no bound on that side), and
//! a non-integer value reads as 0.
//!
//! tailsample also matches inside array values: an array matches when any of its integer elements is in range
//! (elements of other types never match, so a double or string element does not read as 0; an empty array
//! matches nothing). With `invert_match`, sampled when no element of any array matched.
//! `tailsample.strict_reference_matching` restores the reference's reading (an array is 0).

use super::inclusion::Inclusion;
use super::{certain, invert_match, Fold, PolicyType, SpanFacts, TraceView, Vote};
use crate::config::node::Mapping;
use crate::otlp::decode::{AttrKeys, AttrValue};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct NumericAttribute {
    pub key: String,
    pub key_index: usize,
    pub min: i64,
    pub max: i64,
    pub invert_match: bool,
    /// Match the elements of array values (off under `tailsample.strict_reference_matching`); set by `bind`.
    pub match_elements: bool,
}

impl NumericAttribute {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.attribute_key()?;
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
            match_elements: true,
        })
    }

    #[inline]
    pub fn value_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        let range = self.min..=self.max;
        match attrs[self.key_index] {
            v @ AttrValue::Array(_) if self.match_elements => v
                .elements()
                .any(|e| matches!(e, AttrValue::Int(i) if range.contains(&i))),
            v => v.is_present() && range.contains(&v.int_or_zero()),
        }
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, self.invert_match)
    }
}

impl PolicyType for NumericAttribute {
    const TYPE: &'static str = "numeric_attribute";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        NumericAttribute::parse(m)
    }

    fn vote(
        &mut self,
        _t: &TraceView,
        matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(matched)))
    }

    fn attribute_keys(&self) -> Vec<String> {
        vec![self.key.clone()]
    }

    fn bind(&mut self, keys: &AttrKeys) {
        self.key_index = keys.index_of_str(&self.key).expect("key registered");
        self.match_elements = !keys.strict();
    }

    fn folds(&self) -> bool {
        true
    }

    #[inline]
    fn resource_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        self.value_matches(attrs)
    }

    #[inline]
    fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        Fold::of(self.value_matches(s.attrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use crate::otlp::decode::any_value as av;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> NumericAttribute {
        NumericAttribute::parse(Node::new(&v, "p").mapping().unwrap()).unwrap()
    }

    /// Scenario: one policy, one resource or span value as the scan extracted it (`vec![]`: absent); `strict` for
    /// `tailsample.strict_reference_matching`. Guarantees: the policy's verdict on that value.
    macro_rules! numeric_cases {
        ($($name:ident: $strict:expr, $cfg:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut p = policy($cfg);
                p.match_elements = !$strict;
                let value: Vec<u8> = $value;
                let v = if value.is_empty() { AttrValue::Absent } else { av::scan(&value) };
                assert_eq!(p.value_matches(&[v]), $hit);
            }
        )*};
    }

    const HTTP_ERRORS: fn() -> serde_json::Value =
        || json!({"key": "k", "min_value": 400, "max_value": 599});

    numeric_cases! {
        inside_range: false, HTTP_ERRORS(), av::int(500) => true;
        bounds_are_inclusive: false, HTTP_ERRORS(), av::int(599) => true;
        outside_range: false, HTTP_ERRORS(), av::int(200) => false;
        zero_min_means_unbounded_below: false, json!({"key": "k", "max_value": 10}), av::int(-1_000_000) => true;
        zero_max_means_unbounded_above: false, json!({"key": "k", "min_value": 10}), av::int(i64::MAX) => true;
        string_reads_as_zero: false, json!({"key": "k", "min_value": -5, "max_value": 5}), av::str("7") => true;
        double_reads_as_zero: false, json!({"key": "k", "min_value": 1, "max_value": 5}), av::double(3.0) => false;
        absent_never_matches: false, json!({"key": "k", "min_value": -5, "max_value": 5}), vec![] => false;
        scalar_is_the_same_when_strict: true, HTTP_ERRORS(), av::int(500) => true;
        // arrays
        int_element_in_range: false, HTTP_ERRORS(), av::array(&[av::int(200), av::int(503)]) => true;
        no_int_element_in_range: false, HTTP_ERRORS(), av::array(&[av::int(200), av::int(302)]) => false;
        double_element_is_not_an_int: false, HTTP_ERRORS(), av::array(&[av::double(500.0)]) => false;
        string_element_does_not_read_as_zero: false, json!({"key": "k", "min_value": -5, "max_value": 5}),
            av::array(&[av::str("x")]) => false;
        empty_array_matches_nothing: false, json!({"key": "k", "min_value": -5, "max_value": 5}),
            av::array(&[]) => false;
        // strict_reference_matching: an array reads as 0, as `pcommon.Value.Int()` has it
        strict_array_reads_as_zero: true, json!({"key": "k", "min_value": -5, "max_value": 5}),
            av::array(&[av::int(500)]) => true;
        strict_array_never_in_a_range_without_zero: true, HTTP_ERRORS(), av::array(&[av::int(500)]) => false;
    }

    /// Scenario: `invert_match` over two spans with array values, folded as ingest folds them.
    /// Guarantees: sampled only when no int element of any span is in range.
    #[test]
    fn invert_match_on_arrays_samples_when_no_element_matches() {
        let p = policy(json!({"key": "k", "min_value": 500, "invert_match": true}));
        let hit = av::array(&[av::int(1), av::int(503)]);
        let miss = av::array(&[av::int(1), av::double(503.0)]);
        let trace =
            |spans: &[&Vec<u8>]| p.evaluate(spans.iter().any(|v| p.value_matches(&[av::scan(v)])));
        assert_eq!(trace(&[&miss, &hit]), Vote::NotSampled);
        assert_eq!(trace(&[&miss, &miss]), Vote::Sampled);
    }

    #[test]
    fn invert_match_negates() {
        let p = policy(json!({"key": "k", "min_value": 1, "invert_match": true}));
        assert_eq!(p.evaluate(true), Vote::NotSampled);
        assert_eq!(p.evaluate(false), Vote::Sampled);
    }
}
