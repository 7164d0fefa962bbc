"""Per-request work on the exporter thread: stage totals, metrics, then spans.

Metrics are recorded for every request, sampled or not, from full-detail
stage totals, so they are exact whatever the sampling rate or span detail
level. Spans are exported when the head sampler said so, or, even when it
did not, when the request was slow or failed ("keep what matters"): stages
are just timestamps until here, so that decision can be made at the end.

Three ways to the same numbers, cheapest first: a request whose shape was
learned is replayed (``flowtrace.export.layout``); an unexported one gets its
totals without a tree (``flowtrace.build.totals``); anything else builds the
tree (``flowtrace.build.tree``), shapes its spans (middleware detail level,
coalescing, budget: ``flowtrace.build.shape`` and ``coalesce``) and exports
them. Tests pin that all three agree.
"""

from __future__ import annotations

from typing import Any

from flowtrace import semconv as sc
from flowtrace.build import duplicates
from flowtrace.build.asyncio import async_facts
from flowtrace.build.coalesce import coalesce
from flowtrace.build.outcome import error_type_of, route_of, status_code_of, trusted_queue_ns
from flowtrace.build.shape import shape_middleware
from flowtrace.build.totals import stage_totals
from flowtrace.build.tree import Tree, build
from flowtrace.capture.loop import LAG
from flowtrace.capture.request_info import method_of, protocol_attributes
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config
from flowtrace.export.layout import Layout, Layouts, measure, shape_key, slots_of
from flowtrace.export.root import Facts, RootSpans
from flowtrace.export.sdk import MetricSink, exemplar_for

__all__ = ["Recorder", "route_of", "status_code_of"]

#: The first requests of a process pay for imports, connections and caches.
COLD_REQUESTS = 3


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
        self._networks = cfg.trusted_networks
        self.routes = RouteLimiter(cfg.max_routes)
        self.roots = RootSpans(cfg)
        self._exemplars = getattr(metrics, "exemplars", "trace_based")
        self._threshold = cfg.duplicate_query_threshold
        self.requests = 0
        self.self_cost: Any = None  # () -> µs of export CPU per request so far (the engine's)

    def __call__(self, tl: Timeline) -> None:
        facts = self._facts(tl)
        layouts = self.layouts
        key = slots = None
        if layouts is not None and tl.trace_state is None:
            key = shape_key(tl, facts.queue)
            if key is not None:
                slots = slots_of(tl, facts.queue)
                layout = layouts.find(key, slots)
                if layout is not None and (facts.keep is None or layout.replays_spans):
                    self._replay(tl, facts, layout, slots)  # a shape seen before: no tree
                    return
                if not layouts.wants(key):
                    key = None
        found = duplicates.find(tl.events, self._threshold)
        if found is not None:
            facts.duplicates = (*found[:3], duplicates.total_ns(tl.events, found[3]))
        if facts.keep is None and key is None and not self.cfg.metrics_per_middleware:
            # No span will be exported (most requests under head sampling): the
            # metrics need no tree, the totals come straight from the events.
            if self.metrics is not None:
                totals, resolved, facts.queries = stage_totals(tl, facts.queue or None)
                facts.route = self.routes(route_of(tl, resolved))
                self._record(tl, facts, totals, None)
            return
        tree = build(tl, self.cfg, facts.queue or None)
        facts.route = self.routes(route_of(tl, tree.resolved))
        facts.queries = tree.count(sc.DB)
        if self.metrics is not None:
            per_mw = tree.middleware_totals() if self.cfg.metrics_per_middleware else None
            self._record(tl, facts, tree.stage_totals(), per_mw)
        if facts.keep is None and key is None:
            return
        learning = layouts is not None and key is not None and slots is not None
        recipe = measure(tree, slots) if learning and slots is not None else None  # full detail
        spans, merged, dropped = self._shape(tree)
        if layouts is not None and learning and slots is not None:
            layouts.learn(key, recipe, tree.root, slots, (found, merged, dropped))
        if facts.keep is None:
            return
        name, attrs, status, exception = self.roots.parts(tl, facts, spans, merged, dropped)
        self._cost(attrs)
        self.spans.emit(tree.root, name, attrs, (tl.trace_id, tl.span_id, tl.parent,
                        tl.trace_state), tl.wall_offset, status, exception)  # fmt: skip

    def _facts(self, tl: Timeline) -> Facts:
        cfg = self.cfg
        queue = trusted_queue_ns(tl, cfg, self._networks) or 0
        status_code = status_code_of(tl.status) or (500 if tl.exc is not None else 0)
        error_type = error_type_of(tl, status_code)
        root_start = tl.t_call - queue
        duration = max(tl.t_close_end or tl.t_return, tl.t_return) - root_start
        # the server's own time: a client's (or a proxy's) queue header never forces export
        keep = self._keep_reason(tl, duration - queue, error_type) if self.spans.enabled else None
        self.requests += 1
        facts = Facts(method_of(tl.request)[0], status_code, error_type, duration,
                      tl.t_first_chunk - root_start if tl.t_first_chunk else None, queue, keep,
                      self.requests <= COLD_REQUESTS)  # fmt: skip
        if tl.crossings is not None or tl.loop is not None:
            facts.asyncio = async_facts(tl)
        return facts

    def _shape(self, tree: Tree) -> tuple[int, int, int]:
        """Middleware detail level, then coalescing and the budget: (spans, merged,
        dropped)."""
        cfg = self.cfg
        shape_middleware(tree, cfg.middleware_spans)
        return coalesce(tree, budget=cfg.span_budget, db=cfg.db_spans,
                        template=cfg.template_spans, cache=cfg.cache_spans)  # fmt: skip

    def _replay(self, tl: Timeline, facts: Facts, layout: Layout, slots: list[int]) -> None:
        """Metrics and (if kept) spans of a request whose shape has a layout."""
        facts.route = self.routes(route_of(tl, layout.resolved))
        facts.queries = layout.queries
        if layout.duplicates is not None:
            extra, statement, count, indices = layout.duplicates
            facts.duplicates = (extra, statement, count, duplicates.total_ns(tl.events, indices))
        if self.metrics is not None:
            self._record(tl, facts, layout.stage_totals(slots), None)
        if facts.keep is None:
            return
        root = self.roots.parts(tl, facts, layout.spans, layout.merged, layout.dropped)
        self._cost(root[1])
        start = tl.t_call - facts.queue
        self.spans.emit_layout(layout, slots, tl, (start, start + facts.duration), *root)

    def _cost(self, attrs: dict[str, Any]) -> None:
        """flowtrace's own export cost so far, on the root span (``flowtrace report``)."""
        cost = self.self_cost() if self.self_cost is not None else None
        if cost is not None:  # nothing measured yet in this process: say nothing
            attrs[sc.ATTR_EXPORT_COST] = round(cost, 1)

    def _record(self, tl: Timeline, facts: Facts, totals: dict[str, int],
                per_middleware: dict[str, int] | None) -> None:  # fmt: skip
        assert self.metrics is not None
        base: tuple[tuple[str, Any], ...] = ((sc.HTTP_ROUTE, facts.route),
                                             (sc.HTTP_METHOD, facts.method))  # fmt: skip
        if facts.status_code:
            base += ((sc.HTTP_STATUS, facts.status_code),)
        http_key = self._http_key(tl, facts) if self.metrics.http is not None else None
        exemplar = self._exemplar(tl, facts.keep)
        dup = facts.duplicates[0] if facts.duplicates is not None else 0
        self.metrics.record(base, totals, per_middleware, facts.duration, facts.queries,
                            facts.ttfb, facts.error_type, exemplar, http_key,
                            facts.duration - facts.queue, dup)  # fmt: skip
        asyncio = facts.asyncio
        if asyncio is not None:
            self.metrics.record_asyncio(base, asyncio.causes, asyncio.held, LAG.drain(), exemplar)

    @staticmethod
    def _http_key(tl: Timeline, facts: Facts) -> tuple[tuple[str, Any], ...]:
        """``http.server.request.duration``'s attributes, as the HTTP conventions
        list them (no ``http.route`` when nothing matched)."""
        items: list[tuple[str, Any]] = [(sc.HTTP_METHOD, facts.method)]
        items += protocol_attributes(tl.request).items()
        if facts.status_code:
            items.append((sc.HTTP_STATUS, facts.status_code))
        if facts.route != sc.UNMATCHED_ROUTE:
            items.append((sc.HTTP_ROUTE, facts.route))
        if facts.error_type:
            items.append((sc.ERROR_TYPE, facts.error_type))
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
