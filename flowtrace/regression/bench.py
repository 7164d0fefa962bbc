"""One measurement process: replay a scenario round by round, keep the samples.

Requests are interleaved within each round (A, B, C, A, B, C...), so slow
drift of the machine spreads over every route instead of biasing one. A
calibration workload is timed between requests (``calibration``).
"""

from __future__ import annotations

import gc
import statistics
from collections import defaultdict
from typing import Any

from flowtrace.regression import InputError, calibration
from flowtrace.regression.replay import ProfiledApp, Sample, load_application, run_request
from flowtrace.regression.results import CPU, REQUEST, new_result
from flowtrace.regression.scenario import RequestSpec, Scenario

_CALIBRATIONS_PER_ROUND = 10


def schedule(requests: tuple[RequestSpec, ...]) -> list[RequestSpec]:
    """One round: every request ``repeat`` times, interleaved."""
    out: list[RequestSpec] = []
    for k in range(max(spec.repeat for spec in requests)):
        out.extend(spec for spec in requests if k < spec.repeat)
    return out


def check_status(spec: RequestSpec, sample: Sample) -> None:
    """A request that does not answer as expected (a misspelt path benchmarking 404s)
    stops the bench, naming the request."""
    if not spec.expects(sample.status):
        raise InputError(f"{spec.method} {spec.path} answered {sample.status}, expected "
                         f"{spec.expected()} (set status = {sample.status} in its [[request]] "
                         "if that is what it should answer)")  # fmt: skip


def store(result: dict[str, Any], samples: list[Sample]) -> None:
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


class Runner:
    """The profiled application of one process, measured one round at a time."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        application, self.close = load_application(scenario)
        try:
            self.app = ProfiledApp(application)
        except BaseException:
            self.close()
            raise
        self._calibrate = calibration.workload()
        self._round = schedule(scenario.requests)
        self._every = max(1, len(self._round) // _CALIBRATIONS_PER_ROUND)
        self.samples: list[Sample] = []
        self.calibration_ns: list[int] = []

    @property
    def requests_per_round(self) -> int:
        return len(self._round)

    def round(self, timed: bool) -> None:
        gc.collect()  # start every round from the same heap state
        app, samples = self.app, self.samples
        for i, spec in enumerate(self._round):
            sample = run_request(app, spec)
            check_status(spec, sample)
            if timed:
                samples.append(sample)
                if i % self._every == 0:
                    self.calibration_ns.append(self._calibrate())

    def result(self) -> dict[str, Any]:
        """This process's samples; the process is one *segment* of the result,
        which ``compare`` normalises by its own calibration median."""
        scenario = self.scenario
        result = new_result(scenario.path, "in-process", scenario.thresholds.as_json())
        result["calibration_ns"] = self.calibration_ns
        store(result, self.samples)
        if self.calibration_ns:
            result["segment_calibration_ns"] = [statistics.median(self.calibration_ns)]
            for entry in result["routes"].values():
                entry["segment"] = [0] * len(entry["timings_ns"][REQUEST])
        return result


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the samples of two runs of the same scenario."""
    into["calibration_ns"] += part["calibration_ns"]
    offset = len(into.get("segment_calibration_ns", []))
    into["segment_calibration_ns"] = into.get("segment_calibration_ns", []) + part.get(
        "segment_calibration_ns", []
    )
    for route, entry in part["routes"].items():
        if "segment" in entry:
            entry["segment"] = [index + offset for index in entry["segment"]]
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
        if "segment" in target and "segment" in entry:
            target["segment"] += entry["segment"]
        else:
            target.pop("segment", None)  # cannot normalise a mix
        for status, n in entry["status"].items():
            target["status"][status] = target["status"].get(status, 0) + n
    return into
