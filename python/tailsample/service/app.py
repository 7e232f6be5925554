"""`tailsample serve`: the collector configuration brought to life.

Start order: exporters, pipelines (engines), receivers, then the metrics and health endpoints; the health check
answers 200 only once everything serves. Stop order (SIGTERM or SIGINT): health answers 503, receivers stop
accepting (calls in flight finish), every engine decides what it holds (or drops it with
`drop_pending_traces_on_shutdown`; with tail storage, only what is due: the rest waits on disk for the next
start), the kept spans go to the exporters, which drain their queues until
`shutdown_timeout`; then the process exits 0.

SIGHUP, `POST /debug/reload` and (with `--watch-config`) a change of the file re-read the configuration and swap
the tail_sampling policies live (`tailsample.service.reload`).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import functools
import json
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tailsample.archive import ArchiveReader, parse_trace_id
from tailsample.collector.compare import shadow_comparison
from tailsample.collector.fileformat import proto_to_json
from tailsample.collector.settings import (
    BearerTokenAuthExtension,
    FileStorageExtension,
    HealthCheckExtension,
    HostPort,
    KafkaReceiverSettings,
    MemoryLimiterProcessor,
    OtlpExporterSettings,
    ServiceConfig,
    TailSamplingProcessor,
)
from tailsample.errors import ConfigError
from tailsample.exporters import Exporter, ExporterMetrics, build_exporter
from tailsample.incident.lint import policy_near_misses, strict_matching
from tailsample.receivers import BearerTokenAuth, OtlpGrpcReceiver, OtlpHttpReceiver, ReceiverMetrics
from tailsample.receivers.connections import (
    ENDPOINT_LIMITS_CAP,
    REFUSAL_SLOTS,
    Limits,
    ListenerGuard,
    ListenerMetrics,
    fit_connection_caps,
    install_accept_error_handler,
    raise_nofile_limit,
    serve,
)

if TYPE_CHECKING:
    from tailsample.receivers.kafka_receiver import KafkaReceiver
from tailsample.collector.metrics import Registry, Sample
from tailsample.incident.tree import build_traces, summary_json
from tailsample.receivers.sink import span_count
from tailsample.service.debug import RECORDING_CONTENT_TYPE, DebugGate, TrafficRecording, encode_records
from tailsample.service.memory import MemoryLimiter, resident_bytes
from tailsample.service.pipeline import FanoutSink, ServicePipeline
from tailsample.service.reload import ConfigReloader
from tailsample.ui.status import StatusPage

log = logging.getLogger("tailsample.serve")
IDLE_SLACK_S = 0.001  # a decision loop sleeping until a trace is due wakes this much after


# The metrics and health check endpoints: a cap of their own (OTLP clients cannot starve them, nor they OTLP),
# and short timeouts (a scrape is one small GET).
_ENDPOINT_LIMITS = Limits(max_connections=ENDPOINT_LIMITS_CAP, read_header_timeout=10.0, read_timeout=30.0,
                          idle_timeout=60.0)


class _HttpEndpoint:
    """A small aiohttp server (metrics, health check) on one address."""

    def __init__(self, name: str, address: HostPort, routes: list[web.RouteDef], listeners: ListenerMetrics) -> None:
        self.name = name
        self.requested = address
        self.address = address
        self._guard = ListenerGuard(name, _ENDPOINT_LIMITS, listeners)
        self._app = web.Application(middlewares=[self._guard.middleware])
        self._app.add_routes(routes)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> HostPort:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False,
                                     keepalive_timeout=_ENDPOINT_LIMITS.idle_timeout, lingering_time=1.0)
        await self._runner.setup()
        self._server = await serve(self._runner, self._guard, self.requested.host, self.requested.port)
        self.address = HostPort(self.requested.host, self._server.sockets[0].getsockname()[1])  # the bound port
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Service:
    """A running `tailsample serve` (build it, `await start()`, later `await stop()`; or `run()` to the end)."""

    def __init__(self, config: ServiceConfig, *, shutdown_timeout: float = 30.0, config_path: Path | None = None,
                 watch_config: bool = False) -> None:
        self.config = config
        self.config_path = config_path  # what a reload reads again (None: nothing to re-read)
        self.watch_config = watch_config
        self.reloader: ConfigReloader | None = None
        self.shutdown_timeout = shutdown_timeout
        self.registry = Registry()
        self.ready = False
        self.started_at = time.time()
        self.addresses: dict[str, HostPort] = {}
        self.consumers: dict[str, str] = {}  # Kafka receivers: what they read
        self._stopping = asyncio.Event()
        self._receivers: list[OtlpGrpcReceiver | OtlpHttpReceiver | KafkaReceiver] = []
        self._endpoints: list[_HttpEndpoint] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tailsample-decide")
        self.exporters: dict[str, Exporter] = {}
        self.pipelines: dict[str, ServicePipeline] = {}
        self.limiters: dict[str, MemoryLimiter] = {}
        self._debug: DebugGate | None = None
        self.nofile = 0  # the open files limit, once raised at start
        self._check_supported()

    def _check_supported(self) -> None:
        for eid, exp in self.config.exporters.items():
            if isinstance(exp, OtlpExporterSettings) and exp.sending_queue.storage and not exp.sending_queue.enabled:
                raise ConfigError(f"{self.config.source}: exporters.{eid}.sending_queue.storage needs the queue "
                                  "enabled (sending_queue.enabled: true)", path=f"exporters.{eid}.sending_queue")

    # ---- start -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for line in cfg.ignored:
            log.warning("%s: %s", cfg.source, line)
        self.nofile = raise_nofile_limit()[0]
        install_accept_error_handler(loop, ListenerMetrics(self.registry))
        storages = {xid: ext.open() for xid, ext in cfg.extensions.items()
                    if isinstance(ext, FileStorageExtension) and xid in cfg.service_extensions}
        exporter_metrics = ExporterMetrics(self.registry)
        used_exporters = {e for p in cfg.pipelines.values() for e in p.exporters}
        for eid in used_exporters:
            settings = cfg.exporters[eid]
            self.exporters[eid] = build_exporter(settings, exporter_metrics)
            if isinstance(settings, OtlpExporterSettings) and settings.sending_queue.storage:
                self.exporters[eid].use_storage(storages[settings.sending_queue.storage])
        for exporter in self.exporters.values():
            await exporter.start()

        for pid, proc in cfg.processors.items():
            if isinstance(proc, MemoryLimiterProcessor) and any(pid in p.processors for p in cfg.pipelines.values()):
                self.limiters[pid] = MemoryLimiter(proc, self.registry)
        for pid, p in cfg.pipelines.items():
            sampler = cfg.processors[p.tail_sampling]
            assert isinstance(sampler, TailSamplingProcessor)
            storage = storages.get(sampler.config.tail_storage or "")
            archive_settings = sampler.config.archive
            archive = storages.get(archive_settings.storage) if archive_settings is not None else None
            # Opening tail storage replays it: off the event loop.
            self.pipelines[pid] = await loop.run_in_executor(self._executor, functools.partial(
                ServicePipeline, p, dict(cfg.processors), [self.exporters[e] for e in p.exporters],
                [self.limiters[x] for x in p.processors if x in self.limiters], self.registry, storage,
                archive=archive))

        debug = cfg.debug_endpoints
        if debug is not None and debug.recent_traffic_bytes > 0:
            for pipeline in self.pipelines.values():
                pipeline.recording = TrafficRecording(pipeline.id, debug.recent_traffic_bytes)
            self.registry.add_collector(lambda: [x for p in self.pipelines.values() if p.recording is not None
                                                 for x in p.recording.samples()])

        self.reloader = ConfigReloader(cfg, self.config_path, self.pipelines, self.registry, self._executor,
                                       self._reloaded)
        receiver_metrics = ReceiverMetrics(self.registry)
        caps = self._connection_caps()
        auths: dict[str, BearerTokenAuth] = {}
        for xid in cfg.service_extensions:
            ext = cfg.extensions[xid]
            if isinstance(ext, BearerTokenAuthExtension):
                auths[xid] = BearerTokenAuth(ext)
        for rid, rec in cfg.receivers.items():
            pipes = [self.pipelines[p.id] for p in cfg.pipelines.values() if rid in p.receivers]
            if not pipes:
                continue  # defined but unused, as the collector: not started
            if isinstance(rec, KafkaReceiverSettings):
                from tailsample.receivers.kafka_receiver import KafkaReceiver as _Kafka  # confluent-kafka: when used

                k = _Kafka(rid, rec, pipes, self.registry)
                self._receivers.append(k)
                self.consumers[rid] = await k.start()
                continue
            sink = FanoutSink(pipes)
            if rec.grpc is not None:
                g = OtlpGrpcReceiver(rid, rec.grpc, sink, receiver_metrics, auths.get(rec.grpc.auth or ""))
                g.max_connections = caps[f"{rid}/grpc"]
                self._receivers.append(g)
                self.addresses[f"{rid}/grpc"] = await g.start()
            if rec.http is not None:
                h = OtlpHttpReceiver(rid, rec.http, sink, receiver_metrics, auths.get(rec.http.auth or ""))
                h.max_connections = caps[f"{rid}/http"]
                self._receivers.append(h)
                self.addresses[f"{rid}/http"] = await h.start()

        self._process_metrics()
        if cfg.metrics.level != "none":
            for i, ep in enumerate(cfg.metrics.endpoints):
                name = "metrics" if i == 0 else f"metrics/{i}"
                m = _HttpEndpoint(name, ep, [web.get("/metrics", self._metrics), *self._debug_routes(auths),
                                             *self._status.routes(ep.host)], receiver_metrics.listeners)
                self._endpoints.append(m)
                self.addresses[name] = await m.start()
        for xid in cfg.service_extensions:
            ext = cfg.extensions[xid]
            if isinstance(ext, HealthCheckExtension):
                hc = _HttpEndpoint(xid, ext.endpoint, [web.get("/", self._health), web.get("/health", self._health)],
                                   receiver_metrics.listeners)
                self._endpoints.append(hc)
                self.addresses[xid] = await hc.start()

        for limiter in self.limiters.values():
            self._tasks.append(asyncio.create_task(limiter.run(), name=f"{limiter.settings.id}"))
        for pipeline in self.pipelines.values():
            self._tasks.append(asyncio.create_task(self._decide_loop(loop, pipeline), name=f"decide-{pipeline.id}"))
        if self.watch_config and self.reloader is not None:
            self._tasks.append(asyncio.create_task(self.reloader.watch(), name="watch-config"))
        self.ready = True
        log.info("tailsample serve: ready; %s", ", ".join([*(f"{k} on {v}" for k, v in self.addresses.items()),
                                                            *(f"{k} reading {v}" for k, v in self.consumers.items())]))

    @functools.cached_property
    def _status(self) -> StatusPage:
        """The status page (`/status`): open on a loopback metrics address, else behind the /debug gate."""
        return StatusPage(self.registry.render, lambda: self.pipelines, self._debug,
                          recover=lambda trace_id: self._recover_ids([trace_id], export=True))

    def _debug_routes(self, auths: dict[str, BearerTokenAuth]) -> list[web.RouteDef]:
        """The /debug endpoints behind their gate (off without a `tailsample_debug` extension)."""
        if self._debug is None:
            settings = self.config.debug_endpoints
            self._debug = DebugGate(settings, auths.get(settings.auth or "") if settings else None, self.registry)
        return [*self._debug.post_routes({"/debug/reload": ("reload", self._reload)}),
                *self._debug.routes({"/debug/traces/{trace_id}": ("traces", self._explain),
                                     "/debug/gaps": ("gaps", self._gaps),
                                     "/debug/attributes": ("attributes", self._attributes),
                                     "/debug/kept": ("kept", self._kept_list),
                                     "/debug/kept/{trace_id}": ("kept_trace", self._kept_trace),
                                     "/debug/shadow": ("shadow", self._shadow),
                                     "POST /debug/recover": ("recover", self._recover),
                                     "/debug/traffic": ("traffic", self._traffic)})]

    def _connection_caps(self) -> dict[str, int]:
        """Every OTLP listener's max_connections, lowered to fit the descriptor limit with the endpoints'."""
        cfg = self.config
        requested: dict[str, int] = {}
        fixed = 0
        for rid, rec in cfg.receivers.items():
            if isinstance(rec, KafkaReceiverSettings):
                continue
            if rec.grpc is not None:
                requested[f"{rid}/grpc"] = rec.grpc.max_connections
            if rec.http is not None:
                requested[f"{rid}/http"] = rec.http.max_connections
                fixed += REFUSAL_SLOTS
        endpoints = (len(cfg.metrics.endpoints) if cfg.metrics.level != "none" else 0) + sum(
            isinstance(cfg.extensions[x], HealthCheckExtension) for x in cfg.service_extensions)
        fixed += endpoints * (ENDPOINT_LIMITS_CAP + REFUSAL_SLOTS)
        return fit_connection_caps(requested, fixed, self.nofile)

    def _process_metrics(self) -> None:
        def collect() -> list[Sample]:
            return [
                Sample("otelcol_process_uptime", "counter", "Uptime of the process (s)", (),
                       time.time() - self.started_at),
                Sample("otelcol_process_memory_rss", "gauge", "Total physical memory (resident set size) (bytes)",
                       (), resident_bytes()),
            ]

        self.registry.add_collector(collect)

    async def _decide_loop(self, loop: asyncio.AbstractEventLoop, pipeline: ServicePipeline) -> None:
        due = loop.time()
        while True:
            idle = 0.0
            try:
                idle = await pipeline.decide(loop, self._executor)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad tick stop decisions
                log.exception("%s: decision tick failed", pipeline.id)
            # On a fixed cadence while traces are due: a round's own time is not added to the wait for the next
            # (after a round longer than a tick, the next starts at once). While none is, until one is (`idle`,
            # bounded): an idle service does not wake every tick. A millisecond past due: the engine's clock may
            # be the wall clock.
            now = loop.time()
            due = max(due + pipeline.tick, now + idle + (IDLE_SLACK_S if idle > 0 else 0.0))
            await pipeline.sleep(due - now)

    # ---- endpoints ---------------------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.registry.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _explain(self, request: web.Request) -> web.Response:
        """What each pipeline's engine knows of a trace ID (`tailsample explain`): 200 with the answers (an
        unknown ID is an answer), 400 for a malformed ID."""
        trace_id = request.match_info["trace_id"]
        try:
            answers = {pid: p.engine.explain(trace_id) for pid, p in self.pipelines.items()}
        except ValueError as e:
            return _json_error(400, str(e))
        for pid, answer in answers.items():
            # Policies that did not keep it and read attributes the traffic spells otherwise: say so.
            missed = [name for name, vote in (answer.get("votes") or {}).items() if vote == "not_sampled"]
            if missed:
                p = self.pipelines[pid]
                with p.locked_inventory() as inventory:
                    near = policy_near_misses(p.engine.config, inventory, missed)
                if near:
                    answer["near_misses"] = near
        return web.Response(text=json.dumps({"trace_id": trace_id.lower(), "pipelines": answers}),
                            content_type="application/json")

    async def _gaps(self, request: web.Request) -> web.Response:
        """The propagation audit (`tailsample gaps`): per pipeline, its report (null when the audit is off)."""
        reports = {pid: p.engine.gaps() for pid, p in self.pipelines.items()}
        return web.Response(text=json.dumps({"pipelines": reports}), content_type="application/json")

    async def _attributes(self, request: web.Request) -> web.Response:
        """Per pipeline: the attribute keys of a sample of its traffic (`tailsample check-config --url`), its
        policies (normalized) and their counts."""
        out = {pid: {"inventory": p.inventory_json(), "policies": p.engine.config.normalized()["policies"],
                     "strict_reference_matching": strict_matching(p.engine.config),
                     "policy_stats": p.engine.policy_stats()} for pid, p in self.pipelines.items()}
        return web.Response(text=json.dumps({"pipelines": out}), content_type="application/json")

    async def _kept_list(self, request: web.Request) -> web.Response:
        """Recently kept traces still held (`tailsample show --url`), newest first, with a one-line summary each:
        `?limit=N` (default 20, at most the extension's `max_page_size`: each row renders a trace)."""
        most = self._debug.max_page_size if self._debug is not None else 0
        text = request.query.get("limit", str(min(20, most)))
        try:
            limit = int(text)
        except ValueError:
            return _json_error(400, f"limit must be an integer, got {text!r}")
        if not 0 <= limit <= most:
            return _json_error(400, f"limit must be from 0 to {most} (max_page_size of the tailsample_debug "
                                    f"extension), got {limit}")
        out: dict[str, list[dict[str, Any]]] = {}
        for pid, p in self.pipelines.items():
            rows = []
            for k in p.engine.recent_kept(limit):
                payloads = p.engine.kept_trace(k["trace_id"]) or []
                tree = build_traces(payloads).get(k["trace_id"])
                rows.append({**k, **(summary_json(tree) if tree is not None else {})})
            out[pid] = rows
        return web.Response(text=json.dumps({"pipelines": out}), content_type="application/json")

    async def _kept_trace(self, request: web.Request) -> web.Response:
        """A recently kept trace's spans as they left, as OTLP/JSON (one ExportTraceServiceRequest); 404 when no
        pipeline holds it any more, 400 for a malformed ID."""
        trace_id = request.match_info["trace_id"]
        try:
            for p in self.pipelines.values():
                payloads = p.engine.kept_trace(trace_id)
                if payloads:
                    # Concatenated requests are one request: protobuf merges repeated fields.
                    return web.Response(text=proto_to_json(b"".join(payloads)), content_type="application/json")
        except ValueError as e:
            return _json_error(400, str(e))
        return _json_error(404, f"trace {trace_id.lower()} is not among the recently kept traces (never kept, or "
                                "pushed out of the recent_kept_bytes buffer); `tailsample explain` says what "
                                "happened to it")

    async def _reload(self, request: web.Request) -> web.Response:
        """`POST /debug/reload`: re-read the configuration file; 200 when applied (or unchanged), 422 when refused
        (the running configuration stays), with what happened as JSON."""
        if self.reloader is None:
            return _json_error(503, "the service is starting")
        outcome = await self.reloader.reload("POST /debug/reload")
        return web.Response(status=422 if outcome["result"] == "failed" else 200, text=json.dumps(outcome),
                            content_type="application/json")

    def _reloaded(self, config: ServiceConfig) -> None:
        self.config = config

    def reload_soon(self, trigger: str = "SIGHUP") -> None:
        """Starts a reload in the background (a signal handler cannot wait for one)."""
        if self.reloader is None or not self.ready:
            log.warning("configuration reload (%s) ignored: the service is not serving yet", trigger)
            return
        reloader = self.reloader

        async def run() -> None:
            await reloader.reload(trigger)  # logs and counts its own outcome

        task = asyncio.create_task(run(), name="reload")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _shadow(self, request: web.Request) -> web.Response:
        """The shadow policies beside the live ones (`tailsample diff --url`), per pipeline, in the comparison's
        shape (`tailsample.collector.compare`); null for a pipeline without shadow policies. `?examples=N` trace IDs
        per class (default 10, at most the extension's `max_page_size`)."""
        most = self._debug.max_page_size if self._debug is not None else 0
        text = request.query.get("examples", str(min(10, most)))
        try:
            examples = int(text)
        except ValueError:
            return _json_error(400, f"examples must be an integer, got {text!r}")
        if not 0 <= examples <= most:
            return _json_error(400, f"examples must be from 0 to {most} (max_page_size of the tailsample_debug "
                                    f"extension), got {examples}")
        out: dict[str, dict[str, Any] | None] = {}
        for pid, p in self.pipelines.items():
            report = p.engine.shadow_report()
            out[pid] = None if report is None else shadow_comparison(
                report, live_policies=p.engine.policy_stats(), examples=examples)
        return web.Response(text=json.dumps({"pipelines": out}), content_type="application/json")

    async def _recover(self, request: web.Request) -> web.Response:
        """Dropped traces from each pipeline's archive (`tailsample recover --url`). Body: {"trace_ids": [...],
        "export": true} sends what is found to the pipeline's exporters (spans marked `tailsample.recovered`);
        "export": false returns the payloads instead (base64 protobuf). 400 for a bad body or trace ID."""
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json_error(400, 'the body must be JSON: {"trace_ids": ["<32 hex digits>", ...], "export": true}')
        if isinstance(body, dict) and "since" in body:
            return await self._recover_scan(body)
        ids = body.get("trace_ids") if isinstance(body, dict) else None
        export = body.get("export", True) if isinstance(body, dict) else True
        most = self._debug.max_page_size if self._debug is not None else 0
        if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids) or not isinstance(export, bool):
            return _json_error(400, 'the body must be {"trace_ids": ["<32 hex digits>", ...], "export": true|false}')
        if not 0 < len(ids) <= most:
            return _json_error(400, f"give 1 to {most} trace IDs (max_page_size of the tailsample_debug "
                                    f"extension), got {len(ids)}")
        try:
            for t in ids:
                parse_trace_id(t)
        except ValueError as e:
            return _json_error(400, str(e))
        return web.Response(text=json.dumps(await self._recover_ids(ids, export=export)),
                            content_type="application/json")

    async def _recover_ids(self, ids: list[str], *, export: bool) -> dict[str, Any]:
        """Each pipeline's archive searched for `ids` (valid trace IDs); with `export`, what is found goes to the
        pipeline's exporters. The answer of `POST /debug/recover` and of the status page's recover button."""
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = {}
        for pid, p in self.pipelines.items():
            if p.engine.archive_directory is None:
                out[pid] = {"archive": False}
                continue
            found = await p.recover(loop, self._executor, ids, export=export)
            rows = []
            for r in found:
                row: dict[str, Any] = {"trace_id": r.trace_id, "archived_at": r.archived_at,
                                       "spans": span_count(r.payload)}
                if not export:
                    row["payload"] = base64.b64encode(r.payload).decode()
                rows.append(row)
            hit = {r.trace_id for r in found}
            out[pid] = {"archive": True, "found": rows, "exported": export,
                        "missing": [t.lower() for t in ids if parse_trace_id(t).hex() not in hit]}
        return {"pipelines": out}

    async def _recover_scan(self, body: dict[str, Any]) -> web.Response:
        """`{"since": s, "until": s, "where": "OTTL" | null, "limit": n}`: the traces each pipeline's archive holds
        from that window with a span matching the condition (`tailsample recover --since`), without payloads."""
        since, until, where, limit = body.get("since"), body.get("until"), body.get("where"), body.get("limit", 1000)
        if (not isinstance(since, (int, float)) or not isinstance(until, (int, float))
                or not (where is None or isinstance(where, str)) or not isinstance(limit, int) or limit < 1):
            return _json_error(400, 'a scan body is {"since": <unix s>, "until": <unix s>, "where": "<OTTL>" | null, '
                                    '"limit": <n>}')
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = {}
        for pid, p in self.pipelines.items():
            directory = p.engine.archive_directory
            if directory is None:
                out[pid] = {"archive": False}
                continue

            def scan(engine: Any = p.engine, d: Any = directory) -> Any:
                engine.archive_stats()  # waits for what the writer thread was handed
                return ArchiveReader(d).scan(float(since), float(until), where, limit)

            try:
                result = await loop.run_in_executor(self._executor, scan)
            except ConfigError as e:
                return _json_error(400, str(e))
            # The newest segment is being written: a record in progress there is not a problem.
            problems = [x for x in result.problems if "torn tail" not in x]
            out[pid] = {"archive": True, "spans": result.spans, "truncated": result.truncated, "problems": problems,
                        "traces": [{"trace_id": f.trace_id, "archived_at": f.archived_at, "spans": f.spans,
                                    "root_name": f.root_name, "start": f.start, "duration": f.duration,
                                    "error": f.error} for f in result.traces]}
        return web.Response(text=json.dumps({"pipelines": out}), content_type="application/json")

    async def _traffic(self, request: web.Request) -> web.StreamResponse:
        """The recent incoming requests of a pipeline (`tailsample simulate --url`), oldest first, in the format of
        `service.debug.encode_records`; `?since=SECONDS` only those received in the last SECONDS; `?pipeline=ID`
        (needed when there are several). At most the ring's bytes (`recent_traffic_bytes`) per response."""
        recordings = {pid: p.recording for pid, p in self.pipelines.items() if p.recording is not None}
        if not recordings:
            return _json_error(404, "the recent traffic recording is off: set recent_traffic_bytes above 0 in the "
                                    "tailsample_debug extension (README: Shadow policies and what-if)")
        pid = request.query.get("pipeline")
        if pid is None and len(recordings) > 1:
            return _json_error(400, f"this service has several pipelines: choose one with ?pipeline= "
                                    f"(`simulate --pipeline`): {', '.join(recordings)}")
        recording = recordings.get(pid) if pid is not None else next(iter(recordings.values()))
        if recording is None:
            return _json_error(404, f"no pipeline {pid!r}: the pipelines are {', '.join(recordings)}")
        since_ns = 0
        text = request.query.get("since")
        if text is not None:
            try:
                seconds = float(text)
            except ValueError:
                return _json_error(400, f"since must be a number of seconds, got {text!r}")
            if not 0 <= seconds < 1e9:  # NaN and inf too
                return _json_error(400, f"since must be 0 or more seconds, got {text!r}")
            since_ns = time.time_ns() - int(seconds * 1e9)
        records = recording.snapshot(since_ns)
        resp = web.StreamResponse(headers={
            "Content-Type": RECORDING_CONTENT_TYPE, "X-Tailsample-Pipeline": recording.pipeline,
            "X-Tailsample-Payloads": str(len(records)), "X-Tailsample-Dropped-Payloads": str(recording.dropped)})
        await resp.prepare(request)
        for chunk in encode_records(records):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def _health(self, request: web.Request) -> web.Response:
        up = datetime.datetime.fromtimestamp(self.started_at, datetime.timezone.utc)
        body: dict[str, Any] = {"status": "Server available" if self.ready else "Server not available",
                                "upSince": up.isoformat().replace("+00:00", "Z"),
                                "uptime": f"{time.time() - self.started_at:.3f}s"}
        return web.Response(status=200 if self.ready else 503, text=json.dumps(body),
                            content_type="application/json")

    # ---- stop --------------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, quiet: bool = False) -> None:
        """Receivers off, decide or drop what is pending, drain the exporters within `shutdown_timeout`.
        `quiet`: after a failed start, nothing is logged."""
        deadline = time.monotonic() + self.shutdown_timeout
        self.ready = False
        if not quiet:
            log.info("tailsample serve: shutting down")
        for r in self._receivers:
            if isinstance(r, OtlpGrpcReceiver):
                await r.stop(grace=min(5.0, self.shutdown_timeout))
            else:
                await r.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pipeline in self.pipelines.values():
            pipeline.stopping = True
            await pipeline.flush()
        await asyncio.gather(*(e.shutdown(deadline) for e in self.exporters.values()))
        for ep in self._endpoints:
            await ep.stop()
        self._executor.shutdown(wait=True)
        if not quiet:
            log.info("tailsample serve: stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT (or `request_stop()`), stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / not Unix
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
        except BaseException:
            # it never served: release what had started, without announcing a shutdown
            await self.stop(quiet=True)
            raise
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):  # SIGHUP: Unix only
            loop.add_signal_handler(signal.SIGHUP, self.reload_soon)
        try:
            await self._stopping.wait()
        finally:
            await self.stop()


__all__ = ["Service"]


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")
