from __future__ import annotations

from django.urls import path

from flowtrace.demo import views

urlpatterns = [
    path("hello", views.hello, name="hello"),
    path("db", views.db, name="db"),
    path("stream", views.stream, name="stream"),
    path("items/<int:pk>/", views.item, name="item"),
    path("deferred", views.deferred, name="deferred"),
    path("cached", views.cached, name="cached"),
    path("download", views.download, name="download"),
    path("boom", views.boom, name="boom"),
    path("page", views.page, name="page"),
    path("async", views.async_hello, name="async"),
]
