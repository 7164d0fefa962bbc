"""Renderings of a Comparison: terminal table, Markdown, JSON and JUnit XML."""

from __future__ import annotations

import json
from typing import TextIO
from xml.etree import ElementTree as ET

from flowtrace.regression.compare import IMPROVED, REGRESSED, UNCHANGED, Comparison, Row

_MARK = {REGRESSED: "▲ regressed", IMPROVED: "▼ improved", UNCHANGED: "= unchanged"}


def _value(row: Row, value: float) -> str:
    return f"{value / 1e6:.3f} ms" if row.kind == "timing" else f"{value:g}"


def _change(row: Row) -> str:
    if row.verdict not in _MARK:
        return ""
    if row.kind == "count":
        return f"{row.shift:+g}"
    rel = row.relative
    percent = f" ({rel:+.1%})" if rel is not None else ""
    return f"{row.shift / 1e6:+.3f} ms{percent}"


def _interval(row: Row) -> str:
    if row.kind != "timing" or row.verdict not in _MARK:
        return ""
    return f"[{row.low / 1e6:+.3f}, {row.high / 1e6:+.3f}]"


def _cells(row: Row) -> list[str]:
    base = _value(row, row.baseline) if row.verdict in _MARK else ""
    cur = _value(row, row.current) if row.verdict in _MARK else ""
    return [row.route, row.metric, base, cur, _change(row), _interval(row),
            _MARK.get(row.verdict, row.verdict)]  # fmt: skip


_HEADER = ["route", "metric", "baseline", "current", "change", "95% CI (ms)", "verdict"]


def _speed(factor: float) -> str:
    return (f"machine speed: the current run's calibration took {factor:.2f}x the baseline's; "
            "current timings divided by it")  # fmt: skip


def summary_line(comparison: Comparison) -> str:
    regressed, improved = len(comparison.regressions), len(comparison.improvements)
    if regressed:
        return f"flowtrace: {regressed} regression(s), {improved} improvement(s)"
    return f"flowtrace: no regression ({improved} improvement(s))"


def terminal(comparison: Comparison, out: TextIO, everything: bool = False) -> None:
    """Aligned table; unchanged rows only with ``everything`` (they are most rows)."""
    rows = [r for r in comparison.rows if everything or r.verdict != UNCHANGED]
    out.write(f"baseline {comparison.baseline}  vs  current {comparison.current}\n")
    if comparison.paired:
        out.write("paired run: both sides were measured in alternating rounds\n")
    if comparison.speed_factor is not None:
        out.write(f"{_speed(comparison.speed_factor)}\n")
    for warning in comparison.warnings:
        out.write(f"warning: {warning}\n")
    if rows:
        table = [_HEADER, *(_cells(r) for r in rows)]
        widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
        for line in table:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            out.write("  ".join(cells).rstrip() + "\n")
    unchanged = sum(r.verdict == UNCHANGED for r in comparison.rows)
    out.write(f"{summary_line(comparison)}; {unchanged} metric(s) unchanged\n")


def markdown(comparison: Comparison) -> str:
    """For a PR comment or ``$GITHUB_STEP_SUMMARY``: flagged rows first, all in a fold."""

    def table(rows: list[Row]) -> list[str]:
        lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
        for row in rows:
            cells = [c.replace("|", "\\|") for c in _cells(row)]
            cells[0] = f"`{cells[0]}`"
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    icon = "❌" if comparison.regressions else "✅"
    lines = [f"### {icon} {summary_line(comparison)}", ""]
    if comparison.speed_factor is not None:
        lines.append(f"> {_speed(comparison.speed_factor)}")
    lines += [f"> ⚠️ {warning}" for warning in comparison.warnings]
    flagged = [r for r in comparison.rows if r.verdict != UNCHANGED]
    if flagged:
        lines += ["", *table(flagged)]
    lines += ["", f"<details><summary>All {len(comparison.rows)} metrics</summary>", ""]
    lines += [*table(comparison.rows), "", "</details>", ""]
    return "\n".join(lines)


def as_json(comparison: Comparison) -> str:
    return json.dumps(comparison.as_json(), indent=1) + "\n"


def junit(comparison: Comparison) -> str:
    """One testcase per route and metric; a regression is a failure."""
    suite = ET.Element("testsuite", name="flowtrace.compare", tests=str(len(comparison.rows)),
                       failures=str(len(comparison.regressions)))  # fmt: skip
    for row in comparison.rows:
        case = ET.SubElement(suite, "testcase", classname=row.route, name=row.metric)
        detail = " ".join(cell for cell in _cells(row)[2:] if cell)
        if row.verdict == REGRESSED:
            ET.SubElement(
                case, "failure", message=f"{row.route} {row.metric} regressed"
            ).text = detail
        elif row.verdict not in _MARK:
            ET.SubElement(case, "skipped", message=row.verdict)
        else:
            ET.SubElement(case, "system-out").text = detail
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
