"""The archive of dropped traces (issue 21): its targets, measured side by side with the archive off.

    .venv/bin/python bench/archive.py [--spans 400000] [--repeats 3] [--lookups 2000]
                                      [--segment-kib 16384] [--directory DIR] [--json FILE]
    .venv/bin/python bench/archive.py --fill-gib 10 --directory DIR [--lookups 1000] [--json FILE]

A harness, not a timed test. The traffic is the seed's synthetic traffic (`tailsample.traffic.synth` at 50,000
spans/s, 1-50 spans per trace), made once, then run through the engine with the seed's policies (decision_wait
cut to 1 s, polled every 0.2 s of traffic time, flushed at the end), in-process, the calls on one thread:

- throughput: spans/s end to end (ingest, decisions, kept spans encoded; with the archive, dropped traces
  encoded, compressed and written, on the archive's writer thread, waited for at the end) with the archive on
  and off, interleaved, medians of `--repeats`: per wall-clock second (what the target asks; the writer thread
  runs beside the decisions) and per CPU-second of the process (all threads);
- bytes: archive bytes on disk (segments and indexes) per archived span, against the raw OTLP bytes per span of
  the traffic as sent (the payloads' protobuf bytes);
- index memory: the closed segments' Bloom filters and fences, and the open segment's table, per archived trace;
- lookup: `--lookups` trace IDs (half archived, half never seen) looked up one by one, p50/p99, with the archive
  cut into `--segment-kib` segments (default: the `file_storage` default, 16 MiB);
- scan: `tailsample recover --since --where`'s scan (decode, OTTL on every span) over the whole archive, spans/s.
The archive's files are in the page cache in this run (just written).

`--fill-gib N --directory DIR` fills an archive in DIR to N GiB through the real write path instead (the engine with
the archive on, bounded at N GiB, and a policy that keeps nothing, fed with the traffic's payloads over and over,
each pass with its trace IDs rewritten, as fast as it goes), then looks up `--lookups` IDs archived and as many
never seen, through the engine (what `POST /debug/recover` does) and offline (`recover --archive`), warm (page
cache) and cold (every segment and index file evicted from the page cache before each lookup, with
`posix_fadvise(DONTNEED)`), times `--invocations` runs of `tailsample recover --archive DIR ID --output FILE` warm
and cold (what a person pays, Python's start included), and scans one pass's time window. With `--reuse`, the
engine's open of the full archive is timed cold (`engine_open_s`). The archive is left in DIR: delete it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def _writer_cpu() -> float:
    """CPU seconds of this process's archive writer threads (named `tailsample-archive`, cut to 15 characters)."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        if "(tailsample-arch)" in stat:
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _run(batches: list[tuple[float, bytes]], directory: Path | None,
         segment: int) -> tuple[float, float, float, Engine]:
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
    return time.process_time() - started, time.perf_counter() - wall, _writer_cpu(), engine


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def _fields(b: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The length-delimited fields of the message b[start:end]: (field, body start, body end)."""
    out = []
    i = start
    while i < end:
        tag, i = _varint(b, i)
        wt = tag & 7
        if wt == 2:
            n, i = _varint(b, i)
            out.append((tag >> 3, i, i + n))
            i += n
        elif wt == 0:
            _, i = _varint(b, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
    return out


def _trace_id_offsets(payload: bytes) -> np.ndarray:
    """Where each span's trace ID starts in an ExportTraceServiceRequest."""
    offs = []
    for f, s, e in _fields(payload, 0, len(payload)):
        if f != 1:
            continue
        for f2, s2, e2 in _fields(payload, s, e):
            if f2 != 2:
                continue
            for f3, s3, e3 in _fields(payload, s2, e2):
                if f3 != 2:
                    continue
                for f4, s4, e4 in _fields(payload, s3, e3):
                    if f4 == 1 and e4 - s4 == 16:
                        offs.append(s4)
    return np.array(offs, dtype=np.int64)


def _rewritten(payload: np.ndarray, offsets: np.ndarray, k: int) -> bytes:
    """The payload with each trace ID's first four bytes XORed with pass number `k` (pass 0: as generated)."""
    out = payload.copy()
    for j, byte in enumerate(k.to_bytes(4, "big")):
        if byte:
            out[offsets + j] ^= byte
    return bytes(out.tobytes())


def _pass_id(tid: bytes, k: int) -> str:
    return (bytes(a ^ b for a, b in zip(tid[:4], k.to_bytes(4, "big"), strict=True)) + tid[4:]).hex()


def _evict(directory: Path) -> None:
    """Drops the archive's files from the page cache (written back first: dirty pages are not dropped)."""
    for f in directory.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": times[len(times) // 2] * 1e3, "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
            "max_ms": times[-1] * 1e3}


def fill(args: argparse.Namespace) -> dict[str, Any]:
    gen = TrafficGenerator(seed=21, spans_per_second=50_000)
    seed = []
    spans_per_pass = 0
    for b in gen.batches(args.spans / 50_000):
        seed.append((b.t, np.frombuffer(b.payload, dtype=np.uint8), _trace_id_offsets(b.payload), b.spans))
        spans_per_pass += b.spans
    duration = seed[-1][0] + 1.0
    seed_ids = list(gen.truth)
    target = int(args.fill_gib * 2**30)
    block = Config.default().normalized()
    block["decision_wait"] = "1s"
    block["policies"] = [{"name": "keep-nothing", "type": "probabilistic",
                          "probabilistic": {"sampling_percentage": 0}}]
    block["tailsample"]["archive"] = {"storage": "file_storage/archive", "max_size_mib": int(args.fill_gib * 1024),
                                      "max_age": "24h"}
    base: Path = args.directory
    base.mkdir(parents=True, exist_ok=True)
    if args.reuse:  # the reopen of a full archive is measured cold: what a restart after a while pays
        for sub in base.iterdir():
            if sub.is_dir():
                _evict(sub)
    opened = time.perf_counter()
    engine = Engine(Config.from_dict(block), archive=FileStorage(base, segment_size=args.segment_kib << 10))
    engine_open_s = time.perf_counter() - opened
    assert engine.archive_directory is not None
    # Archive times in the past (within max_age): the whole fill's traffic time ends an hour ago.
    t0 = time.time() - 3 * 3600
    started, wall = time.process_time(), time.perf_counter()
    k = 0
    spans = 0
    state = base / "fill-state.json"
    full = False
    if args.reuse and state.exists():
        # The archive filled by an earlier run: measured again as it is.
        saved = json.loads(state.read_text())
        k, spans, t0 = saved["passes"], saved["spans"], saved["t0"]
        full = True
    while not full:
        next_poll = 0.2
        for i, (t, payload, offsets, n_spans) in enumerate(seed):
            now = t0 + k * duration + t
            if t >= next_poll:
                engine.poll(now=now)
                next_poll += 0.2
            engine.ingest(_rewritten(payload, offsets, k), now=now)
            spans += n_spans
            # Stop a segment short of the bound: nothing is removed, every pass's IDs are still there.
            if i % 64 == 63:
                a = engine.archive_stats()
                assert a is not None
                if a["bytes"] >= target - (2 * args.segment_kib << 10) - min(64 << 20, target // 8):
                    full = True
                    break
        k += 1
        if k % 20 == 0:
            a = engine.archive_stats()
            assert a is not None
            print(f"pass {k}: {a['bytes'] / 2**30:.2f} GiB, {time.perf_counter() - wall:.0f} s", file=sys.stderr)
    engine.flush(now=t0 + k * duration + 5)
    a = engine.archive_stats()
    assert a is not None
    fill_cpu, fill_wall = time.process_time() - started, time.perf_counter() - wall
    state.write_text(json.dumps({"passes": k, "spans": spans, "t0": t0}))
    complete = k - 1  # passes written whole
    directory = engine.archive_directory
    files = sorted(directory.iterdir())
    for f in files:  # written back, so that eviction takes
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    segments = sum(1 for f in files if f.suffix == ".seg")

    rng = random.Random(1)
    n = args.lookups // 2
    there = [_pass_id(rng.choice(seed_ids), rng.randrange(complete)) for _ in range(n)]
    never = [rng.randbytes(16).hex() for _ in range(n)]
    asked = [(tid, True) for tid in there] + [(tid, False) for tid in never]
    rng.shuffle(asked)

    def measure(lookup: Any, cold: bool, count: int) -> dict[str, Any]:
        times = []
        found = missing = 0
        for tid, present in asked[:count]:
            if cold:
                _evict(directory)
            t = time.perf_counter()
            got = lookup(tid)
            times.append(time.perf_counter() - t)
            if present:
                found += bool(got)
                missing += not got
            else:
                assert not got, tid
        return {"lookups": len(times), "found": found, "archived_not_found": missing, **_percentiles(times)}

    results = {
        "engine_warm": measure(lambda tid: engine.recover([tid]), False, len(asked)),
        "engine_cold": measure(lambda tid: engine.recover([tid]), True, len(asked)),
    }
    reader = ArchiveReader(base)
    results["offline_warm"] = measure(lambda tid: reader.find([tid]), False, min(len(asked), 200))
    results["offline_cold"] = measure(lambda tid: reader.find([tid]), True, min(len(asked), 100))

    # What a `tailsample recover --archive DIR ID --output FILE` invocation pays, Python's start included.
    def invoke(tid: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "found.json"
            subprocess.run([sys.executable, "-m", "tailsample", "recover", "--archive", str(base), tid,
                            "--output", str(out)], check=False, capture_output=True)
            return out.exists() and out.stat().st_size > 2

    results["cli_warm"] = measure(invoke, False, min(len(asked), args.invocations))
    results["cli_cold"] = measure(invoke, True, min(len(asked), args.invocations))
    started = time.perf_counter()
    for _ in range(5):
        subprocess.run([sys.executable, "-c", "import tailsample.cli"], check=True)
    python_import_ms = (time.perf_counter() - started) / 5 * 1e3
    # Content scan of one pass's window (about `spans_per_pass` spans: the archive times are the rounds'), cold;
    # the condition matches nothing, so every span is decoded and tested.
    _evict(directory)
    since = t0 + (complete // 2) * duration
    t = time.perf_counter()
    c = time.process_time()
    scanned = reader.scan(since, since + duration, 'attributes["http.route"] == "/never/matches"')
    scan_wall, scan_cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "fill_gib": args.fill_gib, "archive_bytes": a["bytes"], "segments": segments,
        "segment_kib": args.segment_kib, "archived_traces": a["traces"], "passes": k,
        "spans_written": spans, "archive_bytes_per_span": a["bytes"] / max(1, spans),
        "index_memory_bytes": a["index_memory_bytes"],
        "index_bytes_per_trace": a["index_memory_bytes"] / max(1, a["traces"]),
        "engine_open_s": engine_open_s, "engine_open_cold": bool(args.reuse), "python_import_ms": python_import_ms,
        "segments_removed_size": a["segments_removed_size"],
        "fill_cpu_s": fill_cpu, "fill_wall_s": fill_wall, "fill_spans_per_s_wall": spans / fill_wall,
        "lookups": results,
        "scan_spans": spans_per_pass, "scan_wall_s": scan_wall, "scan_spans_per_s_cpu": spans_per_pass / scan_cpu,
        "scan_spans_per_s_wall": spans_per_pass / scan_wall, "scan_matched": len(scanned.traces),
        "scan_problems": scanned.problems[:3],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--segment-kib", type=int, default=16384)
    ap.add_argument("--directory", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--fill-gib", type=float, default=0.0)
    ap.add_argument("--invocations", type=int, default=20,
                    help="with --fill-gib: `tailsample recover --archive` runs timed, warm and cold")
    ap.add_argument("--reuse", action="store_true",
                    help="with --fill-gib: measure the archive an earlier --fill-gib run left in --directory again")
    args = ap.parse_args(argv)
    if args.fill_gib:
        if args.directory is None:
            ap.error("--fill-gib needs --directory (the archive is left there: delete it)")
        filled = fill(args)
        print(json.dumps(filled, indent=2))
        if args.json:
            args.json.write_text(json.dumps(filled, indent=2))
        return 0

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
    on_main: list[float] = []
    writer_share: list[float] = []
    for _ in range(args.repeats):
        cpu, wall, _w, _e = _run(batches, None, 0)
        off.append(spans / cpu)
        off_wall.append(spans / wall)
        del _e
        shutil.rmtree(directory, ignore_errors=True)
        engine = None  # the previous run's writer thread ends with its engine
        cpu, wall, writer, engine = _run(batches, directory, args.segment_kib << 10)
        on.append(spans / cpu)
        on_wall.append(spans / wall)
        on_main.append(spans / (cpu - writer))
        writer_share.append(writer / cpu)
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
        "throughput_on_cpu_without_writer": statistics.median(on_main),
        "ratio_cpu_without_writer": statistics.median(on_main) / statistics.median(off),
        "writer_cpu_share": statistics.median(writer_share),
        "writer_us_per_archived_span": statistics.median(writer_share) / statistics.median(on) * 1e6 * spans / max(
            1, engine.stats()["spans_not_sampled"] + engine.stats()["spans_dropped"] + engine.stats()["spans_evicted"]),
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
