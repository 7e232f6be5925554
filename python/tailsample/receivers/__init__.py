"""Receivers of `tailsample serve`: OTLP/gRPC and OTLP/HTTP in, bytes to the pipelines, OTLP status codes out."""

from __future__ import annotations

from tailsample.collector.auth import BearerTokenAuth
from tailsample.receivers.otlp_grpc_receiver import OtlpGrpcReceiver
from tailsample.receivers.otlp_http_receiver import OtlpHttpReceiver
from tailsample.receivers.sink import ReceiverMetrics, Sink

__all__ = ["BearerTokenAuth", "OtlpGrpcReceiver", "OtlpHttpReceiver", "ReceiverMetrics", "Sink"]
