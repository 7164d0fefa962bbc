"""``flowtrace report``: see where time goes without any backend.

Inputs are the local OTLP-JSON span files (``output_file`` /
``FLOWTRACE_OUTPUT_FILE``) and ``flowtrace bench`` result files; outputs are a
terminal summary (``terminal``) and one self-contained HTML file (``html``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowtrace.regression import InputError
from flowtrace.regression import results as bench_results
from flowtrace.report.spans import SpanReport


@dataclass
class Inputs:
    spans: SpanReport = field(default_factory=SpanReport)
    span_files: list[str] = field(default_factory=list)
    benches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _is_span_file(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    return '"resourceSpans"' in line[:4096] or line.lstrip().startswith(
                        '{"resourceSpans"'
                    )
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    raise InputError(f"{path}: empty file")


def progress_bar(label: str) -> Callable[[int, int], None]:
    """A byte-progress bar on stderr (the caller decides when to show it)."""

    def show(done: int, size: int) -> None:
        percent = done * 100 // max(size, 1)
        bar = "#" * (percent * 30 // 100)
        end = "\n" if done >= size else ""
        sys.stderr.write(f"\r{label} [{bar:30}] {percent:3d}% {done >> 20}/{size >> 20} MiB{end}")
        sys.stderr.flush()

    return show


def load(paths: Sequence[str], progress: bool) -> Inputs:
    """Read span files (streamed) and bench result files; InputError on bad input."""
    inputs = Inputs()
    for path in paths:
        if _is_span_file(path):
            try:
                inputs.spans.read(path, progress_bar(path) if progress else None)
            except ValueError as exc:
                raise InputError(f"{path}: {exc}") from None
            inputs.span_files.append(path)
        else:
            try:
                inputs.benches.append((path, bench_results.load(path)))
            except InputError:
                raise
            except json.JSONDecodeError as exc:  # pragma: no cover - load() handles it
                raise InputError(f"{path}: {exc}") from None
    return inputs
