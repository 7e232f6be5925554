"""Throughput of `tailsample serve` reading Kafka: one instance, then two in one consumer group, on this machine.

A real broker (scripts/kafka/broker.py, KRaft on 127.0.0.1) gets a topic of 8 partitions. For each instance
count: the instances start on the empty topic and join the group; then synthetic traffic (`tailsample.traffic.synth`,
seed policies, one trace per message keyed by trace ID, as the collector's Kafka exporter with partition_traces_by_id)
is produced as fast as the producer goes, and the clock runs from the first message produced until every message
is committed by the group (commits follow decisions and exports). spans/s = spans / that time. On 2 cores, the
broker, the producer and the instances share the machine: the figures say what this machine does, not how the
design scales.

Then a backlog (`--backlog`, 240,000 messages by default) produced beforehand, each one trace of 5 spans of about
360 B with ten attributes: one instance drains it, then two in a fresh group (started together: the broker delays
a new group's first rebalance 3 s, so they split the partitions from the start), and that pair again (`--pairs`,
3 in all): this machine's speed drifts between runs, so two against one is taken within a pair, and the median
of the pairs reported. The backlog is large enough that a drain lasts seconds, not the tenths of a second that
the 0.1 s polling below would blur. What the figures time:
- seconds and spans/s: from the first span taken to the last (polled every 0.1 s): consuming and ingesting. With
  decision_wait 2 s the first decisions fall after that, so this is the rate of taking, not of deciding;
- CPU per span: the instances' own (utime + stime from /proc) over that window, so it does not depend on what
  else the machine runs; each instance is a fresh process, so it includes faulting in the buffer's memory;
- through commit: CPU from the first span taken until every message is committed: decisions, the export to a
  file and the commits included (and the idle wait for decision_wait). The draining is watched by scraping the
  instances' /metrics every 0.1 s (about a millisecond of their CPU each, counted in); the commits by asking the
  broker for the group's offsets, which costs the instances nothing;
- decision lag: the engines' decided minus due (`tailsample_decision_lag_seconds`): the mean, and the bound of
  the bucket holding the 99th percentile.
On 2 shared cores the wall clock waits mostly for a CPU (the broker's JVM, librdkafka's threads, the instance,
and whatever else runs) rather than on the instance; "each with its own core" is modelled from CPU time: an
instance with a core of its own drains in its CPU seconds, so two drain in the larger of their two, and the
modelled scale-out of a pair is the single instance's CPU seconds over that (`scale_out`).

    python bench/kafka_throughput.py --spans 400000 --backlog 240000 --json bench/.data/results/kafka.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
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


def _serve(tmp: Path, name: str, bootstrap: str, topic: str, group: str | None = None,
           num_traces: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    metrics = _free_port()
    seed = yaml.safe_load((ROOT / "python" / "tailsample" / "data" / "seed-config.yaml").read_text())
    ts = seed["processors"]["tail_sampling"] if "processors" in seed else seed
    cfg = {
        "receivers": {"kafka": {"brokers": [bootstrap], "topic": topic, "group_id": group or f"bench-{topic}",
                                "initial_offset": "earliest", "session_timeout": "10s", "heartbeat_interval": "1s"}},
        "processors": {"tail_sampling": {**ts, "decision_wait": "2s",
                                         **({"num_traces": num_traces} if num_traces else {})}},
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


def _lag_quantile(ports: list[int], q: float) -> float | None:
    """The upper bound of the decision-lag bucket holding quantile `q`, over every instance (None: no decision)."""
    buckets: dict[float, float] = {}
    for port in ports:
        for key, value in _metrics(port).items():
            if key.startswith("tailsample_decision_lag_seconds_bucket{"):
                le = key.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return None
    return next(b for b in sorted(buckets) if buckets[b] >= q * total)


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


def _five_span_traces(count: int) -> list[tuple[bytes, bytes]]:
    """`count` messages of one trace each: 5 spans of about 360 B (ten attributes), as an SDK's HTTP server and
    client spans; trace and span IDs differ per message."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: str | int) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(int_value=value) if isinstance(value, int) else
                        AnyValue(string_value=value))

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "checkout"), kv("host.name", "checkout-7d9f")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.flask"
    base = time.time_ns()
    tid, sids = bytes(range(16)), [bytes([i + 1] * 8) for i in range(5)]
    for i in range(5):
        sp = ss.spans.add()
        sp.trace_id, sp.span_id, sp.name, sp.kind = tid, sids[i], f"GET /orders/{{id}} {i}", 2
        if i:
            sp.parent_span_id = sids[0]
        sp.start_time_unix_nano, sp.end_time_unix_nano = base + i * 1000, base + 2_000_000 + i * 1000
        sp.attributes.extend([kv("http.request.method", "GET"), kv("http.route", "/orders/{id}"),
                              kv("http.response.status_code", 200), kv("url.scheme", "https"),
                              kv("server.address", "checkout"), kv("server.port", 8443),
                              kv("client.address", "10.0.0.7"), kv("http.flavor", "1.1"),
                              kv("user_agent.original", "curl/8.5.0"),
                              kv("url.path", f"/orders/{1000 + i}")])
    template = req.SerializeToString()
    rng = __import__("random").Random(5)
    out = []
    for _ in range(count):
        new_tid = rng.randbytes(16)
        body = template.replace(tid, new_tid)
        for sid in sids:
            body = body.replace(sid, rng.randbytes(8))
        out.append((new_tid.hex().encode(), body))
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_committed(admin: Any, group: str) -> int:
    """The offsets the broker holds for the group, summed over its partitions (messages committed, the topic's
    offsets starting at 0). Read from the broker: polling it costs the instances nothing, where a scrape of
    their /metrics costs each about a millisecond of CPU."""
    import confluent_kafka as ck

    request = ck.ConsumerGroupTopicPartitions(group)
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result(10)
    return sum(tp.offset for tp in result.topic_partitions if tp.offset >= 0)


def drain(broker: Any, instances: int, topic: str, messages: int, spans: int, group: str) -> dict[str, Any]:
    """A backlog already in the topic, drained by `instances` in a fresh group (`group`, not used before)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with tempfile.TemporaryDirectory() as d:
        # num_traces above the backlog: every trace is still buffered when the drain ends (decision_wait 2 s).
        procs = [_serve(Path(d), f"drain{i}", broker.bootstrap, topic, group, num_traces=2 * messages)
                 for i in range(instances)]
        ports = [p for _, p in procs]
        try:
            deadline = time.monotonic() + 90
            while not all(_metrics(p) for p in ports):  # up, not yet in the group (that takes seconds)
                if time.monotonic() > deadline:
                    raise RuntimeError("the instances did not start within 90 s")
                time.sleep(0.05)
            while _sum(ports, "otelcol_receiver_accepted_spans") == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("nothing was taken within 90 s")
                time.sleep(0.01)
            # From the first span taken: CPU spent joining the group before it is left out of both.
            start, cpu1 = time.monotonic(), [_cpu_seconds(p.pid) for p, _ in procs]
            while (got := _sum(ports, "otelcol_receiver_accepted_spans")) < spans:
                if time.monotonic() - start > 300:
                    raise RuntimeError(f"{got:,.0f} of {spans:,} spans taken in 5 minutes")
                time.sleep(0.1)
            drained, cpu2 = time.monotonic() - start, [_cpu_seconds(p.pid) for p, _ in procs]
            while _group_committed(admin, group) < messages:
                if time.monotonic() - start > 300:
                    raise RuntimeError("not every message was committed within 5 minutes")
                time.sleep(0.1)
            committed, cpu3 = time.monotonic() - start, [_cpu_seconds(p.pid) for p, _ in procs]
            lag = _sum(ports, "tailsample_engine_decision_lag_seconds")
            forgotten = _sum(ports, "tailsample_kafka_forgotten_traces")
            lag_p99 = _lag_quantile(ports, 0.99)
            timed = _sum(ports, "tailsample_engine_decisions_timed")
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(60)
    cpu = sum(b - a for a, b in zip(cpu1, cpu2, strict=True))
    per_instance = [(b - a) for a, b in zip(cpu1, cpu2, strict=True)]
    cpu_all = sum(b - a for a, b in zip(cpu1, cpu3, strict=True))
    return {"instances": instances, "messages": messages, "spans": spans, "drain_seconds": drained,
            "commit_seconds": committed, "spans_per_s": spans / drained, "cpu_seconds": cpu,
            "cpu_seconds_per_instance": per_instance, "us_cpu_per_span": cpu / spans * 1e6,
            "us_cpu_per_message": cpu / messages * 1e6, "spans_per_cpu_second": spans / cpu if cpu else 0.0,
            "cpu_seconds_to_commit": cpu_all, "us_cpu_per_span_to_commit": cpu_all / spans * 1e6,
            "decision_lag_mean_s": lag / timed if timed else None, "decision_lag_p99_at_most_s": lag_p99,
            "traces_forgotten_in_rebalances": forgotten}


def scale_out(drains: list[dict[str, Any]]) -> dict[str, Any]:
    """Two instances against one, per pair of drains and the median over pairs: `shared`, their drain rates on the
    shared cores; `modelled`, with a core each (the single instance's CPU seconds over the busier of the two's)."""
    pairs = []
    for pair in sorted({d["pair"] for d in drains}):
        by_n = {d["instances"]: d for d in drains if d["pair"] == pair}
        one, two = by_n.get(1), by_n.get(2)
        if one is None or two is None or not one["spans_per_s"] or not max(two["cpu_seconds_per_instance"]):
            continue
        pairs.append({"pair": pair, "shared": two["spans_per_s"] / one["spans_per_s"],
                      "modelled": one["cpu_seconds"] / max(two["cpu_seconds_per_instance"])})
    return {"pairs": pairs, "shared": statistics.median(p["shared"] for p in pairs) if pairs else None,
            "modelled": statistics.median(p["modelled"] for p in pairs) if pairs else None}


def _at_most(seconds: float | None) -> str:
    return "n/a" if seconds is None else ("> 10 s" if seconds == float("inf") else f"≤ {seconds * 1e3:g} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--backlog", type=int, default=240_000, help="messages of one 5-span trace (0: none)")
    ap.add_argument("--pairs", type=int, default=3, help="backlog drains by one instance then two, repeated")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    kafka = _broker_module()
    messages, spans = _messages(a.spans) if a.spans else ([], 0)
    rows, drains = [], []
    # Instances started together join the group's first generation and split the partitions from the start: with
    # no delay, the first to join takes all 8 and reads for a second before giving half away (their traces
    # forgotten and read again by the other), and a drain by two would time that.
    with kafka.KafkaBroker(num_partitions=PARTITIONS, config={"group.initial.rebalance.delay.ms": 3000}) as broker:
        for n in (1, 2) if a.spans else ():
            row = run(broker, n, messages, spans)
            print(json.dumps(row))
            rows.append(row)
        if a.backlog:
            import confluent_kafka as ck

            broker.create_topic("backlog", partitions=PARTITIONS)
            producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                                    "queue.buffering.max.messages": 1_000_000})
            for key, value in _five_span_traces(a.backlog):
                producer.produce("backlog", key=key, value=value)
            producer.flush(120)
            for pair in range(a.pairs):
                for n in (1, 2):
                    row = {"pair": pair, **drain(broker, n, "backlog", a.backlog, 5 * a.backlog, f"drain-{pair}-{n}")}
                    print(json.dumps(row))
                    drains.append(row)
    table = ["| instances | partitions | messages | spans | seconds (first produced to last committed) | "
             "spans/s | producing alone took |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['instances']} | {r['partitions']} | {r['messages']:,} | {r['spans']:,} | "
                     f"{r['seconds']:.1f} | {r['spans_per_s'] / 1e3:,.0f} k | {r['produce_seconds']:.1f} s |")
    if drains:
        table += ["", "Backlog drained (one trace of 5 spans per message, produced beforehand, each instance a fresh "
                  "process; one instance then two, in pairs, each drain a fresh group reading the topic from its "
                  "start). seconds, spans/s and CPU: from the first span taken to the last (consuming and "
                  "ingesting; the first decisions are due 2 s after the first span, after the drain); through "
                  "commit: CPU from the first span taken until every message is committed (decisions, export to "
                  "the file and commits included, with the idle wait for decision_wait); decision lag: the "
                  "engines' decided minus due, the mean and the bucket bound holding the 99th percentile:", "",
                  "| pair | instances | messages | spans | seconds | spans/s | CPU per span | CPU per message | "
                  "spans per CPU-second | CPU per span through commit | decision lag mean | p99 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in drains:
            lag = r.get("decision_lag_mean_s")
            table.append(f"| {r['pair'] + 1} | {r['instances']} | {r['messages']:,} | {r['spans']:,} | "
                         f"{r['drain_seconds']:.2f} | "
                         f"{r['spans_per_s'] / 1e3:,.0f} k | {r['us_cpu_per_span']:.2f} us | "
                         f"{r['us_cpu_per_message']:.1f} us | {r['spans_per_cpu_second'] / 1e3:,.0f} k | "
                         f"{r['us_cpu_per_span_to_commit']:.2f} us | "
                         f"{'n/a' if lag is None else f'{lag * 1e3:.0f} ms'} | "
                         f"{_at_most(r.get('decision_lag_p99_at_most_s'))} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, "drains": drains, "scale_out": scale_out(drains),
                                      "table_markdown": "\n".join(table)}, indent=2))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
