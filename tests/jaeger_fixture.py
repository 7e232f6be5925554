"""A real Jaeger v2 (v1.75.0, `tools.gotools.jaeger()`) for the tests: OTLP receiver and query service on free
loopback ports, in-memory storage.

    from jaeger_fixture import jaeger_binary, running_jaeger

    def test_x(jaeger):            # the `jaeger` fixture below, re-exported in a conftest or imported
        jaeger.otlp_http           # http://127.0.0.1:<port>  (OTLP/HTTP: POST <otlp_http>/v1/traces)
        jaeger.otlp_grpc           # 127.0.0.1:<port>         (OTLP/gRPC, plaintext)
        jaeger.query               # http://127.0.0.1:<port>  (query service, HTTP API v3: /api/v3/...)
        jaeger.trace(trace_id)     # the stored trace's document, or None (404)

Building Jaeger takes about 9 minutes on 2 cores; the normal test run does not wait for it: `jaeger_binary()` skips
the calling test unless the binary is already in the gotools cache, or `TAILSAMPLE_BUILD_JAEGER=1` is set (then
it builds it, once per machine; `make test-jaeger` sets it and runs them). It also skips when this machine cannot
build it (no Go, no module proxy). Tests that need it carry the `jaeger` marker (`pytest -m jaeger` runs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service_harness import LOOPBACK, free_port
from tools import gotools

BUILD_ENV = "TAILSAMPLE_BUILD_JAEGER"
START_TIMEOUT_S = 30.0


def jaeger_cached() -> Path | None:
    """The cached Jaeger binary when a complete build for this Go and this version is there (what
    `gotools.jaeger()` would return at once), else None. Never builds."""
    try:
        go = gotools.find_go()
        key = gotools._key("jaeger", f"{gotools.JAEGER_PACKAGE}@{gotools.JAEGER_VERSION}", gotools.go_version(go))
    except (gotools.GoToolUnavailable, gotools.GoBuildError, OSError):
        return None
    binary = gotools.cache_dir() / f"jaeger-{key[:16]}" / "jaeger"
    stamp = binary.with_name("jaeger.sha256")
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return binary
    return None


def jaeger_binary() -> Path:
    """The Jaeger binary, or the calling test skipped with the reason (not built yet, or cannot be built)."""
    if os.environ.get(BUILD_ENV) != "1" and jaeger_cached() is None:
        pytest.skip(f"Jaeger v2 is not built yet (about 9 minutes): `make test-jaeger` or {BUILD_ENV}=1 builds it "
                    "into the gotools cache")
    return gotools.require(gotools.jaeger)


def config(*, otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int,
           max_traces: int = 100_000) -> dict[str, Any]:
    """A Jaeger v2 config: OTLP in, memory storage, query service; the collector's own metrics off (they would
    take port 8888)."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": [],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "jaeger_query": {"storage": {"traces": "memstore"},
                             "http": {"endpoint": f"{LOOPBACK}:{query_http}"},
                             "grpc": {"endpoint": f"{LOOPBACK}:{query_grpc}"}},
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": max_traces}}}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{LOOPBACK}:{otlp_grpc}"},
                                             "http": {"endpoint": f"{LOOPBACK}:{otlp_http}"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


@dataclass
class Jaeger:
    otlp_http: str
    otlp_grpc: str
    query: str
    log: Path
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON) of a GET on the query service."""
        try:
            with urllib.request.urlopen(self.query + path, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def services(self) -> list[str]:
        status, doc = self.get("/api/v3/services")
        assert status == 200, doc
        return list(doc.get("services", []))

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        status, doc = self.get(f"/api/v3/traces/{trace_id}")
        if status == 404:
            return None
        assert status == 200, doc
        return dict(doc["result"])

    def span_count(self, trace_id: str) -> int:
        doc = self.trace(trace_id)
        if doc is None:
            return 0
        return sum(len(ss.get("spans", [])) for rs in doc.get("resourceSpans", []) for ss in rs.get("scopeSpans", []))

    def wait_for_spans(self, trace_ids: dict[str, int], timeout: float = 20.0) -> None:
        """Until each trace holds at least its number of spans (the exporter and the storage are asynchronous)."""
        deadline = time.monotonic() + timeout
        missing = dict(trace_ids)
        while missing:
            missing = {t: n for t, n in missing.items() if self.span_count(t) < n}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Jaeger lacks spans of {len(missing)} traces after {timeout}s, e.g. "
                                     f"{next(iter(missing))}; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)


def _ready(j: Jaeger) -> bool:
    if j.process.poll() is not None:
        raise AssertionError(f"jaeger exited {j.process.returncode}:\n{j.log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(j.query + "/api/v3/services", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_jaeger(binary: Path, directory: Path | None = None) -> Iterator[Jaeger]:
    """Jaeger started on free loopback ports, stopped (SIGTERM, then SIGKILL) on exit."""
    with tempfile.TemporaryDirectory(prefix="jaeger-", dir=directory) as tmp:
        ports = {"otlp_grpc": free_port(), "otlp_http": free_port(), "query_http": free_port(),
                 "query_grpc": free_port()}
        path = Path(tmp) / "jaeger.yaml"
        path.write_text(yaml.safe_dump(config(**ports)))
        log = Path(tmp) / "jaeger.log"
        with log.open("wb") as out:
            # Jaeger's own tracing would export to localhost:4317 (another process's port, or nothing).
            env = {**os.environ, "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none",
                   "OTEL_TRACES_SAMPLER": "always_off"}
            proc = subprocess.Popen([str(binary), "--config", f"file:{path}"], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        j = Jaeger(otlp_http=f"http://{LOOPBACK}:{ports['otlp_http']}", otlp_grpc=f"{LOOPBACK}:{ports['otlp_grpc']}",
                   query=f"http://{LOOPBACK}:{ports['query_http']}", log=log, process=proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _ready(j):
                if time.monotonic() > deadline:
                    raise AssertionError(f"jaeger not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            yield j
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    """A running Jaeger for the module's tests (skips when it is not built: see the module doc)."""
    with running_jaeger(jaeger_binary()) as j:
        yield j


__all__ = ["BUILD_ENV", "Jaeger", "config", "jaeger", "jaeger_binary", "jaeger_cached", "running_jaeger"]
