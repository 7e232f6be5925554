"""The `kafka` exporter (issue 9) against a real broker: kept traces written as the collector's Kafka exporter
writes them, one trace per message keyed by trace ID with `partition_traces_by_id`, and its configuration."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

import kafka_fixtures
from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, spans_out, trace_id
from service_harness import service_config, serving, wait_for
from tailsample.collector.settings import ServiceConfig
from tailsample.errors import ConfigError

kafka_broker = kafka_fixtures.kafka_broker
ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (pip install -e '.[test]')")


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Every message of `topic` from the start, until `count` arrived (or the timeout)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}-{time.monotonic()}",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False})
    out: list[Any] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def post(url: str, payload: bytes) -> None:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/x-protobuf"})
    urllib.request.urlopen(req, timeout=5).close()


def test_kept_traces_go_to_kafka_one_trace_per_message_keyed_by_id(kafka_broker, rng) -> None:
    """Scenario: `tailsample serve` with the errors policy and a kafka exporter (partition_traces_by_id), fed
    5 error traces spread over two services' payloads and 5 boring ones. Guarantees: exactly the 5 error traces
    reach the topic, each as one message keyed by its 32-hex ID holding all its spans, byte for byte; messages of
    one key share one partition."""
    kafka_broker.create_topic("kept", partitions=4)
    cfg = service_config(exporters={"kafka": {"brokers": [kafka_broker.bootstrap], "topic": "kept",
                                              "partition_traces_by_id": True, "encoding": "otlp_proto",
                                              "protocol_version": "2.1.0"}})
    errors, boring, sent = [], [], []
    with serving(cfg) as s:
        for i in range(10):
            tid = trace_id(rng)
            root, child = span_id(rng), span_id(rng)
            a = make_request(service("frontend"), [make_span(tid, root, status=STATUS_ERROR if i < 5 else 0)])
            b = make_request(service("cart"), [make_span(tid, child, parent=root), make_span(tid, parent=child)])
            for p in (a, b):
                post(s.url(), p)
                sent.append(p)
            (errors if i < 5 else boring).append(tid)
        wait_for(lambda: s.metric('otelcol_exporter_sent_spans_total{exporter="kafka"}') == 15, timeout=20,
                 what="15 kept spans delivered to Kafka")
    messages = consume(kafka_broker.bootstrap, "kept", 5)
    assert len(messages) == 5
    assert sorted(m.key() for m in messages) == sorted(t.hex().encode() for t in errors)
    expected = {(t, sid): raw for t, sid, raw in spans_out(sent) if t in errors}
    got = {}
    for m in messages:
        spans = spans_out([m.value()])
        assert {t for t, _, _ in spans} == {bytes.fromhex(m.key().decode())}
        got.update({(t, sid): raw for t, sid, raw in spans})
    assert got == expected
    assert not any(m.key() in {t.hex().encode() for t in boring} for m in messages)


def test_without_partitioning_a_batch_is_one_unkeyed_message(kafka_broker, rng) -> None:
    """Guarantees: without partition_traces_by_id, each kept payload is one message without a key, holding
    several traces; `traces.topic` wins over `topic`."""
    kafka_broker.create_topic("kept-whole", partitions=1)
    cfg = service_config(exporters={"kafka": {"brokers": [kafka_broker.bootstrap], "topic": "unused",
                                              "traces": {"topic": "kept-whole"}}})
    tids = [trace_id(rng) for _ in range(3)]
    with serving(cfg) as s:
        post(s.url(), make_request(service("cart"), [make_span(t, span_id(rng), status=STATUS_ERROR) for t in tids]))
        wait_for(lambda: s.metric('otelcol_exporter_sent_spans_total{exporter="kafka"}') == 3, timeout=20)
    messages = consume(kafka_broker.bootstrap, "kept-whole", 1)
    assert len(messages) == 1 and messages[0].key() is None
    assert {t for t, _, _ in spans_out([messages[0].value()])} == set(tids)


def test_an_unreachable_broker_counts_failed_spans(rng) -> None:
    """Scenario: the exporter's broker is a closed loopback port, retries off, a short timeout. Guarantees: the
    spans are counted as failed, not lost silently, and the service keeps running."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = service_config(exporters={"kafka": {"brokers": [f"127.0.0.1:{port}"], "timeout": "1s",
                                              "retry_on_failure": {"enabled": False}}})
    with serving(cfg) as s:
        post(s.url(), make_request(service("cart"), [make_span(trace_id(rng), span_id(rng), status=STATUS_ERROR)]))
        wait_for(lambda: s.metric('otelcol_exporter_send_failed_spans_total{exporter="kafka"}') == 1, timeout=20)


@pytest.mark.parametrize(("exporter", "message"), [
    ({"encoding": "otlp_json"}, "exporters.kafka.encoding: 'otlp_json' is not supported"),
    ({"traces": {"encoding": "jaeger_proto"}}, "exporters.kafka.traces.encoding: 'jaeger_proto' is not supported"),
    ({"auth": {"sasl": {"mechanism": "PLAIN"}}}, "exporters.kafka.auth.sasl.username: username and password"),
    ({"auth": {"sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}}}, 'unknown value "GSSAPI"'),
    ({"producer": {"required_acks": 2}}, "exporters.kafka.producer.required_acks: expected 0"),
    ({"producer": {"compression": "brotli"}}, 'exporters.kafka.producer.compression: unknown value "brotli"'),
    ({"partition_traces_by_id": "yes"}, "exporters.kafka.partition_traces_by_id: expected true or false"),
    ({"auth": {"kerberos": {}}}, "exporters.kafka.auth.kerberos: is not supported"),
])
def test_kafka_exporter_config_errors(exporter: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ServiceConfig.from_dict(service_config(exporters={"kafka": exporter}))


def test_kafka_client_settings_map_onto_librdkafka() -> None:
    from tailsample.collector.kafka import client_config

    cfg = ServiceConfig.from_dict(service_config(exporters={"kafka": {
        "brokers": ["127.0.0.1:9093", "127.0.0.1:9094"], "client_id": "ts",
        "auth": {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"},
                 "tls": {"ca_file": "/ca.pem", "insecure": True}}}}))
    settings = cfg.exporters["kafka"]
    conf = client_config(settings.client)  # type: ignore[union-attr]
    assert conf == {"bootstrap.servers": "127.0.0.1:9093,127.0.0.1:9094", "client.id": "ts",
                    "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u",
                    "sasl.password": "p", "ssl.ca.location": "/ca.pem", "enable.ssl.certificate.verification": False}


def test_replay_loads_recorded_traffic_into_a_topic(kafka_broker, rng, tmp_path, capsys) -> None:
    """Scenario: `tailsample replay FILE --to-kafka BROKER --topic T` over a recorded file of 4 payloads, each
    with 3 of 6 traces. Guarantees: one message per trace per payload (12), keyed by ID, every span of the file
    exactly once, and all messages of a trace in one partition."""
    from tailsample.cli import main
    from tailsample.collector.fileformat import PayloadWriter

    tids = [trace_id(rng) for _ in range(6)]
    payloads = [make_request(service(f"svc-{i}"), [make_span(t, span_id(rng)) for t in tids[i:i + 3]])
                for i in range(4)]
    path = tmp_path / "traffic.json"
    with PayloadWriter(path, "json") as w:
        w.write_all(payloads)
    kafka_broker.create_topic("replayed", partitions=3)
    assert main(["replay", str(path), "--to-kafka", kafka_broker.bootstrap, "--topic", "replayed"]) == 0
    assert "12 messages written to 'replayed'" in capsys.readouterr().err
    messages = consume(kafka_broker.bootstrap, "replayed", 12)
    assert sorted(m.key() for m in messages) == sorted(t.hex().encode() for i in range(4) for t in tids[i:i + 3])
    partitions: dict[bytes, set[int]] = {}
    for m in messages:
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())
    got = sorted(raw for m in messages for _, _, raw in spans_out([m.value()]))
    assert got == sorted(raw for _, _, raw in spans_out(payloads))
