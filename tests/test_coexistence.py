"""flowtrace beside what users already run (issue #11): opentelemetry-instrumentation-
django with its SqlCommenter, sentry-sdk's Django integration, django-debug-toolbar,
Django REST framework, WhiteNoise outside FlowTrace.

Each tool runs in a fresh process (they patch Django globally), once without and
once with flowtrace: the responses must be identical, the tool's own output the
same, and 1,000 more requests must leave no receiver, wrapper or thread behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

REPEAT = {"otel": 143, "sentry": 167, "toolbar": 200, "drf": 200, "whitenoise": 250}  # ~1,000 each


def _run(tool: str, mode: str, db: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWTRACE_DEMO_DB": str(db),
           "FLOWTRACE_STRICT": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "tests.coexist.run", tool, mode,
                           str(REPEAT[tool])], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("tool", ["otel", "sentry", "toolbar", "drf", "whitenoise"])
def test_flowtrace_beside(tool: str, tmp_path: Path) -> None:
    bare = _run(tool, "bare", tmp_path / "db.sqlite3")
    traced = _run(tool, "traced", tmp_path / "db.sqlite3")
    assert traced["responses"] == bare["responses"]  # status, headers, body digest
    assert traced["tool"] == bare["tool"]  # the other tool saw and reported the same
    # nothing accumulates over ~1,000 requests: signal receivers, execute wrappers (the
    # timer is the one flowtrace adds), threads (its export thread), the handler's chain
    assert traced["after"] == traced["before"]
    assert bare["after"] == bare["before"]
    receivers, wrappers, threads, _ = traced["before"]
    assert wrappers == bare["before"][1] + 1 and threads <= bare["before"][2] + 1
    assert traced["flowtrace"]["roots"] > 0
    expected = _EXPECTED[tool]
    for key, value in expected.items():
        assert traced["flowtrace"][key] == value, key
    if tool == "otel":
        assert traced["tool"]["sqlcommenter"] is True  # its comments reached the database
    if tool == "sentry":
        assert traced["tool"]["errors"] == ["RuntimeError"]


_EXPECTED: dict[str, dict[str, Any]] = {
    "otel": {"routes": ["/boom", "/db", "/hello", "/items/<int:pk>/", "/r/cache-batch",
                        "/stream"]},
    "sentry": {"routes": ["/boom", "/db", "/hello", "/items/<int:pk>/", "/r/cache-batch",
                          "/stream"]},
    "toolbar": {"routes": ["/db", "/hello", "/items/<int:pk>/", "/r/cache-batch", "/stream"]},
    "drf": {"routes": ["/api/items/", "/api/items/{pk}/", "/api/ping", "/hello"],
            "views": ["flowtrace.demo.views.hello", "tests.coexist.urls.ItemViewSet.list",
                      "tests.coexist.urls.ItemViewSet.retrieve", "tests.coexist.urls.Ping.get"]},
    "whitenoise": {"routes": ["/db", "/download", "/hello"]},  # /static/ never reaches FlowTrace
}  # fmt: skip
