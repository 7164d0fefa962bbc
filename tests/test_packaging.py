"""The distribution builds cleanly: PEP 639 license metadata, no build warnings."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_declares_its_license(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v",
                           "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Deprecat" not in log and "project.license" not in log, [
        line for line in log.splitlines() if "eprecat" in line or "license" in line
    ]
    (wheel,) = tmp_path.glob("django_flowtrace-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "License-Expression: MIT" in text and "License-File: LICENSE" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "flowtrace/demo/bench.toml" in names and "flowtrace/py.typed" in names


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    import re
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    demo = {re.split(r"[<>=\[ ;]", spec)[0] for spec in extras["demo"]}
    assert demo == {"django", "gunicorn"}
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [x for x in makefile.splitlines() if "scripts/venv.sh $(VENV)" in x]
    assert line.rstrip().endswith('"demo"'), line  # the demo's venv: extras "demo" only
