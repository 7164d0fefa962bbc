"""Every WSGI and ASGI server in the README, every documented stop: nothing served
is lost (issues #12 and #16). Each scenario serves requests, then gets its server's own stop signal;
every request's trace and every metric point must arrive, and the process must exit
within ``shutdown_timeout`` plus the server's own grace. The measured matrix is
printed in the terminal summary ("servers: ...") and kept in docs/deploying.md.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import django
import pytest

from tests.otlp_receiver import Receiver
from tests.reliability import free_port
from tests.server_matrix import (
    Scenario,
    ServerProcess,
    asgi_matrix,
    available,
    matrix,
    metric_totals,
)

pytestmark = pytest.mark.slow

MATRIX: list[dict[str, Any]] = []  # printed by conftest's terminal summary
SHUTDOWN_TIMEOUT = 2.0
PATHS = ["/hello", "/db", "/stream", "/items/3/", "/cached"]
ASYNC_PATHS = ["/a/hello", "/a/count", "/a/stream"]  # async views, under ASGI


@pytest.mark.parametrize("scenario", matrix() + asgi_matrix(), ids=lambda s: s.name)
def test_nothing_served_is_lost_on_stop(scenario: Scenario, receiver: Receiver) -> None:
    why_not = available(scenario)
    if why_not is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{scenario.name}: {why_not} (CI installs every server)")
        pytest.skip(why_not)
    env = {
        "OTEL_SERVICE_NAME": scenario.service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # only the exit flush delivers metrics
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # ... and spans, on the SDK path
        "FLOWTRACE_EXPORT_INTERVAL": "30",  # nothing leaves before the stop but by the flush
        "FLOWTRACE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "FLOWTRACE_DEMO_DB": os.environ["FLOWTRACE_DEMO_DB"],
        "DJANGO_SETTINGS_MODULE": "tests.testproject.settings",
    }
    server = ServerProcess(scenario, env, free_port())
    server.start()
    served = 0
    try:
        for _ in range(6):
            for path in PATHS + (ASYNC_PATHS if scenario.asgi else []):
                status, _ = server.request(path)
                assert status == 200, (path, server.log())
                served += 1
    finally:
        code = server.stop()
    log = server.log()

    def roots() -> int:
        service = scenario.service
        return sum(
            1 for s in receiver.spans if s.kind == 2 and s.resource.get("service.name") == service
        )

    received = 0
    try:
        received = receiver.wait_for(lambda: roots() >= served + 1 and roots(), timeout=10)
    except AssertionError:
        received = roots()
    totals = metric_totals(receiver.metric_requests, scenario.service)
    MATRIX.append({
        "server": scenario.server, "mode": scenario.mode, "stop": scenario.stop.name,
        "python": platform.python_version(), "django": django.get_version(),
        "served": served + 1,  # + the readiness probe
        "traces": received, "metric_requests": totals.get("flowtrace.request.duration", 0),
        "http_metric": totals.get("http.server.request.duration", 0),
        "exit_s": round(server.stopped_in, 2), "rc": code,
    })  # fmt: skip
    assert received == served + 1, log
    for name in ("flowtrace.request.duration", "flowtrace.db.queries",
                 "http.server.request.duration", "flowtrace.request.ttfb"):  # fmt: skip
        assert totals.get(name) == served + 1, (name, totals, log)
    assert totals.get("flowtrace.stage.duration", 0) >= 5 * (served + 1)
    assert server.stopped_in < SHUTDOWN_TIMEOUT + 1.0 + scenario.grace, log
    noise = [line for line in log.splitlines()
             if ("flowtrace:" in line and " INFO " not in line)
             or "flowtrace internal error" in line
             or "Transient error" in line or "Failed to export" in line]  # fmt: skip
    assert noise == [], noise  # a normal stop with a healthy collector says nothing
