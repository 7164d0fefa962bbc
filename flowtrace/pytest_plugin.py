"""pytest plugin (``pytest11`` entry point): profile requests, assert budgets, keep a baseline.

    def test_order_page(flowtrace, db):      # db: pytest-django's database fixture
        profile = flowtrace.get("/orders/1/", repeat=5)
        assert profile.status == 200
        profile.assert_budget(queries=3, view="20ms")
        flowtrace.check_baseline(profile)

Requests run in-process through the project's own WSGI handler wrapped in
FlowTrace, so stages are the ones production shows. ``check_baseline``
compares against ``flowtrace-baseline.json``: counts exactly, the request
time within a tolerance. As django-perf-rec does, missing records are
written locally (mode ``once``) and are a failure in CI (mode ``none`` when
``$CI`` is set), so a forgotten baseline cannot pass silently.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median, median_low
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flowtrace.regression.replay import Sample

_MODES = ("once", "none", "all")
_COUNTS = ("queries", "templates", "cache_calls")
_UNITS = {"s": 1e9, "ms": 1e6, "us": 1e3, "µs": 1e3, "ns": 1.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|ms|us|µs|ns)\s*$")


def _duration_ns(name: str, limit: Any) -> float:
    """``"20ms"``, ``"1.5s"``, ``"300us"``: a bare number is refused, since ``view=20``
    reads as milliseconds to some and seconds to others."""
    match = _DURATION.match(limit) if isinstance(limit, str) else None
    if not match:
        raise ValueError(f"budget {name}={limit!r}: give a duration with its unit, "
                         f"like {name}='20ms' (units: s, ms, us, ns)")  # fmt: skip
    return float(match.group(1)) * _UNITS[match.group(2)]


def _budget_names() -> tuple[str, ...]:
    from flowtrace import semconv as sc

    return (*_COUNTS, "request", *sc.STAGES)


def _check_name(name: str) -> None:
    valid = _budget_names()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown budget {name!r}: {hint}valid: {', '.join(valid)}")


class Profile:
    """What flowtrace recorded for one request (medians when repeated)."""

    def __init__(self, method: str, path: str, samples: list[Sample]) -> None:
        last = samples[-1]
        self.method, self.path = method, path
        self.route: str = last.route
        self.status: int = last.status
        self.duration_ns = median(s.wall_ns for s in samples)
        stages = {stage for s in samples for stage in s.stages}
        self.stages_ns: dict[str, float] = {
            st: median(s.stages.get(st, 0) for s in samples) for st in stages
        }
        self.queries: int = median_low(s.queries for s in samples)
        self.templates: int = median_low(s.templates for s in samples)
        self.cache_calls: int = median_low(s.cache_calls for s in samples)

    def stage_ms(self, stage: str) -> float:
        return self.stages_ns.get(stage, 0) / 1e6

    def describe(self) -> str:
        stages = ", ".join(f"{k} {v / 1e6:.3f} ms" for k, v in sorted(self.stages_ns.items()))
        return (f"{self.method} {self.path} ({self.route}) -> {self.status}: "
                f"{self.duration_ns / 1e6:.3f} ms [{stages}]; queries {self.queries}, "
                f"templates {self.templates}, cache calls {self.cache_calls}")  # fmt: skip

    def assert_budget(self, **limits: Any) -> None:
        """Counts are maxima (``queries=3``); stages and ``request`` are durations with
        their unit (``view="20ms"``). An unknown name or a bare number of time is a
        ``ValueError``: a misspelt budget must not pass."""
        for name, limit in limits.items():
            _check_name(name)
            if name in _COUNTS:
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                    raise ValueError(f"budget {name}={limit!r}: a count, a whole number >= 0")
            else:
                _duration_ns(name, limit)
        failures = []
        for name, limit in limits.items():
            if name in _COUNTS:
                value = getattr(self, name)
                if value > limit:
                    failures.append(f"{name} {value} > {limit}")
                continue
            budget = _duration_ns(name, limit)
            value = self.duration_ns if name == "request" else self.stages_ns.get(name, 0)
            if value > budget:
                failures.append(f"{name} {value / 1e6:.3f} ms > {budget / 1e6:g} ms")
        if failures:
            raise AssertionError("flowtrace budget exceeded: " + "; ".join(failures)
                                 + "\n  " + self.describe())  # fmt: skip


class Baseline:
    """The session's baseline file: read once, written at the end if it changed."""

    def __init__(self, path: Path, mode: str, tolerance: float, slack_ms: float) -> None:
        self.path, self.mode, self.tolerance, self.slack_ms = path, mode, tolerance, slack_ms
        self.records: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.records = dict(data["records"])
            except (ValueError, KeyError, TypeError) as exc:
                raise pytest.UsageError(f"{path}: not a flowtrace baseline file ({exc})") from None

    def check(self, key: str, profile: Profile) -> None:
        current = {name: getattr(profile, name) for name in _COUNTS}
        current["request_ms"] = round(profile.duration_ns / 1e6, 3)
        recorded = self.records.get(key)
        if recorded is None or self.mode == "all":
            if self.mode == "none":
                message = (f"no flowtrace baseline for {key!r} in {self.path} (mode 'none', "
                           "as in CI): run the tests locally and commit the file")  # fmt: skip
                pytest.fail(message, False)
            self.records[key], self.dirty = current, True
            return
        problems = [f"{name} {current[name]} != baseline {recorded.get(name)}"
                    for name in _COUNTS if current[name] != recorded.get(name)]  # fmt: skip
        allowed = float(recorded.get("request_ms", 0)) * self.tolerance + self.slack_ms
        if current["request_ms"] > allowed:
            problems.append(f"request {current['request_ms']} ms > {allowed:.3f} ms allowed "
                            f"(baseline {recorded.get('request_ms')} ms)")  # fmt: skip
        if problems:
            pytest.fail(f"flowtrace baseline {key!r}: " + "; ".join(problems) + "\n  "
                        + profile.describe(), False)  # fmt: skip

    def save(self) -> None:
        if self.dirty:
            data = {"version": 1, "records": dict(sorted(self.records.items()))}
            self.path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


class FlowTraceClient:
    """The ``flowtrace`` fixture: requests in-process through FlowTrace."""

    def __init__(self, app: Any, baseline: Baseline, node_id: str) -> None:
        self._app, self._baseline, self._node_id = app, baseline, node_id

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | str = b"", repeat: int = 1) -> Profile:  # fmt: skip
        from flowtrace.regression.replay import run_request
        from flowtrace.regression.scenario import RequestSpec

        data = body.encode() if isinstance(body, str) else body
        spec = RequestSpec(method.upper(), path, tuple((headers or {}).items()), data, 1)
        with _django_test_connections():
            samples = [run_request(self._app, spec) for _ in range(max(1, repeat))]
        return Profile(spec.method, path, samples)

    def get(self, path: str, **kwargs: Any) -> Profile:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Profile:
        return self.request("POST", path, **kwargs)

    def check_baseline(self, profile: Profile, name: str | None = None) -> None:
        key = f"{self._node_id}::{name or f'{profile.method} {profile.path}'}"
        self._baseline.check(key, profile)


@contextmanager
def _django_test_connections() -> Iterator[None]:
    """As Django's test client: keep the test's DB connection across requests."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowtrace")
    group.addoption("--flowtrace-mode", choices=_MODES, default=None,
                    help="once (record missing), none (CI: missing fails), all")  # fmt: skip
    group.addoption("--flowtrace-baseline", default=None, help="baseline file path")
    parser.addini("flowtrace_baseline", "baseline file", default="flowtrace-baseline.json")
    parser.addini("flowtrace_mode", "baseline mode (default: none if $CI, else once)", default="")
    parser.addini("flowtrace_time_tolerance", "request may take baseline x this", default="2.0")
    parser.addini("flowtrace_time_slack_ms", "... plus this many ms", default="5")


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("--flowtrace-mode") or config.getini("flowtrace_mode")
    if not mode:
        ci = os.environ.get("CI", "").strip().lower()
        mode = "none" if ci not in ("", "0", "false", "no") else "once"
    if mode not in _MODES:
        raise pytest.UsageError(f"flowtrace_mode must be one of {_MODES}, not {mode!r}")
    return str(mode)


@pytest.fixture(scope="session")
def _flowtrace_session(pytestconfig: pytest.Config) -> Any:
    path = pytestconfig.getoption("--flowtrace-baseline") or pytestconfig.getini(
        "flowtrace_baseline"
    )
    baseline = Baseline(
        Path(pytestconfig.rootpath, path),
        _mode(pytestconfig),
        float(pytestconfig.getini("flowtrace_time_tolerance")),
        float(pytestconfig.getini("flowtrace_time_slack_ms")),
    )
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    from flowtrace.regression.replay import ProfiledApp

    app = ProfiledApp(WSGIHandler())
    yield app, baseline
    baseline.save()


@pytest.fixture
def flowtrace(request: pytest.FixtureRequest, _flowtrace_session: Any) -> FlowTraceClient:
    """Profile requests through FlowTrace; see ``flowtrace.pytest_plugin``."""
    app, baseline = _flowtrace_session
    return FlowTraceClient(app, baseline, request.node.nodeid)
