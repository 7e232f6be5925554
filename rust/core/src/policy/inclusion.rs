//! The probability that a kept trace was kept, for its adjusted count (OTEP 235, see `crate::consistent`).
//!
//! Each policy says how its vote depends on the trace's randomness (`Inclusion`):
//! - a policy that decides on the trace's content alone (`status_code`, `latency`, the attribute policies,
//!   `latency_percentile`, …) keeps it `Always` or `Never`;
//! - a consistent sampler (`adaptive`, `probabilistic` in `equalizing` or `proportional` mode) keeps it iff the
//!   trace's randomness R is at least its `Threshold`;
//! - `probabilistic` in the reference's `hash_seed` mode keeps it with probability p, `Independent` of R;
//! - `rate_limiting`, `bytes_limiting` and `composite` keep a trace for reasons outside it (tokens, shares):
//!   `Unknown` when they keep it.
//!
//! **The rule for a trace kept by several policies** (the trace is kept if any policy keeps it):
//! 1. any policy that keeps it `Always` → probability 1 (an error trace is certain, whatever else voted);
//! 2. else any `Unknown` → unknown: `th` is erased and no adjusted count is written;
//! 3. else the consistent samplers keep it iff R ≥ the smallest of their thresholds, so p_R = the largest of
//!    their probabilities (voting either way), and the independent ones add 1 − Π(1 − p_i):
//!    p = 1 − (1 − p_R) Π(1 − p_i).
//!
//! The stage's probability composes with each span's incoming `th` (`Stage::compose`): a threshold stage
//! equalizes (T_out = max(T_in, T)), an independent one multiplies probabilities; spans without `th` count
//! as kept with probability 1 upstream (as the collector's probabilistic sampler treats them).

use crate::consistent::{
    equalizing_threshold, probability_of_threshold, proportional_threshold, MAX_ADJUSTED_THRESHOLD,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Inclusion {
    Never,
    Always,
    /// Kept iff R ≥ this threshold.
    Threshold(u64),
    /// Kept with this probability, independently of R.
    Independent(f64),
    Unknown,
}

impl Inclusion {
    /// Both must keep the trace (`and`).
    pub fn and(self, other: Inclusion) -> Inclusion {
        use Inclusion::*;
        match (self, other) {
            (Never, _) | (_, Never) => Never,
            (Unknown, _) | (_, Unknown) => Unknown,
            (Always, x) | (x, Always) => x,
            (Threshold(a), Threshold(b)) => Threshold(a.max(b)),
            // Two hashes of one trace ID (with the same salt) are not independent; mixed kinds are not exact.
            _ => Unknown,
        }
    }

    /// The trace is kept when the sub-policy does not keep it (`not`).
    pub fn negate(self) -> Inclusion {
        match self {
            Inclusion::Never => Inclusion::Always,
            Inclusion::Always => Inclusion::Never,
            _ => Inclusion::Unknown,
        }
    }
}

/// What this stage did to a kept trace's sampling probability.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Stage {
    /// Kept with certainty: incoming thresholds stay, spans without one get `th:0`.
    #[default]
    Certain,
    /// Kept iff R ≥ T (consistent): T_out = max(T_in, T).
    Threshold(u64),
    /// Kept with probability p independently of R: p_out = p_in × p.
    Proportional(f64),
    /// Unknown: `th` is erased.
    Unknown,
}

impl Stage {
    /// The stage of a kept trace from every evaluated policy's inclusion (the module's rule).
    pub fn of(inclusions: impl IntoIterator<Item = Inclusion>) -> Stage {
        let mut unknown = false;
        let mut threshold: Option<u64> = None;
        let mut miss_independent = 1.0f64;
        let mut independent = false;
        for i in inclusions {
            match i {
                Inclusion::Always => return Stage::Certain,
                Inclusion::Never => {}
                Inclusion::Unknown => unknown = true,
                Inclusion::Threshold(t) => threshold = Some(threshold.map_or(t, |a| a.min(t))),
                Inclusion::Independent(p) => {
                    independent = true;
                    miss_independent *= 1.0 - p.clamp(0.0, 1.0);
                }
            }
        }
        if unknown {
            return Stage::Unknown;
        }
        match (threshold, independent) {
            (Some(t), false) => Stage::Threshold(t),
            (t, true) => {
                let p_r = t.map_or(0.0, probability_of_threshold);
                Stage::Proportional(1.0 - (1.0 - p_r) * miss_independent)
            }
            // A kept trace with no keeping policy cannot happen; say nothing rather than guess.
            (None, false) => Stage::Unknown,
        }
    }

    /// The threshold a span leaves with, given the one it came with (`None`: absent, counted as 1).
    /// `None` out means erase (`Unknown`, or a probability too small to write).
    pub fn compose(self, t_in: Option<u64>, precision: u32) -> Option<u64> {
        let t_out = match self {
            Stage::Certain => t_in.unwrap_or(0),
            Stage::Threshold(t) => equalizing_threshold(t_in, t),
            Stage::Proportional(p) => proportional_threshold(t_in, p, precision),
            Stage::Unknown => return None,
        };
        Some(t_out).filter(|&t| t < MAX_ADJUSTED_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistent::DEFAULT_PRECISION;

    const HALF: u64 = 1 << 55;

    /// Scenario: the rule's cases. Guarantees: certain wins, unknown erases, thresholds take the smallest,
    /// independent samplers combine as "any of them".
    #[test]
    fn the_rule() {
        use Inclusion::*;
        assert_eq!(
            Stage::of([Threshold(HALF), Always, Unknown]),
            Stage::Certain
        );
        assert_eq!(Stage::of([Threshold(HALF), Unknown]), Stage::Unknown);
        assert_eq!(
            Stage::of([Never, Threshold(HALF), Threshold(3 * HALF / 2)]),
            Stage::Threshold(HALF)
        );
        match Stage::of([Independent(0.5), Independent(0.5)]) {
            Stage::Proportional(p) => assert!((p - 0.75).abs() < 1e-12),
            s => panic!("{s:?}"),
        }
        match Stage::of([Independent(0.5), Threshold(HALF)]) {
            Stage::Proportional(p) => assert!((p - 0.75).abs() < 1e-12),
            s => panic!("{s:?}"),
        }
    }

    /// Scenario: composing with incoming thresholds. Guarantees: equalizing never lowers T; proportional
    /// multiplies; unknown erases; absent counts as probability 1.
    #[test]
    fn composition() {
        let p = DEFAULT_PRECISION;
        assert_eq!(Stage::Certain.compose(None, p), Some(0));
        assert_eq!(Stage::Certain.compose(Some(HALF), p), Some(HALF));
        assert_eq!(Stage::Threshold(HALF).compose(None, p), Some(HALF));
        let quarter_kept = 3 * (1u64 << 54);
        assert_eq!(
            Stage::Threshold(HALF).compose(Some(quarter_kept), p),
            Some(quarter_kept)
        );
        assert_eq!(
            Stage::Proportional(0.5).compose(Some(HALF), p),
            Some(quarter_kept)
        );
        assert_eq!(Stage::Unknown.compose(Some(HALF), p), None);
    }

    #[test]
    fn and_and_not() {
        use Inclusion::*;
        assert_eq!(Always.and(Threshold(5)), Threshold(5));
        assert_eq!(Threshold(7).and(Threshold(5)), Threshold(7));
        assert_eq!(Never.and(Unknown), Never);
        assert_eq!(Independent(0.5).and(Independent(0.5)), Unknown);
        assert_eq!(Always.negate(), Never);
        assert_eq!(Threshold(1).negate(), Unknown);
    }
}
