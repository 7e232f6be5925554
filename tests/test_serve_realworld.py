"""`tailsample serve` between real OpenTelemetry programs built here from the Go module proxy:

    telemetrygen (fixed rates, errors mixed in) ──OTLP──▶ tailsample serve ──OTLP──▶ otelcol (otlp → file)

The collector downstream must receive exactly the error traces, each whole, and nothing else; tailsample's own
counters must agree. Skipped with the reason when this machine cannot build the Go tools.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from service_harness import free_port, service_config, serving, wait_for
from tools import gotools

CHILD_SPANS = 3  # telemetrygen: a root and this many children per trace


def start_otelcol(tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    binary = gotools.require(gotools.otelcol)
    port = free_port()
    out = tmp / "downstream.json"
    cfg = tmp / "otelcol.yaml"
    cfg.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                    "telemetry": {"metrics": {"level": "none"}}},
    }))
    log = (tmp / "otelcol.log").open("wb")
    proc = subprocess.Popen([str(binary), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    import socket

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"otelcol exited: {(tmp / 'otelcol.log').read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=30, what="otelcol to listen")
    return proc, port, out


def downstream_traces(out: Path) -> dict[str, list[tuple[str, int]]]:
    """trace ID -> [(service.name, status code)] of every span the collector wrote."""
    traces: dict[str, list[tuple[str, int]]] = defaultdict(list)
    if not out.exists():
        return traces
    for line in out.read_text().splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line).get("resourceSpans", []):
            service = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"]
                           if a["key"] == "service.name")
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    traces[span["traceId"]].append((service, span.get("status", {}).get("code", 0)))
    return traces


def telemetrygen(target: str, *, service: str, status: str, rate: int, seconds: int,
                 protocol: str) -> subprocess.Popen[bytes]:
    binary = gotools.require(gotools.telemetrygen)
    args = [str(binary), "traces", "--otlp-insecure", "--otlp-endpoint", target, "--service", service,
            "--status-code", status, "--child-spans", str(CHILD_SPANS), "--rate", str(rate),
            "--duration", f"{seconds}s"]
    if protocol == "http":
        args.append("--otlp-http")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_telemetrygen_to_serve_to_otelcol_keeps_exactly_the_error_traces_whole(tmp_path, protocol):
    collector, port, out = start_otelcol(tmp_path)
    try:
        cfg = service_config(exporters={"otlp": {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}}},
                             decision_wait="1s")
        with serving(cfg) as s:
            target = s.address(f"otlp/{protocol}")
            # fixed rates (spans/s), at once: boring traffic and a share of errors
            gens = [telemetrygen(target, service="cart", status="Unset", rate=4000, seconds=3, protocol=protocol),
                    telemetrygen(target, service="checkout", status="Error", rate=400, seconds=3,
                                 protocol=protocol)]
            for g in gens:
                _, err = g.communicate(timeout=60)
                assert g.returncode == 0, err.decode()
                assert b"traces export:" not in err, err.decode()  # telemetrygen exits 0 on failed exports
            received = 'otelcol_processor_tail_sampling_new_trace_id_received_total{processor="tail_sampling"}'
            sampled = ('otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor="tail_sampling",'
                       'sampled="true",decision="sampled"}')
            not_sampled = ('otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor='
                           '"tail_sampling",sampled="false",decision="not_sampled"}')
            wait_for(lambda: s.metric(sampled) + s.metric(not_sampled) == s.metric(received) > 0, timeout=20,
                     what="every trace decided")
            kept = int(s.metric(sampled))
            spans_in = s.metric('otelcol_receiver_accepted_spans_total{receiver="otlp",transport="' + protocol + '"}')
            assert kept > 0 and s.metric(not_sampled) > kept
            assert spans_in == s.metric(received) * (CHILD_SPANS + 1)
            wait_for(lambda: s.metric('otelcol_exporter_sent_spans_total{exporter="otlp"}')
                     == kept * (CHILD_SPANS + 1), timeout=20)
        wait_for(lambda: len(downstream_traces(out)) == kept and
                 sum(map(len, downstream_traces(out).values())) == kept * (CHILD_SPANS + 1),
                 timeout=20, what="the collector to write every kept span")
        traces = downstream_traces(out)
        for tid, spans in traces.items():
            assert len(spans) == CHILD_SPANS + 1, f"trace {tid} arrived in part: {spans}"
            assert set(spans) == {("checkout", 2)}, f"trace {tid} is not an error trace: {spans}"
    finally:
        collector.terminate()
        collector.wait(30)
