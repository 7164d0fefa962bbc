"""The test project plus one tool users run beside flowtrace (``COEXIST_TOOL``)."""

from __future__ import annotations

import os

from tests.testproject.settings import *  # noqa: F403

TOOL = os.environ.get("COEXIST_TOOL", "")
ROOT_URLCONF = "tests.coexist.urls"

if TOOL == "toolbar":
    DEBUG = True
    INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]  # noqa: F405
    STATIC_URL = "static/"
    MIDDLEWARE = ["debug_toolbar.middleware.DebugToolbarMiddleware", *MIDDLEWARE]  # noqa: F405
    DEBUG_TOOLBAR_CONFIG = {"SHOW_TOOLBAR_CALLBACK": lambda request: True}
    TEMPLATES[0]["OPTIONS"]["debug"] = True  # noqa: F405
if TOOL == "drf":
    INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework"]  # noqa: F405
    REST_FRAMEWORK = {"DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
                      "UNAUTHENTICATED_USER": None}  # fmt: skip
