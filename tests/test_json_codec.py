"""One OTLP/JSON reader (issue 20): `fileformat.json_to_proto` and the file readers use the core's transcoder
(`rust/core/src/otlp/json.rs`), and a JSON file that is not OTLP says so instead of being read as protobuf."""

from __future__ import annotations

import base64
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
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otlp_builders import make_request, make_span
from tailsample import _native
from tailsample.collector import fileformat
from tailsample.collector.fileformat import PayloadReader, detect_format, json_to_proto, proto_to_json, read_payloads
from tailsample.errors import DecodeError

PAYLOAD = make_request({"service.name": "shop"}, [make_span(b"\x01" * 16, b"\x02" * 8, name="GET /")])
ZIPKIN = [{"traceId": "01" * 16, "id": "02" * 8, "name": "get /", "timestamp": 1, "duration": 5,
           "localEndpoint": {"serviceName": "shop"}}]


def test_the_python_converter_is_gone():
    """Guarantees: no second OTLP/JSON -> protobuf converter is left in Python."""
    for name in ("_request_from_json", "_json_to_fields", "_from_json_table", "_ids_to_base64_request"):
        assert not hasattr(fileformat, name), name


@pytest.mark.parametrize("form", ["text", "bytes", "parsed"])
def test_json_to_proto_is_the_cores_transcoder(form):
    """Scenario: a request as OTLP/JSON text, bytes and parsed. Guarantees: the bytes the core gives."""
    text = proto_to_json(PAYLOAD)
    given = {"text": text, "bytes": text.encode(), "parsed": json.loads(text)}[form]
    assert json_to_proto(given) == _native.otlp_json_to_proto(text.encode()) == PAYLOAD


@pytest.mark.parametrize(("given", "message", "field"), [
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0].traceId: invalid trace id", "traceId"),
    ('{"resourceSpans": [', "invalid JSON: ", None),
    ("[1, 2]", "not an ExportTraceServiceRequest: expected a JSON object, got an array", None),
    ({"resourceSpans": 5}, "resourceSpans: expected an array", "resourceSpans"),
], ids=["bad-id", "truncated", "array", "parsed-wrong-type"])
def test_json_errors_read_as_json_errors(given, message, field):
    """Guarantees: the JSON path first, then the problem; no protobuf byte offset in the words."""
    with pytest.raises(DecodeError) as info:
        json_to_proto(given)
    assert str(info.value).startswith(message), str(info.value)
    assert "ExportTraceServiceRequest at byte" not in str(info.value)
    if field is not None:
        assert (info.value.field or "").endswith(field)


@pytest.mark.parametrize("pretty", [False, True], ids=["one-line", "pretty"])
def test_a_zipkin_json_file_says_it_is_not_otlp(tmp_path: Path, pretty: bool):
    """Scenario: a Zipkin v2 JSON file (a JSON array), one line or pretty-printed, read as traces.
    Guarantees: it is detected as JSON (not read as protobuf with a 1.5 GB length prefix), and refused
    naming the file, the line and that it is not an ExportTraceServiceRequest."""
    path = tmp_path / "zipkin.json"
    path.write_text(json.dumps(ZIPKIN, indent=2 if pretty else None) + "\n")
    assert detect_format(path) == "json"
    with pytest.raises(DecodeError) as info:
        list(read_payloads(path))
    assert str(info.value) == (f"{path}: line 1: not an ExportTraceServiceRequest: expected a JSON object, "
                               "got an array")


def test_invalid_json_lines_name_their_column_and_the_reader_goes_on(tmp_path: Path):
    path = tmp_path / "t.json"
    line = proto_to_json(PAYLOAD)
    path.write_text(f'{line}\n{line[:30]}\n{{"resourceSpans": [}}\n{line}\n')
    got: list[bytes | str] = []
    with PayloadReader(path) as reader:
        while True:
            try:
                got.append(next(reader))
            except StopIteration:
                break
            except DecodeError as exc:
                got.append(str(exc))
    assert got[0] == PAYLOAD and got[3] == PAYLOAD
    assert got[1] == f"{path}: line 2: invalid JSON: EOF while parsing a value (column 31)"
    assert isinstance(got[2], str) and got[2].startswith(f"{path}: line 3: invalid JSON: ")
    assert got[2].endswith("(column 20)")


def test_other_signals_are_skipped_when_asked(tmp_path: Path):
    path = tmp_path / "all.json"
    path.write_text(f'{{"resourceMetrics": []}}\n{proto_to_json(PAYLOAD)}\n{{"resourceLogs": []}}\n')
    with PayloadReader(path, skip_other_signals=True) as reader:
        assert list(reader) == [PAYLOAD]
        assert reader.skipped == 2
    with pytest.raises(DecodeError, match=r"line 1: not an ExportTraceServiceRequest: it holds metrics"):
        list(read_payloads(path))


# -- one OTLP/JSON writer (issue 20): protobuf -> JSON in the core, beside its reader ---------------------

_U32 = st.integers(0, 2**32 - 1)
_U64 = st.integers(0, 2**64 - 1)
_I32 = st.integers(-(2**31), 2**31 - 1)
_TEXT = st.text(max_size=12)


def _any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        _TEXT.map(lambda s: AnyValue(string_value=s)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
        st.binary(max_size=12).map(lambda b: AnyValue(bytes_value=b)),
        _I32.map(lambda i: AnyValue(string_value_strindex=i)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return scalars
    inner = _any_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.builds(KeyValue, key=_TEXT, value=inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs))),
    )


_ATTRS = st.lists(st.one_of(st.builds(KeyValue, key=_TEXT, value=_any_values()),
                            st.builds(KeyValue, key=_TEXT), st.builds(KeyValue, key_strindex=_I32)), max_size=3)
_TRACE_ID = st.one_of(st.just(b""), st.binary(min_size=16, max_size=16))
_SPAN_ID = st.one_of(st.just(b""), st.binary(min_size=8, max_size=8))
_EVENTS = st.lists(st.builds(Span.Event, time_unix_nano=_U64, name=_TEXT, attributes=_ATTRS,
                             dropped_attributes_count=_U32), max_size=2)
_LINKS = st.lists(st.builds(Span.Link, trace_id=_TRACE_ID, span_id=_SPAN_ID, trace_state=_TEXT, attributes=_ATTRS,
                            dropped_attributes_count=_U32, flags=_U32), max_size=2)
_STATUS = st.one_of(st.none(), st.builds(Status, message=_TEXT, code=st.integers(0, 2)))
_SPANS = st.lists(st.builds(
    Span, trace_id=_TRACE_ID, span_id=_SPAN_ID, trace_state=_TEXT, parent_span_id=_SPAN_ID, name=_TEXT,
    kind=st.integers(0, 5), start_time_unix_nano=_U64, end_time_unix_nano=_U64, attributes=_ATTRS,
    dropped_attributes_count=_U32, events=_EVENTS, dropped_events_count=_U32, links=_LINKS,
    dropped_links_count=_U32, status=_STATUS, flags=_U32), max_size=3)
_SCOPE = st.one_of(st.none(), st.builds(InstrumentationScope, name=_TEXT, version=_TEXT, attributes=_ATTRS,
                                        dropped_attributes_count=_U32))
_ENTITY = st.builds(EntityRef, schema_url=_TEXT, type=_TEXT, id_keys=st.lists(_TEXT, max_size=2),
                    description_keys=st.lists(_TEXT, max_size=2))
_RESOURCE = st.one_of(st.none(), st.builds(Resource, attributes=_ATTRS, dropped_attributes_count=_U32,
                                           entity_refs=st.lists(_ENTITY, max_size=2)))
_REQUESTS = st.builds(ExportTraceServiceRequest, resource_spans=st.lists(st.builds(
    ResourceSpans, resource=_RESOURCE, schema_url=_TEXT, scope_spans=st.lists(st.builds(
        ScopeSpans, scope=_SCOPE, spans=_SPANS, schema_url=_TEXT), max_size=2)), max_size=2))


def _reference(request: ExportTraceServiceRequest) -> object:
    """The same request through protobuf's own json_format, with the IDs as OTLP/JSON has them (hex)."""
    obj = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rs in obj.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for o in [span, *span.get("links", ())]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in o:
                            o[key] = base64.b64decode(o[key]).hex()
    return obj


@settings(max_examples=300, deadline=None)
@given(request=_REQUESTS)
def test_proto_json_proto_gives_the_same_message(request: ExportTraceServiceRequest):
    """Scenario: any request protobuf's Python library builds (every field of every message of the trace
    schema). Guarantees: the core writes one line of JSON that the core reads back to the same bytes, and that
    means what protobuf's json_format means (the same values; only float spelling may differ, as Go's)."""
    data = request.SerializeToString()
    text = proto_to_json(data)
    assert "\n" not in text
    assert json_to_proto(text) == data
    assert _doubles_as_floats(json.loads(text)) == _doubles_as_floats(_reference(request))


def _doubles_as_floats(obj: object) -> object:
    """`doubleValue`s as floats: Go (and so the core) writes 1.0 as `1` and 6.764753167706861e16 as
    `67647531677068610`, which Python's json reads as integers."""
    if isinstance(obj, list):
        return [_doubles_as_floats(v) for v in obj]
    if isinstance(obj, dict):
        return {k: float(v) if k == "doubleValue" and isinstance(v, int) else _doubles_as_floats(v)
                for k, v in obj.items()}
    return obj


def test_the_python_writer_is_gone():
    """Guarantees: no second protobuf -> OTLP/JSON converter is left in Python."""
    for name in ("_message_to_json", "_to_json_table", "_float_json", "_SPAN_IDS"):
        assert not hasattr(fileformat, name), name
    assert fileformat.proto_to_json(PAYLOAD) == _native.otlp_proto_to_json(PAYLOAD)


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (-0.0, "-0"), (0.5, "0.5"), (1e-7, "1e-07"), (1e21, "1e+21"), (123456789.0, "123456789"),
    (float("inf"), '"Infinity"'), (float("nan"), '"NaN"'),
])
def test_doubles_are_spelled_as_the_collector_spells_them(value: float, text: str):
    """Guarantees: doubles as Go's encoding (the collector's file exporter) writes them, not Python's repr."""
    payload = make_request({}, [make_span(b"\x01" * 16, b"\x02" * 8, attributes={"d": value})])
    assert f'"doubleValue":{text}}}' in proto_to_json(payload)


def test_invalid_utf8_becomes_replacement_characters():
    """Scenario: a span name that is not UTF-8 (the engine takes it, as pdata does). Guarantees: U+FFFD for
    the invalid sequence, the rest kept."""
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ab").SerializeToString()
    span = span.replace(b"\x2a\x02ab", b"\x2a\x03a\xffb")
    scope = b"\x12" + bytes([len(span)]) + span
    rs = b"\x12" + bytes([len(scope)]) + scope
    payload = b"\x0a" + bytes([len(rs)]) + rs
    assert json.loads(proto_to_json(payload))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "a\ufffdb"


@pytest.mark.parametrize(("payload", "words"), [
    (b"\x0a\x05abc", "length 5 runs past the end of its message"),
    (b"\x0f", "invalid wire type 7"),
], ids=["truncated", "bad-wire-type"])
def test_bytes_that_are_not_protobuf_name_the_problem(payload: bytes, words: str):
    with pytest.raises(DecodeError) as info:
        proto_to_json(payload)
    assert str(info.value).startswith("not a protobuf ExportTraceServiceRequest: "), str(info.value)
    assert words in str(info.value)


def _every_kind_of_value() -> bytes:
    """A request with every field of a span set and doubles, strings and bytes that encoders spell differently."""
    def kv(key: str, **value: object) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(**value))  # type: ignore[arg-type]

    attrs = [kv("s", string_value='a"b\\c\n\t\x01\x08\x0c é <>&\u2028'), kv("i", int_value=-(2**63)),
             kv("d1", double_value=1.0), kv("d2", double_value=0.1), kv("d3", double_value=1e-7),
             kv("d4", double_value=1e21), kv("d5", double_value=-2.5e-300), kv("d6", double_value=6.764753167706861e16),
             kv("b", bool_value=False), kv("by", bytes_value=b"\x00\xff\x10"), kv("e", string_value=""),
             kv("arr", array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")])),
             kv("kvl", kvlist_value=KeyValueList(values=[kv("n", double_value=2.0)]))]
    span = Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), parent_span_id=bytes(range(9, 17)),
                trace_state="k=v", name="GET /", kind=2, start_time_unix_nano=1700000000000000000,
                end_time_unix_nano=2**64 - 1, attributes=attrs, dropped_attributes_count=3,
                events=[Span.Event(time_unix_nano=5, name="ev", attributes=[kv("x", int_value=7)],
                                   dropped_attributes_count=1)],
                dropped_events_count=2, dropped_links_count=1, status=Status(message="boom", code=2), flags=0x301,
                links=[Span.Link(trace_id=bytes(range(16)), span_id=bytes(range(8)), trace_state="a=b", flags=257,
                                 dropped_attributes_count=4)])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", string_value="shop")], dropped_attributes_count=1),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib", version="1.0",
                                                           attributes=[kv("q", int_value=1)]),
                                spans=[span], schema_url="https://s/1")],
        schema_url="https://r/1")]).SerializeToString()


def test_the_json_is_the_collectors_file_exporter_line(tmp_path: Path):
    """Scenario: one request through the real collector (otelcol v0.161: OTLP/HTTP in, file exporter out) and
    through proto_to_json. Guarantees: the same line, byte for byte (key order, double and string spelling)."""
    import socket
    import subprocess
    import urllib.request

    import yaml

    from service_harness import free_port, wait_for
    from tools import gotools

    binary = gotools.require(gotools.otelcol)
    port = free_port()
    out = tmp_path / "out.json"
    config = tmp_path / "otelcol.yaml"
    config.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                    "telemetry": {"metrics": {"level": "none"}}},
    }))
    payload = _every_kind_of_value()
    with (tmp_path / "otelcol.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            def listening() -> bool:
                assert proc.poll() is None, (tmp_path / "otelcol.log").read_text()
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0

            wait_for(listening, timeout=30, what="otelcol to listen")
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=payload,
                                             headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            wait_for(lambda: out.exists() and out.read_text().endswith("\n"), timeout=20, what="the file line")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert out.read_text() == proto_to_json(payload) + "\n"
    assert json_to_proto(out.read_text()) == payload
