//! `boolean_attribute`: sampled if a resource or span attribute named `key` equals `value`. As in the reference,
//! a non-boolean value reads as false.
//!
//! tailsample also matches inside array values: an array matches when any of its boolean elements equals `value`
//! (elements of other types never match, so a string element does not read as false; an empty array matches
//! nothing). With `invert_match`, sampled when no element of any array matched.
//! `tailsample.strict_reference_matching` restores the reference's reading (an array is false).

use super::inclusion::Inclusion;
use super::{certain, invert_match, Fold, PolicyType, SpanFacts, TraceView, Vote};
use crate::config::node::Mapping;
use crate::otlp::decode::{AttrKeys, AttrValue};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct BooleanAttribute {
    pub key: String,
    pub key_index: usize,
    pub value: bool,
    pub invert_match: bool,
    /// Match the elements of array values (off under `tailsample.strict_reference_matching`); set by `bind`.
    pub match_elements: bool,
}

impl BooleanAttribute {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.attribute_key()?;
        let value = m.boolean("value", false)?;
        let invert_match = invert_match(&mut m)?;
        m.finish()?;
        Ok(BooleanAttribute {
            key,
            key_index: 0,
            value,
            invert_match,
            match_elements: true,
        })
    }

    #[inline]
    pub fn value_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        match attrs[self.key_index] {
            v @ AttrValue::Array(_) if self.match_elements => {
                v.elements().any(|e| e == AttrValue::Bool(self.value))
            }
            v => v.is_present() && v.bool_or_false() == self.value,
        }
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, self.invert_match)
    }
}

impl PolicyType for BooleanAttribute {
    const TYPE: &'static str = "boolean_attribute";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        BooleanAttribute::parse(m)
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

    fn policy(v: serde_json::Value) -> BooleanAttribute {
        BooleanAttribute::parse(Node::new(&v, "p").mapping().unwrap()).unwrap()
    }

    /// Scenario: a policy for `value: $want`, one resource or span value as the scan extracted it (`vec![]`:
    /// absent); `strict` for `tailsample.strict_reference_matching`. Guarantees: the policy's verdict.
    macro_rules! boolean_cases {
        ($($name:ident: $strict:expr, $want:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut p = policy(json!({"key": "k", "value": $want}));
                p.match_elements = !$strict;
                let value: Vec<u8> = $value;
                let v = if value.is_empty() { AttrValue::Absent } else { av::scan(&value) };
                assert_eq!(p.value_matches(&[v]), $hit);
            }
        )*};
    }

    boolean_cases! {
        true_matches_true: false, true, av::boolean(true) => true;
        true_does_not_match_false: false, true, av::boolean(false) => false;
        false_matches_false: false, false, av::boolean(false) => true;
        string_reads_as_false: false, false, av::str("true") => true;
        absent_never_matches: false, false, vec![] => false;
        scalar_is_the_same_when_strict: true, true, av::boolean(true) => true;
        // arrays
        any_bool_element_matches: false, true, av::array(&[av::boolean(false), av::boolean(true)]) => true;
        no_bool_element_matches: false, true, av::array(&[av::boolean(false)]) => false;
        false_element_matches_false: false, false, av::array(&[av::boolean(false)]) => true;
        string_element_does_not_read_as_false: false, false, av::array(&[av::str("x")]) => false;
        string_true_element_is_not_a_bool: false, true, av::array(&[av::str("true")]) => false;
        empty_array_matches_nothing: false, false, av::array(&[]) => false;
        // strict_reference_matching: an array reads as false, as `pcommon.Value.Bool()` has it
        strict_array_reads_as_false: true, false, av::array(&[av::boolean(true)]) => true;
        strict_array_never_true: true, true, av::array(&[av::boolean(true)]) => false;
    }

    /// Scenario: `invert_match` over two spans with array values, folded as ingest folds them.
    /// Guarantees: sampled only when no bool element of any span equals `value`.
    #[test]
    fn invert_match_on_arrays_samples_when_no_element_matches() {
        let p = policy(json!({"key": "k", "value": true, "invert_match": true}));
        let hit = av::array(&[av::boolean(false), av::boolean(true)]);
        let miss = av::array(&[av::boolean(false), av::str("true")]);
        let trace =
            |spans: &[&Vec<u8>]| p.evaluate(spans.iter().any(|v| p.value_matches(&[av::scan(v)])));
        assert_eq!(trace(&[&miss, &hit]), Vote::NotSampled);
        assert_eq!(trace(&[&miss, &miss]), Vote::Sampled);
    }

    #[test]
    fn invert_match_negates() {
        let p = policy(json!({"key": "k", "value": true, "invert_match": true}));
        assert_eq!(p.evaluate(true), Vote::NotSampled);
        assert_eq!(p.evaluate(false), Vote::Sampled);
    }
}
