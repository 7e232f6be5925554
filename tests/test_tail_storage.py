"""Tail storage (`tail_storage: file_storage/<name>`): the engine's buffer on disk.

The Python API across a restart, the extension's settings, and the proof the issue asks for: `tailsample serve`
killed with SIGKILL in the middle of a stream from the OpenTelemetry SDK's OTLP exporter, restarted on the same
directory, delivers every kept trace whole to the backend, with duplicates counted and bounded."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otlp_builders import STATUS_ERROR, make_request, make_span
from service_harness import ServeSubprocess, free_port, service_config, serving, sink, wait_for
from tailsample.collector.settings import ServiceConfig
from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.errors import BackpressureError, ConfigError
from tailsample.storage import FileStorage

ERRORS = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]


def _config(**extra: Any) -> Config:
    return Config.from_dict({"decision_wait": "10s", "tail_storage": "file_storage/buffer", "policies": ERRORS,
                             **extra})


def _trace(tid: int, spans: int, error: bool) -> bytes:
    """One trace of `spans` spans (a root and its children), the last one an error when `error`."""
    t = tid.to_bytes(16, "big")
    return make_request({"service.name": "shop"}, [
        make_span(t, (i + 1).to_bytes(8, "big"), parent=b"" if i == 0 else (1).to_bytes(8, "big"),
                  status=STATUS_ERROR if error and i == spans - 1 else 0)
        for i in range(spans)])


def test_an_engine_reopened_on_its_directory_decides_what_it_held(tmp_path):
    storage = FileStorage(tmp_path)
    e = Engine(_config(), storage=storage, now=100.0)
    assert e.replay_report()["payloads"] == 0
    e.ingest(_trace(1, 3, error=True), now=100.0)
    e.ingest(_trace(2, 2, error=False), now=101.0)
    round_, out = e.poll_round(now=105.0)
    assert out == [] and round_ >= 1
    del e  # no flush: what a killed process leaves

    e = Engine(_config(), storage=FileStorage(tmp_path), now=106.0)
    r = e.replay_report()
    assert (r["payloads"], r["traces_pending"], r["spans_pending"]) == (2, 2, 5)
    assert r["truncations"] == [] and r["duration"] >= 0
    assert e.poll(now=109.9) == []
    round_, out = e.poll_round(now=110.0)  # first seen at 100 s: due at 110 s, on the original schedule
    assert len(out) == 1
    assert e.stats()["traces_sampled"] == 1
    assert e.acknowledge(round_)
    assert not e.acknowledge(round_)  # once
    s = e.stats()
    assert s["storage_acknowledged_round"] == round_
    assert s["storage_bytes"] > 0 and s["limit_storage_max_size"] == storage.max_size


def test_without_its_storage_settings_tail_storage_is_a_clear_error():
    with pytest.raises(ConfigError, match="tail_storage names 'file_storage/buffer'"):
        Engine(_config())


def test_a_full_directory_answers_backpressure(tmp_path):
    e = Engine(_config(), storage=FileStorage(tmp_path, max_size=64 << 10, segment_size=8 << 10), now=0.0)
    with pytest.raises(BackpressureError) as info:
        for tid in range(1, 10_000):
            e.ingest(_trace(tid, 3, error=False), now=1.0)
    assert info.value.reason == "tail_storage"
    assert "full" in str(info.value)
    assert e.stats()["storage_refused_full"] >= 1


def test_memory_limit_is_backpressure_with_metrics():
    e = Engine(Config.from_dict({"policies": ERRORS, "tailsample": {"max_buffered_bytes": 50_000}}))
    with pytest.raises(BackpressureError) as info:
        for tid in range(1, 10_000):
            e.ingest(_trace(tid, 3, error=False), now=1.0)
    assert info.value.reason == "max_buffered_bytes"
    s = e.stats()
    assert s["limit_max_buffered_bytes"] == 50_000
    assert s["buffered_bytes"] >= 50_000
    assert s["refused_max_buffered_bytes"] == 1


def _load(tmp_path: Path, storage: dict[str, Any], *, service_extensions: list[str] | None = None,
          tail_storage: str = "file_storage/buffer") -> Any:
    cfg = service_config(exporters={"debug": {}}, tail_sampling={"tail_storage": tail_storage},
                         extensions={"file_storage/buffer": storage},
                         service_extensions=["file_storage/buffer"] if service_extensions is None
                         else service_extensions)
    path = tmp_path / "otel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ServiceConfig.from_file(path)


def test_file_storage_settings(tmp_path):
    cfg = _load(tmp_path, {"directory": str(tmp_path / "d"), "create_directory": True, "fsync": True,
                           "compaction": {"on_start": True}, "tailsample": {"max_size_mib": 64}})
    ext = cfg.extensions["file_storage/buffer"]
    assert (ext.sync, ext.max_size_mib, ext.create_directory) == ("payload", 64, True)
    assert any("compaction" in line for line in cfg.ignored)
    storage = ext.open()
    assert storage.directory.is_dir() and storage.max_size == 64 << 20


@pytest.mark.parametrize(("storage", "kw", "message"), [
    ({"directory": "/nonexistent/tailsample"}, {}, None),
    ({"directory": "x", "tailsample": {"sync": "sometimes"}}, {}, 'unknown value "sometimes"'),
    ({"directory": "x"}, {"service_extensions": []}, "is not listed in service.extensions"),
    ({"directory": "x"}, {"tail_storage": "file_storage/other"}, "'file_storage/other' is not defined"),
])
def test_file_storage_errors_name_the_setting(tmp_path, storage, kw, message):
    if message is None:  # the directory is checked when the service opens it
        ext = _load(tmp_path, storage, **kw).extensions["file_storage/buffer"]
        with pytest.raises(ConfigError, match="does not exist; create it or set create_directory: true"):
            ext.open()
        return
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, storage, **kw)


def test_serve_keeps_pending_traces_across_a_graceful_restart(tmp_path):
    """SIGTERM with tail storage: what is not due stays on disk and is decided after the restart."""
    with sink() as backend:
        cfg = service_config(
            exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, decision_wait="1s",
            tail_sampling={"tail_storage": "file_storage/buffer"},
            extensions={"file_storage/buffer": {"directory": str(tmp_path), "create_directory": True}},
            service_extensions=["file_storage/buffer"])
        with serving(cfg) as s:
            url = s.url()
            for tid in (1, 2):
                req = urllib.request.Request(url, data=_trace(tid, 3, error=tid == 1), method="POST",
                                             headers={"Content-Type": "application/x-protobuf"})
                urllib.request.urlopen(req, timeout=5).read()
        assert backend.spans() == []  # stopped before the decision: nothing decided on the way out
        with serving(cfg) as s:
            wait_for(lambda: len(backend.spans()) == 3, timeout=10, what="the error trace after the restart")
            wait_for(lambda: s.metric('tailsample_engine_traces_not_sampled_total{processor="tail_sampling"}') == 1)
            assert s.metric('tailsample_engine_replay_payloads_total{processor="tail_sampling"}') == 2
        assert Counter(t for t, *_ in backend.spans()) == {format(1, "032x"): 3}


# ---- kill -9 in the middle of a stream ---------------------------------------------------------------------

class _Serve(ServeSubprocess):
    """`tailsample serve` in a process, exporting over OTLP/HTTP to `backend`, with tail storage in `directory`."""

    def __init__(self, tmp: Path, backend_endpoint: str, directory: Path, http_port: int, *,
                 persistent_queue: bool = False) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        exporter: dict[str, Any] = {"endpoint": backend_endpoint}
        if persistent_queue:
            exporter |= {"sending_queue": {"storage": "file_storage/buffer"},
                         "retry_on_failure": {"initial_interval": "100ms", "max_interval": "200ms",
                                              "max_elapsed_time": "0s"}}
        cfg = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
            "processors": {"tail_sampling": {"decision_wait": "2s", "tail_storage": "file_storage/buffer",
                                             "policies": ERRORS}},
            "exporters": {"otlphttp": exporter},
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{self.health_port}"},
                           "file_storage/buffer": {"directory": str(directory), "create_directory": True}},
            "service": {"extensions": ["health_check", "file_storage/buffer"],
                        "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                 "exporters": ["otlphttp"]}},
                        "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}}},
        }
        super().__init__(tmp, f"serve-{self.metrics_port}", cfg, health_port=self.health_port,
                         metrics_port=self.metrics_port)

    def stop(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self._log.close()


def _stream(endpoint: str, n: int, kinds: dict[str, bool], done: threading.Event) -> None:
    """n traces of 3 spans from the SDK, about 25 a second, each ending after its children; every 3rd an error.
    The exporter retries (with backoff) while the service is down."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(HttpExporter(endpoint=endpoint, timeout=60),
                                                   schedule_delay_millis=50))
    tracer = provider.get_tracer("kill-test")
    for i in range(n):
        error = i % 3 == 0
        with tracer.start_as_current_span(f"GET /order/{i}") as root:
            with tracer.start_as_current_span("db.query"):
                time.sleep(0.01)
            with tracer.start_as_current_span("charge") as child:
                if error:
                    child.set_status(Status(StatusCode.ERROR, "card declined"))
            kinds[format(root.get_span_context().trace_id, "032x")] = error
        time.sleep(0.03)
    provider.force_flush(120_000)
    provider.shutdown()
    done.set()


def test_kill_9_mid_stream_then_restart_delivers_every_kept_trace_whole(tmp_path):
    directory = tmp_path / "storage"
    http_port = free_port()
    with sink() as backend:
        first = _Serve(tmp_path, backend.http_endpoint, directory, http_port)
        kinds: dict[str, bool] = {}
        done = threading.Event()
        client = threading.Thread(target=_stream, args=(f"http://127.0.0.1:{http_port}/v1/traces", 150, kinds, done),
                                  daemon=True)
        client.start()
        try:
            time.sleep(3.0)  # mid-stream: some traces decided and exported, some buffered, some spans in flight
            accepted = first.metrics()['otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}']
        finally:
            first.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        second = _Serve(tmp_path, backend.http_endpoint, directory, http_port)
        restart = time.monotonic() - killed_at
        try:
            assert done.wait(120), "the client finished its stream"
            expected = {t for t, error in kinds.items() if error}
            assert len(expected) == 50

            def arrived() -> set[str]:
                return {t for t, *_ in backend.spans()}

            wait_for(lambda: expected <= arrived(), timeout=30, what="every error trace at the backend")
            time.sleep(2.5)  # one more decision_wait: anything else would have arrived by now
            spans = backend.spans()
            per_span = Counter((t, s) for t, s, *_ in spans)
            per_trace = Counter(t for t, _ in per_span)
            assert set(per_trace) == expected, "only the kept traces"
            assert set(per_trace.values()) == {3}, "each of them whole"
            duplicates = sum(c - 1 for c in per_span.values())
            assert max(per_span.values()) <= 2, "a span comes at most twice"
            m = second.metrics()
            replayed = m['tailsample_engine_replay_payloads_total{processor="tail_sampling"}']
            replay_s = m['tailsample_engine_replay_duration_seconds_total{processor="tail_sampling"}']
            resent = m['tailsample_engine_replay_spans_resent_total{processor="tail_sampling"}']
            assert replayed > 0, "the first process's buffer came back"
            assert duplicates <= resent, "duplicates come only from kept spans sent again by the replay"
            print(f"\nkill -9 after {accepted:.0f} spans accepted; restart {restart:.2f} s "
                  f"(healthy after {second.ready_after:.2f} s); replay {replayed:.0f} payloads in "
                  f"{replay_s * 1e3:.1f} ms; "
                  f"{len(spans)} spans received for {len(expected)} kept traces; {duplicates} duplicates "
                  f"(replay re-sent {resent:.0f})")
        finally:
            second.stop(signal.SIGTERM)


def test_backend_down_across_a_kill_9_loses_nothing_in_the_persistent_queue(tmp_path):
    """Kept traces wait in the exporter's persistent queue while the backend is down; the service is killed with
    SIGKILL and restarted; once the backend is back, every one of them arrives, whole."""
    directory = tmp_path / "storage"
    http_port = free_port()
    with sink() as backend:
        backend.stop()  # the backend is down from the start
        first = _Serve(tmp_path, backend.http_endpoint, directory, http_port, persistent_queue=True)
        kept = {format(tid, "032x") for tid in range(1, 31)}
        url = f"http://127.0.0.1:{http_port}/v1/traces"
        queued = 'otelcol_exporter_queue_size{exporter="otlphttp"}'
        try:
            for tid in range(1, 61):  # 1-30 errors (kept), 31-60 not
                req = urllib.request.Request(url, data=_trace(tid, 3, error=tid <= 30), method="POST",
                                             headers={"Content-Type": "application/x-protobuf"})
                urllib.request.urlopen(req, timeout=5).read()
            wait_for(lambda: first.metrics()[queued] > 0, timeout=30, what="kept traces in the persistent queue")
            wait_for(lambda: first.metrics()[
                'otelcol_processor_tail_sampling_sampling_traces_on_memory{processor="tail_sampling"}'] == 0,
                timeout=30, what="every trace decided")
        finally:
            first.stop(signal.SIGKILL)
        backend.start()
        second = _Serve(tmp_path, backend.http_endpoint, directory, http_port, persistent_queue=True)
        try:
            wait_for(lambda: {t for t, *_ in backend.spans()} >= kept, timeout=40, what="the queued traces")
            wait_for(lambda: second.metrics()[queued] == 0, timeout=20, what="the queue emptied")
            per_span = Counter((t, s) for t, s, *_ in backend.spans())
            per_trace = Counter(t for t, _ in per_span)
            log = second.log.read_text()
            assert set(per_trace) == kept and set(per_trace.values()) == {3}, (per_trace, log)
            assert max(per_span.values()) <= 2, per_span
            assert "persistent queue holds" in log, log
        finally:
            second.stop(signal.SIGTERM)
