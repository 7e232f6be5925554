"""The `kafka` receiver (issue 9) against a real broker: traces whose spans come in several messages over the
decision window, decided whole, offsets committed only after decision and export."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

import kafka_fixtures
from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample.collector.settings import ServiceConfig
from tailsample.errors import ConfigError

kafka_broker = kafka_fixtures.kafka_broker
ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (pip install -e '.[test]')")

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
SLOW = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}}


def kafka_service(bootstrap: str, topic: str, exporter_endpoint: str, **receiver: Any) -> dict[str, Any]:
    cfg = service_config(exporters={"otlphttp": {"endpoint": exporter_endpoint}}, policies=[ERRORS, SLOW],
                         decision_wait="1s",
                         receivers={"kafka": {"brokers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
                                              "initial_offset": "earliest", "session_timeout": "6s",
                                              "heartbeat_interval": "1s", **receiver}})
    cfg["service"]["pipelines"]["traces"]["receivers"] = ["kafka"]
    return cfg


def traffic(rng: random.Random, n: int) -> tuple[list[tuple[bytes, bytes]], dict[bytes, set[bytes]], set[bytes]]:
    """`n` traces of 3 services, one message per service and trace (keyed by trace ID); 1 in 5 with an error,
    1 in 5 slow. Returns the messages in send order, every trace's span IDs, and the traces to keep."""
    messages: list[tuple[bytes, bytes]] = []
    spans: dict[bytes, set[bytes]] = {}
    keep: set[bytes] = set()
    for i in range(n):
        tid = trace_id(rng)
        root, call, server = span_id(rng), span_id(rng), span_id(rng)
        error, slow = i % 5 == 0, i % 5 == 1
        parts = [
            make_request(service("frontend"), [make_span(tid, root, duration_ms=900 if slow else 30)]),
            make_request(service("cart"), [make_span(tid, call, parent=root, status=STATUS_ERROR if error else 0)]),
            make_request(service("inventory"), [make_span(tid, server, parent=call)]),
        ]
        messages += [(tid.hex().encode(), p) for p in parts]
        spans[tid] = {root, call, server}
        if error or slow:
            keep.add(tid)
    return messages, spans, keep


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], pause_every: int = 0,
            pause: float = 0.0) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value)
        if pause_every and i % pause_every == pause_every - 1:
            producer.flush(10)
            time.sleep(pause)
    assert producer.flush(30) == 0


def received(backend: Any) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for tid_hex, sid_hex, _, _ in backend.spans():
        out.setdefault(bytes.fromhex(tid_hex), []).append(bytes.fromhex(sid_hex))
    return out


def test_traces_from_several_messages_are_decided_whole_and_committed_after(kafka_broker, rng) -> None:
    """Scenario: 60 traces, 3 messages each, spread over 4 partitions and over about 1.5 s (the decision window
    is 1 s), read by one `tailsample serve`. Guarantees: every error or slow trace arrives whole at the backend,
    nothing else does; every partition's committed offset reaches its end once the kept spans are out."""
    topic = "spans-one"
    kafka_broker.create_topic(topic, partitions=4)
    messages, spans, keep = traffic(rng, 60)
    with sink() as backend:
        with serving(kafka_service(kafka_broker.bootstrap, topic, backend.http_endpoint)) as s:
            produce(kafka_broker.bootstrap, topic, messages, pause_every=60, pause=0.5)
            expected = sum(len(spans[t]) for t in keep)
            wait_for(lambda: backend.span_count() >= expected, timeout=30, what=f"{expected} kept spans")
            got = received(backend)
            assert set(got) == keep
            assert all(sorted(got[t]) == sorted(spans[t]) for t in keep), "every kept trace whole, once"

            def committed() -> float:
                m = s.metrics()
                return sum(v for k, v in m.items() if k.startswith("tailsample_kafka_partition_committed_offset"))

            wait_for(lambda: committed() == len(messages), timeout=20, what="every offset committed")
            m = s.metrics()
            assert m['tailsample_kafka_messages_total{receiver="kafka"}'] == len(messages)
            assert sum(v for k, v in m.items() if k.startswith("tailsample_kafka_partition_held_back")) == 0


def test_a_malformed_message_is_skipped_and_committed(kafka_broker, rng) -> None:
    """Guarantees: a message that is not OTLP protobuf is counted and skipped; the traces around it are
    decided as usual and the partition's commit passes it."""
    topic = "spans-bad"
    kafka_broker.create_topic(topic, partitions=1)
    messages, spans, keep = traffic(rng, 5)
    with sink() as backend:
        with serving(kafka_service(kafka_broker.bootstrap, topic, backend.http_endpoint)) as s:
            produce(kafka_broker.bootstrap, topic, [*messages[:3], (b"junk", b"\x0a\x05ab"), *messages[3:]])
            expected = sum(len(spans[t]) for t in keep)
            wait_for(lambda: backend.span_count() >= expected, timeout=30)
            wait_for(lambda: s.metric('tailsample_kafka_partition_committed_offset{receiver="kafka",'
                                      f'topic="{topic}",partition="0"}}') == len(messages) + 1, timeout=20)
            assert s.metric('tailsample_kafka_rejected_messages_total{receiver="kafka"}') == 1


@pytest.mark.parametrize(("receiver", "message"), [
    ({"encoding": "zipkin_proto"}, "receivers.kafka.encoding: 'zipkin_proto' is not supported"),
    ({"initial_offset": "oldest"}, 'receivers.kafka.initial_offset: unknown value "oldest"'),
    ({"session_timeout": "2s", "heartbeat_interval": "3s"}, "receivers.kafka.heartbeat_interval: must be shorter"),
    ({"group_rebalance_strategy": "fancy"}, "receivers.kafka.group_rebalance_strategy: unknown value"),
    ({"max_uncommitted_messages": 0}, "receivers.kafka.max_uncommitted_messages: must be at least 1"),
])
def test_kafka_receiver_config_errors(receiver: dict[str, Any], message: str) -> None:
    cfg = service_config(exporters={"debug": {}}, receivers={"kafka": receiver})
    cfg["service"]["pipelines"]["traces"]["receivers"] = ["kafka"]
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_dict(cfg)


def test_kafka_receiver_defaults_follow_the_collector() -> None:
    cfg = service_config(exporters={"debug": {}}, receivers={"kafka": {"traces": {"topic": "t"},
                                                                       "autocommit": {"enable": True}}})
    cfg["service"]["pipelines"]["traces"]["receivers"] = ["kafka"]
    r = ServiceConfig.from_dict(cfg).receivers["kafka"]
    assert (r.topic, r.group_id, r.initial_offset, r.session_timeout, r.heartbeat_interval) == (  # type: ignore[union-attr]
        "t", "otel-collector", "latest", 10.0, 3.0)
    assert r.client.brokers == ("localhost:9092",)  # type: ignore[union-attr]
