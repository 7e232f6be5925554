"""The gate in front of the `/debug/*` endpoints of the telemetry metrics address.

They reveal span contents, trace IDs, service names and attribute values, and the metrics address is the one port
operators bind to every interface for Prometheus; so they are off unless a `tailsample_debug` extension is listed
in `service.extensions`, and then behind its bearer token (the receivers' `bearertokenauth`), a rate limit of
their own (one token bucket for every /debug path: cheap, bounded, and ingest is never starved by a poller) and a
bounded page size. Checked in that order: rate limit first, so a token guesser is throttled too.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.metrics import Registry, Sample
from tailsample.collector.settings import DebugEndpointsExtension

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DISABLED_MESSAGE = ("the /debug endpoints are off: they reveal span contents, trace IDs and attribute values. "
                    "Turn them on with a tailsample_debug extension listed in service.extensions "
                    "(extensions: {tailsample_debug: {auth: {authenticator: bearertokenauth}}}; "
                    "README: Debug endpoints)")


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; `take()` spends one or says how long until one is due."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was spent, else the seconds until the next one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class DebugGate:
    """Wraps each /debug handler: enabled or 404, rate limit (429), bearer token (401); counted per endpoint."""

    def __init__(self, settings: DebugEndpointsExtension | None, auth: BearerTokenAuth | None,
                 registry: Registry) -> None:
        self.settings = settings
        self.auth = auth
        self.bucket = TokenBucket(settings.requests_per_second, settings.burst) if settings is not None else None
        self.requests = registry.counter(
            "tailsample_debug_requests", "Requests to the /debug endpoints by endpoint and outcome (served, "
            "disabled, rate_limited, unauthenticated)", ("endpoint", "outcome"))

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    @property
    def max_page_size(self) -> int:
        return self.settings.max_page_size if self.settings is not None else 0

    def routes(self, handlers: dict[str, tuple[str, Handler]]) -> list[web.RouteDef]:
        """{path: (endpoint name, handler)} as routes ("POST /path" for a POST); when off, one route answering 404
        for every /debug path."""
        if not self.enabled:
            return [web.route("*", "/debug{rest:.*}", self._disabled)]
        # A path may start with "POST " (an action, not a read); the rest are GET.
        return [web.post(path[5:], self._wrap(name, handler)) if path.startswith("POST ")
                else web.get(path, self._wrap(name, handler)) for path, (name, handler) in handlers.items()]

    def post_routes(self, handlers: dict[str, tuple[str, Handler]]) -> list[web.RouteDef]:
        """As `routes`, for POST endpoints that change the service: these also need the gate's authenticator
        (403 without one). When off, `routes`' catch-all answers 404."""
        if not self.enabled:
            return []
        return [web.post(path, self._wrap(name, self._authenticated_only(name, handler)))
                for path, (name, handler) in handlers.items()]

    def _authenticated_only(self, name: str, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.auth is None:
                return web.Response(status=403, text=json.dumps({"error": f"/debug/{name} changes the service: give "
                                                                          "the tailsample_debug extension an "
                                                                          "authenticator (auth) to use it"}),
                                    content_type="application/json")
            return await handler(request)

        return guarded

    async def _disabled(self, request: web.Request) -> web.Response:
        self.requests.add(1, "any", "disabled")
        return web.Response(status=404, text=json.dumps({"error": DISABLED_MESSAGE, "disabled": True}),
                            content_type="application/json")

    def _wrap(self, name: str, handler: Handler) -> Handler:
        async def gated(request: web.Request) -> web.StreamResponse:
            assert self.bucket is not None
            wait = self.bucket.take()
            if wait > 0:
                self.requests.add(1, name, "rate_limited")
                return web.Response(
                    status=429, headers={"Retry-After": str(max(1, round(wait)))},
                    text=json.dumps({"error": f"the /debug endpoints answer at most "
                                              f"{self.bucket.rate:g} requests per second (extensions."
                                              f"{self.settings.id if self.settings else ''}.rate_limit); "
                                              f"retry in {wait:.2f}s"}),
                    content_type="application/json")
            if self.auth is not None and not self.auth.authenticate(request.headers.get("Authorization")):
                self.requests.add(1, name, "unauthenticated")
                return web.Response(
                    status=401, headers={"WWW-Authenticate": f'{self.auth.scheme or "Bearer"} realm="tailsample"'},
                    text=json.dumps({"error": "missing or invalid bearer token in the Authorization header "
                                              "(`tailsample ... --token`, or TAILSAMPLE_TOKEN)"}),
                    content_type="application/json")
            self.requests.add(1, name, "served")
            return await handler(request)

        return gated


# `GET /debug/traffic`: each recorded request as an 8-byte big-endian receive time (Unix ns), a 4-byte big-endian
# length, then the OTLP protobuf bytes as received: the file exporter's proto format with a time before each record.
RECORDING_CONTENT_TYPE = "application/x-tailsample-recording"
RECORD_HEADER = struct.Struct(">QI")


class TrafficRecording:
    """The recent incoming OTLP requests of one pipeline (`tailsample simulate --url`), a ring bounded by bytes.

    The engine keeps only what it decided to keep; a what-if needs every trace, so the requests themselves are
    kept: a reference to the bytes object the receiver already holds (no copy, no decode) and its receive time.
    The oldest leave first; a request larger than the whole bound is not recorded (counted as dropped).
    Receivers call `add` on the event loop, the gRPC and Kafka ones from worker threads: hence the lock."""

    def __init__(self, pipeline: str, limit: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.pipeline = pipeline
        self.limit = limit
        self._clock = clock
        self._ring: deque[tuple[int, bytes]] = deque()
        self.bytes = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, payload: bytes) -> None:
        size = len(payload)
        if not isinstance(payload, bytes):  # a view of a buffer the receiver reuses: the one case that copies
            payload = bytes(payload)
        at = self._clock()
        with self._lock:
            if size > self.limit:
                self.dropped += 1
                return
            self._ring.append((at, payload))
            self.bytes += size
            while self.bytes > self.limit:
                _, old = self._ring.popleft()
                self.bytes -= len(old)
                self.dropped += 1

    def __len__(self) -> int:
        return len(self._ring)

    def snapshot(self, since_ns: int = 0) -> list[tuple[int, bytes]]:
        """(receive time in Unix ns, payload) oldest first, those received at or after `since_ns`: references,
        so a response holds at most one ring's worth beside the ring while it streams."""
        with self._lock:
            return [r for r in self._ring if r[0] >= since_ns]

    def samples(self) -> list[Sample]:
        labels = (("pipeline", self.pipeline),)
        return [Sample("tailsample_recent_traffic_bytes", "gauge", "Bytes of incoming OTLP requests held for "
                       "`simulate --url` (the tailsample_debug extension's recent_traffic_bytes)", labels, self.bytes),
                Sample("tailsample_recent_traffic_payloads", "gauge", "Incoming OTLP requests held for "
                       "`simulate --url`", labels, len(self._ring)),
                Sample("tailsample_recent_traffic_dropped_payloads", "counter", "Requests pushed out of the "
                       "recent traffic recording (oldest first) or too large for it", labels, self.dropped)]


def encode_records(records: list[tuple[int, bytes]], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The recording's wire format, in pieces of about `chunk` bytes (a response streams them)."""
    parts: list[bytes] = []
    size = 0
    for at, payload in records:
        parts += (RECORD_HEADER.pack(at, len(payload)), payload)
        size += RECORD_HEADER.size + len(payload)
        if size >= chunk:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def decode_records(data: bytes, source: str = "recording") -> list[tuple[int, bytes]]:
    """The inverse of `encode_records`; ValueError naming the offset when the data is cut or not a recording."""
    out: list[tuple[int, bytes]] = []
    at = 0
    view = memoryview(data)
    while at < len(data):
        if len(data) - at < RECORD_HEADER.size:
            raise ValueError(f"{source}: cut short at byte {at:,} (a record header needs {RECORD_HEADER.size})")
        received, length = RECORD_HEADER.unpack_from(data, at)
        start = at + RECORD_HEADER.size
        if start + length > len(data):
            raise ValueError(f"{source}: cut short at byte {at:,} (a record of {length:,} bytes, "
                             f"{len(data) - start:,} left)")
        out.append((received, bytes(view[start:start + length])))
        at = start + length
    return out


__all__ = ["DISABLED_MESSAGE", "RECORDING_CONTENT_TYPE", "DebugGate", "TokenBucket", "TrafficRecording",
           "decode_records", "encode_records"]
