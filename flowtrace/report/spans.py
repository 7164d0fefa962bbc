"""Stream an OTLP-JSON span file into per-route statistics, in bounded memory.

The file is read line by line (one export batch per line). Spans are held
per trace only until the trace is complete: flowtrace's root span carries
``flowtrace.span_count``, so completeness is exact; traces that never
complete are flushed when too many are open. Per route, latencies go into a
log-bucketed histogram (1 % resolution, fixed size) and only the slowest
few requests keep their spans, for the waterfalls. A 100 MB file therefore
needs the same memory as a small one.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flowtrace import semconv as sc

_SERVER = 2
_MAX_OPEN_TRACES = 2000
SLOWEST_PER_ROUTE = 3
_GROWTH = math.log(1.01)  # bucket width: 1 %
_FLOOR_NS = 1000  # 1 µs
_MAX_CALLS = 200  # distinct statements / templates kept per route (the rest: "(others)")
_IN_LIST = re.compile(r"\(\s*%s(?:\s*,\s*%s)+\s*\)")
_VALUES = re.compile(r"(VALUES\s*\([^()]*\))(?:\s*,\s*\([^()]*\))+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
PERCENTILES = ("latency percentiles are nearest-rank (p95 of n requests is the ⌈0.95·n⌉-th "
               "fastest; p99 of 20 requests is the slowest)")  # fmt: skip


def normalise_sql(sql: str) -> str:
    """One text per statement: whitespace collapsed, ``IN (%s, %s, ...)`` lists and
    multi-row ``VALUES`` (bulk inserts) folded, so their sizes do not split it."""
    sql = _SPACES.sub(" ", sql).strip()
    sql = _IN_LIST.sub("(%s, ...)", sql)
    return _VALUES.sub(r"\1, ...", sql)


class LogHistogram:
    """Counts in 1 %-wide buckets from 1 µs: bounded memory, percentiles to ~1 %.

    Percentiles are *nearest-rank*: the q-th percentile of n requests is the
    ⌈q·n⌉-th smallest, so on small samples the high ones reach the tail (with
    n = 20, p99 is the slowest request) and no percentile is ever a value no
    request had. The exact fastest and slowest are kept beside the buckets.
    """

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)
        self.total = 0
        self.low = math.inf
        self.high = 0.0

    def add(self, ns: float) -> None:
        self.counts[int(math.log(max(ns, _FLOOR_NS) / _FLOOR_NS) / _GROWTH)] += 1
        self.total += 1
        self.low = min(self.low, ns)
        self.high = max(self.high, ns)

    @staticmethod
    def value(bucket: int) -> float:
        return _FLOOR_NS * math.exp((bucket + 0.5) * _GROWTH)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, ``q`` in [0, 1]; 0.0 when empty."""
        if not self.total:
            return 0.0
        rank = max(1, math.ceil(q * self.total - 1e-9))
        if rank == 1 or rank >= self.total:
            return self.low if rank == 1 and self.total > 1 else self.high
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:  # within the bucket, but never outside what was seen
                return min(max(self.value(bucket), self.low), self.high)
        return self.high


@dataclass
class Bar:
    """One span of a waterfall, relative to the request's start."""

    name: str
    stage: str | None
    offset_ns: int
    duration_ns: int
    self_ns: int
    depth: int


@dataclass(order=True)
class Request:
    duration_ns: int
    trace_id: str = field(compare=False)
    route: str = field(compare=False)
    status: str = field(compare=False)
    bars: list[Bar] = field(compare=False, default_factory=list)
    cold: bool = field(compare=False, default=False)  # one of its process's first requests


@dataclass
class RouteStats:
    latency: LogHistogram = field(default_factory=LogHistogram)
    stage_ns: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    queries: int = 0
    duplicates: int = 0  # executions of N+1 statements beyond their first
    worst_duplicate: tuple[int, str] = (0, "")  # (executions in one request, statement)
    # (kind, text) -> [calls, total ns]: kind "db" (normalised SQL) or "template"
    calls: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    slowest: list[Request] = field(default_factory=list)  # a min-heap
    cold_skipped: int = 0

    @property
    def count(self) -> int:
        return self.latency.total

    def add_call(self, kind: str, text: str, calls: int, ns: int) -> None:
        key = (kind, text)
        entry = self.calls.get(key)
        if entry is None:
            if len(self.calls) >= _MAX_CALLS:
                key = (kind, "(others)")
                entry = self.calls.setdefault(key, [0, 0])
            else:
                entry = self.calls[key] = [0, 0]
        entry[0] += calls
        entry[1] += ns

    def heaviest(self, kind: str, n: int = 5) -> list[tuple[str, int, int]]:
        """(text, calls, total ns) of the ``n`` costliest statements or templates."""
        rows = [(text, c, ns) for (k, text), (c, ns) in self.calls.items() if k == kind]
        return sorted(rows, key=lambda row: -row[2])[:n]


def _value(any_value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    return None


def _spans(line: str) -> Iterator[dict[str, Any]]:
    request = json.loads(line)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                span["attrs"] = {a["key"]: _value(a["value"]) for a in span.get("attributes", [])}
                yield span


def _bars(spans: list[dict[str, Any]], root: dict[str, Any]) -> tuple[list[Bar], dict[str, int]]:
    """Waterfall rows (depth-first, by start) and the exclusive time per stage."""
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        if span is not root:
            children[span.get("parentSpanId", "")].append(span)
    origin = int(root["startTimeUnixNano"])
    bars: list[Bar] = []
    totals: dict[str, int] = defaultdict(int)
    todo = [(root, 0)]
    while todo:
        span, depth = todo.pop()
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        kids = sorted(children.get(span["spanId"], []), key=lambda s: int(s["startTimeUnixNano"]))
        own = (end - start) - sum(int(k["endTimeUnixNano"]) - int(k["startTimeUnixNano"])
                                  for k in kids)  # fmt: skip
        stage = span["attrs"].get(sc.ATTR_STAGE)
        if stage:
            totals[stage] += max(own, 0)
        name = span["name"]
        if stage == sc.DB and span["attrs"].get(sc.DB_QUERY_TEXT):  # which query, not "SELECT"
            count = span["attrs"].get(sc.ATTR_COALESCED_COUNT)
            name = _SPACES.sub(" ", str(span["attrs"][sc.DB_QUERY_TEXT]))[:160]
            name += f" ×{count}" if count else ""
        bars.append(Bar(name, stage, start - origin, end - start, max(own, 0), depth))
        todo.extend((kid, depth + 1) for kid in reversed(kids))
    return bars, totals


class SpanReport:
    """Per-route statistics of every flowtrace request in one or more span files."""

    def __init__(self, include_cold: bool = False) -> None:
        self.include_cold = include_cold  # a process's first requests among the slowest
        self.routes: dict[str, RouteStats] = defaultdict(RouteStats)
        self.spans = 0
        self.incomplete = 0
        self.export_cost_us: float | None = None  # flowtrace's own, as the last trace said
        self._open: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def read(self, path: str, progress: Callable[[int], None] | None = None) -> None:
        """Stream one file; ``progress(bytes_read)`` is called now and then."""
        size = os.path.getsize(path)
        done = 0
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                done += len(line)
                if line.strip():
                    try:
                        batch = list(_spans(line))
                    except (ValueError, AttributeError, KeyError, TypeError) as exc:
                        message = f"line {number + 1}: not an OTLP-JSON export ({exc})"
                        raise ValueError(message) from None
                    for span in batch:
                        self._add(span)
                if progress is not None and number % 200 == 0:
                    progress(done)
        while self._open:
            self._finish(self._open.popitem(last=False)[1])
        if progress is not None:
            progress(size)

    def _add(self, span: dict[str, Any]) -> None:
        self.spans += 1
        trace = self._open.setdefault(span["traceId"], [])
        trace.append(span)
        root = next((s for s in trace if s.get("kind") == _SERVER), None)
        if root is not None and len(trace) >= int(root["attrs"].get(sc.ATTR_SPAN_COUNT, 0)):
            self._finish(self._open.pop(span["traceId"]))
        elif len(self._open) > _MAX_OPEN_TRACES:
            self._finish(self._open.popitem(last=False)[1])

    def _finish(self, spans: list[dict[str, Any]]) -> None:
        root = next((s for s in spans if s.get("kind") == _SERVER), None)
        if root is None:
            self.incomplete += 1
            return
        attrs = root["attrs"]
        if sc.ATTR_EXPORT_COST in attrs:
            self.export_cost_us = float(attrs[sc.ATTR_EXPORT_COST])
        stats = self.routes[root["name"]]
        duration = int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"])
        stats.latency.add(duration)
        stats.queries += int(attrs.get(sc.ATTR_DB_QUERY_COUNT, 0) or 0)
        status = str(attrs.get(sc.HTTP_STATUS, ""))
        if status.startswith("5") or root.get("status", {}).get("code") == 2:
            stats.errors += 1
        duplicates = int(attrs.get(sc.ATTR_DUPLICATES, 0) or 0)
        if duplicates:
            stats.duplicates += duplicates
            worst = (int(attrs.get(sc.ATTR_DUPLICATE_COUNT, 0) or 0),
                     normalise_sql(str(attrs.get(sc.ATTR_DUPLICATE_STATEMENT, ""))))  # fmt: skip
            stats.worst_duplicate = max(stats.worst_duplicate, worst)
        self._calls(stats, spans)
        cold = bool(attrs.get(sc.ATTR_COLD_START))
        slowest = stats.slowest
        candidate = self.include_cold or not cold
        if not candidate:
            stats.cold_skipped += 1
        if candidate and (len(slowest) < SLOWEST_PER_ROUTE or duration > slowest[0].duration_ns):
            bars, totals = _bars(spans, root)
            request = Request(duration, root["traceId"], root["name"], status, bars, cold)
            if len(slowest) < SLOWEST_PER_ROUTE:
                heapq.heappush(slowest, request)
            else:
                heapq.heapreplace(slowest, request)
        else:
            totals = _bars(spans, root)[1]
        for stage, ns in totals.items():
            stats.stage_ns[stage] += ns

    @staticmethod
    def _calls(stats: RouteStats, spans: list[dict[str, Any]]) -> None:
        """Queries (by normalised SQL) and templates (by name) of one request."""
        for span in spans:
            attrs = span["attrs"]
            stage = attrs.get(sc.ATTR_STAGE)
            if stage == sc.DB and attrs.get(sc.DB_QUERY_TEXT):
                text = normalise_sql(str(attrs[sc.DB_QUERY_TEXT]))
            elif stage == sc.TEMPLATE and attrs.get(sc.ATTR_TEMPLATE):
                text = str(attrs[sc.ATTR_TEMPLATE])
            else:
                continue
            ns = int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])
            stats.add_call(str(stage), text, int(attrs.get(sc.ATTR_COALESCED_COUNT, 1)), ns)
