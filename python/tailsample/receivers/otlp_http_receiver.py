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

from tailsample import _native
from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.settings import HostPort, HttpServer
from tailsample.receivers.connections import accept_backlog
from tailsample.receivers.native_server import OBSERVE_INTERVAL_S, NativeReceiver, NativeSink
from tailsample.receivers.sink import ReceiverMetrics, Sink

log = logging.getLogger("tailsample.receiver.http")

HTTP_WORKERS = 2  # the server's threads: requests are read and ingested there, off the event loop's thread
STOP_GRACE_S = 10.0  # requests in flight at stop get this long to finish


class OtlpHttpReceiver(NativeReceiver):
    """One `receivers.otlp.protocols.http` server."""

    protocol = "http"
    reasons = ("malformed", "too_large", "unauthenticated", "unsupported_media_type", "unsupported_encoding",
               "not_found", "timeout")
    aborted_text = ("a request's body was not read whole (the client went away or broke the framing): nothing of it "
                    "taken")
    timeouts = (("timed_out_read_header", "read_header"), ("timed_out_read", "read"))

    def __init__(self, receiver_id: str, settings: HttpServer, sink: Sink, metrics: ReceiverMetrics,
                 auth: BearerTokenAuth | None = None) -> None:
        super().__init__(receiver_id, sink, metrics, auth, settings.max_connections, log)
        self.settings = settings
        self.limit = settings.max_request_body_size

    async def start(self) -> HostPort:
        s = self.settings
        native = self._native_sink()
        tls = self._tls_files(s.tls)
        ep = s.endpoint
        server = await asyncio.to_thread(
            _native.NativeHttpServer, self.id, ep.host, ep.port, s.traces_url_path, self.limit,
            list(s.compression_algorithms), self.max_connections, s.read_header_timeout, s.read_timeout,
            s.idle_timeout, list(s.response_headers.items()), tls,
            self.auth.native_spec() if self.auth is not None else None, native.native_targets(), HTTP_WORKERS,
            accept_backlog(resource.getrlimit(resource.RLIMIT_NOFILE)[0]), native.blocking, OBSERVE_INTERVAL_S,
            self._after(native), native.records_every_payload())
        return self._started(server, ep.host)

    async def stop(self) -> None:
        """Stops accepting; requests in flight finish first."""
        await self._stop(STOP_GRACE_S)


__all__ = ["HTTP_WORKERS", "NativeSink", "OtlpHttpReceiver"]
