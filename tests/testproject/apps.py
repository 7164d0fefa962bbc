from __future__ import annotations

import time
from typing import Any

from django.apps import AppConfig


def _sleep_ms(ms: float) -> int:
    time.sleep(float(ms) / 1000)
    return 1


def _register_sleep(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("flowtrace_sleep", 1, _sleep_ms)


class TestProjectConfig(AppConfig):
    name = "tests.testproject"
    label = "testproject"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        connection_created.connect(_register_sleep, dispatch_uid="testproject.sleep")
