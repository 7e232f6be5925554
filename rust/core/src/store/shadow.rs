//! Shadow policies (`tailsample.shadow.policies`): a second policy set judged on every trace the live set decides,
//! with the same precedence, never changing what is kept. Its instances, rate limits and state are its own (one
//! per shard, as the live set's); its folding policies have their own slots, folded at ingest with the live ones.
//!
//! Per shard: counters per shadow policy, totals of what each side keeps (live only, shadow only, both: traces,
//! spans, bytes), the must-keep traces (errors, slow) one side keeps and the other would lose, and a bounded ring of
//! the latest disagreements (`max_disagreements`, oldest forgotten first and counted) for `tailsample diff`.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::stats::PolicyCounters;
use crate::policy::decision::{self, Ballot, Outcome};
use crate::policy::{status_bits, Policy, TraceView, Vote};

/// Disagreements remembered per engine by default (`tailsample.shadow.max_disagreements`).
pub const DEFAULT_MAX_DISAGREEMENTS: usize = 10_000;
/// A trace at least this long is in the `slow` must-keep class by default (`tailsample.shadow.slow_threshold`).
pub const DEFAULT_SLOW_THRESHOLD_NS: i64 = 1_000_000_000;

/// `tailsample.shadow` as configured.
#[derive(Debug, Clone)]
pub struct ShadowConfig {
    pub policies: Vec<Policy>,
    /// Kept spans carry the shadow verdict (`tailsampling.shadow.decision`, and `tailsampling.shadow.policy`
    /// when the shadow set would keep the trace): Refinery's dry run.
    pub attribute: bool,
    pub max_disagreements: usize,
    pub slow_threshold_ns: i64,
    /// The policies as written, for the normalized configuration.
    pub blocks: Vec<Value>,
}

/// What the shadow set would have done with one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowVerdict {
    pub outcome: Outcome,
    /// The deciding shadow policy (index in `tailsample.shadow.policies`) of a kept trace.
    pub policy: Option<u16>,
}

/// A shadow verdict in one byte, as the decision log keeps it (its records stay within their stated size):
/// 0 is none; else the outcome's number + 1 in the top 3 bits and the deciding policy + 1 in the low 5 (0: a
/// policy past the 31st, recorded as unknown; the shadow report's counters still name it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedVerdict(u8);

const OUTCOMES: [Outcome; 6] = [
    Outcome::Sampled,
    Outcome::NotSampled,
    Outcome::DroppedByPolicy,
    Outcome::DroppedTooLarge,
    Outcome::DroppedOnShutdown,
    Outcome::Evicted,
];

impl PackedVerdict {
    pub const NONE: PackedVerdict = PackedVerdict(0);

    pub fn pack(v: Option<ShadowVerdict>) -> Self {
        let Some(v) = v else { return Self::NONE };
        let o = OUTCOMES.iter().position(|&o| o == v.outcome).unwrap_or(1) as u8 + 1;
        let p = v.policy.filter(|&i| i < 31).map_or(0, |i| i as u8 + 1);
        PackedVerdict(o << 5 | p)
    }

    pub fn unpack(self) -> Option<ShadowVerdict> {
        let o = (self.0 >> 5) as usize;
        let outcome = *OUTCOMES.get(o.checked_sub(1)?)?;
        let p = self.0 & 0x1f;
        Some(ShadowVerdict {
            outcome,
            policy: p.checked_sub(1).map(u16::from),
        })
    }
}

/// A trace the two sets judged differently.
#[derive(Debug, Clone, Copy)]
pub struct Disagreement {
    pub trace_id: u128,
    pub live: Outcome,
    pub live_policy: Option<u16>,
    pub shadow: ShadowVerdict,
    pub spans: u32,
    /// Bytes of its spans as buffered (framed span bytes).
    pub bytes: u64,
    pub error: bool,
    pub slow: bool,
    pub duration_ns: u64,
    pub decided_at: i64,
}

/// Which side kept a trace: index into the `[u64; 3]` totals.
pub const LIVE_ONLY: usize = 0;
pub const SHADOW_ONLY: usize = 1;
pub const BOTH: usize = 2;

/// Totals over every trace both sets judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowTotals {
    pub traces_judged: u64,
    pub spans_judged: u64,
    pub bytes_judged: u64,
    /// Kept by live only, shadow only, both.
    pub traces: [u64; 3],
    pub spans: [u64; 3],
    pub bytes: [u64; 3],
    /// Error / slow traces live keeps and the shadow would not (and the other way round).
    pub errors_lost_by_shadow: u64,
    pub slow_lost_by_shadow: u64,
    pub errors_lost_by_live: u64,
    pub slow_lost_by_live: u64,
    /// Engine time (ns) of the first and last judgement: the observed window.
    pub first_at: i64,
    pub last_at: i64,
    pub disagreements_forgotten: u64,
}

impl ShadowTotals {
    pub fn add(&mut self, o: &ShadowTotals) {
        self.traces_judged += o.traces_judged;
        self.spans_judged += o.spans_judged;
        self.bytes_judged += o.bytes_judged;
        for k in 0..3 {
            self.traces[k] += o.traces[k];
            self.spans[k] += o.spans[k];
            self.bytes[k] += o.bytes[k];
        }
        self.errors_lost_by_shadow += o.errors_lost_by_shadow;
        self.slow_lost_by_shadow += o.slow_lost_by_shadow;
        self.errors_lost_by_live += o.errors_lost_by_live;
        self.slow_lost_by_live += o.slow_lost_by_live;
        self.disagreements_forgotten += o.disagreements_forgotten;
        if o.traces_judged > 0 {
            self.first_at = if self.first_at == 0 {
                o.first_at
            } else {
                self.first_at.min(o.first_at)
            };
            self.last_at = self.last_at.max(o.last_at);
        }
    }
}

/// One shard's shadow set.
pub struct ShadowSet {
    policies: Vec<Policy>,
    eval_order: Vec<usize>,
    pub attribute: bool,
    max_disagreements: usize,
    slow_threshold_ns: i64,
    pub stats: Vec<PolicyCounters>,
    pub totals: ShadowTotals,
    disagreements: VecDeque<Disagreement>,
    cast: Vec<(usize, Ballot)>,
}

impl ShadowSet {
    /// This shard's instances of the shadow policies; `max_disagreements` is its share of the engine's.
    pub fn new(cfg: &ShadowConfig, max_disagreements: usize) -> Self {
        let policies = cfg.policies.clone();
        let is_drop = |p: &Policy| p.kind.vetoes();
        // As the live set: the drop policies first, then the others in configuration order.
        let eval_order = (0..policies.len())
            .filter(|&i| is_drop(&policies[i]))
            .chain((0..policies.len()).filter(|&i| !is_drop(&policies[i])))
            .collect();
        let n = policies.len();
        ShadowSet {
            policies,
            eval_order,
            attribute: cfg.attribute,
            max_disagreements,
            slow_threshold_ns: cfg.slow_threshold_ns,
            stats: vec![PolicyCounters::default(); n],
            totals: ShadowTotals::default(),
            disagreements: VecDeque::new(),
            cast: Vec::with_capacity(n),
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The shadow set's verdict on a trace due now (the live set's evaluation, on the shadow's instances).
    pub fn judge(
        &mut self,
        view: &TraceView,
        now: i64,
        sample_on_first_match: bool,
    ) -> ShadowVerdict {
        self.cast.clear();
        for k in 0..self.eval_order.len() {
            let i = self.eval_order[k];
            let result = self.policies[i].evaluate(view, now);
            match result {
                Ok((vote, _)) => {
                    let c = &mut self.stats[i];
                    match vote {
                        Vote::Sampled => c.sampled += 1,
                        Vote::NotSampled => c.not_sampled += 1,
                        Vote::Dropped => c.dropped += 1,
                    }
                    self.cast.push((i, Ballot::of(&result)));
                    if decision::stops(vote, sample_on_first_match) {
                        break;
                    }
                }
                Err(_) => self.stats[i].errors += 1,
            }
        }
        let (outcome, policy) = decision::precedence(self.cast.iter().copied());
        if let Some(i) = policy {
            self.stats[i].decided += 1;
        }
        ShadowVerdict {
            outcome,
            policy: policy.map(|i| i as u16),
        }
    }

    /// Counts one judged trace beside the live outcome; remembers it when the two differ.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        id: u128,
        view: &TraceView,
        bytes: u64,
        live: Outcome,
        live_policy: Option<u16>,
        shadow: ShadowVerdict,
        now: i64,
    ) {
        let t = &mut self.totals;
        if t.traces_judged == 0 {
            t.first_at = now;
        }
        t.last_at = now;
        let spans = u64::from(view.span_count);
        t.traces_judged += 1;
        t.spans_judged += spans;
        t.bytes_judged += bytes;
        let (live_kept, shadow_kept) =
            (live == Outcome::Sampled, shadow.outcome == Outcome::Sampled);
        let side = match (live_kept, shadow_kept) {
            (false, false) => return,
            (true, true) => BOTH,
            (true, false) => LIVE_ONLY,
            (false, true) => SHADOW_ONLY,
        };
        t.traces[side] += 1;
        t.spans[side] += spans;
        t.bytes[side] += bytes;
        if side == BOTH {
            return;
        }
        let error = view.status_mask & status_bits::ERROR != 0;
        let duration_ns = view
            .max_end_unix_nano
            .saturating_sub(view.min_start_unix_nano);
        let slow =
            view.min_start_unix_nano != 0 && duration_ns >= self.slow_threshold_ns.max(0) as u64;
        if side == LIVE_ONLY {
            t.errors_lost_by_shadow += u64::from(error);
            t.slow_lost_by_shadow += u64::from(slow);
        } else {
            t.errors_lost_by_live += u64::from(error);
            t.slow_lost_by_live += u64::from(slow);
        }
        if self.max_disagreements == 0 {
            t.disagreements_forgotten += 1;
            return;
        }
        if self.disagreements.len() >= self.max_disagreements {
            self.disagreements.pop_front();
            t.disagreements_forgotten += 1;
        }
        self.disagreements.push_back(Disagreement {
            trace_id: id,
            live,
            live_policy,
            shadow,
            spans: view.span_count,
            bytes,
            error,
            slow,
            duration_ns,
            decided_at: now,
        });
    }

    pub fn disagreements(&self) -> impl Iterator<Item = &Disagreement> {
        self.disagreements.iter()
    }

    /// Bytes held by the ring of disagreements.
    pub fn memory_bytes(&self) -> u64 {
        (self.disagreements.capacity() * std::mem::size_of::<Disagreement>()) as u64
    }
}

/// The shadow set over every shard: `Engine::shadow_report`.
#[derive(Debug, Clone, Default)]
pub struct ShadowReport {
    /// Per shadow policy, in configuration order.
    pub policies: Vec<(String, PolicyCounters)>,
    pub totals: ShadowTotals,
    /// The latest disagreements, oldest first (up to `max_disagreements` over the engine).
    pub disagreements: Vec<Disagreement>,
    pub disagreements_bytes: u64,
}

impl ShadowReport {
    /// The report as JSON (the debug endpoint's body): policy names resolved, trace IDs in hex, times in seconds;
    /// the newest `limit` disagreements only (a metrics scrape needs none of them).
    pub fn to_json(&self, live_names: &[&str], slow_threshold_ns: i64, limit: usize) -> Value {
        let t = &self.totals;
        let shadow_names: Vec<&str> = self.policies.iter().map(|(n, _)| n.as_str()).collect();
        let side =
            |k: usize| json!({"traces": t.traces[k], "spans": t.spans[k], "bytes": t.bytes[k]});
        let name = |names: &[&str], i: Option<u16>| {
            i.and_then(|i| names.get(usize::from(i)).map(|n| n.to_string()))
        };
        let policies: serde_json::Map<String, Value> = self
            .policies
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    json!({"sampled": c.sampled, "not_sampled": c.not_sampled, "dropped": c.dropped,
                           "errors": c.errors, "decided": c.decided}),
                )
            })
            .collect();
        let skip = self.disagreements.len().saturating_sub(limit);
        let disagreements: Vec<Value> = self.disagreements[skip..]
            .iter()
            .map(|d| {
                json!({
                    "trace_id": format!("{:032x}", d.trace_id),
                    "live": d.live.name(),
                    "live_policy": name(live_names, d.live_policy),
                    "shadow": d.shadow.outcome.name(),
                    "shadow_policy": name(&shadow_names, d.shadow.policy),
                    "spans": d.spans,
                    "bytes": d.bytes,
                    "error": d.error,
                    "slow": d.slow,
                    "duration_seconds": d.duration_ns as f64 / 1e9,
                    "decided_at": d.decided_at as f64 / 1e9,
                })
            })
            .collect();
        let window = if t.traces_judged > 0 {
            t.last_at.saturating_sub(t.first_at) as f64 / 1e9
        } else {
            0.0
        };
        json!({
            "policies": policies,
            "traces_judged": t.traces_judged,
            "spans_judged": t.spans_judged,
            "bytes_judged": t.bytes_judged,
            "live_only": side(LIVE_ONLY),
            "shadow_only": side(SHADOW_ONLY),
            "both": side(BOTH),
            "errors_lost_by_shadow": t.errors_lost_by_shadow,
            "slow_lost_by_shadow": t.slow_lost_by_shadow,
            "errors_lost_by_live": t.errors_lost_by_live,
            "slow_lost_by_live": t.slow_lost_by_live,
            "window_seconds": window,
            "slow_threshold_seconds": slow_threshold_ns as f64 / 1e9,
            "disagreements": disagreements,
            "disagreements_held": self.disagreements.len(),
            "disagreements_forgotten": t.disagreements_forgotten,
            "disagreements_bytes": self.disagreements_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_verdicts_round_trip() {
        assert_eq!(PackedVerdict::pack(None).unpack(), None);
        for outcome in OUTCOMES {
            for policy in [None, Some(0), Some(7), Some(30)] {
                let v = ShadowVerdict { outcome, policy };
                assert_eq!(PackedVerdict::pack(Some(v)).unpack(), Some(v));
            }
        }
        let far = ShadowVerdict {
            outcome: Outcome::Sampled,
            policy: Some(31),
        };
        assert_eq!(
            PackedVerdict::pack(Some(far)).unpack().unwrap().policy,
            None
        );
    }
}
