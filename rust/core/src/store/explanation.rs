//! What the store knows of one trace, as a caller outside Rust reads it (`tailsample explain`, `/debug/traces`):
//! times in seconds on the engine clock, votes by policy name, the shape `tailsample.incident.explain` documents.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::decision_log::Record;
use super::shard::Knowledge;
use crate::consistent::probability_of_threshold;
use crate::policy::decision::Ballot;
use crate::policy::inclusion::Stage;

#[derive(Debug, Serialize)]
pub struct Explanation {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The engine clock (s); None before the engine saw any time.
    pub clock: Option<f64>,
    #[serde(flatten)]
    pub known: Known,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Known {
    Pending {
        first_seen: f64,
        due: f64,
        span_count: u32,
    },
    Decided {
        outcome: &'static str,
        trigger: &'static str,
        config_version: u32,
        decided_by: Option<String>,
        /// Each policy's vote, in configuration order; empty when none was evaluated (evicted, too large).
        #[serde(serialize_with = "ordered_map")]
        votes: Vec<(String, &'static str)>,
        first_seen: f64,
        due: f64,
        decided_at: f64,
        span_count: u32,
        late_spans: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        propagation: Option<Propagation>,
        /// With adjusted counts on and the trace kept: its sampling probability (None: unknown).
        #[serde(skip_serializing_if = "Option::is_none")]
        sampling_probability: Option<Option<f64>>,
    },
    SampledCache,
    NonSampledFilter,
    Unknown,
}

#[derive(Debug, Serialize)]
pub struct Propagation {
    pub gaps: u16,
    pub orphan_spans: u16,
}

fn ordered_map<S: Serializer>(pairs: &[(String, &'static str)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

impl Explanation {
    /// `names`: the policy names of the configuration that decided the trace; `adjusted`: adjusted counts on.
    pub fn new(
        trace_id: u128,
        clock: i64,
        knowledge: Knowledge,
        names: &[String],
        adjusted: bool,
    ) -> Self {
        let known = match knowledge {
            Knowledge::Pending {
                first_seen,
                due,
                span_count,
            } => Known::Pending {
                first_seen: secs(first_seen),
                due: secs(due),
                span_count,
            },
            Knowledge::Decided(r) => decided(&r, names, adjusted),
            Knowledge::InSampledCache => Known::SampledCache,
            Knowledge::InNotSampledFilter => Known::NonSampledFilter,
            Knowledge::Unknown => Known::Unknown,
        };
        Explanation {
            trace_id: format!("{trace_id:032x}"),
            clock: (clock != i64::MIN).then(|| secs(clock)),
            known,
        }
    }
}

fn decided(r: &Record, names: &[String], adjusted: bool) -> Known {
    let d = &r.decision;
    let evaluated = d.votes.iter().any(|v| *v != Ballot::NotEvaluated);
    let votes = if evaluated {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    d.votes.get(i).copied().unwrap_or_default().name(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let sampling_probability = (adjusted && d.kept()).then_some(match d.stage {
        Stage::Certain => Some(1.0),
        Stage::Threshold(t) => Some(probability_of_threshold(t)),
        Stage::Proportional(p) => Some(p),
        Stage::Unknown => None,
    });
    Known::Decided {
        outcome: d.reason(),
        trigger: r.trigger.name(),
        config_version: r.config_version,
        decided_by: d.policy.and_then(|i| names.get(usize::from(i)).cloned()),
        votes,
        first_seen: secs(r.first_seen),
        due: secs(r.due),
        decided_at: secs(r.decided_at),
        span_count: r.span_count,
        late_spans: r.late_spans,
        propagation: r.audit.map(|a| Propagation {
            gaps: a.gaps,
            orphan_spans: a.orphans,
        }),
        sampling_probability,
    }
}
