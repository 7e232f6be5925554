"""The propagation audit on what real instrumentation sends (issue 17), through `tailsample.Engine`.

The spans are built with opentelemetry-proto exactly as `reference/real-instrumentation.md` records three Flask
services instrumented with opentelemetry-instrumentation-flask and -requests 0.66b1 (SDK 1.45.1): frontend → cart →
payments on 127.0.0.1:14501-14503, cart's requests call to payments not forwarding `traceparent`, under the default
(old) and the stable HTTP conventions. Each service exports its spans in its own batches, as the SDK's batch
processor does; payments' SERVER spans start traces of their own.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_builders import MS, STATUS_ERROR, T0, make_request, make_span, span_id, trace_id
from tailsample import Config, Engine
from tailsample.incident.gaps import audit_payloads, merge_reports, render_text
from tailsample.service.pipeline import gap_samples

SERVER, CLIENT = Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT
PORTS = {"frontend": 14501, "cart": 14502, "payments": 14503}
PATHS = {"frontend": "/checkout", "cart": "/cart", "payments": "/pay"}
UA = "python-requests/2.32.5"


def resource(name: str) -> dict[str, Any]:
    return {"telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": "1.45.1", "service.name": name}


def server_attributes(svc: str, convention: str, status: int, forced: bool) -> dict[str, Any]:
    """What opentelemetry-instrumentation-flask 0.66b1 puts on a SERVER span."""
    port, path = PORTS[svc], PATHS[svc]
    hostport = f"127.0.0.1:{port}"  # host AND port in one string, as Flask's instrumentation writes it
    if convention == "old":
        a: dict[str, Any] = {
            "http.method": "POST", "http.server_name": "127.0.0.1", "http.scheme": "http",
            "net.host.name": hostport, "http.host": hostport, "net.host.port": port, "http.target": path,
            "net.peer.ip": "127.0.0.1", "net.peer.port": 51000 + port % 100, "http.user_agent": UA,
            "http.flavor": "1.1", "http.route": path, "http.status_code": status}
    else:
        a = {"http.request.method": "POST", "url.scheme": "http", "server.address": hostport,
             "server.port": port, "url.path": path, "client.address": "127.0.0.1",
             "client.port": 51000 + port % 100, "user_agent.original": UA, "network.protocol.version": "1.1",
             "http.route": path, "http.response.status_code": status}
    if forced:
        a["http.request.header.x_force_trace"] = ["true"]  # a string array, dash turned into underscore
    return a


def client_attributes(to: str, convention: str, status: int | None) -> dict[str, Any]:
    """What opentelemetry-instrumentation-requests 0.66b1 puts on a CLIENT span (`status` None: no response)."""
    url = f"http://127.0.0.1:{PORTS[to]}{PATHS[to]}"
    if convention == "old":
        a: dict[str, Any] = {"http.method": "POST", "http.url": url, "user_agent.original": UA}
        if status is not None:
            a["http.status_code"] = status
    else:
        a = {"http.request.method": "POST", "url.full": url, "user_agent.original": UA,
             "server.address": "127.0.0.1", "server.port": PORTS[to], "network.peer.address": "127.0.0.1",
             "network.peer.port": PORTS[to], "network.protocol.version": "1.1"}
        if status is not None:
            a["http.response.status_code"] = status
    return a


FLASK = ("opentelemetry.instrumentation.flask", "0.66b1")
REQUESTS = ("opentelemetry.instrumentation.requests", "0.66b1")


def checkout_traffic(rng: random.Random, convention: str, n: int, failing: set[int],
                     unnamed_client: bool = False) -> tuple[list[bytes], list[bytes]]:
    """`n` checkouts; payments answers 500 on those in `failing`. Returns (payloads, cart's trace IDs).
    `unnamed_client`: cart also makes, once, a call whose CLIENT span carries nothing that names its destination."""
    spans: dict[str, dict[tuple[str, str], list[Span]]] = {s: {FLASK: [], REQUESTS: []} for s in PORTS}
    cart_traces: list[bytes] = []
    for i in range(n):
        tid, pay_tid = trace_id(rng), trace_id(rng)
        root, to_cart, cart_srv, to_pay, pay_srv = (span_id(rng) for _ in range(5))
        status = 500 if i in failing else 200
        err = STATUS_ERROR if i in failing else 0
        t = T0 + i * 1000 * MS
        spans["frontend"][FLASK].append(make_span(
            tid, root, name="POST /checkout", kind=SERVER, start=t, duration_ms=40, status=err,
            attributes=server_attributes("frontend", convention, status, forced=i % 7 == 3)))
        spans["frontend"][REQUESTS].append(make_span(
            tid, to_cart, parent=root, name="POST", kind=CLIENT, start=t + MS, duration_ms=35, status=err,
            attributes=client_attributes("cart", convention, status)))
        spans["cart"][FLASK].append(make_span(
            tid, cart_srv, parent=to_cart, name="POST /cart", kind=SERVER, start=t + 2 * MS, duration_ms=30,
            status=err, attributes=server_attributes("cart", convention, status, forced=False)))
        spans["cart"][REQUESTS].append(make_span(
            tid, to_pay, parent=cart_srv, name="POST", kind=CLIENT, start=t + 3 * MS, duration_ms=25, status=err,
            attributes=client_attributes("payments", convention, status)))
        if unnamed_client and i == 0:
            spans["cart"][REQUESTS].append(make_span(
                tid, span_id(rng), parent=cart_srv, name="POST", kind=CLIENT, start=t + 3 * MS,
                attributes={"http.method": "POST"}))
        # cart did not forward traceparent: payments' SERVER span is the root of a trace of its own.
        spans["payments"][FLASK].append(make_span(
            pay_tid, pay_srv, name="POST /pay", kind=SERVER, start=t + 4 * MS, duration_ms=20, status=err,
            attributes=server_attributes("payments", convention, status, forced=False)))
        cart_traces.append(tid)
    payloads = []
    for svc, by_scope in spans.items():
        for scope, batch in by_scope.items():
            for k in range(0, len(batch), 8):  # the batch span processor's exports
                if batch[k:k + 8]:
                    payloads.append(make_request(resource(svc), batch[k:k + 8], scope=scope))
    rng.shuffle(payloads)  # the three processes export on their own schedules
    return payloads, cart_traces


ERRORS = {"name": "errors-policy", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def run(payloads: list[bytes], **top: Any) -> tuple[Engine, dict[str, Any]]:
    e = Engine(Config.from_dict({"decision_wait": "10s", "policies": [ERRORS], **top}))
    for p in payloads:
        e.ingest(p, now=0.0)
    e.flush(now=60.0)
    report = e.gaps()
    assert report is not None
    return e, report


def pair(report: Any, source: str, destination: str) -> Any:
    found = [p for p in report["pairs"] if (p["source"], p["destination"]) == (source, destination)]
    assert len(found) == 1, report["pairs"]
    return found[0]


@pytest.mark.parametrize("convention", ["old", "stable"])
@pytest.mark.parametrize("shards", [1, 4])
def test_broken_hop_is_named_by_the_service_behind_the_address(convention: str, shards: int) -> None:
    """Scenario: 40 checkouts, 3 of them failing in payments (kept by the error policy), cart dropping the
    context on every call. Guarantees: `cart → payments` is a gap to a traced service (its address listed), with
    kept traces first among the examples and marked; `frontend → cart` is healthy; nothing else; no unnamed call;
    the same with the spans spread over 4 shards."""
    rng = random.Random(17)
    failing = {5, 21, 33}
    payloads, cart_traces = checkout_traffic(rng, convention, 40, failing)
    e, r = run(payloads, num_shards=shards)
    assert (r["calls"], r["gaps"], r["unnamed_calls"], r["unnamed_gaps"]) == (80, 40, 0, 0)
    broken = pair(r, "cart", "payments")
    assert (broken["calls"], broken["gaps"], broken["gap_traces"]) == (40, 40, 40)
    assert broken["destination_traced"] and not broken["unnamed"]
    assert broken["addresses"] == ["127.0.0.1:14503"]
    kept = {cart_traces[i].hex() for i in failing}
    assert set(broken["kept_examples"]) == kept
    assert broken["examples"][:3] == broken["kept_examples"] and len(broken["examples"]) == 5
    healthy = pair(r, "frontend", "cart")
    assert (healthy["calls"], healthy["gaps"]) == (40, 0)
    assert healthy["addresses"] == ["127.0.0.1:14502"] and healthy["callee"] == "cart"
    assert len(r["pairs"]) == 2
    assert r["addresses"] == {"127.0.0.1:14501": "frontend", "127.0.0.1:14502": "cart",
                              "127.0.0.1:14503": "payments"}
    text = render_text(r)
    traced_section = text.split("Calls to traced services that never joined the trace")[1]
    assert "cart    payments (127.0.0.1:14503)" in traced_section
    assert "(kept)" in traced_section and "never seen as a traced service" not in text
    assert "1 service pairs with every call answered." in text
    stats = e.stats()
    assert 3 <= stats["propagation_addresses"] <= 3 * shards  # each shard learns what its spans say
    assert stats["propagation_addresses_overflowed"] == 0


@pytest.mark.parametrize("convention", ["old", "stable"])
def test_a_call_naming_nothing_is_counted_never_skipped(convention: str) -> None:
    """Scenario: besides its call to payments, cart makes one call whose CLIENT span carries only `http.method`.
    Guarantees: it is counted (calls, gaps, unnamed_calls, unnamed_gaps), under the pair cart → (unnamed), shown
    by the text report and exported as metrics."""
    rng = random.Random(3)
    payloads, _ = checkout_traffic(rng, convention, 10, set(), unnamed_client=True)
    e, r = run(payloads)
    assert (r["calls"], r["gaps"], r["unnamed_calls"], r["unnamed_gaps"]) == (21, 11, 1, 1)
    unnamed = pair(r, "cart", "(unnamed)")
    assert unnamed["unnamed"] and not unnamed["destination_traced"] and unnamed["gaps"] == 1
    assert pair(r, "cart", "payments")["gaps"] == 10
    text = render_text(r)
    assert "11 of 21 calls lost the context" in text
    assert "1 calls named no destination: 0 named by the service answering them, 1 answered by nobody" in text
    assert "Calls naming no destination" in text
    stats = e.stats()
    assert (stats["propagation_unnamed_calls"], stats["propagation_unnamed_gaps"]) == (1, 1)
    samples = {(s.name, s.labels): s.value for s in gap_samples(e, ("processor", "tail_sampling"))}
    assert samples[("tailsample_propagation_unnamed_gaps", (("processor", "tail_sampling"),))] == 1
    assert samples[("tailsample_propagation_gaps", (("processor", "tail_sampling"), ("source", "cart"),
                                                    ("destination", "(unnamed)")))] == 1


@pytest.mark.parametrize("convention", ["old", "stable"])
def test_offline_audit_gives_the_same_answers(convention: str) -> None:
    """Scenario: the same traffic audited live and offline from its payloads (`tailsample gaps FILE`).
    Guarantees: the same pairs, counts and addresses; offline examples are not kept unless the traces are known
    to be (`kept=True`, as for traces read back from a backend)."""
    rng = random.Random(9)
    payloads, _ = checkout_traffic(rng, convention, 12, {2}, unnamed_client=True)
    _, live = run(payloads)
    offline, stats = audit_payloads(payloads)
    assert stats["traces_evicted"] == 0

    def shape(r: Any) -> list[tuple[Any, ...]]:
        return sorted((p["source"], p["destination"], tuple(p["addresses"]), p["calls"], p["gaps"],
                       p["destination_traced"], p["unnamed"]) for p in r["pairs"])

    assert shape(offline) == shape(live)
    assert offline["addresses"] == live["addresses"]
    assert all(not p["kept_examples"] for p in offline["pairs"])
    stored, _ = audit_payloads(payloads, kept=True)
    assert shape(stored) == shape(live)
    assert all(p["kept_examples"] == p["examples"] for p in stored["pairs"])


def test_merged_reports_keep_kept_examples_first() -> None:
    """Scenario: two pipelines' reports merged (`tailsample gaps --url` over several pipelines). Guarantees:
    counts summed, addresses united, kept examples first in the merged row and still marked."""
    row = {"source": "cart", "destination": "payments", "callee": None, "destination_traced": True,
           "calls": 2, "gaps": 2, "gap_traces": 2, "overflow": False, "unnamed": False}
    a = {"pairs": [{**row, "addresses": ["127.0.0.1:14503"], "examples": ["a1", "a2"], "kept_examples": []}],
         "broken": [], "addresses": {"127.0.0.1:14503": "payments"}, "calls": 2, "gaps": 2}
    b = {"pairs": [{**row, "addresses": ["10.0.0.3:80"], "examples": ["b1", "b2"], "kept_examples": ["b2"]}],
         "broken": [], "addresses": {"10.0.0.3:80": "payments"}, "calls": 2, "gaps": 2}
    m = merge_reports([a, b])
    p = m["pairs"][0]
    assert (p["calls"], p["gaps"]) == (4, 4)
    assert p["addresses"] == ["10.0.0.3:80", "127.0.0.1:14503"]
    assert p["examples"] == ["b2", "a1", "a2", "b1"] and p["kept_examples"] == ["b2"]
    assert m["addresses"] == {"127.0.0.1:14503": "payments", "10.0.0.3:80": "payments"}
    assert "b2 (kept)" in render_text(m)


def test_addresses_are_learned_from_late_spans_too() -> None:
    """Scenario: payments' SERVER span arrives after its trace was decided (a late span, not audited), and it is
    the only span saying payments answers on 127.0.0.1:14503. Guarantees: the address is learned all the same,
    and cart's broken call reads cart → payments."""
    rng = random.Random(5)
    e = Engine(Config.from_dict({"decision_wait": "10s", "policies": [ERRORS],
                                 "decision_cache": {"non_sampled_cache_size": 1000}}))
    cart_tid, pay_tid = trace_id(rng), trace_id(rng)
    cart_srv, to_pay, pay_srv, pay_work = (span_id(rng) for _ in range(4))
    e.ingest(make_request(resource("cart"), [
        make_span(cart_tid, cart_srv, name="POST /cart", kind=SERVER,
                  attributes=server_attributes("cart", "stable", 200, forced=False)),
        make_span(cart_tid, to_pay, parent=cart_srv, name="POST", kind=CLIENT,
                  attributes=client_attributes("payments", "stable", 200))], scope=FLASK), now=0.0)
    e.ingest(make_request(resource("payments"), [
        make_span(pay_tid, pay_work, parent=pay_srv, name="charge")], scope=FLASK), now=0.0)
    e.poll(now=11.0)
    before = e.gaps()
    assert before is not None and pair(before, "cart", "127.0.0.1:14503")["gaps"] == 1
    e.ingest(make_request(resource("payments"), [
        make_span(pay_tid, pay_srv, name="POST /pay", kind=SERVER,
                  attributes=server_attributes("payments", "stable", 200, forced=False))], scope=FLASK), now=12.0)
    after = e.gaps()
    assert after is not None
    assert e.stats()["late_spans_dropped"] == 1
    p = pair(after, "cart", "payments")
    assert p["destination_traced"] and p["addresses"] == ["127.0.0.1:14503"]
