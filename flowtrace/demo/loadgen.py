"""A small, polite load generator for the compose demo: a mix of demo routes.

python -m flowtrace.demo.loadgen --url http://127.0.0.1:8080 --rps 15 [--seconds 60]
"""

from __future__ import annotations

import argparse
import random
import time
import urllib.error
import urllib.request

ROUTES = [("/hello", 30), ("/db", 20), ("/stream", 10), ("/items/{n}/", 20), ("/deferred", 8),
          ("/cached", 8), ("/download", 2), ("/boom", 1), ("/no/such/page", 1)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=0, help="0: run until stopped")
    args = parser.parse_args()
    paths, weights = zip(*ROUTES, strict=True)
    deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
    while time.monotonic() < deadline:
        path = random.choices(paths, weights)[0].format(n=random.randint(1, 25))
        try:
            with urllib.request.urlopen(args.url + path, timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError):
            time.sleep(1)  # the app is starting, or failed on purpose (/boom, 404)
        time.sleep(random.expovariate(args.rps))


if __name__ == "__main__":
    main()
