//! The scanner against prost: what it extracts equals what a full protobuf decoder reads, the raw span bytes
//! are exactly each span's encoding, and every malformed payload is an error that names its field and offset.

mod common;

use common::otlp_prost::*;
use prost::Message;
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
    trace_id_of_15_bytes: wrap_span(&[field_bytes(1, &[7u8; 15]), field_bytes(2, &[8u8; 8])].concat())
        => (format!("{SPAN}.trace_id"), "trace_id must be 16 bytes, got 15");
    trace_id_missing: wrap_span(&field_bytes(2, &[8u8; 8]))
        => (format!("{SPAN}.trace_id"), "trace_id must be 16 bytes, got 0");
    trace_id_all_zero: wrap_span(&[field_bytes(1, &[0u8; 16]), field_bytes(2, &[8u8; 8])].concat())
        => (format!("{SPAN}.trace_id"), "all zeros");
    span_id_of_9_bytes: wrap_span(&[field_bytes(1, &[7u8; 16]), field_bytes(2, &[8u8; 9])].concat())
        => (format!("{SPAN}.span_id"), "span_id must be 8 bytes, got 9");
    parent_of_4_bytes: wrap_span(&[good_span_fields(), field_bytes(4, &[1u8; 4])].concat())
        => (format!("{SPAN}.parent_span_id"), "parent_span_id must be 8 bytes or empty, got 4");
    name_with_wrong_wire_type: wrap_span(&[good_span_fields(), vec![(5 << 3), 1]].concat())
        => (format!("{SPAN}.name"), "wrong wire type: expected length-delimited, got varint");
    start_time_as_varint: wrap_span(&[good_span_fields(), vec![(7 << 3), 1]].concat())
        => (format!("{SPAN}.start_time_unix_nano"), "expected fixed64, got varint");
    name_not_utf8: wrap_span(&[good_span_fields(), field_bytes(5, &[b'o', 0xff, b'k'])].concat())
        => (format!("{SPAN}.name"), "not valid UTF-8");
    truncated_fixed64: wrap_span(&[good_span_fields(), vec![(8 << 3) | 1, 1, 2, 3]].concat())
        => (format!("{SPAN}.end_time_unix_nano"), "truncated fixed64");
    attribute_value_not_utf8: wrap_span(&[good_span_fields(), field_bytes(9, &[field_bytes(1, b"k"), field_bytes(2, &field_bytes(1, &[0xc3]))].concat())].concat())
        => (format!("{SPAN}.attributes[0].value.string_value"), "not valid UTF-8");
    status_code_wrong_type: wrap_span(&[good_span_fields(), field_bytes(15, &field_bytes(3, b"x"))].concat())
        => (format!("{SPAN}.status.code"), "expected varint");
    link_trace_id_of_3_bytes: wrap_span(&[good_span_fields(), field_bytes(13, &field_bytes(1, &[1, 2, 3]))].concat())
        => (format!("{SPAN}.links[0].trace_id"), "trace_id must be 16 bytes or empty, got 3");
    invalid_wire_type_7: vec![0x0f]
        => (String::new(), "invalid wire type 7");
    resource_spans_as_varint: vec![0x08, 0x01]
        => ("resource_spans[0]".to_string(), "expected length-delimited, got varint");
    length_past_end: vec![0x0a, 0x10, 0x00]
        => ("resource_spans[0]".to_string(), "runs past the end");
    unterminated_varint: vec![0x0a, 0x80]
        => ("resource_spans[0]".to_string(), "truncated varint");
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
