"""N+1 queries: the same SQL text executed many times in one request.

``duplicate_query_threshold`` (5, as django-debug-toolbar and nplusone count)
executions of one statement make it a duplicate; the request's
``flowtrace.db.duplicates`` is the number of executions beyond the first of
every such statement (0 for a clean request), recorded as a metric by route and,
when not 0, on the root span with the worst statement, its executions and their
total time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flowtrace.build.sql import query_text
from flowtrace.capture.timeline import DB

#: (executions beyond the first, the worst statement, its executions, its events' indices)
Duplicates = tuple[int, str, int, tuple[int, ...]]


def find(events: list[Any], threshold: int) -> Duplicates | None:
    """The request's duplicated queries, or None."""
    texts = [(i, payload[0]) for i, (kind, _, _, payload) in enumerate(events) if kind == DB]
    if len(texts) < threshold:
        return None
    counts = Counter(sql if type(sql) is str else query_text(sql) for _, sql in texts)
    repeated = {text: n for text, n in counts.items() if n >= threshold}
    if not repeated:
        return None
    extra = sum(n - 1 for n in repeated.values())
    worst = max(repeated, key=repeated.__getitem__)
    indices = tuple(i for i, sql in texts
                    if (sql if type(sql) is str else query_text(sql)) == worst)  # fmt: skip
    return extra, worst, repeated[worst], indices


def total_ns(events: list[Any], indices: tuple[int, ...]) -> int:
    """The worst statement's executions' time."""
    return sum(events[i][2] - events[i][1] for i in indices)
