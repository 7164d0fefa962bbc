from __future__ import annotations

from django.urls import include, path

from tests.pgproject import views

urlpatterns = [
    path("pg/orm", views.orm),
    path("pg/composed", views.composed),
    path("pg/fail", views.fail),
    path("pg/other", views.other),
    path("", include("tests.testproject.urls")),
]
