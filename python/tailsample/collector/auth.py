"""Bearer-token authentication on the receivers, in the shape of the collector's `bearertokenauth` extension.

The token comes from the configuration or from a file; a file is read again when it changes, so a rotated token
takes effect without a restart (as the collector's extension watches its file).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading

from tailsample.collector.settings import BearerTokenAuthExtension
from tailsample.errors import ConfigError

log = logging.getLogger("tailsample.auth")


class BearerTokenAuth:
    """Checks an `authorization` header (HTTP) or metadata entry (gRPC) against `<scheme> <token>`."""

    def __init__(self, ext: BearerTokenAuthExtension) -> None:
        self.id = ext.id
        self.scheme = ext.scheme
        self._filename = ext.filename
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._expected = b""
        if ext.token:
            self._expected = self._header(ext.token)
        else:
            self._reload(required=True)

    def _header(self, token: str) -> bytes:
        return f"{self.scheme} {token}".encode() if self.scheme else token.encode()

    def _reload(self, *, required: bool = False) -> None:
        assert self._filename is not None
        try:
            mtime = os.stat(self._filename).st_mtime
            if mtime == self._mtime:
                return
            with open(self._filename, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            if required:
                raise ConfigError(f"extensions.{self.id}.filename: cannot read {self._filename}: "
                                  f"{exc.strerror or exc}") from None
            log.warning("%s: cannot read the token file %s (%s); keeping the previous token",
                        self.id, self._filename, exc)
            return
        if not token and required:
            raise ConfigError(f"extensions.{self.id}.filename: {self._filename} is empty")
        with self._lock:
            self._expected, self._mtime = self._header(token), mtime

    def native_spec(self) -> tuple[str, str | None, str | None]:
        """(scheme, token, file) for the Rust OTLP/HTTP server, which checks (and re-reads) the same way: with a
        token, the whole expected header as the token and no scheme."""
        if self._filename is not None:
            return self.scheme, None, self._filename
        with self._lock:
            return "", self._expected.decode(), None

    def authenticate(self, header: str | None) -> bool:
        """True when `header` carries the expected token (compared in constant time)."""
        if self._filename is not None:
            self._reload()
        if not header:
            return False
        with self._lock:
            expected = self._expected
        return hmac.compare_digest(header.strip().encode(), expected)


__all__ = ["BearerTokenAuth"]
