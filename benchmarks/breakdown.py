"""Where flowtrace's overhead goes, µs by µs, on one route (``/hello`` by default).

    python benchmarks/breakdown.py                 # ~1 minute
    python benchmarks/breakdown.py --route /db

``benchmarks/overhead.py`` measures the totals against plain Django and the
anchor; this script splits flowtrace's share into its parts, in one process
and with no export thread, so that every part is timed on its own:

* request thread: the same requests with and without ``FlowTrace`` (the
  export thread is not started; Timelines wait in the queue), alternated in
  blocks to cancel drift;
* export work, replayed over the Timelines those requests recorded: the
  tree-less totals (what an unsampled request costs), the tree, the metric
  recording, span encoding, and the OTLP/HTTP send to a sink process.

Figures are CPU µs per request (``time.process_time``), median of blocks.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _per_request(run: Callable[[], None], count: int) -> float:
    t0 = time.process_time_ns()
    for _ in range(count):
        run()
    return (time.process_time_ns() - t0) / count / 1e3


def _per_item(run: Callable[[Any], object], items: list[Any]) -> float:
    t0 = time.process_time_ns()
    for item in items:
        run(item)
    return (time.process_time_ns() - t0) / len(items) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", default="/hello")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--count", type=int, default=1000, help="requests per block")
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/otlp_sink.py")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sink.stdout is not None
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowtrace.demo.settings")
    os.environ["OTEL_SERVICE_NAME"] = "breakdown"
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000"  # export only at exit
    try:
        _measure(args.route, args.blocks, args.count)
        from flowtrace.export import providers

        providers.shutdown_owned(2.0)
    finally:
        sink.terminate()
        sink.wait()


def _measure(route: str, blocks: int, count: int) -> None:
    from wsgiref.util import setup_testing_defaults

    import django
    from django.core.wsgi import get_wsgi_application

    from flowtrace import FlowTrace
    from flowtrace import semconv as sc
    from flowtrace.build.shape import shape_middleware
    from flowtrace.build.totals import stage_totals
    from flowtrace.build.tree import build
    from flowtrace.capture.request_info import root_attributes

    django.setup()
    plain = get_wsgi_application()
    traced = FlowTrace(get_wsgi_application(), max_pending=10**9)
    pipeline = traced._pipeline
    assert pipeline is not None
    pipeline._start = lambda: None  # type: ignore[method-assign]  # no export thread
    recorder = pipeline._process
    cfg = traced.config
    spans = traced._spans
    environ: dict[str, Any] = {"PATH_INFO": route, "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)

    def call(app: Any) -> Callable[[], None]:
        def one() -> None:
            body = app(dict(environ), lambda *a: None)
            for _ in body:
                pass
            body.close()

        return one

    plain_one, traced_one = call(plain), call(traced)
    for _ in range(300):
        plain_one()
        traced_one()
    pipeline._pending.clear()

    parts: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        parts.setdefault(name, []).append(value)

    metrics = traced._metrics
    assert metrics is not None
    base = ((sc.HTTP_ROUTE, route), (sc.HTTP_METHOD, "GET"), (sc.HTTP_STATUS, 200))
    layouts = recorder.layouts

    def record(tree: Any) -> None:
        metrics.record(base, tree.stage_totals(), None, 1000, 0, 500, None, None)

    def emit(pair: tuple[Any, Any]) -> None:
        tree, tl = pair
        shape_middleware(tree, cfg.middleware_spans)
        attrs = root_attributes(tl.request, cfg)
        attrs[sc.HTTP_ROUTE] = route
        spans.emit(tree.root, f"GET {route}", attrs, (tl.trace_id, tl.span_id, None, None),
                   tl.wall_offset, (0, ""), None)  # fmt: skip

    def general(tl: Any) -> None:
        recorder.layouts = None
        try:
            recorder(tl)
        finally:
            recorder.layouts = layouts

    send = spans.send_pending
    gc_counts = [0, 0]
    for _ in range(blocks):
        for i, app_one in enumerate((plain_one, traced_one)):
            gc.collect()
            before = gc.get_stats()[0]["collections"]
            add(("plain request", "traced request")[i], _per_request(app_one, count))
            gc_counts[i] += gc.get_stats()[0]["collections"] - before
        timelines = list(pipeline._pending)
        pipeline._pending.clear()
        add("unsampled: totals without a tree", _per_item(lambda tl: stage_totals(tl, None),
                                                          timelines))  # fmt: skip
        trees = [build(tl, cfg, None) for tl in timelines]
        add("sampled, general path: tree", _per_item(lambda tl: build(tl, cfg, None), timelines))
        add("sampled, general path: metrics", _per_item(record, trees))
        spans.send_pending = lambda: None  # type: ignore[method-assign]
        pairs = list(zip(trees, timelines, strict=True))
        add("sampled, general path: span encoding", _per_item(emit, pairs))
        spans.send_pending = send  # type: ignore[method-assign]
        t0 = time.process_time_ns()
        spans.send_pending()
        add("sampled: OTLP request + HTTP send", (time.process_time_ns() - t0) / count / 1e3)
        add("recorder, sampled, general path", _per_item(general, timelines))
        spans.send_pending()
        add("recorder, sampled, replayed shape", _per_item(recorder, timelines))
        spans.send_pending()
        for tl in timelines:
            tl.sampled = False
        add("recorder, not sampled, replayed shape", _per_item(recorder, timelines))
        add("recorder, not sampled, general path", _per_item(general, timelines))

    print(f"route {route}, {blocks} blocks x {count} requests, CPU per request: median µs, and")
    print("median % of a plain Django request in the same block (steadier on a noisy machine)")
    print(f"Python {sys.version.split()[0]}, Django {django.get_version()}")
    plain_us = parts["plain request"]
    parts["request thread: flowtrace's share"] = [
        t - p for t, p in zip(parts["traced request"], plain_us, strict=True)
    ]
    for name, values in parts.items():
        share = statistics.median(v / p * 100 for v, p in zip(values, plain_us, strict=True))
        print(f"  {name:42} {statistics.median(values):8.1f} µs {share:6.1f} %")
    print(f"  gen0 collections per 1000 requests: plain {gc_counts[0] / blocks:.1f}, "
          f"traced {gc_counts[1] / blocks:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
