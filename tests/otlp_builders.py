"""Builders and parsers of OTLP trace payloads for the tailsample tests.

Two kinds of helpers:
- well-formed payloads, built with opentelemetry-proto (`make_span`, `make_resource_spans`, `make_request`),
  and a wire-level reader of the engine's output (`read_output`, `spans_out`) that returns every span's
  *exact* bytes with the resource and scope it came under, so byte identity is checked without re-encoding;
- hand-encoded protobuf (`enc_*`, `raw_span`, `raw_request`) for payloads opentelemetry-proto would refuse to
  build: a 15-byte trace ID, a wrong wire type, invalid UTF-8, a varint of eleven bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

T0 = 1_700_000_000 * 10**9  # a realistic span start, in ns since the epoch
MS = 10**6  # one millisecond in ns

STATUS_UNSET = Status.STATUS_CODE_UNSET
STATUS_OK = Status.STATUS_CODE_OK
STATUS_ERROR = Status.STATUS_CODE_ERROR

AttrValue = str | bool | int | float | bytes | list[Any] | dict[str, Any]


# ---- IDs ---------------------------------------------------------------------------------------------------

def trace_id(rng: random.Random | None = None) -> bytes:
    """A random valid (non-zero) 16-byte trace ID."""
    randbytes = rng.randbytes if rng is not None else random.randbytes
    while True:
        tid = randbytes(16)
        if any(tid):
            return tid


def span_id(rng: random.Random | None = None) -> bytes:
    """A random valid (non-zero) 8-byte span ID."""
    randbytes = rng.randbytes if rng is not None else random.randbytes
    while True:
        sid = randbytes(8)
        if any(sid):
            return sid


# ---- well-formed payloads with opentelemetry-proto ---------------------------------------------------------

def any_value(v: AttrValue) -> AnyValue:
    """The AnyValue of a Python value (bool before int: a bool is an int in Python)."""
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(kv(k, x) for k, x in v.items())
        return out
    raise TypeError(f"no AnyValue for {v!r}")


def kv(key: str, value: AttrValue) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def attrs(mapping: Mapping[str, AttrValue] | None) -> list[KeyValue]:
    return [kv(k, v) for k, v in (mapping or {}).items()]


def make_span(
    tid: bytes,
    sid: bytes | None = None,
    *,
    parent: bytes = b"",
    name: str = "op",
    start: int = T0,
    duration_ms: float | None = 10,
    end: int | None = None,
    status: int = STATUS_UNSET,
    attributes: Mapping[str, AttrValue] | None = None,
    flags: int | None = None,
    kind: int = Span.SpanKind.SPAN_KIND_INTERNAL,
    rng: random.Random | None = None,
) -> Span:
    """One span. `parent=b""` makes it a root; `end` wins over `duration_ms`."""
    if end is None:
        end = start + round((duration_ms or 0) * MS)
    s = Span(
        trace_id=tid,
        span_id=sid if sid is not None else span_id(rng),
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs(attributes),
    )
    if status != STATUS_UNSET:
        s.status.code = status
    if flags is not None:
        s.flags = flags
    return s


def make_scope_spans(
    spans: Iterable[Span],
    *,
    scope: tuple[str, str] | InstrumentationScope | None = ("tests.lib", "1.0"),
    schema_url: str = "",
) -> ScopeSpans:
    """A ScopeSpans; `scope=None` leaves the scope field absent."""
    ss = ScopeSpans(spans=list(spans), schema_url=schema_url)
    if isinstance(scope, InstrumentationScope):
        ss.scope.CopyFrom(scope)
    elif scope is not None:
        ss.scope.name, ss.scope.version = scope
    return ss


def make_resource_spans(
    resource_attrs: Mapping[str, AttrValue] | None,
    scope_spans: Iterable[ScopeSpans],
    *,
    schema_url: str = "",
) -> ResourceSpans:
    """A ResourceSpans; `resource_attrs=None` leaves the resource field absent."""
    rs = ResourceSpans(scope_spans=list(scope_spans), schema_url=schema_url)
    if resource_attrs is not None:
        rs.resource.CopyFrom(Resource(attributes=attrs(resource_attrs)))
    return rs


def make_request(
    resource_attrs: Mapping[str, AttrValue] | None,
    spans: Iterable[Span],
    *,
    scope: tuple[str, str] | InstrumentationScope | None = ("tests.lib", "1.0"),
    schema_url: str = "",
    scope_schema_url: str = "",
) -> bytes:
    """The common case: one resource, one scope, these spans; serialized."""
    ss = make_scope_spans(spans, scope=scope, schema_url=scope_schema_url)
    rs = make_resource_spans(resource_attrs, [ss], schema_url=schema_url)
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def request(*resource_spans: ResourceSpans) -> bytes:
    """Several ResourceSpans in one serialized request."""
    return ExportTraceServiceRequest(resource_spans=list(resource_spans)).SerializeToString()


def service(name: str, **more: AttrValue) -> dict[str, AttrValue]:
    return {"service.name": name, **more}


# ---- the engine's output, read at the wire level -----------------------------------------------------------

@dataclass(frozen=True)
class OutSpan:
    """One span of an output payload, with the exact bytes of everything around it."""

    trace_id: bytes
    span_id: bytes
    raw: bytes
    resource: bytes | None  # raw Resource message bytes, None when the field is absent
    resource_schema_url: str
    scope: bytes | None  # raw InstrumentationScope bytes, None when absent
    scope_schema_url: str

    @property
    def origin(self) -> tuple[bytes | None, str, bytes | None, str]:
        return (self.resource, self.resource_schema_url, self.scope, self.scope_schema_url)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def iter_fields(buf: bytes) -> Iterable[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a message, in wire order; LEN values as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wt = tag >> 3, tag & 7
        if wt == 0:
            v, pos = read_varint(buf, pos)
            yield number, wt, v
        elif wt == 1:
            yield number, wt, int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 2:
            n, pos = read_varint(buf, pos)
            yield number, wt, buf[pos:pos + n]
            pos += n
        elif wt == 5:
            yield number, wt, int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wt == 3:  # an unknown group, passed through: skipped with what it holds
            pos = _skip_group(buf, pos, number)
        else:
            raise ValueError(f"unexpected wire type {wt} in engine output")


def _skip_group(buf: bytes, pos: int, number: int) -> int:
    """The position after the end of group `number` whose content starts at `pos`."""
    while True:
        tag, pos = read_varint(buf, pos)
        wt = tag & 7
        if wt == 4:
            if tag >> 3 != number:
                raise ValueError(f"group {number} closed by {tag >> 3}")
            return pos
        if wt == 0:
            _, pos = read_varint(buf, pos)
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
        elif wt == 2:
            n, pos = read_varint(buf, pos)
            pos += n
        elif wt == 3:
            pos = _skip_group(buf, pos, tag >> 3)
        else:
            raise ValueError(f"unexpected wire type {wt} in a group")


def _span_ids(raw: bytes) -> tuple[bytes, bytes]:
    tid = sid = b""
    for number, _, v in iter_fields(raw):
        if number == 1:
            tid = bytes(v)  # type: ignore[arg-type]
        elif number == 2:
            sid = bytes(v)  # type: ignore[arg-type]
    return tid, sid


def read_output(payloads: Iterable[bytes]) -> list[OutSpan]:
    """Every span of the engine's output payloads, with its exact bytes and origin, in output order."""
    out: list[OutSpan] = []
    for payload in payloads:
        for number, _, rs in iter_fields(payload):
            assert number == 1, f"unexpected field {number} in an output ExportTraceServiceRequest"
            resource: bytes | None = None
            r_schema = ""
            pending: list[bytes] = []
            for n2, _, v2 in iter_fields(rs):  # type: ignore[arg-type]
                if n2 == 1:
                    resource = bytes(v2)  # type: ignore[arg-type]
                elif n2 == 2:
                    pending.append(bytes(v2))  # type: ignore[arg-type]
                elif n2 == 3:
                    r_schema = bytes(v2).decode()  # type: ignore[arg-type]
            for ss in pending:
                scope: bytes | None = None
                s_schema = ""
                spans: list[bytes] = []
                for n3, _, v3 in iter_fields(ss):
                    if n3 == 1:
                        scope = bytes(v3)  # type: ignore[arg-type]
                    elif n3 == 2:
                        spans.append(bytes(v3))  # type: ignore[arg-type]
                    elif n3 == 3:
                        s_schema = bytes(v3).decode()  # type: ignore[arg-type]
                for raw in spans:
                    tid, sid = _span_ids(raw)
                    out.append(OutSpan(tid, sid, raw, resource, r_schema, scope, s_schema))
    return out


def spans_out(payloads: Iterable[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    """(trace ID, span ID, exact span bytes) of every span in the output payloads."""
    return [(s.trace_id, s.span_id, s.raw) for s in read_output(payloads)]


def parse_all(payloads: Iterable[bytes]) -> list[ExportTraceServiceRequest]:
    """The output payloads parsed with opentelemetry-proto (raises if one does not parse)."""
    return [ExportTraceServiceRequest.FromString(p) for p in payloads]


@dataclass(frozen=True)
class InSpan:
    """What went in: a span's bytes and the exact bytes of its resource and scope."""

    trace_id: bytes
    span_id: bytes
    raw: bytes
    origin: tuple[bytes | None, str, bytes | None, str]


def spans_in(payload: bytes) -> list[InSpan]:
    """The spans of an input payload with their origins, read the same way as the output."""
    return [InSpan(s.trace_id, s.span_id, s.raw, s.origin) for s in read_output([payload])]


@dataclass
class Ledger:
    """Everything sent to an engine, by (trace ID, span ID), to compare the output against."""

    spans: dict[tuple[bytes, bytes], InSpan] = field(default_factory=dict)

    def add(self, payload: bytes) -> bytes:
        for s in spans_in(payload):
            key = (s.trace_id, s.span_id)
            assert key not in self.spans, "the tests give every span a unique span ID"
            self.spans[key] = s
        return payload

    def of_traces(self, traces: Iterable[bytes]) -> dict[tuple[bytes, bytes], InSpan]:
        wanted = set(traces)
        return {k: v for k, v in self.spans.items() if k[0] in wanted}

    @property
    def trace_ids(self) -> set[bytes]:
        return {k[0] for k in self.spans}


def assert_output_is(out: Sequence[OutSpan], expected: Mapping[tuple[bytes, bytes], InSpan]) -> None:
    """Exactly the expected spans, each once, byte-identical, under the resource and scope it came with."""
    keys = [(s.trace_id, s.span_id) for s in out]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"{len(dupes)} spans came out more than once"
    got = set(keys)
    missing = set(expected) - got
    extra = got - set(expected)
    assert not missing and not extra, f"{len(missing)} kept spans missing, {len(extra)} unexpected spans out"
    for s in out:
        want = expected[(s.trace_id, s.span_id)]
        assert s.raw == want.raw, "a span's bytes changed on the way through"
        assert s.origin == want.origin, "a span came out under another resource or scope"


# ---- hand-encoded protobuf ---------------------------------------------------------------------------------

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


def enc_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def enc_tag(number: int, wt: int) -> bytes:
    return enc_varint((number << 3) | wt)


def enc_len(number: int, content: bytes) -> bytes:
    return enc_tag(number, LEN) + enc_varint(len(content)) + content


def enc_uint(number: int, value: int) -> bytes:
    return enc_tag(number, VARINT) + enc_varint(value)


def enc_fixed64(number: int, value: int) -> bytes:
    return enc_tag(number, I64) + value.to_bytes(8, "little")


def enc_fixed32(number: int, value: int) -> bytes:
    return enc_tag(number, I32) + value.to_bytes(4, "little")


def raw_span(
    tid: bytes | None = b"\x11" * 16,
    sid: bytes | None = b"\x22" * 8,
    *,
    parent: bytes | None = None,
    name: bytes | None = b"op",
    start: int | None = T0,
    end: int | None = T0 + 10 * MS,
    extra: bytes = b"",
) -> bytes:
    """A Span's bytes, field by field; `None` leaves a field out, `extra` is appended as is."""
    out = b""
    if tid is not None:
        out += enc_len(1, tid)
    if sid is not None:
        out += enc_len(2, sid)
    if parent is not None:
        out += enc_len(4, parent)
    if name is not None:
        out += enc_len(5, name)
    if start is not None:
        out += enc_fixed64(7, start)
    if end is not None:
        out += enc_fixed64(8, end)
    return out + extra


def raw_scope_spans(spans: Iterable[bytes], *, scope: bytes | None = None, schema_url: bytes = b"") -> bytes:
    out = enc_len(1, scope) if scope is not None else b""
    out += b"".join(enc_len(2, s) for s in spans)
    if schema_url:
        out += enc_len(3, schema_url)
    return out


def raw_resource_spans(scope_spans: Iterable[bytes], *, resource: bytes | None = None) -> bytes:
    out = enc_len(1, resource) if resource is not None else b""
    return out + b"".join(enc_len(2, ss) for ss in scope_spans)


def raw_request(*spans: bytes, resource: bytes | None = None, scope: bytes | None = None) -> bytes:
    """One resource, one scope, these span bytes."""
    return enc_len(1, raw_resource_spans([raw_scope_spans(spans, scope=scope)], resource=resource))


def raw_any_nested(depth: int, leaf: bytes = enc_len(1, b"x")) -> bytes:
    """An AnyValue of arrays nested `depth` deep around a string leaf (no recursion limit applies)."""
    value = leaf
    for _ in range(depth):
        value = enc_len(5, enc_len(1, value))  # AnyValue.array_value = ArrayValue{values: [value]}
    return value


def raw_attribute(key: bytes, any_value_bytes: bytes) -> bytes:
    """A span `attributes` entry (field 9) holding KeyValue{key, value}."""
    return enc_len(9, enc_len(1, key) + enc_len(2, any_value_bytes))


# ---- engines and their counters ----------------------------------------------------------------------------

ALWAYS: dict[str, Any] = {"name": "always", "type": "always_sample"}


def block(policies: Sequence[Mapping[str, Any]] | Mapping[str, Any], **top: Any) -> dict[str, Any]:
    """A bare tail_sampling block: these policies (one or a list) and top-level options."""
    if isinstance(policies, Mapping):
        policies = [policies]
    return {"decision_wait": "10s", **top, "policies": [dict(p) for p in policies]}


def new_engine(policies: Sequence[Mapping[str, Any]] | Mapping[str, Any] = ALWAYS, **top: Any) -> Any:
    """An engine for these policies (default: always_sample) and top-level options (decision_wait 10s)."""
    import tailsample

    return tailsample.Engine(tailsample.Config.from_dict(block(policies, **top)))


def assert_stats_invariant(eng: Any) -> dict[str, int]:
    """traces_received == sampled + not_sampled + dropped + evicted + in memory; returns the stats."""
    s = eng.stats()
    accounted = (s["traces_sampled"] + s["traces_not_sampled"] + s["traces_dropped"] + s["traces_evicted"]
                 + s["traces_in_memory"])
    assert s["traces_received"] == accounted, f"trace accounting is off: {s}"
    assert s["traces_dropped"] == s["traces_dropped_too_large"] + s["traces_dropped_on_shutdown"], s
    return s


def fnv1a_64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    """FNV-1a, 64 bits, written independently of the engine."""
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


DEFAULT_SALT = "default-hash-seed"


def probabilistic_hash(tid: bytes, salt: str = "") -> int:
    return fnv1a_64((salt or DEFAULT_SALT).encode() + tid)


def probabilistic_threshold(pct: float | int | str) -> int:
    """floor((2^64 - 1) * pct / 100), with exact rational arithmetic; the engine may differ by 1."""
    from fractions import Fraction

    ratio = Fraction(pct) / 100
    if ratio >= 1:
        return (1 << 64) - 1
    return int(((1 << 64) - 1) * ratio)
