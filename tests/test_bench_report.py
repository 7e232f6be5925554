"""`bench/report.py` writes bench/RESULTS.md from whatever one `make bench-results` run left: it must not break on
a benchmark that is not an engine stage, nor on the files a partial run did not write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "bench" / "report.py"


def test_report_takes_engine_stages_and_skips_other_benchmarks(tmp_path: Path) -> None:
    benchmarks = [
        {"name": "test_decode[p1000-t5]", "stats": {"median": 0.0145},
         "extra_info": {"stage": "decode", "policies": None, "spans_per_payload": 1000, "spans_per_trace": 5,
                        "spans": 100_000, "spans_per_s": 6.9e6}},
        # bench/test_bench_service_parts.py: spans/s, no stage (broke the report once)
        {"name": "test_service_part[gzip]", "stats": {"median": 0.021},
         "extra_info": {"part": "gzip", "spans_per_payload": 1000, "spans": 20_000, "spans_per_s": 9.4e5}},
    ]
    (tmp_path / "engine.json").write_text(json.dumps({"benchmarks": benchmarks}))
    out = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(REPORT), "--dir", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1,000 x 5 |")]
    assert rows == ["| 1,000 x 5 | 6.90 M | n/a | n/a | n/a | n/a | n/a |"]
