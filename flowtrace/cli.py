"""The flowtrace command: demo, report, bench and compare.

Bad input (a scenario or result file) is one line on stderr and exit status 2,
never a traceback; a regression found by compare is exit status 1. Output
piped into a command that stops reading (head) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from flowtrace.regression import InputError


def _report(args: argparse.Namespace) -> int:
    from flowtrace import report
    from flowtrace.report import html, terminal

    inputs = report.load(args.files, args.progress or sys.stderr.isatty(),
                         args.include_cold_starts)  # fmt: skip
    terminal.render(inputs, sys.stdout)
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as handle:
                handle.write(html.render(inputs))
        except OSError as exc:
            raise InputError(f"{args.html}: cannot write: {exc.strerror}") from None
        print(f"\nHTML report: {os.path.abspath(args.html)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flowtrace.demo.run import run_demo

    return run_demo(args.output, args.requests)


def _bench(args: argparse.Namespace) -> int:
    from flowtrace.regression import bench, remote, results, scenario, workers
    from flowtrace.report.progress import terminal

    spec = scenario.load(args.scenario)
    if args.rounds is not None:
        spec = scenario.with_rounds(spec, args.rounds)
    progress = terminal()
    outputs = [args.output]
    if args.url:
        produced = [remote.run_against(args.url, spec, progress)]
    else:
        sides = [workers.Side(spec)]
        if args.baseline_output:
            sides.insert(0, _baseline_side(args, spec))
            outputs.insert(0, args.baseline_output)
        produced = workers.run(sides, args.processes, progress)
    for path, result in zip(outputs, produced, strict=True):
        if args.append and os.path.exists(path):
            previous = results.load(path)
            if previous.get("scenario") != result["scenario"]:
                raise InputError(f"{path}: recorded from another scenario; cannot --append")
            result = bench.merge(previous, result)
        results.save(result, path)
        routes = result["routes"]
        timed = sum(len(r["timings_ns"]["request"]) for r in routes.values())
        print(f"flowtrace bench: {len(routes)} route(s), {timed} timed requests -> {path}")
    return 0


def _baseline_side(args: argparse.Namespace, spec: Any) -> Any:
    """The other side of a paired bench: another checkout and/or environment."""
    from flowtrace.regression import scenario, workers

    env = {}
    for item in args.baseline_env or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--baseline-env {item!r}: expected NAME=VALUE")
        env[name] = value
    if args.baseline_dir is None:
        return workers.Side(spec, None, env)
    directory = os.path.abspath(args.baseline_dir)
    other = scenario.load(os.path.join(directory, args.scenario))
    other = scenario.with_rounds(other, spec.rounds)
    return workers.Side(other, directory, env)


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


class _Formatter(argparse.HelpFormatter):
    """Shows an option's default where it has a meaningful one (not None, not a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default not in (None, False, True, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


_DESCRIPTION = "Request-flow profiling for Django: see where each request's time goes."
_EPILOG = ("Exit status: 0 success, 1 a regression found by compare, 2 bad input. "
           "Run 'flowtrace COMMAND --help' for a command's options.")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from flowtrace import __version__

    formatter = _Formatter
    parser = argparse.ArgumentParser(prog="flowtrace", description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"flowtrace {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        description = summary[0].upper() + summary[1:] + "."
        return commands.add_parser(name, help=summary, description=description,
                                   formatter_class=formatter, **kwargs)  # fmt: skip

    demo = command("demo", "serve the demo app under gunicorn and show its stages")
    demo.add_argument("--output", default="demo-output", help="directory for the span file")
    demo.add_argument("--requests", type=int, default=20, help="requests per route")
    demo.set_defaults(func=_demo)
    report = command("report", "per-route, per-stage report of span files or bench results",
                     aliases=["summary"])  # fmt: skip
    report.add_argument("files", nargs="+", metavar="FILE",
                        help="OTLP-JSON span files (output_file) and/or bench result files; "
                        "with two bench results, the first is compared against the "
                        "second")  # fmt: skip
    report.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report")
    report.add_argument("--progress", action="store_true", help="progress bar even off a tty")
    report.add_argument("--include-cold-starts", action="store_true",
                        help="count a process's first 3 requests among the slowest")  # fmt: skip
    report.set_defaults(func=_report)
    bench = command("bench", "replay a scenario in-process, record stage timings and counts")
    bench.add_argument("scenario", help="scenario file (TOML, or YAML with PyYAML)")
    bench.add_argument("-o", "--output", default="flowtrace-bench.json", help="result file")
    bench.add_argument("--rounds", type=_positive, help="override the scenario's timed rounds")
    bench.add_argument("--processes", type=_positive, default=3,
                       help="fresh processes to split the rounds over")  # fmt: skip
    bench.add_argument("--baseline-output", metavar="FILE",
                       help="paired mode: also measure a baseline, alternating rounds")  # fmt: skip
    bench.add_argument("--baseline-dir", metavar="DIR",
                       help="paired mode: the baseline checkout "
                       "(needs --baseline-output)")  # fmt: skip
    bench.add_argument("--baseline-env", metavar="NAME=VALUE", action="append",
                       help="paired mode: baseline environment, repeatable "
                       "(needs --baseline-output)")  # fmt: skip
    bench.add_argument("--append", action="store_true",
                       help="add to the samples in --output (alternate sides in CI)")  # fmt: skip
    bench.add_argument("--url", help="run against a server (client-side timings only)")
    bench.set_defaults(func=_bench)
    cmp = command("compare", "compare two bench results; exit status 1 on a regression")
    cmp.add_argument("baseline", help="bench result of the reference (e.g. the main branch)")
    cmp.add_argument("current", help="bench result to judge (e.g. the pull request)")
    cmp.add_argument("--rel", type=float,
                     help="minimum relative change; default: the scenario's, "
                     "else 0.10")  # fmt: skip
    cmp.add_argument("--abs-ms", type=float,
                     help="minimum absolute change in ms; default: the scenario's, "
                     "else 0.05")  # fmt: skip
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and (args.baseline_dir or args.baseline_env) \
            and not args.baseline_output:  # fmt: skip
        print(
            "flowtrace bench: error: --baseline-dir and --baseline-env describe the baseline "
            "side of a paired run; add --baseline-output FILE for its results",
            file=sys.stderr,
        )
        return 2
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return status
    except InputError as exc:
        print(f"flowtrace {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader (head, less) went away: stop quietly, and keep the interpreter's
        # final flush of stdout from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1  # as the Python documentation recommends (SIGPIPE stays ignored)


if __name__ == "__main__":
    sys.exit(main())
