"""Connection hygiene of `tailsample serve` (issue 18, items 2 and 6), proven on the real service process over
loopback: the descriptor limit raised at start, the connection cap with health and metrics still answering, the
header, body and idle timeouts against slow clients, aborted uploads counted with a bounded log, accept() out of
descriptors logged once per interval, and a soak mixing all of it with real OpenTelemetry SDK traffic."""

from __future__ import annotations

import http.client
import os
import random
import re
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otlp_builders import make_request, make_span, service, trace_id
from service_harness import LOOPBACK, OtlpSink, ServeSubprocess, free_port, sink, wait_for
from tailsample.receivers.connections import REFUSAL_TIMEOUT, fit_connection_caps

HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
PAYLOAD = make_request(service("probe"), [make_span(trace_id(), name="probe")])


class Serve(ServeSubprocess):
    """`tailsample serve` with OTLP gRPC + HTTP, health check and metrics on free ports, exporting to `backend`
    (or to a file), `http` settings merged into the HTTP receiver's."""

    def __init__(self, tmp: Path, *, http: dict[str, Any] | None = None, backend: OtlpSink | None = None,
                 preexec_fn: Callable[[], None] | None = None, decision_wait: str = "500ms") -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        metrics_port, health_port = free_port(), free_port()
        exporter = ({"otlphttp": {"endpoint": backend.http_endpoint}} if backend is not None
                    else {"file": {"path": str(tmp / "kept.json")}})
        cfg = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"{LOOPBACK}:{self.grpc_port}"},
                "http": {"endpoint": f"{LOOPBACK}:{self.http_port}", **(http or {})}}}},
            "processors": {"tail_sampling": {"decision_wait": decision_wait, "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}},
            "exporters": exporter,
            "extensions": {"health_check": {"endpoint": f"{LOOPBACK}:{health_port}"}},
            "service": {"extensions": ["health_check"],
                        "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                 "exporters": list(exporter)}},
                        "telemetry": {"metrics": {"address": f"{LOOPBACK}:{metrics_port}"}}},
        }
        super().__init__(tmp, "serve", cfg, health_port=health_port, metrics_port=metrics_port,
                         preexec_fn=preexec_fn)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def post(self, body: bytes = PAYLOAD, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection(LOOPBACK, self.http_port, timeout=timeout)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def health(self) -> int:
        conn = http.client.HTTPConnection(LOOPBACK, self.health_port, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status
        finally:
            conn.close()


OPEN = 'tailsample_listener_open_connections{listener="otlp/http"}'
REFUSED = 'tailsample_listener_refused_connections_total{listener="otlp/http"}'
HEADER_TIMEOUTS = 'tailsample_listener_timed_out_connections_total{listener="otlp/http",timeout="read_header"}'
READ_TIMEOUTS = 'tailsample_listener_timed_out_connections_total{listener="otlp/http",timeout="read"}'
ABORTED = 'tailsample_receiver_aborted_requests_total{receiver="otlp",transport="http"}'


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    made: list[Serve] = []

    def make(**kw: Any) -> Serve:
        s = Serve(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=5)


def closed_by_peer(s: socket.socket, wait: float = 0.0) -> bool:
    """Whether the server closed `s` (EOF or reset); reads and discards what it sent (an answer)."""
    s.settimeout(wait if wait > 0 else 0.001)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:  # ECONNRESET: closed
        return True


def log_sanity(text: str, max_lines: int) -> None:
    """No traceback, no line per event: the log stays short whatever the client did."""
    assert "Traceback" not in text, text[-4000:]
    lines = text.splitlines()
    assert len(lines) <= max_lines, f"{len(lines)} log lines:\n" + "\n".join(lines[-40:])


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def proc_nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            parts = line.split()
            return int(parts[3]), int(parts[4])
    raise AssertionError("no Max open files line")


# ---- the descriptor limit and the connection cap -------------------------------------------------------------

@pytest.mark.skipif(HARD < 1024 or not Path("/proc/self/limits").exists(), reason="needs a hard limit >= 1024")
def test_soft_limit_raised_and_connections_over_the_cap_refused_cleanly(serve: Callable[..., Serve]) -> None:
    """Scenario: the service starts under a soft descriptor limit of 256 (as under systemd, at 1,024), with
    max_connections 40 on OTLP/HTTP; 40 idle sockets take every slot, then more clients come.
    Guarantees: the soft limit is raised to the hard limit (logged once); a client over the cap gets 503 with
    Retry-After (counted), not a hang; health and metrics keep answering; once idle sockets go, clients are served
    again; the log has no traceback and no line per refused connection."""
    s = serve(http={"max_connections": 40, "read_header_timeout": "60s"}, preexec_fn=_limit(256, HARD))
    assert proc_nofile(s.proc.pid) == (HARD, HARD)
    assert f"soft limit raised from 256 to the hard limit {HARD}" in s.text()
    idle = [connect(s.http_port) for _ in range(40)]
    wait_for(lambda: s.metric(OPEN) == 40, what="40 idle connections counted")
    for _ in range(20):  # well over the cap: every one answered 503, none left hanging
        status, headers = s.post()
        assert status == 503 and headers.get("retry-after") == "1"
    assert s.metric(REFUSED) >= 20
    assert s.health() == 200 and s.metric(OPEN) == 40  # health and metrics have their own caps
    for sock in idle[:10]:
        sock.close()
    wait_for(lambda: s.metric(OPEN) <= 30, what="closed idle connections uncounted")
    assert s.post()[0] == 200
    for sock in idle[10:]:
        sock.close()
    log_sanity(s.text(), max_lines=12)


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="Linux /proc")
@pytest.mark.parametrize(("limit", "flood"), [(256, 400), (1024, 1100)], ids=["nofile-256", "nofile-1024"])
def test_low_hard_limit_caps_fit_the_descriptors_and_health_answers(serve: Callable[..., Serve], limit: int,
                                                                   flood: int) -> None:
    """Scenario: soft and hard descriptor limits both at `limit` (the issue's probe: 1,024, where ~1,000 idle
    sockets stopped every new connection for 18 s); `flood` sockets are opened on OTLP/HTTP and held, and 60
    raw sockets on OTLP/gRPC. Guarantees: max_connections is lowered to fit the limit (logged) and the open count
    stops exactly there; over it, HTTP clients get 503 and gRPC connections are closed at once; health, metrics
    and OTLP/gRPC keep answering; HTTP clients are served once the flood goes; no "Too many open files" at all
    (main logged 34,322 tracebacks in 6 s at 256)."""
    s = serve(http={"read_header_timeout": "60s"}, preexec_fn=_limit(limit, limit))
    assert proc_nofile(s.proc.pid) == (limit, limit)
    lowered = re.search(r"otlp/http 4096 -> (\d+)", s.text())
    assert lowered is not None, s.text()
    cap = int(lowered.group(1))
    socks: list[socket.socket] = []
    for _ in range(flood):
        try:
            socks.append(connect(s.http_port))
        except OSError:
            pass  # a full backlog: refused by the kernel, also fine
    wait_for(lambda: s.metric(OPEN) == cap, what=f"{cap} connections held")
    try:
        assert s.post()[0] == 503
    except ConnectionError:
        pass  # the refusal slots are held by the flood too: closed at once, a clean refusal as well
    time.sleep(REFUSAL_TIMEOUT + 0.5)  # flood sockets in refusal slots are closed after their header timeout
    status, headers = s.post()
    assert status == 503 and headers["retry-after"] == "1"
    assert s.metric(OPEN) == cap and s.metric(REFUSED) >= flood - cap
    assert s.health() == 200
    raw_grpc = [connect(s.grpc_port) for _ in range(60)]
    time.sleep(0.5)
    assert sum(closed_by_peer(x) for x in raw_grpc) >= 60 - cap  # over grpc.max_allowed_incoming_connections
    for x in raw_grpc:
        x.close()
    channel = grpc.insecure_channel(f"{LOOPBACK}:{s.grpc_port}")
    export: Any = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    assert export(PAYLOAD, timeout=10) == b""
    channel.close()
    for sock in socks:
        sock.close()
    wait_for(lambda: s.metric(OPEN) == 0, what="flood gone")
    assert s.post()[0] == 200
    text = s.text()
    assert "Too many open files" not in text
    log_sanity(text, max_lines=12)


def test_accept_out_of_descriptors_logged_once_per_interval(tmp_path: Path) -> None:
    """Scenario: a listening asyncio server (the handler `serve` installs) in a process whose descriptor limit is
    exhausted by held connections; clients keep connecting for 3 s. Guarantees: EMFILE in accept() is counted
    and logged once per interval with a count, not as a traceback per attempt (asyncio's default)."""
    script = tmp_path / "emfile.py"
    script.write_text(textwrap.dedent("""
        import asyncio, logging, resource, sys
        from tailsample.receivers.connections import ListenerMetrics, install_accept_error_handler
        from tailsample.collector.metrics import Registry, parse_text
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
        async def main():
            registry = Registry()
            install_accept_error_handler(asyncio.get_running_loop(), ListenerMetrics(registry))
            held = []
            class Hold(asyncio.Protocol):
                def connection_made(self, t): held.append(t)
            server = await asyncio.get_running_loop().create_server(Hold, "127.0.0.1", 0, backlog=200)
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.sleep(5)
            errors = sum(v for k, v in parse_text(registry.render()).items()
                         if k.startswith("tailsample_listener_accept_errors_total"))
            print("held", len(held), "errors", int(errors), flush=True)
        asyncio.run(main())
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    clients: list[socket.socket] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(clients) < 150:
        try:
            clients.append(socket.create_connection((LOOPBACK, port), timeout=1))
        except OSError:
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=30)
    for c in clients:
        c.close()
    held, errors = int(out.split()[1]), int(out.split()[3])
    text = err.decode()
    assert held < 48 and errors >= 2, (out, text)
    assert "Traceback" not in text and "Too many open files" in text
    assert text.count("accept() failed") <= 2, text  # one line per 10 s interval, with the count


# ---- slow clients ---------------------------------------------------------------------------------------------

def test_slowloris_slow_body_and_idle_connections_closed_by_the_timeouts(serve: Callable[..., Serve]) -> None:
    """Scenario: read_header_timeout 1s, read_timeout 2s, idle_timeout 1.5s; 30 clients trickle their headers a
    byte every 0.25 s, one connects and says nothing, one sends a body a byte every 0.1 s, one keeps its
    connection after a request. Guarantees: the header tricklers and the silent one are closed about 1 s in; the
    slow body is answered 408 about 2 s in and closed; the idle one is closed about 1.5 s after its answer; a
    normal client is served throughout; each is counted; the log stays short."""
    s = serve(http={"read_header_timeout": "1s", "read_timeout": "2s", "idle_timeout": "1500ms"})
    start = time.monotonic()
    loris = [connect(s.http_port) for _ in range(30)]
    silent = connect(s.http_port)
    for sock in loris:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    closed_at: dict[int, float] = {}
    while len(closed_at) < len(loris) and time.monotonic() - start < 6:
        for i, sock in enumerate(loris):
            if i in closed_at:
                continue
            try:
                sock.sendall(b"X")
            except OSError:
                closed_at[i] = time.monotonic() - start
                continue
            if closed_by_peer(sock):
                closed_at[i] = time.monotonic() - start
        time.sleep(0.25)
    assert len(closed_at) == 30, f"{30 - len(closed_at)} header tricklers still open after 6 s"
    assert all(0.8 <= t <= 3.0 for t in closed_at.values()), sorted(closed_at.values())
    assert closed_by_peer(silent, wait=0.5)
    assert s.post()[0] == 200

    # a body trickled a byte every 0.1 s: answered 408 at read_timeout, then closed
    slow = connect(s.http_port)
    t0 = time.monotonic()
    slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(PAYLOAD))
    answer = b""
    slow.settimeout(0.1)
    for byte in PAYLOAD:
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            break
        try:
            answer += slow.recv(4096)
            if answer:
                break
        except TimeoutError:
            pass
        if time.monotonic() - t0 > 6:
            break
    elapsed = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 <= elapsed <= 4.0, elapsed
    assert closed_by_peer(slow, wait=2.0)

    # a kept-alive connection left idle after its request: closed at idle_timeout
    keep = http.client.HTTPConnection(LOOPBACK, s.http_port, timeout=5)
    keep.request("POST", "/v1/traces", PAYLOAD, {"Content-Type": "application/x-protobuf"})
    assert keep.getresponse().read() == b""
    assert keep.sock is not None
    t1 = time.monotonic()
    assert closed_by_peer(keep.sock, wait=4.0)
    assert 1.2 <= time.monotonic() - t1 <= 3.5
    keep.close()

    m = s.metrics()
    assert m[HEADER_TIMEOUTS] >= 31 and m[READ_TIMEOUTS] == 1
    assert m['tailsample_receiver_rejected_requests_total{receiver="otlp",transport="http",reason="timeout"}'] == 1
    log_sanity(s.text(), max_lines=12)


# ---- aborted uploads ------------------------------------------------------------------------------------------

def abort_upload(port: int, rng: random.Random) -> None:
    """Headers, part of the body, then gone: a FIN, or a reset (SO_LINGER 0); length-delimited or chunked."""
    sock = connect(port)
    chunked = rng.random() < 0.3
    body = rng.randbytes(rng.randrange(1, 4096))
    if chunked:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % 100_000 + body)
    else:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 100000\r\n\r\n" + body)
    if rng.random() < 0.5:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_aborted_uploads_are_counted_and_the_log_stays_bounded(serve: Callable[..., Serve]) -> None:
    """Scenario: 600 uploads cut mid-body (FIN or reset, Content-Length or chunked), as the issue's 3,000 that
    wrote 3.84 MB of ERROR tracebacks. Guarantees: each is counted in tailsample_receiver_aborted_requests_total;
    the log has no traceback and at most a line per interval; the service goes on serving."""
    s = serve()
    rng = random.Random(18)
    for _ in range(600):
        abort_upload(s.http_port, rng)
    wait_for(lambda: s.metric(ABORTED) == 600, timeout=20, what="600 aborted uploads counted")
    assert s.post()[0] == 200 and s.health() == 200
    text = s.text()
    assert text.count("was not read whole") <= 2
    assert len(text.encode()) < 8_000
    log_sanity(text, max_lines=12)


# ---- the soak -------------------------------------------------------------------------------------------------

SOAK_SECONDS = float(os.environ.get("TAILSAMPLE_SOAK_SECONDS", "40"))


class Hostile:
    """Threads doing what a hostile or broken client does until `stop` is set: idle sockets held (re-opened when
    the server closes them), headers trickled, bodies trickled, uploads aborted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=f, daemon=True) for f in
                        (self._idle, self._loris, self._slow_body, self._slow_body, self._abort)]

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _idle(self) -> None:
        socks: list[socket.socket] = []
        while not self.stop.is_set():
            for x in [x for x in socks if closed_by_peer(x)]:
                x.close()
                socks.remove(x)
            while len(socks) < 100:
                socks.append(connect(self.port))
                self._count("idle")
            self.stop.wait(0.2)
        for x in socks:
            x.close()

    def _loris(self) -> None:
        socks: list[socket.socket] = []
        while not self.stop.is_set():
            alive = []
            for x in socks:
                try:
                    x.sendall(b"X")
                    alive.append(x)
                except OSError:
                    x.close()
            socks = alive
            while len(socks) < 20:
                x = connect(self.port)
                x.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
                socks.append(x)
                self._count("loris")
            self.stop.wait(0.3)
        for x in socks:
            x.close()

    def _slow_body(self) -> None:
        while not self.stop.is_set():
            x = connect(self.port)
            self._count("slow_body")
            x.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(PAYLOAD))
            try:
                for byte in PAYLOAD:
                    if self.stop.wait(0.2):
                        break
                    x.sendall(bytes([byte]))
            except OSError:
                pass
            x.close()

    def _abort(self) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            abort_upload(self.port, rng)
            self._count("aborted")
            self.stop.wait(0.05)

    def __enter__(self) -> Hostile:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def sdk_traffic(exporter: Any, stop: threading.Event, kept: dict[str, set[str]], counts: list[int],
                lock: threading.Lock) -> TracerProvider:
    """Traces of 4 spans through the real SDK until `stop`; every third one an error (kept by the policy)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    tracer = provider.get_tracer("soak")
    i = 0
    while not stop.is_set():
        ids = []
        with tracer.start_as_current_span(f"GET /item/{i}") as root:
            ids.append(root.get_span_context().span_id)
            for name in ("auth", "db.query", "render"):
                with tracer.start_as_current_span(name) as child:
                    ids.append(child.get_span_context().span_id)
                    if i % 3 == 0 and name == "db.query":
                        child.set_status(Status(StatusCode.ERROR, "boom"))
        with lock:
            counts[0] += 4
            if i % 3 == 0:
                kept[format(root.get_span_context().trace_id, "032x")] = {format(x, "016x") for x in ids}
        i += 1
        stop.wait(0.02)
    return provider


def test_soak_normal_clients_served_and_nothing_lost_among_hostile_ones(serve: Callable[..., Serve]) -> None:
    """Scenario: for TAILSAMPLE_SOAK_SECONDS (40 s by default), two real OpenTelemetry SDK pipelines (OTLP/HTTP
    and OTLP/gRPC exporters) send traces while other clients hold 100 idle sockets, trickle headers on 20 more,
    trickle bodies and abort uploads, against read_header_timeout 2s, read_timeout 4s and max_connections 300.
    Guarantees: every span the SDKs sent is accepted (no refusal), every error trace arrives whole at the backend
    (nothing lost, nothing split), the hostile clients are counted, and the log has no traceback."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    with sink() as backend:
        s = serve(http={"max_connections": 300, "read_header_timeout": "2s", "read_timeout": "4s",
                        "idle_timeout": "10s"}, backend=backend, decision_wait="1s")
        kept: dict[str, set[str]] = {}
        counts = [0]
        lock = threading.Lock()
        stop = threading.Event()
        providers: list[TracerProvider] = []
        exporters = [HttpExporter(endpoint=f"http://{LOOPBACK}:{s.http_port}/v1/traces", timeout=10),
                     GrpcExporter(endpoint=f"{LOOPBACK}:{s.grpc_port}", insecure=True, timeout=10)]

        def run(exporter: Any) -> None:
            providers.append(sdk_traffic(exporter, stop, kept, counts, lock))

        normal = [threading.Thread(target=run, args=(e,), daemon=True) for e in exporters]
        with Hostile(s.http_port) as hostile:
            for t in normal:
                t.start()
            time.sleep(SOAK_SECONDS)
            mid = s.metrics()  # under the hostile load: metrics answer, health too
            assert s.health() == 200
            stop.set()
            for t in normal:
                t.join(30)
        for p in providers:
            assert p.force_flush(20_000)
            p.shutdown()

        def accepted() -> float:
            m = s.metrics()
            return sum(v for k, v in m.items() if k.startswith("otelcol_receiver_accepted_spans_total"))

        wait_for(lambda: accepted() == counts[0], timeout=20, what=f"{counts[0]} SDK spans accepted")
        received: dict[str, set[str]] = defaultdict(set)

        def all_kept() -> bool:
            received.clear()
            for tid, sid, _, _ in backend.spans():
                received[tid].add(sid)
            return all(received.get(t) == ids for t, ids in kept.items())

        wait_for(all_kept, timeout=30, interval=0.5, what=f"{len(kept)} kept traces whole at the backend")
        assert len(backend.spans()) == sum(len(ids) for ids in received.values())  # no span twice
        assert set(received) == set(kept)  # only the error traces were kept
        m = s.metrics()
        assert sum(v for k, v in m.items() if k.startswith("otelcol_receiver_refused_spans_total")) == 0
        assert m[ABORTED] >= hostile.counts["aborted"] * 0.9
        assert m[HEADER_TIMEOUTS] >= hostile.counts["idle"] - 100
        assert m[READ_TIMEOUTS] >= 1 and mid[OPEN] <= 300
        assert len(kept) > 50 and counts[0] > 600
        print(f"soak {SOAK_SECONDS:g}s: {counts[0]} SDK spans accepted, {len(kept)} kept traces whole; hostile "
              f"{dict(hostile.counts)}; aborted {m[ABORTED]:g}, header timeouts {m[HEADER_TIMEOUTS]:g}, read "
              f"timeouts {m[READ_TIMEOUTS]:g}, open mid-run {mid[OPEN]:g}")
    log_sanity(s.text(), max_lines=40)


# ---- the pieces, alone ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("requested", "fixed", "limit", "expected"), [
    ({"a/grpc": 4096, "a/http": 4096}, 112, 1_048_576, {"a/grpc": 4096, "a/http": 4096}),  # fits: unchanged
    ({"a/grpc": 4096, "a/http": 4096}, 112, 256, {"a/grpc": 32, "a/http": 32}),  # 256 - (64 + 16) - 112 = 64, halved
    ({"a/grpc": 100, "a/http": 300}, 0, 1024, {"a/grpc": 100, "a/http": 300}),  # 400 <= 1024 - (102 + 64)
    ({"a/grpc": 1000, "a/http": 3000}, 0, 1024, {"a/grpc": 214, "a/http": 643}),  # in proportion, under 858
    ({"a/http": 50}, 500, 256, {"a/http": 1}),  # nothing left: one each, never 0 (0 would mean no cap)
    ({"a/http": 50}, 0, resource.RLIM_INFINITY, {"a/http": 50}),
], ids=["fits", "nofile-256", "fits-1024", "proportional", "starved", "unlimited"])
def test_connection_caps_fit_the_descriptor_limit(requested: dict[str, int], fixed: int, limit: int,
                                                  expected: dict[str, int]) -> None:
    assert fit_connection_caps(requested, fixed, limit) == expected
