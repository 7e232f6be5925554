"""The synthetic traffic generator: valid OTLP, real trace trees, the configured shares, and its own truth.

Runs without the native module: `tailsample.traffic.synth` is pure Python + numpy, loaded from its file when the
package itself cannot be imported yet.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def _load_synth() -> ModuleType:
    try:
        from tailsample.traffic import synth
        return synth
    except ImportError:  # the native module is not built: load the pure-Python file on its own
        path = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "traffic" / "synth.py"
        spec = importlib.util.spec_from_file_location("tailsample_synth_standalone", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


synth = _load_synth()
FORCE_KEY = "http.request.header.x-force-trace"
NS = 1_000_000_000


@dataclass
class Parsed:
    """Every span of a sample, parsed with opentelemetry-proto, with where it came from."""

    spans: list[tuple[Span, str, float]] = field(default_factory=list)  # (span, service.name, batch t)
    by_trace: dict[bytes, list[tuple[Span, str, float]]] = field(default_factory=lambda: defaultdict(list))
    batches: list = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)


def _attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def _parse(batches) -> Parsed:
    p = Parsed(batches=list(batches))
    for b in p.batches:
        req = ExportTraceServiceRequest.FromString(b.payload)
        p.requests.append(req)
        for rs in req.resource_spans:
            service = _attrs(rs.resource.attributes)["service.name"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    p.spans.append((s, service, b.t))
                    p.by_trace[s.trace_id].append((s, service, b.t))
    return p


@pytest.fixture(scope="module")
def gen_and_sample():
    """3 s at 20k spans/s with raised shares, so that every case appears often enough to check."""
    gen = synth.TrafficGenerator(seed=7, spans_per_second=20_000, error_share=0.03, slow_share=0.03,
                                 forced_share=0.01)
    return gen, _parse(gen.batches(3.0))


@pytest.fixture(scope="module")
def sample(gen_and_sample) -> Parsed:
    return gen_and_sample[1]


def test_every_payload_is_an_sdk_like_export_request(sample):
    """
    /// Scenario: parse every payload with opentelemetry-proto.
    /// Guarantees: one ResourceSpans per payload, with the resource attributes of an SDK (service, k8s, host,
    ///   telemetry.sdk.*) and a schema URL; one or two ScopeSpans, each with a named, versioned scope; the
    ///   Batch's span count is the payload's.
    """
    assert len(sample.requests) > 50
    for b, req in zip(sample.batches, sample.requests, strict=True):
        assert len(req.resource_spans) == 1
        rs = req.resource_spans[0]
        attrs = _attrs(rs.resource.attributes)
        for key in ("service.name", "service.version", "deployment.environment.name", "host.name",
                    "k8s.pod.name", "k8s.namespace.name", "telemetry.sdk.name", "telemetry.sdk.language",
                    "telemetry.sdk.version"):
            assert isinstance(attrs.get(key), str) and attrs[key], key
        assert rs.schema_url.startswith("https://opentelemetry.io/schemas/")
        assert 1 <= len(rs.scope_spans) <= 2
        for ss in rs.scope_spans:
            assert ss.scope.name and ss.scope.version
            assert len(ss.spans) > 0
        assert len({ss.scope.name for ss in rs.scope_spans}) == len(rs.scope_spans)
        assert b.spans == sum(len(ss.spans) for ss in rs.scope_spans)
        # Re-encoding with the reference encoder gives the same bytes: nothing odd (unknown fields,
        # duplicated fields, non-minimal varints) hides in the hand-written wire format.
        assert req.SerializeToString() == b.payload


def test_ids_kinds_flags_and_times_are_valid(sample):
    """
    /// Guarantees: trace IDs 16 bytes, span IDs 8 bytes, both never all zero; parent 8 bytes or empty;
    ///   a known span kind; the W3C sampled flag; start <= end, times in the simulated epoch.
    """
    for s, _, _ in sample.spans:
        assert len(s.trace_id) == 16 and any(s.trace_id)
        assert len(s.span_id) == 8 and any(s.span_id)
        assert len(s.parent_span_id) in (0, 8)
        assert s.parent_span_id == b"" or any(s.parent_span_id)
        assert s.kind in (Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT,
                          Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER)
        assert s.flags & 0x1 and s.flags & 0x100
        assert synth.EPOCH_NS <= s.start_time_unix_nano <= s.end_time_unix_nano
        assert s.name
        assert s.status.code in (Status.STATUS_CODE_UNSET, Status.STATUS_CODE_ERROR)


def test_each_trace_is_one_tree_with_children_inside_parents(sample):
    """
    /// Guarantees: per trace one root (no parent), a SERVER span; every other parent exists in the trace;
    ///   span IDs unique in the trace; a child starts and ends within its parent; a non-root SERVER span is
    ///   the child of a CLIENT span of another service; a CONSUMER is the child of a PRODUCER.
    """
    kinds = Counter()
    for spans in sample.by_trace.values():
        by_id = {s.span_id: (s, svc) for s, svc, _ in spans}
        assert len(by_id) == len(spans)
        roots = [s for s, _, _ in spans if not s.parent_span_id]
        assert len(roots) == 1
        assert roots[0].kind == Span.SPAN_KIND_SERVER
        for s, svc, _ in spans:
            kinds[s.kind] += 1
            if not s.parent_span_id:
                continue
            assert s.parent_span_id in by_id
            parent, parent_svc = by_id[s.parent_span_id]
            assert parent.start_time_unix_nano <= s.start_time_unix_nano
            assert s.end_time_unix_nano <= parent.end_time_unix_nano
            if s.kind == Span.SPAN_KIND_SERVER:
                assert parent.kind == Span.SPAN_KIND_CLIENT and parent_svc != svc
                assert s.flags & 0x200  # remote parent
            if s.kind == Span.SPAN_KIND_CONSUMER:
                assert parent.kind == Span.SPAN_KIND_PRODUCER
                assert len(s.links) == 1 and s.links[0].span_id == parent.span_id
                assert s.links[0].trace_id == s.trace_id
    # All five kinds occur, INTERNAL/CLIENT/SERVER often, messaging now and then.
    common = (Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert min(kinds[k] for k in common) > 1000
    assert 0 < kinds[Span.SPAN_KIND_PRODUCER] == kinds[Span.SPAN_KIND_CONSUMER] < 0.05 * len(sample.spans)


def test_trace_sizes_are_skewed_between_1_and_50(gen_and_sample):
    gen, _ = gen_and_sample
    sizes = [t.spans for t in gen.truth.values()]
    assert min(sizes) == 1 and max(sizes) <= 50
    assert 5 <= statistics.median(sizes) <= 8
    assert statistics.mean(sizes) > statistics.median(sizes)  # a long tail
    assert max(sizes) >= 30


def test_spans_carry_semantic_convention_attributes(sample):
    """
    /// Guarantees: about ten attributes per span, the common semantic-convention keys with the right types
    ///   (status code and ports are ints, cache.hit a bool).
    """
    seen: dict[str, set[type]] = defaultdict(set)
    counts = []
    for s, _, _ in sample.spans[:20_000]:
        counts.append(len(s.attributes))
        for k, v in _attrs(s.attributes).items():
            seen[k].add(type(v))
    assert 8 <= statistics.mean(counts) <= 13
    expected = {"http.request.method": str, "http.route": str, "url.path": str,
                "http.response.status_code": int, "server.address": str, "peer.service": str,
                "rpc.system": str, "db.system.name": str, "db.query.text": str, "user.id": str,
                "net.peer.port": int, "cache.hit": bool, "messaging.system": str, "app.amount": float}
    for key, typ in expected.items():
        assert seen.get(key) == {typ}, key


def test_truth_matches_the_payloads(gen_and_sample, sample):
    """
    /// Scenario: compare every trace in the payloads with the generator's truth.
    /// Guarantees: same traces and span counts; `error` iff a span has status ERROR, and then some span has
    ///   http.response.status_code 500 and an exception event; `slow` iff the root lasts over 1 s (others
    ///   under 0.8 s); `forced` iff the root has the force header "true"; `duration_ms` is the root's
    ///   duration.
    """
    gen, _ = gen_and_sample
    truth = gen.truth
    assert set(truth) == set(sample.by_trace)
    for tid, spans in sample.by_trace.items():
        t = truth[tid]
        assert t.trace_id == tid
        assert t.spans == len(spans)
        errors = [s for s, _, _ in spans if s.status.code == Status.STATUS_CODE_ERROR]
        assert t.error == bool(errors)
        if errors:
            assert any(_attrs(s.attributes).get("http.response.status_code") == 500 for s in errors)
            assert all(s.status.message and any(e.name == "exception" for e in s.events) for s in errors)
        else:
            assert all(_attrs(s.attributes).get("http.response.status_code", 200) < 500 for s, _, _ in spans)
        root = next(s for s, _, _ in spans if not s.parent_span_id)
        duration = root.end_time_unix_nano - root.start_time_unix_nano
        assert t.duration_ms == pytest.approx(duration / 1e6)
        assert t.slow == (duration > 1 * NS)
        if not t.slow:
            assert duration < 0.8 * NS
        # The trace's duration as a collector computes it (min start to max end) is the root's.
        assert min(s.start_time_unix_nano for s, _, _ in spans) == root.start_time_unix_nano
        assert max(s.end_time_unix_nano for s, _, _ in spans) == root.end_time_unix_nano
        forced = [s for s, _, _ in spans if FORCE_KEY in _attrs(s.attributes)]
        assert t.forced == bool(forced)
        if forced:
            assert forced == [root] and _attrs(root.attributes)[FORCE_KEY] == "true"


def test_a_trace_spreads_over_several_payloads_arriving_close_together(sample):
    """
    /// Guarantees: a trace touching several services arrives in several payloads (one exporter per service
    ///   replica); its spans arrive within 8 s (inside the default 10 s decision wait), most within 1 s.
    """
    multi = spread_ok = 0
    for spans in sample.by_trace.values():
        services = {svc for _, svc, _ in spans}
        times = [t for _, _, t in spans]
        assert max(times) - min(times) < 8.0
        spread_ok += max(times) - min(times) < 1.0
        if len(services) > 1:
            multi += 1
            assert len(set(times)) > 1
    assert multi > 0.5 * len(sample.by_trace)
    assert spread_ok > 0.95 * len(sample.by_trace)


def test_late_spans_exist_but_are_rare(sample):
    """A span is late when its batch arrives over 1 s after the span ended (simulated clock vs span end)."""
    late = 0
    for s, _, t in sample.spans:
        ended = (s.end_time_unix_nano - synth.EPOCH_NS) / NS
        assert t >= ended  # nothing arrives before it ended
        late += t - ended > 1.0
    assert 0 < late < 0.01 * len(sample.spans)


def test_batches_respect_the_payload_size_and_arrive_in_order():
    """
    /// Guarantees: never more than spans_per_payload spans in a payload, most payloads full (busy
    ///   exporters); t starts near 0 and never decreases; the offered rate is spans_per_second.
    """
    gen = synth.TrafficGenerator(seed=3, spans_per_second=30_000, spans_per_payload=100)
    batches = list(gen.batches(5.0))
    sizes = [b.spans for b in batches]
    assert max(sizes) == 100
    assert Counter(sizes)[100] > 0.5 * len(batches)
    times = [b.t for b in batches]
    assert times == sorted(times)
    assert 0.0 < times[0] < 0.5
    total = sum(sizes)
    assert total == pytest.approx(30_000 * 5.0, rel=0.03)
    assert total == sum(t.spans for t in gen.truth.values())
    in_window = sum(b.spans for b in batches if b.t <= 5.0)
    assert in_window > 0.95 * total
    for b in batches[::25]:
        scopes = ExportTraceServiceRequest.FromString(b.payload).resource_spans[0].scope_spans
        assert sum(len(ss.spans) for ss in scopes) <= 100


def test_shares_match_the_configuration_over_a_large_sample():
    """
    /// Scenario: 10 simulated seconds at 50k spans/s (~65k traces) with the default shares, truth only.
    /// Guarantees: error 1 %, slow 1 %, forced 0.1 % of traces, within ~5 standard deviations.
    """
    gen = synth.TrafficGenerator(seed=11)
    spans = sum(b.spans for b in gen.batches(10.0))
    truth = list(gen.truth.values())
    n = len(truth)
    assert spans == pytest.approx(500_000, rel=0.03)
    for name, share in (("error", 0.01), ("slow", 0.01), ("forced", 0.001)):
        count = sum(getattr(t, name) for t in truth)
        sd = (n * share * (1 - share)) ** 0.5
        assert abs(count - n * share) < 5 * sd, (name, count, n * share)
    assert all(t.duration_ms > 1000 for t in truth if t.slow)
    assert all(t.duration_ms < 800 for t in truth if not t.slow)


def test_other_shares_are_honoured():
    gen = synth.TrafficGenerator(seed=5, spans_per_second=20_000, error_share=0.2, slow_share=0.0,
                                 forced_share=0.5)
    for _ in gen.batches(3.0):
        pass
    truth = list(gen.truth.values())
    n = len(truth)
    assert sum(t.error for t in truth) == pytest.approx(0.2 * n, rel=0.1)
    assert sum(t.forced for t in truth) == pytest.approx(0.5 * n, rel=0.05)
    assert not any(t.slow for t in truth)


def test_max_spans_per_trace_is_a_bound():
    gen = synth.TrafficGenerator(seed=2, spans_per_second=5_000, max_spans_per_trace=3)
    parsed = _parse(gen.batches(1.0))
    assert max(len(spans) for spans in parsed.by_trace.values()) <= 3
    assert max(t.spans for t in gen.truth.values()) <= 3
    single = synth.TrafficGenerator(seed=2, spans_per_second=2_000, max_spans_per_trace=1)
    parsed = _parse(single.batches(1.0))
    assert all(len(spans) == 1 and not spans[0][0].parent_span_id for spans in parsed.by_trace.values())


def test_deterministic_from_the_seed():
    def run(seed: int) -> list[tuple[bytes, float]]:
        gen = synth.TrafficGenerator(seed=seed, spans_per_second=10_000)
        return [(b.payload, b.t) for b in gen.batches(2.0)]

    first = run(42)
    assert first == run(42)
    assert first != run(43)


def test_a_second_call_continues_the_simulated_time():
    gen = synth.TrafficGenerator(seed=9, spans_per_second=10_000)
    first = list(gen.batches(2.0))
    second = list(gen.batches(2.0))
    assert second[0].t >= first[-1].t
    assert second[-1].t >= 4.0
    ids_first = set().union(*(synth.count_spans_by_trace(b.payload) for b in first))
    ids_second = set().union(*(synth.count_spans_by_trace(b.payload) for b in second))
    assert not ids_first & ids_second
    assert len(gen.truth) == len(ids_first) + len(ids_second)
    assert list(gen.batches(0.0)) == []


def test_count_spans_by_trace_agrees_with_protobuf(sample):
    counts: dict[bytes, int] = {}
    for b in sample.batches:
        synth.count_spans_by_trace(b.payload, counts)
    assert counts == {tid: len(spans) for tid, spans in sample.by_trace.items()}
    assert synth.count_spans_by_trace(b"") == {}
    with pytest.raises(ValueError):
        synth.count_spans_by_trace(sample.batches[0].payload[:-3])


@pytest.mark.parametrize("kwargs", [
    {"spans_per_second": 0}, {"spans_per_second": float("nan")}, {"error_share": 1.5}, {"slow_share": -0.1},
    {"forced_share": 2}, {"max_spans_per_trace": 0}, {"spans_per_payload": 0},
])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        synth.TrafficGenerator(**kwargs)


def test_negative_duration_is_rejected():
    with pytest.raises(ValueError):
        list(synth.TrafficGenerator().batches(-1.0))
