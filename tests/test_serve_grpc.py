"""The OTLP/gRPC receiver of `tailsample serve`, driven by a raw grpcio client: status codes, RetryInfo under
backpressure, message size limit, gzip, bearer auth, and TLS."""

from __future__ import annotations

import grpc
import pytest

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import make_certs, service_config, serving, sink, wait_for
from tailsample.collector.otlp_status import decode_status

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def error_trace(rng) -> tuple[bytes, bytes]:
    tid = trace_id(rng)
    return tid, make_request(service("checkout"), [make_span(tid, span_id(rng), status=STATUS_ERROR)])


def export(target: str, payload: bytes, *, metadata=(), compression=None, credentials=None) -> bytes:
    channel = (grpc.secure_channel(target, credentials) if credentials is not None
               else grpc.insecure_channel(target))
    with channel:
        return channel.unary_unary(METHOD)(payload, timeout=10, metadata=metadata, compression=compression)


@pytest.fixture
def backend():
    with sink() as s:
        yield s


def test_export_ok_gzip_and_malformed(backend, rng):
    cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}})
    with serving(cfg) as s:
        target = s.address("otlp/grpc")
        t1, p1 = error_trace(rng)
        t2, p2 = error_trace(rng)
        assert export(target, p1) == b""
        assert export(target, p2, compression=grpc.Compression.Gzip) == b""
        with pytest.raises(grpc.RpcError) as info:
            export(target, b"\x0a\x05\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in info.value.details()
        wait_for(lambda: {t for t, *_ in backend.spans()} == {t1.hex(), t2.hex()})
        assert s.metric('otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}') == 2
        wait_for(lambda: s.metric('otelcol_exporter_sent_spans_total{exporter="otlp"}') == 2)


def test_a_message_over_several_frames_is_taken_whole(backend, rng):
    """2.5 MiB in one request, past the largest DATA frame a client may send (1 MiB): it comes in several frames and
    is gathered before it is read; the small one after it is read from its one frame, as it came."""
    cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}})
    with serving(cfg) as s:
        target = s.address("otlp/grpc")
        tid = trace_id(rng)
        ids = [span_id(rng) for _ in range(10)]
        blob = {"blob": "x" * (256 << 10)}
        big = make_request(service("checkout"), [make_span(tid, i, status=STATUS_ERROR, attributes=blob) for i in ids])
        assert len(big) > 5 << 19
        assert export(target, big) == b""
        t2, small = error_trace(rng)
        assert export(target, small) == b""
        big_spans = {(tid.hex(), i.hex()) for i in ids}
        wait_for(lambda: {(t, sid) for t, sid, *_ in backend.spans()} >= big_spans
                 and any(t == t2.hex() for t, *_ in backend.spans()))
        assert {(t, sid) for t, sid, *_ in backend.spans() if t == tid.hex()} == big_spans
        assert s.metric('otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}') == 11


def test_message_over_max_recv_msg_size_is_resource_exhausted(backend, rng):
    cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
                         receivers={"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0",
                                                                    "max_recv_msg_size_mib": 1}}}})
    with serving(cfg) as s:
        tid = trace_id(rng)
        big = make_request(service("x"), [make_span(tid, span_id(rng), attributes={"blob": "x" * (1 << 20)})])
        with pytest.raises(grpc.RpcError) as info:
            export(s.address("otlp/grpc"), big)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_backpressure_is_resource_exhausted_with_retry_info(backend, rng):
    cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
                         decision_wait="5s", tail_sampling={"num_traces": 1, "block_on_overflow": True})
    with serving(cfg) as s:
        target = s.address("otlp/grpc")
        export(target, error_trace(rng)[1])
        with pytest.raises(grpc.RpcError) as info:
            export(target, error_trace(rng)[1])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = dict(info.value.trailing_metadata())["grpc-status-details-bin"]
        status = decode_status(details)
        assert status.retry_after == 1.0 and "num_traces" in status.message
        assert s.metric('otelcol_receiver_refused_spans_total{receiver="otlp",transport="grpc"}') == 1


def test_bearer_token_and_tls(backend, rng, tmp_path):
    certs = make_certs(tmp_path)
    cfg = service_config(
        exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
        receivers={"otlp": {"protocols": {"grpc": {
            "endpoint": "127.0.0.1:0", "auth": {"authenticator": "bearertokenauth"},
            "tls": {"cert_file": str(certs.cert), "key_file": str(certs.key)}}}}},
        extensions={"bearertokenauth": {"token": "t0ken"}}, service_extensions=["bearertokenauth"])
    with serving(cfg) as s:
        target = s.address("otlp/grpc")
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        tid, payload = error_trace(rng)
        with pytest.raises(grpc.RpcError) as info:
            export(target, payload, credentials=creds)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError):  # plaintext to a TLS port
            export(target, payload)
        export(target, payload, credentials=creds, metadata=(("authorization", "Bearer t0ken"),))
        wait_for(lambda: {t for t, *_ in backend.spans()} == {tid.hex()})


def test_gzip_bomb_over_grpc_is_refused_after_decompression_limit(backend, rng):
    cfg = service_config(exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
                         receivers={"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0",
                                                                    "max_recv_msg_size_mib": 1}}}})
    with serving(cfg) as s:
        tid = trace_id(rng)
        # 8 MiB of zeros: about 8 kB on the wire with gzip, 8 times the limit once inflated
        bomb = make_request(service("x"), [make_span(tid, span_id(rng), attributes={"blob": "\0" * (8 << 20)})])
        with pytest.raises(grpc.RpcError) as info:
            export(s.address("otlp/grpc"), bomb, compression=grpc.Compression.Gzip)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok_tid, ok = error_trace(rng)
        export(s.address("otlp/grpc"), ok, compression=grpc.Compression.Gzip)
        wait_for(lambda: {t for t, *_ in backend.spans()} == {ok_tid.hex()})


def test_rejections_unknown_method_and_connections_are_counted(backend, rng):
    """Scenario: the Rust gRPC server under a message over its size, a malformed one, a call without the token, an
    unknown method and a connection over `max_connections`. Guarantees: each gets its status (UNIMPLEMENTED for the
    method), the receiver's rejected-requests counter has its reason, and the `otlp/grpc` listener counts its
    connections and refusals."""
    import socket

    cfg = service_config(
        exporters={"otlp": {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}}},
        receivers={"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 1,
                                                   "max_connections": 2,
                                                   "auth": {"authenticator": "bearertokenauth"}}}}},
        extensions={"bearertokenauth": {"token": "t0ken"}}, service_extensions=["bearertokenauth"])
    token = (("authorization", "Bearer t0ken"),)
    with serving(cfg) as s:
        target = s.address("otlp/grpc")
        host, port = target.rsplit(":", 1)
        big = make_request(service("x"), [make_span(trace_id(rng), span_id(rng), attributes={"b": "x" * (2 << 20)})])
        cases = [(big, token, grpc.StatusCode.RESOURCE_EXHAUSTED), (b"\x0a\x05\xff", token,
                                                                     grpc.StatusCode.INVALID_ARGUMENT),
                 (error_trace(rng)[1], (), grpc.StatusCode.UNAUTHENTICATED)]
        for payload, metadata, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                export(target, payload, metadata=metadata)
            assert info.value.code() == code
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        open_key = 'tailsample_listener_open_connections{listener="otlp/grpc"}'
        wait_for(lambda: s.metric(open_key) == 0)  # the calls' channels are closed (late under load)
        held = [socket.create_connection((host, int(port))) for _ in range(2)]
        wait_for(lambda: s.metric(open_key) == 2)
        extra = socket.create_connection((host, int(port)))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # over max_connections: closed at once
        for sock in (*held, extra):
            sock.close()
        key = 'tailsample_receiver_rejected_requests_total{receiver="otlp",transport="grpc",reason="%s"}'
        wait_for(lambda: s.metric('tailsample_listener_refused_connections_total{listener="otlp/grpc"}') == 1)
        assert [s.metric(key % r) for r in ("too_large", "malformed", "unauthenticated")] == [1, 1, 1]
        wait_for(lambda: s.metric(open_key) == 0)
