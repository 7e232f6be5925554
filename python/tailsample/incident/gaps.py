"""Propagation gaps: where services lose the trace context, found over every decided trace.

The engine audits each trace when it decides it, kept or not (`rust/core/src/propagation.rs` has the rules): a
CLIENT or PRODUCER span names a destination (`peer.service`, `messaging.destination.name`, `rpc.service`, then an
address: `server.address` + `server.port`, `net.peer.name` + `net.peer.port`, `url.full`, `http.url`); without a
SERVER or CONSUMER child in the trace it is a **gap** for the pair (caller's `service.name` → destination). An
address is shown as the service whose own SERVER/CONSUMER spans describe themselves by it (`addresses` lists the
addresses called); a call naming nothing that nobody answered is counted under the destination `(unnamed)`. A span
whose parent never arrived is an **orphan** and makes its trace **broken**. Example trace IDs prefer kept traces
(`kept_examples` says which). This module holds the offline audit of recorded OTLP files (the same engine code,
run over the files), the merging of reports, and the text `tailsample gaps` prints.

A report (`tailsample.engine.GapReport`: the engine returns it, so its shape lives there) is plain JSON-safe data,
the same from `Engine.gaps()`, from `GET /debug/gaps` on a running service, and from `audit_payloads`;
`tailsample.incident.graph` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tailsample.config import Config
from tailsample.engine import BrokenService, Engine, GapPair, GapReport

_TOTALS = ("traces_audited", "traces_with_gaps", "traces_broken", "calls", "gaps", "orphan_spans", "overflow_calls",
           "unnamed_calls", "unnamed_gaps", "names_overflowed", "addresses_overflowed")


def empty_report() -> GapReport:
    return GapReport(traces_audited=0, traces_with_gaps=0, traces_broken=0, calls=0, gaps=0, orphan_spans=0,
                     overflow_calls=0, unnamed_calls=0, unnamed_gaps=0, names_overflowed=0,
                     addresses_overflowed=0, pairs=[], broken=[], addresses={})


MAX_EXAMPLES = 5  # example trace IDs per merged row, as `propagation_audit.examples` by default
MAX_ADDRESSES = 8  # addresses listed per merged pair, as the engine does


def _merge_examples(ours: GapPair | BrokenService, theirs: Mapping[str, Any]) -> None:
    """Kept traces first (ours, then theirs), then the others; at most MAX_EXAMPLES."""
    kept = [*ours["kept_examples"], *(e for e in theirs.get("kept_examples", ()) if e not in ours["kept_examples"])]
    rest = [e for e in (*ours["examples"], *theirs["examples"]) if e not in kept]
    examples = list(dict.fromkeys([*kept, *rest]))[:MAX_EXAMPLES]
    ours["examples"] = examples
    ours["kept_examples"] = [e for e in kept if e in examples]


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> GapReport:
    """Several pipelines' reports as one (pairs and services summed by name), worst first."""
    out = empty_report()
    pairs: dict[tuple[bool, str, str], GapPair] = {}
    broken: dict[str, BrokenService] = {}
    for r in reports:
        for key in _TOTALS:
            out[key] += int(r.get(key, 0))  # type: ignore[literal-required]
        out["addresses"].update(r.get("addresses", {}))
        for p in r["pairs"]:
            k = (bool(p["overflow"]), p["source"], p["destination"])
            if k not in pairs:
                pairs[k] = GapPair(source=p["source"], destination=p["destination"], addresses=[],
                                   callee=p["callee"], destination_traced=False, calls=0, gaps=0, gap_traces=0,
                                   examples=[], kept_examples=[], overflow=bool(p["overflow"]),
                                   unnamed=bool(p.get("unnamed", False)))
            q = pairs[k]
            q["destination_traced"] = q["destination_traced"] or bool(p["destination_traced"])
            q["calls"] += p["calls"]
            q["gaps"] += p["gaps"]
            q["gap_traces"] += p["gap_traces"]
            q["callee"] = q["callee"] or p["callee"]
            q["addresses"] = sorted({*q["addresses"], *p.get("addresses", ())})[:MAX_ADDRESSES]
            _merge_examples(q, p)
        for b in r["broken"]:
            c = broken.setdefault(b["service"], BrokenService(service=b["service"], traces=0, orphan_spans=0,
                                                              examples=[], kept_examples=[]))
            c["traces"] += b["traces"]
            c["orphan_spans"] += b["orphan_spans"]
            _merge_examples(c, b)
    out["pairs"] = sorted(pairs.values(), key=lambda p: (p["overflow"], -p["gaps"], -p["calls"], p["source"],
                                                         p["destination"]))
    out["broken"] = sorted(broken.values(), key=lambda b: (-b["traces"], -b["orphan_spans"], b["service"]))
    return out


def audit_payloads(payloads: Iterable[bytes], *, max_traces: int = 1_000_000,
                   options: Mapping[str, Any] | None = None, kept: bool = False) -> tuple[GapReport, dict[str, int]]:
    """Audits recorded traffic offline: every payload into an engine, then every trace decided at once. Returns
    the report and the engine's stats (`traces_evicted` > 0 means more than `max_traces` traces were in flight
    and some went unaudited). `options` are `tailsample.propagation_audit`'s (destination_attributes,
    ignore_destinations, ...). `kept`: the traces are known to be kept (read back from a backend), and the
    examples say so; otherwise none is (the engine keeps nothing)."""
    audit = {**(options or {}), "enabled": True}
    config = Config.from_dict({
        "decision_wait": "24h",  # nothing is decided before the end: a trace's spans may be anywhere in the files
        "num_traces": max_traces,
        "tailsample": {"propagation_audit": audit, "decision_log_size": 0, "recent_kept_bytes": 0},
        "policies": [{"name": "stored", "type": "always_sample"}] if kept else
                    [{"name": "keep-nothing", "type": "probabilistic", "probabilistic": {"sampling_percentage": 0}}],
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


def _examples(row: Mapping[str, Any], n: int) -> str:
    """The first `n` example trace IDs, kept ones marked (a backend has those)."""
    kept = set(row.get("kept_examples", ()))
    return " ".join(f"{e} (kept)" if e in kept else e for e in row["examples"][:n])


def render_text(report: Mapping[str, Any], *, top: int = 20, examples: int = 2) -> str:
    """The worst pairs (most gaps first) with example trace IDs, and the services with orphan spans."""
    lines = [f"{report['traces_audited']:,} traces audited: {report['traces_with_gaps']:,} with a propagation gap "
             f"({_pct(report['traces_with_gaps'], report['traces_audited'])}), {report['traces_broken']:,} broken "
             f"(orphan spans); {report['gaps']:,} of {report['calls']:,} calls lost the context"]
    unnamed_calls, unnamed_gaps = int(report.get("unnamed_calls", 0)), int(report.get("unnamed_gaps", 0))
    if unnamed_calls:
        lines.append(f"{unnamed_calls:,} calls named no destination: {unnamed_calls - unnamed_gaps:,} named by the "
                     f"service answering them, {unnamed_gaps:,} answered by nobody (counted under (unnamed))")
    gap_pairs = [p for p in report["pairs"] if p["gaps"] > 0]
    unnamed = [p for p in gap_pairs if p.get("unnamed")]
    traced = [p for p in gap_pairs if (p["destination_traced"] or p["overflow"]) and not p.get("unnamed")]
    untraced = [p for p in gap_pairs if not (p["destination_traced"] or p["overflow"] or p.get("unnamed"))]
    for title, group in (
        ("Calls to traced services that never joined the trace (context dropped), worst first:", traced),
        ("Calls to destinations never seen as a traced service (external APIs or uninstrumented services; "
         "`ignore_destinations` silences them):", untraced),
        ("Calls naming no destination (no peer.service, server.address, url.full, http.url, ...) that nobody "
         "answered:", unnamed),
    ):
        if not group:
            continue
        lines += ["", title]
        rows = [["SOURCE", "DESTINATION", "GAPS", "CALLS", "LOST", "TRACES", "EXAMPLE TRACE IDS"]]
        for p in group[:top]:
            dest = "(pairs past max_pairs)" if p["overflow"] else p["destination"]
            addresses = [a for a in p.get("addresses", ()) if a != p["destination"]]
            if addresses:
                dest += f" ({', '.join(addresses)})"
            if p["callee"] and p["callee"] != p["destination"]:
                dest += f" (service {p['callee']})"
            rows.append([p["source"] or "-", dest, f"{p['gaps']:,}", f"{p['calls']:,}",
                         _pct(p["gaps"], p["calls"]), f"{p['gap_traces']:,}", _examples(p, examples)])
        lines += ["  " + line for line in _table(rows, {2, 3, 4, 5})]
        if len(group) > top:
            lines.append(f"  ... and {len(group) - top} more pairs with gaps")
    if report["broken"]:
        lines += ["", "Services with spans whose parent never arrived:"]
        rows = [["SERVICE", "TRACES", "ORPHAN SPANS", "EXAMPLE TRACE IDS"]]
        for b in report["broken"][:top]:
            rows.append([b["service"] or "(no service.name)", f"{b['traces']:,}", f"{b['orphan_spans']:,}",
                         _examples(b, examples)])
        lines += ["  " + line for line in _table(rows, {1, 2})]
    if not gap_pairs and not report["broken"]:
        lines += ["", "No propagation gaps and no broken traces."]
    healthy = [p for p in report["pairs"] if p["gaps"] == 0]
    if healthy:
        lines += ["", f"{len(healthy)} service pairs with every call answered."]
    if report["names_overflowed"] or report["overflow_calls"] or report.get("addresses_overflowed"):
        lines += ["", f"Bounded: {report['overflow_calls']:,} calls counted under pairs past max_pairs, "
                  f"{report['names_overflowed']:,} names past max_names, "
                  f"{int(report.get('addresses_overflowed', 0)):,} addresses past max_addresses."]
    return "\n".join(lines) + "\n"


__all__ = ["BrokenService", "GapPair", "GapReport", "audit_payloads", "empty_report", "merge_reports",
           "render_text"]
