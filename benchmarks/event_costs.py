"""What flowtrace's request-thread hooks cost per event, in CPU instructions (valgrind).

    python benchmarks/event_costs.py              # ~10 minutes; needs valgrind
    python benchmarks/event_costs.py --kinds cache.get-hit,floor --scale 0.5

One event kind at a time (a query, a template render, a cache call), each in its
own process under ``valgrind --tool=callgrind``, counting only while
``itertools.starmap`` drives N calls of it (after a warm-up; nothing else uses
``starmap``, as in ``benchmarks/instructions.py``). Every kind runs in four
variants, so that the hook's cost splits into parts:

* ``plain``: Django alone, no hook installed;
* ``passthrough``: the same methods wrapped by a do-nothing wrapper (for queries,
  a do-nothing ``execute_wrapper``): what being wrapped at all costs;
* ``idle``: flowtrace's hooks installed (``flowtrace.capture.django.calls.install()``,
  as ``FlowTrace`` does), no Timeline current: a call outside a traced request;
* ``traced``: the hooks with a Timeline current: a call inside a traced request.

``FlowTrace`` itself never runs in these loops: the hooks find their request
through the ``current`` context variable only. The Python frames of the hooks are
not visible to callgrind (it sees the interpreter's C functions), so the
per-function columns name C functions: ``_PyEval_EvalFrameDefault`` is the
bytecode of the Python code added, the rest are the C helpers it calls
(context variables, clocks, tuple and ``functools.partial`` allocation, the GC).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns as clock
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "passthrough", "idle", "traced")
WARMUP = 300


@dataclass(frozen=True)
class Kind:
    name: str
    calls: int  # N calls in the measured loop (at --scale 1)
    events: int  # events flowtrace records per call
    what: str


KINDS = [
    Kind("floor", 2000, 1, "2 perf_counter_ns() + append in try/finally (vs. an empty function)"),
    Kind("cursor.execute", 2000, 1, 'cursor.execute("SELECT 1") (sqlite)'),
    Kind("orm.first", 1000, 1, "Item.objects.filter(pk=1).first()"),
    Kind("render", 1000, 1, "demo/card.html rendered through get_template()"),
    Kind("render+includes", 400, 5, "demo/section.html: 4 {% include %}d cards"),
    Kind("cache.get-hit", 2000, 1, "cache.get(key), a hit (LocMemCache)"),
    Kind("cache.get-miss", 2000, 1, "cache.get(key), a miss"),
    Kind("cache.set", 2000, 1, "cache.set(key, 1, 60)"),
    Kind("cache.get_many", 1000, 1, "cache.get_many(5 keys), all hits"),
]
BY_NAME = {kind.name: kind for kind in KINDS}


# -- the subject: the process valgrind runs ------------------------------------------------

_events: list[Any] = []


def _empty() -> None:
    return None


def _floor() -> None:
    """The least a hook can do: two clock reads and an append, in try/finally."""
    t0 = clock()
    try:
        return None
    finally:
        _events.append((6, t0, clock(), None))


def _install_passthrough() -> None:
    """Wrap what flowtrace wraps, in wrappers that do nothing but call through."""
    from django.conf import settings
    from django.db import connections
    from django.template import base
    from django.utils.module_loading import import_string

    from flowtrace.capture.django import calls

    def query(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        return execute(sql, params, many, context)

    for connection in connections.all():
        connection.execute_wrappers.insert(0, query)

    original_render = base.Template.render

    def render(self: Any, context: Any) -> Any:
        return original_render(self, context)

    base.Template.render = render  # type: ignore[method-assign]

    def passthrough(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return original(self, *args, **kwargs)

        return method

    for config in settings.CACHES.values():
        cls = import_string(config["BACKEND"])
        for name in calls._CACHE_METHODS:
            owner = calls._defining_class(cls, name)
            if owner is not None and owner is not object:
                setattr(owner, name, passthrough(owner.__dict__[name]))


def _subject_call(kind: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function the measured loop calls, and its arguments."""
    from django.core.cache import caches
    from django.db import connection
    from django.template.loader import get_template

    from flowtrace.demo.models import Item

    cache = caches["default"]
    keys = [f"event_costs:{i}" for i in range(5)]
    for key in keys:
        cache.set(key, "value", None)
    if kind == "floor":
        return _floor, ()
    if kind == "cursor.execute":
        return connection.cursor().execute, ("SELECT 1",)
    if kind == "orm.first":

        def first() -> Any:
            return Item.objects.filter(pk=1).first()

        return first, ()
    items = list(Item.objects.all()[:4])
    if kind == "render":
        return get_template("demo/card.html").render, ({"item": items[0]},)
    if kind == "render+includes":
        section = {"title": "Section", "items": items}
        return get_template("demo/section.html").render, ({"section": section},)
    if kind == "cache.get-hit":
        return cache.get, (keys[0],)
    if kind == "cache.get-miss":
        return cache.get, ("event_costs:missing",)
    if kind == "cache.set":
        return cache.set, ("event_costs:set", 1, 60)
    if kind == "cache.get_many":
        return cache.get_many, (keys,)
    raise SystemExit(f"unknown kind {kind!r}")


def subject(kind: str, variant: str, count: int) -> None:
    """Set up, warm up, then the measured loop; print the events recorded in it."""
    import gc
    from wsgiref.util import setup_testing_defaults

    import django

    from flowtrace.capture.django import calls
    from flowtrace.capture.request_info import snapshot
    from flowtrace.capture.timeline import Timeline, current

    django.setup()
    if variant == "passthrough":
        _install_passthrough()
    elif variant in ("idle", "traced"):
        calls.install()
    fn, args = _subject_call(kind)
    if kind == "floor" and variant != "traced":
        fn = _empty
    tl = None
    if variant == "traced":
        environ = {"PATH_INFO": "/page", "SCRIPT_NAME": ""}
        setup_testing_defaults(environ)
        tl = Timeline(snapshot(environ, ()), time.time_ns(), time.perf_counter_ns())
        current.set(tl)
    for _ in range(WARMUP):
        fn(*args)
    if tl is not None:
        tl.events.clear()
    _events.clear()
    gc.collect()
    collections.deque(itertools.starmap(fn, itertools.repeat(args, count)), maxlen=0)
    recorded = len(tl.events) if tl is not None else 0
    sys.stdout.write(f"events {recorded + len(_events)}\n")
    sys.stdout.flush()
    os._exit(0)


# -- the parent: run the subjects, read callgrind's per-function costs ---------------------


@dataclass
class Run:
    total: int  # instructions in the measured loop
    recorded: int  # events recorded in it
    self_cost: dict[str, int]  # C function -> its own instructions in the loop
    inclusive: dict[str, int]  # C function -> instructions in it and its callees


_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)(?:\s+\[[^\]]*\])?\s*$")


def _per_function(out: Path, inclusive: bool) -> dict[str, int]:
    done = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
         "--threshold=100", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    costs: dict[str, int] = {}
    table = False
    for line in done.stdout.splitlines():
        if "file:function" in line:
            table = True
            continue
        match = _ANNOTATED.match(line) if table else None
        if match is None:
            continue
        # "Objects/listobject.c:list_append", "...:_PyEval_EvalFrameDefault'2" (a recursion level)
        name = re.sub(r"'\d+$", "", match.group(2).rsplit(":", 1)[-1])
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def _run(kind: Kind, variant: str, count: int, env: dict[str, str], out: Path) -> Run:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=starmap_next",
         f"--callgrind-out-file={out}", sys.executable, __file__, "--subject", kind.name,
         "--variant", variant, "--count", str(count)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    collected = re.search(r"Collected : (\d+)", done.stderr)
    recorded = re.search(r"^events (\d+)$", done.stdout, re.MULTILINE)
    if done.returncode or not collected or not recorded:
        raise SystemExit(f"{kind.name}/{variant} failed:\n{done.stdout[-1000:]}\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    return Run(int(collected.group(1)), int(recorded.group(1)),
               _per_function(out, False), _per_function(out, True))  # fmt: skip


def _top(a: Run, b: Run, count: int, calls: int, inclusive: bool = False) -> list[tuple[str, float]]:
    """The C functions whose cost grew most from ``b`` to ``a``, per call."""
    ca, cb = (a.inclusive, b.inclusive) if inclusive else (a.self_cost, b.self_cost)
    grown = {fn: ca.get(fn, 0) - cb.get(fn, 0) for fn in ca.keys() | cb.keys()}
    ranked = sorted(grown.items(), key=lambda item: (-item[1], item[0]))
    return [(fn, diff / calls) for fn, diff in ranked[:count] if diff > 0]


def _k(value: float) -> str:
    return f"{value / 1e3:7.2f} k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(BY_NAME),
                        help="comma-separated, of: " + ", ".join(BY_NAME))  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at once")
    parser.add_argument("--keep", type=Path, help="keep callgrind's files in this directory")
    parser.add_argument("--subject", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subject:
        subject(args.subject, args.variant, args.count)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    unknown = [name for name in args.kinds.split(",") if name not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown kinds: {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    kinds = [BY_NAME[name] for name in args.kinds.split(",")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONHASHSEED": "0",
               "DJANGO_SETTINGS_MODULE": "flowtrace.demo.settings",
               "FLOWTRACE_DEMO_DB": str(Path(tmp) / "demo.sqlite3"),
               "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}  # fmt: skip
        os.environ.update(env)
        from flowtrace.demo.setup_db import prepare

        prepare()  # once: the subjects share the seeded database
        tasks = [(kind, variant, max(1, round(kind.calls * args.scale)))
                 for kind in kinds
                 for variant in (("plain", "traced") if kind.name == "floor" else VARIANTS)]  # fmt: skip
        with ThreadPoolExecutor(max(1, min(args.jobs, 2))) as pool:
            futures = {
                (kind.name, variant): pool.submit(
                    _run, kind, variant, count, env, out_dir / f"{kind.name}.{variant}.cg")
                for kind, variant, count in tasks
            }  # fmt: skip
            runs = {key: future.result() for key, future in futures.items()}
    counts = {kind.name: count for kind, _, count in tasks}
    elapsed = time.monotonic() - started
    _report(kinds, runs, counts, elapsed)


def _report(kinds: list[Kind], runs: dict[tuple[str, str], Run], counts: dict[str, int],
            elapsed: float) -> None:  # fmt: skip
    print(f"flowtrace hooks: instructions per call (valgrind callgrind), Python "
          f"{sys.version.split()[0]}, {elapsed:.0f} s")  # fmt: skip
    print("  plain: no hooks; flowtrace: hooks + a current Timeline; delta = flowtrace - plain;")
    print("  no-tl: hooks, no current Timeline, - plain; wrap: a do-nothing wrapper, - plain")
    print()
    header = (f"  {'event kind':16} {'N':>5} {'ev':>3} {'plain':>9} {'flowtrace':>9} "
              f"{'delta':>9} {'delta/ev':>9} {'no-tl':>9} {'wrap':>9}")  # fmt: skip
    print(header)
    print("  " + "-" * (len(header) - 2))
    problems = []
    for kind in kinds:
        n = counts[kind.name]
        plain = runs[kind.name, "plain"]
        traced = runs[kind.name, "traced"]
        per = {variant: run.total / n for (name, variant), run in runs.items() if name == kind.name}
        delta = per["traced"] - per["plain"]
        idle = per["idle"] - per["plain"] if "idle" in per else None
        wrap = per["passthrough"] - per["plain"] if "passthrough" in per else None
        print(f"  {kind.name:16} {n:5} {kind.events:3} {_k(per['plain'])} {_k(per['traced'])} "
              f"{_k(delta)} {_k(delta / kind.events)} "
              f"{_k(idle) if idle is not None else '':>9} {_k(wrap) if wrap is not None else '':>9}")
        if traced.recorded != n * kind.events:
            problems.append(f"{kind.name}: {traced.recorded} events recorded, "
                            f"expected {n * kind.events}")  # fmt: skip
        if delta <= 0:
            problems.append(f"{kind.name}: delta {delta:.0f} is not positive")
    print()
    print("  where each delta goes: C functions' own instructions per call, flowtrace - plain,")
    print("  and (for the hooked kinds) split into wrap (do-nothing wrapper - plain),")
    print("  entry (no-tl - wrap) and recording (flowtrace - no-tl)")
    for kind in kinds:
        n = counts[kind.name]
        plain, traced = runs[kind.name, "plain"], runs[kind.name, "traced"]
        print(f"  {kind.name} ({kind.what}):")
        parts = [("delta", traced, plain)]
        if (kind.name, "idle") in runs:
            wrap, idle = runs[kind.name, "passthrough"], runs[kind.name, "idle"]
            parts += [("wrap", wrap, plain), ("entry", idle, wrap), ("recording", traced, idle)]
        for label, a, b in parts:
            top = _top(a, b, 5, n)
            total = (a.total - b.total) / n
            items = ", ".join(f"{fn} {diff:+.0f}" for fn, diff in top)
            print(f"    {label:9} {total:+7.0f}: {items}")
    for problem in problems:
        print(f"  CHECK: {problem}")


if __name__ == "__main__":
    main()
