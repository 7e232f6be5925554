"""File exporter: the collector's `file` exporter formats, written to `path` (truncated at start unless
`append: true`, as the collector).

`json`: one OTLP/JSON ExportTraceServiceRequest per line; `proto`: each message prefixed with its length as a
4-byte big-endian integer. Writes go through one consumer in a worker thread, so the file keeps their order and
the event loop never blocks on the disk; every batch is flushed to the OS before it counts as sent.
"""

from __future__ import annotations

import asyncio

from tailsample.collector.fileformat import PayloadWriter
from tailsample.collector.settings import FileExporterSettings, QueueSettings, RetrySettings
from tailsample.exporters.base import Batch, Exporter, ExporterMetrics, ExportError


class FileExporter(Exporter):
    kind = "file"

    def __init__(self, settings: FileExporterSettings, metrics: ExporterMetrics) -> None:
        super().__init__(settings.id, QueueSettings(num_consumers=1), RetrySettings(enabled=False), metrics)
        self.settings = settings
        self._writer: PayloadWriter | None = None

    async def _open(self) -> None:
        self._writer = PayloadWriter(self.settings.path, self.settings.format, append=self.settings.append)

    async def _close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None

    def _write(self, payload: bytes) -> None:
        assert self._writer is not None
        self._writer.write(payload)
        self._writer.flush()

    async def _send(self, batch: Batch) -> None:
        try:
            await asyncio.to_thread(self._write, batch.payload)
        except (OSError, ValueError) as exc:
            raise ExportError(f"{self.settings.path}: {exc}", retryable=False) from None


__all__ = ["FileExporter"]
