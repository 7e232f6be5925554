"""Policy lint against traffic: do a configuration's policies read attributes the traffic actually carries?

A typo in an attribute key, or a spelling the instrumentation does not use, silently stops a policy from keeping
anything. Real SDKs send `http.request.header.x_force_trace` where the specification (and the seed's policy) says
`x-force-trace`, arrays where a policy expects a string, numbers as strings, and put on the resource what a
condition reads on the span. This module finds those:

- `keys_read(config)`: every attribute key a policy reads, with where it reads it (span, resource, or either) and
  what type it expects;
- `AttributeInventory`: the attribute keys seen in traffic (per place: their count, value types and a few example
  values), bounded in keys and examples. `tailsample check-config --traffic` fills one from recorded files;
  `tailsample serve` fills one per pipeline from a sample of its traffic (at most one payload a second) and serves
  it on `GET /debug/attributes`;
- `near_misses(read, inventory)`: why a key does not match what the traffic has: `spelling` (dash vs
  underscore), `case`, `type` (an array, a number sent as a string, ...), `place` (on the resource where the
  condition reads the span, or the other way round), `value` (the key is there, with other values);
- `lint(...)`: per policy, the traces it matched (when known), keys never seen, and the near misses;
  `render_text` prints it. `explain` uses `policy_near_misses` to name the near misses of the policies that did
  not keep a trace.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from tailsample.config import Config
from tailsample.engine import attribute_keys

Place = Literal["span", "resource", "any"]
Expects = Literal["string", "number", "bool", "any"]

# Captured HTTP headers: the specification keeps the header's dashes, some instrumentations (Python's) turn them
# into underscores; the engine matches both spellings unless `strict_reference_matching` is on.
_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
_OTTL_KEY = re.compile(r'(resource\.|instrumentation_scope\.)?attributes\["((?:[^"\\]|\\.)*)"\]')


@dataclass(frozen=True)
class KeyRead:
    """One attribute key one policy reads."""

    policy: str
    """The policy's path: its name, and for sub-policies `parent/child`."""
    top: str
    """The top-level policy it belongs to (the one `policy_stats` and `explain` name)."""
    policy_type: str
    key: str
    place: Place
    expects: Expects
    values: tuple[str, ...] = ()
    """For exact `string_attribute` matching: the values it looks for."""


def _sub_policies(p: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    body = p.get(p.get("type", ""), {})
    if not isinstance(body, Mapping):
        return []
    for k in ("and_sub_policy", "composite_sub_policy", "policies"):
        subs = body.get(k)
        if isinstance(subs, list):
            return [s for s in subs if isinstance(s, Mapping)]
    sub = body.get("policy")  # `not`
    return [sub] if isinstance(sub, Mapping) else []


def _reads(p: Mapping[str, Any], path: str, top: str) -> Iterable[KeyRead]:
    kind = str(p.get("type", ""))
    body = p.get(kind, {})
    body = body if isinstance(body, Mapping) else {}
    if kind in ("string_attribute", "numeric_attribute", "boolean_attribute"):
        expects: Expects = {"string_attribute": "string", "numeric_attribute": "number",
                            "boolean_attribute": "bool"}[kind]  # type: ignore[assignment]
        regex = bool(body.get("enabled_regex_matching"))
        raw = body.get("values", [])
        # One string is a comma-separated list, as the reference (and the engine) read it.
        listed = raw.split(",") if isinstance(raw, str) else raw
        values = () if regex or kind != "string_attribute" else tuple(str(v) for v in listed if v)
        yield KeyRead(path, top, kind, str(body.get("key", "")), "any", expects, values)
    elif kind == "trace_aggregate":
        yield KeyRead(path, top, kind, str(body.get("key", "")), "span", "number")
    elif kind in ("latency_percentile", "adaptive"):
        for k in body.get("group_by", []) or body.get("key_fields", []) or []:
            if isinstance(k, str) and k not in ("span.name", "service.name", "status.code", "span.kind"):
                yield KeyRead(path, top, kind, k, "any", "any")
    elif kind == "ottl_condition":
        seen: set[tuple[str, str]] = set()
        for field_name in ("span", "spanevent"):
            for cond in body.get(field_name, []) or []:
                for m in _OTTL_KEY.finditer(str(cond)):
                    if m.group(1) == "instrumentation_scope.":
                        continue
                    place: Place = "resource" if m.group(1) else "span"
                    key = m.group(2).replace('\\"', '"')
                    if (place, key) not in seen:
                        seen.add((place, key))
                        yield KeyRead(path, top, kind, key, place, "any")
    for sub in _sub_policies(p):
        yield from _reads(sub, f"{path}/{sub.get('name', '?')}", top)


def keys_read(config: Config) -> list[KeyRead]:
    """Every attribute key the configuration's policies read, sub-policies included, in policy order."""
    out: list[KeyRead] = []
    for p in config.normalized()["policies"]:
        out.extend(_reads(p, str(p["name"]), str(p["name"])))
    return out


def strict_matching(config: Config) -> bool:
    """`tailsample.strict_reference_matching`: keys only as spelled, non-strings read as "" (the reference)."""
    return bool(config.normalized().get("tailsample", {}).get("strict_reference_matching", False))


class KeyStats(TypedDict):
    count: int
    types: dict[str, int]
    examples: list[str]


class InventoryJson(TypedDict):
    payloads: int
    spans: int
    resources: int
    keys_dropped: int
    max_keys: int
    span: dict[str, KeyStats]
    resource: dict[str, KeyStats]


@dataclass
class _Key:
    count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


class AttributeInventory:
    """The attribute keys seen in traffic, per place (span, resource): how often, with which value types, and up to
    `max_examples` distinct example values. At most `max_keys` keys in all: later new keys are counted in
    `keys_dropped` and not kept. Resources are counted once per payload they appear in."""

    def __init__(self, *, max_keys: int = 2000, max_examples: int = 8) -> None:
        self.max_keys = max_keys
        self.max_examples = max_examples
        self.payloads = 0
        self.spans = 0
        self.resources = 0
        self.keys_dropped = 0
        self._keys: dict[str, dict[str, _Key]] = {"span": {}, "resource": {}}
        self._size = 0

    def add_payload(self, payload: bytes) -> None:
        """Counts one ExportTraceServiceRequest's attribute keys, as the engine's scan reads them
        (`engine.attribute_keys`; raises `DecodeError` on a payload that is not one). Value types are named
        `string`, `int`, `double`, `bool`, `bytes`, `map`, `empty` or `array<T>` (T: the elements' types,
        `|`-joined; `array<>` when empty); examples are scalars as Python prints them, strings cut at 64
        characters, an array as its first four elements' examples joined by commas."""
        spans, resources, rows = attribute_keys(payload, self.max_examples)
        self.payloads += 1
        self.spans += spans
        self.resources += resources
        for place, key, count, types, examples in rows:  # in order of first appearance: as value by value
            table = self._keys[place]
            k = table.get(key)
            if k is None:
                if self._size >= self.max_keys:
                    self.keys_dropped += count
                    continue
                k = table[key] = _Key()
                self._size += 1
            k.count += count
            k.types.update(dict(types))
            # The row's first distinct examples: the first of them this key lacks are the ones it would have
            # taken value by value.
            for ex in examples:
                if len(k.examples) >= self.max_examples:
                    break
                if ex not in k.examples:
                    k.examples.append(ex)

    @property
    def size(self) -> int:
        """Keys held, both places."""
        return self._size

    def keys(self, place: str) -> dict[str, _Key]:
        return self._keys[place]

    def to_json(self) -> InventoryJson:
        def table(place: str) -> dict[str, KeyStats]:
            return {key: {"count": k.count, "types": dict(k.types), "examples": list(k.examples)}
                    for key, k in sorted(self._keys[place].items())}

        return {"payloads": self.payloads, "spans": self.spans, "resources": self.resources,
                "keys_dropped": self.keys_dropped, "max_keys": self.max_keys,
                "span": table("span"), "resource": table("resource")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttributeInventory:
        inv = cls(max_keys=int(data.get("max_keys", 2000)))
        inv.payloads = int(data.get("payloads", 0))
        inv.spans = int(data.get("spans", 0))
        inv.resources = int(data.get("resources", 0))
        inv.keys_dropped = int(data.get("keys_dropped", 0))
        for place in ("span", "resource"):
            for key, s in (data.get(place) or {}).items():
                inv._keys[place][key] = _Key(int(s["count"]), Counter(s["types"]), list(s["examples"]))
                inv._size += 1
        return inv


@dataclass(frozen=True)
class NearMiss:
    kind: Literal["spelling", "case", "type", "place", "value", "absent"]
    place: str
    key: str
    """The key as the traffic spells it."""
    detail: str


def _normal(key: str) -> str:
    return key.lower().replace("-", "_")


def header_aliases(key: str) -> set[str]:
    """The spellings the engine also matches for `key` (outside strict mode): a captured header's name with dashes
    and with underscores. Mirrors the engine's key aliasing."""
    for prefix in _HEADER_PREFIXES:
        if key.startswith(prefix):
            name = key[len(prefix):]
            return {prefix + name.replace("_", "-"), prefix + name.replace("-", "_")} - {key}
    return set()


def _places(place: Place) -> tuple[str, ...]:
    return ("span", "resource") if place == "any" else (place,)


def _type_problem(expects: Expects, types: Counter[str], strict: bool) -> str | None:
    """Why values of these types would not match a policy expecting `expects`, or None when some would."""
    if expects == "any" or not types:
        return None
    ok = {"string": {"string"}, "number": {"int", "double"}, "bool": {"bool"}}[expects]
    if any(t in ok for t in types):
        return None
    arrays = [t for t in types if t.startswith("array<")]
    if arrays and not strict and any(e in ok for t in arrays for e in t[6:-1].split("|")):
        return None  # matched element by element outside strict mode
    seen = ", ".join(f"{t} ({n})" for t, n in types.most_common(3))
    hint = {"string": "a string", "number": "a number", "bool": "a boolean"}[expects]
    why = "the reference reads it as empty" if strict or not arrays else "no element has that type"
    return f"the policy expects {hint}; the traffic sends {seen}: {why}"


def near_misses(read: KeyRead, inventory: AttributeInventory, *, strict: bool = False) -> list[NearMiss]:
    """Why `read.key` matches nothing, or little, in this traffic; [] when the key is there as the policy expects
    it. Variants the engine matches anyway (header dash/underscore outside strict mode) are not misses."""
    out: list[NearMiss] = []
    wanted = _places(read.place)
    matched_keys = {read.key} | (set() if strict else header_aliases(read.key))
    present = [(place, key) for place in wanted for key in matched_keys if key in inventory.keys(place)]
    for place, key in present:
        k = inventory.keys(place)[key]
        problem = _type_problem(read.expects, k.types, strict)
        if problem:
            out.append(NearMiss("type", place, key, problem))
        elif read.values and len(k.examples) < inventory.max_examples:
            values = set(read.values)
            seen = {e for ex in k.examples for e in ex.split(",")}
            if not values & seen:
                folded = {v.lower() for v in values} & {s.lower() for s in seen}
                kind: Literal["case", "value"] = "case" if folded else "value"
                out.append(NearMiss(kind, place, key, f"looks for {sorted(values)}; the traffic has "
                                    f"{sorted(seen)[:6]}" + (" (differs only in case)" if folded else "")))
    if present:
        return out
    # Not there as read: the same key elsewhere, or another spelling of it.
    for place in ("span", "resource"):
        for key in inventory.keys(place):
            if place not in wanted and key in matched_keys:
                where = "on the resource" if place == "resource" else "on spans"
                out.append(NearMiss("place", place, key, f"the policy reads {read.place} attributes; the traffic "
                                    f"has {key!r} {where}"))
            elif key not in matched_keys and _normal(key) == _normal(read.key):
                if key.lower() == read.key.lower():
                    out.append(NearMiss("case", place, key, f"differs in case: {key!r}"))
                else:
                    out.append(NearMiss("spelling", place, key, f"dash vs underscore: the traffic spells it {key!r}"
                                        + (" (strict_reference_matching is on)" if strict and
                                           key in header_aliases(read.key) else "")))
                types = inventory.keys(place)[key].types
                problem = _type_problem(read.expects, types, strict)
                if problem:
                    out.append(NearMiss("type", place, key, problem))
    if not out:
        out.append(NearMiss("absent", read.place, read.key, "no span or resource in the traffic carries it"))
    return out


class PolicyLint(TypedDict):
    policy: str
    type: str
    matched: int | None
    """Traces the top-level policy sampled (None: not known, e.g. a sub-policy)."""
    evaluated: int | None
    """Traces the top-level policy judged."""
    keys: list[dict[str, Any]]


class LintReport(TypedDict):
    traffic: dict[str, int]
    strict_reference_matching: bool
    policies: list[PolicyLint]
    problems: int


def lint(config: Config, inventory: AttributeInventory,
         policy_stats: Mapping[str, Mapping[str, int]] | None = None) -> LintReport:
    """Per policy (sub-policies under their path): traces matched (top-level, from `policy_stats`), and for each
    key it reads, whether the traffic carries it and its near misses."""
    strict = strict_matching(config)
    reads = keys_read(config)
    rows: dict[str, PolicyLint] = {}
    for p in config.normalized()["policies"]:
        stats = (policy_stats or {}).get(p["name"])
        judged = None if stats is None else sum(int(stats.get(k, 0))
                                                for k in ("sampled", "not_sampled", "dropped", "errors"))
        rows[p["name"]] = {"policy": p["name"], "type": p["type"], "keys": [],
                           "matched": None if stats is None else int(stats.get("sampled", 0)), "evaluated": judged}
    problems = 0
    for r in reads:
        row = rows.get(r.policy)
        if row is None:
            row = rows[r.policy] = {"policy": r.policy, "type": r.policy_type, "keys": [], "matched": None,
                                    "evaluated": None}
        misses = near_misses(r, inventory, strict=strict)
        seen = sum(inventory.keys(pl)[k].count for pl in _places(r.place)
                   for k in {r.key} | (set() if strict else header_aliases(r.key)) if k in inventory.keys(pl))
        problems += bool(misses)
        row["keys"].append({"key": r.key, "place": r.place, "expects": r.expects, "seen": seen,
                            "near_misses": [{"kind": m.kind, "place": m.place, "key": m.key, "detail": m.detail}
                                            for m in misses]})
    return {"traffic": {"payloads": inventory.payloads, "spans": inventory.spans,
                        "keys_dropped": inventory.keys_dropped},
            "strict_reference_matching": strict, "policies": list(rows.values()), "problems": problems}


def policy_near_misses(config: Config, inventory: AttributeInventory,
                       policies: Sequence[str]) -> dict[str, list[str]]:
    """For `explain`: per named top-level policy, one line per near miss of the keys it (or its sub-policies)
    reads. Policies without keys, or whose keys the traffic carries as read, are left out."""
    strict = strict_matching(config)
    out: dict[str, list[str]] = {}
    for r in keys_read(config):
        if r.top not in policies:
            continue
        for m in near_misses(r, inventory, strict=strict):
            out.setdefault(r.top, []).append(f"{r.key}: {m.kind}: {m.detail}")
    return out


def render_text(report: Mapping[str, Any]) -> str:
    t = report["traffic"]
    lines = [f"traffic: {t['spans']:,} spans in {t['payloads']:,} payloads"
             + (f" ({t['keys_dropped']:,} attribute keys past the inventory's bound not counted)"
                if t["keys_dropped"] else "")]
    if report["strict_reference_matching"]:
        lines.append("strict_reference_matching is on: keys only as spelled, arrays read as empty strings")
    for p in report["policies"]:
        head = f"{p['policy']} ({p['type']})"
        if p["matched"] is not None:
            head += f": matched {p['matched']:,} of {p['evaluated']:,} traces"
        lines.append(head)
        for k in p["keys"]:
            where = "" if k["place"] == "any" else f" ({k['place']})"
            if not k["near_misses"]:
                lines.append(f"  ok      {k['key']}{where}: on {k['seen']:,} spans/resources")
                continue
            for m in k["near_misses"]:
                label = "MISSING" if m["kind"] == "absent" else "NEAR"
                lines.append(f"  {label:<7} {k['key']}{where}: {m['kind']}: {m['detail']}")
    n = report["problems"]
    lines.append("no near misses: every key a policy reads is in the traffic as it reads it" if n == 0 else
                 f"{n} key{'s' if n != 1 else ''} read by policies do not match the traffic as written")
    return "\n".join(lines)


__all__ = ["AttributeInventory", "KeyRead", "LintReport", "NearMiss", "header_aliases", "keys_read", "lint",
           "near_misses", "policy_near_misses", "render_text", "strict_matching"]
