"""`tailsample serve` when it cannot start: the cause named, exit 1, no raw gRPC log line, no "shutting down" for
a server that never started (issue 20, a newcomer's first hour)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service_harness import LOOPBACK, free_port


def config(grpc_port: int, http_port: int) -> dict[str, object]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{LOOPBACK}:{grpc_port}"},
                                             "http": {"endpoint": f"{LOOPBACK}:{http_port}"}}}},
        "processors": {"tail_sampling": {"decision_wait": "1s",
                                         "policies": [{"name": "all", "type": "always_sample"}]}},
        "exporters": {"debug": {"verbosity": "basic"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["debug"]}},
                    "telemetry": {"metrics": {"level": "none"}}},
    }


@pytest.mark.parametrize("busy", ["grpc", "http"])
def test_a_busy_port_is_named_and_nothing_claims_to_shut_down(tmp_path: Path, busy: str) -> None:
    """Scenario: another process listens on the OTLP gRPC (or HTTP) receiver's port (bound as servers bind it:
    SO_REUSEADDR). Guarantees: `tailsample serve` exits 1 saying which receiver's address is in use; stderr has
    no gRPC C-core line and no "shutting down"/"stopped" (it never served)."""
    ports = {"grpc": free_port(), "http": free_port()}
    cfg = tmp_path / "busy.yaml"
    cfg.write_text(yaml.safe_dump(config(ports["grpc"], ports["http"])))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((LOOPBACK, ports[busy]))
        holder.listen()
        proc = subprocess.run([sys.executable, "-m", "tailsample", "serve", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve: otlp ({busy}): {LOOPBACK}:{ports[busy]} is already in use" in proc.stderr, proc.stderr
    for noise in ("add_port.cc", "Failed to bind", "[Errno", "shutting down", "stopped", "Traceback"):
        assert noise not in proc.stderr, proc.stderr
