"""python_grpc: grpcio with opentelemetry-instrumentation-grpc (client and server interceptors); frontend's HTTP
side is Flask + opentelemetry-instrumentation-flask, as tests/realworld/README.md's contract says.

frontend (HTTP GET /work) → cart (gRPC realworld.Cart/Work) → payments (gRPC realworld.Payments/Work). Messages
are raw bytes (generic handlers, no generated code): the instrumentation sees real unary RPCs all the same.
Scenario and forced header travel as metadata; errors are INTERNAL; `x-trace-ids` comes back as trailing
metadata.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_common"))

import grpc
import otelsetup
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer

provider = otelsetup.setup_tracing()
GrpcInstrumentorClient().instrument()
GrpcInstrumentorServer().instrument()

METHODS = {"cart": ("realworld.Cart", "Work"), "payments": ("realworld.Payments", "Work")}
DOWNSTREAM_ROLE = {"frontend": "cart", "cart": "payments"}


def call_downstream(metadata: list[tuple[str, str]]) -> tuple[grpc.StatusCode, str | None]:
    """One unary call to the downstream service: its status code and its `x-trace-ids` trailing metadata."""
    service, method = METHODS[DOWNSTREAM_ROLE[otelsetup.SERVICE]]
    with grpc.insecure_channel(otelsetup.DOWNSTREAM) as channel:
        stub = channel.unary_unary(f"/{service}/{method}")
        try:
            _, call = stub.with_call(b"work", metadata=metadata, timeout=30)
            code, trailing = grpc.StatusCode.OK, call.trailing_metadata()
        except grpc.RpcError as e:
            code, trailing = e.code(), e.trailing_metadata()  # type: ignore[attr-defined]
    ids = next((v for k, v in trailing or () if k == "x-trace-ids"), None)
    return code, ids if isinstance(ids, str) else None


def serve_grpc() -> None:
    def work(request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        if otelsetup.DOWNSTREAM:
            code, ids = call_downstream([(k, metadata[k]) for k in otelsetup.FORWARDED if k in metadata])
            context.set_trailing_metadata((("x-trace-ids", otelsetup.trace_ids(ids)),))
            if code != grpc.StatusCode.OK:
                context.abort(code, "downstream failed")
            return b"ok"
        context.set_trailing_metadata((("x-trace-ids", otelsetup.trace_ids(None)),))
        scenario = metadata.get("x-scenario", "")
        if scenario == "error":
            context.abort(grpc.StatusCode.INTERNAL, "payment failed")
        if scenario == "slow":
            time.sleep(otelsetup.SLOW_S)
        return b"ok"

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    service, method = METHODS[otelsetup.SERVICE]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(work)}),))
    server.add_insecure_port(f"127.0.0.1:{otelsetup.PORT}")
    server.start()
    stopped = threading.Event()

    def stop() -> None:
        server.stop(2).wait(3)
        provider.shutdown()
        stopped.set()

    otelsetup.on_sigterm(provider, stop=lambda: threading.Thread(target=stop, daemon=True).start())
    stopped.wait()


def serve_http() -> None:
    from flask import Flask, Response, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask("frontend")
    FlaskInstrumentor().instrument_app(app, excluded_urls="health")

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/work")
    def work() -> Response:
        metadata = [(k, v) for k in otelsetup.FORWARDED if (v := request.headers.get(k)) is not None]
        code, ids = call_downstream(metadata)
        status = 200 if code == grpc.StatusCode.OK else 500
        return Response("ok\n" if status == 200 else "failed\n", status=status,
                        headers={"x-trace-ids": otelsetup.trace_ids(ids)})

    otelsetup.on_sigterm(provider)
    app.run(host="127.0.0.1", port=otelsetup.PORT, threaded=True)


def main() -> Any:
    if otelsetup.SERVICE == "frontend":
        serve_http()
    else:
        serve_grpc()


if __name__ == "__main__":
    main()
