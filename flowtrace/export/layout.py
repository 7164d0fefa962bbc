"""Replay the spans of a request shape seen before: no tree, one ``struct.pack``.

Most requests of a route go through the same stages in the same order: the
same middleware, the same resolver match, the same view, queries and
templates. For a kept (exported) request, building its ``Node`` tree and
encoding ~20 spans one by one is most of flowtrace's cost. So the second
time a shape is seen, the tree that ``flowtrace.build.tree`` built for it is
turned into a *layout*: which timestamp starts and ends each span, which
span is whose parent, the stage totals as sums of timestamps, and the OTLP
bytes of every span with holes for ids and times. A later request of that
shape is encoded by filling the holes, in C.

Sound by construction, not by hope: the tree builder only ever compares
timestamps, so a request with the same events (kinds and payloads, the
key) whose timestamps sort in the same strict order as the learned one
gets exactly the same tree. Both are checked for every request; anything
else (a new shape, ties, a propagated ``tracestate``) takes the general
path. ``tests/test_layout.py`` compares the bytes of both paths.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import islice
from operator import itemgetter, lt, sub
from struct import Struct
from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.tree import Node, StaticAttrs, Tree, streaming_attrs
from flowtrace.capture.timeline import Timeline
from flowtrace.export.otlp_encode import FLAGS_LOCAL_PARENT, SpanEncoder, static_span, varint

_MAX_LAYOUTS = 256
_MAX_SEEN = 4096
_kind, _start, _end, _payload = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)


def swap_bytes(value: int) -> int:
    """The int whose little-endian bytes are ``value``'s big-endian bytes."""
    return int.from_bytes(value.to_bytes(8, "big"), "little")


def shape_key(tl: Timeline, queue: int | None) -> Any:
    """What a request went through, without the times (hashable, or None): the event
    kinds as bytes and the payloads, both built in C (no tuple per event)."""
    if not tl.t_close_start:
        return None
    events = tl.events
    return (bool(queue), tl.layer_names, bytes(map(_kind, events)), tuple(map(_payload, events)))


def slots_of(tl: Timeline, queue: int | None) -> list[int]:
    """Every timestamp the tree can be built from, in a fixed order per shape (every
    event's start, then every event's end)."""
    events = tl.events
    base = (tl.t_call, tl.t_return, tl.t_close_start, tl.t_close_end)
    if queue:
        return [tl.t_call - queue, *base, *map(_start, events), *map(_end, events)]
    return [*base, *map(_start, events), *map(_end, events)]


class _Dynamic:
    """The streaming span: its attributes change per request (bytes, chunks)."""

    __slots__ = ("position", "parent", "start", "end", "name")

    def __init__(self, position: int, parent: int, start: int, end: int, name: str) -> None:
        self.position, self.parent, self.start, self.end, self.name = (
            position, parent, start, end, name)  # fmt: skip


class _Coalesced:
    """A coalesced span (``flowtrace.build.coalesce``): its time and its shortest and
    longest call are computed from the calls' timestamps at each request."""

    __slots__ = ("position", "parent", "members", "parent_end", "name", "attrs")

    def __init__(self, position: int, parent: int, members: tuple[tuple[int, int], ...],
                 parent_end: int, name: str, attrs: StaticAttrs) -> None:  # fmt: skip
        self.position, self.parent, self.members = position, parent, members
        self.parent_end, self.name, self.attrs = parent_end, name, attrs

    def encode(self, encoder: SpanEncoder, prefix: bytes, ids: list[int], slots: list[int],
               offset: int) -> bytes:  # fmt: skip
        durations = [slots[end] - slots[start] for start, end in self.members]
        start = slots[self.members[0][0]]
        end = min(start + sum(durations), slots[self.parent_end])
        tail = encoder.static_tail(self.name, self.attrs, FLAGS_LOCAL_PARENT, "")
        tail += _extremes(encoder)(min(durations) / 1e9, max(durations) / 1e9)
        return static_span(prefix, ids[self.position].to_bytes(8, "little"),
                           ids[self.parent].to_bytes(8, "little"), start + offset, end + offset,
                           tail)  # fmt: skip


_min_max: dict[int, Callable[[float, float], bytes]] = {}


def _extremes(encoder: SpanEncoder) -> Callable[[float, float], bytes]:
    """The coalesced spans' shortest and longest call, encoded in one pack."""
    packer = _min_max.get(id(encoder))
    if packer is None:
        packer = _min_max[id(encoder)] = encoder.doubles(sc.ATTR_COALESCED_MIN,
                                                         sc.ATTR_COALESCED_MAX)  # fmt: skip
    return packer


class Totals:
    """What the full-detail tree of a shape adds up to: stage totals as sums of
    interval durations (``intervals``: (start slot, end slot) pairs), the strict
    order of timestamps they hold for, the queries, Django's match."""

    __slots__ = ("order", "intervals", "terms", "queries", "resolved")

    def __init__(self, order: tuple[int, ...], intervals: list[tuple[int, int]],
                 terms: dict[str, tuple[tuple[int, int], ...]], queries: int,
                 resolved: Any) -> None:  # fmt: skip
        self.order, self.intervals, self.terms = order, intervals, terms
        self.queries, self.resolved = queries, resolved


class Layout:
    """One learned request shape; see the module docstring. Without ``segments``
    (spans that cannot be replayed) it still gives the stage totals."""

    __slots__ = ("_order", "stage_totals", "queries", "resolved", "spans", "_consts", "_segments",
                 "duplicates", "merged", "dropped")  # fmt: skip

    def __init__(self, totals: Totals, spans: int, consts: list[bytes],
                 segments: list[Any] | None) -> None:  # fmt: skip
        self._order = itemgetter(*totals.order)
        self.stage_totals: Callable[[list[int]], dict[str, int]] = _totals_function(totals)
        self.queries = totals.queries
        self.resolved = totals.resolved
        self.spans = spans  # below the root
        self._consts = consts
        self._segments = segments
        self.duplicates: Any = None  # the shape's duplicated queries (flowtrace.build.duplicates)
        self.merged = self.dropped = 0  # calls coalesced, spans left out (flowtrace.build.coalesce)

    @property
    def replays_spans(self) -> bool:
        return self._segments is not None

    def fits(self, slots: list[int]) -> bool:
        """Same strict order of timestamps as when learned: the same tree."""
        ordered: tuple[int, ...] = self._order(slots)
        return all(map(lt, ordered, islice(ordered, 1, None)))  # strictly increasing

    def encode(self, encoder: SpanEncoder, tl: Timeline, slots: list[int], trace_id: bytes,
               ids: list[int]) -> list[bytes]:  # fmt: skip
        """The stage spans' bytes (root excluded); ``ids[0]`` is the root's id,
        ``ids[k]`` the k-th span's, all as little-endian-ready ints."""
        offset = tl.wall_offset
        values = [trace_id, *ids, *map(offset.__add__, slots), *self._consts]
        prefix = b"\x0a\x10" + trace_id + b"\x12\x08"
        out = []
        assert self._segments is not None
        for segment in self._segments:
            if type(segment) is _Coalesced:
                out.append(segment.encode(encoder, prefix, ids, slots, offset))
            elif type(segment) is _Dynamic:  # the streaming span
                attrs = streaming_attrs(tl)
                tail = encoder.static_tail(segment.name, attrs, FLAGS_LOCAL_PARENT, "")
                out.append(static_span(
                    prefix, ids[segment.position].to_bytes(8, "little"),
                    ids[segment.parent].to_bytes(8, "little"), slots[segment.start] + offset,
                    slots[segment.end] + offset, tail))  # fmt: skip
            else:
                pack, gather = segment
                out.append(pack(*gather(values)))
        return out


def _term(index: int, coefficient: int) -> str:
    if coefficient in (1, -1):  # the usual case
        return f"{'+' if coefficient > 0 else '-'} d[{index}]"
    return f"{coefficient:+d} * d[{index}]"


def _gather(indices: list[int]) -> Callable[[list[int]], tuple[int, ...]]:
    getter = itemgetter(*indices)
    if len(indices) == 1:
        return lambda values: (getter(values),)
    return getter


def _totals_function(totals: Totals) -> Callable[[list[int]], dict[str, int]]:
    """``slots -> {stage: exclusive ns}``: the intervals' durations (one C-level
    subtraction each: durations are small ints, where Python's arithmetic is
    fast, timestamps are not), then one compiled expression of sums and
    differences of them, so no loop is needed."""
    ends = _gather([end for _, end in totals.intervals])
    starts = _gather([start for start, _ in totals.intervals])
    entries = []
    for stage, stage_terms in totals.terms.items():
        expression = " ".join(_term(i, c) for i, c in stage_terms) or "0"
        entries.append(f"{stage!r}: {expression}")
    # Generated from ints and the stage names of flowtrace.semconv only.
    by_durations: Callable[[list[int]], dict[str, int]] = eval(  # noqa: S307
        compile(f"lambda d: {{{', '.join(entries)}}}", "<flowtrace.export.layout totals>", "eval")
    )

    def stage_totals(slots: list[int]) -> dict[str, int]:
        return by_durations(list(map(sub, ends(slots), starts(slots))))

    return stage_totals


def _nested_cleanly(root: Node) -> bool:
    """Children inside their parent and apart from each other (so exclusive
    times are plain sums, never clamped at zero)."""
    todo = [root]
    while todo:
        node = todo.pop()
        edge = node.start
        for child in node.children:
            if child.start < edge or child.end > node.end or child.end < child.start:
                return False
            edge = child.end
            todo.append(child)
    return True


def measure(tree: Tree, slots: list[int]) -> Totals | None:
    """The totals recipe of a full-detail tree (before its spans are shaped), or None
    if it cannot be replayed exactly (ties, a clamped interval)."""
    index = {value: i for i, value in enumerate(slots)}
    if len(index) != len(slots) or not _nested_cleanly(tree.root):
        return None
    terms: dict[str, dict[int, int]] = {}
    intervals: dict[tuple[int, int], int] = {}  # (start slot, end slot) -> its position
    for node in tree.nodes:
        if node.stage is None:
            return None
        coefficients = terms.setdefault(node.stage, {})
        for child in (node, *node.children):
            if child.start not in index or child.end not in index:
                return None
            pair = (index[child.start], index[child.end])
            k = intervals.setdefault(pair, len(intervals))
            coefficients[k] = coefficients.get(k, 0) + (1 if child is node else -1)
    order = tuple(sorted(range(len(slots)), key=slots.__getitem__))
    return Totals(order, list(intervals),
                  {stage: tuple((i, c) for i, c in cs.items() if c) for stage, cs in terms.items()},
                  sum(1 for node in tree.nodes if node.stage == sc.DB), tree.resolved)  # fmt: skip


def learn(totals: Totals, shaped: Node, slots: list[int], encoder: SpanEncoder) -> Layout:
    """The layout of a shape: its totals, and its spans as shaped (``shaped`` is the
    root after the middleware detail level and coalescing), when they can be
    replayed byte for byte."""
    index = {value: i for i, value in enumerate(slots)}
    encoded = _span_recipe(shaped, index, encoder)
    if encoded is None:
        return Layout(totals, 0, [], None)
    consts, segments, spans = encoded
    return Layout(totals, spans, consts, segments)


def _span_recipe(
    root: Node, index: dict[int, int], encoder: SpanEncoder
) -> tuple[list[bytes], list[Any], int] | None:
    """Walk the tree in the encoder's order; write each span as bytes with holes.

    The values a request fills in are laid out as ``[trace id, root id, span
    ids..., slots..., constants...]``; each run of static spans becomes one
    ``Struct`` and an ``itemgetter`` over that list.
    """
    order: list[tuple[Node, int]] = []  # (node, parent position); the root is 0
    todo = [(child, 0) for child in root.children]
    while todo:
        node, parent = todo.pop()
        order.append((node, parent))
        todo.extend((child, len(order)) for child in node.children)
    spans = len(order)
    first_slot = 2 + spans
    first_const = first_slot + len(index)
    consts: list[bytes] = []
    segments: list[Any] = []
    fmt: list[str] = []
    holes: list[int] = []
    pending = b""

    def flush_constant() -> None:
        nonlocal pending
        if pending:
            fmt.append(f"{len(pending)}s")
            holes.append(first_const + len(consts))
            consts.append(pending)
            pending = b""

    def hole(kind: str, position: int) -> None:
        flush_constant()
        fmt.append(kind)
        holes.append(position)

    def close_segment() -> None:
        flush_constant()
        if holes:
            segments.append((Struct("<" + "".join(fmt)).pack, itemgetter(*holes)))
        fmt.clear()
        holes.clear()

    for position, (node, parent) in enumerate(order, start=1):
        if node.members is not None:  # coalesced: times and extremes change per request
            if type(node.attrs) is not StaticAttrs or node.error is not None:
                return None
            parent_node = order[parent - 1][0] if parent else root
            if any(m not in index for pair in node.members for m in pair) or \
                    parent_node.end not in index:  # fmt: skip
                return None
            close_segment()
            members = tuple((index[a], index[b]) for a, b in node.members)
            segments.append(_Coalesced(position, parent, members, index[parent_node.end],
                                       node.name, node.attrs))  # fmt: skip
            continue
        if node.stage == sc.STREAMING:  # its attributes change with the response
            close_segment()
            segments.append(_Dynamic(position, parent, index[node.start], index[node.end],
                                     node.name))  # fmt: skip
            continue
        if type(node.attrs) is not StaticAttrs or node.error is not None:
            return None
        tail = encoder.static_tail(node.name, node.attrs, FLAGS_LOCAL_PARENT, "")
        size = 2 + 16 + 2 + 8 + 2 + 8 + 9 + 9 + len(tail)
        pending += b"\x12" + varint(size) + b"\x0a\x10"
        hole("16s", 0)
        pending += b"\x12\x08"
        hole("Q", 1 + position)
        pending += b"\x22\x08"
        hole("Q", 1 + parent)
        pending += b"\x39"
        hole("Q", first_slot + index[node.start])
        pending += b"\x41"
        hole("Q", first_slot + index[node.end])
        pending += tail
    close_segment()
    return consts, segments, spans


class Layouts:
    """The learned layouts of one recorder (bounded), and the ids to fill them."""

    def __init__(self, encoder: SpanEncoder, span_ids: Callable[[int], list[int]]) -> None:
        self.encoder = encoder
        self._span_ids = span_ids
        self._layouts: dict[Any, Layout | None] = {}
        # hashes only: a shape key holds its SQL text, and most shapes seen once
        # (one-off queries) must not keep it alive
        self._seen: set[int] = set()

    def find(self, key: Any, slots: list[int]) -> Layout | None:
        """The learned layout of this shape, if these timestamps fit it."""
        try:
            layout = self._layouts.get(key)
        except TypeError:  # an unhashable payload
            return None
        if layout is not None and layout.fits(slots):
            return layout
        return None

    def wants(self, key: Any) -> bool:
        """Should this request's tree be learned? Yes the second time an unlearned
        shape is seen (once is not a pattern; a tree costs more than a sum)."""
        try:
            if key in self._layouts:
                return False
            marker = hash(key)
        except TypeError:  # an unhashable payload
            return False
        if marker in self._seen:
            return True
        if len(self._seen) >= _MAX_SEEN:
            self._seen.clear()
        self._seen.add(marker)
        return False

    def learn(self, key: Any, totals: Totals | None, shaped: Node, slots: list[int],
              extras: tuple[Any, int, int]) -> None:  # fmt: skip
        """Keep the layout of this shape (or, for no totals, that it cannot be replayed);
        ``extras``: its duplicated queries, calls merged and spans dropped."""
        if len(self._layouts) >= _MAX_LAYOUTS:
            self._layouts.clear()
        layout = learn(totals, shaped, slots, self.encoder) if totals is not None else None
        if layout is not None:
            layout.duplicates, layout.merged, layout.dropped = extras
        self._layouts[key] = layout
        self._seen.discard(hash(key))

    def encode(self, layout: Layout, tl: Timeline, slots: list[int]) -> list[bytes]:
        ids = [swap_bytes(tl.span_id), *self._span_ids(layout.spans)]
        return layout.encode(self.encoder, tl, slots, tl.trace_id.to_bytes(16, "big"), ids)


def random_ids(count: int) -> list[int]:
    """``count`` non-zero random 64-bit span ids (as little-endian-ready ints)."""
    drawn = random.getrandbits(64 * count).to_bytes(8 * count, "little")
    ids = list(Struct(f"<{count}Q").unpack(drawn))
    while 0 in ids:
        ids[ids.index(0)] = random.getrandbits(64)
    return ids
