"""Write bench/RESULTS.md from the JSON files of one `make bench-results` run.

    python bench/report.py --dir bench/.data/results --out bench/RESULTS.md

Reads, from `--dir`: `engine.json` (pytest-benchmark), `peers.json` (bench/peers.py), `services.json`
(bench/services.py), `services-shapes.json` (bench/service_shapes.py), `kafka.json`
(bench/kafka_throughput.py), `harness-rate.json` and `harness-flat.json`
(`tailsample bench`), `soak.json` (bench/soak.py; its section is left out when the file is missing), and the
plots written next to RESULTS.md under bench/plots/. Every figure on the page comes from those files; nothing is
typed in.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _n(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M{unit}"
    if v >= 1e3:
        return f"{v / 1e3:.0f} k{unit}"
    return f"{v:.0f}{unit}"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}x"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or "?"
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{cores} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}; Python "
            f"{platform.python_version()}; {go or 'no Go'}")


def engine_section(data: Any) -> list[str]:
    if not data:
        return ["(engine.json missing)"]
    rows: dict[tuple[str, str | None, int, int], float] = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "spans_per_s" in e and "stage" in e:  # engine stages only: the service parts have no stage
            rows[e["stage"], e.get("policies"), e["spans_per_payload"], e["spans_per_trace"]] = e["spans_per_s"]
    stages = [("decode", None), ("ingest", "seed"), ("decide", "seed"), ("end_to_end", "seed"),
              ("end_to_end", "heavy"), ("end_to_end", "extended")]
    out = ["| spans per payload x spans per trace | " + " | ".join(
        f"{s.replace('_', ' ')}{'' if p is None else f' ({p})'}" for s, p in stages) + " |",
        "|---|" + "---|" * len(stages)]
    shapes = sorted({(k[2], k[3]) for k in rows})
    for p, t in shapes:
        out.append(f"| {p:,} x {t} | " + " | ".join(_n(rows.get((s, pol, p, t))) for s, pol in stages) + " |")
    return out


def peers_section(data: Any) -> tuple[list[str], dict[str, float]]:
    heads: dict[str, float] = {}
    if not data:
        return ["(peers.json missing)"], heads
    out = ["| policies | tailsample spans/s | reference spans/s (decode + processor) | ratio | reference "
           "processor only | ratio | spans/CPU-s ratio (decode + processor) | kept spans (ts / ref) |",
           "|---|---|---|---|---|---|---|---|"]
    mem = ["| policies | tailsample RSS growth B/span | reference RSS growth B/span | ratio | tailsample "
           "accounted B/span | reference HeapAlloc B/span | raw Span bytes/span |",
           "|---|---|---|---|---|---|---|"]
    raw = dict(enumerate(data.get("workloads", [])))  # cases name their workload by index
    for case in data["cases"]:
        ts = case["tailsample"]["summary"]
        ref = next((r for r in case["reference"] if r["gomaxprocs"] == 1), case["reference"][0])
        rs, ratio = ref["summary"], ref["ratios_tailsample_over_reference"]
        med = {k: v["median"] for k, v in ts.items() if isinstance(v, dict)}
        rmed = {k: v["median"] for k, v in rs.items() if isinstance(v, dict)}
        if case["mode"] == "throughput":
            out.append(f"| {case['policies']} | {_n(med.get('spans_per_s'))} | "
                       f"{_n(rmed.get('spans_per_s_with_unmarshal'))} | "
                       f"{_x(ratio.get('spans_per_s_vs_with_unmarshal'))} | "
                       f"{_n(rmed.get('spans_per_s_processor_only'))} | "
                       f"{_x(ratio.get('spans_per_s_vs_processor_only'))} | "
                       f"{_x(ratio.get('spans_per_cpu_s_vs_with_unmarshal'))} | "
                       f"{med.get('kept_spans', 0):,.0f} / {rmed.get('kept_spans', 0):,.0f} |")
            heads[f"{case['policies']}_speed"] = ratio.get("spans_per_s_vs_with_unmarshal") or 0.0
            heads[f"{case['policies']}_spans_per_s"] = med.get("spans_per_s") or 0.0
        else:
            w = raw.get(case["workload"], {})
            mem.append(f"| {case['policies']} | {med.get('rss_bytes_per_span', 0):.0f} | "
                       f"{rmed.get('rss_bytes_per_span', 0):.0f} | {ratio.get('rss_per_span', 0):.2f}x | "
                       f"{med.get('memory_bytes_per_span', 0):.0f} | {rmed.get('heap_alloc_bytes_per_span', 0):.0f} | "
                       f"{w.get('span_message_bytes_per_span', 0):.0f} |")
            heads[f"{case['policies']}_memory"] = ratio.get("rss_per_span") or 0.0
    return [*out, "", *mem], heads


def harness_section(rate: Any, flat: Any, extra: Any = None, *, only_extra: bool = False) -> list[str]:
    out = ["| run | spans/s | spans per CPU-second | decision lag p50 | p99 | peak RSS | retained / raw bytes "
           "per buffered span | RSS growth per buffered span |", "|---|---|---|---|---|---|---|---|"]
    runs = [("memory ramp", extra)] if only_extra else [("offered rate", rate), ("flat out", flat)]
    for name, r in runs:
        if not r:
            out.append(f"| {name} | (missing) | | | | | | |")
            continue
        label = f"{r['offered_rate']:,.0f} spans/s offered" if r.get("offered_rate") else "flat out"

        def lag(v: float | None) -> str:
            return "n/a" if v is None else ("> 10 s" if v == float("inf") else f"≤ {v * 1e3:g} ms")

        out.append(f"| {label}, {r['seconds']:.0f} s, decision_wait {r['decision_wait']:g} s | "
                   f"{_n(r['spans_per_second'])} | {_n(r['spans_per_cpu_second'])} | {lag(r['lag_p50_s'])} | "
                   f"{lag(r['lag_p99_s'])} | {r['peak_rss_bytes'] / 2**20:,.0f} MiB | "
                   f"{r['retained_bytes_per_span']:.0f} / {r['raw_bytes_per_span']:.0f} B "
                   f"({r['retained_over_raw']:.3f}x) | {r['rss_growth_per_buffered_span']:.0f} B "
                   f"({r['rss_growth_per_buffered_span'] / max(1.0, r['raw_bytes_per_span']):.2f}x raw) |")
    return out


def services_section(data: Any) -> list[str]:
    if not data:
        return ["(services.json missing)"]
    table = data.get("table_markdown")
    if table:
        return table.splitlines()
    return ["```", json.dumps(data, indent=2)[:4000], "```"]


def shapes_section(data: Any) -> list[str]:
    """CPU per span at 50k spans/s by protocol and request size (bench/service_shapes.py)."""
    if not data:
        return ["(services-shapes.json missing: `bench/service_shapes.py --json F`)"]
    lines = ["| protocol | spans per request | tailsample (us per span) | otelcol (us per span) | otelcol / tailsample "
             "| tailsample cores | request latency p99, tailsample / otelcol |",
             "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        ts, oc = r.get("tailsample"), r.get("otelcol")
        if not ts or not oc:
            lines.append(f"| {r['protocol']} | {r['spans_per_request']} | failed: {r.get('error', '?')[-120:]} "
                         "| | | | |")
            continue
        flag = "" if ts["sustained"] and oc["sustained"] else " (a run not sustained: see the JSON)"
        lines.append(f"| {'OTLP/gRPC' if r['protocol'] == 'grpc' else 'OTLP/HTTP'} | {r['spans_per_request']:,} "
                     f"| {ts['us_per_span']:.2f} | {oc['us_per_span']:.2f} | {r['otelcol_over_tailsample']:.1f}x{flag} "
                     f"| {ts['steady_cores']:.3f} | {ts['latency_p99_ms']:.0f} / {oc['latency_p99_ms']:.0f} ms |")
    return lines


def kafka_section(data: Any) -> list[str]:
    if not data:
        return ["(kafka.json missing)"]
    rows = data.get("rows", [])
    lines = str(data.get("table_markdown", "")).splitlines()
    if len(rows) == 2 and rows[0]["spans_per_s"]:
        # Right under the live table (the backlog's follow it after a blank line).
        at = lines.index("") if "" in lines else len(lines)
        lines[at:at] = ["", f"Two instances against one: {rows[1]['spans_per_s'] / rows[0]['spans_per_s']:.2f}x."]
    scale = data.get("scale_out") or {}
    if scale.get("pairs"):
        each = ", ".join(f"{p['modelled']:.2f}x" for p in scale["pairs"])
        lines += ["", f"Backlog, two instances against one (median of {len(scale['pairs'])} pairs): "
                  f"{scale['shared']:.2f}x on the shared cores; {scale['modelled']:.2f}x modelled with a core each "
                  f"(the single instance's CPU seconds over the busier of the two's; pairs: {each})."]
    return lines


def durability_section(*runs: Any) -> list[str]:
    """The `durable` rows of pytest-benchmark JSON files (the first file holding them wins)."""
    for data in runs:
        rows = {b["extra_info"]["sync"]: b["extra_info"] for b in (data or {}).get("benchmarks", [])
                if b.get("extra_info", {}).get("stage") == "durable"}
        if rows:
            break
    else:
        return ["(no durable rows in engine.json)"]
    base = rows.get("memory", {}).get("spans_per_s")
    what = {"memory": "no tail storage", "none": "`sync: none` (written, the OS flushes)",
            "batch": "`sync: batch` (one fsync per `ingest_batch` of 10 payloads)",
            "payload": "`sync: payload` (one fsync per payload)"}
    out = ["| tail storage | spans/s | against no storage | fsyncs per 100,000 spans | bytes written |",
           "|---|---|---|---|---|"]
    for key in ("memory", "none", "batch", "payload"):
        r = rows.get(key)
        if r is None:
            continue
        ratio = f"{r['spans_per_s'] / base:.2f}x" if base else "n/a"
        out.append(f"| {what[key]} | {_n(r['spans_per_s'])} | {ratio} | {r.get('fsyncs_per_round', 0):,} | "
                   f"{r.get('bytes_written', 0) / 2**20:.1f} MiB |")
    return out


def soak_section(data: Any, plots: str = "plots") -> list[str]:
    """The soak of `bench/soak.py`: one table row per run file (the verdict's figures) and the plot."""
    if not data:
        return ["(soak.json missing)"]
    v, a, f = data["verdict"], data["args"], data.get("final", {})

    def num(key: str, fmt: str = "{:.1f}") -> str:
        return "n/a" if v.get(key) is None else fmt.format(v[key])

    def yes(key: str) -> str:
        return "n/a" if v.get(key) is None else "yes" if v[key] else "**no**"

    storage = f"tail storage (`sync: {a.get('sync', 'none')}`)" if data.get("tail_storage") else "in memory"
    refused = f"{v.get('refused_spans', 0):,.0f} (generator: {v.get('generator_refused_spans', 0):,.0f} refused, " \
              f"{v.get('generator_failed_spans', 0):,.0f} failed)"
    verdict = "OK" if v.get("ok") else "not OK: " + ", ".join(v.get("failed_checks", []))
    return [
        f"`tailsample serve` under the realistic mix of `tailsample.traffic.synth` over OTLP/HTTP for {a['minutes']:g} "
        f"minutes (offered window; the traffic's tail follows), seed policies with decision_wait "
        f"{a['decision_wait']:g} s, {storage}; sampled every {a['interval']:g} s. The warm-up is the first "
        f"{v['warmup_minutes']:.1f} minutes; RSS slope: least squares over the samples after it. Decision lag: "
        "mean of (decided - due) over each interval's decisions (the engine's lag counters); the slowest "
        "decision round is the histogram bucket bounding it. The generator, the sink and the server share "
        f"{data.get('cpu_count', '?')} cores"
        + (" (short run: the slope is noise)." if v.get("short_run") else "."),
        "",
        "| minutes | offered / achieved spans/s | RSS after warm-up / end / max | RSS slope after warm-up | "
        "CPU mean (max) | decision lag mean / worst interval | slowest decision round | refused spans | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {a['minutes']:g} | {a['rate']:,.0f} / {v.get('achieved_spans_per_s', 0):,.0f} | "
        f"{num('rss_after_warmup_mib', '{:.0f}')} / {num('rss_end_mib', '{:.0f}')} / "
        f"{num('rss_max_mib', '{:.0f}')} MiB | {num('rss_slope_mib_per_10min', '{:+.2f}')} MiB per 10 min "
        f"(range {num('rss_range_after_warmup_mib')} MiB) | {num('cpu_mean_cores', '{:.2f}')} "
        f"({num('cpu_max_cores', '{:.2f}')}) cores | {num('lag_mean_ms', '{:.0f}')} / "
        f"{num('lag_max_interval_mean_ms', '{:.0f}')} ms (bound {v.get('lag_bound_ms', 0):,.0f} ms) | "
        f"≤ {num('timer_max_bucket_ms', '{:g}')} ms | {refused} | {verdict} |",
        "",
        f"Memory flat: {yes('memory_flat')}; lag within bound: {yes('lag_within_bound')}; no refused spans: "
        f"{yes('no_refused')}; generator kept up: {yes('generator_kept_up')} (latest send "
        f"{num('generator_max_send_lag_ms', '{:.0f}')} ms behind schedule); nothing lost: {yes('nothing_lost')} "
        f"({f.get('traces_received', 0):,.0f} traces received, {f.get('traces_decided', 0):,.0f} decided, "
        f"{f.get('exporter_sent_spans', 0):,.0f} kept spans sent, {f.get('sink_spans', 0):,.0f} at the sink).",
        "",
        f"![soak]({plots}/soak.png)",
    ]


HAND_WRITTEN = "<!-- Below: run by hand (not by make bench-results); bench/report.py keeps it as it is. -->"


def kept_by_hand(out: Path) -> str:
    """The hand-run sections at the end of the existing page (the archive's 10 GiB runs take too long for
    `make bench-results`), from the marker on; empty when there are none."""
    old = out.read_text() if out.exists() else ""
    at = old.find(HAND_WRITTEN)
    return "\n\n" + old[at:] if at >= 0 else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("bench/.data/results"))
    ap.add_argument("--out", type=Path, default=Path("bench/RESULTS.md"))
    ap.add_argument("--plots", default="plots", help="plots directory, relative to --out's folder")
    a = ap.parse_args()
    engine = _load(a.dir / "engine.json")
    peers = _load(a.dir / "peers.json")
    services = _load(a.dir / "services.json")
    rate, flat = _load(a.dir / "harness-rate.json"), _load(a.dir / "harness-flat.json")
    peer_lines, heads = peers_section(peers)
    soak = _load(a.dir / "soak.json")
    soak_lines = ["## Soak (`bench/soak.py`)", "", *soak_section(soak, a.plots), ""] if soak else []
    lines = [
        "# Benchmark results",
        "",
        "Written by `bench/report.py` from one run of `make bench-results` (every figure below comes from that "
        "run's JSON files; rerun the command to reproduce). These machines are shared and noisy: ratios measured "
        "in the same run hold, absolute times drift.",
        "",
        f"**Machine:** {_machine()}.",
        "",
        "## Headline",
        "",
        f"- In-process, end to end (OTLP bytes in, kept OTLP bytes out), seed policies, one core: "
        f"**{_n(heads.get('seed_spans_per_s'))} spans/s**, **{_x(heads.get('seed_speed'))}** the reference "
        f"`tail_sampling` processor (decode + processor, GOMAXPROCS=1) on the same payload files; heavy "
        f"policies: {_x(heads.get('heavy_speed'))}.",
        f"- Memory per buffered span (RSS growth): **{heads.get('seed_memory', 0):.2f}x** the reference's.",
        "",
        "## In-process: tailsample next to the reference processor (`bench/peers.py`)",
        "",
        "Same payload file (`bench/workloads.py`: 1,000 spans per payload, 5 spans per trace, ~10 attributes per "
        "span), same policy files, both engines deciding every trace; medians of interleaved repetitions. "
        "Method and caveats: `bench/peers/README.md`.",
        "",
        *peer_lines,
        "",
        "## Engine stages through the Python API (`pytest bench --benchmark-only`), spans/s",
        "",
        "100,000 spans per round; decide is `flush()` only (deciding and re-encoding what ingest buffered).",
        "",
        *engine_section(engine),
        "",
        f"![throughput by payload size]({a.plots}/throughput_by_payload_size.png)",
        f"![throughput by trace shape]({a.plots}/throughput_by_trace_shape.png)",
        "",
        "## Throughput harness (`tailsample bench`): real clock, decisions while ingesting",
        "",
        "The realistic mix of `tailsample.traffic.synth` (1-50 spans per trace), one ingest thread and one poll thread "
        "(every 50 ms), seed policies with decision_wait 2 s. Decision lag is decided time minus due time (the "
        "upper bound of its histogram bucket). spans/s is over the whole run, including the traffic's tail (the "
        "last traces' spans arrive up to 8 s after the offered window); 'at most N ms behind' in the JSON says "
        "whether ingest kept the offered schedule.",
        "",
        *harness_section(rate, flat),
        "",
        "Memory against buffered traces comes from a third run that decides nothing (decision_wait 60 s, 250,000 "
        "spans/s for 12 s), so the buffer only grows:",
        "",
        *harness_section(None, None, _load(a.dir / "harness-memory.json"), only_extra=True),
        "",
        "Heap per buffered span at small spans (`bench/memory_shape.py`): traces of 5 spans of about 360 B with ten "
        "attributes, the engine's defaults on (propagation audit, RED metrics, decision log), nothing decided; "
        "heap is the extension's counting allocator (live Rust bytes), raw the payload bytes taken:",
        "",
        *(services_section(shape) if (shape := _load(a.dir / "memory-shape.json")) else
          ["(memory-shape.json missing)"]),
        "",
        f"![memory by buffered traces]({a.plots}/memory_by_buffered_traces.png)",
        "",
        "## As services over OTLP/HTTP (`bench/services.py`)",
        "",
        *services_section(services),
        "",
        "At 50,000 spans/s by protocol and request size (`bench/service_shapes.py`: one `bench/services.py` run per "
        "shape, both systems fresh, CPU per span from the first request until the exports were done, decisions and "
        "export included):",
        "",
        *shapes_section(_load(a.dir / "services-shapes.json")),
        "",
        "## Scaling out on Kafka (`bench/kafka_throughput.py`)",
        "",
        "`tailsample serve` instances in one consumer group reading a topic of 8 partitions on a real broker (Kafka "
        "3.9, KRaft, on this machine); synthetic traffic, one trace per message keyed by trace ID (about 2 spans "
        "per message); seed policies with decision_wait 2 s; timed from the first message produced until the "
        "group has committed every message (commits follow decisions and exports, so the time includes the last "
        "decision window). The broker, the producer and the instances share the 2 cores.",
        "",
        *kafka_section(_load(a.dir / "kafka.json")),
        "",
        "## The cost of durability (`pytest bench -k durable`)",
        "",
        "End to end as above (seed policies, 1,000 spans per payload, 5 per trace, 100,000 spans per round), with "
        "tail storage in a fresh directory on this machine's disk (ext4 on a virtual disk), per fsync policy.",
        "",
        *durability_section(engine, _load(a.dir / "durable.json")),
        "",
        *soak_lines,
        "## Commands",
        "",
        "```sh",
        "make bench-results      # everything above, then this page (about 10 minutes on 2 cores)",
        "make bench              # the Rust scanner against prost, and the pytest-benchmark suites",
        "python bench/peers.py --json F; python bench/services.py --json F; tailsample bench --json F",
        ".venv/bin/python -m pytest bench -q --benchmark-only -k durable --benchmark-json F   # the durability table",
        ".venv/bin/python bench/soak.py --minutes 30 --json F && .venv/bin/python bench/plots.py --soak-json F"
        "   # the soak (30 min)",
        "```",
        "",
    ]
    a.out.write_text("\n".join(lines) + kept_by_hand(a.out))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
