"""The Go-built OpenTelemetry tools of tests/tools/gotools.py, and a round trip through them on loopback.

telemetrygen sends traces over OTLP (gRPC and HTTP) to the test collector (otlp receiver -> file exporter, JSON);
the file must hold exactly what telemetrygen was told to send. Skipped with the reason when this machine cannot
build the tools (no Go, no module proxy). The first build takes minutes; later runs reuse the cached binaries.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tools import gotools

LOOPBACK = "127.0.0.1"
STATUS_CODE_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode


# ---------------------------------------------------------------------------------------------------------------
# the build machinery, without Go


def test_build_once_builds_then_reuses_then_rebuilds_on_a_new_key(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        tmp.write_text(f"build {len(builds)}")

    binary = tmp_path / "tool" / "bin"
    assert gotools.build_once(binary, "k1", build) == binary
    assert gotools.build_once(binary, "k1", build) == binary
    assert binary.read_text() == "build 1" and len(builds) == 1
    assert builds[0] != binary and not builds[0].exists()  # built under a temporary name, renamed into place
    assert (tmp_path / "tool" / "bin.sha256").read_text().strip() == "k1"
    gotools.build_once(binary, "k2", build)
    assert binary.read_text() == "build 2"


def test_build_once_leaves_nothing_behind_when_the_build_fails(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        tmp.write_text("half")
        raise gotools.GoBuildError("boom")

    binary = tmp_path / "bin"
    with pytest.raises(gotools.GoBuildError, match="boom"):
        gotools.build_once(binary, "k", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.lock"]


def test_run_go_tells_an_unavailable_environment_from_a_real_failure(tmp_path: Path) -> None:
    def fake(output: str) -> list[str]:
        return [sys.executable, "-c", f"import sys; print({output!r}); sys.exit(1)"]

    refused = "go: example.com/m@v1.0.0: reading https://proxy.golang.org/...: 403 Forbidden"
    with pytest.raises(gotools.GoToolUnavailable, match="403 Forbidden"):
        gotools.run_go(fake(refused), cwd=tmp_path, what="the tool", timeout=60)
    with pytest.raises(gotools.GoBuildError, match="undefined: frobnicate"):
        gotools.run_go(fake("./main.go:3:2: undefined: frobnicate"), cwd=tmp_path, what="the tool", timeout=60)


def test_no_go_on_path_is_an_unavailable_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(gotools.GoToolUnavailable, match="no `go` on PATH"):
        gotools.find_go()


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILSAMPLE_CACHE", str(tmp_path / "ts"))
    assert gotools.cache_dir() == tmp_path / "ts" / "go"
    monkeypatch.setenv("TAILSAMPLE_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gotools.cache_dir() == tmp_path / "xdg" / "tailsample" / "go"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gotools.cache_dir() == Path.home() / ".cache" / "tailsample" / "go"


# ---------------------------------------------------------------------------------------------------------------
# the real tools


@pytest.fixture(scope="module")
def otelcol() -> Path:
    return gotools.require(gotools.otelcol)


@pytest.fixture(scope="module")
def telemetrygen() -> Path:
    return gotools.require(gotools.telemetrygen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the collector exited ({proc.returncode}) before listening:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"the collector did not listen on {LOOPBACK}:{port} within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def collector(binary: Path, workdir: Path) -> Iterator[dict[str, Any]]:
    """The test collector (otlp receiver on loopback gRPC and HTTP ports -> file exporter), stopped on exit."""
    grpc_port, http_port = free_port(), free_port()
    out = workdir / "traces.jsonl"
    config = workdir / "otelcol.yaml"
    config.write_text(f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {LOOPBACK}:{grpc_port}
      http:
        endpoint: {LOOPBACK}:{http_port}
exporters:
  file:
    path: {out}
    format: json
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
""")
    log = workdir / "otelcol.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    info = {"grpc": grpc_port, "http": http_port, "out": out, "log": log, "proc": proc}
    try:
        wait_for_port(grpc_port, proc, log)
        wait_for_port(http_port, proc, log)
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful: the file exporter flushes on shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def exported_spans(path: Path) -> list[dict[str, Any]]:
    """Every span of the file exporter's JSON lines, with its resource's attributes under "resource"."""
    spans = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            resource = {a["key"]: a["value"] for a in rs["resource"].get("attributes", [])}
            for ss in rs["scopeSpans"]:
                spans.extend({**span, "resource": resource} for span in ss["spans"])
    return spans


@pytest.mark.parametrize(("transport", "status"), [("grpc", "Error"), ("http", "Unset")])
def test_telemetrygen_to_collector_round_trip(otelcol: Path, telemetrygen: Path, tmp_path: Path,
                                              transport: str, status: str) -> None:
    traces, children = 5, 2
    with collector(otelcol, tmp_path) as col:
        cmd = [str(telemetrygen), "traces", "--otlp-insecure", "--otlp-endpoint", f"{LOOPBACK}:{col[transport]}",
               "--traces", str(traces), "--child-spans", str(children), "--rate", "0",  # default: 1 span/s
               "--status-code", status, "--service", f"gotools-{transport}",
               "--telemetry-attributes", 'test.case="round-trip"']
        if transport == "http":
            cmd.append("--otlp-http")
        gen = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        # telemetrygen exits 0 even when its exports fail: it only logs "traces export: <error>"
        assert gen.returncode == 0, gen.stderr[-3000:]
        assert "traces export:" not in gen.stderr, gen.stderr[-3000:]
        assert f'"traces": {traces}' in gen.stderr  # its completion line: "traces generated {"worker": 0, ...}"
        proc = col["proc"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, col["log"].read_text()[-3000:]

    spans = exported_spans(col["out"])
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["traceId"]].append(span)
    assert len(spans) == traces * (1 + children)
    assert len(by_trace) == traces
    for trace_spans in by_trace.values():
        roots = [s for s in trace_spans if not s.get("parentSpanId")]
        assert [r["name"] for r in roots] == ["lets-go"]
        kids = [s for s in trace_spans if s.get("parentSpanId")]
        assert sorted(s["name"] for s in kids) == [f"okey-dokey-{i}" for i in range(children)]
        assert {s["parentSpanId"] for s in kids} == {roots[0]["spanId"]}  # children of the root, siblings
    for span in spans:
        assert span["resource"]["service.name"] == {"stringValue": f"gotools-{transport}"}
        assert {"key": "test.case", "value": {"stringValue": "round-trip"}} in span["attributes"]
        assert span["status"].get("code", 0) == (STATUS_CODE_ERROR if status == "Error" else 0)
