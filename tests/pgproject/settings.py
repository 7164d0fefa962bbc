"""The test project on a real PostgreSQL (two aliases), psycopg 3."""

from __future__ import annotations

import json
import os

from tests.testproject.settings import *  # noqa: F403

_SERVER = json.loads(os.environ.get("FLOWTRACE_TEST_PG", "{}"))
_AGE = int(os.environ.get("FLOWTRACE_TEST_CONN_MAX_AGE", "0"))
DATABASES = {
    alias: {"ENGINE": "django.db.backends.postgresql", "NAME": name, "CONN_MAX_AGE": _AGE,
            "USER": _SERVER.get("user", "postgres"), "HOST": _SERVER.get("host", "127.0.0.1"),
            "PORT": str(_SERVER.get("port", 5432))}
    for alias, name in (("default", "flowtrace"), ("other", "flowtrace_other"))
}  # fmt: skip
ROOT_URLCONF = "tests.pgproject.urls"
