"""Synthetic OpenTelemetry trace traffic: OTLP `ExportTraceServiceRequest` payloads, realistic and fast.

Ten services of a shop (api-gateway, checkout, payment, inventory, user, search, recommendation,
notification, cart, shipping), one to three replicas each, each replica an SDK-like exporter with its own
resource. A trace is a real tree of 1-50 spans (median about 6): a SERVER root on the entry service, CLIENT
calls each followed by the callee's SERVER span, database and cache CLIENT spans, INTERNAL spans, now and
then a PRODUCER/CONSUMER pair, about ten semantic-convention attributes per span. Children lie inside their
parents in time. By default 1 % of traces have errors (status ERROR and `http.response.status_code` 500),
1 % are slow (root longer than 1 s; the others stay under 0.8 s) and 0.1 % carry
`http.request.header.x-force-trace: "true"` on the root: the cases the bundled policy configuration keeps.

Each exporter sends a payload (one ResourceSpans, one ScopeSpans per instrumentation scope present) when it
holds `spans_per_payload` spans or 0.2 s after the first of them arrived, as a batch span processor does. A
span reaches its exporter when it ends, plus a few ms; one span in 500 is 1-3 s late. All spans of a trace
arrive within 8 s of each other, inside the default 10 s decision wait.

Speed: a Python object per span would cap this far below the target, so spans are written as protobuf wire
bytes. Every span variant (operation x root/error/forced) is encoded once into a template with fixed-size
holes (IDs, times, status code, port, user ID, ...); a chunk of spans is made by broadcasting templates into
numpy rows and patching the holes column by column. Fixed-size holes keep every length prefix constant.
Within a payload, spans are grouped by variant, so a payload is a join of a few dozen runs of rows.

Measured on this project's 2-core AMD EPYC VM (Python 3.11, numpy 2.x; one core, load average ~2 from
other work), 30 simulated seconds at the default 50,000 spans/s (1.5 M spans, payloads consumed as they
come): 0.95-1.3 million spans/s over runs; 0.45-0.65 M spans/s when every payload is kept in a list (the
demo does; the cost is allocating 650 MB). `truth` is built when first read, about 2 us per trace. Command:

    python -c "import time, tailsample.traffic.synth as s; g = s.TrafficGenerator(); t = time.perf_counter();
               n = sum(b.spans for b in g.batches(30)); print(n / (time.perf_counter() - t))"
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Batch", "TraceTruth", "TrafficGenerator", "count_spans_by_trace"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5
STATUS_ERROR = 2
FORCE_KEY = "http.request.header.x-force-trace"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
# Span timestamps are this Unix time plus the simulated time (2025-06-15T12:00:00Z), so runs are reproducible.
EPOCH_NS = 1_749_988_800 * 1_000_000_000

_FLUSH_INTERVAL_S = 0.2  # exporter timer: a partial batch goes out this long after its first span
_LATE_SHARE = 0.002  # share of spans handed over 1-3 s late (slow export, retry)
_N_SHAPES = 1024  # trace topologies drawn once per generator; IDs, times and values vary per trace
_MAX_DEPTH = 12


# ------------------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One export: an ExportTraceServiceRequest from one exporter (one service replica)."""

    payload: bytes
    spans: int
    t: float  # simulated arrival time in seconds; non-decreasing across batches


@dataclass(frozen=True, slots=True)
class TraceTruth:
    """What the generator put into one trace, to check a sampler's decisions against."""

    trace_id: bytes
    spans: int
    error: bool
    slow: bool
    forced: bool
    duration_ms: float


class TrafficGenerator:
    """Deterministic synthetic OTLP traffic; see the module docstring for the model."""

    def __init__(self, *, seed: int = 1, spans_per_second: float = 50_000, error_share: float = 0.01,
                 slow_share: float = 0.01, forced_share: float = 0.001, max_spans_per_trace: int = 50,
                 spans_per_payload: int = 512) -> None:
        if not (spans_per_second > 0 and math.isfinite(spans_per_second)):
            raise ValueError(f"spans_per_second must be a positive number, got {spans_per_second!r}")
        for name, share in (("error_share", error_share), ("slow_share", slow_share),
                            ("forced_share", forced_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {share!r}")
        if not 1 <= max_spans_per_trace <= 10_000:
            raise ValueError(f"max_spans_per_trace must be within [1, 10000], got {max_spans_per_trace!r}")
        if spans_per_payload < 1:
            raise ValueError(f"spans_per_payload must be at least 1, got {spans_per_payload!r}")
        self.seed = seed
        self.spans_per_second = float(spans_per_second)
        self.error_share = error_share
        self.slow_share = slow_share
        self.forced_share = forced_share
        self.max_spans_per_trace = max_spans_per_trace
        self.spans_per_payload = spans_per_payload
        self._truth: dict[bytes, TraceTruth] = {}
        self._pending_truth: list[tuple[bytes, I64, npt.NDArray[np.bool_], npt.NDArray[np.bool_],
                                        npt.NDArray[np.bool_], F64]] = []
        self._rng = np.random.default_rng(seed)
        self._catalog = _Catalog(self._rng)
        self._shapes = _Shapes(self._catalog, self._rng, max_spans_per_trace)
        self.mean_spans_per_trace = float(self._shapes.size.mean())
        self._trace_rate = self.spans_per_second / self.mean_spans_per_trace
        self._variants: dict[int, _Variant] = {}
        self._clock = 0.0  # where the next call of `batches` starts, simulated seconds
        self._generated_until = 0.0

    @property
    def truth(self) -> dict[bytes, TraceTruth]:
        """Every trace generated so far, by trace ID (also traces whose spans are not all yielded yet)."""
        truth = self._truth
        for tids, size, error, slow, forced, duration_ms in self._pending_truth:
            for t, (sz, e, sl, f, dms) in enumerate(zip(size.tolist(), error.tolist(), slow.tolist(),
                                                         forced.tolist(), duration_ms.tolist(), strict=True)):
                key = tids[16 * t:16 * t + 16]
                truth[key] = TraceTruth(key, sz, e, sl, f, dms)
        self._pending_truth.clear()
        return truth

    def take_truth(self) -> dict[bytes, TraceTruth]:
        """The traces generated since the last call (or since the start), handed over and forgotten here: a
        caller that checks traces as it goes holds only those not yet checked. Each starts before
        `generated_until`."""
        taken, self._truth = self.truth, {}
        return taken

    @property
    def generated_until(self) -> float:
        """Every trace generated so far starts before this simulated time."""
        return self._generated_until

    def batches(self, duration_s: float) -> Iterator[Batch]:
        """Traffic of the traces that start within the next `duration_s` simulated seconds, in arrival order.

        Every span of those traces is delivered, so the last batches arrive a few seconds after the window.
        A later call continues the simulated time after the last batch of this one.
        """
        if not (duration_s >= 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration_s must be a non-negative number, got {duration_s!r}")
        start, end = self._clock, self._clock + duration_s
        queues = [_Queue() for _ in self._catalog.exporters]
        # Chunks of about 64k spans: large enough that per-chunk numpy overhead vanishes, small in memory.
        step = max(0.01, 65_536 / self.spans_per_second)
        last_t = start
        t0 = start
        while True:
            t1 = min(end, t0 + step)
            final = t1 >= end
            if t1 > t0:
                self._generate(t0, t1, queues)
                self._generated_until = t1
            for batch in self._drain(queues, math.inf if final else t1):
                last_t = batch.t
                yield batch
            if final:
                break
            t0 = t1
        self._clock = max(end, last_t)

    # -- one chunk of traces ---------------------------------------------------------------------------------
    def _generate(self, t0: float, t1: float, queues: list[_Queue]) -> None:
        """Make the traces starting in [t0, t1): their truth, and a record per span in its exporter queue."""
        rng, shapes, cat = self._rng, self._shapes, self._catalog
        n_traces = int(rng.poisson(self._trace_rate * (t1 - t0)))
        if n_traces == 0:
            return
        trace_start = t0 + np.sort(rng.random(n_traces)) * (t1 - t0)
        shape = rng.integers(0, len(shapes.size), n_traces)
        size = shapes.size[shape]
        first = np.zeros(n_traces, np.int64)
        np.cumsum(size[:-1], out=first[1:])
        n = int(first[-1] + size[-1])
        trace_of = np.repeat(np.arange(n_traces), size)
        node = np.repeat(shapes.first[shape] - first, size) + np.arange(n)  # row in the shape tables
        op = shapes.op[node]
        is_root = shapes.is_root[node]
        parent = first[trace_of] + shapes.parent[node]
        depth = shapes.depth[node]

        # Per trace: the cases the policies look for, and the root duration. Normal traces: median ~25 ms,
        # growing with size, capped well below the 1 s latency threshold; slow ones 1.05-4 s.
        error = rng.random(n_traces) < self.error_share
        slow = rng.random(n_traces) < self.slow_share
        forced = rng.random(n_traces) < self.forced_share
        normal_ms = np.clip(np.exp(rng.normal(math.log(25.0) + 0.35 * np.log(size), 0.6)), 1.0, 790.0)
        slow_ms = np.minimum(1050.0 + rng.exponential(700.0, n_traces), 4000.0)
        root_ms = np.where(slow, slow_ms, normal_ms)

        # Times, level by level: a child spans [a2, a2 + b2] of its parent, inside its shape slot [a, a + b].
        frac = rng.random((2, n))
        b2 = shapes.b[node] * (0.7 + 0.3 * frac[0])
        a2 = shapes.a[node] + (shapes.b[node] - b2) * frac[1]
        rel = np.zeros(n)  # ns from the trace start
        dur = np.repeat(root_ms * 1e6, size)  # right for roots; the other spans are overwritten below
        by_depth = np.argsort(depth, kind="stable")
        level_cuts = np.searchsorted(depth[by_depth], np.arange(1, int(depth.max()) + 2))
        for lo, hi in itertools.pairwise(level_cuts.tolist()):
            m = by_depth[lo:hi]
            p = parent[m]
            rel[m] = rel[p] + a2[m] * dur[p]
            dur[m] = b2[m] * dur[p]
        # Flooring is monotonic, so children stay inside their parents in integer ns too.
        base_ns = np.round(trace_start * 1e9).astype(np.int64)[trace_of] + EPOCH_NS
        start_ns = base_ns + np.floor(rel).astype(np.int64)
        end_ns = base_ns + np.floor(rel + dur).astype(np.int64)

        # Errors start at a random span and climb towards the root, at least up to a span with an HTTP status.
        span_error = np.zeros(n, bool)
        err_traces = np.flatnonzero(error)
        if len(err_traces):
            draws = rng.random((len(err_traces), _MAX_DEPTH + 2))
            has_status = cat.op_has_http_status
            for k, t in enumerate(err_traces.tolist()):
                s = int(first[t] + int(draws[k, 0] * size[t]))
                j = 1
                seen_http = False
                while True:
                    span_error[s] = True
                    seen_http = seen_http or bool(has_status[op[s]])
                    if is_root[s] or (seen_http and draws[k, j] > 0.6):
                        break
                    s = int(parent[s])
                    j = min(j + 1, _MAX_DEPTH + 1)
        span_forced = is_root & forced[trace_of]

        # IDs: random, never zero.
        tid = np.frombuffer(rng.bytes(16 * n_traces), np.uint8).reshape(n_traces, 16).copy()
        tid[~tid.any(axis=1), 15] = 1
        sid = np.frombuffer(rng.bytes(8 * n), np.uint64).copy()
        sid[sid == 0] = 1

        # Values for the attribute holes.
        status = np.full(n, 200, np.int64)
        u = rng.random(n)
        ok_root = is_root & ~span_error
        status[ok_root & (u < 0.02)] = 404  # not an error on a SERVER span (semantic conventions)
        status[ok_root & (u >= 0.02) & (u < 0.03)] = 304
        status[span_error] = 500
        port = rng.integers(32_768, 61_000, n)
        hit = rng.random(n) < 0.85
        amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
        user = _digit_columns(rng.integers(0, 100_000_000, n_traces), 8).view("<u8").ravel()
        item = _digit_columns(rng.integers(0, 100_000_000, n_traces), 8).view("<u8").ravel()

        # Truth, from the encoded times; made into objects only when read (that costs more than the spans).
        self._pending_truth.append((tid.tobytes(), size, error, slow, forced,
                                    (end_ns[first] - start_ns[first]) / 1e6))

        # Exporters: one replica per service hop (a SERVER/CONSUMER span and the spans under it in-process).
        local_root = first[trace_of] + shapes.local_root[node]
        replica = rng.integers(0, 1 << 30, n)[local_root]
        svc = cat.op_service[op]
        exporter = cat.exporter_base[svc] + replica % cat.replicas[svc]
        # Handed to the exporter when the span ends, plus a few ms; now and then 1-3 s late.
        delay = rng.exponential(0.004, n)
        late = rng.random(n) < _LATE_SHARE
        delay[late] += rng.uniform(1.0, 3.0, int(late.sum()))
        ready = trace_start[trace_of] + (rel + dur) / 1e9 + delay

        # One record per span, in (exporter, ready) order: one sort on a combined key (ready < 1e6 s apart).
        o = np.argsort(exporter * 1e6 + (ready - t0))
        to = trace_of[o]
        rec = np.empty((n, _RECORD_WIDTH), np.uint8)
        for name, column in (
            ("trace_id", tid.view("V16").ravel()[to]),
            ("span_id", sid[o]),
            ("parent_id", sid[parent[o]]),
            ("start", start_ns[o]),
            ("end", end_ns[o]),
            ("http_status", _varint_columns(status[o], 2).view("<u2").ravel()),
            ("port", _varint_columns(port[o], 3).view("V3").ravel()),
            ("cache_hit", hit[o]),
            ("amount", amount[o].view(np.uint64)),
            ("user", user[to]),
            ("item", item[to]),
        ):
            _column(rec, *_COLUMNS[name])[:] = column
        vkey = _variant_key(op, is_root, span_error, span_forced)[o]
        ready = ready[o]
        ex = exporter[o]
        cuts = np.flatnonzero(np.diff(ex)) + 1
        for lo, hi in itertools.pairwise([0, *cuts.tolist(), n]):
            queues[int(ex[lo])].add(ready[lo:hi], vkey[lo:hi], rec[lo:hi])

    # -- exporters -----------------------------------------------------------------------------------------
    def _drain(self, queues: list[_Queue], horizon: float) -> Iterator[Batch]:
        """Every batch that closes before `horizon` (all of them when it is infinite), in arrival order."""
        found: list[tuple[float, int, int]] = []  # (close time, exporter, spans)
        for ex, q in enumerate(queues):
            found += [(close, ex, j - i) for close, i, j in q.batch_bounds(horizon, self.spans_per_payload)]
        if not found:
            return
        found.sort(key=itemgetter(0, 1))
        # Take the batched records out of the queues (each queue gives its batches in order, from its head).
        vkeys: list[npt.NDArray[np.int16]] = []
        parts: list[U8] = []
        taken = [0] * len(queues)
        for _, ex, count in found:
            q, i = queues[ex], taken[ex]
            vkeys.append(q.vkey[i:i + count])
            parts.append(q.records[i:i + count])
            taken[ex] += count
        for ex, count in enumerate(taken):
            if count:
                queues[ex].drop(count)
        batch_of = np.repeat(np.arange(len(found)), [count for _, _, count in found])
        runs = self._encode(np.concatenate(vkeys), np.concatenate(parts), batch_of, len(found))
        for (close, ex, count), batch_runs in zip(found, runs, strict=True):
            yield Batch(self._catalog.exporters[ex].payload(batch_runs), count, close)

    def _encode(self, vkey: npt.NDArray[np.int16], records: U8, batch_of: I64, n_batches: int
                ) -> list[list[tuple[int, memoryview]]]:
        """Span bytes, per batch a list of (scope, run of whole `spans` fields), from patched templates.

        Records come in batch order; a stable sort by variant makes each variant's spans of one batch a
        contiguous run of rows, so a payload is a join of a few dozen runs, never of one object per span.
        """
        order = np.argsort(vkey, kind="stable")  # a radix sort on int16
        srt = np.take(records, order, axis=0)
        batches = batch_of[order]
        keys = vkey[order]
        cols = {name: _column(srt, off, size) for name, (off, size) in _COLUMNS.items()}
        runs: list[list[tuple[int, memoryview]]] = [[] for _ in range(n_batches)]
        cuts = np.flatnonzero(np.diff(keys)) + 1
        for lo, hi in itertools.pairwise([0, *cuts.tolist(), len(keys)]):
            var = self._variant(int(keys[lo]))
            width = len(var.template)
            rows = np.empty((hi - lo, width), np.uint8)
            rows[:] = var.template
            for kind, off, size in var.holes:
                _column(rows, off, size)[:] = cols[kind][lo:hi]
            flat = memoryview(rows.data).cast("B")
            group_batches = batches[lo:hi]
            bcuts = np.flatnonzero(np.diff(group_batches)) + 1
            for a, z in itertools.pairwise([0, *bcuts.tolist(), hi - lo]):
                runs[int(group_batches[a])].append((var.scope, flat[a * width:z * width]))
        return runs

    def _variant(self, key: int) -> _Variant:
        var = self._variants.get(key)
        if var is None:
            op, is_root, error, forced = key >> 3, bool(key & 4), bool(key & 2), bool(key & 1)
            var = self._catalog.encode_span(op, root=is_root, error=error, forced=forced)
            self._variants[key] = var
        return var


# ------------------------------------------------------------------------------------------------------------
# A minimal reader: trace IDs of the spans in a payload (for checking what a sampler kept, without protobuf).
# ------------------------------------------------------------------------------------------------------------


def count_spans_by_trace(payload: bytes, counts: dict[bytes, int] | None = None) -> dict[bytes, int]:
    """Count the spans of each trace ID in an ExportTraceServiceRequest; add to `counts` when given."""
    out: dict[bytes, int] = {} if counts is None else counts
    view = memoryview(payload)
    for rs_lo, rs_hi in _len_fields(view, 0, len(view), 1):
        for ss_lo, ss_hi in _len_fields(view, rs_lo, rs_hi, 2):
            for sp_lo, sp_hi in _len_fields(view, ss_lo, ss_hi, 2):
                tid = b""
                for lo, hi in _len_fields(view, sp_lo, sp_hi, 1):
                    tid = bytes(view[lo:hi])
                out[tid] = out.get(tid, 0) + 1
    return out


def _len_fields(buf: memoryview, pos: int, end: int, want: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every length-delimited field number `want` in buf[pos:end]; skips the other fields."""
    while pos < end:
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ValueError(f"truncated field at byte {pos}")
            if key >> 3 == want:
                yield pos, pos + size
            pos += size
        elif wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire} at byte {pos}")
    if pos != end:
        raise ValueError("field runs past the end of its message")


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


# ------------------------------------------------------------------------------------------------------------
# Protobuf writing (at set-up only: the per-span path patches templates)
# ------------------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative varints are not used here")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Msg:
    """A message being encoded, with fixed-size holes (kind, offset, size) to patch per span."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.holes: list[tuple[str, int, int]] = []

    def key(self, field: int, wire: int) -> _Msg:
        self.buf += _varint(field << 3 | wire)
        return self

    def raw(self, data: bytes) -> _Msg:
        self.buf += data
        return self

    def hole(self, kind: str, size: int) -> _Msg:
        self.holes.append((kind, len(self.buf), size))
        self.buf += bytes(size)
        return self

    def string(self, field: int, value: str) -> _Msg:
        data = value.encode()
        return self.key(field, 2).raw(_varint(len(data))).raw(data)

    def uint(self, field: int, value: int) -> _Msg:
        return self.key(field, 0).raw(_varint(value))

    def fixed32(self, field: int, value: int) -> _Msg:
        return self.key(field, 5).raw(struct.pack("<I", value))

    def message(self, field: int, sub: _Msg) -> _Msg:
        self.key(field, 2).raw(_varint(len(sub.buf)))
        base = len(self.buf)
        self.buf += sub.buf
        self.holes += [(k, base + off, size) for k, off, size in sub.holes]
        return self


class Hole(NamedTuple):
    """An attribute value patched per span: `prefix + <digits> + suffix` for string kinds."""

    kind: str  # user, item (digits in a string); http_status, port (int); cache_hit (bool); amount (double)
    prefix: str = ""
    suffix: str = ""


USER = Hole("user", "usr-")
_DIGITS = {"user": 8, "item": 8}
_INT_HOLES = {"http_status": 2, "port": 3}
AttrValue = str | bool | int | float | Hole


def _any_value(value: AttrValue) -> _Msg:
    v = _Msg()
    if isinstance(value, Hole):
        if value.kind in _DIGITS:
            pre, suf = value.prefix.encode(), value.suffix.encode()
            v.key(1, 2).raw(_varint(len(pre) + _DIGITS[value.kind] + len(suf))).raw(pre)
            v.hole(value.kind, _DIGITS[value.kind]).raw(suf)
        elif value.kind in _INT_HOLES:
            v.key(3, 0).hole(value.kind, _INT_HOLES[value.kind])
        elif value.kind == "cache_hit":
            v.key(2, 0).hole("cache_hit", 1)
        elif value.kind == "amount":
            v.key(4, 1).hole("amount", 8)
        else:
            raise ValueError(f"unknown hole kind {value.kind!r}")
    elif isinstance(value, str):
        v.string(1, value)
    elif isinstance(value, bool):  # before int: bool is an int
        v.uint(2, int(value))
    elif isinstance(value, int):
        v.uint(3, value)
    else:
        v.key(4, 1).raw(struct.pack("<d", value))
    return v


def _kv(key: str, value: AttrValue) -> _Msg:
    return _Msg().string(1, key).message(2, _any_value(value))


def _varint_columns(values: I64, width: int) -> U8:
    """Varints of exactly `width` bytes (values must need exactly that many: 2 bytes = 128..16383)."""
    out = np.empty((len(values), width), np.uint8)
    for i in range(width):
        b = (values >> (7 * i)) & 0x7F
        out[:, i] = b | 0x80 if i < width - 1 else b
    return out


_POW10 = 10 ** np.arange(9, dtype=np.int64)


def _digit_columns(values: I64, width: int) -> U8:
    """Zero-padded ASCII decimal digits, most significant first."""
    return ((values[:, None] // _POW10[width - 1::-1]) % 10 + 48).astype(np.uint8)


def _variant_key(op: I64, is_root: npt.NDArray[np.bool_], error: npt.NDArray[np.bool_],
                 forced: npt.NDArray[np.bool_]) -> npt.NDArray[np.int16]:
    key = (op << 3) | (is_root.astype(np.int64) << 2) | (error.astype(np.int64) << 1) | forced
    return key.astype(np.int16)  # int16 so that a stable argsort is a radix sort


@dataclass
class _Variant:
    template: U8  # a whole `spans` field of ScopeSpans (key, length, Span), holes zeroed
    holes: list[tuple[str, int, int]]
    scope: int


# A span before encoding is its variant (op, root, error, forced), when it reaches its exporter, and a row of
# bytes holding every hole's value as it goes into the template: (offset, size) per hole kind.
_COLUMNS = {"trace_id": (0, 16), "span_id": (16, 8), "parent_id": (24, 8), "start": (32, 8), "end": (40, 8),
            "http_status": (48, 2), "port": (50, 3), "cache_hit": (53, 1), "amount": (54, 8), "user": (62, 8),
            "item": (70, 8)}
_RECORD_WIDTH = 80
_COLUMN_DTYPES = {16: np.dtype("V16"), 8: np.dtype("<u8"), 3: np.dtype("V3"), 2: np.dtype("<u2"),
                  1: np.dtype("u1")}


def _column(rows: U8, offset: int, size: int) -> npt.NDArray[Any]:
    """Bytes [offset, offset + size) of every row of a C-contiguous 2-D uint8 array, as one element per row.

    Copying whole elements is ~3x faster than copying (n, size) byte slices.
    """
    view: npt.NDArray[Any] = np.ndarray((rows.shape[0],), _COLUMN_DTYPES[size], buffer=rows, offset=offset,
                                        strides=(rows.shape[1],))
    return view


# ------------------------------------------------------------------------------------------------------------
# The simulated system: services, replicas (exporters), operations
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Service:
    name: str
    version: str
    language: str
    namespace: str
    replicas: int
    rpc: str  # gRPC service name, or "" for an HTTP service
    routes: tuple[tuple[str, str], ...]  # (HTTP method, route) or ("", gRPC method)
    callees: tuple[str, ...] = ()
    # (db.system.name, db.namespace, host, port, ((operation, collection), ...))
    db: tuple[str, str, str, int, tuple[tuple[str, str], ...]] | None = None
    cache: bool = False
    external: tuple[str, str, str] | None = None  # (peer.service, method, url)
    internals: tuple[str, ...] = ()
    produces: str = ""  # Kafka topic this service publishes to (consumed by notification)


_SERVICES: tuple[_Service, ...] = (
    _Service("api-gateway", "2.14.1", "go", "edge", 3, "",
             (("GET", "/api/products/{id}"), ("GET", "/api/search"), ("POST", "/api/checkout"),
              ("GET", "/api/cart"), ("POST", "/api/cart/items"), ("GET", "/api/users/{id}"),
              ("GET", "/api/recommendations")),
             callees=("search", "checkout", "cart", "user", "recommendation"), cache=True,
             internals=("authenticate", "rate-limit")),
    _Service("checkout", "3.2.0", "java", "shop", 2, "",
             (("POST", "/checkout/orders"), ("GET", "/checkout/quote")),
             callees=("payment", "inventory", "cart", "user", "shipping"),
             db=("postgresql", "orders", "orders-db.shop.svc.cluster.local", 5432,
                 (("INSERT", "orders"), ("SELECT", "orders"), ("UPDATE", "orders"))),
             internals=("validate-order", "compute-totals", "apply-promotions"), produces="orders"),
    _Service("payment", "1.9.4", "java", "shop", 2, "shop.PaymentService", (("", "Charge"), ("", "Refund")),
             callees=("user",), db=("postgresql", "payments", "payments-db.shop.svc.cluster.local", 5432,
                                    (("INSERT", "transactions"), ("SELECT", "payment_methods"))),
             external=("stripe", "POST", "https://api.stripe.example.com/v1/charges"),
             internals=("fraud-check", "tokenize-card")),
    _Service("inventory", "4.1.0", "go", "shop", 2, "shop.InventoryService",
             (("", "GetStock"), ("", "Reserve"), ("", "Release")),
             db=("postgresql", "inventory", "inventory-db.shop.svc.cluster.local", 5432,
                 (("SELECT", "stock"), ("UPDATE", "stock"))), cache=True, internals=("check-warehouse",)),
    _Service("user", "2.3.7", "python", "identity", 2, "",
             (("GET", "/users/{id}"), ("GET", "/users/{id}/profile"), ("POST", "/users/{id}/sessions")),
             db=("postgresql", "users", "users-db.identity.svc.cluster.local", 5432,
                 (("SELECT", "users"), ("SELECT", "sessions"))), cache=True, internals=("load-permissions",)),
    _Service("search", "5.0.2", "java", "discovery", 2, "",
             (("GET", "/search"), ("GET", "/products/{id}")), callees=("inventory", "recommendation"),
             db=("elasticsearch", "products", "es.discovery.svc.cluster.local", 9200,
                 (("search", "products"), ("get", "products"))), internals=("rank-results", "parse-query")),
    _Service("recommendation", "0.18.0", "python", "discovery", 2, "",
             (("GET", "/recommendations"), ("GET", "/recommendations/{id}/similar")), callees=("user",),
             cache=True, internals=("model.predict", "feature-lookup")),
    _Service("notification", "1.6.3", "nodejs", "messaging", 1, "", (("POST", "/notify"),),
             db=("mongodb", "notifications", "mongo.messaging.svc.cluster.local", 27017,
                 (("insert", "messages"), ("find", "templates"))),
             external=("sendgrid", "POST", "https://api.sendgrid.example.com/v3/mail/send"),
             internals=("render-template",)),
    _Service("cart", "2.0.1", "dotnet", "shop", 2, "", (("GET", "/cart/{id}"), ("POST", "/cart/{id}/items")),
             callees=("inventory",), cache=True, internals=("merge-cart",)),
    _Service("shipping", "1.2.0", "rust", "shop", 1, "",
             (("GET", "/shipping/quote"), ("POST", "/shipping/labels")),
             db=("postgresql", "shipping", "shipping-db.shop.svc.cluster.local", 5432,
                 (("SELECT", "rates"), ("INSERT", "labels"))),
             external=("carrier-api", "POST", "https://api.carrier.example.com/v2/labels"),
             internals=("compute-rate",)),
)
_ENTRY = (("api-gateway", 0.9), ("search", 0.1))

# Per SDK language: telemetry.sdk.version, HTTP server scope, gRPC scope, data (db/cache/messaging) scope.
_SDKS: dict[str, tuple[str, tuple[str, str], tuple[str, str], tuple[str, str]]] = {
    "go": ("1.32.0", ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.57.0"),
           ("go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc", "0.57.0"),
           ("github.com/XSAM/otelsql", "0.35.0")),
    "java": ("1.44.1", ("io.opentelemetry.spring-webmvc-6.0", "2.10.0-alpha"),
             ("io.opentelemetry.grpc-1.6", "2.10.0-alpha"), ("io.opentelemetry.jdbc", "2.10.0-alpha")),
    "python": ("1.29.0", ("opentelemetry.instrumentation.fastapi", "0.50b0"),
               ("opentelemetry.instrumentation.grpc", "0.50b0"),
               ("opentelemetry.instrumentation.redis", "0.50b0")),
    "nodejs": ("1.30.1", ("@opentelemetry/instrumentation-http", "0.57.1"),
               ("@opentelemetry/instrumentation-grpc", "0.57.1"),
               ("@opentelemetry/instrumentation-kafkajs", "0.7.0")),
    "dotnet": ("1.10.0", ("OpenTelemetry.Instrumentation.AspNetCore", "1.10.1"),
               ("OpenTelemetry.Instrumentation.GrpcNetClient", "1.10.0-beta.1"),
               ("OpenTelemetry.Instrumentation.StackExchangeRedis", "1.10.0-beta.1")),
    "rust": ("0.27.1", ("opentelemetry-http", "0.27.0"), ("tonic", "0.12.3"), ("sqlx", "0.8.2")),
}


@dataclass(frozen=True)
class _Op:
    """One kind of span: service, kind, name, static and per-span attributes."""

    service: int
    role: str  # server, client, db, cache, external, internal, producer, consumer
    kind: int
    name: str
    scope: int  # 0: HTTP/RPC instrumentation scope, 1: data (db, cache, messaging) scope
    attrs: tuple[tuple[str, AttrValue], ...]
    callee: int = -1  # client ops: the server op this call lands on
    http: bool = False  # carries http.response.status_code
    link: bool = False  # consumer: links to the producer span
    error_type: str = "500"
    error_message: str = "Internal Server Error"


class _Exporter:
    """One service replica: its Resource and scopes, pre-encoded; wraps spans into a request."""

    def __init__(self, svc: _Service, rng: np.random.Generator) -> None:
        sdk_version, http_scope, rpc_scope, data_scope = _SDKS[svc.language]
        pod = f"{svc.name}-{_token(rng, 10)}-{_token(rng, 5)}"
        instance = bytes(rng.bytes(16)).hex()
        attrs: list[tuple[str, AttrValue]] = [
            ("service.name", svc.name), ("service.version", svc.version), ("service.namespace", "shop"),
            ("service.instance.id", f"{instance[:8]}-{instance[8:12]}-{instance[12:16]}-{instance[16:20]}-"
                                    f"{instance[20:]}"),
            ("deployment.environment.name", "production"),
            ("host.name", f"ip-10-0-{int(rng.integers(0, 16))}-{int(rng.integers(2, 250))}.ec2.internal"),
            ("k8s.pod.name", pod), ("k8s.namespace.name", svc.namespace),
            ("k8s.deployment.name", svc.name), ("cloud.region", "eu-west-1"),
            ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.language", svc.language),
            ("telemetry.sdk.version", sdk_version),
        ]
        resource = _Msg()
        for k, v in attrs:
            resource.message(1, _kv(k, v))
        self.resource_field = bytes(_Msg().message(1, resource).buf)
        self.schema_field = bytes(_Msg().string(3, SCHEMA_URL).buf)
        scopes = (rpc_scope if svc.rpc else http_scope, data_scope)
        self.scope_fields = [bytes(_Msg().message(1, _Msg().string(1, name).string(2, version)).buf)
                             for name, version in scopes]

    def payload(self, runs: list[tuple[int, memoryview]]) -> bytes:
        """ExportTraceServiceRequest{resource_spans: [{resource, scope_spans: [...], schema_url}]}."""
        parts: list[bytes | memoryview] = []
        rs_len = len(self.resource_field) + len(self.schema_field)
        for k in (0, 1):
            group = [run for scope, run in runs if scope == k]
            if not group:
                continue
            ss_len = len(self.scope_fields[k]) + sum(map(len, group)) + len(self.schema_field)
            head = _varint(ss_len)
            parts += [b"\x12", head, self.scope_fields[k], *group, self.schema_field]
            rs_len += 1 + len(head) + ss_len
        return b"".join([b"\x0a", _varint(rs_len), self.resource_field, *parts, self.schema_field])


def _token(rng: np.random.Generator, n: int) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))


class _Catalog:
    """Services, their exporters, and every operation, plus per-op lookup arrays for the numpy path."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.services = _SERVICES
        self.index = {s.name: i for i, s in enumerate(_SERVICES)}
        self.exporters: list[_Exporter] = []
        base: list[int] = []
        for svc in _SERVICES:
            base.append(len(self.exporters))
            self.exporters += [_Exporter(svc, rng) for _ in range(svc.replicas)]
        self.exporter_base = np.asarray(base, np.int64)
        self.replicas = np.asarray([s.replicas for s in _SERVICES], np.int64)
        self.ops: list[_Op] = []
        self.servers: list[list[int]] = []  # per service: its server op indices
        self.clients: dict[tuple[int, int], int] = {}  # (caller service, server op) -> client op
        self.leaves: list[dict[str, list[int]]] = []  # per service: role -> op indices
        self.producer: dict[int, int] = {}
        self.consumer = -1
        self._build()
        self.op_service = np.asarray([o.service for o in self.ops], np.int64)
        self.op_scope = np.asarray([o.scope for o in self.ops], np.int8)
        self.op_has_http_status = np.asarray([o.http for o in self.ops], bool)
        if len(self.ops) >= 4096:  # variant keys (op << 3 | flags) must fit an int16
            raise AssertionError("too many operations")
        self._len_cache: dict[int, int] = {}

    def _add(self, op: _Op) -> int:
        self.ops.append(op)
        return len(self.ops) - 1

    def _build(self) -> None:
        for si, svc in enumerate(_SERVICES):
            host = "shop.example.com" if si == 0 else f"{svc.name}.{svc.namespace}.svc.cluster.local"
            servers: list[int] = []
            for method, route in svc.routes:
                if svc.rpc:
                    attrs: list[tuple[str, AttrValue]] = [
                        ("rpc.system", "grpc"), ("rpc.service", svc.rpc), ("rpc.method", route),
                        ("rpc.grpc.status_code", 0), ("server.address", host), ("server.port", 50051),
                        ("client.address", f"10.42.{si}.{17 + len(servers)}"),
                        ("net.peer.port", Hole("port")), ("network.transport", "tcp"),
                        ("network.type", "ipv4"), ("user.id", USER)]
                    servers.append(self._add(_Op(si, "server", SERVER, f"{svc.rpc}/{route}", 0, tuple(attrs),
                                                 error_type="INTERNAL", error_message="upstream failure")))
                else:
                    pre, _, post = route.partition("{id}")
                    path: AttrValue = Hole("item", pre, post) if "{id}" in route else route
                    attrs = [
                        ("http.request.method", method), ("http.route", route), ("url.path", path),
                        ("url.scheme", "https" if si == 0 else "http"), ("server.address", host),
                        ("server.port", 443 if si == 0 else 8080),
                        ("client.address", f"10.42.{si}.{17 + len(servers)}"),
                        ("net.peer.port", Hole("port")), ("network.protocol.version", "1.1" if si else "2"),
                        ("user_agent.original",
                         "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36" if si == 0
                         else f"shop-client/{svc.version}"),
                        ("http.response.status_code", Hole("http_status")), ("user.id", USER)]
                    servers.append(self._add(_Op(si, "server", SERVER, f"{method} {route}", 0, tuple(attrs),
                                                 http=True)))
            self.servers.append(servers)
        for si, svc in enumerate(_SERVICES):
            for callee in svc.callees:
                ci = self.index[callee]
                csvc = _SERVICES[ci]
                chost = f"{csvc.name}.{csvc.namespace}.svc.cluster.local"
                for k, sop in enumerate(self.servers[ci]):
                    method, route = csvc.routes[k]
                    if csvc.rpc:
                        attrs = [("rpc.system", "grpc"), ("rpc.service", csvc.rpc), ("rpc.method", route),
                                 ("rpc.grpc.status_code", 0), ("server.address", chost),
                                 ("server.port", 50051),
                                 ("peer.service", callee), ("network.transport", "tcp"),
                                 ("network.type", "ipv4"), ("user.id", USER)]
                        op = _Op(si, "client", CLIENT, f"{csvc.rpc}/{route}", 0, tuple(attrs), callee=sop,
                                 error_type="INTERNAL", error_message="upstream failure")
                    else:
                        pre, _, post = route.partition("{id}")
                        url: AttrValue = (Hole("item", f"http://{chost}:8080{pre}", post) if "{id}" in route
                                          else f"http://{chost}:8080{route}")
                        attrs = [("http.request.method", method), ("url.full", url),
                                 ("server.address", chost), ("server.port", 8080), ("peer.service", callee),
                                 ("network.protocol.version", "1.1"), ("http.request.resend_count", 0),
                                 ("http.response.status_code", Hole("http_status")),
                                 ("user.id", USER), ("net.peer.port", 8080)]
                        op = _Op(si, "client", CLIENT, method, 0, tuple(attrs), callee=sop, http=True)
                    self.clients[(si, sop)] = self._add(op)
        for si, svc in enumerate(_SERVICES):
            leaves: dict[str, list[int]] = {"db": [], "cache": [], "external": [], "internal": []}
            lang_ns = {"go": "shop/", "java": "com.shop.", "python": "shop.", "nodejs": "shop/",
                       "dotnet": "Shop.", "rust": "shop::"}[svc.language]
            if svc.db is not None:
                system, dbname, host, dbport, queries = svc.db
                for operation, table in queries:
                    text = {"SELECT": f"SELECT * FROM {table} WHERE id = $1",
                            "INSERT": f"INSERT INTO {table} (id, user_id, payload) VALUES ($1, $2, $3)",
                            "UPDATE": f"UPDATE {table} SET qty = qty - $1 WHERE id = $2"}.get(
                        operation, f'{{"{operation}":{{"_id":"?"}}}}')
                    attrs = [("db.system.name", system), ("db.namespace", dbname),
                             ("db.collection.name", table), ("db.operation.name", operation),
                             ("db.query.text", text), ("server.address", host), ("server.port", dbport),
                             ("net.peer.port", Hole("port")),
                             ("db.client.connection.pool.name", f"{svc.name}-pool"),
                             ("network.transport", "tcp")]
                    leaves["db"].append(self._add(_Op(
                        si, "db", CLIENT, f"{operation} {table}", 1, tuple(attrs), error_type="57014",
                        error_message="canceling statement due to statement timeout")))
            if svc.cache:
                for command, pattern in (("GET", "session:?"), ("SET", "cart:?"), ("HGETALL", "user:?")):
                    attrs = [("db.system.name", "redis"), ("db.operation.name", command),
                             ("db.query.text", f"{command} {pattern}"), ("db.namespace", "0"),
                             ("server.address", "redis-master.cache.svc.cluster.local"),
                             ("server.port", 6379),
                             ("net.peer.port", Hole("port")), ("cache.hit", Hole("cache_hit")),
                             ("network.transport", "tcp"), ("user.id", USER)]
                    leaves["cache"].append(self._add(_Op(
                        si, "cache", CLIENT, command, 1, tuple(attrs), error_type="timeout",
                        error_message="redis: i/o timeout")))
            if svc.external is not None:
                peer, method, url = svc.external
                ext_host = url.split("/")[2]
                attrs = [("http.request.method", method), ("url.full", url), ("server.address", ext_host),
                         ("server.port", 443), ("peer.service", peer), ("network.protocol.version", "2"),
                         ("http.response.status_code", Hole("http_status")), ("app.amount", Hole("amount")),
                         ("http.request.resend_count", 0), ("user.id", USER)]
                leaves["external"].append(self._add(_Op(si, "external", CLIENT, method, 0, tuple(attrs),
                                                        http=True)))
            for k, name in enumerate(svc.internals):
                attrs = [("code.function.name", name.replace("-", "_").replace(".", "_")),
                         ("code.namespace", f"{lang_ns}{svc.name.replace('-', '_')}"),
                         ("code.file.path", f"src/{svc.name}/{name.split('.')[0]}.src"),
                         ("code.line.number", 40 + 37 * k), ("thread.name", "worker-1"),
                         ("app.items.count", 1 + 2 * k), ("app.amount", Hole("amount")),
                         ("app.cache.enabled", k % 2 == 0), ("app.ratio", 0.25 * (k + 1)),
                         ("user.id", USER)]
                leaves["internal"].append(self._add(_Op(si, "internal", INTERNAL, name, 0, tuple(attrs),
                                                        error_type="ValidationError",
                                                        error_message=f"{name} failed")))
            if svc.produces:
                attrs = [("messaging.system", "kafka"), ("messaging.destination.name", svc.produces),
                         ("messaging.operation.type", "send"), ("messaging.operation.name", "send"),
                         ("messaging.destination.partition.id", "3"),
                         ("messaging.client.id", f"{svc.name}-1"),
                         ("messaging.kafka.message.key", USER),
                         ("server.address", "kafka.messaging.svc.cluster.local"), ("server.port", 9092),
                         ("net.peer.port", Hole("port"))]
                self.producer[si] = self._add(_Op(si, "producer", PRODUCER, f"send {svc.produces}", 1,
                                                  tuple(attrs), error_type="KafkaJSError",
                                                  error_message="broker not available"))
            self.leaves.append(leaves)
        ni = self.index["notification"]
        attrs = [("messaging.system", "kafka"), ("messaging.destination.name", "orders"),
                 ("messaging.operation.type", "process"), ("messaging.operation.name", "process"),
                 ("messaging.consumer.group.name", "notification"),
                 ("messaging.destination.partition.id", "3"),
                 ("messaging.kafka.offset", 1_048_576), ("messaging.kafka.message.key", USER),
                 ("server.address", "kafka.messaging.svc.cluster.local"), ("server.port", 9092)]
        self.consumer = self._add(_Op(ni, "consumer", CONSUMER, "process orders", 1, tuple(attrs), link=True,
                                      error_type="TemplateError", error_message="missing template variable"))

    def encode_span(self, op_index: int, *, root: bool, error: bool, forced: bool) -> _Variant:
        """Span template: a whole ScopeSpans.spans field, holes for IDs, times and per-span values."""
        op = self.ops[op_index]
        s = _Msg()
        s.key(1, 2).raw(b"\x10").hole("trace_id", 16)
        s.key(2, 2).raw(b"\x08").hole("span_id", 8)
        if not root:
            s.key(4, 2).raw(b"\x08").hole("parent_id", 8)
        s.string(5, op.name)
        s.uint(6, op.kind)
        s.key(7, 1).hole("start", 8)
        s.key(8, 1).hole("end", 8)
        for key, value in op.attrs:
            if key == "rpc.grpc.status_code" and error:
                value = 13  # INTERNAL
            s.message(9, _kv(key, value))
        if error:
            s.message(9, _kv("error.type", op.error_type))
        if forced:
            s.message(9, _kv(FORCE_KEY, "true"))
        if error:
            event = _Msg().key(1, 1).hole("end", 8).string(2, "exception")
            event.message(3, _kv("exception.type", op.error_type))
            event.message(3, _kv("exception.message", op.error_message))
            s.message(11, event)
        if op.link:
            link = _Msg().key(1, 2).raw(b"\x10").hole("trace_id", 16)
            link.key(2, 2).raw(b"\x08").hole("parent_id", 8)
            link.message(4, _kv("messaging.operation.type", "send"))
            link.fixed32(6, 0x101)
            s.message(13, link)
        status = _Msg()
        if error:
            status.string(2, op.error_message).uint(3, STATUS_ERROR)
        s.message(15, status)
        # W3C sampled flag plus "has is_remote"; SERVER/CONSUMER children have a remote parent.
        remote = op.kind in (SERVER, CONSUMER) and not root
        s.fixed32(16, 0x301 if remote else 0x101)
        whole = _Msg().message(2, s)
        return _Variant(np.frombuffer(bytes(whole.buf), np.uint8), whole.holes, op.scope)


# ------------------------------------------------------------------------------------------------------------
# Trace shapes
# ------------------------------------------------------------------------------------------------------------


class _Shapes:
    """A library of trace trees, flattened: per node its op, parent, depth, slot (a, b) in the parent's span.

    Nodes of a shape are stored parents first. A child spans [a, a+b] of its parent's duration, a+b < 1.
    """

    def __init__(self, cat: _Catalog, rng: np.random.Generator, max_spans: int) -> None:
        # Sizes: a skewed distribution, median ~6 spans, long tail up to max_spans.
        sizes = np.clip(np.round(np.exp(rng.normal(math.log(6.0), 0.75, _N_SHAPES))), 1, max_spans)
        draws = _Draws(rng)
        ops: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        a: list[float] = []
        b: list[float] = []
        local_roots: list[int] = []
        first: list[int] = []
        for n in sizes.astype(int).tolist():
            first.append(len(ops))
            sop, spar, sdep, sa, sb, slr = _build_shape(cat, n, draws)
            ops += sop
            parents += spar
            depths += sdep
            a += sa
            b += sb
            local_roots += slr
        self.size = sizes.astype(np.int64)
        self.first = np.asarray(first, np.int64)
        self.op = np.asarray(ops, np.int64)
        self.parent = np.asarray(parents, np.int64)
        self.depth = np.asarray(depths, np.int64)
        self.is_root = self.depth == 0
        self.a = np.asarray(a)
        self.b = np.asarray(b)
        self.local_root = np.asarray(local_roots, np.int64)


class _Draws:
    """Uniform floats drawn from the numpy generator in blocks (scalar draws are slow)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.block: list[float] = []
        self.pos = 0

    def __call__(self) -> float:
        if self.pos >= len(self.block):
            self.block = self.rng.random(4096).tolist()
            self.pos = 0
        self.pos += 1
        return self.block[self.pos - 1]

    def pick(self, n: int) -> int:
        return min(int(self() * n), n - 1)

    def weighted(self, weights: Sequence[float]) -> int:
        x = self() * sum(weights)
        for i, w in enumerate(weights):
            x -= w
            if x < 0:
                return i
        return len(weights) - 1


def _build_shape(cat: _Catalog, n: int, draw: _Draws
                 ) -> tuple[list[int], list[int], list[int], list[float], list[float], list[int]]:
    """A trace tree of exactly n spans: per node (op, parent, depth, a, b, local root), parents first."""
    entry = cat.index[_ENTRY[draw.weighted([w for _, w in _ENTRY])][0]]
    ops = [cat.servers[entry][draw.pick(len(cat.servers[entry]))]]
    parent, depth, local_root = [0], [0], [0]
    children: list[list[int]] = [[]]
    expandable = [0]  # server, consumer and internal spans may have children

    def add(op: int, p: int, lr: int | None = None) -> int:
        i = len(ops)
        ops.append(op)
        parent.append(p)
        depth.append(depth[p] + 1)
        local_root.append(i if lr is None else lr)
        children.append([])
        children[p].append(i)
        return i

    while len(ops) < n:
        room = n - len(ops)
        candidates = [e for e in expandable if depth[e] < _MAX_DEPTH - 2] or [0]
        p = candidates[draw.pick(len(candidates))]
        svc = cat.ops[ops[p]].service
        s = cat.services[svc]
        leaves = cat.leaves[svc]
        choices: list[str] = []
        weights: list[float] = []
        for choice, weight, ok in (
            ("call", 3.0, room >= 2 and bool(s.callees)),
            ("produce", 0.25, room >= 2 and svc in cat.producer),
            ("db", 2.0, bool(leaves["db"])),
            ("cache", 1.5, bool(leaves["cache"])),
            ("external", 0.4, bool(leaves["external"])),
            ("internal", 1.2, bool(leaves["internal"])),
        ):
            if ok:
                choices.append(choice)
                weights.append(weight)
        choice = choices[draw.weighted(weights)]  # never empty: every service has internal spans
        lr = local_root[p]
        if choice == "call":
            callee = cat.index[s.callees[draw.pick(len(s.callees))]]
            sop = cat.servers[callee][draw.pick(len(cat.servers[callee]))]
            c = add(cat.clients[(svc, sop)], p, lr)
            expandable.append(add(sop, c))
        elif choice == "produce":
            c = add(cat.producer[svc], p, lr)
            expandable.append(add(cat.consumer, c))
        elif choice == "internal":
            expandable.append(add(leaves["internal"][draw.pick(len(leaves["internal"]))], p, lr))
        else:
            add(leaves[choice][draw.pick(len(leaves[choice]))], p, lr)

    # Slots: a client's server child fills most of it; other children run one after another or in parallel.
    a = [0.0] * n
    b = [0.999] * n
    for p in range(n):
        kids = children[p]
        if not kids:
            continue
        if len(kids) == 1 and cat.ops[ops[p]].role in ("client", "producer"):
            lead = 0.02 + 0.08 * draw()
            a[kids[0]] = lead
            b[kids[0]] = 0.99 - lead - 0.05 * draw()
            continue
        if len(kids) > 1 and draw() < 0.25:
            for k in kids:
                a[k] = 0.03 + 0.05 * draw()
                b[k] = (0.3 + 0.6 * draw()) * (0.99 - a[k])
            continue
        spans_weight = [3.0 if cat.ops[ops[k]].role in ("client", "producer") else 1.0 for k in kids]
        total = sum(spans_weight)
        pos = 0.04
        for k, w in zip(kids, spans_weight, strict=True):
            width = 0.92 * w / total
            a[k] = pos + 0.05 * width * draw()
            b[k] = width * (0.75 + 0.2 * draw())
            pos += width
    return ops, parent, depth, a, b, local_root


# ------------------------------------------------------------------------------------------------------------
# Exporter queues
# ------------------------------------------------------------------------------------------------------------


class _Queue:
    """Span records handed to one exporter and not yet sent, sorted by the time they were handed over."""

    def __init__(self) -> None:
        self.ready: F64 = np.zeros(0)
        self.vkey: npt.NDArray[np.int16] = np.zeros(0, np.int16)
        self.records: U8 = np.zeros((0, _RECORD_WIDTH), np.uint8)

    def add(self, ready: F64, vkey: npt.NDArray[np.int16], records: U8) -> None:
        """Merge spans sorted by `ready` into the queue."""
        if len(self.ready) == 0 or self.ready[-1] <= ready[0]:
            self.ready = np.concatenate([self.ready, ready])
            self.vkey = np.concatenate([self.vkey, vkey])
            self.records = np.concatenate([self.records, records])
            return
        # Late spans are still waiting: merge two sorted runs (the waiting one is short).
        n_old, n_new = len(self.ready), len(ready)
        pos_new = np.arange(n_new) + np.searchsorted(self.ready, ready, side="right")
        pos_old = np.arange(n_old) + np.searchsorted(ready, self.ready, side="left")
        merged_ready = np.empty(n_old + n_new)
        merged_vkey = np.empty(n_old + n_new, np.int16)
        merged = np.empty((n_old + n_new, _RECORD_WIDTH), np.uint8)
        for dst, old, new in ((merged_ready, self.ready, ready), (merged_vkey, self.vkey, vkey),
                              (merged, self.records, records)):
            dst[pos_old] = old
            dst[pos_new] = new
        self.ready, self.vkey, self.records = merged_ready, merged_vkey, merged

    def batch_bounds(self, horizon: float, size: int) -> list[tuple[float, int, int]]:
        """(close time, first, end) of the batches that close before `horizon`, from the head of the queue.

        A batch is full at `size` spans, or goes out when the timer started by its first span fires.
        """
        r = self.ready
        out: list[tuple[float, int, int]] = []
        i, n = 0, len(r)
        while i < n:
            timer = float(r[i]) + _FLUSH_INTERVAL_S
            j = int(np.searchsorted(r, timer, side="right"))
            if i + size <= j:
                j = i + size
                close = float(r[j - 1])
            else:
                close = timer
            if close >= horizon:  # spans still to come could join this batch
                break
            out.append((close, i, j))
            i = j
        return out

    def drop(self, count: int) -> None:
        self.ready, self.vkey, self.records = self.ready[count:], self.vkey[count:], self.records[count:]
