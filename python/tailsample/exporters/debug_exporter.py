"""Debug exporter: a readable summary of what is kept, on the log (stderr), as the collector's `debug` exporter.

`basic`: one line per batch (resource spans, spans); `normal`: one line per span (trace ID, span ID, name,
duration, status); `detailed`: the whole batch as OTLP/JSON.
"""

from __future__ import annotations

import json
import logging

from tailsample.collector.fileformat import proto_to_json
from tailsample.collector.settings import DebugExporterSettings, QueueSettings, RetrySettings
from tailsample.exporters.base import Batch, Exporter, ExporterMetrics

log = logging.getLogger("tailsample.exporter.debug")

_STATUS = {0: "Unset", 1: "Ok", 2: "Error"}


def describe_spans(payload: bytes) -> list[str]:
    """One line per span: trace ID, span ID, name, duration, status."""
    lines = []
    doc = json.loads(proto_to_json(payload))
    for rs in doc.get("resourceSpans", []):
        service = next((a["value"].get("stringValue", "") for a in rs.get("resource", {}).get("attributes", [])
                        if a.get("key") == "service.name"), "")
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                ms = (int(span.get("endTimeUnixNano", 0)) - int(span.get("startTimeUnixNano", 0))) / 1e6
                status = _STATUS.get(span.get("status", {}).get("code", 0), "?")
                lines.append(f"{span.get('traceId', '')} {span.get('spanId', '')} {service} "
                             f"{span.get('name', '')!r} {ms:.3f}ms {status}")
    return lines


class DebugExporter(Exporter):
    kind = "debug"

    def __init__(self, settings: DebugExporterSettings, metrics: ExporterMetrics) -> None:
        super().__init__(settings.id, QueueSettings(num_consumers=1), RetrySettings(enabled=False), metrics)
        self.verbosity = settings.verbosity

    async def _send(self, batch: Batch) -> None:
        log.info("%s: Traces {resource spans: %d, spans: %d}", self.id, batch.resource_spans, batch.spans)
        if self.verbosity == "normal":
            for line in describe_spans(batch.payload):
                log.info("%s: %s", self.id, line)
        elif self.verbosity == "detailed":
            log.info("%s: %s", self.id, proto_to_json(batch.payload))


__all__ = ["DebugExporter", "describe_spans"]
