"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, taking the raw request bytes.

The server is Rust (`tailsample_server::grpc` through `tailsample._native.NativeGrpcServer`): unary gRPC on
hyper's HTTP/2, the request message going straight to the pipelines' engines on the server's own threads
(`GRPC_WORKERS`), without the GIL; this class only configures it, reads its counters into the metrics at every
scrape, and does in Python what is still Python's (the what-if recording, the attribute inventory's sample, the
log line about spans rejected alone), as the OTLP/HTTP receiver does. It answers as the OTLP specification says:
OK with an empty `ExportTraceServiceResponse` (or its `partial_success` when spans were rejected alone: no usable
trace ID, an ID of the wrong length, nested too deep); INVALID_ARGUMENT with a message for malformed data;
UNAUTHENTICATED without the bearer token (`authorization` metadata); RESOURCE_EXHAUSTED with a `RetryInfo`
detail (`grpc-status-details-bin`) under backpressure (OTLP clients retry that one only when the detail is
there). A message over `max_recv_msg_size_mib` is refused from its length prefix (RESOURCE_EXHAUSTED, worded as
grpcio did) before it is read; `grpc-encoding: gzip` (and deflate) messages are inflated in bounded steps, never
past that size. An unknown method gets UNIMPLEMENTED.

Connections: over `max_connections` a connection is closed as soon as it is accepted; the HTTP/2 preface must come
within `HANDSHAKE_TIMEOUT_S` (after the TLS handshake, ALPN h2, when `tls` is set); the collector's `keepalive`
settings: `max_connection_idle` (a connection with no call gets a GOAWAY, 5 min by default),
`max_connection_age` + `max_connection_age_grace`, server pings every `time` (2 h by default, as grpcio) with
`timeout` (20 s). `enforcement_policy` (`min_time`, `permit_without_stream`) is not enforced: the HTTP/2 library
answers every ping and has no ping policing.
"""

from __future__ import annotations

import asyncio
import logging
import resource

from tailsample import _native
from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.settings import GrpcServer, HostPort
from tailsample.receivers.connections import accept_backlog
from tailsample.receivers.native_server import OBSERVE_INTERVAL_S, NativeReceiver
from tailsample.receivers.sink import ReceiverMetrics, Sink

log = logging.getLogger("tailsample.receiver.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MiB = 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0  # a connection that never completes the HTTP/2 preface (grpc's default: 120 s)
GRPC_WORKERS = 2  # the server's threads: calls are read and ingested there, off the event loop's thread
KEEPALIVE_TIME_S = 7200.0  # server pings when `keepalive.time` is unset: grpcio's default
KEEPALIVE_TIMEOUT_S = 20.0


class OtlpGrpcReceiver(NativeReceiver):
    """One `receivers.otlp.protocols.grpc` server."""

    protocol = "grpc"
    reasons = ("malformed", "too_large", "unauthenticated", "unsupported_encoding")
    aborted_text = "a call's message was not read whole (the client went away): nothing of it taken"
    # the TLS handshake or the HTTP/2 preface not in within HANDSHAKE_TIMEOUT_S
    timeouts = (("timed_out_read_header", "read_header"),)

    def __init__(self, receiver_id: str, settings: GrpcServer, sink: Sink, metrics: ReceiverMetrics,
                 auth: BearerTokenAuth | None = None) -> None:
        super().__init__(receiver_id, sink, metrics, auth, settings.max_connections, log)
        self.settings = settings

    async def start(self) -> HostPort:
        s = self.settings
        native = self._native_sink()
        tls = self._tls_files(s.tls)
        k = s.keepalive
        keepalive = (k.max_connection_idle, k.max_connection_age, k.max_connection_age_grace,
                     k.time or KEEPALIVE_TIME_S, k.timeout or KEEPALIVE_TIMEOUT_S)
        ep = s.endpoint
        server = await asyncio.to_thread(
            _native.NativeGrpcServer, self.id, ep.host, ep.port, s.max_recv_msg_size_mib * MiB,
            s.max_concurrent_streams, self.max_connections, HANDSHAKE_TIMEOUT_S, keepalive, tls,
            self.auth.native_spec() if self.auth is not None else None, native.native_targets(), GRPC_WORKERS,
            accept_backlog(resource.getrlimit(resource.RLIMIT_NOFILE)[0]), native.blocking, OBSERVE_INTERVAL_S,
            self._after(native), native.records_every_payload())
        return self._started(server, ep.host)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting; calls in flight get `grace` seconds to finish."""
        await self._stop(grace)


__all__ = ["GRPC_WORKERS", "OtlpGrpcReceiver"]
