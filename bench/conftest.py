"""Setup of the benchmark suites (`pytest bench --benchmark-only`; not collected by `pytest`, testpaths = tests).

- `bench/` goes on the path, so the suites `import workloads`.
- Without pytest-benchmark (not installed, or `-p no:benchmark`) the benchmarks are skipped, not failed, and
  the options the Makefile and README pass (`--benchmark-only`, `--benchmark-json`, ...) are accepted and
  ignored.
- Throughput: each benchmark records its spans per round through the `throughput` fixture, which sets
  `extra_info["spans"]` and `extra_info["spans_per_s"]` (spans / median round time). The JSON written by
  `--benchmark-json` gets the same numbers recomputed from its final stats, and the terminal ends with a
  spans/s table (pytest-benchmark's own table shows times only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# Accepted as no-ops when pytest-benchmark is missing, so `make bench` reports skips instead of a usage error.
_SHIM_FLAGS = ("--benchmark-only", "--benchmark-skip", "--benchmark-disable", "--benchmark-autosave")
_SHIM_VALUES = ("--benchmark-json", "--benchmark-min-rounds", "--benchmark-max-time", "--benchmark-min-time",
                "--benchmark-warmup", "--benchmark-columns", "--benchmark-sort", "--benchmark-group-by",
                "--benchmark-save", "--benchmark-compare", "--benchmark-name")

_RESULTS = pytest.StashKey[list[dict[str, Any]]]()


def _have_benchmark(pluginmanager: pytest.PytestPluginManager) -> bool:
    return pluginmanager.hasplugin("benchmark")  # pytest-benchmark's entry point (absent, or -p no:benchmark)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if _have_benchmark(pluginmanager):
        return
    group = parser.getgroup("benchmark (pytest-benchmark not installed: ignored)")
    for flag in _SHIM_FLAGS:
        group.addoption(flag, action="store_true", default=False, help="ignored")
    for opt in _SHIM_VALUES:
        group.addoption(opt, action="store", default=None, help="ignored")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_benchmark(config.pluginmanager):
        return
    skip = pytest.mark.skip(reason="pytest-benchmark is not installed or not enabled (pip install -e '.[bench]')")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def _spans_per_s(spans: int, stats: Any) -> float | None:
    median = getattr(stats, "median", None) if stats is not None else None
    if median is None and isinstance(stats, dict):
        median = stats.get("median")
    return spans / median if median else None


@pytest.fixture
def throughput(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`throughput(benchmark, spans, **info)`, called after the benchmark ran: spans/s into extra_info."""

    def record(benchmark: Any, spans: int, **info: Any) -> None:
        benchmark.extra_info["spans"] = spans
        benchmark.extra_info.update(info)
        stats = getattr(benchmark.stats, "stats", None) if benchmark.stats is not None else None
        rate = _spans_per_s(spans, stats)
        if rate is None:  # --benchmark-disable: ran once, not timed
            return
        benchmark.extra_info["spans_per_s"] = rate
        request.config.stash[_RESULTS].append({
            **benchmark.extra_info, "name": request.node.name, "median": stats.median, "rounds": stats.rounds})

    return record


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]) -> None:
    """The JSON's spans/s, from the same stats the JSON holds (median)."""
    for bench in output_json.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "spans" in info:
            rate = _spans_per_s(info["spans"], bench.get("stats"))
            if rate is not None:
                info["spans_per_s"] = rate


_STAGES = ("decode", "ingest", "decide", "end_to_end")
_POLICIES = (None, "seed", "heavy", "extended")


def _order(r: dict[str, Any]) -> tuple[Any, ...]:
    stage = r.get("stage")
    policies = r.get("policies")
    return (_STAGES.index(stage) if stage in _STAGES else len(_STAGES),
            _POLICIES.index(policies) if policies in _POLICIES else len(_POLICIES), policies or "",
            r.get("spans_per_trace", 0), r.get("spans_per_payload", 0), r["name"])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("throughput: spans per round / median round time")
    width = max(len(r["name"]) for r in results)
    tr.write_line(f"{'benchmark':<{width}}  {'spans/round':>11}  {'rounds':>6}  {'median ms':>10}  {'spans/s':>13}")
    for r in sorted(results, key=_order):
        tr.write_line(f"{r['name']:<{width}}  {r['spans']:>11,}  {r['rounds']:>6}  {r['median'] * 1e3:>10.2f}  "
                      f"{r['spans_per_s']:>13,.0f}")
