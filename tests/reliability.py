"""Helpers of the reliability suite: drive a server, read a worker's memory, collect figures.

Figures land in ``FIGURES`` and are printed by the test session's terminal
summary, from which docs/reliability.md is filled.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from dataclasses import dataclass, field
from statistics import median, quantiles
from typing import Any

from tests.servers import GunicornServer

_WORKER_PID = re.compile(rb"Booting worker with pid: (\d+)")


@dataclass
class Figures:
    faults: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[str] = field(default_factory=list)
    concurrency: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    hostile: dict[str, int] = field(default_factory=dict)
    privacy: list[str] = field(default_factory=list)


FIGURES = Figures()


def free_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drive(server: GunicornServer, count: int, path: str = "/hello") -> list[float]:
    """Sequential keep-alive requests; every one must succeed. Latencies in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    latencies = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status == 200, response.status
    finally:
        conn.close()
    return latencies


def p50_p99(latencies: list[float]) -> tuple[float, float]:
    return median(latencies), quantiles(latencies, n=100)[98]


def worker_pids(server: GunicornServer) -> list[int]:
    return [int(pid) for pid in _WORKER_PID.findall(bytes(server.log))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(pid)


def log_text(server: GunicornServer) -> str:
    return bytes(server.log).decode(errors="replace")
