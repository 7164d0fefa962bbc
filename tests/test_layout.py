"""Replaying a learned request shape gives the same bytes and totals as building it."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from flowtrace import FlowTrace
from flowtrace import semconv as sc
from flowtrace.build.tree import build
from flowtrace.capture.queue_time import queue_ns
from flowtrace.capture.request_info import queue_header
from flowtrace.capture.timeline import TEMPLATE, VIEW, Timeline
from flowtrace.export.direct import DirectSpanSink
from flowtrace.export.layout import measure, shape_key, slots_of
from flowtrace.export.recorder import Recorder
from tests.test_otlp_encode import CapturingSender, CountingIds
from tests.wsgi_client import call

PATHS = ["/hello", "/db", "/stream", "/items/2/", "/deferred", "/cached", "/boom", "/missing",
         "/download", "/hello?x=1", "/page"]  # fmt: skip
QUEUED = {"X-Request-Start": f"t={int(time.time() * 1e6 - 2000)}"}


def _recorded(app: FlowTrace, repeat: int) -> list[Timeline]:
    timelines: list[Timeline] = []
    app._pipeline.submit = timelines.append  # type: ignore[union-attr,method-assign]
    for _ in range(repeat):
        for path in PATHS:
            call(app, path.split("?")[0], query=path.partition("?")[2])
            call(app, path.split("?")[0], headers=QUEUED)
    return timelines


@pytest.fixture(scope="module")
def setup() -> tuple[FlowTrace, TracerProvider, CountingIds, list[Timeline]]:
    from django.core.handlers.wsgi import WSGIHandler

    ids = CountingIds()
    resource = Resource.create({"service.name": "layout-test"})
    provider = TracerProvider(resource=resource, id_generator=ids)
    app = FlowTrace(WSGIHandler(), tracer_provider=provider, metrics=False, span_export="direct")
    return app, provider, ids, _recorded(app, repeat=4)


def _bodies(app: FlowTrace, provider: TracerProvider, ids: CountingIds,
            timelines: list[Timeline], replay: bool) -> tuple[list[bytes], int]:  # fmt: skip
    sender = CapturingSender()
    sink = DirectSpanSink(provider, sender)
    recorder = Recorder(app.config, sink, None)
    if not replay:
        recorder.layouts = None
    replayed = 0
    original = sink.emit_layout

    def counting(*args: Any, **kwargs: Any) -> int:
        nonlocal replayed
        replayed += 1
        return original(*args, **kwargs)

    sink.emit_layout = counting  # type: ignore[method-assign]
    for tl in timelines:
        ids.next = 1000  # the same span ids for the same request on both paths
        recorder(tl)
        sink.send_pending()
    return sender.bodies, replayed


def test_replayed_spans_are_byte_for_byte_the_built_ones(setup: Any) -> None:
    app, provider, ids, timelines = setup
    built, none = _bodies(app, provider, ids, timelines, replay=False)
    replayed_bodies, replayed = _bodies(app, provider, ids, timelines, replay=True)
    assert none == 0
    # every shape is learned the second time and replayed from the third: about half
    # of these requests (43 of 80 here); a quarter keeps the check from being vacuous
    assert replayed >= len(timelines) // 4, (replayed, len(timelines))
    assert len(replayed_bodies) == len(built) == len(timelines)
    for tl, ours, theirs in zip(timelines, replayed_bodies, built, strict=True):
        assert ours == theirs, tl.request


def test_replayed_stage_totals_equal_the_tree(setup: Any) -> None:
    app, provider, _, timelines = setup
    sink = DirectSpanSink(provider, CapturingSender())
    layouts = sink.layouts
    checked = 0
    for tl in timelines:
        queue = queue_ns(queue_header(tl.request), tl.wall_ns, app.config.max_queue_time)
        key = shape_key(tl, queue)
        if key is None:
            continue
        slots = slots_of(tl, queue)
        tree = build(tl, app.config, queue)
        layout = layouts.find(key, slots)
        if layout is None:
            layouts.learn(key, measure(tree, slots), tree.root, slots, (None, 0, 0))
            continue
        assert layout.stage_totals(slots) == tree.stage_totals()
        assert layout.queries == tree.count(sc.DB)
        assert layout.resolved == tree.resolved
        checked += 1
    assert checked >= len(timelines) // 4


def test_a_request_whose_times_sort_differently_is_not_replayed(setup: Any) -> None:
    app, provider, _, timelines = setup
    layouts = DirectSpanSink(provider, CapturingSender()).layouts
    rendered = [tl for tl in timelines if any(e[0] == TEMPLATE for e in tl.events)]
    tl = next(t for t in rendered if "deferred" not in str(t.request))  # rendered in the view
    key, slots = shape_key(tl, None), slots_of(tl, None)
    for _ in range(2):
        tree = build(tl, app.config, None)
        layouts.learn(key, measure(tree, slots), tree.root, slots, (None, 0, 0))
    assert layouts.find(key, slots) is not None
    # the same events, but the template now renders after the view returned
    moved = copy.copy(tl)
    view = next(e for e in tl.events if e[0] == VIEW)
    moved.events = [
        (kind, view[2] + 10 + (t0 - view[1]), view[2] + 10 + (t1 - view[1]), payload)
        if kind == TEMPLATE else (kind, t0, t1, payload)
        for kind, t0, t1, payload in tl.events
    ]  # fmt: skip
    assert shape_key(moved, None) == key
    assert layouts.find(key, slots_of(moved, None)) is None
    tied = list(slots)
    tied[1] = tied[0]  # two timestamps equal: never replayed
    assert layouts.find(key, tied) is None
