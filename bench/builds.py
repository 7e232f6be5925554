"""Two builds of tailsample side by side, in-process: has a change cost throughput through the Python API?

    .venv/bin/python bench/builds.py --a /tmp/old --b python [--runs 5] [--repeats 3] [--json FILE]

`--a` and `--b` are directories holding a `tailsample` package with its built `_native` module: the repository's
`python/` after `make build`, or an unpacked wheel of another commit (`git worktree add /tmp/wt REV && cd /tmp/wt &&
maturin build --release -o /tmp/w && unzip /tmp/w/*.whl -d /tmp/old`). The workload is `bench/workloads.py`'s
payload file (1,000 spans per payload, 5 spans per trace, 200,000 spans) through the seed policies: every payload
ingested, then one flush (every trace decided, the kept spans encoded). Each run is a fresh process (`--worker`),
A and B interleaved (A B B A ...) so that drift and noise on a shared machine fall on both; a run reports its best
of `--repeats` passes in spans per CPU-second of the process. Reported: the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SEED = BENCH.parent / "python" / "tailsample" / "data" / "seed-config.yaml"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def worker(payload_file: Path, repeats: int) -> float:
    """Best spans per CPU-second over `repeats` passes, with whatever `tailsample` is first on the path."""
    from tailsample import Config, Engine  # the build under test: only the API every build has

    data = payload_file.read_bytes()
    payloads, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        payloads.append(data[i + 4:i + 4 + n])
        i += 4 + n
    spans = int(payload_file.name.split("-")[0])
    cfg = Config.from_yaml(SEED.read_text())
    best = 0.0
    for _ in range(repeats):
        engine = Engine(cfg)
        start = _cpu_s()
        for p in payloads:
            engine.ingest(p, now=0.0)
        engine.flush(now=100.0)
        best = max(best, spans / (_cpu_s() - start))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", type=Path, help="directory holding build A's tailsample package")
    ap.add_argument("--b", type=Path, help="directory holding build B's tailsample package")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per build (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="passes per process, the best kept (default 3)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.repeats)))
        return 0
    if args.a is None or args.b is None:
        ap.error("--a and --b are required")
    sys.path.insert(0, str(BENCH))
    import workloads

    payloads = workloads.load(1000, 5, 200_000)
    with tempfile.TemporaryDirectory() as tmp:
        payload_file = Path(tmp) / "200000-spans.bin"
        payload_file.write_bytes(b"".join(struct.pack(">I", len(p)) + p for p in payloads))
        results: dict[str, list[float]] = {"a": [], "b": []}
        for run in range(args.runs):
            for name in ("a", "b") if run % 2 == 0 else ("b", "a"):
                env = {**os.environ, "PYTHONPATH": str(getattr(args, name).resolve())}
                out = subprocess.run([sys.executable, __file__, "--worker", str(payload_file),
                                      "--repeats", str(args.repeats)], env=env, capture_output=True, text=True,
                                     check=True)
                results[name].append(json.loads(out.stdout))
    a, b = statistics.median(results["a"]), statistics.median(results["b"])
    print(f"A {args.a}: {a / 1e6:.3f} M spans per CPU-second (median of {args.runs}; "
          f"{', '.join(f'{x / 1e6:.2f}' for x in results['a'])})")
    print(f"B {args.b}: {b / 1e6:.3f} M spans per CPU-second (median of {args.runs}; "
          f"{', '.join(f'{x / 1e6:.2f}' for x in results['b'])})")
    print(f"B / A: {b / a:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"a": results["a"], "b": results["b"], "ratio": b / a}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
