"""The archive of dropped traces (`tailsample.archive`): the proof issue 21 asks for.

Seed policies with the archive on: dropped traces recovered by ID and by content, compared span for span with
what was sent (the only difference: `tailsample.recovered = true` on every span); the same after kill -9 and a
restart of `tailsample serve`, into a real OTLP backend; the size and age bounds under load, oldest first; a
trace ID never seen, or aged out, gets a plain answer."""

from __future__ import annotations

import base64
import json
import random
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otlp_builders import STATUS_ERROR, make_request, make_span
from service_harness import ServeSubprocess, free_port, service_config, serving, sink, wait_for
from tailsample.archive import RECOVERED_ATTRIBUTE, ArchiveReader
from tailsample.cli import main
from tailsample.config import Config
from tailsample.engine import Engine
from tailsample.errors import ConfigError
from tailsample.storage import FileStorage
from tailsample.traffic.synth import TrafficGenerator

TOKEN = "archive-test-token"
ERRORS = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]


def _seed(decision_wait: str | None = None, **archive: Any) -> Config:
    """The seed's policies (errors, latency, forced, 1 % random) with the archive on."""
    block = Config.default().normalized()
    if decision_wait is not None:
        block["decision_wait"] = decision_wait
    block["tailsample"]["archive"] = {"storage": "file_storage/archive", "max_size_mib": 64, "max_age": "1h",
                                      **archive}
    return Config.from_dict(block)


def _spans_by_trace(payloads: list[bytes], *, recovered: bool = False) -> dict[str, dict[str, bytes]]:
    """trace ID → span ID → the span's bytes with its resource's and scope's (deterministic serialization); with
    `recovered`, each span must carry `tailsample.recovered = true`, which is taken off before comparing."""
    out: dict[str, dict[str, bytes]] = {}
    for p in payloads:
        for rs in ExportTraceServiceRequest.FromString(p).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    if recovered:
                        marks = [a for a in s.attributes if a.key == RECOVERED_ATTRIBUTE]
                        assert len(marks) == 1 and marks[0].value.bool_value is True, s
                        kept = [a for a in s.attributes if a.key != RECOVERED_ATTRIBUTE]
                        del s.attributes[:]
                        s.attributes.extend(kept)
                    whole = (rs.resource.SerializeToString(deterministic=True)
                             + ss.scope.SerializeToString(deterministic=True)
                             + s.SerializeToString(deterministic=True))
                    out.setdefault(s.trace_id.hex(), {})[s.span_id.hex()] = whole
    return out


def _run_seed(tmp_path: Path, seconds: float = 2.0) -> tuple[Engine, dict[str, dict[str, bytes]], set[str], float]:
    """Seed traffic through the seed policies with the archive on; returns the engine, what was sent, the kept
    trace IDs and the time base."""
    e = Engine(_seed(), archive=FileStorage(tmp_path))
    gen = TrafficGenerator(seed=21, spans_per_second=5_000)
    t0 = time.time() - 120
    sent: list[bytes] = []
    kept: list[bytes] = []
    for b in gen.batches(seconds):
        e.ingest(b.payload, now=t0 + b.t)
        sent.append(b.payload)
    kept += e.flush(now=t0 + 60)
    return e, _spans_by_trace(sent), set(_spans_by_trace(kept)), t0


def test_seed_policies_dropped_traces_come_back_by_id_and_by_content_span_for_span(tmp_path):
    e, sent, kept, _ = _run_seed(tmp_path)
    dropped = sorted(set(sent) - kept)
    assert len(dropped) > 100 and len(kept) > 0
    stats = e.archive_stats()
    assert stats is not None and stats["traces"] == len(dropped) == stats["traces_written"]
    picked = random.Random(5).sample(dropped, 25)
    got = e.recover(picked)
    assert sorted(r.trace_id for r in got) == sorted(picked)
    back = _spans_by_trace([r.payload for r in got], recovered=True)
    for tid in picked:
        assert back[tid] == sent[tid], f"trace {tid} span for span"
    # A kept trace is not in the archive; explain says whether a dropped one can come back, and until when.
    some_kept = next(iter(kept))
    assert e.recover([some_kept]) == []
    answer = e.explain(picked[0])["archive"]
    assert answer["recoverable"] is True
    assert answer["until"] == pytest.approx(answer["archived_at"] + 3600)

    # By content, offline: the traces with a span of a given name, all of them and only them.
    name = next(iter(ExportTraceServiceRequest.FromString(got[0].payload).resource_spans[0].scope_spans[0].spans)).name
    with_name = {t for t in dropped if any(_name_of(b) == name for b in sent[t].values())}
    result = ArchiveReader(tmp_path).scan(0, time.time() + 10, f'name == "{name}"')
    assert result.problems == [] and not result.truncated
    assert {f.trace_id for f in result.traces} == with_name
    for f in result.traces[:20]:
        assert _spans_by_trace([f.payload], recovered=True)[f.trace_id] == sent[f.trace_id]
        assert f.spans == len(sent[f.trace_id]) and f.duration >= 0


def _name_of(whole: bytes) -> str:
    # The span's name, from the bytes `_spans_by_trace` keeps: parse the span part again.
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    for cut in range(len(whole)):
        try:
            s = Span.FromString(whole[cut:])
        except Exception:
            continue
        if len(s.trace_id) == 16 and s.SerializeToString(deterministic=True) == whole[cut:]:
            return s.name
    return ""


def test_the_archive_survives_a_reopen_with_a_torn_tail(tmp_path):
    e, sent, kept, _ = _run_seed(tmp_path, seconds=1.0)
    dropped = sorted(set(sent) - kept)
    directory = e.archive_directory
    assert directory is not None
    del e  # no close: what kill -9 leaves (the open segment without its index)
    newest = sorted(directory.glob("*.seg"))[-1]
    with newest.open("ab") as f:
        f.write(b"\x10\x00\x00\x00torn")  # a record header cut short
    e = Engine(_seed(), archive=FileStorage(tmp_path))
    stats = e.archive_stats()
    assert stats is not None and len(stats["truncations"]) == 1
    assert stats["traces"] == len(dropped)
    got = e.recover(dropped[:10] + dropped[-10:])
    assert _spans_by_trace([r.payload for r in got], recovered=True) == {t: sent[t] for t in
                                                                         dropped[:10] + dropped[-10:]}


def test_size_and_age_bounds_hold_under_load_and_the_oldest_goes_first(tmp_path):
    e = Engine(_seed(decision_wait="1s", max_size_mib=1, max_age="30s"),
               archive=FileStorage(tmp_path, segment_size=64 << 10))
    gen = TrafficGenerator(seed=3, spans_per_second=20_000)
    t0 = time.time() - 600
    next_poll = 0.5
    for b in gen.batches(4.0):
        if b.t >= next_poll:
            e.poll(now=t0 + b.t)
            next_poll += 0.5
            stats = e.archive_stats()
            assert stats is not None and stats["bytes"] <= 1 << 20, stats
        e.ingest(b.payload, now=t0 + b.t)
    e.flush(now=t0 + 10)
    stats = e.archive_stats()
    assert stats is not None
    assert stats["bytes"] <= 1 << 20 and stats["segments_removed_size"] > 0
    assert stats["traces_refused_budget"] == 0
    truth = gen.truth
    ordered = [t.hex() for t in truth]  # in generation order
    first_dropped = [t for t in ordered[:200] if not (truth[bytes.fromhex(t)].error or truth[bytes.fromhex(t)].slow)]
    last_round = [t for t in ordered[-200:] if not (truth[bytes.fromhex(t)].error or truth[bytes.fromhex(t)].slow)]
    assert e.recover(first_dropped[:20]) == [], "the oldest went first"
    assert len(e.recover(last_round[:20])) >= 15, "the newest are held (a few kept by the 1 % random policy)"
    # Age: 30 s after the last write, every segment has aged out, whole.
    e.poll(now=t0 + 40 + 31)
    stats = e.archive_stats()
    assert stats is not None and stats["traces"] == 0 and stats["segments_removed_age"] > 0
    assert e.recover(last_round[:20]) == []
    assert e.explain(last_round[0])["archive"] == {"recoverable": False}


def test_unknown_and_aged_out_ids_get_a_plain_answer(tmp_path, capsys):
    e, sent, kept, _ = _run_seed(tmp_path, seconds=0.5)
    dropped = sorted(set(sent) - kept)
    assert e.recover(["0" * 31 + "1"]) == []
    code = main(["recover", "--archive", str(tmp_path), "ab" * 16, dropped[0]])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err
    assert f"trace {'ab' * 16}: not in the archive" in out.out
    assert f"trace {dropped[0]}: not in" not in out.out
    assert main(["recover", "--archive", str(tmp_path), "nothex"]) == 2
    assert "not a trace ID" in capsys.readouterr().err
    assert main(["recover", "--archive", str(tmp_path / "nowhere"), "ab" * 16]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["recover", "--archive", str(tmp_path), "--since", "1h", "--where", "name ==="]) == 2
    assert "where" in capsys.readouterr().err


def test_cli_writes_the_file_exporter_format_and_lists_a_scan(tmp_path, capsys):
    _, sent, kept, _ = _run_seed(tmp_path, seconds=0.5)
    dropped = sorted(set(sent) - kept)[:3]
    out_file = tmp_path / "recovered.json"
    assert main(["recover", "--archive", str(tmp_path), *dropped, "--output", str(out_file)]) == 0
    from tailsample.collector.fileformat import read_payloads

    back = _spans_by_trace(list(read_payloads(out_file)), recovered=True)
    assert back == {t: sent[t] for t in dropped}
    capsys.readouterr()
    scan_file = tmp_path / "scan.json"
    assert main(["recover", "--archive", str(tmp_path), "--since", "1h", "--until", "now", "--limit", "5",
                 "--yes", "--output", str(scan_file)]) == 0
    text = capsys.readouterr().out
    assert "5 dropped traces" in text and "root span" in text
    assert len(_spans_by_trace(list(read_payloads(scan_file)), recovered=True)) == 5


def test_without_its_storage_the_archive_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"tailsample\.archive\.storage names 'file_storage/archive'"):
        Engine(_seed())
    with pytest.raises(ConfigError, match="max_age"):
        _seed(max_age="0s")


# ---- the service: kill -9, restart, recover into a real backend ---------------------------------------------

def _trace(tid: int, error: bool) -> bytes:
    t = tid.to_bytes(16, "big")
    return make_request({"service.name": "shop", "user.id": str(tid % 7)}, [
        make_span(t, (i + 1).to_bytes(8, "big"), parent=b"" if i == 0 else (1).to_bytes(8, "big"),
                  name=f"op{i}", status=STATUS_ERROR if error and i == 2 else 0,
                  attributes={"user.id": str(tid % 7)} if i == 0 else None)
        for i in range(3)])


def _serve_config(directory: Path, backend: str, http_port: int, health: int, metrics: int) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"tail_sampling": {"decision_wait": "300ms", "policies": ERRORS,
                                         "tailsample": {"archive": {"storage": "file_storage/archive",
                                                                    "max_size_mib": 16, "max_age": "1h"}}}},
        "exporters": {"otlphttp": {"endpoint": backend}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"},
                       "file_storage/archive": {"directory": str(directory), "create_directory": True},
                       "bearertokenauth": {"token": TOKEN},
                       "tailsample_debug": {"auth": {"authenticator": "bearertokenauth"}}},
        "service": {"extensions": ["health_check", "file_storage/archive", "bearertokenauth", "tailsample_debug"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["otlphttp"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics}"}}},
    }


def _send(http_port: int, payload: bytes) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/traces", data=payload, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    urllib.request.urlopen(req, timeout=5).read()


def test_kill_9_restart_then_recover_by_id_and_content_into_the_backend(tmp_path, capsys):
    directory = tmp_path / "storage"
    http_port = free_port()
    sent = {format(tid, "032x"): _trace(tid, error=tid % 3 == 0) for tid in range(1, 31)}
    dropped = [t for t in sent if int(t, 16) % 3 != 0]
    with sink() as backend:
        health, metrics = free_port(), free_port()
        first = ServeSubprocess(tmp_path, "first", _serve_config(directory, backend.http_endpoint, http_port,
                                                                 health, metrics),
                                health_port=health, metrics_port=metrics)
        try:
            for payload in sent.values():
                _send(http_port, payload)
            key = 'tailsample_archive_written_traces_total{processor="tail_sampling"}'
            wait_for(lambda: first.metrics().get(key, 0) == len(dropped), timeout=20, what="dropped traces archived")
            kept = set(sent) - set(dropped)
            wait_for(lambda: {t for t, *_ in backend.spans()} == kept, timeout=20, what="kept traces exported")
        finally:
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(30)
        assert {t for t, *_ in backend.spans()} == set(sent) - set(dropped)
        health, metrics = free_port(), free_port()
        second = ServeSubprocess(tmp_path, "second", _serve_config(directory, backend.http_endpoint, http_port,
                                                                   health, metrics),
                                 health_port=health, metrics_port=metrics)
        try:
            url = f"http://127.0.0.1:{metrics}"
            before = len(backend.payloads)
            asked = dropped[:4]
            assert main(["recover", *asked, "--url", url, "--token", TOKEN]) == 0
            assert f"trace {asked[0]}: recovered by {url}" in capsys.readouterr().out
            wait_for(lambda: len(backend.payloads) >= before + 4, timeout=10, what="recovered traces at the backend")
            back = _spans_by_trace(backend.payloads[before:], recovered=True)
            assert back == _spans_by_trace([sent[t] for t in asked])
            m = second.metrics()
            assert m['tailsample_archive_recovered_traces_total{processor="tail_sampling"}'] == 4
            assert m['tailsample_archive_traces{processor="tail_sampling"}'] == len(dropped)
            # Never seen: a plain answer, exit 1; without the token: said plainly.
            assert main(["recover", "cd" * 16, "--url", url, "--token", TOKEN]) == 1
            assert f"trace {'cd' * 16}: not in the archive" in capsys.readouterr().out
            assert main(["recover", asked[0], "--url", url]) == 1
            assert "bearer token" in capsys.readouterr().err
            # By content, offline on the same directory while the service runs, then sent through the service.
            where = 'attributes["user.id"] == "2"'
            expected = {t for t in dropped if int(t, 16) % 7 == 2}
            before = len(backend.payloads)
            assert main(["recover", "--archive", str(directory), "--since", "1h", "--where", where, "--yes",
                         "--url", url, "--token", TOKEN]) == 0
            text = capsys.readouterr().out
            assert f"{len(expected)} dropped traces" in text
            wait_for(lambda: len(backend.payloads) >= before + len(expected), timeout=10, what="scan recovered")
            back = _spans_by_trace(backend.payloads[before:], recovered=True)
            assert back == _spans_by_trace([sent[t] for t in expected])
            # By content through the services (each scans its own archive), into a file.
            scan_out = tmp_path / "scan.json"
            assert main(["recover", "--since", "1h", "--until", "now", "--where", 'attributes["user.id"] == "3"',
                         "--yes", "--url", url, "--token", TOKEN, "--output", str(scan_out)]) == 0
            expected = {t for t in dropped if int(t, 16) % 7 == 3}
            assert f"{len(expected)} dropped traces" in capsys.readouterr().out
            from tailsample.collector.fileformat import read_payloads

            assert _spans_by_trace(list(read_payloads(scan_out)), recovered=True) == \
                _spans_by_trace([sent[t] for t in expected])
            assert main(["recover", "--since", "1h", "--where", "name ===", "--url", url, "--token", TOKEN]) == 1
            assert "HTTP 400" in capsys.readouterr().err
            # The endpoint returns payloads instead when asked not to export.
            req = urllib.request.Request(f"{url}/debug/recover", method="POST",
                                         data=json.dumps({"trace_ids": asked[:1], "export": False}).encode(),
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                doc = json.loads(resp.read())
            row = doc["pipelines"]["traces"]["found"][0]
            assert _spans_by_trace([base64.b64decode(row["payload"])], recovered=True) == \
                _spans_by_trace([sent[asked[0]]])
            # The status page (open on the loopback metrics address): the lookup says the trace can be recovered,
            # and its recover action sends it to the backend whole.
            one = dropped[4]
            with urllib.request.urlopen(f"{url}/status/trace/{one}", timeout=5) as resp:
                look = json.loads(resp.read())
            assert look["recover"]["available"] is True
            assert look["pipelines"]["traces"]["explain"]["archive"]["recoverable"] is True
            before = len(backend.payloads)
            req = urllib.request.Request(f"{url}/status/recover/{one}", method="POST", data=b"")
            with urllib.request.urlopen(req, timeout=5) as resp:
                done = json.loads(resp.read())
            assert [f["trace_id"] for f in done["pipelines"]["traces"]["found"]] == [one]
            wait_for(lambda: len(backend.payloads) >= before + 1, timeout=10, what="recovered from the status page")
            assert _spans_by_trace(backend.payloads[before:], recovered=True) == _spans_by_trace([sent[one]])
        finally:
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait(30)


def test_service_config_checks_the_archive_storage_reference(tmp_path):
    from tailsample.collector.settings import ServiceConfig

    cfg = service_config(exporters={"debug": {}},
                         tail_sampling={"tailsample": {"archive": {"storage": "file_storage/none"}}})
    with pytest.raises(ConfigError, match=r"tailsample\.archive\.storage.*not defined"):
        ServiceConfig.from_dict(cfg)
    cfg = service_config(exporters={"debug": {}}, extensions={"file_storage/a": {"directory": str(tmp_path)}},
                         service_extensions=["file_storage/a"],
                         tail_sampling={"tailsample": {"archive": {"storage": "file_storage/a"}}})
    with serving(cfg) as s:
        engine = next(iter(s.service.pipelines.values())).engine
        assert engine.archive_directory == tmp_path / "archive_tail_sampling"
        assert s.metric('tailsample_archive_limit_bytes{processor="tail_sampling"}') == 10240 << 20


def test_with_tail_storage_on_the_same_extension(tmp_path):
    """Tail storage and the archive on one file_storage extension: each in its own subdirectory; a trace not
    kept before a restart stays recoverable after it, and one decided after the replay is archived too."""
    cfg = Config.from_dict({"decision_wait": "10s", "tail_storage": "file_storage/buffer", "policies": ERRORS,
                            "tailsample": {"archive": {"storage": "file_storage/buffer"}}})
    e = Engine(cfg, storage=FileStorage(tmp_path), archive=FileStorage(tmp_path), now=100.0)
    e.ingest(_trace(1, error=False), now=100.0)
    e.ingest(_trace(2, error=True), now=100.0)
    e.ingest(_trace(4, error=False), now=105.0)
    assert len(e.poll(now=110.0)) == 1  # trace 2 kept, trace 1 archived, trace 4 pending
    del e
    e = Engine(cfg, storage=FileStorage(tmp_path), archive=FileStorage(tmp_path), now=111.0)
    assert e.replay_report()["traces_pending"] == 1
    e.poll(now=116.0)
    got = {r.trace_id: r for r in e.recover([format(t, "032x") for t in (1, 2, 4)])}
    assert set(got) == {format(1, "032x"), format(4, "032x")}
    assert _spans_by_trace([got[format(4, "032x")].payload], recovered=True) == _spans_by_trace([_trace(4, False)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive_tail_sampling", "processor_tail_sampling"]


def test_real_instrumentation_dropped_traces_come_back_whole(tmp_path, capsys):
    """Scenario: a recording of real OpenTelemetry instrumentation (`examples/shop.otlp.json`: Flask frontend, cart
    and payments, the Python SDK's OTLP exporter, 84 traces, 8 with an error) sent to `tailsample serve` over
    OTLP/HTTP with the errors policy and the archive on. Guarantees: the 76 dropped traces are archived; recovered
    by ID through the service into a real OTLP backend, each comes back span for span as the SDK sent it
    (resource and scope included, `tailsample.recovered` aside); a content scan on what the SDK sets
    (`resource.attributes["service.name"]`) finds exactly the dropped traces that hold such a span, listed with
    their whole trace IDs."""
    from tailsample.collector.fileformat import read_payloads

    recording = list(read_payloads(Path(__file__).resolve().parents[1] / "examples" / "shop.otlp.json"))
    sent = _spans_by_trace(recording)
    errors = {s.trace_id.hex() for p in recording for rs in ExportTraceServiceRequest.FromString(p).resource_spans
              for ss in rs.scope_spans for s in ss.spans if s.status.code == STATUS_ERROR}
    dropped = sorted(set(sent) - errors)
    assert len(sent) == 84 and len(dropped) == 76
    payments = [rs for p in recording for rs in ExportTraceServiceRequest.FromString(p).resource_spans
                if any(a.key == "service.name" and a.value.string_value == "payments" for a in rs.resource.attributes)]
    with_payments = {s.trace_id.hex() for rs in payments for ss in rs.scope_spans for s in ss.spans} - errors
    assert 0 < len(with_payments) < len(dropped)
    directory, http_port, health, metrics = tmp_path / "storage", free_port(), free_port(), free_port()
    with sink() as backend:
        s = ServeSubprocess(tmp_path, "real", _serve_config(directory, backend.http_endpoint, http_port, health,
                                                           metrics), health_port=health, metrics_port=metrics)
        try:
            for payload in recording:
                _send(http_port, payload)
            key = 'tailsample_archive_written_traces_total{processor="tail_sampling"}'
            wait_for(lambda: s.metrics().get(key, 0) == len(dropped), timeout=20, what="dropped traces archived")
            wait_for(lambda: {t for t, *_ in backend.spans()} == errors, timeout=20, what="error traces exported")
            url = f"http://127.0.0.1:{metrics}"
            before = len(backend.payloads)
            assert main(["recover", *dropped[:40], "--url", url, "--token", TOKEN]) == 0
            assert main(["recover", *dropped[40:], "--url", url, "--token", TOKEN]) == 0
            capsys.readouterr()
            wait_for(lambda: len({t for t, *_ in backend.spans()}) == len(sent), timeout=20,
                     what="every dropped trace recovered")
            assert _spans_by_trace(backend.payloads[before:], recovered=True) == {t: sent[t] for t in dropped}
            assert main(["recover", "--since", "1h", "--where", 'resource.attributes["service.name"] == "payments"',
                         "--url", url, "--token", TOKEN]) == 0
            listed = capsys.readouterr().out
            assert f"{len(with_payments)} dropped traces" in listed
            assert all(t in listed for t in with_payments)
        finally:
            s.proc.send_signal(signal.SIGTERM)
            s.proc.wait(30)
