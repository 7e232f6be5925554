"""OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, as the OTLP specification answers them.

- 200 with an empty `ExportTraceServiceResponse` (in the request's content type) when the pipelines took it, or
  with its `partial_success` (the count and the first reason) when spans were rejected alone (no usable trace
  ID, an ID of the wrong length, nested too deep);
- 400 with a `google.rpc.Status` naming what was wrong for malformed protobuf or JSON (the client must not retry);
- 401 without the bearer token, when the receiver has `auth`;
- 413 for a body over `max_request_body_size`, compressed or after decompression (a gzip bomb stops there: the
  body is inflated in bounded steps, never past the limit);
- 415 for a content type other than `application/x-protobuf` / `application/json`;
- 503 with `Retry-After` when the engine or the memory limiter applies backpressure: nothing was taken, the
  client retries, nothing is lost; also to a connection over `max_connections` (see `receivers.connections`);
- 408 when the body is not in within `read_timeout` of the request's start (slow body), then the connection is
  closed; a client that goes away mid-body is counted (`tailsample_receiver_aborted_requests_total`) and logged
  at most once per interval, never with a traceback.
Bodies pass through as bytes: protobuf goes straight to the engine, JSON is transcoded to protobuf in Rust.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import zlib
from typing import Literal

from aiohttp import ClientPayloadError, web

from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.fileformat import json_to_proto
from tailsample.collector.otlp_status import (
    INVALID_ARGUMENT,
    UNAUTHENTICATED,
    UNAVAILABLE,
    encode_partial_success,
    encode_status,
    partial_success_json,
    status_json,
)
from tailsample.collector.settings import HostPort, HttpServer
from tailsample.collector.throttle import EveryInterval
from tailsample.collector.tls import server_context
from tailsample.errors import BackpressureError, DecodeError, StorageError
from tailsample.receivers.connections import Limits, ListenerGuard, serve
from tailsample.receivers.sink import ReceiverMetrics, Sink, consume, span_count

log = logging.getLogger("tailsample.receiver.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1  # what a refused client is told to wait; decisions free room within a tick
_READ_CHUNK = 1 << 16
_SIGNALS = ("/v1/metrics", "/v1/logs", "/v1/profiles")


class _Reject(Exception):
    """An error answer: status, gRPC code and message."""

    def __init__(self, status: int, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason


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
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._guard: ListenerGuard | None = None
        self._aborted = EveryInterval(log)
        metrics.register(receiver_id, "http")
        self.address: HostPort | None = None

    async def start(self) -> HostPort:
        s = self.settings
        # a zero idle_timeout takes read_timeout; both zero: none (aiohttp's own hour)
        limits = Limits(self.max_connections, s.read_header_timeout, s.read_timeout,
                        s.idle_timeout or s.read_timeout or 3630.0)
        handshake_timeout = limits.read_header_timeout or 60.0  # a TLS handshake must end within it
        guard = self._guard = ListenerGuard(f"{self.id}/http", limits, self.metrics.listeners,
                                            handshake_timeout=handshake_timeout)
        app = web.Application(client_max_size=self.limit, middlewares=[guard.middleware])
        app.router.add_post(self.settings.traces_url_path, self._traces)
        for path in _SIGNALS:
            if path != self.settings.traces_url_path:
                app.router.add_post(path, self._other_signal)
        if self.settings.response_headers:
            app.on_response_prepare.append(self._add_headers)
        # auto_decompress off: bodies are inflated here, in bounded steps
        # keepalive_timeout: the idle timeout between requests; lingering: how long an unread body is drained
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False,
                                     keepalive_timeout=limits.idle_timeout, lingering_time=1.0)
        await self._runner.setup()
        ssl_ctx = server_context(s.tls) if s.tls else None
        tls_kw = {"ssl": ssl_ctx, "ssl_handshake_timeout": handshake_timeout} if ssl_ctx else {}
        ep = s.endpoint
        try:
            self._server = await serve(self._runner, guard, ep.host, ep.port, **tls_kw)
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"{self.id} (http): {ep.host or '*'}:{ep.port} is already in use (another "
                              "process listens there: stop it, or change the receiver's endpoint)") from None
            raise
        self.address = HostPort(ep.host, self._server.sockets[0].getsockname()[1])  # the bound port (ep.port may be 0)
        return self.address

    async def stop(self) -> None:
        """Stops accepting; requests in flight finish first."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self.settings.response_headers)

    async def _other_signal(self, request: web.Request) -> web.Response:
        self.metrics.rejected.add(1, self.id, "http", "not_found")
        return _error(request, 404, INVALID_ARGUMENT,
                      f"{request.path}: tailsample receives traces only; send them to /v1/traces", PROTOBUF)

    async def _traces(self, request: web.Request) -> web.Response:
        kind: Literal["proto", "json"] = "proto"
        ctype = PROTOBUF
        try:
            if self.auth is not None and not self.auth.authenticate(request.headers.get("Authorization")):
                raise _Reject(401, UNAUTHENTICATED, "missing or invalid bearer token in the Authorization header",
                              "unauthenticated")
            media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media == JSON:
                kind, ctype = "json", JSON
            elif media != PROTOBUF:
                raise _Reject(415, INVALID_ARGUMENT,
                              f"unsupported Content-Type {media or '(none)'!r}; send {PROTOBUF} or {JSON}",
                              "unsupported_media_type")
            body = await self._read_before_deadline(request)
            payload = json_to_proto(body) if kind == "json" else body
        except _Aborted as exc:
            self.metrics.aborted.add(1, self.id, "http")
            self._aborted.warning("%s: a request's body was not read whole (%s): nothing of it taken",
                                  f"{self.id}/http", exc)
            return web.Response(status=400, text="request aborted")  # nobody may be listening any more
        except _Reject as r:
            self.metrics.rejected.add(1, self.id, "http", r.reason)
            resp = _error(request, r.status, r.code, r.message, ctype)
            if r.status == 408:
                resp.force_close()  # the rest of a slow body is drained for a second at most (lingering_time)
            return resp
        except DecodeError as exc:
            self.metrics.rejected.add(1, self.id, "http", "malformed")
            return _error(request, 400, INVALID_ARGUMENT, f"malformed {kind} body: {exc}", ctype)
        try:
            got = await consume(self.sink, payload)
        except DecodeError as exc:
            self.metrics.rejected.add(1, self.id, "http", "malformed")
            return _error(request, 400, INVALID_ARGUMENT, f"malformed ExportTraceServiceRequest: {exc}", ctype)
        except (BackpressureError, StorageError) as exc:
            self.metrics.refused.add(span_count(payload), self.id, "http")
            resp = _error(request, 503, UNAVAILABLE, f"{exc}; retry later", ctype, retry_after=RETRY_AFTER_S)
            resp.headers["Retry-After"] = str(RETRY_AFTER_S)
            return resp
        self.metrics.accepted.add(got.spans, self.id, "http")
        if got.rejected_spans:
            self.metrics.refused.add(got.rejected_spans, self.id, "http")
            message = f"{got.rejected_spans} spans rejected: {got.rejection}"
            body = (partial_success_json(got.rejected_spans, message) if kind == "json"
                    else encode_partial_success(got.rejected_spans, message))
            return web.Response(body=body, content_type=ctype)
        return web.Response(body=b"{}" if kind == "json" else b"", content_type=ctype)

    async def _read_before_deadline(self, request: web.Request) -> bytes:
        """The body, within `read_timeout` of the request's start: 408 and the connection closed past it."""
        assert self._guard is not None
        deadline = self._guard.deadline(request)
        try:
            if deadline is None:
                return await self._read_body(request)
            remaining = deadline - asyncio.get_running_loop().time()
            return await asyncio.wait_for(self._read_body(request), max(remaining, 0.001))
        except asyncio.TimeoutError:
            self._guard.read_timed_out(request)
            raise _Reject(408, INVALID_ARGUMENT, f"request body not received within read_timeout "
                          f"({self.settings.read_timeout:g} s)", "timeout") from None
        except (ConnectionError, ClientPayloadError) as exc:
            raise _Aborted(str(exc) or type(exc).__name__) from None

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.limit
        if request.content_length is not None and request.content_length > limit:
            raise _Reject(413, INVALID_ARGUMENT, f"body of {request.content_length} bytes exceeds "
                          f"max_request_body_size ({limit} bytes)", "too_large")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        allowed = self.settings.compression_algorithms
        if encoding not in allowed and not (encoding == "identity" and "" in allowed):
            raise _Reject(415, INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}; supported: "
                          f"{', '.join(a for a in allowed if a) or 'none'} (or none)", "unsupported_encoding")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _Reject(413, INVALID_ARGUMENT, f"body exceeds max_request_body_size ({limit} bytes)",
                              "too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if encoding in ("", "identity"):
            return raw
        return _inflate(raw, encoding, limit)


class _Aborted(Exception):
    """The client went away, or broke the framing, before the whole body came."""


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """Decompress at most `limit` bytes; more is a 413, never a full inflation. Handles multi-member gzip."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    out: list[bytes] = []
    size = 0
    data = raw
    while True:
        d = zlib.decompressobj(wbits)
        try:
            part = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise _Reject(400, INVALID_ARGUMENT, f"invalid {encoding} body: {exc}", "malformed") from None
        size += len(part)
        if size > limit or d.unconsumed_tail:
            raise _Reject(413, INVALID_ARGUMENT, f"decompressed body exceeds max_request_body_size ({limit} bytes)",
                          "too_large")
        out.append(part)
        if not d.eof:
            raise _Reject(400, INVALID_ARGUMENT, f"truncated {encoding} body", "malformed")
        data = d.unused_data
        if not data or encoding != "gzip":
            return b"".join(out)


def _error(request: web.Request, status: int, code: int, message: str, ctype: str,
           retry_after: float | None = None) -> web.Response:
    # debug: a client that keeps sending bad data must not flood the log; the counters tell
    log.debug("%s %s: %d %s", request.remote, request.path, status, message)
    body = status_json(code, message) if ctype == JSON else encode_status(code, message, retry_after)
    resp = web.Response(status=status, body=body, content_type=ctype)
    if status == 401:
        resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


__all__ = ["OtlpHttpReceiver"]
