"""Turn a Timeline into a tree of stage nodes, off the request thread.

The root is tiled by top-level stages (``queue | setup-or-app | streaming |
close``) and every other interval nests inside one of them, so the exclusive
times of all nodes add up to the root's duration exactly. Metrics use those
exclusive times; spans use the tree (after the middleware detail level has
been applied, see ``shape_middleware``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtrace import semconv as sc
from flowtrace.config import Config
from flowtrace.timeline import CACHE, DB, HOOK, LAYER, RESOLVE, TEMPLATE, VIEW, Timeline

# For equal (start, end) intervals, the outer kind sorts first.
_PRIORITY = {LAYER: 1, HOOK: 2, RESOLVE: 2, VIEW: 3, TEMPLATE: 4, CACHE: 5, DB: 6}
_HALF_REQUEST = "request"
_HALF_RESPONSE = "response"


@dataclass(eq=False)
class Node:
    """One stage interval; becomes one span (unless merged away)."""

    name: str
    stage: str | None
    start: int
    end: int
    priority: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    exclusive: int = 0

    @property
    def duration(self) -> int:
        return self.end - self.start


def _layer_nodes(layers: list[tuple[int, int, int]], names: tuple[str, ...]) -> list[Node]:
    """Split nested middleware layer intervals into request and response halves."""
    layers.sort()
    nodes: list[Node] = []
    for i, (t0, t1, index) in enumerate(layers):
        if index == 0:  # Django's _get_response: its own time is setup
            continue
        path = names[index] if index < len(names) else "?"
        short = path.rsplit(".", 1)[-1]
        inner = layers[i + 1] if i + 1 < len(layers) else None
        base = {sc.ATTR_STAGE: sc.MIDDLEWARE, sc.ATTR_MIDDLEWARE: path}
        if inner is not None and inner[0] >= t0 and inner[1] <= t1:
            nodes.append(
                Node(f"{short} request", sc.MIDDLEWARE, t0, inner[0], 1,
                     {**base, sc.ATTR_MIDDLEWARE_HALF: _HALF_REQUEST})
            )  # fmt: skip
            nodes.append(
                Node(f"{short} response", sc.MIDDLEWARE, inner[1], t1, 1,
                     {**base, sc.ATTR_MIDDLEWARE_HALF: _HALF_RESPONSE})
            )  # fmt: skip
        else:  # answered without calling the next layer
            attrs = {**base, sc.ATTR_MIDDLEWARE_HALF: _HALF_REQUEST, sc.ATTR_SHORT_CIRCUIT: True}
            nodes.append(Node(f"{short} request", sc.MIDDLEWARE, t0, t1, 1, attrs))
    return nodes


def _sql_operation(sql: str) -> str:
    head = sql.lstrip("( \n\t").split(None, 1)
    return head[0].upper()[:32] if head else ""


def _event_node(kind: int, t0: int, t1: int, payload: Any, cfg: Config) -> Node | None:
    limit = cfg.max_attribute_length
    if kind == HOOK:
        path, hook = payload
        half = _HALF_REQUEST if hook == "process_view" else _HALF_RESPONSE
        attrs = {sc.ATTR_STAGE: sc.MIDDLEWARE, sc.ATTR_MIDDLEWARE: path,
                 sc.ATTR_MIDDLEWARE_HALF: half, sc.ATTR_MIDDLEWARE_HOOK: hook}  # fmt: skip
        return Node(f"{path.rsplit('.', 1)[-1]}.{hook}", sc.MIDDLEWARE, t0, t1, 2, attrs)
    if kind == RESOLVE:
        return Node("resolve", sc.URL_RESOLUTION, t0, t1, 2, {sc.ATTR_STAGE: sc.URL_RESOLUTION})
    if kind == VIEW:
        return Node("view", sc.VIEW, t0, t1, 3, {sc.ATTR_STAGE: sc.VIEW})
    if kind == TEMPLATE:
        name = str(payload or "<string>")[:limit]
        attrs = {sc.ATTR_STAGE: sc.TEMPLATE, sc.ATTR_TEMPLATE: name}
        return Node(f"render {name}", sc.TEMPLATE, t0, t1, 4, attrs)
    if kind == DB:
        sql, vendor, batch, params = payload
        operation = _sql_operation(sql)
        attrs = {sc.ATTR_STAGE: sc.DB, sc.DB_SYSTEM: vendor, sc.DB_SYSTEM_NAME: vendor}
        if operation:
            attrs[sc.DB_OPERATION] = operation
        if cfg.record_sql:
            attrs[sc.DB_QUERY_TEXT] = sql[:limit]
        if batch:
            attrs[sc.DB_BATCH_SIZE] = batch
        if params is not None:
            attrs[sc.ATTR_DB_PARAMETERS] = repr(params)[:limit]
        return Node(operation or vendor, sc.DB, t0, t1, 6, attrs)
    if kind == CACHE:
        operation, backend, hit = payload
        attrs = {sc.ATTR_STAGE: sc.CACHE, sc.ATTR_CACHE_OPERATION: operation,
                 sc.ATTR_CACHE_BACKEND: backend}  # fmt: skip
        if isinstance(hit, bool):
            attrs[sc.ATTR_CACHE_HIT] = hit
        elif isinstance(hit, tuple):
            attrs[sc.ATTR_CACHE_HITS], attrs[sc.ATTR_CACHE_MISSES] = hit
        return Node(f"cache {operation}", sc.CACHE, t0, t1, 5, attrs)
    return None


def _nest(root: Node, nodes: list[Node]) -> None:
    """Attach each node under the innermost earlier node that contains it."""
    nodes.sort(key=lambda n: (n.start, -n.end, n.priority))
    stack = [root]
    for node in nodes:
        while len(stack) > 1 and not (node.start >= stack[-1].start and node.end <= stack[-1].end):
            stack.pop()
        parent = stack[-1]
        node.start = max(node.start, parent.start)  # only clamps a broken interval
        node.end = min(max(node.end, node.start), parent.end)
        parent.children.append(node)
        stack.append(node)


def _exclusive(node: Node, totals: dict[str, int]) -> None:
    node.exclusive = max(node.duration - sum(c.duration for c in node.children), 0)
    if node.stage is not None:
        totals[node.stage] = totals.get(node.stage, 0) + node.exclusive
    for child in node.children:
        _exclusive(child, totals)


def build_nodes(tl: Timeline, cfg: Config, django: bool, queue: int | None) -> Node:
    """The full-detail tree of a request; ``queue`` is the queue time in ns."""
    root_start = tl.t_call - (queue or 0)
    root_end = max(tl.t_close_end or tl.t_return, tl.t_return)
    root = Node("request", None, root_start, root_end)
    nodes: list[Node] = []
    if queue:
        nodes.append(Node("queue", sc.QUEUE, root_start, tl.t_call, 0, {sc.ATTR_STAGE: sc.QUEUE}))
    app_stage = sc.SETUP if django else sc.VIEW
    nodes.append(Node("django" if django else "app", app_stage, tl.t_call, tl.t_return,
                      0, {sc.ATTR_STAGE: app_stage}))  # fmt: skip
    if tl.t_close_start:
        nodes.append(_streaming_node(tl))
        nodes.append(Node("close", sc.CLOSE, tl.t_close_start, tl.t_close_end, 0,
                          {sc.ATTR_STAGE: sc.CLOSE}))  # fmt: skip
    layers = [(t0, t1, p) for kind, t0, t1, p in tl.events if kind == LAYER]
    nodes.extend(_layer_nodes(layers, tl.layer_names))
    view_end = 0
    for kind, t0, t1, payload in tl.events:
        if kind != LAYER:
            node = _event_node(kind, t0, t1, payload, cfg)
            if node is not None:
                nodes.append(node)
                if kind == VIEW:
                    view_end = t1
    if view_end:
        for node in nodes:
            if node.stage == sc.TEMPLATE and node.start >= view_end:
                node.attrs[sc.ATTR_TEMPLATE_DEFERRED] = True
    _nest(root, nodes)
    return root


def _streaming_node(tl: Timeline) -> Node:
    attrs: dict[str, Any] = {sc.ATTR_STAGE: sc.STREAMING, sc.ATTR_CLIENT_GONE: tl.client_gone}
    if tl.file_wrapper:
        attrs[sc.ATTR_FILE_WRAPPER] = True
        attrs[sc.ATTR_CLIENT_GONE] = False  # sendfile: the server owns the body
    else:
        attrs[sc.ATTR_BYTES] = tl.bytes_sent
        attrs[sc.ATTR_CHUNKS] = tl.chunks
    return Node("streaming", sc.STREAMING, tl.t_return, tl.t_close_start, 0, attrs)


def stage_totals(root: Node) -> dict[str, int]:
    """Exclusive nanoseconds per stage; they add up to the root's duration."""
    totals: dict[str, int] = {}
    _exclusive(root, totals)
    return totals


def middleware_totals(root: Node) -> dict[str, int]:
    """Exclusive nanoseconds per middleware path (both halves and hooks)."""
    out: dict[str, int] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if node.stage == sc.MIDDLEWARE:
            path = node.attrs[sc.ATTR_MIDDLEWARE]
            out[path] = out.get(path, 0) + node.exclusive
        todo.extend(node.children)
    return out


def count_nodes(root: Node) -> int:
    """Nodes below the root (each becomes a span)."""
    return sum(1 + count_nodes(child) for child in root.children)


def count_stage(root: Node, stage: str, outermost_only: bool = False) -> int:
    """How many nodes of a stage the tree holds (nested ones optionally skipped)."""
    count = 0
    todo = [root]
    while todo:
        node = todo.pop()
        if node.stage == stage:
            count += 1
            if outermost_only:
                continue
        todo.extend(node.children)
    return count


def shape_middleware(root: Node, mode: str) -> None:
    """Apply the span detail level: ``halves`` (as built), ``combined``, ``none``.

    ``combined`` merges the contiguous request halves into one span and the
    response halves into another, with per-middleware names and exclusive
    durations as array attributes; hooks (``process_view``...) stay separate
    because they run at another time. ``none`` drops middleware spans and
    keeps their children. Metrics are computed before this, so they are
    exact at every level.
    """
    if mode == "halves":
        return
    todo = [root]
    while todo:
        node = todo.pop()
        if any(c.stage == sc.MIDDLEWARE for c in node.children):
            node.children = _reshape(node.children, mode)
        todo.extend(node.children)


def _half(node: Node) -> str | None:
    if node.stage != sc.MIDDLEWARE or sc.ATTR_MIDDLEWARE_HOOK in node.attrs:
        return None
    half = node.attrs.get(sc.ATTR_MIDDLEWARE_HALF)
    return half if isinstance(half, str) else None


def _merge(group: list[Node], half: str) -> Node:
    attrs = {
        sc.ATTR_STAGE: sc.MIDDLEWARE,
        sc.ATTR_MIDDLEWARE_HALF: half,
        sc.ATTR_MIDDLEWARE_NAMES: [n.attrs[sc.ATTR_MIDDLEWARE] for n in group],
        sc.ATTR_MIDDLEWARE_DURATIONS: [n.exclusive / 1e9 for n in group],
    }
    merged = Node(f"middleware {half}", sc.MIDDLEWARE, group[0].start, group[-1].end, 1, attrs)
    merged.children = [child for n in group for child in n.children]
    return merged


def _reshape(children: list[Node], mode: str) -> list[Node]:
    out: list[Node] = []
    groups: dict[str, list[Node]] = {}
    for node in children:
        if node.stage != sc.MIDDLEWARE:
            out.append(node)
        elif mode == "none":
            out.extend(node.children)
        elif (half := _half(node)) is not None:
            groups.setdefault(half, []).append(node)
        else:
            out.append(node)  # a hook span
    out.extend(_merge(group, half) for half, group in groups.items())
    out.sort(key=lambda n: (n.start, -n.end, n.priority))
    return out
