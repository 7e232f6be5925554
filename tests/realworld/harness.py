"""Drive one real-instrumentation stack through `tailsample serve` into a real Jaeger v2, and record what it sent.

    services ──OTLP──▶ tailsample serve ─┬─ traces/sampled: the seed's tail_sampling, unchanged ──▶ Jaeger v2
                                         └─ traces/record:  always_sample ──▶ file (the recording)

One receiver feeds both pipelines (serve fans a receiver out to every pipeline that lists it), so the recording
holds exactly the spans the seed's policies judged. `run_stack()` starts Jaeger, serve and the stack's three
services on free loopback ports, drives a seeded mix of ok / error / slow / forced requests with a plain client,
stops the services (they flush on SIGTERM), waits until both pipelines have decided every trace, and returns a
`RunResult` while everything is still up (a context manager), so tests can query Jaeger and serve. Every child
runs in its own process group and is stopped with SIGTERM, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jaeger_fixture import running_jaeger
from realworld.stacks import ROLES, Launcher, Stack
from service_harness import LOOPBACK, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "python" / "tailsample" / "data" / "seed-config.yaml"
FIXTURES = REPO / "tests" / "data" / "realworld"

FORCE_HEADER = "x-force-trace"
CAPTURED_HEADER_KEYS = ("http.request.header.x-force-trace", "http.request.header.x_force_trace")
RECORD_DECISION_WAIT = "3s"  # the recording pipeline keeps everything; it only has to wait for a trace's spans

# A run's requests: this many of each scenario, shuffled with a fixed seed (per stack and convention).
MIX = {"ok": 30, "error": 4, "slow": 4, "forced": 4}
CONCURRENCY = 8  # enough that the slow requests (1.2 s) do not serialize the run


# ---- processes ---------------------------------------------------------------------------------------------

class Child:
    """A subprocess in its own process group, output to `log`; `stop()` is SIGTERM, then SIGKILL after `grace`."""

    def __init__(self, name: str, argv: list[str], log: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.log = name, log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=dict(env) if env is not None else None, start_new_session=True)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
        return True

    def tail(self, lines: int = 30) -> str:
        if not self._out.closed:
            self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 8.0) -> int | None:
        """SIGTERM to the group; SIGKILL if still there after `grace` s. The exit code (None if killed)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                self._out.close()
                return None
        self._out.close()
        return self.proc.returncode


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str],
                                                                                                   bytes]:
    """A plain (uninstrumented) GET: status, headers (lower-cased names), body; HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def answers(url: str) -> bool:
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


# ---- Jaeger v2 ---------------------------------------------------------------------------------------------

@dataclass
class Jaeger:
    otlp_grpc: str  # host:port
    query: str  # base URL of the query API

    def trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """The spans Jaeger holds for `trace_id` (its v1 JSON API), or None when it has none (404)."""
        status, _, body = http_get(f"{self.query}/api/traces/{trace_id}", timeout=10)
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"jaeger /api/traces/{trace_id}: HTTP {status}: {body[:300]!r}")
        data = json.loads(body).get("data") or []
        return [s for t in data for s in t.get("spans", [])] or None


@contextlib.contextmanager
def jaeger(binary: Path, tmp: Path) -> Iterator[Jaeger]:
    """Jaeger v2 on loopback (`jaeger_fixture.running_jaeger`: OTLP in, memory storage, query API)."""
    with running_jaeger(binary, tmp) as j:
        yield Jaeger(j.otlp_grpc, j.query)


# ---- tailsample serve --------------------------------------------------------------------------------------

SAMPLED, RECORD = "traces/sampled", "traces/record"


@dataclass
class Serve:
    child: Child
    otlp_grpc: str
    otlp_http: str
    metrics_url: str
    recording: Path
    decision_wait: float

    def gaps(self) -> dict[str, Any]:
        status, _, body = http_get(f"{self.metrics_url}/debug/gaps", timeout=10)
        if status != 200:
            raise RuntimeError(f"/debug/gaps: HTTP {status}: {body[:300]!r}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def kept(self, pipeline: str = SAMPLED) -> set[str]:
        """Trace IDs the pipeline kept and still holds for `show --url` (`/debug/kept`, newest 1000)."""
        status, _, body = http_get(f"{self.metrics_url}/debug/kept?limit=1000", timeout=10)
        if status != 200:
            raise RuntimeError(f"/debug/kept: HTTP {status}: {body[:300]!r}")
        return {row["trace_id"] for row in json.loads(body)["pipelines"][pipeline]}

    def metrics(self) -> dict[str, float]:
        from tailsample.collector.metrics import parse_text

        return parse_text(http_get(f"{self.metrics_url}/metrics", timeout=10)[2].decode())


def seed_tail_sampling() -> dict[str, Any]:
    """The `processors.tail_sampling` block of the seed's YAML, read from the file (never a copy)."""
    doc = yaml.safe_load(SEED_CONFIG.read_text())
    block: dict[str, Any] = doc["processors"]["tail_sampling"]
    return block


def serve_config(tmp: Path, jaeger_otlp_grpc: str) -> tuple[dict[str, Any], dict[str, int]]:
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port(), "health": free_port()}
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{LOOPBACK}:{ports['grpc']}"},
                                             "http": {"endpoint": f"{LOOPBACK}:{ports['http']}"}}}},
        "processors": {
            "tail_sampling": seed_tail_sampling(),
            "tail_sampling/record": {"decision_wait": RECORD_DECISION_WAIT,
                                     "policies": [{"name": "record-all", "type": "always_sample"}]},
        },
        "exporters": {
            "otlp/jaeger": {"endpoint": jaeger_otlp_grpc, "tls": {"insecure": True}},
            "file/record": {"path": str(tmp / "recording.json")},
        },
        # /debug on (gaps, kept): the suite reads serve's own record; a page holds all it reads
        "extensions": {"health_check": {"endpoint": f"{LOOPBACK}:{ports['health']}"},
                       "tailsample_debug": {"max_page_size": 1000}},
        "service": {
            "extensions": ["health_check", "tailsample_debug"],
            "pipelines": {
                SAMPLED: {"receivers": ["otlp"], "processors": ["tail_sampling"], "exporters": ["otlp/jaeger"]},
                RECORD: {"receivers": ["otlp"], "processors": ["tail_sampling/record"],
                         "exporters": ["file/record"]},
            },
            "telemetry": {"metrics": {"address": f"{LOOPBACK}:{ports['metrics']}"}},
        },
    }
    return config, ports


@contextlib.contextmanager
def serve(tmp: Path, jaeger_otlp_grpc: str) -> Iterator[Serve]:
    from tailsample.collector.settings import parse_duration

    config, ports = serve_config(tmp, jaeger_otlp_grpc)
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    child = Child("tailsample serve", [sys.executable, "-m", "tailsample", "serve", "--config", str(path)],
                  tmp / "serve.log")
    try:
        health = f"http://{LOOPBACK}:{ports['health']}/"
        wait_for(lambda: child.alive() and answers(health), 60, 0.1, what="tailsample serve healthy")
        yield Serve(child, f"{LOOPBACK}:{ports['grpc']}", f"http://{LOOPBACK}:{ports['http']}",
                    f"http://{LOOPBACK}:{ports['metrics']}", tmp / "recording.json",
                    parse_duration(str(config["processors"]["tail_sampling"]["decision_wait"])))
    finally:
        child.stop(grace=15)


# ---- the stack's services ----------------------------------------------------------------------------------

def service_env(stack: Stack, launcher: Launcher, role: str, port: int, downstream: int | None, convention: str,
                serve_: Serve) -> dict[str, str]:
    """The contract's environment for one service (tests/realworld/README.md)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k not in ("PYTHONPATH",)}
    endpoint = f"http://{serve_.otlp_grpc}" if stack.protocol == "grpc" else serve_.otlp_http
    target = ""
    if downstream is not None:
        target = f"{LOOPBACK}:{downstream}" if stack.grpc_downstream else f"http://{LOOPBACK}:{downstream}"
    env.update({
        "SERVICE_NAME": role, "OTEL_SERVICE_NAME": role, "PORT": str(port), "DOWNSTREAM": target,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": stack.protocol,
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": FORCE_HEADER,
        **launcher.env,
    })
    if convention == "http":
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    if role == "cart":
        env["DROP_CONTEXT"] = "1"
    return env


@contextlib.contextmanager
def services(stack: Stack, launcher: Launcher, convention: str, serve_: Serve, tmp: Path
             ) -> Iterator[tuple[str, dict[str, Child]]]:
    """The three services, leaf first; yields frontend's base URL and the children (stopped on exit)."""
    ports = {role: free_port() for role in ROLES}
    children: dict[str, Child] = {}
    try:
        for i in reversed(range(len(ROLES))):
            role = ROLES[i]
            downstream = ports[ROLES[i + 1]] if i + 1 < len(ROLES) else None
            env = service_env(stack, launcher, role, ports[role], downstream, convention, serve_)
            children[role] = Child(f"{stack.name} {role}", launcher.command(role), tmp / f"{role}.log", env=env,
                                   cwd=launcher.cwd)
        for role, child in children.items():
            if role == "frontend" or not stack.grpc_downstream:
                url = f"http://{LOOPBACK}:{ports[role]}/health"
                wait_for(lambda c=child, u=url: c.alive() and answers(u), 60, 0.1, what=f"{child.name} healthy")
            else:
                wait_for(lambda c=child, p=ports[role]: c.alive() and _listening(p), 60, 0.1,
                         what=f"{child.name} listening")
        yield f"http://{LOOPBACK}:{ports['frontend']}", children
    finally:
        for child in children.values():
            child.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


# ---- driving and ground truth ------------------------------------------------------------------------------

@dataclass
class Answer:
    scenario: str
    status: int
    trace_ids: list[str]  # frontend's first, then each downstream's (a dropped context starts a new trace)


def plan(seed: str, mix: Mapping[str, int] = MIX) -> list[str]:
    scenarios = [s for s, n in mix.items() for _ in range(n)]
    random.Random(seed).shuffle(scenarios)
    return scenarios


def drive(frontend: str, scenarios: list[str]) -> list[Answer]:
    def one(scenario: str) -> Answer:
        headers = {"x-scenario": scenario}
        if scenario == "forced":
            headers[FORCE_HEADER] = "true"
        status, hdrs, _ = http_get(f"{frontend}/work", headers)
        ids = [t for t in hdrs.get("x-trace-ids", "").split(",") if t]
        return Answer(scenario, status, ids)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, scenarios))


def check_answers(answers_: list[Answer]) -> None:
    """The stack obeyed the contract: statuses, and three well-formed trace IDs (two traces: cart drops)."""
    for a in answers_:
        expected = 500 if a.scenario == "error" else 200
        if a.status != expected:
            raise AssertionError(f"a {a.scenario} request answered {a.status}, expected {expected}")
        if len(a.trace_ids) != len(ROLES) or any(len(t) != 32 for t in a.trace_ids):
            raise AssertionError(f"x-trace-ids {a.trace_ids!r}: expected {len(ROLES)} trace IDs of 32 hex digits")


def read_recording(path: Path) -> list[dict[str, Any]]:
    """The file exporter's OTLP/JSON lines (gzip or not): one ExportTraceServiceRequest per line."""
    import gzip

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def spans_by_trace(requests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each span of the recording with its resource attributes beside it (`_resource`), by trace ID (hex)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for req in requests:
        for rs in req.get("resourceSpans", []):
            resource = rs.get("resource", {}).get("attributes", [])
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    out[span["traceId"].lower()].append({**span, "_resource": resource,
                                                         "_scope": ss.get("scope", {})})
    return dict(out)


def attr_keys(span: Mapping[str, Any]) -> set[str]:
    return {a["key"] for a in span.get("attributes", [])}


def ground_truth(answers_: list[Answer], by_trace: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Each trace ID the run made → `error`, `slow`, `forced` or `ok`.

    A request's traces share its scenario, except that a `forced` request's later traces are `forced` only when
    the captured header reached them as an attribute (it travels as a plain header, and not every server
    instrumentation captures headers: grpcio's does not), else `ok`.
    """
    truth: dict[str, str] = {}
    for a in answers_:
        for i, tid in enumerate(a.trace_ids):
            kind = a.scenario
            if kind == "forced" and i > 0:
                spans = by_trace.get(tid, [])
                if not any(attr_keys(s) & set(CAPTURED_HEADER_KEYS) for s in spans):
                    kind = "ok"
            truth[tid] = kind
    return truth


# The service pairs of every stack: frontend → cart keeps the context, cart → payments drops it (DROP_CONTEXT).
PAIRS = {"healthy": ["frontend -> cart"], "broken": ["cart -> payments"]}


# ---- one run -----------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    stack: str
    convention: str
    protocol: str
    answers: list[Answer]
    truth: dict[str, str]
    recording: Path
    by_trace: dict[str, list[dict[str, Any]]]
    jaeger: Jaeger
    serve: Serve
    tmp: Path
    timings: dict[str, float] = field(default_factory=dict)

    def sidecar(self) -> dict[str, Any]:
        """The ground truth stored beside a recording (`<stack>-<convention>.truth.json`)."""
        by_kind: dict[str, list[str]] = {k: [] for k in ("error", "slow", "forced", "ok")}
        for tid, kind in sorted(self.truth.items()):
            by_kind[kind].append(tid)
        return {"stack": self.stack, "convention": self.convention, "otlp_protocol": self.protocol,
                "requests": [{"scenario": a.scenario, "status": a.status, "trace_ids": a.trace_ids}
                             for a in self.answers],
                "traces": by_kind, "pairs": PAIRS,
                "spans": sum(len(v) for v in self.by_trace.values())}


@contextlib.contextmanager
def run_stack(stack: Stack, convention: str, jaeger_binary: Path, tmp: Path) -> Iterator[RunResult]:
    """The whole run (see the module's doc); `stack.prepare()` may raise StackUnavailable."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    launcher = stack.prepare()
    timings["prepare_s"] = time.monotonic() - t0
    with jaeger(jaeger_binary, tmp) as j, serve(tmp, j.otlp_grpc) as s:
        t1 = time.monotonic()
        with services(stack, launcher, convention, s, tmp) as (frontend, children):
            timings["services_ready_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            got = drive(frontend, plan(f"{stack.name}-{convention}"))
            timings["drive_s"] = time.monotonic() - t2
            for child in children.values():  # SIGTERM: each flushes its spans
                code = child.stop()
                if code != 0:
                    raise AssertionError(f"{child.name} did not exit 0 on SIGTERM (exit {code}):\n{child.tail()}")
        check_answers(got)
        t3 = time.monotonic()
        made = {t for a in got for t in a.trace_ids}
        # every trace decided by both pipelines: serve's engines hold nothing, and the recording has every trace
        wait_for(lambda: s.child.alive() and _settled(s, made), s.decision_wait + 30, 0.5,
                 what="both pipelines to decide every trace")
        timings["settle_s"] = time.monotonic() - t3
        by_trace = spans_by_trace(read_recording(s.recording))
        result = RunResult(stack.name, convention, stack.protocol, got, ground_truth(got, by_trace), s.recording,
                           by_trace, j, s, tmp, timings)
        yield result


def _settled(s: Serve, made: set[str]) -> bool:
    if not s.recording.exists():
        return False
    recorded = spans_by_trace(read_recording(s.recording))
    if not made <= set(recorded):
        return False
    m = s.metrics()
    held = [v for k, v in m.items() if k.startswith("tailsample_engine_traces_in_memory")]
    received = m.get('tailsample_engine_traces_received_total{processor="tail_sampling"}', 0.0)
    return len(held) == 2 and all(v == 0 for v in held) and received >= len(made)


def write_fixture(result: RunResult, directory: Path = FIXTURES, gzip_over: int = 300_000) -> tuple[Path, Path]:
    """The recording (gzip when over `gzip_over` bytes) and its ground-truth sidecar under `directory`."""
    import gzip

    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{result.stack}-{result.convention}"
    for old in directory.glob(f"{stem}.otlp.json*"):
        old.unlink()
    raw = result.recording.read_bytes()
    if len(raw) > gzip_over:
        rec = directory / f"{stem}.otlp.json.gz"
        rec.write_bytes(gzip.compress(raw, mtime=0))
    else:
        rec = directory / f"{stem}.otlp.json"
        rec.write_bytes(raw)
    side = directory / f"{stem}.truth.json"
    side.write_text(json.dumps(result.sidecar(), indent=1) + "\n")
    return rec, side
