"""One voice for export failures: a process says "telemetry export failed" once
(whichever exporter failed first: flowtrace's span sender or an SDK exporter it
created) and "recovered" once when it works again. With the exit summary
(what was dropped), a process that lost telemetry says two lines in all."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("flowtrace")

_lock = threading.Lock()
_said = [False]  # a failure line is standing (not followed by a recovery)


def failed(target: str, problem: str) -> None:
    """An export to ``target`` failed: said once, until a recovery."""
    with _lock:
        if _said[0]:
            return
        _said[0] = True
    logger.warning(
        "flowtrace: telemetry export to %s failed (%s); dropping it and retrying with "
        "backoff (logged once until it recovers)", target, problem[:200],
    )  # fmt: skip


def recovered(target: str) -> None:
    """An export succeeded after failures: said once."""
    with _lock:
        if not _said[0]:
            return
        _said[0] = False
    logger.warning("flowtrace: telemetry export to %s recovered", target)


def after_fork() -> None:
    """A forked worker has said nothing yet."""
    _said[0] = False


reset = after_fork  # for tests: each starts with nothing said
