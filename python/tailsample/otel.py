"""Tail sampling inside a Python application: an OpenTelemetry SDK span processor, no collector needed.

```python
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from tailsample.otel import TailSamplingSpanProcessor

provider = TracerProvider()
provider.add_span_processor(TailSamplingSpanProcessor(OTLPSpanExporter(), config="tail_sampling.yaml"))
```

Every ended span is encoded to OTLP protobuf (by the SDK's own OTLP encoder, several spans per call) and given to
a tailsample `Engine`; the span object itself waits in a bounded map keyed by (trace ID, span ID). A daemon
thread polls the engine every `tick_interval`; the engine decides each trace `decision_wait` after its first span
and returns the kept spans, whose IDs the thread reads back to hand the SDK's own `ReadableSpan` objects to the
exporter, `export_batch_size` at a time. So any `SpanExporter` works (OTLP, console, in-memory), and what it
receives is what it would have received without sampling, minus the traces not kept.

What the policies see: only the spans that end in this process. A trace that crosses services is sampled
piecewise: each process judges its own part, so an error in a downstream service cannot keep the upstream part
(and a slow downstream call is only "slow" to the caller if the caller's own span is slow). This processor is
enough for a single service, or for decisions every service makes the same way without seeing the others
(`probabilistic` on the trace ID with the same `sampling_percentage` and `hash_salt` everywhere, a forced
attribute propagated in baggage or trace state). When the decision must see the whole distributed trace, send
every service's spans to one central tail sampler instead: the OpenTelemetry Collector's `tail_sampling`
processor or `tailsample serve`, with the same configuration file.

Guarantees and limits:

- The application thread never blocks on the exporter: `on_end` appends to a list under a lock and, every
  `ingest_batch_size` spans, encodes them and hands them to the engine (tens of microseconds per span, in the
  SDK's encoder). Nothing is raised into the application: exporter exceptions and failures are logged (at most
  once per `log_interval` per kind) and counted.
- Memory is bounded by `max_buffered_spans`: when that many spans wait for a decision, new spans are dropped and
  counted (`spans_dropped_buffer_full`); a trace may then be kept without some of its spans. Spans of traces not
  kept are forgotten once the engine has certainly decided them (`decision_wait` after their ingest, plus a small
  margin) and counted (`spans_discarded`).
- Late spans of a kept trace (ending after its decision) are exported when the engine releases them from its
  decision cache; set `decision_cache.sampled_cache_size` in the configuration for that, or a late span is
  judged as a new trace of its own.
- `force_flush()` exports what has been decided so far; it does not decide early, so traces still within their
  `decision_wait` stay buffered. `shutdown()` decides everything pending (as the collector does at shutdown,
  unless `drop_pending_traces_on_shutdown`), exports what is kept, then shuts the exporter down.
- In a child process after `fork`, the processor starts over: an empty engine and buffer, a new worker thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"tailsample.otel needs the OpenTelemetry SDK and OTLP encoder ({exc}); "
                      "install them with: pip install 'tailsample[otel]'") from exc

from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.errors import BackpressureError, DecodeError

_logger = logging.getLogger(__name__)

# A span ingested at t is decided (kept or not) by the first poll at or after t + decision_wait; the margin only
# absorbs the rounding of seconds to the engine's nanoseconds.
_PURGE_MARGIN = 0.05

_Key = tuple[int, int]  # (trace ID, span ID), as the SDK's SpanContext holds them


class TailSamplingSpanProcessor(SpanProcessor):
    """A span processor that exports only the traces a `tail_sampling` configuration keeps.

    `config` is a `Config`, a path to a YAML file (a whole collector config or a bare `tail_sampling` block), or
    an already-parsed mapping. Keyword options:

    - `max_buffered_spans`: spans held while their trace waits for a decision; beyond it new spans are dropped.
    - `export_batch_size`: at most this many spans per `exporter.export()` call.
    - `ingest_batch_size`: ended spans encoded and given to the engine together (the worker takes what is left
      every tick).
    - `tick_interval`: seconds between two polls of the engine; a trace is exported at most this long after
      its decision is due.
    - `log_interval`: seconds between two warnings of the same kind (spans dropped, exports failed).
    - `clock`: the engine's clock, `time.monotonic` unless given (tests pass a fake one; it must not go back).
    """

    def __init__(self, exporter: SpanExporter, config: Config | str | Path | Mapping[str, Any], *,
                 max_buffered_spans: int = 50_000, export_batch_size: int = 512, ingest_batch_size: int = 64,
                 tick_interval: float = 0.1, log_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("max_buffered_spans", max_buffered_spans), ("export_batch_size", export_batch_size),
                            ("ingest_batch_size", ingest_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not tick_interval > 0:
            raise ValueError(f"tick_interval must be positive, got {tick_interval}")
        self._exporter = exporter
        self._config = _load_config(config)
        self._decision_wait = self._config.decision_wait
        self._max_buffered = max_buffered_spans
        self._export_batch_size = export_batch_size
        self._ingest_batch_size = ingest_batch_size
        self._tick_interval = tick_interval
        self._log_interval = log_interval
        self._clock = clock
        self._shut_down = False
        self._start()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def _after_in_child() -> None:
                reinit = weak_reinit()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=_after_in_child)

    def _start(self) -> None:
        """(Re)create the engine, the buffers, the counters and the worker thread."""
        self._engine = Engine(self._config)
        self._lock = threading.Lock()  # the map, the batches, the deadline queue, the counters
        self._poll_lock = threading.Lock()  # one poll -> export -> purge at a time (worker, force_flush, shutdown)
        self._stop = threading.Event()
        self._spans: dict[_Key, ReadableSpan] = {}
        self._batch: list[ReadableSpan] = []  # ended, not yet given to the engine
        self._retry: deque[list[ReadableSpan]] = deque()  # refused by the engine (BackpressureError)
        # (deadline, batch): after a poll at or past the deadline, the batch's spans still here were not kept
        self._deadlines: deque[tuple[float, list[ReadableSpan]]] = deque()
        self._last_deadline = float("-inf")
        self._unscheduled = 0  # spans ended, buffered or not, whose batch has no deadline yet (not ingested)
        self._exporting = 0  # spans kept and taken out of the map, not yet through the exporter
        self._counts = dict.fromkeys(
            ("spans_received", "spans_exported", "spans_dropped_buffer_full", "spans_discarded",
             "spans_rejected", "spans_export_failed", "export_failures", "kept_spans_unmatched",
             "spans_dropped_after_shutdown"), 0)
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when, count) at the last warning
        self._worker = threading.Thread(target=self._run, name="tailsample-otel", daemon=True)
        self._worker.start()

    def _at_fork_reinit(self) -> None:
        if not self._shut_down:
            self._start()

    # -- SpanProcessor -----------------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do: the decision needs ended spans."""

    def on_end(self, span: ReadableSpan) -> None:
        """Buffer the span and, every `ingest_batch_size` spans, hand the batch to the engine. Never blocks on
        the exporter and never raises."""
        ctx = span.get_span_context()
        if ctx is None:
            return
        with self._lock:
            if self._shut_down:
                self._counts["spans_dropped_after_shutdown"] += 1
                return
            self._counts["spans_received"] += 1
            if len(self._spans) >= self._max_buffered:
                self._counts["spans_dropped_buffer_full"] += 1
                return
            self._spans[(ctx.trace_id, ctx.span_id)] = span
            self._batch.append(span)
            self._unscheduled += 1
            if len(self._batch) < self._ingest_batch_size:
                return
            batch, self._batch = self._batch, []
        try:
            self._ingest(batch)
        except Exception:  # never into the application
            _logger.exception("tailsample: unexpected error while ingesting spans")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every span whose trace has been decided so far, then flush the exporter.

        This does not decide early: traces still within their `decision_wait` stay buffered and are exported
        (if kept) by a later tick or by `shutdown()`. Returns False if `timeout_millis` passed first.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._poll_lock.acquire(timeout=max(0.0, timeout_millis / 1000)):
            return False
        try:
            if self._shut_down:
                return True
            self._ingest_pending()
            now = self._now()
            self._poll_and_export(self._engine.poll(now=now), now)
        finally:
            self._poll_lock.release()
        remaining = int((deadline - time.monotonic()) * 1000)
        if remaining <= 0:
            return False
        try:
            return bool(self._exporter.force_flush(remaining))
        except Exception:
            _logger.exception("tailsample: the exporter's force_flush failed")
            return False

    def shutdown(self) -> None:
        """Stop the worker, decide every pending trace (`Engine.flush`), export what is kept, shut the exporter
        down. Spans ended afterwards are ignored (counted in `spans_dropped_after_shutdown`)."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        self._stop.set()
        if self._worker is not threading.current_thread():
            self._worker.join()
        with self._poll_lock:
            try:
                self._ingest_pending()
                now = self._now()
                outputs = self._engine.flush(now=now)
                if self._retry:  # refused until now (block_on_overflow): the flush made room
                    self._ingest_pending()
                    now = self._now()
                    outputs += self._engine.flush(now=now)
                self._poll_and_export(outputs, now)
            except Exception:
                _logger.exception("tailsample: unexpected error while flushing at shutdown")
            with self._lock:
                self._counts["spans_discarded"] += len(self._spans)
                self._spans.clear()
                self._batch.clear()
                self._retry.clear()
                self._deadlines.clear()
                self._unscheduled = 0
        try:
            self._exporter.shutdown()
        except Exception:
            _logger.exception("tailsample: the exporter's shutdown failed")

    # -- what it did ------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters and gauges of the processor, then the engine's own, prefixed `engine.`.

        spans_received (ended while running), spans_exported (the exporter returned SUCCESS),
        spans_dropped_buffer_full, spans_discarded (their trace was not kept), spans_rejected (could not be
        encoded or decoded), spans_export_failed and export_failures (calls that raised or returned FAILURE),
        kept_spans_unmatched (kept by the engine but no longer buffered here; expected 0),
        spans_dropped_after_shutdown; gauges spans_buffered (held here: waiting for the engine, for a decision or
        for the exporter) and spans_pending_ingest (ended but not yet taken by the engine). Once nothing is buffered,
        spans_received = spans_exported + spans_export_failed + spans_dropped_buffer_full + spans_discarded
        + spans_rejected.
        """
        with self._lock:
            out = dict(self._counts)
            out["spans_buffered"] = len(self._spans) + self._exporting
            out["spans_pending_ingest"] = self._unscheduled
        for key, value in self._engine.stats().items():
            out[f"engine.{key}"] = value
        return out

    def policy_stats(self) -> dict[str, dict[str, int]]:
        """The engine's per-policy counts (`Engine.policy_stats`)."""
        return self._engine.policy_stats()

    @property
    def config(self) -> Config:
        """The sampling configuration in use."""
        return self._config

    def __repr__(self) -> str:
        return (f"TailSamplingSpanProcessor(exporter={type(self._exporter).__name__}, "
                f"policies={self._config.policy_names!r}, buffered={len(self._spans)})")

    # -- internals ------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self._clock())

    def _run(self) -> None:
        while not self._stop.wait(self._tick_interval):
            try:
                with self._poll_lock:
                    if self._stop.is_set():
                        break
                    self._ingest_pending()
                    now = self._now()
                    self._poll_and_export(self._engine.poll(now=now), now)
                self._log_warnings()
            except Exception:  # the worker must survive anything
                _logger.exception("tailsample: unexpected error in the sampling worker")

    def _ingest_pending(self) -> None:
        """Give the engine what on_end left in the batch, and retry what it refused before."""
        with self._lock:
            batches = list(self._retry)
            self._retry.clear()
            if self._batch:
                batches.append(self._batch)
                self._batch = []
        for i, batch in enumerate(batches):
            if not self._ingest(batch):  # still refused (it queued itself): so are the rest, until next tick
                with self._lock:
                    self._retry.extend(batches[i + 1:])
                break

    def _ingest(self, batch: list[ReadableSpan]) -> bool:
        """Encode and ingest one batch; False if the engine refused it for now (it is then queued for retry)."""
        try:
            payload = encode_spans(batch).SerializeToString()
        except Exception:
            if len(batch) > 1:
                return self._ingest_one_by_one(batch)
            _logger.exception("tailsample: cannot encode span %r; dropped", batch[0].name)
            self._reject(batch)
            return True
        try:
            got = self._engine.ingest_report(payload, now=self._now())
        except BackpressureError:
            with self._lock:
                self._retry.append(batch)
            return False
        except DecodeError:
            if len(batch) > 1:
                return self._ingest_one_by_one(batch)
            _logger.exception("tailsample: the engine rejected span %r; dropped", batch[0].name)
            self._reject(batch)
            return True
        except Exception:  # not expected; the spans must not stay buffered forever
            _logger.exception("tailsample: the engine failed to take %d spans; dropped", len(batch))
            self._reject(batch)
            return True
        if got.rejected_spans:
            # Rejected alone by the engine (an SDK span can only lack a usable trace ID): dropped, the rest taken.
            bad = [span for span in batch if span.context is None or span.context.trace_id == 0]
            _logger.warning("tailsample: the engine rejected %d spans alone (%s); dropped", got.rejected_spans,
                            got.rejection)
            self._reject(bad)
            batch = [span for span in batch if span.context is not None and span.context.trace_id != 0]
        with self._lock:
            # Read after the ingest returned: the engine's first-seen time for the trace is no later than this,
            # so the first poll at or past deadline has decided every span of the batch.
            deadline = max(self._now() + self._decision_wait + _PURGE_MARGIN, self._last_deadline)
            self._last_deadline = deadline
            self._deadlines.append((deadline, batch))
            self._unscheduled -= len(batch)
        return True

    def _ingest_one_by_one(self, batch: list[ReadableSpan]) -> bool:
        """After a batch failed to encode or decode: isolate the culprit, keep the others."""
        for i, span in enumerate(batch):
            if not self._ingest([span]):  # refused: queue the rest behind it (it queued itself)
                if i + 1 < len(batch):
                    with self._lock:
                        self._retry.append(batch[i + 1:])
                return False
        return True

    def _reject(self, batch: Sequence[ReadableSpan]) -> None:
        with self._lock:
            self._unscheduled -= len(batch)
            for span in batch:
                key = _key(span)
                if key is not None and self._spans.get(key) is span:
                    del self._spans[key]
                    self._counts["spans_rejected"] += 1

    def _poll_and_export(self, outputs: list[bytes], now: float) -> None:
        """Export the kept spans of `outputs`, the result of a poll (or flush) at `now`, then forget the spans
        that poll has certainly decided and not kept. Runs under the poll lock."""
        keys: list[_Key] = []
        for payload in outputs:
            request = ExportTraceServiceRequest.FromString(payload)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    keys.extend((int.from_bytes(s.trace_id, "big"), int.from_bytes(s.span_id, "big"))
                                for s in scope_spans.spans)
        kept: list[ReadableSpan] = []
        with self._lock:
            for key in keys:
                span = self._spans.pop(key, None)
                if span is None:
                    self._counts["kept_spans_unmatched"] += 1
                else:
                    kept.append(span)
            self._exporting += len(kept)
        for start in range(0, len(kept), self._export_batch_size):
            self._export(kept[start:start + self._export_batch_size])
        self._purge(now)

    def _purge(self, now: float) -> None:
        """Forget the spans ingested long enough ago that their trace is decided, and was not kept."""
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, batch = self._deadlines.popleft()
                for span in batch:
                    key = _key(span)
                    if key is not None and self._spans.get(key) is span:
                        del self._spans[key]
                        self._counts["spans_discarded"] += 1

    def _export(self, spans: list[ReadableSpan]) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))  # don't trace the exporter's own calls
        try:
            result = self._exporter.export(spans)
        except Exception:
            ok = False
            self._warn("export_failures", "tailsample: the exporter raised; %d spans lost", len(spans),
                       exc_info=True)
        else:
            ok = result is SpanExportResult.SUCCESS
            if not ok:
                self._warn("export_failures", "tailsample: the exporter returned %s; %d spans lost", result,
                           len(spans))
        finally:
            detach(token)
        with self._lock:
            self._exporting -= len(spans)
            if ok:
                self._counts["spans_exported"] += len(spans)
            else:
                self._counts["export_failures"] += 1
                self._counts["spans_export_failed"] += len(spans)

    def _warn(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log at most once per `log_interval` per kind."""
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(kind)
            if last is not None and now - last[0] < self._log_interval:
                return
            self._logged[kind] = (now, 0)
        _logger.warning(message, *args, exc_info=exc_info)

    def _log_warnings(self) -> None:
        """From the worker: one warning per `log_interval` if spans were dropped since the last one."""
        now = time.monotonic()
        with self._lock:
            dropped = self._counts["spans_dropped_buffer_full"]
            when, logged = self._logged.get("dropped", (float("-inf"), 0))
            if dropped == logged or now - when < self._log_interval:
                return
            self._logged["dropped"] = (now, dropped)
        _logger.warning("tailsample: %d spans dropped since the last warning: the buffer is full "
                        "(max_buffered_spans=%d); lower decision_wait or raise the maximum", dropped - logged,
                        self._max_buffered)


def _key(span: ReadableSpan) -> _Key | None:
    ctx = span.get_span_context()
    return None if ctx is None else (ctx.trace_id, ctx.span_id)


def _load_config(config: Config | str | Path | Mapping[str, Any]) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, str | Path):
        return Config.from_file(config)
    if isinstance(config, Mapping):
        return Config.from_dict(config)
    raise TypeError(f"config must be a Config, a path or a mapping, got {type(config).__name__}")


__all__ = ["TailSamplingSpanProcessor"]
