"""`trace_aggregate` (tailsample only): an aggregate of a numeric span attribute over the whole trace, folded at
ingest across payloads, compared with bounds. The contract's example: keep an AI-agent trace whose summed
`gen_ai.usage.input_tokens` reaches 50,000."""

from __future__ import annotations

import pytest

from otlp_builders import make_request, make_span, service, span_id, spans_out, trace_id
from tailsample import Config, ConfigError, Engine

TOKENS = "gen_ai.usage.input_tokens"


def engine(policy: dict, extra: list[dict] | None = None) -> Engine:
    return Engine(Config.from_dict({"decision_wait": "1s", "policies": [policy, *(extra or [])]}))


def kept_traces(e: Engine) -> set[bytes]:
    return {t for t, _, _ in spans_out(e.flush(now=100.0))}


def agent_trace(rng, tokens: list, *, split: bool = True) -> tuple[bytes, list[bytes]]:
    """A root and one LLM-call span per entry of `tokens`, sent in one payload per span when `split`."""
    tid = trace_id(rng)
    root = span_id(rng)
    spans = [make_span(tid, root, name="invoke_agent")]
    spans += [make_span(tid, span_id(rng), parent=root, name="chat gpt-4o",
                        attributes={} if t is None else {TOKENS: t}) for t in tokens]
    res = service("agent", **{TOKENS: 999_999})  # a resource attribute is not a span's: not counted
    if split:
        return tid, [make_request(res, [s]) for s in spans]
    return tid, [make_request(res, spans)]


def test_summed_tokens_keep_the_trace_across_payloads(rng):
    e = engine({"name": "tokens", "type": "trace_aggregate",
                "trace_aggregate": {"key": TOKENS, "function": "sum", "min_value": 50000}})
    big, big_payloads = agent_trace(rng, [30_000, None, 20_000])
    _, small_payloads = agent_trace(rng, [10_000, 10_000, 29_999])
    _, string_payloads = agent_trace(rng, ["60000"], split=False)
    doubles, double_payloads = agent_trace(rng, [25_000.5, 24_999.5], split=False)
    for p in big_payloads + small_payloads + string_payloads + double_payloads:
        e.ingest(p, now=0.0)
    assert kept_traces(e) == {big, doubles}
    assert e.policy_stats()["tokens"]["sampled"] == 2


@pytest.mark.parametrize(("function", "bounds", "tokens", "kept"), [
    ("max", {"min_value": 8000}, [100, 9000, 50], True),
    ("max", {"min_value": 8000}, [100, 7999], False),
    ("min", {"max_value": 10}, [500, 3], True),
    ("min", {"max_value": 10}, [], False),
    ("count", {"min_value": 3}, [1, 2, None, 3], True),
    ("count", {"min_value": 3}, [1, None, 2], False),
    ("sum", {"min_value": 10, "max_value": 20}, [15, 10], False),
])
def test_functions_and_bounds(rng, function, bounds, tokens, kept):
    e = engine({"name": "agg", "type": "trace_aggregate",
                "trace_aggregate": {"key": TOKENS, "function": function, **bounds}})
    tid, payloads = agent_trace(rng, tokens)
    for p in payloads:
        e.ingest(p, now=0.0)
    assert (kept_traces(e) == {tid}) is kept


def test_inside_and_with_other_policies(rng):
    e = engine({"name": "expensive-agent", "type": "and", "and": {"and_sub_policy": [
        {"name": "agent", "type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["agent"]}},
        {"name": "tokens", "type": "trace_aggregate",
         "trace_aggregate": {"key": TOKENS, "function": "sum", "min_value": 1000}}]}})
    tid, payloads = agent_trace(rng, [600, 600])
    _, other_payloads = agent_trace(rng, [10])
    for p in payloads + other_payloads:
        e.ingest(p, now=0.0)
    assert kept_traces(e) == {tid}


@pytest.mark.parametrize(("block", "fragment"), [
    ({"key": TOKENS, "function": "avg", "min_value": 1}, "policies[0].trace_aggregate.function"),
    ({"key": TOKENS}, "give min_value, max_value or both"),
    ({"function": "sum", "min_value": 1}, "policies[0].trace_aggregate.key"),
    ({"key": TOKENS, "min_value": 9, "max_value": 1}, "policies[0].trace_aggregate.max_value"),
])
def test_config_errors(block, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Config.from_dict({"policies": [{"name": "agg", "type": "trace_aggregate", "trace_aggregate": block}]})


def test_at_most_four_per_processor():
    agg = {"key": TOKENS, "min_value": 1}
    policies = [{"name": f"a{i}", "type": "trace_aggregate", "trace_aggregate": agg} for i in range(5)]
    with pytest.raises(ConfigError, match="at most 4 trace_aggregate"):
        Config.from_dict({"policies": policies})
