"""Late spans on what the OpenTelemetry Python SDK sends: the frontend's spans arrive first and their traces are
decided; the cart's spans of the same traces (its own exporter, its own request) come after the decision. With no
decision cache (the default, as in the reference) each decided trace stays held, and the cart's late spans follow
it: sent on for a kept trace, dropped for the others."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tailsample
from sdk_traffic import SERVICES, encode, make_traffic
from tailsample.traffic.synth import count_spans_by_trace


def _spans_by_trace(payloads: list[bytes]) -> dict[str, int]:
    counts: dict[bytes, int] = {}
    for p in payloads:
        count_spans_by_trace(p, counts)
    return {t.hex(): n for t, n in counts.items()}


def test_late_sdk_spans_follow_their_held_decision() -> None:
    memory = {name: InMemorySpanExporter() for name in SERVICES}
    traffic = make_traffic(lambda name: memory[name], n=24, error_every=0)
    traffic.shutdown()
    frontend, cart = (encode(memory[n].get_finished_spans()) for n in ("frontend", "cart"))
    engine = tailsample.Engine(tailsample.Config.from_dict({"decision_wait": "1s", "policies": [
        {"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}}]}))

    engine.ingest(frontend, now=0.0)
    kept = set(_spans_by_trace(engine.poll(now=2.0)))
    assert kept and kept < set(traffic.frontend_traces), "some kept, some not (24 traces at 50 %)"
    assert engine.stats()["decided_traces_in_memory"] == 24

    engine.ingest(cart, now=3.0)  # two cart spans per request, each trace decided a second ago
    late = _spans_by_trace(engine.poll(now=3.0))
    assert late == {t: 2 for t in kept}
    stats = engine.stats()
    assert stats["late_spans_forwarded"] == 2 * len(kept)
    assert stats["late_spans_dropped"] == 2 * (24 - len(kept))
    assert stats["traces_received"] == 24, "no late span started a trace"
