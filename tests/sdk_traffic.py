"""Spans made by the real OpenTelemetry Python SDK for three services, frontend → cart → payments, where cart
drops the trace context on its call to payments (the case of issue 17).

Each service has its own `TracerProvider` (its own `service.name` resource), the context travels between them
through the W3C propagator as it would over HTTP headers, and the attributes are those the Python
instrumentation emits (observed with opentelemetry-instrumentation-flask and -requests 0.66b1): frontend's
requests CLIENT span under the old HTTP conventions (`http.url` only), cart's under the stable ones
(`server.address` "127.0.0.1", `server.port`, `url.full`), the SERVER spans saying where they listen
(`server.address` with the port, as Flask's instrumentation writes it). cart calls payments without injecting
`traceparent`: payments' SERVER span starts a new trace. payments also queries a database (a CLIENT span with
`db.system`: not a call).

`make_traffic(exporter_for, n)` sends the spans through the given exporters (an OTLP exporter to a backend, an
in-memory one for a file); `encode(spans)` turns finished SDK spans into the OTLP protobuf payload the SDK's OTLP
exporters send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICES = ("frontend", "cart", "payments")
PORTS = {"frontend": 14501, "cart": 14502, "payments": 14503}


@dataclass
class Traffic:
    providers: dict[str, TracerProvider]
    frontend_traces: list[str]  # trace IDs (hex) of the requests, as the frontend started them
    payments_traces: list[str]  # the traces payments started on its own (the dropped context)
    errors: int

    def shutdown(self) -> None:
        for p in self.providers.values():
            p.force_flush()
            p.shutdown()


def _server_attributes(service: str, route: str) -> dict[str, str | int]:
    port = PORTS[service]
    return {"http.request.method": "POST" if service == "payments" else "GET", "url.scheme": "http",
            "server.address": f"127.0.0.1:{port}", "server.port": port, "url.path": route, "http.route": route,
            "client.address": "127.0.0.1", "http.response.status_code": 200}


def make_traffic(exporter_for: Callable[[str], SpanExporter], n: int = 12, error_every: int = 4) -> Traffic:
    """`n` checkout requests through the three services; every `error_every`-th payment fails (status ERROR)."""
    providers = {}
    for name in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter_for(name)))
        providers[name] = provider
    tracers = {name: p.get_tracer("tests.sdk_traffic", "1.0") for name, p in providers.items()}
    frontend_ids: list[str] = []
    payments_ids: list[str] = []
    errors = 0
    for i in range(n):
        with tracers["frontend"].start_as_current_span(
                "GET /checkout", kind=SpanKind.SERVER, attributes=_server_attributes("frontend", "/checkout")) as root:
            frontend_ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracers["frontend"].start_as_current_span(
                    "GET", kind=SpanKind.CLIENT,
                    attributes={"http.method": "GET", "http.url": "http://127.0.0.1:14502/cart",
                                "user_agent.original": "python-requests/2.34.2", "http.status_code": 200}):
                headers: dict[str, str] = {}
                inject(headers)  # frontend forwards traceparent
            with tracers["cart"].start_as_current_span(
                    "GET /cart", context=extract(headers), kind=SpanKind.SERVER,
                    attributes=_server_attributes("cart", "/cart")):
                with tracers["cart"].start_as_current_span(
                        "POST", kind=SpanKind.CLIENT,
                        attributes={"http.request.method": "POST", "url.full": "http://127.0.0.1:14503/pay",
                                    "server.address": "127.0.0.1", "server.port": 14503,
                                    "network.peer.address": "127.0.0.1", "network.peer.port": 14503,
                                    "user_agent.original": "python-requests/2.34.2",
                                    "http.response.status_code": 200}):
                    dropped: dict[str, str] = {}  # cart forgets inject(): payments starts a new trace
                    failing = error_every > 0 and i % error_every == error_every - 1
                    with tracers["payments"].start_as_current_span(
                            "POST /pay", context=extract(dropped), kind=SpanKind.SERVER,
                            attributes=_server_attributes("payments", "/pay")) as pay:
                        payments_ids.append(format(pay.get_span_context().trace_id, "032x"))
                        with tracers["payments"].start_as_current_span(
                                "SELECT payments", kind=SpanKind.CLIENT,
                                attributes={"db.system": "postgresql", "db.operation.name": "SELECT",
                                            "server.address": "127.0.0.1", "server.port": 5432}):
                            pass
                        if failing:
                            errors += 1
                            pay.set_status(Status(StatusCode.ERROR, "card declined"))
                            pay.set_attribute("http.response.status_code", 500)
    return Traffic(providers=providers, frontend_traces=frontend_ids, payments_traces=payments_ids, errors=errors)


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The OTLP protobuf ExportTraceServiceRequest the SDK's OTLP exporters send for these spans."""
    return bytes(encode_spans(spans).SerializeToString())


__all__ = ["PORTS", "SERVICES", "Traffic", "encode", "make_traffic"]
