"""A demo-derived Django project with one ~2 ms view whose cost can be changed.

``FLOWTRACE_POWER_WORK`` scales the view's CPU work (1.0 = about 2 ms here,
1.2 = the "+20 % view" regression) and ``FLOWTRACE_POWER_EXTRA_QUERIES``
adds queries (the "+1 query" regression). Used by ``regression_power.py``.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.urls import path

from flowtrace.demo.settings import *  # noqa: F403 - the demo project, one more route

ROOT_URLCONF = "power_project"

_WORK = float(os.environ.get("FLOWTRACE_POWER_WORK", "1.0"))
_EXTRA_QUERIES = int(os.environ.get("FLOWTRACE_POWER_EXTRA_QUERIES", "0"))
_ITERATIONS = 35_000  # about 2 ms of interpreter work on the 2-core CI machine


def work(request: HttpRequest, pk: int) -> HttpResponse:
    """All of the view stage is the loop, so WORK=1.2 is +20 % of the view."""
    from flowtrace.demo.models import Item

    total = 0
    for i in range(int(_ITERATIONS * _WORK)):
        total += i * i % 7
    for _ in range(_EXTRA_QUERIES):
        total += Item.objects.filter(pk=pk).exists()
    return HttpResponse(f"{total}\n", content_type="text/plain")


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!\n", content_type="text/plain")


urlpatterns = [path("work/<int:pk>/", work), path("hello", hello)]
