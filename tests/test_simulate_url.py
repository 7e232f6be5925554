"""`tailsample simulate --url`: what-if over a running service's recent incoming traffic (`GET /debug/traffic`,
the tailsample_debug extension's `recent_traffic_bytes` ring)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from service_harness import service_config, serving, serving_process, wait_for
from tailsample.cli import main
from tailsample.collector.fileformat import PayloadWriter, read_payloads
from tailsample.collector.settings import ServiceConfig
from tailsample.errors import ConfigError
from tailsample.service.debug import TrafficRecording, decode_records, encode_records
from tailsample.traffic.simulate import write_recording
from tailsample.traffic.synth import TrafficGenerator

SEED = Path(__file__).resolve().parents[1] / "python" / "tailsample" / "data" / "seed-config.yaml"
TOKEN = "simurl-token"


def _post(url: str, payload: bytes) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=payload, headers={
        "Content-Type": "application/x-protobuf"}), timeout=10).close()


def _without_errors(tmp: Path) -> Path:
    doc = yaml.safe_load(SEED.read_text())
    policies = doc["processors"]["tail_sampling"]["policies"]
    doc["processors"]["tail_sampling"]["policies"] = [p for p in policies if p["name"] != "errors-policy"]
    out = tmp / "no-errors.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _report(argv: list[str], out: Path) -> dict[str, Any]:
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _authed_config(**debug: Any) -> dict[str, Any]:
    return service_config(exporters={"debug": {}}, extensions={"bearertokenauth": {"token": TOKEN}},
                          service_extensions=["bearertokenauth"],
                          debug={"auth": {"authenticator": "bearertokenauth"}, **debug})


def test_simulate_url_equals_simulate_on_the_same_payloads_in_a_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: a real `tailsample serve` subprocess gets 8 s of synthetic shop traffic (5 % errors) over
    OTLP/HTTP; the same payloads are written to a file. Guarantees: `simulate --url` (seed against seed without
    its error policy) reports exactly what `simulate FILE` reports, with error traces lost; 401 without the token
    (the CLI says a token is needed); `--since 0` is an empty recording, said plainly."""
    gen = TrafficGenerator(seed=11, spans_per_second=1500, error_share=0.05, slow_share=0.02, forced_share=0.01)
    payloads = [b.payload for b in gen.batches(8)]
    recording = tmp_path / "same.binpb"
    with PayloadWriter(recording, "proto") as writer:
        writer.write_all(payloads)
    b = _without_errors(tmp_path)
    with serving_process(_authed_config(), tmp_path) as s:
        for p in payloads:
            _post(s.url(), p)
        base = f"http://{s.address('metrics')}"
        wait_for(lambda: s.metric('tailsample_recent_traffic_payloads{pipeline="traces"}') == len(payloads),
                 what="every request recorded")
        assert s.metric('tailsample_recent_traffic_bytes{pipeline="traces"}') == sum(map(len, payloads))
        assert s.metric('tailsample_recent_traffic_dropped_payloads_total{pipeline="traces"}') == 0

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/debug/traffic", timeout=5)
        assert refused.value.code == 401
        assert main(["simulate", "--url", base, "--config", str(SEED), "--no-progress"]) == 1
        assert "bearer token" in capsys.readouterr().err

        from_url = _report(["simulate", "--url", base, "--token", TOKEN, "--config", str(SEED),
                            "--against", str(b), "--save", str(tmp_path / "saved.binpb")], tmp_path / "url.json")
        assert f"{len(payloads):,} requests" in capsys.readouterr().err

        assert main(["simulate", "--url", base, "--token", TOKEN, "--since", "0", "--config", str(SEED)]) == 1
        assert "recording is empty" in capsys.readouterr().err
    from_file = _report(["simulate", "--config", str(SEED), "--against", str(b), str(recording)],
                        tmp_path / "file.json")
    assert from_url == from_file
    assert from_url["payloads"] == len(payloads) and from_url["rejected_payloads"] == 0
    assert from_url["only"]["A"] and from_url["only"]["B"] == []
    assert from_url["lost"]["errors_lost_by_B"]["traces"] == len(from_url["only"]["A"])
    assert (tmp_path / "saved.binpb").read_bytes() == recording.read_bytes()  # the bytes as sent, in order
    assert (tmp_path / "url.svg").read_text().startswith("<svg")


def test_the_ring_keeps_the_newest_requests_within_its_bytes() -> None:
    """Scenario: a service whose ring holds exactly the newest 3 of 10 requests (its bound: their bytes).
    Guarantees: `/debug/traffic` answers those 3, byte for byte, oldest first; the gauges say 3 requests and their
    bytes; 7 counted dropped."""
    gen = TrafficGenerator(seed=3, spans_per_second=200, spans_per_payload=20)
    payloads = [b.payload for b in gen.batches(30)][:10]
    assert len(payloads) == 10
    bound = sum(map(len, payloads[-3:]))
    with serving(_authed_config(recent_traffic_bytes=bound)) as s:
        for p in payloads:
            _post(s.url(), p)
        req = urllib.request.Request(f"http://{s.address('metrics')}/debug/traffic",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Content-Type"] == "application/x-tailsample-recording"
            records = decode_records(resp.read())
        assert [p for _, p in records] == payloads[-3:]
        assert [t for t, _ in records] == sorted(t for t, _ in records)
        assert s.metric('tailsample_recent_traffic_payloads{pipeline="traces"}') == 3
        assert s.metric('tailsample_recent_traffic_bytes{pipeline="traces"}') == bound
        assert s.metric('tailsample_recent_traffic_dropped_payloads_total{pipeline="traces"}') == 7
        for bad in ("inf", "-1", "x"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(f"{req.full_url}?since={bad}", headers=req.headers),
                                       timeout=5)
            assert refused.value.code == 400 and "since" in json.loads(refused.value.read())["error"]


def test_recording_ring_and_wire_format() -> None:
    """Scenario: the ring on a fake clock. Guarantees: oldest out first; a request over the whole bound is not
    kept (counted); `since` filters by receive time; the wire format round-trips and a cut one is refused."""
    clock = iter(range(1, 100))
    ring = TrafficRecording("p", 10, clock=lambda: next(clock))
    for payload in (b"aaaa", b"bbbb", b"cccc", b"x" * 11, b"dd"):
        ring.add(payload)
    assert ring.snapshot() == [(2, b"bbbb"), (3, b"cccc"), (5, b"dd")]
    assert (ring.bytes, len(ring), ring.dropped) == (10, 3, 2)
    assert ring.snapshot(since_ns=3) == [(3, b"cccc"), (5, b"dd")]
    wire = b"".join(encode_records(ring.snapshot(), chunk=5))
    assert decode_records(wire) == ring.snapshot()
    with pytest.raises(ValueError, match="cut short"):
        decode_records(wire[:-1])


def test_several_services_merge_by_receive_time(tmp_path: Path) -> None:
    """Scenario: two instances' recordings, interleaved in time. Guarantees: one proto file, in receive order."""
    one = [(1_000, b"\x0a\x00"), (3_000, b"\x0a\x01\x01"), (3_500, b"\x0a\x01\x03")]
    two = [(2_000, b"\x0a\x01\x02"), (4_000_001_000, b"\x0a\x01\x04")]
    summary = write_recording([one, two], tmp_path / "merged.binpb")
    assert summary == {"payloads": 5, "bytes": 14, "seconds": 4.0}
    assert list(read_payloads(tmp_path / "merged.binpb", "proto")) == [
        b"\x0a\x00", b"\x0a\x01\x02", b"\x0a\x01\x01", b"\x0a\x01\x03", b"\x0a\x01\x04"]


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario: /debug off; the recording off (recent_traffic_bytes 0); a server that is not tailsample; files and
    --url together; a bad setting. Guarantees: exit 1 or 2 with a sentence naming the fix, no traceback."""
    argv = ["--config", str(SEED), "--no-progress"]
    with serving(service_config(exporters={"debug": {}})) as off:
        assert main(["simulate", "--url", f"http://{off.address('metrics')}", *argv]) == 1
        assert "tailsample_debug" in capsys.readouterr().err
    with serving(service_config(exporters={"debug": {}}, debug={"recent_traffic_bytes": 0})) as zero:
        assert main(["simulate", "--url", f"http://{zero.address('metrics')}", *argv]) == 1
        assert "recent_traffic_bytes" in capsys.readouterr().err
        # the OTLP/HTTP port answers, but is no telemetry address
        assert main(["simulate", "--url", f"http://{zero.address('otlp/http')}", *argv]) == 1
        assert "does not look like a tailsample service" in capsys.readouterr().err
    assert main(["simulate", "--url", "http://127.0.0.1:1", str(SEED), *argv]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["simulate", *argv]) == 2
    assert "--url" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="recent_traffic_bytes: must be at least 0"):
        ServiceConfig.from_dict(service_config(exporters={"debug": {}}, debug={"recent_traffic_bytes": -1}))
