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


def _drain(pair: int, instances: int, spans_per_s: float, cpu: list[float]) -> dict[str, object]:
    return {"pair": pair, "instances": instances, "spans_per_s": spans_per_s, "cpu_seconds": sum(cpu),
            "cpu_seconds_per_instance": cpu}


def test_kafka_scale_out_is_the_median_of_pairs_modelled_on_the_busier_instance(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPORT.parent))
    import kafka_throughput

    drains = [_drain(0, 1, 200e3, [2.0]), _drain(0, 2, 300e3, [1.25, 1.0]),  # the busier of the two: 2.0 / 1.25
              _drain(1, 1, 250e3, [2.0]), _drain(1, 2, 250e3, [0.8, 1.0]),
              _drain(2, 1, 250e3, [2.1]), _drain(2, 2, 500e3, [0.5, 1.4]),
              _drain(3, 1, 250e3, [2.0])]  # a pair cut short counts for nothing
    scale = kafka_throughput.scale_out(drains)
    assert [round(p["modelled"], 2) for p in scale["pairs"]] == [1.6, 2.0, 1.5]
    assert round(scale["modelled"], 2) == 1.6 and round(scale["shared"], 2) == 1.5
    (tmp_path / "kafka.json").write_text(json.dumps({"rows": [], "drains": drains, "scale_out": scale,
                                                     "table_markdown": ""}))
    out = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(REPORT), "--dir", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert ("Backlog, two instances against one (median of 3 pairs): 1.50x on the shared cores; 1.60x modelled "
            "with a core each") in out.read_text()
