//! Decision caches: late spans of a decided trace follow its decision while its ID is remembered.
//!
//! - `SampledCache` remembers kept trace IDs exactly, with the stage's sampling probability for the late
//!   spans' adjusted counts (16 B per ID, 16 B of stage, plus its index: ~60 B per entry), first in, first out.
//! - `NotSampledFilter` remembers dropped trace IDs in a generational cuckoo filter: 32-bit fingerprints in
//!   buckets of 4 at up to 95 % load, three generations of half the configured size each, so that at least the
//!   last `size` IDs are remembered for at most 6.3 bytes per ID. A lookup can say "dropped" for an ID that never
//!   was with probability about 3 × 8 / 2^32 ≈ 5.6e-9 (two buckets of four slots in each of three generations).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::VecDeque;

use ahash::RandomState;

use crate::policy::inclusion::Stage;

pub struct SampledCache {
    capacity: usize,
    set: HashMap<u128, Stage, RandomState>,
    order: VecDeque<u128>,
}

impl SampledCache {
    pub fn new(capacity: usize) -> Self {
        SampledCache {
            capacity,
            set: HashMap::default(),
            order: VecDeque::new(),
        }
    }
    pub fn insert(&mut self, id: u128, stage: Stage) {
        if self.capacity == 0 || self.set.contains_key(&id) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id, stage);
        self.order.push_back(id);
    }
    #[inline]
    pub fn contains(&self, id: u128) -> bool {
        self.capacity != 0 && self.set.contains_key(&id)
    }
    /// The stage a kept trace was decided with, if it is remembered.
    #[inline]
    pub fn get(&self, id: u128) -> Option<Stage> {
        if self.capacity == 0 {
            return None;
        }
        self.set.get(&id).copied()
    }
    pub fn len(&self) -> usize {
        self.set.len()
    }
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

const BUCKET: usize = 4;
const MAX_KICKS: usize = 500;
const GENERATIONS: usize = 3;

/// One cuckoo filter: `buckets` × 4 slots of 32-bit fingerprints (0 = empty).
struct Cuckoo {
    slots: Vec<u32>,
    buckets: usize,
    count: usize,
    capacity: usize,
    kick_state: u64,
}

impl Cuckoo {
    fn new(capacity: usize) -> Self {
        // Sized for 95 % load at `capacity`, with an exact bucket count (no rounding to a power of two).
        let buckets = ((capacity as f64 / (BUCKET as f64 * 0.95)).ceil() as usize).max(2);
        Cuckoo {
            slots: vec![0; buckets * BUCKET],
            buckets,
            count: 0,
            capacity,
            kick_state: 0x2545f4914f6cdd1d,
        }
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        (h % self.buckets as u64) as usize
    }

    /// The other bucket of `fp`: (H(fp) − i) mod buckets, so that alt(alt(i)) == i for any bucket count.
    #[inline]
    fn alt(&self, i: usize, fp: u32) -> usize {
        let hf = (u64::from(fp).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) % self.buckets as u64;
        ((hf as usize) + self.buckets - i) % self.buckets
    }

    #[inline]
    fn bucket(&self, i: usize) -> &[u32] {
        &self.slots[i * BUCKET..(i + 1) * BUCKET]
    }

    #[inline]
    fn contains(&self, i1: usize, fp: u32) -> bool {
        self.bucket(i1).contains(&fp) || self.bucket(self.alt(i1, fp)).contains(&fp)
    }

    fn try_put(&mut self, i: usize, fp: u32) -> bool {
        for s in &mut self.slots[i * BUCKET..(i + 1) * BUCKET] {
            if *s == 0 {
                *s = fp;
                return true;
            }
        }
        false
    }

    /// Inserts; false when the filter is too full (the caller starts a new generation).
    fn insert(&mut self, i1: usize, fp: u32) -> bool {
        if self.count >= self.capacity {
            return false;
        }
        let i2 = self.alt(i1, fp);
        if self.try_put(i1, fp) || self.try_put(i2, fp) {
            self.count += 1;
            return true;
        }
        // Kick a random resident to its alternate bucket, a bounded number of times.
        let mut i = if self.kick_state & 1 == 0 { i1 } else { i2 };
        let mut fp = fp;
        let mut undo: Vec<(usize, u32)> = Vec::with_capacity(32);
        for _ in 0..MAX_KICKS {
            self.kick_state ^= self.kick_state << 13;
            self.kick_state ^= self.kick_state >> 7;
            self.kick_state ^= self.kick_state << 17;
            let slot = i * BUCKET + (self.kick_state as usize) % BUCKET;
            undo.push((slot, self.slots[slot]));
            std::mem::swap(&mut fp, &mut self.slots[slot]);
            i = self.alt(i, fp);
            if self.try_put(i, fp) {
                self.count += 1;
                return true;
            }
        }
        // Undo the kicks in reverse: a failed insert loses nothing that was there.
        for (slot, old) in undo.into_iter().rev() {
            self.slots[slot] = old;
        }
        false
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.count = 0;
    }

    fn bytes(&self) -> usize {
        self.slots.len() * 4
    }
}

pub struct NotSampledFilter {
    size: usize,
    gens: Vec<Cuckoo>,
    current: usize,
    hasher: RandomState,
}

impl NotSampledFilter {
    pub fn new(size: usize) -> Self {
        let per_gen = size.div_ceil(GENERATIONS - 1);
        let gens = if size == 0 {
            Vec::new()
        } else {
            (0..GENERATIONS).map(|_| Cuckoo::new(per_gen)).collect()
        };
        NotSampledFilter {
            size,
            gens,
            current: 0,
            hasher: RandomState::new(),
        }
    }

    #[inline]
    fn locate(&self, id: u128) -> (u64, u32) {
        let h = self.hasher.hash_one(id);
        let fp = ((h >> 32) as u32).max(1);
        (h, fp)
    }

    pub fn insert(&mut self, id: u128) {
        if self.size == 0 {
            return;
        }
        let (h, fp) = self.locate(id);
        let i1 = self.gens[self.current].home(h);
        if self.gens[self.current].insert(i1, fp) {
            return;
        }
        // The current generation is full: the oldest is forgotten and becomes the current one.
        self.current = (self.current + 1) % GENERATIONS;
        self.gens[self.current].clear();
        let i1 = self.gens[self.current].home(h);
        let inserted = self.gens[self.current].insert(i1, fp);
        debug_assert!(inserted, "an empty generation takes any insert");
    }

    #[inline]
    pub fn contains(&self, id: u128) -> bool {
        if self.size == 0 {
            return false;
        }
        let (h, fp) = self.locate(id);
        self.gens.iter().any(|g| g.contains(g.home(h), fp))
    }

    pub fn len(&self) -> usize {
        self.gens.iter().map(|g| g.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.gens.iter().map(Cuckoo::bytes).sum()
    }
}

/// Decided traces held as the reference holds them when there is no cache for their outcome.
///
/// Without a decision cache the reference keeps a decided trace in its table, spans released, until
/// `num_traces` pushes it out, oldest arrival first, decided or not; until then its late spans follow the
/// decision (sent on without the cached-decision attribute, or dropped). The shard keeps such a trace's ID in its
/// own table, its value marked held with the trace's arrival number (one lookup finds a buffered trace or a held
/// decision, as before); this holds the outcomes by arrival number, oldest first.
///
/// Traces are decided in arrival order but for a few (decided early when their root came, or by a flush), so
/// the outcomes are a queue of ascending arrivals, in blocks (no growth copies millions of them under the
/// shard's lock), with a B-tree beside it for those decided out of order. Holding a decision in a B-tree alone
/// cost ~480 instructions per decided trace, in the queue ~80 (callgrind over `examples/ingest_cost`).
#[derive(Default)]
pub struct ResidentDecisions {
    /// Ascending arrivals, oldest first; every block but the last is full, and `head` of the first are gone.
    /// Blocks double from `FIRST_BLOCK` to `BLOCK` entries: a shard holding a few decisions takes a few KiB.
    blocks: VecDeque<Vec<Held>>,
    head: usize,
    queued: usize,
    /// Entries the blocks have room for.
    allocated: usize,
    /// Those decided after a later arrival was queued.
    out_of_order: BTreeMap<u64, Held>,
}

/// One held trace: its arrival number, its ID (as two halves: no padding for a `u128`'s alignment), its outcome.
#[derive(Clone, Copy)]
struct Held {
    arrival: u64,
    id: [u64; 2],
    outcome: Resident,
}

impl Held {
    fn id(&self) -> u128 {
        (u128::from(self.id[0]) << 64) | u128::from(self.id[1])
    }
}

/// What a resident trace was decided: kept (with its stage) or not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resident {
    Kept(Stage),
    NotKept,
}

/// Held traces in the queue's first block, and at most in one block (160 KiB).
const FIRST_BLOCK: usize = 64;
const BLOCK: usize = 4096;
/// Bytes per trace held out of order: its entry with the B-tree's share of a node.
const OUT_OF_ORDER_BYTES: usize = std::mem::size_of::<(u64, Held)>() + 16;

impl ResidentDecisions {
    /// Holds trace `id`, first seen as arrival number `arrival` (unique per shard).
    pub fn insert(&mut self, arrival: u64, id: u128, outcome: Resident) {
        let held = Held {
            arrival,
            id: [(id >> 64) as u64, id as u64],
            outcome,
        };
        let last = self.blocks.back().and_then(|b| b.last());
        if last.is_some_and(|l| l.arrival >= arrival) {
            self.out_of_order.insert(arrival, held);
            return;
        }
        match self.blocks.back_mut() {
            Some(b) if b.len() < b.capacity() => b.push(held),
            last => {
                let size = last.map_or(FIRST_BLOCK, |b| (b.capacity() * 2).min(BLOCK));
                let mut b = Vec::with_capacity(size);
                b.push(held);
                self.allocated += b.capacity();
                self.blocks.push_back(b);
            }
        }
        self.queued += 1;
    }

    /// The outcome of the trace held under `arrival`.
    pub fn get(&self, arrival: u64) -> Option<Resident> {
        if let Some(h) = self.out_of_order.get(&arrival) {
            return Some(h.outcome);
        }
        // The last block whose first arrival is at most `arrival`, then the entry in it.
        let next = self.blocks.partition_point(|b| b[0].arrival <= arrival);
        let block = &self.blocks.get(next.checked_sub(1)?)?;
        let from = if next == 1 { self.head } else { 0 };
        let i = block[from..]
            .binary_search_by_key(&arrival, |h| h.arrival)
            .ok()?;
        Some(block[from + i].outcome)
    }

    fn queue_front(&self) -> Option<&Held> {
        self.blocks.front().and_then(|b| b.get(self.head))
    }

    /// The oldest arrival in the queue, and among those held out of order.
    fn fronts(&self) -> (Option<u64>, Option<u64>) {
        let queued = self.queue_front().map(|h| h.arrival);
        (queued, self.out_of_order.first_key_value().map(|(&a, _)| a))
    }

    /// The arrival number of the oldest held trace.
    pub fn oldest_arrival(&self) -> Option<u64> {
        match self.fronts() {
            (Some(q), Some(o)) => Some(q.min(o)),
            (q, o) => q.or(o),
        }
    }

    /// The ID `n` places behind the queue's front: about the one `pop_oldest` returns `n` calls from now (those
    /// held out of order aside), for its table entry to be prefetched.
    pub fn queued_after(&self, n: usize) -> Option<u128> {
        let mut i = self.head + n;
        for b in &self.blocks {
            match b.get(i) {
                Some(h) => return Some(h.id()),
                None => i -= b.len(),
            }
        }
        None
    }

    /// Forgets the oldest held trace and returns its ID (a late span of it then starts a new trace).
    pub fn pop_oldest(&mut self) -> Option<u128> {
        let (queued, other) = self.fronts();
        if other.is_some_and(|o| queued.is_none_or(|q| o < q)) {
            return self.out_of_order.pop_first().map(|(_, h)| h.id());
        }
        let id = self.queue_front()?.id();
        self.head += 1;
        self.queued -= 1;
        if self.head == self.blocks[0].len() {
            let gone = self.blocks.pop_front(); // no block is ever empty
            self.allocated -= gone.map_or(0, |b| b.capacity());
            self.head = 0;
        }
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.queued + self.out_of_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the queue and the B-tree hold (a held trace's table entry is counted with the table).
    pub fn bytes(&self) -> usize {
        self.allocated * std::mem::size_of::<Held>() + self.out_of_order.len() * OUT_OF_ORDER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> u128 {
        (u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)) | 1
    }

    #[test]
    fn sampled_cache_is_exact_and_fifo() {
        let mut c = SampledCache::new(3);
        for n in 0..5 {
            c.insert(id(n), Stage::Certain);
        }
        assert!(!c.contains(id(0)) && !c.contains(id(1)));
        assert!(c.contains(id(2)) && c.contains(id(3)) && c.contains(id(4)));
        assert_eq!(c.len(), 3);
        let off = SampledCache::new(0);
        assert!(!off.contains(id(2)));
    }

    /// Scenario: traces decided out of arrival order (a root-triggered decision first). Guarantee: they are
    /// forgotten oldest arrival first, whatever the order of their decisions.
    #[test]
    fn resident_decisions_leave_oldest_arrival_first() {
        let mut r = ResidentDecisions::default();
        r.insert(2, id(2), Resident::NotKept);
        r.insert(0, id(0), Resident::Kept(Stage::Certain));
        r.insert(1, id(1), Resident::NotKept);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(0), Some(Resident::Kept(Stage::Certain)));
        assert_eq!(r.oldest_arrival(), Some(0));
        assert_eq!(r.pop_oldest(), Some(id(0)));
        assert_eq!(r.pop_oldest(), Some(id(1)));
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(2), Some(Resident::NotKept));
        assert_eq!(r.len(), 1);
        // 40 B a held trace in the queue (README: 80 to 120 B with its table entry), the block allocated whole.
        assert_eq!(std::mem::size_of::<Held>(), 40);
        assert_eq!(r.bytes(), FIRST_BLOCK * 40);
        assert_eq!(r.pop_oldest(), Some(id(2)));
        assert!(r.is_empty() && r.pop_oldest().is_none() && r.oldest_arrival().is_none());
        assert_eq!(r.bytes(), 0);
    }

    /// Scenario: three blocks' worth of decisions, mostly in arrival order with some decided early and some
    /// late, interleaved with pushes-out and lookups (hits, misses, arrivals already gone). Guarantee: it acts as
    /// one map ordered by arrival (the B-tree it replaced).
    #[test]
    fn resident_decisions_act_as_one_ordered_map() {
        let mut r = ResidentDecisions::default();
        let mut model: BTreeMap<u64, (u128, Resident)> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pending: Vec<u64> = Vec::new();
        for arrival in 0..(3 * BLOCK as u64 + 100) {
            pending.push(arrival);
            // Decide the oldest pending most of the time, sometimes the newest (early) or a random one.
            while pending.len() > 8 || (!pending.is_empty() && next() % 4 == 0) {
                let i = match next() % 10 {
                    0 => pending.len() - 1,
                    1 => (next() % pending.len() as u64) as usize,
                    _ => 0,
                };
                let a = pending.remove(i);
                let outcome = if a % 3 == 0 {
                    Resident::Kept(Stage::Threshold(a))
                } else {
                    Resident::NotKept
                };
                r.insert(a, id(a), outcome);
                model.insert(a, (id(a), outcome));
            }
            if next() % 5 == 0 {
                assert_eq!(r.oldest_arrival(), model.first_key_value().map(|(&a, _)| a));
                assert_eq!(r.pop_oldest(), model.pop_first().map(|(_, (i, _))| i));
            }
            let probe = next() % (arrival + 2);
            assert_eq!(r.get(probe), model.get(&probe).map(|&(_, o)| o), "{probe}");
            assert_eq!(r.len(), model.len());
        }
        assert!(!r.out_of_order.is_empty() && r.blocks.len() > 1);
        assert!(
            r.blocks.iter().any(|b| b.capacity() == BLOCK),
            "blocks grow to BLOCK"
        );
        let room: usize = r.blocks.iter().map(Vec::capacity).sum();
        assert_eq!(
            r.bytes(),
            room * 40 + r.out_of_order.len() * OUT_OF_ORDER_BYTES
        );
        // `queued_after` walks the blocks as one queue (its first entries gone), past their ends to `None`.
        let queued: Vec<u128> = r
            .blocks
            .iter()
            .flatten()
            .skip(r.head)
            .map(Held::id)
            .collect();
        assert_eq!(queued.len(), r.queued);
        for n in (0..queued.len()).step_by(97).chain([queued.len() - 1]) {
            assert_eq!(r.queued_after(n), Some(queued[n]), "{n}");
        }
        assert_eq!(r.queued_after(queued.len()), None);
        while let Some((_, (i, _))) = model.pop_first() {
            assert_eq!(r.pop_oldest(), Some(i));
        }
        assert!(r.is_empty() && r.pop_oldest().is_none());
        assert_eq!(r.bytes(), 0);
    }

    /// Scenario: a filter sized for 100k IDs takes a million. Guarantees: the last 100k are all remembered,
    /// memory stays under 8 bytes per configured ID, and false positives are rare.
    #[test]
    fn not_sampled_filter_remembers_the_recent_ids() {
        let size = 100_000;
        let mut f = NotSampledFilter::new(size);
        for n in 0..1_000_000 {
            f.insert(id(n));
        }
        for n in (1_000_000 - size as u64)..1_000_000 {
            assert!(f.contains(id(n)), "recent id {n} forgotten");
        }
        assert!(f.bytes() <= 8 * size, "{} bytes for {size}", f.bytes());
        let false_positives = (2_000_000..3_000_000)
            .filter(|n| f.contains(id(*n)))
            .count();
        assert!(
            false_positives <= 5,
            "{false_positives} false positives in 1M lookups"
        );
    }

    #[test]
    fn filter_off_remembers_nothing() {
        let mut f = NotSampledFilter::new(0);
        f.insert(id(1));
        assert!(!f.contains(id(1)));
        assert_eq!(f.bytes(), 0);
    }
}
