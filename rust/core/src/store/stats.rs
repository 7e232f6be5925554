//! Counters kept by each shard, summed by the engine. Every limit has its metric here.

/// Counters of one shard. Invariant over the engine's life:
/// `traces_received = traces_sampled + traces_not_sampled + traces_dropped + traces_evicted + traces_forgotten
/// + traces_resent + traces_in_memory`.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub spans_received: u64,
    pub traces_received: u64,
    pub traces_sampled: u64,
    pub traces_not_sampled: u64,
    /// Dropped rather than decided sampled or not: by a `drop` policy, too large, or pending at shutdown with
    /// `drop_pending_traces_on_shutdown`.
    pub traces_dropped: u64,
    pub traces_dropped_too_large: u64,
    pub traces_dropped_on_shutdown: u64,
    /// Dropped by a `drop` policy (a veto).
    pub traces_dropped_by_policy: u64,
    /// Undecided traces pushed out by a new trace at `num_traces` (the reference's "dropped too early").
    pub traces_evicted: u64,
    pub spans_evicted: u64,
    /// Buffered traces forgotten undecided on request (`Engine::forget`: their Kafka partition moved to another
    /// instance, which rebuilds them from the log).
    pub traces_forgotten: u64,
    pub spans_forgotten: u64,
    /// Replayed from tail storage after a restart and sent again with the decision made before it.
    pub traces_resent: u64,
    pub spans_resent: u64,
    pub spans_sampled: u64,
    /// Kept traces whose sampling probability is unknown (adjusted counts on): their spans leave without `th`.
    pub traces_sampled_probability_unknown: u64,
    pub spans_not_sampled: u64,
    pub spans_dropped: u64,
    pub late_spans_forwarded: u64,
    pub late_spans_dropped: u64,
    pub policy_evaluation_errors: u64,
    /// Decided traces with a span of status ERROR, and those of them not kept (not sampled or dropped by a
    /// policy): the alert on error traces not kept reads their ratio.
    pub error_traces_decided: u64,
    pub error_traces_not_sampled: u64,
    /// Traces decided early because their root span arrived (`decision_wait_after_root_received`).
    pub decisions_after_root: u64,
    pub decisions_on_flush: u64,
    /// Payloads refused with backpressure by this shard, by limit.
    pub refused_num_traces: u64,
    pub refused_late_span_buffer: u64,
    /// Sum over decided traces of (decision time − due time), in nanoseconds.
    pub decision_lag_ns_total: u64,
    pub decisions_timed: u64,
    /// The same lags as a histogram, for percentiles.
    pub decision_lag: LagHistogram,
}

/// Upper bounds (inclusive, ns) of the decision-lag histogram's buckets; one more bucket holds the rest.
/// Finer around 100 ms, the lag a 50 ms decision tick is meant to keep the 99th percentile under: an SLO or an
/// alert there reads 150 ms apart from 250.
pub const LAG_BOUNDS_NS: [u64; 20] = [
    0,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    150_000_000,
    200_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// How late decisions were, past their due time: counts per bucket of `LAG_BOUNDS_NS` (the last: above all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagHistogram {
    pub counts: [u64; LAG_BOUNDS_NS.len() + 1],
}

impl LagHistogram {
    pub fn record(&mut self, lag_ns: u64) {
        self.counts[LAG_BOUNDS_NS.partition_point(|&b| b < lag_ns)] += 1;
    }

    pub fn add(&mut self, other: &LagHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// The upper bound (ns) of the bucket holding quantile `q` (0..=1); `None` with no data or above all bounds.
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LAG_BOUNDS_NS.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_buckets_and_quantiles() {
        let mut h = LagHistogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        for lag in [0, 0, 50_000, 100_000, 100_001, 99_000_000] {
            h.record(lag);
        }
        h.record(20_000_000_000);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 2); // 50 µs and exactly 100 µs
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[LAG_BOUNDS_NS.len()], 1);
        assert_eq!(h.quantile_bound(0.5), Some(100_000));
        assert_eq!(h.quantile_bound(0.8), Some(100_000_000));
        assert_eq!(h.quantile_bound(1.0), None);
        let mut sum = LagHistogram::default();
        sum.add(&h);
        sum.add(&h);
        assert_eq!(sum.counts[0], 4);
    }
}

/// Per-policy counters, with the reference's meaning: how often the policy voted each way, how often its
/// evaluation failed (no vote), and how many kept traces it was the first, in order, to sample.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PolicyCounters {
    pub sampled: u64,
    pub not_sampled: u64,
    /// Votes to drop (by `drop` policies).
    pub dropped: u64,
    pub errors: u64,
    pub decided: u64,
}

/// Gauges of one shard at one moment.
#[derive(Debug, Clone, Default)]
pub struct ShardGauges {
    pub traces_in_memory: u64,
    /// Decided traces held for their late spans where their outcome has no decision cache (IDs only).
    pub decided_traces_in_memory: u64,
    pub spans_in_memory: u64,
    /// Framed span bytes buffered (the spans' own bytes plus 2–4 bytes of framing each).
    pub span_bytes_in_memory: u64,
    /// Estimate of everything the shard holds for its buffered traces: span bytes, per-trace and per-chunk
    /// bookkeeping, table entries and interned resources.
    pub memory_bytes: u64,
    pub late_span_buffer_bytes: u64,
    pub sampled_cache_entries: u64,
    pub non_sampled_cache_entries: u64,
    pub non_sampled_cache_bytes: u64,
    pub interned_origins: u64,
}
