"""What a finished request came to: status, route, error, queue time.

Pure functions of a Timeline, run on the exporter thread; nothing here
raises on odd input (an exception whose ``__str__`` raises, a garbage
``REMOTE_ADDR``): the worst case is a placeholder text.
"""

from __future__ import annotations

import ipaddress
import traceback
from functools import lru_cache
from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.names import render_route
from flowtrace.capture.queue_time import queue_ns
from flowtrace.capture.request_info import REMOTE_ADDR, queue_header
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config, Network


def status_code_of(status: str | None) -> int:
    if not status:
        return 0
    try:
        return int(status[:3])
    except ValueError:
        return 0


def route_of(tl: Timeline, resolved: tuple[Any, Any] | None) -> str:
    """http.route: the route resolver's answer, Django's pattern (rendered, see
    ``flowtrace.build.names``), or the ``(unmatched)`` fallback."""
    if tl.route:
        return tl.route
    if resolved is None or not isinstance(resolved[0], str):
        return sc.UNMATCHED_ROUTE
    if _is_wagtail_serve(resolved[1]):  # the catch-all, without a page: a 404
        return sc.UNMATCHED_ROUTE
    return render_route(resolved[0])


def _is_wagtail_serve(view: Any) -> bool:
    return (
        getattr(view, "__module__", None) == "wagtail.views"
        and getattr(view, "__name__", None) == "serve"
    )


def error_type_of(tl: Timeline, status_code: int) -> str | None:
    if tl.exc is not None:
        return type(tl.exc).__qualname__
    return str(status_code) if status_code >= 500 else None


def error_of(tl: Timeline, messages: bool) -> tuple[str, str, str] | None:
    """(type, message, stacktrace) of an exception the app raised or Django handled.

    Formatting a traceback is not free, so this runs only for exported spans.
    Without ``messages`` (the default: a message can carry personal data, e.g. a
    unique-constraint error quoting an e-mail address) the message is left out
    of both the event and the stack trace.
    """
    exc = tl.exc if tl.exc is not None else tl.app_exc
    if exc is None:
        return None
    kind = type(exc).__qualname__
    try:
        if messages:
            message = str(exc)[:1024]
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            message = ""
            frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
            stack = "Traceback (most recent call last):\n" + "".join(frames) + kind
    except Exception:  # an exception whose __str__ raises: its type is still known
        message, stack = "<unprintable>" if messages else "", ""
    return kind, message, stack[:8192]


def root_outcome(
    error: tuple[str, str, str] | None, status_code: int
) -> tuple[tuple[int, str], dict[str, str] | None]:
    """(status code, description) of the SERVER span and its ``exception`` event
    attributes: ERROR on an exception or a 5xx, as the HTTP semconv asks."""
    if error is not None:
        kind, message, stack = error
        exception = {"exception.type": kind}
        if message:
            exception["exception.message"] = message
        if stack:
            exception["exception.stacktrace"] = stack
        description = f"{kind}: {message}" if message else kind
        return (sc.STATUS_ERROR, description[:256]), exception
    return ((sc.STATUS_ERROR, "") if status_code >= 500 else (sc.STATUS_UNSET, "")), None


@lru_cache(maxsize=1024)
def _trusted(peer: Any, networks: tuple[Network, ...]) -> bool:
    if not peer:  # a unix socket: the peer is on this machine
        return True
    try:
        address = ipaddress.ip_address(str(peer).split("%", 1)[0])
    except ValueError:
        return False
    return any(address in network for network in networks)


def trusted_queue_ns(tl: Timeline, cfg: Config, networks: tuple[Network, ...] | None) -> int | None:
    """Queue time from ``X-Request-Start``, believed only from a trusted peer (the
    proxies in front: ``trusted_proxies``), within ``max_queue_time``."""
    header = queue_header(tl.request)
    if header is None:
        return None
    if networks is not None and not _trusted(tl.request[REMOTE_ADDR], networks):
        return None
    return queue_ns(header, tl.wall_ns, cfg.max_queue_time)
