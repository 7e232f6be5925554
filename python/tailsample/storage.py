"""Storage on disk: the `file_storage` extension, as the collector configures it.

One extension is one directory with one size limit, shared by every component that uses it:
- `processors.tail_sampling.tail_storage: file_storage/<name>` puts the engine's buffer there
  (`<directory>/processor_<id>/`): every accepted payload is written before the receiver answers, and a restart
  replays it;
- an exporter's `sending_queue.storage: file_storage/<name>` makes its queue persistent
  (`<directory>/exporter_<id>_sending_queue/`).

`sync` says when the bytes are forced to the disk: `none` (the OS writes them back; survives the process being
killed, not the machine losing power), `batch` (one fsync per receiver request or Kafka batch, shared by the
requests waiting meanwhile), `payload` (one fsync per payload). The collector's `fsync: true` is `payload`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tailsample import _native

SyncPolicy = Literal["none", "batch", "payload"]
SYNC_POLICIES: tuple[SyncPolicy, ...] = ("none", "batch", "payload")

DEFAULT_MAX_SIZE = 1 << 30
DEFAULT_SEGMENT_SIZE = 16 << 20


@dataclass(frozen=True)
class FileStorage:
    """A `file_storage` extension: its directory, the bytes it may hold, its segment size and fsync policy."""

    directory: Path
    max_size: int = DEFAULT_MAX_SIZE
    segment_size: int = DEFAULT_SEGMENT_SIZE
    sync: SyncPolicy = "none"
    _budget: _native.NativeBudget = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sync not in SYNC_POLICIES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_POLICIES)}, got {self.sync!r}")
        object.__setattr__(self, "directory", Path(self.directory))
        # One budget for the directory: every log in it counts against max_size.
        object.__setattr__(self, "_budget", _native.NativeBudget(self.max_size))

    @property
    def budget(self) -> _native.NativeBudget:
        return self._budget

    def component_directory(self, kind: str, component_id: str) -> Path:
        """Where one component keeps its files, named as the collector names them (`exporter_otlp_sending_queue`)."""
        return self.directory / f"{kind}_{_safe(component_id)}"

    @property
    def bytes_used(self) -> int:
        return self._budget.used


def _safe(component_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", component_id)


__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_SEGMENT_SIZE", "SYNC_POLICIES", "FileStorage", "SyncPolicy"]
