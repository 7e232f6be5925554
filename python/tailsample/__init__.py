"""tailsample: tail-based sampling for OpenTelemetry traces, with its hot path in Rust."""

from __future__ import annotations

from tailsample._native import __version__
from tailsample.config import Config
from tailsample.engine import Engine, KeptPayload, inspect_payload
from tailsample.errors import BackpressureError, ConfigError, DecodeError, StorageError, TailsampleError
from tailsample.storage import FileStorage

__all__ = [
    "BackpressureError",
    "Config",
    "ConfigError",
    "DecodeError",
    "Engine",
    "FileStorage",
    "KeptPayload",
    "StorageError",
    "TailsampleError",
    "__version__",
    "inspect_payload",
]
