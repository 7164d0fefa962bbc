"""Process lifecycle and concurrency under gunicorn: preload + fork, worker restarts,
SIGTERM, gthread and gevent workers. Every request gets exactly one complete trace."""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from flowtrace import semconv as sc
from tests.otlp_receiver import Receiver, Span, running_receiver
from tests.reliability import FIGURES, log_text
from tests.servers import GunicornServer, otel_env

_MARKER = re.compile(r"^/t/marker/([\w-]+)$")


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _traces_by_marker(receiver: Receiver) -> dict[str, list[list[Span]]]:
    """marker -> the traces whose root served /t/marker/<marker>."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in receiver.spans:
        by_trace[span.trace_id].append(span)
    out: dict[str, list[list[Span]]] = defaultdict(list)
    for spans in by_trace.values():
        for root in (s for s in spans if s.kind == 2):
            match = _MARKER.match(str(root.attributes.get(sc.URL_PATH, "")))
            if match:
                out[match.group(1)].append(spans)
    return out


def _check_trace(marker: str, spans: list[Span]) -> None:
    """One root, the announced number of spans, every parent inside the trace,
    and the request's own marker in its query span (no other request's)."""
    roots = [s for s in spans if s.kind == 2]
    assert len(roots) == 1
    assert len(spans) == roots[0].attributes[sc.ATTR_SPAN_COUNT]
    ids = {s.span_id for s in spans}
    assert all(s.parent_id in ids for s in spans if s is not roots[0])
    queries = [str(s.attributes.get(sc.DB_QUERY_TEXT, "")) for s in spans if s.stage == "db"]
    assert queries == [f"SELECT '{marker}'"], queries


def test_preload_fork_worker_restarts_and_sigterm_export_everything() -> None:
    with running_receiver() as receiver:
        args = ("--preload", "--workers", "3", "--max-requests", "20")
        server = GunicornServer("tests.testproject.wsgi:traced", otel_env(receiver.endpoint), args)
        server.start()
        try:
            server.wait_ready()
            statuses = [_get(server.port, f"/t/marker/lc-{i}") for i in range(150)]
        finally:
            t0 = time.monotonic()
            server.stop()
            exit_s = time.monotonic() - t0
        markers = receiver.wait_for(lambda: (m := _traces_by_marker(receiver)) and len(m) >= 150
                                    and m, timeout=15)  # fmt: skip
    log = log_text(server)
    restarts = log.count("Autorestarting worker after current request")
    booted = len(re.findall(r"Booting worker with pid", log))
    assert statuses == [200] * 150
    assert sorted(markers) == sorted(f"lc-{i}" for i in range(150))
    for marker, traces in markers.items():
        assert len(traces) == 1, marker
        _check_trace(marker, traces[0])
    assert restarts >= 4 and booted >= 3 + restarts - 3  # restarted workers exported too
    assert exit_s < 5.0
    FIGURES.lifecycle.append(f"gunicorn --preload -w 3 --max-requests 20: 150 requests, "
                             f"{booted} workers booted ({restarts} restarts), 150/150 traces "
                             f"complete, SIGTERM to exit {exit_s:.2f} s")  # fmt: skip


def _concurrent(worker_args: tuple[str, ...], label: str, requests: int = 400) -> None:
    with running_receiver() as receiver:
        server = GunicornServer("tests.testproject.wsgi:traced", otel_env(receiver.endpoint),
                                worker_args)  # fmt: skip
        server.start()
        try:
            server.wait_ready()
            paths = [f"/t/marker/{label}-{i}" for i in range(requests)]
            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(lambda p: _get(server.port, p), paths))
            markers = receiver.wait_for(
                lambda: (m := _traces_by_marker(receiver)) and len(m) >= requests and m,
                timeout=30,
            )
        finally:
            server.stop()
    assert statuses == [200] * requests
    assert len(markers) == requests
    for marker, traces in markers.items():
        assert len(traces) == 1, marker
        _check_trace(marker, traces[0])
    FIGURES.concurrency.append(f"{' '.join(worker_args)}: {requests} requests from 16 client "
                               f"threads, {requests} complete traces, no marker in another "
                               f"request's trace")  # fmt: skip


def test_gthread_workers_keep_concurrent_requests_apart() -> None:
    _concurrent(("--worker-class", "gthread", "--threads", "8"), "gthread")


def test_gevent_workers_keep_concurrent_requests_apart() -> None:
    if importlib.util.find_spec("gevent") is None:
        assert not os.environ.get("CI"), "gevent is a test dependency"
        pytest.skip("gevent is not installed")
    _concurrent(("--worker-class", "gevent", "--worker-connections", "64"), "gevent")
