"""Sleeps in its request half and/or response half, as the headers ask."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class DelayMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        marks = getattr(request, "handoff", None)
        if marks is not None:
            marks["sync_start"] = time.perf_counter_ns()
        try:
            return self._call(request, marks)
        finally:
            if marks is not None:
                marks["sync_end"] = time.perf_counter_ns()

    def _call(self, request: HttpRequest, marks: dict[str, int] | None) -> HttpResponse:
        before = float(request.headers.get("X-Delay-Mw-Request", "0"))
        after = float(request.headers.get("X-Delay-Mw-Response", "0"))
        if before:
            time.sleep(before / 1000)
        if request.headers.get("X-Short-Circuit"):
            return HttpResponse("short-circuited", content_type="text/plain")
        if marks is not None:
            marks["sync_call"] = time.perf_counter_ns()
        response = self.get_response(request)
        if marks is not None:
            marks["sync_back"] = time.perf_counter_ns()
        if after:
            time.sleep(after / 1000)
        return response


# --- ASGI: the app's own measure of the sync<->async hand-offs around DelayMiddleware ----
# (tests/test_asgi.py compares flowtrace's crossings with it). HandoffOuter and
# HandoffInner are async-only, DelayMiddleware between them is sync-only, so Django
# runs it in a thread: one crossing into it, one back out to HandoffInner.


class HandoffOuter:
    sync_capable, async_capable = False, True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        marks: dict[str, int] = {}
        request.handoff = marks  # type: ignore[attr-defined]
        marks["outer_call"] = time.perf_counter_ns()
        response = await self.get_response(request)
        marks["outer_back"] = time.perf_counter_ns()
        if {"sync_start", "sync_call", "sync_back", "sync_end", "inner_start", "inner_end"} <= set(
            marks
        ):
            handoff = (marks["sync_start"] - marks["outer_call"]) + (
                marks["inner_start"] - marks["sync_call"]) + (
                marks["sync_back"] - marks["inner_end"]) + (
                marks["outer_back"] - marks["sync_end"])  # fmt: skip
            response["X-Handoff-Ns"] = str(handoff)
        return response


class HandoffInner:
    sync_capable, async_capable = False, True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        marks = getattr(request, "handoff", {})
        marks["inner_start"] = time.perf_counter_ns()
        response = await self.get_response(request)
        marks["inner_end"] = time.perf_counter_ns()
        return response  # type: ignore[no-any-return]
