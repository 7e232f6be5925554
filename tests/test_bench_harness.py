"""The decision-lag histogram and `tailsample bench` (the throughput harness), on small runs."""

from __future__ import annotations

import json
import math

from rich.console import Console

from otlp_builders import make_request, make_span, service, span_id, trace_id
from tailsample import Config, Engine
from tailsample.traffic.bench import run_bench, seed_config, write_json


def test_decision_lag_lands_in_its_bucket(rng):
    engine = Engine(Config.from_dict({"decision_wait": "1s", "policies": [{"name": "all",
                                                                           "type": "always_sample"}]}))
    assert engine.decision_lag_quantile(0.5) is None
    for i, lag in enumerate((0.0, 0.03, 0.03, 0.7)):
        tid = trace_id(rng)
        t0 = 100.0 + 10 * i  # the engine's clock never runs backwards: each trace later than the last poll
        engine.ingest(make_request(service("a"), [make_span(tid, span_id(rng))]), now=t0)
        engine.poll(now=t0 + 1.0 + lag)
    hist = dict(engine.decision_lag_histogram())
    assert sum(hist.values()) == 4 and hist[0.0] == 1 and hist[0.05] == 2 and hist[1.0] == 1
    assert hist[math.inf] == 0
    assert engine.decision_lag_quantile(0.5) == 0.05
    assert engine.decision_lag_quantile(1.0) == 1.0


def test_bench_reports_throughput_lag_and_memory(tmp_path):
    report = run_bench(seconds=1.0, rate=20_000, config=seed_config(decision_wait="200ms"), tick=0.02,
                       console=Console(quiet=True))
    assert report.spans > 10_000 and report.spans_per_second > 0 and report.spans_per_cpu_second > 0
    assert report.decisions > 0 and report.lag_p99_s is not None and report.lag_p50_s <= report.lag_p99_s
    assert 1.0 < report.retained_over_raw < 2.0  # the engine's bookkeeping over the raw span bytes
    assert report.peak_buffered_spans > 0 and report.memory_points
    write_json(report, tmp_path / "r.json", memory_path=tmp_path / "m.json")
    assert json.loads((tmp_path / "r.json").read_text())["spans"] == report.spans
    assert {"buffered_traces", "retained_bytes", "raw_bytes"} <= set(json.loads((tmp_path / "m.json").read_text())[0])
