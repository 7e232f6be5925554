"""`tailsample serve`'s OTLP/HTTP exporter, gzip on (the collector's default), into a real Jaeger v2: spans the
OpenTelemetry SDK's OTLP exporter sent to the service arrive whole in Jaeger, which inflated the bodies the
engine's zlib-rs compressed.

Skipped unless Jaeger is built (`make test-jaeger`, or TAILSAMPLE_BUILD_JAEGER=1): see tests/jaeger_fixture.py.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

import tailsample.exporters.otlp_http_exporter as otlp_http
from jaeger_fixture import Jaeger, jaeger  # noqa: F401 - the fixture
from sdk_traffic import make_traffic
from service_harness import service_config, serving

pytestmark = pytest.mark.jaeger


def test_gzip_bodies_reach_jaeger_whole(jaeger: Jaeger, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    compressed: list[int] = []
    real = otlp_http._gzip
    monkeypatch.setattr(otlp_http, "_gzip", lambda data: compressed.append(len(data)) or real(data))
    config = service_config(exporters={"otlphttp": {"endpoint": jaeger.otlp_http}},
                            policies=[{"name": "all", "type": "always_sample"}], decision_wait="200ms")
    with serving(config) as s:
        traffic = make_traffic(lambda _: OTLPSpanExporter(endpoint=s.url()), n=8, error_every=4)
        traffic.shutdown()
        # frontend's traces hold frontend's two spans and cart's two; payments' traces its own two
        jaeger.wait_for_spans({**{t: 4 for t in traffic.frontend_traces},
                               **{t: 2 for t in traffic.payments_traces}})
    assert compressed, "no body was large enough to be compressed"
