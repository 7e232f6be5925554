"""Kafka, the way the collector's Kafka receiver and exporter use it: `ExportTraceServiceRequest` protobuf per
message (`encoding: otlp_proto`), and with `partition_traces_by_id`, one trace per message keyed by its 32-hex
trace ID, so Kafka's key hashing puts every span of a trace in one partition, read by one consumer.

The client is confluent-kafka (librdkafka), an optional dependency: `pip install 'tailsample[kafka]'`. This module
maps the collector's settings onto librdkafka's and cuts payloads into messages; `exporters.kafka_exporter` sends
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from tailsample.collector.settings import KafkaClient
from tailsample.engine import split_by_trace


def confluent_kafka() -> ModuleType:
    """The confluent_kafka module, or an ImportError saying how to install it."""
    try:
        import confluent_kafka as ck  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise ImportError("the Kafka receiver and exporter need confluent-kafka: pip install 'tailsample[kafka]'") \
            from exc
    return ck


def client_config(client: KafkaClient) -> dict[str, Any]:
    """librdkafka settings for the collector's `brokers`, `client_id` and `auth` (SASL PLAIN/SCRAM, TLS)."""
    conf: dict[str, Any] = {"bootstrap.servers": ",".join(client.brokers), "client.id": client.client_id}
    tls = client.tls
    if client.sasl_mechanism is not None:
        conf["security.protocol"] = "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"
        conf["sasl.mechanism"] = client.sasl_mechanism
        conf["sasl.username"] = client.sasl_username
        conf["sasl.password"] = client.sasl_password
    elif tls is not None:
        conf["security.protocol"] = "SSL"
    if tls is not None:
        for key, value in (("ssl.ca.location", tls.ca_file), ("ssl.certificate.location", tls.cert_file),
                           ("ssl.key.location", tls.key_file)):
            if value:
                conf[key] = value
        if tls.insecure:
            conf["enable.ssl.certificate.verification"] = False
    return conf


def trace_messages(payload: bytes, *, by_trace: bool) -> list[tuple[bytes | None, bytes]]:
    """(key, value) messages for one payload: the payload as it is, unkeyed; or with `by_trace`, one message per
    trace keyed by its trace ID in 32 lowercase hex digits (the collector's `partition_traces_by_id`)."""
    if not by_trace:
        return [(None, payload)]
    return [(tid.hex().encode(), part) for tid, part in split_by_trace(payload)]


def produce_all(producer: Any, topic: str, payloads: Iterable[bytes], *, by_trace: bool,
                timeout: float = 30.0) -> int:
    """Synchronously writes payloads to a topic (for `tailsample replay --to-kafka`); returns the messages
    delivered. Raises RuntimeError naming the first delivery error."""
    errors: list[str] = []
    sent = 0

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in _messages(payloads, by_trace):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # librdkafka's local queue is full: let deliveries drain it
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        raise RuntimeError(f"{left} of {sent} messages to {topic!r} not delivered within {timeout:g}s")
    if errors:
        raise RuntimeError(f"{len(errors)} of {sent} messages to {topic!r} failed: {errors[0]}")
    return sent


def _messages(payloads: Iterable[bytes], by_trace: bool) -> Iterator[tuple[bytes | None, bytes]]:
    for payload in payloads:
        yield from trace_messages(payload, by_trace=by_trace)


__all__ = ["client_config", "confluent_kafka", "produce_all", "trace_messages"]
