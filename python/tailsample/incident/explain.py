"""Did tailsample keep this trace, and why? The answer for a trace ID, as data and as text.

`Engine.explain(trace_id)` returns what the engine knows (a dict, keys below); `describe(...)` turns it into the
lines `tailsample explain` prints. The service serves the dict as JSON at `GET /debug/traces/<trace-id>`.

States:
- `pending`: buffered, not decided yet (`first_seen`, `due`, `span_count`);
- `decided`: in the decision log (the last `tailsample.decision_log_size` decisions): `outcome` (sampled,
  not_sampled, dropped_by_policy, dropped_too_large, dropped_on_shutdown, evicted), `trigger` (decision_wait,
  root_received, flush, ingest), `decided_by` (the first policy that sampled), `votes` (every top-level policy:
  sampled, not_sampled, dropped, error, not_evaluated), times, `span_count`, `late_spans` and, with adjusted
  counts on, `sampling_probability` of a kept trace; with the propagation audit on, `propagation`: the trace's
  `gaps` (calls no callee joined) and `orphan_spans` (spans whose parent never arrived), see `tailsample.incident.gaps`;
  `config_version`: the number of the configuration that decided it (1 until the first live reload);
- `sampled_cache` / `non_sampled_filter`: the record is gone, but a decision cache still remembers the ID;
- `unknown`: never seen, or forgotten.

From a running service, a decided answer may also carry `near_misses`: per policy that voted not_sampled, the
attribute keys it reads that the service's traffic sample spells otherwise (`tailsample.incident.lint`).

With the archive of dropped traces on (`tailsample.archive`), an answer for a trace not kept also carries
`archive`: `recoverable`, and when it is, `archived_at` and `until` (Unix s: at the latest `max_age` later; the
size limit may push it out sooner).

Times are seconds on the engine clock; `clock` is that clock now, so `clock - first_seen` is the trace's age.
"""

from __future__ import annotations

import time
from typing import Any

_OUTCOMES = {
    "sampled": "KEPT",
    "not_sampled": "NOT KEPT (no policy sampled it)",
    "dropped_by_policy": "DROPPED by a drop policy",
    "dropped_too_large": "DROPPED: its spans passed maximum_trace_size_bytes",
    "dropped_on_shutdown": "DROPPED at shutdown (drop_pending_traces_on_shutdown)",
    "evicted": "LOST: evicted undecided when num_traces was reached",
}
_TRIGGERS = {
    "decision_wait": "decision_wait after its first span",
    "root_received": "decision_wait_after_root_received after its root span",
    "flush": "shutdown flush",
    "ingest": "at ingest",
}


def _ago(clock: float | None, t: float) -> str:
    return "" if clock is None else f" ({clock - t:.1f} s ago)"


def describe(e: dict[str, Any]) -> list[str]:
    """Human-readable lines for one `explain` answer."""
    lines = _describe(e)
    archive = e.get("archive")
    if isinstance(archive, dict):
        if archive.get("recoverable"):
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(archive["until"]))
            lines.append(f"  RECOVERABLE from the archive of dropped traces until {until} at the latest "
                         f"(tailsample recover {e.get('trace_id', '?')})")
        else:
            lines.append("  not in the archive of dropped traces (never archived, or aged out)")
    return lines


def _describe(e: dict[str, Any]) -> list[str]:
    tid = e.get("trace_id", "?")
    state = e.get("state")
    clock = e.get("clock")
    if state == "pending":
        return [f"trace {tid}: PENDING, not decided yet",
                f"  first seen{_ago(clock, e['first_seen'])}, {e['span_count']} spans so far",
                f"  decision due in {max(0.0, e['due'] - (clock or e['due'])):.1f} s"]
    if state == "sampled_cache":
        return [f"trace {tid}: KEPT (its decision record is gone; the sampled cache still holds the ID)"]
    if state == "non_sampled_filter":
        return [f"trace {tid}: NOT KEPT (its decision record is gone; the non-sampled filter holds the ID)"]
    if state != "decided":
        return [f"trace {tid}: UNKNOWN: never seen by this engine, or decided so long ago that it is forgotten "
                "(see tailsample.decision_log_size)"]
    outcome = e["outcome"]
    lines = [f"trace {tid}: {_OUTCOMES.get(outcome, outcome)}"]
    if e.get("decided_by"):
        lines[0] += f", by policy {e['decided_by']!r}"
    lines.append(f"  first seen{_ago(clock, e['first_seen'])}; decided {e['decided_at'] - e['first_seen']:.2f} s "
                 f"later on {_TRIGGERS.get(e['trigger'], e['trigger'])}; "
                 f"{max(0.0, e['decided_at'] - e['due']) * 1e3:.0f} ms past due")
    lines.append(f"  {e['span_count']} spans when decided; {e['late_spans']} late spans after")
    if "config_version" in e:
        lines.append(f"  decided by configuration version {e['config_version']} (live reloads count from 1)")
    if "sampling_probability" in e:
        p = e["sampling_probability"]
        lines.append("  sampling probability unknown (kept by a rate limit): no adjusted count" if p is None
                     else f"  sampling probability {p:.6g} (adjusted count {1 / p:.6g})")
    prop = e.get("propagation")
    if prop and (prop["gaps"] or prop["orphan_spans"]):
        lines.append(f"  propagation: {prop['gaps']} calls whose callee never joined the trace, "
                     f"{prop['orphan_spans']} spans whose parent never arrived (`tailsample gaps` lists the pairs)")
    shadow = e.get("shadow")
    if shadow:
        lines.append(f"  shadow policies: {_OUTCOMES.get(shadow['outcome'], shadow['outcome'])}"
                     + (f", by shadow policy {shadow['decided_by']!r}" if shadow.get("decided_by") else "")
                     + " (never changes what is kept)")
    votes: dict[str, str] = e.get("votes") or {}
    if votes:
        lines.append("  votes:")
        width = max(len(n) for n in votes)
        lines += [f"    {name:<{width}}  {vote}" for name, vote in votes.items()]
    near: dict[str, list[str]] = e.get("near_misses") or {}
    if near:
        lines.append("  near misses (attributes these policies read, as the traffic spells them; "
                     "`tailsample check-config --url` lists them all):")
        for name, misses in near.items():
            lines += [f"    {name}: {m}" for m in misses]
    return lines
