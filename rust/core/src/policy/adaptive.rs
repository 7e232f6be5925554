//! `adaptive` (tailsample only): per-key sampling toward a goal rate, as Refinery's EMA dynamic sampler does
//! (dynsampler-go `EMASampleRate`).
//!
//! Each trace has a key (`key_fields`, see `trace_key`). Traces are counted per key; every
//! `adjustment_interval` the counts update an exponential moving average per key (`weight`; keys whose average
//! falls under `age_out_value` are forgotten) and new rates are computed: each key gets a share of the goal
//! (`sum / goal_sample_rate` traces per interval) proportional to the log of its count, rare keys get rate 1 and
//! pass their unused share on, frequent keys get `ceil(count / share)`. So rare keys are always kept and the
//! average rate meets the goal. Before the first update every key gets `goal_sample_rate`; a key first seen
//! after it gets 1. A burst (this interval's count reaching `burst_multiple` × the averaged total, after
//! `burst_detection_delay` intervals) updates at once.
//!
//! The decision uses the trace's randomness, not a random number generator: with rate N the trace is kept iff
//! its 56-bit randomness (`ot=rv` of its tracestate, else the trace ID's last 7 bytes) is at least the OTEP 235
//! threshold of probability 1/N. Two instances with the same state decide alike, and the kept spans' `th`
//! composes with other consistent samplers.
//!
//! Differences from Refinery, both for bounds: at most `max_keys` keys are tracked (counted or averaged); the
//! traces of further keys share one overflow key, counted and rated like any other (Refinery stops counting
//! them and keeps them at rate 1, so a burst of new keys is kept whole). Keys are ordered by their hash, not
//! their text, for the update's fixed order. The state is shared by the engine's shards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::inclusion::Inclusion;
use super::{PolicyType, TraceView, Vote};
use super::trace_key::TraceKey;
use crate::config::node::Mapping;
use crate::consistent::{
    should_keep, threshold_for_probability, DEFAULT_PRECISION, NEVER_SAMPLE_THRESHOLD,
};
use crate::error::{Error, Result};
use crate::otlp::decode::AttrKeys;

/// The key standing for every key past `max_keys`.
const OVERFLOW_KEY: u64 = 0;

#[derive(Debug, Clone)]
pub struct Settings {
    pub goal_sample_rate: u32,
    pub adjustment_interval_ns: i64,
    pub weight: f64,
    pub age_out_value: f64,
    pub burst_multiple: f64,
    pub burst_detection_delay: u32,
    pub max_keys: usize,
}

/// What the shards share: counts of this interval, moving averages, rates.
#[derive(Debug, Default)]
pub struct EmaState {
    current: HashMap<u64, f64>,
    /// Keys of `current` that are not in `moving`: with `moving.len()`, the keys tracked.
    current_new: usize,
    moving: HashMap<u64, f64>,
    rates: HashMap<u64, u32>,
    have_data: bool,
    burst_threshold: f64,
    burst_sum: f64,
    intervals: u32,
    next_update: Option<i64>,
    /// Traces counted under the overflow key.
    pub overflowed: u64,
}

#[derive(Debug, Clone)]
pub struct Adaptive {
    pub settings: Settings,
    pub key: TraceKey,
    state: Arc<Mutex<EmaState>>,
    /// The threshold the last evaluated trace was compared with (for its adjusted count).
    pub last_threshold: u64,
}

impl Adaptive {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let goal_path = m.key_path("goal_sample_rate");
        let goal = m.int("goal_sample_rate", 10)?;
        if !(1..=1 << 30).contains(&goal) {
            return Err(Error::config(
                goal_path,
                format!("must be a rate of at least 1 (keep 1 in N traces), got {goal}"),
            ));
        }
        let key = TraceKey::parse(&mut m, "key_fields", &["service.name", "span.name"])?;
        let interval_path = m.key_path("adjustment_interval");
        let interval = m.duration("adjustment_interval", 15_000_000_000)?;
        if interval <= 0 {
            return Err(Error::config(interval_path, "must be a positive duration"));
        }
        let weight_path = m.key_path("weight");
        let weight = m.float("weight", 0.5)?;
        if !(weight > 0.0 && weight < 1.0) {
            return Err(Error::config(
                weight_path,
                format!("must be between 0 and 1 (exclusive), got {weight}"),
            ));
        }
        let age_path = m.key_path("age_out_value");
        let age_out_value = m.float("age_out_value", weight)?;
        if !(age_out_value.is_finite() && age_out_value >= 0.0) {
            return Err(Error::config(
                age_path,
                format!("must be a number of at least 0, got {age_out_value}"),
            ));
        }
        let burst_multiple = m.float("burst_multiple", 2.0)?;
        let burst_detection_delay = m.int_at_least("burst_detection_delay", 3, 0)? as u32;
        let max_keys = m.int_at_least("max_keys", 500, 1)? as usize;
        m.finish()?;
        Ok(Adaptive {
            settings: Settings {
                goal_sample_rate: goal as u32,
                adjustment_interval_ns: interval,
                weight,
                age_out_value,
                burst_multiple,
                burst_detection_delay,
                max_keys,
            },
            key,
            state: Arc::new(Mutex::new(EmaState::default())),
            last_threshold: 0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EmaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate a trace of this key gets now (counting it), on the engine clock `now`.
    pub fn rate(&self, key: u64, now: i64) -> u32 {
        let s = &self.settings;
        let mut st = self.state();
        match st.next_update {
            None => st.next_update = Some(now.saturating_add(s.adjustment_interval_ns)),
            Some(due) if now >= due => {
                st.update(s);
                st.intervals = st.intervals.saturating_add(1);
                st.next_update = Some(now.saturating_add(s.adjustment_interval_ns));
            }
            Some(_) => {}
        }
        let tracked = st.current.contains_key(&key) || st.moving.contains_key(&key);
        let key = if tracked || st.moving.len() + st.current_new < s.max_keys {
            key
        } else {
            st.overflowed += 1;
            OVERFLOW_KEY
        };
        if !st.current.contains_key(&key) && !st.moving.contains_key(&key) {
            st.current_new += 1;
        }
        *st.current.entry(key).or_insert(0.0) += 1.0;
        st.burst_sum += 1.0;
        if st.burst_threshold > 0.0
            && s.burst_multiple > 0.0
            && st.burst_sum >= st.burst_threshold
            && st.intervals >= s.burst_detection_delay
        {
            st.update(s);
            st.next_update = Some(now.saturating_add(s.adjustment_interval_ns));
        }
        if !st.have_data {
            return s.goal_sample_rate;
        }
        st.rates.get(&key).copied().unwrap_or(1)
    }

    pub fn evaluate(&mut self, t: &TraceView, now: i64) -> Vote {
        let rate = self.rate(self.key.finish(t), now);
        let threshold = threshold_for_probability(1.0 / f64::from(rate), DEFAULT_PRECISION)
            .unwrap_or(NEVER_SAMPLE_THRESHOLD);
        self.last_threshold = threshold;
        super::vote(should_keep(t.randomness(), threshold), false)
    }

    /// Keys tracked now (counted this interval or averaged), and an estimate of the state's bytes.
    pub fn tracked(&self) -> (u64, u64) {
        let st = self.state();
        let keys = (st.moving.len() + st.current_new) as u64;
        // Three maps of 8-byte keys and 8- or 4-byte values, about 2× for the tables' spare room.
        (keys, keys * 3 * 16 * 2)
    }

    pub fn overflowed(&self) -> u64 {
        self.state().overflowed
    }
}

impl EmaState {
    /// dynsampler-go's `updateMaps`: fold this interval's counts into the averages, then compute the rates.
    fn update(&mut self, s: &Settings) {
        // No traffic: nothing changes (the averages do not decay during an outage).
        if self.current.is_empty() {
            return;
        }
        let counts = std::mem::take(&mut self.current);
        self.current_new = 0;
        self.burst_sum = 0.0;
        let adjust = |old: f64, value: f64| value * s.weight + (1.0 - s.weight) * old;
        self.moving.retain(|key, avg| {
            *avg = adjust(*avg, counts.get(key).copied().unwrap_or(0.0));
            *avg >= s.age_out_value
        });
        for (key, count) in &counts {
            if !self.moving.contains_key(key) {
                let avg = adjust(0.0, *count);
                // A key seen once and aged out at once is not kept (as the reference does).
                if avg >= s.age_out_value {
                    self.moving.insert(*key, avg);
                }
            }
        }
        let sum_events: f64 = self.moving.values().map(|c| c.max(1.0)).sum();
        self.burst_threshold = sum_events * s.burst_multiple;
        let goal_count = sum_events / f64::from(s.goal_sample_rate);
        let log_sum: f64 = self.moving.values().map(|c| c.max(1.0).log10()).sum();
        let goal_ratio = goal_count / log_sum;
        // A fixed order, so that rounding gives the same rates everywhere.
        let mut keys: Vec<u64> = self.moving.keys().copied().collect();
        keys.sort_unstable();
        let mut rates = HashMap::with_capacity(keys.len());
        let mut remaining = keys.len();
        let mut extra = 0.0f64;
        for key in keys {
            let count = self.moving[&key].max(1.0);
            let mut goal_for_key = (count.log10() * goal_ratio).max(1.0);
            let extra_for_key = extra / remaining as f64;
            goal_for_key += extra_for_key;
            extra -= extra_for_key;
            remaining -= 1;
            let rate = if count <= goal_for_key {
                extra += goal_for_key - count;
                1
            } else {
                let r = (count / goal_for_key).ceil();
                let r = if r.is_nan() {
                    1
                } else {
                    r.min(f64::from(u32::MAX)) as u32
                };
                extra += goal_for_key - count / f64::from(r);
                r
            };
            rates.insert(key, rate);
        }
        self.rates = rates;
        self.have_data = true;
    }
}

impl PolicyType for Adaptive {
    const TYPE: &'static str = "adaptive";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        Adaptive::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let vote = self.evaluate(t, now);
        Ok((vote, Inclusion::Threshold(self.last_threshold)))
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

    fn reads_ot(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    const S: i64 = 1_000_000_000;

    fn adaptive(v: serde_json::Value) -> Result<Adaptive> {
        Adaptive::parse(Node::new(&v, "p.adaptive").mapping()?)
    }

    /// Scenario: dynsampler-go's own example of rates (`TestEMASampleUpdateMaps`, first case), keys with
    /// 1..=10 000 events per interval at goal 20. Guarantees: the same rates after one update with weight 1.
    #[test]
    fn rates_follow_the_reference_algorithm() {
        let a =
            adaptive(json!({"goal_sample_rate": 20, "weight": 0.9999999, "age_out_value": 0.0}))
                .unwrap();
        let s = a.settings.clone();
        let mut st = EmaState::default();
        for (key, count) in [
            (1u64, 1.0),
            (2, 5.0),
            (3, 10.0),
            (4, 100.0),
            (5, 1000.0),
            (6, 10000.0),
        ] {
            st.current.insert(key, count);
        }
        st.update(&s);
        let rates: Vec<u32> = (1..=6).map(|k| st.rates[&k]).collect();
        // Goal: 11116 / 20 = 555.8 events, shared by log10 of the counts; small keys at rate 1.
        assert_eq!(&rates[..3], &[1, 1, 1]);
        assert!(
            rates[3] >= 1 && rates[3] < rates[4] && rates[4] < rates[5],
            "{rates:?}"
        );
        let kept: f64 = [1.0, 5.0, 10.0, 100.0, 1000.0, 10000.0]
            .iter()
            .zip(&rates)
            .map(|(c, r)| c / f64::from(*r))
            .sum();
        assert!((kept - 555.8).abs() / 555.8 < 0.05, "kept {kept}");
    }

    /// Scenario: no data yet, then an update. Guarantees: goal rate before data; a key first seen after it
    /// gets rate 1.
    #[test]
    fn goal_before_data_then_new_keys_at_one() {
        let a = adaptive(json!({"goal_sample_rate": 10, "adjustment_interval": "1s"})).unwrap();
        assert_eq!(a.rate(7, 0), 10);
        for _ in 0..1000 {
            a.rate(7, S / 2);
        }
        // Past the interval: the update runs, key 7 is frequent.
        assert!(a.rate(7, S) > 1);
        assert_eq!(a.rate(8, S), 1);
    }

    /// Scenario: more keys than `max_keys`. Guarantees: the extra keys share the overflow key and are counted.
    #[test]
    fn keys_are_bounded() {
        let a = adaptive(json!({"max_keys": 3})).unwrap();
        for k in 1..=10u64 {
            a.rate(k, 0);
        }
        // Three keys and the overflow key.
        assert_eq!(a.tracked().0, 4);
        assert_eq!(a.overflowed(), 7);
    }

    #[test]
    fn bad_settings_are_errors() {
        assert_eq!(
            adaptive(json!({"goal_sample_rate": 0}))
                .unwrap_err()
                .to_string(),
            "p.adaptive.goal_sample_rate: must be a rate of at least 1 (keep 1 in N traces), got 0"
        );
        assert_eq!(
            adaptive(json!({"weight": 1.5})).unwrap_err().to_string(),
            "p.adaptive.weight: must be between 0 and 1 (exclusive), got 1.5"
        );
        assert!(adaptive(json!({"goal": 3})).is_err());
    }
}
