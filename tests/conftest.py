"""Shared fixtures: Django test project, real OTLP receiver, gunicorn, strictness."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.testproject.settings")
os.environ["FLOWTRACE_STRICT"] = "1"  # swallowed internal errors fail tests
_DB_DIR = tempfile.mkdtemp(prefix="flowtrace-tests-")
os.environ["FLOWTRACE_DEMO_DB"] = str(Path(_DB_DIR) / "db.sqlite3")

import pytest  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from flowtrace import FlowTrace, safety  # noqa: E402
from flowtrace.capture.django import calls as django_calls  # noqa: E402
from flowtrace.demo.setup_db import prepare  # noqa: E402
from flowtrace.export import health  # noqa: E402
from tests.otlp_receiver import Receiver, running_receiver  # noqa: E402
from tests.servers import GunicornServer, gunicorn, otel_env  # noqa: E402

pytest_plugins = ("pytester",)

prepare()


@pytest.fixture(autouse=True)
def _flowtrace_strict() -> Iterator[None]:
    """Fail a test when flowtrace swallowed an internal error during it."""
    safety.reset()
    health.reset()
    yield
    errors = list(safety.errors)
    safety.reset()
    assert not errors, f"flowtrace swallowed internal errors: {errors!r}"


class InProcess:
    """FlowTrace around a fresh Django handler, exporting to memory (real SDK)."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.handler = self.make_handler()
        self.app = FlowTrace(
            self.handler, tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider, **options,
        )  # fmt: skip

    @staticmethod
    def make_handler() -> Any:
        from django.core.handlers.wsgi import WSGIHandler

        return WSGIHandler()

    def spans(self) -> list[Any]:
        self.app.flush()
        return list(self.exporter.get_finished_spans())

    def shutdown(self) -> None:
        self.app.flush()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.app._pipeline is not None:
            self.app._pipeline.shutdown()


@pytest.fixture
def make_inprocess() -> Iterator[Any]:
    made: list[InProcess] = []

    def make(**options: Any) -> InProcess:
        made.append(InProcess(**options))
        return made[-1]

    yield make
    for item in made:
        item.shutdown()
    django_calls.uninstall()
    assert not django_calls.installed()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture(scope="session")
def server(receiver: Receiver) -> Iterator[GunicornServer]:
    """gunicorn (sync worker) serving the validated, traced test project."""
    env = otel_env(receiver.endpoint, FLOWTRACE_DEMO_DB=os.environ["FLOWTRACE_DEMO_DB"])
    with gunicorn("tests.testproject.wsgi:application", env) as s:
        yield s


@pytest.fixture(scope="session")
def bare_server(receiver: Receiver) -> Iterator[GunicornServer]:
    """gunicorn serving the traced app without the validator (file_wrapper kept)."""
    env = otel_env(receiver.endpoint, FLOWTRACE_DEMO_DB=os.environ["FLOWTRACE_DEMO_DB"])
    with gunicorn("tests.testproject.wsgi:traced", env) as s:
        yield s


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the measured stage accuracy (injected vs recorded) for the notes."""
    from tests.test_stages_gunicorn import ACCURACY

    try:
        from tests.test_dashboard_live import SERIES
    except ImportError:
        SERIES = []
    from tests.reliability import FIGURES
    from tests.test_report import REPORT_FIGURES

    if FIGURES.faults:
        terminalreporter.section("reliability: collector faults (gunicorn, 300 requests)")
        header = (f"{'fault':44} {'p50 ms':>7} {'p99 ms':>7} {'exit s':>6} {'RSS Δ':>6} "
                  f"{'logs':>4} {'dropped':>11} {'received':>8}")  # fmt: skip
        terminalreporter.write_line(header)
        for f in FIGURES.faults:
            dropped = f"{f['dropped']}/{f['of']}" if f["dropped"] >= 0 else "-"
            terminalreporter.write_line(
                f"{f['fault']:44} {f['p50']:7.2f} {f['p99']:7.2f} {f['exit_s']:6.2f} "
                f"{f['rss_delta']:6.2f} {f['failed_logs']:4d} {dropped:>11} {f['received']:8d}"
            )
    for title, lines in (("reliability: lifecycle", FIGURES.lifecycle),
                         ("reliability: concurrency", FIGURES.concurrency),
                         ("reliability: sustained load (wrk)", FIGURES.load),
                         ("reliability: privacy", FIGURES.privacy)):  # fmt: skip
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
    if FIGURES.hostile:
        terminalreporter.section("reliability: hostile input (hypothesis)")
        for name, count in FIGURES.hostile.items():
            terminalreporter.write_line(f"{count:6d} examples  {name}")

    from tests.test_servers import MATRIX

    if MATRIX:
        terminalreporter.section("servers: every request's telemetry after the server's own stop")
        terminalreporter.write_line(
            f"{'server':10} {'mode':18} {'stop':8} {'python':7} {'django':7} {'served':>6} "
            f"{'traces':>6} {'metric':>6} {'http':>5} {'exit s':>6}"
        )
        for row in MATRIX:
            terminalreporter.write_line(
                f"{row['server']:10} {row['mode'] or '-':18} {row['stop']:8} {row['python']:7} "
                f"{row['django']:7} {row['served']:6d} {row['traces']:6d} "
                f"{row['metric_requests']:6d} {row['http_metric']:5d} {row['exit_s']:6.2f}"
            )
    if REPORT_FIGURES:
        terminalreporter.section("flowtrace report: 100 MB span file")
        terminalreporter.write_line(
            f"{REPORT_FIGURES['copies']} copies of the recorded run; peak RSS "
            f"{REPORT_FIGURES['small_rss_kb'] / 1024:.0f} MiB for the small file, "
            f"{REPORT_FIGURES['big_rss_kb'] / 1024:.0f} MiB for 100 MB"
        )
    if SERIES:
        terminalreporter.section("dashboard queries against a live Prometheus")
        for title, ref, count in SERIES:
            terminalreporter.write_line(f"{count:4d} series  {ref}  {title}")
    if not ACCURACY:
        return
    terminalreporter.section("flowtrace stage accuracy (gunicorn, OTLP)")
    terminalreporter.write_line(
        f"{'stage':40} {'injected ms':>12} {'recorded ms':>12} {'error ms':>9}"
    )
    for stage, injected, recorded in ACCURACY:
        terminalreporter.write_line(
            f"{stage:40} {injected:12.2f} {recorded:12.3f} {recorded - injected:9.3f}"
        )
