"""The status page of `tailsample serve`: `/status` on the telemetry metrics address.

One screen for an SRE deciding whether to trust the sampler: spans in and kept per second, kept share per policy,
decision lag against `decision_wait`, buffered traces and bytes against their limits, exporter queues and failures,
memory against the limiter, the propagation-gap graph, the most recent kept traces as trees, and a trace lookup.

- `/status` is the page (server-rendered HTML; `static/status.js` polls `/status/data` every 2 s and redraws).
- `/status/data` is every number on the page as JSON, read from the same registry `/metrics` renders (the numbers
  are those of a scrape taken at the same moment), computed at most once a second whatever the number of
  pollers, with every list capped (policies, exporters, pairs, trees), so the page stays cheap under load.
- `/status/trace/{trace_id}` is the lookup: what each pipeline's engine knows of the ID (`tailsample explain`), and
  the trace's tree when it is among the recently kept, and, when a pipeline keeps an archive of dropped traces
  (`tailsample.archive`), whether and until when the trace can be recovered.
- `POST /status/recover/{trace_id}` recovers a dropped trace from the archive into the pipeline's exporters, whole,
  its spans marked `tailsample.recovered` (as `tailsample recover --url`); 404 when no pipeline has an archive.
- `/status/assets/{name}` serves the page's script and stylesheet, which ship inside the wheel: nothing is
  fetched from outside.

Access: when the metrics address is loopback the page is on for everyone who can reach it (as `/metrics`); bound
beyond loopback, it reveals trace IDs, service names and span contents, so it takes the same rules as `/debug/*`
(off without a `tailsample_debug` extension; then its rate limit and bearer token).
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from tailsample.engine import Engine
from tailsample.incident.explain import describe
from tailsample.incident.tree import TraceTree, build_traces, render_text, summary_json

CACHE_S = 1.0  # /status/data is computed at most once per this many seconds
POLL_MS = 2000  # how often the page asks
HISTORY_POINTS = 150  # rate history kept for the charts: 5 minutes at the page's pace
MAX_POLICIES = 50
MAX_EXPORTERS = 20
MAX_PAIRS = 40
MAX_BROKEN = 20
MAX_TREES = 6
MAX_TREE_SPANS = 200  # larger kept traces are listed with their summary, not drawn
MAX_TREE_CHARS = 6000
ASSETS = {"status.js": "text/javascript", "status.css": "text/css"}
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}

DISABLED_MESSAGE = ("the status page is off on this address: it is bound beyond loopback and the page reveals trace "
                    "IDs, service names and span contents. Turn it on with a tailsample_debug extension listed in "
                    "service.extensions (with auth: {authenticator: bearertokenauth}); README: Status page")

Handler = Callable[[web.Request], Any]


class PipelineView(Protocol):
    """What the page reads of a service pipeline (`tailsample.service.pipeline.ServicePipeline`)."""

    sampler_id: str
    engine: Engine


class Gate(Protocol):
    """The `/debug/*` access rules (`tailsample.service.debug.DebugGate`)."""

    @property
    def enabled(self) -> bool: ...

    def routes(self, handlers: dict[str, tuple[str, Handler]]) -> list[web.RouteDef]: ...


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only (an empty host or 0.0.0.0 is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as exposed


# ---- the Prometheus text, as families -------------------------------------------------------------------------

Series = list[tuple[dict[str, str], float]]
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"n": "\n", "\\": "\\", '"': '"'}


def parse_families(text: str) -> dict[str, Series]:
    """A Prometheus text page as {rendered name: [(labels, value)]}."""
    out: dict[str, Series] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        labels = {k: re.sub(r"\\(.)", lambda e: _UNESCAPE.get(e.group(1), e.group(1)), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def _sum(fam: dict[str, Series], name: str, **match: str) -> float:
    return sum(v for labels, v in fam.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


def _by(fam: dict[str, Series], name: str, key: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in fam.get(name, []):
        if all(labels.get(k) == x for k, x in match.items()) and key in labels:
            out[labels[key]] = out.get(labels[key], 0.0) + v
    return out


# ---- the data -------------------------------------------------------------------------------------------------

# The metric each headline number is read from (`totals` in /status/data: a test compares them with /metrics).
TOTALS = {
    "spans_in": "otelcol_receiver_accepted_spans_total",
    "spans_refused": "otelcol_receiver_refused_spans_total",
    "spans_kept": "tailsample_engine_spans_sampled_total",
    "traces_in": "tailsample_engine_traces_received_total",
    "traces_kept": "tailsample_engine_traces_sampled_total",
    "traces_not_kept": "tailsample_engine_traces_not_sampled_total",
    "traces_evicted": "tailsample_engine_traces_evicted_total",
    "late_spans_forwarded": "tailsample_engine_late_spans_forwarded_total",
    "late_spans_dropped": "tailsample_engine_late_spans_dropped_total",
    "decision_lag_seconds": "tailsample_engine_decision_lag_seconds_total",
    "decisions_timed": "tailsample_engine_decisions_timed_total",
    "exporter_sent_spans": "otelcol_exporter_sent_spans_total",
    "exporter_send_failed_spans": "otelcol_exporter_send_failed_spans_total",
    "exporter_enqueue_failed_spans": "otelcol_exporter_enqueue_failed_spans_total",
    "memory_rss_bytes": "otelcol_process_memory_rss",
}


@dataclass
class _Point:
    t: float
    spans_in: float
    spans_kept: float
    lag: float
    timed: float


def _rate(a: _Point, b: _Point, attr: str) -> float | None:
    dt = b.t - a.t
    return None if dt <= 0 else max(0.0, (getattr(b, attr) - getattr(a, attr)) / dt)


class StatusPage:
    """The routes of the page for one service. `metrics()` renders the registry (the text `/metrics` serves);
    `pipelines()` the service's pipelines by id. `clock` is injectable for tests."""

    def __init__(self, metrics: Callable[[], str], pipelines: Callable[[], Mapping[str, PipelineView]],
                 gate: Gate | None, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 recover: Callable[[str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self._metrics = metrics
        self._recover = recover
        self._pipelines = pipelines
        self._gate = gate
        self._clock = clock
        self._wall = wall
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._history: deque[_Point] = deque(maxlen=HISTORY_POINTS)

    # ---- routes ----

    def routes(self, host: str) -> list[web.RouteDef]:
        """The page's routes for a metrics address on `host`: open on loopback, else behind the /debug gate."""
        handlers: dict[str, tuple[str, Handler]] = {
            "/status": ("status", self._page), "/status/data": ("status_data", self._data),
            "/status/trace/{trace_id}": ("status_trace", self._trace),
            "/status/assets/{name}": ("status_assets", self._asset),
            "POST /status/recover/{trace_id}": ("status_recover", self._recover_trace)}
        if is_loopback(host):
            return [web.post(path[5:], handler) if path.startswith("POST ") else web.get(path, handler)
                    for path, (_, handler) in handlers.items()]
        if self._gate is not None and self._gate.enabled:
            return self._gate.routes(handlers)
        return [web.route("*", "/status{rest:.*}", _disabled)]

    # ---- handlers ----

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=render_page(self.data()), content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)

    async def _data(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.data()), content_type="application/json", headers=SECURITY_HEADERS)

    async def _trace(self, request: web.Request) -> web.Response:
        try:
            body = self.lookup(request.match_info["trace_id"])
        except ValueError as e:
            return _json(400, {"error": str(e)})
        return _json(200, body)

    async def _recover_trace(self, request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        if not re.fullmatch(r"[0-9a-fA-F]{32}", trace_id):
            return _json(400, {"error": f"a trace ID is 32 hex digits, got {trace_id[:64]!r}"})
        if self._recover is None or not self._archive_on():
            return _json(404, {"error": "no pipeline keeps an archive of dropped traces (tailsample.archive)"})
        return _json(200, await self._recover(trace_id.lower()))

    def _archive_on(self) -> bool:
        return any(p.engine.archive_directory is not None for p in self._pipelines().values())

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            return _json(404, {"error": f"no asset {name!r}"})
        text = resources.files("tailsample.ui").joinpath("static").joinpath(name).read_text("utf-8")
        return web.Response(text=text, content_type=ASSETS[name], charset="utf-8",
                            headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

    # ---- what they answer ----

    def data(self) -> dict[str, Any]:
        """Everything the page shows, at most `CACHE_S` old."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < CACHE_S:
            return self._cached[1]
        got = self._collect(now)
        self._cached = (now, got)
        return got

    def _collect(self, now: float) -> dict[str, Any]:
        fam = parse_families(self._metrics())
        totals = {key: _sum(fam, name) for key, name in TOTALS.items()}
        point = _Point(now, totals["spans_in"], totals["spans_kept"], totals["decision_lag_seconds"],
                       totals["decisions_timed"])
        self._history.append(point)
        # rates over the last ~10 s of history (or what there is): steadier than between two polls
        base = next((p for p in self._history if now - p.t <= 10.0 and p is not point), None)
        rates: dict[str, float | None] = {"spans_in_per_s": None, "spans_kept_per_s": None,
                                          "decision_lag_recent_s": None}
        if base is not None:
            rates["spans_in_per_s"] = _rate(base, point, "spans_in")
            rates["spans_kept_per_s"] = _rate(base, point, "spans_kept")
            timed = point.timed - base.timed
            rates["decision_lag_recent_s"] = (point.lag - base.lag) / timed if timed > 0 else None
        history = []
        prev: _Point | None = None
        for p in self._history:
            if prev is not None:
                history.append([round(p.t - now, 1), _rate(prev, p, "spans_in"), _rate(prev, p, "spans_kept")])
            prev = p
        return {
            "generated_at": self._wall(), "poll_ms": POLL_MS,
            "totals": totals, "rates": rates, "history": history,
            "pipelines": [self._pipeline(pid, p, fam) for pid, p in sorted(self._pipelines().items())],
            "exporters": _exporters(fam)[:MAX_EXPORTERS],
            "limiters": _limiters(fam),
            "archive": {"available": self._archive_on()},
        }

    def _pipeline(self, pid: str, p: PipelineView, fam: dict[str, Series]) -> dict[str, Any]:
        proc = p.sampler_id
        sampled = _by(fam, "otelcol_processor_tail_sampling_count_traces_sampled_total", "policy", processor=proc,
                      decision="sampled")
        not_sampled = _by(fam, "otelcol_processor_tail_sampling_count_traces_sampled_total", "policy",
                          processor=proc, decision="not_sampled")
        decided = _by(fam, "tailsample_policy_decided_traces_total", "policy", processor=proc)
        policies = []
        for name in list(p.engine.config.policy_names)[:MAX_POLICIES]:
            s, n = sampled.get(name, 0.0), not_sampled.get(name, 0.0)
            policies.append({"policy": name, "sampled": s, "not_sampled": n, "decided": decided.get(name, 0.0),
                             "kept_share": s / (s + n) if s + n else None})

        def one(name: str) -> float:
            return _sum(fam, name, processor=proc)

        lag, timed = one("tailsample_engine_decision_lag_seconds_total"), one("tailsample_engine_decisions_timed_total")
        traces_in, kept = one("tailsample_engine_traces_received_total"), one("tailsample_engine_traces_sampled_total")
        decided_total = kept + one("tailsample_engine_traces_not_sampled_total") + one(
            "tailsample_engine_traces_dropped_by_policy_total")
        return {
            "id": pid, "processor": proc, "decision_wait_s": p.engine.config.decision_wait,
            "traces_in": traces_in, "traces_kept": kept, "kept_share": kept / decided_total if decided_total else None,
            "decision_lag_mean_s": lag / timed if timed else None,
            "traces_in_memory": one("tailsample_engine_traces_in_memory"),
            "limit_num_traces": one("tailsample_engine_limit_num_traces"),
            "buffered_bytes": one("tailsample_engine_buffered_bytes"),
            "limit_max_buffered_bytes": one("tailsample_engine_limit_max_buffered_bytes"),
            "traces_evicted": one("tailsample_engine_traces_evicted_total"),
            "late_spans_forwarded": one("tailsample_engine_late_spans_forwarded_total"),
            "late_spans_dropped": one("tailsample_engine_late_spans_dropped_total"),
            "refused_payloads": one("tailsample_engine_payloads_refused_total"),
            "policies": policies,
            "gaps": _gaps(p.engine),
            "recent_kept": _recent_kept(p.engine),
        }

    def lookup(self, trace_id: str) -> dict[str, Any]:
        """What every pipeline knows of `trace_id` (ValueError when it is not 32 hex digits)."""
        if not re.fullmatch(r"[0-9a-fA-F]{32}", trace_id):
            raise ValueError(f"a trace ID is 32 hex digits, got {trace_id[:64]!r}")
        out: dict[str, Any] = {}
        for pid, p in sorted(self._pipelines().items()):
            answer = p.engine.explain(trace_id)
            entry: dict[str, Any] = {"explain": answer, "text": describe(answer), "tree": None}
            payloads = p.engine.kept_trace(trace_id)
            if payloads:
                tree = build_traces(payloads).get(trace_id.lower())
                if tree is not None:
                    entry["tree"] = _tree_text(tree)
            out[pid] = entry
        available = self._recover is not None and self._archive_on()
        note = ("a trace not kept can be recovered while the archive holds it (see each pipeline's answer)"
                if available else "no pipeline keeps an archive of dropped traces (tailsample.archive): a trace not "
                                  "kept cannot be recovered")
        return {"trace_id": trace_id.lower(), "pipelines": out, "recover": {"available": available, "note": note}}


def _tree_text(tree: TraceTree) -> str:
    if tree.span_count > MAX_TREE_SPANS:
        return f"({tree.span_count} spans: too large to draw here; `tailsample show --url` prints it)"
    text = render_text(tree)
    return text if len(text) <= MAX_TREE_CHARS else text[:MAX_TREE_CHARS] + "\n… (cut)"


def _exporters(fam: dict[str, Series]) -> list[dict[str, Any]]:
    names = sorted({labels["exporter"] for n in ("otelcol_exporter_sent_spans_total", "otelcol_exporter_queue_size")
                    for labels, _ in fam.get(n, []) if "exporter" in labels})
    return [{"exporter": e,
             "queue_size": _sum(fam, "otelcol_exporter_queue_size", exporter=e),
             "queue_capacity": _sum(fam, "otelcol_exporter_queue_capacity", exporter=e),
             "sent_spans": _sum(fam, "otelcol_exporter_sent_spans_total", exporter=e),
             "send_failed_spans": _sum(fam, "otelcol_exporter_send_failed_spans_total", exporter=e),
             "enqueue_failed_spans": _sum(fam, "otelcol_exporter_enqueue_failed_spans_total", exporter=e)}
            for e in names]


def _limiters(fam: dict[str, Series]) -> list[dict[str, Any]]:
    names = sorted({labels["processor"] for labels, _ in fam.get("tailsample_memory_limiter_used_bytes", [])})
    return [{"processor": x,
             "used_bytes": _sum(fam, "tailsample_memory_limiter_used_bytes", processor=x),
             "soft_limit_bytes": _sum(fam, "tailsample_memory_limiter_soft_limit_bytes", processor=x),
             "hard_limit_bytes": _sum(fam, "tailsample_memory_limiter_hard_limit_bytes", processor=x),
             "refusing": bool(_sum(fam, "tailsample_memory_limiter_refusing", processor=x)),
             "refused_payloads": _sum(fam, "tailsample_memory_limiter_refused_payloads_total", processor=x)}
            for x in names]


def _gaps(engine: Engine) -> dict[str, Any] | None:
    report = engine.gaps()
    if report is None:
        return None
    return {"traces_audited": report["traces_audited"], "traces_with_gaps": report["traces_with_gaps"],
            "pairs": [{k: p[k] for k in ("source", "destination", "calls", "gaps", "gap_traces", "overflow")}
                      for p in report["pairs"][:MAX_PAIRS]],
            "pairs_left_out": max(0, len(report["pairs"]) - MAX_PAIRS),
            "broken": [{"service": b["service"], "orphan_spans": b["orphan_spans"], "traces": b["traces"]}
                       for b in report["broken"][:MAX_BROKEN]]}


def _recent_kept(engine: Engine) -> list[dict[str, Any]]:
    rows = []
    for k in engine.recent_kept(MAX_TREES):
        row: dict[str, Any] = {"trace_id": k["trace_id"], "span_count": k["span_count"], "tree": None}
        if k["span_count"] <= MAX_TREE_SPANS:
            tree = build_traces(engine.kept_trace(k["trace_id"]) or []).get(k["trace_id"])
            if tree is not None:
                row.update(summary_json(tree))
                row["tree"] = _tree_text(tree)
        rows.append(row)
    return rows


async def _disabled(request: web.Request) -> web.Response:
    return _json(404, {"error": DISABLED_MESSAGE, "disabled": True})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=SECURITY_HEADERS)


# ---- the page -------------------------------------------------------------------------------------------------

def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    for factor, suffix in ((1 << 30, " GiB"), (1 << 20, " MiB"), (1 << 10, " KiB")) if unit == "B" else ():
        if abs(v) >= factor:
            return f"{v / factor:.1f}{suffix}"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if unit == "%":
        return f"{v * 100:.1f}%"
    return f"{v:,.0f}" if v == int(v) or abs(v) >= 100 else f"{v:.1f}"


def tiles(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The headline tiles (key, label, value): rendered by the server, redrawn by the script from the same keys."""
    t, r = data["totals"], data["rates"]
    decided = t["traces_kept"] + t["traces_not_kept"]
    return [
        ("spans_in_per_s", "spans in / s", _num(r["spans_in_per_s"])),
        ("spans_kept_per_s", "spans kept / s", _num(r["spans_kept_per_s"])),
        ("kept_share", "traces kept", _num(t["traces_kept"] / decided if decided else None, "%")),
        ("decision_lag", "decision lag (mean, past due)",
         _num(t["decision_lag_seconds"] / t["decisions_timed"] if t["decisions_timed"] else None, "s")),
        ("spans_in", "spans in (total)", _num(t["spans_in"])),
        ("spans_kept", "spans kept (total)", _num(t["spans_kept"])),
        ("traces_evicted", "traces evicted", _num(t["traces_evicted"])),
        ("memory_rss_bytes", "resident memory", _num(t["memory_rss_bytes"], "B")),
    ]


def render_page(data: dict[str, Any]) -> str:
    """The page, with the tiles filled in (it reads without the script; the script keeps it current)."""
    tile_html = "".join(f'<div class="tile"><div class="v" data-key="{k}">{html.escape(v)}</div>'
                        f'<div class="k">{html.escape(label)}</div></div>' for k, label, v in tiles(data))
    # inside <script> nothing is entity-decoded: keep `</script>` and friends out by escaping in JSON instead
    initial = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tailsample status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/status/assets/status.css"></head>
<body>
<header><h1>tailsample</h1><span id="updated" data-generated="{data['generated_at']}">status</span>
<a href="/metrics">/metrics</a> <a href="/status/data">/status/data</a></header>
<section class="tiles">{tile_html}</section>
<section><h2>Throughput</h2><svg id="rates" viewBox="0 0 600 120" preserveAspectRatio="none"></svg>
<div class="legend"><span class="in">spans in / s</span> <span class="kept">spans kept / s</span>
<span id="rates-max" class="note"></span></div></section>
<section id="pipelines"></section>
<section><h2>Exporters</h2><div id="exporters"></div></section>
<section><h2>Memory limiter</h2><div id="limiters"></div></section>
<section><h2>Look up a trace</h2>
<form id="lookup"><input id="trace-id" name="trace_id" placeholder="32 hex digits" size="36" autocomplete="off">
<button type="submit">explain</button></form>
<p class="note">With an archive of dropped traces (<code>tailsample.archive</code>), a trace not kept can be recovered
here into the exporters.</p><pre id="lookup-result"></pre><button id="recover" type="button" hidden>recover into the
exporters</button></section>
<noscript><p>The page redraws itself with JavaScript; without it, reload, or read <a href="/status/data">the data</a>.
</p></noscript>
<script type="application/json" id="initial">{initial}</script>
<script src="/status/assets/status.js"></script>
</body></html>
"""


__all__ = ["DISABLED_MESSAGE", "StatusPage", "is_loopback", "parse_families", "render_page", "tiles"]
