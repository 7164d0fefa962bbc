"""The flowtrace command's manners: help, version, careless arguments, wrong files, pipes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.test_regression import _result

SPAN_LINE = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": []}]}]})


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowtrace.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_help_describes_each_command_with_defaults_and_no_markup() -> None:
    top = _run("--help")
    assert top.returncode == 0
    for command in ("demo", "report", "bench", "compare"):
        assert re.search(rf"\n    {command}\b.*\S", top.stdout), command  # a one-line summary
    texts = [top.stdout] + [
        _run(c, "--help").stdout for c in ("demo", "report", "bench", "compare")
    ]
    assert all("``" not in text and "(default: None)" not in text for text in texts)
    bench, compare = texts[3], texts[4]
    assert "(default: 3)" in bench and "(default: flowtrace-bench.json)" in bench
    assert re.search(r"baseline +bench result of the reference", compare)
    assert re.search(r"current +bench result to judge", compare)
    version = _run("--version")
    assert version.returncode == 0 and re.fullmatch(r"flowtrace \d+\.\d+\.\d+\S*\n", version.stdout)


def test_careless_bench_arguments_are_refused() -> None:
    for args, message in ((("--processes", "0"), "--processes: 0 is below 1"),
                          (("--rounds", "-2"), "--rounds: -2 is below 1"),
                          (("--baseline-dir", "../main"), "add --baseline-output FILE"),
                          (("--baseline-env", "A=1"), "add --baseline-output FILE")):  # fmt: skip
        done = _run("bench", "scenario.toml", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_wrong_files_say_what_they_are_and_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "spans.jsonl").write_text(SPAN_LINE + "\n" + SPAN_LINE + "\n")
    (tmp_path / "base.json").write_text(json.dumps(_result(2.0)))
    (tmp_path / "other.json").write_text('{"hello": 1}\n')
    done = _run("compare", "spans.jsonl", "base.json", cwd=tmp_path)
    assert done.returncode == 2 and "Extra data" not in done.stderr
    assert "spans.jsonl: this is a span file" in done.stderr
    assert "compare takes bench results" in done.stderr
    done = _run("report", "other.json", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "not a flowtrace bench result" in done.stderr and "span files" in done.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps(_result(2.0)))
    (tmp_path / "current.json").write_text(json.dumps(_result(2.6, seed=2)))
    proc = subprocess.Popen([sys.executable, "-m", "flowtrace.cli", "report", "base.json",
                             "current.json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` having exited: every write is EPIPE
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
