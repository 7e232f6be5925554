"""OTLP/gRPC exporter: the kept payloads, as bytes, to `TraceService/Export` (no Python protobuf on the way).

Retryable codes are the collector's: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS,
and RESOURCE_EXHAUSTED only when the server sends a `RetryInfo` detail (then its delay is honoured). TLS is on
unless `tls.insecure: true` (an `https://` endpoint is always TLS), as in the collector.
"""

from __future__ import annotations

import logging

import grpc
from grpc import aio

from tailsample.collector.otlp_status import decode_partial_success, decode_status
from tailsample.collector.settings import OtlpExporterSettings
from tailsample.collector.tls import client_credentials
from tailsample.exporters.base import Batch, Exporter, ExporterMetrics, ExportError

log = logging.getLogger("tailsample.exporter.otlp_grpc")

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRYABLE = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                        grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """(target for grpcio, whether the scheme forces TLS) of a collector-style endpoint."""
    if endpoint.startswith("https://"):
        return endpoint.removeprefix("https://").rstrip("/"), True
    return endpoint.removeprefix("http://").rstrip("/"), False


class OtlpGrpcExporter(Exporter):
    kind = "otlp"

    def __init__(self, settings: OtlpExporterSettings, metrics: ExporterMetrics) -> None:
        super().__init__(settings.id, settings.sending_queue, settings.retry_on_failure, metrics)
        self.settings = settings
        self._channel: aio.Channel | None = None
        self._call: aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items())
        self._compression = grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression

    async def _open(self) -> None:
        target, force_tls = grpc_target(self.settings.endpoint)
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 16 << 20)]
        if self.settings.tls.insecure and not force_tls:
            self._channel = aio.insecure_channel(target, options=options)
        else:
            self._channel = aio.secure_channel(target, client_credentials(self.settings.tls), options=options)
        self._call = self._channel.unary_unary(METHOD)

    async def _close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _send(self, batch: Batch) -> None:
        assert self._call is not None
        try:
            response = await self._call(batch.payload, timeout=self.settings.timeout or None,
                                        metadata=self._metadata, compression=self._compression)
        except aio.AioRpcError as exc:
            code = exc.code()
            retry_after = None
            for key, value in exc.trailing_metadata() or ():
                if key == "grpc-status-details-bin" and isinstance(value, bytes):
                    try:
                        retry_after = decode_status(value).retry_after
                    except ValueError:
                        pass
            retryable = code in _RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None)
            raise ExportError(f"{self.settings.endpoint}: {code.name}: {exc.details()}", retryable=retryable,
                              retry_after=retry_after) from None
        if response:
            try:
                rejected, message = decode_partial_success(response)
            except ValueError:
                rejected, message = 0, ""
            if rejected or message:
                log.warning("%s: the server rejected %d of %d spans: %s", self.id, rejected, batch.spans, message)


__all__ = ["OtlpGrpcExporter", "grpc_target"]
