//! The decision log: what happened to each recently decided trace, to answer "did tailsample keep this trace,
//! and why?" during an incident.
//!
//! A ring of the last `capacity` records per shard (first in, first out) with an index by trace ID, brought up
//! to date only when a lookup needs it (see [`DecisionLog::sync`]). A record
//! holds the trace's `Decision` (outcome, deciding policy, every top-level policy's vote, probability), why it
//! was taken when it was (`Trigger`), the first-seen, due and decided times, the span count, the late spans
//! that arrived after the decision, and the number of the configuration that decided. 128 bytes per record,
//! and up to twice 32 bytes of index once lookups have built it: the default 100,000 records per engine take
//! 13 to 19 MB (`decision_log_bytes`).

use std::collections::HashMap;
use std::collections::VecDeque;

use ahash::RandomState;

use crate::policy::decision::Decision;
use crate::propagation::AuditCounts;
use crate::store::shadow::PackedVerdict;

/// What made the decision happen when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `decision_wait` after the first span.
    DecisionWait,
    /// `decision_wait_after_root_received` after the root span.
    RootReceived,
    /// `flush` (shutdown).
    Flush,
    /// At ingest (too large), or by eviction.
    Ingest,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::DecisionWait => "decision_wait",
            Trigger::RootReceived => "root_received",
            Trigger::Flush => "flush",
            Trigger::Ingest => "ingest",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub trace_id: u128,
    pub decision: Decision,
    pub trigger: Trigger,
    pub first_seen: i64,
    pub due: i64,
    pub decided_at: i64,
    pub span_count: u32,
    /// Spans of this trace that arrived after the decision (forwarded or dropped by the decision caches).
    pub late_spans: u32,
    /// What the propagation audit found in the trace (None: not audited: off, or left undecided).
    pub audit: Option<AuditCounts>,
    /// The number of the configuration that decided it (`engine::ConfigVersion`): 1 until the first reload.
    pub config_version: u32,
    /// What the shadow policies would have done (`unpack` None: no shadow set, or left undecided).
    pub shadow: PackedVerdict,
}

pub struct DecisionLog {
    capacity: usize,
    /// Records in decision order; `base` is the sequence number of `ring[0]`.
    ring: VecDeque<Record>,
    base: u64,
    /// Trace ID → sequence number of its latest record, for the records before `indexed`. Entries of records
    /// that left the ring stay until the index is rebuilt; a lookup checks the record it points at.
    index: HashMap<u128, u64, RandomState>,
    /// Sequence number of the first record not yet in `index`.
    indexed: u64,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> Self {
        DecisionLog {
            capacity,
            ring: VecDeque::new(),
            base: 0,
            index: HashMap::default(),
            indexed: 0,
        }
    }

    /// Logs a decision. The index is not touched: two probes of a table of `capacity` entries per decision, each
    /// a cache miss, were a twentieth of a busy service's CPU, while lookups (`explain`, late spans) are rare.
    pub fn push(&mut self, r: Record) {
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() >= self.capacity {
            self.ring.pop_front();
            self.base += 1;
        }
        self.ring.push_back(r);
    }

    /// Brings the index up to date: the records logged since the last lookup, in order (a later record of a
    /// trace decided twice wins), in one tight loop whose cache misses overlap. When the entries of records gone
    /// from the ring would make it hold more than twice `capacity`, it is rebuilt from the ring instead: at most
    /// two inserts per record logged, and no work at all while nothing is looked up.
    fn sync(&mut self) {
        let end = self.base + self.ring.len() as u64;
        if self.indexed >= end {
            return;
        }
        let from = self.indexed.max(self.base);
        if self.index.len() + (end - from) as usize > 2 * self.capacity {
            self.index.clear();
            for (i, r) in self.ring.iter().enumerate() {
                self.index.insert(r.trace_id, self.base + i as u64);
            }
        } else {
            for seq in from..end {
                let r = &self.ring[(seq - self.base) as usize];
                self.index.insert(r.trace_id, seq);
            }
        }
        self.indexed = end;
    }

    /// Position in the ring of the trace's latest record, if it is still logged.
    fn position(&mut self, id: u128) -> Option<usize> {
        self.sync();
        let seq = *self.index.get(&id)?;
        let at = seq.checked_sub(self.base)? as usize;
        (self.ring.get(at)?.trace_id == id).then_some(at)
    }

    pub fn get(&mut self, id: u128) -> Option<&Record> {
        let at = self.position(id)?;
        self.ring.get(at)
    }

    /// Counts late spans of a decided trace, if it is still logged.
    pub fn add_late(&mut self, id: u128, spans: u32) {
        if let Some(at) = self.position(id) {
            let r = &mut self.ring[at];
            r.late_spans = r.late_spans.saturating_add(spans);
        }
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Bytes held: the records, and the index at its load factor (up to twice `capacity` entries).
    pub fn bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Record>() + self.index.capacity() * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decision::Outcome;
    use crate::policy::inclusion::Stage;

    fn record(id: u128) -> Record {
        Record {
            trace_id: id,
            decision: Decision {
                policy: Some(0),
                stage: Stage::Certain,
                ..Decision::without_votes(Outcome::Sampled)
            },
            trigger: Trigger::DecisionWait,
            first_seen: 0,
            due: 0,
            decided_at: 0,
            span_count: 1,
            late_spans: 0,
            audit: None,
            config_version: 1,
            shadow: PackedVerdict::NONE,
        }
    }

    /// Scenario: more records than the capacity. Guarantees: the oldest are forgotten, the last `capacity`
    /// found; late spans are counted on the right record.
    #[test]
    fn ring_forgets_the_oldest() {
        let mut log = DecisionLog::new(3);
        for id in 1..=5u128 {
            log.push(record(id));
        }
        assert!(log.get(1).is_none() && log.get(2).is_none());
        assert_eq!(log.get(4).map(|r| r.trace_id), Some(4));
        assert_eq!(log.len(), 3);
        log.add_late(4, 2);
        log.add_late(1, 2);
        assert_eq!(log.get(4).unwrap().late_spans, 2);
    }

    /// Scenario: a trace decided twice (a late span started it again after its ID was forgotten). Guarantees:
    /// the latest record answers, and forgetting the older one keeps it.
    #[test]
    fn latest_record_wins() {
        let mut log = DecisionLog::new(2);
        log.push(record(7));
        let mut again = record(7);
        again.decision.outcome = Outcome::NotSampled;
        log.push(again);
        log.push(record(8));
        assert_eq!(log.get(7).unwrap().decision.outcome, Outcome::NotSampled);
        log.push(record(9));
        assert!(log.get(7).is_none());
    }

    /// Scenario: 10,000 decisions of 500 traces (each decided again and again) in a log of 100 records, with
    /// lookups and late spans at irregular moments. Guarantees: every lookup answers as a log indexed on every
    /// push would (the latest record of a trace still in the ring, with its late spans; nothing for one gone);
    /// the index never holds more than twice the capacity.
    #[test]
    fn lookups_between_pushes_match_a_fully_indexed_log() {
        let mut log = DecisionLog::new(100);
        let mut model: VecDeque<(u128, u64, u32)> = VecDeque::new(); // (id, seq, late spans)
        let mut rng = 12345u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for seq in 0..10_000u64 {
            let id = u128::from(next() % 500);
            let mut r = record(id);
            r.first_seen = seq as i64;
            log.push(r);
            model.push_back((id, seq, 0));
            if model.len() > 100 {
                model.pop_front();
            }
            if next() % 7 == 0 {
                let asked = u128::from(next() % 500);
                let latest = model.iter().rposition(|&(m, _, _)| m == asked);
                if next() % 2 == 0 {
                    log.add_late(asked, 3);
                    if let Some(i) = latest {
                        model[i].2 += 3;
                    }
                }
                let want = latest.map(|i| (model[i].1 as i64, model[i].2));
                assert_eq!(
                    log.get(asked).map(|r| (r.first_seen, r.late_spans)),
                    want,
                    "at {seq}"
                );
                assert!(
                    log.index.len() <= 200,
                    "index of {} entries",
                    log.index.len()
                );
            }
        }
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut log = DecisionLog::new(0);
        log.push(record(1));
        assert!(log.get(1).is_none() && log.is_empty());
    }

    #[test]
    fn record_size_is_as_stated() {
        assert!(
            std::mem::size_of::<Record>() <= 128,
            "size {} decision {} audit {}",
            std::mem::size_of::<Record>(),
            std::mem::size_of::<Decision>(),
            std::mem::size_of::<Option<AuditCounts>>(),
        );
    }
}
