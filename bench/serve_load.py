"""Load `tailsample serve` over OTLP/HTTP on loopback and report what it sustains.

    .venv/bin/python bench/serve_load.py --seconds 10 --concurrency 4 --spans-per-payload 1000

Starts `tailsample serve` (the seed's policies, decision_wait 2s, a file exporter writing to /dev/null) as its
own process, sends pre-built synthetic payloads (synth.TrafficGenerator) as fast as `--concurrency` clients can
(or at `--rate` spans/s), and reports spans/s accepted, the refusals (503), the server's CPU seconds per second
(from /proc), its peak RSS, and what it counted itself. The load generator runs in this process: on a 2-core
machine both compete for the cores, so the figure is a floor for the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml

from tailsample.service.metrics import parse_text
from tailsample.synth import TrafficGenerator

SEED = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "data" / "seed-config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def payloads(spans_per_payload: int, total_spans: int) -> list[tuple[bytes, int]]:
    gen = TrafficGenerator(seed=11, spans_per_second=50_000, spans_per_payload=spans_per_payload)
    out, n = [], 0
    for b in gen.batches(3600):
        out.append((b.payload, b.spans))
        n += b.spans
        if n >= total_spans:
            return out
    return out


async def drive(url: str, data: list[tuple[bytes, int]], seconds: float, concurrency: int,
                rate: float | None) -> dict[str, float]:
    accepted = refused = requests = 0
    stop = time.perf_counter() + seconds
    next_index = 0
    started = time.perf_counter()
    sent_spans = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, refused, requests, next_index, sent_spans
        while time.perf_counter() < stop:
            if rate is not None:
                due = started + sent_spans / rate
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
            payload, spans = data[next_index % len(data)]
            next_index += 1
            sent_spans += spans
            async with session.post(url, data=payload, headers={"Content-Type": "application/x-protobuf"}) as r:
                await r.read()
                requests += 1
                if r.status == 200:
                    accepted += spans
                elif r.status == 503:
                    refused += spans
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                else:
                    raise RuntimeError(f"HTTP {r.status}: {await r.text()}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "accepted_spans": accepted, "refused_spans": refused, "requests": requests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--spans-per-payload", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=None, help="offered spans/s (default: as fast as possible)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    data = payloads(args.spans_per_payload, 300_000)
    http_port, metrics_port = free_port(), free_port()
    ts = yaml.safe_load(SEED.read_text())["processors"]["tail_sampling"]
    ts["decision_wait"] = "2s"
    ts["num_traces"] = 1_000_000
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"tail_sampling": ts},
        "exporters": {"file": {"path": "/dev/null", "format": "proto"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["file"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "serve.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "tailsample", "serve", "--config", str(path),
                                 "--log-level", "warning"])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("tailsample serve did not start") from None
                    time.sleep(0.1)
            cpu0 = cpu_seconds(proc.pid)
            result = asyncio.run(drive(f"http://127.0.0.1:{http_port}/v1/traces", data, args.seconds,
                                       args.concurrency, args.rate))
            cpu = cpu_seconds(proc.pid) - cpu0
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                m = parse_text(r.read().decode())
            result |= {
                "spans_per_second": result["accepted_spans"] / result["seconds"],
                "server_cpu_per_second": cpu / result["seconds"],
                "server_peak_rss_mib": peak_rss_mib(proc.pid),
                "server_accepted_spans": m['otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}'],
                "spans_per_payload": args.spans_per_payload, "concurrency": args.concurrency,
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accepted {result['accepted_spans']:,.0f} spans in {result['seconds']:.2f} s: "
              f"{result['spans_per_second']:,.0f} spans/s over OTLP/HTTP ({args.spans_per_payload} spans/request, "
              f"{args.concurrency} clients); refused {result['refused_spans']:,.0f}; server CPU "
              f"{result['server_cpu_per_second']:.2f} cores; peak RSS {result['server_peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
