"""The few small protobuf messages around an OTLP export, written and read by hand.

`google.rpc.Status` (the body of an OTLP/HTTP error, and `grpc-status-details-bin` on gRPC), its `RetryInfo`
detail (how long a client should wait before retrying), and `ExportTraceServiceResponse.partial_success`. They are
tiny and off the hot path; writing them by hand keeps the receivers and exporters free of generated Python types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

# google.rpc.Code values used by the service
OK = 0
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 14
UNAUTHENTICATED = 16


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value if value else b""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of every field: ints for varints, bytes for length-delimited; others skipped."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            out.append((number, buf[pos:pos + size]))
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def encode_status(code: int, message: str, retry_after: float | None = None) -> bytes:
    """A `google.rpc.Status`, with a `RetryInfo` detail when `retry_after` (seconds) is given."""
    details = b""
    if retry_after is not None:
        seconds = int(retry_after)
        nanos = round((retry_after - seconds) * 1e9)
        duration = _field_varint(1, seconds) + _field_varint(2, nanos)
        retry_info = _field_bytes(1, duration) or _field_bytes(1, b"\x08\x00")  # a zero delay is still a detail
        any_msg = _field_bytes(1, RETRY_INFO_TYPE.encode()) + _field_bytes(2, retry_info)
        details = _field_bytes(3, any_msg)
    return _field_varint(1, code) + _field_bytes(2, message.encode()) + details


def status_json(code: int, message: str) -> bytes:
    """The same Status in the OTLP/JSON mapping (for JSON requests)."""
    return json.dumps({"code": code, "message": message}).encode()


@dataclass(frozen=True)
class Status:
    code: int
    message: str
    retry_after: float | None  # seconds, from a RetryInfo detail


def decode_status(buf: bytes) -> Status:
    """Reads a `google.rpc.Status`; raises ValueError when it is not one."""
    code, message, retry_after = 0, "", None
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            code = value
        elif number == 2 and isinstance(value, bytes):
            message = value.decode("utf-8", "replace")
        elif number == 3 and isinstance(value, bytes):
            parts = dict(_fields(value))
            if parts.get(1) == RETRY_INFO_TYPE.encode() and isinstance(parts.get(2), bytes):
                info = dict(_fields(parts[2]))  # type: ignore[arg-type]
                duration = info.get(1, b"")
                d = dict(_fields(duration)) if isinstance(duration, bytes) else {}
                seconds, nanos = d.get(1, 0), d.get(2, 0)
                if isinstance(seconds, int) and isinstance(nanos, int):
                    retry_after = seconds + nanos / 1e9
    return Status(code, message, retry_after)


def encode_partial_success(rejected_spans: int, message: str) -> bytes:
    """An `ExportTraceServiceResponse` reporting rejected spans (empty bytes: full success)."""
    inner = _field_varint(1, rejected_spans) + _field_bytes(2, message.encode())
    return _field_bytes(1, inner)


def partial_success_json(rejected_spans: int, message: str) -> bytes:
    """The same response in the OTLP/JSON mapping (`{}` for a full success); int64 as a string, as protobuf's
    JSON mapping writes it."""
    if not rejected_spans and not message:
        return b"{}"
    return json.dumps({"partialSuccess": {"rejectedSpans": str(rejected_spans), "errorMessage": message}}).encode()


def decode_partial_success(buf: bytes) -> tuple[int, str]:
    """(rejected_spans, error_message) of an `ExportTraceServiceResponse`; (0, "") for a full success."""
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, bytes):
            inner = dict(_fields(value))
            rejected = inner.get(1, 0)
            msg = inner.get(2, b"")
            return (rejected if isinstance(rejected, int) else 0,
                    msg.decode("utf-8", "replace") if isinstance(msg, bytes) else "")
    return 0, ""


__all__ = [
    "INVALID_ARGUMENT", "OK", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "UNAVAILABLE", "Status",
    "decode_partial_success", "decode_status", "encode_partial_success", "encode_status", "partial_success_json",
    "status_json",
]
