"""Smoke test of the Kafka broker used by tests and benchmarks (scripts/kafka/broker.py): install (cached), start,
create a topic, produce keyed messages and read them all back with confluent-kafka."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

import kafka_fixtures

# the module-scoped fixture, bound under its own name so that pytest finds it here
kafka_broker = kafka_fixtures.kafka_broker

ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (pip install -e '.[test]')")

MESSAGES = 100
KEYS = 10


def test_produce_and_consume_keyed_messages(kafka_broker):
    topic = "smoke-keyed"
    kafka_broker.create_topic(topic, partitions=4)
    meta = ck.admin.AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 4

    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.key(), msg.partition()))

    producer = ck.Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(MESSAGES):
        producer.produce(topic, key=f"key-{i % KEYS}", value=f"value-{i}", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    assert len(delivered) == MESSAGES
    # the key decides the partition, and 10 keys do not all hash to one of 4 partitions
    partition_of = dict(delivered)
    assert all(partition_of[key] == partition for key, partition in delivered)
    assert len(set(partition_of.values())) > 1

    consumer = ck.Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": "smoke-keyed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received = defaultdict(list)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        count = 0
        while count < MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            assert msg.partition() == partition_of[msg.key()]
            received[msg.key().decode()].append(int(msg.value().decode().removeprefix("value-")))
            count += 1
    finally:
        consumer.close()

    assert count == MESSAGES
    # every message once, and in production order within each key (one partition each)
    assert received == {f"key-{k}": list(range(k, MESSAGES, KEYS)) for k in range(KEYS)}


def test_create_topic_with_bundled_tool(kafka_broker):
    # the path taken when confluent-kafka is not installed: org.apache.kafka.tools.TopicCommand in a JVM
    kafka_broker._create_topic_with_tool("smoke-tool", 3, config={"retention.ms": "60000"}, timeout=30)
    kafka_broker._create_topic_with_tool("smoke-tool", 3, config=None, timeout=30)  # exists: no error
    meta = ck.admin.AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics("smoke-tool", timeout=10)
    assert len(meta.topics["smoke-tool"].partitions) == 3
