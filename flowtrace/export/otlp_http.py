"""A minimal OTLP/HTTP client for flowtrace's direct span export.

It reads the variables the stock OTLP/HTTP span exporter reads, with the same
meaning: ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``..._HEADERS``,
``..._TIMEOUT`` (seconds; an invalid value warns and means 10),
``..._COMPRESSION`` (``gzip``, ``deflate``, ``none``), ``..._CERTIFICATE``,
``..._CLIENT_KEY`` and ``..._CLIENT_CERTIFICATE`` (mutual TLS), and the CA
bundle variables ``requests`` honours (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``, else certifi's bundle, as ``requests`` verifies). What it
does not implement (an HTTP proxy from ``HTTPS_PROXY`` and friends, a
credential-provider session, ``.netrc`` credentials, the exporter's own
metrics) makes ``unsupported_reason()`` answer, and flowtrace then takes the
SDK's exporter instead.

It never retries inline: a failed batch is dropped and counted, and sending
pauses with exponential backoff (0.5 s up to 30 s), so a dead or slow
collector costs the app nothing but the lost telemetry.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import socket
import ssl
import time
import zlib
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from flowtrace.export import health

logger = logging.getLogger("flowtrace")

_DEFAULT_ENDPOINT = "http://localhost:4318"
_DEFAULT_TIMEOUT = 10.0
_CREDENTIAL_PROVIDERS = ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
                         "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")  # fmt: skip


def _env(name: str) -> str:
    """The traces-specific variable, else the general one (as the SDK reads them)."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{name}", ""
    )


def traces_url() -> str:
    specific = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    if specific:
        return specific
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "") or _DEFAULT_ENDPOINT
    return base.removesuffix("/") + "/v1/traces"


def _sdk_version() -> str:
    try:
        from opentelemetry.exporter.otlp.proto.http.version import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the exporter is a dependency
        return "unknown"


def _headers() -> dict[str, str]:
    """The stock exporter's headers: its defaults, then ``..._HEADERS`` (W3C
    baggage syntax, URL-encoded, parsed by the SDK's own function)."""
    from opentelemetry.util.re import parse_env_headers

    headers = {"content-type": "application/x-protobuf",
               "user-agent": "OTel-OTLP-Exporter-Python/" + _sdk_version()}  # fmt: skip
    headers.update(parse_env_headers(_env("HEADERS"), liberal=True))
    return headers


def _timeout() -> float:
    raw = _env("TIMEOUT")
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        return float(raw)
    except ValueError:
        logger.warning("flowtrace: invalid OTLP timeout %r, using the default of %s seconds",
                       raw, _DEFAULT_TIMEOUT)  # fmt: skip
        return _DEFAULT_TIMEOUT


def _compression() -> str:
    value = (_env("COMPRESSION") or "none").strip().lower()
    if value not in ("gzip", "deflate", "none"):
        logger.warning("flowtrace: unsupported OTLP compression %r, sending uncompressed", value)
        return "none"
    return value


def _ssl_context() -> ssl.SSLContext:
    """Verification as ``requests`` does it for the stock exporter: its CA bundle
    variables first, then ``..._CERTIFICATE``, then certifi's bundle."""
    cafile = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or _env("CERTIFICATE") or None)  # fmt: skip
    if cafile is None:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:  # pragma: no cover - requests depends on certifi
            cafile = None
    context = ssl.create_default_context(cafile=cafile)
    client_cert, client_key = _env("CLIENT_CERTIFICATE"), _env("CLIENT_KEY")
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context


def unsupported_reason(url: str | None = None) -> str | None:
    """Why the direct client cannot send as the stock exporter would, or None."""
    for variable in _CREDENTIAL_PROVIDERS:
        if os.environ.get(variable):
            return f"{variable} is set"
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
        return "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is set"
    url = url or traces_url()
    try:
        from requests.utils import get_environ_proxies, get_netrc_auth
    except ImportError:  # pragma: no cover - the stock exporter depends on requests
        return None
    if get_environ_proxies(url):
        return "an HTTP proxy applies to the endpoint"
    if get_netrc_auth(url):
        return ".netrc credentials apply to the endpoint"
    return None


class OtlpHttpSender:
    """POSTs ExportTraceServiceRequest bodies over one keep-alive connection."""

    def __init__(self, url: str | None = None, timeout: float | None = None) -> None:
        self.url = url or traces_url()
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/v1/traces") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout if timeout is not None else _timeout()
        self._compression = _compression()
        self._headers = _headers()
        if self._compression != "none":
            self._headers["content-encoding"] = self._compression
        self._ssl = _ssl_context() if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._addresses: list[Any] = []
        self._resolve()
        self._backoff = 0.0
        self._resume_at = 0.0
        self._failing = False
        self.failures = 0

    def _resolve(self) -> None:
        """Look the collector up now, while it is cheap to: at interpreter shutdown a
        lookup may be impossible (Python 3.12.1 starts no thread then, and gevent
        resolves names on one), and the final flush must still connect."""
        try:
            self._addresses = socket.getaddrinfo(self._host, self._port, 0, socket.SOCK_STREAM)
        except OSError:
            self._addresses = []  # resolved at connect time instead

    def _create_connection(self, address: Any, timeout: Any = None, source: Any = None) -> Any:
        """``socket.create_connection`` over the addresses looked up in advance."""
        if not self._addresses:
            return socket.create_connection(address, timeout, source)
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in self._addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        self._addresses = []  # stale: look up again next time
        raise error or OSError("no address")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
            self._conn._create_connection = self._create_connection  # type: ignore[attr-defined]
        return self._conn

    def _body(self, body: bytes) -> bytes:
        if self._compression == "gzip":
            return gzip.compress(body, compresslevel=1)
        if self._compression == "deflate":
            return zlib.compress(body, 1)
        return body

    def send(self, body: bytes) -> bool:
        """Send one request; False (and nothing sent) while backing off or on error."""
        now = time.monotonic()
        if now < self._resume_at:
            return False
        body = self._body(body)
        try:
            conn = self._connection()
            conn.request("POST", self._path, body, self._headers)
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
            problem = f"HTTP {response.status}"
        except Exception as exc:  # OSError, HTTPException; at interpreter shutdown, gevent's
            # resolver cannot start its thread (RuntimeError): never leave the connection
            # half-used (the next request would fail with CannotSendRequest)
            ok, problem = False, f"{type(exc).__name__}: {exc}"
            self.close()
        if ok:
            if self._failing:
                health.recovered(self.url)
            self._failing, self._backoff = False, 0.0
            return True
        self.failures += 1
        self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
        self._resume_at = time.monotonic() + self._backoff
        if not self._failing:
            health.failed(self.url, problem)
        self._failing = True
        return False

    def limit_timeout(self, seconds: float) -> None:
        """At exit: never wait longer than ``seconds`` for the collector. The open
        connection is kept (a new one at interpreter shutdown may be impossible:
        gevent resolves names on a thread), with the shorter timeout."""
        self.timeout = min(self.timeout, seconds)
        conn = self._conn
        if conn is not None:
            conn.timeout = self.timeout
            if conn.sock is not None:
                with suppress(OSError):
                    conn.sock.settimeout(self.timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connection. Closing this process's
        copy of the socket does not disturb the parent's (no shutdown, and closing
        a TLS socket sends no close_notify)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # whatever state the parent left it in
                conn.close()
