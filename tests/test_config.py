"""Loading `tail_sampling` configurations: the bundled seed, where the block sits, and errors that say where.

Contract: `Config.from_file(path)`, `Config.from_yaml(text)` and `Config.from_dict(mapping)` take a whole
collector YAML (the block under `processors:` named `tail_sampling` or `tail_sampling/<name>`, `name=` picking
one) or a bare `tail_sampling` block. Every error is a `tailsample.ConfigError` (also a `ValueError`) whose
message names the YAML path of the offending value.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import tailsample
from tailsample import Config, ConfigError, TailsampleError

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "python" / "tailsample" / "data" / "seed-config.yaml"
# The seed block as the deep-dive document prints it, kept in the repository so the pin always runs.
DEEP_DIVE = REPO / "tests" / "data" / "tracing-deep-dive-seed.txt"

SEED_POLICIES = ["errors-policy", "latency-policy", "forced-sampling-policy", "probabilistic-policy"]
SUPPORTED = [
    "always_sample", "status_code", "latency", "probabilistic", "string_attribute", "numeric_attribute",
    "boolean_attribute", "span_count", "trace_state", "trace_flags", "rate_limiting", "bytes_limiting", "and",
    "not", "drop", "composite", "ottl_condition",
]

ALWAYS_BLOCK = "policies:\n  - {name: keep-all, type: always_sample}\n"


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def load_error(source: str | dict[str, Any], **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        if isinstance(source, str):
            Config.from_yaml(source, **kwargs)
        else:
            Config.from_dict(source, **kwargs)
    return info.value


# ---- the bundled seed configuration ------------------------------------------------------------------------

def test_seed_config_loads_as_is():
    """Scenario: the bundled seed-config.yaml, a whole collector config, loaded from its file unchanged.
    Guarantees: its four policies in order, decision_wait 10 s, num_traces 100000, the sizing hint kept."""
    cfg = Config.from_file(SEED)
    assert cfg.policy_names == SEED_POLICIES
    assert cfg.decision_wait == 10.0
    n = cfg.normalized()
    assert n["num_traces"] == 100_000
    assert n["expected_new_traces_per_sec"] == 10_000
    types = [p["type"] for p in n["policies"]]
    assert types == ["status_code", "latency", "string_attribute", "probabilistic"]
    assert n["policies"][1]["latency"] == {"threshold_ms": 1000}
    assert n["policies"][2]["string_attribute"]["key"] == "http.request.header.x-force-trace"
    assert n["policies"][3]["probabilistic"] == {"sampling_percentage": 1}
    # and the engine runs it
    eng = tailsample.Engine(cfg)
    assert eng.poll(now=0.0) == []


def test_seed_config_is_the_default():
    """Scenario: Config.default(). Guarantees: the same configuration as the bundled file."""
    assert Config.default().normalized() == Config.from_file(SEED).normalized()


def test_seed_config_is_the_documented_block():
    """Scenario: the tracing deep-dive document prints the seed configuration after a line "yaml".
    Guarantees: the bundled file is exactly that block (up to the line starting "This configuration")."""
    lines = DEEP_DIVE.read_text(encoding="utf-8").splitlines()
    start = lines.index("yaml") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("This configuration"))
    documented = "\n".join(lines[start:end]).rstrip("\n") + "\n"
    bundled = SEED.read_text(encoding="utf-8")
    assert bundled == documented
    assert Config.from_yaml(documented).normalized() == Config.from_file(SEED).normalized()


# ---- where the block sits ----------------------------------------------------------------------------------

BLOCK = {"decision_wait": "5s", "num_traces": 10, "policies": [{"name": "keep-all", "type": "always_sample"}]}
OTHER = {"policies": [{"name": "x", "type": "always_sample"}]}


@pytest.mark.parametrize(
    ("source", "name"),
    [
        pytest.param(BLOCK, None, id="bare-block"),
        pytest.param({"tail_sampling": BLOCK}, None, id="tail_sampling-key-alone"),
        pytest.param({"processors": {"tail_sampling": BLOCK}}, None, id="collector-tail_sampling"),
        pytest.param({"processors": {"tail_sampling/prod": BLOCK}}, None, id="collector-named-alone"),
        pytest.param({"receivers": {"otlp": {"protocols": {"grpc": None}}},
                      "processors": {"batch": {}, "tail_sampling/prod": BLOCK, "memory_limiter": {}},
                      "exporters": {"debug": {}},
                      "service": {"pipelines": {"traces": {"processors": ["tail_sampling/prod"]}}}},
                     None, id="full-collector-config"),
        pytest.param({"processors": {"tail_sampling/dev": OTHER,
                                     "tail_sampling/prod": BLOCK}}, "prod", id="name-picks"),
        pytest.param({"processors": {"tail_sampling/dev": OTHER, "tail_sampling/prod": BLOCK}},
                     "tail_sampling/prod", id="full-name-picks"),
        pytest.param({"processors": {"tail_sampling": BLOCK,
                                     "tail_sampling/dev": OTHER}},
                     "tail_sampling", id="name-picks-unnamed"),
    ],
)
def test_block_is_found_wherever_it_sits(source, name, tmp_path):
    """Scenario: the same block as a bare block, under `tail_sampling`, or inside a collector config, given
    as a dict, as YAML text and as a file. Guarantees: the same configuration each time."""
    want = Config.from_dict(BLOCK).normalized()
    assert want["decision_wait"] == "5s" and want["num_traces"] == 10
    text = yaml.safe_dump(source)
    path = tmp_path / "collector.yaml"
    path.write_text(text, encoding="utf-8")
    for cfg in (Config.from_dict(source, name=name), Config.from_yaml(text, name=name),
                Config.from_file(path, name=name)):
        assert cfg.normalized() == want
        assert cfg.policy_names == ["keep-all"]
        assert cfg.decision_wait == 5.0


def test_several_blocks_without_a_name_is_an_error():
    """Scenario: two tail_sampling processors and no name=. Guarantees: ConfigError naming both and name=."""
    text = y("""
        processors:
          tail_sampling/a: {policies: [{name: a, type: always_sample}]}
          tail_sampling/b: {policies: [{name: b, type: always_sample}]}
        """)
    e = load_error(text)
    assert "processors" in str(e)
    assert "tail_sampling/a" in str(e) and "tail_sampling/b" in str(e)
    assert "name=" in str(e)
    assert Config.from_yaml(text, name="a").policy_names == ["a"]
    assert Config.from_yaml(text, name="b").policy_names == ["b"]


def test_a_name_that_is_not_there_lists_those_that_are():
    """Scenario: name= names a processor the file does not have.
    Guarantees: ConfigError listing those it has."""
    text = y("""
        processors:
          tail_sampling/a: {policies: [{name: a, type: always_sample}]}
        """)
    e = load_error(text, name="c")
    assert "tail_sampling/c" in str(e) and "tail_sampling/a" in str(e)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param({"processors": {"batch": {}}}, id="no-tail_sampling"),
        pytest.param({"processors": None}, id="empty-processors"),
    ],
)
def test_collector_config_without_the_processor(source):
    """Scenario: a collector config with no tail_sampling processor.
    Guarantees: ConfigError at `processors`."""
    e = load_error(source)
    assert str(e).startswith("<dict>: processors")
    assert "tail_sampling" in str(e)


def test_errors_inside_a_named_block_carry_its_prefix():
    """Scenario: a bad value inside `tail_sampling/prod`. Guarantees: the path starts at `processors.`."""
    text = y("""
        processors:
          tail_sampling/dev:
            policies: [{name: a, type: always_sample}]
          tail_sampling/prod:
            policies:
              - {name: a, type: latency, latency: {threshold_ms: soon}}
        """)
    e = load_error(text, name="prod")
    assert "processors.tail_sampling/prod.policies[0].latency.threshold_ms: expected an integer" in str(e)
    assert e.path == "processors.tail_sampling/prod.policies[0].latency.threshold_ms"
    assert "(line 6)" in str(e)


def test_file_errors_name_the_file(tmp_path):
    """Scenario: a bad file, and a missing one. Guarantees: the message starts with the file's path."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(y("""
        tail_sampling:
          decision_wait: 10
          policies: [{name: a, type: always_sample}]
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Config.from_file(bad)
    assert str(info.value).startswith(f"{bad}: tail_sampling.decision_wait: ")
    assert "(line 2)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Config.from_file(tmp_path / "missing.yaml")
    assert str(tmp_path / "missing.yaml") in str(info.value)


# ---- errors say where --------------------------------------------------------------------------------------

ERROR_CASES = [
    # (id, YAML text, expected path, fragments of the message, expected line or None)
    ("non-integer-threshold", """
        processors:
          tail_sampling:
            policies:
              - name: a
                type: always_sample
              - name: b
                type: latency
                latency: {threshold_ms: fast}
        """, "processors.tail_sampling.policies[1].latency.threshold_ms",
     ["expected an integer", '"fast"'], 8),
    ("fractional-threshold", """
        policies:
          - {name: a, type: always_sample}
          - {name: b, type: latency, latency: {threshold_ms: 1.5}}
        """, "policies[1].latency.threshold_ms", ["expected an integer", "1.5"], 3),
    ("unknown-policy-type", """
        policies:
          - {name: a, type: sometimes}
        """, "policies[0].type",
     ['unknown policy type "sometimes"', "supported: " + ", ".join(SUPPORTED)], 2),
    ("duplicate-names", """
        policies:
          - {name: a, type: always_sample}
          - {name: a, type: always_sample}
        """, "policies[1].name", ['duplicate policy name "a"', "policies[0]"], 3),
    ("missing-policies", """
        decision_wait: 10s
        """, "policies", ["is required"], None),
    ("empty-policies", """
        policies: []
        """, "policies", ["at least one policy"], 1),
    ("policies-not-a-list", """
        policies: always_sample
        """, "policies", ["expected a list"], 1),
    ("policy-without-type", """
        policies:
          - {name: a}
        """, "policies[0].type", ["is required"], None),
    ("policy-without-name", """
        policies:
          - {type: always_sample}
        """, "policies[0].name", ["is required"], None),
    ("bad-duration-no-unit", """
        decision_wait: "10"
        policies: [{name: a, type: always_sample}]
        """, "decision_wait", ['invalid duration "10"', "missing unit"], 1),
    ("bad-duration-unknown-unit", """
        decision_wait: 10 seconds
        policies: [{name: a, type: always_sample}]
        """, "decision_wait", ["invalid duration", "unknown unit"], 1),
    ("bad-duration-number", """
        decision_wait: 10
        policies: [{name: a, type: always_sample}]
        """, "decision_wait", ["expected a duration", "the number 10"], 1),
    ("bad-duration-negative", """
        decision_wait: -5s
        policies: [{name: a, type: always_sample}]
        """, "decision_wait", ["positive"], 1),
    ("bad-root-wait", """
        decision_wait_after_root_received: soon
        policies: [{name: a, type: always_sample}]
        """, "decision_wait_after_root_received", ["invalid duration"], 1),
    ("unknown-top-level-key", """
        decision_wiat: 10s
        policies: [{name: a, type: always_sample}]
        """, "decision_wiat", ["unknown key", "known keys here:", "decision_wait", "policies"], 1),
    ("unknown-key-in-policy-block", """
        policies:
          - name: a
            type: latency
            latency: {threshold: 5}
        """, "policies[0].latency.threshold", ["unknown key", "threshold_ms", "upper_threshold_ms"], 4),
    ("unknown-key-in-policy-entry", """
        policies:
          - {name: a, type: always_sample, priority: 1}
        """, "policies[0].priority", ["unknown key"], 2),
    ("unknown-key-in-decision-cache", """
        decision_cache: {sampled_size: 10}
        policies: [{name: a, type: always_sample}]
        """, "decision_cache.sampled_size",
     ["unknown key", "sampled_cache_size", "non_sampled_cache_size"], 1),
    ("invalid-regex", """
        policies:
          - name: a
            type: string_attribute
            string_attribute:
              key: http.route
              values: ["/ok", "(unclosed"]
              enabled_regex_matching: true
        """, "policies[0].string_attribute.values[1]", ['invalid regular expression "(unclosed"'], None),
    ("unknown-status-code", """
        policies:
          - {name: a, type: status_code, status_code: {status_codes: [ERROR, FATAL]}}
        """, "policies[0].status_code.status_codes[1]",
     ['unknown status code "FATAL"', "OK, ERROR, UNSET"], None),
    ("empty-status-codes", """
        policies:
          - {name: a, type: status_code, status_code: {status_codes: []}}
        """, "policies[0].status_code.status_codes", ["at least one status code"], 2),
    ("string-attribute-without-key", """
        policies:
          - {name: a, type: string_attribute, string_attribute: {values: [x]}}
        """, "policies[0].string_attribute.key", ["is required"], None),
    ("negative-percentage", """
        policies:
          - {name: a, type: probabilistic, probabilistic: {sampling_percentage: -1}}
        """, "policies[0].probabilistic.sampling_percentage", ["at least 0"], 2),
    ("upper-below-lower", """
        policies:
          - {name: a, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}
        """, "policies[0].latency.upper_threshold_ms", ["greater than threshold_ms (500)"], 2),
    ("zero-num-traces", """
        num_traces: 0
        policies: [{name: a, type: always_sample}]
        """, "num_traces", ["at least 1"], 1),
    ("boolean-not-a-boolean", """
        block_on_overflow: sometimes
        policies: [{name: a, type: always_sample}]
        """, "block_on_overflow", ["expected true or false"], 1),
    ("span-ingest-strategy", """
        sampling_strategy: span-ingest
        policies: [{name: a, type: always_sample}]
        """, "sampling_strategy", ["not supported by tailsample yet", "trace-complete"], 1),
]


@pytest.mark.parametrize(("text", "path", "fragments", "line"),
                         [pytest.param(t, p, f, ln, id=i) for i, t, p, f, ln in ERROR_CASES])
def test_errors_name_the_yaml_path(text, path, fragments, line):
    """Scenario: one invalid value per case. Guarantees: ConfigError whose message reads
    `<source>: <path>: ...`, whose `.path` is that path, which says what is wrong and, where the YAML has the
    value, on which line."""
    e = load_error(y(text))
    msg = str(e)
    assert e.path == path
    assert msg.startswith(f"<yaml>: {path}: "), msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    if line is not None:
        assert f"(line {line})" in msg, msg


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("policies:\n  - name: a\n    type: [always_sample\n", 4, id="unclosed-flow-list"),
        pytest.param("policies:\n  - name: a\n   type: always_sample\n", 3, id="bad-indentation"),
        pytest.param("decision_wait: 10s\npolicies: {name: a: b}\n", 2, id="bad-mapping"),
        pytest.param("a: 'unterminated\n", 2, id="unterminated-string"),
    ],
)
def test_invalid_yaml_names_the_line(text, line):
    """Scenario: text that is not YAML.
    Guarantees: ConfigError `invalid YAML` with the line of the problem."""
    e = load_error(text)
    assert "invalid YAML" in str(e)
    assert f"line {line}" in str(e), str(e)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("", id="empty"),
        pytest.param("- a\n- b\n", id="top-level-list"),
        pytest.param("just a string\n", id="top-level-string"),
    ],
)
def test_not_a_configuration(source):
    """Scenario: YAML that is not a mapping at all. Guarantees: ConfigError, not a crash."""
    load_error(source)


def test_config_error_is_a_value_error():
    """Guarantees: ConfigError subclasses both TailsampleError and ValueError, and carries `.path`."""
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, TailsampleError)
    with pytest.raises(ValueError, match=r"policies\[0\]\.latency\.threshold_ms"):
        Config.from_dict({"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": "x"}}]})


# ---- from_dict and what a valid block holds ----------------------------------------------------------------

def test_from_dict_takes_every_option():
    """Scenario: a block using every top-level option and every supported policy type, as a dict.
    Guarantees: accepted; normalized() reports the values given and fills the rest with defaults."""
    block = {
        "decision_wait": "1m30s",
        "num_traces": 1234,
        "expected_new_traces_per_sec": 50,
        "decision_cache": {"sampled_cache_size": 100, "non_sampled_cache_size": 200},
        "sample_on_first_match": True,
        "drop_pending_traces_on_shutdown": True,
        "block_on_overflow": True,
        "decision_wait_after_root_received": "500ms",
        "maximum_trace_size_bytes": 1 << 20,
        "policies": [
            {"name": "all", "type": "always_sample"},
            {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR", "OK", "UNSET"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 900}},
            {"name": "pct", "type": "probabilistic", "probabilistic": {"sampling_percentage": 12.5,
                                                                         "hash_salt": "s"}},
            {"name": "str", "type": "string_attribute",
             "string_attribute": {"key": "k", "values": ["^a", "b$"], "enabled_regex_matching": True,
                                  "cache_max_size": 10, "invert_match": True}},
            {"name": "num", "type": "numeric_attribute",
             "numeric_attribute": {"key": "n", "min_value": 400, "max_value": 599, "invert_match": False}},
            {"name": "bool", "type": "boolean_attribute", "boolean_attribute": {"key": "b", "value": True}},
            {"name": "count", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 20}},
        ],
    }
    cfg = Config.from_dict(block)
    assert cfg.policy_names == ["all", "err", "slow", "pct", "str", "num", "bool", "count"]
    assert cfg.decision_wait == 90.0
    n = cfg.normalized()
    assert n["num_traces"] == 1234
    assert n["decision_cache"] == {"sampled_cache_size": 100, "non_sampled_cache_size": 200}
    assert n["sample_on_first_match"] is True
    assert n["drop_pending_traces_on_shutdown"] is True
    assert n["block_on_overflow"] is True
    assert n["decision_wait_after_root_received"] == "500ms"
    assert n["maximum_trace_size_bytes"] == 1 << 20
    tailsample.Engine(cfg)


def test_defaults_are_the_references():
    """Scenario: a block with only a policy. Guarantees: the reference processor's defaults (30 s, 50000,
    caches off, no root wait, no size limit, evict rather than block)."""
    n = Config.from_yaml(ALWAYS_BLOCK).normalized()
    assert n["decision_wait"] == "30s"
    assert n["num_traces"] == 50_000
    assert n["decision_cache"] == {"sampled_cache_size": 0, "non_sampled_cache_size": 0}
    assert n["sample_on_first_match"] is False
    assert n["drop_pending_traces_on_shutdown"] is False
    assert n["block_on_overflow"] is False
    assert n["decision_wait_after_root_received"] == "0s"
    assert n["maximum_trace_size_bytes"] == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("1m30s", 90.0), ("1.5s", 1.5), ("2h", 7200.0), ("250000us", 0.25)],
)
def test_go_durations(text, seconds):
    """Scenario: decision_wait written as Go durations. Guarantees: read to the nanosecond."""
    cfg = Config.from_dict({"decision_wait": text, "policies": [{"name": "a", "type": "always_sample"}]})
    assert cfg.decision_wait == pytest.approx(seconds)


def test_from_dict_rejects_a_non_mapping():
    """Scenario: from_dict given a list. Guarantees: ConfigError, not TypeError."""
    with pytest.raises(ConfigError):
        Config.from_dict([{"name": "a"}])  # type: ignore[arg-type]
