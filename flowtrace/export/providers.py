"""Find the tracer and meter providers; set the SDK up only if nobody did.

Explicit ``tracer_provider=`` / ``meter_provider=`` win; then whatever the
application registered globally. Only when the global provider is still
OpenTelemetry's default proxy (the SDK was never configured) does flowtrace
configure it from the standard ``OTEL_*`` variables: OTLP over
``http/protobuf`` unless ``OTEL_EXPORTER_OTLP_PROTOCOL`` says ``grpc``, a
batch span processor, a periodic metric reader. It never replaces a
provider the application set up.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from flowtrace.config import Config

logger = logging.getLogger("flowtrace")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip().lower()


def _sdk_disabled() -> bool:
    return _env("OTEL_SDK_DISABLED") == "true"


def _protocol(signal: str) -> str:
    return _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )


def _span_exporter(cfg: Config) -> SpanExporter | None:
    if cfg.output_file:
        from flowtrace.export.file_export import OtlpJsonFileSpanExporter

        return OtlpJsonFileSpanExporter(cfg.output_file)
    kind = _env("OTEL_TRACES_EXPORTER", "otlp")
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )

        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_readers(cfg: Config) -> list[MetricReader]:
    kind = _env("OTEL_METRICS_EXPORTER", "none" if cfg.output_file else "otlp")
    if kind == "none":
        return []
    if kind == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
        start_http_server(port, addr=host)
        return [PrometheusMetricReader()]
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return [PeriodicExportingMetricReader(ConsoleMetricExporter())]
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter,
        )

        return [PeriodicExportingMetricReader(OTLPMetricExporter())]
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return [PeriodicExportingMetricReader(HttpMetricExporter())]


def direct_export_possible(cfg: Config) -> bool:
    """True when spans would go to OTLP/HTTP: flowtrace can encode them itself."""
    return (
        not cfg.output_file
        and _env("OTEL_TRACES_EXPORTER", "otlp") == "otlp"
        and _protocol("TRACES") == "http/protobuf"
    )


_owned: list[Any] = []  # providers flowtrace created, shut down together at exit


def _shut_down_at_exit(provider: Any, seconds: float) -> None:
    """The SDK's own exit hook waits for the exporter's timeout and retries (10 s and
    more against a dead collector), so for providers it created flowtrace disables it.
    ``FlowTrace`` shuts them down after its final flush, within what is left of its
    exit budget (``shutdown_owned``); this atexit hook is only the safety net."""
    if not _owned:
        atexit.register(shutdown_owned, seconds)
    _owned.append(provider)


def shutdown_owned(seconds: float) -> None:
    """Shut down the providers flowtrace created, in parallel, waiting at most
    ``seconds`` (their threads are daemons: the process may exit past that)."""
    owned = list(_owned)
    _owned.clear()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_shutdown, args=(p, seconds), daemon=True)
               for p in owned]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))


def _shutdown(provider: Any, seconds: float) -> None:
    try:
        if isinstance(provider, SdkMeterProvider):
            provider.shutdown(timeout_millis=seconds * 1000)
        else:
            provider.shutdown()
    except Exception as exc:  # an exporter failing at exit is not the app's problem
        logger.debug("flowtrace: provider shutdown failed: %r", exc)


def tracer_provider(given: Any, cfg: Config) -> tuple[Any, bool]:
    """(provider, configured here): given, global, or a new SDK one set globally."""
    if given is not None:
        return given, False
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider) or _sdk_disabled():
        return current, False
    provider = SdkTracerProvider(resource=Resource.create(), shutdown_on_exit=False)
    _shut_down_at_exit(provider, cfg.shutdown_timeout)
    exporter = _span_exporter(cfg)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("flowtrace: configured the OpenTelemetry tracer provider from OTEL_*")
    return trace.get_tracer_provider(), True


def meter_provider(given: Any, cfg: Config) -> Any:
    """Like ``tracer_provider`` for metrics."""
    if given is not None:
        return given
    current = metrics.get_meter_provider()
    if type(current).__name__ != "_ProxyMeterProvider" or _sdk_disabled():
        return current
    provider = SdkMeterProvider(
        metric_readers=_metric_readers(cfg), resource=Resource.create(), shutdown_on_exit=False
    )
    _shut_down_at_exit(provider, cfg.shutdown_timeout)
    metrics.set_meter_provider(provider)
    logger.info("flowtrace: configured the OpenTelemetry meter provider from OTEL_*")
    return metrics.get_meter_provider()


def otel_django_active() -> bool:
    """True when opentelemetry-instrumentation-django already instruments Django."""
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor
    except ImportError:
        return False
    return bool(DjangoInstrumentor().is_instrumented_by_opentelemetry)
