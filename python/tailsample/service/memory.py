"""The `memory_limiter` processor: refuse data while the process uses too much memory, as the collector does.

Every `check_interval` the process's resident memory is read from /proc. At or above the soft limit
(`limit - spike_limit`) receivers answer with backpressure (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED
with RetryInfo), so clients retry and nothing is lost; at or above the hard limit a garbage collection is forced.
`limit_percentage` is a share of the machine's memory, or of the cgroup's limit when one is set.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

from tailsample.errors import BackpressureError
from tailsample.service.config import MemoryLimiterProcessor
from tailsample.service.metrics import Registry

log = logging.getLogger("tailsample.memory_limiter")

MiB = 1024 * 1024


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


class MemoryLimiter:
    """One `memory_limiter` processor; `check()` raises BackpressureError while above the soft limit."""

    def __init__(self, settings: MemoryLimiterProcessor, registry: Registry) -> None:
        self.settings = settings
        if settings.limit_mib:
            self.hard_limit = settings.limit_mib * MiB
            self.soft_limit = self.hard_limit - settings.spike_limit_mib * MiB
        else:
            total = total_memory_bytes()
            self.hard_limit = total * settings.limit_percentage // 100
            self.soft_limit = self.hard_limit - total * settings.spike_limit_percentage // 100
        self.refusing = False
        self.used = resident_bytes()
        self._task: asyncio.Task[None] | None = None
        labels = ("processor",)
        self._refused = registry.counter("tailsample_memory_limiter_refused_payloads",
                                         "Payloads refused because memory use was above the soft limit.", labels)
        self._used = registry.gauge("tailsample_memory_limiter_used_bytes",
                                    "Resident memory at the last check.", labels)
        registry.gauge("tailsample_memory_limiter_soft_limit_bytes", "Above this, data is refused.",
                       labels).set(self.soft_limit, settings.id)
        registry.gauge("tailsample_memory_limiter_hard_limit_bytes", "Above this, a collection is forced.",
                       labels).set(self.hard_limit, settings.id)

    def update(self) -> None:
        self.used = resident_bytes()
        self._used.set(self.used, self.settings.id)
        if self.used >= self.hard_limit:
            gc.collect()
            self.used = resident_bytes()
        was = self.refusing
        self.refusing = self.used >= self.soft_limit
        if self.refusing != was:
            log.warning("%s: memory %.1f MiB is %s the soft limit %.1f MiB; %s data", self.settings.id,
                        self.used / MiB, "above" if self.refusing else "back below", self.soft_limit / MiB,
                        "refusing" if self.refusing else "accepting")

    def check(self) -> None:
        if self.refusing:
            self._refused.add(1, self.settings.id)
            raise BackpressureError(
                f"{self.settings.id}: memory use {self.used / MiB:.0f} MiB is above the soft limit "
                f"{self.soft_limit / MiB:.0f} MiB", reason="memory_limiter")

    async def run(self) -> None:
        while True:
            self.update()
            await asyncio.sleep(self.settings.check_interval)


__all__ = ["MemoryLimiter", "resident_bytes", "total_memory_bytes"]
