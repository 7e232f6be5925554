"""The exceptions tailsample raises.

The Rust binding raises these classes (it imports them from here), so there is one list of error types and
`tests/test_errors.py` checks that the native side knows every one of them.
"""

from __future__ import annotations


class TailsampleError(Exception):
    """Base class of every error tailsample raises on purpose."""


class ConfigError(TailsampleError, ValueError):
    """The configuration is invalid. `path` is the YAML path of the offending value, when known."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DecodeError(TailsampleError, ValueError):
    """A payload is not a valid OTLP ExportTraceServiceRequest. Nothing of it was taken.

    `field` is the protobuf field path (`resource_spans[0].scope_spans[1].spans[3].trace_id`) and `offset` the
    byte offset in the payload where the problem was found.
    """

    def __init__(self, message: str, field: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.offset = offset


class BackpressureError(TailsampleError):
    """Retry later: the engine is at a limit and took nothing of this payload. `reason` names the limit."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class StorageError(TailsampleError):
    """The storage directory could not be opened, read or written. `path` is the directory, when known.

    A payload whose write failed was not taken; receivers answer it as retryable."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


__all__ = ["BackpressureError", "ConfigError", "DecodeError", "StorageError", "TailsampleError"]
