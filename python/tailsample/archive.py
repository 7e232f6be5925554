"""The archive of dropped traces (`tailsample.archive`): what the engine decided not to keep, kept on disk for a
while and findable by trace ID or by content.

`processors.tail_sampling.tailsample.archive: {storage: file_storage/<name>, max_size_mib: 10240, max_age: 24h}`
puts it under that extension's directory, in `archive_<processor id>/`. Each trace decided not kept (not sampled,
dropped by policy, too large, evicted, dropped at shutdown) is written there, compressed, at the decision round;
whole oldest segment files are removed first at `max_size_mib` or `max_age`.

Recovered traces come back as OTLP payloads whose every span carries `tailsample.recovered = true`.
`ArchiveReader` reads an archive directory without an engine (`tailsample recover --archive DIR`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tailsample import _native
from tailsample.errors import StorageError

RECOVERED_ATTRIBUTE = "tailsample.recovered"
SUBDIRECTORY_PREFIX = "archive_"


@dataclass(frozen=True)
class ArchiveSettings:
    """`tailsample.archive` as configured: the `file_storage` extension, the byte budget, the age limit (s)."""

    storage: str
    max_bytes: int
    max_age: float


@dataclass(frozen=True)
class Recovered:
    """One archived part of a dropped trace: its ID (32 hex digits), when it was archived (Unix s), its spans."""

    trace_id: str
    archived_at: float
    payload: bytes


@dataclass(frozen=True)
class Found(Recovered):
    """A trace found by a content scan: what the table shows of it."""

    spans: int = 0
    root_name: str = ""
    start: float = 0.0
    duration: float = 0.0
    error: bool = False


@dataclass(frozen=True)
class ScanResult:
    traces: list[Found]
    spans: int
    problems: list[str]
    truncated: bool


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_seconds(text: str) -> float:
    """Seconds in a Go duration as the engine writes it back (`24h0m0s`, `90m`, `1.5h`)."""
    parts = re.findall(r"([0-9.]+)(h|ms|m|s|us|µs|ns)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_trace_id(text: str) -> bytes:
    """A trace ID as 32 hex digits (a W3C traceparent's middle part is accepted too); ValueError otherwise."""
    t = text.strip().lower()
    if t.count("-") == 3:  # 00-<trace id>-<span id>-01
        t = t.split("-")[1]
    if len(t) != 32 or any(c not in "0123456789abcdef" for c in t):
        raise ValueError(f"{text!r} is not a trace ID (32 hex digits)")
    return bytes.fromhex(t)


def _recovered(rows: Iterable[tuple[bytes, float, bytes]]) -> list[Recovered]:
    return [Recovered(tid.hex(), at, payload) for tid, at, payload in rows]


def archive_directories(directory: str | Path) -> list[Path]:
    """The archives under a `file_storage` directory (one per tail_sampling processor), or the directory itself
    when it is one."""
    d = Path(directory)
    if not d.is_dir():
        raise StorageError(f"archive: {d} is not a directory", str(d))
    if any(d.glob("*.seg")):
        return [d]
    return sorted(p for p in d.glob(SUBDIRECTORY_PREFIX + "*") if p.is_dir())


class ArchiveReader:
    """The archives under a `file_storage` directory, read without an engine: nothing is written there."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.archives = archive_directories(self.directory)
        if not self.archives:
            raise StorageError(f"archive: no archive under {self.directory} (expected {SUBDIRECTORY_PREFIX}<id>/ "
                               "directories: give the file_storage extension's directory)", str(self.directory))
        self._readers = [_native.NativeArchiveReader(str(a)) for a in self.archives]

    def find(self, trace_ids: Iterable[str]) -> list[Recovered]:
        """Every archived part of each trace ID (none for an ID never archived or aged out)."""
        ids = [parse_trace_id(t) for t in trace_ids]
        out: list[Recovered] = []
        for r in self._readers:
            out.extend(_recovered(r.find(ids)))
        return out

    def scan(self, since: float, until: float, where: str | None = None, limit: int = 10_000) -> ScanResult:
        """Traces archived between `since` and `until` (Unix s) with a span matching `where` (an OTTL condition
        in the span context, as in an `ottl_condition` policy), at most `limit`. Raises ConfigError for a
        condition that does not compile."""
        # Unix seconds the engine's i64 nanoseconds hold (to 2262).
        since, until = max(0.0, min(since, 9e9)), max(0.0, min(until, 9e9))
        traces: list[Found] = []
        spans = 0
        problems: list[str] = []
        for r in self._readers:
            if len(traces) >= limit:
                break
            rows, n, p = r.scan(since, until, where, limit - len(traces))
            spans += n
            problems.extend(p)
            for tid, at, count, root, start, duration, error, payload in rows:
                if len(traces) < limit:
                    traces.append(Found(tid.hex(), at, payload, count, root, start, duration, error))
        return ScanResult(traces, spans, problems, len(traces) >= limit)


__all__ = ["RECOVERED_ATTRIBUTE", "ArchiveReader", "ArchiveSettings", "Found", "Recovered", "ScanResult",
           "archive_directories", "go_seconds", "parse_trace_id"]
