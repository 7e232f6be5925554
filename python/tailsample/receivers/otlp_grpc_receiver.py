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
import threading
from pathlib import Path
from typing import Any

from tailsample import _native
from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.settings import GrpcServer, HostPort
from tailsample.collector.throttle import EveryInterval
from tailsample.collector.tls import server_context
from tailsample.engine import Ingested
from tailsample.receivers.connections import accept_backlog
from tailsample.receivers.otlp_http_receiver import NativeSink
from tailsample.receivers.sink import ReceiverMetrics, Sink

log = logging.getLogger("tailsample.receiver.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MiB = 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0  # a connection that never completes the HTTP/2 preface (grpc's default: 120 s)
GRPC_WORKERS = 2  # the server's threads: calls are read and ingested there, off the event loop's thread
KEEPALIVE_TIME_S = 7200.0  # server pings when `keepalive.time` is unset: grpcio's default
KEEPALIVE_TIMEOUT_S = 20.0
OBSERVE_INTERVAL_S = 1.0  # one accepted payload a second goes to the attribute inventory
_REASONS = ("malformed", "too_large", "unauthenticated", "unsupported_encoding")
_ACCEPT_ERRORS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")


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
        self.listener = f"{receiver_id}/grpc"
        self._server: Any = None
        self._seen: dict[str, int] = {}
        self._refresh_lock = threading.Lock()  # scrapes may come from several threads: each delta counted once
        self._task: asyncio.Task[None] | None = None
        self._aborted = EveryInterval(log)
        self._refusing = EveryInterval(log)
        metrics.register(receiver_id, "grpc")
        metrics.listeners.register(self.listener)
        self.address: HostPort | None = None

    async def start(self) -> HostPort:
        s = self.settings
        sink = self.sink
        if not hasattr(sink, "native_targets"):
            raise TypeError(f"{self.id}/grpc: the sink must offer native_targets() (service.pipeline.FanoutSink)")
        native: NativeSink = sink  # type: ignore[assignment]
        tls = None
        if s.tls is not None:
            server_context(s.tls)  # the checks and messages as before (ConfigError)
            tls = (Path(s.tls.cert_file).read_bytes(), Path(s.tls.key_file).read_bytes())
        k = s.keepalive
        keepalive = (k.max_connection_idle, k.max_connection_age, k.max_connection_age_grace,
                     k.time or KEEPALIVE_TIME_S, k.timeout or KEEPALIVE_TIMEOUT_S)
        ep = s.endpoint
        self._server = await asyncio.to_thread(
            _native.NativeGrpcServer, self.id, ep.host, ep.port, s.max_recv_msg_size_mib * MiB,
            s.max_concurrent_streams, self.max_connections, HANDSHAKE_TIMEOUT_S, keepalive, tls,
            self.auth.native_spec() if self.auth is not None else None, native.native_targets(), GRPC_WORKERS,
            accept_backlog(resource.getrlimit(resource.RLIMIT_NOFILE)[0]), native.blocking, OBSERVE_INTERVAL_S,
            self._after(native), native.records_every_payload())
        self.metrics.registry.add_refresher(self.refresh)
        self._task = asyncio.create_task(self._refresh_every_second(), name=f"{self.listener}-counters")
        self.address = HostPort(ep.host, self._server.port)  # the bound port (ep.port may be 0)
        return self.address

    def _after(self, sink: NativeSink) -> Any:
        def hook(payload: bytes, spans: int, rejected: int, rejection: str, by_reason: list[tuple[str, int]],
                 observe: bool) -> None:
            got = Ingested(spans, rejected, rejection, dict(by_reason)) if rejected else Ingested(spans)
            try:
                sink.after_native(payload, got, observe)
            except Exception:  # a bug here must not cost the call its answer
                log.exception("%s: after an accepted payload", self.listener)
        return hook

    async def _refresh_every_second(self) -> None:
        """Counters (and the warnings they imply) also between scrapes."""
        while True:
            await asyncio.sleep(1.0)
            self.refresh()

    def refresh(self) -> None:
        """The server's counters into the metric families (at every scrape, and at stop)."""
        server = self._server
        if server is None:
            return
        with self._refresh_lock:
            self._refresh(server.counters())

    def _refresh(self, now: dict[str, int]) -> None:
        seen = self._seen
        m, lm, rid = self.metrics, self.metrics.listeners, self.id

        def delta(key: str) -> int:
            d = now.get(key, 0) - seen.get(key, 0)
            seen[key] = now.get(key, 0)
            return d

        m.accepted.add(delta("accepted_spans"), rid, "grpc")
        m.refused.add(delta("refused_spans"), rid, "grpc")
        if aborted := delta("aborted"):
            m.aborted.add(aborted, rid, "grpc")
            self._aborted.warning("%s: a call's message was not read whole (the client went away): nothing of it "
                                  "taken", self.listener, count=aborted)
        for reason in _REASONS:
            if d := delta(f"rejected:{reason}"):
                m.rejected.add(d, rid, "grpc", reason)
        lm.open.set(now.get("open", 0), self.listener)
        if refused := delta("refused_connections"):
            lm.refused.add(refused, self.listener)
            self._refusing.warning("%s: %d connections open (max_connections); refusing new ones", self.listener,
                                   now.get("open", 0), count=refused)
        # the TLS handshake or the HTTP/2 preface not in within HANDSHAKE_TIMEOUT_S
        lm.timed_out.add(delta("timed_out_read_header"), self.listener, "read_header")
        for name in _ACCEPT_ERRORS:
            if d := delta(f"accept_error:{name}"):
                lm.accept_errors.add(d, name)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting; calls in flight get `grace` seconds to finish."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._server is not None:
            await asyncio.to_thread(self._server.stop, grace)
            self.refresh()
            self._server = None


__all__ = ["GRPC_WORKERS", "OtlpGrpcReceiver"]
