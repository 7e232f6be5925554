"""Live reload: `tailsample serve` re-reads its configuration on SIGHUP and on `POST /debug/reload`, swapping the
tail_sampling policies without losing a buffered trace; a file that fails to load is refused whole.
(The re-fold of buffered traces under new folding policies is proven in rust/core/tests/reload.rs.)"""

from __future__ import annotations

import json
import random
import signal
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from otlp_builders import make_request, make_span, service, span_id, trace_id
from service_harness import LOOPBACK, ServeSubprocess, free_port, service_config, sink, wait_for
from tailsample import Config, Engine
from tailsample.collector.settings import ServiceConfig
from tailsample.incident.explain import describe
from tailsample.service.reload import fixed_changes

TOKEN = "reload-token-0123456789"


def _policies(*tiers: str) -> list[dict[str, Any]]:
    return [{"name": "tiers", "type": "string_attribute",
             "string_attribute": {"key": "tier", "values": list(tiers)}}]


def _config(tiers: tuple[str, ...], ports: dict[str, int], backend: str, **tail: Any) -> dict[str, Any]:
    cfg = service_config(exporters={"otlphttp": {"endpoint": backend}}, policies=_policies(*tiers),
                         decision_wait="1s", tail_sampling=tail or None,
                         extensions={"bearertokenauth": {"token": TOKEN},
                                     "health_check": {"endpoint": f"{LOOPBACK}:{ports['health']}"}},
                         service_extensions=["bearertokenauth", "health_check"],
                         debug={"auth": {"authenticator": "bearertokenauth"}})
    cfg["receivers"]["otlp"]["protocols"] = {"http": {"endpoint": f"{LOOPBACK}:{ports['http']}"}}
    cfg["service"]["telemetry"]["metrics"]["address"] = f"{LOOPBACK}:{ports['metrics']}"
    return cfg


def _send(port: int, tier: str, rng: random.Random) -> tuple[str, list[str]]:
    """One trace of two spans with `tier`; returns (trace ID, span IDs) in hex."""
    tid = trace_id(rng)
    root = span_id(rng)
    spans = [make_span(tid, root, name="GET /", attributes={"tier": tier}),
             make_span(tid, span_id(rng), parent=root, name="db", attributes={"tier": tier})]
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}/v1/traces", data=make_request(service("shop"), spans),
                                 headers={"Content-Type": "application/x-protobuf"})
    urllib.request.urlopen(req, timeout=10).close()
    return tid.hex(), [s.span_id.hex() for s in spans]


def _metric(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a family's series whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in metrics.items()
               if k.split("{")[0] == name and all(w in k for w in want))


def _post_reload(metrics_port: int, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{LOOPBACK}:{metrics_port}/debug/reload", data=b"", method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_sighup_under_steady_traffic_loses_nothing_and_applies_the_new_policies(tmp_path: Path) -> None:
    """Scenario: a serve subprocess keeps `gold` traces; a thread sends gold traces all along. Silver traces are
    decided (not kept), then more silver traces are buffered and the file is rewritten to keep gold and silver,
    and SIGHUP sent before they fall due. Then a broken file and SIGHUP; then a file changing num_traces through
    `POST /debug/reload`; then SIGTERM.
    Guarantees: every gold span reaches the backend exactly once (none lost, none decided twice) across the
    swaps; the silver traces buffered at the swap are kept (judged by the new policies when due), those decided
    before are not; the broken file is refused (failure counted, its error logged once) and the new policies
    keep deciding; the num_traces change is refused naming it, with 422; without the token, 401; the version
    gauge says 2 throughout after the one applied reload."""
    ports = {"http": free_port(), "metrics": free_port(), "health": free_port()}
    rng = random.Random(22)
    with sink() as backend:
        serve = ServeSubprocess(tmp_path, "reload", _config(("gold",), ports, backend.http_endpoint),
                                health_port=ports["health"], metrics_port=ports["metrics"])
        gold_sent: list[str] = []
        stop = threading.Event()

        def gold_traffic() -> None:
            g = random.Random(7)
            while not stop.is_set():
                gold_sent.extend(_send(ports["http"], "gold", g)[1])
                stop.wait(0.01)

        sender = threading.Thread(target=gold_traffic, name="gold")
        sender.start()
        try:
            before = {_send(ports["http"], "silver", rng)[0] for _ in range(10)}
            wait_for(lambda: _metric(serve.metrics(), "tailsample_engine_traces_not_sampled_total") >= 10,
                     timeout=15, what="the first silver traces decided")
            buffered = {_send(ports["http"], "silver", rng)[0] for _ in range(10)}
            serve.config.write_text(yaml.safe_dump(_config(("gold", "silver"), ports, backend.http_endpoint)))
            serve.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _metric(serve.metrics(), "tailsample_config_reloads_total", result="ok") == 1,
                     timeout=5, what="the reload applied")
            m = serve.metrics()
            assert _metric(m, "tailsample_config_version") == 2
            # The buffered traces were taken under the old policies and fall due under the new ones.
            wait_for(lambda: buffered <= {t for t, _, _, _ in backend.spans()}, timeout=15,
                     what="the silver traces buffered at the swap kept")

            # A broken file: refused whole, counted, logged once; the policies in force keep deciding.
            broken = _config(("gold", "silver"), ports, backend.http_endpoint)
            broken["processors"]["tail_sampling"]["policies"].append({"name": "typo", "type": "no_such_type"})
            serve.config.write_text(yaml.safe_dump(broken))
            serve.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _metric(serve.metrics(), "tailsample_config_reloads_total", result="failed") == 1,
                     timeout=5, what="the broken file refused")
            after = {_send(ports["http"], "silver", rng)[0] for _ in range(5)}
            wait_for(lambda: after <= {t for t, _, _, _ in backend.spans()}, timeout=15,
                     what="silver still kept after the refused reload")

            # A setting that cannot change live, over the authenticated endpoint.
            serve.config.write_text(yaml.safe_dump(_config(("gold", "silver"), ports, backend.http_endpoint,
                                                           num_traces=1234)))
            assert _post_reload(ports["metrics"], None)[0] == 401
            status, body = _post_reload(ports["metrics"], TOKEN)
            assert status == 422, body
            assert body["result"] == "failed" and "num_traces" in body["error"], body
            assert body["pipelines"]["traces"]["version"] == 2
            m = serve.metrics()
            assert _metric(m, "tailsample_config_reloads_total", result="failed") == 2
            assert _metric(m, "tailsample_config_version") == 2
        finally:
            stop.set()
            sender.join()
            serve.proc.terminate()
            code = serve.proc.wait(timeout=60)
        log = serve.log.read_text()
        assert code == 0, log[-3000:]
        received = backend.spans()
        span_counts = Counter(s for _, s, _, _ in received)
        assert not [s for s, n in span_counts.items() if n > 1], "a span arrived twice"
        assert set(gold_sent) <= set(span_counts), f"{len(set(gold_sent) - set(span_counts))} gold spans lost"
        assert len(gold_sent) > 50
        kept_traces = {t for t, _, _, _ in received}
        assert not before & kept_traces, "silver traces decided before the swap stay not kept"
        refusals = [line for line in log.splitlines() if "refused" in line and "no_such_type" in line]
        assert len(refusals) == 1, "the broken file's error is logged once"
        assert "configuration reloaded (SIGHUP)" in log


def test_a_reload_of_the_same_file_changes_nothing_and_receivers_are_fixed(tmp_path: Path) -> None:
    """Scenario: the same collector file loaded twice; then with the OTLP receiver's address changed and a
    memory_limiter added. Guarantees: the first has no fixed change; the second names the receiver and the
    processor and the pipeline (a reload would refuse it whole)."""
    cfg = service_config(exporters={"debug": {}})
    a = ServiceConfig.from_yaml(yaml.safe_dump(cfg))
    assert fixed_changes(a, ServiceConfig.from_yaml(yaml.safe_dump(cfg))) == []
    other = json.loads(json.dumps(cfg))
    other["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"{LOOPBACK}:4999"
    other["processors"]["memory_limiter"] = {"check_interval": "1s", "limit_mib": 100}
    other["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", "tail_sampling"]
    other["processors"]["tail_sampling"]["policies"] = _policies("gold")
    changes = fixed_changes(a, ServiceConfig.from_yaml(yaml.safe_dump(other)))
    assert changes == ["receivers.otlp", "processors.memory_limiter", "service.pipelines.traces"]


def test_engine_reload_records_the_version_that_decided() -> None:
    """Scenario: an engine keeps gold; a trace is decided; the engine reloads to keep silver; another is decided.
    Guarantees: `explain` names version 1 and 2 with the policy names of their own configuration, `describe`
    prints the version, and the hash is the same for the same configuration in another engine."""
    rng = random.Random(3)
    e = Engine(Config.from_dict({"decision_wait": "1s", "policies": _policies("gold")}))
    t1 = trace_id(rng)
    e.ingest(make_request(service("shop"), [make_span(t1, attributes={"tier": "gold"})]), now=0.0)
    e.poll(now=2.0)
    silver = Config.from_dict({"decision_wait": "1s", "policies": [
        {"name": "silver", "type": "string_attribute", "string_attribute": {"key": "tier", "values": ["silver"]}}]})
    r = e.reload(silver)
    assert r.changed and r.version.number == 2 and e.config is silver
    t2 = trace_id(rng)
    e.ingest(make_request(service("shop"), [make_span(t2, attributes={"tier": "silver"})]), now=3.0)
    e.poll(now=5.0)
    first, second = e.explain(t1), e.explain(t2)
    assert (first["config_version"], first["decided_by"]) == (1, "tiers")
    assert (second["config_version"], second["decided_by"]) == (2, "silver")
    assert any("configuration version 2" in line for line in describe(second))
    assert Engine(silver).config_version.hash == e.config_version.hash
    assert not e.reload(silver).changed


def test_watch_config_reloads_when_the_file_changes(tmp_path: Path) -> None:
    """Scenario: `serve --watch-config`; the file is rewritten with another policy set, later with the same
    content again. Guarantees: the change is applied without a signal (version 2); rewriting the same content
    is a reload that changes nothing (counted `unchanged`, version still 2)."""
    ports = {"http": free_port(), "metrics": free_port(), "health": free_port()}
    with sink() as backend:
        serve = ServeSubprocess(tmp_path, "watch", _config(("gold",), ports, backend.http_endpoint),
                                health_port=ports["health"], metrics_port=ports["metrics"],
                                args=("--watch-config",))
        try:
            text = yaml.safe_dump(_config(("gold", "silver"), ports, backend.http_endpoint))
            serve.config.write_text(text)
            wait_for(lambda: _metric(serve.metrics(), "tailsample_config_reloads_total", result="ok") == 1,
                     timeout=10, what="the file change applied")
            assert _metric(serve.metrics(), "tailsample_config_version") == 2
            serve.config.write_text(text + "\n")  # same configuration, another size
            wait_for(lambda: _metric(serve.metrics(), "tailsample_config_reloads_total", result="unchanged") == 1,
                     timeout=10, what="the rewrite seen as unchanged")
            assert _metric(serve.metrics(), "tailsample_config_version") == 2
        finally:
            serve.proc.terminate()
            assert serve.proc.wait(timeout=60) == 0, serve.log.read_text()[-3000:]


def test_sighup_under_real_sdk_traffic_judges_buffered_traces_by_the_new_policies(tmp_path: Path) -> None:
    """Scenario: three services instrumented with the OpenTelemetry SDK (`sdk_traffic`: frontend → cart →
    payments, payments losing the context, every 4th payment failing) export over OTLP/HTTP to `tailsample serve`,
    which keeps errors only. A first batch is decided; a second batch is sent, then the file gains a policy on the
    route the SDK's spans carry (`http.route: /checkout`, the frontend's) and SIGHUP comes before the batch falls
    due. Guarantees: the second batch's frontend traces are kept whole (judged by the new policies), the first
    batch's are not (decided before); the error traces of both batches are kept; one reload, version 2."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from sdk_traffic import make_traffic

    ports = {"http": free_port(), "metrics": free_port(), "health": free_port()}
    errors = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    checkout = {"name": "checkout", "type": "string_attribute",
                "string_attribute": {"key": "http.route", "values": ["/checkout"]}}

    def config(policies: list[dict[str, Any]]) -> dict[str, Any]:
        cfg = _config((), ports, backend.http_endpoint)
        cfg["processors"]["tail_sampling"]["policies"] = policies
        cfg["processors"]["tail_sampling"]["decision_wait"] = "3s"
        return cfg

    with sink() as backend:
        serve = ServeSubprocess(tmp_path, "reload-sdk", config(errors), health_port=ports["health"],
                                metrics_port=ports["metrics"])
        endpoint = f"http://{LOOPBACK}:{ports['http']}/v1/traces"
        try:
            first = make_traffic(lambda _name: OTLPSpanExporter(endpoint=endpoint), n=8)
            first.shutdown()
            wait_for(lambda: _metric(serve.metrics(), "tailsample_engine_traces_in_memory") == 0, timeout=15,
                     what="the first batch decided")
            second = make_traffic(lambda _name: OTLPSpanExporter(endpoint=endpoint), n=8)
            second.shutdown()
            serve.config.write_text(yaml.safe_dump(config([*errors, checkout])))
            serve.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _metric(serve.metrics(), "tailsample_config_reloads_total", result="ok") == 1,
                     timeout=5, what="the reload applied")
            wait_for(lambda: set(second.frontend_traces) <= {t for t, _, _, _ in backend.spans()}, timeout=15,
                     what="the second batch's frontend traces kept")
            wait_for(lambda: _metric(serve.metrics(), "tailsample_engine_traces_in_memory") == 0, timeout=15,
                     what="everything decided")
            kept = {t for t, _, _, _ in backend.spans()}
            assert not kept & set(first.frontend_traces)
            failed = [t for i, t in enumerate(first.payments_traces + second.payments_traces) if i % 4 == 3]
            assert len(failed) == 4 and set(failed) <= kept
            # whole: frontend and cart spans of each kept checkout (two services, four spans)
            spans = [s for s in backend.spans() if s[0] in set(second.frontend_traces)]
            assert len(spans) == 4 * len(second.frontend_traces)
            assert _metric(serve.metrics(), "tailsample_config_version") == 2
        finally:
            serve.proc.send_signal(signal.SIGTERM)
            serve.proc.wait(30)
