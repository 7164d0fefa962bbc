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
from fnmatch import fnmatchcase
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
RawExemplar = tuple[int, int, int, bool]  # trace_id, span_id, time_ns, sampled
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

    def add(self, value: float, bounds: tuple[float, ...], exemplar: RawExemplar | None,
            generation: int = 0) -> None:  # fmt: skip
        bucket = bisect_left(bounds, value)
        self.counts[bucket] += 1
        self.total += value
        self.count += 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        if exemplar is not None:  # the last one per bucket, as the SDK's reservoir keeps
            self.exemplars[bucket] = (value, exemplar, generation)


class HistogramAggregator:
    """Cumulative explicit-bucket histograms keyed by attribute tuples."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(float(b) for b in bounds)
        self._series: dict[Key, _Series] = {}
        self._by_base: dict[Key, dict[str, _Series]] = {}  # record_each's shortcut
        self.generation = 0  # bumped at each collection: exemplars are reported once

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
        bounds, generation = self.bounds, self.generation
        for name, ns in values.items():
            series = by_name.get(name)
            if series is None:
                series = by_name[name] = self._series_for(base + ((label, name),))
            series.add(ns / 1e9, bounds, exemplar, generation)

    def record(self, key: Key, value: float, exemplar: RawExemplar | None = None) -> None:
        self._series_for(key).add(value, self.bounds, exemplar, self.generation)

    def _series_for(self, key: Key) -> _Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(len(self.bounds) + 1)
        return series

    def metric(self, start_ns: int, now_ns: int, since: int) -> Metric | None:
        """The cumulative points; exemplars only those recorded since generation
        ``since`` (this reader's previous collection), as the SDK reports them."""
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
                    for value, (trace_id, span_id, t, _), generation in s.exemplars.values()
                    if generation >= since
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
        self._counters: list[tuple[str, str, str, Callable[[], Any]]] = []
        self._collected: dict[int, int] = {}  # reader -> generation after its last collection
        self.start_ns = time_ns()

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> HistogramAggregator:
        aggregator = HistogramAggregator(name, unit, description, bounds)
        self.histograms.append(aggregator)
        return aggregator

    def dropped_counter(self, name: str, unit: str, description: str) -> None:
        self._dropped_meta = (name, unit, description)

    def counter(self, name: str, unit: str, description: str, value: Callable[[], Any]) -> None:
        """A cumulative counter read at collection time."""
        self._counters.append((name, unit, description, value))

    def produce(self, reader: Any = None) -> ScopeMetrics:
        """What ``reader`` collects now: cumulative points, and the exemplars
        recorded since its previous collection."""
        now = time_ns()
        with self.lock:
            since = self._collected.get(id(reader), 0)
            metrics = [m for h in self.histograms if (m := h.metric(self.start_ns, now, since))]
            generation = self.histograms[0].generation + 1 if self.histograms else 0
            for histogram in self.histograms:
                histogram.generation = generation
            self._collected[id(reader)] = generation
        counters = list(self._counters)
        if self._dropped_meta is not None:
            counters.insert(0, (*self._dropped_meta, self._dropped))
        values = [(meta, value()) for *meta, value in counters]
        if not metrics and not any(value for _, value in values):
            return ScopeMetrics(self.scope, [], "")  # served nothing yet: nothing to export
        for (name, unit, description), value in values:
            point = NumberDataPoint({}, self.start_ns, now, value)
            metrics.append(Metric(name, description, unit, Sum([point], _CUMULATIVE, True)))
        return ScopeMetrics(self.scope, metrics, "")


def _merge(
    data: MetricsData | None, scope_metrics: ScopeMetrics, resource: Any
) -> MetricsData | None:
    if not scope_metrics.metrics:
        return data  # None when nothing at all: the reader then exports nothing
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


_FILTERS = {"TraceBasedExemplarFilter": "trace_based", "AlwaysOnExemplarFilter": "always_on",
            "AlwaysOffExemplarFilter": "always_off"}  # fmt: skip


def exemplar_policy(provider: Any) -> str | None:
    """The provider's exemplar filter as flowtrace applies it itself, or None for
    a filter flowtrace does not know (then the SDK's instruments must apply it)."""
    config = getattr(provider, "_sdk_config", None)
    exemplar_filter = getattr(config, "exemplar_filter", None)
    if exemplar_filter is None:
        return "trace_based"
    return _FILTERS.get(type(exemplar_filter).__name__)


def _view_may_match(view: Any, scope: InstrumentationScope, names: list[tuple[str, str]]) -> bool:
    """Could this SDK View select one of flowtrace's instruments? (Unknown view
    internals count as yes: the SDK's own instruments then apply the view.)"""
    try:
        name_pattern = view._instrument_name
        unit_pattern = view._instrument_unit
        instrument_type = view._instrument_type
        meter = (view._meter_name, view._meter_version, view._meter_schema_url)
    except AttributeError:
        return True
    if meter[0] is not None and meter[0] != scope.name:
        return False
    if meter[1] is not None and meter[1] != scope.version:
        return False
    if meter[2] is not None and meter[2] != (scope.schema_url or ""):
        return False
    if instrument_type is not None:
        from opentelemetry.sdk.metrics import Histogram as SdkHistogram
        from opentelemetry.sdk.metrics import ObservableCounter

        if not (issubclass(SdkHistogram, instrument_type)
                or issubclass(ObservableCounter, instrument_type)):  # fmt: skip
            return False
    return any(
        (name_pattern is None or fnmatchcase(name, name_pattern.lower()))
        and (unit_pattern is None or fnmatchcase(unit, unit_pattern))
        for name, unit in names
    )


def views_apply(provider: Any, scope: InstrumentationScope, names: list[tuple[str, str]]) -> bool:
    """True when one of the provider's Views may select a flowtrace instrument."""
    config = getattr(provider, "_sdk_config", None)
    views = getattr(config, "views", ())
    return any(_view_may_match(view, scope, names) for view in views)


def bridge(provider: Any, aggregation: Aggregation) -> bool:
    """Merge ``aggregation`` into every reader of an SDK MeterProvider."""
    if not isinstance(provider, SdkMeterProvider):
        return False
    names = [(h.name, h.unit) for h in aggregation.histograms]
    names += [(name, unit) for name, unit, _, _ in aggregation._counters]
    if aggregation._dropped_meta is not None:
        names.append(aggregation._dropped_meta[:2])
    if views_apply(provider, aggregation.scope, names) or exemplar_policy(provider) is None:
        return False  # the user's Views and exemplar filter win: SDK instruments
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
        ) -> MetricsData | None:
            data = _original(reader_, timeout_millis=timeout_millis)
            # the provider's resource now (a forked worker gets its own instance id)
            return _merge(data, aggregation.produce(reader_), getattr(config, "resource", resource))

        reader._collect = collect
    return True
