//! The engine: OTLP payloads in, whole traces buffered in shards, policies decide, kept spans out as payloads.
//!
//! A payload is decoded and validated whole before any shard is touched, then its spans are routed to shards
//! by a seeded hash of the trace ID. The shards it touches are locked in ascending order (so concurrent callers
//! cannot deadlock), each checks its limits, and only when all accept are the spans taken: a payload is taken
//! whole or not at all. Encoding kept spans happens outside the locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ahash::RandomState;

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::otlp::decode::decode;
use crate::otlp::encode::{encode_requests, OutChunk};
use crate::otlp::Decoded;
use crate::policy::Kind;
use crate::propagation::GapReport;
use crate::red::{RedMetrics, RedSeries};
use crate::store::recent::KeptSummary;
use crate::store::stats::{LagHistogram, ShardGauges};
use crate::store::{Chunk, Knowledge, PolicyCounters, Shard, ShardStats};

pub struct Engine {
    cfg: Arc<EngineConfig>,
    shards: Box<[Mutex<Shard>]>,
    router: RandomState,
    /// The engine's clock: the largest `now` seen. Shards read time from here, so it never runs backwards,
    /// whichever shard a call touches.
    clock: AtomicI64,
    payloads_received: AtomicU64,
    payloads_rejected: AtomicU64,
    payloads_refused: AtomicU64,
    payloads_emitted: AtomicU64,
    /// RED metrics of every span taken, before sampling (`tailsample.red_metrics`), and the index of
    /// `service.name` among the extracted attribute keys.
    red: Option<(Mutex<RedMetrics>, usize)>,
}

/// Splits `total` into `n` shares that add up to it.
fn share(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic inside a shard is a bug, and the engine does not panic on input; if it ever happens, the shard's
    // state is still memory-safe and the engine keeps serving rather than failing every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let cfg = Arc::new(cfg);
        // Never more shards than traces, so each shard's share of num_traces is at least one and they add up.
        let n = cfg.num_shards.min(cfg.num_traces).max(1);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard::new(
                    cfg.clone(),
                    share(cfg.num_traces, n, i),
                    share(cfg.sampled_cache_size, n, i),
                    share(cfg.non_sampled_cache_size, n, i),
                    share(cfg.decision_log_size, n, i),
                    share(cfg.recent_kept_bytes, n, i),
                ))
            })
            .collect();
        let red = cfg.red_metrics.as_ref().map(|r| {
            let service = cfg
                .attr_keys
                .index_of_str("service.name")
                .expect("service.name is extracted when RED metrics are on");
            (Mutex::new(RedMetrics::new(r.clone())), service)
        });
        Engine {
            red,
            cfg,
            shards,
            router: RandomState::new(),
            clock: AtomicI64::new(i64::MIN),
            payloads_received: AtomicU64::new(0),
            payloads_rejected: AtomicU64::new(0),
            payloads_refused: AtomicU64::new(0),
            payloads_emitted: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    #[inline]
    fn shard_of(&self, id: u128) -> usize {
        let n = self.shards.len();
        if n == 1 {
            0
        } else {
            (self.router.hash_one(id) % n as u64) as usize
        }
    }

    /// What the engine knows of a trace: pending, decided (with every policy's vote), or only remembered by
    /// the decision caches, or nothing.
    pub fn explain(&self, trace_id: [u8; 16]) -> Knowledge {
        let id = u128::from_be_bytes(trace_id);
        lock(&self.shards[self.shard_of(id)]).explain(id)
    }

    /// The engine clock (ns), `i64::MIN` before any call.
    pub fn clock(&self) -> i64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Advances the engine clock to `now` if it is later; returns the clock.
    fn tick(&self, now: i64) -> i64 {
        let before = self.clock.fetch_max(now, Ordering::AcqRel);
        before.max(now)
    }

    /// Takes one `ExportTraceServiceRequest`, whole or not at all, and returns how many spans it held.
    /// `now` is in nanoseconds on the engine clock.
    pub fn ingest(&self, payload: &[u8], now: i64) -> Result<usize> {
        self.ingest_inner(payload, now, None)
    }

    /// `ingest`, also appending the distinct trace IDs the payload held to `ids` (to follow them: a Kafka
    /// receiver commits a message once its traces are decided).
    pub fn ingest_traces(&self, payload: &[u8], now: i64, ids: &mut Vec<u128>) -> Result<usize> {
        self.ingest_inner(payload, now, Some(ids))
    }

    /// Which of `ids` are buffered, undecided.
    pub fn buffered(&self, ids: &[u128]) -> Vec<bool> {
        ids.iter()
            .map(|&id| lock(&self.shards[self.shard_of(id)]).is_buffered(id))
            .collect()
    }

    /// Forgets buffered traces undecided, spans and all (`traces_forgotten`); returns how many were buffered.
    /// For an instance giving up a Kafka partition: the new owner rebuilds those traces from the log.
    pub fn forget(&self, ids: &[u128]) -> usize {
        ids.iter()
            .filter(|&&id| lock(&self.shards[self.shard_of(id)]).forget(id))
            .count()
    }

    fn ingest_inner(&self, payload: &[u8], now: i64, ids: Option<&mut Vec<u128>>) -> Result<usize> {
        let now = self.tick(now);
        let d = match decode(payload, &self.cfg.attr_keys) {
            Ok(d) => d,
            Err(e) => {
                self.payloads_rejected.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let n = self.shards.len();
        let mut per_shard: Vec<Vec<(u128, u32)>> = vec![Vec::new(); n];
        for (i, span) in d.spans.iter().enumerate() {
            let id = u128::from_be_bytes(span.trace_id);
            per_shard[self.shard_of(id)].push((id, i as u32));
        }
        for order in &mut per_shard {
            // By trace, then by span index: a trace's spans are contiguous, each scope's in wire order.
            order.sort_unstable();
        }
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = per_shard
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
            .map(|(i, _)| (i, lock(&self.shards[i])))
            .collect();
        for (i, g) in guards.iter_mut() {
            if let Err(e) = g.admit(&per_shard[*i]) {
                self.payloads_refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        for (i, g) in guards.iter_mut() {
            g.ingest(&d, &per_shard[*i], now);
        }
        drop(guards);
        if let Some(ids) = ids {
            // A trace lives in one shard, and each shard's order holds its spans together.
            for order in &per_shard {
                let mut last = None;
                for &(id, _) in order {
                    if last != Some(id) {
                        ids.push(id);
                        last = Some(id);
                    }
                }
            }
        }
        self.record_red(&d);
        self.payloads_received.fetch_add(1, Ordering::Relaxed);
        Ok(d.spans.len())
    }

    /// Counts every span of a taken payload in the RED metrics (before any sampling).
    fn record_red(&self, d: &Decoded<'_>) {
        let Some((red, service_key)) = &self.red else {
            return;
        };
        let mut red = red.lock().unwrap_or_else(|e| e.into_inner());
        for span in &d.spans {
            let resource = d.scopes[span.scope as usize].resource as usize;
            let service = d.resource_attr(resource, *service_key).str_or_empty();
            let duration = span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano);
            red.record(service, span.name, span.kind, span.status_code, duration);
        }
    }

    /// The RED metrics' series (None when `tailsample.red_metrics` is off).
    pub fn red_metrics(&self) -> Option<Vec<RedSeries>> {
        let (red, _) = self.red.as_ref()?;
        Some(red.lock().unwrap_or_else(|e| e.into_inner()).series())
    }

    /// Up to `limit` recently kept traces held for `show`, newest first.
    pub fn recent_kept(&self, limit: usize) -> Vec<KeptSummary> {
        let mut all: Vec<KeptSummary> = Vec::new();
        for shard in self.shards.iter() {
            all.extend(lock(shard).recent_kept(limit));
        }
        all.sort_by_key(|k| std::cmp::Reverse((k.decided_at, k.trace_id)));
        all.truncate(limit);
        all
    }

    /// A recently kept trace's spans, as they left, as `ExportTraceServiceRequest` payloads (None when the
    /// trace is not, or no longer, held).
    pub fn kept_trace(&self, trace_id: [u8; 16]) -> Option<Vec<Vec<u8>>> {
        let id = u128::from_be_bytes(trace_id);
        let shard = lock(&self.shards[self.shard_of(id)]);
        let kept = shard.kept_trace(id)?;
        let refs: Vec<OutChunk<'_>> = kept
            .chunks
            .iter()
            .map(|c| OutChunk {
                origin: &c.origin,
                framed: &c.framed,
            })
            .collect();
        Some(encode_requests(&refs, self.cfg.max_payload_bytes))
    }

    /// The propagation-gap audit over every shard (None when `tailsample.propagation_audit` is off).
    pub fn gaps(&self) -> Option<GapReport> {
        let a = self.cfg.propagation_audit.as_ref()?;
        let mut report = GapReport::default();
        for shard in self.shards.iter() {
            let part = lock(shard).gaps()?;
            report.merge(part, a.max_pairs, a.examples);
        }
        Some(report)
    }

    /// Keys tracked by the stateful policies (`latency_percentile` groups, `adaptive` keys), traces judged
    /// under their overflow key, and their state's bytes. Their state is shared by the shards.
    fn policy_state(&self) -> (u64, u64, u64) {
        let (mut keys, mut overflowed, mut bytes) = (0, 0, 0);
        for p in &self.cfg.policies {
            p.walk(&mut |q| {
                let (k, o, b) = match &q.kind {
                    Kind::LatencyPercentile(l) => {
                        let (k, b) = l.tracked();
                        (k, l.overflowed(), b)
                    }
                    Kind::Adaptive(a) => {
                        let (k, b) = a.tracked();
                        (k, a.overflowed(), b)
                    }
                    _ => (0, 0, 0),
                };
                keys += k;
                overflowed += o;
                bytes += b;
            });
        }
        (keys, overflowed, bytes)
    }

    /// Decides what is due at `now`; returns kept spans as `ExportTraceServiceRequest` payloads.
    pub fn poll(&self, now: i64) -> Vec<Vec<u8>> {
        let now = self.tick(now);
        let mut out = Vec::new();
        for s in self.shards.iter() {
            lock(s).poll(now, &mut out);
        }
        self.encode(out)
    }

    /// Decides (or drops, per `drop_pending_traces_on_shutdown`) everything buffered.
    pub fn flush(&self, now: i64) -> Vec<Vec<u8>> {
        let now = self.tick(now);
        let mut out = Vec::new();
        for s in self.shards.iter() {
            lock(s).flush(now, &mut out);
        }
        self.encode(out)
    }

    fn encode(&self, chunks: Vec<Chunk>) -> Vec<Vec<u8>> {
        if chunks.is_empty() {
            return Vec::new();
        }
        let refs: Vec<OutChunk<'_>> = chunks
            .iter()
            .map(|c| OutChunk {
                origin: &c.origin,
                framed: &c.framed,
            })
            .collect();
        let payloads = encode_requests(&refs, self.cfg.max_payload_bytes);
        self.payloads_emitted
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        payloads
    }

    /// Counters, gauges and limits, summed over shards.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut s = ShardStats::default();
        let mut g = ShardGauges::default();
        let mut limit_num_traces = 0u64;
        let (mut log_records, mut log_bytes) = (0u64, 0u64);
        let mut audit = crate::propagation::Totals::default();
        let (mut recent_traces, mut recent_bytes) = (0u64, 0u64);
        let (mut audit_pairs, mut audit_names_overflowed, mut audit_bytes) = (0u64, 0u64, 0u64);
        for shard in self.shards.iter() {
            let shard = lock(shard);
            let (pairs, names_overflowed, bytes) = shard.audit_gauges();
            audit_pairs += pairs;
            audit_names_overflowed += names_overflowed;
            audit_bytes += bytes;
            let (traces, bytes) = shard.recent_kept_gauges();
            recent_traces += traces;
            recent_bytes += bytes;
            if let Some(t) = shard.audit_totals() {
                audit.add(&t);
            }
            add_stats(&mut s, &shard.stats);
            add_gauges(&mut g, &shard.gauges());
            limit_num_traces += shard.limit() as u64;
            log_records += shard.decision_log_len() as u64;
            log_bytes += shard.decision_log_bytes() as u64;
        }
        let c = &self.cfg;
        let (state_keys, state_overflowed, state_bytes) = self.policy_state();
        let red = self.red.as_ref().map(|(r, _)| {
            let r = r.lock().unwrap_or_else(|e| e.into_inner());
            (
                r.series_count() as u64,
                r.overflow_spans(),
                r.spans(),
                r.memory_bytes() as u64,
            )
        });
        let (red_series, red_overflow, red_spans, red_bytes) = red.unwrap_or_default();
        vec![
            (
                "payloads_received",
                self.payloads_received.load(Ordering::Relaxed),
            ),
            (
                "payloads_rejected",
                self.payloads_rejected.load(Ordering::Relaxed),
            ),
            (
                "payloads_refused",
                self.payloads_refused.load(Ordering::Relaxed),
            ),
            (
                "payloads_emitted",
                self.payloads_emitted.load(Ordering::Relaxed),
            ),
            ("spans_received", s.spans_received),
            ("traces_received", s.traces_received),
            ("traces_sampled", s.traces_sampled),
            ("traces_not_sampled", s.traces_not_sampled),
            ("traces_dropped", s.traces_dropped),
            ("traces_dropped_too_large", s.traces_dropped_too_large),
            ("traces_dropped_on_shutdown", s.traces_dropped_on_shutdown),
            ("traces_dropped_by_policy", s.traces_dropped_by_policy),
            ("traces_evicted", s.traces_evicted),
            ("traces_forgotten", s.traces_forgotten),
            ("spans_forgotten", s.spans_forgotten),
            ("traces_in_memory", g.traces_in_memory),
            ("spans_in_memory", g.spans_in_memory),
            ("span_bytes_in_memory", g.span_bytes_in_memory),
            ("memory_bytes", g.memory_bytes),
            ("spans_sampled", s.spans_sampled),
            (
                "traces_sampled_probability_unknown",
                s.traces_sampled_probability_unknown,
            ),
            ("decision_log_records", log_records),
            ("decision_log_bytes", log_bytes),
            ("limit_decision_log_size", c.decision_log_size as u64),
            ("policy_state_keys", state_keys),
            ("policy_state_overflowed_traces", state_overflowed),
            ("policy_state_bytes", state_bytes),
            ("red_series", red_series),
            ("red_spans", red_spans),
            ("red_overflow_spans", red_overflow),
            ("red_memory_bytes", red_bytes),
            (
                "limit_red_max_series",
                c.red_metrics.as_ref().map_or(0, |r| r.max_series as u64),
            ),
            ("recent_kept_traces", recent_traces),
            ("recent_kept_bytes", recent_bytes),
            ("limit_recent_kept_bytes", c.recent_kept_bytes as u64),
            ("propagation_traces_audited", audit.traces_audited),
            ("propagation_traces_with_gaps", audit.traces_with_gaps),
            ("propagation_traces_broken", audit.traces_broken),
            ("propagation_calls", audit.calls),
            ("propagation_gaps", audit.gaps),
            ("propagation_orphan_spans", audit.orphan_spans),
            ("propagation_overflow_calls", audit.overflow_calls),
            ("propagation_pairs", audit_pairs),
            ("propagation_names_overflowed", audit_names_overflowed),
            ("propagation_memory_bytes", audit_bytes),
            (
                "limit_propagation_max_pairs",
                c.propagation_audit
                    .as_ref()
                    .map_or(0, |a| a.max_pairs as u64),
            ),
            ("spans_not_sampled", s.spans_not_sampled),
            ("spans_dropped", s.spans_dropped),
            ("spans_evicted", s.spans_evicted),
            ("late_spans_forwarded", s.late_spans_forwarded),
            ("late_spans_dropped", s.late_spans_dropped),
            ("late_span_buffer_bytes", g.late_span_buffer_bytes),
            ("policy_evaluation_errors", s.policy_evaluation_errors),
            ("decisions_after_root", s.decisions_after_root),
            ("decisions_on_flush", s.decisions_on_flush),
            ("decision_lag_ns_total", s.decision_lag_ns_total),
            ("decisions_timed", s.decisions_timed),
            ("refused_num_traces", s.refused_num_traces),
            ("refused_late_span_buffer", s.refused_late_span_buffer),
            ("sampled_cache_entries", g.sampled_cache_entries),
            ("non_sampled_cache_entries", g.non_sampled_cache_entries),
            ("non_sampled_cache_bytes", g.non_sampled_cache_bytes),
            ("interned_origins", g.interned_origins),
            ("limit_num_traces", limit_num_traces),
            ("limit_sampled_cache_size", c.sampled_cache_size as u64),
            (
                "limit_non_sampled_cache_size",
                c.non_sampled_cache_size as u64,
            ),
            ("limit_maximum_trace_size_bytes", c.maximum_trace_size_bytes),
            ("limit_late_span_buffer_bytes", c.late_span_buffer_bytes),
            ("limit_max_payload_bytes", c.max_payload_bytes as u64),
            ("num_shards", self.shards.len() as u64),
        ]
    }

    /// How late decisions came past their due time, summed over shards (buckets of `LAG_BOUNDS_NS`).
    pub fn decision_lag(&self) -> LagHistogram {
        let mut h = LagHistogram::default();
        for shard in self.shards.iter() {
            h.add(&lock(shard).stats.decision_lag);
        }
        h
    }

    /// Per-policy counters, in configuration order.
    pub fn policy_stats(&self) -> Vec<(String, PolicyCounters)> {
        let mut totals: Vec<PolicyCounters> =
            vec![PolicyCounters::default(); self.cfg.policies.len()];
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (t, p) in totals.iter_mut().zip(&shard.policy_stats) {
                t.sampled += p.sampled;
                t.not_sampled += p.not_sampled;
                t.dropped += p.dropped;
                t.errors += p.errors;
                t.decided += p.decided;
            }
        }
        self.cfg
            .policies
            .iter()
            .map(|p| p.name.clone())
            .zip(totals)
            .collect()
    }
}

fn add_stats(a: &mut ShardStats, b: &ShardStats) {
    a.spans_received += b.spans_received;
    a.traces_received += b.traces_received;
    a.traces_sampled += b.traces_sampled;
    a.traces_not_sampled += b.traces_not_sampled;
    a.traces_dropped += b.traces_dropped;
    a.traces_dropped_too_large += b.traces_dropped_too_large;
    a.traces_dropped_on_shutdown += b.traces_dropped_on_shutdown;
    a.traces_dropped_by_policy += b.traces_dropped_by_policy;
    a.traces_forgotten += b.traces_forgotten;
    a.spans_forgotten += b.spans_forgotten;
    a.traces_evicted += b.traces_evicted;
    a.spans_evicted += b.spans_evicted;
    a.spans_sampled += b.spans_sampled;
    a.traces_sampled_probability_unknown += b.traces_sampled_probability_unknown;
    a.spans_not_sampled += b.spans_not_sampled;
    a.spans_dropped += b.spans_dropped;
    a.late_spans_forwarded += b.late_spans_forwarded;
    a.late_spans_dropped += b.late_spans_dropped;
    a.policy_evaluation_errors += b.policy_evaluation_errors;
    a.decisions_after_root += b.decisions_after_root;
    a.decisions_on_flush += b.decisions_on_flush;
    a.refused_num_traces += b.refused_num_traces;
    a.refused_late_span_buffer += b.refused_late_span_buffer;
    a.decision_lag_ns_total += b.decision_lag_ns_total;
    a.decisions_timed += b.decisions_timed;
    a.decision_lag.add(&b.decision_lag);
}

fn add_gauges(a: &mut ShardGauges, b: &ShardGauges) {
    a.traces_in_memory += b.traces_in_memory;
    a.spans_in_memory += b.spans_in_memory;
    a.span_bytes_in_memory += b.span_bytes_in_memory;
    a.memory_bytes += b.memory_bytes;
    a.late_span_buffer_bytes += b.late_span_buffer_bytes;
    a.sampled_cache_entries += b.sampled_cache_entries;
    a.non_sampled_cache_entries += b.non_sampled_cache_entries;
    a.non_sampled_cache_bytes += b.non_sampled_cache_bytes;
    a.interned_origins += b.interned_origins;
}

/// A quick look at a payload without an engine: validates it and summarises it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadSummary {
    pub spans: u64,
    pub traces: u64,
    pub resource_spans: u64,
    pub min_start_unix_nano: u64,
    pub max_end_unix_nano: u64,
}

pub fn inspect(payload: &[u8]) -> Result<PayloadSummary> {
    let d = decode(payload, &Default::default())?;
    let mut ids: Vec<[u8; 16]> = d.spans.iter().map(|s| s.trace_id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(PayloadSummary {
        spans: d.spans.len() as u64,
        traces: ids.len() as u64,
        resource_spans: d.resources.len() as u64,
        min_start_unix_nano: d
            .spans
            .iter()
            .map(|s| s.start_time_unix_nano)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0),
        max_end_unix_nano: d
            .spans
            .iter()
            .map(|s| s.end_time_unix_nano)
            .max()
            .unwrap_or(0),
    })
}

/// Seconds (as Python's clocks give them) to engine nanoseconds.
pub fn seconds_to_ns(now: f64) -> Result<i64> {
    if !now.is_finite() || now.abs() > 9.0e9 {
        return Err(Error::config(
            "now",
            format!("must be a finite number of seconds, got {now}"),
        ));
    }
    Ok((now * 1e9).round() as i64)
}
