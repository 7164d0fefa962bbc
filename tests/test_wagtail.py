"""A real Wagtail site, built by the tests from PyPI's wagtail (issue #13): one
route per page type, in traces, reports and ``flowtrace bench``; a regression in one
page type is flagged by ``compare`` with its default settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

_SERVE = """
    import json, sys
    from tests.wagtailsite.setup import prepare
    prepare()
    from django.core.handlers.wsgi import WSGIHandler
    from flowtrace import FlowTrace
    from tests.wsgi_client import call
    app = FlowTrace(WSGIHandler(), output_file=sys.argv[1])  # as `make demo` records
    for path in ["/", "/sourdough/", "/rye/", "/baguette/", "/post-1/", "/post-2/", "/nope/"] * 3:
        call(app, path, HTTP_HOST="testserver")
    app.flush()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pytest.importorskip("wagtail")
    folder = tmp_path_factory.mktemp("wagtail")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWTRACE_STRICT": "1",
           "FLOWTRACE_WAGTAIL_DB": str(folder / "db.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "tests.wagtailsite.settings"}  # fmt: skip
    yield env


def _run(
    args: list[str], env: dict[str, str], cwd: Path | str = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=600)


def test_one_route_per_page_type(site: dict[str, str], tmp_path: Path) -> None:
    spans = tmp_path / "spans.otlp.jsonl"
    env = {**site, "OTEL_METRICS_EXPORTER": "none"}
    done = _run([sys.executable, "-c", textwrap.dedent(_SERVE), str(spans)], env)
    assert done.returncode == 0, done.stderr
    roots = [json.loads(line) for line in spans.read_text().splitlines()]
    names = {s["name"] for line in roots for rs in line["resourceSpans"]
             for ss in rs["scopeSpans"] for s in ss["spans"] if s["kind"] == 2}  # fmt: skip
    assert names == {"GET wagtail:bakery.HomePage", "GET wagtail:bakery.BreadPage",
                     "GET wagtail:bakery.BlogPage", "GET"}  # the 404 has no route  # fmt: skip
    report = _run([sys.executable, "-m", "flowtrace", "report", str(spans)], site)
    assert report.returncode == 0, report.stderr
    rows = re.findall(r"^(GET[^\n]*?)  n=(\d+)", report.stdout, re.M)
    assert sorted(rows) == [("GET", "3"), ("GET wagtail:bakery.BlogPage", "6"),
                            ("GET wagtail:bakery.BreadPage", "9"),
                            ("GET wagtail:bakery.HomePage", "3")]  # fmt: skip
    # the bread page's N+1 (one title query per sibling), named with its statement
    assert re.search(r"N\+1 queries, routes with .*\n +\d+\.\d  GET wagtail:bakery\.BreadPage  "
                     r"\(\d+ × SELECT .*wagtailcore_page", report.stdout)  # fmt: skip
    # ... and what the heaviest-queries table is made of: 5 calls per request of the title
    # query (whether it makes the printed top 5 depends on timing: a cold query can
    # outweigh it on a busy machine, so the table's source is asserted)
    from flowtrace.report.spans import SpanReport

    read = SpanReport()
    read.read(str(spans))
    bread = read.routes["GET wagtail:bakery.BreadPage"]
    title = [(text, calls) for text, calls, _ in bread.heaviest("db", n=100)
             if '"wagtailcore_page"."title"' in text]  # fmt: skip
    assert 5.0 in [calls / bread.count for _, calls in title], title  # one of them, 5×
    assert "heaviest queries" in report.stdout


def test_a_regression_in_one_page_type_is_flagged(site: dict[str, str], tmp_path: Path) -> None:
    """+1 query and a slower view in BreadPage only, benched against the baseline in
    alternating rounds (paired mode, what CI uses), compared with default settings."""
    scenario = ROOT / "tests" / "wagtailsite" / "bench.toml"
    env = {**site, "FLOWTRACE_TEST_REGRESSION": "1"}
    bench = _run([sys.executable, "-m", "flowtrace", "bench", str(scenario), "-o", "pr.json",
                  "--baseline-env", "FLOWTRACE_TEST_REGRESSION=0",
                  "--baseline-output", "base.json"], env, tmp_path)  # fmt: skip
    assert bench.returncode == 0, bench.stderr + bench.stdout
    done = _run([sys.executable, "-m", "flowtrace", "compare", "base.json", "pr.json",
                 "--json", "verdicts.json"], env, tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stdout  # a regression
    verdicts: dict[str, Any] = json.loads((tmp_path / "verdicts.json").read_text())
    regressed = {(row["route"], row["metric"]) for row in verdicts["rows"]
                 if row["verdict"] == "regressed"}  # fmt: skip
    assert ("GET wagtail:bakery.BreadPage", "queries") in regressed
    # counts are exact: no other page type's queries moved. A timing metric of an
    # unchanged page type was flagged once in fifteen suite runs on this noisy 2-core VM
    # (docs/ci.md, "Measured power and false alarms"): timings are not asserted here
    assert {route for route, metric in regressed
            if metric == "queries"} == {"GET wagtail:bakery.BreadPage"}  # fmt: skip
