"""Parse a front proxy's ``X-Request-Start`` / ``X-Queue-Start`` header.

Accepted, as New Relic and Scout accept them: ``t=1700000000.123`` (nginx
``t=${msec}``), ``t=1700000000123456`` (Apache ``%t``, microseconds), bare
numbers, in seconds, milliseconds, microseconds or nanoseconds, told apart
by magnitude. Anything else, or a timestamp in the future or older than the
configured bound, is ignored: a queue stage that lies is worse than none.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger("flowtrace")

_HEADER = re.compile(r"\s*(?:t\s*=\s*)?(\d{1,20}(?:\.\d{1,9})?)\s*\Z")
_MAX_LENGTH = 64
# Tolerated clock skew between the proxy and this host before "future" means bogus.
_SKEW_NS = 5_000_000  # 5 ms


def _scale(whole: str, fraction: str, digits: int) -> int:
    """``whole.fraction`` times 10**digits, exactly (no float rounding)."""
    return int(whole + (fraction + "0" * digits)[:digits])


def parse_queue_start(header: str | None) -> int | None:
    """Epoch nanoseconds from a header value, or None when absent or unusable."""
    if not header or len(header) > _MAX_LENGTH:
        return None
    match = _HEADER.match(header)
    if match is None:
        return None
    whole, _, fraction = match.group(1).partition(".")
    value = int(whole)
    if value < 10**8:  # before 1973 in seconds, or plain garbage
        return None
    if value < 10**11:  # seconds: 1e9..1e11 covers 2001..5138
        return _scale(whole, fraction, 9)
    if value < 10**14:  # milliseconds
        return _scale(whole, fraction, 6)
    if value < 10**17:  # microseconds
        return _scale(whole, fraction, 3)
    if value < 10**20:  # nanoseconds
        return value
    return None


def queue_ns(header: str | None, arrival_wall_ns: int, max_seconds: float) -> int | None:
    """Nanoseconds spent queued before the WSGI server called the app.

    None when the header is missing, malformed, in the future, or older than
    ``max_seconds``: each is logged at debug level only.
    """
    start = parse_queue_start(header)
    if start is None:
        if header:
            logger.debug("flowtrace: ignoring unparsable queue header %.64r", header)
        return None
    waited = arrival_wall_ns - start
    if waited < -_SKEW_NS or waited > max_seconds * 1e9:
        logger.debug("flowtrace: ignoring queue header %r (waited %d ns)", header, waited)
        return None
    return max(waited, 0)
