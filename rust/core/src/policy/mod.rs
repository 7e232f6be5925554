//! Sampling policies, one file each, behind one closed enum.
//!
//! A policy never reads the clock, takes a lock or allocates per span. It sees a trace in two ways:
//! - at ingest, policies that look at attributes *fold* each resource and span into one bit of the trace's
//!   summary (`resource_matches`, `span_fold`), so that deciding rarely re-reads a span;
//! - at decision time, `PolicyType::vote` reads the summary (`TraceView`) and votes.
//!
//! Precedence of votes, written once (`decision::precedence`): any `drop` → dropped; else any sampled →
//! sampled; else not sampled. An evaluation error counts as no vote. Combinators (`and`, `not`, `drop`,
//! `composite`) hold sub-policies of the same type; an error in a sub-policy is the combinator's error.
//!
//! # Adding a policy: one file, one line
//! 1. Write `policy/<name>.rs`: its struct, its tests, and `impl PolicyType for <Type>`: `TYPE` (its name in
//!    the YAML), `from_block` (read and validate its block; errors name the key and list accepted values) and
//!    `vote` (its vote and `Inclusion`). Override the trait's defaults only for what it does beyond reading the
//!    summary: attribute keys and folding, sub-policies, trace keys, OTEP 235 values, trace sizes.
//! 2. Add `Variant(<name>::Type),` to `policies!` below. That declares the module, adds the variant to `Kind`,
//!    its name to `SUPPORTED` (so configuration reads it and errors list it), and every dispatch; the store,
//!    the engine and the configuration call `Kind`'s methods and never name a policy type.
//!
//! # The types of a decision, and why each remains
//! - `Vote` (`decision`): one policy's vote on one trace: sampled, not sampled, or dropped (a veto).
//! - `Inclusion` (`inclusion`): how that vote depends on the trace's randomness, cast beside the vote.
//! - `Ballot` (`decision`): a vote as a decision records it, with "not evaluated" and "failed".
//! - `Decision` (`decision`): what was decided for a trace: its `Outcome`, the deciding policy, every
//!   top-level `Ballot`, and the probability it was kept with (`Stage`). The decision log and `explain` hold it.
//! - `Stage` (`inclusion`): a kept trace's sampling probability, written on its spans and in the caches.
//! - `Fold`: one span's match at ingest for a folding policy: not a vote on the trace.
//! - `store::Trigger`: why the decision was taken *when* it was (timer, root, flush, ingest or eviction): it
//!   belongs to the store's timing, not to the judgement.
//! - `store::shard::Knowledge`: what the store knows of a trace ID (pending, a recorded `Decision`, or only
//!   its cache entry), for `explain`.
//! - `durable::Verdict`: the part of a decision that replay needs, as written to disk (kept by which policy
//!   at which stage, not kept, or left undecided); its encoding is the on-disk format.

pub mod decision;
pub mod inclusion;
pub mod ottl;
pub mod re2;
pub mod trace_key;

use crate::config::node::{describe, Mapping, Node};
use crate::error::{Error, Result};
use crate::otlp::decode::{AttrKeys, AttrValue, SpanView};
use serde_json::Value;

pub use decision::Vote;
use inclusion::Inclusion;

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
///
/// One is held per buffered trace, so it carries only what every configuration reads; the rest (sizes, trace
/// keys, aggregates, OTEP 235 values) sits in [`ViewExtra`], allocated the first time one of them is written:
/// without those policies a trace pays 8 bytes for them, not 96.
#[derive(Debug, Clone, Default)]
pub struct TraceView {
    pub trace_id: [u8; 16],
    pub span_count: u32,
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
    /// None until a rarely-read fact is written (all zeros then).
    pub extra: Option<Box<ViewExtra>>,
}

/// The facts of a [`TraceView`] that only some configurations read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewExtra {
    /// The trace's size as the reference measures it for `maximum_trace_size_bytes` (the sum of
    /// `ResourceSpansSize` of each payload's share, under its resource and scopes, as pdata re-encodes it);
    /// 0 when nothing reads sizes.
    pub bytes: u64,
    /// The trace's size as the reference measures it for `bytes_limiting` (`ptrace.ProtoMarshaler.TracesSize`
    /// of its received batches: the same shares, each framed); 0 when nothing reads sizes.
    pub otlp_bytes: u64,
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

/// What a trace without a [`ViewExtra`] reads: all zeros.
static NO_EXTRA: ViewExtra = ViewExtra {
    bytes: 0,
    otlp_bytes: 0,
    aggregates: [0.0; trace_aggregate::MAX_AGGREGATES],
    aggregates_present: 0,
    keys: [0; trace_key::MAX_KEYED],
    keys_from_root: false,
    ot_th: 0,
    ot_rv: 0,
    ot_present: 0,
};

/// Bits of `TraceView::ot_present`.
pub mod ot_bits {
    pub const SEEN: u8 = 1;
    pub const TH: u8 = 2;
    pub const RV: u8 = 4;
}

impl TraceView {
    /// The rarely-read facts (all zeros when none was written).
    #[inline]
    pub fn extra(&self) -> &ViewExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The rarely-read facts, to write: allocated on first use.
    #[inline]
    pub fn extra_mut(&mut self) -> &mut ViewExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The trace's 56-bit randomness (OTEP 235): its `rv` if a span carried one, else the trace ID's last 7 bytes.
    #[inline]
    pub fn randomness(&self) -> u64 {
        let e = self.extra();
        if e.ot_present & ot_bits::RV != 0 {
            e.ot_rv
        } else {
            crate::consistent::trace_id_randomness(&self.trace_id)
        }
    }

    /// The incoming threshold (`th`), if a span carried one.
    #[inline]
    pub fn threshold_in(&self) -> Option<u64> {
        let e = self.extra();
        (e.ot_present & ot_bits::TH != 0).then_some(e.ot_th)
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

/// What every policy type implements, in its own file; the only required parts are its name, its reading and
/// its vote. The defaults describe a policy that reads the summary alone: no attributes, no folding, no
/// sub-policies, kept `Always` when it samples.
pub trait PolicyType: Sized {
    /// Its `type` in the YAML (and the key of its block).
    const TYPE: &'static str;

    /// Reads its block (the mapping under the key named like the type); `path` is the block's path.
    fn from_block(m: Mapping<'_>, path: &str) -> Result<Self>;

    /// The vote on a decided trace, and how it depends on the trace's randomness. `matched` is this policy's
    /// folded bit (false if it does not fold); `now` is the engine clock (ns), for the stateful policies.
    fn vote(
        &mut self,
        t: &TraceView,
        matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String>;

    /// Sub-policies (combinators).
    fn children(&self) -> &[Policy] {
        &[]
    }
    fn children_mut(&mut self) -> &mut [Policy] {
        &mut []
    }
    /// Attribute keys this policy (not its children) reads; the scanner extracts only these.
    fn attribute_keys(&self) -> Vec<String> {
        Vec::new()
    }
    /// Resolves attribute keys to their index in the scanner's key set, and takes its matching mode.
    fn bind(&mut self, _keys: &AttrKeys) {}
    /// Whether this policy folds resources and spans into a summary bit at ingest.
    fn folds(&self) -> bool {
        false
    }
    /// Folding: does this resource (its extracted attributes) match?
    fn resource_matches(&self, _attrs: &[AttrValue<'_>]) -> bool {
        false
    }
    /// Folding: this span's verdict.
    fn span_fold(&self, _s: &SpanFacts<'_, '_>) -> Fold {
        Fold::NoMatch
    }
    /// The trace key of a keyed policy, for slot assignment.
    fn trace_key_mut(&mut self) -> Option<&mut trace_key::TraceKey> {
        None
    }
    /// A `trace_aggregate` policy, for slot assignment.
    fn aggregate_mut(&mut self) -> Option<&mut trace_aggregate::TraceAggregate> {
        None
    }
    /// It reads spans' OTEP 235 `th`/`rv` (consistent samplers).
    fn reads_ot(&self) -> bool {
        false
    }
    /// It reads trace sizes, measured at ingest.
    fn measures_size(&self) -> bool {
        false
    }
    /// Its `Dropped` vote vetoes every other: evaluated before the others (`drop`).
    fn vetoes(&self) -> bool {
        false
    }
    /// The sub-policy that sampled the trace it sampled last (`tailsampling.composite_policy`).
    fn sampled_by(&self) -> Option<&str> {
        None
    }
    /// Keys tracked, traces judged under the overflow key, and bytes of state (stateful policies).
    fn state(&self) -> (u64, u64, u64) {
        (0, 0, 0)
    }
}

/// The vote of a policy that keeps a trace for its content alone: `Always` when sampled, else `Never`.
#[inline]
pub fn certain(vote: Vote) -> (Vote, Inclusion) {
    let inclusion = if vote == Vote::Sampled {
        Inclusion::Always
    } else {
        Inclusion::Never
    };
    (vote, inclusion)
}

impl Fold {
    #[inline]
    pub fn of(hit: bool) -> Fold {
        if hit {
            Fold::Match
        } else {
            Fold::NoMatch
        }
    }
}

/// Declares the policy modules and the closed enum over their types (`Kind`), whose methods dispatch to
/// `PolicyType` with a `match`: static dispatch, no allocation, as cheap per span as hand-written arms.
macro_rules! policies {
    ($($variant:ident($module:ident::$ty:ident)),* $(,)?) => {
        $(pub mod $module;)*

        /// One configured policy of any type.
        #[derive(Debug, Clone)]
        pub enum Kind {
            $($variant($module::$ty),)*
        }

        /// The policy types tailsample runs, as written in the YAML.
        pub const SUPPORTED: &[&str] = &[$(<$module::$ty as PolicyType>::TYPE,)*];

        impl Kind {
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Kind::$variant(_) => <$module::$ty as PolicyType>::TYPE,)*
                }
            }

            /// The registered type named `type_name` reading its block, if one is registered.
            fn parse_registered(type_name: &str, m: Mapping<'_>, path: &str) -> Option<Result<Kind>> {
                $(
                    if type_name == <$module::$ty as PolicyType>::TYPE {
                        return Some(<$module::$ty as PolicyType>::from_block(m, path).map(Kind::$variant));
                    }
                )*
                None
            }

            fn children(&self) -> &[Policy] {
                match self {
                    $(Kind::$variant(p) => PolicyType::children(p),)*
                }
            }

            fn children_mut(&mut self) -> &mut [Policy] {
                match self {
                    $(Kind::$variant(p) => PolicyType::children_mut(p),)*
                }
            }

            /// Attribute keys this policy (not its children) reads; the scanner extracts only these.
            pub fn attribute_keys(&self) -> Vec<String> {
                match self {
                    $(Kind::$variant(p) => PolicyType::attribute_keys(p),)*
                }
            }

            /// Resolves attribute keys to their index in the scanner's key set, and takes its matching mode
            /// (`AttrKeys::strict`: array elements are matched unless strict).
            pub fn bind(&mut self, keys: &AttrKeys) {
                match self {
                    $(Kind::$variant(p) => PolicyType::bind(p, keys),)*
                }
            }

            /// Whether this policy folds resources and spans into a summary bit at ingest.
            pub fn folds(&self) -> bool {
                match self {
                    $(Kind::$variant(p) => PolicyType::folds(p),)*
                }
            }

            /// Folding: does this resource (its extracted attributes) match?
            #[inline]
            pub fn resource_matches(&self, attrs: &[AttrValue<'_>]) -> bool {
                match self {
                    $(Kind::$variant(p) => PolicyType::resource_matches(p, attrs),)*
                }
            }

            /// Folding: this span's verdict.
            #[inline]
            pub fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
                match self {
                    $(Kind::$variant(p) => PolicyType::span_fold(p, s),)*
                }
            }

            /// The vote on a decided trace, and its inclusion. `matched` is this policy's folded bit.
            pub fn evaluate(
                &mut self,
                t: &TraceView,
                matched: bool,
                now: i64,
            ) -> std::result::Result<(Vote, Inclusion), String> {
                match self {
                    $(Kind::$variant(p) => PolicyType::vote(p, t, matched, now),)*
                }
            }

            /// The trace key of a keyed policy, for slot assignment.
            pub fn trace_key_mut(&mut self) -> Option<&mut trace_key::TraceKey> {
                match self {
                    $(Kind::$variant(p) => PolicyType::trace_key_mut(p),)*
                }
            }

            /// A `trace_aggregate` policy, for slot assignment.
            pub fn aggregate_mut(&mut self) -> Option<&mut trace_aggregate::TraceAggregate> {
                match self {
                    $(Kind::$variant(p) => PolicyType::aggregate_mut(p),)*
                }
            }

            /// It reads spans' OTEP 235 `th`/`rv`.
            pub fn reads_ot(&self) -> bool {
                match self {
                    $(Kind::$variant(p) => PolicyType::reads_ot(p),)*
                }
            }

            /// It reads trace sizes.
            pub fn measures_size(&self) -> bool {
                match self {
                    $(Kind::$variant(p) => PolicyType::measures_size(p),)*
                }
            }

            /// Its `Dropped` vote vetoes every other (evaluated first).
            pub fn vetoes(&self) -> bool {
                match self {
                    $(Kind::$variant(p) => PolicyType::vetoes(p),)*
                }
            }

            /// The sub-policy that sampled the trace it sampled last.
            pub fn sampled_by(&self) -> Option<&str> {
                match self {
                    $(Kind::$variant(p) => PolicyType::sampled_by(p),)*
                }
            }

            /// Keys tracked, traces judged under the overflow key, bytes of state.
            pub fn state(&self) -> (u64, u64, u64) {
                match self {
                    $(Kind::$variant(p) => PolicyType::state(p),)*
                }
            }
        }
    };
}

// The registry: one line per policy type (`Variant(module::Type)`); the module is declared here too.
policies! {
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

/// A named policy with its place in the trace summary.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub kind: Kind,
    /// The bit of `TraceView::matched` this policy folds into, if it folds.
    pub slot: Option<u8>,
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
                    if path == "policies" || path == "tailsample.shadow.policies" {
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

    /// The vote on a decided trace, and how it depends on the trace's randomness (`inclusion`); `now` is the
    /// engine clock (ns), for the stateful policies.
    pub fn evaluate(
        &mut self,
        t: &TraceView,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let (matched, failed) = match self.slot {
            Some(s) => (t.matched & (1u64 << s) != 0, t.errors & (1u64 << s) != 0),
            None => (false, false),
        };
        // A definite match on some span wins over a failure on another.
        if failed && !matched {
            return Err(format!("policy {:?} failed to evaluate a span", self.name));
        }
        self.kind.evaluate(t, matched, now)
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
    /// Reads the policy block of `type_name` (the mapping under the key named like the type).
    pub fn parse(type_name: &str, block: Node<'_>, type_path: &str) -> Result<Kind> {
        let path = block.path().to_string();
        let m = block.mapping()?;
        if let Some(kind) = Kind::parse_registered(type_name, m, &path) {
            return kind;
        }
        let supported = SUPPORTED.join(", ");
        Err(Error::config(
            type_path,
            format!("unknown policy type {type_name:?}; supported: {supported}"),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Scenario: the registry. Guarantees: every registered type is named once in `SUPPORTED`, is read from
    /// its own block by `Policy::parse` and names itself back, so one `policies!` line is all a type needs.
    #[test]
    fn every_registered_type_is_read_by_its_name() {
        let mut seen = std::collections::HashSet::new();
        for &name in SUPPORTED {
            assert!(seen.insert(name), "{name} registered twice");
            let Err(e) = Policy::parse(&json!({"name": "p", "type": name, name: 1}), "policies[0]")
            else {
                panic!("{name}: a block that is not a mapping must be refused");
            };
            assert!(
                e.to_string().contains(&format!("policies[0].{name}")),
                "{name}: {e}"
            );
        }
        let p = Policy::parse(
            &json!({"name": "p", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}),
            "policies[0]",
        )
        .unwrap();
        assert_eq!(p.kind.type_name(), "status_code");
    }

    /// Scenario: a type nobody registered. Guarantees: a configuration error at its `type` that lists every
    /// registered type.
    #[test]
    fn unknown_types_list_the_registry() {
        let e = Policy::parse(&json!({"name": "p", "type": "nope"}), "policies[0]").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("policies[0].type"), "{msg}");
        for name in SUPPORTED {
            assert!(msg.contains(name), "{msg}");
        }
    }

    /// Scenario: combinators cast their sub-policies' inclusion with their vote (no state between
    /// evaluations). Guarantees: `not` over a certain sample never keeps; `and` over a sample and a
    /// non-sample is `Never`; a sub-policy `and` never reached makes the conjunction unknown.
    #[test]
    fn combinators_cast_inclusion_with_the_vote() {
        let parse = |v: serde_json::Value| Policy::parse(&v, "p").unwrap();
        let err = TraceView {
            status_mask: status_bits::ERROR,
            ..Default::default()
        };
        let mut not = parse(json!({"name": "n", "type": "not", "not": {"not_sub_policy":
            {"name": "s", "type": "always_sample"}}}));
        assert_eq!(
            not.evaluate(&err, 0),
            Ok((Vote::NotSampled, Inclusion::Never))
        );
        let mut and = parse(
            json!({"name": "a", "type": "and", "and": {"and_sub_policy": [
            {"name": "e", "type": "status_code", "status_code": {"status_codes": ["OK"]}},
            {"name": "s", "type": "always_sample"}]}}),
        );
        assert_eq!(
            and.evaluate(&err, 0),
            Ok((Vote::NotSampled, Inclusion::Never))
        );
        let mut and_p = parse(
            json!({"name": "a", "type": "and", "and": {"and_sub_policy": [
            {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}},
            {"name": "s", "type": "always_sample"}]}}),
        );
        assert_eq!(and_p.evaluate(&err, 0).unwrap().1, Inclusion::Unknown);
    }
}
