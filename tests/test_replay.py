"""Replaying recorded files through the real engine."""

from __future__ import annotations

import gzip
import importlib.util
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _native_built() -> bool:
    try:
        return importlib.util.find_spec("tailsample._native") is not None
    except ImportError:  # the package itself imports the native module
        return False


if not _native_built():
    pytest.skip("the native module tailsample._native is not built yet", allow_module_level=True)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import (  # noqa: E402
    AnyValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status  # noqa: E402
from rich.console import Console  # noqa: E402

import tailsample  # noqa: E402
from tailsample.collector.fileformat import PayloadWriter, detect_format, read_payloads  # noqa: E402
from tailsample.errors import DecodeError  # noqa: E402
from tailsample.traffic.replay import ReplayReport, replay  # noqa: E402

FORCE_KEY = "http.request.header.x-force-trace"
T0 = 1_700_000_000 * 10**9
MS = 10**6
SERVICES = ("frontend", "checkout", "payments", "db")
# A span as written: (service.name of its resource, the Span message).
Item = tuple[str, Span]


@dataclass
class Recording:
    """Recorded traffic, and what the default policies must keep of it."""

    messages: list[bytes]
    spans: dict[tuple[bytes, bytes], tuple[str, bytes]]  # (trace id, span id) -> (service, span bytes)
    kind: dict[bytes, str]  # trace id -> error, slow, forced, error+slow, near-miss, boring
    must_keep: set[bytes] = field(default_factory=set)

    def spans_of(self, traces: set[bytes]) -> dict[tuple[bytes, bytes], tuple[str, bytes]]:
        return {k: v for k, v in self.spans.items() if k[0] in traces}


def attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_trace(rng: random.Random, trace_id: bytes, start: int, kind: str) -> list[Item]:
    """A root span and a few children, across services; `kind` decides what makes it interesting."""
    if kind in ("slow", "error+slow"):
        duration = rng.randint(1200, 2500) * MS
    elif kind == "near-miss":
        duration = 999 * MS  # just under the 1000 ms threshold
    else:
        duration = rng.randint(20, 400) * MS
    root = Span(trace_id=trace_id, span_id=rng.randbytes(8), name="GET /checkout",
                kind=Span.SpanKind.SPAN_KIND_SERVER, start_time_unix_nano=start,
                end_time_unix_nano=start + duration, attributes=[attr("http.request.method", "GET")])
    items: list[Item] = [("frontend", root)]
    for n in range(rng.randint(2, 5)):
        begin = start + rng.randint(1, duration // 3)
        child = Span(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=root.span_id,
                     name=f"call {n}", kind=Span.SpanKind.SPAN_KIND_CLIENT, start_time_unix_nano=begin,
                     end_time_unix_nano=begin + rng.randint(1, duration // 2),
                     status=Status(code=Status.StatusCode.STATUS_CODE_OK))
        items.append((rng.choice(SERVICES), child))
    victim = items[rng.randrange(1, len(items))][1]
    if "error" in kind:
        victim.status.code = Status.StatusCode.STATUS_CODE_ERROR
        victim.status.message = "payment declined"
    if kind == "forced":
        victim.attributes.append(attr(FORCE_KEY, "true"))
    if kind == "near-miss":
        victim.attributes.append(attr(FORCE_KEY, "false"))
        victim.attributes.append(attr("error", "true"))  # an attribute, not a status
    return items


def batch(items: list[Item]) -> bytes:
    """One ExportTraceServiceRequest: a ResourceSpans per service, as an agent's batch would hold them."""
    by_service: dict[str, list[Span]] = {}
    for service, span in items:
        by_service.setdefault(service, []).append(span)
    scope = InstrumentationScope(name="io.test", version="1")
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=[attr("service.name", service)]),
                      scope_spans=[ScopeSpans(scope=scope, spans=spans)])
        for service, spans in by_service.items()
    ]).SerializeToString()


def record(seed: int = 7, boring: int = 150) -> Recording:
    """Traces starting 100 ms apart; their spans sent in batches of 8 in the order they end (as they would
    reach a collector), so a trace's spans are spread over several messages."""
    rng = random.Random(seed)
    kinds = ["error"] * 10 + ["slow"] * 10 + ["forced"] * 10 + ["error+slow"] * 3 + ["near-miss"] * 5
    kinds += ["boring"] * boring
    rng.shuffle(kinds)
    items: list[Item] = []
    kind_of: dict[bytes, str] = {}
    for i, kind in enumerate(kinds):
        trace_id = rng.randbytes(16)
        kind_of[trace_id] = kind
        items += make_trace(rng, trace_id, T0 + i * 100 * MS, kind)
    items.sort(key=lambda item: item[1].end_time_unix_nano)
    messages = [batch(items[i:i + 8]) for i in range(0, len(items), 8)]
    spans = {(s.trace_id, s.span_id): (service, s.SerializeToString()) for service, s in items}
    rec = Recording(messages, spans, kind_of)
    rec.must_keep = {t for t, k in kind_of.items() if k not in ("boring", "near-miss")}
    # The point of the exercise: traces whose spans came in several messages.
    where: dict[bytes, set[int]] = {}
    for n, message in enumerate(messages):
        for _, raw in raw_spans(message):
            where.setdefault(Span.FromString(raw).trace_id, set()).add(n)
    assert sum(len(v) > 1 for v in where.values()) > len(kind_of) // 2
    return rec


# -- reading the output at the wire level, so "byte-identical" means what it says ----------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, value) for the length-delimited fields of a message; others skipped."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            yield key >> 3, buf[i:i + n]
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")


def raw_spans(payload: bytes) -> list[tuple[str, bytes]]:
    """Every span of a payload as its exact bytes, with the service.name of its resource."""
    out = []
    for number, rs in _fields(payload):
        if number != 1:
            continue
        resource = Resource()
        spans = []
        for n2, value in _fields(rs):
            if n2 == 1:
                resource = Resource.FromString(value)
            elif n2 == 2:
                spans += [raw for n3, raw in _fields(value) if n3 == 2]
        service = next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")
        out += [(service, raw) for raw in spans]
    return out


def output_spans(path: Path) -> dict[tuple[bytes, bytes], tuple[str, bytes]]:
    """The output's spans by (trace id, span id); fails on a span written twice."""
    spans: dict[tuple[bytes, bytes], tuple[str, bytes]] = {}
    for payload in read_payloads(path):
        for service, raw in raw_spans(payload):
            span = Span.FromString(raw)
            key = (span.trace_id, span.span_id)
            assert key not in spans, f"span {span.span_id.hex()} written twice"
            spans[key] = (service, raw)
    return spans


def write(path: Path, fmt: str, messages: list[bytes]) -> Path:
    with PayloadWriter(path, fmt) as writer:
        writer.write_all(messages)
    return path


def quiet() -> Console:
    """A console that records what replay prints, wide enough that no line wraps."""
    return Console(file=io.StringIO(), width=1000)


def printed(console: Console) -> str:
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def check_output(rec: Recording, report: ReplayReport, out: Path, *, byte_identical: bool) -> set[bytes]:
    """The output holds exactly the spans of the traces kept, and those include every must-keep one."""
    got = output_spans(out)
    kept = {trace_id for trace_id, _ in got}
    assert rec.must_keep <= kept, f"missing: {[rec.kind[t] for t in rec.must_keep - kept]}"
    lucky = kept - rec.must_keep  # the 1 % probabilistic policy's picks
    assert len(lucky) <= 12, len(lucky)
    expected = rec.spans_of(kept)
    assert got.keys() == expected.keys()
    for key, (service, raw) in got.items():
        assert service == expected[key][0]
        if byte_identical:
            assert raw == expected[key][1]
        else:
            assert Span.FromString(raw) == Span.FromString(expected[key][1])
    assert report.traces_sampled == len(kept)
    assert report.traces_sampled + report.traces_not_sampled == len(rec.kind)
    assert report.spans_out == len(got)
    assert report.spans_in == len(rec.spans)
    return kept


# -- the tests -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rec() -> Recording:
    return record()


@pytest.fixture(scope="module")
def config() -> tailsample.Config:
    return tailsample.Config.default()


CORRUPT = b"\x0a\x06\x12\x09truncated"  # a ResourceSpans whose ScopeSpans runs past its end


def test_proto_event_clock(tmp_path: Path, rec: Recording, config: tailsample.Config) -> None:
    messages = [*rec.messages[:5], CORRUPT, *rec.messages[5:]]
    src = write(tmp_path / "recorded.pb", "proto", messages)
    out = tmp_path / "kept.pb"
    console = quiet()
    report = replay(config, [src], out, console=console, progress=False)

    check_output(rec, report, out, byte_identical=True)
    assert detect_format(out) == "proto"  # as its input
    assert report.out_format == "proto"
    assert report.payloads == len(messages)
    assert len(report.rejected) == 1
    bad = report.rejected[0]
    assert (bad.file, bad.index) == (src, 6)
    assert bad.location == f"byte {sum(4 + len(m) for m in messages[:5])}"
    assert "recorded.pb: message 6 (byte " in str(bad)
    assert report.policies["errors-policy"]["sampled"] >= 13
    assert report.policies["latency-policy"]["sampled"] >= 13
    assert report.policies["forced-sampling-policy"]["sampled"] >= 10
    assert report.policies["errors-policy"]["decided"] >= 13  # first in order: kept first by it
    text = printed(console)
    assert "recorded.pb: message 6" in text
    for name in config.policy_names:
        assert name in text
    assert f"kept {report.kept_share:.2%}" in text


def test_json_event_clock(tmp_path: Path, rec: Recording, config: tailsample.Config) -> None:
    src = write(tmp_path / "recorded.json", "json", rec.messages)
    lines = src.read_text().splitlines(keepends=True)
    bad_id = lines[2].replace('"traceId":"', '"traceId":"zz', 1)
    src.write_text("".join([*lines[:3], "{not json\n", bad_id, *lines[3:]]))
    out = tmp_path / "kept.json"
    report = replay(config, [src], out, console=quiet(), progress=False)

    check_output(rec, report, out, byte_identical=False)
    assert detect_format(out) == "json"
    assert [(r.index, r.location) for r in report.rejected] == [(4, "line 4"), (5, "line 5")]
    assert "invalid JSON" in report.rejected[0].error
    assert "traceId: invalid trace id" in report.rejected[1].error
    assert report.payloads == len(rec.messages) + 2


def test_wall_clock(tmp_path: Path, rec: Recording, config: tailsample.Config) -> None:
    src = write(tmp_path / "recorded.pb", "proto", rec.messages)
    out = tmp_path / "kept.pb"
    report = replay(config, [src], out, clock="wall", console=quiet(), progress=False)
    check_output(rec, report, out, byte_identical=True)
    assert report.rejected == []


def test_several_inputs_gzip_and_output_format(tmp_path: Path, rec: Recording,
                                               config: tailsample.Config) -> None:
    half = len(rec.messages) // 2
    first = write(tmp_path / "part1.pb", "proto", rec.messages[:half])
    second = tmp_path / "part2.json.gz"
    second.write_bytes(gzip.compress(write(tmp_path / "p2.json", "json", rec.messages[half:]).read_bytes()))
    out = tmp_path / "kept.json.gz"
    console = quiet()
    report = replay(config, [first, second], out, out_fmt="json", console=console, progress=True)
    assert "forced-sampling-policy" in printed(console)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    check_output(rec, report, out, byte_identical=False)
    assert report.bytes_read == first.stat().st_size + second.stat().st_size


def test_no_output_file(tmp_path: Path, rec: Recording, config: tailsample.Config) -> None:
    src = write(tmp_path / "recorded.pb", "proto", rec.messages)
    report = replay(config, [src], None, console=quiet(), progress=False)
    assert report.traces_sampled >= len(rec.must_keep)
    assert report.payloads_out > 0 and report.out_format is None


def test_decision_wait_runs_in_trace_time(tmp_path: Path) -> None:
    """A straggler span sent 5 s (trace time) after its trace's first one is late with a 1 s decision_wait,
    however fast the replay runs: the trace was decided before it came (and, the decision being cached,
    the straggler follows its trace to the output)."""
    config = tailsample.Config.from_dict({
        "decision_wait": "1s", "decision_cache": {"sampled_cache_size": 100},
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
    rng = random.Random(1)
    early = make_trace(rng, b"\x01" * 16, T0, "boring")
    early[0][1].status.code = Status.StatusCode.STATUS_CODE_ERROR  # on the root: not on the straggler
    straggler = early.pop()
    filler = [make_trace(rng, bytes([2 + i]) * 16, T0 + i * 1000 * MS, "boring") for i in range(1, 6)]
    messages = [batch(early), *[batch(items) for items in filler], batch([straggler])]
    src = write(tmp_path / "late.pb", "proto", messages)
    out = tmp_path / "kept.pb"
    report = replay(config, [src], out, console=quiet(), progress=False)
    assert report.stats["late_spans_forwarded"] == 1
    assert report.traces_sampled == 1
    assert report.stats["traces_received"] == 6  # the straggler did not start a trace of its own
    assert set(output_spans(out)) == {(s.trace_id, s.span_id) for _, s in [*early, straggler]}


def test_absurd_end_time_does_not_stop_the_clock(tmp_path: Path, rec: Recording,
                                                 config: tailsample.Config) -> None:
    garbage = Span(trace_id=b"\xee" * 16, span_id=b"\xee" * 8, start_time_unix_nano=T0,
                   end_time_unix_nano=2**64 - 1)
    src = write(tmp_path / "recorded.pb", "proto", [batch([("frontend", garbage)]), *rec.messages])
    out = tmp_path / "kept.pb"
    report = replay(config, [src], out, console=quiet(), progress=False)
    assert report.rejected == []
    kept = {trace_id for trace_id, _ in output_spans(out)}
    assert rec.must_keep | {garbage.trace_id} <= kept  # 2**64 ns long: slow


def test_unreadable_inputs_fail_before_any_work(tmp_path: Path, config: tailsample.Config) -> None:
    zstd = tmp_path / "traces.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    out = tmp_path / "kept.pb"
    with pytest.raises(DecodeError, match="zstd is not supported yet"):
        replay(config, [zstd], out, console=quiet(), progress=False)
    with pytest.raises(FileNotFoundError):
        replay(config, [tmp_path / "missing.pb"], out, console=quiet(), progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown clock"):
        replay(config, [zstd], out, clock="cpu", console=quiet(), progress=False)
    with pytest.raises(ValueError, match="no input files"):
        replay(config, [], out, console=quiet(), progress=False)
    src = write(tmp_path / "recorded.pb", "proto", [])
    with pytest.raises(ValueError, match="the output is one of the inputs"):
        replay(config, [src], tmp_path / "." / "recorded.pb", console=quiet(), progress=False)
