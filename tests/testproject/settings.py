"""Test settings: the demo project plus delay-injection points for every stage."""

from __future__ import annotations

from flowtrace.demo.settings import *  # noqa: F403

ROOT_URLCONF = "tests.testproject.urls"
INSTALLED_APPS = ["django.contrib.admin", *INSTALLED_APPS, "tests.testproject"]  # noqa: F405
# DelayMiddleware sits in the middle of the startproject stack.
MIDDLEWARE = [*MIDDLEWARE[:3], "tests.testproject.middleware.DelayMiddleware", *MIDDLEWARE[3:]]  # noqa: F405
TEMPLATES[0]["OPTIONS"]["context_processors"] = [  # noqa: F405 - the admin's checks
    "django.template.context_processors.request",
    "django.contrib.auth.context_processors.auth",
    "django.contrib.messages.context_processors.messages",
]
CACHES = {  # two LocMem caches: calls on one are not part of calls on the other
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "a"},
    "other": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "b"},
}
