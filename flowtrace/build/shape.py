"""Span detail levels for middleware: ``halves`` (as built), ``combined``, ``none``.

Applied to a built tree just before its spans are exported; metrics were
recorded from the full-detail tree before, so they are exact at every level.
"""

from __future__ import annotations

from flowtrace import semconv as sc
from flowtrace.build.tree import Node, Tree, sort_key


def shape_middleware(tree: Tree, mode: str) -> None:
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
    for node in [tree.root, *tree.nodes]:
        if any(c.stage == sc.MIDDLEWARE for c in node.children):
            node.children = _reshape(node.children, mode)


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
    out.sort(key=sort_key)
    return out


def count_spans(root: Node) -> int:
    """Spans below the root as shaped (each node becomes one)."""
    count = 0
    todo = [root]
    while todo:
        children = todo.pop().children
        count += len(children)
        todo.extend(children)
    return count
