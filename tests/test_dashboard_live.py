"""Every dashboard query against a real Prometheus scraping flowtrace's metrics."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard_queries import load, promql_targets, split_label_values, substitute
from tests.dashboard_queries import variable_queries as dashboard_variable_queries
from tests.prometheus import Prometheus, binary, free_port, running_prometheus
from tests.servers import GunicornServer, gunicorn

SERVICE = "flowtrace-live"
SERIES: list[tuple[str, str, int]] = []  # (panel, refId, series returned): for the notes
ROUTES = ["/hello", "/db", "/stream", "/items/2/", "/deferred", "/cached", "/t/slow-query?ms=3",
          "/boom", "/no/such/page"]  # fmt: skip
WAVES = 4


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[GunicornServer, Prometheus]]:
    binary("prometheus")
    metrics_port = free_port()
    env = {
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "FLOWTRACE_EXPORT_INTERVAL": "0.05",
        "FLOWTRACE_STRICT": "1",
        "FLOWTRACE_DEMO_DB": os.environ["FLOWTRACE_DEMO_DB"],
    }
    # The scrape adds service_name, as the compose stack's Collector promotes service.name.
    with (
        gunicorn("tests.testproject.wsgi:traced", env) as server,
        running_prometheus(f"127.0.0.1:{metrics_port}", {"service_name": SERVICE}) as prometheus,
    ):
        total = f'sum(flowtrace_request_duration_seconds_count{{service_name="{SERVICE}"}})'
        sent = 1  # wait_ready's /hello
        for _ in range(WAVES):  # spread over several scrapes so that rate() has samples
            for route in ROUTES:
                queue = {"X-Request-Start": f"t={time.time():.6f}"}
                server.request(route, queue)
                sent += 1
            prometheus.wait_for(total, sent)
        yield server, prometheus


def _variables(prometheus: Prometheus) -> dict[str, str]:
    return {"$service": SERVICE, "$route": ".*", "$method": ".*", "$slow": "500ms"}


def test_every_variable_query_returns_values(live: tuple[GunicornServer, Prometheus]) -> None:
    _, prometheus = live
    for query in dashboard_variable_queries(load()):
        selector, label = split_label_values(substitute(query, _variables(prometheus)))
        values = {s[label] for s in prometheus.series(selector) if label in s}
        assert values, query
        if label == "http_route":
            assert {"/hello", "/db", "/items/<int:pk>/", "(unmatched)"} <= values


def test_every_panel_query_returns_data_with_its_labels(
    live: tuple[GunicornServer, Prometheus],
) -> None:
    _, prometheus = live
    checked = 0
    for panel, target in promql_targets(load()):
        result = prometheus.query(substitute(target["expr"], _variables(prometheus)))
        SERIES.append((panel["title"], target["refId"], len(result)))
        assert result, (panel["title"], target["expr"])
        wanted = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
        if panel["type"] == "table":
            wanted |= {"http_route"}
        for series in result:
            assert wanted <= set(series["metric"]), (panel["title"], series["metric"])
        values = [float(s["value"][1]) for s in result]
        assert any(v == v for v in values), (panel["title"], "all NaN")  # NaN != NaN
        checked += 1
    assert checked >= 15


def test_stage_means_add_up_to_the_request_mean(live: tuple[GunicornServer, Prometheus]) -> None:
    _, prometheus = live
    [stacked] = [p for p in load()["panels"] if p["id"] == 2]
    exprs = {t["refId"]: substitute(t["expr"], _variables(prometheus)) for t in stacked["targets"]}
    stages = prometheus.query(exprs["A"])
    assert {s["metric"]["flowtrace_stage"] for s in stages} >= {
        "queue", "setup", "middleware", "url_resolution", "view", "db", "template", "streaming",
        "close"}  # fmt: skip
    stacked_total = sum(float(s["value"][1]) for s in stages)
    request_mean = prometheus.scalar(exprs["B"])
    # rate() extrapolates each young series by its own values, so on a few seconds of
    # data the two sides differ by ~1-2 %; they converge on long-running series.
    assert stacked_total == pytest.approx(request_mean, rel=0.05)
    # The data itself adds up exactly: all stage sums == all request sums.
    selector = f'{{service_name="{SERVICE}"}}'
    stage_sum = prometheus.scalar(f"sum(flowtrace_stage_duration_seconds_sum{selector})")
    request_sum = prometheus.scalar(f"sum(flowtrace_request_duration_seconds_sum{selector})")
    assert stage_sum == pytest.approx(request_sum, rel=1e-6)


def prometheus3_name(name: str, unit: str, kind: str) -> str:
    """The OTLP -> Prometheus 3 translation (UnderscoreEscapingWithSuffixes), which the
    OpenTelemetry Prometheus exporter applies too: dots -> underscores, unit suffix, _total."""
    units = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    suffix = units.get(unit, "") if not unit.startswith("{") else ""
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    return base + ("_total" if kind == "counter" else "")


def test_scrape_names_match_the_otlp_translation(live: tuple[GunicornServer, Prometheus]) -> None:
    from flowtrace import semconv as sc

    _, prometheus = live
    names = set(prometheus.get("/api/v1/label/__name__/values"))
    histograms = [(sc.STAGE_DURATION, sc.UNIT_SECONDS), (sc.REQUEST_DURATION, sc.UNIT_SECONDS),
                  (sc.DB_QUERIES, sc.UNIT_QUERIES), (sc.TTFB, sc.UNIT_SECONDS),
                  (sc.HTTP_SERVER_DURATION, sc.UNIT_SECONDS)]  # fmt: skip
    for name, unit in histograms:
        base = prometheus3_name(name, unit, "histogram")
        assert {base + "_bucket", base + "_sum", base + "_count"} <= names, base
    assert prometheus3_name(sc.DROPPED, sc.UNIT_REQUESTS, "counter") in names
    labels = set(prometheus.get("/api/v1/labels"))
    for attribute in (sc.ATTR_STAGE, sc.HTTP_ROUTE, sc.HTTP_METHOD, sc.HTTP_STATUS, sc.ERROR_TYPE):
        assert attribute.replace(".", "_") in labels


def test_series_counts_for_the_notes(live: Any) -> None:
    assert SERIES  # filled by the panel test; printed in the terminal summary
