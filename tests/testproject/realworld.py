"""Views written the way real application code is, not the way our lab app is:
async class-based views, a user's own ``execute_wrapper``, exceptions that
refuse to print, spans made inside a streaming body, cache batch calls,
CTEs, failing queries, class-based and password-reset-style URLs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

from django.core.cache import cache
from django.core.signals import request_finished
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, re_path
from django.views import View
from django.views.generic import TemplateView
from opentelemetry import trace

tracer = trace.get_tracer("tests.realworld")

#: What the user's execute_wrapper saw (queries), for the leak test.
WRAPPER_CALLS: list[str] = []


def user_wrapper(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
    WRAPPER_CALLS.append(str(sql))
    return execute(sql, params, many, context)


def wrapper_view(request: HttpRequest) -> HttpResponse:
    """Django's documented pattern; the connection opens inside the block."""
    connection.close()  # as CONN_MAX_AGE=0 does between requests
    with connection.execute_wrapper(user_wrapper), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse(str(len(connection.execute_wrappers)), content_type="text/plain")


class AsyncPage(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse("async class-based view", content_type="text/plain")


async def async_function(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse("async function view", content_type="text/plain")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")


def unprintable(request: HttpRequest) -> HttpResponse:
    raise Unprintable()


def integrity(request: HttpRequest) -> HttpResponse:
    email = request.GET.get("email", "alice" + "@example.com")  # not in the source line
    raise ValueError(f"duplicate key: email={email}")


def streamed_spans(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:
        with tracer.start_as_current_span("made while streaming"):
            yield b"streamed"

    return StreamingHttpResponse(body(), content_type="text/plain")


def on_finished(sender: Any, **kwargs: Any) -> None:
    with tracer.start_as_current_span("made in request_finished"):
        pass


def finished_span(request: HttpRequest) -> HttpResponse:
    request_finished.connect(on_finished, dispatch_uid="tests.realworld.finished")
    response = HttpResponse("ok", content_type="text/plain")
    return response


def cache_batch(request: HttpRequest) -> HttpResponse:
    cache.set_many({"rw:a": 1, "rw:b": 2})
    found = cache.get_many(["rw:a", "rw:b", "rw:missing"])
    cache.get_or_set("rw:c", 3)
    cache.incr("rw:a")
    cache.decr("rw:a")
    return HttpResponse(str(sorted(found)), content_type="text/plain")


async def async_cache(request: HttpRequest) -> HttpResponse:
    """Concurrent async cache calls in one request, then sync ones."""
    from asgiref.sync import sync_to_async
    from django.core.cache import caches

    first, second = caches["default"], caches["other"]
    await asyncio.gather(first.aset("rw:x", 1), second.aset("rw:y", 2), first.aget("rw:x"),
                         first.aget("rw:z"))  # fmt: skip
    await sync_to_async(first.get)("rw:x")
    await sync_to_async(first.get_many)(["rw:x", "rw:y"])
    return HttpResponse("ok", content_type="text/plain")


def broken_deferred(request: HttpRequest) -> TemplateResponse:
    """Returns normally; the deferred render then raises (NoReverseMatch)."""
    return TemplateResponse(request, "t/broken.html", {})


def download(request: HttpRequest, token: uuid.UUID) -> HttpResponse:
    return HttpResponse("file", content_type="text/plain")


def partials(request: HttpRequest) -> HttpResponse:
    """Django 6 template partials: {% partial %} and get_template("page.html#name")."""
    from django.template.loader import get_template, render_to_string

    page = render_to_string("t/partials.html", {"items": ["a", "b"]})
    row = get_template("t/partials.html#row").render({"item": "c"})
    return HttpResponse(page + row, content_type="text/html")


def heavy(request: HttpRequest) -> HttpResponse:
    """A CMS-like page: 50 executions of one query and 200 cache calls."""
    with connection.cursor() as cursor:
        for _ in range(50):
            cursor.execute("SELECT id, name FROM demo_item WHERE id = %s", [1])
    for i in range(200):
        if i % 4 == 0:
            cache.get_many([f"hv:{i}", f"hv:{i + 1}"])
        elif i % 4 == 1:
            cache.set(f"hv:{i}", i)
        else:
            cache.get(f"hv:{i}")
    request.META["tests.route"] = "heavy-page"  # for the route_resolver test
    return HttpResponse("heavy", content_type="text/plain")


def cte(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH numbers(n) AS (SELECT 1 UNION ALL SELECT 2) SELECT sum(n) FROM numbers"
        )
        (total,) = cursor.fetchone()
    return HttpResponse(str(total), content_type="text/plain")


def failing_query(request: HttpRequest) -> HttpResponse:
    from django.db import DatabaseError

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
    except DatabaseError:
        return HttpResponse("handled", content_type="text/plain")
    return HttpResponse("?", content_type="text/plain")


def reset(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    return HttpResponse("reset", content_type="text/plain")


def legacy(request: HttpRequest, year: str, slug: str) -> HttpResponse:
    return HttpResponse(f"{year}/{slug}", content_type="text/plain")


class Page(TemplateView):
    template_name = "demo/items.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {"items": [], "total": 0}


urlpatterns = [
    path("wrapper", wrapper_view),
    path("async-cbv", AsyncPage.as_view()),
    path("async-fn", async_function),
    path("unprintable", unprintable),
    path("integrity", integrity),
    path("streamed-spans", streamed_spans),
    path("finished-span", finished_span),
    path("cache-batch", cache_batch),
    path("cte", cte),
    path("heavy", heavy),
    path("partials", partials),
    path("async-cache", async_cache),
    path("broken-deferred", broken_deferred),
    path("download/<uuid:token>/file", download),
    path("failing-query", failing_query),
    path("reset/<uidb64>/<token>/", reset),
    path("page", Page.as_view()),
    re_path(r"^legacy/(?P<year>[0-9]{4})/(?P<slug>[\w-]+)/$", legacy),
]
