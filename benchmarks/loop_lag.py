"""The event-loop lag flowtrace adds under load (issue #16), on a real uvicorn.

    python benchmarks/loop_lag.py            # ~5 minutes; needs wrk

Each configuration (plain Django ASGI; flowtrace at 100 % and 10 %, and with metrics
only, ``OTEL_TRACES_EXPORTER=none``; opentelemetry-instrumentation-asgi) is served by uvicorn (one
process) behind an independent probe: a 5 ms timer on the same event loop that notes
how late it fires, started with the first request. wrk drives ``/async`` and ``/hello``
with 20 connections; then the probe's percentiles are read from ``/__lag``. flowtrace's
export runs on its own thread, so what it adds to the loop is its per-request work on the
loop itself (the ASGI wrapper, the stepping of the middleware chain) and GIL contention
with the export thread. Alternating rounds, fresh servers every round. The garbage
collections seen during the load are printed too: a full collection stops every
thread, the loop's included, and is the largest single delay in every configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
INTERVAL = 0.005
CONFIGS = ("plain", "flowtrace-100", "flowtrace-10", "flowtrace-metrics", "otel-asgi")


class LagMonitor:
    """ASGI middleware: a timer on the serving loop, its lateness served at /__lag."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[float] = []
        self.started = False
        self.collections: list[tuple[int, float]] = []  # (generation, seconds): GC pauses
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self.started:
            self.collections.append((info["generation"], time.perf_counter() - self._gc_start))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__lag":
            body = json.dumps({"lag": self.samples, "gc": self.collections}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if not self.started and scope["type"] == "http":
            self.started = True
            loop = asyncio.get_running_loop()
            loop.call_later(INTERVAL, self._tick, loop, loop.time() + INTERVAL)
        await self.app(scope, receive, send)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        self.samples.append(max(now - due, 0.0))
        loop.call_later(INTERVAL, self._tick, loop, now + INTERVAL)


application: Any = None
if os.environ.get("BENCH_CONFIG"):
    from benchmarks.apps import build_asgi

    application = LagMonitor(build_asgi(os.environ["BENCH_CONFIG"])[0])


def _serve(config: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    from tests.reliability import free_port
    from tests.servers import poll_until_answers

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log", "benchmarks.loop_lag:application"],
        env={**env, "BENCH_CONFIG": config}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    poll_until_answers(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5),
                       proc, 60, 0.1)  # fmt: skip
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = max(parser.parse_args().rounds, 1)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    from benchmarks.overhead import _env, _start_sink
    from flowtrace.demo.setup_db import prepare
    from tests.servers import stop_process

    tmp = tempfile.mkdtemp(prefix="flowtrace-lag-")
    db = str(Path(tmp) / "bench.sqlite3")
    os.environ["FLOWTRACE_DEMO_DB"] = db
    prepare()
    sink, endpoint = _start_sink()
    lags: dict[str, list[float]] = {c: [] for c in CONFIGS}
    rps: dict[str, list[float]] = {c: [] for c in CONFIGS}
    pauses: dict[str, list[tuple[int, float]]] = {c: [] for c in CONFIGS}
    try:
        env = _env(endpoint, db)
        for round_ in range(rounds):
            for config in CONFIGS if round_ % 2 == 0 else CONFIGS[::-1]:
                proc, port = _serve(config, env)
                try:
                    for path in ("/async", "/hello"):
                        command = ["wrk", "-t2", "-c20", "-d8s", f"http://127.0.0.1:{port}{path}"]
                        out = subprocess.run(command, capture_output=True, text=True,
                                             check=True).stdout  # fmt: skip
                        line = next(x for x in out.splitlines() if "Requests/sec" in x)
                        rps[config].append(float(line.split()[1]))
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__lag") as answer:
                        seen = json.load(answer)
                    lags[config] += seen["lag"]
                    pauses[config] += [(g, d) for g, d in seen["gc"]]
                finally:
                    stop_process(proc, 15)
                time.sleep(1)
            print(f"  round {round_ + 1}/{rounds} done", file=sys.stderr)
    finally:
        sink.terminate()
        sink.wait(10)
    print("event-loop lag of a 5 ms timer under wrk -c20 (/async then /hello), ms")
    print(f"{'config':18} {'samples':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'req/s':>8}")
    for config in CONFIGS:
        values = sorted(lags[config])
        q = statistics.quantiles(values, n=100)
        print(
            f"{config:18} {len(values):8d} {q[49] * 1e3:7.2f} {q[89] * 1e3:7.2f} "
            f"{q[98] * 1e3:7.2f} {values[-1] * 1e3:7.2f} {statistics.mean(rps[config]):8.0f}"
        )
    print("garbage collections during the load (they stop every thread, the loop's too), ms")
    print(f"{'config':18} {'gen':>4} {'count':>7} {'total':>9} {'max':>7}")
    for config in CONFIGS:
        for generation in (0, 1, 2):
            took = [d for g, d in pauses[config] if g == generation]
            if took:
                print(f"{config:18} {generation:4d} {len(took):7d} {sum(took) * 1e3:9.1f} "
                      f"{max(took) * 1e3:7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
