"""The two ASGI measures on a real server (uvicorn, 127.0.0.1) under concurrent load,
against what the application itself measures (issue #16):

* a sync-only middleware in an async stack, 20 concurrent clients: its crossings are
  counted exactly (two per request) and their waiting time matches the hand-off time
  the app measures around the middleware (tests/testproject/middleware.py);
* an async view that calls ``time.sleep(0.02)``: its longest hold of the event loop is
  never below the blocking the view measures and close to it, and a trivial async route
  shows only Django's own code.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.otlp_receiver import Receiver
from tests.reliability import free_port
from tests.server_matrix import Scenario, ServerProcess, metric_totals

pytestmark = pytest.mark.slow
CLIENTS = 20
PER_CLIENT = 10


def _serve(receiver: Receiver, service: str) -> ServerProcess:
    env = {
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        "FLOWTRACE_EXPORT_INTERVAL": "0.05",
        "FLOWTRACE_DEMO_DB": os.environ["FLOWTRACE_DEMO_DB"],
        "DJANGO_SETTINGS_MODULE": "tests.testproject.settings_bridge",
        "FLOWTRACE_SLOW_THRESHOLD": "100",  # head sampling only: every trace is kept anyway
    }
    server = ServerProcess(Scenario("uvicorn", "load", signal.SIGTERM), env, free_port())
    server.start()
    return server


def _get(port: int, path: str) -> tuple[str, dict[str, str]]:
    """One request with its own trace id: (trace id, response headers)."""
    trace_id = secrets.token_hex(16)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, path
        return trace_id, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def _roots(receiver: Receiver, service: str) -> dict[str, Any]:
    return {s.trace_id: s for s in receiver.spans
            if s.kind == 2 and s.resource.get("service.name") == service}  # fmt: skip


def test_crossings_of_a_sync_middleware_under_20_concurrent_clients(receiver: Receiver) -> None:
    service = "asgi-bridge-load"
    server = _serve(receiver, service)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda _: _get(server.port, "/a/hello"),
                                    range(CLIENTS * PER_CLIENT)))  # fmt: skip
    finally:
        server.stop()
    served = len(results)
    handoff_ns = sum(int(headers["x-handoff-ns"]) for _, headers in results)
    receiver.wait_for(lambda: len(_roots(receiver, service)) >= served + 1)
    delay = "tests.testproject.middleware.DelayMiddleware"
    crossings = waits = 0.0
    for request in receiver.metric_requests:
        for rm in request.resource_metrics:
            if not any(kv.key == "service.name" and kv.value.string_value == service
                       for kv in rm.resource.attributes):  # fmt: skip
                continue
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name not in ("flowtrace.bridge.crossings", "flowtrace.bridge.wait"):
                        continue
                    for point in metric.histogram.data_points:
                        attrs = {kv.key: kv.value.string_value for kv in point.attributes}
                        if attrs.get("flowtrace.bridge.cause") == delay \
                                and attrs.get("http.route") == "/a/hello":  # fmt: skip
                            if metric.name == "flowtrace.bridge.crossings":
                                crossings = point.sum
                            else:
                                waits = point.sum
    assert crossings == 2 * served  # exactly two per request
    mean_gap = abs(waits - handoff_ns / 1e9) / served
    assert mean_gap <= 0.001, (waits, handoff_ns / 1e9, served)  # ±1 ms per request
    totals = metric_totals(receiver.metric_requests, service)
    assert totals.get("flowtrace.request.duration") == served + 1  # + the readiness probe
    roots = _roots(receiver, service)
    for trace_id, _ in results:
        assert roots[trace_id].attributes["flowtrace.bridge.crossings"] >= 2


def test_blocking_the_loop_on_a_real_server(receiver: Receiver) -> None:
    service = "asgi-blocking-load"
    server = _serve(receiver, service)
    try:
        paths = ["/a/blocking?ms=20" if i % 4 == 0 else "/a/hello" for i in range(120)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda p: (p, *_get(server.port, p)), paths))
    finally:
        server.stop()
    receiver.wait_for(lambda: len(_roots(receiver, service)) >= len(results) + 1)
    roots = _roots(receiver, service)
    excess, trivial = [], []
    for path, trace_id, headers in results:
        longest = roots[trace_id].attributes["flowtrace.asyncio.longest_hold"]
        if path.startswith("/a/blocking"):
            blocked = int(headers["x-blocked-ns"]) / 1e9
            assert longest >= blocked  # never less than the view's own sleep
            excess.append(longest - blocked)
        else:
            trivial.append(longest)
    excess.sort()
    trivial.sort()
    # the median close to the app's own measure: the step also holds the code around the
    # sleep and, under load, waits for the GIL held by the worker threads of other requests
    # (on a loaded 2-core CI machine the median excess reached 1.7 ms)
    assert excess[len(excess) // 2] <= 0.005, excess
    # small on a trivial async route: its longest step is Django's own code (URL resolution,
    # async middleware), GIL waits included; medians of 0.5-1.2 ms seen under this load
    assert trivial[len(trivial) // 2] < 0.003, trivial
