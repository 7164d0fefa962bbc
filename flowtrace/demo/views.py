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


async def async_hello(request: HttpRequest) -> HttpResponse:
    """An async view: under ASGI it runs on the event loop, no thread hand-off."""
    return HttpResponse("hello, async\n", content_type="text/plain")


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


def page(request: HttpRequest) -> TemplateResponse:
    """A CMS-like page: ~50 queries (some repeated), 26 template renders (5 sections of
    4 cards, each an include), ~150 cache calls (``get``, ``get_many``, ``set``),
    rendered through a TemplateResponse. What a real page does, at the scale where
    flowtrace's cost per event matters (``benchmarks/overhead.py``)."""
    total = Item.objects.count()
    sections = []
    for s in range(5):
        ids = [1 + (s * 4 + i) % 20 for i in range(4)]
        items = list(Item.objects.filter(pk__in=ids))
        for item in items:  # one query per card: the N+1 a template tag would do
            Item.objects.filter(pk=item.pk).values_list("price", flat=True).first()
        sections.append({"title": f"Section {s + 1}", "items": items})
    for price in (3, 6, 9, 12, 15) * 4:  # repeated filters, as menus and widgets do
        Item.objects.filter(price__gte=price).exists()
    for i in range(100):
        cache.get(f"demo:fragment:{i % 40}")
    for i in range(25):
        cache.get_many([f"demo:card:{i}", f"demo:card:{i + 1}", f"demo:card:{i + 2}"])
    for i in range(25):
        cache.set(f"demo:card:{i}", i, 60)
    return TemplateResponse(request, "demo/page.html",
                            {"title": "Bakery", "total": total, "sections": sections})  # fmt: skip
