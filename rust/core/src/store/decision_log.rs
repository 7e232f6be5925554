//! The decision log: what happened to each recently decided trace, to answer "did tailsample keep this trace,
//! and why?" during an incident.
//!
//! A ring of the last `capacity` records per shard (first in, first out) with an index by trace ID. A record
//! holds the trace's `Decision` (outcome, deciding policy, every top-level policy's vote, probability), why it
//! was taken when it was (`Trigger`), the first-seen, due and decided times, the span count, the late spans
//! that arrived after the decision, and the number of the configuration that decided. About 136 bytes per
//! record with its index entry: the default 100,000 records per engine take about 14 MB (`decision_log_bytes`).

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
    /// Trace ID → sequence number of its latest record.
    index: HashMap<u128, u64, RandomState>,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> Self {
        DecisionLog {
            capacity,
            ring: VecDeque::new(),
            base: 0,
            index: HashMap::default(),
        }
    }

    pub fn push(&mut self, r: Record) {
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() >= self.capacity {
            if let Some(old) = self.ring.pop_front() {
                // The index may already point at a newer record of the same trace (decided twice): put back.
                // Removed first, as that is what nearly always happens (one lookup, not two).
                if let Some(seq) = self.index.remove(&old.trace_id) {
                    if seq != self.base {
                        self.index.insert(old.trace_id, seq);
                    }
                }
                self.base += 1;
            }
        }
        let seq = self.base + self.ring.len() as u64;
        self.index.insert(r.trace_id, seq);
        self.ring.push_back(r);
    }

    pub fn get(&self, id: u128) -> Option<&Record> {
        let seq = *self.index.get(&id)?;
        self.ring.get((seq - self.base) as usize)
    }

    /// Counts late spans of a decided trace, if it is still logged.
    pub fn add_late(&mut self, id: u128, spans: u32) {
        if let Some(&seq) = self.index.get(&id) {
            if let Some(r) = self.ring.get_mut((seq - self.base) as usize) {
                r.late_spans = r.late_spans.saturating_add(spans);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Bytes held: the records, and the index at its load factor.
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
