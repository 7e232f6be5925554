"""The native OTLP/JSON -> protobuf transcoder (`_native.otlp_json_to_proto`), against the pure-Python reference.

Requests built with opentelemetry-proto are written as OTLP/JSON by `fileformat.proto_to_json`; the native
transcoder must give back the same message (and, as both follow proto3's field order and zero-value
omission, the same bytes).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otlp_builders import (
    T0,
    attrs,
    kv,
    make_request,
    make_resource_spans,
    make_scope_spans,
    make_span,
    request,
    service,
    span_id,
    trace_id,
)
from tailsample import _native
from tailsample.collector import fileformat
from tailsample.errors import DecodeError

NEAR_2_63 = 2**63 - 1
PAST_2_63 = 2**63 + 12345
MAX_U64 = 2**64 - 1
TID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SID = bytes.fromhex("eee19b7ec3c1b174")


def native(text: str | bytes) -> bytes:
    return _native.otlp_json_to_proto(text.encode() if isinstance(text, str) else text)


def assert_transcodes(payload: bytes) -> None:
    text = fileformat.proto_to_json(payload)
    got = native(text)
    assert ExportTraceServiceRequest.FromString(got) == ExportTraceServiceRequest.FromString(payload)
    assert got == payload  # same field order and zero-value omission as the protobuf encoder
    assert got == fileformat.json_to_proto(text)


def every_value_kind() -> list[Any]:
    return [*attrs({
        "s": "some value", "empty.s": "", "unicode": "ü ✓ \"q\"\n\\ \u2028 \U0001f600",
        "b.true": True, "b.false": False,
        "i.max": NEAR_2_63, "i.min": -(2**63), "i.zero": 0, "i.neg": -1,
        "d": 0.1, "d.big": 1.7976931348623157e308, "d.tiny": 5e-324, "d.neg0": -0.0, "d.zero": 0.0,
        "d.inf": math.inf, "d.ninf": -math.inf,
        "bytes": b"\x00\xff binary \x01", "bytes.empty": b"", "bytes.long": bytes(range(256)) * 2,
        "arr": ["x", 7, 1.5, [True], {"k": "v"}], "arr.empty": [],
        "kvlist": {"inner": {"deep": [-2.5, {"deeper": b"\x01"}]}}, "kvlist.empty": {},
    }), _unset()]


def _unset() -> Any:
    out = kv("unset", "")
    out.value.Clear()
    return out


def full_request() -> bytes:
    root = Span(
        trace_id=TID, span_id=SID, parent_span_id=b"", name="GET /checkout " + "x" * 300,
        kind=Span.SpanKind.SPAN_KIND_SERVER, start_time_unix_nano=NEAR_2_63 - 10**9,
        end_time_unix_nano=NEAR_2_63, attributes=every_value_kind(), trace_state="congo=t61rcWkgMzE",
        flags=0xFFFFFFFF, dropped_attributes_count=2**32 - 1, dropped_events_count=1, dropped_links_count=2,
        status=Status(code=Status.StatusCode.STATUS_CODE_ERROR, message="boom"),
        events=[
            Span.Event(time_unix_nano=PAST_2_63, name="exception", dropped_attributes_count=1,
                       attributes=attrs({"exception.type": "ValueError"})),
            Span.Event(time_unix_nano=MAX_U64, name="no attributes"),
            Span.Event(),
        ],
        links=[
            Span.Link(trace_id=trace_id(), span_id=span_id(), trace_state="a=b", flags=0x100,
                      attributes=attrs({"link.kind": "follows"}), dropped_attributes_count=4),
            Span.Link(trace_id=TID, span_id=SID),
            Span.Link(),
        ],
    )
    child = make_span(TID, parent=SID, name="SELECT", kind=Span.SpanKind.SPAN_KIND_CLIENT,
                      end=PAST_2_63, status=Status.STATUS_CODE_OK, flags=1)
    kinds = [make_span(TID, bytes([k + 1]) * 8, parent=SID, kind=k, name=f"kind {k}") for k in range(6)]
    odd_status = Span(trace_id=TID, span_id=SID, status=Status(code=7))  # open enum: unknown values kept
    empty_status = Span(trace_id=TID, span_id=SID, status=Status())
    scope = InstrumentationScope(name="my.library", version="1.0.0", attributes=attrs({"scope.attr": 5}),
                                 dropped_attributes_count=3)
    resource = Resource(attributes=attrs(service("checkout", **{"host.count": 2})), dropped_attributes_count=2)
    return request(
        ResourceSpans(resource=resource, schema_url="https://opentelemetry.io/schemas/1.21.0", scope_spans=[
            ScopeSpans(scope=scope, spans=[root, child], schema_url="https://opentelemetry.io/schemas/1.20.0"),
            make_scope_spans([*kinds, odd_status, empty_status], scope=None),
            ScopeSpans(scope=InstrumentationScope()),
        ]),
        make_resource_spans(service("other"), [make_scope_spans([make_span(trace_id())])]),
        ResourceSpans(resource=Resource()),
        ResourceSpans(),
    )


def test_full_request() -> None:
    assert_transcodes(full_request())


def test_empty_requests() -> None:
    assert_transcodes(b"")
    assert native("{}") == b""
    assert native(' {"resourceSpans": []}\n') == b""


@pytest.mark.parametrize("start", [0, 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1])
@pytest.mark.parametrize("as_number", [False, True])
def test_64_bit_times_as_strings_and_numbers(start: int, as_number: bool) -> None:
    payload = make_request(service("a"), [make_span(TID, SID, start=start, end=start)])
    obj = json.loads(fileformat.proto_to_json(payload))
    if as_number:
        span = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            if key in span:
                span[key] = int(span[key])
    assert native(json.dumps(obj)) == payload


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, -1.5])
def test_doubles(value: float) -> None:
    payload = make_request(None, [make_span(TID, SID, attributes={"d": value})])
    text = fileformat.proto_to_json(payload)
    got = native(text)
    assert got == payload  # compared as bytes: NaN != NaN
    decoded = ExportTraceServiceRequest.FromString(got).resource_spans[0].scope_spans[0].spans[0]
    d = decoded.attributes[0].value.double_value
    assert (math.isnan(d) and math.isnan(value)) or (d == value and math.copysign(1, d) == math.copysign(1, value))


def test_lenient_spellings() -> None:
    expected = make_request(service("my.service"), [
        make_span(TID, SID, parent=bytes.fromhex("eee19b7ec3c1b173"), name="server", start=1544712660000000000,
                  end=1544712661000000000, kind=Span.SpanKind.SPAN_KIND_SERVER, status=Status.STATUS_CODE_ERROR,
                  attributes={"d": 1.5, "i": 3})], scope=("my.library", "1.0.0"))
    lenient = {
        "resource_spans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "my.service"}}]},
            "future_field": {"anything": [1, 2]},
            "scope_spans": [{
                "scope": {"name": "my.library", "version": "1.0.0"},
                "spans": [{
                    "trace_id": TID.hex().upper(),
                    "span_id": "7uGbfsPBsXQ=",  # base64 of the right size, as a plain proto3 encoder writes
                    "parentSpanId": "EEE19B7EC3C1B173",
                    "name": "server",
                    "start_time_unix_nano": "1544712660000000000",
                    "endTimeUnixNano": 1544712661000000000,
                    "kind": "SPAN_KIND_SERVER",
                    "status": {"code": "STATUS_CODE_ERROR", "message": None},
                    "newerField": 1,
                    "attributes": [{"key": "d", "value": {"doubleValue": "1.5"}},
                                   {"key": "i", "value": {"intValue": 3.0}}],
                }],
            }],
        }],
        "unknownTopLevel": True,
    }
    assert native(json.dumps(lenient)) == expected
    assert fileformat.json_to_proto(lenient) == expected


def test_unknown_enum_names_are_ignored() -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TID.hex(), "kind": "SPAN_KIND_FUTURE", "status": {"code": "STATUS_CODE_MAYBE"}}]}]}]}
    assert native(json.dumps(body)) == fileformat.json_to_proto(body)


def test_legacy_instrumentation_library_spans() -> None:
    legacy = {"resourceSpans": [{"instrumentationLibrarySpans": [{
        "instrumentationLibrary": {"name": "old.lib", "version": "0.1"},
        "spans": [{"traceId": TID.hex(), "spanId": SID.hex(), "name": "old"}]}]}]}
    assert native(json.dumps(legacy)) == fileformat.json_to_proto(legacy)


def test_synthetic_traffic() -> None:
    from tailsample.traffic.synth import TrafficGenerator

    gen = TrafficGenerator(seed=3, spans_per_second=2_000, spans_per_payload=200)
    n = 0
    for batch in gen.batches(0.5):
        assert_transcodes(batch.payload)
        n += 1
        if n == 20:
            break
    assert n > 0


PREFIX = "resourceSpans[0].scopeSpans[1].spans[0]"
# json_format takes these (invalid base64 as empty bytes, a list for a message as an empty one); we refuse them.
REFERENCE_IS_LENIENT = {"attributes[0].value.bytesValue", "attributes[0].value.arrayValue.values[0].kvlistValue"}


@pytest.mark.parametrize(("span", "field", "message"), [
    ({"traceId": "xyz"}, "traceId", "invalid trace id \"xyz\": expected 32 hex digits"),
    ({"traceId": TID.hex()[:-2]}, "traceId", "expected 32 hex digits"),
    ({"traceId": TID.hex()[:-1] + "g"}, "traceId", "expected 32 hex digits"),
    ({"spanId": TID.hex()}, "spanId", "invalid span id"),
    ({"parentSpanId": "12"}, "parentSpanId", "expected 16 hex digits"),
    ({"links": [{}, {"spanId": "g" * 16}]}, "links[1].spanId", "invalid span id"),
    ({"traceId": 1}, "traceId", "got a number"),
    ({"kind": 2**31}, "kind", "out of range"),
    ({"status": {"code": []}}, "status.code", "got an array"),
    ({"startTimeUnixNano": "soon"}, "startTimeUnixNano", "expected an unsigned 64-bit integer"),
    ({"startTimeUnixNano": str(2**64)}, "startTimeUnixNano", "out of range"),
    ({"endTimeUnixNano": -1}, "endTimeUnixNano", "out of range"),
    ({"droppedEventsCount": 2**32}, "droppedEventsCount", "out of range"),
    ({"flags": "x"}, "flags", "expected an unsigned 32-bit integer"),
    ({"events": {}}, "events", "expected an array"),
    ({"events": [{"name": 5}]}, "events[0].name", "expected a string"),
    ({"attributes": [{"key": "k", "value": {"intValue": str(2**63)}}]}, "attributes[0].value.intValue",
     "out of range"),
    ({"attributes": [{"key": "k", "value": {"doubleValue": "fast"}}]}, "attributes[0].value.doubleValue",
     "expected a number"),
    ({"attributes": [{"key": "k", "value": {"bytesValue": "!!"}}]}, "attributes[0].value.bytesValue",
     "invalid base64"),
    ({"attributes": [{"key": "k", "value": {"boolValue": 1}}]}, "attributes[0].value.boolValue",
     "expected true or false"),
    ({"attributes": [{"key": "k", "value": {"arrayValue": {"values": [{"kvlistValue": []}]}}}]},
     "attributes[0].value.arrayValue.values[0].kvlistValue", "expected an object"),
])
def test_errors_name_the_json_path(span: dict[str, Any], field: str, message: str) -> None:
    body = {"resourceSpans": [{"scopeSpans": [{}, {"spans": [span]}]}]}
    with pytest.raises(DecodeError) as info:
        native(json.dumps(body))
    assert info.value.field == f"{PREFIX}.{field}"
    assert info.value.offset == 0
    assert message in str(info.value)
    if field not in REFERENCE_IS_LENIENT:
        with pytest.raises(DecodeError):  # the reference refuses it too
            fileformat.json_to_proto(body)


def test_two_members_of_a_oneof() -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"attributes": [{"key": "k", "value": {"stringValue": "a", "intValue": "1"}}]}]}]}]}
    with pytest.raises(DecodeError, match="holds one value") as info:
        native(json.dumps(body))
    assert (info.value.field or "").startswith("resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.")


@pytest.mark.parametrize(("body", "message", "offset"), [
    (b"{", "invalid JSON", 1),
    (b'{"resourceSpans": [}', "invalid JSON", 19),
    (b"\xff\xfe{}", "invalid JSON", 0),
    (b'{"a": "\xff"}', "invalid JSON", 7),
    (b"[1, 2]", "expected a JSON object, got an array", 0),
    (b'"x"', "got a string", 0),
    (b'{"resourceMetrics": []}', "it holds metrics, not traces", 0),
    (b'{"resourceLogs": [], "resourceProfiles": []}', "it holds logs and profiles, not traces", 0),
    (b'{"name": "x", "spans": []}', "no resourceSpans (keys: name, spans)", 0),
    (b'{"resourceSpans": 5}', "expected an array", 0),
])
def test_not_a_request(body: bytes, message: str, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        native(body)
    assert message in str(info.value)
    assert info.value.offset is not None and abs(info.value.offset - offset) <= 1


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    body = '{"resourceSpans":' + "[" * 100_000
    with pytest.raises(DecodeError, match="invalid JSON"):
        native(body)


# -- hypothesis ---------------------------------------------------------------------------------------------

def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.text().map(lambda s: AnyValue(string_value=s)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
        st.binary(max_size=20).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return scalars
    inner = any_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.tuples(st.text(max_size=8), inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in kvs]))),
    )


def _kv(key: str, value: AnyValue) -> Any:
    out = kv(key, "")
    out.value.CopyFrom(value)
    return out


u64 = st.integers(0, MAX_U64)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    values = draw(st.lists(any_values(), max_size=4))
    return Span(
        trace_id=draw(st.binary(min_size=16, max_size=16)), span_id=draw(st.binary(min_size=8, max_size=8)),
        parent_span_id=draw(st.sampled_from([b"", b"\x01" * 8])), trace_state=draw(st.text(max_size=5)),
        name=draw(st.text(max_size=10)), kind=draw(st.integers(0, 5)), flags=draw(u32),
        start_time_unix_nano=draw(u64), end_time_unix_nano=draw(u64),
        attributes=[_kv(f"k{i}", v) for i, v in enumerate(values)],
        dropped_attributes_count=draw(u32), dropped_events_count=draw(u32), dropped_links_count=draw(u32),
        events=[Span.Event(time_unix_nano=t, name=n) for t, n in draw(st.lists(st.tuples(u64, st.text(max_size=3)),
                                                                                 max_size=2))],
        links=[Span.Link(trace_id=t, span_id=s, flags=f) for t, s, f in draw(st.lists(st.tuples(
            st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), u32), max_size=2))],
        status=draw(st.one_of(st.none(), st.builds(Status, code=st.integers(0, 2), message=st.text(max_size=4)))),
    )


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(spans(), max_size=3), schema=st.text(max_size=5), with_resource=st.booleans())
def test_round_trip_property(spans: list[Span], schema: str, with_resource: bool) -> None:
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=spans, schema_url=schema)], schema_url=schema)
    if with_resource:
        rs.resource.CopyFrom(Resource(attributes=attrs({"service.name": "s"})))
    assert_transcodes(request(rs))


def test_random_large_payloads() -> None:
    rng = random.Random(7)
    spans_ = [make_span(trace_id(rng), rng=rng, start=T0 + i, attributes={"i": i, "s": "v" * (i % 200)})
              for i in range(500)]
    assert_transcodes(make_request(service("big"), spans_))
