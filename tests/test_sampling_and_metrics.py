"""Metrics are exact for every request; spans follow sampling, plus keep-what-matters."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tests.wsgi_client import call


def _points(inproc: Any, name: str) -> list[Any]:
    inproc.app._pipeline.flush()  # one collection per call (each reports exemplars once)
    data = inproc.reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == name for p in m.data.data_points]  # fmt: skip


def _unsampled(inproc: Any) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inproc.app._spans.__init__(provider)
    return exporter


def test_stage_sums_add_up_to_request_sum(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    for path in ["/hello", "/db", "/stream", "/items/1/", "/deferred", "/cached"]:
        call(inproc.app, path)
    stage_sum = sum(p.sum for p in _points(inproc, "flowtrace.stage.duration"))
    request_sum = sum(p.sum for p in _points(inproc, "flowtrace.request.duration"))
    assert stage_sum == pytest.approx(request_sum, rel=1e-9)
    routes = {p.attributes["http.route"] for p in _points(inproc, "flowtrace.request.duration")}
    assert routes == {"/hello", "/db", "/stream", "/items/<int:pk>/", "/deferred", "/cached"}
    stages = {p.attributes["flowtrace.stage"] for p in _points(inproc, "flowtrace.stage.duration")}
    assert stages == {"setup", "middleware", "url_resolution", "view", "db", "template",
                      "cache", "streaming", "close"}  # fmt: skip


def test_query_count_metric_is_exact(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/db")
    [point] = [p for p in _points(inproc, "flowtrace.db.queries")
               if p.attributes["http.route"] == "/db"]  # fmt: skip
    assert (point.count, point.sum) == (1, 2)


def test_unsampled_requests_still_count_in_metrics(make_inprocess: Any) -> None:
    inproc = make_inprocess(slow_threshold=None)
    exporter = _unsampled(inproc)
    for _ in range(5):
        call(inproc.app, "/hello")
    [point] = _points(inproc, "flowtrace.request.duration")
    assert point.count == 5
    assert exporter.get_finished_spans() == ()


def test_slow_and_failed_requests_are_kept_when_head_sampling_drops_them(
    make_inprocess: Any,
) -> None:
    inproc = make_inprocess(slow_threshold=0.02)
    exporter = _unsampled(inproc)
    call(inproc.app, "/hello")
    call(inproc.app, "/t/slow-view", query="ms=30")
    call(inproc.app, "/boom")
    inproc.app.flush()
    roots = {s.name: s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"}
    assert set(roots) == {"GET /t/slow-view", "GET /boom"}
    assert roots["GET /t/slow-view"].attributes["flowtrace.sampling.kept"] == "slow"
    assert roots["GET /boom"].attributes["flowtrace.sampling.kept"] == "error"


@pytest.mark.parametrize(("mode", "expected"), [("halves", 17), ("combined", 3), ("none", 0)])
def test_middleware_detail_levels(make_inprocess: Any, mode: str, expected: int) -> None:
    inproc = make_inprocess(middleware_spans=mode)
    call(inproc.app, "/hello")
    spans = [s for s in inproc.spans() if s.attributes.get("flowtrace.stage") == "middleware"]
    assert len(spans) == expected
    if mode == "combined":
        request = next(s for s in spans if s.name == "middleware request")
        names = request.attributes["flowtrace.middleware.names"]
        assert names[0] == "django.middleware.security.SecurityMiddleware"
        assert len(request.attributes["flowtrace.middleware.durations"]) == len(names) == 8
    # metrics keep the exact middleware time at every level
    [point] = [p for p in _points(inproc, "flowtrace.stage.duration")
               if p.attributes["flowtrace.stage"] == "middleware"]  # fmt: skip
    assert point.sum > 0


def test_per_middleware_metric_is_opt_in(make_inprocess: Any) -> None:
    inproc = make_inprocess(metrics_per_middleware=True)
    call(inproc.app, "/hello")
    paths = {p.attributes.get("flowtrace.middleware")
             for p in _points(inproc, "flowtrace.stage.duration")
             if p.attributes["flowtrace.stage"] == "middleware"}  # fmt: skip
    assert "django.contrib.sessions.middleware.SessionMiddleware" in paths


def test_cache_calls_report_hits(make_inprocess: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    inproc = make_inprocess()
    call(inproc.app, "/cached")
    call(inproc.app, "/cached")
    gets = [s for s in inproc.spans() if s.name == "cache get"]
    assert [s.attributes["flowtrace.cache.hit"] for s in gets] == [False, True]


def test_random_404_paths_create_no_new_series(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    for i in range(50):
        call(inproc.app, f"/random/{i}/path")
    series = {
        tuple(sorted(p.attributes.items())) for p in _points(inproc, "flowtrace.request.duration")
    }
    assert len(series) == 1


def test_own_aggregation_and_sdk_fallback_agree(
    make_inprocess: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridged = make_inprocess()
    assert bridged.app._metrics.bridged
    monkeypatch.setattr("flowtrace.export.sdk.bridge", lambda provider, aggregation: False)
    fallback = make_inprocess()  # as with an SDK whose internals changed
    assert not fallback.app._metrics.bridged
    for inproc in (bridged, fallback):
        for path in ["/hello", "/db", "/db"]:
            call(inproc.app, path)

    def shape(inproc: Any, name: str) -> set[tuple[Any, ...]]:
        return {(tuple(sorted(p.attributes.items())), p.count, tuple(p.bucket_counts))
                for p in _points(inproc, name)}  # fmt: skip

    assert shape(bridged, "flowtrace.db.queries") == shape(fallback, "flowtrace.db.queries")
    stages = {p[0] for p in shape(bridged, "flowtrace.stage.duration")}
    assert stages == {p[0] for p in shape(fallback, "flowtrace.stage.duration")}
    assert len(stages) >= 8


def test_sampled_requests_leave_exemplars_reported_once(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/hello")
    inproc.app._pipeline.flush()  # spans are exported at once (SimpleSpanProcessor)
    [root] = [s for s in inproc.exporter.get_finished_spans() if s.kind.name == "SERVER"]
    [point] = _points(inproc, "flowtrace.request.duration")
    [exemplar] = point.exemplars
    assert exemplar.trace_id == root.context.trace_id
    assert exemplar.span_id == root.context.span_id
    assert exemplar.value == point.sum
    # as the SDK's reservoir: an exemplar is reported by the collection after it, once
    [point] = _points(inproc, "flowtrace.request.duration")
    assert point.exemplars == [] and point.count == 1


def test_dropped_requests_are_counted(make_inprocess: Any) -> None:
    inproc = make_inprocess(max_pending=1)
    inproc.app._pipeline._thread = object()  # as if the export thread were busy
    for _ in range(3):
        call(inproc.app, "/hello")
    assert inproc.app.dropped == 2
    [point] = _points(inproc, "flowtrace.telemetry.dropped")
    assert point.value == 2


def test_sdk_path_never_overflows_the_applications_batch_processor(make_inprocess: Any) -> None:
    """~20 spans per request arrive in bursts; the processor's queue must get them all."""
    import time

    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class SlowExporter(InMemorySpanExporter):  # the edge: an exporter slower than requests
        def export(self, spans: Any) -> Any:
            time.sleep(0.05)
            return super().export(spans)

    inproc = make_inprocess()
    exporter = SlowExporter()
    provider = TracerProvider()
    # The SDK's default queue (2048 spans) and no timer-driven export: one drain of
    # 150 requests (~3000 spans) is what overflowed it at gunicorn shutdown.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    inproc.app._spans.__init__(provider)
    inproc.app._pipeline._thread = object()  # hold everything for one big drain, as at exit
    for _ in range(150):
        call(inproc.app, "/hello")
    inproc.app.flush()
    roots = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert len(roots) == 150
    assert len(exporter.get_finished_spans()) == sum(
        r.attributes["flowtrace.span_count"] for r in roots
    )
    provider.shutdown()
