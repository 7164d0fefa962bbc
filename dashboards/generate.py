"""Generate ``dashboards/flowtrace.json`` (classic Grafana dashboard JSON).

    python dashboards/generate.py        # rewrites flowtrace.json

The JSON is the shipped artifact; this script is its source, so the queries
stay consistent (one filter, one place per metric name). A test checks that
the committed JSON equals this script's output, and checks every query.
Datasources are referenced only through dashboard variables, so the JSON
works in any Grafana without editing uids or hosts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowtrace import semconv as sc

PROM = {"type": "prometheus", "uid": "${datasource}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}
JAEGER = {"type": "jaeger", "uid": "${jaeger}"}
F = 'service_name=~"$service", http_route=~"$route", http_request_method=~"$method"'
RI = "$__rate_interval"
FIVE_XX = 'http_response_status_code=~"5.."'
QUEUE = 'flowtrace_stage="queue"'
STREAMING = 'flowtrace_stage="streaming"'

# A stable colour per stage, shared with `flowtrace report`.
STAGE_COLOURS = sc.STAGE_COLOURS


def _rate(metric: str, extra: str = "", window: str = RI) -> str:
    selector = F + (", " + extra if extra else "")
    return f"rate({metric}{{{selector}}}[{window}])"


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": PROM, "expr": expr, "legendFormat": legend, "refId": ref,
            "exemplar": True, **extra}  # fmt: skip


def traceql(query: str, table_type: str) -> dict[str, Any]:
    """A Tempo TraceQL search target (``table_type``: traces or spans)."""
    return {"datasource": TEMPO, "refId": "A", "queryType": "traceql", "limit": 20,
            "tableType": table_type, "query": query}  # fmt: skip


def panel(pid: int, title: str, kind: str, grid: tuple[int, int, int, int], targets: list[Any],
          description: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    x, y, w, h = grid
    return {"id": pid, "type": kind, "title": title, "description": description,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "datasource": targets[0]["datasource"] if targets else PROM,
            "targets": targets, **extra}  # fmt: skip


def row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {"id": pid, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}  # fmt: skip


def _stage_overrides() -> list[dict[str, Any]]:
    return [{"matcher": {"id": "byName", "options": stage},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for stage, colour in STAGE_COLOURS.items()]  # fmt: skip


def _timeseries(unit: str, stacked: bool = False) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "fillOpacity": 60 if stacked else 10,
                              "stacking": {"mode": "normal" if stacked else "none"}}  # fmt: skip
    return {"fieldConfig": {"defaults": {"unit": unit, "custom": custom},
                            "overrides": _stage_overrides()},
            "options": {"legend": {"displayMode": "table", "placement": "right",
                                   "calcs": ["mean", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}  # fmt: skip


def panels() -> list[dict[str, Any]]:
    request_rate = f"sum({_rate('flowtrace_request_duration_seconds_count')})"
    out: list[dict[str, Any]] = [row(1, "Where the time goes", 0)]
    out.append(panel(2, "Mean time per request, by stage (stacked = request mean)", "timeseries",
        (0, 1, 16, 9),
        [target(f"sum by (flowtrace_stage) ({_rate('flowtrace_stage_duration_seconds_sum')})"
                f" / scalar({request_rate})", "{{flowtrace_stage}}"),
         target(f"sum({_rate('flowtrace_request_duration_seconds_sum')}) / {request_rate}",
                "request mean", "B")],
        "Exclusive time of each stage per request; the stack adds up to the request mean "
        "(line B). Click an exemplar point to open its trace.",
        **_timeseries("s", stacked=True)))  # fmt: skip
    out.append(panel(3, "Requests per second", "stat", (16, 1, 8, 4),
        [target(request_rate, "req/s")], "All selected routes.",
        fieldConfig={"defaults": {"unit": "reqps"}}))  # fmt: skip
    out.append(panel(4, "Error rate (5xx)", "stat", (16, 5, 8, 5),
        [target(f"100 * (sum({_rate('flowtrace_request_duration_seconds_count', FIVE_XX)})"
                f" or vector(0)) / {request_rate}", "errors %")],
        "Share of requests answered with a 5xx status.",
        fieldConfig={"defaults": {"unit": "percent"}}))  # fmt: skip
    for i, q in enumerate(("0.5", "0.95", "0.99")):
        out.append(panel(5 + i, f"p{float(q) * 100:g} per stage", "timeseries", (8 * i, 10, 8, 8),
            [target(f"histogram_quantile({q}, sum by (le, flowtrace_stage) "
                    f"({_rate('flowtrace_stage_duration_seconds_bucket')}))",
                    "{{flowtrace_stage}}")],
            f"{q} quantile of each stage's exclusive time (bucket-interpolated).",
            **_timeseries("s")))  # fmt: skip
    out.append(row(8, "Routes", 18))
    by_route = "sum by (http_route)"
    out.append(panel(9, "Routes: rate, errors, p95, dominant stage", "table", (0, 19, 24, 9), [
        target(f"{by_route} ({_rate('flowtrace_request_duration_seconds_count')})", "", "A",
               format="table", instant=True),
        target(f"100 * ({by_route} ({_rate('flowtrace_request_duration_seconds_count', FIVE_XX)})"
               f" or {by_route} ({_rate('flowtrace_request_duration_seconds_count')}) * 0)"
               f" / {by_route} ({_rate('flowtrace_request_duration_seconds_count')})", "", "B",
               format="table", instant=True),
        target(f"histogram_quantile(0.95, sum by (le, http_route) "
               f"({_rate('flowtrace_request_duration_seconds_bucket')}))", "", "C",
               format="table", instant=True),
        target(f"topk by (http_route) (1, sum by (http_route, flowtrace_stage) "
               f"({_rate('flowtrace_stage_duration_seconds_sum')}))", "", "D",
               format="table", instant=True),
        ], "Per route: requests/s (A), 5xx % (B), p95 latency (C), and the stage with the "
           "most total time (D, its label).",
        transformations=[{"id": "merge", "options": {}}]))  # fmt: skip
    out.append(row(10, "Queue, first byte, streaming", 28))
    out.append(panel(11, "Queue time (server receipt -> WSGI call)", "timeseries", (0, 29, 8, 8), [
        target(f"histogram_quantile(0.95, sum by (le) ({_rate('flowtrace_stage_duration_seconds_bucket', QUEUE)}))", "p95"),
        target(f"sum({_rate('flowtrace_stage_duration_seconds_sum', QUEUE)})"
               f" / sum({_rate('flowtrace_stage_duration_seconds_count', QUEUE)})", "mean", "B"),
        ], "From the front proxy's X-Request-Start to the app: rising queue time means too few "
           "workers, not slow code.", **_timeseries("s")))  # fmt: skip
    out.append(panel(12, "Time to first byte vs streaming (p95)", "timeseries", (8, 29, 8, 8), [
        target(f"histogram_quantile(0.95, sum by (le) ({_rate('flowtrace_request_ttfb_seconds_bucket')}))", "time to first byte"),
        target(f"histogram_quantile(0.95, sum by (le) ({_rate('flowtrace_stage_duration_seconds_bucket', STREAMING)}))", "streaming", "B"),
        ], "Time to first byte (what users wait for) apart from how long bodies stream: "
           "long streams do not poison the latency you care about.", **_timeseries("s")))  # fmt: skip
    out.append(panel(13, "DB queries per request", "timeseries", (16, 29, 8, 8), [
        target(f"sum by (http_route) ({_rate('flowtrace_db_queries_sum')})"
               f" / sum by (http_route) ({_rate('flowtrace_db_queries_count')})", "{{http_route}}"),
        ], "Mean query count per request, by route: a jump is an N+1 query.",
        **_timeseries("short")))  # fmt: skip
    out.append(panel(19, "N+1: repeated query executions per request, by route", "table",
        (0, 37, 24, 8), [
        target(f"sort_desc({by_route} ({_rate('flowtrace_db_duplicates_sum')})"
               f" / {by_route} ({_rate('flowtrace_db_duplicates_count')}))", "", "A",
               format="table", instant=True),
        ], "Executions beyond the first of SQL statements run 5 times or more in one request "
           "(duplicate_query_threshold), per request, worst route first. The statement is on "
           "the trace's root span (flowtrace.db.duplicate.statement).",
        transformations=[{"id": "merge", "options": {}}]))  # fmt: skip
    out.append(row(14, "Traces", 46))
    out.append(panel(15, "Slowest requests (Tempo)", "table", (0, 47, 12, 9), [
        traceql('{ kind = server && resource.service.name =~ "$service" && '
                'span.http.route =~ "$route" && duration > $slow }', "traces"),
        ], "Requests slower than $slow; click a trace id to open its stage waterfall."))  # fmt: skip
    out.append(panel(16, "Slow DB queries (Tempo)", "table", (12, 47, 12, 9), [
        traceql('{ resource.service.name =~ "$service" && span.flowtrace.stage = "db" && '
                'duration > 10ms } | select(span.db.query.text, span.http.route)', "spans"),
        ], "Query spans over 10 ms, with their SQL (never parameter values)."))  # fmt: skip
    out.append(panel(17, "Recent traces (Jaeger)", "table", (0, 56, 12, 8), [
        {"datasource": JAEGER, "refId": "A", "queryType": "search", "service": "$service",
         "limit": 20}], "The same traces in Jaeger, for teams that use its UI."))  # fmt: skip
    out.append(panel(18, "flowtrace's own health: telemetry dropped", "timeseries", (12, 56, 12, 8), [
        target('sum(rate(flowtrace_telemetry_dropped_total{service_name=~"$service"}[$__rate_interval]))',
               "dropped requests/s"),
        ], "Requests whose spans/metrics flowtrace dropped (full queue, dead collector). "
           "Should be 0.", **_timeseries("reqps")))  # fmt: skip
    out.append(panel(20, "flowtrace overhead per request (export thread CPU)", "timeseries",
        (0, 64, 12, 8), [
        target('sum(rate(flowtrace_export_cpu_time_seconds_total{service_name=~"$service"}[$__rate_interval]))'
               ' / sum(rate(flowtrace_export_requests_total{service_name=~"$service"}[$__rate_interval]))',
               "CPU per request"),
        target('sum(rate(flowtrace_export_cpu_time_seconds_total{service_name=~"$service"}[$__rate_interval]))'
               ' / sum(rate(flowtrace_export_events_total{service_name=~"$service"}[$__rate_interval]))',
               "CPU per call", "B"),
        ], "flowtrace's own cost in production: the CPU its export thread spends per request "
           "and per recorded call (query, template, cache call, middleware). The request-thread "
           "share (recording timestamps) is measured in docs/performance.md.",
        **_timeseries("s")))  # fmt: skip
    return out


def _variables() -> list[dict[str, Any]]:
    def ds(name: str, kind: str, label: str) -> dict[str, Any]:
        return {"name": name, "label": label, "type": "datasource", "query": kind,
                "current": {}, "hide": 0, "refresh": 1}  # fmt: skip

    def query(name: str, label: str, expr: str, multi: bool) -> dict[str, Any]:
        return {"name": name, "label": label, "type": "query", "datasource": PROM,
                "query": {"query": expr, "refId": f"{name}-var"}, "definition": expr,
                "refresh": 2, "sort": 1, "multi": multi, "includeAll": True,
                "allValue": ".*", "current": {}, "hide": 0}  # fmt: skip

    return [
        ds("datasource", "prometheus", "Prometheus"), ds("tempo", "tempo", "Tempo"),
        ds("jaeger", "jaeger", "Jaeger"),
        query("service", "Service",
              "label_values(flowtrace_request_duration_seconds_count, service_name)", False),
        query("route", "Route", 'label_values(flowtrace_request_duration_seconds_count'
              '{service_name=~"$service"}, http_route)', True),
        query("method", "Method", 'label_values(flowtrace_request_duration_seconds_count'
              '{service_name=~"$service"}, http_request_method)', True),
        {"name": "slow", "label": "Slow if over", "type": "custom", "query": "100ms,250ms,500ms,1s,2s",
         "current": {"text": "500ms", "value": "500ms"}, "hide": 0, "multi": False,
         "includeAll": False, "options": []},
    ]  # fmt: skip


def dashboard() -> dict[str, Any]:
    return {
        "title": "flowtrace: where request time goes",
        "uid": "flowtrace",
        "description": "Per-route, per-stage request time from flowtrace (Django).",
        "tags": ["flowtrace", "django", "opentelemetry"],
        "schemaVersion": 41,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-15m", "to": "now"},
        "timezone": "browser",
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels(),
    }


def main() -> None:
    path = Path(__file__).with_name("flowtrace.json")
    path.write_text(json.dumps(dashboard(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
