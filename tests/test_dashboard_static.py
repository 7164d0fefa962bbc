"""Static checks of dashboards/flowtrace.json: structure, PromQL, TraceQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dashboard_queries import (
    load,
    names_in,
    promql_targets,
    split_label_values,
    substitute,
    traceql_targets,
    variable_queries,
)

ROOT = Path(__file__).resolve().parent.parent

# What flowtrace emits, as Prometheus names (see docs/metrics-names.md).
EMITTED_METRICS = {
    f"{base}_{suffix}"
    for base in ("flowtrace_stage_duration_seconds", "flowtrace_request_duration_seconds",
                 "flowtrace_db_queries", "flowtrace_db_duplicates",
                 "flowtrace_request_ttfb_seconds", "http_server_request_duration_seconds")
    for suffix in ("bucket", "sum", "count")
} | {"flowtrace_telemetry_dropped_total", "flowtrace_routes_overflow_total",
     "flowtrace_export_cpu_time_seconds_total", "flowtrace_export_requests_total",
     "flowtrace_export_events_total"}  # fmt: skip
EMITTED_LABELS = {"flowtrace_stage", "flowtrace_middleware", "http_route", "http_request_method",
                  "http_response_status_code", "error_type", "service_name", "le", "job",
                  "instance"}  # fmt: skip
SPAN_ATTRIBUTES = {"span.http.route", "span.flowtrace.stage", "span.db.query.text",
                   "resource.service.name"}  # fmt: skip


def test_committed_json_is_the_generator_output() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "dashboards"))
    from generate import dashboard

    assert load() == json.loads(json.dumps(dashboard()))


def test_structure() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 41
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    macros = {"__rate_interval", "__interval", "__range"}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(dashboard))) - macros
    assert used <= defined, used - defined
    text = json.dumps(dashboard)
    assert "localhost" not in text and "127.0.0.1" not in text  # no hard-coded hosts
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            uid = target["datasource"]["uid"]
            assert uid.startswith("${"), f"panel {panel['id']} hard-codes datasource {uid}"


def test_every_promql_query_parses_and_uses_only_emitted_names() -> None:
    dashboard = load()
    queries = [t["expr"] for _, t in promql_targets(dashboard)]
    queries += [split_label_values(q)[0] for q in variable_queries(dashboard)]
    assert len(queries) >= 15
    for query in queries:
        metrics, labels = names_in(substitute(query))
        assert metrics and metrics <= EMITTED_METRICS, (query, metrics - EMITTED_METRICS)
        assert labels <= EMITTED_LABELS, (query, labels - EMITTED_LABELS)


def test_legends_use_labels_the_query_keeps() -> None:
    for panel, target in promql_targets(load()):
        wanted = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
        if wanted:
            _, labels = names_in(substitute(target["expr"]))
            assert wanted <= labels, (panel["title"], wanted - labels)


def _node() -> str | None:
    node = shutil.which("node")
    modules = ROOT / "tests" / "traceql" / "node_modules" / "@grafana" / "lezer-traceql"
    if node is None or not modules.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "node and tests/traceql/node_modules are required in CI (make test installs them)"
            )
        return None
    return node


def test_every_traceql_query_parses_with_grafanas_grammar() -> None:
    node = _node()
    if node is None:
        pytest.skip("node or @grafana/lezer-traceql missing (run `make test`)")
    targets = list(traceql_targets(load()))
    queries = [substitute(t["query"]) for _, t in targets]
    assert len(queries) >= 2
    out = subprocess.run([node, "parse.mjs"], cwd=ROOT / "tests" / "traceql", check=True,
                         input=json.dumps(queries + ["{ broken ==== }"]), capture_output=True,
                         text=True).stdout  # fmt: skip
    results = json.loads(out)
    assert results[-1]["ok"] is False  # the checker really rejects bad queries
    assert [r for r in results[:-1] if not r["ok"]] == []
    for query in queries:
        attributes = set(re.findall(r"\b(?:span|resource)\.[\w.]+", query))
        assert attributes <= SPAN_ATTRIBUTES, attributes - SPAN_ATTRIBUTES
