"""What flowtrace reads from the WSGI environ, and the root span's attributes.

On the request thread only ``snapshot()`` runs: one C-level ``map`` over a
fixed key list. Decoding, truncation and the privacy rules run later in the
exporter thread. Query strings, cookies, ``Authorization`` and other headers
are never read unless the user opts in (``capture_query``,
``capture_headers``).
"""

from __future__ import annotations

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
)
(METHOD, PATH_INFO, SCRIPT_NAME, SCHEME, HOST, SERVER_NAME, SERVER_PORT,
 PROTOCOL, USER_AGENT, REQUEST_START, QUEUE_START, QUERY) = range(len(REQUEST_KEYS))  # fmt: skip
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


def root_attributes(request: tuple[Any, ...], cfg: Config) -> dict[str, Any]:
    """Stable HTTP semantic-convention attributes for the SERVER span."""
    limit = cfg.max_attribute_length
    method, original = method_of(request)
    attrs: dict[str, Any] = {sc.HTTP_METHOD: method}
    if original != method:
        attrs[sc.HTTP_METHOD_ORIGINAL] = original
    path = wsgi_text(request[SCRIPT_NAME], limit) + wsgi_text(request[PATH_INFO], limit)
    attrs[sc.URL_PATH] = path[:limit] or "/"
    if isinstance(request[SCHEME], str):
        attrs[sc.URL_SCHEME] = request[SCHEME][:16]
    host = request[HOST] if isinstance(request[HOST], str) else request[SERVER_NAME]
    if isinstance(host, str) and host:
        name, _, port = host[:255].rpartition(":") if host.count(":") == 1 else (host[:255], "", "")
        attrs[sc.SERVER_ADDRESS] = name or host[:255]
        port = port or (request[SERVER_PORT] if not request[HOST] else "")
        if isinstance(port, str) and port.isdigit() and len(port) <= 5:
            attrs[sc.SERVER_PORT] = int(port)
    protocol = request[PROTOCOL]
    if isinstance(protocol, str) and protocol.startswith("HTTP/"):
        attrs[sc.PROTOCOL_VERSION] = protocol[5:12]
    if isinstance(request[USER_AGENT], str):
        attrs[sc.USER_AGENT] = wsgi_text(request[USER_AGENT], limit)
    query = request[QUERY]
    if cfg.capture_query != "off" and isinstance(query, str) and query:
        text = wsgi_text(query, limit)
        attrs[sc.URL_QUERY] = text if cfg.capture_query == "full" else _redact_query(text)
    for (_, name), value in zip(cfg.header_environ_keys, request[_HEADERS:], strict=False):
        if isinstance(value, str):
            attrs[sc.REQUEST_HEADER_PREFIX + name] = (wsgi_text(value, limit),)
    return attrs
