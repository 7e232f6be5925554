//! Counters kept by each shard, summed by the engine. Every limit has its metric here.

/// Counters of one shard. Invariant over the engine's life:
/// `traces_received = traces_sampled + traces_not_sampled + traces_dropped + traces_evicted + traces_in_memory`.
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
    pub spans_sampled: u64,
    pub spans_not_sampled: u64,
    pub spans_dropped: u64,
    pub late_spans_forwarded: u64,
    pub late_spans_dropped: u64,
    pub policy_evaluation_errors: u64,
    /// Traces decided early because their root span arrived (`decision_wait_after_root_received`).
    pub decisions_after_root: u64,
    pub decisions_on_flush: u64,
    /// Payloads refused with backpressure by this shard, by limit.
    pub refused_num_traces: u64,
    pub refused_late_span_buffer: u64,
    /// Sum over decided traces of (decision time − due time), in nanoseconds.
    pub decision_lag_ns_total: u64,
    pub decisions_timed: u64,
}

/// Per-policy counters, with the reference's meaning: how often the policy voted each way, how often its
/// evaluation failed (no vote), and how many kept traces it was the first, in order, to sample.
#[derive(Debug, Clone, Default)]
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
