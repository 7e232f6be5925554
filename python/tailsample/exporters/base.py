"""What every exporter shares: the bounded sending queue, its consumers, and retries with exponential backoff.

As in the collector's exporterhelper:
- `sending_queue` holds at most `queue_size` batches (one batch: one kept payload from the engine). When it is
  full, the batch is dropped, counted in `otelcol_exporter_enqueue_failed_spans` and logged (at most once a
  second, with the count): a loss is never silent. `num_consumers` tasks send from it concurrently.
- With the queue disabled, `export` sends inline: the caller waits for the send and its retries.
- `retry_on_failure`: a retryable failure waits `initial_interval`, then `multiplier` times longer each time up
  to `max_interval`, each wait randomized by +/- `randomization_factor`, and at least what the server asked
  for (Retry-After, RetryInfo); it gives up after `max_elapsed_time` (0: never). A permanent failure is not
  retried. What is given up is counted in `otelcol_exporter_send_failed_spans` and logged.
- A backend that stops answering is never silent (`Outage`): the first failed attempt is logged at once with
  its error, then at most once per `OUTAGE_REPORT_INTERVAL` (10 s) while failures go on (failed attempts and
  batches since the last line, spans given up, the last error), and once when a send succeeds again.
- Shutdown drains the queue until a deadline, then counts and logs what is left as failed.
- With `sending_queue.storage: file_storage/<name>` (the collector's persistent queue) the queue is on disk
  (`<directory>/exporter_<id>_sending_queue/`, the Rust `PersistentQueue`): a batch is settled as soon as it is
  written there (so the engine may acknowledge its round), sent by the consumers from disk, and leaves the queue
  once sent or given up. What is still queued at shutdown, or in flight when the process dies, is sent after the
  next start: nothing in the queue is lost across a restart (at least once).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tailsample import _native
from tailsample.collector.metrics import Registry, Sample
from tailsample.collector.settings import QueueSettings, RetrySettings
from tailsample.collector.throttle import REPORT_INTERVAL_S, EveryInterval
from tailsample.errors import BackpressureError, StorageError
from tailsample.storage import FileStorage

log = logging.getLogger("tailsample.exporter")


class Ticket(abc.ABC):
    """Something waiting for batches to leave: each exporter handed a batch settles its tickets once, when the
    batch is sent (`ok`) or given up (dropped, retries spent, shutdown). The Kafka receiver commits behind them."""

    @abc.abstractmethod
    def hold(self, n: int = 1) -> None: ...

    @abc.abstractmethod
    def settle(self, ok: bool) -> None: ...


@dataclass(frozen=True)
class Batch:
    """One ExportTraceServiceRequest on its way out, with its span count (for the metrics) and the tickets waiting
    for it."""

    payload: bytes
    spans: int
    tickets: tuple[Ticket, ...] = ()
    resource_spans: int = 0

    def settle(self, ok: bool) -> None:
        for t in self.tickets:
            t.settle(ok)


class ExportError(Exception):
    """A failed send. `retryable` per the protocol's rules; `retry_after` when the server asked for a delay."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ExporterMetrics:
    """The collector's exporter counters; queue gauges are collected at scrape time from the exporters."""

    def __init__(self, registry: Registry) -> None:
        self.sent = registry.counter(
            "otelcol_exporter_sent_spans", "Number of spans successfully sent to destination.", ("exporter",))
        self.send_failed = registry.counter(
            "otelcol_exporter_send_failed_spans", "Number of spans in failed attempts to send to destination.",
            ("exporter",))
        self.enqueue_failed = registry.counter(
            "otelcol_exporter_enqueue_failed_spans", "Number of spans failed to be added to the sending queue.",
            ("exporter",))
        self.retries = registry.counter(
            "tailsample_exporter_retries", "Send attempts that failed and were retried.", ("exporter",))
        self._exporters: list[Exporter] = []
        registry.add_collector(self._collect)

    def watch(self, exporter: Exporter) -> None:
        self._exporters.append(exporter)

    def _collect(self) -> list[Sample]:
        out = []
        for e in self._exporters:
            labels = (("exporter", e.id),)
            out.append(Sample("otelcol_exporter_queue_size", "gauge", "Current size of the retry queue (in batches)",
                              labels, e.queue_size))
            out.append(Sample("otelcol_exporter_queue_capacity", "gauge",
                              "Fixed capacity of the retry queue (in batches)", labels, e.queue_capacity))
        return out


OUTAGE_REPORT_INTERVAL = REPORT_INTERVAL_S  # seconds between two "still failing" lines of one exporter


class Outage:
    """Reports one exporter's failing backend: at the first failed attempt (with its error), then periodically
    while attempts keep failing (counts since the last report, the last error), and once at recovery.

    Retries and backoff hide an outage from the metrics' casual reader for minutes (`max_elapsed_time` is 5 min
    by default): whoever watches the log must hear about it when it starts. `clock` is injectable for tests."""

    def __init__(self, exporter_id: str, *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log) -> None:
        self.id = exporter_id
        self.interval = OUTAGE_REPORT_INTERVAL if interval is None else interval
        self._clock = clock
        self._log = logger
        self.down_since: float | None = None
        self._reported = 0.0
        self._attempts = self._attempts_total = 0
        self._batches: set[int] = set()  # id() of the batches that failed since the last report (one interval)
        self._batches_total = 0  # batches that failed during this outage (counted at their first failure)
        self._given_up = 0
        self._last_error = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, batch: object, error: BaseException, *, first_attempt: bool, given_up_spans: int = 0) -> None:
        """One failed attempt to send `batch` (`first_attempt`: its first failure); `given_up_spans` when the
        batch is dropped after it."""
        now = self._clock()
        self._batches_total += first_attempt
        self._last_error = str(error) or type(error).__name__
        self._given_up += given_up_spans
        if self.down_since is None:
            self.down_since = self._reported = now
            self._attempts_total, self._batches_total = 1, 1
            self._attempts, self._batches = 0, set()
            what = f"{given_up_spans} spans given up" if given_up_spans else "retrying"
            self._log.warning("%s: cannot send to the backend: %s (%s; reported every %gs while it lasts)",
                              self.id, self._last_error, what, self.interval)
            self._given_up = 0
            return
        self._attempts += 1
        self._attempts_total += 1
        self._batches.add(id(batch))
        if now - self._reported >= self.interval:
            self._log.warning("%s: backend still failing, down for %.1fs; in the last %.1fs: failed attempts %d, "
                              "batches %d, spans given up %d; last error: %s", self.id, now - self.down_since,
                              now - self._reported, self._attempts, len(self._batches), self._given_up,
                              self._last_error)
            self._reported, self._attempts, self._batches, self._given_up = now, 0, set(), 0

    def succeeded(self) -> None:
        """A send went through: the outage, if any, is over."""
        if self.down_since is None:
            return
        now = self._clock()
        self._log.info("%s: backend answering again after %.1fs down (failed attempts %d, batches %d); last error "
                       "was: %s", self.id, now - self.down_since, self._attempts_total, self._batches_total,
                       self._last_error)
        self.down_since = None
        self._batches, self._batches_total, self._given_up = set(), 0, 0


class Backoff:
    """The collector's exponential backoff (cenkalti/backoff semantics) for one batch."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._interval = settings.initial_interval
        self._started = time.monotonic()
        self._rng = rng or random.Random()

    def next_wait(self, server_delay: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when the time budget is spent."""
        s = self.settings
        rf = s.randomization_factor
        wait = self._interval * (1 + rf * (2 * self._rng.random() - 1))
        if server_delay is not None:
            wait = max(wait, server_delay)
        self._interval = min(self._interval * s.multiplier, s.max_interval)
        if s.max_elapsed_time > 0 and time.monotonic() - self._started + wait > s.max_elapsed_time:
            return None
        return wait


class Exporter(abc.ABC):
    """An exporter with a sending queue and retries; subclasses implement `_send` (and `_open`, `_close`)."""

    kind = "exporter"

    def __init__(self, exporter_id: str, queue: QueueSettings, retry: RetrySettings, metrics: ExporterMetrics) -> None:
        self.id = exporter_id
        self.queue_settings = queue
        self.retry = retry
        self.metrics = metrics
        self._queue: asyncio.Queue[Batch] | None = None
        self._storage: FileStorage | None = None
        self._disk: _native.NativeQueue | None = None
        self._wake = asyncio.Event()
        self._consumers: list[asyncio.Task[None]] = []
        self._drop_log = EveryInterval(log)
        self._fail_log = EveryInterval(log)
        self.outage = Outage(exporter_id)
        metrics.watch(self)
        for counter in (metrics.sent, metrics.send_failed, metrics.enqueue_failed):
            counter.add(0, exporter_id)  # every series exists from the start: dashboards see 0, not nothing

    def use_storage(self, storage: FileStorage) -> None:
        """Keep the sending queue on disk (`sending_queue.storage`); call before `start`."""
        self._storage = storage

    @property
    def queue_size(self) -> int:
        if self._disk is not None:
            return len(self._disk)
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def queue_capacity(self) -> int:
        return self.queue_settings.queue_size if self.queue_settings.enabled else 0

    async def start(self) -> None:
        await self._open()
        if self.queue_settings.enabled and self._storage is not None:
            st = self._storage
            directory = st.component_directory("exporter", f"{self.id}_sending_queue")
            self._disk = await asyncio.to_thread(_native.NativeQueue, str(directory), st.budget,
                                                 self.queue_settings.queue_size, st.segment_size, st.sync)
            items, nbytes, seconds, cuts = self._disk.recovered
            for offset, cut, file in cuts:
                log.warning("%s: persistent queue: cut %d bytes at byte %d of %s (a write the last run did not "
                            "finish)", self.id, cut, offset, file)
            if items:
                log.info("%s: persistent queue holds %d batches (%d bytes) from the last run (read in %.3f s); "
                         "sending them", self.id, items, nbytes, seconds)
                self._wake.set()
            self._consumers = [asyncio.create_task(self._consume_disk(), name=f"{self.id}-consumer-{i}")
                               for i in range(self.queue_settings.num_consumers)]
        elif self.queue_settings.enabled:
            self._queue = asyncio.Queue(self.queue_settings.queue_size)
            self._consumers = [asyncio.create_task(self._consume(), name=f"{self.id}-consumer-{i}")
                               for i in range(self.queue_settings.num_consumers)]

    async def export(self, batch: Batch) -> None:
        """Queue the batch (or send it now, without a queue). Never raises: failures are counted and logged."""
        if self._disk is not None:
            await self._put_on_disk(self._disk, batch)
            return
        if self._queue is None:
            await self._send_with_retry(batch)
            return
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            batch.settle(False)
            self.metrics.enqueue_failed.add(batch.spans, self.id)
            self._drop_log.warning("%s: sending queue is full (%d batches); dropped %d spans",
                               self.id, self.queue_settings.queue_size, batch.spans)

    async def _put_on_disk(self, disk: _native.NativeQueue, batch: Batch) -> None:
        try:
            if self._storage is not None and self._storage.sync != "none":
                await asyncio.to_thread(disk.push, batch.payload)  # waits for an fsync: off the event loop
            else:
                disk.push(batch.payload)
        except (BackpressureError, StorageError) as exc:
            batch.settle(False)
            self.metrics.enqueue_failed.add(batch.spans, self.id)
            self._drop_log.warning("%s: persistent sending queue refused %d spans: %s", self.id, batch.spans, exc)
            return
        batch.settle(True)  # on disk: safe across a restart
        self._wake.set()

    async def _consume_disk(self) -> None:
        disk = self._disk
        assert disk is not None
        while True:
            item = disk.next_item()
            if item is None:
                self._wake.clear()
                item = disk.next_item()  # pushed between the first look and the clear
                if item is None:
                    await self._wake.wait()
                    continue
            seq, kept = item
            batch = Batch(kept.payload, kept.spans, resource_spans=kept.resource_spans)
            try:
                await self._send_with_retry(batch)
            except asyncio.CancelledError:  # shutdown: the batch stays on disk for the next start
                disk.release(seq)
                raise
            disk.done(seq)  # sent, or given up (counted as failed): it leaves the queue

    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._queue.get()
            try:
                await self._send_with_retry(batch)
            except asyncio.CancelledError:  # shutdown's deadline passed with this batch in flight
                batch.settle(False)
                self.metrics.send_failed.add(batch.spans, self.id)
                log.warning("%s: shutdown timeout reached while sending %d spans; not sent", self.id, batch.spans)
                raise
            finally:
                self._queue.task_done()

    async def _send_with_retry(self, batch: Batch) -> None:
        backoff: Backoff | None = None
        while True:
            try:
                await self._send(batch)
            except ExportError as exc:
                wait = None
                first_attempt = backoff is None
                if exc.retryable and self.retry.enabled:
                    backoff = backoff or Backoff(self.retry)
                    wait = backoff.next_wait(exc.retry_after)
                if exc.retryable:  # the backend is down or overloaded (a refused request means it answered)
                    self.outage.failed(batch, exc, first_attempt=first_attempt,
                                       given_up_spans=batch.spans if wait is None else 0)
                if wait is None:
                    batch.settle(False)
                    self.metrics.send_failed.add(batch.spans, self.id)
                    why = "not retryable" if not exc.retryable else (
                        "retry disabled" if not self.retry.enabled else "retries exhausted (max_elapsed_time)")
                    self._fail_log.warning("%s: dropping %d spans, %s: %s", self.id, batch.spans, why, exc)
                    return
                self.metrics.retries.add(1, self.id)
                log.debug("%s: %s; retrying in %.2fs", self.id, exc, wait)
                await asyncio.sleep(wait)
                continue
            except Exception as exc:  # a bug or an unexpected library error: count it, keep the exporter alive
                batch.settle(False)
                self.metrics.send_failed.add(batch.spans, self.id)
                log.exception("%s: unexpected error sending %d spans: %s", self.id, batch.spans, exc)
                return
            batch.settle(True)
            self.metrics.sent.add(batch.spans, self.id)
            self.outage.succeeded()
            return

    async def shutdown(self, deadline: float) -> None:
        """Drain the queue until `deadline` (time.monotonic()), then stop; what is left is counted as failed
        (kept on disk, with a persistent queue)."""
        if self._disk is not None:
            disk = self._disk
            while len(disk) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for task in self._consumers:
                task.cancel()
            await asyncio.gather(*self._consumers, return_exceptions=True)
            if len(disk):
                log.warning("%s: shutdown timeout reached; %d batches stay in the persistent queue for the next "
                            "start", self.id, len(disk))
        elif self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            for task in self._consumers:
                task.cancel()
            await asyncio.gather(*self._consumers, return_exceptions=True)
            left = 0
            while not self._queue.empty():
                batch = self._queue.get_nowait()
                batch.settle(False)
                left += batch.spans
            if left:
                self.metrics.send_failed.add(left, self.id)
                log.warning("%s: shutdown timeout reached; %d queued spans were not sent", self.id, left)
        await self._close()

    async def _open(self) -> None:  # noqa: B027 - optional hook
        """Open connections or files (called by start)."""

    async def _close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or files (called by shutdown)."""

    @abc.abstractmethod
    async def _send(self, batch: Batch) -> None:
        """Send once; raise ExportError on failure."""


__all__ = ["OUTAGE_REPORT_INTERVAL", "Backoff", "Batch", "ExportError", "Exporter", "ExporterMetrics", "Outage",
           "Ticket"]
