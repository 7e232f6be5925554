//! A shard's table of trace IDs, in parts that grow one at a time.
//!
//! A hash table grows by doubling and rehashes every entry it holds as it does, under the shard's lock: one table
//! took 61 ms to grow past 1.8 M entries (31 ms past 0.9 M) on the benchmark machine, and for that long neither a
//! request nor a decision round could take the shard: the 99th percentile of request latency and decision lag
//! at 1.25 M spans/s was such a pause. In `PARTS` parts, chosen by the trace ID's bits, each part holds about a
//! sixteenth of the traces and grows alone, for a sixteenth of the pause; lookups cost the same.

use std::collections::HashMap;

use ahash::RandomState;

/// Parts of a table (a power of two).
const PARTS: usize = 16;

/// A trace ID as the table's key: two `u64`s, so an entry is 24 bytes (a `u128` key aligns it to 32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Key(u64, u64);

impl Key {
    #[inline]
    pub(crate) fn of(id: u128) -> Self {
        Key((id >> 64) as u64, id as u64)
    }

    /// The part holding this key: both halves mixed, since some senders fill one half (64-bit IDs padded with
    /// zeros, a timestamp in the first bytes, the benchmark's pass number).
    #[inline]
    fn part(&self) -> usize {
        ((self.0 ^ self.1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - PARTS.trailing_zeros()))
            as usize
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128((u128::from(self.0) << 64) | u128::from(self.1));
    }
}

/// Trace ID → a `u64` the shard gives meaning to (see `Shard::table`).
pub(crate) struct TraceTable {
    parts: Vec<HashMap<Key, u64, RandomState>>,
    len: usize,
}

impl Default for TraceTable {
    fn default() -> Self {
        // One hasher for every part: its seed is random per table, as before.
        let hasher = RandomState::new();
        TraceTable {
            parts: (0..PARTS)
                .map(|_| HashMap::with_hasher(hasher.clone()))
                .collect(),
            len: 0,
        }
    }
}

impl TraceTable {
    #[inline]
    pub(crate) fn get(&self, key: &Key) -> Option<&u64> {
        self.parts[key.part()].get(key)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut u64> {
        self.parts[key.part()].get_mut(key)
    }

    #[inline]
    pub(crate) fn insert(&mut self, key: Key, value: u64) -> Option<u64> {
        let old = self.parts[key.part()].insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    #[inline]
    pub(crate) fn remove(&mut self, key: &Key) -> Option<u64> {
        let old = self.parts[key.part()].remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    /// Sets the value of `key` if it is in the table (`Some`), or removes it (`None`).
    #[inline]
    pub(crate) fn replace_or_remove(&mut self, key: &Key, value: Option<u64>) {
        match value {
            Some(v) => {
                if let Some(old) = self.get_mut(key) {
                    *old = v;
                }
            }
            None => {
                self.remove(key);
            }
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the parts' buckets take: an entry and a control byte each, at most 7/8 of them full.
    pub(crate) fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| (p.capacity() * 8 / 7) * (std::mem::size_of::<(Key, u64)>() + 1))
            .sum()
    }

    /// The largest part's entries (its next growth rehashes that many).
    #[cfg(test)]
    fn largest_part(&self) -> usize {
        self.parts.iter().map(HashMap::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guarantees: entries are found, changed and removed as in one map, `len` counts them; IDs that differ only
    /// in one half (zero-padded 64-bit IDs, a constant first half) still spread over every part.
    #[test]
    fn parts_act_as_one_table_and_share_the_traces() {
        for shape in [
            |n: u64| Key::of(u128::from(n.wrapping_mul(0x2545_f491_4f6c_dd1d))), // 64-bit IDs, zero-padded
            |n: u64| Key::of(0xabcd_u128 << 112 | u128::from(n)), // a constant prefix, sequential
            |n: u64| Key::of(u128::from(n) << 64),                // only the first half varies
        ] {
            let mut t = TraceTable::default();
            let mut model = HashMap::new();
            for n in 0..16_000u64 {
                assert_eq!(t.insert(shape(n), n), model.insert(shape(n), n));
            }
            for n in (0..16_000u64).step_by(3) {
                assert_eq!(t.remove(&shape(n)), model.remove(&shape(n)));
                assert_eq!(t.remove(&shape(n)), None);
            }
            for n in (1..16_000u64).step_by(3) {
                *t.get_mut(&shape(n)).unwrap() += 1;
                *model.get_mut(&shape(n)).unwrap() += 1;
            }
            assert_eq!(t.insert(shape(1), 7), model.insert(shape(1), 7));
            assert_eq!(t.len(), model.len());
            for n in 0..16_000u64 {
                assert_eq!(t.get(&shape(n)), model.get(&shape(n)), "{n}");
            }
            // Each part near a sixteenth of the entries (1,000 on average here).
            assert!(t.largest_part() < 1_400, "{}", t.largest_part());
            assert!(t.bytes() >= t.len() * 25);
        }
    }
}
