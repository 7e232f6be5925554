"""The recordings of real instrumentation (tests/data/realworld/, made by `make test-realworld UPDATE=1`), replayed
offline: the seed's policies and the gap audit on what real SDKs emit, in the normal (fast) run.

Each fixture is one stack and convention: the OTLP/JSON the services sent to `tailsample serve` (its `file`
exporter's output) and a `.truth.json` sidecar saying which trace IDs are error / slow / forced / ok.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from realworld import checks, emitted
from realworld.harness import CAPTURED_HEADER_KEYS, FIXTURES, attr_keys, read_recording, spans_by_trace
from tailsample import Config, Engine
from tailsample.collector.fileformat import read_payloads
from tailsample.engine import split_by_trace
from tailsample.incident.gaps import audit_payloads

SIDECARS = sorted(FIXTURES.glob("*.truth.json"))


def _recording(side: Path) -> Path:
    stem = side.name.removesuffix(".truth.json")
    (rec,) = FIXTURES.glob(f"{stem}.otlp.json*")
    return rec


class Fixture:
    def __init__(self, side: Path) -> None:
        self.truth_doc: dict[str, Any] = json.loads(side.read_text())
        self.recording = _recording(side)
        self.by_trace = spans_by_trace(read_recording(self.recording))
        self.truth: dict[str, str] = {t: kind for kind, ids in self.truth_doc["traces"].items() for t in ids}
        self.payloads = list(read_payloads(self.recording))
        self.name = side.name.removesuffix(".truth.json")

    def replay(self) -> dict[str, int]:
        """Every payload through an engine on the seed's default config, then everything decided: kept spans
        per trace ID."""
        engine = Engine(Config.default())
        for p in self.payloads:
            engine.ingest(p, now=0.0)
        kept: dict[str, int] = {}
        for out in engine.flush(now=0.0):
            for tid, part in split_by_trace(out):
                kept[tid.hex()] = kept.get(tid.hex(), 0) + _span_count(part)
        return kept


def _span_count(payload: bytes) -> int:
    from tailsample.engine import inspect_payload

    return int(inspect_payload(payload)["spans"])


_cache: dict[Path, Fixture] = {}


@pytest.fixture(params=SIDECARS, ids=[s.name.removesuffix(".truth.json") for s in SIDECARS])
def fixture(request: pytest.FixtureRequest) -> Fixture:
    side: Path = request.param
    if side not in _cache:
        _cache[side] = Fixture(side)
    return _cache[side]


def test_fixtures_exist_for_every_python_stack_and_both_conventions() -> None:
    """Guarantees: the corpus covers the Python stacks in both conventions and both OTLP protocols."""
    names = {s.name.removesuffix(".truth.json") for s in SIDECARS}
    for stack in ("python_flask", "python_asgi", "python_grpc"):
        for convention in ("default", "http"):
            assert f"{stack}-{convention}" in names
    protocols = {json.loads(s.read_text())["otlp_protocol"] for s in SIDECARS}
    assert protocols >= {"grpc", "http/protobuf"}


def test_fixture_is_small_and_consistent(fixture: Fixture) -> None:
    """Guarantees: each fixture is small, every trace of its ground truth is in its recording, and the forced
    requests' first trace carries the captured header."""
    assert fixture.recording.stat().st_size < 400_000
    assert 30 <= len(fixture.truth_doc["requests"]) <= 60
    assert set(fixture.truth) <= set(fixture.by_trace), "traces of the ground truth missing from the recording"
    others = [s["name"] for t in set(fixture.by_trace) - set(fixture.truth) for s in fixture.by_trace[t]]
    assert all("health" in name for name in others), f"unexpected traces in the recording: {others[:5]}"
    for r in fixture.truth_doc["requests"]:
        if r["scenario"] == "forced":
            first = fixture.by_trace[r["trace_ids"][0]]
            assert any(attr_keys(s) & set(CAPTURED_HEADER_KEYS) for s in first), r


def test_replay_keeps_error_slow_and_forced_traces_whole(fixture: Fixture) -> None:
    """Scenario: the recording replayed through `Engine(Config.default())` (the seed's policies).
    Guarantees: every error, slow and forced trace is kept with all its spans."""
    kept = fixture.replay()
    missing: dict[str, list[str]] = {}
    for tid, kind in sorted(checks.must_keep(fixture.truth).items()):
        if kept.get(tid, 0) != len(fixture.by_trace[tid]):
            missing.setdefault(kind, []).append(tid)
    counts = {k: f"{len(v)} not kept whole" for k, v in missing.items()}
    assert not missing, f"{fixture.name}: {counts}; e.g. {json.dumps(missing)[:300]}"


def test_replay_keeps_the_rest_at_one_percent() -> None:
    """Guarantees: over every fixture together, the ok traces kept are a plausible Binomial(n, 1 %) draw."""
    kept_n = total = 0
    for side in SIDECARS:
        f = _cache.get(side) or Fixture(side)
        kept = f.replay()
        ok = checks.rest(f.truth)
        kept_n += sum(1 for t in ok if t in kept)
        total += len(ok)
    assert checks.within_binomial_bounds(kept_n, total) is None, (kept_n, total)


def test_offline_gap_audit_names_the_broken_pair(fixture: Fixture) -> None:
    """Scenario: the recording audited offline (`tailsample gaps FILE`'s code).
    Guarantees: cart → payments named with a gap on every call, frontend → cart not flagged, every CLIENT span
    counted as a call."""
    report, _ = audit_payloads(fixture.payloads)
    problems = checks.gap_problems(report, len(fixture.truth_doc["requests"]), checks.client_spans(fixture.by_trace),
                                   checks.service_names(fixture.by_trace, "payments"))
    assert not problems, f"{fixture.name}: " + "; ".join(problems)


def test_the_instrumentation_doc_matches_the_fixtures() -> None:
    """Guarantees: docs/real-instrumentation.md is what tests/realworld/emitted.py makes of the committed
    fixtures (regenerate it with `python tests/realworld/emitted.py`)."""
    assert emitted.DOC.read_text() == emitted.render()
