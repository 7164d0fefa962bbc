"""Process-wide Django hooks: database queries, template renders, cache calls.

These run in any thread, so they find their request through the
``flowtrace.capture.timeline.current`` context variable and do nothing outside a
traced request. Each is an install/uninstall pair; installing twice is a
no-op. Queries go through Django's public ``connection.execute_wrapper``
hook; templates and caches have no public hook, so their classes' methods
are wrapped, and restored by ``uninstall()``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from flowtrace.capture.timeline import CACHE, DB, TEMPLATE, clock, current

_lock = threading.Lock()
_restore: list[Callable[[], None]] = []

# Cache methods: reads report hits; the rest are timed only.
_CACHE_READS = ("get", "get_many", "has_key")
_CACHE_OTHERS = (
    "set", "add", "delete", "get_or_set", "set_many", "delete_many",
    "incr", "decr", "touch", "clear",
)  # fmt: skip


class QueryTimer:
    """A ``connection.execute_wrapper`` that records each query's interval."""

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        tl = current.get()
        if tl is None:
            return execute(sql, params, many, context)
        t0 = clock()
        try:
            return execute(sql, params, many, context)
        finally:
            kept = params if tl.keep_sql_params else None
            batch = len(params) if many and hasattr(params, "__len__") else 0
            vendor = context["connection"].vendor
            tl.events.append((DB, t0, clock(), (sql, vendor, batch, kept)))


def _install_queries() -> None:
    from django.db import connections
    from django.db.backends.signals import connection_created

    timer = QueryTimer()

    def add_to(connection: Any) -> None:
        wrappers = connection.execute_wrappers
        if not any(isinstance(w, QueryTimer) for w in wrappers):
            wrappers.append(timer)

    def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
        add_to(connection)

    for connection in connections.all(initialized_only=True):
        add_to(connection)
    connection_created.connect(on_connection_created, weak=False, dispatch_uid="flowtrace.db")

    def restore() -> None:
        connection_created.disconnect(dispatch_uid="flowtrace.db")
        for connection in connections.all(initialized_only=True):
            connection.execute_wrappers[:] = [
                w for w in connection.execute_wrappers if not isinstance(w, QueryTimer)
            ]

    _restore.append(restore)


def _install_templates() -> None:
    from django.template.base import Template

    original = Template.render

    @functools.wraps(original)
    def render(self: Any, context: Any) -> Any:
        tl = current.get()
        if tl is None:
            return original(self, context)
        t0 = clock()
        try:
            return original(self, context)
        finally:
            tl.events.append((TEMPLATE, t0, clock(), self.name))

    Template.render = render

    def restore() -> None:
        Template.render = original

    _restore.append(restore)


def _cache_hits(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
    """Hit information for a read: a bool, or (hits, misses) for get_many."""
    if operation == "get":
        default = args[1] if len(args) > 1 else kwargs.get("default")
        return result is not default
    if operation == "has_key":
        return bool(result)
    keys = args[0] if args else kwargs.get("keys", ())
    try:
        wanted = len(keys)
    except TypeError:
        wanted = len(result)
    return (len(result), max(wanted - len(result), 0))


def _timed_cache_method(cls: type, operation: str, backend: str) -> Callable[..., Any]:
    original = getattr(cls, operation)
    is_read = operation in _CACHE_READS

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        tl = current.get()
        if tl is None:
            return original(self, *args, **kwargs)
        t0 = clock()
        result = hit = None
        try:
            result = original(self, *args, **kwargs)
            if is_read:
                hit = _cache_hits(operation, args, kwargs, result)
            return result
        finally:
            tl.events.append((CACHE, t0, clock(), (operation, backend, hit)))

    return method


def _install_caches() -> None:
    from django.conf import settings
    from django.utils.module_loading import import_string

    for alias_config in getattr(settings, "CACHES", {}).values():
        cls = import_string(alias_config["BACKEND"])
        if getattr(cls, "_flowtrace_originals", None) is not None:
            continue
        backend = cls.__module__.rsplit(".", 1)[-1]
        originals = {}
        for operation in (*_CACHE_READS, *_CACHE_OTHERS):
            if hasattr(cls, operation):
                originals[operation] = cls.__dict__.get(operation)
                setattr(cls, operation, _timed_cache_method(cls, operation, backend))
        cls._flowtrace_originals = originals

        def restore(cls: Any = cls, originals: dict[str, Any] = originals) -> None:
            for operation, original in originals.items():
                if original is None:
                    delattr(cls, operation)
                else:
                    setattr(cls, operation, original)
            del cls._flowtrace_originals

        _restore.append(restore)


def install() -> None:
    """Install the DB, template and cache hooks once per process."""
    with _lock:
        if _restore:
            return
        _install_queries()
        _install_templates()
        _install_caches()


def uninstall() -> None:
    """Undo ``install()``: for tests, and for apps that unwrap flowtrace."""
    with _lock:
        while _restore:
            _restore.pop()()


def installed() -> bool:
    return bool(_restore)
