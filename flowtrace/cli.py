"""The ``flowtrace`` command: ``demo`` and ``summary``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowtrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo app under gunicorn and show its stages")
    demo.add_argument("--output", default="demo-output", help="directory for the span file")
    demo.add_argument("--requests", type=int, default=20, help="requests per route")
    demo.set_defaults(func=_demo)
    summary = commands.add_parser("summary", help="per-route, per-stage summary of span files")
    summary.add_argument("files", nargs="+", help="OTLP-JSON span files")
    summary.set_defaults(func=_summary)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
