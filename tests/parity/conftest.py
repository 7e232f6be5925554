"""Setup of the parity suite: build the reference program once, run it on workloads.

The Go program (main.go beside this file) is built into `.bin/parity` the first time it is needed and rebuilt
only when main.go, go.mod or go.sum change (their SHA-256, with the Go version, is kept in `.bin/parity.sha256`).
Go's module and build caches stay where `go env GOMODCACHE GOCACHE` says, so they persist between runs. Without
`go` on PATH the whole suite is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PARITY = Path(__file__).resolve().parent
if str(PARITY) not in sys.path:
    sys.path.insert(0, str(PARITY))

BIN_DIR = PARITY / ".bin"
BINARY = BIN_DIR / "parity"
STAMP = BIN_DIR / "parity.sha256"
SOURCES = ("main.go", "go.mod", "go.sum")
BUILD_TIMEOUT_S = 1800  # the first build fetches and compiles the collector's modules: minutes on 2 cores
RUN_TIMEOUT_S = 300
# what a build failure looks like when the module proxy cannot be reached, or the toolchain is too old
_ENVIRONMENT_FAILURES = ("dial tcp", "no such host", "proxyconnect", "connection refused", "i/o timeout",
                         "TLS handshake", "403 Forbidden", "404 Not Found", "requires go >=",
                         "toolchain not available")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "parity: compares tailsample's decisions with the OpenTelemetry Collector's tail_sampling "
                   "processor (needs Go; skipped without it)")


def _digest(go: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (PARITY / name).read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout.strip()
    h.update(version.encode())
    return h.hexdigest()


def _build(go: str) -> Path:
    digest = _digest(go)
    if BINARY.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return BINARY
    BIN_DIR.mkdir(exist_ok=True)
    tmp = BIN_DIR / f"parity.{os.getpid()}.tmp"
    env = {**os.environ, "GOTOOLCHAIN": "local"}  # never download another toolchain
    try:
        proc = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=PARITY, env=env,
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        pytest.fail(f"building the reference program took more than {BUILD_TIMEOUT_S} s", pytrace=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        out = (proc.stderr + proc.stdout).strip()
        tail = "\n".join(out.splitlines()[-15:])
        if any(marker in out for marker in _ENVIRONMENT_FAILURES):
            pytest.skip(f"cannot build the reference program here (modules or toolchain unavailable):\n{tail}")
        pytest.fail(f"go build failed in {PARITY}:\n{tail}", pytrace=False)
    os.replace(tmp, BINARY)
    STAMP.write_text(digest + "\n")
    return BINARY


@pytest.fixture(scope="session")
def reference_binary() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the parity suite needs the Go toolchain: no `go` on PATH")
    return _build(go)


Reference = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def reference(reference_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """run(config_text, workload, *, align_second=False) -> the Go program's JSON result."""
    inputs: dict[str, Path] = {}
    workdir = tmp_path_factory.mktemp("parity")

    def run(config_text: str, workload: Any, *, align_second: bool = False) -> dict[str, Any]:
        data = workload.file_bytes()
        key = hashlib.sha256(data).hexdigest()
        if key not in inputs:
            path = workdir / f"input-{len(inputs)}.bin"
            path.write_bytes(data)
            inputs[key] = path
        cfg = workdir / "config.yaml"
        cfg.write_text(config_text)
        cmd = [str(reference_binary), "-config", str(cfg), "-input", str(inputs[key]), "-details"]
        if align_second:
            cmd.append("-align-second")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            pytest.fail(f"the reference program failed ({proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    return run
