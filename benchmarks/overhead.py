"""flowtrace's overhead, side by side with plain Django and opentelemetry-instrumentation-django.

    python benchmarks/overhead.py            # ~8 minutes on a 2-core machine
    python benchmarks/overhead.py --quick    # fewer requests, for a smoke run
    python benchmarks/overhead.py --asgi     # the same under ASGI (uvicorn on the wire)

(a) In-process: each configuration lives in its own worker process (fresh
ones every round); the configurations take turns in short slices, shuffled,
to cancel drift. Per request: wall median and mean (µs), and process CPU
(µs, all threads, including the export flush at the end of each slice); the
overhead is the median of per-slice differences to plain Django.
(b) Over the wire: one gunicorn (1 sync worker) per configuration on
127.0.0.1, all up at once, driven by wrk in turns of a few seconds;
requests/s as the median per-cycle ratio to plain.
With ``--asgi``: Django's ASGI handler, driven in-process by a minimal ASGI
caller on one event loop, and uvicorn (1 process) on the wire; the anchor is
opentelemetry-instrumentation-asgi's middleware around Django.
All telemetry goes over real OTLP/HTTP to a sink process; the report ends
with spans and metric points received per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
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
ROUTES = ("/hello", "/db", "/stream", "/items/3/", "/page")
ASGI_ROUTES = ("/hello", "/async", "/db", "/stream", "/page")  # /async: an async view
# /page is event-heavy (a CMS-like page: ~46 queries, 26 template renders, 150 cache
# calls) and ~50x slower than /hello: fewer requests give it the same measuring time.
SCALE = {"/page": 0.1}
SLICES = 8  # per route and round: configurations take turns slice by slice
WARM_UP = 200  # requests per route and process before the first measured slice
sys.path.insert(0, str(ROOT))
from benchmarks.apps import ASGI_CONFIGS, CONFIGS  # noqa: E402

if "--asgi" in sys.argv:  # one switch for the parent and its workers
    CONFIGS, ROUTES = ASGI_CONFIGS, ASGI_ROUTES  # type: ignore[assignment]
ANCHOR = CONFIGS[-1]


def asgi_worker(config: str) -> None:
    """As ``worker``, for an ASGI application on one event loop."""
    import asyncio

    from benchmarks.apps import build_asgi

    app, flushes = build_asgi(config)

    async def receive_once() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def one(scope: dict[str, Any]) -> None:
        received = False

        async def receive() -> Any:
            nonlocal received
            if not received:
                received = True
                return await receive_once()
            await asyncio.Event().wait()  # Django's disconnect listener: cancelled at the end

        await app(dict(scope), receive, send)

    async def serve() -> None:
        warmed: set[str] = set()
        for line in sys.stdin:
            route, count = line.split()
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "GET", "scheme": "http", "path": route, "raw_path": route.encode(),
                     "root_path": "", "query_string": b"", "client": ("127.0.0.1", 40000),
                     "server": ("127.0.0.1", 80), "headers": [(b"host", b"127.0.0.1")]}  # fmt: skip
            if route not in warmed:
                warmed.add(route)
                for _ in range(WARM_UP):
                    await one(scope)
            flushes.spans()
            times = []
            cpu0, thread0 = time.process_time_ns(), time.thread_time_ns()
            for _ in range(int(count)):
                t0 = time.perf_counter_ns()
                await one(scope)
                times.append(time.perf_counter_ns() - t0)
            _answer(times, cpu0, thread0, flushes)

    asyncio.run(serve())
    flushes.everything()


def _answer(times: list[int], cpu0: int, thread0: int, flushes: Any) -> None:
    """One slice's figures as a JSON line, in µs per request. request: this thread
    while serving; the rest of the process CPU (export thread, the final flush's drain
    and send) is the export's."""
    count = len(times)
    thread = (time.thread_time_ns() - thread0) / count / 1e3
    flushes.spans()
    cpu = (time.process_time_ns() - cpu0) / count / 1e3
    result = {"median": statistics.median(times) / 1e3, "mean": statistics.fmean(times) / 1e3,
              "cpu": cpu, "request": thread}  # fmt: skip
    print(json.dumps(result), flush=True)


def worker(config: str) -> None:
    """Serve "ROUTE N" commands on stdin; answer with timings as JSON."""
    from wsgiref.util import setup_testing_defaults

    from benchmarks.apps import build

    app, flushes = build(config)

    def one(environ: dict[str, Any]) -> None:
        body = app(dict(environ), lambda *args: None)
        for _ in body:
            pass
        body.close()

    warmed: set[str] = set()
    for line in sys.stdin:
        route, count = line.split()
        environ: dict[str, Any] = {"PATH_INFO": route, "SCRIPT_NAME": ""}
        setup_testing_defaults(environ)
        if route not in warmed:
            warmed.add(route)
            for _ in range(WARM_UP):
                one(environ)
        flushes.spans()
        times = []
        cpu0, thread0 = time.process_time_ns(), time.thread_time_ns()
        for _ in range(int(count)):
            t0 = time.perf_counter_ns()
            one(environ)
            times.append(time.perf_counter_ns() - t0)
        _answer(times, cpu0, thread0, flushes)
    flushes.everything()  # stdin closed: the round is over; metrics go out now


def _events_per_request() -> dict[str, int]:
    """How many calls flowtrace records per request of each route (middleware layers,
    resolution, view, queries, templates, cache calls), from one profiled request."""
    from flowtrace.regression.replay import ProfiledApp, RequestSpec, run_request

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowtrace.demo.settings")
    from django.core.wsgi import get_wsgi_application

    app = ProfiledApp(get_wsgi_application())
    out = {}
    for route in ROUTES:
        run_request(app, RequestSpec("GET", route))  # warm: the cache holds what it will
        app.finished.clear()
        original = app._finish
        seen: list[Any] = []
        app._finish = seen.append  # type: ignore[method-assign]
        try:
            body = app(_environ(route), lambda *a: None)
            for _ in body:
                pass
            body.close()
        finally:
            app._finish = original  # type: ignore[method-assign]
        out[route] = len(seen[0].events) if seen else 0
    return out


def _environ(route: str) -> dict[str, Any]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": route, "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)
    return environ


def _start_sink() -> tuple[subprocess.Popen[str], str]:
    sink = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/otlp_sink.py")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sink.stdout is not None
    return sink, f"http://127.0.0.1:{sink.stdout.readline().strip()}"


def _env(endpoint: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOWTRACE_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, FLOWTRACE_DEMO_DB=db, PYTHONHASHSEED="0",
               PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="flowtrace.demo.settings")  # fmt: skip
    return env


def _spawn(config: str, env: dict[str, str]) -> subprocess.Popen[str]:
    mode = ["--asgi"] if CONFIGS is ASGI_CONFIGS else []
    return subprocess.Popen([sys.executable, __file__, "--worker", config, *mode], env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip


def in_process(env: dict[str, str], rounds: int, count: int) -> dict[tuple[str, str], list[dict]]:
    """Interleave configurations in short slices, in fresh processes every round.

    This VM flips between a fast and a slow state within seconds (docs/ci.md),
    so each route's requests are cut into ``SLICES`` slices and the
    configurations take turns slice by slice (in a new random order each
    time): every configuration sees the same mix of states. Fresh processes
    every round, with ``PYTHONHASHSEED=0``, average out memory-layout luck
    (measured: a pass-through once showed +90 µs when each configuration kept
    one process for the whole run).
    """
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(rounds):
        workers = {c: _spawn(c, env) for c in CONFIGS}
        try:
            for route in ROUTES:
                per_slice = max(int(count * SCALE.get(route, 1)) // SLICES, 1)
                for _ in range(SLICES):
                    order = list(CONFIGS)
                    random.shuffle(order)
                    for config in order:
                        proc = workers[config]
                        assert proc.stdin is not None and proc.stdout is not None
                        proc.stdin.write(f"{route} {per_slice}\n")
                        proc.stdin.flush()
                        results.setdefault((config, route), []).append(
                            json.loads(proc.stdout.readline())
                        )
        finally:
            for proc in workers.values():
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(60)
        print(f"  in-process round {r + 1}/{rounds} done", file=sys.stderr)
    return results


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def over_the_wire(env: dict[str, str], rounds: int, seconds: int) -> dict[str, list[float]]:
    """Each round starts one gunicorn (1 sync worker) per configuration, all at
    once; wrk then drives them in turns of ``seconds``, twice, in shuffled
    order, so that each cycle's figures are measured close together in time
    (and fresh processes every round average out their memory-layout luck)."""
    if shutil.which("wrk") is None:
        print("  wrk not found (apt-get install wrk): skipping (b)", file=sys.stderr)
        return {}
    sys.path.insert(0, str(ROOT))
    from tests.servers import GunicornServer

    rps: dict[str, list[float]] = {}
    for r in range(rounds):
        if CONFIGS is ASGI_CONFIGS:
            servers: dict[str, Any] = {c: _Uvicorn({**env, "BENCH_CONFIG": c}) for c in CONFIGS}
        else:
            servers = {config: GunicornServer("benchmarks.apps:application",
                                              {**env, "BENCH_CONFIG": config}, ())
                       for config in CONFIGS}  # fmt: skip
        try:
            for server in servers.values():
                server.start()
                server.wait_ready()
            urls = {c: f"http://127.0.0.1:{server.port}/hello" for c, server in servers.items()}
            for url in urls.values():
                subprocess.run(["wrk", "-t1", "-c2", "-d1s", url], capture_output=True, check=True)
            for _ in range(2):
                order = list(CONFIGS)
                random.shuffle(order)
                for config in order:
                    command = ["wrk", "-t1", "-c2", f"-d{seconds}s", urls[config]]
                    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                    match = _RPS.search(out)
                    rps.setdefault(config, []).append(float(match.group(1)) if match else 0.0)
        finally:
            for server in servers.values():
                server.stop()
        print(f"  wrk round {r + 1}/{rounds} done", file=sys.stderr)
    return rps


class _Uvicorn:
    """uvicorn (1 process) serving ``benchmarks.apps:asgi_application`` on 127.0.0.1."""

    def __init__(self, env: dict[str, str]) -> None:
        from tests.reliability import free_port

        self.port = free_port()
        self._env = {**env, "BENCH_ASGI": "1"}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning", "--no-access-log", "benchmarks.apps:asgi_application"],
            env=self._env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self) -> None:
        from tests.servers import poll_until_answers

        def answer() -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/hello", timeout=5) as r:
                return r.status

        assert self._proc is not None
        poll_until_answers(answer, self._proc, 60, 0.1)

    def stop(self) -> None:
        from tests.servers import stop_process

        if self._proc is not None:
            stop_process(self._proc, 15)


def _paired_ratios(values: list[float], plain: list[float]) -> list[float]:
    return [v / p for v, p in zip(values, plain, strict=True) if p]


def report(results: dict[tuple[str, str], list[dict]], rps: dict[str, list[float]],
           received: dict[str, Any], served: dict[str, int],
           events: dict[str, int]) -> None:  # fmt: skip
    """Per route and configuration: totals over all slices, and the overhead as
    the median of per-slice differences to plain Django measured right beside it."""
    print("\n(a) in-process, µs per request: mean wall and process CPU over all slices;")
    print("    Δ = median over slices of (config - plain in the same slice), and its ratio to")
    print(
        f"    the anchor's Δ ({ANCHOR}: opentelemetry-instrumentation-"
        f"{'asgi around Django' if ANCHOR == 'otel-asgi' else 'django'})"
    )
    print("    Δreq = the request thread's share of Δcpu, Δexp = the rest (export thread,")
    print("    flush); %plain = Δcpu as a share of plain's cpu; per event = Δcpu / the calls")
    print("    flowtrace records per request (events)")
    print(f"{'route':10} {'config':15} {'median':>8} {'wall':>8} {'cpu':>8} {'Δwall':>8} "
          f"{'Δcpu':>8} {'Δreq':>7} {'Δexp':>7} {'%plain':>7} {'/event':>7} "
          f"{'Δcpu/anchor':>12}")  # fmt: skip
    for route in ROUTES:
        plain = results[("plain", route)]
        plain_cpu = statistics.fmean(x["cpu"] for x in plain)
        deltas = {}
        for config in CONFIGS:
            pairs = list(zip(results[(config, route)], plain, strict=True))
            d_wall = statistics.median(x["mean"] - p["mean"] for x, p in pairs)
            d_cpu = statistics.median(x["cpu"] - p["cpu"] for x, p in pairs)
            d_req = statistics.median(x["request"] - p["request"] for x, p in pairs)
            deltas[config] = (d_wall, d_cpu, d_req)
        anchor = deltas[ANCHOR][1]
        for config in CONFIGS:
            runs = results[(config, route)]
            median = statistics.median(x["median"] for x in runs)
            wall = statistics.fmean(x["mean"] for x in runs)
            cpu = statistics.fmean(x["cpu"] for x in runs)
            d_wall, d_cpu, d_req = deltas[config]
            share = f"{d_cpu / anchor:12.2f}" if anchor > 0 else f"{'-':>12}"
            per_event = d_cpu / events[route] if events.get(route) else 0.0
            print(f"{route:10} {config:15} {median:8.1f} {wall:8.1f} {cpu:8.1f} "
                  f"{d_wall:+8.1f} {d_cpu:+8.1f} {d_req:+7.1f} {d_cpu - d_req:+7.1f} "
                  f"{d_cpu / plain_cpu * 100:+6.2f}% {per_event:7.2f} {share}")  # fmt: skip
    if rps:
        server = "uvicorn (1 process)" if ANCHOR == "otel-asgi" else "gunicorn (1 sync worker)"
        print(f"\n(b) {server} + wrk -t1 -c2 on /hello, requests/s")
        print("    ratio = median over cycles of (config / plain in the same cycle)")
        for config in CONFIGS:
            ratio = statistics.median(_paired_ratios(rps[config], rps["plain"]))
            print(f"{config:15} {statistics.median(rps[config]):9.0f}  ratio {ratio:.2f}")
    print("\ntelemetry received by the OTLP sink (in-process phase)")
    for config in CONFIGS:
        service = f"bench-{config}"
        print(f"{config:15} requests {served.get(config, 0):7d}  "
              f"spans {received['spans'].get(service, 0):8d}  "
              f"metric points {received['points'].get(service, 0):6d}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-wire", action="store_true", help="skip (b)")
    parser.add_argument("--asgi", action="store_true", help="Django under ASGI (uvicorn)")
    args = parser.parse_args()
    if args.worker:
        (asgi_worker if args.asgi else worker)(args.worker)
        return
    rounds, count, wire_rounds, seconds = (2, 500, 1, 2) if args.quick else (5, 2000, 5, 2)
    if args.asgi and not args.quick:  # a Django ASGI request costs ~20x a WSGI one here
        rounds, count = 4, 400
    tmp = tempfile.mkdtemp(prefix="flowtrace-bench-")
    db = str(Path(tmp) / "bench.sqlite3")
    os.environ["FLOWTRACE_DEMO_DB"] = db
    from flowtrace.demo.setup_db import prepare

    prepare()
    sink, endpoint = _start_sink()
    try:
        env = _env(endpoint, db)
        results = in_process(env, rounds, count)
        time.sleep(1)  # let the sink finish decoding the last posts
        with urllib.request.urlopen(endpoint + "/stats") as response:
            received = json.load(response)
        served = {c: rounds * sum(SLICES * max(int(count * SCALE.get(r, 1)) // SLICES, 1)
                                  + WARM_UP for r in ROUTES) for c in CONFIGS}  # fmt: skip
        rps = {} if args.no_wire else over_the_wire(env, wire_rounds, seconds)
        report(results, rps, received, served, _events_per_request())
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
