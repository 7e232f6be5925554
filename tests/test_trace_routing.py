"""What a Kafka deployment needs from the engine (issue 9): one payload per trace for the producer
(`split_by_trace`), and for the consumer, the trace IDs a message held (`ingest_traces`), whether they are still
buffered (`buffered`), and forgetting the traces of a partition given up (`forget`)."""

from __future__ import annotations

import pytest

from otlp_builders import (
    STATUS_ERROR,
    make_request,
    make_resource_spans,
    make_scope_spans,
    make_span,
    read_output,
    request,
    service,
    span_id,
    spans_out,
    trace_id,
)
from tailsample import Config, Engine
from tailsample.engine import split_by_trace
from tailsample.errors import DecodeError

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def engine() -> Engine:
    return Engine(Config.from_dict({"decision_wait": "10s", "num_shards": 4, "policies": [ERRORS]}))


def test_split_by_trace_keeps_every_span_byte_for_byte_under_its_resource(rng) -> None:
    """Scenario: one payload with 3 traces over 2 resources and 3 scopes. Guarantees: one payload per trace, in
    order of first appearance; each holds exactly its trace's spans, bytes unchanged, under the same resource
    and scope; together they hold every span once."""
    a, b, c = trace_id(rng), trace_id(rng), trace_id(rng)
    spans = {t: [make_span(t, span_id(rng)) for _ in range(3)] for t in (a, b, c)}
    payload = request(
        make_resource_spans(service("cart"), [make_scope_spans([spans[b][0], spans[a][0], spans[b][1]]),
                                              make_scope_spans([spans[c][0]], scope=("other", "2"))]),
        make_resource_spans(service("pay"), [make_scope_spans([spans[a][1], spans[a][2], spans[b][2],
                                                                spans[c][1], spans[c][2]])]))
    parts = split_by_trace(payload)
    assert [tid for tid, _ in parts] == [b, a, c]
    whole = {(t, s): raw for t, s, raw in spans_out([payload])}
    seen = {}
    for tid, part in parts:
        got = {(t, s): raw for t, s, raw in spans_out([part])}
        assert {t for t, _ in got} == {tid}
        seen.update(got)
    assert seen == whole
    origins = {(s.trace_id, s.span_id): s.origin for s in read_output([payload])}
    for _, part in parts:
        assert all(s.origin == origins[(s.trace_id, s.span_id)] for s in read_output([part]))


def test_split_by_trace_rejects_malformed_payloads() -> None:
    assert split_by_trace(b"") == []
    with pytest.raises(DecodeError):
        split_by_trace(b"\x0a\x05ab")


def test_ingest_traces_buffered_and_forget(rng) -> None:
    """Scenario: two payloads, traces spread over 4 shards; one trace forgotten, the others decided.
    Guarantees: ingest_traces names each trace once; buffered follows them; forget frees a buffered trace
    without a decision (no output, no decision-cache entry: its spans later start it anew), counted in
    traces_forgotten, keeping traces_received = sampled + not sampled + dropped + evicted + forgotten + in memory."""
    e = engine()
    ids = [trace_id(rng) for _ in range(6)]
    p1 = make_request(service("cart"), [make_span(t, span_id(rng), status=STATUS_ERROR) for t in ids[:4] * 2])
    spans, got = e.ingest_traces(p1, now=0.0)
    assert spans == 8 and sorted(got) == sorted(ids[:4])
    spans, got = e.ingest_traces(make_request(service("cart"), [make_span(t, span_id(rng)) for t in ids[3:]]),
                                 now=1.0)
    assert sorted(got) == sorted(ids[3:])
    assert e.buffered(ids) == [True] * 6
    assert e.forget([ids[0], trace_id(rng)]) == 1
    assert e.buffered(ids) == [False] + [True] * 5
    out = e.poll(now=20.0)
    kept = {t for t, _, _ in spans_out(out)}
    assert kept == set(ids[1:4]), "the forgotten error trace is not decided"
    assert e.buffered(ids) == [False] * 6
    s = e.stats()
    assert (s["traces_forgotten"], s["spans_forgotten"]) == (1, 2)
    assert s["traces_received"] == (s["traces_sampled"] + s["traces_not_sampled"] + s["traces_dropped"]
                                    + s["traces_evicted"] + s["traces_forgotten"] + s["traces_in_memory"])
    assert e.explain(ids[0].hex())["state"] == "unknown"
    e.ingest(make_request(service("cart"), [make_span(ids[0], span_id(rng))]), now=21.0)
    assert e.buffered([ids[0]]) == [True], "a forgotten trace's later spans start it anew"
    with pytest.raises(ValueError, match="16 bytes"):
        e.buffered([b"short"])


def test_ingest_batch_takes_each_payload_whole_skips_malformed_and_stops_at_backpressure(rng) -> None:
    """Guarantees: one result per payload tried, in order: (spans, trace IDs) for a taken payload, the DecodeError
    of a malformed one (the others still taken), and at a limit the BackpressureError, last, with nothing of that
    payload or the ones after it taken."""
    from tailsample.errors import BackpressureError

    e = Engine(Config.from_dict({"decision_wait": "10s", "num_traces": 3, "block_on_overflow": True,
                                 "policies": [ERRORS]}))
    tids = [trace_id(rng) for _ in range(5)]
    payloads = [make_request(service("cart"), [make_span(t, span_id(rng))]) for t in tids]
    results = e.ingest_batch([payloads[0], b"\x0a\x05ab", payloads[1], payloads[2], payloads[3], payloads[4]],
                             now=0.0)
    assert results[0] == (1, [tids[0]])
    assert isinstance(results[1], DecodeError)
    assert results[2:4] == [(1, [tids[1]]), (1, [tids[2]])]
    assert len(results) == 5 and isinstance(results[4], BackpressureError)
    assert e.buffered(tids) == [True, True, True, False, False]


def test_ingest_messages_groups_runs_of_a_partition_skips_malformed_and_stops_at_backpressure(rng) -> None:
    """Scenario: a consumer's batch of real confluent-kafka `Message` objects: a partition EOF event, a run of
    partition 0 with a malformed message in it, a run of partition 1, a message without a value, then more than
    the engine holds. Guarantees: one run per stretch of one partition, its end offset after its last message
    and its trace IDs in order; the malformed message is counted in its run and reported; the EOF is handed back
    as an event; at the limit the call stops, `taken` naming the first message refused, nothing of it taken;
    `first_buffered` names each run's first ID still buffered (its size when none is)."""
    ck = pytest.importorskip("confluent_kafka")
    from tailsample.errors import BackpressureError

    e = Engine(Config.from_dict({"decision_wait": "10s", "num_traces": 4, "block_on_overflow": True,
                                 "policies": [ERRORS]}))
    tids = [trace_id(rng) for _ in range(6)]

    def msg(partition: int, offset: int, value: bytes | None) -> object:
        return ck.Message(topic="spans", partition=partition, offset=offset, value=value)

    def one(t: bytes, spans: int = 1) -> bytes:
        return make_request(service("cart"), [make_span(t, span_id(rng)) for _ in range(spans)])

    eof = ck.Message(topic="spans", partition=2, offset=9, error=ck.KafkaError(ck.KafkaError._PARTITION_EOF))
    batch = [eof, msg(0, 10, one(tids[0], 2)), msg(0, 11, b"\x0a\x05ab"), msg(0, 12, one(tids[1])),
             msg(1, 40, one(tids[2])), msg(1, 41, None), msg(1, 42, one(tids[3])), msg(1, 43, one(tids[4])),
             msg(1, 44, one(tids[5]))]
    got = e.ingest_messages(batch, now=0.0)
    assert got.taken == 7 and isinstance(got.stopped, BackpressureError)
    assert got.spans == 5
    assert got.runs == [("spans", 0, 13, 3, tids[0] + tids[1]), ("spans", 1, 43, 3, tids[2] + tids[3])]
    assert [(t, p, o) for t, p, o, _ in got.rejected] == [("spans", 0, 11)]
    assert isinstance(got.rejected[0][3], DecodeError)
    assert [ev.code() for ev in got.events] == [ck.KafkaError._PARTITION_EOF]
    assert e.buffered(tids) == [True, True, True, True, False, False]
    e.forget([tids[1]])
    assert e.first_buffered(tids[0] + tids[1] + tids[1] + tids[4], [1, 1, 2, 0]) == [0, 1, 2, 0]
    assert e.first_buffered(tids[1] + tids[2] + tids[1] + tids[4] + tids[3], [2, 3]) == [1, 2]
    with pytest.raises(ValueError, match="sizes add up to 3"):
        e.first_buffered(tids[0] + tids[1], [1, 2])
