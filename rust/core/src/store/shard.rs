//! One shard of the store: a share of `num_traces`, its own table, queues, caches and policy instances.
//!
//! Timing needs no wheel: every trace is due `decision_wait` after its first span, and first-seen times only
//! grow, so due times come in insertion order and a FIFO queue holds them exactly (0 ms granularity, O(1) per
//! trace). The same holds for root-received decisions (`decision_wait_after_root_received` after the root), in
//! a second FIFO. Entries of traces decided or evicted in the meantime go stale (slot generation) and are
//! skipped; the queues are compacted when stale entries outnumber live ones.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::decision_cache::{NotSampledFilter, Resident, ResidentDecisions, SampledCache};
use super::decision_log::{DecisionLog, Record, Trigger};
use super::intern::{Interner, Origin, Resource};
use super::recent::{KeptSummary, KeptTrace, RecentKept};
use super::shadow::{PackedVerdict, ShadowSet, ShadowVerdict};
use super::stats::{PolicyCounters, ShardGauges, ShardStats};
use super::trace_table::{Key, TraceTable};
use crate::config::EngineConfig;
use crate::consistent::{adjusted_count, read_ot, rewrite_span, span_trace_state, with_threshold};
use crate::durable::{Decided, Verdict};
use crate::error::Error;
use crate::otlp::decode::{decode, Decoded};
use crate::otlp::encode::{
    append_attributes, bool_attribute, double_attribute, encode_requests, frame_span, framed_size,
    map_spans, string_attribute, OutChunk,
};
use crate::otlp::pdata_size;
use crate::otlp::wire::len_field_size;
use crate::policy::decision::{self, Ballot, Decision, Outcome, MAX_RECORDED_VOTES};
use crate::policy::inclusion::{Inclusion, Stage};
use crate::policy::{ot_bits, status_bits, Fold, Policy, SpanFacts, TraceView, ViewExtra, Vote};
use crate::propagation::{span_kind, AuditReader, AuditSpan, GapReport, PropagationAudit, NONE};

/// A run of one trace's spans from one payload under one origin, framed as `ScopeSpans.spans` entries.
#[derive(Debug)]
pub struct Chunk {
    pub origin: Arc<Origin>,
    pub framed: Box<[u8]>,
    pub spans: u32,
}

impl Chunk {
    /// The chunk as the encoder takes it.
    pub fn out(&self) -> OutChunk<'_> {
        OutChunk {
            origin: &self.origin,
            framed: &self.framed,
            spans: self.spans,
        }
    }
}

/// A buffered trace's slot. One is held per trace, so it holds only what every configuration needs (136 bytes):
/// what only some read lives elsewhere (the view's [`ViewExtra`], the first segment in [`DurableState`]).
#[derive(Debug, Default)]
struct Trace {
    generation: u32,
    live: bool,
    first_seen: i64,
    /// The shard's count of new traces when this one arrived: `num_traces` pushes out the oldest arrival.
    arrival: u64,
    view: TraceView,
    chunks: Vec<Chunk>,
    /// Per span, what the propagation audit reads when the trace is decided (empty when the audit is off).
    audit: Vec<AuditSpan>,
}

impl Trace {
    /// Bytes of its chunks (summed, not stored: most traces are one chunk, and a slot is held per trace).
    fn framed_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.framed.len() as u64).sum()
    }
}

/// Slots per page of [`Slots`].
const SLOT_PAGE: usize = 1024;

/// A shard's trace slots, in pages of [`SLOT_PAGE`]. One `Vec<Trace>` grew by doubling: up to half its capacity
/// (hundreds of bytes a slot) held unused and uncounted, and every growth copied (and faulted in) every trace
/// buffered. Pages grow alone: at most the last one has room to spare, and a slot never moves.
#[derive(Default)]
struct Slots {
    pages: Vec<Vec<Trace>>,
    len: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated: full pages, and the last page's capacity.
    fn capacity(&self) -> usize {
        self.pages
            .split_last()
            .map_or(0, |(last, full)| full.len() * SLOT_PAGE + last.capacity())
    }

    fn push(&mut self, t: Trace) {
        if self.len % SLOT_PAGE == 0 {
            self.pages.push(Vec::new());
        }
        if let Some(page) = self.pages.last_mut() {
            page.push(t);
            self.len += 1;
        }
    }
}

impl Index<usize> for Slots {
    type Output = Trace;
    fn index(&self, i: usize) -> &Trace {
        &self.pages[i / SLOT_PAGE][i % SLOT_PAGE]
    }
}

impl IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Trace {
        &mut self.pages[i / SLOT_PAGE][i % SLOT_PAGE]
    }
}

/// The propagation audit of a shard, and where its attributes are among the extracted keys.
struct ShardAudit {
    state: PropagationAudit,
    service_key: usize,
    reader: AuditReader,
}

/// How many traces ahead of its table lookups a loop prefetches their lines (a miss takes about as long as the
/// work on several traces, and a core keeps about ten misses in flight).
const PREFETCH_AHEAD: usize = 8;

/// A table value at or above this holds a decided trace (its arrival number below it), not a slot.
const HELD: u64 = 1 << 63;

/// Not yet looked up, in a payload's cache of resource → service name id.
const SERVICE_UNSET: u16 = u16::MAX;
/// Self-descriptions remembered per payload, at most (past it they are learned again per span).
const LEARNED_PER_PAYLOAD: usize = 32;

/// What one payload's resources and scopes became, looked up on first use.
struct PayloadOrigins<'a> {
    resources: Vec<Option<Arc<Resource>>>,
    origins: Vec<Option<Arc<Origin>>>,
    /// Service name ids, for the propagation audit (empty when it is off).
    services: Vec<u16>,
    /// (resource, first address as written, port) already learned from this payload: a service's spans repeat
    /// the same self-description, learned once.
    learned: Vec<(u32, &'a str, i64)>,
    /// pdata sizes of this payload's resources and scopes, measured on first use (`UNMEASURED` until then;
    /// empty when nothing reads trace sizes).
    resource_sizes: Vec<u32>,
    scope_sizes: Vec<u32>,
}

const UNMEASURED: u32 = u32::MAX;

impl ShardAudit {
    fn new(cfg: &EngineConfig) -> Option<Self> {
        let a = cfg.propagation_audit.as_ref()?;
        Some(ShardAudit {
            state: PropagationAudit::new(a.clone()),
            service_key: cfg.attr_keys.index_of_str("service.name")?,
            reader: AuditReader::new(a, &cfg.attr_keys),
        })
    }

    /// The service name id of a payload's resource, looked up once per payload.
    fn service(&mut self, d: &Decoded<'_>, rid: usize, seen: &mut PayloadOrigins<'_>) -> u16 {
        match seen.services[rid] {
            SERVICE_UNSET => {
                let name = d.resource_attrs_of(rid)[self.service_key].str_or_empty();
                let id = self.state.names.service_id(name);
                seen.services[rid] = id;
                id
            }
            id => id,
        }
    }

    /// What the audit keeps of span `si`, from the decoded payload; a SERVER/CONSUMER span's self-description
    /// is learned on the way. `seen` caches the payload's resources' service name ids and what was learned.
    fn span<'a>(
        &mut self,
        d: &Decoded<'a>,
        si: usize,
        seen: &mut PayloadOrigins<'a>,
        now: i64,
    ) -> AuditSpan {
        let span = &d.spans[si];
        let rid = d.scopes[span.scope as usize].resource as usize;
        let service = self.service(d, rid, seen);
        let kind = u8::try_from(span.kind).unwrap_or(0);
        let mut destination = NONE;
        let mut ignored = false;
        match kind {
            span_kind::CLIENT | span_kind::PRODUCER => {
                let attrs = d.span_attrs_of(si);
                ignored = self.reader.ignored(attrs);
                if !ignored {
                    destination = self.reader.destination(attrs, &mut self.state);
                }
            }
            span_kind::SERVER | span_kind::CONSUMER => {
                self.describe(d, si, rid, service, seen, now)
            }
            _ => {}
        }
        AuditSpan {
            span_id: u64::from_be_bytes(span.span_id),
            parent: span.parent_span_id.map_or(0, u64::from_be_bytes),
            service,
            destination,
            kind,
            ignored,
        }
    }

    /// Learns what span `si` says about its service, if it is a SERVER/CONSUMER span (a late span, not audited).
    fn learn<'a>(&mut self, d: &Decoded<'a>, si: usize, seen: &mut PayloadOrigins<'a>, now: i64) {
        let span = &d.spans[si];
        if matches!(
            u8::try_from(span.kind).unwrap_or(0),
            span_kind::SERVER | span_kind::CONSUMER
        ) {
            let rid = d.scopes[span.scope as usize].resource as usize;
            let service = self.service(d, rid, seen);
            self.describe(d, si, rid, service, seen, now);
        }
    }

    /// Learns the addresses a SERVER/CONSUMER span of `service` says it answers on, once per payload for each
    /// (resource, first address as written, port).
    fn describe<'a>(
        &mut self,
        d: &Decoded<'a>,
        si: usize,
        rid: usize,
        service: u16,
        seen: &mut PayloadOrigins<'a>,
        now: i64,
    ) {
        if service == NONE {
            return;
        }
        let attrs = d.span_attrs_of(si);
        let Some((first, port)) = self.reader.self_key(attrs) else {
            return;
        };
        let key = (rid as u32, first, port);
        if seen.learned.contains(&key) {
            return;
        }
        if seen.learned.len() < LEARNED_PER_PAYLOAD {
            seen.learned.push(key);
        }
        let resource = d.resource_attrs_of(rid);
        (self.reader).learn_self(attrs, resource, service, now, &mut self.state);
    }
}

/// What the store knows of a trace ID, for `explain`.
#[derive(Debug, Clone, Copy)]
pub enum Knowledge {
    /// Buffered, not decided yet.
    Pending {
        first_seen: i64,
        due: i64,
        span_count: u32,
    },
    /// Decided (or evicted) recently: its record.
    Decided(Record),
    /// Its record is gone, but the sampled cache still says it was kept.
    InSampledCache,
    /// Its record is gone, but the non-sampled filter says it was dropped (false positives ~1e-8).
    InNotSampledFilter,
    Unknown,
}

pub struct Shard {
    cfg: Arc<EngineConfig>,
    policies: Vec<Policy>,
    /// Order in which policies are evaluated: the `drop` policies first, then the others in configuration order
    /// (as the reference does: a dropped trace is never offered to the others, so it spends no rate-limit token).
    eval_order: Vec<usize>,
    limit: usize,
    /// Trace ID → its slot (a buffered trace), or `HELD | arrival` (a decided trace held for its late spans; its
    /// outcome in `resident`). A `u64` value costs nothing over a `u32` beside a `u128` key.
    table: TraceTable,
    traces: Slots,
    free: Vec<u32>,
    /// (slot, generation) in first-seen order.
    due: VecDeque<(u32, u32)>,
    /// (slot, generation, due time) in root-arrival order.
    root_due: VecDeque<(u32, u32, i64)>,
    sampled: SampledCache,
    not_sampled: NotSampledFilter,
    /// The outcomes of decided traces held in the table when their outcome has no cache (`ResidentDecisions`).
    resident: ResidentDecisions,
    /// Set while a trace is being decided: the table value that holds it once its slot is freed.
    hold: Option<u64>,
    /// True while a decision slice runs (`poll_some`): the table changes of the traces it frees wait in
    /// `table_updates` (a held value, or `None`: removed) and are applied together at its end (`settle_table`).
    /// Each is a probe of a table too large for the cache; in one tight loop their misses overlap, where
    /// between two decisions each stalled alone. Nothing reads the table during a slice.
    deferring: bool,
    table_updates: Vec<(Key, Option<u64>)>,
    /// New traces so far: the next one's arrival number.
    arrivals: u64,
    interner: Interner,
    late: Vec<Chunk>,
    late_bytes: u64,
    log: DecisionLog,
    recent: RecentKept,
    audit: Option<ShardAudit>,
    /// Audit spans held by buffered traces.
    audit_spans: u64,
    /// Buffered traces whose view holds a [`ViewExtra`].
    extras: u64,
    clock: i64,
    span_bytes: u64,
    spans: u64,
    chunks: u64,
    pub stats: ShardStats,
    pub policy_stats: Vec<PolicyCounters>,
    /// The votes cast on the trace being decided (policy index, vote, inclusion), reused across decisions.
    cast: Vec<(usize, Ballot, Inclusion)>,
    /// With tail storage: buffered traces by first segment, and the decisions made since the last round.
    durable: Option<DurableState>,
    /// `maximum_trace_size_bytes` or a `bytes_limiting` policy reads trace sizes, measured at ingest.
    measures_size: bool,
    /// The number of the configuration deciding now (see `reload`).
    config_version: u32,
    /// `tailsample.shadow`: the shadow policies' instances in this shard, and what they found.
    pub shadow: Option<ShadowSet>,
    /// With the archive on: traces decided not kept since the last round, waiting to be written (bounded).
    archive: Option<ArchiveStash>,
}

/// Dropped traces on their way to the archive, taken by the engine at each round.
pub struct ArchiveStash {
    pub traces: Vec<(u128, Vec<Chunk>)>,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Traces not archived because the stash was full (ingest evicted faster than rounds took them).
    pub overflowed: u64,
}

#[derive(Default)]
struct DurableState {
    pending_by_segment: BTreeMap<u64, u32>,
    /// By slot, the spans log segment of the buffered trace's first payload: the oldest it needs kept.
    first_segments: Vec<u64>,
    decided: Vec<Decided>,
    min_kept_segment: u64,
}

impl Shard {
    /// A shard holding `limit` traces and caches of the given sizes (its shares of the configured ones).
    pub fn new(
        cfg: Arc<EngineConfig>,
        limit: usize,
        sampled_cache: usize,
        non_sampled_cache: usize,
        decision_log: usize,
        recent_kept_bytes: usize,
    ) -> Self {
        let policies = cfg.policies.clone();
        let is_drop = |p: &Policy| p.kind.vetoes();
        let drops = (0..policies.len()).filter(|&i| is_drop(&policies[i]));
        let eval_order: Vec<usize> = drops
            .chain((0..policies.len()).filter(|&i| !is_drop(&policies[i])))
            .collect();
        let n = policies.len();
        let audit = ShardAudit::new(&cfg);
        let mut measures_size = cfg.maximum_trace_size_bytes > 0;
        for p in policies
            .iter()
            .chain(cfg.shadow.iter().flat_map(|s| &s.policies))
        {
            p.walk(&mut |q| measures_size |= q.kind.measures_size());
        }
        // Each shard holds its share of the disagreements remembered.
        let shadow = cfg
            .shadow
            .as_ref()
            .map(|c| ShadowSet::new(c, c.max_disagreements.div_ceil(cfg.num_shards.max(1))));
        Shard {
            cfg,
            policies,
            eval_order,
            limit,
            table: TraceTable::default(),
            traces: Slots::default(),
            free: Vec::new(),
            due: VecDeque::new(),
            root_due: VecDeque::new(),
            sampled: SampledCache::new(sampled_cache),
            not_sampled: NotSampledFilter::new(non_sampled_cache),
            resident: ResidentDecisions::default(),
            hold: None,
            deferring: false,
            table_updates: Vec::new(),
            arrivals: 0,
            interner: Interner::new(),
            late: Vec::new(),
            late_bytes: 0,
            log: DecisionLog::new(decision_log),
            recent: RecentKept::new(recent_kept_bytes),
            audit,
            audit_spans: 0,
            extras: 0,
            clock: i64::MIN,
            span_bytes: 0,
            spans: 0,
            chunks: 0,
            stats: ShardStats::default(),
            policy_stats: vec![PolicyCounters::default(); n],
            cast: Vec::with_capacity(n),
            durable: None,
            measures_size,
            config_version: 1,
            shadow,
            archive: None,
        }
    }

    /// Tail storage is on: follow which segments buffered traces need, and record every decision.
    pub fn set_durable(&mut self) {
        self.durable = Some(DurableState {
            min_kept_segment: u64::MAX,
            ..DurableState::default()
        });
    }

    /// The archive is on: traces decided not kept wait in a stash of at most `max_bytes` for the next round.
    pub fn set_archiving(&mut self, max_bytes: u64) {
        self.archive = Some(ArchiveStash {
            traces: Vec::new(),
            bytes: 0,
            max_bytes,
            overflowed: 0,
        });
    }

    /// Moves the stashed dropped traces to `out`; returns how many overflowed the stash since the last call.
    pub fn take_archived(&mut self, out: &mut Vec<(u128, Vec<Chunk>)>) -> u64 {
        let Some(a) = &mut self.archive else {
            return 0;
        };
        out.append(&mut a.traces);
        a.bytes = 0;
        std::mem::take(&mut a.overflowed)
    }

    /// A trace leaving not kept: its chunks go to the archive stash (when on and not full) instead of being freed.
    fn stash(&mut self, slot: u32) {
        let Some(a) = &mut self.archive else {
            return;
        };
        let t = &mut self.traces[slot as usize];
        let bytes = t.framed_bytes();
        if a.bytes + bytes > a.max_bytes {
            a.overflowed += 1;
            return;
        }
        a.bytes += bytes;
        self.span_bytes -= bytes;
        self.chunks -= t.chunks.len() as u64;
        let chunks = std::mem::take(&mut t.chunks);
        a.traces
            .push((u128::from_be_bytes(t.view.trace_id), chunks));
    }

    /// With tail storage, the spans log segment of the trace in `slot`'s first payload (0 without).
    fn first_segment(&self, slot: u32) -> u64 {
        self.durable
            .as_ref()
            .and_then(|d| d.first_segments.get(slot as usize).copied())
            .unwrap_or(0)
    }

    fn record_decision(&mut self, id: u128, verdict: Verdict, first_segment: u64) {
        if let Some(d) = &mut self.durable {
            d.decided.push(Decided { id, verdict });
            if matches!(verdict, Verdict::Sampled { .. }) {
                d.min_kept_segment = d.min_kept_segment.min(first_segment);
            }
        }
    }

    /// Moves the decisions made since the last call to `out`; returns the oldest spans segment of the traces
    /// kept among them (`u64::MAX` when none).
    pub fn take_decisions(&mut self, out: &mut Vec<Decided>) -> u64 {
        let Some(d) = &mut self.durable else {
            return u64::MAX;
        };
        out.append(&mut d.decided);
        std::mem::replace(&mut d.min_kept_segment, u64::MAX)
    }

    /// The oldest spans segment a buffered trace needs (None when none is buffered, or without storage).
    pub fn pending_min_segment(&self) -> Option<u64> {
        self.durable
            .as_ref()?
            .pending_by_segment
            .first_key_value()
            .map(|(&s, _)| s)
    }

    /// When a round (`poll`) next has work in this shard, on the engine clock: `i64::MIN` (at once) for late spans
    /// to send, dropped traces stashed for the archive or decisions to record; else the first buffered trace's due
    /// time (`decision_wait` after its first span, or earlier after its root); None when nothing waits. Entries of
    /// traces already gone are popped on the way, as `poll` would.
    pub fn next_due(&mut self) -> Option<i64> {
        let stashed = self
            .archive
            .as_ref()
            .is_some_and(|a| !a.traces.is_empty() || a.overflowed > 0);
        let recorded = self.durable.as_ref().is_some_and(|d| !d.decided.is_empty());
        if !self.late.is_empty() || stashed || recorded {
            return Some(i64::MIN);
        }
        let first = self.due_front().map(|(_, due)| due);
        let root = self.root_due_front().map(|(_, due)| due);
        first.into_iter().chain(root).min()
    }

    /// The first live trace of `due` (stale entries popped on the way): its slot and due time.
    fn due_front(&mut self) -> Option<(u32, i64)> {
        while let Some(&(slot, generation)) = self.due.front() {
            if self.is_live(slot, generation) {
                let due = self.traces[slot as usize].first_seen;
                return Some((slot, due.saturating_add(self.cfg.decision_wait_ns)));
            }
            self.due.pop_front();
        }
        None
    }

    /// The first live trace of `root_due` (stale entries popped on the way): its slot and due time.
    fn root_due_front(&mut self) -> Option<(u32, i64)> {
        while let Some(&(slot, generation, due)) = self.root_due.front() {
            if self.is_live(slot, generation) {
                return Some((slot, due));
            }
            self.root_due.pop_front();
        }
        None
    }

    /// The shard's clock never runs backwards.
    fn tick(&mut self, now: i64) -> i64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    #[inline]
    fn is_live(&self, slot: u32, generation: u32) -> bool {
        let t = &self.traces[slot as usize];
        t.live && t.generation == generation
    }

    /// Checks, before anything is taken, that this shard can take its part of a payload.
    /// `order` holds (trace ID, span index) sorted by trace ID.
    pub fn admit(&mut self, order: &[(u128, u32)]) -> Result<(), Error> {
        if self.late_bytes >= self.cfg.late_span_buffer_bytes {
            self.stats.refused_late_span_buffer += 1;
            return Err(Error::Backpressure {
                limit: "late_span_buffer_bytes",
                message: format!(
                    "late spans of kept traces fill their buffer ({} bytes, limit {}); call poll() to drain it, then retry",
                    self.late_bytes, self.cfg.late_span_buffer_bytes
                ),
            });
        }
        if self.cfg.block_on_overflow {
            let mut new = 0usize;
            let mut prev = None;
            for &(id, _) in order {
                if prev == Some(id) {
                    continue;
                }
                prev = Some(id);
                // A held decision counts as new: making room for another trace of the payload may push it out.
                if self.slot_of(id).is_none()
                    && !self.sampled.contains(id)
                    && !self.not_sampled.contains(id)
                {
                    new += 1;
                }
            }
            if self.buffered() + new > self.limit {
                self.stats.refused_num_traces += 1;
                return Err(Error::Backpressure {
                    limit: "num_traces",
                    message: format!(
                        "num_traces reached ({} buffered, limit {}, {} new in this payload) and block_on_overflow is on; retry after the next decisions",
                        self.buffered(),
                        self.limit,
                        new
                    ),
                });
            }
        }
        Ok(())
    }

    /// Takes this shard's spans of a decoded payload. `admit` must have accepted `order` first.
    /// `segment` is the spans log segment the payload was written to (0 without tail storage).
    pub fn ingest<'a>(&mut self, d: &Decoded<'a>, order: &[(u128, u32)], now: i64, segment: u64) {
        let now = self.tick(now);
        self.stats.spans_received += order.len() as u64;
        // Origins of this payload's scopes, interned on first use.
        let mut seen = PayloadOrigins {
            resources: vec![None; d.resources.len()],
            origins: vec![None; d.scopes.len()],
            services: if self.audit.is_some() {
                vec![SERVICE_UNSET; d.resources.len()]
            } else {
                Vec::new()
            },
            learned: Vec::new(),
            resource_sizes: if self.measures_size {
                vec![UNMEASURED; d.resources.len()]
            } else {
                Vec::new()
            },
            scope_sizes: if self.measures_size {
                vec![UNMEASURED; d.scopes.len()]
            } else {
                Vec::new()
            },
        };
        // Each trace's table lookup is a cache miss at high rates: ask for the lines a few traces ahead.
        let mut ahead = order.chunk_by(|a, b| a.0 == b.0);
        for group in ahead.by_ref().take(PREFETCH_AHEAD) {
            self.table.prefetch(&Key::of(group[0].0));
        }
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            if let Some(next) = ahead.next() {
                self.table.prefetch(&Key::of(next[0].0));
            }
            self.ingest_trace(d, group[0].0, group, now, segment, &mut seen);
        }
    }

    fn origin_of(
        &mut self,
        d: &Decoded<'_>,
        scope: u32,
        seen: &mut PayloadOrigins<'_>,
    ) -> Arc<Origin> {
        if let Some(o) = &seen.origins[scope as usize] {
            return o.clone();
        }
        let sv = &d.scopes[scope as usize];
        let rid = sv.resource as usize;
        let resource = match &seen.resources[rid] {
            Some(r) => r.clone(),
            None => {
                let attrs = d.resource_attrs_of(rid);
                let folders = &self.cfg.folders;
                let r = self.interner.resource(&d.resources[rid], || {
                    let mut bits = 0u64;
                    for (slot, kind) in folders {
                        if kind.resource_matches(attrs) {
                            bits |= 1u64 << slot;
                        }
                    }
                    bits
                });
                seen.resources[rid] = Some(r.clone());
                r
            }
        };
        let o = self.interner.origin(&resource, sv);
        seen.origins[scope as usize] = Some(o.clone());
        o
    }

    /// Cuts a trace's spans (sorted by span index, so each scope's spans are contiguous) into framed chunks.
    fn chunks_of(
        &mut self,
        d: &Decoded<'_>,
        group: &[(u128, u32)],
        seen: &mut PayloadOrigins<'_>,
        mut each: impl FnMut(&mut Self, Chunk),
    ) {
        let mut i = 0;
        while i < group.len() {
            let scope = d.spans[group[i].1 as usize].scope;
            let mut j = i;
            let mut size = 0usize;
            while j < group.len() && d.spans[group[j].1 as usize].scope == scope {
                size += framed_size(d.spans[group[j].1 as usize].raw.len());
                j += 1;
            }
            let mut framed = Vec::with_capacity(size);
            for &(_, s) in &group[i..j] {
                frame_span(&mut framed, d.spans[s as usize].raw);
            }
            let origin = self.origin_of(d, scope, seen);
            each(
                self,
                Chunk {
                    origin,
                    framed: framed.into_boxed_slice(),
                    spans: (j - i) as u32,
                },
            );
            i = j;
        }
    }

    /// Late spans are not audited (their trace was), but what SERVER/CONSUMER spans say about themselves is
    /// learned from every span ingested.
    fn learn_late<'a>(
        &mut self,
        d: &Decoded<'a>,
        group: &[(u128, u32)],
        seen: &mut PayloadOrigins<'a>,
        now: i64,
    ) {
        if let Some(a) = &mut self.audit {
            for &(_, si) in group {
                a.learn(d, si as usize, seen, now);
            }
        }
    }

    /// Late spans of a kept trace: out at the next poll, rewritten with `stage` and `attrs`.
    #[allow(clippy::too_many_arguments)]
    fn forward_late<'a>(
        &mut self,
        d: &Decoded<'a>,
        id: u128,
        group: &[(u128, u32)],
        seen: &mut PayloadOrigins<'a>,
        now: i64,
        stage: Stage,
        attrs: &[u8],
    ) {
        self.learn_late(d, group, seen, now);
        self.stats.late_spans_forwarded += group.len() as u64;
        self.log.add_late(id, group.len() as u32);
        self.chunks_of(d, group, seen, |s, mut c| {
            c.framed = s.rewrite_kept(c.framed, stage, attrs);
            s.late_bytes += c.framed.len() as u64;
            s.late.push(c);
        });
    }

    /// Late spans of a trace decided not kept: dropped, and counted.
    fn drop_late<'a>(
        &mut self,
        d: &Decoded<'a>,
        id: u128,
        group: &[(u128, u32)],
        seen: &mut PayloadOrigins<'a>,
        now: i64,
    ) {
        self.learn_late(d, group, seen, now);
        self.stats.late_spans_dropped += group.len() as u64;
        self.log.add_late(id, group.len() as u32);
    }

    /// Remembers a decision for the trace's late spans: in the decision cache of its outcome, or, when that
    /// cache is off (size 0), held in the table's place until `num_traces` pushes it out, as the reference does.
    fn remember_outcome(&mut self, id: u128, slot: u32, outcome: Resident) {
        match outcome {
            Resident::Kept(stage) if self.cfg.sampled_cache_size > 0 => {
                self.sampled.insert(id, stage)
            }
            Resident::NotKept if self.cfg.non_sampled_cache_size > 0 => self.not_sampled.insert(id),
            _ => {
                // Held once `free_slot` releases the spans: the table keeps the ID.
                let arrival = self.traces[slot as usize].arrival;
                self.resident.insert(arrival, id, outcome);
                self.hold = Some(HELD | arrival);
            }
        }
    }

    fn ingest_trace<'a>(
        &mut self,
        d: &Decoded<'a>,
        id: u128,
        group: &[(u128, u32)],
        now: i64,
        segment: u64,
        seen: &mut PayloadOrigins<'a>,
    ) {
        let slot = match self.table.get(&Key::of(id)) {
            Some(&v) if v < HELD => v as u32,
            // Held in the table after its decision: the reference sends these on as they come, without
            // attributes, or drops them.
            Some(&v) => {
                match self.resident.get(v & !HELD) {
                    Some(Resident::Kept(stage)) => {
                        self.forward_late(d, id, group, seen, now, stage, &[])
                    }
                    _ => self.drop_late(d, id, group, seen, now),
                }
                return;
            }
            None if self.sampled.contains(id) => {
                // A late span of a kept trace: out at the next poll, with the trace's sampling probability.
                let stage = self.sampled.get(id).unwrap_or_default();
                let attrs = if self.cfg.record_policy {
                    bool_attribute("tailsampling.cached_decision", true)
                } else {
                    Vec::new()
                };
                self.forward_late(d, id, group, seen, now, stage, &attrs);
                return;
            }
            None if self.not_sampled.contains(id) => {
                self.drop_late(d, id, group, seen, now);
                return;
            }
            None => self.new_trace(id, now, segment),
        };
        // Fold the summary: counts, times, status, flags, root, and the folding policies' bits.
        let s = slot as usize;
        let cfg = self.cfg.clone();
        let first_root = {
            let t = &mut self.traces[s];
            let v = &mut t.view;
            let had_root = v.root_seen;
            let had_extra = v.extra.is_some();
            if self.measures_size {
                let (content, framed) = reference_size(d, group, seen);
                let e = v.extra_mut();
                e.bytes += content;
                e.otlp_bytes += framed;
            }
            if self.audit.is_some() {
                t.audit.reserve_exact(group.len());
            }
            for &(_, si) in group {
                let span = &d.spans[si as usize];
                let is_root = span.parent_span_id.is_none();
                fold_policy_facts(&cfg, v, d, si as usize, v.span_count == 0);
                v.span_count = v.span_count.saturating_add(1);
                if span.start_time_unix_nano != 0
                    && (v.min_start_unix_nano == 0
                        || span.start_time_unix_nano < v.min_start_unix_nano)
                {
                    v.min_start_unix_nano = span.start_time_unix_nano;
                }
                v.max_end_unix_nano = v.max_end_unix_nano.max(span.end_time_unix_nano);
                v.status_mask |= status_bits::of(span.status_code);
                v.sampled_flag |= span.flags & 1 == 1;
                v.root_seen |= is_root;
                if let Some(a) = &mut self.audit {
                    t.audit.push(a.span(d, si as usize, seen, now));
                    self.audit_spans += 1;
                }
            }
            self.extras += u64::from(!had_extra && t.view.extra.is_some());
            !had_root && t.view.root_seen
        };
        self.chunks_of(d, group, seen, |sh, c| {
            let t = &mut sh.traces[s];
            t.view.matched |= c.origin.resource.matched;
            sh.span_bytes += c.framed.len() as u64;
            sh.spans += u64::from(c.spans);
            sh.chunks += 1;
            if t.chunks.capacity() == 0 {
                // Most traces are one chunk: a first push would allocate room for four.
                t.chunks.reserve_exact(1);
            }
            t.chunks.push(c);
        });
        if first_root && self.cfg.decision_wait_after_root_received_ns > 0 {
            let generation = self.traces[s].generation;
            self.root_due.push_back((
                slot,
                generation,
                now.saturating_add(self.cfg.decision_wait_after_root_received_ns),
            ));
        }
        let max = self.cfg.maximum_trace_size_bytes;
        if max > 0 && self.traces[s].view.extra().bytes > max {
            // Too large: not sampled at once; late spans follow through the non-sampled cache.
            self.stats.traces_dropped += 1;
            self.stats.traces_dropped_too_large += 1;
            self.stats.spans_dropped += u64::from(self.traces[s].view.span_count);
            self.remember_outcome(id, slot, Resident::NotKept);
            self.log_undecided(slot, Outcome::DroppedTooLarge, Trigger::Ingest, now);
            self.record_decision(id, Verdict::NotSampled, self.first_segment(slot));
            self.stash(slot);
            self.free_slot(slot);
        }
    }

    /// Records a trace that leaves without a vote (too large, evicted, dropped at shutdown).
    fn log_undecided(&mut self, slot: u32, outcome: Outcome, trigger: Trigger, now: i64) {
        let t = &self.traces[slot as usize];
        self.log.push(Record {
            trace_id: u128::from_be_bytes(t.view.trace_id),
            decision: Decision::without_votes(outcome),
            trigger,
            first_seen: t.first_seen,
            due: t.first_seen.saturating_add(self.cfg.decision_wait_ns),
            decided_at: now,
            span_count: t.view.span_count,
            late_spans: 0,
            audit: None,
            config_version: self.config_version,
            shadow: PackedVerdict::NONE,
        });
    }

    pub fn is_buffered(&self, id: u128) -> bool {
        self.slot_of(id).is_some()
    }

    /// The slot of a buffered (undecided) trace.
    #[inline]
    fn slot_of(&self, id: u128) -> Option<u32> {
        match self.table.get(&Key::of(id)) {
            Some(&v) if v < HELD => Some(v as u32),
            _ => None,
        }
    }

    /// Undecided traces buffered (the table also holds decided ones).
    #[inline]
    fn buffered(&self) -> usize {
        self.table.len() - self.resident.len()
    }

    /// Forgets a buffered trace undecided (no decision, no cache entry, no record); false if not buffered.
    pub fn forget(&mut self, id: u128) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        self.stats.traces_forgotten += 1;
        self.stats.spans_forgotten += u64::from(self.traces[slot as usize].view.span_count);
        self.record_decision(id, Verdict::Discarded, 0);
        self.free_slot(slot);
        true
    }

    /// What this shard knows of a trace ID.
    pub fn explain(&mut self, id: u128) -> Knowledge {
        if let Some(slot) = self.slot_of(id) {
            let t = &self.traces[slot as usize];
            return Knowledge::Pending {
                first_seen: t.first_seen,
                due: t.first_seen.saturating_add(self.cfg.decision_wait_ns),
                span_count: t.view.span_count,
            };
        }
        if let Some(r) = self.log.get(id) {
            return Knowledge::Decided(*r);
        }
        if self.sampled.contains(id) {
            Knowledge::InSampledCache
        } else if self.not_sampled.contains(id) {
            Knowledge::InNotSampledFilter
        } else {
            Knowledge::Unknown
        }
    }

    /// The propagation audit so far (None when it is off).
    pub fn gaps(&self) -> Option<GapReport> {
        self.audit.as_ref().map(|a| a.state.report())
    }

    pub fn audit_totals(&self) -> Option<crate::propagation::Totals> {
        self.audit.as_ref().map(|a| a.state.totals())
    }

    /// Propagation audit gauges: pairs held, names overflowed, bytes of names and pairs, addresses held,
    /// addresses overflowed (zeros when off).
    pub fn audit_gauges(&self) -> [u64; 5] {
        self.audit.as_ref().map_or([0; 5], |a| {
            [
                a.state.pair_count() as u64,
                a.state.names.overflowed,
                a.state.memory_bytes() as u64,
                a.state.address_count() as u64,
                a.state.addresses_overflowed,
            ]
        })
    }

    /// The newest kept copy of a trace, if still held.
    pub fn kept_trace(&self, id: u128) -> Option<&KeptTrace> {
        self.recent.get(id)
    }

    /// Up to `limit` recently kept traces, newest first.
    pub fn recent_kept(&self, limit: usize) -> Vec<KeptSummary> {
        self.recent.newest(limit).collect()
    }

    /// Recently kept traces held, and their bytes.
    pub fn recent_kept_gauges(&self) -> (u64, u64) {
        (self.recent.len() as u64, self.recent.bytes() as u64)
    }

    pub fn decision_log_len(&self) -> usize {
        self.log.len()
    }

    pub fn decision_log_bytes(&self) -> usize {
        self.log.bytes()
    }

    fn new_trace(&mut self, id: u128, now: i64, segment: u64) -> u32 {
        if self.table.len() >= self.limit {
            self.make_room();
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.traces.push(Trace::default());
                (self.traces.len() - 1) as u32
            }
        };
        let t = &mut self.traces[slot as usize];
        t.live = true;
        t.first_seen = now;
        t.arrival = self.arrivals;
        self.arrivals += 1;
        t.view = TraceView {
            trace_id: id.to_be_bytes(),
            ..Default::default()
        };
        let generation = t.generation;
        if let Some(d) = &mut self.durable {
            *d.pending_by_segment.entry(segment).or_insert(0) += 1;
            let i = slot as usize;
            if d.first_segments.len() <= i {
                d.first_segments.resize(i + 1, 0);
            }
            d.first_segments[i] = segment;
        }
        self.table.insert(Key::of(id), u64::from(slot));
        self.due.push_back((slot, generation));
        self.stats.traces_received += 1;
        self.compact_queues();
        slot
    }

    /// Frees one place of `num_traces`: the oldest arrival among the undecided traces and the decided ones held
    /// (as the reference's single queue does). With `block_on_overflow` undecided traces are never pushed out
    /// here (`admit` refused the payload instead), so a held decision goes first.
    fn make_room(&mut self) {
        let oldest_undecided = self
            .due_front()
            .map(|(slot, _)| self.traces[slot as usize].arrival);
        let resident_first = match (self.resident.oldest_arrival(), oldest_undecided) {
            (Some(r), Some(u)) => {
                r < u || (self.cfg.block_on_overflow && self.buffered() < self.limit)
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        if resident_first {
            if let Some(id) = self.resident.pop_oldest() {
                self.table.remove(&Key::of(id));
            }
            // Once full, every new trace pushes a held one out: ask for a later one's line now.
            if let Some(later) = self.resident.queued_after(PREFETCH_AHEAD) {
                self.table.prefetch(&Key::of(later));
            }
        } else {
            self.evict_oldest();
        }
    }

    /// Pushes out the oldest first-seen undecided trace (its spans are lost, and counted).
    fn evict_oldest(&mut self) {
        while let Some((slot, generation)) = self.due.pop_front() {
            if self.is_live(slot, generation) {
                self.stats.traces_evicted += 1;
                self.stats.spans_evicted += u64::from(self.traces[slot as usize].view.span_count);
                let now = self.clock;
                self.log_undecided(slot, Outcome::Evicted, Trigger::Ingest, now);
                self.discard(slot);
                self.stash(slot);
                self.free_slot(slot);
                return;
            }
        }
    }

    /// Records a trace leaving undecided (for tail storage: its spans are not replayed).
    fn discard(&mut self, slot: u32) {
        let id = u128::from_be_bytes(self.traces[slot as usize].view.trace_id);
        self.record_decision(id, Verdict::Discarded, 0);
    }

    fn free_slot(&mut self, slot: u32) {
        let t = &mut self.traces[slot as usize];
        let id = u128::from_be_bytes(t.view.trace_id);
        if let Some(d) = &mut self.durable {
            let first = d.first_segments.get(slot as usize).copied().unwrap_or(0);
            if let std::collections::btree_map::Entry::Occupied(mut e) =
                d.pending_by_segment.entry(first)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        t.live = false;
        t.generation = t.generation.wrapping_add(1);
        // Chunks moved out (kept, archived) were taken off `span_bytes` and `chunks` then.
        self.span_bytes -= t.framed_bytes();
        self.spans -= u64::from(t.view.span_count);
        self.chunks -= t.chunks.len() as u64;
        if t.chunks.capacity() > 4 {
            t.chunks = Vec::new(); // a trace of many payloads does not leave its buffer to the free slot
        } else {
            // The next trace in this slot reuses it: most traces are one chunk, one allocation spared each.
            t.chunks.clear();
        }
        if t.view.extra.take().is_some() {
            self.extras -= 1;
        }
        self.audit_spans -= t.audit.len() as u64;
        if t.audit.capacity() > 64 {
            t.audit = Vec::new(); // a large trace's buffer is not held by the free slot
        } else {
            t.audit.clear();
        }

        // A decided trace held for its late spans keeps its ID in the table (one lookup either way).
        let (key, held) = (Key::of(id), self.hold.take());
        if self.deferring {
            self.table_updates.push((key, held));
        } else {
            self.table.replace_or_remove(&key, held);
        }
        self.free.push(slot);
    }

    /// Stops deferring and applies the table changes deferred (see `deferring`).
    fn settle_table(&mut self) {
        self.deferring = false;
        for (key, _) in self.table_updates.iter().take(PREFETCH_AHEAD) {
            self.table.prefetch(key);
        }
        for i in 0..self.table_updates.len() {
            if let Some((next, _)) = self.table_updates.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(next);
            }
            let (key, held) = self.table_updates[i];
            self.table.replace_or_remove(&key, held);
        }
        self.table_updates.clear();
    }

    /// Drops stale queue entries once they outnumber the live traces.
    fn compact_queues(&mut self) {
        let live = self.buffered().max(1024);
        if self.due.len() > 2 * live {
            let traces = &self.traces;
            self.due
                .retain(|&(s, g)| traces[s as usize].live && traces[s as usize].generation == g);
        }
        if self.root_due.len() > 2 * live {
            let traces = &self.traces;
            self.root_due
                .retain(|&(s, g, _)| traces[s as usize].live && traces[s as usize].generation == g);
        }
    }

    /// Decides one trace: every policy votes, in evaluation order (the `drop` policies first; evaluation stops
    /// where `decision::stops` says), and `decision::precedence` makes the outcome of the votes.
    fn decide(
        &mut self,
        slot: u32,
        due: i64,
        now: i64,
        trigger: Trigger,
        out: &mut Vec<Chunk>,
    ) -> Outcome {
        let s = slot as usize;
        // Taken for the policies (they live in `self`), put back before the slot is freed.
        let view = std::mem::take(&mut self.traces[s].view);
        let mut votes = [Ballot::NotEvaluated; MAX_RECORDED_VOTES];
        self.cast.clear();
        for k in 0..self.eval_order.len() {
            let i = self.eval_order[k];
            let result = self.policies[i].evaluate(&view, now);
            let ballot = Ballot::of(&result);
            if let Some(v) = votes.get_mut(i) {
                *v = ballot;
            }
            match result {
                Ok((vote, inclusion)) => {
                    let c = &mut self.policy_stats[i];
                    match vote {
                        Vote::Sampled => c.sampled += 1,
                        Vote::NotSampled => c.not_sampled += 1,
                        Vote::Dropped => c.dropped += 1,
                    }
                    self.cast.push((i, ballot, inclusion));
                    if decision::stops(vote, self.cfg.sample_on_first_match) {
                        break;
                    }
                }
                Err(_) => {
                    self.policy_stats[i].errors += 1;
                    self.stats.policy_evaluation_errors += 1;
                }
            }
        }
        let (outcome, decided_by) = decision::precedence(self.cast.iter().map(|&(i, b, _)| (i, b)));
        let id = u128::from_be_bytes(view.trace_id);
        let sample_on_first_match = self.cfg.sample_on_first_match;
        let shadow = self
            .shadow
            .as_mut()
            .map(|sh| sh.judge(&view, now, sample_on_first_match));
        if let (Some(sh), Some(verdict)) = (self.shadow.as_mut(), shadow) {
            let bytes = self.traces[s].framed_bytes();
            let live_policy = decided_by.map(|i| i as u16);
            sh.record(id, &view, bytes, outcome, live_policy, verdict, now);
        }
        let spans = u64::from(view.span_count);
        let mut stage = Stage::Certain;
        let lag = now.saturating_sub(due).max(0) as u64;
        self.stats.decision_lag_ns_total += lag;
        self.stats.decisions_timed += 1;
        self.stats.decision_lag.record(lag);
        let kept = outcome == Outcome::Sampled;
        if view.status_mask & status_bits::ERROR != 0 {
            self.stats.error_traces_decided += 1;
            self.stats.error_traces_not_sampled += u64::from(!kept);
        }
        let audit = self
            .audit
            .as_mut()
            .map(|a| a.state.audit(id, &self.traces[s].audit, kept, now).into());
        match (outcome, decided_by) {
            (Outcome::Sampled, Some(i)) => {
                self.policy_stats[i].decided += 1;
                self.stats.traces_sampled += 1;
                self.stats.spans_sampled += spans;
                if self.cfg.adjusted_counts.is_some() {
                    // Policies that failed or were not evaluated cast no inclusion (`Never`).
                    stage = Stage::of(self.cast.iter().map(|&(_, _, inclusion)| inclusion));
                }
                if stage == Stage::Unknown {
                    self.stats.traces_sampled_probability_unknown += 1;
                }
                self.remember_outcome(id, slot, Resident::Kept(stage));
                let mut attrs = if self.cfg.record_policy {
                    self.policy_attributes(i)
                } else {
                    Vec::new()
                };
                if let Some(v) = shadow {
                    self.shadow_attributes(v, &mut attrs);
                }
                self.keep_chunks(s, id, stage, &attrs, now, out);
            }
            (Outcome::DroppedByPolicy, _) => {
                self.stats.traces_dropped += 1;
                self.stats.traces_dropped_by_policy += 1;
                self.stats.spans_dropped += spans;
                self.remember_outcome(id, slot, Resident::NotKept);
            }
            _ => {
                self.stats.traces_not_sampled += 1;
                self.stats.spans_not_sampled += spans;
                self.remember_outcome(id, slot, Resident::NotKept);
            }
        }
        let decision = Decision {
            outcome,
            policy: decided_by.map(|i| i as u16),
            votes,
            stage,
        };
        // Tail storage follows the oldest spans segment of the kept traces only.
        let first_segment = if kept { self.first_segment(slot) } else { 0 };
        self.record_decision(id, Verdict::from(&decision), first_segment);
        self.log.push(Record {
            trace_id: id,
            decision,
            trigger,
            first_seen: self.traces[s].first_seen,
            due,
            decided_at: now,
            span_count: view.span_count,
            late_spans: 0,
            audit,
            config_version: self.config_version,
            shadow: PackedVerdict::pack(shadow),
        });
        self.traces[s].view = view;
        if !kept {
            self.stash(slot);
        }
        self.free_slot(slot);
        outcome
    }

    /// Moves a kept trace's chunks to the output, rewritten as they leave.
    fn keep_chunks(
        &mut self,
        s: usize,
        id: u128,
        stage: Stage,
        attrs: &[u8],
        now: i64,
        out: &mut Vec<Chunk>,
    ) {
        // The chunks move to the output; `free_slot` then counts none for this trace.
        self.chunks -= self.traces[s].chunks.len() as u64;
        self.span_bytes -= self.traces[s].framed_bytes();
        let mut chunks = std::mem::take(&mut self.traces[s].chunks);
        for c in &mut chunks {
            c.framed = self.rewrite_kept(std::mem::take(&mut c.framed), stage, attrs);
        }
        if self.recent.is_on() {
            self.recent.push(id, now, &chunks);
        }
        out.append(&mut chunks);
        // Emptied, its room goes back to the slot (see `free_slot`).
        self.traces[s].chunks = chunks;
    }

    /// Replay: sends a buffered trace out with the decision it was given before a restart (its spans leave at
    /// the next poll, with the late spans). False if it is not buffered.
    pub fn resend(&mut self, id: u128, policy: Option<u16>, stage: Stage, now: i64) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        let s = slot as usize;
        let attrs = match policy.map(usize::from) {
            Some(i) if self.cfg.record_policy && i < self.policies.len() => {
                string_attribute("tailsampling.policy", &self.policies[i].name)
            }
            _ => Vec::new(),
        };
        self.remember_outcome(id, slot, Resident::Kept(stage));
        self.stats.traces_resent += 1;
        self.stats.spans_resent += u64::from(self.traces[s].view.span_count);
        let verdict = Verdict::Sampled { policy, stage };
        self.record_decision(id, verdict, self.first_segment(slot));
        let mut out = Vec::new();
        self.keep_chunks(s, id, stage, &attrs, now, &mut out);
        for c in out {
            self.late_bytes += c.framed.len() as u64;
            self.late.push(c);
        }
        self.free_slot(slot);
        true
    }

    /// Replay: remembers a decision made before a restart in the decision caches.
    pub fn remember(&mut self, d: &Decided) {
        match d.verdict {
            Verdict::Sampled { stage, .. } => self.sampled.insert(d.id, stage),
            Verdict::NotSampled => self.not_sampled.insert(d.id),
            Verdict::Discarded => {}
        }
    }

    /// The bytes this shard holds for buffered traces (the engine's `max_buffered_bytes` counts these).
    pub fn memory_bytes(&self) -> u64 {
        self.gauges().memory_bytes
    }

    /// A kept chunk as it leaves: with `attrs` appended to each span, and, with adjusted counts on, each
    /// span's `ot=th` composed with the stage (and the adjusted count attribute). Untouched when neither.
    fn rewrite_kept(&self, framed: Box<[u8]>, stage: Stage, attrs: &[u8]) -> Box<[u8]> {
        let Some(a) = &self.cfg.adjusted_counts else {
            if attrs.is_empty() {
                return framed;
            }
            return append_attributes(&framed, attrs);
        };
        let mut extra = Vec::with_capacity(attrs.len() + 48);
        map_spans(&framed, |raw, out| {
            let state = span_trace_state(raw);
            let t_out = stage.compose(read_ot(state).th, a.precision);
            extra.clear();
            extra.extend_from_slice(attrs);
            if let (false, Some(t)) = (a.attribute.is_empty(), t_out) {
                extra.extend(double_attribute(&a.attribute, adjusted_count(t)));
            }
            let rewritten = if a.tracestate {
                rewrite_span(raw, &with_threshold(state, t_out), &extra, out)
            } else {
                rewrite_span(raw, state, &extra, out)
            };
            if rewritten.is_err() {
                // Spans were validated at ingest; should one not parse, it leaves as it came.
                out.clear();
                out.extend_from_slice(raw);
            }
        })
    }

    /// With `tailsample.shadow.attribute`: `tailsampling.shadow.decision` (and `tailsampling.shadow.policy` when
    /// the shadow set would keep the trace) on the kept spans, as Refinery's dry run marks them.
    fn shadow_attributes(&self, v: ShadowVerdict, attrs: &mut Vec<u8>) {
        let Some(sh) = self.shadow.as_ref().filter(|sh| sh.attribute) else {
            return;
        };
        attrs.extend(string_attribute(
            "tailsampling.shadow.decision",
            v.outcome.name(),
        ));
        if let Some(p) = v.policy.and_then(|i| sh.policies().get(usize::from(i))) {
            attrs.extend(string_attribute("tailsampling.shadow.policy", &p.name));
        }
    }

    /// `tailsampling.policy` (and `tailsampling.composite_policy`) for a trace policy `i` sampled.
    fn policy_attributes(&self, i: usize) -> Vec<u8> {
        let p = &self.policies[i];
        let mut attrs = string_attribute("tailsampling.policy", &p.name);
        if let Some(sub) = p.kind.sampled_by() {
            attrs.extend(string_attribute("tailsampling.composite_policy", sub));
        }
        attrs
    }

    /// Decides what is due at `now`, at most `budget` traces; appends kept chunks (and, once it finishes, late
    /// spans of kept traces) to `out`. False when traces due at `now` are left for the next call.
    pub fn poll_some(&mut self, now: i64, out: &mut Vec<Chunk>, budget: usize) -> bool {
        self.deferring = true;
        let done = self.poll_slice(now, out, budget);
        self.settle_table();
        done
    }

    fn poll_slice(&mut self, now: i64, out: &mut Vec<Chunk>, budget: usize) -> bool {
        let now = self.tick(now);
        let mut left = budget;
        while let Some((slot, due)) = self.due_front() {
            if due > now {
                break;
            }
            if left == 0 {
                return false;
            }
            left -= 1;
            self.due.pop_front();
            self.decide(slot, due, now, Trigger::DecisionWait, out);
        }
        while let Some((slot, due)) = self.root_due_front() {
            if due > now {
                break;
            }
            if left == 0 {
                return false;
            }
            left -= 1;
            self.root_due.pop_front();
            self.stats.decisions_after_root += 1;
            self.decide(slot, due, now, Trigger::RootReceived, out);
        }
        self.drain_late(out);
        true
    }

    /// Decides (or, with `drop_pending_traces_on_shutdown`, drops) every buffered trace.
    pub fn flush(&mut self, now: i64, out: &mut Vec<Chunk>) {
        let now = self.tick(now);
        let wait = self.cfg.decision_wait_ns;
        while let Some((slot, generation)) = self.due.pop_front() {
            if !self.is_live(slot, generation) {
                continue;
            }
            if self.cfg.drop_pending_traces_on_shutdown {
                let spans = u64::from(self.traces[slot as usize].view.span_count);
                self.stats.traces_dropped += 1;
                self.stats.traces_dropped_on_shutdown += 1;
                self.stats.spans_dropped += spans;
                self.log_undecided(slot, Outcome::DroppedOnShutdown, Trigger::Flush, now);
                self.discard(slot);
                self.stash(slot);
                self.free_slot(slot);
            } else {
                let due = self.traces[slot as usize].first_seen.saturating_add(wait);
                self.stats.decisions_on_flush += 1;
                self.decide(slot, due.min(now), now, Trigger::Flush, out);
            }
        }
        self.root_due.clear();
        self.drain_late(out);
        self.interner.sweep();
    }

    fn drain_late(&mut self, out: &mut Vec<Chunk>) {
        out.append(&mut self.late);
        self.late_bytes = 0;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn gauges(&self) -> ShardGauges {
        use std::mem::size_of;
        // What the allocator holds: slot pages, the table's entries (at most 5/8 full), the queues, free list and
        // first segments as allocated, chunk and audit entries, extras.
        let table = self.table.bytes();
        let index = table
            + self.traces.capacity() * size_of::<Trace>()
            + self.due.capacity() * size_of::<(u32, u32)>()
            + self.root_due.capacity() * size_of::<(u32, u32, i64)>()
            + self.free.capacity() * size_of::<u32>()
            + self
                .durable
                .as_ref()
                .map_or(0, |d| d.first_segments.capacity() * size_of::<u64>());
        ShardGauges {
            traces_in_memory: self.buffered() as u64,
            decided_traces_in_memory: self.resident.len() as u64,
            spans_in_memory: self.spans,
            span_bytes_in_memory: self.span_bytes,
            memory_bytes: self.span_bytes
                + index as u64
                + self.chunks * size_of::<Chunk>() as u64
                + self.extras * size_of::<ViewExtra>() as u64
                + (self.interner.len() * 256) as u64
                + self.audit_spans * size_of::<AuditSpan>() as u64
                + self.resident.bytes() as u64
                + self.archive.as_ref().map_or(0, |a| a.bytes),
            late_span_buffer_bytes: self.late_bytes,
            sampled_cache_entries: self.sampled.len() as u64,
            non_sampled_cache_entries: self.not_sampled.len() as u64,
            non_sampled_cache_bytes: self.not_sampled.bytes() as u64,
            interned_origins: self.interner.len() as u64,
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
}

/// Folds what the policies read of one span into its trace's summary: the trace keys (from its first span, until
/// its root arrives), the `ot` values of its first tracestate that has them, the aggregates, and the folding
/// policies' bits. At ingest and again at a reload's re-fold, so both read a span the same way.
#[inline]
fn fold_policy_facts(
    cfg: &EngineConfig,
    v: &mut TraceView,
    d: &Decoded<'_>,
    si: usize,
    first: bool,
) {
    let span = &d.spans[si];
    let is_root = span.parent_span_id.is_none();
    if !cfg.keyers.is_empty() && (first || (is_root && !v.extra().keys_from_root)) {
        let scope = &d.scopes[span.scope as usize];
        let attrs = d.span_attrs_of(si);
        let resource_attrs = d.resource_attrs_of(scope.resource as usize);
        let e = v.extra_mut();
        for k in &cfg.keyers {
            e.keys[k.slot] = k.span_hash(span, attrs, resource_attrs);
        }
        e.keys_from_root = is_root;
    }
    if cfg.reads_ot && v.extra().ot_present == 0 && !span.trace_state.is_empty() {
        let ot = read_ot(span.trace_state);
        if ot.th.is_some() || ot.rv.is_some() {
            let e = v.extra_mut();
            e.ot_present = ot_bits::SEEN;
            if let Some(th) = ot.th {
                e.ot_th = th;
                e.ot_present |= ot_bits::TH;
            }
            if let Some(rv) = ot.rv {
                e.ot_rv = rv;
                e.ot_present |= ot_bits::RV;
            }
        }
    }
    if !cfg.aggregators.is_empty() {
        let attrs = d.span_attrs_of(si);
        for a in &cfg.aggregators {
            a.accumulate(v, attrs);
        }
    }
    if !cfg.folders.is_empty() {
        let scope = &d.scopes[span.scope as usize];
        let facts = SpanFacts {
            span,
            attrs: d.span_attrs_of(si),
            resource_attrs: d.resource_attrs_of(scope.resource as usize),
            scope_name: scope.name,
            scope_raw: scope.raw.as_deref().unwrap_or_default(),
            keys: &cfg.attr_keys,
        };
        for (slot, kind) in &cfg.folders {
            let bit = 1u64 << slot;
            if v.matched & bit == 0 {
                match kind.span_fold(&facts) {
                    Fold::Match => v.matched |= bit,
                    Fold::Error => v.errors |= bit,
                    Fold::NoMatch => {}
                }
            }
        }
    }
}

/// The sizes the reference gives this payload's share of a trace: the sum of `ResourceSpansSize` of each
/// `ResourceSpans` it makes of it (what `maximum_trace_size_bytes` adds up), and `TracesSize` of the same
/// (what `bytes_limiting` measures: each framed as a field of `TracesData`). One `ResourceSpans` per payload
/// `ResourceSpans` holding the trace: its resource and, per scope, the scope and the trace's spans, always
/// with the resource and scope fields and without schema URLs, everything as pdata re-encodes it (see
/// `otlp::pdata_size`). `group` is sorted by span index, so the spans of each resource, and of each scope,
/// are contiguous.
fn reference_size(
    d: &Decoded<'_>,
    group: &[(u128, u32)],
    seen: &mut PayloadOrigins<'_>,
) -> (u64, u64) {
    let mut content = 0usize;
    let mut framed = 0usize;
    let mut i = 0;
    while i < group.len() {
        let rid = d.scopes[d.spans[group[i].1 as usize].scope as usize].resource;
        let mut resource_content = len_field_size(1, resource_size(d, rid as usize, seen));
        while i < group.len()
            && d.scopes[d.spans[group[i].1 as usize].scope as usize].resource == rid
        {
            let sid = d.spans[group[i].1 as usize].scope;
            let mut scope_content = len_field_size(1, scope_size(d, sid as usize, seen));
            while i < group.len() && d.spans[group[i].1 as usize].scope == sid {
                scope_content += framed_size(pdata_size::span(d.spans[group[i].1 as usize].raw));
                i += 1;
            }
            resource_content += len_field_size(2, scope_content);
        }
        content += resource_content;
        framed += len_field_size(1, resource_content);
    }
    (content as u64, framed as u64)
}

fn resource_size(d: &Decoded<'_>, rid: usize, seen: &mut PayloadOrigins<'_>) -> usize {
    if seen.resource_sizes[rid] == UNMEASURED {
        let n = pdata_size::resource(d.resources[rid].raw.as_deref());
        seen.resource_sizes[rid] = n.min(UNMEASURED as usize - 1) as u32;
    }
    seen.resource_sizes[rid] as usize
}

fn scope_size(d: &Decoded<'_>, sid: usize, seen: &mut PayloadOrigins<'_>) -> usize {
    if seen.scope_sizes[sid] == UNMEASURED {
        let n = pdata_size::scope(d.scopes[sid].raw.as_deref());
        seen.scope_sizes[sid] = n.min(UNMEASURED as usize - 1) as u32;
    }
    seen.scope_sizes[sid] as usize
}

/// A live configuration swap (`Engine::reload`).
impl Shard {
    /// Takes a new configuration: new policy instances (stateful ones start fresh), counters carried by policy
    /// name, and every buffered trace's summary folded again from its stored spans. Returns the traces
    /// re-folded. The engine has checked that nothing this shard is sized by changed.
    pub fn reload(&mut self, cfg: Arc<EngineConfig>, version: u32) -> u64 {
        let policies = cfg.policies.clone();
        let is_drop = |p: &Policy| p.kind.vetoes();
        self.eval_order = (0..policies.len())
            .filter(|&i| is_drop(&policies[i]))
            .chain((0..policies.len()).filter(|&i| !is_drop(&policies[i])))
            .collect();
        self.policy_stats = policies
            .iter()
            .map(|p| {
                self.policies
                    .iter()
                    .position(|old| old.name == p.name)
                    .map(|i| self.policy_stats[i].clone())
                    .unwrap_or_default()
            })
            .collect();
        self.cast = Vec::with_capacity(policies.len());
        self.policies = policies;
        let measured = self.measures_size;
        self.measures_size = cfg.maximum_trace_size_bytes > 0;
        for p in self
            .policies
            .iter()
            .chain(cfg.shadow.iter().flat_map(|s| &s.policies))
        {
            p.walk(&mut |q| self.measures_size |= q.kind.measures_size());
        }
        // The shadow set, if any, starts afresh under the new configuration (its counters and disagreements too):
        // a comparison spans one pair of policy sets.
        self.shadow = cfg
            .shadow
            .as_ref()
            .map(|c| ShadowSet::new(c, c.max_disagreements.div_ceil(cfg.num_shards.max(1))));
        // The audit's configuration is unchanged (the engine refuses otherwise), but its attributes may sit at
        // other indexes among the new keys: rebind them, keep what it learned.
        if let (Some(a), Some(ac)) = (&mut self.audit, &cfg.propagation_audit) {
            if let Some(key) = cfg.attr_keys.index_of_str("service.name") {
                a.service_key = key;
            }
            a.reader = AuditReader::new(ac, &cfg.attr_keys);
        }
        // Interned resources carry the old folding policies' bits: new payloads intern afresh. Chunks buffered
        // keep their origins (their bytes are what they are); their bits are recomputed below.
        self.interner = Interner::new();
        self.cfg = cfg;
        self.config_version = version;
        let measure = self.measures_size && !measured;
        let mut refolded = 0;
        for s in 0..self.traces.len() {
            if self.traces[s].live {
                self.refold(s, measure);
                refolded += 1;
            }
        }
        refolded
    }

    /// Folds a buffered trace's summary again from its stored spans under the current configuration: what the
    /// policies read (matched and error bits, aggregates, trace keys, `ot` values) is recomputed; what does not
    /// depend on the policies (counts, times, status, root) stays. Sizes are measured only when `measure` (the
    /// old configuration did not measure them; the re-encoded trace counts as one payload).
    fn refold(&mut self, s: usize, measure: bool) {
        let refs: Vec<OutChunk<'_>> = self.traces[s].chunks.iter().map(Chunk::out).collect();
        let payloads = encode_requests(&refs, usize::MAX, |_, _| {});
        let cfg = self.cfg.clone();
        let v = &mut self.traces[s].view;
        let had_extra = v.extra.is_some();
        v.matched = 0;
        v.errors = 0;
        // Sizes stay unless measured again; the rest of the extra is recomputed.
        let (bytes, otlp_bytes) = if measure {
            (0, 0)
        } else {
            (v.extra().bytes, v.extra().otlp_bytes)
        };
        v.extra = None;
        if bytes != 0 || otlp_bytes != 0 {
            let e = v.extra_mut();
            e.bytes = bytes;
            e.otlp_bytes = otlp_bytes;
        }
        let mut first = true;
        for p in &payloads {
            // These spans decoded once; the re-encoding holds them byte for byte, so this cannot fail.
            let Ok(d) = decode(p, &cfg.attr_keys) else {
                continue;
            };
            for rid in 0..d.resources.len() {
                let attrs = d.resource_attrs_of(rid);
                for (slot, kind) in &cfg.folders {
                    if kind.resource_matches(attrs) {
                        v.matched |= 1u64 << slot;
                    }
                }
            }
            if measure {
                let mut seen = PayloadOrigins {
                    resources: Vec::new(),
                    origins: Vec::new(),
                    services: Vec::new(),
                    learned: Vec::new(),
                    resource_sizes: vec![UNMEASURED; d.resources.len()],
                    scope_sizes: vec![UNMEASURED; d.scopes.len()],
                };
                let group: Vec<(u128, u32)> =
                    (0..d.spans.len() as u32).map(|i| (0u128, i)).collect();
                let (content, framed) = reference_size(&d, &group, &mut seen);
                let e = v.extra_mut();
                e.bytes += content;
                e.otlp_bytes += framed;
            }
            for si in 0..d.spans.len() {
                fold_policy_facts(&cfg, v, &d, si, first);
                first = false;
            }
        }
        let has_extra = v.extra.is_some();
        self.extras = self.extras + u64::from(has_extra) - u64::from(had_extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Scenario: the per-trace and per-span structures, as laid out. Guarantees: a slot stays at 136 bytes, a
    /// table entry at 24 and an audit span at 22 (issue 24: the heap per buffered span at 340 B spans is at most
    /// 1.2x the raw bytes; `bench/memory_shape.py` measures it), and IDs differing in either half are
    /// different keys.
    #[test]
    fn per_trace_and_per_span_sizes() {
        assert_eq!(size_of::<Trace>(), 136);
        assert_eq!(size_of::<TraceView>(), 64);
        assert_eq!(size_of::<(Key, u64)>(), 24);
        assert_eq!(size_of::<AuditSpan>(), 22);
        let id: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        assert!(Key::of(id) == Key::of(id));
        assert!(Key::of(id) != Key::of(id ^ 1));
        assert!(Key::of(id) != Key::of(id ^ (1 << 64)));
    }
}
