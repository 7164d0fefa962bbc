"""The tree-less stage totals (unsampled requests' metrics) equal the tree's."""

from __future__ import annotations

import contextlib
import time

import pytest

from flowtrace.build.totals import stage_totals
from flowtrace.build.tree import build
from flowtrace.capture.queue_time import queue_ns
from flowtrace.capture.request_info import queue_header
from flowtrace.regression.replay import ProfiledApp
from tests.wsgi_client import call

PATHS = ["/hello", "/db", "/stream", "/items/3/", "/items/999/", "/deferred", "/cached",
         "/download", "/boom", "/no/such/page", "/t/slow-view?ms=1", "/t/slow-template?ms=1",
         "/t/slow-deferred?ms=1", "/t/slow-query?ms=1", "/t/slow-stream?ms=1",
         "/t/slow-close?ms=1", "/t/marker/abc"]  # fmt: skip


@pytest.fixture(scope="module")
def app() -> ProfiledApp:
    from django.core.handlers.wsgi import WSGIHandler

    return ProfiledApp(WSGIHandler())


@pytest.mark.parametrize("path", PATHS)
def test_tree_less_totals_equal_the_trees(app: ProfiledApp, path: str) -> None:
    route, _, query = path.partition("?")
    start = f"t={time.time() - 0.003:.6f}"  # 3 ms in front of the server: a queue stage
    for headers in ({}, {"X-Request-Start": start}):
        with contextlib.suppress(Exception):  # /boom re-raises
            call(app, route, query=query, headers=headers)
        tl = app.finished.pop()
        queue = queue_ns(queue_header(tl.request), tl.wall_ns, app.config.max_queue_time)
        tree = build(tl, app.config, queue)
        totals, resolved, queries = stage_totals(tl, queue)
        assert totals == tree.stage_totals()
        assert sum(totals.values()) == tree.root.duration
        assert resolved == tree.resolved and queries == tree.count("db")
        assert ("queue" in totals) == bool(headers)
