//! `boolean_attribute`: sampled if a resource or span attribute named `key` equals `value`. As in the reference,
//! a non-boolean value reads as false.

use super::{invert_match, Vote};
use crate::config::node::Mapping;
use crate::error::Result;
use crate::otlp::decode::AttrValue;

#[derive(Debug, Clone)]
pub struct BooleanAttribute {
    pub key: String,
    pub key_index: usize,
    pub value: bool,
    pub invert_match: bool,
}

impl BooleanAttribute {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.required_string("key")?;
        let value = m.boolean("value", false)?;
        let invert_match = invert_match(&mut m)?;
        m.finish()?;
        Ok(BooleanAttribute {
            key,
            key_index: 0,
            value,
            invert_match,
        })
    }

    #[inline]
    pub fn value_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        let v = attrs[self.key_index];
        v.is_present() && v.bool_or_false() == self.value
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

    fn policy(v: serde_json::Value) -> BooleanAttribute {
        BooleanAttribute::parse(Node::new(&v, "p").mapping().unwrap()).unwrap()
    }

    macro_rules! boolean_cases {
        ($($name:ident: $want:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(policy(json!({"key": "k", "value": $want})).value_matches(&[$value]), $hit);
            }
        )*};
    }

    boolean_cases! {
        true_matches_true: true, AttrValue::Bool(true) => true;
        true_does_not_match_false: true, AttrValue::Bool(false) => false;
        false_matches_false: false, AttrValue::Bool(false) => true;
        string_reads_as_false: false, AttrValue::Str("true") => true;
        absent_never_matches: false, AttrValue::Absent => false;
    }

    #[test]
    fn invert_match_negates() {
        let p = policy(json!({"key": "k", "value": true, "invert_match": true}));
        assert_eq!(p.evaluate(true), Vote::NotSampled);
        assert_eq!(p.evaluate(false), Vote::Sampled);
    }
}
