"""Call a WSGI app in-process the way a server would; return what it sent."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import setup_testing_defaults


@dataclass
class Result:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    close_calls: int = 0
    exc_info: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def environ_for(
    path: str = "/", method: str = "GET", headers: dict[str, str] | None = None,
    body: bytes = b"", query: str = "", **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
    }
    setup_testing_defaults(env)
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        env[key] = value
    env.update(extra)
    return env


def call(app: Any, path: str = "/", **kwargs: Any) -> Result:
    """Run one request, consume the body, close it once."""
    env = environ_for(path, **kwargs)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"], seen["exc_info"] = status, headers, exc_info
        return lambda data: None

    iterable = app(env, start_response)
    try:
        body = b"".join(iterable)
    finally:
        if hasattr(iterable, "close"):
            iterable.close()
    return Result(seen["status"], seen["headers"], body, exc_info=seen["exc_info"])


class Body:
    """A response iterable that counts close() calls and can fail on demand:
    mid-stream (``fail_at``) or in ``close()`` (``close_error``)."""

    def __init__(self, chunks: list[Any], fail_at: int | None = None,
                 close_error: Exception | None = None) -> None:  # fmt: skip
        self.chunks = chunks
        self.fail_at = fail_at
        self.close_error = close_error
        self.closed = 0

    def __iter__(self) -> Iterator[Any]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise ValueError("mid-stream failure")
            yield chunk

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error
