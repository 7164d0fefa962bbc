"""Sustained load on one gunicorn worker (wrk): no errors, telemetry delivered or
counted, memory flat; with a healthy and with an unreachable collector."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import pytest

from tests.otlp_receiver import running_receiver
from tests.reliability import FIGURES, free_port, log_text, rss_mib, worker_pids
from tests.servers import GunicornServer, otel_env

SECONDS = 15
_REQUESTS = re.compile(r"(\d+) requests in")
_LOST = re.compile(r"telemetry of (\d+) of (\d+) requests was dropped")


def _wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        assert not os.environ.get("CI"), "wrk must be installed in CI (scripts/system-deps.sh)"
        pytest.skip("wrk is not installed (scripts/system-deps.sh installs it as root)")
    return path


def _load(server: GunicornServer) -> tuple[str, float, float]:
    """(wrk's report, worker RSS after the first seconds, RSS at the end) in MiB."""
    (pid,) = worker_pids(server)
    early: list[float] = []
    started = threading.Event()

    def sample() -> None:
        started.wait(10)
        if not stop.wait(4):  # four seconds in: queues and caches have filled
            early.append(rss_mib(pid))

    stop = threading.Event()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started.set()
    done = subprocess.run([_wrk(), "-t1", "-c2", f"-d{SECONDS}s",
                           f"http://127.0.0.1:{server.port}/hello"],
                          capture_output=True, text=True, timeout=SECONDS + 60)  # fmt: skip
    late = rss_mib(pid)
    stop.set()
    sampler.join()
    assert done.returncode == 0, done.stderr
    return done.stdout, early[0], late


@pytest.mark.parametrize("collector", ["healthy", "unreachable"])
def test_sustained_load_is_error_free_and_memory_flat(collector: str) -> None:
    with running_receiver() as receiver:
        receiver.count_only = True
        endpoint = (
            receiver.endpoint if collector == "healthy" else f"http://127.0.0.1:{free_port()}"
        )
        server = GunicornServer("tests.testproject.wsgi:traced", otel_env(endpoint))
        server.start()
        try:
            server.wait_ready()
            report, rss_early, rss_late = _load(server)
        finally:
            server.stop()
        served = int(_REQUESTS.search(report).group(1))  # type: ignore[union-attr]
        lost = _LOST.search(log_text(server))
        dropped = int(lost.group(1)) if lost else 0
        if collector == "healthy":
            receiver.wait_for(lambda: receiver.root_count + dropped >= served, timeout=30)
    assert "Non-2xx" not in report and "Socket errors" not in report, report
    assert abs(rss_late - rss_early) <= 5.0, (rss_early, rss_late)
    if collector == "healthy":
        assert receiver.root_count + dropped >= served  # every request: delivered or counted
    else:
        assert dropped > 0
    FIGURES.load.append(
        f"{collector} collector: {served} requests in {SECONDS} s ({served / SECONDS:.0f}/s), "
        f"0 errors, {receiver.root_count} traces ({receiver.span_count} spans) received, "
        f"{dropped} requests' telemetry dropped and counted, worker RSS "
        f"{rss_early:.1f} -> {rss_late:.1f} MiB"
    )
