"""Replay recorded traffic (files of the collector's `file` exporter) through the engine.

Every message of every input goes to one engine, in order; every payload the engine lets through is written to
the output. Recorded files carry no arrival times, so by default the engine's clock is driven by the data
(`clock="event"`): `now` is the largest span end time seen so far, and `decision_wait` is applied in trace
time: a replay runs as fast as the engine and the reading allow (about 200,000 spans/s from a proto file,
10,000 from JSON, whose conversion is Python) and decides as the collector would have, had the spans arrived
as they ended. One span with an absurd end time (a clock far in the future) moves that clock at once
and makes every trace then buffered due (end times past the engine's limit, year 2255, are ignored).

`clock="wall"` uses the real clock instead: a trace is decided `decision_wait` of real time after its first
span, so a replay faster than the recorded traffic buffers far more traces than the collector did, evicts the
oldest past `num_traces` (see `traces_evicted`), and makes most decisions at the final flush.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tailsample.collector.fileformat import FORMATS, PayloadReader, PayloadWriter, detect_format
from tailsample.config import Config
from tailsample.engine import Engine, KeptPayload, inspect_payload
from tailsample.errors import BackpressureError, DecodeError

CLOCKS = ("event", "wall")
_SHOWN_REJECTIONS = 20  # print the first ones as they come; all are in the report
_LATEST_CLOCK = 9.0e9  # seconds; the engine refuses a later `now` (year 2255): such an end time is garbage


@dataclass
class RejectedPayload:
    """A message that could not be taken: unreadable in the file, or refused by the engine."""

    file: Path
    index: int  # 1-based number of the message in its file
    location: str  # where it starts: `line 12` (json) or `byte 4711` (proto, uncompressed)
    error: str

    def __str__(self) -> str:
        return f"{self.file}: message {self.index} ({self.location}): {self.error}"


@dataclass
class ReplayReport:
    """What a replay read, decided and wrote."""

    payloads: int = 0  # messages read, rejected ones included
    spans_in: int = 0  # spans the engine took
    spans_out: int = 0  # spans written
    payloads_out: int = 0
    traces_sampled: int = 0
    traces_not_sampled: int = 0
    rejected: list[RejectedPayload] = field(default_factory=list)
    skipped_other_signals: int = 0  # JSON lines of metrics, logs or profiles
    policies: dict[str, dict[str, int]] = field(default_factory=dict)  # engine.policy_stats()
    stats: dict[str, int] = field(default_factory=dict)  # engine.stats() at the end
    seconds: float = 0.0
    bytes_read: int = 0
    out_format: str | None = None

    @property
    def payloads_rejected(self) -> int:
        return len(self.rejected)

    @property
    def kept_share(self) -> float:
        """Share of the decided traces that were kept (0 when none was decided)."""
        decided = self.traces_sampled + self.traces_not_sampled
        return self.traces_sampled / decided if decided else 0.0


def replay(config: Config, inputs: Sequence[Path], output: Path | None, *, fmt: str | None = None,
           out_fmt: str | None = None, clock: str = "event", console: Console | None = None,
           progress: bool = True) -> ReplayReport:
    """Feed every message of `inputs` to an engine for `config`; write what it keeps to `output`.

    `fmt` is the inputs' format (`json`, `proto`, or None to detect it per file); `out_fmt` the output's
    (default: the first input's format, json for `-`, standard output). `output` None writes nothing: the
    report is the result. `clock` is `event` (the engine's `now` is the largest span end time seen so far,
    polled after every message, flushed at the end) or `wall` (the real clock; flushed at the end).

    A message that cannot be read or that the engine refuses is counted, reported with its file and index,
    and skipped; the replay goes on. Files are checked first (they exist, are not zstd), so such a problem
    fails before any work. Prints a progress bar (bytes read of the inputs' total size) unless `progress`
    is false, then per-policy counts and the totals to `console` (by default standard output, or standard
    error when the output goes to standard output).
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}: expected one of {', '.join(CLOCKS)}")
    for name, value in (("format", fmt), ("output format", out_fmt)):
        if value is not None and value not in FORMATS:
            raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(FORMATS)}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files")
    formats = [detect_format(p) for p in paths]  # raises for a missing or zstd file, before any work
    sizes = [p.stat().st_size for p in paths]
    to_stdout = output is not None and str(output) == "-"
    if output is not None and not to_stdout and output.exists() and any(output.samefile(p) for p in paths):
        raise ValueError(f"{output}: the output is one of the inputs: it would be emptied before being read")
    if console is None:
        console = Console(stderr=to_stdout)
    if out_fmt is None:
        out_fmt = "json" if to_stdout else (fmt or formats[0])

    report = ReplayReport(out_format=out_fmt if output is not None else None)
    engine = Engine(config)
    writer = PayloadWriter(output, out_fmt) if output is not None else None
    event_clock = clock == "event"
    now: float | None = 0.0 if event_clock else None
    started = time.perf_counter()

    def emit(batch: list[KeptPayload]) -> None:
        for kept in batch:
            report.spans_out += kept.spans
            report.payloads_out += 1
            if writer is not None:
                writer.write(kept.payload)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
            task = bar.add_task("replay", total=sum(sizes))

            def reject(path: Path, reader: PayloadReader, error: str) -> None:
                rejected = RejectedPayload(path, reader.index, reader.location, error)
                report.rejected.append(rejected)
                if len(report.rejected) <= _SHOWN_REJECTIONS:
                    bar.console.print(f"[yellow]skipped[/] {escape(str(rejected))}")

            done = 0
            for path, size, detected in zip(paths, sizes, formats, strict=True):
                bar.update(task, description=escape(path.name))
                with PayloadReader(path, fmt or detected, skip_other_signals=True) as reader:
                    while True:
                        try:
                            payload = next(reader)
                        except StopIteration:
                            break
                        except DecodeError as exc:
                            report.payloads += 1
                            # The reader's message already names the file and where.
                            reject(path, reader, str(exc).removeprefix(f"{path}: {reader.location}: "))
                            continue
                        report.payloads += 1
                        try:
                            if event_clock:
                                end = inspect_payload(payload)["max_end_unix_nano"] / 1e9
                                if end <= _LATEST_CLOCK:
                                    now = max(now or 0.0, end)
                            _ingest(engine, payload, now, emit)
                        except DecodeError as exc:
                            reject(path, reader, str(exc))
                            continue
                        except BackpressureError as exc:
                            reject(path, reader, f"engine at a limit ({exc.reason or exc}), message dropped")
                            continue
                        emit(engine.poll_kept(now=now))
                        bar.update(task, completed=done + reader.position)
                    report.skipped_other_signals += reader.skipped
                done += size
                bar.update(task, completed=done)
            emit(engine.flush_kept(now=now))
    finally:
        if writer is not None:
            writer.close()

    report.seconds = time.perf_counter() - started
    report.bytes_read = sum(sizes)
    report.stats = engine.stats()
    report.policies = engine.policy_stats()
    report.spans_in = report.stats.get("spans_received", 0)
    report.traces_sampled = report.stats.get("traces_sampled", 0)
    report.traces_not_sampled = report.stats.get("traces_not_sampled", 0)
    _print_report(console, report, config)
    return report


def _ingest(engine: Engine, payload: bytes, now: float | None,
            emit: Callable[[list[KeptPayload]], None]) -> None:
    """Ingest; at a limit, let due decisions free room and try once more before giving up."""
    try:
        engine.ingest(payload, now=now)
    except BackpressureError:
        emit(engine.poll_kept(now=now))
        engine.ingest(payload, now=now)


def _print_report(console: Console, report: ReplayReport, config: Config) -> None:
    table = Table(title="Policies", title_justify="left")
    table.add_column("policy")
    for column in ("sampled", "not sampled", "errors", "kept first"):
        table.add_column(column, justify="right")
    for name in config.policy_names:
        counts = report.policies.get(name, {})
        table.add_row(escape(name), *(f"{counts.get(key, 0):,}"
                                      for key in ("sampled", "not_sampled", "errors", "decided")))
    console.print(table)

    s = report.stats
    span_share = report.spans_out / report.spans_in if report.spans_in else 0.0
    rate = report.spans_in / report.seconds if report.seconds > 0 else 0.0
    other = report.skipped_other_signals
    lines = [
        f"payloads   {report.payloads:,} read, {report.payloads_rejected:,} rejected"
        + (f", {other:,} of other signals skipped" if other else "")
        + f", {report.payloads_out:,} written",
        f"spans      {report.spans_in:,} in, {report.spans_out:,} out ({span_share:.1%})",
        f"traces     {report.traces_sampled:,} sampled, {report.traces_not_sampled:,} not sampled, "
        f"{s.get('traces_dropped', 0):,} dropped, {s.get('traces_evicted', 0):,} evicted",
        f"late spans {s.get('late_spans_forwarded', 0):,} forwarded, "
        f"{s.get('late_spans_dropped', 0):,} dropped",
        f"time       {report.seconds:.2f} s, {rate:,.0f} spans/s",
    ]
    for line in lines:
        console.print(escape(line), highlight=False)
    console.print(f"[bold]kept {report.kept_share:.2%}[/] of the decided traces", highlight=False)
    hidden = report.payloads_rejected - _SHOWN_REJECTIONS
    if hidden > 0:
        console.print(f"[yellow]{hidden:,} more rejected payloads not shown[/]")


__all__ = ["CLOCKS", "RejectedPayload", "ReplayReport", "replay"]
