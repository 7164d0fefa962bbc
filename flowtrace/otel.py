"""The only module that talks to OpenTelemetry: trees in, spans and metrics out.

Spans are built as SDK ``ReadableSpan`` objects off the request thread and
handed to the tracer provider's own span processor, so whatever processors
and exporters the application configured receive flowtrace's spans like any
others. Metrics go through ordinary OpenTelemetry instruments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
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
from flowtrace.tree import Node

logger = logging.getLogger("flowtrace")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


def _version() -> str:
    from flowtrace import __version__

    return __version__


class SpanSink:
    """Builds ReadableSpans from a node tree and feeds the provider's processor."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        tracer = provider.get_tracer(sc.TRACER_NAME, _version())
        self.enabled = isinstance(tracer, SdkTracer)
        self.processor: SpanProcessor | None = None
        if isinstance(tracer, SdkTracer):
            self.processor = tracer.span_processor
            self.resource = tracer.resource
            self.sampler = tracer.sampler
            self.id_generator = tracer.id_generator
        self.scope = InstrumentationScope(sc.TRACER_NAME, _version())

    def emit(
        self,
        root: Node,
        root_name: str,
        root_attrs: dict[str, Any],
        ids: tuple[int, int, SpanContext | None],
        to_wall: Any,
        error: tuple[str, str, str] | None,
        status_code: int,
    ) -> int:
        """Export the tree as spans; returns how many were handed on."""
        if self.processor is None:
            return 0
        trace_id, root_span_id, parent = ids
        status = _UNSET
        events: tuple[Event, ...] = ()
        if error is not None:
            status = Status(StatusCode.ERROR, f"{error[0]}: {error[1]}"[:256])
            events = (
                Event(
                    "exception",
                    {
                        "exception.type": error[0],
                        "exception.message": error[1],
                        "exception.stacktrace": error[2],
                    },  # fmt: skip
                    to_wall(root.end),
                ),
            )
        elif status_code >= 500:
            status = Status(StatusCode.ERROR)
        count = 0
        for span in self._spans(root, root_name, root_attrs, trace_id, root_span_id,
                                parent, to_wall, status, events):  # fmt: skip
            self.processor.on_end(span)
            count += 1
        return count

    def _spans(
        self,
        root: Node,
        root_name: str,
        root_attrs: dict[str, Any],
        trace_id: int,
        root_span_id: int,
        parent: SpanContext | None,
        to_wall: Any,
        status: Status,
        events: tuple[Event, ...],
    ) -> Iterator[ReadableSpan]:
        trace_state = parent.trace_state if parent is not None else None
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
            yield ReadableSpan(
                node.name, ctx, parent_ctx, self.resource, node.attrs, (), (),
                SpanKind.INTERNAL, None, _UNSET, to_wall(node.start), to_wall(node.end),
                self.scope,
            )  # fmt: skip
            todo.extend((child, ctx) for child in node.children)


class MetricSink:
    """Stage, request and query-count histograms, recorded per request."""

    def __init__(
        self, provider: MeterProvider, http_server_metric: bool, dropped: Callable[[], int]
    ) -> None:
        self.provider = provider
        meter: Meter = provider.get_meter(sc.METER_NAME, _version())
        self.stage: Histogram = meter.create_histogram(
            sc.STAGE_DURATION, sc.UNIT_SECONDS,
            "Exclusive time of each request stage; stacked means add up to the request mean.",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )  # fmt: skip
        self.request: Histogram = meter.create_histogram(
            sc.REQUEST_DURATION, sc.UNIT_SECONDS,
            "Whole request, from server receipt (queue) to the end of close().",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )  # fmt: skip
        self.queries: Histogram = meter.create_histogram(
            sc.DB_QUERIES, sc.UNIT_QUERIES, "Database queries per request.",
            explicit_bucket_boundaries_advisory=sc.QUERY_COUNT_BUCKETS,
        )  # fmt: skip
        self.http: Histogram | None = None
        if http_server_metric:
            self.http = meter.create_histogram(
                sc.HTTP_SERVER_DURATION, sc.UNIT_SECONDS, "Duration of HTTP server requests.",
                explicit_bucket_boundaries_advisory=sc.HTTP_SERVER_BUCKETS,
            )  # fmt: skip
        self._dropped = dropped
        meter.create_observable_counter(
            sc.DROPPED, [self._observe_dropped], sc.UNIT_REQUESTS,
            "Requests whose telemetry flowtrace dropped (queue full or export failure).",
        )  # fmt: skip

    def _observe_dropped(self, _options: Any) -> Iterator[Observation]:
        yield Observation(self._dropped())

    def record(
        self,
        base: dict[str, Any],
        totals: dict[str, int],
        per_middleware: dict[str, int] | None,
        duration_ns: int,
        queries: int,
        error_type: str | None,
        exemplar_ctx: Any,
    ) -> None:
        """Record one request: a point per stage that ran, plus the totals."""
        record_stage = self.stage.record
        for stage, ns in totals.items():
            if stage == sc.MIDDLEWARE and per_middleware:
                continue
            record_stage(ns / 1e9, {**base, sc.ATTR_STAGE: stage}, exemplar_ctx)
        if per_middleware:
            for path, ns in per_middleware.items():
                attrs = {**base, sc.ATTR_STAGE: sc.MIDDLEWARE, sc.ATTR_MIDDLEWARE: path}
                record_stage(ns / 1e9, attrs, exemplar_ctx)
        request_attrs = {**base, sc.ERROR_TYPE: error_type} if error_type else base
        self.request.record(duration_ns / 1e9, request_attrs, exemplar_ctx)
        self.queries.record(queries, base, exemplar_ctx)
        if self.http is not None:
            self.http.record(duration_ns / 1e9, request_attrs, exemplar_ctx)


def exemplar_context(trace_id: int, span_id: int) -> Any:
    """A context whose current span is the (sampled) root, for exemplars."""
    ctx = SpanContext(trace_id, span_id, False, _SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(ctx))
