"""What-if over a recording: configuration A (and B) replayed over the same recorded OTLP, compared trace for trace.

Both engines read the same messages in the same order and are driven by the recording's clock: `now` is the
largest span end time seen so far (as `tailsample replay --clock event`), so `decision_wait` and time-dependent
policies (rate limits, adaptive budgets, latency percentiles) see recorded time, not how fast the replay runs.
Each engine records the policy that decided a kept trace (`tailsample.record_policy`) so bytes can be attributed
per policy; the attributes are not counted in the bytes.
"""

from __future__ import annotations

import heapq
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from tailsample.collector.compare import (
    DEFAULT_SLOW_SECONDS,
    Comparison,
    TraceFacts,
    format_bytes,
    kept_facts,
    policy_bytes,
    render_lines,
)
from tailsample.collector.fileformat import FORMATS, PayloadReader, PayloadWriter, detect_format
from tailsample.config import Config
from tailsample.engine import Engine, inspect_payload
from tailsample.errors import BackpressureError, DecodeError

_LATEST_CLOCK = 9.0e9  # seconds; an end time past the engine's limit (year 2255) is garbage, not a clock


@dataclass
class _Run:
    label: str
    config: Config
    engine: Engine
    kept: dict[bytes, TraceFacts]


def _recording_config(config: Config) -> Config:
    """`config` with the deciding policy recorded on kept spans (for bytes per policy)."""
    block = dict(config.block)
    block["tailsample"] = {**dict(block.get("tailsample") or {}), "record_policy": True}
    return Config(block, source=config.source)


def simulate(config: Config, inputs: Sequence[Path], *, against: Config | None = None, fmt: str | None = None,
             json_out: Path | None = None, picture: Path | None = None, console: Console | None = None,
             progress: bool = True, slow_seconds: float = DEFAULT_SLOW_SECONDS) -> dict[str, Any]:
    """Replay `inputs` through an engine for `config` (A) and, with `against`, one for B; print and return the
    comparison (`Comparison.to_json`; without `against`, B is absent and only A's side is filled).

    `json_out` writes the returned JSON; `picture` an SVG of kept share and bytes per day per policy, A beside B.
    Unreadable messages are skipped and counted (`rejected_payloads`). Raises ValueError for bad arguments and
    missing files, before any work.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files")
    formats = [detect_format(p) for p in paths]  # raises for a missing or zstd file, before any work
    sizes = [p.stat().st_size for p in paths]
    console = console or Console()
    runs = [_Run("A", config, Engine(_recording_config(config)), {})]
    if against is not None:
        runs.append(_Run("B", against, Engine(_recording_config(against)), {}))
    comparison = Comparison("A", "B", slow_seconds=slow_seconds, keep_ids=True)
    now = 0.0
    rejected = 0
    payloads = 0

    def poll(final: bool) -> None:
        for run in runs:
            out = run.engine.flush(now=now) if final else run.engine.poll(now=now)
            if out:
                kept_facts(out, run.kept)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("simulate", total=sum(sizes))
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
                        rejected += 1
                        bar.console.print(f"[yellow]skipped[/] {escape(str(exc))}")
                        continue
                    payloads += 1
                    try:
                        info = inspect_payload(payload)
                    except DecodeError as exc:
                        rejected += 1
                        bar.console.print(f"[yellow]skipped[/] {escape(f'{path}: {reader.location}: {exc}')}")
                        continue
                    end = info["max_end_unix_nano"] / 1e9
                    if end <= _LATEST_CLOCK:
                        now = max(now, end)
                        comparison.observe_window(info["min_start_unix_nano"], info["max_end_unix_nano"])
                    for run in runs:
                        try:
                            run.engine.ingest(payload, now=now)
                        except BackpressureError:
                            poll(False)  # due decisions free room; the same for every side, so fair
                            run.engine.ingest(payload, now=now)
                    poll(False)
                    bar.update(task, completed=done + reader.position)
            done += size
            bar.update(task, completed=done)
        poll(True)

    comparison.add(runs[0].kept, runs[1].kept if len(runs) > 1 else {})
    for run, side in zip(runs, (comparison.a, comparison.b), strict=False):
        stats = run.engine.stats()
        side.source = run.config.source
        side.traces_decided = stats.get("traces_sampled", 0) + stats.get("traces_not_sampled", 0)
        per_bytes = policy_bytes(run.kept.values())
        side.policies = {name: {"sampled": c.get("sampled", 0), "decided": c.get("decided", 0),
                                "bytes": per_bytes.get(name, 0)}
                         for name, c in run.engine.policy_stats().items()}
    report = comparison.to_json()
    report["payloads"] = payloads
    report["rejected_payloads"] = rejected
    if against is None:  # one side: no comparison to report
        report["configs"].pop("B")
        for key in ("kept", "lost", "only", "differs"):
            report.pop(key, None)
        a = report["configs"]["A"]
        console.print(escape(f"A kept {a['traces_kept']:,} of {a['traces_decided']:,} traces decided "
                             f"({a['kept_share']:.2%}), {a['spans_kept']:,} spans, {format_bytes(a['bytes_kept'])}; "
                             f"per day (extrapolated from {report['window_seconds']:,.1f} s) "
                             f"{format_bytes(a['bytes_per_day'])}"), highlight=False)
    else:
        for line in render_lines(report):
            console.print(escape(line), highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    if picture is not None:
        picture.write_text(svg(report))
        console.print(escape(f"picture: {picture}"), highlight=False)
    return report


def write_recording(recordings: Sequence[Sequence[tuple[int, bytes]]], path: Path) -> dict[str, Any]:
    """Recordings of a service's recent traffic (`GET /debug/traffic`: (receive time ns, payload), oldest first),
    one per instance, merged by receive time into `path` in the file exporter's proto format, for `simulate`
    (whose clock is the span times, as for any file). Returns payloads, bytes and the seconds they span."""
    payloads = size = 0
    first = last = 0
    with PayloadWriter(path, "proto") as writer:
        for at, payload in heapq.merge(*recordings, key=lambda r: r[0]):
            writer.write(payload)
            first = at if payloads == 0 else first
            last = at
            payloads += 1
            size += len(payload)
    return {"payloads": payloads, "bytes": size, "seconds": (last - first) / 1e9}


def svg(report: dict[str, Any]) -> str:
    """Two bar charts, per policy: share of decided traces it sampled, and bytes per day it decided; A beside B."""
    configs = report["configs"]
    labels = list(configs)
    colors = {"A": "#4878cf", "B": "#e8a33c"}
    names: list[str] = []
    for side in configs.values():
        names += [n for n in side["policies"] if n not in names]
    window = report["window_seconds"]
    scale = 86_400.0 / window if window > 0 else 0.0

    def share(label: str, name: str) -> float:
        s = configs[label]
        return s["policies"].get(name, {}).get("sampled", 0) / s["traces_decided"] if s["traces_decided"] else 0.0

    def per_day(label: str, name: str) -> float:
        return float(configs[label]["policies"].get(name, {}).get("bytes", 0)) * scale

    row, bar_h, left, width = 22 + 12 * len(labels), 12, 220, 420
    height = 60 + 14 * len(labels) + 2 * (30 + row * max(1, len(names)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 140}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14" font-weight="bold">tailsample simulate: per policy, '
           f'{" beside ".join(labels)}</text>']
    for i, lab in enumerate(labels):  # the legend: which file is which side
        ly = 34 + 14 * i
        out.append(f'<rect x="10" y="{ly}" width="10" height="10" fill="{colors.get(lab, "#888")}"/>'
                   f'<text x="24" y="{ly + 9}">{lab}: {html.escape(str(configs[lab]["source"]))}</text>')
    y = 40 + 14 * len(labels)
    for title, value, fmt in (("kept share of decided traces (sampled by the policy)", share, "{:.2%}"),
                              ("bytes per day decided by the policy (extrapolated)", per_day, "bytes")):
        out.append(f'<text x="10" y="{y + 14}" font-weight="bold">{html.escape(title)}</text>')
        y += 24
        top = max([value(lab, n) for lab in labels for n in names] + [1e-12])
        for n in names:
            out.append(f'<text x="10" y="{y + 12}">{html.escape(n)}</text>')
            for i, lab in enumerate(labels):
                v = value(lab, n)
                w = max(1.0, width * v / top) if v > 0 else 0.0
                text = fmt.format(v) if fmt != "bytes" else format_bytes(v)
                by = y + i * bar_h
                out.append(f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" '
                           f'fill="{colors.get(lab, "#888")}"><title>{lab}: {html.escape(text)}</title></rect>')
                out.append(f'<text x="{left + w + 4:.1f}" y="{by + bar_h - 3}" font-size="10">'
                           f'{lab} {html.escape(text)}</text>')
            y += row
        y += 10
    out.append("</svg>")
    return "\n".join(out) + "\n"


__all__ = ["simulate", "svg", "write_recording"]
