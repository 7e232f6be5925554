"""What the OTLP/HTTP and OTLP/gRPC receivers share around their Rust servers (`tailsample-server`).

Each receiver builds its own `_native` server (the arguments differ); this base class does the rest the same way
for both: the TLS files and the sink's check before the start, the hook Python runs after an accepted payload,
the server's counters copied into the metric families (at every scrape, every second, and at stop) with the
warnings they imply, and the stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.settings import HostPort, ServerTLS
from tailsample.collector.throttle import EveryInterval
from tailsample.collector.tls import server_context
from tailsample.engine import Ingested
from tailsample.receivers.sink import ReceiverMetrics, Sink

OBSERVE_INTERVAL_S = 1.0  # one accepted payload a second goes to the attribute inventory
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


class NativeReceiver:
    """One receiver's Rust server: counters into metrics, the after-payload hook, stop. Subclasses start it."""

    protocol: str  # "http" or "grpc": the metrics' transport label and the listener's suffix
    reasons: tuple[str, ...]  # the server's `rejected:<reason>` counters
    aborted_text: str  # the warning when a request's body was not read whole
    timeouts: tuple[tuple[str, str], ...]  # (the server's counter, the metric's `timeout` label)

    def __init__(self, receiver_id: str, sink: Sink, metrics: ReceiverMetrics, auth: BearerTokenAuth | None,
                 max_connections: int, log: logging.Logger) -> None:
        self.id = receiver_id
        self.sink = sink
        self.metrics = metrics
        self.auth = auth
        self.max_connections = max_connections  # the service lowers it to fit the descriptor limit
        self.listener = f"{receiver_id}/{self.protocol}"
        self._log = log
        self._server: Any = None
        self._seen: dict[str, int] = {}
        self._refresh_lock = threading.Lock()  # scrapes may come from several threads: each delta counted once
        self._task: asyncio.Task[None] | None = None
        self._aborted = EveryInterval(log)
        self._refusing = EveryInterval(log)
        metrics.register(receiver_id, self.protocol)
        metrics.listeners.register(self.listener)
        self.address: HostPort | None = None

    def _native_sink(self) -> NativeSink:
        if not hasattr(self.sink, "native_targets"):
            raise TypeError(f"{self.listener}: the sink must offer native_targets() (service.pipeline.FanoutSink)")
        native: NativeSink = self.sink  # type: ignore[assignment]
        return native

    @staticmethod
    def _tls_files(tls: ServerTLS | None) -> tuple[bytes, bytes] | None:
        if tls is None:
            return None
        server_context(tls)  # the checks and messages as before (ConfigError)
        return Path(tls.cert_file).read_bytes(), Path(tls.key_file).read_bytes()

    def _started(self, server: Any, host: str) -> HostPort:
        """Takes the started server: its counters are read from now on."""
        self._server = server
        self.metrics.registry.add_refresher(self.refresh)
        self._task = asyncio.create_task(self._refresh_every_second(), name=f"{self.listener}-counters")
        self.address = HostPort(host, server.port)  # the bound port (the endpoint's may be 0)
        return self.address

    def _after(self, sink: NativeSink) -> Any:
        def hook(payload: bytes, spans: int, rejected: int, rejection: str, by_reason: list[tuple[str, int]],
                 observe: bool) -> None:
            got = Ingested(spans, rejected, rejection, dict(by_reason)) if rejected else Ingested(spans)
            try:
                sink.after_native(payload, got, observe)
            except Exception:  # a bug here must not cost the request its answer
                self._log.exception("%s: after an accepted payload", self.listener)
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
        m, lm, rid, proto = self.metrics, self.metrics.listeners, self.id, self.protocol

        def delta(key: str) -> int:
            d = now.get(key, 0) - seen.get(key, 0)
            seen[key] = now.get(key, 0)
            return d

        m.accepted.add(delta("accepted_spans"), rid, proto)
        m.refused.add(delta("refused_spans"), rid, proto)
        if aborted := delta("aborted"):
            m.aborted.add(aborted, rid, proto)
            self._aborted.warning("%s: %s", self.listener, self.aborted_text, count=aborted)
        for reason in self.reasons:
            if d := delta(f"rejected:{reason}"):
                m.rejected.add(d, rid, proto, reason)
        lm.open.set(now.get("open", 0), self.listener)
        if refused := delta("refused_connections"):
            lm.refused.add(refused, self.listener)
            self._refusing.warning("%s: %d connections open (max_connections); refusing new ones", self.listener,
                                   now.get("open", 0), count=refused)
        for key, label in self.timeouts:
            lm.timed_out.add(delta(key), self.listener, label)
        for name in _ACCEPT_ERRORS:
            if d := delta(f"accept_error:{name}"):
                lm.accept_errors.add(d, name)

    async def _stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._server is not None:
            await asyncio.to_thread(self._server.stop, grace)
            self.refresh()
            self._server = None


__all__ = ["OBSERVE_INTERVAL_S", "NativeReceiver", "NativeSink"]
