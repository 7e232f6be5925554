//! Sampling policies, one file each, behind one closed enum.
//!
//! A policy never reads the clock, takes a lock or allocates per span. It sees a trace in two ways:
//! - at ingest, policies that look at attributes *fold* each resource and span into one bit of the trace's
//!   summary (`resource_matches`, `span_matches`), so that deciding rarely re-reads a span;
//! - at decision time, `evaluate` reads the summary (`TraceView`) and votes.
//!
//! Precedence of votes, written once (`decide` in `store::shard`): any `drop` → dropped; else any sampled →
//! sampled; else not sampled. An evaluation error counts as no vote.

pub mod always_sample;
pub mod boolean_attribute;
pub mod latency;
pub mod numeric_attribute;
pub mod probabilistic;
pub mod span_count;
pub mod status_code;
pub mod string_attribute;
pub mod trace_state;

use crate::config::node::{Mapping, Node};
use crate::error::{Error, Result};
use crate::otlp::decode::{AttrKeys, AttrValue, SpanView};

/// A policy's vote on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Sampled,
    NotSampled,
}

/// Bits of `TraceView::status_mask`: which status codes the trace's spans carry.
pub mod status_bits {
    pub const UNSET: u8 = 1;
    pub const OK: u8 = 2;
    pub const ERROR: u8 = 4;
    /// A code outside the enum (proto3 enums are open); matches no `status_code` policy.
    pub const OTHER: u8 = 8;

    pub fn of(code: i32) -> u8 {
        match code {
            0 => UNSET,
            1 => OK,
            2 => ERROR,
            _ => OTHER,
        }
    }
}

/// What a policy sees of a trace when it is decided: the summary folded at ingest.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceView {
    pub trace_id: [u8; 16],
    pub span_count: u32,
    pub bytes: u64,
    /// Smallest non-zero span start time (0 when every span's start is unset).
    pub min_start_unix_nano: u64,
    pub max_end_unix_nano: u64,
    pub status_mask: u8,
    /// Any span with the W3C sampled flag (flags bit 0).
    pub sampled_flag: bool,
    pub root_seen: bool,
    /// Bit `slot` is set when a resource or span matched the folding policy with that slot.
    pub matched: u64,
}

/// Folding policies per engine: each takes one bit of `TraceView::matched`.
pub const MAX_FOLDING_POLICIES: usize = 64;

/// One configured policy of any type.
#[derive(Debug, Clone)]
pub enum Kind {
    AlwaysSample(always_sample::AlwaysSample),
    StatusCode(status_code::StatusCode),
    Latency(latency::Latency),
    Probabilistic(probabilistic::Probabilistic),
    StringAttribute(string_attribute::StringAttribute),
    NumericAttribute(numeric_attribute::NumericAttribute),
    BooleanAttribute(boolean_attribute::BooleanAttribute),
    SpanCount(span_count::SpanCount),
}

/// The policy types tailsample runs, as written in the YAML.
pub const SUPPORTED: &[&str] = &[
    "always_sample",
    "status_code",
    "latency",
    "probabilistic",
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "span_count",
];

/// Types the reference has that tailsample does not run yet: a clear error rather than "unknown".
const NOT_YET: &[&str] = &[
    "rate_limiting",
    "bytes_limiting",
    "trace_state",
    "trace_flags",
    "ottl_condition",
    "and",
    "not",
    "drop",
    "composite",
];

/// A named policy with its place in the trace summary.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub kind: Kind,
    /// The bit of `TraceView::matched` this policy folds into, if it folds.
    pub slot: Option<u8>,
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::AlwaysSample(_) => "always_sample",
            Kind::StatusCode(_) => "status_code",
            Kind::Latency(_) => "latency",
            Kind::Probabilistic(_) => "probabilistic",
            Kind::StringAttribute(_) => "string_attribute",
            Kind::NumericAttribute(_) => "numeric_attribute",
            Kind::BooleanAttribute(_) => "boolean_attribute",
            Kind::SpanCount(_) => "span_count",
        }
    }

    /// Reads the policy block of `type_name` (the mapping under the key named like the type).
    pub fn parse(type_name: &str, block: Node<'_>, type_path: &str) -> Result<Kind> {
        let m = block.mapping()?;
        Ok(match type_name {
            "always_sample" => Kind::AlwaysSample(always_sample::AlwaysSample::parse(m)?),
            "status_code" => Kind::StatusCode(status_code::StatusCode::parse(m)?),
            "latency" => Kind::Latency(latency::Latency::parse(m)?),
            "probabilistic" => Kind::Probabilistic(probabilistic::Probabilistic::parse(m)?),
            "string_attribute" => {
                Kind::StringAttribute(string_attribute::StringAttribute::parse(m)?)
            }
            "numeric_attribute" => {
                Kind::NumericAttribute(numeric_attribute::NumericAttribute::parse(m)?)
            }
            "boolean_attribute" => {
                Kind::BooleanAttribute(boolean_attribute::BooleanAttribute::parse(m)?)
            }
            "span_count" => Kind::SpanCount(span_count::SpanCount::parse(m)?),
            other if NOT_YET.contains(&other) => {
                return Err(Error::config(
                    type_path,
                    format!(
                        "policy type {other:?} is not supported by tailsample yet; supported: {}",
                        SUPPORTED.join(", ")
                    ),
                ))
            }
            other => {
                return Err(Error::config(
                    type_path,
                    format!(
                        "unknown policy type {other:?}; supported: {}",
                        SUPPORTED.join(", ")
                    ),
                ))
            }
        })
    }

    /// Attribute keys this policy reads (the scanner extracts only these).
    pub fn attribute_keys(&self) -> Vec<&str> {
        match self {
            Kind::StringAttribute(p) => vec![p.key.as_str()],
            Kind::NumericAttribute(p) => vec![p.key.as_str()],
            Kind::BooleanAttribute(p) => vec![p.key.as_str()],
            _ => Vec::new(),
        }
    }

    /// Resolves attribute keys to their index in the scanner's key set.
    pub fn bind(&mut self, keys: &AttrKeys) {
        match self {
            Kind::StringAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered")
            }
            Kind::NumericAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered")
            }
            Kind::BooleanAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered")
            }
            _ => {}
        }
    }

    /// Whether this policy folds resources and spans into a summary bit at ingest.
    pub fn folds(&self) -> bool {
        matches!(
            self,
            Kind::StringAttribute(_) | Kind::NumericAttribute(_) | Kind::BooleanAttribute(_)
        )
    }

    /// Folding: does this resource (its extracted attributes) match?
    #[inline]
    pub fn resource_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
        match self {
            Kind::StringAttribute(p) => p.resource_matches(attrs),
            Kind::NumericAttribute(p) => p.value_matches(attrs),
            Kind::BooleanAttribute(p) => p.value_matches(attrs),
            _ => false,
        }
    }

    /// Folding: does this span match?
    #[inline]
    pub fn span_matches(&self, _span: &SpanView<'_>, attrs: &[AttrValue<'_>]) -> bool {
        match self {
            Kind::StringAttribute(p) => p.span_matches(attrs),
            Kind::NumericAttribute(p) => p.value_matches(attrs),
            Kind::BooleanAttribute(p) => p.value_matches(attrs),
            _ => false,
        }
    }

    /// The vote on a decided trace. `matched` is this policy's folded bit (false if it does not fold).
    pub fn evaluate(&mut self, t: &TraceView, matched: bool) -> std::result::Result<Vote, String> {
        Ok(match self {
            Kind::AlwaysSample(p) => p.evaluate(t),
            Kind::StatusCode(p) => p.evaluate(t),
            Kind::Latency(p) => p.evaluate(t),
            Kind::Probabilistic(p) => p.evaluate(t),
            Kind::StringAttribute(p) => p.evaluate(matched),
            Kind::NumericAttribute(p) => p.evaluate(matched),
            Kind::BooleanAttribute(p) => p.evaluate(matched),
            Kind::SpanCount(p) => p.evaluate(t),
        })
    }
}

impl Policy {
    #[inline]
    pub fn evaluate(&mut self, t: &TraceView) -> std::result::Result<Vote, String> {
        let matched = self.slot.is_some_and(|s| t.matched & (1u64 << s) != 0);
        self.kind.evaluate(t, matched)
    }
}

/// `invert_match` as the reference has it now: it simply negates the match.
#[inline]
pub fn vote(matched: bool, invert: bool) -> Vote {
    if matched != invert {
        Vote::Sampled
    } else {
        Vote::NotSampled
    }
}

/// Reads the optional `invert_match` key shared by the attribute policies.
pub fn invert_match(m: &mut Mapping<'_>) -> Result<bool> {
    m.boolean("invert_match", false)
}
