"""The propagation-gap audit (issue 8): `Engine.gaps()`, the service's `/debug/gaps` and Prometheus counters,
and `tailsample gaps` live and offline with its service graph.

Traces are crafted service by service: a caller's CLIENT span, the callee's SERVER span under it (or not: the
callee dropped `traceparent`), spans whose parent never arrived.
"""

from __future__ import annotations

import json
import random
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample import Config, Engine
from tailsample.collector.fileformat import PayloadWriter
from tailsample.errors import ConfigError
from tailsample.incident.gaps import merge_reports, render_text

SERVER, CLIENT = Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT
PRODUCER, CONSUMER = Span.SpanKind.SPAN_KIND_PRODUCER, Span.SpanKind.SPAN_KIND_CONSUMER
ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def engine(audit: dict[str, Any] | None = None, **top: Any) -> Engine:
    block: dict[str, Any] = {"decision_wait": "10s", "policies": [ERRORS], **top}
    if audit is not None:
        block["tailsample"] = {"propagation_audit": audit}
    return Engine(Config.from_dict(block))


def checkout_trace(rng: random.Random, *, payments_answers: bool, error: bool = False) -> tuple[bytes, list[bytes]]:
    """frontend → cart → payments, one payload per service, as three SDKs would export them."""
    tid = trace_id(rng)
    root, call_cart, cart_server, call_pay, pay_server = (span_id(rng) for _ in range(5))
    frontend = make_request(service("frontend"), [
        make_span(tid, root, name="GET /checkout", kind=SERVER),
        make_span(tid, call_cart, parent=root, name="POST cart", kind=CLIENT,
                  attributes={"server.address": "cart", "server.port": 8080}),
    ])
    cart = make_request(service("cart"), [
        make_span(tid, cart_server, parent=call_cart, name="POST /cart", kind=SERVER),
        make_span(tid, call_pay, parent=cart_server, name="charge", kind=CLIENT,
                  attributes={"peer.service": "payments"}, status=STATUS_ERROR if error else 0),
    ])
    payloads = [frontend, cart]
    if payments_answers:
        payloads.append(make_request(service("payments"), [
            make_span(tid, pay_server, parent=call_pay, name="Charge", kind=SERVER)]))
    return tid, payloads


def feed(e: Engine, payloads: list[bytes], now: float = 0.0) -> None:
    for p in payloads:
        e.ingest(p, now=now)


def pair(report: Any, source: str, destination: str) -> Any:
    found = [p for p in report["pairs"] if (p["source"], p["destination"]) == (source, destination)]
    assert len(found) == 1, report["pairs"]
    return found[0]


def test_missing_server_span_is_exactly_one_gap_for_the_right_pair(rng) -> None:
    """Scenario: 20 healthy checkout traces and one where payments did not forward the context (its span went
    to another trace). Guarantees: exactly one gap, for (cart → payments), with that trace as example; every
    other call answered; nothing broken; the audit covers traces not kept as well."""
    e = engine()
    for _ in range(20):
        good, payloads = checkout_trace(rng, payments_answers=True)
        feed(e, payloads)
    bad, payloads = checkout_trace(rng, payments_answers=False)
    feed(e, payloads)
    assert e.flush(now=100.0) == []  # nothing kept: no errors
    r = e.gaps()
    assert r is not None
    assert (r["traces_audited"], r["traces_with_gaps"], r["traces_broken"]) == (21, 1, 0)
    assert (r["calls"], r["gaps"]) == (42, 1)
    gap = pair(r, "cart", "payments")
    assert (gap["calls"], gap["gaps"], gap["gap_traces"]) == (21, 1, 1)
    assert gap["examples"] == [bad.hex()]
    assert gap["callee"] == "payments" and gap["destination_traced"]
    ok = pair(r, "frontend", "cart")
    assert (ok["calls"], ok["gaps"], ok["callee"]) == (21, 0, "cart")
    assert r["pairs"][0] is not ok and r["pairs"][0]["destination"] == "payments", "worst first"
    assert [p for p in r["pairs"] if p["gaps"]] == [gap]
    stats = e.stats()
    assert stats["propagation_gaps"] == 1 and stats["propagation_traces_audited"] == 21
    assert e.explain(bad.hex())["propagation"] == {"gaps": 1, "orphan_spans": 0}
    from tailsample.incident.explain import describe
    assert any(line.startswith("  propagation: 1 calls whose callee never joined the trace, 0 spans whose parent")
               for line in describe(e.explain(bad.hex())))
    assert not any("propagation" in line for line in describe(e.explain(good.hex())))


def test_orphan_span_marks_the_trace_broken_and_the_trace_is_still_judged_whole(rng) -> None:
    """Scenario: inventory's spans point at a parent that never arrived (a proxy that does not export spans),
    and the error is in that disconnected part. Guarantees: the trace is broken, counted for inventory with the
    trace as example; the errors policy keeps the whole trace: the connected part's spans too."""
    e = engine()
    tid = trace_id(rng)
    root, lost_parent, inv, inv_child = (span_id(rng) for _ in range(4))
    feed(e, [
        make_request(service("frontend"), [make_span(tid, root, name="GET /stock", kind=SERVER)]),
        make_request(service("inventory"), [
            make_span(tid, inv, parent=lost_parent, name="GET /items", kind=SERVER),
            make_span(tid, inv_child, parent=inv, name="SELECT", kind=CLIENT, status=STATUS_ERROR,
                      attributes={"db.system": "postgresql", "server.address": "db"}),
        ]),
    ])
    out = e.flush(now=100.0)
    from otlp_builders import spans_out
    assert sorted(s for _, s, _ in spans_out(out)) == sorted([root, inv, inv_child])
    r = e.gaps()
    assert r is not None
    assert (r["traces_broken"], r["orphan_spans"]) == (1, 1)
    # The trace was kept (its error): its example says so (issue 17).
    assert r["broken"] == [{"service": "inventory", "traces": 1, "orphan_spans": 1, "examples": [tid.hex()],
                            "kept_examples": [tid.hex()]}]
    assert r["calls"] == 0, "a database call (db.system) is not a traced-service call"
    assert e.explain(tid.hex())["propagation"] == {"gaps": 0, "orphan_spans": 1}


def test_messaging_wrappers_ignored_destinations_and_late_callees(rng) -> None:
    """Scenario: a producer whose consumer joined, one whose consumer did not, an HTTP call wrapped by a second
    CLIENT span, a call to an ignored external API, and a callee whose SERVER span arrives after the decision.
    Guarantees: the producer gap is counted under the topic; the wrapper is not a call of its own; the ignored
    destination is not audited; a callee later than the decision counts as a gap (documented)."""
    e = engine({"ignore_destinations": ["api.stripe.com"]})
    tid = trace_id(rng)
    root, p1, c1, p2, wrap, inner, stripe, late_call, late_server = (span_id(rng) for _ in range(9))
    feed(e, [make_request(service("orders"), [
        make_span(tid, root, name="POST /orders", kind=SERVER),
        make_span(tid, p1, parent=root, name="publish", kind=PRODUCER,
                  attributes={"messaging.destination.name": "order-events", "server.address": "kafka"}),
        make_span(tid, p2, parent=root, name="publish", kind=PRODUCER,
                  attributes={"messaging.destination.name": "audit-events"}),
        make_span(tid, wrap, parent=root, name="reserve", kind=CLIENT, attributes={"peer.service": "stock"}),
        make_span(tid, inner, parent=wrap, name="POST", kind=CLIENT, attributes={"server.address": "stock"}),
        make_span(tid, stripe, parent=root, name="charge", kind=CLIENT,
                  attributes={"server.address": "api.stripe.com"}),
        make_span(tid, late_call, parent=root, name="GET", kind=CLIENT, attributes={"peer.service": "slowpoke"}),
    ]), make_request(service("billing"), [make_span(tid, c1, parent=p1, name="process", kind=CONSUMER)]),
        make_request(service("stock"), [make_span(tid, span_id(rng), parent=inner, name="POST /", kind=SERVER)])])
    e.flush(now=100.0)
    e.ingest(make_request(service("slowpoke"), [make_span(tid, late_server, parent=late_call, kind=SERVER)]),
             now=101.0)
    r = e.gaps()
    assert r is not None
    got = {(p["source"], p["destination"]): (p["calls"], p["gaps"]) for p in r["pairs"]}
    assert got == {("orders", "order-events"): (1, 0), ("orders", "audit-events"): (1, 1),
                   ("orders", "stock"): (1, 0), ("orders", "slowpoke"): (1, 1)}
    assert pair(r, "orders", "order-events")["callee"] == "billing"
    assert not pair(r, "orders", "audit-events")["destination_traced"]


def test_pairs_are_bounded_with_an_overflow_pair(rng) -> None:
    """Scenario: one service calls 50 distinct unanswered destinations with max_pairs 10 and 2 shards.
    Guarantees: at most 10 pairs plus one overflow pair holding the rest; totals exact; the stats say so."""
    e = engine({"max_pairs": 10, "examples": 1}, num_shards=2)
    for i in range(50):
        tid = trace_id(rng)
        root = span_id(rng)
        feed(e, [make_request(service("fanout"), [
            make_span(tid, root, kind=SERVER),
            make_span(tid, span_id(rng), parent=root, kind=CLIENT, attributes={"peer.service": f"dest-{i}"})])])
    e.flush(now=100.0)
    r = e.gaps()
    assert r is not None
    regular = [p for p in r["pairs"] if not p["overflow"]]
    overflow = [p for p in r["pairs"] if p["overflow"]]
    assert len(regular) == 10 and len(overflow) == 1
    assert sum(p["calls"] for p in r["pairs"]) == 50 == r["gaps"]
    assert overflow[0]["calls"] == 40 == r["overflow_calls"]
    assert all(len(p["examples"]) <= 1 for p in r["pairs"])
    s = e.stats()
    assert s["limit_propagation_max_pairs"] == 10 and s["propagation_pairs"] <= 20
    assert s["propagation_memory_bytes"] > 0


def test_audit_config_off_and_errors() -> None:
    """Guarantees: enabled: false turns the audit off (gaps() is None, no audit keys extracted); the normalized
    config loads back as the same; bad options are errors naming the key."""
    off = engine({"enabled": False})
    assert off.gaps() is None
    norm = off.config.normalized()["tailsample"]["propagation_audit"]
    assert norm == {"enabled": False}
    on = engine({"destination_attributes": ["peer.service"], "max_names": 100})
    again = Config.from_dict(on.config.normalized())
    assert again.normalized() == on.config.normalized()
    assert again.normalized()["tailsample"]["propagation_audit"]["destination_attributes"] == ["peer.service"]
    for bad, where in [({"max_names": 70000}, "tailsample.propagation_audit.max_names"),
                       ({"destination_attributes": "peer.service"}, "destination_attributes"),
                       ({"max_pairs": 0}, "max_pairs"), ({"colour": 1}, "colour")]:
        with pytest.raises(ConfigError, match=where):
            engine(bad)


def test_render_text_and_merge(rng) -> None:
    """Guarantees: the text lists the gap pair with its share and example, separates never-traced
    destinations, lists broken services; merging two pipelines' reports sums by pair."""
    e = engine()
    for _ in range(3):
        feed(e, checkout_trace(rng, payments_answers=True)[1])
    bad, payloads = checkout_trace(rng, payments_answers=False)
    feed(e, payloads)
    e.flush(now=100.0)
    r = e.gaps()
    assert r is not None
    text = render_text(r)
    assert "4 traces audited: 1 with a propagation gap (25.0%)" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("cart"))
    assert "payments" in line and " 1 " in line and "25.0%" in line and bad.hex() in line
    assert "Calls to traced services" in text
    merged = merge_reports([r, r])
    assert pair(merged, "cart", "payments")["gaps"] == 2
    assert merged["traces_audited"] == 8


def _post(url: str, payload: bytes) -> None:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/x-protobuf"})
    urllib.request.urlopen(req, timeout=5).close()


def test_service_exposes_gaps_as_metrics_and_json_and_cli(rng, tmp_path: Path, capsys) -> None:
    """Scenario: `tailsample serve` receives a healthy trace and one with a gap over OTLP/HTTP. Guarantees:
    Prometheus counters per pair on /metrics; /debug/gaps answers the report; `tailsample gaps --url` prints
    the pair with the example trace ID and draws the graph as SVG."""
    from tailsample.cli import main

    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, debug={})
        with serving(cfg) as s:
            _, good = checkout_trace(rng, payments_answers=True)
            bad, gap = checkout_trace(rng, payments_answers=False, error=True)
            for p in [*good, *gap]:
                _post(s.url(), p)
            audited = 'tailsample_engine_propagation_traces_audited_total{processor="tail_sampling"}'
            wait_for(lambda: s.metric(audited) == 2, what="both decided")
            metrics = urllib.request.urlopen(s.url("metrics", "/metrics"), timeout=5).read().decode()
            assert ('tailsample_propagation_gaps_total{processor="tail_sampling",source="cart",'
                    'destination="payments"} 1') in metrics
            assert ('tailsample_propagation_calls_total{processor="tail_sampling",source="frontend",'
                    'destination="cart"} 2') in metrics
            doc = json.loads(urllib.request.urlopen(s.url("metrics", "/debug/gaps"), timeout=5).read())
            assert pair(doc["pipelines"]["traces"], "cart", "payments")["examples"] == [bad.hex()]
            url = "http://" + s.address("metrics")
            svg = tmp_path / "graph.svg"
            assert main(["gaps", "--url", url, "--graph", str(svg)]) == 0
            out = capsys.readouterr().out
            assert "2 traces audited: 1 with a propagation gap" in out and bad.hex() in out
            root = ET.parse(svg).getroot()
            assert root.tag.endswith("svg")
            assert "payments" in svg.read_text()
            assert main(["gaps", "--url", url, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["gaps"] == 1
            port = s.service.addresses["metrics"].port
    assert main(["gaps", "--url", f"http://127.0.0.1:{port}", "--timeout", "1"]) == 1
    assert "cannot reach a tailsample service" in capsys.readouterr().err


def test_cli_gaps_offline_over_recorded_files(rng, tmp_path: Path, capsys) -> None:
    """Scenario: traffic recorded by the file exporter (JSON lines and proto), audited offline. Guarantees: the
    same report as live; --ignore silences a destination; --graph writes DOT; both formats read."""
    from tailsample.cli import main

    payloads: list[bytes] = []
    for i in range(10):
        payloads += checkout_trace(rng, payments_answers=i != 3)[1]
    bad = checkout_trace(rng, payments_answers=False)
    payloads += bad[1]
    json_file, proto_file = tmp_path / "a.json", tmp_path / "b.proto"
    with PayloadWriter(json_file, "json") as w:
        w.write_all(payloads[:15])
    with PayloadWriter(proto_file, "proto") as w:
        w.write_all(payloads[15:])
    dot = tmp_path / "g.dot"
    assert main(["gaps", str(json_file), str(proto_file), "--json", "--graph", str(dot)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["traces_audited"] == 11
    assert (pair(r, "cart", "payments")["gaps"], pair(r, "frontend", "cart")["gaps"]) == (2, 0)
    assert bad[0].hex() in pair(r, "cart", "payments")["examples"]
    assert '"cart" -> "payments"' in dot.read_text()
    assert main(["gaps", str(json_file), str(proto_file), "--ignore", "payments", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["gaps"] == 0 and all(p["destination"] != "payments" for p in r["pairs"])
    assert main(["gaps", str(json_file), "--url", "http://127.0.0.1:1"]) == 2
