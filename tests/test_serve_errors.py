"""Errors that name their cause (issue 20, a newcomer's first hour): `tailsample serve` on a busy port (exit 1,
no raw gRPC log line, no "shutting down" for a server that never started); `--url` at a server that is not
tailsample (what it reached, not its HTML)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from service_harness import LOOPBACK, free_port
from tailsample.cli import main


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


class _Page(http.server.BaseHTTPRequestHandler):
    """A web server that is not tailsample: HTML pages, 200 or 404."""

    def do_GET(self) -> None:
        found = self.path.startswith("/debug/kept")  # show: a 200 page; explain, gaps: a 404 page
        page = b"<!doctype html><html><head><title>Grafana  \n Home</title></head><body>" + b"x" * 5000
        page += b"</body></html>"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("command", "status"), [(["explain", "4bf92f3577b34da6a3ce929d0e0e4736"], 404),
                                                 (["gaps"], 404), (["show"], 200)])
def test_a_url_that_is_not_tailsample_is_said_so(capsys: pytest.CaptureFixture[str], command: list[str],
                                                 status: int) -> None:
    """Scenario: `explain`, `gaps` and `show` with --url at a web server that answers HTML (a 404 or a 200 page).
    Guarantees: exit 1 and one line naming the status, the page's title and what address was expected; none
    of the page itself."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        assert main([*command, "--url", url, "--timeout", "5"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert f"HTTP {status}, an HTML page titled 'Grafana Home', not JSON" in err, err
    assert "telemetry metrics address" in err
    assert "<html" not in err and "xxxx" not in err
