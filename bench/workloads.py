"""The benchmark workloads: the same payload files for tailsample and for the reference processor.

A workload is a list of OTLP `ExportTraceServiceRequest` payloads with a fixed payload size (spans per request)
and a fixed trace shape (spans per trace), or the realistic mix of `tailsample.traffic.synth` (1-50 spans per trace).
Every span carries about ten semantic-convention attributes under a realistic resource (service.name,
version, host, k8s, cloud: 11 attributes). 1 % of traces hold an error span, 1 % are slow (root 1.5 s), 0.1 %
carry the forcing header: what the seed's policies keep, plus the 1 % probabilistic share.

Files are written once, in the collector file exporter's `proto` format (each message prefixed by its 4-byte
big-endian length), under `bench/.data/` (`TAILSAMPLE_BENCH_DATA` overrides), so the Go peer program reads the
very bytes tailsample reads. Spans are made from encoded templates with their IDs and times patched in, about
a million spans in a few seconds.

    python bench/workloads.py --spans-per-payload 1000 --spans-per-trace 5     # prints the file's path
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tailsample.collector.fileformat import PayloadWriter, read_payloads

DATA = Path(os.environ.get("TAILSAMPLE_BENCH_DATA", Path(__file__).resolve().parent / ".data"))
SEED = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "data" / "seed-config.yaml"
HEAVY = Path(__file__).resolve().parent / "policies" / "heavy.yaml"
EXTENDED = Path(__file__).resolve().parent / "policies" / "extended.yaml"
EPOCH_NS = 1_749_988_800 * 1_000_000_000
SERVICES = ("checkout", "payment", "inventory", "cart", "search", "api-gateway", "user", "shipping")

_TID = b"\xaa" * 16
_SID = b"\xbb" * 8
_PID = b"\xcc" * 8
_START = 0x1111111111111111
_END = 0x2222222222222222


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _resource(service: str, replica: int) -> Resource:
    attrs = {"service.name": service, "service.version": "2.14.1", "service.namespace": "shop",
             "deployment.environment.name": "production", "host.name": f"{service}-{replica}.prod.internal",
             "k8s.namespace.name": "shop", "k8s.pod.name": f"{service}-7d9f8b6c5-{replica:05d}",
             "k8s.node.name": f"node-{replica % 7}", "cloud.provider": "aws", "cloud.region": "eu-west-1",
             "telemetry.sdk.language": "python"}
    return Resource(attributes=[_kv(k, v) for k, v in attrs.items()])


@dataclass
class _Template:
    """An encoded span with the byte offsets of its IDs and times, to patch."""

    raw: bytes
    holes: list[tuple[int, int, str]]  # (offset, size, what) sorted by offset

    @classmethod
    def make(cls, span: Span) -> _Template:
        raw = span.SerializeToString()
        holes = []
        for what, pattern in (("tid", _TID), ("sid", _SID), ("pid", _PID),
                              ("start", struct.pack("<Q", _START)), ("end", struct.pack("<Q", _END))):
            at = raw.find(pattern)
            if at >= 0:
                holes.append((at, len(pattern), what))
        return cls(raw, sorted(holes))

    def fill(self, values: dict[str, bytes]) -> bytes:
        out, pos = [], 0
        for at, size, what in self.holes:
            out.append(self.raw[pos:at])
            out.append(values[what])
            pos = at + size
        out.append(self.raw[pos:])
        return b"".join(out)


def _span_template(name: str, kind: int, *, root: bool, error: bool, forced: bool) -> _Template:
    attrs: dict[str, str | int | bool] = {
        "http.request.method": "GET", "http.route": f"/api/v1/{name}", "url.scheme": "https",
        "server.address": "shop.example.com", "server.port": 443, "network.protocol.version": "1.1",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)", "http.response.status_code": 500 if error else 200,
        "enduser.id": "u-4829103", "thread.name": "worker-3"}
    if forced:
        attrs["http.request.header.x-force-trace"] = "true"
    span = Span(trace_id=_TID, span_id=_SID, parent_span_id=b"" if root else _PID, name=name, kind=kind,
                start_time_unix_nano=_START, end_time_unix_nano=_END, attributes=[_kv(k, v) for k, v in attrs.items()])
    if error:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="upstream failed"))
    return _Template.make(span)


def _frame(field: int, body: bytes) -> bytes:
    n = len(body)
    head = bytearray([field << 3 | 2])
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | 0x80 if n else b)
        if not n:
            return bytes(head) + body


def generate(spans_per_payload: int, spans_per_trace: int, total_spans: int, seed: int = 1) -> list[bytes]:
    """Payloads of `spans_per_payload` spans (the last may hold fewer), traces of `spans_per_trace` spans."""
    rng = random.Random(seed)
    variants = {}
    for root in (True, False):
        for error in (False, True):
            for forced in (False, True):
                kind = Span.SPAN_KIND_SERVER if root else Span.SPAN_KIND_CLIENT
                variants[root, error, forced] = _span_template("GET /cart" if root else "SELECT cart",
                                                               kind, root=root, error=error, forced=forced)
    scope = InstrumentationScope(name="opentelemetry.instrumentation.flask", version="0.48b0").SerializeToString()
    resources = [_frame(1, _resource(s, r).SerializeToString()) for s in SERVICES for r in range(2)]
    payloads: list[bytes] = []
    pending: list[bytes] = []
    resource = resources[0]
    n = 0
    t = 0
    while n < total_spans:
        tid = rng.randbytes(16)
        error = rng.random() < 0.01
        slow = rng.random() < 0.01
        forced = rng.random() < 0.001
        error_at = rng.randrange(spans_per_trace) if error else -1
        root_id = rng.randbytes(8)
        root_ns = (1_500 if slow else rng.randint(5, 400)) * 1_000_000
        start = EPOCH_NS + t
        t += 20_000  # 50k traces/s of span time
        for i in range(spans_per_trace):
            if not pending:
                resource = resources[rng.randrange(len(resources))]
            is_root = i == 0
            sid = root_id if is_root else rng.randbytes(8)
            s0 = start if is_root else start + i * 1000
            s1 = start + root_ns if is_root else s0 + rng.randint(100_000, 5_000_000)
            tmpl = variants[is_root, i == error_at, forced and is_root]
            values = {"tid": tid, "sid": sid, "pid": root_id, "start": struct.pack("<Q", s0),
                      "end": struct.pack("<Q", min(s1, start + root_ns))}
            pending.append(_frame(2, tmpl.fill(values)))
            n += 1
            if len(pending) == spans_per_payload or n == total_spans:
                scope_spans = _frame(2, _frame(1, scope) + b"".join(pending))
                payloads.append(_frame(1, resource + scope_spans))
                pending = []
            if n == total_spans:
                break
    return payloads


def workload_path(spans_per_payload: int, spans_per_trace: int, total_spans: int, seed: int = 1) -> Path:
    return DATA / f"p{spans_per_payload}-t{spans_per_trace}-n{total_spans}-s{seed}.pb"


def load(spans_per_payload: int, spans_per_trace: int, total_spans: int = 200_000, seed: int = 1) -> list[bytes]:
    """The workload's payloads, from its file (written first when missing)."""
    path = write(spans_per_payload, spans_per_trace, total_spans, seed)
    return list(read_payloads(path, "proto"))


def write(spans_per_payload: int, spans_per_trace: int, total_spans: int = 200_000, seed: int = 1) -> Path:
    """The workload's file, in the collector file exporter's proto format; generated when missing."""
    path = workload_path(spans_per_payload, spans_per_trace, total_spans, seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with PayloadWriter(tmp, "proto") as w:
            w.write_all(generate(spans_per_payload, spans_per_trace, total_spans, seed))
        os.replace(tmp, path)
    return path


def check(payloads: list[bytes]) -> int:
    """Spans in the payloads, parsed with the protobuf library (a test that the bytes are valid OTLP)."""
    return sum(len(ss.spans) for p in payloads for rs in ExportTraceServiceRequest.FromString(p).resource_spans
               for ss in rs.scope_spans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans-per-payload", type=int, default=1000)
    ap.add_argument("--spans-per-trace", type=int, default=5)
    ap.add_argument("--total-spans", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(write(a.spans_per_payload, a.spans_per_trace, a.total_spans, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
