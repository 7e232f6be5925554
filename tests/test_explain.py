"""`Engine.explain`, the decision log behind it, and the service's `GET /debug/traces/<trace-id>` (issue 8).

What someone holding a trace ID from a customer's report learns: whether it is pending, kept (by which policy),
dropped (and why: no policy, a drop policy, too large, evicted, shutdown), every policy's vote, its times and its
late spans; and a plain answer for an ID the engine never saw or has forgotten.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import get_json, service_config, serving, sink, wait_for
from tailsample import Config, Engine
from tailsample.incident.explain import describe

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
SLOW = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}


def engine(*policies: dict[str, Any], **top: Any) -> Engine:
    return Engine(Config.from_dict({"decision_wait": "10s", **top, "policies": list(policies) or [ERRORS, SLOW]}))


def one_span(rng: Any, *, error: bool = False, tid: bytes | None = None, svc: str = "cart") -> tuple[bytes, bytes]:
    tid = tid or trace_id(rng)
    span = make_span(tid, span_id(rng), status=STATUS_ERROR if error else 0)
    return tid, make_request(service(svc), [span])


def test_kept_error_trace_names_its_policy_and_every_vote(rng) -> None:
    """Scenario: an error trace, decided at decision_wait. Guarantees: outcome sampled, decided_by the errors
    policy, both votes, the times on the engine clock; the text says KEPT by 'errors'."""
    e = engine()
    tid, payload = one_span(rng, error=True)
    e.ingest(payload, now=100.0)
    e.poll(now=110.25)
    x = e.explain(tid.hex())
    assert x["state"] == "decided" and x["outcome"] == "sampled" and x["decided_by"] == "errors"
    assert x["votes"] == {"errors": "sampled", "slow": "not_sampled"}
    assert (x["first_seen"], x["due"], x["decided_at"]) == (100.0, 110.0, 110.25)
    assert x["trigger"] == "decision_wait" and x["span_count"] == 1 and x["late_spans"] == 0
    text = "\n".join(describe(x))
    assert "KEPT, by policy 'errors'" in text and "250 ms past due" in text


def test_boring_trace_says_no_policy_sampled_and_counts_late_spans(rng) -> None:
    """Scenario: a boring trace decided, then two late spans of it (non-sampled cache on). Guarantees: not
    sampled with every vote not_sampled; the late spans counted on its record."""
    e = engine(decision_cache={"non_sampled_cache_size": 100})
    tid, payload = one_span(rng)
    e.ingest(payload, now=0.0)
    e.poll(now=10.0)
    for _ in range(2):
        e.ingest(one_span(rng, tid=tid)[1], now=11.0)
    x = e.explain(tid)
    assert x["outcome"] == "not_sampled" and x["decided_by"] is None
    assert set(x["votes"].values()) == {"not_sampled"}
    assert x["late_spans"] == 2
    assert "NOT KEPT (no policy sampled it)" in describe(x)[0]


def test_pending_unknown_and_malformed(rng) -> None:
    """Scenario: a buffered trace, a never-seen ID, malformed IDs. Guarantees: pending with its span count and
    due time; unknown said plainly; a ValueError naming the problem."""
    e = engine()
    tid, payload = one_span(rng)
    e.ingest(payload, now=5.0)
    x = e.explain(tid.hex().upper())
    assert (x["state"], x["span_count"], x["due"]) == ("pending", 1, 15.0)
    assert e.explain("0" * 31 + "1")["state"] == "unknown"
    assert "UNKNOWN: never seen" in describe(e.explain("0" * 31 + "1"))[0]
    with pytest.raises(ValueError, match="32 hexadecimal digits"):
        e.explain("not-a-trace-id")
    with pytest.raises(ValueError, match="16 bytes"):
        e.explain(b"\x01" * 8)


@pytest.mark.parametrize(("case", "outcome", "trigger"), [
    ("drop", "dropped_by_policy", "decision_wait"),
    ("too_large", "dropped_too_large", "ingest"),
    ("evicted", "evicted", "ingest"),
    ("shutdown", "dropped_on_shutdown", "flush"),
])
def test_every_way_of_losing_a_trace_is_explained(rng, case: str, outcome: str, trigger: str) -> None:
    """Scenario: a trace dropped by a drop policy, too large, evicted at num_traces, or pending at a shutdown
    that drops. Guarantees: the outcome and what triggered it are recorded."""
    top: dict[str, Any] = {}
    policies = [ERRORS]
    if case == "drop":
        policies = [ERRORS, {"name": "no-cart", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "cart", "type": "string_attribute", "string_attribute": {"key": "service.name",
                                                                             "values": ["cart"]}}]}}]
    if case == "too_large":
        top["maximum_trace_size_bytes"] = 10
    if case == "evicted":
        top["num_traces"] = 1
    if case == "shutdown":
        top["drop_pending_traces_on_shutdown"] = True
    e = engine(*policies, **top)
    tid, payload = one_span(rng, error=True)
    e.ingest(payload, now=0.0)
    if case == "evicted":
        e.ingest(one_span(rng)[1], now=1.0)
    e.flush(now=20.0) if case == "shutdown" else e.poll(now=20.0)
    x = e.explain(tid)
    assert (x["outcome"], x["trigger"]) == (outcome, trigger), x
    if case == "drop":
        assert x["votes"]["no-cart"] == "dropped"


def test_the_log_is_bounded_and_older_ids_fall_back_to_the_caches(rng) -> None:
    """Scenario: 50 error traces with `decision_log_size: 10` and a sampled cache of 100. Guarantees: 10
    records kept (and counted in the stats with their bytes); an older kept ID answers `sampled_cache`."""
    e = engine(decision_cache={"sampled_cache_size": 100}, tailsample={"decision_log_size": 10})
    ids = []
    for i in range(50):
        tid, payload = one_span(rng, error=True)
        ids.append(tid)
        e.ingest(payload, now=float(i))
    e.poll(now=100.0)
    s = e.stats()
    assert s["decision_log_records"] == 10 and s["limit_decision_log_size"] == 10
    assert 0 < s["decision_log_bytes"] < 100_000
    assert e.explain(ids[-1])["state"] == "decided"
    assert e.explain(ids[0])["state"] == "sampled_cache"


def test_adjusted_counts_show_the_sampling_probability(rng) -> None:
    """Scenario: adjusted counts on, a trace kept by a 100 % equalizing probabilistic policy and one by a rate
    limit. Guarantees: probability 1, and unknown (None) for the rate-limited one."""
    prob = {"name": "all", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100, "mode": "equalizing"}}
    e = engine(prob, tailsample={"adjusted_counts": {}})
    tid, payload = one_span(rng)
    e.ingest(payload, now=0.0)
    e.poll(now=10.0)
    assert e.explain(tid)["sampling_probability"] == 1.0
    rl = {"name": "rl", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 1000}}
    e = engine(rl, tailsample={"adjusted_counts": {}})
    e.ingest(payload, now=0.0)
    e.poll(now=10.0)
    x = e.explain(tid)
    assert x["sampling_probability"] is None
    assert "probability unknown" in "\n".join(describe(x))


def test_service_answers_debug_traces(rng) -> None:
    """Scenario: `tailsample serve` with an error trace and a boring one sent over OTLP/HTTP. Guarantees:
    `GET /debug/traces/<id>` on the metrics endpoint answers per pipeline: kept by `errors`, not kept, unknown;
    a malformed ID is a 400 with the reason."""
    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, debug={})
        with serving(cfg) as s:
            err_tid, err = one_span(rng, error=True)
            ok_tid, ok = one_span(rng)
            for payload in (err, ok):
                req = urllib.request.Request(s.url(), data=payload,
                                             headers={"Content-Type": "application/x-protobuf"})
                urllib.request.urlopen(req, timeout=5).close()
            wait_for(lambda: backend.span_count() == 1, what="the error trace")
            base = s.url("metrics", "/debug/traces/")
            wait_for(lambda: get_json(base + ok_tid.hex())[1]["pipelines"]["traces"]["state"] == "decided")
            status, body = get_json(base + err_tid.hex())
            assert status == 200
            assert body["pipelines"]["traces"]["decided_by"] == "errors"
            assert get_json(base + ok_tid.hex())[1]["pipelines"]["traces"]["outcome"] == "not_sampled"
            assert get_json(base + "f" * 32)[1]["pipelines"]["traces"]["state"] == "unknown"
            status, body = get_json(base + "nope")
            assert status == 400 and "32 hexadecimal digits" in body["error"]


def test_cli_explain_against_a_running_service(rng, capsys) -> None:
    """Scenario: `tailsample explain <id> --url <metrics address>` against a serving service, for a kept
    trace, with --json, and against an address where nothing listens. Guarantees: the text names the policy;
    the JSON is the service's answer; an unreachable service is exit 1 with a hint."""
    from tailsample.cli import main

    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, debug={})
        with serving(cfg) as s:
            tid, payload = one_span(rng, error=True)
            req = urllib.request.Request(s.url(), data=payload, headers={"Content-Type": "application/x-protobuf"})
            urllib.request.urlopen(req, timeout=5).close()
            wait_for(lambda: backend.span_count() == 1, what="the error trace")
            url = "http://" + s.address("metrics")
            assert main(["explain", tid.hex(), "--url", url]) == 0
            out = capsys.readouterr().out
            assert f"trace {tid.hex()}: KEPT, by policy 'errors'" in out
            assert main(["explain", tid.hex(), "--url", url, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["pipelines"]["traces"]["outcome"] == "sampled"
            port = s.service.addresses["metrics"].port
    assert main(["explain", tid.hex(), "--url", f"http://127.0.0.1:{port}", "--timeout", "1"]) == 1
    assert "cannot reach a tailsample service" in capsys.readouterr().err
