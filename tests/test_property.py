"""Property: random traffic in, exactly the spans of the traces the policies keep out, once each, unchanged.

Random traces (1-6 spans, some with an ERROR span, durations around the latency threshold, a forced attribute on
a span or on a resource, near-misses of each) are cut into random payloads in random arrival orders: the spans
of one trace may arrive over several payloads, children before the root, all within the decision wait of the
trace's first span. Time is injected, with polls at random moments. The decisions the engine must reach are
computed here independently, from the spans actually sent, for the status_code, latency, string_attribute and
probabilistic policies (FNV-1a written in Python).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_builders import (
    MS,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    T0,
    Ledger,
    assert_output_is,
    assert_stats_invariant,
    make_resource_spans,
    make_scope_spans,
    make_span,
    new_engine,
    probabilistic_hash,
    probabilistic_threshold,
    read_output,
    request,
    span_id,
    trace_id,
)

FORCE = "http.request.header.x-force-trace"
THRESHOLD_MS = 1000
PCT = 20
SALT = "property-salt"
DECISION_WAIT = 5.0
POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": THRESHOLD_MS}},
    {"name": "forced", "type": "string_attribute", "string_attribute": {"key": FORCE, "values": ["true"]}},
    {"name": "random", "type": "probabilistic", "probabilistic": {"sampling_percentage": PCT, "hash_salt": SALT}},
]
# Resources a span may come under; "forced" carries the forcing attribute, "near" a value that must not force.
RESOURCES: dict[str, dict[str, Any]] = {
    "front": {"service.name": "frontend"},
    "back": {"service.name": "backend", "host.name": "h-1"},
    "near": {"service.name": "near-miss", FORCE: "TRUE"},
    "forced": {"service.name": "qa", FORCE: "true"},
}
SCOPES = [(("lib.http", "1.0"), ""), (("lib.db", "2.1"), "https://opentelemetry.io/schemas/1.26.0")]
RESOURCE_SCHEMA = {"front": "", "back": "https://opentelemetry.io/schemas/1.24.0", "near": "", "forced": "r"}

DURATIONS_NS = {
    "short": lambda r: r.randint(1, 900) * MS,
    "exactly": lambda r: THRESHOLD_MS * MS,
    "just-under": lambda r: THRESHOLD_MS * MS + 999_999,  # 1000.999999 ms is 1000 whole ms: not over
    "just-over": lambda r: (THRESHOLD_MS + 1) * MS,
    "long": lambda r: r.randint(1100, 5000) * MS,
}

trace_specs = st.fixed_dictionaries({
    "spans": st.integers(1, 6),
    "error": st.booleans(),
    "ok_spans": st.booleans(),
    "duration": st.sampled_from(sorted(DURATIONS_NS)),
    "force": st.sampled_from(["none", "span", "span-wrong-value", "span-empty", "resource", "near-resource"]),
    "arrival": st.floats(0.0, 20.0, allow_nan=False),
    "spread": st.floats(0.0, DECISION_WAIT - 0.5),
})


@dataclass
class SentSpan:
    span: Span
    resource: str
    scope: int
    at: float  # arrival time the generator wanted (a payload carries it at most 0.3 s later)


@dataclass
class Trace:
    tid: bytes
    spans: list[SentSpan] = field(default_factory=list)

    def votes(self) -> dict[str, bool]:
        """What each policy must vote, computed from the spans as sent."""
        s = [x.span for x in self.spans]
        duration_ns = max(x.end_time_unix_nano for x in s) - min(x.start_time_unix_nano for x in s)
        forced = any(x.resource == "forced" for x in self.spans) or any(
            kv.key == FORCE and kv.value.HasField("string_value") and kv.value.string_value == "true"
            for x in s for kv in x.attributes)
        return {
            "errors": any(x.status.code == STATUS_ERROR for x in s),
            "slow": duration_ns // MS > THRESHOLD_MS,
            "forced": forced,
            "random": probabilistic_hash(self.tid, SALT) <= probabilistic_threshold(PCT),
        }


THRESHOLD = probabilistic_threshold(PCT)


def make_trace(r: random.Random, spec: dict[str, Any]) -> Trace:
    """One trace after `spec`: its spans, where each comes from and when it should arrive."""
    while True:
        tid = trace_id(r)
        if abs(probabilistic_hash(tid, SALT) - THRESHOLD) > 1 << 16:  # clear of the threshold's rounding
            break
    n = spec["spans"]
    d = DURATIONS_NS[spec["duration"]](r)
    start = T0 + r.randint(0, 10**12)
    root = span_id(r)
    spans: list[Span] = []
    for i in range(n):
        s0 = start + r.randint(0, d // 2)
        e0 = s0 + r.randint(0, start + d - s0)
        spans.append(make_span(tid, root if i == 0 else span_id(r), parent=b"" if i == 0 else root,
                               name=f"op-{i}", start=s0, end=e0,
                               status=STATUS_OK if spec["ok_spans"] and r.random() < 0.5 else STATUS_UNSET))
    # the trace spans exactly [start, start + d], over any of its spans
    spans[r.randrange(n)].start_time_unix_nano = start
    spans[r.randrange(n)].end_time_unix_nano = start + d
    if spec["error"]:
        spans[r.randrange(n)].status.code = STATUS_ERROR
    force = spec["force"]
    value = {"span": "true", "span-wrong-value": "yes", "span-empty": ""}.get(force)
    if value is not None:
        spans[r.randrange(n)].attributes.add(key=FORCE).value.string_value = value
    homes = [r.choice(["front", "back"]) for _ in range(n)]
    if force in ("resource", "near-resource"):
        homes[r.randrange(n)] = "forced" if force == "resource" else "near"
    # arrivals: the first at `arrival`, the others within `spread` of it (in any order, children first too)
    offsets = [r.uniform(0, spec["spread"]) for _ in range(n)]
    offsets[r.randrange(n)] = 0.0
    t = Trace(tid)
    for sp, home, off in zip(spans, homes, offsets, strict=True):
        t.spans.append(SentSpan(sp, home, r.randrange(len(SCOPES)), spec["arrival"] + off))
    return t


def payloads_of(r: random.Random, traces: list[Trace]) -> list[tuple[float, bytes, list[SentSpan]]]:
    """All spans cut into payloads in arrival order; a payload holds spans wanted within 0.3 s of its first and
    goes in at the latest of their times, so no span is later than wanted by more than 0.3 s."""
    spans = sorted((s for t in traces for s in t.spans), key=lambda s: s.at)
    groups: list[list[SentSpan]] = []
    for s in spans:
        if groups and s.at - groups[-1][0].at <= 0.3 and r.random() < 0.7 and len(groups[-1]) < 12:
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for g in groups:
        r.shuffle(g)
        by_resource: dict[str, dict[int, list[Span]]] = {}
        for s in g:
            by_resource.setdefault(s.resource, {}).setdefault(s.scope, []).append(s.span)
        rss = [make_resource_spans(RESOURCES[res], [make_scope_spans(sp, scope=SCOPES[k][0], schema_url=SCOPES[k][1])
                                                    for k, sp in scopes.items()], schema_url=RESOURCE_SCHEMA[res])
               for res, scopes in by_resource.items()]
        out.append((max(s.at for s in g), request(*rss), g))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(trace_specs, min_size=1, max_size=25), seed=st.integers(0, 2**32),
       shards=st.sampled_from([1, 3]), first_match=st.booleans(), polls=st.integers(0, 30))
def test_kept_spans_are_exactly_those_of_the_traces_the_policies_keep(specs, seed, shards, first_match, polls):
    """Scenario: the traffic described above, fed with controlled `now` and polled at random moments, then a
    last poll and a flush. Guarantees: the spans out are exactly the spans of the traces some policy keeps,
    each once, byte for byte, under the resource and scope it came with; each kept trace comes out at the first
    poll at or after its first arrival + decision_wait; nothing is left for the flush; counters agree with the
    independent decisions, policy by policy."""
    r = random.Random(seed)  # IDs, times and cuts: random, but not worth shrinking
    eng = new_engine(POLICIES, decision_wait=f"{int(DECISION_WAIT)}s", num_shards=shards,
                     sample_on_first_match=first_match)
    traces = [make_trace(r, spec) for spec in specs]
    votes = {t.tid: t.votes() for t in traces}
    kept = {tid for tid, v in votes.items() if any(v.values())}
    sent = payloads_of(r, traces)
    end = max(at for at, _, _ in sent)
    poll_times = sorted(r.uniform(0, end + DECISION_WAIT + 1) for _ in range(polls))
    events = sorted([(at, 0, p, g) for at, p, g in sent] + [(t, 1, b"", []) for t in poll_times],
                    key=lambda e: (e[0], e[1]))
    led = Ledger()
    first_arrival: dict[bytes, float] = {}
    came_out_at: dict[bytes, float] = {}
    outputs: list[bytes] = []

    def collect(payloads: list[bytes], now: float) -> None:
        outputs.extend(payloads)
        for s in read_output(payloads):
            came_out_at.setdefault(s.trace_id, now)

    for at, kind, payload, group in events:
        if kind == 0:
            eng.ingest(led.add(payload), now=at)
            for s in group:
                first_arrival.setdefault(s.span.trace_id, at)
        else:
            collect(eng.poll(now=at), at)
    last = end + DECISION_WAIT + 1.0
    collect(eng.poll(now=last), last)
    assert eng.flush(now=last) == [], "everything was due before the flush"

    assert_output_is(read_output(outputs), led.of_traces(kept))
    poll_moments = [*poll_times, last]
    for tid in kept:
        due = first_arrival[tid] + DECISION_WAIT
        first_poll = next(p for p in poll_moments if p >= due - 1e-6)
        if abs(first_poll - due) > 1e-6:
            assert came_out_at[tid] == first_poll

    s = assert_stats_invariant(eng)
    assert s["traces_received"] == len(traces)
    assert s["traces_sampled"] == len(kept)
    assert s["traces_not_sampled"] == len(traces) - len(kept)
    assert s["spans_received"] == len(led.spans)
    assert s["traces_in_memory"] == 0 and s["traces_evicted"] == 0
    ps = eng.policy_stats()
    assert list(ps) == [p["name"] for p in POLICIES]
    names = list(ps)
    for name in names:
        earlier = names[: names.index(name)]
        voted_yes = voters = decided = 0
        for v in votes.values():
            if first_match and any(v[n] for n in earlier):
                continue  # a policy before it sampled: it did not vote
            voters += 1
            voted_yes += v[name]
            decided += v[name] and not any(v[n] for n in earlier)
        assert ps[name]["sampled"] == voted_yes, name
        assert ps[name]["sampled"] + ps[name]["not_sampled"] + ps[name]["errors"] == voters, name
        assert ps[name]["decided"] == decided, name
