"""``FlowTrace``: the WSGI wrapper. Environ in, iterable out.

The request path does only cheap things: two clock reads, a Timeline, a
sampling decision, one context attach, and the body wrapper. Everything
else (span trees, metrics, export) happens on the exporter thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import Token
from random import getrandbits
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from flowtrace import safety
from flowtrace.capture.body import wrap_body
from flowtrace.capture.django import calls as django_calls
from flowtrace.capture.django import handler as django_hooks
from flowtrace.capture.request_info import snapshot
from flowtrace.capture.timeline import Timeline, clock, current
from flowtrace.config import Config, load_config
from flowtrace.export import providers
from flowtrace.export.direct import DirectSpanSink
from flowtrace.export.pipeline import Pipeline
from flowtrace.export.recorder import Recorder
from flowtrace.export.sdk import MetricSink, SpanSink

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_PROPAGATION_KEYS = frozenset(("HTTP_TRACEPARENT", "HTTP_BAGGAGE", "HTTP_B3", "HTTP_X_B3_TRACEID"))
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED_DECISIONS = (Decision.RECORD_AND_SAMPLE,)


class _EnvironGetter(Getter[dict[str, Any]]):
    def get(self, carrier: dict[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: dict[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_GETTER = _EnvironGetter()


class FlowTrace:
    """Wrap a WSGI application (Django's, or any) and trace every request.

    ``application = FlowTrace(get_wsgi_application())`` is the whole setup;
    options are keyword-only, see ``flowtrace.config.Config``.
    """

    def __init__(
        self,
        application: WSGIApp,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        **options: Any,
    ) -> None:
        self.application = application
        self.config: Config = load_config(options)
        self._active = False
        self._layer_names: tuple[str, ...] = ()
        self._pipeline: Pipeline | None = None
        if self.config.enabled:
            with safety.guard("setup"):
                self._setup(tracer_provider, meter_provider)

    def _setup(self, tracer_provider: Any, meter_provider: Any) -> None:
        cfg = self.config
        provider, configured_here = providers.tracer_provider(tracer_provider, cfg)
        spans: SpanSink | DirectSpanSink = SpanSink(provider)
        direct = cfg.span_export == "direct" or (
            cfg.span_export == "auto" and configured_here and providers.direct_export_possible(cfg)
        )
        if direct and spans.enabled:
            spans = DirectSpanSink(provider)
        metrics = None
        if cfg.metrics:
            http_metric = cfg.http_server_metric
            if http_metric is None:
                http_metric = not providers.otel_django_active()
            provider = providers.meter_provider(meter_provider, cfg)
            metrics = MetricSink(provider, http_metric, lambda: self.dropped)
        if django_hooks.is_django_handler(self.application):
            self._layer_names = django_hooks.instrument_handler(self.application)
            django_calls.install()
        self._spans = spans
        self._metrics = metrics
        self._header_keys = cfg.header_environ_keys
        self._route_resolver = cfg.route_resolver
        self._keep_sql_params = cfg.record_sql_parameters
        self._pipeline = Pipeline(
            Recorder(cfg, spans, metrics),
            cfg.max_pending,
            cfg.export_interval,
            after_drain=getattr(spans, "send_pending", None),
            exit_budget=cfg.shutdown_timeout,
            before_exit=getattr(spans, "prepare_exit", None),
            after_exit=self._at_exit,
        )
        self._active = True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        if not self._active:
            return self.application(environ, start_response)
        t_call = clock()
        tl = Timeline(snapshot(environ, self._header_keys), time_ns(), t_call)
        tl.layer_names = self._layer_names
        tl.keep_sql_params = self._keep_sql_params
        otel_token = self._start_trace(tl, environ)

        def traced_start_response(status: str, headers: Any, *exc_info: Any) -> Any:
            tl.status = status
            return start_response(status, headers, *exc_info)

        token = current.set(tl)
        try:
            result = self.application(environ, traced_start_response)
        except BaseException as exc:
            tl.t_return = clock()
            tl.exc = exc
            self._finish(tl)
            raise
        finally:
            current.reset(token)
            if otel_token is not None:
                otel_context.detach(otel_token)
        tl.t_return = clock()
        if self._route_resolver is not None:
            with safety.guard("route_resolver"):
                tl.route = self._route_resolver(environ)
        try:
            return wrap_body(result, environ, tl, self._finish)
        except Exception as exc:  # never lose the app's response
            safety.report("wrap_body", exc)
            return result

    def _start_trace(self, tl: Timeline, environ: dict[str, Any]) -> Token[Context] | None:
        """Head sampling and ids; make the root the current span for the app."""
        spans = self._spans
        if not spans.enabled:
            return None
        try:
            parent_ctx = None
            parent = None
            if not environ.keys().isdisjoint(_PROPAGATION_KEYS):
                parent_ctx = propagate.extract(environ, getter=_GETTER)
                candidate = trace.get_current_span(parent_ctx).get_span_context()
                if candidate.is_valid:
                    parent = candidate
            if spans.random_ids:  # the SDK's RandomIdGenerator, minus two Python calls
                trace_id = parent.trace_id if parent else getrandbits(128) or 1
                span_id = getrandbits(64) or 1
            else:
                ids = spans.id_generator
                trace_id = parent.trace_id if parent else ids.generate_trace_id()
                span_id = ids.generate_span_id()
            root_sampled = spans.root_sampled  # None unless the sampler is a standard one
            if root_sampled is not None and parent_ctx is None and not otel_context.get_current():
                sampled, trace_state = root_sampled(trace_id), None  # a root: the fast path
            else:
                decision = spans.sampler.should_sample(parent_ctx, trace_id, "HTTP",
                                                       SpanKind.SERVER)  # fmt: skip
                sampled, trace_state = decision.decision in _SAMPLED_DECISIONS, decision.trace_state
            tl.trace_id, tl.span_id, tl.parent, tl.sampled = trace_id, span_id, parent, sampled
            span_ctx = SpanContext(trace_id, span_id, False, _SAMPLED if sampled else _NOT_SAMPLED,
                                   trace_state)  # fmt: skip
            ctx = trace.set_span_in_context(NonRecordingSpan(span_ctx), parent_ctx)
            return otel_context.attach(ctx)
        except Exception as exc:
            safety.report("start_trace", exc)
            return None

    def _finish(self, tl: Timeline) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.submit(tl)
        except Exception as exc:
            safety.report("submit", exc)

    def flush(self) -> None:
        """Export everything recorded so far (tests, CLI, shutdown hooks)."""
        if self._pipeline is None:
            return
        self._pipeline.flush()
        sinks: list[Any] = [self._spans, self._metrics]
        for sink in sinks:
            with safety.guard("flush"):
                if sink is not None and hasattr(sink.provider, "force_flush"):
                    sink.provider.force_flush()

    @property
    def dropped(self) -> int:
        """Requests whose telemetry was dropped (queue full or export error)."""
        if self._pipeline is None:
            return 0
        return self._pipeline.dropped + getattr(self._spans, "dropped_requests", 0)

    def _at_exit(self, remaining: float) -> None:
        """After the final flush: say what was lost, then shut down the providers
        flowtrace created, so that the whole exit fits in ``shutdown_timeout``
        (plus half a second for their last export)."""
        self._report_losses()
        providers.shutdown_owned(max(remaining, 0.5))

    def _report_losses(self) -> None:
        """At exit, one line for the operator if any telemetry was lost."""
        pipeline = self._pipeline
        if pipeline is None or not self.dropped:
            return
        safety.logger.warning(
            "flowtrace: telemetry of %d of %d requests was dropped (queue full, export failed, "
            "or the %.1f s exit budget ran out); see the flowtrace.telemetry.dropped metric",
            self.dropped,
            pipeline.processed + pipeline.dropped,
            self.config.shutdown_timeout,
        )
