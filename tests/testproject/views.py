"""Views with a known delay in one stage each (``?ms=N``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse


def _ms(request: HttpRequest) -> float:
    return float(request.GET.get("ms", "0"))


def slow_view(request: HttpRequest) -> HttpResponse:
    time.sleep(_ms(request) / 1000)
    return HttpResponse("slow view", content_type="text/plain")


def slow_template(request: HttpRequest) -> HttpResponse:
    return render(request, "t/slow.html", {"ms": _ms(request)})


def slow_deferred(request: HttpRequest) -> TemplateResponse:
    return TemplateResponse(request, "t/slow.html", {"ms": _ms(request)})


def slow_query(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT flowtrace_sleep(%s)", [_ms(request)])
    return HttpResponse("slow query", content_type="text/plain")


def slow_stream(request: HttpRequest) -> StreamingHttpResponse:
    ms, chunks = _ms(request), int(request.GET.get("chunks", "4"))

    def body() -> Iterator[bytes]:
        for _ in range(chunks):
            time.sleep(ms / 1000 / chunks)
            yield b"chunk\n"

    return StreamingHttpResponse(body(), content_type="text/plain")


class _SlowCloseResponse(HttpResponse):
    delay = 0.0

    def close(self) -> None:
        time.sleep(self.delay)
        super().close()


def slow_close(request: HttpRequest) -> HttpResponse:
    response = _SlowCloseResponse("slow close", content_type="text/plain")
    response.delay = _ms(request) / 1000
    return response


def echo_secret(request: HttpRequest) -> HttpResponse:
    """Reads everything a secret could hide in, and queries with a parameter."""
    token = request.GET.get("token", "") + request.POST.get("password", "")
    if request.content_type == "application/json":
        token += json.loads(request.body).get("password", "")
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [token or request.COOKIES.get("sessionid", "")])
    return HttpResponse("ok", content_type="text/plain")


def marker(request: HttpRequest, marker: str) -> HttpResponse:
    """A per-request marker in a child span (the SQL text): traces must not mix."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT '{marker}'")  # a slug: letters, digits, - and _ only
    return HttpResponse(marker, content_type="text/plain")


def method_view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    return HttpResponse(request.method or "", content_type="text/plain")
