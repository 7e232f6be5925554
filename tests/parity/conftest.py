"""Setup of the parity suite: build the reference program once, run it on workloads.

The Go program (main.go beside this file) is built into `.bin/parity` the first time it is needed and rebuilt
only when main.go, go.mod or go.sum change (their SHA-256, with the Go version, is kept in `.bin/parity.sha256`).
Go's module and build caches stay where `go env GOMODCACHE GOCACHE` says, so they persist between runs. Without
`go` on PATH, or when the modules or the toolchain are unavailable, the whole suite is skipped on a developer's
machine and fails in CI (`CI` set to true, as CI services do): there the comparison must run. The build itself
(lock, temporary name and rename, what counts as an unavailable environment) is `tools.gotools.build_once`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PARITY = Path(__file__).resolve().parent
for _path in (PARITY, PARITY.parent):  # workload.py beside this file; the `tools` package of tests/
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tools import gotools  # noqa: E402

BIN_DIR = PARITY / ".bin"
BINARY = BIN_DIR / "parity"
SOURCES = ("main.go", "go.mod", "go.sum")
BUILD_TIMEOUT_S = 1800  # the first build fetches and compiles the collector's modules: minutes on 2 cores
RUN_TIMEOUT_S = 300


def in_ci() -> bool:
    """CI services set `CI=true`; there a missing Go toolchain or reference fails the suite instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """Skips the suite for `reason` on a developer's machine; fails it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the parity suite must run here, not be skipped)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "parity: compares tailsample's decisions with the OpenTelemetry Collector's tail_sampling "
                   "processor (needs Go; skipped without it)")


def _digest(go: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (PARITY / name).read_bytes() + b"\0")
    h.update(gotools.go_version(go).encode())
    return h.hexdigest()


def _build(go: str) -> Path:
    def build(tmp: Path) -> None:
        gotools.run_go([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=PARITY, what="the reference program",
                       timeout=BUILD_TIMEOUT_S)

    try:
        return gotools.build_once(BINARY, _digest(go), build)
    except gotools.GoToolUnavailable as e:
        unavailable(str(e))
        raise  # unreachable: unavailable() skips or fails
    except gotools.GoBuildError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def reference_binary() -> Path:
    try:
        go = gotools.find_go()
    except gotools.GoToolUnavailable as e:
        unavailable(f"the parity suite needs the Go toolchain: {e}")
        raise  # unreachable: unavailable() skips or fails
    return _build(go)


Reference = Callable[..., dict[str, Any]]


def read_payloads(data: bytes) -> list[bytes]:
    """The payloads of a length-prefixed file (4-byte big-endian lengths), as the Go program reads and writes."""
    out = []
    at = 0
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "big")
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


@pytest.fixture(scope="session")
def reference(reference_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """run(config_text, workload, *, align_second=False, gaps=None, output=False) -> the Go program's JSON result.

    `gaps` ({payload index: seconds}) sleeps before those payloads, so that the reference's wall-clock
    decision_wait passes between them; with `output`, the result's "output" holds what reached the reference's
    next consumer (ExportTraceServiceRequest payloads as pdata encodes them).
    """
    inputs: dict[str, Path] = {}
    workdir = tmp_path_factory.mktemp("parity")

    def run(config_text: str, workload: Any, *, align_second: bool = False, gaps: dict[int, float] | None = None,
            output: bool = False) -> dict[str, Any]:
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
        if gaps:
            cmd += ["-gaps", ",".join(f"{i}={round(s * 1000)}" for i, s in sorted(gaps.items()))]
        out_path = workdir / "output.bin"
        if output:
            cmd += ["-out", str(out_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            pytest.fail(f"the reference program failed ({proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
        result: dict[str, Any] = json.loads(proc.stdout)
        if output:
            result["output"] = read_payloads(out_path.read_bytes())
        return result

    return run
