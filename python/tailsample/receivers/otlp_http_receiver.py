"""OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, as the OTLP specification answers them.

The server is Rust (the `tailsample-server` crate, through `tailsample._native.NativeHttpServer`): it reads,
checks and inflates each request and hands it to the pipelines' engines on its own threads (`HTTP_WORKERS`),
without the GIL; this class only configures it, reads its counters into the metrics at every scrape, and does in
Python what is still Python's: the what-if recording, the attribute inventory's sample (one payload a second) and
the log line about spans rejected alone. It answers:

- 200 with an empty `ExportTraceServiceResponse` (in the request's content type) when the pipelines took it, or
  with its `partial_success` (the count and the first reason) when spans were rejected alone (no usable trace
  ID, an ID of the wrong length, nested too deep);
- 400 with a `google.rpc.Status` naming what was wrong for malformed protobuf or JSON (the client must not retry);
- 401 without the bearer token, when the receiver has `auth`;
- 413 for a body over `max_request_body_size`, compressed or after decompression (a gzip bomb stops there: the
  body is inflated in bounded steps, never past the limit);
- 415 for a content type other than `application/x-protobuf` / `application/json`;
- 503 with `Retry-After` when the engine or the memory limiter applies backpressure: nothing was taken, the
  client retries, nothing is lost; also to a connection over `max_connections` (from a few refusal slots, as
  `receivers.connections` does for the other listeners);
- 408 when the body is not in within `read_timeout` of the request's start (slow body), then the connection is
  closed; a client that goes away mid-body is counted (`tailsample_receiver_aborted_requests_total`).
Bodies pass through as bytes: protobuf goes straight to the engine, JSON is transcoded to protobuf in Rust.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
from pathlib import Path
from typing import Any, Protocol

from tailsample import _native
from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.settings import HostPort, HttpServer
from tailsample.collector.throttle import EveryInterval
from tailsample.collector.tls import server_context
from tailsample.engine import Ingested
from tailsample.receivers.connections import accept_backlog
from tailsample.receivers.sink import ReceiverMetrics, Sink

log = logging.getLogger("tailsample.receiver.http")

HTTP_WORKERS = 2  # the server's threads: requests are read and ingested there, off the event loop's thread
STOP_GRACE_S = 10.0  # requests in flight at stop get this long to finish
OBSERVE_INTERVAL_S = 1.0  # one accepted payload a second goes to the attribute inventory
_REASONS = ("malformed", "too_large", "unauthenticated", "unsupported_media_type", "unsupported_encoding",
            "not_found", "timeout")
_ACCEPT_ERRORS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")


class NativeSink(Protocol):
    """What the Rust server needs of the pipelines behind it (`service.pipeline.FanoutSink`)."""

    blocking: bool

    def native_targets(self) -> list[tuple[Any, bool, list[Any]]]:
        """(native engine, whether its clock is wall time, its memory limiters' flags) per pipeline."""
        ...

    def records_every_payload(self) -> bool: ...

    def after_native(self, payload: bytes, got: Ingested, observe: bool) -> None:
        """What Python does with a payload the engines took: recording, inventory sample, rejection log."""
        ...


class OtlpHttpReceiver:
    """One `receivers.otlp.protocols.http` server."""

    def __init__(self, receiver_id: str, settings: HttpServer, sink: Sink, metrics: ReceiverMetrics,
                 auth: BearerTokenAuth | None = None) -> None:
        self.id = receiver_id
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.auth = auth
        self.limit = settings.max_request_body_size
        self.max_connections = settings.max_connections  # the service lowers it to fit the descriptor limit
        self.listener = f"{receiver_id}/http"
        self._server: Any = None
        self._seen: dict[str, int] = {}
        self._refresh_lock = threading.Lock()  # scrapes may come from several threads: each delta counted once
        self._task: asyncio.Task[None] | None = None
        self._aborted = EveryInterval(log)
        self._refusing = EveryInterval(log)
        metrics.register(receiver_id, "http")
        metrics.listeners.register(self.listener)
        self.address: HostPort | None = None

    async def start(self) -> HostPort:
        s = self.settings
        sink = self.sink
        if not hasattr(sink, "native_targets"):
            raise TypeError(f"{self.id}/http: the sink must offer native_targets() (service.pipeline.FanoutSink)")
        native: NativeSink = sink  # type: ignore[assignment]
        tls = None
        if s.tls is not None:
            server_context(s.tls)  # the checks and messages as before (ConfigError)
            tls = (Path(s.tls.cert_file).read_bytes(), Path(s.tls.key_file).read_bytes())
        ep = s.endpoint
        self._server = await asyncio.to_thread(
            _native.NativeHttpServer, self.id, ep.host, ep.port, s.traces_url_path, self.limit,
            list(s.compression_algorithms), self.max_connections, s.read_header_timeout, s.read_timeout,
            s.idle_timeout, list(s.response_headers.items()), tls,
            self.auth.native_spec() if self.auth is not None else None, native.native_targets(), HTTP_WORKERS,
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
            except Exception:  # a bug here must not cost the request its answer
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

        m.accepted.add(delta("accepted_spans"), rid, "http")
        m.refused.add(delta("refused_spans"), rid, "http")
        if aborted := delta("aborted"):
            m.aborted.add(aborted, rid, "http")
            self._aborted.warning("%s: a request's body was not read whole (the client went away or broke the "
                                  "framing): nothing of it taken", self.listener, count=aborted)
        for reason in _REASONS:
            if d := delta(f"rejected:{reason}"):
                m.rejected.add(d, rid, "http", reason)
        lm.open.set(now.get("open", 0), self.listener)
        if refused := delta("refused_connections"):
            lm.refused.add(refused, self.listener)
            self._refusing.warning("%s: %d connections open (max_connections); refusing new ones", self.listener,
                                   now.get("open", 0), count=refused)
        lm.timed_out.add(delta("timed_out_read_header"), self.listener, "read_header")
        lm.timed_out.add(delta("timed_out_read"), self.listener, "read")
        for name in _ACCEPT_ERRORS:
            if d := delta(f"accept_error:{name}"):
                lm.accept_errors.add(d, name)

    async def stop(self) -> None:
        """Stops accepting; requests in flight finish first."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._server is not None:
            await asyncio.to_thread(self._server.stop, STOP_GRACE_S)
            self.refresh()
            self._server = None


__all__ = ["HTTP_WORKERS", "NativeSink", "OtlpHttpReceiver"]
