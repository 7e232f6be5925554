"""Every TLS file a configuration names is loaded by `check-config` and at serve time (issue 18, item 7): a
missing, unreadable, garbage or mismatched file is reported with the file, where the config names it, and why;
a garbage gRPC certificate is not "Failed to bind to address"."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from service_harness import Certs, free_port, make_certs

LOOPBACK = "127.0.0.1"


def config(receiver_tls: dict[str, str] | None = None, exporter_tls: dict[str, Any] | None = None,
           grpc_port: int = 0) -> dict[str, Any]:
    grpc: dict[str, Any] = {"endpoint": f"{LOOPBACK}:{grpc_port}"}
    if receiver_tls is not None:
        grpc["tls"] = receiver_tls
    exporter: dict[str, Any] = {"endpoint": f"{LOOPBACK}:1", "tls": exporter_tls or {"insecure": True}}
    return {
        "receivers": {"otlp": {"protocols": {"grpc": grpc}}},
        "processors": {"tail_sampling": {"policies": [{"name": "all", "type": "always_sample"}]}},
        "exporters": {"otlp": exporter},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["otlp"]}},
                    "telemetry": {"metrics": {"level": "none"}}},
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tailsample", *args], capture_output=True, text=True, timeout=60)


def check(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return run_cli("check-config", str(path))


def pair(c: Certs) -> dict[str, str]:
    return {"cert_file": str(c.cert), "key_file": str(c.key)}


GARBAGE = b"\x00\x01 this is not a certificate \xff" * 10
BAD_BASE64 = b"-----BEGIN CERTIFICATE-----\nnot*base64*at*all\n-----END CERTIFICATE-----\n"


def _missing(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    return config(receiver_tls={"cert_file": str(tmp / "nope.pem"), "key_file": str(c.key)}), \
        f"receivers.otlp.protocols.grpc.tls.cert_file: cannot read {tmp / 'nope.pem'}: No such file or directory"


def _garbage_cert(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "garbage.pem").write_bytes(GARBAGE)
    return config(receiver_tls={"cert_file": str(tmp / "garbage.pem"), "key_file": str(c.key)}), \
        f"receivers.otlp.protocols.grpc.tls.cert_file: {tmp / 'garbage.pem'} is not PEM"


def _bad_base64(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "bad.pem").write_bytes(BAD_BASE64)
    return config(receiver_tls={"cert_file": str(tmp / "bad.pem"), "key_file": str(c.key)}), \
        f"{tmp / 'bad.pem'} is not a valid PEM certificate"


def _key_as_cert(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    return config(receiver_tls={"cert_file": str(c.key), "key_file": str(c.key)}), \
        f"{c.key} holds no PEM certificate"


def _cert_as_key(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    return config(receiver_tls={"cert_file": str(c.cert), "key_file": str(c.cert)}), \
        f"receivers.otlp.protocols.grpc.tls.key_file: {c.cert} holds no PEM private key"


def _garbage_key(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "bad.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    return config(receiver_tls={"cert_file": str(c.cert), "key_file": str(tmp / "bad.key")}), \
        f"{tmp / 'bad.key'} is not a valid PEM private key"


def _mismatch(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    return config(receiver_tls={"cert_file": str(c.cert), "key_file": str(other.key)}), \
        f"{other.key} is not the private key of the certificate in {c.cert}"


def _empty_ca(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "empty.pem").write_bytes(b"")
    return config(exporter_tls={"ca_file": str(tmp / "empty.pem")}), \
        f"exporters.otlp.tls.ca_file: {tmp / 'empty.pem'} is empty"


def _garbage_ca(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "ca.pem").write_bytes(BAD_BASE64)
    return config(exporter_tls={"ca_file": str(tmp / "ca.pem")}), \
        f"exporters.otlp.tls.ca_file: {tmp / 'ca.pem'} is not a valid PEM certificate"


def _client_mismatch(c: Certs, other: Certs, tmp: Path) -> tuple[dict[str, Any], str]:
    return config(exporter_tls={"ca_file": str(c.ca), "cert_file": str(c.cert), "key_file": str(other.key)}), \
        f"exporters.otlp.tls.key_file: {other.key} is not the private key"


CASES: dict[str, Callable[[Certs, Certs, Path], tuple[dict[str, Any], str]]] = {
    "missing cert_file": _missing, "garbage cert_file": _garbage_cert, "PEM with bad base64": _bad_base64,
    "a key as cert_file": _key_as_cert, "a cert as key_file": _cert_as_key, "garbage key": _garbage_key,
    "key of another cert": _mismatch, "empty ca_file": _empty_ca, "garbage ca_file": _garbage_ca,
    "exporter client key of another cert": _client_mismatch,
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certs, Certs]:
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    return make_certs(a), make_certs(b)


@pytest.mark.parametrize("case", CASES)
def test_check_config_reports_the_failing_tls_file_and_why(case: str, certs: tuple[Certs, Certs],
                                                           tmp_path: Path) -> None:
    cfg, message = CASES[case](*certs, tmp_path)
    r = check(tmp_path, cfg)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "ok" not in r.stdout


def test_check_config_reports_every_failing_file_and_passes_good_ones(certs: tuple[Certs, Certs],
                                                                      tmp_path: Path) -> None:
    good, other = certs
    ok = check(tmp_path, config(receiver_tls=pair(good), exporter_tls={"ca_file": str(good.ca)}))
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr
    both = check(tmp_path, config(receiver_tls={"cert_file": str(good.cert), "key_file": str(other.key)},
                                  exporter_tls={"ca_file": str(tmp_path / "gone.pem")}))
    assert both.returncode == 2
    assert "receivers.otlp.protocols.grpc.tls.key_file" in both.stderr
    assert "exporters.otlp.tls.ca_file" in both.stderr


def test_serve_reports_a_garbage_grpc_certificate_as_such(tmp_path: Path, certs: tuple[Certs, Certs]) -> None:
    """Scenario: `tailsample serve` with a gRPC receiver whose cert_file is garbage (grpcio alone reports "Failed
    to bind to address"). Guarantees: exit 2 naming the file and what is wrong with it."""
    (tmp_path / "garbage.pem").write_bytes(GARBAGE)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config(receiver_tls={"cert_file": str(tmp_path / "garbage.pem"),
                                                        "key_file": str(certs[0].key)}, grpc_port=free_port())))
    r = run_cli("serve", "--config", str(path))
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'garbage.pem'} is not PEM" in r.stderr
    assert "Failed to bind" not in r.stderr and "Traceback" not in r.stderr
