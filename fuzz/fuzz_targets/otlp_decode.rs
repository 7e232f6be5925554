//! Payload bytes as a receiver hands them to the core: the OTLP scanner, what consumers read of its result,
//! the per-trace splitter, the attribute inventory's scan, the OTLP/JSON transcoder, and a real `Engine`
//! (ingest, poll, late spans, explain, kept traces, flush). A panic anywhere is a bug; an `Err` is not.
//!
//! Also checked, because the scanner uses `from_utf8_unchecked` on ASCII fast paths and the engine re-emits
//! kept spans byte for byte: every string it hands out is valid UTF-8, `inspect` and `split_by_trace` accept
//! exactly what `decode` accepts, and every payload the core emits decodes again.
#![no_main]

use std::hint::black_box;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tailsample_core::otlp::attribute_keys::attribute_keys;
use tailsample_core::otlp::decode::{decode, for_each_event, AttrKeys, AttrValue, Decoded};
use tailsample_core::otlp::json::{json_to_proto, proto_to_json};
use tailsample_core::otlp::split::split_by_trace;
use tailsample_core::{inspect, Engine, EngineConfig};

static KEYS: LazyLock<AttrKeys> = LazyLock::new(|| {
    AttrKeys::new([
        "http.status_code",
        "http.response.status_code",
        "http.route",
        "service.name",
        "peer.service",
        "server.address",
        "db.system",
        "error",
        "exception.type",
        "",
    ])
});

/// Every policy type, record_policy, adjusted counts, RED metrics, the propagation audit, small limits (so
/// eviction, refusal, the decision caches and payload cutting are reached with small inputs).
static RICH: LazyLock<EngineConfig> = LazyLock::new(|| {
    EngineConfig::from_json(include_str!("engine_config.json")).expect("engine_config.json loads")
});

/// The README's minimal configuration with the other switches: first match, drop on shutdown, two shards.
static SIMPLE: LazyLock<EngineConfig> = LazyLock::new(|| {
    EngineConfig::from_json(
        r#"{"decision_wait":"1s","num_traces":8,"num_shards":2,"sample_on_first_match":true,
            "drop_pending_traces_on_shutdown":true,"block_on_overflow":true,
            "tailsample":{"propagation_audit":{"enabled":false}},
            "policies":[{"name":"errors","type":"status_code","status_code":{"status_codes":["ERROR"]}},
                        {"name":"all","type":"always_sample"}]}"#,
    )
    .expect("the simple configuration loads")
});

fn check_str(s: &str) {
    assert!(
        std::str::from_utf8(s.as_bytes()).is_ok(),
        "invalid UTF-8 handed out"
    );
    black_box(s.len());
}

fn check_attr(v: &AttrValue<'_>) {
    match v {
        AttrValue::Str(s) => check_str(s),
        AttrValue::Bytes(b) => {
            black_box(b.len());
        }
        // Contents read lazily, as policies and OTTL indexing read them: every element and entry, at every depth.
        AttrValue::Array(_) => v.elements().for_each(|e| check_attr(&e)),
        AttrValue::Map(_) => v.entries().for_each(|(k, e)| {
            check_str(k);
            check_attr(&e);
        }),
        _ => {}
    }
    black_box((
        v.is_present(),
        v.str_or_empty(),
        v.int_or_zero(),
        v.bool_or_false(),
    ));
}

/// What consumers of a decoded payload read: every view, every extracted attribute, span events.
fn walk(d: &Decoded<'_>, keys: &AttrKeys) {
    for (r, res) in d.resources.iter().enumerate() {
        check_str(res.schema_url);
        black_box(res.raw.as_deref().map(<[u8]>::len));
        d.resource_attrs_of(r).iter().for_each(check_attr);
        for k in 0..d.keys {
            check_attr(&d.resource_attr(r, k));
        }
    }
    for s in &d.scopes {
        assert!(
            (s.resource as usize) < d.resources.len(),
            "scope of no resource"
        );
        check_str(s.name);
        check_str(s.schema_url);
    }
    for (i, span) in d.spans.iter().enumerate() {
        assert!((span.scope as usize) < d.scopes.len(), "span of no scope");
        check_str(span.name);
        check_str(span.trace_state);
        black_box((
            span.kind,
            span.status_code,
            span.flags,
            span.parent_span_id,
            span.offset,
        ));
        d.span_attrs_of(i).iter().for_each(check_attr);
        for k in 0..d.keys {
            check_attr(&d.span_attr(i, k));
        }
        for_each_event(span.raw, keys, |name, attrs| {
            check_str(name);
            attrs.iter().for_each(check_attr);
        });
    }
}

/// Every payload the core emits must be a valid request again, no span of it rejected (within the nesting
/// rule, every ID usable), and within `max_payload_bytes` unless it holds one span alone.
fn check_out(payloads: &[Vec<u8>], what: &str, max_bytes: usize) {
    for p in payloads {
        match decode(p, &KEYS) {
            Err(e) => panic!("{what} emitted a payload that does not decode: {e}"),
            Ok(d) => {
                assert_eq!(
                    d.rejected_spans, 0,
                    "{what} emitted a span that cannot be used: {:?}",
                    d.rejection
                );
                assert!(
                    p.len() <= max_bytes || d.spans.len() == 1,
                    "{what} emitted {} bytes of {} spans, over max_payload_bytes {max_bytes}",
                    p.len(),
                    d.spans.len()
                );
            }
        }
    }
}

fn engine_stage(payload: &[u8]) {
    let cfg = if payload.len().is_multiple_of(4) {
        &SIMPLE
    } else {
        &RICH
    };
    let wait = cfg.decision_wait_ns;
    let max = cfg.max_payload_bytes;
    let engine = Engine::new(EngineConfig::clone(cfg));
    let t0: i64 = 1_700_000_000_000_000_000;
    let mut ids = Vec::new();
    if engine.ingest_traces(payload, t0, &mut ids).is_err() {
        // A valid payload can still be refused (num_traces, late span buffer): backpressure, not a bug.
        black_box(engine.stats());
        return;
    }
    black_box(engine.buffered(&ids));
    for &id in ids.iter().take(4) {
        black_box(engine.explain(id.to_be_bytes()));
    }
    check_out(&engine.poll(t0 + wait / 2), "poll", max);
    check_out(&engine.poll(t0 + wait + 1), "poll", max);
    // The same spans again, after the decisions: late spans of kept and dropped traces, the decision caches.
    let _ = engine.ingest(payload, t0 + wait + 2);
    check_out(&engine.poll(t0 + wait + 3), "poll of late spans", max);
    for k in engine.recent_kept(8) {
        if let Some(out) = engine.kept_trace(k.trace_id.to_be_bytes()) {
            check_out(&out, "kept_trace", max);
        }
    }
    // Once more, then forget half of what is buffered and flush the rest.
    let _ = engine.ingest(payload, t0 + 2 * wait);
    let half = ids.len() / 2;
    black_box(engine.forget(&ids[..half]));
    check_out(&engine.flush(t0 + 2 * wait + 1), "flush", max);
    black_box((
        engine.stats(),
        engine.policy_stats().len(),
        engine.decision_lag(),
        engine.red_metrics().map(|r| r.len()),
        engine.gaps().map(|g| g.pairs.len()),
        engine.clock(),
    ));
}

fn stage(data: &[u8]) {
    let decoded = decode(data, &KEYS);
    let ok = decoded.is_ok();
    if let Ok(d) = &decoded {
        // Spans that cannot be used are rejected alone (counted by reason, the first named), never taken.
        assert_eq!(d.rejected_spans == 0, d.rejection.is_none());
        assert_eq!(d.rejected_by_reason.iter().sum::<usize>(), d.rejected_spans);
        assert!(
            d.spans.iter().all(|s| s.trace_id != [0; 16]),
            "a span without a usable trace ID taken"
        );
        assert_eq!(d.keys, KEYS.len());
        assert_eq!(d.span_attrs.len(), d.spans.len() * d.keys);
        assert_eq!(d.resource_attrs.len(), d.resources.len() * d.keys);
        walk(d, &KEYS);
    }
    match inspect(data) {
        Ok(s) => {
            assert!(ok, "inspect accepted a payload decode rejects");
            assert_eq!(
                s.spans as usize,
                decoded.as_ref().map_or(0, |d| d.spans.len())
            );
        }
        Err(_) => assert!(!ok, "inspect rejected a payload decode accepts"),
    }
    match attribute_keys(data, 8) {
        Ok(a) => {
            assert!(ok, "attribute_keys accepted a payload decode rejects");
            assert_eq!(
                a.spans as usize,
                decoded.as_ref().map_or(0, |d| d.spans.len())
            );
            assert!(a.keys.iter().all(|k| k.count > 0 && k.examples.len() <= 8));
        }
        Err(_) => assert!(!ok, "attribute_keys rejected a payload decode accepts"),
    }
    match split_by_trace(data) {
        Ok(parts) => {
            assert!(ok, "split_by_trace accepted a payload decode rejects");
            let mut spans = 0;
            for (id, part) in &parts {
                let p = decode(part, &KEYS).expect("a split part decodes");
                assert!(
                    p.spans
                        .iter()
                        .all(|s| u128::from_be_bytes(s.trace_id) == *id),
                    "a split part holds another trace"
                );
                spans += p.spans.len();
            }
            assert_eq!(
                spans,
                decoded.as_ref().map_or(0, |d| d.spans.len()),
                "split lost or added spans"
            );
        }
        Err(_) => assert!(!ok, "split_by_trace rejected a payload decode accepts"),
    }
    drop(decoded);
    if ok {
        engine_stage(data);
    }
}

fuzz_target!(|data: &[u8]| {
    stage(data);
    // The file and debug exporters' path: any bytes give JSON or an error, never a panic or a deep stack.
    let _ = proto_to_json(data);
    // The same bytes as an OTLP/JSON body (the HTTP receiver's path); what it yields goes the same way.
    if let Ok(proto) = json_to_proto(data) {
        stage(&proto);
    }
});
