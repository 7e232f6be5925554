"""What a receiver hands its payloads to, and the counters every receiver keeps."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tailsample import _native
from tailsample.collector.metrics import Registry
from tailsample.engine import Ingested, TakenMessages
from tailsample.errors import DecodeError
from tailsample.receivers.connections import ListenerMetrics


class Sink(Protocol):
    """The pipelines behind a receiver.

    `consume` takes one ExportTraceServiceRequest (protobuf bytes) whole or not at all and says what it took:
    every span but those rejected alone for nesting too deep (the receiver answers those as an OTLP partial
    success). It raises `DecodeError` for a malformed payload (the client must not retry) and `BackpressureError`
    when a limit is reached, or `StorageError` when tail storage could not write it (the client should retry
    later; nothing of the payload was taken). A sink whose `consume` waits on the disk (an fsync) says so with a
    true `blocking` attribute: receivers then call it from a thread, so the event loop goes on and concurrent
    requests share one fsync.
    """

    def consume(self, payload: bytes) -> Ingested: ...


class TrackedSink(Protocol):
    """One pipeline behind a receiver that acknowledges its source only once what it took is decided and its kept
    spans are sent (the Kafka receiver commits offsets so). Rounds are the pipeline's decision rounds, numbered
    from 1: `round_started` is the last one begun; `round_sent_through` the last of the unbroken run, from the
    first, whose kept spans every exporter has sent."""

    def consume_messages(self, messages: list[Any]) -> TakenMessages:
        """A Kafka consumer's batch (confluent-kafka `Message` objects), each value taken whole or not at all, in
        order, up to the first refused (`Engine.ingest_messages`). Raises `BackpressureError` when a limit refuses
        the batch before anything is taken."""
        ...

    @property
    def round_started(self) -> int: ...

    @property
    def round_sent_through(self) -> int: ...

    def first_buffered(self, trace_ids: bytes, sizes: list[int]) -> list[int]:
        """For runs of 16-byte trace IDs, concatenated (`sizes[i]` IDs in run i): per run, the position of its
        first ID still buffered, undecided (`sizes[i]` when none is)."""
        ...

    def forget(self, trace_ids: list[bytes]) -> int:
        """Drop these buffered traces undecided (another instance rebuilds them); how many were buffered."""
        ...


async def consume(sink: Sink, payload: bytes) -> Ingested:
    """`sink.consume(payload)`, from a worker thread when the sink blocks on the disk."""
    if getattr(sink, "blocking", False):
        return await asyncio.to_thread(sink.consume, payload)
    return sink.consume(payload)


def span_count(payload: bytes) -> int:
    """Spans in a payload the pipelines refused (it was valid: they only refuse what they could read)."""
    try:
        return int(_native.inspect_payload(payload)["spans"])
    except (DecodeError, ValueError):
        return 0


class ReceiverMetrics:
    """The collector's receiver counters, plus why requests were turned away before reaching the pipelines."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        labels = ("receiver", "transport")
        self.accepted = registry.counter(
            "otelcol_receiver_accepted_spans", "Number of spans successfully pushed into the pipeline.", labels)
        self.refused = registry.counter(
            "otelcol_receiver_refused_spans", "Number of spans that could not be pushed into the pipeline.", labels)
        self.rejected = registry.counter(
            "tailsample_receiver_rejected_requests",
            "Requests answered with an error before their spans could be counted, by reason (malformed, "
            "too_large, unauthenticated, unsupported_media_type, unsupported_encoding, not_found, timeout).",
            (*labels, "reason"))
        self.aborted = registry.counter(
            "tailsample_receiver_aborted_requests",
            "Requests whose client went away (or broke the framing) before the body was read whole: nothing "
            "of them was taken.", labels)
        self.listeners = ListenerMetrics(registry)

    def register(self, receiver_id: str, transport: str) -> None:
        """Every series exists from the start: dashboards see 0, not nothing."""
        self.accepted.add(0, receiver_id, transport)
        self.refused.add(0, receiver_id, transport)
        self.aborted.add(0, receiver_id, transport)


__all__ = ["ReceiverMetrics", "Sink", "TrackedSink", "span_count"]
