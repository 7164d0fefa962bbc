"""``flowtrace demo``: the demo app under gunicorn, a request mix, a summary.

No collector or Docker needed: spans go to a local OTLP-JSON file (which the
Collector's ``otlpjsonfile`` receiver could also read), summarised at the end
and written as a self-contained HTML report.

What is measured is a warm server, as production mostly is: gunicorn loads the
app before forking (``--preload``), and every worker first serves a few rounds
of every route *unsampled* (a ``traceparent`` with the sampled flag off, which
the default parent-based sampler follows), so first-request costs (URL
resolver, templates, the database connection) do not end up in the report.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_ROUTES = ["/hello", "/db", "/stream", "/items/{n}/", "/deferred", "/cached", "/download"]
_ONCE = ["/boom", "/no/such/page"]
_LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")
_WORKERS = 2
_WARM_UP_ROUNDS = 5  # per client thread, one client thread per worker
# sampled flag 00: not traced (parent-based sampling), yet served like any request
_UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def _start_gunicorn(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", str(_WORKERS),
           "--preload", "--log-level", "info", "flowtrace.demo.wsgi:application"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        match = _LISTENING.search(line)
        if match:
            return proc, int(match.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("gunicorn did not start")


def _get(port: int, path: str, traced: bool = True) -> int:
    # As nginx would: X-Request-Start marks when the front proxy got the request.
    headers = {"X-Request-Start": f"t={time.time():.6f}"}
    if not traced:
        headers["traceparent"] = _UNSAMPLED
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status
        except ConnectionRefusedError:
            time.sleep(0.1)  # the worker is still importing the app
    raise RuntimeError(f"no answer for {path}")


def _warm_up(port: int) -> int:
    """Untraced rounds of every route from one client per worker at once, so that
    each worker, not only the first to accept, has served them before measuring."""
    paths = [route.format(n=n % 20 + 1) for n in range(_WARM_UP_ROUNDS) for route in _ROUTES]

    def client() -> None:
        for path in paths:
            _get(port, path, traced=False)

    threads = [threading.Thread(target=client) for _ in range(_WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(paths) * len(threads)


def run_demo(output: str, per_route: int) -> int:
    from flowtrace import report
    from flowtrace.demo.setup_db import prepare
    from flowtrace.report import html, terminal

    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spans = out / "spans.otlp.jsonl"
    spans.unlink(missing_ok=True)
    env = {**os.environ,
           "FLOWTRACE_DEMO_DB": str(out / "demo.sqlite3"),
           "FLOWTRACE_OUTPUT_FILE": str(spans),
           "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "flowtrace-demo"),
           "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip
    os.environ["FLOWTRACE_DEMO_DB"] = env["FLOWTRACE_DEMO_DB"]
    prepare()
    proc, port = _start_gunicorn(env)
    try:
        print(f"demo app (gunicorn, {_WORKERS} workers) on http://127.0.0.1:{port}")
        warm = _warm_up(port)
        print(f"warmed up with {warm} untraced requests")
        for i in range(per_route):
            for route in _ROUTES:
                _get(port, route.format(n=i % 20 + 1))
        for route in _ONCE:
            _get(port, route)
        print(f"sent {per_route * len(_ROUTES) + len(_ONCE)} traced requests")
    finally:
        proc.send_signal(signal.SIGTERM)  # workers flush their spans on exit
        proc.wait(30)
    inputs = report.load([str(spans)], progress=False)
    terminal.render(inputs, sys.stdout)
    page = out / "report.html"
    page.write_text(html.render(inputs, "flowtrace demo"), encoding="utf-8")
    print(f"\nspans (OTLP-JSON): {spans}")
    print(f"HTML report (open it in a browser): {page}")
    return 0
