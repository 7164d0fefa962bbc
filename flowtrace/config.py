"""Configuration: one dataclass fed by keywords, Django settings and env.

Precedence, lowest first: defaults, Django's ``FLOWTRACE`` dict, the
``FlowTrace(...)`` keywords, then ``FLOWTRACE_*`` environment variables. The
environment wins because it is the operator's override: ``FLOWTRACE_ENABLED=0``
must switch flowtrace off without a deploy. Everything is validated once,
here, never per request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

MiddlewareSpans = Literal["halves", "combined", "none"]
QueryCapture = Literal["off", "redacted", "full"]
SpanExport = Literal["auto", "sdk", "direct"]

_MIDDLEWARE_SPANS = ("halves", "combined", "none")
_QUERY_CAPTURE = ("off", "redacted", "full")
_SPAN_EXPORT = ("auto", "sdk", "direct")
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Config:
    """Every option of ``FlowTrace``; see the README's Configuration table."""

    enabled: bool = True
    middleware_spans: MiddlewareSpans = "halves"
    record_sql: bool = True
    record_sql_parameters: bool = False
    capture_headers: tuple[str, ...] = ()
    capture_query: QueryCapture = "off"
    max_queue_time: float = 300.0
    slow_threshold: float | None = 1.0
    keep_errors: bool = True
    metrics: bool = True
    http_server_metric: bool | None = None  # None: on unless OTel Django is active
    metrics_per_middleware: bool = False
    max_pending: int = 2048
    export_interval: float = 1.0
    shutdown_timeout: float = 2.0
    max_attribute_length: int = 2048
    output_file: str | None = None
    span_export: SpanExport = "auto"
    route_resolver: Callable[[Mapping[str, Any]], str | None] | None = field(
        default=None, compare=False
    )

    def __post_init__(self) -> None:
        if self.middleware_spans not in _MIDDLEWARE_SPANS:
            raise ValueError(f"middleware_spans must be one of {_MIDDLEWARE_SPANS}")
        if self.capture_query not in _QUERY_CAPTURE:
            raise ValueError(f"capture_query must be one of {_QUERY_CAPTURE}")
        if self.span_export not in _SPAN_EXPORT:
            raise ValueError(f"span_export must be one of {_SPAN_EXPORT}")
        if self.max_queue_time <= 0:
            raise ValueError("max_queue_time must be > 0 seconds")
        if self.slow_threshold is not None and self.slow_threshold < 0:
            raise ValueError("slow_threshold must be >= 0 seconds or None")
        if self.max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        if self.export_interval <= 0:
            raise ValueError("export_interval must be > 0 seconds")
        if self.shutdown_timeout <= 0:
            raise ValueError("shutdown_timeout must be > 0 seconds")
        if self.max_attribute_length < 16:
            raise ValueError("max_attribute_length must be >= 16")
        headers = tuple(h.lower() for h in self.capture_headers)
        object.__setattr__(self, "capture_headers", headers)

    @property
    def header_environ_keys(self) -> tuple[tuple[str, str], ...]:
        """(environ key, header name) pairs for the opt-in header allowlist."""
        return tuple(("HTTP_" + h.upper().replace("-", "_"), h) for h in self.capture_headers)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Read the ``FLOWTRACE_*`` variables that map onto Config fields."""
    out: dict[str, Any] = {}
    if "FLOWTRACE_ENABLED" in env:
        out["enabled"] = env["FLOWTRACE_ENABLED"].strip().lower() not in _FALSE
    if "FLOWTRACE_MIDDLEWARE_SPANS" in env:
        out["middleware_spans"] = env["FLOWTRACE_MIDDLEWARE_SPANS"].strip()
    if "FLOWTRACE_SLOW_THRESHOLD" in env:
        raw = env["FLOWTRACE_SLOW_THRESHOLD"].strip().lower()
        out["slow_threshold"] = None if raw in ("", "none", "off") else float(raw)
    if "FLOWTRACE_OUTPUT_FILE" in env:
        out["output_file"] = env["FLOWTRACE_OUTPUT_FILE"].strip() or None
    if "FLOWTRACE_SPAN_EXPORT" in env:
        out["span_export"] = env["FLOWTRACE_SPAN_EXPORT"].strip()
    if "FLOWTRACE_EXPORT_INTERVAL" in env:
        out["export_interval"] = float(env["FLOWTRACE_EXPORT_INTERVAL"])
    if "FLOWTRACE_SHUTDOWN_TIMEOUT" in env:
        out["shutdown_timeout"] = float(env["FLOWTRACE_SHUTDOWN_TIMEOUT"])
    return out


def _django_settings() -> dict[str, Any]:
    """The ``FLOWTRACE`` dict from Django settings, if Django is configured."""
    try:
        from django.conf import settings
    except ImportError:
        return {}
    if not settings.configured:
        return {}
    value = getattr(settings, "FLOWTRACE", {})
    if not isinstance(value, Mapping):
        raise ValueError("settings.FLOWTRACE must be a dict")
    return dict(value)


def load_config(overrides: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Merge defaults, Django settings, keywords and environment into a Config."""
    known = {f.name for f in fields(Config)}
    merged: dict[str, Any] = {}
    for source in (_django_settings(), dict(overrides)):
        unknown = set(source) - known
        if unknown:
            raise ValueError(f"unknown flowtrace option(s): {', '.join(sorted(unknown))}")
        merged.update(source)
    try:
        merged.update(_env_overrides(os.environ if env is None else env))
    except ValueError as exc:
        raise ValueError(f"bad FLOWTRACE_* environment variable: {exc}") from None
    if "capture_headers" in merged:
        merged["capture_headers"] = tuple(merged["capture_headers"])
    return replace(Config(), **merged)
