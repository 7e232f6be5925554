//! `status_code`: sampled if any span has one of the listed status codes.

use super::inclusion::Inclusion;
use super::{certain, status_bits, PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct StatusCode {
    /// Union of `status_bits` for the configured codes.
    pub mask: u8,
}

impl StatusCode {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let path = m.key_path("status_codes");
        let codes = m.strings("status_codes")?;
        m.finish()?;
        if codes.is_empty() {
            return Err(Error::config(
                path,
                "expected at least one status code to filter on",
            ));
        }
        let mut mask = 0u8;
        for (i, code) in codes.iter().enumerate() {
            mask |= match code.as_str() {
                "OK" => status_bits::OK,
                "ERROR" => status_bits::ERROR,
                "UNSET" => status_bits::UNSET,
                other => {
                    return Err(Error::config(
                        format!("{path}[{i}]"),
                        format!("unknown status code {other:?}, supported: OK, ERROR, UNSET"),
                    ))
                }
            };
        }
        Ok(StatusCode { mask })
    }

    pub fn evaluate(&self, t: &TraceView) -> Vote {
        super::vote(t.status_mask & self.mask != 0, false)
    }
}

impl PolicyType for StatusCode {
    const TYPE: &'static str = "status_code";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        StatusCode::parse(m)
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
    use serde_json::json;

    fn policy(codes: serde_json::Value) -> Result<StatusCode> {
        let v = json!({ "status_codes": codes });
        StatusCode::parse(Node::new(&v, "policies[0].status_code").mapping().unwrap())
    }

    macro_rules! status_cases {
        ($($name:ident: $codes:expr, $mask:expr => $vote:expr;)*) => {$(
            #[test]
            fn $name() {
                let t = TraceView { status_mask: $mask, span_count: 1, ..Default::default() };
                assert_eq!(policy(json!($codes)).unwrap().evaluate(&t), $vote);
            }
        )*};
    }

    status_cases! {
        error_span_is_sampled: ["ERROR"], status_bits::OK | status_bits::ERROR => Vote::Sampled;
        only_ok_spans_are_not: ["ERROR"], status_bits::OK => Vote::NotSampled;
        unset_listed_matches_unset: ["OK", "UNSET"], status_bits::UNSET => Vote::Sampled;
        unknown_code_matches_nothing: ["OK", "ERROR", "UNSET"], status_bits::OTHER => Vote::NotSampled;
    }

    #[test]
    fn empty_list_is_an_error() {
        let e = policy(json!([])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[0].status_code.status_codes: expected at least one status code to filter on"
        );
    }

    #[test]
    fn unknown_code_lists_the_supported_ones() {
        let e = policy(json!(["OK", "FATAL"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[0].status_code.status_codes[1]: unknown status code \"FATAL\", supported: OK, ERROR, UNSET"
        );
    }
}
