"""Shadow policies (`tailsample.shadow.policies`): judged beside the live set, never changing what is kept; their
metrics, `explain`, `/debug/shadow` and `tailsample diff --url`."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import service_config, serving, sink, wait_for
from tailsample import Config, Engine
from tailsample.errors import ConfigError
from tailsample.traffic.synth import TrafficGenerator

SEED = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "data" / "seed-config.yaml"
TOKEN = "shadow-token"


def seed_policies() -> list[dict[str, Any]]:
    policies: list[dict[str, Any]] = yaml.safe_load(SEED.read_text())["processors"]["tail_sampling"]["policies"]
    return policies


def block(policies: list[dict[str, Any]], shadow: list[dict[str, Any]] | None = None,
          **options: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"decision_wait": "10s", "num_traces": 200_000, "policies": policies}
    if shadow is not None:
        b["tailsample"] = {"shadow": {"policies": shadow, **options}}
    return b


def run(engine: Engine, seconds: float = 20, seed: int = 5) -> tuple[set[bytes], set[bytes]]:
    """Synthetic shop traffic (5 % errors) through `engine` on the generator's clock: (kept trace IDs, all)."""
    from tailsample.collector.compare import kept_facts

    gen = TrafficGenerator(seed=seed, spans_per_second=3000, error_share=0.05, slow_share=0.02, forced_share=0.01)
    kept: dict[bytes, Any] = {}
    for batch in gen.batches(seconds):
        engine.ingest(batch.payload, now=batch.t)
        kept_facts(engine.poll(now=batch.t), kept)
    kept_facts(engine.flush(now=gen.generated_until + 60), kept)
    return set(kept), set(gen.truth)


def test_shadow_verdicts_match_a_separate_run_trace_for_trace() -> None:
    """Scenario: live = the seed policies, shadow = the seed without its error policy; a separate engine runs the
    shadow set as its live set, a third the seed alone. Guarantees: the shadow verdict `explain` gives for every
    trace is the separate run's; what is kept is the seed's alone; the report's counts and the error traces the
    shadow would lose agree with the two runs."""
    without_errors = [p for p in seed_policies() if p["name"] != "errors-policy"]
    with_shadow = Engine(Config.from_dict(block(seed_policies(), without_errors)))
    kept_live, traces = run(with_shadow)
    kept_alone, _ = run(Engine(Config.from_dict(block(seed_policies()))))
    kept_shadow, _ = run(Engine(Config.from_dict(block(without_errors))))
    assert kept_live == kept_alone
    assert kept_shadow < kept_live

    by_explain = set()
    for tid in traces:
        answer = with_shadow.explain(tid)
        assert answer["state"] == "decided"
        if answer["shadow"]["outcome"] == "sampled":
            by_explain.add(tid)
            assert answer["shadow"]["decided_by"] in {p["name"] for p in without_errors}
    assert by_explain == kept_shadow

    r = with_shadow.shadow_report()
    assert r is not None
    assert r["traces_judged"] == len(traces)
    assert r["live_only"]["traces"] == len(kept_live - kept_shadow) > 0
    assert r["shadow_only"]["traces"] == 0
    assert r["both"]["traces"] == len(kept_shadow)
    assert r["errors_lost_by_shadow"] == len(kept_live - kept_shadow)  # each one lost is an error trace
    assert {bytes.fromhex(d["trace_id"]) for d in r["disagreements"]} == kept_live - kept_shadow
    assert all(d["live_policy"] == "errors-policy" and d["shadow"] == "not_sampled" for d in r["disagreements"])
    assert r["policies"]["latency-policy"]["sampled"] > 0


def test_kept_spans_carry_the_shadow_verdict_with_attribute_on() -> None:
    """Scenario: `attribute: true`. Guarantees: every kept span says what the shadow set would have done."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    e = Engine(Config.from_dict(block(seed_policies(), [{"name": "none", "type": "probabilistic",
                                                          "probabilistic": {"sampling_percentage": 0}}],
                                      attribute=True)))
    gen = TrafficGenerator(seed=2, spans_per_second=2000, error_share=0.05)
    out: list[bytes] = []
    for batch in gen.batches(5):
        e.ingest(batch.payload, now=batch.t)
    out += e.flush(now=gen.generated_until + 60)
    spans = 0
    for payload in out:
        req = ExportTraceServiceRequest.FromString(payload)
        for s in (s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans):
            attrs = {a.key: a.value.string_value for a in s.attributes}
            assert attrs["tailsampling.shadow.decision"] == "not_sampled"
            spans += 1
    assert spans > 0


@pytest.mark.parametrize(("shadow", "message"), [
    ({"policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["EROR"]}}]},
     "tailsample.shadow.policies[0].status_code"),
    ({}, "tailsample.shadow.policies: is required"),
    ({"policies": [{"name": "a", "type": "always_sample"}], "max_disagreements": -1},
     "tailsample.shadow.max_disagreements"),
])
def test_a_bad_shadow_block_is_refused_with_its_path(shadow: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"policies": [{"name": "a", "type": "always_sample"}], "tailsample": {"shadow": shadow}})
    assert message in str(e.value)


def test_the_normalized_shadow_block_loads_back_as_itself() -> None:
    c = Config.from_dict(block([{"name": "a", "type": "always_sample"}], seed_policies(), slow_threshold="2500ms",
                               max_disagreements=7, attribute=True))
    shadow = c.normalized()["tailsample"]["shadow"]
    assert shadow["slow_threshold"] == "2500ms" and shadow["max_disagreements"] == 7 and shadow["attribute"] is True
    assert [p["name"] for p in shadow["policies"]] == [p["name"] for p in seed_policies()]
    assert Config.from_dict(c.normalized()).normalized()["tailsample"]["shadow"] == shadow


def test_diff_against_a_running_service(capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: `tailsample serve` with live = errors, shadow = nothing kept; error and ok traces sent.
    Guarantees: per-shadow-policy metrics; `/debug/shadow` behind the token; `tailsample diff --url` prints the
    error traces as lost by the shadow with their IDs; `explain` prints the shadow verdict."""
    from tailsample.cli import main

    rng = random.Random(22)
    shadow = {"shadow": {"policies": [{"name": "ok-only", "type": "status_code",
                                       "status_code": {"status_codes": ["OK"]}}]}}
    with sink() as backend, serving(service_config(
            exporters={"otlphttp": {"endpoint": backend.http_endpoint}}, tail_sampling={"tailsample": shadow},
            extensions={"bearertokenauth": {"token": TOKEN}}, service_extensions=["bearertokenauth"],
            debug={"auth": {"authenticator": "bearertokenauth"}})) as s:
        errors = []
        for i in range(6):
            tid = trace_id(rng)
            status = STATUS_ERROR if i % 2 else 0
            if status:
                errors.append(tid.hex())
            payload = make_request(service("cart"), [make_span(tid, span_id(rng), name="GET /cart", status=status)])
            urllib.request.urlopen(urllib.request.Request(s.url(), data=payload, headers={
                "Content-Type": "application/x-protobuf"}), timeout=5).close()
        wait_for(lambda: s.metric('tailsample_shadow_traces_judged_total{processor="tail_sampling"}') >= 6,
                 timeout=20, what="six traces judged by both sets")
        proc = 'processor="tail_sampling"'
        assert s.metric(f'tailsample_shadow_must_keep_lost_traces_total{{{proc},class="errors",lost_by="shadow"}}') == 3
        assert s.metric(f'tailsample_shadow_policy_traces_total{{{proc},policy="ok-only",decision="not_sampled"}}') == 6
        base = f"http://{s.address('metrics')}"
        assert main(["diff", "--url", base]) == 1
        assert "bearer token" in capsys.readouterr().err
        assert main(["diff", "--url", base, "--token", TOKEN, "--examples", "10"]) == 0
        text = capsys.readouterr().out
        assert "kept by live only" in text and "MUST-KEEP LOST: errors lost by shadow: 3 traces" in text
        assert all(tid in text for tid in errors)
        assert main(["explain", errors[0], "--url", base, "--token", TOKEN]) == 0
        assert "shadow policies: NOT KEPT" in capsys.readouterr().out


def test_diff_says_when_no_pipeline_has_shadow_policies(capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: a service without `tailsample.shadow`. Guarantees: `/debug/shadow` answers null for the pipeline;
    `diff` exits 1 naming the key that turns shadow policies on; no traceback."""
    from tailsample.cli import main

    with sink() as backend, serving(service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                                                   debug={})) as s:
        base = f"http://{s.address('metrics')}"
        with urllib.request.urlopen(base + "/debug/shadow", timeout=5) as r:
            assert json.loads(r.read()) == {"pipelines": {"traces": None}}
        assert main(["diff", "--url", base]) == 1
        err = capsys.readouterr().err
        assert "tailsample.shadow.policies" in err and "Traceback" not in err
