"""The collector file exporter's formats, and OTLP/JSON <-> protobuf."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tailsample.collector.fileformat import (
    PayloadReader,
    PayloadWriter,
    detect_format,
    json_to_proto,
    proto_to_json,
    read_payloads,
)
from tailsample.errors import DecodeError

TRACE_A = bytes.fromhex("5b8efff798038103d269b633813fc60c")
TRACE_B = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_1 = bytes.fromhex("eee19b7ec3c1b174")
SPAN_2 = bytes.fromhex("eee19b7ec3c1b173")
SPAN_3 = bytes.fromhex("00f067aa0ba902b7")
NEAR_2_63 = 2**63 - 1
PAST_2_63 = 2**63 + 12345
MAX_U64 = 2**64 - 1


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def every_value_kind() -> list[KeyValue]:
    """One attribute of every AnyValue kind, with arrays and kvlists nested in each other."""
    nested = KeyValueList(values=[
        kv("inner.s", AnyValue(string_value="ü ✓ \"quoted\"\nnewline")),
        kv("inner.arr", AnyValue(array_value=ArrayValue(values=[
            AnyValue(int_value=-1), AnyValue(bool_value=False), AnyValue(kvlist_value=KeyValueList(values=[
                kv("deep", AnyValue(double_value=-2.5))]))]))),
    ])
    return [
        kv("s", AnyValue(string_value="some value")),
        kv("empty.s", AnyValue(string_value="")),
        kv("b.true", AnyValue(bool_value=True)),
        kv("b.false", AnyValue(bool_value=False)),
        kv("i.max", AnyValue(int_value=NEAR_2_63)),
        kv("i.min", AnyValue(int_value=-(2**63))),
        kv("i.zero", AnyValue(int_value=0)),
        kv("d", AnyValue(double_value=0.1)),
        kv("d.big", AnyValue(double_value=1.7976931348623157e308)),
        kv("d.inf", AnyValue(double_value=float("-inf"))),
        kv("bytes", AnyValue(bytes_value=b"\x00\xff binary \x01")),
        kv("arr", AnyValue(array_value=ArrayValue(values=[
            AnyValue(string_value="x"), AnyValue(int_value=7), AnyValue(double_value=1.5),
            AnyValue(array_value=ArrayValue(values=[AnyValue(bool_value=True)])), AnyValue()]))),
        kv("arr.empty", AnyValue(array_value=ArrayValue())),
        kv("kvlist", AnyValue(kvlist_value=nested)),
        kv("kvlist.empty", AnyValue(kvlist_value=KeyValueList())),
        kv("unset", AnyValue()),
    ]


def full_request() -> ExportTraceServiceRequest:
    """A request using every field of the trace model that OTLP/JSON treats specially."""
    root = Span(
        trace_id=TRACE_A, span_id=SPAN_1, parent_span_id=b"", name="GET /checkout",
        kind=Span.SpanKind.SPAN_KIND_SERVER, start_time_unix_nano=NEAR_2_63 - 10**9,
        end_time_unix_nano=NEAR_2_63, attributes=every_value_kind(), trace_state="congo=t61rcWkgMzE",
        flags=0x301, dropped_attributes_count=3, dropped_events_count=1, dropped_links_count=2,
        status=Status(code=Status.StatusCode.STATUS_CODE_ERROR, message="boom"),
        events=[
            Span.Event(time_unix_nano=PAST_2_63, name="exception", dropped_attributes_count=1, attributes=[
                kv("exception.type", AnyValue(string_value="ValueError"))]),
            Span.Event(time_unix_nano=MAX_U64, name="no attributes"),
        ],
        links=[
            Span.Link(trace_id=TRACE_B, span_id=SPAN_3, trace_state="a=b", flags=0x100,
                      attributes=[kv("link.kind", AnyValue(string_value="follows"))],
                      dropped_attributes_count=4),
            Span.Link(trace_id=TRACE_A, span_id=SPAN_2),
        ],
    )
    child = Span(
        trace_id=TRACE_A, span_id=SPAN_2, parent_span_id=SPAN_1, name="SELECT",
        kind=Span.SpanKind.SPAN_KIND_CLIENT, start_time_unix_nano=1, end_time_unix_nano=PAST_2_63,
        status=Status(code=Status.StatusCode.STATUS_CODE_OK),
    )
    other = Span(trace_id=TRACE_B, span_id=SPAN_3, name="consume", kind=Span.SpanKind.SPAN_KIND_CONSUMER,
                 start_time_unix_nano=1544712660000000000, end_time_unix_nano=MAX_U64)
    kinds = [Span(trace_id=TRACE_B, span_id=bytes([k + 1]) * 8, parent_span_id=SPAN_3, name=f"kind {k}",
                  kind=k) for k in range(6)]
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(
            resource=Resource(attributes=[kv("service.name", AnyValue(string_value="checkout"))],
                              dropped_attributes_count=2),
            schema_url="https://opentelemetry.io/schemas/1.21.0",
            scope_spans=[
                ScopeSpans(scope=InstrumentationScope(name="my.library", version="1.0.0",
                                                      attributes=[kv("scope.attr", AnyValue(int_value=5))]),
                           spans=[root, child], schema_url="https://opentelemetry.io/schemas/1.20.0"),
                ScopeSpans(spans=kinds),
            ],
        ),
        ResourceSpans(scope_spans=[ScopeSpans(spans=[other])]),
        ResourceSpans(),
    ])


def parse(payload: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(payload)


def reference_json(payload: bytes) -> str:
    """proto_to_json done with json_format, the reference: MessageToDict, then the IDs base64 -> hex."""
    obj = json_format.MessageToDict(parse(payload), use_integers_for_enums=True)
    for rs in obj.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for o in [span, *span.get("links", ())]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in o:
                            o[key] = base64.b64decode(o[key]).hex()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def same_json(text: str, reference: str) -> bool:
    """The same OTLP/JSON, reading doubles as floats: the core writes them as the collector (Go) does, 1.0 as
    `1`, where json_format writes Python's `1.0` (issue 20: the only way the two differ)."""
    def floats(obj: object) -> object:
        if isinstance(obj, list):
            return [floats(v) for v in obj]
        if isinstance(obj, dict):
            return {k: float(v) if k == "doubleValue" and isinstance(v, int) else floats(v) for k, v in obj.items()}
        return obj
    return floats(json.loads(text)) == floats(json.loads(reference))


@pytest.fixture(params=["core"])
def json_path(request: pytest.FixtureRequest) -> str:
    """json_to_proto has one path since issue 20: the core's transcoder (it had a Python fast path and
    json_format as its fallback, each run here)."""
    return str(request.param)


# -- conversion ------------------------------------------------------------------------------------


def test_proto_json_proto_round_trip_is_byte_identical(json_path: str) -> None:
    payload = full_request().SerializeToString()
    text = proto_to_json(payload)
    assert "\n" not in text
    assert json_to_proto(text) == payload


def test_json_proto_json_round_trip(json_path: str) -> None:
    text = proto_to_json(full_request().SerializeToString())
    again = proto_to_json(json_to_proto(text))
    assert again == text
    assert json_to_proto(json.loads(text)) == json_to_proto(text.encode())


def test_json_follows_the_otlp_json_rules() -> None:
    obj = json.loads(proto_to_json(full_request().SerializeToString()))
    rs = obj["resourceSpans"][0]
    root, child = rs["scopeSpans"][0]["spans"]
    # IDs are lowercase hex, everywhere, and an empty parent is left out.
    assert root["traceId"] == TRACE_A.hex()
    assert root["spanId"] == SPAN_1.hex()
    assert "parentSpanId" not in root
    assert child["parentSpanId"] == SPAN_1.hex()
    assert [(link["traceId"], link["spanId"]) for link in root["links"]] == [
        (TRACE_B.hex(), SPAN_3.hex()), (TRACE_A.hex(), SPAN_2.hex())]
    # Enums are integers.
    assert root["kind"] == 2
    assert root["status"] == {"message": "boom", "code": 2}
    assert [s.get("kind", 0) for s in rs["scopeSpans"][1]["spans"]] == [0, 1, 2, 3, 4, 5]
    # 64-bit integers are decimal strings; 32-bit ones numbers.
    assert root["endTimeUnixNano"] == str(NEAR_2_63)
    assert root["events"][0]["timeUnixNano"] == str(PAST_2_63)
    assert root["events"][1]["timeUnixNano"] == str(MAX_U64)
    assert root["flags"] == 0x301
    assert root["droppedLinksCount"] == 2
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs["i.max"] == {"intValue": str(NEAR_2_63)}
    assert attrs["i.min"] == {"intValue": str(-(2**63))}
    # bytes values stay base64: only the IDs are hex.
    assert attrs["bytes"] == {"bytesValue": base64.b64encode(b"\x00\xff binary \x01").decode()}
    assert attrs["d.inf"] == {"doubleValue": "-Infinity"}
    # Keys are lowerCamelCase.
    assert "scopeSpans" in rs and "schemaUrl" in rs and "startTimeUnixNano" in root
    assert "droppedAttributesCount" in root["links"][0]


@pytest.mark.parametrize("kind", list(range(6)))
def test_every_span_kind_round_trips(kind: int) -> None:
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=TRACE_A, span_id=SPAN_1, kind=kind,
             status=Status(code=min(kind, 2)))])])])
    payload = req.SerializeToString()
    assert json_to_proto(proto_to_json(payload)) == payload


# The example of the OTLP specification (opentelemetry-proto examples/trace.json), as written there.
SPEC_EXAMPLE = """{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {"key": "service.name", "value": {"stringValue": "my.service"}}
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": 1544712660000000000,
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "attributes": [
                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
              ]
            }
          ]
        }
      ]
    }
  ]
}
"""

# What we write for it, by hand from the spec: lowercase hex IDs, 64-bit integers as strings, fields in
# field-number order.
SPEC_EXAMPLE_LINE = (
    '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":'
    '"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":'
    '"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"spans":[{"traceId":'
    '"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",'
    '"name":"I\'m a server span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":'
    '"1544712661000000000","attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}]}]}]}]}'
)


def spec_example_proto() -> ExportTraceServiceRequest:
    """examples/trace.protobuf-text of opentelemetry-proto, built by hand."""
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", AnyValue(string_value="my.service"))]),
        scope_spans=[ScopeSpans(
            scope=InstrumentationScope(name="my.library", version="1.0.0", attributes=[
                kv("my.scope.attribute", AnyValue(string_value="some scope attribute"))]),
            spans=[Span(
                trace_id=b"\x5b\x8e\xff\xf7\x98\x03\x81\x03\xd2\x69\xb6\x33\x81\x3f\xc6\x0c",
                span_id=b"\xee\xe1\x9b\x7e\xc3\xc1\xb1\x74",
                parent_span_id=b"\xee\xe1\x9b\x7e\xc3\xc1\xb1\x73",
                name="I'm a server span", start_time_unix_nano=1544712660000000000,
                end_time_unix_nano=1544712661000000000, kind=Span.SpanKind.SPAN_KIND_SERVER,
                attributes=[kv("my.span.attr", AnyValue(string_value="some value"))])],
        )],
    )])


def test_parity_with_the_spec_example(json_path: str) -> None:
    expected = spec_example_proto().SerializeToString()
    assert json_to_proto(SPEC_EXAMPLE) == expected
    assert proto_to_json(expected) == SPEC_EXAMPLE_LINE
    assert json_to_proto(SPEC_EXAMPLE_LINE) == expected


def test_read_accepts_field_names_enum_names_numbers_and_unknown_fields(json_path: str) -> None:
    lenient = {
        "resource_spans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "my.service"}}]},
            "future_field": {"anything": [1, 2]},
            "scope_spans": [{
                "scope": {"name": "my.library", "version": "1.0.0", "attributes": [
                    {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
                "spans": [{
                    "trace_id": "5b8efff798038103d269b633813fc60c",
                    "span_id": "eee19b7ec3c1b174",
                    "parentSpanId": "EEE19B7EC3C1B173",
                    "name": "I'm a server span",
                    "start_time_unix_nano": "1544712660000000000",
                    "endTimeUnixNano": 1544712661000000000,
                    "kind": "SPAN_KIND_SERVER",
                    "newerField": 1,
                    "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
                }],
            }],
        }],
        "unknownTopLevel": True,
    }
    assert json_to_proto(lenient) == spec_example_proto().SerializeToString()


def test_enum_names_and_numbers_are_equivalent(json_path: str) -> None:
    def one(kind: object, code: object) -> bytes:
        return json_to_proto({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(), "kind": kind, "status": {"code": code}}]}]}]})

    assert one("SPAN_KIND_PRODUCER", "STATUS_CODE_ERROR") == one(4, 2)
    span = parse(one(4, 2)).resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == Span.SpanKind.SPAN_KIND_PRODUCER
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR


def test_ids_in_base64_are_accepted_too(json_path: str) -> None:
    hexed = json.loads(proto_to_json(full_request().SerializeToString()))
    b64 = json.loads(json.dumps(hexed))
    for rs in b64["resourceSpans"]:
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for obj in [span, *span.get("links", ())]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
    assert json_to_proto(b64) == json_to_proto(hexed)


def test_empty_parent_id_and_null_ids(json_path: str) -> None:
    payload = json_to_proto({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(), "parentSpanId": ""},
        {"traceId": TRACE_A.hex(), "spanId": SPAN_2.hex(), "parentSpanId": None}]}]}]})
    spans = parse(payload).resource_spans[0].scope_spans[0].spans
    assert [s.parent_span_id for s in spans] == [b"", b""]


def test_legacy_instrumentation_library_spans(json_path: str) -> None:
    legacy = {"resourceSpans": [{"instrumentationLibrarySpans": [{
        "instrumentationLibrary": {"name": "old.lib", "version": "0.1"},
        "spans": [{"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(), "name": "old"}]}]}]}
    ss = parse(json_to_proto(legacy)).resource_spans[0].scope_spans[0]
    assert ss.scope.name == "old.lib"
    assert ss.spans[0].trace_id == TRACE_A


def test_input_mapping_is_not_modified() -> None:
    obj = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(), "links": [{"traceId": TRACE_B.hex()}]}]}]}]}
    before = json.dumps(obj)
    json_to_proto(obj)
    assert json.dumps(obj) == before


@pytest.mark.parametrize(("span", "field", "message"), [
    ({"traceId": "xyz", "spanId": SPAN_1.hex()}, "spans[0].traceId",
     'invalid trace id "xyz": expected 32 hex'),
    ({"traceId": TRACE_A.hex()[:-2], "spanId": SPAN_1.hex()}, "spans[0].traceId", "expected 32 hex digits"),
    ({"traceId": TRACE_A.hex(), "spanId": TRACE_A.hex()}, "spans[0].spanId", "invalid span id"),
    ({"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(), "parentSpanId": "12"}, "spans[0].parentSpanId",
     'invalid parent span id "12": expected 16 hex digits'),
    ({"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex(),
      "links": [{"traceId": TRACE_B.hex(), "spanId": "g" * 16}]},
     "spans[0].links[0].spanId", "invalid span id"),
])
def test_bad_ids_name_their_field(span: dict[str, object], field: str, message: str, json_path: str) -> None:
    with pytest.raises(DecodeError) as info:
        json_to_proto({"resourceSpans": [{"scopeSpans": [{}, {"spans": [span]}]}]})
    assert info.value.field == f"resourceSpans[0].scopeSpans[1].{field}"
    assert message in str(info.value)
    assert str(info.value).startswith(f"resourceSpans[0].scopeSpans[1].{field}: ")


@pytest.mark.parametrize(("value", "message"), [
    ("{", "invalid JSON: EOF while parsing an object (column 2)"),
    ("[1, 2]", "not an ExportTraceServiceRequest: expected a JSON object, got an array"),
    ('"x"', "got a string"),
    ('{"resourceMetrics": []}', "it holds metrics, not traces"),
    ('{"resourceLogs": [], "resourceProfiles": []}', "it holds logs and profiles, not traces"),
    ('{"name": "x", "spans": []}', "no resourceSpans (keys: name, spans)"),
    ('{"resourceSpans": 5}', "resourceSpans: expected an array, got a number"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
     'startTimeUnixNano: expected an unsigned 64-bit integer, got "soon"'),
    (b"\xff\xfe{}", "invalid JSON"),
])
def test_not_a_request(value: str | bytes, message: str, json_path: str) -> None:
    with pytest.raises(DecodeError, match=None) as info:
        json_to_proto(value)
    assert message in str(info.value)


def test_empty_object_is_an_empty_request(json_path: str) -> None:
    assert json_to_proto("{}") == b""
    assert proto_to_json(b"") == "{}"


def test_fast_paths_match_json_format(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [full_request().SerializeToString(), spec_example_proto().SerializeToString(), b""]
    for payload in payloads:
        assert same_json(proto_to_json(payload), reference_json(payload))

    # The fast path alone reads what we write (json_format is not even called).
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("json_format used")

    monkeypatch.setattr(json_format, "ParseDict", refuse)
    for payload in payloads:
        assert json_to_proto(proto_to_json(payload)) == payload
    assert json_to_proto(SPEC_EXAMPLE) == payloads[1]


def test_fast_path_refuses_what_json_format_should_judge() -> None:
    span = {"traceId": TRACE_A.hex(), "spanId": SPAN_1.hex()}
    # Two members of a oneof: json_format refuses it; the transcoder must not pick one.
    with pytest.raises(DecodeError, match="AnyValue holds one value, but both stringValue and intValue"):
        json_to_proto({"resourceSpans": [{"scopeSpans": [{"spans": [
            {**span, "attributes": [{"key": "k", "value": {"stringValue": "a", "intValue": "1"}}]}]}]}]})
    # Odd but valid spellings are taken, by the reference path.
    attributes = [{"key": "d", "value": {"doubleValue": "1.5"}}]
    odd = json_to_proto({"resourceSpans": [{"scopeSpans": [{"spans": [
        {**span, "startTimeUnixNano": 1e9, "attributes": attributes}]}]}]})
    got = parse(odd).resource_spans[0].scope_spans[0].spans[0]
    assert got.start_time_unix_nano == 10**9
    assert got.attributes[0].value.double_value == 1.5


def test_proto_to_json_rejects_garbage() -> None:
    with pytest.raises(DecodeError, match="not a protobuf ExportTraceServiceRequest"):
        proto_to_json(b"\x0a\x05abc")


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
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in kvs]))),
    )


@settings(max_examples=150, deadline=None)
@given(values=st.lists(any_values(), max_size=4),
       times=st.tuples(st.integers(0, MAX_U64), st.integers(0, MAX_U64)),
       ids=st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8),
                     st.sampled_from([b"", b"\x01" * 8])))
def test_round_trip_property(values: list[AnyValue], times: tuple[int, int],
                             ids: tuple[bytes, bytes, bytes]) -> None:
    span = Span(trace_id=ids[0], span_id=ids[1], parent_span_id=ids[2], start_time_unix_nano=times[0],
                end_time_unix_nano=times[1], attributes=[kv(f"k{i}", v) for i, v in enumerate(values)],
                links=[Span.Link(trace_id=ids[0], span_id=ids[1])])
    scope = ScopeSpans(spans=[span])
    data = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[scope])]).SerializeToString()
    text = proto_to_json(data)
    assert same_json(text, reference_json(data))
    assert json_to_proto(text) == data


# -- files -----------------------------------------------------------------------------------------


def payloads() -> list[bytes]:
    first = spec_example_proto().SerializeToString()
    second = full_request().SerializeToString()
    return [first, second, b"", first]


def write_proto(path: Path, items: list[bytes]) -> None:
    path.write_bytes(b"".join(len(p).to_bytes(4, "big") + p for p in items))


@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("name", ["traces.out", "traces.out.gz"])
def test_writer_and_reader_round_trip(tmp_path: Path, fmt: str, name: str) -> None:
    path = tmp_path / name
    with PayloadWriter(path, fmt) as writer:
        for p in payloads():
            writer.write(p)
    assert writer.payloads == 4
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert detect_format(path) == fmt
    assert list(read_payloads(path)) == payloads()
    assert list(read_payloads(path, fmt)) == payloads()


def test_proto_file_layout_and_passthrough(tmp_path: Path) -> None:
    path = tmp_path / "traces.pb"
    with PayloadWriter(path, "proto") as writer:
        writer.write_all(payloads())
    expected = b"".join(len(p).to_bytes(4, "big") + p for p in payloads())
    assert path.read_bytes() == expected
    # Not valid protobuf: still handed out as stored, the engine is the one to judge.
    write_proto(path, [b"\xff\xff\xff", b"ok"])
    assert list(read_payloads(path)) == [b"\xff\xff\xff", b"ok"]


def test_json_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "traces.json"
    with PayloadWriter(path, "json") as writer:
        writer.write(spec_example_proto().SerializeToString())
        writer.write(b"")
    assert path.read_text() == SPEC_EXAMPLE_LINE + "\n{}\n"


def test_gzip_is_recognised_by_content(tmp_path: Path) -> None:
    path = tmp_path / "traces-no-suffix"
    path.write_bytes(gzip.compress((SPEC_EXAMPLE_LINE + "\n").encode() * 3))
    reader = PayloadReader(path)
    with reader:
        assert reader.gzipped and reader.format == "json"
        assert list(reader) == [spec_example_proto().SerializeToString()] * 3
        assert reader.position == reader.size == path.stat().st_size


def test_json_lines_with_blank_lines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    line = SPEC_EXAMPLE_LINE.encode()
    path.write_bytes(b"\xef\xbb\xbf\r\n" + line + b"\r\n\n   \n" + line)
    assert detect_format(path) == "json"
    assert list(read_payloads(path)) == [spec_example_proto().SerializeToString()] * 2


def test_pretty_printed_documents(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(SPEC_EXAMPLE + "\n" + SPEC_EXAMPLE)
    assert list(read_payloads(path)) == [spec_example_proto().SerializeToString()] * 2


def test_pretty_printed_document_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(SPEC_EXAMPLE + SPEC_EXAMPLE.replace("5B8EFFF7", "ZZ8EFFF7"))
    second = SPEC_EXAMPLE.count("\n") + 1
    with pytest.raises(DecodeError, match=rf"trace\.json: line {second}: resourceSpans\[0\].*traceId: inv"):
        list(read_payloads(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(read_payloads(path)) == []
    assert list(read_payloads(path, "proto")) == []
    assert detect_format(path) == "json"


def test_stdout_writer(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    with PayloadWriter("-", "json") as writer:
        writer.write(spec_example_proto().SerializeToString())
    assert capfdbinary.readouterr().out == SPEC_EXAMPLE_LINE.encode() + b"\n"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        PayloadWriter("-", "xml")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        list(read_payloads(Path("whatever"), "xml"))


# -- errors ----------------------------------------------------------------------------------------


def test_truncated_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "cut.pb"
    write_proto(path, [b"\x0a\x00", b""])
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    got = []
    with pytest.raises(DecodeError) as info:
        for p in read_payloads(path):
            got.append(p)
    assert got == [b"\x0a\x00", b""]
    assert str(info.value) == f"{path}: byte 10: truncated length prefix: 2 of 4 bytes"
    assert info.value.offset == 10


def test_truncated_message(tmp_path: Path) -> None:
    path = tmp_path / "cut.pb"
    path.write_bytes(b"\x00\x00\x00\x02ok" + b"\x00\x00\x01\x00" + b"x" * 10)
    with pytest.raises(DecodeError) as info:
        list(read_payloads(path))
    assert str(info.value) == f"{path}: byte 6: message 2 declares 256 bytes but the file ends after 10"


def test_json_read_as_proto_hints_at_the_format(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(SPEC_EXAMPLE_LINE + "\n")
    with pytest.raises(DecodeError, match="this looks like a JSON file: use format json"):
        list(read_payloads(path, "proto"))


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(f"{SPEC_EXAMPLE_LINE}\n\n{SPEC_EXAMPLE_LINE[:40]}\n{SPEC_EXAMPLE_LINE}\n")
    with pytest.raises(DecodeError) as info:
        list(read_payloads(path))
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: invalid JSON: ")
    assert "(column 41)" in message
    assert info.value.offset == len(SPEC_EXAMPLE_LINE) + 2


def test_line_that_is_not_a_request(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(f'{SPEC_EXAMPLE_LINE}\n{{"resourceMetrics":[]}}\n[1]\n')
    with pytest.raises(DecodeError, match=r"t\.json: line 2: not an ExportTraceServiceRequest: it holds m"):
        list(read_payloads(path))


def test_reader_goes_on_after_a_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(f'{SPEC_EXAMPLE_LINE}\nnot json\n{{"resourceLogs":[]}}\n[1]\n{SPEC_EXAMPLE_LINE}\n')
    good, errors = [], []
    with PayloadReader(path) as reader:
        while True:
            try:
                good.append(next(reader))
            except StopIteration:
                break
            except DecodeError as exc:
                errors.append((reader.index, reader.location, str(exc)))
    assert len(good) == 2
    assert [(i, loc) for i, loc, _ in errors] == [(2, "line 2"), (3, "line 3"), (4, "line 4")]
    assert "got an array" in errors[2][2]


def test_skip_other_signals(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(f'{{"resourceMetrics":[{{}}]}}\n{SPEC_EXAMPLE_LINE}\n{{"resourceLogs":[]}}\n')
    with PayloadReader(path, skip_other_signals=True) as reader:
        assert list(reader) == [spec_example_proto().SerializeToString()]
        assert reader.skipped == 2


def test_proto_errors_end_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pb"
    path.write_bytes(b"\x00\x00\x00\x02ok\x00")
    with PayloadReader(path) as reader:
        assert next(reader) == b"ok"
        with pytest.raises(DecodeError, match="truncated length prefix: 1 of 4 bytes"):
            next(reader)
        assert list(reader) == []


def test_zstd_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "traces.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(DecodeError, match=r"traces\.zst: the file is zstd-compressed .* not supported yet"):
        list(read_payloads(path))
    with pytest.raises(DecodeError, match="not supported yet"):
        detect_format(path)


def test_zstd_messages_are_refused(tmp_path: Path) -> None:
    # Without the native-compression feature gate the exporter zstd-compresses each message, length-prefixed.
    path = tmp_path / "traces.pb"
    write_proto(path, [b"\x28\xb5\x2f\xfd\x20\x02\x11\x00\x00ok"])
    with pytest.raises(DecodeError, match=r"traces\.pb: byte 0: the message is zstd-compressed .* not sup"):
        list(read_payloads(path))


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    data = gzip.compress((SPEC_EXAMPLE_LINE + "\n").encode() * 50)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"t\.json\.gz: corrupt or truncated gzip data"):
        list(read_payloads(path))
