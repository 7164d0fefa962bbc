"""Fewer spans for event-heavy pages, with every number still exact.

A CMS page makes hundreds of calls: a Wagtail home page ~56 queries, 25
template renders and 185 cache calls. Applied to a built tree just before its
spans are exported (metrics were recorded from the full tree before, so they
are exact whatever happens here), in three steps:

1. ``db_spans`` / ``template_spans`` / ``cache_spans`` off: those spans go (a
   template's children move up to its parent).
2. Repeated calls become one span: leaf calls under the same parent with the
   same key (the SQL text; the cache operation and backend; the template
   name) are merged into one span with ``flowtrace.coalesced.count``,
   ``.min`` and ``.max`` (seconds). It starts with the first call and lasts
   their *total* time, so durations, and the exclusive times computed from
   the exported spans, still add up exactly; it may overlap the siblings that
   ran between the calls.
3. Past ``span_budget``, leaf calls of one stage under one parent merge into
   one span (``db``, ``cache``, ``template`` × N); if that is not enough, the
   latest leaf calls are left out (``flowtrace.spans.dropped`` on the root):
   their time then shows as their parent's own.
"""

from __future__ import annotations

from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.tree import Node, Tree, sort_key, static

_CALLS = (sc.DB, sc.TEMPLATE, sc.CACHE)
# which calls are left out first past the budget
_DROP_ORDER = {sc.CACHE: 0, sc.TEMPLATE: 1, sc.DB: 2}


def _key(node: Node) -> Any:
    attrs = node.attrs
    if node.stage == sc.DB:
        return (sc.DB, node.name, attrs.get(sc.DB_QUERY_TEXT), attrs.get(sc.ATTR_DB_ALIAS),
                node.error)  # fmt: skip
    if node.stage == sc.CACHE:
        return (sc.CACHE, attrs.get(sc.ATTR_CACHE_OPERATION), attrs.get(sc.ATTR_CACHE_BACKEND))
    return (sc.TEMPLATE, node.name, node.error)


def _members(node: Node) -> tuple[tuple[int, int], ...]:
    return node.members if node.members is not None else ((node.start, node.end),)


def _merge(group: list[Node], by_stage: bool, parent_end: int) -> Node:
    """One span for these calls: the first's start, their total duration (clipped to the
    parent, for calls that overlapped); the per-call extremes are per-request extras."""
    first = group[0]
    members = tuple(m for node in group for m in _members(node))
    durations = [end - start for start, end in members]
    per_call = (sc.ATTR_CACHE_HIT, sc.ATTR_CACHE_HITS, sc.ATTR_CACHE_MISSES,
                sc.ATTR_COALESCED_COUNT)  # fmt: skip
    if by_stage:  # different statements or operations: keep only what they share
        items: list[tuple[str, Any]] = [(sc.ATTR_STAGE, first.stage)]
    else:
        items = [(k, v) for k, v in first.attrs.items() if k not in per_call]
    items.append((sc.ATTR_COALESCED_COUNT, len(members)))
    if first.stage == sc.CACHE:
        hits = misses = 0
        for node in group:
            hit = node.attrs.get(sc.ATTR_CACHE_HIT)
            if isinstance(hit, bool):
                hits, misses = hits + hit, misses + (not hit)
            hits += node.attrs.get(sc.ATTR_CACHE_HITS, 0)
            misses += node.attrs.get(sc.ATTR_CACHE_MISSES, 0)
        items += [(sc.ATTR_CACHE_HITS, hits), (sc.ATTR_CACHE_MISSES, misses)]
    base = first.name.split(" ×", 1)[0]
    name = f"{first.stage} ×{len(members)}" if by_stage else f"{base} ×{len(members)}"
    start = members[0][0]
    merged = Node(name, first.stage, start, min(start + sum(durations), parent_end),
                  first.priority, static(*items))  # fmt: skip
    merged.members = members
    merged.extra = ((sc.ATTR_COALESCED_MIN, min(durations) / 1e9),
                    (sc.ATTR_COALESCED_MAX, max(durations) / 1e9))  # fmt: skip
    errors = [n.error for n in group if n.error is not None]
    merged.error = errors[0] if errors else None
    return merged


def _coalesce_children(node: Node, by_stage: bool) -> int:
    """Merge repeated leaf calls among ``node``'s children; calls folded away."""
    groups: dict[Any, list[Node]] = {}
    for child in node.children:
        if child.stage in _CALLS and not child.children:
            key = child.stage if by_stage else _key(child)
            groups.setdefault(key, []).append(child)
    folded = 0
    replaced: dict[int, Node] = {}
    for group in groups.values():
        if len(group) > 1:
            merged = _merge(group, by_stage, node.end)
            for member in group:
                replaced[id(member)] = merged
            folded += len(group) - 1
    if folded:
        out: list[Node] = []
        seen: set[int] = set()
        for child in node.children:
            stand_in = replaced.get(id(child))
            if stand_in is None:
                out.append(child)
            elif id(stand_in) not in seen:
                seen.add(id(stand_in))
                out.append(stand_in)
        node.children = out
    return folded


def _walk(root: Node) -> list[Node]:
    nodes, todo = [], [root]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.children)
    return nodes


def _remove_stages(root: Node, stages: set[str]) -> None:
    for node in _walk(root):
        if any(child.stage in stages for child in node.children):
            children: list[Node] = []
            for child in node.children:
                if child.stage in stages:
                    children.extend(_lifted(child, stages))
                else:
                    children.append(child)
            node.children = sorted(children, key=sort_key)


def _lifted(node: Node, stages: set[str]) -> list[Node]:
    """A removed node's children, themselves without removed stages."""
    out: list[Node] = []
    for child in node.children:
        out.extend(_lifted(child, stages) if child.stage in stages else [child])
    return out


def coalesce(tree: Tree, *, budget: int, db: bool = True, template: bool = True,
             cache: bool = True) -> tuple[int, int, int]:  # fmt: skip
    """Shape the tree's call spans (see the module docstring); returns (spans below
    the root, calls merged into other spans, spans dropped past the budget)."""
    root = tree.root
    off = {stage for stage, keep in ((sc.DB, db), (sc.TEMPLATE, template), (sc.CACHE, cache))
           if not keep}  # fmt: skip
    if off:
        _remove_stages(root, off)
    merged = sum(_coalesce_children(node, False) for node in _walk(root))
    spans = len(_walk(root)) - 1
    if spans > budget:
        merged += sum(_coalesce_children(node, True) for node in _walk(root))
        spans = len(_walk(root)) - 1
    dropped = 0
    if spans > budget:
        leaves = [(node, child) for node in _walk(root) for child in node.children
                  if child.stage in _CALLS and not child.children]  # fmt: skip
        leaves.sort(key=lambda pair: (_DROP_ORDER[str(pair[1].stage)], -pair[1].start))
        gone: set[int] = set()
        for _, leaf in leaves[: spans - budget]:
            gone.add(id(leaf))
        for node in _walk(root):
            if any(id(child) in gone for child in node.children):
                node.children = [c for c in node.children if id(c) not in gone]
        dropped = len(gone)
        spans -= dropped
    return spans, merged, dropped
