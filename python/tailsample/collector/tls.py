"""TLS settings of the service, as the collector's `tls` blocks: server contexts for receivers, client contexts for
exporters (aiohttp takes `ssl.SSLContext`, grpcio takes credentials built from the same files)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import grpc

from tailsample.collector.settings import (
    ClientTLS,
    KafkaExporterSettings,
    KafkaReceiverSettings,
    OtlpExporterSettings,
    OtlpReceiverSettings,
    ServerTLS,
    ServiceConfig,
)
from tailsample.errors import ConfigError


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}: cannot read {path}: {exc.strerror or exc}") from None


def _pem(path: str, where: str) -> bytes:
    """The file's bytes, when it reads and holds PEM blocks; else a ConfigError naming the file and why."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}", path=where) from None
    if not data.strip():
        raise ConfigError(f"{where}: {path} is empty", path=where)
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{where}: {path} is not PEM (no -----BEGIN line; DER files are not read)", path=where)
    return data


def check_certificates(path: str, where: str) -> None:
    """`path` reads and holds only parseable PEM certificates (a cert_file, or a ca_file bundle)."""
    data = _pem(path, where)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"{where}: {path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
                          path=where)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"{where}: {path} is not a valid PEM certificate ({reason})", path=where) from None


def check_pair(cert_file: str, key_file: str, where: str) -> None:
    """A certificate and its private key: each parseable PEM, and the key the certificate's."""
    check_certificates(cert_file, f"{where}.cert_file")
    key = _pem(key_file, f"{where}.key_file")
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"{where}.key_file: {key_file} holds no PEM private key (no -----BEGIN ... PRIVATE "
                          "KEY----- block)", path=f"{where}.key_file")
    if b"ENCRYPTED" in key:
        raise ConfigError(f"{where}.key_file: {key_file} is an encrypted private key; give it unencrypted (no "
                          "passphrase can be configured)", path=f"{where}.key_file")
    try:
        # the password callback keeps OpenSSL from prompting on a terminal for a key it takes as encrypted
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"{where}.key_file: {key_file} is not the private key of the certificate in "
                              f"{cert_file}", path=f"{where}.key_file") from None
        reason = getattr(exc, "reason", None) or str(exc)
        if "PEM lib" in reason or reason == "PEM_lib":  # OpenSSL's whole word for "could not decode it"
            reason = "OpenSSL cannot decode it: corrupt, truncated or of an unsupported key type"
        raise ConfigError(f"{where}.key_file: {key_file} is not a valid PEM private key ({reason})",
                          path=f"{where}.key_file") from None


def check_client(tls: ClientTLS, where: str) -> None:
    """An exporter's or a Kafka client's TLS files: the CA bundle, the client certificate and its key."""
    if tls.ca_file:
        check_certificates(tls.ca_file, f"{where}.ca_file")
    if tls.cert_file and tls.key_file:
        check_pair(tls.cert_file, tls.key_file, where)


def check_config_files(config: ServiceConfig) -> list[ConfigError]:
    """Every TLS file the configuration names, loaded as serve would: one error per failing file."""
    problems: list[ConfigError] = []

    def run(check: Callable[..., None], *args: object) -> None:
        try:
            check(*args)
        except ConfigError as exc:
            problems.append(exc)

    for rid, rec in config.receivers.items():
        if isinstance(rec, OtlpReceiverSettings):
            for proto, server in (("grpc", rec.grpc), ("http", rec.http)):
                if server is not None and server.tls is not None:
                    run(check_pair, server.tls.cert_file, server.tls.key_file,
                        f"receivers.{rid}.protocols.{proto}.tls")
        elif isinstance(rec, KafkaReceiverSettings) and rec.client.tls is not None:
            run(check_client, rec.client.tls, f"receivers.{rid}.auth.tls")
    for eid, exp in config.exporters.items():
        if isinstance(exp, OtlpExporterSettings):
            run(check_client, exp.tls, f"exporters.{eid}.tls")
        elif isinstance(exp, KafkaExporterSettings) and exp.client.tls is not None:
            run(check_client, exp.client.tls, f"exporters.{eid}.auth.tls")
    return problems


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A server context with the receiver's certificate and key."""
    check_pair(tls.cert_file, tls.key_file, "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load cert_file {tls.cert_file} / key_file {tls.key_file}: {exc}") from None
    return ctx


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """gRPC server credentials; the files are checked first, since grpcio reports a bad certificate only as
    "Failed to bind to address"."""
    check_pair(tls.cert_file, tls.key_file, "tls")
    return grpc.ssl_server_credentials([(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))])


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """A client context: the system's roots, or `ca_file`; a client certificate when given (mTLS)."""
    check_client(tls, "tls")
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the exporter's certificates: {exc}") from None
    return ctx


def client_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    check_client(tls, "tls")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file") if tls.ca_file else None,
        private_key=_read(tls.key_file, "key_file") if tls.key_file else None,
        certificate_chain=_read(tls.cert_file, "cert_file") if tls.cert_file else None)


__all__ = ["check_certificates", "check_client", "check_config_files", "check_pair", "client_context",
           "client_credentials", "server_context", "server_credentials"]
