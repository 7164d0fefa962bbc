"""A minimal OTLP/HTTP client for flowtrace's direct span export.

Reads the standard variables (``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``,
``..._HEADERS``, ``..._TIMEOUT`` in seconds as the Python SDK reads it,
``..._COMPRESSION=gzip``). It never retries inline: a failed batch is dropped
and counted, and sending pauses with exponential backoff (0.5 s up to 30 s), so
a dead or slow collector costs the app nothing but the lost telemetry.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import time
from urllib.parse import unquote, urlsplit

logger = logging.getLogger("flowtrace")

_DEFAULT_ENDPOINT = "http://localhost:4318"


def _env(name: str) -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{name}", ""
    )


def traces_url() -> str:
    specific = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or _DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/x-protobuf", "User-Agent": "flowtrace"}
    for item in _env("HEADERS").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
    return headers


class OtlpHttpSender:
    """POSTs ExportTraceServiceRequest bodies over one keep-alive connection."""

    def __init__(self, url: str | None = None, timeout: float | None = None) -> None:
        self.url = url or traces_url()
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path or "/v1/traces"
        raw_timeout = _env("TIMEOUT")
        self.timeout = timeout if timeout is not None else float(raw_timeout or 10)
        self._gzip = _env("COMPRESSION").strip().lower() == "gzip"
        self._headers = _headers()
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self._backoff = 0.0
        self._resume_at = 0.0
        self._failing = False
        self.failures = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def send(self, body: bytes) -> bool:
        """Send one request; False (and nothing sent) while backing off or on error."""
        now = time.monotonic()
        if now < self._resume_at:
            return False
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            conn = self._connection()
            conn.request("POST", self._path, body, self._headers)
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
            problem = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
            self.close()
        if ok:
            if self._failing:
                logger.warning("flowtrace: span export to %s recovered", self.url)
            self._failing, self._backoff = False, 0.0
            return True
        self.failures += 1
        self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
        self._resume_at = time.monotonic() + self._backoff
        if not self._failing:
            logger.warning("flowtrace: span export to %s failed (%s); dropping spans and "
                           "retrying with backoff (logged once until it recovers)",
                           self.url, problem)  # fmt: skip
        self._failing = True
        return False

    def limit_timeout(self, seconds: float) -> None:
        """At exit: never wait longer than ``seconds`` for the collector."""
        self.timeout = min(self.timeout, seconds)
        self.close()  # the next connection uses the new timeout

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
