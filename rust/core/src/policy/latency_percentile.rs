//! `latency_percentile` (tailsample only): sampled if the trace's duration is above the rolling percentile
//! (default p99) of its group's durations.
//!
//! - **Group**: `group_by` fields of the root span (default `service.name` and `span.name`; see `trace_key`).
//! - **Duration**: as the `latency` policy measures it, latest span end minus earliest span start.
//! - **Percentile**: from a DDSketch of the group's durations over a sliding `window` (default 5 minutes, in
//!   `window_slices` slices), with relative error `relative_accuracy` (default 1 %; the bound is 2 %).
//!   The trace is compared with the durations decided before it, then added, whether kept or not.
//! - **Before a group has `min_samples` durations in its window** (default 100), the percentile is not
//!   meaningful: the policy votes `warmup_decision` (default `sampled`: a new or quiet group's traces are kept
//!   until its distribution is known, at most `min_samples` per group per window).
//! - **Bounds**: at most `max_groups` groups (default 1,000); the traces of further groups share one overflow
//!   group. A group whose window is empty is forgotten. Memory per group: (`window_slices` + 1) sketches of
//!   about 4 bytes per bucket, ~460 buckets for durations spread over 1 ms–10 s at 1 % (≈ 14 KiB with 5 slices,
//!   growth slack included).
//! - The groups are shared by the engine's shards. With `sample_on_first_match`, a trace kept by an earlier
//!   policy is not offered to this one, so its duration is not counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::inclusion::Inclusion;
use super::{certain, PolicyType, TraceView, Vote};
use super::trace_key::TraceKey;
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use crate::otlp::decode::AttrKeys;
use crate::sketch::WindowedSketch;

#[derive(Debug, Clone)]
pub struct Settings {
    /// In (0, 100).
    pub percentile: f64,
    pub window_ns: i64,
    pub window_slices: usize,
    pub relative_accuracy: f64,
    pub min_samples: u64,
    pub warmup_decision: Vote,
    pub max_groups: usize,
}

#[derive(Debug)]
struct Group {
    sketch: WindowedSketch,
    /// The percentile as last computed, and how many durations were added since.
    threshold: Option<f64>,
    added_since: u64,
}

impl Group {
    fn new(s: &Settings) -> Self {
        Group {
            sketch: WindowedSketch::new(s.relative_accuracy, s.window_ns, s.window_slices),
            threshold: None,
            added_since: 0,
        }
    }

    /// This trace's vote, then its duration joins the group.
    fn judge(&mut self, s: &Settings, duration: f64, now: i64) -> Vote {
        let n = self.sketch.count(now);
        let vote = if n < s.min_samples {
            s.warmup_decision
        } else {
            // Recomputed after every ~0.4 % of new durations (at most every 64): the answer moves little in
            // between, and a scan per decision would cost more than the decision.
            let every = (n / 256).clamp(1, 64);
            if self.threshold.is_none() || self.added_since >= every {
                self.threshold = self.sketch.quantile(s.percentile / 100.0, now);
                self.added_since = 0;
            }
            match self.threshold {
                Some(p) if duration > p => Vote::Sampled,
                _ => Vote::NotSampled,
            }
        };
        self.sketch.add(duration, now);
        self.added_since += 1;
        vote
    }
}

#[derive(Debug, Default)]
struct Groups {
    by_key: HashMap<u64, Group>,
    overflow: Option<Group>,
    /// Traces judged in the overflow group.
    overflowed: u64,
    next_sweep: i64,
}

#[derive(Debug, Clone)]
pub struct LatencyPercentile {
    pub settings: Settings,
    pub key: TraceKey,
    groups: Arc<Mutex<Groups>>,
}

impl LatencyPercentile {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let pct_path = m.key_path("percentile");
        let percentile = m.float("percentile", 99.0)?;
        if !(percentile > 0.0 && percentile < 100.0) {
            return Err(Error::config(
                pct_path,
                format!("must be between 0 and 100 (exclusive), got {percentile}"),
            ));
        }
        let key = TraceKey::parse(&mut m, "group_by", &["service.name", "span.name"])?;
        let window_path = m.key_path("window");
        let window_ns = m.duration("window", 300_000_000_000)?;
        if window_ns <= 0 {
            return Err(Error::config(window_path, "must be a positive duration"));
        }
        let slices_path = m.key_path("window_slices");
        let window_slices = m.int("window_slices", 5)?;
        if !(1..=60).contains(&window_slices) {
            return Err(Error::config(
                slices_path,
                format!("must be between 1 and 60, got {window_slices}"),
            ));
        }
        let acc_path = m.key_path("relative_accuracy");
        let relative_accuracy = m.float(
            "relative_accuracy",
            crate::sketch::DEFAULT_RELATIVE_ACCURACY,
        )?;
        if !(0.001..=0.1).contains(&relative_accuracy) {
            return Err(Error::config(
                acc_path,
                format!("must be between 0.001 and 0.1, got {relative_accuracy}"),
            ));
        }
        let min_samples = m.int_at_least("min_samples", 100, 1)? as u64;
        let warm_path = m.key_path("warmup_decision");
        let warmup_decision = match m.string("warmup_decision", "sampled")?.as_str() {
            "sampled" => Vote::Sampled,
            "not_sampled" => Vote::NotSampled,
            other => {
                return Err(Error::config(
                    warm_path,
                    format!("unknown decision {other:?}; supported: sampled, not_sampled"),
                ))
            }
        };
        let max_groups = m.int_at_least("max_groups", 1000, 1)? as usize;
        m.finish()?;
        Ok(LatencyPercentile {
            settings: Settings {
                percentile,
                window_ns,
                window_slices: window_slices as usize,
                relative_accuracy,
                min_samples,
                warmup_decision,
                max_groups,
            },
            key,
            groups: Arc::new(Mutex::new(Groups::default())),
        })
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> Vote {
        if t.min_start_unix_nano == 0 || t.max_end_unix_nano < t.min_start_unix_nano {
            // No duration to compare (unset start times or spans ending before they start).
            return Vote::NotSampled;
        }
        let duration = (t.max_end_unix_nano - t.min_start_unix_nano) as f64;
        self.judge(self.key.finish(t), duration, now)
    }

    /// The vote for a trace of group `key` lasting `duration` ns, on the engine clock `now`.
    pub fn judge(&self, key: u64, duration: f64, now: i64) -> Vote {
        let s = &self.settings;
        let mut g = self.groups();
        if now >= g.next_sweep {
            // Groups whose window emptied make room for new ones.
            g.by_key.retain(|_, group| group.sketch.count(now) > 0);
            g.next_sweep = now.saturating_add(s.window_ns);
        }
        let g = &mut *g;
        let group = if let Some(group) = g.by_key.get_mut(&key) {
            group
        } else if g.by_key.len() < s.max_groups {
            g.by_key.entry(key).or_insert_with(|| Group::new(s))
        } else {
            g.overflowed += 1;
            g.overflow.get_or_insert_with(|| Group::new(s))
        };
        group.judge(s, duration, now)
    }

    /// Groups tracked now, and the bytes of their sketches.
    pub fn tracked(&self) -> (u64, u64) {
        let g = self.groups();
        let bytes: usize = g
            .by_key
            .values()
            .chain(g.overflow.iter())
            .map(|group| group.sketch.memory_bytes() + 64)
            .sum();
        (g.by_key.len() as u64, bytes as u64)
    }

    pub fn overflowed(&self) -> u64 {
        self.groups().overflowed
    }
}

impl PolicyType for LatencyPercentile {
    const TYPE: &'static str = "latency_percentile";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        LatencyPercentile::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(t, now)))
    }

    fn attribute_keys(&self) -> Vec<String> {
        self.key.attribute_keys()
    }

    fn bind(&mut self, keys: &AttrKeys) {
        self.key.bind(keys)
    }

    fn trace_key_mut(&mut self) -> Option<&mut TraceKey> {
        Some(&mut self.key)
    }

    fn state(&self) -> (u64, u64, u64) {
        let (keys, bytes) = self.tracked();
        (keys, self.overflowed(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    const MS: f64 = 1e6;
    const S: i64 = 1_000_000_000;

    fn policy(v: serde_json::Value) -> Result<LatencyPercentile> {
        LatencyPercentile::parse(Node::new(&v, "p.latency_percentile").mapping()?)
    }

    /// A deterministic stream of durations: exponential with the given mean (ms), from splitmix64.
    fn durations(seed: u64, mean_ms: f64) -> impl Iterator<Item = f64> {
        let mut x = seed;
        std::iter::from_fn(move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            Some(-u.ln() * mean_ms * MS)
        })
    }

    /// Scenario: one group, 100,000 traces of a steady distribution. Guarantees: about 1 % kept past warm-up.
    #[test]
    fn keeps_about_one_percent_in_steady_state() {
        let p = policy(json!({"percentile": 99})).unwrap();
        let mut kept = 0;
        let n = 100_000;
        for (i, d) in durations(1, 50.0).take(n).enumerate() {
            let vote = p.judge(1, d, i as i64 * 1000);
            if i >= 1000 && vote == Vote::Sampled {
                kept += 1;
            }
        }
        let share = f64::from(kept) / (n - 1000) as f64;
        assert!((0.008..0.012).contains(&share), "kept {share}");
    }

    /// Scenario: warm-up. Guarantees: the first `min_samples` traces of a group get `warmup_decision`.
    #[test]
    fn warmup_decides_until_min_samples() {
        let p = policy(json!({"min_samples": 10, "warmup_decision": "not_sampled"})).unwrap();
        for i in 0..10 {
            assert_eq!(p.judge(1, 1e12, i), Vote::NotSampled);
        }
        assert_eq!(p.judge(1, 1e13, 11), Vote::Sampled);
        let q = policy(json!({"min_samples": 10})).unwrap();
        assert_eq!(q.judge(1, 1.0, 0), Vote::Sampled);
    }

    /// Scenario: the distribution shifts ten times slower. Guarantees: right after the shift most traces are
    /// kept, and one window later the share is back near 1 %.
    #[test]
    fn follows_a_shift_within_the_window() {
        let p = policy(json!({"window": "60s"})).unwrap();
        // 1,000 traces per second for 60 s at 10 ms, then 120 s at 100 ms.
        let mut t = 0i64;
        for d in durations(2, 10.0).take(60_000) {
            p.judge(1, d, t);
            t += S / 1000;
        }
        let mut early = 0;
        let mut late = 0;
        for (i, d) in durations(3, 100.0).take(120_000).enumerate() {
            let kept = p.judge(1, d, t) == Vote::Sampled;
            t += S / 1000;
            if i < 1000 && kept {
                early += 1;
            }
            if i >= 80_000 && kept {
                late += 1;
            }
        }
        assert!(
            early > 500,
            "kept {early} of the first 1,000 after the shift"
        );
        let share = f64::from(late) / 40_000.0;
        assert!(
            (0.007..0.013).contains(&share),
            "kept {share} a window later"
        );
    }

    /// Scenario: more groups than `max_groups`. Guarantees: the rest share the overflow group; groups with an
    /// empty window are forgotten.
    #[test]
    fn groups_are_bounded_and_age_out() {
        let p = policy(json!({"max_groups": 2, "window": "10s"})).unwrap();
        for k in 0..5u64 {
            p.judge(k, 1e6, 0);
        }
        assert_eq!(p.tracked().0, 2);
        assert_eq!(p.overflowed(), 3);
        p.judge(9, 1e6, 30 * S);
        assert_eq!(p.tracked().0, 1);
    }

    #[test]
    fn bad_settings_are_errors() {
        assert_eq!(
            policy(json!({"percentile": 100})).unwrap_err().to_string(),
            "p.latency_percentile.percentile: must be between 0 and 100 (exclusive), got 100"
        );
        assert_eq!(
            policy(json!({"warmup_decision": "maybe"})).unwrap_err().to_string(),
            "p.latency_percentile.warmup_decision: unknown decision \"maybe\"; supported: sampled, not_sampled"
        );
        assert!(policy(json!({"window": "0s"})).is_err());
        assert!(policy(json!({"group_by": []})).is_err());
    }
}
