"""Find the tracer and meter providers; set the SDK up only if nobody did.

Explicit ``tracer_provider=`` / ``meter_provider=`` win; then whatever the
application registered globally. Only when the global provider is still
OpenTelemetry's default proxy (the SDK was never configured) does flowtrace
configure it from the standard ``OTEL_*`` variables, as the SDK's own
auto-configuration would: ``OTEL_TRACES_EXPORTER`` and
``OTEL_METRICS_EXPORTER`` are comma-separated lists (``otlp``, ``console``,
``prometheus``, ``none``), OTLP over ``http/protobuf`` unless
``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL`` says ``grpc``, a batch span
processor and a periodic metric reader. ``OTEL_SDK_DISABLED=true`` switches
flowtrace off. It never replaces a provider the application set up.

The SDK exporters flowtrace creates would log every failed attempt; their
records are folded into one flowtrace line per signal (``_QuietExporters``).

Each process gets its own ``service.instance.id`` (unless
``OTEL_RESOURCE_ATTRIBUTES`` sets one): the workers of a server each export
their own cumulative metrics, and without an instance id their series would
collide in the backend. A forked worker gets a new one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from flowtrace.config import Config
from flowtrace.export import health

logger = logging.getLogger("flowtrace")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip().lower()


def sdk_disabled() -> bool:
    return _env("OTEL_SDK_DISABLED") == "true"


def _exporters(variable: str, default: str) -> list[str]:
    """An ``OTEL_*_EXPORTER`` list; ``none`` anywhere means none at all."""
    names = [n.strip() for n in _env(variable, default).split(",") if n.strip()]
    return [] if "none" in names else names


def _protocol(signal: str) -> str:
    return _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )


def _entry_point(group: str, name: str) -> Any:
    """An exporter registered by a package (what the SDK's own configuration loads)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=group, name=name):
        return entry.load()
    logger.warning("flowtrace: no exporter %r is installed (entry point group %s); ignored",
                   name, group)  # fmt: skip
    return None


def _span_exporter(kind: str) -> SpanExporter | None:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind not in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        exporter_class = _entry_point("opentelemetry_traces_exporter", kind)
        return exporter_class() if exporter_class is not None else None
    if kind == "otlp_proto_grpc" or (kind == "otlp" and _protocol("TRACES") == "grpc"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )

        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _span_exporters(cfg: Config) -> list[SpanExporter]:
    if cfg.output_file:
        from flowtrace.export.file_export import OtlpJsonFileSpanExporter

        return [OtlpJsonFileSpanExporter(cfg.output_file)]
    exporters = (_span_exporter(kind) for kind in _exporters("OTEL_TRACES_EXPORTER", "otlp"))
    return [exporter for exporter in exporters if exporter is not None]


def _prometheus_reader() -> MetricReader | None:
    """A Prometheus endpoint in this process, or None (one line saying why) when
    its port is taken: several worker processes cannot share one endpoint."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        logger.warning(
            "flowtrace: cannot serve Prometheus metrics on %s:%d (%s); this process's metrics "
            "are not exposed. One endpoint serves one process: with several workers, send "
            "OTLP to a Collector and let it expose /metrics (README, Deploying).",
            host, port, exc.strerror or exc,
        )  # fmt: skip
        return None
    _PROMETHEUS_PID.append(os.getpid())
    return PrometheusMetricReader()


_PROMETHEUS_PID: list[int] = []  # the process serving the Prometheus endpoint


def _metric_reader(kind: str) -> MetricReader | None:
    if kind == "prometheus":
        return _prometheus_reader()
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if kind not in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        loaded = _entry_point("opentelemetry_metrics_exporter", kind)
        if loaded is None:
            return None
        if isinstance(loaded, type) and issubclass(loaded, MetricReader):
            return loaded()
        return PeriodicExportingMetricReader(loaded())
    if kind == "otlp_proto_grpc" or (kind == "otlp" and _protocol("METRICS") == "grpc"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter,
        )

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return PeriodicExportingMetricReader(HttpMetricExporter())


def _metric_readers() -> list[MetricReader]:
    readers = (_metric_reader(kind) for kind in _exporters("OTEL_METRICS_EXPORTER", "otlp"))
    return [reader for reader in readers if reader is not None]


def direct_export_possible(cfg: Config) -> bool:
    """True when spans would go to OTLP/HTTP only, with nothing the direct client
    does not do as the stock exporter would (see ``otlp_http.unsupported_reason``)."""
    exporters = _exporters("OTEL_TRACES_EXPORTER", "otlp")
    if cfg.output_file or exporters not in (["otlp"], ["otlp_proto_http"]):
        return False
    if exporters == ["otlp"] and _protocol("TRACES") != "http/protobuf":
        return False
    from flowtrace.export.otlp_http import unsupported_reason

    reason = unsupported_reason()
    if reason is not None:
        logger.info("flowtrace: spans go through the SDK's OTLP exporter (%s)", reason)
        return False
    return True


# --- the SDK exporters' own logging ------------------------------------------------

_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
)


class _QuietExporters(logging.Filter):
    """Folds the SDK exporters' per-attempt warnings ("Transient error ...
    retrying", "Failed to export") into flowtrace's one line about export
    failures (``flowtrace.export.health``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        signal = "metrics" if "metric" in record.name else "traces"
        health.failed(f"the SDK's {signal} exporter", record.getMessage())
        return False


_quiet = _QuietExporters()


def _silence_sdk_exporters() -> None:
    for name in _EXPORTER_LOGGERS:
        target = logging.getLogger(name)
        if _quiet not in target.filters:
            target.addFilter(_quiet)


# --- providers flowtrace owns -------------------------------------------------------

_owned: list[Any] = []  # providers flowtrace created, shut down together at exit


def _own(provider: Any, seconds: float) -> None:
    """The SDK's own exit hook waits for the exporter's timeout and retries (10 s and
    more against a dead collector), so for providers it created flowtrace disables it.
    ``FlowTrace`` shuts them down after its final flush, within what is left of its
    exit budget (``shutdown_owned``); this atexit hook is only the safety net."""
    if not _owned:
        atexit.register(shutdown_owned, seconds)
    _owned.append(provider)
    _silence_sdk_exporters()


def shutdown_owned(seconds: float, runner: Any = None) -> None:
    """Shut down the providers flowtrace created, waiting at most ``seconds``: on
    ``runner(task, timeout)`` (flowtrace's export thread) when given, else on new
    daemon threads in parallel; what is still running then is abandoned (the
    process may exit past it). At interpreter shutdown Python 3.12+ starts no new
    thread: the export thread runs them, or, without one, this thread does."""
    owned = list(_owned)
    _owned.clear()
    if not owned:
        return

    def shut_all() -> None:
        for provider in owned:
            _shutdown(provider, seconds)

    if runner is not None and runner(shut_all, seconds):
        return
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_shutdown, args=(p, seconds), daemon=True)
               for p in owned]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        shut_all()
        return
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))


def forget_owned() -> None:
    """A process that never served a request exits without a final export."""
    _owned.clear()


def _shutdown(provider: Any, seconds: float) -> None:
    try:
        if isinstance(provider, SdkMeterProvider):
            provider.shutdown(timeout_millis=seconds * 1000)
        else:
            provider.shutdown()
    except Exception as exc:  # an exporter failing at exit is not the app's problem
        logger.debug("flowtrace: provider shutdown failed: %r", exc)


def after_fork(used: list[Any], python_hooks_ran: bool) -> None:
    """In a forked worker. When the fork bypassed Python's fork hooks (uWSGI's
    default mode), restart what the SDK's own hooks would have restarted in the
    providers flowtrace uses: their span processors' and metric readers' threads."""
    if not python_hooks_ran:
        for provider in used:
            for part in _threads_of(provider):
                reinit = getattr(part, "_at_fork_reinit", None)
                if callable(reinit):
                    try:
                        reinit()
                    except Exception as exc:
                        logger.debug("flowtrace: could not restart %r after a fork: %r", part, exc)
    if _PROMETHEUS_PID and _PROMETHEUS_PID[0] != os.getpid():
        logger.warning(
            "flowtrace: the Prometheus endpoint is served by the process that set it up (pid "
            "%d), not by this forked worker (pid %d): this worker's metrics are not exposed. "
            "With several workers, send OTLP to a Collector (README, Deploying).",
            _PROMETHEUS_PID[0], os.getpid(),
        )  # fmt: skip
        _PROMETHEUS_PID[:] = [os.getpid()]  # said once per process


def _threads_of(provider: Any) -> list[Any]:
    """The SDK objects that run an export thread (internal attributes, read with
    care: an SDK that renamed them simply restarts nothing)."""
    parts: list[Any] = []
    if isinstance(provider, SdkMeterProvider):
        readers = getattr(provider, "_metric_readers", None) or getattr(
            getattr(provider, "_sdk_config", None), "metric_readers", None
        )
        parts += list(readers or ())
    else:
        multi = getattr(provider, "_active_span_processor", None)
        for processor in getattr(multi, "_span_processors", ()):
            parts.append(processor)
            inner = getattr(processor, "_batch_processor", None)
            if inner is not None:
                parts.append(inner)
    return parts


def exports_spans(provider: Any) -> bool:
    """Does this provider (one flowtrace created) have a span processor?"""
    multi = getattr(provider, "_active_span_processor", None)
    return bool(getattr(multi, "_span_processors", (True,)))


def reads_metrics(provider: Any) -> bool:
    """Does this provider (one flowtrace created) have a metric reader?"""
    readers = getattr(provider, "_metric_readers", None)
    if readers is None:
        readers = getattr(getattr(provider, "_sdk_config", None), "metric_readers", (True,))
    return bool(readers)


_INSTANCE = "service.instance.id"
_resource: list[Resource] = []  # the one Resource of the providers flowtrace created


def _own_resource() -> Resource:
    """``Resource.create()`` plus a per-process ``service.instance.id``."""
    if not _resource:
        resource = Resource.create()
        if _INSTANCE not in resource.attributes:
            resource = resource.merge(Resource({_INSTANCE: str(uuid.uuid4())}))
        _resource.append(resource)
    return _resource[0]


def owned(provider: Any) -> bool:
    return any(provider is p for p in _owned)


def renew_instance() -> Resource | None:
    """In a forked worker: a new ``service.instance.id`` for the providers
    flowtrace created (None if it created none, or the id came from the user)."""
    if not _resource or "service.instance.id=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        return None  # the user's own id: theirs to make unique
    # SDKs that detect one per process (1.4x) give this process's; older ones none
    fresh = Resource.create().attributes.get(_INSTANCE)
    if not fresh or fresh == _resource[0].attributes.get(_INSTANCE):
        fresh = str(uuid.uuid4())
    resource = _resource[0].merge(Resource({_INSTANCE: fresh}))
    _resource[0] = resource
    for provider in _owned:
        try:
            if isinstance(provider, SdkMeterProvider):
                provider._sdk_config.resource = resource  # read at every collection
            else:
                provider._resource = resource
        except AttributeError as exc:  # an SDK that moved it: keep the parent's id
            logger.debug("flowtrace: could not renew the instance id: %r", exc)
            return None
    return resource


def tracer_provider(given: Any, cfg: Config) -> tuple[Any, bool]:
    """(provider, configured here): given, global, or a new SDK one set globally."""
    if given is not None:
        return given, False
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current, False
    provider = SdkTracerProvider(resource=_own_resource(), shutdown_on_exit=False)
    _own(provider, cfg.shutdown_timeout)
    for exporter in _span_exporters(cfg):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("flowtrace: configured the OpenTelemetry tracer provider from OTEL_*")
    return trace.get_tracer_provider(), True


def meter_provider(given: Any, cfg: Config) -> tuple[Any, bool]:
    """Like ``tracer_provider`` for metrics. ``FLOWTRACE_OUTPUT_FILE`` does not change
    where metrics go: ``OTEL_METRICS_EXPORTER`` (OTLP by default) decides."""
    if given is not None:
        return given, False
    current = metrics.get_meter_provider()
    if type(current).__name__ != "_ProxyMeterProvider":
        return current, False
    provider = SdkMeterProvider(
        metric_readers=_metric_readers(), resource=_own_resource(), shutdown_on_exit=False
    )
    _own(provider, cfg.shutdown_timeout)
    metrics.set_meter_provider(provider)
    logger.info("flowtrace: configured the OpenTelemetry meter provider from OTEL_*")
    return metrics.get_meter_provider(), True


def otel_django_active() -> bool:
    """True when opentelemetry-instrumentation-django already instruments Django."""
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor
    except ImportError:
        return False
    return bool(DjangoInstrumentor().is_instrumented_by_opentelemetry)
