"""Real application code (issue #11): patterns our lab app never used.

Each test here failed on the code before the fix it covers (checked by
running this file against the previous commit; see docs/reliability.md).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import django
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import override_settings

from flowtrace.capture.django.calls import QueryTimer
from tests.metrics import points as metric_points
from tests.testproject import realworld
from tests.wsgi_client import call


def _by_stage(spans: list[Any], stage: str) -> list[Any]:
    return [s for s in spans if s.attributes.get("flowtrace.stage") == stage]


def _root(spans: list[Any]) -> Any:
    [root] = [s for s in spans if s.kind.name == "SERVER"]
    return root


# --- 1. execute_wrapper ---------------------------------------------------------------


def test_a_users_execute_wrapper_never_takes_the_timer_or_leaks(make_inprocess: Any) -> None:
    """A worker thread started after flowtrace (gthread, runserver) gets its own
    connection object; the view opens the connection inside its with-block."""
    inproc = make_inprocess()
    realworld.WRAPPER_CALLS.clear()
    seen: dict[str, Any] = {}

    def worker() -> None:
        seen["bodies"] = [call(inproc.app, "/r/wrapper").body for _ in range(3)]
        seen["wrappers"] = list(connection.execute_wrappers)
        connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert seen["bodies"] == [b"1"] * 3  # after the block: the timer only
    assert [type(w) for w in seen["wrappers"]] == [QueryTimer]  # nothing left behind
    assert realworld.WRAPPER_CALLS == ["SELECT 1"] * 3  # the user's wrapper ran each time
    timed = [
        s for s in _by_stage(inproc.spans(), "db") if s.attributes["db.query.text"] == "SELECT 1"
    ]
    assert len(timed) == 3


# --- 2. async views -----------------------------------------------------------------


@pytest.mark.parametrize("path, body", [
    ("/r/async-cbv", b"async class-based view"),
    ("/r/async-fn", b"async function view"),
    ("/hello", b"Hello, world!\n"),
])  # fmt: skip
def test_async_and_sync_views_work_and_are_timed(
    make_inprocess: Any, path: str, body: bytes
) -> None:
    inproc = make_inprocess()
    result = call(inproc.app, path)
    assert (result.status, result.body) == ("200 OK", body)
    [view] = _by_stage(inproc.spans(), "view")
    assert view.end_time > view.start_time


# --- 3. the exception receiver ------------------------------------------------------


def test_an_exception_whose_str_raises_still_gets_djangos_500(make_inprocess: Any) -> None:
    bare = call(WSGIHandler(), "/r/unprintable")
    inproc = make_inprocess()
    result = call(inproc.app, "/r/unprintable")
    assert (result.status, result.body) == (bare.status, bare.body) == (
        "500 Internal Server Error", bare.body)  # fmt: skip
    event = _root(inproc.spans()).events[0]
    assert event.attributes["exception.type"] == "Unprintable"


# --- 4. DEBUG error pages -----------------------------------------------------------


def _normalised(page: bytes) -> str:
    text = page.decode()
    text = re.sub(r"0x[0-9a-f]+|\d{9,}", "?", text)  # addresses and ids
    return re.sub(r"Server time:.*?\n.*?\n", "", text, flags=re.S)


@override_settings(DEBUG=True)
def test_debug_error_page_is_the_same_as_without_flowtrace(make_inprocess: Any) -> None:
    bare = call(WSGIHandler(), "/boom")
    inproc = make_inprocess()
    traced = call(inproc.app, "/boom")
    assert traced.status == bare.status == "500 Internal Server Error"
    page = traced.body.decode()
    assert not re.search(r"flowtrace[./]capture|timed_view|_TimedHook|timed_resolve", page)
    traced_text, bare_text = _normalised(traced.body), _normalised(bare.body)
    if traced_text != bare_text:  # show the first difference, not 40 KB of HTML
        at = next(i for i, (a, b) in enumerate(zip(traced_text, bare_text, strict=False)) if a != b)
        around = slice(max(at - 300, 0), at + 300)
        pytest.fail(f"pages differ: {traced_text[around]!r}\n{bare_text[around]!r}")
    templates = _by_stage(inproc.spans(), "template")
    assert [t.attributes["flowtrace.template.name"] for t in templates] == ["<django debug page>"]
    assert "flowtrace.template.deferred" not in templates[0].attributes  # the view raised


# --- 6. cache calls inside cache calls -------------------------------------------------


def test_cache_batch_calls_are_counted_once(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/cache-batch")
    ops = [s.attributes["flowtrace.cache.operation"] for s in _by_stage(inproc.spans(), "cache")]
    assert sorted(ops) == sorted(["set_many", "get_many", "get_or_set", "incr", "decr"])
    [get_many] = [s for s in _by_stage(inproc.spans(), "cache")
                  if s.attributes["flowtrace.cache.operation"] == "get_many"]  # fmt: skip
    assert (get_many.attributes["flowtrace.cache.hits"],
            get_many.attributes["flowtrace.cache.misses"]) == (2, 1)  # fmt: skip


def test_async_cache_path_is_unchanged(make_inprocess: Any) -> None:
    """Django 6.1's BaseCache.a* methods test ``self.method.__func__ is not
    BaseCache.method``: wrapping must keep that answer for inherited methods."""
    from django.core.cache import cache
    from django.core.cache.backends.base import BaseCache

    before = {name: getattr(cache, name).__func__ is getattr(BaseCache, name)
              for name in ("get_many", "set_many", "has_key", "incr", "get_or_set")}  # fmt: skip
    make_inprocess()
    after = {name: getattr(cache, name).__func__ is getattr(BaseCache, name) for name in before}
    assert after == before


# --- 8. the OpenTelemetry context in the body and in close() -------------------------


@pytest.mark.parametrize("path, name", [
    ("/r/streamed-spans", "made while streaming"),
    ("/r/finished-span", "made in request_finished"),
])  # fmt: skip
def test_spans_made_in_the_body_or_at_close_join_the_trace(make_inprocess: Any, path: str,
                                                           name: str) -> None:  # fmt: skip
    from opentelemetry import trace

    from tests.conftest import InProcess

    inproc: InProcess = make_inprocess()
    original = trace.get_tracer_provider
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace.get_tracer_provider = lambda: inproc.tracer_provider  # type: ignore[assignment]
    realworld.tracer = inproc.tracer_provider.get_tracer("tests")
    try:
        call(inproc.app, path)
    finally:
        trace.get_tracer_provider = original  # type: ignore[assignment]
        from django.core.signals import request_finished

        request_finished.disconnect(dispatch_uid="tests.realworld.finished")
    spans = inproc.spans()
    [made] = [s for s in spans if s.name == name]
    root = _root(spans)
    assert made.context.trace_id == root.context.trace_id
    assert made.parent.span_id == root.context.span_id


# --- 9. forged queue time -----------------------------------------------------------


def _queue(seconds_ago: float) -> dict[str, str]:
    return {"X-Request-Start": f"t={time.time() - seconds_ago:.3f}"}


def test_a_forged_queue_header_from_a_client_is_ignored(make_inprocess: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    inproc = make_inprocess()
    exporter = InMemorySpanExporter()
    unsampled = TracerProvider(sampler=ALWAYS_OFF)  # nothing exported unless kept
    unsampled.add_span_processor(SimpleSpanProcessor(exporter))
    inproc.app._spans.__init__(unsampled)
    call(inproc.app, "/hello", headers=_queue(299), REMOTE_ADDR="203.0.113.7")  # a client
    call(inproc.app, "/hello", headers=_queue(299), REMOTE_ADDR="127.0.0.1")  # the proxy
    inproc.app.flush()
    assert exporter.get_finished_spans() == ()  # queue time never makes a request "slow"
    data = inproc.reader.get_metrics_data()
    points = {(name, p.attributes.get("flowtrace.stage")): p for name, p in metric_points(data)}
    assert points[("flowtrace.stage.duration", "queue")].count == 1  # from the proxy only
    http = points[("http.server.request.duration", None)]
    assert http.count == 2 and http.max < 1.0  # the server's own time: no queue in it
    assert points[("flowtrace.request.duration", None)].max > 298  # the whole life of it


# --- 16. http.server.request.duration and unmatched routes ----------------------------


def test_http_server_metric_has_the_semconv_attributes(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/hello")
    call(inproc.app, "/no/such/page")
    inproc.app._pipeline.flush()
    data = inproc.reader.get_metrics_data()
    attrs = [dict(p.attributes) for _, p in metric_points(data, "http.server.request.duration")]
    assert {"url.scheme": "http", "network.protocol.version": "1.0", "http.route": "/hello",
            "http.request.method": "GET", "http.response.status_code": 200} in attrs  # fmt: skip
    [missing] = [a for a in attrs if a["http.response.status_code"] == 404]
    assert "http.route" not in missing
    roots = {s.attributes["url.path"]: s for s in inproc.spans() if s.kind.name == "SERVER"}
    assert (
        roots["/no/such/page"].name == "GET"
        and "http.route" not in roots["/no/such/page"].attributes
    )


# --- 17. database spans -------------------------------------------------------------


def test_db_spans_follow_the_database_conventions(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/cte")
    call(inproc.app, "/r/failing-query")
    db = _by_stage(inproc.spans(), "db")
    [cte] = [s for s in db if s.attributes["db.query.text"].startswith("WITH")]
    assert cte.attributes["db.operation.name"] == "SELECT"
    assert cte.attributes["db.system.name"] == "sqlite"
    assert cte.attributes["db.namespace"].endswith(".sqlite3")
    [failed] = [s for s in db if "no_such_table_here" in s.attributes["db.query.text"]]
    assert failed.attributes["error.type"] == "OperationalError"
    assert failed.status.status_code.name == "ERROR"


# --- 18. view names, debug templates ------------------------------------------------


def test_class_based_views_keep_their_class(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/page")
    call(inproc.app, "/r/async-cbv")
    names = sorted(s.name for s in _by_stage(inproc.spans(), "view"))
    assert names == ["tests.testproject.realworld.AsyncPage.get",
                     "tests.testproject.realworld.Page.get"]  # fmt: skip


def test_admin_views_are_named_by_their_site_method() -> None:
    from django.contrib.admin import site

    from flowtrace.build.names import view_name

    assert (
        view_name(site.admin_view(site.index), "GET")
        == "django.contrib.admin.sites.AdminSite.index"
    )


# --- 19. privacy --------------------------------------------------------------------


def test_secret_looking_route_parameters_are_masked_in_url_path(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/reset/MQ/c2f-9a1b7e/", headers={"User-Agent": "agent-x"})
    root = _root(inproc.spans())
    assert root.attributes["url.path"] == "/r/reset/{uidb64}/{token}/"
    assert root.attributes["http.route"] == "/r/reset/<uidb64>/<token>/"
    assert root.attributes["user_agent.original"] == "agent-x"
    inproc = make_inprocess(url_path="full", record_user_agent=False)
    call(inproc.app, "/r/reset/MQ/c2f-9a1b7e/", headers={"User-Agent": "agent-x"})
    root = _root(inproc.spans())
    assert root.attributes["url.path"] == "/r/reset/MQ/c2f-9a1b7e/"
    assert "user_agent.original" not in root.attributes
    inproc = make_inprocess(url_path=lambda path, match: path.rsplit("/", 2)[0] + "/…/")
    call(inproc.app, "/r/reset/MQ/c2f-9a1b7e/")
    assert _root(inproc.spans()).attributes["url.path"] == "/r/reset/MQ/…/"


def test_exception_messages_are_opt_in(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/integrity")
    event = _root(inproc.spans()).events[0]
    assert "alice@example.com" not in str(dict(event.attributes))
    assert _root(inproc.spans()).status.description == "ValueError"
    inproc = make_inprocess(record_exception_messages=True)
    call(inproc.app, "/r/integrity")
    event = _root(inproc.spans()).events[0]
    assert event.attributes["exception.message"] == "duplicate key: email=alice@example.com"


# --- routes -------------------------------------------------------------------------


def test_regex_routes_are_rendered_as_templates(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/legacy/2024/hello-world/")
    assert _root(inproc.spans()).attributes["http.route"] == "/r/legacy/{year}/{slug}/"


# --- found in review ------------------------------------------------------------------


def test_concurrent_async_cache_calls_are_each_counted(make_inprocess: Any) -> None:
    """The "call inside a call" marker is per task: asyncio.gather's calls on one
    backend are separate calls, and later calls are still recorded."""
    inproc = make_inprocess()
    assert call(inproc.app, "/r/async-cache").body == b"ok"
    ops: dict[str, int] = {}
    for span in _by_stage(inproc.spans(), "cache"):  # repeated calls are coalesced spans
        op = span.attributes["flowtrace.cache.operation"]
        ops[op] = ops.get(op, 0) + span.attributes.get("flowtrace.coalesced.count", 1)
    assert ops == {"get": 3, "get_many": 1, "set": 2}


@override_settings(DEBUG=True)
def test_a_failing_deferred_render_and_the_debug_page(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    assert call(inproc.app, "/r/broken-deferred").status == "500 Internal Server Error"
    templates = {
        s.attributes["flowtrace.template.name"]: s for s in _by_stage(inproc.spans(), "template")
    }
    broken, page = templates["t/broken.html"], templates["<django debug page>"]
    assert broken.attributes["flowtrace.template.deferred"] is True  # the deferred render...
    assert broken.attributes["error.type"] == "NoReverseMatch"  # ... that failed
    assert broken.status.status_code.name == "ERROR"
    assert "flowtrace.template.deferred" not in page.attributes  # Django's 500 page is not


def test_route_parameters_that_are_not_strings_are_masked(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/r/download/1c3fd2b0-7f3b-4c65-9c4b-0f4d5a6b7c8d/file")
    assert _root(inproc.spans()).attributes["url.path"] == "/r/download/{token}/file"


@pytest.mark.parametrize("vendor, mariadb, expected", [
    ("postgresql", None, "postgresql"), ("sqlite", None, "sqlite"), ("mysql", None, "mysql"),
    ("mysql", True, "mariadb"), ("oracle", None, "oracle.db"),
    ("microsoft", None, "microsoft.sql_server"),
])  # fmt: skip
def test_db_system_names(vendor: str, mariadb: bool | None, expected: str) -> None:
    from flowtrace.build.sql import connection_attributes
    from flowtrace.capture.django.calls import db_system

    class Connection:  # Django's wrapper: vendor is a class attribute, mysql_is_mariadb cached
        pass

    connection = Connection()
    connection.vendor = vendor  # type: ignore[attr-defined]
    if mariadb is not None:
        connection.mysql_is_mariadb = mariadb  # type: ignore[attr-defined]
    assert db_system(connection) == expected
    legacy = dict(connection_attributes("default", expected))["db.system"]
    assert legacy == {"oracle.db": "oracle", "microsoft.sql_server": "mssql"}.get(
        expected, expected
    )


@pytest.mark.skipif(django.VERSION < (6, 0), reason="template partials arrived in Django 6.0")
def test_django_6_template_partials_are_template_stages(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    result = call(inproc.app, "/r/partials")
    assert result.body.count(b"<li>") == 3
    spans = _by_stage(inproc.spans(), "template")
    [page] = [s for s in spans if s.name == "render t/partials.html"]
    # the two {% partial row %} renders inside the page are one coalesced span under it;
    # the view's own get_template("t/partials.html#row") render is its sibling
    inside = [(s.name, s.attributes.get("flowtrace.coalesced.count"))
              for s in spans if s.parent.span_id == page.context.span_id]  # fmt: skip
    beside = [s.name for s in spans if s.parent.span_id == page.parent.span_id]
    assert inside == [("render t/partials.html#row ×2", 2)]
    assert sorted(beside) == ["render t/partials.html", "render t/partials.html#row"]
