"""The `memory_limiter` processor: it compares live memory (Rust heap + C heap + a baseline fixed at start), not
resident memory, so it stops refusing once the buffer drains although the allocators keep freed pages.

The decision on injected readings, the binding's counters on a real engine, and the issue's probe against the
real `tailsample serve` process."""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

import tailsample
from otlp_builders import STATUS_ERROR, STATUS_UNSET, make_request, make_span, service, span_id, trace_id
from service_harness import ServeSubprocess, free_port, wait_for
from tailsample import _native
from tailsample.collector.metrics import Registry, parse_text
from tailsample.collector.settings import MemoryLimiterProcessor
from tailsample.errors import BackpressureError
from tailsample.service import memory
from tailsample.service.memory import MemoryLimiter, MemoryReading, purge_memory, read_memory

MiB = 1 << 20


class Fake:
    """Readings, purges and time the limiter sees, set by the test."""

    def __init__(self, rust: int = 0, c: int = 10 * MiB, resident: int = 60 * MiB) -> None:
        self.reading = MemoryReading(rust, c, resident)
        self.reads = self.purges = 0
        self.now = 1000.0

    def read(self) -> MemoryReading:
        self.reads += 1
        return self.reading

    def set(self, rust: int, c: int = 10 * MiB, resident: int | None = None) -> None:
        self.reading = MemoryReading(rust, c, self.reading.resident_bytes if resident is None else resident)

    def purge(self) -> None:
        self.purges += 1


def limiter(fake: Fake, limit_mib: int = 300, spike_mib: int = 60) -> tuple[MemoryLimiter, Registry]:
    registry = Registry()
    lim = MemoryLimiter(MemoryLimiterProcessor("memory_limiter", 0.1, limit_mib, spike_mib), registry,
                        read=fake.read, purge=fake.purge, clock=lambda: fake.now)
    return lim, registry


def metric(registry: Registry, name: str) -> float:
    return parse_text(registry.render())[name]


# ==== the decision, on injected readings =======================================================================

def test_baseline_is_resident_memory_at_start_minus_both_heaps():
    """Scenario: at start 60 MiB resident, 5 MiB Rust heap, 10 MiB C heap. Guarantees: baseline 45 MiB, used
    equals resident memory at start, both exported."""
    fake = Fake(rust=5 * MiB, c=10 * MiB, resident=60 * MiB)
    lim, registry = limiter(fake)
    assert lim.baseline == 45 * MiB and lim.used == 60 * MiB
    assert metric(registry, 'tailsample_memory_limiter_baseline_bytes{processor="memory_limiter"}') == 45 * MiB
    assert metric(registry, 'tailsample_memory_limiter_used_bytes{processor="memory_limiter"}') == 60 * MiB
    assert metric(registry, 'tailsample_memory_limiter_soft_limit_bytes{processor="memory_limiter"}') == 240 * MiB


@pytest.mark.parametrize("rust_mib, c_mib, refusing", [
    (0, 10, False),        # idle: 50 baseline + 10
    (179, 10, False),      # 239 MiB: just below the soft limit
    (180, 10, True),       # 240 MiB: at the soft limit
    (100, 90, True),       # the C heap counts too (request bodies, exporter queues)
    (250, 10, True),       # above the hard limit
])
def test_refuses_at_or_above_the_soft_limit_of_used_memory(rust_mib, c_mib, refusing):
    """Scenario: baseline 50 MiB, soft limit 240 MiB; a check with the given heaps. Guarantees: refusing iff
    baseline + Rust heap + C heap >= soft; a refusal raises BackpressureError (reason memory_limiter) and counts."""
    fake = Fake(rust=0, c=10 * MiB, resident=60 * MiB)
    lim, registry = limiter(fake)
    fake.set(rust_mib * MiB, c_mib * MiB)
    lim.update()
    assert lim.refusing is refusing
    if refusing:
        with pytest.raises(BackpressureError) as e:
            lim.check()
        assert e.value.reason == "memory_limiter"
        assert metric(registry, 'tailsample_memory_limiter_refused_payloads_total{processor="memory_limiter"}') == 1
    else:
        lim.check()
    assert metric(registry, 'tailsample_memory_limiter_refusing{processor="memory_limiter"}') == int(refusing)


def test_resident_memory_left_high_after_a_burst_does_not_keep_refusing():
    """Scenario: the issue's case. A burst takes the Rust heap to 250 MiB (resident 320 MiB); decisions free it
    (Rust heap 2 MiB) while the allocator keeps the pages (resident still 320 MiB). Guarantees: refusing during
    the burst, accepting at the next check after the drain, and purges asked for while resident memory stays
    above the soft limit (at most one per STUCK_PURGE_EVERY)."""
    fake = Fake()
    lim, _ = limiter(fake)
    fake.set(250 * MiB, resident=320 * MiB)
    assert lim.update() is True  # refusing: purge
    assert lim.refusing
    fake.set(2 * MiB)
    fake.now += 0.1
    assert lim.update() is False  # the purge was 0.1 s ago
    assert not lim.refusing
    lim.check()
    fake.now += memory.STUCK_PURGE_EVERY
    assert lim.update() is True  # resident memory still above soft: give it back
    fake.set(2 * MiB, resident=70 * MiB)
    fake.now += memory.STUCK_PURGE_EVERY
    assert lim.update() is False  # it came down: no more purges


def test_purges_while_refusing_at_most_once_per_purge_interval():
    """Scenario: refusing for 3 s, checked every 100 ms. Guarantees: a purge at the first check, then one per
    PURGE_EVERY, never at every check."""
    fake = Fake()
    lim, _ = limiter(fake)
    fake.set(200 * MiB, resident=320 * MiB)
    asked = 0
    for _ in range(30):
        asked += lim.update()
        fake.now += 0.1
    assert asked == 3 == int(3.0 / memory.PURGE_EVERY)


def test_hard_limit_forces_a_collection_and_reads_again():
    """Scenario: used above the hard limit. Guarantees: the limiter reads twice in that check (after gc)."""
    fake = Fake()
    lim, _ = limiter(fake)
    fake.set(400 * MiB)
    before = fake.reads
    lim.update()
    assert fake.reads == before + 2 and lim.refusing


def test_warnings_when_refusing_starts_while_it_lasts_and_when_it_stops(caplog):
    """Scenario: refusing for 25 s at 100 ms checks, 7 payloads refused per second, then accepting. Guarantees:
    one warning when it starts; "still refusing" at most once per LOG_EVERY with the count since the last; one
    when it stops with the total refused and how long; nothing at the checks in between."""
    caplog.set_level(logging.WARNING, logger="tailsample.memory_limiter")
    fake = Fake()
    lim, _ = limiter(fake)
    fake.set(200 * MiB)
    for tick in range(250):
        lim.update()
        if tick % 10 < 7:
            with pytest.raises(BackpressureError):
                lim.check()
        fake.now += 0.1
    fake.set(1 * MiB)
    lim.update()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("memory_limiter: refusing data: used 260.0 MiB (Rust heap 200.0, C heap 10.0, "
                               "baseline 50.0; resident 60.0), soft limit 240.0 MiB")
    assert "still refusing data (for 10.0 s): 70 payloads refused in the last 10.0 s" in lines[1]
    assert "still refusing data (for 20.0 s): 70 payloads refused in the last 10.0 s" in lines[2]
    assert "accepting data again after 25.0 s: 175 payloads refused; used 61.0 MiB" in lines[3]


def test_limit_percentage_is_a_share_of_total_memory(monkeypatch):
    """Scenario: limit_percentage 50, spike 10 of 1000 MiB. Guarantees: hard 500 MiB, soft 400 MiB."""
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: 1000 * MiB)
    fake = Fake()
    lim = MemoryLimiter(MemoryLimiterProcessor("m", 0.1, 0, 0, 50, 10), Registry(), read=fake.read,
                        purge=fake.purge)
    assert (lim.hard_limit, lim.soft_limit) == (500 * MiB, 400 * MiB)


# ==== the binding's counters, on a real engine =================================================================

def burst_payload(rng: random.Random, spans: int = 6000, blob: int = 400, errors: bool = False) -> bytes:
    """6,000 spans in 300 traces of 20, each with a `blob` attribute (about 2.7 MiB at 400 bytes)."""
    out = []
    for _ in range(spans // 20):
        tid, root = trace_id(rng), span_id(rng)
        out += [make_span(tid, span_id(rng), parent=root, name=f"step {i}", attributes={"blob": "x" * blob},
                          status=STATUS_ERROR if errors and i == 0 else STATUS_UNSET) for i in range(20)]
    return make_request(service("burst"), out)


def test_rust_heap_count_follows_the_engine_buffer_and_a_purge_returns_resident_memory(rng):
    """Scenario: 40 MiB-ish of spans buffered in an engine, then flushed, then a purge. Guarantees: the live Rust
    heap rises by at least the engine's own accounting and falls back within 2 MiB of where it was; the purge
    gives at least half of that back to the system (resident memory)."""
    payload = burst_payload(rng)
    engine = tailsample.Engine(tailsample.Config.default())
    start = read_memory()
    for _ in range(15):
        engine.ingest(payload, now=1000.0)
    full = read_memory()
    buffered = engine.stats()["memory_bytes"]
    assert buffered > 30 * MiB
    assert full.rust_heap_bytes - start.rust_heap_bytes >= buffered
    engine.flush(now=2000.0)
    drained = read_memory()
    assert drained.rust_heap_bytes - start.rust_heap_bytes < 2 * MiB
    purge_memory()
    after = read_memory()
    assert drained.resident_bytes - after.resident_bytes > buffered // 2, (drained, after)
    stats = _native.memory_stats()
    assert set(stats) == {"heap_bytes", "committed_bytes", "peak_committed_bytes"}
    assert set(_native.memory_purge()) == set(stats)


# ==== the probe, against the real service process =====================================================

CHECK_INTERVAL = 0.1
DECISION_WAIT = 6.0
RECOVERY_BOUND = 10 * CHECK_INTERVAL  # after the buffer has drained


def _post(port: int, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body,
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def test_serve_refuses_a_burst_then_accepts_again_once_the_buffer_drains(tmp_path: Path):
    """Scenario: the issue's probe, shortened: `memory_limiter {check_interval: 100ms, limit_mib: 300,
    spike_limit_mib: 60}` in front of a 6 s decision_wait; three clients post 6,000-span payloads (2.7 MiB)
    until the first 503, then quiet. Guarantees: while refusing, HTTP answers 503 and gRPC RESOURCE_EXHAUSTED and
    the engine takes nothing; once the engine's buffer has drained, a payload is accepted within
    RECOVERY_BOUND (10 check intervals); resident memory, above the soft limit after the burst, is handed back
    below it; the log says when refusing started and stopped, with the count."""
    rng = random.Random(18)
    payloads = [burst_payload(rng, errors=k == 0) for k in range(4)]
    small = burst_payload(rng, spans=20, errors=True)
    http, grpc_port, metrics_port, health_port = free_port(), free_port(), free_port(), free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http}"},
                                             "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "processors": {
            "memory_limiter": {"check_interval": f"{int(CHECK_INTERVAL * 1000)}ms", "limit_mib": 300,
                               "spike_limit_mib": 60},
            "tail_sampling": {"decision_wait": f"{DECISION_WAIT}s", "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}},
        "exporters": {"file": {"path": str(tmp_path / "kept.json")}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "service": {"extensions": ["health_check"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "tail_sampling"],
                                             "exporters": ["file"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}}},
    }
    s = ServeSubprocess(tmp_path, "serve", cfg, health_port=health_port, metrics_port=metrics_port)
    try:
        soft = s.metrics()['tailsample_memory_limiter_soft_limit_bytes{processor="memory_limiter"}']
        # ---- burst until refused
        refused = threading.Event()
        codes: list[int] = []

        def client(k: int) -> None:
            deadline = time.monotonic() + 30
            while not refused.is_set() and time.monotonic() < deadline:
                code = _post(http, payloads[k % len(payloads)])
                codes.append(code)
                refused.set() if code == 503 else None
                k += 1

        clients = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        assert refused.is_set() and set(codes) == {200, 503}, codes
        # ---- while over the limit: refused, nothing taken
        before = s.metrics()
        assert before['tailsample_memory_limiter_refusing{processor="memory_limiter"}'] == 1
        assert _post(http, small) == 503
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as e:
                channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(small, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        during = s.metrics()
        assert during['tailsample_memory_limiter_refusing{processor="memory_limiter"}'] == 1, \
            "the refusal window closed during the checks: lengthen decision_wait"
        assert _sum(before, "tailsample_engine_spans_received") >= 6000 * codes.count(200)
        assert _sum(during, "tailsample_engine_spans_received") == _sum(before, "tailsample_engine_spans_received")
        assert _sum(during, "tailsample_engine_spans_in_memory") > 0
        assert during['tailsample_memory_limiter_refused_payloads_total{processor="memory_limiter"}'] >= \
            before['tailsample_memory_limiter_refused_payloads_total{processor="memory_limiter"}'] + 2
        assert during['tailsample_memory_limiter_resident_bytes{processor="memory_limiter"}'] >= soft
        # ---- quiet: the buffer drains, then data is accepted again within the bound
        wait_for(lambda: _sum(s.metrics(), "tailsample_engine_spans_in_memory") == 0, timeout=DECISION_WAIT + 20,
                 interval=0.05, what="the engine's buffer drained")
        drained = time.monotonic()
        while _post(http, small) != 200:
            assert time.monotonic() - drained < RECOVERY_BOUND + 5, "still refusing long after the drain"
            time.sleep(0.02)
        recovered = time.monotonic() - drained
        print(f"burst: {codes.count(200)} payloads taken, refused after {len(codes)}; accepted again "
              f"{recovered:.3f} s after the drain")
        assert recovered <= RECOVERY_BOUND, f"accepted {recovered:.2f} s after the drain"
        after = s.metrics()
        assert after['tailsample_memory_limiter_used_bytes{processor="memory_limiter"}'] < soft
        # ---- and the allocators give the pages back
        wait_for(lambda: s.metrics()['tailsample_memory_limiter_resident_bytes{processor="memory_limiter"}'] < soft,
                 timeout=4 * memory.STUCK_PURGE_EVERY, interval=0.1, what="resident memory back below the soft limit")
        assert s.metrics()['tailsample_memory_limiter_purges_total{processor="memory_limiter"}'] >= 1
    finally:
        s.proc.terminate()
        s.proc.wait(30)
    log = s.log.read_text()
    # One line per change of state, each refusal closed by an acceptance. The decision round that frees the buffer
    # encodes the kept output first, so on a loaded machine a check can land in it and refuse once more, briefly:
    # a real second window, logged as such, never a flood.
    transitions = [line for line in log.splitlines()
                   if "memory_limiter: refusing data: used" in line or "memory_limiter: accepting data again" in line]
    assert 2 <= len(transitions) <= 6, log
    assert all(("refusing" in t) == (i % 2 == 0) for i, t in enumerate(transitions)), log
    assert "accepting data again" in transitions[-1], log
    assert "Traceback" not in log
