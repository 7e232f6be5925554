//! What a decision is, and the precedence that makes one out of the policies' votes (written once, here).
//!
//! Precedence, as the reference's `makeDecision` (processor.go) has it:
//! 1. any policy voted `Dropped` (a `drop` policy fired) → dropped by policy;
//! 2. else any policy voted `Sampled` → sampled, decided by the first that did (in evaluation order);
//! 3. else → not sampled.
//!
//! An evaluation error is no vote. The `drop` policies are evaluated first and evaluation stops at the first
//! drop; with `sample_on_first_match` it also stops at the first sample (`stops`). `invert_match` negates a
//! policy's match before it votes (the reference's `InvertSampled`/`InvertNotSampled` decisions have no
//! producer left; its precedence for them is therefore unreachable and not reproduced). Combinators fold
//! their sub-policies' votes into their own before this rule sees them: `and` samples iff every sub-policy
//! samples, `not` flips sampled ↔ not sampled, `drop` votes `Dropped` iff every sub-policy samples,
//! `composite` samples iff its first sampling sub-policy fits its budget.

use super::inclusion::Stage;

/// A policy's vote on a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Sampled,
    NotSampled,
    /// A `drop` policy fired: a veto over every other vote.
    Dropped,
}

/// Votes of at most this many top-level policies are recorded in a decision (the others read as not
/// evaluated; precedence still sees every vote).
pub const MAX_RECORDED_VOTES: usize = 32;

/// One policy's vote as a decision records it: also "not evaluated" and "failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ballot {
    /// Not evaluated (evaluation stopped before it), or beyond `MAX_RECORDED_VOTES`.
    #[default]
    NotEvaluated,
    Sampled,
    NotSampled,
    Dropped,
    /// Its evaluation failed (no vote).
    Error,
}

impl Ballot {
    pub fn of<T, E>(v: &Result<(Vote, T), E>) -> Self {
        match v {
            Ok((Vote::Sampled, _)) => Ballot::Sampled,
            Ok((Vote::NotSampled, _)) => Ballot::NotSampled,
            Ok((Vote::Dropped, _)) => Ballot::Dropped,
            Err(_) => Ballot::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ballot::NotEvaluated => "not_evaluated",
            Ballot::Sampled => "sampled",
            Ballot::NotSampled => "not_sampled",
            Ballot::Dropped => "dropped",
            Ballot::Error => "error",
        }
    }
}

/// How a trace left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sampled,
    NotSampled,
    /// A `drop` policy fired.
    DroppedByPolicy,
    /// Its spans passed `maximum_trace_size_bytes`.
    DroppedTooLarge,
    /// Pending at shutdown with `drop_pending_traces_on_shutdown`.
    DroppedOnShutdown,
    /// Pushed out undecided by a new trace at `num_traces`.
    Evicted,
}

impl Outcome {
    /// A stable name (the decision's reason in `explain`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Sampled => "sampled",
            Outcome::NotSampled => "not_sampled",
            Outcome::DroppedByPolicy => "dropped_by_policy",
            Outcome::DroppedTooLarge => "dropped_too_large",
            Outcome::DroppedOnShutdown => "dropped_on_shutdown",
            Outcome::Evicted => "evicted",
        }
    }
}

/// A trace's decision: its outcome, the policy that decided it, every top-level policy's vote, and the
/// probability it was kept with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// For a kept trace, the index (configuration order) of the first policy that sampled it.
    pub policy: Option<u16>,
    /// By configuration index (up to `MAX_RECORDED_VOTES`); all `NotEvaluated` when no policy voted.
    pub votes: [Ballot; MAX_RECORDED_VOTES],
    /// What this stage did to a kept trace's sampling probability (`Unknown` for one not kept).
    pub stage: Stage,
}

impl Decision {
    /// A trace that left without a vote (too large, evicted, dropped at shutdown).
    pub fn without_votes(outcome: Outcome) -> Self {
        Decision {
            outcome,
            policy: None,
            votes: [Ballot::NotEvaluated; MAX_RECORDED_VOTES],
            stage: Stage::Unknown,
        }
    }

    /// The decision's reason, a stable name.
    pub fn reason(&self) -> &'static str {
        self.outcome.name()
    }

    pub fn kept(&self) -> bool {
        self.outcome == Outcome::Sampled
    }
}

/// Whether evaluation stops after this vote: at a drop, and with `sample_on_first_match` at a sample.
#[inline]
pub fn stops(vote: Vote, sample_on_first_match: bool) -> bool {
    vote == Vote::Dropped || (sample_on_first_match && vote == Vote::Sampled)
}

/// The precedence rule (module doc) over the votes cast, in evaluation order, each with the index of its
/// policy (configuration order). Returns the outcome and, for a kept trace, the deciding policy.
pub fn precedence(votes: impl IntoIterator<Item = (usize, Ballot)>) -> (Outcome, Option<usize>) {
    let mut first_sampled = None;
    for (i, b) in votes {
        match b {
            Ballot::Dropped => return (Outcome::DroppedByPolicy, None),
            Ballot::Sampled if first_sampled.is_none() => first_sampled = Some(i),
            _ => {}
        }
    }
    match first_sampled {
        Some(i) => (Outcome::Sampled, Some(i)),
        None => (Outcome::NotSampled, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ballot::{Dropped as D, Error as E, NotEvaluated as X, NotSampled as N, Sampled as S};

    /// One row per precedence rule, each a case of the reference's `makeDecision` (v0.161.0, processor.go):
    /// votes in evaluation order (the drop policies first, as the reference sorts them) → (outcome, deciding
    /// policy). Policy indexes are configuration order, which evaluation order may differ from.
    macro_rules! precedence_table {
        ($($name:ident: [$(($i:expr, $b:expr)),*] => ($o:expr, $p:expr);)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(precedence([$(($i, $b)),*]), ($o, $p));
            }
        )*};
    }

    precedence_table! {
        // `samplingDecisions[Dropped] != nil` is checked first: a drop wins over any sample.
        dropped_beats_sampled: [(2, D), (0, S), (1, S)] => (Outcome::DroppedByPolicy, None);
        dropped_beats_not_sampled: [(1, D), (0, N)] => (Outcome::DroppedByPolicy, None);
        // Then `Sampled`: the first policy that sampled is the one associated with the decision.
        first_sampled_decides: [(0, N), (1, S), (2, S)] => (Outcome::Sampled, Some(1));
        sampled_in_evaluation_order: [(3, S), (0, S)] => (Outcome::Sampled, Some(3));
        sampled_beats_not_sampled: [(0, S), (1, N)] => (Outcome::Sampled, Some(0));
        // The default `finalDecision` is NotSampled.
        nothing_sampled_is_not_sampled: [(0, N), (1, N)] => (Outcome::NotSampled, None);
        no_policy_is_not_sampled: [] => (Outcome::NotSampled, None);
        // An error records a policy under `Error`, which no case of the switch reads: no vote.
        error_is_no_vote: [(0, E), (1, S)] => (Outcome::Sampled, Some(1));
        only_errors_is_not_sampled: [(0, E), (1, E)] => (Outcome::NotSampled, None);
        not_evaluated_is_no_vote: [(0, X), (1, N)] => (Outcome::NotSampled, None);
    }

    /// Scenario: evaluation order. Guarantees: it stops at a drop (the reference's `break`), and at a sample
    /// only with `sample_on_first_match`.
    #[test]
    fn where_evaluation_stops() {
        assert!(stops(Vote::Dropped, false));
        assert!(stops(Vote::Dropped, true));
        assert!(!stops(Vote::Sampled, false));
        assert!(stops(Vote::Sampled, true));
        assert!(!stops(Vote::NotSampled, true));
    }

    /// Scenario: `invert_match`. Guarantees: it negates the match before the vote, so an inverted policy
    /// whose attribute did not match samples, and precedence treats it as any sample (the reference since
    /// its `Invert*` decisions lost their producers).
    #[test]
    fn inverted_match_is_a_plain_vote() {
        assert_eq!(super::super::vote(false, true), Vote::Sampled);
        assert_eq!(super::super::vote(true, true), Vote::NotSampled);
        assert_eq!(
            precedence([(0, N), (1, S)]),
            (Outcome::Sampled, Some(1)),
            "an inverted sample beside a not-sampled vote samples"
        );
    }

    #[test]
    fn ballots_record_votes_and_errors() {
        assert_eq!(Ballot::of::<(), ()>(&Ok((Vote::Sampled, ()))), S);
        assert_eq!(Ballot::of::<(), ()>(&Ok((Vote::Dropped, ()))), D);
        assert_eq!(Ballot::of::<(), &str>(&Err("x")), E);
        assert_eq!(Ballot::default().name(), "not_evaluated");
    }
}
