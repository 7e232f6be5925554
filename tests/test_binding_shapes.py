"""What Python sees of the core's results, now that they cross through their `serde::Serialize` (pythonize)
rather than dicts built by hand in the binding: the keys, their types and units, pinned."""

from __future__ import annotations

from pathlib import Path

from otlp_builders import STATUS_ERROR, make_request, make_span
from tailsample import _native, inspect_payload
from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.storage import FileStorage

ALWAYS = [{"name": "all", "type": "always_sample"}]
T0 = 1_700_000_000_000_000_000


def _payload(n: int = 3) -> bytes:
    tid = b"\x07" * 16
    return make_request({"service.name": "shop"}, [
        make_span(tid, (i + 1).to_bytes(8, "big"), start=T0 + i, duration_ms=2, name=f"op{i}",
                  status=STATUS_ERROR if i == 0 else 0) for i in range(n)])


def test_inspect_payload_keys_and_values():
    assert inspect_payload(_payload()) == {"spans": 3, "traces": 1, "resource_spans": 1,
                                           "min_start_unix_nano": T0, "max_end_unix_nano": T0 + 2 + 2_000_000}


def test_policy_stats_recent_kept_and_red_metrics_shapes():
    e = Engine(Config.from_dict({"decision_wait": "1s", "policies": ALWAYS,
                                 "tailsample": {"red_metrics": {}}}))
    e.ingest(_payload(), now=0.0)
    e.flush(now=2.5)
    assert e.policy_stats() == {"all": {"sampled": 1, "not_sampled": 0, "dropped": 0, "errors": 0, "decided": 1}}
    (row,) = e.recent_kept()
    assert row == {"trace_id": "07" * 16, "decided_at": 2.5, "span_count": 3}
    red = e.red_metrics()
    assert red is not None
    series = {s.span_name: s for s in red.series}
    assert set(series) == {"op0", "op1", "op2"}
    s = series["op0"]
    assert (s.service, s.calls, s.errors, s.status_code, s.overflow) == ("shop", 1, 1, 2, False)
    assert abs(s.duration_sum - 0.002) < 1e-9  # seconds, not nanoseconds
    assert len(s.bucket_counts) == len(red.bounds) + 1 and sum(s.bucket_counts) == 1


def test_replay_report_shape_with_a_torn_tail(tmp_path: Path):
    """Scenario: tail storage reopened after garbage was appended to its last segment.
    Guarantees: the report's keys as before, `duration` in seconds, the truncation a dict naming its file."""
    config = Config.from_dict({"decision_wait": "10s", "tail_storage": "file_storage/b", "policies": ALWAYS})
    e = Engine(config, storage=FileStorage(tmp_path), now=100.0)
    e.ingest(_payload(), now=100.0)
    del e
    segments = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 0)
    assert segments
    with segments[-1].open("ab") as f:
        f.write(b"\x00\x01torn")
    r = Engine(config, storage=FileStorage(tmp_path), now=101.0).replay_report()
    assert r is not None
    assert set(r) == {"duration", "segments", "bytes", "payloads", "payloads_invalid", "rounds", "decisions",
                      "acknowledged_round", "traces_pending", "spans_pending", "traces_resent", "spans_resent",
                      "spans_covered", "spans_not_sampled", "truncations"}
    assert isinstance(r["duration"], float) and r["duration"] < 60
    assert (r["payloads"], r["traces_pending"], r["spans_pending"]) == (1, 1, 3)
    assert r["acknowledged_round"] is None
    (t,) = r["truncations"]
    assert set(t) == {"segment", "file", "offset", "bytes", "reason"}
    assert isinstance(t["file"], str) and Path(t["file"]).exists() and t["bytes"] == 6 and t["reason"]


def test_queue_and_memory_stats_keys(tmp_path: Path):
    q = _native.NativeQueue(str(tmp_path), _native.NativeBudget(1 << 20), 10)
    q.push(b"x")
    stats = q.stats()
    assert set(stats) == {"items", "in_flight", "bytes", "segments", "pushed", "done", "refused_full",
                          "refused_storage_full", "recovered", "corrupt", "fsyncs"}
    assert (stats["items"], stats["pushed"]) == (1, 1)
    for m in (_native.memory_stats(), _native.memory_purge()):
        assert set(m) == {"heap_bytes", "committed_bytes", "peak_committed_bytes"}
        assert all(isinstance(v, int) and v >= 0 for v in m.values())


def test_gap_report_keys_are_the_documented_ones():
    """Scenario: a call from frontend to an address nobody answered, kept (an error), and a span whose parent
    never came. Guarantees: the report, its pairs and broken services have exactly the keys `tailsample.engine`
    documents (the TypedDicts), trace IDs in hex, addresses a mapping."""
    from typing import get_type_hints

    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from tailsample.engine import BrokenService, GapPair, GapReport

    e = Engine(Config.from_dict({"decision_wait": "1s", "policies": ALWAYS,
                                 "tailsample": {"propagation_audit": {}}}))
    tid = b"\x09" * 16
    e.ingest(make_request({"service.name": "frontend"}, [
        make_span(tid, b"\x01" * 8, name="GET /", kind=Span.SpanKind.SPAN_KIND_SERVER),
        make_span(tid, b"\x02" * 8, parent=b"\x01" * 8, name="POST /pay", kind=Span.SpanKind.SPAN_KIND_CLIENT,
                  attributes={"server.address": "payments", "server.port": 8080}),
        make_span(tid, b"\x03" * 8, parent=b"\x07" * 8, name="lost", kind=Span.SpanKind.SPAN_KIND_SERVER),
    ]), now=0.0)
    e.flush(now=5.0)
    r = e.gaps()
    assert r is not None
    assert set(r) == set(get_type_hints(GapReport))
    assert r["pairs"] and r["broken"] and isinstance(r["addresses"], dict)
    for p in r["pairs"]:
        assert set(p) == set(get_type_hints(GapPair))
    gap = next(p for p in r["pairs"] if p["gaps"])
    assert gap["examples"] == gap["kept_examples"] == ["09" * 16]
    for b in r["broken"]:
        assert set(b) == set(get_type_hints(BrokenService))
        assert b["examples"] == ["09" * 16]
