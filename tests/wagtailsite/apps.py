from __future__ import annotations

from django.apps import AppConfig


class BakeryConfig(AppConfig):
    name = "tests.wagtailsite"
    label = "bakery"
    default_auto_field = "django.db.models.BigAutoField"
