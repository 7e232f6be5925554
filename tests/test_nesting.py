"""One nesting rule for every value kind (issue 18, item 3), proven with the real Python protobuf runtime.

Rule: an accepted request holds at most 64 protobuf message levels, counting the ExportTraceServiceRequest as 1
and every nested message as one more (ResourceSpans 2, ScopeSpans and Resource 3, Span and InstrumentationScope
4, KeyValue and events/links 5 ...; a kvlist adds 3 levels, an array 2). The Python (upb), C++ and Java runtimes
refuse past 100. A span over the rule is rejected alone: the rest of its request is taken and the receivers
answer an OTLP partial success; a resource or scope over it rejects the spans under it.
"""

from __future__ import annotations

import json
import random
import urllib.request
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp_builders import enc_fixed64, enc_len, enc_uint, new_engine, span_id, spans_out, trace_id
from service_harness import get_json, service_config, serving, serving_process, sink, wait_for
from tailsample.collector.fileformat import json_to_proto, proto_to_json
from tailsample.collector.otlp_status import decode_partial_success

MAX_LEVELS = 64
RUNTIME_LIMIT = 100
T0 = 1_700_000_000_000_000_000

# Where an attribute's AnyValue sits, in message levels, and how to put a KeyValue there.
BASE = {"span": 6, "event": 7, "link": 7, "resource": 5, "scope": 6}
STEP = {"kvlist": 3, "array": 2}


def nested(kind: str, n: int) -> bytes:
    """An AnyValue of `n` kvlists or arrays around a string: its deepest message is STEP[kind] * n below it."""
    value = enc_len(1, b"leaf")
    for _ in range(n):
        if kind == "kvlist":
            value = enc_len(6, enc_len(1, enc_len(1, b"k") + enc_len(2, value)))
        else:
            value = enc_len(5, enc_len(1, value))
    return value


def key_value(value: bytes) -> bytes:
    return enc_len(1, b"deep") + enc_len(2, value)


def span(tid: bytes, sid: bytes, *, error: bool = True, extra: bytes = b"") -> bytes:
    out = enc_len(1, tid) + enc_len(2, sid) + enc_len(5, b"op") + enc_uint(6, 2)
    out += enc_fixed64(7, T0) + enc_fixed64(8, T0 + 5_000_000)
    if error:
        out += enc_len(15, enc_uint(3, 2))
    return out + extra


def resource_spans(spans: list[bytes], *, resource: bytes = b"", scope: bytes = b"") -> bytes:
    res = enc_len(1, enc_len(1, b"service.name") + enc_len(2, enc_len(1, b"api"))) + resource
    ss = enc_len(1, enc_len(1, b"lib") + scope) + b"".join(enc_len(2, s) for s in spans)
    return enc_len(1, enc_len(1, res) + enc_len(2, ss))


def deep_request(where: str, kind: str, n: int, rng: random.Random) -> tuple[bytes, list[bytes], list[bytes]]:
    """A request with the value `n` deep at `where`, and good spans elsewhere: (payload, the good spans, the
    spans holding the value or under it: those rejected when `n` is over the limit)."""
    kv = key_value(nested(kind, n))
    good = [span(trace_id(rng), span_id(rng)) for _ in range(3)]
    if where in ("span", "event", "link"):
        field = {"span": enc_len(9, kv), "event": enc_len(11, enc_len(2, b"ev") + enc_len(3, kv)),
                 "link": enc_len(13, enc_len(1, trace_id(rng)) + enc_len(2, span_id(rng)) + enc_len(4, kv))}[where]
        holder = span(trace_id(rng), span_id(rng), extra=field)
        return resource_spans([good[0], holder, good[1]]) + resource_spans([good[2]]), good, [holder]
    under = [span(trace_id(rng), span_id(rng)) for _ in range(2)]
    deep = (resource_spans(under, resource=enc_len(1, kv)) if where == "resource"
            else resource_spans(under, scope=enc_len(3, kv)))
    return resource_spans(good[:2]) + deep + resource_spans(good[2:]), good, under


def levels(msg: Message) -> int:
    """The message levels of a parsed message (itself 1), walked by the reference runtime's reflection."""
    deepest = 0
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        for m in value if fd.is_repeated else [value]:
            deepest = max(deepest, levels(m))
    return 1 + deepest


def deepest_within(where: str, kind: str) -> int:
    return (MAX_LEVELS - BASE[where]) // STEP[kind]


CASES = [(w, k) for w in BASE for k in STEP]


@pytest.mark.parametrize(("where", "kind"), CASES, ids=[f"{w}-{k}" for w, k in CASES])
def test_the_deepest_accepted_request_parses_and_so_does_its_kept_output(where, kind, rng):
    """Scenario: a kvlist or an array nested as deep as the rule allows on a span, an event, a link, the
    resource or the scope. Guarantees: opentelemetry-proto (upb) parses the request and counts at most 64 levels
    in it; the engine takes every span; the kept output parses again, every span byte for byte."""
    n = deepest_within(where, kind)
    payload, good, holders = deep_request(where, kind, n, rng)
    parsed = ExportTraceServiceRequest.FromString(payload)
    assert MAX_LEVELS - STEP[kind] < levels(parsed) <= MAX_LEVELS
    eng = new_engine()
    got = eng.ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans, got.rejection) == (len(good) + len(holders), 0, "")
    out = eng.flush(now=100.0)
    for p in out:
        assert levels(ExportTraceServiceRequest.FromString(p)) <= MAX_LEVELS
    assert sorted(raw for _, _, raw in spans_out(out)) == sorted(good + holders)


@pytest.mark.parametrize(("where", "kind"), CASES, ids=[f"{w}-{k}" for w, k in CASES])
def test_one_step_deeper_is_rejected_alone(where, kind, rng):
    """Scenario: the same, one kvlist or array deeper (past 64 levels), among good spans of other resources.
    Guarantees: only the span holding it (or the spans under the resource or scope holding it) are rejected,
    counted with the reason; the good spans are taken and leave in output the runtime parses."""
    payload, good, holders = deep_request(where, kind, deepest_within(where, kind) + 1, rng)
    rejected = len(holders)
    eng = new_engine()
    got = eng.ingest_report(payload, now=0.0)
    assert (got.spans, got.rejected_spans) == (len(good), rejected)
    assert "nested deeper than 64 protobuf message levels" in got.rejection
    assert got.rejection.startswith("resource_spans[0]" if where in ("span", "event", "link") else "resource_spans[1]")
    assert eng.stats()["spans_rejected"] == rejected
    out = eng.flush(now=100.0)
    assert sorted(raw for _, _, raw in spans_out(out)) == sorted(good)
    for p in out:
        ExportTraceServiceRequest.FromString(p)


def test_the_probe_kvlist_32_deep_is_rejected_alone(rng):
    """Scenario: the operator's probe: a kvlist 32 deep on a span (102 levels) beside 200 error traces.
    Guarantees: the Python runtime refuses such a request whole (what the backend did to the kept batch); the
    engine rejects that span alone and the 200 traces' kept output parses."""
    holder = span(trace_id(rng), span_id(rng), extra=enc_len(9, key_value(nested("kvlist", 32))))
    good = [span(trace_id(rng), span_id(rng)) for _ in range(200)]
    payload = resource_spans([*good[:100], holder, *good[100:]])
    with pytest.raises(ProtobufDecodeError):
        ExportTraceServiceRequest.FromString(payload)
    eng = new_engine()
    assert eng.ingest_report(payload, now=0.0).rejected_spans == 1
    out = eng.flush(now=100.0)
    assert sum(len(ss.spans) for p in out for rs in ExportTraceServiceRequest.FromString(p).resource_spans
               for ss in rs.scope_spans) == 200


# ---- through the real service --------------------------------------------------------------------------------

def post(url: str, body: bytes, ctype: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def export_grpc(address: str, body: bytes) -> bytes:
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                              request_serializer=None, response_deserializer=None)
        return bytes(call(body, timeout=10))


@pytest.mark.parametrize("protocol", ["http-protobuf", "http-json", "grpc"])
def test_the_service_answers_a_partial_success_and_delivers_the_rest(protocol, rng):
    """Scenario: one request over OTLP/HTTP (protobuf, JSON) or gRPC holding 20 error traces, one error span at
    the first rejected depth (a kvlist 20 deep: 66 levels) and one trace at the deepest accepted (19: 63).
    Guarantees: the answer is a partial success naming 1 rejected span and why; the backend (which parses every
    request with the Python runtime) gets the 21 other traces whole and never the rejected span; the deepest
    accepted trace is readable at /debug/kept/<id>; the rejection is counted."""
    good_ids = [trace_id(rng) for _ in range(20)]
    good = [span(t, span_id(rng)) for t in good_ids]
    deepest_id, rejected_id = trace_id(rng), trace_id(rng)
    deepest = span(deepest_id, span_id(rng), extra=enc_len(9, key_value(nested("kvlist", 19))))
    over = span(rejected_id, span_id(rng), extra=enc_len(9, key_value(nested("kvlist", 20))))
    payload = resource_spans([*good[:10], over, deepest, *good[10:]])
    with sink() as backend:
        exporter = {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}}
        with serving(service_config(exporters=exporter, debug={})) as s:
            if protocol == "grpc":
                rejected, message = decode_partial_success(export_grpc(s.address("otlp/grpc"), payload))
            elif protocol == "http-protobuf":
                status, body = post(s.url(), payload, "application/x-protobuf")
                assert status == 200
                rejected, message = decode_partial_success(body)
            else:
                status, body = post(s.url(), proto_to_json(payload).encode(), "application/json")
                assert status == 200
                partial = json.loads(body)["partialSuccess"]
                rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
            assert rejected == 1
            assert message.startswith("1 spans rejected: resource_spans[0].scope_spans[0].spans[10]")
            assert "nested deeper than 64 protobuf message levels" in message
            want = {t.hex() for t in [*good_ids, deepest_id]}
            wait_for(lambda: {t for t, *_ in backend.spans()} >= want, what="the kept traces at the backend")
            assert rejected_id.hex() not in {t for t, *_ in backend.spans()}
            status, doc = get_json(f"http://{s.address('metrics')}/debug/kept/{deepest_id.hex()}")
            assert status == 200, doc
            assert levels(ExportTraceServiceRequest.FromString(_json_to_proto(doc))) <= MAX_LEVELS
            transport = "grpc" if protocol == "grpc" else "http"
            assert s.metric('tailsample_engine_spans_rejected_total{processor="tail_sampling",reason="too_deep"}') == 1
            assert s.metric(f'otelcol_receiver_refused_spans_total{{receiver="otlp",transport="{transport}"}}') == 1
            assert s.metric(f'otelcol_receiver_accepted_spans_total{{receiver="otlp",transport="{transport}"}}') == 21


@pytest.mark.parametrize("where", ["in-process", "process"])
def test_the_probe_through_the_service_loses_no_unrelated_trace(rng, where, tmp_path):
    """Scenario: the operator's probe: 200 error traces in 10 requests, one of them also holding an error span
    with a kvlist 32 deep (102 levels), a `batch` processor after tail_sampling gathering everything, exported
    over gRPC to a backend that parses every request with the Python runtime (as the probe's backend did).
    Guarantees: the poisoned span is rejected alone (its request answered with a partial success); all 200
    traces arrive (the probe lost 146 of them)."""
    ids = [trace_id(rng) for _ in range(200)]
    requests = [[span(t, span_id(rng)) for t in ids[i:i + 20]] for i in range(0, 200, 20)]
    # In the first request: the one the attribute inventory samples, which parses with the Python runtime.
    requests[0].insert(7, span(trace_id(rng), span_id(rng), extra=enc_len(9, key_value(nested("kvlist", 32)))))
    with sink() as backend:
        cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
                             processors={"batch": {"send_batch_size": 10_000, "timeout": "300ms"}},
                             pipeline_processors=["tail_sampling", "batch"])
        served = serving(cfg) if where == "in-process" else serving_process(cfg, tmp_path)
        with served as s:
            answers = [decode_partial_success(post(s.url(), resource_spans(r), "application/x-protobuf")[1])[0]
                       for r in requests]
            assert answers == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            # Nothing asked for the debug endpoints: the kept spans are not served to whoever reaches the port.
            status, doc = get_json(f"http://{s.address('metrics')}/debug/kept")
            assert (status, doc.get("disabled")) == (404, True)
            wait_for(lambda: {t for t, *_ in backend.spans()} == {t.hex() for t in ids}, timeout=20,
                     what="all 200 error traces at the backend")
            assert s.metric('otelcol_exporter_send_failed_spans_total{exporter="otlp"}') == 0


def _json_to_proto(doc: Any) -> bytes:
    return json_to_proto(json.dumps(doc))


def test_a_request_of_rejected_spans_alone_is_a_partial_success(rng):
    """Scenario: a request whose only span is over the rule. Guarantees: 200 with a partial success naming
    it (the request was valid protobuf: not a 400); nothing reaches the backend."""
    payload = resource_spans([span(trace_id(rng), span_id(rng), extra=enc_len(9, key_value(nested("array", 40))))])
    with sink() as backend:
        exporter = {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}}
        with serving(service_config(exporters=exporter)) as s:
            status, body = post(s.url(), payload, "application/x-protobuf")
            assert status == 200
            assert decode_partial_success(body)[0] == 1
            assert s.metric('tailsample_engine_spans_rejected_total{processor="tail_sampling",reason="too_deep"}') == 1
    assert backend.payloads == []

