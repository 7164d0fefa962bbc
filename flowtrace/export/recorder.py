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

from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.outcome import (
    error_of,
    error_type_of,
    root_outcome,
    route_of,
    status_code_of,
    trusted_queue_ns,
)
from flowtrace.build.shape import count_spans, shape_middleware
from flowtrace.build.totals import stage_totals
from flowtrace.build.tree import PrefixedAttrs, StaticAttrs, build
from flowtrace.capture.request_info import (
    _HEADERS,
    QUERY,
    REQUEST_START,
    method_of,
    protocol_attributes,
    root_attributes,
)
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config
from flowtrace.export.layout import Layout, Layouts, shape_key, slots_of
from flowtrace.export.sdk import MetricSink, exemplar_for

__all__ = ["Recorder", "route_of", "status_code_of"]

_ROOT_CACHE_LIMIT = 1024


class RouteLimiter:
    """At most ``limit`` distinct ``http.route`` values per process; later new ones
    become ``(other)`` and are counted: a route resolver (or a regex route
    rendered as itself) can never flood the metrics backend with series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = {sc.UNMATCHED_ROUTE}
        self.overflowed = 0

    def __call__(self, route: str) -> str:
        if route in self.seen:
            return route
        if len(self.seen) < self.limit:
            self.seen.add(route)
            return route
        self.overflowed += 1
        return sc.OVERFLOW_ROUTE


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
        self._query_captured = cfg.capture_query != "off"
        self._networks = cfg.trusted_networks
        self.routes = RouteLimiter(cfg.max_routes)
        self._exemplars = getattr(metrics, "exemplars", "trace_based")

    def __call__(self, tl: Timeline) -> None:
        cfg = self.cfg
        queue = trusted_queue_ns(tl, cfg, self._networks)
        status_code = status_code_of(tl.status) or (500 if tl.exc is not None else 0)
        error_type = error_type_of(tl, status_code)
        root_start = tl.t_call - (queue or 0)
        duration = max(tl.t_close_end or tl.t_return, tl.t_return) - root_start
        ttfb = tl.t_first_chunk - root_start if tl.t_first_chunk else None
        # the server's own time: a client's (or a proxy's) queue header never forces export
        keep = self._keep_reason(tl, duration - (queue or 0), error_type) if self.spans.enabled \
            else None  # fmt: skip
        method, _ = method_of(tl.request)
        outcome = (method, status_code, error_type, duration, ttfb, queue or 0)
        layouts = self.layouts
        key = slots = None
        if layouts is not None and tl.trace_state is None:
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
                route = self.routes(route_of(tl, resolved))
                self._record(tl, route, outcome, totals, None, queries, self._exemplar(tl, None))
            return
        tree = build(tl, cfg, queue)
        if layouts is not None and key is not None and slots is not None:
            layouts.learn(key, tree, slots)
        route = self.routes(route_of(tl, tree.resolved))
        queries = tree.count(sc.DB)
        if self.metrics is not None:
            per_mw = tree.middleware_totals() if cfg.metrics_per_middleware else None
            self._record(tl, route, outcome, tree.stage_totals(), per_mw, queries,
                         self._exemplar(tl, keep))  # fmt: skip
        if keep is None:
            return
        root = tree.root
        shape_middleware(tree, cfg.middleware_spans)
        # halves: every node is a span; other levels merged or dropped some
        spans = len(tree.nodes) if cfg.middleware_spans == "halves" else count_spans(root)
        name, attrs, status, exception = self._root(tl, route, method, status_code, error_type,
                                                    queries, keep, ttfb, spans)  # fmt: skip
        self.spans.emit(root, name, attrs, (tl.trace_id, tl.span_id, tl.parent, tl.trace_state),
                        tl.wall_offset, status, exception)  # fmt: skip

    def _replay(
        self, tl: Timeline, layout: Layout, slots: list[int], keep: str | None,
        outcome: tuple[str, int, str | None, int, int | None, int], root_start: int,
    ) -> None:  # fmt: skip
        """Metrics and (if kept) spans of a request whose shape has a layout."""
        method, status_code, error_type, duration, ttfb, _ = outcome
        route = self.routes(route_of(tl, layout.resolved))
        if self.metrics is not None:
            self._record(tl, route, outcome, layout.stage_totals(slots), None, layout.queries,
                         self._exemplar(tl, keep))  # fmt: skip
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
        attrs = PrefixedAttrs(self._root_constants(tl, outcome))
        if ttfb is not None:  # the one attribute that changes with every request
            attrs[sc.ATTR_TTFB] = ttfb / 1e9
        verb = method if method != sc.OTHER_METHOD else "HTTP"
        # nothing matched: no http.route and the span is named by the method alone (semconv)
        name = verb if route == sc.UNMATCHED_ROUTE else f"{verb} {route}"
        error = error_of(tl, self.cfg.record_exception_messages)
        status, exception = root_outcome(error, status_code)
        return name, attrs, status, exception

    def _root_constants(
        self, tl: Timeline, outcome: tuple[str, int, str | None, int, str, int]
    ) -> StaticAttrs:
        """The SERVER span's attributes but the time to first byte, shared with the
        earlier requests that said and got the same (a bounded cache: most requests
        of a route repeat them, so the direct encoder encodes them once)."""
        request = tl.request
        # the query string matters only when captured; queue headers and the peer never do
        key = (request[:REQUEST_START], self._query_captured and request[QUERY],
               request[_HEADERS:], outcome)  # fmt: skip
        attrs = self._root_cache.get(key)
        if attrs is None:
            if len(self._root_cache) >= _ROOT_CACHE_LIMIT:
                self._root_cache.clear()
            items = root_attributes(request, self.cfg, tl.match)
            route, status_code, error_type, queries, keep, spans = outcome
            if route != sc.UNMATCHED_ROUTE:
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
        self, tl: Timeline, route: str, outcome: tuple[str, int, str | None, int, int | None, int],
        totals: dict[str, int], per_middleware: dict[str, int] | None, queries: int,
        exemplar: Any,
    ) -> None:  # fmt: skip
        assert self.metrics is not None
        method, status_code, error_type, duration, ttfb, queue = outcome
        base: tuple[tuple[str, Any], ...] = ((sc.HTTP_ROUTE, route), (sc.HTTP_METHOD, method))
        if status_code:
            base += ((sc.HTTP_STATUS, status_code),)
        http_key = None
        if self.metrics.http is not None:
            http_key = self._http_key(tl, route, method, status_code, error_type)
        self.metrics.record(base, totals, per_middleware, duration, queries, ttfb, error_type,
                            exemplar, http_key, duration - queue)  # fmt: skip

    @staticmethod
    def _http_key(tl: Timeline, route: str, method: str, status_code: int,
                  error_type: str | None) -> tuple[tuple[str, Any], ...]:  # fmt: skip
        """``http.server.request.duration``'s attributes, as the HTTP conventions
        list them (no ``http.route`` when nothing matched)."""
        items: list[tuple[str, Any]] = [(sc.HTTP_METHOD, method)]
        items += protocol_attributes(tl.request).items()
        if status_code:
            items.append((sc.HTTP_STATUS, status_code))
        if route != sc.UNMATCHED_ROUTE:
            items.append((sc.HTTP_ROUTE, route))
        if error_type:
            items.append((sc.ERROR_TYPE, error_type))
        return tuple(items)

    def _exemplar(self, tl: Timeline, keep: str | None) -> Any:
        """The trace a metric point links to, under the exemplar filter: the
        exported trace (trace_based), every request's (always_on), or none; on the
        SDK-instrument path every request's, and the SDK's filter decides."""
        policy = self._exemplars
        if policy == "always_off" or not tl.trace_id:
            return None
        if keep is None and policy == "trace_based":
            return None
        return exemplar_for(tl.trace_id, tl.span_id, tl.wall_ns, keep is not None)

    def _keep_reason(self, tl: Timeline, duration_ns: int, error_type: str | None) -> str | None:
        if tl.sampled:
            return "head"
        if error_type is not None and self.cfg.keep_errors:
            return "error"
        threshold = self.cfg.slow_threshold
        if threshold is not None and duration_ns >= threshold * 1e9:
            return "slow"
        return None
