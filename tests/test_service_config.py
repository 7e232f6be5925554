"""The collector configuration `tailsample serve` reads: loading, defaults, and errors that say where.

Contract: `ServiceConfig.from_file / from_yaml / from_dict` take an OpenTelemetry Collector YAML restricted to what
serve implements and return frozen dataclasses; every error is a `ConfigError` whose `.path` is the YAML path of
the offending value and whose message starts with the source and that path (and ends with the line, from YAML).
"""

from __future__ import annotations

import dataclasses
import datetime
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tailsample import Config, ConfigError
from tailsample.collector import settings as settings_module
from tailsample.collector.settings import (
    BatchProcessor,
    BearerTokenAuthExtension,
    ClientTLS,
    DebugExporterSettings,
    FileExporterSettings,
    FileStorageExtension,
    GrpcServer,
    HealthCheckExtension,
    HostPort,
    HttpServer,
    MemoryLimiterProcessor,
    MetricsTelemetry,
    OtlpExporterSettings,
    QueueSettings,
    RetrySettings,
    ServerTLS,
    ServiceConfig,
    TailSamplingProcessor,
    parse_duration,
)

SEED = Path(__file__).resolve().parent.parent / "python" / "tailsample" / "data" / "seed-config.yaml"
SEED_POLICIES = ["errors-policy", "latency-policy", "forced-sampling-policy", "probabilistic-policy"]


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def seed_block() -> dict[str, Any]:
    block: dict[str, Any] = yaml.safe_load(SEED.read_text(encoding="utf-8"))["processors"]["tail_sampling"]
    return block


FULL = y("""
    extensions:
      health_check:
        endpoint: 0.0.0.0:13133
      bearertokenauth/ingest:
        token: ${env:INGEST_TOKEN}
      file_storage/queue:
        directory: /var/lib/tailsample/queue

    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: ${env:OTLP_GRPC_ENDPOINT:-0.0.0.0:4317}
            max_recv_msg_size_mib: 16
            tls:
              cert_file: /etc/tls/server.crt
              key_file: /etc/tls/server.key
            auth:
              authenticator: bearertokenauth/ingest
          http:
            endpoint: ":4318"
            max_request_body_size: 10485760

    processors:
      memory_limiter:
        check_interval: 1s
        limit_mib: 4000
        spike_limit_mib: 800
      tail_sampling:
        decision_wait: 10s
        num_traces: 100000
        expected_new_traces_per_sec: 10000
        policies:
          - name: errors-policy
            type: status_code
            status_code: {status_codes: [ERROR]}
          - name: latency-policy
            type: latency
            latency: {threshold_ms: 1000}
          - name: forced-sampling-policy
            type: string_attribute
            string_attribute:
              key: http.request.header.x-force-trace
              values: ["true"]
          - name: probabilistic-policy
            type: probabilistic
            probabilistic: {sampling_percentage: 1}
      batch:
        timeout: 500ms
        send_batch_size: 1024
        send_batch_max_size: 2048

    exporters:
      otlp:
        endpoint: backend.example.com:4317
        headers:
          x-api-key: ${env:BACKEND_KEY}
        timeout: 1m30s
        tls:
          ca_file: /etc/tls/ca.crt
        sending_queue:
          storage: file_storage/queue
          queue_size: 5000
      otlphttp/archive:
        endpoint: https://archive.example.com
        compression: none
        retry_on_failure:
          enabled: false
          max_elapsed_time: 10m
      file:
        path: /var/log/kept.jsonl
      debug:
        verbosity: detailed

    service:
      extensions: [health_check, bearertokenauth/ingest, file_storage/queue]
      pipelines:
        traces:
          receivers: [otlp]
          processors: [memory_limiter, tail_sampling, batch]
          exporters: [otlp, otlphttp/archive, file, debug]
      telemetry:
        metrics:
          level: detailed
          readers:
            - pull:
                exporter:
                  prometheus:
                    host: 0.0.0.0
                    port: 8889
    """)

ENV = {"INGEST_TOKEN": "s3cret", "BACKEND_KEY": "k-123"}

MINIMAL = y("""
    receivers:
      otlp:
        protocols:
          grpc:
          http:
    processors:
      tail_sampling:
        policies: [{name: keep-all, type: always_sample}]
    exporters:
      debug:
    service:
      pipelines:
        traces:
          receivers: [otlp]
          processors: [tail_sampling]
          exporters: [debug]
    """)


def minimal() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MINIMAL)
    return data


def load_error(source: str | dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        if isinstance(source, str):
            ServiceConfig.from_yaml(source, source="otel.yaml", env=env or {})
        else:
            ServiceConfig.from_dict(source, env=env or {})
    return info.value


# ---- a realistic configuration -----------------------------------------------------------------------------------

def test_full_config_loads_with_its_values(tmp_path: Path) -> None:
    """Scenario: a full collector config (both OTLP protocols, tail_sampling with the seed policies, batch,
    memory_limiter, four exporters, three extensions, prometheus reader, env substitution), from a file.
    Guarantees: every value as written, every omitted value at its default, env references replaced."""
    path = tmp_path / "otel-collector-config.yaml"
    path.write_text(FULL, encoding="utf-8")
    cfg = ServiceConfig.from_file(path, env=ENV)
    assert cfg.source == str(path)

    rec = cfg.receivers["otlp"]
    assert rec.grpc == GrpcServer(HostPort("0.0.0.0", 4317), 16,
                                  ServerTLS("/etc/tls/server.crt", "/etc/tls/server.key"),
                                  auth="bearertokenauth/ingest")
    assert rec.http == HttpServer(HostPort("", 4318), 10 * 1024 * 1024)

    ts = cfg.processors["tail_sampling"]
    assert isinstance(ts, TailSamplingProcessor)
    assert ts.config.policy_names == SEED_POLICIES
    assert ts.config.decision_wait == 10.0
    assert ts.config.normalized() == Config.from_dict(seed_block()).normalized()
    assert cfg.processors["batch"] == BatchProcessor("batch", 0.5, 1024, 2048)
    assert cfg.processors["memory_limiter"] == MemoryLimiterProcessor("memory_limiter", 1.0, 4000, 800, 0, 0)

    otlp = cfg.exporters["otlp"]
    assert isinstance(otlp, OtlpExporterSettings)
    assert otlp.protocol == "grpc"
    assert otlp.endpoint == "backend.example.com:4317"
    assert dict(otlp.headers) == {"x-api-key": "k-123"}
    assert otlp.compression == "gzip"
    assert otlp.timeout == 90.0
    assert otlp.tls == ClientTLS(insecure=False, ca_file="/etc/tls/ca.crt")
    assert otlp.retry_on_failure == RetrySettings()
    assert otlp.sending_queue == QueueSettings(True, 10, 5000, "file_storage/queue")

    archive = cfg.exporters["otlphttp/archive"]
    assert isinstance(archive, OtlpExporterSettings)
    assert archive.protocol == "http"
    assert archive.compression == "none"
    assert archive.retry_on_failure == RetrySettings(enabled=False, max_elapsed_time=600.0)
    assert cfg.exporters["file"] == FileExporterSettings("file", "/var/log/kept.jsonl", "json")
    assert cfg.exporters["debug"] == DebugExporterSettings("debug", "detailed")

    assert cfg.extensions["health_check"] == HealthCheckExtension("health_check", HostPort("0.0.0.0", 13133))
    assert cfg.extensions["bearertokenauth/ingest"] == BearerTokenAuthExtension(
        "bearertokenauth/ingest", "s3cret", None, "Bearer")
    assert cfg.extensions["file_storage/queue"] == FileStorageExtension(
        "file_storage/queue", "/var/lib/tailsample/queue")
    assert cfg.service_extensions == ("health_check", "bearertokenauth/ingest", "file_storage/queue")

    (pipe,) = cfg.traces_pipelines
    assert pipe.id == "traces"
    assert pipe.receivers == ("otlp",)
    assert pipe.processors == ("memory_limiter", "tail_sampling", "batch")
    assert pipe.exporters == ("otlp", "otlphttp/archive", "file", "debug")
    assert pipe.tail_sampling == "tail_sampling"
    assert cfg.metrics == MetricsTelemetry("detailed", (HostPort("0.0.0.0", 8889),))


def test_env_default_is_overridden_by_the_variable() -> None:
    """Scenario: `${env:VAR:-default}` with VAR set. Guarantees: the variable wins over the default."""
    cfg = ServiceConfig.from_yaml(FULL, env={**ENV, "OTLP_GRPC_ENDPOINT": "10.0.0.5:14317"})
    grpc = cfg.receivers["otlp"].grpc
    assert grpc is not None and grpc.endpoint == HostPort("10.0.0.5", 14317)


def test_the_model_is_frozen() -> None:
    """Scenario: assigning to a loaded value. Guarantees: dataclasses are frozen and mappings read-only."""
    cfg = ServiceConfig.from_yaml(FULL, env=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.source = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.exporters["new"] = cfg.exporters["debug"]  # type: ignore[index]


# ---- defaults ----------------------------------------------------------------------------------------------------

def test_every_default() -> None:
    """Scenario: the smallest valid config, with `grpc:` and `http:` empty and exporters without options.
    Guarantees: each default of the collector (loopback endpoints, 4 MiB gRPC, 20 MiB HTTP, metrics on
    127.0.0.1:8888), and for the otlp exporter family every documented default."""
    cfg = ServiceConfig.from_yaml(MINIMAL)
    rec = cfg.receivers["otlp"]
    assert rec.grpc == GrpcServer(HostPort("127.0.0.1", 4317), max_recv_msg_size_mib=4, tls=None, auth=None)
    assert rec.http == HttpServer(HostPort("127.0.0.1", 4318), max_request_body_size=20 * 1024 * 1024)
    assert cfg.exporters["debug"] == DebugExporterSettings("debug", "basic")
    assert cfg.metrics == MetricsTelemetry("normal", (HostPort("127.0.0.1", 8888),))
    assert cfg.service_extensions == ()
    assert dict(cfg.extensions) == {}

    data = minimal()
    data["processors"].update({"batch": None, "memory_limiter": {"check_interval": "1s", "limit_percentage": 80}})
    data["exporters"].update({"otlp": {"endpoint": "b:4317"}, "otlp_http": {"endpoint": "http://b:4318"},
                              "file": {"path": "out.jsonl"}})
    data["extensions"] = {"health_check": None, "file_storage/q": {"directory": "/q"}}
    cfg = ServiceConfig.from_dict(data)
    assert cfg.processors["batch"] == BatchProcessor("batch", timeout=0.2, send_batch_size=8192, send_batch_max_size=0)
    assert cfg.processors["memory_limiter"] == MemoryLimiterProcessor("memory_limiter", 1.0, 0, 0, 80, 0)
    otlp = cfg.exporters["otlp"]
    assert isinstance(otlp, OtlpExporterSettings)
    assert (otlp.protocol, dict(otlp.headers), otlp.compression, otlp.timeout) == ("grpc", {}, "gzip", 5.0)
    assert otlp.tls == ClientTLS(insecure=False, ca_file=None, cert_file=None, key_file=None)
    assert otlp.retry_on_failure == RetrySettings(enabled=True, initial_interval=5.0, randomization_factor=0.5,
                                                  multiplier=1.5, max_interval=30.0, max_elapsed_time=300.0)
    assert otlp.sending_queue == QueueSettings(enabled=True, num_consumers=10, queue_size=1000, storage=None)
    http = cfg.exporters["otlp_http"]
    assert isinstance(http, OtlpExporterSettings) and http.protocol == "http" and http.timeout == 5.0
    assert cfg.exporters["file"] == FileExporterSettings("file", "out.jsonl", "json")
    assert cfg.extensions["health_check"] == HealthCheckExtension("health_check", HostPort("127.0.0.1", 13133))


def test_memory_limiter_spike_defaults_to_a_fifth_of_the_limit() -> None:
    """Scenario: limit_mib without spike_limit_mib. Guarantees: spike is 20 % of the limit, as the collector."""
    data = minimal()
    data["processors"]["memory_limiter"] = {"check_interval": "5s", "limit_mib": 1000}
    assert ServiceConfig.from_dict(data).processors["memory_limiter"] == MemoryLimiterProcessor(
        "memory_limiter", 5.0, 1000, 200, 0, 0)


def test_named_components_and_pipelines() -> None:
    """Scenario: `otlp/<name>`, `tail_sampling/<name>`, `otlp_grpc/<name>`, `traces/<name>`, and the address form
    of telemetry metrics. Guarantees: ids kept whole, each pipeline's tail_sampling processor found."""
    data = minimal()
    data["receivers"] = {"otlp/in": {"protocols": {"http": {"endpoint": "[::1]:0"}}}}
    data["processors"]["tail_sampling/slow"] = {"policies": [{"name": "slow", "type": "latency",
                                                              "latency": {"threshold_ms": 500}}]}
    data["exporters"]["otlp_grpc/b"] = {"endpoint": "b:4317", "tls": {"insecure": True}}
    data["service"] = {
        "pipelines": {
            "traces": {"receivers": ["otlp/in"], "processors": ["tail_sampling"], "exporters": ["debug"]},
            "traces/slow": {"receivers": ["otlp/in"], "processors": ["tail_sampling/slow"],
                            "exporters": ["otlp_grpc/b"]},
        },
        "telemetry": {"metrics": {"address": "0.0.0.0:9999", "level": "basic"}},
    }
    cfg = ServiceConfig.from_dict(data)
    rec = cfg.receivers["otlp/in"]
    assert rec.grpc is None
    assert rec.http is not None and rec.http.endpoint == HostPort("::1", 0) and str(rec.http.endpoint) == "[::1]:0"
    assert [p.tail_sampling for p in cfg.traces_pipelines] == ["tail_sampling", "tail_sampling/slow"]
    ts = cfg.processors["tail_sampling/slow"]
    assert isinstance(ts, TailSamplingProcessor) and ts.config.policy_names == ["slow"]
    exp = cfg.exporters["otlp_grpc/b"]
    assert isinstance(exp, OtlpExporterSettings) and exp.tls.insecure
    assert cfg.metrics == MetricsTelemetry("basic", (HostPort("0.0.0.0", 9999),))


# ---- env substitution --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "env", "expected"), [
    ("${env:X}", {"X": "v"}, "v"),
    ("${X}", {"X": "v"}, "v"),
    ("a-${env:X}-b", {"X": "v"}, "a-v-b"),
    ("${env:X:-dflt}", {}, "dflt"),
    ("${env:X:-}", {}, ""),
    ("${env:X:-dflt}", {"X": "set"}, "set"),
    ("$${env:X}", {}, "${env:X}"),
    ("cost $$5", {}, "cost $5"),
    ("${env:A}${env:B}", {"A": "1", "B": "2"}, "12"),
])
def test_env_substitution_in_strings(written: str, env: dict[str, str], expected: str) -> None:
    """Scenario: a reference in a string value (here a header). Guarantees: replaced as the collector's confmap."""
    data = minimal()
    data["exporters"]["otlp"] = {"endpoint": "b:4317", "headers": {"h": written}}
    exp = ServiceConfig.from_dict(data, env=env).exporters["otlp"]
    assert isinstance(exp, OtlpExporterSettings) and exp.headers["h"] == expected


def test_a_whole_value_reference_takes_its_yaml_type() -> None:
    """Scenario: `send_batch_size: ${env:N}` and `enabled: ${env:ON}`. Guarantees: integer and boolean, as confmap."""
    data = minimal()
    data["processors"]["batch"] = {"send_batch_size": "${env:N}"}
    data["exporters"]["otlp"] = {"endpoint": "b:4317", "retry_on_failure": {"enabled": "${env:ON}"}}
    cfg = ServiceConfig.from_dict(data, env={"N": "512", "ON": "false"})
    assert cfg.processors["batch"] == BatchProcessor("batch", send_batch_size=512)
    exp = cfg.exporters["otlp"]
    assert isinstance(exp, OtlpExporterSettings) and exp.retry_on_failure.enabled is False


def test_env_substitution_reaches_the_tail_sampling_block() -> None:
    """Scenario: a policy value from the environment. Guarantees: substituted before the core validates it."""
    data = minimal()
    data["processors"]["tail_sampling"] = {"decision_wait": "${env:WAIT}", "policies": [
        {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": "${env:PCT}"}}]}
    ts = ServiceConfig.from_dict(data, env={"WAIT": "3s", "PCT": "5"}).processors["tail_sampling"]
    assert isinstance(ts, TailSamplingProcessor) and ts.config.decision_wait == 3.0


def test_os_environ_is_the_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario: no env= given. Guarantees: os.environ is read."""
    monkeypatch.setenv("TS_TEST_TOKEN", "from-os")
    data = minimal()
    data["extensions"] = {"bearertokenauth": {"token": "${env:TS_TEST_TOKEN}"}}
    ext = ServiceConfig.from_dict(data).extensions["bearertokenauth"]
    assert isinstance(ext, BearerTokenAuthExtension) and ext.token == "from-os"


# ---- durations ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("0", 0.0), ("1.5s", 1.5), ("250us", 250e-6),
    ("100ns", 100e-9), ("2h45m", 9900.0), (".5s", 0.5),
])
def test_go_durations(text: str, seconds: float) -> None:
    """Scenario: Go duration strings. Guarantees: float seconds, as time.ParseDuration."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "1d", "1.s.", "5 s", "1m30", "."])
def test_bad_go_durations(text: str) -> None:
    """Scenario: strings Go's ParseDuration rejects. Guarantees: ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)


# ---- errors ------------------------------------------------------------------------------------------------------

def _set(path: str, value: Any) -> dict[str, Any]:
    """The minimal config with `value` at the dotted `path` (created as needed); `...` deletes the key."""
    data = minimal()
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        if node.get(k) is None:
            node[k] = {}
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


OTLP_EXP = {"endpoint": "b:4317"}

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, config, the error's path, a fragment of its message)
    ("unknown top-level key", _set("pipelines", {}), "pipelines", "known keys here: connectors, exporters"),
    ("connectors", _set("connectors", {"forward": None}), "connectors", "not supported"),
    ("no receivers", _set("receivers", {}), "receivers", "is required"),
    ("no exporters", _set("exporters", ...), "exporters", "is required"),
    ("no service", _set("service", ...), "service", "is required"),
    ("receiver type", _set("receivers.zipkin", {}), "receivers.zipkin", "supports: kafka, otlp"),
    ("bad component id", _set("receivers.otlp/", {}), "receivers.otlp/", "invalid component id"),
    ("receiver unknown key", _set("receivers.otlp.protocols.grpc", {"endpont": "x:1"}),
     "receivers.otlp.protocols.grpc.endpont",
     "known keys here: auth, endpoint, keepalive, max_concurrent_streams, max_connections, max_recv_msg_size_mib, "
     "tls, transport"),
    ("receiver without protocols", _set("receivers.otlp", {"protocols": {}}), "receivers.otlp.protocols",
     "at least one of grpc, http"),
    ("unknown protocol", _set("receivers.otlp.protocols.thrift", None), "receivers.otlp.protocols.thrift",
     "known keys here: grpc, http"),
    ("port too big", _set("receivers.otlp.protocols.grpc", {"endpoint": "0.0.0.0:70000"}),
     "receivers.otlp.protocols.grpc.endpoint", "invalid port '70000'"),
    ("port not a number", _set("receivers.otlp.protocols.http", {"endpoint": "localhost:http"}),
     "receivers.otlp.protocols.http.endpoint", "invalid port 'http'"),
    ("no port", _set("receivers.otlp.protocols.http", {"endpoint": "localhost"}),
     "receivers.otlp.protocols.http.endpoint", "expected host:port"),
    ("bare ipv6", _set("receivers.otlp.protocols.http", {"endpoint": "::1:4318"}),
     "receivers.otlp.protocols.http.endpoint", "in brackets"),
    ("endpoint not a string", _set("receivers.otlp.protocols.grpc", {"endpoint": 4317}),
     "receivers.otlp.protocols.grpc.endpoint", "expected host:port, got an integer"),
    ("body size a string", _set("receivers.otlp.protocols.http", {"max_request_body_size": "20MiB"}),
     "receivers.otlp.protocols.http.max_request_body_size", "expected an integer"),
    ("tls without key", _set("receivers.otlp.protocols.grpc", {"tls": {"cert_file": "c"}}),
     "receivers.otlp.protocols.grpc.tls.key_file", "is required"),
    ("auth not defined", _set("receivers.otlp.protocols.grpc", {"auth": {"authenticator": "bearertokenauth/x"}}),
     "receivers.otlp.protocols.grpc.auth.authenticator", "'bearertokenauth/x' is not defined in extensions"),
    ("auth without authenticator", _set("receivers.otlp.protocols.http", {"auth": {}}),
     "receivers.otlp.protocols.http.auth.authenticator", "is required"),
    ("processor type", _set("processors.filter", {}), "processors.filter",
     "supports: batch, memory_limiter, tail_sampling"),
    ("tail_sampling error prefixed", _set("processors.tail_sampling.policies", [
        {"name": "p", "type": "latency", "latency": {"threshold_ms": "1s"}}]),
     "processors.tail_sampling.policies[0].latency.threshold_ms", "expected an integer"),
    ("tail_sampling without policies", _set("processors.tail_sampling", None), "processors.tail_sampling.policies",
     ""),
    ("batch unknown key", _set("processors.batch", {"metadata_keys": ["a"]}), "processors.batch.metadata_keys",
     "known keys here: send_batch_max_size, send_batch_size, timeout"),
    ("batch duration", _set("processors.batch", {"timeout": "5 seconds"}), "processors.batch.timeout",
     "invalid duration"),
    ("batch duration a number", _set("processors.batch", {"timeout": 5}), "processors.batch.timeout",
     "expected a duration such as"),
    ("batch max below size", _set("processors.batch", {"send_batch_size": 100, "send_batch_max_size": 10}),
     "processors.batch.send_batch_max_size", "at least send_batch_size"),
    ("memory_limiter no interval", _set("processors.memory_limiter", {"limit_mib": 100}),
     "processors.memory_limiter.check_interval", "is required"),
    ("memory_limiter no limit", _set("processors.memory_limiter", {"check_interval": "1s"}),
     "processors.memory_limiter", "limit_mib or limit_percentage"),
    ("memory_limiter spike", _set("processors.memory_limiter", {"check_interval": "1s", "limit_mib": 100,
                                                                "spike_limit_mib": 100}),
     "processors.memory_limiter.spike_limit_mib", "less than limit_mib"),
    ("exporter type", _set("exporters.zipkin", {}), "exporters.zipkin",
     "supports: debug, file, kafka, otlp, otlp_grpc, otlp_http, otlphttp"),
    ("otlphttp endpoint required", _set("exporters.otlphttp", {}), "exporters.otlphttp.endpoint", "is required"),
    ("otlp endpoint required", _set("exporters.otlp", None), "exporters.otlp.endpoint", "is required"),
    ("otlphttp endpoint not a URL", _set("exporters.otlphttp", {"endpoint": "b:4318"}),
     "exporters.otlphttp.endpoint", "http:// or https://"),
    ("compression", _set("exporters.otlp", {**OTLP_EXP, "compression": "zstd"}), "exporters.otlp.compression",
     "supported: gzip, none"),
    ("header not a string", _set("exporters.otlp", {**OTLP_EXP, "headers": {"n": 1}}), "exporters.otlp.headers.n",
     "expected a string"),
    ("timeout", _set("exporters.otlp", {**OTLP_EXP, "timeout": "5x"}), "exporters.otlp.timeout", "invalid duration"),
    ("tls unknown key", _set("exporters.otlp", {**OTLP_EXP, "tls": {"insecure_skip": True}}),
     "exporters.otlp.tls.insecure_skip", "known keys here: ca_file, cert_file, insecure, key_file"),
    ("tls insecure not bool", _set("exporters.otlp", {**OTLP_EXP, "tls": {"insecure": "yes"}}),
     "exporters.otlp.tls.insecure", "expected true or false"),
    ("client cert without key", _set("exporters.otlp", {**OTLP_EXP, "tls": {"cert_file": "c"}}),
     "exporters.otlp.tls.key_file", "is required with cert_file"),
    ("retry key", _set("exporters.otlp", {**OTLP_EXP, "retry_on_failure": {"max_retries": 3}}),
     "exporters.otlp.retry_on_failure.max_retries", "known keys here: enabled, initial_interval"),
    ("retry interval", _set("exporters.otlp", {**OTLP_EXP, "retry_on_failure": {"max_interval": "forever"}}),
     "exporters.otlp.retry_on_failure.max_interval", "invalid duration"),
    ("randomization factor", _set("exporters.otlp", {**OTLP_EXP, "retry_on_failure": {"randomization_factor": 2}}),
     "exporters.otlp.retry_on_failure.randomization_factor", "between 0 and 1"),
    ("queue consumers", _set("exporters.otlp", {**OTLP_EXP, "sending_queue": {"num_consumers": 0}}),
     "exporters.otlp.sending_queue.num_consumers", "at least 1"),
    ("queue storage undefined", _set("exporters.otlp", {**OTLP_EXP, "sending_queue": {"storage": "file_storage/q"}}),
     "exporters.otlp.sending_queue.storage", "'file_storage/q' is not defined in extensions"),
    ("file path required", _set("exporters.file", {"format": "json"}), "exporters.file.path", "is required"),
    ("file format", _set("exporters.file", {"path": "p", "format": "csv"}), "exporters.file.format",
     "supported: json, proto"),
    ("file zstd", _set("exporters.file", {"path": "p", "compression": "zstd"}), "exporters.file.compression",
     "'zstd' is not supported by tailsample serve yet"),
    ("file rotation", _set("exporters.file", {"path": "p", "rotation": {}}), "exporters.file.rotation",
     "file rotation is not supported"),
    ("grpc transport", _set("receivers.otlp.protocols.grpc", {"transport": "unix"}),
     "receivers.otlp.protocols.grpc.transport", "listens on tcp"),
    ("http traces_url_path", _set("receivers.otlp.protocols.http", {"traces_url_path": "v1"}),
     "receivers.otlp.protocols.http.traces_url_path", "must start with /"),
    ("http compression_algorithms", _set("receivers.otlp.protocols.http", {"compression_algorithms": ["zstd"]}),
     "receivers.otlp.protocols.http.compression_algorithms[0]", "'zstd' is not supported"),
    ("otlphttp json encoding", _set("exporters.otlphttp", {"endpoint": "http://x", "encoding": "json"}),
     "exporters.otlphttp.encoding", "exports protobuf"),
    ("debug verbosity", _set("exporters.debug", {"verbosity": "loud"}), "exporters.debug.verbosity",
     "supported: basic, normal, detailed"),
    ("extension type", _set("extensions.pprof", {}), "extensions.pprof",
     "supports: bearertokenauth, file_storage, health_check"),
    ("health_check endpoint", _set("extensions.health_check", {"endpoint": "0.0.0.0:-1"}),
     "extensions.health_check.endpoint", "invalid port"),
    ("bearertokenauth empty", _set("extensions.bearertokenauth/a", {}), "extensions.bearertokenauth/a",
     "one of token or filename"),
    ("bearertokenauth both", _set("extensions.bearertokenauth/a", {"token": "t", "filename": "f"}),
     "extensions.bearertokenauth/a", "exclusive"),
    ("file_storage directory", _set("extensions.file_storage/q", {}), "extensions.file_storage/q.directory",
     "is required"),
    ("service unknown key", _set("service.pipeline", {}), "service.pipeline",
     "known keys here: extensions, pipelines, telemetry"),
    ("service extension undefined", _set("service.extensions", ["health_check"]), "service.extensions[0]",
     "'health_check' is not defined in extensions"),
    ("no pipelines", _set("service.pipelines", {}), "service.pipelines", "define a traces pipeline"),
    ("metrics pipeline", _set("service.pipelines.metrics", {"receivers": ["otlp"], "exporters": ["debug"]}),
     "service.pipelines.metrics", "traces pipelines only"),
    ("logs pipeline", _set("service.pipelines.logs/x", {}), "service.pipelines.logs/x", "traces pipelines only"),
    ("pipeline unknown key", _set("service.pipelines.traces.connectors", []),
     "service.pipelines.traces.connectors", "known keys here: exporters, processors, receivers"),
    ("undefined exporter", _set("service.pipelines.traces.exporters", ["debug", "otlp/missing"]),
     "service.pipelines.traces.exporters[1]", "'otlp/missing' is not defined in exporters"),
    ("undefined receiver", _set("service.pipelines.traces.receivers", ["zipkin"]),
     "service.pipelines.traces.receivers[0]", "'zipkin' is not defined in receivers"),
    ("undefined processor", _set("service.pipelines.traces.processors", ["tail_sampling", "batch"]),
     "service.pipelines.traces.processors[1]", "'batch' is not defined in processors"),
    ("listed twice", _set("service.pipelines.traces.exporters", ["debug", "debug"]),
     "service.pipelines.traces.exporters[1]", "listed twice"),
    ("not a list", _set("service.pipelines.traces.exporters", "debug"), "service.pipelines.traces.exporters",
     "expected a list"),
    ("no exporters in pipeline", _set("service.pipelines.traces.exporters", []),
     "service.pipelines.traces.exporters", "at least one exporter"),
    ("no tail_sampling in pipeline", _set("service.pipelines.traces.processors", []),
     "service.pipelines.traces.processors", "exactly one tail_sampling processor per pipeline, got none"),
    ("metrics both forms", _set("service.telemetry.metrics", {"address": ":8888", "readers": []}),
     "service.telemetry.metrics", "not both"),
    ("metrics periodic reader", _set("service.telemetry.metrics", {"readers": [{"periodic": {}}]}),
     "service.telemetry.metrics.readers[0].periodic", "only pull readers"),
    ("metrics prometheus port", _set("service.telemetry.metrics", {"readers": [
        {"pull": {"exporter": {"prometheus": {"host": "0.0.0.0"}}}}]}),
     "service.telemetry.metrics.readers[0].pull.exporter.prometheus.port", "is required"),
    ("metrics otlp exporter", _set("service.telemetry.metrics", {"readers": [{"pull": {"exporter": {"otlp": {}}}}]}),
     "service.telemetry.metrics.readers[0].pull.exporter.otlp", "known keys here: prometheus"),
    ("metrics address", _set("service.telemetry.metrics", {"address": "localhost"}),
     "service.telemetry.metrics.address", "expected host:port"),
    ("telemetry logs", _set("service.telemetry.logs", {}), "service.telemetry.logs", "known keys here: metrics"),
    ("env unset", _set("exporters.otlp", {"endpoint": "${env:NOPE}"}), "exporters.otlp.endpoint",
     "the environment variable NOPE is not set"),
    ("env bad name", _set("exporters.otlp", {"endpoint": "${env:1X}"}), "exporters.otlp.endpoint",
     "invalid environment variable name"),
    ("env other provider", _set("exporters.otlp", {"endpoint": "${file:/etc/x}"}), "exporters.otlp.endpoint",
     "unsupported configuration provider 'file'"),
]


@pytest.mark.parametrize(("config", "path", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_configs_name_the_path(config: dict[str, Any], path: str, fragment: str) -> None:
    """Scenario: one wrong value in an otherwise valid config. Guarantees: a ConfigError whose `.path` is exactly
    the YAML path of that value, whose message starts with the source and the path, and says what is wrong."""
    err = load_error(config)
    assert err.path == path
    assert str(err).startswith(f"<dict>: {path}: "), str(err)
    assert fragment in str(err), str(err)


def test_two_tail_sampling_processors_in_one_pipeline() -> None:
    """Scenario: a pipeline listing two tail_sampling processors. Guarantees: the error names both."""
    data = _set("processors.tail_sampling/b", {"policies": [{"name": "a", "type": "always_sample"}]})
    data["service"]["pipelines"]["traces"]["processors"] = ["tail_sampling", "tail_sampling/b"]
    err = load_error(data)
    assert err.path == "service.pipelines.traces.processors"
    assert "got 2 (tail_sampling, tail_sampling/b)" in str(err)


def test_authenticator_must_be_started_and_of_the_right_type() -> None:
    """Scenario: an authenticator defined but not in service.extensions; then one that is not a bearertokenauth.
    Guarantees: each is an error at the authenticator's path."""
    data = _set("extensions.bearertokenauth", {"token": "t"})
    data["receivers"]["otlp"]["protocols"]["grpc"] = {"auth": {"authenticator": "bearertokenauth"}}
    err = load_error(data)
    assert err.path == "receivers.otlp.protocols.grpc.auth.authenticator"
    assert "not listed in service.extensions" in str(err)
    data["extensions"]["health_check"] = None
    data["service"]["extensions"] = ["health_check", "bearertokenauth"]
    data["receivers"]["otlp"]["protocols"]["grpc"]["auth"]["authenticator"] = "health_check"
    assert "is not a bearertokenauth extension" in str(load_error(data))


def test_errors_from_yaml_carry_the_line() -> None:
    """Scenario: errors in YAML text, inside and outside the tail_sampling block.
    Guarantees: the source, the path, and the line of the offending value (or of its parent when missing)."""
    text = FULL.replace("endpoint: https://archive.example.com", "endpoint: archive.example.com")
    err = load_error(text, env=ENV)
    line = FULL.splitlines().index("    endpoint: https://archive.example.com") + 1
    assert str(err) == (f"otel.yaml: exporters.otlphttp/archive.endpoint: 'archive.example.com': expected an "
                        f"http:// or https:// URL (line {line})")

    text = FULL.replace("threshold_ms: 1000", "threshold_ms: 1s")
    err = load_error(text, env=ENV)
    assert err.path == "processors.tail_sampling.policies[1].latency.threshold_ms"
    line = FULL.splitlines().index("        latency: {threshold_ms: 1000}") + 1
    assert str(err).startswith("otel.yaml: processors.tail_sampling.policies[1].latency.threshold_ms: ")
    assert str(err).endswith(f"(line {line})")

    text = y("""
        receivers:
          otlp:
            protocols: {grpc: }
        exporters:
          otlphttp: {}
        """)
    err = load_error(text)
    assert str(err) == "otel.yaml: exporters.otlphttp.endpoint: is required (line 5)"


def test_unset_env_variable_from_yaml() -> None:
    """Scenario: the full config without its environment. Guarantees: the first unset variable is named."""
    err = load_error(FULL, env={})
    assert err.path == "extensions.bearertokenauth/ingest.token"
    assert "INGEST_TOKEN is not set" in str(err)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "the configuration is empty"),
    ("- a\n- b\n", "expected a mapping at the top level, got a list"),
    ("receivers: [\n", "invalid YAML"),
])
def test_not_a_configuration(text: str, fragment: str) -> None:
    """Scenario: empty text, a list, broken YAML. Guarantees: a ConfigError saying so."""
    assert fragment in str(load_error(text))


def test_unreadable_file(tmp_path: Path) -> None:
    """Scenario: a path that does not exist. Guarantees: a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        ServiceConfig.from_file(tmp_path / "missing.yaml")


def test_collector_tuning_keys_are_accepted_and_reported_as_ignored() -> None:
    cfg = _set("receivers.otlp.protocols.grpc", {"keepalive": {"server_parameters": {"time": "10s"}},
                                                 "include_metadata": True, "max_concurrent_streams": 16})
    cfg["receivers"]["otlp"]["protocols"]["http"] = {"cors": {"allowed_origins": ["*"]}, "traces_url_path": "/t",
                                                     "response_headers": {"X-A": "b"},
                                                     "compression_algorithms": ["gzip"]}
    cfg["exporters"]["debug/x"] = {"sampling_initial": 5}
    cfg["service"]["pipelines"]["traces"]["exporters"].append("debug/x")
    loaded = ServiceConfig.from_dict(cfg)
    assert loaded.ignored == (
        "receivers.otlp.protocols.grpc.include_metadata: accepted and ignored (request metadata is not propagated)",
        "receivers.otlp.protocols.http.cors: accepted and ignored (no browser clients: CORS headers are not sent)",
        "exporters.debug/x.sampling_initial: accepted and ignored (every batch is printed)",
    )
    grpc = loaded.receivers["otlp"].grpc
    http = loaded.receivers["otlp"].http
    assert grpc is not None and grpc.max_concurrent_streams == 16
    assert grpc.keepalive.time == 10.0  # keepalive is honoured since issue 18 (grpcio keepalive options)
    assert http is not None and http.traces_url_path == "/t" and dict(http.response_headers) == {"X-A": "b"}
    assert http.compression_algorithms == ("", "gzip")


def test_connection_limits_parse_with_the_collector_key_names() -> None:
    """Scenario: the confighttp timeouts, configgrpc keepalive and tailsample's max_connections. Guarantees: they
    parse as durations / integers, defaults apply where absent, and a bad value names its path."""
    cfg = _set("receivers.otlp.protocols.grpc", {"max_connections": 7, "keepalive": {
        "server_parameters": {"max_connection_idle": "30s", "max_connection_age": "1m"},
        "enforcement_policy": {"min_time": "5s", "permit_without_stream": True}}})
    cfg["receivers"]["otlp"]["protocols"]["http"] = {"max_connections": 9, "read_header_timeout": "2s",
                                                     "read_timeout": "30s", "idle_timeout": "0s",
                                                     "write_timeout": "5s"}
    loaded = ServiceConfig.from_dict(cfg)
    grpc, http = loaded.receivers["otlp"].grpc, loaded.receivers["otlp"].http
    assert grpc is not None and http is not None
    assert (grpc.max_connections, grpc.keepalive.max_connection_idle, grpc.keepalive.max_connection_age,
            grpc.keepalive.min_time, grpc.keepalive.permit_without_stream) == (7, 30.0, 60.0, 5.0, True)
    assert (http.max_connections, http.read_header_timeout, http.read_timeout, http.idle_timeout) == (9, 2, 30, 0)
    assert any("write_timeout" in line for line in loaded.ignored)
    default = ServiceConfig.from_dict(_set("receivers.otlp.protocols.grpc", {}))
    d_grpc = default.receivers["otlp"].grpc
    assert d_grpc is not None and (d_grpc.max_connections, d_grpc.keepalive.max_connection_idle) == (4096, 300.0)
    bad = _set("receivers.otlp.protocols.grpc", {})
    bad["receivers"]["otlp"]["protocols"]["http"] = {"read_header_timeout": "soon"}
    err = load_error(bad)
    assert err.path == "receivers.otlp.protocols.http.read_header_timeout"
    bad["receivers"]["otlp"]["protocols"]["http"] = {"max_connections": 0}
    assert load_error(bad).path == "receivers.otlp.protocols.http.max_connections"


def test_otlphttp_traces_endpoint_replaces_endpoint() -> None:
    cfg = _set("exporters.otlphttp", {"traces_endpoint": "https://example.test/custom"})
    exp = ServiceConfig.from_dict(cfg).exporters["otlphttp"]
    assert isinstance(exp, OtlpExporterSettings) and exp.traces_endpoint == "https://example.test/custom"


def test_the_bundled_serve_config_loads_and_binds_loopback() -> None:
    from importlib.resources import files

    cfg = ServiceConfig.from_yaml((files("tailsample") / "data" / "serve-config.yaml").read_text())
    rec = cfg.receivers["otlp"]
    assert rec.grpc is not None and rec.http is not None
    assert {rec.grpc.endpoint.host, rec.http.endpoint.host, *(e.host for e in cfg.metrics.endpoints)} == {"127.0.0.1"}
    assert cfg.processors["tail_sampling"].config.policy_names == [  # type: ignore[union-attr]
        "errors-policy", "latency-policy", "forced-sampling-policy", "probabilistic-policy"]


def test_check_config_validates_the_service_part_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tailsample.cli import main

    bad = tmp_path / "otel.yaml"
    bad.write_text(yaml.safe_dump({**minimal(), "exporters": {"zipkin": {}}}))
    assert main(["check-config", str(bad)]) == 2
    assert "unsupported exporter type 'zipkin'" in capsys.readouterr().err


# -- one configuration reader (issue 20): the service part is read by the core's rules ------------------------


def _message(err: ConfigError) -> str:
    """The error without its source and path."""
    return str(err).split(": ", 2)[2]


def _policy(block: dict[str, Any]) -> dict[str, Any]:
    return _set("processors.tail_sampling.policies", [{"name": "p", **block}])


@pytest.mark.parametrize(("service", "block"), [
    (_set("exporters.otlp", {**OTLP_EXP, "tls": {"insecure": "yes"}}),
     _policy({"type": "boolean_attribute", "boolean_attribute": {"key": "k", "value": "yes"}})),
    (_set("processors.batch", {"send_batch_size": "many"}),
     _policy({"type": "latency", "latency": {"threshold_ms": "many"}})),
    (_set("processors.batch", {"timeout": "5 seconds"}),
     _set("processors.tail_sampling.decision_wait", "5 seconds")),
], ids=["boolean", "integer", "duration"])
def test_the_service_part_and_the_tail_sampling_block_read_alike(service: dict[str, Any],
                                                                   block: dict[str, Any]) -> None:
    """Scenario: the same wrong value in the service part and in the tail_sampling block. Guarantees: the same
    words, as one reader (the core's, `config/node.rs`) reads both."""
    assert _message(load_error(service)) == _message(load_error(block))


def test_unknown_keys_read_alike() -> None:
    service = load_error(_set("receivers.otlp.protocols.grpc", {"endpont": "x:1"}))
    block = load_error(_policy({"type": "always_sample", "colour": "red"}))
    for err in (service, block):
        assert _message(err).startswith("unknown key; known keys here: "), str(err)


@pytest.mark.parametrize(("config", "path", "fragment"), [
    (_set("processors.batch", {"timeout": "-1s"}), "processors.batch.timeout",
     'must not be negative, got the string "-1s"'),
    (_set("exporters.file", {"path": ""}), "exporters.file.path", "must not be empty"),
    (_set("exporters.file", {"path": "t.json", "format": "xml"}), "exporters.file.format",
     'unknown value "xml"; supported: json, proto'),
    (_set("service.pipelines.traces.exporters", ["debug", 3]), "service.pipelines.traces.exporters[1]",
     "expected a string, got the number 3"),
], ids=["negative-duration", "empty-string", "choice", "list-item"])
def test_core_rules_with_their_paths(config: dict[str, Any], path: str, fragment: str) -> None:
    err = load_error(config)
    assert err.path == path
    assert fragment in str(err), str(err)


def test_no_second_wording_in_python() -> None:
    """Guarantees: the settings reader has no type checks or wording of its own for the values it reads."""
    source = Path(settings_module.__file__).read_text()
    for words in ("expected a boolean", "expected an integer, got", "expected a Go duration", "must not be negative"):
        assert words not in source, words


@pytest.mark.parametrize(("value", "fragment"), [
    (float("nan"), "expected a finite number, got NaN"),
    (float("inf"), "expected a finite number, got inf"),
    (2**70, "the number 1180591620717411303424 is out of range"),
], ids=["nan", "inf", "huge"])
def test_values_json_cannot_hold_are_errors(value: float, fragment: str) -> None:
    """Scenario: a YAML `.nan`, `.inf` or an integer past 64 bits where a number is read. Guarantees: an error
    naming it (JSON, the core reader's input, cannot hold them: never read as absent)."""
    err = load_error(_set("exporters.otlp", {**OTLP_EXP, "retry_on_failure": {"multiplier": value}}))
    assert err.path == "exporters.otlp.retry_on_failure.multiplier"
    assert fragment in str(err), str(err)


def test_a_yaml_date_says_to_quote_it() -> None:
    """Scenario: `path: 2024-01-31` unquoted, which YAML reads as a date. Guarantees: the error says to quote it."""
    err = load_error(_set("exporters.file", {"path": datetime.date(2024, 1, 31)}))
    assert err.path == "exporters.file.path"
    assert "quote it to make it a string" in str(err), str(err)
