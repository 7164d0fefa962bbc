"""Demo views: one per kind of stage flowtrace shows."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from django.core.cache import cache
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.response import TemplateResponse

from flowtrace.demo.models import Item

_CHUNK = b"x" * 1024


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def db(request: HttpRequest) -> HttpResponse:
    items = list(Item.objects.all()[:5])
    total = Item.objects.count()
    return render(request, "demo/items.html", {"items": items, "total": total})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield _CHUNK

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def item(request: HttpRequest, pk: int) -> HttpResponse:
    obj = get_object_or_404(Item, pk=pk)
    return HttpResponse(f"{obj.name}: {obj.price}\n", content_type="text/plain")


def deferred(request: HttpRequest) -> TemplateResponse:
    """Rendered by Django after the view returns (deferred template stage)."""
    return TemplateResponse(request, "demo/items.html", {"items": [], "total": 0})


def cached(request: HttpRequest) -> HttpResponse:
    value = cache.get("demo:greeting")
    if value is None:
        value = "cached hello"
        cache.set("demo:greeting", value, 60)
    return HttpResponse(value, content_type="text/plain")


def download(request: HttpRequest) -> FileResponse:
    """A FileResponse: the WSGI server's file wrapper (sendfile) is kept."""
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    handle.write(_CHUNK * 64)
    handle.seek(0)
    return FileResponse(handle, content_type="application/octet-stream")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("demo failure")
