//! The engine end to end, in Rust: timing, bounds, caches, re-emission and the accounting invariant.

mod common;

use common::otlp_prost::*;
use common::{span_ids, stat};
use prost::Message;
use serde_json::json;
use tailsample_core::otlp::wire::RejectReason;
use tailsample_core::{Engine, EngineConfig, Error};

const S: i64 = 1_000_000_000;

fn engine(extra: serde_json::Value, policies: serde_json::Value) -> Engine {
    let mut cfg = json!({"decision_wait": "10s", "num_traces": 1000, "policies": policies});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Engine::new(EngineConfig::from_value(&cfg).expect("valid config"))
}

fn always() -> serde_json::Value {
    json!([{"name": "all", "type": "always_sample"}])
}

fn one_trace(rng: &mut Rng, spans: usize) -> (Vec<u8>, Vec<u8>) {
    let req = request(rng, spans, spans, "svc");
    let tid = req.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    (tid, req.encode_to_vec())
}

fn invariant(e: &Engine) {
    let got = stat(e, "traces_sampled")
        + stat(e, "traces_not_sampled")
        + stat(e, "traces_dropped")
        + stat(e, "traces_evicted")
        + stat(e, "traces_in_memory");
    assert_eq!(
        stat(e, "traces_received"),
        got,
        "traces_received = sampled + not_sampled + dropped + evicted + in_memory"
    );
}

/// Scenario: a trace first seen at t=100 s with decision_wait 10 s. Guarantees: not decided at 109.9 s,
/// decided at 110 s.
#[test]
fn decided_exactly_at_decision_wait() {
    let e = engine(json!({}), always());
    let (_, p) = one_trace(&mut Rng(1), 3);
    e.ingest(&p, 100 * S).unwrap();
    assert!(e.poll(100 * S + 9_900_000_000).is_empty());
    let out = e.poll(110 * S);
    assert_eq!(span_ids(&out).len(), 3);
    assert!(e.poll(200 * S).is_empty(), "decided once");
    invariant(&e);
}

/// Scenario: the root span arrives 1 s after the first span, with a 2 s root wait. Guarantees: decided at 3 s,
/// not at 10 s; a trace without root waits the full decision_wait.
#[test]
fn root_received_decides_early() {
    let e = engine(json!({"decision_wait_after_root_received": "2s"}), always());
    let mut rng = Rng(2);
    let req = request(&mut rng, 2, 2, "svc");
    let mut child_only = req.clone();
    child_only.resource_spans[0].scope_spans[0].spans.remove(0);
    let mut root_only = req.clone();
    root_only.resource_spans[0].scope_spans[0].spans.truncate(1);
    let (_, rootless) = one_trace(&mut rng, 1);
    let rootless_req = ExportTraceServiceRequest::decode(rootless.as_slice()).unwrap();
    let mut rootless_req = rootless_req;
    rootless_req.resource_spans[0].scope_spans[0].spans[0].parent_span_id = vec![9; 8];
    e.ingest(&child_only.encode_to_vec(), 0).unwrap();
    e.ingest(&rootless_req.encode_to_vec(), 0).unwrap();
    e.ingest(&root_only.encode_to_vec(), S).unwrap();
    assert_eq!(
        e.next_due(),
        Some(3 * S),
        "the root's wait ends before decision_wait"
    );
    assert!(e.poll(2_900_000_000).is_empty());
    assert_eq!(span_ids(&e.poll(3 * S)).len(), 2);
    assert_eq!(stat(&e, "decisions_after_root"), 1);
    assert_eq!(
        e.next_due(),
        Some(10 * S),
        "the rootless trace's decision_wait"
    );
    assert!(e.poll(9 * S).is_empty());
    assert_eq!(span_ids(&e.poll(10 * S)).len(), 1);
    assert_eq!(e.next_due(), None, "nothing waits");
}

/// Scenario: num_traces 3 and a fourth trace. Guarantees: the oldest first-seen trace is evicted and counted;
/// the others are decided normally.
#[test]
fn eviction_takes_the_oldest() {
    let e = engine(json!({"num_traces": 3}), always());
    let mut rng = Rng(3);
    let mut ids = Vec::new();
    for t in 0..4 {
        let (tid, p) = one_trace(&mut rng, 2);
        e.ingest(&p, t * S).unwrap();
        ids.push(tid);
    }
    assert_eq!(stat(&e, "traces_evicted"), 1);
    assert_eq!(stat(&e, "spans_evicted"), 2);
    assert_eq!(stat(&e, "traces_in_memory"), 3);
    let out = span_ids(&e.flush(100 * S));
    assert!(
        out.iter().all(|(t, _)| *t != ids[0]),
        "the oldest was evicted"
    );
    assert_eq!(out.len(), 6);
    invariant(&e);
}

/// Scenario: block_on_overflow at num_traces. Guarantees: BackpressureError, nothing of the payload taken
/// (not even spans of known traces), and after the buffered traces are decided the same payload goes in.
#[test]
fn block_on_overflow_refuses_whole_payload() {
    let e = engine(
        json!({"num_traces": 2, "block_on_overflow": true}),
        always(),
    );
    let mut rng = Rng(4);
    let (_, a) = one_trace(&mut rng, 1);
    let (_, b) = one_trace(&mut rng, 1);
    e.ingest(&a, 0).unwrap();
    e.ingest(&b, 0).unwrap();
    let (_, c) = one_trace(&mut rng, 3);
    match e.ingest(&c, S) {
        Err(Error::Backpressure { limit, .. }) => assert_eq!(limit, "num_traces"),
        other => panic!("expected backpressure, got {other:?}"),
    }
    assert_eq!(stat(&e, "spans_received"), 2);
    assert_eq!(stat(&e, "payloads_refused"), 1);
    assert_eq!(span_ids(&e.poll(10 * S)).len(), 2);
    e.ingest(&c, 11 * S).unwrap();
    assert_eq!(span_ids(&e.flush(30 * S)).len(), 3);
    assert_eq!(stat(&e, "traces_evicted"), 0);
    invariant(&e);
}

/// Scenario: decision caches on; late spans after the decision. Guarantees: late spans of a kept trace come out
/// at the next poll; those of a dropped trace are discarded; both counted.
#[test]
fn late_spans_follow_the_cached_decision() {
    let policies = json!([{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]);
    let e = engine(
        json!({"decision_cache": {"sampled_cache_size": 100, "non_sampled_cache_size": 100}}),
        policies,
    );
    let mut rng = Rng(5);
    let mut kept = request(&mut rng, 2, 2, "svc");
    kept.resource_spans[0].scope_spans[0].spans[1].status = Some(Status {
        message: String::new(),
        code: 2,
    });
    let mut late_kept = kept.clone();
    late_kept.resource_spans[0].scope_spans[0].spans.truncate(1);
    late_kept.resource_spans[0].scope_spans[0].spans[0].span_id = vec![42; 8];
    let mut dropped = request(&mut rng, 2, 2, "svc");
    dropped.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .for_each(|s| s.status = None);
    let mut late_dropped = dropped.clone();
    late_dropped.resource_spans[0].scope_spans[0]
        .spans
        .truncate(1);
    late_dropped.resource_spans[0].scope_spans[0].spans[0].span_id = vec![43; 8];
    e.ingest(&kept.encode_to_vec(), 0).unwrap();
    e.ingest(&dropped.encode_to_vec(), 0).unwrap();
    assert_eq!(span_ids(&e.poll(10 * S)).len(), 2);
    e.ingest(&late_kept.encode_to_vec(), 11 * S).unwrap();
    e.ingest(&late_dropped.encode_to_vec(), 11 * S).unwrap();
    assert_eq!(
        e.next_due(),
        Some(i64::MIN),
        "a late span of a kept trace: due at once"
    );
    let late = span_ids(&e.poll(11 * S));
    assert_eq!(e.next_due(), None);
    assert_eq!(
        late,
        vec![(
            kept.resource_spans[0].scope_spans[0].spans[0]
                .trace_id
                .clone(),
            vec![42; 8]
        )]
    );
    assert_eq!(stat(&e, "late_spans_forwarded"), 1);
    assert_eq!(stat(&e, "late_spans_dropped"), 1);
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    invariant(&e);
}

/// Scenario: caches off (the default); a span arrives after its trace was decided, then the trace is pushed
/// out of `num_traces` by newer ones. Guarantees: as in the reference, the decided trace stays held (ID only)
/// and its late span follows the decision; once `num_traces` newer traces pushed it out, a late span starts a
/// new trace.
#[test]
fn without_caches_late_spans_follow_the_decision_until_num_traces_pushes_it_out() {
    let e = engine(json!({"num_traces": 2, "num_shards": 1}), always());
    let (_, p) = one_trace(&mut Rng(6), 1);
    e.ingest(&p, 0).unwrap();
    assert_eq!(span_ids(&e.poll(10 * S)).len(), 1);
    assert_eq!(stat(&e, "decided_traces_in_memory"), 1);
    e.ingest(&p, 11 * S).unwrap();
    assert_eq!(stat(&e, "traces_received"), 1);
    assert_eq!(stat(&e, "late_spans_forwarded"), 1);
    assert_eq!(span_ids(&e.poll(11 * S)).len(), 1);
    // Two newer traces: the second one's arrival pushes the held decision out (2 places, oldest first).
    for seed in [7, 8] {
        let (_, q) = one_trace(&mut Rng(seed), 1);
        e.ingest(&q, 12 * S).unwrap();
    }
    assert_eq!(stat(&e, "decided_traces_in_memory"), 0);
    assert_eq!(stat(&e, "traces_evicted"), 0);
    e.ingest(&p, 13 * S).unwrap();
    assert_eq!(stat(&e, "traces_received"), 4);
    invariant(&e);
}

/// One span of trace ID `[byte; 16]`, encoded.
fn span_of_trace(rng: &mut Rng, byte: u8) -> Vec<u8> {
    let mut req = request(rng, 1, 1, "svc");
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![byte; 16];
    req.encode_to_vec()
}

/// Scenario: caches off, `num_traces` 2 full (a held decision, A, and a buffered trace, B); one payload then
/// brings a new trace C, a span of A and a new trace D (a payload's traces are taken in ID order: C, A, D).
/// Guarantees, as when each held decision left the table at once: C's arrival pushes A's decision out, so A's
/// span starts a new trace (not a late span) and pushes out B; D pushes out C; the counts stay exact.
#[test]
fn a_held_decision_pushed_out_mid_payload_is_gone_for_the_rest_of_it() {
    let e = engine(json!({"num_traces": 2, "num_shards": 1}), always());
    let rng = &mut Rng(21);
    e.ingest(&span_of_trace(rng, 0xA0), 0).unwrap();
    assert_eq!(span_ids(&e.poll(10 * S)).len(), 1);
    assert_eq!(stat(&e, "decided_traces_in_memory"), 1);
    e.ingest(&span_of_trace(rng, 0xB0), 11 * S).unwrap();
    // Concatenated requests are one request holding both's resource spans.
    let mut payload = span_of_trace(rng, 0x10);
    payload.extend(span_of_trace(rng, 0xA0));
    payload.extend(span_of_trace(rng, 0xD0));
    e.ingest(&payload, 12 * S).unwrap();
    assert_eq!(
        stat(&e, "late_spans_forwarded") + stat(&e, "late_spans_dropped"),
        0
    );
    assert_eq!(stat(&e, "traces_received"), 5);
    assert_eq!(stat(&e, "traces_evicted"), 2, "B, then C");
    assert_eq!(stat(&e, "traces_in_memory"), 2, "A again, and D");
    assert_eq!(stat(&e, "decided_traces_in_memory"), 0);
    invariant(&e);
    assert_eq!(span_ids(&e.poll(30 * S)).len(), 2);
    assert_eq!(stat(&e, "decided_traces_in_memory"), 2);
    invariant(&e);
}

/// Scenario: caches off; 10,000 traces, every other one with its root (decided 1 s after it, the rest at
/// decision_wait: decisions far out of arrival order), half of them kept; then a late span of each, then 5,000
/// newer traces where 2,000 fit. Guarantees: every late span follows its own trace's decision across thousands of
/// held decisions; newer traces push the oldest arrivals out first (3,000 of them), whatever order they were
/// decided in, and the late spans of the rest still follow their decisions.
#[test]
fn held_decisions_follow_each_trace_and_leave_oldest_arrival_first() {
    use std::collections::BTreeSet;
    let half = json!([{"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}}]);
    let e = engine(
        json!({"num_traces": 12_000, "num_shards": 1, "decision_wait_after_root_received": "1s"}),
        half,
    );
    let rng = &mut Rng(33);
    let ms = S / 1000;
    let mut ids = Vec::new();
    let mut kept = BTreeSet::new();
    let mut next_poll = 0;
    for i in 0..10_000i64 {
        let mut req = request(rng, 2, 2, "svc");
        if i % 2 == 1 {
            req.resource_spans[0].scope_spans[0].spans.remove(0); // the root: decided at decision_wait
        }
        ids.push(
            req.resource_spans[0].scope_spans[0].spans[0]
                .trace_id
                .clone(),
        );
        e.ingest(&req.encode_to_vec(), i * ms).unwrap();
        if i * ms >= next_poll {
            kept.extend(span_ids(&e.poll(i * ms)).into_iter().map(|(t, _)| t));
            next_poll += 50 * ms;
        }
    }
    kept.extend(span_ids(&e.poll(25 * S)).into_iter().map(|(t, _)| t));
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    assert_eq!(stat(&e, "decided_traces_in_memory"), 10_000);
    assert!((4_000..6_000).contains(&kept.len()), "{}", kept.len());
    let late_of = |rng: &mut Rng, ids: &[Vec<u8>]| {
        let mut req = request(rng, ids.len(), 1, "svc");
        for (s, id) in req.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .zip(ids)
        {
            s.trace_id = id.clone();
            s.parent_span_id = vec![7; 8];
        }
        req.encode_to_vec()
    };
    e.ingest(&late_of(rng, &ids), 26 * S).unwrap();
    let forwarded: BTreeSet<Vec<u8>> = span_ids(&e.poll(26 * S))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        forwarded, kept,
        "late spans leave with the kept traces only"
    );
    assert_eq!(stat(&e, "late_spans_forwarded"), kept.len() as u64);
    assert_eq!(stat(&e, "late_spans_dropped"), 10_000 - kept.len() as u64);
    assert_eq!(stat(&e, "traces_received"), 10_000);

    // Rootless (due at 37 s, after what follows), one payload.
    let newer: Vec<Vec<u8>> = (0..5_000).map(|_| rng.id16()).collect();
    e.ingest(&late_of(rng, &newer), 27 * S).unwrap();
    assert_eq!(stat(&e, "traces_evicted"), 0);
    assert_eq!(stat(&e, "decided_traces_in_memory"), 7_000);
    let (gone, held) = ids.split_at(3_000);
    // Before the newer traces are due: what leaves is late spans only.
    e.ingest(&late_of(rng, held), 33 * S).unwrap();
    let forwarded: BTreeSet<Vec<u8>> = span_ids(&e.poll(33 * S))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let kept_held: BTreeSet<Vec<u8>> = held.iter().filter(|t| kept.contains(*t)).cloned().collect();
    assert_eq!(
        forwarded, kept_held,
        "the 7,000 newest arrivals are still held"
    );
    assert_eq!(stat(&e, "traces_received"), 15_000);
    // The 3,000 oldest arrivals were forgotten: a span of one is a new trace.
    e.ingest(&late_of(rng, &gone[..1]), 34 * S).unwrap();
    assert_eq!(stat(&e, "traces_received"), 15_001);
    invariant(&e);
}

/// Scenario: maximum_trace_size_bytes smaller than a trace. Guarantees: not sampled at once, counted, its
/// later spans dropped through the non-sampled cache.
#[test]
fn too_large_trace_is_dropped_at_once() {
    let e = engine(
        json!({"maximum_trace_size_bytes": 600, "decision_cache": {"non_sampled_cache_size": 10}}),
        always(),
    );
    let mut rng = Rng(7);
    let req = request(&mut rng, 3, 3, "svc");
    let bytes = req.encode_to_vec();
    e.ingest(&bytes, 0).unwrap();
    assert_eq!(stat(&e, "traces_dropped_too_large"), 1);
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    e.ingest(&bytes, S).unwrap();
    assert_eq!(stat(&e, "late_spans_dropped"), 3);
    assert!(e.flush(20 * S).is_empty());
    invariant(&e);
}

/// Scenario: flush with and without drop_pending_traces_on_shutdown. Guarantees: decided vs dropped, counted.
#[test]
fn flush_decides_or_drops_pending() {
    for drop in [false, true] {
        let e = engine(json!({"drop_pending_traces_on_shutdown": drop}), always());
        let (_, p) = one_trace(&mut Rng(8), 4);
        e.ingest(&p, 0).unwrap();
        let out = e.flush(S);
        assert_eq!(span_ids(&out).len(), if drop { 0 } else { 4 });
        assert_eq!(stat(&e, "traces_dropped_on_shutdown"), u64::from(drop));
        invariant(&e);
    }
}

/// Scenario: spans of many traces spread over payloads, two resources and three scopes, four shards.
/// Guarantees: output payloads group spans under their own resource and scope, byte-identical, schema URLs
/// kept, every span exactly once.
#[test]
fn re_emission_is_byte_for_byte_under_own_origin() {
    let e = engine(json!({"num_shards": 4}), always());
    let mut rng = Rng(9);
    let a = request(&mut rng, 300, 6, "checkout");
    let mut b = request(&mut rng, 200, 4, "payment");
    b.resource_spans[0].scope_spans.push(ScopeSpans {
        scope: Some(InstrumentationScope {
            name: "db".into(),
            version: "1".into(),
            ..Default::default()
        }),
        spans: request(&mut rng, 50, 5, "x").resource_spans[0].scope_spans[0]
            .spans
            .clone(),
        schema_url: "https://example.com/db-schema".into(),
    });
    b.resource_spans[0].schema_url = "https://example.com/payment-schema".into();
    // Half of each request now, half 2 s later: traces span payloads.
    let (a1, a2) = split(&a);
    let (b1, b2) = split(&b);
    e.ingest(&a1.encode_to_vec(), 0).unwrap();
    e.ingest(&b1.encode_to_vec(), 0).unwrap();
    e.ingest(&a2.encode_to_vec(), 2 * S).unwrap();
    e.ingest(&b2.encode_to_vec(), 2 * S).unwrap();
    let out = e.poll(12 * S);
    let mut want: Vec<Vec<u8>> = [&a, &b]
        .iter()
        .flat_map(|r| {
            r.resource_spans.iter().flat_map(|rs| {
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter().map(|s| s.encode_to_vec()))
            })
        })
        .collect();
    let mut got = Vec::new();
    for p in &out {
        let req = ExportTraceServiceRequest::decode(p.as_slice()).unwrap();
        for rs in &req.resource_spans {
            let svc = rs.resource.as_ref().unwrap().attributes[0].clone();
            let source = if svc == kv_str("service.name", "checkout") {
                &a
            } else {
                &b
            };
            assert_eq!(
                rs.resource, source.resource_spans[0].resource,
                "resource bytes kept"
            );
            assert_eq!(rs.schema_url, source.resource_spans[0].schema_url);
            for ss in &rs.scope_spans {
                let src = source.resource_spans[0]
                    .scope_spans
                    .iter()
                    .find(|s| s.scope == ss.scope)
                    .expect("own scope");
                assert_eq!(ss.schema_url, src.schema_url);
                for s in &ss.spans {
                    assert!(src.spans.contains(s), "span under its own scope");
                    let raw = s.encode_to_vec();
                    assert!(
                        p.windows(raw.len()).any(|w| w == raw.as_slice()),
                        "raw bytes present"
                    );
                    got.push(raw);
                }
            }
        }
    }
    want.sort();
    got.sort();
    assert_eq!(got, want);
    invariant(&e);
}

fn split(r: &ExportTraceServiceRequest) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut first = r.clone();
    let mut second = r.clone();
    for (rs1, rs2) in first
        .resource_spans
        .iter_mut()
        .zip(second.resource_spans.iter_mut())
    {
        for (s1, s2) in rs1.scope_spans.iter_mut().zip(rs2.scope_spans.iter_mut()) {
            let all = std::mem::take(&mut s1.spans);
            let (x, y): (Vec<_>, Vec<_>) =
                all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
            s1.spans = x.into_iter().map(|(_, s)| s).collect();
            s2.spans = y.into_iter().map(|(_, s)| s).collect();
        }
    }
    (first, second)
}

/// Scenario: output is cut into payloads of bounded size. Guarantees: each payload under the limit (or a
/// single chunk), all spans present.
#[test]
fn output_payloads_respect_the_size_limit() {
    let e = engine(json!({"tailsample": {"max_payload_bytes": 4096}}), always());
    let mut rng = Rng(10);
    let req = request(&mut rng, 400, 1, "svc");
    e.ingest(&req.encode_to_vec(), 0).unwrap();
    let out = e.flush(S);
    assert!(out.len() > 10);
    assert!(
        out.iter().all(|p| p.len() <= 4096),
        "{:?}",
        out.iter().map(Vec::len).max()
    );
    assert_eq!(span_ids(&out).len(), 400);
}

/// Scenario: a malformed (truncated) payload between good ones. Guarantees: counted, nothing of it buffered,
/// the others' decisions unchanged.
#[test]
fn rejected_payload_leaves_the_store_untouched() {
    let e = engine(json!({}), always());
    let mut rng = Rng(11);
    let (_, good) = one_trace(&mut rng, 3);
    e.ingest(&good, 0).unwrap();
    let bad = request(&mut rng, 5, 5, "svc").encode_to_vec();
    assert!(matches!(
        e.ingest(&bad[..bad.len() - 3], 0),
        Err(Error::Decode { .. })
    ));
    assert_eq!(stat(&e, "payloads_rejected"), 1);
    assert_eq!(stat(&e, "traces_in_memory"), 1);
    assert_eq!(span_ids(&e.flush(S)).len(), 3);
}

/// Scenario: a payload of 5 spans, one with a 7-byte span ID and one with an all-zero trace ID.
/// Guarantees: those two are rejected alone and counted by reason; the 3 others are taken and leave.
#[test]
fn unusable_spans_are_rejected_alone_and_counted_by_reason() {
    let e = engine(json!({}), always());
    let mut rng = Rng(12);
    let mut req = request(&mut rng, 5, 5, "svc");
    req.resource_spans[0].scope_spans[0].spans[4].span_id = vec![1; 7];
    req.resource_spans[0].scope_spans[0].spans[2].trace_id = vec![0; 16];
    let got = e.ingest_report(&req.encode_to_vec(), 0).unwrap();
    assert_eq!((got.spans, got.rejected_spans), (3, 2));
    assert_eq!(
        got.rejected_by_reason,
        [
            (RejectReason::InvalidTraceId, 1),
            (RejectReason::IdLength, 1)
        ]
    );
    assert!(got
        .rejection
        .unwrap_or_default()
        .starts_with("resource_spans[0].scope_spans[0].spans[2].trace_id: "));
    assert_eq!(stat(&e, "payloads_rejected"), 0);
    assert_eq!(
        (
            stat(&e, "spans_rejected"),
            stat(&e, "spans_rejected_invalid_trace_id"),
            stat(&e, "spans_rejected_id_length"),
            stat(&e, "spans_rejected_too_deep")
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(span_ids(&e.flush(S)).len(), 3);
}

/// Scenario: the seed policies on a mixed workload. Guarantees: every error and slow trace is kept, policy
/// counters add up.
#[test]
fn seed_policies_keep_errors_and_slow_traces() {
    let policies = json!([
        {"name": "errors-policy", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "latency-policy", "type": "latency", "latency": {"threshold_ms": 1000}},
        {"name": "forced-sampling-policy", "type": "string_attribute", "string_attribute": {"key": "http.request.header.x-force-trace", "values": ["true"]}},
        {"name": "probabilistic-policy", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}},
    ]);
    let e = engine(json!({}), policies);
    let mut rng = Rng(12);
    let mut must_keep = Vec::new();
    for i in 0..300 {
        let mut req = request(&mut rng, 4, 4, "svc");
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        match i % 10 {
            0 => {
                spans[2].status = Some(Status {
                    message: String::new(),
                    code: 2,
                })
            }
            1 => spans[3].end_time_unix_nano = spans[0].start_time_unix_nano + 1_500_000_000,
            2 => spans[1]
                .attributes
                .push(kv_str("http.request.header.x-force-trace", "true")),
            _ => spans.iter_mut().for_each(|s| s.status = None),
        }
        if i % 10 < 3 {
            must_keep.push(spans[0].trace_id.clone());
        }
        e.ingest(&req.encode_to_vec(), 0).unwrap();
    }
    let kept: std::collections::HashSet<Vec<u8>> = span_ids(&e.poll(10 * S))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    for t in &must_keep {
        assert!(kept.contains(t));
    }
    let ps = e.policy_stats();
    let decided: u64 = ps.iter().map(|(_, c)| c.decided).sum();
    assert_eq!(decided, stat(&e, "traces_sampled"));
    assert_eq!(ps[0].1.sampled, 30);
    assert_eq!(ps[1].1.sampled, 30);
    assert_eq!(ps[2].1.sampled, 30);
    invariant(&e);
}

/// Scenario: two traces with an ERROR span and one without, decided by a policy set that keeps errors, then by
/// one that keeps nothing. Guarantees: `error_traces_decided` counts the two error traces either way;
/// `error_traces_not_sampled` is 0 when they are kept and 2 when they are not (the alert on error traces not
/// kept reads these).
#[test]
fn error_traces_not_kept_are_counted() {
    let errors = json!([{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]);
    let nothing = json!([{"name": "none", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}}]);
    for (policies, not_kept) in [(errors, 0), (nothing, 2)] {
        let e = engine(json!({}), policies);
        let mut rng = Rng(41);
        for error in [true, true, false] {
            let mut req = request(&mut rng, 2, 2, "svc");
            for s in &mut req.resource_spans[0].scope_spans[0].spans {
                s.status = Some(Status {
                    message: String::new(),
                    code: if error { 2 } else { 0 },
                });
            }
            e.ingest(&req.encode_to_vec(), 0).unwrap();
        }
        e.flush(100 * S);
        assert_eq!(stat(&e, "error_traces_decided"), 2);
        assert_eq!(stat(&e, "error_traces_not_sampled"), not_kept);
        invariant(&e);
    }
}

/// Scenario: the same 50 traces (spans with `payment.amount`) buffered by an engine whose policy reads only a
/// trace's basics and by one with a `trace_aggregate` (its sums live in the views' boxed extras); then both
/// reload to an aggregate with a higher bound, and flush. Guarantees: `memory_bytes` counts one `ViewExtra` per
/// buffered trace that has one and none where nothing was written; the re-fold allocates them (and recomputes
/// existing ones) as ingest does; deciding the traces releases every one (counted back to zero: in a debug
/// build an unbalanced count panics).
#[test]
fn view_extras_are_counted_while_buffered_and_released_when_decided() {
    let aggregate = json!([{"name": "big-order", "type": "trace_aggregate",
        "trace_aggregate": {"key": "payment.amount", "function": "sum", "min_value": 100.0}}]);
    let plain = engine(json!({}), always());
    let summed = engine(json!({}), aggregate.clone());
    let mut rng = Rng(24);
    for _ in 0..50 {
        let mut req = request(&mut rng, 4, 4, "svc");
        for s in &mut req.resource_spans[0].scope_spans[0].spans {
            s.attributes.retain(|kv| kv.key != "payment.amount");
            s.attributes.push(kv_double("payment.amount", 40.0));
        }
        let p = req.encode_to_vec();
        plain.ingest(&p, 100 * S).unwrap();
        summed.ingest(&p, 100 * S).unwrap();
    }
    let extra = std::mem::size_of::<tailsample_core::policy::ViewExtra>() as u64;
    let base = stat(&plain, "memory_bytes");
    assert_eq!(stat(&summed, "memory_bytes"), base + 50 * extra);

    // Both re-fold under the aggregate (a reload also forgets interned origins: compare the two engines).
    let cfg = json!({"decision_wait": "10s", "num_traces": 1000, "policies": [
        {"name": "big-order", "type": "trace_aggregate",
            "trace_aggregate": {"key": "payment.amount", "function": "sum", "min_value": 150.0}}]});
    for e in [&plain, &summed] {
        let r = e.reload(EngineConfig::from_value(&cfg).unwrap()).unwrap();
        assert_eq!(r.traces_refolded, 50);
    }
    assert_eq!(stat(&plain, "memory_bytes"), stat(&summed, "memory_bytes"));

    // 4 spans of 40: every sum (160) passes, on both engines alike.
    assert_eq!(span_ids(&plain.flush(200 * S)).len(), 200);
    assert_eq!(span_ids(&summed.flush(200 * S)).len(), 200);
    assert_eq!(stat(&plain, "traces_in_memory"), 0);
    assert_eq!(stat(&plain, "memory_bytes"), stat(&summed, "memory_bytes"));
    assert!(
        stat(&summed, "memory_bytes") < base,
        "no span bytes nor extras left"
    );
}

/// Scenario: 3,000 traces of 2 spans due at once (more than a round decides before it lets ingest in), and a
/// late span of a trace decided early in the round. Guarantees: one poll decides every trace and sends every
/// kept span, the late one included, exactly once; the accounting holds and nothing stays buffered.
#[test]
fn a_round_longer_than_its_slices_decides_everything_once() {
    let e = engine(json!({"num_traces": 10_000}), always());
    let mut rng = Rng(7);
    let mut first = Vec::new();
    for i in 0..30 {
        let req = request(&mut rng, 200, 2, "svc");
        if i == 0 {
            first = req.resource_spans[0].scope_spans[0].spans[0]
                .trace_id
                .clone();
        }
        e.ingest(&req.encode_to_vec(), 100 * S).unwrap();
    }
    let out = e.poll(110 * S);
    assert_eq!(span_ids(&out).len(), 6_000);
    assert_eq!(stat(&e, "traces_sampled"), 3_000);
    // Decided and held: a late span follows the decision at the next round.
    let mut late = request(&mut Rng(8), 1, 1, "svc");
    late.resource_spans[0].scope_spans[0].spans[0].trace_id = first;
    e.ingest(&late.encode_to_vec(), 111 * S).unwrap();
    assert_eq!(span_ids(&e.poll(111 * S)).len(), 1);
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    invariant(&e);
}

/// Scenario: a decision round over 100,000 due traces of one span on one shard; once it runs, another thread
/// sends one more span for each of the 100 traces the round decides last. Guarantees: ingest is let in during
/// the round, so every one of those spans joins its trace before the trace is decided (none is a late span, as
/// all would be behind a round that holds the shard throughout), and the round decides every trace.
#[test]
fn ingest_is_let_in_during_a_long_decision_round() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = engine(json!({"num_traces": 200_000}), always());
    let mut rng = Rng(9);
    let mut last = request(&mut rng, 1000, 1, "svc");
    for _ in 0..100 {
        last = request(&mut rng, 1000, 1, "svc");
        e.ingest(&last.encode_to_vec(), 100 * S).unwrap();
    }
    let more: Vec<Vec<u8>> = last.resource_spans[0].scope_spans[0].spans[900..]
        .iter()
        .map(|s| {
            let mut one = request(&mut rng, 1, 1, "svc");
            one.resource_spans[0].scope_spans[0].spans[0].trace_id = s.trace_id.clone();
            one.encode_to_vec()
        })
        .collect();
    let running = AtomicBool::new(false);
    let decided = std::thread::scope(|scope| {
        let round = scope.spawn(|| {
            running.store(true, Ordering::SeqCst);
            e.poll(110 * S)
        });
        while !running.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        std::thread::sleep(std::time::Duration::from_millis(5)); // the round has the shard
        for p in &more {
            e.ingest(p, 105 * S).unwrap();
        }
        round.join().unwrap()
    });
    assert_eq!(span_ids(&decided).len(), 100_100, "every span out once");
    assert_eq!(
        stat(&e, "late_spans_forwarded"),
        0,
        "the spans joined their traces in time"
    );
    assert_eq!(stat(&e, "traces_sampled"), 100_000);
    invariant(&e);
}
