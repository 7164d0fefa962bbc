"""Unit tests: queue-header parsing, configuration, and the pinned names."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from flowtrace import semconv
from flowtrace.capture.queue_time import parse_queue_start, queue_ns
from flowtrace.config import Config, load_config

NOW_S = 1_700_000_000.0


@pytest.mark.parametrize(("header", "expected_ns"), [
    ("t=1700000000.123", 1_700_000_000_123_000_000),
    ("1700000000.123", 1_700_000_000_123_000_000),
    ("t=1700000000", 1_700_000_000_000_000_000),
    ("t=1700000000123", 1_700_000_000_123_000_000),  # ms
    ("t=1700000000123456", 1_700_000_000_123_456_000),  # us (Apache %t)
    ("1700000000123456789", 1_700_000_000_123_456_789),  # ns
    ("  t = 1700000000.5  ", 1_700_000_000_500_000_000),
])  # fmt: skip
def test_queue_header_formats(header: str, expected_ns: int) -> None:
    assert parse_queue_start(header) == expected_ns


@pytest.mark.parametrize("header", ["", "abc", "t=", "t=-1", "12", "t=1.2.3", "0x10", None])
def test_queue_header_garbage(header: str | None) -> None:
    assert parse_queue_start(header) is None


def test_queue_time_bounds() -> None:
    arrival = int(NOW_S * 1e9)
    assert queue_ns(f"t={NOW_S - 0.25}", arrival, 60) == pytest.approx(250_000_000, abs=1000)
    assert queue_ns(f"t={NOW_S + 10}", arrival, 60) is None  # future
    assert queue_ns(f"t={NOW_S - 120}", arrival, 60) is None  # older than the bound
    assert queue_ns(f"t={NOW_S + 0.001}", arrival, 60) == 0  # small skew clamps to 0


def test_config_precedence_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(FLOWTRACE={"middleware_spans": "combined", "slow_threshold": 2}):
        cfg = load_config({"slow_threshold": 3}, env={})
        assert (cfg.middleware_spans, cfg.slow_threshold) == ("combined", 3)
        cfg = load_config({}, env={"FLOWTRACE_ENABLED": "0", "FLOWTRACE_SLOW_THRESHOLD": "off"})
        assert cfg.enabled is False and cfg.slow_threshold is None


@pytest.mark.parametrize("options", [
    {"middleware_spans": "all"}, {"capture_query": "yes"}, {"max_queue_time": 0},
    {"slow_threshold": -1}, {"max_pending": 0}, {"no_such_option": 1},
])  # fmt: skip
def test_config_is_validated_once_with_value_error(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        load_config(options, env={})


def test_bad_environment_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="FLOWTRACE_"):
        load_config({}, env={"FLOWTRACE_SLOW_THRESHOLD": "fast"})


def test_defaults_are_private() -> None:
    cfg = Config()
    assert cfg.capture_query == "off" and cfg.capture_headers == ()
    assert cfg.record_sql_parameters is False and cfg.metrics_per_middleware is False


def test_names_are_pinned() -> None:
    """The dashboard and CI tooling depend on these strings: change = breaking."""
    assert semconv.STAGES == ("queue", "setup", "middleware", "url_resolution", "view", "db",
                              "template", "cache", "streaming", "close")  # fmt: skip
    assert (semconv.STAGE_DURATION, semconv.REQUEST_DURATION, semconv.DB_QUERIES) == (
        "flowtrace.stage.duration",
        "flowtrace.request.duration",
        "flowtrace.db.queries",
    )
    assert semconv.HTTP_SERVER_DURATION == "http.server.request.duration"
    assert semconv.TTFB == "flowtrace.request.ttfb"
    assert semconv.UNIT_SECONDS == "s"
    assert (semconv.ATTR_STAGE, semconv.ATTR_MIDDLEWARE, semconv.HTTP_ROUTE) == (
        "flowtrace.stage",
        "flowtrace.middleware",
        "http.route",
    )
    assert semconv.DURATION_BUCKETS[0] == 0.00001 and semconv.DURATION_BUCKETS[-1] == 60.0
    assert list(semconv.DURATION_BUCKETS) == sorted(semconv.DURATION_BUCKETS)


def test_wall_clock_sanity() -> None:
    assert parse_queue_start(f"t={time.time():.6f}") is not None


def test_the_layers_depend_only_downstream() -> None:
    """capture/ imports neither build/ nor export/; build/ never imports export/ (the
    package's layering, docs/design.md)."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "flowtrace"
    forbidden = {"capture": ("flowtrace.build", "flowtrace.export", "flowtrace.report",
                             "flowtrace.regression", "flowtrace.wsgi", "flowtrace.asgi"),
                 "build": ("flowtrace.export", "flowtrace.report", "flowtrace.regression",
                           "flowtrace.wsgi", "flowtrace.asgi")}  # fmt: skip
    offenders = []
    for layer, banned in forbidden.items():
        for path in (package / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                offenders += [f"{path.name}: {n}" for n in names if n.startswith(banned)]
    assert offenders == []
