"""The decision loop's schedule (issue 24): a round with nothing due costs no thread hop and no poll, an idle
service sleeps until a trace is due (at most `IDLE_WAIT_S`, the soonest a new trace can be due, the batch
processor's timeout), and the decision lag stays within a tick of due."""

from __future__ import annotations

import asyncio
import math
import random
import time
import urllib.request

import pytest

import tailsample
from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample.service import pipeline as pipeline_mod
from tailsample.service.pipeline import ServicePipeline

PROTO = {"Content-Type": "application/x-protobuf"}


def _config(decision_wait: str = "2s", **more: object) -> tailsample.Config:
    return tailsample.Config.from_dict({"decision_wait": decision_wait, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}], **more})


def _trace(rng: random.Random, *, error: bool = False, root: bool = True) -> tuple[bytes, bytes]:
    tid = trace_id(rng)
    parent = b"" if root else span_id(rng)
    span = make_span(tid, span_id(rng), parent=parent, status=STATUS_ERROR if error else 0)
    return tid, make_request(service("cart"), [span])


def test_next_due_follows_the_buffer(rng: random.Random) -> None:
    eng = tailsample.Engine(_config("2s"))
    assert eng.next_due() == (None, 2.0), "nothing buffered: nothing due; a new trace is due decision_wait on"
    tid, payload = _trace(rng, error=True)
    eng.ingest(payload, now=100.0)
    eng.ingest(_trace(rng)[1], now=100.5)
    due, arrival = eng.next_due()
    assert due == pytest.approx(102.0) and arrival == 2.0, "the first buffered trace's due time"
    assert eng.poll(now=101.9) == []
    kept = eng.poll(now=102.1)
    assert kept, "the error trace is kept at its due time"
    assert eng.next_due()[0] == pytest.approx(102.5), "the second trace is next"
    assert eng.poll(now=102.6) == []
    assert eng.next_due()[0] is None
    # A late span of the kept trace goes out with the next round, whenever that is: due at once.
    eng.ingest(make_request(service("cart"), [make_span(tid, span_id(rng), parent=span_id(rng))]), now=103.0)
    due, _ = eng.next_due()
    assert due == -math.inf
    assert eng.poll(now=103.0), "the late span leaves"
    assert eng.next_due()[0] is None


def test_next_due_after_root_received(rng: random.Random) -> None:
    eng = tailsample.Engine(_config("10s", decision_wait_after_root_received="300ms"))
    due, arrival = eng.next_due()
    assert due is None and arrival == pytest.approx(0.3), "a new trace may be due once its root is in"
    eng.ingest(_trace(rng, root=False)[1], now=50.0)
    assert eng.next_due()[0] == pytest.approx(60.0), "no root: decision_wait"
    eng.ingest(_trace(rng, root=True)[1], now=51.0)
    assert eng.next_due()[0] == pytest.approx(51.3), "a root: its shorter wait"
    eng.poll(now=51.4)
    assert eng.next_due()[0] == pytest.approx(60.0)


def test_sleep_ends_on_wake_or_timeout() -> None:
    async def main() -> None:
        p = object.__new__(ServicePipeline)  # only the loop's sleep and wake are used
        p._waiter = None
        started = time.monotonic()
        await p.sleep(0.05)
        assert 0.04 <= time.monotonic() - started < 1.0
        sleeper = asyncio.create_task(p.sleep(30.0))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        p.wake()
        await asyncio.wait_for(sleeper, 2.0)
        assert time.monotonic() - started < 0.5 and p._waiter is None
        p.wake()  # nobody sleeping: nothing to do

    asyncio.run(main())


def _series(m: dict[str, float], name: str, *labels: str) -> float:
    """The one sample of `name` whose labels include each of `labels` (`le="0.05"`), in whatever order; 0 when
    there is none (a histogram not observed yet)."""
    found = [v for k, v in m.items() if k.split("{")[0] == name and all(x in k for x in labels)]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def _post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers=PROTO, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_an_idle_service_polls_nothing_and_decides_on_time(rng: random.Random,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle, the loop sleeps (no poll, about one ledger round per IDLE_WAIT_S); a trace sent then is decided within
    a tick of its due time and its batch leaves at the batch processor's timeout, though the loop had gone to
    sleep for longer than both."""
    monkeypatch.setattr(pipeline_mod, "IDLE_WAIT_S", 30.0)  # only due times and the batch timeout end a sleep
    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, decision_wait="400ms",
                             processors={"batch": {"timeout": "300ms", "send_batch_size": 100000}},
                             pipeline_processors=["tail_sampling", "batch"])
        with serving(cfg) as s:
            p = s.service.pipelines["traces"]
            polls = "otelcol_processor_tail_sampling_sampling_decision_timer_latency_count"
            time.sleep(0.3)
            rounds, before = p.rounds.started, _series(s.metrics(), polls)
            time.sleep(1.0)
            assert _series(s.metrics(), polls) == before, "idle: no poll"
            # awake once per decision_wait (the soonest a new trace is due), not every 40 ms tick
            assert p.rounds.started - rounds <= 4, "idle: asleep, not waking every tick"
            tid, payload = _trace(rng, error=True)
            sent = time.monotonic()
            _post(s.url(), payload)
            wait_for(lambda: tid.hex() in {t for t, *_ in backend.spans()}, 5.0, 0.005, "the kept trace")
            took = time.monotonic() - sent
            # decided at 0.4 s (within a tick: 40 ms), then the batch's 300 ms timeout; generous for a busy host
            assert 0.65 <= took < 1.5, took
            m = s.metrics()
            lag = _series(m, "tailsample_decision_lag_seconds_bucket", 'le="0.1"')
            assert lag == _series(m, "tailsample_decision_lag_seconds_count") == 1
            assert _series(s.metrics(), polls) - before <= 3, "a poll when the trace was due, not one per tick"


def test_rounds_keep_their_cadence_under_load(rng: random.Random) -> None:
    """With traces due every few milliseconds the loop keeps its tick (no round per trace), and polls."""
    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, decision_wait="200ms")
        with serving(cfg) as s:
            p = s.service.pipelines["traces"]
            assert p.tick == pytest.approx(0.02)
            rounds = p.rounds.started
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                _post(s.url(), _trace(rng)[1])
                time.sleep(0.002)
            elapsed = time.monotonic() - started
            done = p.rounds.started - rounds
            assert done <= elapsed / p.tick + 3, (done, elapsed)
            assert done >= 0.25 * (elapsed - 0.2) / p.tick, (done, elapsed)
            wait_for(lambda: _series(s.metrics(), "otelcol_processor_tail_sampling_sampling_traces_on_memory") == 0,
                     5.0, what="every trace decided")
            m = s.metrics()
            lag_ok = _series(m, "tailsample_decision_lag_seconds_bucket", 'le="0.1"')
            assert lag_ok == _series(m, "tailsample_decision_lag_seconds_count") > 100


def test_the_attribute_inventory_samples_big_payloads_less_often(rng: random.Random,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload's attributes are counted in Python (~17 us per span): the next sample waits
    INVENTORY_COST_RATIO times what the last one took, so big payloads cost a bounded share of a core."""
    tid = trace_id(rng)
    big = make_request(service("cart"), [make_span(tid, span_id(rng), attributes={f"k{i}": "v" for i in range(20)})
                                         for _ in range(500)])
    monkeypatch.setattr(pipeline_mod, "INVENTORY_INTERVAL_S", 0.0)
    with sink() as backend:
        with serving(service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}})) as s:
            p = s.service.pipelines["traces"]
            monkeypatch.setattr(pipeline_mod, "INVENTORY_COST_RATIO", 0)
            for _ in range(3):
                p.observe(big)
            assert p.inventory.payloads == 3, "no interval, no cost bound: every payload"
            monkeypatch.setattr(pipeline_mod, "INVENTORY_COST_RATIO", 100_000)
            for _ in range(3):
                p.observe(big)
            assert p.inventory.payloads == 4, "the first, then a wait of 100,000 times its cost"
            assert p.inventory.keys("span")["k0"].count == 4 * 500
