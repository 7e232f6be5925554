"""The trace files the OpenTelemetry Collector's `file` exporter writes, read and written.

Two formats, as the exporter (collector-contrib `exporter/fileexporter`) writes them:

* `json` (its default): one OTLP/JSON `ExportTraceServiceRequest` per line, `{"resourceSpans":[...]}`.
* `proto`: each `ExportTraceServiceRequest` as a 4-byte big-endian length followed by the protobuf bytes.

gzip-compressed files are read transparently and written when the output name ends in `.gz`. The exporter's
`compression: zstd` is recognised (a file starting with the zstd magic, or length-prefixed messages that are
zstd frames) and refused with a clear error: Python before 3.14 has no zstd decoder and we add no dependency
for it.

The OTLP/JSON mapping (opentelemetry-proto, "JSON Protobuf Encoding") is the proto3 JSON mapping with these
differences, all handled by the core's codec (`rust/core/src/otlp/json.rs`, both directions): trace and span
IDs (spans, parents, links) are hex strings, not base64; enums are integers (names are accepted on read); keys
are lowerCamelCase (the proto field names are accepted on read); 64-bit integers are written as decimal
strings (numbers or strings are accepted on read); unknown fields are ignored on read.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError as _ProtobufDecodeError  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tailsample import _native
from tailsample.errors import DecodeError

FORMATS = ("json", "proto")

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_JSON_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_STARTS = (b"{", b"[", b"")
_CHUNK = 1 << 20  # read long messages in pieces: a corrupt length must not allocate gigabytes up front
_MAX_DOCUMENT = 256 << 20  # largest pretty-printed JSON file we are willing to parse as a whole


# -- OTLP/JSON <-> protobuf --------------------------------------------------------------------------------


def json_to_proto(obj: str | bytes | Mapping[str, Any]) -> bytes:
    """Encode one OTLP/JSON `ExportTraceServiceRequest` (text or already parsed) as protobuf bytes.

    The core's transcoder (`rust/core/src/otlp/json.rs`) does it: one OTLP/JSON reader for the receivers, the
    file readers and the CLI. Raises `DecodeError` for invalid JSON, for JSON that is not an
    ExportTraceServiceRequest and for a malformed value (`field` is then its JSON path, e.g.
    `resourceSpans[0].scopeSpans[0].spans[2].traceId`). IDs are hex; base64 IDs of the right length (what a
    plain proto3 JSON encoder writes) are accepted too, as the two cannot be confused: 16 bytes are 32 hex
    digits but 24 base64 characters.
    """
    if isinstance(obj, str):
        body = obj.encode("utf-8", "surrogatepass")
    elif isinstance(obj, bytes | bytearray | memoryview):
        body = bytes(obj)
    else:
        try:
            body = json.dumps(obj, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError, RecursionError) as exc:
            raise DecodeError(f"not an ExportTraceServiceRequest: {exc}") from None
    return _native.otlp_json_to_proto(body)


def _other_signal(exc: DecodeError) -> bool:
    """Valid OTLP/JSON of another signal (metrics, logs, profiles): skippable when reading a shared file. The
    core words it so (`not_traces` in json.rs); tests/test_fileformat.py holds both sides to it."""
    return not exc.field and str(exc).endswith(", not traces")


def proto_to_json(payload: bytes) -> str:
    """Decode protobuf `ExportTraceServiceRequest` bytes to compact, one-line OTLP/JSON.

    The core's codec (`rust/core/src/otlp/json.rs`, `proto_to_json`) writes it as the collector's file exporter
    does: IDs as hex, 64-bit integers as decimal strings, enums as integers, doubles as Go writes them. Strings
    that are not UTF-8 (the engine takes them, as pdata does) get U+FFFD for each invalid sequence. Raises
    `DecodeError` for bytes that are not a protobuf request.
    """
    return _native.otlp_proto_to_json(bytes(payload))


_LENIENT: Any = None  # ExportTraceServiceRequest with every string field declared `bytes`, built on first use


def _lenient_request_class() -> Any:
    global _LENIENT
    if _LENIENT is None:
        from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
            descriptor_pb2,
            descriptor_pool,
            message_factory,
        )

        pool = descriptor_pool.DescriptorPool()
        done: set[str] = set()

        def add(fd: Any) -> None:
            if fd.name in done:
                return
            for dep in fd.dependencies:
                add(dep)
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            stack = list(proto.message_type)
            while stack:
                m = stack.pop()
                stack.extend(m.nested_type)
                for f in m.field:
                    if f.type == FieldDescriptor.TYPE_STRING:
                        f.type = FieldDescriptor.TYPE_BYTES
            pool.Add(proto)
            done.add(fd.name)

        add(ExportTraceServiceRequest.DESCRIPTOR.file)
        name = ExportTraceServiceRequest.DESCRIPTOR.full_name
        _LENIENT = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return _LENIENT


def repair_utf8(payload: bytes) -> bytes | None:
    """`payload` with every string field's invalid UTF-8 replaced by U+FFFD; None if it is not a request even so."""
    lenient = _lenient_request_class()()
    try:
        lenient.ParseFromString(payload)
    except _ProtobufDecodeError:
        return None
    real = {f.full_name for f in _string_fields(ExportTraceServiceRequest.DESCRIPTOR, set())}

    def walk(msg: Any) -> None:
        for fd, value in msg.ListFields():
            if fd.message_type is not None:
                for m in value if fd.is_repeated else [value]:
                    walk(m)
            elif fd.full_name in real:
                if fd.is_repeated:
                    value[:] = [v.decode("utf-8", "replace").encode() for v in value]
                else:
                    setattr(msg, fd.name, value.decode("utf-8", "replace").encode())

    walk(lenient)
    return bytes(lenient.SerializeToString())


def _string_fields(desc: Any, seen: set[str]) -> Iterator[Any]:
    if desc.full_name in seen:
        return
    seen.add(desc.full_name)
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            yield f
        elif f.message_type is not None:
            yield from _string_fields(f.message_type, seen)


# -- reading ----------------------------------------------------------------------------------------------


class _Source(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


_Records = Generator["bytes | DecodeError", None, None]


class _LineError(DecodeError):
    """A line the transcoder refused; for invalid JSON, where in the line it stopped (`json_offset`)."""

    def __init__(self, message: str, field: str | None = None, offset: int | None = None, *,
                 json_syntax: bool = False, json_offset: int = 0) -> None:
        super().__init__(message, field, offset)
        self.json_syntax = json_syntax
        self.json_offset = json_offset


class _Stream:
    """A binary stream with look-ahead that counts the bytes handed out, for error offsets."""

    def __init__(self, f: _Source) -> None:
        self._f = f
        self._ahead = b""
        self.offset = 0

    def peek(self, n: int) -> bytes:
        while len(self._ahead) < n:
            chunk = self._f.read(n - len(self._ahead))
            if not chunk:
                break
            self._ahead += chunk
        return self._ahead[:n]

    def read(self, n: int) -> bytes:
        """Up to `n` bytes, fewer only at the end of the stream."""
        parts = []
        if self._ahead:
            parts.append(self._ahead[:n])
            self._ahead = self._ahead[n:]
            n -= len(parts[0])
        while n > 0:
            chunk = self._f.read(min(n, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def unread(self, data: bytes) -> None:
        """Put back bytes just read, to be read again."""
        self._ahead = data + self._ahead
        self.offset -= len(data)

    def readline(self) -> bytes:
        if self._ahead:
            end = self._ahead.find(b"\n")
            if end >= 0:
                line, self._ahead = self._ahead[:end + 1], self._ahead[end + 1:]
            else:
                line, self._ahead = self._ahead + self._f.readline(), b""
        else:
            line = self._f.readline()
        self.offset += len(line)
        return line


class PayloadReader:
    """The messages of one file as protobuf `ExportTraceServiceRequest` bytes; an iterator, a context manager.

    The format is `fmt` when given, else detected from the content (see `detect_format`). Proto messages are
    handed out exactly as stored. Errors are `DecodeError`s naming the file, the line (json) or byte offset
    (proto; in the uncompressed data) and the problem. A bad JSON line does not end the iteration: the next
    `next()` goes on with the following line. Errors that leave the rest of the file unreadable (truncated
    proto, corrupt gzip) do: the next `next()` raises StopIteration.

    With `skip_other_signals`, JSON lines holding metrics, logs or profiles (a collector may write every
    signal to one file) are skipped and counted in `skipped` instead of raising.

    `index` is the 1-based number of the last message handed out or refused, `location` where it starts
    (`line 12`, `byte 4711`), `format` the format read, `position` the bytes consumed from the file on disk
    (compressed, for progress) and `size` the file's size.
    """

    def __init__(self, path: Path | str, fmt: str | None = None, *, skip_other_signals: bool = False) -> None:
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.path = Path(path)
        self.skip_other_signals = skip_other_signals
        self.index = 0
        self.location = ""
        self.skipped = 0
        self._raw = open(self.path, "rb")  # closed by close()
        try:
            self.size = _file_size(self._raw)
            self.gzipped = self._raw.peek(2)[:2] == _GZIP_MAGIC
            inner: _Source = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzipped else self._raw
            self._stream = _Stream(inner)
            detected = self._sniff()
            self.format = fmt or detected
        except BaseException:
            self._raw.close()
            raise
        self._records = self._json_records() if self.format == "json" else self._proto_records()

    @property
    def position(self) -> int:
        """Bytes consumed from the file on disk (compressed bytes for a gzip file)."""
        return self.size if self._raw.closed else self._raw.tell()

    def __iter__(self) -> PayloadReader:
        return self

    def __next__(self) -> bytes:
        item = next(self._records)
        if isinstance(item, DecodeError):
            raise item
        return item

    def close(self) -> None:
        self._records.close()
        self._raw.close()

    def __enter__(self) -> PayloadReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- detection ------------------------------------------------------------------------------------------
    def _sniff(self) -> str:
        """`json` when the data starts with `{` (after whitespace), else `proto`; refuse zstd."""
        try:
            head = self._stream.peek(4)
            if head == _ZSTD_MAGIC:
                raise DecodeError(f"{self.path}: the file is zstd-compressed (the file exporter's "
                                  "`compression: zstd`); zstd is not supported yet: decompress it first "
                                  "(`zstd -d`)", offset=0)
            n = 64
            while True:
                window = self._stream.peek(n)
                stripped = window.removeprefix(_UTF8_BOM).lstrip(_JSON_WHITESPACE)
                if stripped or len(window) < n:
                    # A proto length prefix starts with `{` or `[` only for a message of 1.5 GB or more: a JSON
                    # array (Zipkin's format, say) is read as JSON, to be refused as not OTLP in JSON's words.
                    return "json" if stripped[:1] in _JSON_STARTS else "proto"
                n *= 4
        except (OSError, EOFError, zlib.error) as exc:
            if not self.gzipped:
                raise
            raise self._gzip_error(exc) from None

    def _gzip_error(self, exc: BaseException) -> DecodeError:
        return DecodeError(f"{self.path}: corrupt or truncated gzip data after {self._stream.offset} "
                           f"uncompressed bytes: {exc}", offset=self._stream.offset)

    # -- proto ----------------------------------------------------------------------------------------------
    def _proto_records(self) -> _Records:
        stream = self._stream
        while True:
            start = stream.offset
            try:
                prefix = stream.read(4)
                if not prefix:
                    return
                self.index += 1
                self.location = f"byte {start}"
                if len(prefix) < 4:
                    yield self._error(f"truncated length prefix: {len(prefix)} of 4 bytes", start)
                    return
                length = int.from_bytes(prefix, "big")
                payload = stream.read(length)
            except (OSError, EOFError, zlib.error) as exc:
                if not self.gzipped:
                    raise  # a real I/O error, not bad data
                yield self._gzip_error(exc)
                return
            if len(payload) < length:
                hint = " (this looks like a JSON file: use format json)" if prefix[:1] in _JSON_STARTS else ""
                yield self._error(f"message {self.index} declares {length} bytes but the file ends after "
                                  f"{len(payload)}{hint}", start)
                return
            if payload[:4] == _ZSTD_MAGIC:
                yield self._error("the message is zstd-compressed (the file exporter's `compression: zstd`); "
                                  "zstd is not supported yet", start)
                return
            yield payload

    # -- json -----------------------------------------------------------------------------------------------
    def _json_records(self) -> _Records:
        stream = self._stream
        line_no = 0
        first = True
        while True:
            start = stream.offset
            try:
                line = stream.readline()
            except (OSError, EOFError, zlib.error) as exc:
                if not self.gzipped:
                    raise  # a real I/O error, not bad data
                yield self._gzip_error(exc)
                return
            if not line:
                return
            line_no += 1
            if first:
                line = line.removeprefix(_UTF8_BOM)
            if not line.strip():
                continue
            self.index += 1
            self.location = f"line {line_no}"
            item = self._convert(line.rstrip(b"\r\n"), start)  # the newline is not part of the document
            if (first and isinstance(item, DecodeError) and item.json_syntax
                    and item.json_offset >= len(line.rstrip())):
                # The line is the start of a longer document: maybe one pretty-printed request (like the
                # spec's example) rather than JSON lines.
                docs = self._whole_documents(line)
                if docs is not None:
                    for doc in docs:
                        if doc is not None:
                            yield doc
                    return
            first = False
            if item is not None:
                yield item

    def _whole_documents(self, first_line: bytes) -> Iterator[bytes | DecodeError | None] | None:
        """Parse the rest of the file as concatenated JSON documents; None (nothing consumed) if it is not."""
        if self.size > _MAX_DOCUMENT and not self.gzipped:
            return None
        start = self._stream.offset - len(first_line)
        try:
            rest = self._stream.read(_MAX_DOCUMENT)
        except (OSError, EOFError, zlib.error):
            return None  # the line-by-line reading will meet the same error and report it
        try:
            text = (first_line + rest).decode("utf-8")
            docs = list(json_documents(text))
        except (ValueError, RecursionError):
            self._stream.unread(rest)
            return None

        def items() -> Iterator[bytes | DecodeError | None]:
            line, offset, prev = 1, start, 0  # counted from one document to the next, not from the start
            ends = [at for _, at in docs[1:]] + [len(text)]
            for n, ((_, at), end) in enumerate(zip(docs, ends, strict=True)):
                line += text.count("\n", prev, at)
                offset += len(text[prev:at].encode("utf-8"))
                prev = at
                self.index = n + 1
                self.location = f"line {line}"
                yield self._convert(text[at:end].encode("utf-8"), offset)

        return items()

    def _convert(self, text: bytes, start: int) -> bytes | _LineError | None:
        """The request's protobuf bytes (the core's transcoder), the error to raise, or None for another
        signal's line to skip."""
        try:
            return _native.otlp_json_to_proto(text)
        except DecodeError as exc:
            if self.skip_other_signals and _other_signal(exc):
                self.skipped += 1
                return None
            syntax = not exc.field and str(exc).startswith("invalid JSON")
            return _LineError(f"{self.path}: {self.location}: {exc}", field=exc.field or None, offset=start,
                              json_syntax=syntax, json_offset=exc.offset or 0)

    def _error(self, problem: str, offset: int) -> DecodeError:
        return DecodeError(f"{self.path}: {self.location}: {problem}", offset=offset)


def json_documents(text: str) -> Iterator[tuple[Any, int]]:
    """Each JSON document of `text` (one, or several one after the other, whitespace between) with the character
    position it starts at; raises `json.JSONDecodeError` (a `ValueError`) or `RecursionError` where one fails."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return
        obj, end = decoder.raw_decode(text, pos)
        yield obj, pos
        pos = end


def _file_size(f: io.BufferedReader) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        return 0


def detect_format(path: Path | str) -> str:
    """`json` or `proto`, from the content: after gzip decompression, data whose first byte other than JSON
    whitespace is `{` or `[` is JSON (a proto length prefix starts so only for a message of 1.5 GB or more),
    anything else proto; an empty file counts as JSON. Raises `DecodeError` for a zstd-compressed file."""
    with PayloadReader(path) as reader:
        return reader.format


def read_payloads(path: Path, fmt: str | None = None) -> Iterator[bytes]:
    """Yield each message of a file-exporter file as protobuf `ExportTraceServiceRequest` bytes.

    `fmt` is `json`, `proto` or None to detect it: after gzip decompression (gzip files, `.gz` or not, are
    recognised by their magic bytes), data whose first non-whitespace byte is `{` or `[` is JSON lines,
    anything else length-prefixed protobuf. Proto messages are yielded untouched; JSON lines are converted
    (`json_to_proto`); blank lines are skipped. A file holding one pretty-printed JSON document (or several,
    concatenated) is read too. The first problem raises `DecodeError` naming the file, the line or byte
    offset, and what is wrong; use `PayloadReader` to go on past bad JSON lines.
    """
    with PayloadReader(path, fmt) as reader:
        yield from reader


# -- writing ----------------------------------------------------------------------------------------------


class PayloadWriter:
    """Write protobuf `ExportTraceServiceRequest` payloads to a file in `json` or `proto` format.

    `path` `-` is standard output (proto only when it is not a terminal); a name ending in `.gz` is
    gzip-compressed. Counts what it wrote in `payloads` and `bytes_written` (before compression). `append`
    keeps what the file holds (as the collector's file exporter does).
    """

    def __init__(self, path: Path | str, fmt: str = "json", *, append: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.path = path if str(path) == "-" else Path(path)
        self.format = fmt
        self.payloads = 0
        self.bytes_written = 0
        self._own = str(path) != "-"
        if not self._own:
            if fmt == "proto" and sys.stdout.isatty():
                raise ValueError("refusing to write binary protobuf to a terminal: use format json or a file")
            self._f: _Sink = sys.stdout.buffer
        elif Path(path).suffix == ".gz":
            self._f = gzip.open(path, "ab" if append else "wb")  # closed by close()
        else:
            self._f = open(path, "ab" if append else "wb")  # closed by close()

    def write(self, payload: bytes) -> None:
        """Append one message (protobuf bytes)."""
        if self.format == "json":
            data = proto_to_json(payload).encode("utf-8") + b"\n"
        else:
            if len(payload) >= 1 << 32:
                raise ValueError(f"a message of {len(payload)} bytes does not fit the 4-byte length prefix")
            data = len(payload).to_bytes(4, "big") + payload
        self._f.write(data)
        self.payloads += 1
        self.bytes_written += len(data)

    def flush(self) -> None:
        self._f.flush()

    def write_all(self, payloads: Iterable[bytes]) -> None:
        for payload in payloads:
            self.write(payload)

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> PayloadWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = [
    "FORMATS",
    "PayloadReader",
    "PayloadWriter",
    "detect_format",
    "json_to_proto",
    "proto_to_json",
    "read_payloads",
    "repair_utf8",
]
