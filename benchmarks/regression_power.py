"""Measure how often ``flowtrace compare`` is right, with its default settings.

    python benchmarks/regression_power.py [--runs 20]

Each run benches the power project (``benchmarks/power/``, a ~2 ms view)
four times with ``flowtrace bench`` defaults, then compares:

- A/A: unchanged code against itself; any flagged metric is a false alarm;
- +20 % view: the view's CPU work × 1.2; must flag the view stage;
- +1 query: one more query; must flag the ``queries`` count.

Each run alternates which side is measured first, so machine drift between
the two benches cannot favour either verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "power"
ROUTE = "GET /work/<int:pk>/"
ALTERNATIONS = 3
ALTERNATE = ("--append", "--processes", "1", "--rounds", "7")


def bench(out: Path, db: Path, *extra: str, **env: str) -> None:
    cmd = [sys.executable, "-m", "flowtrace.cli", "bench", "scenario.toml", "-o", str(out), *extra]
    full = {**os.environ, "FLOWTRACE_DEMO_DB": str(db), **env}
    subprocess.run(cmd, cwd=HERE, env=full, check=True, stdout=subprocess.DEVNULL)


def compare(baseline: Path, current: Path, out: Path) -> dict[str, object]:
    cmd = [sys.executable, "-m", "flowtrace.cli", "compare", str(baseline), str(current),
           "--json", str(out)]  # fmt: skip
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    result: dict[str, object] = json.loads(out.read_text())
    return result


def flagged(result: dict[str, object]) -> list[tuple[str, str, str]]:
    rows = result["rows"]
    assert isinstance(rows, list)
    return [(r["route"], r["metric"], r["verdict"]) for r in rows if r["verdict"] != "unchanged"]


def view_change(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    for r in rows:
        if r["route"] == ROUTE and r["metric"] == "view":
            return f"{r['relative']:+.1%}"
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    false_alarms = view_caught = query_caught = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowtrace-power-") as tmp:
        d = Path(tmp)
        db = d / "power.sqlite3"
        for run in range(args.runs):
            sides = {"base": {}, "again": {}, "slow": {"FLOWTRACE_POWER_WORK": "1.2"},
                     "query": {"FLOWTRACE_POWER_EXTRA_QUERIES": "1"}}  # fmt: skip
            order = list(sides) if run % 2 == 0 else list(reversed(sides))
            t0 = time.monotonic()
            for name in order:
                (d / f"{name}.json").unlink(missing_ok=True)
            for _ in range(ALTERNATIONS):  # as docs/ci.md recommends: A B A B A B
                for name in order:
                    bench(d / f"{name}.json", db, *ALTERNATE, **sides[name])
            seconds = (time.monotonic() - t0) / len(order)  # per side
            aa_result = compare(d / "base.json", d / "again.json", d / "aa.json")
            slow_result = compare(d / "base.json", d / "slow.json", d / "slow-cmp.json")
            aa, slow = flagged(aa_result), flagged(slow_result)
            query = flagged(compare(d / "base.json", d / "query.json", d / "query-cmp.json"))
            false_alarms += bool(aa)
            view_caught += (ROUTE, "view", "regressed") in slow
            query_caught += (ROUTE, "queries", "regressed") in query
            print(f"run {run + 1:2d}: A/A flagged {aa or 'nothing'} "
                  f"(view {view_change(aa_result)}); "
                  f"+20 % view caught: {(ROUTE, 'view', 'regressed') in slow} "
                  f"(view {view_change(slow_result)}); +1 query caught: "
                  f"{(ROUTE, 'queries', 'regressed') in query}; {seconds:.1f} s per side",
                  flush=True)  # fmt: skip
    n = args.runs
    print(f"\nA/A runs with no flag:     {n - false_alarms}/{n}")
    print(f"+20 % view (~2 ms) flagged: {view_caught}/{n}")
    print(f"+1 query flagged:           {query_caught}/{n}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
