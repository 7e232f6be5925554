"""Plots of the benchmark results (PNG, matplotlib with the Agg backend).

    .venv/bin/python -m pytest bench -q --benchmark-only --benchmark-json bench.json
    .venv/bin/python bench/plots.py --benchmark-json bench.json --out-dir bench/plots [--memory-json memory.json]

Writes, from the pytest-benchmark JSON of `bench/test_bench_engine.py` (it reads each benchmark's `extra_info`:
stage, policies, spans_per_payload, spans_per_trace, spans; and its stats' median, q1, q3):

- throughput_by_payload_size.png: spans/s against spans per payload (log x), one line per stage and policy set,
  at 5 spans per trace;
- throughput_by_trace_shape.png: spans/s against spans per trace (log x), at 1,000 spans per payload.

Points are spans per round / median round time; the bars span the interquartile range of the rounds. The y axis
is logarithmic: deciding (flush alone) runs one to two orders of magnitude faster than ingesting.

With `--memory-json M`, also memory_by_buffered_traces.png (`plot_memory`). M is a JSON list of objects, one per
sample of a running engine (what `tailsample bench --memory-json` writes):

    [{"buffered_traces": 20000, "retained_bytes": 45000000, "raw_bytes": 41000000}, ...]

- buffered_traces: traces in memory (`stats()["traces_in_memory"]`);
- retained_bytes: bytes the engine holds for them (`stats()["memory_bytes"]`: span bytes, trace slots, chunk
  headers, interned resources);
- raw_bytes: the OTLP bytes of the buffered spans as received (`stats()["span_bytes_in_memory"]`);
- optional: buffered_spans (adds retained and raw bytes per span to the legend), rss_bytes (plotted too).

With `--soak-json S`, also soak.png (`plot_soak`) from what `bench/soak.py --json S` writes: RSS (and the
engine's retained bytes), CPU in cores and the mean decision lag of each sampling interval against minutes,
three panels sharing the time axis (the offered window; not the traffic's tail); the warm-up is shaded and the
RSS slope after it drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError:  # pragma: no cover
    sys.exit("bench/plots.py needs matplotlib: .venv/bin/pip install -e '.[bench]'")

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

BASE_SIZE = 1000  # spans per payload of the trace-shape axis
BASE_SHAPE = 5  # spans per trace of the payload-size axis
STAGES = ("decode", "ingest", "decide", "end_to_end")
STAGE_LABELS = {"decode": "decode only (inspect_payload)", "ingest": "ingest (nothing decided)",
                "decide": "decide (flush: decide + re-encode)", "end_to_end": "end to end (ingest + flush)"}
COLORS = {"decode": "tab:gray", "ingest": "tab:blue", "decide": "tab:green", "end_to_end": "tab:red"}
POLICIES = (None, "seed", "heavy")
MARKERS = {None: "o", "seed": "o", "heavy": "s"}
LINESTYLES = {None: "-", "seed": "-", "heavy": "--"}


def load_benchmarks(path: str | Path) -> list[dict[str, Any]]:
    """The benchmarks of a pytest-benchmark JSON that carry throughput, as flat records."""
    data = json.loads(Path(path).read_text())
    records = []
    for bench in data.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        if not {"stage", "spans", "spans_per_payload", "spans_per_trace"} <= info.keys() or not stats.get("median"):
            continue
        spans = info["spans"]
        records.append({
            "name": bench["name"], "stage": info["stage"], "policies": info.get("policies"),
            "spans_per_payload": info["spans_per_payload"], "spans_per_trace": info["spans_per_trace"],
            "rate": spans / stats["median"],
            # faster rounds = higher rate: q1 of the times gives the upper end
            "rate_lo": spans / stats.get("q3", stats["median"]), "rate_hi": spans / stats.get("q1", stats["median"]),
            "spans": spans, "rounds": stats.get("rounds")})
    return records


def _rate_label(v: float, _pos: object = None) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _minor_label(v: float, _pos: object = None) -> str:
    """Label the minor ticks at 2 and 5 times a power of ten (a log axis over less than a decade needs them)."""
    if v <= 0:
        return ""
    mantissa = round(v / 10 ** math.floor(math.log10(v)), 6)
    return _rate_label(v) if mantissa in (2, 5) else ""


def _series_label(stage: str, policies: str | None) -> str:
    label = STAGE_LABELS.get(stage, stage)
    return f"{label}, {policies} policies" if policies else label


def plot_throughput(records: Sequence[Mapping[str, Any]], path: str | Path, *, x: str, fixed: str, value: int,
                    xlabel: str, title: str) -> bool:
    """spans/s against `x` (log), one line per (stage, policies), for the records with `fixed` == `value`."""
    series: dict[tuple[str, str | None], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r[fixed] == value:
            series[r["stage"], r["policies"]].append(r)
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    xs: set[int] = set()
    order = sorted(series, key=lambda k: (STAGES.index(k[0]) if k[0] in STAGES else len(STAGES),
                                          POLICIES.index(k[1]) if k[1] in POLICIES else len(POLICIES), k[1] or ""))
    for stage, policies in order:
        pts = sorted(series[stage, policies], key=lambda r: r[x])
        px = [r[x] for r in pts]
        py = [r["rate"] for r in pts]
        err = [[r["rate"] - r["rate_lo"] for r in pts], [r["rate_hi"] - r["rate"] for r in pts]]
        xs.update(px)
        ax.errorbar(px, py, yerr=err, label=_series_label(stage, policies), color=COLORS.get(stage),
                    marker=MARKERS.get(policies, "^"), linestyle=LINESTYLES.get(policies, ":"), capsize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(xs), [f"{v:,}" for v in sorted(xs)])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_rate_label))
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("throughput (spans/s, log scale)")
    chosen = [r for r in records if r[fixed] == value]
    rounds = "/".join(str(n) for n in sorted({r["rounds"] for r in chosen if r["rounds"]}))
    spans = "/".join(f"{n:,}" for n in sorted({r["spans"] for r in chosen}))
    ax.set_title(f"{title}\n{spans} spans per round; median of {rounds} rounds, bars: interquartile range",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _points(points: Iterable[Any]) -> list[dict[str, float]]:
    out = []
    for p in points:
        if isinstance(p, Mapping):
            out.append(dict(p))
        else:  # (buffered_traces, retained_bytes, raw_bytes)
            t, retained, raw = p
            out.append({"buffered_traces": t, "retained_bytes": retained, "raw_bytes": raw})
    for p in out:
        missing = {"buffered_traces", "retained_bytes", "raw_bytes"} - p.keys()
        if missing:
            raise ValueError(f"memory point {p}: missing {', '.join(sorted(missing))}")
    return sorted(out, key=lambda p: p["buffered_traces"])


def plot_memory(points: Iterable[Any], path: str | Path) -> bool:
    """Memory against buffered traces: the engine's retained bytes and the raw OTLP bytes of the buffered spans
    (and RSS when the points carry `rss_bytes`), in MiB.

    `points`: objects {"buffered_traces", "retained_bytes", "raw_bytes"[, "buffered_spans", "rss_bytes"]}, or
    tuples (buffered_traces, retained_bytes, raw_bytes). Returns False when there is nothing to plot.
    """
    pts = _points(points)
    if not pts:
        return False
    mib = 2 ** 20
    x = [p["buffered_traces"] for p in pts]
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    peak = max(pts, key=lambda p: p["retained_bytes"])
    spans = peak.get("buffered_spans")
    for key, label, color, marker in (("retained_bytes", "retained by the engine", "tab:red", "o"),
                                      ("raw_bytes", "raw OTLP bytes of the buffered spans", "tab:blue", "s")):
        y = [p[key] / mib for p in pts]
        slope = _slope_through_origin(x, [p[key] for p in pts])
        detail = [f"{slope / 1024:,.2f} KiB per trace"] if slope is not None else []
        if spans:
            detail.append(f"{peak[key] / spans:,.0f} B/span at the peak")
        ax.scatter(x, y, s=14, color=color, marker=marker, zorder=3,
                   label=f"{label} ({'; '.join(detail)})" if detail else label)
        if slope is not None:
            ax.plot([0, max(x)], [0, slope * max(x) / mib], color=color, linewidth=1, alpha=0.6)
    if all("rss_bytes" in p for p in pts):
        ax.scatter(x, [p["rss_bytes"] / mib for p in pts], s=14, marker="x", color="tab:gray",
                   label="process RSS growth since the run began (freed memory stays committed)")
    ax.set_xlabel("buffered traces")
    ax.set_ylabel("memory (MiB)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ratio = peak["retained_bytes"] / max(1, peak["raw_bytes"])
    ax.set_title(f"Memory against buffered traces ({len(pts)} samples; lines: least squares through 0)\n"
                 f"retained / raw at the peak: {ratio:.2f}x", fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _slope_through_origin(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares bytes per buffered trace (a line through the origin)."""
    sxx = sum(v * v for v in x)
    return sum(a * b for a, b in zip(x, y, strict=True)) / sxx if sxx else None


def plot_soak(data: Mapping[str, Any], path: str | Path) -> bool:
    """RSS (MiB), CPU (cores) and decision lag (ms, per-interval mean) against minutes: three stacked panels.

    `data`: the JSON of `bench/soak.py` (its `samples`, `verdict` and `args`). The samples of the offered window
    only: the traffic's tail and the drain after it are left out. Returns False when there is nothing to plot.
    """
    samples = [s for s in data.get("samples", []) if s.get("phase") in ("warmup", "steady")]
    if not samples:
        return False
    v, args = data.get("verdict", {}), data.get("args", {})
    x = [s["minutes"] for s in samples]
    warmup = v.get("warmup_minutes")
    fig, (ax_rss, ax_cpu, ax_lag) = plt.subplots(3, 1, figsize=(8, 8), sharex=True, layout="constrained")
    ax_rss.plot(x, [s["rss_mib"] for s in samples], color="tab:red", marker="o", markersize=3, label="server RSS")
    if any(s.get("engine_memory_mib") for s in samples):
        ax_rss.plot(x, [s["engine_memory_mib"] for s in samples], color="tab:blue", marker=".", markersize=3,
                    linewidth=1, label="engine buffer (memory_bytes: buffered traces)")
    if any(s.get("storage_mib") for s in samples):
        ax_rss.plot(x, [s["storage_mib"] for s in samples], color="tab:green", linewidth=1, linestyle="--",
                    label="tail storage on disk")
    steady = [s for s in samples if s["phase"] == "steady"]
    slope = v.get("rss_slope_mib_per_10min")
    if slope is not None and len(steady) >= 2:
        sx = [s["minutes"] for s in steady]
        mean_x = sum(sx) / len(sx)
        mean_y = sum(s["rss_mib"] for s in steady) / len(steady)
        ax_rss.plot([sx[0], sx[-1]], [mean_y + slope / 10 * (sx[0] - mean_x), mean_y + slope / 10 * (sx[-1] - mean_x)],
                    color="black", linewidth=1, linestyle=":",
                    label=f"slope after warm-up: {slope:+.2f} MiB per 10 min")
    ax_rss.set_ylabel("memory (MiB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(fontsize=8, loc="best")
    ax_cpu.plot(x, [s["cpu_cores"] for s in samples], color="tab:purple", marker="o", markersize=3,
                label="server (user + system, all threads)")
    if any(s.get("gen_cpu_cores") for s in samples):
        ax_cpu.plot(x, [s["gen_cpu_cores"] for s in samples], color="tab:gray", linewidth=1, linestyle="--",
                    label="load generator")
    ax_cpu.set_ylabel("CPU (cores)")
    ax_cpu.set_ylim(bottom=0)
    ax_cpu.legend(fontsize=8, loc="best")
    lag = [(s["minutes"], s["lag_mean_ms"]) for s in samples if s.get("lag_mean_ms") is not None]
    bound = v.get("lag_bound_ms")
    ax_lag.plot([p[0] for p in lag], [p[1] for p in lag], color="tab:orange", marker="o", markersize=3,
                label="mean decision lag of the interval (decided - due)"
                + (f"; bound {bound:,.0f} ms" if bound is not None else ""))
    ax_lag.set_ylabel("decision lag (ms)")
    ax_lag.set_ylim(bottom=0)
    ax_lag.legend(fontsize=8, loc="best")
    ax_lag.set_xlabel("minutes since the load started")
    ax_lag.set_xlim(left=0)
    for ax in (ax_rss, ax_cpu, ax_lag):
        if warmup:
            ax.axvspan(0, warmup, color="tab:gray", alpha=0.12, linewidth=0)
        ax.grid(True, alpha=0.4)
    rate = args.get("rate")
    verdict = "OK" if v.get("ok") else "not OK: " + ", ".join(v.get("failed_checks", [])) if v else "no verdict"
    storage = ", tail storage" if data.get("tail_storage") else ""
    ax_rss.set_title(f"Soak: tailsample serve at {rate or 0:,.0f} spans/s for {args.get('minutes', 0):g} min, "
                     f"decision_wait {args.get('decision_wait', 0):g} s{storage}; samples every "
                     f"{args.get('interval', 0):g} s\nverdict {verdict} (shaded: warm-up)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark-json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "plots")
    ap.add_argument("--memory-json", type=Path, help="JSON list of {buffered_traces, retained_bytes, raw_bytes}")
    ap.add_argument("--soak-json", type=Path, help="the JSON of bench/soak.py (writes soak.png)")
    a = ap.parse_args(argv)
    if a.benchmark_json is None and a.memory_json is None and a.soak_json is None:
        ap.error("give --benchmark-json, --memory-json and/or --soak-json")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if a.benchmark_json is not None:
        records = load_benchmarks(a.benchmark_json)
        if not records:
            print(f"{a.benchmark_json}: no benchmark with throughput extra_info", file=sys.stderr)
            return 1
        for name, kw in (
            ("throughput_by_payload_size.png",
             {"x": "spans_per_payload", "fixed": "spans_per_trace", "value": BASE_SHAPE,
              "xlabel": "payload size (spans per ExportTraceServiceRequest, log scale)",
              "title": f"Throughput against payload size ({BASE_SHAPE} spans per trace)"}),
            ("throughput_by_trace_shape.png",
             {"x": "spans_per_trace", "fixed": "spans_per_payload", "value": BASE_SIZE,
              "xlabel": "trace shape (spans per trace, log scale)",
              "title": f"Throughput against spans per trace ({BASE_SIZE:,} spans per payload)"}),
        ):
            if plot_throughput(records, a.out_dir / name, **kw):
                written.append(a.out_dir / name)
    if a.memory_json is not None:
        path = a.out_dir / "memory_by_buffered_traces.png"
        if plot_memory(json.loads(a.memory_json.read_text()), path):
            written.append(path)
    if a.soak_json is not None:
        path = a.out_dir / "soak.png"
        if plot_soak(json.loads(a.soak_json.read_text()), path):
            written.append(path)
    for p in written:
        print(p)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
