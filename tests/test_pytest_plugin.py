"""The pytest plugin, run by pytest itself (pytester, in a subprocess) on the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "examples" / "flowtrace-ci.yml"

CONFTEST = """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "flowtrace.demo.settings"
os.environ["FLOWTRACE_DEMO_DB"] = os.path.join(os.path.dirname(__file__), "demo.sqlite3")
from flowtrace.demo.setup_db import prepare
prepare()
"""

TESTS = """
def test_db_page(flowtrace):
    profile = flowtrace.get("/db", repeat=3)
    assert profile.status == 200 and profile.route == "GET /db"
    assert profile.queries == 2 and profile.templates == 1
    assert profile.stage_ms("view") > 0
    profile.assert_budget(queries=2, templates=1, request="10s", view="5s")
    flowtrace.check_baseline(profile)

def test_budget_failure_names_the_stage(flowtrace):
    profile = flowtrace.get("/db")
    try:
        profile.assert_budget(queries=1, view="1ns")
    except AssertionError as exc:
        message = str(exc)
    else:
        raise AssertionError("the budget should have failed")
    assert "queries 2 > 1" in message and "view" in message and "ms > 1e-06 ms" in message

def test_careless_budgets_raise(flowtrace):
    import pytest
    profile = flowtrace.get("/db")
    with pytest.raises(ValueError, match="unknown budget 'veiw': did you mean 'view'"):
        profile.assert_budget(veiw="20ms")
    with pytest.raises(ValueError, match="unknown budget 'querys': did you mean 'queries'"):
        profile.assert_budget(querys=1)
    with pytest.raises(ValueError, match="view=20: give a duration with its unit"):
        profile.assert_budget(view=20)
    with pytest.raises(ValueError, match="a count"):
        profile.assert_budget(queries="2")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_demo=TESTS)
    return pytester


def test_budgets_and_a_baseline_recorded_locally_then_enforced_in_ci(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    first = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:django")
    first.assert_outcomes(passed=3)
    baseline = project.path / "flowtrace-baseline.json"
    records = json.loads(baseline.read_text())["records"]
    (key,) = records
    assert key.endswith("test_demo.py::test_db_page::GET /db")
    assert records[key]["queries"] == 2 and records[key]["templates"] == 1

    monkeypatch.setenv("CI", "true")  # strict: the committed baseline must match
    project.runpytest_subprocess("-p", "no:django").assert_outcomes(passed=3)
    records[key]["queries"] = 1  # as if the PR added a query
    baseline.write_text(json.dumps({"version": 1, "records": records}))
    failed = project.runpytest_subprocess("-p", "no:django")
    failed.assert_outcomes(passed=2, failed=1)
    failed.stdout.fnmatch_lines(["*flowtrace baseline*queries 2 != baseline 1*"])

    baseline.unlink()  # in CI a missing record fails instead of being written
    missing = project.runpytest_subprocess("-p", "no:django")
    missing.assert_outcomes(passed=2, failed=1)
    missing.stdout.fnmatch_lines(["*no flowtrace baseline for*mode 'none'*"])
    assert not baseline.exists()


README_EXAMPLE = """
from flowtrace.demo.models import Item


def test_item_page(flowtrace, db):  # db: pytest-django's fixture, one test database
    Item.objects.create(pk=3, name="three", price=3)  # seen by the requests below
    profile = flowtrace.get("/items/3/", repeat=5)
    assert profile.status == 200
    profile.assert_budget(queries=3, view="2s")
    assert Item.objects.count() == 1  # the five requests used the same test database
"""


def test_the_readme_example_runs_under_pytest_django(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_django")
    pytester.makepyfile(test_readme=README_EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "pytest_django", "--ds", "flowtrace.demo.settings",
                                           "-p", "no:cacheprovider")  # fmt: skip
    result.assert_outcomes(passed=1)
    readme = (ROOT / "README.md").read_text()
    assert "assert profile.status == 200" in readme and "pytest-django" in readme


def test_the_github_workflow_example_is_a_valid_workflow() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(WORKFLOW)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = WORKFLOW.read_text()
    assert "flowtrace bench" in text and "flowtrace compare" in text and "--markdown" in text
