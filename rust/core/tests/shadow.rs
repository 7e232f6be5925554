//! Shadow policies (`tailsample.shadow.policies`): judged beside the live set, never changing what is kept.

mod common;

use std::collections::BTreeSet;

use common::otlp_prost::*;
use common::stat;
use prost::Message;
use serde_json::{json, Value};
use tailsample_core::policy::decision::Outcome;
use tailsample_core::store::Knowledge;
use tailsample_core::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;

fn engine(policies: Value, shadow: Option<Value>) -> Engine {
    engine_with(1, policies, shadow)
}

fn engine_with(shards: usize, policies: Value, shadow: Option<Value>) -> Engine {
    let mut cfg = json!({"decision_wait": "10s", "num_traces": 100_000, "num_shards": shards, "policies": policies});
    if let Some(sh) = shadow {
        cfg["tailsample"] = json!({"shadow": sh});
    }
    Engine::new(EngineConfig::from_value(&cfg).expect("valid config"))
}

/// Live: errors, slow user IDs, 5 % random. Folding (attribute) policies on both sides, a stateful one too.
fn live() -> Value {
    json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "users", "type": "string_attribute",
         "string_attribute": {"key": "user.id", "values": ["user-1.*"], "enabled_regex_matching": true}},
        {"name": "random", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}},
    ])
}

fn shadow_policies() -> Value {
    shadow_set(true)
}

/// With `stateful`, a rate limit inside an `and`: its budget is per shard, so a separate run matches trace for
/// trace only when traces reach the same shards (one shard; each engine seeds its own routing).
fn shadow_set(stateful: bool) -> Value {
    let mut set = json!([
        {"name": "server-errors", "type": "numeric_attribute",
         "numeric_attribute": {"key": "http.response.status_code", "min_value": 500, "max_value": 599}},
        {"name": "users-2", "type": "string_attribute",
         "string_attribute": {"key": "user.id", "values": ["user-2.*"], "enabled_regex_matching": true}},
        {"name": "budget", "type": "and", "and": {"and_sub_policy": [
            {"name": "puts", "type": "string_attribute",
             "string_attribute": {"key": "http.request.method", "values": ["PUT"]}},
            {"name": "limit", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 20}}]}},
        {"name": "random", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}},
    ]);
    if !stateful {
        set.as_array_mut().unwrap().remove(2);
    }
    set
}

/// 2,000 traces of 1-4 spans over 20 s, in payloads of mixed traces.
fn traffic() -> Vec<(i64, Vec<u8>)> {
    let mut rng = Rng(42);
    let mut out = Vec::new();
    for i in 0..200 {
        let mut req = request(&mut rng, 10 + (i % 7), 1 + (i % 4), "checkout");
        let t0 = 1_700_000_000 * S as u64 + i as u64 * 100_000_000;
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    s.start_time_unix_nano += t0 - 1_700_000_000_000_000_000;
                    s.end_time_unix_nano += t0 - 1_700_000_000_000_000_000;
                }
            }
        }
        out.push((i as i64 * S / 10, req.encode_to_vec()));
    }
    out
}

fn kept_ids(payloads: &[Vec<u8>], into: &mut BTreeSet<Vec<u8>>) {
    for p in payloads {
        let req = ExportTraceServiceRequest::decode(p.as_slice()).expect("output parses");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    into.insert(s.trace_id);
                }
            }
        }
    }
}

fn trace_ids(traffic: &[(i64, Vec<u8>)]) -> BTreeSet<Vec<u8>> {
    let mut all = BTreeSet::new();
    kept_ids(
        &traffic.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        &mut all,
    );
    all
}

/// Runs the traffic through `e`, polling as it goes (the rate limiter sees time move); the kept trace IDs.
fn run(e: &Engine, traffic: &[(i64, Vec<u8>)]) -> BTreeSet<Vec<u8>> {
    let mut kept = BTreeSet::new();
    for (t, p) in traffic {
        e.ingest(p, *t).unwrap();
        kept_ids(&e.poll(*t), &mut kept);
    }
    kept_ids(&e.poll(1000 * S), &mut kept);
    kept
}

/// Scenario: live set L with shadow set Sh; a separate engine runs Sh as its live set; a third runs L alone.
/// Guarantees: the shadow verdict of every trace (explain) is the separate run's, trace for trace; the live
/// output is what L alone keeps (the shadow never changes it); the report's totals agree with both.
#[test]
fn shadow_verdicts_match_a_separate_run_trace_for_trace() {
    // One shard with a stateful shadow policy; four shards with stateless ones.
    for (shards, stateful) in [(1, true), (4, false)] {
        same_verdicts(shards, stateful);
    }
}

fn same_verdicts(shards: usize, stateful: bool) {
    let traffic = traffic();
    let all = trace_ids(&traffic);
    let set = shadow_set(stateful);
    let with_shadow = engine_with(shards, live(), Some(json!({"policies": set})));
    let shadow_alone = engine_with(shards, set.clone(), None);
    let live_alone = engine_with(shards, live(), None);
    let kept_live = run(&with_shadow, &traffic);
    let kept_shadow = run(&shadow_alone, &traffic);
    assert_eq!(
        kept_live,
        run(&live_alone, &traffic),
        "the shadow set changes nothing kept"
    );
    let sizes = (kept_live.len(), kept_shadow.len(), all.len());
    assert!(
        kept_shadow != kept_live && !kept_shadow.is_empty() && kept_shadow.len() < all.len(),
        "{sizes:?}"
    );

    let mut shadow_kept_by_explain = BTreeSet::new();
    for id in &all {
        let Knowledge::Decided(r) = with_shadow.explain(id.as_slice().try_into().unwrap()) else {
            panic!("trace decided and logged");
        };
        let verdict = r
            .shadow
            .unpack()
            .expect("every decided trace has a shadow verdict");
        if verdict.outcome == Outcome::Sampled {
            shadow_kept_by_explain.insert(id.clone());
            assert!(verdict.policy.is_some());
        }
    }
    assert_eq!(shadow_kept_by_explain, kept_shadow);

    let report = with_shadow.shadow_report().expect("a shadow set");
    let t = report.totals;
    assert_eq!(t.traces_judged, all.len() as u64);
    let live_only = kept_live.difference(&kept_shadow).count() as u64;
    let shadow_only = kept_shadow.difference(&kept_live).count() as u64;
    let both = kept_live.intersection(&kept_shadow).count() as u64;
    assert_eq!(t.traces, [live_only, shadow_only, both]);
    assert_eq!(report.disagreements.len() as u64, live_only + shadow_only);
    // Per shadow policy: the same counters as the separate run's live policies.
    let alone = shadow_alone.policy_stats();
    for ((name, c), (name2, c2)) in report.policies.iter().zip(&alone) {
        assert_eq!(name, name2);
        assert_eq!(
            (c.sampled, c.not_sampled, c.decided),
            (c2.sampled, c2.not_sampled, c2.decided),
            "{name}"
        );
    }
    assert_eq!(stat(&with_shadow, "traces_sampled"), kept_live.len() as u64);
}

/// Scenario: `max_disagreements` 5 and `attribute: true`. Guarantees: the ring holds the latest 5 and counts the
/// rest forgotten; kept spans carry the shadow's decision.
#[test]
fn disagreements_are_bounded_and_kept_spans_carry_the_shadow_verdict() {
    let traffic = traffic();
    let e = engine(
        live(),
        Some(json!({"policies": shadow_policies(), "attribute": true, "max_disagreements": 4})),
    );
    let mut decisions = BTreeSet::new();
    for (t, p) in &traffic {
        e.ingest(p, *t).unwrap();
        for out in e.poll(*t) {
            let req = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
            for s in req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                let d = s
                    .attributes
                    .iter()
                    .find(|a| a.key == "tailsampling.shadow.decision");
                decisions.insert(format!(
                    "{:?}",
                    d.expect("attribute on every kept span").value
                ));
            }
        }
    }
    assert_eq!(
        decisions.len(),
        2,
        "both sampled and not_sampled seen: {decisions:?}"
    );
    let r = e.shadow_report().unwrap();
    let disagreed = r.totals.traces[0] + r.totals.traces[1];
    assert!(disagreed > 4);
    assert!(r.disagreements.len() <= 4);
    assert_eq!(
        r.totals.disagreements_forgotten,
        disagreed - r.disagreements.len() as u64
    );
}

/// Scenario: bad shadow blocks. Guarantees: refused with the YAML path.
#[test]
fn bad_shadow_configuration_is_refused_with_its_path() {
    for (shadow, want) in [
        (json!({}), "tailsample.shadow.policies: is required"),
        (
            json!({"policies": []}),
            "tailsample.shadow.policies: expected at least one policy",
        ),
        (
            json!({"policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["EROR"]}}]}),
            "tailsample.shadow.policies[0].status_code.status_codes[0]",
        ),
        (
            json!({"policies": [{"name": "a", "type": "always_sample"}], "atribute": true}),
            "tailsample.shadow.atribute: unknown key",
        ),
    ] {
        let cfg = json!({"policies": [{"name": "a", "type": "always_sample"}], "tailsample": {"shadow": shadow}});
        let err = EngineConfig::from_value(&cfg)
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with(want), "{err}");
    }
}
