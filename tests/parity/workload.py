"""Seeded OTLP workloads for the parity suite: the same payloads go to tailsample and to the reference processor.

`main_workload()` builds more than 20,000 traces: a bulk of realistic traces whose attributes, statuses, trace
states, flags and durations are drawn from pools full of edge values, plus targeted groups that sit exactly on
the edges every policy has (latency at, 1 ns and 1 ms around its thresholds; span counts at the bounds; string,
numeric and boolean attributes on the resource or on a span, of the wrong type, empty; W3C trace states valid
and not; probabilistic hashes a few units from the threshold). A fifth of the traces arrive in several payloads
and under several resources. `scripted(...)` builds the small ordered workloads of the stateful cases.

Every trace remembers how it was made, so a failing comparison can say what the trace looked like (`facts`).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otlp_builders import (
    MS,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    T0,
    AttrValue,
    attrs,
    fnv1a_64,
    make_span,
    span_id,
    trace_id,
)

SEED = 20_260_425
U64 = (1 << 64) - 1
FNV_PRIME = 0x100000001B3
FNV_OFFSET = 0xCBF29CE484222325
DEFAULT_SALT = "default-hash-seed"

# ---- the probabilistic policy's threshold, as the reference computes it ------------------------------------


def reference_threshold(pct: float) -> int:
    """The reference's threshold for `sampling_percentage: pct` (processor/tailsamplingprocessor, probabilistic.go):

        ratio := samplingPercentage / 100                       // a float64 division
        boundary := new(big.Float).SetInt(MaxUint64)            // precision 64 bits
        threshold, _ := boundary.Mul(boundary, big.NewFloat(ratio)).Uint64()

    i.e. (2^64 - 1) * float64(pct / 100), rounded to 64 significant bits (nearest, ties to even), then truncated
    to an integer (clamped to [0, 2^64 - 1]). A trace is sampled iff FNV-1a-64(salt || trace ID) <= threshold.
    """
    ratio = float(pct) / 100.0  # IEEE double division, as in Go
    if ratio <= 0:
        return 0
    exact = Fraction(U64) * Fraction(ratio)
    e = math.floor(math.log2(exact))  # exact's exponent: 2^e <= exact < 2^(e+1) (corrected below)
    while Fraction(2) ** e > exact:
        e -= 1
    while Fraction(2) ** (e + 1) <= exact:
        e += 1
    ulp = Fraction(2) ** (e - 63)  # 64 significant bits
    q = exact / ulp
    n = math.floor(q)
    rem = q - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    rounded = n * ulp
    return min(U64, math.floor(rounded))


def exact_threshold(pct: float | str) -> int:
    """floor((2^64 - 1) * pct / 100) in exact arithmetic from the decimal text: what a reimplementation that does
    not copy the float64 steps would compute. It differs from `reference_threshold` by up to a few hundred."""
    ratio = Fraction(str(pct)) / 100
    if ratio <= 0:
        return 0
    return min(U64, math.floor(U64 * ratio))


def prob_hash(tid: bytes, salt: str = "") -> int:
    return fnv1a_64((salt or DEFAULT_SALT).encode() + tid)


# ---- trace IDs whose salted FNV-1a hash is a chosen value ----------------------------------------------------
#
# FNV-1a steps h <- (h XOR b) * P. XOR-ing the byte b into h adds d = (L XOR b) - L to h, where L is h's low
# byte, and any d in [-L, 255 - L] is reachable. So the hash of salt || ID is s*P^16 + sum(d_i * P^(16-i))
# mod 2^64 (s: the state after the salt), and hitting a target is finding small d_i with a linear congruence:
# a closest-vector problem in the lattice {d : sum(d_i * P^(16-i)) = 0 mod 2^64}, solved with an LLL-reduced
# basis (computed once, ~0.2 s) and Babai's nearest plane; a short random walk on the lattice then finds a
# d whose every step is reachable. Exact, and about a millisecond per ID.


def _lll(basis: list[list[int]], delta: Fraction = Fraction(99, 100)) -> list[list[int]]:
    b = [list(v) for v in basis]
    n = len(b)

    def dot(u: Sequence[Any], v: Sequence[Any]) -> Any:
        return sum(x * y for x, y in zip(u, v, strict=True))

    bstar: list[list[Fraction]] = []
    bn: list[Fraction] = []
    mu = [[Fraction(0)] * n for _ in range(n)]
    for i in range(n):
        v = [Fraction(x) for x in b[i]]
        for j in range(i):
            mu[i][j] = dot(b[i], bstar[j]) / bn[j]
            v = [x - mu[i][j] * y for x, y in zip(v, bstar[j], strict=True)]
        bstar.append(v)
        bn.append(dot(v, v))

    def size_reduce(k: int, j: int) -> None:
        q = round(mu[k][j])
        if q:
            b[k] = [x - q * y for x, y in zip(b[k], b[j], strict=True)]
            mu[k][j] -= q
            for i in range(j):
                mu[k][i] -= q * mu[j][i]

    k = 1
    while k < n:
        size_reduce(k, k - 1)
        if bn[k] < (delta - mu[k][k - 1] ** 2) * bn[k - 1]:
            m = mu[k][k - 1]
            new = bn[k] + m * m * bn[k - 1]
            mu[k][k - 1] = m * bn[k - 1] / new
            bn[k] = bn[k - 1] * bn[k] / new
            bn[k - 1] = new
            b[k], b[k - 1] = b[k - 1], b[k]
            for j in range(k - 1):
                mu[k][j], mu[k - 1][j] = mu[k - 1][j], mu[k][j]
            for i in range(k + 1, n):
                t = mu[i][k]
                mu[i][k] = mu[i][k - 1] - m * t
                mu[i][k - 1] = t + mu[k][k - 1] * mu[i][k]
            k = max(k - 1, 1)
        else:
            for j in range(k - 2, -1, -1):
                size_reduce(k, j)
            k += 1
    return b


@cache
def _fnv_lattice() -> tuple[list[list[int]], list[list[Fraction]], list[Fraction]]:
    m = 1 << 64
    inv = pow(FNV_PRIME, -1, m)
    coef = [pow(FNV_PRIME, 16 - i, m) for i in range(16)]
    basis = []
    for i in range(15):
        v = [0] * 16
        v[i] = 1
        v[15] = (-coef[i] * inv) % m
        basis.append(v)
    basis.append([0] * 15 + [m])
    red = sorted(_lll(basis), key=lambda r: sum(x * x for x in r))
    for r in red:
        assert sum(x * y for x, y in zip(r, coef, strict=True)) % m == 0
    bstar: list[list[Fraction]] = []
    bn: list[Fraction] = []
    for i in range(16):
        v = [Fraction(x) for x in red[i]]
        for j in range(i):
            mu = sum(x * y for x, y in zip(red[i], bstar[j], strict=True)) / bn[j]
            v = [x - mu * y for x, y in zip(v, bstar[j], strict=True)]
        bstar.append(v)
        bn.append(sum(x * x for x in v))
    return red, bstar, bn


def _fnv_state(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & U64
    return h


def _steps_to_bytes(state: int, d: Sequence[int]) -> bytes | None:
    out = bytearray()
    h = state
    for di in d:
        low = h & 0xFF
        v = low + di
        if not 0 <= v <= 255:
            return None
        b = low ^ v
        out.append(b)
        h = ((h ^ b) * FNV_PRIME) & U64
    return bytes(out)


def trace_id_with_hash(target: int, salt: str, rng: random.Random, avoid: set[bytes] | None = None) -> bytes:
    """A 16-byte trace ID whose FNV-1a-64(salt || ID) is exactly `target` (and not in `avoid`)."""
    red, bstar, bn = _fnv_lattice()
    m = 1 << 64
    s = _fnv_state((salt or DEFAULT_SALT).encode())
    goal = (target - s * pow(FNV_PRIME, 16, m)) % m
    d = [0] * 15 + [(goal * pow(FNV_PRIME, -1, m)) % m]
    for j in range(15, -1, -1):  # Babai's nearest plane
        q = round(sum(x * y for x, y in zip(d, bstar[j], strict=True)) / bn[j])
        if q:
            d = [x - q * y for x, y in zip(d, red[j], strict=True)]
    candidate = d
    for _ in range(20_000):
        tid = _steps_to_bytes(s, candidate)
        if tid is not None and any(tid) and (avoid is None or tid not in avoid):
            assert prob_hash(tid, salt) == target
            return tid
        candidate = list(d)
        for _ in range(rng.randint(1, 3)):
            row = red[rng.randrange(16)]
            sign = rng.choice((-1, 1))
            candidate = [x + sign * y for x, y in zip(candidate, row, strict=True)]
    raise RuntimeError(f"no trace ID found for hash {target:#x}")


# ---- traces, parts, payloads ---------------------------------------------------------------------------------


@dataclass
class Part:
    """Spans of one trace that arrive together under one resource and scope."""

    resource: dict[str, Any] | None
    spans: list[Span]
    scope: tuple[Any, ...] = ("parity.lib", "1.0")  # (name, version[, ((attribute key, value), ...)])
    resource_schema_url: str = ""
    scope_schema_url: str = ""
    gap: int = 1  # payloads between this part and the previous part of the same trace


@dataclass
class Trace:
    tid: bytes
    group: str
    parts: list[Part]
    note: str = ""
    payloads: list[int] = field(default_factory=list)

    @property
    def spans(self) -> list[Span]:
        return [s for p in self.parts for s in p.spans]


@dataclass(eq=False)
class Workload:
    traces: list[Trace]
    payloads: list[bytes]

    def by_hex(self) -> dict[str, Trace]:
        return {t.tid.hex(): t for t in self.traces}

    def file_bytes(self) -> bytes:
        return b"".join(struct.pack(">I", len(p)) + p for p in self.payloads)

    @property
    def span_count(self) -> int:
        return sum(len(t.spans) for t in self.traces)


def _resource_key(part: Part) -> tuple[Any, ...]:
    res = None if part.resource is None else repr(sorted(part.resource.items(), key=lambda kv: kv[0]))
    return (res, part.resource_schema_url)


def assemble(traces: Sequence[Trace], *, parts_per_payload: int = 24,
             one_trace_per_payload: bool = False) -> list[bytes]:
    """Place the parts of the traces, in this order, into payloads: a trace's first part goes into the payload
    being filled, each later part `gap` payloads after the previous one. In a payload, parts that share a
    resource share a ResourceSpans, and parts that also share a scope share a ScopeSpans."""
    slots: dict[int, list[Part]] = {}
    cursor = 0
    for t in traces:
        if one_trace_per_payload:
            first = cursor
            cursor += 1 + sum(p.gap for p in t.parts[1:])
        else:
            first = cursor // parts_per_payload
            cursor += 1
        idx = first
        t.payloads = []
        for n, part in enumerate(t.parts):
            if n:
                idx += part.gap
            slots.setdefault(idx, []).append(part)
            t.payloads.append(idx)
    payloads = []
    for i in range(max(slots) + 1 if slots else 0):
        parts = slots.get(i, [])
        if not parts:
            continue
        groups: dict[tuple[Any, ...], dict[tuple[Any, ...], list[Span]]] = {}
        heads: dict[tuple[Any, ...], Part] = {}
        for part in parts:
            rk = _resource_key(part)
            heads.setdefault(rk, part)
            groups.setdefault(rk, {}).setdefault((part.scope, part.scope_schema_url), []).extend(part.spans)
        req = ExportTraceServiceRequest()
        for rk, scopes in groups.items():
            head = heads[rk]
            rs = ResourceSpans(schema_url=head.resource_schema_url)
            if head.resource is not None:
                rs.resource.attributes.extend(attrs(head.resource))
            for (scope, scope_url), spans in scopes.items():
                ss = ScopeSpans(spans=spans, schema_url=scope_url)
                ss.scope.name, ss.scope.version = scope[:2]
                if len(scope) > 2:
                    ss.scope.attributes.extend(attrs(dict(scope[2])))
                rs.scope_spans.append(ss)
            req.resource_spans.append(rs)
        payloads.append(req.SerializeToString())
    # renumber the payload indices of the traces after dropping empty slots
    used = sorted(slots)
    renumber = {old: new for new, old in enumerate(used)}
    for t in traces:
        t.payloads = [renumber[i] for i in t.payloads]
    return payloads


# ---- facts about a trace, for failure messages ---------------------------------------------------------------


def _fmt_value(v: Any) -> str:
    kind = v.WhichOneof("value")
    if kind is None:
        return "empty"
    val = getattr(v, kind)
    short = {"string_value": "str", "int_value": "int", "double_value": "double", "bool_value": "bool",
             "bytes_value": "bytes", "array_value": "array", "kvlist_value": "kvlist"}[kind]
    if kind in ("array_value", "kvlist_value"):
        return short
    return f"{short}:{val!r}"


def reference_latency_ms(spans: Iterable[Span], threshold_ms: int, upper_ms: int = 0) -> tuple[bool, int]:
    """The reference's latency policy walk (latency.go): min start / max end as spans come (a 0 start or end
    counts as unset), whole milliseconds truncated, and it stops at the first span where the running duration
    satisfies the condition. Returns (sampled, the running duration in ms when it stopped or at the end)."""
    lo = hi = 0
    ms = 0
    for s in spans:
        if lo == 0 or s.start_time_unix_nano < lo:
            lo = s.start_time_unix_nano
        if hi == 0 or s.end_time_unix_nano > hi:
            hi = s.end_time_unix_nano
        diff = (hi - lo) & U64  # uint64 subtraction, then int64: Go's int64(maxTime-minTime)
        if diff >= 1 << 63:
            diff -= 1 << 64
        ms = abs(diff) // MS * (1 if diff >= 0 else -1)  # Go's integer division truncates toward zero
        ok = ms > threshold_ms if upper_ms == 0 else threshold_ms < ms <= upper_ms
        if ok:
            return True, ms
    return False, ms


def facts(t: Trace) -> str:
    """A one-line description of what matters about a trace to the policies."""
    spans = t.spans
    starts = [s.start_time_unix_nano for s in spans]
    ends = [s.end_time_unix_nano for s in spans]
    dur_ns = max(ends) - min(starts)
    trunc = abs(dur_ns) // MS * (1 if dur_ns >= 0 else -1)
    out = [f"[{t.group}{': ' + t.note if t.note else ''}]", f"{len(spans)} spans in payloads {t.payloads}",
           f"duration {dur_ns} ns = {dur_ns / MS:.6f} ms (trunc {trunc})"]
    if any(s == 0 for s in starts) or any(e == 0 for e in ends):
        out.append("zero timestamps present")
    status_names = {STATUS_UNSET: "UNSET", STATUS_OK: "OK", STATUS_ERROR: "ERROR"}
    out.append("status " + ",".join(status_names.get(s.status.code, str(s.status.code)) for s in spans))
    names = sorted({s.name for s in spans})
    out.append(f"names {names}")
    res = []
    for i, p in enumerate(t.parts):
        if p.resource:
            res.append(f"r{i}{{" + ", ".join(f"{kv.key}={_fmt_value(kv.value)}" for kv in attrs(p.resource)) + "}")
    if res:
        out.append("resources " + " ".join(res))
    sattrs = []
    for i, s in enumerate(spans):
        if s.attributes:
            sattrs.append(f"s{i}{{" + ", ".join(f"{a.key}={_fmt_value(a.value)}" for a in s.attributes) + "}")
    if sattrs:
        out.append("span attrs " + " ".join(sattrs))
    ts = [s.trace_state for s in spans if s.trace_state]
    if ts:
        out.append(f"tracestate {ts}")
    flags = [hex(s.flags) for s in spans if s.flags]
    if flags:
        out.append(f"flags {flags}")
    events = [e.name for s in spans for e in s.events]
    if events:
        out.append(f"events {events}")
    return "; ".join(out)


# ---- the main workload ---------------------------------------------------------------------------------------

SERVICES = ["checkout", "cart", "auth", "search", "frontend"]
ROUTES: list[Any] = ["/api/checkout", "/api/pay", "/health", "/api/v2/users/42", "/admin/panel", "",
                     "/API/checkout", "/api/checkout/", 42, True]
HTTP_CODES: list[Any] = [200, 200, 200, 404, 499, 500, 503, 599, 600, -1, 0, "503", 503.0, 499.5, True]
DEBUG_VALUES: list[Any] = [True, False, "true", 1, 0.0, ""]
NAMES = ["GET /api", "POST /api", "GET /api ", "get /api", "db.query", "GET /health", "GET /api/v2"]
TRACESTATES = ["", "", "", "vendor=on", "vendor=off", "other=1,vendor=on", "vendor=on,vendor=off", "Vendor=on",
               " vendor=on ", "vendor= on", "a=1,,vendor=on", "vendor=on,BAD=1", "vendor=on=x",
               "t1@sys=on", "vendor=x", "ot=th:8;rv:0123456789abcd,vendor=on"]
FLAGS: list[int | None] = [None, None, 0, 1, 0x101, 0x100, 3, 2, 0xFF]

# the probabilistic configurations under test: (salt, percentage); the workload holds traces whose hashes sit
# exactly at, and a few units around, both the reference threshold and the exact-arithmetic threshold
PROBABILISTIC = [("", 10), ("parity-salt", 33.3), ("", 0.01), ("", 50), ("parity-salt", 1.5), ("", 99.99)]
# attribute keys the configs read
K_ROUTE = "http.route"
K_CODE = "http.status_code"
K_RESP = "http.response.status_code"
K_DEBUG = "debug"
K_FORCE = "http.request.header.x-force-trace"
K_FORCE_UNDERSCORES = "http.request.header.x_force_trace"
K_TENANT = "tenant"
K_OTTL = "ottl.value"
# list and map values for OTTL's conversions: JSON text (sorted keys, HTML escapes, go-json floats, base64 bytes),
# Len, equality
OTTL_LISTS: list[Any] = [["a", "b"], [1, 2, 3], [], ["x<y", 'q"uote', "a&b"], [1.5, 1e-7, 1e21, True, b"\x01\xff"],
                         [{"k": "v"}, ["n"]], ["é", "\n\t", "\u2028"], [float("nan")], ["b"], [3, 2, 1]]
OTTL_MAPS: list[Any] = [{"b": 1, "a": "x"}, {}, {"k": [1, 2]}, {"z": 1e-7, "y": b"ab"}, {"m": {"n": "deep"}},
                        {"a": "b", "c": "d", "e": "f"}, {"a": "x", "b": 1}, {"B": 1, "a": 2, "_": 3}]
OTTL_STATUS_MESSAGES = ["", "timeout", "Timeout while connecting", "é", "upstream TIMEOUT"]
OTTL_SCOPES: list[tuple[Any, ...]] = [("parity.lib", "1.0"), ("db.lib", "2.3.1", (("team", "db"), ("tier", 2))),
                                      ("db.lib", ""), ("pay.lib", "9.9", (("team", "payments"),)),
                                      ("pay.lib", "2.3.1", (("team", "Payments"), ("tier", "2")))]


class Gen:
    """Makes spans and traces from one seeded generator; every span ID is unique."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tids: set[bytes] = set()
        self.sids: set[bytes] = set()
        self.traces: list[Trace] = []

    def new_tid(self) -> bytes:
        while True:
            tid = trace_id(self.rng)
            if tid not in self.tids:
                self.tids.add(tid)
                return tid

    def claim_tid(self, tid: bytes) -> bytes:
        assert tid not in self.tids
        self.tids.add(tid)
        return tid

    def new_sid(self) -> bytes:
        while True:
            sid = span_id(self.rng)
            if sid not in self.sids:
                self.sids.add(sid)
                return sid

    def span(self, tid: bytes, *, parent: bytes = b"", start: int = T0, dur_ns: int = 10 * MS,
             end: int | None = None, status: int = STATUS_UNSET, attributes: Mapping[str, Any] | None = None,
             name: str = "op", flags: int | None = None, trace_state: str = "",
             events: Sequence[str] = ()) -> Span:
        s = make_span(tid, self.new_sid(), parent=parent, name=name, start=start,
                      end=start + dur_ns if end is None else end, status=status, attributes=attributes,
                      flags=flags)
        if trace_state:
            s.trace_state = trace_state
        for i, ev in enumerate(events):
            e = s.events.add()
            e.name = ev
            e.time_unix_nano = start + i
        return s

    def add(self, group: str, parts: list[Part], tid: bytes, note: str = "") -> Trace:
        t = Trace(tid, group, parts, note)
        self.traces.append(t)
        return t

    def simple(self, group: str, *, note: str = "", resource: dict[str, Any] | None = None,
               tid: bytes | None = None, **span_kw: Any) -> Trace:
        """A one-span trace."""
        tid = self.new_tid() if tid is None else self.claim_tid(tid)
        res = {"service.name": self.rng.choice(SERVICES)} if resource is None else resource
        return self.add(group, [Part(res, [self.span(tid, **span_kw)])], tid, note)

    def two_parts(self, group: str, first: dict[str, Any], second: dict[str, Any], *, note: str = "",
                  res1: dict[str, Any] | None = None, res2: dict[str, Any] | None = None, gap: int = 1) -> Trace:
        """A trace of a root span and a child span that arrive in different payloads (`gap` apart)."""
        tid = self.new_tid()
        root = self.span(tid, **first)
        child = self.span(tid, parent=root.span_id, **second)
        r1 = res1 if res1 is not None else {"service.name": "frontend"}
        r2 = res2 if res2 is not None else {"service.name": "checkout"}
        return self.add(group, [Part(r1, [root]), Part(r2, [child], gap=gap)], tid, note)


def _generic(g: Gen, n: int) -> None:
    rng = g.rng
    for _ in range(n):
        tid = g.new_tid()
        nspans = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 12])
        base = T0 + rng.randrange(0, 10**9)
        roll = rng.random()
        if roll < 0.1:  # right at a latency threshold
            total = rng.choice([100, 500, 1000]) * MS + rng.choice([-MS, -1, 0, 1, MS - 1, MS])
        elif roll < 0.2:
            total = int(rng.expovariate(1 / (600 * MS)))
        else:
            total = int(rng.expovariate(1 / (60 * MS))) + 1
        spans = []
        root_sid = b""
        for i in range(nspans):
            kw: dict[str, Any] = {}
            if i == 0:
                start, dur = base, total
            else:
                start = base + rng.randrange(0, max(1, total))
                dur = rng.randrange(0, max(1, base + total - start + 1))
                if rng.random() < 0.05:  # a child that outlives the root
                    dur += rng.randrange(0, 200 * MS)
            st = rng.random()
            kw["status"] = STATUS_ERROR if st < 0.04 else STATUS_OK if st < 0.12 else STATUS_UNSET
            a: dict[str, Any] = {}
            if rng.random() < 0.5:
                a[K_ROUTE] = rng.choice(ROUTES)
            if rng.random() < 0.4:
                a[K_CODE] = rng.choice(HTTP_CODES)
            if rng.random() < 0.3:
                a[K_RESP] = rng.choice(HTTP_CODES)
            if rng.random() < 0.1:
                a[K_DEBUG] = rng.choice(DEBUG_VALUES)
            if rng.random() < 0.1:
                a[K_TENANT] = rng.choice(["acme", "acme-staging", "globex", "", "ACME", "initech-acme"])
            kw["attributes"] = a
            kw["name"] = rng.choice(NAMES)
            if rng.random() < 0.15:
                kw["trace_state"] = rng.choice(TRACESTATES)
            if rng.random() < 0.3:
                kw["flags"] = rng.choice(FLAGS)
            if rng.random() < 0.03:
                kw["events"] = [rng.choice(["exception", "retry", "Exception"])]
            s = g.span(tid, parent=root_sid, start=start, dur_ns=dur, **kw)
            if i == 0:
                root_sid = s.span_id
            spans.append(s)
        # resources: usually one; sometimes the spans are split between two or three services
        nres = 1 if rng.random() < 0.8 else rng.choice([2, 3])
        parts: list[Part] = []
        cuts = sorted(rng.sample(range(1, nspans), min(nres - 1, nspans - 1))) if nspans > 1 else []
        bounds = [0, *cuts, nspans]
        spread = rng.random() < 0.25
        for j in range(len(bounds) - 1):
            res: dict[str, Any] = {"service.name": rng.choice(SERVICES)}
            if rng.random() < 0.3:
                res["deployment.environment"] = rng.choice(["prod", "staging"])
            if rng.random() < 0.05:
                res[K_ROUTE] = rng.choice(ROUTES)
            if rng.random() < 0.03:
                res[K_DEBUG] = rng.choice(DEBUG_VALUES)
            if rng.random() < 0.03:
                res[K_CODE] = rng.choice(HTTP_CODES)
            if rng.random() < 0.03:
                res[K_TENANT] = rng.choice(["acme", "globex"])
            gap = (rng.choice([0, 1, 1, 2, 5, 30]) if spread else 0) if j else 1
            parts.append(Part(res, spans[bounds[j]:bounds[j + 1]], gap=gap))
        if spread and len(parts) == 1 and nspans > 1:  # one service, several payloads
            k = rng.randrange(1, nspans)
            parts = [Part(parts[0].resource, spans[:k]), Part(parts[0].resource, spans[k:], gap=rng.choice([1, 3]))]
        g.add("generic", parts, tid)


def _latency(g: Gen) -> None:
    for threshold in (100, 500, 1000):
        for base_ms in (threshold - 1, threshold, threshold + 1, threshold + 2):
            for delta in (-1, 0, 1, MS - 1):
                dur = base_ms * MS + delta
                g.simple("latency-edge", note=f"one span of {dur} ns", dur_ns=dur)
                # the same duration from two spans in two payloads: min start in the second, max end in the first
                g.two_parts("latency-edge", {"start": T0 + 5 * MS, "end": T0 + dur},
                            {"start": T0, "dur_ns": MS}, note=f"two spans spanning {dur} ns")
    # the reference stops at the first span where the running duration satisfies the condition: with an upper
    # bound, a trace whose first span alone lies in (threshold, upper] is sampled even if the whole is longer
    for first_ms, total_ms in ((150, 700), (101, 501), (499, 2000), (500, 501), (50, 150), (600, 300)):
        g.two_parts("latency-prefix", {"start": T0, "dur_ns": first_ms * MS},
                    {"start": T0 + 10 * MS, "end": T0 + total_ms * MS},
                    note=f"first span {first_ms} ms, whole trace {max(first_ms, total_ms)} ms")
        g.two_parts("latency-prefix", {"start": T0 + 20 * MS, "dur_ns": first_ms * MS},
                    {"start": T0, "end": T0 + total_ms * MS},
                    note=f"first span {first_ms} ms, second span starts earlier, whole {total_ms + 20} ms")
    # spans with a zero start (broken clocks): the reference treats a 0 start or end as unset while it walks
    for first, second in (((0, 0), (T0, T0 + 50 * MS)), ((T0, T0 + 50 * MS), (0, 0)),
                          ((0, T0 + 50 * MS), (T0, T0 + 60 * MS)), ((0, 0), (T0, T0 + 150 * MS)),
                          ((T0, T0 + 150 * MS), (0, T0 + 160 * MS)), ((0, 0), (0, 0))):
        g.two_parts("latency-zero", {"start": first[0], "end": first[1]}, {"start": second[0], "end": second[1]},
                    res1={"service.name": "auth"}, res2={"service.name": "auth"}, gap=0,
                    note=f"spans {first} then {second}, in this order in one payload")
    # end before start
    g.simple("latency-negative", note="end 200 ms before start", start=T0 + 200 * MS, end=T0)
    g.two_parts("latency-negative", {"start": T0 + 300 * MS, "end": T0}, {"start": T0, "dur_ns": 120 * MS},
                note="first span ends before it starts")


def _statuses(g: Gen) -> None:
    combos = [(STATUS_UNSET,), (STATUS_OK,), (STATUS_ERROR,), (STATUS_UNSET, STATUS_OK), (STATUS_UNSET, STATUS_ERROR),
              (STATUS_OK, STATUS_ERROR), (STATUS_OK, STATUS_UNSET, STATUS_ERROR), (STATUS_OK, STATUS_OK)]
    for combo in combos:
        for spread in (False, True):
            tid = g.new_tid()
            spans = [g.span(tid, status=c, start=T0 + i * MS) for i, c in enumerate(combo)]
            parts = ([Part({"service.name": "auth"}, [s], gap=2) for s in spans] if spread
                     else [Part({"service.name": "auth"}, spans)])
            g.add("status-edge", parts, tid, note=f"statuses {combo}, {'one payload each' if spread else 'together'}")


def _probabilistic(g: Gen) -> None:
    for salt, pct in PROBABILISTIC:
        ref = reference_threshold(pct)
        exact = exact_threshold(pct)
        targets = {ref + k for k in range(-3, 4)} | {exact + k for k in range(-2, 3)}
        lo, hi = sorted((ref, exact))
        if hi - lo > 2:
            targets |= {(lo + hi) // 2, lo + 1, hi - 1}
        for target in sorted(x for x in targets if 0 <= x <= U64):
            for _ in range(2):
                tid = trace_id_with_hash(target, salt, g.rng, avoid=g.tids)
                rel = target - ref
                g.simple("probabilistic-edge", tid=tid,
                         note=f"salt {salt or DEFAULT_SALT!r} hash = reference threshold({pct}) {rel:+d} "
                              f"(exact-arithmetic threshold {exact - ref:+d})")


def _strings(g: Gen) -> None:
    cases: list[tuple[dict[str, Any] | None, dict[str, Any], str]] = [
        ({K_ROUTE: "/api/checkout"}, {}, "value on the resource"),
        ({}, {K_ROUTE: "/api/checkout"}, "value on the span"),
        ({K_ROUTE: ""}, {}, "empty value on the resource"),
        ({}, {K_ROUTE: ""}, "empty value on the span"),
        ({K_ROUTE: 42}, {}, "int on the resource"),
        ({}, {K_ROUTE: 42}, "int on the span"),
        ({K_ROUTE: True}, {}, "bool on the resource"),
        ({}, {K_ROUTE: 3.5}, "double on the span"),
        ({K_ROUTE: ["a"]}, {}, "array on the resource"),
        ({}, {K_ROUTE: ["/api/checkout"]}, "array on the span"),
        ({}, {K_ROUTE: ["x", "/api/checkout"]}, "array on the span, second element"),
        ({K_ROUTE: ["/api/checkout"]}, {}, "array of the route on the resource"),
        ({}, {K_ROUTE: []}, "empty array on the span"),
        ({K_ROUTE: []}, {}, "empty array on the resource"),
        ({}, {K_ROUTE: [""]}, "array of an empty string on the span"),
        ({K_ROUTE: [""]}, {}, "array of an empty string on the resource"),
        ({}, {K_ROUTE: {"path": "/api/pay"}}, "map on the span"),
        ({}, {K_FORCE_UNDERSCORES: ["true"]}, "captured header as Python instrumentation sends it"),
        ({}, {K_FORCE: ["true"]}, "captured header as an array, spelled with dashes"),
        ({}, {K_FORCE: "true"}, "header as a string, spelled with dashes"),
        ({}, {K_FORCE_UNDERSCORES: "true"}, "header as a string, spelled with underscores"),
        ({K_FORCE_UNDERSCORES: ["true"]}, {}, "captured header array on the resource"),
        ({}, {K_ROUTE: b"/api/checkout"}, "bytes on the span"),
        ({K_ROUTE: "/health"}, {K_ROUTE: "/api/checkout"}, "resource /health, span /api/checkout"),
        ({}, {K_ROUTE: "/api/checkout "}, "trailing space"),
        ({}, {K_ROUTE: "/API/checkout"}, "other case"),
        ({}, {K_ROUTE: "/admin/panel"}, "admin"),
        ({K_ROUTE: "/admin/panel"}, {}, "admin on the resource"),
        ({}, {K_ROUTE: "/api/v2/users/42"}, "versioned route"),
        ({}, {K_ROUTE: "/api/vX/users/42"}, "non-numeric version"),
        ({}, {K_ROUTE: "x/api/v10/users"}, "versioned route not at the start"),
        ({}, {"http.route.extra": "/api/checkout"}, "another key"),
        ({}, {K_TENANT: "acme"}, "tenant acme"),
        ({}, {K_TENANT: "initech-acme"}, "tenant containing acme"),
        ({K_TENANT: "ACME"}, {}, "tenant ACME on the resource"),
        (None, {K_ROUTE: "/api/pay"}, "no resource at all"),
        ({}, {}, "no attributes"),
    ]
    for res, span_attrs, note in cases:
        for spread in (False, True):
            if spread:
                t = g.two_parts("string-edge", {"attributes": {}}, {"attributes": span_attrs},
                                res1={"service.name": "frontend"},
                                res2=None if res is None else {"service.name": "checkout", **res},
                                note=note + ", in the second payload")
            else:
                r = None if res is None else {"service.name": "checkout", **res}
                t = g.simple("string-edge", resource=r, attributes=span_attrs, note=note)
            assert t


def _numbers_and_bools(g: Gen) -> None:
    codes: list[AttrValue | None] = [499, 500, 501, 599, 600, -1, -5, -6, 0, 1, 10, 11, "503", "0", 503.0, 0.5, True,
                                     False, None, [500], [200, 503], [503.0], [], ["503"]]
    for v in codes:
        for where in ("resource", "span", "second"):
            a: dict[str, AttrValue] = {} if v is None else {K_CODE: v}
            note = f"{K_CODE}={v!r} on the {where}"
            if where == "resource":
                g.simple("numeric-edge", resource={"service.name": "cart", **a}, note=note)
            elif where == "span":
                g.simple("numeric-edge", attributes=a, note=note)
            else:
                g.two_parts("numeric-edge", {"attributes": {K_CODE: 200}}, {"attributes": a},
                            note=note + " span, the first span has 200")
    flags: list[AttrValue | None] = [True, False, "true", "false", 1, 0, "", None, [True], [False], ["true"], []]
    for v in flags:
        for where in ("resource", "span"):
            a = {} if v is None else {K_DEBUG: v}
            note = f"{K_DEBUG}={v!r} on the {where}"
            if where == "resource":
                g.simple("boolean-edge", resource={"service.name": "search", **a}, note=note)
            else:
                g.simple("boolean-edge", attributes=a, note=note)
    g.two_parts("boolean-edge", {"attributes": {K_DEBUG: True}}, {"attributes": {K_DEBUG: False}},
                note="debug true on one span, false on another")


def _trace_state_and_flags(g: Gen) -> None:
    long_ok = "v" * 249  # "vendor" + 249 = 255 < 256: the reference keeps it as a configured value
    long_dropped = "w" * 250  # 256: the reference ignores this configured value
    states = [*TRACESTATES, f"vendor={long_ok}", f"vendor={long_dropped}",
              ",".join(f"k{i}=1" for i in range(31)) + ",vendor=on",
              ",".join(f"k{i}=1" for i in range(32)) + ",vendor=on", "vendor=on\t", "\tvendor=on", "vendor=ON"]
    for ts in states:
        g.simple("trace-state-edge", trace_state=ts, note=f"tracestate {ts[:60]!r}")
        g.two_parts("trace-state-edge", {"trace_state": "vendor=off"}, {"trace_state": ts},
                    note=f"second span's tracestate {ts[:60]!r}")
    for fl in (None, 0, 1, 0x101, 0x100, 3, 2, 0xFF, 0xFFFFFFFF, 0x200):
        g.simple("trace-flags-edge", flags=fl, note=f"flags {fl!r}")
        g.two_parts("trace-flags-edge", {"flags": 0}, {"flags": fl}, note=f"second span flags {fl!r}")


def _ottl(g: Gen) -> None:
    for v in (500, 499, 503, 599, 600, "503", 500.0, 499.5, True, None):
        a = {} if v is None else {K_RESP: v}
        g.simple("ottl-edge", attributes=a, name="db.query", note=f"{K_RESP}={v!r} on the span")
        g.simple("ottl-edge", resource={"service.name": "cart", **a}, name="db.query",
                 note=f"{K_RESP}={v!r} on the resource")
    for name in ("GET /api", "GET /api ", "get /api", "GET /api/v2", "POST /api", "POST", ""):
        g.simple("ottl-edge", name=name, note=f"name {name!r}")
        g.two_parts("ottl-edge", {"name": "root"}, {"name": name}, note=f"second span named {name!r}")
    for ev in ("exception", "Exception", "retry"):
        g.simple("ottl-edge", events=[ev], note=f"event {ev!r}")
    g.simple("ottl-edge", resource={"service.name": "checkout"}, note="service checkout")
    for v in OTTL_LISTS + OTTL_MAPS:
        g.simple("ottl-edge", attributes={K_OTTL: v}, note=f"{K_OTTL}={v!r}")
        g.simple("ottl-edge", resource={"service.name": "cart", K_OTTL: v}, note=f"resource {K_OTTL}={v!r}")
        g.two_parts("ottl-edge", {"name": "root"}, {"attributes": {K_OTTL: v}}, note=f"second span {K_OTTL}={v!r}")
    # the same value on the span and its resource, and maps equal whatever the order of their entries
    for v, w in [(["a", "b"], ["a", "b"]), (["a", "b"], ["b", "a"]), ({"b": 1, "a": "x"}, {"a": "x", "b": 1}),
                 ({"a": "x"}, {"a": "x", "b": 1}), ([1, 2, 3], [1.0, 2, 3]), ([float("nan")], [float("nan")]),
                 ({}, {}), ([], {})]:
        g.simple("ottl-edge", attributes={K_OTTL: v}, resource={"service.name": "cart", K_OTTL: w},
                 note=f"span {K_OTTL}={v!r}, resource {K_OTTL}={w!r}")
    for msg in OTTL_STATUS_MESSAGES:
        t = g.simple("ottl-edge", status=STATUS_ERROR, note=f"status message {msg!r}")
        t.parts[0].spans[0].status.message = msg
    for scope in OTTL_SCOPES:
        tid = g.new_tid()
        g.add("ottl-edge", [Part({"service.name": "search"}, [g.span(tid, name="scoped")], scope=scope)], tid,
              note=f"scope {scope!r}")


def _span_counts(g: Gen) -> None:
    for n in range(1, 9):
        for layout in ("together", "one payload each", "two resources"):
            tid = g.new_tid()
            spans = [g.span(tid, start=T0 + i * MS) for i in range(n)]
            if layout == "together":
                parts = [Part({"service.name": "search"}, spans)]
            elif layout == "one payload each":
                parts = [Part({"service.name": "search"}, [s], gap=1) for s in spans]
            else:
                k = max(1, n // 2)
                parts = [Part({"service.name": "search"}, spans[:k])]
                if spans[k:]:
                    parts.append(Part({"service.name": "cart"}, spans[k:], gap=0))
            g.add("span-count-edge", parts, tid, note=f"{n} spans, {layout}")


@cache
def main_workload(n_generic: int = 20_000, seed: int = SEED) -> Workload:
    """The shared workload of the stateless cases (built once per process)."""
    g = Gen(seed)
    _latency(g)
    _statuses(g)
    _probabilistic(g)
    _strings(g)
    _numbers_and_bools(g)
    _trace_state_and_flags(g)
    _ottl(g)
    _span_counts(g)
    _generic(g, n_generic)
    traces = list(g.traces)
    g.rng.shuffle(traces)
    payloads = assemble(traces)
    return Workload(traces, payloads)


# ---- Go regular expressions -----------------------------------------------------------------------------------

# `http.route` values on which Go's RE2 and a Unicode-aware engine disagree: letters and digits outside ASCII,
# the case-folding orbits of k (Kelvin sign) and s (long s), Greek with a combining mark only Script_Extensions
# counts as Greek, characters that are syntax in one engine and not the other
REGEX_VALUES: list[str] = [
    "éfoo", "foo", "x foo y", "café", "cafe_1", "١٢٣", "123", "\uff13", "\u212a", "k", "K", "\u017f", "s", "a.b*",
    "axb*", "\u03b1\u03b2\u03b3", "\u03b1\u0342", "ΑΒΓ", "<a>", "a{", "a\x0bb", "a\u00a0b", "ǅ", "ǆ", "A", "x" * 1000,
    "ß", "SS",
]


def regex_workload() -> Workload:
    """One one-span trace per `REGEX_VALUES` value, as `http.route` on the span, each in its own payload."""
    g = Gen(SEED + 19)
    for v in REGEX_VALUES:
        g.simple("regex", attributes={K_ROUTE: v}, note=repr(v))
    return Workload(list(g.traces), assemble(g.traces, one_trace_per_payload=True))


# ---- scripted workloads for the stateful policies ------------------------------------------------------------


def scripted(script: Sequence[Mapping[str, Any]], seed: int = 7) -> Workload:
    """Traces in this order, each in its own payload(s). A script entry: `spans` (count), and optionally
    `status`, `attributes`, `resource`, `dur_ms`, `name`, `payloads` (spread the spans over this many payloads,
    consecutive), `resources` (2: half of each payload's spans under a second resource and scope),
    `schema_url` (on the resource and scope), `unknown` (unknown fields in every span, see add_unknown_fields),
    `note`."""
    g = Gen(seed)
    for entry in script:
        tid = g.new_tid()
        n = int(entry["spans"])
        spans = []
        root = b""
        for i in range(n):
            s = g.span(tid, parent=root, start=T0 + i * 1000, dur_ns=int(entry.get("dur_ms", 10)) * MS,
                       status=entry.get("status", STATUS_UNSET) if i == 0 else STATUS_UNSET,
                       attributes=entry.get("attributes", {}) if i == 0 else {},
                       name=entry.get("name", "op"))
            if i == 0:
                root = s.span_id
            if entry.get("unknown"):
                add_unknown_fields(s)
            spans.append(s)
        k = int(entry.get("payloads", 1))
        res = dict(entry.get("resource", {"service.name": "checkout"}))
        url = str(entry.get("schema_url", ""))
        step = math.ceil(n / k)
        parts = [Part(res, spans[i:i + step], resource_schema_url=url, scope_schema_url=url, gap=1)
                 for i in range(0, n, step)]
        if entry.get("resources", 1) == 2:  # the second half of every part under another resource, same payload
            split = []
            for part in parts:
                half = max(1, len(part.spans) // 2)
                split.append(Part(part.resource, part.spans[:half], resource_schema_url=url, scope_schema_url=url,
                                  gap=part.gap))
                if part.spans[half:]:
                    split.append(Part({"service.name": "cart", "host.name": "h-2"}, part.spans[half:],
                                      scope=("other.lib", "2.0"), gap=0))
            parts = split
        g.add("scripted", parts, tid, note=str(entry.get("note", "")))
    payloads = assemble(g.traces, one_trace_per_payload=True)
    return Workload(list(g.traces), payloads)


# ---- unknown fields (trace sizes) ------------------------------------------------------------------------------

# Fields no OTLP version defines (numbers 100 and 15 beyond each message's last), as a newer SDK might send:
# every protobuf runtime keeps them on parse, pdata drops them, so the reference's sizes leave them out.
UNKNOWN_SPAN_FIELD = bytes([0xA2, 0x06, 4]) + b"junk"  # field 100, length-delimited
UNKNOWN_VARINT_FIELD = bytes([0x78, 0xAC, 0x02])  # field 15, varint 300


def add_unknown_fields(s: Span) -> None:
    """Unknown fields on the span, inside its status, and inside an added attribute's KeyValue and AnyValue."""
    s.MergeFromString(UNKNOWN_SPAN_FIELD)
    s.status.MergeFromString(UNKNOWN_VARINT_FIELD)
    kv = s.attributes.add()
    kv.key = "with.unknown"
    kv.value.string_value = "v"
    kv.MergeFromString(UNKNOWN_VARINT_FIELD)
    kv.value.MergeFromString(UNKNOWN_VARINT_FIELD)
