//! Sampling policies, one file each, behind one closed enum.
//!
//! A policy never reads the clock, takes a lock or allocates per span. It sees a trace in two ways:
//! - at ingest, policies that look at attributes *fold* each resource and span into one bit of the trace's
//!   summary (`resource_matches`, `span_matches`), so that deciding rarely re-reads a span;
//! - at decision time, `evaluate` reads the summary (`TraceView`) and votes.
//!
//! Precedence of votes, written once (`decide` in `store::shard`): any `drop` → dropped; else any sampled →
//! sampled; else not sampled. An evaluation error counts as no vote. Combinators (`and`, `not`, `drop`,
//! `composite`) hold sub-policies of the same type; an error in a sub-policy is the combinator's error.

pub mod adaptive;
pub mod always_sample;
pub mod and;
pub mod boolean_attribute;
pub mod bytes_limiting;
pub mod composite;
pub mod drop;
pub mod inclusion;
pub mod latency;
pub mod latency_percentile;
pub mod not;
pub mod numeric_attribute;
pub mod ottl;
pub mod ottl_condition;
pub mod probabilistic;
pub mod rate_limiting;
pub mod re2;
pub mod span_count;
pub mod status_code;
pub mod string_attribute;
pub mod trace_aggregate;
pub mod trace_flags;
pub mod trace_key;
pub mod trace_state;

use crate::config::node::{describe, Mapping, Node};
use crate::error::{Error, Result};
use crate::otlp::decode::{AttrKeys, AttrValue, SpanView};
use serde_json::Value;

/// A policy's vote on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Sampled,
    NotSampled,
    /// A `drop` policy fired: a veto over every other vote.
    Dropped,
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
    /// The trace's size as the reference measures it for `maximum_trace_size_bytes` (the sum of
    /// `ResourceSpansSize` of each payload's share, under its resource and scopes, as pdata re-encodes it);
    /// 0 when nothing reads sizes.
    pub bytes: u64,
    /// The trace's size as the reference measures it for `bytes_limiting` (`ptrace.ProtoMarshaler.TracesSize`
    /// of its received batches: the same shares, each framed); 0 when nothing reads sizes.
    pub otlp_bytes: u64,
    /// Smallest non-zero span start time (0 when every span's start is unset).
    pub min_start_unix_nano: u64,
    pub max_end_unix_nano: u64,
    pub status_mask: u8,
    /// Any span with the W3C sampled flag (flags bit 0).
    pub sampled_flag: bool,
    pub root_seen: bool,
    /// Bit `slot` is set when a resource or span matched the folding policy with that slot.
    pub matched: u64,
    /// Bit `slot` is set when evaluating the folding policy with that slot failed on some span.
    pub errors: u64,
    /// One number per `trace_aggregate` policy (its sum, max, min or count so far), by its slot.
    pub aggregates: [f64; trace_aggregate::MAX_AGGREGATES],
    /// Bit `slot` is set once a value was folded into `aggregates[slot]`.
    pub aggregates_present: u8,
    /// One key per keyed policy (`latency_percentile`, `adaptive`), by its slot (see `trace_key`).
    pub keys: [u64; trace_key::MAX_KEYED],
    /// The keys were read from the root span (until it arrives, from the first span received).
    pub keys_from_root: bool,
    /// OTEP 235 `th` and `rv` of the first span with an `ot` tracestate entry; `ot_present` says which.
    pub ot_th: u64,
    pub ot_rv: u64,
    pub ot_present: u8,
}

/// Bits of `TraceView::ot_present`.
pub mod ot_bits {
    pub const SEEN: u8 = 1;
    pub const TH: u8 = 2;
    pub const RV: u8 = 4;
}

impl TraceView {
    /// The trace's 56-bit randomness (OTEP 235): its `rv` if a span carried one, else the trace ID's last 7 bytes.
    #[inline]
    pub fn randomness(&self) -> u64 {
        if self.ot_present & ot_bits::RV != 0 {
            self.ot_rv
        } else {
            crate::consistent::trace_id_randomness(&self.trace_id)
        }
    }

    /// The incoming threshold (`th`), if a span carried one.
    #[inline]
    pub fn threshold_in(&self) -> Option<u64> {
        (self.ot_present & ot_bits::TH != 0).then_some(self.ot_th)
    }
}

/// Folding policies per engine: each takes one bit of `TraceView::matched`.
pub const MAX_FOLDING_POLICIES: usize = 64;

/// What a folding policy reads of one span at ingest.
pub struct SpanFacts<'a, 'b> {
    pub span: &'b SpanView<'a>,
    pub attrs: &'b [AttrValue<'a>],
    pub resource_attrs: &'b [AttrValue<'a>],
    pub scope_name: &'a str,
    /// The scope's raw `InstrumentationScope` bytes, for `ottl_condition`.
    pub scope_raw: &'b [u8],
    pub keys: &'b AttrKeys,
}

/// A folding policy's verdict on one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Match,
    NoMatch,
    /// Evaluation failed (an `ottl_condition` with `error_mode: propagate`, say).
    Error,
}

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
    TraceState(trace_state::TraceState),
    TraceFlags(trace_flags::TraceFlags),
    RateLimiting(rate_limiting::RateLimiting),
    BytesLimiting(bytes_limiting::BytesLimiting),
    And(and::And),
    Not(not::Not),
    Drop(drop::Drop),
    Composite(composite::Composite),
    OttlCondition(ottl_condition::OttlCondition),
    TraceAggregate(trace_aggregate::TraceAggregate),
    LatencyPercentile(latency_percentile::LatencyPercentile),
    Adaptive(adaptive::Adaptive),
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
    "trace_state",
    "trace_flags",
    "rate_limiting",
    "bytes_limiting",
    "and",
    "not",
    "drop",
    "composite",
    "ottl_condition",
    "trace_aggregate",
    "latency_percentile",
    "adaptive",
];

/// A named policy with its place in the trace summary.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub kind: Kind,
    /// The bit of `TraceView::matched` this policy folds into, if it folds.
    pub slot: Option<u8>,
    /// Its vote on the trace evaluated last (None: not evaluated, or failed), for the trace's inclusion
    /// probability (`inclusion`).
    pub last_vote: Option<Vote>,
}

impl Policy {
    /// Reads one policy entry (`name`, `type`, and the block named like the type) at `path`.
    pub fn parse(v: &Value, path: &str) -> Result<Policy> {
        let mut m = Node::new(v, path).mapping()?;
        let name = m.required_string("name")?;
        let type_name = m.required_string("type")?;
        // An entry may carry blocks for other types (the reference ignores them); only its own is read.
        let mut own: Option<&Value> = None;
        for t in SUPPORTED {
            let v = m.value(t);
            if *t == type_name {
                own = v;
            }
        }
        m.finish()?;
        let null = Value::Null;
        let block_path = format!("{path}.{type_name}");
        let kind = Kind::parse(
            &type_name,
            Node::new(own.unwrap_or(&null), &block_path),
            &format!("{path}.type"),
        )?;
        Ok(Policy {
            name,
            kind,
            slot: None,
            last_vote: None,
        })
    }

    /// Reads a list of sub-policies (for `and`, `drop`, `composite`), with unique names.
    pub fn parse_list(v: Option<&Value>, path: &str) -> Result<Vec<Policy>> {
        let Some(v) = v else {
            return Err(Error::config(
                path,
                "expected a list of policies, each with a name and a type",
            ));
        };
        let Value::Array(items) = v else {
            return Err(Error::config(
                path,
                format!("expected a list of policies, got {}", describe(v)),
            ));
        };
        if items.is_empty() {
            // The reference accepts an empty list; say what it then does.
            let reading = if path.ends_with("and_sub_policy") {
                "samples every trace"
            } else if path.ends_with("drop_sub_policy") {
                "drops every trace"
            } else {
                "samples no trace"
            };
            return Err(Error::config(
                path,
                format!("expected at least one policy (the reference accepts an empty list and then {reading})"),
            ));
        }
        let mut out: Vec<Policy> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = Policy::parse(item, &format!("{path}[{i}]"))?;
            if let Some(j) = out.iter().position(|q| q.name == p.name) {
                return Err(Error::config(
                    format!("{path}[{i}].name"),
                    if path == "policies" {
                        format!("duplicate policy name {:?} (also {path}[{j}])", p.name)
                    } else {
                        // The reference refuses repeated names only among top-level policies.
                        format!(
                            "duplicate policy name {:?} (also {path}[{j}]; the reference accepts a repeated \
                             sub-policy name, tailsample names each sub-policy in its statistics)",
                            p.name
                        )
                    },
                ));
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The vote on a decided trace; `now` is the engine clock (ns), for the stateful policies.
    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> std::result::Result<Vote, String> {
        let (matched, failed) = match self.slot {
            Some(s) => (t.matched & (1u64 << s) != 0, t.errors & (1u64 << s) != 0),
            None => (false, false),
        };
        self.last_vote = None;
        // A definite match on some span wins over a failure on another.
        if failed && !matched {
            return Err(format!("policy {:?} failed to evaluate a span", self.name));
        }
        let vote = self.kind.evaluate(t, matched, now)?;
        self.last_vote = Some(vote);
        Ok(vote)
    }

    /// How its last vote depends on the trace's randomness (see `inclusion`).
    pub fn inclusion(&self) -> inclusion::Inclusion {
        match self.last_vote {
            None => inclusion::Inclusion::Never,
            Some(v) => self.kind.inclusion(v),
        }
    }

    /// Every policy of this tree, depth first (itself included), for slot assignment and key collection.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Policy)) {
        f(self);
        for sub in self.kind.children_mut() {
            sub.walk_mut(f);
        }
    }

    pub fn walk(&self, f: &mut dyn FnMut(&Policy)) {
        f(self);
        for sub in self.kind.children() {
            sub.walk(f);
        }
    }
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
            Kind::TraceState(_) => "trace_state",
            Kind::TraceFlags(_) => "trace_flags",
            Kind::RateLimiting(_) => "rate_limiting",
            Kind::BytesLimiting(_) => "bytes_limiting",
            Kind::And(_) => "and",
            Kind::Not(_) => "not",
            Kind::Drop(_) => "drop",
            Kind::Composite(_) => "composite",
            Kind::OttlCondition(_) => "ottl_condition",
            Kind::TraceAggregate(_) => "trace_aggregate",
            Kind::LatencyPercentile(_) => "latency_percentile",
            Kind::Adaptive(_) => "adaptive",
        }
    }

    /// Reads the policy block of `type_name` (the mapping under the key named like the type).
    pub fn parse(type_name: &str, block: Node<'_>, type_path: &str) -> Result<Kind> {
        let path = block.path().to_string();
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
            "trace_state" => Kind::TraceState(trace_state::TraceState::parse(m)?),
            "trace_flags" => Kind::TraceFlags(trace_flags::TraceFlags::parse(m)?),
            "rate_limiting" => Kind::RateLimiting(rate_limiting::RateLimiting::parse(m)?),
            "bytes_limiting" => Kind::BytesLimiting(bytes_limiting::BytesLimiting::parse(m)?),
            "and" => Kind::And(and::And::parse(m, &path)?),
            "not" => Kind::Not(not::Not::parse(m, &path)?),
            "drop" => Kind::Drop(drop::Drop::parse(m, &path)?),
            "composite" => Kind::Composite(composite::Composite::parse(m, &path)?),
            "ottl_condition" => Kind::OttlCondition(ottl_condition::OttlCondition::parse(m)?),
            "trace_aggregate" => Kind::TraceAggregate(trace_aggregate::TraceAggregate::parse(m)?),
            "latency_percentile" => {
                Kind::LatencyPercentile(latency_percentile::LatencyPercentile::parse(m)?)
            }
            "adaptive" => Kind::Adaptive(adaptive::Adaptive::parse(m)?),
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

    fn children(&self) -> &[Policy] {
        match self {
            Kind::And(p) => &p.subs,
            Kind::Drop(p) => &p.subs,
            Kind::Composite(p) => p.subs(),
            Kind::Not(p) => std::slice::from_ref(&*p.sub),
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Policy] {
        match self {
            Kind::And(p) => &mut p.subs,
            Kind::Drop(p) => &mut p.subs,
            Kind::Composite(p) => p.subs_mut(),
            Kind::Not(p) => std::slice::from_mut(&mut *p.sub),
            _ => &mut [],
        }
    }

    /// Attribute keys this policy (not its children) reads; the scanner extracts only these.
    pub fn attribute_keys(&self) -> Vec<String> {
        match self {
            Kind::StringAttribute(p) => vec![p.key.clone()],
            Kind::NumericAttribute(p) => vec![p.key.clone()],
            Kind::BooleanAttribute(p) => vec![p.key.clone()],
            Kind::OttlCondition(p) => p.attribute_keys(),
            Kind::TraceAggregate(p) => vec![p.key.clone()],
            Kind::LatencyPercentile(p) => p.key.attribute_keys(),
            Kind::Adaptive(p) => p.key.attribute_keys(),
            _ => Vec::new(),
        }
    }

    /// Resolves attribute keys to their index in the scanner's key set, and takes its matching mode
    /// (`AttrKeys::strict`: array elements are matched unless strict).
    pub fn bind(&mut self, keys: &AttrKeys) {
        match self {
            Kind::StringAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered");
                p.match_elements = !keys.strict();
            }
            Kind::NumericAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered");
                p.match_elements = !keys.strict();
            }
            Kind::BooleanAttribute(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered");
                p.match_elements = !keys.strict();
            }
            Kind::OttlCondition(p) => p.bind(keys),
            Kind::TraceAggregate(p) => {
                p.key_index = keys.index_of_str(&p.key).expect("key registered")
            }
            Kind::LatencyPercentile(p) => p.key.bind(keys),
            Kind::Adaptive(p) => p.key.bind(keys),
            _ => {}
        }
    }

    /// Whether this policy folds resources and spans into a summary bit at ingest.
    pub fn folds(&self) -> bool {
        matches!(
            self,
            Kind::StringAttribute(_)
                | Kind::NumericAttribute(_)
                | Kind::BooleanAttribute(_)
                | Kind::TraceState(_)
                | Kind::OttlCondition(_)
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

    /// Folding: this span's verdict.
    #[inline]
    pub fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        if let Kind::OttlCondition(p) = self {
            return p.span_fold(s);
        }
        let hit = match self {
            Kind::StringAttribute(p) => p.span_matches(s.attrs),
            Kind::NumericAttribute(p) => p.value_matches(s.attrs),
            Kind::BooleanAttribute(p) => p.value_matches(s.attrs),
            Kind::TraceState(p) => p.span_matches(s.span.trace_state),
            _ => false,
        };
        if hit {
            Fold::Match
        } else {
            Fold::NoMatch
        }
    }

    /// The vote on a decided trace. `matched` is this policy's folded bit (false if it does not fold).
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        matched: bool,
        now: i64,
    ) -> std::result::Result<Vote, String> {
        Ok(match self {
            Kind::AlwaysSample(p) => p.evaluate(t),
            Kind::StatusCode(p) => p.evaluate(t),
            Kind::Latency(p) => p.evaluate(t),
            Kind::Probabilistic(p) => p.evaluate(t),
            Kind::StringAttribute(p) => p.evaluate(matched),
            Kind::NumericAttribute(p) => p.evaluate(matched),
            Kind::BooleanAttribute(p) => p.evaluate(matched),
            Kind::SpanCount(p) => p.evaluate(t),
            Kind::TraceState(p) => p.evaluate(matched),
            Kind::TraceFlags(p) => p.evaluate(t),
            Kind::RateLimiting(p) => p.evaluate(t, now),
            Kind::BytesLimiting(p) => p.evaluate(t, now),
            Kind::And(p) => return p.evaluate(t, now),
            Kind::Not(p) => return p.evaluate(t, now),
            Kind::Drop(p) => return p.evaluate(t, now),
            Kind::Composite(p) => return p.evaluate(t, now),
            Kind::OttlCondition(p) => p.evaluate(matched),
            Kind::TraceAggregate(p) => p.evaluate(t),
            Kind::LatencyPercentile(p) => p.evaluate(t, now),
            Kind::Adaptive(p) => p.evaluate(t, now),
        })
    }

    /// The trace key of a keyed policy, for slot assignment.
    pub fn trace_key_mut(&mut self) -> Option<&mut trace_key::TraceKey> {
        match self {
            Kind::LatencyPercentile(p) => Some(&mut p.key),
            Kind::Adaptive(p) => Some(&mut p.key),
            _ => None,
        }
    }

    /// How this policy's `vote` on the trace just evaluated depends on the trace's randomness.
    pub fn inclusion(&self, vote: Vote) -> inclusion::Inclusion {
        use inclusion::Inclusion;
        let sampled = vote == Vote::Sampled;
        match self {
            Kind::Probabilistic(p) => p.inclusion(),
            Kind::Adaptive(p) => Inclusion::Threshold(p.last_threshold),
            // Their votes depend on other traces (tokens, allocations), not on this trace's randomness.
            Kind::RateLimiting(_) | Kind::BytesLimiting(_) | Kind::Composite(_) if sampled => {
                Inclusion::Unknown
            }
            Kind::And(p) => p.inclusion(),
            Kind::Not(p) => p.sub.inclusion().negate(),
            Kind::Drop(_) => Inclusion::Never,
            _ if sampled => Inclusion::Always,
            _ => Inclusion::Never,
        }
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
