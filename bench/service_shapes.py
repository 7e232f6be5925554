"""CPU per span at 50k spans/s by request size and protocol: `bench/services.py` at one rate, for each shape.

    .venv/bin/python bench/service_shapes.py [--sizes 100,512,1000] [--protocols http,grpc] [--seconds 15]
                                             [--json FILE]

For every protocol and request size, one `bench/services.py --rates 50000 --refine 0` run (tailsample serve and
the otelcol, fresh processes, the same payloads and schedule; method in its docstring), in a subprocess so each
shape starts clean. The JSON holds, per shape, both systems' CPU per span (decisions and export included), steady
cores, decision lag where reported, and the ratio; `bench/report.py` turns it into a table. Sizes are the
OpenTelemetry SDK batch processor's 512, a small agent's 100 and the benchmark's 1,000.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RATE = 50_000


def run_shape(protocol: str, size: int, seconds: float, quick: bool) -> dict[str, Any]:
    """One services.py run at RATE; the tailsample and otelcol rows of it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, str(HERE / "services.py"), "--rates", str(RATE), "--refine", "0",
               "--seconds", f"{seconds:g}", "--spans-per-payload", str(size), "--protocol", protocol,
               "--json", str(out)]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not out.exists():
            error = proc.stderr[-2000:] or proc.stdout[-2000:]
            return {"protocol": protocol, "spans_per_request": size, "error": error}
        data = json.loads(out.read_text())
    row: dict[str, Any] = {"protocol": protocol, "spans_per_request": size}
    for run in data.get("runs", []):
        if run.get("rate") != RATE:
            continue
        row[run["system"]] = {
            "us_per_span": run["server_cpu_us_per_span"],
            "steady_cores": run["server_cpu_steady"],
            "sustained": run["sustained"],
            "failures": run["failures"],
            "latency_p99_ms": run["load"]["latency_p99_ms"],
        }
    ts, oc = row.get("tailsample"), row.get("otelcol")
    if ts and oc and ts["us_per_span"]:
        row["otelcol_over_tailsample"] = oc["us_per_span"] / ts["us_per_span"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,512,1000")
    ap.add_argument("--protocols", default="http,grpc")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="services.py --quick (shorter waits)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    for protocol in a.protocols.split(","):
        for size in (int(s) for s in a.sizes.split(",")):
            row = run_shape(protocol, size, a.seconds, a.quick)
            rows.append(row)
            ts, oc = row.get("tailsample", {}), row.get("otelcol", {})
            print(f"{protocol} {size:5d} spans/request: tailsample {ts.get('us_per_span', float('nan')):.2f} us/span, "
                  f"otelcol {oc.get('us_per_span', float('nan')):.2f} us/span"
                  + (f" ({row['otelcol_over_tailsample']:.1f}x)" if "otelcol_over_tailsample" in row else "")
                  + (f"; error: {row['error'][-300:]}" if "error" in row else ""), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"rate": RATE, "seconds_per_run": a.seconds, "rows": rows}, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
