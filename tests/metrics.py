"""Reading SDK metric data in tests."""

from __future__ import annotations

from typing import Any


def points(data: Any, name: str | None = None) -> list[tuple[str, Any]]:
    """(metric name, data point) for every point in a MetricsData (one name, or all)."""
    if data is None:
        return []
    return [
        (m.name, p)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if name is None or m.name == name
        for p in m.data.data_points
    ]
