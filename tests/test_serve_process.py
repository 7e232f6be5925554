"""`tailsample serve` as a process, fed by the OpenTelemetry Python SDK's own OTLP exporters (HTTP and gRPC):
exactly the expected traces come out whole; SIGTERM decides what is pending and exits 0; metrics and health
answer on their endpoints; TLS and bearer tokens work with a real client."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otlp_builders import spans_out
from service_harness import ServeSubprocess, free_port, make_certs, wait_for
from tailsample.collector.fileformat import read_payloads


class ServeProcess(ServeSubprocess):
    """`tailsample serve --config` in a subprocess; decision_wait must outlast the slow traces (0.55 s) so each is
    decided whole."""

    def __init__(self, tmp: Path, *, decision_wait: str = "1500ms", extra_ts: dict[str, Any] | None = None,
                 http: dict[str, Any] | None = None, grpc: dict[str, Any] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.metrics_port, self.health_port = free_port(), free_port()
        self.out = tmp / "kept.json"
        exts = {"health_check": {"endpoint": f"127.0.0.1:{self.health_port}"}, **(extensions or {})}
        cfg = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}", **(grpc or {})},
                "http": {"endpoint": f"127.0.0.1:{self.http_port}", **(http or {})}}}},
            "processors": {"tail_sampling": {"decision_wait": decision_wait, **(extra_ts or {}), "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}}]}},
            "exporters": {"file": {"path": str(self.out)}},
            "extensions": exts,
            "service": {"extensions": list(exts),
                        "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                 "exporters": ["file"]}},
                        "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}}},
        }
        super().__init__(tmp, "serve", cfg, health_port=self.health_port, metrics_port=self.metrics_port,
                         args=("--shutdown-timeout", "10s"))

    def kept(self) -> Counter[str]:
        """Spans per kept trace, from the file exporter's output."""
        if not self.out.exists():
            return Counter()
        return Counter(t.hex() for t, _, _ in spans_out(read_payloads(self.out, "json")))

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._log.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def serve_factory(tmp_path):
    made: list[ServeProcess] = []

    def make(**kw: Any) -> ServeProcess:
        p = ServeProcess(tmp_path, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def emit_traces(exporter: Any, n: int) -> dict[str, str]:
    """n traces of 3 spans through the SDK: every 4th an error, every 4th+1 slow; {trace id: kind}."""
    import time

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("tests")
    kinds = {}
    for i in range(n):
        kind = ("error", "slow", "ok", "ok")[i % 4]
        with tracer.start_as_current_span(f"GET /item/{i}") as root:
            with tracer.start_as_current_span("db.query"):
                pass
            with tracer.start_as_current_span("render") as child:
                if kind == "error":
                    child.set_status(Status(StatusCode.ERROR, "boom"))
                if kind == "slow":
                    time.sleep(0.55)
            kinds[format(root.get_span_context().trace_id, "032x")] = kind
    assert provider.force_flush(10_000)
    provider.shutdown()
    return kinds


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_exporters_to_serve_keep_exactly_errors_and_slow_traces_whole(serve_factory, protocol, gzip):
    """The SDK's own exporters, uncompressed and gzip (as a collector's exporters send by default)."""
    serve = serve_factory()
    if protocol == "http":
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{serve.http_port}/v1/traces",
                                compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression)
    else:
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{serve.grpc_port}", insecure=True,
                                compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression)
    kinds = emit_traces(exporter, 12)
    expected = {t for t, k in kinds.items() if k != "ok"}
    wait_for(lambda: set(serve.kept()) == expected, timeout=15, what="the error and slow traces")
    assert set(serve.kept().values()) == {3}  # whole
    m = serve.metrics()
    assert m[f'otelcol_receiver_accepted_spans_total{{receiver="otlp",transport="{protocol}"}}'] == 36
    wait_for(lambda: serve.metrics()['otelcol_exporter_sent_spans_total{exporter="file"}'] == 18)
    wait_for(lambda: serve.metrics()[
        'otelcol_processor_tail_sampling_sampling_traces_on_memory{processor="tail_sampling"}'] == 0)
    assert set(serve.kept()) == expected  # the last, boring, traces decided too: not kept
    assert serve.terminate() == 0


@pytest.mark.parametrize("drop", [False, True])
def test_sigterm_decides_pending_traces_and_exits_0(serve_factory, drop):
    serve = serve_factory(decision_wait="60s", extra_ts={"drop_pending_traces_on_shutdown": drop})
    kinds = emit_traces(HttpExporter(endpoint=f"http://127.0.0.1:{serve.http_port}/v1/traces"), 8)
    wait_for(lambda: serve.metrics()['otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}']
             == 24)
    assert serve.kept() == Counter()  # nothing is due for a minute
    assert serve.terminate() == 0
    expected = set() if drop else {t for t, k in kinds.items() if k != "ok"}
    assert set(serve.kept()) == expected
    log = serve.log.read_text()
    assert "shutting down" in log and "stopped" in log


def test_tls_and_bearer_token_with_the_sdk_exporters(serve_factory, tmp_path, monkeypatch):
    # requests lets these variables override the exporter's own CA file (some machines set them)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    certs = make_certs(tmp_path)
    tls = {"tls": {"cert_file": str(certs.cert), "key_file": str(certs.key)},
           "auth": {"authenticator": "bearertokenauth"}}
    serve = serve_factory(http=tls, grpc=tls, extensions={"bearertokenauth": {"token": "abc"}})
    auth = {"authorization": "Bearer abc"}
    kinds = emit_traces(HttpExporter(endpoint=f"https://127.0.0.1:{serve.http_port}/v1/traces",
                                     certificate_file=str(certs.ca), headers=auth), 4)
    from grpc import ssl_channel_credentials

    kinds |= emit_traces(GrpcExporter(endpoint=f"127.0.0.1:{serve.grpc_port}", headers=auth,
                                      credentials=ssl_channel_credentials(certs.ca.read_bytes())), 4)
    expected = {t for t, k in kinds.items() if k != "ok"}
    wait_for(lambda: set(serve.kept()) == expected, timeout=15)
    # without the token: refused, counted
    emit_traces(HttpExporter(endpoint=f"https://127.0.0.1:{serve.http_port}/v1/traces",
                             certificate_file=str(certs.ca)), 1)
    key = 'tailsample_receiver_rejected_requests_total{receiver="otlp",transport="http",reason="unauthenticated"}'
    assert serve.metrics()[key] >= 1
    assert serve.terminate() == 0


def test_invalid_config_and_port_in_use_exit_with_a_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: {zipkin: {}}\nexporters: {debug: {}}\nservice: {pipelines: {}}\n")
    r = subprocess.run([sys.executable, "-m", "tailsample", "serve", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unsupported receiver type 'zipkin'" in r.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "busy.yaml"
        cfg.write_text(yaml.safe_dump({
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
            "processors": {"tail_sampling": {"policies": [{"name": "all", "type": "always_sample"}]}},
            "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                 "exporters": ["debug"]}},
                        "telemetry": {"metrics": {"level": "none"}}}}))
        r = subprocess.run([sys.executable, "-m", "tailsample", "serve", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and "cannot serve" in r.stderr and str(port) in r.stderr
