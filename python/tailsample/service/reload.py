"""Live reload of `tailsample serve`: the configuration file read again on SIGHUP, on `POST /debug/reload`, or
when it changes (`--watch-config`).

What changes live is what the `tail_sampling` processors hold: policies, their parameters, the timing keys and the
tailsample options that size nothing already held. Every pipeline's engine swaps at once (`Engine.reload`):
buffered traces stay and are judged by the new policies when due, decision caches stay, stateful policies start
fresh. A file that fails to load, or that changes anything else (receivers, exporters, extensions, other
processors, pipelines, telemetry, or an engine setting that sizes what is held), is refused whole with its error
logged once: the running configuration keeps deciding. All engines are checked before any swaps, and the swaps
run on the decision thread between rounds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tailsample.collector.metrics import Registry, Sample
from tailsample.collector.settings import ServiceConfig, TailSamplingProcessor
from tailsample.engine import Reloaded
from tailsample.errors import ConfigError, TailsampleError
from tailsample.service.pipeline import ServicePipeline, decision_tick

log = logging.getLogger("tailsample.reload")

RESULTS = ("ok", "unchanged", "failed")
# --watch-config looks at the file's modification time and size this often.
WATCH_INTERVAL_S = 1.0


class ReloadRefused(ConfigError):
    """The new configuration cannot be applied live; the running one stays."""


def _changed(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    ids = sorted(set(old) | set(new))
    return [f"{kind}.{i}" for i in ids if old.get(i) != new.get(i)]


def fixed_changes(old: ServiceConfig, new: ServiceConfig) -> list[str]:
    """What differs between `old` and `new` outside the tail_sampling processors' blocks: what a reload refuses."""
    out = [*_changed("receivers", old.receivers, new.receivers),
           *_changed("exporters", old.exporters, new.exporters),
           *_changed("extensions", old.extensions, new.extensions)]
    samplers_old = {k for k, v in old.processors.items() if isinstance(v, TailSamplingProcessor)}
    samplers_new = {k for k, v in new.processors.items() if isinstance(v, TailSamplingProcessor)}
    out += [f"processors.{k}" for k in sorted(samplers_old ^ samplers_new)]
    out += _changed("processors",
                    {k: v for k, v in old.processors.items() if k not in samplers_old},
                    {k: v for k, v in new.processors.items() if k not in samplers_new})
    out += _changed("service.pipelines", old.pipelines, new.pipelines)
    if old.service_extensions != new.service_extensions:
        out.append("service.extensions")
    if old.metrics != new.metrics:
        out.append("service.telemetry.metrics")
    return out


class ConfigReloader:
    """Reloads one service's configuration file into its pipelines' engines; counts and logs each attempt."""

    def __init__(self, config: ServiceConfig, path: Path | None, pipelines: Mapping[str, ServicePipeline],
                 registry: Registry, executor: concurrent.futures.Executor,
                 on_applied: Callable[[ServiceConfig], None]) -> None:
        self.config = config
        self.path = path
        self.pipelines = pipelines
        self._executor = executor
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self.reloads = registry.counter(
            "tailsample_config_reloads", "Configuration reloads (SIGHUP, POST /debug/reload, --watch-config) by "
            "result: ok, unchanged, failed (refused whole; the running configuration stays)", ("result",))
        for result in RESULTS:
            self.reloads.add(0, result)
        registry.add_collector(self._collect)

    def _collect(self) -> list[Sample]:
        out = []
        for p in self.pipelines.values():
            v = p.engine.config_version
            out.append(Sample("tailsample_config_version", "gauge",
                              "The live configuration's version (1 at start, one more per reload that changed it), "
                              "with its content hash", (("hash", v.hash), ("processor", p.sampler_id)), v.number))
        return out

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Reads the file again and applies it, or refuses it whole. Returns what happened as JSON-safe data:
        `result` (ok, unchanged, failed), `error` when failed, and per pipeline its `version` and `hash`."""
        async with self._lock:
            try:
                applied = await self._apply()
            except (TailsampleError, OSError) as exc:
                self.reloads.add(1, "failed")
                log.error("configuration reload (%s) refused, the running configuration stays: %s", trigger, exc)
                return {"result": "failed", "error": str(exc), "pipelines": self._versions()}
            result = "ok" if any(r.changed for r in applied.values()) else "unchanged"
            self.reloads.add(1, result)
            if result == "ok":
                log.info("configuration reloaded (%s) from %s: %s", trigger, self.path, ", ".join(
                    f"{pid} version {r.version.number} ({r.version.hash}), {r.traces_refolded} buffered traces "
                    "re-folded" for pid, r in applied.items()))
            else:
                log.info("configuration reload (%s): %s unchanged", trigger, self.path)
            return {"result": result, "pipelines": self._versions()}

    def _versions(self) -> dict[str, dict[str, Any]]:
        return {pid: {"version": p.engine.config_version.number, "hash": p.engine.config_version.hash}
                for pid, p in self.pipelines.items()}

    async def _apply(self) -> dict[str, Reloaded]:
        if self.path is None:
            raise ReloadRefused("serving the bundled configuration: there is no file to read again "
                                "(start with --config FILE)")
        new = ServiceConfig.from_file(self.path)
        fixed = fixed_changes(self.config, new)
        if fixed:
            raise ReloadRefused(f"{self.path}: cannot change without a restart: {', '.join(fixed)} (only the "
                                "tail_sampling processors' blocks change live)")
        plan: list[tuple[str, ServicePipeline, TailSamplingProcessor]] = []
        for pid, pipeline in self.pipelines.items():
            sampler = new.processors[new.pipelines[pid].tail_sampling]
            assert isinstance(sampler, TailSamplingProcessor)
            plan.append((pid, pipeline, sampler))

        def swap() -> dict[str, Reloaded]:
            # On the decision thread, between rounds. Every engine is checked before any swaps: all or none.
            for _pid, pipeline, sampler in plan:
                try:
                    pipeline.engine.check_reload(sampler.config)
                except TailsampleError as exc:
                    raise ReloadRefused(f"{self.path}: processors.{sampler.id}: {exc}") from None
            done = {}
            for pid, pipeline, sampler in plan:
                done[pid] = pipeline.engine.reload(sampler.config)
                pipeline.tick = decision_tick(sampler.config.decision_wait)
                if pipeline.batcher is not None:  # batches join the engine's payloads up to its new cut
                    pipeline.batcher.max_bytes = pipeline.engine.stats()["limit_max_payload_bytes"]
            return done

        applied = await asyncio.get_running_loop().run_in_executor(self._executor, swap)
        for _pid, pipeline, _sampler in plan:
            pipeline.wake()  # a shorter decision_wait: a loop sleeping until the old due time must look again
        self.config = new
        self._on_applied(new)
        return applied

    async def watch(self) -> None:
        """`--watch-config`: reload when the file's modification time or size changes."""
        if self.path is None:
            return
        last = _stamp(self.path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = _stamp(self.path)
            if now != last:
                last = now
                await self.reload("file change")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


__all__ = ["ConfigReloader", "ReloadRefused", "fixed_changes"]
