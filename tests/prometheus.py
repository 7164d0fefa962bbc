"""A real Prometheus (Debian's 2.42) for tests, on 127.0.0.1, stopped by the test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import poll_until_answers, stop_process

ROOT = Path(__file__).resolve().parent.parent


def binary(name: str) -> str:
    """prometheus / promtool from PATH or from `scripts/system-deps.sh`'s cache."""
    found = shutil.which(name) or str(ROOT / ".cache" / "prometheus" / "usr" / "bin" / name)
    if not os.access(found, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (scripts/system-deps.sh installs it)")
        pytest.skip(f"{name} not installed: run `make test` (scripts/system-deps.sh) as root")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def series(self, selector: str) -> list[dict[str, str]]:
        now = time.time()
        return list(self.get("/api/v1/series", **{"match[]": selector, "start": now - 600,
                                                   "end": now}))  # fmt: skip

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, expr: str, minimum: float, timeout: float = 30.0) -> float:
        """Until ``expr`` >= minimum: bounded polling of an external process."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.scalar(expr)
            if value >= minimum:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} = {value} < {minimum} after {timeout}s")
            time.sleep(0.2)


@contextmanager
def running_prometheus(scrape_target: str, labels: dict[str, str]) -> Iterator[Prometheus]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flowtrace-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "flowtrace", "scrape_interval": "1s",
                                "static_configs": [{"targets": [scrape_target],
                                                    "labels": labels}]}],
        }))  # fmt: skip
        proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        prometheus = Prometheus(port)
        try:
            poll_until_answers(lambda: prometheus.get("/api/v1/status/buildinfo"), proc)
            yield prometheus
        finally:
            stop_process(proc)
