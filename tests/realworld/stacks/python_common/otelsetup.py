"""What the three Python stacks share: the SDK set up from the standard OTEL_* variables, the contract's
DROP_CONTEXT propagator, SIGTERM handling. Runs in the stacks' own venv (python-requirements.txt)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator, default_setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE = os.environ["SERVICE_NAME"]
PORT = int(os.environ["PORT"])
DOWNSTREAM = os.environ.get("DOWNSTREAM", "")
FORWARDED = ("x-scenario", "x-force-trace")  # plain headers passed on to the downstream (not trace context)
SLOW_S = 1.2


class ExtractOnly(TextMapPropagator):
    """The default propagator for incoming requests; injects nothing (the contract's DROP_CONTEXT), so the
    client instrumentation still makes its CLIENT span but the callee starts a new trace."""

    def __init__(self, inner: TextMapPropagator) -> None:
        self.inner = inner

    def extract(self, carrier: CarrierT, context: Context | None = None, getter: Any = None) -> Context:
        if getter is None:
            return self.inner.extract(carrier, context)
        return self.inner.extract(carrier, context, getter)

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return self.inner.fields


def setup_tracing() -> TracerProvider:
    """A TracerProvider exporting with the real OTLP exporter of OTEL_EXPORTER_OTLP_PROTOCOL (the exporters and
    the batch processor read the other OTEL_* variables themselves)."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter(insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    provider = TracerProvider(resource=Resource.create())  # service.name from OTEL_SERVICE_NAME
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if os.environ.get("DROP_CONTEXT") == "1":
        propagate.set_global_textmap(ExtractOnly(propagate.get_global_textmap()))
    return provider


def current_trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


def trace_ids(downstream: str | None) -> str:
    """The contract's `x-trace-ids`: this service's trace ID, then the downstream's list."""
    own = current_trace_id()
    return f"{own},{downstream}" if downstream else own


def on_sigterm(provider: TracerProvider, stop: Callable[[], None] | None = None) -> None:
    """SIGTERM: flush and shut the provider down, then exit 0 (or let `stop` end the server's loop)."""

    def handler(signum: int, frame: Any) -> None:
        if stop is not None:
            stop()
            return
        threading.Thread(target=_shutdown_and_exit, args=(provider,), daemon=True).start()

    signal.signal(signal.SIGTERM, handler)


def _shutdown_and_exit(provider: TracerProvider) -> None:
    provider.shutdown()
    sys.stdout.flush()
    os._exit(0)
