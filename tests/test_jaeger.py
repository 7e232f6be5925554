"""`tailsample gaps/show/explain --jaeger` against a real Jaeger v2 fed by the OpenTelemetry SDK's OTLP exporter.

Skipped unless Jaeger is built (`make test-jaeger`, or TAILSAMPLE_BUILD_JAEGER=1): see tests/jaeger_fixture.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jaeger_fixture import Jaeger, jaeger  # noqa: F401 - the fixture
from sdk_traffic import SERVICES, Traffic, encode, make_traffic
from tailsample.cli import main
from tailsample.collector.fileformat import PayloadWriter

pytestmark = pytest.mark.jaeger

REQUESTS = 12


class Tee(SpanExporter):
    """Every span to the backend (the SDK's OTLP/HTTP exporter) and to memory (for the file)."""

    def __init__(self, *exporters: SpanExporter) -> None:
        self.exporters = exporters

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        results = [e.export(spans) for e in self.exporters]
        return SpanExportResult.SUCCESS if all(r == SpanExportResult.SUCCESS for r in results) else \
            SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for e in self.exporters:
            e.shutdown()


@pytest.fixture(scope="module")
def stored(jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory) -> tuple[Jaeger, Traffic, Path]:  # noqa: F811
    """The SDK's spans of REQUESTS checkouts in Jaeger, and the same spans in an OTLP/JSON file."""
    memory = InMemorySpanExporter()
    traffic = make_traffic(lambda _: Tee(OTLPSpanExporter(endpoint=f"{jaeger.otlp_http}/v1/traces"), memory),
                           n=REQUESTS, error_every=4)
    traffic.shutdown()
    path = tmp_path_factory.mktemp("recorded") / "spans.json"
    with PayloadWriter(path, "json") as w:
        w.write(encode(memory.get_finished_spans()))
    jaeger.wait_for_spans({**{t: 4 for t in traffic.frontend_traces}, **{t: 2 for t in traffic.payments_traces}})
    return jaeger, traffic, path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pairs(report: dict) -> list[tuple]:
    """Each pair's facts; examples by count only: which gap traces are shown depends on the order they came in."""
    return sorted((p["source"], p["destination"], p["callee"], p["destination_traced"], p["calls"], p["gaps"],
                   p["gap_traces"], len(p["examples"])) for p in report["pairs"])


def test_gaps_over_jaeger_equal_gaps_over_the_same_spans_in_a_file(stored, capsys):
    """Scenario: 12 checkouts frontend → cart → payments from the SDK's OTLP exporter into Jaeger (cart drops the
    context: 12 payments traces of their own), the same spans written to an OTLP/JSON file.
    Guarantees: `gaps --jaeger` (every service listed by Jaeger, each searched) reports exactly the totals and
    the pairs of `gaps FILE` (calls, gaps, callee, examples among the gap traces): the cart → payments gap 12 of
    12, the answered frontend → cart call, each trace audited once though found by several services' searches."""
    store, traffic, path = stored
    code, out, err = run(capsys, "gaps", "--jaeger", store.query, "--json")
    assert code == 0, err
    from_jaeger = json.loads(out)
    code, out, err = run(capsys, "gaps", str(path), "--json")
    assert code == 0, err
    from_file = json.loads(out)
    assert from_jaeger["traces_audited"] == from_file["traces_audited"] == 2 * REQUESTS
    for key in ("traces_with_gaps", "traces_broken", "calls", "gaps", "orphan_spans"):
        assert from_jaeger[key] == from_file[key], key
    assert pairs(from_jaeger) == pairs(from_file)
    cart = [p for p in from_file["pairs"] if p["source"] == "cart"]
    assert [(p["calls"], p["gaps"]) for p in cart] == [(REQUESTS, REQUESTS)]
    for report in (from_file, from_jaeger):
        examples = [e for p in report["pairs"] if p["source"] == "cart" for e in p["examples"]]
        assert examples and set(examples) <= set(traffic.frontend_traces)
    frontend = [p for p in from_file["pairs"] if p["source"] == "frontend"]
    assert [(p["calls"], p["gaps"], p["callee"]) for p in frontend] == [(REQUESTS, 0, "cart")]

    # the services named explicitly: the same report; the text report names the pair
    code, out, _ = run(capsys, "gaps", "--jaeger", store.query, *(f"--service={s}" for s in SERVICES), "--json")
    assert code == 0 and pairs(json.loads(out)) == pairs(from_file)
    code, out, _ = run(capsys, "gaps", "--jaeger", store.query, "--service", "cart")
    assert code == 0 and f"{REQUESTS} of {2 * REQUESTS} calls lost the context" in out


def test_gaps_over_jaeger_is_bounded_by_limit_and_bytes(stored, capsys):
    """Scenario: the same store, pulled with --limit 5, then with --max-bytes smaller than one answer.
    Guarantees: 5 traces audited and a note that more may match; past the byte limit, exit 1 with a message
    naming the limit (no traceback, no partial report)."""
    store, _, _ = stored
    code, out, err = run(capsys, "gaps", "--jaeger", store.query, "--limit", "5", "--json")
    assert code == 0 and json.loads(out)["traces_audited"] == 5
    assert "stopped at 5 traces (--limit)" in err
    code, out, err = run(capsys, "gaps", "--jaeger", store.query, "--max-bytes", "2KiB")
    assert code == 1 and out == ""
    assert "read limit of 2,048 bytes (--max-bytes)" in err and "Traceback" not in err


def test_a_search_jaeger_refuses_is_reported_with_its_message(stored, capsys):
    """Scenario: --limit above the memory store's max_traces (100,000): Jaeger refuses the search (HTTP 500).
    Guarantees: exit 1 with Jaeger's own message; a lookback with no traces reports an empty audit."""
    store, _, _ = stored
    code, _, err = run(capsys, "gaps", "--jaeger", store.query, "--service", "cart", "--limit", "200000")
    assert code == 1 and "refused the search for service 'cart'" in err and "max traces" in err
    code, out, err = run(capsys, "gaps", "--jaeger", store.query, "--service", "no-such-service")
    assert code == 0 and "0 traces audited" in out and "holds no trace of no-such-service" in err


def test_show_and_explain_a_stored_trace_by_id(stored, capsys):
    """Scenario: one checkout's trace ID, one payments trace ID, and an ID Jaeger never saw.
    Guarantees: `show --jaeger --trace-id` draws the stored tree with cart's call marked as never joined (its
    destination named); `explain --jaeger` says it is stored, with 4 spans, the 2 services and the unanswered
    call; for the payments trace, its error; for the unknown ID, that Jaeger does not have it (`show` exits 1)."""
    store, traffic, _ = stored
    tid = traffic.frontend_traces[0]
    code, out, err = run(capsys, "show", "--jaeger", store.query, "--trace-id", tid)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"trace {tid} ·") and "⚠ 1 call whose callee never joined" in out
    assert "└── POST ⚠ callee never joined: 127.0.0.1:14503" in out

    code, out, err = run(capsys, "explain", tid, "--jaeger", store.query)
    assert code == 0, err
    assert out.splitlines()[0] == (f"trace {tid}: stored in Jaeger at {store.query}: 4 spans, 2 services "
                                   f"(cart, frontend), " + out.splitlines()[0].rsplit(", ", 1)[1])
    assert "1 call whose callee never joined" in out
    code, out, _ = run(capsys, "explain", tid, "--jaeger", store.query, "--json")
    answer = json.loads(out)
    assert answer["found"] and answer["trace"]["span_count"] == 4 and answer["trace"]["unanswered_calls"] == 1

    failed = traffic.payments_traces[3]  # every 4th payment fails
    code, out, _ = run(capsys, "explain", failed, "--jaeger", store.query)
    assert code == 0 and "1 error span" in out and "(payments)" in out

    unknown = "0123456789abcdef0123456789abcdef"
    code, out, _ = run(capsys, "explain", unknown, "--jaeger", store.query)
    assert code == 0 and out.startswith(f"trace {unknown}: not in Jaeger at {store.query}")
    code, out, err = run(capsys, "show", "--jaeger", store.query, "--trace-id", unknown)
    assert code == 1 and f"trace {unknown} not found in Jaeger" in err


def test_show_lists_stored_traces_and_draws_the_largest(stored, capsys):
    """Scenario: `show --jaeger --service frontend --limit 3`.
    Guarantees: three of frontend's traces listed, the one with most spans drawn (4 spans, the marker on)."""
    store, traffic, _ = stored
    code, out, _ = run(capsys, "show", "--jaeger", store.query, "--service", "frontend", "--limit", "3")
    assert code == 0
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("trace ")][:3]
    assert len(listed) == 3 and set(listed) <= set(traffic.frontend_traces)
    assert "callee never joined: 127.0.0.1:14503" in out
