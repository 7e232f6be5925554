"""Propagation gaps: where services lose the trace context, found over every decided trace.

The engine audits each trace when it decides it, kept or not (`rust/core/src/propagation.rs` has the rules): a
CLIENT or PRODUCER span that names a destination (`peer.service`, `server.address`, `rpc.service`,
`messaging.destination.name`, ...) but has no SERVER or CONSUMER child in the trace is a **gap** for the pair
(caller's `service.name` → destination); a span whose parent never arrived is an **orphan** and makes its trace
**broken**. This module holds the report's shape, the offline audit of recorded OTLP files (the same engine
code, run over the files), and the text `tailsample gaps` prints.

A report (`GapReport`) is plain JSON-safe data, the same from `Engine.gaps()`, from `GET /debug/gaps` on a
running service, and from `audit_payloads`; `tailsample.graph` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class GapPair(TypedDict):
    """Calls from one service to one destination, as the calling spans name it."""

    source: str
    destination: str
    callee: str | None
    """`service.name` of a SERVER/CONSUMER span seen answering this pair, if any."""
    destination_traced: bool
    """The destination is a traced service (seen as a `service.name`, or answering a call): its gaps are context
    dropped on the way. Otherwise it may be an external API or an uninstrumented service."""
    calls: int
    gaps: int
    """Calls with no SERVER/CONSUMER child in their trace."""
    gap_traces: int
    examples: list[str]
    """Trace IDs with a gap for this pair, most recent first."""
    overflow: bool
    """The calls of every pair past `max_pairs` (source and destination empty)."""


class BrokenService(TypedDict):
    """Spans of one service whose parent never arrived."""

    service: str
    traces: int
    orphan_spans: int
    examples: list[str]


class GapReport(TypedDict):
    traces_audited: int
    traces_with_gaps: int
    traces_broken: int
    calls: int
    gaps: int
    orphan_spans: int
    overflow_calls: int
    names_overflowed: int
    pairs: list[GapPair]
    """Worst first: most gaps, then most calls; the overflow pair last."""
    broken: list[BrokenService]


def empty_report() -> GapReport:
    return GapReport(traces_audited=0, traces_with_gaps=0, traces_broken=0, calls=0, gaps=0, orphan_spans=0,
                     overflow_calls=0, names_overflowed=0, pairs=[], broken=[])


MAX_EXAMPLES = 5  # example trace IDs per merged row, as `propagation_audit.examples` by default


def _merge_examples(ours: list[str], theirs: list[str]) -> list[str]:
    return [*ours, *(e for e in theirs if e not in ours)][:MAX_EXAMPLES]


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> GapReport:
    """Several pipelines' reports as one (pairs and services summed by name), worst first."""
    out = empty_report()
    pairs: dict[tuple[bool, str, str], GapPair] = {}
    broken: dict[str, BrokenService] = {}
    for r in reports:
        for key in ("traces_audited", "traces_with_gaps", "traces_broken", "calls", "gaps", "orphan_spans",
                    "overflow_calls", "names_overflowed"):
            out[key] += int(r[key])
        for p in r["pairs"]:
            k = (bool(p["overflow"]), p["source"], p["destination"])
            if k not in pairs:
                pairs[k] = GapPair(source=p["source"], destination=p["destination"], callee=p["callee"],
                                   destination_traced=False, calls=0, gaps=0, gap_traces=0, examples=[],
                                   overflow=bool(p["overflow"]))
            q = pairs[k]
            q["destination_traced"] = q["destination_traced"] or bool(p["destination_traced"])
            q["calls"] += p["calls"]
            q["gaps"] += p["gaps"]
            q["gap_traces"] += p["gap_traces"]
            q["callee"] = q["callee"] or p["callee"]
            q["examples"] = _merge_examples(q["examples"], p["examples"])
        for b in r["broken"]:
            c = broken.setdefault(b["service"], BrokenService(service=b["service"], traces=0, orphan_spans=0,
                                                              examples=[]))
            c["traces"] += b["traces"]
            c["orphan_spans"] += b["orphan_spans"]
            c["examples"] = _merge_examples(c["examples"], b["examples"])
    out["pairs"] = sorted(pairs.values(), key=lambda p: (p["overflow"], -p["gaps"], -p["calls"], p["source"],
                                                         p["destination"]))
    out["broken"] = sorted(broken.values(), key=lambda b: (-b["traces"], -b["orphan_spans"], b["service"]))
    return out


def audit_payloads(payloads: Iterable[bytes], *, max_traces: int = 1_000_000,
                   options: Mapping[str, Any] | None = None) -> tuple[GapReport, dict[str, int]]:
    """Audits recorded traffic offline: every payload into an engine that keeps nothing, then every trace
    decided at once. Returns the report and the engine's stats (`traces_evicted` > 0 means more than
    `max_traces` traces were in flight and some went unaudited). `options` are
    `tailsample.propagation_audit`'s (destination_attributes, ignore_destinations, ...)."""
    from tailsample.config import Config
    from tailsample.engine import Engine

    audit = {**(options or {}), "enabled": True}
    config = Config.from_dict({
        "decision_wait": "24h",  # nothing is decided before the end: a trace's spans may be anywhere in the files
        "num_traces": max_traces,
        "tailsample": {"propagation_audit": audit, "decision_log_size": 0, "recent_kept_bytes": 0},
        "policies": [{"name": "keep-nothing", "type": "probabilistic",
                      "probabilistic": {"sampling_percentage": 0}}],
    })
    engine = Engine(config)
    for payload in payloads:
        engine.ingest(payload, now=0.0)
    engine.flush(now=0.0)
    report = engine.gaps()
    assert report is not None  # the audit is on
    return report, engine.stats()


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in rows]


def render_text(report: Mapping[str, Any], *, top: int = 20, examples: int = 2) -> str:
    """The worst pairs (most gaps first) with example trace IDs, and the services with orphan spans."""
    lines = [f"{report['traces_audited']:,} traces audited: {report['traces_with_gaps']:,} with a propagation gap "
             f"({_pct(report['traces_with_gaps'], report['traces_audited'])}), {report['traces_broken']:,} broken "
             f"(orphan spans); {report['gaps']:,} of {report['calls']:,} calls lost the context"]
    gap_pairs = [p for p in report["pairs"] if p["gaps"] > 0]
    traced = [p for p in gap_pairs if p["destination_traced"] or p["overflow"]]
    untraced = [p for p in gap_pairs if not (p["destination_traced"] or p["overflow"])]
    for title, group in (
        ("Calls to traced services that never joined the trace (context dropped), worst first:", traced),
        ("Calls to destinations never seen as a traced service (external APIs or uninstrumented services; "
         "`ignore_destinations` silences them):", untraced),
    ):
        if not group:
            continue
        lines += ["", title]
        rows = [["SOURCE", "DESTINATION", "GAPS", "CALLS", "LOST", "TRACES", "EXAMPLE TRACE IDS"]]
        for p in group[:top]:
            dest = "(pairs past max_pairs)" if p["overflow"] else p["destination"]
            if p["callee"] and p["callee"] != p["destination"]:
                dest += f" (service {p['callee']})"
            rows.append([p["source"] or "-", dest, f"{p['gaps']:,}", f"{p['calls']:,}",
                         _pct(p["gaps"], p["calls"]), f"{p['gap_traces']:,}", " ".join(p["examples"][:examples])])
        lines += ["  " + line for line in _table(rows, {2, 3, 4, 5})]
        if len(group) > top:
            lines.append(f"  ... and {len(group) - top} more pairs with gaps")
    if report["broken"]:
        lines += ["", "Services with spans whose parent never arrived:"]
        rows = [["SERVICE", "TRACES", "ORPHAN SPANS", "EXAMPLE TRACE IDS"]]
        for b in report["broken"][:top]:
            rows.append([b["service"] or "(no service.name)", f"{b['traces']:,}", f"{b['orphan_spans']:,}",
                         " ".join(b["examples"][:examples])])
        lines += ["  " + line for line in _table(rows, {1, 2})]
    if not gap_pairs and not report["broken"]:
        lines += ["", "No propagation gaps and no broken traces."]
    healthy = [p for p in report["pairs"] if p["gaps"] == 0]
    if healthy:
        lines += ["", f"{len(healthy)} service pairs with every call answered."]
    if report["names_overflowed"] or report["overflow_calls"]:
        lines += ["", f"Bounded: {report['overflow_calls']:,} calls counted under pairs past max_pairs, "
                  f"{report['names_overflowed']:,} names past max_names."]
    return "\n".join(lines) + "\n"


__all__ = ["BrokenService", "GapPair", "GapReport", "audit_payloads", "empty_report", "merge_reports",
           "render_text"]
