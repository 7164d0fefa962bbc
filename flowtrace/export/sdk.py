"""OpenTelemetry SDK output: trees in, SDK spans and metrics out.

Spans (the SDK path) are built as ``ReadableSpan`` objects off the request
thread and handed to the tracer provider's own span processor, so whatever
processors and exporters the application configured receive flowtrace's
spans like any others. Metrics use flowtrace's own aggregation merged into
the SDK's readers (``flowtrace.export.aggregation``), or SDK instruments where that
is impossible. (The direct span path lives in ``flowtrace.export.direct``.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Histogram, Meter, MeterProvider, Observation
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)

from flowtrace import semconv as sc
from flowtrace.build.tree import Node
from flowtrace.export.aggregation import Aggregation, Key, RawExemplar, bridge, exemplar_policy
from flowtrace.export.sampling import RootDecision, root_decider, sdk_random_ids

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


def _version() -> str:
    from flowtrace import __version__

    return __version__


# At most this many of flowtrace's spans wait in the application's span processor:
# a request brings ~20 at once, and a drain hundreds of requests, which would
# overflow a BatchSpanProcessor's queue (2048 by default) and drop spans.
_FLUSH_EVERY_SPANS = 512


class SpanSink:
    """Builds ReadableSpans from a node tree and feeds the provider's processor.

    Every ``_FLUSH_EVERY_SPANS`` spans, and after each drain (``send_pending``),
    it calls the processor's ``force_flush()``. That runs on flowtrace's export
    thread, never a request thread, and keeps whatever queue the application
    configured from overflowing.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        tracer = provider.get_tracer(sc.TRACER_NAME, _version())
        self.enabled = isinstance(tracer, SdkTracer)
        self.processor: SpanProcessor | None = None
        self.root_sampled: RootDecision | None = None
        self.random_ids = False
        if isinstance(tracer, SdkTracer):
            self.processor = tracer.span_processor
            self.resource = tracer.resource
            self.sampler = tracer.sampler
            self.id_generator = tracer.id_generator
            self.root_sampled = root_decider(tracer.sampler)
            self.random_ids = sdk_random_ids(tracer.id_generator)
        self.scope = InstrumentationScope(sc.TRACER_NAME, _version())
        self._unflushed = 0

    def emit(
        self,
        root: Node,
        root_name: str,
        root_attrs: dict[str, Any],
        ids: tuple[int, int, SpanContext | None, Any],
        wall_offset: int,
        status: tuple[int, str],
        exception: dict[str, str] | None,
    ) -> int:
        """Export the tree as spans; returns how many were handed on."""
        if self.processor is None:
            return 0
        trace_id, root_span_id, parent, trace_state = ids
        code, description = status
        root_status = Status(StatusCode(code), description or None) if code else _UNSET
        events: tuple[Event, ...] = ()
        if exception is not None:
            events = (Event("exception", exception, root.end + wall_offset),)

        def to_wall(t_ns: int) -> int:
            return t_ns + wall_offset

        count = 0
        for span in self._spans(root, root_name, root_attrs, trace_id, root_span_id,
                                parent, trace_state, to_wall, root_status, events):  # fmt: skip
            self.processor.on_end(span)
            count += 1
        self._unflushed += count
        if self._unflushed >= _FLUSH_EVERY_SPANS:
            self.send_pending()
        return count

    def set_resource(self, resource: Any) -> None:
        """A forked worker's own resource (its ``service.instance.id``)."""
        self.resource = resource

    def send_pending(self) -> None:
        """Have the processor export what flowtrace gave it (after each drain)."""
        if self._unflushed and self.processor is not None:
            self._unflushed = 0
            self.processor.force_flush()

    def _spans(
        self,
        root: Node,
        root_name: str,
        root_attrs: dict[str, Any],
        trace_id: int,
        root_span_id: int,
        parent: SpanContext | None,
        trace_state: Any,
        to_wall: Callable[[int], int],
        status: Status,
        events: tuple[Event, ...],
    ) -> Iterator[ReadableSpan]:
        root_ctx = SpanContext(trace_id, root_span_id, False, _SAMPLED, trace_state)
        yield ReadableSpan(
            root_name, root_ctx, parent, self.resource, root_attrs, events, (),
            SpanKind.SERVER, None, status, to_wall(root.start), to_wall(root.end), self.scope,
        )  # fmt: skip
        todo = [(child, root_ctx) for child in root.children]
        new_id = self.id_generator.generate_span_id
        while todo:
            node, parent_ctx = todo.pop()
            ctx = SpanContext(trace_id, new_id(), False, _SAMPLED, trace_state)
            attrs = {**node.attrs, **dict(node.extra)} if node.extra else node.attrs
            yield ReadableSpan(
                node.name, ctx, parent_ctx, self.resource, attrs, (), (),
                SpanKind.INTERNAL, None, _UNSET if node.error is None else _ERROR,
                to_wall(node.start), to_wall(node.end), self.scope,
            )  # fmt: skip
            todo.extend((child, ctx) for child in node.children)


class _SdkHistogram:
    """Fallback: an SDK instrument behind the aggregator's ``record`` signature."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def record(self, key: Key, value: float, exemplar: RawExemplar | None = None) -> None:
        ctx = exemplar_context(*exemplar) if exemplar else None
        self._histogram.record(value, dict(key), ctx)

    def record_each(
        self, base: Key, label: str, values: dict[str, int], exemplar: RawExemplar | None
    ) -> None:
        for name, ns in values.items():
            self.record(base + ((label, name),), ns / 1e9, exemplar)


_HISTOGRAMS = (
    (sc.STAGE_DURATION, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "Exclusive time of each request stage; stacked means add up to the request mean."),
    (sc.REQUEST_DURATION, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "Whole request, from server receipt (queue) to the end of close()."),
    (sc.DB_QUERIES, sc.UNIT_QUERIES, sc.QUERY_COUNT_BUCKETS, "Database queries per request."),
    (sc.TTFB, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "Time to first byte: from server receipt (queue) to the first body chunk."),
    (sc.DB_DUPLICATES, sc.UNIT_QUERIES, sc.QUERY_COUNT_BUCKETS,
     "Executions beyond the first of SQL statements repeated in a request (N+1 queries)."),
    (sc.HTTP_SERVER_DURATION, sc.UNIT_SECONDS, sc.HTTP_SERVER_BUCKETS,
     "Duration of HTTP server requests."),
)  # fmt: skip
# Under ASGI only (no points, so nothing exported, under WSGI).
_ASGI_HISTOGRAMS = (
    (sc.BRIDGE_WAIT, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "Time a request's sync<->async crossings waited (to start on the other side, then to "
     "resume), per request and cause."),
    (sc.BRIDGE_CROSSINGS, sc.UNIT_CROSSINGS, sc.QUERY_COUNT_BUCKETS,
     "Sync<->async crossings per request and cause."),
    (sc.LOOP_HELD, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "Time a request's middleware and view code held the event loop without yielding."),
    (sc.LOOP_LAG, sc.UNIT_SECONDS, sc.DURATION_BUCKETS,
     "How late a 100 ms timer on the worker's event loop fired (loop lag)."),
)  # fmt: skip
_DROPPED_DESCRIPTION = "Requests whose telemetry flowtrace dropped (queue full or export error)."


class MetricSink:
    """Stage, request and query-count histograms, recorded once per request.

    Uses flowtrace's own aggregation merged into the SDK readers when it can
    (``flowtrace.export.aggregation``), SDK instruments otherwise: when the
    provider is not the SDK's, or one of its Views may select a flowtrace
    instrument, or its exemplar filter is not one of the SDK's three.
    ``exemplars`` tells the recorder which requests offer an exemplar.
    """

    def __init__(
        self, provider: MeterProvider, http_server_metric: bool, dropped: Callable[[], int],
        counters: tuple[tuple[str, str, str, Callable[[], Any]], ...] = (),
    ) -> None:  # fmt: skip
        self.provider = provider
        self._dropped = dropped
        wanted = (_HISTOGRAMS if http_server_metric else _HISTOGRAMS[:5]) + _ASGI_HISTOGRAMS
        aggregation = Aggregation(InstrumentationScope(sc.METER_NAME, _version()), dropped)
        for name, unit, bounds, description in wanted:
            aggregation.histogram(name, unit, description, bounds)
        aggregation.dropped_counter(sc.DROPPED, sc.UNIT_REQUESTS, _DROPPED_DESCRIPTION)
        for counter in counters:
            aggregation.counter(*counter)
        self.lock: Any = aggregation.lock
        self.bridged = bridge(provider, aggregation)
        recorders: list[Any] = list(aggregation.histograms)
        # the SDK instruments apply the filter themselves: offer every request's
        self.exemplars = (exemplar_policy(provider) or "sdk") if self.bridged else "sdk"
        if not self.bridged:
            self.lock = nullcontext()
            recorders = self._sdk_instruments(provider, wanted, counters)
        self.stage, self.request, self.queries, self.ttfb, self.duplicates = recorders[:5]
        self.http = recorders[5] if http_server_metric else None
        self.bridge_wait, self.bridge_crossings, self.loop_held, self.loop_lag = recorders[-4:]
        self._aggregation = aggregation

    def after_fork(self, python_hooks_ran: bool) -> None:
        """In a forked child: a lock the parent's collector held at the fork
        would never be released here."""
        if self.bridged:
            self._aggregation.lock = self.lock = threading.Lock()

    def _sdk_instruments(self, provider: MeterProvider, wanted: Any, counters: Any) -> list[Any]:
        meter: Meter = provider.get_meter(sc.METER_NAME, _version())
        meter.create_observable_counter(
            sc.DROPPED, [self._observe_dropped], sc.UNIT_REQUESTS, _DROPPED_DESCRIPTION
        )
        for name, unit, description, value in counters:
            meter.create_observable_counter(name, [_observer(value)], unit, description)
        return [
            _SdkHistogram(meter.create_histogram(
                name, unit, description, explicit_bucket_boundaries_advisory=bounds))
            for name, unit, bounds, description in wanted
        ]  # fmt: skip

    def _observe_dropped(self, _options: Any) -> Iterator[Observation]:
        yield Observation(self._dropped())

    def record(
        self,
        base: Key,
        totals: dict[str, int],
        per_middleware: dict[str, int] | None,
        duration_ns: int,
        queries: int,
        ttfb_ns: int | None,
        error_type: str | None,
        exemplar: RawExemplar | None,
        http_key: Key | None = None,
        server_ns: int | None = None,
        duplicates: int = 0,
    ) -> None:
        """Record one request: a point per stage that ran, plus the totals.

        ``http.server.request.duration`` gets the server's own time
        (``server_ns``: no proxy queue) under its own attributes (``http_key``).
        """
        with self.lock:
            if per_middleware:
                totals = {stage: ns for stage, ns in totals.items() if stage != sc.MIDDLEWARE}
            self.stage.record_each(base, sc.ATTR_STAGE, totals, exemplar)
            if per_middleware:
                record_stage = self.stage.record
                for path, ns in per_middleware.items():
                    key = base + ((sc.ATTR_STAGE, sc.MIDDLEWARE), (sc.ATTR_MIDDLEWARE, path))
                    record_stage(key, ns / 1e9, exemplar)
            request_key = base + ((sc.ERROR_TYPE, error_type),) if error_type else base
            self.request.record(request_key, duration_ns / 1e9, exemplar)
            self.queries.record(base, queries, exemplar)
            self.duplicates.record(base, duplicates, exemplar)
            if ttfb_ns is not None:
                self.ttfb.record(base, ttfb_ns / 1e9, exemplar)
            if self.http is not None:
                server = duration_ns if server_ns is None else server_ns
                self.http.record(http_key or request_key, server / 1e9, exemplar)

    def record_asyncio(self, base: Key, causes: dict[str, list[int]], held_ns: int | None,
                       lags: list[float], exemplar: RawExemplar | None) -> None:  # fmt: skip
        """An ASGI request: its crossings per cause ([count, wait ns]), the time its
        code held the loop, and the loop-lag samples taken since the last request."""
        with self.lock:
            for cause, (count, wait_ns) in causes.items():
                key = base + ((sc.ATTR_BRIDGE_CAUSE, cause),)
                self.bridge_crossings.record(key, count, exemplar)
                self.bridge_wait.record(key, wait_ns / 1e9, exemplar)
            if held_ns is not None:
                self.loop_held.record(base, held_ns / 1e9, exemplar)
            for lag in lags:
                self.loop_lag.record((), lag, None)


def _observer(value: Callable[[], int]) -> Callable[[Any], Iterator[Observation]]:
    def observe(_options: Any) -> Iterator[Observation]:
        yield Observation(value())

    return observe


def exemplar_for(trace_id: int, span_id: int, time_ns: int, sampled: bool = True) -> RawExemplar:
    """The trace a request's metric points link to."""
    return (trace_id, span_id, time_ns, sampled)


def exemplar_context(trace_id: int, span_id: int, _time_ns: int = 0, sampled: bool = True) -> Any:
    """A context whose current span is the request's root, for SDK exemplars."""
    ctx = SpanContext(trace_id, span_id, False, _SAMPLED if sampled else _NOT_SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(ctx))
