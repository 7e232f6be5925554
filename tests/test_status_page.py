"""The status page of `tailsample serve` (issue 23): `/status` on the metrics endpoint, its JSON (`/status/data`),
its trace lookup and its access rules. Traffic is real OpenTelemetry SDK spans (tests/sdk_traffic.py) over
OTLP/HTTP. The browser test (a real Chromium) and the Prometheus tests are in test_status_browser.py and
test_status_prometheus.py."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from sdk_traffic import Traffic, make_traffic
from service_harness import OtlpSink, ServiceThread, service_config, serving, sink, wait_for
from tailsample.collector.auth import BearerTokenAuth
from tailsample.collector.metrics import Registry
from tailsample.collector.settings import BearerTokenAuthExtension, DebugEndpointsExtension
from tailsample.service.debug import DebugGate
from tailsample.ui import status
from tailsample.ui.status import TOTALS, StatusPage, is_loopback, parse_families


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None),
                                    timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def traffic_into(s: ServiceThread, n: int = 16) -> Traffic:
    t = make_traffic(lambda _name: OTLPSpanExporter(endpoint=s.url()), n=n)
    t.shutdown()
    # every trace decided (decision_wait 200 ms): the numbers stop moving
    wait_for(lambda: s.metric('tailsample_engine_traces_in_memory{processor="tail_sampling"}') == 0
             and s.metric('tailsample_engine_traces_received_total{processor="tail_sampling"}') >= 2 * n,
             what="every trace decided")
    return t


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServiceThread, OtlpSink, Traffic]]:
    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                             processors={"memory_limiter": {"check_interval": "1s", "limit_mib": 4000,
                                                            "spike_limit_mib": 500}},
                             pipeline_processors=["memory_limiter", "tail_sampling"])
        with serving(cfg) as s:
            yield s, backend, traffic_into(s)


def test_page_renders_with_its_numbers_and_assets(served: tuple[ServiceThread, OtlpSink, Traffic]) -> None:
    """Scenario: a browser asks for /status on a loopback metrics address with no tailsample_debug extension.
    Guarantees: 200 HTML with the headline tiles filled in from the same numbers as /metrics, a CSP that allows
    nothing from outside, and its script and stylesheet served from the package (no CDN)."""
    s, _, _ = served
    base = f"http://{s.address('metrics')}"
    code, headers, body = fetch(base + "/status")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    accepted = s.metric('otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}')
    assert accepted == 16 * 6
    assert re.search(rf'data-key="spans_in">{accepted:,.0f}<', page)
    assert 'src="/status/assets/status.js"' in page and "http://" not in page.split("<body>")[1].replace(
        'href="/metrics"', "")
    for name, ctype in status.ASSETS.items():
        code, headers, asset = fetch(f"{base}/status/assets/{name}")
        assert code == 200 and headers["Content-Type"].startswith(ctype) and len(asset) > 500
        outside = asset.replace(b"http://www.w3.org/2000/svg", b"")  # the SVG namespace, a name, not a fetch
        assert b"http://" not in outside and b"https://" not in outside
    assert fetch(base + "/status/assets/..%2fstatus.py")[0] == 404


def test_data_equals_metrics(served: tuple[ServiceThread, OtlpSink, Traffic]) -> None:
    """Scenario: /status/data and /metrics read while the service is idle. Guarantees: every total equals the sum
    of its metric's series on /metrics; per policy, sampled and not sampled equal the collector-named counts;
    buffers and limits equal their gauges; the propagation-gap graph shows cart → payments broken (cart drops
    the context) and frontend → cart whole; the recently kept traces are the error traces, drawn as trees."""
    s, _, traffic = served
    base = f"http://{s.address('metrics')}"
    families = parse_families(fetch(base + "/metrics")[2].decode())
    data = json.loads(fetch(base + "/status/data")[2])
    for key, metric in TOTALS.items():
        if key == "memory_rss_bytes":
            continue  # moves between two reads
        assert data["totals"][key] == sum(v for _, v in families.get(metric, [])), key
    assert data["totals"]["spans_in"] == 96 and data["totals"]["traces_in"] == 32
    assert data["totals"]["traces_kept"] == traffic.errors
    (p,) = data["pipelines"]
    assert p["policies"] == [{"policy": "errors", "sampled": traffic.errors, "not_sampled": 32 - traffic.errors,
                              "decided": traffic.errors, "kept_share": traffic.errors / 32}]
    assert p["limit_num_traces"] == s.metric('tailsample_engine_limit_num_traces{processor="tail_sampling"}') > 0
    assert p["decision_wait_s"] == s.metric(
        'tailsample_engine_limit_decision_wait_seconds{processor="tail_sampling"}') == pytest.approx(0.2)
    pairs = {(x["source"], x["destination"]): x for x in p["gaps"]["pairs"]}
    assert pairs["cart", "payments"]["gaps"] == 16 and pairs["frontend", "cart"]["gaps"] == 0
    kept = {k["trace_id"] for k in p["recent_kept"]}
    assert kept and kept <= set(traffic.payments_traces)
    assert all("POST /pay" in k["tree"] and "ERROR" in k["tree"] for k in p["recent_kept"])
    (e,) = data["exporters"]
    assert e["sent_spans"] == s.metric('otelcol_exporter_sent_spans_total{exporter="otlphttp"}') == 2 * traffic.errors
    (lim,) = data["limiters"]
    assert lim["hard_limit_bytes"] == 4000 << 20 and not lim["refusing"]


def test_data_is_cached_a_second_and_rates_follow_traffic(served: tuple[ServiceThread, OtlpSink, Traffic]) -> None:
    """Scenario: many pollers, then more traffic. Guarantees: answers within a second are the same computation
    (same generated_at: the engines are read at most once a second whatever the number of pollers); after
    traffic, spans in per second is positive and the history has points."""
    s, _, _ = served
    url = f"http://{s.address('metrics')}/status/data"
    first = json.loads(fetch(url)[2])
    again = [json.loads(fetch(url)[2])["generated_at"] for _ in range(20)]
    assert set(again) <= {first["generated_at"], *again[-1:]} and len(set(again)) <= 2
    wait_for(lambda: json.loads(fetch(url)[2])["generated_at"] != first["generated_at"], timeout=3,
             what="a fresh computation after a second")
    traffic_into(s, n=4)
    data = wait_for(lambda: (d := json.loads(fetch(url)[2]))["totals"]["spans_in"] == 120 and d, timeout=3,
                    what="the new spans counted")
    assert data["rates"]["spans_in_per_s"] > 0 and data["history"]


def test_trace_lookup(served: tuple[ServiceThread, OtlpSink, Traffic]) -> None:
    """Scenario: the lookup box, with a kept trace, a trace not kept, an unknown ID and a malformed one.
    Guarantees: kept: explained as kept, with its tree; not kept: explained with the policies' votes, no tree;
    unknown: an answer (200, state unknown); malformed: 400 with a message. Without an archive of dropped
    traces every answer says recovery needs one, and the recover action answers 404."""
    s, _, traffic = served
    base = f"http://{s.address('metrics')}/status/trace/"
    data = json.loads(fetch(base.replace("trace/", "data"))[2])
    kept_id = data["pipelines"][0]["recent_kept"][0]["trace_id"]
    code, _, body = fetch(base + kept_id.upper())
    got = json.loads(body)
    assert code == 200 and got["trace_id"] == kept_id
    entry = got["pipelines"]["traces"]
    assert entry["explain"]["outcome"] == "sampled" and "KEPT" in entry["text"][0] and "POST /pay" in entry["tree"]
    assert got["recover"]["available"] is False and "archive" in got["recover"]["note"]
    code, _, body = fetch(base.replace("trace/", "recover/") + kept_id, method="POST")
    assert code == 404 and "archive" in json.loads(body)["error"]
    not_kept = json.loads(fetch(base + traffic.frontend_traces[0])[2])["pipelines"]["traces"]
    assert not_kept["explain"]["outcome"] == "not_sampled" and not_kept["tree"] is None
    assert json.loads(fetch(base + "ab" * 16)[2])["pipelines"]["traces"]["explain"]["state"] == "unknown"
    code, _, body = fetch(base + "xyz")
    assert code == 400 and "32 hex digits" in json.loads(body)["error"]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("", False), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("metrics.example", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_parse_families_unescapes_labels() -> None:
    text = ('# TYPE a_total counter\na_total{x="q\\"uote",y="back\\\\slash"} 3\na_total{x="n\\nl",y=""} 1.5\n'
            'b 7\n')
    assert parse_families(text) == {"a_total": [({"x": 'q"uote', "y": "back\\slash"}, 3.0),
                                                ({"x": "n\nl", "y": ""}, 1.5)], "b": [({}, 7.0)]}


TOKEN = "status-token"


async def _exposed(gate: DebugGate | None) -> list[tuple[str, int, str]]:
    """GETs against the routes an exposed (0.0.0.0) metrics address gets; the test server itself is loopback."""
    page = StatusPage(lambda: "otelcol_receiver_accepted_spans_total 5\n", dict, gate)
    app = web.Application()
    app.add_routes(page.routes("0.0.0.0"))
    out = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path, token in (("/status", None), ("/status/data", None), ("/status/data", TOKEN),
                            ("/status/data", "wrong")):
            r = await client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})
            out.append((path, r.status, await r.text()))
    return out


def test_exposed_address_takes_the_debug_rules() -> None:
    """Scenario: the metrics address bound beyond loopback. Guarantees: without a tailsample_debug extension every
    /status path answers 404 naming the extension; with one, its bearer token is required (401 without, 200 with);
    each request is counted by the debug gate's metric."""
    off = asyncio.run(_exposed(DebugGate(None, None, Registry())))
    assert [code for _, code, _ in off] == [404] * 4
    assert "tailsample_debug" in json.loads(off[0][2])["error"]
    registry = Registry()
    auth = BearerTokenAuth(BearerTokenAuthExtension("bearertokenauth", TOKEN, None))
    on = asyncio.run(_exposed(DebugGate(DebugEndpointsExtension("tailsample_debug", "bearertokenauth"), auth,
                                        registry)))
    assert [code for _, code, _ in on] == [401, 401, 200, 401]
    assert json.loads(on[2][2])["totals"]["spans_in"] == 5
    rendered = registry.render()
    assert 'tailsample_debug_requests_total{endpoint="status_data",outcome="served"} 1' in rendered
    assert 'tailsample_debug_requests_total{endpoint="status_data",outcome="unauthenticated"} 2' in rendered


def test_loopback_address_is_open_without_the_extension() -> None:
    """Scenario: the default, a loopback metrics address, no tailsample_debug. Guarantees: the page answers."""
    def routes_for(host: str) -> list[Any]:
        return StatusPage(str, dict, DebugGate(None, None, Registry())).routes(host)

    assert {r.path for r in routes_for("127.0.0.1")} == {"/status", "/status/data", "/status/trace/{trace_id}",
                                                        "/status/assets/{name}", "/status/recover/{trace_id}"}
    assert [r.path for r in routes_for("")] == ["/status{rest:.*}"]
