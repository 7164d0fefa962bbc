"""The ``flowtrace`` command: ``demo``, ``summary``, ``bench`` and ``compare``.

Bad input (a scenario or result file) is one line on stderr and exit status 2,
never a traceback; a regression found by ``compare`` is exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flowtrace.regression import InputError


def _summary(args: argparse.Namespace) -> int:
    from flowtrace.summary import render, summarise

    for path in args.files:
        try:
            with open(path, encoding="utf-8") as handle:
                routes = summarise(handle)
        except (OSError, ValueError) as exc:
            print(f"flowtrace summary: {path}: {exc}", file=sys.stderr)
            return 2
        print(f"== {path}")
        render(routes, sys.stdout)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flowtrace.demo.run import run_demo

    return run_demo(args.output, args.requests)


def _bench(args: argparse.Namespace) -> int:
    from flowtrace.regression import bench, results, scenario

    spec = scenario.load(args.scenario)
    if args.rounds is not None:
        spec = scenario.with_rounds(spec, args.rounds)
    progress = bench.progress_stream()
    if args.url:
        result = bench.run_against(args.url, spec, progress)
    else:
        result = bench.run_processes(spec, args.processes, progress)
    if args.append and os.path.exists(args.output):
        previous = results.load(args.output)
        if previous.get("scenario") != result["scenario"]:
            raise InputError(f"{args.output}: recorded from another scenario; cannot --append")
        result = bench.merge(previous, result)
    results.save(result, args.output)
    routes = result["routes"]
    print(f"flowtrace bench: {len(routes)} route(s), "
          f"{sum(len(r['timings_ns']['request']) for r in routes.values())} timed requests "
          f"-> {args.output}")  # fmt: skip
    return 0


def _compare(args: argparse.Namespace) -> int:
    from flowtrace.regression import compare, report, results
    from flowtrace.regression.scenario import Thresholds

    baseline, current = results.load(args.baseline), results.load(args.current)
    stored = current.get("thresholds") or {}
    thresholds = Thresholds(
        args.rel if args.rel is not None else float(stored.get("rel", 0.10)),
        args.abs_ms if args.abs_ms is not None else float(stored.get("abs_ms", 0.05)),
        tuple(stored.get("overrides", ())),
    )
    comparison = compare.compare(baseline, current, (args.baseline, args.current), thresholds,
                                 args.allow_missing, not args.no_normalise)  # fmt: skip
    report.terminal(comparison, sys.stdout, args.all)
    outputs = ((args.markdown, report.markdown), (args.json, report.as_json),
               (args.junit, report.junit))  # fmt: skip
    for path, render in outputs:
        if path:
            # append: $GITHUB_STEP_SUMMARY is shared by every step of a job
            mode = "a" if path == _step_summary() else "w"
            with open(path, mode, encoding="utf-8") as handle:
                handle.write(render(comparison))
    return 1 if comparison.regressions else 0


def _step_summary() -> str | None:
    return os.environ.get("GITHUB_STEP_SUMMARY")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo app under gunicorn and show its stages")
    demo.add_argument("--output", default="demo-output", help="directory for the span file")
    demo.add_argument("--requests", type=int, default=20, help="requests per route")
    demo.set_defaults(func=_demo)
    summary = commands.add_parser("summary", help="per-route, per-stage summary of span files")
    summary.add_argument("files", nargs="+", help="OTLP-JSON span files")
    summary.set_defaults(func=_summary)
    bench = commands.add_parser("bench", help="replay a scenario, record stage timings and counts")
    bench.add_argument("scenario", help="scenario file (TOML, or YAML with PyYAML)")
    bench.add_argument("-o", "--output", default="flowtrace-bench.json", help="result file")
    bench.add_argument("--rounds", type=int, help="override the scenario's timed rounds")
    bench.add_argument("--processes", type=int, default=3,
                       help="fresh processes to split the rounds over (default 3)")  # fmt: skip
    bench.add_argument("--append", action="store_true",
                       help="add to the samples in --output (alternate sides in CI)")  # fmt: skip
    bench.add_argument("--url", help="run against a server (client-side timings only)")
    bench.set_defaults(func=_bench)
    cmp = commands.add_parser("compare", help="compare two bench results; exit 1 on regression")
    cmp.add_argument("baseline")
    cmp.add_argument("current")
    cmp.add_argument("--rel", type=float, help="minimum relative change (default 0.10)")
    cmp.add_argument("--abs-ms", type=float, help="minimum absolute change in ms (default 0.05)")
    cmp.add_argument("--allow-missing", action="store_true",
                     help="report routes present on one side only instead of failing")  # fmt: skip
    cmp.add_argument("--no-normalise", action="store_true",
                     help="do not divide out machine-speed drift (calibration)")  # fmt: skip
    cmp.add_argument("--all", action="store_true", help="show unchanged metrics too")
    cmp.add_argument("--markdown", metavar="FILE", help="write Markdown (PR comment)")
    cmp.add_argument("--json", metavar="FILE", help="write JSON")
    cmp.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    cmp.set_defaults(func=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"flowtrace {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
