"""The collector misbehaves; the app must not notice (gunicorn, real sockets, OTLP)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.otlp_receiver import Receiver, running_receiver
from tests.reliability import FIGURES, drive, free_port, log_text, p50_p99, rss_mib, worker_pids
from tests.servers import GunicornServer, otel_env

REQUESTS = 300
FAULTS = ("healthy", "refused", "black-holed", "slow (3 s)", "HTTP 500", "HTTP 429")
_FAILED = re.compile(r"flowtrace: telemetry export to .+? failed")
_LOST = re.compile(r"telemetry of (\d+) of (\d+) requests was dropped")


@contextmanager
def collector(fault: str) -> Iterator[tuple[str, Receiver | None]]:
    if fault == "refused":
        yield f"http://127.0.0.1:{free_port()}", None
        return
    with running_receiver() as receiver:
        receiver.blackhole = fault == "black-holed"
        receiver.delay = 3.0 if fault.startswith("slow") else 0.0
        receiver.status = {"HTTP 500": 500, "HTTP 429": 429}.get(fault, 200)
        yield receiver.endpoint, receiver


def _env(endpoint: str) -> dict[str, str]:
    # Metrics every 0.3 s, flowtrace's export thread every 20 ms: faults are hit often.
    return otel_env(endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="10")


def _run(fault: str) -> dict[str, Any]:
    with collector(fault) as (endpoint, receiver):
        server = GunicornServer("tests.testproject.wsgi:traced", _env(endpoint))
        server.start()
        try:
            server.wait_ready()
            drive(server, 30)  # warm-up
            (pid,) = worker_pids(server)
            rss_before = rss_mib(pid)
            latencies = drive(server, REQUESTS)
            rss_after = rss_mib(pid)
        finally:
            t0 = time.monotonic()
            server.stop()
            exit_s = time.monotonic() - t0
        log = log_text(server)
        lost = _LOST.search(log)
        roots = sum(1 for s in receiver.spans if s.kind == 2) if receiver is not None else 0
    p50, p99 = p50_p99(latencies)
    return {"fault": fault, "p50": p50, "p99": p99, "exit_s": exit_s,
            "rss_delta": rss_after - rss_before, "failed_logs": len(_FAILED.findall(log)),
            "dropped": int(lost.group(1)) if lost else 0,
            "of": int(lost.group(2)) if lost else 0, "received": roots, "log": log}  # fmt: skip


@pytest.fixture(scope="module")
def healthy() -> dict[str, Any]:
    return _run("healthy")


@pytest.mark.parametrize("fault", FAULTS)
def test_requests_never_notice_the_collector(fault: str, healthy: dict[str, Any]) -> None:
    result = healthy if fault == "healthy" else _run(fault)
    FIGURES.faults.append({k: v for k, v in result.items() if k != "log"})
    # latency: the request thread never waits for the collector
    assert result["p50"] < healthy["p50"] * 2 + 1.0, result
    assert result["p99"] < max(healthy["p99"] * 3, healthy["p99"] + 25.0), result
    assert abs(result["rss_delta"]) < 5.0, result  # MiB, over 300 requests
    assert result["exit_s"] < 5.0, result  # SIGTERM to exit, within the 2 s flush budget + Django
    # logged once while failing (a black hole never answers: no failure before exit),
    # plus one summary line at exit: never per request
    assert result["failed_logs"] <= 1, result["log"]
    if fault == "healthy":
        assert result["received"] == REQUESTS + 30 + 1 and result["dropped"] == 0
    elif fault != "slow (3 s)":
        assert result["dropped"] > 0, result["log"]  # dropped, counted, and said once at exit


def test_export_resumes_when_the_collector_comes_back() -> None:
    """Collector up, then down (connection refused), then up again on the same port."""
    receiver, port = Receiver(), free_port()
    server = GunicornServer("tests.testproject.wsgi:traced", _env(f"http://127.0.0.1:{port}"))
    server.start()

    def roots() -> int:
        return sum(s.kind == 2 for s in receiver.spans)

    try:
        with running_receiver(port, receiver):
            server.wait_ready()
            drive(server, 50)
            receiver.wait_for(lambda: roots() >= 51)
        before = roots()
        latencies_down = drive(server, 100)  # the collector is gone: spans are dropped
        with running_receiver(port, receiver):
            deadline = time.monotonic() + 40  # the sender's backoff is at most 30 s
            while time.monotonic() < deadline and roots() == before:
                drive(server, 10)
                receiver.wait_for(lambda: True, timeout=0.2)
            resumed = roots() - before
            server.stop()  # while the collector is up
    finally:
        server.stop()
    log = log_text(server)
    assert resumed > 0, "export did not resume"
    assert len(_FAILED.findall(log)) == 1 and "recovered" in log, log
    p50, p99 = p50_p99(latencies_down)
    FIGURES.faults.append({"fault": "restarting (down, then up)", "p50": p50, "p99": p99,
                           "exit_s": 0.0, "rss_delta": 0.0, "failed_logs": 1,
                           "dropped": -1, "of": -1, "received": resumed})  # fmt: skip


class _Broken(Exception):
    pass


class _BrokenProcessor:
    """A user's span processor that raises on every call."""

    calls = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise _Broken("on_start")

    def on_end(self, span: Any) -> None:
        type(self).calls += 1
        raise _Broken("on_end")

    def shutdown(self) -> None:
        raise _Broken("shutdown")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise _Broken("force_flush")


def test_a_broken_user_span_processor_costs_the_app_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from opentelemetry.sdk.trace import TracerProvider

    from flowtrace import FlowTrace, safety
    from tests.wsgi_client import call

    provider = TracerProvider(shutdown_on_exit=False)  # its shutdown raises, by design
    provider.add_span_processor(_BrokenProcessor())  # type: ignore[arg-type]
    bare = WSGIHandler()
    app = FlowTrace(WSGIHandler(), tracer_provider=provider, metrics=False)
    try:
        with caplog.at_level("WARNING", logger="flowtrace"):
            for path in ("/hello", "/db", "/items/3/", "/stream", "/boom"):
                for _ in range(20):
                    traced, plain = call(app, path), call(bare, path)
                    assert (traced.status, traced.body) == (plain.status, plain.body)
            app.flush()
    finally:
        if app._pipeline is not None:
            app._pipeline.shutdown()
        swallowed = list(safety.errors)
        safety.reset()  # expected: they are the user's processor's, not flowtrace's
    assert _BrokenProcessor.calls > 0 and swallowed
    assert all(isinstance(e, _Broken) for e in swallowed)
    logged = [r for r in caplog.records if r.name == "flowtrace"]
    # once per call site (export, send), plus the summary line: never per request
    assert 1 <= len(logged) <= 3, [r.getMessage() for r in logged]
    FIGURES.faults.append({"fault": "user span processor raising on every call",
                           "p50": float("nan"), "p99": float("nan"), "exit_s": 0.0,
                           "rss_delta": 0.0, "failed_logs": len(logged), "dropped": 0,
                           "of": 100, "received": 0})  # fmt: skip
