"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, taking the raw request bytes.

No Python protobuf type is involved: the method is registered without a deserializer, so the request arrives as
bytes and goes straight to the engine. Answers as the OTLP specification says: OK with an empty
`ExportTraceServiceResponse` (or its `partial_success` when spans were rejected alone: no usable trace ID, an
ID of the wrong length, nested too deep);
INVALID_ARGUMENT with a message for malformed data; UNAUTHENTICATED without the bearer token; RESOURCE_EXHAUSTED
with a `RetryInfo` detail under backpressure (OTLP clients retry that one only when the detail is there). Messages
over `max_recv_msg_size_mib` are refused by grpcio itself (RESOURCE_EXHAUSTED) before they reach the handler.
gzip request compression is handled by grpcio.

Connections are grpcio's to police: `max_connections` is `grpc.max_allowed_incoming_connections` (a connection
over it is closed as soon as it is accepted), an HTTP/2 handshake must end within `HANDSHAKE_TIMEOUT_S`, and the
collector's `keepalive` settings map to grpcio's keepalive options (`max_connection_idle` closes a connection
with no call, 5 min by default).
"""

from __future__ import annotations

import errno
import logging
import socket

import grpc
from grpc import aio

from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.otlp_status import RESOURCE_EXHAUSTED, encode_partial_success, encode_status
from tailsample.collector.settings import GrpcServer, HostPort
from tailsample.collector.tls import server_credentials
from tailsample.errors import BackpressureError, DecodeError, StorageError
from tailsample.receivers.sink import ReceiverMetrics, Sink, consume, span_count

log = logging.getLogger("tailsample.receiver.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
RETRY_AFTER_S = 1.0
MiB = 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0  # a connection that never completes the HTTP/2 preface (grpc's default: 120 s)



def _check_free(receiver_id: str, host: str, port: int) -> None:
    """Raises OSError naming the receiver and the address when something already listens there. grpcio would
    only log a C-core line and raise "Failed to bind"; binding a socket first (as grpcio binds: SO_REUSEADDR,
    no SO_REUSEPORT) gives the cause."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"{receiver_id} (grpc): {host or '*'}:{port} is already in use (another "
                              "process listens there: stop it, or change the receiver's endpoint)") from None
            raise OSError(exc.errno, f"{receiver_id} (grpc): cannot listen on {host}:{port}: {exc.strerror}") from None



class OtlpGrpcReceiver:
    """One `receivers.otlp.protocols.grpc` server."""

    def __init__(self, receiver_id: str, settings: GrpcServer, sink: Sink, metrics: ReceiverMetrics,
                 auth: BearerTokenAuth | None = None) -> None:
        self.id = receiver_id
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.auth = auth
        self.max_connections = settings.max_connections  # the service lowers it to fit the descriptor limit
        self._server: aio.Server | None = None
        metrics.register(receiver_id, "grpc")
        self.address: HostPort | None = None

    async def start(self) -> HostPort:
        size = self.settings.max_recv_msg_size_mib * MiB
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", size),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
        if self.settings.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.settings.max_concurrent_streams))
        options += connection_options(self.settings, self.max_connections)
        server = aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)})
        server.add_generic_rpc_handlers((handler,))
        ep = self.settings.endpoint
        target = f"{ep.host or '[::]'}:{ep.port}" if ":" not in ep.host else f"[{ep.host}]:{ep.port}"
        _check_free(self.id, ep.host, ep.port)
        try:
            if self.settings.tls is not None:
                port = server.add_secure_port(target, server_credentials(self.settings.tls))
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:  # grpcio's "Failed to bind": the probe above lost a race, or no such address
            raise OSError(f"{self.id} (grpc): cannot listen on {ep.host}:{ep.port}: {exc}") from None
        await server.start()
        self._server = server
        self.address = HostPort(ep.host, port)
        return self.address

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting; calls in flight get `grace` seconds to finish."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _export(self, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        if self.auth is not None:
            header = next((str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), None)
            if not self.auth.authenticate(header):
                self.metrics.rejected.add(1, self.id, "grpc", "unauthenticated")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "missing or invalid bearer token in the authorization metadata")
        try:
            got = await consume(self.sink, request)
        except DecodeError as exc:
            self.metrics.rejected.add(1, self.id, "grpc", "malformed")
            log.debug("grpc export: malformed request: %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ExportTraceServiceRequest: {exc}")
        except (BackpressureError, StorageError) as exc:
            self.metrics.refused.add(span_count(request), self.id, "grpc")
            message = f"{exc}; retry later"
            details = encode_status(RESOURCE_EXHAUSTED, message, RETRY_AFTER_S)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message,
                                trailing_metadata=(("grpc-status-details-bin", details),))
        self.metrics.accepted.add(got.spans, self.id, "grpc")
        if got.rejected_spans:
            self.metrics.refused.add(got.rejected_spans, self.id, "grpc")
            return encode_partial_success(got.rejected_spans, f"{got.rejected_spans} spans rejected: {got.rejection}")
        return b""


def connection_options(settings: GrpcServer, max_connections: int) -> list[tuple[str, int]]:
    """grpcio channel arguments for the connection limits and the collector's `keepalive` settings."""
    k = settings.keepalive
    options = [("grpc.max_allowed_incoming_connections", max_connections),
               ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_TIMEOUT_S * 1000))]
    for name, seconds in (("grpc.max_connection_idle_ms", k.max_connection_idle),
                          ("grpc.max_connection_age_ms", k.max_connection_age),
                          ("grpc.max_connection_age_grace_ms", k.max_connection_age_grace),
                          ("grpc.keepalive_time_ms", k.time), ("grpc.keepalive_timeout_ms", k.timeout),
                          ("grpc.http2.min_ping_interval_without_data_ms", k.min_time)):
        if seconds > 0:
            options.append((name, int(seconds * 1000)))
    if k.permit_without_stream:
        options.append(("grpc.keepalive_permit_without_calls", 1))
    return options


__all__ = ["OtlpGrpcReceiver", "connection_options"]
