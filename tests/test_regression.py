"""flowtrace bench / compare: statistics, verdicts, the CLI on the demo, bad input."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from flowtrace.regression import InputError
from flowtrace.regression.compare import IMPROVED, REGRESSED, UNCHANGED, compare
from flowtrace.regression.results import SCHEMA, VERSION
from flowtrace.regression.scenario import Thresholds
from flowtrace.regression.stats import hodges_lehmann

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = ROOT / "flowtrace" / "demo" / "bench.toml"


def _noisy(center: float, n: int = 100, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + abs(rng.gauss(0, 0.05))) for _ in range(n)]


def _result(view_ms: float, queries: int = 2, seed: int = 1, route: str = "GET /x") -> Any:
    view = _noisy(view_ms * 1e6, seed=seed)
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "environment": {"python": "3.11"},
        "routes": {
            route: {
                "timings_ns": {"request": [v + 300_000 for v in view], "view": view},
                "counts": {"queries": [queries] * len(view)},
            }
        },
    }


def _verdicts(base: dict[str, Any], cur: dict[str, Any]) -> dict[str, str]:
    comparison = compare(base, cur, ("base", "cur"), Thresholds())
    return {row.metric: row.verdict for row in comparison.rows}


def test_hodges_lehmann_estimates_a_known_shift_and_covers_it() -> None:
    base = _noisy(1000.0, seed=1)
    shift, low, high = hodges_lehmann(base, [v + 200 for v in _noisy(1000.0, seed=2)])
    assert 150 < shift < 250
    assert low < 200 < high
    same, low, high = hodges_lehmann(base, _noisy(1000.0, seed=3))
    assert low < 0 < high and abs(same) < 30


def test_a_slower_view_and_an_extra_query_are_flagged_and_noise_is_not() -> None:
    base = _result(2.0, seed=1)
    assert _verdicts(base, _result(2.4, seed=2))["view"] == REGRESSED
    assert _verdicts(base, _result(1.6, seed=2))["view"] == IMPROVED
    assert set(_verdicts(base, _result(2.0, seed=2)).values()) == {UNCHANGED}
    assert _verdicts(base, _result(2.0, queries=3, seed=2))["queries"] == REGRESSED
    # 4 % slower is significant with 100 samples, but below the 10 % minimum effect
    assert _verdicts(base, _result(2.08, seed=2))["view"] == UNCHANGED


def test_per_route_thresholds_override_the_defaults() -> None:
    loose = Thresholds(overrides=({"route": "GET /x", "stage": "view", "rel": 0.5},))
    comparison = compare(_result(2.0), _result(2.4, seed=2), ("b", "c"), loose)
    verdicts = {row.metric: row.verdict for row in comparison.rows}
    assert verdicts["view"] == UNCHANGED and verdicts["request"] == REGRESSED


def test_machine_speed_drift_is_divided_out() -> None:
    base, cur = _result(2.0), _result(2.6, seed=2)  # everything 30 % slower...
    base["calibration_ns"] = [100_000] * 10
    cur["calibration_ns"] = [130_000] * 10  # ... because the machine was
    comparison = compare(base, cur, ("b", "c"), Thresholds())
    assert comparison.speed_factor == pytest.approx(1.3)
    assert {row.metric: row.verdict for row in comparison.rows}["view"] == UNCHANGED
    raw = compare(base, cur, ("b", "c"), Thresholds(), normalise=False)
    assert {row.metric: row.verdict for row in raw.rows}["view"] == REGRESSED


def test_a_route_on_one_side_only_is_an_error_unless_allowed() -> None:
    with pytest.raises(InputError, match="route .GET /x. is only in baseline"):
        compare(_result(2.0), _result(2.0, route="GET /y"), ("b", "c"), Thresholds())
    comparison = compare(_result(2.0), _result(2.0, route="GET /y"), ("b", "c"), Thresholds(),
                         allow_missing=True)  # fmt: skip
    assert {row.verdict for row in comparison.rows} == {"only in baseline", "only in current"}


def _flowtrace(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run([sys.executable, "-m", "flowtrace.cli", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bench of the demo project (2 processes, 4 rounds)."""
    tmp = tmp_path_factory.mktemp("bench")
    env = {"FLOWTRACE_DEMO_DB": str(tmp / "demo.sqlite3")}
    done = _flowtrace("bench", str(DEMO_SCENARIO), "-o", "base.json", "--rounds", "4",
                      "--processes", "2", cwd=tmp, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "6 route(s), 120 timed requests" in done.stdout
    return tmp


def test_bench_records_every_route_with_stages_counts_and_fingerprint(demo_results: Path) -> None:
    result = json.loads((demo_results / "base.json").read_text())
    assert result["schema"] == SCHEMA and result["version"] == VERSION
    assert result["environment"]["python"] and result["environment"]["flowtrace"]
    assert result["processes"] == 2 and len(result["calibration_ns"]) >= 8
    routes = result["routes"]
    assert set(routes) == {"GET /hello", "GET /db", "GET /items/<int:pk>/", "GET /stream",
                           "GET /deferred", "GET /cached"}  # fmt: skip
    db = routes["GET /db"]
    assert len(db["timings_ns"]["request"]) == 20  # 4 rounds x 5 repeats
    assert {"view", "db", "template", "middleware", "cpu"} <= set(db["timings_ns"])
    assert set(db["counts"]["queries"]) == {2} and set(db["counts"]["templates"]) == {1}
    assert set(routes["GET /cached"]["counts"]["cache_calls"]) == {1}
    assert set(routes["GET /stream"]["bytes"]) == {50 * 1024}
    # stages tile the request: exclusive times add up to the whole
    for i, total in enumerate(db["timings_ns"]["request"]):
        parts = sum(v[i] for k, v in db["timings_ns"].items() if k not in ("request", "cpu"))
        assert parts == total


def test_compare_cli_outputs_and_exit_status(demo_results: Path) -> None:
    same = _flowtrace("compare", "base.json", "base.json", cwd=demo_results)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no regression" in same.stdout
    current = json.loads((demo_results / "base.json").read_text())
    current["routes"]["GET /db"]["counts"]["queries"] = [3] * 20  # one more query
    (demo_results / "current.json").write_text(json.dumps(current))
    done = _flowtrace("compare", "base.json", "current.json", "--markdown", "out.md",
                      "--json", "out.json", "--junit", "out.xml", cwd=demo_results)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "GET /db" in done.stdout and "queries" in done.stdout and "regressed" in done.stdout
    markdown = (demo_results / "out.md").read_text()
    assert markdown.startswith("### ❌ flowtrace: 1 regression(s)")
    assert "| `GET /db` | queries | 2 | 3 | +1 |" in markdown
    assert json.loads((demo_results / "out.json").read_text())["regressed"] == 1
    suite = ET.parse(demo_results / "out.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["queries"]


BAD_SCENARIOS = {
    "not toml": ("[scenario\n", "not valid TOML"),
    "no request": ("[scenario]\nrounds = 3\n", "needs at least one [[request]]"),
    "bad method": ('[[request]]\npath = "/x"\nmethod = "FETCH"\n', "method 'FETCH'"),
    "bad path": ('[[request]]\npath = "x"\n', "path must be a string starting with '/'"),
    "bad rounds": ('[scenario]\nrounds = "many"\n[[request]]\npath = "/x"\n', "rounds must"),
    "bad setup": ('[scenario]\ndjango_settings = "flowtrace.demo.settings"\n'
                  'setup = "no.such:thing"\n[[request]]\npath = "/x"\n', "cannot import"),
    "typo in a request": ('[[request]]\npath = "/x"\nreapeat = 5\n',
                          "unknown key 'reapeat' in [[request]]; did you mean 'repeat'?"),
    "typo in scenario": ('[scenario]\nround = 20\n[[request]]\npath = "/x"\n',
                         "unknown key 'round' in [scenario]; did you mean 'rounds'?"),
    "typo in a table": ('[comapre]\nrel = 0.2\n[[request]]\npath = "/x"\n',
                        "unknown key 'comapre' at the top; did you mean 'compare'?"),
    "typo in an override": ('[[compare.override]]\nroute = "*"\nrell = 0.2\n'
                            '[[request]]\npath = "/x"\n', "did you mean 'rel'?"),
    "bad status": ('[[request]]\npath = "/x"\nstatus = "ok"\n', "status must be an HTTP status"),
    "bad test_database": ('[scenario]\ntest_database = "yes"\n[[request]]\npath = "/x"\n',
                          "test_database must be true or false"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_bad_scenarios_are_one_line_errors_with_status_2(case: str, tmp_path: Path) -> None:
    text, message = BAD_SCENARIOS[case]
    (tmp_path / "s.toml").write_text(text)
    done = _flowtrace("bench", "s.toml", "--processes", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("flowtrace bench: error: ") and message in done.stderr
    assert "s.toml" in done.stderr or "cannot import" in done.stderr


def _demo_scenario(tmp: Path, body: str, head: str = "") -> None:
    (tmp / "s.toml").write_text('[scenario]\ndjango_settings = "flowtrace.demo.settings"\n'
                                f"warmup = 1\nrounds = 2\n{head}{body}")  # fmt: skip


def test_a_request_answering_an_unexpected_status_fails_the_bench(tmp_path: Path) -> None:
    env = {"FLOWTRACE_DEMO_DB": str(tmp_path / "demo.sqlite3")}
    setup = 'setup = "flowtrace.demo.setup_db:prepare"\n'
    _demo_scenario(tmp_path, '[[request]]\npath = "/hello"\n[[request]]\npath = "/helo"\n', setup)
    done = _flowtrace("bench", "s.toml", "--processes", "1", cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "GET /helo answered 404, expected 2xx or 3xx" in done.stderr
    assert not (tmp_path / "flowtrace-bench.json").exists()
    # a status that is meant: stated, and then it is measured like any other
    _demo_scenario(tmp_path, '[[request]]\npath = "/helo"\nstatus = [404, 410]\n', setup)
    done = _flowtrace("bench", "s.toml", "--processes", "1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    routes = json.loads((tmp_path / "flowtrace-bench.json").read_text())["routes"]
    assert [entry["status"] for entry in routes.values()] == [{"404": 2}]


_HOOKS = """
from django.contrib.auth.models import User  # needs the app registry: after django.setup()


def seed():
    from flowtrace.demo.models import Item
    Item.objects.bulk_create(Item(name=f"bench {i}", price=i) for i in range(1, 6))


def broken():
    raise RuntimeError("fixtures missing")
"""


def test_setup_runs_after_django_setup_against_test_databases(tmp_path: Path) -> None:
    (tmp_path / "benchhooks.py").write_text(_HOOKS)
    real_db = tmp_path / "real.sqlite3"
    env = {"FLOWTRACE_DEMO_DB": str(real_db)}
    _demo_scenario(tmp_path, '[[request]]\npath = "/items/3/"\n',
                   'test_database = true\nsetup = "benchhooks:seed"\n')  # fmt: skip
    done = _flowtrace("bench", "s.toml", "--processes", "1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    routes = json.loads((tmp_path / "flowtrace-bench.json").read_text())["routes"]
    assert routes["GET /items/<int:pk>/"]["status"] == {"200": 2}  # item 3 was seeded
    assert not real_db.exists()  # the settings' database was never touched
    _demo_scenario(tmp_path, '[[request]]\npath = "/hello"\n',
                   'test_database = true\nsetup = "benchhooks:broken"\n')  # fmt: skip
    done = _flowtrace("bench", "s.toml", "--processes", "1", cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        "scenario.setup 'benchhooks:broken' failed: RuntimeError: fixtures missing" in done.stderr
    )


def _bad_results(tmp: Path) -> dict[str, tuple[str, str]]:
    good = _result(2.0)
    return {
        "not json": ("{", "not a JSON file"),
        "other schema": (json.dumps({"schema": "x"}), "not a flowtrace bench result"),
        "version": (json.dumps({**good, "version": 99}), "schema version 99"),
        "empty samples": (
            json.dumps({**good, "routes": {"GET /x": {"timings_ns": {"request": []}}}}),
            "empty or missing samples",
        ),  # fmt: skip
        "no routes": (json.dumps({**good, "routes": {}}), "no routes recorded"),
        "other route": (json.dumps(_result(2.0, route="GET /y")), "is only in"),
    }


def test_bad_result_files_are_one_line_errors_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps(_result(2.0)))
    for name, (text, message) in _bad_results(tmp_path).items():
        (tmp_path / "bad.json").write_text(text)
        done = _flowtrace("compare", "good.json", "bad.json", cwd=tmp_path)
        assert done.returncode == 2, name
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, name
        assert ".json: " in done.stderr and message in done.stderr, (name, done.stderr)
    missing = _flowtrace("compare", "good.json", "missing.json", cwd=tmp_path)
    assert missing.returncode == 2 and "missing.json: cannot read" in missing.stderr


def test_paired_bench_measures_both_sides_together_and_catches_a_slower_view(
    tmp_path: Path,
) -> None:
    """--baseline-output: baseline (env) and current alternate rounds; no normalisation."""
    power = ROOT / "benchmarks" / "power"
    env = {"FLOWTRACE_DEMO_DB": str(tmp_path / "power.sqlite3"), "FLOWTRACE_POWER_WORK": "2.0"}
    done = _flowtrace("bench", "scenario.toml", "-o", str(tmp_path / "cur.json"),
                      "--baseline-output", str(tmp_path / "base.json"),
                      "--baseline-env", "FLOWTRACE_POWER_WORK=1.0", "--rounds", "6",
                      "--processes", "2", cwd=power, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    base = json.loads((tmp_path / "base.json").read_text())
    cur = json.loads((tmp_path / "cur.json").read_text())
    assert base["pair_id"] == cur["pair_id"] and base["processes"] == 2
    assert len(cur["routes"]["GET /work/<int:pk>/"]["timings_ns"]["view"]) == 30
    cmp = _flowtrace("compare", str(tmp_path / "base.json"), str(tmp_path / "cur.json"),
                     cwd=tmp_path)  # fmt: skip
    assert cmp.returncode == 1, cmp.stdout
    assert "paired run" in cmp.stdout and "machine speed" not in cmp.stdout
    # twice the work: flagged, with a shift of that order (the view is not only the loop;
    # with 2 processes per side, one slow process moves it: +207 % seen once in CI)
    assert re.search(r"GET /work/<int:pk>/ +view .*\+([5-9]\d|[12]\d\d)\.\d%\) .*regressed",
                     cmp.stdout), cmp.stdout  # fmt: skip


def test_paired_bench_rejects_a_malformed_baseline_env(tmp_path: Path) -> None:
    done = _flowtrace("bench", str(DEMO_SCENARIO), "--baseline-output", "b.json",
                      "--baseline-env", "NOEQUALS", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "flowtrace bench: error: --baseline-env 'NOEQUALS': expected NAME=VALUE\n"


def test_bench_against_a_running_server_url(tmp_path: Path) -> None:
    """--url: client-side wall time and bytes from a real gunicorn (no stages, no counts)."""
    from tests.servers import gunicorn

    (tmp_path / "s.toml").write_text('[scenario]\nwarmup = 1\nrounds = 3\n'
                                     '[[request]]\npath = "/hello"\nrepeat = 4\n'
                                     '[[request]]\npath = "/stream"\n')  # fmt: skip
    with gunicorn("tests.testproject.wsgi:traced", {"FLOWTRACE_ENABLED": "0"}) as server:
        done = _flowtrace("bench", "s.toml", "--url", f"http://127.0.0.1:{server.port}",
                          "-o", "url.json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "url.json").read_text())
    assert result["target"] == f"http://127.0.0.1:{server.port}"
    assert len(result["routes"]["GET /hello"]["timings_ns"]["request"]) == 12
    assert set(result["routes"]["GET /stream"]["bytes"]) == {50 * 1024}
    assert result["routes"]["GET /hello"]["counts"] == {}
    refused = _flowtrace("bench", "s.toml", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert refused.returncode == 2 and "Connection refused" in refused.stderr


def test_yaml_scenarios_mean_the_same_as_toml(tmp_path: Path) -> None:
    from flowtrace.regression import scenario

    (tmp_path / "s.yaml").write_text(
        "scenario: {django_settings: flowtrace.demo.settings, rounds: 4}\n"
        "compare: {rel: 0.2, override: [{route: 'GET /db', stage: view, abs_ms: 1}]}\n"
        "request:\n  - {path: /db, repeat: 2, headers: {X-A: b}}\n  - {path: '/x?q=1'}\n"
    )
    (tmp_path / "s.toml").write_text(
        '[scenario]\ndjango_settings = "flowtrace.demo.settings"\nrounds = 4\n'
        '[compare]\nrel = 0.2\n[[compare.override]]\nroute = "GET /db"\nstage = "view"\n'
        'abs_ms = 1\n[[request]]\npath = "/db"\nrepeat = 2\nheaders = {X-A = "b"}\n'
        '[[request]]\npath = "/x?q=1"\n'
    )
    from_yaml = scenario.load(str(tmp_path / "s.yaml"))
    from_toml = scenario.load(str(tmp_path / "s.toml"))
    assert from_yaml.requests == from_toml.requests and from_yaml.rounds == 4
    assert from_yaml.thresholds == from_toml.thresholds
    assert from_yaml.thresholds.for_metric("GET /db", "view") == (0.2, 1.0)
    assert from_yaml.thresholds.for_metric("GET /x", "view") == (0.2, 0.05)


def test_paired_bench_against_another_checkout(tmp_path: Path) -> None:
    """--baseline-dir: the baseline worker imports the project from the other checkout
    (as the GitHub workflow does with the target branch)."""
    import shutil

    power = ROOT / "benchmarks" / "power"
    base = tmp_path / "base"
    shutil.copytree(power, base)
    module = base / "power_project.py"
    module.write_text(module.read_text().replace("_ITERATIONS = 35_000", "_ITERATIONS = 70_000"))
    env = {"FLOWTRACE_DEMO_DB": str(tmp_path / "power.sqlite3")}
    done = _flowtrace("bench", "scenario.toml", "-o", str(tmp_path / "pr.json"),
                      "--baseline-dir", str(base), "--baseline-output", str(tmp_path / "b.json"),
                      "--rounds", "4", "--processes", "1", cwd=power, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    cmp = _flowtrace("compare", "b.json", "pr.json", cwd=tmp_path)
    # the PR halved the view: an improvement. With one process per side, a process's own
    # memory layout can move the unchanged 0.3 ms /hello (up to 20 % in
    # docs/performance.md, +34 % seen once in CI), which no statistic over that one process
    # can tell from a change: only the changed route is asserted; the gate's
    # false-positive rate with several processes is benchmarks/regression_power.py's
    regressed = [line for line in cmp.stdout.splitlines() if "regressed" in line]
    assert all(line.startswith("GET /hello ") for line in regressed), cmp.stdout
    assert cmp.returncode == (1 if regressed else 0), cmp.stdout
    assert re.search(r"GET /work/<int:pk>/ +view .*-[4-6]\d\.\d%\) .*improved", cmp.stdout), (
        cmp.stdout
    )
