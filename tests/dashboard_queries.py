"""Read the dashboard's queries; substitute Grafana's macros and variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "flowtrace.json"

MACROS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
VARIABLES = {"$service": ".*", "$route": ".*", "$method": ".*", "$slow": "500ms"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    for name, value in {**MACROS, **(variables or VARIABLES)}.items():
        expr = expr.replace(name, value)
    return expr


def promql_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def traceql_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target.get("queryType") == "traceql":
                yield panel, target


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    return [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses, from its AST."""
    metrics: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> None:
        if node is None or isinstance(node, (str, int, float)):
            return
        if hasattr(node, "vector_selector"):
            visit(node.vector_selector)
            return
        if hasattr(node, "matchers") and hasattr(node, "name"):
            if node.name:
                metrics.add(node.name)
            labels.update(m.name for m in node.matchers.matchers)
            return
        modifier = getattr(node, "modifier", None)
        if modifier is not None and hasattr(modifier, "labels"):
            labels.update(modifier.labels or [])
        for attr in ("expr", "lhs", "rhs", "param"):
            visit(getattr(node, attr, None))
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(promql_parser.parse(expr))
    return metrics, labels


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def split_label_values(query: str) -> tuple[str, str]:
    """``label_values(selector, label)`` -> (selector, label)."""
    match = LABEL_VALUES.match(query)
    assert match, query
    return match.group("selector"), match.group("label")
