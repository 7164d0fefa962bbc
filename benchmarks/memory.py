"""RSS of one gunicorn worker over 200 000 requests, with a live and a dead collector.

    python benchmarks/memory.py [--requests 200000]

flowtrace at 100 % sampling on the demo's ``/hello``, driven by ``wrk`` until the
request count is reached; the worker's RSS is sampled every 10 s. The issue #3
budget: flat within ±5 MiB after warm-up, also when the collector is unreachable.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import _env, _start_sink  # noqa: E402
from tests.reliability import rss_mib, worker_pids  # noqa: E402
from tests.servers import GunicornServer  # noqa: E402

_REQUESTS = re.compile(r"(\d+) requests in")


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def run(label: str, env: dict[str, str], total: int) -> None:
    server = GunicornServer("benchmarks.apps:application", {**env, "BENCH_CONFIG": "flowtrace-100"})
    server.start()
    try:
        server.wait_ready()
        (pid,) = worker_pids(server)
        url = f"http://127.0.0.1:{server.port}/hello"
        served, samples, t0 = 0, [], time.monotonic()
        while served < total:
            out = subprocess.run(["wrk", "-t1", "-c2", "-d10s", url], capture_output=True,
                                 text=True, check=True).stdout  # fmt: skip
            match = _REQUESTS.search(out)
            served += int(match.group(1)) if match else 0
            samples.append((served, rss_mib(pid)))
            print(f"  {label}: {served:7d} requests, RSS {samples[-1][1]:.1f} MiB", flush=True)
    finally:
        server.stop()
    after_warmup = [rss for _, rss in samples[1:]]
    print(f"{label}: {served} requests in {time.monotonic() - t0:.0f} s; RSS after 10 s "
          f"{samples[0][1]:.1f} MiB, then min {min(after_warmup):.1f} / max "
          f"{max(after_warmup):.1f} MiB, end {samples[-1][1]:.1f} MiB "
          f"(drift {max(after_warmup) - min(after_warmup):.1f} MiB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    sink, endpoint = _start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "demo.sqlite3")
            subprocess.run([sys.executable, "-m", "flowtrace.demo.setup_db"], check=True,
                           env={**_env(endpoint, db)})  # fmt: skip
            run("live collector", _env(endpoint, db), args.requests)
            run("dead collector", _env(_dead_endpoint(), db), args.requests)
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
