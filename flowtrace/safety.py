"""Never hurt the host app: flowtrace's own errors are logged once and counted.

Instrumentation code runs inside ``guard()``. In production an internal error
is logged once per call site, counted, and swallowed, so the request goes on
(untraced). Tests set ``STRICT`` (or ``FLOWTRACE_STRICT=1``) so that the same
error fails the test instead of hiding.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("flowtrace")

STRICT = os.environ.get("FLOWTRACE_STRICT", "") == "1"

_lock = threading.Lock()
_logged: set[str] = set()
errors: list[BaseException] = []  # kept (bounded) for tests to inspect
error_count = 0
_MAX_KEPT = 100


def report(where: str, exc: BaseException, reraise: bool = True) -> None:
    """Record an internal error; log it the first time ``where`` fails.

    In ``STRICT`` mode it is re-raised, unless ``reraise`` is false (the
    exporter thread, where raising would only kill the thread).
    """
    global error_count
    with _lock:
        error_count += 1
        if len(errors) < _MAX_KEPT:
            errors.append(exc)
        first = where not in _logged
        _logged.add(where)
    if first:
        logger.warning(
            "flowtrace internal error in %s; the request continues untraced "
            "(further errors here are counted, not logged)",
            where,
            exc_info=exc,
        )
    if STRICT and reraise:
        raise exc


@contextmanager
def guard(where: str) -> Iterator[None]:
    """Swallow (and report) any ``Exception`` raised by flowtrace code."""
    try:
        yield
    except Exception as exc:
        report(where, exc)


def reset() -> None:
    """Forget what was logged; for tests."""
    global error_count
    with _lock:
        _logged.clear()
        errors.clear()
        error_count = 0
