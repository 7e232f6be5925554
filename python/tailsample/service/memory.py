"""The `memory_limiter` processor: refuse data while the process uses too much memory, as the collector does.

What is compared (`used`, metric `tailsample_memory_limiter_used_bytes`) is the memory the process holds live,
the counterpart of the Go heap the collector's limiter reads, not resident memory:

    used = Rust heap live + C heap live + baseline

- Rust heap live: the bytes the extension's allocator handed out and not yet freed, counted exactly at each
  allocation (`tailsample._native.memory_stats()["heap_bytes"]`): the engine's buffer, its queues, kept payloads
  not yet taken. It falls as soon as a decided trace is freed.
- C heap live: glibc `mallinfo2()` in-use bytes (`uordblks + hblkhd`): Python's large objects (request bodies,
  payloads in exporter queues) and gRPC's buffers. 0 where the C library has no `mallinfo2` (not glibc).
- baseline: resident memory at start minus both heaps at start: the interpreter, code, Python's small-object
  arenas. Fixed, so at start `used` equals resident memory.

Resident memory is not compared because allocators keep freed pages for reuse: after one burst it stays above the
soft limit with an empty buffer, and a limiter reading it refuses every client until a restart. `used` goes back
down once the buffer drains, whatever the allocators keep.

Every `check_interval` `used` is read. At or above the soft limit (`limit - spike_limit`) receivers answer with
backpressure (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED with RetryInfo): nothing is taken and clients
retry; below it data is accepted again. At or above the hard limit a garbage collection is forced. While refusing,
and while resident memory is above the soft limit, freed memory is handed back to the system (mimalloc
`mi_collect(true)`, glibc `malloc_trim(0)`; at most once a second), so resident memory
follows `used` down. `limit_percentage` is a share of the machine's memory, or of the cgroup's limit when set.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailsample import _native
from tailsample.collector.metrics import Registry
from tailsample.collector.settings import MemoryLimiterProcessor
from tailsample.errors import BackpressureError

log = logging.getLogger("tailsample.memory_limiter")

MiB = 1024 * 1024
PURGE_EVERY = 1.0  # seconds: a purge walks every heap, so not at every 100 ms check
STUCK_PURGE_EVERY = 2.0  # seconds: accepting, but resident memory still above the soft limit
LOG_EVERY = 10.0  # seconds between "still refusing" warnings


def resident_bytes() -> int:
    """This process's resident set size."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource  # not Linux: the peak, the best portable reading

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def total_memory_bytes() -> int:
    """The memory this process may use: the cgroup v2 limit when set, else the machine's."""
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc() -> tuple[Callable[[], _MallInfo2] | None, Callable[[int], int] | None]:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None, None
    info = trim = None
    if hasattr(libc, "mallinfo2"):  # glibc 2.33+; mallinfo's int fields wrap at 2 GiB
        info = libc.mallinfo2
        info.restype, info.argtypes = _MallInfo2, []
    if hasattr(libc, "malloc_trim"):
        trim = libc.malloc_trim
        trim.restype, trim.argtypes = ctypes.c_int, [ctypes.c_size_t]
    return info, trim


_MALLINFO2, _MALLOC_TRIM = _glibc()


def c_heap_bytes() -> int:
    """Bytes the C allocator has handed out and not freed (glibc), 0 when it cannot say."""
    if _MALLINFO2 is None:
        return 0
    m = _MALLINFO2()
    return int(m.uordblks + m.hblkhd)


@dataclass(frozen=True)
class MemoryReading:
    """One look at the process's memory."""

    rust_heap_bytes: int  # live in the extension's allocator (exact)
    c_heap_bytes: int  # live in the C allocator (glibc mallinfo2), 0 when unknown
    resident_bytes: int  # RSS: shown, not compared


def read_memory() -> MemoryReading:
    return MemoryReading(_native.memory_stats()["heap_bytes"], c_heap_bytes(), resident_bytes())


def purge_memory() -> None:
    """Hand freed memory back to the system: mimalloc's freed pages (this thread's now, the OTLP/HTTP server
    threads' when they next idle: mimalloc collects per thread), then glibc's free chunks."""
    _native.memory_purge()
    _native.http_purge()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class MemoryLimiter:
    """One `memory_limiter` processor; `check()` raises BackpressureError while `used` is above the soft limit.

    `read`, `purge` and `clock` are injectable so the decision can be tested on given readings."""

    def __init__(self, settings: MemoryLimiterProcessor, registry: Registry, *,
                 read: Callable[[], MemoryReading] = read_memory, purge: Callable[[], None] = purge_memory,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        if settings.limit_mib:
            self.hard_limit = settings.limit_mib * MiB
            self.soft_limit = self.hard_limit - settings.spike_limit_mib * MiB
        else:
            total = total_memory_bytes()
            self.hard_limit = total * settings.limit_percentage // 100
            self.soft_limit = self.hard_limit - total * settings.spike_limit_percentage // 100
        self._read, self._purge, self._clock = read, purge, clock
        first = read()
        # What neither heap counts (interpreter, code, Python's small-object arenas), fixed at start.
        self.baseline = max(0, first.resident_bytes - first.rust_heap_bytes - first.c_heap_bytes)
        self.reading = first
        self.used = self._used(first)
        self.refusing = False
        self._refusing_since = 0.0
        self._refused_total = 0  # payloads refused in the current refusing period
        self._refused_unlogged = 0  # of which not yet in a warning
        self._logged_at = 0.0
        self._purged_at = -1e18
        self._task: asyncio.Task[None] | None = None
        # The verdict as the Rust OTLP/HTTP server reads it, without the GIL (set at every check).
        self.flag = _native.NativeLimiterFlag()
        registry.add_refresher(self._take_native_refusals)  # a scrape sees them at once, not a check later
        labels = ("processor",)
        pid = settings.id
        self._refused = registry.counter("tailsample_memory_limiter_refused_payloads",
                                         "Payloads refused because memory use was above the soft limit.", labels)
        self._used_gauge = registry.gauge(
            "tailsample_memory_limiter_used_bytes",
            "What is compared with the limits: Rust heap live + C heap live + baseline, at the last check.", labels)
        self._heap = registry.gauge("tailsample_memory_limiter_heap_bytes",
                                    "Live bytes per allocator at the last check (rust: exact; c: glibc mallinfo2).",
                                    ("processor", "heap"))
        self._resident = registry.gauge("tailsample_memory_limiter_resident_bytes",
                                        "Resident memory at the last check (not compared: allocators keep freed "
                                        "pages).", labels)
        self._refusing_gauge = registry.gauge("tailsample_memory_limiter_refusing",
                                              "1 while data is refused, else 0.", labels)
        self._purges = registry.counter("tailsample_memory_limiter_purges",
                                        "Times freed memory was handed back to the system.", labels)
        registry.gauge("tailsample_memory_limiter_baseline_bytes",
                       "Resident memory at start minus both heaps at start (part of used).", labels
                       ).set(self.baseline, pid)
        registry.gauge("tailsample_memory_limiter_soft_limit_bytes", "Above this, data is refused.",
                       labels).set(self.soft_limit, pid)
        registry.gauge("tailsample_memory_limiter_hard_limit_bytes", "Above this, a collection is forced.",
                       labels).set(self.hard_limit, pid)
        self._publish()

    def _used(self, r: MemoryReading) -> int:
        return self.baseline + r.rust_heap_bytes + r.c_heap_bytes

    def _publish(self) -> None:
        pid, r = self.settings.id, self.reading
        self._used_gauge.set(self.used, pid)
        self._heap.set(r.rust_heap_bytes, pid, "rust")
        self._heap.set(r.c_heap_bytes, pid, "c")
        self._resident.set(r.resident_bytes, pid)
        self._refusing_gauge.set(1 if self.refusing else 0, pid)

    def _describe(self) -> str:
        r = self.reading
        return (f"used {self.used / MiB:.1f} MiB (Rust heap {r.rust_heap_bytes / MiB:.1f}, C heap "
                f"{r.c_heap_bytes / MiB:.1f}, baseline {self.baseline / MiB:.1f}; resident "
                f"{r.resident_bytes / MiB:.1f}), soft limit {self.soft_limit / MiB:.1f} MiB")

    def update(self) -> bool:
        """One check: read, decide, publish, log. Returns whether freed memory should be purged now."""
        self._take_native_refusals()
        self.reading = self._read()
        self.used = self._used(self.reading)
        if self.used >= self.hard_limit:
            gc.collect()
            self.reading = self._read()
            self.used = self._used(self.reading)
        now = self._clock()
        pid = self.settings.id
        was = self.refusing
        self.refusing = self.used >= self.soft_limit
        if self.refusing and not was:
            self._refusing_since, self._logged_at = now, now
            self._refused_total = self._refused_unlogged = 0
            log.warning("%s: refusing data: %s", pid, self._describe())
        elif was and not self.refusing:
            log.warning("%s: accepting data again after %.1f s: %d payloads refused; %s", pid,
                        now - self._refusing_since, self._refused_total, self._describe())
        elif self.refusing and now - self._logged_at >= LOG_EVERY:
            log.warning("%s: still refusing data (for %.1f s): %d payloads refused in the last %.1f s; %s", pid,
                        now - self._refusing_since, self._refused_unlogged, now - self._logged_at,
                        self._describe())
            self._logged_at, self._refused_unlogged = now, 0
        self._publish()
        self.flag.set(self.refusing, self._refusal() if self.refusing else "")
        since = now - self._purged_at
        if (self.refusing and since >= PURGE_EVERY) or (
                self.reading.resident_bytes >= self.soft_limit and since >= STUCK_PURGE_EVERY):
            self._purged_at = now
            return True
        return False

    def purge(self) -> None:
        """Hand freed memory back to the system (blocking, a few ms)."""
        self._purge()
        self._purges.add(1, self.settings.id)

    def _refusal(self) -> str:
        return (f"{self.settings.id}: memory use {self.used / MiB:.0f} MiB is above the soft limit "
                f"{self.soft_limit / MiB:.0f} MiB")

    def _take_native_refusals(self) -> None:
        """Payloads the Rust OTLP/HTTP server refused on this limiter's flag since the last check, counted here."""
        n = self.flag.take_refused()
        if n:
            self._refused.add(n, self.settings.id)
            self._refused_total += n
            self._refused_unlogged += n

    def check(self) -> None:
        if self.refusing:
            self._refused.add(1, self.settings.id)
            self._refused_total += 1
            self._refused_unlogged += 1
            raise BackpressureError(self._refusal(), reason="memory_limiter")

    async def run(self) -> None:
        while True:
            if self.update():
                # On the event loop's own thread, on purpose: mimalloc collects only the calling thread's pages,
                # and receivers ingest on this thread, so the pages a burst filled belong to it. A few ms, at
                # most once a second.
                try:
                    self.purge()
                except Exception:  # a failed purge changes nothing we compare; keep checking
                    log.exception("%s: purging freed memory failed", self.settings.id)
            await asyncio.sleep(self.settings.check_interval)


__all__ = ["MemoryLimiter", "MemoryReading", "c_heap_bytes", "purge_memory", "read_memory", "resident_bytes",
           "total_memory_bytes"]
