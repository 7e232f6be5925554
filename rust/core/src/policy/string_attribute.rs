//! `string_attribute`: sampled if a resource attribute, or a non-empty span attribute, named `key` equals one of
//! `values` (or, with `enabled_regex_matching`, contains a match of one of them: Go's RE2 syntax and meaning, as
//! `re2` translates it, unanchored).
//! As in the reference, a non-string value reads as "" (so it can only match a regex that matches "").
//!
//! tailsample also matches inside array values, as real instrumentation sends captured headers
//! (`http.request.header.x_force_trace = ["true"]`): an array matches when any of its string elements would match
//! as a value in the same place (on a span, empty elements are skipped; elements of other types never match; an
//! empty array matches nothing). With `invert_match` the trace is sampled when no resource or span matched, so
//! when no element of any array matched. `tailsample.strict_reference_matching` restores the reference's reading
//! (an array is "").

use regex::RegexSet;

use super::inclusion::Inclusion;
use super::{certain, invert_match, re2, Fold, PolicyType, SpanFacts, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use crate::otlp::decode::{AttrKeys, AttrValue};

#[derive(Debug, Clone)]
pub struct StringAttribute {
    pub key: String,
    pub key_index: usize,
    pub invert_match: bool,
    /// Match the elements of array values (off under `tailsample.strict_reference_matching`); set by `bind`.
    pub match_elements: bool,
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
        let key = m.attribute_key()?;
        let values_path = m.key_path("values");
        let values = m.strings("values")?;
        let regex = m.boolean("enabled_regex_matching", false)?;
        // The reference caches regex results in an LRU of this size; Rust's regex needs no cache, the key is
        // accepted so that existing configurations load.
        m.int("cache_max_size", 0)?;
        let invert_match = invert_match(&mut m)?;
        m.finish()?;
        let matcher = if regex {
            Matcher::Regex(re2::compile_set(&values).map_err(|(i, why)| {
                Error::config(
                    format!("{values_path}[{i}]"),
                    format!("invalid regular expression {:?}: {why}", values[i]),
                )
            })?)
        } else {
            Matcher::Exact(values.into_iter().filter(|v| !v.is_empty()).collect())
        };
        Ok(StringAttribute {
            key,
            key_index: 0,
            invert_match,
            match_elements: true,
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
        match attrs[self.key_index] {
            v @ AttrValue::Array(_) if self.match_elements => v
                .elements()
                .any(|e| matches!(e, AttrValue::Str(s) if self.matches(s))),
            v => v.is_present() && self.matches(v.str_or_empty()),
        }
    }

    #[inline]
    pub fn span_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        match attrs[self.key_index] {
            v @ AttrValue::Array(_) if self.match_elements => v
                .elements()
                .any(|e| matches!(e, AttrValue::Str(s) if !s.is_empty() && self.matches(s))),
            v => {
                let s = v.str_or_empty();
                !s.is_empty() && self.matches(s)
            }
        }
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, self.invert_match)
    }
}

impl PolicyType for StringAttribute {
    const TYPE: &'static str = "string_attribute";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        StringAttribute::parse(m)
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
        StringAttribute::resource_matches(self, attrs)
    }

    #[inline]
    fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        Fold::of(self.span_matches(s.attrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use crate::otlp::decode::any_value as av;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<StringAttribute> {
        StringAttribute::parse(
            Node::new(&v, "policies[2].string_attribute")
                .mapping()
                .unwrap(),
        )
    }

    /// Scenario: one policy, one span (or resource) value, as the scan extracted it; `strict` for
    /// `tailsample.strict_reference_matching`. Guarantees: the policy's verdict on that value.
    macro_rules! cases {
        ($($name:ident: $where:ident, $strict:expr, $cfg:expr, $value:expr => $hit:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut p = policy($cfg).unwrap();
                p.match_elements = !$strict;
                let value: Vec<u8> = $value;
                let v = if value.is_empty() { AttrValue::Absent } else { scanned(&value) };
                assert_eq!(p.$where(&[v]), $hit);
            }
        )*};
    }

    fn scanned(v: &[u8]) -> AttrValue<'_> {
        av::scan(v)
    }

    const EXACT: fn() -> serde_json::Value = || json!({"key": "k", "values": ["true"]});
    const REGEX_EMPTY: fn() -> serde_json::Value =
        || json!({"key": "k", "values": ["^$"], "enabled_regex_matching": true});

    cases! {
        exact_value_matches: span_matches, false, EXACT(), av::str("true") => true;
        exact_is_not_substring: span_matches, false, EXACT(), av::str("true!") => false;
        absent_never_matches: span_matches, false, EXACT(), vec![] => false;
        non_string_reads_as_empty: span_matches, false, json!({"key": "k", "values": ["1"]}), av::int(1) => false;
        regex_is_unanchored: span_matches, false,
            json!({"key": "k", "values": ["ab+c"], "enabled_regex_matching": true}), av::str("xxabbbcxx") => true;
        regex_anchors_are_honoured: span_matches, false,
            json!({"key": "k", "values": ["^ab$"], "enabled_regex_matching": true}), av::str("xab") => false;
        empty_span_value_is_skipped: span_matches, false,
            json!({"key": "k", "values": [".*"], "enabled_regex_matching": true}), av::str("") => false;
        scalar_is_the_same_when_strict: span_matches, true, EXACT(), av::str("true") => true;
        // Go's RE2 meaning (the reference's `regexp`): `\w \d \b` are ASCII-only
        go_word_class_is_ascii: span_matches, false,
            json!({"key": "k", "values": [r"^\w+$"], "enabled_regex_matching": true}), av::str("éfoo") => false;
        go_word_boundary_is_ascii: span_matches, false,
            json!({"key": "k", "values": [r"\bfoo\b"], "enabled_regex_matching": true}), av::str("éfoo") => true;
        go_digit_is_ascii: span_matches, false,
            json!({"key": "k", "values": [r"\d"], "enabled_regex_matching": true}), av::str("٣") => false;
        go_quote_meta_is_literal: span_matches, false,
            json!({"key": "k", "values": [r"^\Qa.b\E$"], "enabled_regex_matching": true}), av::str("a.b") => true;
        go_fold_kelvin_sign: span_matches, false,
            json!({"key": "k", "values": ["(?i)^k$"], "enabled_regex_matching": true}), av::str("\u{212A}") => true;
        // arrays (real instrumentation's captured headers)
        array_of_the_value_matches_on_a_span: span_matches, false, EXACT(), av::array(&[av::str("true")]) => true;
        array_of_the_value_matches_on_a_resource: resource_matches, false, EXACT(),
            av::array(&[av::str("true")]) => true;
        any_element_matches: span_matches, false, EXACT(),
            av::array(&[av::str("no"), av::str("true")]) => true;
        no_element_matches: span_matches, false, EXACT(), av::array(&[av::str("no"), av::str("True")]) => false;
        array_element_regex: span_matches, false,
            json!({"key": "k", "values": ["^tr"], "enabled_regex_matching": true}),
            av::array(&[av::str("x"), av::str("true")]) => true;
        non_string_elements_never_match: span_matches, false, json!({"key": "k", "values": ["1"]}),
            av::array(&[av::int(1), av::boolean(true)]) => false;
        nested_arrays_are_not_flattened: span_matches, false, EXACT(),
            av::array(&[av::array(&[av::str("true")])]) => false;
        empty_span_element_is_skipped: span_matches, false, REGEX_EMPTY(), av::array(&[av::str("")]) => false;
        empty_resource_element_is_not_skipped: resource_matches, false, REGEX_EMPTY(),
            av::array(&[av::str("")]) => true;
        empty_array_matches_nothing: resource_matches, false, REGEX_EMPTY(), av::array(&[]) => false;
        map_still_reads_as_empty: resource_matches, false, REGEX_EMPTY(), av::map(&[("k", av::str("true"))]) => true;
        // strict_reference_matching: an array reads as "", as `pcommon.Value.Str()` has it
        strict_array_never_matches_a_value: span_matches, true, EXACT(), av::array(&[av::str("true")]) => false;
        strict_resource_array_never_matches_a_value: resource_matches, true, EXACT(),
            av::array(&[av::str("true")]) => false;
        strict_resource_array_reads_as_empty: resource_matches, true, REGEX_EMPTY(),
            av::array(&[av::str("x")]) => true;
        strict_empty_array_reads_as_empty: resource_matches, true, REGEX_EMPTY(), av::array(&[]) => true;
    }

    /// Scenario: `invert_match` over spans whose values are arrays, folded the way ingest folds them (a trace
    /// matches when any span matches). Guarantees: inverted, a trace is sampled only when no element of any of
    /// its arrays matches.
    #[test]
    fn invert_match_on_arrays_samples_when_no_element_matches() {
        let p = policy(json!({"key": "k", "values": ["true"], "invert_match": true})).unwrap();
        let hit = av::array(&[av::str("false"), av::str("true")]);
        let miss = av::array(&[av::str("false"), av::str("yes")]);
        let trace =
            |spans: &[&Vec<u8>]| p.evaluate(spans.iter().any(|v| p.span_matches(&[scanned(v)])));
        assert_eq!(trace(&[&miss, &hit]), Vote::NotSampled);
        assert_eq!(trace(&[&miss, &miss]), Vote::Sampled);
        assert_eq!(trace(&[&av::array(&[])]), Vote::Sampled);
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

    /// Scenario: patterns Go's `regexp` refuses (Rust's would take them). Guarantees: refused at load, naming the
    /// value and Go's rule.
    #[test]
    fn patterns_go_refuses_are_refused() {
        let e =
            policy(json!({"key": "k", "values": ["a", "x{1001}"], "enabled_regex_matching": true}))
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[2].string_attribute.values[1]: invalid regular expression \"x{1001}\": invalid repeat count \
             `{1001}` (Go's regexp refuses counts over 1000)"
        );
        let e = policy(json!({"key": "k", "values": ["(?x) a"], "enabled_regex_matching": true}))
            .unwrap_err();
        assert!(e.to_string().contains("values[0]: invalid regular expression \"(?x) a\": invalid or unsupported Perl syntax"), "{e}");
    }

    #[test]
    fn key_is_required() {
        let e = policy(json!({"values": ["a"]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[2].string_attribute.key: is required (the reference accepts it and then reads the attribute \
             named \"\", which instrumentation does not send)"
        );
    }
}
