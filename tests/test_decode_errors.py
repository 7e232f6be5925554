"""Malformed payloads: refused whole with a `DecodeError` that says what is wrong and where, never a crash.

Contract: truncated input, an invalid wire type (6, 7), field number 0, unclosed or unopened groups, an overlong
varint, a length past the end raise `tailsample.DecodeError` (a `ValueError`) with `.field`, the protobuf field path
(`resource_spans[0].scope_spans[0].spans[2].trace_id`), and `.offset`, the byte offset in the payload; the message
names both. Nothing of a refused payload enters the store and every buffered trace is unaffected;
`payloads_rejected` counts it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

import tailsample
from otlp_builders import (
    EGROUP,
    I32,
    I64,
    LEN,
    SGROUP,
    VARINT,
    assert_stats_invariant,
    enc_fixed32,
    enc_len,
    enc_tag,
    enc_uint,
    enc_varint,
    kv,
    make_request,
    make_resource_spans,
    make_scope_spans,
    make_span,
    new_engine,
    raw_any_nested,
    raw_attribute,
    raw_request,
    raw_resource_spans,
    raw_scope_spans,
    raw_span,
    request,
    service,
    span_id,
    spans_out,
    trace_id,
)

SPAN0 = "resource_spans[0].scope_spans[0].spans[0]"


@dataclass
class Bad:
    """A malformed payload and where the engine must say it is wrong."""

    payload: bytes
    field: str
    offset: int
    says: str


def in_span(span: bytes, field: str, at: Callable[[bytes], int], says: str) -> Bad:
    """`span` alone in a request; `at(span)` is the expected offset within the span's bytes."""
    payload = raw_request(span)
    base = len(payload) - len(span)  # the span is the payload's last bytes
    return Bad(payload, f"{SPAN0}.{field}" if field else SPAN0, base + at(span), says)


def find(marker: bytes, plus: int = 0) -> Callable[[bytes], int]:
    return lambda b: b.index(marker) + plus


def end_of(prefix: bytes, plus: int = 0) -> Callable[[bytes], int]:
    return lambda _: len(prefix) + plus


START = lambda _: 0  # noqa: E731
GOOD = raw_span()
TID15, SID7 = b"\xab" * 15, b"\xcd" * 7


def kv_bytes(key: bytes, any_value: bytes) -> bytes:
    return enc_len(1, key) + enc_len(2, any_value)


def groups(depth: int) -> bytes:
    return enc_tag(50, SGROUP) * depth + enc_tag(50, EGROUP) * depth


def payload_cases() -> dict[str, Bad]:
    c: dict[str, Bad] = {}
    # -- IDs
    c["trace-id-15-bytes"] = in_span(raw_span(tid=TID15), "trace_id", find(TID15), "trace_id must be 16 bytes, got 15")
    c["trace-id-17-bytes"] = in_span(raw_span(tid=b"\xab" * 17), "trace_id", find(b"\xab" * 17), "got 17")
    c["trace-id-empty"] = in_span(raw_span(tid=b""), "trace_id", lambda _: 2, "trace_id must be 16 bytes, got 0")
    c["trace-id-missing"] = in_span(raw_span(tid=None), "trace_id", START, "trace_id must be 16 bytes, got 0")
    c["trace-id-all-zeros"] = in_span(raw_span(tid=bytes(16)), "trace_id", lambda _: 2, "all zeros")
    c["trace-id-repeated-last-is-bad"] = in_span(raw_span(extra=enc_len(1, TID15)), "trace_id", find(TID15),
                                                 "got 15")
    c["span-id-7-bytes"] = in_span(raw_span(sid=SID7), "span_id", find(SID7), "span_id must be 8 bytes, got 7")
    c["span-id-9-bytes"] = in_span(raw_span(sid=b"\xcd" * 9), "span_id", find(b"\xcd" * 9), "got 9")
    c["span-id-missing"] = in_span(raw_span(sid=None), "span_id", START, "span_id must be 8 bytes, got 0")
    c["parent-4-bytes"] = in_span(raw_span(parent=b"\xee" * 4), "parent_span_id", find(b"\xee" * 4),
                                  "parent_span_id must be 8 bytes or empty, got 4")
    c["parent-16-bytes"] = in_span(raw_span(parent=b"\xee" * 16), "parent_span_id", find(b"\xee" * 16), "got 16")
    c["link-trace-id-15-bytes"] = in_span(raw_span(extra=enc_len(13, enc_len(1, TID15))), "links[0].trace_id",
                                          find(TID15), "16 bytes or empty, got 15")
    c["link-span-id-3-bytes"] = in_span(raw_span(extra=enc_len(13, enc_len(2, b"\xcd" * 3))), "links[0].span_id",
                                        find(b"\xcd" * 3), "got 3")
    # -- wire types
    c["trace-id-as-varint"] = in_span(enc_uint(1, 7) + raw_span(tid=None), "trace_id", START,
                                      "wrong wire type: expected length-delimited, got varint")
    c["span-id-as-fixed64"] = in_span(enc_tag(2, I64) + bytes(8) + raw_span(sid=None), "span_id", START,
                                      "expected length-delimited, got fixed64")
    no_start = raw_span(start=None)
    c["start-time-as-varint"] = in_span(no_start + enc_uint(7, 5), "start_time_unix_nano", end_of(no_start),
                                        "expected fixed64, got varint")
    c["flags-as-varint"] = in_span(GOOD + enc_uint(16, 1), "flags", end_of(GOOD), "expected fixed32, got varint")
    c["kind-as-bytes"] = in_span(GOOD + enc_len(6, b"x"), "kind", end_of(GOOD),
                                 "expected varint, got length-delimited")
    c["status-as-varint"] = in_span(GOOD + enc_uint(15, 2), "status", end_of(GOOD), "wrong wire type")
    c["status-code-as-bytes"] = in_span(GOOD + enc_len(15, enc_len(3, b"x")), "status.code", end_of(GOOD, 2),
                                        "expected varint, got length-delimited")
    c["attribute-as-fixed32"] = in_span(GOOD + enc_fixed32(9, 1), "attributes[0]", end_of(GOOD), "wrong wire type")
    c["event-as-varint"] = in_span(GOOD + enc_uint(11, 1), "events[0]", end_of(GOOD), "wrong wire type")
    c["invalid-wire-type-6"] = in_span(GOOD + bytes([(12 << 3) | 6]), "", end_of(GOOD), "invalid wire type 6")
    c["invalid-wire-type-7"] = in_span(GOOD + bytes([(12 << 3) | 7]), "", end_of(GOOD), "invalid wire type 7")
    c["field-number-zero"] = in_span(GOOD + bytes([0x00, 0x01]), "", end_of(GOOD), "invalid field number 0")
    c["unclosed-group"] = in_span(GOOD + enc_tag(50, SGROUP) + enc_uint(1, 1), "", end_of(GOOD, 2),
                                  "group 50 is not closed")
    # offset: the start of the 2-byte end-group tag itself
    c["end-group-without-start"] = in_span(GOOD + enc_tag(50, EGROUP), "", end_of(GOOD, 0), "without a start")
    # -- invalid UTF-8 (offset: the first bad byte)
    c["span-name-invalid-utf8"] = in_span(raw_span(name=b"ok\xff"), "name", find(b"ok\xff", 2), "not valid UTF-8")
    c["span-name-bad-first-byte"] = in_span(raw_span(name=b"\xc3\x28"), "name", find(b"\xc3\x28"),
                                            "not valid UTF-8")
    c["trace-state-invalid-utf8"] = in_span(GOOD + enc_len(3, b"k=\xfe"), "trace_state", find(b"k=\xfe", 2),
                                            "not valid UTF-8")
    c["attribute-key-invalid-utf8"] = in_span(GOOD + enc_len(9, kv_bytes(b"\xffkey", enc_len(1, b"v"))),
                                              "attributes[0].key", find(b"\xffkey"), "not valid UTF-8")
    c["attribute-value-invalid-utf8"] = in_span(
        GOOD + raw_attribute(b"a", enc_len(1, b"ok")) + raw_attribute(b"b", enc_len(1, b"v\x80v")),
        "attributes[1].value.string_value", find(b"v\x80v", 1), "not valid UTF-8")
    c["array-element-invalid-utf8"] = in_span(
        GOOD + raw_attribute(b"a", enc_len(5, enc_len(1, enc_len(1, b"x")) + enc_len(1, enc_len(1, b"\xff")))),
        "attributes[0].value.array_value.values[1].string_value", find(b"\x01\xff", 1), "not valid UTF-8")
    c["event-name-invalid-utf8"] = in_span(GOOD + enc_len(11, enc_len(2, b"ev\xff")), "events[0].name",
                                           find(b"ev\xff", 2), "not valid UTF-8")
    c["status-message-invalid-utf8"] = in_span(GOOD + enc_len(15, enc_len(2, b"\xe2\x82")), "status.message",
                                               find(b"\xe2\x82"), "not valid UTF-8")
    # -- varints and lengths
    # ten bytes holding more than 64 bits: the rest dropped, as upb, C++ and pdata do (taken)
    c["varint-longer-than-64-bits"] = in_span(GOOD + enc_tag(6, VARINT) + b"\xff" * 9 + b"\x02", "kind",
                                              end_of(GOOD, 1), "")
    c["varint-of-eleven-bytes"] = in_span(GOOD + enc_tag(6, VARINT) + b"\xff" * 10 + b"\x01", "kind",
                                          end_of(GOOD, 1), "varint longer than 10 bytes")
    c["truncated-varint"] = in_span(GOOD + enc_tag(6, VARINT) + b"\x80", "kind", end_of(GOOD, 1),
                                    "truncated varint")
    c["truncated-fixed64"] = in_span(GOOD + enc_tag(8, I64) + b"\x00\x01", "end_time_unix_nano", end_of(GOOD, 1),
                                     "truncated fixed64")
    c["truncated-fixed32"] = in_span(GOOD + enc_tag(16, I32) + b"\x01", "flags", end_of(GOOD, 2),
                                     "truncated fixed32")
    c["length-past-the-end"] = in_span(GOOD + enc_tag(5, LEN) + enc_varint(50) + b"ab", "name", end_of(GOOD, 1),
                                       "length 50 runs past the end")
    # -- nesting too deep is not malformed: the span is rejected alone (tests/test_nesting.py)

    # -- outside the span: request, resource, scope
    c["request-field-as-varint"] = Bad(b"\x08\x01", "resource_spans[0]", 0,
                                       "wrong wire type: expected length-delimited, got varint")
    c["request-length-past-the-end"] = Bad(b"\x0a\x05\x00", "resource_spans[0]", 1, "runs past the end")
    c["request-field-number-zero"] = Bad(b"\x02\x00", "", 0, "invalid field number 0")
    c["request-varint-overflow"] = Bad(b"\x0a" + b"\xff" * 11, "resource_spans[0]", 1, "longer than 10 bytes")
    c["scope-spans-as-varint"] = Bad(enc_len(1, enc_uint(2, 1)), "resource_spans[0].scope_spans[0]", 2,
                                     "wrong wire type")
    c["spans-as-fixed32"] = Bad(enc_len(1, enc_len(2, enc_fixed32(2, 1))), f"{SPAN0}", 4, "wrong wire type")
    good_rs = raw_resource_spans([raw_scope_spans([GOOD])])
    bad_rs = raw_resource_spans([raw_scope_spans([GOOD, raw_span(tid=TID15)])])
    p = enc_len(1, good_rs) + enc_len(1, bad_rs)
    c["second-resource-second-span"] = Bad(p, "resource_spans[1].scope_spans[0].spans[1].trace_id", p.index(TID15),
                                           "got 15")
    p = enc_len(1, raw_resource_spans([raw_scope_spans([GOOD]), raw_scope_spans([raw_span(sid=SID7)])]))
    c["second-scope"] = Bad(p, "resource_spans[0].scope_spans[1].spans[0].span_id", p.index(SID7), "got 7")
    res = enc_len(1, kv_bytes(b"service.name", enc_len(1, b"s\xffvc")))
    p = raw_request(GOOD, resource=res)
    c["resource-attribute-invalid-utf8"] = Bad(p, "resource_spans[0].resource.attributes[0].value.string_value",
                                               p.index(b"s\xffvc") + 1, "not valid UTF-8")
    p = raw_request(GOOD, scope=enc_len(1, b"lib\xff"))
    c["scope-name-invalid-utf8"] = Bad(p, "resource_spans[0].scope_spans[0].scope.name", p.index(b"lib\xff") + 3,
                                       "not valid UTF-8")
    p = raw_request(GOOD, scope=enc_len(1, b"lib") + enc_len(2, b"\xff1.0"))
    c["scope-version-invalid-utf8"] = Bad(p, "resource_spans[0].scope_spans[0].scope.version",
                                          p.index(b"\xff1.0"), "not valid UTF-8")
    p = enc_len(1, raw_resource_spans([raw_scope_spans([GOOD])]) + enc_len(3, b"https://\xff"))
    c["resource-schema-url-invalid-utf8"] = Bad(p, "resource_spans[0].schema_url", p.index(b"https://\xff") + 8,
                                                "not valid UTF-8")
    p = enc_len(1, raw_resource_spans([raw_scope_spans([GOOD], schema_url=b"https://\xfe")]))
    c["scope-schema-url-invalid-utf8"] = Bad(p, "resource_spans[0].scope_spans[0].schema_url",
                                             p.index(b"https://\xfe") + 8,
                                             "not valid UTF-8")
    return c


CASES = payload_cases()

# Issue 19: what every protobuf runtime parses is not refused whole. Spans without a usable trace ID, with an ID
# of the wrong length, or with a known field of the wrong wire type (pdata refuses a request holding either, so
# such a span could not be passed on) are rejected alone (reason); invalid UTF-8, an absent span ID, and mistyped
# fields of the containers (request, resource spans, scope spans: not passed on) are taken
# (tests/test_span_rejection.py).
REJECTED_ALONE = {
    **{k: "invalid_trace_id" for k in ("trace-id-15-bytes", "trace-id-17-bytes", "trace-id-empty", "trace-id-missing",
                                       "trace-id-all-zeros", "trace-id-repeated-last-is-bad",
                                       "second-resource-second-span")},
    **{k: "id_length" for k in ("span-id-7-bytes", "span-id-9-bytes", "parent-4-bytes", "parent-16-bytes",
                                "link-trace-id-15-bytes", "link-span-id-3-bytes", "second-scope")},
    **{k: "wire_type" for k in ("trace-id-as-varint", "span-id-as-fixed64", "start-time-as-varint", "flags-as-varint",
                                "kind-as-bytes", "status-as-varint", "status-code-as-bytes", "attribute-as-fixed32",
                                "event-as-varint")},
}
TAKEN = {k for k in CASES if k.endswith("utf8") or k in (
    "span-id-missing", "span-name-bad-first-byte", "request-field-as-varint", "scope-spans-as-varint",
    "spans-as-fixed32", "varint-longer-than-64-bits")}
MALFORMED = {k: v for k, v in CASES.items() if k not in REJECTED_ALONE and k not in TAKEN}


@pytest.mark.parametrize("name", list(REJECTED_ALONE))
def test_a_span_without_usable_ids_is_rejected_alone(name: str):
    """Scenario: the former refusal cases of IDs and span wire types. Guarantees: the span alone is rejected,
    counted under its reason, the rejection naming the field path and byte offset; nothing else of the request is
    lost."""
    case = CASES[name]
    eng = new_engine()
    got = eng.ingest_report(case.payload, now=0.0)
    assert (got.rejected_spans, dict(got.rejected_by_reason)) == (1, {REJECTED_ALONE[name]: 1})
    at, _, rest = got.rejection.partition(": ")
    assert case.field.startswith(at), got.rejection
    assert rest.endswith(f"(at byte {case.offset})"), got.rejection
    assert got.spans == eng.stats()["spans_received"] == len(spans_out(eng.flush(now=100.0)))


@pytest.mark.parametrize("name", sorted(TAKEN))
def test_what_protobuf_runtimes_parse_is_taken(name: str):
    """Scenario: the former refusal cases of container wire types and invalid UTF-8. Guarantees: taken whole, nothing
    rejected; every span leaves byte for byte."""
    case = CASES[name]
    eng = new_engine()
    got = eng.ingest_report(case.payload, now=0.0)
    assert (got.rejected_spans, got.rejection) == (0, "")
    out = [raw for _, _, raw in spans_out(eng.flush(now=100.0))]
    assert len(out) == got.spans and all(raw in case.payload for raw in out)


def test_the_case_table_is_well_formed():
    """Guarantees (of the table itself): every expected offset lies within its payload, and opentelemetry-proto
    reads the good span template fine (so each case is broken only where it says)."""
    ExportTraceServiceRequest.FromString(raw_request(GOOD))
    for name, bad in CASES.items():
        assert 0 <= bad.offset <= len(bad.payload), name


@pytest.mark.parametrize("case", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_payload_is_refused_saying_what_and_where(case: Bad):
    """Scenario: one malformed payload per case. Guarantees: DecodeError (a ValueError and TailsampleError) with
    `.field` the field path and `.offset` the byte offset, both in the message with what is wrong; the payload
    is counted in payloads_rejected and nothing of it is buffered; inspect_payload says the same."""
    eng = new_engine()
    with pytest.raises(tailsample.DecodeError) as info:
        eng.ingest(case.payload, now=0.0)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, tailsample.TailsampleError)
    msg = str(e)
    assert (e.field or "") == case.field, msg
    assert e.offset == case.offset, msg
    if case.field:
        assert f"{case.field} at byte {case.offset}" in msg
    else:
        assert f"at byte {case.offset}" in msg
    assert case.says in msg, msg
    s = assert_stats_invariant(eng)
    assert s["payloads_rejected"] == 1 and s["payloads_received"] == 0
    assert s["spans_received"] == 0 and s["traces_received"] == 0
    assert eng.flush(now=100.0) == []
    with pytest.raises(tailsample.DecodeError) as again:
        tailsample.inspect_payload(case.payload)
    assert (again.value.field, again.value.offset) == (e.field, e.offset)


@pytest.mark.parametrize("depth", [1, 10, 29])
def test_nesting_within_the_limit_is_accepted(depth):
    """Scenario: attribute values nested 1, 10 and 29 arrays deep (29: 64 protobuf message levels, the most a
    request may hold). Guarantees: accepted and passed through."""
    eng = new_engine()
    span = raw_span(extra=raw_attribute(b"k", raw_any_nested(depth)))
    eng.ingest(raw_request(span), now=0.0)
    assert [raw for _, _, raw in spans_out(eng.flush(now=0.0))] == [span]


def test_extreme_nesting_is_rejected_without_a_crash():
    """Scenario: 20000 nested arrays, 20000 nested groups, each on the only span of a request. Guarantees: no
    stack overflow; the span is rejected alone (nothing taken, the reason says nested), not a DecodeError."""
    for extra in (raw_attribute(b"k", raw_any_nested(20_000)), groups(20_000)):
        got = new_engine().ingest_report(raw_request(raw_span(extra=extra)), now=0.0)
        assert (got.spans, got.rejected_spans) == (0, 1)
        assert "nested deeper than 64" in got.rejection


def test_all_zero_parent_span_id_is_a_root():
    """Scenario: a parent span ID of eight zero bytes (an invalid ID, which pdata reads as empty).
    Guarantees: accepted, and the span counts as the root (decision_wait_after_root_received applies)."""
    eng = new_engine(decision_wait="10s", decision_wait_after_root_received="1s")
    eng.ingest(raw_request(raw_span(parent=bytes(8))), now=0.0)
    assert len(spans_out(eng.poll(now=1.1))) == 1


# ---- invalid UTF-8 anywhere protobuf knows a string ------------------------------------------------------

def entity_ref_resource(schema_url: bytes) -> bytes:
    """A Resource with an attribute and one `entity_refs` entry (Resource field 3: EntityRef{schema_url=1,
    type=2, id_keys=3}), all strings in protobuf's schema."""
    ref = enc_len(1, schema_url) + enc_len(2, b"service") + enc_len(3, b"service.name")
    return enc_len(1, kv_bytes(b"service.name", enc_len(1, b"svc"))) + enc_len(3, ref)


def test_invalid_utf8_in_resource_entity_refs_is_taken_as_it_came():
    """Scenario: a Resource whose `entity_refs[0].schema_url` is not UTF-8 (upb refuses the payload; pdata, the
    reference, takes it). Guarantees (issue 19): taken, the resource passed on byte for byte."""
    resource = entity_ref_resource(b"\xff\xfe")
    payload = raw_request(raw_span(), resource=resource)
    with pytest.raises(ProtobufDecodeError):
        ExportTraceServiceRequest.FromString(payload)
    eng = new_engine()
    assert eng.ingest(payload, now=0.0) == 1
    out = eng.flush(now=0.0)
    assert len(out) == 1 and enc_len(1, resource) in out[0]


def test_valid_resource_entity_refs_pass_through():
    """Scenario: a Resource with a well-formed `entity_refs` entry. Guarantees: accepted, re-emitted as is."""
    resource = entity_ref_resource(b"https://opentelemetry.io/schemas/1.30.0")
    eng = new_engine()
    eng.ingest(raw_request(raw_span(), resource=resource), now=0.0)
    out = eng.flush(now=0.0)
    parsed = ExportTraceServiceRequest.FromString(out[0])
    assert parsed.resource_spans[0].resource.SerializeToString() == resource


# ---- truncation ----------------------------------------------------------------------------------------------

def rich_payload(rng: random.Random, resources: int = 1) -> bytes:
    groups_ = []
    for r in range(resources):
        tid = trace_id(rng)
        spans = []
        for k in range(3):
            s = make_span(tid, span_id(rng), parent=span_id(rng) if k else b"", name=f"op-{k}",
                          attributes={"s": "é" * k, "i": -k, "d": 0.5, "b": True, "a": [1, "x"], "m": {"k": "v"}},
                          status=2 if k == 1 else 0, flags=1)
            s.events.add(time_unix_nano=7, name="event").attributes.append(kv("e", "v"))
            s.links.add(trace_id=trace_id(rng), span_id=span_id(rng), trace_state="a=b")
            spans.append(s)
        scope = InstrumentationScope(name="lib", version="1.0", attributes=[kv("sa", 1)])
        groups_.append(make_resource_spans(service(f"svc-{r}", zone="z"), [
            make_scope_spans(spans, scope=scope, schema_url="https://example.com/scope")],
            schema_url="https://example.com/resource"))
    return request(*groups_)


def test_every_truncation_of_a_payload_is_refused(rng):
    """Scenario: a valid one-resource payload (attributes of every kind, events, links, status, UTF-8 text) cut
    after each of its bytes. Guarantees: every cut is a DecodeError within resource_spans[0] at an offset inside
    the cut, never another exception or a crash; nothing is buffered; the whole payload is then accepted."""
    payload = rich_payload(rng)
    eng = new_engine()
    for k in range(1, len(payload)):
        with pytest.raises(tailsample.DecodeError) as info:
            eng.ingest(payload[:k], now=0.0)
        e = info.value
        assert e.field is not None and e.field.startswith("resource_spans[0]"), (k, str(e))
        assert e.offset is not None and 0 <= e.offset <= k, (k, str(e))
        assert f"at byte {e.offset}" in str(e)
    s = assert_stats_invariant(eng)
    assert s["payloads_rejected"] == len(payload) - 1
    assert s["spans_received"] == 0 and s["traces_received"] == 0
    eng.ingest(payload, now=0.0)
    assert len(spans_out(eng.flush(now=0.0))) == 3


def test_truncation_between_resources_is_a_shorter_valid_payload(rng):
    """Scenario: a three-resource payload cut after each byte. Guarantees: a cut exactly between two
    resource_spans is a valid shorter request (accepted, with the spans protobuf reads in it); every other cut
    is a DecodeError."""
    payload = rich_payload(rng, resources=3)
    req = ExportTraceServiceRequest.FromString(payload)
    boundaries = {0}
    pos = 0
    for rs in req.resource_spans:
        pos += len(enc_len(1, rs.SerializeToString()))
        boundaries.add(pos)
    assert pos == len(payload)
    for k in range(len(payload)):
        cut = payload[:k]
        if k in boundaries:
            want = sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(cut).resource_spans
                       for ss in rs.scope_spans)
            assert tailsample.inspect_payload(cut)["spans"] == want
        else:
            with pytest.raises(tailsample.DecodeError):
                tailsample.inspect_payload(cut)


# ---- a refused payload changes nothing -----------------------------------------------------------------------

def corrupt_tail(kind: str) -> bytes:
    """A last resource_spans that is broken in the way `kind` says (appended after valid ones)."""
    if kind == "unclosed-group":
        return enc_len(1, raw_resource_spans([raw_scope_spans([GOOD, raw_span(extra=enc_tag(50, SGROUP))])]))
    if kind == "invalid-wire-type":
        return enc_len(1, raw_resource_spans([raw_scope_spans([GOOD + bytes([(12 << 3) | 6])])]))
    if kind == "varint-overflow":
        return enc_len(1, raw_resource_spans([raw_scope_spans([GOOD + enc_tag(6, VARINT) + b"\xff" * 10 + b"\x01"])]))
    if kind == "truncated":
        return enc_len(1, raw_resource_spans([raw_scope_spans([GOOD])]))[:-3]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["unclosed-group", "invalid-wire-type", "varint-overflow", "truncated"])
@pytest.mark.parametrize("policies", ["always", "errors"])
def test_a_refused_payload_leaves_buffered_traces_untouched(kind, policies, rng):
    """Scenario: traces X and Y buffered; then a payload with more spans of X (one an ERROR), a new trace Z and,
    last, a broken part; then more good spans. Compared with an engine that never saw the broken payload.
    Guarantees: DecodeError; the same output, span for span (X without the refused spans, no Z), and the same
    counters except payloads_rejected."""
    pol = {"name": "p", "type": "always_sample"} if policies == "always" else \
        {"name": "p", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    x, y, z = trace_id(rng), trace_id(rng), trace_id(rng)
    first = make_request(service("a"), [make_span(x, span_id(rng)), make_span(y, span_id(rng), status=2)])
    refused = make_request(service("a"), [make_span(x, span_id(rng), status=2), make_span(z, span_id(rng))]) \
        + corrupt_tail(kind)
    later = make_request(service("b"), [make_span(y, span_id(rng)), make_span(x, span_id(rng), parent=x[:8])])

    def run(with_refused: bool) -> tuple[list[tuple[bytes, bytes, bytes]], dict[str, int]]:
        eng = new_engine(pol, decision_wait="5s")
        eng.ingest(first, now=0.0)
        if with_refused:
            with pytest.raises(tailsample.DecodeError):
                eng.ingest(refused, now=1.0)
        eng.ingest(later, now=2.0)
        out = spans_out(eng.poll(now=5.1)) + spans_out(eng.flush(now=9.0))
        return sorted(out), assert_stats_invariant(eng)

    out, stats = run(True)
    control, control_stats = run(False)
    assert out == control
    assert z not in {tid for tid, _, _ in out}
    assert stats["payloads_rejected"] == 1 and control_stats["payloads_rejected"] == 0
    del stats["payloads_rejected"], control_stats["payloads_rejected"]
    stats.pop("memory_bytes"), control_stats.pop("memory_bytes")
    assert stats == control_stats


# ---- fuzzing -----------------------------------------------------------------------------------------------

FUZZ_ENGINE_BLOCK = [
    {"name": "all", "type": "always_sample"},
    {"name": "attr", "type": "string_attribute", "string_attribute": {"key": "s", "values": ["x"]}},
]


def accepted_or_decode_error(eng: tailsample.Engine, data: bytes) -> bool:
    try:
        eng.ingest(data, now=0.0)
    except tailsample.DecodeError as e:
        assert e.offset is not None and 0 <= e.offset <= len(data)
        assert f"at byte {e.offset}" in str(e)
        return False
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes_are_refused_or_accepted_never_anything_else(data):
    """Scenario: arbitrary bytes. Guarantees: DecodeError or accepted, nothing else; if accepted, every span it
    held comes out of flush (always_sample) and the counters add up."""
    eng = new_engine(FUZZ_ENGINE_BLOCK)
    if accepted_or_decode_error(eng, data):
        n = tailsample.inspect_payload(data)["spans"]
        assert len(spans_out(eng.flush(now=0.0))) == n
        s = assert_stats_invariant(eng)
        assert s["spans_received"] == n
    else:
        assert eng.stats()["payloads_rejected"] == 1


BASE = rich_payload(random.Random("fuzz-base"), resources=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.sampled_from(["set", "del", "ins"]),
                                st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_payloads_are_refused_or_accepted_never_anything_else(edits):
    """Scenario: a valid two-resource payload with a few bytes changed, deleted or inserted. Guarantees:
    DecodeError or accepted; if accepted, flush (always_sample) returns exactly the spans it held, byte for byte,
    in payloads opentelemetry-proto parses when it parses the input."""
    data = bytearray(BASE)
    for pos, op, byte in edits:
        pos = min(pos, len(data) - 1)
        if op == "set":
            data[pos] = byte
        elif op == "del":
            del data[pos]
        else:
            data.insert(pos, byte)
    eng = new_engine(FUZZ_ENGINE_BLOCK)
    if accepted_or_decode_error(eng, bytes(data)):
        out = eng.flush(now=0.0)
        n = tailsample.inspect_payload(bytes(data))["spans"]
        kept = spans_out(out)
        assert len(kept) == n
        assert all(raw in bytes(data) for _, _, raw in kept)
        assert_stats_invariant(eng)
        try:  # invalid UTF-8 passes through as it came (issue 19); otherwise the output parses as the input did
            ExportTraceServiceRequest.FromString(bytes(data))
        except ProtobufDecodeError:
            return
        for p in out:
            ExportTraceServiceRequest.FromString(p)


def test_the_engine_is_never_laxer_than_protobuf():
    """Scenario: 20000 seeded random mutations of a valid payload (whose resources hold only ASCII text).
    Guarantees: whatever the engine accepts, opentelemetry-proto parses too, with the same number of spans
    (taken or rejected alone), but for invalid UTF-8, which the engine takes as pdata (the reference) does."""
    rng = random.Random("laxer")
    accepted = 0
    for _ in range(20_000):
        data = bytearray(BASE)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            r = rng.random()
            if r < 0.6:
                data[pos] = rng.randrange(256)
            elif r < 0.8:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        try:
            got = new_engine().ingest_report(bytes(data), now=0.0)
        except tailsample.DecodeError:
            continue
        accepted += 1
        try:
            req = ExportTraceServiceRequest.FromString(bytes(data))
        except ProtobufDecodeError as e:
            assert "UTF-8" in str(e), e
            continue
        assert got.spans + got.rejected_spans == sum(len(ss.spans) for rs in req.resource_spans
                                                     for ss in rs.scope_spans)
    assert accepted > 1000
