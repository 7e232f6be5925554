//! Mergeable quantile sketch (DDSketch, Masson, Rim & Lee, VLDB 2019) and a sliding-window wrapper, for the
//! `latency_percentile` policy: "is this trace slower than the rolling p99 of its group?".
//!
//! # Mapping
//!
//! With relative accuracy α and γ = (1 + α) / (1 − α), a value x ≥ [`MIN_INDEXABLE`] is counted in bucket
//! i = ⌈ln x / ln γ⌉, which covers (γ^(i−1), γ^i]. A quantile is answered with the representative of the bucket
//! holding the rank, 2γ^i / (γ + 1) = γ^i·(1 − α), which is within α·x of **every** x in that bucket. Values
//! below [`MIN_INDEXABLE`] (durations of 0 ns) share one zero bucket and are reported as `0.0`.
//!
//! # Error bound
//!
//! Rank convention as in DDSketch: for q ∈ [0, 1] over n values, rank = q·(n − 1) and the answer is the first
//! bucket whose cumulative count exceeds rank, i.e. the bucket of the sorted value x = v[⌊q·(n − 1)⌋]. So
//! |x̂ − x| ≤ α·x (up to float rounding, ~10^-15 relative, for x on a bucket edge). With the default α = 1 % ([`DEFAULT_RELATIVE_ACCURACY`]) that is half the 2 % the policy
//! promises. The bound is unconditional except for the collapse: a sketch keeps at most [`MAX_BUCKETS`] buckets
//! and folds the *lowest* ones into one when its data spans more than γ^2048 (≈ 6·10^17 at α = 1 %, i.e. 1 ns to
//! 19 years — never, for real latencies). Quantiles falling into the folded bucket are overestimated; the ones
//! above it, p99 in particular, keep the α bound.
//!
//! # Memory
//!
//! Counts are `u32` in a dense vector over the index range seen, so a sketch costs ≈ ln(max/min) / ln γ
//! buckets × 4 B: durations spread over 1 ms–10 s need ln(10^4) / 0.0200 ≈ **461 buckets ≈ 1.8 KiB**, plus
//! up to 25 % + 32 buckets of growth slack and 80 B inline (measured: 2.5 KiB; a 5-slice window of such
//! durations, 6 sketches, ≈ 14 KiB). The hard cap is 2048 × 4 B = 8 KiB of counts. `add` only allocates when
//! the index range grows beyond the vector (amortised, bounded by the cap). A bucket saturates at 2^32 − 1
//! values (the excess is not counted), far beyond a window's worth of one group's traces.
//!
//! # Sliding window
//!
//! [`WindowedSketch`] splits a window W into n slices of s = ⌈W / n⌉ ns (so the window is n·s, which is W when n
//! divides it). Slice k holds the values added while ⌊now / s⌋ = k; a running total holds the sum of the live
//! slices, so a query reads one sketch. A value added at time t is counted by a query at time `now` while
//! ⌊now / s⌋ − ⌊t / s⌋ < n: always while now − t ≤ W − s, never once now − t ≥ W, and in between depending on
//! where t fell in its slice. In other words a query covers (now − W, now] rounded down to the slice grid: the
//! values added since the start of the oldest live slice, (⌊now / s⌋ − n + 1)·s.

use std::mem::size_of;

/// Relative accuracy used by the policy unless configured: 1 %, half of the promised 2 %.
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.01;

/// Values below this (ns) all fall in one zero bucket, reported as `0.0`.
///
/// 1 ns rather than 1 µs: durations are whole nanoseconds, so the only value this lumps together is 0, while
/// in-process spans of a few hundred ns keep their 1 % resolution. The cost is nil, as the dense store only
/// spans the indices actually seen, and 1 ns–19 years still fits in [`MAX_BUCKETS`] at α = 1 %.
pub const MIN_INDEXABLE: f64 = 1.0;

/// Bucket count cap per sketch: beyond it the LOWEST buckets are collapsed into one (high quantiles stay exact to
/// α). 2048 buckets cover a ratio of γ^2048 ≈ 6·10^17 at α = 1 %.
pub const MAX_BUCKETS: usize = 2048;

/// `DDSketch::new` clamps the relative accuracy into [`MIN_RELATIVE_ACCURACY`, `MAX_RELATIVE_ACCURACY`]: below
/// 10^-6 the bucket indices of large values would not fit an `i32` and 2048 buckets would cover almost nothing.
pub const MIN_RELATIVE_ACCURACY: f64 = 1e-6;
/// Above 50 % a "quantile" is no more than an order of magnitude.
pub const MAX_RELATIVE_ACCURACY: f64 = 0.5;

/// Slices per window beyond which `WindowedSketch::new` clamps (each slice is a sketch of its own).
pub const MAX_SLICES: usize = 1024;

/// Room for the largest index (f64::MAX at α = 10^-6 is ≈ 3.6·10^8) plus a buffer's length without overflow.
const MAX_INDEX: i32 = i32::MAX / 4;

/// Buckets a store grows by beyond what it needs, on top of 25 %: fewer reallocations while a range settles.
const GROWTH_SLACK: usize = 32;

/// A DDSketch with a dense, collapsing-lowest store of `u32` counts.
#[derive(Debug, Clone)]
pub struct DDSketch {
    alpha: f64,
    /// ln γ, the width of a bucket in log space.
    ln_gamma: f64,
    /// ln(1 − α): the representative of bucket i is exp(i·ln γ + ln(1 − α)), computed so it cannot overflow
    /// before the final clamp.
    ln_repr: f64,
    /// `counts[k]` is the count of bucket `offset + k`. Every cell outside [`min_key`, `max_key`] is zero.
    counts: Vec<u32>,
    offset: i32,
    /// Lowest and highest non-empty buckets; meaningful only while some value is in a bucket (not the zero one).
    min_key: i32,
    max_key: i32,
    zero_count: u64,
    /// `zero_count` + the sum of `counts`, kept exact (saturated adds are not counted).
    count: u64,
}

impl DDSketch {
    /// An empty sketch with relative accuracy `relative_accuracy`, which the caller validates to be in (0, 1);
    /// it is clamped into [`MIN_RELATIVE_ACCURACY`, `MAX_RELATIVE_ACCURACY`] (NaN gives the default) rather
    /// than panicking. Does not allocate: the store is allocated by the first non-zero value.
    pub fn new(relative_accuracy: f64) -> Self {
        let alpha = if relative_accuracy.is_nan() {
            DEFAULT_RELATIVE_ACCURACY
        } else {
            relative_accuracy.clamp(MIN_RELATIVE_ACCURACY, MAX_RELATIVE_ACCURACY)
        };
        // γ − 1 = 2α / (1 − α); ln_1p keeps ln γ precise for small α.
        let ln_gamma = (2.0 * alpha / (1.0 - alpha)).ln_1p();
        DDSketch {
            alpha,
            ln_gamma,
            ln_repr: (-alpha).ln_1p(),
            counts: Vec::new(),
            offset: 0,
            min_key: 0,
            max_key: 0,
            zero_count: 0,
            count: 0,
        }
    }

    /// Counts `value`. NaN and negative values are ignored (a duration cannot be either; counting them
    /// anywhere would bias the quantiles). Values below [`MIN_INDEXABLE`] go to the zero bucket; +∞ is clamped
    /// to `f64::MAX`, so it lands in the top bucket.
    pub fn add(&mut self, value: f64) {
        if value.is_nan() || value < 0.0 {
            return;
        }
        if value < MIN_INDEXABLE {
            self.zero_count = self.zero_count.saturating_add(1);
            self.count = self.count.saturating_add(1);
            return;
        }
        let idx = self.index(value.min(f64::MAX));
        let idx = if self.bin_count() > 0 && (self.min_key..=self.max_key).contains(&idx) {
            idx
        } else {
            // Outside the range seen: extend it. Below a collapsed floor, the value joins the floor bucket.
            idx.max(self.ensure_range(idx, idx))
        };
        let pos = (idx - self.offset) as usize;
        let added = add_saturating(&mut self.counts[pos], 1);
        self.count += added;
    }

    /// Adds `other`'s counts to this sketch, as if its values had been added here. Both must have the same
    /// relative accuracy (checked in debug builds only; otherwise the buckets are mismatched, not unsafe).
    pub fn merge(&mut self, other: &DDSketch) {
        debug_assert!(
            self.ln_gamma.to_bits() == other.ln_gamma.to_bits(),
            "merging sketches of different relative accuracy"
        );
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.count = self.count.saturating_add(other.zero_count);
        if other.bin_count() == 0 {
            return;
        }
        let floor = self.ensure_range(other.min_key, other.max_key);
        for (k, &c) in other.bins().iter().enumerate() {
            if c == 0 {
                continue;
            }
            // Buckets of `other` below the floor were collapsed here.
            let idx = (other.min_key + k as i32).max(floor);
            let pos = (idx - self.offset) as usize;
            let added = add_saturating(&mut self.counts[pos], u64::from(c));
            self.count += added;
        }
    }

    /// Removes counts previously merged in from `other` (how the window drops an expired slice). Saturating:
    /// a bucket never goes below zero. A bucket of `other` below this sketch's lowest one is taken from the
    /// lowest, which is where a collapse folded it.
    pub fn subtract(&mut self, other: &DDSketch) {
        let z = self.zero_count.min(other.zero_count);
        self.zero_count -= z;
        self.count -= z;
        if other.bin_count() == 0 || self.bin_count() == 0 {
            return;
        }
        for (k, &c) in other.bins().iter().enumerate() {
            if c == 0 {
                continue;
            }
            let i = other.min_key + k as i32;
            if i > self.max_key {
                continue;
            }
            let pos = (i.max(self.min_key) - self.offset) as usize;
            let cell = &mut self.counts[pos];
            let removed = (*cell).min(c);
            *cell -= removed;
            self.count -= u64::from(removed);
        }
        self.trim();
    }

    /// Values counted (including zeros).
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The q-quantile, within α of the true value of rank ⌊q·(count − 1)⌋ (see the module doc); `None` when
    /// empty or when q is NaN. q is clamped into [0, 1]. For q > 0.5 the buckets are scanned from the top,
    /// as p99 is the usual question.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = q * (self.count - 1) as f64;
        let bucket = if q > 0.5 {
            self.rank_bucket_from_top(rank)
        } else {
            self.rank_bucket_from_bottom(rank)
        };
        Some(bucket.map_or(0.0, |i| self.representative(i)))
    }

    /// Empties the sketch, keeping its allocation.
    pub fn clear(&mut self) {
        if self.bin_count() > 0 {
            let (a, b) = self.bin_positions();
            self.counts[a..=b].fill(0);
        }
        self.zero_count = 0;
        self.count = 0;
    }

    /// Bytes used, inline and on the heap.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.heap_bytes()
    }

    /// The relative accuracy α in effect (after clamping).
    pub fn relative_accuracy(&self) -> f64 {
        self.alpha
    }

    /// Buckets between the lowest and the highest non-empty one (the zero bucket aside): at most
    /// [`MAX_BUCKETS`].
    pub fn bucket_count(&self) -> usize {
        if self.bin_count() == 0 {
            0
        } else {
            (self.max_key - self.min_key) as usize + 1
        }
    }

    fn heap_bytes(&self) -> usize {
        self.counts.capacity() * size_of::<u32>()
    }

    /// Values in buckets other than the zero one.
    fn bin_count(&self) -> u64 {
        self.count - self.zero_count
    }

    /// Positions in `counts` of `min_key` and `max_key`; only while `bin_count() > 0`.
    fn bin_positions(&self) -> (usize, usize) {
        (
            (self.min_key - self.offset) as usize,
            (self.max_key - self.offset) as usize,
        )
    }

    /// The counts from `min_key` to `max_key` (empty when no value is in a bucket).
    fn bins(&self) -> &[u32] {
        if self.bin_count() == 0 {
            return &[];
        }
        let (a, b) = self.bin_positions();
        &self.counts[a..=b]
    }

    /// Bucket of a finite value ≥ `MIN_INDEXABLE`: ⌈ln x / ln γ⌉ ≥ 0.
    fn index(&self, value: f64) -> i32 {
        (value.ln() / self.ln_gamma)
            .ceil()
            .clamp(0.0, f64::from(MAX_INDEX)) as i32
    }

    /// γ^i·(1 − α) = 2γ^i / (γ + 1), the value within α of all of bucket i.
    fn representative(&self, i: i32) -> f64 {
        (f64::from(i) * self.ln_gamma + self.ln_repr)
            .exp()
            .min(f64::MAX)
    }

    /// First bucket (`None`: the zero bucket) whose cumulative count exceeds `rank`.
    fn rank_bucket_from_bottom(&self, rank: f64) -> Option<i32> {
        let mut cum = self.zero_count;
        if cum as f64 > rank {
            return None;
        }
        for (k, &c) in self.bins().iter().enumerate() {
            cum += u64::from(c);
            if cum as f64 > rank {
                return Some(self.min_key + k as i32);
            }
        }
        // Unreachable while `count` is exact, as rank ≤ count − 1.
        Some(self.max_key)
    }

    /// The same bucket, found from the top: the highest non-empty bucket with at most `rank` values below it.
    fn rank_bucket_from_top(&self, rank: f64) -> Option<i32> {
        let mut below = self.count;
        for (k, &c) in self.bins().iter().enumerate().rev() {
            if c == 0 {
                continue;
            }
            below -= u64::from(c);
            if below as f64 <= rank {
                return Some(self.min_key + k as i32);
            }
        }
        None
    }

    /// Makes [`min_key`, `max_key`] cover [`lo`, `hi`] (lo ≤ hi), moving or growing the store as needed. If that
    /// spans more than `MAX_BUCKETS`, the lowest buckets are folded into the new floor `hi − MAX_BUCKETS + 1`.
    /// Returns the lowest bucket index now kept: callers add a value of a lower index there. Leaves `min_key`
    /// and `max_key` at the new bounds, which the caller's own add makes non-empty if they were not already.
    fn ensure_range(&mut self, lo: i32, hi: i32) -> i32 {
        let mut data = (self.bin_count() > 0).then_some((self.min_key, self.max_key));
        let (mut lo, hi) = match data {
            Some((a, b)) => (lo.min(a), hi.max(b)),
            None => (lo, hi),
        };
        let mut carry = 0u64;
        if i64::from(hi) - i64::from(lo) + 1 > MAX_BUCKETS as i64 {
            let floor = hi - (MAX_BUCKETS as i32 - 1);
            if let Some((a, b)) = data {
                if a < floor {
                    let end = b.min(floor - 1);
                    let (pa, pe) = ((a - self.offset) as usize, (end - self.offset) as usize);
                    for c in &mut self.counts[pa..=pe] {
                        carry += u64::from(*c);
                        *c = 0;
                    }
                    data = (b >= floor).then_some((floor, b));
                }
            }
            lo = floor;
        }
        if lo < self.offset || i64::from(hi) >= i64::from(self.offset) + self.counts.len() as i64 {
            self.relayout(lo, hi, data);
        }
        self.min_key = lo;
        self.max_key = hi;
        if carry > 0 {
            let pos = (lo - self.offset) as usize;
            let added = add_saturating(&mut self.counts[pos], carry);
            self.count -= carry - added;
        }
        lo
    }

    /// Places [`lo`, `hi`] (at most `MAX_BUCKETS` wide) inside `counts`, centred in the slack, growing the
    /// vector if it is too short, and moves the non-empty cells `data` (a sub-range) along.
    fn relayout(&mut self, lo: i32, hi: i32, data: Option<(i32, i32)>) {
        let needed = (hi - lo) as usize + 1;
        let old_offset = self.offset;
        if needed > self.counts.len() {
            let new_len = (needed + needed / 4 + GROWTH_SLACK).min(MAX_BUCKETS);
            self.counts.reserve_exact(new_len - self.counts.len());
            self.counts.resize(new_len, 0);
        }
        let new_offset = lo - ((self.counts.len() - needed) / 2) as i32;
        if let Some((a, b)) = data {
            let n = (b - a) as usize + 1;
            let src = (a - old_offset) as usize;
            let dst = (a - new_offset) as usize;
            self.counts.copy_within(src..src + n, dst);
            // Zero the cells the data left, so everything outside [min_key, max_key] stays zero.
            if dst > src {
                self.counts[src..dst.min(src + n)].fill(0);
            } else if dst < src {
                self.counts[(dst + n).max(src)..src + n].fill(0);
            }
        }
        self.offset = new_offset;
    }

    /// Moves `min_key` / `max_key` in past buckets emptied by `subtract`.
    fn trim(&mut self) {
        if self.bin_count() == 0 {
            return;
        }
        while self.counts[(self.min_key - self.offset) as usize] == 0 {
            self.min_key += 1;
        }
        while self.counts[(self.max_key - self.offset) as usize] == 0 {
            self.max_key -= 1;
        }
    }
}

/// Adds up to `n` to `cell` without overflowing; returns what was added.
fn add_saturating(cell: &mut u32, n: u64) -> u64 {
    let added = n.min(u64::from(u32::MAX - *cell));
    *cell += added as u32;
    added
}

/// A [`DDSketch`] over a sliding window: a ring of per-slice sketches plus their running total (see the module
/// doc for exactly which values count). Time is the caller's clock in ns; it should not run backwards (a value
/// added "in the past" goes into the newest slice), and a jump of a window or more clears everything.
#[derive(Debug, Clone)]
pub struct WindowedSketch {
    /// Slice for epoch k (= ⌊time / slice_ns⌋) at `k mod n`.
    slices: Vec<DDSketch>,
    /// Sum of the live slices: added to on `add`, an expiring slice subtracted.
    total: DDSketch,
    slice_ns: i64,
    /// Epoch of the newest slice; `None` before the first call.
    epoch: Option<i64>,
}

impl WindowedSketch {
    /// A window of `window_ns` ns (at least 1) in `slices` slices (clamped into 1..=[`MAX_SLICES`]) of
    /// ⌈window_ns / slices⌉ ns each. The caller validates; nothing here panics.
    pub fn new(relative_accuracy: f64, window_ns: i64, slices: usize) -> Self {
        let n = slices.clamp(1, MAX_SLICES);
        let window_ns = window_ns.max(1);
        let n64 = n as i64;
        let slice_ns = window_ns / n64 + i64::from(window_ns % n64 != 0);
        let sketch = DDSketch::new(relative_accuracy);
        WindowedSketch {
            slices: vec![sketch.clone(); n],
            total: sketch,
            slice_ns,
            epoch: None,
        }
    }

    /// Counts `value` (as [`DDSketch::add`]) at time `now`, after expiring the slices that ended.
    pub fn add(&mut self, value: f64, now: i64) {
        self.advance(now);
        let slot = self.current_slot();
        self.slices[slot].add(value);
        self.total.add(value);
    }

    /// The q-quantile of the values in the window at `now` (as [`DDSketch::quantile`]); `None` when none.
    pub fn quantile(&mut self, q: f64, now: i64) -> Option<f64> {
        self.advance(now);
        self.total.quantile(q)
    }

    /// Values in the window at `now`.
    pub fn count(&mut self, now: i64) -> u64 {
        self.advance(now);
        self.total.count()
    }

    /// Bytes used by the ring and all its sketches.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.slices.capacity() * size_of::<DDSketch>()
            + self.slices.iter().map(DDSketch::heap_bytes).sum::<usize>()
            + self.total.heap_bytes()
    }

    pub fn relative_accuracy(&self) -> f64 {
        self.total.relative_accuracy()
    }

    /// The window actually covered, slices × slice length (≥ the requested one, equal when it divides).
    pub fn window_ns(&self) -> i64 {
        self.slice_ns.saturating_mul(self.slices.len() as i64)
    }

    pub fn slice_ns(&self) -> i64 {
        self.slice_ns
    }

    fn current_slot(&self) -> usize {
        self.epoch.unwrap_or(0).rem_euclid(self.slices.len() as i64) as usize
    }

    /// Moves the newest slice to `now`'s epoch, subtracting and clearing each slice that expires on the way.
    fn advance(&mut self, now: i64) {
        let e = now.div_euclid(self.slice_ns);
        let Some(cur) = self.epoch else {
            self.epoch = Some(e);
            return;
        };
        if e <= cur {
            return;
        }
        let n = self.slices.len() as i64;
        if e.saturating_sub(cur) >= n {
            // Every slice expired: no need to subtract them one by one.
            for s in &mut self.slices {
                s.clear();
            }
            self.total.clear();
        } else {
            for k in cur + 1..=e {
                let slot = k.rem_euclid(n) as usize;
                self.total.subtract(&self.slices[slot]);
                self.slices[slot].clear();
            }
            if !self.total.is_empty() && self.slices.iter().all(DDSketch::is_empty) {
                // Only reachable after saturated counts: do not let the total drift from its slices.
                self.total.clear();
            }
        }
        self.epoch = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const S: i64 = 1_000_000_000;
    const QS: [f64; 13] = [
        0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0,
    ];

    /// splitmix64: a small deterministic PRNG, so the tests need no dependency and always see the same data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform in (0, 1).
        fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.unit()
        }
        fn exponential(&mut self, mean: f64) -> f64 {
            -self.unit().ln() * mean
        }
        /// Box–Muller.
        fn normal(&mut self) -> f64 {
            (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
        }
        fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
            median * (sigma * self.normal()).exp()
        }
    }

    /// The value DDSketch's rank convention points at: v[⌊q·(n − 1)⌋] of the sorted data.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    /// Asserts |x̂ − x| ≤ α·x at every q of `QS` (with 10^-9 of slack for float rounding at bucket edges);
    /// returns the largest relative error seen.
    fn assert_within_alpha(sketch: &DDSketch, data: &[f64]) -> f64 {
        let mut sorted = data.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sketch.count(), sorted.len() as u64);
        let alpha = sketch.relative_accuracy();
        let mut worst = 0.0f64;
        for q in QS {
            let x = exact(&sorted, q);
            let est = sketch.quantile(q).unwrap();
            if x < MIN_INDEXABLE {
                assert_eq!(est, 0.0, "q={q}");
                continue;
            }
            let err = (est - x).abs() / x;
            assert!(
                err <= alpha * (1.0 + 1e-9),
                "q={q}: estimate {est}, exact {x}, relative error {err} > {alpha}"
            );
            worst = worst.max(err);
        }
        worst
    }

    fn sketch_of(alpha: f64, data: &[f64]) -> DDSketch {
        let mut s = DDSketch::new(alpha);
        for &v in data {
            s.add(v);
        }
        s
    }

    /// Non-empty buckets as (index, count), the zero bucket as index `i32::MIN`: a layout-free view to compare.
    fn buckets(s: &DDSketch) -> Vec<(i32, u32)> {
        let mut out = Vec::new();
        if s.zero_count > 0 {
            out.push((i32::MIN, s.zero_count as u32));
        }
        for (k, &c) in s.bins().iter().enumerate() {
            if c > 0 {
                out.push((s.min_key + k as i32, c));
            }
        }
        out
    }

    /// The store's invariants: exact count, non-empty ends, zeros outside the range, at most MAX_BUCKETS.
    fn assert_consistent(s: &DDSketch) {
        let sum: u64 = s.counts.iter().map(|&c| u64::from(c)).sum();
        assert_eq!(s.count, s.zero_count + sum);
        assert!(s.counts.len() <= MAX_BUCKETS);
        if s.bin_count() > 0 {
            let (a, b) = s.bin_positions();
            assert!(s.counts[a] > 0 && s.counts[b] > 0);
            assert!(s.counts[..a]
                .iter()
                .chain(&s.counts[b + 1..])
                .all(|&c| c == 0));
        }
    }

    #[test]
    fn empty_is_none() {
        let mut s = DDSketch::new(DEFAULT_RELATIVE_ACCURACY);
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.count(), 0);
        assert_eq!(s.bucket_count(), 0);
        s.add(5.0 * MS);
        assert!(s.quantile(f64::NAN).is_none());
        let copy = s.clone();
        s.subtract(&copy);
        assert_eq!(s.quantile(0.99), None);
        s.add(1.0);
        s.clear();
        assert_eq!(s.quantile(0.0), None);
        let mut w = WindowedSketch::new(0.01, 10 * S, 5);
        assert_eq!(w.quantile(0.99, 0), None);
        assert_eq!(w.count(S), 0);
    }

    #[test]
    fn uniform_within_alpha() {
        let mut rng = Rng(1);
        let data: Vec<f64> = (0..50_000)
            .map(|_| rng.uniform(1.0 * MS, 1000.0 * MS))
            .collect();
        let worst = assert_within_alpha(&sketch_of(0.01, &data), &data);
        assert!(worst > 0.0);
        // A coarser and a finer accuracy obey their own bound.
        assert_within_alpha(&sketch_of(0.02, &data), &data);
        assert_within_alpha(&sketch_of(0.002, &data), &data);
    }

    #[test]
    fn exponential_and_lognormal_within_alpha() {
        let mut rng = Rng(2);
        let exp: Vec<f64> = (0..50_000).map(|_| rng.exponential(50.0 * MS)).collect();
        assert_within_alpha(&sketch_of(0.01, &exp), &exp);
        // Heavy tail: median 5 ms, σ = 1.5 in log space (p99 ≈ 160 ms, max in the seconds).
        let logn: Vec<f64> = (0..50_000).map(|_| rng.lognormal(5.0 * MS, 1.5)).collect();
        assert_within_alpha(&sketch_of(0.01, &logn), &logn);
        // Sub-microsecond durations keep their resolution (MIN_INDEXABLE is 1 ns).
        let tiny: Vec<f64> = (0..20_000).map(|_| rng.lognormal(300.0, 0.5)).collect();
        assert_within_alpha(&sketch_of(0.01, &tiny), &tiny);
    }

    #[test]
    fn bimodal_within_alpha() {
        let mut rng = Rng(3);
        // 97 % cache hits around 2 ms, 3 % misses around 800 ms: p99 sits in the second mode.
        let data: Vec<f64> = (0..60_000)
            .map(|_| {
                if rng.unit() < 0.97 {
                    rng.lognormal(2.0 * MS, 0.3)
                } else {
                    rng.lognormal(800.0 * MS, 0.2)
                }
            })
            .collect();
        let s = sketch_of(0.01, &data);
        assert_within_alpha(&s, &data);
        assert!(s.quantile(0.99).unwrap() > 300.0 * MS);
    }

    #[test]
    fn top_and_bottom_scans_agree() {
        let mut rng = Rng(4);
        let mut s = DDSketch::new(0.01);
        for i in 0..5_000 {
            s.add(if i % 7 == 0 {
                0.0
            } else {
                rng.lognormal(MS, 2.0)
            });
            if i % 97 == 0 {
                for k in 0..=1000 {
                    let rank = f64::from(k) / 1000.0 * (s.count() - 1) as f64;
                    assert_eq!(
                        s.rank_bucket_from_top(rank),
                        s.rank_bucket_from_bottom(rank),
                        "count {} rank {rank}",
                        s.count()
                    );
                }
            }
        }
    }

    #[test]
    fn merge_equals_adding_everything_to_one() {
        let mut rng = Rng(5);
        let a: Vec<f64> = (0..10_000).map(|_| rng.lognormal(MS, 1.0)).collect();
        // Disjoint from `a` (forces growth on both sides), with zeros.
        let b: Vec<f64> = (0..10_000)
            .map(|i| {
                if i % 50 == 0 {
                    0.0
                } else {
                    rng.uniform(1e3, 1e4)
                }
            })
            .collect();
        let c: Vec<f64> = (0..10_000).map(|_| rng.uniform(1e9, 1e10)).collect();
        let mut merged = sketch_of(0.01, &a);
        merged.merge(&sketch_of(0.01, &b));
        merged.merge(&sketch_of(0.01, &c));
        merged.merge(&DDSketch::new(0.01));
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        let single = sketch_of(0.01, &all);
        assert_consistent(&merged);
        assert_eq!(buckets(&merged), buckets(&single));
        assert_eq!(merged.count(), 30_000);
        for q in QS {
            assert_eq!(merged.quantile(q), single.quantile(q));
        }
        assert_within_alpha(&merged, &all);
        // Into an empty sketch.
        let mut empty = DDSketch::new(0.01);
        empty.merge(&single);
        assert_eq!(buckets(&empty), buckets(&single));
    }

    #[test]
    fn subtract_undoes_merge() {
        let mut rng = Rng(6);
        let a: Vec<f64> = (0..10_000).map(|_| rng.lognormal(10.0 * MS, 1.0)).collect();
        let b: Vec<f64> = (0..10_000)
            .map(|i| {
                if i % 10 == 0 {
                    0.0
                } else {
                    rng.lognormal(1e9, 2.0)
                }
            })
            .collect();
        let sa = sketch_of(0.01, &a);
        let sb = sketch_of(0.01, &b);
        let mut s = sa.clone();
        s.merge(&sb);
        s.subtract(&sb);
        assert_consistent(&s);
        assert_eq!(buckets(&s), buckets(&sa));
        assert_eq!(s.bucket_count(), sa.bucket_count());
        assert_within_alpha(&s, &a);
        s.subtract(&sa);
        assert!(s.is_empty());
        assert_eq!(s.quantile(0.5), None);
        // Saturating: taking away what was never there leaves zero, not a wrapped count.
        let mut small = sketch_of(0.01, &[0.0, 5.0 * MS]);
        small.subtract(&sketch_of(0.01, &[0.0, 0.0, 1e12]));
        assert_consistent(&small);
        assert_eq!(small.count(), 1);
        assert_eq!(buckets(&small), buckets(&sketch_of(0.01, &[5.0 * MS])));
        // Below the lowest bucket counts as collapsed into it: taken from there, never below zero.
        small.subtract(&sketch_of(0.01, &[1e3, 1e3]));
        assert_consistent(&small);
        assert!(small.is_empty());
    }

    #[test]
    fn collapse_keeps_high_quantiles_within_alpha() {
        let mut rng = Rng(7);
        // Log-uniform over 1 ns .. 1e22 ns: ≈ 2530 buckets at α = 1 %, more than MAX_BUCKETS.
        let data: Vec<f64> = (0..50_000)
            .map(|_| (rng.unit() * 22.0 * std::f64::consts::LN_10).exp())
            .collect();
        let s = sketch_of(0.01, &data);
        assert_consistent(&s);
        assert_eq!(s.bucket_count(), MAX_BUCKETS);
        assert_eq!(s.count(), 50_000);
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (x, est) = (exact(&sorted, q), s.quantile(q).unwrap());
            assert!(
                (est - x).abs() <= 0.01 * x * (1.0 + 1e-9),
                "q={q}: {est} vs {x}"
            );
        }
        // Below the floor (≈ 20 % of this data) values are overestimated, never under.
        let floor_value = s.representative(s.min_key);
        let low = s.quantile(0.01).unwrap();
        assert_eq!(low, floor_value);
        assert!(low > exact(&sorted, 0.01));
        // Collapsing by merge gives the same buckets as collapsing by add: the floor is top − 2047 either way.
        let (lo, hi): (Vec<f64>, Vec<f64>) = data.iter().copied().partition(|&v| v < 1e11);
        let mut m = sketch_of(0.01, &hi);
        m.merge(&sketch_of(0.01, &lo));
        assert_eq!(buckets(&m), buckets(&s));
        // A value below the floor added afterwards joins the floor bucket.
        let mut t = s.clone();
        t.add(2.0);
        assert_eq!(t.bucket_count(), MAX_BUCKETS);
        assert_eq!(t.quantile(0.0), Some(floor_value));
        assert_consistent(&t);
        assert!(s.memory_bytes() <= size_of::<DDSketch>() + MAX_BUCKETS * 4);
    }

    /// Random adds, merges and clears over ranges narrow and far wider than MAX_BUCKETS, against a model:
    /// each value's bucket is its own index, raised to the floor (highest index seen − 2047) if below it.
    #[test]
    fn random_operations_match_a_model() {
        let mut rng = Rng(11);
        let mut s = DDSketch::new(0.01);
        let mut indices: Vec<i32> = Vec::new();
        let mut zeros = 0u32;
        for round in 0..40 {
            let spread = [3.0, 10.0, 30.0, 45.0, 700.0][round % 5];
            let base = rng.uniform(0.0, 20.0);
            // Up to e^720: values past f64::MAX are clamped to it, as `add` clamps +inf.
            let value = |rng: &mut Rng| (base + rng.unit() * spread).exp().min(f64::MAX);
            for _ in 0..500 {
                match rng.next_u64() % 20 {
                    0 => {
                        s.add(0.0);
                        zeros += 1;
                    }
                    1 => {
                        let vs: Vec<f64> =
                            (0..rng.next_u64() % 50).map(|_| value(&mut rng)).collect();
                        s.merge(&sketch_of(0.01, &vs));
                        indices.extend(vs.iter().map(|&v| s.index(v)));
                    }
                    _ => {
                        let v = value(&mut rng);
                        s.add(v);
                        indices.push(s.index(v));
                    }
                }
                assert_consistent(&s);
            }
            let floor = indices
                .iter()
                .max()
                .map_or(0, |&m| m - (MAX_BUCKETS as i32 - 1));
            let mut model = std::collections::BTreeMap::new();
            for &i in &indices {
                *model.entry(i.max(floor)).or_insert(0u32) += 1;
            }
            let mut expected: Vec<(i32, u32)> = model.into_iter().collect();
            if zeros > 0 {
                expected.insert(0, (i32::MIN, zeros));
            }
            assert_eq!(buckets(&s), expected, "round {round}");
            if round % 3 == 2 {
                s.clear();
                indices.clear();
                zeros = 0;
            }
        }
    }

    #[test]
    fn zeros_huge_and_invalid_values() {
        let mut s = DDSketch::new(0.01);
        for v in [0.0, -0.0, 0.5, f64::NAN, -1.0, f64::NEG_INFINITY] {
            s.add(v);
        }
        // NaN and negatives ignored; 0, -0 and 0.5 ns in the zero bucket.
        assert_eq!(s.count(), 3);
        assert_eq!(s.quantile(1.0), Some(0.0));
        s.add(1.0);
        assert!((s.quantile(1.0).unwrap() - 1.0).abs() <= 0.01 * (1.0 + 1e-9));
        for v in [1e300, f64::MAX, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!(s.count(), 7);
        let top = s.quantile(1.0).unwrap();
        assert!(top.is_finite());
        assert!((top - f64::MAX).abs() <= 0.01 * f64::MAX);
        assert_eq!(s.quantile(0.0), Some(0.0));
        // 1 ns and f64::MAX are ~35,500 buckets apart: the low ones collapsed, the top is exact.
        assert_eq!(s.bucket_count(), MAX_BUCKETS);
        assert_consistent(&s);
        // Out-of-range accuracies are clamped, not a panic.
        for alpha in [0.0, -1.0, 1.0, 2.0, f64::NAN, f64::INFINITY, 1e-12] {
            let mut t = DDSketch::new(alpha);
            t.add(f64::MAX);
            t.add(1.0);
            assert!(t.quantile(0.5).unwrap().is_finite());
        }
        assert_eq!(
            DDSketch::new(f64::NAN).relative_accuracy(),
            DEFAULT_RELATIVE_ACCURACY
        );
    }

    #[test]
    fn steady_state_add_does_not_allocate() {
        let mut rng = Rng(8);
        let mut s = DDSketch::new(0.01);
        s.add(1.0 * MS);
        s.add(10_000.0 * MS);
        let (cap, ptr) = (s.counts.capacity(), s.counts.as_ptr());
        for _ in 0..100_000 {
            s.add(rng.uniform(1.0 * MS, 10_000.0 * MS));
        }
        assert_eq!((s.counts.capacity(), s.counts.as_ptr()), (cap, ptr));
        // The module doc's figure: 1 ms–10 s is ≈ 461 buckets.
        assert!(
            (460..=462).contains(&s.bucket_count()),
            "{}",
            s.bucket_count()
        );
        assert!(s.memory_bytes() < 3 * 1024, "{}", s.memory_bytes());
        // clear keeps the allocation, and refilling another range of the same width reuses it.
        s.clear();
        s.add(5.0 * MS);
        s.add(50_000.0 * MS);
        assert_eq!(s.counts.as_ptr(), ptr);
        assert_consistent(&s);
    }

    /// Values in the window at `now` by the documented rule ⌊now/s⌋ − ⌊t/s⌋ < n.
    fn live(values: &[(i64, f64)], now: i64, slice_ns: i64, n: i64) -> Vec<f64> {
        values
            .iter()
            .filter(|(t, _)| now.div_euclid(slice_ns) - t.div_euclid(slice_ns) < n)
            .map(|&(_, v)| v)
            .collect()
    }

    #[test]
    fn window_forgets_exactly_as_documented() {
        // 60 s in 6 slices of 10 s.
        let mut w = WindowedSketch::new(0.01, 60 * S, 6);
        assert_eq!((w.slice_ns(), w.window_ns()), (10 * S, 60 * S));
        let t = 15 * S; // slice [10 s, 20 s): expires at 70 s, i.e. 55 s after it was added.
        w.add(7.0 * MS, t);
        assert_eq!(w.count(t + 50 * S), 1); // now − t = W − s: always still counted.
        assert_eq!(w.count(70 * S - 1), 1);
        assert_eq!(w.count(70 * S), 0);
        assert_eq!(w.quantile(0.5, 70 * S), None);
        // A value at the very start of its slice lives the full window, less 1 ns.
        w.add(9.0 * MS, 80 * S);
        assert_eq!(w.count(140 * S - 1), 1);
        assert_eq!(w.count(140 * S), 0);
        // A window that does not divide evenly is rounded up to whole slices.
        assert_eq!(WindowedSketch::new(0.01, 10, 3).window_ns(), 12);
        assert_eq!(WindowedSketch::new(0.01, 0, 0).window_ns(), 1);
    }

    #[test]
    fn window_follows_a_shift() {
        let (slice_ns, n) = (10 * S, 6);
        let mut w = WindowedSketch::new(0.01, 60 * S, 6);
        let mut rng = Rng(9);
        let mut seen = Vec::new();
        // 100 values per second: 90 s around 1 ms, then 120 s around 100 ms.
        let mut t = 0;
        while t < 210 * S {
            let v = if t < 90 * S {
                rng.lognormal(MS, 0.5)
            } else {
                rng.lognormal(100.0 * MS, 0.5)
            };
            w.add(v, t);
            seen.push((t, v));
            t += S / 100;
            if t % (7 * S) == 0 {
                // At every check the window holds exactly the documented values, to α.
                let live = live(&seen, t, slice_ns, n);
                assert_eq!(w.count(t), live.len() as u64);
                let total = w.total.clone();
                assert_within_alpha(&total, &live);
                let mut merged = DDSketch::new(0.01);
                for s in &w.slices {
                    merged.merge(s);
                }
                assert_eq!(buckets(&merged), buckets(&w.total));
            }
        }
        // Before the shift p99 is in milliseconds; a window after it, only the new mode remains.
        assert!(w.quantile(0.01, t).unwrap() > 20.0 * MS);
        let before = {
            let mut v: Vec<f64> = seen
                .iter()
                .filter(|(t, _)| *t < 60 * S)
                .map(|&(_, v)| v)
                .collect();
            v.sort_by(f64::total_cmp);
            exact(&v, 0.99)
        };
        assert!(before < 5.0 * MS);
        assert!(w.quantile(0.99, t).unwrap() > 100.0 * MS);
    }

    #[test]
    fn window_jump_clears_and_steady_state_keeps_memory() {
        let mut rng = Rng(10);
        let mut w = WindowedSketch::new(0.01, 5 * S, 5);
        let mut t = 0;
        let mut step = |w: &mut WindowedSketch, t: &mut i64| {
            for _ in 0..200 {
                w.add(rng.uniform(MS, 10.0 * MS), *t);
                *t += S / 100;
            }
        };
        for _ in 0..10 {
            step(&mut w, &mut t);
        }
        let mem = w.memory_bytes();
        for _ in 0..50 {
            step(&mut w, &mut t);
        }
        assert_eq!(w.memory_bytes(), mem);
        // 4 slices of 1 s are in the window right at a slice boundary: 400 values.
        assert_eq!(w.count(t), 400);
        // Jumping many windows at once (and near the end of time) clears everything.
        assert_eq!(w.count(t + 1000 * S), 0);
        assert_eq!(w.count(i64::MAX), 0);
        w.add(3.0 * MS, i64::MAX);
        assert_eq!(w.count(i64::MAX), 1);
        // A clock that goes back puts the value in the newest slice.
        w.add(4.0 * MS, 0);
        assert_eq!(w.count(i64::MAX), 2);
        let mut neg = WindowedSketch::new(0.01, 10, 2);
        neg.add(1.0, i64::MIN);
        // i64::MIN is 2 ns into its 5 ns slice, which expires 2 slices later, at i64::MIN + 8.
        assert_eq!(neg.count(i64::MIN + 7), 1);
        assert_eq!(neg.count(i64::MIN + 8), 0);
        assert_eq!(neg.count(0), 0);
        assert!(w.memory_bytes() > size_of::<WindowedSketch>());
    }
}
