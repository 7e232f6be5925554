"""`tailsample show`: kept traces rendered as trees (tailsample.incident.tree and the CLI subcommand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_builders import (
    MS,
    STATUS_ERROR,
    T0,
    make_request,
    make_resource_spans,
    make_scope_spans,
    make_span,
    request,
    service,
)
from tailsample.cli import main
from tailsample.collector.fileformat import PayloadWriter, read_payloads
from tailsample.errors import DecodeError
from tailsample.incident.tree import build_traces, format_duration, render_text, to_json

AGENT = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
OTHER = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT = bytes.fromhex("00000000000000a1")
S = 10**9  # one second in ns


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def agent_payloads() -> list[bytes]:
    """The seed's agent example as OTLP: a 3m 42s root with 3 LLM calls and 2 tool calls, over two payloads
    (spans out of order), named as in the example (no gen_ai.operation.name: the names decide)."""
    root = make_span(AGENT, ROOT, name="agent.investigate_incident", start=T0, duration_ms=222_000,
                     kind=Span.SpanKind.SPAN_KIND_SERVER)
    chat1 = make_span(AGENT, sid(1), parent=ROOT, name="gen_ai.chat", start=T0 + 1 * S, duration_ms=2300,
                      attributes={"gen_ai.usage.input_tokens": 1840, "gen_ai.usage.output_tokens": 312})
    tool1 = make_span(AGENT, sid(2), parent=ROOT, name="gen_ai.tool.fetch_cloudwatch_logs", start=T0 + 4 * S,
                      duration_ms=1100, attributes={"log_group": "/aws/lambda/payment", "records_returned": 847})
    chat2 = make_span(AGENT, sid(3), parent=ROOT, name="gen_ai.chat", start=T0 + 60 * S, duration_ms=3100,
                      attributes={"gen_ai.usage.input_tokens": 5200, "gen_ai.usage.output_tokens": 428})
    tool2 = make_span(AGENT, sid(4), parent=ROOT, name="gen_ai.tool.get_recent_deployments",
                      start=T0 + 120 * S, duration_ms=400,
                      attributes={"service": "payment-service", "deployments_found": 2})
    chat3 = make_span(AGENT, sid(5), parent=ROOT, name="gen_ai.chat", start=T0 + 210 * S, duration_ms=2800,
                      attributes={"gen_ai.usage.input_tokens": 6100, "gen_ai.usage.output_tokens": 892,
                                  "gen_ai.response.finish_reasons": ["end_turn"]})
    svc = service("incident-agent")
    return [make_request(svc, [chat3, tool1, root]), make_request(svc, [chat2, chat1, tool2])]


SEED_TREE = """\
Root span: agent.investigate_incident (duration: 3m 42s)
  ├── gen_ai.chat (LLM call 1)
  │     duration: 2.3s, input_tokens: 1840, output_tokens: 312
  ├── gen_ai.tool.fetch_cloudwatch_logs (tool call 1)
  │     duration: 1.1s, log_group: /aws/lambda/payment, records_returned: 847
  ├── gen_ai.chat (LLM call 2)
  │     duration: 3.1s, input_tokens: 5200, output_tokens: 428
  ├── gen_ai.tool.get_recent_deployments (tool call 2)
  │     duration: 400ms, service: payment-service, deployments_found: 2
  └── gen_ai.chat (LLM call 3)
        duration: 2.8s, input_tokens: 6100, output_tokens: 892
        finish_reason: end_turn
"""
SEED_HEADER = ("trace 4bf92f3577b34da6a3ce929d0e0e4736 · 2023-11-14 22:13:20 UTC · 3m 42s · 6 spans · "
               "service: incident-agent · tokens: 13,140 in / 1,632 out · 3 LLM calls · 2 tool calls")


def write(path: Path, payloads: list[bytes], fmt: str) -> Path:
    with PayloadWriter(path, fmt) as w:
        w.write_all(payloads)
    return path


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_seed_agent_example_renders_as_in_the_seed(tmp_path: Path, fmt: str) -> None:
    """Scenario: the seed's agent example (root 3m 42s, 3 gen_ai.chat and 2 gen_ai.tool.* children with their
    durations, tokens, tool attributes and finish reason) written to a file-exporter file (proto, JSON) in two
    messages, spans out of order, and read back through fileformat. Guarantees: the text is the summary line
    (trace ID, start, duration, 6 spans, the service, tokens 13,140 in / 1,632 out, 3 LLM calls, 2 tool calls)
    then the seed's tree exactly: the 5 children in start order with ├──/└── and │ continuation, durations
    2.3s/1.1s/3.1s/400ms/2.8s (the seed writes 0.4s; below a second we write ms), input_tokens/output_tokens,
    the tool's own attributes, finish_reason."""
    path = write(tmp_path / f"kept.{fmt}", agent_payloads(), fmt)
    traces = build_traces(read_payloads(path))
    assert list(traces) == [AGENT.hex()]
    tree = traces[AGENT.hex()]
    text = render_text(tree)
    assert text == SEED_HEADER + "\n" + SEED_TREE
    assert [c.name for c in tree.roots[0].children] == ["gen_ai.chat", "gen_ai.tool.fetch_cloudwatch_logs",
                                                       "gen_ai.chat", "gen_ai.tool.get_recent_deployments",
                                                       "gen_ai.chat"]
    assert (tree.gen_ai.input_tokens, tree.gen_ai.output_tokens) == (13_140, 1_632)
    assert (tree.gen_ai.llm_calls, tree.gen_ai.tool_calls) == (3, 2)
    assert not tree.broken and tree.errors == 0


def test_json_has_the_same_tree_and_totals() -> None:
    """Scenario: the seed example as JSON (`to_json`). Guarantees: it survives json.dumps (strict, no NaN);
    the totals equal the text's (13,140 / 1,632 tokens, 3 LLM calls, 2 tool calls); one root with the 5
    children nested in start order, IDs as hex, durations in ns and readable, tool names from the span names,
    the finish reasons as a list."""
    doc = to_json(build_traces(agent_payloads())[AGENT.hex()])
    doc = json.loads(json.dumps(doc, allow_nan=False))
    assert doc["trace_id"] == AGENT.hex()
    assert doc["gen_ai"] == {"spans": 5, "input_tokens": 13_140, "output_tokens": 1_632, "llm_calls": 3,
                             "tool_calls": 2}
    assert (doc["span_count"], doc["duration_ns"], doc["duration"]) == (6, 222 * S, "3m 42s")
    assert (doc["broken"], doc["root_count"], doc["orphans"]) == (False, 1, 0)
    [root] = doc["roots"]
    assert (root["span_id"], root["parent_span_id"], root["kind"]) == (ROOT.hex(), "", "SERVER")
    kids = root["children"]
    assert [k["span_id"] for k in kids] == [sid(n).hex() for n in range(1, 6)]
    assert all(k["parent_span_id"] == ROOT.hex() and k["children"] == [] for k in kids)
    assert [k["duration"] for k in kids] == ["2.3s", "1.1s", "3.1s", "400ms", "2.8s"]
    assert kids[0]["duration_ns"] == 2300 * MS
    assert kids[1]["gen_ai"]["tool_name"] == "fetch_cloudwatch_logs" and kids[1]["gen_ai"]["call_number"] == 1
    assert kids[1]["attributes"] == {"log_group": "/aws/lambda/payment", "records_returned": 847}
    assert kids[4]["gen_ai"]["finish_reasons"] == ["end_turn"]
    assert kids[4]["gen_ai"]["llm_call"] is True and kids[4]["gen_ai"]["call_number"] == 3
    assert kids[4]["status"] == {"code": "UNSET", "message": ""}


def test_semantic_convention_attributes_and_usage_counted_once() -> None:
    """Scenario: an agent traced with the conventions' attributes: an invoke_agent root that reports the
    summed usage of its calls, a framework span `chat` around the client library's `chat gpt-4o` span (both
    reporting the same usage), an execute_tool span, an embeddings span, and the older prompt/completion
    token names. Guarantees: tokens are summed over the innermost spans reporting them only (no double count),
    the wrapper is not a second LLM call, the tool and model are shown, the embeddings tokens count but it is
    no LLM call."""
    svc = service("agent")
    root = make_span(OTHER, sid(1), name="invoke_agent support", start=T0, duration_ms=5000,
                     attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 170,
                                 "gen_ai.usage.output_tokens": 25})
    wrapper = make_span(OTHER, sid(2), parent=sid(1), name="chat", start=T0 + 10 * MS, duration_ms=900,
                        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100,
                                    "gen_ai.usage.output_tokens": 20})
    call = make_span(OTHER, sid(3), parent=sid(2), name="chat gpt-4o", start=T0 + 20 * MS, duration_ms=850,
                     attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                 "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 100,
                                 "gen_ai.usage.output_tokens": 20, "server.address": "api.openai.com",
                                 "gen_ai.response.finish_reasons": ["tool_calls"]})
    tool = make_span(OTHER, sid(4), parent=sid(1), name="execute_tool get_weather", start=T0 + 1000 * MS,
                     duration_ms=0.095, attributes={"gen_ai.operation.name": "execute_tool",
                                                    "gen_ai.tool.name": "get_weather", "city": "Paris"})
    legacy = make_span(OTHER, sid(5), parent=sid(1), name="openai.completion", start=T0 + 2000 * MS,
                       duration_ms=410, attributes={"gen_ai.operation.name": "text_completion",
                                                    "gen_ai.usage.prompt_tokens": 60,
                                                    "gen_ai.usage.completion_tokens": 5})
    embed = make_span(OTHER, sid(6), parent=sid(1), name="embeddings text-embedding-3-small",
                      start=T0 + 3000 * MS, duration_ms=30, attributes={"gen_ai.usage.input_tokens": 10})
    tree = build_traces([make_request(svc, [root, wrapper, call, tool, legacy, embed])])[OTHER.hex()]
    assert (tree.gen_ai.input_tokens, tree.gen_ai.output_tokens) == (170, 25)
    assert (tree.gen_ai.llm_calls, tree.gen_ai.tool_calls, tree.gen_ai.spans) == (2, 1, 6)
    text = render_text(tree)
    assert "tokens: 170 in / 25 out · 2 LLM calls · 1 tool call" in text
    assert ("  ├── chat\n"
            "  │   │ duration: 900ms, input_tokens: 100, output_tokens: 20\n"
            "  │   └── chat gpt-4o (LLM call 1)\n"
            "  │         duration: 850ms, model: gpt-4o-2024-08-06, input_tokens: 100, output_tokens: 20, "
            "server.address: api.openai.com\n"
            "  │         finish_reason: tool_calls\n") in text
    assert ("  ├── execute_tool get_weather (tool call 1)\n"
            "  │     duration: 95µs, city: Paris\n") in text
    assert "  ├── openai.completion (LLM call 2)\n  │     duration: 410ms, input_tokens: 60, output_tokens: 5\n" \
        in text
    assert "  └── embeddings text-embedding-3-small\n        duration: 30ms, input_tokens: 10\n" in text
    assert text.splitlines()[1] == "Root span: invoke_agent support (duration: 5.0s)"
    assert text.splitlines()[2] == "  │ input_tokens: 170, output_tokens: 25"


def test_missing_parent_marks_the_orphan_and_the_broken_trace() -> None:
    """Scenario: a trace whose middle span never arrived: the root, and two spans whose parent is absent (one
    with a child of its own). Guarantees: the tree shows the true root first, then each orphan as a root of its
    own marked with the missing parent's ID; the header says the trace is broken (3 roots, 2 orphans);
    JSON flags the orphans."""
    missing = sid(99)
    spans = [
        make_span(OTHER, sid(1), name="GET /checkout", start=T0, duration_ms=500,
                  attributes={"http.request.method": "GET", "http.route": "/checkout",
                              "http.response.status_code": 200, "internal.noise": "x"}),
        make_span(OTHER, sid(3), parent=missing, name="SELECT orders", start=T0 + 30 * MS, duration_ms=20,
                  attributes={"db.system.name": "postgresql", "db.operation.name": "SELECT"}),
        make_span(OTHER, sid(2), parent=missing, name="cache.get", start=T0 + 10 * MS, duration_ms=5),
        make_span(OTHER, sid(4), parent=sid(3), name="pool.acquire", start=T0 + 31 * MS, duration_ms=1),
    ]
    tree = build_traces([make_request(service("shop"), spans)])[OTHER.hex()]
    assert tree.broken and tree.orphans == 2 and len(tree.roots) == 3
    text = render_text(tree)
    assert "⚠ broken trace: 3 roots, 2 orphans (parent span missing)" in text.splitlines()[0]
    assert text.splitlines()[1:] == [
        "Root span: GET /checkout (duration: 500ms)",
        "    http.request.method: GET, http.route: /checkout, http.response.status_code: 200",
        "Orphan span: cache.get (duration: 5ms) ⚠ orphan: parent 0000000000000063 is not in the trace",
        "Orphan span: SELECT orders (duration: 20ms) ⚠ orphan: parent 0000000000000063 is not in the trace",
        "  │ db.system.name: postgresql, db.operation.name: SELECT",
        "  └── pool.acquire",
        "        duration: 1ms",
    ]
    doc = to_json(tree)
    assert [(r["name"], r["orphan"]) for r in doc["roots"]] == [("GET /checkout", False), ("cache.get", True),
                                                               ("SELECT orders", True)]


def test_error_status_and_exception_shown() -> None:
    """Scenario: a request whose database call fails: status ERROR with a message and an `exception` event,
    in another service than its parent. Guarantees: the failing span is marked `✗ ERROR: <message>`, its
    exception message and error.type are among its attributes, the service change is shown, the header
    counts 1 error; a message with a newline is shown escaped, on one line."""
    db = make_span(OTHER, sid(2), parent=sid(1), name="SELECT", start=T0 + MS, duration_ms=3,
                   status=STATUS_ERROR, attributes={"error.type": "TimeoutError"})
    db.status.message = "deadline exceeded\nafter 3ms"
    event = db.events.add()
    event.name = "exception"
    kv = event.attributes.add()
    kv.key, kv.value.string_value = "exception.message", "connection timed out"
    root = make_span(OTHER, sid(1), name="GET /pay", start=T0, duration_ms=5)
    payload = request(make_resource_spans(service("api"), [make_scope_spans([root])]),
                      make_resource_spans(service("db-proxy"), [make_scope_spans([db])]))
    tree = build_traces([payload])[OTHER.hex()]
    text = render_text(tree)
    assert tree.errors == 1 and "· 1 error" in text.splitlines()[0]
    assert "services: api, db-proxy" in text.splitlines()[0]
    assert text.splitlines()[1:] == [
        "Root span: GET /pay (duration: 5ms) [api]",
        "  └── SELECT [db-proxy] ✗ ERROR: deadline exceeded\\nafter 3ms",
        "        duration: 3ms, error.type: TimeoutError, exception.message: connection timed out",
    ]
    assert to_json(tree)["roots"][0]["children"][0]["status"] == {"code": "ERROR",
                                                                  "message": "deadline exceeded\nafter 3ms"}


def test_width_wraps_detail_lines_and_color_adds_styles() -> None:
    """Scenario: the seed example rendered 50 columns wide, and in color. Guarantees: the summary is split
    at its ` · ` separators, continuation lines indented; no summary or detail line is wider than 50 and the
    wrapped items keep the │ prefix; colored text is the plain text once ANSI codes are removed."""
    import re

    tree = build_traces(agent_payloads())[AGENT.hex()]
    lines = render_text(tree, width=50).splitlines()
    assert lines[:5] == ["trace 4bf92f3577b34da6a3ce929d0e0e4736",
                         "  2023-11-14 22:13:20 UTC · 3m 42s · 6 spans",
                         "  service: incident-agent",
                         "  tokens: 13,140 in / 1,632 out · 3 LLM calls",
                         "  2 tool calls"]
    assert lines[5].startswith("Root span: ")
    assert all(len(line) <= 50 for line in lines if "──" not in line and "Root span" not in line)
    assert "  │     duration: 1.1s," in lines
    assert "  │     log_group: /aws/lambda/payment," in lines
    colored = render_text(tree, color=True)
    assert "\x1b[" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == render_text(tree)


def test_extra_attributes_and_durations() -> None:
    """Scenario: `--attr` keys asked for, present on some spans; durations at every scale. Guarantees: the
    asked attributes are shown where present, others not; durations read 95µs, 410ms, 2.3s, 3m 42s, and
    round up across units (999.9ms is 1.0s, 59.96s is 1m 0s)."""
    span = make_span(OTHER, sid(1), name="job", attributes={"tenant": "acme", "retry": 2, "ratio": 0.5})
    tree = build_traces([make_request(service("w"), [span])], attributes=["tenant", "ratio", "absent"])
    assert render_text(tree[OTHER.hex()]).splitlines()[2] == "    tenant: acme, ratio: 0.5"
    assert [format_duration(n) for n in (0, 950, 95_000, 410 * MS, 2300 * MS, 222 * S, 999_900_000,
                                         59_960 * MS, 3725 * S)] == \
        ["0ns", "950ns", "95µs", "410ms", "2.3s", "3m 42s", "1.0s", "1m 0s", "1h 2m 5s"]


def test_not_a_payload_raises_decode_error() -> None:
    """Scenario: bytes that are not an ExportTraceServiceRequest. Guarantees: DecodeError naming the payload."""
    with pytest.raises(DecodeError, match="payload 1: not a protobuf ExportTraceServiceRequest"):
        build_traces([b"\xff\xff\xff"])


def test_cli_lists_then_renders_the_largest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: `tailsample show` on two files (proto and JSON): the agent trace and a 1-span trace.
    Guarantees: exit 0; one summary line per trace, most spans first; then the agent trace's tree."""
    a = write(tmp_path / "a.proto", agent_payloads(), "proto")
    b = write(tmp_path / "b.json", [make_request(service("w"), [make_span(OTHER, sid(1), name="tick")])], "json")
    assert main(["show", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"2 traces in {a}, {b}, most spans first:"
    assert lines[1] == SEED_HEADER
    assert lines[2].startswith(f"trace {OTHER.hex()} · ") and "1 span ·" in lines[2]
    assert lines[3] == ""
    assert "\n".join(lines[4:]) + "\n" == SEED_HEADER + "\n" + SEED_TREE
    assert main(["show", str(a), str(b), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "… and 1 more trace (--limit)" in out and OTHER.hex() not in out


def test_cli_trace_id_json_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: `show --trace-id` with a trace in the file (text, then --json), with one that is not, with an
    invalid ID; `show` on an empty file and on a file that is not a trace file. Guarantees: the trace is
    rendered alone; --json prints its JSON with the totals; a missing trace exits 1 with "trace <id> not found
    in <files>"; a bad ID is a usage error (exit 2); a file without spans exits 1 saying so; a bad file exits 1
    with fileformat's error naming the file."""
    a = write(tmp_path / "a.json", agent_payloads(), "json")
    assert main(["show", str(a), "--trace-id", AGENT.hex().upper()]) == 0
    assert capsys.readouterr().out == SEED_HEADER + "\n" + SEED_TREE
    assert main(["show", str(a), "--trace-id", AGENT.hex(), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gen_ai"]["input_tokens"] == 13_140 and doc["gen_ai"]["llm_calls"] == 3
    assert len(doc["roots"][0]["children"]) == 5
    assert main(["show", str(a), "--trace-id", OTHER.hex()]) == 1
    assert capsys.readouterr().err.strip() == f"tailsample: trace {OTHER.hex()} not found in {a}"
    with pytest.raises(SystemExit) as exc:
        main(["show", str(a), "--trace-id", "xyz"])
    assert exc.value.code == 2
    assert "not a trace ID" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert main(["show", str(empty)]) == 1
    assert capsys.readouterr().err.strip() == f"tailsample: no spans in {empty}"
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceSpans": [\n')
    assert main(["show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tailsample: error: ") and str(bad) in err


def test_cli_json_without_trace_id_lists_and_includes_the_first(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: `show --json` without --trace-id. Guarantees: a JSON object with the trace count, the listed
    summaries (most spans first) and the first trace's tree."""
    a = write(tmp_path / "a.proto", [*agent_payloads(), make_request(service("w"), [make_span(OTHER, sid(1))])],
              "proto")
    assert main(["show", str(a), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trace_count"] == 2
    assert [t["trace_id"] for t in doc["traces"]] == [AGENT.hex(), OTHER.hex()]
    assert doc["trace"]["trace_id"] == AGENT.hex() and doc["trace"]["gen_ai"]["tool_calls"] == 2


# ---- calls whose callee never joined ----------------------------------------------------------------------


def sdk_traces(n: int = 2):
    """The SDK's spans of `sdk_traffic` (frontend → cart → payments, cart dropping the context), as trees."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sdk_traffic import encode, make_traffic

    memory = InMemorySpanExporter()
    traffic = make_traffic(lambda _name: memory, n=n, error_every=0)
    traffic.shutdown()
    return traffic, build_traces([encode(memory.get_finished_spans())])


def test_a_call_whose_callee_never_joined_is_marked_with_its_destination():
    """Scenario: real SDK spans: frontend's CLIENT span (old conventions, only `http.url`) answered by cart's
    SERVER span; cart's CLIENT span (stable conventions: `server.address` 127.0.0.1, `server.port` 14503) whose
    payments SERVER span started a new trace; payments' database CLIENT span (`db.system`).
    Guarantees: only cart's call is marked, named 127.0.0.1:14503 (address and port, as the audit reads them);
    frontend's answered call and the database span are not; the header counts it; JSON has the same facts."""
    traffic, traces = sdk_traces()
    tree = traces[traffic.frontend_traces[0]]
    text = render_text(tree)
    assert "⚠ 1 call whose callee never joined" in text.splitlines()[0]
    marked = [line for line in text.splitlines() if "callee never joined:" in line]
    assert len(marked) == 1 and "└── POST ⚠" in marked[0] and marked[0].endswith(
        "⚠ callee never joined: 127.0.0.1:14503")
    nodes = {(n.service, n.name): n for n in tree.spans()}
    assert nodes[("frontend", "GET")].destination == "127.0.0.1:14502"  # from http.url alone
    assert not nodes[("frontend", "GET")].callee_never_joined
    payments = traces[traffic.payments_traces[0]]
    assert payments.unanswered_calls == 0 and "never joined" not in render_text(payments)
    db = next(n for n in payments.spans() if n.name == "SELECT payments")
    assert db.not_a_call and not db.callee_never_joined

    out = to_json(tree)
    assert out["unanswered_calls"] == 1
    flat = []
    stack = list(out["roots"])
    while stack:
        node = stack.pop()
        flat.append(node)
        stack.extend(node["children"])
    marked_json = [(n["service"], n["destination"]) for n in flat if n["callee_never_joined"]]
    assert marked_json == [("cart", "127.0.0.1:14503")]


@pytest.mark.parametrize(("attributes", "destination"), [
    ({"peer.service": "payments", "server.address": "10.0.0.7"}, "payments"),
    ({"messaging.destination.name": "orders"}, "orders"),
    ({"server.address": "payments.internal", "server.port": 8443}, "payments.internal:8443"),
    ({"server.address": "127.0.0.1:14503", "server.port": 14503}, "127.0.0.1:14503"),  # port not doubled
    ({"server.address": "::1", "server.port": 8080}, "[::1]:8080"),
    ({"rpc.service": "shop.Payments"}, "shop.Payments"),
    ({"net.peer.name": "payments", "net.peer.port": 80}, "payments:80"),
    ({"url.full": "https://api.stripe.com/v1/charges"}, "api.stripe.com"),
    ({"http.url": "http://[::1]:9000/x"}, "[::1]:9000"),
    ({"http.url": "not a url"}, None),
    ({}, None),
])
def test_call_destination_follows_the_audits_attributes(attributes, destination, tmp_path):
    """Scenario: a CLIENT span with no child, carrying one set of destination attributes.
    Guarantees: the destination is the first of peer.service, messaging.destination.name, server.address(:port),
    rpc.service, net.peer.name(:port), then the URL's host:port; with none, the span is still marked, as a
    call with no destination attribute."""
    span = make_span(OTHER, sid(2), parent=ROOT, name="call", kind=Span.SpanKind.SPAN_KIND_CLIENT,
                     attributes=attributes)
    root = make_span(OTHER, ROOT, name="root", kind=Span.SpanKind.SPAN_KIND_SERVER)
    tree = build_traces([make_request(service("cart"), [root, span])])[OTHER.hex()]
    node = next(n for n in tree.spans() if n.name == "call")
    assert node.destination == destination and node.callee_never_joined
    line = next(line for line in render_text(tree).splitlines() if "── call" in line)
    assert line.endswith(f": {destination}" if destination else "(no destination attribute)")


def test_wrappers_answered_calls_and_producers_follow_the_audits_rules():
    """Scenario: a CLIENT span wrapping the HTTP library's CLIENT span (two instrumentations of one call), the
    inner one unanswered; a PRODUCER with a CONSUMER child; a PRODUCER without one; a `db.system.name` span.
    Guarantees: only the inner CLIENT span and the lonely PRODUCER are marked."""
    c = Span.SpanKind
    spans = [
        make_span(OTHER, ROOT, name="root", kind=c.SPAN_KIND_SERVER),
        make_span(OTHER, sid(1), parent=ROOT, name="sdk call", kind=c.SPAN_KIND_CLIENT,
                  attributes={"peer.service": "stock"}),
        make_span(OTHER, sid(2), parent=sid(1), name="http call", kind=c.SPAN_KIND_CLIENT,
                  attributes={"server.address": "stock", "server.port": 80}),
        make_span(OTHER, sid(3), parent=ROOT, name="publish answered", kind=c.SPAN_KIND_PRODUCER,
                  attributes={"messaging.destination.name": "orders"}),
        make_span(OTHER, sid(4), parent=sid(3), name="consume", kind=c.SPAN_KIND_CONSUMER),
        make_span(OTHER, sid(5), parent=ROOT, name="publish lost", kind=c.SPAN_KIND_PRODUCER,
                  attributes={"messaging.destination.name": "audit"}),
        make_span(OTHER, sid(6), parent=ROOT, name="query", kind=c.SPAN_KIND_CLIENT,
                  attributes={"db.system.name": "postgresql", "server.address": "db"}),
    ]
    tree = build_traces([make_request(service("orders"), spans)])[OTHER.hex()]
    assert sorted(n.name for n in tree.spans() if n.callee_never_joined) == ["http call", "publish lost"]
    assert tree.unanswered_calls == 2
