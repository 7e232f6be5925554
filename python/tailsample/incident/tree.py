"""Kept traces as trees, for reading in a terminal: what `tailsample show` prints.

A tail sampler's output is a set of whole traces, and the point of keeping one (an error, a slow request, an
agent run that burned 50,000 tokens) is to look at it. This module turns OTLP `ExportTraceServiceRequest`
payloads (protobuf bytes, wherever they come from: files of the collector's file exporter through
`fileformat.read_payloads`, or a running service's recent kept traces) into one `TraceTree` per trace ID and
renders it as an indented tree, each span with its duration, status and a few key attributes:

    Root span: agent.investigate_incident (duration: 3m 42s)
      ├── gen_ai.chat (LLM call 1)
      │     duration: 2.3s, input_tokens: 1840, output_tokens: 312
      └── gen_ai.tool.fetch_cloudwatch_logs (tool call 1)
            duration: 1.1s, log_group: /aws/lambda/payment, records_returned: 847

Spans are placed under their parent, children in start-time order. A span whose parent is not in the trace
(lost, or not sampled upstream) is shown as a root of its own, marked as an orphan: a broken trace reads as
several trees, and the header says so.

GenAI spans (OpenTelemetry semantic conventions, `gen_ai.*`) show the model, input and output tokens, finish
reasons and tool name; the trace header sums them up. A span is an LLM call when `gen_ai.operation.name` is
chat, text_completion or generate_content, a tool call when it is execute_tool; without the attribute, the
span name decides (`gen_ai.chat...`, `gen_ai.tool.<tool>`, or the conventions' `chat <model>`,
`execute_tool <tool>` on a span with gen_ai attributes). Usage is counted once: agent spans (invoke_agent)
may report the summed usage of the calls beneath them, and two instrumentations of one call (a framework's
span around the client library's) both report it; so a span's tokens count only when no span beneath it
reports tokens, and an LLM call with an LLM call beneath it is a wrapper, not a call of its own.

A call whose callee never joined the trace is marked (`⚠ callee never joined: <destination>`), with the rules
of the propagation audit (`tailsample gaps`, README "Propagation gaps"): a CLIENT or PRODUCER span with no
SERVER or CONSUMER child in the trace, unless it wraps another CLIENT/PRODUCER span (two instrumentations of one
call) or carries `db.system`/`db.system.name` (databases are not traced services). The destination is what the
span names: `peer.service`, `messaging.destination.name`, `server.address` (with `server.port`), `rpc.service`,
`net.peer.name` (with `net.peer.port`), else the host and port of `url.full`/`http.url`.

Everything is deterministic (sorting ties are broken by span ID), so the text can be compared in tests.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as _ProtobufDecodeError  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tailsample.collector.fileformat import repair_utf8
from tailsample.errors import DecodeError

# A JSON-safe attribute value: AnyValue with bytes as base64 and non-finite doubles as "NaN"/"Infinity".
AttrValue = str | int | float | bool | None | list[Any] | dict[str, Any]

# Shown on any span that has them (semantic conventions; the older HTTP names too, still widely emitted).
KEY_ATTRIBUTES = (
    "http.request.method", "http.method", "http.route", "http.response.status_code", "http.status_code",
    "url.full", "http.url", "db.system", "db.system.name", "db.operation.name", "rpc.service", "rpc.method",
    "messaging.destination.name", "peer.service", "server.address", "error.type",
)
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
GEN_AI_OPERATIONS = LLM_OPERATIONS | TOOL_OPERATIONS | {"embeddings", "invoke_agent", "create_agent"}
MAX_TOOL_ATTRIBUTES = 8  # a tool span's own attributes (its arguments and results) shown, at most
_NOT_TOOL_ATTRIBUTES = ("gen_ai.", "code.", "thread.", "otel.")  # instrumentation's, not the tool's
_TEXT_VALUE_LIMIT = 120  # characters of an attribute value in the text rendering
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CALL_KINDS = frozenset({"CLIENT", "PRODUCER"})
ANSWER_KINDS = frozenset({"SERVER", "CONSUMER"})
NOT_CALL_ATTRIBUTES = ("db.system", "db.system.name")  # as the audit's default ignore_when_present


@dataclass
class GenAI:
    """The GenAI facts of one span (semantic conventions `gen_ai.*`)."""

    operation: str | None  # gen_ai.operation.name, or inferred from the span name
    model: str | None  # gen_ai.response.model, else gen_ai.request.model
    input_tokens: int | None  # gen_ai.usage.input_tokens (or the older prompt_tokens)
    output_tokens: int | None  # gen_ai.usage.output_tokens (or the older completion_tokens)
    finish_reasons: tuple[str, ...]
    tool_name: str | None  # gen_ai.tool.name, or the span name after `gen_ai.tool.` / `execute_tool `
    llm_call: bool = False  # counted as an LLM call (not a wrapper of one)
    tool_call: bool = False
    call_number: int | None = None  # 1-based, in start order, among the trace's LLM calls or tool calls


@dataclass
class SpanNode:
    """One span of a trace, with its children (sorted by start time)."""

    name: str
    service: str  # resource attribute service.name ("unknown_service" without one)
    trace_id: str  # hex
    span_id: str  # hex
    parent_span_id: str  # hex, "" for a root
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER, UNSPECIFIED
    start_ns: int  # Unix nanoseconds
    end_ns: int
    status_code: str  # UNSET, OK, ERROR
    status_message: str
    attributes: dict[str, AttrValue]  # the key attributes (see KEY_ATTRIBUTES), not all of them
    hidden_attributes: int = 0  # a tool span's own attributes beyond MAX_TOOL_ATTRIBUTES, not kept
    gen_ai: GenAI | None = None
    orphan: bool = False  # its parent is not in the trace: shown as a root
    destination: str | None = None  # a call's destination as its attributes name it (CLIENT/PRODUCER only)
    not_a_call: bool = False  # a CLIENT/PRODUCER span the audit skips (db.system...)
    callee_never_joined: bool = False  # a call with no SERVER/CONSUMER child in the trace (see the module doc)
    children: list[SpanNode] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status_code == "ERROR"

    def walk(self) -> Iterator[SpanNode]:
        """This span and every span beneath it, depth first, children in order (no recursion)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


@dataclass
class GenAITotals:
    """A trace's GenAI usage: tokens counted once (see the module doc), calls counted."""

    spans: int = 0  # spans with gen_ai attributes or a gen_ai name
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    has_tokens: bool = False  # some span reported token usage


@dataclass
class TraceTree:
    """One trace: its root spans (true roots first, then orphans, each by start time) and its summary."""

    trace_id: str  # 32 hex digits
    roots: list[SpanNode]
    span_count: int
    start_ns: int
    end_ns: int
    services: tuple[str, ...]  # sorted
    gen_ai: GenAITotals
    errors: int  # spans with status ERROR
    unanswered_calls: int = 0  # calls whose callee never joined the trace
    duplicate_spans: int = 0  # spans seen again with a span ID already taken (kept: the first), ignored

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def orphans(self) -> int:
        return sum(1 for r in self.roots if r.orphan)

    @property
    def broken(self) -> bool:
        """Not one tree: a span's parent is missing (or there are several roots)."""
        return len(self.roots) != 1 or self.roots[0].orphan

    def spans(self) -> Iterator[SpanNode]:
        """Every span, tree by tree, depth first."""
        for root in self.roots:
            yield from root.walk()


# -- building ---------------------------------------------------------------------------------------------


def build_traces(payloads: Iterable[bytes], *, attributes: Sequence[str] = ()) -> dict[str, TraceTree]:
    """The traces of these `ExportTraceServiceRequest` payloads (protobuf bytes), by 32-hex trace ID.

    A trace's spans may be spread over any number of payloads. `attributes` names span attributes to keep
    among the key attributes of every span that has them (`--attr`). Raises `DecodeError` for a payload that
    is not a protobuf ExportTraceServiceRequest.
    """
    extra = tuple(dict.fromkeys(attributes))
    by_trace: dict[str, dict[str, SpanNode]] = {}
    duplicates: dict[str, int] = {}
    for n, payload in enumerate(payloads):
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(payload)
        except _ProtobufDecodeError as exc:
            # Strings that are not UTF-8 (taken as pdata takes them) read with U+FFFD for each invalid sequence.
            repaired = repair_utf8(payload) if "UTF-8" in str(exc) else None
            if repaired is None:
                raise DecodeError(f"payload {n + 1}: not a protobuf ExportTraceServiceRequest: {exc}") from None
            request.ParseFromString(repaired)
        for rs in request.resource_spans:
            service = "unknown_service"
            for a in rs.resource.attributes:
                if a.key == "service.name" and a.value.HasField("string_value"):
                    service = a.value.string_value
            for ss in rs.scope_spans:
                for span in ss.spans:
                    node = _span_node(span, service, extra)
                    spans = by_trace.setdefault(node.trace_id, {})
                    if node.span_id in spans:
                        duplicates[node.trace_id] = duplicates.get(node.trace_id, 0) + 1
                    else:
                        spans[node.span_id] = node
    return {tid: _assemble(tid, spans, duplicates.get(tid, 0)) for tid, spans in by_trace.items()}


def _span_node(span: Span, service: str, extra: Sequence[str]) -> SpanNode:
    values = {a.key: a.value for a in span.attributes}  # the last of a repeated key wins, as in the SDKs
    try:
        kind = Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_")
    except ValueError:
        kind = str(span.kind)
    try:
        status = Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_")
    except ValueError:
        status = str(span.status.code)
    gen_ai = _gen_ai(span.name, values)
    attrs: dict[str, AttrValue] = {}
    hidden = 0
    if gen_ai is not None and gen_ai.operation in TOOL_OPERATIONS:
        for key, value in values.items():  # the tool's own attributes: its arguments and results
            if key.startswith(_NOT_TOOL_ATTRIBUTES) or key in KEY_ATTRIBUTES or key in extra:
                continue
            if len(attrs) < MAX_TOOL_ATTRIBUTES:
                attrs[key] = _value(value)
            else:
                hidden += 1
    for key in KEY_ATTRIBUTES:
        if key in values:
            attrs[key] = _value(values[key])
    for event in span.events:
        if event.name == "exception":
            message = next((a.value for a in event.attributes if a.key == "exception.message"), None)
            if message is not None:
                attrs["exception.message"] = _value(message)
                break
    for key in extra:
        if key in values:
            attrs[key] = _value(values[key])
    call = kind in CALL_KINDS
    return SpanNode(
        name=span.name, service=service, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(), kind=kind, start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano, status_code=status, status_message=span.status.message,
        attributes=attrs, hidden_attributes=hidden, gen_ai=gen_ai,
        destination=call_destination(values) if call else None,
        not_a_call=call and any(k in values for k in NOT_CALL_ATTRIBUTES),
    )


def _text(v: Any) -> str | None:
    if v is not None and v.HasField("string_value") and v.string_value:
        return str(v.string_value)
    return None


def _port(v: Any) -> str | None:
    if v is None:
        return None
    if v.HasField("int_value") and v.int_value > 0:
        return str(v.int_value)
    text = _text(v)
    return text if text is not None and text.isdigit() else None


def _with_port(host: str, port: str | None) -> str:
    if port is None or host.endswith(f":{port}"):  # Python's instrumentation writes "host:port" already
        return host
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _url_host(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port or bracket
        return None
    if not host:
        return None
    return _with_port(host, str(port) if port is not None else None)


def call_destination(values: dict[str, Any]) -> str | None:
    """What a CLIENT/PRODUCER span names as its destination (AnyValues by key), or None: the first of
    `peer.service`, `messaging.destination.name`, `server.address`(:`server.port`), `rpc.service`,
    `net.peer.name`(:`net.peer.port`), then the host:port of `url.full` or `http.url`."""
    for key in ("peer.service", "messaging.destination.name"):
        if (text := _text(values.get(key))) is not None:
            return text
    if (host := _text(values.get("server.address"))) is not None:
        return _with_port(host, _port(values.get("server.port")))
    if (text := _text(values.get("rpc.service"))) is not None:
        return text
    if (host := _text(values.get("net.peer.name"))) is not None:
        return _with_port(host, _port(values.get("net.peer.port")))
    for key in ("url.full", "http.url"):
        if (url := _text(values.get(key))) is not None and (host := _url_host(url)) is not None:
            return host
    return None


def _gen_ai(name: str, values: dict[str, Any]) -> GenAI | None:
    if not name.startswith("gen_ai.") and not any(k.startswith("gen_ai.") for k in values):
        return None

    def text(*keys: str) -> str | None:
        for key in keys:
            v = values.get(key)
            if v is not None and v.HasField("string_value") and v.string_value:
                return str(v.string_value)
        return None

    def integer(*keys: str) -> int | None:
        for key in keys:
            v = values.get(key)
            if v is not None and v.HasField("int_value"):
                return int(v.int_value)
            if v is not None and v.HasField("double_value") and math.isfinite(v.double_value):
                return round(float(v.double_value))
        return None

    operation = text("gen_ai.operation.name")
    tool_name = text("gen_ai.tool.name")
    first_word = name.split(" ", 1)[0]
    if operation is None:
        if name.startswith("gen_ai.chat"):
            operation = "chat"
        elif name.startswith("gen_ai.tool.") or tool_name is not None:
            operation = "execute_tool"
        elif name.startswith("gen_ai.") and name[7:].split(".", 1)[0] in GEN_AI_OPERATIONS:
            operation = name[7:].split(".", 1)[0]
        elif first_word in GEN_AI_OPERATIONS:
            operation = first_word
    if tool_name is None and operation in TOOL_OPERATIONS:
        if name.startswith("gen_ai.tool."):
            tool_name = name.removeprefix("gen_ai.tool.") or None
        elif first_word == "execute_tool" and " " in name:
            tool_name = name.split(" ", 1)[1]
    reasons: tuple[str, ...] = ()
    finish = values.get("gen_ai.response.finish_reasons")
    if finish is not None:
        if finish.HasField("array_value"):
            reasons = tuple(str(_value(v)) for v in finish.array_value.values)
        elif finish.HasField("string_value"):  # not the conventions' type, but seen
            reasons = (finish.string_value,)
    return GenAI(
        operation=operation,
        model=text("gen_ai.response.model", "gen_ai.request.model"),
        input_tokens=integer("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens=integer("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        finish_reasons=reasons,
        tool_name=tool_name,
    )


def _value(v: Any) -> AttrValue:
    """An AnyValue as a JSON-safe Python value."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")  # as OTLP/JSON writes bytes
    value = getattr(v, which)
    if which == "double_value" and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value  # type: ignore[no-any-return]


def _order(node: SpanNode) -> tuple[int, int, str, str]:
    return (node.start_ns, node.end_ns, node.name, node.span_id)


def _assemble(trace_id: str, spans: dict[str, SpanNode], duplicates: int) -> TraceTree:
    roots: list[SpanNode] = []
    for node in spans.values():
        parent = spans.get(node.parent_span_id) if node.parent_span_id != node.span_id else None
        if parent is None:
            node.orphan = node.parent_span_id != ""
            roots.append(node)
        else:
            parent.children.append(node)
    for node in spans.values():
        node.children.sort(key=_order)
    # Spans in a parent loop (A under B under A) are reachable from no root: cut each loop at its earliest span.
    reached = {n.span_id for r in roots for n in r.walk()}
    while len(reached) < len(spans):
        cut = min((n for n in spans.values() if n.span_id not in reached), key=_order)
        parent = spans[cut.parent_span_id]
        parent.children.remove(cut)
        cut.orphan = True
        roots.append(cut)
        reached.update(n.span_id for n in cut.walk())
    roots.sort(key=lambda n: (n.orphan, *_order(n)))
    tree = TraceTree(
        trace_id=trace_id, roots=roots, span_count=len(spans),
        start_ns=min(n.start_ns for n in spans.values()),
        end_ns=max(max(n.end_ns, n.start_ns) for n in spans.values()),
        services=tuple(sorted({n.service for n in spans.values()})), gen_ai=GenAITotals(),
        errors=sum(1 for n in spans.values() if n.is_error), duplicate_spans=duplicates,
    )
    for node in spans.values():
        if node.kind in CALL_KINDS and not node.not_a_call:
            kinds = {c.kind for c in node.children}
            # a wrapper of another call is not a call of its own; an answered one is answered
            node.callee_never_joined = not (kinds & ANSWER_KINDS or kinds & CALL_KINDS)
    tree.unanswered_calls = sum(1 for n in spans.values() if n.callee_never_joined)
    _count_gen_ai(tree)
    return tree


def _count_gen_ai(tree: TraceTree) -> None:
    """Fill the totals and number the calls (see the module doc for what counts once)."""
    totals = tree.gen_ai
    order: list[SpanNode] = list(tree.spans())
    position = {id(n): i for i, n in enumerate(order)}
    # Bottom-up: which spans have, beneath them, input tokens / output tokens / an LLM call.
    below: dict[int, tuple[bool, bool, bool]] = {}
    for node in reversed(order):  # children come after their parent in depth-first order
        inp = out = llm = False
        for child in node.children:
            c_inp, c_out, c_llm = below[id(child)]
            g = child.gen_ai
            inp = inp or c_inp or (g is not None and g.input_tokens is not None)
            out = out or c_out or (g is not None and g.output_tokens is not None)
            llm = llm or c_llm or (g is not None and g.operation in LLM_OPERATIONS)
        below[id(node)] = (inp, out, llm)
    llm_calls: list[SpanNode] = []
    tool_calls: list[SpanNode] = []
    for node in order:
        g = node.gen_ai
        if g is None:
            continue
        totals.spans += 1
        inp, out, llm = below[id(node)]
        if g.input_tokens is not None:
            totals.has_tokens = True
            if not inp:
                totals.input_tokens += g.input_tokens
        if g.output_tokens is not None:
            totals.has_tokens = True
            if not out:
                totals.output_tokens += g.output_tokens
        if g.operation in LLM_OPERATIONS and not llm:
            g.llm_call = True
            llm_calls.append(node)
        elif g.operation in TOOL_OPERATIONS:
            g.tool_call = True
            tool_calls.append(node)
    for calls in (llm_calls, tool_calls):
        calls.sort(key=lambda n: (n.start_ns, position[id(n)]))
        for i, node in enumerate(calls):
            assert node.gen_ai is not None
            node.gen_ai.call_number = i + 1
    totals.llm_calls = len(llm_calls)
    totals.tool_calls = len(tool_calls)


def rank_traces(traces: Iterable[TraceTree]) -> list[TraceTree]:
    """Most spans first; ties by start time, then trace ID."""
    return sorted(traces, key=lambda t: (-t.span_count, t.start_ns, t.trace_id))


# -- text -------------------------------------------------------------------------------------------------


def format_duration(ns: int) -> str:
    """Human-readable: `95µs`, `410ms`, `2.3s`, `3m 42s`, `1h 5m 0s` (rounded to the unit shown)."""
    if ns < 0:
        return "-" + format_duration(-ns)
    if ns < 1_000:
        return f"{ns}ns"
    us = (ns + 500) // 1_000
    if us < 1_000:
        return f"{us}µs"
    ms = (ns + 500_000) // 1_000_000
    if ms < 1_000:
        return f"{ms}ms"
    tenths = (ns + 50_000_000) // 100_000_000
    if tenths < 600:
        return f"{tenths // 10}.{tenths % 10}s"
    s = (ns + 500_000_000) // 1_000_000_000
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m {s % 60}s"


def _plural(n: int, what: str, many: str | None = None) -> str:
    return f"{n:,} {what if n == 1 else (many or what + 's')}"


def _clean(s: str) -> str:
    """Control characters (a newline, a terminal escape) made visible, as Python writes them in a str."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], s)


def _show_value(v: AttrValue) -> str:
    if isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, str):
        text = _clean(v)
    elif isinstance(v, int | float):
        text = repr(v)
    elif v is None:
        text = "(empty)"
    else:
        import json

        text = _clean(json.dumps(v, ensure_ascii=False, separators=(", ", ": ")))
    return text if len(text) <= _TEXT_VALUE_LIMIT else text[:_TEXT_VALUE_LIMIT - 1] + "…"


def summary_line(tree: TraceTree) -> str:
    """The header of a trace, one line: ID, start, duration, spans, services, GenAI totals, what is wrong."""
    return " · ".join(_summary_parts(tree))


def _summary_parts(tree: TraceTree) -> list[str]:
    parts = [f"trace {tree.trace_id}"]
    if tree.start_ns > 0:
        start = _dt.datetime.fromtimestamp(tree.start_ns // 1_000_000_000, tz=_dt.timezone.utc)
        parts.append(start.strftime("%Y-%m-%d %H:%M:%S UTC"))
    parts.append(format_duration(tree.duration_ns))
    parts.append(_plural(tree.span_count, "span"))
    shown = [_clean(s) for s in tree.services[:5]]
    more = f" +{len(tree.services) - 5} more" if len(tree.services) > 5 else ""
    parts.append(f"{'service' if len(tree.services) == 1 else 'services'}: {', '.join(shown)}{more}")
    g = tree.gen_ai
    if g.spans:
        if g.has_tokens:
            parts.append(f"tokens: {g.input_tokens:,} in / {g.output_tokens:,} out")
        parts.append(_plural(g.llm_calls, "LLM call"))
        parts.append(_plural(g.tool_calls, "tool call"))
    if tree.errors:
        parts.append(_plural(tree.errors, "error"))
    if tree.unanswered_calls:
        parts.append(f"⚠ {_plural(tree.unanswered_calls, 'call')} whose callee never joined")
    if tree.broken:
        orphans = tree.orphans
        detail = (f", {orphans} orphan{'s' if orphans != 1 else ''} (parent span missing)" if orphans
                  else "")
        parts.append(f"⚠ broken trace: {_plural(len(tree.roots), 'root')}{detail}")
    if tree.duplicate_spans:
        parts.append(f"{_plural(tree.duplicate_spans, 'duplicate span')} ignored")
    return parts


class _Style:
    """ANSI styling, or none."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)


def _title(node: SpanNode, parent: SpanNode | None, tree: TraceTree, style: _Style, ids: set[str]) -> str:
    name = style.bold(_clean(node.name) or "(no name)")
    if parent is None:
        what = "Orphan span" if node.orphan else "Root span"
        name = f"{what}: {name} (duration: {format_duration(node.duration_ns)})"
    g = node.gen_ai
    if g is not None and g.call_number is not None:
        name += f" ({'LLM' if g.llm_call else 'tool'} call {g.call_number})"
    if (parent is None and len(tree.services) > 1) or (parent is not None and parent.service != node.service):
        name += f" [{_clean(node.service)}]"
    if node.is_error:
        message = f": {_clean(node.status_message)}" if node.status_message else ""
        name += " " + style.red(f"✗ ERROR{message}")
    if node.orphan:
        why = "is its own descendant" if node.parent_span_id in ids else "is not in the trace"
        name += " " + style.yellow(f"⚠ orphan: parent {node.parent_span_id} {why}")
    if node.callee_never_joined:
        where = (f": {_clean(node.destination)}" if node.destination is not None
                 else " (no destination attribute)")
        name += " " + style.yellow(f"⚠ callee never joined{where}")
    return name


def _details(node: SpanNode, is_root: bool) -> list[list[str]]:
    """The detail lines of a span, as lists of `key: value` items: measures and attributes, then outcome."""
    first: list[str] = [] if is_root else [f"duration: {format_duration(node.duration_ns)}"]
    outcome: list[str] = []
    g = node.gen_ai
    if g is not None:
        if g.model is not None:
            first.append(f"model: {_clean(g.model)}")
        if g.input_tokens is not None:
            first.append(f"input_tokens: {g.input_tokens}")
        if g.output_tokens is not None:
            first.append(f"output_tokens: {g.output_tokens}")
        if g.tool_name is not None and g.tool_name not in node.name:
            first.append(f"tool: {_clean(g.tool_name)}")
        if g.finish_reasons:
            outcome.append(f"finish_reason: {', '.join(_clean(r) for r in g.finish_reasons)}")
    first.extend(f"{_clean(k)}: {_show_value(v)}" for k, v in node.attributes.items())
    if node.hidden_attributes:
        first.append(f"+{_plural(node.hidden_attributes, 'more attribute')}")
    return [line for line in (first, outcome) if line]


def _wrap(items: list[str], prefix: str, indent: int, width: int | None) -> list[str]:
    """The items joined by ", ", in lines of at most `width` characters (one item longer stays whole) after a
    prefix of `indent` visible characters."""
    lines: list[str] = []
    current = ""
    for item in items:
        if current and width is not None and indent + len(current) + 2 + len(item) + 1 > width:
            lines.append(current + ",")
            current = item
        else:
            current = f"{current}, {item}" if current else item
    if current:
        lines.append(current)
    return [prefix + line for line in lines]


def render_text(tree: TraceTree, *, width: int | None = None, color: bool = False) -> str:
    """The trace as text: its summary line, then each root's tree drawn with box characters.

    `width` wraps the summary and the detail lines at that many characters (None: no wrapping; span names are
    never wrapped); `color` adds ANSI styles. The text ends with a newline.
    """
    style = _Style(color)
    ids = {n.span_id for n in tree.spans()}
    out = [summary_line(tree)]
    if width is not None and len(out[0]) > width:  # the summary's parts over several lines, the rest indented
        out = []
        for part in _summary_parts(tree):
            if out and len(out[-1]) + 3 + len(part) <= width:
                out[-1] += " · " + part
            else:
                out.append(("  " if out else "") + part)
    for root in tree.roots:
        out.append(_title(root, None, tree, style, ids))
        # (node, its parent, prefix of its connector, is it the last child); the root's children go under "  ".
        for line in _details(root, True):
            out.extend(_wrap(line, style.dim("  │ " if root.children else "    "), 4, width))
        stack = [(child, root, "  ", i == len(root.children) - 1)
                 for i, child in reversed(list(enumerate(root.children)))]
        while stack:
            node, parent, prefix, last = stack.pop()
            out.append(style.dim(prefix + ("└── " if last else "├── ")) + _title(node, parent, tree, style, ids))
            inner = prefix + ("    " if last else "│   ")
            detail_prefix = inner + ("│ " if node.children else "  ")
            for line in _details(node, False):
                out.extend(_wrap(line, style.dim(detail_prefix), len(detail_prefix), width))
            stack.extend((child, node, inner, i == len(node.children) - 1)
                         for i, child in reversed(list(enumerate(node.children))))
    return "\n".join(out) + "\n"


def render_list(traces: Sequence[TraceTree], *, limit: int = 20) -> str:
    """The summary lines of the first `limit` traces (in the order given), and how many were left out."""
    lines = [summary_line(t) for t in traces[:limit]]
    if len(traces) > limit:
        lines.append(f"… and {_plural(len(traces) - limit, 'more trace')} (--limit)")
    return "".join(line + "\n" for line in lines)


# -- JSON -------------------------------------------------------------------------------------------------


def _gen_ai_json(g: GenAI | None) -> dict[str, Any] | None:
    if g is None:
        return None
    return {"operation": g.operation, "model": g.model, "input_tokens": g.input_tokens,
            "output_tokens": g.output_tokens, "finish_reasons": list(g.finish_reasons), "tool_name": g.tool_name,
            "llm_call": g.llm_call, "tool_call": g.tool_call, "call_number": g.call_number}


def _node_json(node: SpanNode) -> dict[str, Any]:
    return {
        "name": node.name, "service": node.service, "span_id": node.span_id,
        "parent_span_id": node.parent_span_id, "kind": node.kind, "start_time_unix_nano": node.start_ns,
        "end_time_unix_nano": node.end_ns, "duration_ns": node.duration_ns,
        "duration": format_duration(node.duration_ns),
        "status": {"code": node.status_code, "message": node.status_message}, "orphan": node.orphan,
        "destination": node.destination, "callee_never_joined": node.callee_never_joined,
        "attributes": dict(node.attributes), "hidden_attributes": node.hidden_attributes,
        "gen_ai": _gen_ai_json(node.gen_ai), "children": [],
    }


def summary_json(tree: TraceTree) -> dict[str, Any]:
    """What `summary_line` says, as a JSON-safe dict."""
    g = tree.gen_ai
    return {
        "trace_id": tree.trace_id, "start_time_unix_nano": tree.start_ns, "end_time_unix_nano": tree.end_ns,
        "duration_ns": tree.duration_ns, "duration": format_duration(tree.duration_ns),
        "span_count": tree.span_count, "services": list(tree.services), "errors": tree.errors,
        "broken": tree.broken, "root_count": len(tree.roots), "orphans": tree.orphans,
        "unanswered_calls": tree.unanswered_calls, "duplicate_spans": tree.duplicate_spans,
        "gen_ai": {"spans": g.spans, "input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                   "llm_calls": g.llm_calls, "tool_calls": g.tool_calls},
    }


def to_json(tree: TraceTree) -> dict[str, Any]:
    """The trace as a JSON-safe dict (`--json`): the summary, and `roots`: the root spans, children nested.

    IDs are hex, times Unix nanoseconds (integers), attribute values as in `AttrValue`.
    """
    out = summary_json(tree)
    roots: list[dict[str, Any]] = []
    stack: list[tuple[SpanNode, list[dict[str, Any]]]] = [(r, roots) for r in reversed(tree.roots)]
    while stack:  # no recursion: a trace may be thousands of spans deep
        node, siblings = stack.pop()
        obj = _node_json(node)
        siblings.append(obj)
        stack.extend((c, obj["children"]) for c in reversed(node.children))
    out["roots"] = roots
    return out


__all__ = [
    "KEY_ATTRIBUTES",
    "GenAI",
    "GenAITotals",
    "SpanNode",
    "TraceTree",
    "build_traces",
    "call_destination",
    "format_duration",
    "rank_traces",
    "render_list",
    "render_text",
    "summary_json",
    "summary_line",
    "to_json",
]
