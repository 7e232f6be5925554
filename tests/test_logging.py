"""`tailsample.logging`: trace and span IDs on log records, with the real OpenTelemetry SDK.

Spans come from a local `TracerProvider` (never the global one); `start_as_current_span` makes them current in
the OpenTelemetry context whatever the global provider is. Every test logs on a logger of its own, whose handlers
it adds itself; its records also propagate to the root logger, where only pytest's capture handlers are (pytest
would attach those to a non-propagating logger itself, and then the logger would not be fresh).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tailsample.logging import (
    JsonFormatter,
    TraceContextFilter,
    current_span_id,
    current_trace_id,
    get_current_trace_id,
    install,
)

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


class Capture(logging.Handler):
    """Keeps the records it handles, and each one's formatted line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def tracer() -> trace.Tracer:
    return TracerProvider().get_tracer("tests.logging")


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of the test's own, at DEBUG, without handlers; those the test adds are removed afterwards."""
    log = logging.getLogger(f"tests.logging.{request.node.name}")
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


@pytest.fixture
def capture(logger: logging.Logger) -> Capture:
    """A capturing handler on `logger`, with the TraceContextFilter."""
    handler = Capture()
    handler.addFilter(TraceContextFilter())
    logger.addHandler(handler)
    return handler


def ids_of(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_the_filter_puts_the_live_span_ids_on_a_record(tracer: trace.Tracer, logger: logging.Logger,
                                                       capture: Capture) -> None:
    """Scenario: a record is logged inside a span, through a handler with the TraceContextFilter.
    Guarantees: the record carries that span's trace ID (32 lowercase hex) and span ID (16 lowercase hex), equal
    to the span's context, and no sampled flag (the head flag means nothing under tail sampling); the helpers
    return the same IDs inside the span."""
    with tracer.start_as_current_span("checkout") as span:
        logger.info("paying")
        assert current_trace_id() == ids_of(span)[0]
        assert current_span_id() == ids_of(span)[1]
        assert get_current_trace_id() == ids_of(span)[0]
    (record,) = capture.records
    assert (record.trace_id, record.span_id) == ids_of(span)
    assert HEX32.fullmatch(record.trace_id) and HEX16.fullmatch(record.span_id)
    assert not hasattr(record, "trace_sampled")


def test_outside_any_span_the_fields_are_empty_and_format_strings_work(logger: logging.Logger,
                                                                       capture: Capture) -> None:
    """Scenario: a record is logged outside any span, formatted with %(trace_id)s and %(span_id)s.
    Guarantees: the fields exist and are "", so the format string never fails; the record
    is not dropped; the helpers return None, and get_current_trace_id the seed's default or the one given."""
    capture.setFormatter(logging.Formatter("%(levelname)s [%(trace_id)s/%(span_id)s] %(message)s"))
    logger.warning("no request here")
    (record,) = capture.records
    assert (record.trace_id, record.span_id) == ("", "")
    assert capture.lines == ["WARNING [/] no request here"]
    assert current_trace_id() is None and current_span_id() is None
    assert get_current_trace_id() == "no-active-trace"
    assert get_current_trace_id(default="-") == "-"


def test_nested_spans_give_the_inner_span_id(tracer: trace.Tracer, logger: logging.Logger,
                                             capture: Capture) -> None:
    """Scenario: records logged in a parent span, in its child, then in the parent again after the child ends.
    Guarantees: all share the trace ID; each carries the span ID of the innermost span current when logged."""
    with tracer.start_as_current_span("request") as parent:
        logger.info("in parent")
        with tracer.start_as_current_span("db query") as child:
            logger.info("in child")
        logger.info("back in parent")
    assert ids_of(parent)[0] == ids_of(child)[0]
    assert [(r.trace_id, r.span_id) for r in capture.records] == [ids_of(parent), ids_of(child), ids_of(parent)]


def test_a_sampled_out_span_still_has_its_trace_id(logger: logging.Logger, capture: Capture) -> None:
    """Scenario: a TracerProvider with sampler ALWAYS_OFF: the span is not recording.
    Guarantees: unlike the seed's is_recording() check, the record and get_current_trace_id still give its real
    trace ID (the one propagated downstream), and nothing about the head decision."""
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("tests.logging")
    with tracer.start_as_current_span("dropped at the head") as span:
        assert not span.is_recording()
        logger.info("still correlated")
        assert get_current_trace_id() == ids_of(span)[0]
    (record,) = capture.records
    assert (record.trace_id, record.span_id) == ids_of(span)
    assert HEX32.fullmatch(record.trace_id) and record.trace_id != "0" * 32
    assert not hasattr(record, "trace_sampled")


def test_a_remote_parent_without_a_local_span_gives_the_callers_trace_id(logger: logging.Logger,
                                                                          capture: Capture) -> None:
    """Scenario: the current span is a NonRecordingSpan of a remote context (as extracted from `traceparent`).
    Guarantees: its trace and span IDs are reported, formatted with their leading zeros."""
    remote = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(remote)):
        logger.info("from upstream")
    (record,) = capture.records
    assert (record.trace_id, record.span_id) == ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7")


def test_the_json_formatter_writes_one_parseable_object_per_line(tracer: trace.Tracer, logger: logging.Logger,
                                                                 capture: Capture) -> None:
    """Scenario: the JsonFormatter on a handler with the filter; a record with %-arguments, a multi-line message
    and extras inside a span, an exception logged inside the span, and a record outside any span.
    Guarantees: every line is one JSON object (no raw newline); timestamp is RFC 3339 UTC with milliseconds and
    matches the record's time; level, logger, message (arguments merged), trace_id and span_id are there inside
    the span (and no `trace_sampled`: under tail sampling the head flag is false news) and the trace fields absent
    outside; extras appear as given; the traceback is under
    `exception`."""
    capture.setFormatter(JsonFormatter())
    with tracer.start_as_current_span("checkout") as span:
        logger.info("order %s paid\nsecond line", 42, extra={"order_id": 42, "amount": 9.5, "tags": ["a", "b"]})
        try:
            raise RuntimeError("card declined")
        except RuntimeError:
            logger.exception("payment failed")
    logger.debug("idle")
    assert all("\n" not in line for line in capture.lines)
    paid, failed, idle = (json.loads(line) for line in capture.lines)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", paid["timestamp"])
    stamp = datetime.strptime(paid["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    created = datetime.fromtimestamp(capture.records[0].created, tz=timezone.utc)
    # The stamp is the record's time cut to the millisecond; `created` is a float rounded to the microsecond here,
    # so a record made at .2799997 s reads .280000 against a stamp of .279: the full millisecond is allowed.
    assert timedelta(0) <= created - stamp <= timedelta(milliseconds=1)
    assert paid["level"] == "INFO" and paid["logger"] == logger.name
    assert paid["message"] == "order 42 paid\nsecond line"
    assert (paid["trace_id"], paid["span_id"]) == ids_of(span)
    assert not {k for k in paid if "sampled" in k}
    assert (paid["order_id"], paid["amount"], paid["tags"]) == (42, 9.5, ["a", "b"])
    assert "exception" not in paid

    assert failed["level"] == "ERROR" and failed["message"] == "payment failed"
    assert failed["trace_id"] == ids_of(span)[0]
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: card declined" in failed["exception"]

    assert idle["level"] == "DEBUG" and idle["message"] == "idle"
    assert not {"trace_id", "span_id", "trace_sampled", "exception"} & idle.keys()


def test_the_json_formatter_reads_the_span_itself_without_the_filter(tracer: trace.Tracer,
                                                                     logger: logging.Logger) -> None:
    """Scenario: a handler with the JsonFormatter and no TraceContextFilter; records inside and outside a span.
    Guarantees: the formatter reads the current span context itself: the IDs are there inside the span and
    absent outside."""
    handler = Capture()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    with tracer.start_as_current_span("job") as span:
        logger.info("inside")
    logger.info("outside")
    inside, outside = (json.loads(line) for line in handler.lines)
    assert (inside["trace_id"], inside["span_id"]) == ids_of(span)
    assert "trace_id" not in outside and "span_id" not in outside


def test_the_json_formatter_keeps_the_record_ids_over_the_current_context(tracer: trace.Tracer,
                                                                          logger: logging.Logger) -> None:
    """Scenario: a record filtered inside one span (as a QueueHandler's filter would in the application thread)
    is formatted later inside another span, and a record filtered outside any span is formatted inside a span.
    Guarantees: the formatter writes the IDs the filter set, never the context current at formatting time; a
    second TraceContextFilter does not overwrite them either."""
    record_filter, formatter = TraceContextFilter(), JsonFormatter()
    with tracer.start_as_current_span("request") as request_span:
        in_request = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "in request", (), None)
        record_filter.filter(in_request)
    no_span = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "no span", (), None)
    record_filter.filter(no_span)
    with tracer.start_as_current_span("listener"):
        assert TraceContextFilter().filter(in_request) is True
        first, second = json.loads(formatter.format(in_request)), json.loads(formatter.format(no_span))
    assert (first["trace_id"], first["span_id"]) == ids_of(request_span)
    assert "trace_id" not in second and "span_id" not in second


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_the_json_formatter_makes_any_extra_json_safe(logger: logging.Logger, capture: Capture) -> None:
    """Scenario: extras JSON cannot hold as is (an object, a set, NaN, a circular list, a tuple-keyed dict, an
    object whose repr raises) and extras named like the formatter's own keys (level, timestamp, logger).
    Guarantees: the line is still one strict JSON object (no NaN literal); the odd values are written as their
    repr (or a placeholder), the plain extras as they are; a clashing extra is written as extra_<name> and does
    not replace the formatter's field."""
    capture.setFormatter(JsonFormatter())
    circular: list[Any] = []
    circular.append(circular)
    logger.info("odd values", extra={"thing": Opaque(), "ids": {3}, "ratio": math.nan, "loop": circular,
                                     "by_pair": {(1, 2): "x"}, "broken": Unrepresentable(), "plain": "ok"})
    logger.info("clashes", extra={"level": "custom", "timestamp": 0, "logger": "mine"})
    odd_line, clash_line = capture.lines
    odd = json.loads(odd_line, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert odd["thing"] == "<Opaque thing>" and odd["ids"] == "{3}" and odd["ratio"] == "nan"
    assert odd["loop"] == "[[...]]" and odd["by_pair"] == "{(1, 2): 'x'}"
    assert odd["broken"] == "<unrepresentable Unrepresentable>" and odd["plain"] == "ok"
    assert odd["message"] == "odd values"
    clash = json.loads(clash_line)
    assert (clash["level"], clash["logger"]) == ("INFO", logger.name) and clash["timestamp"] != 0
    assert (clash["extra_level"], clash["extra_timestamp"], clash["extra_logger"]) == ("custom", 0, "mine")


def test_a_filter_never_raises_nor_drops_even_with_a_broken_span(logger: logging.Logger, capture: Capture) -> None:
    """Scenario: the current span's get_span_context raises.
    Guarantees: the record is still logged, with empty trace fields, and the helpers report no trace."""

    class BrokenSpan(NonRecordingSpan):
        def get_span_context(self) -> SpanContext:
            raise RuntimeError("broken instrumentation")

    with trace.use_span(BrokenSpan(trace.INVALID_SPAN_CONTEXT)):
        logger.error("still logged")
        assert current_trace_id() is None and get_current_trace_id() == "no-active-trace"
    (record,) = capture.records
    assert (record.trace_id, record.span_id) == ("", "")


def test_install_on_a_fresh_logger_produces_correlated_lines(tracer: trace.Tracer, logger: logging.Logger) -> None:
    """Scenario: install() on a logger with a StreamHandler to an io.StringIO and a %(trace_id)s format; then
    install(json=True) on the same logger, twice; records from a child logger that propagate to it.
    Guarantees: the lines carry the live trace and span IDs, including the child logger's records (the filter is
    on the handler); the filter is added once however often install() runs; json=True switches the handler to
    one JSON object per line with the IDs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s trace=%(trace_id)s span=%(span_id)s %(message)s"))
    logger.addHandler(handler)
    install(logger)
    with tracer.start_as_current_span("request") as span:
        logger.info("hello")
        logging.getLogger(f"{logger.name}.child").info("from the child")
    trace_id, span_id = ids_of(span)
    assert stream.getvalue().splitlines() == [f"{logger.name} trace={trace_id} span={span_id} hello",
                                              f"{logger.name}.child trace={trace_id} span={span_id} from the child"]

    install(logger, json=True)
    install(logger, json=True)
    assert sum(isinstance(f, TraceContextFilter) for f in handler.filters) == 1
    assert isinstance(handler.formatter, JsonFormatter)
    stream.truncate(0)
    stream.seek(0)
    with tracer.start_as_current_span("request 2") as span:
        logger.info("as json")
    (line,) = stream.getvalue().splitlines()
    parsed = json.loads(line)
    assert (parsed["message"], parsed["trace_id"], parsed["span_id"]) == ("as json", *ids_of(span))


def test_install_refuses_a_non_root_logger_without_handlers(logger: logging.Logger) -> None:
    """Scenario: install() on a non-root logger that has no handler.
    Guarantees: a ValueError naming the logger, not a silent no-op (its records are written elsewhere)."""
    with pytest.raises(ValueError, match=re.escape(repr(logger.name))):
        install(logger)


def test_install_on_the_root_without_handlers_adds_a_stderr_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario: install(json=True) with no logger given while the root logger has no handler (pytest's own
    handlers set aside for the test).
    Guarantees: like logging.basicConfig, a StreamHandler to stderr is added to the root, with the filter and
    the JsonFormatter; the root's level is left alone."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = root.level
    install(json=True)
    (handler,) = root.handlers
    assert type(handler) is logging.StreamHandler and handler.stream is sys.stderr
    assert any(isinstance(f, TraceContextFilter) for f in handler.filters)
    assert isinstance(handler.formatter, JsonFormatter)
    assert root.level == level


def test_records_from_threads_carry_their_own_span(tracer: trace.Tracer, logger: logging.Logger,
                                                   capture: Capture) -> None:
    """Scenario: four threads each open a span, wait until all four spans are open at once, and log; a fifth
    thread is started from inside a span in the main thread, once plainly and once in a copied context.
    Guarantees: each thread's record carries its own span's IDs (the context is per thread); a plain thread does
    not inherit the starter's span (empty fields), one run in contextvars.copy_context() does."""
    barrier = threading.Barrier(4)
    expected: dict[str, tuple[str, str]] = {}

    def work(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            expected[name] = ids_of(span)
            barrier.wait(timeout=5)
            logger.info(name)

    threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    got = {r.getMessage(): (r.trace_id, r.span_id) for r in capture.records}
    assert got == expected
    assert len({trace_id for trace_id, _ in got.values()}) == 4

    with tracer.start_as_current_span("main") as main_span:
        plain = threading.Thread(target=logger.info, args=("plain thread",))
        copied = threading.Thread(target=contextvars.copy_context().run, args=(logger.info, "copied context"))
        for t in (plain, copied):
            t.start()
            t.join(timeout=5)
    by_message = {r.getMessage(): r for r in capture.records}
    assert by_message["plain thread"].trace_id == ""
    assert (by_message["copied context"].trace_id, by_message["copied context"].span_id) == ids_of(main_span)


def test_records_from_asyncio_tasks_carry_their_own_span(tracer: trace.Tracer, logger: logging.Logger,
                                                         capture: Capture) -> None:
    """Scenario: three asyncio tasks each open a span and log before and after yielding to the others (so
    their steps interleave); a task created inside a span logs without opening one.
    Guarantees: each record carries its own task's span, across the interleaving; the child task inherits the
    span current where it was created."""
    expected: dict[str, tuple[str, str]] = {}

    async def handle(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            expected[name] = ids_of(span)
            logger.info("%s start", name)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            logger.info("%s end", name)

    async def main() -> tuple[str, str]:
        await asyncio.gather(*(handle(f"task-{i}") for i in range(3)))
        with tracer.start_as_current_span("parent") as parent:
            await asyncio.create_task(asyncio.to_thread(logger.info, "child in a thread"))
            await asyncio.create_task(_log_async(logger, "child task"))
        return ids_of(parent)

    parent_ids = asyncio.run(main())
    records = {r.getMessage(): (r.trace_id, r.span_id) for r in capture.records}
    for name, ids in expected.items():
        assert records[f"{name} start"] == records[f"{name} end"] == ids
    messages = [r.getMessage() for r in capture.records]
    assert messages.index("task-2 start") < messages.index("task-0 end")  # the tasks did interleave
    assert records["child task"] == records["child in a thread"] == parent_ids


async def _log_async(logger: logging.Logger, message: str) -> None:
    logger.info(message)


def test_the_module_works_without_the_opentelemetry_api() -> None:
    """Scenario: a fresh interpreter in which `opentelemetry.trace` cannot be imported.
    Guarantees: tailsample.logging imports; the helpers report no trace (None, the default); the filter sets
    empty fields and the JSON formatter writes a line without trace fields."""
    code = """
import io, json, logging, sys
sys.modules["opentelemetry.trace"] = None  # any import of it now raises ImportError
from tailsample.logging import (JsonFormatter, TraceContextFilter, current_span_id, current_trace_id,
                                get_current_trace_id, install)
import tailsample.logging as module
assert module._otel_trace is None
assert current_trace_id() is None and current_span_id() is None
assert get_current_trace_id() == "no-active-trace"
stream = io.StringIO()
log = logging.getLogger("no-otel")
log.addHandler(logging.StreamHandler(stream))
install(log, json=True)
log.warning("hello")
line = json.loads(stream.getvalue())
assert line["message"] == "hello" and "trace_id" not in line, line
record = logging.makeLogRecord({"msg": "x"})
assert TraceContextFilter().filter(record) and record.trace_id == "" and record.span_id == ""
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
