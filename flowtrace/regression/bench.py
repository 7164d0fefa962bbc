"""``flowtrace bench``: replay a scenario, write a result file.

Requests are interleaved within each round (request A, B, C, A, B, C...), so
slow drift of the machine spreads over every route instead of biasing one.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO
from urllib.parse import urlsplit

from flowtrace.regression import InputError, calibration
from flowtrace.regression.replay import ProfiledApp, Sample, load_application, run_request
from flowtrace.regression.results import CPU, REQUEST, new_result
from flowtrace.regression.scenario import RequestSpec, Scenario
from flowtrace.regression.scenario import load as load_scenario


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, out: TextIO | None) -> None:
        self.total, self.done, self.out = max(total, 1), 0, out
        self._shown = -1

    def step(self) -> None:
        self.done += 1
        if self.out is None:
            return
        percent = self.done * 100 // self.total
        if percent != self._shown:
            self._shown = percent
            bar = "#" * (percent * 30 // 100)
            self.out.write(f"\r  [{bar:30}] {percent:3d}%  {self.done}/{self.total}")
            if self.done >= self.total:
                self.out.write("\n")
            self.out.flush()


def _schedule(requests: tuple[RequestSpec, ...]) -> list[RequestSpec]:
    """One round: every request ``repeat`` times, interleaved."""
    out: list[RequestSpec] = []
    for k in range(max(spec.repeat for spec in requests)):
        out.extend(spec for spec in requests if k < spec.repeat)
    return out


def _store(result: dict[str, Any], samples: list[Sample]) -> None:
    by_route: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_route[sample.route].append(sample)
    for route, group in sorted(by_route.items()):
        stages = sorted({stage for s in group for stage in s.stages})
        timings: dict[str, list[int]] = {REQUEST: [s.wall_ns for s in group]}
        if any(s.cpu_ns for s in group):
            timings[CPU] = [s.cpu_ns for s in group]
        for stage in stages:
            timings[stage] = [s.stages.get(stage, 0) for s in group]
        status: dict[str, int] = defaultdict(int)
        for s in group:
            status[str(s.status)] += 1
        result["routes"][route] = {
            "status": dict(status),
            "timings_ns": timings,
            "counts": {
                "queries": [s.queries for s in group],
                "templates": [s.templates for s in group],
                "cache_calls": [s.cache_calls for s in group],
            },
            "bytes": [s.bytes for s in group],
        }


def run_in_process(scenario: Scenario, step: Callable[[], None]) -> dict[str, Any]:
    """Measure in this process; ``step`` is called after every request."""
    app = ProfiledApp(load_application(scenario))
    calibrate = calibration.workload()
    round_ = _schedule(scenario.requests)
    samples: list[Sample] = []
    timings: list[int] = []
    every = max(1, len(round_) // 10)
    for number in range(scenario.warmup + scenario.rounds):
        gc.collect()  # start every round from the same heap state
        for i, spec in enumerate(round_):
            sample = run_request(app, spec)
            if number >= scenario.warmup:
                samples.append(sample)
                if i % every == 0:
                    timings.append(calibrate())
            step()
    result = new_result(scenario.path, "in-process", scenario.thresholds.as_json())
    result["calibration_ns"] = timings
    _store(result, samples)
    return result


def requests_per_run(scenario: Scenario) -> int:
    return len(_schedule(scenario.requests)) * (scenario.warmup + scenario.rounds)


def run_processes(
    scenario: Scenario, processes: int, progress_out: TextIO | None
) -> dict[str, Any]:
    """Split the rounds over fresh processes, one after another, and merge them.

    Each process has its own memory layout and warm-up, an effect of several
    percent that a single process would bake into the whole result; several
    processes average it out (as pyperf does). ``PYTHONHASHSEED`` is fixed (0,
    unless set) so dict layouts do not differ between baseline and current.
    """
    processes = max(1, min(processes, scenario.rounds // 2))
    shares = [scenario.rounds // processes + (i < scenario.rounds % processes)
              for i in range(processes)]  # fmt: skip
    total = sum(requests_per_run(replace(scenario, rounds=n)) for n in shares)
    progress = Progress(total, progress_out)
    merged: dict[str, Any] | None = None
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    with tempfile.TemporaryDirectory(prefix="flowtrace-bench-") as tmp:
        for number, rounds in enumerate(shares):
            out = os.path.join(tmp, f"part{number}.json")
            cmd = [sys.executable, "-m", "flowtrace.regression.bench", scenario.path,
                   str(rounds), out]  # fmt: skip
            with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
                assert proc.stdout is not None and proc.stderr is not None
                for _ in proc.stdout:  # one line per request
                    progress.step()
                errors = proc.stderr.read()
            if proc.returncode != 0:
                lines = [line for line in errors.splitlines() if line.strip()]
                raise InputError(lines[-1] if lines else f"exit status {proc.returncode}")
            with open(out, encoding="utf-8") as handle:
                part = json.load(handle)
            merged = part if merged is None else merge(merged, part)
    assert merged is not None
    merged["processes"] = processes
    return merged


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the samples of two runs of the same scenario."""
    into["calibration_ns"] += part["calibration_ns"]
    for route, entry in part["routes"].items():
        target = into["routes"].setdefault(route, entry)
        if target is entry:
            continue
        count = len(target["timings_ns"][REQUEST])
        width = len(entry["timings_ns"][REQUEST])
        for group in ("timings_ns", "counts"):
            for name in set(target[group]) | set(entry[group]):
                old = target[group].get(name, [0] * count)
                target[group][name] = old + entry[group].get(name, [0] * width)
        target["bytes"] += entry["bytes"]
        for status, n in entry["status"].items():
            target["status"][status] = target["status"].get(status, 0) + n
    return into


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
    round_ = _schedule(scenario.requests)
    progress = Progress(len(round_) * (scenario.warmup + scenario.rounds), progress_out)
    samples: list[Sample] = []
    try:
        for number in range(scenario.warmup + scenario.rounds):
            for spec in round_:
                sample = _fetch(conn, parts.path.rstrip("/"), spec)
                if number >= scenario.warmup:
                    samples.append(sample)
                progress.step()
    except OSError as exc:
        raise InputError(f"--url {url}: {exc}") from None
    finally:
        conn.close()
    result = new_result(scenario.path, url, scenario.thresholds.as_json())
    _store(result, samples)
    for entry in result["routes"].values():
        entry["counts"] = {}  # unknown from outside the process
    return result


def progress_stream() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None


def _child(argv: list[str]) -> int:
    """One measurement process: ``python -m flowtrace.regression.bench SCENARIO ROUNDS OUT``."""
    path, rounds, out = argv
    try:
        spec = replace(load_scenario(path), rounds=int(rounds))
        result = run_in_process(spec, lambda: print(flush=True))
    except InputError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
