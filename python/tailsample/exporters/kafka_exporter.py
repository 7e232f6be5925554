"""The `kafka` exporter: kept traces to a Kafka topic, as the collector's Kafka exporter writes them.

Each batch becomes one message (`ExportTraceServiceRequest` protobuf), or with `partition_traces_by_id`, one
message per trace keyed by its 32-hex trace ID: every span of a trace lands in one partition, so tailsample (or
another tail sampler) can be the second tier, reading the topic in a consumer group. Delivery is awaited (acks per
`producer.required_acks`); a failed delivery is retried per `retry_on_failure` when Kafka says it is retriable,
and the whole batch is sent again: a retry after a partial failure duplicates the messages already delivered (at
least once).

confluent-kafka's delivery callbacks run inside `poll`, so a thread polls the producer and hands each delivery
report to the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tailsample.collector import settings as cfg
from tailsample.collector.kafka import client_config, confluent_kafka, trace_messages
from tailsample.exporters.base import Batch, Exporter, ExporterMetrics, ExportError


class KafkaExporter(Exporter):
    kind = "kafka"

    def __init__(self, settings: cfg.KafkaExporterSettings, metrics: ExporterMetrics) -> None:
        super().__init__(settings.id, settings.sending_queue, settings.retry_on_failure, metrics)
        self.settings = settings
        self._producer: Any = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    async def _open(self) -> None:
        ck = confluent_kafka()
        s = self.settings
        conf = {**client_config(s.client), "acks": s.required_acks, "compression.type": s.compression,
                "message.max.bytes": max(s.max_message_bytes, 1000), "linger.ms": 5,
                "message.timeout.ms": max(1, int(s.timeout * 1000))}
        self._producer = ck.Producer(conf)
        self._poller = threading.Thread(target=self._poll, name=f"{self.id}-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def _close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._poller.join)
        if self._producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, self.settings.timeout)

    async def _send(self, batch: Batch) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            messages = trace_messages(batch.payload, by_trace=s.partition_traces_by_id)
        except Exception as exc:  # the engine's own output always decodes; should it not, do not retry it
            raise ExportError(f"cannot cut the batch into messages: {exc}", retryable=False) from exc
        too_big = [len(v) for _, v in messages if len(v) > s.max_message_bytes]
        if too_big:
            raise ExportError(f"a message of {max(too_big):,} bytes exceeds producer.max_message_bytes "
                              f"({s.max_message_bytes:,}); set partition_traces_by_id or raise the limit",
                              retryable=False)
        pending: list[asyncio.Future[None]] = []
        for key, value in messages:
            fut: asyncio.Future[None] = loop.create_future()
            pending.append(fut)

            def report(err: Any, _msg: Any, fut: asyncio.Future[None] = fut) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            while True:
                try:
                    self._producer.produce(s.topic, value=value, key=key, on_delivery=report)
                    break
                except BufferError:  # librdkafka's local queue is full: wait for deliveries to drain it
                    await asyncio.sleep(0.01)
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            retryable = bool(getattr(first, "retriable", True))
            raise ExportError(f"{len(failures)} of {len(messages)} messages to {s.topic!r} failed: {first}",
                              retryable=retryable)


class _DeliveryFailed(Exception):
    def __init__(self, err: Any) -> None:
        super().__init__(str(err))
        retriable = getattr(err, "retriable", None)
        self.retriable = bool(retriable()) if callable(retriable) else True


def _settle(fut: asyncio.Future[None], err: Any) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(_DeliveryFailed(err))
