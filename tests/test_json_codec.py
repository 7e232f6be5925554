"""One OTLP/JSON reader (issue 20): `fileformat.json_to_proto` and the file readers use the core's transcoder
(`rust/core/src/otlp/json.rs`), and a JSON file that is not OTLP says so instead of being read as protobuf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
