"""The reference material from one source (issue 20): `tailsample.collector.reference` against the generated docs and
against the code it describes.

Contract: `scripts/gen_reference.py --check` passes (the README's configuration and limits tables and
docs/reference.md are what the generator writes); every key the configuration loader accepts is in the source
and every key in the source is accepted; every engine stat and every family a running `tailsample serve`
exposes on /metrics is in the source, with its type, labels and help, and every family in the source renders
(or says what it needs to render).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tailsample import Engine
from tailsample.collector.reference import CONFIG_KEYS, ENGINE_STATS, LIMITS, SERVICE_METRICS
from tailsample.config import Config
from tailsample.errors import ConfigError
from tailsample.service.pipeline import engine_metric_name
from test_metric_names import scrape_full_service

REPO = Path(__file__).resolve().parent.parent
POLICIES = [{"name": "a", "type": "always_sample"}]


def engine_family(key: str, kind: str) -> str:
    name, _ = engine_metric_name(key, kind)
    return f"{name}_total" if kind == "counter" else name


def test_the_docs_are_what_the_generator_writes() -> None:
    """Scenario: `scripts/gen_reference.py --check` in the repository. Guarantees: exit 0, i.e. README.md's
    generated blocks and docs/reference.md are current."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_check_names_a_drifted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario: a README whose limits table was edited by hand. Guarantees: --check exits 1 naming README.md."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(REPO / "scripts"))
    readme = tmp_path / "README.md"
    (tmp_path / "docs").mkdir()
    readme.write_text(gen_reference.README.read_text(encoding="utf-8").replace(
        "evict the oldest first-seen trace", "evict a trace"), encoding="utf-8")
    (tmp_path / "docs" / "reference.md").write_text(gen_reference.document(), encoding="utf-8")
    monkeypatch.setattr(gen_reference, "README", readme)
    monkeypatch.setattr(gen_reference, "DOC", tmp_path / "docs" / "reference.md")
    monkeypatch.setattr(gen_reference, "REPO", tmp_path)
    assert gen_reference.main(["--check"]) == 1
    assert gen_reference.main([]) == 0
    assert "evict the oldest first-seen trace" in readme.read_text(encoding="utf-8")
    assert gen_reference.main(["--check"]) == 0


def known_keys(*path: str) -> set[str]:
    """The keys the loader accepts at `path` below the tail_sampling block, as its unknown-key error lists them."""
    block: dict[str, Any] = {"policies": POLICIES}
    cur = block
    for p in path:
        cur[p] = {}
        cur = cur[p]
    cur["no_such_key"] = 1
    with pytest.raises(ConfigError) as e:
        Config.from_dict(block)
    m = re.search(r"known keys here: (.*)$", str(e.value))
    assert m, str(e.value)
    return set(m[1].split(", "))


def test_every_key_the_loader_accepts_is_documented() -> None:
    """Scenario: the loader's own list of keys at each level of the block. Guarantees: the source lists each
    key of the top level, `decision_cache` and `tailsample` as a row (and no other), and names each key of the
    nested tailsample blocks in its row."""
    documented = {k.key for k in CONFIG_KEYS}
    accepted = known_keys() - {"decision_cache", "tailsample"}
    accepted |= {f"decision_cache.{k}" for k in known_keys("decision_cache")}
    accepted |= {f"tailsample.{k}" for k in known_keys("tailsample")}
    assert documented == accepted
    assert {k.key for k in CONFIG_KEYS if not k.reference} == {k for k in accepted if k.startswith("tailsample.")}
    for nested in ("adjusted_counts", "propagation_audit", "red_metrics", "shadow"):
        row = next(k for k in CONFIG_KEYS if k.key == f"tailsample.{nested}")
        for key in known_keys("tailsample", nested):
            assert f"{key}:" in row.meaning, f"tailsample.{nested}.{key} is not in its row"


def test_every_engine_stat_is_in_the_source() -> None:
    """Scenario: the stats of an engine with every optional part on. Guarantees: each key (the per-reason
    spans_rejected_* aside, rendered as one labelled family) is in the source; the source has no key twice."""
    cfg = Config.from_dict({"decision_wait": "1s", "num_traces": 10, "policies": POLICIES,
                            "tailsample": {"red_metrics": {}, "record_policy": True}})
    keys = {k for k in Engine(cfg).stats() if not k.startswith("spans_rejected")}
    source = [s.key for s in ENGINE_STATS]
    assert len(source) == len(set(source))
    assert keys - set(source) == set()


def test_the_limits_name_only_metrics_that_exist() -> None:
    """Scenario: every metric or stat the limits table names in backticks. Guarantees: each is an engine stat,
    a service family (with or without `_total`), or a pattern with `*` matching one."""
    stats = {s.key for s in ENGINE_STATS} | {"spans_rejected"}
    families = {m.name for m in SERVICE_METRICS} | {engine_family(s.key, s.kind) for s in ENGINE_STATS}
    for limit in LIMITS:
        for name in re.findall(r"`([a-z_*]+)(?:\{[^`]*\})?`", limit.metrics):
            if "*" in name:
                assert fnmatch.filter(families | stats, name), (limit.limit, name)
            else:
                assert name in stats or name in families or f"{name}_total" in families, (limit.limit, name)


def test_every_metric_name_in_the_package_is_in_the_source() -> None:
    """Scenario: the metric names written in the package's source (string literals). Guarantees: each is in
    the source, so families that render only with a broker or on rare traffic are listed too."""
    families = {m.name for m in SERVICE_METRICS}
    pkg = REPO / "python" / "tailsample"
    for path in pkg.rglob("*.py"):
        if path.name == "reference.py":
            continue
        for name in re.findall(r'"((?:otelcol|tailsample|traces_span_metrics)_[a-z_]+[a-z])"', path.read_text()):
            if name.startswith(("otelcol_processor_tail_sampling_", "tailsample_engine_")) or name in (
                    "tailsample_debug",):
                continue  # prefixes, completed in code
            assert name in families or f"{name}_total" in families, f"{path.name}: {name}"


def parse_families(text: str) -> dict[str, tuple[str, str, set[str], bool]]:
    """name -> (type, help, label names seen, whether any sample rendered)."""
    out: dict[str, tuple[str, str, set[str], bool]] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, help_text = line.split(" ", 3)
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = (kind, helps.get(name, ""), set(), False)
        elif line and not line.startswith("#"):
            sample = re.split(r"[{ ]", line, maxsplit=1)[0]
            family = sample if sample in out else re.sub(r"_(bucket|sum|count)$", "", sample)
            kind, help_text, labels, _ = out[family]
            out[family] = (kind, help_text, labels | set(re.findall(r'(\w+)="', line)) - {"le"}, True)
    return out


def test_a_running_service_exposes_exactly_the_source(tmp_path: Path) -> None:
    """Scenario: /metrics of `tailsample serve` with every component configured and traffic through it (the
    service of test_metric_names). Guarantees: each family is in the source with its type, help and labels (the
    labels compared where samples rendered); each family of the source renders, unless it says what it needs."""
    scraped = parse_families(scrape_full_service(tmp_path))
    expected: dict[str, tuple[str, str, tuple[str, ...], str]] = {
        m.name: (m.kind, m.help, m.labels, m.only_with) for m in SERVICE_METRICS}
    for s in ENGINE_STATS:
        expected[engine_family(s.key, s.kind)] = (s.kind, s.meaning, ("processor",), "")
    assert set(scraped) - set(expected) == set(), "on /metrics, not in tailsample/collector/reference.py"
    missing = {n for n, (_, _, _, only_with) in expected.items() if not only_with} - set(scraped)
    assert missing == set(), "in tailsample/collector/reference.py, not on /metrics"
    for name, (kind, help_text, labels, rendered) in scraped.items():
        want_kind, want_help, want_labels, _ = expected[name]
        assert (kind, help_text) == (want_kind, want_help), name
        if rendered:
            assert labels == set(want_labels), name
