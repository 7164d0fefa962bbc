"""Real WSGI servers for tests, on 127.0.0.1, always stopped by the test.

``GunicornServer`` runs ``python -m gunicorn`` in a subprocess, binds port 0
and reads the chosen port from gunicorn's own log line, so tests never race
for ports.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")


def poll_until_answers(
    probe: Callable[[], object],
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> None:
    """Call ``probe`` until it stops raising OSError: a started server is listening.

    Bounded by ``timeout``, and gives up at once if ``proc`` has exited. (Polling is
    the only signal a separate server process gives that it accepts connections.)
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise
            time.sleep(interval)


def stop_process(
    proc: subprocess.Popen[bytes],
    timeout: float = 15.0,
    after_exit: Callable[[], object] | None = None,
) -> int | None:
    """SIGTERM, a bounded wait, SIGKILL if needed; then close the process's pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if after_exit is not None:
        after_exit()  # e.g. join a thread still reading the pipe
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return proc.returncode


class GunicornServer:
    def __init__(self, app: str, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.app = app
        self.env = env
        self.args = args
        self.port = 0
        self.log = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0",
               "--workers", "1", "--log-level", "info", "--graceful-timeout", "5",
               *self.args, self.app]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log.decode(errors='replace')}")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log += line
            match = _LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
            if b"Booting worker" in line and self.port:
                self._ready.set()
        self._ready.set()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self._proc is None:
            return None
        reader = self._reader
        return stop_process(self._proc, timeout, reader.join if reader is not None else None)

    def request(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:  # fmt: skip
        """One request over a fresh connection; (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the worker answers (its app import can take a moment)."""
        poll_until_answers(lambda: self.request("/hello"), self._proc, timeout)


@contextmanager
def gunicorn(app: str, env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[GunicornServer]:
    server = GunicornServer(app, env, args)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def otel_env(endpoint: str, **extra: Any) -> dict[str, str]:
    """Standard OTEL_* variables pointing at a test receiver, fast export."""
    env = {
        "OTEL_SERVICE_NAME": "flowtrace-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "FLOWTRACE_EXPORT_INTERVAL": "0.02",
        "FLOWTRACE_STRICT": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env
