"""One self-contained HTML report: no script, no CDN, no network; works offline.

Colours come from ``semconv.STAGE_COLOURS`` (the Grafana dashboard's), and every
coloured mark also carries its stage name as text or a tooltip, so nothing
is conveyed by colour alone.
"""

from __future__ import annotations

import math
from html import escape
from statistics import median
from typing import Any

from flowtrace import semconv as sc
from flowtrace.regression.compare import IMPROVED, REGRESSED, Comparison
from flowtrace.report import Inputs
from flowtrace.report.spans import PERCENTILES, LogHistogram, Request, RouteStats

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1a1a1a;
max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .6rem;text-align:right;
border-bottom:1px solid #eee}th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;margin-right:1rem}.sw{display:inline-block;width:.9em;
height:.9em;vertical-align:-.1em;margin-right:.3em;border:1px solid #0003}
.stack{display:flex;height:1.3rem;background:#f3f3f3;margin:.15rem 0}.stack div{height:100%}
.route{font-family:ui-monospace,monospace;font-size:13px}
.wf{margin:.6rem 0 1rem;border:1px solid #ddd;border-left:4px solid #ddd;padding:.4rem}
.wf summary{cursor:pointer}.wf.error{border-left-color:#b00020}
.status-error{color:#fff;background:#b00020;border-radius:3px;padding:0 .35em;font-weight:600}
.wf-row{display:flex;align-items:center;height:1.35rem}
.wf-name{flex:0 0 30%;box-sizing:border-box;overflow:hidden;white-space:nowrap;
text-overflow:ellipsis;font-size:12px;padding-right:.5rem}
.wf-track{position:relative;flex:1 1 auto;min-width:0;height:1rem;background:#fafafa}
.bar{position:absolute;top:0;height:100%;min-width:1px}
.wf-dur{flex:0 0 5.5rem;text-align:right;font-size:12px;white-space:nowrap;
font-variant-numeric:tabular-nums}
.wf-mark{flex:0 0 7.5rem;font-size:12px;white-space:nowrap;padding-left:.4rem;color:#555}
.sql{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.regressed{color:#b00020;font-weight:600}.improved{color:#0a6b2d;font-weight:600}
td.errors{color:#b00020;font-weight:600}
.hist{width:100%;max-width:1000px;height:auto;display:block}.hist text{font-size:10px;fill:#444}
.hist .p50{stroke:#1a1a1a;stroke-width:1.5}.hist .p95{stroke:#b00020;stroke-width:1.5;
stroke-dasharray:4 3}.hist-note{font-size:12px;color:#444;margin:0 0 .8rem}
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


def duration(ns: float) -> str:
    """A short duration: µs below a millisecond (0.00 ms says nothing), else ms."""
    if ns < 10_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000:
        return f"{ns / 1e3:.0f} µs"
    return f"{ns / 1e6:.2f} ms"


class LatencyAxis:
    """One log-scaled latency axis shared by every route's histogram, so their
    shapes, ticks and markers can be compared at a glance."""

    LEFT, RIGHT, WIDTH, TOP, BOTTOM, BINS = 44.0, 890.0, 900, 6.0, 62.0, 90

    def __init__(self, hists: list[LogHistogram]) -> None:
        low = min(h.low for h in hists if h.total) / 1e6
        high = max(h.high for h in hists if h.total) / 1e6
        self.low = 10 ** math.floor(math.log10(max(low, 1e-3)))
        self.high = 10 ** math.ceil(math.log10(max(high, self.low * 10)))
        if self.high <= self.low * 1.0001:
            self.high = self.low * 10

    def x(self, ms: float) -> float:
        share = math.log(max(ms, self.low) / self.low) / math.log(self.high / self.low)
        return self.LEFT + (self.RIGHT - self.LEFT) * min(share, 1.0)

    def ticks(self) -> list[float]:
        decades = round(math.log10(self.high / self.low))
        steps = (1, 2, 5) if decades <= 4 else (1,)
        out: list[float] = []
        for exponent in range(round(math.log10(self.low)), round(math.log10(self.high)) + 1):
            out.extend(step * 10.0**exponent for step in steps
                       if step * 10.0**exponent <= self.high * 1.0001)  # fmt: skip
        return out

    def svg(self, hist: LogHistogram) -> str:
        counts = [0] * self.BINS
        span = self.RIGHT - self.LEFT
        for bucket, n in hist.counts.items():
            x = self.x(min(max(hist.value(bucket), hist.low), hist.high) / 1e6)
            counts[min(int((x - self.LEFT) / span * self.BINS), self.BINS - 1)] += n
        peak = max(counts) or 1
        height = self.BOTTOM - self.TOP
        width = span / self.BINS
        parts = [f'<line x1="{self.LEFT}" y1="{self.BOTTOM}" x2="{self.RIGHT}" y2="{self.BOTTOM}" '
                 f'stroke="#999"/><line x1="{self.LEFT}" y1="{self.TOP}" x2="{self.LEFT}" '
                 f'y2="{self.BOTTOM}" stroke="#999"/>'
                 f'<text x="{self.LEFT - 4}" y="{self.TOP + 8}" text-anchor="end">{peak}</text>'
                 f'<text x="{self.LEFT - 4}" y="{self.BOTTOM}" text-anchor="end">0</text>']  # fmt: skip
        for i, n in enumerate(counts):
            if n:
                h = height * n / peak
                x = self.LEFT + i * width
                parts.append(f'<rect x="{x:.1f}" y="{self.BOTTOM - h:.1f}" width="{width - 1:.1f}" '
                             f'height="{h:.1f}" fill="#0072B2"><title>{n} request(s)</title>'
                             "</rect>")  # fmt: skip
        for tick in self.ticks():
            x = self.x(tick)
            parts.append(f'<line x1="{x:.1f}" y1="{self.BOTTOM}" x2="{x:.1f}" '
                         f'y2="{self.BOTTOM + 4}" stroke="#999"/><text class="tick" x="{x:.1f}" '
                         f'y="{self.BOTTOM + 15}" text-anchor="middle">{tick:g}</text>')  # fmt: skip
        for name in ("p50", "p95"):
            ms = hist.percentile(int(name[1:]) / 100) / 1e6
            x = self.x(ms)
            parts.append(f'<line class="{name}" data-ms="{ms:.4f}" x1="{x:.1f}" y1="{self.TOP}" '
                         f'x2="{x:.1f}" y2="{self.BOTTOM}"><title>{name} {ms:.3f} ms</title>'
                         "</line>")  # fmt: skip
        return (f'<svg class="hist" role="img" aria-label="latency distribution" '
                f'viewBox="0 0 {self.WIDTH} 80" data-low-ms="{self.low:g}" '
                f'data-high-ms="{self.high:g}">{"".join(parts)}</svg>')  # fmt: skip


def _histogram(axis: LatencyAxis, hist: LogHistogram) -> str:
    p50, p95 = hist.percentile(0.5), hist.percentile(0.95)
    return (
        f'{axis.svg(hist)}<p class="hist-note">requests per bin (y, up to the peak) by '
        f"latency in ms (x, log scale, the same for every route); solid line p50 "
        f"{duration(p50)}, dashed red p95 {duration(p95)}, slowest {duration(hist.high)}</p>"
    )


def _is_error(status: str) -> bool:
    return status.startswith("5")


def _waterfall(request: Request, collapse_after: int = 30) -> str:
    total = request.duration_ns or 1
    longest = max((b for b in request.bars if b.stage), key=lambda b: b.self_ns, default=None)
    rows = []
    for bar in request.bars:
        left, width = 100 * bar.offset_ns / total, 100 * bar.duration_ns / total
        mark = "◀ most self time" if bar is longest else ""
        label = f"{bar.name} ({bar.stage or 'request'})"
        rows.append(
            f'<div class="wf-row" data-depth="{bar.depth}"><div class="wf-name" '
            f'style="padding-left:{bar.depth * 0.8}em" title="{escape(label)}">'
            f'{escape(bar.name)}</div><div class="wf-track">'
            f'<div class="bar" data-stage="{escape(bar.stage or "")}" '
            f'data-self-ms="{bar.self_ns / 1e6:.4f}" data-duration-ms="{bar.duration_ns / 1e6:.4f}" '
            f'title="{escape(label)}: {duration(bar.duration_ns)}, self {duration(bar.self_ns)}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%;background:{_colour(bar.stage)}"></div>'
            f'</div><div class="wf-dur">{duration(bar.duration_ns)}</div>'
            f'<div class="wf-mark">{mark}</div></div>'
        )
    error = _is_error(request.status)
    status = ""
    if request.status:
        badge = ' class="status-error"' if error else ""
        status = f" → <span{badge}>{escape(request.status)}</span>"
    status += " · cold start (one of its process's first requests)" if request.cold else ""
    opened = " open" if len(rows) <= collapse_after else ""
    folded = "" if opened else f" · {len(rows)} spans, click to unfold"
    return (f'<details class="wf{" error" if error else ""}" data-trace="{escape(request.trace_id)}"'
            f'{opened}><summary><b class="route">{escape(request.route)}</b>{status} · '
            f"{duration(request.duration_ns)} · trace <code>{escape(request.trace_id)}</code>"
            f'{folded}</summary>{"".join(rows)}</details>')  # fmt: skip


def _anchor(index: int) -> str:
    return f"route-{index}"


def _route_index(routes: list[tuple[str, RouteStats]]) -> str:
    head = ("<tr><th>route</th><th>requests</th><th>p50</th><th>p95</th><th>p99</th>"
            "<th>slowest</th><th>errors</th><th>queries/req</th><th>largest stage</th></tr>")  # fmt: skip
    rows = []
    for index, (name, s) in enumerate(routes):
        top = max(s.stage_ns.items(), key=lambda kv: kv[1], default=("", 0))
        share = top[1] / (sum(s.stage_ns.values()) or 1)
        errors = f'<td class="errors">{s.errors}</td>' if s.errors else "<td>0</td>"
        rows.append(f'<tr><td class="route"><a href="#{_anchor(index)}">{escape(name)}</a></td>'
                    f"<td>{s.count}</td><td>{duration(s.latency.percentile(.5))}</td>"
                    f"<td>{duration(s.latency.percentile(.95))}</td>"
                    f"<td>{duration(s.latency.percentile(.99))}</td>"
                    f"<td>{duration(s.latency.high)}</td>{errors}"
                    f"<td>{s.queries / s.count:.1f}</td><td>{escape(top[0])} {share:.0%}</td></tr>")  # fmt: skip
    return (
        f'<nav id="routes"><table>{head}{"".join(rows)}</table></nav>'
        f'<p class="hist-note">{escape(PERCENTILES)}.</p>'
    )


def _calls_table(stats: RouteStats) -> str:
    """The heaviest SQL statements and templates of one route: which query, which template."""
    rows = []
    for kind, label in (("db", "query"), ("template", "template")):
        for text, calls, ns in stats.heaviest(kind):
            rows.append(f"<tr><td>{label}</td><td>{calls / stats.count:.1f}</td>"
                        f"<td>{ns / stats.count / 1e6:.3f}</td><td>{ns / calls / 1e6:.3f}</td>"
                        f'<td class="sql" style="text-align:left">{escape(text[:300])}</td></tr>')  # fmt: skip
    duplicates = ""
    if stats.duplicates:
        count, statement = stats.worst_duplicate
        duplicates = (f'<p class="n1">N+1: {stats.duplicates / stats.count:.1f} repeated query '
                      f"executions per request; worst: {count} × "
                      f"<code>{escape(statement[:200])}</code></p>")  # fmt: skip
    if not rows:
        return duplicates
    return (f"{duplicates}<h3>Which query, which template (heaviest; a template includes what "
            f"it includes)</h3><table><tr><th>kind</th><th>calls/request</th><th>ms/request</th>"
            f"<th>ms/call</th><th>text</th></tr>{''.join(rows)}</table>")  # fmt: skip


def _route_section(index: int, name: str, stats: RouteStats, axis: LatencyAxis) -> str:
    slowest = sorted(stats.slowest, reverse=True)
    skipped = (f" ({stats.cold_skipped} cold start(s) left out; --include-cold-starts shows "
               "them)" if stats.cold_skipped else "")  # fmt: skip
    return (f'<section class="route-section" id="{_anchor(index)}" data-route="{escape(name)}">'
            f'<h2 class="route">{escape(name)}</h2><h3>Latency distribution</h3>'
            f"{_histogram(axis, stats.latency)}{_calls_table(stats)}"
            f"<h3>Slowest {len(slowest)} request(s) of this route{skipped}</h3>"
            f'{"".join(_waterfall(r) for r in slowest)}'
            f'<p><a href="#routes">↑ all routes</a></p></section>')  # fmt: skip


def _spans_section(inputs: Inputs) -> str:
    routes = sorted(inputs.spans.routes.items(), key=lambda kv: -kv[1].count)
    if not routes:
        return ""
    means = {n: {st: ns / s.count / 1e6 for st, ns in s.stage_ns.items()} for n, s in routes}
    scale = max(sum(m.values()) for m in means.values()) or 1
    stacks = "".join(f'<tr><td class="route">{escape(n)}</td><td style="width:70%">'
                     f"{_stack(means[n], scale)}</td><td>{sum(means[n].values()):.2f} ms</td></tr>"
                     for n, _ in routes)  # fmt: skip
    axis = LatencyAxis([s.latency for _, s in routes])
    sections = "".join(_route_section(i, n, s, axis) for i, (n, s) in enumerate(routes))
    return (f"<h2>Routes</h2>{_route_index(routes)}"
            f"<h2>Where time goes, per route (mean exclusive ms per stage)</h2>{_legend()}"
            f"<table>{stacks}</table>{sections}")  # fmt: skip


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
        return _comparison(inputs.comparison(), inputs.benches[0][1], inputs.benches[1][1])
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
