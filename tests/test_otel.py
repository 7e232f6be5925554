"""`tailsample.otel.TailSamplingSpanProcessor` with the real OpenTelemetry SDK: a TracerProvider, real spans,
the SDK's in-memory exporter.

The engine's clock is injected (a `FakeClock` the tests advance past `decision_wait`); the worker thread ticks
every few milliseconds of real time, so a test waits for a condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Status, StatusCode, Tracer, set_span_in_context

from tailsample import Config
from tailsample.otel import TailSamplingSpanProcessor

MS = 1_000_000  # nanoseconds
DECISION_WAIT = 0.2
PAST_DECISION = DECISION_WAIT + 1.0  # what a test advances the clock by to make every pending trace due

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
SLOW = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}}


def config(*policies: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"decision_wait": "200ms", "policies": list(policies or (ERRORS, SLOW)), **extra}


class FakeClock:
    """The engine's clock, advanced by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        time.sleep(0.002)


class Setup:
    """A provider with the tail-sampling processor, and beside it a processor that sees every ended span."""

    def __init__(self, cfg: Config | str | Path | Mapping[str, Any], exporter: SpanExporter | None = None,
                 **options: Any) -> None:
        self.clock = FakeClock()
        self.exporter = exporter if exporter is not None else InMemorySpanExporter()
        options.setdefault("tick_interval", 0.005)
        self.processor = TailSamplingSpanProcessor(self.exporter, cfg, clock=self.clock, **options)
        self.everything = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.everything))
        self.tracer = self.provider.get_tracer("tests", "1.0")

    def exported(self) -> tuple[ReadableSpan, ...]:
        assert isinstance(self.exporter, InMemorySpanExporter)
        return self.exporter.get_finished_spans()

    def stats(self) -> dict[str, int]:
        return self.processor.stats()

    def decide(self) -> None:
        """Wait until the engine has every ended span, make them all due, wait until the worker has dealt with
        all of them."""
        wait_until(lambda: self.stats()["spans_pending_ingest"] == 0)
        self.clock.advance(PAST_DECISION)
        wait_until(lambda: self.stats()["spans_buffered"] == 0)


@pytest.fixture
def setups() -> Iterator[list[Setup]]:
    made: list[Setup] = []
    yield made
    for s in made:
        s.provider.shutdown()


@pytest.fixture
def make(setups: list[Setup]) -> Callable[..., Setup]:
    def _make(cfg: Config | str | Path | Mapping[str, Any] | None = None, **options: Any) -> Setup:
        s = Setup(config() if cfg is None else cfg, **options)
        setups.append(s)
        return s

    return _make


def make_trace(tracer: Tracer, label: str, *, error: bool = False, duration_ms: int = 20,
               children: int = 2) -> int:
    """A root span and its children (the first child fails when `error`); returns the trace ID."""
    start = time.time_ns()
    root = tracer.start_span("GET /checkout", start_time=start, attributes={"label": label, "http.status": 200})
    ctx = set_span_in_context(root)
    for i in range(children):
        child = tracer.start_span(f"db.query {i}", context=ctx, start_time=start + (i + 1) * MS,
                                  attributes={"label": label, "db.statement": f"SELECT {i}", "row": i})
        if error and i == 0:
            child.set_status(Status(StatusCode.ERROR, "connection reset"))
        child.end(end_time=start + (i + 2) * MS)
    root.end(end_time=start + duration_ms * MS)
    return root.get_span_context().trace_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.trace_id, ctx.span_id


def by_trace(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    out: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(ids(span)[0], []).append(span)
    return out


def span_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {ids(s)[1] for s in spans}


def assert_accounted(stats: Mapping[str, int]) -> None:
    """Once nothing is buffered, every received span is exported, failed, dropped, discarded or rejected."""
    assert stats["spans_buffered"] == 0
    assert stats["spans_received"] == (stats["spans_exported"] + stats["spans_export_failed"]
                                       + stats["spans_dropped_buffer_full"] + stats["spans_discarded"]
                                       + stats["spans_rejected"])
    assert stats["kept_spans_unmatched"] == 0


# -- what is kept ------------------------------------------------------------------------------------------------

def test_kept_traces_are_exported_whole_and_the_others_not_at_all(make: Callable[..., Setup]) -> None:
    """Scenario: an error trace, a slow trace and five boring ones end in the application.
    Guarantees: nothing is exported before the decision is due (force_flush does not decide early); then the
    error and slow traces are exported whole, as the SDK's own span objects with their attributes, the boring
    ones not at all; their spans are forgotten (nothing buffered) and every span is accounted for."""
    s = make()
    error = make_trace(s.tracer, "error", error=True)
    slow = make_trace(s.tracer, "slow", duration_ms=900)
    boring = [make_trace(s.tracer, f"boring-{i}") for i in range(5)]

    assert s.processor.force_flush()
    assert s.exported() == ()
    assert s.stats()["spans_buffered"] == 21

    s.decide()
    everything = by_trace(s.everything.get_finished_spans())
    exported = by_trace(s.exported())
    assert set(exported) == {error, slow}
    for trace_id in (error, slow):
        assert span_ids(exported[trace_id]) == span_ids(everything[trace_id])
        assert len(exported[trace_id]) == 3
        originals = {id(span) for span in everything[trace_id]}
        assert all(id(span) in originals for span in exported[trace_id])  # the SDK's objects themselves
    root = next(sp for sp in exported[error] if sp.parent is None)
    assert dict(root.attributes or {}) == {"label": "error", "http.status": 200}
    assert root.resource.attributes["service.name"] == "checkout"
    assert not set(exported) & set(boring)

    stats = s.stats()
    assert stats["spans_received"] == 21
    assert stats["spans_exported"] == 6
    assert stats["spans_discarded"] == 15
    assert stats["engine.traces_sampled"] == 2
    assert stats["engine.traces_not_sampled"] == 5
    assert_accounted(stats)
    assert s.processor.policy_stats()["errors"]["decided"] == 1


@pytest.mark.parametrize(("percentage", "kept"), [(100, 6), (0, 0)])
def test_probabilistic_all_or_nothing(make: Callable[..., Setup], percentage: int, kept: int) -> None:
    """Scenario: a probabilistic policy at 100 % and at 0 %.
    Guarantees: every trace is exported whole, or none is."""
    s = make(config({"name": "random", "type": "probabilistic",
                     "probabilistic": {"sampling_percentage": percentage}}))
    traces = [make_trace(s.tracer, f"t{i}") for i in range(kept or 6)]
    s.decide()
    exported = by_trace(s.exported())
    assert len(exported) == kept
    if kept:
        assert set(exported) == set(traces)
        assert all(len(spans) == 3 for spans in exported.values())
    assert_accounted(s.stats())


def test_a_late_span_of_a_kept_trace_is_exported_too(make: Callable[..., Setup]) -> None:
    """Scenario: an error trace is decided while one of its spans is still open; that span ends later.
    Guarantees: with a sampled decision cache, the late span follows its trace to the exporter."""
    s = make(config(decision_cache={"sampled_cache_size": 100}))
    start = time.time_ns()
    root = s.tracer.start_span("job", start_time=start)
    ctx = set_span_in_context(root)
    failing = s.tracer.start_span("step 1", context=ctx, start_time=start)
    failing.set_status(Status(StatusCode.ERROR))
    failing.end(end_time=start + MS)
    straggler = s.tracer.start_span("step 2", context=ctx, start_time=start + MS)
    root.end(end_time=start + 2 * MS)

    s.decide()
    assert len(s.exported()) == 2

    straggler.set_attribute("late", True)
    straggler.end(end_time=start + 3 * MS)
    wait_until(lambda: len(s.exported()) == 3)
    late = s.exported()[-1]
    assert ids(late)[1] == straggler.get_span_context().span_id
    assert (late.attributes or {})["late"] is True
    stats = s.stats()
    assert stats["engine.late_spans_forwarded"] == 1
    wait_until(lambda: s.stats()["spans_buffered"] == 0)
    assert_accounted(s.stats())


def test_a_late_span_of_a_trace_not_kept_is_forgotten(make: Callable[..., Setup]) -> None:
    """Scenario: a boring trace is decided, then one more of its spans ends (no decision cache).
    Guarantees: the span is judged on its own, not kept, and forgotten: nothing leaks."""
    s = make()
    start = time.time_ns()
    root = s.tracer.start_span("job", start_time=start)
    straggler = s.tracer.start_span("step", context=set_span_in_context(root), start_time=start)
    root.end(end_time=start + MS)
    s.decide()
    straggler.end(end_time=start + 2 * MS)
    wait_until(lambda: s.stats()["spans_pending_ingest"] == 0)
    s.decide()
    assert s.exported() == ()
    stats = s.stats()
    assert stats["spans_discarded"] == 2
    assert_accounted(stats)


# -- limits and failures ---------------------------------------------------------------------------------------

def test_a_full_buffer_drops_new_spans_counts_and_warns(make: Callable[..., Setup],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Scenario: max_buffered_spans=5, and eight spans of one error trace end.
    Guarantees: the application is never blocked; the three spans beyond the bound are dropped and counted, a
    warning is logged, and the five buffered spans are exported when the trace is kept."""
    caplog.set_level(logging.WARNING, logger="tailsample.otel")
    s = make(max_buffered_spans=5)
    start = time.time_ns()
    root = s.tracer.start_span("batch", start_time=start)
    ctx = set_span_in_context(root)
    for i in range(7):
        child = s.tracer.start_span(f"item {i}", context=ctx, start_time=start)
        if i == 0:
            child.set_status(Status(StatusCode.ERROR))
        child.end(end_time=start + MS)
    root.end(end_time=start + 2 * MS)

    stats = s.stats()
    assert stats["spans_received"] == 8
    assert stats["spans_dropped_buffer_full"] == 3
    assert stats["spans_buffered"] == 5
    wait_until(lambda: "spans dropped" in caplog.text)
    s.decide()
    assert len(s.exported()) == 5
    assert_accounted(s.stats())


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("collector unreachable")


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


@pytest.mark.parametrize("exporter_class", [RaisingExporter, FailingExporter])
def test_an_exporter_that_fails_does_not_reach_the_application(setups: list[Setup],
                                                                exporter_class: type[SpanExporter]) -> None:
    """Scenario: the exporter raises, or returns FAILURE, on every call.
    Guarantees: spans keep ending normally on the application thread, the worker keeps working, and the
    failures are counted; shutdown does not raise either."""
    s = Setup(config(), exporter=exporter_class())
    setups.append(s)
    make_trace(s.tracer, "error-1", error=True)
    s.decide()
    wait_until(lambda: s.stats()["export_failures"] == 1)
    make_trace(s.tracer, "error-2", error=True)
    s.decide()
    stats = s.stats()
    assert stats["export_failures"] == 2
    assert stats["spans_export_failed"] == 6
    assert stats["spans_exported"] == 0
    assert_accounted(stats)
    make_trace(s.tracer, "error-3", error=True)
    s.provider.shutdown()
    assert s.stats()["export_failures"] == 3


class RecordingExporter(InMemorySpanExporter):
    """Records whether instrumentation was suppressed during export, and that it was shut down."""

    def __init__(self) -> None:
        super().__init__()
        self.suppressed: list[object] = []
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.suppressed.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
        return super().export(spans)

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


def test_shutdown_decides_pending_traces_and_shuts_the_exporter_down(setups: list[Setup]) -> None:
    """Scenario: an error trace and a boring one end; the application shuts down before the decision is due.
    Guarantees: shutdown decides both now, exports the error trace whole (with instrumentation suppressed, so
    an instrumented exporter does not trace itself), forgets the other, then shuts the exporter down; spans
    ended afterwards are ignored."""
    exporter = RecordingExporter()
    s = Setup(config(), exporter=exporter, tick_interval=60.0)  # the worker never ticks: shutdown does it all
    setups.append(s)
    error = make_trace(s.tracer, "error", error=True)
    make_trace(s.tracer, "boring")
    s.provider.shutdown()
    assert set(by_trace(s.exported())) == {error}
    assert len(s.exported()) == 3
    assert exporter.suppressed == [True]
    assert exporter.shut_down
    stats = s.stats()
    assert stats["engine.decisions_on_flush"] == 2
    assert_accounted(stats)
    make_trace(s.tracer, "after")
    assert s.stats()["spans_dropped_after_shutdown"] == 3


def test_exports_are_cut_into_batches(make: Callable[..., Setup]) -> None:
    """Scenario: 40 spans kept, export_batch_size=16.
    Guarantees: the exporter receives them in calls of at most 16 spans, every span once."""
    calls: list[int] = []

    class Counting(InMemorySpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            calls.append(len(spans))
            return super().export(spans)

    s = make(config({"name": "all", "type": "always_sample"}), exporter=Counting(), export_batch_size=16)
    for i in range(10):
        make_trace(s.tracer, f"t{i}", children=3)
    s.decide()
    assert sum(calls) == 40 and max(calls) <= 16
    assert len(span_ids(s.exported())) == 40


def test_threads_ending_spans_at_once(make: Callable[..., Setup]) -> None:
    """Scenario: four application threads end 100 traces each, concurrently, while the worker polls.
    Guarantees: with always_sample, every span is exported exactly once."""
    s = make(config({"name": "all", "type": "always_sample"}), ingest_batch_size=7)

    def work(n: int) -> None:
        for i in range(100):
            make_trace(s.tracer, f"thread-{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.decide()
    exported = s.exported()
    assert len(exported) == 1200
    assert len({ids(sp) for sp in exported}) == 1200
    assert_accounted(s.stats())


# -- configuration -------------------------------------------------------------------------------------------

def test_config_sources(make: Callable[..., Setup], tmp_path: Path) -> None:
    """Scenario: the configuration given as a collector YAML path (str and Path), a mapping, a Config.
    Guarantees: each loads the same policies; anything else, or a bad option, is refused at construction."""
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({"processors": {"tail_sampling": config()}}), encoding="utf-8")
    for source in (str(path), path, config(), Config.from_dict(config())):
        assert make(source).processor.config.policy_names == ["errors", "slow"]
    with pytest.raises(TypeError):
        TailSamplingSpanProcessor(InMemorySpanExporter(), 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_buffered_spans"):
        TailSamplingSpanProcessor(InMemorySpanExporter(), config(), max_buffered_spans=0)


def test_a_trace_refused_by_the_engine_waits_and_is_retried(make: Callable[..., Setup]) -> None:
    """Scenario: `block_on_overflow` with room for two traces; three error traces end.
    Guarantees: the engine refuses the third (BackpressureError); its spans wait in the buffer, are given to
    the engine again once the first two are decided, and the third trace is exported whole too."""
    s = make(config(num_traces=2, block_on_overflow=True), ingest_batch_size=1)
    traces = [make_trace(s.tracer, f"error-{i}", error=True) for i in range(3)]
    assert s.stats()["engine.payloads_refused"] >= 1
    assert s.stats()["spans_pending_ingest"] == 3
    s.clock.advance(PAST_DECISION)  # the first two are decided, which makes room for the third
    wait_until(lambda: s.stats()["spans_pending_ingest"] == 0)
    s.decide()
    exported = by_trace(s.exported())
    assert set(exported) == set(traces)
    assert all(len(spans) == 3 for spans in exported.values())
    assert_accounted(s.stats())


def test_a_span_the_engine_rejects_is_dropped_alone(make: Callable[..., Setup]) -> None:
    """Scenario: a batch of three spans in which one has an all-zero trace ID (invalid in OTLP).
    Guarantees: the engine rejects that span alone (counted in spans_rejected); the two others,
    of a kept trace, are exported."""
    s = make(config({"name": "all", "type": "always_sample"}), ingest_batch_size=3)
    start = time.time_ns()
    root = s.tracer.start_span("root", start_time=start)
    child = s.tracer.start_span("child", context=set_span_in_context(root), start_time=start)
    child.end(end_time=start + MS)
    bad = ReadableSpan(name="bad", context=SpanContext(trace_id=0, span_id=7, is_remote=False),
                       resource=Resource.create({}), start_time=start, end_time=start + MS)
    s.processor.on_end(bad)
    root.end(end_time=start + 2 * MS)
    s.decide()
    assert span_ids(s.exported()) == {root.get_span_context().span_id, child.get_span_context().span_id}
    stats = s.stats()
    assert stats["spans_rejected"] == 1
    assert_accounted(stats)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_over(make: Callable[..., Setup]) -> None:
    """Scenario: the process forks while a trace is buffered (a pre-forking web server, say).
    Guarantees: the child starts with an empty buffer and a new engine and worker; it samples its own traces
    (the child's error trace is exported by its own shutdown); the parent keeps its buffer."""
    s = make()
    make_trace(s.tracer, "parent")
    wait_until(lambda: s.stats()["spans_pending_ingest"] == 0)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            fresh = s.stats()["spans_buffered"] == 0 and s.stats()["engine.spans_received"] == 0
            error = make_trace(s.tracer, "child", error=True)
            s.provider.shutdown()
            exported = by_trace(s.exported())
            code = 0 if fresh and set(exported) == {error} and len(exported[error]) == 3 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.stats()["spans_buffered"] == 3
