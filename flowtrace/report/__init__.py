"""``flowtrace report``: see where time goes without any backend.

Inputs are the local OTLP-JSON span files (``output_file`` /
``FLOWTRACE_OUTPUT_FILE``) and ``flowtrace bench`` result files; outputs are a
terminal summary (``terminal``) and one self-contained HTML file (``html``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowtrace.regression import InputError
from flowtrace.regression import results as bench_results
from flowtrace.regression.compare import Comparison, compare
from flowtrace.regression.scenario import Thresholds
from flowtrace.report.progress import Progress
from flowtrace.report.spans import SpanReport


@dataclass
class Inputs:
    spans: SpanReport = field(default_factory=SpanReport)
    span_files: list[str] = field(default_factory=list)
    benches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def comparison(self) -> Comparison:
        """The first two bench results compared (baseline, current), with the current
        file's thresholds; a route on one side only is reported, not an error."""
        (base_path, base), (current_path, current) = self.benches[:2]
        stored = current.get("thresholds") or {}
        thresholds = Thresholds(float(stored.get("rel", 0.1)), float(stored.get("abs_ms", 0.05)),
                                tuple(stored.get("overrides", ())))  # fmt: skip
        return compare(base, current, (base_path, current_path), thresholds, True)


def _is_span_file(path: str) -> bool:
    """OTLP-JSON export lines start with resourceSpans; a bench result does not."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    return '"resourceSpans"' in line[:4096]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    raise InputError(f"{path}: empty file")


def load(paths: Sequence[str], progress: bool, include_cold: bool = False) -> Inputs:
    """Read span files (streamed) and bench result files; InputError on bad input."""
    inputs = Inputs(SpanReport(include_cold))
    for path in paths:
        if _is_span_file(path):
            try:
                bar = Progress(os.path.getsize(path), sys.stderr if progress else None,
                               f"{path} ", " MiB", 2**20)  # fmt: skip
                inputs.spans.read(path, bar.update)
            except ValueError as exc:
                raise InputError(f"{path}: {exc}") from None
            inputs.span_files.append(path)
        else:
            try:
                inputs.benches.append((path, bench_results.load(path)))
            except InputError as exc:
                raise InputError(
                    f"{exc} (report reads OTLP-JSON span files, written by "
                    "output_file / FLOWTRACE_OUTPUT_FILE, and bench results)"
                ) from None
    return inputs
