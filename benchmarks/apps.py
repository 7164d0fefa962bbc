"""The benchmark's configurations: one WSGI app (plus a flush) per name.

Each configuration runs in its own process, because OpenTelemetry providers
and instrumentors are process-global. Telemetry goes over real OTLP/HTTP to
the endpoint in ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the sink process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

CONFIGS = ("plain", "flowtrace-100", "flowtrace-10", "flowtrace-off", "otel-django")
# Under ASGI the anchor is opentelemetry-instrumentation-asgi's middleware around Django.
ASGI_CONFIGS = ("plain", "flowtrace-100", "flowtrace-10", "flowtrace-off", "otel-asgi")

WSGIApp = Callable[..., Any]


def _env_for(config: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowtrace.demo.settings")
    os.environ["OTEL_SERVICE_NAME"] = f"bench-{config}"
    if config == "flowtrace-10":
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    else:
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    if config == "flowtrace-off":
        os.environ["FLOWTRACE_ENABLED"] = "0"
    if config == "flowtrace-metrics":  # exact metrics, no spans exported
        os.environ["OTEL_TRACES_EXPORTER"] = "none"


class Flush:
    """``spans()`` after each measured slice (the export work of those requests
    is counted); ``everything()`` once at the end. Metrics are not forced out
    per slice: in production they leave once a minute, amortised over every
    request of that minute, and forcing them every few hundred requests would
    count an export per slice that no real deployment pays."""

    def __init__(self, spans: Callable[[], None], everything: Callable[[], None]) -> None:
        self.spans = spans
        self.everything = everything


def _nothing() -> None:
    pass


def _otel_django() -> tuple[WSGIApp, Flush]:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    tracer_provider, meter_provider = _sdk_providers()
    DjangoInstrumentor().instrument()
    from django.core.wsgi import get_wsgi_application

    def everything() -> None:
        tracer_provider.force_flush()
        meter_provider.force_flush()

    return get_wsgi_application(), Flush(tracer_provider.force_flush, everything)


def _sdk_providers() -> tuple[Any, Any]:
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())])
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def build_asgi(config: str) -> tuple[Any, Flush]:
    """(ASGI application, flushes) for one configuration."""
    _env_for(config)
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    if config == "plain":
        return app, Flush(_nothing, _nothing)
    if config == "otel-asgi":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        tracer_provider, meter_provider = _sdk_providers()

        def everything() -> None:
            tracer_provider.force_flush()
            meter_provider.force_flush()

        return OpenTelemetryMiddleware(app), Flush(tracer_provider.force_flush, everything)
    return _flowtrace(app)


def _flowtrace(app: Any) -> tuple[Any, Flush]:
    from opentelemetry import metrics, trace

    from flowtrace import FlowTrace

    traced = FlowTrace(app)

    def spans() -> None:
        if traced._pipeline is not None:  # off: nothing to flush
            traced._pipeline.flush()  # spans are sent at the end of each drain
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()

    def everything() -> None:
        traced.flush()
        for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
            if hasattr(provider, "force_flush"):
                provider.force_flush()

    return traced, Flush(spans, everything)


def build(config: str) -> tuple[WSGIApp, Flush]:
    """(application, flushes) for one configuration."""
    _env_for(config)
    if config == "otel-django":
        return _otel_django()
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    if config == "plain":
        return app, Flush(_nothing, _nothing)
    return _flowtrace(app)


# For gunicorn (application) and uvicorn (asgi_application): BENCH_CONFIG selects the
# configuration.
application: WSGIApp | None = None
asgi_application: Any = None
if os.environ.get("BENCH_CONFIG"):
    if os.environ.get("BENCH_ASGI"):
        asgi_application = build_asgi(os.environ["BENCH_CONFIG"])[0]
    else:
        application = build(os.environ["BENCH_CONFIG"])[0]
