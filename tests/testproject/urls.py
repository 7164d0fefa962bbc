from __future__ import annotations

from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from tests.testproject import asyncviews, views

urlpatterns = [
    path("t/slow-view", views.slow_view),
    path("t/slow-template", views.slow_template),
    path("t/slow-deferred", views.slow_deferred),
    path("t/slow-query", views.slow_query),
    path("t/slow-stream", views.slow_stream),
    path("t/slow-close", views.slow_close),
    path("t/secret", csrf_exempt(views.echo_secret)),
    path("t/method/<slug:name>", csrf_exempt(views.method_view)),
    path("t/marker/<slug:marker>", views.marker),
    path("r/", include("tests.testproject.realworld")),
    path("a/hello", asyncviews.hello),
    path("a/blocking", asyncviews.blocking),
    path("a/count", asyncviews.count),
    path("a/cached", asyncviews.cached),
    path("a/marker/<slug:marker>", asyncviews.marker),
    path("a/stream", asyncviews.stream),
    path("a/signal", asyncviews.signal),
    path("a/private-loop", asyncviews.private_loop),
    path("a/big", asyncviews.big),
    path("a/header", asyncviews.header),
    path("", include("flowtrace.demo.urls")),
]
