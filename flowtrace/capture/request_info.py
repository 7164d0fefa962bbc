"""What flowtrace reads from the WSGI environ, and the root span's attributes.

On the request thread only ``snapshot()`` runs: one C-level ``map`` over a
fixed key list. Decoding, truncation and the privacy rules run later in the
exporter thread. Query strings, cookies, ``Authorization`` and other headers
are never read unless the user opts in (``capture_query``,
``capture_headers``).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flowtrace import semconv as sc
from flowtrace.config import Config

REQUEST_KEYS = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "SCRIPT_NAME",
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "HTTP_USER_AGENT",
    "HTTP_X_REQUEST_START",
    "HTTP_X_QUEUE_START",
    "QUERY_STRING",
    "REMOTE_ADDR",
)
(METHOD, PATH_INFO, SCRIPT_NAME, SCHEME, HOST, SERVER_NAME, SERVER_PORT,
 PROTOCOL, USER_AGENT, REQUEST_START, QUEUE_START, QUERY, REMOTE_ADDR) = range(
    len(REQUEST_KEYS))  # fmt: skip
_HEADERS = len(REQUEST_KEYS)  # opt-in header values follow the fixed keys


def snapshot(environ: dict[str, Any], header_keys: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """The environ values flowtrace needs, copied so later mutation can't matter."""
    values = tuple(map(environ.get, REQUEST_KEYS))
    if header_keys:
        values += tuple(environ.get(key) for key, _ in header_keys)
    return values


def wsgi_text(value: Any, limit: int) -> str:
    """A WSGI "bytes-as-latin-1" string decoded as UTF-8, never raising."""
    if not isinstance(value, str):
        return ""
    value = str(value[: limit * 4])
    try:
        text: str = value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # the server already decoded it
        text = value
    return text[:limit]


def method_of(request: tuple[Any, ...]) -> tuple[str, str]:
    """(method, original): methods are case-sensitive; unknown ones are ``_OTHER``."""
    original = request[METHOD] if isinstance(request[METHOD], str) else ""
    return (original if original in sc.KNOWN_METHODS else sc.OTHER_METHOD), original[:32]


def queue_header(request: tuple[Any, ...]) -> str | None:
    value = request[REQUEST_START] or request[QUEUE_START]
    return value if isinstance(value, str) else None


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(key, "REDACTED") for key, _ in pairs])


#: Request headers whose values are never recorded, even when listed in
#: ``capture_headers`` (as OpenTelemetry's sanitize lists do): "[REDACTED]".
CREDENTIAL_HEADERS = frozenset((
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "x-auth-token", "x-csrftoken", "x-csrf-token", "x-xsrf-token", "x-amz-security-token",
))  # fmt: skip
REDACTED = "[REDACTED]"
#: Route parameters whose values ``url_path="sanitized"`` masks in ``url.path``.
_SECRET_PARAMETER = re.compile(
    r"token|secret|passw|signature|signed|uidb|nonce|apikey|(^|_)(key|sig|hash|auth|code|pwd|otp)"
    r"(_|$)", re.IGNORECASE)  # fmt: skip


def _sanitize_fields() -> re.Pattern[str] | None:
    """``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``, as OpenTelemetry reads it."""
    raw = os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        return None
    try:
        return re.compile("|".join(items), re.IGNORECASE)
    except re.error:
        return None


def masked_path(path: str, match: Any, mode: Any) -> str:
    """``url.path`` under the ``url_path`` option: route parameters' values masked
    as ``{name}`` (all of them, or only secret-looking ones), or a callable's answer."""
    if mode == "full" or match is None and not callable(mode):
        return path
    if callable(mode):
        return str(mode(path, match))
    masks: dict[str, str] = {}  # the value as it appears in the path -> its name
    for name, value in getattr(match, "kwargs", {}).items():
        text = "" if value is None else str(value)  # a uuid.UUID, an int: as in the URL
        if text and (mode == "route" or _SECRET_PARAMETER.search(name)):
            masks[text] = name
    if mode == "route":
        for index, value in enumerate(getattr(match, "args", ())):
            text = "" if value is None else str(value)
            if text:
                masks.setdefault(text, str(index))
    if not masks:
        return path
    segments = path.split("/")
    for text, name in sorted(masks.items(), key=lambda item: -len(item[0])):
        parts = text.split("/")  # a <path:...> value spans several segments
        for start in range(len(segments) - len(parts) + 1):
            if segments[start : start + len(parts)] == parts:
                segments[start : start + len(parts)] = ["{" + name + "}"]
                break
    return "/".join(segments)


def root_attributes(request: tuple[Any, ...], cfg: Config, match: Any = None) -> dict[str, Any]:
    """Stable HTTP semantic-convention attributes for the SERVER span."""
    limit = cfg.max_attribute_length
    method, original = method_of(request)
    attrs: dict[str, Any] = {sc.HTTP_METHOD: method}
    if original != method:
        attrs[sc.HTTP_METHOD_ORIGINAL] = original
    path = wsgi_text(request[SCRIPT_NAME], limit) + wsgi_text(request[PATH_INFO], limit)
    attrs[sc.URL_PATH] = masked_path(path, match, cfg.url_path)[:limit] or "/"
    attrs.update(protocol_attributes(request))
    host = request[HOST] if isinstance(request[HOST], str) else request[SERVER_NAME]
    if isinstance(host, str) and host:
        name, _, port = host[:255].rpartition(":") if host.count(":") == 1 else (host[:255], "", "")
        attrs[sc.SERVER_ADDRESS] = name or host[:255]
        port = port or (request[SERVER_PORT] if not request[HOST] else "")
        if isinstance(port, str) and port.isdigit() and len(port) <= 5:
            attrs[sc.SERVER_PORT] = int(port)
    if cfg.record_user_agent and isinstance(request[USER_AGENT], str):
        attrs[sc.USER_AGENT] = wsgi_text(request[USER_AGENT], limit)
    query = request[QUERY]
    if cfg.capture_query != "off" and isinstance(query, str) and query:
        text = wsgi_text(query, limit)
        attrs[sc.URL_QUERY] = text if cfg.capture_query == "full" else _redact_query(text)
    sanitize = _sanitize_fields() if cfg.capture_headers else None
    for (_, name), value in zip(cfg.header_environ_keys, request[_HEADERS:], strict=False):
        if isinstance(value, str):
            secret = name in CREDENTIAL_HEADERS or (sanitize is not None and sanitize.search(name))
            text = REDACTED if secret else wsgi_text(value, limit)
            attrs[sc.REQUEST_HEADER_PREFIX + name] = (text,)
    return attrs


def protocol_attributes(request: tuple[Any, ...]) -> dict[str, Any]:
    """``url.scheme`` and ``network.protocol.version``: the semconv metric's too."""
    attrs: dict[str, Any] = {}
    if isinstance(request[SCHEME], str):
        attrs[sc.URL_SCHEME] = request[SCHEME][:16]
    protocol = request[PROTOCOL]
    if isinstance(protocol, str) and protocol.startswith("HTTP/"):
        attrs[sc.PROTOCOL_VERSION] = protocol[5:12]
    return attrs
