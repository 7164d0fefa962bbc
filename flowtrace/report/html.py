"""One self-contained HTML report: no script, no CDN, no network; works offline.

Colours come from ``semconv.STAGE_COLOURS`` (the Grafana dashboard's), and every
coloured mark also carries its stage name as text or a tooltip, so nothing
is conveyed by colour alone.
"""

from __future__ import annotations

from html import escape
from statistics import median
from typing import Any

from flowtrace import semconv as sc
from flowtrace.regression.compare import IMPROVED, REGRESSED, Comparison, compare
from flowtrace.regression.scenario import Thresholds
from flowtrace.report import Inputs
from flowtrace.report.spans import LogHistogram, Request, RouteStats

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1a1a1a;
max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .6rem;text-align:right;
border-bottom:1px solid #eee}th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;margin-right:1rem}.sw{display:inline-block;width:.9em;
height:.9em;vertical-align:-.1em;margin-right:.3em;border:1px solid #0003}
.stack{display:flex;height:1.3rem;background:#f3f3f3;margin:.15rem 0}.stack div{height:100%}
.route{font-family:ui-monospace,monospace;font-size:13px}
.wf{margin:.6rem 0 1.4rem;border:1px solid #ddd;padding:.4rem}.wf-row{display:flex;
align-items:center;height:1.35rem}.wf-name{width:32%;overflow:hidden;white-space:nowrap;
text-overflow:ellipsis;font-size:12px}.wf-track{position:relative;flex:1;height:1rem;
background:#fafafa}.bar{position:absolute;top:0;height:100%;min-width:1px}
.wf-dur{width:6rem;text-align:right;font-size:12px;font-variant-numeric:tabular-nums}
.sql{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.regressed{color:#b00020;font-weight:600}.improved{color:#0a6b2d;font-weight:600}
svg text{font-size:10px;fill:#444}
"""


def _colour(stage: str | None) -> str:
    return sc.STAGE_COLOURS.get(stage or "", "#bbbbbb")


def _legend() -> str:
    items = "".join(f'<span><i class="sw" style="background:{c}"></i>{escape(s)}</span>'
                    for s, c in sc.STAGE_COLOURS.items())  # fmt: skip
    return f'<p class="legend">{items}</p>'


def _stack(stage_ms: dict[str, float], scale_ms: float) -> str:
    parts = []
    for stage in (*sc.STAGES, *sorted(set(stage_ms) - set(sc.STAGES))):
        ms = stage_ms.get(stage, 0.0)
        if ms > 0:
            width = 100 * ms / scale_ms if scale_ms else 0
            parts.append(f'<div title="{escape(stage)}: {ms:.3f} ms" data-stage="{escape(stage)}" '
                         f'style="width:{width:.3f}%;background:{_colour(stage)}"></div>')  # fmt: skip
    return f'<div class="stack">{"".join(parts)}</div>'


def _histogram_svg(hist: LogHistogram) -> str:
    """Latency distribution: log-spaced bins between the fastest and slowest request."""
    if not hist.total:
        return ""
    buckets = sorted(hist.counts)
    low, high = buckets[0], buckets[-1]
    bins = 40
    width = max(1, (high - low + bins) // bins)
    counts = [0] * bins
    for bucket, n in hist.counts.items():
        counts[min((bucket - low) // width, bins - 1)] += n
    peak = max(counts)
    rects = []
    for i, n in enumerate(counts):
        if n:
            h = 60 * n / peak
            ms = hist.value(low + i * width) / 1e6
            rects.append(f'<rect x="{i * 10}" y="{62 - h:.1f}" width="9" height="{h:.1f}" '
                         f'fill="#0072B2"><title>~{ms:.3f} ms: {n}</title></rect>')  # fmt: skip
    first, last = hist.value(low) / 1e6, hist.value(high) / 1e6
    return (f'<svg role="img" aria-label="latency distribution" width="420" height="80" '
            f'viewBox="0 0 420 80">{"".join(rects)}<text x="0" y="76">{first:.2f} ms</text>'
            f'<text x="400" y="76" text-anchor="end">{last:.2f} ms (log scale)</text></svg>')  # fmt: skip


def _waterfall(request: Request) -> str:
    total = request.duration_ns or 1
    longest = max((b for b in request.bars if b.stage), key=lambda b: b.self_ns, default=None)
    rows = []
    for bar in request.bars:
        left, width = 100 * bar.offset_ns / total, 100 * bar.duration_ns / total
        mark = " ◀ most self time" if bar is longest else ""
        label = f"{bar.name} ({bar.stage or 'request'})"
        rows.append(
            f'<div class="wf-row"><div class="wf-name" style="padding-left:{bar.depth * 0.8}em" '
            f'title="{escape(label)}">{escape(bar.name)}</div><div class="wf-track">'
            f'<div class="bar" data-stage="{escape(bar.stage or "")}" '
            f'data-self-ms="{bar.self_ns / 1e6:.3f}" data-duration-ms="{bar.duration_ns / 1e6:.3f}" '
            f'title="{escape(label)}: {bar.duration_ns / 1e6:.3f} ms, self {bar.self_ns / 1e6:.3f} ms" '
            f'style="left:{left:.3f}%;width:{width:.3f}%;background:{_colour(bar.stage)}"></div>'
            f'</div><div class="wf-dur">{bar.duration_ns / 1e6:.2f} ms{mark}</div></div>'
        )
    status = f" → {escape(request.status)}" if request.status else ""
    status += " · cold start (one of its process's first requests)" if request.cold else ""
    return (f'<div class="wf" data-trace="{escape(request.trace_id)}"><b class="route">'
            f'{escape(request.route)}</b>{status} · {request.duration_ns / 1e6:.2f} ms · trace '
            f'<code>{escape(request.trace_id)}</code>{"".join(rows)}</div>')  # fmt: skip


def _route_table(routes: list[tuple[str, RouteStats]]) -> str:
    head = ("<tr><th>route</th><th>requests</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
            "<th>errors</th><th>queries/req</th><th>largest stage</th></tr>")  # fmt: skip
    rows = []
    for name, s in routes:
        top = max(s.stage_ns.items(), key=lambda kv: kv[1], default=("", 0))
        share = top[1] / (sum(s.stage_ns.values()) or 1)
        rows.append(f'<tr><td class="route">{escape(name)}</td><td>{s.count}</td>'
                    f"<td>{s.latency.percentile(.5) / 1e6:.2f}</td>"
                    f"<td>{s.latency.percentile(.95) / 1e6:.2f}</td>"
                    f"<td>{s.latency.percentile(.99) / 1e6:.2f}</td><td>{s.errors}</td>"
                    f"<td>{s.queries / s.count:.1f}</td><td>{escape(top[0])} {share:.0%}</td></tr>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>"


def _calls_tables(routes: list[tuple[str, RouteStats]]) -> str:
    """Per route, the heaviest SQL statements and templates: which query, which template."""
    parts = []
    for name, stats in routes:
        rows = []
        for kind, label in (("db", "query"), ("template", "template")):
            for text, calls, ns in stats.heaviest(kind):
                rows.append(f"<tr><td>{label}</td><td>{calls / stats.count:.1f}</td>"
                            f"<td>{ns / stats.count / 1e6:.3f}</td><td>{ns / calls / 1e6:.3f}</td>"
                            f'<td class="sql" style="text-align:left">{escape(text[:300])}</td></tr>')  # fmt: skip
        if not rows:
            continue
        duplicates = ""
        if stats.duplicates:
            count, statement = stats.worst_duplicate
            duplicates = (f'<p class="n1">N+1: {stats.duplicates / stats.count:.1f} repeated query '
                          f"executions per request; worst: {count} × "
                          f"<code>{escape(statement[:200])}</code></p>")  # fmt: skip
        parts.append(f'<h3 class="route">{escape(name)}</h3>{duplicates}<table><tr><th>kind</th>'
                     f"<th>calls/request</th><th>ms/request</th><th>ms/call</th><th>text</th></tr>"
                     f"{''.join(rows)}</table>")  # fmt: skip
    if not parts:
        return ""
    return (
        "<h2>Which query, which template (heaviest per route; templates include what "
        f"they include)</h2>{''.join(parts)}"
    )


def _spans_section(inputs: Inputs) -> str:
    routes = sorted(inputs.spans.routes.items(), key=lambda kv: -kv[1].count)
    if not routes:
        return ""
    means = {n: {st: ns / s.count / 1e6 for st, ns in s.stage_ns.items()} for n, s in routes}
    scale = max(sum(m.values()) for m in means.values()) or 1
    stacks = "".join(f'<tr><td class="route">{escape(n)}</td><td style="width:70%">'
                     f"{_stack(means[n], scale)}</td><td>{sum(means[n].values()):.2f} ms</td></tr>"
                     for n, _ in routes)  # fmt: skip
    hists = "".join(f'<h3 class="route">{escape(n)}</h3>{_histogram_svg(s.latency)}'
                    for n, s in routes)  # fmt: skip
    slowest = sorted((r for _, s in routes for r in s.slowest), reverse=True)[:20]
    return (f"<h2>Where time goes, per route (mean exclusive ms per stage)</h2>{_legend()}"
            f"<table>{stacks}</table>{_route_table(routes)}{_calls_tables(routes)}"
            f"<h2>Latency distribution</h2>{hists}"
            f"<h2>Slowest requests</h2>{''.join(_waterfall(r) for r in slowest)}")  # fmt: skip


def _bench_medians(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {route: {k: median(v) / 1e6 for k, v in e["timings_ns"].items()
                    if k not in ("request", "cpu")}
            for route, e in result["routes"].items()}  # fmt: skip


def _comparison(comparison: Comparison, base: dict[str, Any], cur: dict[str, Any]) -> str:
    b, c = _bench_medians(base), _bench_medians(cur)
    scale = max(sum(m.values()) for m in (*b.values(), *c.values())) or 1
    bars = "".join(f'<tr><td class="route">{escape(route)}</td><td>baseline<br>current</td>'
                   f'<td style="width:65%">{_stack(b[route], scale)}{_stack(c[route], scale)}</td></tr>'
                   for route in sorted(set(b) & set(c)))  # fmt: skip
    rows = []
    for row in comparison.rows:
        unit = 1e6 if row.kind == "timing" else 1
        fmt = ".3f" if row.kind == "timing" else "g"
        rel = f" ({row.relative:+.1%})" if row.relative is not None and row.kind == "timing" else ""
        rows.append(f'<tr><td class="route">{escape(row.route)}</td><td>{escape(row.metric)}</td>'
                    f"<td>{row.baseline / unit:{fmt}}</td><td>{row.current / unit:{fmt}}</td>"
                    f"<td>{row.shift / unit:+{fmt}}{rel}</td>"
                    f'<td class="{escape(row.verdict)}">{escape(row.verdict)}</td></tr>')  # fmt: skip
    flagged = sum(r.verdict in (REGRESSED, IMPROVED) for r in comparison.rows)
    return (f"<h2>Comparison: {escape(comparison.baseline)} → {escape(comparison.current)}</h2>"
            f"<p>{len(comparison.regressions)} regressed, {len(comparison.improvements)} improved "
            f"({flagged} flagged of {len(comparison.rows)}); timings in ms.</p>{_legend()}"
            f"<table>{bars}</table><table><tr><th>route</th><th>metric</th><th>baseline</th>"
            f"<th>current</th><th>change</th><th>verdict</th></tr>{''.join(rows)}</table>")  # fmt: skip


def _benches_section(inputs: Inputs) -> str:
    if len(inputs.benches) >= 2:
        (bp, base), (cp, cur) = inputs.benches[:2]
        stored = cur.get("thresholds") or {}
        thresholds = Thresholds(float(stored.get("rel", 0.1)), float(stored.get("abs_ms", 0.05)),
                                tuple(stored.get("overrides", ())))  # fmt: skip
        return _comparison(compare(base, cur, (bp, cp), thresholds, True), base, cur)
    out = []
    for path, result in inputs.benches:
        medians = _bench_medians(result)
        scale = max(sum(m.values()) for m in medians.values()) or 1
        rows = "".join(f'<tr><td class="route">{escape(r)}</td><td style="width:70%">'
                       f"{_stack(m, scale)}</td><td>{sum(m.values()):.3f} ms</td></tr>"
                       for r, m in sorted(medians.items()))  # fmt: skip
        out.append(
            f"<h2>Bench {escape(path)} (median ms per stage)</h2>{_legend()}<table>{rows}</table>"
        )
    return "".join(out)


def render(inputs: Inputs, title: str = "flowtrace report") -> str:
    sources = ", ".join(inputs.span_files + [p for p, _ in inputs.benches])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><p>From {escape(sources)}.</p>"
            f"{_spans_section(inputs)}{_benches_section(inputs)}</body></html>\n")  # fmt: skip
