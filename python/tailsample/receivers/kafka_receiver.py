"""The `kafka` receiver: a member of a consumer group, reading what the collector's Kafka exporter writes
(`otlp_proto`; with `partition_traces_by_id`, one trace per message keyed by its ID, so every span of a trace is
in one partition and reaches one instance).

**Commit after decision.** A message's offset is committed only once (1) none of its traces is buffered any more
in any pipeline it feeds, and (2) the decision round that took them out, and every round before, has had each of
its kept batches sent by every exporter (`RoundLedger.sent_through`). A partition's committed offset therefore
never passes a message whose trace is pending or whose kept spans are not yet out. An instance killed at any
moment loses nothing: its partitions move to the others, which read again from the committed offsets.

**Rebalances** (cooperative-sticky by default). Revoked partitions: wait (3 s at most) for the exports of traces
already decided, commit what is done, then *forget* the traces of the messages not done (`Engine.forget`): the
new owner rebuilds them from the log, so they are not decided on partial data here. Offsets are linear, so a
trace decided here whose messages lie behind a pending one is read again by the new owner and may be exported
twice. Graceful shutdown does the same for every partition.

**Delivery: at least once.** A crash (or a revocation) re-delivers the messages consumed but not committed: at
most about `decision_wait` + one round + the export time of traffic per partition, and never more than
`max_uncommitted_messages` (past it the partitions are paused). Their traces may be exported twice; no trace is
split by a rebalance when messages are keyed by trace ID. Late spans of a trace already decided, arriving in a
partition that moved, are judged by the new owner on their own. A batch given up by an exporter stops commits
for good (until a restart re-reads the messages): nothing is committed behind a trace that was not delivered.

confluent-kafka's consumer runs in a thread; the engines are thread-safe (they release the GIL). Rebalance
callbacks run inside `consume`, in the same thread, so the offsets bookkeeping needs no lock; the metrics read
a snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tailsample.collector.kafka import client_config, confluent_kafka
from tailsample.collector.metrics import Registry, Sample
from tailsample.collector.settings import KafkaReceiverSettings
from tailsample.errors import BackpressureError
from tailsample.receivers.sink import TrackedSink

log = logging.getLogger("tailsample.receiver.kafka")

_POLL_SECONDS = 0.1
# Messages taken per consume call: the per-call costs (confluent-kafka's call, the engine's, the bookkeeping per
# run) are shared by this many; a backlog is read in batches this size.
_BATCH = 2000
_MEASURE_SECONDS = 0.1  # the partition gauges' snapshot is refreshed at most this often (and after each commit)
_CHECK_AHEAD = 16  # runs checked together behind a partition's first, once it is out
_REVOKE_WAIT_SECONDS = 3.0  # at most, for decided traces' exports to finish before partitions are given up


@dataclass
class _Block:
    """A run of messages of one partition taken in one batch and not yet committed. They are committed together,
    once the traces of all of them are out: bookkeeping per run, not per message. The messages themselves are
    read by the engine's binding (`Engine.ingest_messages`): the consumer thread runs no Python per message."""

    end: int  # the offset after the run's last message: what a commit sends
    count: int  # messages in the run
    trace_ids: bytes  # 16 bytes each, concatenated, as the engine hands them back
    rounds: list[int]  # per pipeline: the round started when the run was taken
    decided: list[int | None] = field(default_factory=list)  # per pipeline: the round its traces left in
    out: list[int] = field(default_factory=list)  # per pipeline: how many of `trace_ids`, from the first, are out
    checked: tuple[int, ...] = ()  # the pipelines' rounds (started, sent through) when it was last checked


@dataclass
class _Partition:
    messages: deque[_Block] = field(default_factory=deque)
    held: int = 0  # messages in `messages`
    committed: int | None = None  # the offset committed (next to read), once known
    consumed: int | None = None  # next offset after the last message consumed


class KafkaReceiver:
    kind = "kafka"

    def __init__(self, receiver_id: str, settings: KafkaReceiverSettings, pipelines: Sequence[TrackedSink],
                 registry: Registry) -> None:
        self.id = receiver_id
        self.settings = settings
        self.pipelines = list(pipelines)
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._paused = False
        self._held = 0  # messages consumed and not committed, over every partition
        self._snapshot: list[tuple[str, int, int, int, int]] = []  # topic, partition, lag, held back, committed
        self._measured = 0.0  # monotonic time of the last snapshot
        # The pipelines' rounds (started, sent through) at the last pass over the partitions: no run can become
        # committable until one of them moves, so passes in between are skipped.
        self._pass_key: tuple[int, ...] | None = None
        labels = ("receiver",)
        self._messages = registry.counter("tailsample_kafka_messages", "Kafka messages consumed", labels)
        self._spans = registry.counter("otelcol_receiver_accepted_spans",
                                       "Number of spans successfully pushed into the pipeline.",
                                       ("receiver", "transport"))
        self._rejected = registry.counter("tailsample_kafka_rejected_messages",
                                          "Kafka messages that are not valid OTLP (skipped and committed)", labels)
        self._forgotten = registry.counter("tailsample_kafka_forgotten_traces",
                                           "Buffered traces given up with their partition (rebalance, shutdown)",
                                           labels)
        self._commits = registry.counter("tailsample_kafka_commits", "Offset commits sent", labels)
        for counter in (self._messages, self._rejected, self._forgotten, self._commits):
            counter.add(0, receiver_id)
        self._spans.add(0, receiver_id, "kafka")
        registry.add_collector(self._collect)

    # ---- life ----------------------------------------------------------------------------------------------

    async def start(self) -> str:
        ck = confluent_kafka()
        s = self.settings
        conf = {**client_config(s.client), "group.id": s.group_id, "enable.auto.commit": False,
                "enable.auto.offset.store": False, "auto.offset.reset": s.initial_offset,
                "session.timeout.ms": int(s.session_timeout * 1000),
                "heartbeat.interval.ms": int(s.heartbeat_interval * 1000),
                "partition.assignment.strategy": s.rebalance_strategy}
        self._consumer = ck.Consumer(conf, logger=log)
        self._consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self._thread = threading.Thread(target=self._run, name=f"{self.id}-consumer", daemon=True)
        self._thread.start()
        return f"{s.topic}@{','.join(s.client.brokers)} (group {s.group_id})"

    async def stop(self) -> None:
        """Stop consuming: commit what is done, forget the traces of what is not (the group's next owner reads
        them again), leave the group."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _run(self) -> None:
        try:
            limit = self.settings.max_uncommitted_messages
            while not self._stop.is_set():
                self._pause_or_resume()
                # Never past max_uncommitted_messages by more than the batch already consumed.
                batch = self._consumer.consume(num_messages=max(1, min(_BATCH, limit - self._held)),
                                               timeout=_POLL_SECONDS)
                self._take(batch)
                committed = self._commit_done()
                if committed or time.monotonic() - self._measured >= _MEASURE_SECONDS:
                    self._measure()
            self._commit_done(wait=True)
            self._forget([tp for tp in self._partitions])
            self._consumer.close()
        except Exception:  # never let the consumer thread die silently
            log.exception("%s: the Kafka consumer stopped", self.id)

    # ---- taking messages -------------------------------------------------------------------------------------

    def _take(self, batch: list[Any]) -> None:
        """Takes a batch of messages into every pipeline, one engine call per pipeline (more only under
        backpressure); the bookkeeping is per run of a partition's messages."""
        if not batch:
            return
        rounds = [p.round_started for p in self.pipelines]  # before any of them is taken
        got = [self._ingest(p, batch) for p in self.pipelines]
        # Every pipeline took every message: the first one's results stand for all (the same values, the same
        # traces); a message malformed for one is malformed for all.
        runs, rejected, events, spans = got[0]
        ck = confluent_kafka()
        for err in events:
            if err.code() != ck.KafkaError._PARTITION_EOF:
                log.warning("%s: %s", self.id, err)
        for topic, partition, offset, exc in rejected:
            log.warning("%s: %s[%d] offset %d is not OTLP protobuf, skipped: %s", self.id, topic, partition, offset,
                        exc)
        if rejected:
            self._rejected.add(len(rejected), self.id)
        taken = 0
        for topic, partition, end, count, ids in runs:
            part = self._partitions.setdefault((topic, partition), _Partition())
            part.messages.append(_Block(end, count, ids, rounds, [None] * len(self.pipelines),
                                        [0] * len(self.pipelines)))
            part.held += count
            part.consumed = end
            taken += count
        self._held += taken
        self._messages.add(taken, self.id)  # counted per batch: the counters take a lock
        self._spans.add(spans, self.id, "kafka")

    def _ingest(self, pipeline: TrackedSink, batch: list[Any]
                ) -> tuple[list[tuple[str, int, int, int, bytes]], list[tuple[str, int, int, Exception]], list[Any],
                           int]:
        """Into one pipeline, waiting out backpressure (a full engine or memory limiter): Kafka keeps the rest.
        Returns the runs, the malformed messages, the events (errors in place of messages) and the spans taken."""
        runs: list[tuple[str, int, int, int, bytes]] = []
        rejected: list[tuple[str, int, int, Exception]] = []
        events: list[Any] = []
        spans = 0
        todo = batch
        while todo:
            try:
                got = pipeline.consume_messages(todo)
            except BackpressureError:  # refused before anything was taken
                if self._stop.wait(0.05):
                    raise
                continue
            runs += got.runs
            rejected += got.rejected
            events += got.events
            spans += got.spans
            todo = todo[got.taken:]
            if got.stopped is not None:
                if not isinstance(got.stopped, BackpressureError):  # tail storage could not write it: retry
                    log.warning("%s: %s; retrying", self.id, got.stopped)
                if self._stop.wait(0.05 if isinstance(got.stopped, BackpressureError) else 1.0):
                    raise got.stopped
        return runs, rejected, events, spans

    def _pause_or_resume(self) -> None:
        held = self._held
        limit = self.settings.max_uncommitted_messages
        # `assignment()` waits on librdkafka's main thread (milliseconds): asked only when pausing or resuming.
        if not self._paused and held >= limit:
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.pause(assignment)
                self._paused = True
                log.warning("%s: %d messages wait for decisions (max_uncommitted_messages %d): consumption "
                            "paused", self.id, held, limit)
        elif self._paused and held < limit // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False

    # ---- committing ----------------------------------------------------------------------------------------

    def _decided(self, messages: Sequence[_Block]) -> None:
        """Marks which of these runs' traces have all left every engine, with one engine call per pipeline.

        Traces leave an engine in a decision round (or forgotten, with their partition): a run checked since the
        last round began and since the last was sent is not checked again. A round that took traces out after
        the check ends its poll before it is sent, so the check that follows `round_sent_through` sees them out."""
        key = tuple(n for p in self.pipelines for n in (p.round_started, p.round_sent_through))
        messages = [m for m in messages if m.checked != key]
        for m in messages:
            m.checked = key
        for i, p in enumerate(self.pipelines):
            todo = [m for m in messages if m.decided[i] is None]
            if not todo:
                continue
            # From each run's first ID not known to be out: an ID out stays out (a late span of its trace is in a
            # later run), so each is looked up until found out, and a waiting run costs one lookup per round.
            firsts = p.first_buffered(b"".join(m.trace_ids[16 * m.out[i]:] for m in todo),
                                      [len(m.trace_ids) // 16 - m.out[i] for m in todo])
            started = p.round_started  # read after the check: any round that took them out has started
            for m, first in zip(todo, firsts, strict=True):
                m.out[i] += first
                if 16 * m.out[i] < len(m.trace_ids):
                    continue
                # A late span of a decided trace leaves with the next round's output, not this one's.
                m.decided[i] = max(started, m.rounds[i] + 1)

    def _done(self, m: _Block) -> bool:
        if len(self.pipelines) == 1:  # the common case, on the hot path
            d = m.decided[0]
            return d is not None and self.pipelines[0].round_sent_through >= d
        return all(d is not None and p.round_sent_through >= d for p, d in zip(self.pipelines, m.decided,
                                                                                 strict=True))

    def _commit_done(self, *, wait: bool = False, only: Sequence[tuple[str, int]] | None = None) -> bool:
        """Commits, per partition, the runs whose traces are out, in one asynchronous commit (synchronous with
        `wait`). Returns whether it sent one."""
        if not wait and only is None:
            # A run becomes committable only when a round starts or is sent through: between those, nothing to do.
            key = tuple(n for p in self.pipelines for n in (p.round_started, p.round_sent_through))
            if key == self._pass_key:
                return False
            self._pass_key = key
        ck = confluent_kafka()
        offsets = []
        for tp in only if only is not None else list(self._partitions):
            part = self._partitions[tp]
            advanced = None
            while part.messages:
                m = part.messages[0]
                if None in m.decided:
                    self._decided([m])  # the front alone while its traces wait: cheap, every pass
                    if None in m.decided:
                        break
                    # The front is out: the runs behind it usually are too; check some in one call (not all: a
                    # backlog's runs leave over many rounds, and those past the first waiting one would be looked
                    # up again every round).
                    self._decided(list(islice(part.messages, 1, 1 + _CHECK_AHEAD)))
                if not self._done(m):
                    break
                part.messages.popleft()
                part.held -= m.count
                self._held -= m.count
                advanced = m.end
            if advanced is not None and advanced != part.committed:
                part.committed = advanced
                offsets.append(ck.TopicPartition(tp[0], tp[1], advanced))
        if not offsets:
            return False
        self._consumer.commit(offsets=offsets, asynchronous=not wait)
        self._commits.add(1, self.id)
        return True

    def _forget(self, tps: Sequence[tuple[str, int]]) -> None:
        """Forget the traces of the messages not done in these partitions, unless another partition still held
        by this instance has messages of them (unkeyed traffic spreads a trace over partitions)."""
        kept = {tid for tp, part in self._partitions.items() if tp not in tps for m in part.messages
                for tid in _ids(m)}
        ids = sorted({tid for tp in tps if tp in self._partitions for m in self._partitions[tp].messages
                      for tid in _ids(m)} - kept)
        if ids:
            forgotten = max(p.forget(ids) for p in self.pipelines)
            self._forgotten.add(forgotten, self.id)
            log.info("%s: gave up %d partitions; forgot %d buffered traces for their next owner", self.id, len(tps),
                     forgotten)
        for tp in tps:
            part = self._partitions.pop(tp, None)
            if part is not None:
                self._held -= part.held

    # ---- rebalances (called inside consume, on the consumer thread) -----------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._partitions.setdefault((tp.topic, tp.partition), _Partition())
        log.info("%s: assigned %s", self.id, _names(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions if (tp.topic, tp.partition) in self._partitions]
        # Kept spans already on their way out: wait for them (a little), so the new owner need not send them again.
        deadline = time.monotonic() + _REVOKE_WAIT_SECONDS
        while tps:
            self._commit_done(wait=True, only=tps)
            fronts = [self._partitions[tp].messages[0] for tp in tps if self._partitions[tp].messages]
            if not any(None not in m.decided for m in fronts) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self._forget(tps)
        log.info("%s: revoked %s", self.id, _names(partitions))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._forget([(tp.topic, tp.partition) for tp in partitions])
        log.warning("%s: lost %s (session timed out); their traces were forgotten", self.id, _names(partitions))

    # ---- metrics -------------------------------------------------------------------------------------------

    def _measure(self) -> None:
        self._measured = time.monotonic()
        ck = confluent_kafka()
        snapshot = []
        for (topic, partition), part in self._partitions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(ck.TopicPartition(topic, partition), cached=True)
            except Exception:  # not known yet
                high = -1
            lag = max(0, high - part.consumed) if high >= 0 and part.consumed is not None else 0
            snapshot.append((topic, partition, lag, part.held,
                             part.committed if part.committed is not None else -1))
        self._snapshot = snapshot

    def _collect(self) -> list[Sample]:
        out = []
        for topic, partition, lag, held, committed in self._snapshot:
            labels = (("receiver", self.id), ("topic", topic), ("partition", str(partition)))
            out.append(Sample("tailsample_kafka_partition_lag", "gauge",
                              "Messages in the partition not yet consumed (high watermark - position)", labels, lag))
            out.append(Sample("tailsample_kafka_partition_held_back_messages", "gauge",
                              "Messages consumed, not yet committable: their traces are pending or their kept "
                              "spans not yet sent", labels, held))
            out.append(Sample("tailsample_kafka_partition_committed_offset", "gauge",
                              "Last offset committed by this instance (-1: none yet)", labels, committed))
        out.append(Sample("tailsample_kafka_paused", "gauge",
                          "1 while consumption is paused at max_uncommitted_messages", (("receiver", self.id),),
                          1.0 if self._paused else 0.0))
        return out


def _ids(block: _Block) -> list[bytes]:
    return [block.trace_ids[i:i + 16] for i in range(0, len(block.trace_ids), 16)]


def _names(partitions: list[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"

