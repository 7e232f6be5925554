//! The engine: OTLP payloads in, whole traces buffered in shards, policies decide, kept spans out as payloads.
//!
//! A payload is decoded and validated whole before any shard is touched, then its spans are routed to shards
//! by a seeded hash of the trace ID. The shards it touches are locked in ascending order (so concurrent callers
//! cannot deadlock), each checks its limits, and only when all accept are the spans taken: a payload is taken
//! whole or not at all (whole meaning every span the scan did not reject alone for nesting past `MAX_LEVELS`).
//! Encoding kept spans happens outside the locks, cut at `max_payload_bytes` between spans.

use parking_lot::{Mutex as ShardLock, MutexGuard as ShardGuard};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

use ahash::RandomState;

use crate::config::EngineConfig;
use crate::durable::tail_storage::Replayed;
use crate::durable::{
    Archive, ArchiveOptions, ArchiveStats, Found, ReplayReport, StorageOptions, SyncPolicy,
    TailStorage,
};
use crate::error::{Error, Result};
use crate::otlp::decode::decode;
use crate::otlp::encode::{encode_kept, encode_requests, Kept, OutChunk};
use crate::otlp::wire::RejectReason;
use crate::otlp::Decoded;
use crate::policy::inclusion::Stage;
use crate::propagation::GapReport;
use crate::red::{RedMetrics, RedSeries};
use crate::store::recent::KeptSummary;
use crate::store::shadow::ShadowReport;
use crate::store::stats::{LagHistogram, ShardGauges};
use crate::store::{Chunk, Knowledge, PolicyCounters, Shard, ShardStats};

pub struct Engine {
    /// The live configuration and its version. `ingest` and decision rounds hold it read for their whole run and
    /// `reload` takes it written, so a payload is decoded and folded under one configuration and a round judges
    /// under one (see `reload`).
    live: RwLock<Live>,
    shards: Box<[ShardLock<Shard>]>,
    router: RandomState,
    /// The engine's clock: the largest `now` seen. Shards read time from here, so it never runs backwards,
    /// whichever shard a call touches.
    clock: AtomicI64,
    payloads_received: AtomicU64,
    payloads_rejected: AtomicU64,
    payloads_refused: AtomicU64,
    payloads_emitted: AtomicU64,
    /// Spans rejected alone, by `RejectReason::index` (the rest of their payloads taken).
    spans_rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Kept spans larger than `max_payload_bytes` by themselves, each sent in a payload of its own; and the
    /// last one's trace ID (for the log).
    spans_oversized: AtomicU64,
    last_oversized: Mutex<Option<(u128, usize)>>,
    /// RED metrics of every span taken, before sampling (`tailsample.red_metrics`), and the index of
    /// `service.name` among the extracted attribute keys.
    red: Option<(Mutex<RedMetrics>, AtomicUsize)>,
    /// Bytes held by buffered traces over all shards (`memory_bytes`), for `max_buffered_bytes`.
    buffered_bytes: AtomicU64,
    refused_max_buffered_bytes: AtomicU64,
    refused_tail_storage: AtomicU64,
    storage_errors: AtomicU64,
    /// The next poll round's number; held while a round runs, so rounds never interleave.
    next_round: Mutex<u64>,
    storage: Option<TailStorage>,
    replay: Option<ReplayReport>,
    /// The archive of dropped traces (`tailsample.archive`), written at each round.
    archive: std::sync::OnceLock<ArchiveWriter>,
    archive_overflowed: AtomicU64,
}

/// One round's dropped traces on their way to the archive, and the round's time.
type ArchiveJob = (Vec<(u128, Vec<Chunk>)>, i64);

/// Rounds handed to the archive's writer thread and not yet written, at most; a round past it waits (the
/// decisions slow down rather than dropped traces being lost).
const ARCHIVE_QUEUE_ROUNDS: usize = 4;

/// The archive and the thread that compresses and writes dropped traces (their stored chunks, moved here by
/// the round), off the decision path.
struct ArchiveWriter {
    archive: Arc<Mutex<Archive>>,
    tx: Mutex<Option<std::sync::mpsc::SyncSender<ArchiveJob>>>,
    /// Rounds sent and not yet written: lookups and reports wait for them, so they see every trace dropped
    /// before they were asked.
    pending: Arc<(Mutex<u64>, std::sync::Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ArchiveWriter {
    fn start(archive: Archive) -> std::io::Result<Self> {
        let archive = Arc::new(Mutex::new(archive));
        let pending = Arc::new((Mutex::new(0u64), std::sync::Condvar::new()));
        let (tx, rx) = std::sync::mpsc::sync_channel::<ArchiveJob>(ARCHIVE_QUEUE_ROUNDS);
        let (a, p) = (archive.clone(), pending.clone());
        let thread = std::thread::Builder::new()
            .name("tailsample-archive".into())
            .spawn(move || {
                for (dropped, now) in rx {
                    {
                        let mut a = a.lock().unwrap_or_else(|e| e.into_inner());
                        a.write(&dropped, now);
                        a.expire(now);
                    }
                    // Freed outside the lock: a lookup waiting for it does not wait for this.
                    drop(dropped);
                    let (m, cv) = &*p;
                    *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    cv.notify_all();
                }
            })?;
        Ok(ArchiveWriter {
            archive,
            tx: Mutex::new(Some(tx)),
            pending,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, job: ArchiveJob) {
        let (m, cv) = &*self.pending;
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            cv.notify_all();
        }
    }

    /// The archive once every round sent before is written.
    fn lock(&self) -> MutexGuard<'_, Archive> {
        let (m, cv) = &*self.pending;
        let mut p = m.lock().unwrap_or_else(|e| e.into_inner());
        while *p > 0 {
            p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        drop(p);
        self.archive.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ArchiveWriter {
    /// What was handed over is written before the engine goes.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Dropped traces wait for the next round in per-shard stashes of at most this many bytes in all.
pub const ARCHIVE_STASH_BYTES: u64 = 64 << 20;

/// The archive's gauges and counters (serialized with times in seconds, the counters flattened).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ArchiveReport {
    pub bytes: u64,
    pub max_bytes: u64,
    pub traces: u64,
    /// When the oldest trace held was archived (ns; None when empty).
    #[serde(serialize_with = "crate::serialize::seconds_opt")]
    pub oldest: Option<i64>,
    #[serde(rename = "max_age", serialize_with = "crate::serialize::seconds_i64")]
    pub max_age_ns: i64,
    pub index_memory_bytes: u64,
    /// Dropped traces not archived because the stash between rounds was full.
    pub traces_overflowed: u64,
    #[serde(flatten)]
    pub stats: ArchiveStats,
}

/// Splits `total` into `n` shares that add up to it.
fn share(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

fn lock_round(m: &Mutex<u64>) -> MutexGuard<'_, u64> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// A panic inside a shard is a bug, and the engine does not panic on input; if it ever happens, the shard's state is
// still memory-safe and the engine keeps serving (parking_lot's locks are not poisoned).
fn lock(m: &ShardLock<Shard>) -> ShardGuard<'_, Shard> {
    m.lock()
}

/// Decisions a round makes in a shard before it lets ingest waiting for that shard in (`ShardGuard::bump`): a
/// round of tens of thousands of traces would otherwise stall every receiver for its whole length (tens of ms).
const ROUND_SLICE: usize = 512;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let cfg = Arc::new(cfg);
        // Never more shards than traces, so each shard's share of num_traces is at least one and they add up.
        let n = cfg.num_shards.min(cfg.num_traces).max(1);
        let shards = (0..n)
            .map(|i| {
                ShardLock::new(Shard::new(
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
            (
                Mutex::new(RedMetrics::new(r.clone())),
                AtomicUsize::new(service),
            )
        });
        let version = ConfigVersion::of(&cfg, 1);
        Engine {
            red,
            live: RwLock::new(Live {
                names: [(1, names_of(&cfg))].into(),
                cfg,
                version,
            }),
            shards,
            router: RandomState::new(),
            clock: AtomicI64::new(i64::MIN),
            payloads_received: AtomicU64::new(0),
            payloads_rejected: AtomicU64::new(0),
            payloads_refused: AtomicU64::new(0),
            payloads_emitted: AtomicU64::new(0),
            spans_rejected: Default::default(),
            spans_oversized: AtomicU64::new(0),
            last_oversized: Mutex::new(None),
            buffered_bytes: AtomicU64::new(0),
            refused_max_buffered_bytes: AtomicU64::new(0),
            refused_tail_storage: AtomicU64::new(0),
            storage_errors: AtomicU64::new(0),
            next_round: Mutex::new(1),
            storage: None,
            replay: None,
            archive: std::sync::OnceLock::new(),
            archive_overflowed: AtomicU64::new(0),
        }
    }

    /// Turns the archive of dropped traces on (`tailsample.archive`): from now on every trace decided not
    /// kept, evicted or dropped at shutdown is written there, compressed, at the round that decided it.
    pub fn attach_archive(&self, opts: ArchiveOptions) -> Result<()> {
        let dir = opts.directory.display().to_string();
        let a = Archive::open(opts).map_err(|e| Error::Storage {
            path: dir,
            message: format!("archive: {e}"),
        })?;
        let writer = ArchiveWriter::start(a).map_err(|e| Error::Storage {
            path: String::new(),
            message: format!("archive: cannot start its writer thread: {e}"),
        })?;
        if self.archive.set(writer).is_err() {
            return Err(Error::config(
                "tailsample.archive",
                "the archive is already on",
            ));
        }
        let n = self.shards.len();
        for (i, s) in self.shards.iter().enumerate() {
            lock(s).set_archiving(share(ARCHIVE_STASH_BYTES as usize, n, i) as u64);
        }
        Ok(())
    }

    fn archive_lock(&self) -> Option<MutexGuard<'_, Archive>> {
        self.archive.get().map(ArchiveWriter::lock)
    }

    /// Torn tails the archive cut when it was opened.
    pub fn archive_truncations(&self) -> Vec<crate::durable::Truncation> {
        self.archive_lock()
            .map(|a| a.truncations.clone())
            .unwrap_or_default()
    }

    /// Every archived part of each trace in `ids` (empty where not held); None without an archive.
    pub fn recover(&self, ids: &[u128]) -> Option<Result<Vec<Found>>> {
        let mut a = self.archive_lock()?;
        let mut out = Vec::new();
        for &id in ids {
            match a.find(id) {
                Ok(f) => out.extend(f),
                Err(e) => {
                    return Some(Err(Error::Storage {
                        path: a.directory().display().to_string(),
                        message: format!("archive read failed: {e}"),
                    }))
                }
            }
        }
        Some(Ok(out))
    }

    /// The archive's state; None without one. Applies the age limit at the engine clock first.
    pub fn archive_report(&self) -> Option<ArchiveReport> {
        let now = self.clock();
        let mut a = self.archive_lock()?;
        if now != i64::MIN {
            a.expire(now);
        }
        Some(ArchiveReport {
            bytes: a.bytes(),
            max_bytes: a.options().max_bytes,
            traces: a.traces(),
            oldest: a.oldest(),
            max_age_ns: a.options().max_age_ns,
            index_memory_bytes: a.index_memory_bytes(),
            traces_overflowed: self.archive_overflowed.load(Ordering::Relaxed),
            stats: a.stats,
        })
    }

    /// Hands the dropped traces taken from the shards to the archive's writer thread (which also applies
    /// the age limit at `now`, so an empty round is sent too).
    fn archive_dropped(&self, dropped: Vec<(u128, Vec<Chunk>)>, now: i64) {
        if let Some(w) = self.archive.get() {
            w.send((dropped, now));
        }
    }

    /// An engine whose buffer is on disk (`tail_storage`): opens the storage directory, replays what it holds
    /// (undecided traces buffered again with their first-seen times, kept traces not yet acknowledged sent
    /// again, decisions back in the caches) and writes every payload taken from now on before `ingest`
    /// returns. `now` caps the replayed times (the clock may have gone back across the restart).
    pub fn open(cfg: EngineConfig, storage: &StorageOptions, now: i64) -> Result<Self> {
        let started = Instant::now();
        let mut engine = Engine::new(cfg);
        for s in engine.shards.iter() {
            lock(s).set_durable();
        }
        let storage_error = |e: std::io::Error| Error::Storage {
            path: storage.directory.display().to_string(),
            message: e.to_string(),
        };
        let mut report = ReplayReport::default();
        let (st, decisions) = TailStorage::open(
            storage,
            engine.config().sampled_cache_size as u64,
            engine.config().non_sampled_cache_size as u64,
            &mut report,
        )
        .map_err(storage_error)?;
        let mut resend: HashMap<u128, (Option<u16>, Stage)> = HashMap::new();
        let mut clock = i64::MIN;
        let cfg = engine.config();
        let scan = st.for_each_payload(|at, t, payload| {
            let t = t.min(now);
            clock = clock.max(t);
            let Ok(d) = decode(payload, &cfg.attr_keys) else {
                report.payloads_invalid += 1;
                return;
            };
            let per_shard = engine.route(&d, |id| match decisions.judge(id, at) {
                Replayed::Pending => {
                    report.spans_pending += 1;
                    true
                }
                Replayed::Resend { policy, stage } => {
                    resend.insert(id, (policy, stage));
                    true
                }
                Replayed::Covered => {
                    report.spans_covered += 1;
                    false
                }
                Replayed::NotSampled => {
                    report.spans_not_sampled += 1;
                    false
                }
            });
            for (i, order) in per_shard.iter().enumerate() {
                if !order.is_empty() {
                    lock(&engine.shards[i]).ingest(&d, order, t, at.segment);
                }
            }
        });
        (report.segments, report.bytes, report.payloads) = scan.map_err(storage_error)?;
        for (id, (policy, stage)) in resend {
            let mut shard = lock(&engine.shards[engine.shard_of(id)]);
            if shard.resend(id, policy, stage, clock) {
                report.traces_resent += 1;
            }
        }
        for d in &decisions.in_order {
            lock(&engine.shards[engine.shard_of(d.id)]).remember(d);
        }
        let mut buffered = 0;
        for s in engine.shards.iter() {
            let s = lock(s);
            buffered += s.memory_bytes();
            report.traces_pending += s.gauges().traces_in_memory;
            report.spans_resent += s.stats.spans_resent;
        }
        engine.buffered_bytes.store(buffered, Ordering::Relaxed);
        engine.tick(clock);
        *lock_round(&engine.next_round) = st.next_round();
        engine.storage = Some(st);
        report.duration_ns = started.elapsed().as_nanos() as u64;
        engine.replay = Some(report);
        Ok(engine)
    }

    /// What the replay at `open` found and did (None without tail storage).
    pub fn replay_report(&self) -> Option<&ReplayReport> {
        self.replay.as_ref()
    }

    /// Marks poll round `round`, and every one before it, as exported (or safely queued): their kept spans
    /// need no replay, and tail storage may give back the space they held. False without tail storage, or
    /// when the round is unknown or was acknowledged already.
    pub fn acknowledge(&self, round: u64) -> Result<bool> {
        let Some(st) = &self.storage else {
            return Ok(false);
        };
        let r = st.acknowledge(round).and_then(|known| {
            st.retain(self.pending_min_segment())?;
            Ok(known)
        });
        r.map_err(|e| {
            self.storage_errors.fetch_add(1, Ordering::Relaxed);
            Error::Storage {
                path: String::new(),
                message: format!("writing an acknowledgement: {e}"),
            }
        })
    }

    fn pending_min_segment(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|s| lock(s).pending_min_segment())
            .min()
    }

    /// With tail storage under group commit: returns once every payload taken so far is fsynced.
    pub fn sync_storage(&self) -> Result<()> {
        let Some(st) = self
            .storage
            .as_ref()
            .filter(|st| st.sync_policy() == SyncPolicy::Batch)
        else {
            return Ok(());
        };
        st.sync_to(st.written()).map_err(|e| {
            self.storage_errors.fetch_add(1, Ordering::Relaxed);
            Error::Storage {
                path: String::new(),
                message: format!("fsync: {e}"),
            }
        })
    }

    /// Adds a shard's change in memory to the engine's total.
    fn account(&self, before: u64, after: u64) {
        if after >= before {
            self.buffered_bytes
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.buffered_bytes
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// The live configuration (a snapshot: a reload swaps in another).
    pub fn config(&self) -> Arc<EngineConfig> {
        self.live_read().cfg.clone()
    }

    fn live_read(&self) -> RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
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

    /// The spans of `d` that `keep` (given their trace ID) takes, as (trace ID, span index) per shard, sorted by
    /// trace, then by span index: a trace's spans are contiguous, each scope's in wire order.
    fn route(&self, d: &Decoded<'_>, mut keep: impl FnMut(u128) -> bool) -> Vec<Vec<(u128, u32)>> {
        let n = self.shards.len();
        // Room for each shard's share with some to spare: no regrowth copies in the common case.
        let room = if n == 1 {
            d.spans.len()
        } else {
            d.spans.len() / n + d.spans.len() / (4 * n) + 8
        };
        let mut per_shard: Vec<Vec<(u128, u32)>> =
            (0..n).map(|_| Vec::with_capacity(room)).collect();
        for (i, span) in d.spans.iter().enumerate() {
            let id = u128::from_be_bytes(span.trace_id);
            if keep(id) {
                per_shard[self.shard_of(id)].push((id, i as u32));
            }
        }
        for order in &mut per_shard {
            sort_by_trace(order);
        }
        per_shard
    }

    /// What the engine knows of a trace: pending, decided (with every policy's vote), or only remembered by
    /// the decision caches, or nothing.
    pub fn explain(&self, trace_id: [u8; 16]) -> Knowledge {
        let id = u128::from_be_bytes(trace_id);
        lock(&self.shards[self.shard_of(id)]).explain(id)
    }

    /// What the engine knows of a trace, named and timed for a caller outside Rust (see `Explanation`).
    pub fn explanation(&self, trace_id: [u8; 16]) -> crate::store::explanation::Explanation {
        let knowledge = self.explain(trace_id);
        let cfg = self.config();
        // Votes are named as the configuration that decided the trace named its policies (a reload may have
        // changed the set since).
        let names = match &knowledge {
            Knowledge::Decided(r) => self.policy_names_of(r.config_version),
            _ => None,
        }
        .unwrap_or_else(|| cfg.policy_names().iter().map(|n| n.to_string()).collect());
        crate::store::explanation::Explanation::new(
            u128::from_be_bytes(trace_id),
            self.clock(),
            knowledge,
            &names,
            cfg.adjusted_counts.is_some(),
        )
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

    /// Takes one `ExportTraceServiceRequest`, whole or not at all, and returns how many spans it took: every
    /// span but those rejected alone for nesting past `MAX_LEVELS` (see `ingest_report`).
    /// `now` is in nanoseconds on the engine clock.
    pub fn ingest(&self, payload: &[u8], now: i64) -> Result<usize> {
        self.ingest_inner(payload, now, None, true).map(|i| i.spans)
    }

    /// `ingest`, also saying which spans were rejected alone (an OTLP partial success).
    pub fn ingest_report(&self, payload: &[u8], now: i64) -> Result<Ingested> {
        self.ingest_inner(payload, now, None, true)
    }

    /// `ingest` without waiting for the fsync under group commit: the caller calls `sync_storage` once for a
    /// batch of payloads before answering any of them.
    pub fn ingest_unsynced(&self, payload: &[u8], now: i64, ids: &mut Vec<u128>) -> Result<usize> {
        self.ingest_inner(payload, now, Some(ids), false)
            .map(|i| i.spans)
    }

    /// `ingest`, also appending the distinct trace IDs the payload held to `ids` (to follow them: a Kafka
    /// receiver commits a message once its traces are decided).
    pub fn ingest_traces(&self, payload: &[u8], now: i64, ids: &mut Vec<u128>) -> Result<usize> {
        self.ingest_inner(payload, now, Some(ids), true)
            .map(|i| i.spans)
    }

    /// Which of `ids` are buffered, undecided.
    pub fn buffered(&self, ids: &[u128]) -> Vec<bool> {
        // Each shard locked once for all its IDs, not once per ID (a Kafka receiver asks about thousands).
        let mut by_shard = vec![Vec::new(); self.shards.len()];
        for (i, &id) in ids.iter().enumerate() {
            by_shard[self.shard_of(id)].push(i);
        }
        let mut out = vec![false; ids.len()];
        for (shard, at) in self.shards.iter().zip(&by_shard) {
            if at.is_empty() {
                continue;
            }
            let shard = lock(shard);
            for &i in at {
                out[i] = shard.is_buffered(ids[i]);
            }
        }
        out
    }

    /// The position of the first of these IDs still buffered, undecided (`ids.len()` when none is); the lookups
    /// stop there. A Kafka receiver asks again from that ID at the next round, so an ID already out is looked up
    /// once, and a run still waiting costs one lookup per round.
    pub fn first_buffered(&self, ids: &[u128]) -> usize {
        ids.iter()
            .position(|&id| lock(&self.shards[self.shard_of(id)]).is_buffered(id))
            .unwrap_or(ids.len())
    }

    /// Forgets buffered traces undecided, spans and all (`traces_forgotten`); returns how many were buffered.
    /// For an instance giving up a Kafka partition: the new owner rebuilds those traces from the log.
    pub fn forget(&self, ids: &[u128]) -> usize {
        ids.iter()
            .filter(|&&id| {
                let mut shard = lock(&self.shards[self.shard_of(id)]);
                let before = shard.memory_bytes();
                let forgotten = shard.forget(id);
                self.account(before, shard.memory_bytes());
                forgotten
            })
            .count()
    }

    fn ingest_inner(
        &self,
        payload: &[u8],
        now: i64,
        ids: Option<&mut Vec<u128>>,
        sync: bool,
    ) -> Result<Ingested> {
        let now = self.tick(now);
        // Held to the end: the payload is decoded with the attribute keys of the configuration its shards fold by.
        let live = self.live_read();
        let limit = live.cfg.max_buffered_bytes;
        let used = self.buffered_bytes.load(Ordering::Relaxed);
        if used >= limit {
            self.refused_max_buffered_bytes
                .fetch_add(1, Ordering::Relaxed);
            self.payloads_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Backpressure {
                limit: "max_buffered_bytes",
                message: format!(
                    "buffered traces hold {used} bytes, at tailsample.max_buffered_bytes ({limit}); retry after the next decisions"
                ),
            });
        }
        let d = match decode(payload, &live.cfg.attr_keys) {
            Ok(d) => d,
            Err(e) => {
                self.payloads_rejected.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let per_shard = self.route(&d, |_| true);
        let mut guards: Vec<(usize, ShardGuard<'_, Shard>)> = per_shard
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
        // With tail storage the payload is on disk before any shard takes it (and before the caller answers).
        let mut written = None;
        if let Some(st) = &self.storage {
            match st.append_payload(payload, now) {
                Ok(w) => written = Some(w),
                Err(e) => {
                    self.refused_tail_storage.fetch_add(1, Ordering::Relaxed);
                    self.payloads_refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Backpressure {
                        limit: "tail_storage",
                        message: format!("{e}; retry after the next decisions are exported"),
                    });
                }
            }
        }
        let segment = written.map_or(0, |(p, _)| p.segment);
        for (i, g) in guards.iter_mut() {
            let before = g.memory_bytes();
            g.ingest(&d, &per_shard[*i], now, segment);
            self.account(before, g.memory_bytes());
        }
        drop(guards);
        if let (Some(st), Some((_, seq)), true) = (&self.storage, written, sync) {
            if st.sync_policy() == SyncPolicy::Batch {
                st.sync_to(seq).map_err(|e| {
                    self.storage_errors.fetch_add(1, Ordering::Relaxed);
                    Error::Storage {
                        path: String::new(),
                        message: format!("fsync of a taken payload failed: {e}"),
                    }
                })?;
            }
        }
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
        for (counter, n) in self.spans_rejected.iter().zip(d.rejected_by_reason) {
            if n > 0 {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(Ingested {
            spans: d.spans.len(),
            rejected_spans: d.rejected_spans,
            rejected_by_reason: RejectReason::ALL
                .iter()
                .zip(d.rejected_by_reason)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (*r, n))
                .collect(),
            rejection: d.rejection,
        })
    }

    /// Counts every span of a taken payload in the RED metrics (before any sampling).
    fn record_red(&self, d: &Decoded<'_>) {
        let Some((red, service_key)) = &self.red else {
            return;
        };
        let service_key = &service_key.load(Ordering::Relaxed);
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
        let refs: Vec<OutChunk<'_>> = kept.chunks.iter().map(Chunk::out).collect();
        Some(encode_requests(
            &refs,
            self.config().max_payload_bytes,
            |_, _| {},
        ))
    }

    /// Kept spans larger than `max_payload_bytes` by themselves so far (each sent alone in a payload over the
    /// limit: `spans_oversized`), and the last one's trace ID and size, for the log.
    pub fn oversized_spans(&self) -> (u64, Option<([u8; 16], usize)>) {
        let last = *self
            .last_oversized
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (
            self.spans_oversized.load(Ordering::Relaxed),
            last.map(|(id, size)| (id.to_be_bytes(), size)),
        )
    }

    /// The propagation-gap audit over every shard (None when `tailsample.propagation_audit` is off).
    pub fn gaps(&self) -> Option<GapReport> {
        let cfg = self.config();
        let a = cfg.propagation_audit.as_ref()?;
        let mut parts = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            parts.push(lock(shard).gaps()?);
        }
        Some(GapReport::combine(parts, a.max_pairs, a.examples))
    }

    /// Keys tracked by the stateful policies (`latency_percentile` groups, `adaptive` keys), traces judged
    /// under their overflow key, and their state's bytes. Their state is shared by the shards.
    fn policy_state(&self) -> (u64, u64, u64) {
        let (mut keys, mut overflowed, mut bytes) = (0, 0, 0);
        for p in &self.config().policies {
            p.walk(&mut |q| {
                let (k, o, b) = q.kind.state();
                keys += k;
                overflowed += o;
                bytes += b;
            });
        }
        (keys, overflowed, bytes)
    }

    /// Decides what is due at `now`; returns kept spans as `ExportTraceServiceRequest` payloads.
    pub fn poll(&self, now: i64) -> Vec<Vec<u8>> {
        self.poll_round(now).1
    }

    /// `poll`, with the round's number: once its payloads are exported, `acknowledge(round)`.
    pub fn poll_round(&self, now: i64) -> (u64, Vec<Vec<u8>>) {
        let (round, kept) = self.poll_round_kept(now);
        (round, payloads(kept))
    }

    /// `poll_round`, each payload with its span count (for callers' metrics: no need to decode it again).
    pub fn poll_round_kept(&self, now: i64) -> (u64, Vec<Kept>) {
        self.round(now, Shard::poll_some)
    }

    /// When the next `poll_round` has work, on the engine clock (`i64::MIN`: at once); None when nothing is
    /// buffered, no late span waits and nothing is left to archive or record. A trace taken after this call is due
    /// `decision_wait` (or `decision_wait_after_root_received`) after it, a late span at once: a caller sleeping
    /// until then bounds its sleep by those. Locks each shard briefly, one at a time.
    pub fn next_due(&self) -> Option<i64> {
        self.shards.iter().filter_map(|s| lock(s).next_due()).min()
    }

    /// Decides (or drops, per `drop_pending_traces_on_shutdown`) everything buffered.
    pub fn flush(&self, now: i64) -> Vec<Vec<u8>> {
        self.flush_round(now).1
    }

    pub fn flush_round(&self, now: i64) -> (u64, Vec<Vec<u8>>) {
        let (round, kept) = self.flush_round_kept(now);
        (round, payloads(kept))
    }

    /// `flush_round`, each payload with its span count.
    pub fn flush_round_kept(&self, now: i64) -> (u64, Vec<Kept>) {
        self.round(now, |shard, now, out, _| {
            shard.flush(now, out);
            true
        })
    }

    /// One round of decisions over every shard; with tail storage, its decisions are written before its kept
    /// spans leave. `each` decides at most its budget and says whether it finished; between two calls, ingest
    /// waiting for the shard goes first. With tail storage a shard's part of a round is not cut: the round's
    /// record covers the payloads written before it started.
    fn round(
        &self,
        now: i64,
        each: fn(&mut Shard, i64, &mut Vec<Chunk>, usize) -> bool,
    ) -> (u64, Vec<Kept>) {
        let now = self.tick(now);
        // A round judges every shard under one configuration: a reload waits for it.
        let live = self.live_read();
        let mut next = lock_round(&self.next_round);
        let round = *next;
        *next += 1;
        let start = self.storage.as_ref().map(TailStorage::position);
        let mut out = Vec::new();
        let mut decided = Vec::new();
        let mut min_kept = u64::MAX;
        let mut pending_min: Option<u64> = None;
        let mut dropped = Vec::new();
        let slice = if self.storage.is_some() {
            usize::MAX
        } else {
            ROUND_SLICE
        };
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let mut before = shard.memory_bytes();
            while !each(&mut shard, now, &mut out, slice) {
                // Ingest let in changes the shard's bytes itself: account for this slice's first.
                self.account(before, shard.memory_bytes());
                ShardGuard::bump(&mut shard);
                before = shard.memory_bytes();
            }
            let overflowed = shard.take_archived(&mut dropped);
            if overflowed > 0 {
                self.archive_overflowed
                    .fetch_add(overflowed, Ordering::Relaxed);
            }
            self.account(before, shard.memory_bytes());
            min_kept = min_kept.min(shard.take_decisions(&mut decided));
            if let Some(p) = shard.pending_min_segment() {
                pending_min = Some(pending_min.map_or(p, |m| m.min(p)));
            }
        }
        if let (Some(st), Some(start)) = (&self.storage, start) {
            let written = st
                .record_round(round, start, now, decided, min_kept)
                .and_then(|()| st.retain(pending_min));
            if written.is_err() {
                // The kept spans still leave; a replay would decide these traces again.
                self.storage_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(next);
        let max_payload_bytes = live.cfg.max_payload_bytes;
        drop(live);
        self.archive_dropped(dropped, now);
        (round, self.encode(out, max_payload_bytes))
    }

    fn encode(&self, chunks: Vec<Chunk>, max_payload_bytes: usize) -> Vec<Kept> {
        if chunks.is_empty() {
            return Vec::new();
        }
        let refs: Vec<OutChunk<'_>> = chunks.iter().map(Chunk::out).collect();
        let payloads = encode_kept(&refs, max_payload_bytes, |trace_id, size| {
            self.spans_oversized.fetch_add(1, Ordering::Relaxed);
            *self
                .last_oversized
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((trace_id, size));
        });
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
        let mut audit_gauges = [0u64; 5];
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (sum, g) in audit_gauges.iter_mut().zip(shard.audit_gauges()) {
                *sum += g;
            }
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
        let c = &self.config();
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
        let mut out = vec![
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
            (
                "spans_rejected",
                self.spans_rejected
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum(),
            ),
            (
                RejectReason::TooDeep.stat_key(),
                self.spans_rejected[RejectReason::TooDeep.index()].load(Ordering::Relaxed),
            ),
            (
                RejectReason::InvalidTraceId.stat_key(),
                self.spans_rejected[RejectReason::InvalidTraceId.index()].load(Ordering::Relaxed),
            ),
            (
                RejectReason::IdLength.stat_key(),
                self.spans_rejected[RejectReason::IdLength.index()].load(Ordering::Relaxed),
            ),
            (
                RejectReason::WireType.stat_key(),
                self.spans_rejected[RejectReason::WireType.index()].load(Ordering::Relaxed),
            ),
            (
                "spans_oversized",
                self.spans_oversized.load(Ordering::Relaxed),
            ),
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
            ("traces_resent", s.traces_resent),
            ("spans_resent", s.spans_resent),
            (
                "buffered_bytes",
                self.buffered_bytes.load(Ordering::Relaxed),
            ),
            ("limit_max_buffered_bytes", c.max_buffered_bytes),
            (
                "refused_max_buffered_bytes",
                self.refused_max_buffered_bytes.load(Ordering::Relaxed),
            ),
            (
                "refused_tail_storage",
                self.refused_tail_storage.load(Ordering::Relaxed),
            ),
            (
                "storage_errors",
                self.storage_errors.load(Ordering::Relaxed),
            ),
            ("traces_in_memory", g.traces_in_memory),
            ("decided_traces_in_memory", g.decided_traces_in_memory),
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
            ("propagation_unnamed_calls", audit.unnamed_calls),
            ("propagation_unnamed_gaps", audit.unnamed_gaps),
            ("propagation_pairs", audit_gauges[0]),
            ("propagation_names_overflowed", audit_gauges[1]),
            ("propagation_memory_bytes", audit_gauges[2]),
            ("propagation_addresses", audit_gauges[3]),
            ("propagation_addresses_overflowed", audit_gauges[4]),
            (
                "limit_propagation_max_pairs",
                c.propagation_audit
                    .as_ref()
                    .map_or(0, |a| a.max_pairs as u64),
            ),
            (
                "limit_propagation_max_addresses",
                c.propagation_audit
                    .as_ref()
                    .map_or(0, |a| (a.max_addresses * self.shards.len()) as u64),
            ),
            ("spans_not_sampled", s.spans_not_sampled),
            ("spans_dropped", s.spans_dropped),
            ("spans_evicted", s.spans_evicted),
            ("late_spans_forwarded", s.late_spans_forwarded),
            ("late_spans_dropped", s.late_spans_dropped),
            ("late_span_buffer_bytes", g.late_span_buffer_bytes),
            ("policy_evaluation_errors", s.policy_evaluation_errors),
            ("error_traces_decided", s.error_traces_decided),
            ("error_traces_not_sampled", s.error_traces_not_sampled),
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
        ];
        if let Some(st) = &self.storage {
            let t = st.stats();
            out.extend([
                ("storage_bytes", t.bytes),
                ("storage_directory_bytes", t.budget_used),
                ("limit_storage_max_size", t.budget_max),
                ("storage_span_segments", t.span_segments),
                ("storage_decision_segments", t.decision_segments),
                ("storage_payloads_written", t.spans.records_appended),
                ("storage_bytes_written", t.spans.bytes_appended),
                ("storage_rounds_written", t.decisions.records_appended),
                ("storage_fsyncs", t.spans.syncs),
                ("storage_fsync_ns_total", t.spans.sync_ns_total),
                ("storage_refused_full", t.spans.appends_refused_full),
                (
                    "storage_segments_dropped",
                    t.spans.segments_dropped + t.decisions.segments_dropped,
                ),
                ("storage_open_rounds", t.open_rounds),
                ("storage_acknowledged_round", t.acknowledged_round),
            ]);
        }
        if let Some(r) = &self.replay {
            out.extend([
                ("replay_duration_ns", r.duration_ns),
                ("replay_payloads", r.payloads),
                ("replay_payloads_invalid", r.payloads_invalid),
                ("replay_bytes", r.bytes),
                ("replay_traces_pending", r.traces_pending),
                ("replay_spans_pending", r.spans_pending),
                ("replay_traces_resent", r.traces_resent),
                ("replay_spans_resent", r.spans_resent),
                ("replay_spans_covered", r.spans_covered),
                ("replay_truncations", r.truncations.len() as u64),
                (
                    "replay_truncated_bytes",
                    r.truncations.iter().map(|t| t.bytes).sum(),
                ),
            ]);
        }
        out
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
        let cfg = self.config();
        let mut totals: Vec<PolicyCounters> = vec![PolicyCounters::default(); cfg.policies.len()];
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
        cfg.policies
            .iter()
            .map(|p| p.name.clone())
            .zip(totals)
            .collect()
    }

    /// The shadow policies over every shard (`tailsample.shadow`): per-policy counters, what each side keeps,
    /// and the latest disagreements, by decision time. None without a shadow set.
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        let engine_cfg = self.config();
        let cfg = engine_cfg.shadow.as_ref()?;
        let mut report = ShadowReport {
            policies: cfg
                .policies
                .iter()
                .map(|p| (p.name.clone(), PolicyCounters::default()))
                .collect(),
            ..ShadowReport::default()
        };
        for shard in self.shards.iter() {
            let shard = lock(shard);
            let Some(sh) = &shard.shadow else { continue };
            for ((_, t), p) in report.policies.iter_mut().zip(&sh.stats) {
                t.sampled += p.sampled;
                t.not_sampled += p.not_sampled;
                t.dropped += p.dropped;
                t.errors += p.errors;
                t.decided += p.decided;
            }
            report.totals.add(&sh.totals);
            report.disagreements.extend(sh.disagreements().copied());
            report.disagreements_bytes += sh.memory_bytes();
        }
        report.disagreements.sort_by_key(|d| d.decided_at);
        Some(report)
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
    a.traces_resent += b.traces_resent;
    a.spans_resent += b.spans_resent;
    a.traces_evicted += b.traces_evicted;
    a.spans_evicted += b.spans_evicted;
    a.spans_sampled += b.spans_sampled;
    a.traces_sampled_probability_unknown += b.traces_sampled_probability_unknown;
    a.spans_not_sampled += b.spans_not_sampled;
    a.spans_dropped += b.spans_dropped;
    a.late_spans_forwarded += b.late_spans_forwarded;
    a.late_spans_dropped += b.late_spans_dropped;
    a.policy_evaluation_errors += b.policy_evaluation_errors;
    a.error_traces_decided += b.error_traces_decided;
    a.error_traces_not_sampled += b.error_traces_not_sampled;
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
    a.decided_traces_in_memory += b.decided_traces_in_memory;
    a.spans_in_memory += b.spans_in_memory;
    a.span_bytes_in_memory += b.span_bytes_in_memory;
    a.memory_bytes += b.memory_bytes;
    a.late_span_buffer_bytes += b.late_span_buffer_bytes;
    a.sampled_cache_entries += b.sampled_cache_entries;
    a.non_sampled_cache_entries += b.non_sampled_cache_entries;
    a.non_sampled_cache_bytes += b.non_sampled_cache_bytes;
    a.interned_origins += b.interned_origins;
}

/// What `Engine::ingest_report` took of a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans taken.
    pub spans: usize,
    /// Spans rejected alone (see `Decoded`: no usable trace ID, an ID of the wrong length, nested deeper than
    /// `MAX_LEVELS` protobuf message levels or under a resource or scope that is); the rest of the payload was
    /// taken.
    pub rejected_spans: usize,
    /// The same, per reason (only the reasons seen, in `RejectReason::ALL` order).
    pub rejected_by_reason: Vec<(RejectReason, usize)>,
    /// Why the first of them was rejected, and where.
    pub rejection: Option<String>,
}

/// A quick look at a payload without an engine: validates it and summarises it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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

/// Sorts (trace ID, span index) pairs, as `sort_unstable` would, by sorting their runs: SDKs and agents mostly
/// send a trace's spans next to each other, so a payload of 1,000 spans of 5-span traces has 200 runs to sort
/// instead of 1,000 pairs (the sort was ~2.5 % of the service's CPU). Runs of one ID ordered by where they start
/// keep each trace's span indices ascending. Spans interleaved one by one cost a pass more than sorting all.
fn sort_by_trace(order: &mut Vec<(u128, u32)>) {
    // (trace ID, start, end) of each run of equal IDs, in payload order.
    let mut runs: Vec<(u128, u32, u32)> = Vec::new();
    let mut start = 0;
    for run in order.chunk_by(|a, b| a.0 == b.0) {
        runs.push((run[0].0, start as u32, (start + run.len()) as u32));
        start += run.len();
    }
    if runs.windows(2).all(|w| w[0].0 < w[1].0) {
        return; // already grouped and in order (span indices ascend within a run)
    }
    if runs.len() * 2 > order.len() {
        order.sort_unstable(); // mostly runs of one: sorting the pairs themselves is cheaper
        return;
    }
    runs.sort_unstable_by_key(|&(id, start, _)| (id, start));
    let mut sorted = Vec::with_capacity(order.len());
    for (_, start, end) in runs {
        sorted.extend_from_slice(&order[start as usize..end as usize]);
    }
    *order = sorted;
}

fn payloads(kept: Vec<Kept>) -> Vec<Vec<u8>> {
    kept.into_iter().map(|k| k.payload).collect()
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

/// The configuration an engine decides by, and its version.
struct Live {
    cfg: Arc<EngineConfig>,
    version: ConfigVersion,
    /// Policy names of the last `NAMES_KEPT` versions, oldest first: decision-log records name their policies
    /// by index in the configuration that decided them.
    names: std::collections::VecDeque<(u32, Vec<String>)>,
}

/// Versions whose policy names `explain` can still give (a record decided under an older one shows indexes).
const NAMES_KEPT: usize = 16;

fn names_of(cfg: &EngineConfig) -> Vec<String> {
    cfg.policies.iter().map(|p| p.name.clone()).collect()
}

/// Which configuration decided a trace: the engine's first is number 1, each reload that changes something adds
/// one; `hash` is a stable hash (FNV-1a 64) of the configuration's normalized JSON, the same for the same
/// configuration in any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigVersion {
    pub number: u32,
    pub hash: u64,
}

impl ConfigVersion {
    fn of(cfg: &EngineConfig, number: u32) -> Self {
        let text = cfg.normalized().to_string();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.as_bytes() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        ConfigVersion { number, hash }
    }
}

/// What `Engine::reload` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// The version now live.
    pub version: ConfigVersion,
    /// False when the new configuration equals the live one: nothing was swapped (stateful policies keep
    /// their state).
    pub changed: bool,
    /// Buffered traces whose summaries were folded again under the new policies.
    pub traces_refolded: u64,
}

/// Settings a live engine cannot change: they size or place what is already held (tables, caches, logs, the
/// files of tail storage) or carry state built under them (RED series, the propagation audit).
fn fixed_settings(old: &EngineConfig, new: &EngineConfig) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, a: String, b: String| {
        if a != b {
            changed.push(format!("{name} ({a} → {b})"));
        }
    };
    check(
        "num_traces",
        old.num_traces.to_string(),
        new.num_traces.to_string(),
    );
    check(
        "num_shards",
        old.num_shards.to_string(),
        new.num_shards.to_string(),
    );
    check(
        "decision_cache.sampled_cache_size",
        old.sampled_cache_size.to_string(),
        new.sampled_cache_size.to_string(),
    );
    check(
        "decision_cache.non_sampled_cache_size",
        old.non_sampled_cache_size.to_string(),
        new.non_sampled_cache_size.to_string(),
    );
    check(
        "tailsample.decision_log_size",
        old.decision_log_size.to_string(),
        new.decision_log_size.to_string(),
    );
    check(
        "tailsample.recent_kept_bytes",
        old.recent_kept_bytes.to_string(),
        new.recent_kept_bytes.to_string(),
    );
    let storage = |c: &EngineConfig| c.tail_storage.clone().unwrap_or_else(|| "none".into());
    check("tail_storage", storage(old), storage(new));
    if old.red_metrics != new.red_metrics {
        changed.push("tailsample.red_metrics".into());
    }
    if old.propagation_audit != new.propagation_audit {
        changed.push("tailsample.propagation_audit".into());
    }
    changed
}

fn refuse_fixed(old: &EngineConfig, new: &EngineConfig) -> Result<()> {
    let fixed = fixed_settings(old, new);
    if fixed.is_empty() {
        return Ok(());
    }
    Err(Error::config(
        "",
        format!("cannot change without a restart: {}", fixed.join(", ")),
    ))
}

impl Engine {
    /// The version of the live configuration.
    pub fn config_version(&self) -> ConfigVersion {
        self.live_read().version
    }

    /// Whether `reload(cfg)` would be taken (for a caller swapping several engines all or none).
    pub fn check_reload(&self, cfg: &EngineConfig) -> Result<()> {
        refuse_fixed(&self.live_read().cfg, cfg)
    }

    /// The policy names of configuration `number`, if it is among the last few (see `Record::config_version`).
    pub fn policy_names_of(&self, number: u32) -> Option<Vec<String>> {
        let live = self.live_read();
        let (_, names) = live.names.iter().find(|(n, _)| *n == number)?;
        Some(names.clone())
    }

    /// Swaps in a new configuration: policies, their parameters, the timing keys and the tailsample options
    /// that do not size what is held. Refused whole, nothing changed, when a setting that cannot change live
    /// differs (`fixed_settings` names them in the error).
    ///
    /// Atomic for every trace: the swap holds the configuration lock written, which waits for every `ingest`
    /// and decision round in flight and holds off new ones, and swaps every shard before letting go. So a
    /// payload is decoded and folded under one configuration, a round judges under one, and no trace is ever
    /// judged half by the old policies and half by the new. Buffered traces stay buffered: each one's summary
    /// is folded again from its stored spans under the new policies (matched bits, aggregates, trace keys,
    /// `ot` values; sizes when only the new set reads them), so it is judged at its due time as if it had
    /// arrived under them. Decision caches, held decisions, the decision log, recent kept traces, RED metrics
    /// and the audit stay. Stateful policies (`rate_limiting`, `bytes_limiting`, `latency_percentile`,
    /// `adaptive`, `composite`) start fresh; per-policy counters carry over to the policy of the same name.
    pub fn reload(&self, cfg: EngineConfig) -> Result<Reloaded> {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        refuse_fixed(&live.cfg, &cfg)?;
        let next = ConfigVersion::of(&cfg, live.version.number + 1);
        if next.hash == live.version.hash && cfg.normalized() == live.cfg.normalized() {
            return Ok(Reloaded {
                version: live.version,
                changed: false,
                traces_refolded: 0,
            });
        }
        let cfg = Arc::new(cfg);
        if let Some((_, key)) = &self.red {
            let service = cfg
                .attr_keys
                .index_of_str("service.name")
                .expect("service.name is extracted when RED metrics are on");
            key.store(service, Ordering::Relaxed);
        }
        let mut traces_refolded = 0;
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let before = shard.memory_bytes();
            traces_refolded += shard.reload(cfg.clone(), next.number);
            self.account(before, shard.memory_bytes());
        }
        if live.names.len() >= NAMES_KEPT {
            live.names.pop_front();
        }
        live.names.push_back((next.number, names_of(&cfg)));
        live.cfg = cfg;
        live.version = next;
        Ok(Reloaded {
            version: next,
            changed: true,
            traces_refolded,
        })
    }
}

#[cfg(test)]
mod sort_tests {
    use super::sort_by_trace;

    /// Payload-ordered pairs as `route` builds them: traces in runs of `run` spans, then `moves` random swaps.
    fn pairs(seed: u64, traces: u64, run: usize, moves: usize) -> Vec<(u128, u32)> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut ids: Vec<u128> = Vec::new();
        for _ in 0..traces {
            let id = u128::from(next()) << 64 | u128::from(next() % 4); // some IDs repeat
            ids.extend(std::iter::repeat_n(id, run));
        }
        for _ in 0..moves {
            let (a, b) = (next() as usize % ids.len(), next() as usize % ids.len());
            ids.swap(a, b);
        }
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect()
    }

    /// Guarantee: the same order as sorting the pairs, whatever the runs: whole, split, interleaved, sorted.
    #[test]
    fn sorting_runs_orders_pairs_as_sorting_them() {
        for seed in 0..50 {
            for (traces, run, moves) in [
                (200, 5, 0),
                (200, 5, 30),
                (50, 1, 0),
                (300, 3, 900),
                (1, 7, 0),
            ] {
                let mut got = pairs(seed, traces, run, moves);
                let mut want = got.clone();
                want.sort_unstable();
                sort_by_trace(&mut got);
                assert_eq!(
                    got, want,
                    "seed {seed}, {traces} traces of {run}, {moves} moves"
                );
            }
        }
        let mut sorted = vec![(1, 0), (1, 1), (2, 2), (3, 3)];
        sort_by_trace(&mut sorted);
        assert_eq!(sorted, vec![(1, 0), (1, 1), (2, 2), (3, 3)]);
        let mut empty = Vec::new();
        sort_by_trace(&mut empty);
        assert!(empty.is_empty());
    }
}
