"""The service's own work per payload beside the engine, each against what it replaced (pytest-benchmark):

- `inventory`: the attribute inventory's sample of a payload (`AttributeInventory.add_payload`, the keys counted by
  the engine's scan), against `protobuf_parse`, the Python protobuf runtime's parse of the same payload alone,
  and `python_walk`, that parse and a visit of every attribute's key and value type without counting anything
  (the least the inventory's former reading in Python cost);
- `gzip`: the OTLP/HTTP exporter's gzip at the collector's default level (`_native.gzip`, zlib-rs), against
  `python_zlib`, Python's zlib at the same level.

Spans/s here are spans of the payloads handled (for gzip: of the kept spans compressed), on the base workload
(1,000 spans per payload, 5 per trace).

    .venv/bin/python -m pytest bench/test_bench_service_parts.py -q --benchmark-only
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install -e '.[bench]')")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import tailsample
import workloads  # bench/conftest.py puts bench/ on the path
from tailsample import _native
from tailsample.exporters.otlp_http_exporter import GZIP_LEVEL
from tailsample.incident.lint import AttributeInventory

PAYLOADS = 20
SPANS_PER_PAYLOAD = 1000


def _python_zlib(data: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _inventory(payload: bytes) -> None:
    AttributeInventory().add_payload(payload)


def _protobuf_parse(payload: bytes) -> None:
    ExportTraceServiceRequest.FromString(payload)


def _python_walk(payload: bytes) -> None:
    for rs in ExportTraceServiceRequest.FromString(payload).resource_spans:
        for kv in rs.resource.attributes:
            kv.value.WhichOneof("value")
        for ss in rs.scope_spans:
            for span in ss.spans:
                for kv in span.attributes:
                    kv.value.WhichOneof("value")


def _gzip(payload: bytes) -> None:
    _native.gzip(payload, GZIP_LEVEL)


WORK: dict[str, Callable[[bytes], object]] = {
    "inventory": _inventory, "protobuf_parse": _protobuf_parse, "python_walk": _python_walk, "gzip": _gzip,
    "python_zlib": _python_zlib}


@pytest.mark.parametrize("work", list(WORK))
def test_service_part(benchmark, request, throughput, work: str) -> None:
    data = workloads.load(SPANS_PER_PAYLOAD, 5, PAYLOADS * SPANS_PER_PAYLOAD)
    spans = sum(tailsample.inspect_payload(p)["spans"] for p in data)
    benchmark.group = "gzip" if work in ("gzip", "python_zlib") else "inventory"
    fn = WORK[work]

    def run() -> None:
        for payload in data:
            fn(payload)

    rounds = max(1, int(request.config.getoption("benchmark_min_rounds", 5) or 5))
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    throughput(benchmark, spans, part=work, spans_per_payload=SPANS_PER_PAYLOAD)
