"""Exporters of `tailsample serve`: kept spans, as OTLP bytes, out to OTLP/gRPC, OTLP/HTTP, Kafka, a file or the
log."""

from __future__ import annotations

from tailsample.collector import settings as cfg
from tailsample.exporters.base import Backoff, Batch, Exporter, ExporterMetrics, ExportError
from tailsample.exporters.debug_exporter import DebugExporter
from tailsample.exporters.file_exporter import FileExporter
from tailsample.exporters.otlp_grpc_exporter import OtlpGrpcExporter
from tailsample.exporters.otlp_http_exporter import OtlpHttpExporter


def build_exporter(settings: cfg.ExporterSettings, metrics: ExporterMetrics) -> Exporter:
    """The exporter for one `exporters.<id>` entry."""
    if isinstance(settings, cfg.OtlpExporterSettings):
        if settings.protocol == "grpc":
            return OtlpGrpcExporter(settings, metrics)
        return OtlpHttpExporter(settings, metrics)
    if isinstance(settings, cfg.FileExporterSettings):
        return FileExporter(settings, metrics)
    if isinstance(settings, cfg.KafkaExporterSettings):
        from tailsample.exporters.kafka_exporter import KafkaExporter  # confluent-kafka is optional: imported when used

        return KafkaExporter(settings, metrics)
    return DebugExporter(settings, metrics)


__all__ = [
    "Backoff", "Batch", "DebugExporter", "ExportError", "Exporter", "ExporterMetrics", "FileExporter",
    "OtlpGrpcExporter", "OtlpHttpExporter", "build_exporter",
]
