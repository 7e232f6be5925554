"""Heap per buffered span against the raw OTLP bytes, at the shape small spans take: traces of 5 spans of about
360 B with ten attributes (`kafka_throughput._five_span_traces`), the engine's defaults on (propagation audit,
RED metrics, decision log), seed policies, nothing decided (decision_wait 600 s), in a fresh process.

Heap is the extension's counting allocator (`_native.memory_stats()["heap_bytes"]`: live Rust bytes, exact), before
and after ingesting; raw is the payload bytes handed over. One row per payload shape: one trace per payload (a
Kafka message keyed by trace ID) and 100 traces per payload (500 spans, an SDK batch).

    python bench/memory_shape.py --traces 40000 --json bench/.data/results/memory-shape.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from kafka_throughput import _five_span_traces
from tailsample import _native
from tailsample.engine import Engine
from tailsample.traffic.bench import seed_config


def _merged(payloads: list[bytes], per: int) -> list[bytes]:
    """`per` traces per payload: their spans under one resource and scope, as an SDK batch sends them."""
    out = []
    for i in range(0, len(payloads), per):
        req = ExportTraceServiceRequest.FromString(payloads[i])
        spans = req.resource_spans[0].scope_spans[0].spans
        for p in payloads[i + 1:i + per]:
            spans.extend(ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans)
        out.append(req.SerializeToString())
    return out


def measure(payloads: list[bytes], spans: int) -> dict[str, Any]:
    engine = Engine(seed_config(decision_wait="600s", num_traces=10_000_000))
    before = int(_native.memory_stats()["heap_bytes"])
    for i in range(0, len(payloads), 100):
        engine.ingest_batch(payloads[i:i + 100])
    heap = int(_native.memory_stats()["heap_bytes"]) - before
    raw = sum(len(p) for p in payloads)
    stats = engine.stats()
    del engine
    return {"payloads": len(payloads), "spans": spans, "raw_bytes": raw, "raw_bytes_per_span": raw / spans,
            "heap_bytes": heap, "heap_per_raw": heap / raw, "heap_bytes_per_span": heap / spans,
            "memory_bytes_per_raw": int(stats["memory_bytes"]) / raw}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=40_000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    single = [v for _, v in _five_span_traces(a.traces)]
    rows = []
    for name, payloads in (("1 trace (5 spans) per payload", single),
                           ("100 traces (500 spans) per payload", _merged(single, 100))):
        row = {"shape": name, **measure(payloads, 5 * a.traces)}
        print(json.dumps(row))
        rows.append(row)
    table = ["| payloads | raw OTLP bytes per span | heap per buffered span | heap / raw | engine's estimate / raw |",
             "|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['shape']} | {r['raw_bytes_per_span']:.0f} B | {r['heap_bytes_per_span']:.0f} B | "
                     f"{r['heap_per_raw']:.3f}x | {r['memory_bytes_per_raw']:.3f}x |")
    print("\n".join(table))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, "table_markdown": "\n".join(table)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
