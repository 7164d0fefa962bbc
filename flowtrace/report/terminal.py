"""The terminal summary: per route, counts, percentiles, stage shares, slowest traces."""

from __future__ import annotations

from statistics import median
from typing import Any, TextIO

from flowtrace import semconv as sc
from flowtrace.regression.stats import nearest_rank
from flowtrace.report import Inputs
from flowtrace.report.spans import PERCENTILES, LogHistogram

_BAR = 24


def _stage_lines(stage_ns: dict[str, float], n: int, out: TextIO) -> None:
    total = sum(stage_ns.values()) or 1
    for stage in (*sc.STAGES, *sorted(set(stage_ns) - set(sc.STAGES))):
        ns = stage_ns.get(stage)
        if ns:
            share = ns / total
            bar = "#" * max(1, round(share * _BAR))
            out.write(f"  {stage:15} {ns / n / 1e6:9.3f} ms  {share:6.1%}  {bar}\n")


def _calls(title: str, rows: list[tuple[str, int, int]], n: int, out: TextIO) -> None:
    if not rows:
        return
    out.write(f"  {title} (calls/request, total ms/request, mean ms/call):\n")
    for text, calls, ns in rows:
        mean = ns / calls / 1e6
        out.write(f"    {calls / n:6.1f}  {ns / n / 1e6:8.3f}  {mean:8.3f}  {text[:110]}\n")


def render_spans(inputs: Inputs, out: TextIO) -> None:
    report = inputs.spans
    routes = sorted(report.routes.items(), key=lambda kv: -kv[1].count)
    if not routes:
        out.write("No flowtrace requests found.\n")
        return
    for name, stats in routes:
        n = stats.count
        errors = f"  errors {stats.errors}" if stats.errors else ""
        out.write(f"\n{name}  n={n}  {_latency(stats.latency)}  "
                  f"queries/req {stats.queries / n:.1f}{errors}\n")  # fmt: skip
        out.write("  mean exclusive time per request, by stage:\n")
        _stage_lines(dict(stats.stage_ns), n, out)
        _calls("heaviest queries", stats.heaviest("db"), n, out)
        _calls("heaviest templates (including what they include)", stats.heaviest("template"),
               n, out)  # fmt: skip
        if stats.duplicates:
            count, statement = stats.worst_duplicate
            out.write(f"  N+1: {stats.duplicates / n:.1f} repeated query executions/request "
                      f"(worst: {count} × {statement[:90]})\n")  # fmt: skip
        if stats.slowest:
            skipped = f", {stats.cold_skipped} cold start(s) left out" if stats.cold_skipped else ""
            out.write(f"  slowest {len(stats.slowest)} requests{skipped}:\n")
        for request in sorted(stats.slowest, reverse=True):
            cold = "  (cold start)" if request.cold else ""
            out.write(f"    {request.duration_ns / 1e6:8.2f} ms  trace {request.trace_id}{cold}\n")
    _duplicates_summary(routes, out)
    out.write(f"\n{PERCENTILES}\n")
    if report.export_cost_us is not None:
        out.write(f"\nflowtrace's own cost: {report.export_cost_us:.1f} µs of export-thread CPU "
                  "per request (the process's mean, as its last trace said)\n")  # fmt: skip


def _latency(hist: LogHistogram) -> str:
    cells = (f"p{round(q * 100)} {hist.percentile(q) / 1e6:.2f}" for q in (0.5, 0.95, 0.99))
    return f"latency ms: {'  '.join(cells)}  max {hist.high / 1e6:.2f}"


def _duplicates_summary(routes: list[tuple[str, Any]], out: TextIO) -> None:
    """The routes with the most repeated queries per request (N+1), worst first."""
    worst = sorted(((s.duplicates / s.count, name, s) for name, s in routes if s.duplicates),
                   key=lambda row: -row[0])  # fmt: skip
    if not worst:
        return
    out.write("\nN+1 queries, routes with the most repeated executions per request:\n")
    for per_request, name, stats in worst[:10]:
        count, statement = stats.worst_duplicate
        out.write(f"  {per_request:7.1f}  {name}  ({count} × {statement[:80]})\n")


def render_bench(path: str, result: dict[str, Any], out: TextIO) -> None:
    out.write(f"\n== bench {path} ({result.get('created', '?')})\n")
    for route, entry in sorted(result["routes"].items()):
        timings = entry["timings_ns"]
        request = timings["request"]
        n = len(request)
        cells = "  ".join(f"p{round(q * 100)} {nearest_rank(request, q) / 1e6:.3f}"
                          for q in (0.5, 0.95, 0.99))  # fmt: skip
        out.write(f"\n{route}  n={n}  latency ms: {cells}  max {max(request) / 1e6:.3f}\n")
        out.write("  median time per request, by stage:\n")
        stages = {k: median(v) * n for k, v in timings.items() if k not in ("request", "cpu")}
        _stage_lines(stages, n, out)


def render(inputs: Inputs, out: TextIO) -> None:
    if inputs.span_files:
        out.write(f"== spans {', '.join(inputs.span_files)}: {inputs.spans.spans} spans\n")
        render_spans(inputs, out)
    for path, result in inputs.benches:
        render_bench(path, result, out)
    if len(inputs.benches) >= 2:  # the first two: baseline and current, as the HTML shows
        from flowtrace.regression import report

        out.write("\n== comparison (first file: baseline, second: current)\n")
        report.terminal(inputs.comparison(), out)
