"""What the service tests share: a `tailsample serve` in a background thread, an OTLP sink (a test backend with
OTLP/HTTP and OTLP/gRPC that records what it receives and can be told to fail), free loopback ports, and TLS
certificates made on the fly."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from aiohttp import web
from grpc import aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tailsample.collector.metrics import parse_text
from tailsample.collector.otlp_status import encode_status
from tailsample.collector.settings import ServiceConfig
from tailsample.service.app import Service

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def process_healthy(proc: subprocess.Popen[bytes], log: Path, health_port: int) -> bool:
    """Whether a `tailsample serve` process answers its health check; raises with its log if it exited."""
    if proc.poll() is not None:
        raise AssertionError(f"tailsample serve exited {proc.returncode}: {log.read_text()}")
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{health_port}/", timeout=1) as r:
            return bool(r.status == 200 and json.loads(r.read())["status"] == "Server available")
    except OSError:
        return False


def scrape(metrics_port: int) -> dict[str, float]:
    """A service's Prometheus metrics, by series."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=5) as r:
        return parse_text(r.read().decode())


class ServeSubprocess:
    """`tailsample serve --config <tmp>/<name>.yaml [args]` in a subprocess, its output in `<tmp>/<name>.log`;
    returns once its health check answers (`ready_after` seconds after the start). `config` must name
    `health_port` and `metrics_port` as the health_check and metrics addresses."""

    def __init__(self, tmp: Path, name: str, config: dict[str, Any], *, health_port: int, metrics_port: int,
                 args: tuple[str, ...] = (), preexec_fn: Callable[[], None] | None = None) -> None:
        self.health_port, self.metrics_port = health_port, metrics_port
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = tmp / f"{name}.log"
        self._log = self.log.open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "tailsample", "serve", "--config", str(self.config),
                                      *args], stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        wait_for(lambda: process_healthy(self.proc, self.log, self.health_port), timeout=30, interval=0.05,
                 what=f"{name} healthy")
        self.ready_after = time.monotonic() - started

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)


class _LoopThread:
    """An asyncio loop in a daemon thread; `call(coro)` runs a coroutine there and waits for its result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class ServiceThread:
    """`tailsample serve` on its own loop, in-process, so tests can read its metrics and engines."""

    def __init__(self, config: dict[str, Any] | ServiceConfig, *, shutdown_timeout: float = 5.0) -> None:
        cfg = config if isinstance(config, ServiceConfig) else ServiceConfig.from_dict(config)
        self._lt = _LoopThread("tailsample-serve")
        self.service: Service = self._lt.call(_make_service(cfg, shutdown_timeout))
        self._lt.call(self.service.start())

    def address(self, key: str) -> str:
        a = self.service.addresses[key]
        return f"{a.host or LOOPBACK}:{a.port}"

    def url(self, key: str = "otlp/http", path: str = "/v1/traces") -> str:
        return f"http://{self.address(key)}{path}"

    def metrics(self) -> dict[str, float]:
        return parse_text(self.service.registry.render())

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def stop(self) -> None:
        self._lt.call(self.service.stop(), timeout=60)
        self._lt.close()


async def _make_service(cfg: ServiceConfig, shutdown_timeout: float) -> Service:
    return Service(cfg, shutdown_timeout=shutdown_timeout)  # built on its loop: asyncio objects bind to it


def get_json(url: str) -> tuple[int, Any]:
    """GET a JSON document: (status, body), the body of an HTTP error too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def serving(config: dict[str, Any], **kw: Any) -> Iterator[ServiceThread]:
    s = ServiceThread(config, **kw)
    try:
        yield s
    finally:
        s.stop()


class ServedProcess:
    """`service_config(...)` served by a `tailsample serve` subprocess, with `ServiceThread`'s test face (`url`,
    `address`, `metric`): the loopback `:0` endpoints get free ports, a health check is added."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        cfg = json.loads(json.dumps(config))
        self._addresses: dict[str, str] = {}
        for rid, rec in cfg["receivers"].items():
            for proto, settings in (rec.get("protocols") or {}).items():
                if str(settings.get("endpoint", "")).endswith(":0"):
                    settings["endpoint"] = f"{LOOPBACK}:{free_port()}"
                self._addresses[f"{rid}/{proto}"] = settings["endpoint"]
        metrics_port, health_port = free_port(), free_port()
        cfg["service"]["telemetry"]["metrics"]["address"] = f"{LOOPBACK}:{metrics_port}"
        self._addresses["metrics"] = f"{LOOPBACK}:{metrics_port}"
        cfg.setdefault("extensions", {})["health_check"] = {"endpoint": f"{LOOPBACK}:{health_port}"}
        cfg["service"].setdefault("extensions", []).append("health_check")
        self.process = ServeSubprocess(tmp, "serve", cfg, health_port=health_port, metrics_port=metrics_port)

    def address(self, key: str) -> str:
        return self._addresses[key]

    def url(self, key: str = "otlp/http", path: str = "/v1/traces") -> str:
        return f"http://{self.address(key)}{path}"

    def metric(self, key: str) -> float:
        return self.process.metrics().get(key, 0.0)

    def stop(self) -> None:
        """SIGTERM, as an operator stops it: it must drain and exit 0."""
        self.process.proc.terminate()
        code = self.process.proc.wait(timeout=60)
        assert code == 0, f"tailsample serve exited {code}: {self.process.log.read_text()[-3000:]}"


@contextmanager
def serving_process(config: dict[str, Any], tmp: Path) -> Iterator[ServedProcess]:
    s = ServedProcess(config, tmp)
    try:
        yield s
    finally:
        if s.process.proc.poll() is None:
            s.stop()


def service_config(*, exporters: dict[str, Any], policies: list[dict[str, Any]] | None = None,
                   decision_wait: str = "200ms", receivers: dict[str, Any] | None = None,
                   processors: dict[str, Any] | None = None, pipeline_processors: list[str] | None = None,
                   extensions: dict[str, Any] | None = None, service_extensions: list[str] | None = None,
                   tail_sampling: dict[str, Any] | None = None,
                   debug: dict[str, Any] | None = None) -> dict[str, Any]:
    """A collector config on free loopback ports; errors are kept by default. `debug`: the settings of a
    tailsample_debug extension, which turns the /debug endpoints on (`{}` for its defaults)."""
    if debug is not None:
        extensions = {**(extensions or {}), "tailsample_debug": debug}
        service_extensions = [*(service_extensions or []), "tailsample_debug"]
    ts = {"decision_wait": decision_wait,
          "policies": policies or [{"name": "errors", "type": "status_code",
                                    "status_code": {"status_codes": ["ERROR"]}}],
          **(tail_sampling or {})}
    procs = {"tail_sampling": ts, **(processors or {})}
    return {
        "receivers": receivers or {"otlp": {"protocols": {"grpc": {"endpoint": f"{LOOPBACK}:0"},
                                                          "http": {"endpoint": f"{LOOPBACK}:0"}}}},
        "processors": procs,
        "exporters": exporters,
        "extensions": extensions or {},
        "service": {
            "extensions": service_extensions or [],
            "pipelines": {"traces": {"receivers": ["otlp"],
                                     "processors": pipeline_processors or ["tail_sampling"],
                                     "exporters": list(exporters)}},
            "telemetry": {"metrics": {"address": f"{LOOPBACK}:0"}},
        },
    }


# ---- a test backend ---------------------------------------------------------------------------------------

@dataclass
class OtlpSink:
    """A backend that records every ExportTraceServiceRequest it gets, over OTLP/HTTP and OTLP/gRPC.

    `fail(n, http_status, grpc_code, retry_after)` makes the next n requests fail that way; `stop()` and
    `start()` take it down and bring it back on the same ports (an exporter's backend being down for a while).
    `max_receive_bytes` is the largest request it takes on either protocol (4 MiB is gRPC's standard limit: a
    larger message is refused with RESOURCE_EXHAUSTED by grpcio, a larger HTTP body with 413 by aiohttp).
    """

    http_port: int = 0
    grpc_port: int = 0
    max_receive_bytes: int = 64 << 20
    payloads: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    _fail: list[tuple[int, grpc.StatusCode, float | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self._lt = _LoopThread("otlp-sink")
        self._runner: web.AppRunner | None = None
        self._grpc: aio.Server | None = None
        self.start()

    @property
    def http_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def fail(self, n: int, http_status: int = 503, grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
             retry_after: float | None = None) -> None:
        with self._lock:
            self._fail.extend([(http_status, grpc_code, retry_after)] * n)

    def _next_failure(self) -> tuple[int, grpc.StatusCode, float | None] | None:
        with self._lock:
            self.attempts += 1
            return self._fail.pop(0) if self._fail else None

    def _record(self, payload: bytes, headers: dict[str, str]) -> None:
        ExportTraceServiceRequest.FromString(payload)  # a sink that gets garbage must say so
        with self._lock:
            self.payloads.append(payload)
            self.headers.append(headers)

    async def _http(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp inflates gzip request bodies
        failure = self._next_failure()
        if failure is not None:
            status, _, retry_after = failure
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            return web.Response(status=status, body=encode_status(14, "sink told to fail"),
                                content_type="application/x-protobuf", headers=headers)
        self._record(body, {k.lower(): v for k, v in request.headers.items()})
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _export(self, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        failure = self._next_failure()
        if failure is not None:
            _, code, retry_after = failure
            trailing = ()
            if retry_after is not None:
                trailing = (("grpc-status-details-bin", encode_status(code.value[0], "fail", retry_after)),)
            await context.abort(code, "sink told to fail", trailing_metadata=trailing)
        md = {k: str(v) for k, v in context.invocation_metadata() or ()}
        self._record(request, md)
        return b""

    async def _start(self) -> None:
        app = web.Application(client_max_size=self.max_receive_bytes)
        app.router.add_post("/v1/traces", self._http)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.http_port, reuse_address=True).start()
        self._grpc = aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length",
                                                                        self.max_receive_bytes)])
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)}),))
        self._grpc.add_insecure_port(f"{LOOPBACK}:{self.grpc_port}")
        await self._grpc.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._grpc is not None:
            await self._grpc.stop(0)
            self._grpc = None

    def start(self) -> None:
        self._lt.call(self._start())

    def stop(self) -> None:
        self._lt.call(self._stop())

    def close(self) -> None:
        self.stop()
        self._lt.close()

    def spans(self) -> list[tuple[str, str, str, int]]:
        """(trace ID hex, span ID hex, name, status code) of every span received, in order."""
        out = []
        with self._lock:
            payloads = list(self.payloads)
        for p in payloads:
            for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append((s.trace_id.hex(), s.span_id.hex(), s.name, s.status.code))
        return out

    def span_count(self) -> int:
        return len(self.spans())


@contextmanager
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink()
    try:
        yield s
    finally:
        s.close()


# ---- TLS ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A CA and a server certificate for 127.0.0.1 / localhost, signed by it (cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailsample test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths
