//! Policies through the engine: combinators, precedence, stateful limits, and recording the deciding policy.

mod common;

use common::otlp_prost::*;
use prost::Message;
use serde_json::json;
use tailsample_core::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;

fn engine(cfg: serde_json::Value) -> Engine {
    let mut c = json!({"decision_wait": "10s", "num_traces": 10000});
    for (k, v) in cfg.as_object().unwrap() {
        c[k] = v.clone();
    }
    Engine::new(EngineConfig::from_value(&c).expect("valid config"))
}

fn stat(e: &Engine, name: &str) -> u64 {
    e.stats().into_iter().find(|(k, _)| *k == name).unwrap().1
}

/// A one-trace request whose spans get `f` applied; returns (trace id, bytes).
fn trace_with(
    rng: &mut Rng,
    spans: usize,
    f: impl Fn(&mut Span),
) -> (Vec<u8>, ExportTraceServiceRequest) {
    let mut req = request(rng, spans, spans, "svc");
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.status = None;
        f(s);
    }
    (
        req.resource_spans[0].scope_spans[0].spans[0]
            .trace_id
            .clone(),
        req,
    )
}

fn kept_ids(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = payloads
        .iter()
        .flat_map(|p| {
            let r = ExportTraceServiceRequest::decode(p.as_slice()).unwrap();
            r.resource_spans.into_iter().flat_map(|rs| {
                rs.scope_spans
                    .into_iter()
                    .flat_map(|ss| ss.spans.into_iter().map(|s| s.trace_id))
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Scenario: always_sample plus a drop of traces whose attribute client.kind is "bot". Guarantees: the drop
/// vetoes the sampled vote, counted as dropped by policy; other traces are kept.
#[test]
fn drop_vetoes_everything() {
    let e = engine(json!({"policies": [
        {"name": "all", "type": "always_sample"},
        {"name": "bots", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "bot", "type": "string_attribute", "string_attribute": {"key": "client.kind", "values": ["bot"]}}
        ]}}
    ]}));
    let mut rng = Rng(1);
    let (bot, a) = trace_with(&mut rng, 3, |s| {
        s.attributes.push(kv_str("client.kind", "bot"))
    });
    let (human, b) = trace_with(&mut rng, 3, |_| {});
    e.ingest(&a.encode_to_vec(), 0).unwrap();
    e.ingest(&b.encode_to_vec(), 0).unwrap();
    let kept = kept_ids(&e.poll(10 * S));
    assert_eq!(kept, vec![human]);
    assert!(!kept.contains(&bot));
    assert_eq!(stat(&e, "traces_dropped_by_policy"), 1);
    let ps = e.policy_stats();
    assert_eq!(ps[1].1.dropped, 1);
}

/// Scenario: and(status ERROR, not(span_count ≥ 5)). Guarantees: only small error traces are kept.
#[test]
fn and_with_nested_not() {
    let e = engine(json!({"policies": [
        {"name": "small-errors", "type": "and", "and": {"and_sub_policy": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "not-big", "type": "not", "not": {"not_sub_policy":
                {"name": "big", "type": "span_count", "span_count": {"min_spans": 5}}}}
        ]}}
    ]}));
    let mut rng = Rng(2);
    let err = |s: &mut Span| {
        s.status = Some(Status {
            message: String::new(),
            code: 2,
        })
    };
    let (small_err, a) = trace_with(&mut rng, 3, err);
    let (_, b) = trace_with(&mut rng, 6, err);
    let (_, c) = trace_with(&mut rng, 3, |_| {});
    for r in [a, b, c] {
        e.ingest(&r.encode_to_vec(), 0).unwrap();
    }
    assert_eq!(kept_ids(&e.poll(10 * S)), vec![small_err]);
}

/// Scenario: sample_on_first_match with a drop policy listed last. Guarantees: the drop still runs first and
/// vetoes; the first sampling policy stops evaluation for other traces.
#[test]
fn sample_on_first_match_runs_drops_first() {
    let e = engine(json!({"sample_on_first_match": true, "policies": [
        {"name": "all", "type": "always_sample"},
        {"name": "never-counted", "type": "always_sample"},
        {"name": "veto", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "flagged", "type": "trace_flags"}
        ]}}
    ]}));
    let mut rng = Rng(3);
    let (_, flagged) = trace_with(&mut rng, 2, |s| s.flags = 1);
    let (plain_id, plain) = trace_with(&mut rng, 2, |s| s.flags = 0);
    e.ingest(&flagged.encode_to_vec(), 0).unwrap();
    e.ingest(&plain.encode_to_vec(), 0).unwrap();
    assert_eq!(kept_ids(&e.poll(10 * S)), vec![plain_id]);
    let ps = e.policy_stats();
    assert_eq!(ps[0].1.sampled, 1);
    assert_eq!(
        ps[1].1.sampled + ps[1].1.not_sampled,
        0,
        "not evaluated after the first match"
    );
    assert_eq!(ps[2].1.dropped, 1);
}

/// Scenario: trace_state and trace_flags policies. Guarantees: matched on any span, invalid tracestate
/// matches nothing.
#[test]
fn trace_state_and_flags() {
    let e = engine(json!({"policies": [
        {"name": "gold", "type": "trace_state", "trace_state": {"key": "vendor", "values": ["gold"]}}
    ]}));
    let mut rng = Rng(4);
    let (gold, a) = trace_with(&mut rng, 3, |s| {
        s.trace_state = "vendor=gold,ot=th:8".into()
    });
    let (_, b) = trace_with(&mut rng, 3, |s| {
        s.trace_state = "vendor=gold,vendor=gold".into()
    });
    e.ingest(&a.encode_to_vec(), 0).unwrap();
    e.ingest(&b.encode_to_vec(), 0).unwrap();
    assert_eq!(kept_ids(&e.poll(10 * S)), vec![gold]);
}

/// Scenario: rate_limiting of 10 spans/s (burst 20) with traces of 8 spans, decided in engine time.
/// Guarantees: the token bucket runs on the engine clock: two pass at once, then one per 0.8 s of refill.
#[test]
fn rate_limiting_runs_on_engine_time() {
    let e = engine(json!({"policies": [
        {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 10, "burst_capacity": 20}}
    ]}));
    let mut rng = Rng(5);
    for _ in 0..3 {
        let (_, r) = trace_with(&mut rng, 8, |_| {});
        e.ingest(&r.encode_to_vec(), 0).unwrap();
    }
    assert_eq!(kept_ids(&e.poll(10 * S)).len(), 2);
    let (_, r) = trace_with(&mut rng, 8, |_| {});
    e.ingest(&r.encode_to_vec(), 10 * S).unwrap();
    assert_eq!(
        kept_ids(&e.poll(20 * S)).len(),
        1,
        "10 s later the bucket is full again"
    );
}

/// Scenario: bytes_limiting exactly at a trace's size as the reference measures it (its ResourceSpans
/// re-encoded without schema URLs). Guarantees: a budget of exactly that size passes it, one byte less not.
#[test]
fn bytes_limiting_measures_as_the_reference() {
    let mut rng = Rng(6);
    // Every span with a status and a parent: pdata re-encodes those fields always, prost only when set, so
    // with both present the two encodings have the same size (without them, see `otlp::pdata_size`).
    let (_, r) = trace_with(&mut rng, 4, |s| {
        s.status = Some(Status {
            message: "m".into(),
            code: 1,
        });
        s.parent_span_id = vec![3; 8];
    });
    let mut no_schema = r.clone();
    no_schema.resource_spans[0].schema_url.clear();
    no_schema.resource_spans[0].scope_spans[0]
        .schema_url
        .clear();
    let size = no_schema.encoded_len() as i64;
    for (budget, kept) in [(size, 1), (size - 1, 0)] {
        let e = engine(json!({"policies": [
            {"name": "bl", "type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 1, "burst_capacity": budget}}
        ]}));
        e.ingest(&r.encode_to_vec(), 0).unwrap();
        assert_eq!(
            kept_ids(&e.poll(10 * S)).len(),
            kept,
            "budget {budget} for a {size}-byte trace"
        );
    }
}

/// Scenario: maximum_trace_size_bytes exactly at a trace's size as the reference measures it (the sum of its
/// parts' `ResourceSpansSize`: resource, scope and spans re-encoded, without schema URLs, not framed).
/// Guarantees: a limit of exactly that size keeps the trace, one byte less drops it at once.
#[test]
fn maximum_trace_size_measures_as_the_reference() {
    let mut rng = Rng(8);
    let (_, r) = trace_with(&mut rng, 3, |s| {
        s.status = Some(Status {
            message: String::new(),
            code: 2,
        });
        s.parent_span_id = vec![4; 8];
    });
    let mut no_schema = r.clone();
    no_schema.resource_spans[0].schema_url.clear();
    no_schema.resource_spans[0].scope_spans[0]
        .schema_url
        .clear();
    let size = no_schema.resource_spans[0].encoded_len() as i64;
    let spans: usize = r.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.encoded_len())
        .sum();
    assert!(spans < size as usize - 20, "resource and scope count too");
    for (limit, kept) in [(size, 1), (size - 1, 0)] {
        let e = engine(json!({"maximum_trace_size_bytes": limit, "policies": [
            {"name": "all", "type": "always_sample"}
        ]}));
        e.ingest(&r.encode_to_vec(), 0).unwrap();
        assert_eq!(stat(&e, "traces_dropped_too_large"), 1 - kept as u64);
        assert_eq!(
            kept_ids(&e.poll(10 * S)).len(),
            kept,
            "limit {limit} for a {size}-byte trace"
        );
    }
}

/// Scenario: record_policy on, a composite with two sub-policies, caches on, a late span. Guarantees: kept
/// spans keep their bytes as a prefix and gain tailsampling.policy / composite_policy; the late span gains
/// tailsampling.cached_decision = true.
#[test]
fn record_policy_appends_attributes() {
    let e = engine(json!({
        "tailsample": {"record_policy": true},
        "decision_cache": {"sampled_cache_size": 100},
        "policies": [{"name": "budget", "type": "composite", "composite": {
            "max_total_spans_per_second": 1000,
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}
            ],
            "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "rest", "percent": 50}]
        }}]
    }));
    let mut rng = Rng(7);
    let (_, r) = trace_with(&mut rng, 2, |_| {});
    e.ingest(&r.encode_to_vec(), 0).unwrap();
    let out = e.poll(10 * S);
    let got = ExportTraceServiceRequest::decode(out[0].as_slice()).unwrap();
    let spans = &got.resource_spans[0].scope_spans[0].spans;
    let sent = &r.resource_spans[0].scope_spans[0].spans;
    for (g, s) in spans.iter().zip(sent) {
        // In the payload, each span is its original bytes followed by the appended attributes.
        let mut expected = s.encode_to_vec();
        expected.extend(kv_field(&kv_str("tailsampling.policy", "budget")));
        expected.extend(kv_field(&kv_str("tailsampling.composite_policy", "rest")));
        assert!(
            out[0]
                .windows(expected.len())
                .any(|w| w == expected.as_slice()),
            "original bytes, then the attributes"
        );
        assert_eq!(
            &g.attributes[g.attributes.len() - 2..],
            &[
                kv_str("tailsampling.policy", "budget"),
                kv_str("tailsampling.composite_policy", "rest")
            ]
        );
    }
    let mut late = r.clone();
    late.resource_spans[0].scope_spans[0].spans.truncate(1);
    late.resource_spans[0].scope_spans[0].spans[0].span_id = vec![7; 8];
    e.ingest(&late.encode_to_vec(), 11 * S).unwrap();
    let out = e.poll(11 * S);
    let got = ExportTraceServiceRequest::decode(out[0].as_slice()).unwrap();
    let s = &got.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        s.attributes.last().unwrap(),
        &kv_bool("tailsampling.cached_decision", true)
    );
}

/// A KeyValue as a `Span.attributes` field (tag 9).
fn kv_field(kv: &KeyValue) -> Vec<u8> {
    let body = kv.encode_to_vec();
    let mut out = vec![0x4a];
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend(body);
    out
}

/// Scenario: ottl_condition with a span condition on a span attribute and the resource, and a spanevent
/// condition. Guarantees: a trace is kept when any span (or event) satisfies any condition.
#[test]
fn ottl_condition_on_spans_and_events() {
    let e = engine(
        json!({"policies": [{"name": "ottl", "type": "ottl_condition", "ottl_condition": {
            "error_mode": "propagate",
            "span": [
                "attributes[\"http.response.status_code\"] >= 500 and resource.attributes[\"service.name\"] == \"svc\"",
                "name == \"checkout\""
            ],
            "spanevent": ["name == \"exception\" and attributes[\"exception.type\"] != nil"]
        }}]}),
    );
    let mut rng = Rng(8);
    let (server_error, a) = trace_with(&mut rng, 3, |s| {
        s.attributes
            .insert(0, kv_int("http.response.status_code", 503))
    });
    let (by_name, b) = trace_with(&mut rng, 2, |s| s.name = "checkout".into());
    let (with_event, c) = trace_with(&mut rng, 2, |s| {
        s.events.push(Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![kv_str("exception.type", "IOError")],
            dropped_attributes_count: 0,
        })
    });
    let (_, d) = trace_with(&mut rng, 2, |s| {
        s.events.push(Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        })
    });
    for r in [a, b, c, d] {
        e.ingest(&r.encode_to_vec(), 0).unwrap();
    }
    let mut want = vec![server_error, by_name, with_event];
    want.sort();
    assert_eq!(kept_ids(&e.poll(10 * S)), want);
}

/// Scenario: a condition that fails to evaluate (Len of a number is caught at load time, so use IsMatch on a
/// NaN double, an evaluation error). Guarantees: with propagate, no vote and an evaluation error counted; with
/// ignore, simply not sampled.
#[test]
fn ottl_error_modes() {
    for (mode, errors) in [("propagate", 1), ("ignore", 0)] {
        let e = engine(
            json!({"policies": [{"name": "ottl", "type": "ottl_condition", "ottl_condition": {
                "error_mode": mode, "span": ["IsMatch(attributes[\"payment.amount\"], \"^1\")"]
            }}]}),
        );
        let mut rng = Rng(9);
        let (_, r) = trace_with(&mut rng, 1, |s| {
            s.attributes.retain(|kv| kv.key != "payment.amount");
            s.attributes.push(kv_double("payment.amount", f64::NAN));
        });
        e.ingest(&r.encode_to_vec(), 0).unwrap();
        assert!(kept_ids(&e.poll(10 * S)).is_empty());
        assert_eq!(stat(&e, "policy_evaluation_errors"), errors, "{mode}");
    }
}

/// Scenario: an OTTL condition tailsample cannot evaluate. Guarantees: a config error naming the YAML path,
/// quoting the expression and pointing at the construct.
#[test]
fn unsupported_ottl_is_a_config_error() {
    let cfg = json!({"policies": [{"name": "ottl", "type": "ottl_condition", "ottl_condition": {
        "span": ["name == \"a\"", "links[0].trace_id == nil"]
    }}]});
    let err = EngineConfig::from_value(&cfg).unwrap_err().to_string();
    assert!(
        err.starts_with("policies[0].ottl_condition.span[1]: "),
        "{err}"
    );
    assert!(err.contains("links[0].trace_id == nil"), "{err}");
    assert!(err.contains('^'), "{err}");
}

/// Scenario: spans, resources and scopes of generated requests, every span with a parent and a status (which
/// pdata always writes), encoded canonically by prost. Guarantees: `pdata_size` measures each exactly as its
/// encoded length, i.e. a canonical message is its own re-encoded size.
#[test]
fn pdata_size_of_canonical_messages_is_their_length() {
    use tailsample_core::otlp::pdata_size;
    let mut rng = Rng(9);
    let mut r = request(&mut rng, 200, 5, "svc");
    let rs = &mut r.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap().encode_to_vec();
    assert_eq!(pdata_size::resource(Some(&resource)), resource.len());
    for ss in &mut rs.scope_spans {
        if let Some(scope) = &ss.scope {
            let scope = scope.encode_to_vec();
            assert_eq!(pdata_size::scope(Some(&scope)), scope.len());
        }
        for s in &mut ss.spans {
            if s.parent_span_id.is_empty() {
                s.parent_span_id = vec![1; 8];
            }
            s.status.get_or_insert_with(Status::default);
            let raw = s.encode_to_vec();
            assert_eq!(pdata_size::span(&raw), raw.len(), "{s:?}");
        }
    }
}
