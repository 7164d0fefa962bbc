"""A small Wagtail site, built by the tests from PyPI's wagtail (issue #13):
three page types served through Wagtail's one catch-all URL pattern."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "flowtrace-wagtail-test-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.wagtailsite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WAGTAIL_SITE_NAME = "flowtrace bakery"
WAGTAILADMIN_BASE_URL = "http://testserver"
STATIC_URL = "static/"

INSTALLED_APPS = [
    "tests.wagtailsite",
    "wagtail.sites",
    "wagtail",
    "taggit",
    "modelcluster",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
_DB = os.environ.get(
    "FLOWTRACE_WAGTAIL_DB", os.path.join(tempfile.gettempdir(), "flowtrace-wagtail.sqlite3")
)
# The page models' migrations are made by the test (`makemigrations`, tests.wagtailsite.
# setup) for the Wagtail installed, next to the database: never in the source tree.
_MIGRATIONS = Path(_DB).with_suffix(".migrations")
(_MIGRATIONS / "bakery_migrations").mkdir(parents=True, exist_ok=True)
(_MIGRATIONS / "bakery_migrations" / "__init__.py").touch()
if str(_MIGRATIONS) not in sys.path:
    sys.path.insert(0, str(_MIGRATIONS))
MIGRATION_MODULES = {"bakery": "bakery_migrations"}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "loggers": {"django.request": {"level": "CRITICAL"}}}  # fmt: skip
