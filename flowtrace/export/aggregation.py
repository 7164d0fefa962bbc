"""flowtrace's own histogram aggregation, merged into the SDK's metric readers.

An SDK ``histogram.record()`` costs ~5 µs (attribute hashing, locks, exemplar
reservoirs); flowtrace records ~10 points per request, so it aggregates
itself: a dict lookup, a ``bisect`` and a few integer additions per point.

The Python SDK has no ``MetricProducer`` hook (as of 1.45), so the results
are merged into each reader's collection by wrapping the reader's collect
callback. Every reader (OTLP, Prometheus, in-memory) therefore sees
flowtrace's histograms as ordinary SDK ``Metric`` objects. When that is
impossible (a non-SDK provider, a reader that wants delta histograms, changed
SDK internals), ``bridge()`` returns False and flowtrace falls back to SDK
instruments.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from time import time_ns
from typing import Any

from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

Key = tuple[tuple[str, Any], ...]
RawExemplar = tuple[int, int, int]  # trace_id, span_id, time_ns
_CUMULATIVE = AggregationTemporality.CUMULATIVE


class _Series:
    __slots__ = ("counts", "total", "count", "low", "high", "exemplars")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.count = 0
        self.low = float("inf")
        self.high = float("-inf")
        self.exemplars: dict[int, Any] = {}

    def add(self, value: float, bounds: tuple[float, ...], exemplar: RawExemplar | None) -> None:
        bucket = bisect_left(bounds, value)
        self.counts[bucket] += 1
        self.total += value
        self.count += 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        if exemplar is not None:  # (trace_id, span_id, time_ns): built at collection
            self.exemplars[bucket] = (value, exemplar)


class HistogramAggregator:
    """Cumulative explicit-bucket histograms keyed by attribute tuples."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(float(b) for b in bounds)
        self._series: dict[Key, _Series] = {}
        self._by_base: dict[Key, dict[str, _Series]] = {}  # record_each's shortcut

    def record_each(
        self, base: Key, label: str, values: dict[str, int], exemplar: RawExemplar | None
    ) -> None:
        """One point per ``values`` item, ns -> s, keyed ``base + ((label, name),)``.

        The stage histogram gets ~8 points per request with the same base; the
        per-base lookup skips building and hashing a key tuple per point.
        """
        by_name = self._by_base.get(base)
        if by_name is None:
            by_name = self._by_base[base] = {}
        bounds = self.bounds
        for name, ns in values.items():
            series = by_name.get(name)
            if series is None:
                series = by_name[name] = self._series_for(base + ((label, name),))
            series.add(ns / 1e9, bounds, exemplar)

    def record(self, key: Key, value: float, exemplar: RawExemplar | None = None) -> None:
        self._series_for(key).add(value, self.bounds, exemplar)

    def _series_for(self, key: Key) -> _Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(len(self.bounds) + 1)
        return series

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        if not self._series:
            return None
        points = [
            HistogramDataPoint(
                attributes=dict(key),
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=s.count,
                sum=s.total,
                bucket_counts=tuple(s.counts),
                explicit_bounds=self.bounds,
                min=s.low,
                max=s.high,
                exemplars=[
                    Exemplar({}, value, t, span_id, trace_id)
                    for value, (trace_id, span_id, t) in s.exemplars.values()
                ],
            )  # fmt: skip
            for key, s in self._series.items()
        ]
        return Metric(self.name, self.description, self.unit, Histogram(points, _CUMULATIVE))


class Aggregation:
    """All of flowtrace's metrics; ``produce()`` is called at collection time."""

    def __init__(self, scope: InstrumentationScope, dropped: Callable[[], int]) -> None:
        self.scope = scope
        self.lock = threading.Lock()
        self.histograms: list[HistogramAggregator] = []
        self._dropped = dropped
        self._dropped_meta: tuple[str, str, str] | None = None
        self.start_ns = time_ns()

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> HistogramAggregator:
        aggregator = HistogramAggregator(name, unit, description, bounds)
        self.histograms.append(aggregator)
        return aggregator

    def dropped_counter(self, name: str, unit: str, description: str) -> None:
        self._dropped_meta = (name, unit, description)

    def produce(self) -> ScopeMetrics:
        now = time_ns()
        with self.lock:
            metrics = [m for h in self.histograms if (m := h.metric(self.start_ns, now))]
        if self._dropped_meta is not None:
            name, unit, description = self._dropped_meta
            point = NumberDataPoint({}, self.start_ns, now, self._dropped())
            metrics.append(Metric(name, description, unit, Sum([point], _CUMULATIVE, True)))
        return ScopeMetrics(self.scope, metrics, "")


def _merge(data: MetricsData | None, scope_metrics: ScopeMetrics, resource: Any) -> MetricsData:
    if not scope_metrics.metrics:
        return data if data is not None else MetricsData([])
    if data is None or not data.resource_metrics:
        return MetricsData([ResourceMetrics(resource, [scope_metrics], "")])
    first, *rest = data.resource_metrics
    merged = ResourceMetrics(
        first.resource, [*first.scope_metrics, scope_metrics], first.schema_url
    )
    return MetricsData([merged, *rest])


def _for_histograms(preferences: dict[type, Any]) -> Any:
    """A reader's preference for histograms (keyed by the SDK's internal class)."""
    return next((v for k, v in preferences.items() if issubclass(k, HistogramInstrument)), None)


def _wants_cumulative_histograms(reader: Any) -> bool:
    temporality = _for_histograms(getattr(reader, "_instrument_class_temporality", {}))
    aggregation = _for_histograms(getattr(reader, "_instrument_class_aggregation", {}))
    default_ok = aggregation is None or type(aggregation).__name__ in (
        "DefaultAggregation", ExplicitBucketHistogramAggregation.__name__,
    )  # fmt: skip
    return temporality == _CUMULATIVE and default_ok


def bridge(provider: Any, aggregation: Aggregation) -> bool:
    """Merge ``aggregation`` into every reader of an SDK MeterProvider."""
    if not isinstance(provider, SdkMeterProvider):
        return False
    config = getattr(provider, "_sdk_config", None)
    # SDK >= 1.3x keeps readers on the provider; older ones on its config.
    readers = getattr(provider, "_metric_readers", None) or getattr(config, "metric_readers", None)
    resource = getattr(config, "resource", None)
    if not readers or resource is None:
        return False
    if not all(
        callable(getattr(r, "_collect", None)) and _wants_cumulative_histograms(r) for r in readers
    ):
        return False
    for reader in readers:
        original = reader._collect

        def collect(
            reader_: Any, timeout_millis: float = 10_000, _original: Any = original
        ) -> MetricsData:
            data = _original(reader_, timeout_millis=timeout_millis)
            return _merge(data, aggregation.produce(), resource)

        reader._collect = collect
    return True
