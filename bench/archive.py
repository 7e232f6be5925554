"""The archive of dropped traces (issue 21): its targets, measured side by side with the archive off.

    .venv/bin/python bench/archive.py [--spans 400000] [--repeats 3] [--lookups 2000]
                                      [--segment-kib 64] [--directory DIR] [--json FILE]

A harness, not a timed test. The traffic is the seed's synthetic traffic (`tailsample.traffic.synth` at 50,000
spans/s, 1-50 spans per trace), made once, then run through the engine with the seed's policies (decision_wait
cut to 1 s, polled every 0.2 s of traffic time, flushed at the end), in-process, the calls on one thread:

- throughput: spans/s end to end (ingest, decisions, kept spans encoded; with the archive, dropped traces
  encoded, compressed and written, on the archive's writer thread, waited for at the end) with the archive on
  and off, interleaved, medians of `--repeats`: per wall-clock second (what the target asks; the writer thread
  runs beside the decisions) and per CPU-second of the process (all threads);
- bytes: archive bytes on disk (segments and indexes) per archived span, against the raw OTLP bytes per span of
  the traffic as sent (the payloads' protobuf bytes);
- index memory: the closed segments' Bloom filters and the open segment's table, per archived trace;
- lookup: `--lookups` trace IDs (half archived, half never seen) looked up one by one, p50/p99, with the archive
  cut into `--segment-kib` segments: lookup cost grows with the number of segments (one binary search in each
  segment's index file), so small segments stand in for the segment count of a 10 GiB archive;
- scan: `tailsample recover --since --where`'s scan (decode, OTTL on every span) over the whole archive, spans/s.
The archive's files are in the page cache in this run (just written): cold-disk lookups add a read per segment.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tailsample.archive import ArchiveReader
from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.storage import FileStorage
from tailsample.traffic.synth import TrafficGenerator


def _config(archive: bool) -> Config:
    block = Config.default().normalized()
    block["decision_wait"] = "1s"
    if archive:
        block["tailsample"]["archive"] = {"storage": "file_storage/archive", "max_size_mib": 10240, "max_age": "24h"}
    return Config.from_dict(block)


def _run(batches: list[tuple[float, bytes]], directory: Path | None,
         segment: int) -> tuple[float, float, Engine]:
    engine = (Engine(_config(True), archive=FileStorage(directory, segment_size=segment)) if directory is not None
              else Engine(_config(False)))
    t0 = time.time()
    next_poll = 0.2
    started, wall = time.process_time(), time.perf_counter()
    for t, payload in batches:
        if t >= next_poll:
            engine.poll(now=t0 + t)
            next_poll += 0.2
        engine.ingest(payload, now=t0 + t)
    engine.flush(now=t0 + batches[-1][0] + 5)
    engine.archive_stats()  # waits until the writer thread has written everything handed over
    return time.process_time() - started, time.perf_counter() - wall, engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--segment-kib", type=int, default=64)
    ap.add_argument("--directory", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    gen = TrafficGenerator(seed=21, spans_per_second=50_000)
    batches: list[tuple[float, bytes]] = []
    spans = 0
    for b in gen.batches(args.spans / 50_000):
        batches.append((b.t, b.payload))
        spans += b.spans
    raw = sum(len(p) for _, p in batches)
    print(f"traffic: {spans:,} spans in {len(batches):,} payloads, {raw / spans:.1f} OTLP bytes/span")

    base = args.directory or Path(tempfile.mkdtemp(prefix="tailsample-archive-bench-"))
    off: list[float] = []
    on: list[float] = []
    off_wall: list[float] = []
    on_wall: list[float] = []
    engine: Engine | None = None
    directory = base / "run"
    for _ in range(args.repeats):
        cpu, wall, _e = _run(batches, None, 0)
        off.append(spans / cpu)
        off_wall.append(spans / wall)
        del _e
        shutil.rmtree(directory, ignore_errors=True)
        cpu, wall, engine = _run(batches, directory, args.segment_kib << 10)
        on.append(spans / cpu)
        on_wall.append(spans / wall)
    assert engine is not None
    s = engine.stats()
    a = engine.archive_stats()
    assert a is not None
    archived_spans = s["spans_not_sampled"] + s["spans_dropped"] + s["spans_evicted"]
    segments = len(list(engine.archive_directory.glob("*.seg"))) if engine.archive_directory else 0

    # Lookups: archived IDs and never-seen ones, interleaved.
    truth = gen.truth
    kept = engine.stats()["traces_sampled"]
    ids = [t.hex() for t in truth]
    rng = random.Random(1)
    asked = [rng.choice(ids) for _ in range(args.lookups // 2)] + [
        rng.randbytes(16).hex() for _ in range(args.lookups - args.lookups // 2)]
    rng.shuffle(asked)
    times = []
    found = 0
    for tid in asked:
        t = time.perf_counter()
        found += bool(engine.recover([tid]))
        times.append(time.perf_counter() - t)
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]

    reader = ArchiveReader(directory)
    t = time.perf_counter()
    c = time.process_time()
    result = reader.scan(0, time.time() + 60, 'attributes["http.route"] == "/never/matches"')
    scan_wall, scan_cpu = time.perf_counter() - t, time.process_time() - c

    out: dict[str, Any] = {
        "spans": spans, "payloads": len(batches), "otlp_bytes_per_span": raw / spans,
        "throughput_off_cpu": statistics.median(off), "throughput_on_cpu": statistics.median(on),
        "ratio_cpu": statistics.median(on) / statistics.median(off),
        "throughput_off_wall": statistics.median(off_wall), "throughput_on_wall": statistics.median(on_wall),
        "ratio_wall": statistics.median(on_wall) / statistics.median(off_wall),
        "archived_traces": a["traces"], "archived_spans": archived_spans, "kept_traces": kept,
        "archive_bytes": a["bytes"], "archive_bytes_per_span": a["bytes"] / archived_spans,
        "bytes_ratio": (a["bytes"] / archived_spans) / (raw / spans),
        "index_memory_bytes": a["index_memory_bytes"],
        "index_bytes_per_trace": a["index_memory_bytes"] / max(1, a["traces"]),
        "segments": segments, "segment_kib": args.segment_kib,
        "lookups": len(asked), "lookups_found": found, "lookup_p50_ms": p50 * 1e3, "lookup_p99_ms": p99 * 1e3,
        "scan_spans_per_s_cpu": archived_spans / scan_cpu, "scan_wall_s": scan_wall, "scan_matched": len(result.traces),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.directory is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
