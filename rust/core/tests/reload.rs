//! Live reload (`Engine::reload`): buffered traces judged by the new policies, refused settings, versions,
//! and no trace lost or decided twice across swaps under concurrent traffic.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::otlp_prost::*;
use common::{span_ids, stat};
use prost::Message;
use serde_json::json;
use tailsample_core::store::Knowledge;
use tailsample_core::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;

fn config(policies: serde_json::Value) -> EngineConfig {
    EngineConfig::from_value(
        &json!({"decision_wait": "10s", "num_traces": 10000, "policies": policies}),
    )
    .expect("valid config")
}

/// A one-trace request under service `service` whose spans get `f` applied; returns (trace id, bytes).
fn trace(rng: &mut Rng, service: &str, f: impl Fn(&mut Span)) -> (Vec<u8>, Vec<u8>) {
    let mut req = request(rng, 3, 3, service);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.status = None;
        s.attributes.retain(|kv| kv.key != "payment.amount");
        f(s);
    }
    let id = req.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    (id, req.encode_to_vec())
}

fn kept(payloads: &[Vec<u8>]) -> BTreeSet<Vec<u8>> {
    span_ids(payloads).into_iter().map(|(t, _)| t).collect()
}

fn set(ids: &[&Vec<u8>]) -> BTreeSet<Vec<u8>> {
    ids.iter().map(|i| (*i).clone()).collect()
}

/// Scenario: traces buffered under a set that reads only `tier`, then a reload to a set of folding policies
/// over keys the old set never extracted (a span attribute for `string_attribute`, a resource attribute, an
/// `ottl_condition`, a `trace_aggregate`). Guarantees: at their due time the buffered traces are judged by
/// the new policies exactly as traces that arrived under them, and what the old set would have kept is not.
#[test]
fn buffered_traces_are_refolded_under_the_new_policies() {
    let old = json!([{"name": "tier", "type": "string_attribute",
        "string_attribute": {"key": "tier", "values": ["gold"]}}]);
    let new = json!([
        {"name": "region", "type": "string_attribute",
            "string_attribute": {"key": "region", "values": ["eu"]}},
        {"name": "billing", "type": "string_attribute",
            "string_attribute": {"key": "service.name", "values": ["billing"]}},
        {"name": "slow-db", "type": "ottl_condition",
            "ottl_condition": {"span": ["attributes[\"db.rows\"] > 1000"]}},
        {"name": "big-order", "type": "trace_aggregate",
            "trace_aggregate": {"key": "payment.amount", "function": "sum", "min_value": 100.0}},
    ]);
    let e = Engine::new(config(old));
    let mut rng = Rng(22);
    let (gold, a) = trace(&mut rng, "svc", |s| {
        s.attributes.push(kv_str("tier", "gold"))
    });
    let (eu, b) = trace(&mut rng, "svc", |s| {
        s.attributes.push(kv_str("region", "eu"))
    });
    let (billing, c) = trace(&mut rng, "billing", |_| {});
    let (slow, d) = trace(&mut rng, "svc", |s| {
        s.attributes.push(kv_int("db.rows", 5000))
    });
    // 3 spans of 40 each: the sum (120) passes, no single span does.
    let (big, f) = trace(&mut rng, "svc", |s| {
        s.attributes.push(kv_double("payment.amount", 40.0))
    });
    let (plain, g) = trace(&mut rng, "svc", |s| {
        s.attributes.push(kv_str("region", "us"))
    });
    for p in [&a, &b, &c, &d, &f, &g] {
        e.ingest(p, 100 * S).unwrap();
    }
    assert_eq!(e.config_version().number, 1);
    let r = e.reload(config(new.clone())).unwrap();
    assert!(r.changed);
    assert_eq!(r.version.number, 2);
    assert_eq!(r.traces_refolded, 6);
    assert_eq!(
        stat(&e, "traces_in_memory"),
        6,
        "buffered traces stay buffered"
    );
    let out = e.poll(110 * S);
    assert_eq!(kept(&out), set(&[&eu, &billing, &slow, &big]));
    assert!(!kept(&out).contains(&gold) && !kept(&out).contains(&plain));

    // The same traces sent under the new set from the start: the same verdicts, trace for trace.
    let fresh = Engine::new(config(new));
    for p in [&a, &b, &c, &d, &f, &g] {
        fresh.ingest(p, 100 * S).unwrap();
    }
    assert_eq!(kept(&fresh.poll(110 * S)), kept(&out));

    // The decision log says which configuration decided.
    match e.explain(eu.clone().try_into().unwrap()) {
        Knowledge::Decided(r) => assert_eq!(r.config_version, 2),
        other => panic!("expected a decision, got {other:?}"),
    }
}

/// Scenario: a trace with half its spans in before the reload and half after. Guarantees: the spans after the
/// swap fold into the re-folded summary (the trace is judged whole by the new set).
#[test]
fn spans_after_the_swap_fold_into_the_refolded_summary() {
    let old = json!([{"name": "never", "type": "string_attribute",
        "string_attribute": {"key": "x", "values": ["y"]}}]);
    let new = json!([{"name": "big-order", "type": "trace_aggregate",
        "trace_aggregate": {"key": "payment.amount", "function": "sum", "min_value": 100.0}}]);
    let e = Engine::new(config(old));
    let mut rng = Rng(5);
    let mut req = request(&mut rng, 4, 4, "svc");
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.attributes.retain(|kv| kv.key != "payment.amount");
        s.attributes.push(kv_double("payment.amount", 30.0));
    }
    let id = req.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    let mut first = req.clone();
    first.resource_spans[0].scope_spans[0].spans.truncate(2);
    let mut second = req;
    second.resource_spans[0].scope_spans[0].spans.drain(..2);
    e.ingest(&first.encode_to_vec(), 100 * S).unwrap();
    e.reload(config(new)).unwrap();
    e.ingest(&second.encode_to_vec(), 101 * S).unwrap();
    // 4 × 30 = 120 ≥ 100: only the two halves together pass.
    let out = e.poll(110 * S);
    assert_eq!(kept(&out), set(&[&id]));
    assert_eq!(span_ids(&out).len(), 4);
}

/// Scenario: a reload that changes num_traces and num_shards, then one equal to the live configuration.
/// Guarantees: the first is refused naming both, nothing swapped (the old policy still decides, the version
/// stays); the second changes nothing and keeps the version.
#[test]
fn fixed_settings_are_refused_by_name_and_the_old_policies_keep_deciding() {
    let keep_all = json!([{"name": "all", "type": "always_sample"}]);
    let e = Engine::new(config(keep_all.clone()));
    let v1 = e.config_version();
    let bad = EngineConfig::from_value(&json!({"decision_wait": "10s", "num_traces": 500, "num_shards": 3,
        "policies": [{"name": "none", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}}]}))
    .unwrap();
    let err = e.reload(bad).unwrap_err().to_string();
    assert!(err.contains("num_traces (10000 → 500)"), "{err}");
    assert!(err.contains("num_shards"), "{err}");
    assert_eq!(e.config_version(), v1);
    let mut rng = Rng(9);
    let (id, p) = trace(&mut rng, "svc", |_| {});
    e.ingest(&p, 100 * S).unwrap();
    assert_eq!(
        kept(&e.poll(110 * S)),
        set(&[&id]),
        "the old policy still decides"
    );
    let same = e.reload(config(keep_all)).unwrap();
    assert!(!same.changed);
    assert_eq!(same.version, v1);
}

/// Scenario: four threads ingest traces while another swaps between two keep-everything sets 50 times, then
/// everything is flushed. Guarantees: every span sent comes out exactly once (no trace lost, none decided
/// twice), and the decisions name the configuration that made them.
#[test]
fn reloads_under_concurrent_traffic_lose_nothing_and_decide_once() {
    let a = json!([{"name": "a", "type": "always_sample"}]);
    let b = json!([{"name": "b", "type": "always_sample"},
        {"name": "tier", "type": "string_attribute", "string_attribute": {"key": "tier", "values": ["gold"]}}]);
    let e = Arc::new(Engine::new(config(a.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let e = e.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(100 + t);
            let mut sent = Vec::new();
            for i in 0..300 {
                let (_, p) = trace(&mut rng, "svc", |s| {
                    s.attributes.push(kv_str("tier", "gold"))
                });
                e.ingest(&p, 100 * S + i * S / 10).unwrap();
                sent.push(p);
            }
            sent
        }));
    }
    {
        let (e, stop, out) = (e.clone(), stop.clone(), out.clone());
        handles.push(std::thread::spawn(move || {
            let mut now = 100 * S;
            while !stop.load(Ordering::Relaxed) {
                now += S;
                let got = e.poll(now);
                out.lock().unwrap().extend(got);
            }
            Vec::new()
        }));
    }
    for i in 0..50 {
        let next = if i % 2 == 0 { b.clone() } else { a.clone() };
        e.reload(config(next)).unwrap();
    }
    let mut sent = Vec::new();
    for h in handles.drain(..4) {
        sent.extend(h.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let mut all = std::mem::take(&mut *out.lock().unwrap());
    all.extend(e.flush(10_000 * S));
    let got = span_ids(&all);
    let unique: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "no span came out twice");
    assert_eq!(got.len(), span_ids(&sent).len(), "every span came out");
    assert_eq!(stat(&e, "traces_sampled"), 1200);
    assert_eq!(e.config_version().number, 51);
}
