//! A shard's table of trace IDs: open addressing with the key and its value in one entry, in parts that grow one
//! at a time.
//!
//! Why not a `HashMap`: at the rates this engine runs, the table is far larger than the cache and each new trace
//! looks it up (a miss), inserts into it and, once `num_traces` is full, removes the oldest held ID (another miss).
//! hashbrown keeps its control bytes apart from its entries, so each access is two misses, and where an entry
//! lives is not known before the access. Here an entry's address follows from the hash alone, so `prefetch` can
//! ask for a payload's lines before they are read and their misses overlap instead of stalling one by one (the
//! profile at 1.4 M spans/s spent ~11 % of the receivers in the table's removals, ~5 % of the service at 50 k
//! spans/s in its lookups).
//!
//! Linear probing, at most 5/8 full (a miss reads about four entries, 100 B, a hit about two), removal by
//! shifting the entries after the hole back (no tombstones: probe lengths stay what the load gives).
//!
//! Parts: a table grows by doubling and reinserts every entry it holds as it does, under the shard's lock: one
//! table took 61 ms to grow past 1.8 M entries (31 ms past 0.9 M) on the benchmark machine, and for that long
//! neither a request nor a decision round could take the shard. In `PARTS` parts, chosen by the trace ID's bits,
//! each part holds about a sixteenth of the traces and grows alone, for a sixteenth of the pause.

use ahash::RandomState;

/// Parts of a table (a power of two).
const PARTS: usize = 16;
/// A part's first allocation, in entries.
const MIN_ENTRIES: usize = 16;

/// A trace ID as the table's key: two `u64`s, so an entry is 24 bytes (a `u128` key aligns it to 32).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Key(u64, u64);

impl Key {
    /// Marks an empty entry. The all-zero trace ID is invalid (the decoder rejects it), but the table still holds
    /// it correctly, apart from the entries (`TraceTable::zero`).
    const EMPTY: Key = Key(0, 0);

    #[inline]
    pub(crate) fn of(id: u128) -> Self {
        Key((id >> 64) as u64, id as u64)
    }

    /// The part holding this key: both halves mixed, since some senders fill one half (64-bit IDs padded with
    /// zeros, a timestamp in the first bytes, the benchmark's pass number). Not from the seeded hash, so that
    /// two tables holding the same IDs take the same memory.
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

#[derive(Clone, Copy, Default)]
struct Entry {
    key: Key,
    value: u64,
}

/// One part: `entries.len()` is 0 or a power of two.
#[derive(Default)]
struct Part {
    entries: Vec<Entry>,
    len: usize,
}

impl Part {
    #[inline]
    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The index holding `key`, or `Err` with the empty entry ending its probe (the part must not be empty).
    #[inline]
    fn probe(&self, key: &Key, hash: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let e = &self.entries[i];
            if e.key == *key {
                return Ok(i);
            }
            if e.key == Key::EMPTY {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }
}

/// Trace ID → a `u64` the shard gives meaning to (see `Shard::table`).
pub(crate) struct TraceTable {
    parts: Vec<Part>,
    /// The value of the all-zero ID, which marks empty entries.
    zero: Option<u64>,
    len: usize,
    hasher: RandomState,
}

impl Default for TraceTable {
    fn default() -> Self {
        TraceTable {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
            zero: None,
            len: 0,
            hasher: RandomState::new(), // its seed is random per table: IDs chosen to collide cannot be aimed
        }
    }
}

impl TraceTable {
    #[inline]
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The part and index holding `key` (not the all-zero ID, which is held apart).
    #[inline]
    fn locate(&self, key: &Key) -> Option<(usize, usize)> {
        let p = key.part();
        if self.parts[p].len == 0 {
            return None;
        }
        self.parts[p]
            .probe(key, self.hash(key))
            .ok()
            .map(|i| (p, i))
    }

    #[inline]
    pub(crate) fn get(&self, key: &Key) -> Option<&u64> {
        if *key == Key::EMPTY {
            return self.zero.as_ref();
        }
        let (p, i) = self.locate(key)?;
        Some(&self.parts[p].entries[i].value)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut u64> {
        if *key == Key::EMPTY {
            return self.zero.as_mut();
        }
        let (p, i) = self.locate(key)?;
        Some(&mut self.parts[p].entries[i].value)
    }

    /// Asks the cache for the lines `key`'s lookup will read, without waiting for them: called a few traces
    /// ahead of their lookups, the misses overlap.
    #[inline]
    pub(crate) fn prefetch(&self, key: &Key) {
        let part = &self.parts[key.part()];
        if part.entries.is_empty() {
            return;
        }
        let entry = &part.entries[self.hash(key) as usize & part.mask()];
        prefetch_lines(entry);
    }

    #[inline]
    pub(crate) fn insert(&mut self, key: Key, value: u64) -> Option<u64> {
        if key == Key::EMPTY {
            let old = self.zero.replace(value);
            self.len += usize::from(old.is_none());
            return old;
        }
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let part = &mut self.parts[key.part()];
        // At most 5/8 full after this insert.
        if (part.len + 1) * 8 > part.entries.len() * 5 {
            grow(part, hasher);
        }
        match part.probe(&key, hash) {
            Ok(i) => Some(std::mem::replace(&mut part.entries[i].value, value)),
            Err(i) => {
                part.entries[i] = Entry { key, value };
                part.len += 1;
                self.len += 1;
                None
            }
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, key: &Key) -> Option<u64> {
        if *key == Key::EMPTY {
            let old = self.zero.take();
            self.len -= usize::from(old.is_some());
            return old;
        }
        let (p, mut hole) = self.locate(key)?;
        let hasher = &self.hasher;
        let part = &mut self.parts[p];
        let old = part.entries[hole].value;
        // Backward shift: each entry after the hole, up to the next empty one, moves into the hole when the hole
        // lies between its home and where it is (so every probe still finds it before an empty entry).
        let mask = part.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = part.entries[j];
            if e.key == Key::EMPTY {
                break;
            }
            let home = hasher.hash_one(e.key) as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                part.entries[hole] = e;
                hole = j;
            }
        }
        part.entries[hole] = Entry::default();
        part.len -= 1;
        self.len -= 1;
        Some(old)
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

    /// Bytes the parts' entries take (between 5/16 and 5/8 of them full once grown).
    pub(crate) fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.entries.capacity() * std::mem::size_of::<Entry>())
            .sum()
    }

    /// The largest part's entries (its next growth reinserts that many).
    #[cfg(test)]
    fn largest_part(&self) -> usize {
        self.parts.iter().map(|p| p.len).max().unwrap_or(0)
    }
}

/// Doubles a part's entries (or makes its first ones) and reinserts what it holds.
#[cold]
fn grow(part: &mut Part, hasher: &RandomState) {
    let size = (part.entries.len() * 2).max(MIN_ENTRIES);
    let old = std::mem::replace(&mut part.entries, vec![Entry::default(); size]);
    for e in old.into_iter().filter(|e| e.key != Key::EMPTY) {
        if let Err(i) = part.probe(&e.key, hasher.hash_one(e.key)) {
            part.entries[i] = e;
        }
    }
}

/// Prefetches the line(s) of one entry (24 bytes: a third of them cross a line).
#[inline]
fn prefetch_lines(entry: &Entry) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = (entry as *const Entry).cast::<i8>();
        let last = first.wrapping_add(std::mem::size_of::<Entry>() - 1);
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = entry;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
                t.prefetch(&shape(n));
            }
            // Each part near a sixteenth of the entries (1,000 on average here).
            assert!(t.largest_part() < 1_400, "{}", t.largest_part());
            assert!(t.bytes() >= t.len() * 24 * 8 / 5);
        }
    }

    /// Scenario: random inserts, removals and lookups against a `HashMap`, in a table small enough that probe
    /// runs wrap around the end of a part and removals shift long runs back; the all-zero ID among them.
    /// Guarantees: every answer and `len` match the model's after every step.
    #[test]
    fn matches_a_map_under_random_changes() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = TraceTable::default();
        let mut model: HashMap<Key, u64> = HashMap::new();
        // 600 possible IDs (the all-zero one among them), so inserts, hits and removals all happen often.
        let id = |r: u64| {
            let n = r % 600;
            if n == 0 {
                Key::EMPTY
            } else {
                Key::of(u128::from(n) * 0x0001_0000_0000_0000_0001 + (u128::from(n) << 100))
            }
        };
        for step in 0..200_000u32 {
            let r = next();
            let k = id(r >> 8);
            match r % 4 {
                0 | 1 => assert_eq!(
                    t.insert(k, u64::from(step)),
                    model.insert(k, u64::from(step))
                ),
                2 => assert_eq!(t.remove(&k), model.remove(&k)),
                _ => {
                    let v = if r & 16 == 0 {
                        None
                    } else {
                        Some(u64::from(step))
                    };
                    t.replace_or_remove(&k, v);
                    match v {
                        Some(v) => {
                            if let Some(old) = model.get_mut(&k) {
                                *old = v;
                            }
                        }
                        None => {
                            model.remove(&k);
                        }
                    }
                }
            }
            assert_eq!(t.len(), model.len(), "step {step}");
            assert_eq!(t.get(&k), model.get(&k), "step {step}");
        }
        for n in 0..600 {
            assert_eq!(t.get(&id(n)), model.get(&id(n)), "{n}");
        }
        assert_eq!(
            t.parts.iter().map(|p| p.len).sum::<usize>() + usize::from(t.zero.is_some()),
            t.len()
        );
    }
}
