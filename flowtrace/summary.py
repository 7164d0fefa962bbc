"""Summarise an OTLP-JSON span file per route and per stage, for the terminal.

Reads the file line by line (each line one export batch), groups spans by
trace, and reports for every route: request count, p50/p95 latency, queries
per request, and the mean exclusive time and share of each stage.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from flowtrace import semconv as sc

_SERVER = 2
_BAR = 24


def _value(any_value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    return None


def iter_spans(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Flatten OTLP-JSON export lines into span dicts with plain attributes."""
    for line in lines:
        if not line.strip():
            continue
        request = json.loads(line)
        for resource_spans in request.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    span["attrs"] = {
                        a["key"]: _value(a["value"]) for a in span.get("attributes", [])
                    }
                    yield span


@dataclass
class RouteStats:
    durations: list[float] = field(default_factory=list)
    stage_ns: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    queries: int = 0
    slowest: list[tuple[float, str]] = field(default_factory=list)


def _exclusive_by_stage(spans: list[dict[str, Any]]) -> dict[str, int]:
    child_time: dict[str, int] = defaultdict(int)
    for span in spans:
        if span.get("parentSpanId"):
            child_time[span["parentSpanId"]] += int(span["endTimeUnixNano"]) - int(
                span["startTimeUnixNano"]
            )
    totals: dict[str, int] = defaultdict(int)
    for span in spans:
        stage = span["attrs"].get(sc.ATTR_STAGE)
        if stage:
            own = int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])
            totals[stage] += max(own - child_time[span["spanId"]], 0)
    return totals


def summarise(lines: Iterable[str]) -> dict[str, RouteStats]:
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in iter_spans(lines):
        traces[span["traceId"]].append(span)
    routes: dict[str, RouteStats] = defaultdict(RouteStats)
    for trace_id, spans in traces.items():
        root = next((s for s in spans if s.get("kind") == _SERVER), None)
        if root is None:
            continue
        stats = routes[root["name"]]
        ms = (int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"])) / 1e6
        stats.durations.append(ms)
        stats.queries += int(root["attrs"].get(sc.ATTR_DB_QUERY_COUNT, 0))
        stats.slowest.append((ms, trace_id))
        for stage, ns in _exclusive_by_stage(spans).items():
            stats.stage_ns[stage] += ns
    return dict(routes)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render(routes: dict[str, RouteStats], out: TextIO) -> None:
    if not routes:
        out.write("No flowtrace requests found.\n")
        return
    for name, stats in sorted(routes.items(), key=lambda kv: -sum(kv[1].durations)):
        n = len(stats.durations)
        out.write(f"\n{name}  n={n}  p50 {_percentile(stats.durations, 0.5):.2f} ms  "
                  f"p95 {_percentile(stats.durations, 0.95):.2f} ms  "
                  f"queries/req {stats.queries / n:.1f}\n")  # fmt: skip
        total = sum(stats.stage_ns.values()) or 1
        for stage in sc.STAGES:
            ns = stats.stage_ns.get(stage)
            if not ns:
                continue
            share = ns / total
            bar = "#" * max(1, round(share * _BAR))
            out.write(f"  {stage:15} {ns / n / 1e6:9.3f} ms  {share:6.1%}  {bar}\n")
        slowest_ms, trace_id = max(stats.slowest)
        out.write(f"  slowest: {slowest_ms:.2f} ms  trace {trace_id}\n")
