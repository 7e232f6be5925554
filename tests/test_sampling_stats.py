"""Statistical proof of the tailsample-only sampling (issue 7), with fixed seeds so every run is the same.

- Adjusted counts: over a million synthetic spans kept by a mix of policies (errors always, `adaptive`,
  `probabilistic` by hash), the counts re-weighted from the kept spans' adjusted counts estimate the true span
  and trace counts per service within 4 standard errors (the Horvitz-Thompson estimate of its own error),
  and that error is under 5 % of the count, so the bound means something.
- RED metrics: equal to counts made here from the input, exactly, per series, bucket and error.
- `adaptive`: every trace of a rare key kept once the rates exist; the average rate close to the goal; two
  engines fed alike agree trace for trace; every kept trace's randomness reaches its written threshold.
- `latency_percentile`: about 1 % kept per group in steady state, and after one group's durations shift, most
  of its traces kept at first and about 1 % again within one window.
- OTEP 235 composition: tiers of consistent samplers in series, equalizing and proportional.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp_builders import enc_len, enc_uint, raw_resource_spans, raw_scope_spans, raw_span
from tailsample import Config, Engine
from tailsample.traffic.synth import TrafficGenerator

TWO56 = 1 << 56
NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def th_of(trace_state: str) -> int | None:
    """The `th` of the `ot` member, as an integer threshold (None when absent)."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key == "ot":
            for sub in value.split(";"):
                k, _, v = sub.partition(":")
                if k == "th":
                    return int(v.ljust(14, "0"), 16)
    return None


def randomness(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[9:], "big")


@dataclass
class KeptSpan:
    service: str
    trace_id: bytes
    root: bool
    trace_state: str
    adjusted_count: float | None


def kept_spans(payloads: Iterable[bytes]) -> list[KeptSpan]:
    out = []
    for payload in payloads:
        req = ExportTraceServiceRequest.FromString(payload)
        for rs in req.resource_spans:
            svc = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    count = next((a.value.double_value for a in sp.attributes
                                  if a.key == "sampling.adjusted_count"), None)
                    out.append(KeptSpan(svc, sp.trace_id, not sp.parent_span_id, sp.trace_state, count))
    return out


def run(config: dict[str, Any], batches: Iterable[tuple[float, bytes]], *, end: float) -> tuple[Engine, list[bytes]]:
    """Feeds (time, payload) pairs to a new engine, polling as time goes; returns it and everything it kept."""
    engine = Engine(Config.from_dict(config))
    out: list[bytes] = []
    for t, payload in batches:
        engine.ingest(payload, now=t)
        out += engine.poll(now=t)
    out += engine.poll(now=end)
    out += engine.flush(now=end)
    return engine, out


# ---- a million synthetic spans through a mix of policies ------------------------------------------------------

MIX = {
    "decision_wait": "5s",
    "num_traces": 200_000,
    "tailsample": {"adjusted_counts": {"attribute": "sampling.adjusted_count"}, "red_metrics": {}},
    "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "adapt", "type": "adaptive",
         "adaptive": {"goal_sample_rate": 20, "key_fields": ["service.name", "span.name"],
                      "adjustment_interval": "2s"}},
        {"name": "one-percent", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}},
    ],
}


@dataclass
class MixRun:
    engine: Engine
    kept: list[KeptSpan]
    true_series: Counter[tuple[str, str, int, int]]
    true_duration_ns: dict[tuple[str, str, int, int], list[int]]
    true_spans: Counter[str]
    true_traces: Counter[str]


@pytest.fixture(scope="module")
def mix() -> MixRun:
    gen = TrafficGenerator(seed=7)
    batches = list(gen.batches(21))
    series: Counter[tuple[str, str, int, int]] = Counter()
    durations: dict[tuple[str, str, int, int], list[int]] = defaultdict(list)
    spans: Counter[str] = Counter()
    traces: Counter[str] = Counter()
    for b in batches:
        req = ExportTraceServiceRequest.FromString(b.payload)
        for rs in req.resource_spans:
            svc = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    key = (svc, sp.name, sp.kind, sp.status.code)
                    series[key] += 1
                    durations[key].append(max(0, sp.end_time_unix_nano - sp.start_time_unix_nano))
                    spans[svc] += 1
                    if not sp.parent_span_id:
                        traces[svc] += 1
    assert sum(series.values()) >= 1_000_000
    engine, out = run(MIX, ((b.t, b.payload) for b in batches), end=1e6)
    return MixRun(engine, kept_spans(out), series, durations, spans, traces)


def test_red_metrics_equal_the_true_counts(mix: MixRun) -> None:
    """Scenario: RED metrics on over a million spans. Guarantees: every series' calls, errors, duration sum and
    buckets equal what is counted here from the input; no overflow at this cardinality."""
    red = mix.engine.red_metrics()
    assert red is not None
    bounds_ns = [round(b * NS) for b in red.bounds]
    got = {(s.service, s.span_name, s.kind, s.status_code): s for s in red.series}
    assert not any(s.overflow for s in red.series)
    assert set(got) == set(mix.true_series)
    for key, calls in mix.true_series.items():
        s = got[key]
        assert s.calls == calls, key
        assert s.errors == (calls if key[3] == 2 else 0), key
        durations = mix.true_duration_ns[key]
        assert round(s.duration_sum * NS) == pytest.approx(sum(durations), rel=1e-12), key
        buckets = [0] * (len(bounds_ns) + 1)
        for d in durations:
            buckets[bisect.bisect_left(bounds_ns, d)] += 1
        assert list(s.bucket_counts) == buckets, key
    stats = mix.engine.stats()
    assert stats["red_spans"] == stats["spans_received"] == sum(mix.true_series.values())
    assert stats["red_series"] == len(mix.true_series)


def horvitz_thompson(kept: list[KeptSpan], weight_of: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Per service: the estimate Σ y/p over kept traces, and its standard error sqrt(Σ (1 - p)/p² y²)."""
    per_trace: dict[tuple[bytes, str], float] = Counter()
    p_of: dict[bytes, float] = {}
    for s in kept:
        assert s.adjusted_count is not None and s.adjusted_count >= 1.0
        per_trace[(s.trace_id, s.service)] += weight_of(s)
        p_of[s.trace_id] = 1.0 / s.adjusted_count
    est: dict[str, float] = Counter()
    var: dict[str, float] = Counter()
    for (tid, svc), y in per_trace.items():
        p = p_of[tid]
        est[svc] += y / p
        var[svc] += (1 - p) / p**2 * y**2
    return est, {k: math.sqrt(v) for k, v in var.items()}


def test_adjusted_counts_estimate_true_span_and_trace_counts(mix: MixRun) -> None:
    """Scenario: errors kept always, `adaptive` at goal 20 per (service, span name), 1 % by hash, over a million
    spans. Guarantees: per service, the spans and the traces (roots) re-weighted by their adjusted counts
    estimate the true counts within 4 standard errors, that error under 5 % of counts of 10,000 or more; the
    totals within 2 %."""
    stats = mix.engine.stats()
    assert stats["traces_sampled_probability_unknown"] == 0
    kept_share = len(mix.kept) / sum(mix.true_spans.values())
    assert 0.03 < kept_share < 0.5, kept_share  # sampling happened: the estimate is not the count
    for weight, truth in ((lambda s: 1.0, mix.true_spans), (lambda s: float(s.root), mix.true_traces)):
        est, se = horvitz_thompson(mix.kept, weight)
        for svc, true in truth.items():
            assert abs(est[svc] - true) <= 4 * se[svc], (svc, true, est[svc], se[svc])
            if true >= 10_000:
                assert se[svc] < 0.05 * true, (svc, true, se[svc])
        assert abs(sum(est.values()) - sum(truth.values())) <= 0.02 * sum(truth.values())


def test_kept_spans_carry_their_threshold(mix: MixRun) -> None:
    """Scenario: the same kept spans. Guarantees: each carries `ot=th` and an adjusted count equal to 1/p of
    it (to the precision written); error traces carry th:0 and 1."""
    for s in mix.kept:
        th = th_of(s.trace_state)
        assert th is not None and s.adjusted_count is not None
        assert s.adjusted_count == pytest.approx(TWO56 / (TWO56 - th), rel=1e-9)
    assert any(s.trace_state == "ot=th:0" and s.adjusted_count == 1.0 for s in mix.kept)


# ---- adaptive, with keys of known frequencies ------------------------------------------------------------------

def resource(service: str) -> bytes:
    return enc_len(1, enc_len(1, b"service.name") + enc_len(2, enc_len(1, service.encode())))


def span(tid: bytes, sid: bytes, *, parent: bytes = b"", name: bytes = b"GET /x", start: int, end: int,
         status: int = 0, trace_state: bytes = b"") -> bytes:
    """A SERVER span's bytes (`raw_span` with a kind, and a status and tracestate when given)."""
    extra = enc_uint(6, 2)
    if trace_state:
        extra += enc_len(3, trace_state)
    if status:
        extra += enc_len(15, enc_uint(3, status))
    return raw_span(tid, sid, parent=parent or None, name=name, start=start, end=end, extra=extra)


def request(by_service: dict[str, list[bytes]]) -> bytes:
    return b"".join(enc_len(1, raw_resource_spans([raw_scope_spans(spans)], resource=resource(svc)))
                    for svc, spans in by_service.items())


def keyed_traffic(seed: int, seconds: int, per_second: int) -> Iterator[tuple[float, bytes, list[tuple[bytes, str]]]]:
    """One-span traces, one payload per 100 ms: 70 % `hot`, 5 keys at 5 % each, and 50 rare keys of which
    one trace in ten seconds each (on average). Yields (time, payload, [(trace ID, key)])."""
    rng = random.Random(seed)
    warm = [f"warm-{i}" for i in range(5)]
    rare = [f"rare-{i}" for i in range(50)]
    for tick in range(seconds * 10):
        t = tick / 10
        by_service: dict[str, list[bytes]] = defaultdict(list)
        ids = []
        for _ in range(per_second // 10):
            x = rng.random()
            key = "hot" if x < 0.7 else warm[int((x - 0.7) / 0.05) % 5] if x < 0.95 else None
            if key is None:
                continue
            tid = rng.randbytes(16)
            by_service[key].append(span(tid, rng.randbytes(8), start=T0 + int(t * NS), end=T0 + int(t * NS) + 1000))
            ids.append((tid, key))
        if rng.random() < 0.5:
            key = rng.choice(rare)
            tid = rng.randbytes(16)
            by_service[key].append(span(tid, rng.randbytes(8), start=T0 + int(t * NS), end=T0 + int(t * NS) + 1000))
            ids.append((tid, key))
        yield t, request(by_service), ids


ADAPTIVE = {
    "decision_wait": "1s",
    "num_traces": 100_000,
    "tailsample": {"adjusted_counts": {"attribute": "sampling.adjusted_count"}},
    "policies": [{"name": "adapt", "type": "adaptive",
                  "adaptive": {"goal_sample_rate": 10, "key_fields": ["service.name"], "adjustment_interval": "5s"}}],
}


@pytest.fixture(scope="module")
def adaptive_runs() -> tuple[list[tuple[float, bytes, list[tuple[bytes, str]]]], list[KeptSpan], list[KeptSpan]]:
    traffic = list(keyed_traffic(11, 120, 2000))
    _, out1 = run(ADAPTIVE, ((t, p) for t, p, _ in traffic), end=1e6)
    _, out2 = run(ADAPTIVE, ((t, p) for t, p, _ in traffic), end=1e6)
    return traffic, kept_spans(out1), kept_spans(out2)


def test_adaptive_keeps_rare_keys_and_meets_the_goal(adaptive_runs: Any) -> None:
    """Scenario: 120 s of traffic, 2,000 traces/s over 6 frequent keys and 50 rare ones, goal 1 in 10, rates
    every 5 s. Guarantees: past the first update every rare trace is kept; the average rate is within 15 % of
    the goal; the frequent keys' re-weighted counts estimate their true counts within 4 standard errors."""
    traffic, kept, _ = adaptive_runs
    kept_ids = {s.trace_id for s in kept}
    settled = [(tid, key) for t, _, ids in traffic if t >= 6.0 for tid, key in ids]
    rare = [tid for tid, key in settled if key.startswith("rare")]
    assert len(rare) > 400
    assert all(tid in kept_ids for tid in rare)
    total = sum(len(ids) for _, _, ids in traffic)
    rate = total / len(kept)
    assert 10 / 1.15 <= rate <= 10 * 1.15, rate
    true = Counter(key for _, _, ids in traffic for _, key in ids)
    est, se = horvitz_thompson(kept, lambda s: 1.0)
    for key in ["hot", *[f"warm-{i}" for i in range(5)]]:
        assert abs(est[key] - true[key]) <= 4 * se[key], (key, true[key], est[key], se[key])


def test_adaptive_is_deterministic_and_consistent(adaptive_runs: Any) -> None:
    """Scenario: the same traffic through two engines. Guarantees: the same traces kept (no random number
    generator); every kept trace's randomness (the trace ID's last 7 bytes) reaches its written threshold."""
    _, kept1, kept2 = adaptive_runs
    assert [s.trace_id for s in kept1] == [s.trace_id for s in kept2]
    for s in kept1:
        th = th_of(s.trace_state)
        assert th is not None and randomness(s.trace_id) >= th


def test_adaptive_keys_are_bounded() -> None:
    """Scenario: 56 keys against `max_keys: 8`. Guarantees: at most 8 keys and the overflow key are tracked;
    the traces past them are counted; nothing fails."""
    config = {**ADAPTIVE, "policies": [{"name": "adapt", "type": "adaptive",
                                        "adaptive": {"key_fields": ["service.name"], "max_keys": 8}}]}
    engine, _ = run(config, ((t, p) for t, p, _ in keyed_traffic(3, 10, 500)), end=1e6)
    stats = engine.stats()
    assert stats["policy_state_keys"] <= 9
    assert stats["policy_state_overflowed_traces"] > 0


# ---- latency_percentile --------------------------------------------------------------------------------------

MEDIAN_MS = {"checkout": 40.0, "search": 120.0, "cart": 15.0}


def latency_traffic(seed: int, seconds: int, per_second: int, shift_at: float, factor: float
                    ) -> Iterator[tuple[float, bytes, list[tuple[bytes, str, float]]]]:
    """Two-span traces (root and child) of three services with lognormal durations; from `shift_at`, the
    `checkout` durations are `factor` times longer. One payload per 100 ms."""
    rng = random.Random(seed)
    services = list(MEDIAN_MS)
    for tick in range(seconds * 10):
        t = tick / 10
        start = T0 + int(t * NS)
        by_service: dict[str, list[bytes]] = defaultdict(list)
        ids = []
        for _ in range(per_second // 10):
            svc = services[rng.randrange(3)]
            median = MEDIAN_MS[svc] * (factor if svc == "checkout" and t >= shift_at else 1.0)
            d = int(rng.lognormvariate(math.log(median), 0.5) * 1e6)
            tid, root = rng.randbytes(16), rng.randbytes(8)
            by_service[svc] += [span(tid, root, start=start, end=start + d),
                                span(tid, rng.randbytes(8), parent=root, name=b"db", start=start + 1000,
                                     end=start + d // 2)]
            ids.append((tid, svc, t))
        yield t, request(by_service), ids


def test_latency_percentile_keeps_one_percent_and_follows_a_shift() -> None:
    """Scenario: 3 services, 1,000 two-span traces/s for 180 s, window 60 s; at 90 s checkout becomes 4 times
    slower. Guarantees: in steady state each group keeps 0.6 to 1.4 % of its traces; in the 2 s after the shift
    over 30 % of checkout's traces are kept (the slower ones push the percentile up as they arrive); one window
    later it is back to 0.6 to 1.4 %; the others never move."""
    config = {"decision_wait": "1s", "num_traces": 100_000,
              "policies": [{"name": "p99", "type": "latency_percentile",
                            "latency_percentile": {"percentile": 99, "window": "60s"}}]}
    traffic = list(latency_traffic(5, 180, 1000, shift_at=90.0, factor=4.0))
    # Decided as time goes: a flush far in the future would find every window empty (warm-up again).
    _, out = run(config, ((t, p) for t, p, _ in traffic), end=182.0)
    kept = {s.trace_id for s in kept_spans(out) if s.root}

    def share(svc: str, t0: float, t1: float) -> float:
        ids = [tid for _, _, batch in traffic for tid, s, t in batch if s == svc and t0 <= t < t1]
        return sum(tid in kept for tid in ids) / len(ids)

    for svc in MEDIAN_MS:
        assert 0.006 <= share(svc, 30, 90) <= 0.014, (svc, share(svc, 30, 90))
    assert share("checkout", 90, 92) > 0.3
    assert 0.006 <= share("checkout", 155, 180) <= 0.014, share("checkout", 155, 180)
    for svc in ("search", "cart"):
        assert 0.006 <= share(svc, 90, 180) <= 0.014, (svc, share(svc, 90, 180))


# ---- OTEP 235 tiers ------------------------------------------------------------------------------------------

def one_span_traffic(n: int, seed: int, trace_state: bytes = b"") -> list[tuple[float, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(0, n, 500):
        spans = [span(rng.randbytes(16), rng.randbytes(8), start=T0, end=T0 + 1000, trace_state=trace_state)
                 for _ in range(500)]
        out.append((i / 10_000, request({"svc": spans})))
    return out


def probabilistic(pct: float, mode: str) -> dict[str, Any]:
    return {"decision_wait": "1s", "num_traces": 100_000, "tailsample": {"adjusted_counts": {}},
            "policies": [{"name": "p", "type": "probabilistic",
                          "probabilistic": {"sampling_percentage": pct, "mode": mode}}]}


def test_consistent_tiers_compose() -> None:
    """Scenario: 50,000 one-span traces through a 50 % equalizing tier, then a second tier. Guarantees:
    equalizing 10 % after it keeps exactly what a lone 10 % tier keeps, with th of 10 %; proportional 10 %
    keeps a subset at about 5 % overall, with th of 5 %."""
    traffic = one_span_traffic(50_000, 1)
    _, tier1 = run(probabilistic(50, "equalizing"), traffic, end=1e6)
    assert {th_of(s.trace_state) for s in kept_spans(tier1)} == {1 << 55}
    second = [(1e6 + i, p) for i, p in enumerate(tier1)]
    _, eq = run(probabilistic(10, "equalizing"), second, end=2e6)
    _, alone = run(probabilistic(10, "equalizing"), traffic, end=1e6)
    assert {s.trace_id for s in kept_spans(eq)} == {s.trace_id for s in kept_spans(alone)}
    assert {s.trace_state for s in kept_spans(eq)} == {"ot=th:e666"}
    _, prop = run(probabilistic(10, "proportional"), second, end=2e6)
    prop_kept = kept_spans(prop)
    assert {s.trace_id for s in prop_kept} <= {s.trace_id for s in kept_spans(alone)}
    assert 0.045 <= len(prop_kept) / 50_000 <= 0.055, len(prop_kept)
    assert {s.trace_state for s in prop_kept} == {"ot=th:f3333"}


def test_incoming_tracestate_is_kept_and_unknown_erases() -> None:
    """Scenario: spans arriving with `th:8` (50 % upstream), `rv` and another vendor's entry. Guarantees: an
    always-keep policy leaves th:8 (adjusted count 2) and every other entry; a rate-limited keep erases th and
    is counted as unknown, keeping rv and the vendor entry."""
    ts = b"ot=th:8;rv:ffffffffffffff,vendor=abc"
    traffic = one_span_traffic(1000, 2, trace_state=ts)
    cfg: dict[str, Any] = {"decision_wait": "1s",
                           "tailsample": {"adjusted_counts": {"attribute": "sampling.adjusted_count"}},
                           "policies": [{"name": "all", "type": "always_sample"}]}
    _, out = run(cfg, traffic, end=1e6)
    kept = kept_spans(out)
    assert len(kept) == 1000
    assert {s.trace_state for s in kept} == {"ot=rv:ffffffffffffff;th:8,vendor=abc"}
    assert {s.adjusted_count for s in kept} == {2.0}
    cfg["policies"] = [{"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 1_000_000}}]
    engine, out = run(cfg, traffic, end=1e6)
    kept = kept_spans(out)
    assert len(kept) == 1000
    assert {s.trace_state for s in kept} == {"ot=rv:ffffffffffffff,vendor=abc"}
    assert {s.adjusted_count for s in kept} == {None}
    assert engine.stats()["traces_sampled_probability_unknown"] == 1000


def test_late_spans_carry_the_decisions_threshold() -> None:
    """Scenario: 2,000 one-span traces through a 30 % equalizing sampler with a sampled decision cache; then a
    late child span of each trace. Guarantees: the late spans of kept traces come out with the same `th` and
    adjusted count as their trace; those of dropped traces do not come out."""
    rng = random.Random(4)
    cfg = {**probabilistic(30, "equalizing"),
           "decision_cache": {"sampled_cache_size": 10_000, "non_sampled_cache_size": 10_000}}
    cfg["tailsample"] = {"adjusted_counts": {"attribute": "sampling.adjusted_count"}}
    ids = [(rng.randbytes(16), rng.randbytes(8)) for _ in range(2000)]
    first = request({"svc": [span(t, s, start=T0, end=T0 + 1000) for t, s in ids]})
    late = request({"svc": [span(t, rng.randbytes(8), parent=s, start=T0, end=T0 + 500) for t, s in ids]})
    engine = Engine(Config.from_dict(cfg))
    engine.ingest(first, now=0.0)
    kept = kept_spans(engine.poll(now=5.0))
    engine.ingest(late, now=6.0)
    late_kept = kept_spans(engine.poll(now=7.0))
    assert 450 < len(kept) < 750
    assert sorted(s.trace_id for s in late_kept) == sorted(s.trace_id for s in kept)
    assert {(s.trace_state, s.adjusted_count) for s in late_kept} == {(s.trace_state, s.adjusted_count) for s in kept}
    assert {s.trace_state for s in kept} == {"ot=th:b333"}


def test_trace_keys_come_from_the_root_span() -> None:
    """Scenario: 300 traces whose child span (of 300 different services) arrives a payload before the root (of
    service `front`), through `latency_percentile` grouped by service. Guarantees: one group, the root's."""
    rng = random.Random(6)
    cfg = {"decision_wait": "1s", "policies": [{"name": "p99", "type": "latency_percentile",
                                                "latency_percentile": {"group_by": ["service.name"]}}]}
    engine = Engine(Config.from_dict(cfg))
    for i in range(300):
        tid, root = rng.randbytes(16), rng.randbytes(8)
        engine.ingest(request({f"back-{i}": [span(tid, rng.randbytes(8), parent=root, start=T0, end=T0 + 5)]}),
                      now=0.0)
        engine.ingest(request({"front": [span(tid, root, start=T0, end=T0 + 10)]}), now=0.0)
    engine.flush(now=2.0)
    assert engine.stats()["policy_state_keys"] == 1
    lone = Engine(Config.from_dict(cfg))
    for i in range(5):  # without a root, the first span keys the trace
        lone.ingest(request({f"back-{i}": [span(rng.randbytes(16), rng.randbytes(8), parent=b"\x01" * 8,
                                                start=T0, end=T0 + 5)]}), now=0.0)
    lone.flush(now=2.0)
    assert lone.stats()["policy_state_keys"] == 5
