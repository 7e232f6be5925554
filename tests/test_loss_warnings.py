"""Evictions at `num_traces`, drops (too large, by a drop policy) and backpressure refusals logged at WARNING
(issue 18, item 8): at most one line per interval per pipeline, with the counts, never one per trace; against a
real `tailsample serve` with a small `num_traces`, and the reporter alone on an injected clock."""

from __future__ import annotations

import random
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import LOOPBACK, ServeSubprocess, free_port, wait_for
from tailsample.service.pipeline import LossReporter


class FakeStats:
    def __init__(self) -> None:
        self.values = {"traces_evicted": 0, "spans_evicted": 0, "limit_num_traces": 10, "payloads_refused": 0,
                       "refused_num_traces": 0, "traces_dropped_too_large": 0, "traces_dropped_by_policy": 0}

    def __call__(self) -> dict[str, int]:
        return dict(self.values)


def test_one_line_per_interval_with_the_counts_since_the_last() -> None:
    now = [100.0]
    stats = FakeStats()
    r = LossReporter("pipeline traces (tail_sampling)", stats, clock=lambda: now[0], interval=10.0, check_interval=1.0)
    assert r.check() is None  # nothing lost yet
    stats.values.update(traces_evicted=3, spans_evicted=7)
    assert r.check() is None  # the stats are read at most once per check_interval
    now[0] = 101.0
    first = r.check()
    assert first is not None and "since the start: 3 traces (7 spans) evicted undecided at num_traces 10" in first
    for step in range(1, 10):  # a flood for the next 9 s: no line
        now[0] = 101.0 + step
        stats.values["traces_evicted"] += 1000
        stats.values["payloads_refused"] += 2
        stats.values["refused_num_traces"] += 2
        assert r.check() is None
    now[0] = 111.0
    second = r.check()
    assert second is not None and "in the last 10.0s: 9,000 traces" in second
    assert "18 payloads refused with backpressure (num_traces with block_on_overflow 18)" in second
    now[0] = 125.0
    assert r.check() is None  # nothing new
    stats.values["traces_dropped_by_policy"] += 1
    now[0] = 125.5  # within check_interval of the last look, but shutdown reports whatever the interval
    final = r.check(final=True)
    assert final is not None and "1 traces dropped by a drop policy" in final and "evicted" not in final
    assert "pipeline traces (tail_sampling): at shutdown, in the last 14.5s: " in final


def lines(log: Path, pipeline: str) -> list[str]:
    return [line for line in log.read_text().splitlines()
            if " WARNING tailsample.pipeline: " in line and f": pipeline {pipeline} (" in line]


def total(lines_: list[str], pattern: str) -> int:
    return sum(int(m.replace(",", "")) for line in lines_ for m in re.findall(pattern, line))


def post(port: int, payload: bytes) -> int:
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}/v1/traces", data=payload,
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_service_logs_evictions_drops_and_refusals_per_pipeline_at_most_once_per_interval(tmp_path: Path) -> None:
    """Scenario: two pipelines with num_traces 10 and a 30 s decision_wait: `evict` evicts (and drops one trace
    too large and one by a drop policy), `block` refuses with block_on_overflow; 60 traces into each, then
    SIGTERM. Guarantees: each pipeline logs at WARNING, once when the losses start and once at shutdown (the
    10 s interval holds back everything between), with counts that add up to the engine's counters exactly;
    no line per trace."""
    rng = random.Random(8)
    ports = {k: free_port() for k in ("evict", "block", "health", "metrics")}
    drop = {"name": "no-debug", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "debug", "type": "string_attribute", "string_attribute": {"key": "debug", "values": ["yes"]}}]}}
    errors = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    config: dict[str, Any] = {
        "receivers": {f"otlp/{p}": {"protocols": {"http": {"endpoint": f"{LOOPBACK}:{ports[p]}"}}}
                      for p in ("evict", "block")},
        "processors": {
            "tail_sampling/evict": {"decision_wait": "30s", "num_traces": 10, "maximum_trace_size_bytes": 2000,
                                    "policies": [errors, drop]},
            "tail_sampling/block": {"decision_wait": "30s", "num_traces": 10, "block_on_overflow": True,
                                    "policies": [errors]},
        },
        "exporters": {"debug": {}},
        "extensions": {"health_check": {"endpoint": f"{LOOPBACK}:{ports['health']}"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {f"traces/{p}": {"receivers": [f"otlp/{p}"], "processors": [f"tail_sampling/{p}"],
                                          "exporters": ["debug"]} for p in ("evict", "block")},
            "telemetry": {"metrics": {"address": f"{LOOPBACK}:{ports['metrics']}"}},
        },
    }
    serve = ServeSubprocess(tmp_path, "losses", config, health_port=ports["health"], metrics_port=ports["metrics"],
                            args=("--shutdown-timeout", "2s"))
    try:
        statuses: dict[str, list[int]] = {"evict": [], "block": []}
        for _ in range(60):
            for p in ("evict", "block"):
                tid = trace_id(rng)
                statuses[p].append(post(ports[p], make_request(service("cart"), [
                    make_span(tid, span_id(rng), status=STATUS_ERROR), make_span(tid, span_id(rng))])))
        big, dropped = trace_id(rng), trace_id(rng)
        assert post(ports["evict"], make_request(service("cart"), [
            make_span(big, span_id(rng), attributes={"blob": "x" * 5000})])) == 200
        assert post(ports["evict"], make_request(service("cart"), [
            make_span(dropped, span_id(rng), status=STATUS_ERROR, attributes={"debug": "yes"})])) == 200
        assert statuses["evict"].count(200) == 60
        assert statuses["block"].count(200) == 10 and statuses["block"].count(503) == 50
        wait_for(lambda: lines(serve.log, "traces/evict")
                 and lines(serve.log, "traces/block"), timeout=10, interval=0.1,
                 what="the first warning of each pipeline")
        m = serve.metrics()
        evicted = m['tailsample_engine_traces_evicted_total{processor="tail_sampling/evict"}']
        too_large = m['tailsample_engine_traces_dropped_too_large_total{processor="tail_sampling/evict"}']
        refused = m['tailsample_engine_payloads_refused_total{processor="tail_sampling/block"}']
        assert evicted >= 50 and too_large == 1 and refused == 50
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=30) == 0
    ev = lines(serve.log, "traces/evict")
    bl = lines(serve.log, "traces/block")
    assert 1 <= len(ev) <= 2 and 1 <= len(bl) <= 2, (ev, bl)  # the first, and the shutdown's if anything was new
    assert "since the start" in ev[0] and "at num_traces 10" in ev[0]
    assert total(ev, r"([\d,]+) traces \([\d,]+ spans\) evicted") == evicted
    assert total(ev, r"([\d,]+) traces dropped over maximum_trace_size_bytes 2,000") == 1
    assert total(ev, r"([\d,]+) traces dropped by a drop policy") == 1  # decided at shutdown
    assert total(bl, r"([\d,]+) payloads refused with backpressure") == 50
    assert total(bl, r"num_traces with block_on_overflow ([\d,]+)") == 50
    assert serve.log.read_text().count("WARNING") < 10
