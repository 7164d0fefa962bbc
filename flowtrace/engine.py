"""What both front ends share: set-up from the configuration, the start of a
trace, and the hand-off of a finished request.

``FlowTrace`` (WSGI, ``flowtrace.wsgi``) and its ASGI sibling own one
``Engine``. It wires the capture layer (Django hooks, Timelines) to the export
layer (recorder, pipeline, sinks) and decides, per request and cheaply, what
the user's OpenTelemetry configuration asks: excluded URLs, the propagators'
headers, the sampler, the ids.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from random import getrandbits
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from flowtrace import safety
from flowtrace import semconv as sc
from flowtrace.capture.django import calls as django_calls
from flowtrace.capture.django import handler as django_hooks
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config
from flowtrace.export import health, providers
from flowtrace.export.direct import DirectSpanSink
from flowtrace.export.pipeline import Pipeline
from flowtrace.export.recorder import Recorder
from flowtrace.export.sdk import MetricSink, SpanSink

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED_DECISIONS = (Decision.RECORD_AND_SAMPLE,)


def environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class EnvironGetter(Getter[Mapping[str, Any]]):
    """Reads propagation headers from a WSGI environ (or ASGI headers as one)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(environ_key(key))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


GETTER = EnvironGetter()


def excluded_urls(cfg: Config, django: bool) -> re.Pattern[str] | None:
    """``exclude_urls``, else ``OTEL_PYTHON_DJANGO_EXCLUDED_URLS`` (for Django) or
    ``OTEL_PYTHON_EXCLUDED_URLS``: comma-separated regexes searched in the URL
    without its query string, as OpenTelemetry's instrumentations do."""
    patterns = cfg.exclude_urls
    if patterns is None:
        raw = (os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") if django else None) or \
            os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", "")  # fmt: skip
        patterns = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not patterns:
        return None
    try:
        return re.compile("|".join(patterns))
    except re.error as exc:
        safety.logger.warning("flowtrace: ignoring invalid excluded-URL patterns: %s", exc)
        return None


class Engine:
    """Set-up and per-request decisions shared by the WSGI and ASGI front ends."""

    def __init__(self, cfg: Config, app: Any, tracer_provider: Any, meter_provider: Any,
                 dropped: Callable[[], int], capture_only: bool = False) -> None:  # fmt: skip
        self.cfg = cfg
        self.active = False
        self.layer_names: tuple[str, ...] = ()
        self.pipeline: Pipeline | None = None
        self.spans: Any = None
        self.metrics: MetricSink | None = None
        self._flushed_at = (0, 0)  # (pid, pipeline.submitted) at the last flush_before_stop
        if providers.sdk_disabled():  # OTEL_SDK_DISABLED=true: no hooks, no thread
            return
        provider, configured_here = providers.tracer_provider(tracer_provider, cfg)
        spans: SpanSink | DirectSpanSink = SpanSink(provider)
        direct = cfg.span_export == "direct" or (
            cfg.span_export == "auto" and configured_here and providers.direct_export_possible(cfg)
        )
        if direct and spans.enabled:
            spans = DirectSpanSink(provider)
        if configured_here and not providers.exports_spans(provider):
            spans.enabled = False  # OTEL_TRACES_EXPORTER=none: no span work at all
        metrics = None
        if cfg.metrics:
            http_metric = cfg.http_server_metric
            if http_metric is None:
                http_metric = not providers.otel_django_active()
            mp, owned = providers.meter_provider(meter_provider, cfg)
            if not owned or providers.reads_metrics(mp):  # OTEL_METRICS_EXPORTER=none: none
                metrics = MetricSink(mp, http_metric, dropped, self._counters())
        if not spans.enabled and metrics is None and not capture_only and not cfg.server_timing:
            return  # nothing would be exported or shown: a plain pass-through
        handler = django_hooks.django_handler_in(app)
        self.django = handler is not None
        if handler is not None:
            self.layer_names = django_hooks.instrument_handler(handler)
            django_calls.install()
        self.spans = spans
        self.metrics = metrics
        self.header_keys = cfg.header_environ_keys
        self.route_resolver = cfg.route_resolver
        self.keep_sql_params = cfg.record_sql_parameters
        self.excluded = excluded_urls(cfg, self.django)
        self._textmap: Any = None
        self._propagation_keys: frozenset[str] = frozenset()
        self.recorder = Recorder(cfg, spans, metrics)
        self.pipeline = Pipeline(
            self.recorder,
            cfg.max_pending,
            cfg.export_interval,
            after_drain=getattr(spans, "send_pending", None),
            exit_budget=cfg.shutdown_timeout,
            before_exit=getattr(spans, "prepare_exit", None),
            after_exit=self._at_exit,
        )
        self.pipeline.on_fork.append(self._after_fork)
        pipeline = self.pipeline
        self.recorder.self_cost = lambda: pipeline.cost.per_request_us()
        self.active = True

    def _after_fork(self, python_hooks_ran: bool) -> None:
        """In a forked worker (see ``Pipeline``): reset what the parent left.

        A fork that bypassed Python's hooks also skipped ``random``'s reseed:
        every worker would draw the parent's trace and span ids. Reseed it, as
        Python's own fork hook does.
        """
        if not python_hooks_ran:
            random.seed()
        health.after_fork()
        resource = providers.renew_instance()
        if resource is not None and providers.owned(self.spans.provider):
            self.spans.set_resource(resource)
        for sink in (self.spans, self.metrics):
            after_fork = getattr(sink, "after_fork", None)
            if after_fork is not None:
                after_fork(python_hooks_ran)
        used = [sink.provider for sink in (self.spans, self.metrics) if sink is not None]
        providers.after_fork(used, python_hooks_ran)

    def _counters(self) -> tuple[tuple[str, str, str, Callable[[], Any]], ...]:
        def overflow() -> int:
            recorder = getattr(self, "recorder", None)
            return recorder.routes.overflowed if recorder is not None else 0

        def cost(part: str) -> Callable[[], Any]:
            def value() -> Any:
                pipeline = self.pipeline
                if pipeline is None:
                    return 0
                measured = getattr(pipeline.cost, part)
                return measured / 1e9 if part == "cpu_ns" else measured

            return value

        return (
            (sc.ROUTES_OVERFLOW, sc.UNIT_REQUESTS,
             "Requests whose new route was past max_routes, recorded as http.route=(other).",
             overflow),
            (sc.EXPORT_CPU, sc.UNIT_SECONDS,
             "CPU time of flowtrace's export thread: rate() over flowtrace.export.requests' "
             "is its cost per request.", cost("cpu_ns")),
            (sc.EXPORT_REQUESTS, sc.UNIT_REQUESTS, "Requests flowtrace's export thread processed.",
             cost("requests")),
            (sc.EXPORT_EVENTS, sc.UNIT_EVENTS,
             "Calls (queries, templates, cache, middleware...) the export thread processed.",
             cost("events")),
        )  # fmt: skip

    # --- per request -----------------------------------------------------------------

    def is_excluded(self, environ: Mapping[str, Any]) -> bool:
        """Excluded URLs (health checks, metrics endpoints): no span, no metric."""
        excluded = self.excluded
        if excluded is None:
            return False
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:" \
            f"{environ.get('SERVER_PORT', '')}"  # fmt: skip
        url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}" \
            f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"  # fmt: skip
        return excluded.search(url) is not None

    def _propagation(self) -> frozenset[str]:
        """Environ keys of the configured propagators' own headers (``fields``)."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._textmap = textmap
            try:
                self._propagation_keys = frozenset(environ_key(f) for f in textmap.fields)
            except Exception:  # a propagator without fields: always ask it
                self._propagation_keys = frozenset(("*",))
        return self._propagation_keys

    def start_trace(self, tl: Timeline, environ: Mapping[str, Any]) -> Token[Context] | None:
        """Head sampling and ids; make the root the current span for the app."""
        spans = self.spans
        if not spans.enabled:
            return None
        try:
            parent_ctx = None
            parent = None
            keys = self._propagation()
            if "*" in keys or not keys.isdisjoint(environ.keys()):
                parent_ctx = propagate.extract(environ, getter=GETTER)
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
                method = environ.get("REQUEST_METHOD")  # the name a span starts with
                decision = spans.sampler.should_sample(
                    parent_ctx,
                    trace_id,
                    method if isinstance(method, str) else "HTTP",
                    SpanKind.SERVER,
                    sampler_attributes(environ),
                )
                sampled, trace_state = decision.decision in _SAMPLED_DECISIONS, decision.trace_state
            tl.trace_id, tl.span_id, tl.parent, tl.sampled = trace_id, span_id, parent, sampled
            if trace_state:
                tl.trace_state = trace_state
            span_ctx = SpanContext(trace_id, span_id, False, _SAMPLED if sampled else _NOT_SAMPLED,
                                   trace_state)  # fmt: skip
            ctx = trace.set_span_in_context(NonRecordingSpan(span_ctx), parent_ctx)
            tl.otel_context = ctx
            return otel_context.attach(ctx)
        except Exception as exc:
            safety.report("start_trace", exc)
            return None

    # --- process life -----------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Requests whose telemetry was dropped (queue full or export error)."""
        if self.pipeline is None:
            return 0
        return self.pipeline.dropped + getattr(self.spans, "dropped_requests", 0)

    def flush(self) -> None:
        """Export everything recorded so far (tests, CLI, shutdown hooks)."""
        if self.pipeline is None:
            return
        self.pipeline.flush()
        for sink in (self.spans, self.metrics):
            with safety.guard("flush"):
                if sink is not None and hasattr(sink.provider, "force_flush"):
                    sink.provider.force_flush()

    def flush_before_stop(self) -> None:
        """The server is stopping and nothing is in flight: export everything now,
        within ``shutdown_timeout``, without closing anything (if the process goes on
        after all, flowtrace goes on too). For servers that end their processes in
        a way no exit handler sees (``flowtrace.asgi``)."""
        pipeline = self.pipeline
        # once per batch of requests: a stopping server's later request ends (or a
        # second signal) flush again only if something new was submitted
        if pipeline is None or not pipeline.submitted:
            return
        if (os.getpid(), pipeline.submitted) == self._flushed_at:  # per process: a fork
            return  # starts counting again
        self._flushed_at = (os.getpid(), pipeline.submitted)
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        with safety.guard("flush_before_stop"):
            pipeline.drain(deadline)
            for sink in (self.spans, self.metrics):
                remaining = int(max(deadline - time.monotonic(), 0.05) * 1000)
                if sink is not None and hasattr(sink.provider, "force_flush"):
                    sink.provider.force_flush(remaining)

    def _at_exit(self, remaining: float) -> None:
        """After the final flush: say what was lost, then shut down the providers
        flowtrace created, so that the whole exit fits in ``shutdown_timeout``
        (plus half a second for their last export)."""
        self._report_losses()
        pipeline = self.pipeline
        if pipeline is None or not pipeline.submitted:
            # never served a request (a management command, a test run): nothing to
            # send, so no final export that could wait for a dead collector
            providers.forget_owned()
            return
        providers.shutdown_owned(max(remaining, 0.5), pipeline.run_on_export_thread)

    def _report_losses(self) -> None:
        """At exit, one line for the operator if any telemetry was lost."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        dropped = self.dropped
        if not dropped:
            return
        safety.logger.warning(
            "flowtrace: telemetry of %d of %d requests was dropped (queue full, export failed, "
            "or the %.1f s exit budget ran out); see the flowtrace.telemetry.dropped metric",
            dropped,
            pipeline.processed + pipeline.dropped,
            self.cfg.shutdown_timeout,
        )


def sampler_attributes(environ: Mapping[str, Any]) -> dict[str, Any]:
    """What a sampler can decide on at the start (as OpenTelemetry's WSGI
    instrumentation passes it): method, scheme, host, path, user agent."""
    attrs: dict[str, Any] = {}
    for key, name in (("REQUEST_METHOD", sc.HTTP_METHOD), ("wsgi.url_scheme", sc.URL_SCHEME),
                      ("PATH_INFO", sc.URL_PATH), ("HTTP_USER_AGENT", sc.USER_AGENT)):  # fmt: skip
        value = environ.get(key)
        if isinstance(value, str):
            attrs[name] = value
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    if isinstance(host, str):
        attrs[sc.SERVER_ADDRESS] = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return attrs


class FrontEnd:
    """What the two front ends (``flowtrace.wsgi``, ``flowtrace.asgi``) share: the end
    of a request, and the engine's flush, drop count and parts."""

    _engine: Engine | None
    _pipe: Pipeline

    def _finish(self, tl: Timeline) -> None:
        try:
            self._pipe.end_request(tl)
        except Exception as exc:
            safety.report("submit", exc)

    def flush(self) -> None:
        """Export everything recorded so far (tests, CLI, shutdown hooks)."""
        if self._engine is not None:
            self._engine.flush()

    @property
    def dropped(self) -> int:
        """Requests whose telemetry was dropped (queue full or export error)."""
        return self._engine.dropped if self._engine is not None else 0

    # The engine's parts, for tests and tools that look inside.
    @property
    def _pipeline(self) -> Any:
        return self._engine.pipeline if self._engine is not None else None

    @property
    def _spans(self) -> Any:
        return self._engine.spans if self._engine is not None else None

    @property
    def _metrics(self) -> Any:
        return self._engine.metrics if self._engine is not None else None
