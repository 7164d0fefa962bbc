"""The per-request Timeline: cheap monotonic timestamps, nothing more.

Everything that runs on the request thread only appends tuples to a list;
turning them into spans and metrics happens later, off the hot path
(``flowtrace.build.tree``). That is what keeps flowtrace's overhead per request in
microseconds while still recording ten or more stages.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any

# Event kinds: each event is a tuple ``(kind, t_start_ns, t_end_ns, payload)``.
LAYER = 0  # one middleware layer (payload: layer index); split into halves later
HOOK = 1  # process_view / process_template_response / process_exception
RESOLVE = 2  # URL resolution (payload: (route, view callable), or None if it raised)
VIEW = 3  # the view callable (payload: None, or VIEW_RAISED)
TEMPLATE = 4  # a template render (payload: template name, or (name, error type) if it raised)
DB = 5  # a query (payload: (sql, connection, batch size, params kept, error type))
CACHE = 6  # a cache call (payload: (operation, backend, hit-info))
APP = 7  # the WSGI application call (payload: None)

#: VIEW payload when the view raised (its templates are then not "deferred").
VIEW_RAISED = "raised"

Event = tuple[int, int, int, Any]

clock = perf_counter_ns

#: The Timeline of the request being served on this thread (or task), so that
#: hooks installed once per process (DB, templates, cache) find their request.
current: ContextVar[Timeline | None] = ContextVar("flowtrace.timeline", default=None)


class Timeline:
    """What one request went through, as raw timestamps.

    ``t_call`` is when the WSGI server called us; ``wall_ns`` is the same
    instant on the epoch clock, used to convert every perf-counter timestamp
    to span time off the hot path.
    """

    __slots__ = (
        "request",
        "wall_ns",
        "t_call",
        "t_return",
        "t_first_chunk",
        "t_last_chunk",
        "t_close_start",
        "t_close_end",
        "events",
        "status",
        "bytes_sent",
        "chunks",
        "client_gone",
        "file_wrapper",
        "exc",
        "app_exc",
        "route",
        "match",
        "layer_names",
        "trace_id",
        "span_id",
        "parent",
        "sampled",
        "trace_state",
        "otel_context",
        "keep_sql_params",
        "crossings",
        "loop",
    )

    def __init__(self, request: tuple[Any, ...], wall_ns: int, t_call: int) -> None:
        self.request = request  # environ values at REQUEST_KEYS (flowtrace.capture.request_info)
        self.wall_ns = wall_ns
        self.t_call = t_call
        self.t_return = 0
        self.t_first_chunk = 0
        self.t_last_chunk = 0
        self.t_close_start = 0
        self.t_close_end = 0
        self.events: list[Event] = []
        self.status: str | None = None
        self.bytes_sent = 0
        self.chunks = 0
        self.client_gone = False
        self.file_wrapper = False
        self.exc: BaseException | None = None  # escaped to the WSGI server
        self.app_exc: BaseException | None = None  # handled by Django (a 500 page)
        self.route: str | None = None  # from a route resolver
        self.match: Any = None  # Django's ResolverMatch (path redaction reads its args)
        self.layer_names: tuple[str, ...] = ()
        self.trace_id = 0
        self.span_id = 0
        self.parent: Any = None  # remote parent SpanContext, if any
        self.sampled = False
        self.trace_state: Any = None  # the sampler's TraceState, if not empty
        self.otel_context: Any = None  # the root's context, re-attached around app code
        self.keep_sql_params = False  # per FlowTrace option, read by the DB hook
        # ASGI only (flowtrace.capture.bridge, flowtrace.capture.loop): sync<->async
        # crossings (cause, direction, start, end, waited to start, waited to resume), the
        # event loop held by the request's own code: [held ns, longest step ns, steps, thread]
        self.crossings: list[tuple[Any, int, int, int, int, int]] | None = None
        self.loop: list[int] | None = None

    @property
    def wall_offset(self) -> int:
        """Add to a perf-counter timestamp to get nanoseconds since the epoch."""
        return self.wall_ns - self.t_call
