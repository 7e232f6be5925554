//! OTTL conditions as `ottl_condition` policies take them: the input (UTF-8, lossy) parsed in both contexts;
//! on success the accessors the config loader calls (`attribute_keys`, `keys_read`, `bind`), then evaluation on
//! a few fixed spans and events whose attributes take every value type. On failure the error is displayed (the
//! caret line). A panic anywhere is a bug; an `Err` (parse or evaluation) is not.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use tailsample_core::otlp::decode::{AttrKeys, AttrValue, SpanView};
use tailsample_core::policy::ottl::{parse, ContextKind, EventCtx, SpanCtx};

/// The values an attribute can take, as the scanner extracts them.
const VALUES: &[AttrValue<'static>] = &[
    AttrValue::Str("GET /api/v1/checkout"),
    AttrValue::Int(503),
    AttrValue::Double(-0.5),
    AttrValue::Bool(true),
    AttrValue::Bytes(&[0xde, 0xad, 0xbe, 0xef]),
    AttrValue::Absent,
    AttrValue::Empty,
    // ["true", 2] and {"a": "x"} as the scanner keeps them (raw `ArrayValue` / `KeyValueList`), and bytes that
    // are not a valid message (a hand-made value: lazy reads must not panic on it either).
    AttrValue::Array(&[
        0x0a, 0x06, 0x0a, 0x04, b't', b'r', b'u', b'e', 0x0a, 0x02, 0x18, 0x02,
    ]),
    AttrValue::Map(&[0x0a, 0x08, 0x0a, 0x01, b'a', 0x12, 0x03, 0x0a, 0x01, b'x']),
    AttrValue::Array(&[0x0a, 0xff]),
    AttrValue::Str(""),
    AttrValue::Int(i64::MIN),
    AttrValue::Double(f64::NAN),
    AttrValue::Str("ünïcödé ✓"),
    AttrValue::Int(0),
    AttrValue::Double(1e21),
];

/// `InstrumentationScope{name: "io.opentelemetry.http", version: "1.2.0", attributes: [{key: "k", value: "v"}]}`.
const SCOPE_RAW: &[u8] = b"\x0a\x15io.opentelemetry.http\x12\x051.2.0\x1a\x08\x0a\x01k\x12\x03\x0a\x01v";

fn span(variant: usize) -> SpanView<'static> {
    SpanView {
        scope: 0,
        raw: &[],
        offset: 0,
        trace_id: [variant as u8; 16],
        span_id: [0xab; 8],
        parent_span_id: (variant % 2 == 1).then_some([1; 8]),
        name: ["POST /checkout", "", "ünï ✓"][variant % 3],
        kind: [2, 0, 99][variant % 3],
        start_time_unix_nano: [1_700_000_000_000_000_000, 0, u64::MAX][variant % 3],
        end_time_unix_nano: [1_700_000_001_000_000_000, 0, 0][variant % 3],
        status_code: [2, 0, -1][variant % 3],
        trace_state: ["vendor=on,t1@sys=x", "", "=,,bad state=="][variant % 3],
        flags: [1, 0, u32::MAX][variant % 3],
    }
}

fn check(expr: &str, kind: ContextKind) {
    let mut cond = match parse(expr, kind) {
        Ok(c) => c,
        Err(e) => {
            black_box(e.to_string());
            return;
        }
    };
    assert_eq!(cond.expr(), expr);
    assert_eq!(cond.kind(), kind);
    let (first, resource) = cond.attribute_keys();
    let read = cond.keys_read();
    for k in read.span.iter().chain(&read.event) {
        assert!(
            first.contains(k),
            "keys_read and attribute_keys disagree on {k:?}"
        );
    }
    assert_eq!(read.resource, resource);
    // As the loader does: one key set for span, event and resource attributes.
    let keys = AttrKeys::new(first.iter().chain(&resource));
    cond.bind(&keys);
    for variant in 0..3 {
        let s = span(variant);
        let pick = |salt: usize| -> Vec<AttrValue<'static>> {
            (0..keys.len())
                .map(|k| VALUES[(k * 7 + variant * 5 + salt) % VALUES.len()])
                .collect()
        };
        let (attrs, resource_attrs, event_attrs) = (pick(0), pick(3), pick(11));
        let ctx = SpanCtx {
            span: &s,
            attrs: &attrs,
            resource_attrs: &resource_attrs,
            scope_name: ["io.opentelemetry.http", ""][variant % 2],
            // An InstrumentationScope with a version and an attribute, or none (`instrumentation_scope.*`).
            scope_raw: [SCOPE_RAW, &[]][variant % 2],
        };
        match kind {
            ContextKind::Span => {
                let _ = black_box(cond.eval_span(&ctx).map_err(|e| e.to_string()));
            }
            ContextKind::SpanEvent => {
                let ev = EventCtx {
                    name: ["exception", ""][variant % 2],
                    attrs: &event_attrs,
                    span: &ctx,
                };
                let _ = black_box(cond.eval_event(&ev).map_err(|e| e.to_string()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Conditions come from YAML strings: long ones are not interesting, and the parser is linear anyway.
    if data.len() > 4096 {
        return;
    }
    let expr = String::from_utf8_lossy(data);
    for kind in [ContextKind::Span, ContextKind::SpanEvent] {
        check(&expr, kind);
    }
});
