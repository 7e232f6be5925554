"""The dashboard and the alerting rules of deploy/ against the real things (issue 23): a real Prometheus
(v0.316.0, built from the Go module proxy) scraping real `tailsample serve` processes under traffic from the real
OpenTelemetry SDK, every dashboard query and every alert expression evaluated through its HTTP API, and
`promtool check rules` / `promtool test rules` on the committed files.

One `tailsample serve` per scenario, each its own scrape job: `healthy`, and one built to fire each alert. Each
alert expression must return a series for its scenario's job and none for `healthy`; Prometheus itself, evaluating
the rule file, must show each alert active (pending: the rules' `for` is minutes) for its scenario.

Skipped unless Prometheus is built (`make test-status`, or TAILSAMPLE_BUILD_PROMETHEUS=1): see
tests/prometheus_fixture.py. `make test-status` also writes docs/dashboard.png (the dashboard's panels drawn from
this Prometheus's answers) with TAILSAMPLE_STATUS_SCREENSHOTS=docs.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from prometheus_fixture import Prometheus, eventually, promtool, running_prometheus
from sdk_traffic import encode, make_traffic
from service_harness import LOOPBACK, OtlpSink, ServedProcess, free_port, service_config, sink
from status_render import DEPLOY, deploy_generator

pytestmark = pytest.mark.prometheus

RATE_INTERVAL = "30s"  # in place of Grafana's $__rate_interval: 30 scrapes at 1 s
TRAFFIC_S = 25.0




GEN = deploy_generator()
MEMORY_LIMITER = {"memory_limiter": {"check_interval": "1s", "limit_mib": 4000, "spike_limit_mib": 500}}
ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
CHECKOUT = {"name": "checkout", "type": "string_attribute",
            "string_attribute": {"key": "http.route", "values": ["/checkout"]}}
NOTHING = {"name": "nothing", "type": "string_attribute", "string_attribute": {"key": "x-force", "values": ["yes"]}}


def scenario_configs(backend: OtlpSink) -> dict[str, dict[str, Any]]:
    """{job: collector config}: `healthy`, and one per alert, named after what it breaks."""
    good = {"otlphttp": {"endpoint": backend.http_endpoint}}

    def cfg(policies: list[dict[str, Any]], *, exporters: dict[str, Any] | None = None, decision_wait: str = "1s",
            tail_sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        return service_config(exporters=exporters or good, policies=policies, decision_wait=decision_wait,
                              processors=MEMORY_LIMITER, pipeline_processors=["memory_limiter", "tail_sampling"],
                              tail_sampling=tail_sampling)

    closed = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    return {
        "healthy": cfg([ERRORS, CHECKOUT]),
        "collapsed": cfg([NOTHING]),  # traffic arrives, nothing kept
        "errors_dropped": cfg([CHECKOUT]),  # frontend traces kept, payments' error traces not
        "evicting": cfg([ERRORS, CHECKOUT], decision_wait="5s", tail_sampling={"num_traces": 8}),
        "refusing": cfg([ERRORS, CHECKOUT], decision_wait="5s",
                        tail_sampling={"num_traces": 8, "block_on_overflow": True}),
        "exporter_failing": cfg([ERRORS, CHECKOUT], exporters={"otlphttp": {
            "endpoint": closed, "retry_on_failure": {"enabled": False}, "timeout": "1s"}}),
        "lagging": cfg([ERRORS, CHECKOUT], decision_wait="1ms"),  # decided on a 10 ms tick: past due each time
    }


# alert -> the scenario built to fire it
FIRES_IN = {
    "TailsampleKeptShareCollapsed": "collapsed",
    "TailsampleErrorTracesNotKept": "errors_dropped",
    "TailsampleTracesEvicted": "evicting",
    "TailsampleRefusingSpans": "refusing",
    "TailsampleExporterFailing": "exporter_failing",
    "TailsampleDecisionLagOverDecisionWait": "lagging",
}


@dataclass
class Run:
    prometheus: Prometheus
    services: dict[str, ServedProcess]
    started: float
    ended: float
    page_answers: list[tuple[str, int, float]]  # (path, status, seconds) of /status requests made under traffic


def _poll_pages(services: dict[str, ServedProcess], stop: threading.Event,
                out: list[tuple[str, int, float]]) -> None:
    """What open status pages do, faster: /status and /status/data of every service, 5 times a second."""
    while not stop.wait(0.2):
        for s in services.values():
            for path in ("/status", "/status/data"):
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://{s.address('metrics')}{path}", timeout=5) as r:
                        r.read()
                        code = r.status
                except OSError:
                    code = 0
                out.append((path, code, time.monotonic() - t0))


def _payloads(n: int) -> list[bytes]:
    """One round of real SDK traffic (frontend → cart → payments, errors in payments) as OTLP requests."""
    exporters: dict[str, InMemorySpanExporter] = {}

    def exporter_for(name: str) -> InMemorySpanExporter:
        exporters[name] = InMemorySpanExporter()
        return exporters[name]

    make_traffic(exporter_for, n=n).shutdown()
    return [encode(e.get_finished_spans()) for e in exporters.values()]


def _send(url: str, payload: bytes) -> None:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/x-protobuf"})
    try:
        urllib.request.urlopen(req, timeout=5).close()
    except OSError:
        pass  # the refusing scenario answers 503/429: that is its point


def _send_all(url: str, payloads: list[bytes]) -> None:
    for p in payloads:
        _send(url, p)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("status-prometheus")
    rules = DEPLOY / "prometheus" / "tailsample-rules.yaml"
    with sink() as backend:
        services: dict[str, ServedProcess] = {}
        try:
            for job, cfg in scenario_configs(backend).items():
                (tmp / job).mkdir()
                services[job] = ServedProcess(cfg, tmp / job)
            with running_prometheus(tmp / "prometheus", {j: s.address("metrics") for j, s in services.items()},
                                    [rules]) as prom:
                eventually(lambda: set(prom.targets_up().values()) == {"up"}, 30, "every target up")
                started = time.time()
                answers: list[tuple[str, int, float]] = []
                stop = threading.Event()
                poller = threading.Thread(target=_poll_pages, args=(services, stop, answers))
                poller.start()
                while time.time() - started < TRAFFIC_S:
                    payloads = _payloads(12)
                    threads = [threading.Thread(target=_send_all, args=(s.url(), payloads))
                               for s in services.values()]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    time.sleep(0.5)
                stop.set()
                poller.join()
                time.sleep(3)  # the last decisions (decision_wait 1 s) and two more scrapes
                yield Run(prom, services, started, time.time(), answers)
        finally:
            for s in services.values():
                s.process.proc.terminate()
            for s in services.values():
                s.process.proc.wait(timeout=60)


def _expr(text: str) -> str:
    return text.replace("$__rate_interval", RATE_INTERVAL)


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    """Scenario: the committed rule file and its unit tests. Guarantees: `promtool check rules` finds every rule
    valid; `promtool test rules` passes (each alert fires on its failing series after its `for`, stays quiet
    before it, and never fires for the healthy series)."""
    checked = promtool("check", "rules", str(DEPLOY / "prometheus" / "tailsample-rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(GEN.ALERTS)} rules found" in checked.stdout
    tested = promtool("test", "rules", "tailsample-rules.test.yaml", cwd=DEPLOY / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_dashboard_query_returns_data(run: Run) -> None:
    """Scenario: every query of every panel of the generated dashboard, evaluated by Prometheus over what it
    scraped. Guarantees: each returns at least one series (no panel reads a metric the service does not
    expose), with a value that is a number."""
    dashboard = json.loads((DEPLOY / "grafana" / "tailsample.json").read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert len(queries) >= 20
    empty = []
    for title, expr in queries:
        got = run.prometheus.query(_expr(expr))
        if not got:
            empty.append(f"{title}: {expr}")
        for series in got:
            float(series["value"][1])
    assert not empty, "queries returning nothing:\n" + "\n".join(empty)


def _jobs(prom: Prometheus, expr: str) -> set[str]:
    return {s["metric"].get("job", "") for s in prom.query(expr)}


@pytest.mark.parametrize("alert", sorted(FIRES_IN))
def test_alert_fires_in_its_scenario_only(run: Run, alert: str) -> None:
    """Scenario: the alert's expression, as committed, evaluated by Prometheus. Guarantees: a series for the
    scenario built to fire it, none for `healthy`; and Prometheus, evaluating the rule file every second, holds
    the alert active (pending until its `for` has passed) for that scenario's job with its runbook."""
    rule = next(a for a in GEN.ALERTS if a.name == alert)
    fired = _jobs(run.prometheus, rule.expr)
    assert FIRES_IN[alert] in fired, f"{alert} did not fire in {FIRES_IN[alert]}: {fired}"
    assert "healthy" not in fired
    active = eventually(lambda: [a for a in run.prometheus.api("alerts")["alerts"]
                                 if a["labels"]["alertname"] == alert
                                 and a["labels"].get("job") == FIRES_IN[alert]], 15, f"{alert} active")
    assert active[0]["state"] in ("pending", "firing") and "runbook" in active[0]["annotations"]


def test_status_page_answers_under_traffic(run: Run) -> None:
    """Scenario: /status and /status/data of every service asked 5 times a second during the traffic (seven
    services, Prometheus scraping each every second, on 2 cores). Guarantees: every answer is a 200, and the
    slowest under a second (the data is computed at most once a second, whatever the number of pollers)."""
    assert len(run.page_answers) > 100
    assert {code for _, code, _ in run.page_answers} == {200}
    assert max(t for _, _, t in run.page_answers) < 1.0


def test_rules_evaluate_without_errors(run: Run) -> None:
    groups = run.prometheus.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {a.name for a in GEN.ALERTS}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_healthy_scenario_is_quiet(run: Run) -> None:
    """Guarantees: no alert is active for the healthy job."""
    active = [a["labels"]["alertname"] for a in run.prometheus.api("alerts")["alerts"]
              if a["labels"].get("job") == "healthy"]
    assert active == []


def test_dashboard_panels_drawn(run: Run, tmp_path: Path) -> None:
    """Scenario: each panel's queries over the run, narrowed to the healthy job, from Prometheus's range API,
    drawn as SVG on one page (Grafana itself is not used: AGPL). Guarantees: every panel has points; with
    TAILSAMPLE_STATUS_SCREENSHOTS set to a directory and a Chromium here, the page is screenshotted there as
    dashboard.png."""
    from status_render import dashboard_preview, only_job, screenshot

    dashboard = json.loads((DEPLOY / "grafana" / "tailsample.json").read_text())
    # the healthy scenario alone, rates over 5 s: the picture of one service in normal operation
    page = dashboard_preview(dashboard, lambda expr: run.prometheus.query_range(
        only_job(expr.replace("$__rate_interval", "5s"), "healthy"), run.started, run.ended, 1.0),
        subtitle=" (job healthy, 25 s of OpenTelemetry SDK traffic, rates over 5 s)")
    out = tmp_path / "dashboard.html"
    out.write_text(page.html)
    assert page.empty_panels == [], page.empty_panels
    target = os.environ.get("TAILSAMPLE_STATUS_SCREENSHOTS")
    if target:
        screenshot(out.as_uri(), Path(target) / "dashboard.png", width=1400, height=page.height)
