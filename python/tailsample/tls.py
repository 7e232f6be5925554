"""TLS settings of the service, as the collector's `tls` blocks: server contexts for receivers, client contexts for
exporters (aiohttp takes `ssl.SSLContext`, grpcio takes credentials built from the same files)."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from tailsample.errors import ConfigError
from tailsample.service.config import ClientTLS, ServerTLS


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}: cannot read {path}: {exc.strerror or exc}") from None


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A server context with the receiver's certificate and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load cert_file {tls.cert_file} / key_file {tls.key_file}: {exc}") from None
    return ctx


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))])


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """A client context: the system's roots, or `ca_file`; a client certificate when given (mTLS)."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the exporter's certificates: {exc}") from None
    return ctx


def client_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file") if tls.ca_file else None,
        private_key=_read(tls.key_file, "key_file") if tls.key_file else None,
        certificate_chain=_read(tls.cert_file, "cert_file") if tls.cert_file else None)


__all__ = ["client_context", "client_credentials", "server_context", "server_credentials"]
