"""Connection hygiene for the service's HTTP listeners (OTLP/HTTP, metrics, health check) and the process.

- `raise_nofile_limit()`: the soft `RLIMIT_NOFILE` raised to the hard limit at start, as the Go collector does
  (systemd and many shells start services at a soft limit of 1,024).
- `ListenerGuard`: a protocol factory around an aiohttp server with a connection cap (over it, a connection is
  answered 503 with `Retry-After` from a few refusal slots, or closed at once when those are taken too), a header
  read timeout (from the accept, or from the first byte of the next request on a kept-alive connection, to the
  end of the headers), and the whole-request deadline the handlers apply to the body (`read_timeout`). The idle
  keep-alive timeout is aiohttp's `keepalive_timeout`. Open connections are a gauge, refusals and timeouts
  counters.
- `install_accept_error_handler()`: descriptor exhaustion in `accept()` (EMFILE, ENFILE) counted and logged once
  per interval with a count, where asyncio would log a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tailsample.collector.metrics import Registry
from tailsample.collector.throttle import EveryInterval

log = logging.getLogger("tailsample.connections")

REFUSAL_SLOTS = 16  # connections over the cap answered 503 at once; beyond, closed without an answer
REFUSAL_TIMEOUT = 2.0  # how long a refused connection may take to send its headers
_EXHAUSTION = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard limit (logged once); returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a hard limit above the kernel's nr_open: keep what we have
            log.warning("open files limit: could not raise the soft limit %d to the hard limit %d: %s",
                        soft, hard, exc)
            return soft, hard
        log.info("open files limit: soft limit raised from %d to the hard limit %d", soft, hard)
        return hard, hard
    log.info("open files limit: %s (soft), %s (hard)", _limit(soft), _limit(hard))
    return soft, hard


def _limit(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY else str(n)


ENDPOINT_LIMITS_CAP = 32  # connections of the metrics and health check endpoints, each (scrapers, probes)


def accept_backlog(limit: int) -> int:
    """The listen() backlog, which is also how many connections asyncio accepts in one go, before any of them
    can be refused and closed: small under a small descriptor limit, so one burst cannot exhaust it."""
    if limit == resource.RLIM_INFINITY:
        return 100
    return min(100, max(8, limit // 16))


def descriptor_reserve(limit: int) -> int:
    """Descriptors kept out of every connection cap: files, tail storage, exporter and Kafka sockets, grpc's
    and asyncio's own pipes and pollers, and one accept burst."""
    return max(64, limit // 10) + accept_backlog(limit)


def fit_connection_caps(requested: dict[str, int], fixed: int, limit: int) -> dict[str, int]:
    """Listener caps lowered (in proportion) so that, with `fixed` descriptors of the endpoints and refusal
    slots and the reserve, they fit under the descriptor `limit`: the OTLP listeners then cannot take the
    descriptors the health check and metrics need, and accept() does not run out. Logged when lowered."""
    if limit == resource.RLIM_INFINITY:
        return dict(requested)
    available = max(len(requested), limit - descriptor_reserve(limit) - fixed)
    total = sum(requested.values())
    if total <= available:
        return dict(requested)
    fitted = {k: max(1, v * available // total) for k, v in requested.items()}
    log.warning("open files limit %d: max_connections lowered to fit it (%s); raise the hard limit "
                "(LimitNOFILE= under systemd, ulimit -Hn) to allow more", limit,
                ", ".join(f"{k} {requested[k]} -> {v}" for k, v in fitted.items()))
    return fitted


@dataclass(frozen=True)
class Limits:
    """A listener's connection limits; 0 turns a timeout off."""

    max_connections: int
    read_header_timeout: float
    read_timeout: float
    idle_timeout: float


class ListenerMetrics:
    """Connections of every HTTP listener (`listener` is `otlp/http`, `metrics`, `health_check`...)."""

    def __init__(self, registry: Registry) -> None:
        self.open = registry.gauge("tailsample_listener_open_connections",
                                   "Connections open on a listener (OTLP/HTTP, OTLP/gRPC, metrics, health check).",
                                   ("listener",))
        self.refused = registry.counter(
            "tailsample_listener_refused_connections",
            "Connections over a listener's max_connections: answered 503 with Retry-After, or closed at once "
            "when the refusal slots are taken too (gRPC: closed at once).", ("listener",))
        self.timed_out = registry.counter(
            "tailsample_listener_timed_out_connections",
            "Connections closed for a slow client: headers not in within read_header_timeout (read_header; gRPC: "
            "the TLS handshake or HTTP/2 preface not in within 10 s), or a request not read whole within "
            "read_timeout (read).", ("listener", "timeout"))
        self.accept_errors = registry.counter(
            "tailsample_listener_accept_errors",
            "accept() failures for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the "
            "connection waits in the backlog; asyncio retries after a second.", ("error",))

    def register(self, listener: str) -> None:
        self.open.set(0, listener)
        self.refused.add(0, listener)
        for kind in ("read_header", "read"):
            self.timed_out.add(0, listener, kind)


class _Connection(asyncio.Protocol):
    """An aiohttp request handler with the guard's accounting and header timer around it."""

    def __init__(self, guard: ListenerGuard, inner: asyncio.Protocol, header_timeout: float, *,
                 refusal: bool = False) -> None:
        self.guard = guard
        self.inner = inner
        self.refusal = refusal
        self.header_timeout = header_timeout
        self.transport: asyncio.Transport | None = None
        self.in_request = False
        self.request_started: float | None = None  # loop time the current request's first byte (or accept) came
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.guard._opened(self)
        self.inner.connection_made(transport)
        self._arm()  # Go's ReadHeaderTimeout counts from the accept for the first request

    def data_received(self, data: bytes) -> None:
        if not self.in_request and self._timer is None:
            self._arm()  # the next request on a kept-alive connection has begun
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard._closed(self)
        self.inner.connection_lost(exc)

    # -- the header timer --------------------------------------------------------------------------------------
    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.request_started = loop.time()
        if self.header_timeout > 0:
            self._timer = loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timed_out(self) -> None:
        self._timer = None
        if not self.in_request and self.transport is not None and not self.transport.is_closing():
            if not self.refusal:
                self.guard.metrics.timed_out.add(1, self.guard.name, "read_header")
            self.transport.abort()

    def begin(self) -> None:
        self._disarm()
        self.in_request = True

    def end(self) -> None:
        self.in_request = False


class _Abort(asyncio.Protocol):
    """A connection over the cap with no refusal slot left: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class ListenerGuard:
    """Counts and caps the connections of one aiohttp listener; see the module docstring.

    `factory` replaces the aiohttp server as the listening socket's protocol factory; `middleware` goes first in
    the application's middlewares (it marks where a request's headers ended)."""

    def __init__(self, name: str, limits: Limits, metrics: ListenerMetrics, *, handshake_timeout: float = 60.0) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self.handshake_timeout = handshake_timeout + 1.0  # how long an accepted connection may wait for connection_made
        self.open = 0
        self.refusing = 0
        self._pending: dict[int, float] = {}  # id(connection) -> when to forget it, accepted but not yet made
        self._pending_refusals: dict[int, float] = {}
        self._connections: dict[int, _Connection] = {}  # id(aiohttp handler) -> its wrapper
        self._server: Callable[[], asyncio.Protocol] | None = None
        self._refuse_server = web.Server(self._refuse, access_log=None, keepalive_timeout=REFUSAL_TIMEOUT,
                                         lingering_time=1.0)
        self._log = EveryInterval(log)
        metrics.register(name)

    def attach(self, server: Callable[[], asyncio.Protocol]) -> None:
        self._server = server

    def factory(self) -> asyncio.Protocol:
        assert self._server is not None
        # Counted here, at the accept: asyncio accepts a burst (up to the backlog) before any connection_made runs.
        now = time.monotonic()
        self._expire(now)
        cap = self.limits.max_connections
        in_use = self.open + len(self._pending)
        if cap and in_use >= cap:
            self.metrics.refused.add(1, self.name)
            self._log.warning("%s: %d connections open (max_connections); refusing new ones", self.name, in_use)
            if self.refusing + len(self._pending_refusals) >= REFUSAL_SLOTS:
                return _Abort()
            conn = _Connection(self, self._refuse_server(), REFUSAL_TIMEOUT, refusal=True)
            self._pending_refusals[id(conn)] = now + self.handshake_timeout
            return conn
        conn = _Connection(self, self._server(), self.limits.read_header_timeout or self.limits.read_timeout)
        self._pending[id(conn)] = now + self.handshake_timeout
        return conn

    def _expire(self, now: float) -> None:
        """Forget accepted connections that never reached connection_made (a TLS handshake that failed: asyncio
        then never tells the protocol); none outlives the handshake timeout."""
        for pending in (self._pending, self._pending_refusals):
            for key in [k for k, deadline in pending.items() if deadline < now]:
                del pending[key]

    def _opened(self, conn: _Connection) -> None:
        self._connections[id(conn.inner)] = conn
        if conn.refusal:
            self._pending_refusals.pop(id(conn), None)
            self.refusing += 1
        else:
            self._pending.pop(id(conn), None)
            self.open += 1
            self.metrics.open.set(self.open, self.name)

    def _closed(self, conn: _Connection) -> None:
        if self._connections.pop(id(conn.inner), None) is None:
            return
        if conn.refusal:
            self.refusing -= 1
        else:
            self.open -= 1
            self.metrics.open.set(self.open, self.name)

    def connection(self, request: web.BaseRequest) -> _Connection | None:
        return self._connections.get(id(request.protocol))

    def deadline(self, request: web.BaseRequest) -> float | None:
        """The loop time by which the request must have been read whole (`read_timeout`), or None."""
        conn = self.connection(request)
        if conn is None or conn.request_started is None or self.limits.read_timeout <= 0:
            return None
        return conn.request_started + self.limits.read_timeout

    def read_timed_out(self, request: web.BaseRequest) -> None:
        self.metrics.timed_out.add(1, self.name, "read")

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        conn = self.connection(request)
        if conn is not None:
            conn.begin()
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.end()

    async def _refuse(self, request: web.BaseRequest) -> web.StreamResponse:
        resp = web.Response(status=503, text=f"{self.name}: too many connections open; retry later\n",
                            headers={"Retry-After": "1", "Connection": "close"})
        resp.force_close()
        return resp


async def serve(runner: web.AppRunner, guard: ListenerGuard, host: str, port: int, **kw: Any) -> asyncio.Server:
    """Listen on host:port with `guard` in front of the runner's server; the caller closes the result."""
    assert runner.server is not None
    guard.attach(runner.server)
    loop = asyncio.get_running_loop()
    backlog = accept_backlog(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return await loop.create_server(guard.factory, host or None, port, reuse_address=True, backlog=backlog, **kw)


def install_accept_error_handler(loop: asyncio.AbstractEventLoop, metrics: ListenerMetrics) -> None:
    """Descriptor exhaustion in accept() counted and logged once per interval; anything else as before."""
    previous = loop.get_exception_handler()
    report, other = EveryInterval(log), EveryInterval(log)

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _EXHAUSTION:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            if "accept" in str(context.get("message", "")):
                metrics.accept_errors.add(1, name)
                report.warning("accept() failed: %s (%s); new connections wait in the backlog until descriptors "
                               "free up (see tailsample_listener_open_connections and max_connections)",
                               exc.strerror, name)
            else:  # elsewhere in the loop (a transport, a callback): the same flood, the same treatment
                other.warning("%s: %s (%s)", context.get("message", "event loop error"), exc.strerror, name)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


__all__ = [
    "ENDPOINT_LIMITS_CAP",
    "REFUSAL_SLOTS",
    "Limits",
    "ListenerGuard",
    "ListenerMetrics",
    "accept_backlog",
    "descriptor_reserve",
    "fit_connection_caps",
    "install_accept_error_handler",
    "raise_nofile_limit",
    "serve",
]
