"""``flowtrace bench --url``: the scenario against a running server.

Only what a client sees: wall time per request and response bytes. Stages
and counts live in the server process (its own flowtrace exports them).
"""

from __future__ import annotations

import http.client
import time
from typing import Any, TextIO
from urllib.parse import urlsplit

from flowtrace.regression import InputError
from flowtrace.regression.bench import check_status, schedule, store
from flowtrace.regression.replay import Sample
from flowtrace.regression.results import new_result
from flowtrace.regression.scenario import RequestSpec, Scenario
from flowtrace.report.progress import Progress


def _fetch(conn: http.client.HTTPConnection, base: str, spec: RequestSpec) -> Sample:
    t0 = time.perf_counter_ns()
    conn.request(spec.method, base + spec.path, body=spec.body or None, headers=dict(spec.headers))
    response = conn.getresponse()
    size = len(response.read())
    wall = time.perf_counter_ns() - t0
    return Sample(f"{spec.method} {spec.path}", response.status, wall, 0, {}, 0, 0, 0, size)


def run_against(url: str, scenario: Scenario, progress_out: TextIO | None) -> dict[str, Any]:
    """Client-side wall time per request against a running server (no stages)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--url {url!r}: expected http://host:port")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=60)
    round_ = schedule(scenario.requests)
    progress = Progress(len(round_) * (scenario.warmup + scenario.rounds), progress_out)
    samples: list[Sample] = []
    try:
        for number in range(scenario.warmup + scenario.rounds):
            for spec in round_:
                sample = _fetch(conn, parts.path.rstrip("/"), spec)
                check_status(spec, sample)
                if number >= scenario.warmup:
                    samples.append(sample)
                progress.step()
    except OSError as exc:
        raise InputError(f"--url {url}: {exc}") from None
    finally:
        conn.close()
    result = new_result(scenario.path, url, scenario.thresholds.as_json())
    store(result, samples)
    for entry in result["routes"].values():
        entry["counts"] = {}  # unknown from outside the process
    return result
