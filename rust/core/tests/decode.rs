//! The scanner against prost: what it extracts equals what a full protobuf decoder reads, the raw span bytes
//! are exactly each span's encoding, and every malformed payload is an error that names its field and offset.

mod common;

use common::otlp_prost::*;
use prost::Message;
use tailsample_core::otlp::wire::RejectReason;
use tailsample_core::otlp::{decode, AttrKeys, AttrValue};
use tailsample_core::Error;

fn keys() -> AttrKeys {
    AttrKeys::new([
        "http.response.status_code",
        "user.id",
        "cache.hit",
        "payment.amount",
        "service.name",
        "absent.key",
    ])
}

/// Scenario: realistic requests of several sizes and shapes. Guarantees: every extracted field equals prost's
/// reading, and each span's raw bytes are exactly prost's encoding of that span.
#[test]
fn extraction_matches_prost() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (spans, per_trace) in [(1, 1), (10, 5), (100, 20), (1000, 200), (257, 3)] {
        let mut req = request(&mut rng, spans, per_trace, "checkout");
        // A second resource with two scopes, one without schema URL.
        let mut second = request(&mut rng, 7, 2, "payment").resource_spans.remove(0);
        second.scope_spans.push(ScopeSpans {
            scope: None,
            spans: request(&mut rng, 3, 3, "x").resource_spans[0].scope_spans[0]
                .spans
                .clone(),
            schema_url: String::new(),
        });
        req.resource_spans.push(second);
        let bytes = req.encode_to_vec();
        let k = keys();
        let d = decode(&bytes, &k).expect("valid request");
        let expected: Vec<(usize, usize, &Span)> = req
            .resource_spans
            .iter()
            .enumerate()
            .flat_map(|(ri, rs)| {
                rs.scope_spans
                    .iter()
                    .enumerate()
                    .flat_map(move |(si, ss)| ss.spans.iter().map(move |s| (ri, si, s)))
            })
            .collect();
        assert_eq!(d.spans.len(), expected.len());
        assert_eq!(d.resources.len(), req.resource_spans.len());
        for (i, (got, (ri, _, want))) in d.spans.iter().zip(expected.iter()).enumerate() {
            assert_eq!(
                got.raw,
                want.encode_to_vec().as_slice(),
                "span {i} raw bytes"
            );
            assert_eq!(&got.trace_id[..], &want.trace_id[..]);
            assert_eq!(&got.span_id[..], &want.span_id[..]);
            assert_eq!(
                got.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
                want.parent_span_id
            );
            assert_eq!(got.name, want.name);
            assert_eq!(got.kind, want.kind);
            assert_eq!(got.start_time_unix_nano, want.start_time_unix_nano);
            assert_eq!(got.end_time_unix_nano, want.end_time_unix_nano);
            assert_eq!(got.status_code, want.status.as_ref().map_or(0, |s| s.code));
            assert_eq!(got.trace_state, want.trace_state);
            assert_eq!(got.flags, want.flags);
            assert_eq!(d.scopes[got.scope as usize].resource as usize, *ri);
            let find = |key: &str| {
                want.attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.clone())
            };
            use any_value::Value as V;
            assert_eq!(
                d.span_attr(i, 0),
                match find("http.response.status_code").and_then(|v| v.value) {
                    Some(V::IntValue(n)) => AttrValue::Int(n),
                    _ => AttrValue::Absent,
                }
            );
            match (d.span_attr(i, 1), find("user.id").and_then(|v| v.value)) {
                (AttrValue::Str(s), Some(V::StringValue(w))) => assert_eq!(s, w),
                other => panic!("user.id: {other:?}"),
            }
            match (d.span_attr(i, 2), find("cache.hit").and_then(|v| v.value)) {
                (AttrValue::Bool(b), Some(V::BoolValue(w))) => assert_eq!(b, w),
                other => panic!("cache.hit: {other:?}"),
            }
            match (
                d.span_attr(i, 3),
                find("payment.amount").and_then(|v| v.value),
            ) {
                (AttrValue::Double(x), Some(V::DoubleValue(w))) => assert_eq!(x, w),
                other => panic!("payment.amount: {other:?}"),
            }
            assert_eq!(
                d.span_attr(i, 4),
                AttrValue::Absent,
                "a resource key is not a span attribute"
            );
            assert_eq!(d.span_attr(i, 5), AttrValue::Absent);
        }
        for (ri, rs) in req.resource_spans.iter().enumerate() {
            assert_eq!(
                d.resources[ri].raw.as_deref(),
                rs.resource.as_ref().map(|r| r.encode_to_vec()).as_deref()
            );
            assert_eq!(d.resources[ri].schema_url, rs.schema_url);
            let svc = rs
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .unwrap();
            match (d.resource_attr(ri, 4), &svc.value.as_ref().unwrap().value) {
                (AttrValue::Str(s), Some(any_value::Value::StringValue(w))) => assert_eq!(s, w),
                other => panic!("service.name: {other:?}"),
            }
        }
    }
}

/// Scenario: nested attribute values of every kind, events and links. Guarantees: accepted; the first of
/// duplicate keys wins, as `pcommon.Map.Get` returns the first.
#[test]
fn nested_values_and_duplicates() {
    let mut rng = Rng(99);
    let mut req = request(&mut rng, 1, 1, "svc");
    let s = &mut req.resource_spans[0].scope_spans[0].spans[0];
    let nested = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "inner".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(any_value::Value::BytesValue(vec![0, 255])),
                            },
                            AnyValue { value: None },
                        ],
                    })),
                }),
            }],
        })),
    };
    s.attributes.insert(
        0,
        KeyValue {
            key: "user.id".into(),
            value: Some(nested),
        },
    );
    s.links.push(Link {
        trace_id: rng.id16(),
        span_id: rng.id8(),
        trace_state: "a=b".into(),
        attributes: vec![kv_int("n", 1)],
        dropped_attributes_count: 0,
        flags: 1,
    });
    let first = s.attributes[0].value.clone().unwrap();
    let bytes = req.encode_to_vec();
    let d = decode(&bytes, &keys()).unwrap();
    assert!(
        matches!(d.span_attr(0, 1), AttrValue::Map(_)),
        "first occurrence wins"
    );
    assert_same(d.span_attr(0, 1), &first);
}

/// `got`, read lazily down to its leaves, is prost's `want`.
fn assert_same(got: AttrValue<'_>, want: &AnyValue) {
    use any_value::Value as V;
    match (got, &want.value) {
        (AttrValue::Empty, None) => {}
        (AttrValue::Str(a), Some(V::StringValue(b))) => assert_eq!(a, b),
        (AttrValue::Bool(a), Some(V::BoolValue(b))) => assert_eq!(a, *b),
        (AttrValue::Int(a), Some(V::IntValue(b))) => assert_eq!(a, *b),
        (AttrValue::Double(a), Some(V::DoubleValue(b))) => assert_eq!(a.to_bits(), b.to_bits()),
        (AttrValue::Bytes(a), Some(V::BytesValue(b))) => assert_eq!(a, b.as_slice()),
        (AttrValue::Array(_), Some(V::ArrayValue(b))) => {
            let elements: Vec<AttrValue<'_>> = got.elements().collect();
            assert_eq!(elements.len(), b.values.len());
            for (e, w) in elements.into_iter().zip(&b.values) {
                assert_same(e, w);
            }
        }
        (AttrValue::Map(_), Some(V::KvlistValue(b))) => {
            let entries: Vec<(&str, AttrValue<'_>)> = got.entries().collect();
            assert_eq!(entries.len(), b.values.len());
            for ((k, v), w) in entries.into_iter().zip(&b.values) {
                assert_eq!(k, w.key);
                assert_same(v, w.value.as_ref().unwrap_or(&AnyValue { value: None }));
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Scenario: array and map values of every element kind, nested, on a span and on its resource, the way
/// real instrumentation sends captured headers (`["true"]`). Guarantees: the lazily read elements and entries
/// equal prost's decoding, at every depth.
#[test]
fn array_and_map_contents_match_prost() {
    let mut rng = Rng(0x5eed);
    let mut req = request(&mut rng, 1, 1, "checkout");
    let any = |v: any_value::Value| AnyValue { value: Some(v) };
    use any_value::Value as V;
    let leaves = vec![
        any(V::StringValue("true".into())),
        any(V::StringValue("é".repeat(100))),
        any(V::IntValue(-1)),
        any(V::IntValue(i64::MAX)),
        any(V::BoolValue(false)),
        any(V::DoubleValue(-0.5)),
        any(V::BytesValue(vec![1, 2, 3])),
        AnyValue { value: None },
    ];
    let nested = any(V::KvlistValue(KeyValueList {
        values: vec![
            KeyValue {
                key: "list".into(),
                value: Some(any(V::ArrayValue(ArrayValue {
                    values: leaves.clone(),
                }))),
            },
            KeyValue {
                key: "".into(),
                value: None,
            },
        ],
    }));
    let mut values = leaves;
    values.push(nested);
    values.push(any(V::ArrayValue(ArrayValue { values: vec![] })));
    let array = any(V::ArrayValue(ArrayValue { values }));
    let header = any(V::ArrayValue(ArrayValue {
        values: vec![any(V::StringValue("true".into()))],
    }));
    let rs = &mut req.resource_spans[0];
    rs.resource.as_mut().unwrap().attributes.push(KeyValue {
        key: "user.id".into(),
        value: Some(header.clone()),
    });
    let s = &mut rs.scope_spans[0].spans[0];
    s.attributes.retain(|kv| kv.key != "user.id");
    s.attributes.push(KeyValue {
        key: "user.id".into(),
        value: Some(array.clone()),
    });
    let bytes = req.encode_to_vec();
    let d = decode(&bytes, &keys()).unwrap();
    assert_same(d.span_attr(0, 1), &array);
    assert_same(d.resource_attr(0, 1), &header);
}

fn err(bytes: &[u8]) -> (String, usize, String) {
    match decode(bytes, &keys()) {
        Err(Error::Decode {
            field,
            offset,
            message,
        }) => (field, offset, message),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// Encodes one span (given as raw field bytes) inside a request with one resource and scope.
fn wrap_span(span_fields: &[u8]) -> Vec<u8> {
    fn ld(field: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2];
        let mut n = content.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        v.extend_from_slice(content);
        v
    }
    ld(1, &ld(2, &ld(2, span_fields)))
}

fn field_bytes(field: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![(field << 3) | 2, content.len() as u8];
    v.extend_from_slice(content);
    v
}

fn good_span_fields() -> Vec<u8> {
    let mut v = field_bytes(1, &[7u8; 16]);
    v.extend(field_bytes(2, &[8u8; 8]));
    v
}

macro_rules! malformed {
    ($($name:ident: $bytes:expr => ($field:expr, $msg:expr);)*) => {$(
        #[test]
        fn $name() {
            let bytes: Vec<u8> = $bytes;
            let (field, offset, message) = err(&bytes);
            assert_eq!(field, $field, "field path ({message} at {offset})");
            assert!(message.contains($msg), "message {message:?} should contain {:?}", $msg);
            assert!(offset <= bytes.len());
        }
    )*};
}

const SPAN: &str = "resource_spans[0].scope_spans[0].spans[0]";

malformed! {
    truncated_fixed64: wrap_span(&[good_span_fields(), vec![(8 << 3) | 1, 1, 2, 3]].concat())
        => (format!("{SPAN}.end_time_unix_nano"), "truncated fixed64");
    invalid_wire_type_7: vec![0x0f]
        => (String::new(), "invalid wire type 7");
    length_past_end: vec![0x0a, 0x10, 0x00]
        => ("resource_spans[0]".to_string(), "runs past the end");
    unterminated_varint: vec![0x0a, 0x80]
        => ("resource_spans[0]".to_string(), "truncated varint");
    // A reason to reject the span alone never hides malformed bytes after it, in the span or in the link.
    link_bad_id_then_truncated: wrap_span(&[good_span_fields(), field_bytes(13, &[field_bytes(1, &[1, 2, 3]), vec![0x12, 0x08, 1]].concat())].concat())
        => (format!("{SPAN}.links[0].span_id"), "runs past the end");
    bad_span_id_then_truncated: wrap_span(&[field_bytes(1, &[7u8; 16]), field_bytes(2, &[1, 2]), vec![0x41, 0x01]].concat())
        => (format!("{SPAN}.end_time_unix_nano"), "truncated fixed64");
    name_not_utf8_then_truncated: wrap_span(&[good_span_fields(), field_bytes(5, &[b'o', 0xff]), vec![0x2a, 9]].concat())
        => (format!("{SPAN}.name"), "runs past the end");
}

/// The span `bad` between two good spans (trace bytes 1 and 2), under one resource and scope.
fn between_good(bad: &[u8]) -> Vec<u8> {
    let good = |t: u8| [field_bytes(1, &[t; 16]), field_bytes(2, &[t; 8])].concat();
    let mut ss = Vec::new();
    for s in [good(1), bad.to_vec(), good(2)] {
        ss.extend(field_bytes(2, &s));
    }
    let rs = [vec![0x12], varint(ss.len()), ss].concat();
    [vec![0x0a], varint(rs.len()), rs].concat()
}

fn varint(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v
}

macro_rules! rejected_alone {
    ($($name:ident: $span:expr => ($reason:ident, $field:expr, $msg:expr);)*) => {$(
        /// Scenario: a span that cannot be used between two good ones. Guarantees: it alone is rejected,
        /// counted under its reason, named with its field; the good spans are taken.
        #[test]
        fn $name() {
            let span: Vec<u8> = $span;
            let bytes = between_good(&span);
            let d = decode(&bytes, &keys()).expect("the rest of the request stands");
            assert_eq!(
                d.spans.iter().map(|s| s.trace_id[0]).collect::<Vec<_>>(),
                [1, 2]
            );
            assert_eq!(d.rejected_spans, 1);
            let mut want = [0; RejectReason::ALL.len()];
            want[RejectReason::$reason.index()] = 1;
            assert_eq!(d.rejected_by_reason, want);
            let why = d.rejection.unwrap_or_default();
            let at = format!("resource_spans[0].scope_spans[0].spans[1].{}: ", $field);
            assert!(why.starts_with(&at), "{why}");
            assert!(why.contains($msg), "{why} should contain {:?}", $msg);
        }
    )*};
}

rejected_alone! {
    trace_id_of_15_bytes: [field_bytes(1, &[7u8; 15]), field_bytes(2, &[8u8; 8])].concat()
        => (InvalidTraceId, "trace_id", "trace_id must be 16 bytes or empty, got 15");
    trace_id_missing: field_bytes(2, &[8u8; 8])
        => (InvalidTraceId, "trace_id", "trace_id is empty or absent");
    trace_id_empty: [field_bytes(1, &[]), field_bytes(2, &[8u8; 8])].concat()
        => (InvalidTraceId, "trace_id", "trace_id is empty or absent");
    trace_id_all_zero: [field_bytes(1, &[0u8; 16]), field_bytes(2, &[8u8; 8])].concat()
        => (InvalidTraceId, "trace_id", "all zeros");
    span_id_of_9_bytes: [field_bytes(1, &[7u8; 16]), field_bytes(2, &[8u8; 9])].concat()
        => (IdLength, "span_id", "span_id must be 8 bytes or empty, got 9");
    parent_of_4_bytes: [good_span_fields(), field_bytes(4, &[1u8; 4])].concat()
        => (IdLength, "parent_span_id", "parent_span_id must be 8 bytes or empty, got 4");
    link_trace_id_of_3_bytes: [good_span_fields(), field_bytes(13, &field_bytes(1, &[1, 2, 3]))].concat()
        => (IdLength, "links[0]", "trace_id must be 16 bytes or empty, got 3");
}

/// The request of `span` between two good spans, checked to be taken whole, the span's bytes as they came.
fn taken(span: &[u8], keys: &AttrKeys) -> Vec<u8> {
    let bytes = between_good(span);
    let d = decode(&bytes, keys).expect("taken");
    assert_eq!((d.spans.len(), d.rejected_spans), (3, 0));
    assert_eq!(d.spans[1].raw, span, "the span's bytes, as they came");
    bytes
}

/// Scenario: what pdata (the reference) takes: invalid UTF-8 in strings, an empty span ID.
/// Guarantees: the span is taken, its bytes kept as they came; an invalid string reads as "", an empty span ID
/// as zeros.
#[test]
fn what_runtimes_parse_is_taken_as_it_came() {
    let k = AttrKeys::new(["k"]);
    let read = |span: &[u8], f: &dyn Fn(&tailsample_core::otlp::decode::Decoded<'_>)| {
        let bytes = taken(span, &k);
        f(&decode(&bytes, &k).unwrap());
    };
    let g = good_span_fields;
    read(&[g(), field_bytes(5, &[b'o', 0xff, b'k'])].concat(), &|d| {
        assert_eq!(d.spans[1].name, "")
    });
    let attr = field_bytes(
        9,
        &[
            field_bytes(1, b"k"),
            field_bytes(2, &field_bytes(1, &[0xc3])),
        ]
        .concat(),
    );
    read(&[g(), attr].concat(), &|d| {
        assert_eq!(d.span_attr(1, 0), AttrValue::Str(""))
    });
    let key_not_utf8 = field_bytes(
        9,
        &[
            field_bytes(1, &[0xff]),
            field_bytes(2, &field_bytes(1, b"v")),
        ]
        .concat(),
    );
    read(&[g(), key_not_utf8].concat(), &|d| {
        assert_eq!(d.span_attr(1, 0), AttrValue::Absent)
    });
    read(
        &[
            g(),
            field_bytes(15, &[field_bytes(2, &[0xfe]), vec![0x18, 2]].concat()),
        ]
        .concat(),
        &|d| assert_eq!(d.spans[1].status_code, 2),
    );
    read(
        &[field_bytes(1, &[7u8; 16]), field_bytes(2, &[])].concat(),
        &|d| assert_eq!(d.spans[1].span_id, [0; 8]),
    );
    read(&field_bytes(1, &[7u8; 16]), &|d| {
        assert_eq!(d.spans[1].span_id, [0; 8])
    });
    // Events and links with invalid strings.
    let event = field_bytes(11, &field_bytes(2, &[0xff]));
    let link = field_bytes(13, &field_bytes(3, &[0xc0]));
    read(&[g(), event, link].concat(), &|d| {
        assert_eq!(d.spans.len(), 3)
    });
    // Mistyped fields at the request, resource spans and scope spans levels, whose bytes are not passed on:
    // unknown, skipped.
    let d = decode(&[0x08, 0x01], &k).unwrap();
    assert_eq!((d.spans.len(), d.rejected_spans), (0, 0));
    let rs = [
        vec![0x08, 1, 0x10, 1, 0x18, 1],
        field_bytes(2, &[vec![0x08, 1], vec![0x10, 1]].concat()),
    ]
    .concat();
    let req = [vec![0x0a, rs.len() as u8], rs].concat();
    let d = decode(&req, &k).unwrap();
    assert_eq!((d.spans.len(), d.rejected_spans), (0, 0));
}

/// Scenario: a valid one-resource payload cut at every byte. Guarantees: every cut is an error (the length
/// prefix promises more), none panics.
#[test]
fn every_truncation_is_an_error() {
    let mut rng = Rng(7);
    let bytes = request(&mut rng, 20, 4, "svc").encode_to_vec();
    for cut in 1..bytes.len() {
        assert!(
            matches!(decode(&bytes[..cut], &keys()), Err(Error::Decode { .. })),
            "cut at {cut}"
        );
    }
    assert!(
        decode(&bytes[..0], &keys()).unwrap().spans.is_empty(),
        "an empty request is valid"
    );
}

/// Scenario: attribute values nested 200 arrays deep (past the 64 protobuf message levels an accepted request
/// may hold) on one span of ten. Guarantees: that span alone is rejected, named, without a stack overflow; the
/// other nine are taken (issue 18: one span never poisons its request).
#[test]
fn deep_nesting_rejects_the_span_alone() {
    let mut v = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    };
    for _ in 0..200 {
        v = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    let mut rng = Rng(3);
    let mut req = request(&mut rng, 10, 10, "svc");
    req.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key: "deep".into(),
            value: Some(v),
        });
    let bytes = req.encode_to_vec();
    let d = decode(&bytes, &keys()).expect("the rest of the request stands");
    assert_eq!((d.spans.len(), d.rejected_spans), (9, 1));
    let why = d.rejection.unwrap_or_default();
    assert!(why.contains("nested deeper than 64"), "{why}");
    assert!(
        why.starts_with("resource_spans[0].scope_spans[0].spans[0].attributes[10]: "),
        "{why}"
    );
}

/// Scenario: random byte flips in a valid payload. Guarantees: decode returns Ok or a Decode error, never
/// panics, and every accepted span still has valid IDs.
#[test]
fn mutations_never_panic() {
    let mut rng = Rng(0xdead_beef);
    let base = request(&mut rng, 30, 5, "svc").encode_to_vec();
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next() as u8;
        }
        match decode(&b, &keys()) {
            Ok(d) => assert!(d.spans.iter().all(|s| s.trace_id != [0; 16])),
            Err(Error::Decode { .. }) => {}
            Err(other) => panic!("unexpected error kind {other:?}"),
        }
    }
}

/// Scenario: the deprecated `instrumentation_library_spans` (field 1000) from old SDKs. Guarantees: read like
/// `scope_spans`, not silently dropped.
#[test]
fn deprecated_instrumentation_library_spans_are_read() {
    let mut rng = Rng(5);
    let req = request(&mut rng, 3, 3, "svc");
    let ss = req.resource_spans[0].scope_spans[0].encode_to_vec();
    let mut rs = Vec::new();
    // field 1000, wire type 2: tag varint (1000 << 3 | 2) = 8002 = [0xc2, 0x3e]
    rs.extend_from_slice(&[0xc2, 0x3e]);
    prost::encoding::encode_varint(ss.len() as u64, &mut rs);
    rs.extend_from_slice(&ss);
    let mut payload = vec![0x0a];
    prost::encoding::encode_varint(rs.len() as u64, &mut payload);
    payload.extend_from_slice(&rs);
    assert_eq!(decode(&payload, &keys()).unwrap().spans.len(), 3);
}

/// Scenario: a known field with another wire type than declared, anywhere in a span (upb, Go's protobuf and C++
/// read it as unknown; pdata, hence the collector and Jaeger, refuses the whole request holding it), between two
/// good spans. Guarantees: that span alone is rejected, counted under `wire_type` (passed on byte for byte, it
/// would cost every trace of the batch it left in); the good spans are taken.
#[test]
fn wrong_wire_types_reject_the_span_alone() {
    let g = good_span_fields;
    let attr =
        |value: Vec<u8>| field_bytes(9, &[field_bytes(1, b"k"), field_bytes(2, &value)].concat());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "trace_id as a varint",
            [vec![0x08, 1], field_bytes(2, &[8u8; 8])].concat(),
        ),
        ("name as a varint", [g(), vec![5 << 3, 1]].concat()),
        (
            "kind length-delimited",
            [g(), vec![6 << 3 | 2, 1, 3]].concat(),
        ),
        ("start time as a varint", [g(), vec![7 << 3, 1]].concat()),
        (
            "an int value length-delimited",
            [g(), attr(field_bytes(3, b"1"))].concat(),
        ),
        (
            "an array element as a varint",
            [g(), attr(field_bytes(5, &[0x08, 1]))].concat(),
        ),
        (
            "status code length-delimited",
            [g(), field_bytes(15, &field_bytes(3, b"x"))].concat(),
        ),
        (
            "an event's time length-delimited",
            [g(), field_bytes(11, &field_bytes(1, b"12345678"))].concat(),
        ),
        (
            "a link's trace ID as a varint",
            [g(), field_bytes(13, &[0x08, 1])].concat(),
        ),
    ];
    for (what, span) in cases {
        let bytes = between_good(&span);
        let d =
            decode(&bytes, &keys()).unwrap_or_else(|e| panic!("{what}: the request stands: {e}"));
        assert_eq!(
            d.spans.iter().map(|s| s.trace_id[0]).collect::<Vec<_>>(),
            [1, 2],
            "{what}"
        );
        let mut want = [0; RejectReason::ALL.len()];
        want[RejectReason::WireType.index()] = 1;
        assert_eq!(d.rejected_by_reason, want, "{what}");
        let why = d.rejection.unwrap_or_default();
        assert!(
            why.starts_with("resource_spans[0].scope_spans[0].spans[1]"),
            "{what}: {why}"
        );
        assert!(why.contains("wire type"), "{what}: {why}");
    }
}
