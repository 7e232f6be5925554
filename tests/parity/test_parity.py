"""Parity with the reference: the same payloads through tailsample and through the OpenTelemetry Collector's
`tail_sampling` processor (the real one, built from its Go module by conftest.py), comparing which traces each
keeps. README.md beside this file says how the reference is driven and what in it is deterministic.

- Stateless policies run over one shared workload of 20,000+ traces (workload.main_workload), one config per
  case; the kept trace-ID sets must be equal.
- Stateful policies (rate_limiting, bytes_limiting, composite) run over short scripted workloads built so that
  the reference's answer does not depend on the order it evaluates traces in (it walks a Go map); the reference
  must give the answer its code implies (`expect`), and tailsample the same.
- A case whose policy tailsample refuses with "not supported by tailsample yet" is skipped with that message,
  and turns on by itself when the policy lands.
- test_reference_* check this suite's reading of the reference (thresholds, the latency walk) on the reference
  alone.
- test_trace_sizes: maximum_trace_size_bytes and bytes_limiting at the reference's own size of a trace (and one
  byte less), unknown protobuf fields included.
- Timed cases run the reference in real time (decision_wait 1s, sleeps between payloads): late spans through the
  decision caches, decisions made on time; and eviction at num_traces. They, and one case of the main workload,
  compare what both send on, span by span (compare_output).
- In CI (`CI=true`) the suite fails instead of skipping when Go or the reference cannot be built.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from workload import (
    DEFAULT_SALT,
    PROBABILISTIC,
    Gen,
    Part,
    Trace,
    Workload,
    add_unknown_fields,
    assemble,
    facts,
    main_workload,
    prob_hash,
    reference_latency_ms,
    reference_threshold,
    regex_workload,
    scripted,
)

import tailsample
from otlp_builders import STATUS_ERROR, STATUS_OK, STATUS_UNSET

pytestmark = pytest.mark.parity
if shutil.which("go") is None:
    _NO_GO = "the parity suite needs the Go toolchain to build the reference processor: no `go` on PATH"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(_NO_GO + " (CI is set: the parity suite must run here, not be skipped)", pytrace=False)
    pytest.skip(_NO_GO, allow_module_level=True)

NOT_SUPPORTED = "not supported by tailsample yet"
MS_NS = 1_000_000
# decision_wait is long so that the reference decides nothing before Shutdown, which then decides every
# pending trace at once; tailsample gets the same text and decides everything at flush(now=0)
HEADER = "decision_wait: 300s\n"


def config(body: str) -> str:
    return HEADER + textwrap.dedent(body).strip() + "\n"


# ---- running tailsample --------------------------------------------------------------------------------------


def load_or_skip(text: str) -> tailsample.Config:
    """`text` for tailsample, with `tailsample.strict_reference_matching` on: the reference reads an array as ""
    (0, false) and a key only as spelled, which tailsample does on purpose only with the switch (README, "Where
    tailsample differs from the reference"). The reference gets `text` unchanged."""
    block = yaml.safe_load(text)
    block.setdefault("tailsample", {})["strict_reference_matching"] = True
    try:
        return tailsample.Config.from_dict(block)
    except tailsample.ConfigError as exc:
        if NOT_SUPPORTED in str(exc):
            pytest.skip(f"tailsample: {exc}")
        raise


def kept_trace_ids(payloads: Sequence[bytes]) -> tuple[set[str], int]:
    kept: set[str] = set()
    spans = 0
    for p in payloads:
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    kept.add(s.trace_id.hex())
                    spans += 1
    return kept, spans


@dataclass
class TailsampleRun:
    kept: set[str]
    kept_spans: int
    policy_stats: dict[str, dict[str, int]]


def run_tailsample(cfg: tailsample.Config, workload: Workload) -> TailsampleRun:
    eng = tailsample.Engine(cfg)
    for p in workload.payloads:
        eng.ingest(p, now=0)
    out = eng.flush(now=0)
    kept, spans = kept_trace_ids(out)
    return TailsampleRun(kept, spans, eng.policy_stats())


# ---- comparing -----------------------------------------------------------------------------------------------

# edge groups first among the examples of a mismatch: they say most about why
_GROUP_ORDER = ["latency-prefix", "latency-zero", "latency-negative", "latency-edge", "probabilistic-edge",
                "string-edge", "numeric-edge", "boolean-edge", "trace-state-edge", "trace-flags-edge", "ottl-edge",
                "span-count-edge", "status-edge", "scripted", "generic"]


def _describe(tid: str, wl: Workload, ts_kept: set[str], ref: Mapping[str, Any]) -> str:
    info = ref.get("traces", {}).get(tid, {})
    rdec = info.get("decision", "?")
    if info.get("policy"):
        rdec += f" (by {info['policy']})"
    t = wl.by_hex().get(tid)
    what = facts(t) if t is not None else "(not in the workload)"
    return f"  {tid}: tailsample {'kept' if tid in ts_kept else 'not kept'}, reference {rdec}; {what}"


def mismatch_message(case_id: str, text: str, wl: Workload, ts_kept: set[str], ref: Mapping[str, Any],
                     only: set[str] | None = None) -> str:
    ref_kept = set(ref["kept"])
    only_ts = ts_kept - ref_kept
    only_ref = ref_kept - ts_kept
    if only is not None:  # just the differences no documented deviation explains
        only_ts, only_ref = only_ts & only, only_ref & only
    by_hex = wl.by_hex()
    groups = Counter(by_hex[t].group if t in by_hex else "?" for t in only_ts | only_ref)

    def rank(tid: str) -> tuple[int, str]:
        g = by_hex[tid].group if tid in by_hex else "?"
        return (_GROUP_ORDER.index(g) if g in _GROUP_ORDER else len(_GROUP_ORDER), tid)

    a, b = sorted(only_ts, key=rank), sorted(only_ref, key=rank)
    examples: list[str] = []
    while (a or b) and len(examples) < 10:
        if a:
            examples.append(a.pop(0))
        if b and len(examples) < 10:
            examples.append(b.pop(0))
    lines = [
        f"{case_id}: decisions differ from the reference processor {ref['version']} on "
        f"{len(only_ts) + len(only_ref)} of {len(wl.traces)} traces",
        f"  tailsample kept {len(ts_kept)}, the reference kept {len(ref_kept)}; kept only by tailsample: "
        f"{len(only_ts)}, only by the reference: {len(only_ref)}",
        f"  differing traces by workload group: {dict(groups.most_common())}",
        "examples:",
        *(_describe(t, wl, ts_kept, ref) for t in examples),
        "config:",
        textwrap.indent(text, "  "),
    ]
    return "\n".join(lines)


def check_reference_ran(ref: Mapping[str, Any], wl: Workload) -> None:
    assert not ref["errors"], f"the reference refused the config or the input: {ref['errors']}"
    assert ref["decided_before_shutdown"] == 0, "the reference decided traces before Shutdown: decision_wait too short?"
    assert ref["spans_in"] == wl.span_count, (ref["spans_in"], wl.span_count)
    decided = sum(ref["decisions"].values())
    assert decided == len(wl.traces), f"the reference decided {decided} of {len(wl.traces)} traces"


# Intended deviations (README, "Where tailsample differs from the reference"): the reference's latency policy
# walks a trace's spans in arrival order and stops as soon as the running duration qualifies (upstream #43948),
# treating a zero timestamp as "not seen yet"; tailsample decides on the whole trace's min start (non-zero) and
# max end. A trace on which the two rules disagree, for a latency policy of the config, may be decided
# differently; every other difference fails.
EXPLAINED: dict[str, int] = {}


def latency_bounds(text: str) -> list[tuple[int, int]]:
    """(threshold_ms, upper_threshold_ms) of every latency policy in the config, at any depth."""
    out: list[tuple[int, int]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "latency" and isinstance(node.get("latency"), dict):
                lat = node["latency"]
                out.append((int(lat.get("threshold_ms", 0)), int(lat.get("upper_threshold_ms", 0))))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(text))
    return out


def tailsample_latency(spans: Sequence[Span], threshold_ms: int, upper_ms: int) -> bool:
    """tailsample's rule: max end minus the smallest non-zero start, in whole ms truncated toward zero."""
    starts = [s.start_time_unix_nano for s in spans if s.start_time_unix_nano]
    lo = min(starts) if starts else 0
    hi = max(s.end_time_unix_nano for s in spans)
    diff = hi - lo
    ms = abs(diff) // MS_NS * (1 if diff >= 0 else -1)
    return ms > threshold_ms if upper_ms == 0 else threshold_ms < ms <= upper_ms


@cache
def latency_divergent(wl: Workload, lo: int, hi: int) -> frozenset[str]:
    """The traces of `wl` that the reference's latency walk and tailsample's rule judge differently."""
    return frozenset(tid for tid, spans in arrival_spans(wl).items()
                     if reference_latency_ms(spans, lo, hi)[0] != tailsample_latency(spans, lo, hi))


def explained_set(text: str, wl: Workload) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for lo, hi in latency_bounds(text):
        out |= latency_divergent(wl, lo, hi)
    return out


def compare(case_id: str, text: str, wl: Workload, run: TailsampleRun, ref: Mapping[str, Any]) -> None:
    ref_kept = set(ref["kept"])
    differing = run.kept ^ ref_kept
    explained = explained_set(text, wl)
    unexplained = differing - explained
    if unexplained:
        pytest.fail(mismatch_message(case_id, text, wl, run.kept, ref, only=unexplained), pytrace=False)
    if latency_bounds(text):
        # Every trace the two latency rules judge differently: it may be kept, or attributed, differently.
        EXPLAINED[case_id] = len(explained)
    kept_spans = sum(len(t.spans) for t in wl.traces if t.tid.hex() in run.kept)
    assert run.kept_spans == kept_spans, f"tailsample output {run.kept_spans} spans of kept traces, not {kept_spans}"
    ref_spans = sum(len(t.spans) for t in wl.traces if t.tid.hex() in ref_kept)
    assert ref["kept_spans"] == ref_spans, f"the reference output {ref['kept_spans']} spans, not {ref_spans}"


# ---- stateless cases over the main workload ------------------------------------------------------------------

MAIN_CASES: dict[str, str] = {
    "always_sample": """
        policies:
          - {name: all, type: always_sample}
        """,
    "status_code_error": """
        policies:
          - name: errors
            type: status_code
            status_code: {status_codes: [ERROR]}
        """,
    "status_code_ok_unset": """
        policies:
          - name: ok-or-unset
            type: status_code
            status_code: {status_codes: [OK, UNSET]}
        """,
    "status_code_unset": """
        policies:
          - name: unset
            type: status_code
            status_code: {status_codes: [UNSET]}
        """,
    "latency_100": """
        policies:
          - name: slow
            type: latency
            latency: {threshold_ms: 100}
        """,
    "latency_100_to_500": """
        policies:
          - name: band
            type: latency
            latency: {threshold_ms: 100, upper_threshold_ms: 500}
        """,
    "latency_500_to_501": """
        policies:
          - name: one-ms
            type: latency
            latency: {threshold_ms: 500, upper_threshold_ms: 501}
        """,
    "latency_0": """
        policies:
          - name: any-duration
            type: latency
            latency: {threshold_ms: 0}
        """,
    **{
        f"probabilistic_{pct}_{salt or 'default_salt'}".replace(".", "_"): f"""
        policies:
          - name: sample
            type: probabilistic
            probabilistic: {{sampling_percentage: {pct}{f', hash_salt: {salt}' if salt else ''}}}
        """
        for salt, pct in PROBABILISTIC
    },
    "probabilistic_100": """
        policies:
          - name: all
            type: probabilistic
            probabilistic: {sampling_percentage: 100}
        """,
    "probabilistic_0": """
        policies:
          - name: none
            type: probabilistic
            probabilistic: {sampling_percentage: 0}
        """,
    "string_exact": """
        policies:
          - name: routes
            type: string_attribute
            string_attribute: {key: http.route, values: [/api/checkout, /api/pay]}
        """,
    "string_exact_invert": """
        policies:
          - name: not-routes
            type: string_attribute
            string_attribute: {key: http.route, values: [/api/checkout, /api/pay], invert_match: true}
        """,
    "string_exact_with_empty_value": """
        policies:
          - name: empty-or-health
            type: string_attribute
            string_attribute: {key: http.route, values: ["", /health]}
        """,
    "string_regex": """
        policies:
          - name: routes-re
            type: string_attribute
            string_attribute:
              key: http.route
              values: ["^/api/v[0-9]+/users", admin]
              enabled_regex_matching: true
              cache_max_size: 2
        """,
    "string_regex_matches_empty": """
        policies:
          - name: empty-re
            type: string_attribute
            string_attribute: {key: http.route, values: ["^$"], enabled_regex_matching: true}
        """,
    "string_regex_invert": """
        policies:
          - name: not-acme
            type: string_attribute
            string_attribute: {key: tenant, values: [acme], enabled_regex_matching: true, invert_match: true}
        """,
    "string_resource_key": """
        policies:
          - name: services
            type: string_attribute
            string_attribute: {key: service.name, values: [checkout, auth]}
        """,
    "string_forced_header": """
        policies:
          - name: forced-sampling-policy
            type: string_attribute
            string_attribute: {key: http.request.header.x-force-trace, values: ["true"]}
        """,
    "string_forced_header_underscores_regex": """
        policies:
          - name: forced-re
            type: string_attribute
            string_attribute: {key: http.request.header.x_force_trace, values: ["^t"], enabled_regex_matching: true}
        """,
    "ottl_indexing": """
        policies:
          - name: ottl-index
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'attributes["http.route"][0] == "/api/checkout"'
                - 'resource.attributes["http.route"][0] == "a"'
                - 'attributes["http.route"]["path"] == "/api/pay"'
                - 'attributes["http.request.header.x_force_trace"][0] == "true"'
                - 'attributes["http.status_code"][1] >= 500'
        """,
    "ottl_indexing_nil": """
        policies:
          - name: ottl-index-nil
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'attributes["http.route"]["nope"] == nil and attributes["debug"][0] == false'
        """,
    "numeric_500_599": """
        policies:
          - name: server-errors
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}
        """,
    "numeric_min_only": """
        policies:
          - name: at-least-minus-5
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: -5, max_value: 0}
        """,
    "numeric_max_only": """
        policies:
          - name: at-most-10
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: 0, max_value: 10}
        """,
    "numeric_invert": """
        policies:
          - name: not-server-errors
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599, invert_match: true}
        """,
    "boolean_true": """
        policies:
          - name: debug
            type: boolean_attribute
            boolean_attribute: {key: debug, value: true}
        """,
    "boolean_false": """
        policies:
          - name: not-debug
            type: boolean_attribute
            boolean_attribute: {key: debug, value: false}
        """,
    "boolean_true_invert": """
        policies:
          - name: debug-inverted
            type: boolean_attribute
            boolean_attribute: {key: debug, value: true, invert_match: true}
        """,
    "span_count_3_to_5": """
        policies:
          - name: mid
            type: span_count
            span_count: {min_spans: 3, max_spans: 5}
        """,
    "span_count_min_3": """
        policies:
          - name: big
            type: span_count
            span_count: {min_spans: 3}
        """,
    "span_count_max_1": """
        policies:
          - name: single
            type: span_count
            span_count: {min_spans: 0, max_spans: 1}
        """,
    "trace_state": f"""
        policies:
          - name: vendor
            type: trace_state
            trace_state: {{key: vendor, values: ["on", x, "{'v' * 249}", "{'w' * 250}"]}}
        """,
    "trace_state_tenant_key": """
        policies:
          - name: tenant-key
            type: trace_state
            trace_state: {key: t1@sys, values: ["on"]}
        """,
    "trace_flags": """
        policies:
          - {name: sampled-flag, type: trace_flags}
        """,
    "ottl_condition": """
        policies:
          - name: ottl
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'attributes["http.response.status_code"] >= 500'
                - 'name == "GET /api"'
        """,
    "ottl_list_map_is_match": """
        policies:
          - name: quoted-b
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMatch(attributes["ottl.value"], "\\"b\\"")']
          - name: exact-list
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMatch(attributes["ottl.value"], "^\\\\[1,2,3\\\\]$")']
          - name: html-escaped
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMatch(attributes["ottl.value"], "u003c|u0026|u2028|\\\\\\\\n\\\\\\\\t")']
          - name: floats-bytes
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMatch(attributes["ottl.value"], "1\\\\.5,1e-07,1e\\\\+21,true,\\"Af8=\\"")']
          - name: sorted-map
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMatch(resource.attributes["ottl.value"], "^\\\\{\\"a\\":\\"x\\",\\"b\\":1\\\\}$")']
          - name: nested-and-empty
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'IsMatch(attributes["ottl.value"], "^\\\\[\\\\{\\"k\\":\\"v\\"\\\\},\\\\[\\"n\\"\\\\]\\\\]$")'
                - 'IsMatch(attributes["ottl.value"], "^\\\\[\\\\]$|^\\\\{\\\\}$")'
                - 'IsMatch(attributes["ottl.value"], "\\"y\\":\\"YWI=\\",\\"z\\":1e-07")'
                - 'IsMatch(attributes["ottl.value"], "^\\\\{\\"B\\":1,\\"_\\":3,\\"a\\":2\\\\}$")'
        """,
    "ottl_list_map_len_and_equality": """
        policies:
          - name: len-3
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Len(attributes["ottl.value"]) == 3']
          - name: len-0
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Len(resource.attributes["ottl.value"]) == 0']
          - name: same-as-resource
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'attributes["ottl.value"] == resource.attributes["ottl.value"] and attributes["ottl.value"] != nil'
          - name: differs-from-resource
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'attributes["ottl.value"] != resource.attributes["ottl.value"] and IsList(attributes["ottl.value"])'
          - name: is-map
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['IsMap(attributes["ottl.value"]) and Len(attributes["ottl.value"]) > 1']
        """,
    "ottl_converters_and_paths": """
        policies:
          - name: scope-version
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['instrumentation_scope.version == "" and instrumentation_scope.name == "db.lib"']
          - name: concat
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Concat([instrumentation_scope.name, instrumentation_scope.version], "@") == "db.lib@2.3.1"']
          - name: scope-attributes
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'instrumentation_scope.attributes["team"] == "payments"'
                - 'instrumentation_scope.attributes["tier"] == 2'
              spanevent: ['span.status.message == "é"']
          - name: suffix
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['HasSuffix(status.message, "connecting")']
          - name: upper-prefix
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['HasPrefix(ToUpperCase(status.message), "TIMEOUT")']
          - name: string-of-list
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'String(attributes["ottl.value"]) == "[3,2,1]"'
                - 'String(attributes["http.response.status_code"]) == "503"'
          - name: lower
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['ToLowerCase(name) == "get /api" and not (name == "get /api")']
        """,
    "ottl_int_double": """
        policies:
          - name: int-of-string
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - >-
                  Int(attributes["http.response.status_code"]) >= 503
                  and IsString(attributes["http.response.status_code"])
          - name: int-of-float
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - >-
                  Int(attributes["http.response.status_code"]) == 499
                  and IsDouble(attributes["http.response.status_code"])
          - name: double-of-bool
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Double(attributes["debug"]) == 1.0 and not IsInt(attributes["debug"])']
          - name: double-of-version
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Double(instrumentation_scope.version) > 9']
        """,
    "ottl_trim": """
        policies:
          - name: trim-suffix
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['TrimSuffix(status.message, " connecting") == "Timeout while"']
          - name: trim-prefix
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['TrimPrefix(name, "GET ") == "/api/v2"']
          - name: trim-spaces
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Trim(name) == "GET /api" and name != "GET /api"']
          - name: trim-cutset
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['Trim(name, "/ GETa") == "pi/v2" or Trim(name, "/ GETa") == "pi"']
        """,
    "ottl_condition_more": """
        policies:
          - name: ottl-more
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span:
                - 'resource.attributes["service.name"] == "checkout" and status.code == STATUS_CODE_ERROR'
                - 'IsMatch(name, "^POST ")'
                - 'attributes["http.response.status_code"] == "503"'
              spanevent:
                - 'name == "exception"'
        """,
    "and": """
        policies:
          - name: checkout-errors
            type: and
            and:
              and_sub_policy:
                - name: errors
                  type: status_code
                  status_code: {status_codes: [ERROR]}
                - name: checkout
                  type: string_attribute
                  string_attribute: {key: service.name, values: [checkout]}
        """,
    "and_with_not": """
        policies:
          - name: slow-not-health
            type: and
            and:
              and_sub_policy:
                - name: slow
                  type: latency
                  latency: {threshold_ms: 100}
                - name: not-health
                  type: not
                  not:
                    not_sub_policy:
                      name: health
                      type: string_attribute
                      string_attribute: {key: http.route, values: [/health]}
        """,
    "not": """
        policies:
          - name: fast
            type: not
            not:
              not_sub_policy:
                name: slow
                type: latency
                latency: {threshold_ms: 100}
        """,
    "drop_over_always": """
        policies:
          - {name: all, type: always_sample}
          - name: drop-health
            type: drop
            drop:
              drop_sub_policy:
                - name: health
                  type: string_attribute
                  string_attribute: {key: http.route, values: [/health]}
        """,
    "drop_two_subs_over_errors": """
        policies:
          - name: errors
            type: status_code
            status_code: {status_codes: [ERROR]}
          - name: drop-acme-debug
            type: drop
            drop:
              drop_sub_policy:
                - name: acme
                  type: string_attribute
                  string_attribute: {key: tenant, values: [acme], enabled_regex_matching: true}
                - name: debug
                  type: boolean_attribute
                  boolean_attribute: {key: debug, value: true}
        """,
    "attributes_group": """
        policies:
          - name: routes
            type: string_attribute
            string_attribute: {key: http.route, values: [/api/pay]}
          - name: codes
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: 599, max_value: 600}
          - name: debug
            type: boolean_attribute
            boolean_attribute: {key: debug, value: true}
        """,
    "mixed_first_match": """
        sample_on_first_match: true
        policies:
          - name: drop-health
            type: drop
            drop:
              drop_sub_policy:
                - name: health
                  type: string_attribute
                  string_attribute: {key: http.route, values: [/health]}
          - name: errors
            type: status_code
            status_code: {status_codes: [ERROR]}
          - name: slow
            type: latency
            latency: {threshold_ms: 500}
          - name: server-errors
            type: numeric_attribute
            numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}
          - name: admin
            type: string_attribute
            string_attribute: {key: http.route, values: [admin], enabled_regex_matching: true}
          - name: debug
            type: boolean_attribute
            boolean_attribute: {key: debug, value: true}
          - name: big
            type: span_count
            span_count: {min_spans: 10}
          - name: vendor
            type: trace_state
            trace_state: {key: vendor, values: ["on"]}
          - name: not-fast
            type: not
            not:
              not_sub_policy: {name: fast, type: latency, latency: {threshold_ms: 5}}
          - name: checkout-ok
            type: and
            and:
              and_sub_policy:
                - {name: ok, type: status_code, status_code: {status_codes: [OK]}}
                - {name: checkout, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
          - name: sample
            type: probabilistic
            probabilistic: {sampling_percentage: 10}
        """,
    "mixed_all_types": """
        sample_on_first_match: true
        policies:
          - name: drop-health
            type: drop
            drop:
              drop_sub_policy:
                - {name: health, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
          - name: errors
            type: status_code
            status_code: {status_codes: [ERROR]}
          - name: ottl
            type: ottl_condition
            ottl_condition:
              error_mode: ignore
              span: ['attributes["http.response.status_code"] >= 500', 'name == "GET /api"']
          - {name: flagged, type: trace_flags}
          - name: band
            type: latency
            latency: {threshold_ms: 100, upper_threshold_ms: 500}
          - name: sample
            type: probabilistic
            probabilistic: {sampling_percentage: 33.3, hash_salt: parity-salt}
        """,
}
MAIN_CASES["mixed_all_policies_evaluated"] = MAIN_CASES["mixed_first_match"].replace(
    "sample_on_first_match: true", "sample_on_first_match: false")


@pytest.mark.parametrize("case_id", list(MAIN_CASES))
def test_main_workload(case_id: str, reference: Callable[..., dict[str, Any]]) -> None:
    text = config(MAIN_CASES[case_id])
    cfg = load_or_skip(text)
    wl = main_workload()
    ref = reference(text, wl)
    check_reference_ran(ref, wl)
    run = run_tailsample(cfg, wl)
    compare(case_id, text, wl, run, ref)
    check_attribution(case_id, run, ref)


def check_attribution(case_id: str, run: TailsampleRun, ref: Mapping[str, Any]) -> None:
    """Which policy kept each kept trace (the reference's deciding policy: the first, in order, that sampled)."""
    ref_by = Counter(d["policy"] for d in ref["traces"].values() if d["decision"] == "sampled")
    ts_by = Counter({name: s.get("decided", 0) for name, s in run.policy_stats.items() if s.get("decided", 0)})
    assert sum(ts_by.values()) == len(run.kept), "tailsample's `decided` counts add up to the kept traces"
    explained = EXPLAINED.get(case_id, 0)
    if explained == 0:
        assert ts_by == ref_by, (f"{case_id}: the kept traces agree, but not which policy kept them: "
                                 f"tailsample {dict(ts_by)}, reference {dict(ref_by)}")
        return
    # Traces the two latency rules judge differently can be kept, or credited, differently: each can shift a
    # policy's count by one.
    for name in ts_by.keys() | ref_by.keys():
        assert abs(ts_by[name] - ref_by[name]) <= explained, (
            f"{case_id}: policy {name!r} kept {ts_by[name]} traces, the reference {ref_by[name]}: more than the "
            f"{explained} traces the latency deviation explains")


# ---- this suite's reading of the reference, checked on the reference alone -----------------------------------


@cache
def arrival_spans(wl: Workload) -> dict[str, list[Span]]:
    """Each trace's spans in the order the reference walks them: payloads in order, then resources, scopes and
    spans in payload order."""
    out: dict[str, list[Span]] = {}
    for p in wl.payloads:
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.setdefault(s.trace_id.hex(), []).append(s)
    return out


@pytest.mark.parametrize(("salt", "pct"), PROBABILISTIC)
def test_reference_probabilistic_threshold(salt: str, pct: float, reference: Callable[..., dict[str, Any]]) -> None:
    """The reference samples exactly the traces with FNV-1a(salt || ID) <= workload.reference_threshold(pct),
    including those whose hash is the threshold or one off it."""
    text = config(MAIN_CASES[f"probabilistic_{pct}_{salt or 'default_salt'}".replace(".", "_")])
    wl = main_workload()
    ref = reference(text, wl)
    check_reference_ran(ref, wl)
    threshold = reference_threshold(pct)
    predicted = {t.tid.hex() for t in wl.traces if prob_hash(t.tid, salt or DEFAULT_SALT) <= threshold}
    edges = [t for t in wl.traces if t.group == "probabilistic-edge"
             and abs(prob_hash(t.tid, salt or DEFAULT_SALT) - threshold) <= 3]
    assert len(edges) >= 10, "the workload lacks hashes next to this threshold"
    wrong = predicted ^ set(ref["kept"])
    assert not wrong, [facts(t) for t in wl.traces if t.tid.hex() in list(wrong)[:5]]


@pytest.mark.parametrize(("threshold", "upper"), [(100, 0), (100, 500), (500, 501), (0, 0)])
def test_reference_latency_walk(threshold: int, upper: int, reference: Callable[..., dict[str, Any]]) -> None:
    """The reference's latency policy is workload.reference_latency_ms: a walk over the spans in arrival order
    that stops at the first span where the running duration qualifies, treating 0 timestamps as unset."""
    text = config(f"""
        policies:
          - name: latency
            type: latency
            latency: {{threshold_ms: {threshold}, upper_threshold_ms: {upper}}}
        """)
    wl = main_workload()
    ref = reference(text, wl)
    check_reference_ran(ref, wl)
    spans = arrival_spans(wl)
    predicted = {tid for tid, ss in spans.items() if reference_latency_ms(ss, threshold, upper)[0]}
    wrong = sorted(predicted ^ set(ref["kept"]))
    by_hex = wl.by_hex()
    assert not wrong, "\n".join(facts(by_hex[t]) for t in wrong[:5])


# ---- stateful cases: scripted workloads ---------------------------------------------------------------------


@dataclass
class Scripted:
    """A stateful case: traces in arrival order, a config (a function of the reference's view of the traces,
    for byte budgets), which traces the reference must keep (indices into the script), and whether only the
    number kept is comparable (when which traces win depends on the reference's map order)."""

    script: list[dict[str, Any]]
    config: Callable[[list[dict[str, Any]]], str]
    expect: set[int] | None = None
    expect_count: int | None = None
    why: str = ""
    needs_sizes: bool = False


def _spans(*counts: int, **kw: Any) -> list[dict[str, Any]]:
    return [{"spans": n, **kw} for n in counts]


ERR = {"status": STATUS_ERROR}
SLOW = {"dur_ms": 200}
HEALTH = {"attributes": {"http.route": "/health"}}


def _rate(sps: int, burst: int | None = None, extra: str = "") -> Callable[[list[dict[str, Any]]], str]:
    b = "" if burst is None else f", burst_capacity: {burst}"
    return lambda _sizes: config(f"""
        {extra}
        policies:
          - name: rate
            type: rate_limiting
            rate_limiting: {{spans_per_second: {sps}{b}}}
        """)


def _composite(max_total: int, subs: str, allocation: str, order: str) -> Callable[[list[dict[str, Any]]], str]:
    sub_lines = textwrap.indent(textwrap.dedent(subs).strip(), " " * 8)
    text = (HEADER + "policies:\n"
            "  - name: budget\n"
            "    type: composite\n"
            "    composite:\n"
            f"      max_total_spans_per_second: {max_total}\n"
            f"      policy_order: {order}\n"
            "      composite_sub_policy:\n"
            f"{sub_lines}\n"
            f"      rate_allocation: {allocation}\n")
    return lambda _sizes: text


COMPOSITE_SUBS = """
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 100}}
    - {name: rest, type: always_sample}
"""
TWO_SUBS = """
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: rest, type: always_sample}
"""


def _bytes(per_second: Callable[[list[int]], int], burst: Callable[[list[int]], int] | None
           ) -> Callable[[list[dict[str, Any]]], str]:
    def make(sizes: list[dict[str, Any]]) -> str:
        b = [int(s["bytes"]) for s in sizes]
        cap = "" if burst is None else f", burst_capacity: {burst(b)}"
        return config(f"""
            policies:
              - name: bytes
                type: bytes_limiting
                bytes_limiting: {{bytes_per_second: {per_second(b)}{cap}}}
            """)
    return make


SCRIPTED: dict[str, Scripted] = {
    # token buckets (golang.org/x/time/rate): full at the first decision; a trace takes its span count; a trace
    # larger than the burst never passes and takes nothing; at 1 token/s the refill during the decisions
    # (milliseconds) stays below one token
    "rate_limiting_burst_is_inclusive": Scripted(
        _spans(100, 101), _rate(1, 100), expect={0}, why="100 spans fit a burst of 100, 101 never do"),
    "rate_limiting_default_burst_is_twice_the_rate": Scripted(
        _spans(101, 100), _rate(50), expect={1}, why="burst defaults to 2 x 50 = 100"),
    "rate_limiting_fills_exactly": Scripted(
        _spans(5, 21, 7, 8), _rate(1, 20), expect={0, 2, 3}, why="5 + 7 + 8 = 20 = burst; 21 > burst"),
    "rate_limiting_count": Scripted(
        _spans(*[10] * 10), _rate(1, 55), expect_count=5,
        why="five traces of ten fit 55 tokens; which five depends on the reference's map order, so only the "
            "count is compared"),
    "rate_limiting_after_first_match": Scripted(
        [{"spans": 10, **ERR}, *_spans(4, 6)],
        lambda _s: config("""
            sample_on_first_match: true
            policies:
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
              - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 10}}
            """),
        expect={0, 1, 2}, why="the error trace stops at the first policy and takes no tokens"),
    "rate_limiting_inside_and": Scripted(
        [{"spans": 10}, {"spans": 4, **ERR}, {"spans": 6, **ERR}],
        lambda _s: config("""
            policies:
              - name: errors-within-rate
                type: and
                and:
                  and_sub_policy:
                    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
                    - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 10}}
            """),
        expect={1, 2}, why="`and` stops at the first sub-policy that does not sample: the OK trace takes no tokens"),
    "rate_limiting_after_drop": Scripted(
        [{"spans": 10, **HEALTH}, *_spans(4, 6)],
        lambda _s: config("""
            policies:
              - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 10}}
              - name: drop-health
                type: drop
                drop:
                  drop_sub_policy:
                    - {name: health, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
            """),
        expect={1, 2}, why="drop policies run first; a dropped trace is not offered to the rate limiter"),
    # bytes: the trace's size is ptrace.ProtoMarshaler.TracesSize of its batches as the reference holds them
    # (one ResourceSpans per trace per incoming ResourceSpans, resource and scope copied); the config is made
    # from the sizes the reference reports
    "bytes_limiting_burst_is_inclusive": Scripted(
        _spans(3, 4), _bytes(lambda b: 1, lambda b: b[0]), expect={0}, needs_sizes=True,
        why="burst = the first trace's size; the second is bigger"),
    "bytes_limiting_fills_exactly": Scripted(
        [{"spans": 4, "payloads": 2}, {"spans": 30}, {"spans": 2, "schema_url": "https://opentelemetry.io/schemas/1.26.0"},
         {"spans": 1, "resource": {"service.name": "cart", "k": "v" * 50}}],
        _bytes(lambda b: 1, lambda b: b[0] + b[2] + b[3]), expect={0, 2, 3}, needs_sizes=True,
        why="burst = sizes of traces 0, 2 and 3 (one in two payloads, one with schema URLs); trace 1 is bigger"),
    "bytes_limiting_default_burst": Scripted(
        _spans(6, 7), _bytes(lambda b: (b[0] + 1) // 2, None), expect={0}, needs_sizes=True,
        why="burst defaults to 2 x bytes_per_second >= the first trace's size, < the second's"),
    **{
        f"bytes_limiting_size_of_{shape}_{'fits' if fits else 'one_byte_short'}": Scripted(
            [entry] if fits else [entry, {"spans": 1}],
            _bytes(lambda b: 1, (lambda b: b[0]) if fits else (lambda b: b[0] - 1)),
            expect={0} if fits else {1}, needs_sizes=True,
            why=f"burst = the reference's size of trace 0 ({shape})" + ("" if fits else " - 1; trace 1 is smaller"))
        for shape, entry in {
            "one_payload": {"spans": 3},
            "two_payloads": {"spans": 5, "payloads": 2},
            "two_resources": {"spans": 4, "resources": 2},
            "schema_urls": {"spans": 2, "schema_url": "https://opentelemetry.io/schemas/1.26.0"},
        }.items()
        for fits in (True, False)
    },
    # composite: per-second span budgets per sub-policy, in wall-clock seconds (the reference's decisions are
    # started early in a second); the first sub-policy that samples decides, over budget means not sampled
    "composite_budgets": Scripted(
        [{"spans": 20, **ERR}, {"spans": 51, **ERR}, {"spans": 30, **ERR}, {"spans": 30, **SLOW},
         {"spans": 31, **SLOW}, {"spans": 20}, {"spans": 21}],
        _composite(100, COMPOSITE_SUBS,
                   "[{policy: errors, percent: 50}, {policy: slow, percent: 30}, {policy: rest, percent: 20}]",
                   "[errors, slow, rest]"),
        expect={0, 2, 3, 5}, why="budgets 50/30/20 spans: 20 + 30 errors fit, 51 never; 30 slow fits, 31 not; "
                                 "20 fits the rest, 21 not"),
    "composite_without_rate_allocation": Scripted(
        _spans(10),
        lambda _s: config("""
            policies:
              - name: budget
                type: composite
                composite:
                  max_total_spans_per_second: 100
                  policy_order: [rest]
                  composite_sub_policy:
                    - {name: rest, type: always_sample}
            """),
        expect={0}, why="no rate_allocation: the only sub-policy gets all 100 spans per second"),
    "composite_equal_shares": Scripted(
        [{"spans": 33, **ERR}, {"spans": 34, **SLOW}, {"spans": 33, **SLOW}, {"spans": 34}],
        _composite(100, COMPOSITE_SUBS, "[]", "[errors, slow, rest]"),
        expect={0, 2}, why="no allocation: each of 3 gets int(100 / 3) = 33 spans"),
    "composite_percent_is_float": Scripted(
        [{"spans": 29, **ERR}, {"spans": 10}],
        _composite(100, TWO_SUBS, "[{policy: errors, percent: 29}, {policy: rest, percent: 71}]", "[errors, rest]"),
        expect={1}, why="the reference allots int64(float64(29) / 100 * 100) = 28 spans (0.29 * 100 = 28.999...)"),
    "composite_no_fall_through": Scripted(
        [{"spans": 20, **ERR}, {"spans": 5}],
        _composite(100, TWO_SUBS, "[{policy: errors, percent: 10}, {policy: rest, percent: 90}]", "[errors, rest]"),
        expect={1}, why="the error trace matches `errors` (budget 10) and is not sampled; `rest` is not tried"),
    "composite_policy_order_ignored": Scripted(
        [{"spans": 20, **ERR}, {"spans": 5}],
        _composite(100, TWO_SUBS, "[{policy: errors, percent: 10}, {policy: rest, percent: 90}]", "[rest, errors]"),
        expect={1}, why="the reference evaluates composite_sub_policy in list order; policy_order is not read"),
    "composite_total_is_per_sub_policy": Scripted(
        [{"spans": 40, **ERR}, {"spans": 40}],
        _composite(50, TWO_SUBS, "[{policy: errors, percent: 80}, {policy: rest, percent: 80}]", "[errors, rest]"),
        expect={0, 1}, why="allocations of 40 + 40 spans; max_total (50) is checked against each sub-policy's own "
                           "count, not the sum, so both are kept"),
}


@pytest.mark.parametrize("case_id", list(SCRIPTED))
def test_stateful_scripted(case_id: str, reference: Callable[..., dict[str, Any]]) -> None:
    case = SCRIPTED[case_id]
    wl = scripted(case.script)
    sizes: list[dict[str, Any]] = [{} for _ in wl.traces]
    if case.needs_sizes:
        view = reference(config("policies:\n  - {name: all, type: always_sample}"), wl)
        check_reference_ran(view, wl)
        sizes = [view["traces"][t.tid.hex()] for t in wl.traces]
    text = case.config(sizes)
    cfg = load_or_skip(text)
    for _attempt in range(3):
        ref = reference(text, wl, align_second=True)
        check_reference_ran(ref, wl)
        if ref["decision_wall_seconds"] <= 1:
            break
    else:
        pytest.fail("the reference's decisions kept straddling a wall-clock second", pytrace=False)
    ids = [t.tid.hex() for t in wl.traces]
    ref_kept = set(ref["kept"])
    if case.expect is not None:
        want = {ids[i] for i in case.expect}
        got = sorted(ids.index(t) for t in ref_kept)
        assert ref_kept == want, (f"the reference kept traces {got}, not {sorted(case.expect)} "
                                  f"({case.why}); sizes {[s.get('bytes') for s in sizes]}")
    if case.expect_count is not None:
        assert len(ref_kept) == case.expect_count, (len(ref_kept), case.why)
    run = run_tailsample(cfg, wl)
    if case.expect_count is not None and case.expect is None:
        got_ts = sorted(ids.index(t) for t in run.kept)
        assert len(run.kept) == len(ref_kept), (
            f"{case_id}: tailsample kept {len(run.kept)} traces ({got_ts}), the reference {len(ref_kept)} "
            f"({case.why})")
        return
    if run.kept != ref_kept:
        got_ts = sorted(ids.index(t) for t in run.kept)
        got_ref = sorted(ids.index(t) for t in ref_kept)
        script = "\n".join(f"  {i}: {e} -> reference {ref['traces'][ids[i]]}" for i, e in enumerate(case.script))
        pytest.fail(f"{case_id}: tailsample kept traces {got_ts}, the reference {ref['version']} kept {got_ref} "
                    f"({case.why})\nscript (arrival order):\n{script}\nconfig:\n{textwrap.indent(text, '  ')}",
                    pytrace=False)


# ---- trace sizes: maximum_trace_size_bytes and bytes_limiting as the reference measures them --------------------
# The reference adds, per part of a trace it receives, `ResourceSpansSize` of the part re-encoded by pdata
# (resource, scope and spans; no schema URLs; unknown fields gone) and drops the trace once the sum is over
# `maximum_trace_size_bytes`; `bytes_limiting` takes `TracesSize` of the same parts. Each limit below is the
# reference's own size of trace 0 (it fits: the check is `>`) or one byte less (it does not), read from the
# reference's hooks in a first run; the raw span bytes (54 for a one-span trace whose reference size is 97) lie
# far below, and the unknown fields' bytes above.

SIZE_SHAPES: dict[str, dict[str, Any]] = {
    "one_span": {"spans": 1},
    "three_spans": {"spans": 3},
    "two_payloads": {"spans": 5, "payloads": 2},
    "two_resources": {"spans": 4, "resources": 2},
    "schema_urls": {"spans": 2, "schema_url": "https://opentelemetry.io/schemas/1.26.0"},
    "unknown_fields": {"spans": 3, "unknown": True},
    "unknown_fields_two_payloads": {"spans": 4, "payloads": 2, "unknown": True},
}
SMALLEST = {"spans": 1, "resource": {}}  # smaller than every shape: kept under each one-byte-short limit


def _max_size(limit: Callable[[list[dict[str, Any]]], int]) -> Callable[[list[dict[str, Any]]], str]:
    return lambda sizes: config(f"""
        maximum_trace_size_bytes: {limit(sizes)}
        policies:
          - {{name: all, type: always_sample}}
        """)


SIZE_CASES: dict[str, Scripted] = {
    **{
        f"maximum_trace_size_{shape}_{'fits' if fits else 'one_byte_over'}": Scripted(
            [entry] if fits else [entry, SMALLEST],
            _max_size((lambda s: int(s[0]["size_bytes"])) if fits else (lambda s: int(s[0]["size_bytes"]) - 1)),
            expect={0} if fits else {1}, needs_sizes=True,
            why=f"limit = the reference's size of trace 0 ({shape})" + ("" if fits else " - 1; trace 1 is smaller"))
        for shape, entry in SIZE_SHAPES.items()
        for fits in (True, False)
    },
    **{
        f"bytes_limiting_size_of_{shape}_{'fits' if fits else 'one_byte_short'}": Scripted(
            [entry] if fits else [entry, SMALLEST],
            _bytes(lambda b: 1, (lambda b: b[0]) if fits else (lambda b: b[0] - 1)),
            expect={0} if fits else {1}, needs_sizes=True,
            why=f"burst = the reference's size of trace 0 ({shape})" + ("" if fits else " - 1; trace 1 is smaller"))
        for shape in ("unknown_fields", "unknown_fields_two_payloads")
        for entry in (SIZE_SHAPES[shape],)
        for fits in (True, False)
    },
}


@pytest.mark.parametrize("case_id", list(SIZE_CASES))
def test_trace_sizes(case_id: str, reference: Callable[..., dict[str, Any]]) -> None:
    case = SIZE_CASES[case_id]
    wl = scripted(case.script)
    view = reference(config("policies:\n  - {name: all, type: always_sample}"), wl)
    check_reference_ran(view, wl)
    sizes = [view["traces"][t.tid.hex()] for t in wl.traces]
    text = case.config(sizes)
    ref = reference(text, wl)
    # a trace over maximum_trace_size_bytes is dropped as it arrives, before Shutdown: decisions are not all late
    assert not ref["errors"], ref["errors"]
    ids = [t.tid.hex() for t in wl.traces]
    want = {ids[i] for i in case.expect or set()}
    assert set(ref["kept"]) == want, (f"the reference kept {sorted(ids.index(t) for t in ref['kept'])}, not "
                                      f"{sorted(case.expect or set())} ({case.why}); sizes {sizes}")
    run = run_tailsample(load_or_skip(text), wl)
    assert run.kept == want, (f"{case_id}: tailsample kept {sorted(ids.index(t) for t in run.kept)}, the "
                              f"reference {sorted(case.expect or set())} ({case.why}); reference sizes {sizes}")


# ---- time: decisions on decision_wait, late spans through the decision caches, eviction at num_traces -----------
# These run the reference in real time: the Go program sleeps before a payload (`gaps`), so its wall-clock
# decision_wait (a 1-second ticker) passes, and tailsample gets the same times on its engine clock (`now=`).
# What both send on is compared span by span (see compare_output).

LATE_GAP_S = 3.5  # decision_wait 1s: the reference decides within 2 ticks; 3.5 s leaves a margin on a busy machine


def _late_spans_workload(unknown: bool = False) -> Workload:
    """Three traces, root in payload 0 and a late child in payload 2: error root (kept), OK root with an error
    late child (not kept: the late span must not revive it), OK root and OK child (not kept). A fourth trace's
    OK root is in payload 0 and its error child in payload 1, right after, within decision_wait (kept)."""
    g = Gen(11)
    for root_status, late_status in ((STATUS_ERROR, STATUS_UNSET), (STATUS_UNSET, STATUS_ERROR),
                                     (STATUS_UNSET, STATUS_UNSET)):
        tid = g.new_tid()
        root = g.span(tid, status=root_status, name="root", attributes={"http.route": "/api"})
        late = g.span(tid, parent=root.span_id, status=late_status, name="late")
        if unknown:
            add_unknown_fields(root)
            add_unknown_fields(late)
        g.add("timed", [Part({"service.name": "checkout"}, [root]),
                        Part({"service.name": "cart"}, [late], scope=("other.lib", "2.0"), gap=2)], tid)
    tid = g.new_tid()
    root = g.span(tid, name="root")
    child = g.span(tid, parent=root.span_id, status=STATUS_ERROR, name="in-time")
    g.add("timed", [Part({"service.name": "checkout"}, [root]), Part({"service.name": "cart"}, [child], gap=1)], tid)
    return Workload(list(g.traces), assemble(g.traces, parts_per_payload=4))


def run_tailsample_timed(cfg: tailsample.Config, wl: Workload, gaps: Mapping[int, float]) -> list[bytes]:
    """The payloads at the times `gaps` gives (seconds before each), polling as time passes; then a flush."""
    eng = tailsample.Engine(cfg)
    out: list[bytes] = []
    now = 0.0
    for i, p in enumerate(wl.payloads):
        if gaps.get(i):
            now += gaps[i]
            out += eng.poll(now=now)
        eng.ingest(p, now=now)
        out += eng.poll(now=now)
    return out + eng.flush(now=now)


def output_spans(payloads: Sequence[bytes]) -> dict[tuple[str, str], tuple[bytes, bytes, bytes]]:
    """(trace ID, span ID) -> (resource, scope, span) as sent on, each serialised by Python's protobuf."""
    out = {}
    for p in payloads:
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out[(sp.trace_id.hex(), sp.span_id.hex())] = (
                        rs.resource.SerializeToString(), ss.scope.SerializeToString(), sp.SerializeToString())
    return out


def _clear_empty(m: Any) -> None:
    """Clears every singular message field that is present but empty: pdata always writes `status` and a
    KeyValue's `value` (2 bytes when empty), an SDK may leave them out; the content is the same."""
    for fd, value in m.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.is_repeated:
            for item in value:
                _clear_empty(item)
        else:
            _clear_empty(value)
            if value.ByteSize() == 0 and fd.containing_oneof is None:
                m.ClearField(fd.name)


def _without_unknown(data: bytes, cls: Any) -> bytes:
    m = cls.FromString(data)
    m.DiscardUnknownFields()
    _clear_empty(m)
    return bytes(m.SerializeToString(deterministic=True))


def compare_output(wl: Workload, ts_out: Sequence[bytes], ref_out: Sequence[bytes]) -> None:
    """The same spans, under the same resource and scope. pdata re-encodes what it sends (unknown fields
    dropped), tailsample sends each span's bytes as they arrived: so each span is compared with its unknown
    fields discarded and both serialised by one encoder, and tailsample's span bytes must also equal the input's
    exactly."""
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    ts, ref = output_spans(ts_out), output_spans(ref_out)
    assert set(ts) == set(ref), (f"spans only tailsample sent: {sorted(set(ts) - set(ref))}; only the reference: "
                                 f"{sorted(set(ref) - set(ts))}")
    sent = {(s.trace_id.hex(), s.span_id.hex()): s.SerializeToString() for t in wl.traces for s in t.spans}
    for key, (res, scope, span) in ts.items():
        assert span == sent[key], f"tailsample changed span {key}'s bytes"
        rres, rscope, rspan = ref[key]
        for mine, theirs, cls in ((res, rres, Resource), (scope, rscope, InstrumentationScope), (span, rspan, Span)):
            assert _without_unknown(mine, cls) == _without_unknown(theirs, cls), (key, cls.__name__)


CACHES = "decision_cache: {sampled_cache_size: 100, non_sampled_cache_size: 100}\n"
ERRORS = """
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    """


@pytest.mark.parametrize(("caches", "unknown"), [
    (True, False), (True, True),
    (False, False),
], ids=["caches", "caches_unknown_fields", "no_caches"])
def test_late_spans_follow_the_decision(caches: bool, unknown: bool,
                                        reference: Callable[..., dict[str, Any]]) -> None:
    """decision_wait 1s; payload 1 comes right after payload 0, payload 2 3.5 s later, when every trace is
    decided (on time, not at Shutdown): the in-time error child makes its trace kept, the kept trace's late span
    is sent on, the others' late spans are dropped, an error in a late span does not revive a trace decided not
    sampled. Without decision caches the reference keeps decided traces
    in memory (until num_traces evicts them) and answers late spans from there."""
    wl = _late_spans_workload(unknown)
    text = "decision_wait: 1s\n" + (CACHES if caches else "") + textwrap.dedent(ERRORS).strip() + "\n"
    assert len(wl.payloads) == 3
    gaps = {2: LATE_GAP_S}
    ref = reference(text, wl, gaps=gaps, output=True)
    assert not ref["errors"], ref["errors"]
    assert ref["decided_before_shutdown"] >= 4, f"the reference decided {ref['decided_before_shutdown']} on time"
    want = sorted([wl.traces[0].tid.hex(), wl.traces[3].tid.hex()])
    assert ref["kept"] == want and ref["kept_spans"] == 4, (ref["kept"], ref["kept_spans"])
    ts_out = run_tailsample_timed(load_or_skip(text), wl, gaps)
    compare_output(wl, ts_out, ref["output"])


def test_held_decisions_leave_num_traces_oldest_arrival_first(reference: Callable[..., dict[str, Any]]) -> None:
    """No decision caches, num_traces 3, decision_wait 1s, one trace per payload: A (error root, kept) and B
    (OK root, not kept) are decided and held; 3.5 s later C and D arrive, and D's arrival pushes A (the oldest
    arrival) out. B's late error span then follows B's decision (dropped, not a new kept trace); A's late OK span
    starts a new trace (not kept, where a held A would have sent it on), and its arrival pushes B out."""
    g = Gen(12)
    a, b, c, d = (g.new_tid() for _ in range(4))
    a_root = g.span(a, status=STATUS_ERROR, name="root")
    b_root = g.span(b, name="root")
    b_late = g.span(b, parent=b_root.span_id, status=STATUS_ERROR, name="late")
    a_late = g.span(a, parent=a_root.span_id, name="late")
    res = {"service.name": "checkout"}
    order = [(a, a_root), (b, b_root), (c, g.span(c, name="root")), (d, g.span(d, name="root")),
             (b, b_late), (a, a_late)]
    payloads = [assemble([Trace(tid, "held", [Part(res, [sp])])])[0] for tid, sp in order]
    traces = [Trace(tid, "held", [Part(res, [sp for t, sp in order if t == tid])]) for tid in (a, b, c, d)]
    wl = Workload(traces, payloads)
    text = "decision_wait: 1s\nnum_traces: 3\n" + textwrap.dedent(ERRORS).strip() + "\n"
    gaps = {2: LATE_GAP_S}
    ref = reference(text, wl, gaps=gaps, output=True)
    assert not ref["errors"], ref["errors"]
    assert ref["kept"] == [a.hex()] and ref["kept_spans"] == 1, (ref["kept"], ref["kept_spans"])
    ts_out = run_tailsample_timed(load_or_skip(text), wl, gaps)
    compare_output(wl, ts_out, ref["output"])


def test_eviction_at_num_traces(reference: Callable[..., dict[str, Any]]) -> None:
    """num_traces 3 and five one-span traces, one per payload, decided at Shutdown: each new trace past the
    bound evicts the oldest undecided one, so the last three are kept, the first two lost undecided."""
    wl = scripted(_spans(1, 1, 1, 1, 1))
    text = config("""
        num_traces: 3
        policies:
          - {name: all, type: always_sample}
        """)
    ref = reference(text, wl, output=True)
    assert not ref["errors"], ref["errors"]
    ids = [t.tid.hex() for t in wl.traces]
    assert ref["kept"] == sorted(ids[2:]), [ids.index(t) for t in ref["kept"]]
    eng = tailsample.Engine(load_or_skip(text))
    out: list[bytes] = []
    for p in wl.payloads:
        eng.ingest(p, now=0)
    out += eng.flush(now=0)
    assert eng.stats()["traces_evicted"] == 2, eng.stats()
    compare_output(wl, out, ref["output"])


def test_output_bytes_of_the_main_workload_case(reference: Callable[..., dict[str, Any]]) -> None:
    """What both send on for one stateless case over the 20,000-trace workload: the same spans under the same
    resources and scopes (compare_output)."""
    wl = main_workload()
    text = config("""
        policies:
          - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
        """)
    ref = reference(text, wl, output=True)
    check_reference_ran(ref, wl)
    eng = tailsample.Engine(load_or_skip(text))
    for p in wl.payloads:
        eng.ingest(p, now=0)
    compare_output(wl, eng.flush(now=0), ref["output"])


# ---- what the reference's decoder accepts: unknown fields yes, a known field with the wrong wire type no -------


def test_reference_unknown_fields_and_wrong_wire_types(reference: Callable[..., dict[str, Any]]) -> None:
    """pdata's generated decoder (v1.67) skips unknown fields but returns "proto: wrong wireType = 2 for field
    Kind" for a known field sent with another wire type, so the whole payload is refused (the OTLP receivers
    decode with pdata too; not run here), unlike the protobuf runtimes, which keep it as an unknown field."""
    wl = scripted([{"spans": 1, "unknown": True}, {"spans": 1}])
    text = config("policies:\n  - {name: all, type: always_sample}")
    ref = reference(text, wl)
    assert not ref["errors"] and len(ref["kept"]) == 2, ref
    req = ExportTraceServiceRequest.FromString(wl.payloads[0])
    req.resource_spans[0].scope_spans[0].spans[0].MergeFromString(bytes([0x32, 1, 0]))  # kind, length-delimited
    bad = Workload(wl.traces, [req.SerializeToString(), *wl.payloads[1:]])
    ref = reference(text, bad)
    assert "wrong wireType = 2 for field Kind" in ref["errors"], ref["errors"]
# ---- Go regular expressions (string_attribute and OTTL IsMatch) ----------------------------------------------

# Patterns Go's regexp accepts, whose meaning a Unicode-aware engine would change (or whose syntax it would refuse)
GO_REGEXES = [r"^\w+$", r"\bfoo\b", r"\d", r"^\d+$", r"(?i)^k$", r"(?i)^s$", r"(?i)^\w$", r"(?i)^\W+$", r"\s",
              r"^\Qa.b*\E$", r"^\p{Greek}+$", r"\p{greek}", r"^\p{Lu}", r"\x{212A}", r"^(?P<1>a)\.b", r"^\<a\>$",
              r"^a{$", r"^x{1000}$", r"^[[:alpha:]]+$", r"[^\x00-\x7F]", r"(?i)^ǅ$", r"(?i)^ss$", r"^\PL+$",
              r"\p{^Latin}", r"^(?)a", r"^[\d\s]+$"]
# Patterns Go's regexp refuses (a Rust regex would take most of them)
GO_REFUSED = [r"x{1001}", r"(x{10}){101}", r"a**", r"(?x)a b", r"\u0041", r"\p{Alphabetic}", r"[[:foo:]]"]


def _regex_config(pattern: str, ottl: bool) -> str:
    if ottl:
        cond = yaml.safe_dump(f'IsMatch(attributes["http.route"], {json.dumps(pattern)})', width=10_000).strip()
        cond = cond.removesuffix("...").strip()
        return config(f"""
            policies:
              - name: re
                type: ottl_condition
                ottl_condition:
                  span:
                    - {cond}
            """)
    value = json.dumps(pattern, ensure_ascii=False)
    return config(f"""
        policies:
          - name: re
            type: string_attribute
            string_attribute: {{key: http.route, values: [{value}], enabled_regex_matching: true}}
        """)


@pytest.mark.parametrize("ottl", [False, True], ids=["string_attribute", "ottl"])
@pytest.mark.parametrize("pattern", GO_REGEXES)
def test_go_regex_semantics(pattern: str, ottl: bool, reference: Callable[..., dict[str, Any]]) -> None:
    """Each value of the regex workload sampled, or not, as Go's regexp matches it, in both policies."""
    text = _regex_config(pattern, ottl)
    wl = regex_workload()
    ref = reference(text, wl)
    check_reference_ran(ref, wl)
    run = run_tailsample(load_or_skip(text), wl)
    by_hex = wl.by_hex()
    ref_kept = set(ref["kept"])
    differ = sorted(by_hex[t].note for t in run.kept ^ ref_kept)
    assert run.kept == ref_kept, f"{pattern!r}: decided differently on {differ}"


@pytest.mark.parametrize("ottl", [False, True], ids=["string_attribute", "ottl"])
@pytest.mark.parametrize("pattern", GO_REFUSED)
def test_go_regex_refused(pattern: str, ottl: bool, reference: Callable[..., dict[str, Any]]) -> None:
    """What Go's regexp refuses, the reference refuses at start and tailsample at load, saying it is Go's rule."""
    text = _regex_config(pattern, ottl)
    ref = reference(text, regex_workload())
    assert ref["errors"], f"the reference took {pattern!r}"
    with pytest.raises(tailsample.ConfigError, match="invalid regular expression") as exc:
        tailsample.Config.from_dict(yaml.safe_load(text))
    assert json.dumps(pattern) in str(exc.value) or repr(pattern) in str(exc.value), str(exc.value)


# ---- configuration values the reference accepts -------------------------------------------------------------

_ALL = "{name: all, type: always_sample}"
# Taken with the reference's meaning: both load them and decide alike.
CONFIG_SAME = {
    "integer written as a float": "num_traces: 100.0\npolicies: [" + _ALL + "]",
    "negative cache size": "decision_cache: {sampled_cache_size: -1}\npolicies: [" + _ALL + "]",
    "one string as a list": "policies: [{name: s, type: string_attribute, "
                            "string_attribute: {key: http.route, values: 'foo,123'}}]",
    "status codes as one string": "policies: [{name: s, type: status_code, "
                                  "status_code: {status_codes: 'ERROR,UNSET'}}]",
    "negative burst capacity": "policies: [{name: r, type: rate_limiting, "
                               "rate_limiting: {spans_per_second: 10, burst_capacity: -1}}]",
    "negative regex cache size": "policies: [{name: s, type: string_attribute, string_attribute: {key: http.route, "
                                 "values: ['^f'], enabled_regex_matching: true, cache_max_size: -1}}]",
    "negative allocation percent": "policies: [{name: c, type: composite, composite: {max_total_spans_per_second: 100, "
                                   "policy_order: [x], composite_sub_policy: [{name: x, type: always_sample}], "
                                   "rate_allocation: [{policy: x, percent: -5}]}}]",
}
# Refused, with a message that says how the reference reads them.
CONFIG_EXPLAINED = {
    "bare-number duration": "decision_wait: 30\npolicies: [" + _ALL + "]",
    "zero num_traces": "num_traces: 0\npolicies: [" + _ALL + "]",
    "fractional integer": "policies: [{name: l, type: latency, latency: {threshold_ms: 1.5}}]",
    "negative threshold": "policies: [{name: l, type: latency, latency: {threshold_ms: -5}}]",
    "upper below threshold": "policies: [{name: l, type: latency, "
                             "latency: {threshold_ms: 100, upper_threshold_ms: 50}}]",
    "empty policies": "policies: []",
    "empty and": "policies: [{name: a, type: and, and: {and_sub_policy: []}}]",
    "empty drop": "policies: [{name: a, type: drop, drop: {drop_sub_policy: []}}]",
    "zero rate": "policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 0}}]",
    "negative percentage": "policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: -1}}]",
    "max_spans below min_spans": "policies: [{name: s, type: span_count, span_count: {min_spans: 5, max_spans: 2}}]",
    "span count beyond 32 bits": "policies: [{name: s, type: span_count, span_count: {min_spans: 3000000000}}]",
    "integer beyond 64 bits": "policies: [{name: n, type: numeric_attribute, "
                              "numeric_attribute: {key: k, min_value: 1, max_value: 9223372036854775808}}]",
    "repeated sub-policy name": "policies: [{name: a, type: and, and: {and_sub_policy: "
                                "[{name: x, type: always_sample}, {name: x, type: always_sample}]}}]",
    "empty key": "policies: [{name: s, type: string_attribute, string_attribute: {key: '', values: [a]}}]",
    "unknown composite name": "policies: [{name: c, type: composite, composite: {max_total_spans_per_second: 100, "
                              "policy_order: [y], composite_sub_policy: [{name: x, type: always_sample}]}}]",
}


@pytest.mark.parametrize("case_id", list(CONFIG_SAME))
def test_config_reference_reading(case_id: str, reference: Callable[..., dict[str, Any]]) -> None:
    text = HEADER + CONFIG_SAME[case_id] + "\n"
    wl = regex_workload()
    ref = reference(text, wl)
    check_reference_ran(ref, wl)
    run = run_tailsample(load_or_skip(text), wl)
    if "rate_limiting" in text:
        # Which traces a bucket takes within one tick depends on the reference's (random) decision order.
        assert len(run.kept) == len(ref["kept"]) < len(wl.traces), case_id
    else:
        assert run.kept == set(ref["kept"]), case_id


@pytest.mark.parametrize("case_id", list(CONFIG_EXPLAINED))
def test_config_refused_with_reference_reading(case_id: str, reference: Callable[..., dict[str, Any]]) -> None:
    body = CONFIG_EXPLAINED[case_id]
    text = ("" if body.startswith("decision_wait") else HEADER) + body + "\n"
    ref = reference(text, regex_workload())
    assert not ref["errors"], f"the reference now refuses it too: {ref['errors']}"
    with pytest.raises(tailsample.ConfigError, match=r"the reference (accepts|reads|truncates|wraps)"):
        tailsample.Config.from_dict(yaml.safe_load(text))


# ---- the harness itself ---------------------------------------------------------------------------------------


def test_workload_shape() -> None:
    wl = main_workload()
    assert len(wl.traces) >= 20_000
    groups = Counter(t.group for t in wl.traces)
    assert all(groups[g] > 0 for g in _GROUP_ORDER if g != "scripted"), groups
    multi_payload = sum(len(set(t.payloads)) > 1 for t in wl.traces)
    multi_resource = sum(len({repr(p.resource) for p in t.parts}) > 1 for t in wl.traces)
    assert multi_payload > 2000 and multi_resource > 2000, (multi_payload, multi_resource)
    statuses = Counter(s.status.code for t in wl.traces for s in t.spans)
    assert statuses[STATUS_ERROR] and statuses[STATUS_OK], statuses


def test_reference_version(reference: Callable[..., dict[str, Any]]) -> None:
    wl = scripted(_spans(1))
    ref = reference(config("policies:\n  - {name: all, type: always_sample}"), wl)
    check_reference_ran(ref, wl)
    assert ref["version"].startswith("v0."), ref["version"]
    assert len(ref["kept"]) == 1
