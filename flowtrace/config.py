"""Configuration: one dataclass fed by keywords, Django settings and env.

Precedence, lowest first: defaults, Django's ``FLOWTRACE`` dict, the
``FlowTrace(...)`` keywords, then ``FLOWTRACE_*`` environment variables. The
environment wins because it is the operator's override: ``FLOWTRACE_ENABLED=0``
must switch flowtrace off without a deploy. Everything is validated once,
here, never per request; an error is one ``ValueError`` line that names the
option, the bad value and where it came from.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

MiddlewareSpans = Literal["halves", "combined", "none"]
QueryCapture = Literal["off", "redacted", "full"]
SpanExport = Literal["auto", "sdk", "direct"]
UrlPath = Literal["full", "sanitized", "route"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "middleware_spans": ("halves", "combined", "none"),
    "capture_query": ("off", "redacted", "full"),
    "span_export": ("auto", "sdk", "direct"),
    "url_path": ("full", "sanitized", "route"),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

#: Where the queue-time header is believed by default: loopback, private
#: networks and unix sockets, i.e. the proxies a deployment puts in front.
PRIVATE_NETWORKS = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
)  # fmt: skip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Config:
    """Every option of ``FlowTrace``; see the README's Configuration table."""

    enabled: bool = True
    middleware_spans: MiddlewareSpans = "halves"
    record_sql: bool = True
    record_sql_parameters: bool = False
    capture_headers: tuple[str, ...] = ()
    capture_query: QueryCapture = "off"
    url_path: UrlPath | Callable[[str, Any], str] = field(default="sanitized", compare=False)
    record_user_agent: bool = True
    record_exception_messages: bool = False
    max_queue_time: float = 300.0
    trusted_proxies: tuple[str, ...] = PRIVATE_NETWORKS
    slow_threshold: float | None = 1.0
    keep_errors: bool = True
    exclude_urls: tuple[str, ...] | None = None
    metrics: bool = True
    http_server_metric: bool | None = None  # None: on unless OTel Django is active
    metrics_per_middleware: bool = False
    max_routes: int = 300
    db_spans: bool = True
    template_spans: bool = True
    cache_spans: bool = True
    span_budget: int = 200
    duplicate_query_threshold: int = 5
    server_timing: bool = False
    max_pending: int = 2048
    export_interval: float = 1.0
    shutdown_timeout: float = 2.0
    max_attribute_length: int = 2048
    output_file: str | None = None
    span_export: SpanExport = "auto"
    route_resolver: Callable[[Mapping[str, Any]], str | None] | None = field(
        default=None, compare=False
    )

    @property
    def header_environ_keys(self) -> tuple[tuple[str, str], ...]:
        """(environ key, header name) pairs for the opt-in header allowlist."""
        return tuple(("HTTP_" + h.upper().replace("-", "_"), h) for h in self.capture_headers)

    @property
    def trusted_networks(self) -> tuple[Network, ...] | None:
        """The proxies whose queue-time header is believed (None: every peer)."""
        if "*" in self.trusted_proxies:
            return None
        return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)


# --- validation: one check per option kind ------------------------------------------

_SECONDS = ("max_queue_time", "slow_threshold", "export_interval", "shutdown_timeout")
_COUNTS = {"max_pending": 1, "max_attribute_length": 16, "max_routes": 1, "span_budget": 1,
           "duplicate_query_threshold": 2}  # fmt: skip
_BOOLS = ("enabled", "record_sql", "record_sql_parameters", "record_user_agent",
          "record_exception_messages", "keep_errors", "metrics", "metrics_per_middleware",
          "db_spans", "template_spans", "cache_spans", "server_timing")  # fmt: skip
_LISTS = ("capture_headers", "trusted_proxies", "exclude_urls")


def _check(name: str, value: Any) -> Any:
    """The validated value of one option, or ValueError (message without source)."""
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
        return value
    if name == "http_server_metric":
        if value is not None and not isinstance(value, bool):
            raise ValueError("must be True, False or None (automatic)")
        return value
    if name in _SECONDS:
        if value is None and name == "slow_threshold":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number of seconds (e.g. 0.5)")
        if value < 0 or (value == 0 and name != "slow_threshold"):
            raise ValueError("must be > 0 seconds" if name != "slow_threshold" else "must be >= 0")
        return float(value)
    if name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < _COUNTS[name]:
            raise ValueError(f"must be a whole number >= {_COUNTS[name]}")
        return value
    if name in _CHOICES:
        if name == "url_path" and callable(value):
            return value
        if value not in _CHOICES[name]:
            choices = ", ".join(repr(c) for c in _CHOICES[name])
            extra = " or a callable(path, match)" if name == "url_path" else ""
            raise ValueError(f"must be one of {choices}{extra}")
        return value
    if name in _LISTS:
        return _check_list(name, value)
    if name == "output_file":
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ValueError("must be a file path or None")
        return os.fspath(value) if value else None
    if name == "route_resolver":
        if value is not None and not callable(value):
            raise ValueError("must be a callable(environ) -> str | None, or None")
        return value
    return value  # pragma: no cover - every field is listed above


def _check_list(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None and name == "exclude_urls":
        return None
    if isinstance(value, str):  # "a, b": a comma-separated list, as in environment variables
        value = [item for item in (part.strip() for part in value.split(",")) if item]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(item, str) for item in value
    ):
        raise ValueError("must be a list of strings (or one comma-separated string)")
    items = tuple(value)
    if name == "capture_headers":
        return tuple(h.strip().lower() for h in items)
    if name == "trusted_proxies":
        for item in items:
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or network") from None
    if name == "exclude_urls":
        for item in items:
            try:
                re.compile(item)
            except re.error as exc:
                raise ValueError(f"{item!r} is not a regular expression ({exc})") from None
    return items


# --- sources -----------------------------------------------------------------------

#: FLOWTRACE_* environment variables and the options they set.
ENV_OPTIONS = {
    "FLOWTRACE_ENABLED": "enabled",
    "FLOWTRACE_MIDDLEWARE_SPANS": "middleware_spans",
    "FLOWTRACE_SLOW_THRESHOLD": "slow_threshold",
    "FLOWTRACE_OUTPUT_FILE": "output_file",
    "FLOWTRACE_SPAN_EXPORT": "span_export",
    "FLOWTRACE_EXPORT_INTERVAL": "export_interval",
    "FLOWTRACE_SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "FLOWTRACE_TRUSTED_PROXIES": "trusted_proxies",
    "FLOWTRACE_SERVER_TIMING": "server_timing",
}


def _from_env(name: str, raw: str) -> Any:
    """An environment variable's text as the option's type (ValueError if it is not)."""
    text = raw.strip()
    if name in _BOOLS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("must be 1/true/yes/on or 0/false/no/off")
    if name in _SECONDS:
        if name == "slow_threshold" and text.lower() in ("", "none", "off"):
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number of seconds (e.g. 0.5)") from None
    if name == "output_file":
        return text or None
    return text


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
        raise ValueError(
            f"flowtrace: settings.FLOWTRACE must be a dict, not {type(value).__name__}"
        )
    return dict(value)


def _unknown(name: str, source: str, known: set[str]) -> ValueError:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"flowtrace: unknown option {name!r} in {source}{hint}")


def load_config(overrides: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Merge defaults, Django settings, keywords and environment into a Config."""
    known = {f.name for f in fields(Config)}
    merged: dict[str, tuple[Any, str]] = {}
    for source, values in (("settings.FLOWTRACE", _django_settings()),
                           ("FlowTrace() keywords", dict(overrides))):  # fmt: skip
        for name, value in values.items():
            if name not in known:
                raise _unknown(name, source, known)
            merged[name] = (value, source)
    environ = os.environ if env is None else env
    for variable, name in ENV_OPTIONS.items():
        if variable in environ:
            try:
                merged[name] = (_from_env(name, environ[variable]), f"${variable}")
            except ValueError as exc:
                raise ValueError(f"flowtrace: {variable}={environ[variable]!r}: {exc}") from None
    checked: dict[str, Any] = {}
    for name, (value, source) in merged.items():
        try:
            checked[name] = _check(name, value)
        except ValueError as exc:
            raise ValueError(f"flowtrace: {name}={value!r} (from {source}): {exc}") from None
    return replace(Config(), **checked)
