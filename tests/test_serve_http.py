"""The OTLP/HTTP receiver of `tailsample serve`: every answer the OTLP specification asks for, and that bad
requests cost nothing to the traces sent before and after them."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
import zlib
from email.message import Message

import pytest

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample.collector.otlp_status import decode_status

PROTO = {"Content-Type": "application/x-protobuf"}


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """(status, headers (names case-insensitive, as HTTP has them), body)."""
    req = urllib.request.Request(url, data=body, headers=headers if headers is not None else PROTO, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def error_trace(rng, name: str = "checkout") -> tuple[bytes, bytes]:
    tid = trace_id(rng)
    root = span_id(rng)
    payload = make_request(service(name), [make_span(tid, root, name="GET /cart"),
                                           make_span(tid, span_id(rng), parent=root, name="db", status=STATUS_ERROR)])
    return tid, payload


def boring_trace(rng) -> tuple[bytes, bytes]:
    tid = trace_id(rng)
    return tid, make_request(service("cart"), [make_span(tid, span_id(rng), name="GET /health")])


@pytest.fixture
def backend():
    with sink() as s:
        yield s


@pytest.fixture
def served(backend):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}})
    with serving(cfg) as s:
        yield s


def kept_traces(backend) -> set[str]:
    return {t for t, *_ in backend.spans()}


def test_protobuf_json_and_gzip_bodies_are_accepted_and_errors_kept(served, backend, rng):
    t1, p1 = error_trace(rng)
    t2, p2 = error_trace(rng)
    t3, p3 = error_trace(rng)
    _, p4 = boring_trace(rng)
    status, headers, body = post(served.url(), p1)
    assert (status, body) == (200, b"")
    assert headers["Content-Type"].startswith("application/x-protobuf")
    status, _, body = post(served.url(), gzip.compress(p2), {**PROTO, "Content-Encoding": "gzip"})
    assert status == 200
    from tailsample.collector.fileformat import proto_to_json

    status, headers, body = post(served.url(), proto_to_json(p3).encode(), {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {})
    assert headers["Content-Type"].startswith("application/json")
    assert post(served.url(), p4)[0] == 200
    wait_for(lambda: kept_traces(backend) == {t1.hex(), t2.hex(), t3.hex()}, what="the three error traces")
    assert backend.span_count() == 6  # whole: root and child of each
    m = served.metrics()
    assert m['otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}'] == 7
    wait_for(lambda: served.metric('otelcol_exporter_sent_spans_total{exporter="otlphttp"}') == 6)


@pytest.mark.parametrize(("body", "headers", "status", "needle", "reason"), [
    (b"\x0a\x05\xff\xff", PROTO, 400, "malformed", "malformed"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', {"Content-Type": "application/json"},
     400, "traceId", "malformed"),
    (b"{not json", {"Content-Type": "application/json"}, 400, "JSON", "malformed"),
    (b"hello", {"Content-Type": "text/plain"}, 415, "Content-Type", "unsupported_media_type"),
    (b"hello", {}, 415, "Content-Type", "unsupported_media_type"),
    (b"x", {**PROTO, "Content-Encoding": "br"}, 415, "Content-Encoding", "unsupported_encoding"),
    (b"not gzip at all", {**PROTO, "Content-Encoding": "gzip"}, 400, "gzip", "malformed"),
    (gzip.compress(b"\x0a\x00" * 10)[:-6], {**PROTO, "Content-Encoding": "gzip"}, 400, "truncated", "malformed"),
])
def test_bad_requests_get_their_status_and_message_and_lose_nothing(served, backend, rng, body, headers, status,
                                                                     needle, reason):
    before_tid, before = error_trace(rng)
    after_tid, after = error_trace(rng)
    assert post(served.url(), before)[0] == 200
    got, resp_headers, resp = post(served.url(), body, headers)
    assert got == status
    if "json" in resp_headers.get("Content-Type", ""):
        message = json.loads(resp)["message"]
    else:
        message = decode_status(resp).message
    assert needle.lower() in message.lower(), message
    assert post(served.url(), after)[0] == 200
    wait_for(lambda: kept_traces(backend) == {before_tid.hex(), after_tid.hex()}, what="traces around the bad one")
    key = f'tailsample_receiver_rejected_requests_total{{receiver="otlp",transport="http",reason="{reason}"}}'
    assert served.metric(key) == 1


def test_oversized_and_gzip_bomb_bodies_get_413_without_inflating(backend, rng):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         receivers={"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0",
                                                                    "max_request_body_size": 100_000}}}})
    with serving(cfg) as s:
        tid, ok = error_trace(rng)
        # a declared Content-Length over the limit
        status, _, body = post(s.url(), b"\x00" * 100_001)
        assert status == 413 and "max_request_body_size" in decode_status(body).message
        # a bomb: 50 MB of zeros in about 50 kB
        bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = bomb.compress(b"\x00" * 50_000_000) + bomb.flush()
        assert len(data) < 100_000
        status, _, body = post(s.url(), data, {**PROTO, "Content-Encoding": "gzip"})
        # the message comes from the bounded inflation: it stopped one byte past the limit
        assert status == 413 and "decompressed body exceeds" in decode_status(body).message
        assert post(s.url(), ok)[0] == 200
        wait_for(lambda: kept_traces(backend) == {tid.hex()})
        key = 'tailsample_receiver_rejected_requests_total{receiver="otlp",transport="http",reason="too_large"}'
        assert s.metric(key) == 2


def test_chunked_body_over_the_limit_is_refused(backend):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         receivers={"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0",
                                                                    "max_request_body_size": 1000}}}})
    with serving(cfg) as s:
        def chunks():
            for _ in range(10):
                yield b"\x00" * 500

        req = urllib.request.Request(s.url(), data=chunks(), headers={**PROTO, "Transfer-Encoding": "chunked"},
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 413


def test_other_signals_are_not_found(served):
    status, _, body = post(served.url(path="/v1/metrics"), b"")
    assert status == 404 and "traces only" in decode_status(body).message


def test_backpressure_answers_503_with_retry_after_and_takes_nothing(backend, rng):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, decision_wait="2s",
                         tail_sampling={"num_traces": 2, "block_on_overflow": True})
    with serving(cfg) as s:
        payloads = [error_trace(rng) for _ in range(3)]
        assert post(s.url(), payloads[0][1])[0] == 200
        assert post(s.url(), payloads[1][1])[0] == 200
        status, headers, body = post(s.url(), payloads[2][1])
        assert status == 503
        assert headers["Retry-After"] == "1"
        st = decode_status(body)
        assert "num_traces" in st.message and st.retry_after == 1.0
        assert s.metric('otelcol_receiver_refused_spans_total{receiver="otlp",transport="http"}') == 2
        # once the first two are decided, the retry gets in and the third trace is kept too
        wait_for(lambda: post(s.url(), payloads[2][1])[0] == 200, timeout=10, interval=0.2)
        wait_for(lambda: kept_traces(backend) == {t.hex() for t, _ in payloads}, timeout=10)


def test_bearer_token_auth(backend, rng, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    cfg = service_config(
        exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
        receivers={"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0",
                                                   "auth": {"authenticator": "bearertokenauth"}}}}},
        extensions={"bearertokenauth": {"filename": str(token_file)}}, service_extensions=["bearertokenauth"])
    with serving(cfg) as s:
        tid, payload = error_trace(rng)
        status, resp_headers, _ = post(s.url(), payload)
        assert status == 401 and resp_headers["WWW-Authenticate"] == "Bearer"
        assert post(s.url(), payload, {**PROTO, "Authorization": "Bearer wrong"})[0] == 401
        assert post(s.url(), payload, {**PROTO, "Authorization": "Bearer s3cret"})[0] == 200
        # a rotated token takes effect without a restart
        time.sleep(0.01)
        token_file.write_text("n3w")
        import os

        os.utime(token_file, (time.time() + 5, time.time() + 5))
        assert post(s.url(), payload, {**PROTO, "Authorization": "Bearer s3cret"})[0] == 401
        assert post(s.url(), payload, {**PROTO, "Authorization": "Bearer n3w"})[0] == 200
        wait_for(lambda: kept_traces(backend) == {tid.hex()})
        key = 'tailsample_receiver_rejected_requests_total{receiver="otlp",transport="http",reason="unauthenticated"}'
        assert s.metric(key) == 3


def test_memory_limiter_refuses_with_503(backend, rng):
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         processors={"memory_limiter": {"check_interval": "50ms", "limit_mib": 2,
                                                        "spike_limit_mib": 1}},
                         pipeline_processors=["memory_limiter", "tail_sampling"])
    with serving(cfg) as s:
        _, payload = error_trace(rng)
        status, _, body = post(s.url(), payload)
        assert status == 503 and "memory_limiter" in decode_status(body).message
        assert s.metric('tailsample_memory_limiter_refused_payloads_total{processor="memory_limiter"}') >= 1


def test_red_metrics_count_every_span_before_sampling_on_the_prometheus_endpoint(backend, rng):
    """Scenario: `tailsample.red_metrics` on, 3 error traces and 5 boring ones sent, only errors kept.
    Guarantees: the metrics endpoint counts all 11 spans under the spanmetrics connector's names and labels,
    errors included, with a duration histogram whose count equals the calls; the kept spans are the 6 of errors."""
    from tailsample.collector.metrics import parse_text

    cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                         tail_sampling={"tailsample": {"red_metrics": {"max_series": 10}}})
    with serving(cfg) as s:
        for _ in range(3):
            assert post(s.url(), error_trace(rng)[1])[0] == 200
        for _ in range(5):
            assert post(s.url(), boring_trace(rng)[1])[0] == 200
        wait_for(lambda: backend.span_count() == 6, what="the error traces")
        with urllib.request.urlopen(s.url("metrics", "/metrics"), timeout=5) as resp:
            m = parse_text(resp.read().decode())
    lbl = 'processor="tail_sampling",service_name="{}",span_name="{}",span_kind="SPAN_KIND_INTERNAL",status_code="{}"'
    def calls(*labels: str) -> float:
        return m["traces_span_metrics_calls_total{" + lbl.format(*labels) + "}"]

    assert calls("checkout", "GET /cart", "STATUS_CODE_UNSET") == 3
    assert calls("checkout", "db", "STATUS_CODE_ERROR") == 3
    assert calls("cart", "GET /health", "STATUS_CODE_UNSET") == 5
    base = 'processor="tail_sampling",service_name="checkout",span_name="db",span_kind="SPAN_KIND_INTERNAL"'
    assert m["traces_span_metrics_errors_total{" + base + "}"] == 3
    health = lbl.format("cart", "GET /health", "STATUS_CODE_UNSET")
    assert m["traces_span_metrics_duration_milliseconds_count{" + health + "}"] == 5
    assert m["traces_span_metrics_duration_milliseconds_bucket{" + health + ',le="+Inf"}'] == 5
    assert m['tailsample_engine_red_spans_total{processor="tail_sampling"}'] == 11
