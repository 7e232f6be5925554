"""Kept output cut at `tailsample.max_payload_bytes` whatever the input shape (issue 18, item 4), through the real
service to a gRPC backend with the standard 4 MiB receive limit.

The probe: a kept 100,000-span trace (6.8 MB) left as one payload and the backend refused it with
RESOURCE_EXHAUSTED, which the exporter does not retry: the whole trace was lost.
"""

from __future__ import annotations

import logging
import random
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp_builders import enc_fixed64, enc_len, enc_uint, span_id, trace_id
from service_harness import OtlpSink, service_config, serving, serving_process, wait_for
from tailsample import inspect_payload

GRPC_LIMIT = 4 << 20  # grpcio's default max receive message length, and max_payload_bytes' default
T0 = 1_700_000_000_000_000_000


def span(tid: bytes, sid: bytes, parent: bytes, i: int, *, error: bool = False, pad: int = 0) -> bytes:
    """A span of about 70 bytes (as the probe's: 6.8 MB for 100,000), `pad` bytes more in an attribute."""
    out = enc_len(1, tid) + enc_len(2, sid) + (enc_len(4, parent) if parent else b"")
    out += enc_len(5, b"SELECT %d" % (i % 1000)) + enc_uint(6, 3)
    out += enc_fixed64(7, T0 + i) + enc_fixed64(8, T0 + i + 999)
    if pad:
        out += enc_len(9, enc_len(1, b"db.statement") + enc_len(2, enc_len(1, b"x" * pad)))
    if error:
        out += enc_len(15, enc_uint(3, 2))
    return out


def request(spans: list[bytes]) -> bytes:
    res = enc_len(1, enc_len(1, b"service.name") + enc_len(2, enc_len(1, b"orders")))
    ss = enc_len(1, enc_len(1, b"db.client")) + b"".join(enc_len(2, s) for s in spans)
    return enc_len(1, enc_len(1, res) + enc_len(2, ss))


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def received(backend: OtlpSink) -> int:
    return sum(inspect_payload(p)["spans"] for p in list(backend.payloads))


@pytest.mark.parametrize(("batch", "where"), [(False, "in-process"), (True, "in-process"), (False, "process")],
                         ids=["no-batch", "batch-after-tail-sampling", "serve-process"])
def test_a_kept_100000_span_trace_reaches_a_4mib_grpc_backend(batch, where, tmp_path):
    """Scenario: one error trace of 100,000 spans (about 7 MB, in one request) kept and exported over
    gRPC to a backend refusing messages over 4 MiB; with and without a `batch` processor after tail_sampling
    set to gather far more spans than that.
    Guarantees: every span arrives exactly once, byte for byte; no payload is over 4 MiB (so none is refused);
    the trace left in several payloads; nothing counted as failed or oversized."""
    rng = random.Random(18)
    tid, root = trace_id(rng), span_id(rng)
    spans = [span(tid, root, b"", 0, error=True)]
    spans += [span(tid, span_id(rng), root, i) for i in range(1, 100_000)]
    assert 6_500_000 < sum(len(s) for s in spans) < 7_500_000
    backend = OtlpSink(max_receive_bytes=GRPC_LIMIT)
    try:
        # The backend refuses what the probe's backend refused: one byte over 4 MiB.
        with grpc.insecure_channel(backend.grpc_endpoint) as ch, pytest.raises(grpc.RpcError) as refused:
            ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(
                request([span(tid, root, b"", 0, pad=GRPC_LIMIT)]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        exporter = {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}}
        extra = ({"processors": {"batch": {"send_batch_size": 1_000_000, "timeout": "200ms"}},
                  "pipeline_processors": ["tail_sampling", "batch"]} if batch else {})
        cfg = service_config(exporters=exporter, decision_wait="2s", **extra)
        with serving(cfg) if where == "in-process" else serving_process(cfg, tmp_path) as s:
            post(s.url(), request(spans))  # one request, as the probe: one run of spans in the engine
            wait_for(lambda: received(backend) >= len(spans), timeout=60, interval=0.2,
                     what="100,000 spans at the backend")
            assert s.metric('otelcol_exporter_send_failed_spans_total{exporter="otlp"}') == 0
            assert s.metric('tailsample_engine_spans_oversized_total{processor="tail_sampling"}') == 0
        sizes = [len(p) for p in backend.payloads]
        assert len(sizes) >= 2 and max(sizes) <= GRPC_LIMIT, sizes
        got = [s.SerializeToString() for p in backend.payloads
               for rs in ExportTraceServiceRequest.FromString(p).resource_spans for ss in rs.scope_spans
               for s in ss.spans]
        assert len(got) == len(spans)
        # Byte for byte: each output span is one input span (re-serializing a span written field by field in
        # field order gives its bytes back).
        assert sorted(got) == sorted(spans)
    finally:
        backend.close()


def test_a_span_larger_than_the_limit_leaves_alone_counted_and_logged(caplog):
    """Scenario: max_payload_bytes 64 KiB; a kept trace of 200 small spans and one of 100 KiB.
    Guarantees: the large span leaves alone in the one payload over the limit; every other payload is within
    it; every span arrives; the span is counted (`spans_oversized`) and logged with its trace ID."""
    rng = random.Random(4)
    tid, root = trace_id(rng), span_id(rng)
    spans = [span(tid, root, b"", 0, error=True)] + [span(tid, span_id(rng), root, i) for i in range(1, 201)]
    spans.insert(100, span(tid, span_id(rng), root, 999, pad=100_000))
    backend = OtlpSink()
    try:
        exporter = {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}}
        cfg = service_config(exporters=exporter, tail_sampling={"tailsample": {"max_payload_bytes": 65_536}})
        with caplog.at_level(logging.WARNING, logger="tailsample.pipeline"), serving(cfg) as s:
            post(s.url(), request(spans))
            wait_for(lambda: received(backend) >= len(spans), timeout=30, what="every span at the backend")
            assert s.metric('tailsample_engine_spans_oversized_total{processor="tail_sampling"}') == 1
        over = [p for p in backend.payloads if len(p) > 65_536]
        assert len(over) == 1 and inspect_payload(over[0])["spans"] == 1
        assert received(backend) == len(spans)
        assert any(tid.hex() in r.getMessage() and "max_payload_bytes" in r.getMessage() for r in caplog.records)
    finally:
        backend.close()
