"""Per-request work on the exporter thread: stage totals, metrics, then spans.

Metrics are recorded for every request, sampled or not, from full-detail
stage totals, so they are exact whatever the sampling rate or span detail
level. Spans are exported when the head sampler said so, or, even when it
did not, when the request was slow or failed ("keep what matters"): stages
are just timestamps until here, so that decision can be made at the end.

Three ways to the same numbers, cheapest first: a request whose shape was
learned is replayed (``flowtrace.export.layout``); an unexported one gets its totals
without a tree (``flowtrace.build.totals``); anything else builds the tree
(``flowtrace.build.tree``). Tests pin that all three agree.
"""

from __future__ import annotations

import traceback
from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.shape import count_spans, shape_middleware
from flowtrace.build.totals import stage_totals
from flowtrace.build.tree import PrefixedAttrs, StaticAttrs, build
from flowtrace.capture.queue_time import queue_ns
from flowtrace.capture.request_info import (
    QUERY,
    REQUEST_START,
    method_of,
    queue_header,
    root_attributes,
)
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config
from flowtrace.export.layout import Layout, Layouts, shape_key, slots_of
from flowtrace.export.sdk import MetricSink, exemplar_for

_ROOT_CACHE_LIMIT = 1024


def _plain_trace_state(tl: Timeline) -> bool:
    """No propagated ``tracestate`` (learned layouts encode an empty one)."""
    return tl.parent is None or not tl.parent.trace_state


def status_code_of(status: str | None) -> int:
    if not status:
        return 0
    try:
        return int(status[:3])
    except ValueError:
        return 0


def route_of(tl: Timeline, resolved: tuple[Any, Any] | None) -> str:
    """http.route: the route resolver's answer, Django's pattern, or the fallback."""
    if tl.route:
        return tl.route
    route = resolved[0] if resolved is not None else None
    return "/" + route if isinstance(route, str) else sc.UNMATCHED_ROUTE


def _error_type(tl: Timeline, status_code: int) -> str | None:
    if tl.exc is not None:
        return type(tl.exc).__qualname__
    return str(status_code) if status_code >= 500 else None


def error_of(tl: Timeline) -> tuple[str, str, str] | None:
    """(type, message, stacktrace) of an exception the app raised or Django handled.

    Formatting a traceback is not free, so this runs only for exported spans.
    """
    if tl.exc is not None:
        exc = tl.exc
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return type(exc).__qualname__, str(exc)[:1024], stack[:8192]
    return tl.app_exc_info


def root_outcome(
    error: tuple[str, str, str] | None, status_code: int
) -> tuple[tuple[int, str], dict[str, str] | None]:
    """(status code, description) of the SERVER span and its ``exception`` event
    attributes: ERROR on an exception or a 5xx, as the HTTP semconv asks."""
    if error is not None:
        exception = {"exception.type": error[0], "exception.message": error[1],
                     "exception.stacktrace": error[2]}  # fmt: skip
        return (sc.STATUS_ERROR, f"{error[0]}: {error[1]}"[:256]), exception
    return ((sc.STATUS_ERROR, "") if status_code >= 500 else (sc.STATUS_UNSET, "")), None


class Recorder:
    """Turns one finished Timeline into metrics and (maybe) spans."""

    def __init__(self, cfg: Config, spans: Any, metrics: MetricSink | None) -> None:
        self.cfg = cfg
        self.spans = spans
        self.metrics = metrics
        # Replaying learned shapes needs the direct encoder and the full-detail tree
        # as the spans (halves); per-middleware metrics still need the tree itself.
        replayable = cfg.middleware_spans == "halves" and not cfg.metrics_per_middleware
        self.layouts: Layouts | None = getattr(spans, "layouts", None) if replayable else None
        self._root_cache: dict[Any, StaticAttrs] = {}
        self._query_ignored = 1 if cfg.capture_query == "off" else 0

    def __call__(self, tl: Timeline) -> None:
        cfg = self.cfg
        queue = queue_ns(queue_header(tl.request), tl.wall_ns, cfg.max_queue_time)
        status_code = status_code_of(tl.status) or (500 if tl.exc is not None else 0)
        error_type = _error_type(tl, status_code)
        root_start = tl.t_call - (queue or 0)
        duration = max(tl.t_close_end or tl.t_return, tl.t_return) - root_start
        ttfb = tl.t_first_chunk - root_start if tl.t_first_chunk else None
        keep = self._keep_reason(tl, duration, error_type) if self.spans.enabled else None
        method, _ = method_of(tl.request)
        outcome = (method, status_code, error_type, duration, ttfb)
        layouts = self.layouts
        key = slots = None
        if layouts is not None and _plain_trace_state(tl):
            key = shape_key(tl, queue)
            if key is not None:
                slots = slots_of(tl, queue)
                layout = layouts.find(key, slots)
                if layout is not None:  # a shape seen before: no tree
                    self._replay(tl, layout, slots, keep, outcome, root_start)
                    return
                if not layouts.wants(key):
                    key = None
        if keep is None and key is None and not cfg.metrics_per_middleware:
            # No span will be exported (most requests under head sampling): the
            # metrics need no tree, the totals come straight from the events.
            if self.metrics is not None:
                totals, resolved, queries = stage_totals(tl, queue)
                route = route_of(tl, resolved)
                self._record(route, method, status_code, totals, None, duration, queries,
                             ttfb, error_type, None)  # fmt: skip
            return
        tree = build(tl, cfg, queue)
        if layouts is not None and key is not None and slots is not None:
            layouts.learn(key, tree, slots)
        route = route_of(tl, tree.resolved)
        queries = tree.count(sc.DB)
        if self.metrics is not None:
            per_mw = tree.middleware_totals() if cfg.metrics_per_middleware else None
            exemplar = exemplar_for(tl.trace_id, tl.span_id, tl.wall_ns) if keep else None
            self._record(route, method, status_code, tree.stage_totals(), per_mw, duration,
                         queries, ttfb, error_type, exemplar)  # fmt: skip
        if keep is None:
            return
        root = tree.root
        shape_middleware(tree, cfg.middleware_spans)
        # halves: every node is a span; other levels merged or dropped some
        spans = len(tree.nodes) if cfg.middleware_spans == "halves" else count_spans(root)
        name, attrs, status, exception = self._root(tl, route, method, status_code, error_type,
                                                    queries, keep, ttfb, spans)  # fmt: skip
        self.spans.emit(root, name, attrs, (tl.trace_id, tl.span_id, tl.parent),
                        tl.wall_offset, status, exception)  # fmt: skip

    def _replay(
        self, tl: Timeline, layout: Layout, slots: list[int], keep: str | None,
        outcome: tuple[str, int, str | None, int, int | None], root_start: int,
    ) -> None:  # fmt: skip
        """Metrics and (if kept) spans of a request whose shape has a layout."""
        method, status_code, error_type, duration, ttfb = outcome
        route = route_of(tl, layout.resolved)
        if self.metrics is not None:
            exemplar = exemplar_for(tl.trace_id, tl.span_id, tl.wall_ns) if keep else None
            self._record(route, method, status_code, layout.stage_totals(slots), None, duration,
                         layout.queries, ttfb, error_type, exemplar)  # fmt: skip
        if keep is None:
            return
        root = self._root(tl, route, method, status_code, error_type, layout.queries, keep, ttfb,
                          layout.spans)  # fmt: skip
        self.spans.emit_layout(layout, slots, tl, (root_start, root_start + duration), *root)

    def _root(
        self, tl: Timeline, route: str, method: str, status_code: int, error_type: str | None,
        queries: int, keep: str, ttfb: int | None, spans: int,
    ) -> tuple[str, dict[str, Any], tuple[int, str], dict[str, str] | None]:  # fmt: skip
        """The SERVER span's name, attributes, status and exception event."""
        outcome = (route, status_code, error_type, queries, keep, 1 + spans)
        attrs = PrefixedAttrs(self._root_constants(tl.request, outcome))
        if ttfb is not None:  # the one attribute that changes with every request
            attrs[sc.ATTR_TTFB] = ttfb / 1e9
        name = f"{method if method != sc.OTHER_METHOD else 'HTTP'} {route}"
        status, exception = root_outcome(error_of(tl), status_code)
        return name, attrs, status, exception

    def _root_constants(
        self, request: tuple[Any, ...], outcome: tuple[str, int, str | None, int, str, int]
    ) -> StaticAttrs:
        """The SERVER span's attributes but the time to first byte, shared with the
        earlier requests that said and got the same (a bounded cache: most requests
        of a route repeat them, so the direct encoder encodes them once)."""
        # the query string matters only when captured; queue headers never do
        key = (request[:REQUEST_START] + request[QUERY + self._query_ignored :], outcome)
        attrs = self._root_cache.get(key)
        if attrs is None:
            if len(self._root_cache) >= _ROOT_CACHE_LIMIT:
                self._root_cache.clear()
            items = root_attributes(request, self.cfg)
            route, status_code, error_type, queries, keep, spans = outcome
            items[sc.HTTP_ROUTE] = route
            if status_code:
                items[sc.HTTP_STATUS] = status_code
            if error_type:
                items[sc.ERROR_TYPE] = error_type
            items[sc.ATTR_DB_QUERY_COUNT] = queries
            items[sc.ATTR_KEPT] = keep
            items[sc.ATTR_SPAN_COUNT] = spans
            attrs = self._root_cache[key] = StaticAttrs(items)
        return attrs

    def _record(
        self, route: str, method: str, status_code: int, totals: dict[str, int],
        per_middleware: dict[str, int] | None, duration: int, queries: int,
        ttfb: int | None, error_type: str | None, exemplar: Any,
    ) -> None:  # fmt: skip
        assert self.metrics is not None
        base: tuple[tuple[str, Any], ...] = ((sc.HTTP_ROUTE, route), (sc.HTTP_METHOD, method))
        if status_code:
            base += ((sc.HTTP_STATUS, status_code),)
        self.metrics.record(base, totals, per_middleware, duration, queries, ttfb, error_type,
                            exemplar)  # fmt: skip

    def _keep_reason(self, tl: Timeline, duration_ns: int, error_type: str | None) -> str | None:
        if tl.sampled:
            return "head"
        if error_type is not None and self.cfg.keep_errors:
            return "error"
        threshold = self.cfg.slow_threshold
        if threshold is not None and duration_ns >= threshold * 1e9:
            return "slow"
        return None
