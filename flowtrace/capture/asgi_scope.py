"""An ASGI HTTP scope seen as the WSGI environ the capture core reads.

The rest of the capture layer (request snapshot, queue header, propagation,
sampler attributes, excluded URLs) reads a WSGI environ; one small dict built
from the scope serves it unchanged, with the same encodings as WSGI (paths and
header values as latin-1 strings of the raw bytes), so that both front ends
record byte-identical attributes for the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def environ_of(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The environ keys flowtrace reads, from an ``http`` scope (never raises on a
    malformed scope: what cannot be read is left out)."""
    environ: dict[str, Any] = {}
    method = scope.get("method")
    if isinstance(method, str):
        environ["REQUEST_METHOD"] = method
    path = scope.get("path")
    root = scope.get("root_path") or ""
    if isinstance(path, str) and isinstance(root, str):
        if root and path.startswith(root):  # as Django's ASGIRequest splits them
            path = path[len(root) :]
        environ["PATH_INFO"] = _latin1(path)
        environ["SCRIPT_NAME"] = _latin1(root)
    query = scope.get("query_string")
    if isinstance(query, (bytes, bytearray)):
        environ["QUERY_STRING"] = bytes(query).decode("latin-1")
    version = scope.get("http_version")
    if isinstance(version, str):
        environ["SERVER_PROTOCOL"] = "HTTP/" + version
    scheme = scope.get("scheme")
    environ["wsgi.url_scheme"] = scheme if isinstance(scheme, str) else "http"
    server = scope.get("server")
    if isinstance(server, (tuple, list)) and len(server) == 2:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = str(server[1]) if server[1] is not None else ""
    client = scope.get("client")
    if isinstance(client, (tuple, list)) and client and isinstance(client[0], str):
        environ["REMOTE_ADDR"] = client[0]
    headers = scope.get("headers")
    # any iterable is valid ASGI, but a one-shot iterator read here would be gone for
    # the application: only lists and tuples are read
    for item in headers if isinstance(headers, (list, tuple)) else ():
        try:
            name, value = item
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
        except (TypeError, ValueError, AttributeError):
            continue  # a malformed header: not ours to judge, just not read
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        previous = environ.get(key)
        environ[key] = text if previous is None else f"{previous},{text}"
    return environ


def _latin1(text: str) -> str:
    """A decoded path back to WSGI's form: its UTF-8 bytes as latin-1 characters."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")
    except UnicodeEncodeError:
        return text
