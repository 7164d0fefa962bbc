"""Sleeps in its request half and/or response half, as the headers ask."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class DelayMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        before = float(request.headers.get("X-Delay-Mw-Request", "0"))
        after = float(request.headers.get("X-Delay-Mw-Response", "0"))
        if before:
            time.sleep(before / 1000)
        if request.headers.get("X-Short-Circuit"):
            return HttpResponse("short-circuited", content_type="text/plain")
        response = self.get_response(request)
        if after:
            time.sleep(after / 1000)
        return response
