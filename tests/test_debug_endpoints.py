"""The `/debug/*` endpoints of the metrics address (issue 18, item 5): off unless a `tailsample_debug` extension
is listed, behind the receivers' `bearertokenauth`, with a bounded page size and a rate limit of their own; and
every user of them (the CLI) saying plainly when they are off or want a token."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from otlp_builders import STATUS_ERROR, make_request, make_span, service, span_id, trace_id
from service_harness import ServiceThread, service_config, serving, sink, wait_for
from tailsample.collector.settings import ServiceConfig
from tailsample.errors import ConfigError
from tailsample.service.debug import TokenBucket

PATHS = ["/debug/traces/" + "ab" * 16, "/debug/gaps", "/debug/attributes", "/debug/kept", "/debug/kept/" + "ab" * 16]
TOKEN = "s3cret-debug-token"


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET, errors included."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def send_error_trace(s: ServiceThread, rng: random.Random) -> bytes:
    tid = trace_id(rng)
    payload = make_request(service("payments"), [make_span(tid, span_id(rng), name="GET /pay", status=STATUS_ERROR)])
    urllib.request.urlopen(urllib.request.Request(s.url(), data=payload,
                                                  headers={"Content-Type": "application/x-protobuf"}),
                           timeout=5).close()
    return tid


def authed_config(backend_endpoint: str, **debug: Any) -> dict[str, Any]:
    return service_config(exporters={"otlphttp": {"endpoint": backend_endpoint}},
                          extensions={"bearertokenauth": {"token": TOKEN}}, service_extensions=["bearertokenauth"],
                          debug={"auth": {"authenticator": "bearertokenauth"}, **debug})


def test_debug_endpoints_are_off_without_the_extension(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Scenario: a config of the user's own that does not ask for /debug. Guarantees: every /debug path (and any
    method) answers 404 with a message naming the extension that turns them on; /metrics still answers and counts
    the refusals; `explain`, `show`, `gaps` and `check-config --url` exit 1 saying the endpoints are disabled."""
    from tailsample.cli import main

    with sink() as backend, serving(service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}})) as s:
        base = f"http://{s.address('metrics')}"
        for path in PATHS:
            status, _, body = get(base + path)
            assert status == 404 and body["disabled"] is True
            assert "tailsample_debug" in body["error"] and "service.extensions" in body["error"]
        req = urllib.request.Request(base + "/debug/kept", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 404
        assert s.metric('tailsample_debug_requests_total{endpoint="any",outcome="disabled"}') == len(PATHS) + 1
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({"policies": [{"name": "errors", "type": "status_code",
                                                        "status_code": {"status_codes": ["ERROR"]}}]}))
        for argv in (["explain", "ab" * 16, "--url", base], ["show", "--url", base], ["gaps", "--url", base],
                     ["check-config", str(policy), "--url", base]):
            assert main(argv) == 1, argv
            err_text = capsys.readouterr().err
            assert "the /debug endpoints are off" in err_text and "tailsample_debug" in err_text, argv
            assert "Traceback" not in err_text


def test_bearer_token_guards_every_debug_endpoint(rng: random.Random, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario: tailsample_debug with `auth: {authenticator: bearertokenauth}`. Guarantees: without the token
    or with a wrong one every /debug path answers 401 (WWW-Authenticate: Bearer) and reveals nothing; with it,
    200 and the kept spans; the CLI takes `--token` or $TAILSAMPLE_TOKEN and says when a token is missing or
    refused; /metrics needs no token (Prometheus scrapes it)."""
    from tailsample.cli import main

    with sink() as backend, serving(authed_config(backend.http_endpoint)) as s:
        tid = send_error_trace(s, rng)
        wait_for(lambda: backend.span_count() == 1, what="the kept trace")
        base = f"http://{s.address('metrics')}"
        for path in [*PATHS, f"/debug/kept/{tid.hex()}"]:
            for token in (None, "wrong"):
                status, headers, body = get(base + path, token)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (path, token)
                assert tid.hex() not in json.dumps(body) and "payments" not in json.dumps(body)
        status, _, doc = get(f"{base}/debug/kept/{tid.hex()}", TOKEN)
        assert status == 200 and doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "GET /pay"
        assert get(base + "/debug/gaps", TOKEN)[0] == 200
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert r.status == 200
        assert s.metric('tailsample_debug_requests_total{endpoint="kept_trace",outcome="unauthenticated"}') == 4

        assert main(["show", "--url", base, "--trace-id", tid.hex()]) == 1
        assert "need a bearer token (give it with --token or $TAILSAMPLE_TOKEN)" in capsys.readouterr().err
        assert main(["show", "--url", base, "--trace-id", tid.hex(), "--token", "wrong"]) == 1
        assert "the token given was refused" in capsys.readouterr().err
        assert main(["show", "--url", base, "--trace-id", tid.hex(), "--token", TOKEN]) == 0
        assert "GET /pay" in capsys.readouterr().out
        monkeypatch.setenv("TAILSAMPLE_TOKEN", TOKEN)
        assert main(["explain", tid.hex(), "--url", base]) == 0
        assert "KEPT, by policy 'errors'" in capsys.readouterr().out


def test_page_size_is_bounded_and_the_rate_limit_answers_429(rng: random.Random) -> None:
    """Scenario: max_page_size 5, a rate limit of 2 requests per second with a burst of 3. Guarantees:
    `/debug/kept?limit=6` is a 400 naming the bound, `limit=5` serves; past the burst every /debug path answers
    429 with Retry-After, counted per endpoint, while /metrics and ingest keep answering; after a wait the
    bucket refills and requests are served again."""
    with sink() as backend, serving(service_config(exporters={"otlphttp": {"endpoint": backend.http_endpoint}},
                                                   debug={"max_page_size": 5,
                                                          "rate_limit": {"requests_per_second": 2,
                                                                         "burst": 3}})) as s:
        base = f"http://{s.address('metrics')}"
        status, _, body = get(base + "/debug/kept?limit=6")
        assert status == 400 and "from 0 to 5" in body["error"] and "max_page_size" in body["error"]
        assert get(base + "/debug/kept?limit=5")[0] == 200
        statuses = [get(base + "/debug/gaps")[0] for _ in range(6)]
        assert statuses.count(429) >= 3 and statuses[0] == 200
        status, headers, body = get(base + "/debug/attributes")
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "requests per second" in body["error"]
        assert s.metric('tailsample_debug_requests_total{endpoint="gaps",outcome="rate_limited"}') >= 3
        send_error_trace(s, rng)  # ingest is not behind the debug rate limit
        wait_for(lambda: backend.span_count() == 1, what="the kept trace")
        wait_for(lambda: get(base + "/debug/gaps")[0] == 200, timeout=5, interval=0.3, what="a refilled bucket")


def test_token_bucket_spends_and_refills_on_its_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0 and bucket.take() > 0
    now[0] += 100.0  # saved tokens never exceed the burst
    assert [bucket.take() for _ in range(4)][-1] > 0


@pytest.mark.parametrize(("debug", "extra", "message"), [
    ({"auth": {"authenticator": "missing"}}, {}, "'missing' is not defined in extensions"),
    ({"auth": {"authenticator": "bearertokenauth"}}, {"unlisted": True}, "is not listed in service.extensions"),
    ({"rate_limit": {"requests_per_second": 0}}, {}, "requests_per_second: must be above 0"),
    ({"max_page_size": 0}, {}, "max_page_size: must be at least 1"),
    ({"max_page_size": 100_000}, {}, "max_page_size: must be at most 10000"),
    ({"pages": 3}, {}, "pages"),
    ({}, {"level": "none"}, "service.telemetry.metrics.level: none"),
])
def test_debug_extension_settings_are_checked(debug: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    cfg = service_config(exporters={"debug": {}}, debug=debug)
    if extra.get("unlisted"):
        cfg["extensions"]["bearertokenauth"] = {"token": "t"}
    if "level" in extra:
        cfg["service"]["telemetry"]["metrics"]["level"] = extra["level"]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ServiceConfig.from_dict(cfg)


def test_the_bundled_config_enables_debug_on_loopback_and_a_users_config_does_not() -> None:
    """The first-hour `tailsample serve` (no --config) answers explain/show/gaps on 127.0.0.1:8888; a config that
    does not list tailsample_debug has them off."""
    bundled = ServiceConfig.from_yaml((files("tailsample") / "data" / "serve-config.yaml").read_text())
    assert bundled.debug_endpoints is not None and bundled.debug_endpoints.auth is None
    assert [str(e) for e in bundled.metrics.endpoints] == ["127.0.0.1:8888"]
    assert ServiceConfig.from_dict(service_config(exporters={"debug": {}})).debug_endpoints is None
