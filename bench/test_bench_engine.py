"""Throughput of the engine through the Python API, by stage, payload size and trace shape (pytest-benchmark).

    .venv/bin/python -m pytest bench -q --benchmark-only [--benchmark-json out.json]

Workloads (`workloads.load`): 100,000 spans per round, ~10 attributes per span under a realistic resource.
Payload sizes 10, 100, 1,000, 8,192 spans per request at 5 spans per trace; trace shapes 1, 5, 20, 200 spans per
trace at 1,000 spans per request (p1000-t5 is shared by both axes).

Stages, each timed over every payload of the workload (one round):
- decode:     `inspect_payload` of each payload (validation and counting; no engine).
- ingest:     a fresh engine per round (made in the untimed setup); every payload ingested at one instant, with
              decision_wait 1 h, so nothing is decided: decode, buffer, summaries.
- decide:     the ingest happens in the setup; timed is `flush()`: every trace decided and the kept spans
              re-encoded as OTLP payloads.
- end_to_end: a fresh engine per round; ingest everything, then `flush()`: OTLP bytes in, kept OTLP bytes out.
- durable:    end_to_end (seed policies, p1000-t5 only) with tail storage in a fresh directory on the machine's
              disk, per fsync policy: `none` (written, not fsynced), `batch` (`ingest_batch` of BATCH payloads,
              one fsync each: a Kafka consume batch, or concurrent requests sharing one fsync), `payload` (one
              fsync per payload); `memory` is the same run without storage, the baseline of the ratios.

Policies: the seed's (`workloads.SEED`: errors, latency, forced header, 1 % random) for every stage, and the heavy
set (`workloads.HEAVY`: regexes, OTTL, and, composite) and the extended set (`workloads.EXTENDED`: the seed's
with tailsample's own policies, adjusted counts and RED metrics) for end to end. Both with `decision_wait: 1h` and
`num_traces: 200000` (so 100,000 one-span traces fit; the test fails on any eviction or refusal).

Each benchmark's `extra_info` holds `spans` (per round) and `spans_per_s` (spans / median round time), with the
stage, policies, spans per payload and per trace; `bench/conftest.py` prints a spans/s table at the end, and
`bench/plots.py` plots the JSON.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install -e '.[bench]')")

import tailsample
import workloads  # bench/conftest.py puts bench/ on the path

TOTAL_SPANS = 100_000
SIZES = (10, 100, 1000, 8192)  # spans per payload, at BASE_SHAPE spans per trace
SHAPES = (1, 5, 20, 200)  # spans per trace, at BASE_SIZE spans per payload
BASE_SIZE = 1000
BASE_SHAPE = 5
NOW = 0.0

# (spans per payload, spans per trace): the size axis then the shape axis, p1000-t5 once.
WORKLOADS = list(dict.fromkeys([(p, BASE_SHAPE) for p in SIZES] + [(BASE_SIZE, t) for t in SHAPES]))
POLICIES = {"seed": workloads.SEED, "heavy": workloads.HEAVY, "extended": workloads.EXTENDED}
OVERRIDES = {"decision_wait": "1h", "num_traces": 200_000}


def _wid(w: tuple[int, int]) -> str:
    return f"p{w[0]}-t{w[1]}"


@functools.lru_cache(maxsize=1)
def _load(spans_per_payload: int, spans_per_trace: int) -> tuple[list[bytes], int]:
    data = workloads.load(spans_per_payload, spans_per_trace, TOTAL_SPANS)
    return data, sum(tailsample.inspect_payload(p)["spans"] for p in data)


@functools.cache
def _config(policies: str) -> tailsample.Config:
    base = tailsample.Config.from_file(POLICIES[policies])
    return tailsample.Config({**base.block, **OVERRIDES}, source=f"{base.source} (bench overrides)")


@pytest.fixture(scope="module", params=WORKLOADS, ids=_wid)
def workload(request: pytest.FixtureRequest) -> tuple[int, int, list[bytes], int]:
    p, t = request.param
    data, spans = _load(p, t)
    return p, t, data, spans


def _rounds(config: pytest.Config) -> tuple[int, int]:
    """(rounds, warm-up rounds) for pedantic mode: --benchmark-min-rounds (pytest-benchmark's default 5) timed
    rounds after one untimed warm-up (the first engine of a process pays its page faults: up to 5x slower)."""
    return max(1, int(config.getoption("benchmark_min_rounds", 5) or 5)), 1


def _pedantic(benchmark: Any, request: pytest.FixtureRequest, target: Callable[..., Any],
              setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None) -> None:
    rounds, warmup = _rounds(request.config)
    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)


def _info(stage: str, policies: str | None, p: int, t: int, **extra: Any) -> dict[str, Any]:
    return {"stage": stage, "policies": policies, "spans_per_payload": p, "spans_per_trace": t, **extra}


def _check(eng: tailsample.Engine) -> dict[str, int]:
    s = eng.stats()
    assert s["traces_evicted"] == 0, s
    assert s.get("refused_num_traces", 0) == 0, s
    return s


def _ingest_all(eng: tailsample.Engine, data: list[bytes]) -> None:
    for payload in data:
        eng.ingest(payload, now=NOW)


def _axis(p: int, t: int) -> str:
    return "size" if t == BASE_SHAPE else "shape"


def test_decode(benchmark, request, throughput, workload) -> None:
    p, t, data, spans = workload
    benchmark.group = f"decode by {_axis(p, t)}"

    def run() -> None:
        for payload in data:
            tailsample.inspect_payload(payload)

    _pedantic(benchmark, request, run)
    throughput(benchmark, spans, **_info("decode", None, p, t))


@pytest.mark.parametrize("policies", ["seed"])
def test_ingest(benchmark, request, throughput, workload, policies) -> None:
    p, t, data, spans = workload
    config = _config(policies)
    benchmark.group = f"ingest {policies} by {_axis(p, t)}"
    engines: list[tailsample.Engine] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        engines[:] = [tailsample.Engine(config)]
        return (engines[0],), {}

    _pedantic(benchmark, request, lambda eng: _ingest_all(eng, data), setup)
    s = _check(engines[0])
    assert s["spans_received"] == spans and s["traces_sampled"] + s["traces_not_sampled"] == 0, s
    throughput(benchmark, spans, **_info("ingest", policies, p, t, traces=s["traces_in_memory"]))


@pytest.mark.parametrize("policies", ["seed"])
def test_decide(benchmark, request, throughput, workload, policies) -> None:
    p, t, data, spans = workload
    config = _config(policies)
    benchmark.group = f"decide {policies} by {_axis(p, t)}"
    engines: list[tailsample.Engine] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        eng = tailsample.Engine(config)
        _ingest_all(eng, data)
        engines[:] = [eng]
        return (eng,), {}

    _pedantic(benchmark, request, lambda eng: eng.flush(now=NOW), setup)
    s = _check(engines[0])
    assert s["traces_in_memory"] == 0, s
    throughput(benchmark, spans, **_info("decide", policies, p, t, traces=s["traces_received"],
                                         kept_traces=s["traces_sampled"]))


@pytest.mark.parametrize("policies", ["seed", "heavy", "extended"])
def test_end_to_end(benchmark, request, throughput, workload, policies) -> None:
    p, t, data, spans = workload
    config = _config(policies)
    benchmark.group = f"end_to_end {policies} by {_axis(p, t)}"
    engines: list[tailsample.Engine] = []
    out: list[list[bytes]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        engines[:] = [tailsample.Engine(config)]
        out.clear()
        return (engines[0],), {}

    def run(eng: tailsample.Engine) -> None:
        _ingest_all(eng, data)
        out.append(eng.flush(now=NOW))

    _pedantic(benchmark, request, run, setup)
    s = _check(engines[0])
    kept = sum(tailsample.inspect_payload(o)["spans"] for o in out[0])
    assert s["traces_in_memory"] == 0 and kept > 0, s
    throughput(benchmark, spans, **_info("end_to_end", policies, p, t, traces=s["traces_received"],
                                         kept_traces=s["traces_sampled"], kept_spans=kept,
                                         out_bytes=sum(len(o) for o in out[0])))


BATCH = 10  # payloads per ingest_batch call under `sync: batch`


@pytest.mark.parametrize("sync", ["memory", "none", "batch", "payload"])
def test_durable(benchmark, request, throughput, workload, sync) -> None:
    p, t, data, spans = workload
    if (p, t) != (BASE_SIZE, BASE_SHAPE):
        pytest.skip("durability is measured on p1000-t5 only")
    config = tailsample.Config({**_config("seed").block, "tail_storage": "file_storage/bench"}, source="bench")
    benchmark.group = "durable seed by sync"
    engines: list[tailsample.Engine] = []
    dirs: list[str] = []
    out: list[list[bytes]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        dirs[:] = [tempfile.mkdtemp(prefix="tailsample-bench-")]
        engines.clear()
        if sync == "memory":
            engines.append(tailsample.Engine(_config("seed")))
        else:
            storage = tailsample.FileStorage(dirs[0], max_size=1 << 30, sync=sync)  # type: ignore[arg-type]
            engines.append(tailsample.Engine(config, storage=storage, now=NOW))
        out.clear()
        return (engines[0],), {}

    def run(eng: tailsample.Engine) -> None:
        if sync == "batch":
            for i in range(0, len(data), BATCH):
                eng.ingest_batch(data[i:i + BATCH], now=NOW)
        else:
            _ingest_all(eng, data)
        out.append(eng.flush(now=NOW))

    try:
        _pedantic(benchmark, request, run, setup)
        s = _check(engines[0])
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert s["traces_in_memory"] == 0 and s["payloads_received"] == len(data), s
    fsyncs = s.get("storage_fsyncs", 0)
    throughput(benchmark, spans, **_info("durable", "seed", p, t, sync=sync, fsyncs_per_round=fsyncs,
                                         bytes_written=s.get("storage_bytes_written", 0)))
