"""Traces already stored in a tracing backend, pulled through its query API: what `tailsample gaps --jaeger`,
`show --jaeger` and `explain --jaeger` read.

An SRE arriving after an incident has only the stored traces. This module fetches them as OTLP protobuf
payloads, the same bytes the offline audit (`gaps.audit_payloads`) and the tree (`tree.build_traces`) read from
files, so a stored trace is judged by the same code as a recorded or a live one.

Jaeger v2 (its `jaeger_query` extension, HTTP API v3):
- `GET /api/v3/services` → `{"services": [...]}` (`{}` when there are none);
- `GET /api/v3/traces?query.service_name=S&query.start_time_min=T&query.start_time_max=T&query.num_traces=N` →
  `{"result": {"resourceSpans": [...]}}`: the whole traces that have a span of S started in the window, at most
  N of them, as OTLP/JSON (IDs in hex, enums as integers). v1.75.0 reads the number as `query.num_traces`, later
  versions as `query.search_depth` (keeping the old name as an alias): both are sent. A search with no match
  answers 404 `{"error": {"httpCode": 404, "message": "No traces found"}}`;
- `GET /api/v3/traces/<trace-id>` → the same document for one trace, or that 404.

Jaeger v1.75.0 answers one document, sent chunked as `text/plain`; a response may also be several JSON documents
one after the other (a streamed answer, as later versions may send): each is read.

Tempo (its HTTP API, from its documentation; Tempo cannot run here, so only its documented shapes are tested):
- `GET /api/search/tag/service.name/values` → `{"tagValues": [...]}`;
- `GET /api/search?tags=service.name=S&start=<unix s>&end=<unix s>&limit=N` → `{"traces": [{"traceID": ...}]}`
  (trace IDs may lack their leading zeros: they are padded back);
- `GET /api/traces/<trace-id>` asked with `Accept: application/protobuf` → a `tempopb.Trace`, whose only field
  (`batches`, 1: repeated ResourceSpans) is the wire form of an ExportTraceServiceRequest; answered in JSON
  instead, `{"batches": [...]}` (or the v2 `{"trace": {"resourceSpans": [...]}}`) is read; 404 when unknown.

Bounded: at most `limit` traces per pull, at most `max_bytes` read over all the requests of a client (a larger
answer is an error, never a partial read taken for whole), each request with a timeout. Every failure (the
backend down, an HTTP error, an answer that is not what the API documents) is a `BackendError` whose message
says what and where; nothing here raises anything else on bad input.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tailsample.collector.fileformat import json_documents, json_to_proto
from tailsample.engine import split_by_trace
from tailsample.errors import DecodeError, TailsampleError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 256 << 20  # over a whole pull: the traces are audited in memory anyway
DEFAULT_LIMIT = 1000


class BackendError(TailsampleError):
    """The backend could not be reached, refused the query, or answered something that is not its API's."""


@dataclass
class Pulled:
    """Traces pulled from a backend: one OTLP protobuf payload per trace, by 32-hex trace ID."""

    traces: dict[str, bytes] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)  # the services searched
    limited: bool = False  # the trace limit stopped the pull: more traces may match
    bytes_read: int = 0

    def payloads(self) -> Iterator[bytes]:
        return iter(self.traces.values())


def _rfc3339(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _documents(body: bytes, where: str) -> Iterator[Any]:
    """Each JSON document of a body (one, or several one after the other)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BackendError(f"{where}: the answer is not UTF-8 text ({exc})") from None
    try:
        for doc, _ in json_documents(text):
            yield doc
    except json.JSONDecodeError as exc:
        raise BackendError(f"{where}: the answer is not JSON: {exc.msg} at character {exc.pos} "
                           f"(starts {text[:80]!r})") from None
    except RecursionError:
        raise BackendError(f"{where}: the answer is nested too deep to read") from None


def _api_error(doc: Any) -> tuple[int, str] | None:
    """The (HTTP code, message) of a Jaeger API error document, if it is one."""
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return int(err.get("httpCode") or 0), str(err.get("message", ""))
    return None


class _HttpBackend:
    """What both clients share: the base URL, the timeout, the byte budget, GET with clear errors."""

    name = "the backend"
    hint = ""  # what to check when it cannot be reached

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendError(f"{url!r} is not an http(s) URL of {self.name}'s query API")
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.bytes_read = 0

    @property
    def where(self) -> str:
        return f"{self.name} at {self.url}"

    def _fetch(self, path: str, params: dict[str, str] | None, accept: str) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) of a GET, HTTP errors included; never more than the byte budget."""
        url = self.url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        budget = self.max_bytes - self.bytes_read
        request = urllib.request.Request(url, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                status, ctype, body = resp.status, resp.headers.get("Content-Type", ""), resp.read(budget + 1)
        except urllib.error.HTTPError as exc:
            status, ctype, body = exc.code, exc.headers.get("Content-Type", ""), exc.read(64 << 10)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"cannot reach {self.where} ({reason}); {self.hint}") from None
        self.bytes_read += len(body)
        if len(body) > budget:
            raise BackendError(f"{self.where}: answers past the read limit of {self.max_bytes:,} bytes "
                               "(--max-bytes); ask for fewer traces (--limit, --lookback)")
        return status, ctype, body


class JaegerClient(_HttpBackend):
    """Jaeger's query service (v2, HTTP API v3) at `url`, e.g. http://127.0.0.1:16686."""

    name = "Jaeger"
    hint = "is its query service (jaeger_query, HTTP) listening at this address?"

    def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, list[Any]]:
        """(HTTP status, JSON documents of the body). A 4xx/5xx with Jaeger's error document is returned, not
        raised; anything else that is not JSON from the API raises BackendError."""
        where = self.where
        status, _, body = self._fetch(path, params, "application/json")
        try:
            docs = list(_documents(body, where))
        except BackendError:
            if status >= 400:
                text = body[:200].decode("utf-8", "replace").strip()
                raise BackendError(f"{where}: HTTP {status} on {path}: {text}") from None
            raise
        if status >= 400 and not any(_api_error(d) for d in docs):
            raise BackendError(f"{where}: HTTP {status} on {path}")
        return status, docs

    def _traces(self, status: int, docs: list[Any], what: str) -> dict[str, bytes]:
        """The traces of a trace answer, one payload per trace ID (hex)."""
        out: dict[str, bytes] = {}
        for doc in docs:
            err = _api_error(doc)
            if err is not None:
                code, message = err
                if code == 404 or status == 404:  # "No traces found": an empty answer, not a failure
                    continue
                raise BackendError(f"Jaeger at {self.url} refused {what}: HTTP {code or status}: {message}")
            if not isinstance(doc, dict) or not isinstance(doc.get("result", {}), dict):
                raise BackendError(f"Jaeger at {self.url}: {what}: expected {{\"result\": {{\"resourceSpans\": "
                                   f"...}}}}, got {json.dumps(doc)[:120]}")
            result = doc.get("result", {})
            if not result.get("resourceSpans"):
                continue
            try:
                payload = json_to_proto(result)
                pieces = split_by_trace(payload)
            except (DecodeError, ValueError) as exc:
                raise BackendError(f"Jaeger at {self.url}: {what}: the traces are not valid OTLP/JSON: "
                                   f"{exc}") from None
            for trace_id, piece in pieces:
                tid = trace_id.hex()
                # Jaeger answers one resourceSpans per span: the pieces of one trace come together again here
                out[tid] = out[tid] + piece if tid in out else piece
        return out

    def services(self) -> list[str]:
        """The service names Jaeger has seen."""
        _, docs = self._get("/api/v3/services")
        names: list[str] = []
        for doc in docs:
            err = _api_error(doc)
            if err is not None:
                raise BackendError(f"Jaeger at {self.url} refused the service list: HTTP {err[0]}: {err[1]}")
            services = doc.get("services", []) if isinstance(doc, dict) else None
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise BackendError(f"Jaeger at {self.url}: /api/v3/services: expected {{\"services\": [names]}}, "
                                   f"got {json.dumps(doc)[:120]}")
            names.extend(s for s in services if s not in names)
        return names

    def search(self, service: str, *, start: float, end: float, limit: int) -> dict[str, bytes]:
        """The traces with a span of `service` started between `start` and `end` (Unix seconds), at most
        `limit`: one OTLP protobuf payload per trace ID (hex)."""
        n = str(max(1, limit))
        params = {"query.service_name": service, "query.start_time_min": _rfc3339(start),
                  "query.start_time_max": _rfc3339(end), "query.search_depth": n, "query.num_traces": n}
        status, docs = self._get("/api/v3/traces", params)
        return self._traces(status, docs, f"the search for service {service!r}")

    def trace(self, trace_id: str) -> bytes | None:
        """One trace as an OTLP protobuf payload, or None when Jaeger does not have it."""
        status, docs = self._get(f"/api/v3/traces/{trace_id}")
        traces = self._traces(status, docs, f"trace {trace_id}")
        return traces.get(trace_id.lower())


class TempoClient(_HttpBackend):
    """Tempo's HTTP API (query-frontend) at `url`, e.g. http://127.0.0.1:3200."""

    name = "Tempo"
    hint = "is Tempo's HTTP API (query-frontend, port 3200 by default) listening at this address?"

    def _json(self, path: str, params: dict[str, str] | None = None) -> Any | None:
        """The JSON document of a GET, or None on 404."""
        status, _, body = self._fetch(path, params, "application/json")
        if status == 404:
            return None
        if status >= 400:
            text = body[:200].decode("utf-8", "replace").strip()
            raise BackendError(f"{self.where}: HTTP {status} on {path}: {text}")
        docs = list(_documents(body, self.where))
        if len(docs) != 1:
            raise BackendError(f"{self.where}: {path}: expected one JSON document, got {len(docs)}")
        return docs[0]

    def services(self) -> list[str]:
        doc = self._json("/api/search/tag/service.name/values")
        values = doc.get("tagValues") if isinstance(doc, dict) else None
        if doc is None:
            return []
        if not isinstance(values, list):
            raise BackendError(f"{self.where}: expected {{\"tagValues\": [...]}}, got {json.dumps(doc)[:120]}")
        names: list[str] = []
        for v in values:  # v1: strings; v2: {"type": "string", "value": ...}
            name = v.get("value") if isinstance(v, dict) else v
            if isinstance(name, str) and name not in names:
                names.append(name)
        return names

    def _trace_ids(self, service: str, *, start: float, end: float, limit: int) -> list[str]:
        params = {"tags": f"service.name={service}", "start": str(int(start)), "end": str(int(end) + 1),
                  "limit": str(max(1, limit))}
        doc = self._json("/api/search", params)
        if doc is None:
            return []
        traces = doc.get("traces", []) if isinstance(doc, dict) else None
        if not isinstance(traces, list):
            raise BackendError(f"{self.where}: /api/search: expected {{\"traces\": [...]}}, got "
                               f"{json.dumps(doc)[:120]}")
        ids = []
        for t in traces:
            tid = t.get("traceID") if isinstance(t, dict) else None
            if not isinstance(tid, str) or not tid or len(tid) > 32 or any(c not in _HEX for c in tid.lower()):
                raise BackendError(f"{self.where}: /api/search: a trace without a valid traceID: "
                                   f"{json.dumps(t)[:120]}")
            ids.append(tid.lower().zfill(32))  # Tempo writes IDs without their leading zeros
        return ids[:limit]

    def search(self, service: str, *, start: float, end: float, limit: int) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for tid in self._trace_ids(service, start=start, end=end, limit=limit):
            payload = self.trace(tid)
            if payload is not None:
                out[tid] = payload
        return out

    def trace(self, trace_id: str) -> bytes | None:
        path = f"/api/traces/{trace_id}"
        status, ctype, body = self._fetch(path, None, "application/protobuf")
        if status == 404:
            return None
        if status >= 400:
            text = body[:200].decode("utf-8", "replace").strip()
            raise BackendError(f"{self.where}: HTTP {status} on {path}: {text}")
        try:
            if "json" in ctype or body[:1] == b"{":
                docs = list(_documents(body, self.where))
                doc = docs[0] if len(docs) == 1 else None
                if isinstance(doc, dict) and isinstance(doc.get("trace"), dict):  # /api/v2/traces
                    doc = doc["trace"]
                if not isinstance(doc, dict) or not isinstance(doc.get("batches", doc.get("resourceSpans")), list):
                    raise BackendError(f"{self.where}: {path}: expected {{\"batches\": [...]}}, got "
                                       f"{body[:120]!r}")
                payload = json_to_proto({"resourceSpans": doc.get("batches", doc.get("resourceSpans"))})
            else:
                payload = body  # tempopb.Trace: field 1 is repeated ResourceSpans, as in the OTLP request
            pieces = split_by_trace(payload)
        except DecodeError as exc:
            raise BackendError(f"{self.where}: {path}: not a trace ({exc})") from None
        mine = b"".join(p for tid, p in pieces if tid.hex() == trace_id.lower())
        return mine or None


_HEX = frozenset("0123456789abcdef")
Backend = JaegerClient | TempoClient


def pull(client: Backend, *, services: Sequence[str] = (), lookback: float = 3600.0,
         limit: int = DEFAULT_LIMIT, now: float | None = None) -> Pulled:
    """The traces of the last `lookback` seconds with a span of one of `services` (all the services the backend
    knows when none are given), at most `limit` traces in all, each once."""
    end = time.time() if now is None else now
    names = list(services) or client.services()
    out = Pulled(services=names)
    for name in names:
        left = limit - len(out.traces)
        if left <= 0:
            out.limited = True
            break
        found = client.search(name, start=end - lookback, end=end, limit=left)
        if len(found) >= left:
            out.limited = True
        for tid, payload in found.items():
            if tid not in out.traces and len(out.traces) < limit:
                out.traces[tid] = payload  # a trace found by several services' searches is the same trace
    out.bytes_read = client.bytes_read
    return out


__all__ = ["DEFAULT_LIMIT", "DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT", "BackendError", "JaegerClient", "Pulled",
           "pull"]
