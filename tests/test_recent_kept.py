"""Recently kept traces held for `tailsample show --url` (issue 8): `Engine.recent_kept`, `Engine.kept_trace`,
the service's `/debug/kept` endpoints and the CLI against a running service."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from typing import Any

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, spans_out, trace_id
from service_harness import get_json, service_config, serving, sink, wait_for
from tailsample import Config, Engine
from tailsample.incident.tree import build_traces, render_text

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def engine(**tailsample: Any) -> Engine:
    return Engine(Config.from_dict({"decision_wait": "10s", "policies": [ERRORS], "tailsample": tailsample}))


def error_trace(rng: random.Random, spans: int = 3, name: str = "GET /pay") -> tuple[bytes, bytes]:
    tid = trace_id(rng)
    root = span_id(rng)
    children = [make_span(tid, span_id(rng), parent=root, name=f"step {i}") for i in range(spans - 1)]
    return tid, make_request(service("payments"), [make_span(tid, root, name=name, status=STATUS_ERROR),
                                                   *children])


def test_kept_traces_are_held_as_they_left_newest_first(rng) -> None:
    """Scenario: three error traces kept at different times (record_policy on) and a boring one dropped.
    Guarantees: listed newest first with span counts; each one's payloads hold exactly the spans exported,
    byte for byte (the policy attribute included); a dropped or unknown trace is None; a bad ID a ValueError."""
    e = engine(record_policy=True)
    kept = []
    out: list[bytes] = []
    for t in range(3):
        tid, payload = error_trace(rng, spans=2 + t)
        e.ingest(payload, now=float(t))
        kept.append(tid)
        out += e.poll(now=t + 10.0)
    boring = trace_id(rng)
    e.ingest(make_request(service("cart"), [make_span(boring, span_id(rng))]), now=5.0)
    out += e.flush(now=100.0)
    listing = e.recent_kept(10)
    assert [r["trace_id"] for r in listing] == [t.hex() for t in reversed(kept)]
    assert [r["span_count"] for r in listing] == [4, 3, 2]
    assert listing[0]["decided_at"] >= listing[1]["decided_at"]
    exported = {(t, s): raw for t, s, raw in spans_out(out)}
    for tid in kept:
        held = e.kept_trace(tid.hex())
        assert held is not None
        got = {(t, s): raw for t, s, raw in spans_out(held)}
        assert got == {k: v for k, v in exported.items() if k[0] == tid}
        assert all(b"tailsampling.policy" in raw for raw in got.values())
    assert e.kept_trace(boring.hex()) is None
    assert e.kept_trace("0" * 31 + "1") is None
    assert e.recent_kept(1) == listing[:1]
    try:
        e.kept_trace("xyz")
    except ValueError as exc:
        assert "32 hexadecimal digits" in str(exc)
    else:
        raise AssertionError("a malformed ID must raise")


def test_the_buffer_is_bounded_in_bytes_oldest_out_first(rng) -> None:
    """Scenario: 200 kept traces through a 64 KiB buffer on 2 shards, then the buffer off. Guarantees: held
    bytes never pass the limit; the newest traces are held, the oldest gone; with 0 nothing is held."""
    e = Engine(Config.from_dict({"decision_wait": "1s", "num_shards": 2, "policies": [ERRORS],
                                 "tailsample": {"recent_kept_bytes": 65536}}))
    ids = []
    for i in range(200):
        tid, payload = error_trace(rng, spans=5)
        e.ingest(payload, now=float(i))
        ids.append(tid)
        e.poll(now=i + 2.0)
        assert e.stats()["recent_kept_bytes"] <= 65536
    s = e.stats()
    assert s["limit_recent_kept_bytes"] == 65536
    assert 20 < s["recent_kept_traces"] < 200
    assert e.kept_trace(ids[-1].hex()) is not None
    assert e.kept_trace(ids[0].hex()) is None
    off = engine(recent_kept_bytes=0)
    tid, payload = error_trace(rng)
    off.ingest(payload, now=0.0)
    assert off.flush(now=100.0)
    assert off.recent_kept() == [] and off.kept_trace(tid.hex()) is None


def test_show_renders_a_running_services_recent_kept_traces(rng, capsys) -> None:
    """Scenario: `tailsample serve` keeps two error traces. Guarantees: /debug/kept lists them newest first
    with summaries; /debug/kept/<id> is the trace as OTLP/JSON; `tailsample show --url` lists them and renders
    the newest as a tree, `--trace-id` the one asked for, `--json` the tree as JSON; an ID not held is a 404
    and exit 1 saying so."""
    from tailsample.cli import main

    with sink() as backend:
        cfg = service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, debug={})
        with serving(cfg) as s:
            first, p1 = error_trace(rng, spans=3, name="GET /first")
            second, p2 = error_trace(rng, spans=4, name="GET /second")
            for p in (p1,):
                urllib.request.urlopen(urllib.request.Request(
                    s.url(), data=p, headers={"Content-Type": "application/x-protobuf"}), timeout=5).close()
            wait_for(lambda: backend.span_count() == 3, what="the first trace")
            urllib.request.urlopen(urllib.request.Request(
                s.url(), data=p2, headers={"Content-Type": "application/x-protobuf"}), timeout=5).close()
            wait_for(lambda: backend.span_count() == 7, what="the second trace")
            status, listing = get_json(s.url("metrics", "/debug/kept"))
            rows = listing["pipelines"]["traces"]
            assert status == 200 and [r["trace_id"] for r in rows] == [second.hex(), first.hex()]
            assert rows[0]["span_count"] == 4 and rows[0]["errors"] == 1
            status, doc = get_json(s.url("metrics", f"/debug/kept/{first.hex()}"))
            assert status == 200 and len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 3
            url = "http://" + s.address("metrics")
            assert main(["show", "--url", url]) == 0
            out = capsys.readouterr().out
            assert "2 recently kept traces" in out and out.index(second.hex()) < out.index(first.hex())
            assert "GET /second" in out and "GET /first" not in out.split("newest first:")[1].split("\n", 3)[-1]
            assert main(["show", "--url", url, "--trace-id", first.hex()]) == 0
            text = capsys.readouterr().out
            expected = render_text(build_traces([p1])[first.hex()])
            assert text == expected
            assert main(["show", "--url", url, "--trace-id", first.hex(), "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["span_count"] == 3
            missing = trace_id(rng).hex()
            status, body = get_json(s.url("metrics", f"/debug/kept/{missing}"))
            assert status == 404 and "not among the recently kept traces" in body["error"]
            assert main(["show", "--url", url, "--trace-id", missing]) == 1
            assert "HTTP 404" in capsys.readouterr().err
            assert get_json(s.url("metrics", "/debug/kept/nope"))[0] == 400
    assert main(["show"]) == 2
