"""flowtrace uses the application's providers and never replaces them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Global providers can be set once per process, so each scenario runs in a fresh one.
APP_CONFIGURED = textwrap.dedent("""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    mine = TracerProvider()
    mine.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(mine)
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from flowtrace.export.direct import DirectSpanSink
    from tests.wsgi_client import call
    app = FlowTrace(get_wsgi_application(), metrics=False)
    assert trace.get_tracer_provider() is mine, "flowtrace replaced the app's provider"
    assert not isinstance(app._spans, DirectSpanSink), "the app's processors must see spans"
    call(app, "/hello")
    app.flush()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert "GET /hello" in names and len(names) > 10, names
    print("ok")
""")

NOTHING_CONFIGURED = textwrap.dedent("""
    from opentelemetry import trace
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from flowtrace.export.direct import DirectSpanSink
    app = FlowTrace(get_wsgi_application())
    provider = trace.get_tracer_provider()
    assert type(provider).__module__.startswith("opentelemetry.sdk"), provider
    assert isinstance(app._spans, DirectSpanSink)
    assert app._spans.sender.url == "http://127.0.0.1:9/v1/traces"
    print("ok")
""")


def _run(code: str, **env: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OTEL_METRICS_EXPORTER": "none", **env},
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_application_configured_provider_is_used_not_replaced() -> None:
    _run(APP_CONFIGURED)


def test_unconfigured_sdk_is_set_up_from_otel_environment() -> None:
    _run(NOTHING_CONFIGURED, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
