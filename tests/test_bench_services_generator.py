"""The load generator of bench/services.py (the raw HTTP/1.1 client) against a small loopback server: the bytes of
every request, and one record per request whatever the server answers."""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import services

Behave = Callable[[int], str]


async def _serve(behave: Behave, got: list[tuple[bytes, dict[bytes, bytes], bytes]]) -> asyncio.Server:
    """An HTTP/1.1 server keeping every request; `behave(k)` says how to answer the k-th (from 0)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
                body = await reader.readexactly(int(headers[b"content-length"]))
                k = len(got)
                got.append((lines[0], headers, body))
                how = behave(k)
                if how == "hang":
                    await asyncio.sleep(30)
                if how == "drop":
                    break
                if how == "chunked-503":
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nbusy!\r\n3\r\n...\r\n0\r\n\r\n")
                elif how == "close":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    break
                else:  # the answer in two writes: head, then the body
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                                 b"Content-Length: 4\r\n\r\n")
                    await writer.drain()
                    writer.write(b"\x00\x01\x02\x03")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _offer(data: list[services.Payload], behave: Behave, n_requests: int, rate_requests: float,
           timeout: float = 10.0) -> tuple[dict[str, object], list[tuple[bytes, dict[bytes, bytes], bytes]]]:
    got: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def main() -> dict[str, object]:
        server = await _serve(behave, got)
        port = server.sockets[0].getsockname()[1]
        rate = rate_requests * data[0].spans
        spec = services.LoadSpec(f"http://127.0.0.1:{port}/v1/traces", rate, n_requests / rate_requests,
                                 time.time() + 0.1, timeout=timeout, connections=4)
        try:
            return await services._offer(spec, data, 0, 1)
        finally:
            server.close()

    return asyncio.run(main()), got


def test_every_request_is_the_payload_of_its_pass() -> None:
    data = services.prepare(100, 1000)  # 10 payloads: 25 requests are two and a half passes
    result, got = _offer(data, lambda k: "ok", 25, 200.0)
    records = result["records"]
    assert isinstance(records, list) and len(records) == 25 and all(r[3] == 200 for r in records)
    assert all(r[4] == 100 for r in records) and all(r[0] <= r[1] + 0.001 <= r[2] + 0.001 for r in records)
    assert [line for line, _, _ in got] == [b"POST /v1/traces HTTP/1.1"] * 25
    assert all(h[b"content-type"] == b"application/x-protobuf" for _, h, _ in got)
    want = sorted(bytes(services.pass_payload(data[i % 10], i // 10)) for i in range(25))
    assert sorted(body for _, _, body in got) == want
    assert len(set(want)) == 25  # the passes differ: no trace ID repeats


def test_one_record_per_request_whatever_the_answer() -> None:
    data = services.prepare(100, 1000)
    # the request hanging (the 3rd) is still unanswered when its payload comes round again in the next pass
    plan = {1: "chunked-503", 2: "hang", 4: "close", 8: "drop", 11: "chunked-503"}
    result, got = _offer(data, lambda k: plan.get(k, "ok"), 14, 50.0, timeout=0.5)
    records = result["records"]
    assert isinstance(records, list) and len(got) == 14
    statuses = collections.Counter(r[3] for r in records)
    assert statuses == {200: 10, 503: 2, -1: 1, -2: 1}
    late = next(r for r in records if r[3] == -1)
    assert 0.5 <= late[2] - late[1] < 1.0  # timed out near its deadline, not at the end of the run
    want = sorted(bytes(services.pass_payload(data[i % 10], i // 10)) for i in range(14))
    assert sorted(body for _, _, body in got) == want


def test_decision_lag_p99_is_the_bound_of_the_bucket_holding_it() -> None:
    """Scenario: tailsample's decision-lag histogram scraped before and after a run (two pipelines, cumulative
    buckets), and the otelcol's page, which has none. Guarantees: the buckets of both pipelines are summed; over the
    run's deltas the 99th percentile lies in the first bucket whose cumulative count reaches 99 % of all
    (here 0.1 s: 990 of 1,000 decisions by then); no decisions, or no histogram, give None."""
    def page(counts: dict[str, float]) -> list[tuple[str, dict[str, str], float]]:
        return [("tailsample_decision_lag_seconds_bucket", {"processor": p, "le": le}, n / 2)
                for p in ("tail_sampling/a", "tail_sampling/b") for le, n in counts.items()] + [
            ("otelcol_receiver_accepted_spans_total", {"transport": "http"}, 5.0)]

    before = services.lag_buckets(page({"0.05": 100, "0.1": 100, "1": 100, "+Inf": 100}))
    after = services.lag_buckets(page({"0.05": 700, "0.1": 1090, "1": 1100, "+Inf": 1100}))
    assert after[services.LAG_BUCKET + "0.1"] == 1090
    run = {k: v - before.get(k, 0.0) for k, v in after.items()}
    assert services.lag_p99_ms(run) == 100.0
    run[services.LAG_BUCKET + "0.1"] = 980.0  # 98 %: the next bucket holds the 99th percentile
    assert services.lag_p99_ms(run) == 1000.0
    assert services.lag_p99_ms({k: 0.0 for k in run}) is None
    assert services.lag_buckets([("otelcol_exporter_sent_spans_total", {}, 3.0)]) == {}
    assert services.lag_p99_ms({"receiver_accepted_spans": 5.0}) is None


def test_a_run_ends_on_a_trace_boundary() -> None:
    data = services.prepare(512, 2000)  # 512, 512, 512 and 464 spans: traces of 5 straddle requests
    assert [p.spans for p in data] == [512, 512, 512, 464]
    assert [services.ends_on_trace_boundary(data, n) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]
    whole = services.prepare(100, 1000)
    assert services.ends_on_trace_boundary(whole, 25) == 25


def test_the_wake_cost_is_this_threads_cpu_per_sleep() -> None:
    cost = services.wake_cost_us(wakes=20, sleep_s=0.002)
    # CPU, not wall time: a 2 ms sleep costs the thread far less than 2 ms.
    assert 0 < cost < 2_000
