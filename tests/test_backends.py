"""`tailsample.incident.backends` and the `--jaeger` options without Jaeger: what happens when the backend is down or
answers something that is not its API (real loopback servers), and the API's documented shapes (several JSON
documents in one answer, one resourceSpans per span, 404 "No traces found")."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sdk_traffic import encode, make_traffic
from service_harness import LOOPBACK, free_port
from tailsample.cli import main
from tailsample.collector.fileformat import json_to_proto, proto_to_json
from tailsample.incident.backends import BackendError, JaegerClient, pull

Answer = tuple[int, str, bytes]  # status, content type, body


@contextmanager
def http_server(answer: Callable[[str], Answer]) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback answering each GET with `answer(path)`; yields its URL and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            status, ctype, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def sdk_result_documents() -> tuple[list[bytes], list[str]]:
    """The SDK's spans of two checkouts as Jaeger's API answers them: one resourceSpans per span, split over two
    `{"result": ...}` documents (a streamed answer); and the frontend trace IDs."""
    memory = InMemorySpanExporter()
    traffic = make_traffic(lambda _: memory, n=2, error_every=0)
    traffic.shutdown()
    per_span = [json.loads(proto_to_json(encode([s])))["resourceSpans"][0] for s in memory.get_finished_spans()]
    half = len(per_span) // 2
    docs = [json.dumps({"result": {"resourceSpans": part}}).encode() for part in (per_span[:half], per_span[half:])]
    return docs, traffic.frontend_traces


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_streamed_answer_of_one_span_per_resource_is_put_back_together(capsys):
    """Scenario: a server answering the v3 search with two JSON documents one after the other, one resourceSpans
    per span (as Jaeger stores them), and 404 "No traces found" for an unknown trace.
    Guarantees: every span is read, grouped by trace (4 traces: 2 checkouts, 2 payments traces), each trace
    whole (4 and 2 spans); the query names the service, the window and the number of traces both ways;
    an unknown trace is None."""
    docs, frontend = sdk_result_documents()

    def answer(path: str) -> Answer:
        if path.startswith("/api/v3/services"):
            return 200, "application/json", b'{"services":["frontend","payments","cart"]}'
        if path.startswith("/api/v3/traces?"):
            return 200, "text/plain; charset=utf-8", b"\n".join(docs)
        return 404, "text/plain", b'{"error":{"httpCode":404,"message":"No traces found"}}'

    with http_server(answer) as (url, asked):
        client = JaegerClient(url)
        pulled = pull(client, services=["cart"], lookback=600, limit=50, now=1_700_000_000.0)
        assert len(pulled.traces) == 4 and not pulled.limited
        from tailsample.incident.tree import build_traces

        trees = build_traces(pulled.payloads())
        assert sorted(t.span_count for t in trees.values()) == [2, 2, 4, 4]
        assert all(trees[t].span_count == 4 for t in frontend)
        assert client.trace("0" * 31 + "1") is None
        query = asked[0]
        assert "query.service_name=cart" in query and "query.num_traces=50" in query
        assert "query.search_depth=50" in query
        assert "query.start_time_min=2023-11-14T22%3A03%3A20.000000Z" in query
        assert "query.start_time_max=2023-11-14T22%3A13%3A20.000000Z" in query


def test_jaeger_down_is_a_clear_error(capsys):
    """Scenario: nothing listens on the port given to --jaeger.
    Guarantees: gaps, show and explain exit 1 with "cannot reach Jaeger at <url>", no traceback."""
    url = f"http://{LOOPBACK}:{free_port()}"
    for argv in (["gaps", "--jaeger", url], ["show", "--jaeger", url, "--trace-id", "a" * 32],
                 ["explain", "a" * 32, "--jaeger", url], ["show", "--jaeger", url]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "", argv
        assert err.startswith(f"tailsample: cannot reach Jaeger at {url}") and "Traceback" not in err


@pytest.mark.parametrize(("answer", "message"), [
    ((200, "text/html", b"<html><body>Jaeger UI</body></html>"), "the answer is not JSON"),
    ((200, "application/json", b'{"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}}'),
     "not valid OTLP/JSON"),
    ((200, "application/json", b'{"result": {"resourceSpans": [{"scopeSp'), "the answer is not JSON"),
    ((200, "application/json", b"[1, 2, 3]"), 'expected {"result"'),
    ((502, "text/html", b"<html>Bad Gateway</html>"), "HTTP 502 on /api/v3/traces"),
    ((500, "application/json", b'{"error":{"httpCode":500,"message":"storage on fire"}}'),
     "refused the search for service 'cart': HTTP 500: storage on fire"),
    ((200, "application/json", b"\xff\xfe garbage"), "not UTF-8"),
])
def test_garbage_from_the_backend_is_a_clear_error(capsys, answer, message):
    """Scenario: a server that answers the search with HTML, invalid OTLP, truncated JSON, another shape, a
    gateway error page, Jaeger's error document, bytes that are not text.
    Guarantees: exit 1 with a message saying what was wrong, never a traceback or a partial report."""
    with http_server(lambda _path: answer) as (url, _):
        code, out, err = run(capsys, "gaps", "--jaeger", url, "--service", "cart")
    assert code == 1 and out == ""
    assert message in err and "Traceback" not in err


def test_service_list_of_another_shape_and_bad_urls(capsys):
    """Scenario: a server whose /api/v3/services is not a list of names; an --jaeger that is not an http URL.
    Guarantees: both exit 1 with the reason."""
    with http_server(lambda _p: (200, "application/json", b'{"services": "cart"}')) as (url, _):
        code, _, err = run(capsys, "gaps", "--jaeger", url)
    assert code == 1 and 'expected {"services": [names]}' in err
    code, _, err = run(capsys, "gaps", "--jaeger", "ftp://example")
    assert code == 1 and "is not an http(s) URL" in err
    with pytest.raises(BackendError):
        JaegerClient("")


def test_one_source_at_a_time_and_arguments_are_checked(capsys, tmp_path):
    """Scenario: --jaeger with files or --url; a bad --lookback or --max-bytes.
    Guarantees: usage errors (exit 2) with the reason."""
    f = tmp_path / "x.json"
    f.write_text("")
    code, _, err = run(capsys, "gaps", str(f), "--jaeger", "http://127.0.0.1:1")
    assert code == 2 and "one of them" in err
    code, _, err = run(capsys, "show", "--url", "http://127.0.0.1:1", "--jaeger", "http://127.0.0.1:1")
    assert code == 2 and "one of them" in err
    for bad in (["--lookback", "soon"], ["--lookback", "0s"], ["--max-bytes", "lots"]):
        with pytest.raises(SystemExit) as exc:
            main(["gaps", "--jaeger", "http://127.0.0.1:1", *bad])
        assert exc.value.code == 2
        assert "is not a" in capsys.readouterr().err


# ---- Tempo: its documented HTTP API (Tempo itself cannot run here) -------------------------------------------


def tempo_answers(protobuf: bool) -> tuple[Callable[[str], Answer], list[str], list[str], list[str]]:
    """A server speaking Tempo's documented API over the SDK's spans of 3 checkouts: tag values (v2 shape),
    search results with leading zeros stripped from IDs, traces by ID as protobuf (tempopb.Trace) or as the v1
    JSON `{"batches": [...]}`. Returns the answer function, the frontend and payments trace IDs, the paths asked."""
    memory = InMemorySpanExporter()
    traffic = make_traffic(lambda _: memory, n=3, error_every=0)
    traffic.shutdown()
    by_trace: dict[str, list] = {}
    for span in memory.get_finished_spans():
        by_trace.setdefault(format(span.context.trace_id, "032x"), []).append(span)
    asked: list[str] = []

    def answer(path: str) -> Answer:
        asked.append(path)
        if path.startswith("/api/search/tag/service.name/values"):
            values = [{"type": "string", "value": s} for s in ("frontend", "cart", "payments")]
            return 200, "application/json", json.dumps({"tagValues": values}).encode()
        if path.startswith("/api/search?"):
            service = path.split("service.name%3D", 1)[1].split("&", 1)[0]
            ids = traffic.frontend_traces if service in ("frontend", "cart") else traffic.payments_traces
            found = [{"traceID": t.lstrip("0"), "rootServiceName": service, "durationMs": 3} for t in ids]
            return 200, "application/json", json.dumps({"traces": found, "metrics": {}}).encode()
        if path.startswith("/api/traces/"):
            tid = path.rsplit("/", 1)[1]
            if tid not in by_trace:
                return 404, "text/plain", b"trace not found"
            payload = encode(by_trace[tid])
            if protobuf:
                return 200, "application/protobuf", payload
            return 200, "application/json", json.dumps(
                {"batches": json.loads(proto_to_json(payload))["resourceSpans"]}).encode()
        return 404, "text/plain", b"404 page not found"

    return answer, traffic.frontend_traces, traffic.payments_traces, asked


@pytest.mark.parametrize("protobuf", [True, False], ids=["protobuf", "json"])
def test_tempo_search_and_trace_by_id_give_the_same_audit_as_a_file(capsys, tmp_path, protobuf):
    """Scenario: Tempo's documented answers (tag values, search by `service.name`, trace by ID as protobuf or as
    JSON batches), over the SDK's spans of 3 checkouts where cart drops the context.
    Guarantees: `gaps --tempo` finds the 6 traces (IDs padded back to 32 digits, each once though found by
    several services) and reports what `gaps FILE` reports on the same spans; `show --tempo --trace-id` and
    `explain --tempo` read one trace; an unknown ID is "not in Tempo"; the search asks for the window and limit."""
    from tailsample.collector.fileformat import PayloadWriter

    answer, frontend, payments, asked = tempo_answers(protobuf)
    with http_server(answer) as (url, _):
        code, out, err = run(capsys, "gaps", "--tempo", url, "--json")
        assert code == 0, err
        from_tempo = json.loads(out)
        path = tmp_path / "spans.json"
        with PayloadWriter(path, "json") as w:
            for tid in frontend + payments:
                body = answer(f"/api/traces/{tid}")[2]
                w.write(body if protobuf else json_to_proto({"resourceSpans": json.loads(body)["batches"]}))
        code, out, _ = run(capsys, "gaps", str(path), "--json")
        from_file = json.loads(out)
        assert from_tempo["traces_audited"] == from_file["traces_audited"] == 6
        assert [(p["source"], p["destination"], p["calls"], p["gaps"]) for p in from_tempo["pairs"]] == \
            [(p["source"], p["destination"], p["calls"], p["gaps"]) for p in from_file["pairs"]]
        search = next(p for p in asked if p.startswith("/api/search?"))
        assert "limit=1000" in search and "start=" in search and "end=" in search

        code, out, err = run(capsys, "show", "--tempo", url, "--trace-id", frontend[0])
        assert code == 0, err
        assert "callee never joined: 127.0.0.1:14503" in out
        code, out, _ = run(capsys, "explain", frontend[0], "--tempo", url)
        assert out.startswith(f"trace {frontend[0]}: stored in Tempo at {url}: 4 spans, 2 services")
        unknown = "0" * 31 + "7"
        code, out, _ = run(capsys, "explain", unknown, "--tempo", url)
        assert out.startswith(f"trace {unknown}: not in Tempo at {url}")


def test_tempo_garbage_and_both_stores_at_once(capsys):
    """Scenario: a Tempo search answer without a valid traceID; --jaeger and --tempo together.
    Guarantees: exit 1 naming the bad trace entry; exit 2 for the two stores."""
    bad = json.dumps({"traces": [{"traceID": "not-hex"}]}).encode()
    with http_server(lambda _p: (200, "application/json", bad)) as (url, _):
        code, _, err = run(capsys, "gaps", "--tempo", url, "--service", "cart")
    assert code == 1 and "a trace without a valid traceID" in err
    code, _, err = run(capsys, "gaps", "--tempo", "http://127.0.0.1:1", "--jaeger", "http://127.0.0.1:1")
    assert code == 2 and "one of them" in err
    code, _, err = run(capsys, "explain", "a" * 32, "--tempo", "http://127.0.0.1:1", "--jaeger", "http://127.0.0.1:1")
    assert code == 2 and "not both" in err
