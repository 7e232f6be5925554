"""`tailsample bench`: run a workload through the engine for a set time, at an offered rate or flat out.

Traffic comes from `tailsample.traffic.synth` (the realistic shop mix: 1-50 spans per trace, ~10 attributes per span),
generated before the clock starts so the generator is not measured. One thread ingests, paced to the offered
rate on the wall clock (or as fast as it can); a second thread polls the engine every `tick` seconds, as
`tailsample serve` does; decisions are due `decision_wait` after a trace's first span, on the real clock.

Reported:
- spans/s offered and achieved, and spans per CPU-second of the process (both threads: the engine's whole cost);
- decision lag p50 / p99 / max bucket: decided time minus due time, from the engine's histogram;
- peak RSS, and the RSS growth per buffered span at the peak;
- retained bytes per buffered span (the engine's own accounting: span bytes, per-trace slots, chunk headers,
  interned resources) against the raw OTLP bytes of those spans, and their ratio;
- `--memory-json`: (buffered traces, retained bytes, raw bytes) sampled every half second, for the plot of memory
  against buffered traces.
"""

from __future__ import annotations

import json
import math
import resource
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.errors import BackpressureError
from tailsample.traffic.synth import TrafficGenerator

FLAT_OUT_POOL_SPANS = 4_000_000  # about 1.7 GB of payloads
DRAIN_LIMIT_S = 10.0


def _rss_bytes(kind: str = "VmRSS") -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(kind + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def seed_config(decision_wait: str | None = None, num_traces: int | None = None) -> Config:
    """The bundled seed configuration, with decision_wait / num_traces overridden when given."""
    block = yaml.safe_load((files("tailsample") / "data" / "seed-config.yaml").read_text())
    ts = block["processors"]["tail_sampling"]
    if decision_wait is not None:
        ts["decision_wait"] = decision_wait
    if num_traces is not None:
        ts["num_traces"] = num_traces
    return Config.from_dict(ts)


@dataclass
class BenchReport:
    seconds: float = 0.0
    offered_rate: float | None = None  # None: flat out
    spans: int = 0
    payloads: int = 0
    spans_per_second: float = 0.0
    cpu_seconds: float = 0.0
    spans_per_cpu_second: float = 0.0
    refused_payloads: int = 0
    max_behind_schedule_s: float = 0.0  # offered-rate runs: how far ingest ever fell behind the schedule
    decision_wait: float = 0.0
    decisions: int = 0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_bucket_s: float | None = None
    peak_rss_bytes: int = 0
    rss_growth_per_buffered_span: float = 0.0
    peak_buffered_spans: int = 0
    peak_buffered_traces: int = 0
    retained_bytes_per_span: float = 0.0
    raw_bytes_per_span: float = 0.0
    retained_over_raw: float = 0.0
    memory_points: list[dict[str, int]] = field(default_factory=list)


def run_bench(*, seconds: float = 15.0, rate: float | None = 200_000, config: Config | None = None,
              tick: float = 0.05, seed: int = 1, console: Console | None = None) -> BenchReport:
    """Run the workload and return the figures (printed too unless `console` is given a quiet one)."""
    console = console or Console()
    config = config or seed_config(decision_wait="2s", num_traces=1_000_000)
    # flat out: a pool of FLAT_OUT_POOL_SPANS spans, sent as fast as the engine takes them
    pool_rate = rate if rate is not None else 1_000_000
    pool_seconds = seconds if rate is not None else min(seconds, FLAT_OUT_POOL_SPANS / pool_rate)
    gen = TrafficGenerator(seed=seed, spans_per_second=pool_rate)
    with console.status(f"generating {pool_rate * pool_seconds:,.0f} spans of traffic..."):
        batches = list(gen.batches(pool_seconds))
    payloads = [(b.payload, b.spans, b.t) for b in batches]
    engine = Engine(config)
    report = BenchReport(offered_rate=rate, decision_wait=config.decision_wait, payloads=len(payloads))
    rss_base = _rss_bytes()
    stop = threading.Event()
    ingesting = threading.Event()  # memory samples are taken while traffic comes in, not while it drains
    ingesting.set()
    samples: list[dict[str, int]] = []

    def poller() -> None:
        next_sample = 0.0
        while not stop.is_set():
            engine.poll()
            now = time.monotonic()
            if now >= next_sample and ingesting.is_set():
                s = engine.stats()
                samples.append({"buffered_traces": s["traces_in_memory"], "buffered_spans": s["spans_in_memory"],
                                "retained_bytes": s["memory_bytes"], "raw_bytes": s["span_bytes_in_memory"],
                                "rss_bytes": _rss_bytes() - rss_base})  # growth since the run began
                next_sample = now + 0.5
            stop.wait(tick)

    thread = threading.Thread(target=poller, name="tailsample-bench-poll", daemon=True)
    cpu0 = time.process_time()
    started = time.perf_counter()
    thread.start()
    spans = 0
    behind = 0.0
    for payload, n, t in payloads:
        if rate is not None:
            delay = started + t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                behind = max(behind, -delay)
        try:
            engine.ingest(payload)
        except BackpressureError:
            report.refused_payloads += 1
            continue
        spans += n
        if rate is None and time.perf_counter() - started > seconds:
            break
    elapsed = time.perf_counter() - started
    report.cpu_seconds = time.process_time() - cpu0
    ingesting.clear()
    # keep polling until every trace ingested so far is due and decided, so lag covers them all (a run with a
    # decision_wait over DRAIN_LIMIT_S measures memory: it stops without waiting)
    deadline = time.monotonic() + min(config.decision_wait, DRAIN_LIMIT_S) + 2 * tick + 1.0
    while engine.stats()["traces_in_memory"] and time.monotonic() < deadline:
        time.sleep(tick)
    stop.set()
    thread.join()
    stats = engine.stats()

    report.seconds = elapsed
    report.max_behind_schedule_s = behind
    report.spans = spans
    report.spans_per_second = spans / elapsed
    report.spans_per_cpu_second = spans / report.cpu_seconds if report.cpu_seconds else 0.0
    report.decisions = stats["decisions_timed"]
    report.lag_p50_s = engine.decision_lag_quantile(0.5)
    report.lag_p99_s = engine.decision_lag_quantile(0.99)
    report.lag_max_bucket_s = engine.decision_lag_quantile(1.0)
    report.peak_rss_bytes = _rss_bytes("VmHWM")
    report.memory_points = samples
    if samples:
        peak = max(samples, key=lambda p: p["buffered_spans"])
        report.peak_buffered_spans = peak["buffered_spans"]
        report.peak_buffered_traces = peak["buffered_traces"]
        if peak["buffered_spans"]:
            report.retained_bytes_per_span = peak["retained_bytes"] / peak["buffered_spans"]
            report.raw_bytes_per_span = peak["raw_bytes"] / peak["buffered_spans"]
            report.retained_over_raw = peak["retained_bytes"] / max(1, peak["raw_bytes"])
            report.rss_growth_per_buffered_span = peak["rss_bytes"] / peak["buffered_spans"]
    _print(console, report)
    return report


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "> 10 s"
    return f"≤ {v * 1e3:g} ms"


def _print(console: Console, r: BenchReport) -> None:
    offered = "flat out" if r.offered_rate is None else f"{r.offered_rate:,.0f} spans/s offered"
    console.print(f"[bold]tailsample bench[/]: {offered}, {r.seconds:.1f} s, decision_wait {r.decision_wait:g} s")
    console.print(f"  throughput  {r.spans_per_second:,.0f} spans/s ({r.spans:,} spans); "
                  f"{r.spans_per_cpu_second:,.0f} spans per CPU-second ({r.cpu_seconds:.2f} CPU-s)"
                  + (f"; {r.refused_payloads} payloads refused" if r.refused_payloads else "")
                  + (f"; at most {r.max_behind_schedule_s * 1e3:.0f} ms behind the offered schedule"
                     if r.offered_rate is not None else ""))
    console.print(f"  decision lag  p50 {_fmt_s(r.lag_p50_s)}, p99 {_fmt_s(r.lag_p99_s)}, "
                  f"max {_fmt_s(r.lag_max_bucket_s)} ({r.decisions:,} decisions; bucket upper bounds)")
    console.print(f"  memory  peak RSS {r.peak_rss_bytes / 2**20:,.0f} MiB; at the peak {r.peak_buffered_spans:,} "
                  f"spans in {r.peak_buffered_traces:,} traces buffered: retained {r.retained_bytes_per_span:.0f} "
                  f"B/span vs raw {r.raw_bytes_per_span:.0f} B/span ({r.retained_over_raw:.3f}x); RSS growth "
                  f"{r.rss_growth_per_buffered_span:.0f} B/span")


def write_json(report: BenchReport, path: Path, *, memory_path: Path | None = None) -> None:
    data: dict[str, Any] = asdict(report)
    points = data.pop("memory_points")
    path.write_text(json.dumps(data, indent=2) + "\n")
    if memory_path is not None:
        memory_path.write_text(json.dumps(points) + "\n")


__all__ = ["BenchReport", "run_bench", "seed_config", "write_json"]
