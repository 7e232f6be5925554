"""Every metric name `tailsample serve` exposes against the Prometheus naming rules (issue 18, item 8), scraped
from a running service with every component configured (Kafka's without a broker) and traffic through it, so
labelled series and per-pipeline collectors all render."""

from __future__ import annotations

import random
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import LOOPBACK, ServeSubprocess, free_port, make_certs, sink, wait_for
from tailsample import Engine
from tailsample.config import Config
from tailsample.service.pipeline import _GAUGES, engine_metric_name

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Names the OpenTelemetry Collector (or its spanmetrics connector) gives: kept as it names them, so dashboards
# built for it work; checked for the grammar and `_total` only.
COLLECTOR_NAMES = ("otelcol_", "traces_span_metrics_")
UNIT_WORDS = ("seconds", "bytes", "milliseconds", "ratio")
# A duration or size in a sub-unit, or a unit not spelt out: Prometheus wants base units, spelt in full.
NON_BASE_UNITS = {"ns", "us", "ms", "nanoseconds", "microseconds", "kb", "mb", "mib", "kib", "gib", "secs", "sec"}
TOKEN = "metric-names-token"


def check_names(text: str) -> list[str]:
    """The rule each metric family of a Prometheus text page breaks, one line per offence."""
    problems: list[str] = []
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if name in types:
                problems.append(f"{name}: two TYPE lines")
            types[name] = kind
    for name, kind in types.items():
        tokens = name.split("_")
        if not NAME.match(name):
            problems.append(f"{name}: not [a-zA-Z_:][a-zA-Z0-9_:]*")
        if "__" in name or name.endswith("_"):
            problems.append(f"{name}: an empty word")
        if name.count("_total") > 1 or "_total_" in name:
            problems.append(f"{name}: _total more than once, or not at the end")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter not ending in _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: a {kind} ending in _total (reads as a counter)")
        if name.startswith(COLLECTOR_NAMES):
            continue
        base = tokens[:-1] if kind == "counter" else tokens
        if NON_BASE_UNITS & set(tokens):
            problems.append(f"{name}: a unit that is not a base unit spelt out ({NON_BASE_UNITS & set(tokens)})")
        for unit in UNIT_WORDS:
            if unit in base[:-1]:
                problems.append(f"{name}: the unit {unit} is not the suffix")
    sample_names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
                    if line and not line.startswith("#")}
    for sample in sample_names:
        family = next((n for n in (sample, re.sub(r"_(bucket|sum|count)$", "", sample)) if n in types), None)
        if family is None:
            problems.append(f"{sample}: a sample without a TYPE line")
    for labels in re.findall(r"\{([^}]*)\}", text):
        for pair in re.findall(r'([^=,]+)="(?:[^"\\]|\\.)*"', labels):
            if not LABEL.match(pair) or pair.startswith("__"):
                problems.append(f"label {pair!r}: not a valid label name")
    return sorted(set(problems))


def test_the_checker_catches_each_rule() -> None:
    bad = "\n".join([
        "# TYPE tailsample_engine_decision_lag_ns_total_total counter",
        "tailsample_engine_decision_lag_ns_total_total 1",
        "# TYPE tailsample_engine_span_bytes_in_memory gauge", "tailsample_engine_span_bytes_in_memory 1",
        "# TYPE tailsample_things counter", "tailsample_things 1",
        "# TYPE tailsample_level_total gauge", "tailsample_level_total 1",
        "# TYPE 9bad gauge", "9bad 1", "orphan_sample 1",
        '# TYPE tailsample_ok_total counter', 'tailsample_ok_total{bad-label="x"} 1'])
    found = "\n".join(check_names(bad))
    for offence in ("decision_lag_ns_total_total: _total more than once", "a unit that is not a base unit",
                    "span_bytes_in_memory: the unit bytes is not the suffix", "tailsample_things: a counter not",
                    "tailsample_level_total: a gauge ending in _total", "9bad: not", "orphan_sample: a sample "
                    "without", "label 'bad-label'"):
        assert offence in found, offence
    assert check_names('# TYPE tailsample_engine_decision_lag_seconds_total counter\n'
                       'tailsample_engine_decision_lag_seconds_total{processor="t"} 0.5\n'
                       '# TYPE x_seconds histogram\nx_seconds_bucket{le="+Inf"} 1\nx_seconds_sum 1\n'
                       'x_seconds_count 1\n') == []


def test_every_engine_stat_gets_a_conforming_name() -> None:
    """Each stat of an engine with every feature on, through the name mapping, as /metrics renders it."""
    cfg = Config.from_dict({"decision_wait": "1s", "num_traces": 10, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
        "tailsample": {"red_metrics": {}, "record_policy": True}})
    lines = []
    for key in Engine(cfg).stats():
        kind = "gauge" if key in _GAUGES or key.startswith("limit_") else "counter"
        name, _ = engine_metric_name(key, kind)
        rendered = f"{name}_total" if kind == "counter" else name
        lines += [f"# TYPE {rendered} {kind}", f"{rendered} 0"]
    assert check_names("\n".join(lines)) == []
    assert engine_metric_name("decision_lag_ns_total", "counter") == ("tailsample_engine_decision_lag_seconds", 1e-9)


def full_config(tmp: Path, backend: Any, ports: dict[str, int], certs: Any) -> dict[str, Any]:
    policies = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "no-health", "type": "drop", "drop": {"drop_sub_policy": [
                    {"name": "health", "type": "string_attribute",
                     "string_attribute": {"key": "url.path", "values": ["/health"]}}]}}]
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"{LOOPBACK}:{ports['grpc']}",
                     "tls": {"cert_file": str(certs.cert), "key_file": str(certs.key)}},
            "http": {"endpoint": f"{LOOPBACK}:{ports['http']}", "auth": {"authenticator": "bearertokenauth"}}}},
                      "kafka": {"brokers": [f"{LOOPBACK}:{ports['kafka']}"]}},
        "processors": {
            "memory_limiter": {"check_interval": "100ms", "limit_mib": 4000, "spike_limit_mib": 500},
            "tail_sampling": {"decision_wait": "200ms", "num_traces": 1000, "policies": policies,
                              "tail_storage": "file_storage/buffer",
                              "tailsample": {"red_metrics": {}, "record_policy": True}},
            "tail_sampling/all": {"decision_wait": "200ms",
                                  "policies": [{"name": "all", "type": "always_sample"}]},
            "batch": {"send_batch_size": 100, "timeout": "100ms"},
        },
        "exporters": {
            "otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True},
                     "sending_queue": {"storage": "file_storage/queue"}},
            "otlphttp": {"endpoint": backend.http_endpoint},
            "file": {"path": str(tmp / "kept.json")},
            "debug": {"verbosity": "basic"},
            # no broker answers: the Kafka components start anyway and register their metrics
            "kafka": {"brokers": [f"{LOOPBACK}:{ports['kafka']}"], "timeout": "1s",
                      "retry_on_failure": {"enabled": False}},
        },
        "extensions": {
            "health_check": {"endpoint": f"{LOOPBACK}:{ports['health']}"},
            "bearertokenauth": {"token": TOKEN},
            "file_storage/buffer": {"directory": str(tmp / "buffer"), "create_directory": True},
            "file_storage/queue": {"directory": str(tmp / "queue"), "create_directory": True},
            "tailsample_debug": {"auth": {"authenticator": "bearertokenauth"}},
        },
        "service": {
            "extensions": ["health_check", "bearertokenauth", "file_storage/buffer", "file_storage/queue",
                           "tailsample_debug"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "tail_sampling", "batch"],
                           "exporters": ["otlp", "otlphttp"]},
                "traces/all": {"receivers": ["otlp", "kafka"], "processors": ["tail_sampling/all"],
                               "exporters": ["file", "debug", "kafka"]},
            },
            "telemetry": {"metrics": {"level": "detailed", "address": f"{LOOPBACK}:{ports['metrics']}"}},
        },
    }


def scrape_full_service(tmp_path: Path) -> str:
    """/metrics of `tailsample serve` with every component configured and traffic through it (also read by
    tests/test_reference.py, which checks the families against tailsample.collector.reference)."""
    rng = random.Random(18)
    ports = {k: free_port() for k in ("grpc", "http", "health", "metrics", "kafka")}
    certs = make_certs(tmp_path)
    with sink() as backend:
        serve = ServeSubprocess(tmp_path, "full", full_config(tmp_path, backend, ports, certs),
                                health_port=ports["health"], metrics_port=ports["metrics"],
                                args=("--shutdown-timeout", "2s"))
        try:
            url = f"http://{LOOPBACK}:{ports['http']}/v1/traces"
            for i in range(20):
                tid = trace_id(rng)
                root = span_id(rng)
                payload = make_request(service("cart"), [
                    make_span(tid, root, name="GET /cart", status=STATUS_ERROR if i % 2 else 0,
                              attributes={"url.path": "/health" if i % 5 == 0 else "/cart"},
                              kind=Span.SpanKind.SPAN_KIND_SERVER),
                    make_span(tid, span_id(rng), parent=root, name="POST payments",
                              attributes={"peer.service": "payments"}, kind=Span.SpanKind.SPAN_KIND_CLIENT),
                    # an orphan (its parent never arrives): the audit's broken-trace families render
                    make_span(tid, span_id(rng), parent=span_id(rng), name="cache get")])
                for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                    req = urllib.request.Request(url, data=payload, headers={
                        "Content-Type": "application/x-protobuf", **headers})
                    try:
                        urllib.request.urlopen(req, timeout=5).close()
                    except urllib.error.HTTPError as e:
                        assert e.code == 401
            wait_for(lambda: backend.span_count() >= 20, timeout=20, what="the kept traces at the backend")
            wait_for(lambda: serve.metrics().get(
                'tailsample_propagation_calls_total{processor="tail_sampling",source="cart",'
                'destination="payments"}', 0) > 0, timeout=10, what="the audit's pairs")
            wait_for(lambda: any(k.startswith("tailsample_propagation_orphan_spans_total")
                                 for k in serve.metrics()), timeout=10, what="the audit's broken traces")
            with urllib.request.urlopen(f"http://{LOOPBACK}:{ports['metrics']}/metrics", timeout=5) as r:
                text = r.read().decode()
        finally:
            serve.proc.send_signal(signal.SIGTERM)
            serve.proc.wait(timeout=30)
    return text


def test_a_running_service_exposes_only_conforming_metric_names(tmp_path: Path) -> None:
    """Scenario: `tailsample serve` with both OTLP receivers (TLS, bearer token), a Kafka receiver and exporter
    (no broker: they start and register their metrics all the same), memory_limiter, two
    tail_sampling processors (tail storage, RED metrics, the propagation audit, a drop policy), batch, the otlp,
    otlphttp, file and debug exporters (a persistent queue), and the debug endpoints; traffic that is kept,
    dropped, rejected and refused a token. Guarantees: every family on /metrics follows the naming rules;
    the engine's decision lag is `tailsample_engine_decision_lag_seconds_total`."""
    text = scrape_full_service(tmp_path)
    families = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    for expected in ("tailsample_engine_decision_lag_seconds_total", "otelcol_exporter_sent_spans_total",
                     "tailsample_memory_limiter_used_bytes", "traces_span_metrics_calls_total",
                     "tailsample_engine_storage_bytes", "tailsample_debug_requests_total",
                     "tailsample_receiver_rejected_requests_total", "tailsample_engine_span_memory_bytes",
                     "tailsample_kafka_messages_total", "tailsample_kafka_paused"):
        assert expected in families, expected
    assert len(families) > 100
    assert check_names(text) == [], "\n".join(check_names(text))
