"""Several Python threads feeding and polling one engine at once (the GIL is released while Rust works).

Contract: one engine may be fed from several threads at once without losing or duplicating a span. Time is a
shared logical clock that the polling thread advances; nothing sleeps.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import tailsample
from otlp_builders import (
    assert_stats_invariant,
    make_resource_spans,
    make_scope_spans,
    make_span,
    new_engine,
    probabilistic_hash,
    probabilistic_threshold,
    request,
    service,
    span_id,
    spans_out,
    trace_id,
)

THREADS = 4
SALT = "concurrency"
PCT = 40
ALWAYS = {"name": "always", "type": "always_sample"}
HALF = {"name": "random", "type": "probabilistic", "probabilistic": {"sampling_percentage": PCT, "hash_salt": SALT}}


def kept_by(policy: dict[str, Any]) -> Callable[[bytes], bool]:
    if policy is ALWAYS:
        return lambda tid: True
    threshold = probabilistic_threshold(PCT)
    return lambda tid: probabilistic_hash(tid, SALT) <= threshold


def build_work(rng: random.Random, traces_per_thread: int, overlapping: bool
               ) -> tuple[list[list[bytes]], dict[tuple[bytes, bytes], bytes]]:
    """Payloads for each thread, and every span sent ((trace ID, span ID) -> span bytes).

    Disjoint: each thread has its own traces. Overlapping: span i of every trace goes to thread i % THREADS, so
    all threads send spans of the same traces at the same time."""
    per_thread: list[list[tuple[str, Any]]] = [[] for _ in range(THREADS)]
    sent: dict[tuple[bytes, bytes], bytes] = {}
    for t in range(THREADS * traces_per_thread):
        tid = trace_id(rng)
        n = rng.randint(1, 8)
        root = span_id(rng)
        for i in range(n):
            s = make_span(tid, root if i == 0 else span_id(rng), parent=b"" if i == 0 else root, name=f"op{i}")
            sent[(tid, s.span_id)] = s.SerializeToString()
            owner = (i % THREADS) if overlapping else (t % THREADS)
            per_thread[owner].append((rng.choice(["a", "b", "c"]), s))
    payloads: list[list[bytes]] = []
    for items in per_thread:
        if not overlapping:
            rng.shuffle(items)
        out = []
        k = 0
        while k < len(items):
            chunk = items[k:k + rng.randint(1, 12)]
            k += len(chunk)
            by_res: dict[str, list[Any]] = {}
            for res, s in chunk:
                by_res.setdefault(res, []).append(s)
            out.append(request(*[make_resource_spans(service(r), [make_scope_spans(ss)])
                                 for r, ss in by_res.items()]))
        payloads.append(out)
    return payloads, sent


def run_concurrently(eng: tailsample.Engine, work: list[list[bytes]], step: float) -> list[bytes]:
    """THREADS ingesting threads and one polling thread that advances the clock by `step` per poll and checks
    the counters as it goes; then a flush. Returns every output payload. Re-raises any thread's error."""
    clock = [0.0]
    outputs: list[bytes] = []
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def ingester(k: int) -> None:
        try:
            start.wait()
            for payload in work[k]:
                while True:
                    try:
                        eng.ingest(payload, now=clock[0])
                        break
                    except tailsample.BackpressureError:
                        continue  # nothing was taken: retry; the poller makes room
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def poller() -> None:
        try:
            start.wait()
            while not done.is_set():
                clock[0] = round(clock[0] + step, 6)
                outputs.extend(eng.poll(now=clock[0]))
                assert_stats_invariant(eng)
                eng.policy_stats()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
            done.set()

    threads = [threading.Thread(target=ingester, args=(k,)) for k in range(THREADS)]
    poll_thread = threading.Thread(target=poller)
    for t in [*threads, poll_thread]:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    poll_thread.join(timeout=120)
    assert not any(t.is_alive() for t in [*threads, poll_thread]), "a thread hung"
    if errors:
        raise errors[0]
    outputs.extend(eng.poll(now=clock[0] + 100.0))
    outputs.extend(eng.flush(now=clock[0] + 100.0))
    return outputs


def check_exactly_once(outputs: list[bytes], sent: dict[tuple[bytes, bytes], bytes],
                       keep: Callable[[bytes], bool]) -> None:
    out = spans_out(outputs)
    counts = Counter((tid, sid) for tid, sid, _ in out)
    twice = [k for k, c in counts.items() if c > 1]
    assert not twice, f"{len(twice)} spans came out more than once"
    want = {k for k in sent if keep(k[0])}
    got = set(counts)
    assert got == want, f"{len(want - got)} kept spans lost, {len(got - want)} spans that should not be out"
    for tid, sid, raw in out:
        assert raw == sent[(tid, sid)]


@pytest.mark.parametrize("overlapping", [False, True], ids=["disjoint-traces", "overlapping-traces"])
@pytest.mark.parametrize("shards", [1, 4])
@pytest.mark.parametrize("policy", [ALWAYS, HALF], ids=["always_sample", "probabilistic"])
def test_threads_ingesting_and_polling_lose_and_duplicate_nothing(overlapping, shards, policy, rng):
    """Scenario: four threads ingest ~250 traces each (1-8 spans, spread over many payloads; disjoint, or every
    trace's spans split across all four threads) while a fifth polls, advancing the clock by 0.02 s per poll
    (decision_wait 0.5 s, so many traces are decided while their spans still arrive; no caches: the rest start
    new traces). Guarantees: every span of a kept trace comes out exactly once, byte-identical, and no other;
    with a probabilistic policy (a per-trace-ID decision) exactly the spans of the traces it keeps; the counters
    add up at every poll and at the end."""
    eng = new_engine(policy, decision_wait="500ms", num_shards=shards)
    work, sent = build_work(rng, 250, overlapping)
    outputs = run_concurrently(eng, work, step=0.02)
    check_exactly_once(outputs, sent, kept_by(policy))
    s = assert_stats_invariant(eng)
    assert s["spans_received"] == len(sent)
    assert s["traces_in_memory"] == 0
    assert s["payloads_received"] == sum(len(w) for w in work)


@pytest.mark.parametrize("shards", [1, 4])
def test_threads_with_decision_caches_lose_and_duplicate_nothing(shards, rng):
    """Scenario: as above with overlapping traces and decision caches on, so spans arriving after their
    trace's decision follow it (forwarded when kept, discarded when not). Guarantees: exactly the spans of the
    traces the probabilistic policy keeps, once each."""
    eng = new_engine(HALF, decision_wait="300ms", num_shards=shards,
                     decision_cache={"sampled_cache_size": 10_000, "non_sampled_cache_size": 10_000})
    work, sent = build_work(rng, 250, overlapping=True)
    outputs = run_concurrently(eng, work, step=0.02)
    check_exactly_once(outputs, sent, kept_by(HALF))
    s = assert_stats_invariant(eng)
    assert s["spans_received"] == len(sent)


@pytest.mark.parametrize("shards", [1, 4])
def test_threads_under_backpressure_lose_nothing(shards, rng):
    """Scenario: num_traces 40 with block_on_overflow and four threads pushing 200 traces each, retrying every
    refused payload while the poller makes room. Guarantees: refusals happen and take nothing; in the end every
    span came out exactly once and nothing was evicted."""
    eng = new_engine(ALWAYS, decision_wait="200ms", num_traces=40, block_on_overflow=True, num_shards=shards)
    work, sent = build_work(rng, 200, overlapping=False)
    outputs = run_concurrently(eng, work, step=0.05)
    check_exactly_once(outputs, sent, kept_by(ALWAYS))
    s = assert_stats_invariant(eng)
    assert s["traces_evicted"] == 0
    assert s["payloads_refused"] > 0
    assert s["spans_received"] == len(sent)


def test_one_trace_fed_by_every_thread_at_once(rng):
    """Scenario: one trace of 4000 spans, a thousand from each of four threads at the same instant, decided only
    after all arrived. Guarantees: one trace, all 4000 spans out once."""
    eng = new_engine(ALWAYS, decision_wait="10s")
    tid = trace_id(rng)
    sent: dict[tuple[bytes, bytes], bytes] = {}
    work: list[list[bytes]] = []
    for k in range(THREADS):
        payloads = []
        for _ in range(100):
            spans = [make_span(tid, span_id(rng), parent=tid[:8]) for _ in range(10)]
            for s in spans:
                sent[(tid, s.span_id)] = s.SerializeToString()
            payloads.append(request(make_resource_spans(service(f"t{k}"), [make_scope_spans(spans)])))
        work.append(payloads)
    start = threading.Barrier(THREADS)

    def feed(k: int) -> None:
        start.wait()
        for p in work[k]:
            eng.ingest(p, now=0.0)

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert eng.stats()["traces_received"] == 1
    check_exactly_once(eng.poll(now=10.0), sent, lambda _: True)
