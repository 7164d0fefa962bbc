"""Measure how often ``flowtrace compare`` is right, with its default settings.

    python benchmarks/regression_power.py [--runs 20]

Each run makes three paired benches of the power project (``benchmarks/power/``,
a ~2 ms view) with ``flowtrace bench --baseline-output`` defaults, the way
docs/ci.md recommends for CI, and compares each pair with default thresholds:

- A/A: unchanged code against itself; any flagged metric is a false alarm;
- +20 % view: the view's CPU work x 1.2; must flag the view stage;
- +1 query: one more query; must flag the ``queries`` count.
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
WORK, QUERIES = "FLOWTRACE_POWER_WORK", "FLOWTRACE_POWER_EXTRA_QUERIES"


def paired_bench(base: Path, current: Path, db: Path, name: str, value: str, baseline: str) -> None:
    """Baseline with ``name=baseline``, current with ``name=value``, alternating rounds."""
    cmd = [sys.executable, "-m", "flowtrace.cli", "bench", "scenario.toml", "-o", str(current),
           "--baseline-output", str(base), "--baseline-env", f"{name}={baseline}"]  # fmt: skip
    env = {**os.environ, "FLOWTRACE_DEMO_DB": str(db), name: value}
    subprocess.run(cmd, cwd=HERE, env=env, check=True, stdout=subprocess.DEVNULL)


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
            t0 = time.monotonic()
            paired_bench(d / "a1.json", d / "a2.json", db, WORK, "1.0", "1.0")
            paired_bench(d / "b1.json", d / "b2.json", db, WORK, "1.2", "1.0")
            paired_bench(d / "c1.json", d / "c2.json", db, QUERIES, "1", "0")
            seconds = (time.monotonic() - t0) / 3
            aa_result = compare(d / "a1.json", d / "a2.json", d / "aa.json")
            slow_result = compare(d / "b1.json", d / "b2.json", d / "slow-cmp.json")
            aa, slow = flagged(aa_result), flagged(slow_result)
            query = flagged(compare(d / "c1.json", d / "c2.json", d / "query-cmp.json"))
            false_alarms += bool(aa)
            view_caught += (ROUTE, "view", "regressed") in slow
            query_caught += (ROUTE, "queries", "regressed") in query
            print(f"run {run + 1:2d}: A/A flagged {aa or 'nothing'} "
                  f"(view {view_change(aa_result)}); "
                  f"+20 % view caught: {(ROUTE, 'view', 'regressed') in slow} "
                  f"(view {view_change(slow_result)}); +1 query caught: "
                  f"{(ROUTE, 'queries', 'regressed') in query}; {seconds:.1f} s per paired bench",
                  flush=True)  # fmt: skip
    n = args.runs
    print(f"\nA/A runs with no flag:     {n - false_alarms}/{n}")
    print(f"+20 % view (~2 ms) flagged: {view_caught}/{n}")
    print(f"+1 query flagged:           {query_caught}/{n}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
