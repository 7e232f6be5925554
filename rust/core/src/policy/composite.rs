//! `composite`: sub-policies (`composite_sub_policy`) in their listed order, each with a budget of spans per
//! second (`rate_allocation`: `percent` of `max_total_spans_per_second`; 0, or no entry for the sub-policy, is
//! an equal share of the total). The first sub-policy that samples decides: the trace is sampled if its
//! spans fit that sub-policy's budget and the total for this second, else not sampled, with no fall-through
//! to the next sub-policy (the reference's semantics). Budgets restart every second of the engine clock.
//! `policy_order` is accepted, as the reference accepts it, and does not change the order.

use super::inclusion::Inclusion;
use super::{Policy, PolicyType, TraceView, Vote};
use crate::config::node::{describe, Mapping, Node};
use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Composite {
    subs: Vec<Policy>,
    allocated: Vec<i64>,
    sampled: Vec<i64>,
    max_total: i64,
    current_second: Option<i64>,
    /// The sub-policy that sampled the last trace this policy sampled (for `tailsampling.composite_policy`).
    pub last_sampled_by: Option<usize>,
}

impl Composite {
    pub fn parse(mut m: Mapping<'_>, path: &str) -> Result<Self> {
        let max_total = m.int_at_least("max_total_spans_per_second", 0, 0)?;
        let order_path = m.key_path("policy_order");
        let order = m.strings("policy_order")?;
        let subs = Policy::parse_list(
            m.value("composite_sub_policy"),
            &format!("{path}.composite_sub_policy"),
        )?;
        let alloc_path = m.key_path("rate_allocation");
        let allocations = m.value("rate_allocation");
        m.finish()?;
        for (i, name) in order.iter().enumerate() {
            if !subs.iter().any(|s| &s.name == name) {
                return Err(Error::config(
                    format!("{order_path}[{i}]"),
                    format!(
                        "{name:?} is not a composite_sub_policy (the reference accepts it and ignores the name)"
                    ),
                ));
            }
        }
        // As the reference: percent > 0 → that share of the total (in float, truncated); 0 or absent → an
        // equal share.
        let default_share = max_total as f64 / subs.len() as f64;
        let mut allocated = vec![default_share as i64; subs.len()];
        if let Some(v) = allocations {
            let Value::Array(items) = v else {
                return Err(Error::config(
                    alloc_path,
                    format!(
                        "expected a list of {{policy, percent}}, got {}",
                        describe(v)
                    ),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{alloc_path}[{i}]");
                let mut a = Node::new(item, &item_path).mapping()?;
                let policy = a.required_string("policy")?;
                // A negative percent is an equal share, as 0 is, in the reference and here.
                let percent = a.int("percent", 0)?;
                a.finish()?;
                let Some(j) = subs.iter().position(|s| s.name == policy) else {
                    return Err(Error::config(
                        format!("{item_path}.policy"),
                        format!(
                            "{policy:?} is not a composite_sub_policy (the reference accepts it and ignores the \
                             allocation)"
                        ),
                    ));
                };
                let sps = if percent > 0 {
                    percent as f64 / 100.0 * max_total as f64
                } else {
                    default_share
                };
                allocated[j] = sps as i64;
            }
        }
        let n = subs.len();
        Ok(Composite {
            subs,
            allocated,
            sampled: vec![0; n],
            max_total,
            current_second: None,
            last_sampled_by: None,
        })
    }

    pub fn subs(&self) -> &[Policy] {
        &self.subs
    }
    pub fn subs_mut(&mut self) -> &mut [Policy] {
        &mut self.subs
    }
    pub fn sub_name(&self, i: usize) -> &str {
        &self.subs[i].name
    }

    /// The vote; a kept trace's inclusion is `Unknown` (it depends on other traces' shares, not on this
    /// trace's randomness).
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let second = now.div_euclid(1_000_000_000);
        if self.current_second != Some(second) {
            self.current_second = Some(second);
            self.sampled.iter_mut().for_each(|s| *s = 0);
        }
        for i in 0..self.subs.len() {
            if self.subs[i].evaluate(t, now)?.0 == Vote::Sampled {
                let if_sampled = self.sampled[i] + i64::from(t.span_count);
                if if_sampled <= self.allocated[i] && if_sampled <= self.max_total {
                    self.sampled[i] = if_sampled;
                    self.last_sampled_by = Some(i);
                    return Ok((Vote::Sampled, Inclusion::Unknown));
                }
                return Ok((Vote::NotSampled, Inclusion::Never));
            }
        }
        Ok((Vote::NotSampled, Inclusion::Never))
    }
}

impl PolicyType for Composite {
    const TYPE: &'static str = "composite";

    fn from_block(m: Mapping<'_>, path: &str) -> Result<Self> {
        Composite::parse(m, path)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        self.evaluate(t, now)
    }

    fn children(&self) -> &[Policy] {
        self.subs()
    }

    fn children_mut(&mut self) -> &mut [Policy] {
        self.subs_mut()
    }

    fn sampled_by(&self) -> Option<&str> {
        self.last_sampled_by.map(|i| self.sub_name(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn composite(v: Value) -> Result<Composite> {
        Composite::parse(
            Node::new(&v, "p.composite").mapping().unwrap(),
            "p.composite",
        )
    }

    fn cfg() -> Value {
        json!({
            "max_total_spans_per_second": 100,
            "policy_order": ["errors", "rest"],
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}
            ],
            "rate_allocation": [{"policy": "errors", "percent": 60}, {"policy": "rest", "percent": 0}]
        })
    }

    /// Scenario: 100 spans/s, errors get 60 %, the rest an equal share (50). Guarantees: budgets are spent
    /// per sub-policy, an over-budget trace is not sampled (no fall-through), budgets restart each second.
    #[test]
    fn budgets_per_sub_policy_and_second() {
        let mut c = composite(cfg()).unwrap();
        assert_eq!(c.allocated, vec![60, 50]);
        let err = TraceView {
            span_count: 25,
            status_mask: super::super::status_bits::ERROR,
            ..Default::default()
        };
        let ok = TraceView {
            span_count: 25,
            status_mask: super::super::status_bits::OK,
            ..Default::default()
        };
        assert_eq!(c.evaluate(&err, 0).unwrap().0, Vote::Sampled);
        assert_eq!(c.evaluate(&err, 0).unwrap().0, Vote::Sampled);
        assert_eq!(c.last_sampled_by, Some(0));
        assert_eq!(
            c.evaluate(&err, 0).unwrap().0,
            Vote::NotSampled,
            "75 > 60, and no fall-through to 'rest'"
        );
        assert_eq!(c.evaluate(&ok, 0).unwrap().0, Vote::Sampled);
        assert_eq!(c.evaluate(&ok, 0).unwrap().0, Vote::Sampled);
        assert_eq!(c.evaluate(&ok, 0).unwrap().0, Vote::NotSampled);
        assert_eq!(
            c.evaluate(&err, 1_000_000_000).unwrap().0,
            Vote::Sampled,
            "a new second"
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        let mut v = cfg();
        v["rate_allocation"][0]["policy"] = json!("nope");
        let e = composite(v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.composite.rate_allocation[0].policy: \"nope\" is not a composite_sub_policy (the reference accepts \
             it and ignores the allocation)"
        );
        let mut v = cfg();
        v["policy_order"] = json!(["errors", "x"]);
        assert!(composite(v)
            .unwrap_err()
            .to_string()
            .starts_with("p.composite.policy_order[1]"));
    }

    #[test]
    fn a_sub_policy_without_allocation_gets_an_equal_share() {
        let mut v = cfg();
        v["rate_allocation"] = json!([{"policy": "errors", "percent": 29}]);
        let c = composite(v).unwrap();
        assert_eq!(
            c.allocated,
            vec![28, 50],
            "29 % of 100 in float is 28.999..., truncated"
        );
        let mut v = cfg();
        v.as_object_mut().unwrap().remove("rate_allocation");
        assert_eq!(composite(v).unwrap().allocated, vec![50, 50]);
    }
}
