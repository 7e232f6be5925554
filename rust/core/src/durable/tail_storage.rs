//! Tail storage: the engine's buffer on disk, so that a restart loses nothing accepted.
//!
//! Two logs under the storage directory:
//! - `spans/`: every accepted payload, whole, with the engine time it arrived (`PAYLOAD`), written before the
//!   receiver is answered;
//! - `decisions/`: per poll round, every trace decided and how (`ROUND`), and the exporters' acknowledgements
//!   (`ACK`): round `w` and everything before it has been exported (or is in a persistent queue).
//!
//! Positions in the spans log order time: a round records where the spans log stood when the poll began
//! (`start`). A payload written before `start(w)` was taken before poll `w` began, so whatever of it was kept by
//! a decision in round ≤ w left in a round ≤ w (with its trace, or as a late span at the next poll). Once `w` is
//! acknowledged, those spans are covered: a replay need not send them again. What a replay does send again are
//! kept spans written after `start(w)`: at most one round's worth, counted as possible duplicates.
//!
//! A spans segment is deleted once every trace with spans in it is decided and covered: older than the oldest
//! segment of an undecided trace, of a kept trace whose round is not acknowledged, and of `start(w)`. A decisions
//! segment is deleted once its rounds are acknowledged, no retained span can need them, and newer segments hold
//! enough decisions to refill the decision caches.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::segment_log::{
    AppendError, Budget, LogOptions, LogStats, Position, Records, SegmentLog, SyncPolicy,
    Truncation,
};
use crate::policy::decision::{Decision, Outcome};
use crate::policy::inclusion::Stage;

pub const PAYLOAD: u8 = 1;
pub const ROUND: u8 = 2;
pub const ACK: u8 = 3;

#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub directory: PathBuf,
    pub segment_bytes: u64,
    pub budget: Arc<Budget>,
    pub sync: SyncPolicy,
}

/// How a trace left the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Kept: by which policy (its index), at which stage.
    Sampled { policy: Option<u16>, stage: Stage },
    /// Not sampled or dropped by policy: late spans follow through the non-sampled cache.
    NotSampled,
    /// Left undecided (evicted, forgotten, dropped at shutdown): no cache entry.
    Discarded,
}

impl From<&Decision> for Verdict {
    /// What replay needs of a decision: its class (kept, not kept, or left undecided), and for a kept trace
    /// the deciding policy and the probability.
    fn from(d: &Decision) -> Verdict {
        match d.outcome {
            Outcome::Sampled => Verdict::Sampled {
                policy: d.policy,
                stage: d.stage,
            },
            Outcome::NotSampled | Outcome::DroppedByPolicy | Outcome::DroppedTooLarge => {
                Verdict::NotSampled
            }
            Outcome::DroppedOnShutdown | Outcome::Evicted => Verdict::Discarded,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided {
    pub id: u128,
    pub verdict: Verdict,
}

const ENTRY: usize = 16 + 1 + 2 + 1 + 8;
const ROUND_HEADER: usize = 8 * 7 + 4;

fn put_position(out: &mut Vec<u8>, p: Position) {
    out.extend_from_slice(&p.segment.to_le_bytes());
    out.extend_from_slice(&p.offset.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn position_at(b: &[u8], at: usize) -> Option<Position> {
    Some(Position {
        segment: u64_at(b, at)?,
        offset: u64_at(b, at + 8)?,
    })
}

fn encode_entry(out: &mut Vec<u8>, d: &Decided) {
    out.extend_from_slice(&d.id.to_le_bytes());
    let (verdict, policy, stage) = match d.verdict {
        Verdict::Sampled { policy, stage } => (1u8, policy.unwrap_or(u16::MAX), stage),
        Verdict::NotSampled => (2, u16::MAX, Stage::Unknown),
        Verdict::Discarded => (3, u16::MAX, Stage::Unknown),
    };
    let (kind, value) = match stage {
        Stage::Certain => (0u8, 0u64),
        Stage::Threshold(t) => (1, t),
        Stage::Proportional(p) => (2, p.to_bits()),
        Stage::Unknown => (3, 0),
    };
    out.push(verdict);
    out.extend_from_slice(&policy.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&value.to_le_bytes());
}

fn decode_entry(b: &[u8]) -> Option<Decided> {
    let id = u128::from_le_bytes(b.get(0..16)?.try_into().ok()?);
    let policy = u16::from_le_bytes(b.get(17..19)?.try_into().ok()?);
    let value = u64_at(b, 20)?;
    let stage = match b[19] {
        0 => Stage::Certain,
        1 => Stage::Threshold(value),
        2 => Stage::Proportional(f64::from_bits(value)),
        _ => Stage::Unknown,
    };
    let verdict = match b[16] {
        1 => Verdict::Sampled {
            policy: (policy != u16::MAX).then_some(policy),
            stage,
        },
        2 => Verdict::NotSampled,
        _ => Verdict::Discarded,
    };
    Some(Decided { id, verdict })
}

/// A poll round as written: its number, where the spans log stood when it began and when it was written,
/// the engine time, and its decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub round: u64,
    pub start: Position,
    pub end: Position,
    pub now: i64,
    pub min_kept_segment: u64,
    pub decisions: Vec<Decided>,
}

impl RoundRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROUND_HEADER + ENTRY * self.decisions.len());
        out.extend_from_slice(&self.round.to_le_bytes());
        put_position(&mut out, self.start);
        put_position(&mut out, self.end);
        out.extend_from_slice(&self.now.to_le_bytes());
        out.extend_from_slice(&self.min_kept_segment.to_le_bytes());
        out.extend_from_slice(&(self.decisions.len() as u32).to_le_bytes());
        for d in &self.decisions {
            encode_entry(&mut out, d);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let n = u32::from_le_bytes(b.get(56..60)?.try_into().ok()?) as usize;
        if b.len() != ROUND_HEADER + n * ENTRY {
            return None;
        }
        let decisions = b[ROUND_HEADER..]
            .chunks_exact(ENTRY)
            .map(decode_entry)
            .collect::<Option<Vec<_>>>()?;
        Some(RoundRecord {
            round: u64_at(b, 0)?,
            start: position_at(b, 8)?,
            end: position_at(b, 24)?,
            now: u64_at(b, 40)? as i64,
            min_kept_segment: u64_at(b, 48)?,
            decisions,
        })
    }
}

fn encode_ack(round: u64, through: Position) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&round.to_le_bytes());
    put_position(&mut out, through);
    out
}

fn decode_ack(b: &[u8]) -> Option<(u64, Position)> {
    if b.len() != 24 {
        return None;
    }
    Some((u64_at(b, 0)?, position_at(b, 8)?))
}

/// What a replay found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    #[serde(rename = "duration", serialize_with = "crate::serialize::seconds")]
    pub duration_ns: u64,
    pub segments: u64,
    pub bytes: u64,
    pub payloads: u64,
    /// Payload records that no longer decode (counted and skipped; they were valid when written).
    pub payloads_invalid: u64,
    pub rounds: u64,
    pub decisions: u64,
    pub acknowledged_round: Option<u64>,
    pub spans_pending: u64,
    pub traces_pending: u64,
    /// Kept spans sent again: their round was not acknowledged, or they came after its start.
    pub spans_resent: u64,
    pub traces_resent: u64,
    /// Spans not replayed: decided and covered by an acknowledgement, or of traces not sampled.
    pub spans_covered: u64,
    pub spans_not_sampled: u64,
    pub truncations: Vec<Truncation>,
}

/// What a replayed span group becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replayed {
    /// Buffered again, undecided, due from its original first-seen time.
    Pending,
    /// Kept before the restart and perhaps not exported: sent again with its decision.
    Resend { policy: Option<u16>, stage: Stage },
    /// Exported and acknowledged already.
    Covered,
    /// Not sampled (or left undecided before a later decision).
    NotSampled,
}

#[derive(Debug, Clone, Copy)]
struct DecisionAt {
    round: u64,
    start: Position,
    verdict: Verdict,
}

/// Every decision still on disk, by trace, to judge the payloads being replayed.
pub struct Decisions {
    by_trace: HashMap<u128, Vec<DecisionAt>, ahash::RandomState>,
    /// In the order they were made, to refill the decision caches.
    pub in_order: Vec<Decided>,
    acked: Option<(u64, Position)>,
}

impl Decisions {
    /// What the spans of trace `id` in the payload at `at` become.
    pub fn judge(&self, id: u128, at: Position) -> Replayed {
        let Some(list) = self.by_trace.get(&id) else {
            return Replayed::Pending;
        };
        // The decision these spans met: the first made after they were written, else the last one (they were
        // late spans, or arrived while the round was running).
        let d = list
            .iter()
            .find(|d| d.start > at)
            .or_else(|| list.last())
            .expect("lists are never empty");
        match d.verdict {
            Verdict::Sampled { policy, stage } => {
                let covered = self
                    .acked
                    .is_some_and(|(w, through)| d.round <= w && at < through);
                if covered {
                    Replayed::Covered
                } else {
                    Replayed::Resend { policy, stage }
                }
            }
            Verdict::NotSampled => Replayed::NotSampled,
            Verdict::Discarded if d.start > at => Replayed::NotSampled,
            Verdict::Discarded => Replayed::Pending,
        }
    }
}

/// A round not yet acknowledged: where it began, and the oldest spans segment of a trace it kept.
#[derive(Debug, Clone, Copy)]
struct OpenRound {
    start: Position,
    min_kept_segment: u64,
}

#[derive(Debug, Clone, Copy)]
struct DecisionSegment {
    id: u64,
    max_round: u64,
    max_end_segment: u64,
    sampled: u64,
    not_sampled: u64,
}

struct Book {
    log: SegmentLog,
    segments: Vec<DecisionSegment>,
    open_rounds: BTreeMap<u64, OpenRound>,
    acked: Option<(u64, Position)>,
    /// The decisions segment holding the newest ACK record.
    ack_segment: u64,
    keep_sampled: u64,
    keep_not_sampled: u64,
}

impl Book {
    fn note(&mut self, segment: u64, round: Option<&RoundRecord>) {
        if self.segments.last().is_none_or(|s| s.id != segment) {
            self.segments.push(DecisionSegment {
                id: segment,
                max_round: 0,
                max_end_segment: 0,
                sampled: 0,
                not_sampled: 0,
            });
        }
        if let Some(r) = round {
            let s = self.segments.last_mut().expect("just pushed");
            s.max_round = s.max_round.max(r.round);
            s.max_end_segment = s.max_end_segment.max(r.end.segment);
            for d in &r.decisions {
                match d.verdict {
                    Verdict::Sampled { .. } => s.sampled += 1,
                    Verdict::NotSampled => s.not_sampled += 1,
                    Verdict::Discarded => {}
                }
            }
        }
    }

    fn write_ack(&mut self) -> io::Result<()> {
        if let Some((w, through)) = self.acked {
            let p = self.log.append_control(ACK, &[&encode_ack(w, through)])?;
            self.ack_segment = p.segment;
            self.note(p.segment, None);
        }
        Ok(())
    }
}

pub struct TailStorage {
    spans: Mutex<SegmentLog>,
    book: Mutex<Book>,
    /// Bytes of the spans log known fsynced (group commit).
    synced: Mutex<u64>,
    sync: SyncPolicy,
    next_round: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Storage gauges and counters for `Engine::stats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageStats {
    pub bytes: u64,
    pub budget_used: u64,
    pub budget_max: u64,
    pub span_segments: u64,
    pub decision_segments: u64,
    pub spans: LogStats,
    pub decisions: LogStats,
    pub open_rounds: u64,
    pub acknowledged_round: u64,
}

impl TailStorage {
    /// Opens the logs under `opts.directory` and reads back the decisions; the caller then replays the spans
    /// log through `for_each_payload` and `Decisions::judge`.
    /// `keep_sampled` and `keep_not_sampled` are the decision caches' sizes: enough decisions stay on disk to
    /// refill them.
    pub fn open(
        opts: &StorageOptions,
        keep_sampled: u64,
        keep_not_sampled: u64,
        report: &mut ReplayReport,
    ) -> io::Result<(Self, Decisions)> {
        let log_opts = LogOptions {
            segment_bytes: opts.segment_bytes,
            budget: opts.budget.clone(),
            sync: opts.sync,
        };
        let (spans, mut truncations) =
            SegmentLog::open(&opts.directory.join("spans"), log_opts.clone())?;
        // Decisions are bookkeeping: they ride on the spans' fsyncs rather than paying their own.
        let decisions_opts = LogOptions {
            segment_bytes: (opts.segment_bytes / 4).max(1 << 16),
            sync: SyncPolicy::None,
            ..log_opts
        };
        let (dlog, t) = SegmentLog::open(&opts.directory.join("decisions"), decisions_opts)?;
        truncations.extend(t);
        report.truncations = truncations;

        let mut book = Book {
            log: dlog,
            segments: Vec::new(),
            open_rounds: BTreeMap::new(),
            acked: None,
            ack_segment: 0,
            keep_sampled,
            keep_not_sampled,
        };
        let mut decisions = Decisions {
            by_trace: HashMap::default(),
            in_order: Vec::new(),
            acked: None,
        };
        let mut next_round = 1;
        let ids = book.log.segment_ids();
        for &id in &ids[..ids.len() - 1] {
            let data = book.log.read_segment(id)?;
            book.note(id, None);
            for r in Records::new(id, &data) {
                match r.kind {
                    ROUND => {
                        let Some(round) = RoundRecord::decode(r.body) else {
                            continue;
                        };
                        report.rounds += 1;
                        report.decisions += round.decisions.len() as u64;
                        next_round = next_round.max(round.round + 1);
                        for d in &round.decisions {
                            decisions
                                .by_trace
                                .entry(d.id)
                                .or_default()
                                .push(DecisionAt {
                                    round: round.round,
                                    start: round.start,
                                    verdict: d.verdict,
                                });
                        }
                        decisions.in_order.extend_from_slice(&round.decisions);
                        book.note(id, Some(&round));
                    }
                    ACK => {
                        if let Some((w, through)) = decode_ack(r.body) {
                            if book.acked.is_none_or(|(a, _)| w > a) {
                                book.acked = Some((w, through));
                                book.ack_segment = id;
                            }
                            next_round = next_round.max(w + 1);
                        }
                    }
                    _ => {}
                }
            }
        }
        decisions.acked = book.acked;
        report.acknowledged_round = book.acked.map(|(w, _)| w);
        // Carry the acknowledgement into the new segment, so that dropping old ones never loses it.
        book.write_ack()?;
        let storage = TailStorage {
            spans: Mutex::new(spans),
            book: Mutex::new(book),
            synced: Mutex::new(0),
            sync: opts.sync,
            next_round,
        };
        Ok((storage, decisions))
    }

    /// The first round number to use after a restart.
    pub fn next_round(&self) -> u64 {
        self.next_round
    }

    /// Calls `each(position, now, payload)` for every payload on disk, oldest first.
    /// Returns the segments, bytes and payloads read.
    pub fn for_each_payload(
        &self,
        mut each: impl FnMut(Position, i64, &[u8]),
    ) -> io::Result<(u64, u64, u64)> {
        let mut report = (0, 0, 0);
        let spans = lock(&self.spans);
        let ids = spans.segment_ids();
        // The last segment is the fresh one this open created.
        for &id in &ids[..ids.len() - 1] {
            let data = spans.read_segment(id)?;
            report.0 += 1;
            report.1 += data.len() as u64;
            for r in Records::new(id, &data) {
                if r.kind != PAYLOAD || r.body.len() < 8 {
                    continue;
                }
                let now = i64::from_le_bytes(r.body[..8].try_into().unwrap());
                report.2 += 1;
                each(r.position, now, &r.body[8..]);
            }
        }
        Ok(report)
    }

    /// Writes an accepted payload; returns its position and the sequence number `sync_to` takes.
    pub fn append_payload(&self, payload: &[u8], now: i64) -> Result<(Position, u64), AppendError> {
        let mut spans = lock(&self.spans);
        let p = spans.append(PAYLOAD, &[&now.to_le_bytes(), payload])?;
        Ok((p, spans.written()))
    }

    /// The group-commit sequence number of everything written so far.
    pub fn written(&self) -> u64 {
        lock(&self.spans).written()
    }

    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Group commit: returns once everything up to `seq` is fsynced, with one fsync for all the callers
    /// waiting meanwhile.
    pub fn sync_to(&self, seq: u64) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= seq {
            return Ok(());
        }
        let (file, through) = lock(&self.spans).sync_handle();
        let t = Instant::now();
        file.sync_data()?;
        lock(&self.spans).note_sync(t.elapsed().as_nanos() as u64);
        *synced = through;
        Ok(())
    }

    /// Where the spans log stands: the start of a poll round.
    pub fn position(&self) -> Position {
        lock(&self.spans).position()
    }

    /// Writes a poll round's decisions (before its kept spans leave).
    pub fn record_round(
        &self,
        round: u64,
        start: Position,
        now: i64,
        decisions: Vec<Decided>,
        min_kept_segment: u64,
    ) -> io::Result<()> {
        let end = self.position();
        let mut book = lock(&self.book);
        book.open_rounds.insert(
            round,
            OpenRound {
                start,
                min_kept_segment,
            },
        );
        if decisions.is_empty() {
            return Ok(());
        }
        let r = RoundRecord {
            round,
            start,
            end,
            now,
            min_kept_segment,
            decisions,
        };
        let p = book.log.append_control(ROUND, &[&r.encode()])?;
        book.note(p.segment, Some(&r));
        Ok(())
    }

    /// Round `round` and every one before it are exported (or safely queued); false if it is unknown or was
    /// acknowledged already.
    pub fn acknowledge(&self, round: u64) -> io::Result<bool> {
        let mut book = lock(&self.book);
        let Some(open) = book.open_rounds.get(&round).copied() else {
            return Ok(false);
        };
        book.open_rounds = book.open_rounds.split_off(&(round + 1));
        book.acked = Some((round, open.start));
        book.write_ack()?;
        Ok(true)
    }

    /// Deletes what no replay can need any more. `pending_min_segment` is the oldest spans segment of a
    /// buffered, undecided trace. Returns the segments deleted.
    pub fn retain(&self, pending_min_segment: Option<u64>) -> io::Result<usize> {
        let mut book = lock(&self.book);
        let Some((_, through)) = book.acked else {
            return Ok(0); // nothing acknowledged yet: everything may still be needed
        };
        let mut keep_from = through.segment;
        if let Some(p) = pending_min_segment {
            keep_from = keep_from.min(p);
        }
        for r in book.open_rounds.values() {
            keep_from = keep_from.min(r.min_kept_segment);
        }
        let mut spans = lock(&self.spans);
        let mut dropped = spans.drop_before(keep_from)?;
        let oldest_span_segment = spans.segment_ids()[0];
        drop(spans);

        // Decisions: newest first, the cache refill quota; then drop old segments no longer needed.
        let w = book.acked.map_or(0, |(w, _)| w);
        let n = book.segments.len();
        let (mut sampled, mut not_sampled) = (0u64, 0u64);
        let mut droppable_before = None;
        for i in (0..n).rev() {
            let s = book.segments[i];
            let quota_met = sampled >= book.keep_sampled && not_sampled >= book.keep_not_sampled;
            let closed = i + 1 < n;
            if closed && quota_met && s.max_round <= w && s.max_end_segment < oldest_span_segment {
                droppable_before = Some(book.segments[i + 1].id);
                break;
            }
            sampled += s.sampled;
            not_sampled += s.not_sampled;
        }
        if let Some(first_kept) = droppable_before {
            if book.ack_segment < first_kept {
                book.write_ack()?;
            }
            let before = book.log.segment_count();
            book.log.drop_before(first_kept)?;
            dropped += before - book.log.segment_count();
            book.segments.retain(|s| s.id >= first_kept);
        }
        Ok(dropped)
    }

    pub fn stats(&self) -> StorageStats {
        let spans = lock(&self.spans);
        let book = lock(&self.book);
        let budget = &spans.options().budget;
        StorageStats {
            bytes: spans.bytes() + book.log.bytes(),
            budget_used: budget.used(),
            budget_max: budget.max_bytes,
            span_segments: spans.segment_count() as u64,
            decision_segments: book.log.segment_count() as u64,
            spans: spans.stats,
            decisions: book.log.stats,
            open_rounds: book.open_rounds.len() as u64,
            acknowledged_round: book.acked.map_or(0, |(w, _)| w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_records_round_trip() {
        let r = RoundRecord {
            round: 7,
            start: Position {
                segment: 3,
                offset: 100,
            },
            end: Position {
                segment: 4,
                offset: 16,
            },
            now: -5,
            min_kept_segment: 2,
            decisions: vec![
                Decided {
                    id: 1 << 100 | 5,
                    verdict: Verdict::Sampled {
                        policy: Some(3),
                        stage: Stage::Proportional(0.25),
                    },
                },
                Decided {
                    id: 9,
                    verdict: Verdict::Sampled {
                        policy: None,
                        stage: Stage::Threshold(1 << 40),
                    },
                },
                Decided {
                    id: 10,
                    verdict: Verdict::NotSampled,
                },
                Decided {
                    id: 11,
                    verdict: Verdict::Discarded,
                },
            ],
        };
        assert_eq!(RoundRecord::decode(&r.encode()), Some(r.clone()));
        let mut cut = r.encode();
        cut.pop();
        assert_eq!(RoundRecord::decode(&cut), None);
    }

    /// Scenario: each outcome of a decision. Guarantees: replay keeps its class, and a kept trace's policy
    /// and probability.
    #[test]
    fn verdicts_of_decisions() {
        let kept = Decision {
            policy: Some(2),
            stage: Stage::Threshold(7),
            ..Decision::without_votes(Outcome::Sampled)
        };
        assert_eq!(
            Verdict::from(&kept),
            Verdict::Sampled {
                policy: Some(2),
                stage: Stage::Threshold(7)
            }
        );
        for o in [
            Outcome::NotSampled,
            Outcome::DroppedByPolicy,
            Outcome::DroppedTooLarge,
        ] {
            assert_eq!(
                Verdict::from(&Decision::without_votes(o)),
                Verdict::NotSampled
            );
        }
        for o in [Outcome::DroppedOnShutdown, Outcome::Evicted] {
            assert_eq!(
                Verdict::from(&Decision::without_votes(o)),
                Verdict::Discarded
            );
        }
    }

    fn at(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn judging_replayed_spans() {
        let sampled = Verdict::Sampled {
            policy: Some(0),
            stage: Stage::Certain,
        };
        let mut d = Decisions {
            by_trace: HashMap::default(),
            in_order: Vec::new(),
            acked: Some((5, at(2, 500))),
        };
        let mut add = |id: u128, round: u64, start: Position, verdict: Verdict| {
            d.by_trace.entry(id).or_default().push(DecisionAt {
                round,
                start,
                verdict,
            })
        };
        add(1, 5, at(2, 100), sampled); // acknowledged
        add(2, 6, at(2, 900), sampled); // not acknowledged
        add(3, 4, at(2, 50), Verdict::NotSampled);
        add(4, 3, at(1, 50), Verdict::Discarded);
        add(4, 6, at(2, 900), sampled); // evicted, then seen again and kept
        assert_eq!(d.judge(1, at(2, 10)), Replayed::Covered);
        // After the acknowledged round began: perhaps not sent, so sent again.
        assert!(matches!(d.judge(1, at(2, 600)), Replayed::Resend { .. }));
        assert!(matches!(d.judge(2, at(2, 10)), Replayed::Resend { .. }));
        assert_eq!(d.judge(3, at(2, 10)), Replayed::NotSampled);
        assert_eq!(d.judge(3, at(3, 10)), Replayed::NotSampled);
        assert_eq!(d.judge(4, at(1, 10)), Replayed::NotSampled);
        assert!(matches!(d.judge(4, at(2, 10)), Replayed::Resend { .. }));
        assert_eq!(d.judge(99, at(2, 10)), Replayed::Pending);
    }
}
