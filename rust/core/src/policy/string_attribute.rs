//! `string_attribute`: sampled if a resource attribute, or a non-empty span attribute, named `key` equals one of
//! `values` (or, with `enabled_regex_matching`, contains a match of one of them: RE2-style, unanchored).
//! As in the reference, a non-string value reads as "" (so it can only match a regex that matches "").

use regex::RegexSet;

use super::{invert_match, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use crate::otlp::decode::AttrValue;

#[derive(Debug, Clone)]
pub struct StringAttribute {
    pub key: String,
    pub key_index: usize,
    pub invert_match: bool,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Exact values; the reference ignores empty ones. A short list beats hashing.
    Exact(Vec<String>),
    Regex(RegexSet),
}

impl StringAttribute {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.required_string("key")?;
        let values_path = m.key_path("values");
        let values = m.strings("values")?;
        let regex = m.boolean("enabled_regex_matching", false)?;
        // The reference caches regex results in an LRU of this size; Rust's regex needs no cache, the key is
        // accepted so that existing configurations load.
        m.int_at_least("cache_max_size", 0, 0)?;
        let invert_match = invert_match(&mut m)?;
        m.finish()?;
        let matcher = if regex {
            for (i, v) in values.iter().enumerate() {
                if let Err(e) = regex::Regex::new(v) {
                    return Err(Error::config(
                        format!("{values_path}[{i}]"),
                        format!(
                            "invalid regular expression {v:?}: {}",
                            first_line(&e.to_string())
                        ),
                    ));
                }
            }
            Matcher::Regex(
                RegexSet::new(&values).map_err(|e| Error::config(values_path, e.to_string()))?,
            )
        } else {
            Matcher::Exact(values.into_iter().filter(|v| !v.is_empty()).collect())
        };
        Ok(StringAttribute {
            key,
            key_index: 0,
            invert_match,
            matcher,
        })
    }

    #[inline]
    fn matches(&self, s: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(values) => values.iter().any(|v| v == s),
            Matcher::Regex(set) => set.is_match(s),
        }
    }

    #[inline]
    pub fn resource_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        let v = attrs[self.key_index];
        v.is_present() && self.matches(v.str_or_empty())
    }

    #[inline]
    pub fn span_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        let s = attrs[self.key_index].str_or_empty();
        !s.is_empty() && self.matches(s)
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, self.invert_match)
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<StringAttribute> {
        StringAttribute::parse(
            Node::new(&v, "policies[2].string_attribute")
                .mapping()
                .unwrap(),
        )
    }

    macro_rules! span_cases {
        ($($name:ident: $cfg:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                let p = policy($cfg).unwrap();
                assert_eq!(p.span_matches(&[$value]), $hit);
            }
        )*};
    }

    span_cases! {
        exact_value_matches: json!({"key": "k", "values": ["true"]}), AttrValue::Str("true") => true;
        exact_is_not_substring: json!({"key": "k", "values": ["true"]}), AttrValue::Str("true!") => false;
        absent_never_matches: json!({"key": "k", "values": ["true"]}), AttrValue::Absent => false;
        non_string_reads_as_empty: json!({"key": "k", "values": ["1"]}), AttrValue::Int(1) => false;
        regex_is_unanchored: json!({"key": "k", "values": ["ab+c"], "enabled_regex_matching": true}), AttrValue::Str("xxabbbcxx") => true;
        regex_anchors_are_honoured: json!({"key": "k", "values": ["^ab$"], "enabled_regex_matching": true}), AttrValue::Str("xab") => false;
        empty_span_value_is_skipped: json!({"key": "k", "values": [".*"], "enabled_regex_matching": true}), AttrValue::Str("") => false;
    }

    #[test]
    fn resource_values_are_not_skipped_when_empty() {
        let p =
            policy(json!({"key": "k", "values": ["^$"], "enabled_regex_matching": true})).unwrap();
        assert!(p.resource_matches(&[AttrValue::Bool(true)]));
        assert!(!p.resource_matches(&[AttrValue::Absent]));
    }

    #[test]
    fn invert_match_negates() {
        let p = policy(json!({"key": "k", "values": ["a"], "invert_match": true})).unwrap();
        assert_eq!(p.evaluate(true), Vote::NotSampled);
        assert_eq!(p.evaluate(false), Vote::Sampled);
    }

    #[test]
    fn bad_regex_names_the_value() {
        let e = policy(
            json!({"key": "k", "values": ["ok", "(unclosed"], "enabled_regex_matching": true}),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "policies[2].string_attribute.values[1]: invalid regular expression \"(unclosed\""
            ),
            "{e}"
        );
    }

    #[test]
    fn key_is_required() {
        let e = policy(json!({"values": ["a"]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[2].string_attribute.key: is required"
        );
    }
}
