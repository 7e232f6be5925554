"""Span-level validation (issue 19, items 5 and 6): what the reference takes is taken, as it came; what cannot
be used is rejected alone, counted by reason, and answered as an OTLP partial success.

Taken and passed on byte for byte: invalid UTF-8 in strings (pdata holds them as Go strings; they read as "" to
the policies), an empty span ID. Rejected alone: spans without a usable trace ID (absent, empty, not 16 bytes, all
zeros), spans with a span, parent or link ID of the wrong length, and spans holding a known field of the wrong
wire type (upb, Go's protobuf and C++ read it as unknown, but pdata refuses a request holding either, so such a
span could not be passed on: it would cost every trace of its kept batch downstream).
"""

from __future__ import annotations

import json
import random
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp_builders import (
    enc_fixed32,
    enc_len,
    enc_tag,
    enc_uint,
    new_engine,
    raw_request,
    raw_resource_spans,
    raw_scope_spans,
    raw_span,
    span_id,
    spans_out,
    trace_id,
)
from service_harness import service_config, serving, sink, wait_for
from tailsample.collector.fileformat import proto_to_json
from tailsample.collector.otlp_status import decode_partial_success
from tailsample.engine import REJECT_REASONS
from tailsample.errors import DecodeError
from tailsample.incident.tree import build_traces

ERROR_STATUS = enc_len(15, enc_uint(3, 2))

# (name, span bytes, reason, the rejection message names)
UNUSABLE = [
    ("trace-id-all-zero", raw_span(b"\0" * 16), "invalid_trace_id", "spans[7].trace_id: trace_id is all zeros"),
    ("trace-id-empty", raw_span(b""), "invalid_trace_id", "spans[7].trace_id: trace_id is empty or absent"),
    ("trace-id-absent", raw_span(None), "invalid_trace_id", "spans[7].trace_id: trace_id is empty or absent"),
    ("trace-id-15-bytes", raw_span(b"\1" * 15), "invalid_trace_id", "trace_id must be 16 bytes or empty, got 15"),
    ("trace-id-as-varint", raw_span(None, extra=enc_uint(1, 5)), "wire_type", "field 1 has wire type"),
    ("span-id-9-bytes", raw_span(sid=b"\2" * 9), "id_length", "spans[7].span_id: span_id must be 8 bytes"),
    ("parent-3-bytes", raw_span(parent=b"\3" * 3), "id_length", "parent_span_id must be 8 bytes or empty, got 3"),
    ("link-span-id-2-bytes", raw_span(extra=enc_len(13, enc_len(1, b"\4" * 16) + enc_len(2, b"\5\5"))),
     "id_length", "spans[7].links[0]: span_id must be 8 bytes or empty, got 2"),
    ("kind-length-delimited", raw_span(extra=enc_len(6, b"\x02")), "wire_type", "field 6 has wire type"),
    ("name-as-varint", raw_span(name=None, extra=enc_uint(5, 7)), "wire_type", "field 5 has wire type"),
    ("start-as-fixed32", raw_span(start=None, extra=enc_fixed32(7, 9)), "wire_type", "field 7 has wire type"),
    ("trace-state-as-varint", raw_span(extra=enc_uint(3, 1)), "wire_type", "field 3 has wire type"),
    ("status-code-length-delimited", raw_span(extra=enc_len(15, enc_len(3, b"\x02"))), "wire_type",
     "spans[7].status: field 3 has wire type"),
    ("attribute-int-as-string", raw_span(extra=enc_len(9, enc_len(1, b"n") + enc_len(2, enc_len(3, b"1")))),
     "wire_type", "field 3 has wire type"),
    ("event-time-as-varint", raw_span(extra=enc_len(11, enc_uint(1, 5))), "wire_type", "spans[7].events[0]"),
    ("link-flags-as-varint", raw_span(extra=enc_len(13, enc_uint(6, 5))), "wire_type", "spans[7].links[0]"),
    ("attributes-as-varint", raw_span(extra=enc_uint(9, 1)), "wire_type", "field 9 has wire type"),
    ("span-group-for-events", raw_span(extra=enc_tag(11, 3) + enc_uint(1, 1) + enc_tag(11, 4)), "wire_type",
     "field 11 has wire type"),
]


def good_spans(rng: random.Random, n: int) -> tuple[list[bytes], list[bytes]]:
    ids = [trace_id(rng) for _ in range(n)]
    return ids, [raw_span(t, span_id(rng), extra=ERROR_STATUS) for t in ids]


@pytest.mark.parametrize(("span", "reason", "why"), [c[1:] for c in UNUSABLE], ids=[c[0] for c in UNUSABLE])
def test_an_unusable_span_is_rejected_alone(span, reason, why, rng):
    """Scenario: 20 good traces and one span that cannot be used, in one request.
    Guarantees: that span alone is rejected, counted under its reason with the first reason named; the 20 traces
    are taken and leave byte for byte; the engine's stats count it by reason."""
    _, good = good_spans(rng, 20)
    payload = raw_request(*good[:7], span, *good[7:])
    ExportTraceServiceRequest.FromString(payload)  # every protobuf runtime parses it
    eng = new_engine()
    got = eng.ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans, dict(got.rejected_by_reason)) == (20, 1, {reason: 1})
    assert got.rejection.startswith("resource_spans[0].scope_spans[0].spans[7]")
    assert why in got.rejection
    stats = eng.stats()
    assert stats["spans_rejected"] == 1
    assert {r: stats[f"spans_rejected_{r}"] for r in REJECT_REASONS} == {r: int(r == reason) for r in REJECT_REASONS}
    assert sorted(raw for _, _, raw in spans_out(eng.flush(now=100.0))) == sorted(good)


def test_reasons_are_counted_each_and_the_first_is_named(rng):
    """Scenario: one request with a zero trace ID, two spans with wrong-length IDs and a good span.
    Guarantees: three rejected, counted per reason; the message names the first."""
    _, good = good_spans(rng, 1)
    payload = raw_request(raw_span(sid=b"\1"), raw_span(b"\0" * 16), *good, raw_span(parent=b"\1" * 9))
    got = new_engine().ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans) == (1, 3)
    assert dict(got.rejected_by_reason) == {"invalid_trace_id": 1, "id_length": 2}
    assert got.rejection.startswith("resource_spans[0].scope_spans[0].spans[0].span_id: ")
    clean = new_engine().ingest_report(raw_request(*good), now=0.0)
    assert (clean.rejected_spans, clean.rejection, dict(clean.rejected_by_reason)) == (0, "", {})


NOT_UTF8 = b"caf\xc3(\xff"

# (name, span bytes built from a trace ID) for what is taken as it came
TAKEN = [
    ("name-not-utf8", lambda t: raw_span(t, name=NOT_UTF8)),
    ("attribute-value-not-utf8", lambda t: raw_span(t, extra=enc_len(9, enc_len(1, b"http.route")
                                                                       + enc_len(2, enc_len(1, NOT_UTF8))))),
    ("attribute-key-not-utf8", lambda t: raw_span(t, extra=enc_len(9, enc_len(1, NOT_UTF8)
                                                                     + enc_len(2, enc_len(1, b"v"))))),
    ("event-name-and-status-message-not-utf8", lambda t: raw_span(t, extra=enc_len(11, enc_len(2, NOT_UTF8))
                                                                  + enc_len(15, enc_len(2, NOT_UTF8)))),
    ("empty-span-id", lambda t: raw_span(t, b"")),
    ("absent-span-id", lambda t: raw_span(t, None)),
]


@pytest.mark.parametrize("make", [c[1] for c in TAKEN], ids=[c[0] for c in TAKEN])
def test_what_the_reference_takes_is_taken_as_it_came(make, rng):
    """Scenario: a span holding invalid UTF-8 or an empty span ID, among good spans, under a resource and scope
    that hold invalid UTF-8 and unknown fields too.
    Guarantees: every span is taken; the span, resource and scope leave byte for byte; explain and the trace
    tree read it without failing (invalid strings read as empty)."""
    tid = trace_id(rng)
    _, good = good_spans(rng, 3)
    odd = make(tid)
    resource = enc_len(1, enc_len(1, b"service.name") + enc_len(2, enc_len(1, NOT_UTF8))) + enc_len(9, b"x")
    scope = enc_len(1, NOT_UTF8) + enc_uint(9, 1)
    payload = enc_len(1, raw_resource_spans([raw_scope_spans([good[0], odd, *good[1:]], scope=scope)],
                                            resource=resource))
    eng = new_engine()
    got = eng.ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans) == (4, 0)
    assert eng.explain(tid)["trace_id"] == tid.hex()
    out = eng.flush(now=100.0)
    assert sorted(raw for _, _, raw in spans_out(out)) == sorted([odd, *good])
    joined = b"".join(out)
    assert enc_len(1, resource) in joined and enc_len(1, scope) in joined


def test_policies_read_invalid_utf8_as_empty(rng):
    """Scenario: string_attribute policies on a value with invalid UTF-8, by regex and exactly.
    Guarantees: the value reads as "" (the engine never hands out invalid UTF-8): a regex on its valid prefix
    does not match, nor does the exact value; explain reads the trace; nothing fails."""
    tid = trace_id(rng)
    span = raw_span(tid, name=NOT_UTF8, extra=enc_len(9, enc_len(1, b"route") + enc_len(2, enc_len(1, NOT_UTF8))))
    for values, regex in ((["caf.*"], True), (["caf"], False)):
        pol = {"name": "s", "type": "string_attribute",
               "string_attribute": {"key": "route", "values": values, "enabled_regex_matching": regex}}
        eng = new_engine(pol)
        assert eng.ingest(raw_request(span), now=0.0) == 1
        assert eng.explain(tid)["trace_id"] == tid.hex()
        assert spans_out(eng.flush(now=100.0)) == []
    # The Python trace tree reads each invalid sequence as U+FFFD.
    tree = build_traces([raw_request(span)])[tid.hex()]
    assert [n.name for n in tree.roots] == ["caf\ufffd(\ufffd"]


def test_json_output_writes_invalid_utf8_as_replacement_characters(rng):
    """Scenario: kept spans holding invalid UTF-8 in a name, an attribute key and value, and the scope name,
    written as OTLP/JSON (file exporter `format: json`, the debug exporter, /debug/kept).
    Guarantees: each invalid sequence becomes U+FFFD, as Go's encoding/json writes it; everything else as
    always; a payload that is malformed otherwise is still a DecodeError."""
    tid = trace_id(rng)
    span = raw_span(tid, name=NOT_UTF8, extra=enc_len(9, enc_len(1, b"k\xff") + enc_len(2, enc_len(1, b"ok"))))
    eng = new_engine()
    eng.ingest(raw_request(span, scope=enc_len(1, b"lib\xfe") + enc_len(2, b"1.0")), now=0.0)
    doc = json.loads(proto_to_json(b"".join(eng.flush(now=100.0))))
    ss = doc["resourceSpans"][0]["scopeSpans"][0]
    assert ss["scope"] == {"name": "lib\ufffd", "version": "1.0"}
    out = ss["spans"][0]
    assert (out["traceId"], out["name"]) == (tid.hex(), "caf\ufffd(\ufffd")
    assert out["attributes"] == [{"key": "k\ufffd", "value": {"stringValue": "ok"}}]
    with pytest.raises(DecodeError):
        proto_to_json(raw_request(span)[:-3])


# ---- the Proof through the real service --------------------------------------------------------------------

def post(url: str, body: bytes) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return bytes(resp.read())


def export_grpc(address: str, body: bytes) -> bytes:
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                              request_serializer=None, response_deserializer=None)
        return bytes(call(body, timeout=10))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_21_traces_with_one_unusable_span_keep_20(protocol, rng):
    """Scenario: one request of 21 error traces over OTLP/HTTP or gRPC, one of whose spans has an all-zero
    trace ID (the 21st trace's ID is zero).
    Guarantees: the answer is a partial success with rejected_spans 1 naming the span; the backend (parsing
    with the Python runtime) receives the 20 other traces; the rejection is counted by reason."""
    ids, good = good_spans(rng, 20)
    payload = raw_request(*good[:13], raw_span(b"\0" * 16, span_id(rng), extra=ERROR_STATUS), *good[13:])
    with sink() as backend:
        exporter = {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}}
        with serving(service_config(exporters=exporter)) as s:
            answer = export_grpc(s.address("otlp/grpc"), payload) if protocol == "grpc" else post(s.url(), payload)
            rejected, message = decode_partial_success(answer)
            assert rejected == 1
            assert message == ("1 spans rejected: resource_spans[0].scope_spans[0].spans[13].trace_id: trace_id is "
                               f"all zeros (an invalid trace ID) (at byte {message.split('at byte ')[1]}")
            wait_for(lambda: {t for t, *_ in backend.spans()} == {t.hex() for t in ids},
                     what="the 20 traces at the backend")
            assert s.metric('tailsample_engine_spans_rejected_total{processor="tail_sampling",'
                            'reason="invalid_trace_id"}') == 1
            assert s.metric('tailsample_engine_spans_rejected_total{processor="tail_sampling",'
                            'reason="too_deep"}') == 0
            transport = "grpc" if protocol == "grpc" else "http"
            assert s.metric(f'otelcol_receiver_accepted_spans_total{{receiver="otlp",transport="{transport}"}}') == 20
    assert len(backend.spans()) == 20


@pytest.mark.parametrize(("where", "resource", "scope"), [
    ("resource", enc_len(1, enc_len(1, b"service.name") + enc_len(2, enc_len(1, b"cart"))) + enc_len(2, b"x"), None),
    ("scope", None, enc_len(1, b"lib") + enc_uint(2, 1)),
])
def test_a_mistyped_field_of_a_resource_or_scope_rejects_the_spans_under_it(where, resource, scope, rng):
    """Scenario: a resource (dropped_attributes_count as bytes) or a scope (version as a varint) with a known
    field of the wrong wire type, holding two spans, beside a well-formed resource holding one.
    Guarantees: the two spans under it are rejected (their resource or scope is passed on as it came with them,
    which pdata would refuse), counted as wire_type; the other span is taken."""
    _, good = good_spans(rng, 3)
    payload = enc_len(1, raw_resource_spans([raw_scope_spans(good[:2], scope=scope)], resource=resource))
    payload += raw_request(good[2])
    ExportTraceServiceRequest.FromString(payload)
    got = new_engine().ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans, dict(got.rejected_by_reason)) == (1, 2, {"wire_type": 2})
    holder = "resource" if where == "resource" else "scope_spans[0].scope"
    assert got.rejection.startswith(f"resource_spans[0].{holder}")
