"""Turn a Timeline into a tree of stage nodes, off the request thread.

The root is tiled by top-level stages (``queue | setup-or-app | streaming |
close``) and every other interval nests inside one of them, so the exclusive
times of all nodes add up to the root's duration exactly. Metrics use those
exclusive times; spans use the tree (after the middleware detail level has
been applied, see ``flowtrace.build.shape``).

This runs once per request on the exporter thread, so it is written for
speed: one sort and one pass to nest (children's time is summed on the way),
and attribute dicts shared between requests (``StaticAttrs``), which the
direct OTLP encoder encodes once and caches.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.names import view_name
from flowtrace.build.sql import connection_attributes, operation_name, query_text
from flowtrace.capture import timeline as events
from flowtrace.capture.request_info import method_of
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config

CACHE, DB, HOOK, LAYER = events.CACHE, events.DB, events.HOOK, events.LAYER
RESOLVE, TEMPLATE, VIEW, VIEW_RAISED = (
    events.RESOLVE,
    events.TEMPLATE,
    events.VIEW,
    events.VIEW_RAISED,
)

_HALF_REQUEST = "request"
_HALF_RESPONSE = "response"
_STATIC_LIMIT = 4096


class StaticAttrs(dict[str, Any]):
    """Attributes shared by all nodes of one kind; never mutated after creation.

    ``encoded`` caches their OTLP bytes (set by ``flowtrace.export.otlp_encode``).
    """

    __slots__ = ("encoded", "tail")
    encoded: bytes
    tail: tuple[Any, bytes]


class PrefixedAttrs(dict[str, Any]):
    """A SERVER span's attributes: a shared StaticAttrs ``prefix`` (everything
    most requests of a route repeat: method, path, host, route, status...)
    first, then the per-request ones (time to first byte).

    A plain dict to everyone else; the direct encoder encodes the prefix once.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: StaticAttrs) -> None:
        super().__init__(prefix)
        self.prefix = prefix


@lru_cache(maxsize=_STATIC_LIMIT)
def static(*items: tuple[str, Any]) -> StaticAttrs:
    """The shared StaticAttrs for these (key, value) pairs (a bounded cache)."""
    return StaticAttrs(items)


class Node:
    """One stage interval; becomes one span (unless merged away)."""

    __slots__ = ("name", "stage", "start", "end", "priority", "attrs", "children", "child_time",
                 "error", "members", "extra")  # fmt: skip

    def __init__(self, name: str, stage: str | None, start: int, end: int, priority: int,
                 attrs: dict[str, Any]) -> None:  # fmt: skip
        self.name = name
        self.stage = stage
        self.start = start
        self.end = end
        self.priority = priority  # for equal intervals, the outer kind sorts first
        self.attrs = attrs
        self.children: list[Node] = []
        self.child_time = 0
        self.error: str | None = None  # a failed call: the span's status is ERROR
        # a coalesced span (flowtrace.build.coalesce): the (start, end) of the calls it
        # stands for, and its per-request attributes (shortest, longest), after ``attrs``
        self.members: tuple[tuple[int, int], ...] | None = None
        self.extra: tuple[tuple[str, Any], ...] = ()

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def exclusive(self) -> int:
        return max(self.end - self.start - self.child_time, 0)


class Tree:
    """The root node plus every node below it, flat (for totals and counts), and
    Django's resolved (route, view path), if URL resolution succeeded."""

    __slots__ = ("root", "nodes", "resolved")

    def __init__(self, root: Node, nodes: list[Node], resolved: tuple[Any, Any] | None) -> None:
        self.root = root
        self.nodes = nodes
        self.resolved = resolved

    def stage_totals(self) -> dict[str, int]:
        """Exclusive nanoseconds per stage; they add up to the root's duration."""
        totals: dict[str, int] = {}
        for node in self.nodes:  # Node.exclusive, inlined: this runs for every node
            stage = node.stage
            if stage is not None:
                own = node.end - node.start - node.child_time
                totals[stage] = totals.get(stage, 0) + (own if own > 0 else 0)
        return totals

    def middleware_totals(self) -> dict[str, int]:
        """Exclusive nanoseconds per middleware path (both halves and hooks)."""
        out: dict[str, int] = {}
        for node in self.nodes:
            if node.stage == sc.MIDDLEWARE:
                path = node.attrs[sc.ATTR_MIDDLEWARE]
                out[path] = out.get(path, 0) + node.exclusive
        return out

    def count(self, stage: str) -> int:
        return sum(1 for node in self.nodes if node.stage == stage)


class _LayerLabels:
    """Names and shared attributes of one middleware's nodes, made once per path."""

    __slots__ = ("request", "response", "request_attrs", "response_attrs", "short_attrs")

    def __init__(self, path: str) -> None:
        short = path.rsplit(".", 1)[-1]
        stage = (sc.ATTR_STAGE, sc.MIDDLEWARE)
        mw = (sc.ATTR_MIDDLEWARE, path)
        self.request = f"{short} request"
        self.response = f"{short} response"
        self.request_attrs = static(stage, mw, (sc.ATTR_MIDDLEWARE_HALF, _HALF_REQUEST))
        self.response_attrs = static(stage, mw, (sc.ATTR_MIDDLEWARE_HALF, _HALF_RESPONSE))
        self.short_attrs = static(stage, mw, (sc.ATTR_MIDDLEWARE_HALF, _HALF_REQUEST),
                                  (sc.ATTR_SHORT_CIRCUIT, True))  # fmt: skip


_labels = lru_cache(maxsize=_STATIC_LIMIT)(_LayerLabels)


def _layer_nodes(layers: list[tuple[int, int, int]], names: tuple[str, ...]) -> list[Node]:
    """Split nested middleware layer intervals into request and response halves."""
    layers.sort()
    nodes: list[Node] = []
    last = len(layers) - 1
    for i, (t0, t1, index) in enumerate(layers):
        if index == 0:  # Django's _get_response: its own time is setup
            continue
        labels = _labels(names[index] if index < len(names) else "?")
        if i < last and layers[i + 1][0] >= t0 and layers[i + 1][1] <= t1:
            inner = layers[i + 1]
            nodes.append(Node(labels.request, sc.MIDDLEWARE, t0, inner[0], 1, labels.request_attrs))
            nodes.append(Node(labels.response, sc.MIDDLEWARE, inner[1], t1, 1,
                              labels.response_attrs))  # fmt: skip
        else:  # answered without calling the next layer
            nodes.append(Node(labels.request, sc.MIDDLEWARE, t0, t1, 1, labels.short_attrs))
    return nodes


def _db_node(t0: int, t1: int, payload: Any, cfg: Config) -> Node:
    sql, alias, system, batch, params, error = payload
    text = query_text(sql, literals=params is not None)
    operation = operation_name(text)
    items = [(sc.ATTR_STAGE, sc.DB), *connection_attributes(alias, system)]
    if operation:
        items.append((sc.DB_OPERATION, operation))
    if cfg.record_sql:
        items.append((sc.DB_QUERY_TEXT, text[: cfg.max_attribute_length]))
    if batch:
        items.append((sc.DB_BATCH_SIZE, batch))
    if error is not None:
        items.append((sc.ERROR_TYPE, error))
    if params is not None:
        items.append((sc.ATTR_DB_PARAMETERS, repr(params)[: cfg.max_attribute_length]))
    node = Node(operation or system, sc.DB, t0, t1, 6,
                dict(items) if params is not None else static(*items))  # fmt: skip
    if error is not None:
        node.error = error
    return node


def _event_node(kind: int, t0: int, t1: int, payload: Any, cfg: Config) -> Node | None:
    if kind == DB:
        return _db_node(t0, t1, payload, cfg)
    if kind == HOOK:
        path, hook = payload
        half = _HALF_REQUEST if hook == "process_view" else _HALF_RESPONSE
        attrs = static(
            (sc.ATTR_STAGE, sc.MIDDLEWARE),
            (sc.ATTR_MIDDLEWARE, path),
            (sc.ATTR_MIDDLEWARE_HALF, half),
            (sc.ATTR_MIDDLEWARE_HOOK, hook),
        )
        return Node(f"{path.rsplit('.', 1)[-1]}.{hook}", sc.MIDDLEWARE, t0, t1, 2, attrs)
    if kind == RESOLVE:
        return Node("resolve", sc.URL_RESOLUTION, t0, t1, 2,
                    static((sc.ATTR_STAGE, sc.URL_RESOLUTION)))  # fmt: skip
    if kind == VIEW:
        return Node("view", sc.VIEW, t0, t1, 3, static((sc.ATTR_STAGE, sc.VIEW)))
    if kind == TEMPLATE:
        error = None
        if type(payload) is tuple:  # the render raised
            payload, error = payload
        name = str(payload or "<string>")[: cfg.max_attribute_length]
        items: list[tuple[str, Any]] = [(sc.ATTR_STAGE, sc.TEMPLATE), (sc.ATTR_TEMPLATE, name)]
        if error is not None:
            items.append((sc.ERROR_TYPE, error))
        node = Node(f"render {name}", sc.TEMPLATE, t0, t1, 4, static(*items))
        node.error = error
        return node
    if kind == CACHE:
        operation, backend, hit = payload
        items = [(sc.ATTR_STAGE, sc.CACHE), (sc.ATTR_CACHE_OPERATION, operation),
                 (sc.ATTR_CACHE_BACKEND, backend)]  # fmt: skip
        if isinstance(hit, bool):
            items.append((sc.ATTR_CACHE_HIT, hit))
        elif isinstance(hit, tuple):
            items += [(sc.ATTR_CACHE_HITS, hit[0]), (sc.ATTR_CACHE_MISSES, hit[1])]
        return Node(f"cache {operation}", sc.CACHE, t0, t1, 5, static(*items))
    return None


def sort_key(node: Node) -> tuple[int, int, int]:
    return (node.start, -node.end, node.priority)


def _nest(root: Node, nodes: list[Node]) -> None:
    """Attach each node under the innermost earlier node that contains it."""
    nodes.sort(key=sort_key)
    stack = [root]
    top = root
    for node in nodes:
        start, end = node.start, node.end
        while top is not root and (start < top.start or end > top.end):
            stack.pop()
            top = stack[-1]
        if start < top.start or end > top.end or end < start:  # only a broken interval
            start = node.start = max(start, top.start)
            end = node.end = min(max(end, start), top.end)
        top.children.append(node)
        top.child_time += end - start
        stack.append(node)
        top = node


def build(tl: Timeline, cfg: Config, queue: int | None) -> Tree:
    """The full-detail tree of a request; ``queue`` is the queue time in ns."""
    django = bool(tl.layer_names)
    root_start = tl.t_call - (queue or 0)
    root = Node("request", None, root_start, max(tl.t_close_end or tl.t_return, tl.t_return), 0, {})
    nodes: list[Node] = []
    if queue:
        nodes.append(Node("queue", sc.QUEUE, root_start, tl.t_call, 0,
                          static((sc.ATTR_STAGE, sc.QUEUE))))  # fmt: skip
    app_stage = sc.SETUP if django else sc.VIEW
    nodes.append(Node("django" if django else "app", app_stage, tl.t_call, tl.t_return, 0,
                      static((sc.ATTR_STAGE, app_stage))))  # fmt: skip
    if tl.t_close_start:
        nodes.append(streaming_node(tl))
        nodes.append(Node("close", sc.CLOSE, tl.t_close_start, tl.t_close_end, 0,
                          static((sc.ATTR_STAGE, sc.CLOSE))))  # fmt: skip
    events = tl.events
    if django:
        layers = [(t0, t1, p) for kind, t0, t1, p in events if kind == LAYER]
        nodes.extend(_layer_nodes(layers, tl.layer_names))
    view: tuple[int, Any] | None = None  # (end, payload) of the view call
    resolved = None
    for kind, t0, t1, payload in events:
        if kind == RESOLVE and payload is not None:
            resolved = payload  # (route, view callable): resolution precedes the view
        if kind != LAYER:
            node = _event_node(kind, t0, t1, payload, cfg)
            if node is not None:
                nodes.append(node)
                if kind == VIEW:
                    view = (t1, payload)
                    name = view_name(resolved[1], method_of(tl.request)[1]) if resolved else None
                    if name:
                        node.name = name
                        node.attrs = static((sc.ATTR_STAGE, sc.VIEW), (sc.ATTR_VIEW, name))
    if view is not None and view[1] != VIEW_RAISED:
        _mark_deferred(nodes, view[0], events)
    _nest(root, nodes)
    return Tree(root, nodes, resolved)


def _mark_deferred(nodes: list[Node], view_end: int, events: list[Any]) -> None:
    """A template rendered after the view returned, inside Django's own
    ``_get_response`` (layer 0): a TemplateResponse's deferred render. Once such a
    render raised, what follows is Django's error handling (a 500 page), not deferred."""
    handler_end = next((t1 for kind, _, t1, index in events if kind == LAYER and index == 0),
                       None)  # fmt: skip
    failed_at = None
    for node in sorted((n for n in nodes if n.stage == sc.TEMPLATE), key=sort_key):
        if node.start < view_end or (handler_end is not None and node.end > handler_end):
            continue
        if failed_at is not None and node.start >= failed_at:
            continue
        node.attrs = static(*node.attrs.items(), (sc.ATTR_TEMPLATE_DEFERRED, True))
        if node.error is not None and failed_at is None:
            failed_at = node.end


def streaming_attrs(tl: Timeline) -> StaticAttrs:
    """The streaming span's attributes (shared: most responses of a route repeat them)."""
    if tl.file_wrapper:  # sendfile: the server owns the body
        return static((sc.ATTR_STAGE, sc.STREAMING), (sc.ATTR_CLIENT_GONE, False),
                      (sc.ATTR_FILE_WRAPPER, True))  # fmt: skip
    return static((sc.ATTR_STAGE, sc.STREAMING), (sc.ATTR_CLIENT_GONE, tl.client_gone),
                  (sc.ATTR_BYTES, tl.bytes_sent), (sc.ATTR_CHUNKS, tl.chunks))  # fmt: skip


def streaming_node(tl: Timeline) -> Node:
    return Node("streaming", sc.STREAMING, tl.t_return, tl.t_close_start, 0, streaming_attrs(tl))
