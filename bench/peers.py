"""tailsample and the OpenTelemetry Collector's tail_sampling processor, side by side: same machine, same run, same
payload files, same policy files, both in-process. See bench/peers/README.md.

    .venv/bin/python bench/peers.py --quick                  # validation: 50k spans, 1 repetition (noisy)
    .venv/bin/python bench/peers.py --json out.json          # 200k spans, 5 repetitions, seed + heavy policies
    .venv/bin/python bench/peers.py --sweep --json out.json  # several payload sizes x trace sizes

The reference is bench/peers/tailsampling (Go, contrib tailsamplingprocessor v0.161.0 from the module proxy),
built once into the gotools cache. Every measurement is a fresh process, tailsample's too (this file with
`--worker`), and the two are interleaved, alternating which goes first (A B B A ...), so drift and noise fall on
both alike. Reported: median and min-max over the repetitions.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER = BENCH / "peers" / "tailsampling"
SOURCES = ("main.go", "go.mod", "go.sum")
for _p in (BENCH, ROOT / "tests"):  # workloads.py beside this file; the `tools` package of tests/
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import workloads  # noqa: E402

POLICIES = {"seed": workloads.SEED, "heavy": workloads.HEAVY}
DECISION_WAIT = {"throughput": 300, "memory": 3600}  # seconds: nothing is due during a run in either engine
SWEEP = [(100, 5), (512, 5), (512, 30), (8192, 5), (8192, 30)]  # (spans per payload, spans per trace)
BUILD_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 900
REFERENCE = "otelcol-contrib tailsamplingprocessor"


# --- the tailsample side: runs in a fresh process (`--worker MODE`) --------------------------------------------

def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _status(key: str) -> int:
    """A kB line of /proc/self/status (VmRSS, VmHWM) in bytes; -1 when unreadable."""
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return -1
    return int(m.group(1)) * 1024 if m else -1


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _throughput_pass(engine: Any, payloads: list[bytes]) -> dict[str, Any]:
    """Ingest every payload, then flush: every trace decided, the kept spans encoded as payloads."""
    from tailsample import inspect_payload

    gc.disable()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    for p in payloads:
        engine.ingest(p, now=0.0)
    t1 = time.perf_counter()
    out = engine.flush(now=0.0)
    t2, cpu1 = time.perf_counter(), _cpu_s()
    gc.enable()
    s = engine.stats()
    spans = s["spans_received"]
    decided = s["traces_sampled"] + s["traces_not_sampled"] + s["traces_dropped_by_policy"]
    return {
        "ingest_wall_s": t1 - t0, "flush_wall_s": t2 - t1, "process_wall_s": t2 - t0, "process_cpu_s": cpu1 - cpu0,
        "spans_per_s": spans / (t2 - t0), "spans_per_cpu_s": spans / (cpu1 - cpu0),
        "kept_spans": s["spans_sampled"], "kept_traces": s["traces_sampled"],
        "kept_spans_in_output": sum(inspect_payload(o)["spans"] for o in out), "output_payloads": len(out),
        "output_bytes": sum(map(len, out)),
        "decisions": {"sampled": s["traces_sampled"], "not_sampled": s["traces_not_sampled"],
                      "dropped": s["traces_dropped_by_policy"], "evicted": s["traces_evicted"]},
        "all_decided": decided == s["traces_received"] and s["traces_in_memory"] == 0,
        "spans": spans, "traces": s["traces_received"]}


def worker(mode: str, config_path: str, files: list[str]) -> dict[str, Any]:
    from tailsample import Config, Engine, _native
    from tailsample.collector.fileformat import read_payloads

    payloads = [p for f in files for p in read_payloads(Path(f), "proto")]
    config = Config.from_file(config_path)
    norm = config.normalized()
    res: dict[str, Any] = {
        "engine": "tailsample", "version": _native.__version__, "mode": mode,
        "config": {"file": config_path, "decision_wait_s": config.decision_wait, "num_traces": norm["num_traces"],
                   "num_shards": norm["num_shards"], "policies": config.policy_names},
        "input": {"files": files, "payloads": len(payloads), "payload_bytes": sum(map(len, payloads))}}
    gc.collect()
    if mode == "throughput":
        # Two passes on fresh engines: the process's first (cold: the allocator's first pages) and a warm one,
        # the figure compared; the reference does the same (its cold pass is streamed, see main.go).
        cold = _throughput_pass(Engine(config), payloads)
        gc.collect()
        res["throughput"] = {**_throughput_pass(Engine(config), payloads),
                             "cold": {k: cold[k] for k in ("process_wall_s", "process_cpu_s", "spans_per_s",
                                                           "spans_per_cpu_s", "kept_spans", "all_decided")},
                             "threads": len(os.listdir("/proc/self/task")), "peak_rss_bytes": _status("VmHWM")}
    elif mode == "memory":
        rss0 = _status("VmRSS")
        reset_ok = _reset_peak_rss()
        engine = Engine(config)
        t0 = time.perf_counter()
        for p in payloads:
            engine.ingest(p, now=0.0)
        feed = time.perf_counter() - t0
        hwm = _status("VmHWM")
        gc.collect()
        rss1 = _status("VmRSS")
        s = engine.stats()
        n = s["spans_in_memory"]
        res["memory"] = {
            "buffered_spans": n, "traces_in_memory": s["traces_in_memory"], "spans_received": s["spans_received"],
            "memory_bytes": s["memory_bytes"], "span_bytes_in_memory": s["span_bytes_in_memory"],
            "rss_delta_bytes": rss1 - rss0, "peak_rss_delta_bytes": hwm - rss0,
            "memory_bytes_per_span": s["memory_bytes"] / n, "span_bytes_per_span": s["span_bytes_in_memory"] / n,
            "rss_bytes_per_span": (rss1 - rss0) / n, "peak_rss_bytes_per_span": (hwm - rss0) / n,
            "feed_wall_s": feed, "decided": s["traces_sampled"] + s["traces_not_sampled"],
            "evicted": s["traces_evicted"], "peak_rss_reset_ok": reset_ok}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return res


# --- the reference: build once, run ------------------------------------------------------------------------------

def build_reference() -> tuple[Path, str]:
    """The Go program, built into the gotools cache, keyed by its sources and `go version`; and that version."""
    from tools import gotools

    go = gotools.find_go()
    version = gotools.go_version(go)
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (PEER / name).read_bytes() + b"\0")
    h.update(version.encode())
    key = h.hexdigest()
    binary = gotools.cache_dir() / f"peer-tailsampling-{key[:16]}" / "tailsampling-peer"

    def build(tmp: Path) -> None:
        gotools.run_go([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=PEER, what="bench/peers/tailsampling",
                       timeout=BUILD_TIMEOUT_S)

    return gotools.build_once(binary, key, build), version


def _run_json(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, check=False)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n"
                         f"{proc.stdout[-1000:]}") from None
    if proc.returncode != 0 or result.get("error"):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {result.get('error')}\n{proc.stderr[-3000:]}")
    return result


def run_tailsample(mode: str, config: Path, files: list[Path]) -> dict[str, Any]:
    return _run_json([sys.executable, __file__, "--worker", mode, "--config", str(config), *map(str, files)])


def run_reference(binary: Path, mode: str, config: Path, files: list[Path], procs: str,
                  num_traces: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "GOMAXPROCS"}  # GOGC, GOMEMLIMIT pass (and are reported)
    if procs != "default":
        env["GOMAXPROCS"] = procs
    return _run_json([str(binary), "-mode", mode, "-config", str(config), "-decision-wait",
                      f"{DECISION_WAIT[mode]}s", "-num-traces", str(num_traces), *map(str, files)], env)


# --- workloads and configs ----------------------------------------------------------------------------------------

def describe(path: Path) -> dict[str, Any]:
    """The workload file, parsed by the protobuf library: spans, distinct traces, payload and Span message bytes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tailsample.collector.fileformat import read_payloads

    payloads = spans = span_bytes = payload_bytes = 0
    traces: set[bytes] = set()
    for p in read_payloads(path, "proto"):
        payloads += 1
        payload_bytes += len(p)
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans += 1
                    span_bytes += span.ByteSize()
                    traces.add(span.trace_id)
    return {"file": str(path), "payloads": payloads, "spans": spans, "traces": len(traces),
            "payload_bytes": payload_bytes, "span_message_bytes": span_bytes,
            "payload_bytes_per_span": payload_bytes / spans, "span_message_bytes_per_span": span_bytes / spans}


def derived_config(policy: str, mode: str, num_traces: int, outdir: Path) -> tuple[Path, int]:
    """The policy file with decision_wait and num_traces set for the mode; the same file goes to both engines."""
    data = yaml.safe_load(POLICIES[policy].read_text())
    block = data["processors"]["tail_sampling"]
    block["decision_wait"] = f"{DECISION_WAIT[mode]}s"
    block["num_traces"] = n = max(int(block.get("num_traces", 50_000)), num_traces)
    path = outdir / f"{policy}-{mode}-{n}.yaml"
    path.write_text(f"# {POLICIES[policy].name} with decision_wait and num_traces set by bench/peers.py\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path, n


# --- summaries -------------------------------------------------------------------------------------------------

def _stat(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _get(run: dict[str, Any], path: str) -> float:
    value: Any = run
    for part in path.split("."):
        value = value[part]
    return float(value)


def _pick(runs: list[dict[str, Any]], section: str, key: str) -> dict[str, float]:
    return _stat([_get(r[section], key) for r in runs])


TS_METRICS = {
    "throughput": ["spans_per_s", "spans_per_cpu_s", "process_wall_s", "process_cpu_s", "kept_spans", "kept_traces",
                   "cold.spans_per_s", "cold.spans_per_cpu_s", "peak_rss_bytes"],
    "memory": ["memory_bytes_per_span", "span_bytes_per_span", "rss_bytes_per_span", "peak_rss_bytes_per_span"],
}
REF_METRICS = {
    "throughput": ["spans_per_s_with_unmarshal", "spans_per_s_processor_only", "spans_per_cpu_s_with_unmarshal",
                   "spans_per_cpu_s_processor_only", "streamed.spans_per_s", "streamed.spans_per_cpu_s",
                   "cold_streamed.spans_per_s", "cold_streamed.spans_per_cpu_s", "decode_wall_s", "process_wall_s",
                   "decode_cpu_s", "process_cpu_s", "kept_spans", "kept_traces", "num_gc", "peak_rss_bytes"],
    "memory": ["heap_alloc_bytes_per_span", "heap_inuse_bytes_per_span", "rss_bytes_per_span",
               "peak_rss_bytes_per_span"],
}
# (name, tailsample metric, reference metric): tailsample / reference, of the medians
RATIOS = {
    "throughput": [("spans_per_s_vs_with_unmarshal", "spans_per_s", "spans_per_s_with_unmarshal"),
                   ("spans_per_s_vs_processor_only", "spans_per_s", "spans_per_s_processor_only"),
                   ("spans_per_s_vs_streamed", "spans_per_s", "streamed.spans_per_s"),
                   ("cold_spans_per_s_vs_cold_streamed", "cold.spans_per_s", "cold_streamed.spans_per_s"),
                   ("spans_per_cpu_s_vs_with_unmarshal", "spans_per_cpu_s", "spans_per_cpu_s_with_unmarshal"),
                   ("spans_per_cpu_s_vs_processor_only", "spans_per_cpu_s", "spans_per_cpu_s_processor_only")],
    "memory": [("rss_per_span", "rss_bytes_per_span", "rss_bytes_per_span"),
               ("peak_rss_per_span", "peak_rss_bytes_per_span", "peak_rss_bytes_per_span"),
               ("accounted_per_span", "memory_bytes_per_span", "heap_alloc_bytes_per_span")],
}


def summarize(case: dict[str, Any]) -> None:
    mode = case["mode"]
    case["tailsample"]["summary"] = {k: _pick(case["tailsample"]["runs"], mode, k) for k in TS_METRICS[mode]}
    for ref in case["reference"]:
        ref["summary"] = {k: _pick(ref["runs"], mode, k) for k in REF_METRICS[mode]}
        ts, rs = case["tailsample"]["summary"], ref["summary"]
        ref["ratios_tailsample_over_reference"] = {
            name: ts[a]["median"] / rs[b]["median"] if rs[b]["median"] else None for name, a, b in RATIOS[mode]}


def _n(x: float) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.0f}k"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _cell(s: dict[str, float], fmt: Callable[[float], str] = _n) -> str:
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"


def _kept(s: dict[str, dict[str, float]]) -> str:
    return f"{s['kept_spans']['median']:,.0f} / {s['kept_traces']['median']:,.0f}"


def print_case(case: dict[str, Any]) -> None:
    mode, ts = case["mode"], case["tailsample"]["summary"]
    refs = case["reference"]
    head = ["", "tailsample"] + [f"reference GOMAXPROCS={r['gomaxprocs']}" for r in refs]
    rows: list[list[str]] = []
    if mode == "throughput":
        def ref_row(label: str, ts_key: str | None, ref_key: str) -> list[str]:
            return [label, _cell(ts[ts_key]) if ts_key else ""] + [_cell(r["summary"][ref_key]) for r in refs]

        rows.append(ref_row("spans/s (ref: decode + processor)", "spans_per_s", "spans_per_s_with_unmarshal"))
        rows.append(ref_row("spans/s (ref: processor only)", None, "spans_per_s_processor_only"))
        rows.append(ref_row("spans/s (ref: streamed, one clock)", None, "streamed.spans_per_s"))
        rows.append(ref_row("spans/s, cold first pass (ref: streamed)", "cold.spans_per_s",
                            "cold_streamed.spans_per_s"))
        rows.append(ref_row("spans/CPU-s (ref: decode + processor)", "spans_per_cpu_s",
                            "spans_per_cpu_s_with_unmarshal"))
        rows.append(ref_row("spans/CPU-s (ref: processor only)", None, "spans_per_cpu_s_processor_only"))
        rows.append(["kept spans / kept traces (median)", _kept(ts)] + [_kept(r["summary"]) for r in refs])
        ratio_rows = [("ratio spans/s vs ref decode + processor", "spans_per_s_vs_with_unmarshal"),
                      ("ratio spans/s vs ref processor only", "spans_per_s_vs_processor_only"),
                      ("ratio spans/s vs ref streamed", "spans_per_s_vs_streamed"),
                      ("ratio spans/s, cold passes", "cold_spans_per_s_vs_cold_streamed"),
                      ("ratio spans/CPU-s vs ref decode + processor", "spans_per_cpu_s_vs_with_unmarshal"),
                      ("ratio spans/CPU-s vs ref processor only", "spans_per_cpu_s_vs_processor_only")]
    else:
        rows.append(["bytes/span: RSS growth", _cell(ts["rss_bytes_per_span"])]
                    + [_cell(r["summary"]["rss_bytes_per_span"]) for r in refs])
        rows.append(["bytes/span: peak RSS growth", _cell(ts["peak_rss_bytes_per_span"])]
                    + [_cell(r["summary"]["peak_rss_bytes_per_span"]) for r in refs])
        rows.append(["bytes/span: accounted (ts memory_bytes; ref HeapAlloc)", _cell(ts["memory_bytes_per_span"])]
                    + [_cell(r["summary"]["heap_alloc_bytes_per_span"]) for r in refs])
        rows.append(["bytes/span: ref HeapInuse", ""]
                    + [_cell(r["summary"]["heap_inuse_bytes_per_span"]) for r in refs])
        ratio_rows = [("ratio RSS growth", "rss_per_span"), ("ratio peak RSS growth", "peak_rss_per_span"),
                      ("ratio accounted (memory_bytes / HeapAlloc)", "accounted_per_span")]
    for label, key in ratio_rows:
        rows.append([label + " (ts/ref)", ""] + [f"{r['ratios_tailsample_over_reference'][key]:.2f}x" for r in refs])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print(f"  [{case['policies']} / {mode}]")
    for row in [head, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("    " + "  ".join(cells))


def checks(case: dict[str, Any], work: dict[str, Any]) -> list[str]:
    """What does not add up: every trace decided, nothing evicted, same inputs, kept counts side by side."""
    notes: list[str] = []
    mode = case["mode"]
    for r in case["tailsample"]["runs"]:
        m = r[mode]
        if mode == "throughput":
            if not m["all_decided"] or m["decisions"]["evicted"]:
                notes.append(f"tailsample: not every trace decided: {m['decisions']}")
            if m["spans"] != work["spans"] or m["traces"] != work["traces"]:
                notes.append(f"tailsample saw {m['spans']} spans / {m['traces']} traces, the file holds "
                             f"{work['spans']} / {work['traces']}")
            if not m["cold"]["all_decided"] or m["cold"]["kept_spans"] != m["kept_spans"]:
                notes.append(f"tailsample cold pass: {m['cold']}")
            if m["kept_spans"] != m["kept_spans_in_output"]:
                notes.append(f"tailsample: spans_sampled {m['kept_spans']} != spans in its output "
                             f"{m['kept_spans_in_output']}")
        elif m["buffered_spans"] != work["spans"] or m["decided"] or m["evicted"]:
            notes.append(f"tailsample buffered {m['buffered_spans']} of {work['spans']} spans "
                         f"(decided {m['decided']}, evicted {m['evicted']})")
    for ref in case["reference"]:
        for r in ref["runs"]:
            i, m = r["input"], r[mode]
            if (i["spans"], i["traces"], i["span_message_bytes"], i["payload_bytes"]) != (
                    work["spans"], work["traces"], work["span_message_bytes"], work["payload_bytes"]):
                notes.append(f"reference read the input differently: {i}")
            if mode == "throughput" and (not m["all_decided"] or m["decisions"]["decided_before_shutdown"]):
                notes.append(f"reference (GOMAXPROCS={ref['gomaxprocs']}): decisions {m['decisions']}, "
                             f"{work['traces']} traces")
            if mode == "throughput":
                for name in ("streamed", "cold_streamed"):
                    if not m[name]["all_decided"] or m[name]["kept_spans"] != m["kept_spans"]:
                        notes.append(f"reference (GOMAXPROCS={ref['gomaxprocs']}) {name} pass: {m[name]}")
            if mode == "memory" and m["decided"]:
                notes.append(f"reference decided {m['decided']} traces before the measurement")
        if mode == "throughput":
            ts_kept = {(r["throughput"]["kept_spans"], r["throughput"]["kept_traces"])
                       for r in case["tailsample"]["runs"]}
            ref_kept = {(r["throughput"]["kept_spans"], r["throughput"]["kept_traces"]) for r in ref["runs"]}
            if ts_kept != ref_kept:
                notes.append(f"kept (spans, traces) differ: tailsample {sorted(ts_kept)}, reference "
                             f"(GOMAXPROCS={ref['gomaxprocs']}) {sorted(ref_kept)} (the probabilistic policies "
                             "hash alike, see tests/parity; a stateful budget or rate limit that binds, or "
                             "decision order within a second, can differ)")
    return notes


# --- main ------------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50k spans, 1 repetition: a validation run, noisy")
    ap.add_argument("--reps", type=int, help="repetitions per engine (default 5, --quick 1)")
    ap.add_argument("--spans", type=int, help="spans per workload (default 200,000, --quick 50,000)")
    ap.add_argument("--spans-per-payload", type=int, default=1000)
    ap.add_argument("--spans-per-trace", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1, help="the workload generator's seed")
    ap.add_argument("--sweep", action="store_true",
                    help="the workload shapes " + ", ".join(f"{p}x{t}" for p, t in SWEEP)
                    + " (spans per payload x spans per trace) instead of one")
    ap.add_argument("--policies", default="seed,heavy", help="comma-separated: seed, heavy")
    ap.add_argument("--modes", default="throughput,memory", help="comma-separated: throughput, memory")
    ap.add_argument("--go-maxprocs", default="1",
                    help="comma-separated GOMAXPROCS values for the reference, 'default' for Go's own (default: 1)")
    ap.add_argument("--json", type=Path, help="write every run and the summaries here")
    ap.add_argument("--worker", choices=sorted(DECISION_WAIT), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.config, a.files)))
        return 0

    reps = a.reps or (1 if a.quick else 5)
    spans = a.spans or (50_000 if a.quick else 200_000)
    shapes = SWEEP if a.sweep else [(a.spans_per_payload, a.spans_per_trace)]
    policies = [p.strip() for p in a.policies.split(",") if p.strip()]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    procs = [p.strip() for p in a.go_maxprocs.split(",") if p.strip()]
    for p in policies:
        if p not in POLICIES:
            ap.error(f"unknown policy set {p!r}")
    for m in modes:
        if m not in DECISION_WAIT:
            ap.error(f"unknown mode {m!r}")

    t_start = time.time()
    binary, go_version = build_reference()
    from tailsample import _native

    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.machine())
    report: dict[str, Any] = {
        "schema": "tailsample-bench-peers/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "host": {"cpus": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
                 "python": platform.python_version(), "go": go_version, "load_avg_at_start": os.getloadavg(),
                 "env": {k: v for k, v in os.environ.items()
                         if k in ("GOGC", "GOMEMLIMIT", "GOMAXPROCS") or k.startswith("MIMALLOC_")}},
        "tailsample_version": _native.__version__,
        "reference_binary": str(binary),
        "settings": {"reps": reps, "order": "alternating first engine per repetition (A B, B A, ...)",
                     "decision_wait_s": DECISION_WAIT, "go_maxprocs": procs, "policies": policies, "modes": modes},
        "workloads": [], "cases": [], "notes": []}
    print(f"reference: {binary} ({go_version}); tailsample {_native.__version__}; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; {reps} repetition(s){'  -- QUICK, NOISY VALIDATION RUN' if a.quick else ''}")

    with tempfile.TemporaryDirectory(prefix="tailsample-peers-") as tmp:
        for shape_i, (per_payload, per_trace) in enumerate(shapes):
            path = workloads.write(per_payload, per_trace, spans, a.seed)
            work = describe(path)
            work.update({"spans_per_payload": per_payload, "spans_per_trace": per_trace, "seed": a.seed})
            report["workloads"].append(work)
            print(f"\nworkload {path.name}: {work['spans']:,} spans, {work['traces']:,} traces, "
                  f"{work['payloads']:,} payloads; {work['payload_bytes_per_span']:.1f} B/span of payload, "
                  f"{work['span_message_bytes_per_span']:.1f} B/span of Span messages")
            for policy in policies:
                for mode in modes:
                    config, num_traces = derived_config(policy, mode, work["traces"] + 64, Path(tmp))
                    case: dict[str, Any] = {
                        "workload": shape_i, "policies": policy, "mode": mode,
                        "config": {"source": str(POLICIES[policy].relative_to(ROOT)),
                                   "decision_wait_s": DECISION_WAIT[mode], "num_traces": num_traces,
                                   "text": config.read_text()},
                        "tailsample": {"runs": []},
                        "reference": [{"gomaxprocs": p, "runs": []} for p in procs]}
                    engines: list[dict[str, Any] | None] = [None, *case["reference"]]  # None: tailsample
                    for rep in range(reps):
                        for ref in (engines if rep % 2 == 0 else engines[::-1]):
                            if ref is None:
                                case["tailsample"]["runs"].append(run_tailsample(mode, config, [path]))
                            else:
                                ref["runs"].append(run_reference(binary, mode, config, [path], ref["gomaxprocs"],
                                                                 num_traces))
                    summarize(case)
                    case["notes"] = checks(case, work)
                    report["cases"].append(case)
                    report["notes"] += [f"{Path(work['file']).name} {policy}/{mode}: {n}" for n in case["notes"]]
                    print_case(case)
                    for note in case["notes"]:
                        print(f"    ! {note}")
    report["wall_s"] = time.time() - t_start
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {a.json}")
    print(f"\n{time.time() - t_start:.0f} s in all. Ratios are tailsample / reference of the medians: above 1 "
          "tailsample is faster (spans/s) or larger (bytes/span).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
