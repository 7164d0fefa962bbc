"""flowtrace's cost in CPU instructions per request, counted by valgrind: no noise.

    python benchmarks/instructions.py             # ~2 minutes; needs valgrind
    python benchmarks/instructions.py --route /db

Timings on a shared 2-core VM move by ±20 % from one minute to the next;
instruction counts do not (``PYTHONHASHSEED=0``, same inputs). Each part is
run in its own process under ``valgrind --tool=callgrind``, which counts only
while ``itertools.starmap`` drives the measured loop (nothing else in the
measured code uses ``starmap``), so imports, Django setup and warm-up are
not counted. Instructions are not time (cache misses, the GIL and thread
switches are not in them), so ``benchmarks/overhead.py`` stays the measure
of record; this says where the instructions go.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNT = 400

# (label, what runs in the measured loop, extra environment)
PARTS = [
    ("plain Django request", "plain", {}),
    ("kill switch (FLOWTRACE_ENABLED=0)", "off", {"FLOWTRACE_ENABLED": "0"}),
    ("request thread: FlowTrace wrapper only", "requests", {"NO_HOOKS": "1"}),
    ("request thread: wrapper + Django hooks", "requests", {}),
    ("export: replayed shape, sampled", "export", {"SAMPLED": "1"}),
    ("export: general path (tree), sampled", "export", {"SAMPLED": "1", "GENERAL": "1"}),
    ("export: replayed shape, not sampled", "export", {}),
    ("export: without a tree, not sampled", "export", {"GENERAL": "1"}),
]


def subject(mode: str, route: str, count: int) -> None:
    """The process valgrind runs: set up, warm up, then the measured loop."""
    import itertools
    from wsgiref.util import setup_testing_defaults

    import django
    from django.core.wsgi import get_wsgi_application

    import flowtrace.capture.django.handler
    from flowtrace import FlowTrace

    django.setup()
    if os.environ.get("NO_HOOKS"):
        flowtrace.capture.django.handler.is_django_handler = lambda app: False  # type: ignore[assignment]
    environ = {"PATH_INFO": route, "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)
    if mode == "plain":
        app = get_wsgi_application()
    elif mode == "off":
        app = FlowTrace(get_wsgi_application())  # disabled by the environment
    else:
        traced = FlowTrace(get_wsgi_application(), max_pending=10**9)
        pipeline = traced._pipeline
        assert pipeline is not None
        pipeline._start = lambda: None  # type: ignore[method-assign]  # no export thread
        traced._spans.send_pending = lambda: None  # encoding counted, not the socket
        app = traced

    def one() -> None:
        body = app(dict(environ), lambda *a: None)
        for _ in body:
            pass
        body.close()

    statuses: list[str] = []
    body = app(dict(environ), lambda status, *a: statuses.append(status))
    b"".join(body)
    body.close()
    if not statuses[0].startswith("200"):  # a broken page would measure an error page
        raise SystemExit(f"{route} answered {statuses[0]}")

    for _ in range(300):
        one()
    if mode in ("plain", "off"):
        list(itertools.starmap(one, itertools.repeat((), count)))
        os._exit(0)
    recorder = pipeline._process
    for tl in list(pipeline._pending):  # learn the shapes
        recorder(tl)
    pipeline._pending.clear()
    if mode == "requests":
        list(itertools.starmap(one, itertools.repeat((), count)))
        os._exit(0)
    for _ in range(count):
        one()
    timelines = list(pipeline._pending)
    for tl in timelines:
        tl.sampled = bool(os.environ.get("SAMPLED"))
    if os.environ.get("GENERAL"):
        recorder.layouts = None  # type: ignore[attr-defined]
    list(itertools.starmap(recorder, ((tl,) for tl in timelines)))
    os._exit(0)


def _count(mode: str, extra: dict[str, str], route: str, count: int, out: Path) -> int:
    env = {**os.environ, **extra, "PYTHONHASHSEED": "0",
           "DJANGO_SETTINGS_MODULE": "flowtrace.demo.settings",
           "OTEL_TRACES_SAMPLER": "parentbased_always_on",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
           "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}  # fmt: skip
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=starmap_next",
         f"--callgrind-out-file={out}", sys.executable, __file__, "--subject", mode,
         "--route", route, "--count", str(count)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    match = re.search(r"Collected : (\d+)", done.stderr)
    if not match:
        raise SystemExit(f"valgrind run failed:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", default="/hello")
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--subject", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subject:
        subject(args.subject, args.route, args.count)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        os.environ["FLOWTRACE_DEMO_DB"] = str(Path(tmp) / "demo.sqlite3")
        from flowtrace.demo.setup_db import prepare

        prepare()  # the subjects (valgrind children) inherit the seeded database
        futures = [
            pool.submit(_count, mode, extra, args.route, args.count, Path(tmp) / f"cg.{i}")
            for i, (_, mode, extra) in enumerate(PARTS)
        ]  # fmt: skip
        results = [f.result() / args.count for f in futures]
    counts = {label: result for (label, _, _), result in zip(PARTS, results, strict=True)}
    plain = counts["plain Django request"]
    print(f"route {args.route}: instructions per request (valgrind), {args.count} requests each, "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    wrapper = counts["request thread: FlowTrace wrapper only"] - plain
    hooks = counts["request thread: wrapper + Django hooks"] - plain - wrapper
    off = counts["kill switch (FLOWTRACE_ENABLED=0)"] - plain
    rows = [("plain Django request", plain),
            ("kill switch: FlowTrace disabled", off),
            ("request thread: FlowTrace wrapper", wrapper),
            ("request thread: Django hooks (layers, resolve, view)", hooks),
            ("request thread: total", wrapper + hooks)]  # fmt: skip
    rows += [(label, counts[label]) for label, mode, _ in PARTS if mode == "export"]
    for label, value in rows:
        print(f"  {label:54} {value / 1e3:9.1f} k  {value / plain * 100:6.1f} % of plain")
    sampled = wrapper + hooks + counts["export: replayed shape, sampled"]
    tenth = (wrapper + hooks + 0.9 * counts["export: replayed shape, not sampled"]
             + 0.1 * counts["export: replayed shape, sampled"])  # fmt: skip
    print(f"  {'=> 100 % sampling, shapes replayed':54} {sampled / 1e3:9.1f} k  "
          f"{sampled / plain * 100:6.1f} % of plain")  # fmt: skip
    print(f"  {'=> 10 % sampling, shapes replayed':54} {tenth / 1e3:9.1f} k  "
          f"{tenth / plain * 100:6.1f} % of plain")  # fmt: skip


if __name__ == "__main__":
    main()
