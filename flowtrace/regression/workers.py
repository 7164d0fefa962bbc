"""Measurement in fresh worker processes, alone or paired with a baseline.

Each process has its own memory layout and warm-up, an effect of several
percent that a single process would bake into the whole result; the rounds
are therefore split over several processes and merged (as pyperf does).
``PYTHONHASHSEED`` is fixed (0, unless set) so that dict layouts match.

Paired mode runs a baseline worker (another checkout and/or environment)
next to the current one and alternates their rounds (A B B A A B...), each
round a fraction of a second. Shared CI machines change speed within
seconds, and not by the same factor for every kind of code; only sampling
both sides at the same moments cancels that. This is what CI should use.

Protocol, one line each way: the parent sends ``warmup`` / ``timed`` (run one
round) and ``save PATH``; the worker answers ``ok`` or ``error MESSAGE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from flowtrace.regression import InputError
from flowtrace.regression.bench import Runner, merge, schedule
from flowtrace.regression.scenario import Scenario
from flowtrace.regression.scenario import load as load_scenario
from flowtrace.report.progress import Progress


@dataclass(frozen=True)
class Side:
    """Where and how one side's worker runs."""

    scenario: Scenario
    cwd: str | None = None
    env: Mapping[str, str] | None = None


class Worker:
    def __init__(self, side: Side) -> None:
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        env.update(side.env or {})
        cmd = [sys.executable, "-m", "flowtrace.regression.workers", side.scenario.path]
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(
            cmd, cwd=side.cwd, env=env, stdin=pipe, stdout=pipe, stderr=pipe, text=True
        )
        self._command("")  # wait until the application is loaded

    def _command(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            errors = [x for x in self.stop().splitlines() if x.strip()]
            message = answer[6:] if answer.startswith("error ") else (errors or ["worker died"])[-1]
            raise InputError(message)

    def round(self, timed: bool) -> None:
        self._command("timed" if timed else "warmup")

    def save(self, path: str) -> dict[str, Any]:
        self._command(f"save {path}")
        self.stop()
        with open(path, encoding="utf-8") as handle:
            result: dict[str, Any] = json.load(handle)
        return result

    def stop(self) -> str:
        """End the worker (idempotent); returns what it wrote to stderr."""
        proc = self.proc
        if proc.returncode is not None:
            return ""
        try:  # closes stdin: the worker's loop ends at EOF
            _, errors = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, errors = proc.communicate(timeout=5)
        return errors or ""


def _shares(rounds: int, processes: int) -> list[int]:
    processes = max(1, min(processes, rounds // 2))
    return [rounds // processes + (i < rounds % processes) for i in range(processes)]


def run(sides: list[Side], processes: int, progress_out: TextIO | None) -> list[dict[str, Any]]:
    """Measure every side; with two sides, their rounds alternate (A B B A...)."""
    scenario = sides[0].scenario
    shares = _shares(scenario.rounds, processes)
    per_round = len(schedule(scenario.requests))
    total = per_round * len(sides) * (scenario.warmup * len(shares) + scenario.rounds)
    progress = Progress(total, progress_out)
    merged: list[dict[str, Any] | None] = [None] * len(sides)
    with tempfile.TemporaryDirectory(prefix="flowtrace-bench-") as tmp:
        for number, rounds in enumerate(shares):
            workers: list[Worker] = []
            try:
                for side in sides:
                    workers.append(Worker(side))
                for i in range(scenario.warmup + rounds):
                    order = workers if i % 2 == 0 else workers[::-1]
                    for worker in order:
                        worker.round(timed=i >= scenario.warmup)
                        for _ in range(per_round):
                            progress.step()
                for index, worker in enumerate(workers):
                    part = worker.save(os.path.join(tmp, f"side{index}-part{number}.json"))
                    previous = merged[index]
                    merged[index] = part if previous is None else merge(previous, part)
            finally:
                for worker in workers:
                    worker.stop()
    out = [m for m in merged if m is not None]
    pair = uuid.uuid4().hex if len(sides) > 1 else None
    for result in out:
        result["processes"] = len(shares)
        if pair:
            result["pair_id"] = pair  # compare: measured together, nothing to normalise
    return out


def _serve(path: str) -> int:
    """The worker's loop: load the application, then obey the parent."""
    try:
        runner = Runner(load_scenario(path))
    except InputError as exc:
        print(f"error {exc}", flush=True)
        return 2
    print("ok", flush=True)
    try:
        return _obey(runner)
    finally:
        runner.close()


def _obey(runner: Runner) -> int:
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command in ("warmup", "timed"):
            try:
                runner.round(timed=command == "timed")
            except InputError as exc:
                print(f"error {exc}", flush=True)
                return 2
        elif command == "save":
            with open(argument, "w", encoding="utf-8") as handle:
                json.dump(runner.result(), handle)
        else:
            print(f"error unknown command {command!r}", flush=True)
            return 2
        print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
