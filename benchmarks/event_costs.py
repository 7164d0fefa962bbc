"""What flowtrace's request-thread hooks cost per event, in CPU instructions (valgrind).

    python benchmarks/event_costs.py              # ~7 minutes; needs valgrind
    python benchmarks/event_costs.py --kinds cache.get-hit,floor --layouts 3

One event kind at a time (a query, a template render, a cache call), each in its
own process under ``valgrind --tool=callgrind``, counting only while
``itertools.starmap`` drives N calls of it, after a warm-up (nothing else uses
``starmap``, as in ``benchmarks/instructions.py``; instrumentation itself is
switched on by ``callgrind_control`` just before the loop, which makes setup 5
times faster). Every kind runs in four variants, so that a hook's cost splits
into parts:

* ``plain``: Django alone, no hook installed;
* ``passthrough``: the same methods wrapped by a do-nothing wrapper (for queries,
  a do-nothing ``execute_wrapper``): what being wrapped at all costs;
* ``idle``: flowtrace's hooks installed (``flowtrace.capture.django.calls.install()``,
  as ``FlowTrace`` does), no Timeline current: a call outside a traced request;
* ``traced``: the hooks with a Timeline current: a call inside a traced request.

``FlowTrace`` itself never runs in these loops: the hooks find their request
through the ``current`` context variable only.

Counts are exact for one memory layout, but the layout moves them: CPython's
type-attribute cache is indexed by the address of the attribute's name, and
some dicts by object addresses, so a process whose heap sits a few bytes
elsewhere (here: a longer environment) can miss more often: seen up to 1.8 k
instructions per cache call, 14 k per ORM query. So every variant runs in
several layouts and the median counts; ``spread`` shows how much they moved it.

The Python frames of the hooks are not visible to callgrind (it sees the
interpreter's C functions), so the per-function columns name C functions:
``_PyEval_EvalFrameDefault`` is the bytecode of the Python code added, the rest
are the C helpers it calls (context variables, clocks, tuple and
``functools.partial`` allocation, the GC).
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
WARMUP = 200


@dataclass(frozen=True)
class Kind:
    name: str
    calls: int  # N calls in the measured loop (at --scale 1)
    events: int  # events flowtrace records per call
    what: str


KINDS = [
    Kind("floor", 2000, 1, "2 perf_counter_ns() + append in try/finally (vs. an empty function)"),
    Kind("cursor.execute", 2000, 1, 'cursor.execute("SELECT 1") (sqlite)'),
    Kind("orm.first", 300, 1, "Item.objects.filter(pk=1).first()"),
    Kind("render", 500, 1, "demo/card.html rendered through get_template()"),
    Kind("render+includes", 200, 5, "demo/section.html: 4 {% include %}d cards"),
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

    base.Template.render = render

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


def _instrument() -> None:
    """Turn callgrind's instrumentation on (the parent starts it off: setup and warm-up
    then run 5 times faster). Spin while asking, so that valgrind reads the request."""
    asking = subprocess.Popen(["callgrind_control", "--instr=on", str(os.getpid())],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    while asking.poll() is None:
        pass
    answer = asking.stdout.read().decode() if asking.stdout else ""
    if asking.returncode or "OK" not in answer:
        sys.stderr.write(f"callgrind_control failed (try --instrument-all):\n{answer}\n")
        os._exit(3)


def subject(kind: str, variant: str, count: int) -> None:
    """Set up, warm up, then the measured loop; print the events recorded in it."""
    import gc
    from wsgiref.util import setup_testing_defaults

    import django

    from flowtrace.capture.django import calls
    from flowtrace.capture.request_info import snapshot
    from flowtrace.capture.timeline import Timeline, current

    django.setup()
    # Every variant imports the same modules and modifies the same classes (install()
    # sets their methods, uninstall() puts Django's back), so that the variants differ
    # in what the loop runs, as little as possible in how memory is laid out.
    calls.install()
    if variant in ("plain", "passthrough"):
        calls.uninstall()
    if variant == "passthrough":
        _install_passthrough()
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
    if os.environ.get("EVENT_COSTS_VGDB"):
        _instrument()
    collections.deque(itertools.starmap(fn, itertools.repeat(args, count)), maxlen=0)
    recorded = len(tl.events) if tl is not None else 0
    sys.stdout.write(f"events {recorded + len(_events)}\n")
    sys.stdout.flush()
    os._exit(0)


# -- the parent: run the subjects, read callgrind's per-function costs ---------------------


@dataclass
class Run:
    count: int  # calls in the measured loop
    total: int  # instructions in it
    recorded: int  # events recorded in it
    self_cost: dict[str, int]  # C function -> its own instructions
    inclusive: dict[str, int]  # C function -> instructions in it and what it calls
    calls: dict[str, int]  # C function -> times called

    def per_call(self) -> float:
        return self.total / self.count


_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)(?:\s+\[[^\]]*\])?\s*$")


def _per_function(out: Path, inclusive: bool) -> dict[str, int]:
    """callgrind_annotate's table, by function name. A function appears once per source
    file its instructions came from (inlined header code): self costs add up, an
    inclusive cost is the largest of its rows."""
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
        cost = int(match.group(1).replace(",", ""))
        costs[name] = max(costs.get(name, 0), cost) if inclusive else costs.get(name, 0) + cost
    return costs


def _call_counts(out: Path) -> dict[str, int]:
    """How often each C function was called, from callgrind's own file (``calls=``
    lines follow the ``cfn=`` they count; names are compressed to ``(id)``)."""
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    callee = ""
    with out.open() as lines:
        for line in lines:
            if line.startswith(("fn=", "cfn=")):
                match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if match is None:
                    continue
                if match.group(2):
                    names[match.group(1)] = re.sub(r"'\d+$", "", match.group(2))
                if line.startswith("cfn="):
                    callee = names.get(match.group(1), "")
            elif line.startswith("calls="):
                counts[callee] = counts.get(callee, 0) + int(line[6:].split()[0])
    return counts


def _load(out: Path, count: int, recorded: int) -> Run:
    return Run(count, sum(_per_function(out, False).values()), recorded,
               _per_function(out, False), _per_function(out, True), _call_counts(out))  # fmt: skip


def _run(kind: Kind, variant: str, count: int, pad: int, env: dict[str, str], out: Path,
         instrument_all: bool) -> Run:  # fmt: skip
    env = {**env, "EVENT_COSTS_PAD": "x" * pad}  # moves the heap: another memory layout
    command = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               "--toggle-collect=starmap_next", f"--callgrind-out-file={out}"]  # fmt: skip
    if not instrument_all:
        command.append("--instr-atstart=no")
        env["EVENT_COSTS_VGDB"] = "1"
    command += [sys.executable, __file__, "--subject", kind.name, "--variant", variant,
                "--count", str(count)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    collected = re.search(r"Collected : (\d+)", done.stderr)
    recorded = re.search(r"^events (\d+)$", done.stdout, re.MULTILINE)
    if done.returncode or not collected or not recorded or not int(collected.group(1)):
        raise SystemExit(f"{kind.name}/{variant} failed:\n{done.stdout[-1000:]}\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    run = _load(out, count, int(recorded.group(1)))
    if run.total != int(collected.group(1)):
        raise SystemExit(f"{out}: callgrind_annotate's functions add up to {run.total}, "
                         f"valgrind counted {collected.group(1)}")  # fmt: skip
    return run


# What kind of work a C function does (first match wins), to add a delta's functions up.
_GROUPS = [
    ("bytecode", r"^_PyEval_EvalFrameDefault$"),
    ("contextvars", r"hamt|Hamt|ContextVar|contextvar|^token_|^context_|PyContext|popcount"),
    ("partial", r"^partial_"),
    ("clock", r"perf_counter|^_PyTime_|^clock_gettime"),
    ("GC runs", r"^gc_|traverse|^visit_|MaybeUntrack|IS_GC|_refs$|unreachable|^_PyGC"),
    ("alloc/free", r"alloc|[Ff]ree$|GC_New|GC_Link|GC_Del|GC_Track|GC_UnTrack|NewReference|"
                   r"_New$|_Dealloc|_PyTrash|^__mem|^PyLong_From"),
    ("calls/frames", r"[Vv]ectorcall|_Call|initialize_locals|_PyFrame_|FramePush|FunctionResult|"
                     r"^cfunction_|CMethod_New|list_extend|_PyStack|ThreadState|slot_tp_call|"
                     r"tupleconcat"),
    ("lookups", r"dict|Dict|_PyType_Lookup|GetAttr|Hash|unicodekeys|lookup"),
]  # fmt: skip

# C functions that stand for something the Python code does: how often each is called.
_ENTRIES = [
    ("_contextvars_ContextVar_get", "ContextVar.get"),
    ("_contextvars_ContextVar_set", "ContextVar.set"),
    ("_contextvars_ContextVar_reset", "ContextVar.reset"),
    ("time_perf_counter_ns", "perf_counter_ns"),
    ("PyCMethod_New", "bound builtin method"),
    ("dict_get", "dict.get"),
    ("PyDict_New", "new dict"),
    ("tuple_alloc", "new tuple"),
    ("partial_new", "functools.partial()"),
    ("tupleconcat", "tuple concat"),
    ("slot_tp_call", "instance __call__"),
]


def _groups(a: Run, b: Run) -> list[tuple[str, float]]:
    """The growth from ``b`` to ``a`` per call, by kind of work (largest first)."""
    sums: dict[str, float] = {}
    for fn in a.self_cost.keys() | b.self_cost.keys():
        group = next((g for g, pattern in _GROUPS if re.search(pattern, fn)), "other")
        grown = a.self_cost.get(fn, 0) / a.count - b.self_cost.get(fn, 0) / b.count
        sums[group] = sums.get(group, 0.0) + grown
    ranked = sorted(sums.items(), key=lambda item: (-abs(item[1]), item[0]))
    return [(group, diff) for group, diff in ranked if abs(diff) >= 0.5]


def _top(a: Run, b: Run, count: int) -> list[tuple[str, float]]:
    """The C functions whose own cost grew most from ``b`` to ``a``, per call."""
    grown = {fn: a.self_cost.get(fn, 0) / a.count - b.self_cost.get(fn, 0) / b.count
             for fn in a.self_cost.keys() | b.self_cost.keys()}  # fmt: skip
    ranked = sorted(grown.items(), key=lambda item: (-item[1], item[0]))
    return [(fn, diff) for fn, diff in ranked[:count] if diff > 0]


def _entries(a: Run, b: Run) -> list[str]:
    """What the code added calls, per call (``_ENTRIES``), and what the GC runs cost
    (inclusive: collections run inside whichever allocation crossed the threshold)."""
    found = []
    for fn, label in _ENTRIES:
        grown = a.calls.get(fn, 0) / a.count - b.calls.get(fn, 0) / b.count
        if abs(grown) >= 0.05:
            found.append(f"{label} {grown:+.2g}x")
    gc = a.inclusive.get("gc_collect_main", 0) / a.count - b.inclusive.get(
        "gc_collect_main", 0) / b.count  # fmt: skip
    if abs(gc) >= 20:
        found.append(f"GC collections {gc:+.0f} instr")
    return found


def _k(value: float | None) -> str:
    return "" if value is None else f"{value / 1e3:.2f} k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(BY_NAME),
                        help="comma-separated, of: " + ", ".join(BY_NAME))  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N")
    parser.add_argument("--layouts", type=int, default=5,
                        help="runs per variant, each with the heap laid out differently; "
                             "the median counts (default 5)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at once (<= 2)")
    parser.add_argument("--instrument-all", action="store_true",
                        help="instrument from the start (if callgrind_control fails)")  # fmt: skip
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
    if args.layouts < 1 or args.jobs < 1 or args.scale <= 0:
        raise SystemExit("--layouts and --jobs must be >= 1, --scale > 0")
    kinds = [BY_NAME[name] for name in args.kinds.split(",")]
    pads = [8 * (2**i - 1) for i in range(args.layouts)]  # bytes of environment: 0, 8, 24...
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
        tasks = [(kind, variant, max(1, round(kind.calls * args.scale)), pad)
                 for kind in kinds
                 for variant in (("plain", "traced") if kind.name == "floor" else VARIANTS)
                 for pad in pads]  # fmt: skip
        with ThreadPoolExecutor(min(args.jobs, 2)) as pool:
            futures = [
                ((kind.name, variant), pool.submit(
                    _run, kind, variant, count, pad, env,
                    out_dir / f"{kind.name}.{variant}.{pad}.cg", args.instrument_all))
                for kind, variant, count, pad in tasks
            ]  # fmt: skip
            runs: dict[tuple[str, str], list[Run]] = {}
            for key, future in futures:
                runs.setdefault(key, []).append(future.result())
    elapsed = time.monotonic() - started
    _report(kinds, runs, args.layouts, elapsed)


def _report(kinds: list[Kind], runs: dict[tuple[str, str], list[Run]], layouts: int,
            elapsed: float) -> None:  # fmt: skip
    # The median run of each variant (by total) stands for it; "spread" is how far the
    # layouts moved a variant's count (the largest max - min of the kind's variants).
    median = {key: sorted(rs, key=Run.per_call)[(len(rs) - 1) // 2] for key, rs in runs.items()}
    print(f"flowtrace's request-thread hooks: instructions per call (valgrind callgrind), "
          f"Python {sys.version.split()[0]}, median of {layouts} memory layouts, "
          f"{elapsed:.0f} s")  # fmt: skip
    print("  plain: no hook; flowtrace: hooks installed, a Timeline current; "
          "delta: flowtrace - plain;")  # fmt: skip
    print("  no-tl: hooks installed, no current Timeline, - plain; "
          "wrap: a do-nothing wrapper - plain;")  # fmt: skip
    print("  spread: largest (max - min) over the layouts of one variant")
    print()
    header = (f"  {'event kind':16} {'N':>5} {'ev':>3} {'plain':>10} {'flowtrace':>10} "
              f"{'delta':>8} {'delta/ev':>8} {'no-tl':>8} {'wrap':>8} {'spread':>8}")  # fmt: skip
    print(header)
    print("  " + "-" * (len(header) - 2))
    problems = []
    for kind in kinds:
        per = {variant: median[name, variant].per_call()
               for name, variant in median if name == kind.name}  # fmt: skip
        traced = median[kind.name, "traced"]
        delta = per["traced"] - per["plain"]
        idle = per["idle"] - per["plain"] if "idle" in per else None
        wrap = per["passthrough"] - per["plain"] if "passthrough" in per else None
        spread = max(max(r.per_call() for r in rs) - min(r.per_call() for r in rs)
                     for (name, _), rs in runs.items() if name == kind.name)  # fmt: skip
        print(f"  {kind.name:16} {traced.count:5} {kind.events:3} {_k(per['plain']):>10} "
              f"{_k(per['traced']):>10} {_k(delta):>8} {_k(delta / kind.events):>8} "
              f"{_k(idle):>8} {_k(wrap):>8} {_k(spread):>8}")  # fmt: skip
        for variant, rs in runs.items():
            if variant[0] == kind.name:
                expected = traced.count * kind.events if variant[1] == "traced" else 0
                wrong = [r.recorded for r in rs if r.recorded != expected]
                if wrong:
                    problems.append(f"{kind.name}/{variant[1]}: {wrong[0]} events recorded, "
                                    f"expected {expected}")  # fmt: skip
        if delta <= 0:
            problems.append(f"{kind.name}: delta {delta:.0f} is not positive")
    print()
    print("  Where each delta goes, per call. The hooked kinds' delta splits into wrap (a")
    print("  do-nothing wrapper - plain), entry (no-tl - wrap: the hook up to its")
    print("  'no Timeline' return, and its being a different callable) and recording")
    print("  (flowtrace - no-tl). Each part: by kind of work (C functions' own instructions,")
    print("  grouped); top: the 5 C functions whose own instructions grew most; calls: how")
    print("  many more times per call C functions standing for Python operations ran.")
    for kind in kinds:
        plain, traced = median[kind.name, "plain"], median[kind.name, "traced"]
        print(f"  {kind.name}: {kind.what}")
        parts = [("delta", traced, plain)]
        if (kind.name, "idle") in median:
            bare, hooked = median[kind.name, "passthrough"], median[kind.name, "idle"]
            parts += [("wrap", bare, plain), ("entry", hooked, bare),
                      ("recording", traced, hooked)]  # fmt: skip
        for label, a, b in parts:
            total = a.per_call() - b.per_call()
            groups = ", ".join(f"{group} {diff:+.0f}" for group, diff in _groups(a, b))
            top = ", ".join(f"{fn} {diff:+.0f}" for fn, diff in _top(a, b, 5))
            entries = ", ".join(_entries(a, b))
            print(f"    {label:9} {total:+7.0f} = {groups}")
            print(f"    {'':17} top: {top}")
            if entries:
                print(f"    {'':17} calls: {entries}")
    for problem in problems:
        print(f"  CHECK: {problem}")


if __name__ == "__main__":
    main()
