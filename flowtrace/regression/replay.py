"""Replay requests through FlowTrace in-process and turn each into a Sample.

The profiled application is the same ``FlowTrace`` that runs in production,
with export replaced by a list: each finished Timeline is kept, and its
exclusive stage times, query/template/cache counts and bytes are read from
the same tree the exporter builds. Nothing leaves the process.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import thread_time_ns
from typing import Any

from opentelemetry.trace import NoOpTracerProvider

from flowtrace import semconv as sc
from flowtrace.build.tree import build
from flowtrace.capture.request_info import method_of
from flowtrace.capture.timeline import Timeline
from flowtrace.export.recorder import route_of, status_code_of
from flowtrace.regression import InputError
from flowtrace.regression.scenario import RequestSpec, Scenario
from flowtrace.wsgi import FlowTrace, WSGIApp


@dataclass
class Sample:
    """One replayed request: what flowtrace recorded, in nanoseconds and counts."""

    route: str  # "GET /items/<int:pk>/"
    status: int
    wall_ns: int
    cpu_ns: int
    stages: dict[str, int]
    queries: int
    templates: int
    cache_calls: int
    bytes: int


class ProfiledApp(FlowTrace):
    """FlowTrace whose finished Timelines are kept for the caller, not exported."""

    _capture_only = True

    def __init__(self, application: WSGIApp) -> None:
        super().__init__(application, tracer_provider=NoOpTracerProvider(), metrics=False)
        if not self._active:
            raise InputError("flowtrace is disabled (FLOWTRACE_ENABLED=0?): nothing to measure")
        self.finished: list[Timeline] = []

    def _finish(self, tl: Timeline) -> None:
        self.finished.append(tl)

    def sample_of(self, tl: Timeline, cpu_ns: int) -> Sample:
        tree = build(tl, self.config, None)
        method, _ = method_of(tl.request)
        status = status_code_of(tl.status) or (500 if tl.exc is not None else 0)
        return Sample(
            route=f"{method} {route_of(tl, tree.resolved)}",
            status=status,
            wall_ns=tree.root.duration,
            cpu_ns=cpu_ns,
            stages=tree.stage_totals(),
            queries=tree.count(sc.DB),
            templates=tree.count(sc.TEMPLATE),
            cache_calls=tree.count(sc.CACHE),
            bytes=tl.bytes_sent,
        )


def environ_for(spec: RequestSpec) -> dict[str, Any]:
    path, _, query = spec.path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": spec.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(spec.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(spec.body)),
    }
    for name, value in spec.headers:
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return environ


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return _discard


def _discard(data: bytes) -> None:
    return None


def run_request(app: ProfiledApp, spec: RequestSpec) -> Sample:
    """One request, body consumed and closed, as a WSGI server would."""
    cpu0 = thread_time_ns()
    try:
        body = app(environ_for(spec), _start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    except Exception:  # the app's 500 is a measurement like any other
        pass
    cpu = thread_time_ns() - cpu0
    return app.sample_of(app.finished.pop(), cpu)


def import_object(dotted: str, where: str) -> Any:
    """``package.module:attribute`` (or ``package.module.attribute``)."""
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputError(f"{where}: cannot import {dotted!r}: {exc}") from None


def _cwd_importable() -> None:
    """Like ``python -m``: the project in the current directory is importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _django_setup(scenario: Scenario) -> None:
    import django

    try:
        django.setup()
    except Exception as exc:
        settings = os.environ.get("DJANGO_SETTINGS_MODULE")
        raise InputError(f"{scenario.path}: django.setup() failed for settings {settings!r}: "
                         f"{type(exc).__name__}: {exc}") from None  # fmt: skip


def _test_databases(scenario: Scenario) -> Callable[[], None]:
    """Fresh test databases, as Django's test runner makes them (created, migrated),
    named per process so that paired workers never share one; returns the teardown."""
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    for alias in connections:
        settings = connections[alias].settings_dict
        test = settings.setdefault("TEST", {})
        in_memory = "sqlite3" in settings["ENGINE"] and not test.get("NAME")
        if not in_memory:
            base = test.get("NAME") or f"test_{settings['NAME']}"
            test["NAME"] = f"{base}_flowtrace{os.getpid()}"
    try:
        old = setup_databases(verbosity=0, interactive=False)
    except Exception as exc:
        raise InputError(f"{scenario.path}: scenario.test_database: could not create the test "
                         f"databases: {type(exc).__name__}: {exc}") from None  # fmt: skip

    def teardown() -> None:
        teardown_databases(old, verbosity=0)

    return teardown


def load_application(scenario: Scenario) -> tuple[WSGIApp, Callable[[], None]]:
    """The project's WSGI app (without any FlowTrace wrapper) and the teardown of what
    was set up for it. Order: settings, ``django.setup()``, test databases (with
    ``test_database``), the ``setup`` hook, then the application."""
    _cwd_importable()
    if scenario.django_settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = scenario.django_settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE") and not scenario.application:
        raise InputError(f"{scenario.path}: set scenario.django_settings or DJANGO_SETTINGS_MODULE")
    teardown: Callable[[], None] = _nothing
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        _django_setup(scenario)
        if scenario.test_database:
            teardown = _test_databases(scenario)
    elif scenario.test_database:
        raise InputError(f"{scenario.path}: scenario.test_database needs Django settings "
                         "(scenario.django_settings or DJANGO_SETTINGS_MODULE)")  # fmt: skip
    try:
        if scenario.setup:
            hook = import_object(scenario.setup, f"{scenario.path}: scenario.setup")
            try:
                hook()
            except Exception as exc:
                raise InputError(f"{scenario.path}: scenario.setup {scenario.setup!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from None  # fmt: skip
        if scenario.application:
            app = import_object(scenario.application, f"{scenario.path}: scenario.application")
        else:
            from django.core.wsgi import get_wsgi_application

            app = get_wsgi_application()
    except BaseException:
        teardown()
        raise
    while isinstance(app, FlowTrace):
        app = app.application
    return app, teardown


def _nothing() -> None:
    return None
