"""Async views for the ASGI tests (served under /a/ by both front ends)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator

from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import cache
from django.db import connection
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from flowtrace.demo.models import Item


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello, async\n", content_type="text/plain")


async def blocking(request: HttpRequest) -> HttpResponse:
    """Holds the event loop: a sync sleep inside an async view (the classic mistake).
    It says how long it blocked (X-Blocked-Ns), as the app itself measures it."""
    t0 = time.perf_counter_ns()
    time.sleep(float(request.GET.get("ms", "10")) / 1000)
    blocked = time.perf_counter_ns() - t0
    response = HttpResponse("blocked the loop\n", content_type="text/plain")
    response["X-Blocked-Ns"] = str(blocked)
    return response


async def cached(request: HttpRequest) -> HttpResponse:
    """The async cache API (aset/aget: the sync calls, run in a thread)."""
    await cache.aset("async-key", "value", 30)
    return HttpResponse(f"{await cache.aget('async-key')}\n", content_type="text/plain")


async def count(request: HttpRequest) -> HttpResponse:
    """The async ORM: acount() crosses to a thread and back."""
    return HttpResponse(f"{await Item.objects.acount()}\n", content_type="text/plain")


def _select(marker: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT '{marker}'")  # a slug: letters, digits, - and _ only


async def marker(request: HttpRequest, marker: str) -> HttpResponse:
    """A per-request marker in a child span (the SQL text), after a yield to the loop:
    concurrent requests interleave, their traces must not mix."""
    await asyncio.sleep(0.001)
    await sync_to_async(_select)(marker)
    return HttpResponse(marker, content_type="text/plain")


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            await asyncio.sleep(0)
            yield b"x" * 1024

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


# --- for the bridge's regression tests (tests/test_asgi.py) --------------------------

PING = Signal()


async def _async_receiver(sender: object, **kwargs: object) -> str:
    return "async receiver"


PING.connect(_async_receiver)


def signal(request: HttpRequest) -> HttpResponse:
    """A sync view sending a signal with an async receiver: Signal.send runs it
    through async_to_sync with no arguments."""
    return HttpResponse(repr([r for _, r in PING.send(sender=None)]), content_type="text/plain")


async def _blocks_its_own_loop() -> int:
    time.sleep(0.2)  # blocks the private loop of a worker thread, not the server's
    return 1


async def private_loop(request: HttpRequest) -> HttpResponse:
    """async_to_sync on a private loop in another thread (asyncio.to_thread copies the
    context): not the request holding the server's loop."""
    await asyncio.to_thread(async_to_sync(_blocks_its_own_loop))
    return HttpResponse("ok\n", content_type="text/plain")


RESPONSES: list[weakref.ref[HttpResponse]] = []


async def big(request: HttpRequest) -> HttpResponse:
    """A 10 MB response, watched through a weak reference."""
    response = HttpResponse(b"x" * 10_000_000, content_type="application/octet-stream")
    RESPONSES.append(weakref.ref(response))
    return response


async def header(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.headers.get("X-Tenant", "<missing>"), content_type="text/plain")
