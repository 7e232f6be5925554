"""pytest plugin: record what the test suite hands the Rust core, as fuzz seeds.

    FUZZ_HARVEST=/tmp/seeds .venv/bin/python -m pytest -p fuzz.tools.harvest tests/test_config.py ...

Wraps `tailsample._native` so that every configuration text (NativeConfig), every payload ingested
(NativeEngine.ingest / ingest_traces / ingest_batch), every payload inspected or split, and every OTLP/JSON body
converted is written, deduplicated by content, under $FUZZ_HARVEST/{config_load,otlp_decode,otlp_json}/.
Nothing of the tests' behaviour changes. Used by fuzz/tools/make_seeds.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tailsample import _native

_OUT = Path(os.environ.get("FUZZ_HARVEST", "/tmp/tailsample-fuzz-harvest"))
_MAX = 256 * 1024  # larger inputs do not make better seeds


def _save(kind: str, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > _MAX:
        return
    data = bytes(data)
    d = _OUT / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


class _Engine:
    """Delegates everything to the native engine, recording payloads on the way in."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def ingest(self, payload: bytes, now: float) -> Any:
        _save("otlp_decode", payload)
        return self._inner.ingest(payload, now)

    def ingest_traces(self, payload: bytes, now: float) -> Any:
        _save("otlp_decode", payload)
        return self._inner.ingest_traces(payload, now)

    def ingest_batch(self, payloads: list[bytes], now: float) -> Any:
        for p in payloads:
            _save("otlp_decode", p)
        return self._inner.ingest_batch(payloads, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wrap() -> None:
    config_cls = _native.NativeConfig
    engine_cls = _native.NativeEngine
    inspect = _native.inspect_payload
    split = _native.split_by_trace
    to_proto = _native.otlp_json_to_proto

    def native_config(text: str) -> Any:
        _save("config_load", text)
        return config_cls(text)

    def native_engine(config: Any) -> Any:
        return _Engine(engine_cls(config))

    def inspect_payload(payload: bytes) -> Any:
        _save("otlp_decode", payload)
        return inspect(payload)

    def split_by_trace(payload: bytes) -> Any:
        _save("otlp_decode", payload)
        return split(payload)

    def otlp_json_to_proto(body: bytes) -> Any:
        _save("otlp_json", body)
        return to_proto(body)

    wrappers = {
        "NativeConfig": native_config,
        "NativeEngine": native_engine,
        "inspect_payload": inspect_payload,
        "split_by_trace": split_by_trace,
        "otlp_json_to_proto": otlp_json_to_proto,
    }
    for name, wrapper in wrappers.items():
        setattr(_native, name, wrapper)


_wrap()
