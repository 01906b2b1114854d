"""How `serve` runs uvicorn: bounded header reads, keep-alive timeout and TLS 1.2 minimum.

uvicorn (0.54) has a keep-alive timeout but no header-read timeout: its timer is armed only
after a response, and any byte received cancels it, so a client that connects and sends half a
header (or nothing) holds a connection forever (slowloris). The ASGI layer cannot help: an
application is called only once the headers are complete. So the guard lives in the HTTP
protocol, a subclass of uvicorn's httptools protocol (the default with uvicorn[standard]): a
timer armed when a connection opens and when a new request begins, cancelled when its headers
are complete; when it fires, the client gets 408 and the connection is closed. Bodies are
bounded by size (QUIVR_SERVICE_MAX_BODY_BYTES), not by time. TLS handshakes are bounded by
asyncio's own 60 s handshake timeout.

TLS: uvicorn builds its SSLContext from a protocol constant and has no minimum-version option;
`ServiceConfig.load` sets `minimum_version = TLSv1_2` on it explicitly instead of relying on the
Python/OpenSSL default of the day.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 29\r\n"
                   b"connection: close\r\n\r\nrequest headers took too long")


class TLSFileError(ValueError):
    """A certificate or key file that cannot be used: one line for the operator."""


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header-read timeout (`config.timeout_headers`)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.timeout_headers: float = getattr(config, "timeout_headers", 10.0)
        self._headers_timer: asyncio.TimerHandle | None = None

    def _arm_headers_timer(self) -> None:
        self._cancel_headers_timer()
        self._headers_timer = self.loop.call_later(self.timeout_headers, self._headers_timed_out)

    def _cancel_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_timed_out(self) -> None:
        self._headers_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no response of ours in progress
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_headers_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_headers_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_timer is None:
            self._arm_headers_timer()

    def on_headers_complete(self) -> None:
        self._cancel_headers_timer()
        super().on_headers_complete()


class ServiceConfig(uvicorn.Config):
    """uvicorn's Config with the header timeout and an explicit TLS 1.2 floor (see module doc).
    Picklable by reference, so uvicorn's worker processes rebuild the same thing."""

    def __init__(self, app, *, timeout_headers: float = 10.0, **kwargs):
        kwargs.setdefault("http", HeaderTimeoutProtocol)
        super().__init__(app, **kwargs)
        self.timeout_headers = timeout_headers

    def load(self) -> None:
        if self.loaded:
            return
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def check_tls_files(cert: Path | None, key: Path | None) -> None:
    """Fail before anything starts, in one line, when the pair cannot serve TLS."""
    if (cert is None) != (key is None):
        raise TLSFileError("TLS needs both a certificate and its key (--tls-cert and --tls-key, or "
                           "QUIVR_SERVICE_TLS_CERT and QUIVR_SERVICE_TLS_KEY)")
    if cert is None:
        return
    for what, path in (("certificate", cert), ("key", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise TLSFileError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = exc.reason or "not PEM, or the key is not the certificate's"
        raise TLSFileError(f"the TLS certificate {cert} and key {key} are not a usable PEM pair: {reason}") from None


def run(config: ServiceConfig) -> None:
    """`uvicorn.run` for an already built Config (uvicorn.run takes keyword arguments only)."""
    import sys

    from uvicorn.main import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if not server.started and config.workers == 1:
        sys.exit(STARTUP_FAILURE)
