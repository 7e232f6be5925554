"""Kept output carries its span count from the core (issue 20: nothing in Python decodes kept output to count it).

`Engine.poll_kept`/`flush_kept`/`poll_round_kept`/`flush_round_kept` hand out `KeptPayload`s; the pipeline, the
batcher, the persistent sending queue, the debug exporter and `replay` use those counts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from otlp_builders import STATUS_ERROR, make_request, make_resource_spans, make_scope_spans, make_span, request
from tailsample import _native, inspect_payload
from tailsample.collector.metrics import Registry
from tailsample.collector.settings import DebugExporterSettings
from tailsample.config import Config
from tailsample.engine import Engine, KeptPayload
from tailsample.exporters.base import Batch, ExporterMetrics
from tailsample.exporters.debug_exporter import DebugExporter
from tailsample.receivers.sink import span_count

ALWAYS = [{"name": "all", "type": "always_sample"}]


def _engine(**tailsample: Any) -> Engine:
    block: dict[str, Any] = {"decision_wait": "1s", "policies": ALWAYS}
    if tailsample:
        block["tailsample"] = tailsample
    return Engine(Config.from_dict(block))


def _traffic(traces: int = 30, spans: int = 7) -> list[bytes]:
    """Payloads of several resources each, so kept output mixes resources and scopes."""
    out = []
    for t in range(traces):
        tid = (t + 1).to_bytes(16, "big")
        groups = [make_resource_spans({"service.name": f"svc{r}"}, [make_scope_spans(
            [make_span(tid, (r * 100 + i + 1).to_bytes(8, "big"), name="x" * (t * 40),
                       status=STATUS_ERROR if i == 0 else 0) for i in range(spans)])]) for r in range(3)]
        out.append(request(*groups))
    return out


def _assert_counts_true(kept: list[KeptPayload]) -> None:
    for i, k in enumerate(kept):
        info = inspect_payload(k.payload)
        assert (k.spans, k.resource_spans) == (info["spans"], info["resource_spans"]), i


@pytest.mark.parametrize("max_payload_bytes", [None, 4096, 1024], ids=["one-payload", "cut-4KiB", "cut-1KiB"])
def test_kept_payloads_carry_the_counts_a_decode_would_find(max_payload_bytes):
    """Scenario: 30 traces of 21 spans under 3 resources, kept, emitted whole or cut at 4 KiB or 1 KiB
    (below some spans' size: those leave alone).
    Guarantees: each KeptPayload's spans and resource_spans are what decoding it finds; the payloads are
    byte for byte what `poll`/`flush` give for the same input; every span is counted once."""
    opts = {} if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
    counted, plain = _engine(**opts), _engine(**opts)
    for p in _traffic():
        counted.ingest(p, now=0.0)
        plain.ingest(p, now=0.0)
    round_, kept = counted.poll_round_kept(now=0.5)  # nothing due yet
    assert kept == [] and round_ >= 0
    kept = counted.poll_kept(now=2.0)
    assert [k.payload for k in kept] == plain.poll(now=2.0)
    _assert_counts_true(kept)
    assert sum(k.spans for k in kept) == 30 * 21
    if max_payload_bytes is not None:
        assert len(kept) > 1
    if max_payload_bytes == 1024:
        assert counted.stats()["spans_oversized"] > 0  # the single-span payloads are counted too
    assert "spans=" in repr(kept[0])


def test_flush_kept_counts_what_flush_emits():
    """Scenario: traces pending at shutdown. Guarantees: flush_round_kept hands them out counted, with a round."""
    e = _engine()
    for p in _traffic(traces=5, spans=2):
        e.ingest(p, now=0.0)
    round_, kept = e.flush_round_kept(now=0.1)
    _assert_counts_true(kept)
    assert sum(k.spans for k in kept) == 5 * 6 and round_ >= 0
    assert e.flush_kept(now=0.2) == []


def test_a_kept_payload_is_immutable():
    e = _engine()
    e.ingest(make_request({"service.name": "a"}, [make_span(b"\x01" * 16)]), now=0.0)
    (k,) = e.flush_kept(now=0.0)
    with pytest.raises(AttributeError):
        k.spans = 5  # type: ignore[misc]


def test_the_persistent_queue_hands_items_out_counted(tmp_path):
    """Scenario: kept payloads pushed into an exporter's persistent queue, the queue reopened (as after a
    restart). Guarantees: each item comes back as a KeptPayload whose counts are the payload's."""
    e = _engine()
    for p in _traffic(traces=4, spans=3):
        e.ingest(p, now=0.0)
    kept = e.flush_kept(now=0.0)
    budget = _native.NativeBudget(1 << 30)
    q = _native.NativeQueue(str(tmp_path), budget, 100)
    for k in kept:
        q.push(k.payload)
    del q
    q = _native.NativeQueue(str(tmp_path), budget, 100)
    out = []
    while (item := q.next_item()) is not None:
        out.append(item[1])
        q.done(item[0])
    assert [(k.payload, k.spans, k.resource_spans) for k in out] == [
        (k.payload, k.spans, k.resource_spans) for k in kept]


def test_the_debug_exporter_reports_the_batch_counts(caplog):
    """Scenario: the debug exporter at `basic` given a batch. Guarantees: its line carries the batch's counts."""
    exporter = DebugExporter(DebugExporterSettings(id="debug", verbosity="basic"), ExporterMetrics(Registry()))
    e = _engine()
    e.ingest(_traffic(traces=1, spans=4)[0], now=0.0)
    (k,) = e.flush_kept(now=0.0)
    with caplog.at_level(logging.INFO, logger="tailsample.exporter.debug"):
        asyncio.run(exporter._send(Batch(k.payload, k.spans, resource_spans=k.resource_spans)))
    assert "Traces {resource spans: 3, spans: 12}" in caplog.text


@pytest.mark.parametrize(("payload", "spans"), [
    (make_request({"service.name": "a"}, [make_span(b"\x01" * 16), make_span(b"\x02" * 16)]), 2),
    (b"", 0),
    (b"\x0a\xff\xff", 0),  # a resource_spans field longer than the payload
    (b"\xff" * 12, 0),  # not protobuf
], ids=["valid", "empty", "truncated", "garbage"])
def test_span_count_of_a_refused_payload_is_zero_when_it_does_not_decode(payload, spans):
    """Scenario: the one `span_count` (receivers count refused incoming payloads with it).
    Guarantees: a valid payload's spans; 0, never an exception, for a malformed one."""
    assert span_count(payload) == spans
