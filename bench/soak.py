"""Soak: `tailsample serve` under steady OTLP/HTTP load for a long time; is memory flat, is the decision lag bounded?

    .venv/bin/python bench/soak.py [--rate 50000] [--minutes 30] [--interval 10] [--json FILE]
                                   [--decision-wait 2] [--tail-storage DIR [--sync none|batch|payload]]

The server is `tailsample serve` (`python -m tailsample serve`) on the configuration of bench/services.py (an
`otlp` receiver on HTTP, `tail_sampling` with the seed's policies, `batch`, an `otlp_http` exporter to that
file's sink, Prometheus metrics), on free ports of 127.0.0.1, with `--decision-wait` (default 2 s). With
`--tail-storage DIR` the buffer is also written to disk (`tail_storage` on a `file_storage` extension in a fresh
subdirectory of DIR, removed afterwards unless `--keep-storage`), so the soak covers durable mode too.

The load is the realistic mix of `tailsample.traffic.synth` (1-50 spans per trace, about 400 spans per request), made
while it is sent, for `--minutes` at `--rate` spans/s: one process (forked), paced open loop on the traffic's own
arrival times (aiohttp, `--connections` connections); every span of the traces that start in the window is sent,
so the traffic's tail runs up to 8 s past it. At most `--max-in-flight` requests wait for an answer; a request
due beyond that is skipped (counted: the server is not keeping up).

Every `--interval` seconds one sample (one printed line, all kept in `--json`):
  - the server process: RSS (/proc/<pid>/statm), CPU in cores (utime + stime over the interval, all threads);
  - its metrics (/metrics): spans accepted and refused by the receiver, spans sent by the exporter (the kept
    spans), traces in memory, the engine's retained bytes, and the decision lag: the mean over the interval's
    decisions of (decided - due), from the counters tailsample_engine_decision_lag_seconds_total and
    tailsample_engine_decisions_timed_total (the service exposes no lag histogram; the decision timer's
    latency histogram, the time one poll round takes, is sampled too: its mean and the bucket bounding the
    interval's slowest round);
  - the generator: spans due and sent, answered 200, refused (429/503) or failed (other status, timeout,
    connection error), skipped, the latest it sent a request behind schedule, the mean answer latency.
After the traffic, the harness waits until every trace is decided and exported (one last `drain` sample).
The printed columns: phase (warmup, steady, tail: after the offered window, drain); the server's RSS, the
engine's retained bytes and the tail storage directory (MiB), its CPU (cores); spans/s accepted, spans refused,
kept spans/s sent by the exporter, traces in memory; decision lag (ms, the interval's mean), decision round
(ms, mean, and the bucket bounding the slowest); the generator's spans/s due and answered 200, how late it sent
(ms, the interval's latest), requests awaiting an answer, its CPU (cores).

Verdict (printed, and `verdict` in the JSON):
  - memory flat: after the warm-up (`--warmup-minutes`, default the first third of the run), the least-squares
    slope of RSS is at most `--rss-slope-bound` MiB per 10 minutes (default 5), or RSS moved (max - min) at most
    `--rss-range-bound` MiB (default 8) in that part; with fewer than 6 samples after the warm-up, the slope is
    noise (`short_run`);
  - lag within bound: the largest per-interval mean decision lag is below `--lag-bound` seconds (default 1);
  - no refused spans: the receiver refused none and every request was answered 200;
  - generator kept up: no request skipped and none sent more than `--send-lag-bound` seconds (default 1) behind
    its schedule;
  - nothing lost: every accepted trace decided, none evicted early, the exporter sent what the policies kept
    and the sink received it, no export failure.
The exit status is 0 for a completed run whatever the verdict (this is a measurement); 1 if the server died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import services
from services import cpu_seconds, finite, log, scrape, total
from tailsample.traffic.synth import TrafficGenerator

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
TS = "otelcol_processor_tail_sampling_"
TIMER = TS + "sampling_decision_timer_latency"
STORAGE_ID = "file_storage/soak"
LATE_S = 0.1  # a request sent later than this behind its schedule is counted as late (information)

# The generator's counters, shared with this process: cumulative, except the two maxima (reset when read).
GEN = ("due_spans", "sent_spans", "ok_spans", "refused_spans", "failed_spans", "skipped_spans", "requests",
       "late_requests", "answered_requests", "latency_sum_s", "in_flight", "max_send_lag_s", "max_latency_s",
       "done")
G = {name: i for i, name in enumerate(GEN)}
MAXIMA = ("max_send_lag_s", "max_latency_s")


# ---- the load generator (its own process) -------------------------------------------------------------------------

@dataclass
class Traffic:
    url: str
    rate: float
    seconds: float
    start: float  # time.time() of simulated time 0
    seed: int
    connections: int
    max_in_flight: int
    timeout: float = 10.0


def _drive(spec: Traffic, counters: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: this process stops on `stop`
    asyncio.run(_paced(spec, counters, stop))


async def _paced(spec: Traffic, c: Any, stop: Any) -> None:
    """Send the traffic on its own schedule (synthetic arrival times), counting into the shared array `c`."""
    gen = TrafficGenerator(seed=spec.seed, spans_per_second=spec.rate)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    lock = c.get_lock()
    tasks: set[asyncio.Task[None]] = set()

    async def send(session: aiohttp.ClientSession, body: bytes, spans: int, sent: float) -> None:
        status = await services.post(session, spec.url, body, timeout)
        latency = time.time() - sent
        with lock:
            c[G["in_flight"]] -= 1
            c[G["answered_requests"]] += 1
            c[G["latency_sum_s"]] += latency
            c[G["max_latency_s"]] = max(c[G["max_latency_s"]], latency)
            key = "ok_spans" if status == 200 else "refused_spans" if status in (429, 503) else "failed_spans"
            c[G[key]] += spans

    connector = aiohttp.TCPConnector(limit=spec.connections)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("Accept-Encoding",)) as session:
        for batch in gen.batches(spec.seconds):
            # The generator keeps every trace's ground truth for tests (`truth`): over 30 minutes, hundreds of MB.
            gen._pending_truth.clear()
            if stop.is_set():
                break
            due = spec.start + batch.t
            delay = due - time.time()
            await asyncio.sleep(max(0.0, delay))
            lag = time.time() - due
            with lock:
                c[G["due_spans"]] += batch.spans
                c[G["requests"]] += 1
                c[G["late_requests"]] += lag > LATE_S
                c[G["max_send_lag_s"]] = max(c[G["max_send_lag_s"]], lag)
                if len(tasks) >= spec.max_in_flight:
                    c[G["skipped_spans"]] += batch.spans
                    continue
                c[G["sent_spans"]] += batch.spans
                c[G["in_flight"]] += 1
            task = asyncio.create_task(send(session, batch.payload, batch.spans, time.time()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    c[G["done"]] = 1


def read_generator(c: Any) -> dict[str, float]:
    with c.get_lock():
        out = {name: float(c[i]) for i, name in enumerate(GEN)}
        for name in MAXIMA:
            c[G[name]] = 0.0
    return out


# ---- the server and its samples ----------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def configure(args: argparse.Namespace, storage: Path | None) -> Any:
    """The edit of bench/services.py's configuration: the decision wait, and tail storage when asked."""

    def adjust(cfg: dict[str, Any]) -> None:
        ts = cfg["processors"]["tail_sampling"]
        ts["decision_wait"] = f"{args.decision_wait:g}s"
        if storage is not None:
            cfg["extensions"] = {STORAGE_ID: {"directory": str(storage), "create_directory": True,
                                              "tailsample": {"max_size_mib": args.storage_max_mib,
                                                             "sync": args.sync}}}
            ts["tail_storage"] = STORAGE_ID
            cfg["service"]["extensions"] = [STORAGE_ID]

    return adjust


def server_metrics(url: str) -> dict[str, Any]:
    s = scrape(url)
    m: dict[str, Any] = services.service_counters(s)
    m.update({
        "traces_on_memory": total(s, TS + "sampling_traces_on_memory"),
        "engine_memory_bytes": total(s, "tailsample_engine_memory_bytes"),
        "storage_directory_bytes": total(s, "tailsample_engine_storage_directory_bytes"),
        "decision_lag_s": total(s, "tailsample_engine_decision_lag_seconds"),
        "decisions_timed": total(s, "tailsample_engine_decisions_timed"),
        "timer_count": total(s, TIMER + "_count"),
        "timer_sum_ms": total(s, TIMER + "_sum"),
        "timer_buckets": {float(lab["le"]): v for n, lab, v in s if n == TIMER + "_bucket"},
        # every engine gauge (the counters end in _total), to tell what grows if RSS does
        "engine_gauges": {n.removeprefix("tailsample_engine_"): v for n, _, v in s
                          if n.startswith("tailsample_engine_") and not n.endswith("_total")},
    })
    return m


@dataclass
class Snapshot:
    t: float
    cpu: float
    rss: int
    m: dict[str, Any]
    g: dict[str, float]
    gen_cpu: float
    sink_spans: int


def snapshot(server: services.Server, sink: services.Sink, counters: Any, gen_pid: int | None) -> Snapshot:
    pid = server.proc.pid
    t = time.time()
    cpu, rss = cpu_seconds(pid), rss_bytes(pid)
    m = server_metrics(server.metrics_url)
    gen_cpu = 0.0
    if gen_pid is not None:
        with contextlib.suppress(OSError):
            gen_cpu = cpu_seconds(gen_pid)
    return Snapshot(t, cpu, rss, m, read_generator(counters), gen_cpu, sink.stats()["spans"])


def timer_bound(prev: dict[float, float], cur: dict[float, float], count: float) -> float | None:
    """The smallest bucket bound holding every decision-timer run of the interval (ms; inf: above the last)."""
    if count <= 0:
        return None
    for le in sorted(cur):
        if cur[le] - prev.get(le, 0.0) >= count:
            return le
    return math.inf


def make_sample(a: Snapshot, b: Snapshot, t0: float, phase: str, send_lag_bound: float) -> dict[str, Any]:
    dt = max(1e-9, b.t - a.t)

    def dm(key: str) -> float:
        return float(b.m[key] - a.m[key])

    def dg(key: str) -> float:
        return b.g[key] - a.g[key]

    decisions, timer_runs = dm("decisions_timed"), dm("timer_count")
    answered = dg("answered_requests")
    return {
        "t_s": round(b.t - t0, 3), "minutes": round((b.t - t0) / 60, 4), "phase": phase, "seconds": round(dt, 3),
        "rss_mib": b.rss / MIB, "cpu_cores": (b.cpu - a.cpu) / dt,
        "engine_memory_mib": b.m["engine_memory_bytes"] / MIB,
        "storage_mib": b.m["storage_directory_bytes"] / MIB,
        "traces_on_memory": int(b.m["traces_on_memory"]),
        "accepted_spans_per_s": dm("receiver_accepted_spans") / dt,
        "refused_spans": int(dm("receiver_refused_spans")),
        "kept_spans_per_s": dm("exporter_sent_spans") / dt,
        "sink_spans_per_s": (b.sink_spans - a.sink_spans) / dt,
        "exporter_queue_size": int(b.m["exporter_queue_size"]),
        "export_failed_spans": int(dm("exporter_send_failed_spans") + dm("exporter_enqueue_failed_spans")),
        "decisions": int(decisions), "decisions_per_s": decisions / dt,
        "lag_mean_ms": dm("decision_lag_s") / decisions * 1e3 if decisions else None,
        "timer_runs": int(timer_runs),
        "timer_mean_ms": dm("timer_sum_ms") / timer_runs if timer_runs else None,
        "timer_max_bucket_ms": timer_bound(a.m["timer_buckets"], b.m["timer_buckets"], timer_runs),
        "gen_due_spans_per_s": dg("due_spans") / dt,
        "gen_sent_spans_per_s": dg("sent_spans") / dt,
        "gen_achieved_spans_per_s": dg("ok_spans") / dt,  # answered 200
        "gen_refused_spans": int(dg("refused_spans")), "gen_failed_spans": int(dg("failed_spans")),
        "gen_skipped_spans": int(dg("skipped_spans")),
        "gen_requests": int(dg("requests")), "gen_late_requests": int(dg("late_requests")),
        "gen_max_send_lag_ms": b.g["max_send_lag_s"] * 1e3,
        "gen_latency_mean_ms": dg("latency_sum_s") / answered * 1e3 if answered else None,
        "gen_latency_max_ms": b.g["max_latency_s"] * 1e3,
        "gen_in_flight": int(b.g["in_flight"]),
        "gen_kept_up": dg("skipped_spans") == 0 and b.g["max_send_lag_s"] <= send_lag_bound,
        "gen_cpu_cores": (b.gen_cpu - a.gen_cpu) / dt,
        "engine": b.m["engine_gauges"],
    }


def _k(v: float) -> str:
    return f"{v / 1e3:5.1f}k"


HEADER = (f"{'min':>6s}  {'phase':7s} | {'RSS MiB':>7s} {'engine':>6s} {'disk':>6s} {'CPU':>5s} | {'in/s':>6s} "
          f"{'refused':>7s} {'kept/s':>6s} {'traces':>7s} | {'lag ms':>6s} {'round ms':>11s} | {'due/s':>6s} "
          f"{'ok/s':>6s} {'late ms':>7s} {'queued':>6s} {'CPU':>5s}")
HEADER = (f"{'':15s} | {'server':^27s} | {'receiver, exporter':^29s} | {'decisions':^18s} | "
          f"{'load generator':^34s}\n" + HEADER)


def line(s: dict[str, Any]) -> str:
    lag = "-" if s["lag_mean_ms"] is None else f"{s['lag_mean_ms']:.0f}"
    timer = "-" if s["timer_mean_ms"] is None else f"{s['timer_mean_ms']:.0f}"
    if s["timer_max_bucket_ms"] is not None:
        timer += f" (<={s['timer_max_bucket_ms']:g})"
    flags = [] if s["gen_kept_up"] else ["GENERATOR BEHIND"]
    if s["refused_spans"] or s["gen_refused_spans"] or s["gen_failed_spans"]:
        flags.append("REFUSED/FAILED")
    return (f"{s['minutes']:6.2f}  {s['phase']:7s} | {s['rss_mib']:7.1f} {s['engine_memory_mib']:6.1f} "
            f"{s['storage_mib']:6.1f} {s['cpu_cores']:5.2f} | {_k(s['accepted_spans_per_s'])} "
            f"{s['refused_spans']:7d} {_k(s['kept_spans_per_s'])} {s['traces_on_memory']:7,d} | {lag:>6s} "
            f"{timer:>11s} | {_k(s['gen_due_spans_per_s'])} {_k(s['gen_achieved_spans_per_s'])} "
            f"{s['gen_max_send_lag_ms']:7.0f} {s['gen_in_flight']:6d} {s['gen_cpu_cores']:5.2f}"
            + (f"  {' '.join(flags)}" if flags else ""))


# ---- the verdict -------------------------------------------------------------------------------------------------

def verdict(samples: list[dict[str, Any]], final: dict[str, Any], args: argparse.Namespace, warmup_s: float,
            died: bool) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] in ("warmup", "steady", "tail")]
    steady = [s for s in samples if s["phase"] == "steady"]
    v: dict[str, Any] = {"warmup_minutes": warmup_s / 60, "samples_after_warmup": len(steady),
                         "short_run": len(steady) < 6}
    if len(steady) >= 2:
        x = np.array([s["t_s"] / 60 for s in steady])
        y = np.array([s["rss_mib"] for s in steady])
        slope = float(np.polyfit(x, y, 1)[0]) * 10
        v.update({"rss_slope_mib_per_10min": slope, "rss_after_warmup_mib": float(y[0]), "rss_end_mib": float(y[-1]),
                  "rss_max_mib": float(max(s["rss_mib"] for s in samples)),
                  "rss_range_after_warmup_mib": float(y.max() - y.min())})
        v["memory_flat"] = slope <= args.rss_slope_bound or v["rss_range_after_warmup_mib"] <= args.rss_range_bound
    else:
        v["memory_flat"] = None
    if steady:
        v["cpu_mean_cores"] = float(np.mean([s["cpu_cores"] for s in steady]))
        v["cpu_max_cores"] = float(max(s["cpu_cores"] for s in steady))
    lags = [s["lag_mean_ms"] for s in samples if s["lag_mean_ms"] is not None]
    weights = [s["decisions"] for s in samples if s["lag_mean_ms"] is not None]
    v["lag_max_interval_mean_ms"] = max(lags, default=None)
    v["lag_mean_ms"] = float(np.average(lags, weights=weights)) if lags and sum(weights) else None
    v["lag_bound_ms"] = args.lag_bound * 1e3
    v["lag_within_bound"] = bool(lags) and max(lags) < args.lag_bound * 1e3
    v["timer_max_bucket_ms"] = max((s["timer_max_bucket_ms"] for s in samples if s["timer_max_bucket_ms"]),
                                   default=None)
    v["refused_spans"] = final["receiver_refused_spans"]
    v["generator_refused_spans"], v["generator_failed_spans"] = final["gen_refused_spans"], final["gen_failed_spans"]
    v["no_refused"] = not (v["refused_spans"] or v["generator_refused_spans"] or v["generator_failed_spans"])
    v["generator_kept_up"] = bool(load) and all(s["gen_kept_up"] for s in load)
    v["generator_max_send_lag_ms"] = max((s["gen_max_send_lag_ms"] for s in load), default=None)
    offered = [s for s in samples if s["phase"] in ("warmup", "steady")]  # the whole window, not its tail
    seconds = sum(s["seconds"] for s in offered)
    v["offered_spans_per_s"] = args.rate
    v["due_spans_per_s"] = sum(s["gen_due_spans_per_s"] * s["seconds"] for s in offered) / seconds if seconds else 0
    v["achieved_spans_per_s"] = (sum(s["gen_achieved_spans_per_s"] * s["seconds"] for s in offered) / seconds
                                 if seconds else 0)
    v["nothing_lost"] = final["nothing_lost"]
    v["server_died"] = died
    checks = ("memory_flat", "lag_within_bound", "no_refused", "generator_kept_up", "nothing_lost")
    v["failed_checks"] = [k for k in checks if v[k] is False] + (["server_died"] if died else [])
    v["not_judged"] = [k for k in checks if v[k] is None]  # memory, with fewer than 2 samples after the warm-up
    v["ok"] = not v["failed_checks"]
    return v


def describe(v: dict[str, Any], args: argparse.Namespace) -> str:
    def yes(b: bool | None) -> str:
        return "n/a" if b is None else "yes" if b else "NO"

    rss = (f"RSS after warm-up {v['rss_after_warmup_mib']:.1f} MiB, end {v['rss_end_mib']:.1f}, max "
           f"{v['rss_max_mib']:.1f}; slope {v['rss_slope_mib_per_10min']:+.2f} MiB per 10 min, range "
           f"{v['rss_range_after_warmup_mib']:.1f} MiB" if "rss_slope_mib_per_10min" in v else "too few samples")
    lag = "n/a" if v["lag_max_interval_mean_ms"] is None else (
        f"mean {v['lag_mean_ms']:.0f} ms, worst interval {v['lag_max_interval_mean_ms']:.0f} ms "
        f"(bound {v['lag_bound_ms']:.0f} ms)")
    return "\n".join([
        f"verdict: {'OK' if v['ok'] else 'NOT OK: ' + ', '.join(v['failed_checks'])}"
        + (f" (not judged: {', '.join(v['not_judged'])})" if v["not_judged"] else "")
        + ("  (short run: the RSS slope is noise)" if v["short_run"] else ""),
        f"  memory flat after warm-up ({v['warmup_minutes']:.1f} min): {yes(v['memory_flat'])}; {rss}",
        f"  decision lag within bound: {yes(v['lag_within_bound'])}; {lag}; slowest decision round "
        f"<= {v['timer_max_bucket_ms']} ms",
        f"  no refused spans: {yes(v['no_refused'])} (receiver {v['refused_spans']:,.0f}, generator refused "
        f"{v['generator_refused_spans']:,.0f}, failed {v['generator_failed_spans']:,.0f})",
        f"  generator kept up: {yes(v['generator_kept_up'])}; offered {args.rate:,.0f} spans/s (due by the "
        f"traffic's arrival times {v['due_spans_per_s']:,.0f}), answered 200 {v['achieved_spans_per_s']:,.0f}; "
        f"latest send {v['generator_max_send_lag_ms']:.0f} ms behind schedule",
        f"  nothing lost: {yes(v['nothing_lost'])}; server CPU mean "
        + (f"{v['cpu_mean_cores']:.2f} cores after the warm-up" if "cpu_mean_cores" in v else "n/a"),
    ])


# ---- the run -----------------------------------------------------------------------------------------------------

def drain(server: services.Server, sink: services.Sink, deadline: float) -> None:
    """Until every trace is decided and every kept span is at the sink (or the deadline)."""
    while time.time() < deadline:
        m = server_metrics(server.metrics_url)
        if (m["traces_on_memory"] == 0 and m["exporter_queue_size"] == 0
                and sink.stats()["spans"] >= m["exporter_sent_spans"]
                and m["traces_sampled"] + m["traces_not_sampled"] >= m["traces_received"]):
            return
        time.sleep(0.25)


def soak(args: argparse.Namespace, server: services.Server, sink: services.Sink) -> dict[str, Any]:
    window = args.minutes * 60
    warmup_s = (args.warmup_minutes * 60) if args.warmup_minutes is not None else window / 3
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("d", len(GEN))
    stop = ctx.Event()
    t0 = time.time() + 1.0
    spec = Traffic(server.url, args.rate, window, t0, args.seed, args.connections, args.max_in_flight)
    gen = ctx.Process(target=_drive, args=(spec, counters, stop), daemon=True, name="soak-generator")
    m0 = server_metrics(server.metrics_url)
    gen.start()
    time.sleep(max(0.0, t0 - time.time()))
    first = prev = snapshot(server, sink, counters, gen.pid)
    samples: list[dict[str, Any]] = []
    died = interrupted = False
    print(HEADER, flush=True)
    tick = t0 + args.interval
    try:
        while True:
            time.sleep(max(0.0, tick - time.time()))
            tick += args.interval
            if server.proc.poll() is not None:
                died = True
                break
            try:
                cur = snapshot(server, sink, counters, gen.pid)
            except OSError as e:
                if server.proc.poll() is not None:
                    died = True
                    break
                log(f"  a sample failed ({e}); the next one covers this interval too")
                continue
            end = cur.t - t0
            phase = "warmup" if end <= warmup_s + 0.5 else "steady" if end <= window + 0.5 else "tail"
            samples.append(make_sample(prev, cur, t0, phase, args.send_lag_bound))
            print(line(samples[-1]), flush=True)
            prev = cur
            if cur.g["done"]:
                break
            if not gen.is_alive():
                log("the load generator exited early")
                break
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the load, then the verdict on what was measured")
    stop.set()
    gen.join(30)
    if gen.is_alive():
        gen.terminate()
        gen.join()
    load_end = time.time()
    g = read_generator(counters)
    if not died and not interrupted and server.proc.poll() is None:
        with contextlib.suppress(OSError):
            drain(server, sink, time.time() + args.decision_wait + 15)
            cur = snapshot(server, sink, counters, None)
            cur.gen_cpu = prev.gen_cpu
            samples.append(make_sample(prev, cur, t0, "drain", args.send_lag_bound))
            print(line(samples[-1]), flush=True)
            prev = cur
    died = died or (not interrupted and server.proc.poll() is not None)  # Ctrl-C stops the server too
    m = {k: v - m0[k] for k, v in prev.m.items() if not isinstance(v, dict)}
    decided = m["traces_sampled"] + m["traces_not_sampled"]
    final = {
        "load_seconds": load_end - t0, "gen_due_spans": g["due_spans"], "gen_sent_spans": g["sent_spans"],
        "gen_ok_spans": g["ok_spans"], "gen_refused_spans": g["refused_spans"], "gen_failed_spans": g["failed_spans"],
        "gen_skipped_spans": g["skipped_spans"], "gen_requests": g["requests"],
        "receiver_accepted_spans": m["receiver_accepted_spans"], "receiver_refused_spans": m["receiver_refused_spans"],
        "traces_received": m["traces_received"], "traces_decided": decided, "traces_sampled": m["traces_sampled"],
        "traces_dropped_too_early": m["traces_dropped_too_early"], "exporter_sent_spans": m["exporter_sent_spans"],
        "exporter_failed_spans": m["exporter_send_failed_spans"] + m["exporter_enqueue_failed_spans"],
        "sink_spans": prev.sink_spans - first.sink_spans,
        "server_cpu_seconds": prev.cpu - first.cpu,
        "server_peak_rss_mib": (services.status_kib(server.proc.pid, "VmHWM") / 1024
                                if server.proc.poll() is None else None),
        "interrupted": interrupted,
    }
    final["nothing_lost"] = (not died and final["receiver_accepted_spans"] == g["ok_spans"]
                             and decided >= final["traces_received"] and not final["traces_dropped_too_early"]
                             and final["exporter_failed_spans"] == 0
                             and final["sink_spans"] == final["exporter_sent_spans"] > 0)
    return {"samples": samples, "final": final, "died": died, "warmup_s": warmup_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50_000, help="offered spans/s (default 50,000)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the offered window (default 30)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--warmup-minutes", type=float, default=None, help="default: the first third of the run")
    ap.add_argument("--decision-wait", type=float, default=2.0, help="seconds (default 2)")
    ap.add_argument("--lag-bound", type=float, default=1.0, help="seconds, per-interval mean lag (default 1)")
    ap.add_argument("--rss-slope-bound", type=float, default=5.0, help="MiB per 10 min after warm-up (default 5)")
    ap.add_argument("--rss-range-bound", type=float, default=8.0,
                    help="MiB: RSS moving less than this after warm-up is flat whatever its slope (default 8)")
    ap.add_argument("--send-lag-bound", type=float, default=1.0,
                    help="seconds behind schedule the generator may send a request (default 1)")
    ap.add_argument("--tail-storage", type=Path, default=None, metavar="DIR",
                    help="run with tail_storage on a file_storage extension in a fresh subdirectory of DIR")
    ap.add_argument("--sync", choices=("none", "batch", "payload"), default="none", help="with --tail-storage")
    ap.add_argument("--storage-max-mib", type=int, default=1024, help="with --tail-storage (default 1024)")
    ap.add_argument("--keep-storage", action="store_true", help="keep the tail storage directory afterwards")
    ap.add_argument("--seed", type=int, default=1, help="of the synthetic traffic")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--max-in-flight", type=int, default=512, help="requests awaiting an answer (default 512)")
    ap.add_argument("--json", type=Path, default=None, help="write the samples and the verdict to this file")
    args = ap.parse_args()
    if args.minutes <= 0 or args.interval <= 0 or args.rate <= 0:
        ap.error("--minutes, --interval and --rate must be positive")

    storage = None
    if args.tail_storage is not None:
        args.tail_storage.mkdir(parents=True, exist_ok=True)
        storage = Path(tempfile.mkdtemp(prefix="soak-", dir=args.tail_storage))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sink = services.Sink()
    try:
        with tempfile.TemporaryDirectory(prefix="tailsample-soak-") as tmp:
            server = services.Server("tailsample", sink.port, Path(tmp), configure(args, storage))
            log(f"tailsample serve (pid {server.proc.pid}) on {server.url}, metrics {server.metrics_url}; "
                f"{args.rate:,.0f} spans/s for {args.minutes:g} min, decision_wait {args.decision_wait:g} s"
                + (f", tail storage in {storage} (sync {args.sync})" if storage else ""))
            try:
                run = soak(args, server, sink)
            finally:
                server.stop()
            log_tail = server.log.read_text(errors="replace")[-3000:]
    finally:
        sink.stop()
        if storage is not None and not args.keep_storage:
            shutil.rmtree(storage, ignore_errors=True)
    if run["died"]:
        log(f"the server died (exit status {server.proc.returncode}); its log ends with:\n{log_tail}")
    v = verdict(run["samples"], run["final"], args, run["warmup_s"], run["died"])
    print(describe(v, args), flush=True)
    result = {
        "kind": "soak", "started_at": started, "cpu_count": os.cpu_count(),
        "args": {k: str(val) if isinstance(val, Path) else val for k, val in vars(args).items()},
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "PYTHONMALLOC"))},
        "tail_storage": storage is not None, "config": server.config, "server_exit_status": server.proc.returncode,
        "server_log_tail": log_tail if run["died"] else None,
        "samples": run["samples"], "final": run["final"], "verdict": v,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite(result), indent=1) + "\n")
        log(f"wrote {args.json}")
    return 1 if run["died"] else 0


if __name__ == "__main__":
    sys.exit(main())
