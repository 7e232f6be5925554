//! `probabilistic`: sampled iff FNV-1a-64(salt ‖ trace ID) <= threshold, with the threshold computed exactly as
//! the reference computes it (`big.Float` of 64-bit precision: (2^64−1) × (pct/100), rounded to nearest even
//! at 64 bits, then truncated), so the same trace gets the same decision here and there.
//!
//! tailsample adds a `mode` (named as in the collector's `probabilistic_sampler` processor) for OTEP 235
//! consistent sampling; the default, `hash_seed`, is the reference's:
//! - `equalizing`: sampled iff the trace's 56-bit randomness (its `ot=rv`, else the trace ID's last 7 bytes)
//!   is at least the threshold of `sampling_percentage`. Tiers compose: a trace kept by a 10 % stage upstream
//!   and a 10 % stage here is kept at 10 % overall.
//! - `proportional`: the percentage applies on top of the upstream probability (the incoming `th`): 10 % of
//!   what a 10 % upstream kept is 1 % overall.
//!
//! `sampling_precision` (hex digits of the threshold, default 4) is the collector's.

use super::inclusion::Inclusion;
use super::{PolicyType, TraceView, Vote};
use crate::config::node::Mapping;
use crate::consistent::{
    proportional_threshold, should_keep, threshold_for_probability, DEFAULT_PRECISION,
    NEVER_SAMPLE_THRESHOLD,
};
use crate::error::{Error, Result};

pub const DEFAULT_SALT: &str = "default-hash-seed";
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HashSeed,
    Equalizing,
    Proportional,
}

#[derive(Debug, Clone)]
pub struct Probabilistic {
    pub sampling_percentage: f64,
    pub hash_salt: String,
    pub threshold: u64,
    /// FNV-1a state after the salt: the hash of every trace continues from here.
    salted: u64,
    pub mode: Mode,
    pub precision: u32,
    /// The OTEP 235 threshold the last trace was compared with (consistent modes).
    pub last_threshold: u64,
}

/// FNV-1a 64 continuing from `h` (`FNV_OFFSET` to start); also the trace keys' hash (`trace_key`).
#[inline]
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// floor(round64((2^64 − 1) × ratio)), saturating, where round64 rounds to 64 significant bits, nearest even.
pub fn threshold_for(percentage: f64) -> u64 {
    let ratio = percentage / 100.0;
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= 1.0 {
        return u64::MAX;
    }
    let bits = ratio.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mantissa, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    let mut n: u128 = u128::from(u64::MAX) * u128::from(mantissa);
    let bit_len = 128 - n.leading_zeros() as i32;
    if bit_len > 64 {
        let shift = (bit_len - 64) as u32;
        let q = n >> shift;
        let rem = n & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        let q = if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        };
        n = q << shift;
    }
    // ratio < 1 so e < 0 here.
    let s = (-e) as u32;
    let v = if s >= 128 { 0 } else { n >> s };
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Probabilistic {
    pub fn new(sampling_percentage: f64, hash_salt: &str) -> Self {
        let hash_salt = if hash_salt.is_empty() {
            DEFAULT_SALT
        } else {
            hash_salt
        };
        Probabilistic {
            sampling_percentage,
            hash_salt: hash_salt.to_string(),
            threshold: threshold_for(sampling_percentage),
            salted: fnv1a(FNV_OFFSET, hash_salt.as_bytes()),
            mode: Mode::HashSeed,
            precision: DEFAULT_PRECISION,
            last_threshold: 0,
        }
    }

    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let path = m.key_path("sampling_percentage");
        let pct = m.float("sampling_percentage", 0.0)?;
        let salt = m.string("hash_salt", "")?;
        let mode_path = m.key_path("mode");
        let mode = match m.string("mode", "hash_seed")?.as_str() {
            "hash_seed" => Mode::HashSeed,
            "equalizing" => Mode::Equalizing,
            "proportional" => Mode::Proportional,
            other => {
                return Err(Error::config(
                    mode_path,
                    format!(
                        "unknown mode {other:?}; supported: hash_seed, equalizing, proportional"
                    ),
                ))
            }
        };
        let precision_path = m.key_path("sampling_precision");
        let precision = m.int("sampling_precision", i64::from(DEFAULT_PRECISION))?;
        if !(1..=14).contains(&precision) {
            return Err(Error::config(
                precision_path,
                format!("must be between 1 and 14 hex digits, got {precision}"),
            ));
        }
        m.finish()?;
        if !pct.is_finite() || pct < 0.0 {
            return Err(Error::config(
                path,
                format!(
                    "must be a percentage of at least 0, got {pct} (the reference accepts it and then samples no \
                     trace)"
                ),
            ));
        }
        let mut p = Probabilistic::new(pct, &salt);
        p.mode = mode;
        p.precision = precision as u32;
        Ok(p)
    }

    /// The OTEP 235 threshold this trace is compared with (consistent modes); NEVER means never kept.
    fn consistent_threshold(&self, t: &TraceView) -> u64 {
        let p = self.sampling_percentage / 100.0;
        match self.mode {
            Mode::Proportional => proportional_threshold(t.threshold_in(), p, self.precision),
            _ => threshold_for_probability(p.min(1.0), self.precision)
                .unwrap_or(NEVER_SAMPLE_THRESHOLD),
        }
    }

    /// How the vote depends on the trace's randomness (see `inclusion`).
    pub fn inclusion(&self) -> Inclusion {
        match self.mode {
            Mode::HashSeed => Inclusion::Independent((self.sampling_percentage / 100.0).min(1.0)),
            _ => Inclusion::Threshold(self.last_threshold),
        }
    }

    #[inline]
    pub fn hash(&self, trace_id: &[u8; 16]) -> u64 {
        fnv1a(self.salted, trace_id)
    }

    pub fn evaluate(&mut self, t: &TraceView) -> Vote {
        if self.mode == Mode::HashSeed {
            return super::vote(self.hash(&t.trace_id) <= self.threshold, false);
        }
        let threshold = self.consistent_threshold(t);
        self.last_threshold = threshold;
        super::vote(should_keep(t.randomness(), threshold), false)
    }
}

impl PolicyType for Probabilistic {
    const TYPE: &'static str = "probabilistic";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        Probabilistic::parse(m)
    }

    fn vote(
        &mut self,
        t: &TraceView,
        _matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        let vote = self.evaluate(t);
        Ok((vote, self.inclusion()))
    }

    fn reads_ot(&self) -> bool {
        self.mode != Mode::HashSeed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn salt_then_trace_id() {
        let p = Probabilistic::new(50.0, "");
        let id = [7u8; 16];
        let mut all = DEFAULT_SALT.as_bytes().to_vec();
        all.extend_from_slice(&id);
        assert_eq!(p.hash(&id), fnv1a(FNV_OFFSET, &all));
    }

    #[test]
    fn thresholds_are_exact() {
        assert_eq!(threshold_for(0.0), 0);
        assert_eq!(threshold_for(100.0), u64::MAX);
        assert_eq!(threshold_for(250.0), u64::MAX);
        assert_eq!(threshold_for(50.0), (1u64 << 63) - 1);
        assert_eq!(threshold_for(25.0), (u64::MAX >> 2));
        // 1 %: (2^64−1) × fl(0.01), rounded at 64 bits: what Go's big.Float gives.
        let r = 0.01f64;
        let exact = u128::from(u64::MAX) * u128::from((r.to_bits() & ((1 << 52) - 1)) | (1 << 52));
        let e = ((r.to_bits() >> 52) & 0x7ff) as i32 - 1075;
        let approx = (exact >> (-e) as u32) as u64;
        assert!(threshold_for(1.0).abs_diff(approx) <= 1);
        assert!(threshold_for(1.0).abs_diff(u64::MAX / 100) < 16);
    }

    #[test]
    fn sampled_share_is_close_to_the_percentage() {
        let mut p = Probabilistic::new(10.0, "salt");
        let mut hits = 0;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&x.to_le_bytes());
            id[8..].copy_from_slice(&i.to_le_bytes());
            let t = TraceView {
                trace_id: id,
                ..Default::default()
            };
            hits += usize::from(p.evaluate(&t) == Vote::Sampled);
        }
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    /// Scenario: the consistent modes over 100,000 random trace IDs. Guarantees: equalizing keeps ~10 % and
    /// exactly the IDs whose randomness reaches the threshold; proportional on top of an upstream 50 % keeps
    /// ~5 % of all IDs, a subset of equalizing's.
    #[test]
    fn consistent_modes() {
        let mut eq = Probabilistic::new(10.0, "");
        eq.mode = Mode::Equalizing;
        let mut prop = Probabilistic::new(10.0, "");
        prop.mode = Mode::Proportional;
        let (mut kept_eq, mut kept_prop) = (0, 0);
        let mut x: u64 = 12345;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&x.to_be_bytes());
            let mut t = TraceView {
                trace_id: id,
                ..Default::default()
            };
            let e = eq.evaluate(&t) == Vote::Sampled;
            assert_eq!(e, t.randomness() >= eq.last_threshold);
            kept_eq += usize::from(e);
            t.extra_mut().ot_present = super::super::ot_bits::SEEN | super::super::ot_bits::TH;
            t.extra_mut().ot_th = 1 << 55;
            let p = prop.evaluate(&t) == Vote::Sampled;
            assert!(!p || e, "proportional keeps a subset");
            kept_prop += usize::from(p);
        }
        assert!((9_400..10_600).contains(&kept_eq), "{kept_eq}");
        assert!((4_600..5_400).contains(&kept_prop), "{kept_prop}");
    }
}
