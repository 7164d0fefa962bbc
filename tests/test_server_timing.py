"""Server-Timing (opt-in): the stages known when the response starts, read by a real
headless Chromium through the Performance API, as a developer's tools would show them."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from tests import browser
from tests.servers import gunicorn

ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
       "FLOWTRACE_STRICT": "1"}  # fmt: skip

_ENTRIES = """
performance.getEntriesByType('navigation')[0].serverTiming
  .map(e => ({name: e.name, duration: e.duration, description: e.description}))
"""


def _header(headers: list[tuple[str, str]]) -> str | None:
    values = [v for k, v in headers if k.lower() == "server-timing"]
    return ", ".join(values) if values else None


def test_off_by_default() -> None:
    with gunicorn("tests.testproject.wsgi:traced", ENV) as server:
        status, headers, _ = server.request("/db")
    assert status == 200 and _header(headers) is None


def test_server_timing_in_the_browsers_performance_api() -> None:
    path = browser.binary()
    if path is None:
        assert not os.environ.get("CI"), "chromium must be installed in CI (scripts/system-deps.sh)"
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs it as root)")
    with gunicorn(
        "tests.testproject.wsgi:traced", {**ENV, "FLOWTRACE_SERVER_TIMING": "1"}
    ) as server:
        status, headers, _ = server.request("/db")
        with browser.chromium(path) as page:
            page.open(f"http://127.0.0.1:{server.port}/db")
            entries: list[dict[str, Any]] = page.evaluate(_ENTRIES)
    header = _header(headers)
    assert status == 200 and header is not None
    entry = r'\w+;dur=\d+\.\d{3}(;desc="[^"]*")?'
    assert re.fullmatch(rf"{entry}(, {entry})*", header), header
    by_name = {e["name"]: e for e in entries}
    assert {"middleware", "url_resolution", "view", "db", "template", "app"} <= set(by_name)
    assert by_name["db"]["description"] == "2 queries"
    stages = sum(e["duration"] for name, e in by_name.items() if name != "app")
    # exclusive stage times tile the application call up to the response's start
    assert all(e["duration"] >= 0 for e in entries)
    assert stages == pytest.approx(by_name["app"]["duration"], abs=0.01 * len(entries))
