"""`tailsample simulate`: configuration A against B over a recording, trace for trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tailsample import Config, Engine
from tailsample.cli import main
from tailsample.collector.compare import kept_facts
from tailsample.collector.fileformat import PayloadWriter, read_payloads
from tailsample.traffic.synth import TraceTruth, TrafficGenerator

SEED = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "data" / "seed-config.yaml"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bytes, TraceTruth]]:
    """20 s of synthetic shop traffic (known truth) written as the file exporter's proto format; 5 % errors."""
    path = tmp_path_factory.mktemp("rec") / "traffic.binpb"
    gen = TrafficGenerator(seed=7, spans_per_second=3000, error_share=0.05, slow_share=0.02, forced_share=0.01)
    writer = PayloadWriter(path, "proto")
    for batch in gen.batches(20):
        writer.write(batch.payload)
    writer.close()
    return path, gen.truth


def _without_errors(tmp: Path) -> Path:
    doc = yaml.safe_load(SEED.read_text())
    policies = doc["processors"]["tail_sampling"]["policies"]
    doc["processors"]["tail_sampling"]["policies"] = [p for p in policies if p["name"] != "errors-policy"]
    out = tmp / "no-errors.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _kept_by_the_random_policy(path: Path) -> set[bytes]:
    doc = yaml.safe_load(SEED.read_text())["processors"]["tail_sampling"]
    doc["policies"] = [p for p in doc["policies"] if p["type"] == "probabilistic"]
    engine = Engine(Config.from_dict(doc))
    for payload in read_payloads(path, "proto"):
        engine.ingest(payload, now=0.0)
    return set(kept_facts(engine.flush(now=0.0)))


def _run(argv: list[str], out: Path) -> dict[str, Any]:
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_a_against_a_reports_no_difference(recording: tuple[Path, dict[bytes, TraceTruth]],
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: the seed configuration against itself. Guarantees: the same traces kept, nothing one-sided."""
    path, truth = recording
    r = _run(["simulate", "--config", str(SEED), "--against", str(SEED), str(path)], tmp_path / "r.json")
    a, b = r["configs"]["A"], r["configs"]["B"]
    assert a["traces_kept"] == b["traces_kept"] > 0
    assert a["spans_kept"] == b["spans_kept"] > 0
    assert a["traces_decided"] == len(truth)
    assert r["only"] == {"A": [], "B": []}
    assert r["differs"] is False
    assert "no difference" in capsys.readouterr().out
    svg = (tmp_path / "r.svg").read_text()
    assert svg.startswith("<svg") and "errors-policy" in svg


def test_seed_against_seed_without_errors_loses_exactly_the_error_traces(
        recording: tuple[Path, dict[bytes, TraceTruth]], tmp_path: Path) -> None:
    """Scenario: B is the seed YAML without its error policy. Guarantees: what only A keeps is exactly the error
    traces no other policy keeps (not slow, not forced, not in B's 1 % random share); B keeps nothing A drops."""
    path, truth = recording
    r = _run(["simulate", "--config", str(SEED), "--against", str(_without_errors(tmp_path)), str(path)],
             tmp_path / "r.json")
    only = r["only"]
    assert only["B"] == []
    lost = {bytes.fromhex(t) for t in only["A"]}
    errors_only = {t for t, x in truth.items() if x.error and not x.slow and not x.forced}
    # Exactly: the error traces that neither the latency nor the forced policy keeps, less those B's random 1 %
    # keeps (that policy alone, run separately over the same recording).
    assert lost == errors_only - _kept_by_the_random_policy(path)
    assert len(errors_only) >= 50 and len(lost) >= 0.9 * len(errors_only)
    lost_report = r["lost"]
    assert lost_report["errors_lost_by_B"]["traces"] == len(lost)
    assert lost_report["slow_lost_by_B"]["traces"] == 0
    assert lost_report["errors_lost_by_A"]["traces"] == 0
    examples = lost_report["errors_lost_by_B"]["examples"]
    assert examples and {bytes.fromhex(t) for t in examples} <= lost
    a, b = r["configs"]["A"], r["configs"]["B"]
    assert a["traces_kept"] - b["traces_kept"] == len(lost)
    assert a["spans_kept"] - b["spans_kept"] == sum(truth[t].spans for t in lost)
    assert r["kept"]["A_only"]["bytes_per_day"] > 0


def test_one_configuration_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: no --against; a missing file; a broken configuration. Guarantees: A's figures; clear errors."""
    example = Path(__file__).resolve().parents[1] / "examples" / "shop.otlp.json"
    r = _run(["simulate", "--config", str(SEED), str(example)], tmp_path / "one.json")
    assert list(r["configs"]) == ["A"] and r["configs"]["A"]["traces_kept"] > 0
    assert "only" not in r
    assert main(["simulate", "--config", str(SEED), str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: [{name: x, type: status_code, status_code: {status_codes: [EROR]}}]\n")
    assert main(["simulate", "--config", str(SEED), "--against", str(bad), str(example)]) == 2
    assert "EROR" in capsys.readouterr().err


def test_on_real_instrumentation_the_forced_header_policy_keeps_the_forced_traces(tmp_path: Path) -> None:
    """Scenario: `examples/shop.otlp.json`, a recording of real OpenTelemetry instrumentation (Flask services, the
    Python SDK's exporter), where the forcing header arrives as the SDK captures it: an array under
    `http.request.header.x_force_trace`, not the seed's `x-force-trace` string. A is the seed YAML unchanged, B the
    same without its forced-sampling policy. Guarantees: what only A keeps is exactly the forced traces that no
    other seed policy keeps (not errors, not slow, not in the 1 % random share), and there are some: the seed's
    policy works on what real SDKs send; B keeps nothing A drops."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    path = Path(__file__).resolve().parents[1] / "examples" / "shop.otlp.json"
    doc = yaml.safe_load(SEED.read_text())
    policies = doc["processors"]["tail_sampling"]["policies"]
    policies[:] = [p for p in policies if p["type"] != "string_attribute"]
    b = tmp_path / "no-forced.yaml"
    b.write_text(yaml.safe_dump(doc))
    r = _run(["simulate", "--config", str(SEED), "--against", str(b), str(path)], tmp_path / "r.json")
    forced, errors = set(), set()
    for p in read_payloads(path):
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    tid = s.trace_id.hex()
                    if s.status.code == 2:
                        errors.add(tid)
                    for a in s.attributes:
                        if a.key == "http.request.header.x_force_trace" and "true" in [
                                v.string_value for v in a.value.array_value.values]:
                            forced.add(tid)
    assert forced, "the recording holds forced traces"
    assert r["only"]["B"] == []
    only_a = set(r["only"]["A"])
    # A forced trace that B keeps anyway is an error (or slow, or in the random share): none of those here is slow.
    assert only_a and only_a <= forced and forced - only_a <= errors | _kept_ids(path, b)


def _kept_ids(path: Path, config: Path) -> set[str]:
    """The trace IDs (hex) a collector YAML's tail_sampling block keeps of a recording, run on its own."""
    engine = Engine(Config.from_dict(yaml.safe_load(config.read_text())["processors"]["tail_sampling"]))
    for payload in read_payloads(path):
        engine.ingest(payload, now=0.0)
    return {t.hex() for t in kept_facts(engine.flush(now=0.0))}
