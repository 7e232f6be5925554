//! `tail_sampling` blocks as the Python layer hands them to the core (YAML turned into JSON text): the loader,
//! `normalized()`, and an `Engine` built from the result, fed one payload, polled and flushed. A panic is a bug;
//! an `Err` is not.
//!
//! Also checked: `normalized()` is documented to load back as the same configuration, so it must load, and
//! normalize to the same JSON again.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use tailsample_core::{Engine, EngineConfig};

/// One request: two spans of one trace under one resource (service.name, peer.service, http.route,
/// http.status_code 503, error true, status ERROR), root span first. Built by hand so the target has no
/// protobuf dependency; every field number is from opentelemetry-proto's trace.proto.
fn payload() -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn len(out: &mut Vec<u8>, field: u32, body: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }
    fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        varint(out, u64::from(field << 3));
        varint(out, v);
    }
    fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
        varint(out, u64::from(field << 3 | 1));
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn kv(key: &str, any: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        len(&mut m, 1, key.as_bytes());
        len(&mut m, 2, any);
        m
    }
    fn str_any(s: &str) -> Vec<u8> {
        let mut a = Vec::new();
        len(&mut a, 1, s.as_bytes());
        a
    }
    let mut resource = Vec::new();
    len(&mut resource, 1, &kv("service.name", &str_any("checkout")));
    let mut scope = Vec::new();
    len(&mut scope, 1, b"io.opentelemetry.http");
    let t0 = 1_700_000_000_000_000_000u64;
    let mut spans = Vec::new();
    for (i, parent) in [None, Some([1u8; 8])].into_iter().enumerate() {
        let mut s = Vec::new();
        len(&mut s, 1, &[7u8; 16]);
        len(&mut s, 2, &[i as u8 + 1; 8]);
        len(&mut s, 3, b"vendor=on");
        if let Some(p) = parent {
            len(&mut s, 4, &p);
        }
        len(
            &mut s,
            5,
            if i == 0 { "POST /checkout" } else { "SELECT" }.as_bytes(),
        );
        uint(&mut s, 6, if i == 0 { 2 } else { 3 });
        fixed64(&mut s, 7, t0);
        fixed64(&mut s, 8, t0 + 1_500_000_000);
        len(&mut s, 9, &kv("http.route", &str_any("/api/v1/checkout")));
        len(&mut s, 9, &kv("peer.service", &str_any("payments")));
        let mut int_any = Vec::new();
        uint(&mut int_any, 3, 503);
        len(&mut s, 9, &kv("http.status_code", &int_any));
        len(&mut s, 9, &kv("error", &[0x10, 1]));
        let mut event = Vec::new();
        len(&mut event, 2, b"exception");
        len(&mut event, 3, &kv("exception.type", &str_any("IOError")));
        len(&mut s, 11, &event);
        let mut status = Vec::new();
        uint(&mut status, 3, 2);
        len(&mut s, 15, &status);
        fixed32(&mut s, 16, 1);
        spans.push(s);
    }
    fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
        varint(out, u64::from(field << 3 | 5));
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut scope_spans = Vec::new();
    len(&mut scope_spans, 1, &scope);
    for s in &spans {
        len(&mut scope_spans, 2, s);
    }
    let mut resource_spans = Vec::new();
    len(&mut resource_spans, 1, &resource);
    len(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::new();
    len(&mut request, 1, &resource_spans);
    request
}

/// Sizes the engine allocates up front or may grow to: capped so that a config asking for billions of
/// traces is loaded and normalized in full but runs with small limits (libFuzzer's RSS limit is 2 GB).
fn cap(cfg: &mut EngineConfig) {
    cfg.num_traces = cfg.num_traces.min(1024);
    cfg.sampled_cache_size = cfg.sampled_cache_size.min(1 << 12);
    cfg.non_sampled_cache_size = cfg.non_sampled_cache_size.min(1 << 12);
    cfg.decision_log_size = cfg.decision_log_size.min(1 << 10);
    cfg.recent_kept_bytes = cfg.recent_kept_bytes.min(1 << 20);
    cfg.late_span_buffer_bytes = cfg.late_span_buffer_bytes.min(1 << 20);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = EngineConfig::from_json(text) else {
        return;
    };
    let normalized = cfg.normalized();
    black_box(cfg.policy_names());
    match EngineConfig::from_value(&normalized) {
        Ok(again) => assert_eq!(
            again.normalized(),
            normalized,
            "normalized() does not load back as the same configuration"
        ),
        Err(e) => panic!("normalized() does not load back: {e}\n{normalized}"),
    }
    let mut cfg = cfg;
    cap(&mut cfg);
    let wait = cfg.decision_wait_ns;
    let engine = Engine::new(cfg);
    let p = payload();
    let t0: i64 = 1_700_000_000_000_000_000;
    let _ = engine.ingest(&p, t0);
    black_box(engine.poll(t0.saturating_add(wait / 2)));
    black_box(engine.poll(t0.saturating_add(wait).saturating_add(1)));
    let _ = engine.ingest(&p, t0.saturating_add(wait).saturating_add(2));
    black_box(engine.flush(t0.saturating_add(wait.saturating_mul(2))));
    black_box((
        engine.stats(),
        engine.policy_stats(),
        engine.gaps().is_some(),
        engine.red_metrics().is_some(),
    ));
});
