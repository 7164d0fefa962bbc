"""Exclusive stage totals straight from a Timeline, without building a tree.

Most requests are not exported as spans (head sampling), yet every request
feeds the stage metrics. For those, building ``Node`` objects only to sum
them is waste: this module nests the same intervals with plain tuples, in
the same order and with the same tie-breaks as ``flowtrace.build.tree``, and
returns the same totals. A test checks both agree on every route.
"""

from __future__ import annotations

from typing import Any

from flowtrace import semconv as sc
from flowtrace.capture.timeline import CACHE, DB, HOOK, LAYER, RESOLVE, TEMPLATE, VIEW, Timeline

# event kind -> (priority for equal intervals, stage); the same as tree._event_node
_KINDS = {
    HOOK: (2, sc.MIDDLEWARE),
    RESOLVE: (2, sc.URL_RESOLUTION),
    VIEW: (3, sc.VIEW),
    TEMPLATE: (4, sc.TEMPLATE),
    CACHE: (5, sc.CACHE),
    DB: (6, sc.DB),
}


def stage_totals(tl: Timeline, queue: int | None, until: int = 0
                 ) -> tuple[dict[str, int], Any, int]:  # fmt: skip
    """(exclusive ns per stage, Django's resolved (route, view) or None, query count).

    A middleware layer is one interval here: its request and response halves
    are the layer minus the inner layer, which is what the tree's two nodes
    add up to. ``until``: the totals so far, of a request still running (the
    ``Server-Timing`` header, when the response starts).
    """
    root_start = tl.t_call - (queue or 0)
    t_return = until or tl.t_return
    root_end = until or max(tl.t_close_end or tl.t_return, tl.t_return)
    django = bool(tl.layer_names)
    items: list[tuple[int, int, int, str]] = []  # (start, -end, priority, stage)
    if queue:
        items.append((root_start, -tl.t_call, 0, sc.QUEUE))
    items.append((tl.t_call, -t_return, 0, sc.SETUP if django else sc.VIEW))
    if tl.t_close_start and not until:
        items.append((tl.t_return, -tl.t_close_start, 0, sc.STREAMING))
        items.append((tl.t_close_start, -tl.t_close_end, 0, sc.CLOSE))
    resolved = None
    queries = 0
    kinds = _KINDS
    for kind, t0, t1, payload in tl.events:
        if kind == LAYER:
            if django:  # layer 0 is Django's own _get_response: its own time is setup
                items.append((t0, -t1, 1, sc.MIDDLEWARE if payload else sc.SETUP))
            continue
        known = kinds.get(kind)
        if known is None:
            continue
        if kind == DB:
            queries += 1
        elif kind == RESOLVE and payload is not None:
            resolved = payload
        items.append((t0, -t1, known[0], known[1]))
    items.sort()
    totals: dict[str, int] = {}
    stack: list[tuple[int, int, str | None]] = [(root_start, root_end, None)]
    top_start, top_end, top_stage = stack[-1]
    for start, neg_end, _, stage in items:
        end = -neg_end
        while len(stack) > 1 and (start < top_start or end > top_end):
            stack.pop()
            top_start, top_end, top_stage = stack[-1]
        if start < top_start or end > top_end or end < start:  # only a broken interval
            start = max(start, top_start)
            end = min(max(end, start), top_end)
        duration = end - start
        totals[stage] = totals.get(stage, 0) + duration
        if top_stage is not None:
            totals[top_stage] -= duration
        stack.append((start, end, stage))
        top_start, top_end, top_stage = start, end, stage
    return totals, resolved, queries


def server_timing(tl: Timeline, now: int) -> str:
    """The ``Server-Timing`` header value when the response starts: exclusive ms per
    stage so far (setup, middleware, URL resolution, view, db, template, cache) and
    ``app``, the whole application call until then."""
    totals, _, queries = stage_totals(tl, None, now)
    parts = []
    for stage in sc.STAGES:
        ns = totals.get(stage, 0)
        if ns > 0:
            desc = f';desc="{queries} queries"' if stage == sc.DB else ""
            parts.append(f"{stage};dur={ns / 1e6:.3f}{desc}")
    parts.append(f"app;dur={(now - tl.t_call) / 1e6:.3f}")
    return ", ".join(parts)
