"""`flowtrace demo`, as `make demo` runs it: warm numbers, and the README's sample output
has the shape of what a newcomer gets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^(GET \S+)  n=(\d+)  latency ms: p50 [\d.]+  p95 [\d.]+  p99 [\d.]+  "
                    r"max [\d.]+  queries/req [\d.]+", re.MULTILINE)  # fmt: skip
STAGE = re.compile(r"^  (\w+) +([\d.]+) ms +([\d.]+)%  #+$")


def _routes(text: str) -> dict[str, dict[str, float]]:
    """Per route header, its stage lines: stage -> share in %."""
    out: dict[str, dict[str, float]] = {}
    route = None
    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            route = header.group(1)
            out[route] = {}
            continue
        stage = STAGE.match(line)
        if stage and route is not None:
            out[route][stage.group(1)] = float(stage.group(3))
    return out


def _readme_sample() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"the terminal shows a summary like this.*?:\n\n```\n(.*?)```", readme, re.S)
    assert match, "README: the demo's sample output block is missing"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, "-m", "flowtrace.cli", "demo", "--requests", "10",
                           "--output", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "report.html").exists()
    return done.stdout


def test_the_demo_measures_warm_workers(demo_output: str) -> None:
    assert re.search(r"warmed up with \d+ untraced requests", demo_output)
    routes = _routes(demo_output)
    assert {"GET /hello", "GET /db", "GET /stream", "GET /items/<int:pk>/", "GET /deferred",
            "GET /cached", "GET /download"} <= set(routes)  # fmt: skip
    hello = routes["GET /hello"]
    # no cold start dominating /hello: that showed as queue time (96 % before the warm-up);
    # one request descheduled on a busy machine can still move another stage's mean
    assert hello and hello.get("queue", 0.0) <= 50.0, hello


def test_the_readme_sample_has_the_shape_of_the_real_output(demo_output: str) -> None:
    sample = _readme_sample()
    shown = _routes(sample)
    real = _routes(demo_output)
    assert shown and set(shown) <= set(real)
    for route, stages in shown.items():
        assert set(stages) <= set(real[route]) | {"queue"}, route
        assert abs(sum(stages.values()) - 100) < 1.5, route  # shares add up
    hello = shown.get("GET /hello")
    assert hello is None or max(hello.values()) <= 50.0
    assert "mean exclusive time per request, by stage:" in sample
    assert re.search(r"  slowest \d+ requests", sample) and "percentiles are nearest-rank" in sample
