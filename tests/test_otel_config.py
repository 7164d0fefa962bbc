"""The user's OpenTelemetry configuration wins (issue #11, items 7 and 10-15).

Propagators, Views and exemplar filters, every OTLP/HTTP variable (TLS for
real: a private CA and a client certificate), the on/off switches and
exporter lists, sampler attributes and trace state, excluded URLs, gevent,
forks that bypass Python's hooks, and Prometheus in several processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from opentelemetry import propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import (
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace.span import TraceState

from flowtrace import FlowTrace
from tests.certs import make_pki
from tests.metrics import points
from tests.otlp_receiver import running_receiver
from tests.servers import ROOT
from tests.wsgi_client import call


def _tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _app(**options: Any) -> tuple[FlowTrace, InMemorySpanExporter, InMemoryMetricReader]:
    tracer, exporter = options.pop("tracing", None) or _tracing()
    reader = options.pop("reader", None) or InMemoryMetricReader()
    meter = options.pop("meter_provider", None) or MeterProvider(metric_readers=[reader])
    app = FlowTrace(WSGIHandler(), tracer_provider=tracer, meter_provider=meter, **options)
    return app, exporter, reader


@pytest.fixture(autouse=True)
def _unhook() -> Any:
    yield
    from flowtrace.capture.django import calls

    calls.uninstall()


# --- 7. propagators ----------------------------------------------------------------


def test_any_configured_propagator_is_extracted() -> None:
    from opentelemetry.propagators.jaeger import JaegerPropagator

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(JaegerPropagator())
    try:
        app, exporter, _ = _app()
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        call(app, "/hello", headers={"uber-trace-id": f"{trace_id}:{parent_id}:0:1"})
        app.flush()
    finally:
        propagate.set_global_textmap(previous)
    [root] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert f"{root.context.trace_id:032x}" == trace_id
    assert f"{root.parent.span_id:016x}" == parent_id


# --- 10. Views and exemplar filters -------------------------------------------------


def test_the_users_views_win() -> None:
    reader = InMemoryMetricReader()
    views = [
        View(instrument_name="flowtrace.stage.duration", aggregation=DropAggregation()),
        View(instrument_name="flowtrace.request.duration", attribute_keys={"http.route"}),
        View(instrument_name="flowtrace.db.queries",
             aggregation=ExplicitBucketHistogramAggregation((0, 10))),
    ]  # fmt: skip
    app, _, _ = _app(meter_provider=MeterProvider(metric_readers=[reader], views=views))
    assert not app._metrics.bridged  # the SDK's own instruments apply the views
    call(app, "/db")
    app._pipeline.flush()
    data = reader.get_metrics_data()
    assert points(data, "flowtrace.stage.duration") == []
    [(_, request)] = points(data, "flowtrace.request.duration")
    assert dict(request.attributes) == {"http.route": "/db"}
    [(_, queries)] = points(data, "flowtrace.db.queries")
    assert tuple(queries.explicit_bounds) == (0, 10)


def test_views_of_other_instruments_keep_the_fast_path() -> None:
    views = [View(instrument_name="http.client.*", aggregation=DropAggregation())]
    app, _, _ = _app(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()],
                                                  views=views))  # fmt: skip
    assert app._metrics.bridged


@pytest.mark.parametrize("name, unsampled_exemplar, sampled_exemplar", [
    ("always_off", False, False),
    ("trace_based", False, True),
    ("always_on", True, True),
])  # fmt: skip
def test_the_exemplar_filter_is_honoured(
    monkeypatch: pytest.MonkeyPatch, name: str, unsampled_exemplar: bool, sampled_exemplar: bool
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", name)
    for sampled, expected in ((False, unsampled_exemplar), (True, sampled_exemplar)):
        exporter = InMemorySpanExporter()
        tracer = TracerProvider(sampler=None if sampled else ALWAYS_OFF)
        tracer.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        app, _, _ = _app(tracing=(tracer, exporter), reader=reader,
                         meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
        assert app._metrics.bridged
        call(app, "/hello")
        app._pipeline.flush()
        [(_, point)] = points(reader.get_metrics_data(), "flowtrace.request.duration")
        assert bool(point.exemplars) is expected, (name, sampled)


# --- 11. every OTLP/HTTP variable, TLS for real ------------------------------------


def _direct_app() -> FlowTrace:
    app = FlowTrace(WSGIHandler(), tracer_provider=TracerProvider(), metrics=False,
                    span_export="direct")  # fmt: skip
    return app


def test_direct_export_over_mutual_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path)
    # requests (so the stock exporter) lets these win over ..._CERTIFICATE; so do we
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with running_receiver(tls=pki.server_context()) as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint + "/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "deflate")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme%20corp,Api-Key=k1")
        app = _direct_app()
        call(app, "/hello")
        app.flush()
        receiver.wait_for(lambda: [s for s in receiver.spans if s.kind == 2])
        headers = receiver.headers[-1]
        assert headers["content-encoding"] == "deflate"
        assert (headers["x-tenant"], headers["api-key"]) == ("acme corp", "k1")
        assert headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
        # without the client certificate the server refuses: nothing arrives
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_KEY")
        before = receiver.requests
        app = _direct_app()
        call(app, "/hello")
        app.flush()
        assert receiver.requests == before and app._spans.dropped_requests == 1
        app._pipeline.shutdown()  # its exit line now, in this test's log, not at the session's end


def test_an_invalid_timeout_warns_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "ten")
    with caplog.at_level(logging.WARNING, logger="flowtrace"):
        app = _direct_app()
    assert app._active and app._spans.sender.timeout == 10.0
    assert "invalid OTLP timeout 'ten'" in caplog.text


@pytest.mark.parametrize("env, direct", [
    ({}, True),
    ({"HTTPS_PROXY": "http://proxy.invalid:3128", "HTTP_PROXY": "http://proxy.invalid:3128"},
     False),
    ({"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "127.0.0.1"}, True),
    ({"OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "mine"}, False),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, False),
])  # fmt: skip
def test_what_the_direct_client_cannot_do_takes_the_sdk_path(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], direct: bool
) -> None:
    from flowtrace.config import Config
    from flowtrace.export.providers import direct_export_possible

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy",
                 "http_proxy", "all_proxy", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert direct_export_possible(Config()) is direct


# --- 12. switches and exporter lists (fresh processes: global providers) ------------

_PROBE = textwrap.dedent("""
    import json, os, threading
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.testproject.settings")
    from django.core.wsgi import get_wsgi_application
    from flowtrace import FlowTrace
    from flowtrace.capture.django import calls
    from tests.wsgi_client import call
    app = FlowTrace(get_wsgi_application())
    call(app, "/hello")
    spans, metrics = app._spans, app._metrics
    multi = getattr(getattr(spans, "provider", None), "_active_span_processor", None)
    readers = getattr(getattr(metrics, "provider", None), "_metric_readers", [])
    print(json.dumps({
        "active": app._active, "hooks": calls.installed(),
        "threads": sorted(t.name for t in threading.enumerate() if "flowtrace" in t.name),
        "span_work": bool(spans and spans.enabled), "metrics": metrics is not None,
        "direct": type(spans).__name__ == "DirectSpanSink",
        "processors": len(getattr(multi, "_span_processors", ())),
        "readers": len(readers),
    }))
    os._exit(0)
""")


def _probe(env: dict[str, str]) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update(
        {
            "PYTHONPATH": str(ROOT),
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            "FLOWTRACE_STRICT": "1",
        }
    )
    full.update(env)
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=full, text=True,
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_sdk_disabled_means_no_work() -> None:
    seen = _probe({"OTEL_SDK_DISABLED": "true"})
    assert seen == {**seen, "active": False, "hooks": False, "threads": []}


def test_no_exporters_means_no_work() -> None:
    seen = _probe({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
    assert seen == {**seen, "active": False, "hooks": False, "threads": []}


def test_traces_none_keeps_metrics_only() -> None:
    seen = _probe({"OTEL_TRACES_EXPORTER": "none"})
    assert (seen["active"], seen["span_work"], seen["metrics"]) == (True, False, True)


def test_the_sdks_exporter_names_are_accepted() -> None:
    seen = _probe({"OTEL_TRACES_EXPORTER": "otlp_proto_http",
                   "OTEL_METRICS_EXPORTER": "otlp_proto_http"})  # fmt: skip
    assert (seen["active"], seen["direct"], seen["readers"]) == (True, True, 1)
    seen = _probe({"OTEL_TRACES_EXPORTER": "console,no_such_exporter"})
    assert (seen["active"], seen["processors"]) == (True, 1)  # the unknown one is skipped


def test_exporter_lists_mean_all_of_them() -> None:
    seen = _probe({"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_METRICS_EXPORTER": "otlp,console"})
    assert (seen["direct"], seen["processors"], seen["readers"]) == (False, 2, 2)


# --- 13. samplers and excluded URLs -------------------------------------------------


class RecordingSampler(Sampler):
    """Samples only GET /db, and says so in its trace state."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None,
                      ) -> SamplingResult:  # fmt: skip
        self.seen.append(dict(attributes or {}))
        if (attributes or {}).get("url.path") == "/db":
            return SamplingResult(Decision.RECORD_AND_SAMPLE, None, TraceState([("mine", "db")]))
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "RecordingSampler"


def test_samplers_see_request_attributes_and_keep_their_trace_state() -> None:
    sampler = RecordingSampler()
    exporter = InMemorySpanExporter()
    tracer = TracerProvider(sampler=sampler)
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    app, _, _ = _app(tracing=(tracer, exporter))
    call(app, "/hello", headers={"User-Agent": "probe/1"})
    call(app, "/db")
    app.flush()
    assert sampler.seen[0] == {"http.request.method": "GET", "url.scheme": "http",
                               "url.path": "/hello", "user_agent.original": "probe/1",
                               "server.address": "127.0.0.1"}  # fmt: skip
    spans = exporter.get_finished_spans()
    assert {s.attributes.get("url.path") for s in spans if s.kind.name == "SERVER"} == {"/db"}
    assert all(s.context.trace_state.get("mine") == "db" for s in spans)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_excluded_urls_get_no_span_and_no_metric(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "environment":
        monkeypatch.setenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "healthz,/hel+o$")
        app, exporter, reader = _app()
    else:
        app, exporter, reader = _app(exclude_urls=["healthz", "/hel+o$"])
    assert call(app, "/hello").body == b"Hello, world!\n"
    call(app, "/db")
    app._pipeline.flush()
    routes = {p.attributes["http.route"] for _, p in
              points(reader.get_metrics_data(), "flowtrace.request.duration")}  # fmt: skip
    assert routes == {"/db"}
    assert {s.name for s in exporter.get_finished_spans() if s.kind.name == "SERVER"} == {"GET /db"}
