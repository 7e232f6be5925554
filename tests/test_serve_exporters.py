"""Exporters of `tailsample serve`: OTLP/HTTP and OTLP/gRPC to a test backend that fails on command or is down
for a while, the bounded sending queue, backoff, and the file and debug exporters."""

from __future__ import annotations

import gzip
import logging
import random

import grpc
import pytest

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample.collector.fileformat import read_payloads
from tailsample.collector.settings import RetrySettings
from tailsample.exporters.base import Backoff

FAST_RETRY = {"initial_interval": "20ms", "max_interval": "100ms", "max_elapsed_time": "20s"}


def send_errors(s, rng, n: int) -> set[str]:
    """n error traces (2 spans each) through the service's HTTP receiver; their trace IDs."""
    import urllib.request

    ids = set()
    for _ in range(n):
        tid = trace_id(rng)
        root = span_id(rng)
        body = make_request(service("api"), [make_span(tid, root),
                                             make_span(tid, span_id(rng), parent=root, status=STATUS_ERROR)])
        req = urllib.request.Request(s.url(), data=body, headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        ids.add(tid.hex())
    return ids


@pytest.fixture
def backend():
    with sink() as s:
        yield s


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_headers_and_gzip_reach_the_backend(backend, rng, protocol):
    exporter = ({"otlphttp": {"endpoint": backend.http_endpoint, "headers": {"X-Tenant": "acme"}}}
                if protocol == "http" else
                {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True},
                          "headers": {"X-Tenant": "acme"}}})
    with serving(service_config(exporters=exporter)) as s:
        ids = send_errors(s, rng, 3)
        wait_for(lambda: {t for t, *_ in backend.spans()} == ids)
        assert backend.span_count() == 6
        assert all(h.get("x-tenant") == "acme" for h in backend.headers)
        if protocol == "http":
            assert all(h.get("content-type") == "application/x-protobuf" for h in backend.headers)


@pytest.mark.parametrize(("protocol", "failure"), [
    ("http", {"http_status": 503}),
    ("http", {"http_status": 429, "retry_after": 0}),
    ("grpc", {"grpc_code": grpc.StatusCode.UNAVAILABLE}),
    ("grpc", {"grpc_code": grpc.StatusCode.RESOURCE_EXHAUSTED, "retry_after": 0.01}),
])
def test_retryable_failures_are_retried_until_delivered(backend, rng, protocol, failure):
    exporter = ({"otlphttp": {"endpoint": backend.http_endpoint, "retry_on_failure": FAST_RETRY}}
                if protocol == "http" else
                {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True},
                          "retry_on_failure": FAST_RETRY}})
    eid = next(iter(exporter))
    backend.fail(3, **failure)
    with serving(service_config(exporters=exporter)) as s:
        ids = send_errors(s, rng, 1)
        wait_for(lambda: {t for t, *_ in backend.spans()} == ids)
        # the backend has the spans before the exporter hears back and counts them
        wait_for(lambda: s.metric(f'otelcol_exporter_sent_spans_total{{exporter="{eid}"}}') == 2)
        assert backend.attempts == 4
        assert s.metric(f'tailsample_exporter_retries_total{{exporter="{eid}"}}') == 3
        assert s.metric(f'otelcol_exporter_send_failed_spans_total{{exporter="{eid}"}}') == 0


@pytest.mark.parametrize(("protocol", "failure"), [
    ("http", {"http_status": 400}),
    ("grpc", {"grpc_code": grpc.StatusCode.INVALID_ARGUMENT}),
    ("grpc", {"grpc_code": grpc.StatusCode.RESOURCE_EXHAUSTED}),  # without RetryInfo: permanent, as the collector
])
def test_permanent_failures_are_counted_and_not_retried(backend, rng, protocol, failure, caplog):
    exporter = ({"otlphttp": {"endpoint": backend.http_endpoint, "retry_on_failure": FAST_RETRY}}
                if protocol == "http" else
                {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True},
                          "retry_on_failure": FAST_RETRY}})
    eid = next(iter(exporter))
    backend.fail(1, **failure)
    with (caplog.at_level(logging.WARNING, logger="tailsample.exporter"),
          serving(service_config(exporters=exporter)) as s):
        send_errors(s, rng, 1)
        wait_for(lambda: s.metric(f'otelcol_exporter_send_failed_spans_total{{exporter="{eid}"}}') == 2)
        assert backend.attempts == 1
        assert s.metric(f'tailsample_exporter_retries_total{{exporter="{eid}"}}') == 0
    assert any("not retryable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_backend_down_for_a_while_loses_nothing(backend, rng, protocol):
    exporter = ({"otlphttp": {"endpoint": backend.http_endpoint, "retry_on_failure": FAST_RETRY, "timeout": "1s"}}
                if protocol == "http" else
                {"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}, "timeout": "1s",
                          "retry_on_failure": FAST_RETRY}})
    eid = next(iter(exporter))
    backend.stop()
    with serving(service_config(exporters=exporter)) as s:
        ids = send_errors(s, rng, 20)
        wait_for(lambda: s.metric(f'tailsample_exporter_retries_total{{exporter="{eid}"}}') >= 20,
                 what="retries while the backend is down")
        assert backend.span_count() == 0
        backend.start()
        wait_for(lambda: {t for t, *_ in backend.spans()} == ids, timeout=20, what="every trace after recovery")
        assert backend.span_count() == 40  # each span once: nothing lost, nothing doubled
        wait_for(lambda: s.metric(f'otelcol_exporter_sent_spans_total{{exporter="{eid}"}}') == 40)
        assert s.metric(f'otelcol_exporter_send_failed_spans_total{{exporter="{eid}"}}') == 0
        assert s.metric(f'otelcol_exporter_enqueue_failed_spans_total{{exporter="{eid}"}}') == 0


def test_full_queue_drops_are_counted_and_logged(backend, rng, caplog):
    exporter = {"otlphttp": {"endpoint": backend.http_endpoint, "retry_on_failure": FAST_RETRY,
                             "sending_queue": {"queue_size": 2, "num_consumers": 1}}}
    backend.stop()
    with (caplog.at_level(logging.WARNING, logger="tailsample.exporter"),
          serving(service_config(exporters=exporter)) as s):
        kept = 'otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor="tail_sampling",' \
               'sampled="true",decision="sampled"}'
        # one trace at a time, each decided before the next: one batch in flight (retrying), two queued, and
        # the other three dropped, and counted
        for i in range(6):
            send_errors(s, rng, 1)
            wait_for(lambda i=i: s.metric(kept) == i + 1)
        wait_for(lambda: s.metric('otelcol_exporter_enqueue_failed_spans_total{exporter="otlphttp"}') == 6)
        assert s.metric('otelcol_exporter_queue_capacity{exporter="otlphttp"}') == 2
        assert s.metric('otelcol_exporter_queue_size{exporter="otlphttp"}') == 2
        backend.start()
        wait_for(lambda: backend.span_count() == 6, timeout=20, what="the in-flight and queued batches")
    assert any("sending queue is full" in r.getMessage() for r in caplog.records)


def test_disabled_retry_gives_up_at_once(backend, rng):
    exporter = {"otlphttp": {"endpoint": backend.http_endpoint, "retry_on_failure": {"enabled": False}}}
    backend.fail(1, http_status=503)
    with serving(service_config(exporters=exporter)) as s:
        send_errors(s, rng, 1)
        wait_for(lambda: s.metric('otelcol_exporter_send_failed_spans_total{exporter="otlphttp"}') == 2)
        assert backend.attempts == 1


def test_several_exporters_get_the_same_data_and_file_formats(backend, rng, tmp_path):
    jpath, ppath = tmp_path / "out.json", tmp_path / "out.pb"
    jpath.write_text("stale\n")  # truncated at start: the collector file exporter without append
    exporters = {"otlphttp": {"endpoint": backend.http_endpoint}, "file/json": {"path": str(jpath)},
                 "file/proto": {"path": str(ppath), "format": "proto"}, "debug": {"verbosity": "normal"}}
    with serving(service_config(exporters=exporters)) as s:
        ids = send_errors(s, rng, 4)
        wait_for(lambda: backend.span_count() == 8)
        for eid in exporters:
            wait_for(lambda eid=eid: s.metric(f'otelcol_exporter_sent_spans_total{{exporter="{eid}"}}') == 8)
    for path, fmt in ((jpath, "json"), (ppath, "proto")):
        from otlp_builders import spans_out

        spans = spans_out(read_payloads(path, fmt))
        assert len(spans) == 8 and {t.hex() for t, _, _ in spans} == ids


def test_batch_processor_after_tail_sampling_merges_payloads(backend, rng):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         processors={"batch": {"send_batch_size": 6, "timeout": "10s"}},
                         pipeline_processors=["tail_sampling", "batch"])
    with serving(cfg) as s:
        ids = send_errors(s, rng, 3)  # 6 spans, decided in 1-3 polls: one batch of 6 once all are in
        wait_for(lambda: backend.span_count() == 6)
        assert len(backend.payloads) == 1
        assert {t for t, *_ in backend.spans()} == ids


def test_backoff_follows_the_collector():
    settings = RetrySettings(initial_interval=1.0, randomization_factor=0.0, multiplier=2.0, max_interval=5.0,
                             max_elapsed_time=0.0)
    b = Backoff(settings, random.Random(1))
    assert [b.next_wait(None) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff(settings).next_wait(30.0) == 30.0  # the server's delay wins when longer
    jitter = Backoff(RetrySettings(initial_interval=1.0, randomization_factor=0.5), random.Random(2))
    assert 0.5 <= jitter.next_wait(None) <= 1.5
    budget = Backoff(RetrySettings(initial_interval=10.0, max_elapsed_time=5.0, randomization_factor=0.0))
    assert budget.next_wait(None) is None  # the next wait would pass max_elapsed_time


def test_gzip_is_used_for_http_bodies(backend, rng, monkeypatch):
    seen = []
    import tailsample.exporters.otlp_http_exporter as mod

    real = mod._gzip
    monkeypatch.setattr(mod, "_gzip", lambda data: seen.append(len(data)) or real(data))
    exporter = {"otlphttp": {"endpoint": backend.http_endpoint}}
    with serving(service_config(exporters=exporter)) as s:
        tid = trace_id(rng)
        body = make_request(service("api"), [make_span(tid, span_id(rng), status=STATUS_ERROR,
                                                       attributes={"pad": "y" * 4000})])
        import urllib.request

        req = urllib.request.Request(s.url(), data=gzip.compress(body),
                                     headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        urllib.request.urlopen(req, timeout=10).close()
        wait_for(lambda: backend.span_count() == 1)
    assert seen and seen[0] > 4000


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_exporter_tls_with_ca_file_to_another_tailsample(rng, tmp_path, protocol):
    """Two services chained: B exports over TLS (its CA file) to A, whose receivers use the server certificate."""
    from service_harness import make_certs

    certs = make_certs(tmp_path)
    tls = {"tls": {"cert_file": str(certs.cert), "key_file": str(certs.key)}}
    out = tmp_path / "a.json"
    a_cfg = service_config(exporters={"file": {"path": str(out)}},
                           policies=[{"name": "all", "type": "always_sample"}], decision_wait="100ms",
                           receivers={"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", **tls},
                                                             "http": {"endpoint": "127.0.0.1:0", **tls}}}})
    with serving(a_cfg) as a:
        if protocol == "http":
            exporter = {"otlphttp": {"traces_endpoint": f"https://{a.address('otlp/http')}/v1/traces",
                                     "tls": {"ca_file": str(certs.ca)}}}
        else:
            exporter = {"otlp": {"endpoint": a.address("otlp/grpc"), "tls": {"ca_file": str(certs.ca)}}}
        with serving(service_config(exporters=exporter)) as b:
            ids = send_errors(b, rng, 3)
            wait_for(lambda: a.metric('otelcol_exporter_sent_spans_total{exporter="file"}') == 6)
    from otlp_builders import spans_out

    assert {t.hex() for t, _, _ in spans_out(read_payloads(out, "json"))} == ids


def test_receiver_traces_url_path_and_response_headers(backend, rng):
    import urllib.request

    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         receivers={"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0",
                                                                    "traces_url_path": "/ingest/traces",
                                                                    "response_headers": {"X-Served-By": "ts"}}}}})
    with serving(cfg) as s:
        tid = trace_id(rng)
        body = make_request(service("api"), [make_span(tid, span_id(rng), status=STATUS_ERROR)])
        req = urllib.request.Request(s.url(path="/ingest/traces"), data=body,
                                     headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and resp.headers["X-Served-By"] == "ts"
        wait_for(lambda: {t for t, *_ in backend.spans()} == {tid.hex()})


# ---- a backend that is down is reported, not silent -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outage_reports_first_failure_then_periodically_then_recovery(caplog):
    """Scenario: an exporter's sends fail (connection refused) for 25 s of injected time, then one succeeds.
    Guarantees: the first failed attempt is logged at once with its error; while the failures go on, one line at
    most per interval, with the failed attempts and distinct batches since the last line, the spans given up and
    the last error; one line at recovery with the totals; nothing after that until the next failure."""
    from tailsample.exporters.base import Outage

    clock = FakeClock()
    outage = Outage("otlphttp", interval=10.0, clock=clock)
    batch_a, batch_b = object(), object()
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    with caplog.at_level(logging.INFO, logger="tailsample.exporter"):
        outage.failed(batch_a, refused, first_attempt=True)
        assert [r.getMessage() for r in caplog.records] == [
            "otlphttp: cannot send to the backend: [Errno 111] Connection refused (retrying; reported every 10s "
            "while it lasts)"]
        for step in range(1, 10):  # one attempt per second, alternating batches: 9 attempts, 1 line at t=+10 s
            clock.now += 1.0
            outage.failed(batch_a if step % 2 else batch_b, refused, first_attempt=step == 2,
                          given_up_spans=3 if step == 5 else 0)
        assert len(caplog.records) == 1
        clock.now += 1.0
        outage.failed(batch_b, OSError("timed out"), first_attempt=False)
        assert len(caplog.records) == 2
        assert caplog.records[1].getMessage() == (
            "otlphttp: backend still failing, down for 10.0s; in the last 10.0s: failed attempts 10, batches 2, "
            "spans given up 3; last error: timed out")
        clock.now += 5.0
        outage.failed(batch_b, refused, first_attempt=False)
        assert len(caplog.records) == 2  # 5 s since the last line: quiet
        clock.now += 10.0
        outage.succeeded()
        assert caplog.records[2].getMessage() == (
            "otlphttp: backend answering again after 25.0s down (failed attempts 12, batches 2); last error was: "
            "[Errno 111] Connection refused")
        assert caplog.records[2].levelno == logging.INFO and caplog.records[1].levelno == logging.WARNING
        assert not outage.down
        outage.succeeded()
        clock.now += 100.0
        outage.failed(batch_a, OSError("reset"), first_attempt=True)
    assert len(caplog.records) == 4 and "cannot send to the backend: reset" in caplog.records[3].getMessage()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_closed_port_is_warned_about_at_once_and_while_down_and_recovery_too(rng, protocol, caplog, monkeypatch):
    """Scenario: the exporter's backend port is closed (nothing listens) when traces are kept; a real backend
    starts on that port later.
    Guarantees: a warning with the connection error comes with the first failed attempt (no waiting for
    retries to run out); "still failing" lines follow while it is down (the interval shortened to 0.3 s); one
    line says it recovered, and every span arrives."""
    from service_harness import OtlpSink, free_port
    from tailsample.exporters import base

    monkeypatch.setattr(base, "OUTAGE_REPORT_INTERVAL", 0.3)
    http_port, grpc_port = free_port(), free_port()
    exporter = ({"otlphttp": {"endpoint": f"http://127.0.0.1:{http_port}", "retry_on_failure": FAST_RETRY,
                              "timeout": "1s"}}
                if protocol == "http" else
                {"otlp": {"endpoint": f"127.0.0.1:{grpc_port}", "tls": {"insecure": True}, "timeout": "1s",
                          "retry_on_failure": FAST_RETRY}})
    eid = next(iter(exporter))

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "tailsample.exporter"]

    with (caplog.at_level(logging.INFO, logger="tailsample.exporter"),
          serving(service_config(exporters=exporter)) as s):
        ids = send_errors(s, rng, 2)
        first = wait_for(lambda: [m for m in messages() if "cannot send to the backend" in m], timeout=5,
                         what="the first failure's warning")
        assert first[0].startswith(f"{eid}: cannot send to the backend: ") and "retrying" in first[0]
        still = wait_for(lambda: [m for m in messages() if "backend still failing" in m], timeout=5,
                         what="a periodic warning")
        assert "failed attempts" in still[0] and "last error: " in still[0]
        assert f"{http_port if protocol == 'http' else grpc_port}" in still[0]  # the error names the address
        backend = OtlpSink(http_port=http_port, grpc_port=grpc_port)
        try:
            wait_for(lambda: {t for t, *_ in backend.spans()} == ids, timeout=20, what="every trace after recovery")
            wait_for(lambda: [m for m in messages() if "backend answering again" in m], timeout=5,
                     what="the recovery line")
        finally:
            backend.close()
    assert len([m for m in messages() if "cannot send to the backend" in m]) == 1
