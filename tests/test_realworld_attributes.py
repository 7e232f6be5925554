"""The seed's forced-sampling policy on what real instrumentation sends, unchanged.

The spans are shaped exactly as observed from three Flask services instrumented with
opentelemetry-instrumentation-flask and -requests 0.66b1 (SDK 1.45.1), headers captured with
`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=x-force-trace`, with the old HTTP conventions and with
`OTEL_SEMCONV_STABILITY_OPT_IN=http` (the attribute tables below are what they sent). In both, the captured header
arrives as `http.request.header.x_force_trace` = `["true"]` (a string array, dash turned into underscore; the
specification keeps the dash) while the seed's policy names `http.request.header.x-force-trace`. tailsample keeps
such traces by default; `tailsample.strict_reference_matching` restores the reference's reading (an array reads
as "", a key matches only as spelled), under which they are not kept, as by the collector.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import tailsample
from otlp_builders import (
    MS,
    T0,
    AttrValue,
    make_resource_spans,
    make_scope_spans,
    make_span,
    request,
    spans_out,
)
from tailsample.config import default_config_text

FORCED = "forced-sampling-policy"
HEADER_AS_SENT = "http.request.header.x_force_trace"  # what Python instrumentation writes
HEADER_AS_SPECIFIED = "http.request.header.x-force-trace"  # what the spec (and the seed's policy) spell

# Trace IDs whose FNV hash is above the seed's 1 % probabilistic threshold: only the forced policy can keep them
# (the tests check the probabilistic vote, so a wrong choice here fails loudly rather than passing by luck).
TRACE_IDS = [bytes.fromhex(h) for h in ("4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c",
                                        "5b8efff798038103d269b633813fc60c", "d4cda95b652f4a1592b449d5929fda1b")]
FRONTEND = {"service.name": "frontend", "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": "1.45.1"}
FLASK = ("opentelemetry.instrumentation.flask", "0.66b1")
REQUESTS = ("opentelemetry.instrumentation.requests", "0.66b1")

# The SERVER span's attributes as Flask's instrumentation writes them (header excluded).
SERVER_ATTRIBUTES: dict[str, dict[str, AttrValue]] = {
    "old": {
        "http.method": "GET", "http.server_name": "127.0.0.1", "http.scheme": "http",
        "net.host.name": "127.0.0.1:14501", "http.host": "127.0.0.1:14501", "net.host.port": 14501,
        "http.target": "/checkout", "net.peer.ip": "127.0.0.1", "net.peer.port": 51834,
        "http.user_agent": "python-requests/2.32.5", "http.flavor": "1.1", "http.route": "/checkout",
        "http.status_code": 200,
    },
    "stable": {
        "http.request.method": "GET", "url.scheme": "http", "server.address": "127.0.0.1:14501",
        "server.port": 14501, "url.path": "/checkout", "client.address": "127.0.0.1", "client.port": 51834,
        "user_agent.original": "python-requests/2.32.5", "network.protocol.version": "1.1",
        "http.route": "/checkout", "http.response.status_code": 200,
    },
}
# The CLIENT span requests' instrumentation writes for the outgoing call (to cart).
CLIENT_ATTRIBUTES: dict[str, dict[str, AttrValue]] = {
    "old": {"http.method": "POST", "http.url": "http://127.0.0.1:14502/cart",
            "user_agent.original": "python-requests/2.32.5", "http.status_code": 200},
    "stable": {"http.request.method": "POST", "url.full": "http://127.0.0.1:14502/cart",
               "user_agent.original": "python-requests/2.32.5", "server.address": "127.0.0.1",
               "server.port": 14502, "network.peer.address": "127.0.0.1", "network.peer.port": 14502,
               "http.response.status_code": 200, "network.protocol.version": "1.1"},
}


def flask_request(tid: bytes, conventions: str, header: dict[str, AttrValue]) -> bytes:
    """One frontend request as its SDK exports it: the Flask SERVER span (root) with the captured header
    attributes `header`, and the requests CLIENT span under it, each under its instrumentation's scope."""
    server = make_span(tid, name="GET /checkout", kind=Span.SpanKind.SPAN_KIND_SERVER, start=T0, duration_ms=42,
                       attributes={**SERVER_ATTRIBUTES[conventions], **header})
    client = make_span(tid, parent=server.span_id, name="POST", kind=Span.SpanKind.SPAN_KIND_CLIENT,
                       start=T0 + 5 * MS, duration_ms=30, attributes=CLIENT_ATTRIBUTES[conventions])
    return request(make_resource_spans(FRONTEND, [make_scope_spans([client], scope=REQUESTS),
                                                  make_scope_spans([server], scope=FLASK)]))


def seed_config(*, strict: bool) -> tailsample.Config:
    """The bundled seed configuration, unchanged, or with only `tailsample.strict_reference_matching` added."""
    doc = yaml.safe_load(default_config_text())
    if strict:
        doc["processors"]["tail_sampling"]["tailsample"] = {"strict_reference_matching": True}
    return tailsample.Config.from_dict(doc)


def decide(cfg: tailsample.Config, payloads: list[bytes]) -> tuple[tailsample.Engine, list[bytes]]:
    """Ingest at t=0 and poll once decision_wait (10 s in the seed) has passed, as `serve` does."""
    eng = tailsample.Engine(cfg)
    for p in payloads:
        eng.ingest(p, now=0.0)
    return eng, eng.poll(now=cfg.decision_wait + 1.0)


def explain(eng: tailsample.Engine, tid: bytes) -> dict[str, Any]:
    e = eng.explain(tid)
    assert e["state"] == "decided", e
    assert e["votes"]["probabilistic-policy"] == "not_sampled", "pick another trace ID: this one is in the 1 %"
    assert e["votes"]["errors-policy"] == e["votes"]["latency-policy"] == "not_sampled"
    return e


@pytest.mark.parametrize("conventions", ["old", "stable"])
def test_seed_policy_keeps_the_forced_flask_trace(conventions: str) -> None:
    """Scenario: the seed's YAML, unchanged; a Flask request with `x-force-trace: true` captured as Python's
    instrumentation sends it (`http.request.header.x_force_trace = ["true"]`), with a plain request beside it.
    Guarantees: the forced trace is kept whole, by `forced-sampling-policy` (explain, policy_stats); the plain
    one is not."""
    forced, plain = TRACE_IDS[0], TRACE_IDS[1]
    eng, out = decide(seed_config(strict=False), [flask_request(forced, conventions, {HEADER_AS_SENT: ["true"]}),
                                                  flask_request(plain, conventions, {})])
    assert sorted(tid for tid, _, _ in spans_out(out)) == [forced, forced]
    e = explain(eng, forced)
    assert (e["outcome"], e["decided_by"], e["votes"][FORCED]) == ("sampled", FORCED, "sampled")
    assert explain(eng, plain)["outcome"] == "not_sampled"
    stats = eng.policy_stats()[FORCED]
    assert (stats["sampled"], stats["not_sampled"], stats["decided"], stats["errors"]) == (1, 1, 1, 0)


@pytest.mark.parametrize("conventions", ["old", "stable"])
def test_strict_reference_matching_does_not_keep_it(conventions: str) -> None:
    """Scenario: the same forced request under the seed's YAML with `tailsample: {strict_reference_matching:
    true}`. Guarantees: not kept, as the collector's `string_attribute` does not (it reads the array as "" and
    looks up the key only as spelled); the switch shows in the normalized configuration."""
    cfg = seed_config(strict=True)
    assert cfg.normalized()["tailsample"]["strict_reference_matching"] is True
    assert seed_config(strict=False).normalized()["tailsample"]["strict_reference_matching"] is False
    tid = TRACE_IDS[0]
    eng, out = decide(cfg, [flask_request(tid, conventions, {HEADER_AS_SENT: ["true"]})])
    assert out == []
    e = explain(eng, tid)
    assert (e["outcome"], e["votes"][FORCED]) == ("not_sampled", "not_sampled")
    assert eng.policy_stats()[FORCED]["sampled"] == 0


@pytest.mark.parametrize(
    ("header", "kept", "kept_strict"),
    [
        pytest.param({HEADER_AS_SENT: ["true"]}, True, False, id="python-instrumentation"),
        pytest.param({HEADER_AS_SPECIFIED: ["true"]}, True, False, id="spec-spelling-array"),
        pytest.param({HEADER_AS_SPECIFIED: "true"}, True, True, id="spec-spelling-string"),
        pytest.param({HEADER_AS_SENT: "true"}, True, False, id="underscores-string"),
        pytest.param({HEADER_AS_SENT: ["false", "true"]}, True, False, id="header-sent-twice"),
        pytest.param({HEADER_AS_SENT: ["false"]}, False, False, id="header-false"),
        pytest.param({HEADER_AS_SENT: ["TRUE"]}, False, False, id="values-are-exact"),
        pytest.param({HEADER_AS_SENT: []}, False, False, id="empty-array"),
        pytest.param({HEADER_AS_SENT: [True]}, False, False, id="bool-element-is-not-a-string"),
        pytest.param({"http.request.header.x_force_trace_id": ["true"]}, False, False, id="another-header"),
        pytest.param({}, False, False, id="no-header"),
    ],
)
def test_header_shapes(header: dict[str, AttrValue], kept: bool, kept_strict: bool) -> None:
    """Scenario: the seed's policy on one Flask request whose captured header takes each shape SDKs send.
    Guarantees: kept by default when any string element (or the string) equals "true" under either spelling;
    with the strict switch only the string under the policy's own spelling is kept."""
    tid = TRACE_IDS[2]
    for strict, want in ((False, kept), (True, kept_strict)):
        eng, out = decide(seed_config(strict=strict), [flask_request(tid, "old", header)])
        assert bool(out) == want, f"strict={strict}"
        assert explain(eng, tid)["votes"][FORCED] == ("sampled" if want else "not_sampled")


def test_ottl_indexes_the_captured_header() -> None:
    """Scenario: an `ottl_condition` reading the header's first element in the specification's spelling,
    `attributes["http.request.header.x-force-trace"][0] == "true"`, on Python instrumentation's span.
    Guarantees: kept (the key's underscore spelling is read, the array indexed); under the strict switch the key
    is read only as spelled, absent, so nil, and the trace is not kept."""
    def config(strict: bool) -> tailsample.Config:
        return tailsample.Config.from_dict({
            "decision_wait": "10s",
            "tailsample": {"strict_reference_matching": strict},
            "policies": [{"name": "forced-ottl", "type": "ottl_condition", "ottl_condition": {
                "span": [f'attributes["{HEADER_AS_SPECIFIED}"][0] == "true"']}}],
        })

    tid = TRACE_IDS[3]
    payload = flask_request(tid, "stable", {HEADER_AS_SENT: ["true"]})
    eng, out = decide(config(False), [payload])
    assert len(spans_out(out)) == 2
    assert eng.explain(tid)["decided_by"] == "forced-ottl"
    eng, out = decide(config(True), [payload])
    assert out == []
    assert eng.policy_stats()["forced-ottl"]["errors"] == 0
