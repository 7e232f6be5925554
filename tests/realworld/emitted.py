"""Write docs/real-instrumentation.md, what each SDK actually emits, from the recordings in tests/data/realworld/.

    python tests/realworld/emitted.py            # rewrite the doc from the committed fixtures
    python tests/realworld/emitted.py --check    # exit 1 when the committed doc differs from what they give

`tests/test_realworld_fixtures.py` runs `render()` in memory and compares it with the committed file, so the doc
cannot drift from the fixtures. Only what is stable from run to run is written (keys, value types, span names,
instrumentation scopes and SDK versions), never ports, IDs or times.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `realworld` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realworld.harness import CAPTURED_HEADER_KEYS, FIXTURES, read_recording, spans_by_trace

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "real-instrumentation.md"
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STABLE_RESOURCE_VALUES = ("telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version")
ROLE_ORDER = {"frontend": 0, "cart": 1, "payments": 2}


def value_type(value: Mapping[str, Any]) -> str:
    """The OTLP type of an AnyValue in OTLP/JSON: string, int, double, bool, bytes, map, or `<element>[]`."""
    for key, name in (("stringValue", "string"), ("intValue", "int"), ("doubleValue", "double"),
                      ("boolValue", "bool"), ("bytesValue", "bytes"), ("kvlistValue", "map")):
        if key in value:
            return name
    if "arrayValue" in value:
        elements = sorted({value_type(v) for v in value["arrayValue"].get("values", [])}) or ["empty"]
        return "|".join(elements) + "[]"
    return "empty"


def scalar(value: Mapping[str, Any]) -> str:
    if "intValue" in value:  # a string in OTLP/JSON (64-bit)
        return str(int(value["intValue"]))
    for key in ("stringValue", "doubleValue", "boolValue"):
        if key in value:
            return json.dumps(value[key])
    if "arrayValue" in value:
        return "[" + ", ".join(scalar(v) for v in value["arrayValue"].get("values", [])) + "]"
    return "?"


_ADDRESS_PORT = re.compile(r"\b(127\.0\.0\.1|localhost|\[::1\]):\d+")
_HEX_ID = re.compile(r"\b[0-9a-f]{16}(?:[0-9a-f]{16})?\b")
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def example(key: str, value: Mapping[str, Any]) -> str:
    """One value as the doc shows it: loopback ports written `<port>` and IDs `<id>`, so that a new recording
    changes the doc only where the instrumentation changed."""
    text = scalar(value)
    if "intValue" in value and "port" in key:
        return "<port>"
    text = _ADDRESS_PORT.sub(lambda m: f"{m.group(1)}:<port>", text)
    text = _HEX_ID.sub("<id>", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _fixtures() -> list[tuple[dict[str, Any], Path]]:
    out = []
    for side in sorted(FIXTURES.glob("*.truth.json")):
        stem = side.name.removesuffix(".truth.json")
        recs = sorted(FIXTURES.glob(f"{stem}.otlp.json*"))
        if len(recs) != 1:
            raise SystemExit(f"{side}: expected one recording {stem}.otlp.json[.gz], found {len(recs)}")
        out.append((json.loads(side.read_text()), recs[0]))
    stack_order = {"python_flask": 0, "python_asgi": 1, "python_grpc": 2, "node_express": 3, "go_nethttp": 4}
    out.sort(key=lambda f: (stack_order.get(f[0]["stack"], 9), f[0]["stack"], f[0]["convention"] != "default"))
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _section(truth: Mapping[str, Any], recording: Path) -> tuple[list[str], list[list[str]]]:
    """The doc's section for one recording, and its rows of the captured-header summary."""
    by_trace = spans_by_trace(read_recording(recording))
    spans = [s for ss in by_trace.values() for s in ss]
    conv = "default conventions" if truth["convention"] == "default" else "`OTEL_SEMCONV_STABILITY_OPT_IN=http`"
    lines = [f"## {truth['stack']}, {conv}", "",
             f"Recording `tests/data/realworld/{recording.name}` ({len(spans)} spans, {len(by_trace)} traces; "
             f"exported over OTLP {truth['otlp_protocol']}).", ""]

    resource_types: dict[str, set[str]] = defaultdict(set)
    resource_values: dict[str, set[str]] = defaultdict(set)
    scopes: set[str] = set()
    for s in spans:
        for a in s["_resource"]:
            resource_types[a["key"]].add(value_type(a["value"]))
            if a["key"] in STABLE_RESOURCE_VALUES:
                resource_values[a["key"]].add(scalar(a["value"]))
        scope = s["_scope"]
        scopes.add(f"`{scope.get('name', '')}` {scope.get('version', '')}".rstrip())
    res = [f"`{k}` ({'/'.join(sorted(t))}" + (f": {', '.join(sorted(resource_values[k]))}" if k in resource_values
                                                else "") + ")"
           for k, t in sorted(resource_types.items())]
    lines += ["Resource attributes: " + ", ".join(res) + ".", "",
              "Instrumentation scopes: " + ", ".join(sorted(scopes)) + ".", ""]

    # one table per span kind and instrumentation scope (a gRPC stack's frontend is Flask: its SERVER spans are
    # not grpcio's)
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        groups[(int(s.get("kind", 0)), str(s["_scope"].get("name", "")))].append(s)
    summary: list[list[str]] = []
    for (kind_number, scope_name), group in sorted(groups.items()):
        kind = KINDS.get(kind_number, str(kind_number))
        services = sorted({_service(s) for s in group}, key=lambda r: ROLE_ORDER.get(r, 9))
        names = sorted({s["name"] for s in group})
        lines += [f"### {kind} spans of `{scope_name}` ({', '.join(services)}: {len(group)})", "",
                  "Names: " + ", ".join(f"`{n}`" for n in names) + ".", ""]
        types: dict[str, set[str]] = defaultdict(set)
        present: dict[str, int] = defaultdict(int)
        first: dict[str, str] = {}
        for s in group:
            for a in s.get("attributes", []):
                types[a["key"]].add(value_type(a["value"]))
                present[a["key"]] += 1
                first.setdefault(a["key"], example(a["key"], a["value"]))
        statuses = sorted({STATUS.get(s.get("status", {}).get("code", 0), "?") for s in group})
        lines += ["Status codes: " + ", ".join(statuses) + ".", ""]
        rows = [[f"`{k}`", "/".join(sorted(t)), "all" if present[k] == len(group) else "some",
                 f"`{first[k]}`".replace("|", "\\|")] for k, t in sorted(types.items())]
        lines += [*_table(["attribute", "type", "on", "e.g."], rows), ""]
        for key in sorted(types):
            if key.startswith("http.request.header.") and key.endswith(("x-force-trace", "x_force_trace")):
                captured = next(scalar(a["value"]) for s in group for a in s.get("attributes", []) if a["key"] == key)
                summary.append([truth["stack"], truth["convention"], kind, ", ".join(services), f"`{key}`",
                                "/".join(sorted(types[key])), f"`{captured}`"])
    return lines, summary


def _service(span: Mapping[str, Any]) -> str:
    return next((str(a["value"].get("stringValue", "")) for a in span["_resource"] if a["key"] == "service.name"), "")


def render() -> str:
    """The whole document, from the committed fixtures."""
    sections: list[str] = []
    summary: list[list[str]] = []
    fixtures = _fixtures()
    for truth, recording in fixtures:
        lines, rows = _section(truth, recording)
        sections += lines
        summary += rows
    stacks = sorted({t["stack"] for t, _ in fixtures}, key=lambda s: [t["stack"] for t, _ in fixtures].index(s))
    head = [
        "# What real instrumentation emits",
        "",
        "Generated by `tests/realworld/emitted.py` from the recordings under `tests/data/realworld/`, which "
        "`make test-realworld UPDATE=1` makes by running each stack's three services (`frontend` → `cart` → "
        "`payments`, see `tests/realworld/README.md`) with their real OpenTelemetry instrumentation. Do not edit "
        "by hand: `tests/test_realworld_fixtures.py` fails when this file differs from what the fixtures give.",
        "",
        f"Stacks: {', '.join(f'`{s}`' for s in stacks)}. Per stack and convention: resource attributes, "
        "instrumentation scopes, and per span kind the attribute keys with their OTLP value types (`on`: `all` "
        "spans of that kind carry the key, or only `some`, e.g. the captured header on forced requests only).",
        "",
        "## The captured `x-force-trace` header",
        "",
        "Requests sent with `x-force-trace: true` and "
        "`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=x-force-trace` (or the same capture configured in "
        "code where the SDK does not read that variable). The specification spells the key "
        f"`{CAPTURED_HEADER_KEYS[0]}` (dashes kept) with a string array value; a stack missing from this table "
        "captured no header on any span.",
        "",
        *_table(["stack", "convention", "span kind", "services", "key", "type", "value"], summary),
        "",
    ]
    return "\n".join(head + sections).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the committed doc instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = DOC.exists() and DOC.read_text() == text
        print(f"{DOC}: {'up to date' if same else 'differs from the fixtures; run tests/realworld/emitted.py'}")
        return 0 if same else 1
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
