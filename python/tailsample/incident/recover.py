"""`tailsample recover`: dropped traces back from the archive (`tailsample.archive`), by ID or by content.

By ID: from running services (`POST /debug/recover`: each looks in its own archive and sends what it finds to its
pipeline's exporters, or returns it), or offline from an archive directory (`--archive DIR`, the `file_storage`
extension's directory). By content: `--since/--until/--where` scans an archive directory for the traces archived
in a time window with a span matching an OTTL condition, lists them, and recovers them on request.
Recovered spans carry `tailsample.recovered = true`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tailsample.archive import Found, Recovered
from tailsample.collector.fileformat import PayloadWriter
from tailsample.collector.settings import parse_duration

NOT_FOUND = ("not in the archive: never archived (kept, never seen, or not yet decided), or aged out at "
             "max_age or pushed out at max_size_mib")


def parse_when(text: str, now: float) -> float:
    """`--since`/`--until`: a duration back from now (`30m`, `2h`), an ISO 8601 time (UTC unless it says), or
    `now`. Raises ValueError otherwise."""
    t = text.strip()
    if t == "now":
        return now
    try:
        seconds = parse_duration(t)
    except ValueError:
        seconds = -1.0
    if seconds >= 0:
        return now - seconds
    try:
        when = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration back from now (30m, 2h) nor an ISO time "
                         "(2026-12-06T20:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def when_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"


def duration_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def table_rows(found: Sequence[Found]) -> list[tuple[str, str, str, str, str, str]]:
    """(trace ID, root span, spans, duration, status, archived at) per trace found by a scan."""
    return [(f.trace_id, f.root_name or "(no root span)", str(f.spans), duration_text(f.duration),
             "ERROR" if f.error else "ok", when_text(f.archived_at)) for f in found]


def write_output(path: str | Path, recovered: Iterable[Recovered]) -> int:
    """Writes the recovered payloads to `path` in the collector file exporter's JSON format (one
    ExportTraceServiceRequest per line); returns how many."""
    writer = PayloadWriter(path, "json")
    try:
        for r in recovered:
            writer.write(r.payload)
    finally:
        writer.close()
    return writer.payloads


def missing(asked: Sequence[str], recovered: Iterable[Recovered]) -> list[str]:
    """The asked IDs (normalized) nothing was recovered for."""
    hit = {r.trace_id for r in recovered}
    return [t for t in asked if t not in hit]


__all__ = ["NOT_FOUND", "duration_text", "missing", "parse_when", "table_rows", "when_text", "write_output"]
