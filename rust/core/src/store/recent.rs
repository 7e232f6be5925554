//! Recently kept traces, as they left the engine, for `tailsample show` against a running service.
//!
//! When a trace is kept, a copy of its spans (after any rewriting: adjusted counts, policy attributes) goes into
//! a ring bounded in bytes; the oldest traces leave first. Late spans forwarded after the decision are not
//! added. Lookups are by a linear scan from the newest entry: they serve a person at a terminal, not traffic,
//! and a shard's ring holds a few thousand traces at most at the default size.

use std::collections::VecDeque;

use super::shard::Chunk;

/// One kept trace.
#[derive(Debug)]
pub struct KeptTrace {
    pub trace_id: u128,
    pub decided_at: i64,
    pub spans: u32,
    pub chunks: Vec<Chunk>,
    bytes: usize,
}

/// What a listing shows of a kept trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeptSummary {
    #[serde(serialize_with = "crate::serialize::trace_id_hex")]
    pub trace_id: u128,
    #[serde(serialize_with = "crate::serialize::seconds_i64")]
    pub decided_at: i64,
    #[serde(rename = "span_count")]
    pub spans: u32,
}

pub struct RecentKept {
    capacity_bytes: usize,
    ring: VecDeque<KeptTrace>,
    bytes: usize,
}

/// Bytes a kept trace is charged: its spans, and the bookkeeping per chunk and per trace.
fn charge(chunks: &[Chunk]) -> usize {
    std::mem::size_of::<KeptTrace>()
        + chunks
            .iter()
            .map(|c| c.framed.len() + std::mem::size_of::<Chunk>())
            .sum::<usize>()
}

impl RecentKept {
    pub fn new(capacity_bytes: usize) -> Self {
        RecentKept {
            capacity_bytes,
            ring: VecDeque::new(),
            bytes: 0,
        }
    }

    pub fn is_on(&self) -> bool {
        self.capacity_bytes > 0
    }

    /// Keeps a copy of a kept trace's chunks; a trace larger than the whole ring is not kept.
    pub fn push(&mut self, trace_id: u128, decided_at: i64, chunks: &[Chunk]) {
        let bytes = charge(chunks);
        if bytes > self.capacity_bytes {
            return;
        }
        while self.bytes + bytes > self.capacity_bytes {
            match self.ring.pop_front() {
                Some(old) => self.bytes -= old.bytes,
                None => break,
            }
        }
        let chunks: Vec<Chunk> = chunks
            .iter()
            .map(|c| Chunk {
                origin: c.origin.clone(),
                framed: c.framed.clone(),
                spans: c.spans,
            })
            .collect();
        let spans = chunks.iter().map(|c| c.spans).sum();
        self.bytes += bytes;
        self.ring.push_back(KeptTrace {
            trace_id,
            decided_at,
            spans,
            chunks,
            bytes,
        });
    }

    /// The newest kept copy of a trace.
    pub fn get(&self, trace_id: u128) -> Option<&KeptTrace> {
        self.ring.iter().rev().find(|t| t.trace_id == trace_id)
    }

    /// Up to `limit` summaries, newest first.
    pub fn newest(&self, limit: usize) -> impl Iterator<Item = KeptSummary> + '_ {
        self.ring.iter().rev().take(limit).map(|t| KeptSummary {
            trace_id: t.trace_id,
            decided_at: t.decided_at,
            spans: t.spans,
        })
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::intern::{Origin, Resource};

    fn chunk(len: usize) -> Chunk {
        let resource = Arc::new(Resource {
            raw: None,
            schema_url: "".into(),
            matched: 0,
        });
        Chunk {
            origin: Arc::new(Origin {
                resource,
                raw: None,
                schema_url: "".into(),
            }),
            framed: vec![7u8; len].into_boxed_slice(),
            spans: 2,
        }
    }

    #[test]
    fn oldest_leave_first_within_the_byte_bound() {
        let one = charge(&[chunk(1000)]);
        let mut r = RecentKept::new(3 * one);
        for id in 1..=5u128 {
            r.push(id, id as i64, &[chunk(1000)]);
        }
        assert_eq!(r.len(), 3);
        assert!(r.bytes() <= 3 * one);
        assert!(r.get(2).is_none());
        assert_eq!(r.get(5).unwrap().spans, 2);
        let ids: Vec<u128> = r.newest(10).map(|s| s.trace_id).collect();
        assert_eq!(ids, vec![5, 4, 3]);
        assert_eq!(r.newest(1).count(), 1);
    }

    #[test]
    fn a_trace_larger_than_the_ring_is_not_kept_and_zero_keeps_nothing() {
        let mut r = RecentKept::new(500);
        r.push(1, 0, &[chunk(1000)]);
        assert!(r.is_empty());
        let mut off = RecentKept::new(0);
        assert!(!off.is_on());
        off.push(1, 0, &[chunk(1)]);
        assert!(off.is_empty());
    }

    #[test]
    fn a_trace_kept_twice_answers_with_its_newest_copy() {
        let mut r = RecentKept::new(1 << 20);
        r.push(9, 1, &[chunk(10)]);
        r.push(9, 2, &[chunk(10), chunk(10)]);
        assert_eq!(r.get(9).unwrap().decided_at, 2);
        assert_eq!(r.get(9).unwrap().spans, 4);
    }
}
