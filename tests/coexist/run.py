"""Serve the test project with one other tool, with or without flowtrace, in a
fresh process (these tools patch Django globally); print what happened as JSON.

usage: python -m tests.coexist.run TOOL traced|bare REPEAT
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from typing import Any

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.coexist.settings"
TOOL, MODE, REPEAT = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["COEXIST_TOOL"] = TOOL

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

PATHS = {
    "otel": ["/hello", "/db", "/r/cache-batch", "/boom", "/stream", "/items/3/"],
    "sentry": ["/hello", "/db", "/r/cache-batch", "/boom", "/stream", "/items/3/"],
    "toolbar": ["/hello", "/db", "/stream", "/items/3/", "/r/cache-batch"],
    "drf": ["/api/items/", "/api/items/3/", "/api/ping", "/api/items/999/", "/hello"],
    "whitenoise": ["/static/site.css", "/hello", "/db", "/download"],
}
#: headers whose values legitimately differ between two runs
_VARYING = {"date", "last-modified", "etag", "set-cookie", "djdt-store-id", "djdt-request-id"}
executed: list[str] = []  # SQL as SQLite finally ran it (after every execute wrapper)


def _trace_sqlite(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.set_trace_callback(executed.append)


def setup_tool() -> dict[str, Any]:
    """Install the tool the way its documentation says; return its own output sink."""
    out: dict[str, Any] = {}
    if TOOL == "otel":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        DjangoInstrumentor().instrument(tracer_provider=provider, is_sql_commentor_enabled=True,
                                        meter_provider=MeterProvider())  # fmt: skip
        out["exporter"] = exporter
    elif TOOL == "sentry":
        import sentry_sdk
        from sentry_sdk.integrations.django import DjangoIntegration
        from sentry_sdk.transport import Transport

        envelopes: list[Any] = []

        class Capture(Transport):
            def capture_envelope(self, envelope: Any) -> None:
                envelopes.append(envelope)

        sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Capture(),
                        traces_sample_rate=1.0, integrations=[DjangoIntegration()],
                        default_integrations=False)  # fmt: skip
        out["envelopes"] = envelopes
    return out


def tool_output(out: dict[str, Any], bodies: dict[str, bytes]) -> dict[str, Any]:
    """What the tool itself reports, comparable between a bare and a traced run."""
    if TOOL == "otel":
        spans = out["exporter"].get_finished_spans()
        django_spans = [s for s in spans if s.instrumentation_scope.name.endswith("django")]
        commented = [sql for sql in executed if "/*" in sql and "db_driver" in sql]
        return {
            "spans": sorted(
                {f"{s.name} {s.attributes.get('http.route')}" for s in django_spans}
            ),  # fmt: skip
            "sqlcommenter": bool(commented) and len(commented) == len(executed),
        }
    if TOOL == "sentry":
        kinds: dict[str, int] = {}
        errors: set[str] = set()
        transactions: set[str] = set()
        for envelope in out["envelopes"]:
            for item in envelope.items:
                payload = item.payload.json or {}
                kinds[item.type] = kinds.get(item.type, 0) + 1
                if item.type == "event":
                    errors.update(v["type"] for v in payload["exception"]["values"])
                if item.type == "transaction":
                    transactions.add(payload["transaction"])
        return {"kinds": kinds, "errors": sorted(errors), "transactions": sorted(transactions)}
    if TOOL == "toolbar":  # its panels' counts, from its Server-Timing header
        return {path: re.findall(r'desc="((?:SQL|Cache) \d+ \w+)"', timing)
                for path, timing in out.get("timings", {}).items()}  # fmt: skip
    return {}


def main() -> None:
    import django
    from django.core.signals import got_request_exception, request_finished, request_started
    from django.db import connection
    from django.db.backends.signals import connection_created

    django.setup()
    from flowtrace.demo.setup_db import prepare

    prepare()
    connection_created.connect(_trace_sqlite)
    connection.close()
    out = setup_tool()
    from django.core.wsgi import get_wsgi_application

    from tests.wsgi_client import call

    app: Any = get_wsgi_application()
    handler = app
    tracer = InMemorySpanExporter()
    flowtrace_app = None
    if MODE == "traced":
        from flowtrace import FlowTrace

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(tracer))
        meters = MeterProvider([InMemoryMetricReader()])
        flowtrace_app = app = FlowTrace(app, tracer_provider=provider, meter_provider=meters)
    if TOOL == "whitenoise":
        from whitenoise import WhiteNoise

        app = WhiteNoise(app, root=os.path.join(os.path.dirname(__file__), "static"),
                         prefix="static/")  # fmt: skip
    responses: dict[str, Any] = {}
    bodies: dict[str, bytes] = {}
    for path in PATHS[TOOL]:
        result = call(app, path, headers={"Accept": "application/json"})
        bodies[path] = result.body
        headers = sorted((k.lower(), v) for k, v in result.headers if k.lower() not in _VARYING)
        if TOOL == "toolbar":  # timings differ run to run; the counts are compared below
            out.setdefault("timings", {})[path] = dict(headers).get("server-timing", "")
            headers = [(k, v) for k, v in headers if k != "server-timing"]
        body = result.body
        responses[path] = [result.status, headers, hashlib.sha256(body).hexdigest()]
    output = tool_output(out, bodies)
    signals = (request_started, request_finished, got_request_exception)
    before = ([len(s.receivers) for s in signals], len(connection.execute_wrappers),
              threading.active_count(), id(handler._middleware_chain))  # fmt: skip
    for _ in range(REPEAT):
        for path in PATHS[TOOL]:
            call(app, path)
    after = ([len(s.receivers) for s in signals], len(connection.execute_wrappers),
             threading.active_count(), id(handler._middleware_chain))  # fmt: skip
    flowtrace: dict[str, Any] = {}
    if flowtrace_app is not None:
        flowtrace_app.flush()
        spans = tracer.get_finished_spans()
        roots = [s for s in spans if s.kind.name == "SERVER"]
        flowtrace = {
            "roots": len(roots),
            "routes": sorted({s.attributes.get("http.route", "") for s in roots}),
            "stages": sorted({str(s.attributes.get("flowtrace.stage")) for s in spans} - {"None"}),
            "views": sorted({s.name for s in spans
                             if s.attributes.get("flowtrace.stage") == "view"}),
        }  # fmt: skip
    print(json.dumps({"responses": responses, "tool": output, "before": before, "after": after,
                      "flowtrace": flowtrace}))  # fmt: skip


if __name__ == "__main__":
    main()
