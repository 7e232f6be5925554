//! RED metrics — **r**ate, **e**rrors, **d**uration — computed on 100 % of spans, *before* sampling.
//!
//! The engine calls [`RedMetrics::record`] for every span it ingests, whether or not the trace is later kept, so
//! the counts describe the real traffic, not the sampled subset. Series are keyed like the OpenTelemetry
//! Collector's `spanmetrics` connector: (`service.name`, span name, span kind, status code). Each series holds
//!
//! * `calls`: spans recorded into it;
//! * `errors`: those of them whose status code is ERROR ([`STATUS_CODE_ERROR`] = 2). As the status code is part
//!   of the key, this equals `calls` for the ERROR series and is 0 for the others; it is kept so an exposition
//!   layer can sum errors per (service, name, kind) without looking at the status code. (The overflow series
//!   mixes statuses, and there it counts just its ERROR spans.)
//! * a duration histogram: explicit upper bounds in nanoseconds, **inclusive** like Prometheus' `le` (a span of
//!   exactly 2 ms lands in the 2 ms bucket), counts stored **per bucket, not cumulative**, plus one last bucket
//!   for durations above the last bound (so `buckets + 1` counts); and `duration_sum_ns`, a saturating `u64`
//!   (≈ 584 years of span time per series before it saturates). Cumulative `le` counts for exposition are a
//!   prefix sum of `bucket_counts`.
//!
//! # Cardinality bound and overflow
//!
//! At most [`RedConfig::max_series`] distinct keys get a series of their own: the first `max_series` distinct
//! keys seen (in recording order; for [`RedMetrics::merge`], in the order the merged aggregator holds them) keep
//! theirs for the aggregator's life and keep counting in it. A span whose key is new once that many exist is
//! counted into ONE overflow series instead — empty service and span name, kind 0, status 0, `overflow: true`,
//! the equivalent of the OpenTelemetry SDK's `otel.metric.overflow="true"` series — and into
//! [`RedMetrics::overflow_spans`]. Nothing is evicted and no later key is ever promoted, so a series never
//! changes identity under a dashboard. The overflow series is in addition to the `max_series` regular ones and is
//! listed (last) only once it has counted a span.
//!
//! # Cost
//!
//! `record` is allocation-free when the series exists (and when the key goes to overflow): one ahash of the key,
//! one lookup of that 64-bit hash in a `HashMap<u64, u32>`, a string comparison to confirm the hit (exact even on
//! a 64-bit collision: series sharing a hash are chained), a binary search over the bucket bounds, and a few adds.
//! Only a new series allocates (its two strings, and amortised growth of the tables).
//!
//! Memory per series, with the default 16 buckets: 72 B of fixed fields (two `Box<str>` headers, kind, status,
//! chain link, calls, errors, sum) + 136 B of bucket counts (17 × 8) + ≈ 17–34 B in the hash index (a 16 B
//! entry + 1 control byte, at hashbrown's ≤ 7/8 load) + the service and span name bytes: **≈ 230 B + the two
//! strings**, i.e. about 250 KB at the default limit of 1000 series, up to twice that just after the tables have
//! doubled. In general: `8 × (buckets + 1) + ≈ 95 B + strings`. [`RedMetrics::memory_bytes`] reports the live
//! figure, capacities included.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ahash::RandomState;

/// The spanmetrics connector's default buckets, in ns: 2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms,
/// 800ms, 1s, 1.4s, 2s, 5s, 10s, 15s.
pub const DEFAULT_BUCKETS_NS: &[u64] = &[
    2_000_000,
    4_000_000,
    6_000_000,
    8_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    400_000_000,
    800_000_000,
    1_000_000_000,
    1_400_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    15_000_000_000,
];

/// Default cardinality bound: distinct (service, name, kind, status) series before spans go to overflow.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// OTLP `Status.code` ERROR; spans with this code count as errors.
pub const STATUS_CODE_ERROR: i32 = 2;

/// Series indices are `u32`, with `u32::MAX` as the end-of-chain marker, so this is the hard ceiling on
/// `max_series` whatever the configuration says.
const NIL: u32 = u32::MAX;

/// Fixed seeds: every aggregator hashes a key to the same value (handy for merging and for reproducibility).
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// Configuration of a [`RedMetrics`] aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedConfig {
    /// Distinct series kept before new keys go to the overflow series (see the module docs).
    pub max_series: usize,
    /// Inclusive upper bounds of the duration buckets, in ns. [`RedMetrics::new`] sorts and deduplicates them.
    pub buckets_ns: Vec<u64>,
}

impl Default for RedConfig {
    fn default() -> Self {
        RedConfig {
            max_series: DEFAULT_MAX_SERIES,
            buckets_ns: DEFAULT_BUCKETS_NS.to_vec(),
        }
    }
}

/// One series, as reported by [`RedMetrics::series`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedSeries {
    pub service: String,
    pub span_name: String,
    pub kind: i32,
    pub status_code: i32,
    /// The overflow series (`otel.metric.overflow="true"`): service and name empty, kind and status 0.
    pub overflow: bool,
    pub calls: u64,
    pub errors: u64,
    /// Sum of the durations, saturating.
    #[serde(rename = "duration_sum", serialize_with = "crate::serialize::seconds")]
    pub duration_sum_ns: u64,
    /// `buckets_ns.len() + 1` counts, per bucket (not cumulative): `bucket_counts[i]` counts durations `d` with
    /// `buckets_ns[i-1] < d <= buckets_ns[i]`; the last counts `d > buckets_ns.last()`.
    pub bucket_counts: Vec<u64>,
}

/// Calls, errors and duration sum of one series (its bucket counts live in a flat array beside it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    errors: u64,
    duration_sum_ns: u64,
}

impl Counts {
    #[inline]
    fn add_span(&mut self, is_error: bool, duration_ns: u64) {
        self.calls += 1;
        self.errors += u64::from(is_error);
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(duration_ns);
    }

    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(other.duration_sum_ns);
    }
}

/// A regular series: its key, stored once, and its counters.
#[derive(Debug, Clone)]
struct Entry {
    service: Box<str>,
    span_name: Box<str>,
    kind: i32,
    status_code: i32,
    /// Next series whose key hashes to the same 64-bit value, or `NIL`.
    next: u32,
    counts: Counts,
}

impl Entry {
    #[inline]
    fn is(&self, service: &str, span_name: &str, kind: i32, status_code: i32) -> bool {
        self.kind == kind
            && self.status_code == status_code
            && *self.span_name == *span_name
            && *self.service == *service
    }
}

/// The index is keyed by an ahash already: hash it no further.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Unused (only u64 keys are hashed), but keep it correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<PassThrough>>;

/// RED aggregator: see the module docs. One per shard is fine; [`merge`](Self::merge) them on read.
#[derive(Debug, Clone)]
pub struct RedMetrics {
    cfg: RedConfig,
    /// `min(cfg.max_series, u32::MAX - 1)`.
    limit: usize,
    /// `cfg.buckets_ns.len() + 1`: bucket counts per series.
    stride: usize,
    hasher: RandomState,
    /// Key hash → first series with that hash (the rest are chained through `Entry::next`).
    index: Index,
    entries: Vec<Entry>,
    /// Bucket counts of series `i` at `buckets[i * stride..(i + 1) * stride]`.
    buckets: Vec<u64>,
    overflow: Counts,
    overflow_buckets: Box<[u64]>,
    overflow_spans: u64,
    spans: u64,
    /// Bytes of the stored service and span names.
    string_bytes: usize,
    /// Test hook: ANDed into every key hash, so tests can force 64-bit collisions (`0` makes all keys collide).
    #[cfg(test)]
    hash_mask: u64,
}

impl Default for RedMetrics {
    fn default() -> Self {
        RedMetrics::new(RedConfig::default())
    }
}

impl RedMetrics {
    /// An empty aggregator. The bucket bounds are sorted and deduplicated (as [`config`](Self::config) then
    /// shows); no bounds at all is allowed (every span lands in the single overflow bucket).
    pub fn new(mut cfg: RedConfig) -> Self {
        cfg.buckets_ns.sort_unstable();
        cfg.buckets_ns.dedup();
        let stride = cfg.buckets_ns.len() + 1;
        RedMetrics {
            limit: cfg.max_series.min(NIL as usize - 1),
            stride,
            hasher: RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            index: Index::default(),
            entries: Vec::new(),
            buckets: Vec::new(),
            overflow: Counts::default(),
            overflow_buckets: vec![0; stride].into_boxed_slice(),
            overflow_spans: 0,
            spans: 0,
            string_bytes: 0,
            #[cfg(test)]
            hash_mask: u64::MAX,
            cfg,
        }
    }

    /// Counts one span. `duration_ns` is end − start, 0 when end < start (the caller computes it).
    ///
    /// Hot path: allocation-free when the key's series exists or the key goes to overflow (one hash, one
    /// `u64` table lookup, a string comparison, a binary search over the bounds); only the creation of a new
    /// series allocates.
    #[inline]
    pub fn record(
        &mut self,
        service: &str,
        span_name: &str,
        kind: i32,
        status_code: i32,
        duration_ns: u64,
    ) {
        let hash = self.key_hash(service, span_name, kind, status_code);
        self.spans += 1;
        // `partition_point` = index of the first bound >= d: bounds are inclusive. Measured faster than a
        // linear scan over the 16 default bounds except when nearly all spans fall in the first bucket.
        let bucket = self.cfg.buckets_ns.partition_point(|&b| b < duration_ns);
        let is_error = status_code == STATUS_CODE_ERROR;
        let slot = match self.find(hash, service, span_name, kind, status_code) {
            Ok(i) => Some(i),
            Err(tail) => self.insert(hash, tail, service, span_name, kind, status_code),
        };
        match slot {
            Some(i) => {
                let i = i as usize;
                self.entries[i].counts.add_span(is_error, duration_ns);
                self.buckets[i * self.stride + bucket] += 1;
            }
            None => {
                self.overflow.add_span(is_error, duration_ns);
                self.overflow_buckets[bucket] += 1;
                self.overflow_spans += 1;
            }
        }
    }

    /// Adds another aggregator's counts. Its series are taken in its own creation order and subject to this
    /// aggregator's bound: keys new to `self` beyond `max_series` go to `self`'s overflow series (and count in
    /// `overflow_spans`). With no overflow involved, the result's [`series`](Self::series) equals that of one
    /// aggregator having recorded both span streams.
    ///
    /// # Panics
    /// If the two aggregators' bucket bounds differ (their histograms could not be added).
    pub fn merge(&mut self, other: &RedMetrics) {
        assert_eq!(
            self.cfg.buckets_ns, other.cfg.buckets_ns,
            "RedMetrics::merge: bucket bounds differ"
        );
        let stride = self.stride;
        for (j, e) in other.entries.iter().enumerate() {
            let theirs = &other.buckets[j * stride..(j + 1) * stride];
            let (service, name, kind, status) = (&*e.service, &*e.span_name, e.kind, e.status_code);
            let hash = self.key_hash(service, name, kind, status);
            let slot = match self.find(hash, service, name, kind, status) {
                Ok(i) => Some(i),
                Err(tail) => self.insert(hash, tail, service, name, kind, status),
            };
            let (counts, mine) = match slot {
                Some(i) => {
                    let i = i as usize;
                    (
                        &mut self.entries[i].counts,
                        &mut self.buckets[i * stride..(i + 1) * stride],
                    )
                }
                None => {
                    self.overflow_spans += e.counts.calls;
                    (&mut self.overflow, &mut self.overflow_buckets[..])
                }
            };
            counts.add(&e.counts);
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
        self.overflow.add(&other.overflow);
        for (m, t) in self
            .overflow_buckets
            .iter_mut()
            .zip(other.overflow_buckets.iter())
        {
            *m += t;
        }
        self.overflow_spans += other.overflow_spans;
        self.spans += other.spans;
    }

    /// Every series, sorted by (service, span name, kind, status code); the overflow series last, present only
    /// once it has counted a span.
    pub fn series(&self) -> Vec<RedSeries> {
        let mut out: Vec<RedSeries> = Vec::with_capacity(self.series_count());
        out.extend(self.entries.iter().enumerate().map(|(i, e)| RedSeries {
            service: e.service.to_string(),
            span_name: e.span_name.to_string(),
            kind: e.kind,
            status_code: e.status_code,
            overflow: false,
            calls: e.counts.calls,
            errors: e.counts.errors,
            duration_sum_ns: e.counts.duration_sum_ns,
            bucket_counts: self.buckets[i * self.stride..(i + 1) * self.stride].to_vec(),
        }));
        out.sort_unstable_by(|a, b| {
            (&a.service, &a.span_name, a.kind, a.status_code).cmp(&(
                &b.service,
                &b.span_name,
                b.kind,
                b.status_code,
            ))
        });
        if self.overflow.calls > 0 {
            out.push(RedSeries {
                service: String::new(),
                span_name: String::new(),
                kind: 0,
                status_code: 0,
                overflow: true,
                calls: self.overflow.calls,
                errors: self.overflow.errors,
                duration_sum_ns: self.overflow.duration_sum_ns,
                bucket_counts: self.overflow_buckets.to_vec(),
            });
        }
        out
    }

    /// Number of series [`series`](Self::series) returns: the regular ones (≤ `max_series`), plus 1 once the
    /// overflow series has counted a span.
    pub fn series_count(&self) -> usize {
        self.entries.len() + usize::from(self.overflow.calls > 0)
    }

    /// Spans counted into the overflow series because their key was new once `max_series` series existed.
    pub fn overflow_spans(&self) -> u64 {
        self.overflow_spans
    }

    /// Spans recorded in total (own series and overflow, merged aggregators included).
    pub fn spans(&self) -> u64 {
        self.spans
    }

    /// Approximate bytes held (capacities included), for a gauge.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<Self>()
            + self.cfg.buckets_ns.capacity() * size_of::<u64>()
            + self.entries.capacity() * size_of::<Entry>()
            + self.string_bytes
            + self.buckets.capacity() * size_of::<u64>()
            + self.overflow_buckets.len() * size_of::<u64>()
            // hashbrown: one (key, value) slot plus one control byte per bucket; capacity() is 7/8 of buckets.
            + self.index.capacity() * (size_of::<(u64, u32)>() + 1) * 8 / 7
    }

    /// The configuration, bucket bounds sorted and deduplicated.
    pub fn config(&self) -> &RedConfig {
        &self.cfg
    }

    #[inline]
    fn key_hash(&self, service: &str, span_name: &str, kind: i32, status_code: i32) -> u64 {
        // `str`'s Hash writes the bytes then 0xff, so (service, name) splits are unambiguous.
        self.mask(
            self.hasher
                .hash_one((service, span_name, kind, status_code)),
        )
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn mask(&self, hash: u64) -> u64 {
        hash
    }

    #[cfg(test)]
    fn mask(&self, hash: u64) -> u64 {
        hash & self.hash_mask
    }

    /// `Ok(index)` of the key's series, or `Err(last series in the hash's chain)` (`None`: hash unseen).
    #[inline]
    fn find(
        &self,
        hash: u64,
        service: &str,
        span_name: &str,
        kind: i32,
        status_code: i32,
    ) -> Result<u32, Option<u32>> {
        let Some(&first) = self.index.get(&hash) else {
            return Err(None);
        };
        let mut i = first;
        loop {
            let e = &self.entries[i as usize];
            if e.is(service, span_name, kind, status_code) {
                return Ok(i);
            }
            if e.next == NIL {
                return Err(Some(i));
            }
            i = e.next;
        }
    }

    /// Creates the series for a key `find` missed (`tail` as it returned), unless the bound is reached.
    #[cold]
    fn insert(
        &mut self,
        hash: u64,
        tail: Option<u32>,
        service: &str,
        span_name: &str,
        kind: i32,
        status_code: i32,
    ) -> Option<u32> {
        if self.entries.len() >= self.limit {
            return None;
        }
        let i = self.entries.len() as u32;
        self.entries.push(Entry {
            service: service.into(),
            span_name: span_name.into(),
            kind,
            status_code,
            next: NIL,
            counts: Counts::default(),
        });
        self.buckets.resize(self.buckets.len() + self.stride, 0);
        self.string_bytes += service.len() + span_name.len();
        match tail {
            Some(t) => self.entries[t as usize].next = i,
            None => {
                self.index.insert(hash, i);
            }
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Key = (String, String, i32, i32);

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Naive {
        calls: u64,
        errors: u64,
        sum: u64,
        buckets: Vec<u64>,
    }

    /// Reference bucket: a linear scan, independent of `partition_point`.
    fn naive_bucket(bounds: &[u64], d: u64) -> usize {
        bounds.iter().position(|&b| d <= b).unwrap_or(bounds.len())
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const SERVICES: &[&str] = &["api", "db", "auth", "", "checkout-service", "ap", "i"];
    const NAMES: &[&str] = &["GET /", "SELECT", "", "iapi", "POST /cart", "login", "a"];

    /// A deterministic span mix: services, names (including empty and split-ambiguous ones), all kinds and
    /// statuses, and durations on, around and beyond the default bounds.
    fn spans(seed: u64, n: usize) -> Vec<(&'static str, &'static str, i32, i32, u64)> {
        let mut r = Rng(seed | 1);
        (0..n)
            .map(|_| {
                let s = SERVICES[r.below(SERVICES.len() as u64) as usize];
                let name = NAMES[r.below(NAMES.len() as u64) as usize];
                let kind = r.below(6) as i32;
                let status = r.below(3) as i32;
                let d = match r.below(6) {
                    0 => DEFAULT_BUCKETS_NS[r.below(16) as usize],
                    1 => DEFAULT_BUCKETS_NS[r.below(16) as usize] + 1,
                    2 => DEFAULT_BUCKETS_NS[r.below(16) as usize] - 1,
                    3 => 0,
                    4 => r.below(20_000_000_000),
                    _ => r.below(3_000_000),
                };
                (s, name, kind, status, d)
            })
            .collect()
    }

    fn naive(bounds: &[u64], spans: &[(&str, &str, i32, i32, u64)]) -> HashMap<Key, Naive> {
        let mut m: HashMap<Key, Naive> = HashMap::new();
        for &(s, n, k, st, d) in spans {
            let e = m
                .entry((s.to_string(), n.to_string(), k, st))
                .or_insert_with(|| Naive {
                    buckets: vec![0; bounds.len() + 1],
                    ..Naive::default()
                });
            e.calls += 1;
            if st == 2 {
                e.errors += 1;
            }
            e.sum = e.sum.saturating_add(d);
            e.buckets[naive_bucket(bounds, d)] += 1;
        }
        m
    }

    fn as_map(series: &[RedSeries]) -> HashMap<Key, Naive> {
        series
            .iter()
            .filter(|s| !s.overflow)
            .map(|s| {
                (
                    (
                        s.service.clone(),
                        s.span_name.clone(),
                        s.kind,
                        s.status_code,
                    ),
                    Naive {
                        calls: s.calls,
                        errors: s.errors,
                        sum: s.duration_sum_ns,
                        buckets: s.bucket_counts.clone(),
                    },
                )
            })
            .collect()
    }

    fn record_all(m: &mut RedMetrics, spans: &[(&str, &str, i32, i32, u64)]) {
        for &(s, n, k, st, d) in spans {
            m.record(s, n, k, st, d);
        }
    }

    fn check_against_naive(mask: u64) {
        let sp = spans(7, 50_000);
        let mut m = RedMetrics::new(RedConfig::default());
        m.hash_mask = mask;
        record_all(&mut m, &sp);
        let want = naive(DEFAULT_BUCKETS_NS, &sp);
        // 7 services × 7 names × 6 kinds × 3 statuses = 882 < 1000: no overflow.
        assert_eq!(m.series_count(), want.len());
        assert_eq!(m.overflow_spans(), 0);
        assert_eq!(m.spans(), sp.len() as u64);
        let got = m.series();
        assert!(got.iter().all(|s| !s.overflow));
        assert_eq!(as_map(&got), want);
        // Sorted by key.
        let keys: Vec<_> = got
            .iter()
            .map(|s| (&s.service, &s.span_name, s.kind, s.status_code))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Errors only for status 2, and there equal to calls.
        for s in &got {
            assert_eq!(s.errors, if s.status_code == 2 { s.calls } else { 0 });
            assert_eq!(s.bucket_counts.iter().sum::<u64>(), s.calls);
        }
    }

    #[test]
    fn exact_counts_against_naive_reference() {
        check_against_naive(u64::MAX);
    }

    #[test]
    fn exact_counts_when_every_key_collides() {
        // All 882 keys share one 64-bit hash: one chain, still exact.
        check_against_naive(0);
    }

    #[test]
    fn exact_counts_with_partial_collisions() {
        // Four hash values: chains of ~220 keys each, interleaved.
        check_against_naive(0b11);
    }

    #[test]
    fn split_keys_do_not_alias() {
        // ("ap", "iapi") vs ("api", "api")... and ("i", "a") vs ("", "ia"): distinct series.
        let mut m = RedMetrics::default();
        m.record("ap", "iapi", 0, 0, 1);
        m.record("api", "api", 0, 0, 1);
        m.record("", "api", 0, 0, 1);
        m.record("a", "pi", 0, 0, 1);
        assert_eq!(m.series_count(), 4);
        assert!(m.series().iter().all(|s| s.calls == 1));
    }

    #[test]
    fn errors_only_for_status_error() {
        let mut m = RedMetrics::default();
        for status in [0, 1, 2, 3, -1, 2] {
            m.record("svc", "op", 2, status, 5);
        }
        let s = m.series();
        assert_eq!(s.len(), 5);
        for x in &s {
            let want = if x.status_code == 2 { 2 } else { 0 };
            assert_eq!(x.errors, want, "{x:?}");
        }
        assert_eq!(s.iter().map(|x| x.errors).sum::<u64>(), 2);
    }

    #[test]
    fn bucket_placement_on_exact_bounds() {
        let mut m = RedMetrics::default();
        let nb = DEFAULT_BUCKETS_NS.len();
        // Every bound goes in its own bucket; bound + 1 in the next; 0 in the first; above the last bound in
        // the overflow bucket.
        for (i, &b) in DEFAULT_BUCKETS_NS.iter().enumerate() {
            m.record("s", &format!("on{i}"), 0, 0, b);
            m.record("s", &format!("above{i}"), 0, 0, b + 1);
            m.record("s", &format!("below{i}"), 0, 0, b - 1);
        }
        m.record("s", "zero", 0, 0, 0);
        m.record("s", "max", 0, 0, u64::MAX);
        let by_name: HashMap<String, RedSeries> = m
            .series()
            .into_iter()
            .map(|s| (s.span_name.clone(), s))
            .collect();
        let bucket_of = |n: &str| {
            let s = &by_name[n];
            assert_eq!(s.bucket_counts.len(), nb + 1);
            assert_eq!(s.bucket_counts.iter().sum::<u64>(), 1);
            s.bucket_counts.iter().position(|&c| c == 1).unwrap()
        };
        for i in 0..nb {
            assert_eq!(bucket_of(&format!("on{i}")), i);
            assert_eq!(bucket_of(&format!("above{i}")), i + 1);
            assert_eq!(bucket_of(&format!("below{i}")), i);
        }
        assert_eq!(bucket_of("zero"), 0);
        assert_eq!(bucket_of("max"), nb);
        assert_eq!(bucket_of("on0"), 0); // exactly 2 ms → the 2 ms bucket
        assert_eq!(by_name["on0"].duration_sum_ns, 2_000_000);
    }

    #[test]
    fn duration_sum_saturates() {
        let mut m = RedMetrics::default();
        m.record("s", "n", 0, 0, u64::MAX - 1);
        m.record("s", "n", 0, 0, 10);
        let s = &m.series()[0];
        assert_eq!(s.duration_sum_ns, u64::MAX);
        assert_eq!(s.calls, 2);
        assert_eq!(s.bucket_counts[0], 1);
        assert_eq!(s.bucket_counts[DEFAULT_BUCKETS_NS.len()], 1);
    }

    #[test]
    fn overflow_beyond_max_series() {
        let mut m = RedMetrics::new(RedConfig {
            max_series: 3,
            ..RedConfig::default()
        });
        m.record("a", "x", 1, 0, 1);
        m.record("b", "x", 1, 2, 3_000_000);
        m.record("c", "x", 1, 0, 1);
        assert_eq!(m.overflow_spans(), 0);
        assert_eq!(m.series_count(), 3);
        // New keys: overflow.
        m.record("d", "x", 1, 2, 5);
        m.record("e", "x", 1, 0, 20_000_000_000);
        // Still overflow: never promoted.
        m.record("d", "x", 1, 2, 5);
        // Existing keys keep counting in their own series.
        m.record("a", "x", 1, 0, 1);
        m.record("b", "x", 1, 2, 1);
        assert_eq!(m.overflow_spans(), 3);
        assert_eq!(m.spans(), 8);
        assert_eq!(m.series_count(), 4);
        let s = m.series();
        assert_eq!(s.len(), 4);
        let names: Vec<&str> = s.iter().map(|x| x.service.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", ""]);
        assert_eq!((s[0].calls, s[0].errors), (2, 0));
        assert_eq!((s[1].calls, s[1].errors), (2, 2));
        assert_eq!(s[2].calls, 1);
        let o = &s[3];
        assert!(o.overflow);
        assert_eq!((o.service.as_str(), o.span_name.as_str()), ("", ""));
        assert_eq!((o.kind, o.status_code), (0, 0));
        assert_eq!((o.calls, o.errors), (3, 2));
        assert_eq!(o.duration_sum_ns, 20_000_000_010);
        assert_eq!(o.bucket_counts[0], 2);
        assert_eq!(o.bucket_counts[DEFAULT_BUCKETS_NS.len()], 1);
        assert!(s[..3].iter().all(|x| !x.overflow));
    }

    #[test]
    fn overflow_with_random_mix_is_exact() {
        // The first `max_series` distinct keys in recording order keep their own series, exactly counted; all
        // other spans are in overflow.
        let max = 100;
        let sp = spans(99, 20_000);
        let mut m = RedMetrics::new(RedConfig {
            max_series: max,
            ..RedConfig::default()
        });
        m.hash_mask = 0xf; // collisions too
        record_all(&mut m, &sp);
        let mut first: Vec<Key> = Vec::new();
        for &(s, n, k, st, _) in &sp {
            let key = (s.to_string(), n.to_string(), k, st);
            if first.len() < max && !first.contains(&key) {
                first.push(key);
            }
        }
        let kept: Vec<_> = sp
            .iter()
            .copied()
            .filter(|&(s, n, k, st, _)| first.contains(&(s.to_string(), n.to_string(), k, st)))
            .collect();
        let spilled: Vec<_> = sp
            .iter()
            .copied()
            .filter(|&(s, n, k, st, _)| !first.contains(&(s.to_string(), n.to_string(), k, st)))
            .collect();
        let got = m.series();
        assert_eq!(as_map(&got), naive(DEFAULT_BUCKETS_NS, &kept));
        let o = got.last().unwrap();
        assert!(o.overflow);
        let all: Vec<_> = spilled
            .iter()
            .map(|&(_, _, _, st, d)| ("", "", 0, st, d))
            .collect();
        let want = naive(DEFAULT_BUCKETS_NS, &all);
        let want_o: Naive = want.values().fold(
            Naive {
                buckets: vec![0; 17],
                ..Naive::default()
            },
            |mut acc, v| {
                acc.calls += v.calls;
                acc.errors += v.errors;
                acc.sum += v.sum;
                for (a, b) in acc.buckets.iter_mut().zip(&v.buckets) {
                    *a += b;
                }
                acc
            },
        );
        assert_eq!(o.calls, want_o.calls);
        assert_eq!(o.errors, want_o.errors);
        assert_eq!(o.duration_sum_ns, want_o.sum);
        assert_eq!(o.bucket_counts, want_o.buckets);
        assert_eq!(m.overflow_spans(), spilled.len() as u64);
        assert_eq!(m.series_count(), max + 1);
    }

    #[test]
    fn zero_max_series_sends_everything_to_overflow() {
        let mut m = RedMetrics::new(RedConfig {
            max_series: 0,
            ..RedConfig::default()
        });
        m.record("a", "b", 1, 2, 7);
        m.record("c", "d", 1, 0, 7);
        let s = m.series();
        assert_eq!(s.len(), 1);
        assert!(s[0].overflow);
        assert_eq!((s[0].calls, s[0].errors), (2, 1));
        assert_eq!(m.overflow_spans(), 2);
    }

    fn check_merge(mask: u64) {
        let sp = spans(12345, 30_000);
        let mut whole = RedMetrics::default();
        record_all(&mut whole, &sp);
        // Three shards, spans dealt by a pseudo-random rule, merged into a fourth, empty aggregator.
        let mut shards = [
            RedMetrics::default(),
            RedMetrics::default(),
            RedMetrics::default(),
        ];
        let mut merged = RedMetrics::default();
        for m in shards.iter_mut().chain(std::iter::once(&mut merged)) {
            m.hash_mask = mask;
        }
        for (i, &(s, n, k, st, d)) in sp.iter().enumerate() {
            shards[(i * 7 + i / 3) % 3].record(s, n, k, st, d);
        }
        for sh in &shards {
            merged.merge(sh);
        }
        assert_eq!(merged.series(), whole.series());
        assert_eq!(merged.spans(), whole.spans());
        assert_eq!(merged.overflow_spans(), 0);
        // Merging into a non-empty aggregator too.
        let mut m0 = shards[0].clone();
        m0.merge(&shards[1]);
        m0.merge(&shards[2]);
        assert_eq!(m0.series(), whole.series());
        assert_eq!(m0.spans(), whole.spans());
    }

    #[test]
    fn merge_equals_recording_into_one() {
        check_merge(u64::MAX);
    }

    #[test]
    fn merge_with_collisions() {
        check_merge(0);
        check_merge(0b101);
    }

    #[test]
    fn merge_respects_bound_and_carries_overflow() {
        let cfg = RedConfig {
            max_series: 2,
            ..RedConfig::default()
        };
        let mut a = RedMetrics::new(cfg.clone());
        let mut b = RedMetrics::new(cfg.clone());
        a.record("a", "x", 0, 0, 1);
        b.record("b", "x", 0, 0, 1);
        b.record("c", "x", 0, 2, 1);
        b.record("d", "x", 0, 2, 1); // overflow in b
        b.record("a", "x", 0, 0, 1); // overflow in b too (b is full), though a has the key
        assert_eq!(b.overflow_spans(), 2);
        a.merge(&b);
        // a keeps "a" and gets "b" (b's first series); "c" goes to a's overflow, joining b's 2 overflow spans
        // (which stay overflow: their keys are not recorded).
        let s = a.series();
        let keys: Vec<(&str, bool, u64)> = s
            .iter()
            .map(|x| (x.service.as_str(), x.overflow, x.calls))
            .collect();
        assert_eq!(keys, [("a", false, 1), ("b", false, 1), ("", true, 3)]);
        assert_eq!(s[2].errors, 2);
        assert_eq!(a.overflow_spans(), 3);
        assert_eq!(a.spans(), 5);
        assert_eq!(s.iter().map(|x| x.calls).sum::<u64>(), a.spans());
    }

    #[test]
    #[should_panic(expected = "bucket bounds differ")]
    fn merge_rejects_different_buckets() {
        let mut a = RedMetrics::default();
        let b = RedMetrics::new(RedConfig {
            max_series: 10,
            buckets_ns: vec![1, 2, 3],
        });
        a.merge(&b);
    }

    #[test]
    fn config_bounds_sorted_and_deduplicated() {
        let mut m = RedMetrics::new(RedConfig {
            max_series: 10,
            buckets_ns: vec![30, 10, 20, 10],
        });
        assert_eq!(m.config().buckets_ns, [10, 20, 30]);
        m.record("s", "n", 0, 0, 10);
        m.record("s", "n", 0, 0, 11);
        m.record("s", "n", 0, 0, 31);
        assert_eq!(m.series()[0].bucket_counts, [1, 1, 0, 1]);
        // No bounds: one bucket.
        let mut e = RedMetrics::new(RedConfig {
            max_series: 10,
            buckets_ns: vec![],
        });
        e.record("s", "n", 0, 0, 10);
        assert_eq!(e.series()[0].bucket_counts, [1]);
    }

    #[test]
    fn hits_do_not_grow_anything() {
        // Proxy for "allocation-free on hits": once the series exist, no table or buffer changes capacity.
        let sp = spans(3, 20_000);
        let mut m = RedMetrics::default();
        record_all(&mut m, &sp);
        let caps = (
            m.entries.capacity(),
            m.buckets.capacity(),
            m.index.capacity(),
            m.memory_bytes(),
        );
        let n = m.series_count();
        record_all(&mut m, &sp);
        assert_eq!(m.series_count(), n);
        assert_eq!(
            caps,
            (
                m.entries.capacity(),
                m.buckets.capacity(),
                m.index.capacity(),
                m.memory_bytes()
            )
        );
    }

    #[test]
    fn memory_per_series_is_as_documented() {
        assert_eq!(std::mem::size_of::<Entry>(), 72);
        let mut m = RedMetrics::default();
        let empty = m.memory_bytes();
        for i in 0..1000 {
            m.record("service-x", &format!("op-{i:04}"), 1, 0, 1);
        }
        let per = (m.memory_bytes() - empty) / 1000;
        // 72 + 136 + index (17..34) + 16 string bytes, plus up to 2x growth slack on the Vecs.
        assert!(
            (72 + 136 + 16 + 17..=2 * (72 + 136) + 16 + 40).contains(&per),
            "{per}"
        );
        assert_eq!(m.series_count(), 1000);
        m.record("service-x", "new", 1, 0, 1);
        assert_eq!(m.overflow_spans(), 1);
    }
}
