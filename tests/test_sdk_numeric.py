"""Numeric policies on the ints real SDKs send: status codes and ports are two-byte varints on the wire
(`http.response.status_code` 500, `server.port` 5432), which the scanner's fast path reads.
The payloads are what the OpenTelemetry Python SDK's OTLP exporters send (`sdk_traffic`).
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tailsample
from sdk_traffic import SERVICES, Traffic, encode, make_traffic


def _sdk_payloads() -> tuple[Traffic, list[bytes]]:
    memory = {name: InMemorySpanExporter() for name in SERVICES}
    traffic = make_traffic(lambda name: memory[name], n=12, error_every=4)
    traffic.shutdown()
    return traffic, [encode(m.get_finished_spans()) for m in memory.values()]


def _kept_traces(policy: dict[str, object], payloads: list[bytes]) -> set[str]:
    engine = tailsample.Engine(tailsample.Config.from_dict({"decision_wait": "1s", "policies": [policy]}))
    for p in payloads:
        engine.ingest(p)
    kept: set[str] = set()
    for out in engine.flush():
        for rs in ExportTraceServiceRequest.FromString(out).resource_spans:
            for ss in rs.scope_spans:
                kept.update(span.trace_id.hex() for span in ss.spans)
    return kept


def test_a_numeric_policy_reads_the_sdks_status_codes() -> None:
    traffic, payloads = _sdk_payloads()
    failed = {t for i, t in enumerate(traffic.payments_traces) if i % 4 == 3}
    assert len(failed) == traffic.errors == 3
    kept = _kept_traces({"name": "5xx", "type": "numeric_attribute",
                         "numeric_attribute": {"key": "http.response.status_code", "min_value": 500,
                                               "max_value": 599}}, payloads)
    assert kept == failed


def test_a_numeric_policy_reads_the_sdks_ports() -> None:
    traffic, payloads = _sdk_payloads()
    # payments' database call (server.port 5432) is in payments' own traces only
    kept = _kept_traces({"name": "db", "type": "numeric_attribute",
                         "numeric_attribute": {"key": "server.port", "min_value": 5432, "max_value": 5432}},
                        payloads)
    assert kept == set(traffic.payments_traces)
