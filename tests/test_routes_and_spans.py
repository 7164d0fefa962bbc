"""Routes that mean something and spans that stay bounded (issue #13)."""

from __future__ import annotations

from typing import Any

import pytest

from flowtrace.build.names import render_route
from tests.metrics import points
from tests.wsgi_client import call


@pytest.mark.parametrize("route, expected", [
    ("items/<int:pk>/", "/items/<int:pk>/"),  # path(): as written
    ("", "/"),
    ("robots.txt", "/robots.txt"),
    ("^items/$", "/items/"),  # DRF router, list
    ("^items/(?P<pk>[^/.]+)/$", "/items/{pk}/"),  # DRF router, detail
    ("api/items/(?P<pk>[^/.]+)/$", "/api/items/{pk}/"),  # under path("api/", include(...))
    ("^items/(?P<pk>[^/.]+)/set_price/$", "/items/{pk}/set_price/"),  # a DRF @action
    ("^articles/(?P<year>[0-9]{4})/(?P<slug>[\\w-]+)/$", "/articles/{year}/{slug}/"),
    ("^archive/(\\d{4})/$", "/archive/{0}/"),  # unnamed groups: positional
    ("^static/(?P<path>.*)$", "/static/{path}"),  # django.views.static.serve
    ("^a\\.b/(?P<x>\\d+)\\Z", "/a.b/{x}"),
    # not a template: the regex itself, without a slash glued in front
    ("^items\\.(?P<format>[a-z0-9]+)/?$", "^items\\.(?P<format>[a-z0-9]+)/?$"),
    ("^((?:[\\w\\-]+/)*)$", "/{0}"),  # Wagtail's catch-all (its pages get their type)
    ("^images/([^/]*)/(\\d*)/([^/]*)/[^/]*$", "^images/([^/]*)/(\\d*)/([^/]*)/[^/]*$"),
])  # fmt: skip
def test_regex_routes_read_as_templates(route: str, expected: str) -> None:
    assert render_route(route) == expected


def test_drf_router_patterns_all_render() -> None:
    """Every pattern a DRF DefaultRouter builds for a viewset with an extra action."""
    from rest_framework import routers, viewsets
    from rest_framework.decorators import action
    from rest_framework.response import Response

    class ThingViewSet(viewsets.ViewSet):
        def list(self, request: Any) -> Response:
            return Response([])

        def retrieve(self, request: Any, pk: str) -> Response:
            return Response({})

        @action(detail=True, methods=["post"])
        def archive(self, request: Any, pk: str) -> Response:
            return Response({})

    router = routers.SimpleRouter()
    router.register("things", ThingViewSet, basename="thing")
    rendered = sorted(render_route(str(p.pattern)) for p in router.urls)
    assert rendered == ["/things/", "/things/{pk}/", "/things/{pk}/archive/"]


def _roots(spans: list[Any]) -> list[Any]:
    return [s for s in spans if s.kind.name == "SERVER"]


def test_an_event_heavy_page_stays_under_the_span_budget_with_exact_metrics(
    make_inprocess: Any,
) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/heavy")
    spans = inproc.spans()
    [root] = _roots(spans)
    assert root.attributes["flowtrace.span_count"] == len(spans) < 60  # not ~280
    db = [s for s in spans if s.attributes.get("flowtrace.stage") == "db"]
    [query] = db
    assert query.attributes["flowtrace.coalesced.count"] == 50
    assert (
        query.attributes["flowtrace.coalesced.min"] <= query.attributes["flowtrace.coalesced.max"]
    )
    cache = [s for s in spans if s.attributes.get("flowtrace.stage") == "cache"]
    assert sorted(s.attributes["flowtrace.cache.operation"] for s in cache) == ["get", "get_many",
                                                                                 "set"]  # fmt: skip
    assert sum(s.attributes.get("flowtrace.coalesced.count", 1) for s in cache) == 200
    get_many = next(s for s in cache if s.attributes["flowtrace.cache.operation"] == "get_many")
    assert get_many.attributes["flowtrace.cache.hits"] + get_many.attributes[
        "flowtrace.cache.misses"] == 100  # 50 calls of 2 keys  # fmt: skip
    assert root.attributes["flowtrace.spans.merged"] == 49 + 197
    # N+1: the statement, its executions, and the executions beyond the first
    assert root.attributes["flowtrace.db.duplicates"] == 49
    assert root.attributes["flowtrace.db.duplicate.count"] == 50
    assert root.attributes["flowtrace.db.duplicate.statement"].startswith("SELECT id, name")
    # stages still tile and nest: the exported spans' exclusive times add up to the root
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        if span.parent is not None and span.parent.span_id in by_id:
            parent = by_id[span.parent.span_id]
            assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time
    children: dict[int, int] = {}
    for span in spans:
        if span.parent is not None and span.parent.span_id in by_id:
            children[span.parent.span_id] = children.get(span.parent.span_id, 0) + (
                span.end_time - span.start_time)  # fmt: skip
    exclusive = sum(s.end_time - s.start_time - children.get(s.context.span_id, 0)
                    for s in spans if s is not root)  # fmt: skip
    assert exclusive == root.end_time - root.start_time
    # metrics come from every call, whatever the spans
    data = inproc.reader.get_metrics_data()
    [(_, queries)] = [(n, p) for n, p in points(data, "flowtrace.db.queries")
                      if p.attributes["http.route"] == "/r/heavy"]  # fmt: skip
    assert queries.sum == 50
    [(_, dup)] = [(n, p) for n, p in points(data, "flowtrace.db.duplicates")
                  if p.attributes["http.route"] == "/r/heavy"]  # fmt: skip
    assert dup.sum == 49


def test_a_small_budget_merges_by_stage_then_drops(make_inprocess: Any) -> None:
    """The budget bounds the call spans (db, template, cache): stage spans (middleware,
    view...) are always exported, so the spans below the root are at most the budget or
    the stage spans, whichever is more."""
    inproc = make_inprocess(span_budget=10)
    call(inproc.app, "/r/heavy")
    spans = inproc.spans()
    [root] = _roots(spans)
    calls = [s for s in spans if s.attributes.get("flowtrace.stage") in ("db", "template", "cache")]
    stages = len(spans) - 1 - len(calls)
    assert len(spans) - 1 <= max(10, stages) and calls == []  # 19 stage spans: no room
    assert root.attributes["flowtrace.span_count"] == len(spans)
    assert root.attributes["flowtrace.spans.dropped"] >= 1


def test_call_spans_can_be_switched_off_keeping_their_metrics(make_inprocess: Any) -> None:
    inproc = make_inprocess(db_spans=False, cache_spans=False)
    call(inproc.app, "/r/heavy")
    stages = {s.attributes.get("flowtrace.stage") for s in inproc.spans()}
    assert "db" not in stages and "cache" not in stages and "view" in stages
    data = inproc.reader.get_metrics_data()
    stage_points = {
        p.attributes["flowtrace.stage"] for _, p in points(data, "flowtrace.stage.duration")
    }
    assert {"db", "cache"} <= stage_points


def test_distinct_routes_are_capped(make_inprocess: Any) -> None:
    inproc = make_inprocess(max_routes=3)  # (unmatched) + 2
    for path in ("/hello", "/db", "/items/1/", "/stream", "/hello"):
        call(inproc.app, path)
    inproc.app._pipeline.flush()
    data = inproc.reader.get_metrics_data()
    routes = sorted(
        p.attributes["http.route"] for _, p in points(data, "flowtrace.request.duration")
    )
    assert routes == ["(other)", "/db", "/hello"]
    [(_, overflow)] = points(data, "flowtrace.routes.overflow")
    assert overflow.value == 2


def test_a_route_resolver_under_django(make_inprocess: Any) -> None:
    """Called after the app returned, with the WSGI environ: Django's request.META
    is that environ, so a view, a middleware or a hook can leave the name there."""
    inproc = make_inprocess(route_resolver=lambda environ: environ.get("tests.route"))
    call(inproc.app, "/r/heavy")
    call(inproc.app, "/hello")  # the resolver answers None: Django's route
    names = sorted(s.name for s in _roots(inproc.spans()))
    assert names == ["GET /hello", "GET heavy-page"]


def test_flowtrace_reports_its_own_cost(make_inprocess: Any) -> None:
    """The export thread's CPU, requests and events as counters (rate(cpu)/rate(requests)
    is the cost per request in production), and the mean on every exported root."""
    inproc = make_inprocess()
    for _ in range(5):
        call(inproc.app, "/db")
        inproc.app.flush()  # one drain per request: each is measured before the next
    spans = inproc.spans()
    data = inproc.reader.get_metrics_data()
    counters = {name: p.value for name, p in points(data) if name.startswith("flowtrace.export.")}
    assert counters["flowtrace.export.requests"] == 5
    assert counters["flowtrace.export.events"] > 5 * 10  # middleware layers, queries, templates
    assert 0 < counters["flowtrace.export.cpu_time"] < 5 * 0.05  # seconds: under 50 ms each
    roots = sorted(_roots(spans), key=lambda s: s.start_time)
    costs = [s.attributes.get("flowtrace.export.cpu_per_request") for s in roots]
    # the first was exported before anything was measured: no made-up 0.0
    assert costs[0] is None and len(costs) == 5
    assert all(isinstance(c, float) and c > 0 for c in costs[1:])
