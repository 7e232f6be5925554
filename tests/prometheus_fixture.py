"""A real Prometheus (`tools.gotools.prometheus()`, github.com/prometheus/prometheus v0.316.0) and promtool for the
tests: scraping given targets every second, evaluating given rule files every second, its HTTP API on a free
loopback port, its TSDB in a temporary directory.

Building them takes many minutes on 2 cores; the normal test run does not wait: `prometheus_binaries()` skips the
calling test unless both are in the gotools cache, or `TAILSAMPLE_BUILD_PROMETHEUS=1` is set (then it builds them
once per machine; `make test-status` sets it). It also skips when this machine cannot build them (no Go, no module
proxy). Tests that need them carry the `prometheus` marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service_harness import LOOPBACK, free_port, wait_for
from tools import gotools

BUILD_ENV = "TAILSAMPLE_BUILD_PROMETHEUS"


def _cached(name: str) -> Path | None:
    """The cached binary when a complete build for this Go and version is there; never builds."""
    try:
        go = gotools.find_go()
        key = gotools._key(name, f"{gotools.PROMETHEUS_MODULE}/cmd/{name}@{gotools.PROMETHEUS_VERSION}",
                           gotools.go_version(go))
    except (gotools.GoToolUnavailable, gotools.GoBuildError, OSError):
        return None
    binary = gotools.cache_dir() / f"{name}-{key[:16]}" / name
    stamp = binary.with_name(f"{name}.sha256")
    return binary if binary.exists() and stamp.exists() and stamp.read_text().strip() == key else None


def _binary(name: str) -> Path:
    """The built `name` (prometheus or promtool), or the calling test skipped with the reason."""
    if os.environ.get(BUILD_ENV) != "1" and _cached(name) is None:
        pytest.skip(f"{name} {gotools.PROMETHEUS_VERSION} is not built yet (many minutes): `make test-status` or "
                    f"{BUILD_ENV}=1 builds it into the gotools cache")
    return gotools.require(gotools.prometheus if name == "prometheus" else gotools.promtool)


def prometheus_binaries() -> tuple[Path, Path]:
    """(prometheus, promtool), or the calling test skipped with the reason."""
    return _binary("prometheus"), _binary("promtool")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = _binary("promtool")
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """The `data` of an API answer; raises with Prometheus's error text on an error status."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {params}: HTTP {e.code}: {e.read().decode()[:500]}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                             step=f"{step:g}")["result"])

    def targets_up(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.api("targets")["activeTargets"]}


@contextmanager
def running_prometheus(tmp: Path, jobs: dict[str, str], rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    """Prometheus scraping `jobs` ({job: "host:port"}, /metrics) and evaluating `rule_files`, both every second."""
    binary, _ = prometheus_binaries()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in jobs.items()],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address={LOOPBACK}:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://{LOOPBACK}:{port}", proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.1, what="prometheus ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """`check()` until it returns something truthy (it may raise AssertionError meanwhile)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except AssertionError as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {what}" + (f" ({last})" if last else ""))


__all__ = ["BUILD_ENV", "Prometheus", "eventually", "prometheus_binaries", "promtool", "running_prometheus"]
