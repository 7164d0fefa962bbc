"""Is a gunicorn worker CPU-bound under wrk? Worker CPU µs per request, per configuration.

    python benchmarks/worker_cpu.py          # ~1 minute; needs wrk

Explains ``overhead.py``'s throughput column: when the worker is ~100 % busy in
every configuration, requests/s is simply 1 / (worker CPU per request), and a
throughput ratio follows from the CPU flowtrace adds to a whole gunicorn
request (HTTP parsing, a new connection per request), not from waiting.
CPU is read from ``/proc/<worker pid>/stat`` around each wrk run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps import CONFIGS  # noqa: E402
from benchmarks.overhead import _env, _start_sink  # noqa: E402

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")


def _worker_pid(master: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return int(children.stdout.split()[0])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    from flowtrace.demo.setup_db import prepare
    from tests.servers import GunicornServer

    db = str(Path(tempfile.mkdtemp(prefix="flowtrace-bench-")) / "bench.sqlite3")
    os.environ["FLOWTRACE_DEMO_DB"] = db
    prepare()
    sink, endpoint = _start_sink()
    servers = {c: GunicornServer("benchmarks.apps:application",
                                 {**_env(endpoint, db), "BENCH_CONFIG": c}, ())
               for c in CONFIGS}  # fmt: skip
    try:
        for server in servers.values():
            server.start()
            server.wait_ready()
        print(f"{'config':15} {'req/s':>7} {'worker CPU µs/req':>18} {'worker busy':>12}")
        for _ in range(3):
            for config, server in servers.items():
                assert server._proc is not None
                url = f"http://127.0.0.1:{server.port}/hello"
                subprocess.run(["wrk", "-t1", "-c2", "-d1s", url], capture_output=True, check=True)
                pid = _worker_pid(server._proc.pid)
                cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
                out = subprocess.run(["wrk", "-t1", "-c2", "-d3s", url], capture_output=True,
                                     text=True, check=True).stdout  # fmt: skip
                cpu, wall = _cpu_seconds(pid) - cpu0, time.monotonic() - wall0
                rps, total = _RPS.search(out), _TOTAL.search(out)
                assert rps and total
                per_request = cpu / int(total.group(1)) * 1e6
                print(f"{config:15} {float(rps.group(1)):7.0f} {per_request:18.0f} "
                      f"{cpu / wall * 100:11.0f}%")  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
