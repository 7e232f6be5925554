"""The cost of the propagation audit and the recent-kept buffer: one engine run over fixed synthetic traffic.

Times on a shared 2-core machine drift by 2x between runs, so compare instruction counts instead, under
callgrind, which are exact:

    valgrind --tool=callgrind python bench/audit_cost.py --audit off
    valgrind --tool=callgrind python bench/audit_cost.py --audit on
    valgrind --tool=callgrind python bench/audit_cost.py --audit on --recent-kept-bytes 8388608

Each run generates the same traffic (seed 5, 50,000 spans/s for 2 s of simulated time), feeds it to an engine
with the seed policies, polls as it goes and flushes; it prints the spans taken and the engine's memory
estimate at its peak (measured once, before any decision, with every span buffered).
"""

from __future__ import annotations

import argparse

import yaml

from tailsample.config import Config, default_config_text
from tailsample.engine import Engine
from tailsample.traffic.synth import TrafficGenerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audit", choices=["on", "off"], default="on")
    parser.add_argument("--recent-kept-bytes", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    batches = [(b.payload, b.t) for b in TrafficGenerator(seed=5, spans_per_second=50_000).batches(args.seconds)]
    block = yaml.safe_load(default_config_text())["processors"]["tail_sampling"]
    block["tailsample"] = {"propagation_audit": {"enabled": args.audit == "on"},
                           "recent_kept_bytes": args.recent_kept_bytes}
    engine = Engine(Config.from_dict(block))
    for payload, t in batches:
        engine.ingest(payload, now=t)
        engine.poll(now=t)
    engine.flush(now=1e9)
    buffered = Engine(Config.from_dict({**block, "decision_wait": "1h"}))
    for payload, t in batches:
        buffered.ingest(payload, now=t)
    raw = sum(len(p) for p, _ in batches)
    stats = buffered.stats()
    print(f"spans {engine.stats()['spans_received']:,}; all buffered: memory_bytes {stats['memory_bytes']:,} "
          f"= {stats['memory_bytes'] / raw:.3f}x the raw payload bytes")


if __name__ == "__main__":
    main()
