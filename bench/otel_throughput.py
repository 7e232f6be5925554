"""Throughput of `tailsample.otel.TailSamplingSpanProcessor`: spans/s from `on_end` to the exporter.

    .venv/bin/python bench/otel_throughput.py [--spans 20000] [--runs 3]

The spans are made first by the real SDK (a root and four children per trace, five attributes each, 1 % of
traces with an error), then fed to the processor's `on_end` on one thread; the clock stops when `shutdown()`
has decided every trace and the in-memory exporter holds every kept span. For comparison, the SDK's
`BatchSpanProcessor` on the same spans and exporter (no sampling: it exports everything, and the in-memory
exporter does not encode), and the SDK's OTLP encoder alone, which an OTLP exporter would run on every span.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from tailsample.otel import TailSamplingSpanProcessor

CONFIGS = {
    "always_sample (every span exported)": {
        "decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]},
    "errors + latency (1 % of traces kept)": {
        "decision_wait": "1s", "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 5000}}]},
}


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def make_spans(n: int) -> tuple[list[ReadableSpan], float]:
    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "deployment.environment": "x"}))
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("bench", "1.0")
    t0 = time.perf_counter()
    i = 0
    while len(collect.spans) < n:
        with tracer.start_span("GET /api/orders/{id}", attributes={
                "http.request.method": "GET", "http.route": "/api/orders/{id}", "http.response.status_code": 200,
                "server.address": "orders.internal", "user.id": i}) as root:
            ctx = set_span_in_context(root)
            for j in range(4):
                with tracer.start_span("SELECT orders", context=ctx, attributes={
                        "db.system": "postgresql", "db.namespace": "orders", "db.operation.name": "SELECT",
                        "db.query.text": "SELECT * FROM orders WHERE id = $1", "row": j}) as child:
                    if i % 100 == 0 and j == 0:
                        child.set_status(Status(StatusCode.ERROR, "timeout"))
        i += 1
    return collect.spans[:n], time.perf_counter() - t0


def run(make_processor: Callable[[InMemorySpanExporter], SpanProcessor],
        spans: Sequence[ReadableSpan]) -> tuple[float, float, int]:
    exporter = InMemorySpanExporter()
    processor = make_processor(exporter)
    t0 = time.perf_counter()
    for span in spans:
        processor.on_end(span)
    t1 = time.perf_counter()
    processor.shutdown()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, len(exporter.get_finished_spans())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spans, made = make_spans(args.spans)
    print(f"{len(spans):,} spans made by the SDK in {made:.2f} s ({len(spans) / made:,.0f} spans/s; "
          "the application's own cost, before any processor)")
    cases: dict[str, Callable[[InMemorySpanExporter], SpanProcessor]] = {
        name: (lambda e, c=cfg: TailSamplingSpanProcessor(e, c, max_buffered_spans=len(spans) + 1))
        for name, cfg in CONFIGS.items()}
    cases["SDK BatchSpanProcessor (no sampling)"] = lambda e: BatchSpanProcessor(e, max_queue_size=len(spans) + 1)
    encode = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for start in range(0, len(spans), 64):
            encode_spans(spans[start:start + 64]).SerializeToString()
        encode.append(time.perf_counter() - t0)
    print(f"the SDK's OTLP encoder alone, 64 spans per call: {len(spans) / statistics.median(encode):,.0f} spans/s "
          f"({statistics.median(encode) / len(spans) * 1e6:.1f} us/span)")
    for name, make in cases.items():
        results = [run(make, spans) for _ in range(args.runs)]
        on_end = statistics.median(r[0] for r in results)
        total = statistics.median(r[1] for r in results)
        print(f"{name}: {len(spans) / total:,.0f} spans/s on_end -> export "
              f"({total:.3f} s median of {args.runs}; on_end alone {len(spans) / on_end:,.0f} spans/s "
              f"= {on_end / len(spans) * 1e6:.1f} us/span on the application thread; "
              f"{results[0][2]:,} spans exported)")


if __name__ == "__main__":
    main()
