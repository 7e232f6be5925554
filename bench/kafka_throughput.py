"""Throughput of `tailsample serve` reading Kafka: one instance, then two in one consumer group, on this machine.

A real broker (scripts/kafka/broker.py, KRaft on 127.0.0.1) gets a topic of 8 partitions. For each instance
count: the instances start on the empty topic and join the group; then synthetic traffic (`tailsample.traffic.synth`,
seed policies, one trace per message keyed by trace ID, as the collector's Kafka exporter with partition_traces_by_id)
is produced as fast as the producer goes, and the clock runs from the first message produced until every message
is committed by the group (commits follow decisions and exports). spans/s = spans / that time. On 2 cores, the
broker, the producer and the instances share the machine: the figures say what this machine does, not how the
design scales.

    python bench/kafka_throughput.py --spans 400000 --json bench/.data/results/kafka.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tailsample.collector.metrics import parse_text
from tailsample.engine import split_by_trace
from tailsample.traffic.synth import TrafficGenerator

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8


def _broker_module() -> Any:
    spec = importlib.util.spec_from_file_location("tailsample_scripts_kafka_broker",
                                                  ROOT / "scripts" / "kafka" / "broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _messages(spans: int) -> tuple[list[tuple[bytes, bytes]], int]:
    gen = TrafficGenerator(seed=7, spans_per_second=100_000)
    out: list[tuple[bytes, bytes]] = []
    total = 0
    for batch in gen.batches(spans / 100_000):
        for tid, part in split_by_trace(batch.payload):
            out.append((tid.hex().encode(), part))
        total += batch.spans
    return out, total


def _serve(tmp: Path, name: str, bootstrap: str, topic: str) -> tuple[subprocess.Popen[bytes], int]:
    metrics = _free_port()
    seed = yaml.safe_load((ROOT / "python" / "tailsample" / "data" / "seed-config.yaml").read_text())
    ts = seed["processors"]["tail_sampling"] if "processors" in seed else seed
    cfg = {
        "receivers": {"kafka": {"brokers": [bootstrap], "topic": topic, "group_id": f"bench-{topic}",
                                "initial_offset": "earliest", "session_timeout": "10s", "heartbeat_interval": "1s"}},
        "processors": {"tail_sampling": {**ts, "decision_wait": "2s"}},
        "exporters": {"file": {"path": str(tmp / f"{name}.kept.proto"), "format": "proto"}},
        "service": {"pipelines": {"traces": {"receivers": ["kafka"], "processors": ["tail_sampling"],
                                             "exporters": ["file"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics}"}}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tailsample", "serve", "--config", str(path)], stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, metrics


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return parse_text(r.read().decode())
    except OSError:
        return {}


def _sum(ports: list[int], prefix: str) -> float:
    return sum(v for p in ports for k, v in _metrics(p).items() if k.startswith(prefix))


def run(broker: Any, instances: int, messages: list[tuple[bytes, bytes]], spans: int) -> dict[str, Any]:
    import confluent_kafka as ck

    topic = f"bench-{instances}"
    broker.create_topic(topic, partitions=PARTITIONS)
    with tempfile.TemporaryDirectory() as d:
        procs = [_serve(Path(d), f"ts{i}", broker.bootstrap, topic) for i in range(instances)]
        ports = [p for _, p in procs]
        try:
            deadline = time.monotonic() + 60
            def held(port: int) -> int:
                return sum(1 for k in _metrics(port) if k.startswith("tailsample_kafka_partition_lag"))

            # Every instance holds partitions and together all of them: the group has settled.
            while not (all(held(p) > 0 for p in ports) and sum(held(p) for p in ports) == PARTITIONS):
                if time.monotonic() > deadline:
                    raise RuntimeError("the group did not take every partition within 60 s")
                time.sleep(0.2)
            producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                                    "queue.buffering.max.messages": 1_000_000})
            start = time.monotonic()
            for key, value in messages:
                while True:
                    try:
                        producer.produce(topic, key=key, value=value)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.flush(120)
            produced = time.monotonic() - start
            while _sum(ports, "tailsample_kafka_partition_committed_offset") < len(messages):
                if time.monotonic() - start > 600:
                    raise RuntimeError("not every message was committed within 10 minutes")
                time.sleep(0.1)
            elapsed = time.monotonic() - start
            received = _sum(ports, "otelcol_receiver_accepted_spans")
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(60)
    return {"instances": instances, "partitions": PARTITIONS, "messages": len(messages), "spans": spans,
            "spans_received": received, "seconds": elapsed, "produce_seconds": produced,
            "spans_per_s": spans / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    kafka = _broker_module()
    messages, spans = _messages(a.spans)
    rows = []
    with kafka.KafkaBroker(num_partitions=PARTITIONS) as broker:
        for n in (1, 2):
            row = run(broker, n, messages, spans)
            print(json.dumps(row))
            rows.append(row)
    table = ["| instances | partitions | messages | spans | seconds (first produced to last committed) | "
             "spans/s | producing alone took |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['instances']} | {r['partitions']} | {r['messages']:,} | {r['spans']:,} | "
                     f"{r['seconds']:.1f} | {r['spans_per_s'] / 1e3:,.0f} k | {r['produce_seconds']:.1f} s |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, "table_markdown": "\n".join(table)}, indent=2))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
