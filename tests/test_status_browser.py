"""The status page in a real browser (issue 23): Debian's headless Chromium driven by Selenium opens `/status` of a
running `tailsample serve` fed by the real OpenTelemetry SDK. It renders with no console error (its CSP lets
nothing in from outside), shows the numbers /metrics has, redraws itself as traffic arrives, and the lookup box
explains a trace. A screenshot is saved as a test artifact in `.artifacts/status/` (and in
$TAILSAMPLE_STATUS_SCREENSHOTS when set: `make test-status` writes docs/status.png so).

Skipped when Chromium or ChromeDriver is missing, except under CI (tests/status_render.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from sdk_traffic import Traffic, make_traffic
from service_harness import OtlpSink, ServiceThread, service_config, serving, sink, wait_for
from status_render import chromium, full_page_screenshot

ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts" / "status"


def traffic(s: ServiceThread, n: int) -> Traffic:
    t = make_traffic(lambda _name: OTLPSpanExporter(endpoint=s.url()), n=n)
    t.shutdown()
    return t


@pytest.fixture
def served() -> Iterator[tuple[ServiceThread, OtlpSink]]:
    with sink() as backend:
        cfg = service_config(
            exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
            policies=[{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                      {"name": "checkout-sample", "type": "probabilistic",
                       "probabilistic": {"sampling_percentage": 25}}],
            processors={"memory_limiter": {"check_interval": "1s", "limit_mib": 4000, "spike_limit_mib": 500}},
            pipeline_processors=["memory_limiter", "tail_sampling"])
        with serving(cfg) as s:
            yield s, backend


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_status_page_in_chromium(served: tuple[ServiceThread, OtlpSink]) -> None:
    """Scenario: 24 requests through frontend → cart → payments (cart drops the context, a payment in four fails),
    the page opened, 12 more requests, then three lookups. Guarantees: the tiles show /metrics' totals; the policy
    table and the gap graph (cart → payments drawn broken) are there; after more traffic the page shows the new
    totals and a spans-in rate without a reload; a kept trace's lookup shows it KEPT with its tree, a malformed ID
    the error; no console errors; a screenshot saved."""
    from selenium.webdriver.common.by import By

    s, _ = served
    first = traffic(s, 24)
    spans = 'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}'
    wait_for(lambda: s.metric('tailsample_engine_traces_in_memory{processor="tail_sampling"}') == 0, what="decided")
    base = f"http://{s.address('metrics')}"
    with chromium(1280, 2200) as driver:
        driver.get(base + "/status")
        assert driver.title == "tailsample status"
        wait_for(lambda: text(driver, '[data-key="spans_in"]') == f"{s.metric(spans):,.0f}", timeout=10,
                 what="the spans-in tile equal to /metrics")
        assert text(driver, '[data-key="spans_in"]') == "144"
        kept = s.metric('tailsample_engine_spans_sampled_total{processor="tail_sampling"}')
        assert text(driver, '[data-key="spans_kept"]') == f"{kept:,.0f}"
        policies = text(driver, "section.pipeline table")
        assert "errors" in policies and "checkout-sample" in policies
        broken = driver.find_elements(By.CSS_SELECTOR, "svg.graph line.broken")
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "svg.graph text.name")]
        assert len(broken) == 1 and sorted(labels) == ["cart", "frontend", "payments"]
        assert "24/24 lost" in text(driver, "svg.graph")
        trees = driver.find_elements(By.CSS_SELECTOR, "details.trace")
        assert trees

        stamp = driver.find_element(By.ID, "updated").get_attribute("data-generated")
        traffic(s, 12)
        wait_for(lambda: text(driver, '[data-key="spans_in"]') == "216", timeout=15,
                 what="the page redrawn with the new spans")
        assert driver.find_element(By.ID, "updated").get_attribute("data-generated") != stamp
        wait_for(lambda: text(driver, '[data-key="spans_in_per_s"]') not in ("-", ""), timeout=10,
                 what="a spans-in rate")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#rates polyline"), timeout=10,
                 what="the throughput chart drawn")

        kept_id = first.payments_traces[3]  # the fourth payment failed: kept by the errors policy
        box = driver.find_element(By.ID, "trace-id")
        box.send_keys(kept_id)
        box.submit()
        wait_for(lambda: "KEPT" in text(driver, "#lookup-result"), timeout=10, what="the lookup answer")
        answer = text(driver, "#lookup-result")
        assert kept_id in answer and "POST /pay" in answer and "archive" in answer
        box.clear()
        box.send_keys("not-a-trace-id")
        box.submit()
        wait_for(lambda: "32 hex digits" in text(driver, "#lookup-result"), timeout=10, what="the lookup error")
        box.clear()
        box.send_keys(kept_id)
        box.submit()
        wait_for(lambda: "KEPT" in text(driver, "#lookup-result"), timeout=10, what="the lookup answer again")
        driver.find_element(By.CSS_SELECTOR, "details.trace summary").click()

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "/status/trace/not-a-trace-id" not in e["message"]]  # the 400 asked for above
        assert severe == [], severe
        full_page_screenshot(driver, ARTIFACTS / "status.png", 1280)
        target = os.environ.get("TAILSAMPLE_STATUS_SCREENSHOTS")
        if target:
            full_page_screenshot(driver, Path(target) / "status.png", 1280)
