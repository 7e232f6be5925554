"""The OpenTelemetry Collector configuration that `tailsample serve --config FILE` reads: a typed, validated model.

The file is the collector's own format (`receivers`, `processors`, `exporters`, `extensions`, `service`), restricted
to what serve implements: OTLP in, `tail_sampling` (plus `batch` and `memory_limiter`), OTLP / file / debug out,
traces pipelines only. Like the collector, unknown keys are errors. Every error is a `ConfigError` naming the YAML
path of the value and, when the YAML is at hand, its line:
`otel.yaml: exporters.otlphttp.endpoint: is required (line 12)`.

`${env:VAR}`, `${VAR}` and `${env:VAR:-default}` in string values are replaced first, as the collector's confmap
does (`$$` is a literal `$`); a value that is one reference and nothing else takes the YAML type of what it
expands to (`port: ${env:PORT}` is an integer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn, cast

import yaml

from tailsample import _native
from tailsample.config import Config, _type_name, parse_yaml, read_config_text
from tailsample.errors import ConfigError
from tailsample.storage import DEFAULT_MAX_SIZE, DEFAULT_SEGMENT_SIZE, SYNC_POLICIES, FileStorage, SyncPolicy

MiB = 1024 * 1024

RECEIVER_TYPES = ("kafka", "otlp")
PROCESSOR_TYPES = ("batch", "memory_limiter", "tail_sampling")
EXPORTER_TYPES = ("debug", "file", "kafka", "otlp", "otlp_grpc", "otlp_http", "otlphttp")
EXTENSION_TYPES = ("bearertokenauth", "file_storage", "health_check", "tailsample_debug")

_ID = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:/(.+))?$")
_REF = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- the model -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostPort:
    """A listening address. `host` is "" for every interface (":4317")."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class GrpcKeepalive:
    """`keepalive` of a gRPC server, as the collector's configgrpc spells it (seconds; 0: grpcio's default)."""

    max_connection_idle: float = 300.0  # an HTTP/2 connection with no call for this long gets a GOAWAY
    max_connection_age: float = 0.0
    max_connection_age_grace: float = 0.0
    time: float = 0.0
    timeout: float = 0.0
    min_time: float = 0.0  # enforcement_policy: pings more often than this without data close the connection
    permit_without_stream: bool = False


@dataclass(frozen=True)
class GrpcServer:
    endpoint: HostPort
    max_recv_msg_size_mib: int = 4
    tls: ServerTLS | None = None
    auth: str | None = None  # a bearertokenauth extension id
    max_concurrent_streams: int = 0  # 0: the server's default (200 calls per connection)
    max_connections: int = 4096  # grpc.max_allowed_incoming_connections; lowered to fit the descriptor limit
    keepalive: GrpcKeepalive = field(default_factory=GrpcKeepalive)


@dataclass(frozen=True)
class HttpServer:
    endpoint: HostPort
    max_request_body_size: int = 20 * MiB
    tls: ServerTLS | None = None
    auth: str | None = None
    traces_url_path: str = "/v1/traces"
    response_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    compression_algorithms: tuple[str, ...] = ("", "gzip", "deflate", "zlib")  # what request bodies may use
    max_connections: int = 4096  # lowered at start to fit the descriptor limit
    read_header_timeout: float = 10.0  # seconds; 0: read_timeout
    read_timeout: float = 60.0  # the whole request, headers and body; 0: none
    idle_timeout: float = 60.0  # between requests on a kept-alive connection; 0: read_timeout


@dataclass(frozen=True)
class OtlpReceiverSettings:
    id: str
    grpc: GrpcServer | None
    http: HttpServer | None


@dataclass(frozen=True)
class KafkaReceiverSettings:
    """`receivers.kafka`: a consumer group member. Offsets are committed after decision (see
    `tailsample.receivers.kafka_receiver`), not on a timer, so `autocommit` and `message_marking` are accepted and
    ignored."""

    id: str
    client: KafkaClient
    topic: str = "otlp_spans"
    group_id: str = "otel-collector"
    initial_offset: Literal["latest", "earliest"] = "latest"
    session_timeout: float = 10.0
    heartbeat_interval: float = 3.0
    rebalance_strategy: str = "cooperative-sticky"
    # tailsample: messages consumed and not yet committable, at most; past it the partitions are paused
    max_uncommitted_messages: int = 1_000_000


ReceiverSettings = OtlpReceiverSettings | KafkaReceiverSettings


@dataclass(frozen=True)
class TailSamplingProcessor:
    id: str
    config: Config


@dataclass(frozen=True)
class BatchProcessor:
    id: str
    timeout: float = 0.2
    send_batch_size: int = 8192
    send_batch_max_size: int = 0  # 0: no upper bound


@dataclass(frozen=True)
class MemoryLimiterProcessor:
    id: str
    check_interval: float
    limit_mib: int = 0
    spike_limit_mib: int = 0  # 0 with limit_mib set: 20 % of limit_mib, as the collector
    limit_percentage: int = 0
    spike_limit_percentage: int = 0


Processor = TailSamplingProcessor | BatchProcessor | MemoryLimiterProcessor


@dataclass(frozen=True)
class ClientTLS:
    insecure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class RetrySettings:
    enabled: bool = True
    initial_interval: float = 5.0
    randomization_factor: float = 0.5
    multiplier: float = 1.5
    max_interval: float = 30.0
    max_elapsed_time: float = 300.0


@dataclass(frozen=True)
class QueueSettings:
    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    storage: str | None = None  # a file_storage extension id


@dataclass(frozen=True)
class OtlpExporterSettings:
    id: str
    protocol: Literal["grpc", "http"]
    endpoint: str
    headers: Mapping[str, str]
    compression: Literal["gzip", "none"] = "gzip"
    timeout: float = 5.0
    tls: ClientTLS = ClientTLS()
    retry_on_failure: RetrySettings = RetrySettings()
    sending_queue: QueueSettings = QueueSettings()
    traces_endpoint: str | None = None  # otlphttp: the full URL, instead of endpoint + /v1/traces


@dataclass(frozen=True)
class FileExporterSettings:
    id: str
    path: str
    format: Literal["json", "proto"] = "json"
    append: bool = False  # as the collector: without append the file is truncated at start


@dataclass(frozen=True)
class KafkaClient:
    """What the Kafka receiver and exporter share: where the brokers are and how to authenticate (the
    collector's `brokers`, `client_id` and `auth`), mapped onto librdkafka's settings by
    `tailsample.collector.kafka`."""

    brokers: tuple[str, ...] = ("localhost:9092",)
    client_id: str = "otel-collector"
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = None
    tls: ClientTLS | None = None  # auth.tls: TLS on (insecure: skip verification)


@dataclass(frozen=True)
class KafkaExporterSettings:
    id: str
    client: KafkaClient
    topic: str = "otlp_spans"
    partition_traces_by_id: bool = False
    timeout: float = 5.0
    max_message_bytes: int = 1_000_000
    required_acks: int = 1  # 0 none, 1 leader, -1 all
    compression: str = "none"
    retry_on_failure: RetrySettings = RetrySettings()
    sending_queue: QueueSettings = QueueSettings()


@dataclass(frozen=True)
class DebugExporterSettings:
    id: str
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


ExporterSettings = OtlpExporterSettings | FileExporterSettings | DebugExporterSettings | KafkaExporterSettings


@dataclass(frozen=True)
class HealthCheckExtension:
    id: str
    endpoint: HostPort


@dataclass(frozen=True)
class BearerTokenAuthExtension:
    id: str
    token: str | None
    filename: str | None
    scheme: str = "Bearer"


@dataclass(frozen=True)
class FileStorageExtension:
    """`file_storage`: the collector's keys (directory, create_directory, directory_permissions, fsync; timeout,
    compaction and recreate accepted and ignored) and tailsample's under `tailsample:` (max_size_mib,
    segment_size_mib, sync). `fsync: true` means `sync: payload`."""

    id: str
    directory: str
    create_directory: bool = False
    directory_permissions: int = 0o750
    max_size_mib: int = DEFAULT_MAX_SIZE >> 20
    segment_size_mib: int = DEFAULT_SEGMENT_SIZE >> 20
    sync: SyncPolicy = "none"

    def open(self) -> FileStorage:
        """The storage, its directory checked (or created with `create_directory`)."""
        path = Path(self.directory)
        if not path.is_dir():
            if path.exists():
                raise ConfigError(f"extensions.{self.id}.directory: {self.directory} is not a directory",
                                  path=f"extensions.{self.id}.directory")
            if not self.create_directory:
                raise ConfigError(f"extensions.{self.id}.directory: {self.directory} does not exist; create it or "
                                  "set create_directory: true", path=f"extensions.{self.id}.directory")
            path.mkdir(mode=self.directory_permissions, parents=True)
        return FileStorage(path, self.max_size_mib << 20, self.segment_size_mib << 20, self.sync)


@dataclass(frozen=True)
class DebugEndpointsExtension:
    """`tailsample_debug`: turns on the `/debug/*` endpoints of the telemetry metrics address (explain, gaps, the
    attribute sample, the recently kept traces: span contents). Off unless defined and listed in
    `service.extensions`, as the collector's `zpages` and `pprof`."""

    id: str
    auth: str | None = None  # a bearertokenauth extension id
    max_page_size: int = 100  # `/debug/kept?limit` at most this
    requests_per_second: float = 10.0  # every /debug path together, a token bucket
    burst: int = 20
    # raw OTLP requests as received, per pipeline, for `simulate --url` (0: off); memory up to this per pipeline
    recent_traffic_bytes: int = 64 << 20


Extension = HealthCheckExtension | BearerTokenAuthExtension | FileStorageExtension | DebugEndpointsExtension


@dataclass(frozen=True)
class Pipeline:
    id: str
    receivers: tuple[str, ...]
    processors: tuple[str, ...]
    exporters: tuple[str, ...]
    tail_sampling: str  # the id of its one tail_sampling processor


@dataclass(frozen=True)
class MetricsTelemetry:
    """The collector's own metrics: `address` (the older form) or `readers: [{pull: {exporter: {prometheus}}}]`."""

    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    endpoints: tuple[HostPort, ...] = (HostPort("127.0.0.1", 8888),)


@dataclass(frozen=True)
class ServiceConfig:
    """A validated collector configuration for `tailsample serve`."""

    receivers: Mapping[str, ReceiverSettings]
    processors: Mapping[str, Processor]
    exporters: Mapping[str, ExporterSettings]
    extensions: Mapping[str, Extension]
    pipelines: Mapping[str, Pipeline]
    service_extensions: tuple[str, ...]
    metrics: MetricsTelemetry
    source: str = "<dict>"
    # collector settings accepted without an effect here, one line each (`serve` logs them as warnings)
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_file(cls, path: str | Path, *, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Load a collector YAML file. `env` replaces `os.environ` for `${env:VAR}` substitution."""
        return cls.from_yaml(read_config_text(path), source=str(path), env=env)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<yaml>", env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Load collector YAML text."""
        data, lines = parse_yaml(text, source)
        return _build(data, _Ctx(source, lines), env)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Load an already-parsed collector configuration."""
        return _build(mapping, _Ctx("<dict>", {}), env)

    @property
    def debug_endpoints(self) -> DebugEndpointsExtension | None:
        """The `tailsample_debug` extension the service starts (None: the `/debug/*` endpoints are off)."""
        for xid in self.service_extensions:
            ext = self.extensions[xid]
            if isinstance(ext, DebugEndpointsExtension):
                return ext
        return None

    @property
    def traces_pipelines(self) -> list[Pipeline]:
        return list(self.pipelines.values())


# ---- Go durations ----------------------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """A Go duration (`10s`, `500ms`, `1m30s`, `0`) in seconds. Raises ValueError on anything else.

    The core's parser (`config/node.rs`), the one that reads `decision_wait`: one reading of durations."""
    return _native.parse_go_duration(text) / 1e9


# ---- environment substitution ----------------------------------------------------------------------------------

def _expand(value: Any, path: str, env: Mapping[str, str], ctx: _Ctx) -> Any:
    if isinstance(value, str):
        return _expand_str(value, path, env, ctx)
    if isinstance(value, Mapping):
        return {k: _expand(v, _child(path, str(k)), env, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, ctx) for i, v in enumerate(value)]
    return value


def _expand_str(text: str, path: str, env: Mapping[str, str], ctx: _Ctx) -> Any:
    if "$" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = m.group(1)
        body = ref[4:] if ref.startswith("env:") else ref
        name, sep, default = body.partition(":-")
        if not _ENV_NAME.match(name):
            if ":" in ref and not ref.startswith("env:"):
                ctx.fail(path, f"${{{ref}}}: unsupported configuration provider {ref.split(':', 1)[0]!r}; "
                               "tailsample supports env only")
            ctx.fail(path, f"${{{ref}}}: invalid environment variable name {name!r}")
        if name in env:
            return env[name]
        if sep:
            return default
        ctx.fail(path, f"${{{ref}}}: the environment variable {name} is not set (and no default is given)")

    whole = _REF.fullmatch(text)
    result = _REF.sub(one, text)
    if whole is not None and whole.group(0) != "$$":
        # as confmap: a value that is one reference takes the YAML type of what it expands to
        try:
            typed = yaml.safe_load(result)
        except yaml.YAMLError:
            return result
        if isinstance(typed, bool | int | float) and result.strip() != "":
            return typed
    return result


# ---- reading -----------------------------------------------------------------------------------------------------

def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Ctx:
    """Where errors go: the source's name and the YAML line of every path."""

    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source = source
        self.lines = lines
        self.ignored: list[str] = []

    def fail(self, path: str, message: str) -> NoReturn:
        line = None
        probe = path
        while probe:
            line = self.lines.get(probe)
            if line:
                break
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        where = f" (line {line})" if line else ""
        label = f"{path}: " if path else ""
        raise ConfigError(f"{self.source}: {label}{message}{where}", path=path or None)


class _Node:
    """A mapping at `path` whose keys must all be in `known` or `ignored`.

    Keys and values are read by the core's configuration reader (`rust/core/src/config/node.rs`, the one that
    reads the tail_sampling block), so the whole file follows one set of rules in one wording; errors get the
    source and the YAML line here.

    `ignored` maps collector settings that have no effect in tailsample (connection tuning, metadata
    propagation) to why; they are accepted and recorded, so `serve` can say so, never silently dropped.
    """

    def __init__(self, ctx: _Ctx, path: str, value: Any, known: Iterable[str],
                 ignored: Mapping[str, str] | None = None) -> None:
        self.ctx = ctx
        self.path = path
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            ctx.fail(path, f"expected a mapping, got {_type_name(value)}")
        ignored = ignored or {}
        for key in value:
            if isinstance(key, str) and key in ignored:
                ctx.ignored.append(f"{_child(path, key)}: accepted and ignored ({ignored[key]})")
        try:
            _native.config_check_keys(path, [str(k) for k in value if not (isinstance(k, str) and k in ignored)],
                                      list(known))
        except ConfigError as exc:
            ctx.fail(exc.path or path, str(exc))
        self.value: Mapping[str, Any] = {k: v for k, v in value.items() if k not in ignored}

    def at(self, key: str) -> str:
        return _child(self.path, key)

    def raw(self, key: str) -> Any:
        return self.value.get(key)

    def fail(self, key: str, message: str) -> NoReturn:
        self.ctx.fail(self.at(key), message)

    def _read(self, key: str, want: str, minimum: float | None = None,
              choices: tuple[str, ...] | None = None) -> Any:
        """The value of `key` read by the core as `want` (see `_native.config_read`)."""
        try:
            return _native.config_read(self.at(key), self.raw(key), want, minimum,
                                       None if choices is None else list(choices))
        except ConfigError as exc:
            self.ctx.fail(exc.path or self.at(key), str(exc))

    def opt_text(self, key: str) -> str | None:
        return None if self.raw(key) is None else str(self._read(key, "str"))

    def text(self, key: str, default: str) -> str:
        v = self.opt_text(key)
        return default if v is None else v

    def req_text(self, key: str) -> str:
        return str(self._read(key, "required_str"))

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        return default if self.raw(key) is None else str(self._read(key, "choice", choices=choices))

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        return default if self.raw(key) is None else int(self._read(key, "int", minimum))

    def number(self, key: str, default: float) -> float:
        return default if self.raw(key) is None else float(self._read(key, "float", 0))

    def flag(self, key: str, default: bool) -> bool:
        return default if self.raw(key) is None else bool(self._read(key, "bool"))

    def duration(self, key: str, default: float) -> float:
        """Seconds; a Go duration (`5s`, `1m30s`), not negative."""
        return default if self.raw(key) is None else int(self._read(key, "duration")) / 1e9

    def sub(self, key: str, known: Iterable[str]) -> _Node:
        return _Node(self.ctx, self.at(key), self.raw(key), known)

    def str_list(self, key: str) -> list[str]:
        return [] if self.raw(key) is None else list(self._read(key, "string_list"))


def _split_id(ctx: _Ctx, path: str, key: Any) -> tuple[str, str]:
    """A component id `type[/name]` → (type, id)."""
    m = _ID.match(key) if isinstance(key, str) else None
    if m is None:
        ctx.fail(path, f"invalid component id {key!r}; expected type or type/name")
    return m.group(1), key


def _host_port(ctx: _Ctx, path: str, value: Any) -> HostPort:
    if not isinstance(value, str):
        ctx.fail(path, f"expected host:port, got {_type_name(value)}")
    host, sep, port = value.rpartition(":")
    if not sep:
        ctx.fail(path, f"{value!r}: expected host:port (for example 127.0.0.1:4317 or :4317)")
    if host.startswith("["):
        if not host.endswith("]"):
            ctx.fail(path, f"{value!r}: unterminated [ in the host")
        host = host[1:-1]
    elif ":" in host:
        ctx.fail(path, f"{value!r}: an IPv6 host must be written in brackets, as [::1]:4317")
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        ctx.fail(path, f"{value!r}: invalid port {port!r}; expected an integer from 0 to 65535")
    return HostPort(host, int(port))


def _endpoint(node: _Node, key: str, default: str) -> HostPort:
    raw = node.raw(key)
    return _host_port(node.ctx, node.at(key), default if raw is None else raw)


def _mapping(ctx: _Ctx, path: str, value: Any) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(path, f"expected a mapping, got {_type_name(value)}")
    return value


# ---- components ------------------------------------------------------------------------------------------------

def _server_tls(node: _Node) -> ServerTLS | None:
    if "tls" not in node.value:
        return None
    tls = node.sub("tls", ("cert_file", "key_file"))
    return ServerTLS(tls.req_text("cert_file"), tls.req_text("key_file"))


def _auth(node: _Node) -> str | None:
    if "auth" not in node.value:
        return None
    return node.sub("auth", ("authenticator",)).req_text("authenticator")


def _receiver(ctx: _Ctx, kind: str, rid: str, value: Any) -> ReceiverSettings:
    path = f"receivers.{rid}"
    if kind not in RECEIVER_TYPES:
        ctx.fail(path, f"unsupported receiver type {kind!r}; tailsample serve supports: {', '.join(RECEIVER_TYPES)}")
    if kind == "kafka":
        return _kafka_receiver(ctx, rid, path, value)
    node = _Node(ctx, path, value, ("protocols",))
    protocols = node.sub("protocols", ("grpc", "http"))
    grpc = http = None
    if "grpc" in protocols.value:
        g = _Node(ctx, protocols.at("grpc"), protocols.raw("grpc"),
                  ("auth", "endpoint", "keepalive", "max_concurrent_streams", "max_connections",
                   "max_recv_msg_size_mib", "tls", "transport"),
                  _GRPC_SERVER_IGNORED)
        if g.text("transport", "tcp") != "tcp":
            g.fail("transport", f"{g.raw('transport')!r} is not supported; tailsample serve listens on tcp")
        grpc = GrpcServer(
            endpoint=_endpoint(g, "endpoint", "127.0.0.1:4317"),
            max_recv_msg_size_mib=g.integer("max_recv_msg_size_mib", 0) or 4,
            tls=_server_tls(g), auth=_auth(g), max_concurrent_streams=g.integer("max_concurrent_streams", 0),
            max_connections=g.integer("max_connections", 4096, minimum=1), keepalive=_grpc_keepalive(g))
    if "http" in protocols.value:
        h = _Node(ctx, protocols.at("http"), protocols.raw("http"),
                  ("auth", "compression_algorithms", "endpoint", "idle_timeout", "max_connections",
                   "max_request_body_size", "read_header_timeout", "read_timeout", "response_headers", "tls",
                   "traces_url_path"), _HTTP_SERVER_IGNORED)
        path = h.text("traces_url_path", "/v1/traces")
        if not path.startswith("/"):
            h.fail("traces_url_path", f"{path!r}: must start with /")
        algorithms = h.str_list("compression_algorithms") if "compression_algorithms" in h.value else None
        for i, a in enumerate(algorithms or ()):
            if a not in ("", "gzip", "deflate", "zlib"):
                ctx.fail(f"{h.at('compression_algorithms')}[{i}]", f"{a!r} is not supported; tailsample serve "
                         "decompresses gzip, deflate and zlib")
        http = HttpServer(
            endpoint=_endpoint(h, "endpoint", "127.0.0.1:4318"),
            max_request_body_size=h.integer("max_request_body_size", 0) or 20 * MiB,
            tls=_server_tls(h), auth=_auth(h), traces_url_path=path,
            response_headers=MappingProxyType(_string_map(ctx, h.at("response_headers"), h.raw("response_headers"))),
            compression_algorithms=("", *algorithms) if algorithms is not None else ("", "gzip", "deflate", "zlib"),
            max_connections=h.integer("max_connections", 4096, minimum=1),
            read_header_timeout=h.duration("read_header_timeout", 10.0), read_timeout=h.duration("read_timeout", 60.0),
            idle_timeout=h.duration("idle_timeout", 60.0))
    if grpc is None and http is None:
        ctx.fail(protocols.path, "must enable at least one of grpc, http")
    return OtlpReceiverSettings(rid, grpc, http)


def _grpc_keepalive(g: _Node) -> GrpcKeepalive:
    if "keepalive" not in g.value:
        return GrpcKeepalive()
    k = g.sub("keepalive", ("enforcement_policy", "server_parameters"))
    sp = k.sub("server_parameters", ("max_connection_age", "max_connection_age_grace", "max_connection_idle",
                                     "time", "timeout"))
    ep = k.sub("enforcement_policy", ("min_time", "permit_without_stream"))
    return GrpcKeepalive(
        max_connection_idle=sp.duration("max_connection_idle", 300.0),
        max_connection_age=sp.duration("max_connection_age", 0.0),
        max_connection_age_grace=sp.duration("max_connection_age_grace", 0.0),
        time=sp.duration("time", 0.0), timeout=sp.duration("timeout", 0.0),
        min_time=ep.duration("min_time", 0.0), permit_without_stream=ep.flag("permit_without_stream", False))


def _processor(ctx: _Ctx, kind: str, pid: str, value: Any) -> Processor:
    path = f"processors.{pid}"
    if kind == "tail_sampling":
        return TailSamplingProcessor(pid, Config(value if value is not None else {}, source=ctx.source,
                                                 prefix=f"{path}.", lines=ctx.lines))
    if kind == "batch":
        b = _Node(ctx, path, value, ("send_batch_max_size", "send_batch_size", "timeout"))
        size = b.integer("send_batch_size", 8192)
        max_size = b.integer("send_batch_max_size", 0)
        if max_size and max_size < size:
            b.fail("send_batch_max_size", f"must be 0 or at least send_batch_size ({size}), got {max_size}")
        return BatchProcessor(pid, b.duration("timeout", 0.2), size, max_size)
    if kind == "memory_limiter":
        m = _Node(ctx, path, value, ("check_interval", "limit_mib", "limit_percentage", "spike_limit_mib",
                                     "spike_limit_percentage"))
        interval = m.duration("check_interval", 0.0)
        if interval <= 0:
            m.fail("check_interval", "is required and must be more than 0")
        limit, spike = m.integer("limit_mib", 0), m.integer("spike_limit_mib", 0)
        pct, spike_pct = m.integer("limit_percentage", 0), m.integer("spike_limit_percentage", 0)
        if not limit and not pct:
            ctx.fail(path, "one of limit_mib or limit_percentage is required")
        if limit and spike >= limit:
            m.fail("spike_limit_mib", f"must be less than limit_mib ({limit}), got {spike}")
        if pct > 100:
            m.fail("limit_percentage", f"must be at most 100, got {pct}")
        if pct and spike_pct >= pct:
            m.fail("spike_limit_percentage", f"must be less than limit_percentage ({pct}), got {spike_pct}")
        if limit and not spike:
            spike = limit // 5
        return MemoryLimiterProcessor(pid, interval, limit, spike, pct, spike_pct)
    ctx.fail(path, f"unsupported processor type {kind!r}; tailsample serve supports: {', '.join(PROCESSOR_TYPES)}")


_OTLP_KEYS = ("compression", "endpoint", "headers", "retry_on_failure", "sending_queue", "timeout", "tls")
_TUNING = "connection tuning that grpcio and aiohttp do their own way"
_GRPC_SERVER_IGNORED = {"read_buffer_size": _TUNING, "write_buffer_size": _TUNING,
                        "include_metadata": "request metadata is not propagated"}
_HTTP_SERVER_IGNORED = {"cors": "no browser clients: CORS headers are not sent",
                        "include_metadata": "request metadata is not propagated",
                        "write_timeout": "responses are a few bytes: they fit the socket buffer",
                        "keep_alives_enabled": _TUNING, "metrics_url_path": "tailsample receives traces only",
                        "logs_url_path": "tailsample receives traces only"}
_GRPC_CLIENT_IGNORED = {"balancer_name": _TUNING, "keepalive": _TUNING, "wait_for_ready": _TUNING,
                        "authority": _TUNING, "read_buffer_size": _TUNING, "write_buffer_size": _TUNING}
_HTTP_CLIENT_IGNORED = {"max_idle_conns": _TUNING, "max_idle_conns_per_host": _TUNING,
                        "max_conns_per_host": _TUNING, "idle_conn_timeout": _TUNING, "disable_keep_alives": _TUNING,
                        "http2_read_idle_timeout": _TUNING, "http2_ping_timeout": _TUNING,
                        "read_buffer_size": _TUNING, "write_buffer_size": _TUNING, "compression_params": _TUNING}
_DEBUG_IGNORED = {"sampling_initial": "every batch is printed", "sampling_thereafter": "every batch is printed",
                  "use_internal_logger": "the output goes to tailsample's log"}


def _string_map(ctx: _Ctx, path: str, value: Any) -> dict[str, str]:
    headers = _mapping(ctx, path, value)
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str):
            bad = k if not isinstance(k, str) else v
            ctx.fail(_child(path, str(k)), f"expected a string, got {_type_name(bad)}")
    return dict(headers)


def _exporter(ctx: _Ctx, kind: str, eid: str, value: Any) -> ExporterSettings:
    path = f"exporters.{eid}"
    if kind in ("otlp", "otlp_grpc", "otlphttp", "otlp_http"):
        protocol: Literal["grpc", "http"] = "grpc" if kind in ("otlp", "otlp_grpc") else "http"
        if protocol == "http":
            e = _Node(ctx, path, value, (*_OTLP_KEYS, "encoding", "traces_endpoint"), _HTTP_CLIENT_IGNORED)
            traces_endpoint = e.opt_text("traces_endpoint")
            endpoint = e.text("endpoint", "") if traces_endpoint else e.req_text("endpoint")
            for key, url in (("endpoint", endpoint), ("traces_endpoint", traces_endpoint)):
                if url and not url.startswith(("http://", "https://")):
                    e.fail(key, f"{url!r}: expected an http:// or https:// URL")
            if e.text("encoding", "proto") != "proto":
                e.fail("encoding", f"{e.raw('encoding')!r} is not supported; tailsample serve exports protobuf "
                                   "(encoding: proto)")
        else:
            e = _Node(ctx, path, value, _OTLP_KEYS, _GRPC_CLIENT_IGNORED)
            endpoint, traces_endpoint = e.req_text("endpoint"), None
        headers = _string_map(ctx, e.at("headers"), e.raw("headers"))
        compression = e.choice("compression", ("gzip", "none"), "gzip")
        t = e.sub("tls", ("ca_file", "cert_file", "insecure", "key_file"))
        tls = ClientTLS(t.flag("insecure", False), t.opt_text("ca_file"), t.opt_text("cert_file"),
                        t.opt_text("key_file"))
        if (tls.cert_file is None) != (tls.key_file is None):
            t.fail("key_file" if tls.key_file is None else "cert_file", "is required with "
                   + ("cert_file" if tls.key_file is None else "key_file"))
        r = e.sub("retry_on_failure", ("enabled", "initial_interval", "max_elapsed_time", "max_interval",
                                       "multiplier", "randomization_factor"))
        retry = RetrySettings(r.flag("enabled", True), r.duration("initial_interval", 5.0),
                              r.number("randomization_factor", 0.5), r.number("multiplier", 1.5),
                              r.duration("max_interval", 30.0), r.duration("max_elapsed_time", 300.0))
        if retry.randomization_factor > 1:
            r.fail("randomization_factor", f"must be between 0 and 1, got {retry.randomization_factor}")
        q = e.sub("sending_queue", ("enabled", "num_consumers", "queue_size", "storage"))
        queue = QueueSettings(q.flag("enabled", True), q.integer("num_consumers", 10, minimum=1),
                              q.integer("queue_size", 1000, minimum=1), q.opt_text("storage"))
        return OtlpExporterSettings(eid, protocol, endpoint, MappingProxyType(headers),
                            "gzip" if compression == "gzip" else "none", e.duration("timeout", 5.0), tls, retry, queue,
                            traces_endpoint)
    if kind == "file":
        if isinstance(value, Mapping) and "rotation" in value:
            ctx.fail(_child(path, "rotation"), "file rotation is not supported by tailsample serve yet; rotate the "
                     "file outside (logrotate with copytruncate) or use an otlp exporter")
        f = _Node(ctx, path, value, ("append", "compression", "format", "path"),
                  {"flush_interval": "every batch is flushed as it is written"})
        file_path = f.req_text("path")
        fmt = f.choice("format", ("json", "proto"), "json")
        compression = f.text("compression", "")
        if compression not in ("", "none"):
            f.fail("compression", f"{compression!r} is not supported by tailsample serve yet; "
                                  "only uncompressed files (omit compression)")
        return FileExporterSettings(eid, file_path, "json" if fmt == "json" else "proto", f.flag("append", False))
    if kind == "kafka":
        return _kafka_exporter(ctx, eid, path, value)
    if kind == "debug":
        d = _Node(ctx, path, value, ("verbosity",), _DEBUG_IGNORED)
        verbosity = d.choice("verbosity", ("basic", "normal", "detailed"), "basic")
        return DebugExporterSettings(eid, "basic" if verbosity == "basic" else "normal" if verbosity == "normal"
                             else "detailed")
    ctx.fail(path, f"unsupported exporter type {kind!r}; tailsample serve supports: {', '.join(EXPORTER_TYPES)}")


_KAFKA_IGNORED = {"protocol_version": "librdkafka negotiates the protocol version with the brokers",
                  "metadata": "librdkafka refreshes metadata on its own schedule",
                  "resolve_canonical_bootstrap_servers_only": "librdkafka resolves the brokers given"}
_KAFKA_ENCODINGS = ("otlp_proto",)


def _kafka_client(node: _Node) -> KafkaClient:
    brokers = tuple(node.str_list("brokers")) or ("localhost:9092",)
    auth = node.sub("auth", ("sasl", "tls", "plain_text", "kerberos"))
    for unsupported in ("plain_text", "kerberos"):
        if auth.raw(unsupported) is not None:
            auth.fail(unsupported, "is not supported by tailsample's Kafka client yet; use sasl (PLAIN or SCRAM)")
    sasl = auth.sub("sasl", ("mechanism", "password", "username", "version"))
    mechanism = (None if sasl.raw("mechanism") is None
                 else sasl.choice("mechanism", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "PLAIN"))
    if mechanism is not None and (not sasl.opt_text("username") or sasl.opt_text("password") is None):
        sasl.fail("username", "username and password are required with a SASL mechanism")
    tls = None
    if auth.raw("tls") is not None:
        t = auth.sub("tls", ("ca_file", "cert_file", "insecure", "insecure_skip_verify", "key_file"))
        tls = ClientTLS(t.flag("insecure", False) or t.flag("insecure_skip_verify", False), t.opt_text("ca_file"),
                        t.opt_text("cert_file"), t.opt_text("key_file"))
    return KafkaClient(brokers, node.text("client_id", "otel-collector"), mechanism, sasl.opt_text("username"),
                       sasl.opt_text("password"), tls)


def _kafka_topic(node: _Node, default: str) -> str:
    """`traces.topic` (the collector's current key), else the older top-level `topic`; otlp_proto only."""
    traces = node.sub("traces", ("encoding", "topic"))
    encoding = traces.opt_text("encoding") or node.text("encoding", "otlp_proto")
    if encoding not in _KAFKA_ENCODINGS:
        where = "traces" if traces.raw("encoding") is not None else ""
        node.fail(f"{where}.encoding" if where else "encoding",
                  f"{encoding!r} is not supported; tailsample reads and writes otlp_proto (ExportTraceServiceRequest)")
    return traces.opt_text("topic") or node.text("topic", default)


def _kafka_exporter(ctx: _Ctx, eid: str, path: str, value: Any) -> KafkaExporterSettings:
    e = _Node(ctx, path, value, ("auth", "brokers", "client_id", "encoding", "partition_traces_by_id", "producer",
                                 "retry_on_failure", "sending_queue", "timeout", "topic", "traces"),
              _KAFKA_IGNORED)
    p = e.sub("producer", ("compression", "flush_max_messages", "max_message_bytes", "required_acks"))
    acks = p.raw("required_acks")
    if acks is not None and acks not in (0, 1, -1):
        p.fail("required_acks", f"expected 0 (no response), 1 (leader) or -1 (all replicas), got {acks!r}")
    compression = p.choice("compression", ("none", "gzip", "snappy", "lz4", "zstd"), "none")
    r = e.sub("retry_on_failure", ("enabled", "initial_interval", "max_elapsed_time", "max_interval", "multiplier",
                                   "randomization_factor"))
    retry = RetrySettings(r.flag("enabled", True), r.duration("initial_interval", 5.0),
                          r.number("randomization_factor", 0.5), r.number("multiplier", 1.5),
                          r.duration("max_interval", 30.0), r.duration("max_elapsed_time", 300.0))
    q = e.sub("sending_queue", ("enabled", "num_consumers", "queue_size", "storage"))
    queue = QueueSettings(q.flag("enabled", True), q.integer("num_consumers", 10, minimum=1),
                          q.integer("queue_size", 1000, minimum=1), q.opt_text("storage"))
    return KafkaExporterSettings(eid, _kafka_client(e), _kafka_topic(e, "otlp_spans"),
                                 e.flag("partition_traces_by_id", False), e.duration("timeout", 5.0),
                                 p.integer("max_message_bytes", 1_000_000, minimum=1),
                                 1 if acks is None else int(acks), compression, retry, queue)


_KAFKA_RECEIVER_IGNORED = {
    **_KAFKA_IGNORED,
    "autocommit": "tailsample commits a message once its traces are decided and their kept spans sent",
    "message_marking": "tailsample commits a message once its traces are decided and their kept spans sent",
    "header_extraction": "tailsample does not copy Kafka headers into resource attributes",
    "min_fetch_size": "librdkafka's fetch defaults apply", "default_fetch_size": "librdkafka's fetch defaults apply",
    "max_fetch_size": "librdkafka's fetch defaults apply", "max_fetch_wait": "librdkafka's fetch defaults apply",
    "error_backoff": "librdkafka's backoff applies",
}


def _kafka_receiver(ctx: _Ctx, rid: str, path: str, value: Any) -> KafkaReceiverSettings:
    r = _Node(ctx, path, value, ("auth", "brokers", "client_id", "encoding", "group_id", "group_rebalance_strategy",
                                 "heartbeat_interval", "initial_offset", "max_uncommitted_messages",
                                 "session_timeout", "topic", "traces"), _KAFKA_RECEIVER_IGNORED)
    strategies = {"range": "range", "roundrobin": "roundrobin", "cooperative-sticky": "cooperative-sticky",
                  "sticky": "cooperative-sticky"}
    strategy = r.choice("group_rebalance_strategy", tuple(strategies), "cooperative-sticky")
    initial = r.choice("initial_offset", ("latest", "earliest"), "latest")
    session = r.duration("session_timeout", 10.0)
    heartbeat = r.duration("heartbeat_interval", 3.0)
    if heartbeat >= session:
        r.fail("heartbeat_interval", f"must be shorter than session_timeout ({session:g}s)")
    return KafkaReceiverSettings(rid, _kafka_client(r), _kafka_topic(r, "otlp_spans"),
                                 r.text("group_id", "otel-collector"), "latest" if initial == "latest" else "earliest",
                                 session, heartbeat, strategies[strategy],
                                 r.integer("max_uncommitted_messages", 1_000_000, minimum=1))


def _extension(ctx: _Ctx, kind: str, xid: str, value: Any) -> Extension:
    path = f"extensions.{xid}"
    if kind == "health_check":
        h = _Node(ctx, path, value, ("endpoint",))
        return HealthCheckExtension(xid, _endpoint(h, "endpoint", "127.0.0.1:13133"))
    if kind == "bearertokenauth":
        b = _Node(ctx, path, value, ("filename", "scheme", "token"))
        token, filename = b.opt_text("token"), b.opt_text("filename")
        if not token and not filename:
            ctx.fail(path, "one of token or filename is required")
        if token and filename:
            ctx.fail(path, "token and filename are exclusive; give one")
        return BearerTokenAuthExtension(xid, token, filename, b.text("scheme", "Bearer"))
    if kind == "file_storage":
        s = _Node(ctx, path, value, ("create_directory", "directory", "directory_permissions", "fsync", "tailsample"),
                  {"timeout": "no file locking: one process owns the directory",
                   "compaction": "segments are deleted whole once decided and exported; nothing to compact",
                   "recreate": "the directory is replayed on start; delete it to start empty"})
        perms = s.text("directory_permissions", "0750")
        try:
            mode = int(perms, 8)
        except ValueError:
            s.fail("directory_permissions", f"expected an octal mode such as 0750, got {perms!r}")
        t = s.sub("tailsample", ("max_size_mib", "segment_size_mib", "sync"))
        max_mib = t.integer("max_size_mib", DEFAULT_MAX_SIZE >> 20, minimum=1)
        segment_mib = t.integer("segment_size_mib", DEFAULT_SEGMENT_SIZE >> 20, minimum=1)
        if segment_mib > max_mib:
            t.fail("segment_size_mib", f"must not exceed max_size_mib ({max_mib}), got {segment_mib}")
        default_sync = "payload" if s.flag("fsync", False) else "none"
        sync = cast("SyncPolicy", t.choice("sync", SYNC_POLICIES, default_sync))
        return FileStorageExtension(xid, s.req_text("directory"), s.flag("create_directory", False), mode,
                                    max_mib, segment_mib, sync)
    if kind == "tailsample_debug":
        d = _Node(ctx, path, value, ("auth", "max_page_size", "rate_limit", "recent_traffic_bytes"))
        rate = d.sub("rate_limit", ("burst", "requests_per_second"))
        rps = rate.number("requests_per_second", 10.0)
        if rps <= 0:
            rate.fail("requests_per_second", f"must be above 0, got {rps:g}")
        page = d.integer("max_page_size", 100, minimum=1)
        if page > 10_000:
            d.fail("max_page_size", f"must be at most 10000, got {page}")
        traffic = d.integer("recent_traffic_bytes", 64 << 20)
        if traffic > 4 << 30:
            d.fail("recent_traffic_bytes", f"must be at most 4 GiB (4294967296), got {traffic}")
        return DebugEndpointsExtension(xid, _auth(d), page, rps, rate.integer("burst", 20, minimum=1), traffic)
    ctx.fail(path, f"unsupported extension type {kind!r}; tailsample serve supports: {', '.join(EXTENSION_TYPES)}")


# ---- the service section ---------------------------------------------------------------------------------------

def _refs(ctx: _Ctx, node: _Node, key: str, defined: Mapping[str, Any], section: str) -> tuple[str, ...]:
    names = node.str_list(key)
    seen: set[str] = set()
    for i, name in enumerate(names):
        where = f"{node.at(key)}[{i}]"
        if name not in defined:
            ctx.fail(where, f"{name!r} is not defined in {section}")
        if name in seen:
            ctx.fail(where, f"{name!r} is listed twice")
        seen.add(name)
    return tuple(names)


def _pipeline(ctx: _Ctx, pid: str, value: Any, cfg: dict[str, Any]) -> Pipeline:
    p = _Node(ctx, f"service.pipelines.{pid}", value, ("exporters", "processors", "receivers"))
    receivers = _refs(ctx, p, "receivers", cfg["receivers"], "receivers")
    processors = _refs(ctx, p, "processors", cfg["processors"], "processors")
    exporters = _refs(ctx, p, "exporters", cfg["exporters"], "exporters")
    if not receivers:
        p.fail("receivers", "must list at least one receiver")
    if not exporters:
        p.fail("exporters", "must list at least one exporter")
    sampling = [x for x in processors if isinstance(cfg["processors"][x], TailSamplingProcessor)]
    if len(sampling) != 1:
        got = f"{len(sampling)} ({', '.join(sampling)})" if sampling else "none"
        p.fail("processors", f"tailsample serve needs exactly one tail_sampling processor per pipeline, got {got}")
    return Pipeline(pid, receivers, processors, exporters, sampling[0])


def _metrics(ctx: _Ctx, node: _Node) -> MetricsTelemetry:
    m = node.sub("metrics", ("address", "level", "readers"))
    level = m.choice("level", ("none", "basic", "normal", "detailed"), "normal")
    lvl: Literal["none", "basic", "normal", "detailed"] = (
        "none" if level == "none" else "basic" if level == "basic" else "normal" if level == "normal" else "detailed")
    if "address" in m.value and "readers" in m.value:
        ctx.fail(m.path, "give address or readers, not both")
    if "readers" not in m.value:
        return MetricsTelemetry(lvl, (_endpoint(m, "address", "127.0.0.1:8888"),))
    readers = m.raw("readers")
    if not isinstance(readers, list) or not readers:
        m.fail("readers", f"expected a non-empty list, got {_type_name(readers)}")
    endpoints = []
    for i, reader in enumerate(readers):
        r = _Node(ctx, f"{m.at('readers')}[{i}]", reader, ("periodic", "pull"))
        if "pull" not in r.value:
            r.fail("periodic", "only pull readers with a prometheus exporter are supported")
        exporter = r.sub("pull", ("exporter",)).sub("exporter", ("prometheus",))
        if "prometheus" not in exporter.value:
            ctx.fail(exporter.path, "a pull reader needs exporter.prometheus")
        prom = exporter.sub("prometheus", ("host", "port"))
        host = prom.text("host", "127.0.0.1")
        if "port" not in prom.value:
            prom.fail("port", "is required")
        port = prom.integer("port", 0)
        if port > 65535:
            prom.fail("port", f"invalid port {port}; expected an integer from 0 to 65535")
        endpoints.append(HostPort(host, port))
    return MetricsTelemetry(lvl, tuple(endpoints))


def _build(data: Any, ctx: _Ctx, env: Mapping[str, str] | None) -> ServiceConfig:
    if data is None:
        ctx.fail("", "the configuration is empty")
    if not isinstance(data, Mapping):
        ctx.fail("", f"expected a mapping at the top level, got {_type_name(data)}")
    data = _expand(data, "", os.environ if env is None else env, ctx)
    top = _Node(ctx, "", data, ("connectors", "exporters", "extensions", "processors", "receivers", "service"))
    if top.value.get("connectors"):
        top.fail("connectors", "connectors are not supported by tailsample serve")
    cfg: dict[str, Any] = {}
    builders: dict[str, Any] = {"receivers": _receiver, "processors": _processor, "exporters": _exporter,
                                "extensions": _extension}
    for section, build in builders.items():
        out: dict[str, Any] = {}
        for key, value in _mapping(ctx, section, top.raw(section)).items():
            kind, cid = _split_id(ctx, _child(section, str(key)), key)
            out[cid] = build(ctx, kind, cid, value)
        cfg[section] = out
    for section in ("receivers", "exporters"):
        if not cfg[section]:
            top.fail(section, "is required: define at least one")

    if "service" not in top.value:
        top.fail("service", "is required")
    service = top.sub("service", ("extensions", "pipelines", "telemetry"))
    service_extensions = _refs(ctx, service, "extensions", cfg["extensions"], "extensions")
    pipelines: dict[str, Pipeline] = {}
    raw_pipelines = _mapping(ctx, service.at("pipelines"), service.raw("pipelines"))
    for key, value in raw_pipelines.items():
        path = _child(service.at("pipelines"), str(key))
        signal, pid = _split_id(ctx, path, key)
        if signal != "traces":
            ctx.fail(path, f"tailsample serve handles traces pipelines only (traces or traces/<name>), not {signal}")
        pipelines[pid] = _pipeline(ctx, pid, value, cfg)
    if not pipelines:
        service.fail("pipelines", "is required: define a traces pipeline")
    metrics = _metrics(ctx, service.sub("telemetry", ("metrics",)))

    # references from components to extensions: they must be defined, of the right type, and started
    def check_ref(path: str, ref: str | None, kind: type) -> None:
        if ref is None:
            return
        found = cfg["extensions"].get(ref)
        if found is None:
            ctx.fail(path, f"{ref!r} is not defined in extensions")
        if not isinstance(found, kind):
            wanted = "bearertokenauth" if kind is BearerTokenAuthExtension else "file_storage"
            ctx.fail(path, f"{ref!r} is not a {wanted} extension")
        if ref not in service_extensions:
            ctx.fail(path, f"{ref!r} is not listed in service.extensions")

    for rid, rec in cfg["receivers"].items():
        if not isinstance(rec, OtlpReceiverSettings):
            continue
        for proto, server in (("grpc", rec.grpc), ("http", rec.http)):
            if server is not None:
                check_ref(f"receivers.{rid}.protocols.{proto}.auth.authenticator", server.auth,
                          BearerTokenAuthExtension)
    debug = [x for x in service_extensions if isinstance(cfg["extensions"][x], DebugEndpointsExtension)]
    if len(debug) > 1:
        ctx.fail(service.at("extensions"), f"at most one tailsample_debug extension, got {', '.join(debug)}")
    if debug:
        check_ref(f"extensions.{debug[0]}.auth.authenticator", cfg["extensions"][debug[0]].auth,
                  BearerTokenAuthExtension)
        if metrics.level == "none":
            ctx.fail(f"extensions.{debug[0]}", "the /debug endpoints are served on the telemetry metrics address, "
                     "which service.telemetry.metrics.level: none turns off")
    for pid, proc in cfg["processors"].items():
        if isinstance(proc, TailSamplingProcessor):
            check_ref(f"processors.{pid}.tail_storage", proc.config.tail_storage, FileStorageExtension)
            archive = proc.config.archive
            if archive is not None:
                check_ref(f"processors.{pid}.tailsample.archive.storage", archive.storage, FileStorageExtension)
    for eid, exp in cfg["exporters"].items():
        if isinstance(exp, OtlpExporterSettings):
            check_ref(f"exporters.{eid}.sending_queue.storage", exp.sending_queue.storage, FileStorageExtension)

    return ServiceConfig(
        receivers=MappingProxyType(cfg["receivers"]), processors=MappingProxyType(cfg["processors"]),
        exporters=MappingProxyType(cfg["exporters"]), extensions=MappingProxyType(cfg["extensions"]),
        pipelines=MappingProxyType(pipelines), service_extensions=service_extensions, metrics=metrics,
        source=ctx.source, ignored=tuple(ctx.ignored))


__all__ = [
    "BatchProcessor", "BearerTokenAuthExtension", "ClientTLS", "DebugEndpointsExtension", "DebugExporterSettings",
    "ExporterSettings", "Extension", "FileExporterSettings", "FileStorageExtension", "GrpcServer",
    "HealthCheckExtension", "HostPort", "HttpServer", "KafkaClient", "KafkaExporterSettings", "KafkaReceiverSettings",
    "MemoryLimiterProcessor", "MetricsTelemetry", "OtlpExporterSettings", "OtlpReceiverSettings", "Pipeline",
    "Processor", "QueueSettings", "ReceiverSettings", "RetrySettings", "ServerTLS", "ServiceConfig",
    "TailSamplingProcessor", "parse_duration",
]
