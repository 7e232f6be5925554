"""Log correlation for Python services: the active OpenTelemetry span's trace and span IDs on every log record.

A log line that carries the trace ID leads from the log to the trace and back; a trace ID returned in an error
response lets a customer report exactly which request failed.

```python
import logging

from flask import Flask, jsonify
from tailsample.logging import get_current_trace_id, install

install(json=True)  # the root logger's handlers add trace_id / span_id and write one JSON object per line
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("shop")
app = Flask(__name__)


@app.errorhandler(Exception)
def internal_error(exc: Exception):
    log.exception("unhandled error")  # this line carries the request's trace_id ...
    # ... and so does the response, for the customer to quote to support
    return jsonify(error="internal error", trace_id=get_current_trace_id()), 500
```

(With aiohttp, the same two lines go in an `@web.middleware` around `await handler(request)`, placed inside
the tracing middleware.) The request's span must still be current where the error is handled: it is in Flask's
error handlers with the OpenTelemetry Flask instrumentation; a handler that runs outside the tracing middleware
sees no span, and the customer gets "no-active-trace".

With a format string instead of JSON, install the filter only and name the fields:

```python
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [trace=%(trace_id)s span=%(span_id)s] %(message)s"))
logging.getLogger().addHandler(handler)
install()
```

or, with `logging.config.dictConfig`, declare `{"()": "tailsample.logging.TraceContextFilter"}` under `filters`
and `"class": "tailsample.logging.JsonFormatter"` under `formatters`.

What the fields mean:

- `trace_id` is 32 and `span_id` 16 lowercase hex digits (the W3C trace context form, as tracing backends show
  them), or empty / absent when no valid span context is current.
- No sampled flag is written. The span context's flag is the head sampler's decision; under tail sampling it
  is set on nearly every trace while most are not kept, so a line saying `sampled: true` would mislead whoever
  reads the log during an incident. Whether a trace was kept is known only after its decision, on the whole
  trace: ask `tailsample explain TRACE_ID`, or look it up in the backend (`tailsample show --jaeger URL
  --trace-id ID`). Keep the traces whose IDs reach customers: set the span status to ERROR on failures, and have
  a `status_code` policy.
- The IDs come from the OpenTelemetry context, a `contextvars` variable: each thread and each asyncio task sees
  its own. asyncio tasks inherit the context of the code that created them; threads do not (a thread started
  inside a span sees no span unless it runs in `contextvars.copy_context()`, as `loop.run_in_executor` and
  OpenTelemetry's threading instrumentation arrange).

The OpenTelemetry API is optional (`pip install 'tailsample[otel]'`): without it this module imports and works
the same, and every record simply has no trace (`None` / `""`).
"""

from __future__ import annotations

import json as _json
import logging
import time
from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment (tested in a subprocess)
    # Unlike tailsample.otel, which is useless without the SDK and says so, log correlation degrades to "no
    # trace": an application must be able to install it whether or not tracing is deployed.
    _otel_trace = None  # type: ignore[assignment]

__all__ = [
    "JsonFormatter",
    "TraceContextFilter",
    "current_span_id",
    "current_trace_id",
    "get_current_trace_id",
    "install",
]

# What an ordinary LogRecord holds; anything else on a record came from `extra=` (or from a filter).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}
_TRACE_ATTRIBUTES = frozenset({"trace_id", "span_id"})
# The JsonFormatter's own keys: an `extra=` field of the same name is written as "extra_<name>" instead.
_JSON_KEYS = frozenset({"timestamp", "level", "logger", "message", "exception", "stack"}) | _TRACE_ATTRIBUTES


def _current_ids() -> tuple[str, str] | None:
    """(trace ID, span ID) of the current span context, or None when there is none. Never raises."""
    if _otel_trace is None:
        return None
    try:
        context = _otel_trace.get_current_span().get_span_context()
        # `is_valid`, not the seed's `span.is_recording()`: a span that is not recording still has a real trace ID.
        # That is the case of a span the head sampler dropped (ALWAYS_OFF, a parent-based sampler under an unsampled
        # parent: the trace ID still travels downstream in `traceparent`, and other services may record the trace),
        # of a remote parent extracted from an incoming request without a local span, and of every span when only
        # the API is installed. Its ID still correlates this process's logs with the other services' logs and
        # spans, and is what a customer can quote. Only the invalid context (all-zero IDs: no span at all) has
        # nothing to report.
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")
    except Exception:  # a broken span or context implementation must not break the caller (logging, errors)
        return None


def current_trace_id() -> str | None:
    """The current span context's trace ID as 32 lowercase hex digits, or None when there is no valid span
    context (outside any span, or without the OpenTelemetry API)."""
    ids = _current_ids()
    return ids[0] if ids is not None else None


def current_span_id() -> str | None:
    """The current span's ID as 16 lowercase hex digits, or None when there is no valid span context."""
    ids = _current_ids()
    return ids[1] if ids is not None else None


def get_current_trace_id(default: str = "no-active-trace") -> str:
    """The current trace ID (32 lowercase hex digits) for an error response, or `default` when there is none.

    The seed's helper, with one difference: a span that is not recording (sampled out at the head) still gives
    its trace ID, since that ID is real and propagated; see `current_trace_id`."""
    trace_id = current_trace_id()
    return trace_id if trace_id is not None else default


class TraceContextFilter(logging.Filter):
    """Sets `trace_id` and `span_id` (hex strings, "" when no span is current) on every record, so that
    `%(trace_id)s` in a format string never fails. It never drops a record and never raises. No sampled flag:
    under tail sampling the head flag says nothing about whether the trace is kept (see the module doc).

    The first filter to see a record wins: a record that already has a `trace_id` (set by this filter on an
    earlier handler, for instance on a `QueueHandler` in the logging thread, or passed in `extra=`) keeps it,
    so that a `QueueListener` thread, which runs outside the request's context, does not erase it.

    Put it on handlers (see `install`), not on loggers: a logger's filters only see the records logged on that
    very logger, not those that propagate to it from child loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if getattr(record, "trace_id", None) is None:
                ids = _current_ids()
                record.trace_id, record.span_id = ("", "") if ids is None else ids
            elif getattr(record, "span_id", None) is None:
                record.span_id = ""
        except Exception:  # pragma: no cover - setting attributes on a LogRecord does not fail in practice
            pass
        return True


def _record_ids(record: logging.LogRecord) -> tuple[str, str] | None:
    """The record's trace fields: those set by the filter (or `extra=`) if any, else the current span context."""
    trace_id = getattr(record, "trace_id", None)
    if trace_id is None:  # no TraceContextFilter: the formatter runs in the logging thread, so read the context
        return _current_ids()
    if not trace_id:  # the filter ran, and there was no span
        return None
    span_id = getattr(record, "span_id", None)
    return str(trace_id), str(span_id) if span_id else ""


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _json_safe(value: object) -> object:
    """`value` itself when it serialises as strict JSON (unknown types by repr), else its repr."""
    try:
        _json.dumps(value, default=_safe_repr, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # non-string keys, circular references, NaN, deep nesting
        return _safe_repr(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped):

    `timestamp` (RFC 3339, UTC, milliseconds: "2024-05-01T12:34:56.789Z"), `level`, `logger`, `message` (with
    its arguments merged), then `trace_id` and `span_id` when a span context is known, the
    formatted traceback under `exception` and the `stack_info` under `stack` when present, and every field passed
    in `extra=`. An extra field named like one of these keys is written as "extra_<name>"; values JSON cannot
    hold (objects, sets, NaN, circular or non-string-keyed structures) are written as their `repr`.

    The trace fields are the record's own when a `TraceContextFilter` set them; without the filter the formatter
    reads the current span context itself. The `fmt`, `datefmt` and `style` arguments are accepted, as
    `logging.config.dictConfig` passes them, and ignored.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[Any, Any] = {
            "timestamp": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
        }
        ids = _record_ids(record)
        if ids is not None:
            trace_id, span_id = ids
            out["trace_id"] = trace_id
            if span_id:
                out["span_id"] = span_id
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in _extras(record).items():
            out[f"extra_{key}" if key in _JSON_KEYS else key] = value
        try:
            return _json.dumps(out, default=_safe_repr, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return _json.dumps({str(key): _json_safe(value) for key, value in out.items()}, default=_safe_repr,
                               allow_nan=False)


def _extras(record: logging.LogRecord) -> Mapping[Any, Any]:
    return {key: value for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and key not in _TRACE_ATTRIBUTES}


def install(logger: logging.Logger | None = None, *, json: bool = False) -> None:
    """Adds a `TraceContextFilter` to every handler of `logger` (the root logger by default) and, with
    `json=True`, sets a `JsonFormatter` on them.

    Handlers, not the logger: a record logged on `logging.getLogger("shop.orders")` propagates to the handlers
    of "shop" and of the root logger, and their filters see it; a filter on the root *logger* would only see
    records logged on the root logger itself. So installing on the root covers every logger that propagates to
    it (the default). Loggers with `propagate = False` and their own handlers need an `install` of their own.

    Only the handlers present now are changed: call it after the logging configuration. It is idempotent (a
    handler gets the filter once; the filter goes first, so the handler's other filters see the trace fields).
    When the root logger has no handler yet, a `StreamHandler` to stderr is added to it first, as
    `logging.basicConfig` would (without changing levels); a non-root logger without handlers is an error, since
    its records are written by its ancestors' handlers: install on those instead.
    """
    target = logger if logger is not None else logging.getLogger()
    if not target.handlers:
        if target is not logging.getLogger():
            raise ValueError(f"logger {target.name!r} has no handlers: its records are written by its ancestors' "
                             "handlers; call install() on the logger that has them (the root by default)")
        target.addHandler(logging.StreamHandler())
    for handler in target.handlers:
        if not any(isinstance(existing, TraceContextFilter) for existing in handler.filters):
            handler.filters.insert(0, TraceContextFilter())
        if json:
            handler.setFormatter(JsonFormatter())
