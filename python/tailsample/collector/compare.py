"""Two policy sets side by side: which traces each keeps, what that costs, and what one loses of the other.

Used by `tailsample simulate` (configuration A against B over a recording) and by the shadow policies of
`tailsample serve` (live against shadow, `tailsample diff`). Facts about a trace come from the spans a side kept:
spans, bytes (each span's protobuf size, without the `tailsampling.*` attributes the engine may add), whether a
span has status ERROR, and its duration (latest end minus earliest start). A trace neither side kept is never
decoded: only its count is known, from the engines' stats.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SECONDS_PER_DAY = 86_400.0
DEFAULT_SLOW_SECONDS = 1.0
"""A trace this long or longer is in the `slow` must-keep class (the seed document's latency policy)."""
DEFAULT_EXAMPLES = 10
_POLICY_ATTRIBUTE = "tailsampling.policy"
_STATUS_ERROR = 2


@dataclass
class TraceFacts:
    """What the kept spans of one trace say about it."""

    spans: int = 0
    bytes: int = 0
    error: bool = False
    start_unix_nano: int = 0
    end_unix_nano: int = 0
    policy: str = ""
    """The policy that decided it, when the engine recorded one (`tailsample.record_policy`)."""

    @property
    def duration(self) -> float:
        """Seconds from the earliest start to the latest end of its kept spans."""
        return max(0, self.end_unix_nano - self.start_unix_nano) / 1e9

    def merge(self, other: TraceFacts) -> None:
        """Add spans of the same trace seen later (late spans that followed the decision)."""
        if self.spans == 0:
            self.start_unix_nano, self.end_unix_nano = other.start_unix_nano, other.end_unix_nano
        elif other.spans:
            self.start_unix_nano = min(self.start_unix_nano, other.start_unix_nano)
            self.end_unix_nano = max(self.end_unix_nano, other.end_unix_nano)
        self.spans += other.spans
        self.bytes += other.bytes
        self.error = self.error or other.error
        self.policy = self.policy or other.policy


def kept_facts(payloads: Iterable[bytes], into: dict[bytes, TraceFacts] | None = None) -> dict[bytes, TraceFacts]:
    """The facts of every trace in `payloads` (kept OTLP ExportTraceServiceRequest bytes), by trace ID."""
    out: dict[bytes, TraceFacts] = {} if into is None else into
    request = ExportTraceServiceRequest()
    for payload in payloads:
        request.ParseFromString(payload)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    policy = ""
                    marks = [a for a in span.attributes if a.key.startswith("tailsampling.")]
                    for a in marks:
                        if a.key == _POLICY_ATTRIBUTE:
                            policy = a.value.string_value
                        span.attributes.remove(a)
                    one = TraceFacts(1, span.ByteSize(), span.status.code == _STATUS_ERROR,
                                     span.start_time_unix_nano, span.end_time_unix_nano, policy)
                    have = out.get(span.trace_id)
                    if have is None:
                        out[span.trace_id] = one
                    else:
                        have.merge(one)
    return out


@dataclass
class Side:
    """What one policy set did over the observed window."""

    name: str
    source: str = ""
    traces_decided: int = 0
    traces_kept: int = 0
    spans_kept: int = 0
    bytes_kept: int = 0
    policies: dict[str, dict[str, int]] | None = None
    """Per policy: `sampled` (traces it sampled), `decided` (traces it decided first), `bytes` (bytes of the
    traces it decided, when recorded)."""


class Comparison:
    """Traces kept by side A only, side B only, and both, with bounded examples.

    Totals are counters (never bounded); the per-trace record (`max_traces` traces, oldest forgotten first) only
    serves to merge late spans of a trace into its class and to name example trace IDs. `forgotten` counts the
    traces dropped from that record.
    """

    def __init__(self, a: str, b: str, *, slow_seconds: float = DEFAULT_SLOW_SECONDS,
                 max_traces: int = 100_000, examples: int = DEFAULT_EXAMPLES, keep_ids: bool = False) -> None:
        if max_traces < 1:
            raise ValueError(f"max_traces must be at least 1, got {max_traces}")
        self.a = Side(a)
        self.b = Side(b)
        self.slow_seconds = slow_seconds
        self.max_traces = max_traces
        self.examples = examples
        self.keep_ids = keep_ids
        """Keep every trace ID kept by one side only (simulate's JSON); unbounded, so not for a service."""
        self.only: dict[str, dict[str, int]] = {k: {"traces": 0, "spans": 0, "bytes": 0}
                                                for k in ("a", "b", "both")}
        self.lost: dict[str, dict[str, Any]] = {f"{cls}_{side}": {"traces": 0, "examples": []}
                                                for cls in ("errors", "slow") for side in ("a", "b")}
        self.ids: dict[str, list[str]] = {"a": [], "b": []}
        self._record: OrderedDict[bytes, tuple[str, TraceFacts]] = OrderedDict()
        self.forgotten = 0
        self.start_unix_nano = 0
        self.end_unix_nano = 0

    def observe_window(self, start_unix_nano: int, end_unix_nano: int) -> None:
        """Widen the observed window (spans seen on the way in, kept or not)."""
        if start_unix_nano > 0:
            self.start_unix_nano = (start_unix_nano if not self.start_unix_nano
                                    else min(self.start_unix_nano, start_unix_nano))
        self.end_unix_nano = max(self.end_unix_nano, end_unix_nano)

    @property
    def window_seconds(self) -> float:
        return max(0, self.end_unix_nano - self.start_unix_nano) / 1e9

    def add(self, kept_a: Mapping[bytes, TraceFacts], kept_b: Mapping[bytes, TraceFacts]) -> None:
        """One round's kept traces of both sides (decided in the same round, or late spans of earlier ones)."""
        for tid in set(kept_a) | set(kept_b):
            fa, fb = kept_a.get(tid), kept_b.get(tid)
            side = "both" if fa is not None and fb is not None else ("a" if fa is not None else "b")
            facts = TraceFacts()
            for f, s in ((fa, self.a), (fb, self.b)):
                if f is not None:
                    s.spans_kept += f.spans
                    s.bytes_kept += f.bytes
            facts.merge(fa if fa is not None else fb)  # type: ignore[arg-type]
            seen = self._record.get(tid)
            if seen is not None:  # late spans of a trace already counted
                seen[1].merge(facts)
                self._count(seen[0], facts, new=False)
                continue
            for f, s in ((fa, self.a), (fb, self.b)):
                if f is not None:
                    s.traces_kept += 1
            self._record[tid] = (side, facts)
            if len(self._record) > self.max_traces:
                self._record.popitem(last=False)
                self.forgotten += 1
            self._count(side, facts, new=True)
            if side != "both":
                if self.keep_ids:
                    self.ids[side].append(tid.hex())
                # kept by `side` only: the other side loses it
                loser = "b" if side == "a" else "a"
                for cls, hit in (("errors", facts.error), ("slow", facts.duration >= self.slow_seconds)):
                    if hit:
                        lost = self.lost[f"{cls}_{loser}"]
                        lost["traces"] += 1
                        if len(lost["examples"]) < self.examples:
                            lost["examples"].append(tid.hex())

    def _count(self, side: str, facts: TraceFacts, *, new: bool) -> None:
        c = self.only[side]
        c["traces"] += 1 if new else 0
        c["spans"] += facts.spans
        c["bytes"] += facts.bytes

    @property
    def differs(self) -> bool:
        return self.only["a"]["traces"] > 0 or self.only["b"]["traces"] > 0

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON: per side what it kept, per class (a only, b only, both) traces, spans, bytes
        and per day, the must-keep traces each side loses, and (simulate) the trace IDs kept by one side only."""
        window = self.window_seconds
        scale = SECONDS_PER_DAY / window if window > 0 else 0.0

        def side(s: Side) -> dict[str, Any]:
            return {"name": s.name, "source": s.source, "traces_decided": s.traces_decided,
                    "traces_kept": s.traces_kept, "spans_kept": s.spans_kept, "bytes_kept": s.bytes_kept,
                    "kept_share": s.traces_kept / s.traces_decided if s.traces_decided else 0.0,
                    "spans_per_day": round(s.spans_kept * scale), "bytes_per_day": round(s.bytes_kept * scale),
                    "policies": s.policies or {}}

        names = {"a": self.a.name, "b": self.b.name, "both": "both"}
        kept = {}
        for key, c in self.only.items():
            kept[names[key] if key == "both" else f"{names[key]}_only"] = {
                **c, "spans_per_day": round(c["spans"] * scale), "bytes_per_day": round(c["bytes"] * scale)}
        lost = {f"{cls}_lost_by_{names[s]}": dict(self.lost[f"{cls}_{s}"])
                for cls in ("errors", "slow") for s in ("a", "b")}
        out: dict[str, Any] = {
            "window_seconds": window,
            "per_day_note": "per day: extrapolated from the observed window of span times",
            "slow_seconds": self.slow_seconds,
            "configs": {self.a.name: side(self.a), self.b.name: side(self.b)},
            "kept": kept,
            "lost": lost,
            "differs": self.differs,
            "record_forgotten": self.forgotten,
        }
        if self.keep_ids:
            out["only"] = {names["a"]: list(self.ids["a"]), names["b"]: list(self.ids["b"])}
        return out


def shadow_comparison(report: Mapping[str, Any], *, live_policies: Mapping[str, Mapping[str, int]] | None = None,
                      examples: int = DEFAULT_EXAMPLES) -> dict[str, Any]:
    """An engine's shadow report (`Engine.shadow_report`) in the shape of `Comparison.to_json`, sides named
    `live` and `shadow`: what `tailsample diff` prints. Counts are the engine's totals over every trace both sets
    judged; example trace IDs come from its bounded ring of disagreements, newest first. Bytes are span bytes as
    buffered; the window is the engine clock from the first judgement to the last."""
    window = float(report["window_seconds"])
    scale = SECONDS_PER_DAY / window if window > 0 else 0.0
    judged = int(report["traces_judged"])
    newest = list(reversed(report["disagreements"]))

    def ids(pred: Any) -> list[str]:
        return [d["trace_id"] for d in newest if pred(d)][:examples]

    def side(name: str, parts: tuple[str, ...], policies: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
        traces = sum(int(report[p]["traces"]) for p in parts)
        spans = sum(int(report[p]["spans"]) for p in parts)
        nbytes = sum(int(report[p]["bytes"]) for p in parts)
        return {"name": name, "source": "", "traces_decided": judged, "traces_kept": traces, "spans_kept": spans,
                "bytes_kept": nbytes, "kept_share": traces / judged if judged else 0.0,
                "spans_per_day": round(spans * scale), "bytes_per_day": round(nbytes * scale),
                "policies": {k: dict(v) for k, v in policies.items()}}

    kept = {}
    for key in ("live_only", "shadow_only", "both"):
        c = report[key]
        kept[key] = {"traces": c["traces"], "spans": c["spans"], "bytes": c["bytes"],
                     "spans_per_day": round(c["spans"] * scale), "bytes_per_day": round(c["bytes"] * scale)}
    lost = {}
    for cls, flag in (("errors", "error"), ("slow", "slow")):
        for loser in ("live", "shadow"):
            # Lost by the shadow: kept by live only (and the other way round).
            live_kept = loser == "shadow"
            lost[f"{cls}_lost_by_{loser}"] = {
                "traces": report[f"{cls}_lost_by_{loser}"],
                "examples": ids(lambda d, f=flag, lk=live_kept: d[f] and (d["live"] == "sampled") == lk),
            }
    return {
        "window_seconds": window,
        "per_day_note": "per day: extrapolated from the window between the first and the last judgement",
        "slow_seconds": report["slow_threshold_seconds"],
        "configs": {"live": side("live", ("live_only", "both"), live_policies or {}),
                    "shadow": side("shadow", ("shadow_only", "both"), report["policies"])},
        "kept": kept,
        "lost": lost,
        "differs": bool(report["live_only"]["traces"] or report["shadow_only"]["traces"]),
        "record_forgotten": report["disagreements_forgotten"],
        "examples": {"live_only": ids(lambda d: d["live"] == "sampled"),
                     "shadow_only": ids(lambda d: d["shadow"] == "sampled")},
    }


def policy_bytes(facts: Iterable[TraceFacts]) -> dict[str, int]:
    """Bytes of kept traces per deciding policy (`tailsample.record_policy`); unrecorded under ''."""
    out: dict[str, int] = {}
    for f in facts:
        out[f.policy] = out.get(f.policy, 0) + f.bytes
    return out


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover


def render_lines(report: Mapping[str, Any]) -> list[str]:
    """The comparison as plain lines for a terminal (`simulate`, `diff`)."""
    names = list(report["configs"])
    a, b = names[0], names[1]
    window = report["window_seconds"]
    lines = [f"observed window {window:,.1f} s of span time; per-day figures are extrapolated from it"]
    for n in names:
        s = report["configs"][n]
        lines.append(f"{n:<8} kept {s['traces_kept']:,} of {s['traces_decided']:,} traces decided "
                     f"({s['kept_share']:.2%}), {s['spans_kept']:,} spans, {format_bytes(s['bytes_kept'])}; "
                     f"per day {s['spans_per_day']:,} spans, {format_bytes(s['bytes_per_day'])}")
    for key in (f"{a}_only", f"{b}_only", "both"):
        c = report["kept"][key]
        lines.append(f"kept by {key.replace('_only', ' only'):<14} {c['traces']:>9,} traces {c['spans']:>10,} "
                     f"spans {format_bytes(c['bytes']):>10}   per day {c['spans_per_day']:,} spans, "
                     f"{format_bytes(c['bytes_per_day'])}")
    for key, lost in report["lost"].items():
        if lost["traces"]:
            ex = ", ".join(lost["examples"][:3])
            lines.append(f"MUST-KEEP LOST: {key.replace('_', ' ')}: {lost['traces']:,} traces (e.g. {ex})")
    lines.append("no difference" if not report["differs"] else "the two sides differ")
    return lines


__all__ = ["DEFAULT_SLOW_SECONDS", "Comparison", "Side", "TraceFacts", "format_bytes", "kept_facts",
           "policy_bytes", "render_lines", "shadow_comparison"]
