"""Benchmarks of the Python API (pytest-benchmark): `make bench`, or `pytest bench --benchmark-only`.

Each benchmark reports time per round; spans/s = spans per round / mean time (printed in `extra_info`).
The payloads come from the synthetic generator (realistic services, ~10 attributes per span).
"""

from __future__ import annotations

import itertools

import pytest

import tailsample
from tailsample.synth import TrafficGenerator

SPANS_PER_PAYLOAD = [10, 100, 1000]


def _payloads(spans_per_payload: int, total_spans: int = 100_000) -> list[bytes]:
    gen = TrafficGenerator(seed=7, spans_per_payload=spans_per_payload)
    out: list[bytes] = []
    n = 0
    for b in gen.batches(3600):
        out.append(b.payload)
        n += b.spans
        if n >= total_spans:
            break
    return out


@pytest.fixture(scope="module", params=SPANS_PER_PAYLOAD, ids=lambda n: f"{n}-spans")
def payloads(request: pytest.FixtureRequest) -> tuple[int, list[bytes]]:
    data = _payloads(request.param)
    spans = sum(tailsample.inspect_payload(p)["spans"] for p in data)
    return spans, data


def test_decode_only(benchmark, payloads) -> None:
    spans, data = payloads

    def run() -> None:
        for p in data:
            tailsample.inspect_payload(p)

    benchmark(run)
    benchmark.extra_info["spans_per_round"] = spans
    benchmark.extra_info["spans_per_s"] = spans / benchmark.stats.stats.mean


def test_ingest_and_decide(benchmark, payloads) -> None:
    """Steady state: one engine, clock advanced past decision_wait every round so memory is reused."""
    spans, data = payloads
    eng = tailsample.Engine(tailsample.Config.default())
    clock = itertools.count(0, 20)

    def run() -> None:
        now = float(next(clock))
        for p in data:
            eng.ingest(p, now=now)
        eng.poll(now=now + 15)

    benchmark(run)
    benchmark.extra_info["spans_per_round"] = spans
    benchmark.extra_info["spans_per_s"] = spans / benchmark.stats.stats.mean
