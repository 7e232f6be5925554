"""As services: `tailsample serve` and an OpenTelemetry Collector (built with ocb) under the same OTLP/HTTP load.

    .venv/bin/python bench/services.py [--quick] [--json FILE] [--seconds 10] [--spans-per-payload 1000]
                                       [--protocol http|grpc] [--client raw|aiohttp]

`--protocol grpc` offers the same payloads over OTLP/gRPC (a grpcio aio client, one channel per generator
process, the raw request bytes sent as they are) to an `otlp` receiver on gRPC; the generator is then not
measured alone (the sink speaks HTTP only).

Both systems run the same collector YAML (`--print-config`): an `otlp` receiver on HTTP, `tail_sampling` with
the seed's policies (decision_wait 2s, num_traces 2,000,000), `batch` after it (8192 spans or 200 ms, the
collector's defaults), and an `otlp_http` exporter (compression none) to one shared sink (a small asyncio
HTTP server in its own process that parses what it receives and counts the spans). Each system is started as
its own process, fresh for every offered rate, and driven by the same paced open-loop generator (one process:
pre-built HTTP/1.1 requests written by asyncio Protocols over up to 64 keep-alive connections, one request
outstanding on each, statuses parsed; `--client aiohttp` for the earlier aiohttp one) with the same payloads
(bench/workloads.py: 1000 spans per request, 5 spans per trace; a trace can straddle two requests, and a run
ends on a trace boundary). The trace IDs are rewritten for each pass over the payload set (the pass number in
their first two bytes, in place in each payload's one buffer), so no trace ID repeats within a run.

A rate is *sustained* when, in that run:
  - every request was answered 200 within 10 s (no 429/503 refusal, no other status, no error or timeout);
  - the server kept up: its backlog did not grow (the least-squares slope of answer latency over the run,
    1 - answered/offered for a server that falls behind, is at most 1 %), and the generator kept to its
    schedule (p99 send lag <= 100 ms; otherwise the run is reported as generator-limited);
  - after the decision wait, what it exported is what its own policies kept (its Prometheus metrics): the
    receiver counted every answered span and refused none, every trace was received and decided, none evicted
    early, its exporter sent `sampled traces x 5` spans with no send or enqueue failure, and the sink received
    exactly that many.
Rates are stepped up (25k, 50k, 100k, 200k, 300k, 400k, 600k, 800k, 1M, ... 3M spans/s) until one fails twice (a
failed rate is retried once: the machine is shared), then the gap is bisected `--refine` times (default 2).

CPU at 50k spans/s: the server process's CPU seconds per second (/proc/<pid>/stat, user + system, all threads)
from decision_wait + 1.5 s after the first request to the last (ingest, decisions and exports in steady state),
and the CPU per span from the first request until the exports were done; peak RSS is VmHWM after that run.

The generator is first stepped up against the sink alone (bytes discarded unparsed): the highest rate it
offers on schedule is reported, and rates above it are not tried. The generator, the sink and the server share
the machine's cores. Method and caveats: bench/README.md, "As services".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import workloads

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "python" / "tailsample" / "data" / "seed-config.yaml"
RATES = (25_000, 50_000, 100_000, 200_000, 300_000, 400_000, 600_000, 800_000, 1_000_000, 1_250_000,
         1_600_000, 2_000_000, 2_500_000, 3_000_000)
QUICK_RATES = (25_000, 50_000, 200_000)
CPU_RATE = 50_000
SPANS_PER_TRACE = 5
DECISION_WAIT = 2.0
PAYLOAD_SET_SPANS = 200_000
KEEP_UP = 0.99


# ---- small helpers -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return 0.0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """A Prometheus text page as (name, labels, value) samples."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in rest.rstrip("}").split('",'):
            if "=" in part:
                k, _, v = part.partition("=")
                labels[k.strip(",")] = v.strip('"')
        out.append((name, labels, float(value)))
    return out


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the series of `name` (with or without the counter suffix `_total`) matching `labels`."""
    return sum(v for n, lab, v in samples if n in (name, name + "_total")
               and all(lab.get(k) == want for k, want in labels.items()))


# ---- the sink ----------------------------------------------------------------------------------------------------

class SinkStats:
    def __init__(self) -> None:
        self.requests = self.spans = self.bytes = 0
        self.discarded_requests = self.discarded_bytes = 0
        self.bad_requests = 0


class SinkProtocol(asyncio.Protocol):
    """A minimal HTTP/1.1 server (keep-alive, Content-Length or chunked bodies, gzip) answering 200 to every POST.

    POST /v1/traces: the body is parsed as an ExportTraceServiceRequest and its spans counted.
    POST /discard: the body is counted in bytes, not parsed (to measure the load generator alone).
    GET /stats: the counters as JSON.
    """

    OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, stats: SinkStats) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.head: tuple[str, str, dict[str, str]] | None = None
        self.body: list[bytes] = []
        self.need = 0
        self.got = 0
        self.chunked = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.head is not None and not self.chunked and not self.buf:  # the fast path: a body arriving
            take = min(len(data), self.need - self.got)
            self.body.append(data[:take] if take < len(data) else data)
            self.got += take
            data = data[take:]
            if self.got < self.need:
                return
            self._complete()
        self.buf += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            self.head = (method, path, headers)
            self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            self.need, self.got, self.body = (0 if self.chunked else int(headers.get("content-length", "0"))), 0, []
            if not self.chunked and self.need == 0:
                self._complete()
            return True
        if self.chunked:
            chunk = chunk_at(self.buf)
            if chunk is None:
                return False
            start, size = chunk
            if size == 0:  # no trailers expected
                del self.buf[:start + 2]
                self._complete()
                return True
            self.body.append(bytes(self.buf[start:start + size]))
            self.got += size
            del self.buf[:start + size + 2]
            return True
        take = min(len(self.buf), self.need - self.got)
        if take:
            self.body.append(bytes(self.buf[:take]))
            del self.buf[:take]
            self.got += take
        if self.got < self.need:
            return False
        self._complete()
        return True

    def _complete(self) -> None:
        assert self.head is not None and self.transport is not None
        method, path, headers = self.head
        self.head = None
        s = self.stats
        if method == "GET" and path.startswith("/stats"):
            body = json.dumps(vars(s)).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
            return
        if path.startswith("/discard"):
            s.discarded_requests += 1
            s.discarded_bytes += self.got
        else:
            payload = b"".join(self.body)
            try:
                if headers.get("content-encoding", "").lower() == "gzip":
                    payload = zlib.decompress(payload, 31)
                req = ExportTraceServiceRequest.FromString(payload)
                s.spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                s.requests += 1
                s.bytes += len(payload)
            except Exception:
                s.bad_requests += 1
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
        self.body = []
        self.transport.write(self.OK)


def chunk_at(buf: bytearray) -> tuple[int, int] | None:
    """A chunked body's next chunk in `buf`: where its data starts and its size; None until all of it is there."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    size = int(bytes(buf[:end]).split(b";")[0], 16)
    if len(buf) < end + 2 + size + 2:
        return None
    return end + 2, size


def run_sink(port: int) -> None:
    async def main() -> None:
        stats = SinkStats()
        server = await asyncio.get_running_loop().create_server(lambda: SinkProtocol(stats), "127.0.0.1", port,
                                                                backlog=1024)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


# ---- the payloads and the generator ------------------------------------------------------------------------------

@dataclass
class Payload:
    raw: bytes
    spans: int
    id_offsets: np.ndarray  # offset of every span's trace ID in `raw`


def prepare(spans_per_payload: int, total_spans: int = PAYLOAD_SET_SPANS) -> list[Payload]:
    """The workload's payloads with the offset of every trace ID (the bytes are the workload file's)."""
    out = []
    for raw in workloads.load(spans_per_payload, SPANS_PER_TRACE, total_spans):
        offsets, pos = [], 0
        req = ExportTraceServiceRequest.FromString(raw)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    pos = raw.index(b"\x0a\x10" + span.trace_id, pos) + 2  # field 1, 16 bytes
                    offsets.append(pos)
        out.append(Payload(raw, len(offsets), np.array(offsets, dtype=np.intp)))
    return out


def pass_payload(p: Payload, pass_no: int) -> bytearray:
    """A copy of the payload whose trace IDs start with the pass number (2 bytes): unique within a run."""
    buf = bytearray(p.raw)
    view = np.frombuffer(buf, dtype=np.uint8)
    view[p.id_offsets] = (pass_no >> 8) & 0xFF
    view[p.id_offsets + 1] = pass_no & 0xFF
    return buf


@dataclass
class LoadSpec:
    url: str
    rate: float  # spans/s offered, all generator processes together
    seconds: float
    start: float  # time.time() of the first request
    timeout: float = 10.0
    connections: int = 64
    client: str = "raw"  # --client: "raw" (pre-built requests on asyncio Protocols) or "aiohttp" (the old one)


OTLP_HEADERS = {"Content-Type": "application/x-protobuf"}
PROTOCOL = "http"  # --protocol: the receiver the generator sends to
CLIENT = "raw"  # --client: the OTLP/HTTP client of the generator
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def call_grpc(export: Any, body: bytes | bytearray, timeout: float) -> int:
    """One OTLP/gRPC Export: 200 for OK, 503 for RESOURCE_EXHAUSTED/UNAVAILABLE (a refusal), -1 on a timeout,
    1000 + the code for any other status, -2 on another client error."""
    import grpc

    try:
        await export(bytes(body), timeout=timeout)
        return 200
    except grpc.aio.AioRpcError as e:
        code = e.code()
        if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            return 503
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return -1
        return 1000 + int(code.value[0])
    except Exception:
        return -2


async def post(session: aiohttp.ClientSession, url: str, body: bytes | bytearray,
               timeout: aiohttp.ClientTimeout) -> int:
    """POST one OTLP/HTTP protobuf request: its status, -1 on a timeout, -2 on another client error."""
    try:
        async with session.post(url, data=body, headers=OTLP_HEADERS, timeout=timeout) as r:
            await r.read()
            return r.status
    except asyncio.TimeoutError:
        return -1
    except aiohttp.ClientError:
        return -2


async def _offer(spec: LoadSpec, data: list[Payload], worker: int, workers: int) -> dict[str, Any]:
    spans_per_request = data[0].spans
    interval = spans_per_request / spec.rate
    n_requests = ends_on_trace_boundary(data, max(1, round(spec.seconds / interval)))
    records: list[tuple[float, float, float, int, int]] = []  # due, sent, answered, status, spans
    timeout = aiohttp.ClientTimeout(total=spec.timeout)

    async def send(session: aiohttp.ClientSession, body: bytearray, spans: int, due: float) -> None:
        sent = time.time()
        status = await post(session, spec.url, body, timeout)
        records.append((due, sent, time.time(), status, spans))

    if spec.url.startswith("grpc://"):
        return await _offer_grpc(spec, data, worker, workers, records, interval, n_requests)
    if spec.client == "raw":
        return await _offer_raw(spec, data, worker, workers, records, interval, n_requests)
    connector = aiohttp.TCPConnector(limit=spec.connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("Accept-Encoding",)) as session:
        cores = await _paced(spec, data, worker, workers, interval, n_requests,
                             lambda body, spans, due: send(session, body, spans, due))
    return {"records": records, "cores": cores, "n_requests": n_requests, "interval": interval}


def ends_on_trace_boundary(data: list[Payload], n_requests: int) -> int:
    """The least request count from `n_requests` whose spans are whole traces: a trace can straddle two requests
    (512 spans hold 102.4 traces of 5), and one cut at the end of a run would be half sent, which the checks of
    what was kept (sampled traces x 5 spans) would count as a loss."""
    per_pass = sum(p.spans for p in data)

    def spans(n: int) -> int:
        return (n // len(data)) * per_pass + sum(p.spans for p in data[:n % len(data)])

    return next((n for n in range(n_requests, n_requests + len(data) * SPANS_PER_TRACE + 1)
                 if spans(n) % SPANS_PER_TRACE == 0), n_requests)


async def _schedule(spec: LoadSpec, worker: int, workers: int, interval: float,
                    n_requests: int) -> AsyncIterator[tuple[int, float]]:
    """This worker's requests (every `workers`-th from `worker`) with their due times, each at its due time."""
    for i in range(worker, n_requests, workers):
        due = spec.start + i * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i, due


async def _paced(spec: LoadSpec, data: list[Payload], worker: int, workers: int, interval: float, n_requests: int,
                 send: Callable[[bytearray, int, float], Coroutine[Any, Any, None]]) -> float:
    """This worker's share of the requests, each sent at its due time without waiting for the answers before;
    returns the cores the process used meanwhile."""
    tasks = set()
    cpu0, t0 = _cpu_self(), time.time()
    async for i, due in _schedule(spec, worker, workers, interval, n_requests):
        p = data[i % len(data)]
        task = asyncio.create_task(send(pass_payload(p, i // len(data)), p.spans, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return (_cpu_self() - cpu0) / max(1e-9, time.time() - t0)


async def _offer_grpc(spec: LoadSpec, data: list[Payload], worker: int, workers: int,
                      records: list[tuple[float, float, float, int, int]], interval: float,
                      n_requests: int) -> dict[str, Any]:
    """The same paced schedule over OTLP/gRPC: one grpcio aio channel, calls as concurrent streams."""
    from grpc import aio

    target = spec.url.removeprefix("grpc://")
    async with aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        export = channel.unary_unary(GRPC_EXPORT)  # bytes in, bytes out: no protobuf types

        async def send(body: bytearray, spans: int, due: float) -> None:
            sent = time.time()
            status = await call_grpc(export, body, spec.timeout)
            records.append((due, sent, time.time(), status, spans))

        cores = await _paced(spec, data, worker, workers, interval, n_requests, send)
    return {"records": records, "cores": cores, "n_requests": n_requests, "interval": interval}


# ---- the raw HTTP/1.1 client: pre-built requests over asyncio Protocols ------------------------------------------

class _Request:
    """One request in flight or waiting for a connection (payload `index` in pass `pass_no`); its record is
    (due, sent, answered, status, spans)."""

    __slots__ = ("deadline", "due", "index", "pass_no", "sent", "spans")

    def __init__(self, index: int, pass_no: int, spans: int, due: float, sent: float, deadline: float) -> None:
        self.index, self.pass_no, self.spans, self.due, self.sent = index, pass_no, spans, due, sent
        self.deadline = deadline


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request outstanding (no pipelining): writes the
    pre-built request, reads the status line and skips the body (Content-Length or chunked)."""

    def __init__(self, client: RawHttpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None
        self.buf = bytearray()
        self.status = 0
        self.need = -1  # body bytes still to skip; -1 while reading the head, -2 while reading chunks
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # room for a whole request: one send() per request, no copy into the transport
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)

    def send(self, req: _Request) -> None:
        assert self.transport is not None
        self.request, self.need, self.buf = req, -1, bytearray()
        # a memoryview: what the socket does not take at once is copied into the transport's buffer once, so the
        # payload's buffer may be rewritten for another pass as soon as this returns
        self.transport.write(memoryview(self.client.wires.get(req.index, req.pass_no)))

    def data_received(self, data: bytes) -> None:
        if self.request is None:  # nothing asked: a server talking out of turn; drop the connection
            self.abort()
            return
        if self.need > 0 and not self.buf:  # the fast path: the rest of a Content-Length body
            if len(data) <= self.need:
                self.need -= len(data)
                if self.need == 0:
                    self._done()
                return
            data = data[self.need:]
            self.need = 0
            self._done()
            if self.request is None and data:
                self.abort()
                return
        self.buf += data
        while self.request is not None and self._step():
            pass

    def _step(self) -> bool:
        if self.need == -1:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(self.buf[:end]).split(b"\r\n")
            del self.buf[:end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                self._fail(-2)
                return False
            self.status = int(parts[1])
            length, chunked = 0, False
            self.close_after = parts[0] == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    self.close_after = value.strip().lower() == b"close"
            if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
                return True
            self.need = -2 if chunked else length
            if self.need == 0:
                self._done()
            return True
        if self.need == -2:  # chunked: skip chunks up to the last one (no trailers expected)
            chunk = chunk_at(self.buf)
            if chunk is None:
                return False
            start, size = chunk
            del self.buf[:start + size + 2]
            if size == 0:
                self._done()
            return True
        take = min(len(self.buf), self.need)
        del self.buf[:take]
        self.need -= take
        if self.need:
            return False
        self._done()
        return True

    def _done(self) -> None:
        req, self.request, self.need = self.request, None, -1
        assert req is not None
        self.client.answered(self, req, self.status)
        if self.close_after:
            self.abort()

    def _fail(self, status: int) -> None:
        req, self.request = self.request, None
        if req is not None:
            self.client.record(req, status)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)
        if self.request is not None:
            self._fail(-2)


class RawHttpClient:
    """POSTs pre-built HTTP/1.1 requests over up to `limit` keep-alive connections, each with one request
    outstanding; a request that finds every connection busy waits for one (its latency counts the wait, as
    aiohttp's pool does). Each request ends in one record: its status, -1 after `timeout` s, -2 on an error."""

    def __init__(self, host: str, port: int, wires: _Wires, limit: int, timeout: float,
                 records: list[tuple[float, float, float, int, int]]) -> None:
        self.host, self.port, self.limit, self.timeout, self.records = host, port, limit, timeout, records
        self.wires = wires
        self.idle: list[_HttpConnection] = []
        self.busy: set[_HttpConnection] = set()
        self.opening = 0
        self.waiting: collections.deque[_Request] = collections.deque()
        self.outstanding = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def submit(self, index: int, pass_no: int, spans: int, due: float) -> None:
        """Send payload `index` of pass `pass_no` now on an idle connection, or queue it (its bytes are written
        for its pass when a connection takes it: no copy)."""
        sent = time.time()
        self.outstanding += 1
        self.drained.clear()
        req = _Request(index, pass_no, spans, due, sent, sent + self.timeout)
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(req)
            return
        self.waiting.append(req)
        if self.opening + len(self.busy) < self.limit:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _HttpConnection(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            if self.waiting:
                self.record(self.waiting.popleft(), -2)
            return
        self.opening -= 1
        self._next(conn)

    def _next(self, conn: _HttpConnection) -> None:
        if self.waiting:
            self.busy.add(conn)
            conn.send(self.waiting.popleft())
        else:
            self.busy.discard(conn)
            self.idle.append(conn)

    def answered(self, conn: _HttpConnection, req: _Request, status: int) -> None:
        self.record(req, status)
        if not conn.close_after:
            self._next(conn)

    def lost(self, conn: _HttpConnection) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.waiting and self.opening + len(self.busy) < self.limit:  # replace it for the queued requests
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    def record(self, req: _Request, status: int) -> None:
        self.records.append((req.due, req.sent, time.time(), status, req.spans))
        self.outstanding -= 1
        if not self.outstanding:
            self.drained.set()

    async def _sweep(self) -> None:
        """Time out late requests (every 50 ms: cheaper than a timer per request); a connection whose answer is
        late is closed, as its answer could no longer be told from the next one's."""
        while True:
            await asyncio.sleep(0.05)
            now = time.time()
            while self.waiting and self.waiting[0].deadline <= now:
                self.record(self.waiting.popleft(), -1)
            for conn in [c for c in self.busy if c.request is not None and c.request.deadline <= now]:
                conn._fail(-1)

    async def close(self) -> None:
        await self.drained.wait()
        self.sweeper.cancel()
        for conn in [*self.idle, *self.busy]:
            conn.abort()


class _Wires:
    """The generator's request bytes: per payload one buffer (the HTTP head, then the body) whose trace IDs are
    rewritten in place when the pass changes, so a request costs no copy of its body."""

    def __init__(self, data: list[Payload], head: Callable[[int], bytes]) -> None:
        self.bufs: list[bytearray] = []
        self.stores: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # view, high-byte and low-byte offsets
        self.passes = [-1] * len(data)  # the workload file's own IDs are no pass: pass 0 rewrites them too
        for p in data:
            h = head(len(p.raw))
            buf = bytearray(h + p.raw)
            offsets = p.id_offsets + len(h)
            self.bufs.append(buf)
            self.stores.append((np.frombuffer(buf, dtype=np.uint8), offsets, offsets + 1))

    def get(self, index: int, pass_no: int) -> bytearray:
        """Payload `index` with the trace IDs of pass `pass_no` (as `pass_payload`), behind its HTTP head."""
        if self.passes[index] != pass_no:
            view, high, low = self.stores[index]
            view[high] = (pass_no >> 8) & 0xFF
            view[low] = pass_no & 0xFF
            self.passes[index] = pass_no
        return self.bufs[index]


async def _offer_raw(spec: LoadSpec, data: list[Payload], worker: int, workers: int,
                     records: list[tuple[float, float, float, int, int]], interval: float,
                     n_requests: int) -> dict[str, Any]:
    """The paced schedule over the raw HTTP/1.1 client: no task, future or timer per request."""
    url = urllib.parse.urlsplit(spec.url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path or "/"
    wires = _Wires(data, lambda n: (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                                    f"Content-Type: application/x-protobuf\r\nContent-Length: {n}\r\n\r\n").encode())
    client = RawHttpClient(host, port, wires, spec.connections, spec.timeout, records)
    cpu0, t0 = _cpu_self(), time.time()
    async for i, due in _schedule(spec, worker, workers, interval, n_requests):
        index = i % len(data)
        client.submit(index, i // len(data), data[index].spans, due)
    await client.close()
    cores = (_cpu_self() - cpu0) / max(1e-9, time.time() - t0)
    return {"records": records, "cores": cores, "n_requests": n_requests, "interval": interval}


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(spec: LoadSpec, data: list[Payload], worker: int, workers: int, conn: Any) -> None:
    conn.send(asyncio.run(_offer(spec, data, worker, workers)))
    conn.close()


@dataclass
class LoadResult:
    offered_rate: float
    requests: int
    sent_spans: int
    ok_spans: int
    refused_requests: int  # 429, 503
    other_status_requests: int
    timeouts: int
    errors: int
    answered_rate: float  # spans/s of the 200s, from the first answer to the last (information)
    latency_slope: float  # least-squares slope of answer latency over the run: the backlog's growth, s per s
    send_lag_p99_ms: float  # how late the generator sent, behind its schedule
    send_lag_max_ms: float
    latency_p50_ms: float  # from the scheduled time to the answer
    latency_p99_ms: float
    latency_max_ms: float
    generator_cpu_per_second: float
    window_seconds: float
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.requests > 0 and self.ok_spans == self.sent_spans

    @property
    def generator_kept_schedule(self) -> bool:
        return self.send_lag_p99_ms <= 100

    @property
    def sustained_rate(self) -> float:
        """The server's throughput estimated from the growth of its backlog: a server answering at C < R spans/s
        falls behind by (1 - C/R) s each second, so answer latency grows with that slope; a transient stall
        (a GC, a decision tick) at the end of the run moves it little."""
        return self.offered_rate * (1 - max(0.0, self.latency_slope))

    @property
    def kept_up(self) -> bool:
        return self.sustained_rate >= KEEP_UP * self.offered_rate


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def offer_load(url: str, data: list[Payload], rate: float, seconds: float, workers: int = 1,
               on_started: Any = None) -> LoadResult:
    """Offer `rate` spans/s for `seconds` from `workers` processes (forked: the payloads are shared), paced."""
    ctx = multiprocessing.get_context("fork")
    spec = LoadSpec(url, rate, seconds, time.time() + 0.5, client=CLIENT)
    procs, pipes = [], []
    for w in range(workers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(spec, data, w, workers, child), daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        pipes.append(parent)
    if on_started is not None:
        on_started(spec.start)
    results = [p.recv() for p in pipes]
    for proc in procs:
        proc.join(30)
    records = sorted(r for res in results for r in res["records"])
    interval = results[0]["interval"]
    window = results[0]["n_requests"] * interval
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r[3])] = statuses.get(str(r[3]), 0) + 1
    ok = [r for r in records if r[3] == 200]
    ok_spans = sum(r[4] for r in ok)
    if len(ok) >= 2:
        answers = sorted(r[2] for r in ok)
        answered_rate = ok_spans / (answers[-1] - answers[0] + interval)
    else:
        answered_rate = 0.0
    lags = [(r[1] - r[0]) * 1e3 for r in records]
    slope = float(np.polyfit([r[0] for r in ok], [r[2] - r[0] for r in ok], 1)[0]) if len(ok) >= 3 else math.inf
    lat = [(r[2] - r[0]) * 1e3 for r in ok]
    return LoadResult(
        offered_rate=rate, requests=len(records), sent_spans=sum(r[4] for r in records), ok_spans=ok_spans,
        refused_requests=sum(1 for r in records if r[3] in (429, 503)),
        other_status_requests=sum(1 for r in records if r[3] > 0 and r[3] not in (200, 429, 503)),
        timeouts=sum(1 for r in records if r[3] == -1), errors=sum(1 for r in records if r[3] == -2),
        answered_rate=answered_rate, latency_slope=slope, send_lag_p99_ms=_pct(lags, 0.99),
        send_lag_max_ms=max(lags, default=math.nan),
        latency_p50_ms=_pct(lat, 0.5), latency_p99_ms=_pct(lat, 0.99), latency_max_ms=max(lat, default=math.nan),
        generator_cpu_per_second=sum(r["cores"] for r in results), window_seconds=window, statuses=statuses)


# ---- the systems -------------------------------------------------------------------------------------------------

def collector_config(http_port: int, metrics_port: int, sink_port: int) -> dict[str, Any]:
    """The one configuration both systems run (the collector's format)."""
    ts = yaml.safe_load(SEED.read_text())["processors"]["tail_sampling"]
    ts["decision_wait"] = f"{DECISION_WAIT:g}s"
    ts["num_traces"] = 2_000_000  # > traces in flight at 2M spans/s (400k new traces/s x ~3 s)
    if NUM_SHARDS is not None:  # --num-shards: the same for both systems (the collector's key since v0.159)
        ts["num_shards"] = NUM_SHARDS
    return {
        "receivers": {"otlp": {"protocols": {PROTOCOL: {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"tail_sampling": ts, "batch": {"send_batch_size": 8192, "timeout": "200ms"}},
        "exporters": {"otlp_http": {"endpoint": f"http://127.0.0.1:{sink_port}", "compression": "none"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling", "batch"],
                                     "exporters": ["otlp_http"]}},
            "telemetry": {"metrics": {"level": "normal", "readers": [
                {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}]}},
        },
    }


def otelcol_binary() -> Path:
    from tools import gotools

    return gotools.otelcol()


SYSTEMS = ("tailsample", "otelcol")
OTELCOL_ENV: dict[str, str] = {}  # --otelcol-env (e.g. GOGC=400): defaults unless asked
NUM_SHARDS: int | None = None  # --num-shards: tail_sampling.num_shards for both systems; the default (1) unless asked


class Server:
    """One system's process with the shared config, on fresh ports."""

    def __init__(self, system: str, sink_port: int, tmp: Path,
                 adjust: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`adjust`, when given, edits the configuration (a dict in the collector's format) before it is written."""
        self.system = system
        self.http_port, self.metrics_port = free_port(), free_port()
        self.config = collector_config(self.http_port, self.metrics_port, sink_port)
        if adjust is not None:
            adjust(self.config)
        cfg = tmp / f"{system}.yaml"
        cfg.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ)
        if system == "tailsample":
            cmd = [sys.executable, "-m", "tailsample", "serve", "--config", str(cfg), "--log-level", "warning"]
        else:
            cmd = [str(otelcol_binary()), "--config", str(cfg)]
            env.update(OTELCOL_ENV)
        self.log = tmp / f"{system}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.url = (f"grpc://127.0.0.1:{self.http_port}" if PROTOCOL == "grpc"
                    else f"http://127.0.0.1:{self.http_port}/v1/traces")
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{system} exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
            try:
                scrape(self.metrics_url)
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system} did not start: {self.log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        return service_counters(scrape(self.metrics_url))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


LAG_BUCKET = "decision_lag_le_"


def lag_buckets(s: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """tailsample's decision-lag histogram (`tailsample_decision_lag_seconds`, summed over pipelines), cumulative
    counts keyed `decision_lag_le_<bound>`; empty for a system without it (the otelcol)."""
    out: dict[str, float] = {}
    for name, labels, value in s:
        if name == "tailsample_decision_lag_seconds_bucket" and "le" in labels:
            key = LAG_BUCKET + labels["le"]
            out[key] = out.get(key, 0.0) + value
    return out


def lag_p99_ms(counters: dict[str, float]) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the 99th percentile of the decisions counted in
    `counters` (deltas of `lag_buckets` over a run); None without decisions or without the histogram."""
    buckets = sorted((float(k[len(LAG_BUCKET):]), v) for k, v in counters.items() if k.startswith(LAG_BUCKET))
    if not buckets or buckets[-1][1] <= 0:
        return None
    total_count = buckets[-1][1]
    return next(bound * 1e3 for bound, cumulative in buckets if cumulative >= 0.99 * total_count)


def service_counters(s: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """The counters both systems expose (the collector's names), and tailsample's decision-lag buckets, from one
    scrape."""
    return {**lag_buckets(s),
        "receiver_accepted_spans": total(s, "otelcol_receiver_accepted_spans", transport=PROTOCOL),
        "receiver_refused_spans": total(s, "otelcol_receiver_refused_spans", transport=PROTOCOL),
        "traces_received": total(s, "otelcol_processor_tail_sampling_new_trace_id_received"),
        "traces_sampled": total(s, "otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true"),
        "traces_not_sampled": total(s, "otelcol_processor_tail_sampling_global_count_traces_sampled",
                                    sampled="false"),
        "traces_dropped_too_early": total(s, "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early"),
        "exporter_sent_spans": total(s, "otelcol_exporter_sent_spans"),
        "exporter_send_failed_spans": total(s, "otelcol_exporter_send_failed_spans"),
        "exporter_enqueue_failed_spans": total(s, "otelcol_exporter_enqueue_failed_spans"),
        "exporter_queue_size": total(s, "otelcol_exporter_queue_size"),
    }


@dataclass
class Run:
    system: str
    rate: float
    seconds: float
    load: LoadResult
    server_cpu_steady: float  # cores, over the steady part of the run
    server_cpu_us_per_span: float  # all CPU from the first request until the exports were done, per span
    server_peak_rss_mib: float
    sink_cpu_per_second: float
    metrics: dict[str, float]
    sink_spans: int
    export_wait_seconds: float
    failures: list[str]
    generator_limited: bool
    decision_lag_p99_ms: float | None = None  # bucket bound; None for the otelcol (its timer is not exported so)

    @property
    def sustained(self) -> bool:
        return not self.failures and not self.generator_limited


def measure(system: str, rate: float, seconds: float, data: list[Payload], sink: Sink, tmp: Path,
            workers: int) -> Run:
    server = Server(system, sink.port, tmp)
    try:
        pid = server.proc.pid
        m0 = server.metrics()
        sink0 = sink.stats()
        sink_cpu0 = cpu_seconds(sink.proc.pid)
        marks: dict[str, float] = {}
        warm = min(DECISION_WAIT + 1.5, seconds / 2)

        def on_started(start: float) -> None:  # in this process, while the generator runs
            time.sleep(max(0.0, start - time.time()))
            marks["cpu_start"] = cpu_seconds(pid)
            time.sleep(max(0.0, start + warm - time.time()))
            marks["cpu_warm"], marks["t_warm"] = cpu_seconds(pid), time.time()

        load = offer_load(server.url, data, rate, seconds, workers, on_started)
        t_end = time.time()
        if server.proc.poll() is not None:
            raise ServerDied(f"{system} exited with {server.proc.returncode} during the run at {rate:,.0f} spans/s; "
                             f"its log ends with:\n{server.log.read_text()[-3000:]}")
        cpu_end = cpu_seconds(pid)
        steady = (cpu_end - marks["cpu_warm"]) / max(1e-9, t_end - marks["t_warm"])
        # the decisions and the exports: wait until every trace is decided and the sink has what was sent
        deadline = t_end + DECISION_WAIT + 20
        first_ready = None
        while True:
            try:
                now = server.metrics()
            except OSError:
                if server.proc.poll() is None:
                    raise
                raise ServerDied(f"{system} exited with {server.proc.returncode} after the run at {rate:,.0f} "
                                 f"spans/s; its log ends with:\n{server.log.read_text()[-3000:]}") from None
            m = {k: v - m0.get(k, 0.0) for k, v in now.items()}
            m["exporter_queue_size"] += m0["exporter_queue_size"]
            sink_spans = sink.stats()["spans"] - sink0["spans"]
            done = (m["traces_sampled"] + m["traces_not_sampled"] >= m["traces_received"]
                    and m["exporter_queue_size"] == 0 and sink_spans == m["exporter_sent_spans"]
                    and m["exporter_sent_spans"] >= m["traces_sampled"] * SPANS_PER_TRACE
                    and time.time() >= t_end + DECISION_WAIT)
            if done:
                if first_ready is None:
                    first_ready = time.time()
                elif time.time() - first_ready >= 0.5:  # stable
                    break
            else:
                first_ready = None
            if time.time() > deadline:
                break
            time.sleep(0.25)
        export_wait = time.time() - t_end
        cpu_total = cpu_seconds(pid) - marks["cpu_start"]
        rss = status_kib(pid, "VmHWM") / 1024
        sink_cpu = (cpu_seconds(sink.proc.pid) - sink_cpu0) / (time.time() - (t_end - load.window_seconds))
    finally:
        server.stop()

    failures = []
    if not load.clean:
        failures.append(f"not every request answered 200: {load.statuses}")
    generator_limited = not load.generator_kept_schedule
    if load.clean and not load.kept_up:
        failures.append(f"fell behind: its backlog grew {load.latency_slope * 1e3:.0f} ms per second "
                        f"(about {load.sustained_rate:,.0f} of {rate:,.0f} spans/s)")
    if m["receiver_accepted_spans"] != load.ok_spans:
        failures.append(f"receiver counted {m['receiver_accepted_spans']:,.0f} spans, the generator "
                        f"{load.ok_spans:,} answered 200")
    if m["receiver_refused_spans"]:
        failures.append(f"receiver refused {m['receiver_refused_spans']:,.0f} spans")
    if m["traces_received"] * SPANS_PER_TRACE != m["receiver_accepted_spans"]:
        failures.append(f"{m['traces_received']:,.0f} new traces for {m['receiver_accepted_spans']:,.0f} spans")
    decided = m["traces_sampled"] + m["traces_not_sampled"]
    if decided != m["traces_received"]:
        failures.append(f"decided {decided:,.0f} of {m['traces_received']:,.0f} traces")
    if m["traces_dropped_too_early"]:
        failures.append(f"{m['traces_dropped_too_early']:,.0f} traces evicted before their decision")
    if m["exporter_send_failed_spans"] or m["exporter_enqueue_failed_spans"]:
        failures.append(f"exporter failed {m['exporter_send_failed_spans']:,.0f} spans, could not enqueue "
                        f"{m['exporter_enqueue_failed_spans']:,.0f}")
    kept = m["traces_sampled"] * SPANS_PER_TRACE
    if not (kept == m["exporter_sent_spans"] == sink_spans):
        failures.append(f"kept {kept:,.0f} spans, exporter sent {m['exporter_sent_spans']:,.0f}, sink received "
                        f"{sink_spans:,}")
    return Run(system, rate, seconds, load, steady, cpu_total / max(1, load.ok_spans) * 1e6, rss, sink_cpu,
               m, sink_spans, export_wait, failures, generator_limited, lag_p99_ms(m))


class ServerDied(RuntimeError):
    pass


class Sink:
    """The sink, as its own process (this file, `--sink PORT`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--sink", str(self.port)])
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the sink did not start") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        return get_json(f"http://127.0.0.1:{self.port}/stats")  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---- the procedure -----------------------------------------------------------------------------------------------

def generator_capacity(data: list[Payload], sink: Sink, rates: list[int], seconds: float,
                       workers: int) -> dict[str, Any]:
    """The generator against the sink alone (bytes discarded unparsed), stepped up: the highest rate it offers
    on schedule, every request answered."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        for tries in range(2):  # a late rate is tried once more, as in the ladders: the machine is shared
            cpu0 = cpu_seconds(sink.proc.pid)
            load = offer_load(f"http://127.0.0.1:{sink.port}/discard", data, rate, seconds, workers)
            step = {"rate": rate, "kept_schedule": load.generator_kept_schedule and load.clean,
                    "send_lag_p99_ms": load.send_lag_p99_ms, "latency_p99_ms": load.latency_p99_ms,
                    "generator_cpu_per_second": load.generator_cpu_per_second,
                    "sink_cpu_per_second": (cpu_seconds(sink.proc.pid) - cpu0) / load.window_seconds}
            steps.append(step)
            log(f"  generator alone at {rate:,} spans/s: kept schedule {step['kept_schedule']}, send lag p99 "
                f"{load.send_lag_p99_ms:.0f} ms, {load.generator_cpu_per_second:.2f} cores (sink "
                f"{step['sink_cpu_per_second']:.2f}){'  (retry)' if tries else ''}")
            if step["kept_schedule"]:
                break
        if not step["kept_schedule"]:
            break
    ok = [st for st in steps if st["kept_schedule"]]
    return {"highest_rate": ok[-1]["rate"] if ok else 0, "tested_up_to": rates[-1],
            "limited": not steps or not steps[-1]["kept_schedule"], "generators": workers, "seconds": seconds,
            "steps": steps}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def describe(run: Run) -> str:
    verdict = ("sustained" if run.sustained else "GENERATOR-LIMITED" if run.generator_limited and not run.failures
               else "FAILED")
    text = (f"  {run.system:10s} {run.rate / 1e3:7,.0f}k spans/s: {verdict}; answered {run.load.ok_spans:,} spans, "
            f"backlog growth {run.load.latency_slope * 1e3:.0f} ms/s, latency p50/p99 "
            f"{run.load.latency_p50_ms:.0f}/{run.load.latency_p99_ms:.0f} ms, send lag p99 "
            f"{run.load.send_lag_p99_ms:.0f} ms; server CPU {run.server_cpu_steady:.2f} cores "
            f"({run.server_cpu_us_per_span:.2f} us/span), peak RSS {run.server_peak_rss_mib:.0f} MiB; generator "
            f"{run.load.generator_cpu_per_second:.2f} cores; "
            f"{'' if run.decision_lag_p99_ms is None else f'decision lag p99 <= {run.decision_lag_p99_ms:,.0f} ms; '}"
            f"kept {run.metrics['traces_sampled'] * SPANS_PER_TRACE:,.0f} spans, sink {run.sink_spans:,}")
    if run.failures:
        text += "\n      " + "\n      ".join(run.failures)
    return text


def ladder(system: str, rates: tuple[int, ...], args: argparse.Namespace, data: list[Payload], sink: Sink,
           tmp: Path, ceiling: float) -> tuple[list[Run], list[dict[str, Any]]]:
    """Step the rate up until it fails twice (or the generator cannot offer it); then bisect the gap."""
    runs: list[Run] = []
    deaths: list[dict[str, Any]] = []

    def attempt(rate: float) -> bool | None:  # True sustained, False failed, None generator-limited
        for tries in range(1 if args.quick else 2):
            try:
                run = measure(system, rate, args.seconds, data, sink, tmp, args.generators)
            except ServerDied as e:
                log(f"  {system} {rate / 1e3:7,.0f}k spans/s: FAILED, the server died: {e}")
                deaths.append({"rate": rate, "error": str(e)})
                continue
            runs.append(run)
            log(describe(run) + ("  (retry)" if tries else ""))
            if run.sustained:
                return True
        last = runs[-1] if runs and runs[-1].rate == rate else None
        return None if last is not None and last.generator_limited and not last.failures else False

    best, worst = 0.0, None
    for rate in rates:
        if rate > ceiling:
            log(f"  {system}: {rate:,} spans/s is above what the generator offers ({ceiling:,.0f}); stopping")
            break
        ok = attempt(rate)
        if ok:
            best = rate
            continue
        worst = rate
        break
    if worst is not None and best:
        lo, hi = best, worst
        for _ in range(args.refine):
            mid = round((lo + hi) / 2 / 5000) * 5000
            if mid in (lo, hi):
                break
            ok = attempt(mid)
            if ok:
                lo = best = mid
            elif ok is None:
                break
            else:
                hi = mid
    if not any(r.rate == CPU_RATE for r in runs):
        attempt(CPU_RATE)
    return runs, deaths


def summarize(system: str, runs: list[Run], deaths: list[dict[str, Any]]) -> dict[str, Any]:
    sustained = [r.rate for r in runs if r.sustained]
    failed = sorted({r.rate for r in runs if not r.sustained and r.rate not in sustained}
                    | {d["rate"] for d in deaths if d["rate"] not in sustained})
    at_cpu = [r for r in runs if r.rate == CPU_RATE]
    # the CPU figure: from a sustained run, else from one where only the generator was late (the server was clean)
    best_cpu = next((r for r in at_cpu if r.sustained), next((r for r in at_cpu if not r.failures),
                                                             at_cpu[0] if at_cpu else None))
    limited = [r.rate for r in runs if r.generator_limited and not r.failures and r.rate > max(sustained, default=0)]
    return {
        "system": system,
        "highest_sustained_rate": max(sustained, default=0),
        "lowest_failed_rate": min((f for f in failed if f > max(sustained, default=0)), default=None),
        "generator_limited_at": min(limited, default=None),
        "cpu_at_50k_cores": best_cpu.server_cpu_steady if best_cpu else None,
        "cpu_at_50k_us_per_span": best_cpu.server_cpu_us_per_span if best_cpu else None,
        "peak_rss_at_50k_mib": best_cpu.server_peak_rss_mib if best_cpu else None,
        "run_at_50k_sustained": bool(best_cpu and best_cpu.sustained),
        "cpu_at_highest_cores": max((r.server_cpu_steady for r in runs if r.sustained
                                     and r.rate == max(sustained)), default=None),
        "run_at_50k_clean": bool(best_cpu and not best_cpu.failures),
        # "at every rate": the worst of the sustained runs (bucket bounds), None for the otelcol
        "decision_lag_p99_worst_ms": max((r.decision_lag_p99_ms for r in runs if r.sustained
                                          and r.decision_lag_p99_ms is not None), default=None),
        "server_exits": deaths,
    }


def finite(x: Any) -> Any:
    """JSON has no NaN or infinity: None instead."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def wake_cost_us(wakes: int = 200, sleep_s: float = 0.005, repeats: int = 3) -> float:
    """CPU (us, this thread's) that one sleep and wake costs on this machine, the median of `repeats` runs of
    `wakes` sleeps: the least a receiver pays for a request that arrives while it waits (a VM's timer and
    scheduler exits make it tens of microseconds), before reading a byte."""
    runs = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        for _ in range(wakes):
            time.sleep(sleep_s)
        runs.append((time.thread_time_ns() - start) / wakes / 1e3)
    return statistics.median(runs)


def table(results: dict[str, Any]) -> str:
    summary, capacity = results["summary"], results["generator"]
    ts, oc = summary.get("tailsample"), summary.get("otelcol")
    rows = [("highest rate sustained without loss (spans/s)", "highest_sustained_rate", "{:,.0f}"),
            ("lowest rate that failed (spans/s)", "lowest_failed_rate", "{:,.0f}"),
            ("server CPU at its highest sustained rate (cores)", "cpu_at_highest_cores", "{:.2f}"),
            ("CPU at 50k spans/s (cores)", "cpu_at_50k_cores", "{:.3f}"),
            ("CPU at 50k spans/s (us per span, decisions and export included)", "cpu_at_50k_us_per_span", "{:.2f}"),
            ("peak RSS at 50k spans/s (MiB)", "peak_rss_at_50k_mib", "{:,.0f}"),
            ("decision lag p99 past due, worst over the sustained rates (ms, bucket bound)",
             "decision_lag_p99_worst_ms", "<= {:,.0f}")]

    def cell(s: dict[str, Any] | None, key: str, fmt: str) -> str:
        if s is None or s.get(key) is None:
            return "-"
        text = fmt.format(s[key])
        if key == "highest_sustained_rate" and s.get("generator_limited_at"):
            text = ">= " + text + " (generator-limited)"
        elif key == "highest_sustained_rate" and s.get("lowest_failed_rate") is None:
            text = ">= " + text
        if key == "cpu_at_50k_cores" and not s.get("run_at_50k_clean"):
            text += " (run not clean)"
        elif key == "cpu_at_50k_cores" and not s.get("run_at_50k_sustained"):
            text += " (generator late)"
        return text

    lines = [f"{'VALIDATION RUN (--quick): short runs, few rates, noisy. ' if results['quick'] else ''}"
             f"{'OTLP/gRPC' if results.get('protocol') == 'grpc' else 'OTLP/HTTP'} protobuf, "
             f"{results['spans_per_payload']:,} spans per request, {SPANS_PER_TRACE} spans per "
             f"trace, {results['seconds_per_run']:g} s per offered rate; the generator, the sink and the server share "
             f"{results['cpu_count']} cores."
             + (f" The collector ran with {' '.join(f'{k}={v}' for k, v in results['otelcol_env'].items())}."
                if results["otelcol_env"] else ""), "",
             "| | tailsample serve | otelcol v0.161.0 | tailsample / otelcol |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        r = ratio(ts and ts.get(key), oc and oc.get(key))
        lines.append(f"| {label} | {cell(ts, key, fmt)} | {cell(oc, key, fmt)} | "
                     f"{'-' if r is None else f'{r:.2f}'} |")
    top = next((st for st in capacity["steps"] if st["rate"] == capacity["highest_rate"] and st["kept_schedule"]),
               None)
    if top is not None:
        lines.append(f"\nload generator alone against the sink ({capacity['generators']} process): "
                     f"{'' if capacity['limited'] else '>= '}{capacity['highest_rate']:,} spans/s on schedule, "
                     f"using {top['generator_cpu_per_second']:.2f} cores (the sink "
                     f"{top['sink_cpu_per_second']:.2f}) at that rate")
    if results.get("wake_cost_us"):
        lines.append(f"\none thread's sleep and wake on this machine: {results['wake_cost_us']:.0f} us of CPU "
                     "(`time.sleep`, before the runs): the least a request costs a server thread that waited for it, "
                     "whatever its size")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s runs at 25k, 50k and 200k spans/s, no retry or bisection")
    ap.add_argument("--seconds", type=float, default=None, help="length of each run (default 10; 3 with --quick)")
    ap.add_argument("--rates", default=None, help="comma-separated offered rates, spans/s (default: the ladder)")
    ap.add_argument("--refine", type=int, default=None, help="bisection steps after the ladder (default 2; 0 quick)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--spans-per-payload", type=int, default=1000)
    ap.add_argument("--generators", type=int, default=1, help="load generator processes (default 1)")
    ap.add_argument("--capacity-seconds", type=float, default=None,
                    help="length of each run of the generator alone (default: --seconds, at most 5)")
    ap.add_argument("--num-shards", type=int, default=None,
                    help="tail_sampling.num_shards for both systems (default: unset, i.e. 1, as a new user runs)")
    ap.add_argument("--otelcol-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the collector (e.g. GOGC=400, GOMEMLIMIT=1GiB); default: none")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http",
                    help="OTLP/HTTP (default) or OTLP/gRPC from the generator to the receiver")
    ap.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="the generator's OTLP/HTTP client: pre-built requests on asyncio Protocols (default) or "
                         "aiohttp (the earlier one, several times the CPU per request)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    ap.add_argument("--print-config", action="store_true", help="print the configuration both systems run")
    ap.add_argument("--sink", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink is not None:
        run_sink(args.sink)
        return 0
    global NUM_SHARDS
    NUM_SHARDS = args.num_shards
    if args.print_config:
        print(yaml.safe_dump(collector_config(4318, 8888, 4319), sort_keys=False))
        return 0
    global PROTOCOL, CLIENT
    PROTOCOL, CLIENT = args.protocol, args.client
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    for item in args.otelcol_env:
        key, eq, value = item.partition("=")
        if not eq:
            ap.error(f"--otelcol-env {item!r}: expected KEY=VALUE")
        OTELCOL_ENV[key] = value
    args.refine = args.refine if args.refine is not None else (0 if args.quick else 2)
    rates = tuple(int(float(r)) for r in args.rates.split(",")) if args.rates else QUICK_RATES if args.quick else RATES
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    if "otelcol" in systems:
        otelcol_binary()  # build (or find) it before any measurement

    t0 = time.time()
    data = prepare(args.spans_per_payload)
    log(f"payloads: {len(data)} x {data[0].spans} spans, {SPANS_PER_TRACE} spans per trace, "
        f"{statistics.mean(len(p.raw) for p in data) / 1024:.0f} KiB each; prepared in {time.time() - t0:.1f} s")
    sink = Sink()
    results: dict[str, Any] = {}
    try:
        if PROTOCOL == "grpc":  # the sink speaks HTTP only: no generator-alone figure
            capacity = {"highest_rate": 0, "tested_up_to": 0, "limited": False, "generators": args.generators,
                        "seconds": 0.0, "steps": []}
        else:
            log("the load generator alone:")
            capacity = generator_capacity(data, sink, [r for r in RATES if r >= min(200_000, max(rates))],
                                          args.capacity_seconds or min(args.seconds, 5.0), args.generators)
        ceiling = capacity["highest_rate"] if capacity["limited"] else math.inf
        wake_us = wake_cost_us()
        log(f"one thread's sleep and wake: {wake_us:.0f} us of CPU")
        summary, all_runs = {}, []
        with tempfile.TemporaryDirectory(prefix="tailsample-services-") as tmp:
            for system in systems:
                log(f"{system}:")
                runs, deaths = ladder(system, rates, args, data, sink, Path(tmp), ceiling)
                summary[system] = summarize(system, runs, deaths)
                all_runs += runs
        results = {
            "quick": args.quick, "protocol": PROTOCOL, "seconds_per_run": args.seconds,
            "spans_per_payload": data[0].spans,
            "spans_per_trace": SPANS_PER_TRACE, "decision_wait_s": DECISION_WAIT, "cpu_count": os.cpu_count(),
            "generator": capacity, "summary": summary, "wake_cost_us": wake_us,
            "ratios": {k: ratio(summary.get("tailsample", {}).get(k), summary.get("otelcol", {}).get(k))
                       for k in ("highest_sustained_rate", "cpu_at_50k_cores", "cpu_at_50k_us_per_span",
                                 "peak_rss_at_50k_mib")},
            "runs": [{**{k: v for k, v in asdict(r).items() if k != "load"},
                      "load": {**asdict(r.load), "sustained_rate_estimate": r.load.sustained_rate},
                      "sustained": r.sustained} for r in all_runs],
            "config": collector_config(0, 0, 0), "otelcol_env": OTELCOL_ENV,
            "otelcol_version": "v0.161.0 (tests/tools/otelcol-builder.yaml)",
        }
    finally:
        sink.stop()
    results["table_markdown"] = table(results)
    print(results["table_markdown"])
    if args.json:
        args.json.write_text(json.dumps(finite(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
