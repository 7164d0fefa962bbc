"""flowtrace report: a recorded gunicorn run, summarised on the terminal and as HTML,
checked in a real headless Chromium; and a 100 MB span file in bounded memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import browser
from tests.servers import gunicorn

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
DELAY_MS = 150
#: Printed by the terminal summary of the test session (tests/conftest.py).
REPORT_FIGURES: dict[str, Any] = {}


def _flowtrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowtrace.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Spans of a real gunicorn run written by the embedded OTLP-JSON file exporter."""
    spans = tmp_path_factory.mktemp("report") / "spans.otlp.jsonl"
    env = {"FLOWTRACE_OUTPUT_FILE": str(spans), "OTEL_SERVICE_NAME": "report-test",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "50",
           "FLOWTRACE_EXPORT_INTERVAL": "0.02", "FLOWTRACE_STRICT": "1"}  # fmt: skip
    with gunicorn("tests.testproject.wsgi:traced", env) as server:
        for _ in range(10):
            for path in ("/hello", "/db", "/stream", "/items/3/"):
                assert server.request(path)[0] == 200
        assert server.request(f"/t/slow-query?ms={DELAY_MS}")[0] == 200
        assert server.request("/boom")[0] == 500
    return spans  # gunicorn's SIGTERM flushed the exporter


@pytest.fixture(scope="module")
def report(recorded: Path) -> tuple[Path, str]:
    done = _flowtrace("report", recorded.name, "--html", "report.html", cwd=recorded.parent)
    assert done.returncode == 0, done.stderr
    return recorded.parent / "report.html", done.stdout


def test_terminal_summary_per_route_and_stage(report: tuple[Path, str]) -> None:
    _, out = report
    assert re.search(r"GET /db  n=1[01]  latency ms: p50 [\d.]+  p95 [\d.]+  p99 [\d.]+  "
                     r"max [\d.]+  queries/req 2\.0", out)  # fmt: skip
    assert "percentiles are nearest-rank" in out
    assert re.search(r"GET /t/slow-query  n=1 .*\n(  .*\n)*  db +1[5-9]\d\.\d+ ms", out)
    assert "GET /boom  n=1" in out and "errors 1" in out
    slow = re.findall(r"\n    +[\d.]+ ms  trace ([0-9a-f]{32})", out)
    assert len(slow) >= 6 and "HTML report: " in out
    assert "mean exclusive time per request, by stage:" in out and "slowest " in out
    # which query: the heaviest statements of a route, with their text
    assert re.search(
        r"GET /db .*\n(  .*\n)*  heaviest queries .*\n +1\.0 .*SELECT .*demo_item", out
    )


def _ancestors(bars: list[dict[str, Any]], index: int) -> set[int]:
    """Indices of the bars that contain bar ``index`` (depth-first order)."""
    out, depth = set(), bars[index]["depth"]
    for i in range(index - 1, -1, -1):
        if bars[i]["depth"] < depth:
            out.add(i)
            depth = bars[i]["depth"]
    return out


_WATERFALLS = """
(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  return Array.from(document.querySelectorAll('.wf')).map(wf => ({
    route: wf.querySelector('.route').textContent,
    section: wf.closest('section').dataset.route,
    error: wf.classList.contains('error'),
    bars: Array.from(wf.querySelectorAll('.wf-row')).map(row => {
      const bar = row.querySelector('.bar'), track = row.querySelector('.wf-track');
      const b = bar.getBoundingClientRect(), t = track.getBoundingClientRect();
      return {stage: bar.dataset.stage, self: parseFloat(bar.dataset.selfMs),
              width: b.width, left: b.left, right: b.right,
              trackLeft: t.left, trackRight: t.right, depth: parseInt(row.dataset.depth)};
    })}));
})()
"""

# Every visible text box on the page, clipped to its overflow-hidden box; pairs of
# boxes from different elements that intersect by more than a pixel are overlaps.
_OVERLAPS = """
(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, parent = node.parentElement;
    if (!node.textContent.trim() || parent.closest('title, style')) continue;
    let clip = null;
    for (let el = parent; el; el = el.parentElement) {
      if (getComputedStyle(el).overflowX === 'hidden') {
        clip = el.getBoundingClientRect(); break; }
    }
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      let {left, right, top, bottom} = r;
      if (clip) { left = Math.max(left, clip.left); right = Math.min(right, clip.right); }
      if (right - left > 0.5 && bottom - top > 0.5)
        boxes.push({left, right, top, bottom, text: node.textContent.slice(0, 40), parent});
    }
  }
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.parent === b.parent) continue;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) out.push([a.text, b.text]);
  }
  return {count: boxes.length, overlaps: out.slice(0, 10)};
})()
"""

_HISTOGRAMS = """
Array.from(document.querySelectorAll('svg.hist')).map(svg => ({
  low: svg.dataset.lowMs, high: svg.dataset.highMs,
  ticks: Array.from(svg.querySelectorAll('text.tick')).map(t =>
    [t.textContent, Math.round(t.getBoundingClientRect().left)]),
  p50: parseFloat(svg.querySelector('line.p50').getBoundingClientRect().left),
  p95: parseFloat(svg.querySelector('line.p95').getBoundingClientRect().left),
  bars: svg.querySelectorAll('rect').length}))
"""


def test_html_report_in_headless_chromium(report: tuple[Path, str]) -> None:
    path = browser.binary()
    if path is None:
        assert not os.environ.get("CI"), "chromium must be installed in CI (scripts/system-deps.sh)"
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs it as root)")
    html, _ = report
    with browser.chromium(path) as page:
        page.open(html.as_uri())
        assert page.log.console_errors == [] and page.log.exceptions == []
        assert page.log.requests == [html.as_uri()]  # the file itself, nothing else
        waterfalls = page.evaluate(_WATERFALLS)
        layout = page.evaluate(_OVERLAPS)
        histograms = page.evaluate(_HISTOGRAMS)
        stacks = page.evaluate("document.querySelectorAll('.stack div').length")
        index = page.evaluate("Array.from(document.querySelectorAll('#routes a')).map(a => "
                              "document.querySelector(a.getAttribute('href')) "
                              "!== null)")  # fmt: skip
        title = page.evaluate("document.title")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(str(ARTIFACTS / "report.png"))
    assert title == "flowtrace report" and stacks >= 20
    # layout, measured from the DOM: no text box overlaps another
    assert layout["count"] > 200 and layout["overlaps"] == [], layout["overlaps"]
    # every waterfall row's track spans the same pixels as the root's, so a child's bar
    # lies within its parent's on one time axis, whatever its depth
    for wf in waterfalls:
        bars = wf["bars"]
        assert wf["route"] == wf["section"]  # slowest requests are chosen per route
        for bar in bars:
            assert abs(bar["trackLeft"] - bars[0]["trackLeft"]) < 0.5
            assert abs(bar["trackRight"] - bars[0]["trackRight"]) < 0.5
        for i, bar in enumerate(bars):
            parent = max((j for j in _ancestors(bars, i)), default=None)
            if parent is not None:
                assert bar["left"] >= bars[parent]["left"] - 0.5
                assert bar["right"] <= bars[parent]["right"] + 1.5  # min-width 1px
    routes = {wf["route"] for wf in waterfalls}
    assert {"GET /hello", "GET /db", "GET /boom", "GET /t/slow-query"} <= routes
    assert [wf["error"] for wf in waterfalls if wf["route"] == "GET /boom"] == [True]
    assert not any(wf["error"] for wf in waterfalls if wf["route"] != "GET /boom")
    assert index and all(index)  # the route index links to every route's section
    # histograms share one axis: the same ticks at the same x, p50 left of p95
    assert len(histograms) == len(index) >= 5
    assert all(h["ticks"] == histograms[0]["ticks"] for h in histograms)
    assert len(histograms[0]["ticks"]) >= 3
    assert all(h["p50"] <= h["p95"] and h["bars"] >= 1 for h in histograms)
    slow = next(w for w in waterfalls if w["route"] == "GET /t/slow-query")
    bars = slow["bars"]
    db = max(range(len(bars)), key=lambda i: bars[i]["self"])
    assert bars[db]["stage"] == "db" and bars[db]["self"] >= DELAY_MS
    others = set(range(len(bars))) - _ancestors(bars, db) - {db}
    assert others and all(bars[db]["width"] > 5 * bars[i]["width"] for i in others)
    assert bars[db]["width"] > 0.6 * bars[0]["width"]  # most of the request's own bar
    assert (ARTIFACTS / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_durations_below_a_millisecond_are_in_microseconds(report: tuple[Path, str]) -> None:
    from flowtrace.report.html import duration

    assert [duration(ns) for ns in (3_200, 523_000, 12_345_678)] == ["3.2 µs", "523 µs", "12.35 ms"]
    html = report[0].read_text()
    assert "0.00 ms" not in html and re.search(r'class="wf-dur">\d+\.\d µs<', html)


def _grow(source: Path, target: Path, size: int) -> int:
    """Copies of the recorded batches, each with fresh trace ids, up to ``size`` bytes."""
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    ids = re.compile(r'("traceId": ?")[0-9a-f]{8}')
    written = copies = 0
    with open(target, "w", encoding="utf-8") as out:
        while written < size:
            prefix = rf"\g<1>{copies:08x}"
            for line in lines:
                text = ids.sub(prefix, line) + "\n"
                out.write(text)
                written += len(text)
            copies += 1
    return copies


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child
# spawned from a big pytest process would report pytest's peak instead of its own.
_PEAK_RSS = "import re, sys; from flowtrace.cli import main; code = main(sys.argv[1:]); " \
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); " \
    "print('maxrss_kb', hwm, file=sys.stderr); sys.exit(code)"  # fmt: skip


def _report_rss(path: Path) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, "report", "--progress", str(path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stderr.rsplit("maxrss_kb", 1)[1]), done.stdout, done.stderr


def test_a_100_mb_span_file_is_streamed_in_bounded_memory(recorded: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.otlp.jsonl"
    copies = _grow(recorded, big, 100 * 2**20)
    small_kb, _, _ = _report_rss(recorded)
    big_kb, out, err = _report_rss(big)
    assert "100%" in err and "100/100 MiB" in err  # the progress bar reached the end
    match = re.search(r"GET /db  n=(\d+)", out)
    assert match and int(match.group(1)) >= 10 * copies
    assert big_kb - small_kb < 40 * 1024, (small_kb, big_kb)  # not proportional to 100 MB
    REPORT_FIGURES.update(copies=copies, small_rss_kb=small_kb, big_rss_kb=big_kb)


def test_two_bench_results_render_the_comparison_with_verdicts(tmp_path: Path) -> None:
    from tests.test_regression import _result

    base, current = _result(2.0, seed=1), _result(2.6, queries=3, seed=2)
    for name, data in (("base.json", base), ("current.json", current)):
        (tmp_path / name).write_text(json.dumps(data))
    done = _flowtrace("report", "base.json", "current.json", "--html", "cmp.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "cmp.html").read_text()
    # the terminal shows the verdicts too, not just two summaries
    assert "== comparison (first file: baseline, second: current)" in done.stdout
    assert re.search(r"GET /x +view .*▲ regressed", done.stdout), done.stdout
    assert re.search(r"GET /x +queries +2 +3 +\+1", done.stdout), done.stdout
    assert "flowtrace: 1 regression" in done.stdout or "regression(s)" in done.stdout
    assert "Comparison: base.json → current.json" in page
    assert re.search(r'<td class="route">GET /x</td><td>view</td>.*?class="regressed"', page)
    assert re.search(r"<td>queries</td><td>2</td><td>3</td><td>\+1</td>", page)
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_and_dashboard_share_stage_colours() -> None:
    from flowtrace import semconv as sc

    dashboard = json.loads((ROOT / "dashboards" / "flowtrace.json").read_text())
    colours = set()
    for panel in dashboard["panels"]:
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "color":
                    colours.add((override["matcher"]["options"], prop["value"]["fixedColor"]))
    assert colours == set(sc.STAGE_COLOURS.items())


def test_bad_report_inputs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "spans.jsonl").write_text('{"resourceSpans": [}\n')
    (tmp_path / "empty.jsonl").write_text("")
    cases = (("spans.jsonl", "line 1: not an OTLP-JSON export"),
             ("empty.jsonl", "empty file"), ("missing.jsonl", "cannot read"))  # fmt: skip
    for name, message in cases:
        done = _flowtrace("report", name, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_html_names_the_heaviest_queries_and_templates(report: tuple[Path, str]) -> None:
    html = report[0].read_text()
    assert "Which query, which template" in html
    assert re.search(r'<h2 class="route">GET /db</h2>.*?<td class="sql"[^>]*>SELECT .*?demo_item',
                     html, re.S)  # fmt: skip
    assert re.search(r"<td>template</td>.*?demo/items\.html", html, re.S)


def test_percentiles_are_nearest_rank_and_reach_the_tail_on_small_samples() -> None:
    from flowtrace.regression.stats import nearest_rank
    from flowtrace.report.spans import LogHistogram

    values = [float(ms * 1_000_000) for ms in range(1, 21)]  # 1..20 ms
    hist = LogHistogram()
    for value in values:
        hist.add(value)
    assert hist.percentile(0.99) == values[-1] == hist.high  # p99 of 20 is the slowest
    assert abs(hist.percentile(0.95) - values[18]) <= 0.01 * values[18]
    assert abs(hist.percentile(0.5) - values[9]) <= 0.01 * values[9]
    assert hist.percentile(0.0) == values[0] and hist.percentile(1.0) == values[-1]
    assert [nearest_rank(values, q) for q in (0.5, 0.95, 0.99, 1.0)] == [
        values[9],
        values[18],
        values[19],
        values[19],
    ]
    assert LogHistogram().percentile(0.5) == 0.0


def test_output_file_takes_the_spans_and_otlp_still_gets_the_metrics(tmp_path: Path) -> None:
    """FLOWTRACE_OUTPUT_FILE replaces the span exporter only: with an OTLP endpoint set,
    metrics still go there (they follow OTEL_METRICS_EXPORTER)."""
    from tests.otlp_receiver import running_receiver
    from tests.servers import otel_env

    spans = tmp_path / "spans.otlp.jsonl"
    with running_receiver() as receiver:
        env = otel_env(receiver.endpoint, FLOWTRACE_OUTPUT_FILE=str(spans))
        with gunicorn("tests.testproject.wsgi:traced", env) as server:
            for _ in range(3):
                assert server.request("/hello")[0] == 200

        # gunicorn's SIGTERM flushed both: no waiting needed beyond the receiver's lock
        def metric_names() -> set[str]:
            return {m.name for r in receiver.metric_requests for rm in r.resource_metrics
                    for sm in rm.scope_metrics for m in sm.metrics}  # fmt: skip

        names = receiver.wait_for(metric_names)
        assert receiver.spans == []  # no span went over OTLP
    assert {"flowtrace.request.ttfb", "http.server.request.duration"} <= names
    roots = [line for line in spans.read_text().splitlines() if '"GET /hello"' in line]
    assert roots  # the spans are in the file
