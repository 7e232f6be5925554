"""A traces pipeline of `tailsample serve`: its processors in order around one engine, then its exporters.

receivers ──bytes──▶ [memory_limiter] ─▶ tail_sampling (the engine) ─ poll ─▶ [batch] ─▶ every exporter

- `memory_limiter`, wherever it is listed, is checked before the engine takes a payload (it refuses data).
- `tail_sampling` is the engine: payloads are buffered by trace and decided `decision_wait` after a trace's first
  span; the decision loop polls it every `tick` seconds in a worker thread (the engine releases the GIL).
- `batch` after `tail_sampling` regroups kept payloads into batches of `send_batch_size` spans (or what
  `timeout` gathered), never above `send_batch_max_size` when payloads allow (a payload is never split), and
  never above `tailsample.max_payload_bytes` in bytes (the engine cut each payload to it; a batch joins them).
  Concatenated ExportTraceServiceRequests are one valid request: their `resource_spans` add up. A `batch` before
  `tail_sampling` cannot change what is kept (the engine regroups spans by trace anyway), so it passes data
  through; the README says so.
- Several exporters receive the same bytes.
- Every decision round (one poll) is followed in a `RoundLedger` until each batch it produced is settled by
  every exporter: the Kafka receiver commits a message only behind rounds whose batches were all sent, and an
  engine with tail storage is told (`acknowledge`) which rounds are settled, so it can delete what they held.
  A batch an exporter gave up counts as settled there: a persistent queue (`sending_queue.storage`) is what
  keeps batches through exporter failures; tail storage keeps the buffer through restarts.
- With tail storage, shutdown decides only what is due: the rest stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tailsample.archive import Recovered
from tailsample.collector.metrics import Registry, Sample
from tailsample.collector.reference import engine_gauges, engine_stat
from tailsample.collector.settings import BatchProcessor, Pipeline, TailSamplingProcessor
from tailsample.collector.throttle import REPORT_INTERVAL_S, EveryInterval
from tailsample.engine import REJECT_REASONS, Engine, Ingested, KeptPayload, TakenMessages
from tailsample.errors import StorageError
from tailsample.exporters.base import Batch, Exporter, Ticket
from tailsample.incident.lint import AttributeInventory
from tailsample.receivers.sink import span_count
from tailsample.service.debug import TrafficRecording
from tailsample.service.memory import MemoryLimiter
from tailsample.storage import FileStorage

log = logging.getLogger("tailsample.pipeline")

PREFIX = "otelcol_processor_tail_sampling_"
# engine stats that are gauges (levels); every other key is a counter. The list is the reference's.
_GAUGES = engine_gauges()
# The attribute inventory (`/debug/attributes`, `check-config --url`, explain's near misses) reads at most one
# payload per interval: a sample of the keys, at a bounded cost whatever the rate.
INVENTORY_INTERVAL_S = 1.0
# ... and waits at least this many times the CPU time the last one took, so the sample stays under 0.2 % of a
# core whatever the payload size. The engine's scan counts a payload's attributes in ~0.7 us per span (0.7 ms for
# 1,000 spans; reading them value by value in Python took ~17 us per span): at one payload a second the bound
# is never reached with the payloads SDKs send.
INVENTORY_COST_RATIO = 500
# Spans rejected for nesting and kept spans over max_payload_bytes are logged at most once per interval, with
# counts: a sender repeating the same bad span must not flood the log.
_SPAN_KINDS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
               "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
_STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")


class Round(Ticket):
    """One decision round: settled once the poll is dispatched and every batch it produced is settled."""

    def __init__(self, ledger: RoundLedger, seq: int) -> None:
        self.ledger = ledger
        self.seq = seq
        self.outstanding = 1  # the dispatch itself
        self.failed = False
        self.engine_round: int | None = None  # the engine's number for it, once polled

    def hold(self, n: int = 1) -> None:
        self.outstanding += n

    def settle(self, ok: bool) -> None:
        self.failed |= not ok
        self.outstanding -= 1
        if self.outstanding == 0:
            self.ledger.finish(self)


class RoundLedger:
    """Rounds started, and `sent_through`: the last round of the unbroken run of rounds, from the first, whose
    batches were all sent. A round with a batch given up (dropped, retries spent, shutdown) stops the run for
    good: what it decided is never marked sent, so a Kafka receiver commits nothing behind it and those messages
    are read again after a restart (at least once). Runs on the event loop; the Kafka consumer thread reads the
    two integers."""

    def __init__(self, on_settled: Callable[[int], None] | None = None) -> None:
        self.started = 0
        self.sent_through = 0
        self.settled_through = 0  # every round up to here settled, sent or given up
        self.failed_at: int | None = None
        self._open: set[int] = set()
        self._engine_rounds: dict[int, int] = {}
        self._on_settled = on_settled

    def begin(self) -> Round:
        self.started += 1
        self._open.add(self.started)
        return Round(self, self.started)

    def finish(self, r: Round) -> None:
        self._open.discard(r.seq)
        if r.engine_round is not None:
            self._engine_rounds[r.seq] = r.engine_round
        if r.failed and (self.failed_at is None or r.seq < self.failed_at):
            self.failed_at = r.seq
        settled = (min(self._open) - 1) if self._open else self.started
        through = settled
        if self.failed_at is not None:
            through = min(through, self.failed_at - 1)
        self.sent_through = max(self.sent_through, through)
        if settled > self.settled_through:
            self.settled_through = settled
            done = [seq for seq in self._engine_rounds if seq <= settled]
            last = max((self._engine_rounds.pop(seq) for seq in done), default=None)
            if last is not None and self._on_settled is not None:
                self._on_settled(last)


class Batcher:
    """The `batch` processor after `tail_sampling`."""

    def __init__(self, settings: BatchProcessor, exporters: Sequence[Exporter], max_bytes: int) -> None:
        self.settings = settings
        self.exporters = exporters
        self.max_bytes = max_bytes
        self._pending: list[Batch] = []
        self._spans = 0
        self._bytes = 0
        self._since = 0.0

    async def add(self, batch: Batch) -> None:
        limit = self.settings.send_batch_max_size
        if self._pending and ((limit and self._spans + batch.spans > limit)
                              or self._bytes + len(batch.payload) > self.max_bytes):
            await self.flush()
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(batch)
        self._spans += batch.spans
        self._bytes += len(batch.payload)
        if self._spans >= self.settings.send_batch_size:
            await self.flush()

    async def on_tick(self) -> None:
        if self._pending and time.monotonic() - self._since >= self.settings.timeout:
            await self.flush()

    def until_timeout(self) -> float | None:
        """Seconds until what is pending is due out at `timeout` (None when nothing is pending)."""
        return self._since + self.settings.timeout - time.monotonic() if self._pending else None

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, spans = self._pending, self._spans
        self._pending, self._spans, self._bytes = [], 0, 0
        tickets = tuple(t for b in pending for t in b.tickets)
        merged = pending[0] if len(pending) == 1 else Batch(b"".join(b.payload for b in pending), spans, tickets,
                                                            sum(b.resource_spans for b in pending))
        await fan_out(self.exporters, merged)
        merged.settle(True)  # the hold taken when each part entered the batcher


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def fan_out(exporters: Sequence[Exporter], batch: Batch) -> None:
    for t in batch.tickets:
        t.hold(len(exporters))
    for exporter in exporters:
        await exporter.export(batch)


# Losses and refusals are logged at WARNING at most once per interval per pipeline, with the counts since the
# last line: a flood of evictions is one line every 10 s, never one per trace. The engine's stats are read at
# most once per second for it.
LOSS_REPORT_INTERVAL_S = REPORT_INTERVAL_S
LOSS_CHECK_INTERVAL_S = 1.0
_REFUSAL_REASONS = (("refused_num_traces", "num_traces with block_on_overflow"),
                    ("refused_late_span_buffer", "late-span buffer full"),
                    ("refused_max_buffered_bytes", "max_buffered_bytes"),
                    ("refused_tail_storage", "tail storage full"))


class LossReporter:
    """Evictions at `num_traces`, traces dropped (too large, by a drop policy) and payloads refused with
    backpressure, as one WARNING line per interval with the counts since the previous line."""

    def __init__(self, name: str, stats: Callable[[], dict[str, int]], *,
                 clock: Callable[[], float] = time.monotonic, interval: float = LOSS_REPORT_INTERVAL_S,
                 check_interval: float = LOSS_CHECK_INTERVAL_S) -> None:
        self.name = name
        self._stats = stats
        self._clock = clock
        self.interval = interval
        self.check_interval = check_interval
        self._reported = dict(stats())  # counts up to the last line (or the start)
        self._next_check = 0.0
        self._next_line = 0.0
        self._last_line: float | None = None

    def check(self, *, final: bool = False) -> str | None:
        """Logs (and returns) a line when there is something new and the interval allows (`final`: at shutdown,
        whatever the interval); else None."""
        now = self._clock()
        if not final and (now < self._next_check or now < self._next_line):
            return None
        self._next_check = now + self.check_interval
        stats = self._stats()
        line = self._describe(stats, {k: stats.get(k, 0) - self._reported.get(k, 0) for k in stats})
        if line is None:
            return None
        since = f"in the last {now - self._last_line:.1f}s" if self._last_line is not None else "since the start"
        if final:
            since = f"at shutdown, {since}"
        text = f"{self.name}: {since}: {line} (logged at most every {self.interval:g}s, with the counts since)"
        log.warning("%s", text)
        self._reported, self._last_line, self._next_line = dict(stats), now, now + self.interval
        return text

    @staticmethod
    def _describe(stats: dict[str, int], d: dict[str, int]) -> str | None:
        parts = []
        if d.get("traces_evicted", 0) > 0:
            parts.append(f"{d['traces_evicted']:,} traces ({d.get('spans_evicted', 0):,} spans) evicted undecided "
                         f"at num_traces {stats.get('limit_num_traces', 0):,} (lost, whatever the policies would "
                         "have decided)")
        if d.get("traces_dropped_too_large", 0) > 0:
            parts.append(f"{d['traces_dropped_too_large']:,} traces dropped over maximum_trace_size_bytes "
                         f"{stats.get('limit_maximum_trace_size_bytes', 0):,}")
        if d.get("traces_dropped_by_policy", 0) > 0:
            parts.append(f"{d['traces_dropped_by_policy']:,} traces dropped by a drop policy")
        if d.get("payloads_refused", 0) > 0:
            why = ", ".join(f"{text} {d[k]:,}" for k, text in _REFUSAL_REASONS if d.get(k, 0) > 0)
            parts.append(f"{d['payloads_refused']:,} payloads refused with backpressure" + (f" ({why})" if why else
                                                                                            ""))
        return "; ".join(parts) if parts else None


class ServicePipeline:
    """One `service.pipelines.traces[/name]`: consumes payloads, decides, hands kept spans to the exporters."""

    def __init__(self, settings: Pipeline, processors: dict[str, object], exporters: Sequence[Exporter],
                 limiters: Sequence[MemoryLimiter], registry: Registry,
                 storage: FileStorage | None = None, *, archive: FileStorage | None = None) -> None:
        self.id = settings.id
        sampler = processors[settings.tail_sampling]
        assert isinstance(sampler, TailSamplingProcessor)
        self.sampler_id = sampler.id
        self.engine = Engine(sampler.config, storage=storage, component_id=sampler.id, archive=archive)
        self.durable = storage is not None
        self.stopping = False  # set by the service before its exporters drain
        if storage is not None:
            _log_replay(sampler.id, self.engine)
        self.exporters = list(exporters)
        self.limiters = list(limiters)
        after = settings.processors[settings.processors.index(settings.tail_sampling) + 1:]
        batch = next((p for p in (processors[x] for x in after) if isinstance(p, BatchProcessor)), None)
        max_bytes = self.engine.stats()["limit_max_payload_bytes"]
        self.batcher = Batcher(batch, self.exporters, max_bytes) if batch is not None else None
        self.tick = decision_tick(sampler.config.decision_wait)
        self.rounds = RoundLedger(self._acknowledge if self.durable else None)
        self._timer = registry.histogram(
            PREFIX + "sampling_decision_timer_latency", "Latency (ms) of each run of the sampling decision timer",
            (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000), ("processor",))
        self.losses = LossReporter(f"pipeline {self.id} ({self.sampler_id})", self.engine.stats)
        self._rejections = EveryInterval(log)
        self._oversized = EveryInterval(log)
        self._oversized_seen = 0
        self.recovered_traces = 0
        self.recovered_spans = 0
        self.inventory = AttributeInventory()
        self._inventory_lock = threading.Lock()  # the Kafka receiver observes from its consumer thread
        self._inventory_due = 0.0
        self.recording: TrafficRecording | None = None  # set by the service when `simulate --url` may read it
        self._poll_inline = False  # the first poll runs in the worker thread: its cost is unknown
        self._waiter: asyncio.Future[None] | None = None  # the decision loop's sleep, for `wake`
        registry.add_collector(self._collect)

    # ---- in: called by the receivers, on the event loop --------------------------------------------------------

    def admit(self) -> None:
        """Raises BackpressureError while one of the pipeline's memory limiters refuses data. Every way in calls it
        before the engine takes anything, so a refusal takes nothing."""
        for limiter in self.limiters:
            limiter.check()

    def consume(self, payload: bytes) -> Ingested:
        self.admit()
        return self.take(payload)

    def take(self, payload: bytes) -> Ingested:
        """Into the engine, the limiters already checked (`admit`)."""
        got = self.engine.ingest_report(payload)
        if self.recording is not None:  # what the engine took (a refusal raised above): the what-if sees the same
            self.recording.add(payload)
        self.observe(payload)
        if got.rejected_spans:
            self.report_rejected(got)
        return got

    def observe(self, payload: bytes) -> None:
        """Counts the attribute keys of an accepted payload, at most one per `INVENTORY_INTERVAL_S` (or per
        `INVENTORY_COST_RATIO` times the last one's CPU time, when longer)."""
        now = time.monotonic()
        if now < self._inventory_due:
            return
        with self._inventory_lock:
            if now < self._inventory_due:
                return
            self._inventory_due = now + INVENTORY_INTERVAL_S
            started = time.thread_time()
            self.inventory.add_payload(payload)  # the engine accepted it: its scan reads it again
            self._inventory_due = now + max(INVENTORY_INTERVAL_S,
                                            (time.thread_time() - started) * INVENTORY_COST_RATIO)

    # ---- in, for a receiver that commits after decisions (Kafka): `receivers.sink.TrackedSink` ------------------

    def consume_messages(self, messages: list[Any]) -> TakenMessages:
        """`Engine.ingest_messages` behind the memory limiters (a refusal raises BackpressureError, nothing taken)."""
        self.admit()
        got = self.engine.ingest_messages(messages)
        if self.recording is not None or time.monotonic() >= self._inventory_due:
            skipped = {(t, p, o) for t, p, o, _ in got.rejected}
            values: Iterator[bytes] = (m.value() or b"" for m in messages[:got.taken]
                      if m.error() is None and (m.topic(), m.partition(), m.offset()) not in skipped)
            if self.recording is not None:
                recorded = list(values)
                for v in recorded:
                    self.recording.add(v)
                values = iter(recorded)
            first = next(values, None)  # one is all the sample takes at a time: the rest are not read
            if first is not None:
                self.observe(first)
        return got

    @property
    def round_started(self) -> int:
        return self.rounds.started

    @property
    def round_sent_through(self) -> int:
        return self.rounds.sent_through

    def first_buffered(self, trace_ids: bytes, sizes: list[int]) -> list[int]:
        return self.engine.first_buffered(trace_ids, sizes)

    def forget(self, trace_ids: list[bytes]) -> int:
        return self.engine.forget(trace_ids)

    def inventory_json(self) -> dict[str, object]:
        with self._inventory_lock:
            return dict(self.inventory.to_json())

    @contextlib.contextmanager
    def locked_inventory(self) -> Iterator[AttributeInventory]:
        with self._inventory_lock:
            yield self.inventory

    # ---- out: the decision loop ------------------------------------------------------------------------------

    async def decide(self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor) -> float:
        """One decision round. Returns how long the loop may sleep before the next round has work (0: at the next
        tick): until the next trace is due, bounded by `IDLE_WAIT_S`, the soonest a new trace can be due and the
        batch processor's timeout.

        A round with nothing due polls nothing (no thread hop, no sampling_decision_timer_latency sample) but is
        still begun and settled: a Kafka message taken before it, whose traces are all out, commits behind it.
        With tail storage every round polls (each is recorded, and acknowledged), in the worker thread."""
        round_ = self.rounds.begin()  # before the check: a message taken after this is decided in a later round
        if not self.durable:
            due, _ = self.engine.next_due()
            if due is None or due > self.engine.now():
                round_.settle(True)
                await self._after_round()
                return self._idle_wait()
        started = time.perf_counter()
        if self._poll_inline:
            (round_.engine_round, payloads), took = self._poll()
        else:
            (round_.engine_round, payloads), took = await loop.run_in_executor(executor, self._poll)
        self._poll_inline = not self.durable and took < INLINE_POLL_S
        self._timer.observe((time.perf_counter() - started) * 1e3, self.sampler_id)
        self._report_oversized()
        await self.dispatch(payloads, round_)
        await self._after_round()
        return 0.0 if self.durable else self._idle_wait()

    def _poll(self) -> tuple[tuple[int, list[KeptPayload]], float]:
        """The engine's round and its own time (the thread hop not counted: it decides where the next runs)."""
        started = time.perf_counter()
        got = self.engine.poll_round_kept()
        return got, time.perf_counter() - started

    async def sleep(self, seconds: float) -> None:
        """The decision loop's wait for its next round; `wake` ends it early."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def wake(self) -> None:
        """Ends the decision loop's sleep now (on the event loop): after a reload, what is due may have changed."""
        if self._waiter is not None:
            _resolve(self._waiter)

    async def _after_round(self) -> None:
        if self.batcher is not None:
            await self.batcher.on_tick()
        self.losses.check()

    def _idle_wait(self) -> float:
        due, arrival = self.engine.next_due()
        wait = min(IDLE_WAIT_S, arrival)
        if due is not None:
            wait = min(wait, due - self.engine.now())
        pending = self.batcher.until_timeout() if self.batcher is not None else None
        if pending is not None:
            wait = min(wait, pending)
        return max(0.0, wait)

    async def dispatch(self, payloads: Iterable[KeptPayload], round_: Round) -> None:
        for kept in payloads:
            batch = Batch(kept.payload, kept.spans, (round_,), kept.resource_spans)
            if self.batcher is not None:
                round_.hold()  # released when the batcher flushes it
                await self.batcher.add(batch)
            else:
                await fan_out(self.exporters, batch)
        round_.settle(True)

    async def recover(self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor,
                      trace_ids: list[str], *, export: bool) -> list[Recovered]:
        """Dropped traces found in the archive by ID (their spans marked `tailsample.recovered`); with `export`,
        each handed to the pipeline's exporters whole (past the batch processor: a recovery is sent at once)."""
        found = await loop.run_in_executor(executor, self.engine.recover, trace_ids)
        if export:
            for r in found:
                await fan_out(self.exporters, Batch(r.payload, span_count(r.payload)))
                self.recovered_traces += 1
                self.recovered_spans += span_count(r.payload)
        return found

    def report_rejected(self, got: Ingested) -> None:
        self._rejections.warning("%s: spans rejected alone, their requests answered with a partial success; "
                                 "this one: %s (%s)", self.sampler_id, got.rejection,
                                 ", ".join(f"{r}: {n}" for r, n in got.rejected_by_reason.items()),
                                 count=got.rejected_spans)

    def _report_oversized(self) -> None:
        seen, last = self.engine.oversized_spans()
        if seen > self._oversized_seen:
            what = f"trace {last[0]} ({last[1]} bytes)" if last else "?"
            self._oversized.warning("%s: kept spans larger than tailsample.max_payload_bytes, each sent alone in a "
                                    "payload over the limit; this one: %s", self.sampler_id, what,
                                    count=seen - self._oversized_seen)
            self._oversized_seen = seen

    def _acknowledge(self, engine_round: int) -> None:
        if self.stopping and self.rounds.failed_at is not None:
            # A batch given up while stopping is not lost: without this acknowledgement, the next start sends
            # its traces again from tail storage.
            return
        try:
            self.engine.acknowledge(engine_round)
        except StorageError as e:  # counted in storage_errors; a replay would send those rounds again
            log.error("%s: %s", self.sampler_id, e)

    async def flush(self) -> None:
        """Shutdown: decide (or drop) everything pending and hand it to the exporters. With tail storage, only
        what is due: the rest is on disk and replayed at the next start."""
        round_ = self.rounds.begin()
        round_.engine_round, payloads = (self.engine.poll_round_kept() if self.durable
                                         else self.engine.flush_round_kept())
        await self.dispatch(payloads, round_)
        if self.batcher is not None:
            await self.batcher.flush()
        self.losses.check(final=True)

    # ---- metrics ---------------------------------------------------------------------------------------------

    def _collect(self) -> list[Sample]:
        stats = self.engine.stats()
        out: list[Sample] = []
        proc = ("processor", self.sampler_id)

        def add(name: str, kind: str, help_text: str, value: float, *labels: tuple[str, str]) -> None:
            out.append(Sample(name, kind, help_text, (proc, *labels), value))

        for policy, c in self.engine.policy_stats().items():
            pol = ("policy", policy)
            add(PREFIX + "count_traces_sampled", "counter", "Count of traces that were sampled or not per policy",
                c["sampled"], pol, ("sampled", "true"), ("decision", "sampled"))
            add(PREFIX + "count_traces_sampled", "counter", "Count of traces that were sampled or not per policy",
                c["not_sampled"], pol, ("sampled", "false"), ("decision", "not_sampled"))
            if c["dropped"]:
                add(PREFIX + "count_traces_sampled", "counter",
                    "Count of traces that were sampled or not per policy", c["dropped"], pol, ("sampled", "false"),
                    ("decision", "dropped"))
            add(PREFIX + "sampling_policy_execution_count", "counter", "Total number of executions of a policy",
                c["sampled"] + c["not_sampled"] + c["dropped"] + c["errors"], pol)
            add("tailsample_policy_decided_traces", "counter",
                "Kept traces this policy was the first, in order, to sample", c["decided"], pol)
        glob = PREFIX + "global_count_traces_sampled"
        ghelp = "Global count of traces that were sampled or not by at least one policy"
        add(glob, "counter", ghelp, stats["traces_sampled"], ("sampled", "true"), ("decision", "sampled"))
        add(glob, "counter", ghelp, stats["traces_not_sampled"], ("sampled", "false"), ("decision", "not_sampled"))
        add(glob, "counter", ghelp, stats["traces_dropped_by_policy"], ("sampled", "false"), ("decision", "dropped"))
        add(PREFIX + "sampling_policy_evaluation_error", "counter", "Count of sampling policy evaluation errors",
            stats["policy_evaluation_errors"])
        add(PREFIX + "sampling_trace_dropped_too_early", "counter",
            "Count of traces that needed to be dropped before the configured wait time", stats["traces_evicted"])
        add(PREFIX + "sampling_traces_on_memory", "gauge", "Tracks the number of traces current on memory",
            stats["traces_in_memory"])
        add(PREFIX + "new_trace_id_received", "counter", "Counts the arrival of new traces",
            stats["traces_received"])
        add(PREFIX + "traces_dropped_too_large", "counter", "Count of traces dropped for exceeding the size limit",
            stats["traces_dropped_too_large"])
        # The distribution, not only the mean: "p99 at most 100 ms past due" is read from these buckets.
        lag, lag_help = "tailsample_decision_lag_seconds", "How late decisions came past their due time (decided - due)"
        cumulative = 0
        for bound, count in self.engine.decision_lag_histogram():
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(Sample(lag, "histogram", lag_help, (proc, ("le", le)), cumulative, "_bucket"))
        out.append(Sample(lag, "histogram", lag_help, (proc,), stats["decision_lag_ns_total"] * 1e-9, "_sum"))
        out.append(Sample(lag, "histogram", lag_help, (proc,), stats["decisions_timed"], "_count"))
        # Spans rejected alone: one series per reason (their sum is the engine's spans_rejected).
        for reason in REJECT_REASONS:
            add("tailsample_engine_spans_rejected", "counter", "Spans rejected alone, the rest of their requests "
                "taken (an OTLP partial success), by reason", stats.get(f"spans_rejected_{reason}", 0),
                ("reason", reason))
        for key, value in stats.items():
            if key.startswith("spans_rejected"):
                continue
            kind = "gauge" if key in _GAUGES or key.startswith("limit_") else "counter"
            name, scale = engine_metric_name(key, kind)
            stat = engine_stat(key)
            add(name, kind, stat.meaning if stat else f"engine stat {key}", value * scale)
        add("tailsample_engine_limit_decision_wait_seconds", "gauge", "The decision_wait of this processor: the "
            "alert on decision lag compares with it", self.engine.config.decision_wait)
        add("tailsample_attribute_inventory_keys", "gauge", "Attribute keys held by the traffic sample that "
            "check-config --url and explain read (bounded)", self.inventory.size)
        add("tailsample_attribute_inventory_keys_dropped", "counter", "New attribute keys not counted: the "
            "inventory was at its bound", self.inventory.keys_dropped)
        out.extend(archive_samples(self.engine, proc, self.recovered_traces, self.recovered_spans))
        out.extend(red_samples(self.engine, proc))
        out.extend(gap_samples(self.engine, proc))
        out.extend(shadow_samples(self.engine, proc))
        return out


def archive_samples(engine: Engine, proc: tuple[str, str], recovered_traces: int,
                    recovered_spans: int) -> list[Sample]:
    """The archive of dropped traces' metrics (none when it is off)."""
    a = engine.archive_stats()
    if a is None:
        return []
    oldest = a["oldest"]
    rows: list[tuple[str, str, str, float]] = [
        ("tailsample_archive_bytes", "gauge", "Bytes the archive of dropped traces holds on disk", a["bytes"]),
        ("tailsample_archive_limit_bytes", "gauge", "The archive's max_size_mib, in bytes", a["max_bytes"]),
        ("tailsample_archive_traces", "gauge", "Traces the archive holds", a["traces"]),
        ("tailsample_archive_oldest_age_seconds", "gauge", "Age of the oldest trace the archive holds (0 when empty)",
         max(0.0, time.time() - oldest) if oldest is not None else 0.0),
        ("tailsample_archive_written_traces", "counter", "Dropped traces written to the archive",
         a["traces_written"]),
        ("tailsample_archive_written_otlp_bytes", "counter", "OTLP bytes of the dropped traces written to the "
         "archive, before compression", a["bytes_raw"]),
        ("tailsample_archive_refused_traces", "counter", "Dropped traces not archived: a block larger than the "
         "whole budget, or a write error", a["traces_refused_budget"] + a["traces_refused_io"]),
        ("tailsample_archive_overflowed_traces", "counter", "Dropped traces not archived: more were dropped "
         "between two decision rounds than the stash holds (64 MiB)", a["traces_overflowed"]),
        ("tailsample_archive_removed_segments_size", "counter", "Archive segments removed, oldest first, at "
         "max_size_mib", a["segments_removed_size"]),
        ("tailsample_archive_removed_segments_age", "counter", "Archive segments removed at max_age",
         a["segments_removed_age"]),
        ("tailsample_archive_lookups", "counter", "Trace ID lookups in the archive", a["lookups"]),
        ("tailsample_archive_lookups_found", "counter", "Trace ID lookups that found the trace", a["lookups_found"]),
        ("tailsample_archive_index_memory_bytes", "gauge", "Memory of the archive's trace ID index: the closed "
         "segments' Bloom filters and fences, and the open segment's table", a["index_memory_bytes"]),
        ("tailsample_archive_recovered_traces", "counter", "Archived traces sent to the exporters on request",
         recovered_traces),
        ("tailsample_archive_recovered_spans", "counter", "Spans of the archived traces sent to the exporters",
         recovered_spans),
    ]
    return [Sample(name, kind, help_text, (proc,), value) for name, kind, help_text, value in rows]


# Engine stats whose names would break the Prometheus conventions as metric names: a unit not at the end, a
# size without its unit, a count that reads as bytes.
_RENAMED = {"span_bytes_in_memory": "span_memory_bytes", "limit_storage_max_size": "limit_storage_max_size_bytes",
            "refused_max_buffered_bytes": "refused_buffer_full", "storage_bytes_written": "storage_written_bytes"}
# Durations the engine counts in a sub-unit: Prometheus wants seconds.
_SUB_UNITS = (("_ns", 1e-9), ("_us", 1e-6), ("_ms", 1e-3))


# While no trace is due, the decision loop sleeps past its tick until one is, but at most this long: a late span of
# a trace already decided, taken while nothing else is buffered, is sent within it (and a Kafka message holding
# only such spans committed); an idle service wakes once per interval.
IDLE_WAIT_S = 1.0
# A poll that took less than this last round runs on the event loop (with the GIL released): the thread-pool hop
# costs more than such a poll, and the event loop only serves metrics, status and debug pages.
INLINE_POLL_S = 0.002


def decision_tick(decision_wait: float) -> float:
    """Seconds between decision rounds: a trace waits at most this past due for its round, so 50 ms keeps the
    99th percentile of the decision lag (that wait plus the round's own time) under 100 ms; a tenth of a short
    decision_wait, never under 10 ms."""
    return min(0.05, max(0.01, decision_wait / 10))


def engine_metric_name(key: str, kind: str) -> tuple[str, float]:
    """An engine stat's metric name (before the registry's `_total` for counters) and the factor its value is
    scaled by: `decision_lag_ns_total` is `tailsample_engine_decision_lag_seconds` (rendered `..._seconds_total`,
    never `_total_total`)."""
    name, scale = _RENAMED.get(key, key), 1.0
    if name.endswith("_total"):  # the registry adds it to counters; a gauge never ends with it
        name = name[:-len("_total")]
    for unit, factor in _SUB_UNITS:
        if name.endswith(unit):
            name, scale = name[:-len(unit)] + "_seconds", factor
    return f"tailsample_engine_{name}", scale


def _log_replay(sampler_id: str, engine: Engine) -> None:
    r = engine.replay_report()
    if r is None:
        return
    for t in r["truncations"]:
        log.warning("%s: tail storage: %s at byte %d of %s: cut off %d bytes (a write the last run did not finish)",
                    sampler_id, t["reason"], t["offset"], t["file"], t["bytes"])
    if r["payloads"]:
        log.info("%s: tail storage replayed %d payloads (%d bytes) in %.3f s: %d traces pending again, %d kept "
                 "traces sent again (%d spans, possible duplicates), %d spans already exported",
                 sampler_id, r["payloads"], r["bytes"], r["duration"], r["traces_pending"], r["traces_resent"],
                 r["spans_resent"], r["spans_covered"])


def _enum_name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else str(value)


def red_samples(engine: Engine, *labels: tuple[str, str]) -> list[Sample]:
    """The engine's RED metrics (before sampling) under the `spanmetrics` connector's names and labels, so its
    dashboards work unchanged; durations in milliseconds, as its default. The overflow series is labelled
    `otel_metric_overflow="true"`. Errors per (service, span name, kind) are summed from the ERROR series."""
    red = engine.red_metrics()
    if red is None:
        return []
    out: list[Sample] = []
    calls_help = "Spans received, before sampling, per service, span name, kind and status"
    dur_help = "Duration (ms) of the spans received, before sampling"
    err_help = "Spans with status ERROR received, before sampling, per service, span name and kind"
    bounds_ms = [b * 1e3 for b in red.bounds]
    errors: dict[tuple[tuple[str, str], ...], int] = {}
    for s in red.series:
        if s.overflow:
            base: tuple[tuple[str, str], ...] = (*labels, ("otel_metric_overflow", "true"))
            full = base
        else:
            base = (*labels, ("service_name", s.service), ("span_name", s.span_name),
                    ("span_kind", _enum_name(_SPAN_KINDS, s.kind)))
            full = (*base, ("status_code", _enum_name(_STATUS_CODES, s.status_code)))
        out.append(Sample("traces_span_metrics_calls", "counter", calls_help, full, s.calls))
        if s.errors:
            errors[base] = errors.get(base, 0) + s.errors
        cumulative = 0
        for bound, count in zip([*bounds_ms, float("inf")], s.bucket_counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(Sample("traces_span_metrics_duration_milliseconds", "histogram", dur_help,
                              (*full, ("le", le)), cumulative, "_bucket"))
        out.append(Sample("traces_span_metrics_duration_milliseconds", "histogram", dur_help, full,
                          s.duration_sum * 1e3, "_sum"))
        out.append(Sample("traces_span_metrics_duration_milliseconds", "histogram", dur_help, full, s.calls,
                          "_count"))
    for base, n in errors.items():
        out.append(Sample("traces_span_metrics_errors", "counter", err_help, base, n))
    return out


def gap_samples(engine: Engine, *labels: tuple[str, str]) -> list[Sample]:
    """The propagation audit per (source service, destination): calls, gaps and traces with a gap; per service:
    orphan spans and broken traces; calls naming no destination. Bounded by `max_pairs` (pairs past it are labelled
    `otel_metric_overflow="true"`) and by the services seen."""
    report = engine.gaps()
    if report is None:
        return []
    out: list[Sample] = [
        Sample("tailsample_propagation_unnamed_calls", "counter",
               "Calls naming no destination attribute (those answered are named by their callee)", labels,
               report["unnamed_calls"]),
        Sample("tailsample_propagation_unnamed_gaps", "counter",
               "Calls naming no destination that nobody answered (pairs with destination=\"(unnamed)\")", labels,
               report["unnamed_gaps"]),
    ]
    for p in report["pairs"]:
        if p["overflow"]:
            pair: tuple[tuple[str, str], ...] = (*labels, ("otel_metric_overflow", "true"))
        else:
            pair = (*labels, ("source", p["source"]), ("destination", p["destination"]))
        out.append(Sample("tailsample_propagation_calls", "counter",
                          "CLIENT/PRODUCER spans per source service and destination, in decided traces", pair,
                          p["calls"]))
        out.append(Sample("tailsample_propagation_gaps", "counter",
                          "Calls with no SERVER/CONSUMER child in their trace: trace context lost", pair, p["gaps"]))
        out.append(Sample("tailsample_propagation_gap_traces", "counter",
                          "Decided traces with at least one gap for this pair", pair, p["gap_traces"]))
    for b in report["broken"]:
        svc = (*labels, ("service", b["service"]))
        out.append(Sample("tailsample_propagation_orphan_spans", "counter",
                          "Spans whose parent never arrived in their trace, per service", svc, b["orphan_spans"]))
        out.append(Sample("tailsample_propagation_broken_traces", "counter",
                          "Decided traces with orphan spans of this service", svc, b["traces"]))
    return out


def shadow_samples(engine: Engine, *labels: tuple[str, str]) -> list[Sample]:
    """The shadow policies (`tailsample.shadow`): per shadow policy its votes and decided traces; per side (kept by
    live only, shadow only, both) traces, spans and bytes; must-keep traces one side would lose; the bounded ring
    of disagreements. Nothing without a shadow set."""
    r = engine.shadow_report(disagreements=0)  # counts only: a scrape needs no trace IDs
    if r is None:
        return []
    out: list[Sample] = []
    for policy, c in r["policies"].items():
        pol = (*labels, ("policy", policy))
        for decision in ("sampled", "not_sampled", "dropped"):
            out.append(Sample("tailsample_shadow_policy_traces", "counter", "Traces a shadow policy voted on, by "
                              "vote (never changes what is kept)", (*pol, ("decision", decision)), c[decision]))
        out.append(Sample("tailsample_shadow_policy_errors", "counter", "Evaluation errors of a shadow policy",
                          pol, c["errors"]))
        out.append(Sample("tailsample_shadow_policy_decided_traces", "counter", "Traces the shadow set would keep "
                          "that this shadow policy was the first, in order, to sample", pol, c["decided"]))
    for side in ("live_only", "shadow_only", "both"):
        lab = (*labels, ("kept_by", side))
        for what in ("traces", "spans", "bytes"):
            out.append(Sample(f"tailsample_shadow_kept_{what}", "counter", f"Decided {what} kept by the live "
                              "policies only, the shadow policies only, or both", lab, r[side][what]))
    for cls in ("errors", "slow"):
        for loser in ("shadow", "live"):
            out.append(Sample("tailsample_shadow_must_keep_lost_traces", "counter", "Error or slow traces one "
                              "policy set keeps and the other would lose", (*labels, ("class", cls),
                                                                            ("lost_by", loser)),
                              r[f"{cls}_lost_by_{loser}"]))
    out.append(Sample("tailsample_shadow_traces_judged", "counter", "Traces both policy sets judged", labels,
                      r["traces_judged"]))
    out.append(Sample("tailsample_shadow_disagreements_held", "gauge", "Disagreements held for tailsample diff "
                      "(bounded by tailsample.shadow.max_disagreements)", labels, r["disagreements_held"]))
    out.append(Sample("tailsample_shadow_disagreements_forgotten", "counter", "Disagreements pushed out of the "
                      "bounded ring (still counted in the totals)", labels, r["disagreements_forgotten"]))
    out.append(Sample("tailsample_shadow_disagreements_memory_bytes", "gauge", "Bytes held by the ring of "
                      "disagreements", labels, r["disagreements_bytes"]))
    return out


class FanoutSink:
    """The sink of a receiver listed in several pipelines: each pipeline gets the payload.

    Every memory limiter is checked first, so a refusal takes nothing; an engine refusing after another took the
    payload makes the client's retry a duplicate in the first pipeline (a case of several pipelines only).
    """

    def __init__(self, pipelines: Sequence[ServicePipeline]) -> None:
        self.pipelines = list(pipelines)
        # An engine that fsyncs before answering is called from a worker thread (see receivers.sink.consume).
        self.blocking = any(p.engine.storage is not None and p.engine.storage.sync != "none" for p in pipelines)

    # ---- for the Rust OTLP/HTTP server (`receivers.otlp_http_receiver.NativeSink`) ------------------------------

    def native_targets(self) -> list[tuple[Any, bool, list[Any]]]:
        return [(p.engine.native, p.engine.wall_clock, [lim.flag for lim in p.limiters]) for p in self.pipelines]

    def records_every_payload(self) -> bool:
        return any(p.recording is not None for p in self.pipelines)

    def after_native(self, payload: bytes, got: Ingested, observe: bool) -> None:
        """`take`'s Python part, for a payload the server's engines took (called from the server's threads)."""
        for p in self.pipelines:
            if p.recording is not None:
                p.recording.add(payload)
            if observe:
                p.observe(payload)
            if got.rejected_spans:
                p.report_rejected(got)

    def consume(self, payload: bytes) -> Ingested:
        if len(self.pipelines) == 1:
            return self.pipelines[0].consume(payload)
        for p in self.pipelines:
            p.admit()
        got = Ingested(0)
        for p in self.pipelines:  # every engine rejects the same spans: the rule depends on the bytes only
            got = p.take(payload)
        return got


__all__ = ["Batcher", "FanoutSink", "LossReporter", "Round", "RoundLedger", "ServicePipeline", "engine_metric_name",
           "fan_out"]
