"""Property: no mutation of a valid payload that the Python protobuf runtime (upb) parses is refused whole.

Valid requests (resources, scopes, spans with attributes of every value kind, events, links, status) are
mutated at random, at any depth of the message tree: known fields given another wire type, fields duplicated,
dropped or cut short, unknown fields and groups inserted, bytes flipped, inserted or deleted. Whatever
`ExportTraceServiceRequest.FromString` takes, the engine takes too: every span the runtime sees is either taken
or rejected alone (exactly those without a usable trace ID, with an ID of the wrong length, or holding, or under a
resource or scope holding, a known field of the wrong wire type: pdata refuses those), taken spans leave byte for
byte, and the output parses again.
"""

from __future__ import annotations

import random

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otlp_builders import enc_tag, enc_varint, new_engine, read_varint, spans_out


def any_value(rnd: random.Random, depth: int = 0) -> AnyValue:
    kind = rnd.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return AnyValue(string_value=rnd.choice(["a", "/cart", "é", ""]))
    if kind == 1:
        return AnyValue(int_value=rnd.randrange(-300, 300))
    if kind == 2:
        return AnyValue(bool_value=rnd.random() < 0.5)
    if kind == 3:
        return AnyValue(double_value=rnd.random())
    if kind == 4:
        return AnyValue(bytes_value=rnd.randbytes(3))
    if kind == 5:
        return AnyValue(array_value=ArrayValue(values=[any_value(rnd, depth + 1) for _ in range(2)]))
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=any_value(rnd, depth + 1))]))


def attributes(rnd: random.Random, n: int) -> list[KeyValue]:
    return [KeyValue(key=rnd.choice(["http.route", "service.name", "n", "error"]), value=any_value(rnd))
            for _ in range(n)]


def base_request(rnd: random.Random) -> bytes:
    req = ExportTraceServiceRequest()
    for r in range(rnd.randrange(1, 3)):
        rs: ResourceSpans = req.resource_spans.add()
        rs.resource.attributes.extend([KeyValue(key="service.name", value=AnyValue(string_value=f"svc{r}")),
                                       *attributes(rnd, 1)])
        for _ in range(rnd.randrange(1, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = "lib", "1.0"
            ss.scope.attributes.extend(attributes(rnd, 1))
            for _ in range(rnd.randrange(1, 4)):
                s: Span = ss.spans.add()
                s.trace_id, s.span_id = rnd.randbytes(15) + b"\1", rnd.randbytes(8)
                if rnd.random() < 0.5:
                    s.parent_span_id = rnd.randbytes(8)
                s.name, s.kind, s.trace_state = "op", rnd.randrange(6), rnd.choice(["", "ot=th:8"])
                s.start_time_unix_nano = 1_700_000_000_000_000_000
                s.end_time_unix_nano = s.start_time_unix_nano + rnd.randrange(10**9)
                s.flags = 0x101
                s.attributes.extend(attributes(rnd, rnd.randrange(4)))
                ev = s.events.add(time_unix_nano=s.start_time_unix_nano, name="ev")
                ev.attributes.extend(attributes(rnd, 1))
                link = s.links.add(trace_id=rnd.randbytes(16), span_id=rnd.randbytes(8), flags=1)
                link.attributes.extend(attributes(rnd, 1))
                s.status.CopyFrom(Status(code=rnd.randrange(3), message="m"))
    return req.SerializeToString()


Field = tuple[int, int, bytes]  # number, wire type, the value's bytes as on the wire (a LEN value: its content)


def parse(buf: bytes) -> list[Field] | None:
    """The fields of a message, or None when the bytes are not one (groups included as raw bytes)."""
    out: list[Field] = []
    pos = 0
    try:
        while pos < len(buf):
            tag, pos = read_varint(buf, pos)
            number, wt = tag >> 3, tag & 7
            start = pos
            if wt == 0:
                _, pos = read_varint(buf, pos)
            elif wt in (1, 5):
                pos += 8 if wt == 1 else 4
            elif wt == 2:
                n, start = read_varint(buf, pos)
                pos = start + n
            else:
                return None
            if pos > len(buf) or number == 0:
                return None
            out.append((number, wt, buf[start:pos]))
    except IndexError:
        return None
    return out


def encode(fields: list[Field]) -> bytes:
    return b"".join(enc_tag(n, wt) + (enc_varint(len(v)) if wt == 2 else b"") + v for n, wt, v in fields)


def other_wire_type(rnd: random.Random, number: int, wt: int) -> Field:
    new = rnd.choice([w for w in (0, 1, 2, 5) if w != wt])
    value = {0: enc_varint(rnd.randrange(300)), 1: rnd.randbytes(8), 2: rnd.randbytes(rnd.randrange(4)),
             5: rnd.randbytes(4)}[new]
    return number, new, value


def raw_mutation(buf: bytes, rnd: random.Random) -> bytes:
    if not buf:
        return bytes([rnd.randrange(256)])
    i = rnd.randrange(len(buf))
    op = rnd.randrange(3)
    if op == 0:
        return buf[:i] + bytes([buf[i] ^ (1 << rnd.randrange(8))]) + buf[i + 1:]
    if op == 1:
        return buf[:i] + buf[i + 1 + rnd.randrange(3):]
    return buf[:i] + bytes([rnd.randrange(256)]) + buf[i:]


def mutate(buf: bytes, rnd: random.Random, depth: int = 0) -> bytes:
    """One mutation somewhere in the message tree under `buf`."""
    fields = parse(buf)
    if not fields or rnd.random() < 0.1:
        return raw_mutation(buf, rnd)
    i = rnd.randrange(len(fields))
    number, wt, value = fields[i]
    if wt == 2 and depth < 10 and rnd.random() < 0.7:
        fields[i] = (number, 2, mutate(value, rnd, depth + 1))
        return encode(fields)
    op = rnd.randrange(6)
    if op == 0:
        fields[i] = other_wire_type(rnd, number, wt)
    elif op == 1:
        fields.insert(rnd.randrange(len(fields) + 1), fields[i])
    elif op == 2:
        del fields[i]
    elif op == 3 and wt == 2:
        fields[i] = (number, 2, value[:rnd.randrange(len(value) + 1)])
    elif op == 4:
        unknown = rnd.choice([(50, 0, enc_varint(7)), (51, 2, b"xyz"), (52, 5, b"abcd")])
        fields.insert(rnd.randrange(len(fields) + 1), unknown)
    else:
        group = enc_tag(60, 3) + enc_tag(1, 0) + enc_varint(1) + enc_tag(60, 4)
        pos = len(encode(fields[:i]))
        return encode(fields)[:pos] + group + encode(fields)[pos:]
    return encode(fields)


def mistyped(msg: Message) -> bool:
    """A known field with another wire type anywhere in the message (upb keeps it among the unknown fields)."""
    known = msg.DESCRIPTOR.fields_by_number
    if any(f.field_number in known for f in UnknownFieldSet(msg)):
        return True
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            if any(mistyped(v) for v in (value if not isinstance(value, Message) else [value])):
                return True
    return False


def usable(span: Span, rs: ResourceSpans, ss: ScopeSpans) -> bool:
    """What the engine takes of a span the runtime parsed (the rest is rejected alone)."""
    ids_ok = len(span.span_id) in (0, 8) and len(span.parent_span_id) in (0, 8)
    links_ok = all(len(link.trace_id) in (0, 16) and len(link.span_id) in (0, 8) for link in span.links)
    typed = not (mistyped(span) or mistyped(rs.resource) or mistyped(ss.scope))
    return len(span.trace_id) == 16 and any(span.trace_id) and ids_ok and links_ok and typed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 4))
def test_what_the_protobuf_runtime_parses_is_never_refused_whole(rnd: random.Random, n: int) -> None:
    payload = base_request(rnd)
    for _ in range(n):
        payload = mutate(payload, rnd)
    try:
        parsed = ExportTraceServiceRequest.FromString(payload)
    except ProtobufDecodeError:
        assume(False)
        return
    placed = [(s, rs, ss) for rs in parsed.resource_spans for ss in rs.scope_spans for s in ss.spans]
    spans = [s for s, _, _ in placed]
    eng = new_engine()
    got = eng.ingest_report(payload, now=0.0)  # a DecodeError here fails the property
    want_taken = sum(usable(*p) for p in placed)
    event("some spans rejected alone" if want_taken < len(spans) else "every span taken")
    event("a span with a mistyped or unknown field" if any(len(UnknownFieldSet(s)) for s in spans)
          else "no unknown field in spans")
    assert (got.spans, got.rejected_spans) == (want_taken, len(spans) - want_taken), got.rejection
    assert sum(got.rejected_by_reason.values()) == got.rejected_spans
    out = eng.flush(now=100.0)
    for p in out:
        ExportTraceServiceRequest.FromString(p)
    kept = [raw for _, _, raw in spans_out(out)]
    assert len(kept) == want_taken
    assert all(raw in payload for raw in kept), "a span left changed"
