"""End to end over real OpenTelemetry instrumentation: each stack's three services → `tailsample serve` running the
seed's policies unchanged → a real Jaeger v2, checked through Jaeger's query API and serve's gap audit.

Slow (a few minutes for every stack and convention after the first set-up): marked `realworld`, deselected in the
normal run, run by `make test-realworld`. With TAILSAMPLE_REALWORLD_UPDATE=1 each run also rewrites its fixture
under tests/data/realworld/ (the recording and its ground truth), which the fast tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import jaeger_fixture
from realworld import checks, harness
from realworld.stacks import Stack, StackUnavailable, all_stacks

pytestmark = pytest.mark.realworld

CASES = [(s, c) for s in all_stacks() for c in s.conventions]
JAEGER_WAIT_S = 10.0  # serve exports a kept trace at once; Jaeger's storage takes a moment

# kept / total of the `ok` traces over every run so far: the binomial check is over all stacks together
_rest_totals = {"kept": 0, "n": 0}


@pytest.fixture(scope="module")
def jaeger_binary() -> Any:
    # Built only when asked (`make test-realworld`): otherwise the suite runs where Jaeger is already cached.
    return jaeger_fixture.jaeger_binary()


@pytest.fixture(scope="module", params=CASES, ids=[f"{s.name}-{c}" for s, c in CASES])
def run(request: pytest.FixtureRequest, jaeger_binary: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.RunResult]:
    stack: Stack = request.param[0]
    convention: str = request.param[1]
    try:
        stack.prepare()  # installs once into the cache; run_stack's own call is then immediate
    except StackUnavailable as e:
        pytest.skip(f"{stack.name} unavailable: {e}")
    tmp = tmp_path_factory.mktemp(f"{stack.name}-{convention}")
    with harness.run_stack(stack, convention, jaeger_binary, tmp) as result:
        if os.environ.get("TAILSAMPLE_REALWORLD_UPDATE"):
            harness.write_fixture(result)
        yield result


def _jaeger_traces(run: harness.RunResult, trace_ids: list[str], *, wait_for_all: bool) -> dict[str, set[str]]:
    """Span IDs Jaeger holds per trace ID (absent: none). With `wait_for_all`, polls until every trace is whole
    (or JAEGER_WAIT_S passes); else reads once, after serve has long exported what it kept."""
    deadline = time.monotonic() + (JAEGER_WAIT_S if wait_for_all else 0)
    while True:
        got: dict[str, set[str]] = {}
        for tid in trace_ids:
            spans = run.jaeger.trace(tid)
            if spans:
                got[tid] = {s["spanID"] for s in spans}
        whole = all(len(got.get(t, ())) == len(run.by_trace[t]) for t in trace_ids)
        if not wait_for_all or whole or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_the_stack_obeys_the_contract(run: harness.RunResult) -> None:
    """Scenario: every request answered as the contract says, and every trace it reported was recorded.
    Guarantees: the ground truth the other tests use is about traces that exist."""
    missing = [t for t in run.truth if t not in run.by_trace]
    assert not missing, f"trace IDs answered in x-trace-ids but never recorded: {missing[:5]}"
    forced_first = [a.trace_ids[0] for a in run.answers if a.scenario == "forced"]
    uncaptured = [t for t in forced_first
                  if not any(harness.attr_keys(s) & set(harness.CAPTURED_HEADER_KEYS) for s in run.by_trace[t])]
    assert not uncaptured, f"forced requests whose frontend trace carries no captured x-force-trace: {uncaptured}"


def test_error_slow_and_forced_traces_arrive_whole_in_jaeger(run: harness.RunResult) -> None:
    """Scenario: the seed's YAML, unchanged, over real instrumentation.
    Guarantees: every error, slow and forced trace is in Jaeger with every span the services sent."""
    expected = checks.must_keep(run.truth)
    got = _jaeger_traces(run, sorted(expected), wait_for_all=True)
    failures: dict[str, list[str]] = {}
    for tid, kind in sorted(expected.items()):
        want = {s["spanId"].lower() for s in run.by_trace[tid]}
        have = got.get(tid, set())
        if have != want:
            failures.setdefault(kind, []).append(f"{tid} ({len(have)}/{len(want)} spans)")
    summary = {k: f"{len(failures.get(k, []))} of {sum(1 for v in expected.values() if v == k)} missing or partial"
               for k in checks.MUST_KEEP}
    assert not failures, f"{run.stack} {run.convention}: {summary}; e.g. {json.dumps(failures)[:600]}"


def test_the_rest_is_kept_at_one_percent(run: harness.RunResult) -> None:
    """Scenario: the `ok` traces meet only the seed's 1 % probabilistic policy.
    Guarantees: the kept count is a plausible Binomial(n, 1 %) draw (exact tails, alpha 1e-6), over every stack and
    convention run so far together (one run has too few traces for a lower bound)."""
    ok = checks.rest(run.truth)
    got = _jaeger_traces(run, ok, wait_for_all=False)
    _rest_totals["kept"] += len(got)
    _rest_totals["n"] += len(ok)
    problem = checks.within_binomial_bounds(_rest_totals["kept"], _rest_totals["n"])
    assert problem is None, f"the rest, over all runs so far: {problem}"


def test_jaeger_holds_exactly_what_tailsample_kept(run: harness.RunResult) -> None:
    """Scenario: serve's own record of what it kept (`/debug/kept`) against what reached the backend.
    Guarantees: Jaeger holds every trace serve kept, whole, and no trace serve did not keep."""
    kept = run.serve.kept() & set(run.truth)
    got = _jaeger_traces(run, sorted(run.truth), wait_for_all=False)
    assert set(got) == kept, (f"kept by serve, not in Jaeger: {sorted(kept - set(got))[:5]}; in Jaeger, "
                              f"not kept by serve: {sorted(set(got) - kept)[:5]}")
    partial = [t for t in kept if len(got[t]) != len(run.by_trace[t])]
    assert not partial, f"kept traces Jaeger holds in part: {partial[:5]}"


def test_live_gap_audit_names_the_broken_pair(run: harness.RunResult) -> None:
    """Scenario: cart drops the context on every call to payments; frontend → cart keeps it.
    Guarantees: serve's /debug/gaps (the seed's pipeline) names cart → payments with a gap on every call, flags no
    healthy pair, and counts every call (CLIENT span), named or not."""
    report = run.serve.gaps()["pipelines"][harness.SAMPLED]
    assert report is not None, "the propagation audit is off in the seed's pipeline"
    problems = checks.gap_problems(report, len(run.answers), checks.client_spans(run.by_trace),
                                   checks.service_names(run.by_trace, "payments"))
    assert not problems, f"{run.stack} {run.convention}: " + "; ".join(problems)


def test_gap_examples_include_kept_traces(run: harness.RunResult) -> None:
    """Scenario: the broken pair's gaps happen in kept traces (every error, slow and forced one) and dropped ones.
    Guarantees: the example trace IDs shown for cart → payments include traces Jaeger has."""
    report = run.serve.gaps()["pipelines"][harness.SAMPLED]
    pair = checks.broken_pair(report or {}, checks.service_names(run.by_trace, "payments"))
    assert pair is not None, "no pair cart → payments to take examples from"
    in_jaeger = _jaeger_traces(run, list(pair["examples"]), wait_for_all=False)
    assert in_jaeger, f"none of the examples {pair['examples']} is in Jaeger (404): examples must prefer kept traces"


def test_gaps_command_against_the_running_service(run: harness.RunResult) -> None:
    """Scenario: an operator runs `tailsample gaps --url` during the incident.
    Guarantees: it exits 0 and its text names cart → payments; its JSON (both pipelines merged) names the pair."""
    base = [sys.executable, "-m", "tailsample", "gaps", "--url", run.serve.metrics_url]
    text = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert text.returncode == 0, text.stderr
    payments = checks.service_names(run.by_trace, "payments")
    rows = [line.split() for line in text.stdout.splitlines()]
    assert any(r[:1] == ["cart"] and any(n in " ".join(r[1:4]) for n in payments) for r in rows), text.stdout
    doc = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert doc.returncode == 0, doc.stderr
    assert checks.broken_pair(json.loads(doc.stdout), payments) is not None, doc.stdout


def test_gaps_from_jaeger_match_the_live_audit(run: harness.RunResult) -> None:
    """Scenario: an SRE arriving after the incident has only the stored traces: `tailsample gaps --jaeger`.
    Guarantees: the audit of what Jaeger holds names the same broken pairs as serve's live audit (Jaeger holds
    only kept traces, so the counts differ; the pairs with gaps do not)."""
    live = run.serve.gaps()["pipelines"][harness.SAMPLED] or {}
    got = subprocess.run([sys.executable, "-m", "tailsample", "gaps", "--jaeger", run.jaeger.query, "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)

    def broken(report: dict[str, Any]) -> set[tuple[str, str]]:
        return {(p["source"], p["destination"]) for p in report.get("pairs", []) if p["gaps"] > 0}

    assert broken(stored) == broken(live), f"stored: {broken(stored)}; live: {broken(live)}"
    assert checks.broken_pair(stored, checks.service_names(run.by_trace, "payments")) is not None, got.stdout
